//! Generating a CNDP JSON-C configuration inside a pod (the role of CNDP's `jsonc_gen.sh`).
//!
//! A pod does not know its netdevs or CPUs until it starts: the AF_XDP device plugin names the netdevs
//! in `AFXDP_DEVICES_<POOL>` and mounts one socket (or pinned map) per netdev; the kubelet decides the
//! CPU set. [`generate`] turns those facts into the `application`, `defaults`, `umems`, `lports`,
//! `lcore-groups` and `threads` sections and merges in the network function's own sections (e.g.
//! `maglev`) from a mounted JSON-C file. [`run_gen_config`] is the `gen-config` subcommand the NFs
//! expose.
//!
//! Layout decisions: every queue of every allocated netdev becomes an lport `"<netdev>:<qid>"` (in
//! primary mode the plugin hands over the whole netdev, and its XDP program redirects each queue to the
//! XSKMAP slot of the same number, so an unserved queue would lose its traffic to the kernel stack).
//! One UMEM with one region per lport. The first allowed CPU runs the main thread (`initial` group);
//! each further CPU gets one worker thread and the lports are spread round-robin over them. With a
//! single CPU the worker shares it with the main thread. The output is plain JSON (valid JSON-C) with
//! the sections in CNDP's processing order.

use std::io;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::k8s::device_plugin::{self, DevicePluginError, MapSource, PluginDevice, PluginLayout};
use crate::sys::cpu::{self, CpuListError};
use crate::sys::netdev;

/// Sections this module writes; an NF file's sections of the same names are replaced.
pub const GENERATED_SECTIONS: [&str; 6] = [
    "application",
    "defaults",
    "umems",
    "lports",
    "lcore-groups",
    "threads",
];
/// Default UMEM buffers per lport, in units of 1024 (8192 frames of 2 KiB = 16 MiB per lport).
pub const DEFAULT_BUFCNT_PER_LPORT: u32 = 8;
/// Default frame size in KiB (CNDP's `bufsz`).
pub const DEFAULT_BUFSZ_KIB: u32 = 2;
/// Default thread type of the worker threads (`"<type>:<n>"`).
pub const DEFAULT_THREAD_TYPE: &str = "fwd";
/// Default application name.
pub const DEFAULT_APP_NAME: &str = "cne";
/// cgroup v2 file with the CPUs the pod may use.
const CPUSET_V2: &str = "/sys/fs/cgroup/cpuset.cpus.effective";
/// cgroup v1 file with the CPUs the pod may use.
const CPUSET_V1: &str = "/sys/fs/cgroup/cpuset/cpuset.effective_cpus";

