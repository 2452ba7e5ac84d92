// SPDX-License-Identifier: BSD-3-Clause OR GPL-2.0-only
/*
 * maglev_fast: the common case of the Maglev load balancer (nf-maglev) decided in the kernel.
 *
 * For a frame that is Ethernet (at most one 802.1Q/802.1ad tag), IPv4 without options or IPv6 without
 * extension headers, not a fragment, TCP or UDP, well formed, and addressed to a VIP, it makes the decision
 * nf-maglev's data plane makes (`nf-maglev/src/dataplane/`): the seeded flow hash of `hash.rs`, the
 * connection map first, else the VIP's Maglev table, then GRE encapsulation (outer IPv4 or IPv6 header of
 * the backend's family, RFC 2784 header without options) or the L2 direct-server-return MAC rewrite, and
 * sends the frame back out with XDP_TX. Everything else is handed on unchanged, counted by reason:
 *   - to the program in fallback[0] by tail call when there is one (the xsk_filter program, which claims
 *     for the AF_XDP sockets what the network function wants and passes the rest to the kernel);
 *   - else, for a packet to a VIP, to the AF_XDP socket of its receive queue (xsks_map), and XDP_PASS for
 *     anything else (also when no socket is bound there).
 * The user-space data plane then decides what this program does not: fragments, ICMP errors, ARP and
 * neighbour discovery, packets too big for the tunnel, VIPs without a table, backends without an outer
 * header, and TCP packets other than a SYN that miss the connection map while the VIP keeps past tables
 * (they may belong to a connection that began under an older table, which only user space keeps).
 *
 * Maps, all but the connection map, the flow cache and the counters in two generations (the low bit of
 * cfg.active names the one packets see, as in xsk_filter): user space writes a whole new state (VIPs, backends, tables) under the
 * other generation, then switches with one array write, then deletes the old generation's entries. Every
 * packet sees one complete state, never a mix.
 *   cfg       (global, section .data.cfg: a one-entry array map) hash seed, MTU, the port's MAC, the
 *             active generation, timeouts, flood limit, backend_slots size.
 *   vips      HASH (addr, proto, gen, port) -> where the VIP's table is, its size, mode and flags. IPv4 as
 *             ::ffff:a.b.c.d, port in network order, 0 for a VIP of all ports (the fallback lookup).
 *   backend_slots
 *             ARRAY indexed by gen * cfg.backend_slots + backend id, for ids below cfg.backend_slots -> MAC,
 *             whether it takes new connections, the outer IP header template (and for IPv4 the sum of
 *             its fixed words, so the checksum needs no pass over it), whether the entry is a backend.
 *             An array lookup is a bounds check and an add: a packet of a known connection pays no hash
 *             for its backend.
 *   backends  HASH (backend id, gen) -> the same, for ids at or above cfg.backend_slots (ids are never
 *             reused, so a long-lived instance with much churn may outgrow the array).
 *   tables    ARRAY of backend ids: the VIP's table is tables[base .. base + size]; a flow's slot is
 *             ((hash >> 32) * size) >> 32, as `maglev::Table::lookup`.
 *   conns     LRU_HASH 5-tuple -> backend id, VIP id, expiry, one LRU for the whole map (per-CPU LRU lists
 *             would give each CPU a fixed share of the entries, so one busy CPU would evict while the map
 *             has room; the common list is locked only to refill a CPU's small local free list). One entry
 *             per flow for all CPUs: a flow's packets do not always arrive on one CPU (a veth runs XDP on
 *             the sender's CPU), and a SYN that moves a reused 5-tuple to a new backend must move it for
 *             every CPU, or the connection's next packet could go to the old backend. Idle timeouts as
 *             nf-maglev's conntrack: an entry lives while now <= expires, and each packet moves expires to
 *             now + the timeout of its protocol, the short one once a FIN or RST was seen (expires 0: no
 *             entry). User space writes entries too (connections it forwarded from a past table).
 *   flood     PERCPU_ARRAY[1]: the flood guard's second and the entries made in it on this CPU; above
 *             cfg.max_new_per_sec new flows are forwarded by the table but not recorded (Katran).
 *   vip_traffic, backend_traffic
 *             PERCPU_ARRAY by VIP id / backend id: packets, bytes and new connections forwarded here.
 *   stats     PERCPU_ARRAY[1] of all counters (see enum below).
 *   flow_cache
 *             ARRAY, FLOW_CACHE_ENTRIES per CPU (direct-mapped by a multiplicative hash of the 5-tuple):
 *             the decision this CPU made for a flow from the VIP and connection maps, for its packets
 *             without SYN, FIN or RST. It holds while the tick (64 jiffies, under a second), the state
 *             epoch (cfg.active, which every configuration write advances) and the change count are
 *             those it was made under; the first packet of each tick takes the whole way and renews
 *             the connection entry's timeout and LRU place. A hit costs no hash-map lookup: parse,
 *             one cache line, the backend array, rewrite, counters. An untagged IPv4 frame is first
 *             checked against the cache on its own bytes (cached_v4), before any key is built.
 *   conn_changes, user_changes
 *             (globals, sections .data.conn_changes and .data.user_changes) connection entries this
 *             program replaced (a SYN moving a reused or expired 5-tuple), and writes and deletes of
 *             user space; a change ends every CPU's cached decisions, so a flow whose entry moves on one
 *             CPU moves on all. Two sections, so that user space's write of its count never overwrites
 *             the program's atomic adds.
 * Time is CLOCK_MONOTONIC (bpf_ktime_get_coarse_ns, which user space reads as CLOCK_MONOTONIC_COARSE) in
 * seconds, computed without a division (see clock_secs); cne::bpf::fast::clock_secs is the same function.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "nf_common.h"

/* VIP and backend entries per generation; the maps hold two generations. */
#define VIPS_MAX 1024
#define BACKENDS_MAX 16384
/* Default backend ids per generation in backend_slots; user space sets it before loading. */
#define BACKEND_SLOTS 4096
/* Default connection-map and table sizes; user space sets them before loading. */
#define CONNS_MAX 65536
#define TABLE_ENTRIES 131074
/* A cached decision holds for 64 jiffies (64 ms at HZ=1000, 640 ms at HZ=100): under a second, so that
 * a flow's connection entry is still renewed about every second. */
