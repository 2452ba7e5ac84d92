//! `lab`: benchmark forwarders on a veth lab, or clean up leftovers.
//!
//! `lab bench` runs every built-in forwarder (skipping those not built) per queue count,
//! interleaved run by run, and prints a table (and optionally JSON). `lab cleanup --prefix lab`
//! removes namespaces and links left by killed runs. `lab maglev-demo` builds the Maglev lab (client,
//! nf-maglev, three real backends), makes real TCP connections through it and prints how they spread.
//! `lab health-bench` kills a backend under a steady stream of new connections and compares removal by
//! health checks with an immediate weight 0 through the admin API.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use lab::bench::{self, BenchOpts};
use lab::maglev::{self, DemoOpts, HealthBenchOpts, Mode};
use lab::{cleanup, forwarder, tools};

#[derive(Debug, Parser)]
#[command(
    name = "lab",
    about = "veth lab harness: forwarding benchmark, Maglev demo and cleanup"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Measure forwarders (median of interleaved runs, ratio against the C reference).
    Bench {
        /// Queue counts to measure.
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        queues: Vec<u32>,
        /// Runs per forwarder and queue count.
        #[arg(long, default_value_t = 5)]
        runs: u32,
        /// Measurement window in seconds.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Warm-up before each window in seconds.
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
        /// Frame size in bytes (>= 64).
        #[arg(long, default_value_t = 64)]
        size: u16,
        /// Distinct UDP source ports in the generated traffic.
        #[arg(long, default_value_t = 64)]
        flows: u16,
        /// Idle fraction of all CPUs required before each window.
        #[arg(long, default_value_t = 0.9)]
        idle_threshold: f64,
        /// Longest wait for an idle machine, in seconds.
        #[arg(long, default_value_t = 30)]
        idle_wait: u64,
        /// Only these forwarders (comma-separated names, e.g. "c-l2fwd,nf-echo mac-swap").
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Run the dut end's receive work (its XDP program included) in NAPI threads on the
        /// forwarder's CPUs, not in the generator's softirq (as a NIC queue on its own CPU).
        #[arg(long)]
        dut_napi_on_forwarder_cpus: bool,
        /// Directory of the nf-* release binaries (default: this binary's directory or target/release).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        /// Also write the report as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Build the Maglev lab, run real TCP connections through nf-maglev, print the spread, tear down.
    MaglevDemo {
        /// Forwarding mode towards the backends.
        #[arg(long, default_value = "gre", value_parser = ["gre", "l2dsr"])]
        mode: String,
        /// New TCP connections to make (one HTTP request each).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        connections: u32,
        /// Directory of the nf-maglev binary (default: this binary's directory or target/release).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
    },
    /// Kill a backend under a steady stream of new connections: detection time and failed connections
    /// with health checks, next to an immediate weight 0 through the admin API.
    HealthBench {
        /// Forwarding mode towards the backends.
        #[arg(long, default_value = "gre", value_parser = ["gre", "l2dsr"])]
        mode: String,
        /// Runs (each measures both methods).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
        runs: u32,
        /// New connections per second.
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=2000))]
        rate: u32,
        /// Check interval in seconds.
        #[arg(long, default_value_t = 0.5)]
        interval: f64,
        /// Check timeout in seconds.
        #[arg(long, default_value_t = 0.3)]
        timeout: f64,
        /// Failed checks in a row that take a backend out.
        #[arg(long, default_value_t = 3)]
        fall: u32,
        /// Good checks in a row that bring it back.
        #[arg(long, default_value_t = 2)]
        rise: u32,
        /// Directory of the nf-maglev binary (default: this binary's directory or target/release).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
    },
    /// Hold the XDP_TX hairpin (MAC swap, XDP_TX) on an interface until SIGINT or SIGTERM, then detach
    /// it: the bench's kernel-only reference forwarder.
    #[command(hide = true)]
    XdpHairpin {
        /// Interface (in the current namespace).
        #[arg(long)]
        dev: String,
        /// Also put each datagram in GRE in a fixed outer IPv4 header (the GRE hairpin).
        #[arg(long)]
        gre: bool,
    },
    /// Delete namespaces and links whose names start with a prefix.
    Cleanup {
        /// Name prefix (at least 3 characters).
        #[arg(long, default_value = lab::names::PREFIX)]
        prefix: String,
        /// Also terminate processes still running inside those namespaces (by PID).
        #[arg(long)]
        kill_procs: bool,
    },
}

