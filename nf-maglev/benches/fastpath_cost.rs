//! Cost per packet of the kernel fast path (`cne/bpf/maglev_fast.bpf.c`, loaded through
//! `nf_maglev::fastpath::FastPath`) as `BPF_PROG_RUN` measures it, with 10k and 1M flows in its
//! connection map: L2 DSR over IPv4, GRE over IPv4 and GRE over IPv6, each one TCP VIP of 100 backends
//! like the user-space data-plane bench (`benches/dataplane.rs`).
//!
//! Needs root (it loads BPF programs); as another user it says it is skipped and exits 0:
//!
//! ```text
//! sudo cargo bench -p nf-maglev --bench fastpath_cost
//! ```
//!
//! How it measures. Without live frames, `BPF_PROG_RUN` with `repeat` > 1 runs the program again and
//! again on one buffer and does not restore it between runs (`bpf_test_run` in the kernel's
//! `net/bpf/test_run.c` calls `bpf_prog_run_xdp` on the same `xdp_buff` in its loop; only live-frame
//! mode resets each frame). After the first run a GRE frame carries its new outer header, to a backend
//! and not a VIP, so the program hands it on and the later repeats measure that instead. A repeated
//! frame is also one flow whose entries stay hot in the caches, which hides what a million flows cost.
//! So every packet here is one call with repeat 1, each for another flow (a fixed pseudo-random walk
//! over the N flows), and the result is the mean of the kernel's times. That time is the program run
//! plus what one call adds: a read of the kernel's clock, and caches that the system call in between
//! has partly evicted. The "call overhead" estimates it: a frame the program hands on unchanged (no
//! VIP), one call per run, less the same frame repeated a million times in one call. "net" is the mean
//! less that overhead; the truth lies between the two columns.
//!
//! Per flow count and case, a fresh program with a connection map of 1.25 entries per flow (so no flow
//! is evicted): every flow opens with a SYN first (not measured), then
//! - hit: the first packet (ACK) of a known flow after its SYN, found in the connection map (and
//!   written into the CPU's flow cache: the whole way);
//! - hit repeat (L2 DSR only): 256 of the known flows, each run 4096 times in one call: after the first
//!   run a flow's packets come from the CPU's flow cache, so this is the cost of a cached hit with the
//!   flow's entries in the CPU caches, while the map holds all N flows (an L2 DSR frame stays the same
//!   flow's packet when run again; a GRE frame does not);
//! - new: a SYN of a flow never seen (a quarter of N more flows, at most 50,000), which misses the
//!   connection map, takes its backend from the Maglev table and is recorded.
//!
//! The thread stays on CPU 0 throughout.

use cne::bpf::fast::{FastProgram, XdpAction};
use nf_maglev::config::{Mac, MaglevSection};
use nf_maglev::control::Control;
use nf_maglev::fastpath::{FastPath, MIN_BACKEND_SLOTS};
use nf_maglev::testing::flow_picker;

const LB_MAC: Mac = Mac([2, 0, 0, 0, 0, 0xaa]);
const TABLE_SIZE: u32 = 65537;
const BACKENDS: u32 = 100;
/// Measured packets of known flows per flow count and case.
const HIT_SAMPLES: u32 = 200_000;
/// Flows sampled for the measurement with repeat, and the repeat of each.
const REPEAT_FLOWS: u32 = 256;
const REPEAT: u32 = 4096;
/// At most this many new flows are measured.
const NEW_MAX: u32 = 50_000;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    L2DsrV4,
    GreV4,
    GreV6,
}

impl Case {
    const ALL: [Case; 3] = [Case::L2DsrV4, Case::GreV4, Case::GreV6];

