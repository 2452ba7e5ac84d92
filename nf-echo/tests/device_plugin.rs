//! nf-echo in the Kubernetes AF_XDP device plugin's two modes, on a real veth pair, with only the
//! capabilities a pod gets (NET_RAW, IPC_LOCK, BPF) from the moment it starts.
//!
//! The lab plays the plugin's part: it loads the queue-to-XSKMAP redirect program with bpftool, pins
//! it and its XSKMAP on a bpffs mounted at a temp directory (in the root mount namespace, so every
//! `ip netns exec` sees it), and attaches it to the NF end of the veth. In pinned-map mode nf-echo
//! opens `<bpffs>/<netdev>/xsks_map`; in UDS mode a stand-in for the plugin's UDS server (the real one
//! needs a kubelet) hands the same map over `<dir>/<netdev>/afxdp.sock`. nf-echo runs under
//! `setpriv` with the bounding and inheritable sets cut to the three capabilities, so every step of
//! its setup has to work without CAP_NET_ADMIN or CAP_SYS_ADMIN. The client namespace uses the
//! kernel's own ping and UDP sockets; the NF namespace's kernel owns no address, so every answer is
//! nf-echo's. Needs root; every test builds and removes its own namespaces, mount and files.
#![forbid(unsafe_code)]

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use lab::config::cndp_sections;
use lab::dp_standin::{Behaviour, DpStandIn, Seen};
use lab::netns::Netns;
use lab::process::{Proc, Signal};
use lab::veth::VethPair;
use lab::wait::wait_for;
use serde_json::{json, Map, Value};

const NF_V4: &str = "198.18.0.1";
const NF_V6: &str = "2001:2::1";
const CLIENT_V4: &str = "198.18.0.2";
const CLIENT_V6: &str = "2001:2::2";
const UDP_PORT: u16 = 7;
/// The capabilities a pod of the device plugin gets, in setpriv's syntax.
const POD_CAPS: &str = "-all,+net_raw,+ipc_lock,+bpf";
/// The same as a capability mask (CAP_NET_RAW 13, CAP_IPC_LOCK 14, CAP_BPF 39), as
/// /proc/PID/status prints it.
const POD_CAP_MASK: u64 = (1 << 13) | (1 << 14) | (1 << 39);
/// What nf-echo logs after dropping to the pod's capabilities.
const KEPT_LOG: &str = "capabilities: kept [\"CAP_NET_RAW\", \"CAP_IPC_LOCK\", \"CAP_BPF\"]";
/// Bound on the stand-in server's life, far above what a run needs.
const STAND_IN_LIMIT: Duration = Duration::from_secs(12);
/// Busy-poll settings the UDS tests ask for.
const BUSY_TIMEOUT_US: u32 = 20;
const BUSY_BUDGET: u32 = 64;

use lab::require_root;

static SEQ: AtomicU32 = AtomicU32::new(0);

