//! ICMP for IPv6 (RFC 4443) and the neighbour discovery messages a host must answer (RFC 4861):
//! echo, packet too big, neighbour solicitation and advertisement with link-layer address options.
//!
//! The ICMPv6 checksum covers the IPv6 pseudo-header, so checksum methods take the two addresses. Views
//! must be built over exactly the ICMPv6 message (the IPv6 payload after any extension headers).
//! [`NdpNeighbor::new_checked`] also validates the option chain (every option has a non-zero length and
//! fits), so iterating options afterwards cannot fail.

use core::ops::BitOr;
use std::net::Ipv6Addr;

use super::{
    array, be16, be32, checksum, enum_with_unknown, view_common, IpProtocol, MacAddr, Malformed,
    Result,
};

mod field {
    use crate::wire::Field;
    pub(super) const TYPE: usize = 0;
    pub(super) const CODE: usize = 1;
    pub(super) const TYPE_CODE: Field = 0..2;
    pub(super) const CHECKSUM: Field = 2..4;
    pub(super) const ECHO_IDENT: Field = 4..6;
    pub(super) const ECHO_SEQ: Field = 6..8;
    pub(super) const MTU: Field = 4..8;
    pub(super) const DATA: usize = 8;
    pub(super) const NDP_FLAGS: usize = 4;
    pub(super) const NDP_RESERVED: Field = 4..8;
    pub(super) const NDP_TARGET: Field = 8..24;
    pub(super) const NDP_OPTIONS: usize = 24;
}

enum_with_unknown! {
    /// ICMPv6 message type.
    pub enum Icmpv6Type(u8) {
        /// Destination unreachable.
        DstUnreachable = 1,
        /// Packet too big.
        PacketTooBig = 2,
        /// Time exceeded.
        TimeExceeded = 3,
        /// Parameter problem.
        ParamProblem = 4,
        /// Echo request.
        EchoRequest = 128,
        /// Echo reply.
        EchoReply = 129,
        /// Multicast listener query.
        MldQuery = 130,
        /// Multicast listener report (version 1).
        MldReport = 131,
        /// Multicast listener done.
        MldDone = 132,
        /// Router solicitation.
        RouterSolicit = 133,
        /// Router advertisement.
        RouterAdvert = 134,
        /// Neighbour solicitation.
        NeighborSolicit = 135,
        /// Neighbour advertisement.
        NeighborAdvert = 136,
        /// Redirect.
        Redirect = 137,
        /// Multicast listener report (version 2).
        MldV2Report = 143,
    }
}

enum_with_unknown! {
    /// Neighbour discovery option type.
    pub enum NdpOptionType(u8) {
        /// Source link-layer address.
        SourceLinkAddr = 1,
        /// Target link-layer address.
        TargetLinkAddr = 2,
        /// Prefix information.
        PrefixInfo = 3,
        /// Redirected header.
        RedirectedHeader = 4,
        /// MTU.
        Mtu = 5,
        /// Nonce (RFC 3971).
        Nonce = 14,
    }
}

/// The solicited-node multicast address of `addr` (RFC 4291 section 2.7.1): ff02::1:ff00:0 with the
/// low 24 bits of `addr`. Neighbour solicitations for `addr` are sent there.
#[inline]
pub fn solicited_node(addr: &Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, o[13], o[14], o[15],
    ])
}

/// The sum an ICMPv6 checksum starts from: the pseudo-header for a message of `len` bytes.
#[inline]
fn pseudo(src: &Ipv6Addr, dst: &Ipv6Addr, len: usize) -> u16 {
    // Views and representations here are built from IPv6 payloads, which are below 2^16 bytes; the
    // saturation can never take effect.
    checksum::pseudo_header_v6(
        src,
        dst,
        IpProtocol::Icmpv6,
        u32::try_from(len).unwrap_or(u32::MAX),
    )
}

/// A view of an ICMPv6 message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmpv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

view_common!(Icmpv6Packet);

impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    /// Length of the header.
    pub const HEADER_LEN: usize = field::DATA;

    /// Wraps `buffer` (the whole message), checking it holds the 8-byte header.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < field::DATA {
            return Err(Malformed);
        }
        Ok(Self { buffer })
    }

    /// Message type.
    #[inline]
    pub fn msg_type(&self) -> Icmpv6Type {
        Icmpv6Type::from(self.buffer.as_ref()[field::TYPE])
    }

    /// Message code.
    #[inline]
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// Type and code as one 16-bit word.
    #[inline]
    pub fn type_code(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::TYPE_CODE])
    }

    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// Echo identifier (echo request and reply).
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::ECHO_IDENT])
    }

    /// Echo sequence number (echo request and reply).
    #[inline]
    pub fn echo_seq(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::ECHO_SEQ])
    }

    /// MTU of a packet-too-big message.
    #[inline]
    pub fn mtu(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::MTU])
    }

    /// Everything after the 8-byte header (echo data, or as much of the invoking packet as fits).
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[field::DATA..]
    }

    /// Whether the checksum over pseudo-header and message is correct.
    #[inline]
    pub fn verify_checksum(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        let b = self.buffer.as_ref();
        checksum::combine(&[pseudo(src, dst, b.len()), checksum::data(b)]) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv6Packet<T> {
    /// Sets the message type.
    #[inline]
    pub fn set_msg_type(&mut self, t: Icmpv6Type) {
        self.buffer.as_mut()[field::TYPE] = u8::from(t);
    }

    /// Sets the message code.
    #[inline]
    pub fn set_code(&mut self, code: u8) {
        self.buffer.as_mut()[field::CODE] = code;
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the echo identifier.
    #[inline]
    pub fn set_echo_ident(&mut self, ident: u16) {
        self.buffer.as_mut()[field::ECHO_IDENT].copy_from_slice(&ident.to_be_bytes());
    }

    /// Sets the echo sequence number.
    #[inline]
    pub fn set_echo_seq(&mut self, seq: u16) {
        self.buffer.as_mut()[field::ECHO_SEQ].copy_from_slice(&seq.to_be_bytes());
    }

    /// Sets the MTU of a packet-too-big message.
    #[inline]
    pub fn set_mtu(&mut self, mtu: u32) {
        self.buffer.as_mut()[field::MTU].copy_from_slice(&mtu.to_be_bytes());
    }

    /// Sets type and code and updates the checksum incrementally (RFC 1624).
    #[inline]
    pub fn rewrite_type_code(&mut self, t: Icmpv6Type, code: u8) {
        let old = self.type_code();
        self.set_msg_type(t);
        self.set_code(code);
        let sum = checksum::update_u16(self.checksum(), old, self.type_code());
        self.set_checksum(sum);
    }

    /// Computes and stores the checksum over pseudo-header and message.
    #[inline]
    pub fn fill_checksum(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        self.set_checksum(0);
        let b = self.buffer.as_ref();
        let sum = !checksum::combine(&[pseudo(src, dst, b.len()), checksum::data(b)]);
        self.set_checksum(sum);
    }

    /// Everything after the header, writable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::DATA..]
    }
}

/// Flags of a neighbour advertisement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NdpFlags(pub u8);

impl NdpFlags {
    /// The sender is a router.
    pub const ROUTER: NdpFlags = NdpFlags(0x80);
    /// Sent in response to a solicitation.
    pub const SOLICITED: NdpFlags = NdpFlags(0x40);
    /// Override an existing cache entry.
    pub const OVERRIDE: NdpFlags = NdpFlags(0x20);

    /// Whether every flag of `other` is set.
    #[inline]
    pub const fn contains(self, other: NdpFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for NdpFlags {
    type Output = NdpFlags;
    fn bitor(self, rhs: NdpFlags) -> NdpFlags {
        NdpFlags(self.0 | rhs.0)
    }
}

/// One neighbour discovery option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NdpOption<'a> {
    /// Option type.
    pub kind: NdpOptionType,
    /// The option's bytes after type and length.
    pub data: &'a [u8],
}

/// Iterator over the options of a validated neighbour discovery message.
#[derive(Debug, Clone)]
pub struct NdpOptions<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for NdpOptions<'a> {
    type Item = NdpOption<'a>;

    fn next(&mut self) -> Option<NdpOption<'a>> {
        let len = usize::from(*self.rest.get(1)?) * 8;
        if len == 0 {
            return None;
        }
        let (opt, rest) = self.rest.split_at_checked(len)?;
        self.rest = rest;
        Some(NdpOption {
            kind: NdpOptionType::from(opt[0]),
            data: &opt[2..],
        })
    }
}

