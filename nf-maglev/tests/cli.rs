//! The `nf-maglev` binary end to end: configuration errors, start-up on a veth pair, the admin API and
//! metrics, reloads by API and SIGHUP, clean shutdown on SIGINT and SIGTERM, and the `decap` subcommand.
//!
//! Tests that attach XDP programs need root; they print a note and pass when run without it. Each builds
//! its own veth pair with names that include the process id and a per-test tag, assigns no addresses
//! unless a test needs one (from 198.18.0.0/15), and deletes the pair in `Drop`, after the load balancer
//! child (killed in its own `Drop` if a test fails) has gone. Waits are bounded polls for a condition,
//! never timing assertions.
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_nf-maglev");
/// Upper bound of every wait: start-up, a reload, a shutdown.
const WAIT: Duration = Duration::from_secs(20);

use lab::require_root;

/// Polls `f` every 50 ms until it returns `Some`, for at most [`WAIT`].
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "gave up waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A scratch directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("nf-maglev-cli-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        Self(p)
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).expect("write file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A veth pair in this process's namespace ([`lab::VethPair::from_here`], so `lab cleanup` removes what
/// a killed run leaves), both ends up; deleted on drop.
struct Veth {
    /// The end nf-maglev runs on.
    a: String,
    _pair: lab::VethPair,
}

impl Veth {
    fn new() -> Self {
        let pair = lab::VethPair::from_here(None, 1).expect("veth pair");
        pair.a().up().expect("veth end a up");
        pair.b().up().expect("veth end b up");
        Self {
            a: pair.a().name().to_string(),
            _pair: pair,
        }
    }

    /// Whether an XDP program is attached to the `a` side.
    fn has_xdp(&self) -> bool {
        let out = run("ip", &["-details", "link", "show", "dev", &self.a]);
        out.contains("prog/xdp")
    }
}

/// The CNDP sections for one queue of `netdev`, plus `maglev`.
fn config_text(netdev: &str, qid: u16, maglev: &str) -> String {
    format!(
        r#"// test configuration
{{
    "application": {{ "name": "nf-maglev-test" }},
    "umems": {{
        "umem0": {{ "bufcnt": 2, "bufsz": 2, "mtype": "4KB", "regions": [2] }}
    }},
    "lports": {{
        "{netdev}:0": {{ "pmd": "net_af_xdp", "qid": {qid}, "umem": "umem0", "region": 0 }}
    }},
    "lcore-groups": {{ "initial": [0], "group0": [0] }},
    "threads": {{
        "main": {{ "group": "initial" }},
        "lb:0": {{ "group": "group0", "lports": ["{netdev}:0"] }}
    }},
    "maglev": {maglev}
}}
"#
    )
}

/// A `maglev` section; `extra` goes into the first VIP's backend list.
fn maglev(extra_backend: &str) -> String {
    format!(
        r#"{{
        "table_size": 251,
        "local_addrs": ["198.18.0.1"],
        "gateway_mac": "02:00:00:00:00:fe",
        "conntrack": {{ "size": 1024 }},
        "vips": [
            {{
                "name": "web",
                "addr": "198.18.100.1",
                "proto": "tcp",
                "port": 80,
                "mode": "gre",
                "check": {{ "type": "none" }},
                "backends": [
                    {{ "name": "a", "addr": "198.18.1.1", "weight": 1 }},
                    {{ "name": "b", "addr": "198.18.1.2", "weight": 1 }},
                    {{ "name": "c", "addr": "198.18.1.3", "weight": 2 }}{extra_backend}
                ]
            }},
            {{
                "name": "dns6",
                "addr": "2001:2::100",
                "proto": "udp",
                "port": "all",
                "mode": "l2dsr",
                "backends": [
                    {{ "name": "x", "addr": "2001:2:1::1", "mac": "02:00:00:00:02:01" }}
                ]
            }}
        ]
    }}"#
    )
}

/// The 1-based line of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle} not in the config"))
        + 1
}

