//! Backend health checks on the Maglev lab (three backends weighted 1/1/2, HTTP checks on the TCP VIPs
//! `web4` and `web6`: interval [`INTERVAL`] s, timeout [`TIMEOUT`] s, fall [`FALL`], rise [`RISE`]).
//!
//! - The lab's faults undo exactly (no nf-maglev: the load balancer's kernel routes to one backend).
//! - Per mode (GRE, L2 DSR), on one lab: backend b2 fails in each of five ways (server stopped,
//!   SIGSTOP, link down, VIPs removed from `lo`, HTTP 500). Each time it leaves the table (`in_table`
//!   false in `/api/state`, `nf_maglev_backend_up` 0) within fall x interval + timeout + [`SLACK`]
//!   (printed), 1000 new connections all succeed and spread over b1 and b3 by weight, and 60 keep-alive
//!   connections opened at the start keep their backend unless it is b2. Undone, b2 is back within
//!   rise x interval + [`SLACK`] and takes its share again. Maintenance through the admin API takes b1
//!   out of `web4` and DELETE brings it back. Every server stopped: with `fail_open` (the default) the
//!   table keeps every backend and says so, and connections still reach them (refused by their
//!   kernels); with `fail_open` false the table is empty and new connections count as `no_backend`.
//! - A backend whose answers flip between 200 and 500 every interval (fall 1, rise 1) for 20 s
//!   rebuilds the tables no more often than its damping allows, and ends suppressed.
//! - 200 backends (200 addresses on one backend's interface, checked through the data path at a 1 s
//!   interval) cost the checker a few percent of a core (printed; bounded at twice the aim of 2%).
//! - Bad check settings are refused at start (file:line:key) and on reload, which keeps the old state.
//!
//! Needs root; skipped otherwise.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use lab::maglev::health::{backend_of, vip_of};
use lab::maglev::health_bench::loose_damping;
use lab::maglev::{self, BackendSpec, Fault, Hold, LabSpec, MaglevLab, Metrics, Mode, Spread};
use lab::maglev::{HTTP_PORT, VIP4};
use serde_json::{json, Value};

const NF_MAGLEV: &str = env!("CARGO_BIN_EXE_nf-maglev");
/// Check interval, seconds.
const INTERVAL: f64 = 0.5;
/// Check timeout, seconds.
const TIMEOUT: f64 = 0.3;
/// Failed checks in a row that take a backend out.
const FALL: u32 = 3;
/// Good checks in a row that bring it back.
const RISE: u32 = 2;
/// Allowed beyond the check arithmetic: scheduling on a busy 2-core machine, publishing the state, and
/// the lab's polling of `/api/state` (every 25 ms, one `curl`).
const SLACK: Duration = Duration::from_millis(1000);
/// The checked VIPs.
const CHECKED: [&str; 2] = ["web4", "web6"];
/// The backend that fails (b2).
const VICTIM: usize = 1;
/// Keep-alive connections held across the failures.
const HELD: u32 = 60;
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

fn check() -> Value {
    json!({"type": "http", "path": "/", "interval": INTERVAL, "timeout": TIMEOUT,
           "fall": FALL, "rise": RISE})
}

fn spec(mode: Mode) -> LabSpec {
    LabSpec::new(mode, NF_MAGLEV)
        .health(json!({"damping": loose_damping()}))
        .check(&CHECKED, check())
}

fn detection_bound() -> Duration {
    Duration::from_secs_f64(f64::from(FALL) * INTERVAL + TIMEOUT) + SLACK
}

fn rise_bound() -> Duration {
    Duration::from_secs_f64(f64::from(RISE) * INTERVAL + TIMEOUT) + SLACK
}

fn backend_up(m: &Metrics, vip: &str, name: &str) -> f64 {
    m.sum("nf_maglev_backend_up", &[("vip", vip), ("backend", name)])
}

