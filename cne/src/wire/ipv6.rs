//! IPv6 headers (RFC 8200) and the extension headers a forwarding path must step over: hop-by-hop
//! options, routing, fragment and destination options.
//!
//! `new_checked` requires version 6 and a buffer holding the 40-byte header plus `payload_len` bytes
//! (link padding beyond is allowed). [`Ipv6Packet::upper_layer`] walks the extension headers to find the
//! upper-layer protocol and its offset; the walk is bounded by [`MAX_EXT_HEADERS`] and by the payload
//! length, so crafted chains cannot make it loop or read past the datagram. It stops at a fragment
//! header with a non-zero offset: what follows is fragment data, not headers. Jumbograms (payload length
//! 0 with a jumbo option) do not exist on Ethernet and come out as an empty payload.

use std::net::Ipv6Addr;

use super::{array, be16, be32, view_common, FragmentInfo, IpProtocol, Malformed, Result};

mod field {
    use crate::wire::Field;
    pub(super) const VER_TC_FLOW: Field = 0..4;
    pub(super) const LENGTH: Field = 4..6;
    pub(super) const NXT_HDR: usize = 6;
    pub(super) const HOP_LIMIT: usize = 7;
    pub(super) const SRC: Field = 8..24;
    pub(super) const DST: Field = 24..40;
    pub(super) const PAYLOAD: usize = 40;
}

/// Length of the fixed header.
pub const HEADER_LEN: usize = field::PAYLOAD;

/// The most extension headers [`Ipv6Packet::upper_layer`] and the frame parser step over. Real
/// traffic carries one or two; eight is generous and keeps the walk bounded.
pub const MAX_EXT_HEADERS: usize = 8;

/// Whether `protocol` names an extension header the walk steps over.
#[inline]
pub fn is_ext_header(protocol: IpProtocol) -> bool {
    matches!(
        protocol,
        IpProtocol::HopByHop | IpProtocol::Ipv6Route | IpProtocol::Ipv6Frag | IpProtocol::Ipv6Opts
    )
}

/// Where the upper-layer header of an IPv6 datagram starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UpperLayer {
    /// Upper-layer protocol (for a non-first fragment: the next header named by the fragment header).
    pub protocol: IpProtocol,
    /// Offset of the upper-layer header (or of the fragment data) from the start of the IPv6 header.
    pub offset: usize,
    /// The fragment header's fields, when there is one.
    pub fragment: Option<FragmentInfo>,
    /// Number of extension headers stepped over.
    pub ext_headers: u8,
}

/// Walks the extension headers of `ip` (starting at the IPv6 header) up to `end`, the end of the
/// datagram. The caller has checked that `ip` holds the fixed header.
#[inline]
pub(crate) fn walk_ext(ip: &[u8], end: usize) -> Result<UpperLayer> {
    let ip = ip.get(..end).ok_or(Malformed)?;
    let mut next = *ip.get(field::NXT_HDR).ok_or(Malformed)?;
    let mut offset = field::PAYLOAD;
    let mut fragment = None;
    let mut count = 0u8;
    loop {
        match next {
            // Hop-by-hop (only right after the fixed header), routing, destination options.
            0 | 43 | 60 => {
                if next == 0 && offset != field::PAYLOAD {
                    return Err(Malformed);
                }
                let h = ip.get(offset..offset + 2).ok_or(Malformed)?;
                let len = (usize::from(h[1]) + 1) * 8;
                if offset + len > ip.len() {
                    return Err(Malformed);
                }
                next = h[0];
                offset += len;
            }
            44 => {
                if fragment.is_some() {
                    return Err(Malformed);
                }
                let h = ip.get(offset..offset + 8).ok_or(Malformed)?;
                let word = u16::from_be_bytes([h[2], h[3]]);
                let info = FragmentInfo {
                    ident: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
                    offset: word & 0xfff8,
                    more: word & 1 != 0,
                };
                fragment = Some(info);
                next = h[0];
                offset += 8;
                if info.offset != 0 {
                    count += 1;
                    break;
                }
            }
            _ => break,
        }
        count += 1;
        if usize::from(count) > MAX_EXT_HEADERS {
            return Err(Malformed);
        }
    }
    Ok(UpperLayer {
        protocol: IpProtocol::from(next),
        offset,
        fragment,
        ext_headers: count,
    })
}

