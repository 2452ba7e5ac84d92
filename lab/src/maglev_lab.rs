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
//! Every namespace comes from [`Netns`]: the names above are roles, the real names are unique
//! (`lab<pid>_<n>sw`, `..c`, `..lb`, `..b`), so labs of concurrent processes never meet. The links inside
//! have the fixed, readable names shown, since each namespace is a name space of its own. Processes are [`Proc`]s. `Drop` asks every process to
//! stop at once, then reaps them, then deletes the namespaces (which removes links and XDP programs) and
//! the working directory (configuration files, the Python programs).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};

use crate::addr::Mac;
use crate::capture;
use crate::cmd;
use crate::netns::Netns;
use crate::process::{Proc, Signal};
use crate::wait::wait_for;

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

const BACKEND_PY: &str = include_str!("../py/backend.py");
const CLIENT_PY: &str = include_str!("../py/client.py");
const SWITCH_BRIDGE: &str = "br0";
const START_TIMEOUT: Duration = Duration::from_secs(30);
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

fn check_interrupt() -> Result<()> {
    ensure!(!interrupted(), "interrupted");
    Ok(())
}

/// How the load balancer reaches the backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// GRE encapsulation; backends decapsulate with `nf-maglev decap`.
    Gre,
    /// L2 direct server return: destination MAC rewrite only.
    L2dsr,
}

impl Mode {
    /// Both modes, GRE first.
    pub const ALL: [Mode; 2] = [Mode::Gre, Mode::L2dsr];

    /// The configuration's spelling (`"gre"`, `"l2dsr"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Gre => "gre",
            Mode::L2dsr => "l2dsr",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Mode> {
        match s {
            "gre" => Ok(Mode::Gre),
            "l2dsr" => Ok(Mode::L2dsr),
            _ => bail!("mode {s:?} is neither \"gre\" nor \"l2dsr\""),
        }
    }
}

/// One backend of the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSpec {
    /// Name (configuration, answers, metrics).
    pub name: String,
    /// Weight in the generated configuration.
    pub weight: u32,
}

/// What to build.
#[derive(Debug, Clone)]
pub struct LabSpec {
    /// Forwarding mode of every VIP.
    pub mode: Mode,
    /// Backends, in order (addresses are assigned by position).
    pub backends: Vec<BackendSpec>,
    /// Number of load balancer namespaces (1 or 2).
    pub lbs: usize,
    /// The `nf-maglev` binary (load balancer, and `decap` on GRE backends).
    pub nf_maglev: PathBuf,
    /// MTU of the client's link ([`CLIENT_MTU`] unless set).
    pub client_mtu: u32,
}

impl LabSpec {
    /// One load balancer and three backends `b1`, `b2`, `b3` with weights 1, 1, 2.
    pub fn new(mode: Mode, nf_maglev: impl Into<PathBuf>) -> LabSpec {
        LabSpec {
            mode,
            backends: Vec::new(),
            lbs: 1,
            nf_maglev: nf_maglev.into(),
            client_mtu: CLIENT_MTU,
        }
        .weights(&[1, 1, 2])
    }

    /// Replaces the backends with `b1..bN` of these weights.
    pub fn weights(mut self, weights: &[u32]) -> LabSpec {
        self.backends = weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| BackendSpec {
                name: format!("b{}", i + 1),
                weight,
            })
            .collect();
        self
    }

    /// Sets the number of load balancers.
    pub fn lbs(mut self, n: usize) -> LabSpec {
        self.lbs = n;
        self
    }

    /// Sets the MTU of the client's link (at most [`LINK_MTU`]: the segment's).
    pub fn client_mtu(mut self, mtu: u32) -> LabSpec {
        self.client_mtu = mtu;
        self
    }
}

/// A host on the segment: its namespace, interface, MAC and addresses.
#[derive(Debug)]
pub struct Host {
    ns: Netns,
    ifname: &'static str,
    port: String,
    mac: Mac,
    v4: Ipv4Addr,
    v6: Ipv6Addr,
}

impl Host {
    /// The namespace.
    pub fn ns(&self) -> &Netns {
        &self.ns
    }
    /// The interface on the segment.
    pub fn ifname(&self) -> &str {
        self.ifname
    }

    /// Name of the switch-side end of its link (in the switch namespace).
    pub fn port(&self) -> &str {
        &self.port
    }
    /// Its MAC.
    pub fn mac(&self) -> Mac {
        self.mac
    }
    /// Its IPv4 address.
    pub fn v4(&self) -> Ipv4Addr {
        self.v4
    }
    /// Its IPv6 address.
    pub fn v6(&self) -> Ipv6Addr {
        self.v6
    }
    /// Its address of `family`'s family.
    pub fn addr_like(&self, family: IpAddr) -> IpAddr {
        match family {
            IpAddr::V4(_) => IpAddr::V4(self.v4),
            IpAddr::V6(_) => IpAddr::V6(self.v6),
        }
    }
}

// Field order is drop order: processes before their namespace.
#[derive(Debug)]
struct Lb {
    nf: Option<Proc>,
    host: Host,
    config: PathBuf,
}

#[derive(Debug)]
struct Backend {
    server: Proc,
    decap: Option<Proc>,
    host: Host,
    spec: BackendSpec,
}

/// The working directory of a lab (Python programs, configurations, step files); removed by `Drop`
/// unless `LAB_KEEP_LOGS` is set.
#[derive(Debug)]
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        if std::env::var_os("LAB_KEEP_LOGS").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The built lab. See the module documentation for the topology.
#[derive(Debug)]
pub struct MaglevLab {
    lbs: Vec<Lb>,
    backends: Vec<Backend>,
    client: Host,
    switch: Netns,
    dir: WorkDir,
    mode: Mode,
    nf_maglev: PathBuf,
}

fn sysctl(ns: &Netns, settings: &[&str]) -> Result<()> {
    let mut argv = vec!["sysctl", "-q", "-w"];
    argv.extend_from_slice(settings);
    ns.exec(&argv)
        .with_context(|| format!("sysctl in {}", ns.name()))?;
    Ok(())
}

/// Settings every host gets before its interface exists (`default` applies to interfaces created later).
const HOST_SYSCTLS: &[&str] = &[
    "net.ipv4.conf.all.rp_filter=0",
    "net.ipv4.conf.default.rp_filter=0",
    "net.ipv4.conf.all.send_redirects=0",
    "net.ipv4.conf.default.send_redirects=0",
    "net.ipv4.conf.all.accept_redirects=0",
    "net.ipv4.conf.default.accept_redirects=0",
    "net.ipv6.conf.all.accept_redirects=0",
    "net.ipv6.conf.default.accept_redirects=0",
    "net.ipv6.conf.all.accept_dad=0",
    "net.ipv6.conf.default.accept_dad=0",
    "net.ipv6.conf.default.accept_ra=0",
];

/// L2 DSR on the backends: answer ARP only for addresses of the receiving interface (not the VIP on
/// `lo`), and source ARP requests from the outgoing interface's address.
const BACKEND_SYSCTLS: &[&str] = &[
    "net.ipv4.conf.all.arp_ignore=1",
    "net.ipv4.conf.all.arp_announce=2",
    "net.ipv4.conf.default.arp_ignore=1",
    "net.ipv4.conf.default.arp_announce=2",
];

