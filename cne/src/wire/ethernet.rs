//! Ethernet II frames: destination and source MAC addresses and the EtherType.
//!
//! The view covers the 14-byte header; VLAN tags that may follow are read with [`super::vlan`]. The
//! frame check sequence is never present in AF_XDP buffers, so the payload is everything after the
//! header, including any padding up to the 60-byte minimum.

use core::fmt;
use core::str::FromStr;
use std::net::Ipv6Addr;

use super::{array, be16, enum_with_unknown, view_common, Malformed, Result};

mod field {
    use crate::wire::Field;
    pub(super) const DST: Field = 0..6;
    pub(super) const SRC: Field = 6..12;
    pub(super) const ETHERTYPE: Field = 12..14;
    pub(super) const PAYLOAD: usize = 14;
}

enum_with_unknown! {
    /// EtherType: the protocol of an Ethernet payload (IEEE registry).
    pub enum EtherType(u16) {
        /// IPv4.
        Ipv4 = 0x0800,
        /// ARP.
        Arp = 0x0806,
        /// IEEE 802.1Q customer VLAN tag (C-tag).
        Vlan = 0x8100,
        /// IEEE 802.1ad service VLAN tag (S-tag, "QinQ").
        QinQ = 0x88a8,
        /// IPv6.
        Ipv6 = 0x86dd,
        /// Transparent Ethernet bridging (Ethernet carried in GRE).
        TransparentEthernetBridging = 0x6558,
    }
}

/// A 48-bit IEEE MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    /// 00:00:00:00:00:00.
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// The six octets.
    #[inline]
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// Whether this is 00:00:00:00:00:00.
    #[inline]
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }

    /// Whether this is ff:ff:ff:ff:ff:ff.
    #[inline]
    pub fn is_broadcast(&self) -> bool {
        self.0 == [0xff; 6]
    }

    /// Whether the group bit is set (multicast, broadcast included).
    #[inline]
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// Whether the group bit is clear.
    #[inline]
    pub const fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }

    /// The multicast MAC an IPv6 multicast address maps to (RFC 2464 section 7: 33:33 and the low
    /// 32 bits of the address).
    #[inline]
    pub fn ipv6_multicast(addr: &Ipv6Addr) -> MacAddr {
        let o = addr.octets();
        MacAddr([0x33, 0x33, o[12], o[13], o[14], o[15]])
    }
}

impl From<[u8; 6]> for MacAddr {
    fn from(octets: [u8; 6]) -> Self {
        MacAddr(octets)
    }
}

impl From<MacAddr> for [u8; 6] {
    fn from(mac: MacAddr) -> Self {
        mac.0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            o[0], o[1], o[2], o[3], o[4], o[5]
        )
    }
}

/// A string that is not six two-digit hexadecimal octets separated by `:` (or all by `-`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a MAC address like \"02:00:00:00:00:01\"")]
pub struct MacAddrParseError(pub String);

/// The one MAC address syntax of the project (configs, sysfs, command lines): six octets of exactly
/// two hexadecimal digits, separated by `:` or, all of them, by `-`.
impl FromStr for MacAddr {
    type Err = MacAddrParseError;

    fn from_str(s: &str) -> core::result::Result<Self, Self::Err> {
        let bad = || MacAddrParseError(s.to_string());
        let sep = if s.contains('-') { '-' } else { ':' };
        let mut out = [0u8; 6];
        let mut parts = s.split(sep);
        for byte in &mut out {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}

/// Serialized as its text form, `aa:bb:cc:dd:ee:ff`.
impl serde::Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> core::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Deserialized from a string with the rules of [`MacAddr`]'s `FromStr`.
impl<'de> serde::Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> core::result::Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = MacAddr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a MAC address \"aa:bb:cc:dd:ee:ff\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> core::result::Result<MacAddr, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// A view of an Ethernet II frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

view_common!(EthernetFrame);

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Length of the header.
    pub const HEADER_LEN: usize = field::PAYLOAD;

    /// Wraps `buffer`, checking it holds the 14-byte header.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < field::PAYLOAD {
            return Err(Malformed);
        }
        Ok(Self { buffer })
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> MacAddr {
        MacAddr(array(&self.buffer.as_ref()[field::DST]))
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> MacAddr {
        MacAddr(array(&self.buffer.as_ref()[field::SRC]))
    }

    /// EtherType of the payload (a VLAN TPID when the frame is tagged).
    #[inline]
    pub fn ethertype(&self) -> EtherType {
        EtherType::from(be16(&self.buffer.as_ref()[field::ETHERTYPE]))
    }

    /// Everything after the header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&addr.0);
    }

    /// Sets the source address.
    #[inline]
    pub fn set_src_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&addr.0);
    }

    /// Sets the EtherType.
    #[inline]
    pub fn set_ethertype(&mut self, ethertype: EtherType) {
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&u16::from(ethertype).to_be_bytes());
    }

    /// Exchanges source and destination addresses.
    #[inline]
    pub fn swap_addrs(&mut self) {
        let (dst, rest) = self.buffer.as_mut().split_at_mut(field::SRC.start);
        dst.swap_with_slice(&mut rest[..field::SRC.len()]);
    }

    /// Everything after the header, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

