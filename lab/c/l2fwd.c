// SPDX-License-Identifier: BSD-3-Clause
/* l2fwd: reference AF_XDP forwarder in the shape of CNDP's l2fwd, written directly on libxdp.
 *
 * Per queue: one UMEM (frames of --frame-size bytes), one AF_XDP socket bound to --dev:qid, one
 * worker thread pinned to its CPU. The worker busy-loops like CNDP's l2fwd: reap the completion
 * ring into a private free list, keep the fill ring full from it, receive a burst of up to --batch
 * frames, swap the Ethernet addresses in place and put the same frames on the TX ring of the same
 * socket, then kick the kernel with sendto(). In drop mode received frames go straight back to the
 * free list. Nothing is shared between workers, so there are no locks and no atomics beyond the
 * rings themselves.
 *
 * The XDP program (xsk_redirect.bpf.o: rx queue N -> xsks_map[N]) is loaded and attached with
 * libbpf, and libxdp is told not to load its own (XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD): libxdp's
 * multi-program dispatcher does not work on this kernel, and owning the program makes the detach
 * on exit exact. SIGINT/SIGTERM stop the workers; the program is detached (only if it is still
 * ours), the sockets closed and the totals printed as one JSON object on stdout ("tx" counts
 * frames the kernel completed, i.e. that left the socket; "tx_submitted" those put on the ring).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <linux/if_link.h>
#include <linux/if_xdp.h>
#include <net/if.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <xdp/xsk.h>

#ifndef L2FWD_OBJ
#define L2FWD_OBJ "xsk_redirect.bpf.o"
#endif

#define MAX_QUEUES 64
#define MAX_BATCH 256

enum mode { MODE_FWD, MODE_DROP };

static volatile sig_atomic_t stop;

struct queue {
	int qid;
	int cpu;
	enum mode mode;
	uint32_t batch;
	uint32_t frame_size;
	uint32_t nframes;
	void *area;
	struct xsk_umem *umem;
	struct xsk_socket *xsk;
	struct xsk_ring_prod fq;
	struct xsk_ring_cons cq;
	struct xsk_ring_cons rx;
	struct xsk_ring_prod tx;
	/* Frames owned by user space and not on any ring: a LIFO of UMEM offsets. */
	uint64_t *free_frames;
	uint32_t nfree;
	pthread_t tid;
	int started;
	/* Counters, written only by the worker, read by main after join. */
	uint64_t rx_pkts;
	uint64_t tx_pkts;
	uint64_t tx_full;
	uint64_t kicks;
	uint64_t completions;
};

static void usage(const char *prog)
{
	fprintf(stderr,
		"usage: %s --dev IF [--queues N] [--cpus C,C..] [--mode fwd|drop] [--batch N]\n"
		"          [--bufs N] [--frame-size 2048|4096] [--ring N] [--skb] [--obj FILE]\n"
		"  one worker per queue 0..N-1, worker q pinned to the q-th CPU of --cpus\n",
		prog);
}

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
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

static void reap_completions(struct queue *q)
{
	uint32_t idx, n;

	n = xsk_ring_cons__peek(&q->cq, q->nframes, &idx);
	if (!n)
		return;
	for (uint32_t i = 0; i < n; i++)
		q->free_frames[q->nfree++] = *xsk_ring_cons__comp_addr(&q->cq, idx + i);
	xsk_ring_cons__release(&q->cq, n);
	q->completions += n;
}

static void refill(struct queue *q)
{
	uint32_t idx, n;

	if (!q->nfree)
		return;
	n = xsk_prod_nb_free(&q->fq, q->nfree);
	if (n > q->nfree)
		n = q->nfree;
	if (!n || xsk_ring_prod__reserve(&q->fq, n, &idx) != n)
		return;
	for (uint32_t i = 0; i < n; i++)
		*xsk_ring_prod__fill_addr(&q->fq, idx + i) = q->free_frames[--q->nfree];
	xsk_ring_prod__submit(&q->fq, n);
}

static void kick_tx(struct queue *q)
{
	/* Copy mode transmits a bounded number of frames per call and answers EAGAIN when more are
	 * queued; like CNDP, kick again on EAGAIN, but boundedly so RX is never starved. Other
	 * errors (EBUSY, ENOBUFS, ENETDOWN) only mean "try on the next kick". */
	for (int i = 0; i < 4; i++) {
		q->kicks++;
		if (sendto(xsk_socket__fd(q->xsk), NULL, 0, MSG_DONTWAIT, NULL, 0) >= 0 ||
		    errno != EAGAIN)
			break;
	}
}

