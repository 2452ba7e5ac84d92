// SPDX-License-Identifier: BSD-3-Clause
/* Steers every frame of rx queue N to the AF_XDP socket at index N of xsks_map.
 *
 * Queues without a socket fall back to XDP_PASS (the flag argument of bpf_redirect_map), so the
 * interface keeps working for anything the forwarder does not serve. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} xsks_map SEC(".maps");

SEC("xdp")
int xsk_redirect(struct xdp_md *ctx)
{
	return bpf_redirect_map(&xsks_map, ctx->rx_queue_index, XDP_PASS);
}

char _license[] SEC("license") = "Dual BSD/GPL";
