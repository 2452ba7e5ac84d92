//! End-to-end lab for the Maglev load balancer: one L2 segment, a client, load balancers, real backends.
//!
//! ```text
//!                         netns sw: bridge br0 (no STP, no netfilter, static FDB)
//!        +-----------------+-------------------+-----------------+-----------------+
//!     p-c (1400)       p-lb0 (1500)        p-lb1 (1500)      p-b0 (1500)  ...  p-bN
//!        |                 |                   |                 |
//!   netns client      netns lb0 (2 queues)  netns lb1        netns b0 ... bN
//!   c0 198.18.0.1     lb0 198.18.0.2        lb0 198.18.0.3   eth0 198.18.0.11+i
//!      2001:2:0:1::1      2001:2:0:1::2         2001:2:0:1::3     2001:2:0:1::11+i
//!   routes VIPs via   nf-maglev, XDP filter                  lo: VIPs, arp_ignore=1, arp_announce=2
//!   the active LB     claims VIP traffic only                HTTP :80, UDP :9000 (lab/py/backend.py)
//!                                                             gre: `nf-maglev decap --dev eth0`
//! ```
//! VIPs: 198.18.100.1/32 and 2001:2::100/128 (TCP port [`HTTP_PORT`], UDP port [`UDP_PORT`]). The client
//! sends to the VIP through the active load balancer's address; the load balancer forwards to a backend
//! (GRE encapsulation, or L2 direct server return: MAC rewrite only), and the backend answers the client
//! directly from the VIP (DSR). The XDP filter claims only VIP traffic (`claim_all: false`), so ARP and
//! neighbour discovery for the load balancer's own addresses reach its kernel, as on a real host.
//!
//! MTU: the client's link is 1400 bytes, every other link 1500. GRE adds 24 bytes (IPv4 outer header +
//! GRE) or 44 (IPv6), so a full-size client packet still fits towards the backends once encapsulated, and
//! the load balancer never has to answer "fragmentation needed". The client sends with transmit checksum
//! offload off, so frames the load balancer takes through AF_XDP carry complete checksums: a veth hands
//! partially-checksummed packets (CHECKSUM_PARTIAL) on as they are, AF_XDP copies them without finishing
//! the checksum, and the backends then drop every forwarded segment (measured: with offload on, no
//! connection gets through). nf-maglev transmits through AF_XDP
//! in copy mode, which takes the kernel's skb path, so the bridge-side veth accepts its frames without an
//! XDP program or GRO of its own (frames sent by XDP_TX or redirect would need one).
//!
//! The bridge never drops or floods lab frames: STP off, forwarding delay 0, multicast snooping off (NDP
//! reaches everybody), bridge netfilter hooks off (the kernel here has br_netfilter built in, and it would
//! validate and drop the malformed frames the robustness test sends), and one static FDB entry per host MAC.
//!
//! Every namespace comes from [`Netns`](crate::netns::Netns): the names above are roles, the real names are unique
//! (`lab<pid>_<n>sw`, `..c`, `..lb`, `..b`), so labs of concurrent processes never meet. The links inside
//! have the fixed, readable names shown, since each namespace is a name space of its own. Processes are
//! [`Proc`]es. `Drop` asks every process to stop at once, then reaps them, then
//! deletes the namespaces (which removes links and XDP programs) and the working directory
//! (configuration files, the Python programs).
//!
//! The parts: [`topology`] builds the lab and owns it ([`MaglevLab`], [`LabSpec`], [`Host`]); [`lb`] runs
//! nf-maglev on the load balancers and writes their configurations; [`admin`] talks to nf-maglev's admin
//! API; [`traffic`] drives the Python client, reads the backends' logs and holds the result types;
//! [`stats`] judges how connections spread; [`prom`] parses `/metrics`; [`demo`](mod@demo) is `lab demo`;
//! [`faults`] makes a backend fail in one of several ways and undoes it; [`health`] reads and waits on
//! what a load balancer says about its backends' health; [`health_bench`](mod@health_bench) is
//! `lab health-bench`; [`serial`] is the lock that runs one lab at a time per test binary.

pub mod admin;
pub mod demo;
pub mod faults;
pub mod health;
pub mod health_bench;
pub mod lb;
pub mod prom;
pub mod stats;
pub mod topology;
pub mod traffic;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{ensure, Context, Result};

use crate::process::Proc;

