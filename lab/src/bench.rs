//! The forwarding benchmark: every forwarder on the same lab, interleaved run by run.
//!
//! Per queue count N: one [`Lab`] with N queues, the XDP_DROP sink on the generator end (frames
//! coming back are accepted and counted, at the least cost) and GRO on the dut end (so forwarders
//! without XDP still receive). Per run, per forwarder (A B C A B C ...): wait for idle CPUs, start
//! the forwarder, wait until it is ready, run the generator at full rate for warm-up + window,
//! read counters at both ends of the window, stop the forwarder with SIGINT and check it left no
//! XDP program. The result is a rate per run; the report gives median, min, max and the ratio of
//! medians against the C reference measured the same way.
//!
//! Forwarders in XDP (the XDP_TX hairpin, nf-maglev's XDP data path) run on the generator's CPU: veth
//! runs a receiver's XDP program in the sender's softirq. Their rate is the generator's, slowed by
//! their per-packet work on the same CPU, and a run marks it ("returned all offered"). Compared with
//! one another (nf-maglev in XDP against the hairpin) the ratio still orders them by that work, diluted
//! by the generator's own share of the CPU.
//!
//! Pinning (identical for every forwarder): generator thread i on CPU i (i < N), which also
//! makes the kernel deliver its frames to rx queue i; queue i's worker on CPU (N + i) mod #CPUs.
//! On this 2-CPU machine: 1 queue = generator on CPU 0, worker on CPU 1; 2 queues = generator
//! threads and workers share CPUs 0 and 1 (the scheduler splits each CPU between them).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::counters::Counters;
use crate::forwarder::{tail, Forwarder, FwdCtx, Measure, XDP_TX_GRE_HAIRPIN, XDP_TX_HAIRPIN};
use crate::generator::{GenLimit, GenReport};
use crate::lab::Lab;
use crate::wait::wait_idle;

/// Benchmark settings.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchOpts {
    /// Queue counts to measure.
    pub queues: Vec<u32>,
    /// Runs per forwarder and queue count.
    pub runs: u32,
    /// Measurement window in seconds.
    pub seconds: f64,
    /// Warm-up before the window in seconds.
    pub warmup: f64,
    /// Frame size in bytes.
    pub size: u16,
    /// Distinct UDP source ports the generator cycles through.
    pub flows: u16,
    /// Required idle fraction of all CPUs before a window (0..1).
    pub idle_threshold: f64,
    /// Longest wait for that idleness; the run proceeds afterwards and is marked.
    pub idle_max_wait: Duration,
    /// Only forwarders with these names (all when empty).
    pub only: Vec<String>,
    /// Run the dut end's receive work (NAPI) in kernel threads on the forwarder's CPUs instead of in
    /// the generator's softirq: the XDP programs then run where the AF_XDP workers run, as on a NIC.
    pub dut_napi_on_forwarder_cpus: bool,
}

impl Default for BenchOpts {
    fn default() -> BenchOpts {
        BenchOpts {
            queues: vec![1, 2],
            runs: 5,
            seconds: 3.0,
            warmup: 1.0,
            size: 64,
            flows: 64,
            idle_threshold: 0.9,
            idle_max_wait: Duration::from_secs(30),
            only: Vec::new(),
            dut_napi_on_forwarder_cpus: false,
        }
    }
}

/// CPUs for the generator threads and the forwarder's queue workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinning {
    /// Generator thread i's CPU (feeds rx queue i).
    pub gen_cpus: Vec<usize>,
    /// Queue i's worker CPU.
    pub fwd_cpus: Vec<usize>,
}

/// The pinning for `queues` queues on `ncpus` CPUs (see the module docs).
pub fn pinning(queues: u32, ncpus: usize) -> Result<Pinning> {
    let n = usize::try_from(queues).context("queue count")?;
    if n == 0 || n > ncpus {
        bail!("{queues} queues need 1..={ncpus} CPUs: one generator thread per queue, each on its own CPU");
    }
    Ok(Pinning {
        gen_cpus: (0..n).collect(),
        fwd_cpus: (0..n).map(|i| (n + i) % ncpus).collect(),
    })
}

