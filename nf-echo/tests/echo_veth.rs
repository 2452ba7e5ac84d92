//! nf-echo on a real veth pair: a client namespace with the kernel's own tools (ping, python UDP
//! sockets) on one end, nf-echo on the other end in its own namespace, answering for addresses that
//! only it owns (the kernel of its namespace has none). Needs root; every test builds and removes
//! its own namespaces.
#![forbid(unsafe_code)]

use std::path::Path;
use std::time::Duration;

use lab::config::cndp_sections;
use lab::netns::Netns;
use lab::process::{Proc, Signal};
use lab::veth::VethPair;
use lab::wait::wait_for;
use serde_json::{json, Value};

const NF_V4: &str = "198.18.0.1";
const NF_V6: &str = "2001:2::1";
const CLIENT_V4: &str = "198.18.0.2";
const CLIENT_V6: &str = "2001:2::2";
const UDP_PORT: u16 = 7;

use lab::require_root;

/// Client namespace and NF namespace joined by a veth pair with `queues` queues.
struct EchoLab {
    link: VethPair,
    client: Netns,
    nf: Netns,
    dir: tempdir::Dir,
}

mod tempdir {
    /// A directory removed on drop.
    pub(crate) struct Dir(pub(crate) std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl EchoLab {
    fn new(queues: u32) -> EchoLab {
        let client = Netns::new("c").expect("client netns");
        let nf = Netns::new("e").expect("nf netns");
        let link = VethPair::new(&client, &nf, queues).expect("veth pair");
        let c = link.a();
        c.add_addr(CLIENT_V4.parse().unwrap(), 24).unwrap();
        c.add_addr(CLIENT_V6.parse().unwrap(), 64).unwrap();
        c.up().unwrap();
        link.b().up().unwrap();
        let dir = std::env::temp_dir().join(format!(
            "nf-echo-test-{}-{}",
            std::process::id(),
            link.b().name()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        EchoLab {
            link,
            client,
            nf,
            dir: tempdir::Dir(dir),
        }
    }

    fn nf_if(&self) -> &str {
        self.link.b().name()
    }

    /// Writes an nf-echo config for this lab and returns its path.
    fn config(&self, queues: u32, echo: Value) -> String {
        let cpus: Vec<usize> = (0..queues as usize).map(|q| q % 2).collect();
        let mut root = cndp_sections("nf-echo", self.nf_if(), queues, &cpus);
        root.insert("echo".into(), echo);
        let path = self.dir.0.join("echo.jsonc");
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&Value::Object(root)).unwrap(),
        )
        .unwrap();
        path.to_string_lossy().into_owned()
    }

    fn echo_config(&self, queues: u32) -> String {
        self.config(
            queues,
            json!({"mode": "echo", "addrs": [NF_V4, NF_V6], "udp_ports": [UDP_PORT]}),
        )
    }

    /// Starts nf-echo and waits until its sockets are bound.
    fn start(&self, config: &str, extra: &[&str]) -> Proc {
        let bin = env!("CARGO_BIN_EXE_nf-echo");
        let mut argv = vec![bin, "-c", config, "--stats-interval", "0"];
        argv.extend_from_slice(extra);
        let mut p = self.nf.spawn("nf-echo", &argv).expect("spawn nf-echo");
        let ready = wait_for(Duration::from_secs(15), || {
            p.stderr().matches(" bound, mode ").count() > 0 || !p.is_running()
        });
        assert!(
            ready && p.is_running(),
            "nf-echo did not start:\n{}",
            p.stderr()
        );
        // Let every worker reach its loop.
        std::thread::sleep(Duration::from_millis(300));
        p
    }

    fn xdp_attached(&self) -> bool {
        self.nf.xdp_prog(self.nf_if()).expect("ip link").is_some()
    }
}

/// Stops nf-echo with `sig` and returns its stdout (the summary).
fn stop(p: &mut Proc, sig: Signal) -> String {
    p.signal(sig).expect("signal");
    let status = p
        .wait_timeout(Duration::from_secs(10))
        .expect("wait")
        .expect("nf-echo did not exit after the signal");
    assert!(
        status.success(),
        "nf-echo exited with {status}:\n{}",
        p.stderr()
    );
    p.stdout()
}

/// Received packet count of an lport from the summary printed on exit.
fn summary_rx(summary: &str, lport: &str) -> u64 {
    summary
        .lines()
        .find(|l| l.trim_start().starts_with(lport))
        .and_then(|l| l.split("rx ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no rx count for {lport} in summary:\n{summary}"))
}

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

fn udp_roundtrips(lab: &EchoLab, dst: &str, flows: u32) -> u64 {
    let out = lab
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

#[test]
#[ignore = "needs root"]
fn ping_and_ping6_are_answered() {
    require_root();
    let lab = EchoLab::new(1);
    let cfg = lab.echo_config(1);
    let mut nf = lab.start(&cfg, &[]);
    for (flag, dst) in [("-4", NF_V4), ("-6", NF_V6)] {
        let out = lab
            .client
            .exec(&["ping", flag, "-c", "3", "-i", "0.2", "-W", "2", dst])
            .unwrap_or_else(|e| panic!("ping {dst}: {e:#}\nnf-echo:\n{}", nf.stderr()));
        assert!(out.contains("3 received"), "ping {dst}: {out}");
    }
    // The client learned the NF's MAC by ARP and by neighbour discovery, both answered by nf-echo.
    let mac = lab.link.b().mac().unwrap().to_string();
    let neigh = lab.client.ip(&["neigh", "show"]).unwrap();
    for a in [NF_V4, NF_V6] {
        let line = neigh
            .lines()
            .find(|l| l.starts_with(&format!("{a} ")))
            .unwrap_or("");
        assert!(
            line.contains(&mac),
            "neighbour entry of {a} is not nf-echo's MAC {mac}: {neigh}"
        );
    }
    let summary = stop(&mut nf, Signal::Int);
    assert!(
        summary.contains("arp 1") || summary.contains("arp 2"),
        "{summary}"
    );
    assert!(summary.contains("icmp 3 icmpv6 3"), "{summary}");
}

#[test]
#[ignore = "needs root"]
fn udp_datagrams_come_back_byte_for_byte() {
    require_root();
    let lab = EchoLab::new(1);
    let cfg = lab.echo_config(1);
    let mut nf = lab.start(&cfg, &[]);
    assert_eq!(udp_roundtrips(&lab, NF_V4, 4), 20);
    assert_eq!(udp_roundtrips(&lab, NF_V6, 4), 20);
    let summary = stop(&mut nf, Signal::Term);
    assert!(summary.contains("udp 40"), "{summary}");
}

#[test]
#[ignore = "needs root"]
fn two_queues_two_workers_both_carry_traffic() {
    require_root();
    let lab = EchoLab::new(2);
    let cfg = lab.echo_config(2);
    let mut nf = lab.start(&cfg, &[]);
    // Many flows: the client's veth spreads them over both queues by flow hash.
    assert_eq!(udp_roundtrips(&lab, NF_V4, 32), 160);
    let summary = stop(&mut nf, Signal::Int);
    let q0 = summary_rx(&summary, &format!("{}:0", lab.nf_if()));
    let q1 = summary_rx(&summary, &format!("{}:1", lab.nf_if()));
    assert!(
        q0 > 0 && q1 > 0,
        "queue 0 got {q0}, queue 1 got {q1}:\n{summary}"
    );
    assert!(q0 + q1 >= 160, "{summary}");
}

#[test]
#[ignore = "needs root"]
fn sigint_and_sigterm_leave_no_xdp_program() {
    require_root();
    let lab = EchoLab::new(1);
    let cfg = lab.echo_config(1);
    for sig in [Signal::Int, Signal::Term] {
        let mut nf = lab.start(&cfg, &[]);
        assert!(lab.xdp_attached(), "no XDP program while nf-echo runs");
        stop(&mut nf, sig);
        assert!(!lab.xdp_attached(), "XDP program left after {sig:?}");
    }
}

#[test]
#[ignore = "needs root"]
fn foreign_xdp_program_is_not_replaced_without_force() {
    require_root();
    let lab = EchoLab::new(1);
    let cfg = lab.echo_config(1);
    let mut first = lab.start(&cfg, &[]);
    // A second instance on the same interface must refuse, naming the program, and leave the
    // first one's program in place.
    let bin = env!("CARGO_BIN_EXE_nf-echo");
    let out = lab.nf.command(&[bin, "-c", &cfg]).output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("--force"), "{err}");
    assert!(lab.xdp_attached());
    stop(&mut first, Signal::Int);
    assert!(!lab.xdp_attached());
}

#[test]
#[ignore = "needs root"]
fn mac_swap_mode_reflects_every_frame() {
    require_root();
    let lab = EchoLab::new(1);
    let cfg = lab.echo_config(1);
    let mut nf = lab.start(&cfg, &["--mode", "mac-swap"]);
    // Claim-all mode: even traffic for an address nobody owns comes back, MACs swapped.
    let frame: Vec<u8> = {
        let mut f = vec![0u8; 60];
        f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
        f[6..12].copy_from_slice(&lab.link.a().mac().unwrap().0);
        f[12..14].copy_from_slice(&[0x88, 0xb5]); // local experimental ethertype
        f
    };
    let cap = lab.link.a().capture(1, Some("ether proto 0x88b5")).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    lab.link
        .a()
        .send_frames(std::slice::from_ref(&frame))
        .unwrap();
    let got = cap.finish(Duration::from_secs(5)).unwrap();
    let summary = stop(&mut nf, Signal::Int);
    assert_eq!(got.len(), 1, "no reflected frame; nf-echo:\n{summary}");
    assert_eq!(&got[0][0..6], &frame[6..12]);
    assert_eq!(&got[0][6..12], &frame[0..6]);
    assert_eq!(&got[0][12..], &frame[12..]);
}

#[test]
#[ignore = "needs root"]
fn idle_nf_echo_uses_under_one_percent_cpu() {
    require_root();
    let lab = EchoLab::new(2);
    let cfg = lab.echo_config(2);
    let mut nf = lab.start(&cfg, &[]);
    let ticks = |pid: u32| -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = after.split_whitespace().collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    };
    let hz = 100.0; // USER_HZ on Linux
    let before = ticks(nf.pid());
    let window = Duration::from_secs(5);
    std::thread::sleep(window);
    let used = (ticks(nf.pid()) - before) as f64 / hz;
    let pct = 100.0 * used / window.as_secs_f64();
    eprintln!("idle nf-echo (2 workers): {pct:.2}% of one CPU");
    assert!(pct < 1.0, "idle nf-echo used {pct:.2}% CPU");
    // Why: each worker sleeps in poll() and wakes only on its 100 ms timeout (about 50 in the window).
    let summary = stop(&mut nf, Signal::Int);
    let timeouts: Vec<u64> = summary
        .lines()
        .filter_map(|l| l.split("timed out ").nth(1))
        .map(|t| t.trim_end_matches(')').parse().expect("timeout count"))
        .collect();
    assert_eq!(timeouts.len(), 2, "one sleep report per worker:\n{summary}");
    assert!(
        timeouts.iter().all(|&t| t >= 30),
        "workers did not sleep through the idle window:\n{summary}"
    );
}

fn run_expect_failure(lab: &EchoLab, config: &str) -> String {
    let bin = env!("CARGO_BIN_EXE_nf-echo");
    let out = lab
        .nf
        .command(&[bin, "-c", config])
        .output()
        .expect("run nf-echo");
    assert!(!out.status.success(), "nf-echo succeeded with a bad setup");
    assert!(!lab.xdp_attached(), "a failed start left an XDP program");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
#[ignore = "needs root"]
fn missing_netdev_bad_queue_and_bad_config_fail_clearly() {
    require_root();
    let lab = EchoLab::new(1);

    let cfg = lab.echo_config(1);
    let text = std::fs::read_to_string(&cfg).unwrap();
    let missing = lab.dir.0.join("missing.jsonc");
    std::fs::write(&missing, text.replace(lab.nf_if(), "nosuchdev0")).unwrap();
    let err = run_expect_failure(&lab, &missing.to_string_lossy());
    assert!(
        err.contains("nosuchdev0") && err.contains("not found"),
        "{err}"
    );
    // Each cause is printed once.
    assert_eq!(err.matches("not found").count(), 1, "{err}");

    let bad_q = lab.config(1, json!({"mode": "echo", "addrs": [NF_V4]}));
    let text = std::fs::read_to_string(&bad_q)
        .unwrap()
        .replace("\"qid\": 0", "\"qid\": 3");
    std::fs::write(&bad_q, text).unwrap();
    let err = run_expect_failure(&lab, &bad_q);
    assert!(err.contains("qid 3") || err.contains("queue 3"), "{err}");

    let broken = lab.dir.0.join("broken.jsonc");
    std::fs::write(
        &broken,
        "{\n  \"lports\": {\n    \"x:0\": { \"qid\": }\n  }\n}\n",
    )
    .unwrap();
    let err = run_expect_failure(&lab, &broken.to_string_lossy());
    assert!(err.contains("broken.jsonc:3"), "{err}");

    let unknown = lab.config(
        1,
        json!({"mode": "echo", "addrs": [NF_V4], "colour": "red"}),
    );
    let err = run_expect_failure(&lab, &unknown);
    assert!(
        err.contains("echo.colour") || err.contains("colour"),
        "{err}"
    );
    assert!(Path::new(&unknown).exists());
}

#[test]
#[ignore = "needs root"]
fn a_link_down_is_ridden_out_and_a_deleted_interface_ends_the_process() {
    require_root();
    let lab = EchoLab::new(1);
    let cfg = lab.echo_config(1);
    let mut nf = lab.start(&cfg, &["--netdev-timeout", "2"]);
    let ping = |count: &str| {
        lab.client
            .exec(&["ping", "-4", "-c", count, "-i", "0.2", "-W", "1", NF_V4])
            .unwrap_or_default()
    };
    assert!(ping("2").contains("2 received"), "{}", nf.stderr());

    // Down for longer than the timeout: the sockets survive, the NF waits and serves again.
    lab.link.b().down().expect("link down");
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        nf.is_running(),
        "exited on a link that was only down:\n{}",
        nf.stderr()
    );
    lab.link.b().up().expect("link up");
    assert!(
        wait_for(Duration::from_secs(5), || ping("1").contains("1 received")),
        "no answer after the link came back:\n{}",
        nf.stderr()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        nf.stderr().contains("is down (administratively down)"),
        "{}",
        nf.stderr()
    );

    // Deleted: no socket bound to it can serve again, so the NF exits for its supervisor.
    lab.nf
        .ip(&["link", "del", "dev", lab.nf_if()])
        .expect("link del");
    let status = nf
        .wait_timeout(Duration::from_secs(8))
        .expect("wait")
        .unwrap_or_else(|| {
            panic!(
                "nf-echo still runs after its interface went:\n{}",
                nf.stderr()
            )
        });
    assert!(!status.success(), "exit status {status}");
    let err = nf.stderr();
    assert!(
        err.contains(&format!("netdev {} is gone", lab.nf_if())),
        "{err}"
    );
}

/// A UDP client that sends one numbered datagram every `interval` seconds for `duration` seconds and
/// prints `sent answered longest_gap_ms`: the longest time between two answers is the outage.
const UDP_LOAD: &str = r#"
import select, socket, sys, time
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
dst = (sys.argv[1], int(sys.argv[2]))
duration, interval = float(sys.argv[3]), float(sys.argv[4])
s = socket.socket(family, socket.SOCK_DGRAM)
s.setblocking(False)
sent, answered, times = 0, set(), []
start = time.monotonic()
next_send = start
while True:
    now = time.monotonic()
    if now - start > duration + 0.3:
        break
    if now >= next_send and now - start <= duration:
        try:
            s.sendto(sent.to_bytes(4, "big"), dst)
        except OSError:
            pass
        sent += 1
        next_send += interval
    r, _, _ = select.select([s], [], [], max(0.0, min(next_send - time.monotonic(), 0.05)))
    if r:
        try:
            data, _ = s.recvfrom(64)
        except OSError:
            continue
        seq = int.from_bytes(data[:4], "big")
        if seq not in answered:
            answered.add(seq)
            times.append(time.monotonic())
gaps = [b - a for a, b in zip(times, times[1:])]
print(sent, len(answered), int(max(gaps, default=duration) * 1000))
"#;

#[test]
#[ignore = "needs root"]
fn sigkill_under_load_then_the_same_command_serves_again() {
    require_root();
    let lab = EchoLab::new(1);
    let cfg = lab.echo_config(1);
    let mut nf = lab.start(&cfg, &[]);
    // 5 s of datagrams, one every 5 ms; the NF is killed after about 1.5 s.
    let mut load = lab
        .client
        .spawn(
            "udp-load",
            &[
                "python3",
                "-c",
                UDP_LOAD,
                NF_V4,
                &UDP_PORT.to_string(),
                "5",
                "0.005",
            ],
        )
        .expect("spawn UDP load");
    std::thread::sleep(Duration::from_millis(1500));
    nf.signal(Signal::Kill).expect("SIGKILL");
    let killed = std::time::Instant::now();
    nf.wait_timeout(Duration::from_secs(5))
        .expect("wait")
        .expect("nf-echo survived SIGKILL");
    // The kernel released the bpf_link with the process: nothing left on the interface.
    assert!(
        wait_for(Duration::from_secs(1), || !lab.xdp_attached()),
        "the XDP program outlived the killed nf-echo"
    );
    let detached = killed.elapsed();

    // The same command line, no --force, no manual step.
    let mut again = lab.start(&cfg, &[]);
    let serving = killed.elapsed();
    assert!(
        serving < Duration::from_secs(2) + detached,
        "serving again {} ms after the kill",
        serving.as_millis()
    );
    load.wait_timeout(Duration::from_secs(15))
        .expect("wait")
        .expect("UDP load did not finish");
    let out = load.stdout();
    let f: Vec<u64> = out
        .split_whitespace()
        .map(|n| n.parse().expect("number"))
        .collect();
    assert_eq!(f.len(), 3, "UDP load printed {out:?}: {}", load.stderr());
    let (sent, answered, outage_ms) = (f[0], f[1], f[2]);
    eprintln!(
        "nf-echo SIGKILL and restart: program gone {} ms after the kill, restarted and bound {} ms \
         after it; {answered} of {sent} datagrams answered, longest gap between answers {outage_ms} ms",
        detached.as_millis(),
        serving.as_millis()
    );
    assert!(
        outage_ms < 2000,
        "outage {outage_ms} ms ({answered} of {sent} answered)"
    );
    // Everything sent after the restart is answered: only the outage's datagrams are missing.
    let lost = sent - answered;
    assert!(
        lost * 5 < outage_ms + 100,
        "{lost} datagrams lost for an outage of {outage_ms} ms"
    );
    assert_eq!(udp_roundtrips(&lab, NF_V4, 4), 20);
    stop(&mut again, Signal::Term);
    assert!(!lab.xdp_attached());
}

#[test]
#[ignore = "needs root"]
fn every_thread_runs_with_three_capabilities_and_the_program_still_leaves() {
    require_root();
    let lab = EchoLab::new(2);
    let cfg = lab.echo_config(2);
    let mut nf = lab.start(&cfg, &[]);
    assert!(lab.xdp_attached());
    // CAP_NET_RAW (13), CAP_IPC_LOCK (14), CAP_BPF (39): effective, permitted and bounding, in the
    // main thread, both workers and the signal thread.
    let want = (1u64 << 13) | (1 << 14) | (1 << 39);
    let mut threads = 0;
    for t in std::fs::read_dir(format!("/proc/{}/task", nf.pid())).expect("task dir") {
        let status =
            std::fs::read_to_string(t.expect("task").path().join("status")).unwrap_or_default();
        for field in ["CapEff:", "CapPrm:", "CapBnd:"] {
            let hex = status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .map(str::trim)
                .unwrap_or_else(|| panic!("no {field} in {status}"));
            let caps = u64::from_str_radix(hex, 16).expect("hex");
            assert_eq!(caps, want, "{field} {caps:x} in\n{status}");
        }
        threads += 1;
    }
    assert!(threads >= 4, "{threads} threads");
    let out = lab
        .client
        .exec(&["ping", "-c", "2", "-i", "0.2", "-W", "2", NF_V4])
        .expect("ping");
    assert!(out.contains("2 received"), "{out}");
    stop(&mut nf, Signal::Term);
    assert!(!lab.xdp_attached(), "the program stayed after SIGTERM");
}
