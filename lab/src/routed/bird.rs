//! BIRD 2 in the routed lab: the router's and the load balancers' configurations, and running BIRD.
//!
//! Every BIRD is a foreground process of the lab (`bird -f`) with its configuration, control socket
//! (`-s`) and pid file (`-P`) in the lab directory, named for its role (`router.*`, `lb0.*`, ...).
//! Sessions are eBGP over each family's fabric addresses (one session per family, so every route's next
//! hop is an address of its own family), with BFD, and timers short enough that a restarted peer is
//! back within seconds. Only host routes of the VIP ranges pass, on both sides.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::{
    fabric_net, RoutedLab, BFD_INTERVAL_MS, BFD_MULTIPLIER, LB_AS, ROUTER_AS, ROUTER_FABRIC_IF,
};
use crate::maglev::{check_interrupt, interrupted, spawn_logged, tail, LB_IF, START_TIMEOUT};
use crate::netns::Netns;
use crate::process::{Proc, Signal};
use crate::wait::wait_for;

/// The VIP ranges; only their host routes are exported and imported.
const FILTERS: &str = "\
filter vip4 { if net ~ [ 198.18.100.0/24{32,32} ] then accept; reject; }
filter vip6 { if net ~ [ 2001:2:0:100::/64{128,128} ] then accept; reject; }
";

/// Session timers of both sides: reconnect within a second or two after a peer restarts.
const TIMERS: &str = "hold time 9; keepalive time 3; connect delay time 1; connect retry time 2; \
                      error wait time 1, 4; error forget time 10;";

fn bfd_protocol(ifname: &str) -> String {
    format!(
        "protocol bfd {{\n  interface \"{ifname}\" {{ min rx interval {BFD_INTERVAL_MS} ms; \
         min tx interval {BFD_INTERVAL_MS} ms; idle tx interval 300 ms; multiplier {BFD_MULTIPLIER}; }};\n}}\n"
    )
}

/// The router's configuration: a kernel protocol per family exporting with `merge paths on` (one route,
/// one nexthop per load balancer), and two sessions (IPv4, IPv6) with BFD per load balancer `(v4, v6)`.
pub fn router_config(lbs: &[(Ipv4Addr, Ipv6Addr)]) -> String {
    let (r4, r6) = fabric_net(1);
    let mut c = format!(
        "router id {r4};\nlog stderr all;\n{FILTERS}\
         protocol device {{ scan time 10; }}\n\
         protocol kernel k4 {{ ipv4 {{ import none; export all; }}; merge paths on; }}\n\
         protocol kernel k6 {{ ipv6 {{ import none; export all; }}; merge paths on; }}\n{}",
        bfd_protocol(ROUTER_FABRIC_IF)
    );
    for (i, (v4, v6)) in lbs.iter().enumerate() {
        let asn = LB_AS + u32::try_from(i).unwrap_or_default();
        c.push_str(&format!(
            "protocol bgp lb{i}v4 {{ local {r4} as {ROUTER_AS}; neighbor {v4} as {asn}; bfd on; {TIMERS}\n  \
             ipv4 {{ import filter vip4; export none; }}; }}\n\
             protocol bgp lb{i}v6 {{ local {r6} as {ROUTER_AS}; neighbor {v6} as {asn}; bfd on; {TIMERS}\n  \
             ipv6 {{ import filter vip6; export none; }}; }}\n"
        ));
    }
    c
}

/// Load balancer `i`'s configuration: `protocol direct` on `nfmvip*` (the VIP host routes only) and two
/// sessions with BFD to the router that export what `direct` found and import nothing.
pub fn lb_config(i: usize, v4: Ipv4Addr, v6: Ipv6Addr) -> String {
    let (r4, r6) = fabric_net(1);
    let asn = LB_AS + u32::try_from(i).unwrap_or_default();
    format!(
        "router id {v4};\nlog stderr all;\n{FILTERS}\
         protocol device {{ scan time 10; }}\n\
         protocol direct vips {{ ipv4 {{ import filter vip4; }}; ipv6 {{ import filter vip6; }}; \
         interface \"nfmvip*\"; }}\n{}\
         protocol bgp up4 {{ local {v4} as {asn}; neighbor {r4} as {ROUTER_AS}; bfd on; {TIMERS}\n  \
         ipv4 {{ import none; export where proto = \"vips\"; }}; }}\n\
         protocol bgp up6 {{ local {v6} as {asn}; neighbor {r6} as {ROUTER_AS}; bfd on; {TIMERS}\n  \
         ipv6 {{ import none; export where proto = \"vips\"; }}; }}\n",
        bfd_protocol(LB_IF)
    )
}

/// `birdc -s SOCKET COMMAND` in `ns`.
pub fn birdc(ns: &Netns, socket: &Path, command: &str) -> Result<String> {
    let mut argv = vec![
        "birdc".to_string(),
        "-s".into(),
        socket.to_string_lossy().into_owned(),
    ];
    argv.extend(command.split_whitespace().map(str::to_string));
    ns.exec(&argv)
}

