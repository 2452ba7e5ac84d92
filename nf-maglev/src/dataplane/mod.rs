//! The packet path: one frame in, a [`Verdict`] out, the frame rewritten in place for transmission on the
//! port it came from (one-armed, like Maglev and Katran).
//!
//! Per packet: parse once and find the VIP (`classify.rs`), hash the flow, ask the port's connection table,
//! else the VIP's Maglev table (`select.rs`), then forward: GRE encapsulation (RFC 2784) in an outer IPv4 or
//! IPv6 header of the backend's family, written into the frame's headroom, or L2 direct server return (only
//! the MAC addresses change) (`encap.rs`). Fragments have no ports past the first, so every fragment is
//! hashed on (source, destination, protocol) and skips the connection table: all fragments of a datagram
//! reach one backend. ICMP errors about a VIP's packets follow the connection they quote, and a packet too
//! big for the tunnel is fragmented or answered with an ICMP error (`icmp.rs`). ARP requests and IPv6
//! neighbour solicitations for VIP addresses are answered in place when the configuration says the data
//! plane sees all traffic (`claim_all`, `neighbor.rs`). Anything else that is not VIP traffic is counted by
//! reason and dropped.
//!
//! The files follow the packet the way Katran's BPF headers do: this one holds the entry points
//! ([`process`], [`process_burst`], [`fragment`]), the [`Verdict`] and what each port owns ([`PortPlane`]);
//! the steps live in the submodules and share the small per-frame records defined here.
//!
//! Invariants: the path never panics on any input (a property test feeds it arbitrary bytes), never
//! allocates and never blocks: the state is an immutable snapshot the caller loaded for the burst,
//! everything mutable is the caller's [`PortPlane`].

mod classify;
mod encap;
#[doc(hidden)]
pub mod fixtures;
mod icmp;
mod neighbor;
mod select;
#[cfg(test)]
mod testing;

pub use encap::{fragment, gre_frame};

use crate::config::{Mac, Mode};
use crate::conntrack::{ConnTrack, FlowKey, Slot};
use crate::control::{State, VipState};
use crate::counters::{Counters, DropReason};
use crate::tunnel::GRE_MAX_OVERHEAD;
use classify::{classify, LastVip};
use cne::frame::Frame;
use cne::wire::{self, EtherType, TcpFlags};
use encap::{encap_gre, l2_dsr};
use select::follow;

/// Largest Ethernet + VLAN header (two tags).
const MAX_L2: usize = 14 + 4 * wire::vlan::MAX_TAGS;

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

/// What the packet path keeps for one port: its connection table, counters and MAC address. A worker
/// thread owns one per port it serves; nothing in it is shared.
#[derive(Debug)]
pub struct PortPlane {
    mac: [u8; 6],
    conntrack: ConnTrack,
    counters: Counters,
    generation: u64,
    /// Connections forwarded from a past table since the last [`PortPlane::take_past_flows`], kept
    /// only once [`PortPlane::keep_past_flows`] was called (the kernel fast path needs them).
    past_flows: Option<Vec<PastFlow>>,
}

/// A connection the data plane forwarded from a past Maglev table of its VIP (a TCP packet other
/// than a SYN it had no entry for; see [`crate::control::VipState::past_pick`]): the kernel fast path
/// does not keep past tables, so it learns these connections from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PastFlow {
    /// The flow.
    pub key: FlowKey,
    /// Its VIP's id.
    pub vip: u32,
    /// The backend the past table gave it.
    pub backend: u32,
    /// Whether the packet was a FIN or RST.
    pub closing: bool,
}

/// Past flows a port keeps between two [`PortPlane::take_past_flows`]; more are not kept (they stay
/// with the workers, which keep forwarding them by their own table).
const PAST_FLOWS_KEPT: usize = 1024;

