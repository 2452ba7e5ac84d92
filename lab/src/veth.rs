//! veth pairs between lab namespaces, or from this process's own namespace into one
//! ([`VethPair::from_here`]: the end where a test opens its AF_XDP socket or attaches its program).
//! This is the one veth helper of the workspace: every test lab builds its links with it, so every
//! interface is named by [`crate::names`] and found by `lab cleanup`.
//!
//! Both ends are created at once, directly inside their namespaces, with the same number of rx
//! and tx queues (`numrxqueues N numtxqueues N`): a veth delivers frames sent from CPU c to the
//! peer's rx queue c, so N queues let N CPUs feed N AF_XDP sockets. Deleting one end deletes the
//! pair; `Drop` does that (a namespace already gone took the pair with it). Addresses are checked
//! against the test ranges; IPv6 ones are added `nodad` so they are usable at once.

use std::net::IpAddr;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::addr::{self, Mac};
use crate::capture::{self, Capture};
use crate::cmd;
use crate::counters::{self, Counters, XdpProg};
use crate::names;
use crate::netns::Netns;

/// One end of a veth pair: an interface name inside a lab namespace, or in this process's own.
#[derive(Debug, Clone)]
pub struct VethEnd {
    ns: Option<String>,
    name: String,
}

/// A veth pair; `Drop` deletes it.
#[derive(Debug)]
pub struct VethPair {
    a: VethEnd,
    b: VethEnd,
}

impl VethPair {
    /// Creates end `a` in `ns_a` and end `b` in `ns_b` (may be the same namespace), each with
    /// `queues` rx and tx queues. Both ends start down.
    pub fn new(ns_a: &Netns, ns_b: &Netns, queues: u32) -> Result<VethPair> {
        VethPair::create(Some(ns_a), Some(ns_b), queues)
    }

    /// Creates end `a` in this process's own namespace (where a test opens its AF_XDP socket or
    /// attaches its XDP program) and end `b` in `ns_b`, or here too when `None`; `queues` rx and tx
    /// queues each, both ends down. The names carry the lab prefix, so `lab cleanup` finds an end
    /// left in the root namespace by a killed run.
    pub fn from_here(ns_b: Option<&Netns>, queues: u32) -> Result<VethPair> {
        VethPair::create(None, ns_b, queues)
    }

    fn create(ns_a: Option<&Netns>, ns_b: Option<&Netns>, queues: u32) -> Result<VethPair> {
        if queues == 0 || queues > 64 {
            bail!("veth queue count {queues} out of range 1..=64");
        }
        let (name_a, name_b) = names::unique_pair()?;
        let q = queues.to_string();
        let mut args = vec!["link", "add", name_a.as_str()];
        if let Some(ns) = ns_a {
            args.extend(["netns", ns.name()]);
        }
        args.extend(["numtxqueues", &q, "numrxqueues", &q]);
        args.extend(["type", "veth", "peer", "name", &name_b]);
        if let Some(ns) = ns_b {
            args.extend(["netns", ns.name()]);
        }
        args.extend(["numtxqueues", &q, "numrxqueues", &q]);
        cmd::ip(None, &args).with_context(|| format!("creating veth pair {name_a}/{name_b}"))?;
        let pair = VethPair {
            a: VethEnd {
                ns: ns_a.map(|n| n.name().to_string()),
                name: name_a,
            },
            b: VethEnd {
                ns: ns_b.map(|n| n.name().to_string()),
                name: name_b,
            },
        };
        // A veth hands its peer packets whose TCP/UDP checksums are left partial for "hardware" to
        // finish. XDP and AF_XDP see those frames as they are, so an NF that forwards or echoes them
        // would send bad checksums. Real NICs complete the checksum before the wire: do it in
        // software here too.
        pair.a.set_tx_checksum(false)?;
        pair.b.set_tx_checksum(false)?;
        Ok(pair)
    }

    /// End `a` (in the first namespace).
    pub fn a(&self) -> &VethEnd {
        &self.a
    }

    /// End `b` (in the second namespace).
    pub fn b(&self) -> &VethEnd {
        &self.b
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        // Absent already when its namespace was deleted first: nothing to do then.
        if self.a.ip(&["link", "show", "dev", &self.a.name]).is_err() {
            return;
        }
        if let Err(e) = self.a.ip(&["link", "del", "dev", &self.a.name]) {
            log::warn!("deleting veth {}: {e:#}", self.a.name);
        }
    }
}