fn unique_tmp(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "cne-{tag}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ))
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let p = unique_tmp("dptest");
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A bpffs mounted at a temp directory of the root mount namespace; unmounted and removed on drop.
struct Bpffs(PathBuf);

impl Bpffs {
    fn new() -> Bpffs {
        let p = unique_tmp("bpffs");
        std::fs::create_dir_all(&p).expect("bpffs mount point");
        let fs = Bpffs(p);
        run(&["mount", "-t", "bpf", "bpf", &fs.0.to_string_lossy()]);
        fs
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        // Unpinning first releases the program and map even if the unmount were refused.
        if let Ok(entries) = std::fs::read_dir(&self.0) {
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    let _ = std::fs::remove_dir_all(&p);
                } else {
                    let _ = std::fs::remove_file(&p); // maps.debug/progs.debug refuse: fine
                }
            }
        }
        let _ = std::process::Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Runs a host command to completion; panics with its stderr on failure.
fn run(argv: &[&str]) -> String {
    let out = std::process::Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {argv:?}: {e}"));
    assert!(
        out.status.success(),
        "{argv:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Client and NF namespaces joined by a one-queue veth, the redirect program attached to the NF end
/// with its XSKMAP pinned at `<bpffs>/<netdev>/xsks_map` (the plugin's pinning layout).
struct DpLab {
    // Dropped in this order: the veth (and with it the program's attachment), the namespaces, then
    // the pins and files.
    link: VethPair,
    client: Netns,
    nf: Netns,
    bpffs: Bpffs,
    dir: TempDir,
    prog_id: u64,
}

impl DpLab {
    fn new() -> DpLab {
        let client = Netns::new("c").expect("client netns");
        let nf = Netns::new("p").expect("nf netns");
        let link = VethPair::new(&client, &nf, 1).expect("veth pair");
        let c = link.a();
        c.add_addr(CLIENT_V4.parse().unwrap(), 24).unwrap();
        c.add_addr(CLIENT_V6.parse().unwrap(), 64).unwrap();
        c.up().unwrap();
        link.b().up().unwrap();
        let bpffs = Bpffs::new();
        let dir = TempDir::new();
        let mut lab = DpLab {
            link,
            client,
            nf,
            bpffs,
            dir,
            prog_id: 0,
        };
        lab.attach_redirect_program();
        lab
    }

    /// What the device plugin does for a netdev: load its redirect program, pin it and its XSKMAP,
    /// attach it in native mode inside the pod's namespace.
    fn attach_redirect_program(&mut self) {
        let prog_pin = self.bpffs.0.join("xsk_redirect");
        let maps_dir = self.bpffs.0.join(self.nf_if());
        run(&[
            "bpftool",
            "prog",
            "load",
            lab::tools::XSK_REDIRECT_OBJ,
            &prog_pin.to_string_lossy(),
            "type",
            "xdp",
            "pinmaps",
            &maps_dir.to_string_lossy(),
        ]);
        self.nf
            .exec(&[
                "bpftool",
                "net",
                "attach",
                "xdpdrv",
                "pinned",
                &prog_pin.to_string_lossy(),
                "dev",
                self.nf_if(),
            ])
            .expect("bpftool net attach");
        let prog = self.attached().expect("redirect program attached");
        assert_eq!(prog.name, "xsk_redirect");
        self.prog_id = prog.id;
        assert!(self.pinned_map().exists(), "xsks_map not pinned");
    }

    fn nf_if(&self) -> &str {
        self.link.b().name()
    }

    fn attached(&self) -> Option<lab::XdpProg> {
        self.nf.xdp_prog(self.nf_if()).expect("ip link")
    }

    /// The program on the NF interface must still be the lab's, never one of nf-echo's.
    fn assert_program_is_ours(&self, when: &str) {
        let id = self.attached().map(|p| p.id);
        assert_eq!(
            id,
            Some(self.prog_id),
            "{when}: the XDP program on {} is not the plugin's (id {})",
            self.nf_if(),
            self.prog_id
        );
    }

    fn pinned_map(&self) -> PathBuf {
        self.bpffs.0.join(self.nf_if()).join("xsks_map")
    }

    /// A descriptor of the program's XSKMAP, for the stand-in to hand out.
    fn map_fd(&self) -> OwnedFd {
        cne::k8s::device_plugin::open_pinned_map(&self.pinned_map())
            .expect("open the pinned XSKMAP")
    }

    /// Directory for the stand-in's per-netdev socket (not the bpffs: there the pinned map would
    /// also be found).
    fn uds_dir(&self) -> PathBuf {
        self.dir.0.join("afxdp_dp")
    }

    fn stand_in(&self, hostname: &str, behaviour: Behaviour) -> DpStandIn {
        DpStandIn::start(
            &self.uds_dir(),
            self.nf_if(),
            hostname,
            self.map_fd(),
            behaviour,
            STAND_IN_LIMIT,
        )
        .expect("start the device-plugin stand-in")
    }

    /// An nf-echo config with one lport on queue 0; `lport_extra` is merged into the lport.
    fn config(&self, name: &str, lport_extra: Value) -> PathBuf {
        let mut root = cndp_sections("nf-echo", self.nf_if(), 1, &[0]);
        let lport = root
            .get_mut("lports")
            .and_then(|l| l.get_mut(format!("{}:0", self.nf_if())))
            .and_then(Value::as_object_mut)
            .expect("lport in generated sections");
        if let Value::Object(extra) = lport_extra {
            lport.extend(extra);
        }
        root.insert("echo".into(), echo_section());
        let path = self.dir.0.join(name);
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&Value::Object(root)).unwrap(),
        )
        .unwrap();
        path
    }

    /// A command line running `args` of nf-echo with only the pod's capabilities from the start.
    fn pod_argv(args: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = [
            "setpriv",
            "--bounding-set",
            POD_CAPS,
            "--inh-caps",
            POD_CAPS,
            "--",
            env!("CARGO_BIN_EXE_nf-echo"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(args.iter().map(|s| s.to_string()));
        v
    }

    /// Starts nf-echo with `config` and waits until it has dropped to the pod's capabilities.
    fn start(&self, config: &Path) -> Proc {
        let cfg = config.to_string_lossy();
        let argv = Self::pod_argv(&["-c", &cfg, "--stats-interval", "0"]);
        let mut p = self.nf.spawn("nf-echo-dp", &argv).expect("spawn nf-echo");
        let ready = wait_for(Duration::from_secs(10), || {
            p.stderr().contains("capabilities: kept") || !p.is_running()
        });
        assert!(
            ready && p.is_running(),
            "nf-echo did not start:\n{}",
            p.stderr()
        );
        // Let the worker reach its loop.
        std::thread::sleep(Duration::from_millis(300));
        p
    }

    /// Runs nf-echo with `config`, expecting it to fail with exit code 1; returns its stderr.
    fn run_failing(&self, config: &Path) -> String {
        let cfg = config.to_string_lossy();
        let argv = Self::pod_argv(&["-c", &cfg, "--stats-interval", "0"]);
        let mut p = self.nf.spawn("nf-echo-dp-fail", &argv).expect("spawn");
        let status = p
            .wait_timeout(Duration::from_secs(10))
            .expect("wait")
            .unwrap_or_else(|| panic!("nf-echo kept running with a bad setup:\n{}", p.stderr()));
        let err = p.stderr();
        assert_eq!(
            status.code(),
            Some(1),
            "nf-echo's exit with a bad setup:\n{err}"
        );
        err
    }

    fn ping(&self, flag: &str, dst: &str, nf: &Proc) {
        let out = self
            .client
            .exec(&["ping", flag, "-c", "3", "-i", "0.2", "-W", "2", dst])
            .unwrap_or_else(|e| panic!("ping {dst}: {e:#}\nnf-echo:\n{}", nf.stderr()));
        assert!(out.contains("3 received"), "ping {dst}: {out}");
    }

    fn udp_roundtrips(&self, dst: &str, flows: u32) -> u64 {
        let out = self
            .client
            .exec(&[
                "python3",
                "-c",
                UDP_CLIENT,
                dst,
                &UDP_PORT.to_string(),
                &flows.to_string(),
            ])
            .expect("UDP client failed");
        out.trim().parse().expect("count")
    }

    /// ping, ping -6 and UDP echo over v4 and v6; returns the UDP round trips.
    fn check_traffic(&self, nf: &Proc) -> u64 {
        self.ping("-4", NF_V4, nf);
        self.ping("-6", NF_V6, nf);
        self.udp_roundtrips(NF_V4, 2) + self.udp_roundtrips(NF_V6, 2)
    }
}

fn echo_section() -> Value {
    json!({"mode": "echo", "addrs": [NF_V4, NF_V6], "udp_ports": [UDP_PORT]})
}

/// Sends datagrams of several sizes per flow and checks each comes back byte for byte from the
/// address it was sent to; prints the number of round trips.
const UDP_CLIENT: &str = r#"
import os, socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
dst = (sys.argv[1], int(sys.argv[2]))
flows, sizes = int(sys.argv[3]), [1, 18, 64, 512, 1400]
ok = 0
for f in range(flows):
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.settimeout(2)
    for n in sizes:
        payload = os.urandom(n)
        s.sendto(payload, dst)
        data, src = s.recvfrom(4096)
        assert data == payload, f"flow {f}: {n}-byte payload came back different"
        assert src[0] == dst[0] and src[1] == dst[1], f"reply from {src}, expected {dst}"
        ok += 1
    s.close()
print(ok)
"#;

/// Capability masks of every thread of `pid` (permitted, effective, bounding, inheritable).
fn thread_caps(pid: u32) -> Vec<(String, [u64; 4])> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).expect("task dir") {
        let t = t.expect("task entry").path();
        let status = std::fs::read_to_string(t.join("status")).expect("task status");
        let field = |name: &str| -> u64 {
            let line = status
                .lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("no {name} in {}", t.display()));
            u64::from_str_radix(line[name.len()..].trim(), 16).expect("hex mask")
        };
        out.push((
            t.display().to_string(),
            [
                field("CapPrm:"),
                field("CapEff:"),
                field("CapBnd:"),
                field("CapInh:"),
            ],
        ));
    }
    out
}