/// Checks an option chain: each option at least 8 bytes, non-zero length, inside the buffer. The walk
/// advances by at least 8 bytes per step, so it is bounded by the message length.
fn check_options(mut rest: &[u8]) -> Result<()> {
    while !rest.is_empty() {
        let len = usize::from(*rest.get(1).ok_or(Malformed)?) * 8;
        if len == 0 || len > rest.len() {
            return Err(Malformed);
        }
        rest = &rest[len..];
    }
    Ok(())
}

/// A view of a neighbour solicitation or advertisement: header, flags (advertisement), target address
/// and options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NdpNeighbor<T: AsRef<[u8]>> {
    buffer: T,
}

view_common!(NdpNeighbor);

impl<T: AsRef<[u8]>> NdpNeighbor<T> {
    /// Length of the message without options.
    pub const LEN: usize = field::NDP_OPTIONS;

    /// Wraps `buffer` (the whole ICMPv6 message), checking it is a neighbour solicitation or
    /// advertisement of at least 24 bytes with a well-formed option chain.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < field::NDP_OPTIONS || !matches!(b[field::TYPE], 135 | 136) {
            return Err(Malformed);
        }
        check_options(&b[field::NDP_OPTIONS..])?;
        Ok(Self { buffer })
    }

    /// Message type: [`Icmpv6Type::NeighborSolicit`] or [`Icmpv6Type::NeighborAdvert`].
    #[inline]
    pub fn msg_type(&self) -> Icmpv6Type {
        Icmpv6Type::from(self.buffer.as_ref()[field::TYPE])
    }

    /// Message code (0 in valid messages).
    #[inline]
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// Advertisement flags (zero in a solicitation).
    #[inline]
    pub fn flags(&self) -> NdpFlags {
        NdpFlags(self.buffer.as_ref()[field::NDP_FLAGS] & 0xe0)
    }

    /// Target address.
    #[inline]
    pub fn target_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(array::<16>(&self.buffer.as_ref()[field::NDP_TARGET]))
    }

    /// The options.
    #[inline]
    pub fn options(&self) -> NdpOptions<'_> {
        NdpOptions {
            rest: &self.buffer.as_ref()[field::NDP_OPTIONS..],
        }
    }

    fn link_addr(&self, kind: NdpOptionType) -> Option<MacAddr> {
        self.options()
            .find(|o| o.kind == kind && o.data.len() == 6)
            .map(|o| MacAddr(array(o.data)))
    }

    /// The source link-layer address option (Ethernet), if present.
    #[inline]
    pub fn source_link_addr(&self) -> Option<MacAddr> {
        self.link_addr(NdpOptionType::SourceLinkAddr)
    }

    /// The target link-layer address option (Ethernet), if present.
    #[inline]
    pub fn target_link_addr(&self) -> Option<MacAddr> {
        self.link_addr(NdpOptionType::TargetLinkAddr)
    }

    /// Whether the checksum over pseudo-header and message is correct.
    #[inline]
    pub fn verify_checksum(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        let b = self.buffer.as_ref();
        checksum::combine(&[pseudo(src, dst, b.len()), checksum::data(b)]) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> NdpNeighbor<T> {
    /// Sets the advertisement flags (and clears the reserved bits).
    #[inline]
    pub fn set_flags(&mut self, flags: NdpFlags) {
        let b = &mut self.buffer.as_mut()[field::NDP_RESERVED];
        b.copy_from_slice(&[flags.0 & 0xe0, 0, 0, 0]);
    }

    /// Sets the target address.
    #[inline]
    pub fn set_target_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::NDP_TARGET].copy_from_slice(&addr.octets());
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&value.to_be_bytes());
    }

    /// Computes and stores the checksum over pseudo-header and message.
    #[inline]
    pub fn fill_checksum(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        self.set_checksum(0);
        let b = self.buffer.as_ref();
        let sum = !checksum::combine(&[pseudo(src, dst, b.len()), checksum::data(b)]);
        self.set_checksum(sum);
    }
}

