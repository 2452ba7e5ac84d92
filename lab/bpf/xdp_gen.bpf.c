// SPDX-License-Identifier: BSD-3-Clause
/* Traffic generator program, run by BPF_PROG_RUN with BPF_F_TEST_XDP_LIVE_FRAMES.
 *
 * Each run sees one UDP frame (IPv4 or IPv6) built by xdpgen, steps its source port and source
 * address from a per-CPU counter so that consecutive frames belong to different flows, and returns
 * XDP_TX so the kernel transmits it out of the interface named as ingress_ifindex. Live-frames mode
 * recycles the frame pages, so the frame seen here may already carry the fields written on an
 * earlier run: every checksum is therefore updated incrementally from the values actually present
 * (RFC 1624), never recomputed from assumed originals. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "xdp_gen.h"

const volatile struct gen_cfg cfg = {};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} gen_counter SEC(".maps");

/* One's complement update of a 16-bit checksum when one 16-bit word changes (RFC 1624 eq. 3).
 * Byte order does not matter as long as all three values are taken the same way. */
static __always_inline __u16 csum_update(__u16 check, __u16 old, __u16 new)
{
	__u32 sum = (__u16)~check;

	sum += (__u16)~old;
	sum += new;
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* UDP checksum update: 0 means "no checksum" over IPv4 and must stay 0; a computed 0 is sent as
 * 0xffff. */
static __always_inline void udp_csum_update(struct udphdr *udp, __u16 old, __u16 new)
{
	__u16 c;

	if (udp->check == 0)
		return;
	c = csum_update(udp->check, old, new);
	udp->check = c ? c : 0xffff;
}

SEC("xdp")
int xdp_gen(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct udphdr *udp;
	__u16 *sip_lo;
	__u16 *ip_check = 0;
	__u32 key = 0;
	__u64 *ctr;
	__u64 n;
	__u32 flows = cfg.flows ? cfg.flows : 1;
	__u32 src_ips = cfg.src_ips ? cfg.src_ips : 1;
	__u16 new_port, new_ip, old;

	if ((void *)(eth + 1) > end)
		return XDP_TX;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *iph = (void *)(eth + 1);

		if ((void *)(iph + 1) > end || iph->ihl != 5 || iph->protocol != IPPROTO_UDP)
			return XDP_TX;
		udp = (void *)(iph + 1);
		sip_lo = (__u16 *)&iph->saddr + 1;
		ip_check = &iph->check;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6h = (void *)(eth + 1);

		if ((void *)(ip6h + 1) > end || ip6h->nexthdr != IPPROTO_UDP)
			return XDP_TX;
		udp = (void *)(ip6h + 1);
		sip_lo = &ip6h->saddr.in6_u.u6_addr16[7];
	} else {
		return XDP_TX;
	}
	if ((void *)(udp + 1) > end)
		return XDP_TX;

	ctr = bpf_map_lookup_elem(&gen_counter, &key);
	if (!ctr)
		return XDP_TX;
	n = *ctr;
	*ctr = n + 1;

	if (flows > 1) {
		new_port = bpf_htons((__u16)(cfg.sport_base + (__u16)(n % flows)));
		old = udp->source;
		if (old != new_port) {
			udp_csum_update(udp, old, new_port);
			udp->source = new_port;
		}
	}
	if (src_ips > 1) {
		new_ip = bpf_htons((__u16)(cfg.sip_lo_base + (__u16)((n / flows) % src_ips)));
		old = *sip_lo;
		if (old != new_ip) {
			/* The source address is part of the UDP pseudo-header. */
			udp_csum_update(udp, old, new_ip);
			if (ip_check)
				*ip_check = csum_update(*ip_check, old, new_ip);
			*sip_lo = new_ip;
		}
	}
	return XDP_TX;
}

char _license[] SEC("license") = "Dual BSD/GPL";
