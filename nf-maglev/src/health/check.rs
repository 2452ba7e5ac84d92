//! Health-check configuration: the `check` objects of VIPs and backends and the `health` section, as
//! written and as validated.
//!
//! A VIP's `check` applies to each of its backends; a backend's own `check` merges field by field over
//! it, or replaces it whole when it names a `type`. A TCP VIP with a port and no `check` gets a TCP
//! connect check on its port with the default timing; every other VIP without one is not checked.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use crate::config::{Issues, Port, Proto};

/// Default seconds between two probes of a backend.
pub const DEFAULT_INTERVAL_MS: u32 = 2000;
/// Default seconds a probe may take.
pub const DEFAULT_TIMEOUT_MS: u32 = 1000;
/// Default successes in a row that bring a down backend back.
pub const DEFAULT_RISE: u32 = 2;
/// Default failures in a row that take a backend out.
pub const DEFAULT_FALL: u32 = 3;
/// Shortest interval accepted.
pub const MIN_INTERVAL_MS: u32 = 50;
/// Longest interval accepted.
pub const MAX_INTERVAL_MS: u32 = 3_600_000;
/// Shortest timeout accepted.
pub const MIN_TIMEOUT_MS: u32 = 10;
/// Most successes or failures `rise` and `fall` may ask for.
pub const MAX_RISE_FALL: u32 = 100;
/// Longest payload, path, Host or expected text of a check.
pub const MAX_TEXT: usize = 1024;

/// A duration written as seconds (fractions allowed), kept in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Seconds(pub u32);

impl Seconds {
    /// As a [`Duration`].
    pub fn duration(self) -> Duration {
        Duration::from_millis(u64::from(self.0))
    }
}

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 % 1000 == 0 {
            write!(f, "{}s", self.0 / 1000)
        } else {
            write!(f, "{}ms", self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = f64::deserialize(d)?;
        if !s.is_finite() || !(0.0..=86_400.0).contains(&s) {
            return Err(de::Error::custom(format!(
                "{s} is not a number of seconds between 0 and 86400"
            )));
        }
        // In range by the check above: at most 86_400_000.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Ok(Seconds((s * 1000.0).round() as u32))
    }
}

/// What a probe does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckType {
    /// A TCP connection is accepted.
    Tcp,
    /// An HTTP/1.1 request gets an accepted status (and body).
    Http,
    /// A UDP datagram gets a reply (containing the expected text).
    Udp,
    /// No check: the backend is always taken as healthy.
    None,
}

/// A `check` object as written (on a VIP or a backend).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSection {
    /// `tcp`, `http`, `udp` or `none`.
    #[serde(default, rename = "type")]
    pub kind: Option<CheckType>,
    /// Port probed (default: the VIP's port).
    #[serde(default)]
    pub port: Option<u16>,
    /// Seconds between probes (default 2).
    #[serde(default)]
    pub interval: Option<Seconds>,
    /// Seconds a probe may take (default 1, at most `interval`).
    #[serde(default)]
    pub timeout: Option<Seconds>,
    /// Successes in a row that bring a down backend back (default 2).
    #[serde(default)]
    pub rise: Option<u32>,
    /// Failures in a row that take a backend out (default 3).
    #[serde(default)]
    pub fall: Option<u32>,
    /// http: request method, `GET` (default) or `HEAD`.
    #[serde(default)]
    pub method: Option<String>,
    /// http: request path (default `/`).
    #[serde(default)]
    pub path: Option<String>,
    /// http: `Host` header (default: the address probed).
    #[serde(default)]
    pub host: Option<String>,
    /// http: accepted status codes (default 200-399).
    #[serde(default)]
    pub status: Option<Vec<u16>>,
    /// http: text the body must contain.
    #[serde(default)]
    pub body: Option<String>,
    /// udp: payload sent (default empty).
    #[serde(default)]
    pub send: Option<String>,
    /// udp: text the reply must contain (default: any reply).
    #[serde(default)]
    pub expect: Option<String>,
}