/// Set by `lab bench`'s interrupt handler as it starts removing the lab.
static BENCH_INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn main() -> Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match Cli::parse().cmd {
        Cmd::Bench {
            queues,
            runs,
            seconds,
            warmup,
            size,
            flows,
            idle_threshold,
            idle_wait,
            only,
            dut_napi_on_forwarder_cpus,
            bin_dir,
            json,
        } => {
            let opts = BenchOpts {
                queues,
                runs,
                seconds,
                warmup,
                size,
                flows,
                idle_threshold,
                idle_max_wait: Duration::from_secs(idle_wait),
                only,
                dut_napi_on_forwarder_cpus,
            };
            // Ctrl-C or SIGTERM mid-run: stop what this run started (every process in its namespaces) and
            // remove its namespaces and links, so an interrupted benchmark leaves nothing behind.
            ctrlc::set_handler(|| {
                BENCH_INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
                let prefix = format!("{}{}_", lab::names::PREFIX, std::process::id());
                match cleanup::cleanup(&prefix, true) {
                    Ok(_) => eprintln!("interrupted: the lab is removed"),
                    Err(e) => eprintln!("interrupted; removing the lab failed: {e:#}"),
                }
                std::process::exit(130);
            })
            .context("installing the SIGINT/SIGTERM handler")?;
            let bin_dir = bin_dir.unwrap_or_else(tools::release_bin_dir);
            let report = bench::run(&opts, &forwarder::builtin(&bin_dir));
            // An interrupt ends the run's processes under it, so the run may return (a failed step)
            // before the handler is done removing the lab: the handler decides the exit, with 130.
            if BENCH_INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::sleep(Duration::from_secs(60));
                std::process::exit(130);
            }
            let report = report?;
            print!("{}", report.table());
            if let Some(path) = json {
                let text = serde_json::to_string_pretty(&report.to_json())?;
                std::fs::write(&path, text + "\n")
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
        }
        Cmd::MaglevDemo {
            mode,
            connections,
            bin_dir,
        } => {
            let mode: Mode = mode.parse()?;
            let nf_maglev = maglev_lab_setup(bin_dir)?;
            println!(
                "maglev demo: mode {mode}, {connections} connections, {}",
                nf_maglev.display()
            );
            let report = unless_interrupted(
                maglev::demo(&DemoOpts {
                    mode,
                    connections,
                    nf_maglev,
                }),
                "maglev demo",
            )?;
            print!("{report}");
            if report.spread.failed > 0 || report.weights_ok.is_err() {
                anyhow::bail!("maglev demo ({mode}): not every connection behaved");
            }
        }
        Cmd::HealthBench {
            mode,
            runs,
            rate,
            interval,
            timeout,
            fall,
            rise,
            bin_dir,
        } => {
            let mode: Mode = mode.parse()?;
            let nf_maglev = maglev_lab_setup(bin_dir)?;
            let opts = HealthBenchOpts {
                mode,
                runs,
                rate,
                interval,
                timeout,
                fall,
                rise,
                nf_maglev,
            };
            let report = unless_interrupted(maglev::health_bench(&opts), "health bench")?;
            print!("{report}");
            if !report.goal_met() {
                anyhow::bail!("health bench ({mode}): goal not met");
            }
        }
        Cmd::XdpHairpin { dev, gre } => {
            // Installed before the attach, so a stop that comes right after readiness is not lost.
            let (stop, stopped) = std::sync::mpsc::channel();
            ctrlc::set_handler(move || {
                let _ = stop.send(());
            })
            .context("installing the SIGINT/SIGTERM handler")?;
            forwarder::hairpin(&dev, gre, || {
                let _ = stopped.recv();
            })?;
        }
        Cmd::Cleanup { prefix, kill_procs } => {
            let r = cleanup::cleanup(&prefix, kill_procs)?;
            for n in &r.netns {
                println!("deleted namespace {n}");
            }
            for l in &r.links {
                println!("deleted link {l}");
            }
            for p in &r.killed {
                println!("terminated pid {p}");
            }
            if r.netns.is_empty() && r.links.is_empty() {
                println!("nothing left with prefix {prefix}");
            }
        }
    }
    Ok(())
}

/// What the commands that build a Maglev lab share: Ctrl-C unwinds the lab (every wait gives up) so
/// `Drop` removes it, a second one exits; the nf-maglev binary of `bin_dir` (default: the release
/// build), which must exist.
fn maglev_lab_setup(bin_dir: Option<PathBuf>) -> Result<PathBuf> {
    ctrlc::set_handler(|| {
        if maglev::interrupt() {
            std::process::exit(130);
        }
        eprintln!("interrupted: tearing the lab down");
    })
    .context("installing the SIGINT/SIGTERM handler")?;
    let nf_maglev = bin_dir
        .unwrap_or_else(tools::release_bin_dir)
        .join("nf-maglev");
    tools::require_executable(&nf_maglev)
        .context("build it first: cargo build --release -p nf-maglev")?;
    Ok(nf_maglev)
}

/// `result`, or, when Ctrl-C ended it, a note that `what` was interrupted and the lab removed, and
/// exit status 130.
fn unless_interrupted<T>(result: Result<T>, what: &str) -> Result<T> {
    match result {
        Err(e) if maglev::interrupted() => {
            log::debug!("{e:#}");
            eprintln!("{what} interrupted; the lab is removed");
            std::process::exit(130);
        }
        r => r,
    }
}