#define CACHE_TICK_SHIFT 6
/* Entries of each CPU's flow cache (a power of two). */
#define FLOW_CACHE_BITS 12
#define FLOW_CACHE_ENTRIES (1u << FLOW_CACHE_BITS)
/* Traffic counters by id; ids at or above these are not counted. */
#define VIP_IDS_MAX 4096
#define BACKEND_IDS_MAX 65536

#define MODE_GRE 0
#define MODE_L2DSR 1

#define VIP_HAS_TABLE (1u << 0) /* the table has slots (some backend has weight) */
#define VIP_HAS_PAST (1u << 1) /* user space keeps past tables for the VIP */

#define BACKEND_NEW_CONNS (1u << 0) /* weight > 0 and healthy (or the VIP fails open) */
#define BACKEND_PRESENT (1u << 1) /* an entry of backend_slots that is a backend */

#define OUTER_NONE 0
#define OUTER_V4 4
#define OUTER_V6 6

#define GRE_LEN 4
#define TCP_SYN 0x02
#define TCP_ACK 0x10
#define TCP_FIN 0x01
#define TCP_RST 0x04

enum {
	STAT_FWD_PACKETS = 0,
	STAT_FWD_BYTES = 1,
	STAT_NOT_FAST = 2, /* not the common case (parse): VLANs, options, fragments, ICMP, ARP, ... */
	STAT_NO_VIP = 3,
	STAT_NO_TABLE = 4,
	STAT_PAST = 5,
	STAT_NO_BACKEND = 6, /* a table slot names a backend the map does not have */
	STAT_NO_OUTER = 7,
	STAT_TOO_BIG = 8,
	STAT_ADJUST_FAILED = 9, /* a helper failed half way: dropped */
	STAT_CONN_HITS = 10, /* hits in the connection map (those of the flow cache are STAT_CACHE_HITS) */
	STAT_CONN_NEW = 11,
	STAT_CONN_EXPIRED = 12, /* an entry found past its timeout */
	STAT_CONN_LIMITED = 13, /* a new flow not recorded by the flood guard */
	STAT_CACHE_HITS = 14, /* packets sent as the flow cache decided (counted when sent) */
	STAT_MAX = 15,
};

struct fast_cfg {
	__u64 seed;
	__u32 active; /* epoch of the state packets see; its low bit is the generation */
	__u16 mtu; /* largest IP packet sent to a backend */
	__u8 mac[6]; /* the port's MAC: source of every frame sent */
	__u32 tcp_timeout; /* idle timeouts, seconds */
	__u32 tcp_fin_timeout;
	__u32 udp_timeout;
	__u32 max_new_per_sec; /* flood guard: new entries per second and CPU, 0 = no limit */
	__u32 backend_slots; /* entries of backend_slots per generation */
};

struct vip_info {
	__u32 base; /* first entry of the VIP's table in `tables` */
	__u32 size; /* table slots */
	__u32 id;
	__u8 mode;
	__u8 flags;
	__u16 pad;
};

struct backend_key {
	__u32 id;
	__u32 gen;
};

struct backend {
	__u32 sum; /* IPv4: sum of the template's 16-bit words but total length and checksum, unfolded */
	__u8 mac[6];
	__u8 flags;
	__u8 outer; /* OUTER_* */
	__u8 hdr[40]; /* outer header template: 20 bytes for IPv4, 40 for IPv6 */
};

struct conn_key {
	__u32 src[4];
	__u32 dst[4];
	__u16 sport; /* network order */
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
} __attribute__((aligned(8))); /* compared as five 64-bit words */

/* A recorded connection: its backend, and the VIP it was recorded for (a backend id only means something
 * within its VIP; a 5-tuple that now matches another VIP is a new flow there). */
struct conn_val {
	__u32 backend;
	__u32 vip;
	__u32 expires; /* seconds; 0: no entry on this CPU */
	__u8 closing; /* a FIN or RST was seen */
	__u8 pad[3];
};

/* Where a packet goes: its backend, the VIP it came for (ids) and how it is sent. */
struct decision {
	__u32 backend;
	__u32 vip; /* VIP id */
	__u32 mode_label; /* the VIP's mode << 24 | the flow hash's low 20 bits (IPv6 outer flow label) */
};

