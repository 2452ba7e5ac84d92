//! A throw-away network lab for root-only tests: a veth pair whose host end stays in this process's
//! namespace (where the AF_XDP port is opened) and whose peer end lives in a fresh namespace, from
//! which frames are sent and captured. Names come from `lab::names` (prefix, pid, counter: `lab cleanup`
//! finds leftovers); everything is deleted in
//! `Drop`, also when a test fails. IPv6 is disabled on both ends so the kernel sends nothing on its
//! own and every frame seen is one the test made.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

static NEXT: AtomicU32 = AtomicU32::new(0);
static SERIAL: Mutex<()> = Mutex::new(());

/// Runs a command, failing with its stderr.
pub(crate) fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Takes the lab lock (labs are built one at a time: XDP program loads are not meant to race) after
/// checking that this process is root (the one check, [`lab::require_root`]) with `ip` and `python3`
/// at hand; fails the test otherwise. Callers are `#[ignore = "needs root"]`.
pub(crate) fn lab_lock() -> MutexGuard<'static, ()> {
    lab::require_root();
    for tool in [&["ip", "-V"][..], &["python3", "-c", "pass"]] {
        if let Err(e) = run(tool) {
            panic!("the veth lab needs {}: {e}", tool[0]);
        }
    }
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A veth pair ([`lab::VethPair::from_here`]): `host` in our namespace, `peer` in namespace `ns` with
/// 198.18.0.2/24.
#[derive(Debug)]
pub(crate) struct VethLab {
    pub(crate) host: String,
    pub(crate) peer: String,
    pub(crate) host_mac: [u8; 6],
    pub(crate) peer_mac: [u8; 6],
    // Field order is drop order: the pair, then its namespace.
    pair: lab::VethPair,
    pub(crate) ns: lab::Netns,
}

impl VethLab {
    /// Builds the lab with `queues` RX/TX queues on each end.
    pub(crate) fn new(queues: u32) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = (std::process::id() % 256) as u8;
        let ns = lab::Netns::new("n").expect("lab namespace");
        let pair = lab::VethPair::from_here(Some(&ns), queues).expect("veth pair");
        let lab = Self {
            host: pair.a().name().to_string(),
            peer: pair.b().name().to_string(),
            host_mac: [0x02, 0xc0, tag, n as u8, 0, 1],
            peer_mac: [0x02, 0xc0, tag, n as u8, 0, 2],
            pair,
            ns,
        };
        // From here on Drop cleans up whatever was created.
        lab.build().expect("building the veth lab");
        lab
    }

    fn build(&self) -> Result<(), String> {
        let (host, peer) = (self.pair.a(), self.pair.b());
        step(host.set_mac(lab::Mac(self.host_mac)))?;
        step(peer.set_mac(lab::Mac(self.peer_mac)))?;
        step(host.disable_ipv6())?;
        step(peer.disable_ipv6())?;
        step(host.up())?;
        step(peer.add_addr(Ipv4Addr::new(198, 18, 0, 2).into(), 24))?;
        step(peer.up())?;
        Ok(())
    }

    /// Runs a command inside the namespace.
    pub(crate) fn in_ns(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["ip", "netns", "exec", self.ns.name()];
        all.extend_from_slice(args);
        run(&all)
    }

    /// Sends raw Ethernet frames out of the peer (they arrive on `host`), from CPU `cpu` if given:
    /// the veth RX queue a frame lands on follows the sending CPU.
    pub(crate) fn send(&self, frames: &[Vec<u8>], cpu: Option<usize>) {
        const SCRIPT: &str = "import socket,sys\n\
            s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\n\
            s.bind((sys.argv[1],0))\n\
            for h in sys.argv[2:]: s.send(bytes.fromhex(h))\n";
        let hex: Vec<String> = frames.iter().map(|f| to_hex(f)).collect();
        let cpu_s = cpu.map(|c| c.to_string());
        let mut args: Vec<&str> = Vec::new();
        if let Some(c) = &cpu_s {
            args.extend(["taskset", "-c", c.as_str()]);
        }
        args.extend([
            "ip",
            "netns",
            "exec",
            self.ns.name(),
            "python3",
            "-c",
            SCRIPT,
            &self.peer,
        ]);
        args.extend(hex.iter().map(String::as_str));
        run(&args).expect("sending frames from the peer");
    }

    /// Starts capturing up to `count` frames of EtherType `ethertype` arriving on the peer; the
    /// capture is ready when this returns.
    pub(crate) fn capture(&self, ethertype: u16, count: usize, timeout: Duration) -> Capture {
        const SCRIPT: &str = "import socket,sys,select,time\n\
            et=int(sys.argv[2],16); n=int(sys.argv[3]); end=time.time()+float(sys.argv[4])\n\
            s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW,socket.htons(et))\n\
            s.bind((sys.argv[1],0))\n\
            print('ready',flush=True)\n\
            got=0\n\
            while got<n:\n\
            \x20 r=end-time.time()\n\
            \x20 if r<=0 or not select.select([s],[],[],r)[0]: break\n\
            \x20 d,a=s.recvfrom(4096)\n\
            \x20 if a[2]==4: continue\n\
            \x20 print(d.hex(),flush=True); got+=1\n";
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                self.ns.name(),
                "python3",
                "-c",
                SCRIPT,
                &self.peer,
            ])
            .arg(format!("{ethertype:x}"))
            .arg(count.to_string())
            .arg(timeout.as_secs_f64().to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the capture");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("capture ready line");
        assert_eq!(line.trim(), "ready", "capture did not start");
        Capture { child, out }
    }

    /// A counter of the peer interface from `/sys/class/net/<peer>/statistics`.
    pub(crate) fn peer_counter(&self, name: &str) -> u64 {
        self.in_ns(&[
            "cat",
            &format!("/sys/class/net/{}/statistics/{name}", self.peer),
        ])
        .expect("reading a peer counter")
        .trim()
        .parse()
        .expect("a number")
    }
}