fn host_v4(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, n)
}

fn host_v6(n: u8) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, u16::from(n))
}

fn host_mac(n: u8) -> Mac {
    Mac([0x02, 0x1a, 0xb1, 0, 0, n])
}

/// How to build one host.
struct HostSpec<'a> {
    /// Namespace name tag.
    tag: &'a str,
    /// Interface name inside the namespace.
    ifname: &'static str,
    /// Name of the switch-side end.
    port: String,
    /// Host number: last byte of its addresses and MAC.
    n: u8,
    mtu: u32,
    queues: u32,
    sysctls: &'a [&'a str],
}

/// Builds one host: namespace, sysctls, a veth to the switch with the given MTU and queues, addresses.
fn make_host(switch: &Netns, spec: HostSpec<'_>) -> Result<Host> {
    let HostSpec {
        tag,
        ifname,
        port,
        n,
        mtu,
        queues,
        sysctls: extra_sysctls,
    } = spec;
    let ns = Netns::new(tag)?;
    sysctl(&ns, HOST_SYSCTLS)?;
    if !extra_sysctls.is_empty() {
        sysctl(&ns, extra_sysctls)?;
    }
    let q = queues.to_string();
    cmd::ip(
        None,
        &[
            "link",
            "add",
            ifname,
            "netns",
            ns.name(),
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            switch.name(),
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
        ],
    )
    .with_context(|| format!("creating veth {ifname} ({}) / {port} (switch)", ns.name()))?;
    let host = Host {
        ns,
        ifname,
        port,
        mac: host_mac(n),
        v4: host_v4(n),
        v6: host_v6(n),
    };
    let mtu = mtu.to_string();
    let mac = host.mac.to_string();
    host.ns.ip(&[
        "link", "set", "dev", ifname, "address", &mac, "mtu", &mtu, "up",
    ])?;
    host.ns
        .ip(&["addr", "add", &format!("{}/24", host.v4), "dev", ifname])?;
    host.ns.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{}/64", host.v6),
        "dev",
        ifname,
        "nodad",
    ])?;
    switch.ip(&[
        "link",
        "set",
        "dev",
        &host.port,
        "mtu",
        &mtu,
        "master",
        SWITCH_BRIDGE,
        "up",
    ])?;
    // A static entry: frames to this host never flood the segment, whatever the ageing.
    switch
        .exec(&[
            "bridge", "fdb", "replace", &mac, "dev", &host.port, "master", "static",
        ])
        .with_context(|| format!("static FDB entry for {mac}"))?;
    Ok(host)
}

fn make_switch() -> Result<Netns> {
    let sw = Netns::new("sw")?;
    // Per-namespace bridge-netfilter switches (br_netfilter is built into this kernel).
    for key in [
        "net.bridge.bridge-nf-call-iptables=0",
        "net.bridge.bridge-nf-call-ip6tables=0",
        "net.bridge.bridge-nf-call-arptables=0",
    ] {
        // Absent when the kernel has no br_netfilter: nothing to turn off then.
        if let Err(e) = sysctl(&sw, &[key]) {
            log::debug!("{e:#}");
        }
    }
    sw.ip(&[
        "link",
        "add",
        SWITCH_BRIDGE,
        "type",
        "bridge",
        "stp_state",
        "0",
        "forward_delay",
        "0",
        "ageing_time",
        "360000",
        "mcast_snooping",
        "0",
        "nf_call_iptables",
        "0",
        "nf_call_ip6tables",
        "0",
        "nf_call_arptables",
        "0",
    ])
    .context("creating the segment's bridge")?;
    sw.ip(&["link", "set", "dev", SWITCH_BRIDGE, "up"])?;
    Ok(sw)
}

fn spawn_logged(name: &str, mut command: Command) -> Result<Proc> {
    command.env(
        "RUST_LOG",
        std::env::var("LAB_NF_LOG").unwrap_or_else(|_| "info".into()),
    );
    Proc::spawn(name, command)
}