pub use admin::Admin;
pub use demo::{demo, DemoOpts, DemoReport};
pub use faults::Fault;
pub use health_bench::{health_bench, HealthBenchOpts, HealthBenchReport};
pub use lb::data_path;
pub use prom::{Metrics, Sample};
pub use stats::{binomial_tolerance, Spread};
pub use topology::{BackendSpec, Host, LabSpec, MaglevLab, Mode};
pub use traffic::{
    ConnResult, ConnStream, Hold, KeepaliveResult, StreamSummary, TimedConn, Traffic, UdpResult,
};

/// IPv4 VIP (on `lo` of every backend).
pub const VIP4: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 1);
/// IPv6 VIP (on `lo` of every backend).
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x100);
/// TCP port of the HTTP service behind the VIPs.
pub const HTTP_PORT: u16 = 80;
/// UDP port of the datagram service behind the VIPs.
pub const UDP_PORT: u16 = 9000;
/// MTU of the client's link.
pub const CLIENT_MTU: u32 = 1400;
/// MTU of every other link (load balancers, backends): room for the GRE headers.
pub const LINK_MTU: u32 = 1500;
/// Queues of each load balancer's interface (one nf-maglev worker each).
pub const LB_QUEUES: u32 = 2;
/// Interface name of every load balancer (inside its own namespace).
pub const LB_IF: &str = "lb0";
/// Interface name of every backend.
pub const BACKEND_IF: &str = "eth0";
/// Interface name of the client.
pub const CLIENT_IF: &str = "c0";
/// Address of nf-maglev's admin API inside a load balancer namespace.
pub const ADMIN_ADDR: &str = "127.0.0.1:9100";
/// Hash seed written into the generated configurations.
pub const HASH_SEED: u64 = 0x0005_eed0_f1ab_2016;
/// Most backends a lab holds (addresses 198.18.0.11 and up).
pub const MAX_BACKENDS: usize = 16;
/// Names of the VIPs in the generated configuration: (name, address, protocol, port).
pub const VIPS: [(&str, IpAddr, &str, u16); 4] = [
    ("web4", IpAddr::V4(VIP4), "tcp", HTTP_PORT),
    ("web6", IpAddr::V6(VIP6), "tcp", HTTP_PORT),
    ("udp4", IpAddr::V4(VIP4), "udp", UDP_PORT),
    ("udp6", IpAddr::V6(VIP6), "udp", UDP_PORT),
];

const BACKEND_PY: &str = include_str!("../../py/backend.py");
const CLIENT_PY: &str = include_str!("../../py/client.py");
const SWITCH_BRIDGE: &str = "br0";
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(30);
const ADMIN_TIMEOUT_S: &str = "10";

static SEQ: AtomicU32 = AtomicU32::new(0);
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Asks every wait of every lab in this process to give up with an error, so the labs unwind and `Drop`
/// removes them (what a SIGINT handler calls). Returns whether an interruption was already pending.
pub fn interrupt() -> bool {
    INTERRUPTED.swap(true, Ordering::SeqCst)
}

/// True once [`interrupt`] was called.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

pub(crate) fn check_interrupt() -> Result<()> {
    ensure!(!interrupted(), "interrupted");
    Ok(())
}

pub(crate) fn spawn_logged(name: &str, mut command: Command) -> Result<Proc> {
    command.env(
        "RUST_LOG",
        std::env::var("LAB_NF_LOG").unwrap_or_else(|_| "info".into()),
    );
    Proc::spawn(name, command)
}

/// Sends SIGTERM to every process of `procs` that still runs, without waiting: a lab's `Drop` asks all
/// at once, then the processes' own `Drop` reaps them (gone by then, or killed after a grace period).
pub(crate) fn ask_to_stop<'a>(procs: impl IntoIterator<Item = &'a mut Proc>) {
    for p in procs {
        if p.is_running() {
            if let Err(e) = p.signal(crate::process::Signal::Term) {
                log::debug!("{e:#}");
            }
        }
    }
}

/// Kills `p` with SIGKILL (as a crash or an OOM kill would) and reaps it; `what` names it in errors.
pub(crate) fn kill_and_reap(p: &mut Proc, what: &str) -> Result<()> {
    p.signal(crate::process::Signal::Kill)?;
    p.wait_timeout(Duration::from_secs(5))?
        .with_context(|| format!("{what} survived SIGKILL"))?;
    Ok(())
}

/// Last `n` lines of a text, for error messages.
pub(crate) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Holds a process-wide lock while alive: tests of one binary that each build a lab take it, so their
/// labs run one after another instead of competing for the machine's few CPUs.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
