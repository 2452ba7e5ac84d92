//! The running load balancer: start-up, the control thread and everything it owns.
//!
//! [`run`] loads the configuration and validates the `maglev` section (every problem reported as
//! `file:line: key.path: message`) before anything touches the network; then the control plane builds the
//! first state, the cne instance maps the UMEMs, attaches the XDP filter per netdev and binds one AF_XDP
//! socket per lport, the filter is told which traffic to claim (each VIP's protocol and port, its
//! fragments, and its ARP / neighbour discovery when the data plane answers them), every capability but
//! CAP_NET_RAW, CAP_IPC_LOCK and CAP_BPF is dropped, and one worker thread per `threads` entry runs the
//! packet loop ([`crate::worker`]).
//!
//! The calling thread becomes the control thread and owns a [`Runtime`]: the instance, the control plane,
//! the workers' report slots and the metrics registry. It implements the admin API's [`Api`], so the admin
//! code ([`crate::admin`]) calls into the runtime and never the other way round. The control loop reloads
//! on `SIGHUP`, answers admin requests, checks the workers and the interfaces (readiness), and on `SIGINT` /
//! `SIGTERM` stops the workers, joins them and returns, so the instance is dropped and every XDP program
//! detached. Signals are registered before the instance exists, so a signal during start-up is handled the
//! same way once the loop runs. The HTTP server ([`nf_maglev::http`]) runs on a thread of its own: it reads
//! each request whole and under limits, serves `GET /metrics` and `GET /healthz` itself from shared state
//! ([`Front`], so a slow reload never holds up a scrape), and hands every other request to the control
//! thread through a bounded queue.
//!
//! Exposure: with `--listen` on an address other than loopback, changes through the admin API need
//! either `--admin-token-file` (a bearer token) or `--read-only-admin`; nf-maglev refuses to start
//! otherwise.
//!
//! Reload: the file is read again; a change to the sections that shaped the sockets (`umems`, `lports`,
//! `threads`, `lcore-groups`) is refused (it needs a restart), a `maglev` section that does not validate
//! or whose claims exceed the XDP filter's rule capacity is refused with its reasons, and the old state
//! keeps serving in all these cases. A good one is published with the filter's claims as one transaction
//! (see [`Runtime::publish`]): claims staged, state published, claims switched; a failing step undoes the
//! earlier ones, so `/api/state` and the claims always agree.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use cne::bpf::filter::{AddrFlags, Rule};
use cne::config::Config;
use cne::instance::{Instance, InstanceOptions};
use cne::sys::netdev::LinkWatch;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use nf_maglev::announce::Announcer;
use nf_maglev::auth::Token;
use nf_maglev::config::{DataPath, Mac, Validated};
use nf_maglev::control::{Control, ControlError, State};
use nf_maglev::counters::Counters;
use nf_maglev::fastpath::FastPaths;
use nf_maglev::health::monitor::Monitor;
use nf_maglev::http;
use serde_json::{json, Value};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::admin::{self, Api, ApiError, Change};
use crate::metrics::{self, ControlStats, Sources};
use crate::worker::{self, PortReport, ReportSlot};

/// How often the control thread checks that the workers are alive and refreshes the XDP filter
/// counters the metrics show.
const TICK: Duration = Duration::from_millis(250);

/// Batches of past-table connections the workers may queue for the control thread.
const PAST_FLOW_BATCHES: usize = 1024;
/// A worker that has not published a report for this long counts as stalled (not ready). Workers
/// publish every 250 ms, also when idle (they sleep at most 100 ms in `poll`).
const STALL_AFTER: Duration = Duration::from_secs(5);
/// `/healthz` fails when the control thread has not come round its loop for this long.
const CONTROL_STALL: Duration = Duration::from_secs(15);
/// Admin requests waiting for the control thread; more are answered 503 at once.
const QUEUE: usize = 256;

/// What the command line decides for a running load balancer.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// The JSON-C configuration file (read again on reload).
    pub(crate) config: PathBuf,
    /// Replace an XDP program someone else attached.
    pub(crate) force: bool,
    /// Address of the admin API and metrics endpoint.
    pub(crate) listen: SocketAddr,
    /// Refuse every change through the admin API.
    pub(crate) read_only_admin: bool,
    /// File holding the bearer token changes must carry.
    pub(crate) admin_token_file: Option<PathBuf>,
    /// Claim every packet of the configured queues; the data plane then answers ARP and ND.
    pub(crate) claim_all: bool,
    /// How long an lport's interface may be gone before the program exits.
    pub(crate) netdev_timeout: Duration,
}

#[derive(Debug)]
struct LoadError {
    /// One line per problem, `file:line: key.path: message`.
    message: String,
    /// `(key path, message)` pairs.
    issues: Vec<(String, String)>,
}

/// Reads the `maglev` section of `config` and validates it. `claim_all` (the `--claim-all` flag) makes
/// the data plane answer ARP and neighbour discovery whatever the section says: every frame reaches it
/// and nothing else could answer.
fn maglev_section(config: &Config, claim_all: bool) -> Result<Validated, LoadError> {
    let mut v = nf_maglev::config::from_config(config).map_err(|errors| LoadError {
        message: errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
        issues: errors
            .iter()
            .map(|e| (e.key_path().to_owned(), e.to_string()))
            .collect(),
    })?;
    if claim_all && !v.claim_all {
        log::info!("--claim-all: the data plane answers ARP and neighbour discovery for the VIPs");
        v.claim_all = true;
    }
    Ok(v)
}