fn check_output(path: &Path) -> (ExitStatus, String) {
    let out = Command::new(BIN)
        .arg("-c")
        .arg(path)
        .output()
        .expect("run nf-maglev");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_configs_exit_with_file_line_and_key_path() {
    let dir = TempDir::new("bad");
    let good = config_text("nfmnone0", 0, &maglev(""));
    // (file name, text, needle on the reported line, key path, message part)
    let cases = [
        (
            "prime.jsonc",
            good.replace(r#""table_size": 251"#, r#""table_size": 250"#),
            r#""table_size": 250"#,
            "maglev.table_size",
            "is not a prime",
        ),
        (
            "dup.jsonc",
            good.replace(r#""name": "b", "addr""#, r#""name": "a", "addr""#),
            r#""name": "a", "addr": "198.18.1.2""#,
            "maglev.vips[0].backends[1].name",
            "duplicate backend name \"a\"",
        ),
        (
            "family.jsonc",
            good.replace(r#""addr": "2001:2:1::1""#, r#""addr": "198.18.2.1""#),
            r#""addr": "198.18.2.1""#,
            "maglev.vips[1].backends[0].addr",
            "IPv4 backend 198.18.2.1 for IPv6 VIP",
        ),
        (
            "unknown.jsonc",
            good.replace(r#""weight": 2 }"#, r#""wieght": 2 }"#),
            r#""wieght": 2"#,
            "maglev.vips[0].backends[2].wieght",
            "unknown field `wieght`",
        ),
        (
            "check.jsonc",
            good.replace(
                r#""check": { "type": "none" }"#,
                r#""check": { "type": "http", "interval": 1, "timeout": 2 }"#,
            ),
            r#""check": { "type": "http""#,
            "maglev.vips[0].check.timeout",
            "exceeds the interval",
        ),
        (
            "checktype.jsonc",
            good.replace(
                r#""check": { "type": "none" }"#,
                r#""check": { "type": "icmp" }"#,
            ),
            r#""check": { "type": "icmp" }"#,
            "maglev.vips[0].check.type",
            "unknown variant `icmp`",
        ),
    ];
    for (name, text, needle, path, msg) in cases {
        assert_ne!(text, good, "{name}: the replacement applied");
        let file = dir.write(name, &text);
        let (status, stderr) = check_output(&file);
        assert!(!status.success(), "{name} was accepted");
        let want = format!("{}:{}: {path}: ", file.display(), line_of(&text, needle));
        assert!(
            stderr.contains(&want) && stderr.contains(msg),
            "{name}: expected `{want}...{msg}` in:\n{stderr}"
        );
    }
    // Several problems are all reported, one line each.
    let both = good
        .replace(r#""table_size": 251"#, r#""table_size": 250"#)
        .replace(r#""name": "b", "addr""#, r#""name": "a", "addr""#);
    let (status, stderr) = check_output(&dir.write("both.jsonc", &both));
    assert!(!status.success());
    assert!(
        stderr.contains("maglev.table_size: ")
            && stderr.contains("maglev.vips[0].backends[1].name: "),
        "{stderr}"
    );
    // No config at all.
    let out = Command::new(BIN).output().expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("pass -c FILE.jsonc"));
}

#[test]
fn gen_config_help_prints_its_usage() {
    let out = Command::new(BIN)
        .args(["gen-config", "--help"])
        .output()
        .expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Usage: nf-maglev gen-config") && text.contains("--nf-config"),
        "{text}"
    );
}

#[test]
#[ignore = "needs root"]
fn a_missing_netdev_fails_clearly() {
    require_root();
    let dir = TempDir::new("nodev");
    let netdev = lab::names::unique("none").expect("a name no interface has");
    let file = dir.write("c.jsonc", &config_text(&netdev, 0, &maglev("")));
    let out = Command::new(BIN)
        .arg("-c")
        .arg(&file)
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("netdev {netdev} not found")),
        "{stderr}"
    );
    // The cause is printed once.
    assert_eq!(stderr.matches("not found").count(), 1, "{stderr}");
}

/// A `maglev` section with one TCP VIP per port `1..=ports` of one address, without backends.
fn port_vips(ports: u16) -> String {
    let vips: Vec<String> = (1..=ports)
        .map(|p| {
            format!(
                r#"{{ "name": "p{p}", "addr": "198.18.100.1", "proto": "tcp", "port": {p},
                     "mode": "gre", "backends": [] }}"#
            )
        })
        .collect();
    format!(
        r#"{{ "table_size": 251, "local_addrs": ["198.18.0.1"], "gateway_mac": "02:00:00:00:00:fe",
             "vips": [{}] }}"#,
        vips.join(",\n")
    )
}

#[test]
fn claims_beyond_the_filter_capacity_are_refused_before_start() {
    let dir = TempDir::new("claims");
    // 4096 ports of one address: 4096 rules plus the address's own entry, one more than the limit.
    // The netdev does not exist: the check comes before anything touches the network.
    let file = dir.write("many.jsonc", &config_text("nfmnone0", 0, &port_vips(4096)));
    let (status, stderr) = check_output(&file);
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("maglev.vips: the VIPs need 4097 XDP claim entries")
            && stderr.contains("limit of 4096"),
        "{stderr}"
    );
    assert!(!stderr.contains("nfmnone0 not found"), "{stderr}");
    // 4095 ports fit exactly (4096 entries): start-up goes on, to fail at the missing interface.
    let file = dir.write("fits.jsonc", &config_text("nfmnone0", 0, &port_vips(4095)));
    let (status, stderr) = check_output(&file);
    assert!(!status.success(), "{stderr}");
    assert!(!stderr.contains("claim entries"), "{stderr}");
    assert!(stderr.contains("nfmnone0"), "{stderr}");
}

#[test]
#[ignore = "needs root"]
fn decap_killed_leaves_no_program_and_restarts_without_force() {
    require_root();
    let veth = Veth::new();
    run("ip", &["addr", "add", "198.18.77.2/32", "dev", &veth.a]);
    let start = || {
        let child = Command::new(BIN)
            .args(["decap", "--dev", &veth.a])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn decap");
        let mut attached = false;
        for _ in 0..500 {
            if veth.has_xdp() {
                attached = true;
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        (child, attached)
    };
    let (mut first, attached) = start();
    assert!(attached, "decap did not attach");
    first.kill().expect("SIGKILL");
    first.wait().expect("reap");
    wait_for("the kernel to detach the killed decap's program", || {
        (!veth.has_xdp()).then_some(())
    });
    // The same command line again: no --force needed.
    let (mut second, attached) = start();
    let alive = second.try_wait().ok().flatten().is_none();
    let _ = second.kill();
    let out = second.wait_with_output().expect("reap");
    assert!(
        attached && alive,
        "restarted decap did not attach: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("the second program to leave", || {
        (!veth.has_xdp()).then_some(())
    });
}

/// A running `nf-maglev` whose stderr is collected; killed on drop if still running.
struct Lb {
    child: Child,
    addr: String,
    log: Arc<Mutex<String>>,
}

impl Lb {
    fn start(config: &Path, extra: &[&str]) -> Self {
        let mut cmd = Command::new(BIN);
        cmd.arg("-c")
            .arg(config)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra);
        Self::spawn(cmd)
    }

    /// Starts `cmd` (which runs nf-maglev in the end) and waits for the admin address in its log.
    fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nf-maglev");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        {
            // Drains stderr for the whole run, so the child never blocks on a full pipe.
            let log = Arc::clone(&log);
            thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(mut l) = log.lock() {
                        l.push_str(&line);
                        l.push('\n');
                    }
                }
            });
        }
        let mut lb = Self {
            child,
            addr: String::new(),
            log,
        };
        lb.addr = wait_for("the admin address in the log", || {
            if let Ok(Some(status)) = lb.child.try_wait() {
                panic!("nf-maglev exited with {status}:\n{}", lb.log());
            }
            let log = lb.log();
            let rest = log.split("listening on http://").nth(1)?;
            Some(rest.split_whitespace().next()?.to_owned())
        });
        lb
    }

    fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        run("kill", &[&format!("-{sig}"), &self.child.id().to_string()]);
    }

    /// Waits for the process to exit.
    fn wait(&mut self) -> ExitStatus {
        wait_for("nf-maglev to exit", || self.child.try_wait().ok().flatten())
    }

    fn http(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        http(&self.addr, method, path, body)
    }

    fn json(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        let (status, text) = self.http(method, path, body);
        let v = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"));
        (status, v)
    }

    fn state(&self) -> Value {
        let (status, v) = self.json("GET", "/api/state", "");
        assert_eq!(status, 200, "{v}");
        v
    }
}

