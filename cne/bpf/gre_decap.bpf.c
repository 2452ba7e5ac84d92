// SPDX-License-Identifier: BSD-3-Clause OR GPL-2.0-only
/*
 * gre_decap: GRE decapsulation in XDP for the backends of a Maglev load balancer.
 *
 * The load balancer forwards client packets to a backend inside GRE (RFC 2784, optional RFC 2890 key and
 * sequence number) over IPv4 or IPv6. Kernels without the GRE module cannot take those packets apart, so
 * this program does it before the stack sees them: for a GRE packet addressed to one of the backend's own
 * addresses (map decap_addrs, keyed like xsk_filter's rules: 16-byte address, IPv4 as ::ffff:a.b.c.d,
 * proto 0, port 0) carrying IPv4 (0x0800) or IPv6 (0x86DD), it removes the outer IP and GRE headers with
 * bpf_xdp_adjust_head, writes the Ethernet header (and one optional VLAN tag) back in front of the inner
 * packet with the inner family's ethertype, and returns XDP_PASS: the kernel then delivers the inner packet
 * as if it had arrived unencapsulated, and the backend answers the client directly.
 *
 * Everything else is passed untouched. Counters (per-CPU): decapped; passed (not GRE to a local address);
 * malformed (GRE to a local address that cannot be decapsulated: truncated, outer fragment, RFC 1701
 * routing or unknown version, inner protocol other than IPv4/IPv6, inner header of the wrong version;
 * passed untouched too).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define DECAP_ADDRS_MAX 1024
#define IPV6_MAX_EXT_HDRS 6

#define GRE_CSUM 0x8000
#define GRE_ROUTING 0x4000
#define GRE_KEY 0x2000
#define GRE_SEQ 0x1000
#define GRE_STRICT 0x0800
#define GRE_RECUR_HI 0x0400
#define GRE_VERSION 0x0007

enum { STAT_DECAPPED = 0, STAT_PASSED = 1, STAT_MALFORMED = 2, STAT_MAX = 3 };

struct addr_key {
	__u32 addr[4];
	__u8 proto;
	__u8 pad;
	__u16 port;
};

struct vlan_hdr {
	__be16 tci;
	__be16 proto;
};

struct opt_hdr {
	__u8 nexthdr;
	__u8 hdrlen;
};

struct gre_base {
	__be16 flags;
	__be16 proto;
};

/* The L2 header kept across the head adjustment. */
struct l2_hdr {
	struct ethhdr eth;
	struct vlan_hdr vlan;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DECAP_ADDRS_MAX);
	__type(key, struct addr_key);
	__type(value, __u32);
} decap_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline int verdict(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);

	if (v)
		*v += 1; /* per-CPU slot: no atomic needed */
	return XDP_PASS;
}

static __always_inline int is_local(struct addr_key *key)
{
	key->proto = 0;
	key->pad = 0;
	key->port = 0;
	return bpf_map_lookup_elem(&decap_addrs, key) != 0;
}

SEC("xdp")
int gre_decap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct addr_key key;
	struct l2_hdr l2;
	struct gre_base *gre;
	__u32 gre_len;
	int strip;
	__be16 proto, inner_proto;
	__u16 gflags;
	int vlan = 0;
	__u8 *inner;
	void *l3;
	void *gre_start;

	if ((void *)(eth + 1) > end)
		return verdict(STAT_PASSED);
	proto = eth->h_proto;
	l3 = eth + 1;
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		struct vlan_hdr *vh = l3;

		if ((void *)(vh + 1) > end)
			return verdict(STAT_PASSED);
		proto = vh->proto;
		l3 = vh + 1;
		vlan = 1;
	}

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = l3;

		if ((void *)(ip + 1) > end || ip->version != 4 || ip->protocol != IPPROTO_GRE)
			return verdict(STAT_PASSED);
		key.addr[0] = 0;
		key.addr[1] = 0;
		key.addr[2] = bpf_htonl(0x0000ffff);
		key.addr[3] = ip->daddr;
		if (!is_local(&key))
			return verdict(STAT_PASSED);
		/* A fragment cannot be decapsulated on its own. */
		if (ip->ihl < 5 || (bpf_ntohs(ip->frag_off) & 0x3fff))
			return verdict(STAT_MALFORMED);
		gre_start = l3 + ip->ihl * 4;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = l3;
		void *p;
		__u8 nh;

		if ((void *)(ip6 + 1) > end || ip6->version != 6)
			return verdict(STAT_PASSED);
		__builtin_memcpy(key.addr, &ip6->daddr, 16);
		nh = ip6->nexthdr;
		p = ip6 + 1;