static void swap_macs(uint8_t *p)
{
	uint8_t tmp[6];

	memcpy(tmp, p, 6);
	memcpy(p, p + 6, 6);
	memcpy(p + 6, tmp, 6);
}

static void *worker(void *arg)
{
	struct queue *q = arg;
	uint64_t mask = ~((uint64_t)q->frame_size - 1);
	cpu_set_t set;
	sigset_t sigs;

	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	CPU_ZERO(&set);
	CPU_SET(q->cpu, &set);
	if (pthread_setaffinity_np(pthread_self(), sizeof(set), &set))
		fprintf(stderr, "l2fwd: queue %d: cannot pin to cpu %d\n", q->qid, q->cpu);

	while (!stop) {
		uint32_t idx_rx = 0, idx_tx = 0, n, ntx = 0;

		if (q->mode == MODE_FWD)
			reap_completions(q);
		refill(q);

		n = xsk_ring_cons__peek(&q->rx, q->batch, &idx_rx);
		if (!n) {
			if (xsk_ring_prod__needs_wakeup(&q->fq))
				recvfrom(xsk_socket__fd(q->xsk), NULL, 0, MSG_DONTWAIT, NULL, NULL);
			/* Copy mode sends a bounded number of frames per kick: keep kicking while
			 * the TX ring still holds frames. */
			if (q->mode == MODE_FWD && xsk_prod_nb_free(&q->tx, q->tx.size) < q->tx.size)
				kick_tx(q);
			continue;
		}
		q->rx_pkts += n;

		if (q->mode == MODE_DROP) {
			for (uint32_t i = 0; i < n; i++)
				q->free_frames[q->nfree++] =
					xsk_ring_cons__rx_desc(&q->rx, idx_rx + i)->addr & mask;
			xsk_ring_cons__release(&q->rx, n);
			continue;
		}

		/* Reserve what fits; frames beyond it are dropped (counted in tx_ring_full). */
		ntx = xsk_prod_nb_free(&q->tx, n);
		if (ntx > n)
			ntx = n;
		if (ntx && xsk_ring_prod__reserve(&q->tx, ntx, &idx_tx) != ntx)
			ntx = 0;
		for (uint32_t i = 0; i < n; i++) {
			const struct xdp_desc *d = xsk_ring_cons__rx_desc(&q->rx, idx_rx + i);

			if (i < ntx) {
				struct xdp_desc *t = xsk_ring_prod__tx_desc(&q->tx, idx_tx + i);

				swap_macs(xsk_umem__get_data(q->area, d->addr));
				t->addr = d->addr;
				t->len = d->len;
			} else {
				q->free_frames[q->nfree++] = d->addr & mask;
			}
		}
		xsk_ring_cons__release(&q->rx, n);
		xsk_ring_prod__submit(&q->tx, ntx);
		q->tx_pkts += ntx;
		q->tx_full += n - ntx;
		if (xsk_ring_prod__needs_wakeup(&q->tx))
			kick_tx(q);
	}
	/* Drain: frames already on the TX ring still go out (bounded), so the totals describe
	 * frames that really left. */
	for (int i = 0; q->mode == MODE_FWD && i < 1000; i++) {
		reap_completions(q);
		if (xsk_prod_nb_free(&q->tx, q->tx.size) == q->tx.size)
			break;
		kick_tx(q);
	}
	reap_completions(q);
	return NULL;
}

static int setup_queue(struct queue *q, const char *dev, uint32_t ring, int map_fd)
{
	struct xsk_umem_config ucfg = {
		.fill_size = ring * 2, /* CNDP: fill ring = 2 x rx ring */
		.comp_size = ring,
		.frame_size = q->frame_size,
		.frame_headroom = 0,
		.flags = 0,
	};
	struct xsk_socket_config scfg = {
		.rx_size = ring,
		.tx_size = ring,
		.libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD,
		.bind_flags = XDP_USE_NEED_WAKEUP,
	};
	size_t size = (size_t)q->nframes * q->frame_size;
	int err;

	q->area = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
		       -1, 0);
	if (q->area == MAP_FAILED) {
		q->area = NULL;
		fprintf(stderr, "l2fwd: queue %d: mmap %zu bytes: %s\n", q->qid, size, strerror(errno));
		return -1;
	}
	q->free_frames = calloc(q->nframes, sizeof(*q->free_frames));
	if (!q->free_frames)
		return -1;
	for (uint32_t i = 0; i < q->nframes; i++)
		q->free_frames[q->nfree++] = (uint64_t)i * q->frame_size;

	err = xsk_umem__create(&q->umem, q->area, size, &q->fq, &q->cq, &ucfg);
	if (err) {
		fprintf(stderr, "l2fwd: queue %d: xsk_umem__create: %s\n", q->qid, strerror(-err));
		return -1;
	}
	err = xsk_socket__create(&q->xsk, dev, (uint32_t)q->qid, q->umem, &q->rx, &q->tx, &scfg);
	if (err) {
		fprintf(stderr, "l2fwd: queue %d: xsk_socket__create on %s: %s\n", q->qid, dev,
			strerror(-err));
		return -1;
	}
	err = xsk_socket__update_xskmap(q->xsk, map_fd);
	if (err) {
		fprintf(stderr, "l2fwd: queue %d: xsk_socket__update_xskmap: %s\n", q->qid,
			strerror(-err));
		return -1;
	}
	refill(q);
	return 0;
}

