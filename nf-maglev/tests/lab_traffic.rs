//! End-to-end traffic through nf-maglev, in both forwarding modes (GRE and L2 DSR), on the Maglev lab
//! (`lab::maglev`: a client, nf-maglev on a 2-queue veth, backends with weights 1/1/2 running real
//! HTTP and UDP servers, one bridged segment, replies straight from the backends to the client).
//!
//! One lab per mode, reused for every check: 1000 real TCP connections spread by weight; keep-alive
//! connections each answered by one backend for all their requests, as the backends' own per-connection
//! logs confirm; the IPv6 VIP; and 4000-byte UDP datagrams that the client's kernel fragments, each
//! arriving whole at one backend. Needs root; skipped otherwise.
#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::time::{Duration, Instant};

use lab::maglev::{self, LabSpec, MaglevLab, Mode, Spread, VIP4, VIP6};
use lab::wait_for;

const NF_MAGLEV: &str = env!("CARGO_BIN_EXE_nf-maglev");

/// `conns` keep-alive connections of `requests` requests each: every request of a connection answered
/// by one backend, and that backend's log holds the connection exactly once with all its requests.
fn check_affinity(lab: &MaglevLab, vip: IpAddr, conns: u32, requests: u32) {
    let results = lab.keepalive(vip, conns, requests).unwrap();
    assert_eq!(results.len(), conns as usize);
    for c in &results {
        assert!(
            c.error.is_none(),
            "{vip} keep-alive connection {}: {c:?}",
            c.sport
        );
        assert_eq!(c.requests_ok, u64::from(requests), "{c:?}");
        assert_eq!(
            c.backends.len(),
            1,
            "one connection, several backends: {c:?}"
        );
    }
    let logged = |sport: u16| {
        let peer = lab.client_peer(vip, sport);
        lab.closed_connections()
            .into_iter()
            .filter(|(_, p, n)| *p == peer && *n == u64::from(requests))
            .map(|(b, _, _)| b)
            .collect::<Vec<_>>()
    };
    // A backend logs a connection when its handler finishes, just after the client saw the last answer.
    let all_logged = wait_for(Duration::from_secs(10), || {
        results.iter().all(|c| !logged(c.sport).is_empty())
    });
    assert!(
        all_logged,
        "backends did not log every keep-alive connection"
    );
    for c in &results {
        assert_eq!(
            logged(c.sport),
            c.backends,
            "{vip} connection from port {}: backend logs disagree with the answers",
            c.sport
        );
    }
    let distinct: std::collections::BTreeSet<_> = results.iter().map(|c| &c.backends[0]).collect();
    assert!(
        distinct.len() >= 2,
        "{conns} connections all went to {distinct:?}: the check proves little"
    );
}

fn spread_check(lab: &MaglevLab, spec: &LabSpec, vip: IpAddr, n: u32) {
    let t = Instant::now();
    let results = lab.tcp_conns(vip, n, 32, None).unwrap();
    let spread = Spread::of(&results);
    eprintln!(
        "{}: {n} connections to {vip} in {:.2} s\n{spread}",
        lab.mode(),
        t.elapsed().as_secs_f64()
    );
    assert_eq!(spread.failed, 0, "{spread}");
    assert_eq!(spread.answered(), u64::from(n));
    spread.check_weights(&spec.backends, 5.0).unwrap();
}