#pragma unroll
		for (int i = 0; i < IPV6_MAX_EXT_HDRS; i++) {
			struct opt_hdr *oh = p;

			if (nh != IPPROTO_HOPOPTS && nh != IPPROTO_ROUTING && nh != IPPROTO_DSTOPTS)
				break;
			if ((void *)(oh + 1) > end)
				return verdict(STAT_PASSED);
			nh = oh->nexthdr;
			p += ((__u32)oh->hdrlen + 1) * 8;
		}
		if (nh == IPPROTO_FRAGMENT) {
			if (is_local(&key))
				return verdict(STAT_MALFORMED);
			return verdict(STAT_PASSED);
		}
		if (nh != IPPROTO_GRE || !is_local(&key))
			return verdict(STAT_PASSED);
		gre_start = p;
	} else {
		return verdict(STAT_PASSED);
	}

	/* From here on the packet is GRE to a local address. */
	gre = gre_start;
	if ((void *)(gre + 1) > end)
		return verdict(STAT_MALFORMED);
	gflags = bpf_ntohs(gre->flags);
	if (gflags & (GRE_ROUTING | GRE_STRICT | GRE_RECUR_HI | GRE_VERSION))
		return verdict(STAT_MALFORMED);
	gre_len = sizeof(*gre);
	if (gflags & GRE_CSUM)
		gre_len += 4;
	if (gflags & GRE_KEY)
		gre_len += 4;
	if (gflags & GRE_SEQ)
		gre_len += 4;
	inner_proto = gre->proto;
	inner = (__u8 *)gre + gre_len;
	if ((void *)(inner + 1) > end)
		return verdict(STAT_MALFORMED);
	if (inner_proto == bpf_htons(ETH_P_IP)) {
		if ((*inner >> 4) != 4)
			return verdict(STAT_MALFORMED);
	} else if (inner_proto == bpf_htons(ETH_P_IPV6)) {
		if ((*inner >> 4) != 6)
			return verdict(STAT_MALFORMED);
	} else {
		return verdict(STAT_MALFORMED);
	}

	/* Outer IP header and GRE header: everything between the L2 header and the inner packet. */
	strip = (int)((void *)inner - l3);
	if (vlan) {
		if (data + sizeof(struct l2_hdr) > end)
			return verdict(STAT_MALFORMED);
		__builtin_memcpy(&l2, data, sizeof(struct l2_hdr));
		l2.vlan.proto = inner_proto;
	} else {
		__builtin_memcpy(&l2.eth, data, sizeof(struct ethhdr));
		l2.eth.h_proto = inner_proto;
	}
	if (bpf_xdp_adjust_head(ctx, strip))
		return verdict(STAT_MALFORMED);

	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (vlan) {
		if (data + sizeof(struct l2_hdr) > end)
			return XDP_DROP; /* unreachable: the inner header was checked above */
		__builtin_memcpy(data, &l2, sizeof(struct l2_hdr));
	} else {
		if (data + sizeof(struct ethhdr) > end)
			return XDP_DROP;
		__builtin_memcpy(data, &l2.eth, sizeof(struct ethhdr));
	}
	return verdict(STAT_DECAPPED);
}

char _license[] SEC("license") = "Dual BSD/GPL";
