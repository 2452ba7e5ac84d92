// SPDX-License-Identifier: BSD-3-Clause
/* Receiving end of a lab veth: accepts every frame with one fixed verdict.
 *
 * Frames that reach a veth by XDP_TX, redirect or live frames are dropped unless the receiver runs
 * an XDP program (or has GRO on). Attaching this program makes the veth accept them; the veth
 * counts every frame its XDP program sees in rx_packets, so the counters measure arrivals without
 * a map. Built twice: SINK_ACTION=XDP_DROP (cheapest, for measurement) and XDP_PASS (frames go on
 * to the stack). */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#ifndef SINK_ACTION
#define SINK_ACTION XDP_PASS
#endif

SEC("xdp")
int xdp_sink(struct xdp_md *ctx)
{
	return SINK_ACTION;
}

char _license[] SEC("license") = "Dual BSD/GPL";