/// Every thread of nf-echo holds exactly the pod's capabilities, and it logged keeping them.
fn assert_pod_caps(nf: &Proc) {
    let caps = thread_caps(nf.pid());
    assert!(
        caps.len() >= 2,
        "expected main and worker threads: {caps:?}"
    );
    for (task, masks) in caps {
        assert_eq!(
            masks, [POD_CAP_MASK; 4],
            "{task}: capability masks (prm, eff, bnd, inh) are not the pod's {POD_CAP_MASK:#x}"
        );
    }
    let log = nf.stderr();
    assert!(log.contains(KEPT_LOG), "no `{KEPT_LOG}` in:\n{log}");
}

/// Stops nf-echo with SIGINT, expects exit 0 and returns the summary it printed.
fn stop_ok(nf: &mut Proc) -> String {
    nf.signal(Signal::Int).expect("SIGINT");
    let status = nf
        .wait_timeout(Duration::from_secs(10))
        .expect("wait")
        .expect("nf-echo did not exit after SIGINT");
    assert!(
        status.success(),
        "nf-echo exited with {status}:\n{}",
        nf.stderr()
    );
    nf.stdout()
}

/// The name nf-echo introduces itself with: `gethostname()`, which `ip netns exec` leaves alone.
fn hostname() -> String {
    cne::k8s::device_plugin::pod_hostname().expect("gethostname")
}