/// Writes `DIR/NAME.conf`, checks it (`bird -p`), starts `bird -f` in `ns` with `DIR/NAME.ctl` and
/// `DIR/NAME.pid`, and returns once its control socket answers.
fn start_bird(ns: &Netns, dir: &Path, name: &str, config: &str) -> Result<Proc> {
    let conf = dir.join(format!("{name}.conf"));
    let ctl = dir.join(format!("{name}.ctl"));
    let pid = dir.join(format!("{name}.pid"));
    std::fs::write(&conf, config).with_context(|| format!("writing {}", conf.display()))?;
    let conf_s = conf.to_string_lossy().into_owned();
    ns.exec(&["bird", "-p", "-c", &conf_s])
        .with_context(|| format!("BIRD rejects {}", conf.display()))?;
    let argv = [
        "bird".to_string(),
        "-f".into(),
        "-c".into(),
        conf_s,
        "-s".into(),
        ctl.to_string_lossy().into_owned(),
        "-P".into(),
        pid.to_string_lossy().into_owned(),
    ];
    let mut p = spawn_logged(&format!("bird-{name}"), ns.command(&argv))?;
    let up = wait_for(START_TIMEOUT, || {
        !p.is_running()
            || interrupted()
            || birdc(ns, &ctl, "show status").is_ok_and(|s| s.contains("Daemon is up"))
    });
    check_interrupt()?;
    if !up || !p.is_running() {
        bail!("BIRD {name} did not start: {}", tail(&p.stderr(), 20));
    }
    Ok(p)
}

/// Names of the BGP protocols of a `show protocols` output that are not Established.
fn sessions_down(show_protocols: &str) -> Vec<String> {
    show_protocols
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("BGP"))
        .filter(|l| !l.contains("Established"))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

impl RoutedLab {
    pub(super) fn start_router_bird(&mut self) -> Result<()> {
        let peers: Vec<(Ipv4Addr, Ipv6Addr)> =
            self.lbs.iter().map(|l| (l.host.v4, l.host.v6)).collect();
        let p = start_bird(
            &self.router.ns,
            &self.dir.0,
            "router",
            &router_config(&peers),
        )?;
        self.router.bird = Some(p);
        Ok(())
    }

    /// Starts BIRD on load balancer `i` and waits until both its sessions are Established.
    pub fn start_bird(&mut self, i: usize) -> Result<()> {
        if self.lbs[i].bird.as_mut().is_some_and(Proc::is_running) {
            bail!("BIRD already runs on load balancer {i}");
        }
        let host = &self.lbs[i].host;
        let p = start_bird(
            &host.ns,
            &self.dir.0,
            &format!("lb{i}"),
            &lb_config(i, host.v4, host.v6),
        )?;
        self.lbs[i].bird = Some(p);
        self.wait_sessions(i, Duration::from_secs(30))
    }

    /// Waits until both BGP sessions of load balancer `i` are Established (as its BIRD sees them).
    pub fn wait_sessions(&self, i: usize, timeout: Duration) -> Result<()> {
        let mut last = String::new();
        let ok = wait_for(timeout, || {
            last = self.birdc_lb(i, "show protocols").unwrap_or_default();
            interrupted() || (last.contains("BGP") && sessions_down(&last).is_empty())
        });
        check_interrupt()?;
        if !ok {
            bail!("load balancer {i}: BGP sessions not established after {timeout:?}:\n{last}");
        }
        Ok(())
    }

    /// Stops BIRD on load balancer `i` (SIGTERM: it closes its sessions, the router withdraws at once).
    pub fn stop_bird(&mut self, i: usize) -> Result<()> {
        if let Some(mut p) = self.lbs[i].bird.take() {
            p.signal(Signal::Term)?;
            p.wait_timeout(Duration::from_secs(5))?
                .with_context(|| format!("BIRD on load balancer {i} did not stop"))?;
        }
        Ok(())
    }

    /// Load balancer `i`'s BIRD: `birdc` command output.
    pub fn birdc_lb(&self, i: usize, command: &str) -> Result<String> {
        birdc(
            &self.lbs[i].host.ns,
            &self.dir.0.join(format!("lb{i}.ctl")),
            command,
        )
    }

    /// stderr of BIRD on load balancer `i` (its log).
    pub fn bird_log(&self, i: usize) -> String {
        self.lbs[i]
            .bird
            .as_ref()
            .map(Proc::stderr)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configurations_name_every_peer_and_filter() {
        let lbs = [fabric_net(11), fabric_net(12)];
        let r = router_config(&lbs);
        for s in [
            "merge paths on",
            "neighbor 198.18.20.11 as 65001",
            "neighbor 2001:2:0:20::12 as 65002",
            "import filter vip6",
            "multiplier 3",
            "min rx interval 100 ms",
        ] {
            assert!(r.contains(s), "{s:?} missing from\n{r}");
        }
        let l = lb_config(1, lbs[1].0, lbs[1].1);
        for s in [
            "interface \"nfmvip*\"",
            "local 198.18.20.12 as 65002",
            "neighbor 2001:2:0:20::1 as 65000",
            "import none",
        ] {
            assert!(l.contains(s), "{s:?} missing from\n{l}");
        }
    }

    #[test]
    fn sessions_not_established() {
        let out = "BIRD 2.0.12 ready.\nName       Proto      Table      State  Since         Info\n\
                   device1    Device     ---        up     10:00:00.000\n\
                   up4        BGP        ---        up     10:00:01.000  Established\n\
                   up6        BGP        ---        start  10:00:01.000  Active        Socket: Connection refused\n";
        assert_eq!(sessions_down(out), vec!["up6".to_string()]);
    }
}
