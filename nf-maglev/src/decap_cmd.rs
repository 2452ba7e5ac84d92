//! `nf-maglev decap`: what a backend runs in GRE mode.
//!
//! The load balancer wraps client packets in GRE towards the backend; the kernels here have no GRE
//! module, so the backend attaches [`DecapProgram`] to its interface instead. The program strips the outer
//! header of GRE packets addressed to the listed local addresses (by default every address of the
//! interface) and passes the inner packet to the stack, which answers the client directly. Everything else
//! passes untouched. The command prints the program's counters every second and detaches it on SIGINT or
//! SIGTERM (returning normally, so the program's `Drop` runs).

use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cne::bpf::decap::DecapProgram;
use cne::bpf::filter::XdpMode;
use serde::Deserialize;

/// Options of the subcommand.
#[derive(Debug, Clone)]
pub(crate) struct DecapArgs {
    pub(crate) dev: String,
    pub(crate) addrs: Vec<IpAddr>,
    pub(crate) skb: bool,
    pub(crate) force: bool,
    pub(crate) interval: Duration,
}

/// One address of `ip -json addr show`.
#[derive(Debug, Deserialize)]
struct AddrInfo {
    local: IpAddr,
    #[serde(default)]
    scope: String,
}

/// One interface of `ip -json addr show`.
#[derive(Debug, Deserialize)]
struct Link {
    #[serde(default)]
    addr_info: Vec<AddrInfo>,
}

/// The addresses of `ip -json addr show dev <dev>` output, IPv6 link-local ones left out (GRE is never
/// sent to them).
fn parse_ip_json(text: &str) -> Result<Vec<IpAddr>> {
    let links: Vec<Link> = serde_json::from_str(text).context("parsing `ip -json addr` output")?;
    Ok(links
        .into_iter()
        .flat_map(|l| l.addr_info)
        .filter(|a| a.scope != "link")
        .map(|a| a.local)
        .collect())
}

/// The addresses configured on `dev`, from iproute2.
fn interface_addrs(dev: &str) -> Result<Vec<IpAddr>> {
    let out = std::process::Command::new("ip")
        .args(["-json", "addr", "show", "dev", dev])
        .output()
        .context(
            "running `ip -json addr show` to list the interface's addresses (or pass --addr)",
        )?;
    if !out.status.success() {
        bail!(
            "`ip addr show dev {dev}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse_ip_json(&String::from_utf8_lossy(&out.stdout))
}

/// Runs the subcommand until SIGINT or SIGTERM.
pub(crate) fn run(args: &DecapArgs) -> Result<()> {
    let addrs = if args.addrs.is_empty() {
        let a = interface_addrs(&args.dev)?;
        if a.is_empty() {
            bail!(
                "{} has no addresses to decapsulate for; pass --addr",
                args.dev
            );
        }
        a
    } else {
        args.addrs.clone()
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("installing the SIGINT/SIGTERM handler")?;
    }
    let mode = if args.skb {
        XdpMode::Skb
    } else {
        XdpMode::Native
    };
    let prog = DecapProgram::attach(&args.dev, mode, args.force, &addrs)
        .with_context(|| format!("attaching the GRE decap program to {}", args.dev))?;
    let list: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    println!(
        "decap: {} program id {} ({mode} mode) for {}",
        args.dev,
        prog.prog_id(),
        list.join(", ")
    );
    let mut last = Instant::now();
    let mut stdout = std::io::stdout();
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
        if last.elapsed() >= args.interval {
            last = Instant::now();
            match prog.stats() {
                Ok(s) => {
                    // A closed stdout (piped into a process that exited) must not stop the program.
                    let _ = writeln!(
                        stdout,
                        "decap {}: decapped {} passed {} malformed {}",
                        args.dev, s.decapped, s.passed, s.malformed
                    );
                    let _ = stdout.flush();
                }
                Err(e) => log::warn!("reading the decap counters: {}", cne::error_chain(&e)),
            }
        }
    }
    let s = prog.stats().unwrap_or_default();
    drop(prog);
    println!(
        "decap: {} detached (decapped {} passed {} malformed {})",
        args.dev, s.decapped, s.passed, s.malformed
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_json_addresses_without_link_local() {
        let text = r#"[{"ifindex":2,"ifname":"eth0","addr_info":[
            {"family":"inet","local":"198.18.1.1","prefixlen":24,"scope":"global"},
            {"family":"inet6","local":"2001:2:1::1","prefixlen":64,"scope":"global"},
            {"family":"inet6","local":"fe80::1","prefixlen":64,"scope":"link"}]}]"#;
        let a = parse_ip_json(text).expect("parses");
        assert_eq!(
            a,
            [
                "198.18.1.1".parse::<IpAddr>().expect("ip"),
                "2001:2:1::1".parse().expect("ip")
            ]
        );
        assert!(parse_ip_json("[{}]").expect("parses").is_empty());
        assert!(parse_ip_json("not json").is_err());
    }
}
