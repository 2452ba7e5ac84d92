// SPDX-License-Identifier: BSD-3-Clause
/* xdpgen: line-rate UDP generator for veth labs.
 *
 * Builds one Ethernet/IPv4-or-IPv6/UDP frame from the command line, loads xdp_gen.bpf.o (which
 * steps the source port/address per frame and returns XDP_TX) and runs it with BPF_PROG_RUN in
 * live-frames mode (BPF_F_TEST_XDP_LIVE_FRAMES): the kernel transmits every frame out of --dev as
 * if the program had run on its ingress. One thread per --cpus entry, each pinned to its CPU; a
 * veth peer receives the frames of CPU c on its rx queue c. Runs for --seconds or until --count
 * frames were sent, or until SIGINT/SIGTERM, then prints one JSON object with the totals.
 *
 * "packets" counts program runs that returned XDP_TX; a transmit that the peer refuses (no XDP
 * program, ring full) is dropped by the kernel and shows up in the interface counters, not here.
 *
 * Every BPF_PROG_RUN of an XDP program adds the program to the kernel's XDP dispatcher on entry and
 * removes it on exit, and each change waits for an RCU grace period: on a 2-CPU VM that left the
 * generator idle a third of the time (two grace periods per call). With --hold-dev IF the program
 * is also attached in SKB mode to IF (an interface that carries no traffic), which keeps it in the
 * dispatcher for the whole run, so BPF_PROG_RUN no longer changes it. "busy_seconds" is the time
 * the kernel spent running the program (its reported duration per frame times the frames).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <linux/if_ether.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "xdp_gen.h"

#ifndef XDPGEN_OBJ
#define XDPGEN_OBJ "xdp_gen.bpf.o"
#endif

#define MAX_THREADS 64
#define MAX_FRAME 1514
/* Frames per BPF_PROG_RUN call in --seconds mode: about 10 ms at 5 Mpps, so stop requests and
 * deadlines are noticed quickly while the syscall cost stays negligible. */
#define DEFAULT_CHUNK 65536

static volatile sig_atomic_t stop;

struct thread_ctx {
	pthread_t tid;
	int cpu;
	int prog_fd;
	int ifindex;
	const uint8_t *frame;
	uint32_t frame_len;
	uint32_t batch;
	uint32_t chunk;
	uint64_t target;     /* 0 = unlimited (duration mode) */
	double seconds;      /* 0 = unlimited (count mode) */
	uint64_t sent;
	double elapsed;
	double busy;         /* seconds inside the kernel's run loop */
	int err;
};

static void usage(const char *prog)
{
	fprintf(stderr,
		"usage: %s --dev IF --src-mac MAC --dst-mac MAC --src-ip IP --dst-ip IP\n"
		"          [--sport N] [--dport N] [--size BYTES>=64] [--flows N] [--src-ips N]\n"
		"          [--cpus C,C..] [--seconds S | --count N] [--batch N<=256] [--obj FILE]\n"
		"          [--hold-dev IF]\n",
		prog);
}

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int parse_mac(const char *s, uint8_t mac[6])
{
	unsigned int b[6];
	char tail;

	if (sscanf(s, "%x:%x:%x:%x:%x:%x%c", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5], &tail) != 6)
		return -1;
	for (int i = 0; i < 6; i++) {
		if (b[i] > 0xff)
			return -1;
		mac[i] = (uint8_t)b[i];
	}
	return 0;
}

static uint32_t csum_add(uint32_t sum, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len > 1) {
		sum += (uint32_t)(p[0] << 8 | p[1]);
		p += 2;
		len -= 2;
	}
	if (len)
		sum += (uint32_t)(p[0] << 8);
	return sum;
}