impl VethEnd {
    /// Interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Name of the lab namespace holding this end (`None`: this process's own namespace).
    pub fn ns(&self) -> Option<&str> {
        self.ns.as_deref()
    }

    /// The lab namespace, for the readings that run inside one.
    fn lab_ns(&self) -> Result<&str> {
        self.ns
            .as_deref()
            .with_context(|| format!("{} is in this process's namespace, not a lab's", self.name))
    }

    fn ip(&self, args: &[&str]) -> Result<String> {
        cmd::ip(self.ns.as_deref(), args)
    }

    fn exec(&self, argv: &[&str]) -> Result<String> {
        match &self.ns {
            Some(ns) => cmd::run(&mut cmd::in_netns(ns, argv)),
            None => cmd::run_argv(argv),
        }
    }

    /// Turns IPv6 off on this interface, so the kernel sends nothing on it by itself (router
    /// solicitations, MLD reports) and every frame seen is one a test made.
    pub fn disable_ipv6(&self) -> Result<()> {
        self.exec(&[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{}.disable_ipv6=1", self.name),
        ])?;
        Ok(())
    }

    /// Sets the Ethernet address.
    pub fn set_mac(&self, mac: Mac) -> Result<()> {
        self.ip(&[
            "link",
            "set",
            "dev",
            &self.name,
            "address",
            &mac.to_string(),
        ])?;
        Ok(())
    }

    /// Reads the Ethernet address.
    pub fn mac(&self) -> Result<Mac> {
        let v = self.link_json()?;
        v.get("address")
            .and_then(|a| a.as_str())
            .with_context(|| format!("{} has no address", self.name))?
            .parse()
    }

    /// The interface index (inside its namespace).
    pub fn ifindex(&self) -> Result<u32> {
        let v = self.link_json()?;
        v.get("ifindex")
            .and_then(|i| i.as_u64())
            .and_then(|i| u32::try_from(i).ok())
            .with_context(|| format!("{} has no ifindex", self.name))
    }

    fn link_json(&self) -> Result<serde_json::Value> {
        let out = self.ip(&["-j", "link", "show", "dev", &self.name])?;
        let mut v: serde_json::Value =
            serde_json::from_str(&out).context("parsing `ip -j link show`")?;
        Ok(v.get_mut(0)
            .map(serde_json::Value::take)
            .unwrap_or_default())
    }

    /// Sets the MTU.
    pub fn set_mtu(&self, mtu: u32) -> Result<()> {
        self.ip(&["link", "set", "dev", &self.name, "mtu", &mtu.to_string()])?;
        Ok(())
    }

    /// Adds `addr/prefix_len` (test ranges only; IPv6 with `nodad`).
    pub fn add_addr(&self, addr: IpAddr, prefix_len: u8) -> Result<()> {
        addr::require_test_addr(addr, "interface address")?;
        let cidr = format!("{addr}/{prefix_len}");
        match addr {
            IpAddr::V4(_) => self.ip(&["addr", "add", &cidr, "dev", &self.name])?,
            IpAddr::V6(_) => self.ip(&["-6", "addr", "add", &cidr, "dev", &self.name, "nodad"])?,
        };
        Ok(())
    }

    /// Brings the interface up.
    pub fn up(&self) -> Result<()> {
        self.ip(&["link", "set", "dev", &self.name, "up"])?;
        Ok(())
    }

    /// Brings the interface down.
    pub fn down(&self) -> Result<()> {
        self.ip(&["link", "set", "dev", &self.name, "down"])?;
        Ok(())
    }

    /// Turns GRO on or off (`ethtool -K IF gro on|off`). A veth with GRO on accepts frames that
    /// arrive by XDP_TX/redirect even without an XDP program of its own.
    pub fn set_gro(&self, on: bool) -> Result<()> {
        self.exec(&[
            "ethtool",
            "-K",
            &self.name,
            "gro",
            if on { "on" } else { "off" },
        ])?;
        Ok(())
    }

