//! Parsing and VIP match: a frame becomes a flow key, a flow hash and a few header facts ([`Meta`]), or
//! the verdict for a frame that is not VIP traffic.
//!
//! Two parsers decide the same: [`classify_fast`] reads the common case (untagged Ethernet, IPv4 without
//! options or IPv6 without extension headers, TCP or UDP, not a fragment) straight from the bytes, and
//! [`classify_full`] goes through `cne::wire::parse_frame` for everything else (VLANs, options, extension
//! headers, fragments, ICMP errors, ARP and neighbour discovery). A property test checks that they agree on
//! every frame the fast one accepts. The VIP of the previous frame of a burst is remembered ([`LastVip`]),
//! since the frames of a burst mostly share one.

use super::icmp::{classify_icmp_error, is_icmp_error};
use super::neighbor::{answer_arp, answer_neighbor_solicitation};
use super::{Meta, PortPlane, Verdict};
use crate::conntrack::FlowKey;
use crate::control::{Addr, FragmentVip, State, VipState};
use crate::counters::DropReason;
use cne::frame::Frame;
use cne::wire::{self, EtherType, IpProtocol, IpVersion};

/// Parses the frame, fills in its flow key and header facts, and finds its VIP: `Ok((vip, flow hash))`, or
/// the verdict when the frame is not VIP traffic (ARP and neighbour solicitations are answered on the way).
#[inline(always)]
pub(super) fn classify<'s, F: Frame>(
    frame: &mut F,
    state: &'s State,
    plane: &mut PortPlane,
    key: &mut FlowKey,
    meta: &mut Meta,
    last_vip: &mut LastVip<'s>,
) -> Result<(&'s VipState, u64), Verdict> {
    match classify_fast(frame.data(), state, key, meta, last_vip) {
        Some(r) => r,
        None => classify_full(frame, state, plane, key, meta),
    }
}

/// The common case read straight from the bytes: untagged Ethernet, IPv4 without options or IPv6 without
/// extension headers, not a fragment, TCP or UDP, well formed. Everything else (`None`) goes through
/// [`classify_full`], which decides the same for the frames this accepts (a property test checks it) and
/// knows VLANs, options, extension headers, fragments, ARP and neighbour discovery.
#[inline(always)]
fn classify_fast<'s>(
    d: &[u8],
    state: &'s State,
    key: &mut FlowKey,
    meta: &mut Meta,
    last_vip: &mut LastVip<'s>,
) -> Option<Result<(&'s VipState, u64), Verdict>> {
    const L3: usize = 14;
    let eth: &[u8; L3] = d.get(..L3)?.try_into().ok()?;
    let l3 = &d[L3..];
    let (v6, src, dst, ip_len, tos, proto, l4_at) = match [eth[12], eth[13]] {
        [0x08, 0x00] => {
            let h: &[u8; 20] = l3.get(..20)?.try_into().ok()?;
            let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
            // Version 4 without options; no MF flag and no offset (DF allowed); the whole datagram here.
            if h[0] != 0x45 || h[6] & 0x3f != 0 || h[7] != 0 || total < 20 || total > l3.len() {
                return None;
            }
            let a = |o: usize| {
                0xffff_0000_0000
                    | u128::from(u32::from_be_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]))
            };
            (false, a(12), a(16), total, h[1], h[9], 20)
        }
        [0x86, 0xdd] => {
            let h: &[u8; 40] = l3.get(..40)?.try_into().ok()?;
            let total = 40 + usize::from(u16::from_be_bytes([h[4], h[5]]));
            if h[0] >> 4 != 6 || total > l3.len() {
                return None;
            }
            let a = |o: usize| u128::from_be_bytes(h[o..o + 16].try_into().unwrap_or([0; 16]));
            (
                true,
                a(8),
                a(24),
                total,
                (h[0] << 4) | (h[1] >> 4),
                h[6],
                40,
            )
        }
        _ => return None,
    };
    let l4 = l3.get(l4_at..ip_len)?;
    let tcp_flags = match proto {
        6 => {
            let h: &[u8; 20] = l4.get(..20)?.try_into().ok()?;
            let hlen = usize::from(h[12] >> 4) * 4;
            if hlen < 20 || hlen > l4.len() {
                return None;
            }
            h[13]
        }
        17 => {
            let h: &[u8; 8] = l4.get(..8)?.try_into().ok()?;
            let len = usize::from(u16::from_be_bytes([h[4], h[5]]));
            if len < 8 || len > l4.len() {
                return None;
            }
            0
        }
        _ => return None,
    };
    let (sport, dport) = (
        u16::from_be_bytes([l4[0], l4[1]]),
        u16::from_be_bytes([l4[2], l4[3]]),
    );
    let Some(vip) = last_vip.get(state, v6, dst, proto, dport) else {
        return Some(Err(Verdict::Drop(DropReason::NoVip)));
    };
    key.src = src;
    key.dst = dst;
    key.sport = sport;
    key.dport = dport;
    key.proto = proto;
    // Both fit: a frame is far shorter than 64 KiB.
    #[allow(clippy::cast_possible_truncation)]
    {
        meta.l3 = L3 as u16;
        meta.ip_len = ip_len as u16;
    }
    meta.tos = tos;
    meta.tcp_flags = tcp_flags;
    meta.v6 = v6;
    meta.fragment = false;
    meta.icmp_error = false;
    let hash = crate::hash::flow_hash(
        state.hash_seed,
        src,
        dst,
        FlowKey::pack_ports_proto(sport, dport, proto),
    );
    Some(Ok((vip, hash)))
}

