//! The packet path: one frame in, a [`Verdict`] out, the frame rewritten in place for transmission on the
//! port it came from (one-armed, like Maglev and Katran).
//!
//! Per packet: parse once (`cne::wire::parse_frame`), find the VIP, hash the flow, ask the worker's connection
//! table, else the VIP's Maglev table, then forward: GRE encapsulation (RFC 2784) in an outer IPv4 or IPv6
//! header of the backend's family, written into the frame's headroom, or L2 direct server return (only the
//! MAC addresses change). Fragments have no ports past the first, so every fragment is hashed on (source,
//! destination, protocol) and skips the connection table: all fragments of a datagram reach one backend.
//!
//! The function never panics on any input (a property test feeds it arbitrary bytes), never allocates, and
//! never blocks: the state is an immutable snapshot the caller loaded for the burst, everything mutable is the
//! caller's [`Worker`]. Anything that is not VIP traffic is counted by reason and dropped, except ARP requests
//! and IPv6 neighbour solicitations for VIP addresses, answered in place when the configuration says the
//! data plane sees all traffic (`claim_all`).

use crate::config::{Mac, Mode};
use crate::conntrack::{Conn, ConnTrack, FlowKey, Slot};
use crate::control::{Addr, BackendState, FragmentVip, State, VipState};
use crate::counters::{Counters, DropReason};
use cne::frame::Frame;
use cne::wire::{
    self, checksum, ArpOperation, ArpPacket, EtherType, FrameInfo, Icmpv6Packet, Icmpv6Type,
    IpProtocol, IpVersion, Ipv4Repr, Ipv6Repr, MacAddr, NdpFlags, NdpNeighbor, NeighborAdvertRepr,
    TcpFlags,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// GRE header without options.
const GRE_LEN: usize = 4;
/// The most a GRE encapsulation prepends in front of a frame's data (IPv6 outer header and GRE; the
/// Ethernet header is rewritten, not added).
const GRE_MAX_OVERHEAD: usize = GRE_LEN + Ipv6Repr::HEADER_LEN;
/// TTL / hop limit of packets the load balancer originates.
const HOP_LIMIT: u8 = 64;
/// Largest Ethernet + VLAN header (two tags).
const MAX_L2: usize = 14 + 4 * wire::vlan::MAX_TAGS;
/// IPv6's minimum MTU: the largest ICMPv6 error, and the smallest MTU a packet-too-big may report.
const IPV6_MIN_MTU: usize = 1280;

/// What to do with the frame after [`process`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Transmit the (rewritten) frame on the port it came from.
    Tx,
    /// Drop it (already counted).
    Drop(DropReason),
    /// An IPv4 packet that may be fragmented (no DF) is too big for the GRE tunnel to its backend: pass the
    /// frame, untouched, to [`fragment`], which sends it in several GRE packets in new frames. (The verdict
    /// carries nothing, so that the verdicts of a burst stay two bytes each: [`fragment`] finds the backend
    /// again, the rare packet paying for it rather than every packet.)
    Fragment,
}

/// Everything a worker thread owns for the packet path: its connection table, counters and MAC address.
#[derive(Debug)]
pub struct Worker {
    mac: [u8; 6],
    conntrack: ConnTrack,
    counters: Counters,
    generation: u64,
}

impl Worker {
    /// A worker whose port has the MAC address `mac` (source of every frame it sends), with a connection
    /// table sized by `state`. Allocates the table: call at start-up.
    pub fn new(mac: Mac, state: &State) -> Self {
        let mut w = Self {
            mac: mac.0,
            conntrack: ConnTrack::new(
                state.conntrack_size,
                state.timeouts,
                state.max_new_conns_per_sec,
            ),
            counters: Counters::default(),
            generation: 0,
        };
        w.adopt(state);
        w
    }

    /// The port's MAC address.
    pub fn mac(&self) -> Mac {
        Mac(self.mac)
    }

    /// The connection table.
    pub fn conntrack(&self) -> &ConnTrack {
        &self.conntrack
    }

    /// The counters, with the connection table's events brought up to date.
    pub fn counters(&mut self) -> &Counters {
        self.counters.conntrack = self.conntrack.stats();
        &self.counters
    }

    /// Counts a frame and its verdict.
    #[inline(always)]
    fn count(&mut self, verdict: Verdict) {
        self.counters.rx_packets += 1;
        match verdict {
            Verdict::Tx => self.counters.tx_packets += 1,
            Verdict::Drop(reason) => self.counters.drop(reason),
            // [`fragment`] counts the frames it sends.
            Verdict::Fragment => {}
        }
    }

    /// Takes over settings of a newly published state: counter room for new ids, timeouts, flood guard.
    /// Runs once per state change, not per packet.
    fn adopt(&mut self, state: &State) {
        self.counters
            .grow(state.vip_id_bound, state.backend_id_bound);
        self.conntrack.set_timeouts(state.timeouts);
        self.conntrack
            .set_max_new_per_sec(state.max_new_conns_per_sec);
        self.generation = state.generation;
    }
}

/// Decides what to do with one frame and rewrites it for transmission. `now` is a monotonic clock in
/// seconds, read once per burst. [`process_burst`] does the same for many frames, faster.
#[inline]
pub fn process<F: Frame>(frame: &mut F, state: &State, worker: &mut Worker, now: u32) -> Verdict {
    if worker.generation != state.generation {
        worker.adopt(state);
    }
    let (mut key, mut meta, mut last_vip) = (FlowKey::default(), Meta::default(), LastVip::NONE);
    let verdict = match classify(frame, state, worker, &mut key, &mut meta, &mut last_vip) {
        Err(v) => v,
        Ok((vip, hash)) => finish(
            frame,
            &Flow {
                vip,
                key: &key,
                hash,
                slot: worker.conntrack.slot(hash),
                meta,
            },
            state,
            worker,
            now,
        ),
    };
    worker.count(verdict);
    verdict
}

/// Frames handled per pipeline pass of [`process_burst`]: enough to overlap many cache misses, few enough that
/// the per-frame state stays in L1.
pub const PIPELINE: usize = 32;

/// Frames parsed between a bucket header's prefetch and its entry's (see [`process_burst`]).
const ENTRY_LAG: usize = 12;

/// [`process`] for a burst: `verdicts[i]` receives the verdict of `frames[i]`, for the first
/// `min(frames.len(), verdicts.len())` frames.
///
/// The frames go through in groups of [`PIPELINE`], in two passes: parse and hash every frame and prefetch
/// its connection-table bucket, then look up and forward. The entry each bucket's tags point at is
/// prefetched twelve frames later, in whichever pass is running then. With a table much larger than
/// the caches (a million flows), the bucket and entry loads of a group are then in flight while other
/// frames are worked on instead of one after another, which is most of the cost per packet. The passes keep their per-frame state in small parallel arrays (flow keys, hashes, a few header
/// facts), written field by field where the frame is parsed. Results are the same as [`process`] frame by
/// frame.
pub fn process_burst<F: Frame>(
    frames: &mut [F],
    verdicts: &mut [Verdict],
    state: &State,
    worker: &mut Worker,
    now: u32,
) {
    if worker.generation != state.generation {
        worker.adopt(state);
    }
    let n = frames.len().min(verdicts.len());
    let mut vips: [Option<&VipState>; PIPELINE] = [None; PIPELINE];
    let mut keys = [FlowKey::default(); PIPELINE];
    let mut hashes = [0u64; PIPELINE];
    let mut slots = [Slot::default(); PIPELINE];
    let mut metas = [Meta::default(); PIPELINE];
    // Frames whose flow the connection table is asked about (VIP traffic, not fragments).
    let mut tracked = [false; PIPELINE];
    let mut last_vip = LastVip::NONE;
    for (frames, verdicts) in frames[..n]
        .chunks_mut(PIPELINE)
        .zip(verdicts[..n].chunks_mut(PIPELINE))
    {
        let m = frames.len().min(PIPELINE);
        // A frame's connection-table entry is prefetched once its bucket header (prefetched while the
        // frame was parsed) has had ENTRY_LAG frames' time to arrive: during the parse of frame i + LAG,
        // or, for the last LAG frames, during the forwarding of the first ones. Each entry is then
        // requested hundreds of nanoseconds before its lookup, and no header is read the moment after its
        // request. A short burst asks for all its entries between the two passes.
        let lag = if m > ENTRY_LAG { ENTRY_LAG } else { 0 };
        for i in 0..m {
            match classify(
                &mut frames[i],
                state,
                worker,
                &mut keys[i],
                &mut metas[i],
                &mut last_vip,
            ) {
                Ok((vip, hash)) => {
                    if vip.mode == Mode::Gre {
                        // The outer headers go into the headroom, a line nothing has touched since the
                        // frame was last sent: fetch it now so that writing them later does not stall.
                        let data = frames[i].data().as_ptr();
                        cne::hint::prefetch_write_ptr(data.wrapping_sub(GRE_MAX_OVERHEAD));
                        cne::hint::prefetch_write_ptr(data.wrapping_sub(1));
                    }
                    vips[i] = Some(vip);
                    hashes[i] = hash;
                    slots[i] = worker.conntrack.slot(hash);
                    // Parsing the next frames overlaps this bucket's load.
                    tracked[i] = !metas[i].fragment;
                    if tracked[i] {
                        worker.conntrack.prefetch_bucket_at(slots[i]);
                    }
                }
                Err(v) => {
                    vips[i] = None;
                    tracked[i] = false;
                    verdicts[i] = v;
                }
            }
            if lag != 0 && i >= lag && tracked[i - lag] {
                worker.conntrack.prefetch_entry_at(slots[i - lag]);
            }
        }
        if lag == 0 {
            for j in (0..m).filter(|&j| tracked[j]) {
                worker.conntrack.prefetch_entry_at(slots[j]);
            }
        }
        for i in 0..m {
            if i < lag && tracked[m - lag + i] {
                worker.conntrack.prefetch_entry_at(slots[m - lag + i]);
            }
            if let Some(vip) = vips[i] {
                let flow = Flow {
                    vip,
                    key: &keys[i],
                    hash: hashes[i],
                    slot: slots[i],
                    meta: metas[i],
                };
                verdicts[i] = finish(&mut frames[i], &flow, state, worker, now);
            }
            worker.count(verdicts[i]);
        }
    }
}

/// What forwarding needs to know about a VIP packet besides its flow key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Meta {
    /// Offset of the IP header.
    l3: u16,
    /// Length of the IP datagram.
    ip_len: u16,
    /// IPv4 TOS or IPv6 traffic class.
    tos: u8,
    /// TCP flags (0 for UDP).
    tcp_flags: u8,
    v6: bool,
    fragment: bool,
    /// An ICMP error quoting a packet of the flow in the key: it follows the flow, records nothing.
    icmp_error: bool,
}

/// A packet for a VIP, as [`finish`] takes it.
struct Flow<'s, 'k> {
    vip: &'s VipState,
    key: &'k FlowKey,
    hash: u64,
    /// The flow's place in the worker's connection table, from `hash`.
    slot: Slot,
    meta: Meta,
}

