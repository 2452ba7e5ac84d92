//! Forwarding rewrites, in place: GRE encapsulation (RFC 2784) or L2 direct server return.
//!
//! GRE wraps the IP datagram in an outer IPv4 or IPv6 header of the backend's family and a GRE header,
//! written into the frame's headroom; an IPv4 packet without DF that would not fit the MTU once wrapped is
//! split into fragments, each in its own GRE packet ([`fragment`]). The outer header is the backend's
//! precomputed template ([`crate::tunnel::GreOuter`]): per packet only the length, the traffic class (and
//! IPv6 flow label) and the IPv4 checksum, from the template's precomputed sum, are written, and nothing
//! just written is read back. L2 direct server return (the LVS/DR way) only changes the MAC addresses: the
//! backend holds the VIP on an interface of its own.

use super::classify::classify_full;
use super::icmp::too_big;
use super::select::follow;
use super::{Flow, Meta, Outcome, PortPlane, MAX_L2};
use crate::conntrack::FlowKey;
use crate::control::{BackendState, State};
use crate::counters::DropReason;
use crate::tunnel::{GreOuter, GRE_LEN};
use cne::frame::Frame;
use cne::wire::{self, checksum, EtherType, IpVersion, Ipv4Repr, Ipv6Repr, TcpFlags};

/// Sends the frame to `backend` unchanged but for the MAC addresses (`mac`: the port's).
#[inline(always)]
pub(super) fn l2_dsr<F: Frame>(frame: &mut F, mac: [u8; 6], backend: &BackendState) -> Outcome {
    let d = frame.data_mut();
    d[0..6].copy_from_slice(&backend.mac.0);
    d[6..12].copy_from_slice(&mac);
    Outcome::Forwarded
}

/// Wraps the IP datagram in Ethernet / outer IP / GRE for `backend`, in place.
#[inline(always)]
pub(super) fn encap_gre<F: Frame>(
    frame: &mut F,
    flow: &Flow<'_, '_>,
    state: &State,
    mac: [u8; 6],
    backend: &BackendState,
) -> Outcome {
    if backend.gre == GreOuter::None {
        return Outcome::Dropped(DropReason::NoLocalAddr);
    }
    let l3 = usize::from(flow.meta.l3);
    let inner_len = usize::from(flow.meta.ip_len);
    let overhead = backend.gre.overhead();
    if inner_len + overhead > usize::from(state.mtu) {
        return too_big(frame, state, mac, overhead);
    }
    let Some(data) = frame.push_head(overhead) else {
        return Outcome::Dropped(DropReason::NoHeadroom);
    };
    // Only writes from here on (no read-back of what was just written, which would stall on store
    // forwarding). VLAN tags (bytes 12..l3-2) stay in the outer frame: they move forward first, before
    // the new headers overwrite where they were.
    if l3 > 14 {
        data.copy_within(overhead + 12..overhead + l3 - 2, 12);
    }
    // Fits: the MTU check above bounds it by a u16.
    #[allow(clippy::cast_possible_truncation)]
    let outer_len = (overhead + inner_len) as u16;
    if !write_gre_headers(
        data,
        l3,
        overhead,
        backend,
        mac,
        flow.meta.tos,
        flow.hash,
        outer_len,
        flow.meta.v6,
    ) {
        return Outcome::Dropped(DropReason::NoLocalAddr);
    }
    // Ethernet padding of short frames is not part of the datagram: the new frame ends with it.
    if !frame.set_len(l3 + overhead + inner_len) {
        return Outcome::Dropped(DropReason::Malformed);
    }
    Outcome::Forwarded
}

/// One Ethernet frame carrying `inner` (an IP packet) GRE-encapsulated to `backend` from `src_mac`, with
/// exactly the headers the data plane writes (TOS zero); `None` when the backend has no outer header or
/// the packet is too long. For packets that do not come through a worker: health probes.
pub fn gre_frame(backend: &BackendState, src_mac: [u8; 6], inner: &[u8]) -> Option<Vec<u8>> {
    let overhead = backend.gre.overhead();
    let l3 = 14;
    let outer_len = u16::try_from(overhead + inner.len()).ok()?;
    let inner_v6 = inner.first().is_some_and(|b| b >> 4 == 6);
    let mut data = vec![0u8; l3 + overhead + inner.len()];
    data[l3 + overhead..].copy_from_slice(inner);
    write_gre_headers(
        &mut data, l3, overhead, backend, src_mac, 0, 0, outer_len, inner_v6,
    )
    .then_some(data)
}