/// The VIP lookup of the previous packet of a burst, reused when the next one has the same destination
/// address, protocol and port (the usual case: the packets of a burst mostly share a VIP). A comparison
/// then takes the place of a hash and a probe of the VIP index. The state is the same for the whole
/// burst, so a remembered answer (a miss included) stays right.
#[derive(Clone, Copy)]
pub(super) struct LastVip<'s> {
    dst: u128,
    /// Port, protocol and address family packed as `port << 16 | proto << 8 | v6`; never `u32::MAX`
    /// for a real packet, so [`LastVip::NONE`] matches nothing.
    rest: u32,
    vip: Option<&'s VipState>,
}

impl<'s> LastVip<'s> {
    /// Nothing remembered yet.
    pub(super) const NONE: Self = Self {
        dst: 0,
        rest: u32::MAX,
        vip: None,
    };

    /// [`State::vip`], from memory when the previous lookup was for the same destination.
    #[inline(always)]
    fn get(
        &mut self,
        state: &'s State,
        v6: bool,
        dst: u128,
        proto: u8,
        port: u16,
    ) -> Option<&'s VipState> {
        let rest = (u32::from(port) << 16) | (u32::from(proto) << 8) | u32::from(v6);
        if self.dst != dst || self.rest != rest {
            *self = Self {
                dst,
                rest,
                vip: state.vip(Addr { v6, bits: dst }, proto, port),
            };
        }
        self.vip
    }
}

