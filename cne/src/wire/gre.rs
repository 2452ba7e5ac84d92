//! GRE (RFC 2784) with the optional key and sequence number of RFC 2890.
//!
//! Layout: flags/version word, protocol type (an EtherType), then optionally checksum + reserved (C
//! bit), key (K bit) and sequence number (S bit), in that order. `new_checked` rejects version != 0
//! and the bits RFC 2784 says a receiver must discard (bit 1, routing, and bits 4-5), and requires the
//! optional fields the flags announce, so the accessors read fixed offsets. The checksum, when present,
//! covers the GRE header and payload: emit the header with [`GreRepr::emit`], write the payload, then
//! call [`GrePacket::fill_checksum`] over the whole GRE packet.

use super::{be16, be32, checksum, view_common, EtherType, Malformed, Result};

mod field {
    use crate::wire::Field;
    pub(super) const FLAGS: Field = 0..2;
    pub(super) const PROTOCOL: Field = 2..4;
    pub(super) const OPTIONAL: usize = 4;
}

const C: u16 = 0x8000;
const K: u16 = 0x2000;
const S: u16 = 0x1000;
/// Bits 1, 4 and 5 (RFC 1701 routing, strict source route, recursion control): must be zero.
const MUST_BE_ZERO: u16 = 0x4000 | 0x0800 | 0x0400;
const VERSION: u16 = 0x0007;

/// Header length implied by a flags word.
#[inline]
fn header_len(flags: u16) -> usize {
    4 + if flags & C != 0 { 4 } else { 0 }
        + if flags & K != 0 { 4 } else { 0 }
        + if flags & S != 0 { 4 } else { 0 }
}

/// A view of a GRE packet (header and payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrePacket<T: AsRef<[u8]>> {
    buffer: T,
}

view_common!(GrePacket);

impl<T: AsRef<[u8]>> GrePacket<T> {
    /// Wraps `buffer`, checking version 0, the must-be-zero bits and that the optional fields the
    /// flags announce are present.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < field::OPTIONAL {
            return Err(Malformed);
        }
        let flags = be16(&b[field::FLAGS]);
        if flags & (MUST_BE_ZERO | VERSION) != 0 || b.len() < header_len(flags) {
            return Err(Malformed);
        }
        Ok(Self { buffer })
    }

    fn flags(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::FLAGS])
    }

    /// Whether a checksum is present.
    #[inline]
    pub fn checksum_present(&self) -> bool {
        self.flags() & C != 0
    }

    /// Whether a key is present.
    #[inline]
    pub fn key_present(&self) -> bool {
        self.flags() & K != 0
    }

    /// Whether a sequence number is present.
    #[inline]
    pub fn seq_present(&self) -> bool {
        self.flags() & S != 0
    }

    /// Protocol of the payload.
    #[inline]
    pub fn protocol(&self) -> EtherType {
        EtherType::from(be16(&self.buffer.as_ref()[field::PROTOCOL]))
    }

    /// Header length, optional fields included.
    #[inline]
    pub fn header_len(&self) -> usize {
        header_len(self.flags())
    }

    fn key_at(&self) -> usize {
        field::OPTIONAL + if self.checksum_present() { 4 } else { 0 }
    }

    fn seq_at(&self) -> usize {
        self.key_at() + if self.key_present() { 4 } else { 0 }
    }

    /// Checksum field, when present.
    #[inline]
    pub fn checksum(&self) -> Option<u16> {
        let at = field::OPTIONAL;
        self.checksum_present()
            .then(|| be16(&self.buffer.as_ref()[at..at + 2]))
    }

    /// Key, when present.
    #[inline]
    pub fn key(&self) -> Option<u32> {
        let at = self.key_at();
        self.key_present()
            .then(|| be32(&self.buffer.as_ref()[at..at + 4]))
    }

    /// Sequence number, when present.
    #[inline]
    pub fn seq(&self) -> Option<u32> {
        let at = self.seq_at();
        self.seq_present()
            .then(|| be32(&self.buffer.as_ref()[at..at + 4]))
    }

    /// The encapsulated packet.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }

    /// Whether the checksum over header and payload is correct (`true` when there is none).
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        !self.checksum_present() || checksum::data(self.buffer.as_ref()) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> GrePacket<T> {
    /// Sets the protocol of the payload.
    #[inline]
    pub fn set_protocol(&mut self, protocol: EtherType) {
        self.buffer.as_mut()[field::PROTOCOL].copy_from_slice(&u16::from(protocol).to_be_bytes());
    }

    /// Sets the key. [`Malformed`] when the header has no key field.
    #[inline]
    pub fn set_key(&mut self, key: u32) -> Result<()> {
        if !self.key_present() {
            return Err(Malformed);
        }
        let at = self.key_at();
        self.buffer.as_mut()[at..at + 4].copy_from_slice(&key.to_be_bytes());
        Ok(())
    }

    /// Sets the sequence number. [`Malformed`] when the header has no sequence field.
    #[inline]
    pub fn set_seq(&mut self, seq: u32) -> Result<()> {
        if !self.seq_present() {
            return Err(Malformed);
        }
        let at = self.seq_at();
        self.buffer.as_mut()[at..at + 4].copy_from_slice(&seq.to_be_bytes());
        Ok(())
    }

    /// Computes and stores the checksum over header and payload; does nothing when the header has no
    /// checksum field.
    #[inline]
    pub fn fill_checksum(&mut self) {
        if !self.checksum_present() {
            return;
        }
        let at = field::OPTIONAL;
        self.buffer.as_mut()[at..at + 2].copy_from_slice(&[0, 0]);
        let sum = checksum::internet(self.buffer.as_ref());
        self.buffer.as_mut()[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    }

    /// The encapsulated packet, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        &mut self.buffer.as_mut()[start..]
    }
}

