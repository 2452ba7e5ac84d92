//! Forwarders under test, given as command templates so any network function plugs in.
//!
//! A [`Forwarder`] is a name, an argv template and optionally a config generator. Placeholders in
//! any argument are replaced at start: `{ifname}` (the dut interface), `{queues}` (queue count),
//! `{cpus}` (comma-separated CPU per queue) and `{config}` (path of the file written from
//! `needs_config`). Every forwarder runs inside the dut namespace with bpffs mounted, is ready
//! when its XDP program shows on the interface (or after a delay for forwarders without one), and
//! is stopped with SIGINT. [`builtin`] lists the C reference, the XDP_TX hairpin (the kernel-only
//! reference, held by `lab xdp-hairpin`, see [`hairpin`]) and the workspace's network functions, the
//! load balancer in both of its data paths.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::cmd;
use crate::config;
use crate::netns::Netns;
use crate::process::{self, Proc};
use crate::tools;
use crate::veth::VethEnd;
use crate::wait::wait_for;

/// Where a forwarder runs: the interface, its queues and the CPU of each queue's worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FwdCtx {
    /// Interface the forwarder serves (in the dut namespace).
    pub ifname: String,
    /// Number of queues (one worker each).
    pub queues: u32,
    /// CPU of queue q's worker at index q.
    pub cpus: Vec<usize>,
}

/// Generates a forwarder's configuration text (JSON-C) for a context.
pub type ConfigFn = fn(&FwdCtx) -> String;

/// What the bench counts for a forwarder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// Frames arriving back at the generator end (forwarding rate).
    Returned,
    /// Frames the forwarder took from its AF_XDP sockets (XDP redirects on the dut end; rx-drop).
    Consumed,
}

impl Measure {
    /// Lower-case name for tables and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Measure::Returned => "returned",
            Measure::Consumed => "consumed",
        }
    }

    /// Name of the C reference forwarder measured the same way.
    pub fn reference(self) -> &'static str {
        match self {
            Measure::Returned => C_L2FWD,
            Measure::Consumed => C_L2FWD_DROP,
        }
    }
}

/// When a started forwarder counts as ready for traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// An XDP program is attached to the interface (AF_XDP forwarders).
    XdpAttached,
    /// After this delay (forwarders without an XDP program, e.g. AF_PACKET).
    Delay(Duration),
}

/// A forwarder the bench can run.
#[derive(Debug, Clone)]
pub struct Forwarder {
    /// Display name, unique within a bench.
    pub name: String,
    /// Command template: program path first, placeholders anywhere.
    pub argv: Vec<String>,
    /// Config generator; its output is written to a file substituted for `{config}`.
    pub needs_config: Option<ConfigFn>,
    /// What to count.
    pub measure: Measure,
    /// Readiness condition.
    pub ready: Ready,
}

/// Name of the C reference forwarder.
pub const C_L2FWD: &str = "c-l2fwd";
/// Name of the C reference in rx-drop mode.
pub const C_L2FWD_DROP: &str = "c-l2fwd-drop";
/// Name of the XDP_TX hairpin: MAC swap and XDP_TX, no user space at all (`bpf/xdp_hairpin.bpf.c`).
pub const XDP_TX_HAIRPIN: &str = "xdp-tx hairpin";
/// Name of the GRE hairpin: MAC swap, the datagram put in GRE in a fixed outer IPv4 header, XDP_TX
/// (`bpf/xdp_hairpin.bpf.c` built with `HAIRPIN_GRE`): the least a GRE-encapsulating XDP forwarder does.
pub const XDP_TX_GRE_HAIRPIN: &str = "xdp-tx gre hairpin";

fn echo_cfg(ctx: &FwdCtx) -> String {
    config::echo_config(&ctx.ifname, ctx.queues, &ctx.cpus)
}

fn maglev_gre_cfg(ctx: &FwdCtx) -> String {
    config::maglev_config(&ctx.ifname, ctx.queues, &ctx.cpus, "gre")
}

fn maglev_l2dsr_cfg(ctx: &FwdCtx) -> String {
    config::maglev_config(&ctx.ifname, ctx.queues, &ctx.cpus, "l2dsr")
}