/// Writes the MAC addresses, the outer EtherType, the outer IP header of `outer_len` bytes (with `tos`, and
/// for IPv6 the flow label from `hash`) and the GRE header in front of an inner packet at `l3 + overhead`
/// (`overhead`: the backend's [`GreOuter::overhead`]);
/// the VLAN tags (bytes 12..l3-2) are the caller's. `false` when the backend has no outer header.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn write_gre_headers(
    data: &mut [u8],
    l3: usize,
    overhead: usize,
    backend: &BackendState,
    mac: [u8; 6],
    tos: u8,
    hash: u64,
    outer_len: u16,
    inner_v6: bool,
) -> bool {
    let outer_type = match &backend.gre {
        GreOuter::V4 { header, sum } => {
            let h = &mut data[l3..l3 + Ipv4Repr::HEADER_LEN];
            h.copy_from_slice(header);
            h[1] = tos;
            h[2..4].copy_from_slice(&outer_len.to_be_bytes());
            let mut s = sum + u32::from(tos) + u32::from(outer_len);
            s = (s & 0xffff) + (s >> 16);
            s = (s & 0xffff) + (s >> 16);
            // Folded twice, the sum fits in 16 bits.
            #[allow(clippy::cast_possible_truncation)]
            h[10..12].copy_from_slice(&(!(s as u16)).to_be_bytes());
            EtherType::Ipv4
        }
        GreOuter::V6 { header } => {
            let h = &mut data[l3..l3 + Ipv6Repr::HEADER_LEN];
            h.copy_from_slice(header);
            // RFC 6438: the flow label of a tunnel carries the inner flow's entropy for ECMP.
            #[allow(clippy::cast_possible_truncation)]
            let first = (6u32 << 28) | (u32::from(tos) << 20) | (hash as u32 & 0x000f_ffff);
            h[0..4].copy_from_slice(&first.to_be_bytes());
            #[allow(clippy::cast_possible_truncation, reason = "the header is 40 bytes")]
            let payload_len = outer_len - Ipv6Repr::HEADER_LEN as u16;
            h[4..6].copy_from_slice(&payload_len.to_be_bytes());
            EtherType::Ipv6
        }
        GreOuter::None => return false,
    };
    // RFC 2784 without checksum, key or sequence number: flags and version zero, then the inner EtherType.
    let inner_type = if inner_v6 {
        EtherType::Ipv6
    } else {
        EtherType::Ipv4
    };
    let g = l3 + overhead - GRE_LEN;
    data[g..g + 2].copy_from_slice(&[0, 0]);
    data[g + 2..g + 4].copy_from_slice(&u16::from(inner_type).to_be_bytes());
    data[0..6].copy_from_slice(&backend.mac.0);
    data[6..12].copy_from_slice(&mac);
    data[l3 - 2..l3].copy_from_slice(&u16::from(outer_type).to_be_bytes());
    true
}

