//! The control thread's side of health checking: owns the checker, the plan and the tracker, turns
//! reports into transitions (logged once each, counted in metrics) and tells the control plane which
//! backends to keep out.

use std::collections::BTreeSet;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Instant, UNIX_EPOCH};

use anyhow::Result;
use crossbeam_channel::Receiver;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use serde_json::{json, Value};

use crate::config::Validated;
use crate::health::check::ProbePath;
use crate::health::checker::{self, Checker, Plan, Report};
use crate::health::path::DataPath;
use crate::health::tracker::{Key, Tracker, Transition, Verdict};

/// Health metrics the control thread updates as results arrive.
#[derive(Debug, Clone)]
struct Metrics {
    checks: IntCounterVec,
    duration: HistogramVec,
    transitions: IntCounterVec,
}

impl Metrics {
    fn new() -> prometheus::Result<Self> {
        Ok(Self {
            checks: IntCounterVec::new(
                Opts::new(
                    "nf_maglev_health_checks_total",
                    "Health-check results per backend (a probe shared by several VIPs counts for each).",
                ),
                &["vip", "backend", "result"],
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "nf_maglev_health_check_duration_seconds",
                    "Time a health probe took, by check type.",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ]),
                &["type"],
            )?,
            transitions: IntCounterVec::new(
                Opts::new(
                    "nf_maglev_health_transitions_total",
                    "Backends leaving (to=down) or rejoining (to=up) the tables by health.",
                ),
                &["vip", "backend", "to"],
            )?,
        })
    }
}

/// What [`Monitor::prepare`] set up.
#[derive(Debug)]
pub struct Prepared {
    path: Option<Arc<DataPath>>,
    path_error: Option<String>,
}

/// See the module docs.
#[derive(Debug)]
pub struct Monitor {
    tracker: Tracker,
    plan: Plan,
    checker: Checker,
    results: Receiver<Vec<Report>>,
    path: Option<Arc<DataPath>>,
    /// Why probes cannot take the data path, when they cannot.
    path_error: Option<String>,
    metrics: Metrics,
}

impl Monitor {
    /// Sets up what health checking needs privileges for, before capabilities are dropped: with
    /// `probe_path` other than `backend`, the probes' data path out of `ifname` (CAP_NET_ADMIN);
    /// `auto` falls back to the backends' addresses when that fails, `vip` fails. No thread starts
    /// here (threads keep the capabilities they start with).
    pub fn prepare(config: &Validated, ifname: Option<&str>) -> Result<Prepared> {
        let want = config.health.probe_path;
        let (path, path_error) = match (want, ifname) {
            (ProbePath::Backend, _) => (None, Some("probe_path is \"backend\"".to_owned())),
            (ProbePath::Vip, _) if config.claim_all => anyhow::bail!(
                "maglev.health.probe_path is \"vip\" but claim_all is on: every frame of the queues goes to \
                 the workers, so answers to probes could not reach the kernel (use \"auto\" or \"backend\")"
            ),
            (ProbePath::Auto, _) if config.claim_all => {
                let why = "claim_all: every frame of the queues goes to the workers, so answers to probes \
                           could not reach the kernel there";
                log::info!(
                    "health: probes go to the backends' own addresses ({why}; they need a route over \
                     another interface)"
                );
                (None, Some(why.to_owned()))
            }
            (_, None) => (None, Some("no interface to send probes out of".to_owned())),
            (_, Some(ifname)) => match DataPath::open(ifname) {
                Ok(p) => {
                    log::info!(
                        "health: probes take the clients' path out of {ifname} (TUN device {})",
                        p.tun_name()
                    );
                    (Some(Arc::new(p)), None)
                }
                Err(e) if want == ProbePath::Vip => {
                    return Err(e.context(
                        "maglev.health.probe_path is \"vip\" but the probes' data path cannot be set up",
                    ))
                }
                Err(e) => {
                    log::warn!(
                        "health: probes go to the backends' own addresses: the data path for probes \
                         cannot be set up: {e:#}"
                    );
                    (None, Some(format!("{e:#}")))
                }
            },
        };
        Ok(Prepared { path, path_error })
    }

    /// Starts the checker for `config` with what [`Monitor::prepare`] set up.
    pub fn start(config: &Validated, prepared: Prepared) -> Result<Monitor> {
        let Prepared { path, path_error } = prepared;
        let want = config.health.probe_path;
        let (tx, results) = crossbeam_channel::unbounded();
        let mut tracker = Tracker::default();
        tracker.sync(config, Instant::now());
        let plan = checker::plan(config, path.is_some() && want != ProbePath::Backend);
        let checker = Checker::start(plan.keys().cloned().collect(), tx, path.clone())?;
        Ok(Monitor {
            tracker,
            plan,
            checker,
            results,
            path,
            path_error,
            metrics: Metrics::new()?,
        })
    }