/// Failures while generating a pod configuration.
#[derive(Debug, thiserror::Error)]
pub enum PodConfigError {
    /// No `AFXDP_DEVICES_<POOL>` (or `AFXDP_DEVICES`) variable names a netdev.
    #[error("no AF_XDP netdevs: AFXDP_DEVICES_<POOL> is not set (does the pod request an afxdp/<pool> resource?)")]
    NoDevices,
    /// Device discovery or file detection failed.
    #[error(transparent)]
    Dp(#[from] DevicePluginError),
    /// The allowed CPU set is empty.
    #[error("no CPUs available to this process")]
    NoCpus,
    /// A CPU list (`--cpus` or a cpuset file) could not be parsed.
    #[error(transparent)]
    CpuList(#[from] CpuListError),
    /// `sched_getaffinity` failed.
    #[error("sched_getaffinity")]
    Affinity(#[source] io::Error),
    /// A file could not be read.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The output could not be written.
    #[error("writing {path}")]
    Write {
        /// The file (`-` for standard output).
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The NF's JSON-C file does not read as a configuration file reads (syntax, duplicate keys,
    /// not an object); the error names the file and line.
    #[error(transparent)]
    NfConfig(#[from] crate::config::ConfigError),
    /// A section could not be written as JSON.
    #[error("rendering section {section}")]
    Render {
        /// The section.
        section: String,
        /// The serializer's error.
        source: serde_json::Error,
    },
    /// A `--section` named a section the NF file does not have.
    #[error("{path}: no section {section:?}")]
    MissingSection {
        /// The file.
        path: PathBuf,
        /// The section asked for.
        section: String,
    },
}

/// How lports obtain their XSKMAP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ModeChoice {
    /// Whichever file the plugin mounted: the socket, else the pinned map, else the legacy socket.
    #[default]
    Auto,
    /// The UDS handshake (`uds_path`), whether or not the socket exists yet.
    Uds,
    /// The pinned map (`xsk_pin_path`), whether or not it exists yet.
    Pinned,
}

/// How many queues of each netdev become lports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueChoice {
    /// The number of `rx-*` queues in sysfs, or 1 when sysfs does not tell.
    #[default]
    Auto,
    /// This many, on every netdev.
    Fixed(u32),
}

/// Busy-polling settings written into every lport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusyPoll {
    /// `busy_timeout` in microseconds.
    pub timeout_us: u16,
    /// `busy_budget` in packets.
    pub budget: u16,
}

/// The CPU list type of `--cpus` (an alias, so that clap takes the list as one value).
pub type CpuList = Vec<usize>;

/// Options of `gen-config`, parsed by clap as the subcommand's arguments (an NF flattens them into its
/// `gen-config` subcommand); [`Default`] gives the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
#[command(about = "Write a CNDP JSON-C configuration for the netdevs and CPUs of this pod")]
pub struct GenConfig {
    /// Application name (default: the NF file's, else `cne`).
    #[arg(long, value_name = "NAME")]
    pub app_name: Option<String>,
    /// JSON-C file with the network function's own sections (e.g. `maglev`).
    #[arg(long, value_name = "PATH")]
    pub nf_config: Option<PathBuf>,
    /// Take only this section from --nf-config (repeatable; default: all but the generated ones:
    /// application, defaults, umems, lports, lcore-groups, threads).
    #[arg(long = "section", value_name = "NAME")]
    pub sections: Vec<String>,
    /// Where to write, atomically (default: standard output; `-` also means standard output).
    #[arg(short = 'o', long, value_name = "PATH", value_parser = parse_output)]
    pub output: Option<Output>,
    /// How lports obtain the XSKMAP (auto: whichever file the plugin mounted).
    #[arg(long, value_enum, default_value_t)]
    pub mode: ModeChoice,
    /// Queues per netdev: `auto` (/sys/class/net/IF/queues/rx-*, else 1) or a count.
    #[arg(long, value_name = "auto|N", default_value = "auto", value_parser = parse_queues)]
    pub queues: QueueChoice,
    /// Worker thread type.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_THREAD_TYPE)]
    pub thread_type: String,
    /// CPUs to use, e.g. `2-5,8` (default: sched_getaffinity and the cgroup cpuset).
    #[arg(long, value_name = "LIST", value_parser = cpu::parse_cpu_list)]
    pub cpus: Option<CpuList>,
    /// UMEM buffers per lport, in units of 1024.
    #[arg(long = "bufcnt", value_name = "N", default_value_t = DEFAULT_BUFCNT_PER_LPORT,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub bufcnt_per_lport: u32,
    /// Frame size in KiB: 2 or 4.
    #[arg(long = "bufsz", value_name = "KIB", default_value_t = DEFAULT_BUFSZ_KIB,
          value_parser = parse_bufsz)]
    pub bufsz_kib: u32,
    /// UMEM page type.
    #[arg(long, default_value = "4KB", value_parser = ["4KB", "2MB", "1GB"])]
    pub mtype: String,
    /// Enable busy polling on every lport with this timeout (microseconds) and budget.
    #[arg(long, value_name = "US,BUDGET", value_parser = parse_busy_poll)]
    pub busy_poll: Option<BusyPoll>,
    /// Device-plugin directory.
    #[arg(long = "dp-dir", value_name = "PATH", default_value = device_plugin::DP_DIR,
          value_parser = parse_layout)]
    pub layout: PluginLayout,
    /// Where sysfs lists network devices.
    #[arg(long, value_name = "PATH", default_value = netdev::SYS_CLASS_NET)]
    pub sys_class_net: PathBuf,
}

/// Where `gen-config` writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Standard output (`-`).
    Stdout,
    /// A file, replaced atomically.
    File(PathBuf),
}

fn parse_output(v: &str) -> Result<Output, String> {
    Ok(match v {
        "-" => Output::Stdout,
        "" => return Err("an empty path".into()),
        p => Output::File(PathBuf::from(p)),
    })
}

fn parse_queues(v: &str) -> Result<QueueChoice, String> {
    match v {
        "auto" => Ok(QueueChoice::Auto),
        n => match n.parse::<u32>() {
            Ok(n) if n > 0 => Ok(QueueChoice::Fixed(n)),
            _ => Err("`auto` or a count >= 1".into()),
        },
    }
}

fn parse_bufsz(v: &str) -> Result<u32, String> {
    match v {
        "2" => Ok(2),
        "4" => Ok(4),
        _ => Err("2 or 4 (KiB)".into()),
    }
}