/// Sends a packet that got [`Verdict::Fragment`](super::Verdict::Fragment) from [`process`](super::process)
/// or [`process_burst`](super::process_burst) (with the same `state`) to its backend in several GRE packets: the inner IPv4 packet is split into fragments (RFC 791;
/// RFC 4459 section 3, as Linux's `ip_gre` does), each encapsulated in its own frame from `alloc` and given
/// to `send`. Returns the number of frames sent.
///
/// Why the inner packet and not the outer one: each GRE packet then arrives whole, so the backends' decap
/// step stays a header strip (`nf-maglev decap` has no reassembly), and the backend's kernel reassembles
/// the inner datagram as it does for any fragmented packet. The inner packet may itself be a fragment
/// (the client's kernel fragments datagrams larger than its own MTU): its fragments then carry offsets
/// relative to the original datagram and its MF flag on the last one. Options are copied into the first
/// fragment whole and into the others only where RFC 791 says so (the copied flag).
///
/// Nothing is allocated besides the frames; when `alloc` runs dry the rest of the packet is dropped and
/// counted ([`DropReason::NoFrame`]). `frame` itself is left for the caller to release.
#[cold]
#[inline(never)]
pub fn fragment<F: Frame>(
    frame: &mut F,
    state: &State,
    plane: &mut PortPlane,
    now: u32,
    mut alloc: impl FnMut() -> Option<F>,
    mut send: impl FnMut(F),
) -> usize {
    // The backend `process` chose: it recorded the flow (or, for a fragment, hashed it), so asking the same
    // way again gives the same answer.
    let (mut key, mut meta) = (FlowKey::default(), Meta::default());
    let backend = match classify_full(frame, state, plane, &mut key, &mut meta) {
        Ok((vip, hash)) if meta.fragment => vip.pick(hash).map(|(_, b)| b),
        Ok((vip, hash)) => {
            let f = TcpFlags(meta.tcp_flags);
            let syn = f.contains(TcpFlags::SYN) && !f.contains(TcpFlags::ACK);
            follow(vip, &key, hash, plane, now, syn).map(|(b, _)| b)
        }
        Err(_) => None,
    };
    let Some(backend) = backend else {
        plane.counters.drop(DropReason::TooBig);
        return 0;
    };
    match fragment_into(frame, state, plane, backend, &mut alloc, &mut send) {
        Ok(n) => {
            plane.counters.tx_packets += n as u64;
            plane.counters.gre_fragments += n as u64;
            n
        }
        Err((n, reason)) => {
            plane.counters.tx_packets += n as u64;
            plane.counters.gre_fragments += n as u64;
            plane.counters.drop(reason);
            n
        }
    }
}

