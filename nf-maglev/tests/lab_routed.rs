//! nf-maglev behind an ECMP router, on the routed lab (`lab::routed`): each load balancer announces the
//! VIPs it is ready to serve on its TUN device, its BIRD exports them over BGP with BFD, and the router
//! spreads flows over the announcing load balancers by L4 hash.
//!
//! - The router's route for each VIP has one nexthop per ready load balancer, added only once it is
//!   ready; 1000 connections spread over the load balancers (counted by each one's metrics) and over
//!   the backends by weight; the IPv6 VIP the same way over the same fabric, UDP of both families too.
//! - A load balancer restarted under a steady stream of new connections: the SYNs lost are counted.
//! - Graceful stop (SIGTERM) with 200 held connections and new ones arriving: nothing breaks.
//! - SIGKILL with 200 held connections: the other load balancers pick the same backends, so every held
//!   connection survives; the longest gap in new connections is the failover time.
//! - A backend added on every load balancer and one load balancer killed together: survivors counted.
//! - A load balancer none of whose backends passes its checks is never announced.
//! - Probes through the data path (the default) keep the backends up while the VIP is announced.
//!
//! Every measured number is printed. Needs root; skipped otherwise.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use lab::maglev::{self, BackendSpec, ConnResult, ConnStream, Hold, Spread, StreamSummary};
use lab::routed::{RoutedLab, VIP4, VIP6, VIPS};

const NF_MAGLEV: &str = env!("CARGO_BIN_EXE_nf-maglev");
const ROUTE_TIMEOUT: Duration = Duration::from_secs(30);
const STEP_TIMEOUT: Duration = Duration::from_secs(60);
const HELD: u32 = 200;
/// New connections per second of the steady streams.
const RATE: u32 = 50;