/// The sections a running instance cannot change (they shaped its UMEMs, sockets and threads), with free
/// text left out. Returns the names of those that differ.
fn restart_sections_changed(old: &Config, new: &Config) -> Vec<&'static str> {
    let umems = |c: &Config| {
        let mut v = c.umems().to_vec();
        v.iter_mut().for_each(|u| u.description = None);
        v
    };
    let lports = |c: &Config| {
        let mut v = c.lports().to_vec();
        v.iter_mut().for_each(|l| l.description = None);
        v
    };
    let threads = |c: &Config| {
        let mut v = c.threads().to_vec();
        v.iter_mut().for_each(|t| t.description = None);
        v
    };
    let mut changed = Vec::new();
    if umems(old) != umems(new) {
        changed.push("umems");
    }
    if lports(old) != lports(new) {
        changed.push("lports");
    }
    if threads(old) != threads(new) {
        changed.push("threads");
    }
    if old.lcore_groups() != new.lcore_groups() {
        changed.push("lcore-groups");
    }
    changed
}

/// What the XDP filter must claim for `config`: each VIP's protocol and port (or all its ports), and per
/// VIP address its fragments (non-first fragments carry no ports) and the ICMP errors sent to it (they
/// belong to the connection they quote), plus ARP / neighbour discovery when the data plane answers them.
/// Taken from the validated configuration, not the state, so the claims of a reload can be written
/// before its state is published.
fn claims(config: &Validated) -> (Vec<Rule>, Vec<(IpAddr, AddrFlags)>) {
    let mut rules = Vec::with_capacity(config.vips.len());
    let mut addrs = BTreeSet::new();
    for v in &config.vips {
        let proto = v.proto.number();
        rules.push(if v.port.is_all() {
            Rule::proto(v.addr, proto)
        } else {
            Rule::port(v.addr, proto, v.port.0)
        });
        addrs.insert(v.addr);
    }
    let flags = if config.claim_all {
        AddrFlags::FRAGS | AddrFlags::ICMP_ERRORS | AddrFlags::NEIGH
    } else {
        AddrFlags::FRAGS | AddrFlags::ICMP_ERRORS
    };
    (rules, addrs.into_iter().map(|a| (a, flags)).collect())
}

/// Refuses claims the XDP filter cannot hold, naming the limit and the count; checked before anything
/// is built or written.
fn check_claims_fit(origin: &str, rules: &[Rule], addrs: &[(IpAddr, AddrFlags)]) -> Result<()> {
    let count = cne::bpf::filter::XdpProgram::entries_needed(rules, addrs)
        .with_context(|| format!("{origin}: maglev.vips"))?;
    if count > cne::bpf::filter::RULE_CAPACITY {
        return Err(anyhow!(
            "{origin}: maglev.vips: the VIPs need {count} XDP claim entries (one per VIP protocol and \
             port, plus one per VIP address), more than the filter's limit of {}",
            cne::bpf::filter::RULE_CAPACITY
        ));
    }
    Ok(())
}

/// The running load balancer, owned by the control thread.
struct Runtime {
    path: PathBuf,
    claim_all: bool,
    read_only: bool,
    instance: Instance,
    control: Control,
    stats: Arc<Mutex<ControlStats>>,
    slots: Vec<Arc<ReportSlot>>,
    registry: prometheus::Registry,
    last_reload_error: Option<String>,
    /// The lports' interfaces.
    links: LinkWatch,
    /// Whether the XDP filters hold the claims of the published state: false only when a failed
    /// switch could not be undone (then `/readyz` says so until a reload succeeds).
    claims_ok: bool,
    /// When a failure to read the XDP filter counters was last logged.
    filter_warning: Option<Instant>,
    /// The admin server's counters (the metrics show them).
    admin_stats: Arc<http::Stats>,
    /// Health checking.
    health: Monitor,
    /// The device holding the announced VIP addresses, with `maglev.announce`.
    announcer: Option<Announcer>,
    /// A graceful stop has withdrawn the announcements: nothing is announced again.
    draining: bool,
    /// The kernel fast paths, with `data_path: xdp`.
    fast: Option<FastPaths>,
    /// When a failure to publish into the fast paths was last logged.
    fast_warning: Option<Instant>,
    /// Connections the workers forwarded from a past table, for the fast paths.
    past_flows: Option<Receiver<Vec<nf_maglev::dataplane::PastFlow>>>,
}

impl Runtime {
    /// Publishes `config` and its XDP claims as one transaction, in the order that keeps the rule "no
    /// packet reaches the data plane before the state that handles it":
    /// 1. the claims are staged in the inactive generation of every program's rule map (packets do not
    ///    see them); on failure the staged entries are removed and nothing is published;
    /// 2. the state is built and published (one atomic swap); on failure the staged claims are removed;
    /// 3. every program switches to the staged claims (one array write each); on failure the programs
    ///    already switched are switched back and the previous configuration is published again.
    ///
    /// Only then are the old claims deleted. Between 2 and 3 a VIP being removed may still be claimed
    /// (its packets reach a data plane that drops them) while a VIP being added is not yet claimed (its
    /// packets go to the kernel); neither reaches a state that does not know it.
    fn publish(&mut self, config: &Validated) -> Result<(), ApiError> {
        if let Some(fast) = &self.fast {
            fast.fits(config).map_err(|e| {
                ApiError::new(
                    400,
                    format!(
                        "{}: {}; the XDP fast path was sized at start: restart nf-maglev to grow it \
                         (the running configuration stays)",
                        self.path.display(),
                        cne::error_chain(&e)
                    ),
                )
            })?;
        }
        let (rules, addrs) = claims(config);
        let programs = self.instance.programs();
        let failed = |what: &str, ifname: &str, e: &cne::bpf::filter::XdpError| {
            ApiError::new(
                500,
                format!(
                    "{what} on {ifname} failed: {}; the running state and claims stay",
                    cne::error_chain(e)
                ),
            )
        };
        let unstage = |upto: usize| {
            for p in &programs[..upto] {
                if let Err(e) = p.clear_inactive_rules() {
                    log::warn!(
                        "{}: removing staged claims: {}",
                        p.ifname(),
                        cne::error_chain(&e)
                    );
                }
            }
        };
        for (i, p) in programs.iter().enumerate() {
            if let Err(e) = p.stage_rules(&rules, &addrs) {
                unstage(i);
                return Err(failed("writing the XDP claims", p.ifname(), &e));
            }
        }
        let previous = self.control.config().to_section();
        if let Err(e) = self.control.reload(&config.to_section()) {
            unstage(programs.len());
            return Err(e.into());
        }
        for (i, p) in programs.iter().enumerate() {
            if let Err(e) = p.switch_rules() {
                for q in &programs[..i] {
                    if let Err(e) = q.switch_rules() {
                        log::error!(
                            "{}: switching back to the previous claims: {}",
                            q.ifname(),
                            cne::error_chain(&e)
                        );
                        self.claims_ok = false;
                    }
                }
                unstage(programs.len());
                if let Err(e) = self.control.reload(&previous) {
                    log::error!("publishing the previous state again: {e}");
                    self.claims_ok = false;
                }
                return Err(failed("switching the XDP claims", p.ifname(), &e));
            }
        }
        for p in programs {
            if let Err(e) = p.clear_inactive_rules() {
                log::warn!(
                    "{}: deleting the previous claims: {} (the next change deletes them)",
                    p.ifname(),
                    cne::error_chain(&e)
                );
            }
        }
        self.claims_ok = true;
        self.sync_fast();
        self.sync_health();
        Ok(())
    }

