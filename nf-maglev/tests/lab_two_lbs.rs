//! Two nf-maglev instances with the same configuration pick the same backend for the same flow, as load
//! balancers behind one ECMP group must: the client sends the same flows (same source ports) through the
//! first instance, then through the second, and every flow lands on the same backend both times. UDP
//! (IPv4 and IPv6) and TCP, in both forwarding modes. Needs root; skipped otherwise.
#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::net::IpAddr;

use lab::maglev::{self, LabSpec, MaglevLab, Mode, VIP4, VIP6};

const NF_MAGLEV: &str = env!("CARGO_BIN_EXE_nf-maglev");

/// (source port, backend) of every flow sent through the currently routed load balancer.
fn flows(lab: &MaglevLab) -> Vec<(String, u16, String)> {
    let mut out = Vec::new();
    for (vip, base) in [(IpAddr::V4(VIP4), 41000), (IpAddr::V6(VIP6), 43000)] {
        for r in lab.udp(vip, 64, 150, Some(base)).unwrap() {
            assert!(
                r.error.is_none() && r.whole,
                "{vip} UDP from {}: {r:?}",
                r.sport
            );
            out.push((format!("udp {vip}"), r.sport, r.backend.unwrap()));
        }
    }
    for r in lab
        .tcp_conns(IpAddr::V4(VIP4), 100, 16, Some(45000))
        .unwrap()
    {
        assert!(r.error.is_none(), "TCP from {}: {r:?}", r.sport);
        out.push(("tcp".into(), r.sport, r.backend.unwrap()));
    }
    out
}

fn two_instances(mode: Mode) {
    lab::require_root();
    let _serial = maglev::serial();
    let spec = LabSpec::new(mode, NF_MAGLEV).lbs(2);
    let mut lab = MaglevLab::build(&spec).unwrap();
    let (mut c0, mut c1) = (lab.config(0), lab.config(1));
    if mode == Mode::Gre {
        // GRE packets carry each instance's own address as outer source: the only difference.
        assert_ne!(c0["maglev"]["local_addrs"], c1["maglev"]["local_addrs"]);
        c0["maglev"]["local_addrs"].take();
        c1["maglev"]["local_addrs"].take();
    }
    assert_eq!(c0, c1, "the instances must run the same configuration");
    lab.start_lb(0, &[]).unwrap();
    lab.start_lb(1, &[]).unwrap();

    lab.route_client_via(0).unwrap();
    let rx1_before = lab.lb(1).ns().if_stats("lb0").unwrap().get("rx_packets");
    let first = flows(&lab);
    let rx1_idle = lab.lb(1).ns().if_stats("lb0").unwrap().get("rx_packets");

    lab.route_client_via(1).unwrap();
    let second = flows(&lab);
    let rx1_after = lab.lb(1).ns().if_stats("lb0").unwrap().get("rx_packets");

    // The second pass really went through the second instance, the first pass did not.
    assert!(
        rx1_idle - rx1_before < 50,
        "the first pass reached instance 2 ({} frames)",
        rx1_idle - rx1_before
    );
    assert!(
        rx1_after - rx1_idle >= first.len() as u64,
        "instance 2 saw only {} frames",
        rx1_after - rx1_idle
    );

    assert_eq!(first.len(), second.len());
    let mut differ = Vec::new();
    for (a, b) in first.iter().zip(&second) {
        assert_eq!((&a.0, a.1), (&b.0, b.1), "flows out of order");
        if a.2 != b.2 {
            differ.push(format!("{} port {}: {} then {}", a.0, a.1, a.2, b.2));
        }
    }
    assert!(
        differ.is_empty(),
        "{} of {} flows changed backend: {:?}",
        differ.len(),
        first.len(),
        &differ[..differ.len().min(10)]
    );
    let used: BTreeSet<&String> = first.iter().map(|f| &f.2).collect();
    assert_eq!(
        used.len(),
        spec.backends.len(),
        "flows reached only {used:?}"
    );
    eprintln!(
        "{mode}: {} flows, same backend through both instances",
        first.len()
    );

    lab.stop_lb(1).unwrap();
    lab.stop_lb(0).unwrap();
}

#[test]
#[ignore = "needs root"]
fn two_instances_agree_gre() {
    two_instances(Mode::Gre);
}

#[test]
#[ignore = "needs root"]
fn two_instances_agree_l2dsr() {
    two_instances(Mode::L2dsr);
}
