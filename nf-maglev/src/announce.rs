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
//! is the data plane's), and health probes to the VIP still leave for the backends. What someone
//! undoes behind the process's back (the device deleted, or brought down, which flushes its IPv6
//! addresses and puts IPv4 local routes back) [`Announcer::sweep`] puts back.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

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
/// Longest wait for the kernel to put in the local route of an IPv6 address just added (it does so
/// from a work queue, in well under a millisecond on an idle host), to delete it.
const LOCAL_ROUTE_WAIT: Duration = Duration::from_millis(500);
/// Time between two checks of the device, its addresses and their local routes
/// ([`Announcer::sweep`]).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

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
    swept: Instant,
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
            swept: Instant::now(),
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
                .and_then(|()| hide(ifindex, a, LOCAL_ROUTE_WAIT));
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

    /// Puts back what was undone behind the process's back, at most once a second: the device
    /// deleted (it creates it again) or brought down (it brings it up), announced addresses gone from
    /// it (the kernel flushes IPv6 addresses when the device goes down), local routes the kernel put
    /// back (it does for IPv4 addresses when the device comes up). Each repair is logged as a
    /// warning; returns the addresses repaired. Call it every loop.
    pub fn sweep(&mut self) -> Vec<IpAddr> {
        if self.swept.elapsed() < SWEEP_EVERY {
            return Vec::new();
        }
        self.swept = Instant::now();
        let name = self.tun.name().to_owned();
        if !self.tun.exists() {
            let again = Tun::create(&name).and_then(|tun| tun.set_up(MTU).map(|()| tun));
            match again {
                Ok(tun) => {
                    self.tun = tun;
                    log::warn!("announce: {name} was deleted; created it again");
                }
                Err(e) => {
                    log::error!("announce: creating {name} again: {e}");
                    return Vec::new();
                }
            }
        }
        match self.tun.is_up() {
            Ok(true) => {}
            Ok(false) => match self.tun.set_up(MTU) {
                Ok(()) => log::warn!("announce: {name} was down; brought it up"),
                Err(e) => log::error!("announce: bringing {name} up again: {e}"),
            },
            Err(e) => log::error!("announce: {e}"),
        }
        let ifindex = self.tun.ifindex();
        let mut repaired = Vec::new();
        for &a in &self.addrs {
            let repair = route::ensure_address(ifindex, a, host_prefix(a)).and_then(|added| {
                if added {
                    hide(ifindex, a, LOCAL_ROUTE_WAIT)?;
                    log::warn!("announce: {a} was gone from {name}; added it again");
                    Ok(true)
                } else if route::del_local_route(ifindex, a)? {
                    log::warn!("announce: the kernel put the local route of {a} back; deleted it");
                    Ok(true)
                } else {
                    Ok(false)
                }
            });
            match repair {
                Ok(true) => repaired.push(a),
                Ok(false) => {}
                Err(e) => log::error!("announce: keeping {a} on {name}: {e}"),
            }
        }
        repaired
    }
}

/// Deletes the local route of `addr`, just added to the device `ifindex`: at once for IPv4, whose
/// route comes with the address; for IPv6, as soon as the kernel has put it in, waiting `wait` at
/// most ([`Announcer::sweep`] deletes one that comes later).
fn hide(ifindex: u32, addr: IpAddr, wait: Duration) -> Result<(), route::RouteError> {
    let deadline = Instant::now() + wait;
    while !route::del_local_route(ifindex, addr)? && addr.is_ipv6() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
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

    const DEV: &str = "nfmvt0";

    /// The `local` routes of `ip -n NS route show table local dev DEV`, both families.
    fn local_routes(ns: &lab::Netns) -> Vec<String> {
        ["-4", "-6"]
            .iter()
            .flat_map(|f| {
                ns.ip(&[f, "route", "show", "table", "local", "dev", DEV])
                    .expect("ip route show")
                    .lines()
                    .filter(|l| l.starts_with("local "))
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The announced addresses in the namespace (on the device: it has nothing else), as `ip addr
    /// show` has them.
    fn on_device(ns: &lab::Netns, want: &BTreeSet<IpAddr>) -> BTreeSet<IpAddr> {
        let shown = ns.ip(&["addr", "show"]).expect("ip addr show");
        want.iter()
            .filter(|a| shown.contains(&format!(" {a}/")))
            .copied()
            .collect()
    }

    /// Addresses go on the device without their local routes (the IPv6 ones, which the kernel puts in
    /// later, included), and what someone undoes behind the process's back (the device brought down:
    /// IPv6 addresses flushed, IPv4 local routes back when it comes up; the device deleted) the sweep
    /// puts back.
    #[test]
    #[ignore = "needs root"]
    fn announced_addresses_are_not_local_and_put_back_when_undone() {
        lab::require_root();
        let ns = lab::Netns::new("an").expect("namespace");
        let want: BTreeSet<IpAddr> = (1..=4u8)
            .map(|i| IpAddr::from([198, 18, 100, i]))
            .chain((1..=8u16).map(|i| IpAddr::from([0x2001, 2, 0, 0, 0, 0, 0, 0x100 + i])))
            .collect();
        let section = AnnounceSection {
            interface: DEV.into(),
            drain: default_drain(),
            require_healthy: true,
        };
        let w = want.clone();
        let mut ann = ns.run(move || {
            let mut ann = Announcer::open(&section).expect("announcer");
            let changes = ann.update(&w);
            assert_eq!(changes.len(), w.len(), "{changes:?}");
            ann
        });
        assert_eq!(local_routes(&ns), Vec::<String>::new());
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(local_routes(&ns), Vec::<String>::new(), "came back later");
        assert_eq!(on_device(&ns, &want), want);

        // Each undone: the next sweep puts back every address, without local routes, the device up;
        // with nothing undone it does nothing.
        for undo in [
            &["link", "set", DEV, "down"][..],
            &["link", "del", DEV],
            &[],
        ] {
            if !undo.is_empty() {
                ns.ip(undo).expect("undoing");
                assert!(
                    on_device(&ns, &want).len() < want.len(),
                    "{undo:?} undid nothing"
                );
            }
            std::thread::sleep(SWEEP_EVERY);
            let repaired: BTreeSet<IpAddr>;
            (ann, repaired) = ns.run(move || {
                let r = ann.sweep();
                (ann, r.into_iter().collect())
            });
            let expected = if undo.is_empty() {
                BTreeSet::new()
            } else {
                want.clone()
            };
            assert_eq!(repaired, expected, "{undo:?}");
            let link = ns.ip(&["link", "show", DEV]).expect("ip link");
            assert!(link.contains(",UP"), "{undo:?}: {link}");
            std::thread::sleep(Duration::from_millis(300));
            assert_eq!(local_routes(&ns), Vec::<String>::new(), "{undo:?}");
            assert_eq!(on_device(&ns, &want), want, "{undo:?}");
        }
        drop(ann);
    }
}