/* A decision of this CPU in one tick, under one state epoch and one count of connection-map changes:
 * what the connection map and the VIP gave a packet of this flow that was no SYN, FIN or RST. */
struct flow_cached {
	struct conn_key key;
	__u32 epoch; /* cfg.active when made */
	__u32 tick; /* jiffies >> CACHE_TICK_SHIFT when made; it holds in that tick only */
	__u32 changes; /* conn_changes + user_changes when made */
	struct decision d;
};

struct flood {
	__u32 sec;
	__u32 count;
};

struct traffic {
	__u64 packets;
	__u64 bytes;
	__u64 new_conns;
};

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, XSKS_MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} fallback SEC(".maps");

/* Globals, each in a section (and so a one-entry array map) of its own: a packet reads them without a map
 * lookup, and user space writes each whole without touching the others. */
struct fast_cfg cfg SEC(".data.cfg");
__u32 conn_changes SEC(".data.conn_changes"); /* advanced by this program */
__u32 user_changes SEC(".data.user_changes"); /* advanced by user space */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2 * VIPS_MAX);
	__type(key, struct addr_key);
	__type(value, struct vip_info);
} vips SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * BACKEND_SLOTS);
	__type(key, __u32);
	__type(value, struct backend);
} backend_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2 * BACKENDS_MAX);
	__type(key, struct backend_key);
	__type(value, struct backend);
} backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TABLE_ENTRIES);
	__type(key, __u32);
	__type(value, __u32);
} tables SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, CONNS_MAX);
	__type(key, struct conn_key);
	__type(value, struct conn_val);
} conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct flood);
} flood SEC(".maps");

/* Each CPU's part at cpu * FLOW_CACHE_ENTRIES (user space multiplies this size by the possible CPUs). A plain
 * array, not a per-CPU one: an entry is one load away (a per-CPU array first loads a pointer per entry),
 * and mmapable so that its values start on a page and each 64-byte entry is one cache line. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FLOW_CACHE_ENTRIES);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct flow_cached);
} flow_cache SEC(".maps");


struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, VIP_IDS_MAX);
	__type(key, __u32);
	__type(value, struct traffic);
} vip_traffic SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, BACKEND_IDS_MAX);
	__type(key, __u32);
	__type(value, struct traffic);
} backend_traffic SEC(".maps");

/* All counters in one per-CPU value: the few cache lines a packet touches for counting are always the
 * same two. */
struct counters {
	__u64 v[STAT_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct counters);
} stats SEC(".maps");

static __always_inline struct counters *counters(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&stats, &zero);
}

static __always_inline void add(struct counters *c, __u32 idx, __u64 n)
{
	if (c && idx < STAT_MAX)
		c->v[idx] += n; /* per-CPU value: no atomic needed */
}

/* Backend `id` of generation `gen`, or 0. */
static __always_inline struct backend *backend_of(const struct fast_cfg *c, __u32 id, __u32 gen)
{
	struct backend_key key = {};
	struct backend *b;

	if (id < c->backend_slots) {
		__u32 idx = (gen ? c->backend_slots : 0) + id;

		b = bpf_map_lookup_elem(&backend_slots, &idx);
		return b && (b->flags & BACKEND_PRESENT) ? b : 0;
	}
	key.id = id;
	key.gen = gen;
	return bpf_map_lookup_elem(&backends, &key);
}

static __always_inline void count(void *map, __u32 id, __u64 bytes, __u64 new_conn)
{
	struct traffic *t = bpf_map_lookup_elem(map, &id);

	if (t) {
		t->packets++;
		t->bytes += bytes;
		t->new_conns += new_conn;
	}
}

/* Whether the flood guard lets this CPU record one more connection in second `now`. */
static __always_inline int may_record(const struct fast_cfg *c, __u32 now)
{
	__u32 zero = 0;
	struct flood *f;

	if (c->max_new_per_sec == 0)
		return 1;
	f = bpf_map_lookup_elem(&flood, &zero);
	if (!f)
		return 1;
	if (f->sec != now) {
		f->sec = now;
		f->count = 0;
	}
	if (f->count >= c->max_new_per_sec)
		return 0;
	f->count++;
	return 1;
}

/* Nanoseconds to seconds without a 64-bit division (tens of cycles): (ns / 2^20) * (2^52 / 10^9) / 2^32.
 * The factor is rounded up from 4503599.63 (relative error 8e-8: a 900 s timeout is off by 72 us), and the
 * product stays below 2^64 for 130 years of uptime. */
static __always_inline __u32 clock_secs(__u64 ns)
{
	return (__u32)(((ns >> 20) * 4503600ULL) >> 32);
}

static __always_inline __u32 timeout(const struct fast_cfg *c, int tcp, int closing)
{
	if (!tcp)
		return c->udp_timeout;
	return closing ? c->tcp_fin_timeout : c->tcp_timeout;
}

/* The wyhash primes of nf-maglev's hash.rs. */
#define P0 0xa0761d6478bd642fULL
#define P1 0xe7037ed1a0b428dbULL
#define P2 0x8ebc6af09c88c6e3ULL
#define P3 0x589965cc75374cc3ULL

/* The 128-bit product of a and b, its halves xored (hash.rs fold_mul). BPF has no 64x64->128 multiply, so
 * it is put together from four 32x32->64 products. */
