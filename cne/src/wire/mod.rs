//! Zero-copy header views: Ethernet, 802.1Q/802.1ad VLAN tags, ARP, IPv4, IPv6 with its extension
//! headers, ICMPv4, ICMPv6 (echo, neighbour discovery, packet too big), UDP, TCP and GRE; the internet
//! checksum (full and RFC 1624 incremental); emit helpers for fresh headers; and [`parse_frame`], the
//! one-pass parser the data paths call once per packet.
//!
//! Every view is a `struct X<T: AsRef<[u8]>>` over a borrowed or owned buffer. `new_checked` validates
//! once every length the view relies on; after that no accessor can panic or fail, so reading a field
//! needs no error handling. Fields are read and written with `u16::from_be_bytes` and friends at fixed
//! byte ranges (`mod field` in each module): bytes are never reinterpreted as structs, so alignment and
//! padding never matter and this module needs no `unsafe`. Setters that would change a length the view
//! validated (`set_total_len`, `set_payload_len`, ...) re-check it and refuse instead of breaking the
//! invariant. The invariant assumes a buffer whose `as_ref()` returns the same slice every time, which
//! holds for slices, arrays, `Vec` and frames.
//!
//! The only error is [`Malformed`], a zero-sized type: rejecting a packet never allocates, which keeps
//! the per-packet path free of heap traffic.
#![forbid(unsafe_code)]

use core::ops::Range;

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod gre;
pub mod icmpv4;
pub mod icmpv6;
pub mod ip;
pub mod ipv4;
pub mod ipv6;
pub mod parse;
#[cfg(test)]
mod proptests;
pub mod tcp;
pub mod udp;
pub mod vlan;

pub use arp::{ArpOperation, ArpPacket, ArpRepr};
pub use ethernet::{EtherType, EthernetFrame, EthernetRepr, MacAddr};
pub use gre::{GrePacket, GreRepr};
pub use icmpv4::{Icmpv4Packet, Icmpv4Type};
pub use icmpv6::{
    Icmpv6Packet, Icmpv6Type, NdpFlags, NdpNeighbor, NeighborAdvertRepr, NeighborSolicitRepr,
};
pub use ip::{FragmentInfo, IpProtocol, IpVersion};
pub use ipv4::{Ipv4Packet, Ipv4Repr};
pub use ipv6::{Ipv6ExtHeader, Ipv6FragmentHeader, Ipv6Packet, Ipv6Repr, UpperLayer};
pub use parse::{parse_frame, FrameInfo};
pub use tcp::{TcpFlags, TcpPacket};
pub use udp::UdpPacket;
pub use vlan::VlanTag;

/// A packet is truncated, or a header field contradicts the bytes present (a length, a version, a
/// reserved bit that must be zero). Zero-sized so that rejecting a packet costs nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, thiserror::Error)]
#[error("malformed or truncated packet")]
pub struct Malformed;

/// Result of the wire layer.
pub type Result<T> = core::result::Result<T, Malformed>;

/// A byte range of a header field.
pub(crate) type Field = Range<usize>;

/// Reads a big-endian u16 from the first two bytes of `b` (a field range of a validated view).
#[inline(always)]
pub(crate) fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// Reads a big-endian u32 from the first four bytes of `b` (a field range of a validated view).
#[inline(always)]
pub(crate) fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Copies the first `N` bytes of `b` into an array (a field range of a validated view).
#[inline(always)]
pub(crate) fn array<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[..N]);
    out
}

/// Declares a protocol-number enum with an `Unknown` arm and lossless conversions both ways.
/// Conversion from the raw number always picks the named variant, so `Unknown` only ever holds numbers
/// this module does not name.
macro_rules! enum_with_unknown {
    (
        $(#[$enum_attr:meta])*
        pub enum $name:ident($ty:ty) {
            $( $(#[$variant_attr:meta])* $variant:ident = $value:expr ),+ $(,)?
        }
    ) => {
        $(#[$enum_attr])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$variant_attr])* $variant, )+
            /// A number without a name here.
            Unknown($ty),
        }

        impl From<$ty> for $name {
            #[inline]
            fn from(value: $ty) -> Self {
                match value {
                    $( $value => $name::$variant, )+
                    other => $name::Unknown(other),
                }
            }
        }

        impl From<$name> for $ty {
            #[inline]
            fn from(value: $name) -> Self {
                match value {
                    $( $name::$variant => $value, )+
                    $name::Unknown(other) => other,
                }
            }
        }
    };
}
pub(crate) use enum_with_unknown;

/// Generates the shared constructor and buffer accessors of a view type.
macro_rules! view_common {
    ($name:ident) => {
        impl<T: AsRef<[u8]>> $name<T> {
            /// Consumes the view, returning the buffer.
            #[inline]
            pub fn into_inner(self) -> T {
                self.buffer
            }

            /// The whole buffer the view was built on.
            #[inline]
            pub fn as_bytes(&self) -> &[u8] {
                self.buffer.as_ref()
            }
        }
    };
}
pub(crate) use view_common;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_is_zero_sized() {
        assert_eq!(core::mem::size_of::<Malformed>(), 0);
        assert_eq!(Malformed.to_string(), "malformed or truncated packet");
    }

    #[test]
    fn enum_conversions_round_trip() {
        for v in 0..=255u8 {
            assert_eq!(u8::from(IpProtocol::from(v)), v);
        }
        assert_eq!(IpProtocol::from(17), IpProtocol::Udp);
        assert_eq!(IpProtocol::from(200), IpProtocol::Unknown(200));
        assert_eq!(EtherType::from(0x86dd), EtherType::Ipv6);
        assert_eq!(u16::from(EtherType::Unknown(0x1234)), 0x1234);
    }
}
