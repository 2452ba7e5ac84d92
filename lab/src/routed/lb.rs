//! The load balancers of the routed lab: nf-maglev (configuration, start, graceful stop, kill, admin API,
//! metrics), the stand-in VIP holders, and the client's traffic.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};

use super::{RoutedLab, UDP_PORT, VIP4, VIP6, VIP_DEV};
use crate::maglev::lb::{nf_config, start_nf_maglev};
use crate::maglev::{
    check_interrupt, interrupted, kill_and_reap, tail, Admin, Traffic, HASH_SEED, HTTP_PORT,
    LINK_MTU, START_TIMEOUT,
};
use crate::process::{Proc, Signal};
use crate::wait::wait_for;

/// Seconds nf-maglev keeps serving after it withdrew its VIPs on SIGTERM (`announce.drain`).
pub const DRAIN_S: u64 = 2;
/// Health check interval and timeout of every VIP (seconds): a started load balancer is ready, and
/// announces, within about `rise` intervals.
pub const CHECK_INTERVAL_S: f64 = 0.5;

const HOLDER_PY: &str = include_str!("../../py/vipholder.py");

impl RoutedLab {
    /// The generated nf-maglev configuration of load balancer `i`: GRE to the three backends by their
    /// addresses, every frame to the router's fabric MAC (`gateway_mac`), the same hash seed on every
    /// load balancer, health checks on every VIP (TCP connect, UDP request and answer) and an
    /// `announce` section holding the ready VIPs on [`VIP_DEV`].
    pub fn config(&self, i: usize) -> Value {
        let lb = &self.lbs[i].host;
        let check_tcp = json!({"type": "tcp", "interval": CHECK_INTERVAL_S, "timeout": CHECK_INTERVAL_S,
                               "rise": 2, "fall": 3});
        let check_udp = json!({"type": "udp", "send": "ping", "expect": "backend",
                               "interval": CHECK_INTERVAL_S, "timeout": CHECK_INTERVAL_S,
                               "rise": 2, "fall": 3});
        let vips: Vec<Value> = [
            ("web4", IpAddr::V4(VIP4), "tcp", HTTP_PORT, &check_tcp),
            ("web6", IpAddr::V6(VIP6), "tcp", HTTP_PORT, &check_tcp),
            ("udp4", IpAddr::V4(VIP4), "udp", UDP_PORT, &check_udp),
            ("udp6", IpAddr::V6(VIP6), "udp", UDP_PORT, &check_udp),
        ]
        .iter()
        .map(|&(name, addr, proto, port, check)| {
            let backends: Vec<Value> = self
                .backends
                .iter()
                .map(|b| {
                    json!({"name": b.spec.name, "addr": b.host.addr_like(addr).to_string(),
                           "weight": b.spec.weight})
                })
                .collect();
            json!({"name": name, "addr": addr.to_string(), "proto": proto, "port": port,
                   "mode": "gre", "check": check, "backends": backends})
        })
        .collect();
        nf_config(json!({
            "table_size": 65537,
            "hash_seed": HASH_SEED,
            "conntrack": {"size": 65536},
            "mtu": LINK_MTU,
            "claim_all": false,
            "local_addrs": [lb.v4.to_string(), lb.v6.to_string()],
            "gateway_mac": self.router.fabric_mac.to_string(),
            "announce": {"interface": VIP_DEV, "drain": DRAIN_S, "require_healthy": true},
            // Probes to the backends' own addresses, over the kernel's routes: while a VIP is
            // announced it is a local address of this host, and the local table, which the kernel
            // consults first, would take a probe sent to the VIP.
            "health": {"probe_path": "backend"},
            "vips": vips,
        }))
    }

    /// Replaces load balancer `i`'s configuration file (read at the next start or SIGHUP).
    pub fn write_config(&self, i: usize, config: &Value) -> Result<()> {
        let p = &self.lbs[i].config;
        std::fs::write(p, serde_json::to_string_pretty(config)?)
            .with_context(|| format!("writing {}", p.display()))
    }

    /// Starts nf-maglev on load balancer `i`; returns once it runs, its XDP program is attached and
    /// its admin API answers (not yet announced: see [`RoutedLab::wait_nexthops`]).
    pub fn start_lb(&mut self, i: usize) -> Result<()> {
        if self.lbs[i].nf.as_mut().is_some_and(Proc::is_running) {
            bail!("nf-maglev already runs on load balancer {i}");
        }
        let nf = self
            .nf_maglev
            .clone()
            .context("this lab was built without nf-maglev")?;
        let lb = &self.lbs[i];
        let p = start_nf_maglev(&nf, &lb.host.ns, &lb.config, &[], &format!("lb{i}"))?;
        self.lbs[i].nf = Some(p);
        Ok(())
    }

    /// Graceful stop of nf-maglev on load balancer `i`: SIGTERM, which withdraws its VIPs, drains for
    /// [`DRAIN_S`] and exits; errors unless it exits successfully within the drain and 10 s more.
    pub fn stop_lb(&mut self, i: usize) -> Result<()> {
        if self.lbs[i].nf.is_none() {
            return Ok(());
        }
        self.term_lb(i)?;
        self.wait_lb_exit(i)
    }

