//! Bounded waiting: for a condition, and for an idle machine before a timed measurement.
//!
//! The benchmark machine is shared; a window measured while something else runs says nothing
//! about the forwarder. [`wait_idle`] samples /proc/stat and returns once the CPUs were idle for
//! one whole sample, or gives up after a bound and says so (the result records it).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Polls `cond` every 10 ms until it returns true (→ `true`) or `timeout` passes (→ `false`).
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Aggregate CPU time from the first line of /proc/stat: (idle incl. iowait, total), in ticks.
pub fn parse_proc_stat(text: &str) -> Result<(u64, u64)> {
    let line = text.lines().next().context("empty /proc/stat")?;
    let mut f = line.split_whitespace();
    if f.next() != Some("cpu") {
        bail!("unexpected first /proc/stat line {line:?}");
    }
    let v: Vec<u64> = f.map(|x| x.parse().unwrap_or(0)).collect();
    if v.len() < 4 {
        bail!("short /proc/stat line {line:?}");
    }
    // user nice system idle iowait irq softirq steal [guest guest_nice: already in user/nice]
    let total: u64 = v.iter().take(8).sum();
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    Ok((idle, total))
}

fn cpu_sample() -> Result<(u64, u64)> {
    parse_proc_stat(&std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?)
}

/// Fraction of CPU time idle (all CPUs together) over `period`.
pub fn idle_fraction(period: Duration) -> Result<f64> {
    let (i0, t0) = cpu_sample()?;
    std::thread::sleep(period);
    let (i1, t1) = cpu_sample()?;
    let dt = t1.saturating_sub(t0);
    if dt == 0 {
        return Ok(1.0);
    }
    #[allow(clippy::cast_precision_loss)]
    Ok(i1.saturating_sub(i0) as f64 / dt as f64)
}

/// How a wait for an idle machine ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IdleOutcome {
    /// True when a whole sample was above the threshold.
    pub idle: bool,
    /// Idle fraction of the last sample.
    pub last_idle_fraction: f64,
    /// Time spent waiting.
    pub waited: Duration,
}

/// Waits until the CPUs are idle at least `threshold` (0..1) over one `sample` period, for at
/// most `max_wait`.
pub fn wait_idle(threshold: f64, sample: Duration, max_wait: Duration) -> Result<IdleOutcome> {
    let start = Instant::now();
    loop {
        let f = idle_fraction(sample)?;
        if f >= threshold || start.elapsed() >= max_wait {
            return Ok(IdleOutcome {
                idle: f >= threshold,
                last_idle_fraction: f,
                waited: start.elapsed(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_first_line() {
        let text = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n";
        assert_eq!(parse_proc_stat(text).unwrap(), (850, 1000));
        assert!(parse_proc_stat("intr 1 2 3").is_err());
        assert!(parse_proc_stat("").is_err());
    }

    #[test]
    fn wait_for_is_bounded() {
        assert!(!wait_for(Duration::from_millis(30), || false));
        let mut n = 0;
        assert!(wait_for(Duration::from_secs(5), || {
            n += 1;
            n == 3
        }));
    }

    #[test]
    fn idle_fraction_is_a_fraction() {
        let f = idle_fraction(Duration::from_millis(50)).unwrap();
        assert!((0.0..=1.0).contains(&f), "{f}");
    }
}
