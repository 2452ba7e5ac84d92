//! UDP (RFC 768) datagrams.
//!
//! `new_checked` requires the 8-byte header and a length field between 8 and the buffer length, so the
//! view is built over the IP payload and [`UdpPacket::payload`] ends where the length field says. The
//! checksum covers the pseudo-header; over IPv4 a zero checksum means "none" (and verifies), over IPv6 it
//! is invalid; a computed zero is sent as `0xffff`.

use std::net::IpAddr;

use super::{be16, checksum, view_common, IpProtocol, Malformed, Result};

mod field {
    use crate::wire::Field;
    pub(super) const SRC_PORT: Field = 0..2;
    pub(super) const DST_PORT: Field = 2..4;
    pub(super) const LENGTH: Field = 4..6;
    pub(super) const CHECKSUM: Field = 6..8;
    pub(super) const PAYLOAD: usize = 8;
}

/// A view of a UDP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

view_common!(UdpPacket);

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Length of the header.
    pub const HEADER_LEN: usize = field::PAYLOAD;

    /// Wraps `buffer`, checking the header is present and the length field lies between 8 and the
    /// buffer length.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < field::PAYLOAD {
            return Err(Malformed);
        }
        let len = usize::from(be16(&b[field::LENGTH]));
        if len < field::PAYLOAD || len > b.len() {
            return Err(Malformed);
        }
        Ok(Self { buffer })
    }

    /// Source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::SRC_PORT])
    }

    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::DST_PORT])
    }

    /// Length field: header and payload.
    #[inline]
    pub fn length(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::LENGTH])
    }

    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// The payload, up to the length field.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..usize::from(self.length())]
    }

    fn sum(&self, src: &IpAddr, dst: &IpAddr) -> Result<u16> {
        let len = self.length();
        let pseudo = checksum::pseudo_header(src, dst, IpProtocol::Udp, u32::from(len))?;
        Ok(checksum::combine(&[
            pseudo,
            checksum::data(&self.buffer.as_ref()[..usize::from(len)]),
        ]))
    }

    /// Whether the checksum is correct for these addresses. A zero checksum over IPv4 means "no
    /// checksum" and verifies; addresses of different families never verify.
    #[inline]
    pub fn verify_checksum(&self, src: &IpAddr, dst: &IpAddr) -> bool {
        if self.checksum() == 0 {
            return matches!((src, dst), (IpAddr::V4(_), IpAddr::V4(_)));
        }
        self.sum(src, dst) == Ok(0xffff)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Sets the source port.
    #[inline]
    pub fn set_src_port(&mut self, port: u16) {
        self.buffer.as_mut()[field::SRC_PORT].copy_from_slice(&port.to_be_bytes());
    }

    /// Sets the destination port.
    #[inline]
    pub fn set_dst_port(&mut self, port: u16) {
        self.buffer.as_mut()[field::DST_PORT].copy_from_slice(&port.to_be_bytes());
    }

    /// Exchanges source and destination ports; the checksum does not change.
    #[inline]
    pub fn swap_ports(&mut self) {
        let (src, dst) =
            self.buffer.as_mut()[field::SRC_PORT.start..field::DST_PORT.end].split_at_mut(2);
        src.swap_with_slice(dst);
    }

    /// Sets the length field. [`Malformed`], with nothing changed, when it is below 8 or beyond the
    /// buffer.
    #[inline]
    pub fn set_length(&mut self, len: u16) -> Result<()> {
        let l = usize::from(len);
        if l < field::PAYLOAD || l > self.buffer.as_ref().len() {
            return Err(Malformed);
        }
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&value.to_be_bytes());
    }

    /// Computes and stores the checksum (a computed zero is stored as `0xffff`). [`Malformed`] when the
    /// addresses are of different families.
    #[inline]
    pub fn fill_checksum(&mut self, src: &IpAddr, dst: &IpAddr) -> Result<()> {
        self.set_checksum(0);
        let sum = !self.sum(src, dst)?;
        self.set_checksum(if sum == 0 { 0xffff } else { sum });
        Ok(())
    }

    /// The payload, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.length());
        &mut self.buffer.as_mut()[field::PAYLOAD..end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // UDP 48896 -> 53 with payload aa 00 00 ff between 192.168.1.1 and 192.168.1.2; checksum 0x124d as
    // in smoltcp's udp.rs test vector.
    static PACKET: [u8; 12] = [
        0xbf, 0x00, 0x00, 0x35, 0x00, 0x0c, 0x12, 0x4d, 0xaa, 0x00, 0x00, 0xff,
    ];

    fn v4(a: [u8; 4]) -> IpAddr {
        IpAddr::from(a)
    }

    #[test]
    fn deconstruct() {
        let (s, d) = (v4([192, 168, 1, 1]), v4([192, 168, 1, 2]));
        let p = UdpPacket::new_checked(&PACKET[..]).unwrap();
        assert_eq!(
            (p.src_port(), p.dst_port(), p.length(), p.checksum()),
            (48896, 53, 12, 0x124d)
        );
        assert_eq!(p.payload(), &[0xaa, 0, 0, 0xff]);
        assert!(p.verify_checksum(&s, &d));
        assert!(!p.verify_checksum(&s, &v4([192, 168, 1, 3])));
        assert!(!p.verify_checksum(&s, &IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)));
    }

    #[test]
    fn construct() {
        let (s, d) = (v4([192, 168, 1, 1]), v4([192, 168, 1, 2]));
        let mut b = [0u8; 14];
        b[4..6].copy_from_slice(&8u16.to_be_bytes());
        let mut p = UdpPacket::new_checked(&mut b[..]).unwrap();
        p.set_src_port(53);
        p.set_dst_port(48896);
        p.swap_ports();
        p.set_length(12).unwrap();
        p.payload_mut().copy_from_slice(&[0xaa, 0, 0, 0xff]);
        p.fill_checksum(&s, &d).unwrap();
        assert_eq!(b[..12], PACKET);
    }

    #[test]
    fn length_rules() {
        assert_eq!(UdpPacket::new_checked(&PACKET[..7]), Err(Malformed));
        assert_eq!(
            UdpPacket::new_checked(&PACKET[..11]),
            Err(Malformed),
            "length beyond buffer"
        );
        let mut b = PACKET;
        b[5] = 7;
        assert_eq!(
            UdpPacket::new_checked(&b[..]),
            Err(Malformed),
            "length below header"
        );
        let mut padded = PACKET.to_vec();
        padded.extend_from_slice(&[0; 4]);
        let mut p = UdpPacket::new_checked(&mut padded[..]).unwrap();
        assert_eq!(p.payload().len(), 4);
        assert_eq!(p.set_length(17), Err(Malformed));
        assert_eq!(p.set_length(7), Err(Malformed));
        assert_eq!(p.length(), 12);
    }

    #[test]
    fn zero_checksum_rules() {
        let mut b = PACKET;
        b[6..8].copy_from_slice(&[0, 0]);
        let p = UdpPacket::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum(&v4([192, 168, 1, 1]), &v4([192, 168, 1, 2])));
        let s6 = IpAddr::V6("2001:2::1".parse().unwrap());
        let d6 = IpAddr::V6("2001:2::2".parse().unwrap());
        assert!(
            !p.verify_checksum(&s6, &d6),
            "IPv6 forbids a zero UDP checksum"
        );
    }

    #[test]
    fn computed_zero_is_sent_as_ones() {
        // Choose the payload so that the sum over pseudo-header and datagram is 0xffff: the
        // complemented checksum is then 0 and must be transmitted as 0xffff.
        let (s, d) = (v4([198, 18, 0, 1]), v4([198, 18, 0, 2]));
        let mut b = [0u8; 10];
        b[4..6].copy_from_slice(&10u16.to_be_bytes());
        let partial = {
            let p = UdpPacket::new_checked(&b[..]).unwrap();
            p.sum(&s, &d).unwrap()
        };
        // Adding `!partial` as the payload word brings the sum to 0xffff.
        b[8..10].copy_from_slice(&(!partial).to_be_bytes());
        let mut p = UdpPacket::new_checked(&mut b[..]).unwrap();
        p.fill_checksum(&s, &d).unwrap();
        assert_eq!(p.checksum(), 0xffff);
        assert!(p.verify_checksum(&s, &d));
    }
}
