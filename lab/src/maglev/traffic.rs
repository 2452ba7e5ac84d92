//! Traffic from the client (the Python driver `py/client.py`: new connections, keep-alive connections,
//! datagrams, held connections across steps), what the backends logged, and the result types.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use super::{check_interrupt, interrupted, tail, MaglevLab, CLIENT_IF, HTTP_PORT, SEQ, UDP_PORT};
use crate::capture;
use crate::netns::Netns;
use crate::process::Proc;

/// The client's traffic in a lab: runs the Python client (`client.py` in the lab directory) inside the
/// client's namespace.
#[derive(Debug, Clone, Copy)]
pub struct Traffic<'a> {
    pub(crate) ns: &'a Netns,
    pub(crate) dir: &'a Path,
}

impl Traffic<'_> {
    fn run_client(&self, name: &str, args: &[String], bound: Duration) -> Result<String> {
        let script = self.dir.join("client.py");
        let mut argv = vec![
            "python3".to_string(),
            "-u".into(),
            script.to_string_lossy().into_owned(),
        ];
        argv.extend_from_slice(args);
        let mut p = self.ns.spawn(name, &argv)?;
        let deadline = Instant::now() + bound;
        let st = loop {
            if let Some(st) = p.wait_timeout(Duration::from_millis(100))? {
                break st;
            }
            if interrupted() || Instant::now() >= deadline {
                p.stop(Duration::from_millis(500))?;
                check_interrupt()?;
                bail!("client `{}` still running after {bound:?}", args.join(" "));
            }
        };
        ensure!(
            st.success(),
            "client `{}` failed ({st}): {}",
            args.join(" "),
            tail(&p.stderr(), 20)
        );
        Ok(p.stdout())
    }

    /// `count` new TCP connections to `vip`:[`HTTP_PORT`] from the client, `parallel` at a time, one
    /// HTTP request each; with `sport_base`, connection i binds source port `sport_base + i`.
    pub fn tcp_conns(
        &self,
        vip: IpAddr,
        count: u32,
        parallel: u32,
        sport_base: Option<u16>,
    ) -> Result<Vec<ConnResult>> {
        let deadline = 30 + count / 10;
        let args = vec![
            "conns".to_string(),
            "--addr".into(),
            vip.to_string(),
            "--port".into(),
            HTTP_PORT.to_string(),
            "--count".into(),
            count.to_string(),
            "--parallel".into(),
            parallel.to_string(),
            "--sport-base".into(),
            sport_base.unwrap_or(0).to_string(),
            "--deadline".into(),
            deadline.to_string(),
        ];
        let out = self.run_client(
            "client-conns",
            &args,
            Duration::from_secs(u64::from(deadline) + 30),
        )?;
        parse_lines(&out)
            .iter()
            .map(ConnResult::from_json)
            .collect()
    }

    /// `conns` keep-alive connections to `vip`:[`HTTP_PORT`], `requests` requests each.
    pub fn keepalive(
        &self,
        vip: IpAddr,
        conns: u32,
        requests: u32,
    ) -> Result<Vec<KeepaliveResult>> {
        let deadline = 60 + conns * requests / 100;
        let args = vec![
            "keepalive".to_string(),
            "--addr".into(),
            vip.to_string(),
            "--port".into(),
            HTTP_PORT.to_string(),
            "--conns".into(),
            conns.to_string(),
            "--requests".into(),
            requests.to_string(),
            "--parallel".into(),
            conns.min(32).to_string(),
            "--deadline".into(),
            deadline.to_string(),
        ];
        let out = self.run_client(
            "client-keepalive",
            &args,
            Duration::from_secs(u64::from(deadline) + 30),
        )?;
        parse_lines(&out)
            .iter()
            .map(KeepaliveResult::from_json)
            .collect()
    }

    /// `count` UDP datagrams of `size` bytes to `vip`:[`UDP_PORT`], each from its own socket (source
    /// port `sport_base + i` when given), up to 3 attempts each.
    pub fn udp(
        &self,
        vip: IpAddr,
        size: u32,
        count: u32,
        sport_base: Option<u16>,
    ) -> Result<Vec<UdpResult>> {
        let deadline = 30 + count / 10;
        let args = vec![
            "udp".to_string(),
            "--addr".into(),
            vip.to_string(),
            "--port".into(),
            UDP_PORT.to_string(),
            "--size".into(),
            size.to_string(),
            "--count".into(),
            count.to_string(),
            "--parallel".into(),
            "16".into(),
            "--timeout".into(),
            "1".into(),
            "--sport-base".into(),
            sport_base.unwrap_or(0).to_string(),
            "--deadline".into(),
            deadline.to_string(),
        ];
        let out = self.run_client(
            "client-udp",
            &args,
            Duration::from_secs(u64::from(deadline) + 30),
        )?;
        parse_lines(&out).iter().map(UdpResult::from_json).collect()
    }

    /// Opens `conns` keep-alive connections to `vip`:[`HTTP_PORT`] held across `steps` steps; step 0
    /// (one request per connection) runs at once: read it with [`Hold::step`].
    pub fn hold(&self, vip: IpAddr, conns: u32, steps: u32) -> Result<Hold> {
        let step_dir = self
            .dir
            .join(format!("hold-{}", SEQ.fetch_add(1, Ordering::Relaxed)));
        std::fs::create_dir_all(&step_dir)
            .with_context(|| format!("creating {}", step_dir.display()))?;
        let script = self.dir.join("client.py");
        let argv = vec![
            "python3".to_string(),
            "-u".into(),
            script.to_string_lossy().into_owned(),
            "hold".into(),
            "--addr".into(),
            vip.to_string(),
            "--port".into(),
            HTTP_PORT.to_string(),
            "--conns".into(),
            conns.to_string(),
            "--steps".into(),
            steps.to_string(),
            "--step-dir".into(),
            step_dir.to_string_lossy().into_owned(),
            "--parallel".into(),
            conns.min(64).to_string(),
        ];
        let proc = self.ns.spawn("client-hold", &argv)?;
        Ok(Hold { proc, step_dir })
    }

    /// Starts new TCP connections to `vip`:[`HTTP_PORT`] from the client at `rate` per second for
    /// `duration`, in the background, whatever the answers take; [`ConnStream::finish`] collects them.
    pub fn conn_stream(&self, vip: IpAddr, rate: u32, duration: Duration) -> Result<ConnStream> {
        let script = self.dir.join("client.py");
        let argv = vec![
            "python3".to_string(),
            "-u".into(),
            script.to_string_lossy().into_owned(),
            "rate".into(),
            "--addr".into(),
            vip.to_string(),
            "--port".into(),
            HTTP_PORT.to_string(),
            "--rate".into(),
            rate.to_string(),
            "--duration".into(),
            duration.as_secs_f64().to_string(),
            "--parallel".into(),
            "256".into(),
        ];
        let proc = self.ns.spawn("client-rate", &argv)?;
        Ok(ConnStream { proc, duration })
    }
}

