//! Removal of lab leftovers by name prefix (`lab cleanup --prefix lab`).
//!
//! `Drop` cleans up after panics, but not after SIGKILL or a crashed machine. Everything the lab
//! creates is named with a prefix, so leftovers are found by listing namespaces and root-namespace
//! links. Deleting a namespace destroys its interfaces and their XDP programs. Processes still
//! running inside a namespace keep it alive after its name is gone; they are signalled only when
//! asked (`--kill-procs`), by PID, as listed by `ip netns pids`.

use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::cmd;
use crate::netns;

/// What a cleanup removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// Deleted namespaces.
    pub netns: Vec<String>,
    /// Deleted root-namespace links.
    pub links: Vec<String>,
    /// PIDs sent SIGTERM (SIGKILL if they outlived a grace period).
    pub killed: Vec<u32>,
}

/// Errors unless `prefix` is specific enough to be safe (>= 3 characters of [A-Za-z0-9_-]).
pub fn check_prefix(prefix: &str) -> Result<()> {
    if prefix.len() < 3
        || !prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        bail!("cleanup prefix {prefix:?} must be at least 3 characters of letters, digits, '_' or '-'");
    }
    Ok(())
}

fn pids_in(ns: &str) -> Result<Vec<u32>> {
    let out = cmd::ip(None, &["netns", "pids", ns])?;
    Ok(out
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect())
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Deletes namespaces and root-namespace links whose names start with `prefix`; with
/// `kill_procs`, first terminates the processes running inside those namespaces.
pub fn cleanup(prefix: &str, kill_procs: bool) -> Result<CleanupReport> {
    check_prefix(prefix)?;
    let mut report = CleanupReport::default();
    let namespaces: Vec<String> = netns::list()?
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect();
    if kill_procs {
        for ns in &namespaces {
            for pid in pids_in(ns).with_context(|| format!("listing processes in {ns}"))? {
                if cmd::run_argv(&["kill", "-s", "TERM", &pid.to_string()]).is_ok() {
                    report.killed.push(pid);
                }
            }
        }
        crate::wait::wait_for(Duration::from_secs(3), || {
            report.killed.iter().all(|&p| !alive(p))
        });
        for &pid in &report.killed {
            if alive(pid) {
                let _ = cmd::run_argv(&["kill", "-s", "KILL", &pid.to_string()]);
            }
        }
    }
    for ns in namespaces {
        cmd::ip(None, &["netns", "del", &ns])
            .with_context(|| format!("deleting namespace {ns}"))?;
        report.netns.push(ns);
    }
    let out = cmd::ip(None, &["-j", "link", "show"])?;
    let links: serde_json::Value =
        serde_json::from_str(&out).context("parsing `ip -j link show`")?;
    for name in links
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l.get("ifname").and_then(|n| n.as_str()))
        .filter(|n| n.starts_with(prefix))
    {
        // The peer of a deleted veth disappears with it; a failure for a vanished link is fine.
        if cmd::ip(None, &["link", "del", "dev", name]).is_ok() {
            report.links.push(name.to_string());
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_must_be_specific() {
        assert!(check_prefix("").is_err());
        assert!(check_prefix("la").is_err());
        assert!(check_prefix("lab*").is_err());
        assert!(check_prefix("lab").is_ok());
        assert!(check_prefix("lab123_").is_ok());
    }
}