/// [`classify`] for any frame, through the full parser.
#[inline(never)]
pub(super) fn classify_full<'s, F: Frame>(
    frame: &mut F,
    state: &'s State,
    plane: &mut PortPlane,
    key: &mut FlowKey,
    meta: &mut Meta,
) -> Result<(&'s VipState, u64), Verdict> {
    let Ok(info) = wire::parse_frame(frame.data()) else {
        return Err(Verdict::Drop(DropReason::Malformed));
    };
    let Some(version) = info.ip_version else {
        if info.ethertype == EtherType::Arp && state.claim_all {
            return Err(answer_arp(frame, &info, state, plane));
        }
        return Err(Verdict::Drop(DropReason::NotIp));
    };
    let proto = u8::from(info.l4_protocol);
    let (src, dst) = (Addr::from(info.src), Addr::from(info.dst));
    if version == IpVersion::V6 && info.l4_protocol == IpProtocol::Icmpv6 && state.claim_all {
        if let Some(v) = answer_neighbor_solicitation(frame, &info, state, plane) {
            return Err(v);
        }
    }
    if !info.is_fragment && is_icmp_error(frame.data(), &info) {
        return classify_icmp_error(frame.data(), &info, state, key, meta);
    }
    // Fragments carry no ports past the first: they match by address and protocol and hash on the 3-tuple.
    let (vip, sport, dport) = if info.is_fragment {
        match state.vip_for_fragment(dst, proto) {
            FragmentVip::Vip(v) => (v, 0, 0),
            FragmentVip::Ambiguous => return Err(Verdict::Drop(DropReason::FragmentAmbiguous)),
            FragmentVip::None => return Err(Verdict::Drop(DropReason::NoVip)),
        }
    } else {
        match state.vip(dst, proto, info.dst_port) {
            Some(v) => (v, info.src_port, info.dst_port),
            None => return Err(Verdict::Drop(DropReason::NoVip)),
        }
    };
    *key = FlowKey {
        src: src.bits,
        dst: dst.bits,
        sport,
        dport,
        proto,
    };
    // Both fit: a frame is far shorter than 64 KiB.
    #[allow(clippy::cast_possible_truncation)]
    {
        *meta = Meta {
            l3: info.l3_offset as u16,
            ip_len: info.ip_len as u16,
            tos: info.traffic_class,
            tcp_flags: info.tcp_flags.0,
            v6: version == IpVersion::V6,
            fragment: info.is_fragment,
            icmp_error: false,
        };
    }
    Ok((vip, key.hash(state.hash_seed)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::FlowKey;
    use crate::dataplane::testing::*;
    use crate::dataplane::PortPlane;
    use cne::frame::VecFrame;
    use proptest::prelude::*;

    /// Whatever the fast path accepts, the full parser decides identically (same VIP, hash, key and header
    /// facts, or the same verdict). `Err` describes a disagreement.
    fn fast_and_full_agree(frame: &[u8]) -> Result<(), String> {
        let state = shared_state();
        let (mut k1, mut m1) = (FlowKey::default(), Meta::default());
        let Some(fast) = classify_fast(frame, &state, &mut k1, &mut m1, &mut { LastVip::NONE })
        else {
            return Ok(());
        };
        let mut w = PortPlane::new(LB_MAC, &state);
        let (mut k2, mut m2) = (FlowKey::default(), Meta::default());
        let mut f = VecFrame::new(frame, 64, 2048);
        let full = classify_full(&mut f, &state, &mut w, &mut k2, &mut m2);
        match (fast, full) {
            (Ok((v1, h1)), Ok((v2, h2)))
                if std::ptr::eq(v1, v2) && (h1, k1, m1) == (h2, k2, m2) =>
            {
                Ok(())
            }
            (Err(a), Err(b)) if a == b => Ok(()),
            (a, b) => Err(format!(
                "fast {:?} {k1:?} {m1:?} vs full {:?} {k2:?} {m2:?}",
                a.map(|x| x.1),
                b.map(|x| x.1)
            )),
        }
    }

    /// Frames the fast path is for: IPv4 and IPv6, TCP and UDP, one with a VLAN tag (which it must refuse).
    fn fast_path_inputs() -> Vec<Vec<u8>> {
        let inputs = [
            GRE4_IN, GRE6_IN, MIXED_IN, DSR_IN, VLAN_IN, BIG4_IN, BIG6_IN,
        ];
        let tails = [
            None,
            None,
            None,
            None,
            None,
            Some(BIG4_IN_TAIL),
            Some(BIG6_IN_TAIL),
        ];
        inputs.iter().zip(tails).map(|(i, t)| bytes(i, t)).collect()
    }

    /// Header-field edge values: lengths, versions, flags, protocol numbers.
    const EDGES: [u8; 16] = [
        0, 1, 4, 5, 7, 8, 0x11, 0x20, 0x3f, 0x40, 0x45, 0x46, 0x50, 0x60, 0x81, 0xff,
    ];

    #[test]
    fn fast_path_agrees_with_the_full_parser_on_every_single_byte_edit() {
        let state = shared_state();
        let (mut k, mut m) = (FlowKey::default(), Meta::default());
        let mut accepted = 0;
        for frame in fast_path_inputs() {
            assert_eq!(fast_and_full_agree(&frame), Ok(()));
            for at in 0..frame.len().min(80) {
                for v in EDGES {
                    let mut f = frame.clone();
                    f[at] = v;
                    if let Err(e) = fast_and_full_agree(&f) {
                        panic!("byte {at} = {v:#x}: {e}");
                    }
                    accepted += usize::from(
                        classify_fast(&f, &state, &mut k, &mut m, &mut { LastVip::NONE }).is_some(),
                    );
                }
            }
            for len in 0..frame.len() {
                assert_eq!(
                    fast_and_full_agree(&frame[..len]),
                    Ok(()),
                    "cut to {len} bytes"
                );
            }
        }
        assert!(
            accepted > 1000,
            "the edits exercise the fast path ({accepted} accepted)"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

        #[test]
        fn fast_path_agrees_with_the_full_parser(
            which in 0usize..7,
            flips in proptest::collection::vec((any::<prop::sample::Index>(), prop_oneof![
                any::<u8>(),
                prop::sample::select(EDGES.to_vec()),
            ]), 0..4),
            cut in any::<prop::sample::Index>(),
        ) {
            // Several bytes changed at once (mostly headers, as the frames are short), cut near the end.
            let mut frame = fast_path_inputs().swap_remove(which);
            for (at, value) in flips {
                let i = at.index(frame.len().min(80));
                frame[i] = value;
            }
            frame.truncate(cut.index(frame.len() + 1).max(frame.len().saturating_sub(8)));
            prop_assert_eq!(fast_and_full_agree(&frame), Ok(()));
        }
    }
}
