//! Worker threads: the packet loop of one `threads` entry and the reports it publishes.
//!
//! A worker owns its ports (one AF_XDP socket per lport) and, per port, a [`dataplane::PortPlane`]: the
//! connection table, counters and source MAC of that port. Flows of a queue always arrive on that queue,
//! so a table per port is a table per flow set, as Maglev's per-thread tables are.
//!
//! Loop: cne's shared packet loop ([`cne::instance::Worker::serve`]: receive a burst per port, send what
//! comes back on the same port, reap and kick when idle, spin or sleep). Per burst this worker loads the
//! published [`State`](nf_maglev::control::State) once (arc-swap guard: no lock, no reference count) and
//! runs [`dataplane::process_burst`] over it, which overlaps the connection-table cache misses of the
//! burst's flows. Nothing in the loop allocates, locks or makes a system call per packet: the receive
//! and transmit vectors are reserved once, and the rings are driven by index arithmetic in `cne`.
//!
//! Reports: a few times per second (never per packet) the worker copies its counters and the ports'
//! statistics (one `getsockopt(XDP_STATISTICS)` per port) into a fresh [`PortReport`] list and publishes it
//! with one pointer swap into its [`ReportSlot`]; the metrics and admin handlers read the latest list at request
//! time. Counting live connection-table entries scans the table, so that happens once per second.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use cne::instance::{PortLoop, BURST};
use cne::xsk::packet::Packet;
use cne::xsk::poll::WaitStats;
use cne::xsk::port::Port;
use cne::xsk::stats::PortStats;
use nf_maglev::config::Mac;
use nf_maglev::control::SharedState;
use nf_maglev::counters::Counters;
use nf_maglev::dataplane::{self, Verdict};

/// How often a worker counts its live connection-table entries (a full table scan).
pub(crate) const COUNT_ENTRIES_EVERY: Duration = Duration::from_secs(1);

/// What a worker publishes about one of its ports.
#[derive(Debug, Clone)]
pub(crate) struct PortReport {
    /// Lport name (`"netdev:tag"`).
    pub(crate) lport: String,
    /// Interface.
    pub(crate) netdev: String,
    /// Queue id.
    pub(crate) queue: u32,
    /// The socket's negotiated mode (`native/copy`, ...).
    pub(crate) mode: String,
    /// Port counters, kernel `XDP_STATISTICS` included.
    pub(crate) stats: PortStats,
    /// Load-balancer counters of the port's data plane.
    pub(crate) counters: Counters,
    /// Live connection-table entries at the last count.
    pub(crate) conntrack_entries: u64,
    /// Connection-table capacity.
    pub(crate) conntrack_capacity: u64,
    /// When the worker published this report: a worker that stops publishing has stalled.
    pub(crate) at: Instant,
}

/// Where a worker publishes its reports: replaced whole, read without locking.
pub(crate) type ReportSlot = ArcSwap<Vec<PortReport>>;

/// A new, empty slot.
pub(crate) fn new_report_slot() -> Arc<ReportSlot> {
    Arc::new(ArcSwap::from_pointee(Vec::new()))
}

/// Seconds since `epoch`, the connection tables' clock (one-second granularity is all they need).
fn clock(epoch: Instant, now: Instant) -> u32 {
    u32::try_from(now.saturating_duration_since(epoch).as_secs()).unwrap_or(u32::MAX)
}

/// Everything a worker thread needs besides its cne worker.
#[derive(Debug)]
pub(crate) struct Setup {
    /// Name and source MAC of each lport, in the order of the worker's lports.
    pub(crate) lports: Vec<(String, Mac)>,
    /// The published state.
    pub(crate) shared: SharedState,
    /// Where to publish reports.
    pub(crate) slot: Arc<ReportSlot>,
    /// Set by the main thread to end the loop.
    pub(crate) stop: Arc<AtomicBool>,
    /// Start of the connection-table clock (shared by all workers).
    pub(crate) epoch: Instant,
    /// Where to send the connections forwarded from a past table (with the kernel fast path).
    pub(crate) past_flows: Option<crossbeam_channel::Sender<Vec<dataplane::PastFlow>>>,
}

