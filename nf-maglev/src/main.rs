//! `nf-maglev`: the Maglev load balancer over AF_XDP, and the `decap` step its GRE backends run.
//!
//! ```text
//! nf-maglev -c FILE.jsonc [--force] [--listen ADDR] [--read-only-admin] [--admin-token-file FILE]
//!           [--claim-all]
//! nf-maglev decap --dev IF [--addr IP]... [--skb] [--force]
//! nf-maglev gen-config ARGS...
//! ```
//!
//! This file only parses the command line and starts what it names: the load balancer ([`runtime`]: start-up,
//! the control thread, reloads, the admin API's implementation), the decap step ([`decap_cmd`]) or
//! `gen-config`. The admin API's routing ([`admin`]), the metrics ([`metrics`]) and the worker threads
//! ([`worker`]) are modules of their own.
#![forbid(unsafe_code)]

mod admin;
mod decap_cmd;
mod metrics;
mod runtime;
mod worker;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Maglev L4 load balancer over AF_XDP (GRE or L2 direct server return)",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// JSON-C config file: CNDP's sections plus a `maglev` section.
    #[arg(short = 'c', long = "config", value_name = "FILE.jsonc")]
    config: Option<PathBuf>,
    /// Replace an XDP program someone else attached to an interface (through netlink, or through a
    /// bpf_link of another process). Our own program never needs it: it leaves with the process.
    #[arg(long)]
    force: bool,
    /// Address of the admin API and metrics endpoint (port 0 picks a free port; the log names it).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9100")]
    listen: SocketAddr,
    /// Refuse every change through the admin API (GET requests still work; SIGHUP still reloads).
    #[arg(long)]
    read_only_admin: bool,
    /// File holding a bearer token that changes through the admin API must carry
    /// (`Authorization: Bearer <token>`); only its owner may read it (mode 600 or 400).
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// Claim every packet of the configured queues, as in device-plugin mode (nothing reaches the kernel
    /// on them); the data plane then answers ARP and neighbour discovery for the VIPs.
    #[arg(long)]
    claim_all: bool,
    /// Exit with an error when an interface of the lports has been gone this many seconds (its
    /// sockets cannot serve again; a supervisor restarts the NF). A re-created interface exits at once.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    netdev_timeout: u64,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Attach the GRE decapsulation program to a backend's interface, print its counters every second,
    /// detach on SIGINT/SIGTERM.
    Decap {
        /// The backend's interface.
        #[arg(long, value_name = "IF")]
        dev: String,
        /// Decapsulate GRE packets to this local address (repeat; default: every address of IF).
        #[arg(long = "addr", value_name = "IP")]
        addrs: Vec<IpAddr>,
        /// Attach in SKB (generic) mode instead of native.
        #[arg(long)]
        skb: bool,
        /// Replace an XDP program already attached to IF.
        #[arg(long)]
        force: bool,
    },
    /// Write a config for this pod from the device plugin's environment (AFXDP_DEVICES_*).
    GenConfig(Box<cne::k8s::gen_config::GenConfig>),
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nf-maglev: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Some(Command::GenConfig(cfg)) => {
            cne::k8s::gen_config::run_gen_config(cfg).context("gen-config")
        }
        Some(Command::Decap {
            dev,
            addrs,
            skb,
            force,
        }) => decap_cmd::run(&decap_cmd::DecapArgs {
            dev: dev.clone(),
            addrs: addrs.clone(),
            skb: *skb,
            force: *force,
            interval: Duration::from_secs(1),
        }),
        None => runtime::run(&runtime::Options {
            config: cli
                .config
                .clone()
                .context("no config: pass -c FILE.jsonc (or a subcommand: decap, gen-config)")?,
            force: cli.force,
            listen: cli.listen,
            read_only_admin: cli.read_only_admin,
            admin_token_file: cli.admin_token_file.clone(),
            claim_all: cli.claim_all,
            netdev_timeout: Duration::from_secs(cli.netdev_timeout),
        }),
    }
}
