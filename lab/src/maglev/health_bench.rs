//! `lab health-bench`: how fast a dead backend leaves the table by health checks and what that costs in
//! failed connections, next to the floor: the same death handled at once by weight 0 through the admin
//! API.
//!
//! One lab (three backends weighted 1/1/2, HTTP checks on the TCP VIPs). Each run, for each method in
//! turn: the client starts new connections to the IPv4 VIP at a steady rate; [`KILL_AFTER`] into the
//! stream, the heaviest backend's server is killed (SIGKILL). Method `checks`: the lab polls
//! `/api/state` until the backend's `in_table` is false; that instant is the detection. Method `admin`:
//! right after the kill, `PUT .../weight` 0; the detection is when that call returned. Failed
//! connections are sorted by when they started: after the kill and before the detection (the price of
//! waiting), and after the detection (should be none). Then the server starts again, the weight comes
//! back and the lab waits for the backend to return to the table before the next method.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::{LabSpec, MaglevLab, Mode, VIP4};

/// When the victim dies, counted from the start of the connection stream.
pub const KILL_AFTER: Duration = Duration::from_secs(2);
/// How long the stream goes on after the latest detection the checks allow (plus slack).
pub const TAIL: Duration = Duration::from_secs(2);
/// Added to fall x interval + timeout for the longest wait for a detection, and to rise x interval for
/// the return.
pub const SLACK: Duration = Duration::from_millis(1500);

/// Damping loose enough that one kill and restart after another never suppresses a backend.
pub fn loose_damping() -> Value {
    json!({"half_life": 5, "suppress": 50, "reuse": 25, "max_suppress": 20})
}

/// Options of [`health_bench`].
#[derive(Debug, Clone)]
pub struct HealthBenchOpts {
    /// Forwarding mode.
    pub mode: Mode,
    /// Runs (each measures both methods).
    pub runs: u32,
    /// New connections per second.
    pub rate: u32,
    /// Check interval, seconds.
    pub interval: f64,
    /// Check timeout, seconds.
    pub timeout: f64,
    /// Failed checks in a row that take a backend out.
    pub fall: u32,
    /// Good checks in a row that bring it back.
    pub rise: u32,
    /// The nf-maglev binary.
    pub nf_maglev: PathBuf,
}

impl HealthBenchOpts {
    /// fall x interval + timeout: the latest a detection by checks may come.
    pub fn detection_bound(&self) -> Duration {
        Duration::from_secs_f64(f64::from(self.fall) * self.interval + self.timeout)
    }

    /// The `check` object of the TCP VIPs.
    pub fn check(&self) -> Value {
        json!({"type": "http", "path": "/", "interval": self.interval, "timeout": self.timeout,
               "fall": self.fall, "rise": self.rise})
    }
}

/// How a dead backend was taken out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// By the health checks.
    Checks,
    /// By weight 0 through the admin API right after the death.
    Admin,
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::Checks => "checks",
            Method::Admin => "admin",
        })
    }
}

/// One measurement.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Run number, from 1.
    pub run: u32,
    /// Method.
    pub method: Method,
    /// From the kill to the detection (`None`: not within the bound).
    pub detection: Option<Duration>,
    /// Connections of the stream.
    pub conns: u64,
    /// Failed connections started before the kill (in flight to the victim when it died).
    pub failed_in_flight: u64,
    /// Failed connections started between the kill and the detection.
    pub failed_before: u64,
    /// Failed connections started after the detection.
    pub failed_after: u64,
    /// How long after the detection the last of those started.
    pub last_failure_after: Option<Duration>,
}

/// What [`health_bench`] measured.
#[derive(Debug, Clone)]
pub struct HealthBenchReport {
    /// The options.
    pub opts: HealthBenchOpts,
    /// The victim's name.
    pub victim: String,
    /// Every measurement, in order.
    pub samples: Vec<Sample>,
}

