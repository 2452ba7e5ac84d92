//! Per-worker counters: plain integers the worker owns and bumps per packet (no atomics, no sharing).
//!
//! A worker publishes a copy now and then (per burst or per second, see [`Published`]); the metrics thread
//! sums the copies of all workers with [`Counters::merge`]. VIP and backend counters are indexed by the stable
//! ids of `control` ([`crate::control::VipId`], [`crate::control::BackendId`]), so they survive configuration
//! changes; the arrays grow, off the packet path, when a new state brings new ids.

use crate::conntrack::ConnTrackStats;
use arc_swap::ArcSwap;
use std::sync::Arc;

/// Why a frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Truncated or inconsistent headers.
    Malformed,
    /// Neither IP nor an ARP request the load balancer answers.
    NotIp,
    /// An IP packet for no VIP (address, protocol and port).
    NoVip,
    /// A fragment whose address and protocol belong to several port VIPs and no all-ports VIP.
    FragmentAmbiguous,
    /// The VIP has no backend with a positive weight.
    NoBackend,
    /// After encapsulation the packet would exceed the MTU. Counted also when an ICMP error is sent back in
    /// its place (then the verdict is `Tx` and [`Counters::icmp_too_big`] counts the reply).
    TooBig,
    /// The frame has too little headroom for the encapsulation headers.
    NoHeadroom,
    /// No GRE outer source address of the backend's family (configuration validation prevents this).
    NoLocalAddr,
    /// A packet being fragmented for the tunnel found the worker's frame pool empty (the fragments not yet
    /// sent are dropped).
    NoFrame,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 9] = [
        DropReason::Malformed,
        DropReason::NotIp,
        DropReason::NoVip,
        DropReason::FragmentAmbiguous,
        DropReason::NoBackend,
        DropReason::TooBig,
        DropReason::NoHeadroom,
        DropReason::NoLocalAddr,
        DropReason::NoFrame,
    ];

    /// Metric label.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::NotIp => "not_ip",
            DropReason::NoVip => "no_vip",
            DropReason::FragmentAmbiguous => "fragment_ambiguous",
            DropReason::NoBackend => "no_backend",
            DropReason::TooBig => "too_big",
            DropReason::NoHeadroom => "no_headroom",
            DropReason::NoLocalAddr => "no_local_addr",
            DropReason::NoFrame => "no_frame",
        }
    }

    /// Position in [`Counters::drops`].
    #[inline]
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Traffic of one VIP or backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Traffic {
    /// Packets forwarded.
    pub packets: u64,
    /// Bytes of those packets as received (Ethernet header included).
    pub bytes: u64,
    /// Flows without a connection-table entry that were given a backend by the Maglev table.
    pub new_conns: u64,
}

impl Traffic {
    fn add(&mut self, o: &Traffic) {
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.new_conns += o.new_conns;
    }
}

/// Everything one worker counts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Counters {
    /// Frames given to the data plane.
    pub rx_packets: u64,
    /// Frames the data plane sent back out (forwarded packets and replies).
    pub tx_packets: u64,
    /// Drops by [`DropReason::index`].
    pub drops: [u64; DropReason::ALL.len()],
    /// ARP replies sent for VIP addresses.
    pub arp_replies: u64,
    /// Neighbour advertisements sent for VIP addresses.
    pub nd_replies: u64,
    /// ICMP "fragmentation needed" / ICMPv6 "packet too big" sent to clients.
    pub icmp_too_big: u64,
    /// IP fragments received for a VIP (hashed on source, destination and protocol), whatever became of
    /// them: forwarded, fragmented further, or dropped (then also counted by drop reason).
    pub fragments: u64,
    /// IPv4 packets without DF too big for the tunnel, sent to their backend as several GRE packets.
    pub gre_fragmented: u64,
    /// GRE packets those were sent in (each carries one fragment of the inner packet).
    pub gre_fragments: u64,
    /// ICMP errors to a VIP forwarded to the backend of the connection they quote.
    pub icmp_errors: u64,
    /// Packets whose connection-table entry named a backend that no longer exists: re-balanced.
    pub rerouted: u64,
    /// TCP packets (not SYNs) without a connection-table entry sent by a past Maglev table of their VIP
    /// rather than the current one (connections that began before a table change and moved; see
    /// [`crate::control::VipState::past_pick`]). Recorded in the table, so counted once per flow and worker.
    pub past_table: u64,
    /// Connection-table events.
    pub conntrack: ConnTrackStats,
    /// Per VIP, indexed by VIP id.
    pub vips: Vec<Traffic>,
    /// Per backend, indexed by backend id.
    pub backends: Vec<Traffic>,
}

impl Counters {
    /// Counters with room for ids below the given bounds.
    pub fn new(vip_ids: u32, backend_ids: u32) -> Self {
        let mut c = Self::default();
        c.grow(vip_ids, backend_ids);
        c
    }