    /// Registers the health metrics.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.metrics.checks.clone()))?;
        registry.register(Box::new(self.metrics.duration.clone()))?;
        registry.register(Box::new(self.metrics.transitions.clone()))
    }

    /// Where the results arrive (for the control thread's `select`).
    pub fn results(&self) -> &Receiver<Vec<Report>> {
        &self.results
    }

    /// CPU time of the checker thread, nanoseconds.
    pub fn cpu_ns(&self) -> Arc<AtomicU64> {
        self.checker.cpu_ns()
    }

    /// Whether `config` can be checked as it asks: `Err` names the problem (`probe_path: "vip"`
    /// without a data path for probes).
    pub fn admissible(&self, config: &Validated) -> Result<(), String> {
        match (config.health.probe_path, &self.path_error) {
            (ProbePath::Vip, Some(why)) => Err(format!(
                "maglev.health.probe_path: \"vip\" needs the probes' data path, which this process could \
                 not set up at start ({why}); restart to change it"
            )),
            _ => Ok(()),
        }
    }

    /// Follows a new configuration: new targets start, removed ones stop, the tracker keeps the state
    /// of backends whose check did not change.
    pub fn sync(&mut self, config: &Validated) {
        let via = self.path.is_some() && config.health.probe_path != ProbePath::Backend;
        self.tracker.sync(config, Instant::now());
        let plan = checker::plan(config, via);
        let keys: BTreeSet<Key> = plan.values().flatten().cloned().collect();
        let old: BTreeSet<Key> = self.plan.values().flatten().cloned().collect();
        for (vip, backend) in old.difference(&keys) {
            for v in Verdict::ALL {
                let _ = self
                    .metrics
                    .checks
                    .remove_label_values(&[vip, backend, v.name()]);
            }
            for to in ["up", "down"] {
                let _ = self
                    .metrics
                    .transitions
                    .remove_label_values(&[vip, backend, to]);
            }
        }
        self.checker.update(plan.keys().cloned().collect());
        self.plan = plan;
    }

    /// Records one report for every backend it stands for; returns the transitions.
    pub fn absorb(&mut self, report: Report) -> Vec<Transition> {
        let now = Instant::now();
        self.metrics
            .duration
            .with_label_values(&[report.target.check.probe.kind()])
            .observe(report.outcome.duration.as_secs_f64());
        let Some(keys) = self.plan.get(&report.target) else {
            // A probe of a target the last plan no longer has.
            return Vec::new();
        };
        let mut out = Vec::new();
        for key in keys {
            self.metrics
                .checks
                .with_label_values(&[&key.0, &key.1, report.outcome.verdict.name()])
                .inc();
            out.extend(self.tracker.record(key, report.outcome.clone(), now));
        }
        self.note(&out);
        out
    }

    /// Releases backends whose flap damping ran out; returns the transitions.
    pub fn tick(&mut self) -> Vec<Transition> {
        let out = self.tracker.tick(Instant::now());
        self.note(&out);
        out
    }

    fn note(&self, transitions: &[Transition]) {
        for t in transitions {
            let to = if t.up { "up" } else { "down" };
            log::info!(
                "health: VIP {} backend {} {to}: {}",
                t.key.0,
                t.key.1,
                t.reason
            );
            self.metrics
                .transitions
                .with_label_values(&[&t.key.0, &t.key.1, to])
                .inc();
        }
    }

    /// The backends to keep out of the tables.
    pub fn out(&self) -> BTreeSet<Key> {
        self.tracker.out()
    }

    /// Sets or clears maintenance of a backend; `false` when there is no such backend.
    pub fn set_maintenance(&mut self, vip: &str, backend: &str, on: bool) -> bool {
        let key = (vip.to_owned(), backend.to_owned());
        match self.tracker.set_maintenance(&key, on) {
            Ok(t) => {
                self.note(&t.into_iter().collect::<Vec<_>>());
                true
            }
            Err(()) => false,
        }
    }

    /// Whether `vip` is ready to serve by health: some backend with a weight is in its table and has
    /// passed its checks (or is not checked). Before the first results a VIP whose backends are all
    /// checked is not ready, though its table already uses them.
    pub fn vip_ready(&self, vip: &crate::control::VipState) -> bool {
        vip.backends().iter().any(|b| {
            b.weight > 0
                && b.healthy
                && self
                    .tracker
                    .get(&vip.name, &b.name)
                    .is_none_or(|e| e.confirmed())
        })
    }

    /// Whether the backend is in maintenance.
    pub fn in_maintenance(&self, vip: &str, backend: &str) -> bool {
        self.tracker
            .get(vip, backend)
            .is_some_and(|e| e.maintenance)
    }

    /// The backend's `health` object of `/api/state`.
    pub fn backend_json(&self, vip: &str, backend: &str) -> Value {
        let Some(e) = self.tracker.get(vip, backend) else {
            return Value::Null;
        };
        let key = (vip.to_owned(), backend.to_owned());
        let target = self
            .plan
            .iter()
            .find(|(_, k)| k.contains(&key))
            .map(|(t, _)| t);
        let since = e
            .since
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| (d.as_millis() as f64) / 1000.0);
        json!({
            "state": e.state_name(),
            "in_table": e.in_table(),
            "since": since,
            "last_result": e.last.as_ref().map(|o| o.verdict.name()),
            "last_error": e.last.as_ref().and_then(|o| o.error.clone()),
            "last_duration_ms": e.last.as_ref().map(|o| o.duration.as_secs_f64() * 1000.0),
            "check": match (&e.check, target) {
                (Some(c), Some(t)) => Some(format!("{c}; to {}", t.route())),
                _ => None,
            },
            "path": target.map(|t| if t.via.is_some() { "vip" } else { "backend" }),
        })
    }

    /// The probes' data path facts for `/api/state`.
    pub fn path_json(&self) -> Value {
        match &self.path {
            Some(p) => json!({
                "available": true,
                "tun": p.tun_name(),
                "interface": p.ifname(),
                "sent": p.stats.sent.load(std::sync::atomic::Ordering::Relaxed),
                "dropped": p.stats.dropped.load(std::sync::atomic::Ordering::Relaxed),
            }),
            None => json!({ "available": false, "reason": self.path_error }),
        }
    }
}