impl HealthBenchReport {
    /// True when every detection by checks came within fall x interval + timeout and no connection
    /// failed after any detection.
    pub fn goal_met(&self) -> bool {
        let bound = self.opts.detection_bound();
        self.samples.iter().all(|s| {
            s.failed_after == 0
                && (s.method != Method::Checks || s.detection.is_some_and(|d| d <= bound))
        })
    }

    fn median(&self, method: Method, f: impl Fn(&Sample) -> Option<f64>) -> Option<f64> {
        let mut v: Vec<f64> = self
            .samples
            .iter()
            .filter(|s| s.method == method)
            .filter_map(f)
            .collect();
        v.sort_by(f64::total_cmp);
        (!v.is_empty()).then(|| v[v.len() / 2])
    }
}

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(
        || "-".into(),
        |d| format!("{:.0}", d.as_secs_f64() * 1000.0),
    )
}

impl fmt::Display for HealthBenchReport {
    #[allow(clippy::cast_precision_loss)]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.opts;
        writeln!(
            f,
            "health bench: mode {}, {} new connections/s to {VIP4}, victim {} killed {:.1} s into each \
             stream; http check interval {} s, timeout {} s, fall {}, rise {}",
            o.mode,
            o.rate,
            self.victim,
            KILL_AFTER.as_secs_f64(),
            o.interval,
            o.timeout,
            o.fall,
            o.rise
        )?;
        writeln!(
            f,
            "{:>3} {:<7} {:>13} {:>6} {:>10} {:>16} {:>15}",
            "run", "method", "detection ms", "conns", "in flight", "failed before", "failed after"
        )?;
        for s in &self.samples {
            writeln!(
                f,
                "{:>3} {:<7} {:>13} {:>6} {:>10} {:>16} {:>15}",
                s.run,
                s.method.to_string(),
                ms(s.detection),
                s.conns,
                s.failed_in_flight,
                s.failed_before,
                s.failed_after
            )?;
        }
        let med = |m: Method, g: fn(&Sample) -> Option<f64>| {
            self.median(m, g)
                .map_or_else(|| "-".into(), |v| format!("{v:.0}"))
        };
        writeln!(
            f,
            "median        checks | admin (floor)\n  detection ms   {:>6} | {}\n  failed before  {:>6} | {}\n  failed after   {:>6} | {}",
            med(Method::Checks, |s| s.detection.map(|d| d.as_secs_f64() * 1000.0)),
            med(Method::Admin, |s| s.detection.map(|d| d.as_secs_f64() * 1000.0)),
            med(Method::Checks, |s| Some(s.failed_before as f64)),
            med(Method::Admin, |s| Some(s.failed_before as f64)),
            med(Method::Checks, |s| Some(s.failed_after as f64)),
            med(Method::Admin, |s| Some(s.failed_after as f64)),
        )?;
        writeln!(
            f,
            "goal: detection by checks within fall x interval + timeout = {} ms, 0 failures after \
             detection: {}",
            ms(Some(o.detection_bound())),
            if self.goal_met() { "met" } else { "NOT met" }
        )
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Builds the lab, measures `opts.runs` runs of both methods, tears the lab down, and reports.
pub fn health_bench(opts: &HealthBenchOpts) -> Result<HealthBenchReport> {
    let spec = LabSpec::new(opts.mode, &opts.nf_maglev)
        .health(json!({"damping": loose_damping()}))
        .check(&["web4", "web6"], opts.check());
    let victim_i = spec
        .backends
        .iter()
        .enumerate()
        .max_by_key(|(_, b)| b.weight)
        .map(|(i, _)| i)
        .context("no backends")?;
    let victim = spec.backends[victim_i].name.clone();
    let weight = spec.backends[victim_i].weight;
    let mut lab = MaglevLab::build(&spec).context("building the lab")?;
    lab.start_lb(0, &[]).context("starting nf-maglev")?;
    let bound = opts.detection_bound();
    let rise_bound = Duration::from_secs_f64(f64::from(opts.rise) * opts.interval) + SLACK;
    let stream_len = KILL_AFTER + bound + SLACK + TAIL;
    let weight_path = format!("/api/vips/web4/backends/{victim}/weight");
    let mut samples = Vec::new();
    for run in 1..=opts.runs {
        for method in [Method::Checks, Method::Admin] {
            // Every backend in the table before the stream starts (the first checks, or the last return).
            for b in lab.backend_specs() {
                if lab
                    .wait_in_table(0, &["web4"], &b.name, true, Duration::from_secs(30))?
                    .is_none()
                {
                    bail!("backend {} not in the table before run {run}", b.name);
                }
            }
            let stream = lab.conn_stream(IpAddr::V4(VIP4), opts.rate, stream_len)?;
            std::thread::sleep(KILL_AFTER);
            let killed_at = unix_now();
            let t0 = Instant::now();
            lab.kill_server(victim_i)?;
            let detection = match method {
                Method::Checks => lab
                    .wait_in_table(0, &["web4"], &victim, false, bound + SLACK)?
                    .map(|_| t0.elapsed()),
                Method::Admin => {
                    lab.admin_ok(0, "PUT", &weight_path, Some(r#"{"weight": 0}"#))?;
                    Some(t0.elapsed())
                }
            };
            let detected_at = detection.map(|d| killed_at + d.as_secs_f64());
            let conns = stream.finish()?;
            let mut s = Sample {
                run,
                method,
                detection,
                conns: conns.len() as u64,
                failed_in_flight: 0,
                failed_before: 0,
                failed_after: 0,
                last_failure_after: None,
            };
            for c in conns.iter().filter(|c| c.conn.error.is_some()) {
                match detected_at {
                    _ if c.start < killed_at => s.failed_in_flight += 1,
                    Some(d) if c.start >= d => {
                        s.failed_after += 1;
                        let late = Duration::from_secs_f64(c.start - d);
                        s.last_failure_after = s.last_failure_after.max(Some(late));
                    }
                    _ => s.failed_before += 1,
                }
            }
            eprintln!(
                "run {run} {method}: detection {} ms, failed {} in flight / {} before / {} after detection \
                 (the last {} ms after it)",
                ms(s.detection),
                s.failed_in_flight,
                s.failed_before,
                s.failed_after,
                ms(s.last_failure_after)
            );
            samples.push(s);
            lab.start_server(victim_i)?;
            if method == Method::Admin {
                lab.admin_ok(
                    0,
                    "PUT",
                    &weight_path,
                    Some(&format!(r#"{{"weight": {weight}}}"#)),
                )?;
            }
            if lab
                .wait_in_table(0, &["web4"], &victim, true, rise_bound + bound)?
                .is_none()
            {
                bail!("{victim} did not return to the table after its server restarted");
            }
        }
    }
    lab.stop_lb(0).context("stopping nf-maglev")?;
    Ok(HealthBenchReport {
        opts: opts.clone(),
        victim,
        samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(method: Method, det_ms: u64, after: u64) -> Sample {
        Sample {
            run: 1,
            method,
            detection: Some(Duration::from_millis(det_ms)),
            conns: 100,
            failed_in_flight: 0,
            failed_before: 3,
            failed_after: after,
            last_failure_after: None,
        }
    }

    #[test]
    fn goal_needs_bounded_detection_and_no_late_failures() {
        let opts = HealthBenchOpts {
            mode: Mode::Gre,
            runs: 1,
            rate: 200,
            interval: 0.5,
            timeout: 0.3,
            fall: 3,
            rise: 2,
            nf_maglev: "/bin/true".into(),
        };
        assert_eq!(opts.detection_bound(), Duration::from_millis(1800));
        let mut r = HealthBenchReport {
            opts,
            victim: "b3".into(),
            samples: vec![
                sample(Method::Checks, 1500, 0),
                sample(Method::Admin, 20, 0),
            ],
        };
        assert!(r.goal_met());
        let text = r.to_string();
        assert!(text.contains("1500") && text.contains(": met"), "{text}");
        r.samples.push(sample(Method::Checks, 1900, 0));
        assert!(!r.goal_met());
        r.samples.pop();
        r.samples.push(sample(Method::Admin, 20, 1));
        assert!(!r.goal_met());
    }
}