static __always_inline __u64 fold_mul(__u64 a, __u64 b)
{
	__u64 a_lo = a & 0xffffffff, a_hi = a >> 32;
	__u64 b_lo = b & 0xffffffff, b_hi = b >> 32;
	__u64 ll = a_lo * b_lo, lh = a_lo * b_hi, hl = a_hi * b_lo, hh = a_hi * b_hi;
	__u64 mid = (ll >> 32) + (lh & 0xffffffff) + (hl & 0xffffffff);
	__u64 lo = (ll & 0xffffffff) | (mid << 32);
	__u64 hi = hh + (lh >> 32) + (hl >> 32) + (mid >> 32);

	return lo ^ hi;
}

static __always_inline __u64 rotl(__u64 x, int r)
{
	return (x << r) | (x >> (64 - r));
}

/* The two 64-bit halves of a 16-byte address as hash.rs reads the u128 (big-endian). */
static __always_inline __u64 addr_hi(const __u32 *a)
{
	return ((__u64)bpf_ntohl(a[0]) << 32) | bpf_ntohl(a[1]);
}

static __always_inline __u64 addr_lo(const __u32 *a)
{
	return ((__u64)bpf_ntohl(a[2]) << 32) | bpf_ntohl(a[3]);
}

/* hash.rs flow_hash; ports in host order. */
static __always_inline __u64 flow_hash(__u64 seed, const struct conn_key *k)
{
	__u64 pp = ((__u64)bpf_ntohs(k->sport) << 24) | ((__u64)bpf_ntohs(k->dport) << 8) | k->proto;
	__u64 a = fold_mul(addr_lo(k->src) ^ P0, addr_hi(k->src) ^ seed ^ P1);
	__u64 b = fold_mul(addr_lo(k->dst) ^ P2, addr_hi(k->dst) ^ P3);
	__u64 c = fold_mul(pp ^ a ^ P1, b ^ seed ^ P2);

	return fold_mul(c ^ P3, rotl(a, 23) ^ P0 ^ seed);
}

/* Loads and stores of 16, 32 and 64 bits at any address of a frame or a map value: the verifier allows
 * unaligned access there where the CPU does it well (x86-64, arm64), and without the casts clang copies
 * byte by byte, as it must assume the worst alignment. */
static __always_inline __u16 ld16(const void *p)
{
	return *(const __u16 *)p;
}

static __always_inline __u32 ld32(const void *p)
{
	return *(const __u32 *)p;
}

static __always_inline __u64 ld64(const void *p)
{
	return *(const __u64 *)p;
}

static __always_inline void st16(void *p, __u16 v)
{
	*(__u16 *)p = v;
}

static __always_inline void st32(void *p, __u32 v)
{
	*(__u32 *)p = v;
}

static __always_inline void st64(void *p, __u64 v)
{
	*(__u64 *)p = v;
}

static __always_inline void copy_mac(void *d, const void *s)
{
	st32(d, ld32(s));
	st16((__u8 *)d + 4, ld16((const __u8 *)s + 4));
}

/* Hands a frame the fast path does not forward to the slow path, unchanged. */
static __always_inline int hand_over(struct xdp_md *ctx, __u32 reason, int vip)
{
	add(counters(), reason, 1);
	bpf_tail_call(ctx, &fallback, 0);
	/* No fallback program: VIP traffic to the AF_XDP socket of this queue, the rest to the kernel. */
	if (vip)
		return bpf_redirect_map(&xsks_map, ctx->rx_queue_index, XDP_PASS);
	return XDP_PASS;
}

/* What parsing found out about a frame the fast path may forward. */
struct pkt {
	struct conn_key key;
	__u32 l3; /* offset of the IP header: 14 or 18 */
	__u32 ip_len; /* length of the IP datagram */
	__u8 tcp_flags;
	__u8 v6;
};

/* Checks the transport header of protocol `proto` at l4 (l4_len bytes of transport data) as
 * nf-maglev's fast parser does. Returns the TCP flags (0 for UDP), or -1 when the frame is not the
 * common case. */
static __always_inline int check_l4(__u8 proto, __u8 *l4, void *end, __u32 l4_len)
{
	if (proto == IPPROTO_TCP) {
		__u32 hlen;

		if ((void *)(l4 + 20) > end || l4_len < 20)
			return -1;
		hlen = (l4[12] >> 4) * 4;
		if (hlen < 20 || hlen > l4_len)
			return -1;
		return l4[13];
	}
	if (proto == IPPROTO_UDP) {
		__u32 len;

		if ((void *)(l4 + 8) > end || l4_len < 8)
			return -1;
		len = ((__u32)l4[4] << 8) | l4[5];
		if (len < 8 || len > l4_len)
			return -1;
		return 0;
	}
	return -1;
}

static __always_inline int parse_l4(struct pkt *p, void *l4, void *end, __u32 l4_len)
{
	int flags = check_l4(p->key.proto, l4, end, l4_len);

	if (flags < 0)
		return 0;
	p->tcp_flags = flags;
	p->key.sport = ld16(l4);
	p->key.dport = ld16((__u8 *)l4 + 2);
	return 1;
}

/* An IPv4 address as the connection key holds it (::ffff:a.b.c.d): the third word of the address. */
#define V4_MAPPED_WORD 0xffff0000u /* bpf_htonl(0x0000ffff) */