/// Parses the frame, fills in its flow key and header facts, and finds its VIP: `Ok((vip, flow hash))`, or
/// the verdict when the frame is not VIP traffic (ARP and neighbour solicitations are answered on the way).
#[inline(always)]
fn classify<'s, F: Frame>(
    frame: &mut F,
    state: &'s State,
    worker: &mut Worker,
    key: &mut FlowKey,
    meta: &mut Meta,
    last_vip: &mut LastVip<'s>,
) -> Result<(&'s VipState, u64), Verdict> {
    match classify_fast(frame.data(), state, key, meta, last_vip) {
        Some(r) => r,
        None => classify_full(frame, state, worker, key, meta),
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
struct LastVip<'s> {
    dst: u128,
    /// Port, protocol and address family packed as `port << 16 | proto << 8 | v6`; never `u32::MAX`
    /// for a real packet, so [`LastVip::NONE`] matches nothing.
    rest: u32,
    vip: Option<&'s VipState>,
}

impl<'s> LastVip<'s> {
    /// Nothing remembered yet.
    const NONE: Self = Self {
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
fn classify_full<'s, F: Frame>(
    frame: &mut F,
    state: &'s State,
    worker: &mut Worker,
    key: &mut FlowKey,
    meta: &mut Meta,
) -> Result<(&'s VipState, u64), Verdict> {
    let Ok(info) = wire::parse_frame(frame.data()) else {
        return Err(Verdict::Drop(DropReason::Malformed));
    };
    let Some(version) = info.ip_version else {
        if info.ethertype == EtherType::Arp && state.claim_all {
            return Err(answer_arp(frame, &info, state, worker));
        }
        return Err(Verdict::Drop(DropReason::NotIp));
    };
    let proto = u8::from(info.l4_protocol);
    let (src, dst) = (Addr::from(info.src), Addr::from(info.dst));
    if version == IpVersion::V6 && info.l4_protocol == IpProtocol::Icmpv6 && state.claim_all {
        if let Some(v) = answer_neighbor_solicitation(frame, &info, state, worker) {
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

/// Whether the frame is an ICMPv4 destination unreachable, time exceeded or parameter problem, or an
/// ICMPv6 error (types 1-4).
#[inline]
fn is_icmp_error(d: &[u8], info: &FrameInfo) -> bool {
    let Some(&kind) = d.get(info.l4_offset) else {
        return false;
    };
    match info.l4_protocol {
        IpProtocol::Icmp => matches!(kind, 3 | 11 | 12),
        IpProtocol::Icmpv6 => (1..=4).contains(&kind),
        _ => false,
    }
}

/// An ICMP error to a VIP address quotes the start of a packet the VIP sent: a backend's answer under
/// direct server return (VIP:port -> client:port) that a router could not forward, e.g. "fragmentation
/// needed" for path MTU discovery. It belongs to that connection, so it goes where the connection's packets
/// go: the key is the quoted flow seen from the client's side.
#[cold]
fn classify_icmp_error<'s>(
    d: &[u8],
    info: &FrameInfo,
    state: &'s State,
    key: &mut FlowKey,
    meta: &mut Meta,
) -> Result<(&'s VipState, u64), Verdict> {
    const MALFORMED: Verdict = Verdict::Drop(DropReason::Malformed);
    // The ICMP header is 8 bytes; the quoted packet follows.
    let quoted = d.get(info.l4_offset + 8..info.l3_end()).ok_or(MALFORMED)?;
    let (v6, vip_bits, client_bits, proto, ports) = match info.ip_version {
        Some(IpVersion::V4) => {
            let h: &[u8; 20] = quoted
                .get(..20)
                .and_then(|s| s.try_into().ok())
                .ok_or(MALFORMED)?;
            let ihl = usize::from(h[0] & 0x0f) * 4;
            // Only a first fragment (offset 0) quotes the transport header.
            if h[0] >> 4 != 4 || ihl < 20 || u16::from_be_bytes([h[6], h[7]]) & 0x1fff != 0 {
                return Err(MALFORMED);
            }
            let a = |o: usize| Addr::v4([h[o], h[o + 1], h[o + 2], h[o + 3]]).bits;
            (
                false,
                a(12),
                a(16),
                h[9],
                quoted.get(ihl..ihl + 4).ok_or(MALFORMED)?,
            )
        }
        Some(IpVersion::V6) => {
            let h: &[u8; 40] = quoted
                .get(..40)
                .and_then(|s| s.try_into().ok())
                .ok_or(MALFORMED)?;
            if h[0] >> 4 != 6 {
                return Err(MALFORMED);
            }
            let a = |o: usize| u128::from_be_bytes(h[o..o + 16].try_into().unwrap_or([0; 16]));
            (
                true,
                a(8),
                a(24),
                h[6],
                quoted.get(40..44).ok_or(MALFORMED)?,
            )
        }
        None => return Err(MALFORMED),
    };
    let vip_addr = Addr { v6, bits: vip_bits };
    // The quoted packet must have come from the address the error is sent to.
    if !matches!(proto, 6 | 17) || Addr::from(info.dst) != vip_addr {
        return Err(Verdict::Drop(DropReason::NoVip));
    }
    let (vip_port, client_port) = (
        u16::from_be_bytes([ports[0], ports[1]]),
        u16::from_be_bytes([ports[2], ports[3]]),
    );
    let vip = state
        .vip(vip_addr, proto, vip_port)
        .ok_or(Verdict::Drop(DropReason::NoVip))?;
    *key = FlowKey {
        src: client_bits,
        dst: vip_bits,
        sport: client_port,
        dport: vip_port,
        proto,
    };
    // Both fit: a frame is far shorter than 64 KiB.
    #[allow(clippy::cast_possible_truncation)]
    {
        *meta = Meta {
            l3: info.l3_offset as u16,
            ip_len: info.ip_len as u16,
            tos: info.traffic_class,
            tcp_flags: 0,
            v6,
            fragment: false,
            icmp_error: true,
        };
    }
    Ok((vip, key.hash(state.hash_seed)))
}

/// Chooses the backend of a VIP packet and rewrites the frame for it.
#[inline(always)]
fn finish<F: Frame>(
    frame: &mut F,
    flow: &Flow<'_, '_>,
    state: &State,
    worker: &mut Worker,
    now: u32,
) -> Verdict {
    let vip = flow.vip;
    let picked = if flow.meta.fragment {
        worker.counters.fragments += 1;
        vip.pick(flow.hash).map(|(_, b)| (b, false))
    } else if flow.meta.icmp_error {
        worker.counters.icmp_errors += 1;
        follow(vip, flow.key, flow.hash, worker, now, false)
    } else {
        select(vip, flow, TcpFlags(flow.meta.tcp_flags), worker, now)
    };
    let Some((backend, new_conn)) = picked else {
        return Verdict::Drop(DropReason::NoBackend);
    };
    let bytes = frame.len();
    let outcome = match vip.mode {
        Mode::L2dsr => {
            let d = frame.data_mut();
            d[0..6].copy_from_slice(&backend.mac.0);
            d[6..12].copy_from_slice(&worker.mac);
            Outcome::Forwarded
        }
        Mode::Gre => encap_gre(frame, flow, state, worker.mac, backend),
    };
    match outcome {
        Outcome::Forwarded => {
            worker
                .counters
                .forwarded(vip.id, backend.id, bytes, new_conn);
            Verdict::Tx
        }
        Outcome::Replied => {
            // The packet itself is dropped as too big; the port sends the ICMP error in its place.
            worker.counters.drop(DropReason::TooBig);
            worker.counters.icmp_too_big += 1;
            Verdict::Tx
        }
        Outcome::Fragment => fragmenting(worker, vip.id, backend.id, bytes, new_conn),
        Outcome::Dropped(reason) => Verdict::Drop(reason),
    }
}

/// Counts a packet [`fragment`] will send (as forwarded: the load balancer chose its backend).
#[cold]
#[inline(never)]
fn fragmenting(
    worker: &mut Worker,
    vip: u32,
    backend: u32,
    bytes: usize,
    new_conn: bool,
) -> Verdict {
    worker.counters.forwarded(vip, backend, bytes, new_conn);
    worker.counters.gre_fragmented += 1;
    Verdict::Fragment
}

/// The backend of the flow an ICMP error quotes (or of a packet [`fragment`] sends): the connection table's
/// if it has the flow, else the one the Maglev tables give the flow (for TCP other than a SYN a past table
/// first, as [`select`] does). Records nothing. Records nothing: an error does not open a connection.
#[cold]
fn follow<'s>(
    vip: &'s VipState,
    key: &FlowKey,
    hash: u64,
    worker: &mut Worker,
    now: u32,
    syn: bool,
) -> Option<(&'s BackendState, bool)> {
    if let Some(conn) = worker.conntrack.lookup(key, hash, now, false) {
        if let Some((_, b)) = vip.backend(conn.backend, conn.hint) {
            return Some((b, false));
        }
    }
    // An error about a TCP connection this worker does not know goes where that connection's packets go.
    if key.proto == u8::from(IpProtocol::Tcp) && !syn {
        if let Some((_, b, _)) = vip.past_pick(hash) {
            return Some((b, false));
        }
    }
    vip.pick(hash).map(|(_, b)| (b, false))
}

/// How forwarding ended.
enum Outcome {
    /// The frame now carries the packet to its backend.
    Forwarded,
    /// The frame now carries an ICMP error back to the client.
    Replied,
    /// The packet must be fragmented to fit the tunnel (the frame is untouched).
    Fragment,
    /// Nothing to send.
    Dropped(DropReason),
}

/// The backend of a non-fragment packet: the connection table's if it still exists, else the Maglev
/// table's (recorded for the next packets). `(backend, new_conn)`; `None` when the VIP has no backend.
#[inline(always)]
fn select<'s>(
    vip: &'s VipState,
    flow: &Flow<'_, '_>,
    flags: TcpFlags,
    worker: &mut Worker,
    now: u32,
) -> Option<(&'s BackendState, bool)> {
    let (key, slot) = (flow.key, flow.slot);
    let tcp = key.proto == u8::from(IpProtocol::Tcp);
    let syn = tcp && flags.contains(TcpFlags::SYN) && !flags.contains(TcpFlags::ACK);
    let closing = tcp && (flags.contains(TcpFlags::FIN) || flags.contains(TcpFlags::RST));
    let hit = worker.conntrack.lookup_at(key, slot, now, closing);
    if let Some(conn) = hit {
        match vip.backend(conn.backend, conn.hint) {
            // A SYN opens a new connection: a draining backend gets none, even on a reused 5-tuple.
            Some((index, b)) if !(syn && b.weight == 0) => {
                if index != conn.hint {
                    // The backend list changed under the entry: remember the new position.
                    worker.conntrack.insert_at(
                        key,
                        slot,
                        Conn {
                            hint: index,
                            ..conn
                        },
                        now,
                    );
                }
                return Some((b, false));
            }
            Some(_) => {}
            None => worker.counters.rerouted += 1,
        }
    }
    // A connection (not a SYN) nobody here knows may have begun before the table changed: it goes where the
    // oldest kept table sends it while that backend exists. Only after a change, and only on a miss.
    let (index, b) = if hit.is_none() && tcp && !syn && vip.has_past() {
        past_or_pick(vip, flow.hash, worker)?
    } else {
        vip.pick(flow.hash)?
    };
    // A full table evicts, the flood guard may refuse: either way the Maglev table keeps the flow on `b`.
    worker.conntrack.insert_at(
        key,
        slot,
        Conn {
            backend: b.id,
            hint: index,
            closing,
        },
        now,
    );
    Some((b, true))
}

/// [`VipState::past_pick`], else the current table's pick.
#[cold]
#[inline(never)]
fn past_or_pick<'s>(
    vip: &'s VipState,
    hash: u64,
    worker: &mut Worker,
) -> Option<(u16, &'s BackendState)> {
    if let Some((i, b, _)) = vip.past_pick(hash) {
        worker.counters.past_table += 1;
        return Some((i, b));
    }
    vip.pick(hash)
}

/// The outer IP header of GRE packets to one backend, prepared when the state is built: per packet only
/// the length, the traffic class (and flow label) and the IPv4 checksum are filled in, and the checksum is
/// computed from a precomputed sum instead of being read back from the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GreOuter {
    /// No local address of the backend's family: GRE packets to it are dropped ([`DropReason::NoLocalAddr`]).
    None,
    /// IPv4 header (DF set) with TOS, total length and checksum zero, and the ones-complement sum of its words.
    V4 {
        /// The header template.
        header: [u8; Ipv4Repr::HEADER_LEN],
        /// Sum of its 16-bit words, unfolded.
        sum: u32,
    },
    /// IPv6 header with traffic class, flow label and payload length zero.
    V6 {
        /// The header template.
        header: [u8; Ipv6Repr::HEADER_LEN],
    },
}