/// One measurement window.
#[derive(Debug, Clone, PartialEq)]
pub struct RunResult {
    /// Run number (1-based).
    pub run: u32,
    /// The forwarder's rate by its measure, in Mpps (None when the run failed).
    pub mpps: Option<f64>,
    /// Generator rate over its whole run.
    pub offered_mpps: Option<f64>,
    /// Frames back at the generator end, Mpps.
    pub returned_mpps: Option<f64>,
    /// Frames redirected into AF_XDP sockets on the dut end, Mpps.
    pub consumed_mpps: Option<f64>,
    /// Whether the machine was idle before the window.
    pub idle_ok: bool,
    /// Idle fraction measured just before the window.
    pub idle_fraction: f64,
    /// Why the run failed.
    pub error: Option<String>,
    /// Something worth knowing that did not fail the run.
    pub note: Option<String>,
}

/// All runs of one forwarder at one queue count.
#[derive(Debug, Clone, PartialEq)]
pub struct FwdResult {
    /// Queue count.
    pub queues: u32,
    /// Forwarder name.
    pub name: String,
    /// What was counted.
    pub measure: Measure,
    /// Why the forwarder was not run (e.g. binary not built).
    pub skipped: Option<String>,
    /// Runs in order.
    pub runs: Vec<RunResult>,
}

impl FwdResult {
    /// Rates of the successful runs.
    pub fn samples(&self) -> Vec<f64> {
        self.runs.iter().filter_map(|r| r.mpps).collect()
    }

    /// Median rate (mean of the middle two for an even count).
    pub fn median(&self) -> Option<f64> {
        median(&self.samples())
    }

    /// Lowest rate.
    pub fn min(&self) -> Option<f64> {
        self.samples().into_iter().reduce(f64::min)
    }

    /// Highest rate.
    pub fn max(&self) -> Option<f64> {
        self.samples().into_iter().reduce(f64::max)
    }
}

/// Median of `v` (None when empty).
pub fn median(v: &[f64]) -> Option<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(s[n / 2]),
        _ => Some((s[n / 2 - 1] + s[n / 2]) / 2.0),
    }
}

/// Run pairs (ratios of one forwarder's rate to another's) in which the first was faster.
fn ahead(pairs: &[f64]) -> usize {
    pairs.iter().filter(|&&x| x > 1.0).count()
}

/// Forwarders compared with another forwarder besides the C reference: (forwarder, against). The load
/// balancer's cost is judged against the MAC-swap echo, the least work an NF can do per packet; its
/// XDP data path against its AF_XDP twin (what moving the decision into the kernel gains) and against
/// the XDP_TX hairpin (the least work a forwarder in XDP can do, so what the decision costs there); in
/// GRE mode also against the GRE hairpin, which encapsulates as it does but decides nothing.
pub const COMPARISONS: &[(&str, &str)] = &[
    ("nf-maglev gre", "nf-echo mac-swap"),
    ("nf-maglev l2dsr", "nf-echo mac-swap"),
    ("nf-maglev gre xdp", "nf-maglev gre"),
    ("nf-maglev gre xdp", XDP_TX_HAIRPIN),
    ("nf-maglev gre xdp", XDP_TX_GRE_HAIRPIN),
    ("nf-maglev l2dsr xdp", "nf-maglev l2dsr"),
    ("nf-maglev l2dsr xdp", XDP_TX_HAIRPIN),
];

/// One forwarder against another at one queue count (see [`COMPARISONS`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// Queue count.
    pub queues: u32,
    /// The forwarder compared.
    pub name: String,
    /// The forwarder it is compared with.
    pub against: String,
    /// Ratio of medians.
    pub ratio: Option<f64>,
    /// Median of run-by-run ratios.
    pub paired: Option<f64>,
    /// Run pairs in which `name` was faster.
    pub ahead: usize,
    /// Run pairs both completed.
    pub pairs: usize,
}

/// Everything a bench produced.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchReport {
    /// Settings used.
    pub opts: BenchOpts,
    /// CPUs available.
    pub ncpus: usize,
    /// Per queue count and forwarder.
    pub results: Vec<FwdResult>,
}

impl BenchReport {
    /// Ratio of `r`'s median to the median of the C reference measured the same way at the same
    /// queue count.
    pub fn ratio(&self, r: &FwdResult) -> Option<f64> {
        self.ratio_to(r, r.measure.reference())
    }