impl PortPlane {
    /// The plane of a port with the MAC address `mac` (source of every frame it sends), with a connection
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
            past_flows: None,
        };
        w.adopt(state);
        w
    }

    /// The port's MAC address.
    pub fn mac(&self) -> Mac {
        Mac(self.mac)
    }

    /// From now on keeps the connections forwarded from a past table, for
    /// [`take_past_flows`](Self::take_past_flows).
    pub fn keep_past_flows(&mut self) {
        self.past_flows.get_or_insert_with(Vec::new);
    }

    /// The connections forwarded from a past table since the last call (`None` when there are none or
    /// they are not kept). Allocates only when there are some.
    #[inline]
    pub fn take_past_flows(&mut self) -> Option<Vec<PastFlow>> {
        match &mut self.past_flows {
            Some(v) if !v.is_empty() => Some(std::mem::take(v)),
            _ => None,
        }
    }

    /// Keeps a connection forwarded from a past table, if asked to.
    #[cold]
    fn past_flow(&mut self, flow: PastFlow) {
        if let Some(v) = &mut self.past_flows {
            if v.len() < PAST_FLOWS_KEPT {
                v.push(flow);
            }
        }
    }

    /// The connection table.
    pub fn conntrack(&self) -> &ConnTrack {
        &self.conntrack
    }

    /// Copies the connection table's event counts into the counters, then returns them.
    pub fn refresh_counters(&mut self) -> &Counters {
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
pub fn process<F: Frame>(frame: &mut F, state: &State, plane: &mut PortPlane, now: u32) -> Verdict {
    if plane.generation != state.generation {
        plane.adopt(state);
    }
    let (mut key, mut meta, mut last_vip) = (FlowKey::default(), Meta::default(), LastVip::NONE);
    let verdict = match classify(frame, state, plane, &mut key, &mut meta, &mut last_vip) {
        Err(v) => v,
        Ok((vip, hash)) => finish(
            frame,
            &Flow {
                vip,
                key: &key,
                hash,
                slot: plane.conntrack.slot(hash),
                meta,
            },
            state,
            plane,
            now,
        ),
    };
    plane.count(verdict);
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
    plane: &mut PortPlane,
    now: u32,
) {
    if plane.generation != state.generation {
        plane.adopt(state);
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
                plane,
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
                    slots[i] = plane.conntrack.slot(hash);
                    // Parsing the next frames overlaps this bucket's load.
                    tracked[i] = !metas[i].fragment;
                    if tracked[i] {
                        plane.conntrack.prefetch_bucket_at(slots[i]);
                    }
                }
                Err(v) => {
                    vips[i] = None;
                    tracked[i] = false;
                    verdicts[i] = v;
                }
            }
            if lag != 0 && i >= lag && tracked[i - lag] {
                plane.conntrack.prefetch_entry_at(slots[i - lag]);
            }
        }
        if lag == 0 {
            for j in (0..m).filter(|&j| tracked[j]) {
                plane.conntrack.prefetch_entry_at(slots[j]);
            }
        }
        for i in 0..m {
            if i < lag && tracked[m - lag + i] {
                plane.conntrack.prefetch_entry_at(slots[m - lag + i]);
            }
            if let Some(vip) = vips[i] {
                let flow = Flow {
                    vip,
                    key: &keys[i],
                    hash: hashes[i],
                    slot: slots[i],
                    meta: metas[i],
                };
                verdicts[i] = finish(&mut frames[i], &flow, state, plane, now);
            }
            plane.count(verdicts[i]);
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
    /// The flow's place in the port's connection table, from `hash`.
    slot: Slot,
    meta: Meta,
}

/// Chooses the backend of a VIP packet and rewrites the frame for it.
#[inline(always)]
fn finish<F: Frame>(
    frame: &mut F,
    flow: &Flow<'_, '_>,
    state: &State,
    plane: &mut PortPlane,
    now: u32,
) -> Verdict {
    let vip = flow.vip;
    let picked = if flow.meta.fragment {
        plane.counters.fragments += 1;
        vip.pick(flow.hash).map(|(_, b)| (b, false))
    } else if flow.meta.icmp_error {
        plane.counters.icmp_errors += 1;
        follow(vip, flow.key, flow.hash, plane, now, false)
    } else {
        select::select(vip, flow, TcpFlags(flow.meta.tcp_flags), plane, now)
    };
    let Some((backend, new_conn)) = picked else {
        return Verdict::Drop(DropReason::NoBackend);
    };
    let bytes = frame.len();
    let outcome = match vip.mode {
        Mode::L2dsr => l2_dsr(frame, plane.mac, backend),
        Mode::Gre => encap_gre(frame, flow, state, plane.mac, backend),
    };
    match outcome {
        Outcome::Forwarded => {
            plane
                .counters
                .forwarded(vip.id, backend.id, bytes, new_conn);
            Verdict::Tx
        }
        Outcome::Replied => {
            // The packet itself is dropped as too big; the port sends the ICMP error in its place.
            plane.counters.drop(DropReason::TooBig);
            plane.counters.icmp_too_big += 1;
            Verdict::Tx
        }
        Outcome::Fragment => fragmenting(plane, vip.id, backend.id, bytes, new_conn),
        Outcome::Dropped(reason) => Verdict::Drop(reason),
    }
}

