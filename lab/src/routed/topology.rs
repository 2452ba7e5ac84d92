//! The routed lab's topology: building it, the hosts, the router's routes, and tearing it down.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use super::{
    backend_net, bird, client_net, fabric_net, mac, BACKENDS, MAX_LBS, ROUTER_BACKEND_IF,
    ROUTER_CLIENT_IF, ROUTER_FABRIC_IF, VIP4, VIP6,
};
use crate::addr::Mac;
use crate::cmd;
use crate::maglev::lb::start_decap;
use crate::maglev::topology::{
    make_host, make_switch, plug, start_backend_server, sysctl, Backend, HostSpec, WorkDir,
    BACKEND_SYSCTLS, HOST_SYSCTLS,
};
use crate::maglev::{
    ask_to_stop, check_interrupt, BackendSpec, Host, BACKEND_IF, CLIENT_IF, CLIENT_MTU, LB_IF,
    LB_QUEUES, LINK_MTU,
};
use crate::netns::Netns;
use crate::process::Proc;

/// The router's forwarding and ECMP settings: L4 hashing, so every flow keeps its load balancer while
/// the nexthop set stays.
const ROUTER_SYSCTLS: &[&str] = &[
    "net.ipv4.ip_forward=1",
    "net.ipv6.conf.all.forwarding=1",
    "net.ipv4.fib_multipath_hash_policy=1",
    "net.ipv6.fib_multipath_hash_policy=1",
];

// Field order is drop order: processes before their namespace.
#[derive(Debug)]
pub(super) struct Lb {
    pub(super) nf: Option<Proc>,
    pub(super) holder: Option<Proc>,
    pub(super) bird: Option<Proc>,
    pub(super) host: Host,
    pub(super) config: PathBuf,
}

#[derive(Debug)]
pub(super) struct Router {
    pub(super) bird: Option<Proc>,
    pub(super) ns: Netns,
    pub(super) fabric_mac: Mac,
}

/// The built lab. See the module documentation for the topology.
#[derive(Debug)]
pub struct RoutedLab {
    pub(super) lbs: Vec<Lb>,
    pub(super) backends: Vec<Backend>,
    pub(super) router: Router,
    pub(super) client: Host,
    pub(super) fabric: Netns,
    pub(super) backend_switch: Netns,
    pub(super) dir: WorkDir,
    pub(super) nf_maglev: Option<PathBuf>,
}

/// Host `n` of segment `seg` (see [`net`](super::net)): its addresses and MAC, on a [`LINK_MTU`] link
/// with one queue.
fn on_segment<'a>(
    tag: &'a str,
    ifname: &'static str,
    port: String,
    seg: u8,
    n: u8,
) -> HostSpec<'a> {
    let (v4, v6) = super::net(seg, n);
    HostSpec {
        tag,
        ifname,
        port,
        mac: mac(seg, n),
        v4,
        v6,
        mtu: LINK_MTU,
        queues: 1,
        sysctls: &[],
    }
}

/// Backend `j` on the backend segment (198.18.30.(11+j)): its namespace, default routes via the router,
/// its server and, given the binary, `nf-maglev decap`.
fn make_backend(
    switch: &Netns,
    dir: &Path,
    j: usize,
    spec: BackendSpec,
    nf_maglev: Option<&Path>,
) -> Result<Backend> {
    let n = 11 + u8::try_from(j)?;
    let host = make_host(
        switch,
        HostSpec {
            sysctls: BACKEND_SYSCTLS,
            ..on_segment("b", BACKEND_IF, format!("p-b{j}"), 30, n)
        },
    )?;
    let (r4, r6) = backend_net(1);
    default_routes(&host.ns, r4, r6)?;
    let server = start_backend_server(&host, dir, &spec.name, (VIP4, VIP6), true)?;
    let mut b = Backend {
        server,
        decap: None,
        host,
        spec,
        paused: false,
        extra_addrs: Vec::new(),
    };
    if let Some(nf) = nf_maglev {
        b.decap = Some(start_decap(nf, &b.host, &[], &b.spec.name)?);
    }
    Ok(b)
}

