//! The lab's topology: what to build ([`LabSpec`]), the hosts on the segment, building it, the
//! accessors, routes, and tearing it down.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::Ordering;

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use super::{
    check_interrupt, interrupted, tail, BACKEND_IF, BACKEND_PY, CLIENT_IF, CLIENT_MTU, CLIENT_PY,
    HTTP_PORT, LB_IF, LB_QUEUES, LINK_MTU, MAX_BACKENDS, SEQ, START_TIMEOUT, SWITCH_BRIDGE,
    UDP_PORT, VIP4, VIP6,
};
use crate::addr::Mac;
use crate::cmd;
use crate::netns::Netns;
use crate::process::Proc;
use crate::wait::wait_for;

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
    /// The `health` object of the generated `maglev` section (left out unless set).
    pub health: Option<Value>,
    /// The `check` object of each generated VIP, by VIP name (left out for VIPs not named).
    pub checks: BTreeMap<String, Value>,
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
            health: None,
            checks: BTreeMap::new(),
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

    /// Sets the `health` object of the generated `maglev` section.
    pub fn health(mut self, health: Value) -> LabSpec {
        self.health = Some(health);
        self
    }

    /// Sets the `check` object of the generated VIPs named in `vips`.
    pub fn check(mut self, vips: &[&str], check: Value) -> LabSpec {
        for v in vips {
            self.checks.insert((*v).to_string(), check.clone());
        }
        self
    }
}

