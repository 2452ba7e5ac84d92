//! Network namespaces owned by the lab.
//!
//! A [`Netns`] is created with a unique name (see [`crate::names`]) and deleted by `Drop`, which
//! also destroys every interface still inside it. Commands run inside through `ip netns exec`,
//! which additionally gives them a private mount namespace with the namespace's own /sys; tools
//! that need bpffs get it mounted there ([`Netns::command_with_bpffs`]).

use std::ffi::OsStr;
use std::process::Command;

use anyhow::{Context, Result};

use crate::cmd;
use crate::counters::{self, Counters, XdpProg};
use crate::names;
use crate::process::Proc;

/// A network namespace that lives as long as this value.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `lab<pid>_<n><tag>` (tag: 1-4 lowercase letters/digits) with its loopback up.
    pub fn new(tag: &str) -> Result<Netns> {
        let name = names::unique(tag)?;
        cmd::ip(None, &["netns", "add", &name])
            .with_context(|| format!("creating network namespace {name}"))?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "dev", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace name (as `ip netns list` shows it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME args...`, run to completion; returns stdout.
    pub fn ip<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<String> {
        cmd::ip(Some(&self.name), args)
    }

    /// A command running `argv` inside the namespace (not started).
    pub fn command<S: AsRef<OsStr>>(&self, argv: &[S]) -> Command {
        cmd::in_netns(&self.name, argv)
    }

    /// Like [`Netns::command`], with bpffs mounted at /sys/fs/bpf for the program.
    pub fn command_with_bpffs<S: AsRef<OsStr>>(&self, argv: &[S]) -> Command {
        cmd::in_netns_with_bpffs(&self.name, argv)
    }

    /// Runs `argv` inside the namespace to completion; returns stdout, errors on failure.
    pub fn exec<S: AsRef<OsStr>>(&self, argv: &[S]) -> Result<String> {
        cmd::run(&mut self.command(argv))
    }

    /// Starts `argv` inside the namespace as a [`Proc`] named `name`.
    pub fn spawn<S: AsRef<OsStr>>(&self, name: &str, argv: &[S]) -> Result<Proc> {
        Proc::spawn(name, self.command(argv))
    }

    /// Starts `argv` inside the namespace with bpffs mounted.
    pub fn spawn_with_bpffs<S: AsRef<OsStr>>(&self, name: &str, argv: &[S]) -> Result<Proc> {
        Proc::spawn(name, self.command_with_bpffs(argv))
    }

    /// `/sys/class/net/IF/statistics/*` of an interface in this namespace.
    pub fn if_stats(&self, ifname: &str) -> Result<Counters> {
        counters::if_stats(&self.name, ifname)
    }

    /// `ethtool -S IF` of an interface in this namespace (empty when unsupported).
    pub fn ethtool_stats(&self, ifname: &str) -> Result<Counters> {
        counters::ethtool_stats(&self.name, ifname)
    }

    /// The XDP program attached to an interface in this namespace (from `ip -d link show`).
    pub fn xdp_prog(&self, ifname: &str) -> Result<Option<XdpProg>> {
        counters::xdp_prog(&self.name, ifname)
    }

    /// Runs `f` on a new thread that has entered this namespace (`setns`), and returns what it returns:
    /// devices, sockets and routes it makes are made in the namespace, while the calling thread stays
    /// where it is. A panic in `f` (or failing to enter) panics here.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            // Moves only this thread, which ends when f returns.
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("setns {path}: {e}"));
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }

    /// Names of the interfaces in this namespace.
    pub fn links(&self) -> Result<Vec<String>> {
        let out = self.ip(&["-j", "link", "show"])?;
        let v: serde_json::Value =
            serde_json::from_str(&out).context("parsing `ip -j link show`")?;
        Ok(v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| l.get("ifname").and_then(|n| n.as_str()).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = cmd::ip(None, &["netns", "del", &self.name]) {
            log::warn!("deleting network namespace {}: {e:#}", self.name);
        }
    }
}

/// Names of all network namespaces (`ip netns list`).
pub fn list() -> Result<Vec<String>> {
    let out = cmd::ip(None, &["netns", "list"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect())
}

/// True when a namespace named `name` exists.
pub fn exists(name: &str) -> Result<bool> {
    Ok(list()?.iter().any(|n| n == name))
}
