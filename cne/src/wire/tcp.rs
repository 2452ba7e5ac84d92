//! TCP (RFC 9293) segment headers: ports, sequence numbers, data offset, flags, checksum.
//!
//! `new_checked` requires a data offset of at least 5 words that fits in the buffer, so options and
//! payload are plain slices. The view is built over exactly the IP payload: the checksum's
//! pseudo-header length is the buffer length.

use core::ops::BitOr;
use std::net::IpAddr;

use super::{be16, be32, checksum, view_common, IpProtocol, Malformed, Result};

mod field {
    use crate::wire::Field;
    pub(super) const SRC_PORT: Field = 0..2;
    pub(super) const DST_PORT: Field = 2..4;
    pub(super) const SEQ: Field = 4..8;
    pub(super) const ACK: Field = 8..12;
    pub(super) const DATA_OFF: usize = 12;
    pub(super) const FLAGS: usize = 13;
    pub(super) const WINDOW: Field = 14..16;
    pub(super) const CHECKSUM: Field = 16..18;
    pub(super) const URGENT: Field = 18..20;
    pub(super) const OPTIONS: usize = 20;
}

/// The eight TCP flag bits of byte 13 (the AE bit in byte 12 is not included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// No more data from the sender.
    pub const FIN: TcpFlags = TcpFlags(0x01);
    /// Synchronise sequence numbers.
    pub const SYN: TcpFlags = TcpFlags(0x02);
    /// Reset the connection.
    pub const RST: TcpFlags = TcpFlags(0x04);
    /// Push.
    pub const PSH: TcpFlags = TcpFlags(0x08);
    /// Acknowledgment field significant.
    pub const ACK: TcpFlags = TcpFlags(0x10);
    /// Urgent pointer significant.
    pub const URG: TcpFlags = TcpFlags(0x20);
    /// ECN echo.
    pub const ECE: TcpFlags = TcpFlags(0x40);
    /// Congestion window reduced.
    pub const CWR: TcpFlags = TcpFlags(0x80);

    /// Whether every flag of `other` is set.
    #[inline]
    pub const fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether no flag is set.
    #[inline]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl BitOr for TcpFlags {
    type Output = TcpFlags;
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | rhs.0)
    }
}

/// A view of a TCP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

