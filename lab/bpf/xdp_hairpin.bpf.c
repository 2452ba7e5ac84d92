// SPDX-License-Identifier: BSD-3-Clause
/* The least an XDP forwarder can do: swap the Ethernet source and destination addresses and send the
 * frame back out of the interface it came in on (XDP_TX). The bench's kernel-only reference, the
 * ceiling for a network function that forwards from XDP on the same veth, as c-l2fwd is for one that
 * forwards through AF_XDP sockets. Frames shorter than an Ethernet header are dropped. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

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

char _license[] SEC("license") = "Dual BSD/GPL";