/* The length of the IPv4 datagram at h, of which `room` bytes are in the frame (h + 20 within it), when
 * it is the common case: version 4 without options, not a fragment (DF allowed), a length that fits;
 * else 0. */
static __always_inline __u32 v4_len(const __u8 *h, __u32 room)
{
	__u32 len;

	if (h[0] != 0x45 || (h[6] & 0x3f) != 0 || h[7] != 0)
		return 0;
	len = bpf_ntohs(ld16(h + 2));
	return len < 20 || len > room ? 0 : len;
}

static __always_inline int parse(struct pkt *p, void *data, void *end)
{
	struct ethhdr *eth = data;
	__u32 len = end - data;
	__be16 proto;

	if ((void *)(eth + 1) > end)
		return 0;
	proto = ld16(&eth->h_proto);
	p->l3 = sizeof(*eth);
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		struct vlan_hdr *vh = (void *)(eth + 1);

		if ((void *)(vh + 1) > end)
			return 0;
		proto = vh->proto;
		p->l3 += sizeof(*vh);
	}
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = data + p->l3;
		__u8 *h = (__u8 *)ip;

		if ((void *)(ip + 1) > end)
			return 0;
		p->ip_len = v4_len(h, len - p->l3);
		if (!p->ip_len)
			return 0;
		p->v6 = 0;
		p->key.src[0] = 0;
		p->key.src[1] = 0;
		p->key.src[2] = V4_MAPPED_WORD;
		p->key.src[3] = ip->saddr;
		p->key.dst[0] = 0;
		p->key.dst[1] = 0;
		p->key.dst[2] = V4_MAPPED_WORD;
		p->key.dst[3] = ip->daddr;
		p->key.proto = ip->protocol;
		return parse_l4(p, ip + 1, end, p->ip_len - 20);
	}
	if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = data + p->l3;
		__u8 *h = (__u8 *)ip6;

		if ((void *)(ip6 + 1) > end)
			return 0;
		if ((h[0] >> 4) != 6)
			return 0;
		p->ip_len = 40 + bpf_ntohs(ip6->payload_len);
		if (p->ip_len > len - p->l3)
			return 0;
		p->v6 = 1;
		__builtin_memcpy(p->key.src, &ip6->saddr, 16); /* both 4-byte aligned types: word copies */
		__builtin_memcpy(p->key.dst, &ip6->daddr, 16);
		/* An IPv4-mapped destination in an IPv6 packet is no IPv4 VIP: the keys would collide. */
		if (p->key.dst[0] == 0 && p->key.dst[1] == 0 && p->key.dst[2] == bpf_htonl(0x0000ffff))
			return 0;
		p->key.proto = ip6->nexthdr;
		return parse_l4(p, ip6 + 1, end, p->ip_len - 40);
	}
	return 0;
}

/* Writes the Ethernet header of a frame whose old header now starts at `old` bytes from the front: MACs,
 * the VLAN tag if any, the EtherType. */
static __always_inline int write_l2(void *data, void *end, __u32 l3, __u32 old, const __u8 *dst,
				    const __u8 *src, __be16 type)
{
	__u8 *d = data;

	if ((void *)(d + 18) > end)
		return 0;
	if (l3 == 18) {
		__u8 *tag = d + old + 12;

		if ((void *)(tag + 4) > end)
			return 0;
		/* Read before anything is written: the old header lies past the new one (old >= 24). */
		st32(d + 12, ld32(tag));
		st16(d + 16, type);
	} else {
		st16(d + 12, type);
	}
	copy_mac(d, dst);
	copy_mac(d + 6, src);
	return 1;
}

/* GRE encapsulation in front of the IP datagram, as nf-maglev's `write_gre_headers`. `ip_len`: the
 * datagram's length, `label`: the decision's mode_label (its low 20 bits are an IPv6 outer header's flow
 * label). The datagram's TOS and length are read again behind the new headers, so that nothing of the
 * packet needs to be kept across the helper calls. Returns the stat index of the reason to hand over, or
 * STAT_MAX when the frame is ready to send. */