/// A host on the segment: its namespace, interface, MAC and addresses.
#[derive(Debug)]
pub struct Host {
    pub(crate) ns: Netns,
    pub(crate) ifname: &'static str,
    pub(crate) port: String,
    pub(crate) mac: Mac,
    pub(crate) v4: Ipv4Addr,
    pub(crate) v6: Ipv6Addr,
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
pub(super) struct Lb {
    pub(super) nf: Option<Proc>,
    pub(super) host: Host,
    pub(super) config: PathBuf,
}

#[derive(Debug)]
pub(crate) struct Backend {
    pub(crate) server: Proc,
    pub(crate) decap: Option<Proc>,
    pub(crate) host: Host,
    pub(crate) spec: BackendSpec,
    /// The server is stopped by SIGSTOP (see [`faults`](super::faults)).
    pub(crate) paused: bool,
    /// Addresses added to its interface after the build (see [`faults`](super::faults)).
    pub(crate) extra_addrs: Vec<IpAddr>,
}

/// The working directory of a lab (Python programs, configurations, step files); removed by `Drop`
/// unless `LAB_KEEP_LOGS` is set.
#[derive(Debug)]
pub(crate) struct WorkDir(pub(crate) PathBuf);

impl WorkDir {
    /// Creates `$TMPDIR/<kind>-<pid>-<n>` holding the Python programs.
    pub(crate) fn create(kind: &str) -> Result<WorkDir> {
        let dir = WorkDir(std::env::temp_dir().join(format!(
            "{kind}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        )));
        std::fs::create_dir_all(&dir.0).with_context(|| format!("creating {}", dir.0.display()))?;
        for (file, text) in [("backend.py", BACKEND_PY), ("client.py", CLIENT_PY)] {
            let p = dir.0.join(file);
            std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
        }
        Ok(dir)
    }
}

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
    pub(super) lbs: Vec<Lb>,
    pub(super) backends: Vec<Backend>,
    pub(super) client: Host,
    pub(super) switch: Netns,
    pub(super) dir: WorkDir,
    pub(super) mode: Mode,
    pub(super) nf_maglev: PathBuf,
    pub(super) health: Option<Value>,
    pub(super) checks: BTreeMap<String, Value>,
}

pub(crate) fn sysctl(ns: &Netns, settings: &[&str]) -> Result<()> {
    let mut argv = vec!["sysctl", "-q", "-w"];
    argv.extend_from_slice(settings);
    ns.exec(&argv)
        .with_context(|| format!("sysctl in {}", ns.name()))?;
    Ok(())
}

/// Settings every host gets before its interface exists (`default` applies to interfaces created later).
pub(crate) const HOST_SYSCTLS: &[&str] = &[
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
pub(crate) const BACKEND_SYSCTLS: &[&str] = &[
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
pub(crate) struct HostSpec<'a> {
    /// Namespace name tag.
    pub(crate) tag: &'a str,
    /// Interface name inside the namespace.
    pub(crate) ifname: &'static str,
    /// Name of the switch-side end.
    pub(crate) port: String,
    /// Its MAC and addresses (on a /24 and a /64).
    pub(crate) mac: Mac,
    pub(crate) v4: Ipv4Addr,
    pub(crate) v6: Ipv6Addr,
    pub(crate) mtu: u32,
    pub(crate) queues: u32,
    pub(crate) sysctls: &'a [&'a str],
}

impl<'a> HostSpec<'a> {
    /// Host number `n` of the segment: last byte of its addresses and MAC.
    fn numbered(tag: &'a str, ifname: &'static str, port: String, n: u8) -> HostSpec<'a> {
        HostSpec {
            tag,
            ifname,
            port,
            mac: host_mac(n),
            v4: host_v4(n),
            v6: host_v6(n),
            mtu: LINK_MTU,
            queues: 1,
            sysctls: &[],
        }
    }
}

/// Builds one host: namespace, sysctls, a veth to the switch with the given MTU and queues, addresses.
pub(crate) fn make_host(switch: &Netns, spec: HostSpec<'_>) -> Result<Host> {
    let ns = Netns::new(spec.tag)?;
    sysctl(&ns, HOST_SYSCTLS)?;
    if !spec.sysctls.is_empty() {
        sysctl(&ns, spec.sysctls)?;
    }
    let (ifname, port, mac, v4, v6) = (spec.ifname, spec.port.clone(), spec.mac, spec.v4, spec.v6);
    plug(&ns, switch, spec)?;
    Ok(Host {
        ns,
        ifname,
        port,
        mac,
        v4,
        v6,
    })
}

/// Connects namespace `ns` to the bridge of `switch` by a veth (MTU, queues, MAC, addresses and a
/// static FDB entry as `spec` says; `spec.sysctls` is not used, `spec.tag` only to tell a load balancer).
pub(crate) fn plug(ns: &Netns, switch: &Netns, spec: HostSpec<'_>) -> Result<()> {
    let spec_tag_is_lb = spec.tag == "lb";
    let HostSpec {
        ifname,
        port,
        mac,
        v4,
        v6,
        mtu,
        queues,
        ..
    } = spec;
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
    let mtu = mtu.to_string();
    let mac = mac.to_string();
    ns.ip(&[
        "link", "set", "dev", ifname, "address", &mac, "mtu", &mtu, "up",
    ])?;
    ns.ip(&["addr", "add", &format!("{}/24", v4), "dev", ifname])?;
    ns.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{}/64", v6),
        "dev",
        ifname,
        "nodad",
    ])?;
    switch.ip(&[
        "link",
        "set",
        "dev",
        &port,
        "mtu",
        &mtu,
        "master",
        SWITCH_BRIDGE,
        "up",
    ])?;
    // A veth takes the frames its peer's XDP program sends back (XDP_TX) promptly only when it runs
    // an XDP program itself (GRO alone queues them until the peer next transmits normally): the load
    // balancers' ports get a pass-everything program when the fast path forwards in XDP.
    if spec_tag_is_lb && crate::maglev::lb::data_path().as_deref() == Some("xdp") {
        switch
            .ip(&[
                "link",
                "set",
                "dev",
                &port,
                "xdpdrv",
                "obj",
                crate::tools::XDP_PASS_OBJ,
                "sec",
                "xdp",
            ])
            .with_context(|| format!("attaching an XDP_PASS program to {port}"))?;
    }
    // A static entry: frames to this host never flood the segment, whatever the ageing.
    switch
        .exec(&[
            "bridge", "fdb", "replace", &mac, "dev", &port, "master", "static",
        ])
        .with_context(|| format!("static FDB entry for {mac}"))?;
    Ok(())
}