impl MaglevLab {
    fn driver(&self) -> Traffic<'_> {
        Traffic {
            ns: &self.client.ns,
            dir: &self.dir.0,
        }
    }

    /// `count` new TCP connections to `vip`:[`HTTP_PORT`] from the client, `parallel` at a time, one
    /// HTTP request each; with `sport_base`, connection i binds source port `sport_base + i`.
    pub fn tcp_conns(
        &self,
        vip: IpAddr,
        count: u32,
        parallel: u32,
        sport_base: Option<u16>,
    ) -> Result<Vec<ConnResult>> {
        self.driver().tcp_conns(vip, count, parallel, sport_base)
    }

    /// `conns` keep-alive connections to `vip`:[`HTTP_PORT`], `requests` requests each.
    pub fn keepalive(
        &self,
        vip: IpAddr,
        conns: u32,
        requests: u32,
    ) -> Result<Vec<KeepaliveResult>> {
        self.driver().keepalive(vip, conns, requests)
    }

    /// `count` UDP datagrams of `size` bytes to `vip`:[`UDP_PORT`], each from its own socket (source
    /// port `sport_base + i` when given), up to 3 attempts each.
    pub fn udp(
        &self,
        vip: IpAddr,
        size: u32,
        count: u32,
        sport_base: Option<u16>,
    ) -> Result<Vec<UdpResult>> {
        self.driver().udp(vip, size, count, sport_base)
    }

    /// Opens `conns` keep-alive connections to `vip`:[`HTTP_PORT`] held across `steps` steps; step 0
    /// (one request per connection) runs at once: read it with [`Hold::step`].
    pub fn hold(&self, vip: IpAddr, conns: u32, steps: u32) -> Result<Hold> {
        self.driver().hold(vip, conns, steps)
    }

    /// Starts new TCP connections to `vip`:[`HTTP_PORT`] from the client at `rate` per second for
    /// `duration`, in the background, whatever the answers take; [`ConnStream::finish`] collects them.
    pub fn conn_stream(&self, vip: IpAddr, rate: u32, duration: Duration) -> Result<ConnStream> {
        self.driver().conn_stream(vip, rate, duration)
    }

    /// The log of backend `i`'s server (one JSON object per line).
    pub fn backend_log(&self, i: usize) -> Vec<Value> {
        parse_lines(&self.backends[i].server.stdout())
    }

    /// TCP connections the backends logged as ended: (backend name, peer `ip:port` / `[ip]:port`,
    /// requests served on the connection).
    pub fn closed_connections(&self) -> Vec<(String, String, u64)> {
        self.backends
            .iter()
            .flat_map(|b| {
                parse_lines(&b.server.stdout())
                    .into_iter()
                    .filter(|v| v.get("ev").and_then(Value::as_str) == Some("close"))
                    .filter_map(|v| {
                        Some((
                            b.spec.name.clone(),
                            str_field(&v, "peer")?,
                            u64_field(&v, "requests"),
                        ))
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// How a backend writes the client's address and source port `sport` of `family`'s family.
    pub fn client_peer(&self, family: IpAddr, sport: u16) -> String {
        match family {
            IpAddr::V4(_) => format!("{}:{sport}", self.client.v4),
            IpAddr::V6(_) => format!("[{}]:{sport}", self.client.v6),
        }
    }

    /// GRE packets backend `i` decapsulated so far, from the counters `nf-maglev decap` prints every
    /// second (`None` in l2dsr mode, or before the first report).
    pub fn decapped(&self, i: usize) -> Option<u64> {
        let out = self.backends[i].decap.as_ref()?.stdout();
        out.lines().rev().find_map(|l| {
            let rest = l.split_once("decapped ")?.1;
            rest.split_whitespace().next()?.parse().ok()
        })
    }

    /// Sends raw Ethernet frames from the client's interface (they cross the bridge like any frame).
    pub fn send_from_client(&self, frames: &[Vec<u8>]) -> Result<()> {
        capture::send_frames(self.client.ns.name(), CLIENT_IF, frames)
    }
}

/// A client holding keep-alive connections open across steps ([`MaglevLab::hold`]).
#[derive(Debug)]
pub struct Hold {
    proc: Proc,
    step_dir: PathBuf,
}

impl Hold {
    /// Runs step `k` (k > 0: releases it; k = 0 runs at start) and returns its per-connection results,
    /// waiting at most `timeout`.
    pub fn step(&mut self, k: u32, timeout: Duration) -> Result<Vec<ConnResult>> {
        if k > 0 {
            let flag = self.step_dir.join(format!("step{k}"));
            std::fs::write(&flag, b"").with_context(|| format!("writing {}", flag.display()))?;
        }
        let deadline = Instant::now() + timeout;
        loop {
            // Checked before reading, so everything written before an exit is seen.
            let ended = !self.proc.is_running();
            for v in parse_lines(&self.proc.stdout()) {
                if v.get("step").and_then(Value::as_u64) == Some(u64::from(k)) {
                    if let Some(e) = v.get("error") {
                        bail!("hold client, step {k}: {e}");
                    }
                    let results = v
                        .get("results")
                        .and_then(Value::as_array)
                        .context("hold step without results")?;
                    return results.iter().map(ConnResult::from_json).collect();
                }
            }
            if ended {
                bail!(
                    "hold client ended before step {k}: {}",
                    tail(&self.proc.stderr(), 20)
                );
            }
            if Instant::now() >= deadline {
                bail!("hold client: no step {k} after {timeout:?}");
            }
            check_interrupt()?;
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// New connections at a steady rate, running in the background ([`MaglevLab::conn_stream`]).
#[derive(Debug)]
pub struct ConnStream {
    proc: Proc,
    duration: Duration,
}

impl ConnStream {
    /// Waits for the stream to end (its duration plus the last connections' time, bounded) and returns
    /// every connection with its start time.
    pub fn finish(mut self) -> Result<Vec<TimedConn>> {
        let bound = self.duration + Duration::from_secs(30);
        let st = self
            .proc
            .wait_timeout(bound)?
            .with_context(|| format!("connection stream still running after {bound:?}"))?;
        ensure!(
            st.success(),
            "connection stream failed ({st}): {}",
            tail(&self.proc.stderr(), 20)
        );
        parse_lines(&self.proc.stdout())
            .iter()
            .map(|v| {
                Ok(TimedConn {
                    start: v
                        .get("t")
                        .and_then(Value::as_f64)
                        .context("result without \"t\"")?,
                    connect: v.get("connect").and_then(Value::as_f64).unwrap_or(0.0),
                    conn: ConnResult::from_json(v)?,
                })
            })
            .collect()
    }
}

/// A connection of a [`ConnStream`] and when it started.
#[derive(Debug, Clone, PartialEq)]
pub struct TimedConn {
    /// Wall-clock start, Unix seconds.
    pub start: f64,
    /// How long its handshake took (or the attempt until it failed), seconds: about 1 s more per SYN
    /// lost on the way (Linux's initial retransmission timeout).
    pub connect: f64,
    /// The outcome.
    pub conn: ConnResult,
}

impl TimedConn {
    /// Answered, and at the first SYN (a handshake well under the 1 s retransmission timeout).
    pub fn first_try(&self) -> bool {
        self.conn.error.is_none() && self.conn.backend.is_some() && self.connect < SYN_RETRY_S / 2.0
    }
}

/// The initial SYN retransmission timeout of Linux, seconds.
const SYN_RETRY_S: f64 = 1.0;

/// What a stream of new connections saw.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StreamSummary {
    /// Connections started.
    pub started: usize,
    /// Connections that failed.
    pub failed: usize,
    /// Connections answered only after a retransmitted SYN.
    pub retried: usize,
    /// Longest time between the starts of two consecutive connections answered at the first SYN (also
    /// from the first start and to the last): how long new connections were not served at once.
    pub longest_gap: f64,
}

impl StreamSummary {
    /// Summarizes a stream's connections (in start order).
    pub fn of(conns: &[TimedConn]) -> StreamSummary {
        let mut s = StreamSummary {
            started: conns.len(),
            ..StreamSummary::default()
        };
        let Some(first) = conns.first() else {
            return s;
        };
        let mut last_ok = first.start;
        for c in conns {
            if c.conn.error.is_some() || c.conn.backend.is_none() {
                s.failed += 1;
            } else if !c.first_try() {
                s.retried += 1;
            } else {
                s.longest_gap = s.longest_gap.max(c.start - last_ok);
                last_ok = c.start;
            }
        }
        if let Some(end) = conns.last() {
            s.longest_gap = s.longest_gap.max(end.start - last_ok);
        }
        s
    }

    /// SYNs that got no answer: connections that needed a retransmission, and failed ones.
    pub fn syns_lost(&self) -> usize {
        self.retried + self.failed
    }
}

impl std::fmt::Display for StreamSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} new connections: {} failed, {} answered after a lost SYN, longest gap {:.3} s",
            self.started, self.failed, self.retried, self.longest_gap
        )
    }
}

pub(crate) fn parse_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn str_field(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_string)
}

fn u64_field(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

/// One TCP connection's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnResult {
    /// Client source port (0 if the connection never got one).
    pub sport: u16,
    /// The backend that answered.
    pub backend: Option<String>,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

impl ConnResult {
    fn from_json(v: &Value) -> Result<ConnResult> {
        Ok(ConnResult {
            sport: u16::try_from(u64_field(v, "sport")).context("source port out of range")?,
            backend: str_field(v, "backend"),
            error: str_field(v, "error"),
        })
    }
}

/// One keep-alive connection's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeepaliveResult {
    /// Client source port.
    pub sport: u16,
    /// Distinct backends that answered, in order of first answer (one, when all is well).
    pub backends: Vec<String>,
    /// Requests answered.
    pub requests_ok: u64,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

impl KeepaliveResult {
    fn from_json(v: &Value) -> Result<KeepaliveResult> {
        Ok(KeepaliveResult {
            sport: u16::try_from(u64_field(v, "sport")).context("source port out of range")?,
            backends: v
                .get("backends")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|b| b.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            requests_ok: u64_field(v, "requests_ok"),
            error: str_field(v, "error"),
        })
    }
}

/// One UDP datagram's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpResult {
    /// Client source port.
    pub sport: u16,
    /// The backend that answered.
    pub backend: Option<String>,
    /// Length the backend received.
    pub len: u64,
    /// Whether the backend received exactly what was sent (length and SHA-256).
    pub whole: bool,
    /// Sends needed (1 unless a datagram or its answer was lost).
    pub attempts: u64,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

impl UdpResult {
    fn from_json(v: &Value) -> Result<UdpResult> {
        Ok(UdpResult {
            sport: u16::try_from(u64_field(v, "sport")).context("source port out of range")?,
            backend: str_field(v, "backend"),
            len: u64_field(v, "len"),
            whole: v.get("whole").and_then(Value::as_bool).unwrap_or(false),
            attempts: u64_field(v, "attempts"),
            error: str_field(v, "error"),
        })
    }
}