fn table_entries(state: &Value, vip: &str) -> u64 {
    vip_of(state, vip).unwrap()["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["table_entries"].as_u64().unwrap_or(0))
        .sum()
}

/// Backend each client source port last reached (the load balancer keeps a closed connection's entry
/// for `tcp_fin_timeout_s`, so a reused port may meet it).
type Seen = BTreeMap<u16, String>;

/// `n` new connections to the IPv4 VIP: all answered, spread by weight over `expected`.
fn spread_over(lab: &MaglevLab, n: u32, expected: &[BackendSpec], what: &str) {
    spread_seen(lab, n, expected, what, &mut Seen::new());
}

/// [`spread_over`], naming for each failed connection the backend its source port reached before.
fn spread_seen(lab: &MaglevLab, n: u32, expected: &[BackendSpec], what: &str, seen: &mut Seen) {
    let results = lab.tcp_conns(IpAddr::V4(VIP4), n, 32, None).unwrap();
    let spread = Spread::of(&results);
    let failed: Vec<String> = results
        .iter()
        .filter(|r| r.error.is_some())
        .map(|r| {
            format!(
                "port {} (before: {})",
                r.sport,
                seen.get(&r.sport).map_or("none", String::as_str)
            )
        })
        .collect();
    for r in &results {
        if let Some(b) = &r.backend {
            seen.insert(r.sport, b.clone());
        }
    }
    assert_eq!(
        spread.failed,
        0,
        "{what}: {n} new connections\n{spread}failed source ports: {}",
        failed.join(", ")
    );
    if let Err(e) = spread.check_weights(expected, 5.0) {
        panic!("{what}: {e:#}");
    }
}

/// Every backend of every checked VIP in the table.
fn wait_all_in(lab: &MaglevLab, timeout: Duration) {
    for b in lab.backend_specs() {
        let t = lab
            .wait_in_table(0, &CHECKED, &b.name, true, timeout)
            .unwrap();
        assert!(
            t.is_some(),
            "{} not in the table after {timeout:?}: {}",
            b.name,
            backend_of(&lab.state(0).unwrap(), "web4", &b.name).unwrap()
        );
    }
}

/// Step `k` of the held connections: every connection whose first backend is not in `spared` is
/// answered by that same backend. Returns how many were checked.
fn held_untouched(
    hold: &mut Hold,
    k: u32,
    first: &BTreeMap<u16, String>,
    spared: &[&str],
    what: &str,
) -> usize {
    let mut checked = 0;
    for r in hold.step(k, STEP_TIMEOUT).unwrap() {
        let was = &first[&r.sport];
        if spared.contains(&was.as_str()) {
            continue;
        }
        assert!(
            r.error.is_none() && r.backend.as_ref() == Some(was),
            "{what}: held connection {} to {was}: {r:?}",
            r.sport
        );
        checked += 1;
    }
    checked
}

#[test]
#[ignore = "needs root"]
fn faults_are_undone() {
    lab::require_root();
    let _serial = maglev::serial();
    let spec = LabSpec::new(Mode::L2dsr, NF_MAGLEV).weights(&[1]);
    let mut lab = MaglevLab::build(&spec).unwrap();
    lab.route_plain(0, 0).unwrap();
    let answered = |lab: &MaglevLab| {
        let r = lab.tcp_conns(IpAddr::V4(VIP4), 3, 3, None).unwrap();
        r.iter()
            .filter(|c| c.backend.as_deref() == Some("b1") && c.error.is_none())
            .count()
    };
    assert_eq!(answered(&lab), 3, "plain routing to b1 before any fault");
    let before = lab.backend_fingerprint(0).unwrap();
    for fault in Fault::ALL {
        lab.inject(0, fault).unwrap();
        assert_ne!(
            lab.backend_fingerprint(0).unwrap(),
            before,
            "{fault} changed nothing"
        );
        let t = Instant::now();
        assert_eq!(answered(&lab), 0, "{fault}: b1 still answers");
        eprintln!(
            "{fault}: no answer (the client gave up in {:.1} s)",
            t.elapsed().as_secs_f64()
        );
        lab.undo(0, fault).unwrap();
        assert_eq!(
            lab.backend_fingerprint(0).unwrap(),
            before,
            "{fault} not undone exactly"
        );
        assert_eq!(answered(&lab), 3, "{fault} undone: b1 answers again");
    }
    let addrs: Vec<IpAddr> = (30..33)
        .map(|n| IpAddr::V4(Ipv4Addr::new(198, 18, 0, n)))
        .collect();
    lab.add_backend_addrs(0, &addrs).unwrap();
    lab.remove_backend_addrs(0).unwrap();
    assert_eq!(lab.backend_fingerprint(0).unwrap(), before);
    assert!(lab.backends_running());
}

fn failures(mode: Mode) {
    lab::require_root();
    let _serial = maglev::serial();
    let spec = spec(mode);
    let mut lab = MaglevLab::build(&spec).unwrap();
    lab.start_lb(0, &[]).unwrap();
    wait_all_in(&lab, Duration::from_secs(10));
    let victim = spec.backends[VICTIM].name.clone();
    let others: Vec<BackendSpec> = spec
        .backends
        .iter()
        .filter(|b| b.name != victim)
        .cloned()
        .collect();
    let steps = u32::try_from(Fault::ALL.len()).unwrap() + 2;
    let mut hold = lab.hold(IpAddr::V4(VIP4), HELD, steps).unwrap();
    let first: BTreeMap<u16, String> = hold
        .step(0, STEP_TIMEOUT)
        .unwrap()
        .into_iter()
        .map(|r| {
            assert!(r.error.is_none(), "held connection at the start: {r:?}");
            (r.sport, r.backend.unwrap())
        })
        .collect();
    eprintln!(
        "{mode}: {HELD} held connections\n{}",
        Spread::of(&hold_results(&first))
    );

    let mut report = Vec::new();
    let mut seen = Seen::new();
    for (k, fault) in Fault::ALL.into_iter().enumerate() {
        let what = format!("{mode} {fault}");
        let clean = lab.backend_fingerprint(VICTIM).unwrap();
        lab.inject(VICTIM, fault).unwrap();
        let down = lab
            .wait_in_table(0, &CHECKED, &victim, false, detection_bound() + SLACK * 5)
            .unwrap();
        let st = lab.backend_state(0, "web4", &victim).unwrap();
        let down = down.unwrap_or_else(|| panic!("{what}: {victim} still in the table: {st}"));
        assert!(
            down <= detection_bound(),
            "{what}: detection took {down:?}, more than {:?}",
            detection_bound()
        );
        eprintln!(
            "{what}: {victim} out of the table in {:.0} ms (last result {})",
            down.as_secs_f64() * 1000.0,
            st["health"]["last_result"]
        );
        let m = lab.metrics(0).unwrap();
        for vip in CHECKED {
            assert_eq!(
                backend_up(&m, vip, &victim),
                0.0,
                "{what}: nf_maglev_backend_up of {vip}/{victim}"
            );
        }
        assert_eq!(st["health"]["state"], "down", "{what}: {st}");
        spread_seen(
            &lab,
            1000,
            &others,
            &format!("{what}, {victim} out"),
            &mut seen,
        );
        let kept = held_untouched(
            &mut hold,
            u32::try_from(k).unwrap() + 1,
            &first,
            &[&victim],
            &what,
        );

        lab.undo(VICTIM, fault).unwrap();
        assert_eq!(
            lab.backend_fingerprint(VICTIM).unwrap(),
            clean,
            "{what}: undone"
        );
        let up = lab
            .wait_in_table(0, &CHECKED, &victim, true, rise_bound() + SLACK * 5)
            .unwrap()
            .unwrap_or_else(|| panic!("{what}: {victim} not back in the table"));
        assert!(
            up <= rise_bound(),
            "{what}: return took {up:?}, more than {:?}",
            rise_bound()
        );
        assert_eq!(
            backend_up(&lab.metrics(0).unwrap(), "web4", &victim),
            1.0,
            "{what}: nf_maglev_backend_up after the return"
        );
        spread_seen(
            &lab,
            600,
            &spec.backends,
            &format!("{what}, {victim} back"),
            &mut seen,
        );
        report.push(format!(
            "{fault:<15} detected in {:>5.0} ms (last result {}), back in {:>5.0} ms, {kept} held \
             connections to the others kept",
            down.as_secs_f64() * 1000.0,
            st["health"]["last_result"],
            up.as_secs_f64() * 1000.0
        ));
    }
    eprintln!(
        "{mode}: detection bound {:.0} ms, return bound {:.0} ms\n{}",
        detection_bound().as_secs_f64() * 1000.0,
        rise_bound().as_secs_f64() * 1000.0,
        report.join("\n")
    );

    // Maintenance: a healthy backend out of web4 whatever the checks say, then back.
    let maint = spec.backends[0].name.clone();
    let path = format!("/api/vips/web4/backends/{maint}/maintenance");
    let body: Value = serde_json::from_str(&lab.admin_ok(0, "POST", &path, None).unwrap()).unwrap();
    assert!(body["generation"].is_u64(), "{body}");
    let st = lab.backend_state(0, "web4", &maint).unwrap();
    assert_eq!(st["health"]["in_table"], false, "{st}");
    assert_eq!(st["health"]["state"], "maintenance", "{st}");
    assert_eq!(st["state"], "maintenance", "{st}");
    assert_eq!(
        lab.backend_state(0, "web6", &maint).unwrap()["health"]["in_table"],
        true,
        "maintenance of web4's {maint} touched web6"
    );
    let rest: Vec<BackendSpec> = spec.backends[1..].to_vec();
    spread_over(&lab, 400, &rest, &format!("{mode}: {maint} in maintenance"));
    let kept = held_untouched(
        &mut hold,
        steps - 1,
        &first,
        &[&victim, &maint],
        "maintenance",
    );
    let body: Value =
        serde_json::from_str(&lab.admin_ok(0, "DELETE", &path, None).unwrap()).unwrap();
    assert!(body["generation"].is_u64(), "{body}");
    let back = lab
        .wait_in_table(0, &["web4"], &maint, true, rise_bound())
        .unwrap();
    assert!(back.is_some(), "{maint} not back after DELETE maintenance");
    spread_over(&lab, 400, &spec.backends, &format!("{mode}: {maint} back"));
    eprintln!("{mode}: maintenance of {maint}: out at once, back in {back:?}, {kept} held kept");
    drop(hold);

    all_down(&mut lab, &spec);
    assert!(lab.backends_running());
    lab.stop_lb(0).unwrap();
}

fn hold_results(first: &BTreeMap<u16, String>) -> Vec<maglev::ConnResult> {
    first
        .iter()
        .map(|(&sport, b)| maglev::ConnResult {
            sport,
            backend: Some(b.clone()),
            error: None,
        })
        .collect()
}

/// Every server stopped: with fail_open, then (reloaded) without.
fn all_down(lab: &mut MaglevLab, spec: &LabSpec) {
    let mode = lab.mode();
    let names: Vec<String> = spec.backends.iter().map(|b| b.name.clone()).collect();
    let all_down = |s: &Value| {
        names.iter().all(|n| {
            backend_of(s, "web4", n).unwrap()["health"]["state"] == "down"
                && backend_of(s, "web6", n).unwrap()["health"]["state"] == "down"
        })
    };
    for i in 0..names.len() {
        lab.stop_server(i).unwrap();
    }
    let (state, ok) = lab.wait_state(0, detection_bound() * 2, all_down).unwrap();
    assert!(
        ok,
        "{mode}: not every backend down: {}",
        vip_of(&state, "web4").unwrap()
    );
    let web4 = vip_of(&state, "web4").unwrap();
    assert_eq!(web4["fail_open"], true, "{web4}");
    assert_eq!(web4["ready"], false, "{web4}");
    let size = web4["table_size"].as_u64().unwrap();
    assert_eq!(
        table_entries(&state, "web4"),
        size,
        "fail-open table: {web4}"
    );
    let m = lab.metrics(0).unwrap();
    assert_eq!(m.sum("nf_maglev_vip_fail_open", &[("vip", "web4")]), 1.0);
    assert_eq!(m.sum("nf_maglev_vip_ready", &[("vip", "web4")]), 0.0);
    assert!(
        lab.lb_log(0).contains("fail"),
        "no log line about fail-open:\n{}",
        lab.lb_log(0)
    );
    let per_backend = |m: &Metrics| -> Vec<f64> {
        names
            .iter()
            .map(|n| {
                m.sum(
                    "nf_maglev_backend_new_connections_total",
                    &[("vip", "web4"), ("backend", n)],
                )
            })
            .collect()
    };
    let no_backend = |m: &Metrics| {
        m.sum(
            "nf_maglev_dropped_packets_total",
            &[("reason", "no_backend")],
        )
    };
    let (before, nb0) = (per_backend(&m), no_backend(&m));
    let results = lab.tcp_conns(IpAddr::V4(VIP4), 100, 32, None).unwrap();
    let refused = results
        .iter()
        .filter(|r| r.error.as_deref().is_some_and(|e| e.contains("Refused")))
        .count();
    assert_eq!(
        refused,
        100,
        "{mode} fail-open: connections should reach the backends and be refused there: {:?}",
        Spread::of(&results)
    );
    std::thread::sleep(Duration::from_millis(600));
    let m = lab.metrics(0).unwrap();
    let after = per_backend(&m);
    assert!(
        before.iter().zip(&after).all(|(b, a)| a > b),
        "{mode} fail-open: new connections per backend {before:?} -> {after:?}"
    );
    assert_eq!(no_backend(&m), nb0, "{mode} fail-open: no_backend drops");
    eprintln!("{mode}: all down, fail open: 100 of 100 refused by the backends, table full");

    // The same without fail_open (reloaded).
    let mut config = lab.config(0);
    config["maglev"]["health"]["fail_open"] = false.into();
    lab.write_config(0, &serde_json::to_string_pretty(&config).unwrap())
        .unwrap();
    lab.admin_ok(0, "POST", "/api/reload", None).unwrap();
    let (state, ok) = lab
        .wait_state(0, detection_bound() * 2, |s| {
            all_down(s) && table_entries(s, "web4") == 0
        })
        .unwrap();
    let web4 = vip_of(&state, "web4").unwrap();
    assert!(ok, "{mode} without fail_open: {web4}");
    assert_eq!(web4["fail_open"], false, "{web4}");
    let m = lab.metrics(0).unwrap();
    assert_eq!(m.sum("nf_maglev_vip_fail_open", &[("vip", "web4")]), 0.0);
    let nb0 = no_backend(&m);
    let results = lab.tcp_conns(IpAddr::V4(VIP4), 20, 20, None).unwrap();
    assert!(results.iter().all(|r| r.error.is_some()));
    let mut nb = nb0;
    let counted = lab::wait_for(Duration::from_secs(3), || {
        nb = no_backend(&lab.metrics(0).unwrap());
        nb >= nb0 + 20.0
    });
    assert!(
        counted,
        "{mode}: no_backend drops {nb0} -> {nb}, 20 SYNs sent at least"
    );
    eprintln!(
        "{mode}: all down, no fail open: empty table, {} SYNs dropped as no_backend",
        nb - nb0
    );

    for i in 0..names.len() {
        lab.start_server(i).unwrap();
    }
    wait_all_in(lab, rise_bound() * 2);
    let state = lab.state(0).unwrap();
    assert_eq!(vip_of(&state, "web4").unwrap()["ready"], true);
    assert_eq!(
        lab.metrics(0)
            .unwrap()
            .sum("nf_maglev_vip_ready", &[("vip", "web4")]),
        1.0
    );
    spread_over(lab, 400, &spec.backends, &format!("{mode}: all back"));
}

#[test]
#[ignore = "needs root"]
fn failures_gre() {
    failures(Mode::Gre);
}

#[test]
#[ignore = "needs root"]
fn failures_l2dsr() {
    failures(Mode::L2dsr);
}

/// Damping of the flapping test: a half-life long against the test, so the penalty barely decays.
const HALF_LIFE: u32 = 60;
const SUPPRESS: u32 = 3;
const REUSE: u32 = 1;
const FLAP_FOR: Duration = Duration::from_secs(20);

/// Most times one VIP's table may change because of one flapping backend within `t` seconds.
///
/// Each time the backend goes down adds a penalty of 1 that halves every [`HALF_LIFE`] seconds; it is
/// suppressed once the penalty exceeds [`SUPPRESS`] and kept out until it decays below [`REUSE`].
/// Within `t` every penalty keeps at least 2^(-t/HALF_LIFE) of itself, so at most
/// n = floor(SUPPRESS x 2^(t/HALF_LIFE)) + 1 downs happen before the suppression, and release would
/// take HALF_LIFE x log2(SUPPRESS/REUSE) > t. Changes: down and up n - 1 times, the n-th down, and one
/// spare for a rebuild that publishes the suppression itself: 2n.
fn damped_changes(t: f64) -> u64 {
    let (h, s, r) = (f64::from(HALF_LIFE), f64::from(SUPPRESS), f64::from(REUSE));
    assert!(h * (s / r).log2() > t, "released within the test");
    let n = (s * (t / h).exp2()).floor() as u64 + 1;
    2 * n
}

#[test]
#[ignore = "needs root"]
fn flapping_is_damped() {
    lab::require_root();
    let _serial = maglev::serial();
    let flappy = json!({"type": "http", "path": "/", "interval": INTERVAL, "timeout": TIMEOUT,
                        "fall": 1, "rise": 1});
    let spec = LabSpec::new(Mode::Gre, NF_MAGLEV)
        .health(
            json!({"damping": {"half_life": HALF_LIFE, "suppress": SUPPRESS, "reuse": REUSE,
                                   "max_suppress": 120}}),
        )
        .check(&CHECKED, flappy);
    let mut lab = MaglevLab::build(&spec).unwrap();
    lab.start_lb(0, &[]).unwrap();
    wait_all_in(&lab, Duration::from_secs(10));
    let victim = spec.backends[VICTIM].name.clone();
    let rebuilds = |lab: &MaglevLab| {
        lab.metrics(0)
            .unwrap()
            .sum("nf_maglev_table_rebuilds_total", &[])
    };
    let transitions = |lab: &MaglevLab| {
        lab.metrics(0).unwrap().sum(
            "nf_maglev_health_transitions_total",
            &[("backend", victim.as_str())],
        )
    };
    let (r0, t0, g0) = (
        rebuilds(&lab),
        transitions(&lab),
        lab.state(0).unwrap()["generation"].as_u64().unwrap(),
    );
    let start = Instant::now();
    let mut failing = false;
    let mut flips = 0;
    while start.elapsed() < FLAP_FOR {
        failing = !failing;
        lab.set_http_fail(VICTIM, failing).unwrap();
        flips += 1;
        std::thread::sleep(Duration::from_secs_f64(INTERVAL));
    }
    lab.set_http_fail(VICTIM, false).unwrap();
    let secs = start.elapsed().as_secs_f64();
    let (r1, t1, g1) = (
        rebuilds(&lab),
        transitions(&lab),
        lab.state(0).unwrap()["generation"].as_u64().unwrap(),
    );
    let bound = damped_changes(secs) * CHECKED.len() as u64;
    let st = lab.backend_state(0, "web4", &victim).unwrap();
    eprintln!(
        "flapping {victim} ({flips} flips in {secs:.1} s): {} table rebuilds, {} health transitions, \
         generation +{}; bound {bound} rebuilds (undamped: up to {} per checked VIP); now {}",
        r1 - r0,
        t1 - t0,
        g1 - g0,
        flips,
        st["health"]
    );
    assert!(
        t1 > t0,
        "the backend never changed state: the test proves nothing"
    );
    assert!(
        r1 - r0 <= bound as f64,
        "{} rebuilds while flapping, damping allows {bound}",
        r1 - r0
    );
    assert_eq!(st["health"]["state"], "suppressed", "{st}");
    assert_eq!(st["health"]["in_table"], false, "{st}");
    spread_over(
        &lab,
        400,
        &[spec.backends[0].clone(), spec.backends[2].clone()],
        "a suppressed backend gets no new connection",
    );
    lab.stop_lb(0).unwrap();
}

#[test]
#[ignore = "needs root"]
fn checker_cpu_200_backends() {
    lab::require_root();
    let _serial = maglev::serial();
    let mode = Mode::Gre;
    let mut lab = MaglevLab::build(&LabSpec::new(mode, NF_MAGLEV).weights(&[1])).unwrap();
    // 200 more addresses on b1: through GRE each reaches b1's VIP like a backend of its own.
    let addrs: Vec<IpAddr> = (30..230)
        .map(|n| IpAddr::V4(Ipv4Addr::new(198, 18, 0, n)))
        .collect();
    lab.add_backend_addrs(0, &addrs).unwrap();
    let mac = lab.backend(0).mac().to_string();
    let mut config = lab.config(0);
    let backends: Vec<Value> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| json!({"name": format!("m{i}"), "addr": a.to_string(), "mac": mac}))
        .collect();
    config["maglev"]["vips"].as_array_mut().unwrap().push(json!({
        "name": "many", "addr": VIP4.to_string(), "proto": "tcp", "port": 8080, "mode": mode.as_str(),
        "check": {"type": "tcp", "port": HTTP_PORT, "interval": 1, "timeout": 0.5},
        "backends": backends,
    }));
    lab.write_config(0, &serde_json::to_string_pretty(&config).unwrap())
        .unwrap();
    lab.start_lb(0, &[]).unwrap();
    let up = |s: &Value| {
        vip_of(s, "many").unwrap()["backends"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["health"]["state"] == "up")
            .count()
    };
    let (state, ok) = lab
        .wait_state(0, Duration::from_secs(15), |s| up(s) == 200)
        .unwrap();
    assert!(ok, "{} of 200 backends up", up(&state));
    let sample = |lab: &MaglevLab| {
        let m = lab.metrics(0).unwrap();
        (
            Instant::now(),
            m.sum("nf_maglev_health_checker_cpu_seconds_total", &[]),
            m.sum("nf_maglev_health_checks_total", &[("vip", "many")]),
        )
    };
    // The lab's hosts are namespaces of one kernel: a frame sent on a veth is received (XDP, IP, TCP)
    // in the sender's context, so the backend's and the load balancer's receive work would be charged
    // to the checker's thread. Threaded NAPI on the interfaces that have it (XDP attached) moves that
    // work to their own kernel threads, as on separate machines.
    // The switch's ports get NAPI (GRO on) for the same reason: the bridge is another machine too.
    for ns in [lab.backend(0).ns(), lab.lb(0).ns(), lab.switch()] {
        ns.exec(&[
            "sh",
            "-c",
            "for d in /sys/class/net/*; do n=${d##*/}; [ $n = lo ] && continue; \
             ethtool -K $n gro on >/dev/null 2>&1; echo 1 > $d/threaded 2>/dev/null; done; true",
        ])
        .unwrap();
    }
    let measure = |lab: &MaglevLab, what: &str| -> f64 {
        let (t0, cpu0, n0) = sample(lab);
        std::thread::sleep(Duration::from_secs(15));
        let (t1, cpu1, n1) = sample(lab);
        let secs = (t1 - t0).as_secs_f64();
        let share = (cpu1 - cpu0) / secs;
        eprintln!(
            "200 backends, {what} every 1 s: {:.0} checks/s, checker CPU {:.3} s in {secs:.1} s = {:.2}% of a core",
            (n1 - n0) / secs,
            cpu1 - cpu0,
            share * 100.0
        );
        assert!(
            n1 - n0 >= 150.0 * secs,
            "{what}: checks did not run at 200/s"
        );
        assert!(
            cpu1 > 0.0,
            "nf_maglev_health_checker_cpu_seconds_total stays 0"
        );
        share
    };
    // The default check of a TCP VIP: a TCP connect (SYN, SYN-ACK, reset). Most of the checker's time
    // is the kernel's (socket, connect, the probe packets' way through the TUN device and out of a
    // packet socket, close), so the share depends on the machine: 1.6-1.9% of a core on one, 2.7-3.0%
    // on another. The bounds (4% for TCP, 8% for HTTP) are twice the aims: what they catch is a checker
    // that wakes per packet or spins, which costs multiples.
    let tcp = measure(&lab, "TCP connect");
    assert!(
        tcp < 0.04,
        "TCP checks: the checker used {:.2}% of a core",
        tcp * 100.0
    );
    assert_eq!(up(&lab.state(0).unwrap()), 200);
    // An HTTP request each: twice the packets and wake-ups (printed, bounded loosely).
    let vips = config["maglev"]["vips"].as_array_mut().unwrap();
    let many = vips.iter_mut().find(|v| v["name"] == "many").unwrap();
    many["check"] =
        json!({"type": "http", "port": HTTP_PORT, "path": "/", "interval": 1, "timeout": 0.5});
    lab.write_config(0, &serde_json::to_string_pretty(&config).unwrap())
        .unwrap();
    lab.admin_ok(0, "POST", "/api/reload", None).unwrap();
    let (state, ok) = lab
        .wait_state(0, Duration::from_secs(15), |s| up(s) == 200)
        .unwrap();
    assert!(ok, "{} of 200 backends up with HTTP checks", up(&state));
    let http = measure(&lab, "HTTP GET");
    assert!(
        http < 0.08,
        "HTTP checks: the checker used {:.2}% of a core",
        http * 100.0
    );
    assert_eq!(up(&lab.state(0).unwrap()), 200);
    lab.stop_lb(0).unwrap();
}

