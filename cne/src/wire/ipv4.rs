//! IPv4 headers (RFC 791): options, fragmentation (id, MF, offset), header checksum.
//!
//! `new_checked` requires version 4, a header length of at least 20 bytes, a total length covering the
//! header, and a buffer holding the whole datagram. The buffer may be longer (Ethernet pads short frames
//! to 60 bytes): [`Ipv4Packet::payload`] ends at the total length, not at the buffer's end. The
//! `rewrite_*` setters patch the header checksum incrementally (RFC 1624), which is what forwarding
//! paths want: they touch one field and keep a correct header without summing it again.

use std::net::Ipv4Addr;

use super::{array, be16, checksum, view_common, FragmentInfo, IpProtocol, Malformed, Result};

mod field {
    use crate::wire::Field;
    pub(super) const VER_IHL: usize = 0;
    pub(super) const TOS: usize = 1;
    pub(super) const LENGTH: Field = 2..4;
    pub(super) const IDENT: Field = 4..6;
    pub(super) const FLG_OFF: Field = 6..8;
    pub(super) const TTL: usize = 8;
    pub(super) const PROTOCOL: usize = 9;
    pub(super) const TTL_PROTO: Field = 8..10;
    pub(super) const CHECKSUM: Field = 10..12;
    pub(super) const SRC: Field = 12..16;
    pub(super) const DST: Field = 16..20;
    pub(super) const OPTIONS: usize = 20;
}

/// "Don't fragment" flag in the flags/offset word.
const DF: u16 = 0x4000;
/// "More fragments" flag in the flags/offset word.
const MF: u16 = 0x2000;
/// Fragment offset mask (units of 8 bytes).
const OFFSET: u16 = 0x1fff;

/// Length of a header without options.
pub const HEADER_LEN: usize = field::OPTIONS;

/// A view of an IPv4 datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

view_common!(Ipv4Packet);

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps `buffer`, checking the version, the header length and that the buffer holds `total_len`
    /// bytes.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < field::OPTIONS || b[field::VER_IHL] >> 4 != 4 {
            return Err(Malformed);
        }
        let header_len = usize::from(b[field::VER_IHL] & 0x0f) * 4;
        let total_len = usize::from(be16(&b[field::LENGTH]));
        if header_len < field::OPTIONS || total_len < header_len || b.len() < total_len {
            return Err(Malformed);
        }
        Ok(Self { buffer })
    }

    /// Version (always 4 for a checked view).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes, options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// The type-of-service byte: DSCP in the upper six bits, ECN in the lower two.
    #[inline]
    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[field::TOS]
    }

    /// Differentiated services code point.
    #[inline]
    pub fn dscp(&self) -> u8 {
        self.tos() >> 2
    }

    /// Explicit congestion notification bits.
    #[inline]
    pub fn ecn(&self) -> u8 {
        self.tos() & 0x3
    }

    /// Total length of the datagram, header included.
    #[inline]
    pub fn total_len(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::LENGTH])
    }

    /// Identification.
    #[inline]
    pub fn ident(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::IDENT])
    }

    /// "Don't fragment" flag.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        be16(&self.buffer.as_ref()[field::FLG_OFF]) & DF != 0
    }

    /// "More fragments" flag.
    #[inline]
    pub fn more_frags(&self) -> bool {
        be16(&self.buffer.as_ref()[field::FLG_OFF]) & MF != 0
    }

    /// Fragment offset in bytes.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (be16(&self.buffer.as_ref()[field::FLG_OFF]) & OFFSET) << 3
    }

    /// Fragment information when the datagram is a fragment (MF set or a non-zero offset).
    #[inline]
    pub fn fragment(&self) -> Option<FragmentInfo> {
        let info = FragmentInfo {
            ident: u32::from(self.ident()),
            offset: self.frag_offset(),
            more: self.more_frags(),
        };
        info.is_fragment().then_some(info)
    }

    /// Time to live.
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Protocol of the payload.
    #[inline]
    pub fn protocol(&self) -> IpProtocol {
        IpProtocol::from(self.buffer.as_ref()[field::PROTOCOL])
    }

    /// Header checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(array::<4>(&self.buffer.as_ref()[field::SRC]))
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(array::<4>(&self.buffer.as_ref()[field::DST]))
    }

    /// Options (empty when the header is 20 bytes).
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[field::OPTIONS..self.header_len()]
    }

    /// The payload: from the end of the header to `total_len` (link padding excluded).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..usize::from(self.total_len())]
    }

    /// Whether the header checksum is correct.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::data(&self.buffer.as_ref()[..self.header_len()]) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets the type-of-service byte (DSCP and ECN).
    #[inline]
    pub fn set_tos(&mut self, tos: u8) {
        self.buffer.as_mut()[field::TOS] = tos;
    }

    /// Sets the total length. [`Malformed`], with nothing changed, when it would not cover the header
    /// or would exceed the buffer.
    #[inline]
    pub fn set_total_len(&mut self, len: u16) -> Result<()> {
        let l = usize::from(len);
        if l < self.header_len() || l > self.buffer.as_ref().len() {
            return Err(Malformed);
        }
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }

    /// Sets the identification.
    #[inline]
    pub fn set_ident(&mut self, ident: u16) {
        self.buffer.as_mut()[field::IDENT].copy_from_slice(&ident.to_be_bytes());
    }

    /// Sets the flags/offset word: `dont_frag`, `more_frags` and `offset` in bytes (its low 3 bits are
    /// dropped; the offset field counts units of 8 bytes).
    #[inline]
    pub fn set_fragment(&mut self, dont_frag: bool, more_frags: bool, offset: u16) {
        let word = if dont_frag { DF } else { 0 }
            | if more_frags { MF } else { 0 }
            | ((offset >> 3) & OFFSET);
        self.buffer.as_mut()[field::FLG_OFF].copy_from_slice(&word.to_be_bytes());
    }

    /// Sets the time to live.
    #[inline]
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    /// Sets the protocol.
    #[inline]
    pub fn set_protocol(&mut self, protocol: IpProtocol) {
        self.buffer.as_mut()[field::PROTOCOL] = u8::from(protocol);
    }

    /// Sets the header checksum field.
    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the source address.
    #[inline]
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&addr.octets());
    }

    /// Exchanges source and destination. Neither the header checksum nor any pseudo-header sum changes.
    #[inline]
    pub fn swap_addrs(&mut self) {
        let (src, dst) = self.buffer.as_mut()[field::SRC.start..field::DST.end].split_at_mut(4);
        src.swap_with_slice(dst);
    }

    /// Computes and stores the header checksum.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let sum = checksum::internet(&self.buffer.as_ref()[..self.header_len()]);
        self.set_checksum(sum);
    }

    /// Sets the time to live and updates the header checksum incrementally.
    #[inline]
    pub fn rewrite_ttl(&mut self, ttl: u8) {
        let old = be16(&self.buffer.as_ref()[field::TTL_PROTO]);
        self.set_ttl(ttl);
        let new = be16(&self.buffer.as_ref()[field::TTL_PROTO]);
        self.set_checksum(checksum::update_u16(self.checksum(), old, new));
    }

    /// Sets the source address and updates the header checksum incrementally. Upper-layer checksums
    /// covering the pseudo-header need [`checksum::update_addr`] too.
    #[inline]
    pub fn rewrite_src_addr(&mut self, addr: Ipv4Addr) {
        let old = u32::from(self.src_addr());
        self.set_src_addr(addr);
        self.set_checksum(checksum::update_u32(self.checksum(), old, u32::from(addr)));
    }

    /// Sets the destination address and updates the header checksum incrementally.
    #[inline]
    pub fn rewrite_dst_addr(&mut self, addr: Ipv4Addr) {
        let old = u32::from(self.dst_addr());
        self.set_dst_addr(addr);
        self.set_checksum(checksum::update_u32(self.checksum(), old, u32::from(addr)));
    }

    /// The payload (up to `total_len`), writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = self.header_len()..usize::from(self.total_len());
        &mut self.buffer.as_mut()[range]
    }
}