/// Counts a packet [`fragment`] will send (as forwarded: the load balancer chose its backend).
#[cold]
#[inline(never)]
fn fragmenting(
    plane: &mut PortPlane,
    vip: u32,
    backend: u32,
    bytes: usize,
    new_conn: bool,
) -> Verdict {
    plane.counters.forwarded(vip, backend, bytes, new_conn);
    plane.counters.gre_fragmented += 1;
    Verdict::Fragment
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

/// Writes destination and source MAC, the VLAN tags of `old_l2` (the original header) and `ethertype`.
#[inline(always)]
fn write_l2(data: &mut [u8], old_l2: &[u8], dst: [u8; 6], src: [u8; 6], ethertype: EtherType) {
    let l3 = old_l2.len();
    data[0..6].copy_from_slice(&dst);
    data[6..12].copy_from_slice(&src);
    data[12..l3 - 2].copy_from_slice(&old_l2[12..l3 - 2]);
    data[l3 - 2..l3].copy_from_slice(&u16::from(ethertype).to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use cne::frame::VecFrame;
    use proptest::prelude::*;

    #[test]
    fn fixture_l2_dsr() {
        check("dsr", bytes(DSR_IN, None), bytes(DSR_OUT, None));
    }

    #[test]
    fn drops_are_counted_by_reason() {
        let c = control();
        let state = c.state();
        let mut w = PortPlane::new(LB_MAC, &state);
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
        let counters = w.refresh_counters();
        assert_eq!(counters.rx_packets, cases.len() as u64);
        assert_eq!(counters.tx_packets, 0);
        assert_eq!(counters.drops_for(DropReason::NoVip), 2);
        assert_eq!(counters.drops_for(DropReason::Malformed), 2);
        assert_eq!(counters.drops_for(DropReason::NotIp), 2);
    }

    #[test]
    fn counters_per_vip_and_backend() {
        let c = control();
        let state = c.state();
        let mut w = PortPlane::new(LB_MAC, &state);
        let input = bytes(GRE4_IN, None);
        for now in 1..=3 {
            assert_eq!(run(&state, &mut w, &input, now).0, Verdict::Tx);
        }
        let web4 = state.vip_by_name("web4").expect("vip");
        let b1 = web4.backends()[0].id;
        let counters = w.refresh_counters().clone();
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

    #[test]
    fn plane_adopts_new_settings_and_ids() {
        let mut c = control();
        let mut w = PortPlane::new(LB_MAC, &c.state());
        let extra = crate::config::BackendSection {
            check: None,
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
        assert!(w.refresh_counters().backends[id as usize].packets > 90);
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
        let mut one = PortPlane::new(LB_MAC, &state);
        let expected: Vec<(Verdict, Vec<u8>)> =
            inputs.iter().map(|f| run(&state, &mut one, f, 5)).collect();
        let mut burst = PortPlane::new(LB_MAC, &state);
        let mut frames: Vec<VecFrame> = inputs.iter().map(|f| VecFrame::from_bytes(f)).collect();
        let mut verdicts = vec![Verdict::Drop(DropReason::Malformed); frames.len()];
        process_burst(&mut frames, &mut verdicts, &state, &mut burst, 5);
        for (i, ((v, out), f)) in expected.iter().zip(&frames).enumerate() {
            assert_eq!((verdicts[i], f.data()), (*v, &out[..]), "frame {i}");
        }
        assert_eq!(one.refresh_counters(), burst.refresh_counters());
        // A shorter verdict slice limits the burst instead of panicking.
        let mut two = [Verdict::Tx; 2];
        process_burst(&mut frames, &mut two, &state, &mut burst, 5);
        assert_eq!(burst.refresh_counters().rx_packets, inputs.len() as u64 + 2);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200), headroom in 0usize..80) {
            let (state, mut w) = state_and_plane();
            let mut f = VecFrame::new(&data, headroom, 256);
            let _ = process(&mut f, &state, &mut w, 1);
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
            let (state, mut w) = state_and_plane();
            let mut f = VecFrame::new(&frame, headroom, 2048);
            if process(&mut f, &state, &mut w, 1) == Verdict::Tx {
                prop_assert!(wire::parse_frame(f.data()).is_ok(), "sent an unparsable frame");
            }
        }
    }
}
