//! Lab harness: network namespaces, veth pairs, processes and traffic for tests and benchmarks.
//!
//! Everything the harness creates lives inside network namespaces it made itself, carries a unique
//! name (prefix [`names::PREFIX`], the process id and a counter) and is removed by `Drop`, so a
//! failing or panicking test leaves nothing behind; `lab cleanup --prefix` removes what a killed
//! process could not. Traffic comes from `xdpgen` (BPF_PROG_RUN with live frames, a C program built
//! by `build.rs`), the reference forwarder is `l2fwd` (C on libxdp), and network functions under
//! test are plugged in as command templates ([`forwarder::Forwarder`]). The crate shells out to
//! `ip`, `ethtool` and `kill` instead of calling the kernel directly: it forbids `unsafe`, and the
//! exact commands it runs are what an operator would type to reproduce a result.
//!
//! Tests that need root are `#[ignore = "needs root"]` and start with [`require_root`], the one root
//! check of the workspace: a plain `cargo test` as another user lists them as ignored, and
//! `--include-ignored` without root fails them with [`NEEDS_ROOT`] rather than passing them unseen.
#![forbid(unsafe_code)]

pub mod addr;
pub mod bench;
pub mod capture;
pub mod cleanup;
pub mod cmd;
pub mod config;
pub mod counters;
pub mod dp_standin;
pub mod forwarder;
pub mod generator;
pub mod lab;
pub mod maglev;
pub mod names;
pub mod netns;
pub mod process;
pub mod routed;
pub mod tools;
pub mod veth;
pub mod wait;

pub use addr::Mac;
pub use capture::{send_frames, Capture};
pub use counters::{Counters, XdpProg};
pub use forwarder::{Forwarder, FwdCtx, Measure, Ready};
pub use generator::{GenLimit, GenReport, GenSpec};
pub use lab::Lab;
pub use netns::Netns;
pub use process::{raise_open_files, Proc, Signal};
pub use veth::{VethEnd, VethPair};
pub use wait::{wait_for, wait_idle, IdleOutcome};

/// True when the effective uid is 0 (read from /proc/self/status): the labs need root for network
/// namespaces, veth pairs and XDP programs. This is the one root check of the workspace.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Message of [`require_root`]'s panic.
pub const NEEDS_ROOT: &str =
    "needs root (network namespaces, veth pairs, XDP): run the ignored tests as root, \
     e.g. `sudo scripts/test.sh` or `cargo test -- --include-ignored` as root";

/// First line of every test that needs root; such a test is also marked `#[ignore = "needs root"]`.
///
/// A plain `cargo test` as any user then lists it as ignored instead of passing it unseen, and
/// `scripts/test.sh` (root, `--include-ignored`) runs it. Asked to run it anyway without root
/// (`--include-ignored` or `--ignored` as another user), the test fails here with [`NEEDS_ROOT`]
/// rather than returning early and showing as passed: a test that did not run never reports success.
#[track_caller]
pub fn require_root() {
    assert!(is_root(), "{NEEDS_ROOT}");
}