/// Last `n` lines of a text, for error messages.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl MaglevLab {
    /// Builds namespaces, the bridge, links, addresses and routes, and starts the backend servers (and,
    /// in GRE mode, `nf-maglev decap` on every backend). Load balancers are started by
    /// [`MaglevLab::start_lb`].
    pub fn build(spec: &LabSpec) -> Result<MaglevLab> {
        ensure!(
            (1..=2).contains(&spec.lbs),
            "a lab has 1 or 2 load balancers, not {}",
            spec.lbs
        );
        ensure!(
            (1..=MAX_BACKENDS).contains(&spec.backends.len()),
            "a lab has 1..={MAX_BACKENDS} backends, not {}",
            spec.backends.len()
        );
        let dir = WorkDir(std::env::temp_dir().join(format!(
            "maglev-lab-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        )));
        std::fs::create_dir_all(&dir.0).with_context(|| format!("creating {}", dir.0.display()))?;
        for (file, text) in [("backend.py", BACKEND_PY), ("client.py", CLIENT_PY)] {
            let p = dir.0.join(file);
            std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
        }

        let switch = make_switch()?;
        let client = make_host(
            &switch,
            HostSpec {
                tag: "c",
                ifname: CLIENT_IF,
                port: "p-c".into(),
                n: 1,
                mtu: spec.client_mtu,
                queues: 1,
                sysctls: &[],
            },
        )?;
        // Full checksums in every packet the client sends (see the module documentation).
        client
            .ns
            .exec(&["ethtool", "-K", CLIENT_IF, "tx", "off"])
            .context("turning off transmit checksum offload on the client")?;

        let mut lbs = Vec::new();
        for i in 0..spec.lbs {
            let n = 2 + u8::try_from(i)?;
            let host = make_host(
                &switch,
                HostSpec {
                    tag: "lb",
                    ifname: LB_IF,
                    port: format!("p-lb{i}"),
                    n,
                    mtu: LINK_MTU,
                    queues: LB_QUEUES,
                    sysctls: &[],
                },
            )?;
            lbs.push(Lb {
                nf: None,
                config: dir.0.join(format!("lb{i}.jsonc")),
                host,
            });
        }

        let mut backends = Vec::new();
        for (i, b) in spec.backends.iter().enumerate() {
            let n = 11 + u8::try_from(i)?;
            let host = make_host(
                &switch,
                HostSpec {
                    tag: "b",
                    ifname: BACKEND_IF,
                    port: format!("p-b{i}"),
                    n,
                    mtu: LINK_MTU,
                    queues: 1,
                    sysctls: BACKEND_SYSCTLS,
                },
            )?;
            sysctl(
                &host.ns,
                &[
                    &format!("net.ipv4.conf.{BACKEND_IF}.arp_ignore=1"),
                    &format!("net.ipv4.conf.{BACKEND_IF}.arp_announce=2"),
                ],
            )?;
            host.ns
                .ip(&["addr", "add", &format!("{VIP4}/32"), "dev", "lo"])?;
            host.ns.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{VIP6}/128"),
                "dev",
                "lo",
                "nodad",
            ])?;
            let script = dir.0.join("backend.py");
            let mut server = host.ns.spawn(
                &format!("backend-{}", b.name),
                &[
                    "python3".to_string(),
                    "-u".into(),
                    script.to_string_lossy().into_owned(),
                    "--name".into(),
                    b.name.clone(),
                    "--vip".into(),
                    VIP4.to_string(),
                    "--vip".into(),
                    VIP6.to_string(),
                    "--http-port".into(),
                    HTTP_PORT.to_string(),
                    "--udp-port".into(),
                    UDP_PORT.to_string(),
                ],
            )?;
            let ready = wait_for(START_TIMEOUT, || {
                server.stdout().contains("\"ev\": \"ready\"")
                    || !server.is_running()
                    || interrupted()
            });
            check_interrupt()?;
            if !ready || !server.is_running() {
                bail!(
                    "backend server {} did not start: {}",
                    b.name,
                    tail(&server.stderr(), 20)
                );
            }
            backends.push(Backend {
                server,
                decap: None,
                host,
                spec: b.clone(),
            });
        }

        let mut lab = MaglevLab {
            lbs,
            backends,
            client,
            switch,
            dir,
            mode: spec.mode,
            nf_maglev: spec.nf_maglev.clone(),
        };
        lab.route_client_via(0)?;
        if spec.mode == Mode::Gre {
            for i in 0..lab.backends.len() {
                lab.start_decap(i)?;
            }
        }
        for i in 0..lab.lbs.len() {
            let text = serde_json::to_string_pretty(&lab.config(i))?;
            lab.write_config(i, &text)?;
        }
        Ok(lab)
    }

    fn start_decap(&mut self, i: usize) -> Result<()> {
        crate::tools::require_executable(&self.nf_maglev)
            .context("GRE backends decapsulate with `nf-maglev decap`")?;
        let b = &mut self.backends[i];
        let cmd = b.host.ns.command_with_bpffs(&[
            self.nf_maglev.to_string_lossy().into_owned(),
            "decap".into(),
            "--dev".into(),
            BACKEND_IF.into(),
            "--addr".into(),
            b.host.v4.to_string(),
            "--addr".into(),
            b.host.v6.to_string(),
        ]);
        let mut p = spawn_logged(&format!("decap-{}", b.spec.name), cmd)?;
        let ns = &b.host.ns;
        let attached = wait_for(START_TIMEOUT, || {
            matches!(ns.xdp_prog(BACKEND_IF), Ok(Some(_))) || !p.is_running() || interrupted()
        });
        check_interrupt()?;
        if !attached || !p.is_running() {
            bail!(
                "`nf-maglev decap` on backend {} did not attach: {}",
                b.spec.name,
                tail(&p.stderr(), 20)
            );
        }
        b.decap = Some(p);
        Ok(())
    }

    /// The forwarding mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The client host.
    pub fn client(&self) -> &Host {
        &self.client
    }

    /// Load balancer `i`'s host.
    pub fn lb(&self, i: usize) -> &Host {
        &self.lbs[i].host
    }

    /// Backend `i`'s host.
    pub fn backend(&self, i: usize) -> &Host {
        &self.backends[i].host
    }

    /// The backends as configured (name, weight), in order.
    pub fn backend_specs(&self) -> Vec<BackendSpec> {
        self.backends.iter().map(|b| b.spec.clone()).collect()
    }

    /// The switch namespace.
    pub fn switch(&self) -> &Netns {
        &self.switch
    }

    /// The lab's working directory.
    pub fn dir(&self) -> &Path {
        &self.dir.0
    }

    /// The generated nf-maglev configuration for load balancer `i`: CNDP sections for `lb0` with
    /// [`LB_QUEUES`] queues and one worker each, and a `maglev` section with the four [`VIPS`], every
    /// backend in every VIP (by its address of the VIP's family and its MAC). In l2dsr mode the
    /// configuration does not depend on `i` at all.
    pub fn config(&self, i: usize) -> Value {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut lports = serde_json::Map::new();
        let mut threads = serde_json::Map::new();
        let mut groups = serde_json::Map::new();
        groups.insert("initial".into(), json!([0]));
        threads.insert(
            "main".into(),
            json!({"group": "initial", "description": "control plane"}),
        );
        let regions: Vec<u32> = (0..LB_QUEUES).map(|_| 8).collect();
        for q in 0..LB_QUEUES {
            let lport = format!("{LB_IF}:{q}");
            lports.insert(
                lport.clone(),
                json!({"pmd": "net_af_xdp", "qid": q, "umem": "umem0", "region": q,
                       "description": format!("queue {q}")}),
            );
            let core = usize::try_from(q).unwrap_or(0) % cpus;
            groups.insert(format!("group{q}"), json!([core]));
            threads.insert(
                format!("lb:{q}"),
                json!({"group": format!("group{q}"), "lports": [lport]}),
            );
        }
        let lb = &self.lbs[i].host;
        let vips: Vec<Value> = VIPS
            .iter()
            .map(|&(name, addr, proto, port)| {
                let backends: Vec<Value> = self
                    .backends
                    .iter()
                    .map(|b| {
                        json!({
                            "name": b.spec.name,
                            "addr": b.host.addr_like(addr).to_string(),
                            "weight": b.spec.weight,
                            "mac": b.host.mac.to_string(),
                        })
                    })
                    .collect();
                json!({"name": name, "addr": addr.to_string(), "proto": proto, "port": port,
                       "mode": self.mode.as_str(), "backends": backends})
            })
            .collect();
        let mut maglev = json!({
            "table_size": 65537,
            "hash_seed": HASH_SEED,
            "conntrack": {"size": 65536},
            "mtu": LINK_MTU,
            "claim_all": false,
            "vips": vips,
        });
        if self.mode == Mode::Gre {
            maglev["local_addrs"] = json!([lb.v4.to_string(), lb.v6.to_string()]);
        }
        json!({
            "application": {"name": "nf-maglev", "description": "Maglev lab load balancer"},
            "defaults": {"bufcnt": 16, "bufsz": 2, "rxdesc": 0, "txdesc": 0, "cache": 256, "mtype": "4KB"},
            "umems": {"umem0": {"bufcnt": 8 * LB_QUEUES, "bufsz": 2, "mtype": "4KB", "regions": regions,
                                "rxdesc": 0, "txdesc": 0}},
            "lports": lports,
            "lcore-groups": groups,
            "options": {"pkt_api": "xskdev"},
            "threads": threads,
            "maglev": maglev,
        })
    }

    /// Path of load balancer `i`'s configuration file.
    pub fn config_path(&self, i: usize) -> &Path {
        &self.lbs[i].config
    }

    /// Replaces load balancer `i`'s configuration file (for reload tests).
    pub fn write_config(&self, i: usize, text: &str) -> Result<()> {
        let p = &self.lbs[i].config;
        std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))
    }

    /// Starts nf-maglev on load balancer `i` with its configuration file, the admin API on
    /// [`ADMIN_ADDR`] and `extra` arguments; returns once the admin API answers and the XDP program is
    /// attached.
    pub fn start_lb(&mut self, i: usize, extra: &[&str]) -> Result<()> {
        if let Some(p) = self.lbs[i].nf.as_mut() {
            if p.is_running() {
                bail!("nf-maglev already runs on load balancer {i}");
            }
        }
        crate::tools::require_executable(&self.nf_maglev)
            .context("the load balancer is nf-maglev")?;
        let lb = &self.lbs[i];
        let mut argv = vec![
            self.nf_maglev.to_string_lossy().into_owned(),
            "-c".into(),
            lb.config.to_string_lossy().into_owned(),
            "--listen".into(),
            ADMIN_ADDR.into(),
        ];
        argv.extend(extra.iter().map(|s| s.to_string()));
        let cmd = lb.host.ns.command_with_bpffs(&argv);
        let proc = spawn_logged(&format!("nf-maglev-lb{i}"), cmd)?;
        self.lbs[i].nf = Some(proc);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let running = self.lbs[i].nf.as_mut().is_some_and(Proc::is_running);
            if !running {
                bail!(
                    "nf-maglev on load balancer {i} exited during start-up:\n{}",
                    tail(&self.lb_log(i), 30)
                );
            }
            let attached = matches!(self.lbs[i].host.ns.xdp_prog(LB_IF), Ok(Some(_)));
            if attached && matches!(self.admin(i, "GET", "/api/state", None), Ok((200, _))) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "nf-maglev on load balancer {i} not ready after {START_TIMEOUT:?} (XDP attached: \
                     {attached}):\n{}",
                    tail(&self.lb_log(i), 30)
                );
            }
            check_interrupt()?;
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops nf-maglev on load balancer `i` (SIGINT, then harder); errors when it does not exit
    /// cleanly or leaves its XDP program attached.
    pub fn stop_lb(&mut self, i: usize) -> Result<()> {
        let Some(mut p) = self.lbs[i].nf.take() else {
            return Ok(());
        };
        let st = p.stop(Duration::from_secs(5))?;
        let log = p.stderr();
        ensure!(
            st.success(),
            "nf-maglev on load balancer {i} exited with {st}:\n{}",
            tail(&log, 30)
        );
        ensure!(
            self.lbs[i].host.ns.xdp_prog(LB_IF)?.is_none(),
            "nf-maglev on load balancer {i} left its XDP program attached"
        );
        Ok(())
    }

    /// Kills nf-maglev on load balancer `i` with SIGKILL (as a crash or an OOM kill would) and reaps
    /// it; nothing of its own clean-up runs.
    pub fn kill_lb(&mut self, i: usize) -> Result<()> {
        let Some(mut p) = self.lbs[i].nf.take() else {
            bail!("nf-maglev does not run on load balancer {i}");
        };
        p.signal(Signal::Kill)?;
        p.wait_timeout(Duration::from_secs(5))?
            .with_context(|| format!("nf-maglev on load balancer {i} survived SIGKILL"))?;
        Ok(())
    }

    /// True while nf-maglev runs on load balancer `i`.
    pub fn lb_running(&mut self, i: usize) -> bool {
        self.lbs[i].nf.as_mut().is_some_and(Proc::is_running)
    }

    /// The PID of nf-maglev on load balancer `i`, while it runs.
    pub fn lb_pid(&mut self, i: usize) -> Option<u32> {
        let p = self.lbs[i].nf.as_mut()?;
        p.is_running().then(|| p.pid())
    }

    /// Sends SIGHUP (reload) to nf-maglev on load balancer `i`, by its PID.
    pub fn sighup_lb(&mut self, i: usize) -> Result<()> {
        let pid = self
            .lb_pid(i)
            .with_context(|| format!("nf-maglev does not run on load balancer {i}"))?;
        cmd::run_argv(&["kill", "-s", "HUP", &pid.to_string()])?;
        Ok(())
    }

    /// stderr of nf-maglev on load balancer `i` (its log).
    pub fn lb_log(&self, i: usize) -> String {
        self.lbs[i]
            .nf
            .as_ref()
            .map(Proc::stderr)
            .unwrap_or_default()
    }

    /// Routes the client's VIP traffic through load balancer `i`.
    pub fn route_client_via(&self, i: usize) -> Result<()> {
        let lb = &self.lbs[i].host;
        let ns = &self.client.ns;
        ns.ip(&[
            "route",
            "replace",
            &format!("{VIP4}/32"),
            "via",
            &lb.v4.to_string(),
            "dev",
            CLIENT_IF,
        ])?;
        ns.ip(&[
            "-6",
            "route",
            "replace",
            &format!("{VIP6}/128"),
            "via",
            &lb.v6.to_string(),
            "dev",
            CLIENT_IF,
        ])?;
        Ok(())
    }

    /// Without nf-maglev: lets load balancer `i`'s kernel route the VIPs to backend `b` (plain IP
    /// forwarding), which checks the topology, the servers and the DSR return path on their own.
    pub fn route_plain(&self, i: usize, b: usize) -> Result<()> {
        let lb = &self.lbs[i].host;
        let be = &self.backends[b].host;
        sysctl(
            &lb.ns,
            &[
                "net.ipv4.ip_forward=1",
                "net.ipv6.conf.all.forwarding=1",
                &format!("net.ipv4.conf.{LB_IF}.send_redirects=0"),
            ],
        )?;
        lb.ns.ip(&[
            "route",
            "replace",
            &format!("{VIP4}/32"),
            "via",
            &be.v4.to_string(),
            "dev",
            LB_IF,
        ])?;
        lb.ns.ip(&[
            "-6",
            "route",
            "replace",
            &format!("{VIP6}/128"),
            "via",
            &be.v6.to_string(),
            "dev",
            LB_IF,
        ])?;
        Ok(())
    }

    /// An admin API request to load balancer `i` (curl inside its namespace): (HTTP status, body).
    pub fn admin(
        &self,
        i: usize,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, String)> {
        let url = format!("http://{ADMIN_ADDR}{path}");
        let mut argv = vec![
            "curl",
            "-sS",
            "-m",
            ADMIN_TIMEOUT_S,
            "-X",
            method,
            "-w",
            "\n%{http_code}",
        ];
        if let Some(b) = body {
            argv.extend(["-H", "Content-Type: application/json", "--data-binary", b]);
        }
        argv.push(&url);
        let out = self.lbs[i]
            .host
            .ns
            .exec(&argv)
            .with_context(|| format!("{method} {path} on load balancer {i}"))?;
        let (text, code) = out.rsplit_once('\n').unwrap_or(("", out.as_str()));
        let code = code
            .trim()
            .parse()
            .with_context(|| format!("{method} {path}: no HTTP status in curl's output {out:?}"))?;
        Ok((code, text.to_string()))
    }

    /// Like [`MaglevLab::admin`], erroring unless the status is 2xx.
    pub fn admin_ok(
        &self,
        i: usize,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<String> {
        let (code, text) = self.admin(i, method, path, body)?;
        ensure!(
            (200..300).contains(&code),
            "{method} {path} on load balancer {i}: HTTP {code}: {}",
            text.trim()
        );
        Ok(text)
    }

    /// Load balancer `i`'s `/metrics`, parsed.
    pub fn metrics(&self, i: usize) -> Result<Metrics> {
        Ok(Metrics::parse(&self.admin_ok(i, "GET", "/metrics", None)?))
    }

    fn run_client(&self, name: &str, args: &[String], bound: Duration) -> Result<String> {
        let script = self.dir.0.join("client.py");
        let mut argv = vec![
            "python3".to_string(),
            "-u".into(),
            script.to_string_lossy().into_owned(),
        ];
        argv.extend_from_slice(args);
        let mut p = self.client.ns.spawn(name, &argv)?;
        let deadline = Instant::now() + bound;
        let st = loop {
            if let Some(st) = p.wait_timeout(Duration::from_millis(100))? {
                break st;
            }
            if interrupted() || Instant::now() >= deadline {
                p.stop(Duration::from_millis(500))?;
                check_interrupt()?;
                bail!("client `{}` still running after {bound:?}", args.join(" "));
            }
        };
        ensure!(
            st.success(),
            "client `{}` failed ({st}): {}",
            args.join(" "),
            tail(&p.stderr(), 20)
        );
        Ok(p.stdout())
    }

    /// `count` new TCP connections to `vip`:[`HTTP_PORT`] from the client, `parallel` at a time, one
    /// HTTP request each; with `sport_base`, connection i binds source port `sport_base + i`.
    pub fn tcp_conns(
        &self,
        vip: IpAddr,
        count: u32,
        parallel: u32,
        sport_base: Option<u16>,
    ) -> Result<Vec<ConnResult>> {
        let deadline = 30 + count / 10;
        let args = vec![
            "conns".to_string(),
            "--addr".into(),
            vip.to_string(),
            "--port".into(),
            HTTP_PORT.to_string(),
            "--count".into(),
            count.to_string(),
            "--parallel".into(),
            parallel.to_string(),
            "--sport-base".into(),
            sport_base.unwrap_or(0).to_string(),
            "--deadline".into(),
            deadline.to_string(),
        ];
        let out = self.run_client(
            "client-conns",
            &args,
            Duration::from_secs(u64::from(deadline) + 30),
        )?;
        parse_lines(&out)
            .iter()
            .map(ConnResult::from_json)
            .collect()
    }

    /// `conns` keep-alive connections to `vip`:[`HTTP_PORT`], `requests` requests each.
    pub fn keepalive(
        &self,
        vip: IpAddr,
        conns: u32,
        requests: u32,
    ) -> Result<Vec<KeepaliveResult>> {
        let deadline = 60 + conns * requests / 100;
        let args = vec![
            "keepalive".to_string(),
            "--addr".into(),
            vip.to_string(),
            "--port".into(),
            HTTP_PORT.to_string(),
            "--conns".into(),
            conns.to_string(),
            "--requests".into(),
            requests.to_string(),
            "--parallel".into(),
            conns.min(32).to_string(),
            "--deadline".into(),
            deadline.to_string(),
        ];
        let out = self.run_client(
            "client-keepalive",
            &args,
            Duration::from_secs(u64::from(deadline) + 30),
        )?;
        parse_lines(&out)
            .iter()
            .map(KeepaliveResult::from_json)
            .collect()
    }

    /// `count` UDP datagrams of `size` bytes to `vip`:[`UDP_PORT`], each from its own socket (source
    /// port `sport_base + i` when given), up to 3 attempts each.
    pub fn udp(
        &self,
        vip: IpAddr,
        size: u32,
        count: u32,
        sport_base: Option<u16>,
    ) -> Result<Vec<UdpResult>> {
        let deadline = 30 + count / 10;
        let args = vec![
            "udp".to_string(),
            "--addr".into(),
            vip.to_string(),
            "--port".into(),
            UDP_PORT.to_string(),
            "--size".into(),
            size.to_string(),
            "--count".into(),
            count.to_string(),
            "--parallel".into(),
            "16".into(),
            "--timeout".into(),
            "1".into(),
            "--sport-base".into(),
            sport_base.unwrap_or(0).to_string(),
            "--deadline".into(),
            deadline.to_string(),
        ];
        let out = self.run_client(
            "client-udp",
            &args,
            Duration::from_secs(u64::from(deadline) + 30),
        )?;
        parse_lines(&out).iter().map(UdpResult::from_json).collect()
    }

    /// Opens `conns` keep-alive connections to `vip`:[`HTTP_PORT`] held across `steps` steps; step 0
    /// (one request per connection) runs at once: read it with [`Hold::step`].
    pub fn hold(&self, vip: IpAddr, conns: u32, steps: u32) -> Result<Hold> {
        let step_dir = self
            .dir
            .0
            .join(format!("hold-{}", SEQ.fetch_add(1, Ordering::Relaxed)));
        std::fs::create_dir_all(&step_dir)
            .with_context(|| format!("creating {}", step_dir.display()))?;
        let script = self.dir.0.join("client.py");
        let argv = vec![
            "python3".to_string(),
            "-u".into(),
            script.to_string_lossy().into_owned(),
            "hold".into(),
            "--addr".into(),
            vip.to_string(),
            "--port".into(),
            HTTP_PORT.to_string(),
            "--conns".into(),
            conns.to_string(),
            "--steps".into(),
            steps.to_string(),
            "--step-dir".into(),
            step_dir.to_string_lossy().into_owned(),
            "--parallel".into(),
            conns.min(64).to_string(),
        ];
        let proc = self.client.ns.spawn("client-hold", &argv)?;
        Ok(Hold { proc, step_dir })
    }

    /// The log of backend `i`'s server (one JSON object per line).
    pub fn backend_log(&self, i: usize) -> Vec<Value> {
        parse_lines(&self.backends[i].server.stdout())
    }

    /// TCP connections the backends logged as ended: (backend name, peer `ip:port` / `[ip]:port`,
    /// requests served on the connection).
    pub fn closed_connections(&self) -> Vec<(String, String, u64)> {
        self.backends
            .iter()
            .flat_map(|b| {
                parse_lines(&b.server.stdout())
                    .into_iter()
                    .filter(|v| v.get("ev").and_then(Value::as_str) == Some("close"))
                    .filter_map(|v| {
                        Some((
                            b.spec.name.clone(),
                            str_field(&v, "peer")?,
                            u64_field(&v, "requests"),
                        ))
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// How a backend writes the client's address and source port `sport` of `family`'s family.
    pub fn client_peer(&self, family: IpAddr, sport: u16) -> String {
        match family {
            IpAddr::V4(_) => format!("{}:{sport}", self.client.v4),
            IpAddr::V6(_) => format!("[{}]:{sport}", self.client.v6),
        }
    }

    /// GRE packets backend `i` decapsulated so far, from the counters `nf-maglev decap` prints every
    /// second (`None` in l2dsr mode, or before the first report).
    pub fn decapped(&self, i: usize) -> Option<u64> {
        let out = self.backends[i].decap.as_ref()?.stdout();
        out.lines().rev().find_map(|l| {
            let rest = l.split_once("decapped ")?.1;
            rest.split_whitespace().next()?.parse().ok()
        })
    }

    /// Index of the backend named `name`.
    pub fn backend_index(&self, name: &str) -> Option<usize> {
        self.backends.iter().position(|b| b.spec.name == name)
    }

    /// Sends raw Ethernet frames from the client's interface (they cross the bridge like any frame).
    pub fn send_from_client(&self, frames: &[Vec<u8>]) -> Result<()> {
        capture::send_frames(self.client.ns.name(), CLIENT_IF, frames)
    }

    /// True when every backend server (and decap process) still runs.
    pub fn backends_running(&mut self) -> bool {
        self.backends
            .iter_mut()
            .all(|b| b.server.is_running() && b.decap.as_mut().is_none_or(Proc::is_running))
    }
}

impl Drop for MaglevLab {
    fn drop(&mut self) {
        // Ask every process to stop at once; the fields' own Drop then reaps them (already gone, or
        // killed after a grace period) before the namespaces go.
        let procs = self.lbs.iter_mut().filter_map(|l| l.nf.as_mut()).chain(
            self.backends
                .iter_mut()
                .flat_map(|b| std::iter::once(&mut b.server).chain(b.decap.as_mut())),
        );
        for p in procs {
            if p.is_running() {
                if let Err(e) = p.signal(Signal::Term) {
                    log::debug!("{e:#}");
                }
            }
        }
    }
}

/// A client holding keep-alive connections open across steps ([`MaglevLab::hold`]).
#[derive(Debug)]
pub struct Hold {
    proc: Proc,
    step_dir: PathBuf,
}

impl Hold {
    /// Runs step `k` (k > 0: releases it; k = 0 runs at start) and returns its per-connection results,
    /// waiting at most `timeout`.
    pub fn step(&mut self, k: u32, timeout: Duration) -> Result<Vec<ConnResult>> {
        if k > 0 {
            let flag = self.step_dir.join(format!("step{k}"));
            std::fs::write(&flag, b"").with_context(|| format!("writing {}", flag.display()))?;
        }
        let deadline = Instant::now() + timeout;
        loop {
            // Checked before reading, so everything written before an exit is seen.
            let ended = !self.proc.is_running();
            for v in parse_lines(&self.proc.stdout()) {
                if v.get("step").and_then(Value::as_u64) == Some(u64::from(k)) {
                    if let Some(e) = v.get("error") {
                        bail!("hold client, step {k}: {e}");
                    }
                    let results = v
                        .get("results")
                        .and_then(Value::as_array)
                        .context("hold step without results")?;
                    return results.iter().map(ConnResult::from_json).collect();
                }
            }
            if ended {
                bail!(
                    "hold client ended before step {k}: {}",
                    tail(&self.proc.stderr(), 20)
                );
            }
            if Instant::now() >= deadline {
                bail!("hold client: no step {k} after {timeout:?}");
            }
            check_interrupt()?;
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn parse_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn str_field(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_string)
}

fn u64_field(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

/// One TCP connection's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnResult {
    /// Client source port (0 if the connection never got one).
    pub sport: u16,
    /// The backend that answered.
    pub backend: Option<String>,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

impl ConnResult {
    fn from_json(v: &Value) -> Result<ConnResult> {
        Ok(ConnResult {
            sport: u16::try_from(u64_field(v, "sport")).context("source port out of range")?,
            backend: str_field(v, "backend"),
            error: str_field(v, "error"),
        })
    }
}

/// One keep-alive connection's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeepaliveResult {
    /// Client source port.
    pub sport: u16,
    /// Distinct backends that answered, in order of first answer (one, when all is well).
    pub backends: Vec<String>,
    /// Requests answered.
    pub requests_ok: u64,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

impl KeepaliveResult {
    fn from_json(v: &Value) -> Result<KeepaliveResult> {
        Ok(KeepaliveResult {
            sport: u16::try_from(u64_field(v, "sport")).context("source port out of range")?,
            backends: v
                .get("backends")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|b| b.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            requests_ok: u64_field(v, "requests_ok"),
            error: str_field(v, "error"),
        })
    }
}

/// One UDP datagram's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpResult {
    /// Client source port.
    pub sport: u16,
    /// The backend that answered.
    pub backend: Option<String>,
    /// Length the backend received.
    pub len: u64,
    /// Whether the backend received exactly what was sent (length and SHA-256).
    pub whole: bool,
    /// Sends needed (1 unless a datagram or its answer was lost).
    pub attempts: u64,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

impl UdpResult {
    fn from_json(v: &Value) -> Result<UdpResult> {
        Ok(UdpResult {
            sport: u16::try_from(u64_field(v, "sport")).context("source port out of range")?,
            backend: str_field(v, "backend"),
            len: u64_field(v, "len"),
            whole: v.get("whole").and_then(Value::as_bool).unwrap_or(false),
            attempts: u64_field(v, "attempts"),
            error: str_field(v, "error"),
        })
    }
}

/// How connections spread over the backends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spread {
    /// Answered connections per backend name.
    pub counts: BTreeMap<String, u64>,
    /// Connections that failed.
    pub failed: u64,
    /// First few failure messages.
    pub errors: Vec<String>,
}

impl Spread {
    /// Counts the outcomes.
    pub fn of<'a>(results: impl IntoIterator<Item = &'a ConnResult>) -> Spread {
        let mut s = Spread::default();
        for r in results {
            match (&r.backend, &r.error) {
                (Some(b), None) => *s.counts.entry(b.clone()).or_default() += 1,
                (_, e) => {
                    s.failed += 1;
                    if s.errors.len() < 5 {
                        s.errors
                            .push(e.clone().unwrap_or_else(|| "no backend named".into()));
                    }
                }
            }
        }
        s
    }

    /// Counts UDP outcomes the same way (a datagram answered whole counts for its backend).
    pub fn of_udp<'a>(results: impl IntoIterator<Item = &'a UdpResult>) -> Spread {
        let conns: Vec<ConnResult> = results
            .into_iter()
            .map(|r| ConnResult {
                sport: r.sport,
                backend: r.backend.clone().filter(|_| r.whole),
                error: r.error.clone().or_else(|| {
                    (!r.whole).then(|| format!("datagram arrived changed ({} bytes)", r.len))
                }),
            })
            .collect();
        Spread::of(&conns)
    }

    /// Answered connections.
    pub fn answered(&self) -> u64 {
        self.counts.values().sum()
    }

    /// Checks every backend's share against its weight: |count - n p| <= z sqrt(n p (1 - p)) + n / 100,
    /// where n is the number answered and p = weight / total weight. The first term is the binomial
    /// spread of hashing n independent flows (z = 5: a false alarm about once in 1.7 million checks);
    /// the second allows for the Maglev table itself, whose slot shares deviate from the weights by far
    /// less than 1% at 65537 slots. Names not in `backends` must get nothing.
    pub fn check_weights(&self, backends: &[BackendSpec], z: f64) -> Result<()> {
        let n = self.answered();
        let total: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
        ensure!(total > 0, "all weights are 0");
        #[allow(clippy::cast_precision_loss)]
        let nf = n as f64;
        let mut problems = Vec::new();
        for b in backends {
            #[allow(clippy::cast_precision_loss)]
            let p = b.weight as f64 / total as f64;
            let got = self.counts.get(&b.name).copied().unwrap_or(0);
            let tol = binomial_tolerance(nf, p, z) + nf / 100.0;
            #[allow(clippy::cast_precision_loss)]
            let dev = (got as f64 - nf * p).abs();
            if dev > tol {
                problems.push(format!(
                    "{}: {got} of {n}, expected {:.1} +- {tol:.1}",
                    b.name,
                    nf * p
                ));
            }
        }
        for name in self.counts.keys() {
            if !backends.iter().any(|b| &b.name == name) {
                problems.push(format!("{name} answered but is not an expected backend"));
            }
        }
        ensure!(
            problems.is_empty(),
            "spread does not follow the weights: {}\n{self}",
            problems.join("; ")
        );
        Ok(())
    }
}

impl fmt::Display for Spread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.answered() + self.failed;
        writeln!(f, "{:<10} {:>8} {:>8}", "backend", "conns", "share")?;
        for (name, &c) in &self.counts {
            #[allow(clippy::cast_precision_loss)]
            let pct = if n == 0 {
                0.0
            } else {
                100.0 * c as f64 / n as f64
            };
            writeln!(f, "{name:<10} {c:>8} {pct:>7.1}%")?;
        }
        if self.failed > 0 {
            writeln!(f, "{:<10} {:>8}", "failed", self.failed)?;
            for e in &self.errors {
                writeln!(f, "  {e}")?;
            }
        }
        Ok(())
    }
}

/// z standard deviations of a binomial count: z sqrt(n p (1 - p)).
pub fn binomial_tolerance(n: f64, p: f64, z: f64) -> f64 {
    z * (n * p * (1.0 - p)).sqrt()
}

/// One sample of the Prometheus text format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name.
    pub name: String,
    /// Labels, in order.
    pub labels: Vec<(String, String)>,
    /// Value.
    pub value: f64,
    /// The line as served.
    pub line: String,
}

/// A parsed `/metrics` page.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    /// Every sample, in page order.
    pub samples: Vec<Sample>,
}

impl Metrics {
    /// Parses the Prometheus text exposition format (comments skipped, unparsable lines ignored).
    pub fn parse(text: &str) -> Metrics {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(parse_sample)
            .collect();
        Metrics { samples }
    }

    /// Sum of the samples named `name` whose labels include every `(key, value)` of `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|s| s.value)
            .sum()
    }

    /// Samples whose name contains `part`.
    pub fn matching<'a>(&'a self, part: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name.contains(part))
    }
}

