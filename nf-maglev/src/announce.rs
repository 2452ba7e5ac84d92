//! VIP announcement: the addresses of the VIPs this instance is ready to serve, held on a TUN device
//! the process owns, for a routing daemon beside it (BIRD's `direct` protocol) to export.
//!
//! nf-maglev decides, the routing daemon speaks BGP. The device is not persistent: when the process
//! dies, however it dies (SIGKILL, the OOM killer), the kernel deletes it with every address on it and
//! the daemon withdraws the routes without nf-maglev's help (BFD covers a node that dies whole). While it
//! runs, an address is on the device exactly while some VIP of that address is ready (see
//! the health monitor's readiness, [`crate::health::monitor::Monitor::vip_ready`], and the runtime's);
//! a graceful stop removes every address first and keeps serving for the drain period before the
//! workers stop. The addresses are not local to the host: their routes in the kernel's `local` table
//! are deleted, so the host neither answers for them nor takes packets to them as its own (VIP traffic
//! is the data plane's), and health probes to the VIP still leave for the backends.

use std::collections::BTreeSet;
use std::net::IpAddr;

use anyhow::{Context, Result};
use cne::sys::route;
use cne::sys::tun::Tun;
use serde::Deserialize;

use crate::config::Issues;
use crate::health::check::Seconds;

/// Default device name.
pub const DEFAULT_INTERFACE: &str = "nfmvip0";
/// Default seconds between withdrawal and stop.
pub const DEFAULT_DRAIN_MS: u32 = 5000;
/// Longest drain accepted.
pub const MAX_DRAIN_MS: u32 = 3_600_000;
/// MTU of the device (it carries no traffic: it only holds addresses).
const MTU: u32 = 1500;

/// `maglev.announce`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnounceSection {
    /// Name of the TUN device that holds the announced addresses (default `nfmvip0`).
    #[serde(default = "default_interface")]
    pub interface: String,
    /// Seconds between withdrawing on SIGTERM / SIGINT and stopping the workers (default 5).
    #[serde(default = "default_drain")]
    pub drain: Seconds,
    /// A VIP is ready only with some healthy backend (default true).
    #[serde(default = "default_true")]
    pub require_healthy: bool,
}

fn default_interface() -> String {
    DEFAULT_INTERFACE.to_owned()
}
fn default_drain() -> Seconds {
    Seconds(DEFAULT_DRAIN_MS)
}
fn default_true() -> bool {
    true
}

impl AnnounceSection {
    /// Problems with the section, `(key path, message)`; `p` is its path.
    pub fn issues(&self, p: &str, issues: &mut Issues) {
        let n = &self.interface;
        if n.is_empty()
            || n.len() > 15
            || n.contains('%')
            || n.bytes()
                .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b.is_ascii_control())
        {
            issues.push((
                format!("{p}.interface"),
                format!(
                    "{n:?} is not an interface name (1-15 characters, no '/', ':', '%' or spaces)"
                ),
            ));
        }
        if self.drain.0 > MAX_DRAIN_MS {
            issues.push((
                format!("{p}.drain"),
                format!("{} exceeds {}", self.drain, Seconds(MAX_DRAIN_MS)),
            ));
        }
    }
}

/// The device and the addresses on it.
#[derive(Debug)]
pub struct Announcer {
    tun: Tun,
    addrs: BTreeSet<IpAddr>,
}

impl Announcer {
    /// Creates the device (CAP_NET_ADMIN) and brings it up, with no address yet.
    pub fn open(section: &AnnounceSection) -> Result<Announcer> {
        let tun = Tun::create(&section.interface)
            .with_context(|| format!("creating the announcement device {}", section.interface))?;
        tun.set_up(MTU)
            .with_context(|| format!("bringing {} up", section.interface))?;
        Ok(Announcer {
            tun,
            addrs: BTreeSet::new(),
        })
    }

    /// The device's name.
    pub fn interface(&self) -> &str {
        self.tun.name()
    }

    /// The addresses announced now.
    pub fn addresses(&self) -> &BTreeSet<IpAddr> {
        &self.addrs
    }

    /// Puts exactly `want` on the device; returns the changes made (`true`: announced). A failure is
    /// logged and retried at the next call.
    pub fn update(&mut self, want: &BTreeSet<IpAddr>) -> Vec<(IpAddr, bool)> {
        let mut changes = Vec::new();
        let ifindex = self.tun.ifindex();
        for &a in want.difference(&self.addrs.clone()) {
            // The address is there for the routing daemon, not for this host: without its local
            // route, the host's own packets to the VIP (health probes through the data path) are
            // routed like anyone's instead of being delivered here.
            let added = route::add_address(ifindex, a, host_prefix(a))
                .and_then(|()| route::del_local_route(ifindex, a));
            match added {
                Ok(()) => {
                    self.addrs.insert(a);
                    changes.push((a, true));
                }
                Err(e) => log::error!("announce: adding {a} to {}: {e}", self.tun.name()),
            }
        }
        for &a in self.addrs.clone().difference(want) {
            match route::del_address(ifindex, a, host_prefix(a)) {
                Ok(()) => {
                    self.addrs.remove(&a);
                    changes.push((a, false));
                }
                Err(e) => log::error!("announce: removing {a} from {}: {e}", self.tun.name()),
            }
        }
        changes
    }
}

fn host_prefix(a: IpAddr) -> u8 {
    if a.is_ipv4() {
        32
    } else {
        128
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bad_names() {
        let s: AnnounceSection = serde_json::from_str("{}").expect("parses");
        assert_eq!(
            (s.interface.as_str(), s.drain, s.require_healthy),
            ("nfmvip0", Seconds(5000), true)
        );
        for bad in ["", "a/b", "way-too-long-name0", "vip%d", "a b"] {
            let s = AnnounceSection {
                interface: bad.into(),
                ..s.clone()
            };
            let mut i = Issues::new();
            s.issues("maglev.announce", &mut i);
            assert_eq!(i[0].0, "maglev.announce.interface", "{bad:?}");
        }
        assert!(serde_json::from_str::<AnnounceSection>(r#"{"intreface": "x"}"#).is_err());
    }
}
