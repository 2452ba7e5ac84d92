//! Interface counters and XDP attachment state, read the way an operator would.
//!
//! Sources: `/sys/class/net/IF/statistics/*` (one `grep . *` inside the namespace reads them all),
//! `ethtool -S IF` (per-queue counters; veth reports `rx_queue_N_xdp_packets`,
//! `rx_queue_N_xdp_redirect`, ...) and `ip -d -j link show` for the attached XDP program. A veth
//! counts every frame its XDP program sees in `rx_packets`, whatever the verdict, which is what
//! makes the sink programs of `bpf/xdp_sink.bpf.c` usable as counters.

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use crate::cmd;

/// A set of named counters (missing names read as 0).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters(pub BTreeMap<String, u64>);

impl Counters {
    /// The counter `name`, 0 when absent.
    pub fn get(&self, name: &str) -> u64 {
        self.0.get(name).copied().unwrap_or(0)
    }

    /// Sum of every counter whose name ends with `suffix` (e.g. `_xdp_redirect` over all queues).
    pub fn sum_suffix(&self, suffix: &str) -> u64 {
        self.0
            .iter()
            .filter(|(k, _)| k.ends_with(suffix))
            .map(|(_, v)| *v)
            .sum()
    }

    /// `self - earlier` per counter (saturating: counters never go backwards on a live device).
    pub fn delta(&self, earlier: &Counters) -> Counters {
        Counters(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), v.saturating_sub(earlier.get(k))))
                .collect(),
        )
    }

    /// Parses `name:value` lines (the output of `grep . *` in a statistics directory).
    pub fn parse_sysfs(text: &str) -> Counters {
        Counters(
            text.lines()
                .filter_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    Some((k.trim().to_string(), v.trim().parse().ok()?))
                })
                .collect(),
        )
    }

    /// Parses `ethtool -S` output (`     name: value` lines after a header).
    pub fn parse_ethtool(text: &str) -> Counters {
        Counters(
            text.lines()
                .skip_while(|l| !l.contains("statistics"))
                .skip(1)
                .filter_map(|l| {
                    let (k, v) = l.rsplit_once(':')?;
                    Some((k.trim().to_string(), v.trim().parse().ok()?))
                })
                .collect(),
        )
    }
}

/// Reads `/sys/class/net/IF/statistics/*` inside namespace `ns`.
pub fn if_stats(ns: &str, ifname: &str) -> Result<Counters> {
    let dir = format!("/sys/class/net/{ifname}/statistics");
    let out = cmd::run(&mut cmd::in_netns(
        ns,
        &["sh", "-c", "cd \"$1\" && grep . *", "sh", &dir],
    ))
    .with_context(|| format!("reading counters of {ifname} in {ns}"))?;
    Ok(Counters::parse_sysfs(&out))
}

/// Reads `ethtool -S IF` inside namespace `ns`; an empty set when the driver has no statistics.
pub fn ethtool_stats(ns: &str, ifname: &str) -> Result<Counters> {
    match cmd::run(&mut cmd::in_netns(ns, &["ethtool", "-S", ifname])) {
        Ok(out) => Ok(Counters::parse_ethtool(&out)),
        Err(e)
            if e.to_string().contains("no stats available")
                || e.to_string().contains("Operation not supported") =>
        {
            Ok(Counters::default())
        }
        Err(e) => Err(e.context(format!("ethtool -S {ifname} in {ns}"))),
    }
}

/// An XDP program attached to an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdpProg {
    /// Kernel program id.
    pub id: u64,
    /// Program name as loaded.
    pub name: String,
    /// Attach mode as `ip` reports it (1 = native/driver, 2 = generic/SKB, 3 = offload, 4 = multi).
    pub mode: u64,
}

/// Parses `ip -d -j link show dev IF`: the first attached XDP program, if any.
pub fn parse_xdp(json: &str) -> Result<Option<XdpProg>> {
    let v: serde_json::Value = serde_json::from_str(json).context("parsing `ip -j link` output")?;
    let Some(xdp) = v.get(0).and_then(|l| l.get("xdp")) else {
        return Ok(None);
    };
    let mode = xdp.get("mode").and_then(|m| m.as_u64()).unwrap_or(0);
    let prog = xdp.get("prog").or_else(|| {
        xdp.get("attached")
            .and_then(|a| a.get(0))
            .and_then(|a| a.get("prog"))
    });
    Ok(prog.map(|p| XdpProg {
        id: p.get("id").and_then(|i| i.as_u64()).unwrap_or(0),
        name: p
            .get("name")
            .and_then(|n| n.as_str())
            .unwrap_or("")
            .to_string(),
        mode,
    }))
}

/// The XDP program attached to `ifname` in namespace `ns`, if any.
pub fn xdp_prog(ns: &str, ifname: &str) -> Result<Option<XdpProg>> {
    parse_xdp(&cmd::ip(
        Some(ns),
        &["-d", "-j", "link", "show", "dev", ifname],
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysfs_lines() {
        let c = Counters::parse_sysfs("rx_packets:12\ntx_packets:7\nbogus\nrx_bytes:x\n");
        assert_eq!(c.get("rx_packets"), 12);
        assert_eq!(c.get("tx_packets"), 7);
        assert_eq!(c.get("rx_bytes"), 0);
        assert_eq!(c.0.len(), 2);
    }

    #[test]
    fn ethtool_lines_and_sums() {
        let text = "NIC statistics:\n     peer_ifindex: 2\n     rx_queue_0_xdp_redirect: 10\n     \
                    rx_queue_1_xdp_redirect: 5\n     rx_queue_0_xdp_packets: 20\n";
        let c = Counters::parse_ethtool(text);
        assert_eq!(c.get("peer_ifindex"), 2);
        assert_eq!(c.sum_suffix("_xdp_redirect"), 15);
        let later = Counters::parse_ethtool(&text.replace("10", "110"));
        assert_eq!(later.delta(&c).sum_suffix("_xdp_redirect"), 100);
        assert_eq!(c.delta(&later).get("rx_queue_0_xdp_redirect"), 0);
    }

    #[test]
    fn xdp_json() {
        let with = r#"[{"ifname":"x","xdp":{"mode":1,"prog":{"id":101,"name":"xdp_sink"},
                        "attached":[{"mode":1,"prog":{"id":101,"name":"xdp_sink"}}]}}]"#;
        assert_eq!(
            parse_xdp(with).unwrap(),
            Some(XdpProg {
                id: 101,
                name: "xdp_sink".into(),
                mode: 1
            })
        );
        assert_eq!(parse_xdp(r#"[{"ifname":"x"}]"#).unwrap(), None);
        let multi = r#"[{"xdp":{"mode":4,"attached":[{"mode":2,"prog":{"id":7,"name":"a"}}]}}]"#;
        assert_eq!(parse_xdp(multi).unwrap().unwrap().id, 7);
        assert!(parse_xdp("not json").is_err());
    }
}