fn parse_busy_poll(v: &str) -> Result<BusyPoll, String> {
    let (t, b) = v.split_once(',').ok_or("TIMEOUT_US,BUDGET")?;
    let num = |x: &str| match x.trim().parse::<u16>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{x:?}: a number from 1 to {}", u16::MAX)),
    };
    Ok(BusyPoll {
        timeout_us: num(t)?,
        budget: num(b)?,
    })
}

fn parse_layout(v: &str) -> Result<PluginLayout, String> {
    Ok(PluginLayout {
        dir: PathBuf::from(v),
        ..PluginLayout::default()
    })
}

impl Default for GenConfig {
    fn default() -> Self {
        Self {
            app_name: None,
            nf_config: None,
            sections: Vec::new(),
            output: None,
            mode: ModeChoice::Auto,
            queues: QueueChoice::Auto,
            thread_type: DEFAULT_THREAD_TYPE.to_owned(),
            cpus: None,
            bufcnt_per_lport: DEFAULT_BUFCNT_PER_LPORT,
            bufsz_kib: DEFAULT_BUFSZ_KIB,
            mtype: "4KB".to_owned(),
            busy_poll: None,
            layout: PluginLayout::default(),
            sys_class_net: PathBuf::from(netdev::SYS_CLASS_NET),
        }
    }
}

/// The `gen-config` subcommand: reads the pod's environment, CPUs and sysfs, and writes the
/// configuration to `--output` (atomically, by rename) or standard output.
pub fn run_gen_config(cfg: &GenConfig) -> Result<(), PodConfigError> {
    let devices = device_plugin::devices_from_env()?;
    let cpus = match &cfg.cpus {
        Some(c) => c.clone(),
        None => allowed_cpus()?,
    };
    let text = generate(cfg, &devices, &cpus)?;
    match &cfg.output {
        None | Some(Output::Stdout) => {
            let mut out = io::stdout().lock();
            out.write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .map_err(|source| PodConfigError::Write {
                    path: PathBuf::from("-"),
                    source,
                })
        }
        Some(Output::File(path)) => write_atomically(path, &text),
    }
}

fn write_atomically(path: &Path, text: &str) -> Result<(), PodConfigError> {
    let err = |source| PodConfigError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(e)
    })?;
    log::info!("wrote {}", path.display());
    Ok(())
}

