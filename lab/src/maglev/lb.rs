//! nf-maglev on the load balancers (configuration, start, stop, kill, reload signals, logs) and
//! `nf-maglev decap` on GRE backends.

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};

use super::admin::admin_request;
use super::{
    check_interrupt, interrupted, kill_and_reap, spawn_logged, tail, Host, MaglevLab, Mode,
    ADMIN_ADDR, HASH_SEED, LB_IF, LB_QUEUES, LINK_MTU, START_TIMEOUT, VIPS,
};
use crate::cmd;
use crate::netns::Netns;
use crate::process::Proc;
use crate::wait::wait_for;

/// Starts `nf-maglev decap` on backend `host` (named `name`) for its own addresses and `extra` ones;
/// returns once its XDP program is attached.
pub(crate) fn start_decap(
    nf_maglev: &Path,
    host: &Host,
    extra: &[IpAddr],
    name: &str,
) -> Result<Proc> {
    crate::tools::require_executable(nf_maglev)
        .context("GRE backends decapsulate with `nf-maglev decap`")?;
    let mut argv = vec![
        nf_maglev.to_string_lossy().into_owned(),
        "decap".into(),
        "--dev".into(),
        host.ifname.into(),
    ];
    let addrs = [IpAddr::V4(host.v4), IpAddr::V6(host.v6)];
    for a in addrs.iter().chain(extra) {
        argv.extend(["--addr".to_string(), a.to_string()]);
    }
    let cmd = host.ns.command_with_bpffs(&argv);
    let mut p = spawn_logged(&format!("decap-{name}"), cmd)?;
    let attached = wait_for(START_TIMEOUT, || {
        matches!(host.ns.xdp_prog(host.ifname), Ok(Some(_))) || !p.is_running() || interrupted()
    });
    check_interrupt()?;
    if !attached || !p.is_running() {
        bail!(
            "`nf-maglev decap` on backend {name} did not attach: {}",
            tail(&p.stderr(), 20)
        );
    }
    Ok(p)
}

/// The data path every lab load balancer runs: `LAB_DATA_PATH` (`af_xdp` or `xdp`) when set, else
/// nf-maglev's default. The test command runs the load-balancer lab tests once with each.
pub fn data_path() -> Option<String> {
    std::env::var("LAB_DATA_PATH").ok().filter(|s| !s.is_empty())
}

/// The CNDP sections of an nf-maglev configuration for [`LB_IF`] with [`LB_QUEUES`] queues, one worker
/// each, around the given `maglev` section (with [`data_path`] added when set).
pub(crate) fn nf_config(mut maglev: Value) -> Value {
    if let Some(path) = data_path() {
        maglev["data_path"] = path.into();
    }
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

/// Starts nf-maglev in `ns` with configuration file `config`, the admin API on [`ADMIN_ADDR`] and
/// `extra` arguments; returns once the admin API answers (`admin` asks it) and the XDP program is
/// attached to [`LB_IF`]. `what` names the load balancer in errors.
pub(crate) fn start_nf_maglev(
    nf_maglev: &Path,
    ns: &Netns,
    config: &Path,
    extra: &[&str],
    what: &str,
) -> Result<Proc> {
    crate::tools::require_executable(nf_maglev).context("the load balancer is nf-maglev")?;
    let mut argv = vec![
        nf_maglev.to_string_lossy().into_owned(),
        "-c".into(),
        config.to_string_lossy().into_owned(),
        "--listen".into(),
        ADMIN_ADDR.into(),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    let cmd = ns.command_with_bpffs(&argv);
    let mut proc = spawn_logged(&format!("nf-maglev-{what}"), cmd)?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if !proc.is_running() {
            bail!(
                "nf-maglev on {what} exited during start-up:\n{}",
                tail(&proc.stderr(), 30)
            );
        }
        let attached = matches!(ns.xdp_prog(LB_IF), Ok(Some(_)));
        if attached && matches!(admin_request(ns, "GET", "/api/state", None), Ok((200, _))) {
            return Ok(proc);
        }
        if Instant::now() >= deadline {
            let log = proc.stderr();
            // Not left running half-started: the caller gets an error, not a process.
            if let Err(e) = proc.stop(Duration::from_secs(2)) {
                log::debug!("{e:#}");
            }
            bail!(
                "nf-maglev on {what} not ready after {START_TIMEOUT:?} (XDP attached: \
                 {attached}):\n{}",
                tail(&log, 30)
            );
        }
        check_interrupt()?;
        std::thread::sleep(Duration::from_millis(200));
    }
}

impl MaglevLab {
    pub(super) fn start_decap(&mut self, i: usize) -> Result<()> {
        let b = &mut self.backends[i];
        b.decap = Some(start_decap(
            &self.nf_maglev,
            &b.host,
            &b.extra_addrs,
            &b.spec.name,
        )?);
        Ok(())
    }

    /// The generated nf-maglev configuration for load balancer `i`: CNDP sections for `lb0` with
    /// [`LB_QUEUES`] queues and one worker each, and a `maglev` section with the four [`VIPS`], every
    /// backend in every VIP (by its address of the VIP's family and its MAC), the spec's `health` object
    /// and `check` objects when given (a VIP without one is not checked). In l2dsr mode the configuration does not depend on `i` at all.
    pub fn config(&self, i: usize) -> Value {
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
                let mut vip = json!({"name": name, "addr": addr.to_string(), "proto": proto,
                                     "port": port, "mode": self.mode.as_str(), "backends": backends});
                // Unchecked unless asked: probes would add connections the other tests count.
                vip["check"] = self
                    .checks
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| json!({"type": "none"}));
                vip
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
        if let Some(health) = &self.health {
            maglev["health"] = health.clone();
        }
        if self.mode == Mode::Gre {
            maglev["local_addrs"] = json!([lb.v4.to_string(), lb.v6.to_string()]);
        }
        nf_config(maglev)
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
        let lb = &self.lbs[i];
        let proc = start_nf_maglev(
            &self.nf_maglev,
            &lb.host.ns,
            &lb.config,
            extra,
            &format!("lb{i}"),
        )?;
        self.lbs[i].nf = Some(proc);
        Ok(())
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
        kill_and_reap(&mut p, &format!("nf-maglev on load balancer {i}"))
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
}
