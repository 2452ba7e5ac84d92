//! nf-echo: the echo network function.
//!
//! One worker thread per `threads` entry of the JSON-C config, each owning its lports' AF_XDP
//! sockets. Modes: `echo` (ARP, neighbour discovery, ICMP/ICMPv6 echo and UDP echo for the addresses
//! of the config's `echo` section), `mac-swap` (L2 loopback, as cndpfwd's `lb`) and `drop` (rx-drop).
//! `--backend af-packet` runs the same logic over an AF_PACKET socket, for comparison.
#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use cne::afpacket::AfPacket;
use cne::bpf::filter::AddrFlags;
use cne::config::Config;
use cne::frame::{Frame, VecFrame};
use cne::instance::{Instance, InstanceOptions, PortLoop, Worker};
use cne::sys::netdev::LinkWatch;
use cne::xsk::packet::Packet;
use cne::xsk::poll::WaitStats;
use cne::xsk::port::Port;
use cne::xsk::stats::PortStats;
use nf_echo::echo::{self, DropReason, EchoConfig, EchoCounters, Mode, Verdict};
use serde::Deserialize;

/// Packets per RX/TX burst.
const BURST: usize = 64;
/// How often workers publish their counters for the stats line.
const PUBLISH_EVERY: Duration = Duration::from_millis(250);

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Echo network function over AF_XDP (CNDP-style JSON-C config)"
)]
struct Cli {
    /// JSON-C config file (CNDP schema plus an `echo` section).
    #[arg(short = 'c', long = "config", value_name = "FILE.jsonc")]
    config: Option<PathBuf>,
    /// Override the `echo.mode` of the config.
    #[arg(long, value_enum)]
    mode: Option<CliMode>,
    /// Packet I/O backend.
    #[arg(long, value_enum, default_value_t = Backend::AfXdp)]
    backend: Backend,
    /// Replace an XDP program someone else attached to the interface (through netlink, or through a
    /// bpf_link of another process). Our own program never needs it: it leaves with the process.
    #[arg(long)]
    force: bool,
    /// Seconds between stats lines (0: none).
    #[arg(long, default_value_t = 1)]
    stats_interval: u64,
    /// Stop after this many seconds (default: run until SIGINT/SIGTERM).
    #[arg(long)]
    duration: Option<u64>,
    /// Exit with an error when an interface the NF serves has been gone this many seconds (its
    /// sockets cannot serve again; a supervisor restarts the NF). A re-created interface exits at once.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    netdev_timeout: u64,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a config for this pod from the device plugin's environment (AFXDP_DEVICES_*).
    GenConfig(Box<cne::k8s::gen_config::GenConfig>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CliMode {
    Echo,
    MacSwap,
    Drop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    AfXdp,
    AfPacket,
}

/// The `echo` section of the config.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EchoSection {
    /// `echo`, `mac-swap` or `drop`.
    #[serde(default)]
    mode: Option<String>,
    /// Addresses the NF answers for (ARP/ND, ICMP, UDP).
    #[serde(default)]
    addrs: Vec<IpAddr>,
    /// UDP ports echoed (empty: all).
    #[serde(default)]
    udp_ports: Vec<u16>,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nf-echo: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    if let Some(Command::GenConfig(cfg)) = &cli.command {
        return cne::k8s::gen_config::run_gen_config(cfg).context("gen-config");
    }
    let path = cli
        .config
        .clone()
        .context("no config: pass -c FILE.jsonc")?;
    let config = Config::load(&path)?;
    let section: EchoSection = config.section("echo")?.unwrap_or_default();
    let mode = match (cli.mode, section.mode.as_deref()) {
        (Some(CliMode::Echo), _) | (None, None | Some("echo")) => Mode::Echo,
        (Some(CliMode::MacSwap), _) | (None, Some("mac-swap")) => Mode::MacSwap,
        (Some(CliMode::Drop), _) | (None, Some("drop")) => Mode::Drop,
        (None, Some(other)) => {
            return Err(config
                .error_at(
                    "echo.mode",
                    format!("unknown mode \"{other}\" (expected echo, mac-swap or drop)"),
                )
                .into())
        }
    };
    if mode == Mode::Echo && section.addrs.is_empty() {
        return Err(config
            .error_at("echo.addrs", "echo mode needs at least one address")
            .into());
    }

    let stop = Arc::new(AtomicBool::new(false));
    // The handler runs on a thread of its own. Over AF_XDP it starts after the capability drop, so
    // that thread holds only the three capabilities too; a signal during set-up ends the process,
    // and the kernel detaches our program with its bpf_link.
    if cli.backend == Backend::AfPacket {
        install_signal_handler(&stop)?;
    }
    let settings = Settings {
        mode,
        addrs: section.addrs,
        udp_ports: section.udp_ports,
    };
    log::info!(
        "nf-echo: {} mode, {:?} backend, config {}",
        mode_name(mode),
        cli.backend,
        path.display()
    );
    match cli.backend {
        Backend::AfXdp => run_af_xdp(config, &cli, &settings, &stop),
        Backend::AfPacket => run_af_packet(&config, &cli, &settings, &stop),
    }
}

/// SIGINT and SIGTERM set `stop`.
fn install_signal_handler(stop: &Arc<AtomicBool>) -> Result<()> {
    let stop = Arc::clone(stop);
    ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
        .context("installing the SIGINT/SIGTERM handler")
}

struct Settings {
    mode: Mode,
    addrs: Vec<IpAddr>,
    udp_ports: Vec<u16>,
}

impl Settings {
    fn echo_config(&self, netdev: &str) -> Result<EchoConfig> {
        Ok(EchoConfig {
            mode: self.mode,
            mac: cne::sys::netdev::mac_address(netdev)?,
            addrs: self.addrs.clone(),
            udp_ports: self.udp_ports.clone(),
        })
    }
}

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Echo => "echo",
        Mode::MacSwap => "mac-swap",
        Mode::Drop => "drop",
    }
}