static __always_inline __u32 encap_gre(struct xdp_md *ctx, __u32 l3, __u32 ip_len, __u8 v6,
				       const struct backend *b, const struct fast_cfg *c, __u32 label)
{
	__u32 overhead, outer_len, frame_len;
	void *data, *end;
	__u8 *h, *in, tos;
	__be16 type, inner;

	if (b->outer == OUTER_V4)
		overhead = 20 + GRE_LEN;
	else if (b->outer == OUTER_V6)
		overhead = 40 + GRE_LEN;
	else
		return STAT_NO_OUTER;
	if (ip_len + overhead > c->mtu)
		return STAT_TOO_BIG;
	/* Ethernet padding of short frames is not part of the datagram: the new frame ends with it. */
	frame_len = (long)ctx->data_end - (long)ctx->data;
	if (frame_len > l3 + ip_len &&
	    bpf_xdp_adjust_tail(ctx, (int)(l3 + ip_len) - (int)frame_len))
		return STAT_ADJUST_FAILED;
	if (bpf_xdp_adjust_head(ctx, -(int)overhead))
		return STAT_ADJUST_FAILED;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	h = data + (l3 == 18 ? 18 : 14);
	in = h + overhead;
	if ((void *)(in + 6) > end)
		return STAT_ADJUST_FAILED;
	if (v6) {
		tos = (in[0] << 4) | (in[1] >> 4);
		outer_len = 40 + bpf_ntohs(ld16(in + 4)) + overhead;
		inner = bpf_htons(ETH_P_IPV6);
	} else {
		tos = in[1];
		outer_len = bpf_ntohs(ld16(in + 2)) + overhead;
		inner = bpf_htons(ETH_P_IP);
	}
	if (b->outer == OUTER_V4) {
		__u32 s = b->sum + tos + outer_len;
		__u16 len16 = bpf_htons(outer_len), csum;

		type = bpf_htons(ETH_P_IP);
		if (!write_l2(data, end, l3, 24, b->mac, c->mac, type))
			return STAT_ADJUST_FAILED;
		if ((void *)(h + 24) > end)
			return STAT_ADJUST_FAILED;
		s = (s & 0xffff) + (s >> 16);
		s = (s & 0xffff) + (s >> 16);
		csum = bpf_htons((__u16)~s);
		st64(h, ld64(b->hdr));
		st64(h + 8, ld64(b->hdr + 8));
		st32(h + 16, ld32(b->hdr + 16));
		h[1] = tos;
		st16(h + 2, len16);
		st16(h + 10, csum);
		st16(h + 20, 0);
		st16(h + 22, inner);
	} else {
		__u32 first = (6u << 28) | ((__u32)tos << 20) | (label & 0x000fffff);
		__u16 plen = bpf_htons(outer_len - 40);

		first = bpf_htonl(first);
		type = bpf_htons(ETH_P_IPV6);
		if (!write_l2(data, end, l3, 44, b->mac, c->mac, type))
			return STAT_ADJUST_FAILED;
		if ((void *)(h + 44) > end)
			return STAT_ADJUST_FAILED;
		st32(h, first);
		st16(h + 4, plen);
		st16(h + 6, ld16(b->hdr + 6));
		st64(h + 8, ld64(b->hdr + 8));
		st64(h + 16, ld64(b->hdr + 16));
		st64(h + 24, ld64(b->hdr + 24));
		st64(h + 32, ld64(b->hdr + 32));
		st16(h + 40, 0);
		st16(h + 42, inner);
	}
	return STAT_MAX;
}

/* Where a flow sits in this CPU's flow cache: a multiplicative hash of the xor of each address's words,
 * the ports (the key's two port fields as one word) and the protocol (the flow hash is dearer, and a
 * collision only costs the lookups the cache saves). */
static __always_inline __u32 cache_slot(__u32 src, __u32 dst, __u32 ports, __u8 proto)
{
	__u64 x = ((__u64)src << 32 | dst) ^ ports ^ ((__u64)proto << 40);

	return (__u32)((x * 0x9e3779b97f4a7c15ULL) >> (64 - FLOW_CACHE_BITS));
}

static __always_inline __u32 cache_index(const struct conn_key *k)
{
	return cache_slot(k->src[0] ^ k->src[1] ^ k->src[2] ^ k->src[3],
			  k->dst[0] ^ k->dst[1] ^ k->dst[2] ^ k->dst[3], ld32(&k->sport), k->proto);
}

static __always_inline int same_key(const struct conn_key *a, const struct conn_key *b)
{
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;

	return ((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3]) | (x[4] ^ y[4])) == 0;
}

/* The sum of the two change counters: conn_changes counts connection entries this program replaced (a
 * SYN that re-picks a reused 5-tuple), user_changes writes and deletes of user space. Read before the
 * connection map, so a cached decision made from an entry older than a change carries an older sum (x86
 * keeps stores in order and loads in order; the counter is written after the entry). */
static __always_inline __u32 change_count(void)
{
	return *(volatile __u32 *)&conn_changes + *(volatile __u32 *)&user_changes;
}

/* Sends the frame (its IP datagram at l3, ip_len bytes, IPv6 if v6) as decision d says (to backend b, in
 * its mode), and counts it: one packet of a new connection if new_conn, one hit of the flow cache if
 * cache_hit. Reads d only after the helper calls (it is a map value or on the stack: stable), so that the
 * decision takes no register across them. */
static __always_inline int forward(struct xdp_md *ctx, const struct fast_cfg *c, const struct backend *b,
				   const struct decision *d, __u32 l3, __u32 ip_len, __u8 v6, int new_conn,
				   int cache_hit)
{
	__u8 *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 bytes = (void *)end - (void *)data, reason;
	struct counters *st;

	if ((d->mode_label >> 24) == MODE_L2DSR) {
		/* Only the MAC addresses change. */
		if ((void *)(data + 12) > end)
			return hand_over(ctx, STAT_NOT_FAST, 1);
		copy_mac(data, b->mac);
		copy_mac(data + 6, c->mac);
		reason = STAT_MAX;
	} else {
		reason = encap_gre(ctx, l3, ip_len, v6, b, c, d->mode_label);
	}
	if (reason == STAT_ADJUST_FAILED) {
		/* The frame may be half rewritten: nothing sane can be handed on. */
		add(counters(), reason, 1);
		return XDP_DROP;
	}
	if (reason != STAT_MAX)
		return hand_over(ctx, reason, 1);
	st = counters();
	if (cache_hit)
		add(st, STAT_CACHE_HITS, 1); /* a connection hit too: user space adds them */
	add(st, STAT_FWD_PACKETS, 1);
	add(st, STAT_FWD_BYTES, bytes);
	count(&vip_traffic, d->vip, bytes, new_conn);
	count(&backend_traffic, d->backend, bytes, new_conn);
	return XDP_TX;
}