fn parse_sample(line: &str) -> Option<Sample> {
    let (head, value) = match line.find('}') {
        Some(end) => (&line[..=end], line[end + 1..].trim()),
        None => line.split_once(' ')?,
    };
    let value = value.split_whitespace().next()?.parse().ok()?;
    let (name, labels) = match head.split_once('{') {
        Some((n, rest)) => (n, parse_labels(rest.strip_suffix('}')?)?),
        None => (head, Vec::new()),
    };
    Some(Sample {
        name: name.trim().to_string(),
        labels,
        value,
        line: line.to_string(),
    })
}

fn parse_labels(text: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let after = after.strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, e)) = chars.next() {
                        value.push(match e {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = Some(i);
                    break;
                }
                c => value.push(c),
            }
        }
        let end = end?;
        out.push((key.trim().trim_start_matches(',').trim().to_string(), value));
        rest = after[end + 1..].trim_start_matches(',').trim();
    }
    Some(out)
}

/// Holds a process-wide lock while alive: tests of one binary that each build a lab take it, so their
/// labs run one after another instead of competing for the machine's few CPUs.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Options of [`demo`].
#[derive(Debug, Clone)]
pub struct DemoOpts {
    /// Forwarding mode.
    pub mode: Mode,
    /// New TCP connections to make.
    pub connections: u32,
    /// The nf-maglev binary.
    pub nf_maglev: PathBuf,
}