/// What a worker publishes for the stats line.
#[derive(Debug, Clone, Default)]
struct PortReport {
    name: String,
    mode: String,
    stats: PortStats,
    echo: EchoCounters,
    /// The worker's sleeps (shared by all its ports).
    wait: WaitStats,
}

type Reports = Arc<Mutex<Vec<PortReport>>>;

fn run_af_xdp(
    config: Config,
    cli: &Cli,
    settings: &Settings,
    stop: &Arc<AtomicBool>,
) -> Result<()> {
    let opts = InstanceOptions {
        force: cli.force,
        claim_all: settings.mode != Mode::Echo,
    };
    let mut instance = Instance::open(config, &opts)?;
    if settings.mode == Mode::Echo {
        for prog in instance.programs() {
            for &a in &settings.addrs {
                prog.own_address(a, AddrFlags::OWN_ALL | AddrFlags::NEIGH | AddrFlags::FRAGS)
                    .with_context(|| format!("claiming {a} on {}", prog.ifname()))?;
            }
        }
    }
    // Sockets are set up and no thread has started yet: every thread inherits the reduced set.
    cne::sys::privs::drop_to_running_nf_caps().context("dropping capabilities after set-up")?;
    install_signal_handler(stop)?;
    let links = watch_links(instance.config(), cli)?;
    let workers = instance.take_workers();
    let reports: Reports = Arc::new(Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    for w in workers {
        let mut cfgs = Vec::new();
        for l in &w.lports {
            cfgs.push(settings.echo_config(l.socket().ifname())?);
        }
        let slot = {
            let mut r = reports
                .lock()
                .map_err(|_| anyhow::anyhow!("stats lock poisoned"))?;
            let first = r.len();
            for l in &w.lports {
                r.push(PortReport {
                    name: l.name.clone(),
                    mode: l.socket().mode().to_string(),
                    ..Default::default()
                });
            }
            first
        };
        let stop = Arc::clone(stop);
        let reports = Arc::clone(&reports);
        let name = w.name.clone();
        let h = thread::Builder::new()
            .name(name.clone())
            .spawn(move || worker_af_xdp(w, cfgs, slot, reports, stop))
            .with_context(|| format!("spawning worker {name}"))?;
        handles.push((name, h));
    }
    let first_err = finish(cli, stop, &reports, handles, links);
    drop(instance);
    first_err.map_or(Ok(()), Err)
}

fn worker_af_xdp(
    w: Worker,
    cfgs: Vec<EchoConfig>,
    slot: usize,
    reports: Reports,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let counters = vec![EchoCounters::default(); cfgs.len()];
    w.serve(
        &stop,
        EchoLoop {
            cfgs,
            counters,
            slot,
            reports,
        },
    )?;
    Ok(())
}

/// nf-echo's part of the shared packet loop: each packet through [`echo::process`].
struct EchoLoop {
    cfgs: Vec<EchoConfig>,
    counters: Vec<EchoCounters>,
    slot: usize,
    reports: Reports,
}

impl PortLoop for EchoLoop {
    fn burst<'p>(
        &mut self,
        index: usize,
        _port: &mut Port<'p>,
        rx: &mut Vec<Packet<'p>>,
        tx: &mut Vec<Packet<'p>>,
    ) {
        let (cfg, counters) = (&self.cfgs[index], &mut self.counters[index]);
        for mut pkt in rx.drain(..) {
            if echo::process(&mut pkt, cfg, counters) == Verdict::Tx {
                tx.push(pkt);
            }
        }
    }

    fn report(&mut self, ports: &[Port<'_>], wait: WaitStats, _last: bool) {
        publish(ports, &self.counters, wait, self.slot, &self.reports);
    }
}

fn publish(
    ports: &[Port<'_>],
    counters: &[EchoCounters],
    wait: WaitStats,
    slot: usize,
    reports: &Reports,
) {
    let Ok(mut r) = reports.lock() else { return };
    for (i, port) in ports.iter().enumerate() {
        let stats = port.stats().unwrap_or_else(|_| *port.sw_stats());
        if let Some(rep) = r.get_mut(slot + i) {
            rep.stats = stats;
            rep.echo = counters[i];
            rep.wait = wait;
        }
    }
}

fn run_af_packet(
    config: &Config,
    cli: &Cli,
    settings: &Settings,
    stop: &Arc<AtomicBool>,
) -> Result<()> {
    // One socket per netdev: AF_PACKET sees every queue of the device, so one thread serves them all.
    let mut netdevs: Vec<String> = config.lports().iter().map(|l| l.netdev.clone()).collect();
    netdevs.dedup();
    let reports: Reports = Arc::new(Mutex::new(
        netdevs
            .iter()
            .map(|n| PortReport {
                name: n.clone(),
                mode: "af-packet".into(),
                ..Default::default()
            })
            .collect(),
    ));
    let links = watch_links(config, cli)?;
    let mut handles = Vec::new();
    for (slot, netdev) in netdevs.into_iter().enumerate() {
        let cfg = settings.echo_config(&netdev)?;
        let sock =
            AfPacket::open(&netdev).with_context(|| format!("AF_PACKET socket on {netdev}"))?;
        let stop = Arc::clone(stop);
        let reports = Arc::clone(&reports);
        let h = thread::Builder::new()
            .name(format!("afp:{netdev}"))
            .spawn(move || worker_af_packet(sock, cfg, slot, reports, stop))
            .context("spawning AF_PACKET worker")?;
        handles.push((netdev, h));
    }
    let first_err = finish(cli, stop, &reports, handles, links);
    first_err.map_or(Ok(()), Err)
}

/// Watches the interfaces of the config's lports (see `--netdev-timeout`).
fn watch_links(config: &Config, cli: &Cli) -> Result<LinkWatch> {
    LinkWatch::new(
        config.lports().iter().map(|l| l.netdev.as_str()),
        Duration::from_secs(cli.netdev_timeout),
    )
    .context("watching the lports' interfaces")
}

fn worker_af_packet(
    mut sock: AfPacket,
    cfg: EchoConfig,
    slot: usize,
    reports: Reports,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let mut frames: Vec<VecFrame> = (0..BURST)
        .map(|_| VecFrame::new(&[], 0, VecFrame::DEFAULT_CAPACITY))
        .collect();
    let mut counters = EchoCounters::default();
    let mut stats = PortStats::default();
    let mut last_publish = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let n = sock.recv_batch(&mut frames).context("recvmmsg")?;
        if n == 0 {
            sock.poll_readable(Some(Duration::from_millis(20)))
                .context("poll")?;
        }
        // Frames to send are moved to the front of the batch: no copy, no allocation.
        let mut keep = 0;
        for i in 0..n {
            stats.rx_packets += 1;
            stats.rx_bytes += frames[i].len() as u64;
            if echo::process(&mut frames[i], &cfg, &mut counters) == Verdict::Tx {
                frames.swap(i, keep);
                keep += 1;
            }
        }
        if keep > 0 {
            let sent = sock.send_batch(&frames[..keep]).context("sendmmsg")?;
            stats.tx_packets += sent as u64;
            stats.tx_bytes += frames[..sent].iter().map(|f| f.len() as u64).sum::<u64>();
            stats.tx_dropped += (keep - sent) as u64;
        }
        if last_publish.elapsed() >= PUBLISH_EVERY {
            if let Ok(mut r) = reports.lock() {
                r[slot].stats = stats;
                r[slot].echo = counters;
            }
            last_publish = Instant::now();
        }
    }
    if let Ok(mut r) = reports.lock() {
        r[slot].stats = stats;
        r[slot].echo = counters;
    }
    Ok(())
}

/// Runs the main loop until a stop, then stops and joins the workers, prints the summary, and
/// returns the first error of any of them.
fn finish(
    cli: &Cli,
    stop: &AtomicBool,
    reports: &Reports,
    handles: Vec<(String, thread::JoinHandle<Result<()>>)>,
    links: LinkWatch,
) -> Option<anyhow::Error> {
    let result = main_loop(cli, stop, reports, &handles, links);
    stop.store(true, Ordering::SeqCst);
    let mut first_err = result.err();
    for (name, h) in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_err.get_or_insert(e.context(format!("worker {name}")));
            }
            Err(_) => {
                first_err.get_or_insert(anyhow::anyhow!("worker {name} panicked"));
            }
        }
    }
    print_summary(reports);
    first_err
}