/// Adds default routes of both families via `v4` / `v6` in `ns`.
fn default_routes(ns: &Netns, v4: Ipv4Addr, v6: Ipv6Addr) -> Result<()> {
    ns.ip(&["route", "replace", "default", "via", &v4.to_string()])?;
    ns.ip(&["-6", "route", "replace", "default", "via", &v6.to_string()])?;
    Ok(())
}

/// The client and its point-to-point link to the router (MTU [`CLIENT_MTU`] on both ends).
fn make_client(router: &Netns) -> Result<Host> {
    let ns = Netns::new("c")?;
    sysctl(&ns, HOST_SYSCTLS)?;
    cmd::ip(
        None,
        &[
            "link",
            "add",
            CLIENT_IF,
            "netns",
            ns.name(),
            "type",
            "veth",
            "peer",
            "name",
            ROUTER_CLIENT_IF,
            "netns",
            router.name(),
        ],
    )
    .context("creating the client's link to the router")?;
    let (v4, v6) = client_net(2);
    let (r4, r6) = client_net(1);
    let mtu = CLIENT_MTU.to_string();
    for (ns, ifname, m, a4, a6) in [
        (&ns, CLIENT_IF, mac(10, 2), v4, v6),
        (router, ROUTER_CLIENT_IF, mac(10, 1), r4, r6),
    ] {
        ns.ip(&[
            "link",
            "set",
            "dev",
            ifname,
            "address",
            &m.to_string(),
            "mtu",
            &mtu,
            "up",
        ])?;
        ns.ip(&["addr", "add", &format!("{a4}/24"), "dev", ifname])?;
        ns.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{a6}/64"),
            "dev",
            ifname,
            "nodad",
        ])?;
    }
    // Full checksums in every packet the client sends: nf-maglev takes them through AF_XDP, which does
    // not finish partial checksums (see the Maglev lab).
    ns.exec(&["ethtool", "-K", CLIENT_IF, "tx", "off"])
        .context("turning off transmit checksum offload on the client")?;
    default_routes(&ns, r4, r6)?;
    Ok(Host {
        ns,
        ifname: CLIENT_IF,
        port: ROUTER_CLIENT_IF.into(),
        mac: mac(10, 2),
        v4,
        v6,
    })
}

impl RoutedLab {
    /// Builds the lab with `n_lbs` load balancer namespaces (1..=[`MAX_LBS`]): namespaces, bridges,
    /// links, addresses, routes, the router's BIRD, the backend servers and, given the `nf-maglev`
    /// binary, `nf-maglev decap` on every backend. The load balancers' BIRDs, nf-maglev and the
    /// stand-in holders are started by their own calls.
    pub fn build(n_lbs: usize, nf_maglev: Option<&Path>) -> Result<RoutedLab> {
        ensure!(
            (1..=MAX_LBS).contains(&n_lbs),
            "a routed lab has 1..={MAX_LBS} load balancers, not {n_lbs}"
        );
        crate::tools::require_executable(Path::new("/usr/sbin/bird"))
            .context("the routed lab runs BIRD 2 (scripts/deps.sh installs bird2)")?;
        let dir = WorkDir::create("routed-lab")?;
        let fabric = make_switch("swf")?;
        let backend_switch = make_switch("swb")?;

        let router_ns = Netns::new("rt")?;
        sysctl(&router_ns, HOST_SYSCTLS)?;
        sysctl(&router_ns, ROUTER_SYSCTLS)?;
        let (f4, f6) = fabric_net(1);
        plug(
            &router_ns,
            &fabric,
            on_segment("rt", ROUTER_FABRIC_IF, "p-r".into(), 20, 1),
        )?;
        plug(
            &router_ns,
            &backend_switch,
            on_segment("rt", ROUTER_BACKEND_IF, "p-r".into(), 30, 1),
        )?;
        let client = make_client(&router_ns)?;
        let router = Router {
            bird: None,
            ns: router_ns,
            fabric_mac: mac(20, 1),
        };

        let mut lbs = Vec::new();
        for i in 0..n_lbs {
            let n = 11 + u8::try_from(i)?;
            let host = make_host(
                &fabric,
                HostSpec {
                    queues: LB_QUEUES,
                    ..on_segment("lb", LB_IF, format!("p-lb{i}"), 20, n)
                },
            )?;
            default_routes(&host.ns, f4, f6)?;
            lbs.push(Lb {
                nf: None,
                holder: None,
                bird: None,
                config: dir.0.join(format!("lb{i}.jsonc")),
                host,
            });
        }

        let mut backends = Vec::new();
        for &(name, weight) in &BACKENDS {
            backends.push(make_backend(
                &backend_switch,
                &dir.0,
                backends.len(),
                BackendSpec {
                    name: name.into(),
                    weight,
                },
                nf_maglev,
            )?);
        }

        let mut lab = RoutedLab {
            lbs,
            backends,
            router,
            client,
            fabric,
            backend_switch,
            dir,
            nf_maglev: nf_maglev.map(Path::to_path_buf),
        };
        if lab.nf_maglev.is_some() {
            for i in 0..n_lbs {
                let text = serde_json::to_string_pretty(&lab.config(i))?;
                let p = &lab.lbs[i].config;
                std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?;
            }
        }
        lab.start_router_bird()?;
        Ok(lab)
    }