    /// Makes room for ids below the bounds (allocates only when they grew: after a configuration change).
    pub fn grow(&mut self, vip_ids: u32, backend_ids: u32) {
        if self.vips.len() < vip_ids as usize {
            self.vips.resize(vip_ids as usize, Traffic::default());
        }
        if self.backends.len() < backend_ids as usize {
            self.backends
                .resize(backend_ids as usize, Traffic::default());
        }
    }

    /// Counts a drop.
    #[inline]
    pub fn drop(&mut self, reason: DropReason) {
        self.drops[reason.index()] += 1;
    }

    /// Drops for one reason.
    pub fn drops_for(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()]
    }

    /// Counts a forwarded packet of `bytes` bytes for a VIP and backend (ids outside the arrays are ignored:
    /// the worker grows them whenever it adopts a new state, so this only guards against misuse).
    #[inline]
    pub fn forwarded(&mut self, vip: u32, backend: u32, bytes: usize, new_conn: bool) {
        let add = |t: &mut Traffic| {
            t.packets += 1;
            t.bytes += bytes as u64;
            t.new_conns += u64::from(new_conn);
        };
        if let Some(t) = self.vips.get_mut(vip as usize) {
            add(t);
        }
        if let Some(t) = self.backends.get_mut(backend as usize) {
            add(t);
        }
    }

    /// Adds another worker's counters to these.
    pub fn merge(&mut self, o: &Counters) {
        self.rx_packets += o.rx_packets;
        self.tx_packets += o.tx_packets;
        for (a, b) in self.drops.iter_mut().zip(o.drops) {
            *a += b;
        }
        self.arp_replies += o.arp_replies;
        self.nd_replies += o.nd_replies;
        self.icmp_too_big += o.icmp_too_big;
        self.fragments += o.fragments;
        self.icmp_errors += o.icmp_errors;
        self.rerouted += o.rerouted;
        self.past_table += o.past_table;
        self.gre_fragmented += o.gre_fragmented;
        self.gre_fragments += o.gre_fragments;
        let (a, b) = (&mut self.conntrack, &o.conntrack);
        a.inserted += b.inserted;
        a.evicted += b.evicted;
        a.expired += b.expired;
        a.limited += b.limited;
        self.grow(len_u32(o.vips.len()), len_u32(o.backends.len()));
        for (a, b) in self.vips.iter_mut().zip(&o.vips) {
            a.add(b);
        }
        for (a, b) in self.backends.iter_mut().zip(&o.backends) {
            a.add(b);
        }
    }
}

fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Where a worker publishes snapshots of its counters for the metrics thread: one atomic pointer swap per
/// publication, a lock-free load for the reader.
#[derive(Debug, Default)]
pub struct Published(ArcSwap<Counters>);

impl Published {
    /// An empty slot.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the snapshot with a copy of `counters` (allocates: call per burst or per second, not per
    /// packet).
    pub fn publish(&self, counters: &Counters) {
        self.0.store(Arc::new(counters.clone()));
    }

    /// The latest snapshot.
    pub fn snapshot(&self) -> Arc<Counters> {
        self.0.load_full()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_have_distinct_names_and_indices() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            assert!(DropReason::ALL[..i].iter().all(|o| o.name() != r.name()));
        }
    }

    #[test]
    fn forwarded_counts_vip_and_backend() {
        let mut c = Counters::new(2, 3);
        c.forwarded(1, 2, 100, true);
        c.forwarded(1, 2, 60, false);
        c.forwarded(9, 9, 60, false); // unknown ids are ignored, not a panic
        assert_eq!(
            c.vips[1],
            Traffic {
                packets: 2,
                bytes: 160,
                new_conns: 1
            }
        );
        assert_eq!(c.backends[2], c.vips[1]);
        assert_eq!(c.vips[0], Traffic::default());
    }

    #[test]
    fn merge_sums_and_grows() {
        let mut a = Counters::new(1, 1);
        a.rx_packets = 5;
        a.drop(DropReason::NoVip);
        a.forwarded(0, 0, 10, true);
        let mut b = Counters::new(2, 4);
        b.rx_packets = 7;
        b.drop(DropReason::NoVip);
        b.drop(DropReason::Malformed);
        b.forwarded(0, 0, 10, false);
        b.forwarded(1, 3, 20, true);
        b.conntrack.evicted = 4;
        a.merge(&b);
        assert_eq!(a.rx_packets, 12);
        assert_eq!(
            (
                a.drops_for(DropReason::NoVip),
                a.drops_for(DropReason::Malformed)
            ),
            (2, 1)
        );
        assert_eq!(
            a.vips[0],
            Traffic {
                packets: 2,
                bytes: 20,
                new_conns: 1
            }
        );
        assert_eq!((a.vips.len(), a.backends.len()), (2, 4));
        assert_eq!(a.backends[3].bytes, 20);
        assert_eq!(a.conntrack.evicted, 4);
    }

    #[test]
    fn published_snapshot_is_a_copy() {
        let p = Published::new();
        let mut c = Counters::new(1, 1);
        c.rx_packets = 3;
        p.publish(&c);
        c.rx_packets = 4;
        assert_eq!(p.snapshot().rx_packets, 3);
    }
}