/// A view of an IPv6 datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

view_common!(Ipv6Packet);

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps `buffer`, checking the version and that the buffer holds the header and `payload_len`
    /// bytes.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < field::PAYLOAD
            || b[0] >> 4 != 6
            || b.len() < field::PAYLOAD + usize::from(be16(&b[field::LENGTH]))
        {
            return Err(Malformed);
        }
        Ok(Self { buffer })
    }

    /// Version (always 6 for a checked view).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }

    /// Traffic class (DSCP and ECN).
    #[inline]
    pub fn traffic_class(&self) -> u8 {
        ((be32(&self.buffer.as_ref()[field::VER_TC_FLOW]) >> 20) & 0xff) as u8
    }

    /// Flow label (20 bits).
    #[inline]
    pub fn flow_label(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::VER_TC_FLOW]) & 0x000f_ffff
    }

    /// Payload length: everything after the fixed header, extension headers included.
    #[inline]
    pub fn payload_len(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::LENGTH])
    }

    /// Next header after the fixed header.
    #[inline]
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol::from(self.buffer.as_ref()[field::NXT_HDR])
    }

    /// Hop limit.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(array::<16>(&self.buffer.as_ref()[field::SRC]))
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(array::<16>(&self.buffer.as_ref()[field::DST]))
    }

    /// The payload (`payload_len` bytes after the fixed header; link padding excluded).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..field::PAYLOAD + usize::from(self.payload_len())]
    }

    /// Steps over the extension headers (at most [`MAX_EXT_HEADERS`]) to the upper layer.
    /// [`Malformed`] when a header runs past the payload, hop-by-hop is not first, two fragment headers
    /// appear, or the chain is longer than the bound.
    #[inline]
    pub fn upper_layer(&self) -> Result<UpperLayer> {
        walk_ext(
            self.buffer.as_ref(),
            field::PAYLOAD + usize::from(self.payload_len()),
        )
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Sets the traffic class.
    #[inline]
    pub fn set_traffic_class(&mut self, tc: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_TC_FLOW];
        let word = (be32(b) & 0xf00f_ffff) | (u32::from(tc) << 20);
        b.copy_from_slice(&word.to_be_bytes());
    }

    /// Sets the flow label (the low 20 bits of `label`).
    #[inline]
    pub fn set_flow_label(&mut self, label: u32) {
        let b = &mut self.buffer.as_mut()[field::VER_TC_FLOW];
        let word = (be32(b) & 0xfff0_0000) | (label & 0x000f_ffff);
        b.copy_from_slice(&word.to_be_bytes());
    }

    /// Sets the payload length. [`Malformed`], with nothing changed, when the buffer is too short for it.
    #[inline]
    pub fn set_payload_len(&mut self, len: u16) -> Result<()> {
        if field::PAYLOAD + usize::from(len) > self.buffer.as_ref().len() {
            return Err(Malformed);
        }
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }

    /// Sets the next header.
    #[inline]
    pub fn set_next_header(&mut self, next: IpProtocol) {
        self.buffer.as_mut()[field::NXT_HDR] = u8::from(next);
    }

    /// Sets the hop limit.
    #[inline]
    pub fn set_hop_limit(&mut self, hop_limit: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = hop_limit;
    }

    /// Sets the source address.
    #[inline]
    pub fn set_src_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&addr.octets());
    }

    /// Exchanges source and destination. Pseudo-header sums do not change.
    #[inline]
    pub fn swap_addrs(&mut self) {
        let (src, dst) = self.buffer.as_mut()[field::SRC.start..field::DST.end].split_at_mut(16);
        src.swap_with_slice(dst);
    }

    /// The payload, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = field::PAYLOAD + usize::from(self.payload_len());
        &mut self.buffer.as_mut()[field::PAYLOAD..end]
    }
}

/// A view of a hop-by-hop, routing or destination options header: next header, length in 8-byte units
/// beyond the first 8, then type-specific data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6ExtHeader<T: AsRef<[u8]>> {
    buffer: T,
}

view_common!(Ipv6ExtHeader);