    /// Publishes the control plane's state into the kernel fast paths when they do not hold it yet
    /// (after a reload, an admin change, a health change or past tables expiring). On a failure they
    /// keep the state before, `/readyz` says so, and the next call tries again.
    fn sync_fast(&mut self) {
        let Some(fast) = self.fast.as_mut() else {
            return;
        };
        let state = self.control.state();
        if let Err(e) = fast.sync(&state) {
            if self
                .fast_warning
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
            {
                log::error!(
                    "XDP fast path: publishing generation {}: {} (retrying)",
                    state.generation,
                    cne::error_chain(&e)
                );
                self.fast_warning = Some(Instant::now());
            }
        }
    }

    /// Writes the connections the workers forwarded from a past table into the fast paths'
    /// connection maps, so their next packets stay on the same backend in the kernel too (the fast path
    /// keeps no past tables; until then it hands those packets to the workers).
    fn record_past_flows(&mut self) {
        let (Some(fast), Some(rx)) = (&self.fast, &self.past_flows) else {
            return;
        };
        let flows: Vec<_> = rx.try_iter().flatten().collect();
        let conns = nf_maglev::fastpath::past_conns(&flows, self.control.state().timeouts);
        if conns.is_empty() {
            return;
        }
        if let Err(e) = fast.record(&conns) {
            log::warn!(
                "XDP fast path: recording {} connections from past tables: {} (the workers keep \
                 forwarding them)",
                conns.len(),
                cne::error_chain(&e)
            );
        }
    }

    /// Reads the fast paths' counters into the figures the metrics and `/api/state` show.
    fn refresh_fast(&self) {
        let Some(fast) = &self.fast else {
            return;
        };
        match fast.counters(&self.control.state()) {
            Ok((stats, counters)) => {
                if let Ok(mut s) = self.stats.lock() {
                    s.fast = stats;
                    s.fast_counters = counters;
                }
            }
            Err(e) => log::warn!(
                "reading the XDP fast path counters: {}",
                cne::error_chain(&e)
            ),
        }
    }

    /// Gives the health checker the configuration just published and applies what it says.
    fn sync_health(&mut self) {
        self.health.sync(self.control.config());
        if let Err(e) = self.apply_health() {
            log::error!("health: publishing the backends' health: {e}");
        }
    }

    /// Puts on the announcement device exactly the addresses of the VIPs that are ready: the instance is
    /// ready (workers reporting, interfaces up, claims programmed) and, with `require_healthy`, the VIP
    /// has a healthy backend. Nothing while draining. Cheap when nothing changes: call it every loop.
    fn announce(&mut self) {
        if let Some(announcer) = self.announcer.as_mut() {
            let repaired = announcer.sweep().len() as u64;
            if repaired > 0 {
                if let Ok(mut s) = self.stats.lock() {
                    s.announce_repairs += repaired;
                }
            }
        }
        let Some(announcer) = &self.announcer else {
            return;
        };
        let mut want = std::collections::BTreeSet::new();
        let require_healthy = self
            .control
            .config()
            .announce
            .as_ref()
            .is_none_or(|a| a.require_healthy);
        // Every worker has reported at least once: its socket is bound and its loop runs.
        let running = self.slots.iter().all(|s| !s.load().is_empty());
        if !self.draining && running && self.readiness().is_empty() {
            for v in self.control.state().vips() {
                if !require_healthy || self.health.vip_ready(v) {
                    want.insert(v.addr);
                }
            }
        }
        if *announcer.addresses() == want {
            return;
        }
        let state = self.control.state();
        let draining = self.draining;
        let Some(announcer) = self.announcer.as_mut() else {
            return;
        };
        for (addr, on) in announcer.update(&want) {
            if on {
                let vips: Vec<&str> = state
                    .vips()
                    .iter()
                    .filter(|v| v.addr == addr && (!require_healthy || self.health.vip_ready(v)))
                    .map(|v| v.name.as_str())
                    .collect();
                log::info!("announce: {addr} announced (ready: {})", vips.join(", "));
            } else {
                log::info!(
                    "announce: {addr} withdrawn ({})",
                    if draining {
                        "stopping"
                    } else {
                        "no VIP of it is ready"
                    }
                );
            }
        }
        let announced = announcer.addresses().clone();
        if let Ok(mut s) = self.stats.lock() {
            s.announced = Some(announced);
        }
    }

    /// Records which VIPs are ready by health, for the metrics.
    fn refresh_ready(&mut self) {
        let state = self.control.state();
        let ready: std::collections::BTreeSet<String> = state
            .vips()
            .iter()
            .filter(|v| self.health.vip_ready(v))
            .map(|v| v.name.clone())
            .collect();
        if let Ok(mut s) = self.stats.lock() {
            if s.ready != ready {
                s.ready = ready;
            }
        }
    }