/// The fields of a GRE header, to write a fresh one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GreRepr {
    /// Protocol of the payload (`EtherType::Ipv4`, `EtherType::Ipv6`, ...).
    pub protocol: EtherType,
    /// Whether to include a checksum field (written as zero; see [`GrePacket::fill_checksum`]).
    pub checksum: bool,
    /// Key (RFC 2890).
    pub key: Option<u32>,
    /// Sequence number (RFC 2890).
    pub seq: Option<u32>,
}

impl GreRepr {
    /// Bytes [`GreRepr::emit`] writes (4 to 16).
    #[inline]
    pub fn header_len(&self) -> usize {
        header_len(self.flags())
    }

    fn flags(&self) -> u16 {
        (if self.checksum { C } else { 0 })
            | (if self.key.is_some() { K } else { 0 })
            | (if self.seq.is_some() { S } else { 0 })
    }

    /// Reads a header.
    pub fn parse<T: AsRef<[u8]>>(p: &GrePacket<T>) -> Self {
        Self {
            protocol: p.protocol(),
            checksum: p.checksum_present(),
            key: p.key(),
            seq: p.seq(),
        }
    }

    /// Writes the header at the start of `buf` and returns its length.
    #[inline]
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let len = self.header_len();
        let b = buf.get_mut(..len).ok_or(Malformed)?;
        b[field::FLAGS].copy_from_slice(&self.flags().to_be_bytes());
        b[field::PROTOCOL].copy_from_slice(&u16::from(self.protocol).to_be_bytes());
        let mut at = field::OPTIONAL;
        if self.checksum {
            b[at..at + 4].copy_from_slice(&[0; 4]);
            at += 4;
        }
        if let Some(key) = self.key {
            b[at..at + 4].copy_from_slice(&key.to_be_bytes());
            at += 4;
        }
        if let Some(seq) = self.seq {
            b[at..at + 4].copy_from_slice(&seq.to_be_bytes());
        }
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // GRE with checksum, key 0x01020304 and sequence 7 carrying the 4 bytes 45 00 00 04 as "IPv4";
    // checksum 0xfeed computed with scapy (`GRE(chksum_present=1, key_present=1, seqnum_present=1,
    // key=0x01020304, sequence_number=7, proto=0x0800)`).
    static FULL: [u8; 20] = [
        0xb0, 0x00, 0x08, 0x00, 0xfe, 0xed, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x00, 0x00, 0x00,
        0x07, 0x45, 0x00, 0x00, 0x04,
    ];

    #[test]
    fn deconstruct_full() {
        let p = GrePacket::new_checked(&FULL[..]).unwrap();
        assert!(p.checksum_present() && p.key_present() && p.seq_present());
        assert_eq!(p.protocol(), EtherType::Ipv4);
        assert_eq!(p.header_len(), 16);
        assert_eq!(
            (p.checksum(), p.key(), p.seq()),
            (Some(0xfeed), Some(0x01020304), Some(7))
        );
        assert_eq!(p.payload(), &[0x45, 0, 0, 4]);
        assert!(p.verify_checksum());
    }

    #[test]
    fn emit_then_fill() {
        let repr = GreRepr::parse(&GrePacket::new_checked(&FULL[..]).unwrap());
        let mut b = [0u8; 20];
        assert_eq!(repr.emit(&mut b), Ok(16));
        b[16..].copy_from_slice(&[0x45, 0, 0, 4]);
        let mut p = GrePacket::new_checked(&mut b[..]).unwrap();
        p.fill_checksum();
        assert_eq!(b, FULL);
    }

    #[test]
    fn minimal_and_key_only() {
        let plain = GreRepr {
            protocol: EtherType::Ipv6,
            checksum: false,
            key: None,
            seq: None,
        };
        let mut b = [0u8; 4];
        assert_eq!(plain.emit(&mut b), Ok(4));
        assert_eq!(b, [0, 0, 0x86, 0xdd]);
        let p = GrePacket::new_checked(&b[..]).unwrap();
        assert_eq!((p.checksum(), p.key(), p.seq()), (None, None, None));
        assert!(p.verify_checksum());

        let keyed = GreRepr {
            key: Some(0xdead_beef),
            ..plain
        };
        let mut b = [0u8; 8];
        assert_eq!(keyed.emit(&mut b), Ok(8));
        assert_eq!(b, [0x20, 0, 0x86, 0xdd, 0xde, 0xad, 0xbe, 0xef]);
        let mut p = GrePacket::new_checked(&mut b[..]).unwrap();
        assert_eq!(p.key(), Some(0xdead_beef));
        assert_eq!(p.set_seq(1), Err(Malformed));
        p.set_key(5).unwrap();
        assert_eq!(p.key(), Some(5));
        assert_eq!(keyed.emit(&mut [0u8; 7]), Err(Malformed));
    }

    #[test]
    fn validation() {
        assert_eq!(
            GrePacket::new_checked(&FULL[..15]),
            Err(Malformed),
            "seq cut"
        );
        assert_eq!(GrePacket::new_checked(&FULL[..3]), Err(Malformed));
        for bad in [0x0001u16, 0x4000, 0x0800, 0x0400] {
            let mut b = FULL;
            let f = u16::from_be_bytes([b[0], b[1]]) | bad;
            b[..2].copy_from_slice(&f.to_be_bytes());
            assert_eq!(GrePacket::new_checked(&b[..]), Err(Malformed), "{bad:#x}");
        }
        // Reserved bits 6-12 are ignored on receipt.
        let mut b = FULL;
        b[1] |= 0x08;
        assert!(GrePacket::new_checked(&b[..]).is_ok());
    }
}