/// A lab of `n` load balancers, every BIRD and nf-maglev running, every VIP announced by all.
fn lab_up(n: usize) -> RoutedLab {
    let mut lab = RoutedLab::build(n, Some(Path::new(NF_MAGLEV))).unwrap();
    for i in 0..n {
        lab.start_bird(i).unwrap();
    }
    for i in 0..n {
        lab.start_lb(i).unwrap();
    }
    let all: Vec<usize> = (0..n).collect();
    for vip in VIPS {
        lab.wait_nexthops(vip, &all, ROUTE_TIMEOUT).unwrap();
    }
    lab
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// New connections load balancer `i` gave a backend for VIP `name` so far.
fn new_conns(lab: &RoutedLab, i: usize, name: &str) -> u64 {
    let m = lab.admin(i).metrics().unwrap();
    let v = m.sum("nf_maglev_vip_new_connections_total", &[("vip", name)]);
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let n = v as u64;
    n
}

/// `count` new connections to `vip` (VIP named `name` in the configuration): every one answered, spread
/// over the backends by weight and over the load balancers evenly (each one's metrics), both within a
/// binomial 5-sigma bound.
fn spread_check(lab: &RoutedLab, vip: IpAddr, name: &str, count: u32) {
    let n = lab.n_lbs();
    let before: Vec<u64> = (0..n).map(|i| new_conns(lab, i, name)).collect();
    let results = lab.traffic().tcp_conns(vip, count, 32, None).unwrap();
    let by_backend = Spread::of(&results);
    let mut by_lb = Spread::default();
    // The workers publish their counters now and then: wait until the sum settles.
    lab::wait_for(Duration::from_secs(5), || {
        for (i, b) in before.iter().enumerate() {
            by_lb
                .counts
                .insert(format!("lb{i}"), new_conns(lab, i, name) - b);
        }
        by_lb.answered() >= u64::from(count)
    });
    eprintln!("{vip}: {count} connections by backend\n{by_backend}by load balancer\n{by_lb}");
    let failed: Vec<&ConnResult> = results.iter().filter(|r| r.error.is_some()).collect();
    assert_eq!(by_backend.failed, 0, "{by_backend}{failed:?}");
    by_backend.check_weights(&lab.backend_specs(), 5.0).unwrap();
    // A flow seen by both workers of a load balancer (a retransmission may change the queue) counts
    // on each: allow 3%.
    assert!(
        by_lb.answered().abs_diff(u64::from(count)) <= u64::from(count) * 3 / 100,
        "the load balancers counted other than {count} new connections: {by_lb}"
    );
    let even: Vec<BackendSpec> = (0..n)
        .map(|i| BackendSpec {
            name: format!("lb{i}"),
            weight: 1,
        })
        .collect();
    by_lb.check_weights(&even, 5.0).unwrap();
}

/// Source port -> backend of the held connections' first step, all answered.
fn first_step(results: &[ConnResult]) -> BTreeMap<u16, String> {
    assert_eq!(results.len(), HELD as usize);
    results
        .iter()
        .map(|r| {
            assert!(r.error.is_none(), "held connection at the start: {r:?}");
            (r.sport, r.backend.clone().unwrap())
        })
        .collect()
}

/// [`HELD`] connections held across `steps` steps (the first one run: source port -> backend) and a
/// stream of [`RATE`] new connections a second for `secs`, 2 s under way.
fn under_load(
    lab: &RoutedLab,
    vip: IpAddr,
    steps: u32,
    secs: Duration,
) -> (Hold, BTreeMap<u16, String>, ConnStream) {
    let mut hold = lab.traffic().hold(vip, HELD, steps).unwrap();
    let first = first_step(&hold.step(0, STEP_TIMEOUT).unwrap());
    let stream = lab.traffic().conn_stream(vip, RATE, secs).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    (hold, first, stream)
}

/// Held connections of a later step answered by the backend they started with.
fn survivors(first: &BTreeMap<u16, String>, results: &[ConnResult]) -> (usize, Vec<String>) {
    let mut ok = 0;
    let mut lost = Vec::new();
    for r in results {
        match (&r.backend, &r.error) {
            (Some(b), None) if first.get(&r.sport) == Some(b) => ok += 1,
            _ => lost.push(format!(
                "port {} (was {:?}): {:?} {:?}",
                r.sport,
                first.get(&r.sport),
                r.backend,
                r.error
            )),
        }
    }
    (ok, lost)
}

#[test]
#[ignore = "needs root"]
fn announced_when_ready_and_spread_over_lbs_and_backends() {
    lab::require_root();
    let _serial = maglev::serial();
    let mut lab = RoutedLab::build(3, Some(Path::new(NF_MAGLEV))).unwrap();
    for i in 0..3 {
        lab.start_bird(i).unwrap();
    }
    for vip in VIPS {
        assert!(
            lab.router_nexthops(vip).unwrap().is_empty(),
            "{vip} routed before any nf-maglev"
        );
    }
    for i in 0..3 {
        lab.start_lb(i).unwrap();
        let upto: Vec<usize> = (0..=i).collect();
        for vip in VIPS {
            let took = lab.wait_nexthops(vip, &upto, ROUTE_TIMEOUT).unwrap();
            eprintln!(
                "{vip}: lb{i} announced {} after its admin API answered",
                ms(took)
            );
        }
        let state = lab.admin(i).state().unwrap();
        let log = lab.lb_log(i);
        let events: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("announce:") || l.contains("health:"))
            .take(12)
            .collect();
        eprintln!("lb{i} log:\n{}", events.join("\n"));
        let addrs = &state["announce"]["addresses"];
        for vip in VIPS {
            assert!(
                addrs
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x == &vip.to_string())),
                "lb{i} /api/state announce: {}",
                state["announce"]
            );
        }
        let m = lab.admin(i).metrics().unwrap();
        for name in ["web4", "web6", "udp4", "udp6"] {
            assert_eq!(
                m.sum("nf_maglev_vip_announced", &[("vip", name)]),
                1.0,
                "lb{i} {name}"
            );
        }
    }
    spread_check(&lab, IpAddr::V4(VIP4), "web4", 1000);

    // The IPv6 VIP over the same fabric.
    spread_check(&lab, IpAddr::V6(VIP6), "web6", 1000);
    for vip in VIPS {
        let udp = lab.traffic().udp(vip, 200, 600, None).unwrap();
        let s = Spread::of_udp(&udp);
        eprintln!("{vip}: 600 UDP datagrams of 200 bytes, each from its own port\n{s}");
        let bad: Vec<_> = udp.iter().filter(|r| !r.whole).collect();
        assert_eq!(s.failed, 0, "{s}{bad:?}");
        s.check_weights(&lab.backend_specs(), 5.0).unwrap();
    }
    assert!(lab.backends_running());
}