impl CheckSection {
    /// `over` merged over `self`: `over`'s fields win; an `over` naming a `type` replaces `self` whole.
    pub fn merged(&self, over: &CheckSection) -> CheckSection {
        if over.kind.is_some() {
            return over.clone();
        }
        CheckSection {
            kind: self.kind,
            port: over.port.or(self.port),
            interval: over.interval.or(self.interval),
            timeout: over.timeout.or(self.timeout),
            rise: over.rise.or(self.rise),
            fall: over.fall.or(self.fall),
            method: over.method.clone().or_else(|| self.method.clone()),
            path: over.path.clone().or_else(|| self.path.clone()),
            host: over.host.clone().or_else(|| self.host.clone()),
            status: over.status.clone().or_else(|| self.status.clone()),
            body: over.body.clone().or_else(|| self.body.clone()),
            send: over.send.clone().or_else(|| self.send.clone()),
            expect: over.expect.clone().or_else(|| self.expect.clone()),
        }
    }
}

/// What a validated probe sends and expects.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Probe {
    /// TCP connect.
    Tcp,
    /// HTTP/1.1 request.
    Http {
        /// `GET` or `HEAD`.
        method: String,
        /// Request path.
        path: String,
        /// `Host` header; `None`: the address probed.
        host: Option<String>,
        /// Accepted status codes; empty: 200-399.
        status: Vec<u16>,
        /// Text the body must contain.
        body: Option<String>,
    },
    /// UDP request and reply.
    Udp {
        /// Payload.
        send: Vec<u8>,
        /// Text the reply must contain; `None`: any reply.
        expect: Option<Vec<u8>>,
    },
}

impl Probe {
    /// `tcp`, `http` or `udp`.
    pub fn kind(&self) -> &'static str {
        match self {
            Probe::Tcp => "tcp",
            Probe::Http { .. } => "http",
            Probe::Udp { .. } => "udp",
        }
    }
}

/// A validated check of one backend.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Check {
    /// What to send and expect.
    pub probe: Probe,
    /// Port probed.
    pub port: u16,
    /// Between probes.
    pub interval: Seconds,
    /// Limit of one probe.
    pub timeout: Seconds,
    /// Successes in a row that bring the backend back.
    pub rise: u32,
    /// Failures in a row that take it out.
    pub fall: u32,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.probe {
            Probe::Tcp => write!(f, "tcp connect to port {}", self.port)?,
            Probe::Http {
                method,
                path,
                status,
                ..
            } => {
                write!(f, "http {method} {path} on port {}", self.port)?;
                if !status.is_empty() {
                    let s: Vec<String> = status.iter().map(u16::to_string).collect();
                    write!(f, " expecting {}", s.join("/"))?;
                }
            }
            Probe::Udp { .. } => write!(f, "udp request to port {}", self.port)?,
        }
        write!(
            f,
            " every {}, timeout {}, rise {}, fall {}",
            self.interval, self.timeout, self.rise, self.fall
        )
    }
}

/// Where probes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbePath {
    /// Through the data path when this process could set it up, else to the backend's address.
    #[default]
    Auto,
    /// Through the data path: to the VIP, GRE-encapsulated to the backend or sent to its MAC.
    Vip,
    /// To the backend's own address, routed by the kernel.
    Backend,
}

/// `maglev.health.damping`: how flapping backends are kept out (RFC 2439's route-flap damping, counted
/// in flaps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DampingSection {
    /// Seconds in which the flap penalty halves (default 30).
    #[serde(default = "default_half_life")]
    pub half_life: Seconds,
    /// Penalty, in flaps, at which a backend is suppressed: kept out even when its checks pass
    /// (default 3; 0 turns damping off).
    #[serde(default = "default_suppress")]
    pub suppress: u32,
    /// Penalty, in flaps, below which a suppressed backend may return (default 1).
    #[serde(default = "default_reuse")]
    pub reuse: u32,
    /// Longest a backend stays suppressed, seconds (default 300).
    #[serde(default = "default_max_suppress")]
    pub max_suppress: Seconds,
}

impl Default for DampingSection {
    fn default() -> Self {
        Self {
            half_life: default_half_life(),
            suppress: default_suppress(),
            reuse: default_reuse(),
            max_suppress: default_max_suppress(),
        }
    }
}

fn default_half_life() -> Seconds {
    Seconds(30_000)
}
fn default_suppress() -> u32 {
    3
}
fn default_reuse() -> u32 {
    1
}
fn default_max_suppress() -> Seconds {
    Seconds(300_000)
}
fn default_true() -> bool {
    true
}