    fn name(self) -> &'static str {
        match self {
            Case::L2DsrV4 => "l2dsr ipv4",
            Case::GreV4 => "gre ipv4",
            Case::GreV6 => "gre ipv6",
        }
    }

    fn v6(self) -> bool {
        self == Case::GreV6
    }

    /// The control plane of this case's one VIP, with room for `flows` in user space too.
    fn control(self, flows: u32) -> Control {
        let (vip, mode) = match self {
            Case::L2DsrV4 => ("198.18.100.1", "l2dsr"),
            Case::GreV4 => ("198.18.100.1", "gre"),
            Case::GreV6 => ("2001:2::100", "gre"),
        };
        let backends: Vec<serde_json::Value> = (0..BACKENDS)
            .map(|i| {
                let addr = if self.v6() {
                    format!("2001:2:1::{:x}", i + 1)
                } else {
                    format!("198.18.{}.{}", 1 + i / 200, 1 + i % 200)
                };
                let mut b = serde_json::json!({ "name": format!("b{i}"), "addr": addr });
                if self == Case::L2DsrV4 {
                    b["mac"] = "02:00:00:00:01:01".into();
                }
                b
            })
            .collect();
        let section = serde_json::json!({
            "hash_seed": 1,
            "table_size": TABLE_SIZE,
            "conntrack": { "size": flows + flows / 4 },
            "flood_guard": { "max_new_conns_per_sec": 0 },
            "local_addrs": ["198.18.0.1", "2001:2::1"],
            "gateway_mac": "02:00:00:00:00:fe",
            "vips": [{ "name": "vip", "addr": vip, "proto": "tcp", "port": 80, "mode": mode,
                       "backends": backends }],
        });
        let section: MaglevSection =
            serde_json::from_value(section).unwrap_or_else(|e| panic!("{e}"));
        Control::new(section.validate().unwrap_or_else(|e| panic!("{e:?}")))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Ethernet / IP / TCP of flow `i` (source address from `i`, port 40000) to the VIP, port 80, with
    /// 6 bytes of payload. Checksums are left zero: the program does not check them.
    fn frame(self, i: u32, flags: u8) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 0xaa, 2, 0, 0, 0, 0, 0xcc];
        let mut tcp = vec![
            0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0x20, 0,
        ];
        tcp.extend_from_slice(&[0, 0, 0, 0]);
        tcp.extend_from_slice(b"abcdef");
        let len = u16::try_from(tcp.len()).expect("short");
        let b = i.to_be_bytes();
        if self.v6() {
            f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
            f.extend_from_slice(&len.to_be_bytes());
            f.extend_from_slice(&[6, 64]);
            f.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0]);
            f.extend_from_slice(&b);
            f.extend_from_slice(&[0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
        } else {
            f.extend_from_slice(&[8, 0, 0x45, 0]);
            f.extend_from_slice(&(20 + len).to_be_bytes());
            f.extend_from_slice(&[0, 1, 0x40, 0, 64, 6, 0, 0]);
            f.extend_from_slice(&[10, b[1], b[2], b[3]]);
            f.extend_from_slice(&[198, 18, 100, 1]);
        }
        f.extend_from_slice(&tcp);
        f
    }
}

/// One call per frame: the mean kernel time, the number of calls and how many did not end in XDP_TX.
fn per_call(prog: &FastProgram, frames: impl Iterator<Item = Vec<u8>>) -> (f64, u64, u64) {
    let (mut ns, mut n, mut not_tx) = (0u64, 0u64, 0u64);
    for f in frames {
        let run = prog.test_run(&f, 1).expect("BPF_PROG_RUN");
        ns += u64::from(run.ns_per_run);
        n += 1;
        not_tx += u64::from(run.action != XdpAction::Tx);
    }
    #[allow(clippy::cast_precision_loss)]
    let mean = ns as f64 / n.max(1) as f64;
    (mean, n, not_tx)
}

struct Row {
    flows: u32,
    case: Case,
    hit: f64,
    /// L2 DSR only: hits measured with `repeat` (each sampled flow run many times in one call, its
    /// entries hot), while the map holds all the flows.
    hit_repeat: Option<f64>,
    new: f64,
    new_flows: u32,
}

fn measure(flows: u32, case: Case) -> Row {
    let control = case.control(flows);
    let state = control.state();
    let fast =
        FastPath::load(1, TABLE_SIZE, flows + flows / 4, MIN_BACKEND_SLOTS, LB_MAC).expect("loads");
    fast.publish(&state).expect("publishes");
    let prog = fast.program();

    // Every flow opens first.
    let (_, opened, not_tx) = per_call(prog, (0..flows).map(|i| case.frame(i, SYN)));
    assert_eq!(not_tx, 0, "{}: opening SYNs not forwarded", case.name());
    let s = prog.stats().expect("stats");
    assert_eq!(s.conn_new, opened, "{}: every flow recorded", case.name());

    let mut next = flow_picker(flows);
    let (hit, n, not_tx) = per_call(prog, (0..HIT_SAMPLES).map(|_| case.frame(next(), ACK)));
    let after = prog.stats().expect("stats");
    assert_eq!(not_tx, 0, "{}: known flows not forwarded", case.name());
    assert_eq!(
        after.conn_hits - s.conn_hits,
        n,
        "{}: known flows missed the connection map (evicted?)",
        case.name()
    );

    // With repeat: an L2 DSR frame stays a hit of the same flow when run again (only its MACs change);
    // a GRE frame would not (it leaves encapsulated).
    let hit_repeat = (case == Case::L2DsrV4).then(|| {
        let mut next = flow_picker(flows);
        let mut sum = 0u64;
        for _ in 0..REPEAT_FLOWS {
            let run = prog
                .test_run(&case.frame(next(), ACK), REPEAT)
                .expect("BPF_PROG_RUN");
            assert_eq!(run.action, XdpAction::Tx);
            sum += u64::from(run.ns_per_run);
        }
        #[allow(clippy::cast_precision_loss)]
        let mean = sum as f64 / f64::from(REPEAT_FLOWS);
        mean
    });
    let after = prog.stats().expect("stats");

    let new_flows = (flows / 4).min(NEW_MAX);
    let (new, n, not_tx) = per_call(prog, (flows..flows + new_flows).map(|i| case.frame(i, SYN)));
    let end = prog.stats().expect("stats");
    assert_eq!(not_tx, 0, "{}: new flows not forwarded", case.name());
    assert_eq!(
        end.conn_new - after.conn_new,
        n,
        "{}: new flows",
        case.name()
    );
    Row {
        flows,
        case,
        hit,
        hit_repeat,
        new,
        new_flows,
    }
}