impl Drop for Lb {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One HTTP/1.1 request with `Connection: close`; returns the status and body.
fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read response");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad response: {text}"));
    (status, body.to_owned())
}

/// Runs `promtool check metrics` on `text` when promtool is installed (Debian's `prometheus` package).
fn promtool_check(text: &str) {
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        eprintln!("promtool not installed: exposition format checked by the unit tests only");
        return;
    };
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text.as_bytes()).expect("write to promtool");
    }
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn backend<'a>(state: &'a Value, vip: &str, name: &str) -> Option<&'a Value> {
    state["vips"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == vip)?["backends"]
        .as_array()?
        .iter()
        .find(|b| b["name"] == name)
}

#[test]
#[ignore = "needs root"]
fn admin_api_round_trip_and_reloads() {
    require_root();
    let veth = Veth::new();
    let dir = TempDir::new("api");
    let file = dir.write("lb.jsonc", &config_text(&veth.a, 0, &maglev("")));
    let mut lb = Lb::start(&file, &[]);
    assert!(veth.has_xdp(), "the filter program is attached");

    assert_eq!(lb.http("GET", "/healthz", ""), (200, "ok\n".to_owned()));
    let (status, metrics) = lb.http("GET", "/metrics", "");
    assert_eq!(status, 200);
    for family in [
        "nf_maglev_port_rx_packets_total{port=\"",
        "nf_maglev_port_xdp_rx_ring_full_total{",
        "nf_maglev_xdp_filter_claimed_packets_total{port=\"",
        "nf_maglev_vip_packets_total{vip=\"web\"}",
        "nf_maglev_backend_weight{vip=\"web\",backend=\"c\"} 2",
        "nf_maglev_backend_table_share{vip=\"web\",backend=\"a\"}",
        "nf_maglev_conntrack_entries{",
        "nf_maglev_dropped_packets_total{reason=\"no_vip\"}",
        "nf_maglev_table_rebuilds_total 2",
        "nf_maglev_reloads_total{result=\"applied\"} 0",
        "nf_maglev_build_info{version=\"",
    ] {
        assert!(metrics.contains(family), "{family} missing in:\n{metrics}");
    }

    promtool_check(&metrics);

    let s = lb.state();
    assert_eq!(s["generation"], 1);
    assert_eq!(s["vips"][1]["port"], "all");
    let c = backend(&s, "web", "c").expect("backend c");
    assert_eq!((&c["weight"], &c["state"]), (&2.into(), &"active".into()));
    let entries: u64 = ["a", "b", "c"]
        .iter()
        .map(|n| {
            backend(&s, "web", n).expect("backend")["table_entries"]
                .as_u64()
                .expect("n")
        })
        .sum();
    assert_eq!(entries, 251);

    // Weight, drain, remove, add.
    let (st, v) = lb.json("PUT", "/api/vips/web/backends/a/weight", r#"{"weight": 3}"#);
    assert_eq!(st, 200, "{v}");
    assert_eq!(backend(&lb.state(), "web", "a").expect("a")["weight"], 3);
    let (st, _) = lb.json("POST", "/api/vips/web/backends/b/drain", "");
    assert_eq!(st, 200);
    let s = lb.state();
    let b = backend(&s, "web", "b").expect("b");
    assert_eq!(
        (&b["state"], &b["table_entries"]),
        (&"draining".into(), &0.into())
    );
    let (st, _) = lb.json("DELETE", "/api/vips/web/backends/c", "");
    assert_eq!(st, 200);
    assert!(backend(&lb.state(), "web", "c").is_none());
    let (st, v) = lb.json(
        "POST",
        "/api/vips/web/backends",
        r#"{"name": "d", "addr": "198.18.1.4", "weight": 1}"#,
    );
    assert_eq!(st, 201, "{v}");
    let s = lb.state();
    assert_eq!(s["generation"], 5);
    assert!(backend(&s, "web", "d").is_some());
    let (st, v) = lb.json("DELETE", "/api/vips/web/backends/zz", "");
    assert_eq!(st, 404, "{v}");
    let (st, v) = lb.json(
        "POST",
        "/api/vips/web/backends",
        r#"{"name": "d", "addr": "198.18.1.9"}"#,
    );
    assert_eq!(st, 409, "{v}");

    // A broken file is refused with its reason; the running state stays.
    let broken = config_text(&veth.a, 0, &maglev(""))
        .replace(r#""table_size": 251"#, r#""table_size": 252"#);
    std::fs::write(&file, &broken).expect("write");
    let (st, v) = lb.json("POST", "/api/reload", "");
    assert_eq!(st, 400, "{v}");
    let err = v["error"].as_str().expect("error text");
    let want = format!(
        "{}:{}: maglev.table_size: ",
        file.display(),
        line_of(&broken, "table_size")
    );
    assert!(err.contains(&want) && err.contains("not a prime"), "{err}");
    assert_eq!(v["issues"][0]["path"], "maglev.table_size");
    let after = lb.state();
    assert_eq!(after["generation"], 5);
    assert_eq!(after["vips"], s["vips"], "the state is unchanged");
    assert_eq!(after["reloads"]["rejected"], 1);
    assert!(after["reloads"]["last_error"]
        .as_str()
        .is_some_and(|e| e.contains("not a prime")));

    // Sections that shaped the sockets need a restart.
    std::fs::write(&file, config_text(&veth.a, 1, &maglev(""))).expect("write");
    let (st, v) = lb.json("POST", "/api/reload", "");
    assert_eq!(st, 409, "{v}");
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains("lports")),
        "{v}"
    );
    assert_eq!(lb.state()["generation"], 5);

    // So does the data path.
    assert_eq!(lb.state()["data_path"]["mode"], "af_xdp");
    let xdp = config_text(&veth.a, 0, &maglev("")).replace(
        r#""table_size": 251"#,
        r#""table_size": 251, "data_path": "xdp""#,
    );
    std::fs::write(&file, xdp).expect("write");
    let (st, v) = lb.json("POST", "/api/reload", "");
    assert_eq!(st, 409, "{v}");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("maglev.data_path changed")),
        "{v}"
    );
    assert_eq!(lb.state()["generation"], 5);

    // SIGHUP applies a good file: the API's changes give way to the file, plus the new backend "e".
    std::fs::write(
        &file,
        config_text(
            &veth.a,
            0,
            &maglev(r#", { "name": "e", "addr": "198.18.1.5", "weight": 4 }"#),
        ),
    )
    .expect("write");
    lb.signal("HUP");
    let s = wait_for("the SIGHUP reload", || {
        let s = lb.state();
        (s["generation"] != 5).then_some(s)
    });
    assert_eq!(s["generation"], 6);
    assert_eq!(backend(&s, "web", "e").expect("e")["weight"], 4);
    assert_eq!(backend(&s, "web", "a").expect("a")["weight"], 1);
    assert!(backend(&s, "web", "c").is_some() && backend(&s, "web", "d").is_none());
    assert_eq!(s["reloads"]["applied"], 1);
    let (_, metrics) = lb.http("GET", "/metrics", "");
    assert!(
        metrics.contains("nf_maglev_reloads_total{result=\"applied\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("nf_maglev_reloads_total{result=\"rejected\"} 3"),
        "{metrics}"
    );

    lb.signal("TERM");
    let status = lb.wait();
    assert!(status.success(), "exit {status}:\n{}", lb.log());
    // The reader thread may still be collecting the last lines after the exit.
    wait_for("the shutdown line", || {
        lb.log().contains("SIGTERM: shutting down").then_some(())
    });
    assert!(!veth.has_xdp(), "SIGTERM left an XDP program on {}", veth.a);
}

#[test]
#[ignore = "needs root"]
fn read_only_admin_and_sigint() {
    require_root();
    let veth = Veth::new();
    let dir = TempDir::new("ro");
    let file = dir.write("lb.jsonc", &config_text(&veth.a, 0, &maglev("")));
    let mut lb = Lb::start(&file, &["--read-only-admin", "--claim-all"]);
    assert!(veth.has_xdp());
    // A body that never comes holds up nothing, read-only too.
    let stalled = stalled_body(&lb.addr);
    thread::sleep(Duration::from_millis(200));
    timed_get(&lb, "/metrics");
    timed_get(&lb, "/healthz");
    timed_get(&lb, "/api/state");
    let (st, v) = lb.json("PUT", "/api/vips/web/backends/a/weight", r#"{"weight": 3}"#);
    assert_eq!(st, 403, "{v}");
    let (st, _) = lb.json("POST", "/api/reload", "");
    assert_eq!(st, 403);
    let s = lb.state();
    assert_eq!(
        (&s["generation"], &s["read_only"], &s["claim_all"]),
        (&1.into(), &true.into(), &true.into())
    );

    drop(stalled);
    lb.signal("INT");
    let status = lb.wait();
    assert!(status.success(), "exit {status}:\n{}", lb.log());
    assert!(!veth.has_xdp(), "SIGINT left an XDP program on {}", veth.a);
}

#[test]
#[ignore = "needs root"]
fn readyz_follows_the_link_and_a_deleted_interface_ends_the_process() {
    require_root();
    let veth = Veth::new();
    let dir = TempDir::new("ready");
    let file = dir.write("lb.jsonc", &config_text(&veth.a, 0, &maglev("")));
    let mut lb = Lb::start(&file, &["--netdev-timeout", "2"]);
    let ready = |lb: &Lb| lb.http("GET", "/readyz", "");
    assert_eq!(ready(&lb), (200, "ready\n".into()), "{}", lb.log());

    run("ip", &["link", "set", &veth.a, "down"]);
    let (_, body) = wait_for("/readyz to fail while the link is down", || {
        let r = ready(&lb);
        (r.0 == 503).then_some(r)
    });
    assert_eq!(
        body,
        format!(
            "not ready: netdev {} is down (administratively down)\n",
            veth.a
        )
    );
    assert_eq!(lb.http("GET", "/healthz", "").0, 200, "liveness stays");
    run("ip", &["link", "set", &veth.a, "up"]);
    wait_for("/readyz to recover", || (ready(&lb).0 == 200).then_some(()));

    run("ip", &["link", "del", &veth.a]);
    wait_for("/readyz to fail once the interface is gone", || {
        let (status, body) = ready(&lb);
        (status == 503 && body.contains("is gone")).then_some(())
    });
    let status = lb.wait();
    assert!(!status.success(), "exit {status}");
    let log = lb.log();
    assert!(
        log.contains(&format!("netdev {} is gone: not ready", veth.a)),
        "{log}"
    );
    assert!(log.contains("cannot serve again"), "{log}");
}

#[test]
#[ignore = "needs root"]
fn decap_attaches_and_detaches() {
    require_root();
    let veth = Veth::new();
    run("ip", &["addr", "add", "198.18.77.1/32", "dev", &veth.a]);
    let mut child = Command::new(BIN)
        .args(["decap", "--dev", &veth.a])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn decap");
    struct Kill<'a>(&'a mut Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            if let Ok(None) = self.0.try_wait() {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
    }
    let stdout = child.stdout.take().expect("stdout");
    let guard = Kill(&mut child);
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    {
        let lines = Arc::clone(&lines);
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(mut l) = lines.lock() {
                    l.push(line);
                }
            }
        });
    }
    let has = |needle: &str| {
        lines
            .lock()
            .map(|l| l.iter().any(|s| s.contains(needle)))
            .unwrap_or(false)
    };
    wait_for("the attach line", || has("program id").then_some(()));
    assert!(
        has("for 198.18.77.1"),
        "{:?}",
        lines.lock().map(|l| l.clone())
    );
    assert!(veth.has_xdp(), "decap program attached");
    wait_for("a counters line", || has("decapped 0 passed").then_some(()));

    run("kill", &["-INT", &guard.0.id().to_string()]);
    let status = wait_for("decap to exit", || guard.0.try_wait().ok().flatten());
    assert!(status.success(), "exit {status}");
    // The reader thread may still be collecting the last lines after the exit.
    wait_for("the detach line", || has("detached").then_some(()));
    assert!(!veth.has_xdp(), "decap left its program on {}", veth.a);
    drop(guard);
}