/// The fields of an Ethernet header, to write a fresh one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EthernetRepr {
    /// Destination address.
    pub dst: MacAddr,
    /// Source address.
    pub src: MacAddr,
    /// EtherType of the payload.
    pub ethertype: EtherType,
}

impl EthernetRepr {
    /// Length of the header [`EthernetRepr::emit`] writes.
    pub const HEADER_LEN: usize = field::PAYLOAD;

    /// Reads the header of a frame.
    pub fn parse<T: AsRef<[u8]>>(frame: &EthernetFrame<T>) -> Self {
        Self {
            dst: frame.dst_addr(),
            src: frame.src_addr(),
            ethertype: frame.ethertype(),
        }
    }

    /// Writes the 14-byte header at the start of `buf` and returns its length. [`Malformed`] when `buf`
    /// is shorter.
    #[inline]
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let hdr = buf.get_mut(..field::PAYLOAD).ok_or(Malformed)?;
        hdr[field::DST].copy_from_slice(&self.dst.0);
        hdr[field::SRC].copy_from_slice(&self.src.0);
        hdr[field::ETHERTYPE].copy_from_slice(&u16::from(self.ethertype).to_be_bytes());
        Ok(field::PAYLOAD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Start of an ARP request frame: broadcast destination, source 02:00:00:00:00:01, EtherType ARP.
    static FRAME: [u8; 16] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0xaa,
        0xbb,
    ];

    #[test]
    fn deconstruct() {
        let f = EthernetFrame::new_checked(&FRAME[..]).unwrap();
        assert_eq!(f.dst_addr(), MacAddr::BROADCAST);
        assert_eq!(f.src_addr(), MacAddr([2, 0, 0, 0, 0, 1]));
        assert_eq!(f.ethertype(), EtherType::Arp);
        assert_eq!(f.payload(), &[0xaa, 0xbb]);
    }

    #[test]
    fn construct_and_swap() {
        let mut buf = [0u8; 16];
        let n = EthernetRepr {
            dst: MacAddr::BROADCAST,
            src: MacAddr([2, 0, 0, 0, 0, 1]),
            ethertype: EtherType::Arp,
        }
        .emit(&mut buf)
        .unwrap();
        assert_eq!(n, 14);
        buf[14..].copy_from_slice(&[0xaa, 0xbb]);
        assert_eq!(buf, FRAME);
        let mut f = EthernetFrame::new_checked(&mut buf[..]).unwrap();
        f.swap_addrs();
        assert_eq!(f.dst_addr(), MacAddr([2, 0, 0, 0, 0, 1]));
        assert_eq!(f.src_addr(), MacAddr::BROADCAST);
        f.set_ethertype(EtherType::Ipv6);
        assert_eq!(&buf[12..14], &[0x86, 0xdd]);
    }

    #[test]
    fn short_buffers_rejected() {
        assert_eq!(EthernetFrame::new_checked(&FRAME[..13]), Err(Malformed));
        let mut small = [0u8; 13];
        let repr = EthernetRepr {
            dst: MacAddr::ZERO,
            src: MacAddr::ZERO,
            ethertype: EtherType::Ipv4,
        };
        assert_eq!(repr.emit(&mut small), Err(Malformed));
    }

    #[test]
    fn mac_text_and_classes() {
        let mac: MacAddr = "02:00:5e:10:ab:CD".parse().unwrap();
        assert_eq!(mac, MacAddr([0x02, 0x00, 0x5e, 0x10, 0xab, 0xcd]));
        assert_eq!(mac.to_string(), "02:00:5e:10:ab:cd");
        assert!(mac.is_unicast() && !mac.is_multicast());
        assert!(MacAddr::BROADCAST.is_broadcast() && MacAddr::BROADCAST.is_multicast());
        for bad in [
            "",
            "02:00:5e:10:ab",
            "02:00:5e:10:ab:cd:ef",
            "02:00:5e:10:ab:xy",
            "002:0:0:0:0:0",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
        let ns: Ipv6Addr = "ff02::1:ff00:1234".parse().unwrap();
        assert_eq!(
            MacAddr::ipv6_multicast(&ns),
            MacAddr([0x33, 0x33, 0xff, 0x00, 0x12, 0x34])
        );
    }

    #[test]
    fn mac_serde_as_text() {
        let mac: MacAddr = serde_json::from_str("\"02:00:5E:10:ab:cd\"").unwrap();
        assert_eq!(mac, MacAddr([0x02, 0x00, 0x5e, 0x10, 0xab, 0xcd]));
        assert_eq!(
            serde_json::to_string(&mac).unwrap(),
            "\"02:00:5e:10:ab:cd\""
        );
        let e = serde_json::from_str::<MacAddr>("\"02:00:5e:10:ab\"").unwrap_err();
        assert!(e.to_string().contains("is not a MAC address like"), "{e}");
        assert!(serde_json::from_str::<MacAddr>("[2, 0, 0, 0, 0, 1]").is_err());
        // One syntax: two hex digits per octet, one kind of separator.
        assert_eq!(
            "02-00-5e-10-ab-cd".parse::<MacAddr>().unwrap(),
            MacAddr([0x02, 0x00, 0x5e, 0x10, 0xab, 0xcd])
        );
        for bad in [
            "2:0:5e:10:ab:cd",
            "02:00-5e:10:ab:cd",
            "02:00:5e:10:ab:+d",
            "02:00:5e:10:ab:cd:",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }
}
