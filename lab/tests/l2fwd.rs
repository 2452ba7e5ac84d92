//! The C reference forwarder on a lab: it forwards generator traffic back, counts what it
//! consumed in drop mode, and leaves no XDP program behind after SIGINT.

mod common;

use lab::require_root;
use std::path::Path;
use std::time::Duration;

use lab::forwarder::{self, C_L2FWD, C_L2FWD_DROP};
use lab::{wait_for, FwdCtx, GenLimit, Lab, Signal};

fn totals(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("l2fwd totals {stdout:?}: {e}"))
}

fn run_l2fwd(name: &str, queues: u32, gen_cpus: Vec<usize>) -> (u64, serde_json::Value) {
    let lab = Lab::new(queues).unwrap();
    lab.sink_returns().unwrap();
    let fwd = forwarder::builtin(Path::new("/nonexistent"))
        .into_iter()
        .find(|f| f.name == name)
        .unwrap();
    let n = common::ncpus();
    let ctx = FwdCtx {
        ifname: lab.dut_if().name().to_string(),
        queues,
        cpus: (0..queues as usize)
            .map(|q| (queues as usize + q) % n)
            .collect(),
    };
    let mut run = fwd.start(&lab.dut, &ctx).unwrap();
    fwd.wait_ready(&mut run, lab.dut_if(), Duration::from_secs(10))
        .unwrap();
    assert_eq!(
        lab.dut_if().xdp_prog().unwrap().map(|p| p.name),
        Some("xsk_redirect".to_string())
    );

    let before = lab.gen_if().stats().unwrap();
    let mut spec = lab.gen_spec_v4(GenLimit::Packets(200_000));
    spec.cpus = gen_cpus;
    spec.flows = 16;
    spec.run(&lab.generator).unwrap();

    run.proc.signal(Signal::Int).unwrap();
    let st = run
        .proc
        .wait_timeout(Duration::from_secs(5))
        .unwrap()
        .expect("l2fwd stops on SIGINT");
    assert!(st.success(), "l2fwd exit {st}: {}", run.proc.stderr());
    assert_eq!(
        lab.dut_if().xdp_prog().unwrap(),
        None,
        "l2fwd left its XDP program attached"
    );
    let t = totals(&run.proc.stdout());
    // Everything l2fwd transmitted is on its way to the generator end: wait for it to land.
    let sent = t["tx"].as_u64().unwrap();
    let mut returned = 0;
    wait_for(Duration::from_secs(5), || {
        returned = lab
            .gen_if()
            .stats()
            .unwrap()
            .delta(&before)
            .get("rx_packets");
        returned >= sent
    });
    (returned, t)
}

#[test]
#[ignore = "needs root"]
fn c_l2fwd_forwards_generator_traffic_back() {
    require_root();
    let (returned, t) = run_l2fwd(C_L2FWD, 1, vec![0]);
    assert!(returned > 0, "nothing came back: {t}");
    assert!(t["tx"].as_u64().unwrap() > 0, "{t}");
    assert!(
        t["rx"].as_u64().unwrap() >= t["tx"].as_u64().unwrap(),
        "{t}"
    );
    // Every frame l2fwd sent reached the generator end (plus stray stack frames).
    assert!(
        returned >= t["tx"].as_u64().unwrap(),
        "returned {returned}, {t}"
    );
}

#[test]
#[ignore = "needs root"]
fn c_l2fwd_drop_consumes_without_sending() {
    require_root();
    let (_, t) = run_l2fwd(C_L2FWD_DROP, 1, vec![0]);
    assert!(t["rx"].as_u64().unwrap() > 0, "{t}");
    assert_eq!(t["tx"].as_u64(), Some(0), "{t}");
}

#[test]
#[ignore = "needs root"]
fn c_l2fwd_serves_two_queues() {
    require_root();
    if common::ncpus() < 2 {
        eprintln!("skipped: needs 2 CPUs");
        return;
    }
    let (returned, t) = run_l2fwd(C_L2FWD, 2, vec![0, 1]);
    assert!(returned > 0, "{t}");
    let queues = t["queues"].as_array().unwrap();
    assert_eq!(queues.len(), 2);
    for q in queues {
        assert!(q["rx"].as_u64().unwrap() > 0, "queue idle: {t}");
    }
}
