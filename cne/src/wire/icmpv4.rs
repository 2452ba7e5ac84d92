//! ICMP for IPv4 (RFC 792): the 8-byte header and the echo fields.
//!
//! The checksum covers the whole ICMP message and no pseudo-header, so the view must be built over
//! exactly the IP payload (use [`super::Ipv4Packet::payload`], which excludes link padding).

use super::{be16, checksum, enum_with_unknown, view_common, Malformed, Result};

mod field {
    use crate::wire::Field;
    pub(super) const TYPE: usize = 0;
    pub(super) const CODE: usize = 1;
    pub(super) const TYPE_CODE: Field = 0..2;
    pub(super) const CHECKSUM: Field = 2..4;
    pub(super) const ECHO_IDENT: Field = 4..6;
    pub(super) const ECHO_SEQ: Field = 6..8;
    pub(super) const NEXT_HOP_MTU: Field = 6..8;
    pub(super) const DATA: usize = 8;
}

enum_with_unknown! {
    /// ICMPv4 message type.
    pub enum Icmpv4Type(u8) {
        /// Echo reply.
        EchoReply = 0,
        /// Destination unreachable.
        DstUnreachable = 3,
        /// Redirect.
        Redirect = 5,
        /// Echo request.
        EchoRequest = 8,
        /// Router advertisement.
        RouterAdvert = 9,
        /// Router solicitation.
        RouterSolicit = 10,
        /// Time exceeded.
        TimeExceeded = 11,
        /// Parameter problem.
        ParamProblem = 12,
        /// Timestamp request.
        Timestamp = 13,
        /// Timestamp reply.
        TimestampReply = 14,
    }
}

/// A view of an ICMPv4 message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmpv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

view_common!(Icmpv4Packet);

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
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
    pub fn msg_type(&self) -> Icmpv4Type {
        Icmpv4Type::from(self.buffer.as_ref()[field::TYPE])
    }

    /// Message code.
    #[inline]
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// Type and code as one 16-bit word (the unit an incremental checksum update works on).
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

    /// Next-hop MTU of a "fragmentation needed" destination unreachable (RFC 1191).
    #[inline]
    pub fn next_hop_mtu(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::NEXT_HOP_MTU])
    }

    /// Everything after the 8-byte header (echo data, or the invoking datagram of an error).
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[field::DATA..]
    }

    /// Whether the checksum over the whole message is correct.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::data(self.buffer.as_ref()) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv4Packet<T> {
    /// Sets the message type.
    #[inline]
    pub fn set_msg_type(&mut self, t: Icmpv4Type) {
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

    /// Sets type and code and updates the checksum incrementally (RFC 1624), as turning an echo
    /// request into a reply needs.
    #[inline]
    pub fn rewrite_type_code(&mut self, t: Icmpv4Type, code: u8) {
        let old = self.type_code();
        self.set_msg_type(t);
        self.set_code(code);
        let sum = checksum::update_u16(self.checksum(), old, self.type_code());
        self.set_checksum(sum);
    }

    /// Computes and stores the checksum over the whole message.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let sum = checksum::internet(self.buffer.as_ref());
        self.set_checksum(sum);
    }

    /// Everything after the header, writable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::DATA..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ICMP echo request, id 0x1c46, seq 1, 8 data bytes; checksum 0x4a23 computed independently (a
    // python3 RFC 1071 loop).
    static ECHO: [u8; 16] = [
        0x08, 0x00, 0x4a, 0x23, 0x1c, 0x46, 0x00, 0x01, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67,
        0x68,
    ];

    #[test]
    fn deconstruct() {
        let p = Icmpv4Packet::new_checked(&ECHO[..]).unwrap();
        assert_eq!(p.msg_type(), Icmpv4Type::EchoRequest);
        assert_eq!(p.code(), 0);
        assert_eq!(p.checksum(), 0x4a23);
        assert!(p.verify_checksum());
        assert_eq!((p.echo_ident(), p.echo_seq()), (0x1c46, 1));
        assert_eq!(p.data(), b"abcdefgh");
        assert_eq!(Icmpv4Packet::new_checked(&ECHO[..7]), Err(Malformed));
    }

    #[test]
    fn request_to_reply() {
        let mut b = ECHO;
        let mut p = Icmpv4Packet::new_checked(&mut b[..]).unwrap();
        p.rewrite_type_code(Icmpv4Type::EchoReply, 0);
        assert!(p.verify_checksum());
        let incremental = p.checksum();
        p.fill_checksum();
        assert_eq!(p.checksum(), incremental);
        assert_eq!(p.msg_type(), Icmpv4Type::EchoReply);
    }
}
