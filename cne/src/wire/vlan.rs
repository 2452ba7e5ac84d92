//! IEEE 802.1Q (C-tag, TPID 0x8100) and 802.1ad (S-tag, TPID 0x88a8) VLAN tags, stacked.
//!
//! A tag is the 2-byte TPID where the EtherType would be, then a 2-byte TCI (priority, drop-eligible
//! bit, 12-bit VLAN id), then the next EtherType. [`VlanTag`] views the 4 bytes after a TPID: the TCI and
//! the EtherType that follows. [`walk`] skips at most [`MAX_TAGS`] tags (an S-tag over a C-tag, the
//! deepest stack 802.1ad defines), so a crafted frame cannot make a parser loop; a frame with deeper
//! stacks reports the remaining TPID as its EtherType and callers treat it as unsupported.

use super::{be16, view_common, EtherType, Malformed, Result};

mod field {
    use crate::wire::Field;
    pub(super) const TCI: Field = 0..2;
    pub(super) const ETHERTYPE: Field = 2..4;
    pub(super) const PAYLOAD: usize = 4;
}

/// The deepest stack of tags [`walk`] skips.
pub const MAX_TAGS: usize = 2;

/// Whether `ethertype` is a VLAN TPID (802.1Q or 802.1ad).
#[inline]
pub fn is_tpid(ethertype: EtherType) -> bool {
    matches!(ethertype, EtherType::Vlan | EtherType::QinQ)
}

/// A view of one VLAN tag: the TCI and the EtherType after it (the bytes that follow a TPID).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanTag<T: AsRef<[u8]>> {
    buffer: T,
}

view_common!(VlanTag);

impl<T: AsRef<[u8]>> VlanTag<T> {
    /// Bytes a tag occupies after its TPID.
    pub const LEN: usize = field::PAYLOAD;

    /// Wraps `buffer`, checking it holds the TCI and the next EtherType.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < field::PAYLOAD {
            return Err(Malformed);
        }
        Ok(Self { buffer })
    }

    /// The whole tag control information.
    #[inline]
    pub fn tci(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::TCI])
    }

    /// Priority code point (3 bits).
    #[inline]
    pub fn pcp(&self) -> u8 {
        (self.tci() >> 13) as u8
    }

    /// Drop eligible indicator.
    #[inline]
    pub fn dei(&self) -> bool {
        self.tci() & 0x1000 != 0
    }

    /// VLAN identifier (12 bits).
    #[inline]
    pub fn vid(&self) -> u16 {
        self.tci() & 0x0fff
    }

    /// EtherType after the tag (another TPID when tags are stacked).
    #[inline]
    pub fn ethertype(&self) -> EtherType {
        EtherType::from(be16(&self.buffer.as_ref()[field::ETHERTYPE]))
    }

    /// Everything after the tag.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VlanTag<T> {
    /// Sets the whole tag control information.
    #[inline]
    pub fn set_tci(&mut self, tci: u16) {
        self.buffer.as_mut()[field::TCI].copy_from_slice(&tci.to_be_bytes());
    }

    /// Sets the priority code point (the low 3 bits of `pcp`).
    #[inline]
    pub fn set_pcp(&mut self, pcp: u8) {
        self.set_tci((self.tci() & 0x1fff) | (u16::from(pcp & 0x7) << 13));
    }

    /// Sets the drop eligible indicator.
    #[inline]
    pub fn set_dei(&mut self, dei: bool) {
        self.set_tci((self.tci() & !0x1000) | if dei { 0x1000 } else { 0 });
    }

    /// Sets the VLAN identifier (the low 12 bits of `vid`).
    #[inline]
    pub fn set_vid(&mut self, vid: u16) {
        self.set_tci((self.tci() & 0xf000) | (vid & 0x0fff));
    }

    /// Sets the EtherType after the tag.
    #[inline]
    pub fn set_ethertype(&mut self, ethertype: EtherType) {
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&u16::from(ethertype).to_be_bytes());
    }
}