/// A namespace `tag` holding the segment's bridge.
pub(crate) fn make_switch(tag: &str) -> Result<Netns> {
    let sw = Netns::new(tag)?;
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

/// Makes `host` a backend serving `vip4` and `vip6`: the VIPs on `lo`, ARP only for its interface's own
/// addresses, and the HTTP/UDP server (`py/backend.py` in `dir`) bound to the VIPs (and, with `own`, to
/// the host's own addresses too, for health checks sent to the backend's address); returns the server
/// once it is ready.
pub(crate) fn start_backend_server(
    host: &Host,
    dir: &Path,
    name: &str,
    (vip4, vip6): (Ipv4Addr, Ipv6Addr),
    own: bool,
) -> Result<Proc> {
    sysctl(
        &host.ns,
        &[
            &format!("net.ipv4.conf.{}.arp_ignore=1", host.ifname),
            &format!("net.ipv4.conf.{}.arp_announce=2", host.ifname),
        ],
    )?;
    host.ns
        .ip(&["addr", "add", &format!("{vip4}/32"), "dev", "lo"])?;
    host.ns.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{vip6}/128"),
        "dev",
        "lo",
        "nodad",
    ])?;
    let mut binds = vec![IpAddr::V4(vip4), IpAddr::V6(vip6)];
    if own {
        binds.extend([IpAddr::V4(host.v4), IpAddr::V6(host.v6)]);
    }
    spawn_server(host, dir, name, &binds)
}

/// Path of the flag file that makes backend `name`'s HTTP server answer 500 while it exists.
pub(super) fn http_fail_flag(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("http-fail-{name}"))
}

/// Starts the backend server (`py/backend.py`) of backend `name` on `host`, bound to `binds`; returns
/// once it is ready.
pub(super) fn spawn_server(host: &Host, dir: &Path, name: &str, binds: &[IpAddr]) -> Result<Proc> {
    let script = dir.join("backend.py");
    let mut argv = vec![
        "python3".to_string(),
        "-u".into(),
        script.to_string_lossy().into_owned(),
        "--name".into(),
        name.to_string(),
        "--http-port".into(),
        HTTP_PORT.to_string(),
        "--udp-port".into(),
        UDP_PORT.to_string(),
        "--fail-flag".into(),
        http_fail_flag(dir, name).to_string_lossy().into_owned(),
    ];
    for a in binds {
        argv.extend(["--vip".to_string(), a.to_string()]);
    }
    let mut server = host.ns.spawn(&format!("backend-{name}"), &argv)?;
    let ready = wait_for(START_TIMEOUT, || {
        server.stdout().contains("\"ev\": \"ready\"") || !server.is_running() || interrupted()
    });
    check_interrupt()?;
    if !ready || !server.is_running() {
        bail!(
            "backend server {name} did not start: {}",
            tail(&server.stderr(), 20)
        );
    }
    Ok(server)
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
        let dir = WorkDir::create("maglev-lab")?;

        let switch = make_switch("sw")?;
        let client = make_host(
            &switch,
            HostSpec {
                mtu: spec.client_mtu,
                ..HostSpec::numbered("c", CLIENT_IF, "p-c".into(), 1)
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
                    queues: LB_QUEUES,
                    ..HostSpec::numbered("lb", LB_IF, format!("p-lb{i}"), n)
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
                    sysctls: BACKEND_SYSCTLS,
                    ..HostSpec::numbered("b", BACKEND_IF, format!("p-b{i}"), n)
                },
            )?;
            let server = start_backend_server(&host, &dir.0, &b.name, (VIP4, VIP6), false)?;
            backends.push(Backend {
                server,
                decap: None,
                host,
                spec: b.clone(),
                paused: false,
                extra_addrs: Vec::new(),
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
            health: spec.health.clone(),
            checks: spec.checks.clone(),
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
}

impl MaglevLab {
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

    /// Index of the backend named `name`.
    pub fn backend_index(&self, name: &str) -> Option<usize> {
        self.backends.iter().position(|b| b.spec.name == name)
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
        // A server stopped by SIGSTOP would sit out SIGTERM until killed: let it run again first.
        for i in 0..self.backends.len() {
            if let Err(e) = self.resume_server(i) {
                log::debug!("{e:#}");
            }
        }
        // The fields' own Drop then reaps the processes before the namespaces go.
        super::ask_to_stop(
            self.lbs.iter_mut().filter_map(|l| l.nf.as_mut()).chain(
                self.backends
                    .iter_mut()
                    .flat_map(|b| std::iter::once(&mut b.server).chain(b.decap.as_mut())),
            ),
        );
    }
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
    fn host_addresses_are_test_addresses() {
        for n in [1u8, 2, 3, 11, 26] {
            assert!(crate::addr::is_test_ipv4(host_v4(n)));
            assert!(crate::addr::is_test_ipv6(host_v6(n)));
        }
        assert!(crate::addr::is_test_ipv4(VIP4));
        assert!(crate::addr::is_test_ipv6(VIP6));
    }
}