/// A lab step's error as text (the lab's errors are `anyhow` chains).
fn step<E: std::fmt::Display>(r: Result<(), E>) -> Result<(), String> {
    r.map_err(|e| format!("{e:#}"))
}

/// A running capture on the peer.
pub(crate) struct Capture {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Capture {
    /// Waits for the capture to finish (count reached or timeout) and returns the frames.
    pub(crate) fn frames(mut self) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        let mut line = String::new();
        while self.out.read_line(&mut line).unwrap_or(0) > 0 {
            frames.push(from_hex(line.trim()));
            line.clear();
        }
        let _ = self.child.wait();
        frames
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub(crate) fn mac_str(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub(crate) fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub(crate) fn from_hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

/// An Ethernet + IPv4 + UDP frame from 198.18.0.2 to 198.18.0.1 with the given ports and payload.
pub(crate) fn udp_frame(
    src: &[u8; 6],
    dst: &[u8; 6],
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let ip_len = 20 + udp_len;
    let mut f = Vec::with_capacity(14 + ip_len);
    f.extend_from_slice(dst);
    f.extend_from_slice(src);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let ip_start = f.len();
    f.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0]);
    f[ip_start + 2..ip_start + 4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    f.extend_from_slice(&[198, 18, 0, 2, 198, 18, 0, 1]);
    let mut sum = 0u32;
    for c in f[ip_start..ip_start + 20].chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    f[ip_start + 10..ip_start + 12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&(udp_len as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

/// A raw frame of a local experimental EtherType (0x88b5) the peer's stack ignores.
pub(crate) fn raw_frame(src: &[u8; 6], dst: &[u8; 6], seq: u32, len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(dst);
    f.extend_from_slice(src);
    f.extend_from_slice(&0x88b5u16.to_be_bytes());
    f.extend_from_slice(b"cne-tx");
    f.extend_from_slice(&seq.to_be_bytes());
    f.resize(len.max(f.len()), 0xa5);
    f
}

/// Polls `f` every millisecond until it returns true or `limit` passes.
pub(crate) fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
