//! ARP (RFC 826) for Ethernet and IPv4, the only combination on our links.
//!
//! `new_checked` accepts only hardware type 1 (Ethernet), protocol type 0x0800, hardware length 6 and
//! protocol length 4: the address fields then sit at fixed offsets, which is what lets the accessors
//! be plain field reads. Anything else is [`Malformed`] for this view.

use std::net::Ipv4Addr;

use super::{array, be16, enum_with_unknown, view_common, MacAddr, Malformed, Result};

mod field {
    use crate::wire::Field;
    pub(super) const HTYPE: Field = 0..2;
    pub(super) const PTYPE: Field = 2..4;
    pub(super) const HLEN: usize = 4;
    pub(super) const PLEN: usize = 5;
    pub(super) const OPER: Field = 6..8;
    pub(super) const SHA: Field = 8..14;
    pub(super) const SPA: Field = 14..18;
    pub(super) const THA: Field = 18..24;
    pub(super) const TPA: Field = 24..28;
    pub(super) const END: usize = 28;
}

enum_with_unknown! {
    /// ARP operation code.
    pub enum ArpOperation(u16) {
        /// Who has `target_protocol_addr`?
        Request = 1,
        /// `sender_protocol_addr` is at `sender_hardware_addr`.
        Reply = 2,
    }
}

/// A view of an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

view_common!(ArpPacket);

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Length of an Ethernet/IPv4 ARP packet.
    pub const LEN: usize = field::END;

    /// Wraps `buffer`, checking it holds 28 bytes of Ethernet/IPv4 ARP (trailing padding is allowed).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < field::END
            || be16(&b[field::HTYPE]) != 1
            || be16(&b[field::PTYPE]) != 0x0800
            || b[field::HLEN] != 6
            || b[field::PLEN] != 4
        {
            return Err(Malformed);
        }
        Ok(Self { buffer })
    }

    /// Operation.
    #[inline]
    pub fn operation(&self) -> ArpOperation {
        ArpOperation::from(be16(&self.buffer.as_ref()[field::OPER]))
    }

    /// Sender hardware address.
    #[inline]
    pub fn sender_hardware_addr(&self) -> MacAddr {
        MacAddr(array(&self.buffer.as_ref()[field::SHA]))
    }

    /// Sender protocol address.
    #[inline]
    pub fn sender_protocol_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(array::<4>(&self.buffer.as_ref()[field::SPA]))
    }

    /// Target hardware address.
    #[inline]
    pub fn target_hardware_addr(&self) -> MacAddr {
        MacAddr(array(&self.buffer.as_ref()[field::THA]))
    }

    /// Target protocol address.
    #[inline]
    pub fn target_protocol_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(array::<4>(&self.buffer.as_ref()[field::TPA]))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Sets the operation.
    #[inline]
    pub fn set_operation(&mut self, op: ArpOperation) {
        self.buffer.as_mut()[field::OPER].copy_from_slice(&u16::from(op).to_be_bytes());
    }

    /// Sets the sender hardware address.
    #[inline]
    pub fn set_sender_hardware_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::SHA].copy_from_slice(&addr.0);
    }

    /// Sets the sender protocol address.
    #[inline]
    pub fn set_sender_protocol_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SPA].copy_from_slice(&addr.octets());
    }

    /// Sets the target hardware address.
    #[inline]
    pub fn set_target_hardware_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::THA].copy_from_slice(&addr.0);
    }

    /// Sets the target protocol address.
    #[inline]
    pub fn set_target_protocol_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::TPA].copy_from_slice(&addr.octets());
    }
}

/// The fields of an Ethernet/IPv4 ARP packet, to write a fresh one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArpRepr {
    /// Operation.
    pub operation: ArpOperation,
    /// Sender hardware address.
    pub sender_mac: MacAddr,
    /// Sender protocol address.
    pub sender_ip: Ipv4Addr,
    /// Target hardware address.
    pub target_mac: MacAddr,
    /// Target protocol address.
    pub target_ip: Ipv4Addr,
}

impl ArpRepr {
    /// Length [`ArpRepr::emit`] writes.
    pub const LEN: usize = field::END;

    /// Reads a packet.
    pub fn parse<T: AsRef<[u8]>>(p: &ArpPacket<T>) -> Self {
        Self {
            operation: p.operation(),
            sender_mac: p.sender_hardware_addr(),
            sender_ip: p.sender_protocol_addr(),
            target_mac: p.target_hardware_addr(),
            target_ip: p.target_protocol_addr(),
        }
    }

    /// Writes the 28-byte packet at the start of `buf` and returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let b = buf.get_mut(..field::END).ok_or(Malformed)?;
        b[field::HTYPE].copy_from_slice(&1u16.to_be_bytes());
        b[field::PTYPE].copy_from_slice(&0x0800u16.to_be_bytes());
        b[field::HLEN] = 6;
        b[field::PLEN] = 4;
        b[field::OPER].copy_from_slice(&u16::from(self.operation).to_be_bytes());
        b[field::SHA].copy_from_slice(&self.sender_mac.0);
        b[field::SPA].copy_from_slice(&self.sender_ip.octets());
        b[field::THA].copy_from_slice(&self.target_mac.0);
        b[field::TPA].copy_from_slice(&self.target_ip.octets());
        Ok(field::END)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ARP request "who has 198.18.0.2, tell 198.18.0.1" from 02:00:00:00:00:01, as Linux sends it.
    static REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 198,
        18, 0, 1, 0, 0, 0, 0, 0, 0, 198, 18, 0, 2,
    ];

    #[test]
    fn deconstruct() {
        let p = ArpPacket::new_checked(&REQUEST[..]).unwrap();
        assert_eq!(p.operation(), ArpOperation::Request);
        assert_eq!(p.sender_hardware_addr(), MacAddr([2, 0, 0, 0, 0, 1]));
        assert_eq!(p.sender_protocol_addr(), Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(p.target_hardware_addr(), MacAddr::ZERO);
        assert_eq!(p.target_protocol_addr(), Ipv4Addr::new(198, 18, 0, 2));
    }

    #[test]
    fn emit_round_trip() {
        let repr = ArpRepr::parse(&ArpPacket::new_checked(&REQUEST[..]).unwrap());
        let mut buf = [0u8; 28];
        assert_eq!(repr.emit(&mut buf), Ok(28));
        assert_eq!(buf, REQUEST);
        let mut p = ArpPacket::new_checked(&mut buf[..]).unwrap();
        p.set_operation(ArpOperation::Reply);
        p.set_target_hardware_addr(MacAddr([2, 0, 0, 0, 0, 1]));
        p.set_sender_hardware_addr(MacAddr([2, 0, 0, 0, 0, 2]));
        p.set_target_protocol_addr(Ipv4Addr::new(198, 18, 0, 1));
        p.set_sender_protocol_addr(Ipv4Addr::new(198, 18, 0, 2));
        assert_eq!(p.operation(), ArpOperation::Reply);
        assert_eq!(&buf[6..8], &[0, 2]);
    }

    #[test]
    fn other_link_or_protocol_rejected() {
        assert_eq!(ArpPacket::new_checked(&REQUEST[..27]), Err(Malformed));
        for (at, v) in [(1, 6u8), (3, 0xdd), (4, 8), (5, 16)] {
            let mut b = REQUEST;
            b[at] = v;
            assert_eq!(ArpPacket::new_checked(&b[..]), Err(Malformed), "byte {at}");
        }
    }
}