    /// A stop signal: with announcements, withdraws them and returns until when to keep serving;
    /// `None`: stop now (no announcement, no drain period, or already draining).
    fn begin_drain(&mut self, sig: &str) -> Option<Instant> {
        let drain = self.control.config().announce.as_ref()?.drain.duration();
        if self.draining || self.announcer.is_none() {
            return None;
        }
        self.draining = true;
        self.announce();
        log::info!(
            "{sig}: VIPs withdrawn; serving for {drain:?} more before stopping (send it again to stop now)"
        );
        (!drain.is_zero()).then(|| Instant::now() + drain)
    }

    /// Publishes a new state when the backends health keeps out changed.
    fn apply_health(&mut self) -> Result<(), ControlError> {
        let changed = self.control.set_unhealthy(self.health.out())?;
        if changed {
            self.sync_fast();
            self.update_stats(None);
        }
        Ok(())
    }

    /// Reads the XDP filter (and fast path) counters into the figures the metrics show. Runs every
    /// [`TICK`], so a failure is logged once a minute at most.
    fn refresh_filters(&mut self) {
        let mut failed = Vec::new();
        let filters = self
            .instance
            .programs()
            .iter()
            .filter_map(|p| match p.stats() {
                Ok(s) => Some((p.ifname().to_owned(), s)),
                Err(e) => {
                    failed.push(format!("{}: {e}", p.ifname()));
                    None
                }
            })
            .collect();
        if !failed.is_empty()
            && self
                .filter_warning
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
        {
            log::warn!("reading the XDP filter counters: {}", failed.join("; "));
            self.filter_warning = Some(Instant::now());
        }
        if let Ok(mut s) = self.stats.lock() {
            s.filters = filters;
            s.rebuilds = self.control.rebuilds();
        }
        self.refresh_fast();
    }

    fn update_stats(&self, reload: Option<bool>) {
        if let Ok(mut s) = self.stats.lock() {
            s.rebuilds = self.control.rebuilds();
            match reload {
                Some(true) => s.reloads_applied += 1,
                Some(false) => s.reloads_rejected += 1,
                None => {}
            }
        }
    }

    fn try_reload(&mut self) -> Result<(), ApiError> {
        let origin = self.path.display().to_string();
        let config =
            Config::load(&self.path).map_err(|e| ApiError::new(400, cne::error_chain(&e)))?;
        let changed = restart_sections_changed(self.instance.config(), &config);
        if !changed.is_empty() {
            return Err(ApiError::new(
                409,
                format!(
                    "{origin}: {} changed; these sections need a restart of nf-maglev (the running \
                     configuration stays)",
                    changed.join(", ")
                ),
            ));
        }
        let validated = maglev_section(&config, self.claim_all).map_err(|e| ApiError {
            status: 400,
            message: e.message,
            issues: e.issues,
        })?;
        self.health
            .admissible(&validated)
            .map_err(|e| ApiError::new(400, e))?;
        if validated.data_path != self.control.config().data_path {
            return Err(ApiError::new(
                409,
                format!(
                    "{origin}: maglev.data_path changed; that needs a restart of nf-maglev (the running \
                     configuration stays)"
                ),
            ));
        }
        let interface = |c: &Validated| c.announce.as_ref().map(|a| a.interface.clone());
        if interface(&validated) != interface(self.control.config()) {
            return Err(ApiError::new(
                409,
                format!(
                    "{origin}: maglev.announce.interface changed (or announce was added or removed); \
                     that needs a restart of nf-maglev (the running configuration stays)"
                ),
            ));
        }
        if !self.instance.programs().is_empty() {
            let (rules, addrs) = claims(&validated);
            check_claims_fit(&origin, &rules, &addrs)
                .map_err(|e| ApiError::new(400, format!("{e:#}")))?;
        }
        self.publish(&validated)
    }
}

impl Api for Runtime {
    fn state(&self) -> Arc<State> {
        self.control.state()
    }

    fn change(&mut self, change: Change) -> Result<(), ControlError> {
        let r = match change {
            Change::Maintenance { vip, backend, on } => {
                let state = self.control.state();
                let Some(v) = state.vip_by_name(&vip) else {
                    return Err(ControlError::NoSuchVip(vip));
                };
                if !v.backends().iter().any(|b| b.name == backend)
                    || !self.health.set_maintenance(&vip, &backend, on)
                {
                    return Err(ControlError::NoSuchBackend { vip, backend });
                }
                self.apply_health()
            }
            change => {
                let r = change.apply(&mut self.control);
                if r.is_ok() {
                    self.sync_health();
                }
                r
            }
        };
        self.sync_fast();
        self.update_stats(None);
        r
    }

    fn kernel_counters(&self) -> Option<Counters> {
        let fast = self.fast.as_ref()?;
        match fast.counters(&self.control.state()) {
            Ok((_, c)) => Some(c),
            Err(e) => {
                log::warn!(
                    "reading the XDP fast path counters: {}",
                    cne::error_chain(&e)
                );
                None
            }
        }
    }

    fn backend_health(&self, vip: &str, backend: &str) -> Value {
        self.health.backend_json(vip, backend)
    }

    fn in_maintenance(&self, vip: &str, backend: &str) -> bool {
        self.health.in_maintenance(vip, backend)
    }

    fn vip_ready(&self, vip: &nf_maglev::control::VipState) -> bool {
        self.health.vip_ready(vip)
    }

    fn announced(&self, addr: IpAddr) -> Option<bool> {
        self.announcer
            .as_ref()
            .map(|a| a.addresses().contains(&addr))
    }