impl<T: AsRef<[u8]>> Ipv6ExtHeader<T> {
    /// Wraps `buffer`, checking it holds the whole header its length byte announces.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < 2 || b.len() < (usize::from(b[1]) + 1) * 8 {
            return Err(Malformed);
        }
        Ok(Self { buffer })
    }

    /// Next header.
    #[inline]
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol::from(self.buffer.as_ref()[0])
    }

    /// Length of this header in bytes (a multiple of 8, at least 8).
    #[inline]
    pub fn header_len(&self) -> usize {
        (usize::from(self.buffer.as_ref()[1]) + 1) * 8
    }

    /// Routing type (byte 2; meaningful in a routing header).
    #[inline]
    pub fn routing_type(&self) -> u8 {
        self.buffer.as_ref()[2]
    }

    /// Segments left (byte 3; meaningful in a routing header).
    #[inline]
    pub fn segments_left(&self) -> u8 {
        self.buffer.as_ref()[3]
    }

    /// The bytes after next header and length, up to the end of this header.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[2..self.header_len()]
    }

    /// What follows this header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

/// A view of an IPv6 fragment header (8 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6FragmentHeader<T: AsRef<[u8]>> {
    buffer: T,
}

view_common!(Ipv6FragmentHeader);

impl<T: AsRef<[u8]>> Ipv6FragmentHeader<T> {
    /// Length of a fragment header.
    pub const LEN: usize = 8;

    /// Wraps `buffer`, checking it holds 8 bytes.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < Self::LEN {
            return Err(Malformed);
        }
        Ok(Self { buffer })
    }

    /// Next header of the fragmented part.
    #[inline]
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol::from(self.buffer.as_ref()[0])
    }

    /// Fragment offset in bytes.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        be16(&self.buffer.as_ref()[2..4]) & 0xfff8
    }

    /// "More fragments" flag.
    #[inline]
    pub fn more_frags(&self) -> bool {
        self.buffer.as_ref()[3] & 1 != 0
    }

    /// Identification.
    #[inline]
    pub fn ident(&self) -> u32 {
        be32(&self.buffer.as_ref()[4..8])
    }

    /// The three fields together.
    #[inline]
    pub fn info(&self) -> FragmentInfo {
        FragmentInfo {
            ident: self.ident(),
            offset: self.frag_offset(),
            more: self.more_frags(),
        }
    }

    /// What follows the header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[Self::LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6FragmentHeader<T> {
    /// Sets the next header and clears the reserved byte.
    #[inline]
    pub fn set_next_header(&mut self, next: IpProtocol) {
        let b = self.buffer.as_mut();
        b[0] = u8::from(next);
        b[1] = 0;
    }

    /// Sets offset (bytes; the low 3 bits are dropped) and the "more fragments" flag.
    #[inline]
    pub fn set_fragment(&mut self, offset: u16, more: bool) {
        let word = (offset & 0xfff8) | u16::from(more);
        self.buffer.as_mut()[2..4].copy_from_slice(&word.to_be_bytes());
    }

    /// Sets the identification.
    #[inline]
    pub fn set_ident(&mut self, ident: u32) {
        self.buffer.as_mut()[4..8].copy_from_slice(&ident.to_be_bytes());
    }
}

/// The fields of an IPv6 fixed header, to write a fresh one (an outer header for encapsulation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6Repr {
    /// Source address.
    pub src: Ipv6Addr,
    /// Destination address.
    pub dst: Ipv6Addr,
    /// Next header.
    pub next_header: IpProtocol,
    /// Payload length.
    pub payload_len: u16,
    /// Hop limit.
    pub hop_limit: u8,
    /// Traffic class.
    pub traffic_class: u8,
    /// Flow label (20 bits).
    pub flow_label: u32,
}

impl Ipv6Repr {
    /// Length of the header [`Ipv6Repr::emit`] writes.
    pub const HEADER_LEN: usize = HEADER_LEN;

