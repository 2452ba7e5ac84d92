/* SPDX-License-Identifier: BSD-3-Clause OR GPL-2.0-only */
/*
 * What cne's XDP programs in front of a network function share: the socket map's size, the 802.1Q tag,
 * and the key of an (address, protocol, generation, port) entry, under which xsk_filter keeps its claims
 * and maglev_fast its VIPs (cne::bpf::filter::RuleKey on the Rust side). Addresses are 16 bytes, IPv4 as
 * ::ffff:a.b.c.d; the port is in network order, 0 for all ports; `gen` is the generation (0 or 1) the
 * entry belongs to, of which cfg.active names the one packets see.
 */
#ifndef CNE_NF_COMMON_H
#define CNE_NF_COMMON_H

#include <linux/types.h>

#define XSKS_MAX_QUEUES 256

struct vlan_hdr {
	__be16 tci;
	__be16 proto;
};

struct addr_key {
	__u32 addr[4];
	__u8 proto;
	__u8 gen;
	__u16 port;
};

#endif