/// The overhead of one call (clock read, caches the system call evicted): a frame handed on unchanged,
/// one call per run versus a million repeats in one call. Also the hot-cache cost of an L2 DSR hit (a frame the program leaves
/// reusable: only its MAC addresses change), for comparison with the per-call figures.
fn overhead_and_hot() -> (f64, u32, u32) {
    let case = Case::L2DsrV4;
    let state = case.control(1024).state();
    let fast = FastPath::load(1, TABLE_SIZE, 1024, MIN_BACKEND_SLOTS, LB_MAC).expect("loads");
    fast.publish(&state).expect("publishes");
    let prog = fast.program();
    let mut no_vip = case.frame(1, ACK);
    no_vip[30..34].copy_from_slice(&[198, 18, 100, 9]);
    let repeated = prog.test_run(&no_vip, 1_000_000).expect("runs");
    assert_eq!(repeated.action, XdpAction::Pass);
    let (once, _, _) = per_call(prog, (0..200_000).map(|_| no_vip.clone()));
    let dsr = case.frame(1, SYN);
    assert_eq!(prog.test_run(&dsr, 1).expect("runs").action, XdpAction::Tx);
    let hot = prog.test_run(&case.frame(1, ACK), 1_000_000).expect("runs");
    assert_eq!(hot.action, XdpAction::Tx);
    (
        once - f64::from(repeated.ns_per_run),
        repeated.ns_per_run,
        hot.ns_per_run,
    )
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too, without it: then one quick
    // pass at the small flow count only, as a check that it still works.
    let full = std::env::args().any(|a| a == "--bench");
    if !lab::is_root() {
        println!("fastpath_cost: skipped (needs root to load BPF programs)");
        return;
    }
    cne::sys::cpu::pin_current_thread(&[0]).expect("pins the thread to CPU 0");
    let (overhead, no_vip, hot) = overhead_and_hot();
    let counts: &[u32] = if full {
        &[10_000, 1_000_000]
    } else {
        &[10_000]
    };
    let mut rows = Vec::new();
    for &flows in counts {
        for case in Case::ALL {
            let row = measure(flows, case);
            eprintln!(
                "{flows} flows, {}: hit {:.1} ns, new {:.1} ns",
                case.name(),
                row.hit,
                row.new
            );
            rows.push(row);
        }
    }
    println!(
        "BPF_PROG_RUN, one call per packet, mean kernel ns per packet (net = less the call overhead)"
    );
    println!(
        "{:>9}  {:<12}{:>8}{:>8}{:>8}{:>8}{:>11}{:>13}",
        "flows", "case", "hit", "net", "new", "net", "new flows", "hit repeat"
    );
    for r in &rows {
        println!(
            "{:>9}  {:<12}{:>8.1}{:>8.1}{:>8.1}{:>8.1}{:>11}{:>13}",
            r.flows,
            r.case.name(),
            r.hit,
            r.hit - overhead,
            r.new,
            r.new - overhead,
            r.new_flows,
            r.hit_repeat
                .map_or_else(|| "-".to_string(), |h| format!("{h:.1}"))
        );
    }
    println!(
        "call overhead: {overhead:.1} ns; one frame repeated 1M times in one call: no VIP (handed on) \
         {no_vip} ns, L2 DSR hit of one flow {hot} ns"
    );
}
