//! Numbers shared by IPv4 and IPv6: protocol numbers, the IP version and fragment information.
//!
//! IPv4 carries fragmentation in its fixed header, IPv6 in an extension header; [`FragmentInfo`] is the
//! common form both parsers produce so that the data paths (hashing fragments on the 3-tuple, dropping
//! non-first fragments) treat the two families alike.

use super::enum_with_unknown;

enum_with_unknown! {
    /// IP protocol number: the IPv4 `protocol` field and the IPv6 `next header` field (IANA registry).
    pub enum IpProtocol(u8) {
        /// IPv6 hop-by-hop options header.
        HopByHop = 0,
        /// ICMP for IPv4.
        Icmp = 1,
        /// IGMP.
        Igmp = 2,
        /// IPv4 encapsulated in IP.
        Ipv4 = 4,
        /// TCP.
        Tcp = 6,
        /// UDP.
        Udp = 17,
        /// IPv6 encapsulated in IP.
        Ipv6 = 41,
        /// IPv6 routing header.
        Ipv6Route = 43,
        /// IPv6 fragment header.
        Ipv6Frag = 44,
        /// Generic routing encapsulation.
        Gre = 47,
        /// IPsec encapsulating security payload.
        Esp = 50,
        /// IPsec authentication header.
        Ah = 51,
        /// ICMP for IPv6.
        Icmpv6 = 58,
        /// IPv6 "no next header".
        Ipv6NoNxt = 59,
        /// IPv6 destination options header.
        Ipv6Opts = 60,
        /// SCTP.
        Sctp = 132,
        /// Reserved by IANA; [`super::FrameInfo`] uses it for frames that carry no IP datagram.
        Reserved = 255,
    }
}

/// IP version of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpVersion {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

/// Fragmentation fields of an IPv4 header or an IPv6 fragment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FragmentInfo {
    /// Identification: the IPv4 16-bit id, or the IPv6 32-bit identification.
    pub ident: u32,
    /// Offset of this fragment's data in the original payload, in bytes (a multiple of 8).
    pub offset: u16,
    /// The "more fragments" flag.
    pub more: bool,
}

impl FragmentInfo {
    /// Whether this is part of a fragmented datagram. An IPv6 "atomic fragment" (fragment header with
    /// offset 0 and no more fragments, RFC 6946) is a whole datagram and answers `false`.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        self.offset != 0 || self.more
    }

    /// Whether this is the first fragment of a fragmented datagram: the one that carries the
    /// upper-layer header.
    #[inline]
    pub fn is_first(&self) -> bool {
        self.offset == 0 && self.more
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragment_classification() {
        let whole = FragmentInfo {
            ident: 7,
            offset: 0,
            more: false,
        };
        assert!(!whole.is_fragment() && !whole.is_first());
        let first = FragmentInfo {
            more: true,
            ..whole
        };
        assert!(first.is_fragment() && first.is_first());
        let middle = FragmentInfo {
            offset: 1480,
            more: true,
            ..whole
        };
        assert!(middle.is_fragment() && !middle.is_first());
        let last = FragmentInfo {
            offset: 2960,
            more: false,
            ..whole
        };
        assert!(last.is_fragment() && !last.is_first());
    }
}