fn maglev_gre_xdp_cfg(ctx: &FwdCtx) -> String {
    config::maglev_xdp_config(&ctx.ifname, ctx.queues, &ctx.cpus, "gre")
}

fn maglev_l2dsr_xdp_cfg(ctx: &FwdCtx) -> String {
    config::maglev_xdp_config(&ctx.ifname, ctx.queues, &ctx.cpus, "l2dsr")
}

/// The built-in forwarders; workspace binaries are looked up in `bin_dir`.
pub fn builtin(bin_dir: &Path) -> Vec<Forwarder> {
    let bin = |n: &str| bin_dir.join(n).to_string_lossy().into_owned();
    let l2fwd = |mode: &str| {
        vec![
            tools::L2FWD.to_string(),
            "--dev".into(),
            "{ifname}".into(),
            "--queues".into(),
            "{queues}".into(),
            "--cpus".into(),
            "{cpus}".into(),
            "--mode".into(),
            mode.into(),
        ]
    };
    let echo = |extra: &[&str]| {
        let mut v = vec![bin("nf-echo"), "-c".into(), "{config}".into()];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let maglev = vec![bin("nf-maglev"), "-c".into(), "{config}".into()];
    let hairpin = |extra: &[&str]| {
        let mut v = vec![
            tools::lab_exe(bin_dir).to_string_lossy().into_owned(),
            "xdp-hairpin".into(),
            "--dev".into(),
            "{ifname}".into(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    vec![
        Forwarder::new(C_L2FWD, l2fwd("fwd")),
        Forwarder::new(C_L2FWD_DROP, l2fwd("drop")).measure(Measure::Consumed),
        Forwarder::new(XDP_TX_HAIRPIN, hairpin(&[])),
        Forwarder::new(XDP_TX_GRE_HAIRPIN, hairpin(&["--gre"])),
        Forwarder::new("nf-echo mac-swap", echo(&["--mode", "mac-swap"])).with_config(echo_cfg),
        Forwarder::new(
            "nf-echo af-packet",
            echo(&["--mode", "mac-swap", "--backend", "af-packet"]),
        )
        .with_config(echo_cfg)
        .ready(Ready::Delay(Duration::from_secs(1))),
        Forwarder::new("nf-echo drop", echo(&["--mode", "drop"]))
            .with_config(echo_cfg)
            .measure(Measure::Consumed),
        Forwarder::new("nf-maglev gre", maglev.clone()).with_config(maglev_gre_cfg),
        Forwarder::new("nf-maglev l2dsr", maglev.clone()).with_config(maglev_l2dsr_cfg),
        Forwarder::new("nf-maglev gre xdp", maglev.clone()).with_config(maglev_gre_xdp_cfg),
        Forwarder::new("nf-maglev l2dsr xdp", maglev).with_config(maglev_l2dsr_xdp_cfg),
    ]
}

/// Attaches the XDP_TX hairpin (with `gre`, the GRE hairpin) to `dev` (native mode, in the caller's
/// namespace), calls `hold` and detaches it when `hold` returns. `lab xdp-hairpin` holds until SIGINT or
/// SIGTERM, so the bench starts and stops it like any forwarder, and its readiness (an XDP program on
/// the interface) is the attach itself.
pub fn hairpin(dev: &str, gre: bool, hold: impl FnOnce()) -> Result<()> {
    let obj = if gre {
        tools::XDP_HAIRPIN_GRE_OBJ
    } else {
        tools::XDP_HAIRPIN_OBJ
    };
    cmd::ip(
        None,
        &[
            "link", "set", "dev", dev, "xdpdrv", "obj", obj, "sec", "xdp",
        ],
    )
    .with_context(|| format!("attaching the XDP_TX hairpin to {dev}"))?;
    hold();
    cmd::ip(None, &["link", "set", "dev", dev, "xdpdrv", "off"])
        .with_context(|| format!("detaching the XDP_TX hairpin from {dev}"))?;
    Ok(())
}

/// A started forwarder; dropping it stops the process and removes its config file.
#[derive(Debug)]
pub struct Running {
    /// The forwarder process.
    pub proc: Proc,
    config_path: Option<PathBuf>,
}

impl Running {
    /// Path of the config file written for this run, if any.
    pub fn config_path(&self) -> Option<&Path> {
        self.config_path.as_deref()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(p) = &self.config_path {
            if std::env::var_os("LAB_KEEP_LOGS").is_none() {
                let _ = fs::remove_file(p);
            }
        }
    }
}

impl Forwarder {
    /// A forwarder counting returned frames, ready on XDP attach, without config.
    pub fn new(name: &str, argv: Vec<String>) -> Forwarder {
        Forwarder {
            name: name.to_string(),
            argv,
            needs_config: None,
            measure: Measure::Returned,
            ready: Ready::XdpAttached,
        }
    }

    /// Sets the config generator.
    pub fn with_config(mut self, f: ConfigFn) -> Forwarder {
        self.needs_config = Some(f);
        self
    }

    /// Sets what to count.
    pub fn measure(mut self, m: Measure) -> Forwarder {
        self.measure = m;
        self
    }

    /// Sets the readiness condition.
    pub fn ready(mut self, r: Ready) -> Forwarder {
        self.ready = r;
        self
    }

    /// The program (first template element).
    pub fn program(&self) -> &Path {
        Path::new(self.argv.first().map(String::as_str).unwrap_or(""))
    }

    /// Ok when the program exists and is executable; the error reads "`<path>` not built".
    pub fn available(&self) -> Result<()> {
        tools::require_executable(self.program())
    }

    /// The command line for `ctx`, `{config}` replaced by `config` (required if used).
    pub fn render(&self, ctx: &FwdCtx, config: Option<&Path>) -> Result<Vec<String>> {
        let cpus: Vec<String> = ctx.cpus.iter().map(usize::to_string).collect();
        let cpus = cpus.join(",");
        let queues = ctx.queues.to_string();
        self.argv
            .iter()
            .map(|a| {
                let mut s = a
                    .replace("{ifname}", &ctx.ifname)
                    .replace("{queues}", &queues)
                    .replace("{cpus}", &cpus);
                if s.contains("{config}") {
                    let p = config.with_context(|| {
                        format!("{}: template uses {{config}} but has no config", self.name)
                    })?;
                    s = s.replace("{config}", &p.to_string_lossy());
                }
                Ok(s)
            })
            .collect()
    }

    /// Writes the config (if any) and starts the forwarder inside `ns` with bpffs mounted.
    pub fn start(&self, ns: &Netns, ctx: &FwdCtx) -> Result<Running> {
        let config_path = match self.needs_config {
            Some(f) => {
                let dir = process::log_dir();
                fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
                let safe: String = self
                    .name
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                    .collect();
                let p = dir.join(format!(
                    "{}-{}-{safe}.jsonc",
                    std::process::id(),
                    ctx.ifname
                ));
                fs::write(&p, f(ctx)).with_context(|| format!("writing {}", p.display()))?;
                Some(p)
            }
            None => None,
        };
        let argv = self.render(ctx, config_path.as_deref())?;
        let proc = ns.spawn_with_bpffs(&self.name, &argv)?;
        Ok(Running { proc, config_path })
    }

    /// Waits until the started forwarder is ready on `end`; fails (with its stderr) if it exits
    /// or is not ready within `timeout`.
    pub fn wait_ready(&self, run: &mut Running, end: &VethEnd, timeout: Duration) -> Result<()> {
        let ready = match self.ready {
            Ready::XdpAttached => wait_for(timeout, || {
                !run.proc.is_running() || end.xdp_prog().map(|p| p.is_some()).unwrap_or(false)
            }),
            Ready::Delay(d) => {
                wait_for(d, || !run.proc.is_running());
                true
            }
        };
        if let Some(st) = run.proc.try_wait()? {
            bail!(
                "{} exited before it was ready ({st}): {}",
                self.name,
                tail(&run.proc.stderr(), 5)
            );
        }
        if !ready {
            bail!(
                "{} not ready after {timeout:?} (no XDP program on {}): {}",
                self.name,
                end.name(),
                tail(&run.proc.stderr(), 5)
            );
        }
        Ok(())
    }
}

/// The last `n` lines of `text`, joined with " | " for one-line messages.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> FwdCtx {
        FwdCtx {
            ifname: "lab1_2b".into(),
            queues: 2,
            cpus: vec![0, 1],
        }
    }

    #[test]
    fn templates_are_filled() {
        let f = Forwarder::new(
            "t",
            vec![
                "/bin/x".into(),
                "--dev={ifname}".into(),
                "{queues}".into(),
                "{cpus}".into(),
                "{config}".into(),
            ],
        );
        assert!(
            f.render(&ctx(), None).is_err(),
            "{{config}} without a config must fail"
        );
        let argv = f.render(&ctx(), Some(Path::new("/tmp/c.jsonc"))).unwrap();
        assert_eq!(
            argv,
            ["/bin/x", "--dev=lab1_2b", "2", "0,1", "/tmp/c.jsonc"]
        );
    }

    #[test]
    fn builtins() {
        let fs = builtin(Path::new("/nonexistent"));
        let names: Vec<&str> = fs.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "c-l2fwd",
                "c-l2fwd-drop",
                "xdp-tx hairpin",
                "xdp-tx gre hairpin",
                "nf-echo mac-swap",
                "nf-echo af-packet",
                "nf-echo drop",
                "nf-maglev gre",
                "nf-maglev l2dsr",
                "nf-maglev gre xdp",
                "nf-maglev l2dsr xdp"
            ]
        );
        let c = &fs[0];
        assert!(c.available().is_ok());
        assert_eq!(
            c.render(&ctx(), None).unwrap()[1..],
            ["--dev", "lab1_2b", "--queues", "2", "--cpus", "0,1", "--mode", "fwd"]
        );
        let hairpin = &fs[2];
        assert_eq!(
            hairpin.render(&ctx(), None).unwrap()[1..],
            ["xdp-hairpin", "--dev", "lab1_2b"]
        );
        assert_eq!(hairpin.measure, Measure::Returned);
        assert_eq!(hairpin.ready, Ready::XdpAttached);
        assert_eq!(
            fs[3].render(&ctx(), None).unwrap()[1..],
            ["xdp-hairpin", "--dev", "lab1_2b", "--gre"]
        );
        let echo = &fs[4];
        let err = echo.available().unwrap_err().to_string();
        assert!(err.contains("not built"), "{err}");
        let argv = echo.render(&ctx(), Some(Path::new("/c"))).unwrap();
        assert_eq!(argv[1..], ["-c", "/c", "--mode", "mac-swap"]);
        assert_eq!(
            fs[5].render(&ctx(), Some(Path::new("/c"))).unwrap()[1..],
            ["-c", "/c", "--mode", "mac-swap", "--backend", "af-packet"]
        );
        assert_eq!(fs[6].measure, Measure::Consumed);
        assert_eq!(fs[6].measure.reference(), C_L2FWD_DROP);
        // The XDP data path differs from its twin only in the config's `maglev.data_path`.
        let cfg = |i: usize| -> serde_json::Value {
            let text = (fs[i].needs_config.unwrap())(&ctx());
            serde_json::from_str(&text).unwrap()
        };
        assert_eq!(fs[9].name, "nf-maglev gre xdp");
        assert_eq!(fs[9].argv, fs[7].argv);
        let (mut twin, xdp) = (cfg(7), cfg(9));
        assert_eq!(twin["maglev"].get("data_path"), None);
        twin["maglev"]["data_path"] = "xdp".into();
        assert_eq!(twin, xdp);
        assert_eq!(cfg(10)["maglev"]["vips"][0]["mode"], "l2dsr");
        assert_eq!(cfg(10)["maglev"]["data_path"], "xdp");
        assert!(fs
            .iter()
            .filter(|f| f.name.starts_with("nf-"))
            .all(|f| f.needs_config.is_some()));
    }

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail("a\nb\n\nc\n", 2), "b | c");
        assert_eq!(tail("", 2), "");
    }
}