    /// Reads the fixed header of a datagram.
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv6Packet<T>) -> Self {
        Self {
            src: p.src_addr(),
            dst: p.dst_addr(),
            next_header: p.next_header(),
            payload_len: p.payload_len(),
            hop_limit: p.hop_limit(),
            traffic_class: p.traffic_class(),
            flow_label: p.flow_label(),
        }
    }

    /// Writes the 40-byte header at the start of `buf` and returns its length.
    #[inline]
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let b = buf.get_mut(..HEADER_LEN).ok_or(Malformed)?;
        let word =
            (6u32 << 28) | (u32::from(self.traffic_class) << 20) | (self.flow_label & 0x000f_ffff);
        b[field::VER_TC_FLOW].copy_from_slice(&word.to_be_bytes());
        b[field::LENGTH].copy_from_slice(&self.payload_len.to_be_bytes());
        b[field::NXT_HDR] = u8::from(self.next_header);
        b[field::HOP_LIMIT] = self.hop_limit;
        b[field::SRC].copy_from_slice(&self.src.octets());
        b[field::DST].copy_from_slice(&self.dst.octets());
        Ok(HEADER_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    /// A fixed header 2001:2::1 -> 2001:2::2, tc 0xb8, flow 0x12345, hop limit 64, followed by `payload`.
    fn datagram(next: u8, payload: &[u8]) -> Vec<u8> {
        let mut b = vec![
            0x6b, 0x81, 0x23, 0x45, 0, 0, next, 64, 0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0, 1, 0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2,
        ];
        b[4..6].copy_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
        b.extend_from_slice(payload);
        b
    }

    #[test]
    fn deconstruct_and_emit() {
        let b = datagram(17, &[0xaa; 8]);
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0xb8);
        assert_eq!(p.flow_label(), 0x12345);
        assert_eq!(p.payload_len(), 8);
        assert_eq!(p.next_header(), IpProtocol::Udp);
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(p.src_addr(), addr("2001:2::1"));
        assert_eq!(p.dst_addr(), addr("2001:2::2"));
        assert_eq!(p.payload(), &[0xaa; 8]);
        let ul = p.upper_layer().unwrap();
        assert_eq!(
            ul,
            UpperLayer {
                protocol: IpProtocol::Udp,
                offset: 40,
                fragment: None,
                ext_headers: 0
            }
        );
        let mut out = [0u8; 40];
        assert_eq!(Ipv6Repr::parse(&p).emit(&mut out), Ok(40));
        assert_eq!(out[..], b[..40]);
    }

    #[test]
    fn validation() {
        let b = datagram(17, &[0; 8]);
        assert_eq!(Ipv6Packet::new_checked(&b[..47]), Err(Malformed));
        assert_eq!(Ipv6Packet::new_checked(&b[..39]), Err(Malformed));
        let mut v = b.clone();
        v[0] = 0x4b;
        assert_eq!(Ipv6Packet::new_checked(&v[..]), Err(Malformed));
        let mut padded = b.clone();
        padded.extend_from_slice(&[0; 10]);
        assert_eq!(
            Ipv6Packet::new_checked(&padded[..])
                .unwrap()
                .payload()
                .len(),
            8
        );
    }

    #[test]
    fn extension_chain() {
        // Hop-by-hop (8 bytes, PadN), routing (type 4, no segments left, 24 bytes), destination
        // options (8 bytes), then TCP.
        let mut payload = vec![43, 0, 1, 4, 0, 0, 0, 0];
        payload.extend_from_slice(&[60, 2, 4, 0]);
        payload.extend_from_slice(&[0; 20]);
        payload.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]);
        payload.extend_from_slice(&[0; 20]);
        let b = datagram(0, &payload);
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        let ul = p.upper_layer().unwrap();
        assert_eq!(ul.protocol, IpProtocol::Tcp);
        assert_eq!(ul.offset, 40 + 8 + 24 + 8);
        assert_eq!(ul.ext_headers, 3);
        let routing = Ipv6ExtHeader::new_checked(&b[48..]).unwrap();
        assert_eq!(routing.next_header(), IpProtocol::Ipv6Opts);
        assert_eq!(
            (
                routing.header_len(),
                routing.routing_type(),
                routing.segments_left()
            ),
            (24, 4, 0)
        );
        assert_eq!(routing.data().len(), 22);
    }

    #[test]
    fn fragments() {
        // First fragment of a UDP datagram: fragment header, offset 0, M, id 0xdeadbeef.
        let mut payload = vec![17, 0, 0x00, 0x01, 0xde, 0xad, 0xbe, 0xef];
        payload.extend_from_slice(&[0; 16]);
        let b = datagram(44, &payload);
        let ul = Ipv6Packet::new_checked(&b[..])
            .unwrap()
            .upper_layer()
            .unwrap();
        let first = FragmentInfo {
            ident: 0xdeadbeef,
            offset: 0,
            more: true,
        };
        assert_eq!(
            (ul.protocol, ul.offset, ul.fragment),
            (IpProtocol::Udp, 48, Some(first))
        );

        // A later fragment whose data happens to look like a destination options header: the walk stops
        // at the fragment header.
        let mut payload = vec![60, 0, 0x05, 0xa8, 0xde, 0xad, 0xbe, 0xef];
        payload.extend_from_slice(&[17, 0, 0, 0, 0, 0, 0, 0]);
        let b = datagram(44, &payload);
        let frag = Ipv6FragmentHeader::new_checked(&b[40..]).unwrap();
        assert_eq!(
            (frag.frag_offset(), frag.more_frags(), frag.ident()),
            (1448, false, 0xdeadbeef)
        );
        let ul = Ipv6Packet::new_checked(&b[..])
            .unwrap()
            .upper_layer()
            .unwrap();
        assert_eq!((ul.protocol, ul.offset), (IpProtocol::Ipv6Opts, 48));
        assert!(ul.fragment.unwrap().is_fragment() && !ul.fragment.unwrap().is_first());

        let mut h = [0u8; 8];
        let mut f = Ipv6FragmentHeader::new_checked(&mut h[..]).unwrap();
        f.set_next_header(IpProtocol::Tcp);
        f.set_fragment(1448, true);
        f.set_ident(7);
        assert_eq!(h, [6, 0, 0x05, 0xa9, 0, 0, 0, 7]);
    }

    #[test]
    fn bad_chains_rejected() {
        // Hop-by-hop after a destination options header.
        let b = datagram(60, &[0, 0, 1, 4, 0, 0, 0, 0, 17, 0, 1, 4, 0, 0, 0, 0]);
        assert_eq!(
            Ipv6Packet::new_checked(&b[..]).unwrap().upper_layer(),
            Err(Malformed)
        );
        // Header longer than the payload.
        let b = datagram(60, &[17, 1, 1, 4, 0, 0, 0, 0]);
        assert_eq!(
            Ipv6Packet::new_checked(&b[..]).unwrap().upper_layer(),
            Err(Malformed)
        );
        // Two fragment headers.
        let b = datagram(44, &[44, 0, 0, 1, 0, 0, 0, 1, 17, 0, 0, 1, 0, 0, 0, 1]);
        assert_eq!(
            Ipv6Packet::new_checked(&b[..]).unwrap().upper_layer(),
            Err(Malformed)
        );
        // A chain longer than the bound.
        let mut payload = Vec::new();
        for _ in 0..MAX_EXT_HEADERS {
            payload.extend_from_slice(&[60, 0, 1, 4, 0, 0, 0, 0]);
        }
        payload.extend_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]);
        let b = datagram(60, &payload);
        assert_eq!(
            Ipv6Packet::new_checked(&b[..]).unwrap().upper_layer(),
            Err(Malformed)
        );
        // Exactly the bound is fine.
        let b = datagram(60, &payload[8..]);
        let ul = Ipv6Packet::new_checked(&b[..])
            .unwrap()
            .upper_layer()
            .unwrap();
        assert_eq!(
            (ul.protocol, usize::from(ul.ext_headers)),
            (IpProtocol::Udp, MAX_EXT_HEADERS)
        );
    }

    #[test]
    fn setters() {
        let mut b = datagram(17, &[0; 8]);
        let mut p = Ipv6Packet::new_checked(&mut b[..]).unwrap();
        p.set_traffic_class(0x01);
        p.set_flow_label(0xfffff);
        assert_eq!(
            (p.version(), p.traffic_class(), p.flow_label()),
            (6, 0x01, 0xfffff)
        );
        assert_eq!(p.set_payload_len(9), Err(Malformed));
        p.set_payload_len(4).unwrap();
        assert_eq!(p.payload().len(), 4);
        p.swap_addrs();
        assert_eq!(p.src_addr(), addr("2001:2::2"));
        p.set_hop_limit(255);
        p.set_next_header(IpProtocol::Icmpv6);
        assert_eq!((p.hop_limit(), p.next_header()), (255, IpProtocol::Icmpv6));
    }
}