    /// Adds a backend `name` of `weight` on the backend segment (next address), serving the VIPs, with
    /// `nf-maglev decap`: no load balancer knows it until told (admin API or configuration). Returns its
    /// index.
    pub fn add_backend(&mut self, name: &str, weight: u32) -> Result<usize> {
        let b = make_backend(
            &self.backend_switch,
            &self.dir.0,
            self.backends.len(),
            BackendSpec {
                name: name.into(),
                weight,
            },
            self.nf_maglev.as_deref(),
        )?;
        self.backends.push(b);
        Ok(self.backends.len() - 1)
    }

    /// The client.
    pub fn client(&self) -> &Host {
        &self.client
    }

    /// Load balancer `i`'s host (namespace, `lb0`, fabric addresses).
    pub fn lb(&self, i: usize) -> &Host {
        &self.lbs[i].host
    }

    /// Number of load balancers.
    pub fn n_lbs(&self) -> usize {
        self.lbs.len()
    }

    /// Backend `j`'s host.
    pub fn backend(&self, j: usize) -> &Host {
        &self.backends[j].host
    }

    /// The backends as configured (name, weight), in order, in the Maglev lab's terms.
    pub fn backend_specs(&self) -> Vec<BackendSpec> {
        self.backends.iter().map(|b| b.spec.clone()).collect()
    }

    /// The log of backend `j`'s server (one JSON object per line).
    pub fn backend_log(&self, j: usize) -> Vec<Value> {
        crate::maglev::traffic::parse_lines(&self.backends[j].server.stdout())
    }

    /// The router's namespace.
    pub fn router(&self) -> &Netns {
        &self.router.ns
    }

    /// The fabric's switch namespace.
    pub fn fabric(&self) -> &Netns {
        &self.fabric
    }

    /// The backend segment's switch namespace.
    pub fn backend_switch(&self) -> &Netns {
        &self.backend_switch
    }

    /// The lab's working directory (configurations, BIRD sockets, Python programs).
    pub fn dir(&self) -> &Path {
        &self.dir.0
    }

    /// Index of the load balancer whose fabric address (of either family) is `addr`.
    pub fn lb_of(&self, addr: IpAddr) -> Option<usize> {
        self.lbs
            .iter()
            .position(|l| IpAddr::V4(l.host.v4) == addr || IpAddr::V6(l.host.v6) == addr)
    }

    /// Load balancer `i`'s fabric address of `vip`'s family: what the router's nexthop for it reads.
    pub fn lb_nexthop(&self, i: usize, vip: IpAddr) -> IpAddr {
        self.lbs[i].host.addr_like(vip)
    }

    /// The nexthops of the router's route for `vip` (`ip route show VIP` in the router namespace),
    /// sorted; empty without a route.
    pub fn router_nexthops(&self, vip: IpAddr) -> Result<Vec<IpAddr>> {
        let family = if vip.is_ipv4() { "-4" } else { "-6" };
        let out = self
            .router
            .ns
            .ip(&["-j", family, "route", "show", &vip.to_string()])?;
        parse_nexthops(&out)
    }