fn traffic(mode: Mode) {
    lab::require_root();
    let _serial = maglev::serial();
    let spec = LabSpec::new(mode, NF_MAGLEV);
    let mut lab = MaglevLab::build(&spec).unwrap();
    lab.start_lb(0, &[]).unwrap();

    spread_check(&lab, &spec, IpAddr::V4(VIP4), 1000);
    check_affinity(&lab, IpAddr::V4(VIP4), 20, 50);

    spread_check(&lab, &spec, IpAddr::V6(VIP6), 400);
    check_affinity(&lab, IpAddr::V6(VIP6), 20, 30);

    // The client found the load balancer by ARP and neighbour discovery (no static entries): the XDP
    // filter passed those to the load balancer's kernel, which answered for its own addresses.
    let lb_mac = lab.lb(0).mac().to_string();
    for addr in [lab.lb(0).v4().to_string(), lab.lb(0).v6().to_string()] {
        let neigh = lab
            .client()
            .ns()
            .ip(&["neigh", "show", &addr, "dev", maglev::CLIENT_IF])
            .unwrap();
        assert!(
            neigh.contains(&lb_mac) && !neigh.contains("PERMANENT"),
            "client's neighbour entry for {addr}: {neigh:?}"
        );
    }
    let passed = lab
        .metrics(0)
        .unwrap()
        .sum("nf_maglev_xdp_filter_passed_packets_total", &[]);
    assert!(
        passed >= 2.0,
        "the XDP filter passed {passed} frames to the kernel"
    );

    let frags_before = lab
        .metrics(0)
        .unwrap()
        .sum("nf_maglev_fragments_total", &[]);
    let mut answered = 0u32;
    for vip in [IpAddr::V4(VIP4), IpAddr::V6(VIP6)] {
        let results = lab.udp(vip, 4000, 100, None).unwrap();
        assert_eq!(results.len(), 100);
        for r in &results {
            assert!(r.error.is_none(), "{vip} datagram from {}: {r:?}", r.sport);
            assert!(
                r.whole,
                "{vip} datagram from {} arrived changed: {r:?}",
                r.sport
            );
            assert_eq!(r.len, 4000);
            answered += 1;
        }
        let retried = results.iter().filter(|r| r.attempts > 1).count();
        let spread = Spread::of_udp(&results);
        eprintln!("{mode}: 100 x 4000-byte datagrams to {vip}, {retried} retried\n{spread}");
    }
    // Each 4000-byte datagram leaves the 1400-byte link as 3 fragments; those of every answered datagram
    // crossed the load balancer (its counters are published every 250 ms: wait for them).
    let expected = f64::from(3 * answered);
    let mut frags = 0.0;
    let counted = wait_for(Duration::from_secs(5), || {
        frags = lab
            .metrics(0)
            .unwrap()
            .sum("nf_maglev_fragments_total", &[])
            - frags_before;
        frags >= expected
    });
    assert!(
        counted,
        "nf_maglev_fragments_total grew by {frags}, expected at least {expected}"
    );

    // In GRE mode every backend decapsulated (at least 3 packets per TCP connection); in L2 DSR nothing is
    // encapsulated and no backend runs the decap step.
    let backends = spec.backends.len();
    if mode == Mode::Gre {
        let mut counts = Vec::new();
        let all = wait_for(Duration::from_secs(5), || {
            counts = (0..backends)
                .map(|i| lab.decapped(i).unwrap_or(0))
                .collect();
            counts.iter().sum::<u64>() >= 3 * 1440 && counts.iter().all(|&c| c > 0)
        });
        assert!(all, "GRE packets decapsulated per backend: {counts:?}");
        eprintln!("{mode}: GRE packets decapsulated per backend: {counts:?}");
    } else {
        assert!((0..backends).all(|i| lab.decapped(i).is_none()));
    }

    // Which path forwarded the connections: with the XDP fast path, the kernel (the workers get only
    // what it hands on: here the fragments); else the workers.
    let m = lab.metrics(0).unwrap();
    let kernel = m.sum(
        "nf_maglev_xdp_fast_path_packets_total",
        &[("result", "forwarded")],
    );
    let vip_packets = m.sum("nf_maglev_vip_packets_total", &[]);
    let workers = m.sum("nf_maglev_port_rx_packets_total", &[]);
    eprintln!(
        "{mode}: {vip_packets} VIP packets forwarded, {kernel} by the XDP fast path; the workers \
         received {workers} frames"
    );
    if maglev::data_path().as_deref() == Some("xdp") {
        assert!(
            kernel >= 3.0 * 1440.0,
            "the XDP fast path forwarded only {kernel} packets"
        );
        assert!(
            kernel <= vip_packets,
            "the fast path's packets count in the VIPs' ({kernel} of {vip_packets})"
        );
        // A connection's packets after its first few come from the flow cache of their CPU.
        let cached = m.sum("nf_maglev_xdp_fast_path_flow_cache_hits_total", &[]);
        eprintln!("{mode}: {cached} packets from the flow cache");
        assert!(
            cached > 0.0 && cached < kernel,
            "flow cache hits: {cached} of {kernel} forwarded"
        );
    } else {
        assert_eq!(kernel, 0.0, "no fast path in the AF_XDP data path");
        assert!(workers >= 3.0 * 1440.0, "the workers received {workers}");
    }

    assert!(lab.backends_running());
    lab.stop_lb(0).unwrap();
}

#[test]
#[ignore = "needs root"]
fn traffic_gre() {
    traffic(Mode::Gre);
}

#[test]
#[ignore = "needs root"]
fn traffic_l2dsr() {
    traffic(Mode::L2dsr);
}
