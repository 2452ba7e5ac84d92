//! Prometheus metrics, computed at scrape time from the published snapshots.
//!
//! Nothing here runs on the packet path: workers keep plain counters and publish copies a few times per
//! second ([`crate::worker`]); the control thread keeps its own figures in [`ControlStats`]. One custom
//! [`Collector`] registered in a private [`Registry`] turns the latest copies into metric families when
//! `/metrics` is requested, so a scrape costs the workers nothing and there is no per-packet atomic.
//!
//! Names follow the Prometheus conventions: prefix `nf_maglev_`, counters end in `_total`, units in the
//! name (`_bytes_total`), ratios in `0..=1`. Labels: `port` (netdev) and `queue` for per-socket figures,
//! `vip` and `backend` (names from the configuration), `reason` for drops, `result` for reloads.
//! Per-backend figures are reported for the backends of the current state; a removed backend's series
//! end with it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cne::bpf::filter::FilterStats;
use nf_maglev::control::{SharedState, VipState};
use nf_maglev::counters::{DropReason, Traffic};
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricType};
use prometheus::{Encoder, Registry, TextEncoder};

use nf_maglev::http;

use crate::worker::{self, ReportSlot};

/// A metric family: name, help, type and label names.
struct Def {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    labels: &'static [&'static str],
}

