// SPDX-License-Identifier: BSD-3-Clause OR GPL-2.0-only
/*
 * xsk_filter: the XDP program in front of the AF_XDP sockets of a network function.
 *
 * It redirects to the socket bound at the packet's receive queue (xsks_map[rx_queue_index]) only the
 * traffic the network function claims, and returns XDP_PASS for everything else, so ARP, SSH and the rest
 * of the host stack keep working on the same interface.
 *
 * What is claimed, checked in this order after one optional 802.1Q/802.1ad tag:
 *   - everything, when cfg[0].claim_all is set;
 *   - IPv4/IPv6 to (dst, proto, dport): a rule for one port of one protocol;
 *   - IPv4/IPv6 to (dst, proto, 0): a rule for all ports of a protocol;
 *   - the per-address entry (dst, 0, 0), whose flags say:
 *       ADDR_OWN_ALL  all traffic to dst, and the neighbour discovery for it (as ADDR_NEIGH),
 *       ADDR_NEIGH    ARP requests/replies whose target IP is dst, ICMPv6 neighbour solicitations whose
 *                     target is dst and neighbour advertisements sent to dst,
 *       ADDR_FRAGS    IPv4 fragments (MF set or offset > 0) and IPv6 packets with a Fragment header to dst:
 *                     non-first fragments carry no ports, so every fragment of a datagram is claimed
 *                     together and the network function can reassemble or hash them on the 3-tuple,
 *       ADDR_ICMP_ERR ICMP errors to dst (ICMPv4 destination unreachable, time exceeded, parameter problem;
 *                     ICMPv6 types 1-4): they quote a packet dst sent, so the network function can
 *                     deliver them where that packet's flow lives (path MTU discovery through a load
 *                     balancer). Echo requests and other ICMP stay with the kernel.
 * Addresses are keyed as 16 bytes, IPv4 as the mapped form ::ffff:a.b.c.d. Ports are in network order.
 *
 * The rules map holds two generations of claims, told apart by the key's `gen` byte; cfg[0].active names
 * the one packets see. User space writes a new set of claims under the other generation, then flips
 * `active` with one array write, then deletes the old generation: every packet sees either the old claims
 * or the new ones, never a mix, and a write that fails half-way is never seen at all. `active` sits in the
 * cfg value the program reads anyway, so the switch costs no extra lookup per packet.
 *
 * Counters (per-CPU): claimed (a claim rule matched), passed (nothing matched), redirect_failed (claimed
 * but no socket at that queue: the packet is passed to the kernel instead, bpf_redirect_map's fallback).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "nf_common.h"

/* Entries per generation; the map holds two generations. */
#define RULES_MAX 4096
/* Bound on IPv6 extension headers walked before giving up (the loop is unrolled). */
#define IPV6_MAX_EXT_HDRS 6

#define ADDR_OWN_ALL (1u << 0)
#define ADDR_NEIGH (1u << 1)
#define ADDR_FRAGS (1u << 2)
#define ADDR_ICMP_ERR (1u << 3)

enum { STAT_CLAIMED = 0, STAT_PASSED = 1, STAT_REDIRECT_FAILED = 2, STAT_MAX = 3 };

struct filter_cfg {
	__u32 claim_all;
	__u32 active; /* the generation of rules packets see */
};

struct arp_eth_ipv4 {
	__be16 hrd;
	__be16 pro;
	__u8 hln;
	__u8 pln;
	__be16 op;
	__u8 sha[6];
	__u8 spa[4];
	__u8 tha[6];
	__u8 tpa[4];
};

struct opt_hdr {
	__u8 nexthdr;
	__u8 hdrlen;
};

struct frag_hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off;
	__be32 id;
};

struct icmp6_nd {
	__u8 type;
	__u8 code;
	__be16 csum;
	__be32 reserved;
	__u8 target[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, XSKS_MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct filter_cfg);
} cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2 * RULES_MAX);
	__type(key, struct addr_key);
	__type(value, __u32);
} rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);

	if (v)
		*v += 1; /* per-CPU slot: no atomic needed */
}

