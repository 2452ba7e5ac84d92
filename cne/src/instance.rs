//! `Instance`: one configured set of UMEMs, XDP programs and AF_XDP sockets, and the workers that own
//! them.
//!
//! This is the glue from a loaded [`Config`] to running workers, in CNDP's order: UMEMs are mapped,
//! our XDP filter program is attached once per netdev (unless the device plugin owns the program: then
//! the socket goes into the map it hands over), one socket is bound per lport, and the sockets are
//! grouped by the `threads` section into [`Worker`]s. A worker is moved to its thread and
//! [`Worker::run`] pins that thread to its `lcore-groups` CPUs, creates the frame pools (one per lport
//! region, owned by that thread alone) and the [`Port`]s, and hands them to the network function.
//! [`Worker::serve`] is the packet loop every NF shares on top of that: the NF only says what it does
//! with a burst ([`PortLoop`]).
//!
//! CNDP allows one instance per process; so does this type (a second [`Instance::open`] fails while the
//! first is alive). Drop order matters: sockets close when their workers end, and the XDP programs are
//! detached when the instance is dropped, after the workers have been joined. The network functions
//! return from `main` on SIGINT and SIGTERM, so this also happens on those signals and on error paths;
//! when the process dies without unwinding (SIGKILL, OOM), the kernel detaches the programs itself, as
//! they are held by `bpf_link`s of this process (see [`crate::bpf::filter`]).

use std::collections::HashMap;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bpf::filter::{XdpError, XdpMode, XdpProgram};
use crate::config::{Config, Lport};
use crate::k8s::device_plugin::{self, MapSource, PluginSessions};
use crate::xsk::packet::Packet;
use crate::xsk::poll::{AdaptiveWait, WaitPolicy, WaitStats};
use crate::xsk::port::{BusyPoll, Port, PortConfig, PortError, XskMapSource, XskSocket};
use crate::xsk::umem::{FramePool, Umem, UmemConfig, UmemError};

static INSTANCE_ALIVE: AtomicBool = AtomicBool::new(false);

/// Errors building an [`Instance`] or starting a worker.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// Another instance is alive in this process.
    #[error("an instance is already open in this process (one instance per process)")]
    AlreadyOpen,
    /// A UMEM could not be created.
    #[error("umem \"{umem}\"")]
    Umem {
        /// UMEM name from the config.
        umem: String,
        /// What failed.
        #[source]
        source: UmemError,
    },
    /// The XDP program could not be attached.
    #[error("XDP program on netdev {netdev}")]
    Xdp {
        /// Netdev name.
        netdev: String,
        /// What failed.
        #[source]
        source: XdpError,
    },
    /// A socket could not be opened.
    #[error("lport \"{lport}\"")]
    Port {
        /// Lport name from the config.
        lport: String,
        /// What failed.
        #[source]
        source: PortError,
    },
    /// The device-plugin handshake or the pinned map failed.
    #[error("lport \"{lport}\"")]
    DevicePlugin {
        /// Lport name from the config.
        lport: String,
        /// What failed.
        #[source]
        source: device_plugin::DevicePluginError,
    },
    /// The config has no lport assigned to a worker thread.
    #[error("{0}: no thread owns an lport: add \"threads\" entries with \"lports\"")]
    NoWorkers(String),
    /// Pinning a worker thread to its CPUs failed.
    #[error("worker \"{worker}\": cannot pin to CPUs {cpus:?}")]
    Affinity {
        /// Worker (thread) name.
        worker: String,
        /// The CPUs of its lcore group.
        cpus: Vec<usize>,
        /// The error of `sched_setaffinity`.
        #[source]
        source: std::io::Error,
    },
}

/// Choices the network function makes when opening an instance.
#[derive(Debug, Clone, Default)]
pub struct InstanceOptions {
    /// Replace an XDP program another process left on a netdev (`--force`).
    pub force: bool,
    /// Redirect every packet of the configured queues to the sockets (nothing reaches the kernel),
    /// as in device-plugin mode; otherwise only the traffic the NF claims with rules is redirected.
    pub claim_all: bool,
}

