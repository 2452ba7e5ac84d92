//! The packet path's test configuration and its input and expected output frames (generated with
//! scapy), shared by the data plane's unit tests and the tests of the kernel fast path, which must
//! produce the same frames.

use crate::config::Mac;

/// The load balancer's MAC in the fixtures.
pub const LB_MAC: Mac = Mac([2, 0, 0, 0, 0, 0xaa]);

/// The `maglev` section the fixtures were made for.
pub const CONFIG: &str = r#"{
    "hash_seed": 7,
    "conntrack": { "size": 16384 },
    "local_addrs": ["198.18.0.1", "2001:2::1"],
    "gateway_mac": "02:00:00:00:00:fe",
    "vips": [
      { "name": "web4", "addr": "198.18.100.1", "proto": "tcp", "port": 80, "mode": "gre",
        "backends": [ { "name": "b1", "addr": "198.18.1.1", "mac": "02:00:00:00:01:01" } ] },
      { "name": "web6", "addr": "2001:2::100", "proto": "tcp", "port": 80, "mode": "gre",
        "backends": [ { "name": "b1", "addr": "2001:2:1::1", "mac": "02:00:00:00:01:02" } ] },
      { "name": "mixed", "addr": "198.18.100.2", "proto": "udp", "port": 53, "mode": "gre",
        "backends": [ { "name": "b", "addr": "2001:2:1::2" } ] },
      { "name": "dsr", "addr": "198.18.100.3", "proto": "udp", "port": 443, "mode": "l2dsr",
        "backends": [ { "name": "b", "addr": "198.18.1.3", "mac": "02:00:00:00:01:03" } ] },
      { "name": "pool", "addr": "198.18.100.4", "proto": "tcp", "port": "all", "mode": "gre",
        "backends": [ { "name": "p0", "addr": "198.18.2.1" }, { "name": "p1", "addr": "198.18.2.2" },
                      { "name": "p2", "addr": "198.18.2.3" }, { "name": "p3", "addr": "198.18.2.4" } ] },
      { "name": "udp-a", "addr": "198.18.100.5", "proto": "udp", "port": 1000, "mode": "gre",
        "backends": [ { "name": "b", "addr": "198.18.1.5" } ] },
      { "name": "udp-b", "addr": "198.18.100.5", "proto": "udp", "port": 2000, "mode": "gre",
        "backends": [ { "name": "b", "addr": "198.18.1.6" } ] },
      { "name": "empty", "addr": "198.18.100.6", "proto": "tcp", "port": 80, "mode": "gre", "backends": [] },
      { "name": "big", "addr": "198.18.100.7", "proto": "udp", "port": "all", "mode": "gre",
        "backends": [ { "name": "b", "addr": "198.18.1.5" } ] }
    ] }"#;

// Fixtures generated with scapy 2.8.0 (the input frame, and the frame the load balancer must send).
// Client 198.18.50.1 / 2001:2:50::1 behind MAC 02:00:00:00:00:cc; load balancer MAC 02:00:00:00:00:aa.
// `_TAIL` = (byte, count) repeated after the listed bytes.

/// Ether / IP / TCP 198.18.50.1:40000 > 198.18.100.1:http S
pub const GRE4_IN: &str = "
    02 00 00 00 00 aa 02 00 00 00 00 cc 08 00 45 28
    00 28 00 01 40 00 40 06 18 80 c6 12 32 01 c6 12
    64 01 9c 40 00 50 00 00 00 01 00 00 00 00 50 02
    20 00 d1 29 00 00";
/// Ether / IP / GRE / IP / TCP 198.18.50.1:40000 > 198.18.100.1:http S
pub const GRE4_OUT: &str = "
    02 00 00 00 01 01 02 00 00 00 00 aa 08 00 45 28
    00 40 00 00 40 00 40 2f ad 40 c6 12 00 01 c6 12
    01 01 00 00 08 00 45 28 00 28 00 01 40 00 40 06
    18 80 c6 12 32 01 c6 12 64 01 9c 40 00 50 00 00
    00 01 00 00 00 00 50 02 20 00 d1 29 00 00";
pub const GRE6_IN: &str = "
    02 00 00 00 00 aa 02 00 00 00 00 cc 86 dd 62 80
    00 00 00 19 06 40 20 01 00 02 00 50 00 00 00 00
    00 00 00 00 00 01 20 01 00 02 00 00 00 00 00 00
    00 00 00 00 01 00 9c 41 00 50 00 00 00 05 00 00
    00 07 50 10 20 00 6e 09 00 00 68 65 6c 6c 6f";
