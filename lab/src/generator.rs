//! The traffic generator: what to send, how to run `xdpgen`, and what it reports.
//!
//! `xdpgen` (c/xdpgen.c) injects one UDP frame per BPF_PROG_RUN iteration with live frames, out of
//! the named veth, from one thread per CPU in `cpus` (the peer receives the frames of CPU c on its
//! rx queue c). Its XDP program steps the UDP source port over `flows` values and the low 16 bits
//! of the source address over `src_ips` values, so RSS-like hashing and connection tables see
//! `flows * src_ips` distinct 5-tuples. The counts it prints are frames handed to the transmit
//! path; whether the peer accepted them is for the peer's counters to say.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::addr::{self, Mac};
use crate::netns::Netns;
use crate::process::Proc;
use crate::tools;

/// When the generator stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenLimit {
    /// After this many frames in total (split evenly over the threads).
    Packets(u64),
    /// After this long.
    Duration(Duration),
}

/// What `xdpgen` sends and how.
#[derive(Debug, Clone, PartialEq)]
pub struct GenSpec {
    /// Sending interface (must be in the namespace the generator runs in).
    pub ifname: String,
    /// Ethernet source.
    pub src_mac: Mac,
    /// Ethernet destination.
    pub dst_mac: Mac,
    /// IPv4 or IPv6 source (test ranges only).
    pub src_ip: IpAddr,
    /// Destination, same family as `src_ip` (test ranges only).
    pub dst_ip: IpAddr,
    /// UDP source port of flow 0.
    pub sport: u16,
    /// UDP destination port.
    pub dport: u16,
    /// Frame length in bytes without FCS (>= 64).
    pub size: u16,
    /// Distinct UDP source ports (>= 1).
    pub flows: u16,
    /// Distinct source addresses (>= 1).
    pub src_ips: u16,
    /// One generator thread per entry, pinned to that CPU.
    pub cpus: Vec<usize>,
    /// When to stop.
    pub limit: GenLimit,
    /// Frames per live-frames batch (1..=256).
    pub batch: u16,
    /// An interface without traffic in the generator's namespace to hold the program in the kernel's
    /// XDP dispatcher (see c/xdpgen.c): without it every BPF_PROG_RUN waits for two RCU grace periods.
    pub hold_dev: Option<String>,
}

impl GenSpec {
    /// A 64-byte, single-flow UDP spec to port 9 from port 1024, one thread on CPU 0, batch 64.
    pub fn new(
        ifname: &str,
        src_mac: Mac,
        dst_mac: Mac,
        src_ip: IpAddr,
        dst_ip: IpAddr,
        limit: GenLimit,
    ) -> GenSpec {
        GenSpec {
            ifname: ifname.to_string(),
            src_mac,
            dst_mac,
            src_ip,
            dst_ip,
            sport: 1024,
            dport: 9,
            size: 64,
            flows: 1,
            src_ips: 1,
            cpus: vec![0],
            limit,
            batch: 64,
            hold_dev: None,
        }
    }

    /// Checks the spec before anything is started.
    pub fn validate(&self) -> Result<()> {
        addr::require_test_addr(self.src_ip, "generator source")?;
        addr::require_test_addr(self.dst_ip, "generator destination")?;
        if self.src_ip.is_ipv4() != self.dst_ip.is_ipv4() {
            bail!(
                "generator source {} and destination {} differ in family",
                self.src_ip,
                self.dst_ip
            );
        }
        if self.size < 64 || self.size > 1514 {
            bail!("frame size {} out of range 64..=1514", self.size);
        }
        if self.flows == 0 || self.src_ips == 0 {
            bail!("flows and src_ips must be at least 1");
        }
        if self.cpus.is_empty() {
            bail!("generator needs at least one CPU");
        }
        if self.batch == 0 || self.batch > 256 {
            bail!("batch {} out of range 1..=256", self.batch);
        }
        match self.limit {
            GenLimit::Packets(0) => bail!("packet limit must be at least 1"),
            GenLimit::Duration(d) if d.is_zero() => bail!("duration must be positive"),
            _ => Ok(()),
        }
    }

    /// The `xdpgen` command line (program first).
    pub fn argv(&self) -> Vec<String> {
        let cpus: Vec<String> = self.cpus.iter().map(usize::to_string).collect();
        let mut v: Vec<String> = vec![
            tools::XDPGEN.into(),
            "--dev".into(),
            self.ifname.clone(),
            "--src-mac".into(),
            self.src_mac.to_string(),
            "--dst-mac".into(),
            self.dst_mac.to_string(),
            "--src-ip".into(),
            self.src_ip.to_string(),
            "--dst-ip".into(),
            self.dst_ip.to_string(),
            "--sport".into(),
            self.sport.to_string(),
            "--dport".into(),
            self.dport.to_string(),
            "--size".into(),
            self.size.to_string(),
            "--flows".into(),
            self.flows.to_string(),
            "--src-ips".into(),
            self.src_ips.to_string(),
            "--cpus".into(),
            cpus.join(","),
            "--batch".into(),
            self.batch.to_string(),
        ];
        if let Some(dev) = &self.hold_dev {
            v.extend(["--hold-dev".into(), dev.clone()]);
        }
        match self.limit {
            GenLimit::Packets(n) => v.extend(["--count".into(), n.to_string()]),
            GenLimit::Duration(d) => {
                v.extend(["--seconds".into(), format!("{:.3}", d.as_secs_f64())])
            }
        }
        v
    }