/// Writes header, reserved/flags word, target and an optional link-layer address option, then the
/// checksum; shared by the two representations below.
fn emit_neighbor(
    buf: &mut [u8],
    msg_type: Icmpv6Type,
    flags: NdpFlags,
    target: &Ipv6Addr,
    option: Option<(NdpOptionType, MacAddr)>,
    src: &Ipv6Addr,
    dst: &Ipv6Addr,
) -> Result<usize> {
    let len = field::NDP_OPTIONS + if option.is_some() { 8 } else { 0 };
    let b = buf.get_mut(..len).ok_or(Malformed)?;
    b[field::TYPE] = u8::from(msg_type);
    b[field::CODE] = 0;
    b[field::CHECKSUM].copy_from_slice(&[0, 0]);
    b[field::NDP_RESERVED].copy_from_slice(&[flags.0 & 0xe0, 0, 0, 0]);
    b[field::NDP_TARGET].copy_from_slice(&target.octets());
    if let Some((kind, mac)) = option {
        let o = &mut b[field::NDP_OPTIONS..];
        o[0] = u8::from(kind);
        o[1] = 1;
        o[2..8].copy_from_slice(&mac.0);
    }
    let sum = !checksum::combine(&[pseudo(src, dst, len), checksum::data(b)]);
    b[field::CHECKSUM].copy_from_slice(&sum.to_be_bytes());
    Ok(len)
}

/// A neighbour solicitation to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NeighborSolicitRepr {
    /// The address being resolved.
    pub target: Ipv6Addr,
    /// Our link-layer address (omitted in duplicate address detection).
    pub source_link_addr: Option<MacAddr>,
}

impl NeighborSolicitRepr {
    /// Bytes [`NeighborSolicitRepr::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        field::NDP_OPTIONS
            + if self.source_link_addr.is_some() {
                8
            } else {
                0
            }
    }

    /// Writes the message with its checksum for the IPv6 addresses `src` and `dst`; returns its length.
    pub fn emit(&self, buf: &mut [u8], src: &Ipv6Addr, dst: &Ipv6Addr) -> Result<usize> {
        let opt = self
            .source_link_addr
            .map(|m| (NdpOptionType::SourceLinkAddr, m));
        emit_neighbor(
            buf,
            Icmpv6Type::NeighborSolicit,
            NdpFlags(0),
            &self.target,
            opt,
            src,
            dst,
        )
    }
}

/// A neighbour advertisement to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NeighborAdvertRepr {
    /// Router, solicited and override flags.
    pub flags: NdpFlags,
    /// The address being advertised.
    pub target: Ipv6Addr,
    /// The link-layer address of the target.
    pub target_link_addr: Option<MacAddr>,
}