/// The capability bits of `/proc/<pid>/task/*/status` lines starting with `field`, one per thread.
fn thread_caps(pid: u32, field: &str) -> Vec<u64> {
    let mut caps = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).expect("task dir") {
        let status =
            std::fs::read_to_string(t.expect("task").path().join("status")).unwrap_or_default();
        if let Some(hex) = status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .map(str::trim)
        {
            caps.push(u64::from_str_radix(hex, 16).expect("hex capabilities"));
        }
    }
    caps
}

#[test]
#[ignore = "needs root"]
fn device_plugin_mode_drops_capabilities() {
    require_root();
    let veth = Veth::new();
    let dir = TempDir::new("dp");
    let bpffs = dir.0.join("bpffs");
    std::fs::create_dir_all(&bpffs).expect("mkdir");
    let pin = bpffs.join("xsks_map");
    // A pinned XSKMAP as the device plugin hands it over, on a bpffs mounted in a private mount
    // namespace that ends with the process.
    let text = config_text(&veth.a, 0, &maglev("")).replace(
        r#""region": 0 }"#,
        &format!(r#""region": 0, "xsk_pin_path": "{}" }}"#, pin.display()),
    );
    assert!(text.contains("xsk_pin_path"));
    let file = dir.write("lb.jsonc", &text);
    let script = format!(
        "mount -t bpf bpf '{fs}' && bpftool map create '{pin}' type xskmap key 4 value 4 entries 4 \
         name xsks_map && exec '{BIN}' -c '{file}' --listen 127.0.0.1:0",
        fs = bpffs.display(),
        pin = pin.display(),
        file = file.display(),
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c", &script]);
    let mut lb = Lb::spawn(cmd);
    assert!(!veth.has_xdp(), "device-plugin mode loads no XDP program");
    assert_running_caps(&lb);
    assert_eq!(lb.state()["generation"], 1);
    lb.signal("TERM");
    let status = lb.wait();
    assert!(status.success(), "exit {status}:\n{}", lb.log());
}

/// The log says what was kept, and every thread (workers, the admin server, the signal thread, all
/// started after the drop) holds only CAP_NET_RAW (13), CAP_IPC_LOCK (14) and CAP_BPF (39).
fn assert_running_caps(lb: &Lb) {
    assert!(
        lb.log()
            .contains(r#"kept ["CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_BPF"]"#),
        "{}",
        lb.log()
    );
    let want = (1u64 << 13) | (1 << 14) | (1 << 39);
    for field in ["CapEff:", "CapPrm:", "CapBnd:"] {
        let caps = thread_caps(lb.child.id(), field);
        assert!(caps.len() >= 3, "{field} {caps:?}");
        assert!(caps.iter().all(|&c| c == want), "{field} {caps:x?}");
    }
}

#[test]
#[ignore = "needs root"]
fn self_attach_mode_drops_capabilities_and_still_reloads_and_detaches() {
    require_root();
    let veth = Veth::new();
    let dir = TempDir::new("caps");
    let file = dir.write("lb.jsonc", &config_text(&veth.a, 0, &maglev("")));
    let mut lb = Lb::start(&file, &[]);
    assert!(veth.has_xdp(), "our own program is attached");
    assert_running_caps(&lb);
    // A reload rewrites the filter's claims with what is left; SIGTERM still detaches the program.
    std::fs::write(
        &file,
        config_text(
            &veth.a,
            0,
            &maglev(r#", { "name": "d", "addr": "198.18.1.9" }"#),
        ),
    )
    .expect("rewrite config");
    lb.signal("HUP");
    wait_for("the reload", || {
        (lb.state()["generation"] == 2).then_some(())
    });
    lb.signal("TERM");
    let status = lb.wait();
    assert!(status.success(), "exit {status}:\n{}", lb.log());
    assert!(!veth.has_xdp(), "SIGTERM left an XDP program on {}", veth.a);
}

/// Resident set size of process `pid`, in bytes.
fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

/// Threads of process `pid`.
fn threads_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("task dir")
        .count()
}

/// Sends `raw` on a new connection and returns the status of the response (0 when the server closed
/// without one).
fn raw_status(addr: &str, raw: &[u8]) -> u16 {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    let _ = s.write_all(raw);
    let mut text = Vec::new();
    let _ = s.read_to_end(&mut text);
    String::from_utf8_lossy(&text)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// `GET path` answered 200 within 2 s; returns the latency.
fn timed_get(lb: &Lb, path: &str) -> Duration {
    let start = Instant::now();
    let (status, body) = lb.http("GET", path, "");
    let took = start.elapsed();
    assert_eq!(status, 200, "{path}: {body}");
    assert!(took < Duration::from_secs(2), "{path} took {took:?}");
    took
}

/// A request head with `Content-Length: 2000` and no body, held open.
fn stalled_body(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(
        b"PUT /api/vips/web/backends/a/weight HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n",
    )
    .expect("send head");
    s
}

#[test]
#[ignore = "needs root"]
fn admin_endpoint_resists_hostile_clients() {
    require_root();
    // Both ends of the held connections below count against the limit (the child inherits it).
    let files = lab::raise_open_files();
    let n = 10_000.min(usize::try_from(files.saturating_sub(2048)).unwrap_or(0));
    if n < 10_000 {
        eprintln!("open-file limit {files}: holding {n} connections");
    }
    let veth = Veth::new();
    let dir = TempDir::new("hostile");
    let file = dir.write("lb.jsonc", &config_text(&veth.a, 0, &maglev("")));
    let mut lb = Lb::start(&file, &[]);
    let pid = lb.child.id();
    let addr = lb.addr.clone();

    // A body that never comes holds up neither reads nor changes.
    let stalled = stalled_body(&addr);
    thread::sleep(Duration::from_millis(200));
    timed_get(&lb, "/metrics");
    timed_get(&lb, "/healthz");
    timed_get(&lb, "/api/state");
    let start = Instant::now();
    let (st, v) = lb.json("PUT", "/api/vips/web/backends/a/weight", r#"{"weight": 3}"#);
    assert_eq!(st, 200, "{v}");
    assert!(start.elapsed() < Duration::from_secs(2));
    drop(stalled);

    // Connections cost no thread.
    let threads = threads_of(pid);
    let idle: Vec<TcpStream> = (0..100)
        .map(|i| {
            let mut s = TcpStream::connect(&addr).expect("connect");
            if i % 2 == 0 {
                let _ = s.write_all(b"GET /metrics HTTP/1.1\r\n");
            }
            s
        })
        .collect();
    thread::sleep(Duration::from_millis(300));
    timed_get(&lb, "/healthz");
    assert_eq!(threads_of(pid), threads, "100 connections started threads");
    eprintln!("100 open connections: {threads} threads before and after");
    drop(idle);

    // Limits: headers, bodies, versions.
    let mut big = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    big.resize(big.len() + (16 << 20), b'a');
    big.extend_from_slice(b"\r\n\r\n");
    assert_eq!(raw_status(&addr, &big), 431, "16 MiB header line");
    drop(big);
    let (st, _) = lb.http("POST", "/api/vips/web/backends", &"x".repeat(70_000));
    assert_eq!(st, 413);
    assert_eq!(
        raw_status(
            &addr,
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0"
        ),
        505,
        "HTTP/2 preface"
    );
    assert_eq!(raw_status(&addr, b"garbage\r\n\r\n"), 400);

    // 4 x 64 MiB of header that never ends.
    let before = rss_of(pid);
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let addr = addr.clone();
            thread::spawn(move || {
                let mut s = TcpStream::connect(&addr).expect("connect");
                let _ = s.write_all(b"GET / HTTP/1.1\r\nX-Endless: ");
                let chunk = vec![b'b'; 64 * 1024];
                for _ in 0..1024 {
                    if s.write_all(&chunk).is_err() {
                        break;
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer");
    }
    let after = rss_of(pid);
    eprintln!(
        "4 x 64 MiB unterminated headers: nf-maglev RSS {} -> {} MiB",
        before >> 20,
        after >> 20
    );
    assert!(
        after.saturating_sub(before) < 32 << 20,
        "{before} -> {after}"
    );

    // 100 clients trickling heads and bodies at 1 byte/s while /metrics is scraped 50 times.
    let mut slow: Vec<(TcpStream, Vec<u8>)> = (0..100)
        .map(|i| {
            let mut s = TcpStream::connect(&addr).expect("connect");
            if i % 2 == 0 {
                (s, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".to_vec())
            } else {
                s.write_all(
                    b"POST /api/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n",
                )
                .expect("head");
                (s, vec![b'a'; 2000])
            }
        })
        .collect();
    let mut lat = Vec::new();
    for round in 0..50 {
        if round % 10 == 0 {
            for (s, bytes) in &mut slow {
                let _ = s.write_all(&bytes[round / 10..round / 10 + 1]);
            }
        }
        lat.push(timed_get(&lb, "/metrics"));
        thread::sleep(Duration::from_millis(100));
    }
    lat.sort();
    eprintln!(
        "50 scrapes with 100 clients trickling 1 byte/s: p50 {:?}, p99 {:?}",
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100]
    );
    drop(slow);

    // 10k held connections (the load balancer inherited the raised open-file limit).
    let before = rss_of(pid);
    let held: Vec<TcpStream> = (0..n)
        .map_while(|_| TcpStream::connect(&addr).ok())
        .collect();
    let latency = timed_get(&lb, "/healthz");
    let after = rss_of(pid);
    eprintln!(
        "{} held connections: nf-maglev RSS {} -> {} MiB, {} threads; /healthz in {latency:?}",
        held.len(),
        before >> 20,
        after >> 20,
        threads_of(pid)
    );
    assert_eq!(held.len(), n, "connections refused");
    assert!(
        after.saturating_sub(before) < 200 << 20,
        "{before} -> {after}"
    );
    assert_eq!(threads_of(pid), threads);
    drop(held);
    timed_get(&lb, "/metrics");
    let (_, metrics) = lb.http("GET", "/metrics", "");
    let evicted: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("nf_maglev_admin_connections_total{result=\"evicted\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no eviction counter in:\n{metrics}"));
    assert!(evicted >= n.saturating_sub(512) as f64, "{evicted}");
    assert!(
        metrics
            .contains("nf_maglev_admin_requests_rejected_total{reason=\"unsupported_version\"} 1"),
        "{metrics}"
    );
    assert_eq!(
        backend(&lb.state(), "web", "a").expect("a")["weight"],
        3,
        "the state is the one set above"
    );

    lb.signal("TERM");
    let status = lb.wait();
    assert!(status.success(), "exit {status}:\n{}", lb.log());
    assert!(!lb.log().contains("panicked"), "{}", lb.log());
}

#[test]
fn writable_admin_on_a_non_loopback_address_needs_a_token() {
    let dir = TempDir::new("expose");
    let file = dir.write("lb.jsonc", &config_text("nfmnone0", 0, &maglev("")));
    let out = Command::new(BIN)
        .arg("-c")
        .arg(&file)
        .args(["--listen", "0.0.0.0:0"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    for part in [
        "--listen 0.0.0.0:0 is not a loopback address",
        "give --admin-token-file FILE",
        "or --read-only-admin, or listen on 127.0.0.1",
    ] {
        assert!(stderr.contains(part), "{part} missing in:\n{stderr}");
    }
    // A token file others can read is refused, naming the fix.
    let token = dir.write("token", "0123456789abcdef0123456789abcdef\n");
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .expect("chmod");
    let out = Command::new(BIN)
        .arg("-c")
        .arg(&file)
        .args(["--listen", "0.0.0.0:0", "--admin-token-file"])
        .arg(&token)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("accessible to group or others (mode 644)") && stderr.contains("chmod 600"),
        "{stderr}"
    );
}

#[test]
#[ignore = "needs root"]
fn changes_need_the_bearer_token_of_the_token_file() {
    require_root();
    let veth = Veth::new();
    let dir = TempDir::new("token");
    let file = dir.write("lb.jsonc", &config_text(&veth.a, 0, &maglev("")));
    let secret = "Zm9vYmFyYmF6cXV4MDEyMzQ1Njc4OWFiY2RlZg==";
    let token = dir.write("token", &format!("{secret}\n"));
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let lb = Lb::start(&file, &["--admin-token-file", &token.display().to_string()]);
    let add = r#"{"name": "evil", "addr": "198.18.9.9", "weight": 1000000}"#;
    let send = |auth: &str| {
        let mut s = TcpStream::connect(&lb.addr).expect("connect");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        write!(
            s,
            "POST /api/vips/web/backends HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\
             Content-Length: {}\r\n\r\n{add}",
            add.len()
        )
        .expect("send");
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        text
    };
    for auth in [
        String::new(),
        "Authorization: Bearer wrong\r\n".to_owned(),
        format!("Authorization: Bearer {}\r\n", &secret[1..]),
        format!("Authorization: Basic {secret}\r\n"),
    ] {
        let text = send(&auth);
        assert!(text.starts_with("HTTP/1.1 401 "), "{auth:?}: {text}");
        assert!(
            text.to_ascii_lowercase()
                .contains("www-authenticate: bearer"),
            "{text}"
        );
    }
    let s = lb.state();
    assert_eq!(s["generation"], 1, "no change was made");
    assert!(backend(&s, "web", "evil").is_none());
    let (st, _) = lb.http("POST", "/api/reload", "");
    assert_eq!(st, 401);
    timed_get(&lb, "/metrics");
    timed_get(&lb, "/healthz");

    let text = send(&format!("Authorization: Bearer {secret}\r\n"));
    assert!(text.starts_with("HTTP/1.1 201 "), "{text}");
    assert!(backend(&lb.state(), "web", "evil").is_some());
    assert!(
        lb.log().contains("(changes need the bearer token)"),
        "{}",
        lb.log()
    );
}

#[test]
fn config_paths_that_are_not_regular_files_are_refused_at_start() {
    let dir = TempDir::new("notreg");
    let fifo = dir.0.join("fifo.jsonc");
    run("mkfifo", &[&fifo.display().to_string()]);
    let zero = dir.0.join("zero.jsonc");
    std::os::unix::fs::symlink("/dev/zero", &zero).expect("symlink");
    for (path, what) in [
        (&fifo, "a FIFO"),
        (&zero, "a character device"),
        (&dir.0, "a directory"),
    ] {
        let start = Instant::now();
        let (status, stderr) = check_output(path);
        assert!(!status.success(), "{stderr}");
        let want = format!(
            "{}: cannot read the configuration file: not a regular file (it is {what})",
            path.display()
        );
        assert!(stderr.contains(&want), "expected `{want}` in:\n{stderr}");
        assert!(start.elapsed() < Duration::from_secs(5), "{what}: blocked");
    }
}

#[test]
#[ignore = "needs root"]
fn reloads_of_fifos_and_devices_are_refused_and_sigterm_stops_fast() {
    require_root();
    let veth = Veth::new();
    let dir = TempDir::new("fifo");
    let file = dir.write("lb.jsonc", &config_text(&veth.a, 0, &maglev("")));
    let mut lb = Lb::start(&file, &[]);
    let pid = lb.child.id();

    // The config path becomes a FIFO nobody writes to.
    std::fs::remove_file(&file).expect("rm");
    run("mkfifo", &[&file.display().to_string()]);
    lb.signal("HUP");
    let s = wait_for("the FIFO reload to be rejected", || {
        let s = lb.state();
        (s["reloads"]["rejected"] == 1).then_some(s)
    });
    let err = s["reloads"]["last_error"].as_str().expect("last error");
    assert!(err.contains("not a regular file (it is a FIFO)"), "{err}");
    timed_get(&lb, "/healthz");
    let (st, v) = lb.json("POST", "/api/reload", "");
    assert_eq!(st, 400, "{v}");

    // Then a symlink to /dev/zero.
    std::fs::remove_file(&file).expect("rm");
    std::os::unix::fs::symlink("/dev/zero", &file).expect("symlink");
    let before = rss_of(pid);
    lb.signal("HUP");
    let s = wait_for("the /dev/zero reload to be rejected", || {
        let s = lb.state();
        (s["reloads"]["rejected"] == 3).then_some(s)
    });
    let err = s["reloads"]["last_error"].as_str().expect("last error");
    assert!(err.contains("(it is a character device)"), "{err}");
    let after = rss_of(pid);
    eprintln!(
        "reload of a symlink to /dev/zero: nf-maglev RSS {} -> {} MiB",
        before >> 20,
        after >> 20
    );
    assert!(
        after.saturating_sub(before) < 32 << 20,
        "{before} -> {after}"
    );
    assert_eq!(s["generation"], 1, "the running state stays");
    timed_get(&lb, "/healthz");

    // SIGTERM ends the process within 2 s.
    let start = Instant::now();
    lb.signal("TERM");
    let status = lb.wait();
    let took = start.elapsed();
    eprintln!("SIGTERM to exit: {took:?}");
    assert!(status.success(), "exit {status}:\n{}", lb.log());
    assert!(took < Duration::from_secs(2), "SIGTERM took {took:?}");
    assert!(!veth.has_xdp());
}

#[test]
#[ignore = "needs root"]
fn a_low_open_file_limit_leaves_room_for_answers_and_reloads() {
    require_root();
    let veth = Veth::new();
    let dir = TempDir::new("nofile");
    let file = dir.write("lb.jsonc", &config_text(&veth.a, 0, &maglev("")));
    let script = format!(
        "ulimit -n 128 && exec '{BIN}' -c '{}' --listen 127.0.0.1:0",
        file.display()
    );
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script]);
    let mut lb = Lb::spawn(cmd);
    assert!(
        lb.log()
            .contains("admin server: at most 32 connections (open-file limit 128)"),
        "{}",
        lb.log()
    );
    // Far more connections than descriptors: the oldest idle ones make room.
    let held: Vec<TcpStream> = (0..1000)
        .map_while(|_| TcpStream::connect(&lb.addr).ok())
        .collect();
    assert_eq!(held.len(), 1000);
    timed_get(&lb, "/healthz");
    timed_get(&lb, "/metrics");
    // The admin server left the descriptors a reload needs.
    let (st, v) = lb.json("POST", "/api/reload", "");
    assert_eq!(st, 200, "{v}");
    drop(held);
    lb.signal("TERM");
    let status = lb.wait();
    assert!(status.success(), "exit {status}:\n{}", lb.log());
}

/// A pids cgroup (v1 or v2) with `pids.max` set, removed on drop (after the processes in it ended).
struct PidsCgroup(PathBuf);

impl PidsCgroup {
    /// `None` when this machine has no writable pids controller.
    fn new(tag: &str, max: u32) -> Option<Self> {
        let name = format!("nf-maglev-test-{}-{tag}", std::process::id());
        let v1 = Path::new("/sys/fs/cgroup/pids");
        let v2 = Path::new("/sys/fs/cgroup");
        let parent = if v1.join("pids.max").exists() || v1.join("cgroup.procs").exists() {
            v1
        } else if std::fs::read_to_string(v2.join("cgroup.subtree_control"))
            .is_ok_and(|c| c.split_whitespace().any(|c| c == "pids"))
        {
            v2
        } else {
            return None;
        };
        let dir = parent.join(name);
        std::fs::create_dir(&dir).ok()?;
        let cg = Self(dir);
        std::fs::write(cg.0.join("pids.max"), max.to_string()).ok()?;
        Some(cg)
    }

    fn procs(&self) -> PathBuf {
        self.0.join("cgroup.procs")
    }
}

impl Drop for PidsCgroup {
    fn drop(&mut self) {
        // The processes are gone by now (the load balancer is dropped first); retry briefly meanwhile.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
#[ignore = "needs root"]
fn a_pod_sized_pids_limit_costs_no_answers() {
    require_root();
    let Some(cgroup) = PidsCgroup::new("pids", 40) else {
        eprintln!("skipped: no writable pids cgroup controller");
        return;
    };
    let veth = Veth::new();
    let dir = TempDir::new("pids");
    let file = dir.write("lb.jsonc", &config_text(&veth.a, 0, &maglev("")));
    let script = format!(
        "echo $$ > '{}' && exec '{BIN}' -c '{}' --listen 127.0.0.1:0",
        cgroup.procs().display(),
        file.display()
    );
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script]);
    let mut lb = Lb::spawn(cmd);
    let pid = lb.child.id();
    let name = cgroup
        .0
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let membership = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    assert!(membership.contains(&name), "not in {name}: {membership}");
    let threads = threads_of(pid);
    // 100 connections held open, then 100 complete requests at once.
    let held: Vec<TcpStream> = (0..100)
        .map(|i| {
            let mut s = TcpStream::connect(&lb.addr).expect("connect");
            if i % 2 == 0 {
                let _ = s.write_all(b"GET /metrics HTTP/1.1\r\n");
            }
            s
        })
        .collect();
    let clients: Vec<_> = (0..100)
        .map(|i| {
            let addr = lb.addr.clone();
            thread::spawn(move || {
                let path = if i % 2 == 0 { "/metrics" } else { "/api/state" };
                http(&addr, "GET", path, "").0
            })
        })
        .collect();
    for c in clients {
        assert_eq!(c.join().expect("client"), 200);
    }
    timed_get(&lb, "/healthz");
    assert_eq!(threads_of(pid), threads, "connections started threads");
    eprintln!("pids.max 40: 100 held connections and 100 requests at once, {threads} threads");
    drop(held);
    lb.signal("TERM");
    let status = lb.wait();
    assert!(status.success(), "exit {status}:\n{}", lb.log());
    assert!(!lb.log().contains("panicked"), "{}", lb.log());
}