/// The fields of an option-less IPv4 header, to write a fresh one (an outer header for encapsulation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Repr {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Protocol of the payload.
    pub protocol: IpProtocol,
    /// Length of the payload (the total length is 20 more).
    pub payload_len: u16,
    /// Time to live.
    pub ttl: u8,
    /// Type-of-service byte (DSCP and ECN).
    pub tos: u8,
    /// Identification.
    pub ident: u16,
    /// "Don't fragment" flag.
    pub dont_frag: bool,
}

impl Ipv4Repr {
    /// Length of the header [`Ipv4Repr::emit`] writes.
    pub const HEADER_LEN: usize = HEADER_LEN;

    /// Reads the fixed header of a datagram (options and fragment offset are not represented).
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv4Packet<T>) -> Self {
        Self {
            src: p.src_addr(),
            dst: p.dst_addr(),
            protocol: p.protocol(),
            payload_len: p
                .total_len()
                .saturating_sub(u16::try_from(p.header_len()).unwrap_or(u16::MAX)),
            ttl: p.ttl(),
            tos: p.tos(),
            ident: p.ident(),
            dont_frag: p.dont_frag(),
        }
    }

    /// Writes the 20-byte header, checksum included, at the start of `buf` and returns its length.
    /// [`Malformed`] when `buf` is shorter or the total length would exceed 65535.
    #[inline]
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let total = u16::try_from(HEADER_LEN)
            .ok()
            .and_then(|h| self.payload_len.checked_add(h))
            .ok_or(Malformed)?;
        let b = buf.get_mut(..HEADER_LEN).ok_or(Malformed)?;
        b[field::VER_IHL] = 0x45;
        b[field::TOS] = self.tos;
        b[field::LENGTH].copy_from_slice(&total.to_be_bytes());
        b[field::IDENT].copy_from_slice(&self.ident.to_be_bytes());
        b[field::FLG_OFF].copy_from_slice(&(if self.dont_frag { DF } else { 0 }).to_be_bytes());
        b[field::TTL] = self.ttl;
        b[field::PROTOCOL] = u8::from(self.protocol);
        b[field::CHECKSUM].copy_from_slice(&[0, 0]);
        b[field::SRC].copy_from_slice(&self.src.octets());
        b[field::DST].copy_from_slice(&self.dst.octets());
        let sum = checksum::internet(b);
        b[field::CHECKSUM].copy_from_slice(&sum.to_be_bytes());
        Ok(HEADER_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // IPv4 header of a 20-byte UDP datagram 198.18.0.1 -> 198.18.0.2, id 0x1234, DF, TTL 64; the
    // checksum 0x9c69 was computed with a plain python3 RFC 1071 loop. Followed by 20 payload bytes
    // and 6 bytes of Ethernet padding.
    static PACKET: [u8; 46] = [
        0x45, 0x00, 0x00, 0x28, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0x9c, 0x69, 198, 18, 0, 1, 198,
        18, 0, 2, // header
        1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, // payload
        0, 0, 0, 0, 0, 0, // padding
    ];

    #[test]
    fn deconstruct() {
        let p = Ipv4Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!((p.dscp(), p.ecn()), (0, 0));
        assert_eq!(p.total_len(), 40);
        assert_eq!(p.ident(), 0x1234);
        assert!(p.dont_frag() && !p.more_frags());
        assert_eq!(p.frag_offset(), 0);
        assert_eq!(p.fragment(), None);
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), IpProtocol::Udp);
        assert_eq!(p.checksum(), 0x9c69);
        assert!(p.verify_checksum());
        assert_eq!(p.src_addr(), Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(198, 18, 0, 2));
        assert!(p.options().is_empty());
        assert_eq!(p.payload(), &PACKET[20..40]);
    }

    #[test]
    fn emit_matches_capture() {
        let repr = Ipv4Repr::parse(&Ipv4Packet::new_checked(&PACKET[..]).unwrap());
        assert_eq!(repr.payload_len, 20);
        let mut buf = [0u8; 20];
        assert_eq!(repr.emit(&mut buf), Ok(20));
        assert_eq!(buf, PACKET[..20]);
        assert_eq!(repr.emit(&mut buf[..19]), Err(Malformed));
        let huge = Ipv4Repr {
            payload_len: 65516,
            ..repr
        };
        assert_eq!(huge.emit(&mut buf), Err(Malformed));
    }

    #[test]
    fn validation() {
        assert_eq!(
            Ipv4Packet::new_checked(&PACKET[..39]),
            Err(Malformed),
            "truncated"
        );
        assert_eq!(Ipv4Packet::new_checked(&PACKET[..19]), Err(Malformed));
        let mut b = PACKET;
        b[0] = 0x65;
        assert_eq!(Ipv4Packet::new_checked(&b[..]), Err(Malformed), "version");
        b[0] = 0x44;
        assert_eq!(Ipv4Packet::new_checked(&b[..]), Err(Malformed), "ihl < 5");
        b[0] = 0x4f;
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]),
            Err(Malformed),
            "ihl beyond total length"
        );
        b[0] = 0x45;
        b[3] = 19;
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]),
            Err(Malformed),
            "total < header"
        );
    }

    #[test]
    fn options_and_fragments() {
        // Header with one 4-byte option (NOP NOP NOP EOL), MF set, offset 1480, 8 payload bytes.
        let mut b = [0u8; 32];
        b[..24].copy_from_slice(&[
            0x46, 0, 0, 32, 0xab, 0xcd, 0x20, 185, 64, 17, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2, 1,
            1, 1, 0,
        ]);
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        p.fill_checksum();
        assert!(p.verify_checksum());
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.options(), &[1, 1, 1, 0]);
        assert_eq!(p.payload().len(), 8);
        assert_eq!(
            p.fragment(),
            Some(FragmentInfo {
                ident: 0xabcd,
                offset: 1480,
                more: true
            })
        );
        p.set_fragment(true, false, 0);
        assert_eq!(p.fragment(), None);
        assert!(p.dont_frag());
    }

    #[test]
    fn setters_keep_invariants_and_checksum() {
        let mut b = PACKET;
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        assert_eq!(p.set_total_len(19), Err(Malformed));
        assert_eq!(p.set_total_len(47), Err(Malformed));
        assert_eq!(p.total_len(), 40);
        p.rewrite_ttl(1);
        assert!(p.verify_checksum());
        p.rewrite_src_addr(Ipv4Addr::new(198, 19, 1, 2));
        p.rewrite_dst_addr(Ipv4Addr::new(198, 19, 3, 4));
        assert!(p.verify_checksum());
        let incremental = p.checksum();
        p.fill_checksum();
        assert_eq!(p.checksum(), incremental);
        p.swap_addrs();
        assert!(p.verify_checksum(), "swapping addresses keeps the checksum");
        assert_eq!(p.src_addr(), Ipv4Addr::new(198, 19, 3, 4));
        p.set_total_len(46).unwrap();
        assert_eq!(p.payload().len(), 26);
    }
}