fn main_loop<T>(
    cli: &Cli,
    stop: &AtomicBool,
    reports: &Reports,
    handles: &[(String, thread::JoinHandle<T>)],
    mut links: LinkWatch,
) -> Result<()> {
    let started = Instant::now();
    let interval = Duration::from_secs(cli.stats_interval);
    let mut last = reports.lock().map(|r| r.clone()).unwrap_or_default();
    let mut last_at = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        thread::sleep(Duration::from_millis(100));
        if handles.iter().any(|(_, h)| h.is_finished()) {
            break; // a worker failed: stop the others and report
        }
        links.check(Instant::now())?;
        if let Some(d) = cli.duration {
            if started.elapsed() >= Duration::from_secs(d) {
                break;
            }
        }
        if cli.stats_interval > 0 && last_at.elapsed() >= interval {
            let now = reports.lock().map(|r| r.clone()).unwrap_or_default();
            let secs = last_at.elapsed().as_secs_f64();
            for (cur, prev) in now.iter().zip(&last) {
                let rate = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / secs;
                println!(
                    "{:<16} rx {:>10.0} pps  tx {:>10.0} pps  rx-dropped {} rx-ring-full {} \
                     tx-dropped {} nf-drops {}",
                    cur.name,
                    rate(cur.stats.rx_packets, prev.stats.rx_packets),
                    rate(cur.stats.tx_packets, prev.stats.tx_packets),
                    cur.stats.kernel.rx_dropped,
                    cur.stats.kernel.rx_ring_full,
                    cur.stats.tx_dropped,
                    cur.echo.drop_total(),
                );
            }
            last = now;
            last_at = Instant::now();
        }
    }
    Ok(())
}