    /// Moves this interface's receive work (its NAPI instances: the XDP program and the stack) from the
    /// softirq of whichever CPU sent the frame to kernel threads pinned to `cpus`
    /// (`/sys/class/net/IF/threaded`, then `taskset` on the threads that appeared), as a NIC's receive
    /// queue runs on the CPU its interrupt is bound to. NAPI must be on (GRO or an XDP program).
    /// Returns the threads' process ids.
    pub fn set_napi_threads(&self, cpus: &[usize]) -> Result<Vec<u32>> {
        let napi_threads = || -> Vec<u32> {
            std::fs::read_dir("/proc")
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| {
                    let pid: u32 = e.file_name().to_str()?.parse().ok()?;
                    let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
                    comm.starts_with("napi/").then_some(pid)
                })
                .collect()
        };
        let before = napi_threads();
        let path = format!("/sys/class/net/{}/threaded", self.name);
        self.exec(&["sh", "-c", &format!("echo 1 > {path}")])
            .with_context(|| format!("writing {path}"))?;
        let ours: Vec<u32> = napi_threads()
            .into_iter()
            .filter(|p| !before.contains(p))
            .collect();
        if ours.is_empty() {
            bail!(
                "{}: no NAPI thread appeared (is NAPI on: GRO or XDP?)",
                self.name
            );
        }
        let list = cpus
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        for pid in &ours {
            cmd::run_argv(&["taskset", "-pc", &list, &pid.to_string()])
                .with_context(|| format!("pinning NAPI thread {pid} to CPUs {list}"))?;
        }
        Ok(ours)
    }

    /// Turns TX checksum offload on or off (`ethtool -K IF tx on|off`).
    pub fn set_tx_checksum(&self, on: bool) -> Result<()> {
        self.exec(&[
            "ethtool",
            "-K",
            &self.name,
            "tx",
            if on { "on" } else { "off" },
        ])?;
        Ok(())
    }

    /// Adds (or replaces) a permanent neighbour entry `addr -> mac` on this interface.
    pub fn add_neigh(&self, addr: IpAddr, mac: Mac) -> Result<()> {
        addr::require_test_addr(addr, "neighbour address")?;
        self.ip(&[
            "neigh",
            "replace",
            &addr.to_string(),
            "lladdr",
            &mac.to_string(),
            "dev",
            &self.name,
            "nud",
            "permanent",
        ])?;
        Ok(())
    }

    /// `/sys/class/net/IF/statistics/*`.
    pub fn stats(&self) -> Result<Counters> {
        counters::if_stats(self.lab_ns()?, &self.name)
    }

    /// `ethtool -S IF` (per-queue counters).
    pub fn ethtool_stats(&self) -> Result<Counters> {
        counters::ethtool_stats(self.lab_ns()?, &self.name)
    }

    /// The attached XDP program, if any.
    pub fn xdp_prog(&self) -> Result<Option<XdpProg>> {
        counters::xdp_prog(self.lab_ns()?, &self.name)
    }

    /// Attaches program section `section` of BPF object `obj` in native (driver) mode.
    pub fn attach_xdp(&self, obj: &Path, section: &str) -> Result<()> {
        let obj = obj
            .to_str()
            .with_context(|| format!("non-UTF-8 path {}", obj.display()))?;
        self.ip(&[
            "link", "set", "dev", &self.name, "xdpdrv", "obj", obj, "sec", section,
        ])
        .with_context(|| format!("attaching {obj} to {}", self.name))?;
        Ok(())
    }

    /// Sends raw Ethernet frames out of this end (AF_PACKET; see [`capture::send_frames`]).
    pub fn send_frames(&self, frames: &[Vec<u8>]) -> Result<()> {
        capture::send_frames(self.lab_ns()?, &self.name, frames)
    }

    /// Starts a capture of up to `count` frames arriving on this end (see [`Capture`]).
    pub fn capture(&self, count: u32, filter: Option<&str>) -> Result<Capture> {
        Capture::start(self.lab_ns()?, &self.name, count, filter)
    }

    /// Detaches whatever XDP program is attached (native or generic).
    pub fn detach_xdp(&self) -> Result<()> {
        self.ip(&["link", "set", "dev", &self.name, "xdpdrv", "off"])?;
        self.ip(&["link", "set", "dev", &self.name, "xdpgeneric", "off"])?;
        Ok(())
    }
}