/// What [`demo`] measured.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// Mode used.
    pub mode: Mode,
    /// Backends (name, weight).
    pub backends: Vec<BackendSpec>,
    /// How the connections spread.
    pub spread: Spread,
    /// Wall time of the connections.
    pub elapsed: Duration,
    /// Key lines of `/metrics` after the run.
    pub metrics: Vec<String>,
    /// GRE packets each backend decapsulated (GRE mode only).
    pub decapped: Vec<(String, u64)>,
    /// Whether the spread matches the weights (see [`Spread::check_weights`]); the error otherwise.
    pub weights_ok: Result<(), String>,
}

impl fmt::Display for DemoReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.spread.answered() + self.spread.failed;
        let total_w: u32 = self.backends.iter().map(|b| b.weight).sum();
        writeln!(
            f,
            "mode {}: {n} TCP connections to {VIP4}:{HTTP_PORT} in {:.2} s, {} answered, {} failed",
            self.mode,
            self.elapsed.as_secs_f64(),
            self.spread.answered(),
            self.spread.failed
        )?;
        writeln!(
            f,
            "{:<8} {:>6} {:>7} {:>8} {:>9}",
            "backend", "weight", "conns", "share", "expected"
        )?;
        for b in &self.backends {
            let c = self.spread.counts.get(&b.name).copied().unwrap_or(0);
            #[allow(clippy::cast_precision_loss)]
            let pct = if n == 0 {
                0.0
            } else {
                100.0 * c as f64 / n as f64
            };
            let exp = 100.0 * f64::from(b.weight) / f64::from(total_w.max(1));
            writeln!(
                f,
                "{:<8} {:>6} {c:>7} {pct:>7.1}% {exp:>8.1}%",
                b.name, b.weight
            )?;
        }
        for e in &self.spread.errors {
            writeln!(f, "  error: {e}")?;
        }
        match &self.weights_ok {
            Ok(()) => writeln!(
                f,
                "spread matches the weights (binomial 5-sigma bound + 1%)"
            )?,
            Err(e) => writeln!(f, "spread check FAILED: {e}")?,
        }
        if !self.decapped.is_empty() {
            let list: Vec<String> = self
                .decapped
                .iter()
                .map(|(b, n)| format!("{b} {n}"))
                .collect();
            writeln!(
                f,
                "GRE packets decapsulated by the backends: {}",
                list.join(", ")
            )?;
        }
        writeln!(f, "metrics (selected, VIP web4):")?;
        for l in &self.metrics {
            writeln!(f, "  {l}")?;
        }
        Ok(())
    }
}