/// Runs the packet loop of `w` on the calling thread until `setup.stop` is set: cne's shared loop
/// ([`cne::instance::Worker::serve`]) with the load balancer's burst handling.
pub(crate) fn run(w: cne::instance::Worker, setup: Setup) -> anyhow::Result<()> {
    let Setup {
        lports,
        shared,
        slot,
        stop,
        epoch,
        past_flows,
    } = setup;
    let planes: Vec<dataplane::PortPlane> = {
        let state = shared.load();
        lports
            .iter()
            .map(|&(_, mac)| {
                let mut plane = dataplane::PortPlane::new(mac, &state);
                if past_flows.is_some() {
                    plane.keep_past_flows();
                }
                plane
            })
            .collect()
    };
    let entries = vec![0u64; planes.len()];
    w.serve(
        &stop,
        LbLoop {
            lports,
            shared,
            slot,
            epoch,
            planes,
            entries,
            verdicts: [Verdict::Tx; BURST],
            last_count: None,
            past_flows,
        },
    )?;
    Ok(())
}

/// The load balancer's part of the shared packet loop.
struct LbLoop {
    lports: Vec<(String, Mac)>,
    shared: SharedState,
    slot: Arc<ReportSlot>,
    epoch: Instant,
    /// One data plane per port, in the order of the ports.
    planes: Vec<dataplane::PortPlane>,
    /// Live connection-table entries per port at the last count.
    entries: Vec<u64>,
    verdicts: [Verdict; BURST],
    last_count: Option<Instant>,
    past_flows: Option<crossbeam_channel::Sender<Vec<dataplane::PastFlow>>>,
}

impl PortLoop for LbLoop {
    fn tx_capacity(&self) -> usize {
        // Room for the GRE packets of fragmented packets too (a few per packet), so pushing never
        // allocates.
        BURST * 8
    }

    fn burst<'p>(
        &mut self,
        index: usize,
        port: &mut Port<'p>,
        rx: &mut Vec<Packet<'p>>,
        tx: &mut Vec<Packet<'p>>,
    ) {
        let now = clock(self.epoch, Instant::now());
        let state = self.shared.load();
        let plane = &mut self.planes[index];
        dataplane::process_burst(rx, &mut self.verdicts, &state, plane, now);
        for (mut pkt, v) in rx.drain(..).zip(&self.verdicts) {
            // A dropped packet's frame goes back to the pool here.
            match *v {
                Verdict::Tx => tx.push(pkt),
                Verdict::Drop(_) => {}
                // Rare: sent as several GRE packets in new frames of the port's pool.
                Verdict::Fragment => {
                    dataplane::fragment(
                        &mut pkt,
                        &state,
                        plane,
                        now,
                        || port.alloc(),
                        |f| tx.push(f),
                    );
                }
            }
        }
        // Rare (after a table change, for connections this instance did not see begin): the control
        // thread writes them into the kernel fast path's connection map. A full queue loses them for the
        // fast path only; this table keeps forwarding them while their VIP keeps past tables.
        if let Some(flows) = plane.take_past_flows() {
            if let Some(tx) = &self.past_flows {
                let _ = tx.try_send(flows);
            }
        }
    }

    fn report(&mut self, ports: &[Port<'_>], _wait: WaitStats, last: bool) {
        let t = Instant::now();
        // Counting live entries scans the table: once per second, and at the end.
        if last
            || self
                .last_count
                .is_none_or(|c| t.saturating_duration_since(c) >= COUNT_ENTRIES_EVERY)
        {
            let now = clock(self.epoch, t);
            for (e, plane) in self.entries.iter_mut().zip(&self.planes) {
                *e = plane.conntrack().live(now) as u64;
            }
            self.last_count = Some(t);
        }
        publish(
            ports,
            &self.lports,
            &mut self.planes,
            &self.entries,
            &self.slot,
        );
    }
}

