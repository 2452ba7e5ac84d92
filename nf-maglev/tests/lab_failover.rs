//! Backend removal and drain through the admin API, with long-lived connections open, in both forwarding
//! modes, on the Maglev lab (four backends of weight 1).
//!
//! 60 keep-alive connections are opened and held. After `DELETE` of backend b4, every connection to b1-b3
//! still gets its answers from the same backend; only connections to b4 may break (and none of them is
//! answered by another backend). After `POST .../drain` of b3, the connections to b1-b3 still work, b3's
//! included (a drained backend keeps its connections), while new connections go to b1 and b2 only, evenly.
//! Needs root; skipped otherwise.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use lab::maglev::{self, BackendSpec, LabSpec, MaglevLab, Mode, Spread, VIP4};

const NF_MAGLEV: &str = env!("CARGO_BIN_EXE_nf-maglev");
const HELD: u32 = 60;
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

fn failover(mode: Mode) {
    lab::require_root();
    let _serial = maglev::serial();
    let spec = LabSpec::new(mode, NF_MAGLEV).weights(&[1, 1, 1, 1]);
    let mut lab = MaglevLab::build(&spec).unwrap();
    lab.start_lb(0, &[]).unwrap();
    let vip = IpAddr::V4(VIP4);

    let mut hold = lab.hold(vip, HELD, 3).unwrap();
    let step0 = hold.step(0, STEP_TIMEOUT).unwrap();
    assert_eq!(step0.len(), HELD as usize);
    let mut first: BTreeMap<u16, String> = BTreeMap::new();
    for r in &step0 {
        assert!(
            r.error.is_none(),
            "held connection before any change: {r:?}"
        );
        first.insert(r.sport, r.backend.clone().unwrap());
    }
    let per_backend = Spread::of(&step0);
    eprintln!("{mode}: {HELD} held connections\n{per_backend}");
    for b in &spec.backends {
        assert!(
            per_backend.counts.contains_key(&b.name),
            "no held connection to {}: {per_backend}",
            b.name
        );
    }

    // Remove b4.
    lab.admin_ok(0, "DELETE", "/api/vips/web4/backends/b4", None)
        .unwrap();
    let step1 = hold.step(1, STEP_TIMEOUT).unwrap();
    let mut b4_broken = 0;
    for r in &step1 {
        let was = &first[&r.sport];
        match (&r.backend, &r.error) {
            (Some(now), None) => assert_eq!(now, was, "connection {} moved", r.sport),
            (_, Some(e)) => {
                assert_eq!(
                    was, "b4",
                    "connection {} to {was} broke when b4 was removed: {e}",
                    r.sport
                );
                b4_broken += 1;
            }
            (None, None) => panic!("result without backend or error: {r:?}"),
        }
    }
    eprintln!(
        "{mode}: after removing b4, {b4_broken} of {} connections to b4 broke, all others kept their backend",
        per_backend.counts["b4"]
    );

    // Drain b3.
    lab.admin_ok(0, "POST", "/api/vips/web4/backends/b3/drain", None)
        .unwrap();
    let step2 = hold.step(2, STEP_TIMEOUT).unwrap();
    for r in &step2 {
        let was = &first[&r.sport];
        if was == "b4" {
            continue;
        }
        assert!(
            r.error.is_none(),
            "connection {} to {was} broke after draining b3: {r:?}",
            r.sport
        );
        assert_eq!(
            r.backend.as_ref(),
            Some(was),
            "connection {} moved",
            r.sport
        );
    }

    // New connections avoid the drained and the removed backend, and split evenly over the rest.
    let fresh = Spread::of(&lab.tcp_conns(vip, 400, 32, None).unwrap());
    eprintln!("{mode}: 400 new connections after drain and removal\n{fresh}");
    assert_eq!(fresh.failed, 0, "{fresh}");
    let rest: Vec<BackendSpec> = spec.backends[..2].to_vec();
    fresh.check_weights(&rest, 5.0).unwrap();

    let state: serde_json::Value =
        serde_json::from_str(&lab.admin_ok(0, "GET", "/api/state", None).unwrap()).unwrap();
    let web4 = state["vips"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "web4")
        .unwrap();
    let backends = web4["backends"].as_array().unwrap();
    assert!(backends.iter().all(|b| b["name"] != "b4"), "{web4}");
    let b3 = backends.iter().find(|b| b["name"] == "b3").unwrap();
    assert_eq!(b3["weight"], 0, "{b3}");
    assert_eq!(b3["state"], "draining", "{b3}");

    assert!(lab.backends_running());
    lab.stop_lb(0).unwrap();
}

#[test]
#[ignore = "needs root"]
fn removal_and_drain_gre() {
    failover(Mode::Gre);
}

#[test]
#[ignore = "needs root"]
fn removal_and_drain_l2dsr() {
    failover(Mode::L2dsr);
}