/// `maglev.health` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSection {
    /// When every backend of a VIP is down, keep sending to all of them (default true).
    #[serde(default = "default_true")]
    pub fail_open: bool,
    /// Where probes go (default `auto`).
    #[serde(default)]
    pub probe_path: ProbePath,
    /// Flap damping.
    #[serde(default)]
    pub damping: DampingSection,
}

impl Default for HealthSection {
    fn default() -> Self {
        Self {
            fail_open: true,
            probe_path: ProbePath::Auto,
            damping: DampingSection::default(),
        }
    }
}

impl HealthSection {
    /// Problems with the section, `(key path, message)`; `p` is the section's path.
    pub fn issues(&self, p: &str, issues: &mut Issues) {
        let d = &self.damping;
        if d.suppress > 0 {
            if d.reuse >= d.suppress {
                issues.push((
                    format!("{p}.damping.reuse"),
                    format!(
                        "{} must be below suppress ({}): a suppressed backend would never return",
                        d.reuse, d.suppress
                    ),
                ));
            }
            if d.half_life.0 < 1000 {
                issues.push((
                    format!("{p}.damping.half_life"),
                    format!("{} is below the 1 s minimum", d.half_life),
                ));
            }
        }
    }
}

/// Resolves the check of one backend of a VIP: the VIP's `check` with the backend's merged over it, or
/// the default. `None`: not checked. Problems go to `issues` under `path` (the key that holds the
/// offending field: the backend's `check` when it has one, else the VIP's).
pub fn resolve(
    vip_check: Option<&CheckSection>,
    backend_check: Option<&CheckSection>,
    proto: Proto,
    port: Port,
    path: &str,
    issues: &mut Issues,
) -> Option<Check> {
    let written = match (vip_check, backend_check) {
        (None, None) => {
            if proto != Proto::Tcp || port.is_all() {
                return None;
            }
            CheckSection {
                kind: Some(CheckType::Tcp),
                ..CheckSection::default()
            }
        }
        (Some(v), None) => v.clone(),
        (None, Some(b)) => {
            if b.kind.is_none() && (proto != Proto::Tcp || port.is_all()) {
                issues.push((
                    format!("{path}.type"),
                    "the VIP has no check to merge over: give a type".into(),
                ));
                return None;
            }
            CheckSection {
                kind: Some(CheckType::Tcp),
                ..CheckSection::default()
            }
            .merged(b)
        }
        (Some(v), Some(b)) => v.merged(b),
    };
    let mut err = |key: &str, msg: String| issues.push((format!("{path}.{key}"), msg));
    let kind = match written.kind {
        Some(CheckType::None) => return None,
        Some(k) => k,
        None => {
            err(
                "type",
                "missing: \"tcp\", \"http\", \"udp\" or \"none\"".into(),
            );
            return None;
        }
    };
    let port = match (written.port, port.is_all()) {
        (Some(0), _) => {
            err("port", "0 is not a port".into());
            0
        }
        (Some(p), _) => p,
        (None, false) => port.0,
        (None, true) => {
            err(
                "port",
                "missing: the VIP takes every port, so the check needs one".into(),
            );
            0
        }
    };
    let interval = written.interval.unwrap_or(Seconds(DEFAULT_INTERVAL_MS));
    if !(MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(&interval.0) {
        err(
            "interval",
            format!(
                "{interval} is outside {}..={}",
                Seconds(MIN_INTERVAL_MS),
                Seconds(MAX_INTERVAL_MS)
            ),
        );
    }
    let timeout = written
        .timeout
        .unwrap_or(Seconds(DEFAULT_TIMEOUT_MS.min(interval.0)));
    if timeout.0 < MIN_TIMEOUT_MS {
        err(
            "timeout",
            format!("{timeout} is below {}", Seconds(MIN_TIMEOUT_MS)),
        );
    } else if timeout > interval {
        err(
            "timeout",
            format!("{timeout} exceeds the interval ({interval}): probes would overlap"),
        );
    }
    let rise = written.rise.unwrap_or(DEFAULT_RISE);
    let fall = written.fall.unwrap_or(DEFAULT_FALL);
    for (key, v) in [("rise", rise), ("fall", fall)] {
        if !(1..=MAX_RISE_FALL).contains(&v) {
            err(key, format!("{v} is outside 1..={MAX_RISE_FALL}"));
        }
    }
    let text = |key: &str, v: &Option<String>, err: &mut dyn FnMut(&str, String)| {
        if let Some(s) = v {
            if s.len() > MAX_TEXT {
                err(key, format!("longer than {MAX_TEXT} bytes"));
            }
        }
    };
    let http_only = ["method", "path", "host", "status", "body"];
    let udp_only = ["send", "expect"];
    let given = |key: &str| match key {
        "method" => written.method.is_some(),
        "path" => written.path.is_some(),
        "host" => written.host.is_some(),
        "status" => written.status.is_some(),
        "body" => written.body.is_some(),
        "send" => written.send.is_some(),
        _ => written.expect.is_some(),
    };
    let foreign: Vec<&str> = match kind {
        CheckType::Tcp => http_only.iter().chain(&udp_only).copied().collect(),
        CheckType::Http => udp_only.to_vec(),
        CheckType::Udp => http_only.to_vec(),
        CheckType::None => Vec::new(),
    };
    for key in foreign.into_iter().filter(|k| given(k)) {
        err(
            key,
            format!(
                "does not apply to a {} check",
                match kind {
                    CheckType::Tcp => "tcp",
                    CheckType::Http => "http",
                    _ => "udp",
                }
            ),
        );
    }
    let probe = match kind {
        CheckType::Tcp | CheckType::None => Probe::Tcp,
        CheckType::Http => {
            let method = written.method.clone().unwrap_or_else(|| "GET".into());
            if method != "GET" && method != "HEAD" {
                err(
                    "method",
                    format!("{method:?} is neither \"GET\" nor \"HEAD\""),
                );
            }
            let req_path = written.path.clone().unwrap_or_else(|| "/".into());
            if !req_path.starts_with('/')
                || req_path
                    .bytes()
                    .any(|b| b.is_ascii_control() || b == b' ' || b >= 0x80)
            {
                err(
                    "path",
                    format!(
                        "{req_path:?} must start with / and hold no spaces or control characters"
                    ),
                );
            }
            text("path", &written.path, &mut err);
            if let Some(h) = &written.host {
                if h.is_empty() || h.bytes().any(|b| b.is_ascii_control() || b == b' ') {
                    err("host", format!("{h:?} is not a host name"));
                }
            }
            text("host", &written.host, &mut err);
            text("body", &written.body, &mut err);
            let status = written.status.clone().unwrap_or_default();
            if written.status.as_ref().is_some_and(Vec::is_empty) {
                err(
                    "status",
                    "an empty list accepts nothing; leave it out for 200-399".into(),
                );
            }
            for s in &status {
                if !(100..=599).contains(s) {
                    err("status", format!("{s} is not an HTTP status code"));
                }
            }
            Probe::Http {
                method,
                path: req_path,
                host: written.host.clone(),
                status,
                body: written.body.clone(),
            }
        }
        CheckType::Udp => {
            text("send", &written.send, &mut err);
            text("expect", &written.expect, &mut err);
            Probe::Udp {
                send: written.send.clone().unwrap_or_default().into_bytes(),
                expect: written.expect.clone().map(String::into_bytes),
            }
        }
    };
    Some(Check {
        probe,
        port,
        interval,
        timeout,
        rise,
        fall,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(json: &str) -> CheckSection {
        serde_json::from_str(json).expect("parses")
    }

    fn run(
        vip: Option<&str>,
        backend: Option<&str>,
        proto: Proto,
        port: u16,
    ) -> (Option<Check>, Issues) {
        let mut issues = Issues::new();
        let v = vip.map(section);
        let b = backend.map(section);
        let c = resolve(v.as_ref(), b.as_ref(), proto, Port(port), "x", &mut issues);
        (c, issues)
    }

    #[test]
    fn tcp_vips_get_a_default_connect_check_others_none() {
        let (c, i) = run(None, None, Proto::Tcp, 80);
        assert!(i.is_empty());
        let c = c.expect("checked");
        assert_eq!(
            (
                c.probe.clone(),
                c.port,
                c.interval,
                c.timeout,
                c.rise,
                c.fall
            ),
            (Probe::Tcp, 80, Seconds(2000), Seconds(1000), 2, 3)
        );
        assert_eq!(
            c.to_string(),
            "tcp connect to port 80 every 2s, timeout 1s, rise 2, fall 3"
        );
        assert_eq!(run(None, None, Proto::Udp, 53).0, None);
        assert_eq!(run(None, None, Proto::Tcp, 0).0, None, "all ports");
        assert_eq!(
            run(Some(r#"{"type": "none"}"#), None, Proto::Tcp, 80).0,
            None
        );
    }

    #[test]
    fn backend_fields_merge_over_the_vips_and_a_type_replaces() {
        let vip = r#"{"type": "http", "path": "/health", "interval": 0.5, "timeout": 0.25, "status": [200, 204]}"#;
        let (c, i) = run(Some(vip), Some(r#"{"path": "/b"}"#), Proto::Tcp, 80);
        assert!(i.is_empty(), "{i:?}");
        let c = c.expect("checked");
        assert_eq!((c.interval, c.timeout), (Seconds(500), Seconds(250)));
        let Probe::Http { path, status, .. } = &c.probe else {
            panic!("{c:?}")
        };
        assert_eq!((path.as_str(), status.as_slice()), ("/b", &[200, 204][..]));
        let (c, _) = run(
            Some(vip),
            Some(r#"{"type": "tcp", "port": 81}"#),
            Proto::Tcp,
            80,
        );
        let c = c.expect("checked");
        assert_eq!(
            (c.probe, c.port, c.interval),
            (Probe::Tcp, 81, Seconds(2000))
        );
        assert_eq!(
            run(Some(vip), Some(r#"{"type": "none"}"#), Proto::Tcp, 80).0,
            None
        );
    }

    #[test]
    fn bad_checks_name_the_key() {
        let cases = [
            (
                r#"{"type": "http", "interval": 1, "timeout": 2}"#,
                "x.timeout",
            ),
            (r#"{"type": "tcp", "rise": 0}"#, "x.rise"),
            (r#"{"type": "tcp", "fall": 1000}"#, "x.fall"),
            (r#"{"type": "http", "status": [700]}"#, "x.status"),
            (r#"{"type": "http", "status": []}"#, "x.status"),
            (r#"{"type": "http", "method": "POST"}"#, "x.method"),
            (r#"{"type": "http", "path": "no-slash"}"#, "x.path"),
            (r#"{"type": "tcp", "path": "/"}"#, "x.path"),
            (r#"{"type": "udp", "status": [200]}"#, "x.status"),
            (r#"{"type": "tcp", "interval": 0.01}"#, "x.interval"),
            (r#"{"type": "tcp", "port": 0}"#, "x.port"),
        ];
        for (json, key) in cases {
            let (_, i) = run(Some(json), None, Proto::Tcp, 80);
            assert!(i.iter().any(|(p, _)| p == key), "{json}: {i:?}");
        }
        let (_, i) = run(Some(r#"{"type": "tcp"}"#), None, Proto::Tcp, 0);
        assert_eq!(i[0].0, "x.port", "all-ports VIP needs a port");
        assert!(serde_json::from_str::<CheckSection>(r#"{"type": "icmp"}"#).is_err());
        assert!(serde_json::from_str::<CheckSection>(r#"{"interval": -1}"#).is_err());
        assert!(serde_json::from_str::<CheckSection>(r#"{"intervall": 1}"#).is_err());
    }

    #[test]
    fn damping_reuse_must_be_below_suppress() {
        let h: HealthSection =
            serde_json::from_str(r#"{"damping": {"suppress": 2, "reuse": 2}}"#).expect("parses");
        let mut i = Issues::new();
        h.issues("maglev.health", &mut i);
        assert_eq!(i[0].0, "maglev.health.damping.reuse");
        let h: HealthSection =
            serde_json::from_str(r#"{"damping": {"suppress": 0, "reuse": 5}}"#).expect("parses");
        let mut i = Issues::new();
        h.issues("maglev.health", &mut i);
        assert!(i.is_empty(), "damping off");
    }
}