/// Metrics the demo shows (samples of other VIPs than `web4` are left out).
const DEMO_METRICS: &[&str] = &[
    "nf_maglev_vip_new_connections_total",
    "nf_maglev_backend_new_connections_total",
    "nf_maglev_backend_packets_total",
    "nf_maglev_port_rx_packets_total",
    "nf_maglev_port_tx_packets_total",
    "nf_maglev_xdp_filter_claimed_packets_total",
    "nf_maglev_xdp_filter_passed_packets_total",
    "nf_maglev_conntrack_entries",
];

/// The demo's selection of `/metrics`: [`DEMO_METRICS`] for the `web4` VIP, and the drops (non-zero
/// reasons, or one line saying there were none).
fn demo_lines(m: &Metrics) -> Vec<String> {
    let mut lines: Vec<String> = DEMO_METRICS
        .iter()
        .flat_map(|name| m.samples.iter().filter(move |s| s.name == *name))
        .filter(|s| s.labels.iter().all(|(k, v)| k != "vip" || v == "web4"))
        .map(|s| s.line.clone())
        .collect();
    let drops: Vec<&Sample> = m
        .matching("nf_maglev_dropped_packets_total")
        .filter(|s| s.value != 0.0)
        .collect();
    if drops.is_empty() {
        lines.push("nf_maglev_dropped_packets_total 0 (every reason)".into());
    } else {
        lines.extend(drops.iter().map(|s| s.line.clone()));
    }
    lines
}