static uint16_t csum_fold(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

/* Builds Ethernet + IPv4/IPv6 + UDP with zero payload, all checksums valid. Returns the frame
 * length or -1. */
static int build_frame(uint8_t *f, uint32_t size, const uint8_t *smac, const uint8_t *dmac, int af,
		       const void *sip, const void *dip, uint16_t sport, uint16_t dport)
{
	uint32_t l3 = 14, l4, udp_len;
	uint32_t sum;
	uint16_t c;

	memset(f, 0, size);
	memcpy(f, dmac, 6);
	memcpy(f + 6, smac, 6);
	if (af == AF_INET) {
		l4 = l3 + 20;
		put16(f + 12, ETH_P_IP);
		f[l3] = 0x45;
		put16(f + l3 + 2, (uint16_t)(size - l3));
		f[l3 + 8] = 64;
		f[l3 + 9] = 17;
		memcpy(f + l3 + 12, sip, 4);
		memcpy(f + l3 + 16, dip, 4);
		put16(f + l3 + 10, csum_fold(csum_add(0, f + l3, 20)));
	} else {
		l4 = l3 + 40;
		put16(f + 12, ETH_P_IPV6);
		f[l3] = 0x60;
		put16(f + l3 + 4, (uint16_t)(size - l4));
		f[l3 + 6] = 17;
		f[l3 + 7] = 64;
		memcpy(f + l3 + 8, sip, 16);
		memcpy(f + l3 + 24, dip, 16);
	}
	if (size < l4 + 8)
		return -1;
	udp_len = size - l4;
	put16(f + l4, sport);
	put16(f + l4 + 2, dport);
	put16(f + l4 + 4, (uint16_t)udp_len);
	/* Pseudo-header: addresses, protocol, UDP length. */
	sum = af == AF_INET ? csum_add(0, sip, 4) : csum_add(0, sip, 16);
	sum = af == AF_INET ? csum_add(sum, dip, 4) : csum_add(sum, dip, 16);
	sum += 17 + udp_len;
	sum = csum_add(sum, f + l4, udp_len);
	c = csum_fold(sum);
	put16(f + l4 + 6, c ? c : 0xffff);
	return (int)size;
}

static void *gen_thread(void *arg)
{
	struct thread_ctx *t = arg;
	/* The kernel requires data_end == frame length and data == data_meta == 0. */
	struct xdp_md ctx_in = { .data_end = t->frame_len, .ingress_ifindex = (uint32_t)t->ifindex };
	cpu_set_t set;
	sigset_t sigs;
	double start, deadline;

	/* Signals go to the main thread only: an interrupted BPF_PROG_RUN returns -EINTR without
	 * saying how many frames it sent, which would make the totals wrong. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);

	CPU_ZERO(&set);
	CPU_SET(t->cpu, &set);
	if (pthread_setaffinity_np(pthread_self(), sizeof(set), &set)) {
		t->err = EINVAL;
		return NULL;
	}

	start = now_s();
	deadline = t->seconds > 0 ? start + t->seconds : 0;
	while (!stop) {
		uint64_t n = t->chunk;
		LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = t->frame, .data_size_in = t->frame_len,
			    .ctx_in = &ctx_in, .ctx_size_in = sizeof(ctx_in),
			    .flags = BPF_F_TEST_XDP_LIVE_FRAMES, .batch_size = t->batch);
		int err;

		if (t->target) {
			if (t->sent >= t->target)
				break;
			if (t->target - t->sent < n)
				n = t->target - t->sent;
		}
		opts.repeat = (int)n;
		err = bpf_prog_test_run_opts(t->prog_fd, &opts);
		if (err) {
			t->err = errno ? errno : -err;
			break;
		}
		t->sent += n;
		t->busy += (double)opts.duration * (double)n / 1e9;
		if (deadline > 0 && now_s() >= deadline)
			break;
	}
	t->elapsed = now_s() - start;
	return NULL;
}

static int parse_cpus(const char *s, int *cpus, int max)
{
	int n = 0;
	char *copy = strdup(s), *tok, *save = NULL;

	if (!copy)
		return -1;
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *end;
		long v = strtol(tok, &end, 10);

		if (*end || v < 0 || v >= CPU_SETSIZE || n >= max) {
			free(copy);
			return -1;
		}
		cpus[n++] = (int)v;
	}
	free(copy);
	return n;
}

static int set_rodata(struct bpf_object *obj, const struct gen_cfg *cfg)
{
	struct bpf_map *map;

	bpf_object__for_each_map(map, obj) {
		size_t sz = 0;

		if (!strstr(bpf_map__name(map), ".rodata"))
			continue;
		bpf_map__initial_value(map, &sz);
		/* The program's only read-only variable is `cfg`, so .rodata is exactly one struct. */
		if (sz != sizeof(*cfg)) {
			fprintf(stderr, "xdpgen: unexpected .rodata size %zu (want %zu)\n", sz,
				sizeof(*cfg));
			return -1;
		}
		return bpf_map__set_initial_value(map, cfg, sizeof(*cfg));
	}
	fprintf(stderr, "xdpgen: no .rodata map in the generator object\n");
	return -1;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "dev", required_argument, NULL, 'd' },
		{ "src-mac", required_argument, NULL, 'm' },
		{ "dst-mac", required_argument, NULL, 'M' },
		{ "src-ip", required_argument, NULL, 'i' },
		{ "dst-ip", required_argument, NULL, 'I' },
		{ "sport", required_argument, NULL, 'p' },
		{ "dport", required_argument, NULL, 'P' },
		{ "size", required_argument, NULL, 's' },
		{ "flows", required_argument, NULL, 'f' },
		{ "src-ips", required_argument, NULL, 'a' },
		{ "cpus", required_argument, NULL, 'c' },
		{ "seconds", required_argument, NULL, 't' },
		{ "count", required_argument, NULL, 'n' },
		{ "batch", required_argument, NULL, 'b' },
		{ "obj", required_argument, NULL, 'o' },
		{ "hold-dev", required_argument, NULL, 'H' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *dev = NULL, *obj_path = XDPGEN_OBJ, *hold_dev = NULL;
	uint8_t smac[6], dmac[6], frame[MAX_FRAME];
	uint8_t sip[16], dip[16];
	int have_smac = 0, have_dmac = 0, af = 0, daf = 0;
	unsigned long sport = 1024, dport = 9, size = 64, flows = 1, src_ips = 1, batch = 64;
	unsigned long long count = 0;
	double seconds = 0;
	int cpus[MAX_THREADS] = { 0 }, ncpus = 1;
	struct thread_ctx threads[MAX_THREADS];
	struct gen_cfg cfg = { 0 };
	struct bpf_object *obj;
	struct bpf_program *prog;
	struct rlimit rl = { RLIM_INFINITY, RLIM_INFINITY };
	uint64_t total = 0;
	double elapsed = 0, busy = 0;
	int ifindex, hold_ifindex = 0, prog_fd, opt, frame_len, failed = 0, held = 0;

	while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'd': dev = optarg; break;
		case 'm': have_smac = !parse_mac(optarg, smac); if (!have_smac) goto bad; break;
		case 'M': have_dmac = !parse_mac(optarg, dmac); if (!have_dmac) goto bad; break;
		case 'i':
			af = strchr(optarg, ':') ? AF_INET6 : AF_INET;
			if (inet_pton(af, optarg, sip) != 1) goto bad;
			break;
		case 'I':
			daf = strchr(optarg, ':') ? AF_INET6 : AF_INET;
			if (inet_pton(daf, optarg, dip) != 1) goto bad;
			break;
		case 'p': sport = strtoul(optarg, NULL, 0); break;
		case 'P': dport = strtoul(optarg, NULL, 0); break;
		case 's': size = strtoul(optarg, NULL, 0); break;
		case 'f': flows = strtoul(optarg, NULL, 0); break;
		case 'a': src_ips = strtoul(optarg, NULL, 0); break;
		case 'c': ncpus = parse_cpus(optarg, cpus, MAX_THREADS); if (ncpus <= 0) goto bad; break;
		case 't': seconds = strtod(optarg, NULL); break;
		case 'n': count = strtoull(optarg, NULL, 0); break;
		case 'b': batch = strtoul(optarg, NULL, 0); break;
		case 'o': obj_path = optarg; break;
		case 'H': hold_dev = optarg; break;
		case 'h': usage(argv[0]); return 0;
		default: goto bad;
		}
	}
	if (!dev || !have_smac || !have_dmac || !af || af != daf || sport > 0xffff ||
	    dport > 0xffff || size < 64 || size > MAX_FRAME || flows == 0 || flows > 0xffff ||
	    src_ips == 0 || src_ips > 0xffff || batch == 0 || batch > 256 ||
	    (seconds <= 0 && count == 0) || (seconds > 0 && count > 0))
		goto bad;

	ifindex = (int)if_nametoindex(dev);
	if (!ifindex) {
		fprintf(stderr, "xdpgen: no interface %s: %s\n", dev, strerror(errno));
		return 1;
	}
	frame_len = build_frame(frame, (uint32_t)size, smac, dmac, af, sip, dip, (uint16_t)sport,
				(uint16_t)dport);
	if (frame_len < 0)
		goto bad;

	setrlimit(RLIMIT_MEMLOCK, &rl);
	obj = bpf_object__open_file(obj_path, NULL);
	if (!obj) {
		fprintf(stderr, "xdpgen: open %s: %s\n", obj_path, strerror(errno));
		return 1;
	}
	cfg.flows = (uint32_t)flows;
	cfg.src_ips = (uint32_t)src_ips;
	cfg.sport_base = (uint16_t)sport;
	cfg.sip_lo_base = af == AF_INET ? (uint16_t)(sip[2] << 8 | sip[3])
					: (uint16_t)(sip[14] << 8 | sip[15]);
	if (set_rodata(obj, &cfg))
		return 1;
	if (bpf_object__load(obj)) {
		fprintf(stderr, "xdpgen: load %s: %s\n", obj_path, strerror(errno));
		return 1;
	}
	prog = bpf_object__find_program_by_name(obj, "xdp_gen");
	if (!prog) {
		fprintf(stderr, "xdpgen: no program xdp_gen in %s\n", obj_path);
		return 1;
	}
	prog_fd = bpf_program__fd(prog);
	if (hold_dev) {
		hold_ifindex = (int)if_nametoindex(hold_dev);
		if (!hold_ifindex) {
			fprintf(stderr, "xdpgen: no interface %s: %s\n", hold_dev, strerror(errno));
			return 1;
		}
		int err = bpf_xdp_attach(hold_ifindex, prog_fd,
					 XDP_FLAGS_SKB_MODE | XDP_FLAGS_UPDATE_IF_NOEXIST, NULL);
		if (err)
			fprintf(stderr, "xdpgen: holding the program on %s: %s (runs pay dispatcher updates)\n",
				hold_dev, strerror(-err));
		else
			held = 1;
	}

	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);

	memset(threads, 0, sizeof(threads));
	for (int i = 0; i < ncpus; i++) {
		struct thread_ctx *t = &threads[i];

		t->cpu = cpus[i];
		t->prog_fd = prog_fd;
		t->ifindex = ifindex;
		t->frame = frame;
		t->frame_len = (uint32_t)frame_len;
		t->batch = (uint32_t)batch;
		t->chunk = DEFAULT_CHUNK;
		t->seconds = seconds;
		t->target = count ? count / (uint64_t)ncpus + ((uint64_t)i < count % (uint64_t)ncpus)
				  : 0;
		if (t->target && t->target < t->chunk)
			t->chunk = (uint32_t)t->target;
		if (pthread_create(&t->tid, NULL, gen_thread, t)) {
			fprintf(stderr, "xdpgen: pthread_create failed\n");
			stop = 1;
			ncpus = i;
			failed = 1;
			break;
		}
	}
	for (int i = 0; i < ncpus; i++)
		pthread_join(threads[i].tid, NULL);

	for (int i = 0; i < ncpus; i++) {
		total += threads[i].sent;
		busy += threads[i].busy;
		if (threads[i].elapsed > elapsed)
			elapsed = threads[i].elapsed;
		if (threads[i].err) {
			fprintf(stderr, "xdpgen: thread on cpu %d: BPF_PROG_RUN failed: %s\n",
				threads[i].cpu, strerror(threads[i].err));
			failed = 1;
		}
	}
	if (held) {
		LIBBPF_OPTS(bpf_xdp_attach_opts, detach, .old_prog_fd = prog_fd);

		if (bpf_xdp_detach(hold_ifindex, XDP_FLAGS_SKB_MODE | XDP_FLAGS_REPLACE, &detach))
			fprintf(stderr, "xdpgen: detaching from %s failed\n", hold_dev);
	}
	printf("{\"packets\":%llu,\"seconds\":%.6f,\"pps\":%.1f,\"size\":%lu,"
	       "\"busy_seconds\":%.6f,\"dispatcher_held\":%s,\"threads\":[",
	       (unsigned long long)total, elapsed, elapsed > 0 ? (double)total / elapsed : 0.0,
	       size, busy, held ? "true" : "false");
	for (int i = 0; i < ncpus; i++)
		printf("%s{\"cpu\":%d,\"packets\":%llu,\"seconds\":%.6f}", i ? "," : "",
		       threads[i].cpu, (unsigned long long)threads[i].sent, threads[i].elapsed);
	printf("]}\n");
	bpf_object__close(obj);
	return failed ? 1 : 0;

bad:
	usage(argv[0]);
	return 2;
}
