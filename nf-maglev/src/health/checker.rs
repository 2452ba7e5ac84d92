//! The checker thread: one probe loop per distinct [`Target`], on a one-thread async runtime.
//!
//! [`plan`] turns a configuration into targets and, for each, the backends `(VIP, backend)` its results
//! stand for: two VIPs whose backend is probed the same way (same destination, path and check) share
//! one probe. [`Checker::update`] hands the thread a new plan; loops of targets that remain keep their
//! rhythm, new ones start at a point of their interval derived from their hash (so hundreds of targets
//! spread over the interval instead of probing together), and every later probe is due one interval
//! after the previous one started, give or take up to 10 % (jitter, so targets that started together
//! drift apart). Each probe is bounded by its timeout. Results go to the control thread as [`Report`]s.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::{Mode, Validated};
use crate::health::path::{DataPath, Via, MARK};
use crate::health::probe::{self, PortRegistry, Target};
use crate::health::tracker::{Key, Outcome};

/// A probe's result, for the control thread.
#[derive(Debug, Clone)]
pub struct Report {
    /// What was probed.
    pub target: Arc<Target>,
    /// How it went.
    pub outcome: Outcome,
}

/// Targets and the backends each stands for.
pub type Plan = HashMap<Arc<Target>, Vec<Key>>;

/// The targets of `config`'s checks. With `path` true, probes go to the VIP through the data path
/// ([`Via`]); otherwise to each backend's address.
pub fn plan(config: &Validated, path: bool) -> Plan {
    let mut out: Plan = HashMap::new();
    for v in &config.vips {
        let local = match v.addr {
            IpAddr::V4(_) => config.local_v4.map(IpAddr::V4),
            IpAddr::V6(_) => config.local_v6.map(IpAddr::V6),
        };
        for b in &v.backends {
            let Some(check) = &b.check else { continue };
            let via = match v.mode {
                _ if !path => None,
                Mode::Gre => {
                    let outer = match b.addr {
                        IpAddr::V4(_) => config.local_v4.map(IpAddr::V4),
                        IpAddr::V6(_) => config.local_v6.map(IpAddr::V6),
                    };
                    outer.map(|local| Via::Gre {
                        backend: b.addr,
                        local,
                        mac: b.mac,
                    })
                }
                Mode::L2dsr => Some(Via::L2 { mac: b.mac }),
            };
            let target = Target {
                check: crate::health::check::Check {
                    // Rise and fall are the tracker's: targets differing only there share probes.
                    rise: 1,
                    fall: 1,
                    ..check.clone()
                },
                dst: SocketAddr::new(if via.is_some() { v.addr } else { b.addr }, check.port),
                src: if via.is_some() { local } else { None },
                via,
            };
            out.entry(Arc::new(target))
                .or_default()
                .push((v.name.clone(), b.name.clone()));
        }
    }
    out
}

/// The running checker. Dropping it stops the thread.
#[derive(Debug)]
pub struct Checker {
    plan: watch::Sender<Option<Vec<Arc<Target>>>>,
    thread: Option<thread::JoinHandle<()>>,
    cpu_ns: Arc<AtomicU64>,
}

impl Checker {
    /// Starts the thread with `targets`; results go to `results`; `path` carries probes that take the
    /// clients' path (targets with a [`Via`]).
    pub fn start(
        targets: Vec<Arc<Target>>,
        results: crossbeam_channel::Sender<Report>,
        path: Option<Arc<DataPath>>,
    ) -> std::io::Result<Checker> {
        let (tx, rx) = watch::channel(Some(targets));
        let cpu_ns = Arc::new(AtomicU64::new(0));
        let cpu = Arc::clone(&cpu_ns);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = thread::Builder::new()
            .name("health".into())
            .spawn(move || runtime.block_on(main(rx, results, path, cpu)))?;
        Ok(Checker {
            plan: tx,
            thread: Some(thread),
            cpu_ns,
        })
    }

