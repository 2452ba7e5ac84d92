//! Backend faults for health-check tests and benchmarks: each kind is injected into one backend and
//! undone again, leaving the backend as it was built ([`MaglevLab::backend_fingerprint`] compares).
//!
//! | [`Fault`]        | injected                                               | undone                                   |
//! |------------------|--------------------------------------------------------|------------------------------------------|
//! | `ServerStopped`  | the server stops (SIGINT) and is reaped: port refused  | started again with the same arguments    |
//! | `Paused`         | SIGSTOP: the kernel still completes handshakes, nothing answers | SIGCONT                         |
//! | `LinkDown`       | `eth0` down (the kernel drops its IPv6 addresses then) | up, IPv6 addresses added again           |
//! | `VipRemoved`     | the VIPs leave `lo`: packets to them are not local     | added again (the server's sockets stay bound meanwhile) |
//! | `Http500`        | a flag file in the lab directory: HTTP answers 500     | flag removed                             |
//!
//! Signals go to the server's own PID, as everywhere in the lab. Addresses added with
//! [`MaglevLab::add_backend_addrs`] (many backends on one namespace) are part of the backend's state:
//! a link brought up again gets them back, and in GRE mode `nf-maglev decap` is restarted to take them.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::topology::{http_fail_flag, spawn_server};
use super::{MaglevLab, Mode, BACKEND_IF, VIP4, VIP6};
use crate::cmd;
use crate::process::{Proc, Signal};

/// Grace period of a stopping backend server before harder signals.
const SERVER_STOP_GRACE: Duration = Duration::from_secs(2);

/// A way a backend fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The server process is gone: connections are refused.
    ServerStopped,
    /// The server process is stopped (SIGSTOP): connections open, requests time out.
    Paused,
    /// The backend's link is down: nothing reaches it.
    LinkDown,
    /// The VIPs are removed from the backend's `lo`: packets for them are dropped there.
    VipRemoved,
    /// The server answers HTTP 500.
    Http500,
}

impl Fault {
    /// Every kind, in a fixed order.
    pub const ALL: [Fault; 5] = [
        Fault::ServerStopped,
        Fault::Paused,
        Fault::LinkDown,
        Fault::VipRemoved,
        Fault::Http500,
    ];

    /// Short name (`server-stopped`, `paused`, `link-down`, `vip-removed`, `http-500`).
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::ServerStopped => "server-stopped",
            Fault::Paused => "paused",
            Fault::LinkDown => "link-down",
            Fault::VipRemoved => "vip-removed",
            Fault::Http500 => "http-500",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Fault {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Fault> {
        Fault::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .with_context(|| format!("unknown fault {s:?}"))
    }
}

impl MaglevLab {
    /// Injects `fault` into backend `i`.
    pub fn inject(&mut self, i: usize, fault: Fault) -> Result<()> {
        match fault {
            Fault::ServerStopped => self.stop_server(i),
            Fault::Paused => self.pause_server(i),
            Fault::LinkDown => self.link_down(i),
            Fault::VipRemoved => self.remove_vips(i),
            Fault::Http500 => self.set_http_fail(i, true),
        }
    }

    /// Undoes `fault` on backend `i`.
    pub fn undo(&mut self, i: usize, fault: Fault) -> Result<()> {
        match fault {
            Fault::ServerStopped => self.start_server(i),
            Fault::Paused => self.resume_server(i),
            Fault::LinkDown => self.link_up(i),
            Fault::VipRemoved => self.restore_vips(i),
            Fault::Http500 => self.set_http_fail(i, false),
        }
    }

    /// Stops backend `i`'s server and reaps it.
    pub fn stop_server(&mut self, i: usize) -> Result<()> {
        self.resume_server(i)?;
        let b = &mut self.backends[i];
        b.server
            .stop(SERVER_STOP_GRACE)
            .with_context(|| format!("stopping the server of backend {}", b.spec.name))?;
        Ok(())
    }