    /// Waits for nf-maglev on load balancer `i` to exit after [`RoutedLab::term_lb`] (a second SIGTERM
    /// would cut its drain short, so none is sent) and reaps it; errors unless it exits successfully
    /// within the drain and 10 s more.
    pub fn wait_lb_exit(&mut self, i: usize) -> Result<()> {
        let Some(mut p) = self.lbs[i].nf.take() else {
            return Ok(());
        };
        let bound = Duration::from_secs(DRAIN_S + 10);
        let Some(st) = p.wait_timeout(bound)? else {
            let log = p.stderr();
            p.stop(Duration::from_secs(2))?;
            bail!(
                "nf-maglev on load balancer {i} still running {bound:?} after SIGTERM:\n{}",
                tail(&log, 30)
            );
        };
        ensure!(
            st.success(),
            "nf-maglev on load balancer {i} exited with {st}:\n{}",
            tail(&p.stderr(), 30)
        );
        Ok(())
    }

    /// Sends SIGTERM to nf-maglev on load balancer `i` and returns at once (the caller watches the
    /// withdrawal and the drain); [`RoutedLab::wait_lb_exit`] then reaps it.
    pub fn term_lb(&mut self, i: usize) -> Result<()> {
        let p = self.lbs[i]
            .nf
            .as_mut()
            .with_context(|| format!("nf-maglev does not run on load balancer {i}"))?;
        p.signal(Signal::Term)
    }

    /// Kills nf-maglev on load balancer `i` with SIGKILL and reaps it: nothing of its own clean-up runs.
    pub fn kill_lb(&mut self, i: usize) -> Result<()> {
        let mut p = self.lbs[i]
            .nf
            .take()
            .with_context(|| format!("nf-maglev does not run on load balancer {i}"))?;
        kill_and_reap(&mut p, &format!("nf-maglev on load balancer {i}"))
    }

    /// True while nf-maglev runs on load balancer `i`.
    pub fn lb_running(&mut self, i: usize) -> bool {
        self.lbs[i].nf.as_mut().is_some_and(Proc::is_running)
    }

    /// stderr of nf-maglev on load balancer `i` (its log).
    pub fn lb_log(&self, i: usize) -> String {
        self.lbs[i]
            .nf
            .as_ref()
            .map(Proc::stderr)
            .unwrap_or_default()
    }

    /// The admin API of nf-maglev on load balancer `i` (requests, `/metrics`, `/api/state`).
    pub fn admin(&self, i: usize) -> Admin<'_> {
        Admin {
            ns: &self.lbs[i].host.ns,
            lb: i,
        }
    }

    /// Starts the stand-in on load balancer `i`: `py/vipholder.py` holding both VIPs on [`VIP_DEV`].
    pub fn start_holder(&mut self, i: usize) -> Result<()> {
        let script = self.dir.0.join("vipholder.py");
        if !script.exists() {
            std::fs::write(&script, HOLDER_PY)
                .with_context(|| format!("writing {}", script.display()))?;
        }
        let argv = [
            "python3".to_string(),
            "-u".into(),
            script.to_string_lossy().into_owned(),
            "--dev".into(),
            VIP_DEV.into(),
            "--addr".into(),
            VIP4.to_string(),
            "--addr".into(),
            VIP6.to_string(),
        ];
        let mut p = self.lbs[i]
            .host
            .ns
            .spawn(&format!("vipholder-lb{i}"), &argv)?;
        let ready = wait_for(START_TIMEOUT, || {
            p.stdout().contains("\"ready\"") || !p.is_running() || interrupted()
        });
        check_interrupt()?;
        if !ready || !p.is_running() {
            bail!(
                "VIP holder on load balancer {i} did not start: {}",
                tail(&p.stderr(), 20)
            );
        }
        self.lbs[i].holder = Some(p);
        Ok(())
    }

    /// Kills the stand-in of load balancer `i` with SIGKILL and reaps it; returns when it is gone.
    pub fn kill_holder(&mut self, i: usize) -> Result<Instant> {
        let mut p = self.lbs[i]
            .holder
            .take()
            .with_context(|| format!("no VIP holder on load balancer {i}"))?;
        let at = Instant::now();
        kill_and_reap(&mut p, &format!("VIP holder on load balancer {i}"))?;
        Ok(at)
    }

    /// Whether device [`VIP_DEV`] exists on load balancer `i`.
    pub fn vip_dev_exists(&self, i: usize) -> bool {
        self.lbs[i]
            .host
            .ns
            .links()
            .is_ok_and(|l| l.iter().any(|n| n == VIP_DEV))
    }

    /// Brings device [`VIP_DEV`] of load balancer `i` down behind nf-maglev's back (`ip link set ...
    /// down`, as an operator or a network manager might): the kernel flushes its IPv6 addresses.
    pub fn vip_dev_down(&self, i: usize) -> Result<()> {
        self.lbs[i]
            .host
            .ns
            .ip(&["link", "set", VIP_DEV, "down"])
            .map(drop)
    }

    /// Deletes device [`VIP_DEV`] of load balancer `i` behind nf-maglev's back (`ip link del`).
    pub fn vip_dev_delete(&self, i: usize) -> Result<()> {
        self.lbs[i].host.ns.ip(&["link", "del", VIP_DEV]).map(drop)
    }

    /// The client's traffic: new connections, datagrams, held connections and streams to the VIPs.
    pub fn traffic(&self) -> Traffic<'_> {
        Traffic {
            ns: &self.client.ns,
            dir: &self.dir.0,
        }
    }
}