#[test]
#[ignore = "needs root"]
fn restart_under_steady_new_connections() {
    lab::require_root();
    let _serial = maglev::serial();
    let mut lab = lab_up(3);
    let vip = IpAddr::V4(VIP4);
    let stream = lab
        .traffic()
        .conn_stream(vip, RATE, Duration::from_secs(16))
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));

    let t = Instant::now();
    lab.term_lb(1).unwrap();
    lab.wait_nexthops(vip, &[0, 2], ROUTE_TIMEOUT).unwrap();
    let withdrawn = t.elapsed();
    lab.wait_lb_exit(1).unwrap();
    let stopped = t.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let before = Instant::now();
    lab.start_lb(1).unwrap();
    let started = before.elapsed();
    let announced = lab.wait_nexthops(vip, &[0, 1, 2], ROUTE_TIMEOUT).unwrap();
    eprintln!(
        "lb1 withdrawn {} after SIGTERM, exited after {}; restarted in {}, announced {} later",
        ms(withdrawn),
        ms(stopped),
        ms(started),
        ms(announced)
    );
    let after = new_conns(&lab, 1, "web4");

    let conns = stream.finish().unwrap();
    let s = StreamSummary::of(&conns);
    eprintln!(
        "restart of lb1 under {RATE} new connections/s: {s}; SYNs lost: {}",
        s.syns_lost()
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        new_conns(&lab, 1, "web4") > after,
        "the restarted load balancer took no new connection"
    );
    assert_eq!(s.failed, 0, "{s}");
}

#[test]
#[ignore = "needs root"]
fn graceful_stop_breaks_nothing() {
    lab::require_root();
    let _serial = maglev::serial();
    let mut lab = lab_up(3);
    let vip = IpAddr::V4(VIP4);
    let (mut hold, first, stream) = under_load(&lab, vip, 3, Duration::from_secs(10));

    let t = Instant::now();
    lab.term_lb(1).unwrap();
    lab.wait_nexthops(vip, &[0, 2], ROUTE_TIMEOUT).unwrap();
    let withdrawn = t.elapsed();
    // While lb1 drains: every held connection now reaches lb0 or lb2.
    let (ok1, lost1) = survivors(&first, &hold.step(1, STEP_TIMEOUT).unwrap());
    lab.wait_lb_exit(1).unwrap();
    let exited = t.elapsed();
    let (ok2, lost2) = survivors(&first, &hold.step(2, STEP_TIMEOUT).unwrap());
    let s = StreamSummary::of(&stream.finish().unwrap());
    eprintln!(
        "graceful stop of lb1: withdrawn {} after SIGTERM, exited after {}; held connections answered \
         by their backend: {ok1}/{HELD} while draining, {ok2}/{HELD} after; new connections: {s}",
        ms(withdrawn),
        ms(exited)
    );
    assert!(lost1.is_empty(), "broken while draining: {lost1:?}");
    assert!(lost2.is_empty(), "broken after the stop: {lost2:?}");
    assert_eq!((s.failed, s.retried), (0, 0), "{s}");
}

#[test]
#[ignore = "needs root"]
fn kill_keeps_held_connections() {
    lab::require_root();
    let _serial = maglev::serial();
    for vip in VIPS {
        let mut lab = lab_up(3);
        let (mut hold, first, stream) = under_load(&lab, vip, 2, Duration::from_secs(8));

        let t = Instant::now();
        lab.kill_lb(1).unwrap();
        lab.wait_nexthops(vip, &[0, 2], ROUTE_TIMEOUT).unwrap();
        let withdrawn = t.elapsed();
        let (ok, lost) = survivors(&first, &hold.step(1, STEP_TIMEOUT).unwrap());
        let s = StreamSummary::of(&stream.finish().unwrap());
        eprintln!(
            "{vip}: SIGKILL of lb1: nexthop withdrawn {} after the kill; held connections surviving \
             {ok}/{HELD}; new connections: {s} (failover time: the longest gap)",
            ms(withdrawn)
        );
        assert_eq!(ok, HELD as usize, "lost: {lost:?}");
        assert!(s.longest_gap < 1.0, "{s}");
    }
}