fn print_summary(reports: &Reports) {
    let Ok(r) = reports.lock() else { return };
    println!("summary:");
    for rep in r.iter() {
        let e = &rep.echo;
        println!(
            "  {} ({}): rx {} packets {} bytes, tx {} packets {} bytes, tx-dropped {}, \
             rx-dropped {}, rx-ring-full {}",
            rep.name,
            rep.mode,
            rep.stats.rx_packets,
            rep.stats.rx_bytes,
            rep.stats.tx_packets,
            rep.stats.tx_bytes,
            rep.stats.tx_dropped,
            rep.stats.kernel.rx_dropped,
            rep.stats.kernel.rx_ring_full,
        );
        println!(
            "    tx-kicks {} tx-completed {} rx-ring-empty {} fill-ring-empty {} tx-ring-empty {}; \
             worker sleeps {} (woken {}, timed out {})",
            rep.stats.tx_kicks,
            rep.stats.tx_completed,
            rep.stats.rx_ring_empty,
            rep.stats.kernel.rx_fill_ring_empty_descs,
            rep.stats.kernel.tx_ring_empty_descs,
            rep.wait.sleeps,
            rep.wait.wakeups,
            rep.wait.timeouts,
        );
        println!(
            "    answered: arp {} nd {} icmp {} icmpv6 {} udp {} mac-swap {}; dropped: {}",
            e.arp_replies,
            e.neighbor_adverts,
            e.icmpv4_echo_replies,
            e.icmpv6_echo_replies,
            e.udp_echoes,
            e.mac_swapped,
            DropReason::ALL
                .iter()
                .map(|r| format!("{} {}", r.as_str(), e.drops(*r)))
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
}