    fn reload(&mut self) -> Result<(), ApiError> {
        let r = self.try_reload();
        match &r {
            Ok(()) => {
                log::info!(
                    "reload of {}: applied, generation {}",
                    self.path.display(),
                    self.control.state().generation
                );
                self.last_reload_error = None;
            }
            Err(e) => {
                log::warn!(
                    "reload of {} rejected, the running state stays:\n{}",
                    self.path.display(),
                    e.message
                );
                self.last_reload_error = Some(e.message.clone());
            }
        }
        self.update_stats(Some(r.is_ok()));
        r
    }

    fn metrics(&mut self) -> Result<String, ApiError> {
        self.refresh_filters();
        metrics::render(&self.registry).map_err(|e| ApiError::new(500, e.to_string()))
    }

    fn reports(&self) -> Vec<PortReport> {
        worker::all_reports(&self.slots)
    }

    fn readiness(&self) -> Vec<String> {
        let mut problems = self.links.problems();
        problems.extend(worker::stalled(&self.slots, Instant::now(), STALL_AFTER));
        if !self.claims_ok {
            problems.push("the XDP filters do not hold the claims of the published state".into());
        }
        if let Some(fast) = &self.fast {
            if !fast.holds(&self.control.state()) {
                problems.push("the XDP fast path does not hold the published state".into());
            }
        }
        problems
    }

    fn info(&self) -> Value {
        let s = self.stats.lock().map(|s| s.clone()).unwrap_or_default();
        let announce = self.announcer.as_ref().map(|a| {
            json!({
                "interface": a.interface(),
                "addresses": a.addresses().iter().map(ToString::to_string).collect::<Vec<_>>(),
                "draining": self.draining,
                "repairs": s.announce_repairs,
            })
        });
        let fast: Vec<Value> = s
            .fast
            .iter()
            .map(|(port, f)| {
                json!({
                    "port": port,
                    "forwarded": f.forwarded,
                    "handed_on": {
                        "not_fast": f.handed_not_fast,
                        "no_vip": f.handed_no_vip,
                        "no_table": f.handed_no_table,
                        "past_table": f.handed_past,
                        "no_backend": f.handed_no_backend,
                        "no_outer_header": f.handed_no_outer,
                        "too_big": f.handed_too_big,
                    },
                    "dropped_adjust_failed": f.adjust_failed,
                    "connections": {
                        "hits": f.conn_hits,
                        "recorded": f.conn_new,
                        "expired": f.conn_expired,
                        "flood_limited": f.conn_limited,
                        "flow_cache_hits": f.cache_hits,
                    },
                })
            })
            .collect();
        json!({
            "config": self.path.display().to_string(),
            "read_only": self.read_only,
            "data_path": {
                "mode": match self.control.config().data_path {
                    DataPath::AfXdp => "af_xdp",
                    DataPath::Xdp => "xdp",
                },
                "fast_path": fast,
            },
            "announce": announce,
            "health": { "probe_path": self.health.path_json() },
            "reloads": {
                "applied": s.reloads_applied,
                "rejected": s.reloads_rejected,
                "last_error": self.last_reload_error,
            },
        })
    }
}

/// What wakes the control thread.
enum Event {
    /// SIGINT or SIGTERM.
    Stop(&'static str),
    /// SIGHUP.
    Reload,
    /// An admin request, and where its reply goes.
    Http(admin::Incoming, http::Responder),
}

/// When the control thread last came round its loop, in milliseconds since `epoch`.
#[derive(Debug)]
struct Heartbeat {
    epoch: Instant,
    last: AtomicU64,
}

impl Heartbeat {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn beat(&self) {
        self.last.store(self.now(), Ordering::Relaxed);
    }