view_common!(TcpPacket);

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Length of a header without options.
    pub const HEADER_LEN: usize = field::OPTIONS;

    /// Wraps `buffer` (the whole segment), checking the data offset is at least 5 and inside the buffer.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < field::OPTIONS {
            return Err(Malformed);
        }
        let hlen = usize::from(b[field::DATA_OFF] >> 4) * 4;
        if hlen < field::OPTIONS || hlen > b.len() {
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

    /// Sequence number.
    #[inline]
    pub fn seq_number(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::SEQ])
    }

    /// Acknowledgment number.
    #[inline]
    pub fn ack_number(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::ACK])
    }

    /// Header length in bytes (data offset times 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFF] >> 4) * 4
    }

    /// Flags.
    #[inline]
    pub fn flags(&self) -> TcpFlags {
        TcpFlags(self.buffer.as_ref()[field::FLAGS])
    }

    /// Window.
    #[inline]
    pub fn window_len(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::WINDOW])
    }

    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// Urgent pointer.
    #[inline]
    pub fn urgent_at(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::URGENT])
    }

    /// Options (empty for a 20-byte header).
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[field::OPTIONS..self.header_len()]
    }

    /// Payload.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }

    fn sum(&self, src: &IpAddr, dst: &IpAddr) -> Result<u16> {
        let b = self.buffer.as_ref();
        let len = u32::try_from(b.len()).map_err(|_| Malformed)?;
        let pseudo = checksum::pseudo_header(src, dst, IpProtocol::Tcp, len)?;
        Ok(checksum::combine(&[pseudo, checksum::data(b)]))
    }

    /// Whether the checksum is correct for these addresses (never for mixed families).
    #[inline]
    pub fn verify_checksum(&self, src: &IpAddr, dst: &IpAddr) -> bool {
        self.sum(src, dst) == Ok(0xffff)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
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

    /// Sets the sequence number.
    #[inline]
    pub fn set_seq_number(&mut self, seq: u32) {
        self.buffer.as_mut()[field::SEQ].copy_from_slice(&seq.to_be_bytes());
    }

    /// Sets the acknowledgment number.
    #[inline]
    pub fn set_ack_number(&mut self, ack: u32) {
        self.buffer.as_mut()[field::ACK].copy_from_slice(&ack.to_be_bytes());
    }

    /// Sets the flags.
    #[inline]
    pub fn set_flags(&mut self, flags: TcpFlags) {
        self.buffer.as_mut()[field::FLAGS] = flags.0;
    }

    /// Sets the window.
    #[inline]
    pub fn set_window_len(&mut self, window: u16) {
        self.buffer.as_mut()[field::WINDOW].copy_from_slice(&window.to_be_bytes());
    }

    /// Sets the urgent pointer.
    #[inline]
    pub fn set_urgent_at(&mut self, at: u16) {
        self.buffer.as_mut()[field::URGENT].copy_from_slice(&at.to_be_bytes());
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&value.to_be_bytes());
    }

    /// Computes and stores the checksum. [`Malformed`] when the addresses are of different families.
    #[inline]
    pub fn fill_checksum(&mut self, src: &IpAddr, dst: &IpAddr) -> Result<()> {
        self.set_checksum(0);
        let sum = !self.sum(src, dst)?;
        self.set_checksum(sum);
        Ok(())
    }

    /// Payload, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        &mut self.buffer.as_mut()[start..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // SYN 198.18.0.1:40000 -> 198.18.0.2:80, seq 0x01020304, window 64240, MSS 1460 option;
    // checksum 0x7077 computed with scapy (`TCP(sport=40000, dport=80, seq=0x01020304, flags="S",
    // window=64240, options=[("MSS", 1460)])`).
    static SYN: [u8; 24] = [
        0x9c, 0x40, 0x00, 0x50, 0x01, 0x02, 0x03, 0x04, 0, 0, 0, 0, 0x60, 0x02, 0xfa, 0xf0, 0x70,
        0x77, 0, 0, 0x02, 0x04, 0x05, 0xb4,
    ];

    fn addrs() -> (IpAddr, IpAddr) {
        (IpAddr::from([198, 18, 0, 1]), IpAddr::from([198, 18, 0, 2]))
    }

    #[test]
    fn deconstruct() {
        let (s, d) = addrs();
        let p = TcpPacket::new_checked(&SYN[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port()), (40000, 80));
        assert_eq!((p.seq_number(), p.ack_number()), (0x01020304, 0));
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.flags(), TcpFlags::SYN);
        assert!(!p.flags().contains(TcpFlags::SYN | TcpFlags::ACK));
        assert_eq!((p.window_len(), p.urgent_at()), (64240, 0));
        assert_eq!(p.options(), &[2, 4, 5, 0xb4]);
        assert!(p.payload().is_empty());
        assert!(p.verify_checksum(&s, &d));
        assert!(!p.verify_checksum(&d, &IpAddr::from([198, 18, 0, 3])));
    }

    #[test]
    fn construct() {
        let (s, d) = addrs();
        let mut b = [0u8; 24];
        b[12] = 0x60;
        let mut p = TcpPacket::new_checked(&mut b[..]).unwrap();
        p.set_src_port(80);
        p.set_dst_port(40000);
        p.swap_ports();
        p.set_seq_number(0x01020304);
        p.set_ack_number(0);
        p.set_flags(TcpFlags::SYN);
        p.set_window_len(64240);
        p.set_urgent_at(0);
        b[20..24].copy_from_slice(&[2, 4, 5, 0xb4]);
        let mut p = TcpPacket::new_checked(&mut b[..]).unwrap();
        p.fill_checksum(&s, &d).unwrap();
        assert_eq!(b, SYN);
    }

    #[test]
    fn data_offset_rules() {
        assert_eq!(TcpPacket::new_checked(&SYN[..19]), Err(Malformed));
        assert_eq!(
            TcpPacket::new_checked(&SYN[..23]),
            Err(Malformed),
            "options cut"
        );
        let mut b = SYN;
        b[12] = 0x40;
        assert_eq!(
            TcpPacket::new_checked(&b[..]),
            Err(Malformed),
            "offset below 5"
        );
        b[12] = 0x50;
        let p = TcpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(p.payload().len(), 4);
    }
}