static __always_inline void key_ipv4(struct addr_key *key, __be32 addr, __u8 gen)
{
	key->addr[0] = 0;
	key->addr[1] = 0;
	key->addr[2] = bpf_htonl(0x0000ffff);
	key->addr[3] = addr;
	key->proto = 0;
	key->gen = gen;
	key->port = 0;
}

static __always_inline void key_ipv6(struct addr_key *key, const void *addr, __u8 gen)
{
	__builtin_memcpy(key->addr, addr, 16);
	key->proto = 0;
	key->gen = gen;
	key->port = 0;
}

/* Flags of the per-address entry of key->addr in generation key->gen (0 if none). Resets proto and port
 * of key. */
static __always_inline __u32 addr_flags(struct addr_key *key)
{
	__u32 *flags;

	key->proto = 0;
	key->port = 0;
	flags = bpf_map_lookup_elem(&rules, key);
	return flags ? *flags : 0;
}

static __always_inline int has_ports(__u8 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP ||
	       proto == IPPROTO_UDPLITE || proto == IPPROTO_DCCP;
}

/*
 * Rule lookups for an IP packet to key->addr carrying `proto`. `l4` points at the transport header, or is
 * NULL for non-first fragments (no ports there).
 */
static __always_inline int match_ip(struct addr_key *key, __u8 proto, void *l4, void *end, int is_frag)
{
	__u32 flags;

	key->proto = proto;
	if (l4 && has_ports(proto)) {
		__be16 *ports = l4;

		if ((void *)(ports + 2) <= end && ports[1] != 0) {
			key->port = ports[1];
			if (bpf_map_lookup_elem(&rules, key))
				return 1;
		}
	}
	key->port = 0;
	if (proto != 0 && bpf_map_lookup_elem(&rules, key))
		return 1;
	flags = addr_flags(key);
	if (flags & ADDR_OWN_ALL)
		return 1;
	if ((flags & ADDR_FRAGS) && is_frag)
		return 1;
	if ((flags & ADDR_ICMP_ERR) && l4 && !is_frag && (void *)((__u8 *)l4 + 1) <= end) {
		__u8 type = *(__u8 *)l4;

		if (proto == IPPROTO_ICMP && (type == 3 || type == 11 || type == 12))
			return 1;
		if (proto == IPPROTO_ICMPV6 && type >= 1 && type <= 4)
			return 1;
	}
	return 0;
}

static __always_inline int classify_arp(void *l3, void *end, __u8 gen)
{
	struct arp_eth_ipv4 *arp = l3;
	struct addr_key key;
	__be32 tpa;
	__u16 op;

	if ((void *)(arp + 1) > end)
		return 0;
	if (arp->hrd != bpf_htons(1) || arp->pro != bpf_htons(ETH_P_IP) || arp->hln != 6 ||
	    arp->pln != 4)
		return 0;
	op = bpf_ntohs(arp->op);
	if (op != 1 && op != 2)
		return 0;
	__builtin_memcpy(&tpa, arp->tpa, 4);
	key_ipv4(&key, tpa, gen);
	return (addr_flags(&key) & (ADDR_NEIGH | ADDR_OWN_ALL)) != 0;
}

static __always_inline int classify_ipv4(void *l3, void *end, __u8 gen)
{
	struct iphdr *ip = l3;
	struct addr_key key;
	__u16 frag;
	int is_frag;
	void *l4;

	if ((void *)(ip + 1) > end)
		return 0;
	if (ip->version != 4 || ip->ihl < 5)
		return 0;
	frag = bpf_ntohs(ip->frag_off);
	/* MF or a non-zero offset: a fragment. Only the first (offset 0) carries the L4 header. */
	is_frag = (frag & 0x3fff) != 0;
	l4 = (frag & 0x1fff) ? 0 : l3 + ip->ihl * 4;
	key_ipv4(&key, ip->daddr, gen);
	return match_ip(&key, ip->protocol, l4, end, is_frag);
}