/* The common case of the common case: an untagged IPv4 frame of a flow whose decision this CPU's flow
 * cache holds. The checks of parse() and the cache's are made on the frame's bytes, read again after each
 * helper call rather than kept across it; no connection key is built and no map but the cache, the
 * backend array and the counters is read. Returns -1 when the frame is anything else: the whole way then
 * decides it as this would have. */
static __always_inline int cached_v4(struct xdp_md *ctx, const struct fast_cfg *c)
{
	__u8 *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u8 *h = data + 14, *l4 = data + 34;
	__u32 ip_len, epoch, cidx, tick, seen;
	const __u8 *k;
	struct flow_cached *fc;
	struct backend *b;
	int flags;

	if ((void *)(data + 38) > end || ld16(data + 12) != bpf_htons(ETH_P_IP))
		return -1;
	tick = (__u32)(bpf_jiffies64() >> CACHE_TICK_SHIFT); /* inlined: a load of jiffies */
	cidx = bpf_get_smp_processor_id() * FLOW_CACHE_ENTRIES +
	       cache_slot(ld32(h + 12) ^ V4_MAPPED_WORD, ld32(h + 16) ^ V4_MAPPED_WORD, ld32(l4), h[9]);
	fc = bpf_map_lookup_elem(&flow_cache, &cidx);
	if (!fc)
		return -1;
	/* The cache entry first: its line is on the way while the headers are checked. */
	seen = *(volatile __u32 *)&fc->tick;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	h = data + 14;
	l4 = data + 34;
	if ((void *)(data + 38) > end)
		return -1;
	ip_len = v4_len(h, (void *)end - (void *)h);
	if (!ip_len)
		return -1;
	flags = check_l4(h[9], l4, end, ip_len - 20);
	/* A packet that may change its connection's entry takes the whole way (UDP has no flags). */
	if (flags < 0 || (flags & (TCP_SYN | TCP_FIN | TCP_RST)))
		return -1;
	epoch = *(volatile __u32 *)&c->active;
	if (seen != tick || fc->epoch != epoch || fc->changes != change_count())
		return -1;
	/* The key as parse() writes it: ::ffff:saddr, ::ffff:daddr, the ports, the protocol, zero pad. */
	k = (const __u8 *)&fc->key;
	if ((ld64(k) | ld64(k + 16)) != 0 ||
	    ld64(k + 8) != (V4_MAPPED_WORD | (__u64)ld32(h + 12) << 32) ||
	    ld64(k + 24) != (V4_MAPPED_WORD | (__u64)ld32(h + 16) << 32) ||
	    ld64(k + 32) != (ld32(l4) | (__u64)h[9] << 32))
		return -1;
	b = backend_of(c, fc->d.backend, epoch & 1);
	if (!b)
		return -1;
	return forward(ctx, c, b, &fc->d, 14, ip_len, 0, 0, 1);
}