/// One lport's socket, on its way to the worker thread that owns it.
#[derive(Debug)]
pub struct LportSocket {
    /// Lport name (`"netdev:tag"`).
    pub name: String,
    socket: XskSocket,
    region: usize,
}

impl LportSocket {
    /// The bound socket.
    pub fn socket(&self) -> &XskSocket {
        &self.socket
    }
}

/// A worker thread's share of the instance: its CPUs and its sockets. `Send`.
#[derive(Debug)]
pub struct Worker {
    /// Thread name from the config (`"type:id"`).
    pub name: String,
    /// CPUs of its lcore group.
    pub cpus: Vec<usize>,
    /// Its lports, in config order.
    pub lports: Vec<LportSocket>,
    /// How it waits when idle: spin for the thread's `idle_timeout` (milliseconds; 0 or absent:
    /// [`crate::xsk::poll::DEFAULT_SPIN`]) after the last packet, then sleep in `poll()`.
    pub wait: WaitPolicy,
}

impl Worker {
    /// Runs `f` on the calling thread (the worker's own): pins the thread to the worker's CPUs,
    /// creates one frame pool per lport and opens the [`Port`]s, then passes them to `f`. The ports and
    /// pools are closed when `f` returns.
    pub fn run<R>(self, f: impl FnOnce(&mut [Port<'_>]) -> R) -> Result<R, InstanceError> {
        if !self.cpus.is_empty() {
            crate::sys::cpu::pin_current_thread(&self.cpus).map_err(|source| {
                InstanceError::Affinity {
                    worker: self.name.clone(),
                    cpus: self.cpus.clone(),
                    source,
                }
            })?;
        }
        let mut pools = Vec::with_capacity(self.lports.len());
        for l in &self.lports {
            let pool = FramePool::new(l.socket.umem(), l.region).map_err(|source| {
                InstanceError::Umem {
                    umem: format!("of lport \"{}\"", l.name),
                    source,
                }
            })?;
            pools.push(pool);
        }
        let mut ports = Vec::with_capacity(self.lports.len());
        for (l, pool) in self.lports.into_iter().zip(&pools) {
            let port = Port::attach(l.socket, pool).map_err(|source| InstanceError::Port {
                lport: l.name,
                source,
            })?;
            ports.push(port);
        }
        let r = f(&mut ports);
        drop(ports);
        Ok(r)
    }
}

/// Packets per receive burst of [`Worker::serve`].
pub const BURST: usize = 64;
/// How often [`Worker::serve`] calls [`PortLoop::report`] by default.
pub const REPORT_EVERY: Duration = Duration::from_millis(250);

/// What a network function does inside the packet loop of [`Worker::serve`]. Nothing here runs per
/// packet besides what the NF itself does in [`PortLoop::burst`].
pub trait PortLoop {
    /// Room reserved once for the packets one burst sends (more than [`BURST`] when a received
    /// packet can become several, e.g. fragments), so that no burst allocates.
    fn tx_capacity(&self) -> usize {
        BURST
    }

    /// How often [`PortLoop::report`] runs while packets flow (and at least that often when idle).
    fn report_every(&self) -> Duration {
        REPORT_EVERY
    }

    /// Handles one non-empty burst received on `port`, the worker's lport number `index`: moves the
    /// packets to send on that port into `tx` (new ones may come from [`Port::alloc`]); packets left
    /// in `rx` are dropped when it returns (their frames go back to the pool).
    fn burst<'p>(
        &mut self,
        index: usize,
        port: &mut Port<'p>,
        rx: &mut Vec<Packet<'p>>,
        tx: &mut Vec<Packet<'p>>,
    );

    /// Publishes what the NF reports (counters, port statistics, the wait statistics): once before
    /// the first burst, every [`PortLoop::report_every`], and a last time (`last`) after the stop.
    fn report(&mut self, ports: &[Port<'_>], wait: WaitStats, last: bool);
}

impl Worker {
    /// Runs the packet loop of every NF on the calling thread until `stop` is set: per port, receive a
    /// burst, hand it to `handler`, send what it returns on the same port (same UMEM frames, no
    /// copy); when no port had work, reap completions and kick TX rings the kernel left undrained;
    /// then spin or sleep by the worker's [`WaitPolicy`]. The clock is read at most once per 64
    /// busy iterations, or on an idle one, to decide when to report.
    pub fn serve(self, stop: &AtomicBool, mut handler: impl PortLoop) -> Result<(), InstanceError> {
        let policy = self.wait;
        self.run(|ports: &mut [Port<'_>]| {
            let mut wait = AdaptiveWait::new(policy);
            for p in ports.iter() {
                wait.watch(p);
            }
            let mut rx = Vec::with_capacity(BURST);
            let mut tx = Vec::with_capacity(handler.tx_capacity());
            let every = handler.report_every();
            handler.report(ports, wait.stats(), false);
            let mut last_report = Instant::now();
            let mut iterations = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let mut work = 0;
                for (i, port) in ports.iter_mut().enumerate() {
                    if port.rx_burst(&mut rx, BURST) == 0 {
                        continue;
                    }
                    work += rx.len();
                    handler.burst(i, port, &mut rx, &mut tx);
                    rx.clear();
                    if !tx.is_empty() {
                        port.tx_burst(&mut tx);
                    }
                }
                if work == 0 {
                    for port in ports.iter_mut() {
                        port.tx_burst(&mut tx);
                    }
                }
                wait.idle(work);
                iterations = iterations.wrapping_add(1);
                if work == 0 || iterations % 64 == 0 {
                    let now = Instant::now();
                    if now.saturating_duration_since(last_report) >= every {
                        handler.report(ports, wait.stats(), false);
                        last_report = now;
                    }
                }
            }
            handler.report(ports, wait.stats(), true);
        })
    }
}

/// The open instance: config, UMEMs, XDP programs and the workers not yet started.
#[derive(Debug)]
pub struct Instance {
    config: Config,
    workers: Vec<Worker>,
    /// Declared after `workers`: programs are detached after any socket still held here is closed.
    programs: Vec<XdpProgram>,
    sessions: Option<PluginSessions>,
    umems: HashMap<String, Arc<Umem>>,
}

impl Instance {
    /// Maps the UMEMs, attaches the XDP programs and binds one socket per lport of `config`.
    pub fn open(config: Config, opts: &InstanceOptions) -> Result<Self, InstanceError> {
        if INSTANCE_ALIVE.swap(true, Ordering::AcqRel) {
            return Err(InstanceError::AlreadyOpen);
        }
        // From here on, Drop of the partly built instance clears the flag and releases what exists.
        let mut inst = Self {
            config,
            workers: Vec::new(),
            programs: Vec::new(),
            sessions: None,
            umems: HashMap::new(),
        };
        inst.build(opts)?;
        Ok(inst)
    }

    fn build(&mut self, opts: &InstanceOptions) -> Result<(), InstanceError> {
        let Self {
            config,
            workers,
            programs,
            sessions,
            umems,
        } = self;
        let config = &*config;
        for u in config.umems() {
            let cfg = UmemConfig {
                frame_count: to_u32(u.frame_count()),
                frame_size: to_u32(u.frame_size()),
                headroom: crate::xsk::umem::DEFAULT_HEADROOM,
                huge_pages: u.mtype.page_size() > 4096,
                regions: u.regions.iter().map(|r| r * 1024).collect(),
            };
            let umem = Umem::new(&cfg).map_err(|source| InstanceError::Umem {
                umem: u.name.clone(),
                source,
            })?;
            umems.insert(u.name.clone(), umem);
        }

        let mut sockets: HashMap<String, LportSocket> = HashMap::new();
        for lport in config.lports() {
            let map = xsk_map_for(programs, sessions, lport, opts)?;
            let umem = umems
                .get(&lport.umem)
                .cloned()
                .ok_or_else(|| InstanceError::Umem {
                    umem: lport.umem.clone(),
                    source: UmemError::Config("not defined".into()),
                })?;
            let pc = port_config(lport, map.as_ref().map(|m| m.as_raw_fd()), config);
            let socket = XskSocket::open(&pc, &umem).map_err(|source| InstanceError::Port {
                lport: lport.name.clone(),
                source,
            })?;
            if let (Some(uds), Some(bp)) = (&lport.uds_path, pc.busy_poll) {
                let dp_err = |source| InstanceError::DevicePlugin {
                    lport: lport.name.clone(),
                    source,
                };
                let session = dp_sessions(sessions)?
                    .session(Path::new(uds))
                    .map_err(dp_err)?;
                // SAFETY: the socket's fd stays open for the whole call: `socket` is alive here.
                let fd = unsafe { BorrowedFd::borrow_raw(socket.fd()) };
                session
                    .config_busy_poll(fd, bp.timeout_us, bp.budget)
                    .map_err(dp_err)?;
            }
            log::info!(
                "lport {}: {}:{} bound, mode {}",
                lport.name,
                lport.netdev,
                lport.qid,
                socket.mode()
            );
            sockets.insert(
                lport.name.clone(),
                LportSocket {
                    name: lport.name.clone(),
                    socket,
                    region: lport.region,
                },
            );
        }
        if let Some(sessions) = sessions.as_mut() {
            sessions
                .finish()
                .map_err(|source| InstanceError::DevicePlugin {
                    lport: "*".into(),
                    source,
                })?;
        }

        for t in config.threads() {
            if t.is_main() || t.lports.is_empty() {
                continue;
            }
            let lports = t
                .lports
                .iter()
                .filter_map(|name| sockets.remove(name))
                .collect();
            let mut wait = WaitPolicy::default();
            if t.idle_timeout > 0 {
                wait.spin = Duration::from_millis(u64::from(t.idle_timeout));
            }
            workers.push(Worker {
                name: t.name.clone(),
                cpus: t.cpus.clone(),
                lports,
                wait,
            });
        }
        if workers.is_empty() {
            return Err(InstanceError::NoWorkers(config.origin().to_string()));
        }
        for p in programs.iter() {
            p.set_claim_all(opts.claim_all)
                .map_err(|source| InstanceError::Xdp {
                    netdev: p.ifname().to_string(),
                    source,
                })?;
        }
        Ok(())
    }

    /// The loaded configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Our XDP programs, one per netdev we attached to (none in device-plugin modes). The network
    /// function adds its claim rules here.
    pub fn programs(&self) -> &[XdpProgram] {
        &self.programs
    }

    /// Takes the workers out, to move each to its own thread.
    pub fn take_workers(&mut self) -> Vec<Worker> {
        std::mem::take(&mut self.workers)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.workers.clear();
        self.programs.clear();
        INSTANCE_ALIVE.store(false, Ordering::Release);
    }
}

/// The XSKMAP an lport's socket goes into: the device plugin's (UDS or pinned), else our program's,
/// attached on first use of the netdev.
fn xsk_map_for(
    programs: &mut Vec<XdpProgram>,
    sessions: &mut Option<PluginSessions>,
    lport: &Lport,
    opts: &InstanceOptions,
) -> Result<Option<OwnedFd>, InstanceError> {
    let dp_err = |source| InstanceError::DevicePlugin {
        lport: lport.name.clone(),
        source,
    };
    let source = match (&lport.xsk_pin_path, &lport.uds_path) {
        (Some(pin), _) => Some(MapSource::Pinned(pin.into())),
        (None, Some(uds)) => Some(MapSource::Uds(uds.into())),
        (None, None) => None,
    };
    if let Some(source) = source {
        let map = dp_sessions(sessions)?.xsk_map(&lport.netdev, &source);
        return map.map(Some).map_err(dp_err);
    }
    if !programs.iter().any(|p| p.ifname() == lport.netdev) {
        let mode = if lport.skb_mode {
            XdpMode::Skb
        } else {
            XdpMode::Native
        };
        let prog = XdpProgram::attach(&lport.netdev, mode, opts.force).map_err(|source| {
            InstanceError::Xdp {
                netdev: lport.netdev.clone(),
                source,
            }
        })?;
        log::info!(
            "netdev {}: XDP filter program id {} attached ({:?})",
            lport.netdev,
            prog.prog_id(),
            mode
        );
        programs.push(prog);
    }
    let prog = programs
        .iter()
        .find(|p| p.ifname() == lport.netdev)
        .ok_or_else(|| InstanceError::Xdp {
            netdev: lport.netdev.clone(),
            source: XdpError::NetdevNotFound {
                ifname: lport.netdev.clone(),
            },
        })?;
    let fd = prog
        .xsks_map_fd()
        .try_clone_to_owned()
        .map_err(|e| InstanceError::Xdp {
            netdev: lport.netdev.clone(),
            source: XdpError::Bpf {
                call: "dup(xsks_map)",
                target: lport.netdev.clone(),
                source: e,
            },
        })?;
    Ok(Some(fd))
}

/// The device-plugin sessions, created on first use (the hostname is only needed in a pod).
fn dp_sessions(
    sessions: &mut Option<PluginSessions>,
) -> Result<&mut PluginSessions, InstanceError> {
    let s = match sessions.take() {
        Some(s) => s,
        None => PluginSessions::for_pod().map_err(|source| InstanceError::DevicePlugin {
            lport: "*".into(),
            source,
        })?,
    };
    Ok(sessions.insert(s))
}

fn port_config(lport: &Lport, map: Option<std::os::fd::RawFd>, config: &Config) -> PortConfig {
    let mut pc = PortConfig::new(lport.netdev.clone(), u32::from(lport.qid));
    pc.xdp_mode = if lport.skb_mode {
        XdpMode::Skb
    } else {
        XdpMode::Native
    };
    if let Some(u) = config.umem(&lport.umem) {
        pc.rx_size = u.rx_ring_size();
        pc.tx_size = u.tx_ring_size();
    }
    if lport.busy_poll {
        pc.busy_poll = Some(BusyPoll {
            timeout_us: u32::from(lport.busy_timeout.max(1)),
            budget: u32::from(lport.busy_budget.max(1)),
        });
        // Over the UDS the plugin sets the options (`/config_busy_poll`); the pod lacks the
        // CAP_NET_ADMIN they need.
        pc.busy_poll_sockopts = lport.uds_path.is_none();
    }
    pc.xsk_map = match map {
        Some(fd) => XskMapSource::Map(fd),
        None => XskMapSource::LibxdpDefault,
    };
    pc
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_poll_sockopts_are_left_to_the_plugin_only_over_the_uds() {
        let text = r#"{
            "umems": { "u": { "bufcnt": 24, "regions": [8, 8, 8] } },
            "lports": {
                "eth0:0": { "pmd": "net_af_xdp", "qid": 0, "umem": "u", "region": 0,
                            "busy_poll": true, "uds_path": "/tmp/afxdp_dp/eth0/afxdp.sock" },
                "eth1:0": { "pmd": "net_af_xdp", "qid": 0, "umem": "u", "region": 1,
                            "busy_poll": true, "xsk_pin_path": "/tmp/afxdp_dp/eth1/xsks_map" },
                "eth2:0": { "pmd": "net_af_xdp", "qid": 0, "umem": "u", "region": 2,
                            "busy_poll": true }
            },
            "lcore-groups": { "initial": [0] },
            "threads": { "main": { "group": "initial" } }
        }"#;
        let config = Config::parse(text, "test").expect("config");
        let sockopts = |name: &str| {
            let lport = config.lport(name).expect("lport");
            let pc = port_config(lport, Some(3), &config);
            assert!(pc.busy_poll.is_some(), "{name}: busy polling configured");
            pc.busy_poll_sockopts
        };
        // CAP_NET_ADMIN is the plugin's: over the UDS it sets the options on the socket it is sent.
        assert!(!sockopts("eth0:0"));
        assert!(sockopts("eth1:0"));
        assert!(sockopts("eth2:0"));
    }
}