    /// Time since the last beat.
    fn age(&self) -> Duration {
        Duration::from_millis(self.now().saturating_sub(self.last.load(Ordering::Relaxed)))
    }
}

/// What the HTTP server calls on its own thread: `/metrics` and `/healthz` are answered there from
/// shared state, everything else is queued for the control thread.
struct Front {
    registry: prometheus::Registry,
    heartbeat: Arc<Heartbeat>,
    events: Sender<Event>,
}

fn to_response(r: admin::Reply) -> http::Response {
    http::Response::new(r.status, r.content_type, r.body)
}

impl http::Service for Front {
    fn call(&self, req: http::Request) -> http::Answer {
        let path = req.target.split(['?', '#']).next().unwrap_or("");
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let read = req.method == "GET" || req.method == "HEAD";
        match (read, segments.as_slice()) {
            (true, ["metrics"]) => {
                return http::Answer::Now(match metrics::render(&self.registry) {
                    Ok(text) => http::Response::new(200, metrics::CONTENT_TYPE, text),
                    Err(e) => http::Response::error(500, &e.to_string()),
                })
            }
            (true, ["healthz"]) => {
                let age = self.heartbeat.age();
                return http::Answer::Now(if age < CONTROL_STALL {
                    http::Response::new(200, "text/plain", "ok\n")
                } else {
                    http::Response::new(
                        503,
                        "text/plain",
                        format!(
                            "the control thread has not run for {:.1} s\n",
                            age.as_secs_f64()
                        ),
                    )
                });
            }
            _ => {}
        }
        let incoming = admin::Incoming {
            method: req.method,
            url: req.target,
            body: req.body,
        };
        let (responder, waiter) = http::reply_channel();
        match self.events.try_send(Event::Http(incoming, responder)) {
            Ok(()) => http::Answer::Later(waiter),
            Err(crossbeam_channel::TrySendError::Full(_)) => http::Answer::Now(
                http::Response::error(503, "too many admin requests are waiting; try again"),
            ),
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => {
                http::Answer::Now(to_response(admin::unavailable()))
            }
        }
    }
}

/// Refuses a configuration where anyone who can reach `listen` could change the load balancer.
fn check_exposure(listen: SocketAddr, read_only: bool, token: bool) -> Result<()> {
    if read_only || token || listen.ip().is_loopback() {
        return Ok(());
    }
    Err(anyhow!(
        "--listen {listen} is not a loopback address and the admin API would accept changes from \
         anyone who can reach it: give --admin-token-file FILE (changes then need \
         `Authorization: Bearer <token>`), or --read-only-admin, or listen on 127.0.0.1"
    ))
}

/// Starts the load balancer described by `opts` and runs it until a stop signal, a worker's end or a
/// lost interface; then stops the workers, joins them and drops the instance (every XDP program detached).
pub(crate) fn run(opts: &Options) -> Result<()> {
    let path = opts.config.clone();
    // Registered first: from here on SIGINT/SIGTERM/SIGHUP wait in the queue for the main loop instead of
    // killing a process that may already hold XDP programs.
    let token = opts
        .admin_token_file
        .as_deref()
        .map(Token::from_file)
        .transpose()?;
    check_exposure(opts.listen, opts.read_only_admin, token.is_some())?;
    if let Some(t) = &token {
        if t.len() < nf_maglev::auth::SHORT_TOKEN_BYTES {
            log::warn!(
                "the admin token has only {} bytes; use a long random one (head -c 32 /dev/urandom | base64)",
                t.len()
            );
        }
    }
    let signals = Signals::new([SIGINT, SIGTERM, SIGHUP]).context("registering signal handlers")?;
    let config = Config::load(&path)?;
    let validated = maglev_section(&config, opts.claim_all).map_err(|e| anyhow!(e.message))?;
    let (rules, addrs) = claims(&validated);
    if config
        .lports()
        .iter()
        .any(|l| l.uds_path.is_none() && l.xsk_pin_path.is_none())
    {
        check_claims_fit(config.origin(), &rules, &addrs)?;
    }
    let control = Control::new(validated).context("building the Maglev tables")?;
    let listener = TcpListener::bind(opts.listen)
        .with_context(|| format!("binding the admin/metrics address {}", opts.listen))?;
    let listen = listener.local_addr().unwrap_or(opts.listen);

    let instance_opts = InstanceOptions {
        force: opts.force,
        claim_all: opts.claim_all,
    };
    let mut instance = Instance::open(config, &instance_opts)?;
    for p in instance.programs() {
        p.replace_rules(&rules, &addrs)
            .with_context(|| format!("installing the XDP claims on {}", p.ifname()))?;
        log::info!(
            "{}: claiming {} VIP rules{}",
            p.ifname(),
            rules.len(),
            if opts.claim_all {
                " (and every other packet: --claim-all)"
            } else {
                ""
            }
        );
    }
    let fast = match control.config().data_path {
        DataPath::AfXdp => None,
        DataPath::Xdp => Some(
            FastPaths::attach(
                instance.programs(),
                instance.config().lports().len(),
                control.config(),
                &control.state(),
            )
            .map_err(|e| anyhow!("{}: {}", instance.config().origin(), cne::error_chain(&e)))
            .context("setting up the XDP fast path")?,
        ),
    };
    let probe_if = instance.config().lports().first().map(|l| l.netdev.clone());
    let probes = Monitor::prepare(control.config(), probe_if.as_deref())
        .context("setting up health checks")?;
    let announcer = control
        .config()
        .announce
        .as_ref()
        .map(Announcer::open)
        .transpose()?;
    // Still single-threaded: every thread started from here on (workers, the admin server, the
    // signal thread) inherits the reduced set. Our own XDP programs hang on bpf_links that closing
    // their descriptors detaches, so no capability is needed to leave cleanly.
    if announcer.is_some() {
        cne::sys::privs::drop_to_announcing_nf_caps()
    } else {
        cne::sys::privs::drop_to_running_nf_caps()
    }
    .context("dropping capabilities after set-up")?;

    let health = Monitor::start(control.config(), probes).context("starting the health checker")?;
    if announcer.is_some() {
        log::info!("announce: capabilities keep CAP_NET_ADMIN to add and remove VIP addresses");
    }
    let links = LinkWatch::new(
        instance.config().lports().iter().map(|l| l.netdev.as_str()),
        opts.netdev_timeout,
    )
    .context("watching the lports' interfaces")?;
    let workers = instance.take_workers();
    let mut setups = Vec::with_capacity(workers.len());
    for w in &workers {
        let lports = w
            .lports
            .iter()
            .map(|l| {
                Ok((
                    l.name.clone(),
                    Mac(cne::sys::netdev::mac_address(l.socket().ifname())?),
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        setups.push(lports);
    }
    let slots: Vec<Arc<ReportSlot>> = workers.iter().map(|_| worker::new_report_slot()).collect();
    let (past_tx, past_rx) = crossbeam_channel::bounded(PAST_FLOW_BATCHES);
    let past_tx = fast.is_some().then_some(past_tx);
    let stats = Arc::new(Mutex::new(ControlStats {
        rebuilds: control.rebuilds(),
        ..ControlStats::default()
    }));
    let admin_stats = Arc::new(http::Stats::default());
    let registry = metrics::registry(Sources {
        state: control.shared(),
        workers: slots.clone(),
        control: Arc::clone(&stats),
        admin: Arc::clone(&admin_stats),
        checker_cpu_ns: health.cpu_ns(),
    })
    .context("creating the metrics registry")?;
    health
        .register(&registry)
        .context("registering the health metrics")?;

    let stop = Arc::new(AtomicBool::new(false));
    let epoch = Instant::now();
    let mut handles = Vec::with_capacity(workers.len());
    let mut spawn_error = None;
    for ((w, lports), slot) in workers.into_iter().zip(setups).zip(&slots) {
        let name = w.name.clone();
        let setup = worker::Setup {
            lports,
            shared: control.shared(),
            slot: Arc::clone(slot),
            stop: Arc::clone(&stop),
            epoch,
            past_flows: past_tx.clone(),
        };
        match thread::Builder::new()
            .name(name.clone())
            .spawn(move || worker::run(w, setup))
        {
            Ok(h) => handles.push((name, h)),
            Err(e) => {
                spawn_error = Some(anyhow!(e).context(format!("spawning worker {name}")));
                break;
            }
        }
    }

    let mut rt = Runtime {
        path,
        claim_all: opts.claim_all,
        read_only: opts.read_only_admin,
        instance,
        control,
        stats,
        slots,
        registry,
        last_reload_error: None,
        links,
        claims_ok: true,
        filter_warning: None,
        admin_stats,
        health,
        announcer,
        draining: false,
        past_flows: fast.is_some().then_some(past_rx),
        fast,
        fast_warning: None,
    };
    let result = match spawn_error {
        Some(e) => Err(e),
        None => serve(&mut rt, opts, token, listener, listen, signals, &handles),
    };

    stop.store(true, Ordering::SeqCst);
    let mut first_err = result.err();
    for (name, h) in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_err.get_or_insert(e.context(format!("worker {name}")));
            }
            Err(_) => {
                first_err.get_or_insert(anyhow!("worker {name} panicked"));
            }
        }
    }
    log_summary(&rt);
    // Dropping the instance detaches the XDP programs (the workers' sockets are closed by now).
    drop(rt);
    log::info!("stopped");
    first_err.map_or(Ok(()), Err)
}

/// Runs the control loop until a stop signal or a worker's end.
#[allow(clippy::too_many_arguments)]
fn serve(
    rt: &mut Runtime,
    opts: &Options,
    token: Option<Token>,
    listener: TcpListener,
    listen: SocketAddr,
    mut signals: Signals,
    handles: &[(String, thread::JoinHandle<Result<()>>)],
) -> Result<()> {
    // Bounded: the HTTP server answers 503 when it is full; the signal thread waits for room.
    let (tx, rx): (Sender<Event>, Receiver<Event>) = crossbeam_channel::bounded(QUEUE);
    let signal_handle = signals.handle();
    let signal_thread = {
        let tx = tx.clone();
        thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for sig in signals.forever() {
                    let ev = match sig {
                        SIGHUP => Event::Reload,
                        SIGINT => Event::Stop("SIGINT"),
                        _ => Event::Stop("SIGTERM"),
                    };
                    if tx.send(ev).is_err() {
                        break;
                    }
                }
            })
            .context("spawning the signal thread")?
    };
    let heartbeat = Arc::new(Heartbeat::new());
    heartbeat.beat();
    let front = Front {
        registry: rt.registry.clone(),
        heartbeat: Arc::clone(&heartbeat),
        events: tx,
    };
    let authorised = token.is_some();
    let mut limits = http::Limits::default();
    if let Some(files) = http::open_files_limit() {
        limits = limits.within_open_files(files);
        if limits.max_connections < http::MAX_CONNECTIONS {
            log::info!(
                "admin server: at most {} connections (open-file limit {files})",
                limits.max_connections
            );
        }
    }
    let settings = http::Settings {
        limits,
        token,
        stats: Arc::clone(&rt.admin_stats),
    };
    let server = http::Server::start("admin", listener, settings, Arc::new(front))
        .with_context(|| format!("starting the admin server on {listen}"))?;
    log::info!(
        "running: {} worker(s); admin API and metrics listening on http://{listen}{}",
        handles.len(),
        if opts.read_only_admin {
            " (read-only)"
        } else if authorised {
            " (changes need the bearer token)"
        } else {
            ""
        }
    );