    /// Ratio of `r`'s median to the median of the forwarder named `other` at the same queue count.
    fn ratio_to(&self, r: &FwdResult, other: &str) -> Option<f64> {
        let theirs = self.other(r, other)?.median()?;
        (theirs > 0.0)
            .then(|| r.median().map(|m| m / theirs))
            .flatten()
    }

    /// The forwarder named `name` at `r`'s queue count, if it ran.
    fn other(&self, r: &FwdResult, name: &str) -> Option<&FwdResult> {
        self.results
            .iter()
            .find(|x| x.queues == r.queues && x.name == name && x.skipped.is_none())
    }

    /// Median over runs of `r`'s rate divided by the reference's rate in the run with the same number.
    /// Runs are interleaved (A B C ... A B C), so the two rates of a pair were taken seconds apart on
    /// the same machine state: on a noisy machine this ratio varies less than the ratio of medians.
    pub fn paired_ratio(&self, r: &FwdResult) -> Option<f64> {
        median(&self.pair_ratios(r)?)
    }

    /// In how many run pairs `r` was faster than the reference, and how many pairs there were (a sign
    /// test: on a noisy machine "ahead in 9 of 11" says more than a ratio). `None` for the reference.
    pub fn pairs_ahead(&self, r: &FwdResult) -> Option<(usize, usize)> {
        if r.name == r.measure.reference() {
            return None;
        }
        let pairs = self.pair_ratios(r)?;
        Some((ahead(&pairs), pairs.len()))
    }

    /// `r`'s rate over the reference's, for each run both completed.
    fn pair_ratios(&self, r: &FwdResult) -> Option<Vec<f64>> {
        self.pair_ratios_to(r, r.measure.reference())
    }

    /// `r`'s rate over that of the forwarder named `other` at the same queue count, for each run both
    /// completed.
    fn pair_ratios_to(&self, r: &FwdResult, other: &str) -> Option<Vec<f64>> {
        let other = self.other(r, other)?;
        Some(
            r.runs
                .iter()
                .filter_map(|run| {
                    let mine = run.mpps?;
                    let theirs = other.runs.iter().find(|x| x.run == run.run)?.mpps?;
                    (theirs > 0.0).then(|| mine / theirs)
                })
                .collect(),
        )
    }

    /// The [`COMPARISONS`] both of whose forwarders ran, per queue count.
    pub fn comparisons(&self) -> Vec<Comparison> {
        let mut out = Vec::new();
        for r in self.results.iter().filter(|r| r.skipped.is_none()) {
            for &(name, against) in COMPARISONS.iter().filter(|(n, _)| *n == r.name) {
                // `None` when `against` did not run in this bench.
                let Some(pairs) = self.pair_ratios_to(r, against) else {
                    continue;
                };
                out.push(Comparison {
                    queues: r.queues,
                    name: name.to_string(),
                    against: against.to_string(),
                    ratio: self.ratio_to(r, against),
                    paired: median(&pairs),
                    ahead: ahead(&pairs),
                    pairs: pairs.len(),
                });
            }
        }
        out
    }