    /// Waits until the router's nexthops for `vip` are the fabric addresses of load balancers `lbs`
    /// (any order; empty: no route); returns how long that took, or errors after `timeout` with what
    /// the router had.
    pub fn wait_nexthops(&self, vip: IpAddr, lbs: &[usize], timeout: Duration) -> Result<Duration> {
        let want: BTreeSet<IpAddr> = lbs.iter().map(|&i| self.lb_nexthop(i, vip)).collect();
        let start = Instant::now();
        loop {
            let have: BTreeSet<IpAddr> = self.router_nexthops(vip)?.into_iter().collect();
            if have == want {
                return Ok(start.elapsed());
            }
            if start.elapsed() >= timeout {
                bail!(
                    "router: nexthops of {vip} are {have:?} after {timeout:?}, not {want:?}\n{}",
                    self.birdc_router("show protocols").unwrap_or_default()
                );
            }
            check_interrupt()?;
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// True when every backend server (and decap process) still runs.
    pub fn backends_running(&mut self) -> bool {
        self.backends
            .iter_mut()
            .all(|b| b.server.is_running() && b.decap.as_mut().is_none_or(Proc::is_running))
    }

    /// The router's BIRD: `birdc` command output (e.g. `show route`).
    pub fn birdc_router(&self, command: &str) -> Result<String> {
        bird::birdc(&self.router.ns, &self.dir.0.join("router.ctl"), command)
    }
}

/// The gateways of `ip -j route show` output: one route with a `gateway`, or with `nexthops`.
fn parse_nexthops(json: &str) -> Result<Vec<IpAddr>> {
    let routes: Value = serde_json::from_str(json).context("parsing `ip -j route show`")?;
    let mut out = Vec::new();
    for r in routes.as_array().into_iter().flatten() {
        let gateways: Vec<&Value> = match r.get("nexthops").and_then(Value::as_array) {
            Some(nh) => nh.iter().filter_map(|n| n.get("gateway")).collect(),
            None => r.get("gateway").into_iter().collect(),
        };
        for g in gateways {
            let s = g.as_str().context("gateway is not a string")?;
            out.push(s.parse().with_context(|| format!("gateway {s:?}"))?);
        }
    }
    out.sort();
    Ok(out)
}

impl Drop for RoutedLab {
    fn drop(&mut self) {
        // The fields' own Drop then reaps the processes before the namespaces go.
        let procs = self
            .lbs
            .iter_mut()
            .flat_map(|l| {
                l.nf.iter_mut()
                    .chain(l.holder.iter_mut())
                    .chain(l.bird.iter_mut())
            })
            .chain(self.router.bird.iter_mut())
            .chain(
                self.backends
                    .iter_mut()
                    .flat_map(|b| std::iter::once(&mut b.server).chain(b.decap.as_mut())),
            );
        ask_to_stop(procs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nexthops_of_single_and_multipath_routes() {
        let single = r#"[{"dst":"198.18.100.1","gateway":"198.18.20.11","dev":"fab0","protocol":"bird","metric":32,"flags":[]}]"#;
        assert_eq!(
            parse_nexthops(single).unwrap(),
            vec!["198.18.20.11".parse::<IpAddr>().unwrap()]
        );
        let multi = r#"[{"dst":"2001:2:0:100::1","protocol":"bird","metric":32,"flags":[],"pref":"medium",
            "nexthops":[{"gateway":"2001:2:0:20::12","dev":"fab0","weight":1,"flags":[]},
                        {"gateway":"2001:2:0:20::11","dev":"fab0","weight":1,"flags":[]}]}]"#;
        assert_eq!(
            parse_nexthops(multi).unwrap(),
            vec![
                "2001:2:0:20::11".parse::<IpAddr>().unwrap(),
                "2001:2:0:20::12".parse().unwrap()
            ]
        );
        assert!(parse_nexthops("[]").unwrap().is_empty());
        assert!(parse_nexthops("not json").is_err());
    }
}