/// Where the VLAN tags of a frame end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct VlanStack {
    /// EtherType after the last tag skipped.
    pub ethertype: u16,
    /// Offset of the first byte after the tags (the network header) from the start of the frame.
    pub offset: usize,
    /// Number of tags skipped (at most [`MAX_TAGS`]).
    pub count: u8,
    /// VLAN ids, outermost first; entries past `count` are 0.
    pub vids: [u16; MAX_TAGS],
}

/// Skips the VLAN tags of an Ethernet frame (`frame` starts at the destination MAC). [`Malformed`] when
/// the frame ends inside the Ethernet header or a tag.
#[inline]
pub fn walk(frame: &[u8]) -> Result<VlanStack> {
    let hdr = frame.get(..14).ok_or(Malformed)?;
    let mut stack = VlanStack {
        ethertype: u16::from_be_bytes([hdr[12], hdr[13]]),
        offset: 14,
        count: 0,
        vids: [0; MAX_TAGS],
    };
    for vid in &mut stack.vids {
        if stack.ethertype != 0x8100 && stack.ethertype != 0x88a8 {
            break;
        }
        let tag = frame.get(stack.offset..stack.offset + 4).ok_or(Malformed)?;
        *vid = u16::from_be_bytes([tag[0], tag[1]]) & 0x0fff;
        stack.ethertype = u16::from_be_bytes([tag[2], tag[3]]);
        stack.offset += 4;
        stack.count += 1;
    }
    Ok(stack)
}

#[cfg(test)]
mod tests {
    use super::*;

    // 802.1ad S-tag (vid 100, pcp 5) over an 802.1Q C-tag (vid 200, DEI) over IPv4.
    static QINQ: [u8; 24] = [
        0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, // MACs
        0x88, 0xa8, 0xa0, 0x64, // S-tag: pcp 5, vid 100
        0x81, 0x00, 0x10, 0xc8, // C-tag: dei, vid 200
        0x08, 0x00, 0x45, 0x00, // IPv4 starts
    ];

    #[test]
    fn stacked_tags() {
        let s = walk(&QINQ).unwrap();
        assert_eq!(
            s,
            VlanStack {
                ethertype: 0x0800,
                offset: 22,
                count: 2,
                vids: [100, 200]
            }
        );
        let outer = VlanTag::new_checked(&QINQ[14..]).unwrap();
        assert_eq!((outer.pcp(), outer.dei(), outer.vid()), (5, false, 100));
        assert_eq!(outer.ethertype(), EtherType::Vlan);
        let inner = VlanTag::new_checked(outer.payload()).unwrap();
        assert_eq!((inner.pcp(), inner.dei(), inner.vid()), (0, true, 200));
        assert_eq!(inner.ethertype(), EtherType::Ipv4);
    }

    #[test]
    fn untagged_and_truncated() {
        let s = walk(&QINQ[..]).unwrap();
        assert_eq!(s.count, 2);
        let mut untagged = [0u8; 14];
        untagged[12..14].copy_from_slice(&[0x86, 0xdd]);
        assert_eq!(
            walk(&untagged).unwrap(),
            VlanStack {
                ethertype: 0x86dd,
                offset: 14,
                count: 0,
                vids: [0, 0]
            }
        );
        assert_eq!(walk(&QINQ[..17]), Err(Malformed));
        assert_eq!(walk(&QINQ[..13]), Err(Malformed));
    }

    #[test]
    fn stack_depth_bounded() {
        // Three tags: the walk stops after two and reports the third TPID.
        let mut f = QINQ.to_vec();
        f.splice(20..20, [0x81, 0x00, 0x00, 0x01]);
        let s = walk(&f).unwrap();
        assert_eq!((s.count, s.ethertype, s.offset), (2, 0x8100, 22));
    }

    #[test]
    fn setters() {
        let mut b = [0u8; 4];
        let mut t = VlanTag::new_checked(&mut b[..]).unwrap();
        t.set_vid(0xfff5);
        t.set_pcp(7);
        t.set_dei(true);
        t.set_ethertype(EtherType::Ipv6);
        assert_eq!((t.pcp(), t.dei(), t.vid()), (7, true, 0x0ff5));
        assert_eq!(b, [0xff, 0xf5, 0x86, 0xdd]);
    }
}