    /// A plain-text table, one row per queue count and forwarder.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{:<7}{:<20}{:<10}{:>9}{:>9}{:>9}{:>8}{:>8}{:>7}{:>7}\n",
            "queues",
            "forwarder",
            "measure",
            "median",
            "min",
            "max",
            "ratio",
            "paired",
            "ahead",
            "runs"
        );
        let f =
            |v: Option<f64>, p: usize| v.map_or_else(|| "-".to_string(), |x| format!("{x:.p$}"));
        for r in &self.results {
            if let Some(why) = &r.skipped {
                s.push_str(&format!("{:<7}{:<20}skipped: {why}\n", r.queues, r.name));
                continue;
            }
            s.push_str(&format!(
                "{:<7}{:<20}{:<10}{:>9}{:>9}{:>9}{:>8}{:>8}{:>7}{:>7}\n",
                r.queues,
                r.name,
                r.measure.as_str(),
                f(r.median(), 3),
                f(r.min(), 3),
                f(r.max(), 3),
                f(self.ratio(r), 2),
                f(self.paired_ratio(r), 2),
                self.pairs_ahead(r)
                    .map_or_else(|| "-".to_string(), |(a, n)| format!("{a}/{n}")),
                format!("{}/{}", r.samples().len(), r.runs.len())
            ));
        }
        s.push_str(
            "rates in Mpps; ratio = median / median of the C reference with the same measure; \
             paired = median of run-by-run ratios to it; ahead = run pairs in which it was faster\n",
        );
        for c in self.comparisons() {
            s.push_str(&format!(
                "{} queue(s): {} / {}: ratio {}, paired {}, ahead in {} of {} run pairs\n",
                c.queues,
                c.name,
                c.against,
                f(c.ratio, 2),
                f(c.paired, 2),
                c.ahead,
                c.pairs
            ));
        }
        s
    }

    /// The report as JSON.
    pub fn to_json(&self) -> Value {
        let results: Vec<Value> = self
            .results
            .iter()
            .map(|r| {
                json!({
                    "queues": r.queues,
                    "forwarder": r.name,
                    "measure": r.measure.as_str(),
                    "reference": r.measure.reference(),
                    "skipped": r.skipped,
                    "median_mpps": r.median(),
                    "min_mpps": r.min(),
                    "max_mpps": r.max(),
                    "ratio": self.ratio(r),
                    "paired_ratio": self.paired_ratio(r),
                    "pairs_ahead": self.pairs_ahead(r).map(|(a, _)| a),
                    "pairs": self.pairs_ahead(r).map(|(_, n)| n),
                    "runs": r.runs.iter().map(|x| json!({
                        "run": x.run,
                        "mpps": x.mpps,
                        "offered_mpps": x.offered_mpps,
                        "returned_mpps": x.returned_mpps,
                        "consumed_mpps": x.consumed_mpps,
                        "idle_ok": x.idle_ok,
                        "idle_fraction": x.idle_fraction,
                        "error": x.error,
                        "note": x.note,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let pin: Vec<Value> = self
            .opts
            .queues
            .iter()
            .filter_map(|&q| pinning(q, self.ncpus).ok().map(|p| json!({"queues": q, "generator_cpus": p.gen_cpus, "worker_cpus": p.fwd_cpus})))
            .collect();
        json!({
            "machine": {
                "cpus": self.ncpus,
                "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
            },
            "settings": {
                "queues": self.opts.queues,
                "runs": self.opts.runs,
                "seconds": self.opts.seconds,
                "warmup": self.opts.warmup,
                "frame_size": self.opts.size,
                "flows": self.opts.flows,
                "idle_threshold": self.opts.idle_threshold,
                "idle_max_wait_s": self.opts.idle_max_wait.as_secs_f64(),
                "pinning": pin,
            },
            "results": results,
            "comparisons": self.comparisons().iter().map(|c| json!({
                "queues": c.queues,
                "forwarder": c.name,
                "against": c.against,
                "ratio": c.ratio,
                "paired_ratio": c.paired,
                "pairs_ahead": c.ahead,
                "pairs": c.pairs,
            })).collect::<Vec<_>>(),
        })
    }
}

/// Runs the benchmark over `forwarders` (those absent or filtered out are reported as skipped).
pub fn run(opts: &BenchOpts, forwarders: &[Forwarder]) -> Result<BenchReport> {
    if opts.runs == 0 || opts.seconds <= 0.0 || opts.warmup < 0.0 {
        bail!("runs must be >= 1, seconds > 0 and warm-up >= 0");
    }
    let ncpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut report = BenchReport {
        opts: opts.clone(),
        ncpus,
        results: Vec::new(),
    };
    let selected: Vec<&Forwarder> = forwarders
        .iter()
        .filter(|f| opts.only.is_empty() || opts.only.iter().any(|o| o == &f.name))
        .collect();
    if selected.is_empty() {
        bail!("no forwarder matches {:?}", opts.only);
    }
    for &q in &opts.queues {
        let pin = pinning(q, ncpus)?;
        eprintln!(
            "== {q} queue(s): generator on CPUs {:?}, forwarder workers on CPUs {:?}",
            pin.gen_cpus, pin.fwd_cpus
        );
        let first = report.results.len();
        let mut runnable = Vec::new();
        for f in &selected {
            let skipped = f.available().err().map(|e| format!("{e:#}"));
            if let Some(why) = &skipped {
                eprintln!("skip {}: {why}", f.name);
            } else {
                runnable.push(*f);
            }
            report.results.push(FwdResult {
                queues: q,
                name: f.name.clone(),
                measure: f.measure,
                skipped,
                runs: Vec::new(),
            });
        }
        if runnable.is_empty() {
            continue;
        }
        let lab = Lab::new(q)?;
        lab.sink_returns()?;
        lab.dut_if().set_gro(true)?;
        if opts.dut_napi_on_forwarder_cpus {
            let threads = lab.dut_if().set_napi_threads(&pin.fwd_cpus)?;
            eprintln!(
                "dut receive work in NAPI threads {threads:?} on CPUs {:?}",
                pin.fwd_cpus
            );
        }
        let ctx = FwdCtx {
            ifname: lab.dut_if().name().to_string(),
            queues: q,
            cpus: pin.fwd_cpus.clone(),
        };
        for run_no in 1..=opts.runs {
            for f in &runnable {
                let r = measure_once(opts, &lab, &pin, &ctx, f, run_no);
                let shown = r.mpps.map_or_else(
                    || format!("failed: {}", r.error.as_deref().unwrap_or("?")),
                    |m| format!("{m:.3} Mpps"),
                );
                eprintln!(
                    "q={q} run {run_no}/{} {:<20} {shown} (offered {}, idle {:.0}%{}){}",
                    opts.runs,
                    f.name,
                    r.offered_mpps
                        .map_or_else(|| "-".into(), |o| format!("{o:.2}")),
                    r.idle_fraction * 100.0,
                    if r.idle_ok { "" } else { ", NOT IDLE" },
                    r.note
                        .as_deref()
                        .map(|n| format!(" [{n}]"))
                        .unwrap_or_default()
                );
                if let Some(res) = report.results[first..]
                    .iter_mut()
                    .find(|x| x.name == f.name)
                {
                    res.runs.push(r);
                }
            }
        }
    }
    Ok(report)
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

fn snapshot(lab: &Lab) -> Result<(Counters, Instant, Counters, Instant)> {
    let a = lab.gen_if().stats()?;
    let ta = Instant::now();
    let b = lab.dut_if().ethtool_stats()?;
    let tb = Instant::now();
    Ok((a, ta, b, tb))
}

#[allow(clippy::cast_precision_loss)]
fn rate(delta: u64, dt: Duration) -> f64 {
    delta as f64 / dt.as_secs_f64().max(1e-9) / 1e6
}

fn measure_once(
    opts: &BenchOpts,
    lab: &Lab,
    pin: &Pinning,
    ctx: &FwdCtx,
    f: &Forwarder,
    run: u32,
) -> RunResult {
    let mut r = RunResult {
        run,
        mpps: None,
        offered_mpps: None,
        returned_mpps: None,
        consumed_mpps: None,
        idle_ok: false,
        idle_fraction: 0.0,
        error: None,
        note: None,
    };
    match wait_idle(
        opts.idle_threshold,
        Duration::from_secs(1),
        opts.idle_max_wait,
    ) {
        Ok(idle) => {
            r.idle_ok = idle.idle;
            r.idle_fraction = idle.last_idle_fraction;
        }
        Err(e) => r.note = Some(format!("idle check failed: {e:#}")),
    }
    if let Err(e) = window(opts, lab, pin, ctx, f, &mut r) {
        r.mpps = None;
        r.error = Some(format!("{e:#}"));
    }
    // Whatever happened, leave the dut end as we found it.
    match lab.dut_if().xdp_prog() {
        Ok(Some(p)) => {
            let msg = format!(
                "left XDP program {} (id {}) attached; detached it",
                p.name, p.id
            );
            r.error.get_or_insert(msg);
            let _ = lab.dut_if().detach_xdp();
        }
        Ok(None) => {}
        Err(e) => r.note = Some(format!("XDP check failed: {e:#}")),
    }
    r
}

fn window(
    opts: &BenchOpts,
    lab: &Lab,
    pin: &Pinning,
    ctx: &FwdCtx,
    f: &Forwarder,
    r: &mut RunResult,
) -> Result<()> {
    let mut fwd = f.start(&lab.dut, ctx)?;
    f.wait_ready(&mut fwd, lab.dut_if(), Duration::from_secs(10))?;

    let mut spec = lab.gen_spec_v4(GenLimit::Duration(secs(opts.warmup + opts.seconds + 0.3)));
    spec.cpus = pin.gen_cpus.clone();
    spec.flows = opts.flows;
    spec.size = opts.size;
    let mut generator = spec.spawn(&lab.generator)?;

    std::thread::sleep(secs(opts.warmup));
    let (a0, ta0, b0, tb0) = snapshot(lab)?;
    std::thread::sleep(secs(opts.seconds));
    let (a1, ta1, b1, tb1) = snapshot(lab)?;

    let gen_report = GenReport::from_proc(&mut generator);
    if let Some(st) = fwd.proc.try_wait()? {
        bail!(
            "{} exited during the run ({st}): {}",
            f.name,
            tail(&fwd.proc.stderr(), 5)
        );
    }
    let st = fwd.proc.stop(Duration::from_secs(3))?;
    if !st.success() {
        r.note = Some(format!(
            "{} exited with {st} after SIGINT: {}",
            f.name,
            tail(&fwd.proc.stderr(), 3)
        ));
    }
    let gen_report = gen_report?;
    r.offered_mpps = Some(gen_report.pps / 1e6);
    let returned = rate(
        a1.get("rx_packets").saturating_sub(a0.get("rx_packets")),
        ta1 - ta0,
    );
    let consumed = rate(b1.delta(&b0).sum_suffix("_xdp_redirect"), tb1 - tb0);
    r.returned_mpps = Some(returned);
    r.consumed_mpps = Some(consumed);
    r.mpps = Some(match f.measure {
        Measure::Returned => returned,
        Measure::Consumed => consumed,
    });
    if f.measure == Measure::Returned && generator_bound(returned, gen_report.pps / 1e6) {
        r.note.get_or_insert_with(|| {
            "returned all offered: bound by the generator's CPU, which on veth also runs XDP forwarding"
                .to_string()
        });
    }
    Ok(())
}

/// Whether a forwarder returned (nearly) every frame offered, so the generator's CPU set the rate. An
/// XDP forwarder on veth always does: veth runs the receiver's XDP program in the softirq of the CPU
/// that sent the frame, so the generator's CPU generates, forwards (XDP_TX) and sinks every frame, and
/// the rate is that of the whole loop on one CPU (the workers' CPUs stay idle).
fn generator_bound(returned_mpps: f64, offered_mpps: f64) -> bool {
    offered_mpps > 0.0 && returned_mpps >= 0.98 * offered_mpps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinning_on_two_cpus() {
        assert_eq!(
            pinning(1, 2).unwrap(),
            Pinning {
                gen_cpus: vec![0],
                fwd_cpus: vec![1]
            }
        );
        assert_eq!(
            pinning(2, 2).unwrap(),
            Pinning {
                gen_cpus: vec![0, 1],
                fwd_cpus: vec![0, 1]
            }
        );
        assert_eq!(
            pinning(2, 4).unwrap(),
            Pinning {
                gen_cpus: vec![0, 1],
                fwd_cpus: vec![2, 3]
            }
        );
        assert!(pinning(3, 2).is_err());
        assert!(pinning(0, 2).is_err());
    }

    #[test]
    fn generator_bound_when_nearly_all_return() {
        assert!(generator_bound(12.83, 12.84));
        assert!(!generator_bound(1.2, 5.3));
        assert!(!generator_bound(0.0, 0.0));
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    fn res(name: &str, measure: Measure, rates: &[Option<f64>]) -> FwdResult {
        FwdResult {
            queues: 1,
            name: name.into(),
            measure,
            skipped: None,
            runs: rates
                .iter()
                .enumerate()
                .map(|(i, m)| RunResult {
                    run: u32::try_from(i).unwrap() + 1,
                    mpps: *m,
                    offered_mpps: None,
                    returned_mpps: None,
                    consumed_mpps: None,
                    idle_ok: true,
                    idle_fraction: 1.0,
                    error: m.is_none().then(|| "x".to_string()),
                    note: None,
                })
                .collect(),
        }
    }

    /// A report of `results` on two CPUs with the default options.
    fn report_of(results: Vec<FwdResult>) -> BenchReport {
        BenchReport {
            opts: BenchOpts::default(),
            ncpus: 2,
            results,
        }
    }

    #[test]
    fn ratios_use_the_reference_with_the_same_measure() {
        let report = report_of(vec![
            res(
                "c-l2fwd",
                Measure::Returned,
                &[Some(0.5), Some(0.4), Some(0.6)],
            ),
            res("c-l2fwd-drop", Measure::Consumed, &[Some(2.0)]),
            res(
                "nf-echo mac-swap",
                Measure::Returned,
                &[Some(0.25), None, Some(0.25)],
            ),
            res("nf-echo drop", Measure::Consumed, &[Some(3.0)]),
        ]);
        let r = &report.results;
        assert_eq!(report.ratio(&r[0]), Some(1.0));
        assert_eq!(report.ratio(&r[2]), Some(0.5));
        assert_eq!(report.ratio(&r[3]), Some(1.5));
        // Run by run: 0.25/0.5 and 0.25/0.6 (run 2 failed), median of the two.
        let paired = report.paired_ratio(&r[2]).unwrap();
        assert!(
            (paired - (0.5 + 0.25 / 0.6) / 2.0).abs() < 1e-12,
            "{paired}"
        );
        assert_eq!(report.paired_ratio(&r[0]), Some(1.0));
        assert_eq!(report.pairs_ahead(&r[2]), Some((0, 2)));
        assert_eq!(report.pairs_ahead(&r[3]), Some((1, 1)));
        assert_eq!(report.pairs_ahead(&r[0]), None);
        assert_eq!(r[2].samples().len(), 2);
        assert_eq!(r[0].min(), Some(0.4));
        assert_eq!(r[0].max(), Some(0.6));
        let table = report.table();
        assert!(table.contains("nf-echo mac-swap"), "{table}");
        assert!(table.contains("2/3"), "{table}");
        let j = report.to_json();
        assert_eq!(j["results"][2]["ratio"], 0.5);
        assert_eq!(j["results"][0]["paired_ratio"], 1.0);
        assert_eq!(j["results"][2]["pairs_ahead"], 0);
        assert_eq!(j["results"][2]["pairs"], 2);
        assert_eq!(j["settings"]["pinning"][0]["worker_cpus"], json!([1]));
        assert!(
            report.comparisons().is_empty(),
            "no nf-maglev in this bench"
        );
    }

    #[test]
    fn load_balancer_is_compared_with_the_echo() {
        let report = report_of(vec![
            res("c-l2fwd", Measure::Returned, &[Some(0.5), Some(0.5)]),
            res(
                "nf-echo mac-swap",
                Measure::Returned,
                &[Some(0.4), Some(0.5)],
            ),
            res(
                "nf-maglev gre",
                Measure::Returned,
                &[Some(0.42), Some(0.45)],
            ),
            res("nf-maglev l2dsr", Measure::Returned, &[Some(0.5), None]),
        ]);
        let c = report.comparisons();
        assert_eq!(c.len(), 2);
        // l2dsr completed one run: its median over the echo's (0.5 / 0.45), and one pair (0.5 / 0.4).
        assert_eq!(c[1].name, "nf-maglev l2dsr");
        assert!(
            (c[1].ratio.unwrap() - 0.5 / 0.45).abs() < 1e-12,
            "{:?}",
            c[1]
        );
        assert_eq!((c[1].paired, c[1].ahead, c[1].pairs), (Some(1.25), 1, 1));
        assert_eq!(
            (c[0].name.as_str(), c[0].against.as_str()),
            ("nf-maglev gre", "nf-echo mac-swap")
        );
        assert!(
            (c[0].ratio.unwrap() - 0.435 / 0.45).abs() < 1e-12,
            "{:?}",
            c[0]
        );
        // Run by run: 0.42 / 0.4 = 1.05 (ahead) and 0.45 / 0.5 = 0.9.
        assert!((c[0].paired.unwrap() - 0.975).abs() < 1e-12, "{:?}", c[0]);
        assert_eq!((c[0].ahead, c[0].pairs), (1, 2));
        assert!(
            report.table().contains(
                "nf-maglev gre / nf-echo mac-swap: ratio 0.97, paired 0.97, ahead in 1 of 2"
            ),
            "{}",
            report.table()
        );
        assert_eq!(report.to_json()["comparisons"][0]["pairs_ahead"], 1);
    }

    #[test]
    fn xdp_data_path_is_compared_with_its_twin_and_the_hairpin() {
        let report = report_of(vec![
            res(
                "c-l2fwd",
                Measure::Returned,
                &[Some(0.5), Some(0.5), Some(0.5)],
            ),
            res(
                XDP_TX_HAIRPIN,
                Measure::Returned,
                &[Some(2.0), Some(2.5), Some(3.0)],
            ),
            res(
                XDP_TX_GRE_HAIRPIN,
                Measure::Returned,
                &[Some(1.6), Some(2.0), Some(2.0)],
            ),
            res(
                "nf-maglev gre",
                Measure::Returned,
                &[Some(0.4), Some(0.5), Some(0.6)],
            ),
            res(
                "nf-maglev gre xdp",
                Measure::Returned,
                &[Some(1.6), Some(1.5), None],
            ),
            res("nf-maglev l2dsr xdp", Measure::Returned, &[Some(2.4)]),
        ]);
        // The hairpin has the C reference's measure, so the ratio column compares it with c-l2fwd.
        assert_eq!(report.ratio(&report.results[1]), Some(5.0));
        let c = report.comparisons();
        let pairs: Vec<(&str, &str)> = c
            .iter()
            .map(|c| (c.name.as_str(), c.against.as_str()))
            .collect();
        // "nf-maglev l2dsr" did not run: its XDP twin is compared with the hairpin only.
        assert_eq!(
            pairs,
            [
                ("nf-maglev gre xdp", "nf-maglev gre"),
                ("nf-maglev gre xdp", XDP_TX_HAIRPIN),
                ("nf-maglev gre xdp", XDP_TX_GRE_HAIRPIN),
                ("nf-maglev l2dsr xdp", XDP_TX_HAIRPIN),
            ]
        );
        let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-12);
        // Medians 1.55 / 0.5; run by run 1.6 / 0.4 = 4 and 1.5 / 0.5 = 3 (run 3 failed).
        assert!(close(c[0].ratio, 1.55 / 0.5), "{:?}", c[0]);
        assert!(close(c[0].paired, 3.5), "{:?}", c[0]);
        assert_eq!((c[0].ahead, c[0].pairs), (2, 2));
        // Against the hairpin: 1.55 / 2.5; runs 1.6 / 2.0 = 0.8 and 1.5 / 2.5 = 0.6.
        assert!(close(c[1].ratio, 1.55 / 2.5), "{:?}", c[1]);
        assert!(close(c[1].paired, 0.7), "{:?}", c[1]);
        assert_eq!((c[1].ahead, c[1].pairs), (0, 2));
        // Against the GRE hairpin: 1.55 / 2.0; runs 1.6 / 1.6 = 1 (not ahead) and 1.5 / 2.0 = 0.75.
        assert!(close(c[2].ratio, 1.55 / 2.0), "{:?}", c[2]);
        assert!(close(c[2].paired, 0.875), "{:?}", c[2]);
        assert_eq!((c[2].ahead, c[2].pairs), (0, 2));
        assert!(close(c[3].ratio, 2.4 / 2.5), "{:?}", c[3]);
        assert_eq!((c[3].paired, c[3].ahead, c[3].pairs), (Some(1.2), 1, 1));
        let table = report.table();
        assert!(
            table.contains(
                "1 queue(s): nf-maglev gre xdp / nf-maglev gre: ratio 3.10, paired 3.50, ahead in 2 of 2"
            ),
            "{table}"
        );
        assert!(
            table.contains(
                "nf-maglev gre xdp / xdp-tx hairpin: ratio 0.62, paired 0.70, ahead in 0 of 2"
            ),
            "{table}"
        );
        let j = report.to_json();
        assert_eq!(j["comparisons"][1]["against"], XDP_TX_HAIRPIN);
        assert_eq!(j["comparisons"][2]["against"], XDP_TX_GRE_HAIRPIN);
        assert_eq!(j["comparisons"][3]["pairs"], 1);
    }
}