#[test]
#[ignore = "needs root"]
fn backend_added_and_lb_killed_together() {
    lab::require_root();
    let _serial = maglev::serial();
    let mut lab = lab_up(3);
    let vip = IpAddr::V4(VIP4);
    let mut hold = lab.traffic().hold(vip, HELD, 2).unwrap();
    let first = first_step(&hold.step(0, STEP_TIMEOUT).unwrap());

    let j = lab.add_backend("b4", 1).unwrap();
    let addr = lab.backend(j).v4().to_string();
    let body = format!(r#"{{"name": "b4", "addr": "{addr}", "weight": 1}}"#);
    for i in 0..3 {
        lab.admin(i)
            .ok("POST", "/api/vips/web4/backends", Some(&body))
            .unwrap();
    }
    // b4 enters the tables once its health checks pass.
    let in_table = |lab: &RoutedLab, i: usize| {
        let st = lab.admin(i).state().unwrap();
        st["vips"].as_array().into_iter().flatten().any(|v| {
            v["name"] == "web4"
                && v["backends"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|b| b["name"] == "b4" && b["health"]["in_table"] == true)
        })
    };
    assert!(lab::wait_for(Duration::from_secs(20), || (0..3)
        .all(|i| in_table(&lab, i))));
    let t = Instant::now();
    lab.kill_lb(1).unwrap();
    lab.wait_nexthops(vip, &[0, 2], ROUTE_TIMEOUT).unwrap();
    let withdrawn = t.elapsed();
    let (ok, lost) = survivors(&first, &hold.step(1, STEP_TIMEOUT).unwrap());
    let fresh = Spread::of(&lab.traffic().tcp_conns(vip, 500, 32, None).unwrap());
    eprintln!(
        "b4 added on every load balancer, then SIGKILL of lb1 (withdrawn {} after the kill): held \
         connections surviving {ok}/{HELD}; lost: {:?}\n500 new connections\n{fresh}",
        ms(withdrawn),
        &lost[..lost.len().min(5)],
    );
    assert_eq!(fresh.failed, 0, "{fresh}");
    assert!(fresh.counts.get("b4").is_some_and(|&n| n > 0), "{fresh}");
}

#[test]
#[ignore = "needs root"]
fn not_announced_without_a_healthy_backend() {
    lab::require_root();
    let _serial = maglev::serial();
    let mut lab = RoutedLab::build(2, Some(Path::new(NF_MAGLEV))).unwrap();
    for i in 0..2 {
        lab.start_bird(i).unwrap();
    }
    lab.start_lb(0).unwrap();
    for vip in VIPS {
        lab.wait_nexthops(vip, &[0], ROUTE_TIMEOUT).unwrap();
    }
    // lb1 checks a port nobody listens on: no backend of any VIP ever passes.
    let mut config = lab.config(1);
    for v in config["maglev"]["vips"].as_array_mut().unwrap() {
        v["check"]["port"] = 81.into();
    }
    lab.write_config(1, &config).unwrap();
    lab.start_lb(1).unwrap();
    let start = Instant::now();
    // (first, last) time the router had lb1's nexthop, per VIP.
    let mut seen: BTreeMap<IpAddr, (Duration, Duration)> = BTreeMap::new();
    while start.elapsed() < Duration::from_secs(4) {
        for vip in VIPS {
            let hops = lab.router_nexthops(vip).unwrap();
            if hops.contains(&lab.lb_nexthop(1, vip)) {
                let now = start.elapsed();
                seen.entry(vip).or_insert((now, now)).1 = now;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let state = lab.admin(1).state().unwrap();
    for (vip, (first, last)) in &seen {
        eprintln!(
            "{vip}: lb1, whose checks all fail, was routed from {} to {} after its admin API answered",
            ms(*first),
            ms(*last)
        );
    }
    eprintln!("lb1 /api/state announce after 4 s: {}", state["announce"]);
    assert!(seen.is_empty(), "announced without a healthy backend");
    assert_eq!(state["announce"]["addresses"], serde_json::json!([]));
}

#[test]
#[ignore = "needs root"]
fn announcement_device_brought_down_or_deleted_is_put_back() {
    lab::require_root();
    let _serial = maglev::serial();
    let lab = lab_up(1);
    for (what, undo, log) in [
        (
            "brought down",
            RoutedLab::vip_dev_down as fn(&RoutedLab, usize) -> anyhow::Result<()>,
            "was down; brought it up",
        ),
        (
            "deleted",
            RoutedLab::vip_dev_delete,
            "was deleted; created it again",
        ),
    ] {
        let repairs_before = lab
            .admin(0)
            .metrics()
            .unwrap()
            .sum("nf_maglev_announce_repairs_total", &[]);
        let t = Instant::now();
        undo(&lab, 0).unwrap();
        // Without the device's addresses BIRD withdraws the VIPs; they come back once nf-maglev has
        // put the device and its addresses back (its check runs every second).
        let mut gone = BTreeMap::new();
        while t.elapsed() < Duration::from_secs(3) && gone.len() < VIPS.len() {
            for vip in VIPS {
                if !gone.contains_key(&vip) && lab.router_nexthops(vip).unwrap().is_empty() {
                    gone.insert(vip, t.elapsed());
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let mut back = BTreeMap::new();
        for vip in VIPS {
            lab.wait_nexthops(vip, &[0], ROUTE_TIMEOUT).unwrap();
            back.insert(vip, t.elapsed());
        }
        let state = lab.admin(0).state().unwrap();
        let repairs = lab
            .admin(0)
            .metrics()
            .unwrap()
            .sum("nf_maglev_announce_repairs_total", &[])
            - repairs_before;
        eprintln!(
            "announcement device {what}: withdrawn after {gone:?}, back after {back:?}; \
             /api/state announce: {}; repairs {repairs}",
            state["announce"]
        );
        // Put back: both addresses, neither local (the local table would answer for the VIP).
        assert!((repairs - 2.0).abs() < f64::EPSILON, "{what}: {repairs}");
        assert!(lab.lb_log(0).contains(log), "{what}: no {log:?} in the log");
        for vip in VIPS {
            assert!(
                back[&vip] < Duration::from_secs(3),
                "{what}: {vip} back only after {:?}",
                back[&vip]
            );
        }
        spread_check(&lab, IpAddr::V4(VIP4), "web4", 200);
        spread_check(&lab, IpAddr::V6(VIP6), "web6", 200);
    }
}

#[test]
#[ignore = "needs root"]
fn probes_through_the_data_path_while_announced() {
    lab::require_root();
    let _serial = maglev::serial();
    let mut lab = RoutedLab::build(1, Some(Path::new(NF_MAGLEV))).unwrap();
    lab.start_bird(0).unwrap();
    // The default probe path: through the data path, to the VIP, which is a local address of the load
    // balancer while it is announced.
    let mut config = lab.config(0);
    config["maglev"]
        .as_object_mut()
        .unwrap()
        .remove("health")
        .unwrap();
    lab.write_config(0, &config).unwrap();
    lab.start_lb(0).unwrap();
    for vip in VIPS {
        lab.wait_nexthops(vip, &[0], ROUTE_TIMEOUT).unwrap();
    }
    // Each family: an IPv6 VIP whose local route the kernel put back would answer its own probes.
    let start = Instant::now();
    let mut gone: BTreeMap<IpAddr, Duration> = BTreeMap::new();
    while start.elapsed() < Duration::from_secs(5) {
        for vip in VIPS {
            if !gone.contains_key(&vip) && lab.router_nexthops(vip).unwrap().is_empty() {
                gone.insert(vip, start.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let state = lab.admin(0).state().unwrap();
    let health: Vec<String> = state["vips"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|v| {
            v["backends"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |b| {
                    format!(
                        "{}/{}: {} ({})",
                        v["name"].as_str().unwrap_or("?"),
                        b["name"].as_str().unwrap_or("?"),
                        b["health"]["state"],
                        b["health"]["last_error"]
                    )
                })
        })
        .collect();
    eprintln!(
        "probes through the data path: routes withdrawn {gone:?}; health after 5 s:\n{}",
        health.join("\n")
    );
    assert!(
        gone.is_empty(),
        "withdrawn after they were announced: {gone:?}"
    );
    assert!(
        health.iter().all(|h| h.contains("\"up\"")),
        "backends not up: {health:?}"
    );
}