/// Ether / IPv6 / GRE / IPv6 / TCP 2001:2:50::1:40001 > 2001:2::100:http A / Raw
pub const GRE6_OUT: &str = "
    02 00 00 00 01 02 02 00 00 00 00 aa 86 dd 62 80
    00 00 00 45 2f 40 20 01 00 02 00 00 00 00 00 00
    00 00 00 00 00 01 20 01 00 02 00 01 00 00 00 00
    00 00 00 00 00 01 00 00 86 dd 62 80 00 00 00 19
    06 40 20 01 00 02 00 50 00 00 00 00 00 00 00 00
    00 01 20 01 00 02 00 00 00 00 00 00 00 00 00 00
    01 00 9c 41 00 50 00 00 00 05 00 00 00 07 50 10
    20 00 6e 09 00 00 68 65 6c 6c 6f";
/// Ether / IP / UDP, padded to 60 bytes
pub const MIXED_IN: &str = "
    02 00 00 00 00 aa 02 00 00 00 00 cc 08 00 45 00
    00 1e 00 02 00 00 40 11 58 a5 c6 12 32 01 c6 12
    64 02 13 88 00 35 00 0a 58 b5 71 3f 00 00 00 00
    00 00 00 00 00 00 00 00 00 00 00 00";
/// Ether / IPv6 / GRE / IP / UDP 198.18.50.1:5000 > 198.18.100.2:domain / Raw
pub const MIXED_OUT: &str = "
    02 00 00 00 00 fe 02 00 00 00 00 aa 86 dd 60 00
    00 00 00 22 2f 40 20 01 00 02 00 00 00 00 00 00
    00 00 00 00 00 01 20 01 00 02 00 01 00 00 00 00
    00 00 00 00 00 02 00 00 08 00 45 00 00 1e 00 02
    00 00 40 11 58 a5 c6 12 32 01 c6 12 64 02 13 88
    00 35 00 0a 58 b5 71 3f";
/// Ether / IP / UDP 198.18.50.1:5001 > 198.18.100.3:https / Raw
pub const DSR_IN: &str = "
    02 00 00 00 00 aa 02 00 00 00 00 cc 08 00 45 00
    00 1f 00 03 00 00 40 11 58 a2 c6 12 32 01 c6 12
    64 03 13 89 01 bb 00 0b f1 f6 64 73 72";
/// Ether / IP / UDP 198.18.50.1:5001 > 198.18.100.3:https / Raw
pub const DSR_OUT: &str = "
    02 00 00 00 01 03 02 00 00 00 00 aa 08 00 45 00
    00 1f 00 03 00 00 40 11 58 a2 c6 12 32 01 c6 12
    64 03 13 89 01 bb 00 0b f1 f6 64 73 72";
/// Ether / Dot1Q / IP / TCP 198.18.50.1:40000 > 198.18.100.1:http S
pub const VLAN_IN: &str = "
    02 00 00 00 00 aa 02 00 00 00 00 cc 81 00 00 64
    08 00 45 28 00 28 00 01 40 00 40 06 18 80 c6 12
    32 01 c6 12 64 01 9c 40 00 50 00 00 00 01 00 00
    00 00 50 02 20 00 d1 29 00 00";
/// Ether / Dot1Q / IP / GRE / IP / TCP 198.18.50.1:40000 > 198.18.100.1:http S
pub const VLAN_OUT: &str = "
    02 00 00 00 01 01 02 00 00 00 00 aa 81 00 00 64
    08 00 45 28 00 40 00 00 40 00 40 2f ad 40 c6 12
    00 01 c6 12 01 01 00 00 08 00 45 28 00 28 00 01
    40 00 40 06 18 80 c6 12 32 01 c6 12 64 01 9c 40
    00 50 00 00 00 01 00 00 00 00 50 02 20 00 d1 29
    00 00";
/// Ether / IP / TCP 198.18.50.1:40002 > 198.18.100.1:http A / Raw
pub const BIG4_IN: &str = "
    02 00 00 00 00 aa 02 00 00 00 00 cc 08 00 45 00
    05 c8 00 04 40 00 40 06 13 05 c6 12 32 01 c6 12
    64 01 9c 42 00 50 00 00 00 00 00 00 00 00 50 10
    20 00 f8 a7 00 00";