impl GreOuter {
    /// The outer header from the local address of `backend`'s family to `backend`.
    pub fn new(backend: IpAddr, local_v4: Option<Ipv4Addr>, local_v6: Option<Ipv6Addr>) -> Self {
        match (backend, local_v4, local_v6) {
            (IpAddr::V4(dst), Some(src), _) => {
                let mut header = [0u8; Ipv4Repr::HEADER_LEN];
                header[0] = 0x45;
                header[6] = 0x40; // don't fragment
                header[8] = HOP_LIMIT;
                header[9] = u8::from(IpProtocol::Gre);
                header[12..16].copy_from_slice(&src.octets());
                header[16..20].copy_from_slice(&dst.octets());
                let sum = header
                    .chunks_exact(2)
                    .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
                    .sum();
                GreOuter::V4 { header, sum }
            }
            (IpAddr::V6(dst), _, Some(src)) => {
                let mut header = [0u8; Ipv6Repr::HEADER_LEN];
                header[0] = 0x60;
                header[6] = u8::from(IpProtocol::Gre);
                header[7] = HOP_LIMIT;
                header[8..24].copy_from_slice(&src.octets());
                header[24..40].copy_from_slice(&dst.octets());
                GreOuter::V6 { header }
            }
            _ => GreOuter::None,
        }
    }

    /// Bytes the outer IP header and the GRE header add.
    #[inline]
    fn overhead(&self) -> usize {
        GRE_LEN
            + match self {
                GreOuter::V6 { .. } => Ipv6Repr::HEADER_LEN,
                _ => Ipv4Repr::HEADER_LEN,
            }
    }
}

/// Wraps the IP datagram in Ethernet / outer IP / GRE for `backend`, in place.
#[inline(always)]
fn encap_gre<F: Frame>(
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

/// Sends a packet that got [`Verdict::Fragment`] from [`process`] or [`process_burst`] (with the same
/// `state`) to its backend in several GRE packets: the inner IPv4 packet is split into fragments (RFC 791;
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
    worker: &mut Worker,
    now: u32,
    mut alloc: impl FnMut() -> Option<F>,
    mut send: impl FnMut(F),
) -> usize {
    // The backend `process` chose: it recorded the flow (or, for a fragment, hashed it), so asking the same
    // way again gives the same answer.
    let (mut key, mut meta) = (FlowKey::default(), Meta::default());
    let backend = match classify_full(frame, state, worker, &mut key, &mut meta) {
        Ok((vip, hash)) if meta.fragment => vip.pick(hash).map(|(_, b)| b),
        Ok((vip, hash)) => {
            let f = TcpFlags(meta.tcp_flags);
            let syn = f.contains(TcpFlags::SYN) && !f.contains(TcpFlags::ACK);
            follow(vip, &key, hash, worker, now, syn).map(|(b, _)| b)
        }
        Err(_) => None,
    };
    let Some(backend) = backend else {
        worker.counters.drop(DropReason::TooBig);
        return 0;
    };
    match fragment_into(frame, state, worker, backend, &mut alloc, &mut send) {
        Ok(n) => {
            worker.counters.tx_packets += n as u64;
            worker.counters.gre_fragments += n as u64;
            n
        }
        Err((n, reason)) => {
            worker.counters.tx_packets += n as u64;
            worker.counters.gre_fragments += n as u64;
            worker.counters.drop(reason);
            n
        }
    }
}