SEC("xdp")
int maglev_fast(struct xdp_md *ctx)
{
	void *data, *end;
	__u32 *slot;
	struct conn_val *conn;
	struct counters *st;
	int cache_hit = 0;
	struct flow_cached *fc = 0;
	__u32 epoch, gen, bid, vid, mode, chg, cidx;
	struct pkt p;
	struct fast_cfg *c;
	struct vip_info *vip;
	struct backend *b = 0;
	struct decision dec;
	__u64 hash = 0;
	int hashed = 0;
	__u32 now, tick, seen = 0;
	int tcp, syn, closing, cacheable, live, ret, new_conn = 0;

	c = &cfg;
	ret = cached_v4(ctx, c);
	if (ret >= 0)
		return ret;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	p.key.pad[0] = 0;
	p.key.pad[1] = 0;
	p.key.pad[2] = 0;
	if (!parse(&p, data, end))
		return hand_over(ctx, STAT_NOT_FAST, 0);

	st = counters();
	epoch = *(volatile __u32 *)&c->active;
	gen = epoch & 1;
	tcp = p.key.proto == IPPROTO_TCP;
	syn = tcp && (p.tcp_flags & TCP_SYN) && !(p.tcp_flags & TCP_ACK);
	closing = tcp && (p.tcp_flags & (TCP_FIN | TCP_RST));
	/* A packet that may change its connection's entry always takes the whole way. */
	cacheable = !tcp || !(p.tcp_flags & (TCP_SYN | TCP_FIN | TCP_RST));
	/* The flow cache: this CPU's decision for this flow made in this tick, under this state, with no
	 * connection entry replaced since, is the decision. The first packet of each tick takes the whole
	 * way, which renews the connection entry's timeout and its place in the LRU: a flow's entry may
	 * expire up to a second (one tick across a second's end) before it would without the cache. The
	 * entry is read first, so that its cache line is on the way while the rest is gathered. */
	if (cacheable) {
		cidx = bpf_get_smp_processor_id() * FLOW_CACHE_ENTRIES + cache_index(&p.key);
		fc = bpf_map_lookup_elem(&flow_cache, &cidx);
		if (fc)
			seen = *(volatile __u32 *)&fc->tick;
	}
	tick = (__u32)(bpf_jiffies64() >> CACHE_TICK_SHIFT); /* inlined: a load of jiffies */
	chg = change_count();
	/* An entry of this tick, state and change count: another flow's keeps its place till the tick ends
	 * (the first flow of a tick takes a slot, so a busy flow holds it against many small ones, and a
	 * miss writes no cache line). */
	live = fc && seen == tick && fc->epoch == epoch && fc->changes == chg;
	if (live && same_key(&fc->key, &p.key)) {
		b = backend_of(c, fc->d.backend, gen);
		if (b) {
			dec = fc->d;
			cache_hit = 1;
			goto send;
		}
	}

	{
		struct addr_key vkey;

		__builtin_memcpy(vkey.addr, p.key.dst, 16);
		vkey.proto = p.key.proto;
		vkey.gen = gen;
		vkey.port = p.key.dport;
		vip = bpf_map_lookup_elem(&vips, &vkey);
		if (!vip && vkey.port != 0) {
			vkey.port = 0;
			vip = bpf_map_lookup_elem(&vips, &vkey);
		}
	}
	if (!vip)
		return hand_over(ctx, STAT_NO_VIP, 0);
	vid = vip->id;
	mode = vip->mode;
	now = clock_secs(bpf_ktime_get_coarse_ns());

	conn = bpf_map_lookup_elem(&conns, &p.key);
	if (conn && conn->expires && now > conn->expires) {
		add(st, STAT_CONN_EXPIRED, 1);
		conn->expires = 0;
	}
	if (conn && conn->expires) {
		bid = conn->backend;
		b = conn->vip == vid ? backend_of(c, bid, gen) : 0;
		/* A SYN opens a new connection: a backend that takes none gets none, even on a reused 5-tuple,
		 * and the 5-tuple of a closing connection (FIN or RST seen) starts afresh from the table. */
		if (b && syn && (conn->closing || !(b->flags & BACKEND_NEW_CONNS)))
			b = 0;
		if (b) {
			/* The idle timeout restarts, the short one from the first FIN or RST on. */
			__u8 cl = conn->closing | (closing ? 1 : 0);
			__u32 exp = now + timeout(c, tcp, cl);

			if (conn->expires != exp || conn->closing != cl) {
				conn->expires = exp;
				conn->closing = cl;
			}
			add(st, STAT_CONN_HITS, 1);
		}
	} else if (tcp && !syn && (vip->flags & VIP_HAS_PAST)) {
		/* Perhaps a connection that began under an older table: user space keeps those. */
		return hand_over(ctx, STAT_PAST, 1);
	}
	if (!b) {
		__u32 idx;

		if (!(vip->flags & VIP_HAS_TABLE) || vip->size == 0)
			return hand_over(ctx, STAT_NO_TABLE, 1);
		/* Only a flow without a connection needs its hash for the table (a hit skips it). */
		hash = flow_hash(c->seed, &p.key);
		hashed = 1;
		idx = vip->base + (__u32)(((hash >> 32) * vip->size) >> 32);
		slot = bpf_map_lookup_elem(&tables, &idx);
		if (!slot)
			return hand_over(ctx, STAT_NO_BACKEND, 1);
		bid = *slot;
		b = backend_of(c, bid, gen);
		if (!b)
			return hand_over(ctx, STAT_NO_BACKEND, 1);
		if (mode == MODE_GRE && (b->outer == OUTER_NONE))
			return hand_over(ctx, STAT_NO_OUTER, 1);
		if (mode == MODE_GRE &&
		    p.ip_len + (b->outer == OUTER_V6 ? 44 : 24) > c->mtu)
			return hand_over(ctx, STAT_TOO_BIG, 1);
		new_conn = 1;
		if (may_record(c, now)) {
			struct conn_val rec = {};

			rec.backend = bid;
			rec.vip = vid;
			rec.closing = closing ? 1 : 0;
			rec.expires = now + timeout(c, tcp, closing);
			bpf_map_update_elem(&conns, &p.key, &rec, BPF_ANY);
			add(st, STAT_CONN_NEW, 1);
			/* An entry replaced: decisions other CPUs cached from it no longer hold. */
			if (conn)
				__sync_fetch_and_add(&conn_changes, 1);
		} else {
			add(st, STAT_CONN_LIMITED, 1);
			fc = 0; /* nothing recorded: the next packet asks the table again */
		}
	}
	/* The IPv6 outer header's flow label carries the hash's low bits. */
	if (!hashed && mode == MODE_GRE && b->outer == OUTER_V6)
		hash = flow_hash(c->seed, &p.key);
	dec.backend = bid;
	dec.vip = vid;
	dec.mode_label = (mode << 24) | ((__u32)hash & 0x000fffff);
	if (fc && !live) {
		__builtin_memcpy(&fc->key, &p.key, sizeof(p.key));
		fc->epoch = epoch;
		fc->tick = tick;
		fc->changes = chg;
		fc->d = dec;
	}

send:
	return forward(ctx, c, b, &dec, p.l3, p.ip_len, p.v6, new_conn, cache_hit);
}

char _license[] SEC("license") = "Dual BSD/GPL";