/// The 1-based line of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle} not in the config"))
        + 1
}

/// Whether `msg` names `file` at `line` (or the line after: a value on its own line) and `key`.
fn names_place(msg: &str, file: &Path, line: usize, key: &str) -> bool {
    let at = |l: usize| msg.contains(&format!("{}:{l}:", file.display()));
    (at(line) || at(line + 1)) && msg.contains(key)
}

#[test]
#[ignore = "needs root"]
fn bad_check_configs_are_refused() {
    lab::require_root();
    let _serial = maglev::serial();
    let spec = spec(Mode::Gre);
    let mut lab = MaglevLab::build(&spec).unwrap();
    lab.start_lb(0, &[]).unwrap();
    wait_all_in(&lab, Duration::from_secs(10));
    let good = std::fs::read_to_string(lab.config_path(0)).unwrap();
    // (what, key, value, needle on the reported line)
    let cases: [(&str, &str, Value, &str); 4] = [
        ("unknown type", "type", json!("icmp"), r#""type": "icmp""#),
        (
            "timeout > interval",
            "timeout",
            json!(0.6),
            r#""timeout": 0.6"#,
        ),
        ("rise 0", "rise", json!(0), r#""rise": 0"#),
        ("bad status code", "status", json!([99]), r#""status": ["#),
    ];
    let key_path = |key: &str| format!("maglev.vips[0].check.{key}");
    for (what, key, value, needle) in cases {
        let mut bad = lab.config(0);
        bad["maglev"]["vips"][0]["check"][key] = value;
        let text = serde_json::to_string_pretty(&bad).unwrap();
        let line = line_of(&text, needle);

        // At start: a file of its own, outside the lab's namespaces (it never gets to attach anything).
        let file = lab.dir().join(format!("bad-{key}.jsonc"));
        std::fs::write(&file, &text).unwrap();
        let out = Command::new("timeout")
            .args(["20", NF_MAGLEV, "-c"])
            .arg(&file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: accepted at start");
        assert!(
            names_place(&stderr, &file, line, &key_path(key)),
            "{what}: expected {}:{line}: {} in:\n{stderr}",
            file.display(),
            key_path(key)
        );

        // On reload through the API: refused, the old state keeps serving.
        lab.write_config(0, &text).unwrap();
        let generation = lab.state(0).unwrap()["generation"].clone();
        let (code, body) = lab.admin(0, "POST", "/api/reload", None).unwrap();
        assert_eq!(code, 400, "{what}: reload: {body}");
        assert!(
            names_place(&body, lab.config_path(0), line, &key_path(key)),
            "{what}: reload answer names file:line:key: {body}"
        );
        let state = lab.state(0).unwrap();
        assert_eq!(
            state["generation"], generation,
            "{what}: refused reload changed the state"
        );

        // On SIGHUP: counted as rejected, logged, still serving.
        let rejected = state["reloads"]["rejected"].as_u64().unwrap();
        lab.sighup_lb(0).unwrap();
        let (_, counted) = lab
            .wait_state(0, Duration::from_secs(10), |s| {
                s["reloads"]["rejected"].as_u64() == Some(rejected + 1)
            })
            .unwrap();
        assert!(counted, "{what}: SIGHUP reload not counted as rejected");
        assert!(
            lab.lb_log(0).contains(&key_path(key)),
            "{what}: the log names the key:\n{}",
            lab.lb_log(0)
        );
        assert!(lab.lb_running(0));
        spread_over(
            &lab,
            200,
            &spec.backends,
            &format!("after refused reload ({what})"),
        );
        eprintln!("{what}: refused at start, on POST /api/reload and on SIGHUP");
    }
    lab.write_config(0, &good).unwrap();
    lab.admin_ok(0, "POST", "/api/reload", None).unwrap();
    lab.stop_lb(0).unwrap();
}
