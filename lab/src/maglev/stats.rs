//! How connections spread over the backends, and whether that matches the weights.

use std::collections::BTreeMap;
use std::fmt;

use anyhow::{ensure, Result};

use super::{BackendSpec, ConnResult, UdpResult};

/// How connections spread over the backends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spread {
    /// Answered connections per backend name.
    pub counts: BTreeMap<String, u64>,
    /// Connections that failed.
    pub failed: u64,
    /// First few failure messages.
    pub errors: Vec<String>,
}

impl Spread {
    /// Counts the outcomes.
    pub fn of<'a>(results: impl IntoIterator<Item = &'a ConnResult>) -> Spread {
        let mut s = Spread::default();
        for r in results {
            match (&r.backend, &r.error) {
                (Some(b), None) => *s.counts.entry(b.clone()).or_default() += 1,
                (_, e) => {
                    s.failed += 1;
                    if s.errors.len() < 5 {
                        s.errors
                            .push(e.clone().unwrap_or_else(|| "no backend named".into()));
                    }
                }
            }
        }
        s
    }

    /// Counts UDP outcomes the same way (a datagram answered whole counts for its backend).
    pub fn of_udp<'a>(results: impl IntoIterator<Item = &'a UdpResult>) -> Spread {
        let conns: Vec<ConnResult> = results
            .into_iter()
            .map(|r| ConnResult {
                sport: r.sport,
                backend: r.backend.clone().filter(|_| r.whole),
                error: r.error.clone().or_else(|| {
                    (!r.whole).then(|| format!("datagram arrived changed ({} bytes)", r.len))
                }),
            })
            .collect();
        Spread::of(&conns)
    }

    /// Answered connections.
    pub fn answered(&self) -> u64 {
        self.counts.values().sum()
    }

    /// Checks every backend's share against its weight: |count - n p| <= z sqrt(n p (1 - p)) + n / 100,
    /// where n is the number answered and p = weight / total weight. The first term is the binomial
    /// spread of hashing n independent flows (z = 5: a false alarm about once in 1.7 million checks);
    /// the second allows for the Maglev table itself, whose slot shares deviate from the weights by far
    /// less than 1% at 65537 slots. Names not in `backends` must get nothing.
    pub fn check_weights(&self, backends: &[BackendSpec], z: f64) -> Result<()> {
        let n = self.answered();
        let total: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
        ensure!(total > 0, "all weights are 0");
        #[allow(clippy::cast_precision_loss)]
        let nf = n as f64;
        let mut problems = Vec::new();
        for b in backends {
            #[allow(clippy::cast_precision_loss)]
            let p = b.weight as f64 / total as f64;
            let got = self.counts.get(&b.name).copied().unwrap_or(0);
            let tol = binomial_tolerance(nf, p, z) + nf / 100.0;
            #[allow(clippy::cast_precision_loss)]
            let dev = (got as f64 - nf * p).abs();
            if dev > tol {
                problems.push(format!(
                    "{}: {got} of {n}, expected {:.1} +- {tol:.1}",
                    b.name,
                    nf * p
                ));
            }
        }
        for name in self.counts.keys() {
            if !backends.iter().any(|b| &b.name == name) {
                problems.push(format!("{name} answered but is not an expected backend"));
            }
        }
        ensure!(
            problems.is_empty(),
            "spread does not follow the weights: {}\n{self}",
            problems.join("; ")
        );
        Ok(())
    }
}

impl fmt::Display for Spread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.answered() + self.failed;
        writeln!(f, "{:<10} {:>8} {:>8}", "backend", "conns", "share")?;
        for (name, &c) in &self.counts {
            #[allow(clippy::cast_precision_loss)]
            let pct = if n == 0 {
                0.0
            } else {
                100.0 * c as f64 / n as f64
            };
            writeln!(f, "{name:<10} {c:>8} {pct:>7.1}%")?;
        }
        if self.failed > 0 {
            writeln!(f, "{:<10} {:>8}", "failed", self.failed)?;
            for e in &self.errors {
                writeln!(f, "  {e}")?;
            }
        }
        Ok(())
    }
}

/// z standard deviations of a binomial count: z sqrt(n p (1 - p)).
pub fn binomial_tolerance(n: f64, p: f64, z: f64) -> f64 {
    z * (n * p * (1.0 - p)).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maglev::{LabSpec, Mode};

    fn specs(w: &[u32]) -> Vec<BackendSpec> {
        LabSpec::new(Mode::Gre, "/bin/true").weights(w).backends
    }

    fn results(counts: &[(&str, u32)], failed: u32) -> Vec<ConnResult> {
        let mut v = Vec::new();
        for &(name, c) in counts {
            for _ in 0..c {
                v.push(ConnResult {
                    sport: 1,
                    backend: Some(name.into()),
                    error: None,
                });
            }
        }
        for _ in 0..failed {
            v.push(ConnResult {
                sport: 0,
                backend: None,
                error: Some("reset".into()),
            });
        }
        v
    }

    #[test]
    fn weight_check_accepts_binomial_noise_and_rejects_skew() {
        let w = specs(&[1, 1, 2]);
        // 1000 connections, expected 250/250/500; sigma 13.7 and 15.8.
        let ok = Spread::of(&results(&[("b1", 270), ("b2", 235), ("b3", 495)], 0));
        ok.check_weights(&w, 5.0).unwrap();
        let skewed = Spread::of(&results(&[("b1", 340), ("b2", 330), ("b3", 330)], 0));
        assert!(skewed.check_weights(&w, 5.0).is_err());
        let stranger = Spread::of(&results(
            &[("b1", 250), ("b2", 250), ("b3", 490), ("x", 10)],
            0,
        ));
        assert!(stranger.check_weights(&w, 5.0).is_err());
        let f = Spread::of(&results(&[("b1", 1)], 2));
        assert_eq!((f.answered(), f.failed, f.errors.len()), (1, 2, 2));
    }

    #[test]
    fn tolerance_is_z_sigma() {
        assert!((binomial_tolerance(1000.0, 0.5, 2.0) - 2.0 * 250f64.sqrt()).abs() < 1e-9);
        assert_eq!(binomial_tolerance(100.0, 1.0, 5.0), 0.0);
    }
}