/// `socket:[inode]` links of nf-echo's open descriptors.
fn socket_links(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd dir")
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|l| l.to_string_lossy().into_owned())
        .filter(|l| l.starts_with("socket:"))
        .collect()
}

/// The exchange the plugin must see from nf-echo with one busy-polling lport on `netdev`.
fn assert_uds_exchange(seen: &Seen, netdev: &str, nf: &Proc) {
    let host = hostname();
    let busy = format!("/config_busy_poll,{BUSY_TIMEOUT_US},{BUSY_BUDGET}");
    let expected = vec![
        format!("/connect,{host}"),
        format!("/xsk_map_fd,{netdev}"),
        busy.clone(),
        "/fin".to_string(),
    ];
    assert_eq!(seen.texts(), expected, "requests the plugin received");
    assert_eq!(
        seen.replies,
        ["/host_ok", "/fd_ack", "/config_busy_poll_ack", "/fin_ack"]
    );
    assert_eq!(seen.connections, 1, "one connection per plugin socket");
    for r in &seen.requests {
        if r.text == busy {
            assert_eq!(r.fds.len(), 1, "busy-poll request without exactly one fd");
            // The descriptor is nf-echo's own AF_XDP socket: the same socket inode is open in it.
            assert!(
                socket_links(nf.pid()).contains(&r.fds[0]),
                "{} is not one of nf-echo's sockets",
                r.fds[0]
            );
        } else {
            assert!(r.fds.is_empty(), "{} carried descriptors", r.text);
        }
    }
}

#[test]
#[ignore = "needs root"]
fn pinned_map_mode_serves_traffic_with_pod_capabilities() {
    require_root();
    let lab = DpLab::new();
    let pin = lab.pinned_map();
    let cfg = lab.config(
        "pinned.jsonc",
        json!({ "xsk_pin_path": pin.to_string_lossy() }),
    );
    let mut nf = lab.start(&cfg);
    assert_pod_caps(&nf);
    lab.assert_program_is_ours("while nf-echo runs");
    assert_eq!(lab.check_traffic(&nf), 20);
    let log = nf.stderr();
    assert!(
        log.contains(&format!("pinned XSKMAP {}", pin.display())),
        "{log}"
    );
    assert!(!log.contains("XDP filter program"), "{log}");
    let summary = stop_ok(&mut nf);
    assert!(summary.contains("icmp 3 icmpv6 3 udp 20"), "{summary}");
    lab.assert_program_is_ours("after nf-echo exited");
}