    /// Starts the generator inside `ns`; parse its report with [`GenReport::from_proc`].
    pub fn spawn(&self, ns: &Netns) -> Result<Proc> {
        self.validate()?;
        ns.spawn("xdpgen", &self.argv())
    }

    /// Runs the generator inside `ns` to completion (bounded by the limit plus 30 s).
    pub fn run(&self, ns: &Netns) -> Result<GenReport> {
        let mut p = self.spawn(ns)?;
        let bound = match self.limit {
            GenLimit::Duration(d) => d + Duration::from_secs(30),
            GenLimit::Packets(_) => Duration::from_secs(60),
        };
        if p.wait_timeout(bound)?.is_none() {
            p.stop(Duration::from_secs(2))?;
            bail!(
                "xdpgen did not finish within {bound:?}; stderr: {}",
                p.stderr().trim()
            );
        }
        GenReport::from_proc(&mut p)
    }
}

/// What `xdpgen` printed.
#[derive(Debug, Clone, PartialEq)]
pub struct GenReport {
    /// Frames sent by all threads.
    pub packets: u64,
    /// Longest thread run time.
    pub seconds: f64,
    /// `packets / seconds`.
    pub pps: f64,
    /// Time the kernel spent running the program, summed over threads.
    pub busy_seconds: f64,
    /// The program was held in the XDP dispatcher for the run (`hold_dev` given and attached).
    pub dispatcher_held: bool,
    /// Per thread: (CPU, frames).
    pub threads: Vec<(usize, u64)>,
}

impl GenReport {
    /// Parses the JSON line `xdpgen` prints.
    pub fn parse(text: &str) -> Result<GenReport> {
        let line = text
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with('{'))
            .context("no JSON report from xdpgen")?;
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("parsing xdpgen report {line:?}"))?;
        let u = |v: &serde_json::Value, k: &str| v.get(k).and_then(serde_json::Value::as_u64);
        let f = |v: &serde_json::Value, k: &str| v.get(k).and_then(serde_json::Value::as_f64);
        let threads = v
            .get("threads")
            .and_then(|t| t.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|t| Some((usize::try_from(u(t, "cpu")?).ok()?, u(t, "packets")?)))
                    .collect()
            })
            .unwrap_or_default();
        Ok(GenReport {
            packets: u(&v, "packets").context("xdpgen report lacks packets")?,
            seconds: f(&v, "seconds").context("xdpgen report lacks seconds")?,
            pps: f(&v, "pps").unwrap_or(0.0),
            busy_seconds: f(&v, "busy_seconds").unwrap_or(0.0),
            dispatcher_held: v
                .get("dispatcher_held")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false),
            threads,
        })
    }

    /// Waits for a finished generator and parses its report; a failed run is an error naming its
    /// exit status and stderr.
    pub fn from_proc(p: &mut Proc) -> Result<GenReport> {
        let st = p
            .wait_timeout(Duration::from_secs(30))?
            .context("xdpgen still running")?;
        if !st.success() {
            bail!("xdpgen failed ({st}): {}", p.stderr().trim());
        }
        GenReport::parse(&p.stdout())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> GenSpec {
        GenSpec::new(
            "veth0",
            Mac([2, 0, 0, 0, 0, 1]),
            Mac([2, 0, 0, 0, 0, 2]),
            "198.18.0.1".parse().unwrap(),
            "198.18.0.2".parse().unwrap(),
            GenLimit::Packets(1000),
        )
    }

    #[test]
    fn argv_carries_every_setting() {
        let mut s = spec();
        s.cpus = vec![0, 1];
        s.flows = 16;
        let a = s.argv();
        assert_eq!(a[0], tools::XDPGEN);
        let joined = a.join(" ");
        for want in [
            "--dev veth0",
            "--src-mac 02:00:00:00:00:01",
            "--dst-ip 198.18.0.2",
            "--cpus 0,1",
            "--flows 16",
            "--count 1000",
        ] {
            assert!(joined.contains(want), "{want} missing in {joined}");
        }
        s.limit = GenLimit::Duration(Duration::from_millis(1500));
        assert!(s.argv().join(" ").ends_with("--seconds 1.500"));
        assert!(!s.argv().contains(&"--hold-dev".to_string()));
        s.hold_dev = Some("hold0".into());
        assert!(s.argv().join(" ").contains("--hold-dev hold0"));
    }

    #[test]
    fn validation() {
        assert!(spec().validate().is_ok());
        let mut s = spec();
        s.dst_ip = "10.0.0.1".parse().unwrap();
        assert!(s.validate().is_err());
        let mut s = spec();
        s.dst_ip = "2001:2::2".parse().unwrap();
        assert!(s.validate().is_err(), "mixed families");
        let mut s = spec();
        s.size = 63;
        assert!(s.validate().is_err());
        let mut s = spec();
        s.limit = GenLimit::Packets(0);
        assert!(s.validate().is_err());
    }

    #[test]
    fn report_parsing() {
        let r = GenReport::parse(
            "{\"packets\":100,\"seconds\":0.5,\"pps\":200.0,\"size\":64,\"busy_seconds\":0.45,\"dispatcher_held\":true,\"threads\":[{\"cpu\":1,\"packets\":100,\"seconds\":0.5}]}\n",
        )
        .unwrap();
        assert_eq!(r.packets, 100);
        assert_eq!(r.threads, vec![(1, 100)]);
        assert!(r.dispatcher_held);
        assert!((r.busy_seconds - 0.45).abs() < 1e-9);
        assert!(GenReport::parse("garbage").is_err());
    }
}