/// Builds the lab (three backends, weights 1/1/2), starts nf-maglev, makes `connections` real TCP
/// connections to the IPv4 VIP, reads `/metrics`, tears everything down, and reports.
pub fn demo(opts: &DemoOpts) -> Result<DemoReport> {
    let spec = LabSpec::new(opts.mode, &opts.nf_maglev);
    let mut lab = MaglevLab::build(&spec).context("building the lab")?;
    lab.start_lb(0, &[]).context("starting nf-maglev")?;
    let t0 = Instant::now();
    let results = lab.tcp_conns(IpAddr::V4(VIP4), opts.connections, 32, None)?;
    let elapsed = t0.elapsed();
    let spread = Spread::of(&results);
    let weights_ok = spread
        .check_weights(&spec.backends, 5.0)
        .map_err(|e| e.to_string());
    // Workers publish their counters every 250 ms: wait until the load balancer has counted every
    // connection the client made (bounded; a shortfall shows in the printed numbers).
    #[allow(clippy::cast_precision_loss)]
    let made = (spread.answered() + spread.failed) as f64;
    let mut metrics = lab.metrics(0)?;
    let deadline = Instant::now() + Duration::from_secs(3);
    // The connection-table gauge is refreshed by a table scan once a second: wait for it as well.
    while (metrics.sum("nf_maglev_vip_new_connections_total", &[("vip", "web4")]) < made
        || metrics.sum("nf_maglev_conntrack_entries", &[]) < 1.0)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
        metrics = lab.metrics(0)?;
    }
    // `nf-maglev decap` prints its counters once a second: wait for them to cover what the load
    // balancer sent (bounded, as above).
    let forwarded = metrics.sum("nf_maglev_backend_packets_total", &[]);
    let decap_counts = |lab: &MaglevLab| -> Vec<(String, u64)> {
        (0..spec.backends.len())
            .filter_map(|i| Some((spec.backends[i].name.clone(), lab.decapped(i)?)))
            .collect()
    };
    let mut decapped = decap_counts(&lab);
    let deadline = Instant::now() + Duration::from_secs(3);
    #[allow(clippy::cast_precision_loss)]
    while opts.mode == Mode::Gre
        && (decapped.iter().map(|(_, n)| n).sum::<u64>() as f64) < forwarded
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
        decapped = decap_counts(&lab);
    }
    lab.stop_lb(0).context("stopping nf-maglev")?;
    Ok(DemoReport {
        mode: opts.mode,
        backends: spec.backends,
        spread,
        elapsed,
        metrics: demo_lines(&metrics),
        decapped,
        weights_ok,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_print() {
        for m in Mode::ALL {
            assert_eq!(m.to_string().parse::<Mode>().unwrap(), m);
        }
        assert!("ipip".parse::<Mode>().is_err());
    }

    #[test]
    fn prometheus_lines_parse() {
        let m = Metrics::parse(
            "# HELP x y\n# TYPE x counter\nnf_drops_total{reason=\"malformed\",worker=\"0\"} 3\n\
             nf_drops_total{reason=\"malformed\",worker=\"1\"} 4\nnf_drops_total{reason=\"no_vip\"} 9\n\
             up 1\nweird{a=\"q\\\"uote\"} 2.5\n",
        );
        assert_eq!(m.sum("nf_drops_total", &[("reason", "malformed")]), 7.0);
        assert_eq!(m.sum("nf_drops_total", &[]), 16.0);
        assert_eq!(m.sum("up", &[]), 1.0);
        assert_eq!(m.sum("weird", &[("a", "q\"uote")]), 2.5);
        assert_eq!(m.matching("drops").count(), 3);
    }

    fn specs(w: &[u32]) -> Vec<BackendSpec> {
        LabSpec::new(Mode::Gre, "/bin/true").weights(w).backends
    }

    fn results(counts: &[(&str, u32)], failed: u32) -> Vec<ConnResult> {
        let mut v = Vec::new();
        for &(name, c) in counts {
            for _ in 0..c {
                v.push(ConnResult {
                    sport: 1,
                    backend: Some(name.into()),
                    error: None,
                });
            }
        }
        for _ in 0..failed {
            v.push(ConnResult {
                sport: 0,
                backend: None,
                error: Some("reset".into()),
            });
        }
        v
    }

    #[test]
    fn weight_check_accepts_binomial_noise_and_rejects_skew() {
        let w = specs(&[1, 1, 2]);
        // 1000 connections, expected 250/250/500; sigma 13.7 and 15.8.
        let ok = Spread::of(&results(&[("b1", 270), ("b2", 235), ("b3", 495)], 0));
        ok.check_weights(&w, 5.0).unwrap();
        let skewed = Spread::of(&results(&[("b1", 340), ("b2", 330), ("b3", 330)], 0));
        assert!(skewed.check_weights(&w, 5.0).is_err());
        let stranger = Spread::of(&results(
            &[("b1", 250), ("b2", 250), ("b3", 490), ("x", 10)],
            0,
        ));
        assert!(stranger.check_weights(&w, 5.0).is_err());
        let f = Spread::of(&results(&[("b1", 1)], 2));
        assert_eq!((f.answered(), f.failed, f.errors.len()), (1, 2, 2));
    }

    #[test]
    fn tolerance_is_z_sigma() {
        assert!((binomial_tolerance(1000.0, 0.5, 2.0) - 2.0 * 250f64.sqrt()).abs() < 1e-9);
        assert_eq!(binomial_tolerance(100.0, 1.0, 5.0), 0.0);
    }

    #[test]
    fn host_addresses_are_test_addresses() {
        for n in [1u8, 2, 3, 11, 26] {
            assert!(crate::addr::is_test_ipv4(host_v4(n)));
            assert!(crate::addr::is_test_ipv6(host_v6(n)));
        }
        assert!(crate::addr::is_test_ipv4(VIP4));
        assert!(crate::addr::is_test_ipv6(VIP6));
    }
}