    /// Replaces the targets.
    pub fn update(&self, targets: Vec<Arc<Target>>) {
        let _ = self.plan.send(Some(targets));
    }

    /// CPU time the checker's thread (probes and the data path for probes) has used, in nanoseconds
    /// (updated every 250 ms).
    pub fn cpu_ns(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.cpu_ns)
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        let _ = self.plan.send(None);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn main(
    mut plan: watch::Receiver<Option<Vec<Arc<Target>>>>,
    results: crossbeam_channel::Sender<Report>,
    path: Option<Arc<DataPath>>,
    cpu: Arc<AtomicU64>,
) {
    if let Some(p) = &path {
        let p = Arc::clone(p);
        tokio::spawn(async move {
            if let Err(e) = p.pump().await {
                log::error!(
                    "health: reading the probes' TUN device {} failed: {e}; probes through the data \
                     path fail from now on",
                    p.tun_name()
                );
            }
        });
    }
    tokio::spawn(async move {
        let mut sampler = CpuSampler::default();
        loop {
            sampler.add_to(&cpu);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    let mut loops: HashMap<Arc<Target>, tokio::task::JoinHandle<()>> = HashMap::new();
    loop {
        let Some(targets) = plan.borrow_and_update().clone() else {
            break;
        };
        let keep: HashSet<&Arc<Target>> = targets.iter().collect();
        loops.retain(|t, h| {
            let k = keep.contains(t);
            if !k {
                h.abort();
            }
            k
        });
        for t in &targets {
            if loops.contains_key(t) {
                continue;
            }
            let handle = tokio::spawn(probe_loop(Arc::clone(t), results.clone(), path.clone()));
            loops.insert(Arc::clone(t), handle);
        }
        if plan.changed().await.is_err() {
            break;
        }
    }
    for (_, h) in loops {
        h.abort();
    }
}

fn hash_of(t: &Target) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    t.hash(&mut h);
    h.finish()
}

/// The fraction `x / 2^64` of `interval`.
fn fraction(interval: Duration, x: u64) -> Duration {
    let f = (x >> 11) as f64 / (1u64 << 53) as f64;
    interval.mul_f64(f)
}

async fn probe_loop(
    t: Arc<Target>,
    results: crossbeam_channel::Sender<Report>,
    path: Option<Arc<DataPath>>,
) {
    let interval = t.check.interval.duration();
    let mut rng = hash_of(&t) | 1;
    // Spread the first probes of all targets over one interval.
    tokio::time::sleep_until(slot(Instant::now() + fraction(interval, rng))).await;
    let (mark, reg) = match (&t.via, &path) {
        (Some(_), Some(p)) => (Some(MARK), Some(Arc::clone(p))),
        _ => (None, None),
    };
    loop {
        let started = Instant::now();
        let outcome = if t.via.is_some() && reg.is_none() {
            Outcome {
                verdict: crate::health::tracker::Verdict::Error,
                error: Some("the data path for probes is not available".into()),
                duration: Duration::ZERO,
            }
        } else {
            let r: Option<&(dyn PortRegistry + Sync)> =
                reg.as_deref().map(|p| p as &(dyn PortRegistry + Sync));
            probe::run(&t, mark, r).await
        };
        if results
            .send(Report {
                target: Arc::clone(&t),
                outcome,
            })
            .is_err()
        {
            return;
        }
        // xorshift64: jitter of +-10 % on every interval.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let next = interval.mul_f64(0.9) + fraction(interval / 5, rng);
        tokio::time::sleep_until(slot(started + next)).await;
    }
}

/// Probes are started on a grid of this step: the few due within one step start in one wake-up of the
/// thread instead of one each (with 200 targets at 1 s, about 4 per step: spread, not in lockstep).
const SLOT: Duration = Duration::from_millis(20);

/// `t` rounded up to the next multiple of [`SLOT`] (counted from the process's first use of it).
pub(crate) fn slot(t: Instant) -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    let since = t.saturating_duration_since(epoch).as_nanos();
    let step = SLOT.as_nanos();
    let rounded = since.div_ceil(step) * step;
    epoch + Duration::from_nanos(u64::try_from(rounded).unwrap_or(u64::MAX))
}

/// Adds the calling thread's CPU time since its last call to a total shared by several threads.
#[derive(Debug, Default)]
pub(crate) struct CpuSampler {
    last: u64,
}

impl CpuSampler {
    /// Adds the CPU time the calling thread used since the last call (since it started, the first
    /// time) to `total`, in nanoseconds.
    pub(crate) fn add_to(&mut self, total: &AtomicU64) {
        if let Some(now) = thread_cpu_ns() {
            total.fetch_add(now.saturating_sub(self.last), Ordering::Relaxed);
            self.last = now;
        }
    }
}

/// CPU time of the calling thread, from `/proc/thread-self/schedstat` (nanoseconds on the CPU).
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MaglevSection;

    fn config(mode: &str) -> Validated {
        let s: MaglevSection = serde_json::from_str(&format!(
            r#"{{ "local_addrs": ["198.18.0.1", "2001:2::1"], "gateway_mac": "02:00:00:00:00:fe",
               "vips": [
                 {{ "name": "web", "addr": "198.18.100.1", "proto": "tcp", "port": 80, "mode": "{mode}",
                   "backends": [ {{ "name": "a", "addr": "198.18.1.1", "mac": "02:00:00:00:01:01" }},
                                 {{ "name": "b", "addr": "198.18.1.2", "mac": "02:00:00:00:01:02" }} ] }},
                 {{ "name": "web2", "addr": "198.18.100.1", "proto": "tcp", "port": 8080, "mode": "{mode}",
                   "check": {{ "type": "tcp", "port": 80 }},
                   "backends": [ {{ "name": "a", "addr": "198.18.1.1", "mac": "02:00:00:00:01:01" }} ] }},
                 {{ "name": "dns", "addr": "198.18.100.2", "proto": "udp", "port": 53, "mode": "{mode}",
                   "backends": [ {{ "name": "a", "addr": "198.18.1.1", "mac": "02:00:00:00:01:01" }} ] }} ] }}"#
        ))
        .expect("parses");
        s.validate().expect("valid")
    }

    #[test]
    fn shared_probes_are_deduplicated_and_paths_follow_the_mode() {
        let p = plan(&config("gre"), true);
        assert_eq!(p.len(), 2, "{p:?}");
        let (t, keys) = p
            .iter()
            .find(|(t, _)| t.via.as_ref().is_some_and(|v| matches!(v, Via::Gre { backend, .. } if backend.to_string() == "198.18.1.1")))
            .expect("a");
        assert_eq!(
            keys,
            &[
                ("web".to_owned(), "a".to_owned()),
                ("web2".into(), "a".into())
            ]
        );
        assert_eq!(t.dst.to_string(), "198.18.100.1:80");
        assert_eq!(t.src.map(|a| a.to_string()).as_deref(), Some("198.18.0.1"));
        assert!(
            t.route().contains("through GRE to 198.18.1.1"),
            "{}",
            t.route()
        );

        let p = plan(&config("gre"), false);
        assert!(p
            .keys()
            .all(|t| t.via.is_none() && t.dst.ip().to_string().starts_with("198.18.1.")));
        assert_eq!(p.len(), 2);

        let p = plan(&config("l2dsr"), true);
        assert!(p
            .keys()
            .all(|t| matches!(t.via, Some(Via::L2 { .. }))
                && t.dst.ip().to_string() == "198.18.100.1"));
    }

    #[test]
    fn first_probes_spread_over_the_interval() {
        let interval = Duration::from_secs(1);
        let mut buckets = [0u32; 10];
        for i in 0..1000u64 {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            i.hash(&mut h);
            let d = fraction(interval, h.finish());
            assert!(d < interval);
            buckets[(d.as_millis() / 100) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&n| (50..=150).contains(&n)),
            "{buckets:?}"
        );
    }
}
