// SPDX-License-Identifier: BSD-3-Clause
/* The least an XDP forwarder can do: swap the Ethernet source and destination addresses and send the
 * frame back out of the interface it came in on (XDP_TX). The bench's kernel-only reference, the
 * ceiling for a network function that forwards from XDP on the same veth, as c-l2fwd is for one that
 * forwards through AF_XDP sockets. Frames shorter than an Ethernet header are dropped.
 *
 * Built with -DHAIRPIN_GRE it is the least a GRE-encapsulating XDP forwarder can do: the same MAC swap,
 * and the IP datagram (IPv4 or IPv6, no VLAN) put in GRE in a fixed outer IPv4 header, as a load
 * balancer in GRE mode sends it to a backend: one `bpf_xdp_adjust_head` and 38 bytes of headers written
 * in front of the datagram, the outer header's length and checksum set. No decision: every frame goes
 * back the same way. Other frames, and frames shorter than Ethernet and a 40-byte header, are dropped;
 * Ethernet padding after the datagram is not trimmed (the bench's frames have none). */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#ifdef HAIRPIN_GRE
/* The outer header's fixed part: 198.18.0.1 -> 198.18.0.2, TTL 64, DF, protocol 47 (GRE). */
#define OUTER_LEN 24 /* IPv4 (20) + GRE (4) in place of the 14-byte Ethernet header, plus a new one */
static const __u8 outer[20] = {0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 47, 0, 0,
			       198, 18, 0, 1, 198, 18, 0, 2};

/* The one's complement sum of the fixed words of `outer` (length and checksum zero), unfolded. */
static __always_inline __u32 outer_sum(void)
{
	__u32 s = 0;

	for (int i = 0; i < 20; i += 2)
		s += (__u32)outer[i] << 8 | outer[i + 1];
	return s;
}

SEC("xdp")
int xdp_hairpin(struct xdp_md *ctx)
{
	__u8 *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u8 dst[6], src[6], *ip;
	__u16 type, inner_len;
	__u32 s;

	if ((void *)(data + 14 + 40) > end)
		return XDP_DROP;
	type = *(__u16 *)(data + 12);
	ip = data + 14;
	if (type == bpf_htons(ETH_P_IP))
		inner_len = bpf_ntohs(*(__u16 *)(ip + 2));
	else if (type == bpf_htons(ETH_P_IPV6))
		inner_len = bpf_ntohs(*(__u16 *)(ip + 4)) + 40;
	else
		return XDP_DROP;
	__builtin_memcpy(dst, data + 6, 6);
	__builtin_memcpy(src, data, 6);
	if (bpf_xdp_adjust_head(ctx, -OUTER_LEN))
		return XDP_DROP;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if ((void *)(data + 14 + 24) > end)
		return XDP_DROP;
	__builtin_memcpy(data, dst, 6);
	__builtin_memcpy(data + 6, src, 6);
	*(__u16 *)(data + 12) = bpf_htons(ETH_P_IP);
	ip = data + 14;
	__builtin_memcpy(ip, outer, 20);
	s = outer_sum() + inner_len + 24;
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	*(__u16 *)(ip + 2) = bpf_htons(inner_len + 24);
	*(__u16 *)(ip + 10) = bpf_htons((__u16)~s);
	*(__u16 *)(ip + 20) = 0;
	*(__u16 *)(ip + 22) = type;
	return XDP_TX;
}
#else
SEC("xdp")
int xdp_hairpin(struct xdp_md *ctx)
{
	__u8 *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u8 mac[6];

	if ((void *)(data + 14) > end)
		return XDP_DROP;
	__builtin_memcpy(mac, data, 6);
	__builtin_memcpy(data, data + 6, 6);
	__builtin_memcpy(data + 6, mac, 6);
	return XDP_TX;
}
#endif

char _license[] SEC("license") = "Dual BSD/GPL";