    /// Kills backend `i`'s server with SIGKILL (as a crash would) and reaps it.
    pub fn kill_server(&mut self, i: usize) -> Result<()> {
        self.resume_server(i)?;
        let b = &mut self.backends[i];
        b.server.signal(Signal::Kill)?;
        b.server
            .wait_timeout(SERVER_STOP_GRACE)?
            .with_context(|| format!("the server of backend {} survived SIGKILL", b.spec.name))?;
        Ok(())
    }

    /// Starts backend `i`'s server again (after [`MaglevLab::stop_server`] or
    /// [`MaglevLab::kill_server`]); returns once it is ready.
    pub fn start_server(&mut self, i: usize) -> Result<()> {
        let b = &mut self.backends[i];
        if b.server.is_running() {
            bail!("the server of backend {} already runs", b.spec.name);
        }
        b.server = spawn_server(
            &b.host,
            &self.dir.0,
            &b.spec.name,
            &[IpAddr::V4(VIP4), IpAddr::V6(VIP6)],
        )?;
        Ok(())
    }

    /// Stops backend `i`'s server with SIGSTOP (it keeps its sockets; the kernel keeps accepting).
    pub fn pause_server(&mut self, i: usize) -> Result<()> {
        let b = &mut self.backends[i];
        if !b.server.is_running() {
            bail!("the server of backend {} does not run", b.spec.name);
        }
        cmd::run_argv(&["kill", "-s", "STOP", &b.server.pid().to_string()])?;
        b.paused = true;
        Ok(())
    }

    /// Lets backend `i`'s server run again after [`MaglevLab::pause_server`] (SIGCONT); nothing to do
    /// when it is not paused.
    pub fn resume_server(&mut self, i: usize) -> Result<()> {
        let b = &mut self.backends[i];
        if !b.paused {
            return Ok(());
        }
        // Unreaped, so the PID is still the server's own.
        if b.server.is_running() {
            cmd::run_argv(&["kill", "-s", "CONT", &b.server.pid().to_string()])?;
        }
        b.paused = false;
        Ok(())
    }

    /// Takes backend `i`'s link down.
    pub fn link_down(&self, i: usize) -> Result<()> {
        self.backends[i]
            .host
            .ns
            .ip(&["link", "set", "dev", BACKEND_IF, "down"])?;
        Ok(())
    }

    /// Brings backend `i`'s link up and gives it back its IPv6 addresses, which the kernel removed
    /// when the link went down.
    pub fn link_up(&self, i: usize) -> Result<()> {
        let b = &self.backends[i];
        b.host.ns.ip(&["link", "set", "dev", BACKEND_IF, "up"])?;
        let v6 = std::iter::once(IpAddr::V6(b.host.v6)).chain(b.extra_addrs.iter().copied());
        for a in v6.filter(IpAddr::is_ipv6) {
            let prefix = if a == IpAddr::V6(b.host.v6) { 64 } else { 128 };
            b.host.ns.ip(&[
                "-6",
                "addr",
                "replace",
                &format!("{a}/{prefix}"),
                "dev",
                BACKEND_IF,
                "nodad",
            ])?;
        }
        Ok(())
    }

    /// Removes the VIPs from backend `i`'s `lo`.
    pub fn remove_vips(&self, i: usize) -> Result<()> {
        let ns = &self.backends[i].host.ns;
        ns.ip(&["addr", "del", &format!("{VIP4}/32"), "dev", "lo"])?;
        ns.ip(&["-6", "addr", "del", &format!("{VIP6}/128"), "dev", "lo"])?;
        Ok(())
    }

    /// Puts the VIPs back on backend `i`'s `lo`.
    pub fn restore_vips(&self, i: usize) -> Result<()> {
        let ns = &self.backends[i].host.ns;
        ns.ip(&["addr", "replace", &format!("{VIP4}/32"), "dev", "lo"])?;
        ns.ip(&[
            "-6",
            "addr",
            "replace",
            &format!("{VIP6}/128"),
            "dev",
            "lo",
            "nodad",
        ])?;
        Ok(())
    }