/// Builds the configuration text for `devices` on `cpus` as `cfg` says.
pub fn generate(
    cfg: &GenConfig,
    devices: &[PluginDevice],
    cpus: &[usize],
) -> Result<String, PodConfigError> {
    if devices.is_empty() {
        return Err(PodConfigError::NoDevices);
    }
    let mut cpus = cpus.to_vec();
    cpus.sort_unstable();
    cpus.dedup();
    let (&main_cpu, rest) = cpus.split_first().ok_or(PodConfigError::NoCpus)?;
    let worker_cpus: Vec<usize> = if rest.is_empty() {
        vec![main_cpu]
    } else {
        rest.to_vec()
    };

    let nf = match &cfg.nf_config {
        Some(path) => Some((path.clone(), read_nf_sections(path)?)),
        None => None,
    };

    // lports, in device order then queue order.
    struct Planned {
        name: String,
        body: Map<String, Value>,
    }
    let mut lports: Vec<Planned> = Vec::new();
    for dev in devices {
        let source = map_source(cfg, &dev.netdev)?;
        let queues = match cfg.queues {
            QueueChoice::Fixed(n) => n,
            QueueChoice::Auto => netdev::rx_queue_count_in(&cfg.sys_class_net, &dev.netdev)
                .ok()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|&n| n > 0)
                .unwrap_or_else(|| {
                    log::warn!("{}: queue count not readable in sysfs, using 1", dev.netdev);
                    1
                }),
        };
        for qid in 0..queues {
            let region = lports.len();
            let mut body = Map::new();
            body.insert("pmd".into(), json!("net_af_xdp"));
            body.insert("qid".into(), json!(qid));
            body.insert("umem".into(), json!("umem0"));
            body.insert("region".into(), json!(region));
            match &source {
                MapSource::Uds(p) => body.insert("uds_path".into(), json!(p.display().to_string())),
                MapSource::Pinned(p) => {
                    body.insert("xsk_pin_path".into(), json!(p.display().to_string()))
                }
            };
            if let Some(bp) = cfg.busy_poll {
                body.insert("busy_poll".into(), json!(true));
                body.insert("busy_timeout".into(), json!(bp.timeout_us));
                body.insert("busy_budget".into(), json!(bp.budget));
            }
            let pool = dev.pool.as_deref().unwrap_or("default");
            body.insert(
                "description".into(),
                json!(format!("{} queue {qid} (pool {pool})", dev.netdev)),
            );
            lports.push(Planned {
                name: format!("{}:{qid}", dev.netdev),
                body,
            });
        }
    }

    let nthreads = worker_cpus.len().min(lports.len()).max(1);
    let mut groups = Map::new();
    groups.insert("initial".into(), json!([main_cpu]));
    let mut threads = Map::new();
    threads.insert(
        "main".into(),
        json!({ "group": "initial", "description": "control, metrics and signals" }),
    );
    for (t, cpu) in worker_cpus.iter().take(nthreads).enumerate() {
        let group = format!("group{t}");
        groups.insert(group.clone(), json!([cpu]));
        let mine: Vec<&str> = lports
            .iter()
            .enumerate()
            .filter(|(j, _)| j % nthreads == t)
            .map(|(_, l)| l.name.as_str())
            .collect();
        threads.insert(
            format!("{}:{t}", cfg.thread_type),
            json!({ "group": group, "lports": mine, "description": format!("worker on CPU {cpu}") }),
        );
    }

    let nlports = u32::try_from(lports.len()).unwrap_or(u32::MAX);
    let mut umems = Map::new();
    umems.insert(
        "umem0".into(),
        json!({
            "bufcnt": cfg.bufcnt_per_lport.saturating_mul(nlports),
            "bufsz": cfg.bufsz_kib,
            "mtype": cfg.mtype,
            "regions": vec![cfg.bufcnt_per_lport; lports.len()],
            "rxdesc": 0,
            "txdesc": 0,
            "description": "one region per lport"
        }),
    );
    let mut lport_map = Map::new();
    for l in lports {
        lport_map.insert(l.name, Value::Object(l.body));
    }

    let nf_app = nf
        .as_ref()
        .and_then(|(_, s)| s.get("application"))
        .and_then(Value::as_object);
    let name = cfg
        .app_name
        .clone()
        .or_else(|| {
            nf_app
                .and_then(|a| a.get("name"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| DEFAULT_APP_NAME.to_owned());
    let description = nf_app
        .and_then(|a| a.get("description").or_else(|| a.get("desc")))
        .and_then(Value::as_str)
        .unwrap_or("generated for this pod by gen-config");

    let mut sections: Vec<(String, Value)> = vec![
        (
            "application".into(),
            json!({ "name": name, "description": description }),
        ),
        (
            "defaults".into(),
            json!({ "bufcnt": cfg.bufcnt_per_lport, "bufsz": cfg.bufsz_kib, "rxdesc": 2, "txdesc": 2,
                    "cache": 256, "mtype": cfg.mtype }),
        ),
    ];
    // NF sections: `options` keeps its place in CNDP's order; the NF's own go last.
    let mut nf_tail: Vec<(String, Value)> = Vec::new();
    if let Some((path, nf_sections)) = nf {
        let wanted: Vec<String> = if cfg.sections.is_empty() {
            nf_sections.keys().cloned().collect()
        } else {
            cfg.sections.clone()
        };
        for key in wanted {
            let Some(v) = nf_sections.get(&key) else {
                return Err(PodConfigError::MissingSection { path, section: key });
            };
            if GENERATED_SECTIONS.contains(&key.as_str()) {
                if !cfg.sections.is_empty() || key != "application" {
                    log::warn!(
                        "{}: section {key:?} is replaced by the generated one",
                        path.display()
                    );
                }
                continue;
            }
            if key == "options" {
                sections.push((key, v.clone()));
            } else {
                nf_tail.push((key, v.clone()));
            }
        }
    }
    sections.push(("umems".into(), Value::Object(umems)));
    sections.push(("lports".into(), Value::Object(lport_map)));
    sections.push(("lcore-groups".into(), Value::Object(groups)));
    sections.push(("threads".into(), Value::Object(threads)));
    sections.extend(nf_tail);
    render(&sections)
}

/// Writes the sections as one pretty JSON object in the given order.
fn render(sections: &[(String, Value)]) -> Result<String, PodConfigError> {
    let mut out = String::from("{\n");
    for (i, (key, value)) in sections.iter().enumerate() {
        let render = |source| PodConfigError::Render {
            section: key.clone(),
            source,
        };
        let k = serde_json::to_string(key).map_err(render)?;
        let v = serde_json::to_string_pretty(value).map_err(render)?;
        // JSON strings never contain raw newlines, so re-indenting by line is safe.
        out.push_str("  ");
        out.push_str(&k);
        out.push_str(": ");
        out.push_str(&v.replace('\n', "\n  "));
        out.push_str(if i + 1 < sections.len() { ",\n" } else { "\n" });
    }
    out.push_str("}\n");
    Ok(out)
}

fn map_source(cfg: &GenConfig, netdev: &str) -> Result<MapSource, PodConfigError> {
    device_plugin::validate_netdev(netdev, "device list")?;
    Ok(match cfg.mode {
        ModeChoice::Auto => cfg.layout.detect(netdev)?,
        ModeChoice::Uds => {
            let per_netdev = cfg.layout.uds_path(netdev);
            if per_netdev.symlink_metadata().is_err()
                && cfg.layout.legacy_uds.symlink_metadata().is_ok()
            {
                MapSource::Uds(cfg.layout.legacy_uds.clone())
            } else {
                MapSource::Uds(per_netdev)
            }
        }
        ModeChoice::Pinned => MapSource::Pinned(cfg.layout.pinned_map_path(netdev)),
    })
}

/// The CPUs this process may run on: its affinity mask, narrowed by the cgroup cpuset when one is
/// readable (cgroup v2 `cpuset.cpus.effective` or v1 `cpuset.effective_cpus`).
pub fn allowed_cpus() -> Result<Vec<usize>, PodConfigError> {
    let affinity = cpu::affinity().map_err(PodConfigError::Affinity)?;
    let cgroup = [CPUSET_V2, CPUSET_V1]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .and_then(|t| cpu::parse_cpu_list(&t).ok())
        .unwrap_or_default();
    let both: Vec<usize> = affinity
        .iter()
        .copied()
        .filter(|c| cgroup.contains(c))
        .collect();
    // A cpuset file from another cgroup namespace may not overlap at all: the affinity mask is what the
    // scheduler enforces, so it wins.
    let cpus = if both.is_empty() { affinity } else { both };
    if cpus.is_empty() {
        return Err(PodConfigError::NoCpus);
    }
    Ok(cpus)
}

/// Reads the NF's JSON-C file into its sections, with the reader of every configuration file, so a
/// file that loads with `-c` loads here and the other way round.
fn read_nf_sections(path: &Path) -> Result<Map<String, Value>, PodConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| PodConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(crate::config::parse_jsonc_object(
        &text,
        &path.display().to_string(),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// A fake pod: device-plugin directory and sysfs under one temp directory.
    struct Pod {
        root: PathBuf,
    }

    impl Pod {
        fn new(tag: &str) -> Self {
            let root =
                std::env::temp_dir().join(format!("cne-podcfg-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(&root).unwrap();
            Self { root }
        }
        fn netdev(&self, name: &str, rx_queues: u32, file: &str) -> &Self {
            for q in 0..rx_queues {
                std::fs::create_dir_all(self.root.join(format!("sys/{name}/queues/rx-{q}")))
                    .unwrap();
                std::fs::create_dir_all(self.root.join(format!("sys/{name}/queues/tx-{q}")))
                    .unwrap();
            }
            std::fs::create_dir_all(self.root.join(format!("dp/{name}"))).unwrap();
            std::fs::write(self.root.join(format!("dp/{name}/{file}")), b"").unwrap();
            self
        }
        fn cfg(&self) -> GenConfig {
            GenConfig {
                layout: PluginLayout {
                    dir: self.root.join("dp"),
                    legacy_uds: self.root.join("afxdp.sock"),
                },
                sys_class_net: self.root.join("sys"),
                ..GenConfig::default()
            }
        }
    }

    impl Drop for Pod {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }

    const NF_JSONC: &str = r#"{
        // The NF's own file, as mounted from a ConfigMap.
        "application": { "name": "nf-maglev", "description": "Maglev L4 load balancer" },
        "lports": { "stale:0": { "pmd": "net_af_xdp", "qid": 0, "umem": "x", "region": 0 } },
        "options": { "pkt_api": "xskdev", "no-metrics": false },
        /* Maglev state */
        "maglev": { "vips": [ { "address": "198.18.0.10", "port": 80, "pool": "web" } ],
                    "note": "a // inside a string stays" }
    }"#;

    fn env() -> Vec<PluginDevice> {
        device_plugin::devices_from_vars([("AFXDP_DEVICES_POOL1", "ens1 ens2"), ("HOME", "/root")])
            .unwrap()
    }

    fn parse(text: &str) -> Map<String, Value> {
        match serde_json::from_str::<Value>(text).unwrap() {
            Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        }
    }

    /// The references CNDP resolves must all hold.
    fn assert_consistent(cfg: &Map<String, Value>) {
        let umems = cfg["umems"].as_object().unwrap();
        let groups = cfg["lcore-groups"].as_object().unwrap();
        let lports = cfg["lports"].as_object().unwrap();
        for (name, u) in umems {
            let regions: u64 = u["regions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_u64().unwrap())
                .sum();
            assert_eq!(
                regions,
                u["bufcnt"].as_u64().unwrap(),
                "umem {name}: regions sum to bufcnt"
            );
        }
        let mut seen = HashSet::new();
        for (tname, t) in cfg["threads"].as_object().unwrap() {
            let g = t["group"].as_str().unwrap();
            assert!(
                groups.contains_key(g),
                "thread {tname} names missing group {g}"
            );
            for l in t
                .get("lports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let l = l.as_str().unwrap();
                assert!(
                    lports.contains_key(l),
                    "thread {tname} names missing lport {l}"
                );
                assert!(seen.insert(l.to_owned()), "lport {l} in two threads");
            }
        }
        assert_eq!(seen.len(), lports.len(), "every lport has a thread");
        for (lname, l) in lports {
            let u = &umems[l["umem"].as_str().unwrap()];
            let r = usize::try_from(l["region"].as_u64().unwrap()).unwrap();
            assert!(
                r < u["regions"].as_array().unwrap().len(),
                "{lname}: region out of range"
            );
            let netdev = lname.split(':').next().unwrap();
            assert_eq!(
                l["qid"].as_u64().unwrap().to_string(),
                lname.split(':').nth(1).unwrap()
            );
            assert!(!netdev.is_empty());
        }
    }

    #[test]
    fn uds_pod_with_four_cpus() {
        let pod = Pod::new("uds");
        pod.netdev("ens1", 2, "afxdp.sock")
            .netdev("ens2", 1, "afxdp.sock");
        let nf = pod.root.join("maglev.jsonc");
        std::fs::write(&nf, NF_JSONC).unwrap();
        let cfg = GenConfig {
            nf_config: Some(nf),
            thread_type: "maglev".into(),
            busy_poll: Some(BusyPoll {
                timeout_us: 20,
                budget: 64,
            }),
            ..pod.cfg()
        };
        let text = generate(&cfg, &env(), &[5, 2, 3, 4]).unwrap();
        let out = parse(&text);
        assert_consistent(&out);

        let keys: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("  \"").and_then(|l| l.split('"').next()))
            .collect();
        assert_eq!(
            keys,
            [
                "application",
                "defaults",
                "options",
                "umems",
                "lports",
                "lcore-groups",
                "threads",
                "maglev"
            ],
            "sections in CNDP's order, NF sections last"
        );
        assert_eq!(out["application"]["name"], "nf-maglev");
        assert_eq!(out["options"]["pkt_api"], "xskdev");
        assert_eq!(out["maglev"]["note"], "a // inside a string stays");
        let lports = out["lports"].as_object().unwrap();
        let names: Vec<&String> = lports.keys().collect();
        assert_eq!(
            names,
            ["ens1:0", "ens1:1", "ens2:0"],
            "stale lports from the NF file are replaced"
        );
        let l = &lports["ens1:1"];
        assert_eq!(l["qid"], 1);
        assert_eq!(l["pmd"], "net_af_xdp");
        assert_eq!(
            l["uds_path"],
            pod.root.join("dp/ens1/afxdp.sock").display().to_string()
        );
        assert!(l.get("xsk_pin_path").is_none());
        assert_eq!(
            (
                l["busy_poll"].clone(),
                l["busy_timeout"].clone(),
                l["busy_budget"].clone()
            ),
            (json!(true), json!(20), json!(64))
        );
        assert_eq!(out["lcore-groups"]["initial"], json!([2]));
        assert_eq!(out["lcore-groups"]["group0"], json!([3]));
        assert_eq!(out["lcore-groups"]["group2"], json!([5]));
        assert_eq!(out["threads"]["maglev:0"]["lports"], json!(["ens1:0"]));
        assert_eq!(out["threads"]["maglev:2"]["lports"], json!(["ens2:0"]));
        assert_eq!(out["threads"]["main"]["group"], "initial");
        assert_eq!(out["umems"]["umem0"]["bufcnt"], 24);
    }

    #[test]
    fn pinned_pod_with_one_cpu_and_more_lports_than_cpus() {
        let pod = Pod::new("pinned");
        pod.netdev("ens1", 3, "xsks_map");
        let devices = device_plugin::devices_from_vars([("AFXDP_DEVICES_P", "ens1")]).unwrap();
        let text = generate(&pod.cfg(), &devices, &[7]).unwrap();
        let out = parse(&text);
        assert_consistent(&out);
        assert_eq!(
            out["lports"]["ens1:2"]["xsk_pin_path"],
            pod.root.join("dp/ens1/xsks_map").display().to_string()
        );
        assert!(out["lports"]["ens1:2"].get("uds_path").is_none());
        assert!(out["lports"]["ens1:0"].get("busy_poll").is_none());
        // One CPU: the only worker shares it with the main thread and serves all three lports.
        assert_eq!(out["lcore-groups"]["group0"], json!([7]));
        assert_eq!(
            out["threads"]["fwd:0"]["lports"],
            json!(["ens1:0", "ens1:1", "ens1:2"])
        );
        assert_eq!(out["application"]["name"], DEFAULT_APP_NAME);
        assert!(out.get("options").is_none());
    }

    #[test]
    fn queue_count_defaults_to_one_without_sysfs() {
        let pod = Pod::new("nosysfs");
        std::fs::create_dir_all(pod.root.join("dp/ens9")).unwrap();
        std::fs::write(pod.root.join("dp/ens9/afxdp.sock"), b"").unwrap();
        let devices = device_plugin::devices_from_vars([("AFXDP_DEVICES_P", "ens9")]).unwrap();
        let out = parse(&generate(&pod.cfg(), &devices, &[0, 1]).unwrap());
        assert_eq!(out["lports"].as_object().unwrap().len(), 1);
        let fixed = GenConfig {
            queues: QueueChoice::Fixed(4),
            ..pod.cfg()
        };
        let out = parse(&generate(&fixed, &devices, &[0, 1]).unwrap());
        assert_eq!(out["lports"].as_object().unwrap().len(), 4);
        assert_consistent(&out);
    }

    #[test]
    fn forced_modes_and_missing_files() {
        let pod = Pod::new("modes");
        let devices = device_plugin::devices_from_vars([("AFXDP_DEVICES_P", "ens3")]).unwrap();
        let err = generate(&pod.cfg(), &devices, &[0]).unwrap_err();
        assert!(
            matches!(
                err,
                PodConfigError::Dp(DevicePluginError::NoDeviceFiles { .. })
            ),
            "{err}"
        );
        let pinned = GenConfig {
            mode: ModeChoice::Pinned,
            ..pod.cfg()
        };
        let out = parse(&generate(&pinned, &devices, &[0]).unwrap());
        assert!(out["lports"]["ens3:0"]["xsk_pin_path"]
            .as_str()
            .unwrap()
            .ends_with("dp/ens3/xsks_map"));
        // Forced UDS falls back to the legacy socket when only that one exists.
        std::fs::write(pod.root.join("afxdp.sock"), b"").unwrap();
        let uds = GenConfig {
            mode: ModeChoice::Uds,
            ..pod.cfg()
        };
        let out = parse(&generate(&uds, &devices, &[0]).unwrap());
        assert_eq!(
            out["lports"]["ens3:0"]["uds_path"],
            pod.root.join("afxdp.sock").display().to_string()
        );
    }

    #[test]
    fn no_devices_and_no_cpus_are_errors() {
        let pod = Pod::new("empty");
        assert!(matches!(
            generate(&pod.cfg(), &[], &[0]),
            Err(PodConfigError::NoDevices)
        ));
        pod.netdev("ens1", 1, "afxdp.sock");
        let devices = device_plugin::devices_from_vars([("AFXDP_DEVICES_P", "ens1")]).unwrap();
        assert!(matches!(
            generate(&pod.cfg(), &devices, &[]),
            Err(PodConfigError::NoCpus)
        ));
    }

    #[test]
    fn selected_sections_and_nf_file_errors() {
        let pod = Pod::new("sections");
        pod.netdev("ens1", 1, "afxdp.sock");
        let devices = device_plugin::devices_from_vars([("AFXDP_DEVICES_P", "ens1")]).unwrap();
        let nf = pod.root.join("nf.jsonc");
        std::fs::write(&nf, NF_JSONC).unwrap();
        let only = GenConfig {
            nf_config: Some(nf.clone()),
            sections: vec!["maglev".into()],
            ..pod.cfg()
        };
        let out = parse(&generate(&only, &devices, &[0]).unwrap());
        assert!(out.contains_key("maglev"));
        assert!(!out.contains_key("options"));
        let missing = GenConfig {
            sections: vec!["katran".into()],
            ..only.clone()
        };
        assert!(matches!(
            generate(&missing, &devices, &[0]),
            Err(PodConfigError::MissingSection { section, .. }) if section == "katran"
        ));
        std::fs::write(&nf, "{\n  // ok\n  \"maglev\": { \"vips\": [ }\n}").unwrap();
        match generate(&only, &devices, &[0]).unwrap_err() {
            PodConfigError::NfConfig(e) => {
                assert_eq!(e.line(), Some(3), "positions survive comment removal")
            }
            other => panic!("expected NfConfig, got {other}"),
        }
        std::fs::write(&nf, "[1, 2]").unwrap();
        let e = generate(&only, &devices, &[0]).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("the configuration must be a JSON object"),
            "{e}"
        );
        // What the main reader accepts loads here too: trailing commas; duplicates are refused.
        std::fs::write(&nf, "{\n  \"maglev\": { \"vips\": [1,], },\n}").unwrap();
        let out = parse(&generate(&only, &devices, &[0]).unwrap());
        assert_eq!(out["maglev"]["vips"], serde_json::json!([1]));
        std::fs::write(&nf, "{\n  \"maglev\": {},\n  \"maglev\": {}\n}").unwrap();
        let e = generate(&only, &devices, &[0]).unwrap_err();
        assert!(e.to_string().contains(":3: maglev: duplicate key"), "{e}");
    }

    #[test]
    fn allowed_cpus_ascend() {
        let mine = allowed_cpus().unwrap();
        let mut sorted = mine.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert!(!mine.is_empty());
        assert_eq!(mine, sorted, "ascending, no duplicates");
    }

    /// `gen-config` as an NF's subcommand sees it.
    fn from_args(args: &[&str]) -> Result<GenConfig, clap::Error> {
        #[derive(clap::Parser)]
        struct Cmd {
            #[command(flatten)]
            cfg: GenConfig,
        }
        let argv = std::iter::once("gen-config").chain(args.iter().copied());
        <Cmd as clap::Parser>::try_parse_from(argv).map(|c| c.cfg)
    }

    #[test]
    fn args_parse() {
        let cfg = from_args(&[
            "--nf-config",
            "/etc/cne/maglev.jsonc",
            "--section",
            "maglev",
            "--output=/run/cne/config.jsonc",
            "--mode",
            "pinned",
            "--queues",
            "2",
            "--thread-type",
            "maglev",
            "--cpus",
            "1-2",
            "--busy-poll",
            "20,64",
            "--bufcnt",
            "4",
            "--mtype",
            "2MB",
            "--dp-dir",
            "/x",
        ])
        .unwrap();
        assert_eq!(
            cfg.nf_config.as_deref(),
            Some(Path::new("/etc/cne/maglev.jsonc"))
        );
        assert_eq!(cfg.sections, vec!["maglev"]);
        assert_eq!(
            cfg.output,
            Some(Output::File(PathBuf::from("/run/cne/config.jsonc")))
        );
        assert_eq!(cfg.mode, ModeChoice::Pinned);
        assert_eq!(cfg.queues, QueueChoice::Fixed(2));
        assert_eq!(cfg.cpus, Some(vec![1, 2]));
        assert_eq!(
            cfg.busy_poll,
            Some(BusyPoll {
                timeout_us: 20,
                budget: 64
            })
        );
        assert_eq!((cfg.bufcnt_per_lport, cfg.mtype.as_str()), (4, "2MB"));
        assert_eq!(cfg.layout.dir, PathBuf::from("/x"));
        assert_eq!(
            from_args(&["-o", "-"]).unwrap().output,
            Some(Output::Stdout)
        );
        assert_eq!(from_args(&[]).unwrap(), GenConfig::default());
        for bad in [
            &["--mode", "x"][..],
            &["--queues", "0"],
            &["--bogus"],
            &["--busy-poll", "20"],
            &["--output"],
            &["--bufsz", "3"],
        ] {
            assert!(from_args(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn atomic_write_replaces_file() {
        let pod = Pod::new("write");
        let p = pod.root.join("out.jsonc");
        std::fs::write(&p, "old").unwrap();
        write_atomically(&p, "{}\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{}\n");
        assert_eq!(
            std::fs::read_dir(&pod.root).unwrap().count(),
            1,
            "no temp file left"
        );
    }
}
