//! The GRE tunnel to a backend: the outer header templates the control plane builds per backend and the
//! data plane copies into every encapsulated packet.
//!
//! Its own module because both sides need it: [`crate::control`] builds a [`GreOuter`] for each backend when
//! it builds the state, and [`crate::dataplane`] writes it; neither depends on the other for it.

use cne::wire::{IpProtocol, Ipv4Repr, Ipv6Repr};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// GRE header without options.
pub(crate) const GRE_LEN: usize = 4;
/// The most a GRE encapsulation prepends in front of a frame's data (IPv6 outer header and GRE; the
/// Ethernet header is rewritten, not added).
pub(crate) const GRE_MAX_OVERHEAD: usize = GRE_LEN + Ipv6Repr::HEADER_LEN;
/// TTL / hop limit of packets the load balancer originates (outer headers, ICMP errors).
pub(crate) const HOP_LIMIT: u8 = 64;

/// The outer IP header of GRE packets to one backend, prepared when the state is built: per packet only
/// the length, the traffic class (and flow label) and the IPv4 checksum are filled in, and the checksum is
/// computed from a precomputed sum instead of being read back from the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GreOuter {
    /// No local address of the backend's family: GRE packets to it are dropped
    /// ([`DropReason::NoLocalAddr`](crate::counters::DropReason::NoLocalAddr)).
    None,
    /// IPv4 header (DF set, TOS zero) as [`Ipv4Repr::emit`] writes it for an empty payload, and the
    /// ones-complement sum of its words but the total length and the checksum, which every packet
    /// overwrites.
    V4 {
        /// The header template.
        header: [u8; Ipv4Repr::HEADER_LEN],
        /// Sum of its 16-bit words other than total length and checksum, unfolded.
        sum: u32,
    },
    /// IPv6 header with traffic class, flow label and payload length zero.
    V6 {
        /// The header template.
        header: [u8; Ipv6Repr::HEADER_LEN],
    },
}

impl GreOuter {
    /// The outer header from the local address of `backend`'s family to `backend`.
    pub fn new(backend: IpAddr, local_v4: Option<Ipv4Addr>, local_v6: Option<Ipv6Addr>) -> Self {
        match (backend, local_v4, local_v6) {
            (IpAddr::V4(dst), Some(src), _) => {
                let mut header = [0u8; Ipv4Repr::HEADER_LEN];
                let repr = Ipv4Repr {
                    src,
                    dst,
                    protocol: IpProtocol::Gre,
                    payload_len: 0,
                    ttl: HOP_LIMIT,
                    tos: 0,
                    ident: 0,
                    dont_frag: true,
                };
                if repr.emit(&mut header).is_err() {
                    return GreOuter::None;
                }
                // Words 1 (total length) and 5 (checksum) are written per packet.
                let sum = header
                    .chunks_exact(2)
                    .enumerate()
                    .filter(|&(i, _)| i != 1 && i != 5)
                    .map(|(_, w)| u32::from(u16::from_be_bytes([w[0], w[1]])))
                    .sum();
                GreOuter::V4 { header, sum }
            }
            (IpAddr::V6(dst), _, Some(src)) => {
                let mut header = [0u8; Ipv6Repr::HEADER_LEN];
                let repr = Ipv6Repr {
                    src,
                    dst,
                    next_header: IpProtocol::Gre,
                    payload_len: 0,
                    hop_limit: HOP_LIMIT,
                    traffic_class: 0,
                    flow_label: 0,
                };
                if repr.emit(&mut header).is_err() {
                    return GreOuter::None;
                }
                GreOuter::V6 { header }
            }
            _ => GreOuter::None,
        }
    }

    /// Bytes the outer IP header and the GRE header add.
    #[inline]
    pub fn overhead(&self) -> usize {
        GRE_LEN
            + match self {
                GreOuter::V6 { .. } => Ipv6Repr::HEADER_LEN,
                _ => Ipv4Repr::HEADER_LEN,
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cne::wire::{Ipv4Packet, Ipv6Packet};

    #[test]
    fn v4_template_and_sum_give_a_valid_header_for_any_length_and_tos() {
        let outer = GreOuter::new(
            "198.18.1.1".parse().expect("ip"),
            Some("198.18.0.1".parse().expect("ip")),
            None,
        );
        let GreOuter::V4 { header, sum } = outer else {
            panic!("{outer:?}");
        };
        for (tos, len) in [(0u8, 24u16), (0x28, 1500), (0xff, 0xffff)] {
            // As `dataplane::encap` fills it in.
            let mut h = header;
            h[1] = tos;
            h[2..4].copy_from_slice(&len.to_be_bytes());
            let mut s = sum + u32::from(tos) + u32::from(len);
            s = (s & 0xffff) + (s >> 16);
            s = (s & 0xffff) + (s >> 16);
            h[10..12].copy_from_slice(&(!(s as u16)).to_be_bytes());
            let mut buf = vec![0u8; usize::from(len)];
            buf[..20].copy_from_slice(&h);
            let p = Ipv4Packet::new_checked(&buf[..]).expect("parses");
            assert!(p.verify_checksum(), "tos {tos} len {len}");
            assert_eq!(
                (p.ttl(), p.dont_frag(), p.protocol()),
                (HOP_LIMIT, true, IpProtocol::Gre)
            );
        }
        assert_eq!(
            GreOuter::new("198.18.1.1".parse().expect("ip"), None, None).overhead(),
            24
        );
    }

    #[test]
    fn v6_template() {
        let outer = GreOuter::new(
            "2001:2:1::1".parse().expect("ip"),
            None,
            Some("2001:2::1".parse().expect("ip")),
        );
        assert_eq!(outer.overhead(), 44);
        let GreOuter::V6 { header } = outer else {
            panic!("{outer:?}");
        };
        let p = Ipv6Packet::new_checked(&header[..]).expect("parses");
        assert_eq!(p.next_header(), IpProtocol::Gre);
        assert_eq!(p.hop_limit(), HOP_LIMIT);
        assert_eq!(p.src_addr(), "2001:2::1".parse::<Ipv6Addr>().expect("ip"));
        assert_eq!(p.dst_addr(), "2001:2:1::1".parse::<Ipv6Addr>().expect("ip"));
        assert_eq!(
            (p.traffic_class(), p.flow_label(), p.payload_len()),
            (0, 0, 0)
        );
    }
}