/// [`fragment`]'s work: `Ok(frames sent)`, or the frames sent before it had to stop and why.
fn fragment_into<F: Frame>(
    frame: &F,
    state: &State,
    plane: &PortPlane,
    backend: &BackendState,
    alloc: &mut impl FnMut() -> Option<F>,
    send: &mut impl FnMut(F),
) -> Result<usize, (usize, DropReason)> {
    const MF: u16 = 0x2000;
    let d = frame.data();
    let info = wire::parse_frame(d).map_err(|_| (0, DropReason::Malformed))?;
    if info.ip_version != Some(IpVersion::V4) {
        return Err((0, DropReason::TooBig));
    }
    let l3 = info.l3_offset;
    let ip = d
        .get(l3..l3 + info.ip_len)
        .ok_or((0, DropReason::Malformed))?;
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ihl < Ipv4Repr::HEADER_LEN || ihl > ip.len() {
        return Err((0, DropReason::Malformed));
    }
    let flags = u16::from_be_bytes([ip[6], ip[7]]);
    let (base, more) = (usize::from(flags & 0x1fff) * 8, flags & MF != 0);
    // The options of the later fragments: those with the copied flag (RFC 791), padded to 4 bytes.
    let mut later_opts = [0u8; 40];
    let mut later_len = 0;
    let mut at = Ipv4Repr::HEADER_LEN;
    while at < ihl {
        let kind = ip[at];
        let len = match kind {
            0 => break,
            1 => 1,
            _ => usize::from(*ip.get(at + 1).ok_or((0, DropReason::Malformed))?),
        };
        if len == 0 || at + len > ihl {
            return Err((0, DropReason::Malformed));
        }
        if kind & 0x80 != 0 {
            later_opts[later_len..later_len + len].copy_from_slice(&ip[at..at + len]);
            later_len += len;
        }
        at += len;
    }
    let later_ihl = Ipv4Repr::HEADER_LEN + later_len.div_ceil(4) * 4;
    let overhead = backend.gre.overhead();
    let room = usize::from(state.mtu).saturating_sub(overhead);
    let payload = &ip[ihl..];
    let mut l2 = [0u8; MAX_L2];
    l2[..l3].copy_from_slice(&d[..l3]);
    let mut sent = 0;
    let mut off = 0;
    while off < payload.len() {
        let hlen = if off == 0 { ihl } else { later_ihl };
        // Every fragment but the last carries a multiple of 8 bytes.
        let max = room.saturating_sub(hlen) / 8 * 8;
        if max == 0 || base + off + payload.len().min(max) > 0xffff {
            return Err((sent, DropReason::TooBig));
        }
        let take = max.min(payload.len() - off);
        let last = off + take == payload.len();
        let inner_len = hlen + take;
        let mut f = alloc().ok_or((sent, DropReason::NoFrame))?;
        if !f.set_len(l3 + overhead + inner_len) {
            return Err((sent, DropReason::NoFrame));
        }
        let out = f.data_mut();
        out[12..l3].copy_from_slice(&l2[12..l3]);
        // Fits: at most the MTU.
        #[allow(clippy::cast_possible_truncation)]
        let outer_len = (overhead + inner_len) as u16;
        if !write_gre_headers(
            out,
            l3,
            overhead,
            backend,
            plane.mac,
            info.traffic_class,
            0,
            outer_len,
            false,
        ) {
            return Err((sent, DropReason::NoLocalAddr));
        }
        let h = &mut out[l3 + overhead..];
        h[..Ipv4Repr::HEADER_LEN].copy_from_slice(&ip[..Ipv4Repr::HEADER_LEN]);
        if off == 0 {
            h[Ipv4Repr::HEADER_LEN..ihl].copy_from_slice(&ip[Ipv4Repr::HEADER_LEN..ihl]);
        } else {
            h[Ipv4Repr::HEADER_LEN..later_ihl].fill(0);
            h[Ipv4Repr::HEADER_LEN..Ipv4Repr::HEADER_LEN + later_len]
                .copy_from_slice(&later_opts[..later_len]);
        }
        // All fit in 16 bits: checked above.
        #[allow(clippy::cast_possible_truncation)]
        {
            h[0] = 0x40 | (hlen / 4) as u8;
            h[2..4].copy_from_slice(&(inner_len as u16).to_be_bytes());
            let word = ((base + off) / 8) as u16 | if last && !more { 0 } else { MF };
            h[6..8].copy_from_slice(&word.to_be_bytes());
        }
        h[10..12].copy_from_slice(&[0, 0]);
        let sum = checksum::internet(&h[..hlen]);
        h[10..12].copy_from_slice(&sum.to_be_bytes());
        h[hlen..inner_len].copy_from_slice(&payload[off..off + take]);
        send(f);
        sent += 1;
        off += take;
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::FlowKey;
    use crate::counters::DropReason;
    use crate::dataplane::testing::*;
    use crate::dataplane::{PortPlane, Verdict};

    #[test]
    fn fixture_gre_ipv4() {
        check("gre4", bytes(GRE4_IN, None), bytes(GRE4_OUT, None));
    }

    #[test]
    fn fixture_gre_ipv6() {
        let key = FlowKey {
            src: v4("2001:2:50::1"),
            dst: v4("2001:2::100"),
            sport: 40001,
            dport: 80,
            proto: 6,
        };
        check(
            "gre6",
            bytes(GRE6_IN, None),
            with_flow_label(bytes(GRE6_OUT, None), 14, key),
        );
    }

    #[test]
    fn fixture_gre_ipv6_outer_for_ipv4_client_drops_padding() {
        let key = FlowKey {
            src: v4("198.18.50.1"),
            dst: v4("198.18.100.2"),
            sport: 5000,
            dport: 53,
            proto: 17,
        };
        let input = bytes(MIXED_IN, None);
        assert_eq!(input.len(), 60, "padded to the Ethernet minimum");
        check(
            "mixed",
            input,
            with_flow_label(bytes(MIXED_OUT, None), 14, key),
        );
    }

    #[test]
    fn fixture_vlan_tag_is_kept() {
        check("vlan", bytes(VLAN_IN, None), bytes(VLAN_OUT, None));
    }

    #[test]
    fn gre_fragments_ipv4_packets_without_df_that_do_not_fit() {
        let c = control();
        let state = c.state();
        let mut w = PortPlane::new(LB_MAC, &state);
        let payload: Vec<u8> = (0..3972u32).map(|i| (i * 7 + i / 251) as u8).collect();
        // The whole 4000-byte datagram (a jumbo frame) and the client kernel's 1500-byte fragments of it.
        let whole = udp4_raw([198, 18, 100, 7], 1000, 0, &[], &payload);
        let udp = whole[34..].to_vec();
        let mut pieces = vec![whole.clone()];
        for (i, chunk) in udp.chunks(1480).enumerate() {
            let more = (i + 1) * 1480 < udp.len();
            let word = (i * 1480 / 8) as u16 | if more { 0x2000 } else { 0 };
            let mut f = udp4_raw([198, 18, 100, 7], 1000, word, &[], &[]);
            f.truncate(34);
            f.extend_from_slice(chunk);
            f[16..18].copy_from_slice(&((20 + chunk.len()) as u16).to_be_bytes());
            f[24..26].copy_from_slice(&[0, 0]);
            let sum = checksum::internet(&f[14..34]);
            f[24..26].copy_from_slice(&sum.to_be_bytes());
            pieces.push(f);
        }
        let mut sent = 0;
        let mut reassembled = vec![None; udp.len()];
        for (k, piece) in pieces.iter().enumerate() {
            let (v, out) = run_fragmenting(&state, &mut w, piece, 16);
            if k == 3 {
                // The last client fragment (1040 bytes) fits: forwarded as it is.
                assert_eq!(v, Verdict::Tx);
                continue;
            }
            assert!(matches!(v, Verdict::Fragment), "{v:?}");
            assert!(out.len() >= 2);
            let mut next = None;
            for (j, o) in out.iter().enumerate() {
                let (ihl, off, mf, data) = inner_fragment(o);
                assert_eq!(ihl, 20);
                assert_eq!(off % 8, 0);
                if let Some(n) = next {
                    assert_eq!(off, n, "contiguous");
                }
                next = Some(off + data.len());
                let last_of_input = j + 1 == out.len();
                let input_more = piece[20] & 0x20 != 0;
                assert_eq!(mf, !last_of_input || input_more, "MF of {k}/{j}");
                if k > 0 {
                    for (i, b) in data.iter().enumerate() {
                        reassembled[off + i] = Some(*b);
                    }
                }
            }
            sent += out.len();
        }
        // The last client fragment, forwarded whole, completes the datagram.
        let last = &pieces[3];
        for (i, b) in last[34..].iter().enumerate() {
            reassembled[2 * 1480 + i] = Some(*b);
        }
        let got: Vec<u8> = reassembled
            .into_iter()
            .map(|b| b.expect("every byte arrives"))
            .collect();
        assert_eq!(got, udp);
        let counters = w.refresh_counters();
        assert_eq!(counters.gre_fragmented, 3);
        assert_eq!(counters.gre_fragments, sent as u64);
        assert_eq!(counters.drops_for(DropReason::TooBig), 0);
        assert_eq!(counters.tx_packets, sent as u64 + 1);
    }

    #[test]
    fn gre_fragmentation_copies_only_copied_options_and_counts_an_empty_pool() {
        let c = control();
        let state = c.state();
        let mut w = PortPlane::new(LB_MAC, &state);
        // Router alert (copied) and record route (not copied; 7 bytes, then end of list).
        let opts = [0x94, 4, 0, 0, 7, 7, 4, 0, 0, 0, 0, 0];
        let payload = vec![0x5a; 2000];
        let input = udp4_raw([198, 18, 100, 7], 1000, 0, &opts, &payload);
        let (v, out) = run_fragmenting(&state, &mut w, &input, 16);
        assert!(matches!(v, Verdict::Fragment));
        assert_eq!(out.len(), 2);
        let (ihl0, off0, mf0, d0) = inner_fragment(&out[0]);
        assert_eq!((ihl0, off0, mf0), (32, 0, true));
        assert_eq!(
            &out[0][38 + 20..38 + 32],
            &opts[..],
            "all options in the first fragment"
        );
        let (ihl1, off1, mf1, d1) = inner_fragment(&out[1]);
        assert_eq!((ihl1, off1, mf1), (24, d0.len(), false));
        assert_eq!(
            &out[1][38 + 20..38 + 24],
            &[0x94, 4, 0, 0],
            "only the copied option later"
        );
        assert_eq!(d0.len() + d1.len(), 2008);
        // No frame to be had: counted, nothing sent.
        let (v, out) = run_fragmenting(&state, &mut w, &input, 0);
        assert!(matches!(v, Verdict::Fragment));
        assert!(out.is_empty());
        assert_eq!(w.refresh_counters().drops_for(DropReason::NoFrame), 1);
        // With DF the client is told the MTU instead (as before).
        let df = udp4_raw([198, 18, 100, 7], 1000, 0x4000, &[], &payload);
        let (v, out) = run_fragmenting(&state, &mut w, &df, 16);
        assert_eq!(v, Verdict::Tx);
        assert!(out.is_empty());
        assert_eq!(w.refresh_counters().icmp_too_big, 1);
    }
}
