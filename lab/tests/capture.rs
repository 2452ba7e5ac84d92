//! Hand-made frames go out as given and captures return them byte for byte; through the C
//! forwarder they come back with the Ethernet addresses swapped.

mod common;

use lab::require_root;
use std::path::Path;
use std::time::Duration;

use lab::forwarder::{self, C_L2FWD};
use lab::lab::{DUT_MAC, GEN_MAC};
use lab::{FwdCtx, Lab, Mac};

/// An Ethernet frame of the local-experimental EtherType 0x88b5 with a numbered payload.
fn frame(dst: Mac, src: Mac, n: u8) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend(dst.0);
    f.extend(src.0);
    f.extend([0x88, 0xb5]);
    f.extend(std::iter::repeat_n(n, 50));
    f
}

#[test]
#[ignore = "needs root"]
fn frames_arrive_as_sent() {
    require_root();
    let lab = Lab::new(1).unwrap();
    let cap = lab.dut_if().capture(3, Some("ether proto 0x88b5")).unwrap();
    let sent: Vec<Vec<u8>> = (1..=3).map(|n| frame(DUT_MAC, GEN_MAC, n)).collect();
    lab.gen_if().send_frames(&sent).unwrap();
    let got = cap.finish(Duration::from_secs(5)).unwrap();
    assert_eq!(got, sent);
}

#[test]
#[ignore = "needs root"]
fn l2fwd_swaps_mac_addresses() {
    require_root();
    let lab = Lab::new(1).unwrap();
    let fwd = forwarder::builtin(Path::new("/nonexistent"))
        .into_iter()
        .find(|f| f.name == C_L2FWD)
        .unwrap();
    let ctx = FwdCtx {
        ifname: lab.dut_if().name().to_string(),
        queues: 1,
        cpus: vec![common::ncpus() - 1],
    };
    let mut run = fwd.start(&lab.dut, &ctx).unwrap();
    fwd.wait_ready(&mut run, lab.dut_if(), Duration::from_secs(10))
        .unwrap();

    let cap = lab.gen_if().capture(2, Some("ether proto 0x88b5")).unwrap();
    let sent: Vec<Vec<u8>> = (7..=8).map(|n| frame(DUT_MAC, GEN_MAC, n)).collect();
    lab.gen_if().send_frames(&sent).unwrap();
    let got = cap.finish(Duration::from_secs(5)).unwrap();
    let want: Vec<Vec<u8>> = (7..=8).map(|n| frame(GEN_MAC, DUT_MAC, n)).collect();
    assert_eq!(got, want, "l2fwd stderr: {}", run.proc.stderr());
}