/// Copies the ports' statistics and the data planes' counters into a new report list and publishes it.
fn publish(
    ports: &[Port<'_>],
    lports: &[(String, Mac)],
    planes: &mut [dataplane::PortPlane],
    entries: &[u64],
    slot: &ReportSlot,
) {
    let reports = ports
        .iter()
        .zip(lports)
        .zip(planes.iter_mut())
        .zip(entries)
        .map(|(((p, (lport, _)), plane), &e)| PortReport {
            lport: lport.clone(),
            netdev: p.ifname().to_owned(),
            queue: p.qid(),
            mode: p.mode().to_string(),
            stats: p.stats().unwrap_or_else(|_| *p.sw_stats()),
            conntrack_capacity: plane.conntrack().capacity() as u64,
            counters: plane.refresh_counters().clone(),
            conntrack_entries: e,
            at: Instant::now(),
        })
        .collect();
    slot.store(Arc::new(reports));
}

/// The workers whose latest report is older than `limit` at `now`, by the name of their first lport.
pub(crate) fn stalled(slots: &[Arc<ReportSlot>], now: Instant, limit: Duration) -> Vec<String> {
    slots
        .iter()
        .filter_map(|s| {
            let reports = s.load();
            let first = reports.first()?;
            let age = now.saturating_duration_since(first.at);
            (age > limit).then(|| {
                format!(
                    "the worker of {} has not reported for {:.1?}",
                    first.lport, age
                )
            })
        })
        .collect()
}

/// The latest reports of all workers, concatenated.
pub(crate) fn all_reports(slots: &[Arc<ReportSlot>]) -> Vec<PortReport> {
    slots.iter().flat_map(|s| s.load_full().to_vec()).collect()
}

/// The load-balancer counters of all ports, summed.
pub(crate) fn merged_counters(reports: &[PortReport]) -> Counters {
    let mut c = Counters::default();
    for r in reports {
        c.merge(&r.counters);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_counts_whole_seconds_and_saturates() {
        let epoch = Instant::now();
        assert_eq!(clock(epoch, epoch), 0);
        assert_eq!(clock(epoch, epoch + Duration::from_millis(2500)), 2);
        // A time before the epoch (cannot happen with a monotonic clock) reads as 0, not a wrap.
        assert_eq!(clock(epoch + Duration::from_secs(5), epoch), 0);
    }

    #[test]
    fn merged_counters_sum_all_ports() {
        let report = |rx: u64| {
            let mut counters = Counters::new(1, 1);
            counters.rx_packets = rx;
            counters.forwarded(0, 0, 100, true);
            PortReport {
                lport: "x:0".into(),
                netdev: "x".into(),
                queue: 0,
                mode: "native/copy".into(),
                stats: PortStats::default(),
                counters,
                conntrack_entries: 0,
                conntrack_capacity: 8,
                at: Instant::now(),
            }
        };
        let slot_a = new_report_slot();
        let slot_b = new_report_slot();
        slot_a.store(Arc::new(vec![report(3)]));
        slot_b.store(Arc::new(vec![report(4), report(5)]));
        let all = all_reports(&[slot_a.clone(), slot_b.clone()]);
        assert_eq!(all.len(), 3);
        let later = Instant::now() + Duration::from_secs(3);
        assert!(stalled(std::slice::from_ref(&slot_a), later, Duration::from_secs(5)).is_empty());
        let s = stalled(&[slot_a, slot_b], later, Duration::from_secs(2));
        assert_eq!(s.len(), 2);
        assert!(
            s[0].starts_with("the worker of x:0 has not reported for 3."),
            "{s:?}"
        );
        let c = merged_counters(&all);
        assert_eq!(c.rx_packets, 12);
        assert_eq!((c.vips[0].packets, c.backends[0].new_conns), (3, 3));
    }
}