static __always_inline int classify_ipv6(void *l3, void *end, __u8 gen)
{
	struct ipv6hdr *ip6 = l3;
	struct addr_key key;
	int is_frag = 0;
	int first = 1;
	void *p;
	__u8 nh;

	if ((void *)(ip6 + 1) > end)
		return 0;
	if (ip6->version != 6)
		return 0;
	nh = ip6->nexthdr;
	p = ip6 + 1;
#pragma unroll
	for (int i = 0; i < IPV6_MAX_EXT_HDRS; i++) {
		if (nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING || nh == IPPROTO_DSTOPTS) {
			struct opt_hdr *oh = p;

			if ((void *)(oh + 1) > end)
				return 0;
			nh = oh->nexthdr;
			p += ((__u32)oh->hdrlen + 1) * 8;
		} else if (nh == IPPROTO_FRAGMENT) {
			struct frag_hdr *fh = p;

			if ((void *)(fh + 1) > end)
				return 0;
			is_frag = 1;
			if (bpf_ntohs(fh->frag_off) & 0xfff8)
				first = 0;
			nh = fh->nexthdr;
			p = fh + 1;
		} else {
			break;
		}
	}

	key_ipv6(&key, &ip6->daddr, gen);
	if (nh == IPPROTO_ICMPV6 && first) {
		struct icmp6_nd *nd = p;

		if ((void *)(nd + 1) <= end) {
			if (nd->type == 135 && nd->code == 0) {
				/* Neighbour solicitation: sent to the solicited-node group, so key on the target. */
				struct addr_key tkey;

				key_ipv6(&tkey, nd->target, gen);
				if (addr_flags(&tkey) & (ADDR_NEIGH | ADDR_OWN_ALL))
					return 1;
			} else if (nd->type == 136 && nd->code == 0) {
				/* Neighbour advertisement: the answer to our own solicitation, sent to us. */
				if (addr_flags(&key) & (ADDR_NEIGH | ADDR_OWN_ALL))
					return 1;
			}
		}
	}
	return match_ip(&key, nh, first ? p : 0, end, is_frag);
}

static __always_inline int classify(void *data, void *end, __u8 gen)
{
	struct ethhdr *eth = data;
	__be16 proto;
	void *l3;

	if ((void *)(eth + 1) > end)
		return 0;
	proto = eth->h_proto;
	l3 = eth + 1;
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		struct vlan_hdr *vh = l3;

		if ((void *)(vh + 1) > end)
			return 0;
		proto = vh->proto;
		l3 = vh + 1;
	}
	if (proto == bpf_htons(ETH_P_IP))
		return classify_ipv4(l3, end, gen);
	if (proto == bpf_htons(ETH_P_IPV6))
		return classify_ipv6(l3, end, gen);
	if (proto == bpf_htons(ETH_P_ARP))
		return classify_arp(l3, end, gen);
	return 0;
}

SEC("xdp")
int xsk_filter(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct filter_cfg *c;
	__u32 zero = 0;
	long act;

	c = bpf_map_lookup_elem(&cfg, &zero);
	if (!c) {
		count(STAT_PASSED);
		return XDP_PASS;
	}
	if (!c->claim_all && !classify(data, end, c->active & 1)) {
		count(STAT_PASSED);
		return XDP_PASS;
	}
	count(STAT_CLAIMED);
	/* Falls back to XDP_PASS when no socket is bound at this queue. */
	act = bpf_redirect_map(&xsks_map, ctx->rx_queue_index, XDP_PASS);
	if (act != XDP_REDIRECT)
		count(STAT_REDIRECT_FAILED);
	return act;
}

char _license[] SEC("license") = "Dual BSD/GPL";