#[test]
#[ignore = "needs root"]
fn uds_mode_handshake_and_traffic_with_pod_capabilities() {
    require_root();
    let lab = DpLab::new();
    let server = lab.stand_in(&hostname(), Behaviour::Plugin);
    let cfg = lab.config(
        "uds.jsonc",
        json!({ "uds_path": server.path().to_string_lossy(), "busy_poll": true,
                "busy_timeout": BUSY_TIMEOUT_US, "busy_budget": BUSY_BUDGET }),
    );
    let sock_path = server.path().to_path_buf();
    let mut nf = lab.start(&cfg);
    assert_pod_caps(&nf);
    lab.assert_program_is_ours("while nf-echo runs");
    assert!(
        wait_for(Duration::from_secs(5), || server.is_finished()),
        "the handshake did not end with /fin"
    );
    let seen = server.join().expect("stand-in");
    assert_uds_exchange(&seen, lab.nf_if(), &nf);
    assert!(!sock_path.exists(), "socket file left after /fin");
    assert_eq!(lab.check_traffic(&nf), 20);
    assert!(!nf.stderr().contains("XDP filter program"));
    let summary = stop_ok(&mut nf);
    assert!(summary.contains("icmp 3 icmpv6 3 udp 20"), "{summary}");
    lab.assert_program_is_ours("after nf-echo exited");
}

#[test]
#[ignore = "needs root"]
fn uds_mode_refusals_fail_clearly() {
    require_root();
    let lab = DpLab::new();

    // The plugin refuses a hostname that is not the pod's name.
    let server = lab.stand_in("some-other-pod", Behaviour::Plugin);
    let cfg = lab.config(
        "hostnak.jsonc",
        json!({ "uds_path": server.path().to_string_lossy() }),
    );
    let err = lab.run_failing(&cfg);
    assert!(
        err.contains("refused hostname") && err.contains("/host_nak"),
        "{err}"
    );
    assert!(err.contains(&format!("{:?}", hostname())), "{err}");
    let seen = server.join().expect("stand-in");
    assert_eq!(seen.texts(), [format!("/connect,{}", hostname())]);
    lab.assert_program_is_ours("after the host refusal");

    // The plugin has no map for the netdev.
    let server = lab.stand_in(&hostname(), Behaviour::FdNak);
    let cfg = lab.config(
        "fdnak.jsonc",
        json!({ "uds_path": server.path().to_string_lossy() }),
    );
    let err = lab.run_failing(&cfg);
    assert!(
        err.contains("/fd_nak") && err.contains(lab.nf_if()),
        "{err}"
    );
    let seen = server.join().expect("stand-in");
    let texts = seen.texts();
    assert_eq!(
        texts[..2],
        [
            format!("/connect,{}", hostname()),
            format!("/xsk_map_fd,{}", lab.nf_if())
        ]
    );
    lab.assert_program_is_ours("after the map refusal");

    // No socket at all: the pod was not allocated the netdev, or the socket was used already.
    let missing = lab.uds_dir().join(lab.nf_if()).join("afxdp.sock");
    let cfg = lab.config(
        "missing.jsonc",
        json!({ "uds_path": missing.to_string_lossy() }),
    );
    let err = lab.run_failing(&cfg);
    assert!(
        err.contains(&format!(
            "device-plugin socket {} does not exist",
            missing.display()
        )),
        "{err}"
    );

    // Pinned mode without the pinned map.
    let missing = lab.dir.0.join("nothing-pinned/xsks_map");
    let cfg = lab.config(
        "nopin.jsonc",
        json!({ "xsk_pin_path": missing.to_string_lossy() }),
    );
    let err = lab.run_failing(&cfg);
    assert!(
        err.contains(&format!(
            "pinned XSKMAP {} does not exist",
            missing.display()
        )),
        "{err}"
    );
    lab.assert_program_is_ours("after the failed starts");
}