const fn counter(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Def {
    Def {
        name,
        help,
        kind: MetricType::COUNTER,
        labels,
    }
}

const fn gauge(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Def {
    Def {
        name,
        help,
        kind: MetricType::GAUGE,
        labels,
    }
}

const PQ: &[&str] = &["port", "queue"];
const VIP: &[&str] = &["vip"];
const BACKEND: &[&str] = &["vip", "backend"];
const NONE: &[&str] = &[];

const PORT_INFO: Def = gauge(
    "nf_maglev_port_info",
    "AF_XDP socket of a queue: lport name and negotiated mode (value 1).",
    &["port", "queue", "lport", "mode"],
);
const PORT_RX_PACKETS: Def = counter(
    "nf_maglev_port_rx_packets_total",
    "Packets received on the AF_XDP socket.",
    PQ,
);
const PORT_RX_BYTES: Def = counter(
    "nf_maglev_port_rx_bytes_total",
    "Bytes received on the AF_XDP socket.",
    PQ,
);
const PORT_TX_PACKETS: Def = counter(
    "nf_maglev_port_tx_packets_total",
    "Packets placed in the TX ring.",
    PQ,
);
const PORT_TX_BYTES: Def = counter(
    "nf_maglev_port_tx_bytes_total",
    "Bytes placed in the TX ring.",
    PQ,
);
const PORT_TX_DROPPED: Def = counter(
    "nf_maglev_port_tx_dropped_total",
    "Packets dropped because the TX ring was full.",
    PQ,
);
const PORT_RX_ERRORS: Def = counter(
    "nf_maglev_port_rx_errors_total",
    "Received descriptors pointing outside the socket's frames.",
    PQ,
);
const PORT_TX_ERRORS: Def = counter(
    "nf_maglev_port_tx_errors_total",
    "Empty packets refused and TX wakeups that failed.",
    PQ,
);
const XDP_RX_DROPPED: Def = counter(
    "nf_maglev_port_xdp_rx_dropped_total",
    "Kernel XDP_STATISTICS rx_dropped: frames dropped for reasons other than invalid descriptors.",
    PQ,
);
const XDP_RX_INVALID: Def = counter(
    "nf_maglev_port_xdp_rx_invalid_descs_total",
    "Kernel XDP_STATISTICS rx_invalid_descs.",
    PQ,
);
const XDP_TX_INVALID: Def = counter(
    "nf_maglev_port_xdp_tx_invalid_descs_total",
    "Kernel XDP_STATISTICS tx_invalid_descs.",
    PQ,
);
const XDP_RX_RING_FULL: Def = counter(
    "nf_maglev_port_xdp_rx_ring_full_total",
    "Kernel XDP_STATISTICS rx_ring_full: frames dropped because the RX ring was full.",
    PQ,
);
const XDP_FILL_EMPTY: Def = counter(
    "nf_maglev_port_xdp_rx_fill_ring_empty_descs_total",
    "Kernel XDP_STATISTICS rx_fill_ring_empty_descs: receives that found the fill ring empty.",
    PQ,
);
const XDP_TX_RING_EMPTY: Def = counter(
    "nf_maglev_port_xdp_tx_ring_empty_descs_total",
    "Kernel XDP_STATISTICS tx_ring_empty_descs: wakeups that found the TX ring empty.",
    PQ,
);
const FILTER_CLAIMED: Def = counter(
    "nf_maglev_xdp_filter_claimed_packets_total",
    "Packets the XDP filter program claimed for the AF_XDP sockets.",
    &["port"],
);
const FILTER_PASSED: Def = counter(
    "nf_maglev_xdp_filter_passed_packets_total",
    "Packets the XDP filter program passed to the kernel (not claimed).",
    &["port"],
);
const FILTER_REDIRECT_FAILED: Def = counter(
    "nf_maglev_xdp_filter_redirect_failed_packets_total",
    "Claimed packets with no socket at their queue, passed to the kernel.",
    &["port"],
);
const FAST_PATH: Def = counter(
    "nf_maglev_xdp_fast_path_packets_total",
    "Packets the XDP fast path (data_path xdp) forwarded itself (result forwarded) or handed to the \
     AF_XDP workers, by reason.",
    &["port", "result"],
);
const FAST_CACHE: Def = counter(
    "nf_maglev_xdp_fast_path_flow_cache_hits_total",
    "Packets of known connections the XDP fast path forwarded from a CPU's flow cache, without its VIP \
     and connection lookups (part of its forwarded packets).",
    &["port"],
);
const CT_ENTRIES: Def = gauge(
    "nf_maglev_conntrack_entries",
    "Live connection-table entries (counted once per second).",
    PQ,
);
const CT_CAPACITY: Def = gauge(
    "nf_maglev_conntrack_capacity",
    "Connection-table capacity in entries.",
    PQ,
);
const CT_INSERTED: Def = counter(
    "nf_maglev_conntrack_inserted_total",
    "New connection-table entries.",
    PQ,
);
const CT_EVICTIONS: Def = counter(
    "nf_maglev_conntrack_evictions_total",
    "Live connection-table entries evicted from a full bucket.",
    PQ,
);
const CT_EXPIRED: Def = counter(
    "nf_maglev_conntrack_expired_total",
    "Connection-table entries found past their timeout.",
    PQ,
);
const CT_LIMITED: Def = counter(
    "nf_maglev_conntrack_flood_limited_total",
    "New flows not recorded because of the flood guard (still forwarded).",
    PQ,
);
const DROPS: Def = counter(
    "nf_maglev_dropped_packets_total",
    "Packets the load balancer dropped, by reason.",
    &["reason"],
);
const REPLIES: Def = counter(
    "nf_maglev_replies_total",
    "Packets the load balancer originated: arp (ARP replies), nd (neighbour advertisements), \
     icmp_too_big (fragmentation needed / packet too big).",
    &["kind"],
);
const FRAGMENTS: Def = counter(
    "nf_maglev_fragments_total",
    "IP fragments received for a VIP (hashed on source, destination and protocol to one backend), \
     forwarded or not: drops are also counted by reason.",
    NONE,
);
const ICMP_ERRORS: Def = counter(
    "nf_maglev_icmp_errors_total",
    "ICMP errors to a VIP (e.g. fragmentation needed) forwarded to the backend of the connection they quote.",
    NONE,
);
const REROUTED: Def = counter(
    "nf_maglev_rerouted_packets_total",
    "Packets of tracked flows whose backend was removed, given a new one by the Maglev table.",
    NONE,
);
const GRE_FRAGMENTED: Def = counter(
    "nf_maglev_gre_fragmented_packets_total",
    "IPv4 packets without DF too big for the GRE tunnel, fragmented and sent as several GRE packets.",
    NONE,
);
const GRE_FRAGMENTS: Def = counter(
    "nf_maglev_gre_fragments_total",
    "GRE packets sent carrying one fragment each of a fragmented packet.",
    NONE,
);
const PAST_TABLE: Def = counter(
    "nf_maglev_past_table_packets_total",
    "TCP packets (not SYNs) without a connection-table entry sent by a past Maglev table of their VIP \
     (connections that began before a table change and moved).",
    NONE,
);
const TABLE_GENERATIONS: Def = gauge(
    "nf_maglev_table_generations",
    "Maglev tables a VIP keeps: the current one and the past ones younger than the TCP idle timeout.",
    VIP,
);
const VIP_PACKETS: Def = counter(
    "nf_maglev_vip_packets_total",
    "Packets forwarded for the VIP.",
    VIP,
);
const VIP_BYTES: Def = counter(
    "nf_maglev_vip_bytes_total",
    "Bytes forwarded for the VIP, as received.",
    VIP,
);
const VIP_NEW_CONNS: Def = counter(
    "nf_maglev_vip_new_connections_total",
    "Flows of the VIP given a backend by the Maglev table.",
    VIP,
);
const VIP_BACKENDS: Def = gauge(
    "nf_maglev_vip_backends",
    "Backends configured for the VIP (draining ones included).",
    VIP,
);
const BACKEND_PACKETS: Def = counter(
    "nf_maglev_backend_packets_total",
    "Packets forwarded to the backend.",
    BACKEND,
);
const BACKEND_BYTES: Def = counter(
    "nf_maglev_backend_bytes_total",
    "Bytes forwarded to the backend, as received.",
    BACKEND,
);
const BACKEND_NEW_CONNS: Def = counter(
    "nf_maglev_backend_new_connections_total",
    "New flows the Maglev table gave the backend.",
    BACKEND,
);
const BACKEND_WEIGHT: Def = gauge(
    "nf_maglev_backend_weight",
    "Configured weight of the backend (0: draining).",
    BACKEND,
);
const BACKEND_TABLE_ENTRIES: Def = gauge(
    "nf_maglev_backend_table_entries",
    "Slots of the VIP's Maglev table held by the backend.",
    BACKEND,
);
const BACKEND_TABLE_SHARE: Def = gauge(
    "nf_maglev_backend_table_share",
    "Fraction (0-1) of the VIP's Maglev table held by the backend.",
    BACKEND,
);
const REBUILDS: Def = counter(
    "nf_maglev_table_rebuilds_total",
    "Maglev tables built (at start, and for each VIP a change touched).",
    NONE,
);
const RELOADS: Def = counter(
    "nf_maglev_reloads_total",
    "Configuration reloads (SIGHUP or the admin API), by result: applied or rejected.",
    &["result"],
);
const GENERATION: Def = gauge(
    "nf_maglev_state_generation",
    "Generation of the published state; increases with every applied change.",
    NONE,
);
const ADMIN_CONNECTIONS: Def = counter(
    "nf_maglev_admin_connections_total",
    "Connections to the admin endpoint by result: accepted, evicted (an idle one closed to make room \
     for a new one), refused (every connection was being answered).",
    &["result"],
);
const ADMIN_REJECTED: Def = counter(
    "nf_maglev_admin_requests_rejected_total",
    "Admin requests refused before any handler saw them, by reason: unauthorized (401), \
     body_too_large (413), body_timeout (408), unsupported_version (505).",
    &["reason"],
);
const BUILD_INFO: Def = gauge(
    "nf_maglev_build_info",
    "Build information (value 1).",
    &["version"],
);

const BACKEND_UP: Def = gauge(
    "nf_maglev_backend_up",
    "1 when health lets the backend take new connections (unchecked backends included), else 0.",
    BACKEND,
);
const VIP_READY: Def = gauge(
    "nf_maglev_vip_ready",
    "1 when some backend of the VIP with a weight is in its table and has passed its checks.",
    VIP,
);
const VIP_FAIL_OPEN: Def = gauge(
    "nf_maglev_vip_fail_open",
    "1 when no backend of the VIP is healthy, so all of them share its table (health.fail_open).",
    VIP,
);
const VIP_ANNOUNCED: Def = gauge(
    "nf_maglev_vip_announced",
    "1 while the VIP's address is on the announcement device (maglev.announce), else 0.",
    VIP,
);
const ANNOUNCE_REPAIRS: Def = counter(
    "nf_maglev_announce_repairs_total",
    "Announced addresses put back on the announcement device, or whose local route was deleted again, after something else undid them (the device brought down, for one).",
    NONE,
);
const CHECKER_CPU: Def = counter(
    "nf_maglev_health_checker_cpu_seconds_total",
    "CPU time of the health checker's thread (probes, and the data path for probes).",
    NONE,
);

const ALL: &[&Def] = &[
    &PORT_INFO,
    &PORT_RX_PACKETS,
    &PORT_RX_BYTES,
    &PORT_TX_PACKETS,
    &PORT_TX_BYTES,
    &PORT_TX_DROPPED,
    &PORT_RX_ERRORS,
    &PORT_TX_ERRORS,
    &XDP_RX_DROPPED,
    &XDP_RX_INVALID,
    &XDP_TX_INVALID,
    &XDP_RX_RING_FULL,
    &XDP_FILL_EMPTY,
    &XDP_TX_RING_EMPTY,
    &FILTER_CLAIMED,
    &FILTER_PASSED,
    &FILTER_REDIRECT_FAILED,
    &FAST_PATH,
    &FAST_CACHE,
    &CT_ENTRIES,
    &CT_CAPACITY,
    &CT_INSERTED,
    &CT_EVICTIONS,
    &CT_EXPIRED,
    &CT_LIMITED,
    &DROPS,
    &REPLIES,
    &FRAGMENTS,
    &REROUTED,
    &GRE_FRAGMENTED,
    &GRE_FRAGMENTS,
    &PAST_TABLE,
    &TABLE_GENERATIONS,
    &VIP_PACKETS,
    &VIP_BYTES,
    &VIP_NEW_CONNS,
    &VIP_BACKENDS,
    &BACKEND_PACKETS,
    &BACKEND_BYTES,
    &BACKEND_NEW_CONNS,
    &BACKEND_WEIGHT,
    &BACKEND_TABLE_ENTRIES,
    &BACKEND_TABLE_SHARE,
    &BACKEND_UP,
    &VIP_READY,
    &VIP_FAIL_OPEN,
    &CHECKER_CPU,
    &VIP_ANNOUNCED,
    &ANNOUNCE_REPAIRS,
    &REBUILDS,
    &RELOADS,
    &GENERATION,
    &ADMIN_CONNECTIONS,
    &ADMIN_REJECTED,
    &BUILD_INFO,
];

/// Reads one per-queue figure from a report.
type PortValue = fn(&worker::PortReport) -> u64;

/// One family being filled.
struct Family {
    def: &'static Def,
    metrics: Vec<proto::Metric>,
}

impl Family {
    fn new(def: &'static Def) -> Self {
        Self {
            def,
            metrics: Vec::new(),
        }
    }

    /// Adds a sample; `labels` are the values of `def.labels`, in order.
    fn add(&mut self, labels: &[&str], value: f64) {
        debug_assert_eq!(labels.len(), self.def.labels.len(), "{}", self.def.name);
        let pairs = self
            .def
            .labels
            .iter()
            .zip(labels)
            .map(|(n, v)| {
                let mut p = proto::LabelPair::default();
                p.set_name((*n).to_owned());
                p.set_value((*v).to_owned());
                p
            })
            .collect();
        let mut m = proto::Metric::from_label(pairs);
        match self.def.kind {
            MetricType::COUNTER => {
                let mut c = proto::Counter::default();
                c.set_value(value);
                m.set_counter(c);
            }
            _ => {
                let mut g = proto::Gauge::default();
                g.set_value(value);
                m.set_gauge(g);
            }
        }
        self.metrics.push(m);
    }

    fn finish(self) -> proto::MetricFamily {
        let mut f = proto::MetricFamily::default();
        f.set_name(self.def.name.to_owned());
        f.set_help(self.def.help.to_owned());
        f.set_field_type(self.def.kind);
        f.set_metric(self.metrics);
        f
    }
}

/// Figures the control thread keeps (it owns the XDP programs and the control plane).
#[derive(Debug, Clone, Default)]
pub(crate) struct ControlStats {
    /// Maglev tables built.
    pub(crate) rebuilds: u64,
    /// Reloads applied.
    pub(crate) reloads_applied: u64,
    /// Reloads rejected.
    pub(crate) reloads_rejected: u64,
    /// XDP filter counters per netdev, read just before each scrape.
    pub(crate) filters: Vec<(String, FilterStats)>,
    /// The VIPs ready to serve by health (names).
    pub(crate) ready: std::collections::BTreeSet<String>,
    /// The announced VIP addresses; `None` without announcement.
    pub(crate) announced: Option<std::collections::BTreeSet<std::net::IpAddr>>,
    /// Announced addresses put back after something else undid them.
    pub(crate) announce_repairs: u64,
    /// XDP fast path counters per netdev (with `data_path: xdp`), read just before each scrape.
    pub(crate) fast: Vec<(String, cne::bpf::fast::FastStats)>,
    /// What the fast paths forwarded, counted like a worker counts it.
    pub(crate) fast_counters: nf_maglev::counters::Counters,
}

/// Where the collector reads from.
#[derive(Debug, Clone)]
pub(crate) struct Sources {
    /// The published state (VIP and backend names, weights, tables).
    pub(crate) state: SharedState,
    /// One report slot per worker.
    pub(crate) workers: Vec<Arc<ReportSlot>>,
    /// The control thread's figures.
    pub(crate) control: Arc<Mutex<ControlStats>>,
    /// The admin server's counters.
    pub(crate) admin: Arc<http::Stats>,
    /// CPU time of the health checker's thread, nanoseconds.
    pub(crate) checker_cpu_ns: Arc<std::sync::atomic::AtomicU64>,
}

/// Table slots held by each backend of `vip`, indexed like [`VipState::backends`].
pub(crate) fn table_entries(vip: &VipState) -> Vec<u64> {
    let mut n = vec![0u64; vip.backends().len()];
    for &slot in vip.table().slots() {
        if let Some(c) = n.get_mut(usize::from(slot)) {
            *c += 1;
        }
    }
    n
}

/// The collector: builds every family from [`Sources`] at scrape time.
struct LbCollector {
    sources: Sources,
    descs: Vec<Desc>,
}

impl LbCollector {
    fn new(sources: Sources) -> prometheus::Result<Self> {
        let descs = ALL
            .iter()
            .map(|d| {
                Desc::new(
                    d.name.to_owned(),
                    d.help.to_owned(),
                    d.labels.iter().map(|l| (*l).to_owned()).collect(),
                    HashMap::new(),
                )
            })
            .collect::<prometheus::Result<_>>()?;
        Ok(Self { sources, descs })
    }
}

impl Collector for LbCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<proto::MetricFamily> {
        let mut out = Vec::with_capacity(ALL.len());
        let reports = worker::all_reports(&self.sources.workers);
        let control = self
            .sources
            .control
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default();
        let mut counters = worker::merged_counters(&reports);
        counters.merge(&control.fast_counters);

        let mut info = Family::new(&PORT_INFO);
        for r in &reports {
            info.add(&[&r.netdev, &r.queue.to_string(), &r.lport, &r.mode], 1.0);
        }
        out.push(info.finish());
        let per_port: &[(&Def, PortValue)] = &[
            (&PORT_RX_PACKETS, |r| r.stats.rx_packets),
            (&PORT_RX_BYTES, |r| r.stats.rx_bytes),
            (&PORT_TX_PACKETS, |r| r.stats.tx_packets),
            (&PORT_TX_BYTES, |r| r.stats.tx_bytes),
            (&PORT_TX_DROPPED, |r| r.stats.tx_dropped),
            (&PORT_RX_ERRORS, |r| r.stats.rx_errors),
            (&PORT_TX_ERRORS, |r| r.stats.tx_errors),
            (&XDP_RX_DROPPED, |r| r.stats.kernel.rx_dropped),
            (&XDP_RX_INVALID, |r| r.stats.kernel.rx_invalid_descs),
            (&XDP_TX_INVALID, |r| r.stats.kernel.tx_invalid_descs),
            (&XDP_RX_RING_FULL, |r| r.stats.kernel.rx_ring_full),
            (&XDP_FILL_EMPTY, |r| r.stats.kernel.rx_fill_ring_empty_descs),
            (&XDP_TX_RING_EMPTY, |r| r.stats.kernel.tx_ring_empty_descs),
            (&CT_ENTRIES, |r| r.conntrack_entries),
            (&CT_CAPACITY, |r| r.conntrack_capacity),
            (&CT_INSERTED, |r| r.counters.conntrack.inserted),
            (&CT_EVICTIONS, |r| r.counters.conntrack.evicted),
            (&CT_EXPIRED, |r| r.counters.conntrack.expired),
            (&CT_LIMITED, |r| r.counters.conntrack.limited),
        ];
        for (def, value) in per_port {
            let mut f = Family::new(def);
            for r in &reports {
                f.add(&[&r.netdev, &r.queue.to_string()], value(r) as f64);
            }
            out.push(f.finish());
        }

        for (def, value) in [
            (&FILTER_CLAIMED, (|s| s.claimed) as fn(&FilterStats) -> u64),
            (&FILTER_PASSED, |s| s.passed),
            (&FILTER_REDIRECT_FAILED, |s| s.redirect_failed),
        ] {
            let mut f = Family::new(def);
            for (netdev, stats) in &control.filters {
                f.add(&[netdev], value(stats) as f64);
            }
            out.push(f.finish());
        }
        let mut fast = Family::new(&FAST_PATH);
        for (netdev, s) in &control.fast {
            for (result, v) in [
                ("forwarded", s.forwarded),
                ("not_fast", s.handed_not_fast),
                ("no_vip", s.handed_no_vip),
                ("no_table", s.handed_no_table),
                ("past_table", s.handed_past),
                ("no_backend", s.handed_no_backend),
                ("no_outer_header", s.handed_no_outer),
                ("too_big", s.handed_too_big),
                ("dropped_adjust_failed", s.adjust_failed),
            ] {
                fast.add(&[netdev, result], v as f64);
            }
        }
        out.push(fast.finish());
        let mut cache = Family::new(&FAST_CACHE);
        for (netdev, s) in &control.fast {
            cache.add(&[netdev], s.cache_hits as f64);
        }
        out.push(cache.finish());

        let mut drops = Family::new(&DROPS);
        for reason in DropReason::ALL {
            drops.add(&[reason.name()], counters.drops_for(reason) as f64);
        }
        out.push(drops.finish());
        let mut replies = Family::new(&REPLIES);
        replies.add(&["arp"], counters.arp_replies as f64);
        replies.add(&["nd"], counters.nd_replies as f64);
        replies.add(&["icmp_too_big"], counters.icmp_too_big as f64);
        out.push(replies.finish());
        for (def, v) in [
            (&FRAGMENTS, counters.fragments),
            (&ICMP_ERRORS, counters.icmp_errors),
            (&REROUTED, counters.rerouted),
            (&PAST_TABLE, counters.past_table),
            (&GRE_FRAGMENTED, counters.gre_fragmented),
            (&GRE_FRAGMENTS, counters.gre_fragments),
            (&REBUILDS, control.rebuilds),
            (&ANNOUNCE_REPAIRS, control.announce_repairs),
        ] {
            let mut f = Family::new(def);
            f.add(&[], v as f64);
            out.push(f.finish());
        }
        let mut cpu = Family::new(&CHECKER_CPU);
        cpu.add(
            &[],
            self.sources
                .checker_cpu_ns
                .load(std::sync::atomic::Ordering::Relaxed) as f64
                / 1e9,
        );
        out.push(cpu.finish());
        let mut reloads = Family::new(&RELOADS);
        reloads.add(&["applied"], control.reloads_applied as f64);
        reloads.add(&["rejected"], control.reloads_rejected as f64);
        out.push(reloads.finish());

        let state = self.sources.state.load_full();
        let mut generation = Family::new(&GENERATION);
        generation.add(&[], state.generation as f64);
        out.push(generation.finish());

        let traffic =
            |list: &[Traffic], id: u32| list.get(id as usize).copied().unwrap_or_default();
        let mut vf: Vec<Family> = [
            &VIP_PACKETS,
            &VIP_BYTES,
            &VIP_NEW_CONNS,
            &VIP_BACKENDS,
            &TABLE_GENERATIONS,
            &VIP_READY,
            &VIP_FAIL_OPEN,
            &VIP_ANNOUNCED,
        ]
        .into_iter()
        .map(Family::new)
        .collect();
        let mut bf: Vec<Family> = [
            &BACKEND_PACKETS,
            &BACKEND_BYTES,
            &BACKEND_NEW_CONNS,
            &BACKEND_WEIGHT,
            &BACKEND_TABLE_ENTRIES,
            &BACKEND_TABLE_SHARE,
            &BACKEND_UP,
        ]
        .into_iter()
        .map(Family::new)
        .collect();
        for vip in state.vips() {
            let t = traffic(&counters.vips, vip.id);
            let v = [vip.name.as_str()];
            vf[0].add(&v, t.packets as f64);
            vf[1].add(&v, t.bytes as f64);
            vf[2].add(&v, t.new_conns as f64);
            vf[3].add(&v, vip.backends().len() as f64);
            vf[4].add(&v, (1 + vip.past_tables().len()) as f64);
            vf[5].add(&v, f64::from(u8::from(control.ready.contains(&vip.name))));
            vf[6].add(&v, f64::from(u8::from(vip.fail_open)));
            if let Some(a) = &control.announced {
                vf[7].add(&v, f64::from(u8::from(a.contains(&vip.addr))));
            }
            let entries = table_entries(vip);
            let size = vip.table().size().max(1) as f64;
            for (b, &n) in vip.backends().iter().zip(&entries) {
                let t = traffic(&counters.backends, b.id);
                let l = [vip.name.as_str(), b.name.as_str()];
                bf[0].add(&l, t.packets as f64);
                bf[1].add(&l, t.bytes as f64);
                bf[2].add(&l, t.new_conns as f64);
                bf[3].add(&l, f64::from(b.weight));
                bf[4].add(&l, n as f64);
                bf[5].add(&l, n as f64 / size);
                bf[6].add(&l, f64::from(u8::from(b.healthy)));
            }
        }
        out.extend(vf.into_iter().map(Family::finish));
        out.extend(bf.into_iter().map(Family::finish));

        let (mut conns, mut rejected) = (
            Family::new(&ADMIN_CONNECTIONS),
            Family::new(&ADMIN_REJECTED),
        );
        for (i, (name, value)) in self.sources.admin.snapshot().into_iter().enumerate() {
            if i < 3 {
                conns.add(&[name], value as f64);
            } else {
                rejected.add(&[name], value as f64);
            }
        }
        out.push(conns.finish());
        out.push(rejected.finish());

        let mut info = Family::new(&BUILD_INFO);
        info.add(&[env!("CARGO_PKG_VERSION")], 1.0);
        out.push(info.finish());
        out
    }
}

/// A registry holding the load balancer's collector.
pub(crate) fn registry(sources: Sources) -> prometheus::Result<Registry> {
    let r = Registry::new();
    r.register(Box::new(LbCollector::new(sources)?))?;
    Ok(r)
}

/// The registry's metrics in the Prometheus text format.
pub(crate) fn render(registry: &Registry) -> prometheus::Result<String> {
    let mut buf = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut buf)?;
    String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
}