pub const BIG4_IN_TAIL: (u8, usize) = (0x78, 1440);
/// Ether / IP / ICMP 198.18.100.1 > 198.18.50.1 dest-unreach fragmentation-needed / Raw
pub const BIG4_OUT: &str = "
    02 00 00 00 00 cc 02 00 00 00 00 aa 08 00 45 00
    00 38 00 00 00 00 40 01 58 9e c6 12 64 01 c6 12
    32 01 03 04 5a a5 00 00 05 c4 45 00 05 c8 00 04
    40 00 40 06 13 05 c6 12 32 01 c6 12 64 01 9c 42
    00 50 00 00 00 00";
/// Ether / IPv6 / TCP 2001:2:50::1:40003 > 2001:2::100:http A / Raw
pub const BIG6_IN: &str = "
    02 00 00 00 00 aa 02 00 00 00 00 cc 86 dd 60 00
    00 00 05 8c 06 40 20 01 00 02 00 50 00 00 00 00
    00 00 00 00 00 01 20 01 00 02 00 00 00 00 00 00
    00 00 00 00 01 00 9c 43 00 50 00 00 00 00 00 00
    00 00 50 10 20 00 84 4a 00 00";
pub const BIG6_IN_TAIL: (u8, usize) = (0x79, 1400);
/// Ether / 2001:2::100 > 2001:2:50::1 (58) / ICMPv6PacketTooBig / Raw
pub const BIG6_OUT: &str = "
    02 00 00 00 00 cc 02 00 00 00 00 aa 86 dd 60 00
    00 00 04 d8 3a 40 20 01 00 02 00 00 00 00 00 00
    00 00 00 00 01 00 20 01 00 02 00 50 00 00 00 00
    00 00 00 00 00 01 02 00 63 c4 00 00 05 b0 60 00
    00 00 05 8c 06 40 20 01 00 02 00 50 00 00 00 00
    00 00 00 00 00 01 20 01 00 02 00 00 00 00 00 00
    00 00 00 00 01 00 9c 43 00 50 00 00 00 00 00 00
    00 00 50 10 20 00 84 4a 00 00";
pub const BIG6_OUT_TAIL: (u8, usize) = (0x79, 1172);
/// Ether / ARP who has 198.18.100.1 says 198.18.50.1
pub const ARP_IN: &str = "
    ff ff ff ff ff ff 02 00 00 00 00 cc 08 06 00 01
    08 00 06 04 00 01 02 00 00 00 00 cc c6 12 32 01
    00 00 00 00 00 00 c6 12 64 01";
/// Ether / ARP is at 02:00:00:00:00:aa says 198.18.100.1
pub const ARP_OUT: &str = "
    02 00 00 00 00 cc 02 00 00 00 00 aa 08 06 00 01
    08 00 06 04 00 02 02 00 00 00 00 aa c6 12 64 01
    02 00 00 00 00 cc c6 12 32 01";
/// Ether / IPv6 / ICMPv6ND_NS / ICMPv6 Neighbor Discovery Option - Source Link-Layer Address 02:00:00:00:00:cc
pub const NS_IN: &str = "
    33 33 ff 00 01 00 02 00 00 00 00 cc 86 dd 60 00
    00 00 00 20 3a ff 20 01 00 02 00 50 00 00 00 00
    00 00 00 00 00 01 ff 02 00 00 00 00 00 00 00 00
    00 01 ff 00 01 00 87 00 34 7c 00 00 00 00 20 01
    00 02 00 00 00 00 00 00 00 00 00 00 01 00 01 01
    02 00 00 00 00 cc";
/// Ether / IPv6 / ICMPv6ND_NA / ICMPv6 Neighbor Discovery Option - Destination Link-Layer Address 02:00:00:00:00:aa
pub const NS_OUT: &str = "
    02 00 00 00 00 cc 02 00 00 00 00 aa 86 dd 60 00
    00 00 00 20 3a ff 20 01 00 02 00 00 00 00 00 00
    00 00 00 00 01 00 20 01 00 02 00 50 00 00 00 00
    00 00 00 00 00 01 88 00 b0 9f 60 00 00 00 20 01
    00 02 00 00 00 00 00 00 00 00 00 00 01 00 02 01
    02 00 00 00 00 aa";