static void teardown_queue(struct queue *q)
{
	if (q->xsk)
		xsk_socket__delete(q->xsk);
	if (q->umem)
		xsk_umem__delete(q->umem);
	if (q->area)
		munmap(q->area, (size_t)q->nframes * q->frame_size);
	free(q->free_frames);
}

static void print_totals(struct queue *qs, int nq, enum mode mode, const char *dev)
{
	uint64_t rx = 0, tx = 0;

	printf("{\"dev\":\"%s\",\"mode\":\"%s\",\"queues\":[", dev,
	       mode == MODE_FWD ? "fwd" : "drop");
	for (int i = 0; i < nq; i++) {
		struct queue *q = &qs[i];
		struct xdp_statistics st = { 0 };
		socklen_t len = sizeof(st);

		if (q->xsk)
			getsockopt(xsk_socket__fd(q->xsk), SOL_XDP, XDP_STATISTICS, &st, &len);
		rx += q->rx_pkts;
		tx += q->completions;
		printf("%s{\"qid\":%d,\"cpu\":%d,\"rx\":%llu,\"tx\":%llu,\"tx_submitted\":%llu,\"tx_ring_full\":%llu,"
		       "\"kicks\":%llu,\"rx_dropped\":%llu,"
		       "\"rx_ring_full\":%llu,\"rx_fill_ring_empty\":%llu,\"tx_ring_empty\":%llu}",
		       i ? "," : "", q->qid, q->cpu, (unsigned long long)q->rx_pkts,
		       (unsigned long long)q->completions, (unsigned long long)q->tx_pkts,
		       (unsigned long long)q->tx_full,
		       (unsigned long long)q->kicks,
		       (unsigned long long)st.rx_dropped, (unsigned long long)st.rx_ring_full,
		       (unsigned long long)st.rx_fill_ring_empty_descs,
		       (unsigned long long)st.tx_ring_empty_descs);
	}
	printf("],\"rx\":%llu,\"tx\":%llu}\n", (unsigned long long)rx, (unsigned long long)tx);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "dev", required_argument, NULL, 'd' },
		{ "queues", required_argument, NULL, 'q' },
		{ "cpus", required_argument, NULL, 'c' },
		{ "mode", required_argument, NULL, 'm' },
		{ "batch", required_argument, NULL, 'b' },
		{ "bufs", required_argument, NULL, 'B' },
		{ "frame-size", required_argument, NULL, 'f' },
		{ "ring", required_argument, NULL, 'r' },
		{ "skb", no_argument, NULL, 'S' },
		{ "obj", required_argument, NULL, 'o' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *dev = NULL, *obj_path = L2FWD_OBJ;
	unsigned long nq = 1, batch = 64, bufs = 16384, frame_size = 2048, ring = 2048;
	int cpus[MAX_QUEUES] = { 0 }, ncpus = 0, opt, ifindex, prog_fd, map_fd, rc = 1;
	enum mode mode = MODE_FWD;
	__u32 xdp_flags = XDP_FLAGS_DRV_MODE;
	struct rlimit rl = { RLIM_INFINITY, RLIM_INFINITY };
	struct bpf_object *obj = NULL;
	struct bpf_program *prog;
	struct bpf_map *map;
	struct queue *qs = NULL;
	int attached = 0;

	while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'd': dev = optarg; break;
		case 'q': nq = strtoul(optarg, NULL, 0); break;
		case 'c': ncpus = parse_cpus(optarg, cpus, MAX_QUEUES); if (ncpus <= 0) goto bad; break;
		case 'm':
			if (!strcmp(optarg, "fwd"))
				mode = MODE_FWD;
			else if (!strcmp(optarg, "drop"))
				mode = MODE_DROP;
			else
				goto bad;
			break;
		case 'b': batch = strtoul(optarg, NULL, 0); break;
		case 'B': bufs = strtoul(optarg, NULL, 0); break;
		case 'f': frame_size = strtoul(optarg, NULL, 0); break;
		case 'r': ring = strtoul(optarg, NULL, 0); break;
		case 'S': xdp_flags = XDP_FLAGS_SKB_MODE; break;
		case 'o': obj_path = optarg; break;
		case 'h': usage(argv[0]); return 0;
		default: goto bad;
		}
	}
	if (!dev || nq == 0 || nq > MAX_QUEUES || batch == 0 || batch > MAX_BATCH ||
	    (frame_size != 2048 && frame_size != 4096) || ring == 0 || (ring & (ring - 1)) ||
	    bufs / nq < 2 * ring)
		goto bad;
	if (ncpus == 0) {
		for (unsigned long i = 0; i < nq; i++)
			cpus[i] = (int)i;
		ncpus = (int)nq;
	}
	if ((unsigned long)ncpus < nq) {
		fprintf(stderr, "l2fwd: --cpus names %d CPUs for %lu queues\n", ncpus, nq);
		return 2;
	}
	ifindex = (int)if_nametoindex(dev);
	if (!ifindex) {
		fprintf(stderr, "l2fwd: no interface %s: %s\n", dev, strerror(errno));
		return 1;
	}
	setrlimit(RLIMIT_MEMLOCK, &rl);

	obj = bpf_object__open_file(obj_path, NULL);
	if (!obj || bpf_object__load(obj)) {
		fprintf(stderr, "l2fwd: load %s: %s\n", obj_path, strerror(errno));
		return 1;
	}
	prog = bpf_object__find_program_by_name(obj, "xsk_redirect");
	map = bpf_object__find_map_by_name(obj, "xsks_map");
	if (!prog || !map) {
		fprintf(stderr, "l2fwd: %s lacks xsk_redirect or xsks_map\n", obj_path);
		goto out;
	}
	prog_fd = bpf_program__fd(prog);
	map_fd = bpf_map__fd(map);
	/* Never replace a program someone else attached. */
	if (bpf_xdp_attach(ifindex, prog_fd, xdp_flags | XDP_FLAGS_UPDATE_IF_NOEXIST, NULL)) {
		fprintf(stderr, "l2fwd: attach XDP program to %s: %s\n", dev, strerror(errno));
		goto out;
	}
	attached = 1;

	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);

	qs = calloc(nq, sizeof(*qs));
	if (!qs)
		goto out;
	for (unsigned long i = 0; i < nq; i++) {
		qs[i].qid = (int)i;
		qs[i].cpu = cpus[i];
		qs[i].mode = mode;
		qs[i].batch = (uint32_t)batch;
		qs[i].frame_size = (uint32_t)frame_size;
		qs[i].nframes = (uint32_t)(bufs / nq);
		if (setup_queue(&qs[i], dev, (uint32_t)ring, map_fd))
			goto out;
	}
	for (unsigned long i = 0; i < nq; i++) {
		if (pthread_create(&qs[i].tid, NULL, worker, &qs[i])) {
			fprintf(stderr, "l2fwd: pthread_create failed\n");
			stop = 1;
			break;
		}
		qs[i].started = 1;
	}
	fprintf(stderr, "l2fwd: %s: %lu queue(s), mode %s, batch %lu, %lu frames of %lu bytes per queue\n",
		dev, nq, mode == MODE_FWD ? "fwd" : "drop", batch, bufs / nq, frame_size);
	while (!stop)
		usleep(50 * 1000);
	rc = 0;

out:
	stop = 1;
	for (unsigned long i = 0; qs && i < nq; i++)
		if (qs[i].started)
			pthread_join(qs[i].tid, NULL);
	if (attached) {
		LIBBPF_OPTS(bpf_xdp_attach_opts, dopts, .old_prog_fd = prog_fd);

		/* old_prog_fd makes the detach conditional: a program that replaced ours stays. */
		if (bpf_xdp_detach(ifindex, xdp_flags, &dopts))
			fprintf(stderr, "l2fwd: detach XDP program from %s: %s\n", dev,
				strerror(errno));
	}
	if (qs) {
		print_totals(qs, (int)nq, mode, dev);
		for (unsigned long i = 0; i < nq; i++)
			teardown_queue(&qs[i]);
		free(qs);
	}
	bpf_object__close(obj);
	return rc;

bad:
	usage(argv[0]);
	return 2;
}
