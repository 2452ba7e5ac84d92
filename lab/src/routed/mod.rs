//! Routed lab: load balancers behind an ECMP router that learns the VIPs over BGP.
//!
//! ```text
//!   netns client               netns router (BIRD, AS 65000)           netns swf: bridge br0 (fabric)
//!   c0 198.18.10.2 --------- rc0 198.18.10.1 / 2001:2:0:10::1           p-r, p-lb0 .. p-lbN
//!      2001:2:0:10::2          fab0 198.18.20.1 / 2001:2:0:20::1 ----- netns lbI: lb0 198.18.20.(11+I)
//!   default via the router     bk0  198.18.30.1 / 2001:2:0:30::1 --+      2001:2:0:20::(11+I), 2 queues
//!   MTU 1400, tx csum off      ECMP (merge paths), L4 hash        |      nf-maglev (or a stand-in)
//!                              BGP + BFD to every LB's BIRD       |      BIRD (AS 65001+I): `direct`
//!                                                                 |      on "nfmvip*" -> BGP + BFD
//!   netns swb: bridge br0 (backends): p-r, p-b0 .. p-b2 ----------+
//!   netns bJ: eth0 198.18.30.(11+J) / 2001:2:0:30::(11+J), VIPs on lo, py/backend.py,
//!             `nf-maglev decap`, default route via the router
//! ```
//! Every address lies in the test ranges 198.18.0.0/15 and 2001:2::/48 (segment S is 198.18.S.0/24 and
//! 2001:2:0:S::/64), every AS number is private.
//! VIPs: 198.18.100.1 and 2001:2:0:100::1 (TCP [`HTTP_PORT`], UDP [`UDP_PORT`]). The client sends to a VIP;
//! the router's route for it has one nexthop per load balancer that announces it, and the kernel picks
//! one by the flow's L4 hash (`fib_multipath_hash_policy=1`), so a flow stays on one load balancer while
//! the nexthop set stays. nf-maglev encapsulates in GRE towards the backend, sending every frame to the
//! router's fabric MAC (`gateway_mac`); the backend decapsulates and answers the client from the VIP,
//! through the router, never through a load balancer.
//!
//! What a load balancer announces is whatever address sits on a device named `nfmvip*` in its namespace:
//! nf-maglev's announcer puts a VIP there when it is ready and the device vanishes with the process. The
//! LB-side BIRD exports those addresses (only /32 and /128 of the VIP ranges) through `protocol direct`,
//! the router imports only those. BFD (100 ms x 3) notices a silent peer; a process that dies takes its
//! device along and BIRD withdraws at once. A stand-in ([`RoutedLab::start_holder`], `py/vipholder.py`)
//! holds the VIPs on such a device without nf-maglev, which checks BGP and ECMP on their own.
//!
//! Every BIRD runs in the foreground (`-f`) as a [`Proc`](crate::process::Proc) of the lab with its own
//! configuration, control socket and pid file in the lab directory, so nothing of a host-wide BIRD is
//! used or touched. `Drop` stops every process by its PID, then deletes the namespaces and the directory.
//!
//! The parts: [`topology`] builds the lab and owns it, reads the router's routes and waits for nexthop
//! sets; [`bird`] writes the BIRD configurations and runs BIRD; [`lb`] runs nf-maglev (configuration,
//! start, graceful stop, kill, admin API, metrics), the stand-in holders and the client's traffic.

pub mod bird;
pub mod lb;
pub mod topology;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use crate::maglev::{HTTP_PORT, UDP_PORT};
pub use topology::RoutedLab;

/// IPv4 VIP.
pub const VIP4: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 1);
/// IPv6 VIP.
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0x100, 0, 0, 0, 1);
/// Both VIPs.
pub const VIPS: [IpAddr; 2] = [IpAddr::V4(VIP4), IpAddr::V6(VIP6)];
/// AS of the router.
pub const ROUTER_AS: u32 = 65000;
/// AS of load balancer 0; load balancer `i` is in `LB_AS + i`.
pub const LB_AS: u32 = 65001;
/// Name of the device nf-maglev (or the stand-in) holds the ready VIPs on.
pub const VIP_DEV: &str = "nfmvip0";
/// Most load balancers a lab holds.
pub const MAX_LBS: usize = 3;
/// Backends of the lab (weights 1, 1, 2, as in the Maglev lab).
pub const BACKENDS: [(&str, u32); 3] = [("b1", 1), ("b2", 1), ("b3", 2)];
/// BFD: transmit and receive interval (ms) and detection multiplier, on both sides.
pub const BFD_INTERVAL_MS: u32 = 100;
/// BFD detection multiplier.
pub const BFD_MULTIPLIER: u32 = 3;

/// Interface of the router towards the client.
pub const ROUTER_CLIENT_IF: &str = "rc0";
/// Interface of the router on the fabric.
pub const ROUTER_FABRIC_IF: &str = "fab0";
/// Interface of the router on the backend segment.
pub const ROUTER_BACKEND_IF: &str = "bk0";

/// Address `n` of the client link (198.18.10.n, 2001:2:0:10::n).
fn client_net(n: u8) -> (Ipv4Addr, Ipv6Addr) {
    net(10, n)
}

/// Address `n` of the fabric (198.18.20.n, 2001:2:0:20::n).
fn fabric_net(n: u8) -> (Ipv4Addr, Ipv6Addr) {
    net(20, n)
}

/// Address `n` of the backend segment (198.18.30.n, 2001:2:0:30::n).
fn backend_net(n: u8) -> (Ipv4Addr, Ipv6Addr) {
    net(30, n)
}

/// 198.18.SEG.N and 2001:2:0:SEG::N, the decimal digits of SEG and N written as they are in both (so
/// 198.18.20.11 pairs with 2001:2:0:20::11).
fn net(seg: u8, n: u8) -> (Ipv4Addr, Ipv6Addr) {
    let digits = |x: u8| u16::from_str_radix(&x.to_string(), 16).unwrap_or_default();
    (
        Ipv4Addr::new(198, 18, seg, n),
        Ipv6Addr::new(0x2001, 2, 0, digits(seg), 0, 0, 0, digits(n)),
    )
}

fn mac(seg: u8, n: u8) -> crate::addr::Mac {
    crate::addr::Mac([0x02, 0x1a, 0xb2, seg, 0, n])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::{is_test_ipv4, is_test_ipv6};

    #[test]
    fn every_address_is_a_test_address() {
        for seg in [10, 20, 30] {
            for n in [1, 2, 11, 13] {
                let (v4, v6) = net(seg, n);
                assert!(is_test_ipv4(v4) && is_test_ipv6(v6), "{v4} {v6}");
            }
        }
        assert!(is_test_ipv4(VIP4) && is_test_ipv6(VIP6));
        assert_eq!(VIP6.to_string(), "2001:2:0:100::1");
        assert_eq!(fabric_net(11).1.to_string(), "2001:2:0:20::11");
        assert_eq!(client_net(2).1.to_string(), "2001:2:0:10::2");
        assert_eq!(backend_net(13).0.to_string(), "198.18.30.13");
    }

    #[test]
    fn private_as_numbers() {
        for a in [ROUTER_AS, LB_AS, LB_AS + MAX_LBS as u32 - 1] {
            assert!((64512..=65534).contains(&a), "{a}");
        }
    }
}