/// Runs `nf-echo gen-config` inside the NF namespace with the pod's capabilities and the plugin's
/// environment naming the NF interface; returns the parsed config and its path.
fn gen_config(lab: &DpLab, dp_dir: &Path, extra: &[&str]) -> (Value, PathBuf) {
    let nf_file = lab.dir.0.join("nf-sections.jsonc");
    std::fs::write(
        &nf_file,
        format!(
            "// nf-echo's own section, merged into the generated config\n{}\n",
            json!({ "application": { "name": "nf-echo-pod" }, "echo": echo_section() })
        ),
    )
    .unwrap();
    let out = lab.dir.0.join("generated.jsonc");
    let (nf_file_s, out_s, dp_s) = (
        nf_file.to_string_lossy(),
        out.to_string_lossy(),
        dp_dir.to_string_lossy(),
    );
    let mut args = vec![
        "gen-config",
        "--nf-config",
        &nf_file_s,
        "--output",
        &out_s,
        "--dp-dir",
        &dp_s,
    ];
    args.extend_from_slice(extra);
    let argv = DpLab::pod_argv(&args);
    let mut cmd = lab.nf.command(&argv);
    cmd.env("AFXDP_DEVICES_LABPOOL", lab.nf_if());
    let res = cmd.output().expect("run gen-config");
    assert!(
        res.status.success(),
        "gen-config failed: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    let text = std::fs::read_to_string(&out).expect("generated config");
    let v: Value = serde_json::from_str(&text).expect("generated config is JSON");
    (v, out)
}

fn generated_lport<'a>(cfg: &'a Value, netdev: &str) -> &'a Map<String, Value> {
    let lports = cfg["lports"].as_object().expect("lports");
    assert_eq!(
        lports.keys().collect::<Vec<_>>(),
        [&format!("{netdev}:0")],
        "one lport per queue of the one-queue veth"
    );
    lports[&format!("{netdev}:0")].as_object().expect("lport")
}

#[test]
#[ignore = "needs root"]
fn gen_config_for_a_pinned_map_runs_nf_echo() {
    require_root();
    let lab = DpLab::new();
    // The bpffs is laid out as the plugin's directory: <dir>/<netdev>/xsks_map.
    let (cfg, path) = gen_config(&lab, &lab.bpffs.0, &[]);
    let lport = generated_lport(&cfg, lab.nf_if());
    assert_eq!(
        lport["xsk_pin_path"],
        json!(lab.pinned_map().to_string_lossy())
    );
    assert!(lport.get("uds_path").is_none());
    assert!(
        lport["description"]
            .as_str()
            .is_some_and(|d| d.contains("pool LABPOOL")),
        "{lport:?}"
    );
    assert_eq!(cfg["echo"], echo_section());
    assert_eq!(cfg["application"]["name"], json!("nf-echo-pod"));

    let mut nf = lab.start(&path);
    assert_pod_caps(&nf);
    assert_eq!(lab.check_traffic(&nf), 20);
    stop_ok(&mut nf);
    lab.assert_program_is_ours("after nf-echo exited");
}

#[test]
#[ignore = "needs root"]
fn gen_config_for_the_uds_runs_nf_echo() {
    require_root();
    let lab = DpLab::new();
    let server = lab.stand_in(&hostname(), Behaviour::Plugin);
    let busy = format!("{BUSY_TIMEOUT_US},{BUSY_BUDGET}");
    let (cfg, path) = gen_config(&lab, &lab.uds_dir(), &["--busy-poll", &busy]);
    let lport = generated_lport(&cfg, lab.nf_if());
    assert_eq!(lport["uds_path"], json!(server.path().to_string_lossy()));
    assert!(lport.get("xsk_pin_path").is_none());
    assert_eq!(lport["busy_poll"], json!(true));

    let mut nf = lab.start(&path);
    assert_pod_caps(&nf);
    assert!(
        wait_for(Duration::from_secs(5), || server.is_finished()),
        "the handshake did not end with /fin"
    );
    let seen = server.join().expect("stand-in");
    assert_uds_exchange(&seen, lab.nf_if(), &nf);
    assert_eq!(lab.check_traffic(&nf), 20);
    stop_ok(&mut nf);
    lab.assert_program_is_ours("after nf-echo exited");
}