    let result = control_loop(rt, opts.read_only_admin, &rx, handles, &heartbeat);

    signal_handle.close();
    // Dropping the queue drops the reply senders of requests still in it: their clients get a 503.
    drop(rx);
    server.stop();
    let _ = signal_thread.join();
    result
}

fn control_loop(
    rt: &mut Runtime,
    read_only: bool,
    rx: &Receiver<Event>,
    handles: &[(String, thread::JoinHandle<Result<()>>)],
    heartbeat: &Heartbeat,
) -> Result<()> {
    let mut refreshed = Instant::now();
    let mut drain_until: Option<Instant> = None;
    rt.refresh_filters();
    loop {
        heartbeat.beat();
        if drain_until.is_some_and(|t| Instant::now() >= t) {
            log::info!("drain period over: shutting down");
            return Ok(());
        }
        if refreshed.elapsed() >= TICK {
            rt.refresh_filters();
            refreshed = Instant::now();
        }
        if let Some((name, _)) = handles.iter().find(|(_, h)| h.is_finished()) {
            return Err(anyhow!("worker {name} stopped; shutting down"));
        }
        rt.links.check(Instant::now())?;
        // Past Maglev tables older than the TCP idle timeout are forgotten here.
        rt.control.tick();
        let health = rt.health.results().clone();
        let event = crossbeam_channel::select! {
            recv(rx) -> ev => ev.map_err(|_| RecvTimeoutError::Disconnected),
            recv(health) -> batch => {
                // Everything that arrived together goes into one publication.
                for report in batch.into_iter().chain(health.try_iter()).flatten() {
                    rt.health.absorb(report);
                }
                Err(RecvTimeoutError::Timeout)
            }
            default(TICK) => Err(RecvTimeoutError::Timeout),
        };
        rt.health.tick();
        if let Err(e) = rt.apply_health() {
            log::error!("health: publishing the backends' health: {e}");
        }
        rt.sync_fast();
        rt.record_past_flows();
        rt.refresh_ready();
        rt.announce();
        match event {
            Ok(Event::Stop(sig)) => {
                if let Some(until) = rt.begin_drain(sig) {
                    drain_until = Some(until);
                    continue;
                }
                log::info!("{sig}: shutting down");
                return Ok(());
            }
            Ok(Event::Reload) => {
                log::info!("SIGHUP: reloading {}", rt.path.display());
                // The outcome is logged and counted by `reload`.
                let _ = rt.reload();
            }
            Ok(Event::Http(req, reply)) => {
                // The server may have given up on the client; nothing to do then.
                reply.send(to_response(admin::handle_request(rt, read_only, &req)));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        }
    }
}

fn log_summary(rt: &Runtime) {
    for r in rt.reports() {
        log::info!(
            "{} ({}): rx {} packets {} bytes, tx {} packets {} bytes, tx-dropped {}, lb drops {}",
            r.lport,
            r.mode,
            r.stats.rx_packets,
            r.stats.rx_bytes,
            r.stats.tx_packets,
            r.stats.tx_bytes,
            r.stats.tx_dropped,
            r.counters.drops.iter().sum::<u64>()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CNE: &str = r#"
        "umems": { "umem0": { "bufcnt": 1, "bufsz": 2, "mtype": "4KB", "regions": [1] } },
        "lports": { "eth9:0": { "pmd": "net_af_xdp", "qid": 0, "umem": "umem0", "region": 0,
                                "description": "DESC" } },
        "lcore-groups": { "initial": [0], "g": [0] },
        "threads": { "main": { "group": "initial" }, "lb:0": { "group": "g", "lports": ["eth9:0"] } }"#;

    fn config(maglev: &str, desc: &str, qid: u16) -> Config {
        let text = format!(
            "{{ {} ,\n \"maglev\": {maglev} }}",
            CNE.replace("DESC", desc)
                .replace("\"qid\": 0", &format!("\"qid\": {qid}"))
        );
        Config::parse(&text, "t.jsonc").expect("cne sections parse")
    }

    const MAGLEV: &str = r#"{
        "local_addrs": ["198.18.0.1"], "gateway_mac": "02:00:00:00:00:fe", "claim_all": false,
        "vips": [
          { "name": "web", "addr": "198.18.100.1", "proto": "tcp", "port": 80, "mode": "gre",
            "backends": [ { "name": "a", "addr": "198.18.1.1" } ] },
          { "name": "dns", "addr": "198.18.100.1", "proto": "udp", "port": "all", "mode": "gre",
            "backends": [ { "name": "a", "addr": "198.18.1.1" } ] },
          { "name": "v6", "addr": "2001:2::100", "proto": "udp", "port": 53, "mode": "gre",
            "backends": [] } ] }"#;

    #[test]
    fn claims_cover_ports_all_ports_fragments_and_neighbours() {
        let v = maglev_section(&config(MAGLEV, "x", 0), false).expect("valid");
        let (rules, addrs) = claims(&v);
        let vip: IpAddr = "198.18.100.1".parse().expect("ip");
        let v6: IpAddr = "2001:2::100".parse().expect("ip");
        assert_eq!(
            rules,
            [
                Rule::port(vip, 6, 80),
                Rule::proto(vip, 17),
                Rule::port(v6, 17, 53)
            ]
        );
        let flags = AddrFlags::FRAGS | AddrFlags::ICMP_ERRORS;
        assert_eq!(addrs, [(vip, flags), (v6, flags)]);
        // --claim-all makes the data plane answer ARP / ND, so the filter claims them in rule mode too.
        let v = maglev_section(&config(MAGLEV, "x", 0), true).expect("valid");
        assert!(v.claim_all);
        let (_, addrs) = claims(&v);
        assert!(addrs
            .iter()
            .all(|(_, f)| *f == AddrFlags::FRAGS | AddrFlags::ICMP_ERRORS | AddrFlags::NEIGH));
    }

    #[test]
    fn validation_problems_name_file_line_and_path() {
        let bad = MAGLEV.replace(r#""local_addrs""#, r#""table_size": 100, "local_addrs""#);
        let e = maglev_section(&config(&bad, "x", 0), false).expect_err("not prime");
        assert!(e.message.starts_with("t.jsonc:"), "{}", e.message);
        assert!(
            e.message
                .contains(": maglev.table_size: 100 is not a prime"),
            "{}",
            e.message
        );
        assert_eq!(e.issues[0].0, "maglev.table_size");
        let e = maglev_section(&config(r#"{ "vips": [], "tabel_size": 7 }"#, "x", 0), false)
            .expect_err("unknown key");
        assert!(
            e.message.contains("unknown field `tabel_size`"),
            "{}",
            e.message
        );
        let text = format!("{{ {CNE} }}").replace("DESC", "x");
        let e = maglev_section(&Config::parse(&text, "t.jsonc").expect("parses"), false)
            .expect_err("no section");
        assert!(e.message.contains("no maglev section"), "{}", e.message);
    }

    #[test]
    fn changes_on_a_non_loopback_address_need_a_token_or_read_only() {
        let any: SocketAddr = "0.0.0.0:9100".parse().expect("addr");
        let e = check_exposure(any, false, false)
            .expect_err("refused")
            .to_string();
        for part in [
            "--listen 0.0.0.0:9100 is not a loopback address",
            "--admin-token-file",
            "--read-only-admin",
            "127.0.0.1",
        ] {
            assert!(e.contains(part), "{part} missing in: {e}");
        }
        assert!(check_exposure(any, true, false).is_ok());
        assert!(check_exposure(any, false, true).is_ok());
        for ok in ["127.0.0.1:9100", "127.0.0.2:0", "[::1]:9100"] {
            assert!(
                check_exposure(ok.parse().expect("addr"), false, false).is_ok(),
                "{ok}"
            );
        }
        for bad in ["198.18.0.1:9100", "[::]:9100", "[::ffff:127.0.0.1]:9100"] {
            assert!(
                check_exposure(bad.parse().expect("addr"), false, false).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn heartbeat_ages() {
        let h = Heartbeat::new();
        h.beat();
        assert!(h.age() < CONTROL_STALL);
    }

    #[test]
    fn restart_sections_ignore_descriptions() {
        let a = config(MAGLEV, "one", 0);
        assert!(restart_sections_changed(&a, &config("{}", "two", 0)).is_empty());
        assert_eq!(
            restart_sections_changed(&a, &config(MAGLEV, "one", 1)),
            ["lports"]
        );
    }
}
