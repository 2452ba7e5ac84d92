//! The bench end to end, kept short: one tiny window of the C reference, and skipping of
//! forwarders that are not built.

mod common;

use lab::require_root;
use std::path::Path;
use std::time::Duration;

use lab::bench::{self, BenchOpts};
use lab::forwarder;

fn quick(only: &[&str]) -> BenchOpts {
    BenchOpts {
        queues: vec![1],
        runs: 1,
        seconds: 0.5,
        warmup: 0.2,
        idle_threshold: 0.0,
        idle_max_wait: Duration::ZERO,
        only: only.iter().map(|s| s.to_string()).collect(),
        ..BenchOpts::default()
    }
}

#[test]
fn absent_binaries_are_skipped_with_a_reason() {
    let fws = forwarder::builtin(Path::new("/nonexistent"));
    let report = bench::run(&quick(&["nf-echo mac-swap", "nf-maglev gre"]), &fws).unwrap();
    assert_eq!(report.results.len(), 2);
    for r in &report.results {
        let why = r.skipped.as_deref().unwrap_or("");
        assert!(why.contains("not built"), "{}: {why:?}", r.name);
        assert!(r.runs.is_empty());
    }
    assert!(report.table().contains("skipped"));
    assert!(bench::run(&quick(&["no-such-forwarder"]), &fws).is_err());
}

#[test]
#[ignore = "needs root"]
fn c_reference_produces_a_rate() {
    require_root();
    let fws = forwarder::builtin(Path::new("/nonexistent"));
    let report = bench::run(&quick(&["c-l2fwd"]), &fws).unwrap();
    let r = &report.results[0];
    assert_eq!(r.runs.len(), 1);
    assert_eq!(r.runs[0].error, None, "{:?}", r.runs[0]);
    assert!(r.median().unwrap() > 0.0, "{:?}", r.runs[0]);
    assert_eq!(report.ratio(r), Some(1.0));
}

#[test]
#[ignore = "needs root"]
fn xdp_tx_hairpins_return_frames_and_detach() {
    require_root();
    // `lab xdp-hairpin` is found next to the test's own `lab` binary.
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_lab")).parent().unwrap();
    let fws = forwarder::builtin(bin_dir);
    let names = [forwarder::XDP_TX_HAIRPIN, forwarder::XDP_TX_GRE_HAIRPIN];
    let report = bench::run(&quick(&names), &fws).unwrap();
    assert_eq!(report.results.len(), 2);
    for r in &report.results {
        assert_eq!(r.skipped, None);
        // An XDP program left on the interface would be an error of the run.
        assert_eq!(r.runs[0].error, None, "{}: {:?}", r.name, r.runs[0]);
        assert!(r.median().unwrap() > 0.0, "{}: {:?}", r.name, r.runs[0]);
    }
}

#[test]
#[ignore = "needs root"]
fn an_interrupted_bench_leaves_nothing_behind() {
    require_root();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lab"))
        .args([
            "bench",
            "--queues",
            "1",
            "--runs",
            "1",
            "--seconds",
            "30",
            "--idle-threshold",
            "0",
            "--only",
            "c-l2fwd",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let prefix = format!("{}{}_", lab::names::PREFIX, child.id());
    let ours = || -> Vec<String> {
        lab::netns::list()
            .unwrap()
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .collect()
    };
    // Interrupt once the lab stands and traffic runs.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while ours().len() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(ours().len(), 2, "the bench built its two namespaces");
    std::thread::sleep(Duration::from_secs(2));
    assert!(lab::cmd::run_argv(&["kill", "-s", "INT", &child.id().to_string()]).is_ok());
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("the lab is removed"), "{err}");
    assert_eq!(ours(), Vec::<String>::new(), "namespaces left behind");
    let links = lab::cmd::run_argv(&["ip", "-br", "link"]).unwrap_or_default();
    assert!(!links.contains(&prefix), "links left behind: {links}");
}