/// [`fragment`]'s work: `Ok(frames sent)`, or the frames sent before it had to stop and why.
fn fragment_into<F: Frame>(
    frame: &F,
    state: &State,
    worker: &Worker,
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
            worker.mac,
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

/// Writes destination and source MAC, the VLAN tags of `old_l2` (the original header) and `ethertype`.
#[inline(always)]
fn write_l2(data: &mut [u8], old_l2: &[u8], dst: [u8; 6], src: [u8; 6], ethertype: EtherType) {
    let l3 = old_l2.len();
    data[0..6].copy_from_slice(&dst);
    data[6..12].copy_from_slice(&src);
    data[12..l3 - 2].copy_from_slice(&old_l2[12..l3 - 2]);
    data[l3 - 2..l3].copy_from_slice(&u16::from(ethertype).to_be_bytes());
}

/// The packet would exceed the MTU once encapsulated: IPv4 without DF is fragmented ([`fragment`]);
/// otherwise answer with ICMP "fragmentation needed" (IPv4 with DF) or ICMPv6 "packet too big", rewriting
/// the frame in place, or drop (a non-first IPv6 fragment).
#[cold]
fn too_big<F: Frame>(frame: &mut F, state: &State, mac: [u8; 6], overhead: usize) -> Outcome {
    // Rare: parse again rather than carry every header detail through the burst.
    let Ok(info) = wire::parse_frame(frame.data()) else {
        return Outcome::Dropped(DropReason::Malformed);
    };
    let l3 = info.l3_offset;
    // IPv4 without DF (fragments included): the sender allows fragmentation, so the packet is fragmented.
    if info.ip_version == Some(IpVersion::V4)
        && frame.data().get(l3 + 6).is_some_and(|b| b & 0x40 == 0)
    {
        return Outcome::Fragment;
    }
    // RFC 1122 / 4443: errors only about first fragments; TCP and UDP (VIP traffic) are never ICMP errors.
    if info.fragment_offset != 0 {
        return Outcome::Dropped(DropReason::TooBig);
    }
    let mut l2 = [0u8; MAX_L2];
    l2[..l3].copy_from_slice(&frame.data()[..l3]);
    let client_mac: [u8; 6] = {
        let mut m = [0u8; 6];
        m.copy_from_slice(&l2[6..12]);
        m
    };
    let room = usize::from(state.mtu).saturating_sub(overhead);
    let sent = match (info.src, info.dst) {
        (IpAddr::V4(client), IpAddr::V4(vip)) => {
            let ihl = info.l4_offset - l3;
            let quote = (ihl + 8).min(info.ip_len);
            icmpv4_frag_needed(frame, &l2[..l3], client_mac, mac, vip, client, quote, room)
        }
        (IpAddr::V6(client), IpAddr::V6(vip)) => {
            let quote = info.ip_len.min(IPV6_MIN_MTU - Ipv6Repr::HEADER_LEN - 8);
            icmpv6_packet_too_big(
                frame,
                &l2[..l3],
                client_mac,
                mac,
                vip,
                client,
                quote,
                room.max(IPV6_MIN_MTU),
            )
        }
        _ => false,
    };
    if sent {
        Outcome::Replied
    } else {
        Outcome::Dropped(DropReason::TooBig)
    }
}

/// Rewrites the frame into ICMP type 3 code 4 quoting the first `quote` bytes of the datagram.
#[allow(clippy::too_many_arguments)]
fn icmpv4_frag_needed<F: Frame>(
    frame: &mut F,
    old_l2: &[u8],
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    vip: Ipv4Addr,
    client: Ipv4Addr,
    quote: usize,
    mtu: usize,
) -> bool {
    const ICMP_LEN: usize = 8;
    let l3 = old_l2.len();
    let fresh = Ipv4Repr::HEADER_LEN + ICMP_LEN;
    // The quoted datagram stays where it is; the new headers go in front of it.
    if frame.push_head(fresh).is_none() || !frame.set_len(l3 + fresh + quote) {
        return false;
    }
    let data = frame.data_mut();
    let ip = Ipv4Repr {
        src: vip,
        dst: client,
        protocol: IpProtocol::Icmp,
        payload_len: u16::try_from(ICMP_LEN + quote).unwrap_or(u16::MAX),
        ttl: HOP_LIMIT,
        tos: 0,
        ident: 0,
        dont_frag: false,
    };
    if ip.emit(&mut data[l3..]).is_err() {
        return false;
    }
    let icmp = &mut data[l3 + Ipv4Repr::HEADER_LEN..];
    let mtu = u16::try_from(mtu).unwrap_or(u16::MAX).to_be_bytes();
    icmp[..ICMP_LEN].copy_from_slice(&[3, 4, 0, 0, 0, 0, mtu[0], mtu[1]]);
    let sum = checksum::internet(&icmp[..ICMP_LEN + quote]);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    write_l2(data, old_l2, dst_mac, src_mac, EtherType::Ipv4);
    true
}

/// Rewrites the frame into ICMPv6 packet too big quoting the first `quote` bytes of the datagram.
#[allow(clippy::too_many_arguments)]
fn icmpv6_packet_too_big<F: Frame>(
    frame: &mut F,
    old_l2: &[u8],
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    vip: Ipv6Addr,
    client: Ipv6Addr,
    quote: usize,
    mtu: usize,
) -> bool {
    const ICMP_LEN: usize = 8;
    let l3 = old_l2.len();
    let fresh = Ipv6Repr::HEADER_LEN + ICMP_LEN;
    if frame.push_head(fresh).is_none() || !frame.set_len(l3 + fresh + quote) {
        return false;
    }
    let data = frame.data_mut();
    let ip = Ipv6Repr {
        src: vip,
        dst: client,
        next_header: IpProtocol::Icmpv6,
        payload_len: u16::try_from(ICMP_LEN + quote).unwrap_or(u16::MAX),
        hop_limit: HOP_LIMIT,
        traffic_class: 0,
        flow_label: 0,
    };
    if ip.emit(&mut data[l3..]).is_err() {
        return false;
    }
    let msg = &mut data[l3 + Ipv6Repr::HEADER_LEN..];
    msg[..4].copy_from_slice(&[u8::from(Icmpv6Type::PacketTooBig), 0, 0, 0]);
    let Ok(mut icmp) = Icmpv6Packet::new_checked(msg) else {
        return false;
    };
    icmp.set_mtu(u32::try_from(mtu).unwrap_or(u32::MAX));
    icmp.fill_checksum(&vip, &client);
    write_l2(data, old_l2, dst_mac, src_mac, EtherType::Ipv6);
    true
}

/// Answers an ARP request for a VIP address in place.
#[cold]
fn answer_arp<F: Frame>(
    frame: &mut F,
    info: &FrameInfo,
    state: &State,
    worker: &mut Worker,
) -> Verdict {
    let l3 = info.l3_offset;
    let mac = MacAddr(worker.mac);
    let data = frame.data_mut();
    let Ok(mut arp) = ArpPacket::new_checked(&mut data[l3..]) else {
        return Verdict::Drop(DropReason::Malformed);
    };
    let target = arp.target_protocol_addr();
    if arp.operation() != ArpOperation::Request || !state.is_vip_addr(Addr::v4(target.octets())) {
        return Verdict::Drop(DropReason::NotIp);
    }
    let (asker_mac, asker_ip) = (arp.sender_hardware_addr(), arp.sender_protocol_addr());
    if asker_mac.is_multicast() {
        return Verdict::Drop(DropReason::Malformed);
    }
    if asker_ip == target {
        // A gratuitous ARP announcing the VIP (another holder, or our own echo): a conflict to
        // report, not a question to answer.
        return Verdict::Drop(DropReason::NotIp);
    }
    arp.set_operation(ArpOperation::Reply);
    arp.set_target_hardware_addr(asker_mac);
    arp.set_target_protocol_addr(asker_ip);
    arp.set_sender_hardware_addr(mac);
    arp.set_sender_protocol_addr(target);
    data[0..6].copy_from_slice(&asker_mac.0);
    data[6..12].copy_from_slice(&worker.mac);
    worker.counters.arp_replies += 1;
    Verdict::Tx
}

/// Answers a neighbour solicitation for a VIP address with a neighbour advertisement, in place. `None` when
/// the packet is some other ICMPv6 message (it then goes through the VIP lookup like any packet).
#[cold]
fn answer_neighbor_solicitation<F: Frame>(
    frame: &mut F,
    info: &FrameInfo,
    state: &State,
    worker: &mut Worker,
) -> Option<Verdict> {
    let (IpAddr::V6(asker), l3, l4) = (info.src, info.l3_offset, info.l4_offset) else {
        return None;
    };
    let ns = NdpNeighbor::new_checked(frame.data().get(l4..info.l3_end())?).ok()?;
    // RFC 4861 7.1.1: a valid solicitation has hop limit 255 (it cannot have been forwarded).
    if ns.msg_type() != Icmpv6Type::NeighborSolicit || ns.code() != 0 || info.hop_limit != 255 {
        return None;
    }
    let target = ns.target_addr();
    if !state.is_vip_addr(Addr::v6(target.octets())) {
        return Some(Verdict::Drop(DropReason::NoVip));
    }
    let mut l2 = [0u8; MAX_L2];
    l2[..l3].copy_from_slice(&frame.data()[..l3]);
    // Duplicate address detection comes from `::` and is answered to all nodes, unsolicited (RFC 4861 7.2.4).
    let dad = asker.is_unspecified();
    let (dst, dst_mac, flags) = if dad {
        (
            Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
            MacAddr::ipv6_multicast(&Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1)).0,
            NdpFlags::OVERRIDE,
        )
    } else {
        let mut m = [0u8; 6];
        m.copy_from_slice(&l2[6..12]);
        (asker, m, NdpFlags::SOLICITED | NdpFlags::OVERRIDE)
    };
    let na = NeighborAdvertRepr {
        flags,
        target,
        target_link_addr: Some(MacAddr(worker.mac)),
    };
    let len = na.buffer_len();
    if !frame.set_len(l3 + Ipv6Repr::HEADER_LEN + len) {
        return Some(Verdict::Drop(DropReason::NoHeadroom));
    }
    let data = frame.data_mut();
    let ip = Ipv6Repr {
        src: target,
        dst,
        next_header: IpProtocol::Icmpv6,
        payload_len: u16::try_from(len).unwrap_or(u16::MAX),
        hop_limit: 255,
        traffic_class: 0,
        flow_label: 0,
    };
    if ip.emit(&mut data[l3..]).is_err()
        || na
            .emit(&mut data[l3 + Ipv6Repr::HEADER_LEN..], &target, &dst)
            .is_err()
    {
        return Some(Verdict::Drop(DropReason::Malformed));
    }
    write_l2(data, &l2[..l3], dst_mac, worker.mac, EtherType::Ipv6);
    worker.counters.nd_replies += 1;
    Some(Verdict::Tx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MaglevSection;
    use crate::control::Control;
    use cne::frame::VecFrame;
    use proptest::prelude::*;

    const LB_MAC: Mac = Mac([2, 0, 0, 0, 0, 0xaa]);

    const CONFIG: &str = r#"{
        "hash_seed": 7,
        "conntrack": { "size": 16384 },
        "local_addrs": ["198.18.0.1", "2001:2::1"],
        "gateway_mac": "02:00:00:00:00:fe",
        "vips": [
          { "name": "web4", "addr": "198.18.100.1", "proto": "tcp", "port": 80, "mode": "gre",
            "backends": [ { "name": "b1", "addr": "198.18.1.1", "mac": "02:00:00:00:01:01" } ] },
          { "name": "web6", "addr": "2001:2::100", "proto": "tcp", "port": 80, "mode": "gre",
            "backends": [ { "name": "b1", "addr": "2001:2:1::1", "mac": "02:00:00:00:01:02" } ] },
          { "name": "mixed", "addr": "198.18.100.2", "proto": "udp", "port": 53, "mode": "gre",
            "backends": [ { "name": "b", "addr": "2001:2:1::2" } ] },
          { "name": "dsr", "addr": "198.18.100.3", "proto": "udp", "port": 443, "mode": "l2dsr",
            "backends": [ { "name": "b", "addr": "198.18.1.3", "mac": "02:00:00:00:01:03" } ] },
          { "name": "pool", "addr": "198.18.100.4", "proto": "tcp", "port": "all", "mode": "gre",
            "backends": [ { "name": "p0", "addr": "198.18.2.1" }, { "name": "p1", "addr": "198.18.2.2" },
                          { "name": "p2", "addr": "198.18.2.3" }, { "name": "p3", "addr": "198.18.2.4" } ] },
          { "name": "udp-a", "addr": "198.18.100.5", "proto": "udp", "port": 1000, "mode": "gre",
            "backends": [ { "name": "b", "addr": "198.18.1.5" } ] },
          { "name": "udp-b", "addr": "198.18.100.5", "proto": "udp", "port": 2000, "mode": "gre",
            "backends": [ { "name": "b", "addr": "198.18.1.6" } ] },
          { "name": "empty", "addr": "198.18.100.6", "proto": "tcp", "port": 80, "mode": "gre", "backends": [] },
          { "name": "big", "addr": "198.18.100.7", "proto": "udp", "port": "all", "mode": "gre",
            "backends": [ { "name": "b", "addr": "198.18.1.5" } ] }
        ] }"#;

    // Fixtures generated with scapy 2.8.0 (the input frame, and the frame the load balancer must send).
    // Client 198.18.50.1 / 2001:2:50::1 behind MAC 02:00:00:00:00:cc; load balancer MAC 02:00:00:00:00:aa.
    // `_TAIL` = (byte, count) repeated after the listed bytes.

    /// Ether / IP / TCP 198.18.50.1:40000 > 198.18.100.1:http S
    const GRE4_IN: &str = "
        02 00 00 00 00 aa 02 00 00 00 00 cc 08 00 45 28
        00 28 00 01 40 00 40 06 18 80 c6 12 32 01 c6 12
        64 01 9c 40 00 50 00 00 00 01 00 00 00 00 50 02
        20 00 d1 29 00 00";
    /// Ether / IP / GRE / IP / TCP 198.18.50.1:40000 > 198.18.100.1:http S
    const GRE4_OUT: &str = "
        02 00 00 00 01 01 02 00 00 00 00 aa 08 00 45 28
        00 40 00 00 40 00 40 2f ad 40 c6 12 00 01 c6 12
        01 01 00 00 08 00 45 28 00 28 00 01 40 00 40 06
        18 80 c6 12 32 01 c6 12 64 01 9c 40 00 50 00 00
        00 01 00 00 00 00 50 02 20 00 d1 29 00 00";
    const GRE6_IN: &str = "
        02 00 00 00 00 aa 02 00 00 00 00 cc 86 dd 62 80
        00 00 00 19 06 40 20 01 00 02 00 50 00 00 00 00
        00 00 00 00 00 01 20 01 00 02 00 00 00 00 00 00
        00 00 00 00 01 00 9c 41 00 50 00 00 00 05 00 00
        00 07 50 10 20 00 6e 09 00 00 68 65 6c 6c 6f";
    /// Ether / IPv6 / GRE / IPv6 / TCP 2001:2:50::1:40001 > 2001:2::100:http A / Raw
    const GRE6_OUT: &str = "
        02 00 00 00 01 02 02 00 00 00 00 aa 86 dd 62 80
        00 00 00 45 2f 40 20 01 00 02 00 00 00 00 00 00
        00 00 00 00 00 01 20 01 00 02 00 01 00 00 00 00
        00 00 00 00 00 01 00 00 86 dd 62 80 00 00 00 19
        06 40 20 01 00 02 00 50 00 00 00 00 00 00 00 00
        00 01 20 01 00 02 00 00 00 00 00 00 00 00 00 00
        01 00 9c 41 00 50 00 00 00 05 00 00 00 07 50 10
        20 00 6e 09 00 00 68 65 6c 6c 6f";
    /// Ether / IP / UDP, padded to 60 bytes
    const MIXED_IN: &str = "
        02 00 00 00 00 aa 02 00 00 00 00 cc 08 00 45 00
        00 1e 00 02 00 00 40 11 58 a5 c6 12 32 01 c6 12
        64 02 13 88 00 35 00 0a 58 b5 71 3f 00 00 00 00
        00 00 00 00 00 00 00 00 00 00 00 00";
    /// Ether / IPv6 / GRE / IP / UDP 198.18.50.1:5000 > 198.18.100.2:domain / Raw
    const MIXED_OUT: &str = "
        02 00 00 00 00 fe 02 00 00 00 00 aa 86 dd 60 00
        00 00 00 22 2f 40 20 01 00 02 00 00 00 00 00 00
        00 00 00 00 00 01 20 01 00 02 00 01 00 00 00 00
        00 00 00 00 00 02 00 00 08 00 45 00 00 1e 00 02
        00 00 40 11 58 a5 c6 12 32 01 c6 12 64 02 13 88
        00 35 00 0a 58 b5 71 3f";
    /// Ether / IP / UDP 198.18.50.1:5001 > 198.18.100.3:https / Raw
    const DSR_IN: &str = "
        02 00 00 00 00 aa 02 00 00 00 00 cc 08 00 45 00
        00 1f 00 03 00 00 40 11 58 a2 c6 12 32 01 c6 12
        64 03 13 89 01 bb 00 0b f1 f6 64 73 72";
    /// Ether / IP / UDP 198.18.50.1:5001 > 198.18.100.3:https / Raw
    const DSR_OUT: &str = "
        02 00 00 00 01 03 02 00 00 00 00 aa 08 00 45 00
        00 1f 00 03 00 00 40 11 58 a2 c6 12 32 01 c6 12
        64 03 13 89 01 bb 00 0b f1 f6 64 73 72";
    /// Ether / Dot1Q / IP / TCP 198.18.50.1:40000 > 198.18.100.1:http S
    const VLAN_IN: &str = "
        02 00 00 00 00 aa 02 00 00 00 00 cc 81 00 00 64
        08 00 45 28 00 28 00 01 40 00 40 06 18 80 c6 12
        32 01 c6 12 64 01 9c 40 00 50 00 00 00 01 00 00
        00 00 50 02 20 00 d1 29 00 00";
    /// Ether / Dot1Q / IP / GRE / IP / TCP 198.18.50.1:40000 > 198.18.100.1:http S
    const VLAN_OUT: &str = "
        02 00 00 00 01 01 02 00 00 00 00 aa 81 00 00 64
        08 00 45 28 00 40 00 00 40 00 40 2f ad 40 c6 12
        00 01 c6 12 01 01 00 00 08 00 45 28 00 28 00 01
        40 00 40 06 18 80 c6 12 32 01 c6 12 64 01 9c 40
        00 50 00 00 00 01 00 00 00 00 50 02 20 00 d1 29
        00 00";
    /// Ether / IP / TCP 198.18.50.1:40002 > 198.18.100.1:http A / Raw
    const BIG4_IN: &str = "
        02 00 00 00 00 aa 02 00 00 00 00 cc 08 00 45 00
        05 c8 00 04 40 00 40 06 13 05 c6 12 32 01 c6 12
        64 01 9c 42 00 50 00 00 00 00 00 00 00 00 50 10
        20 00 f8 a7 00 00";
    const BIG4_IN_TAIL: (u8, usize) = (0x78, 1440);
    /// Ether / IP / ICMP 198.18.100.1 > 198.18.50.1 dest-unreach fragmentation-needed / Raw
    const BIG4_OUT: &str = "
        02 00 00 00 00 cc 02 00 00 00 00 aa 08 00 45 00
        00 38 00 00 00 00 40 01 58 9e c6 12 64 01 c6 12
        32 01 03 04 5a a5 00 00 05 c4 45 00 05 c8 00 04
        40 00 40 06 13 05 c6 12 32 01 c6 12 64 01 9c 42
        00 50 00 00 00 00";
    /// Ether / IPv6 / TCP 2001:2:50::1:40003 > 2001:2::100:http A / Raw
    const BIG6_IN: &str = "
        02 00 00 00 00 aa 02 00 00 00 00 cc 86 dd 60 00
        00 00 05 8c 06 40 20 01 00 02 00 50 00 00 00 00
        00 00 00 00 00 01 20 01 00 02 00 00 00 00 00 00
        00 00 00 00 01 00 9c 43 00 50 00 00 00 00 00 00
        00 00 50 10 20 00 84 4a 00 00";
    const BIG6_IN_TAIL: (u8, usize) = (0x79, 1400);
    /// Ether / 2001:2::100 > 2001:2:50::1 (58) / ICMPv6PacketTooBig / Raw
    const BIG6_OUT: &str = "
        02 00 00 00 00 cc 02 00 00 00 00 aa 86 dd 60 00
        00 00 04 d8 3a 40 20 01 00 02 00 00 00 00 00 00
        00 00 00 00 01 00 20 01 00 02 00 50 00 00 00 00
        00 00 00 00 00 01 02 00 63 c4 00 00 05 b0 60 00
        00 00 05 8c 06 40 20 01 00 02 00 50 00 00 00 00
        00 00 00 00 00 01 20 01 00 02 00 00 00 00 00 00
        00 00 00 00 01 00 9c 43 00 50 00 00 00 00 00 00
        00 00 50 10 20 00 84 4a 00 00";
    const BIG6_OUT_TAIL: (u8, usize) = (0x79, 1172);
    /// Ether / ARP who has 198.18.100.1 says 198.18.50.1
    const ARP_IN: &str = "
        ff ff ff ff ff ff 02 00 00 00 00 cc 08 06 00 01
        08 00 06 04 00 01 02 00 00 00 00 cc c6 12 32 01
        00 00 00 00 00 00 c6 12 64 01";
    /// Ether / ARP is at 02:00:00:00:00:aa says 198.18.100.1
    const ARP_OUT: &str = "
        02 00 00 00 00 cc 02 00 00 00 00 aa 08 06 00 01
        08 00 06 04 00 02 02 00 00 00 00 aa c6 12 64 01
        02 00 00 00 00 cc c6 12 32 01";
    /// Ether / IPv6 / ICMPv6ND_NS / ICMPv6 Neighbor Discovery Option - Source Link-Layer Address 02:00:00:00:00:cc
    const NS_IN: &str = "
        33 33 ff 00 01 00 02 00 00 00 00 cc 86 dd 60 00
        00 00 00 20 3a ff 20 01 00 02 00 50 00 00 00 00
        00 00 00 00 00 01 ff 02 00 00 00 00 00 00 00 00
        00 01 ff 00 01 00 87 00 34 7c 00 00 00 00 20 01
        00 02 00 00 00 00 00 00 00 00 00 00 01 00 01 01
        02 00 00 00 00 cc";
    /// Ether / IPv6 / ICMPv6ND_NA / ICMPv6 Neighbor Discovery Option - Destination Link-Layer Address 02:00:00:00:00:aa
    const NS_OUT: &str = "
        02 00 00 00 00 cc 02 00 00 00 00 aa 86 dd 60 00
        00 00 00 20 3a ff 20 01 00 02 00 00 00 00 00 00
        00 00 00 00 01 00 20 01 00 02 00 50 00 00 00 00
        00 00 00 00 00 01 88 00 b0 9f 60 00 00 00 20 01
        00 02 00 00 00 00 00 00 00 00 00 00 01 00 02 01
        02 00 00 00 00 aa";

    fn bytes(hex: &str, tail: Option<(u8, usize)>) -> Vec<u8> {
        let mut b: Vec<u8> = hex
            .split_whitespace()
            .map(|h| u8::from_str_radix(h, 16).expect("hex byte"))
            .collect();
        if let Some((byte, n)) = tail {
            b.resize(b.len() + n, byte);
        }
        b
    }

    fn control() -> Control {
        let s: MaglevSection = serde_json::from_str(CONFIG).expect("parses");
        Control::new(s.validate().expect("valid")).expect("builds")
    }

    fn run(state: &State, worker: &mut Worker, input: &[u8], now: u32) -> (Verdict, Vec<u8>) {
        let mut f = VecFrame::from_bytes(input);
        let v = process(&mut f, state, worker, now);
        (v, f.data().to_vec())
    }

    /// Input, expected verdict and output, Katran-fixture style.
    fn check(name: &str, input: Vec<u8>, want: Vec<u8>) {
        let c = control();
        let state = c.state();
        let mut w = Worker::new(LB_MAC, &state);
        let (v, out) = run(&state, &mut w, &input, 1);
        assert_eq!(v, Verdict::Tx, "{name}");
        assert_eq!(hex(&out), hex(&want), "{name}");
    }

    fn hex(b: &[u8]) -> String {
        b.chunks(16)
            .map(|c| {
                c.iter()
                    .map(|x| format!("{x:02x}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Sets the 20-bit IPv6 flow label at `l3` to the flow hash's low bits, as the encapsulation does.
    fn with_flow_label(mut frame: Vec<u8>, l3: usize, key: FlowKey) -> Vec<u8> {
        let label = (key.hash(7) as u32) & 0xf_ffff;
        let word = u32::from_be_bytes([frame[l3], frame[l3 + 1], frame[l3 + 2], frame[l3 + 3]])
            & 0xfff0_0000
            | label;
        frame[l3..l3 + 4].copy_from_slice(&word.to_be_bytes());
        frame
    }

    fn v4(s: &str) -> u128 {
        Addr::from(s.parse::<IpAddr>().expect("ip")).bits
    }

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
    fn fixture_l2_dsr() {
        check("dsr", bytes(DSR_IN, None), bytes(DSR_OUT, None));
    }

    #[test]
    fn fixture_vlan_tag_is_kept() {
        check("vlan", bytes(VLAN_IN, None), bytes(VLAN_OUT, None));
    }

    #[test]
    fn fixture_too_big_ipv4_gets_fragmentation_needed() {
        check(
            "big4",
            bytes(BIG4_IN, Some(BIG4_IN_TAIL)),
            bytes(BIG4_OUT, None),
        );
    }

    #[test]
    fn fixture_too_big_ipv6_gets_packet_too_big() {
        check(
            "big6",
            bytes(BIG6_IN, Some(BIG6_IN_TAIL)),
            bytes(BIG6_OUT, Some(BIG6_OUT_TAIL)),
        );
    }

    #[test]
    fn fixture_arp_reply() {
        check("arp", bytes(ARP_IN, None), bytes(ARP_OUT, None));
    }

    #[test]
    fn gratuitous_arp_and_multicast_senders_are_not_answered() {
        let c = control();
        let state = c.state();
        let mut w = Worker::new(LB_MAC, &state);
        // Ethernet (14) + ARP: sender MAC at 22, sender IP at 28, target IP at 38.
        let mut announce = bytes(ARP_IN, None);
        let vip: [u8; 4] = announce[38..42].try_into().expect("4 bytes");
        announce[28..32].copy_from_slice(&vip);
        assert_eq!(
            run(&state, &mut w, &announce, 1).0,
            Verdict::Drop(DropReason::NotIp)
        );
        let mut multicast = bytes(ARP_IN, None);
        multicast[22] |= 1;
        assert_eq!(
            run(&state, &mut w, &multicast, 1).0,
            Verdict::Drop(DropReason::Malformed)
        );
        assert_eq!(w.counters().arp_replies, 0);
    }

    #[test]
    fn fixture_neighbor_advertisement() {
        check("ns", bytes(NS_IN, None), bytes(NS_OUT, None));
    }

    /// An Ethernet/IPv4/TCP frame (checksums are not checked on this path, so they stay zero).
    fn tcp4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, flags: u8) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 0xaa, 2, 0, 0, 0, 0, 0xcc, 8, 0];
        f.extend_from_slice(&[0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0]);
        f.extend_from_slice(&src);
        f.extend_from_slice(&dst);
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0x20, 0, 0, 0, 0, 0]);
        f
    }

    /// An IPv4 fragment of protocol `proto` at byte `offset` with `more` fragments, carrying `payload`.
    fn frag4(
        src: [u8; 4],
        dst: [u8; 4],
        proto: u8,
        id: u16,
        offset: u16,
        more: bool,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 0xaa, 2, 0, 0, 0, 0, 0xcc, 8, 0];
        let total = (20 + payload.len()) as u16;
        let fo = (offset / 8) | if more { 0x2000 } else { 0 };
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(&fo.to_be_bytes());
        f.extend_from_slice(&[64, proto, 0, 0]);
        f.extend_from_slice(&src);
        f.extend_from_slice(&dst);
        f.extend_from_slice(payload);
        f
    }

    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    const FIN_ACK: u8 = 0x11;
    const POOL: [u8; 4] = [198, 18, 100, 4];

    /// The backend (outer IPv4 destination) a GRE frame goes to.
    fn outer_dst(out: &[u8]) -> [u8; 4] {
        [out[30], out[31], out[32], out[33]]
    }

    #[test]
    fn drops_are_counted_by_reason() {
        let c = control();
        let state = c.state();
        let mut w = Worker::new(LB_MAC, &state);
        let cases: Vec<(Vec<u8>, DropReason)> = vec![
            (
                tcp4([198, 18, 50, 1], 1, [198, 18, 100, 9], 80, SYN),
                DropReason::NoVip,
            ),
            (
                tcp4([198, 18, 50, 1], 1, [198, 18, 100, 1], 81, SYN),
                DropReason::NoVip,
            ),
            (
                tcp4([198, 18, 50, 1], 1, [198, 18, 100, 6], 80, SYN),
                DropReason::NoBackend,
            ),
            (
                tcp4([198, 18, 50, 1], 1, [198, 18, 100, 1], 80, SYN)[..40].to_vec(),
                DropReason::Malformed,
            ),
            (vec![0; 10], DropReason::Malformed),
            (
                {
                    let mut lldp = bytes(GRE4_IN, None);
                    lldp[12..14].copy_from_slice(&[0x88, 0xcc]);
                    lldp
                },
                DropReason::NotIp,
            ),
            (
                {
                    let mut arp = bytes(ARP_IN, None);
                    arp[41] = 9; // who-has 198.18.100.9: not ours
                    arp
                },
                DropReason::NotIp,
            ),
            (
                frag4(
                    [198, 18, 50, 1],
                    [198, 18, 100, 5],
                    17,
                    9,
                    8,
                    false,
                    &[0; 8],
                ),
                DropReason::FragmentAmbiguous,
            ),
        ];
        for (i, (frame, reason)) in cases.iter().enumerate() {
            let (v, out) = run(&state, &mut w, frame, 1);
            assert_eq!(v, Verdict::Drop(*reason), "case {i}");
            assert_eq!(&out, frame, "case {i}: a dropped frame is not modified");
        }
        let counters = w.counters();
        assert_eq!(counters.rx_packets, cases.len() as u64);
        assert_eq!(counters.tx_packets, 0);
        assert_eq!(counters.drops_for(DropReason::NoVip), 2);
        assert_eq!(counters.drops_for(DropReason::Malformed), 2);
        assert_eq!(counters.drops_for(DropReason::NotIp), 2);
    }

    #[test]
    fn claim_all_off_leaves_arp_and_nd_unanswered() {
        let s: MaglevSection =
            serde_json::from_str(&CONFIG.replacen("{", r#"{ "claim_all": false,"#, 1))
                .expect("parses");
        let c = Control::new(s.validate().expect("valid")).expect("builds");
        let state = c.state();
        let mut w = Worker::new(LB_MAC, &state);
        assert_eq!(
            run(&state, &mut w, &bytes(ARP_IN, None), 1).0,
            Verdict::Drop(DropReason::NotIp)
        );
        assert_eq!(
            run(&state, &mut w, &bytes(NS_IN, None), 1).0,
            Verdict::Drop(DropReason::NoVip)
        );
    }

    #[test]
    fn counters_per_vip_and_backend() {
        let c = control();
        let state = c.state();
        let mut w = Worker::new(LB_MAC, &state);
        let input = bytes(GRE4_IN, None);
        for now in 1..=3 {
            assert_eq!(run(&state, &mut w, &input, now).0, Verdict::Tx);
        }
        let web4 = state.vip_by_name("web4").expect("vip");
        let b1 = web4.backends()[0].id;
        let counters = w.counters().clone();
        assert_eq!(counters.vips[web4.id as usize].packets, 3);
        assert_eq!(
            counters.vips[web4.id as usize].bytes,
            3 * input.len() as u64
        );
        assert_eq!(
            counters.vips[web4.id as usize].new_conns, 1,
            "then found in the connection table"
        );
        assert_eq!(
            counters.backends[b1 as usize],
            counters.vips[web4.id as usize]
        );
        assert_eq!((counters.tx_packets, counters.conntrack.inserted), (3, 1));
    }

    /// Sends a non-SYN packet of each flow and returns the backend it went to.
    fn backends_of(
        state: &State,
        w: &mut Worker,
        flows: &[([u8; 4], u16)],
        flags: u8,
        now: u32,
    ) -> Vec<[u8; 4]> {
        flows
            .iter()
            .map(|&(src, sport)| {
                let (v, out) = run(state, w, &tcp4(src, sport, POOL, 8080, flags), now);
                assert_eq!(v, Verdict::Tx);
                outer_dst(&out)
            })
            .collect()
    }

    fn flows(n: u32) -> Vec<([u8; 4], u16)> {
        (0..n)
            .map(|i| {
                (
                    [198, 18, 60 + (i % 7) as u8, (i % 251) as u8],
                    1024 + i as u16,
                )
            })
            .collect()
    }

    #[test]
    fn flows_spread_over_the_pool_and_stay_put() {
        let c = control();
        let state = c.state();
        let mut w = Worker::new(LB_MAC, &state);
        let f = flows(4000);
        let first = backends_of(&state, &mut w, &f, SYN, 1);
        for b in 1..=4u8 {
            let n = first.iter().filter(|d| **d == [198, 18, 2, b]).count();
            assert!(
                (800..1200).contains(&n),
                "backend {b} got {n} of 4000 flows"
            );
        }
        assert_eq!(backends_of(&state, &mut w, &f, ACK, 2), first);
        // A second worker (another queue, another instance) with an empty table picks the same backends.
        let mut other = Worker::new(LB_MAC, &state);
        assert_eq!(backends_of(&state, &mut other, &f, ACK, 2), first);
    }

    #[test]
    fn removing_a_backend_moves_only_its_flows() {
        let mut c = control();
        let mut w = Worker::new(LB_MAC, &c.state());
        let f = flows(2000);
        let before = backends_of(&c.state(), &mut w, &f, SYN, 1);
        c.remove_backend("pool", "p1").expect("removes");
        let after = backends_of(&c.state(), &mut w, &f, ACK, 2);
        let gone = [198, 18, 2, 2];
        let mut moved = 0;
        for (b, a) in before.iter().zip(&after) {
            if *b == gone {
                assert_ne!(*a, gone);
                moved += 1;
            } else {
                assert_eq!(a, b, "a flow of a remaining backend moved");
            }
        }
        assert!(moved > 300);
        assert_eq!(w.counters().rerouted, moved);
    }

    #[test]
    fn adding_a_backend_keeps_established_flows() {
        let mut c = control();
        let mut w = Worker::new(LB_MAC, &c.state());
        let f = flows(2000);
        let before = backends_of(&c.state(), &mut w, &f, SYN, 1);
        let extra = crate::config::BackendSection {
            name: "p4".into(),
            addr: "198.18.2.5".parse().expect("ip"),
            weight: 1,
            mac: None,
        };
        c.add_backend("pool", extra).expect("adds");
        assert_eq!(
            backends_of(&c.state(), &mut w, &f, ACK, 2),
            before,
            "the connection table holds them"
        );
        // New flows do reach the new backend.
        let fresh: Vec<([u8; 4], u16)> = (0..2000)
            .map(|i| ([198, 18, 70, (i % 251) as u8], 20000 + i as u16))
            .collect();
        let to_new = backends_of(&c.state(), &mut w, &fresh, SYN, 2)
            .iter()
            .filter(|d| **d == [198, 18, 2, 5])
            .count();
        assert!(
            (300..500).contains(&to_new),
            "{to_new} of 2000 new flows on the new backend"
        );
    }

    /// An ICMPv4 error `kind`/`code` from a router to `vip` quoting `quoted` (the start of a packet the
    /// VIP sent).
    fn icmp4_error(vip: [u8; 4], kind: u8, code: u8, quoted: &[u8]) -> Vec<u8> {
        let mut icmp = vec![kind, code, 0, 0, 0, 0, 0x05, 0x78];
        icmp.extend_from_slice(quoted);
        frag4([198, 18, 70, 1], vip, 1, 9, 0, false, &icmp)
    }

    /// What a backend sends to a client under direct server return, from the VIP: IP and TCP headers.
    fn reply_of(src: [u8; 4], sport: u16) -> Vec<u8> {
        tcp4(POOL, 8080, src, sport, SYN | ACK)[14..].to_vec()
    }

    #[test]
    fn icmp_errors_follow_the_connection_they_quote() {
        let mut c = control();
        let mut w = Worker::new(LB_MAC, &c.state());
        let f = flows(1000);
        let first = backends_of(&c.state(), &mut w, &f, SYN, 1);
        // Drained, p2 keeps its connections while the Maglev table sends these flows elsewhere: errors
        // must follow the connection table, not the Maglev table.
        c.drain("pool", "p2").expect("drains");
        let state = c.state();
        let mut followed_drained = 0;
        for (&(src, sport), backend) in f.iter().zip(&first) {
            for (kind, code) in [(3, 4), (11, 0), (12, 0)] {
                let error = icmp4_error(POOL, kind, code, &reply_of(src, sport));
                let (v, out) = run(&state, &mut w, &error, 2);
                assert_eq!(v, Verdict::Tx);
                assert_eq!(
                    outer_dst(&out),
                    *backend,
                    "error {kind}/{code} for {src:?}:{sport}"
                );
                assert_eq!(
                    &out[38..],
                    &error[14..],
                    "the whole ICMP packet is the GRE payload"
                );
            }
            followed_drained += usize::from(*backend == [198, 18, 2, 3]);
        }
        assert!(
            followed_drained > 150,
            "{followed_drained} errors of drained connections"
        );
        assert_eq!(w.counters().icmp_errors, 3000);

        // A worker that never saw these flows sends their errors where the Maglev table sends the flows,
        // and records nothing: an error opens no connection.
        let mut fresh = Worker::new(LB_MAC, &state);
        for &(src, sport) in &f[..50] {
            let (v, out) = run(
                &state,
                &mut fresh,
                &icmp4_error(POOL, 3, 4, &reply_of(src, sport)),
                2,
            );
            assert_eq!(v, Verdict::Tx);
            let mut probe = Worker::new(LB_MAC, &state);
            let want = backends_of(&state, &mut probe, &[(src, sport)], ACK, 2);
            assert_eq!(outer_dst(&out), want[0]);
        }
        assert_eq!(fresh.conntrack().live(2), 0);

        // Not errors of a VIP's connection: dropped by reason, never forwarded.
        let (src, sport) = f[0];
        let echo = icmp4_error(POOL, 8, 0, &[0; 8]);
        let mut other_sender = reply_of(src, sport);
        other_sender[12..16].copy_from_slice(&[198, 18, 100, 9]);
        let mut udp = reply_of(src, sport);
        udp[9] = 17;
        let mut other_port = reply_of(src, sport);
        other_port[20..22].copy_from_slice(&9u16.to_be_bytes());
        let cases: [(&str, Vec<u8>, DropReason); 6] = [
            ("echo request", echo, DropReason::NoVip),
            (
                "quote from another address",
                icmp4_error(POOL, 3, 4, &other_sender),
                DropReason::NoVip,
            ),
            (
                "quote of another protocol",
                icmp4_error(POOL, 3, 4, &udp),
                DropReason::NoVip,
            ),
            (
                "quote of a port of no VIP",
                icmp4_error([198, 18, 100, 1], 3, 4, &{
                    let mut q = tcp4([198, 18, 100, 1], 9, src, sport, ACK)[14..].to_vec();
                    q.truncate(28);
                    q
                }),
                DropReason::NoVip,
            ),
            (
                "quote without ports",
                icmp4_error(POOL, 3, 4, &reply_of(src, sport)[..22]),
                DropReason::Malformed,
            ),
            (
                "quote shorter than an IP header",
                icmp4_error(POOL, 3, 4, &reply_of(src, sport)[..12]),
                DropReason::Malformed,
            ),
        ];
        for (what, frame, reason) in cases {
            assert_eq!(
                run(&state, &mut w, &frame, 2).0,
                Verdict::Drop(reason),
                "{what}"
            );
        }
        assert_eq!(
            run(&state, &mut w, &icmp4_error(POOL, 3, 4, &other_port), 2).0,
            Verdict::Tx,
            "all-ports VIP"
        );
    }

    #[test]
    fn icmpv6_packet_too_big_follows_its_connection() {
        let c = control();
        let state = c.state();
        let mut w = Worker::new(LB_MAC, &state);
        // GRE6_IN: client 2001:2:50::1 -> VIP web6 2001:2::100:80; its only backend is 2001:2:1::1.
        let (v, _) = run(&state, &mut w, &bytes(GRE6_IN, None), 1);
        assert_eq!(v, Verdict::Tx);
        let client: Ipv6Addr = "2001:2:50::1".parse().unwrap();
        let vip: Ipv6Addr = "2001:2::100".parse().unwrap();
        let mut quoted = vec![0x60, 0, 0, 0, 0, 20, 6, 64];
        quoted.extend_from_slice(&vip.octets());
        quoted.extend_from_slice(&client.octets());
        quoted.extend_from_slice(&80u16.to_be_bytes());
        quoted.extend_from_slice(&40000u16.to_be_bytes());
        quoted.extend_from_slice(&[0; 16]);
        let mut icmp = vec![2, 0, 0, 0, 0, 0, 0x05, 0x00];
        icmp.extend_from_slice(&quoted);
        let mut frame = vec![
            2, 0, 0, 0, 0, 0xaa, 2, 0, 0, 0, 0, 0xcc, 0x86, 0xdd, 0x60, 0, 0, 0,
        ];
        frame.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
        frame.extend_from_slice(&[58, 64]);
        frame.extend_from_slice(&"2001:2:70::1".parse::<Ipv6Addr>().unwrap().octets());
        frame.extend_from_slice(&vip.octets());
        frame.extend_from_slice(&icmp);
        let (v, out) = run(&state, &mut w, &frame, 2);
        assert_eq!(v, Verdict::Tx);
        // Outer IPv6 destination: the backend.
        assert_eq!(
            &out[38..54],
            &"2001:2:1::1".parse::<Ipv6Addr>().unwrap().octets()
        );
        assert_eq!(
            &out[14 + 40 + 4..],
            &frame[14..],
            "the whole ICMPv6 packet is the GRE payload"
        );
        assert_eq!(w.counters().icmp_errors, 1);
    }

    #[test]
    fn draining_keeps_flows_and_turns_new_connections_away() {
        let mut c = control();
        let mut w = Worker::new(LB_MAC, &c.state());
        let f = flows(2000);
        let before = backends_of(&c.state(), &mut w, &f, SYN, 1);
        c.drain("pool", "p2").expect("drains");
        let drained = [198, 18, 2, 3];
        assert_eq!(
            backends_of(&c.state(), &mut w, &f, ACK, 2),
            before,
            "established flows stay, drained or not"
        );
        // A FIN keeps going to the drained backend too.
        assert_eq!(backends_of(&c.state(), &mut w, &f, FIN_ACK, 3), before);
        // A new SYN on the same 5-tuple is a new connection: never to the drained backend.
        let again = backends_of(&c.state(), &mut w, &f, SYN, 4);
        assert!(again.iter().all(|d| *d != drained));
        for (b, a) in before.iter().zip(&again) {
            if *b != drained {
                assert_eq!(a, b);
            }
        }
    }

    /// Table A (p0-p3), then B (p4 added): the flows whose slot B gives to p4.
    fn moved_by_adding_p4(c: &mut Control, f: &[([u8; 4], u16)]) -> (Vec<[u8; 4]>, Vec<usize>) {
        let mut w = Worker::new(LB_MAC, &c.state());
        let under_a = backends_of(&c.state(), &mut w, f, SYN, 1);
        let p4 = crate::config::BackendSection {
            name: "p4".into(),
            addr: "198.18.2.5".parse().expect("ip"),
            weight: 1,
            mac: None,
        };
        c.add_backend("pool", p4).expect("adds");
        let mut fresh = Worker::new(LB_MAC, &c.state());
        let under_b = backends_of(&c.state(), &mut fresh, f, SYN, 2);
        let moved: Vec<usize> = (0..f.len()).filter(|&i| under_a[i] != under_b[i]).collect();
        assert!(
            moved.iter().all(|&i| under_b[i] == [198, 18, 2, 5]),
            "adding a backend moves flows only to it"
        );
        assert!(moved.len() > 100, "{} of {} moved", moved.len(), f.len());
        (under_a, moved)
    }

    #[test]
    fn connections_that_lose_their_entry_keep_their_backend_after_a_table_change() {
        let mut c = control();
        c.set_now(Some(1_000_000));
        let f = flows(1000);
        let (under_a, moved) = moved_by_adding_p4(&mut c, &f);
        assert_eq!(
            c.state()
                .vip_by_name("pool")
                .expect("vip")
                .past_tables()
                .len(),
            1
        );
        // Another worker (another queue, instance or a restart): an empty connection table. Packets of
        // established connections go to the backend table A gave them, and stay there (recorded).
        let mut other = Worker::new(LB_MAC, &c.state());
        assert_eq!(backends_of(&c.state(), &mut other, &f, ACK, 3), under_a);
        assert_eq!(other.counters().past_table, f.len() as u64);
        assert_eq!(backends_of(&c.state(), &mut other, &f, ACK, 4), under_a);
        assert_eq!(other.counters().past_table, f.len() as u64, "once per flow");
        // A SYN is a new connection: the current table B.
        let mut syn = Worker::new(LB_MAC, &c.state());
        let new = backends_of(&c.state(), &mut syn, &f, SYN, 3);
        assert!(moved.iter().all(|&i| new[i] == [198, 18, 2, 5]));
        assert_eq!(syn.counters().past_table, 0);
        // UDP follows the current table (no connections to keep).
        let udp_vip = c.state();
        let udp = udp_vip.vip_by_name("pool").expect("vip");
        assert!(udp.has_past());
    }

    #[test]
    fn past_tables_give_way_when_the_old_backend_is_removed_or_the_window_passes() {
        let mut c = control();
        c.set_now(Some(1_000_000));
        let f = flows(1000);
        let (under_a, moved) = moved_by_adding_p4(&mut c, &f);
        // Draining the old backend keeps its connections where they are.
        let victim = under_a[moved[0]];
        let name = format!("p{}", victim[3] - 1);
        c.drain("pool", &name).expect("drains");
        let mut w = Worker::new(LB_MAC, &c.state());
        let drained = backends_of(&c.state(), &mut w, &f, ACK, 3);
        assert_eq!(drained, under_a, "drained backends keep their connections");
        // Removed: its connections go where the current table sends them; everyone else's stay.
        c.remove_backend("pool", &name).expect("removes");
        let current = {
            let mut syn = Worker::new(LB_MAC, &c.state());
            backends_of(&c.state(), &mut syn, &f, SYN, 3)
        };
        let mut w = Worker::new(LB_MAC, &c.state());
        let after = backends_of(&c.state(), &mut w, &f, ACK, 3);
        for i in 0..f.len() {
            if under_a[i] == victim {
                assert_eq!(after[i], current[i], "flow {i} of the removed backend");
            } else {
                assert_eq!(after[i], under_a[i], "flow {i}");
            }
        }
        // Once the TCP idle timeout (900 s) has passed since the change, the past tables are forgotten: every
        // connection without an entry follows the current table.
        c.set_now(Some(1_000_000 + 899));
        assert!(!c.tick(), "nothing to forget yet");
        c.set_now(Some(1_000_000 + 900));
        assert!(c.tick());
        assert!(!c.state().vip_by_name("pool").expect("vip").has_past());
        let mut w = Worker::new(LB_MAC, &c.state());
        assert_eq!(backends_of(&c.state(), &mut w, &f, ACK, 3), current);
        assert_eq!(w.counters().past_table, 0);
    }

    /// An IPv4 UDP packet (or a piece of one) from 198.18.50.1 to `dst`:`dport` carrying `payload`, with the
    /// flags/offset word `frag` (DF = 0x4000, MF = 0x2000) and header options `opts` (a multiple of 4).
    fn udp4_raw(dst: [u8; 4], dport: u16, frag: u16, opts: &[u8], payload: &[u8]) -> Vec<u8> {
        let ihl = 20 + opts.len();
        let mut f = vec![2, 0, 0, 0, 0, 0xaa, 2, 0, 0, 0, 0, 0xcc, 8, 0];
        let total = (ihl + 8 + payload.len()) as u16;
        f.push(0x40 | (ihl / 4) as u8);
        f.push(0x28);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&0x1234u16.to_be_bytes());
        f.extend_from_slice(&frag.to_be_bytes());
        f.extend_from_slice(&[64, 17, 0, 0, 198, 18, 50, 1]);
        f.extend_from_slice(&dst);
        f.extend_from_slice(opts);
        let sum = checksum::internet(&f[14..14 + ihl]);
        f[24..26].copy_from_slice(&sum.to_be_bytes());
        f.extend_from_slice(&5000u16.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(payload);
        f
    }

    /// Runs one frame through `process` and, for [`Verdict::Fragment`], through [`fragment`] with a pool of
    /// `pool` frames: the verdict and the frames sent.
    fn run_fragmenting(
        state: &State,
        w: &mut Worker,
        input: &[u8],
        pool: usize,
    ) -> (Verdict, Vec<Vec<u8>>) {
        let mut f = VecFrame::new(input, 64, 4096);
        let v = process(&mut f, state, w, 1);
        let mut out = Vec::new();
        if v != Verdict::Fragment {
            return (v, out);
        }
        let mut left = pool;
        let n = fragment(
            &mut f,
            state,
            w,
            1,
            || {
                left = left.checked_sub(1)?;
                Some(VecFrame::new(&[], 64, 2048))
            },
            |g| out.push(g.data().to_vec()),
        );
        assert_eq!(n, out.len());
        (v, out)
    }

    /// Checks one GRE-over-IPv4 frame to 198.18.1.5 carrying an inner IPv4 fragment within the 1500-byte
    /// MTU: (inner header length, offset in bytes, MF, inner payload).
    fn inner_fragment(out: &[u8]) -> (usize, usize, bool, Vec<u8>) {
        assert_eq!(&out[6..12], &LB_MAC.0, "from the load balancer");
        assert_eq!(&out[12..14], &[8, 0]);
        let outer = &out[14..34];
        assert_eq!(outer[0], 0x45);
        assert_eq!(&outer[16..20], &[198, 18, 1, 5], "to the backend");
        assert_eq!(outer[9], 47);
        assert_eq!(checksum::internet(outer), 0, "outer checksum");
        let outer_len = usize::from(u16::from_be_bytes([outer[2], outer[3]]));
        assert_eq!(outer_len, out.len() - 14);
        assert!(outer_len <= 1500, "within the MTU: {outer_len}");
        assert_eq!(&out[34..38], &[0, 0, 8, 0], "GRE carrying IPv4");
        let inner = &out[38..];
        let ihl = usize::from(inner[0] & 0xf) * 4;
        assert_eq!(checksum::internet(&inner[..ihl]), 0, "inner checksum");
        assert_eq!(
            usize::from(u16::from_be_bytes([inner[2], inner[3]])),
            inner.len()
        );
        assert_eq!(&inner[4..6], &[0x12, 0x34], "the datagram's id");
        assert_eq!(inner[1], 0x28, "TOS kept");
        assert_eq!(outer[1], 0x28, "TOS copied to the outer header");
        let word = u16::from_be_bytes([inner[6], inner[7]]);
        assert_eq!(word & 0x4000, 0, "no DF");
        (
            ihl,
            usize::from(word & 0x1fff) * 8,
            word & 0x2000 != 0,
            inner[ihl..].to_vec(),
        )
    }

    #[test]
    fn gre_fragments_ipv4_packets_without_df_that_do_not_fit() {
        let c = control();
        let state = c.state();
        let mut w = Worker::new(LB_MAC, &state);
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
        let counters = w.counters();
        assert_eq!(counters.gre_fragmented, 3);
        assert_eq!(counters.gre_fragments, sent as u64);
        assert_eq!(counters.drops_for(DropReason::TooBig), 0);
        assert_eq!(counters.tx_packets, sent as u64 + 1);
    }

    #[test]
    fn gre_fragmentation_copies_only_copied_options_and_counts_an_empty_pool() {
        let c = control();
        let state = c.state();
        let mut w = Worker::new(LB_MAC, &state);
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
        assert_eq!(w.counters().drops_for(DropReason::NoFrame), 1);
        // With DF the client is told the MTU instead (as before).
        let df = udp4_raw([198, 18, 100, 7], 1000, 0x4000, &[], &payload);
        let (v, out) = run_fragmenting(&state, &mut w, &df, 16);
        assert_eq!(v, Verdict::Tx);
        assert!(out.is_empty());
        assert_eq!(w.counters().icmp_too_big, 1);
    }

    #[test]
    fn fin_shortens_the_timeout_and_flows_expire() {
        let mut c = control();
        let mut w = Worker::new(LB_MAC, &c.state());
        let f = flows(500);
        let before = backends_of(&c.state(), &mut w, &f, SYN, 1);
        backends_of(&c.state(), &mut w, &f, FIN_ACK, 2);
        // Past the FIN timeout (30 s) the entries are gone: after a table change the flows follow the table.
        c.remove_backend("pool", "p0").expect("removes");
        let later = backends_of(&c.state(), &mut w, &f, ACK, 2 + 31);
        assert!(w.conntrack().stats().expired > 0);
        let kept = before.iter().zip(&later).filter(|(b, a)| b == a).count();
        assert!(kept < 500 && kept > 200, "{kept}");
    }

    #[test]
    fn fragments_of_a_datagram_reach_one_backend() {
        let c = control();
        let state = c.state();
        let mut w = Worker::new(LB_MAC, &state);
        let mut seen = std::collections::HashSet::new();
        for i in 0..200u16 {
            let src = [198, 18, 61, (i % 200) as u8];
            // First fragment: the TCP header with the ports, then a later fragment without.
            let mut tcp = tcp4(src, 1000 + i, POOL, 8080, ACK)[34..].to_vec();
            tcp.extend_from_slice(&[0xab; 4]);
            let first = frag4(src, POOL, 6, i, 0, true, &tcp);
            let second = frag4(src, POOL, 6, i, 24, false, &[0xcd; 40]);
            let (v1, o1) = run(&state, &mut w, &first, 1);
            let (v2, o2) = run(&state, &mut w, &second, 1);
            assert_eq!((v1, v2), (Verdict::Tx, Verdict::Tx));
            assert_eq!(outer_dst(&o1), outer_dst(&o2), "datagram {i}");
            seen.insert(outer_dst(&o1));
        }
        assert_eq!(seen.len(), 4, "different clients spread over the pool");
        assert_eq!(w.counters().fragments, 400);
        assert_eq!(
            w.conntrack().stats().inserted,
            0,
            "fragments are not connections"
        );
    }

    #[test]
    fn flood_guard_forwards_unrecorded_flows() {
        let s: MaglevSection = serde_json::from_str(&CONFIG.replacen(
            "{",
            r#"{ "flood_guard": { "max_new_conns_per_sec": 10 },"#,
            1,
        ))
        .expect("parses");
        let c = Control::new(s.validate().expect("valid")).expect("builds");
        let state = c.state();
        let mut w = Worker::new(LB_MAC, &state);
        let f = flows(50);
        let first = backends_of(&state, &mut w, &f, SYN, 1);
        assert_eq!(w.conntrack().stats().inserted, 10);
        assert_eq!(w.conntrack().stats().limited, 40);
        // Unrecorded flows still go where the Maglev table says, which is where they went.
        assert_eq!(backends_of(&state, &mut w, &f, ACK, 1), first);
        assert_eq!(w.counters().tx_packets, 100);
    }

    #[test]
    fn worker_adopts_new_settings_and_ids() {
        let mut c = control();
        let mut w = Worker::new(LB_MAC, &c.state());
        let extra = crate::config::BackendSection {
            name: "p9".into(),
            addr: "198.18.2.9".parse().expect("ip"),
            weight: 1000,
            mac: None,
        };
        c.add_backend("pool", extra).expect("adds");
        let state = c.state();
        let id = state.vip_by_name("pool").expect("vip").backends()[4].id;
        // Nearly every new flow goes to the heavy new backend, and its counters exist.
        backends_of(&state, &mut w, &flows(100), SYN, 1);
        assert!(w.counters().backends[id as usize].packets > 90);
    }

    #[test]
    fn burst_equals_one_by_one() {
        let c = control();
        let state = c.state();
        let mut inputs: Vec<Vec<u8>> = vec![
            bytes(GRE4_IN, None),
            bytes(GRE6_IN, None),
            bytes(MIXED_IN, None),
            bytes(DSR_IN, None),
            bytes(VLAN_IN, None),
            bytes(BIG4_IN, Some(BIG4_IN_TAIL)),
            bytes(ARP_IN, None),
            bytes(NS_IN, None),
            vec![1, 2, 3],
            frag4([198, 18, 50, 1], POOL, 6, 1, 8, false, &[0; 8]),
        ];
        // 70 frames: more than two pipeline groups, with repeated flows inside one group.
        for i in 0..60u32 {
            let flags = if i % 3 == 0 { SYN } else { ACK };
            inputs.push(tcp4(
                [198, 18, 60, (i % 20) as u8],
                2000 + (i % 25) as u16,
                POOL,
                443,
                flags,
            ));
        }
        // The VIP lookup remembered from the previous frame: same VIP, a port and an address that are
        // no VIP (a remembered miss), then back.
        for (dst, port) in [
            (POOL, 443),
            (POOL, 444),
            (POOL, 444),
            (POOL, 443),
            ([198, 18, 99, 99], 443),
            ([198, 18, 99, 99], 443),
            (POOL, 443),
        ] {
            inputs.push(tcp4([198, 18, 61, 1], 3000, dst, port, ACK));
        }
        let mut one = Worker::new(LB_MAC, &state);
        let expected: Vec<(Verdict, Vec<u8>)> =
            inputs.iter().map(|f| run(&state, &mut one, f, 5)).collect();
        let mut burst = Worker::new(LB_MAC, &state);
        let mut frames: Vec<VecFrame> = inputs.iter().map(|f| VecFrame::from_bytes(f)).collect();
        let mut verdicts = vec![Verdict::Drop(DropReason::Malformed); frames.len()];
        process_burst(&mut frames, &mut verdicts, &state, &mut burst, 5);
        for (i, ((v, out), f)) in expected.iter().zip(&frames).enumerate() {
            assert_eq!((verdicts[i], f.data()), (*v, &out[..]), "frame {i}");
        }
        assert_eq!(one.counters(), burst.counters());
        // A shorter verdict slice limits the burst instead of panicking.
        let mut two = [Verdict::Tx; 2];
        process_burst(&mut frames, &mut two, &state, &mut burst, 5);
        assert_eq!(burst.counters().rx_packets, inputs.len() as u64 + 2);
    }

    /// The state of [`CONFIG`], built once for all tests that only read it.
    fn shared_state() -> std::sync::Arc<State> {
        static STATE: std::sync::OnceLock<std::sync::Arc<State>> = std::sync::OnceLock::new();
        STATE.get_or_init(|| control().state()).clone()
    }

    fn state_and_worker() -> (std::sync::Arc<State>, Worker) {
        let state = shared_state();
        let w = Worker::new(LB_MAC, &state);
        (state, w)
    }

    /// Whatever the fast path accepts, the full parser decides identically (same VIP, hash, key and header
    /// facts, or the same verdict). `Err` describes a disagreement.
    fn fast_and_full_agree(frame: &[u8]) -> Result<(), String> {
        let state = shared_state();
        let (mut k1, mut m1) = (FlowKey::default(), Meta::default());
        let Some(fast) = classify_fast(frame, &state, &mut k1, &mut m1, &mut { LastVip::NONE })
        else {
            return Ok(());
        };
        let mut w = Worker::new(LB_MAC, &state);
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
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200), headroom in 0usize..80) {
            let (state, mut w) = state_and_worker();
            let mut f = VecFrame::new(&data, headroom, 256);
            let _ = process(&mut f, &state, &mut w, 1);
        }

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

        #[test]
        fn mutated_fixtures_never_panic_and_tx_frames_parse(
            which in 0usize..9,
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            cut in any::<prop::sample::Index>(),
            headroom in 0usize..64,
        ) {
            let inputs = [GRE4_IN, GRE6_IN, MIXED_IN, DSR_IN, VLAN_IN, BIG4_IN, BIG6_IN, ARP_IN, NS_IN];
            let tails = [None, None, None, None, None, Some(BIG4_IN_TAIL), Some(BIG6_IN_TAIL), None, None];
            let mut frame = bytes(inputs[which], tails[which]);
            for (at, value) in flips {
                let i = at.index(frame.len());
                frame[i] = value;
            }
            frame.truncate(cut.index(frame.len() + 1).max(1));
            let (state, mut w) = state_and_worker();
            let mut f = VecFrame::new(&frame, headroom, 2048);
            if process(&mut f, &state, &mut w, 1) == Verdict::Tx {
                prop_assert!(wire::parse_frame(f.data()).is_ok(), "sent an unparsable frame");
            }
        }
    }
}