/// The content type of [`render`]'s output.
pub(crate) const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::PortReport;
    use cne::xsk::stats::PortStats;
    use nf_maglev::config::MaglevSection;
    use nf_maglev::control::Control;
    use nf_maglev::counters::Counters;

    fn control() -> Control {
        let s: MaglevSection = serde_json::from_str(
            r#"{ "table_size": 251, "local_addrs": ["198.18.0.1"], "gateway_mac": "02:00:00:00:00:fe",
                 "vips": [ { "name": "web", "addr": "198.18.100.1", "proto": "tcp", "port": 80, "mode": "gre",
                             "backends": [ { "name": "a", "addr": "198.18.1.1" },
                                           { "name": "b", "addr": "198.18.1.2", "weight": 0 } ] } ] }"#,
        )
        .expect("parses");
        Control::new(s.validate().expect("valid")).expect("builds")
    }

    /// One sample: name, labels, value.
    type Sample = (String, Vec<(String, String)>, f64);

    /// A sample line: `name{l="v",...} value` -> (name, labels, value).
    fn parse_sample(line: &str) -> Sample {
        let (head, value) = line.rsplit_once(' ').expect("value");
        let value: f64 = value.parse().expect("numeric value");
        let (name, labels) = match head.split_once('{') {
            None => (head.to_owned(), Vec::new()),
            Some((n, rest)) => {
                let body = rest.strip_suffix('}').expect("closing brace");
                let labels = body
                    .split("\",")
                    .filter(|s| !s.is_empty())
                    .map(|kv| {
                        let (k, v) = kv.split_once("=\"").expect("label=\"value\"");
                        (k.to_owned(), v.trim_end_matches('"').to_owned())
                    })
                    .collect();
                (n.to_owned(), labels)
            }
        };
        (name, labels, value)
    }

    /// Checks the exposition format's rules that matter to a scraper and returns the samples.
    fn check_format(text: &str) -> Vec<Sample> {
        let mut types: HashMap<String, String> = HashMap::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("type");
                assert!(
                    types.insert(name.to_owned(), kind.to_owned()).is_none(),
                    "{name} typed twice"
                );
                assert_eq!(
                    name.ends_with("_total"),
                    kind == "counter",
                    "{name}: counters and only counters end in _total"
                );
            } else if line.starts_with("# HELP ") {
                continue;
            } else {
                let (name, labels, value) = parse_sample(line);
                assert!(types.contains_key(&name), "{name} sampled before its TYPE");
                assert!(name.starts_with("nf_maglev_"), "{name}");
                assert!(
                    name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "{name}"
                );
                assert!(value.is_finite() && value >= 0.0, "{line}");
                samples.push((name, labels, value));
            }
        }
        samples
    }

    fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Option<&'a f64> {
        samples
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, _, v)| v)
    }

    #[test]
    fn families_are_built_from_the_snapshots() {
        let c = control();
        let state = c.state();
        let web = state.vip_by_name("web").expect("vip");
        let a = web.backends()[0].id;
        let mut counters = Counters::new(state.vip_id_bound, state.backend_id_bound);
        counters.forwarded(web.id, a, 100, true);
        counters.forwarded(web.id, a, 60, false);
        counters.drop(DropReason::NoVip);
        counters.arp_replies = 2;
        counters.conntrack.evicted = 7;
        let mut stats = PortStats {
            rx_packets: 11,
            ..PortStats::default()
        };
        stats.kernel.rx_ring_full = 3;
        let slot = crate::worker::new_report_slot();
        slot.store(Arc::new(vec![PortReport {
            lport: "eth9:0".into(),
            netdev: "eth9".into(),
            queue: 1,
            mode: "native/copy".into(),
            stats,
            counters,
            conntrack_entries: 5,
            conntrack_capacity: 64,
            at: std::time::Instant::now(),
        }]));
        let control_stats = Arc::new(Mutex::new(ControlStats {
            announced: Some(std::collections::BTreeSet::new()),
            announce_repairs: 4,
            ready: std::collections::BTreeSet::new(),
            rebuilds: c.rebuilds(),
            reloads_applied: 1,
            reloads_rejected: 2,
            filters: vec![(
                "eth9".into(),
                FilterStats {
                    claimed: 9,
                    passed: 4,
                    redirect_failed: 0,
                },
            )],
            fast: vec![(
                "eth9".into(),
                cne::bpf::fast::FastStats {
                    forwarded: 2,
                    handed_past: 5,
                    ..Default::default()
                },
            )],
            // What the kernel forwarded adds to what the workers did.
            fast_counters: {
                let mut k = nf_maglev::counters::Counters::new(1, 2);
                k.forwarded(0, 0, 100, true);
                k.forwarded(0, 0, 100, false);
                k
            },
        }));
        let reg = registry(Sources {
            checker_cpu_ns: Default::default(),
            state: c.shared(),
            workers: vec![slot],
            control: control_stats,
            admin: Arc::new(http::Stats {
                evicted: 3.into(),
                unauthorized: 2.into(),
                ..http::Stats::default()
            }),
        })
        .expect("registers");
        let text = render(&reg).expect("renders");
        let s = check_format(&text);
        let pq = [("port", "eth9"), ("queue", "1")];
        let wa = [("vip", "web"), ("backend", "a")];
        let wb = [("vip", "web"), ("backend", "b")];
        for (name, labels, want) in [
            ("nf_maglev_port_rx_packets_total", &pq[..], 11.0),
            ("nf_maglev_port_xdp_rx_ring_full_total", &pq[..], 3.0),
            (
                "nf_maglev_port_info",
                &[("lport", "eth9:0"), ("mode", "native/copy")][..],
                1.0,
            ),
            ("nf_maglev_conntrack_entries", &pq[..], 5.0),
            ("nf_maglev_conntrack_evictions_total", &pq[..], 7.0),
            (
                "nf_maglev_xdp_filter_claimed_packets_total",
                &[("port", "eth9")][..],
                9.0,
            ),
            (
                "nf_maglev_dropped_packets_total",
                &[("reason", "no_vip")][..],
                1.0,
            ),
            (
                "nf_maglev_dropped_packets_total",
                &[("reason", "malformed")][..],
                0.0,
            ),
            ("nf_maglev_replies_total", &[("kind", "arp")][..], 2.0),
            ("nf_maglev_vip_packets_total", &[("vip", "web")][..], 4.0),
            ("nf_maglev_vip_bytes_total", &[("vip", "web")][..], 360.0),
            ("nf_maglev_backend_new_connections_total", &wa[..], 2.0),
            (
                "nf_maglev_xdp_fast_path_packets_total",
                &[("port", "eth9"), ("result", "past_table")][..],
                5.0,
            ),
            (
                "nf_maglev_xdp_fast_path_packets_total",
                &[("port", "eth9"), ("result", "forwarded")][..],
                2.0,
            ),
            ("nf_maglev_backend_weight", &wb[..], 0.0),
            ("nf_maglev_backend_table_entries", &wa[..], 251.0),
            ("nf_maglev_backend_table_share", &wa[..], 1.0),
            ("nf_maglev_backend_table_share", &wb[..], 0.0),
            ("nf_maglev_table_rebuilds_total", &[][..], 1.0),
            ("nf_maglev_announce_repairs_total", &[][..], 4.0),
            (
                "nf_maglev_admin_connections_total",
                &[("result", "evicted")][..],
                3.0,
            ),
            (
                "nf_maglev_admin_requests_rejected_total",
                &[("reason", "unauthorized")][..],
                2.0,
            ),
            (
                "nf_maglev_admin_requests_rejected_total",
                &[("reason", "body_timeout")][..],
                0.0,
            ),
            (
                "nf_maglev_reloads_total",
                &[("result", "rejected")][..],
                2.0,
            ),
            ("nf_maglev_state_generation", &[][..], 1.0),
            (
                "nf_maglev_build_info",
                &[("version", env!("CARGO_PKG_VERSION"))][..],
                1.0,
            ),
        ] {
            assert_eq!(
                find(&s, name, labels),
                Some(&want),
                "{name} {labels:?} in:\n{text}"
            );
        }
        for def in ALL {
            assert!(
                text.contains(&format!("# TYPE {} ", def.name)),
                "{} missing",
                def.name
            );
        }
    }

    #[test]
    fn a_change_shows_at_the_next_scrape() {
        let mut c = control();
        let reg = registry(Sources {
            checker_cpu_ns: Default::default(),
            state: c.shared(),
            workers: Vec::new(),
            control: Arc::default(),
            admin: Arc::default(),
        })
        .expect("registers");
        c.set_weight("web", "b", 1).expect("sets");
        let s = check_format(&render(&reg).expect("renders"));
        let wb = [("vip", "web"), ("backend", "b")];
        assert_eq!(find(&s, "nf_maglev_backend_weight", &wb), Some(&1.0));
        let share = find(&s, "nf_maglev_backend_table_share", &wb).expect("share");
        assert!((share - 0.5).abs() < 0.01, "{share}");
        assert_eq!(find(&s, "nf_maglev_state_generation", &[]), Some(&2.0));
    }
}