impl NeighborAdvertRepr {
    /// Bytes [`NeighborAdvertRepr::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        field::NDP_OPTIONS
            + if self.target_link_addr.is_some() {
                8
            } else {
                0
            }
    }

    /// Writes the message with its checksum for the IPv6 addresses `src` and `dst`; returns its length.
    pub fn emit(&self, buf: &mut [u8], src: &Ipv6Addr, dst: &Ipv6Addr) -> Result<usize> {
        let opt = self
            .target_link_addr
            .map(|m| (NdpOptionType::TargetLinkAddr, m));
        emit_neighbor(
            buf,
            Icmpv6Type::NeighborAdvert,
            self.flags,
            &self.target,
            opt,
            src,
            dst,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    // ICMPv6 echo request 2001:2::1 -> 2001:2::2, id 0x002a, seq 1, data "abcd"; checksum 0x7abe
    // computed with scapy (`ICMPv6EchoRequest(id=42, seq=1, data=b"abcd")`).
    static ECHO: [u8; 12] = [
        0x80, 0x00, 0x7a, 0xbe, 0x00, 0x2a, 0x00, 0x01, 0x61, 0x62, 0x63, 0x64,
    ];

    // Neighbour solicitation from 2001:2::1 (MAC 02:00:00:00:00:01) to ff02::1:ff00:2 for 2001:2::2
    // with a source link-layer address option; checksum 0x3793 computed with scapy.
    static NS: [u8; 32] = [
        0x87, 0x00, 0x37, 0x93, 0, 0, 0, 0, 0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2,
        0x01, 0x01, 0x02, 0, 0, 0, 0, 0x01,
    ];

    #[test]
    fn echo() {
        let (s, d) = (addr("2001:2::1"), addr("2001:2::2"));
        let p = Icmpv6Packet::new_checked(&ECHO[..]).unwrap();
        assert_eq!(p.msg_type(), Icmpv6Type::EchoRequest);
        assert_eq!(
            (p.echo_ident(), p.echo_seq(), p.data()),
            (42, 1, &b"abcd"[..])
        );
        assert!(p.verify_checksum(&s, &d));
        assert!(!p.verify_checksum(&d, &addr("2001:2::3")));
        let mut b = ECHO;
        let mut p = Icmpv6Packet::new_checked(&mut b[..]).unwrap();
        p.rewrite_type_code(Icmpv6Type::EchoReply, 0);
        assert!(
            p.verify_checksum(&d, &s),
            "addresses swapped, same pseudo-header sum"
        );
        let incremental = p.checksum();
        p.fill_checksum(&d, &s);
        assert_eq!(p.checksum(), incremental);
    }

    #[test]
    fn packet_too_big() {
        let mut b = [0u8; 8 + 48];
        let mut p = Icmpv6Packet::new_checked(&mut b[..]).unwrap();
        p.set_msg_type(Icmpv6Type::PacketTooBig);
        p.set_mtu(1280);
        p.fill_checksum(&addr("2001:2::1"), &addr("2001:2::2"));
        assert_eq!(p.mtu(), 1280);
        assert_eq!(p.data().len(), 48);
        assert!(p.verify_checksum(&addr("2001:2::1"), &addr("2001:2::2")));
    }

    #[test]
    fn neighbor_solicitation() {
        let src = addr("2001:2::1");
        let dst = solicited_node(&addr("2001:2::2"));
        assert_eq!(dst, addr("ff02::1:ff00:2"));
        let ns = NdpNeighbor::new_checked(&NS[..]).unwrap();
        assert_eq!(ns.msg_type(), Icmpv6Type::NeighborSolicit);
        assert_eq!(ns.target_addr(), addr("2001:2::2"));
        assert_eq!(ns.source_link_addr(), Some(MacAddr([2, 0, 0, 0, 0, 1])));
        assert_eq!(ns.target_link_addr(), None);
        assert!(ns.verify_checksum(&src, &dst));
        let repr = NeighborSolicitRepr {
            target: addr("2001:2::2"),
            source_link_addr: Some(MacAddr([2, 0, 0, 0, 0, 1])),
        };
        let mut out = [0u8; 32];
        assert_eq!(repr.emit(&mut out, &src, &dst), Ok(32));
        assert_eq!(out, NS);
        assert_eq!(repr.emit(&mut out[..31], &src, &dst), Err(Malformed));
    }

    #[test]
    fn neighbor_advertisement() {
        let (src, dst) = (addr("2001:2::2"), addr("2001:2::1"));
        let repr = NeighborAdvertRepr {
            flags: NdpFlags::SOLICITED | NdpFlags::OVERRIDE,
            target: src,
            target_link_addr: Some(MacAddr([2, 0, 0, 0, 0, 2])),
        };
        let mut out = [0u8; 32];
        assert_eq!(repr.emit(&mut out, &src, &dst), Ok(32));
        let na = NdpNeighbor::new_checked(&out[..]).unwrap();
        assert_eq!(na.msg_type(), Icmpv6Type::NeighborAdvert);
        assert!(na
            .flags()
            .contains(NdpFlags::SOLICITED | NdpFlags::OVERRIDE));
        assert!(!na.flags().contains(NdpFlags::ROUTER));
        assert_eq!(na.target_link_addr(), Some(MacAddr([2, 0, 0, 0, 0, 2])));
        assert!(na.verify_checksum(&src, &dst));
    }

    #[test]
    fn bad_options_rejected() {
        let mut b = NS;
        b[25] = 0;
        assert_eq!(
            NdpNeighbor::new_checked(&b[..]),
            Err(Malformed),
            "zero-length option"
        );
        b[25] = 2;
        assert_eq!(
            NdpNeighbor::new_checked(&b[..]),
            Err(Malformed),
            "option past the end"
        );
        assert_eq!(
            NdpNeighbor::new_checked(&NS[..25]),
            Err(Malformed),
            "option cut short"
        );
        assert_eq!(NdpNeighbor::new_checked(&NS[..23]), Err(Malformed));
        assert!(NdpNeighbor::new_checked(&NS[..24]).is_ok());
        assert_eq!(
            NdpNeighbor::new_checked(&ECHO[..]),
            Err(Malformed),
            "not NS/NA"
        );
    }
}
