//! The generator sends what it reports, and the peer sees it (per REFERENCE D: the receiver
//! needs an XDP program or GRO on).

mod common;

use lab::require_root;
use std::path::Path;
use std::time::Duration;

use lab::{tools, wait_for, GenLimit, Lab};

const N: u64 = 20_000;

#[test]
#[ignore = "needs root"]
fn peer_with_xdp_program_sees_every_frame() {
    require_root();
    let lab = Lab::new(1).unwrap();
    lab.dut_if()
        .attach_xdp(Path::new(tools::XDP_DROP_OBJ), "xdp")
        .unwrap();
    let before = lab.dut_if().stats().unwrap();
    let report = lab
        .gen_spec_v4(GenLimit::Packets(N))
        .run(&lab.generator)
        .unwrap();
    assert_eq!(report.packets, N);
    let mut seen = 0;
    wait_for(Duration::from_secs(5), || {
        seen = lab
            .dut_if()
            .stats()
            .unwrap()
            .delta(&before)
            .get("rx_packets");
        seen >= N
    });
    // Stray stack traffic (router solicitations) may add a few frames, never remove any.
    assert!((N..N + 50).contains(&seen), "peer saw {seen} of {N}");
}

#[test]
#[ignore = "needs root"]
fn peer_with_gro_sees_ipv6_frames_and_flows_vary() {
    require_root();
    let lab = Lab::new(1).unwrap();
    lab.dut_if().set_gro(true).unwrap();
    let before = lab.dut_if().stats().unwrap();
    let mut spec = lab.gen_spec_v6(GenLimit::Packets(N));
    spec.flows = 16;
    spec.src_ips = 4;
    spec.size = 128;
    let report = spec.run(&lab.generator).unwrap();
    assert_eq!(report.packets, N);
    let mut seen = 0;
    wait_for(Duration::from_secs(5), || {
        seen = lab
            .dut_if()
            .stats()
            .unwrap()
            .delta(&before)
            .get("rx_packets");
        seen >= N
    });
    assert!(seen >= N, "peer saw {seen} of {N}");
}

#[test]
#[ignore = "needs root"]
fn without_xdp_or_gro_the_peer_drops_live_frames() {
    require_root();
    let lab = Lab::new(1).unwrap();
    lab.dut_if().set_gro(false).unwrap();
    let before = lab.dut_if().stats().unwrap();
    lab.gen_spec_v4(GenLimit::Packets(1000))
        .run(&lab.generator)
        .unwrap();
    let d = lab.dut_if().stats().unwrap().delta(&before);
    assert!(d.get("rx_packets") < 1000, "{d:?}");
}

#[test]
#[ignore = "needs root"]
fn two_threads_feed_two_queues() {
    require_root();
    if common::ncpus() < 2 {
        eprintln!("skipped: needs 2 CPUs");
        return;
    }
    let lab = Lab::new(2).unwrap();
    lab.dut_if()
        .attach_xdp(Path::new(tools::XDP_DROP_OBJ), "xdp")
        .unwrap();
    let before = lab.dut_if().ethtool_stats().unwrap();
    let mut spec = lab.gen_spec_v4(GenLimit::Packets(N));
    spec.cpus = vec![0, 1];
    let report = spec.run(&lab.generator).unwrap();
    assert_eq!(report.packets, N);
    assert_eq!(report.threads.iter().map(|t| t.1).sum::<u64>(), N);
    let d = lab.dut_if().ethtool_stats().unwrap().delta(&before);
    let (q0, q1) = (
        d.get("rx_queue_0_xdp_packets"),
        d.get("rx_queue_1_xdp_packets"),
    );
    // Frames sent from CPU c land on rx queue c.
    assert!(q0 >= N / 2 && q1 >= N / 2, "queue 0: {q0}, queue 1: {q1}");
}

#[test]
#[ignore = "needs root"]
fn holding_the_program_keeps_the_generator_busy() {
    // Each BPF_PROG_RUN otherwise adds and removes the program from the XDP dispatcher, two RCU
    // grace periods per call in which nothing is sent (a third of the time on a 2-CPU VM).
    require_root();
    let lab = Lab::new(1).unwrap();
    lab.dut_if()
        .attach_xdp(Path::new(tools::XDP_DROP_OBJ), "xdp")
        .unwrap();
    let held = lab
        .gen_spec_v4(GenLimit::Duration(Duration::from_secs(1)))
        .run(&lab.generator)
        .unwrap();
    let mut spec = lab.gen_spec_v4(GenLimit::Duration(Duration::from_secs(1)));
    spec.hold_dev = None;
    let unheld = spec.run(&lab.generator).unwrap();
    let busy = |r: &lab::GenReport| r.busy_seconds / r.seconds;
    eprintln!(
        "generator busy {:.0}% with the program held, {:.0}% without",
        100.0 * busy(&held),
        100.0 * busy(&unheld)
    );
    assert!(held.dispatcher_held && !unheld.dispatcher_held);
    // Compared within one run: an absolute share depends on what else the machine runs.
    assert!(
        busy(&held) > busy(&unheld),
        "holding the program did not keep the generator busier: {:.0}% held, {:.0}% not",
        100.0 * busy(&held),
        100.0 * busy(&unheld)
    );
    assert!(
        lab.hold.a().xdp_prog().unwrap().is_none(),
        "the generator left its program on the holder"
    );
}