    /// Makes backend `i`'s HTTP server answer 500 (`on`) or normally again.
    pub fn set_http_fail(&self, i: usize, on: bool) -> Result<()> {
        let flag = http_fail_flag(&self.dir.0, &self.backends[i].spec.name);
        let r = if on {
            std::fs::write(&flag, b"")
        } else {
            match std::fs::remove_file(&flag) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                r => r,
            }
        };
        r.with_context(|| {
            format!(
                "{} {}",
                if on { "writing" } else { "removing" },
                flag.display()
            )
        })
    }

    /// Adds host addresses (/32, /128) to backend `i`'s interface, so one namespace can stand for many
    /// backends; in GRE mode `nf-maglev decap` restarts to decapsulate for them too.
    pub fn add_backend_addrs(&mut self, i: usize, addrs: &[IpAddr]) -> Result<()> {
        let b = &mut self.backends[i];
        for a in addrs {
            let (family, prefix) = if a.is_ipv4() { ("-4", 32) } else { ("-6", 128) };
            let mut argv = vec![
                family.to_string(),
                "addr".into(),
                "add".into(),
                format!("{a}/{prefix}"),
                "dev".into(),
                BACKEND_IF.into(),
            ];
            if a.is_ipv6() {
                argv.push("nodad".into());
            }
            b.host.ns.ip(&argv)?;
            b.extra_addrs.push(*a);
        }
        self.restart_decap(i)
    }

    /// Removes what [`MaglevLab::add_backend_addrs`] added to backend `i`.
    pub fn remove_backend_addrs(&mut self, i: usize) -> Result<()> {
        let b = &mut self.backends[i];
        for a in std::mem::take(&mut b.extra_addrs) {
            let prefix = if a.is_ipv4() { 32 } else { 128 };
            b.host
                .ns
                .ip(&["addr", "del", &format!("{a}/{prefix}"), "dev", BACKEND_IF])?;
        }
        self.restart_decap(i)
    }

    fn restart_decap(&mut self, i: usize) -> Result<()> {
        if self.mode != Mode::Gre {
            return Ok(());
        }
        if let Some(mut p) = self.backends[i].decap.take() {
            p.stop(SERVER_STOP_GRACE)?;
        }
        self.start_decap(i)
    }

    /// What a fault could change on backend `i`, in one comparable text: every link of its namespace with
    /// its state and sorted addresses, whether its server runs (and is not paused), and whether its HTTP
    /// failure flag is set.
    pub fn backend_fingerprint(&mut self, i: usize) -> Result<String> {
        let b = &mut self.backends[i];
        let out = b.host.ns.ip(&["-j", "addr", "show"])?;
        let links: Value = serde_json::from_str(&out).context("parsing `ip -j addr show`")?;
        let mut lines = Vec::new();
        for l in links.as_array().map(Vec::as_slice).unwrap_or_default() {
            let mut addrs: Vec<String> = l["addr_info"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or("?"), a["prefixlen"]))
                .collect();
            addrs.sort();
            lines.push(format!(
                "{} {} {}",
                l["ifname"].as_str().unwrap_or("?"),
                l["operstate"].as_str().unwrap_or("?"),
                addrs.join(" ")
            ));
        }
        let flag = http_fail_flag(&self.dir.0, &b.spec.name);
        lines.push(format!(
            "server running {} paused {} http-fail {} decap {}",
            b.server.is_running(),
            b.paused,
            flag.exists(),
            b.decap.as_mut().map_or("none", |p| if p.is_running() {
                "running"
            } else {
                "exited"
            }),
        ));
        Ok(lines.join("\n"))
    }

    /// PID of backend `i`'s server while it runs.
    pub fn server_pid(&mut self, i: usize) -> Option<u32> {
        let p: &mut Proc = &mut self.backends[i].server;
        p.is_running().then(|| p.pid())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_and_print() {
        for f in Fault::ALL {
            assert_eq!(f.to_string().parse::<Fault>().unwrap(), f);
        }
        assert!("melted".parse::<Fault>().is_err());
    }
}
