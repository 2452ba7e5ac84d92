//! `lab demo`: build the lab, start nf-maglev, make connections, show the metrics, tear down.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::{BackendSpec, LabSpec, MaglevLab, Metrics, Mode, Sample, Spread, HTTP_PORT, VIP4};

/// Options of [`demo`].
#[derive(Debug, Clone)]
pub struct DemoOpts {
    /// Forwarding mode.
    pub mode: Mode,
    /// New TCP connections to make.
    pub connections: u32,
    /// The nf-maglev binary.
    pub nf_maglev: PathBuf,
}

/// What [`demo`] measured.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// Mode used.
    pub mode: Mode,
    /// Backends (name, weight).
    pub backends: Vec<BackendSpec>,
    /// How the connections spread.
    pub spread: Spread,
    /// Wall time of the connections.
    pub elapsed: Duration,
    /// Key lines of `/metrics` after the run.
    pub metrics: Vec<String>,
    /// GRE packets each backend decapsulated (GRE mode only).
    pub decapped: Vec<(String, u64)>,
    /// Whether the spread matches the weights (see [`Spread::check_weights`]); the error otherwise.
    pub weights_ok: Result<(), String>,
}

impl fmt::Display for DemoReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.spread.answered() + self.spread.failed;
        let total_w: u32 = self.backends.iter().map(|b| b.weight).sum();
        writeln!(
            f,
            "mode {}: {n} TCP connections to {VIP4}:{HTTP_PORT} in {:.2} s, {} answered, {} failed",
            self.mode,
            self.elapsed.as_secs_f64(),
            self.spread.answered(),
            self.spread.failed
        )?;
        writeln!(
            f,
            "{:<8} {:>6} {:>7} {:>8} {:>9}",
            "backend", "weight", "conns", "share", "expected"
        )?;
        for b in &self.backends {
            let c = self.spread.counts.get(&b.name).copied().unwrap_or(0);
            #[allow(clippy::cast_precision_loss)]
            let pct = if n == 0 {
                0.0
            } else {
                100.0 * c as f64 / n as f64
            };
            let exp = 100.0 * f64::from(b.weight) / f64::from(total_w.max(1));
            writeln!(
                f,
                "{:<8} {:>6} {c:>7} {pct:>7.1}% {exp:>8.1}%",
                b.name, b.weight
            )?;
        }
        for e in &self.spread.errors {
            writeln!(f, "  error: {e}")?;
        }
        match &self.weights_ok {
            Ok(()) => writeln!(
                f,
                "spread matches the weights (binomial 5-sigma bound + 1%)"
            )?,
            Err(e) => writeln!(f, "spread check FAILED: {e}")?,
        }
        if !self.decapped.is_empty() {
            let list: Vec<String> = self
                .decapped
                .iter()
                .map(|(b, n)| format!("{b} {n}"))
                .collect();
            writeln!(
                f,
                "GRE packets decapsulated by the backends: {}",
                list.join(", ")
            )?;
        }
        writeln!(f, "metrics (selected, VIP web4):")?;
        for l in &self.metrics {
            writeln!(f, "  {l}")?;
        }
        Ok(())
    }
}

/// Metrics the demo shows (samples of other VIPs than `web4` are left out).
const DEMO_METRICS: &[&str] = &[
    "nf_maglev_vip_new_connections_total",
    "nf_maglev_backend_new_connections_total",
    "nf_maglev_backend_packets_total",
    "nf_maglev_port_rx_packets_total",
    "nf_maglev_port_tx_packets_total",
    "nf_maglev_xdp_filter_claimed_packets_total",
    "nf_maglev_xdp_filter_passed_packets_total",
    "nf_maglev_conntrack_entries",
    "nf_maglev_backend_up",
    "nf_maglev_health_checks_total",
];

/// The demo's selection of `/metrics`: [`DEMO_METRICS`] for the `web4` VIP, and the drops (non-zero
/// reasons, or one line saying there were none).
fn demo_lines(m: &Metrics) -> Vec<String> {
    let mut lines: Vec<String> = DEMO_METRICS
        .iter()
        .flat_map(|name| m.samples.iter().filter(move |s| s.name == *name))
        .filter(|s| s.labels.iter().all(|(k, v)| k != "vip" || v == "web4"))
        .map(|s| s.line.clone())
        .collect();
    let drops: Vec<&Sample> = m
        .matching("nf_maglev_dropped_packets_total")
        .filter(|s| s.value != 0.0)
        .collect();
    if drops.is_empty() {
        lines.push("nf_maglev_dropped_packets_total 0 (every reason)".into());
    } else {
        lines.extend(drops.iter().map(|s| s.line.clone()));
    }
    lines
}

/// Builds the lab (three backends, weights 1/1/2), starts nf-maglev, makes `connections` real TCP
/// connections to the IPv4 VIP, reads `/metrics`, tears everything down, and reports.
pub fn demo(opts: &DemoOpts) -> Result<DemoReport> {
    // Every backend is checked as a client would reach it: HTTP to the VIP, through the data path.
    let spec = LabSpec::new(opts.mode, &opts.nf_maglev).check(
        &["web4", "web6"],
        serde_json::json!({"type": "http", "path": "/", "interval": 1, "timeout": 0.5}),
    );
    let mut lab = MaglevLab::build(&spec).context("building the lab")?;
    lab.start_lb(0, &[]).context("starting nf-maglev")?;
    let t0 = Instant::now();
    let results = lab.tcp_conns(IpAddr::V4(VIP4), opts.connections, 32, None)?;
    let elapsed = t0.elapsed();
    let spread = Spread::of(&results);
    let weights_ok = spread
        .check_weights(&spec.backends, 5.0)
        .map_err(|e| e.to_string());
    // Workers publish their counters every 250 ms: wait until the load balancer has counted every
    // connection the client made (bounded; a shortfall shows in the printed numbers).
    #[allow(clippy::cast_precision_loss)]
    let made = (spread.answered() + spread.failed) as f64;
    let mut metrics = lab.metrics(0)?;
    let deadline = Instant::now() + Duration::from_secs(3);
    // The connection-table gauge is refreshed by a table scan once a second: wait for it as well.
    while (metrics.sum("nf_maglev_vip_new_connections_total", &[("vip", "web4")]) < made
        || metrics.sum("nf_maglev_conntrack_entries", &[]) < 1.0)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
        metrics = lab.metrics(0)?;
    }
    // `nf-maglev decap` prints its counters once a second: wait for them to cover what the load
    // balancer sent (bounded, as above).
    let forwarded = metrics.sum("nf_maglev_backend_packets_total", &[]);
    let decap_counts = |lab: &MaglevLab| -> Vec<(String, u64)> {
        (0..spec.backends.len())
            .filter_map(|i| Some((spec.backends[i].name.clone(), lab.decapped(i)?)))
            .collect()
    };
    let mut decapped = decap_counts(&lab);
    let deadline = Instant::now() + Duration::from_secs(3);
    #[allow(clippy::cast_precision_loss)]
    while opts.mode == Mode::Gre
        && (decapped.iter().map(|(_, n)| n).sum::<u64>() as f64) < forwarded
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
        decapped = decap_counts(&lab);
    }
    lab.stop_lb(0).context("stopping nf-maglev")?;
    Ok(DemoReport {
        mode: opts.mode,
        backends: spec.backends,
        spread,
        elapsed,
        metrics: demo_lines(&metrics),
        decapped,
        weights_ok,
    })
}
