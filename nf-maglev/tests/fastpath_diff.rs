//! Differential test of the kernel fast path against the user-space data plane: the same frames go through
//! the XDP program (`BPF_PROG_RUN`, no interface needed) and through `dataplane::process` on a fresh
//! `PortPlane`, both fed by one control plane. Every frame the program forwards must be forwarded by
//! `process` to the same backend with the same bytes; every frame it hands on must leave it unchanged;
//! and frames of the common case must not be handed on at all.
//!
//! Root only (loading a BPF program); `#[ignore = "needs root"]` like the lab tests.

use cne::bpf::fast::{FastStats, XdpAction};
use cne::frame::{Frame, VecFrame};
use cne::wire::checksum;
use nf_maglev::config::MaglevSection;
use nf_maglev::control::{Control, State};
use nf_maglev::dataplane::fixtures::{
    self, DSR_IN, DSR_OUT, GRE4_IN, GRE4_OUT, GRE6_IN, GRE6_OUT, LB_MAC, MIXED_IN, MIXED_OUT,
    VLAN_IN, VLAN_OUT,
};
use nf_maglev::dataplane::{process, PortPlane, Verdict};
use nf_maglev::fastpath::FastPath;

const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xcc];
const TABLE_SIZE: u32 = 16381;
const CONNS: u32 = 262_144;

/// The data-plane fixtures' configuration with a smaller table, room for every flow, no flood guard and
/// more VIPs: IPv6 and L2 DSR pools.
fn config() -> serde_json::Value {
    let mut c: serde_json::Value = serde_json::from_str(fixtures::CONFIG).expect("parses");
    c["table_size"] = TABLE_SIZE.into();
    c["conntrack"]["size"] = CONNS.into();
    c["flood_guard"] = serde_json::json!({ "max_new_conns_per_sec": 0 });
    let vips = c["vips"].as_array_mut().expect("vips");
    vips.extend(serde_json::json!([
      { "name": "pool6", "addr": "2001:2::200", "proto": "udp", "port": "all", "mode": "gre",
        "backends": [ { "name": "q0", "addr": "2001:2:3::1" }, { "name": "q1", "addr": "2001:2:3::2" },
                      { "name": "q2", "addr": "198.18.3.3" } ] },
      { "name": "dsr6", "addr": "2001:2::300", "proto": "tcp", "port": 443, "mode": "l2dsr",
        "backends": [ { "name": "d0", "addr": "2001:2:4::1", "mac": "02:00:00:00:04:01" },
                      { "name": "d1", "addr": "2001:2:4::2", "mac": "02:00:00:00:04:02" } ] },
      { "name": "dsrpool", "addr": "198.18.100.8", "proto": "tcp", "port": "all", "mode": "l2dsr",
        "backends": [ { "name": "e0", "addr": "198.18.4.1", "mac": "02:00:00:00:05:01" },
                      { "name": "e1", "addr": "198.18.4.2", "mac": "02:00:00:00:05:02" },
                      { "name": "e2", "addr": "198.18.4.3", "mac": "02:00:00:00:05:03" } ] }
    ]).as_array().expect("list").iter().cloned());
    c
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

fn control() -> Control {
    let s: MaglevSection = serde_json::from_value(config()).expect("parses");
    Control::new(s.validate().expect("valid")).expect("builds")
}

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|h| u8::from_str_radix(h, 16).expect("hex byte"))
        .collect()
}

/// xorshift64*: reproducible without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut b = [0u8; N];
        for x in &mut b {
            *x = self.next() as u8;
        }
        b
    }
}

/// A flow: addresses (4 or 16 bytes), ports, protocol.
#[derive(Clone)]
struct Flow {
    src: Vec<u8>,
    dst: Vec<u8>,
    sport: u16,
    dport: u16,
    proto: u8,
}

/// An Ethernet frame (optionally with one 802.1Q tag) carrying the flow's packet.
fn frame(f: &Flow, flags: u8, tos: u8, payload: usize, vlan: Option<u16>) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&f.sport.to_be_bytes());
    l4.extend_from_slice(&f.dport.to_be_bytes());
    if f.proto == 6 {
        l4.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0x20, 0, 0, 0, 0, 0]);
    } else {
        let len = (8 + payload) as u16;
        l4.extend_from_slice(&len.to_be_bytes());
        l4.extend_from_slice(&[0, 0]);
    }
    l4.extend((0..payload).map(|i| i as u8));
    let mut out = Vec::new();
    out.extend_from_slice(&LB_MAC.0);
    out.extend_from_slice(&CLIENT_MAC);
    if let Some(tci) = vlan {
        out.extend_from_slice(&[0x81, 0]);
        out.extend_from_slice(&tci.to_be_bytes());
    }
    if f.src.len() == 4 {
        out.extend_from_slice(&[8, 0]);
        let mut ip = vec![0x45, tos];
        ip.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
        ip.extend_from_slice(&[0, 1, 0x40, 0, 64, f.proto, 0, 0]);
        ip.extend_from_slice(&f.src);
        ip.extend_from_slice(&f.dst);
        let c = checksum::internet(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        out.extend_from_slice(&ip);
    } else {
        out.extend_from_slice(&[0x86, 0xdd]);
        out.extend_from_slice(&[0x60 | (tos >> 4), tos << 4, 0x12, 0x34]);
        out.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        out.extend_from_slice(&[f.proto, 64]);
        out.extend_from_slice(&f.src);
        out.extend_from_slice(&f.dst);
    }
    out.extend_from_slice(&l4);
    // Ethernet minimum: short frames carry padding that is not part of the datagram.
    if out.len() < 60 {
        out.resize(60, 0);
    }
    out
}

/// The VIP destinations of the random flows: address, protocol, port (0 = any).
const TARGETS: &[(&str, u8, u16)] = &[
    ("198.18.100.1", 6, 80),
    ("2001:2::100", 6, 80),
    ("198.18.100.2", 17, 53),
    ("198.18.100.3", 17, 443),
    ("198.18.100.4", 6, 0),
    ("198.18.100.5", 17, 1000),
    ("198.18.100.5", 17, 2000),
    ("198.18.100.7", 17, 0),
    ("2001:2::200", 17, 0),
    ("2001:2::300", 6, 443),
    ("198.18.100.8", 6, 0),
];

fn random_flow(rng: &mut Rng) -> Flow {
    let (addr, proto, port) = TARGETS[rng.below(TARGETS.len() as u64) as usize];
    let dst: std::net::IpAddr = addr.parse().expect("ip");
    let (src, dst) = match dst {
        std::net::IpAddr::V4(d) => {
            let s: [u8; 4] = rng.bytes();
            (vec![198, 19, s[2], s[3].max(1)], d.octets().to_vec())
        }
        std::net::IpAddr::V6(d) => {
            let mut s: [u8; 16] = rng.bytes();
            s[0..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
            (s.to_vec(), d.octets().to_vec())
        }
    };
    Flow {
        src,
        dst,
        sport: 1024 + rng.below(64000) as u16,
        dport: if port == 0 {
            1 + rng.below(65535) as u16
        } else {
            port
        },
        proto,
    }
}

/// Both paths side by side.
struct Pair {
    fast: FastPath,
    plane: PortPlane,
    differences: u64,
    /// Sum of the kernel-measured run times.
    ns: u64,
    /// The program's last output frame.
    last: Vec<u8>,
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Both forwarded the same bytes.
    Same,
    /// The program handed the frame on unchanged (with user space's verdict).
    HandedOn(Verdict),
    /// A difference (already counted and printed).
    Differs,
}

impl Pair {
    fn new(state: &State) -> Self {
        // Half the backend ids in the program's array, the other half in its hash map: both lookups
        // must decide alike.
        let slots = (state.backend_id_bound / 2).max(1);
        let fast =
            FastPath::load(16, TABLE_SIZE, CONNS, slots, LB_MAC).expect("loads the fast path");
        fast.publish(state).expect("publishes");
        Pair {
            fast,
            plane: PortPlane::new(LB_MAC, state),
            differences: 0,
            ns: 0,
            last: Vec::new(),
        }
    }

    fn run(&mut self, state: &State, input: &[u8], what: &str) -> Outcome {
        let run = self
            .fast
            .program()
            .test_run(input, 1)
            .expect("BPF_PROG_RUN");
        self.ns += u64::from(run.ns_per_run);
        self.last.clone_from(&run.output);
        let mut f = VecFrame::from_bytes(input);
        let verdict = process(&mut f, state, &mut self.plane, 1);
        let user = f.data();
        match run.action {
            XdpAction::Tx if verdict == Verdict::Tx && run.output == user => Outcome::Same,
            XdpAction::Pass if run.output == input => Outcome::HandedOn(verdict),
            _ => {
                self.differences += 1;
                if self.differences <= 5 {
                    eprintln!(
                        "difference ({what}): program {:?} {:02x?}\n  user space {verdict:?} {:02x?}\n  input {:02x?}",
                        run.action, run.output, user, input
                    );
                }
                Outcome::Differs
            }
        }
    }

    fn stats(&self) -> FastStats {
        self.fast.program().stats().expect("stats")
    }
}

/// The program's flow cache is per CPU: runs of one test stay on CPU 0 unless it moves on purpose.
fn pin() {
    cne::sys::cpu::pin_current_thread(&[0]).expect("pins the thread to CPU 0");
}

#[test]
#[ignore = "needs root"]
fn fixtures_give_the_expected_frames() {
    lab::require_root();
    pin();
    let c = control();
    let state = c.state();
    let mut p = Pair::new(&state);
    // The data plane's fixtures (scapy): input and the frame the load balancer must send.
    let cases = [
        ("gre4", GRE4_IN, GRE4_OUT),
        ("gre6", GRE6_IN, GRE6_OUT),
        ("mixed", MIXED_IN, MIXED_OUT),
        ("dsr", DSR_IN, DSR_OUT),
        ("vlan", VLAN_IN, VLAN_OUT),
    ];
    for (name, input, want) in cases {
        let input = hex(input);
        let run = p.fast.program().test_run(&input, 1).expect("runs");
        assert_eq!(run.action, XdpAction::Tx, "{name}");
        // The fixtures were made with a zero flow label; the label (the flow hash's low 20 bits) is
        // checked against user space below and in `program_flow_hash_equals_hash_rs`.
        let mut out = run.output.clone();
        if out[12..14] == [0x86, 0xdd] {
            out[15] &= 0xf0;
            out[16] = 0;
            out[17] = 0;
        }
        assert_eq!(out, hex(want), "{name}: the program's frame");
        assert_eq!(p.run(&state, &input, name), Outcome::Same, "{name}");
    }
    assert_eq!(p.differences, 0);
}

#[test]
#[ignore = "needs root"]
fn what_the_fast_path_does_not_take_is_handed_on_unchanged() {
    lab::require_root();
    pin();
    let c = control();
    let state = c.state();
    let mut p = Pair::new(&state);
    let v4 = |d: [u8; 4], proto, dport| Flow {
        src: vec![198, 18, 50, 1],
        dst: d.to_vec(),
        sport: 4000,
        dport,
        proto,
    };
    let mut options = frame(&v4([198, 18, 100, 1], 6, 80), SYN, 0, 0, None);
    options[14] = 0x46; // IHL 6: the header claims an option
    let mut fragment = frame(&v4([198, 18, 100, 7], 17, 9), 0, 0, 16, None);
    fragment[20] = 0x20; // MF
    let mut icmp = frame(&v4([198, 18, 100, 1], 6, 80), 0, 0, 0, None);
    icmp[23] = 1;
    let mut qinq = frame(&v4([198, 18, 100, 1], 6, 80), SYN, 0, 0, Some(5));
    qinq.splice(12..12, [0x88, 0xa8, 0, 7]);
    let too_big = frame(&v4([198, 18, 100, 7], 17, 9), 0, 0, 1500 - 28, None);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "no vip",
            frame(&v4([198, 18, 100, 9], 6, 80), SYN, 0, 0, None),
        ),
        (
            "wrong port",
            frame(&v4([198, 18, 100, 1], 6, 81), SYN, 0, 0, None),
        ),
        (
            "no backend",
            frame(&v4([198, 18, 100, 6], 6, 80), SYN, 0, 0, None),
        ),
        ("options", options),
        ("fragment", fragment),
        ("icmp", icmp),
        ("two vlan tags", qinq),
        ("too big", too_big),
        // BPF_PROG_RUN wants at least an Ethernet header.
        ("no ethertype", vec![0; 14]),
    ];
    for (name, input) in &cases {
        let outcome = p.run(&state, input, name);
        assert!(
            matches!(outcome, Outcome::HandedOn(_)),
            "{name}: {outcome:?}"
        );
    }
    let s = p.stats();
    assert_eq!(s.forwarded, 0);
    assert_eq!(
        (s.handed_no_vip, s.handed_no_table, s.handed_too_big),
        (2, 1, 1),
        "{s:?}"
    );
    assert_eq!(s.handed_not_fast, 5, "{s:?}");
}

#[test]
#[ignore = "needs root"]
fn random_flows_decide_as_user_space() {
    lab::require_root();
    pin();
    let mut c = control();
    let state = c.state();
    let mut p = Pair::new(&state);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let n = 100_000;
    let flows: Vec<Flow> = (0..n).map(|_| random_flow(&mut rng)).collect();
    let flag_choices = [SYN, ACK, SYN | ACK, ACK | 0x01, ACK | 0x04, ACK | 0x08];
    let mut handed = 0u64;
    for f in &flows {
        let flags = flag_choices[rng.below(flag_choices.len() as u64) as usize];
        let tos = rng.next() as u8;
        let payload = rng.below(300) as usize;
        let vlan = (rng.below(10) == 0).then_some(100);
        let input = frame(f, flags, tos, payload, vlan);
        if let Outcome::HandedOn(_) = p.run(&state, &input, "random") {
            handed += 1;
        }
    }
    let s = p.stats();
    println!(
        "{n} random flows: {} differences, {handed} handed on, {} ns per packet (BPF_PROG_RUN, one \
         run each, kernel clock); {s:?}",
        p.differences,
        p.ns / n as u64
    );
    assert_eq!(
        p.differences, 0,
        "differences between the program and user space"
    );
    assert_eq!(handed, 0, "the common case is handed on");

    // Both paths count what they forwarded alike, per VIP and per backend (the program's backend
    // counters read in one batch read per VIP, its ids given in reverse order).
    let prog = p.fast.program();
    let user = p.plane.refresh_counters();
    let same = |f: &cne::bpf::fast::FastTraffic, u: &nf_maglev::counters::Traffic| {
        (f.packets, f.bytes, f.new_conns) == (u.packets, u.bytes, u.new_conns)
    };
    let mut counted = 0;
    for vip in state.vips() {
        let id = vip.id;
        let fast = prog.vip_traffic(&[id]).expect("VIP counters")[0];
        let u = &user.vips[id as usize];
        assert!(
            same(&fast, u),
            "VIP {}: program {fast:?}, user space {u:?}",
            vip.name
        );
        counted += fast.packets;
        let ids: Vec<u32> = vip.backends().iter().map(|b| b.id).rev().collect();
        let fast = prog.backend_traffic(&ids).expect("backend counters");
        assert_eq!(fast.len(), ids.len());
        for (id, f) in ids.iter().zip(&fast) {
            let u = &user.backends[*id as usize];
            assert!(
                same(f, u),
                "backend {id} of {}: program {f:?}, user space {u:?}",
                vip.name
            );
        }
    }
    assert_eq!(counted, n as u64, "every flow counted once for its VIP");

    // The connection tables of both paths remember the flows; a drained backend keeps its
    // connections but gets no new ones, even on a reused 5-tuple (a SYN).
    c.set_weight("pool", "p1", 0).expect("drains");
    c.set_weight("dsrpool", "e1", 0).expect("drains");
    let state = c.state();
    let gen = p.fast.program().active_generation().expect("cfg");
    let t = std::time::Instant::now();
    p.fast.publish(&state).expect("publishes the new state");
    println!(
        "publication of {} VIPs with {TABLE_SIZE}-slot tables: {:?}",
        state.vips().len(),
        t.elapsed()
    );
    assert_eq!(
        p.fast.program().active_generation().expect("cfg"),
        gen ^ 1,
        "a publication switches the generation"
    );
    let replay = &flows[..20_000];
    let (p1_mac, e1_mac) = ([2, 0, 0, 0, 0, 0xfe], [2, 0, 0, 0, 5, 2]);
    // Then a FIN, and a SYN on the closed 5-tuple: a new connection the current table decides.
    let phases = [
        ("ack", ACK),
        ("syn", SYN),
        ("ack again", ACK),
        ("fin", ACK | 0x01),
        ("syn after fin", SYN),
    ];
    for (phase, flags) in phases {
        let (mut handed, mut to_drained) = (0, 0);
        for f in replay {
            if let Outcome::HandedOn(_) = p.run(&state, &frame(f, flags, 0, 10, None), phase) {
                handed += 1;
            }
            let out = &p.last;
            let pool_p1 =
                f.dst == [198, 18, 100, 4] && out[..6] == p1_mac && out[30..34] == [198, 18, 2, 2];
            let dsr_e1 = f.dst == [198, 18, 100, 8] && out[..6] == e1_mac;
            to_drained += u32::from(pool_p1 || dsr_e1);
        }
        if phase == "ack" {
            assert!(
                to_drained > 500,
                "drained backends keep their connections ({to_drained})"
            );
        } else {
            assert_eq!(to_drained, 0, "{phase}: a SYN reaches a drained backend");
        }
        println!(
            "replay {phase}: {} differences so far, {handed} handed on",
            p.differences
        );
        assert_eq!(handed, 0, "{phase}: known flows are handed on");
    }
    // New TCP flows other than a SYN to a VIP whose table changed may be old connections: user space
    // decides them (past tables).
    let before = p.stats().handed_past;
    let mut past = 0;
    for _ in 0..2000 {
        let mut f = random_flow(&mut rng);
        let s: [u8; 2] = rng.bytes();
        f.src = vec![198, 20, s[0], s[1]];
        f.dst = vec![198, 18, 100, 4];
        f.proto = 6;
        if let Outcome::HandedOn(v) = p.run(&state, &frame(&f, ACK, 0, 0, None), "past") {
            assert_eq!(v, Verdict::Tx);
            past += 1;
        }
    }
    assert_eq!(past, 2000);
    assert_eq!(p.stats().handed_past - before, 2000);
    assert_eq!(
        p.differences, 0,
        "differences between the program and user space"
    );
}

/// An IPv4 flow whose decision the CPU's flow cache holds takes a shorter way through the program
/// (`cached_v4`): its odd packets (options, fragments, bad lengths, flags that end or open a
/// connection, a VLAN tag, a truncated frame) must still be decided as user space decides them, and its
/// ordinary ones, whatever their TOS or padding, must come from the cache.
#[test]
#[ignore = "needs root"]
fn odd_packets_of_a_cached_flow_decide_as_user_space() {
    lab::require_root();
    pin();
    let c = control();
    let state = c.state();
    let mut p = Pair::new(&state);
    let flow = |dst: [u8; 4], proto, dport| Flow {
        src: vec![198, 19, 7, 7],
        dst: dst.to_vec(),
        sport: 40_000 + u16::from(dst[3]),
        dport,
        proto,
    };
    // TCP in GRE, UDP in GRE, TCP with L2 DSR.
    let flows = [
        flow([198, 18, 100, 1], 6, 80),
        flow([198, 18, 100, 7], 17, 4000),
        flow([198, 18, 100, 8], 6, 22),
    ];
    for f in &flows {
        let tcp = f.proto == 6;
        let ordinary = |tos, payload| frame(f, if tcp { ACK } else { 0 }, tos, payload, None);
        let base = ordinary(0, 10);
        let first = frame(f, if tcp { SYN } else { 0 }, 0, 10, None);
        assert_eq!(p.run(&state, &first, "opens"), Outcome::Same);
        let mut odd: Vec<(&str, Vec<u8>)> = Vec::new();
        let mut with = |name, change: &dyn Fn(&mut Vec<u8>)| {
            let mut x = base.clone();
            change(&mut x);
            odd.push((name, x));
        };
        with("options", &|x| x[14] = 0x46);
        with("more fragments", &|x| x[20] |= 0x20);
        with("fragment offset", &|x| x[21] = 1);
        with("total length below the header", &|x| {
            x[16..18].copy_from_slice(&19u16.to_be_bytes())
        });
        with("total length past the frame", &|x| {
            let len = (x.len() - 14 + 1) as u16;
            x[16..18].copy_from_slice(&len.to_be_bytes());
        });
        with("truncated transport header", &|x| x.truncate(34 + 6));
        if tcp {
            with("data offset below 5", &|x| x[46] = 0x40);
            with("data offset past the segment", &|x| x[46] = 0xf0);
            with("fin", &|x| x[47] = ACK | 0x01);
            with("rst", &|x| x[47] = 0x04);
        } else {
            with("udp length below 8", &|x| {
                x[38..40].copy_from_slice(&7u16.to_be_bytes())
            });
            with("udp length past the datagram", &|x| {
                x[38..40].copy_from_slice(&19u16.to_be_bytes());
            });
        }
        odd.push((
            "vlan tag",
            frame(f, if tcp { ACK } else { 0 }, 0, 10, Some(5)),
        ));
        for (name, x) in &odd {
            // The ordinary packet fills the cache (or finds it filled), the next comes from it.
            assert_eq!(p.run(&state, &base, "ordinary"), Outcome::Same);
            let hits = p.stats().cache_hits;
            for (what, y) in [("tos", ordinary(0x28, 10)), ("padded", ordinary(0, 0))] {
                assert_eq!(p.run(&state, &y, what), Outcome::Same, "{what}");
            }
            // Two hits, or one if a tick ended in between.
            assert!(
                p.stats().cache_hits > hits,
                "{name}: ordinary packets hit the cache"
            );
            let outcome = p.run(&state, x, name);
            assert_ne!(outcome, Outcome::Differs, "{name}");
        }
    }
    assert_eq!(
        p.differences, 0,
        "differences between the program and user space"
    );
}

/// The outer IPv4 destination of a GRE frame the program sent: which backend it chose.
fn gre_backend(out: &[u8]) -> [u8; 4] {
    out[30..34].try_into().expect("an IPv4 GRE frame")
}

/// A CPU's flow cache holds a decision only while nothing it came from changes: a new state (a drain),
/// a SYN on another CPU that moves a reused 5-tuple to another backend, and a connection entry user
/// space writes all reach the next packet on this CPU.
#[test]
#[ignore = "needs root"]
fn the_flow_cache_follows_changes_made_elsewhere() {
    lab::require_root();
    let cpus = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    if cpus.trim() == "0" {
        println!("one CPU online: the cross-CPU part cannot run; skipped");
        return;
    }
    pin();
    let mut c = control();
    let state = c.state();
    let mut p = Pair::new(&state);
    let p1 = [198, 18, 2, 2];
    // A connection to the GRE pool that the table gives p1.
    let mut rng = Rng(0x0f10_cace_5eed_0001);
    let f = loop {
        let s: [u8; 2] = rng.bytes();
        let f = Flow {
            src: vec![198, 19, s[0], s[1]],
            dst: vec![198, 18, 100, 4],
            sport: 1024 + rng.below(60000) as u16,
            dport: 80,
            proto: 6,
        };
        assert_eq!(
            p.run(&state, &frame(&f, SYN, 0, 0, None), "syn"),
            Outcome::Same
        );
        if gre_backend(&p.last) == p1 {
            break f;
        }
    };
    let ack = frame(&f, ACK, 0, 10, None);
    let hits = p.stats().cache_hits;
    for _ in 0..5 {
        assert_eq!(p.run(&state, &ack, "ack"), Outcome::Same);
    }
    // The first fills the cache, the others hit it (one more fill if a tick ends in between).
    assert!(
        p.stats().cache_hits >= hits + 3,
        "the connection's packets come from the flow cache"
    );
    // A new state: p1 drained keeps its connection.
    c.set_weight("pool", "p1", 0).expect("drains");
    let state = c.state();
    p.fast.publish(&state).expect("publishes");
    for _ in 0..3 {
        assert_eq!(p.run(&state, &ack, "ack after the drain"), Outcome::Same);
        assert_eq!(
            gre_backend(&p.last),
            p1,
            "a drained backend keeps its connection"
        );
    }
    // The connection ends on CPU 1 and a new one reuses its 5-tuple there: the table decides it.
    cne::sys::cpu::pin_current_thread(&[1]).expect("pins the thread to CPU 1");
    assert_eq!(
        p.run(&state, &frame(&f, ACK | 0x01, 0, 0, None), "fin"),
        Outcome::Same
    );
    assert_eq!(
        p.run(&state, &frame(&f, SYN, 0, 0, None), "syn again"),
        Outcome::Same
    );
    let moved = gre_backend(&p.last);
    assert_ne!(
        moved, p1,
        "a SYN after a FIN is a new connection, not to a drained backend"
    );
    // Back on CPU 0, whose cache saw the old connection on p1: its next packet goes where CPU 1 put it.
    pin();
    assert_eq!(p.run(&state, &ack, "ack on the first CPU"), Outcome::Same);
    assert_eq!(gre_backend(&p.last), moved);
    // User space records the flow on yet another backend (as for a connection from a past table).
    let vip = state.vip_by_name("pool").expect("pool");
    let other = vip
        .backends()
        .iter()
        .find(|b| {
            let a = match b.addr {
                std::net::IpAddr::V4(a) => a.octets(),
                std::net::IpAddr::V6(_) => [0; 4],
            };
            a != moved && a != p1
        })
        .expect("a third backend");
    let mut src = [0u8; 16];
    src[10..12].copy_from_slice(&[0xff, 0xff]);
    src[12..].copy_from_slice(&f.src);
    let mut dst = src;
    dst[12..].copy_from_slice(&f.dst);
    p.fast
        .program()
        .record_conns(&[cne::bpf::fast::FastConn {
            src,
            dst,
            sport: f.sport,
            dport: f.dport,
            proto: 6,
            backend: other.id,
            vip: vip.id,
            closing: false,
            timeout: 60,
        }])
        .expect("records");
    let run = p.fast.program().test_run(&ack, 1).expect("BPF_PROG_RUN");
    assert_eq!(run.action, XdpAction::Tx);
    assert_eq!(
        std::net::IpAddr::from(gre_backend(&run.output)),
        other.addr,
        "the program follows the entry user space wrote"
    );
}

/// Connections user space forwarded from a past table (which the program does not keep) are written
/// into the program's connection map and from then on forwarded by the program to the same backend,
/// also once the past tables are gone.
#[test]
#[ignore = "needs root"]
fn connections_from_past_tables_reach_the_kernel() {
    lab::require_root();
    pin();
    let s: MaglevSection = serde_json::from_value(config()).expect("parses");
    let mut c = Control::new_at(s.validate().expect("valid"), Some(1_000)).expect("builds");
    let mut p = Pair::new(&c.state());
    p.plane.keep_past_flows();
    // A table change: the pool's old table becomes a past table.
    c.set_weight("pool", "p1", 0).expect("drains");
    let state = c.state();
    assert!(state.vip_by_name("pool").expect("pool").has_past());
    p.fast.publish(&state).expect("publishes");
    let mut rng = Rng(0x51ed_2705_8f2a_44c3);
    let flows: Vec<Flow> = (0..2000)
        .map(|_| {
            let mut f = random_flow(&mut rng);
            let s: [u8; 2] = rng.bytes();
            f.src = vec![198, 20, s[0], s[1]];
            f.dst = vec![198, 18, 100, 4];
            f.proto = 6;
            f
        })
        .collect();
    // Mid-connection packets of flows nobody has seen: handed on, and user space sends those the
    // past table gives p1 to p1.
    for f in &flows {
        let outcome = p.run(&state, &frame(f, ACK, 0, 0, None), "past");
        assert_eq!(outcome, Outcome::HandedOn(Verdict::Tx));
    }
    let past = p.plane.take_past_flows().expect("past flows kept");
    let from_past = past.len();
    assert!(from_past > 100, "{from_past} flows from the past table");
    let conns = nf_maglev::fastpath::past_conns(&past, state.timeouts);
    p.fast.program().record_conns(&conns).expect("records");
    // The recorded flows are the program's now, with the same decision as user space.
    let recorded: std::collections::HashSet<(u16, Vec<u8>)> = past
        .iter()
        .map(|f| (f.key.sport, f.key.src.to_be_bytes()[12..].to_vec()))
        .collect();
    let mut taken = 0;
    for f in &flows {
        let outcome = p.run(&state, &frame(f, ACK, 0, 0, None), "recorded");
        if recorded.contains(&(f.sport, f.src.clone())) {
            assert_eq!(outcome, Outcome::Same, "a recorded flow");
            taken += 1;
        }
    }
    assert_eq!(taken, from_past);
    // Past tables forgotten (after the TCP idle timeout): the program still has the flows.
    c.set_now(Some(1_000 + u64::from(state.timeouts.tcp) + 1));
    assert!(c.tick(), "the past tables expire");
    let state = c.state();
    assert!(!state.vip_by_name("pool").expect("pool").has_past());
    p.fast.publish(&state).expect("publishes");
    for f in flows
        .iter()
        .filter(|f| recorded.contains(&(f.sport, f.src.clone())))
    {
        assert_eq!(
            p.run(&state, &frame(f, ACK, 0, 0, None), "after"),
            Outcome::Same
        );
    }
    assert_eq!(p.differences, 0);
}

#[test]
#[ignore = "needs root"]
fn program_flow_hash_equals_hash_rs() {
    lab::require_root();
    pin();
    // The IPv6 outer flow label carries the low 20 bits of the flow hash, the backend pick the high 32:
    // random flows to an IPv6-backed VIP check both against hash.rs.
    let c = control();
    let state = c.state();
    let p = Pair::new(&state);
    let seed = state.hash_seed;
    let mut rng = Rng(42);
    for _ in 0..20_000 {
        let mut f = random_flow(&mut rng);
        if rng.below(2) == 0 {
            f.src = rng.bytes::<4>().to_vec();
            f.dst = vec![198, 18, 100, 2];
            f.dport = 53;
        } else {
            f.src = rng.bytes::<16>().to_vec();
            f.src[0] = 0x20;
            f.dst = "2001:2::200"
                .parse::<std::net::Ipv6Addr>()
                .expect("ip")
                .octets()
                .to_vec();
        }
        f.proto = 17;
        let input = frame(&f, 0, 0, 4, None);
        let run = p.fast.program().test_run(&input, 1).expect("runs");
        let addr = |a: &[u8]| {
            if a.len() == 4 {
                0xffff_0000_0000u128 | u128::from(u32::from_be_bytes(a.try_into().expect("4")))
            } else {
                u128::from_be_bytes(a.try_into().expect("16"))
            }
        };
        let hash = nf_maglev::hash::flow_hash(
            seed,
            addr(&f.src),
            addr(&f.dst),
            nf_maglev::conntrack::FlowKey::pack_ports_proto(f.sport, f.dport, 17),
        );
        assert_eq!(run.action, XdpAction::Tx);
        if run.output[12..14] == [0x86, 0xdd] {
            let label = u32::from_be_bytes(run.output[14..18].try_into().expect("4")) & 0xf_ffff;
            assert_eq!(
                label,
                hash as u32 & 0xf_ffff,
                "flow label of {f:?}",
                f = f.src
            );
        }
    }
}

#[test]
#[ignore = "needs root"]
fn a_flow_that_changes_vip_is_a_new_flow_there() {
    lab::require_root();
    pin();
    let mut c = control();
    let state = c.state();
    let mut p = Pair::new(&state);
    // Flows to the all-ports pool, on port 8080, recorded by both paths.
    let mut rng = Rng(99);
    let flows: Vec<Flow> = (0..2000)
        .map(|_| {
            let s: [u8; 2] = rng.bytes();
            Flow {
                src: vec![198, 21, s[0], s[1]],
                dst: vec![198, 18, 100, 4],
                sport: 1024 + rng.below(60000) as u16,
                dport: 8080,
                proto: 6,
            }
        })
        .collect();
    for f in &flows {
        assert_eq!(
            p.run(&state, &frame(f, SYN, 0, 0, None), "before"),
            Outcome::Same
        );
    }
    // Port 8080 of the same address becomes a VIP of its own: the recorded backends belong to the
    // pool, not to it.
    let mut config = config();
    config["vips"].as_array_mut().expect("vips").insert(
        0,
        serde_json::json!({ "name": "pool-8080", "addr": "198.18.100.4", "proto": "tcp", "port": 8080,
            "mode": "gre", "backends": [ { "name": "n0", "addr": "198.18.6.1" } ] }),
    );
    let section: MaglevSection = serde_json::from_value(config).expect("parses");
    c.reload(&section).expect("reloads");
    let (old, state) = (state, c.state());
    // A packet of some of the connections: their decisions are in this CPU's flow cache now. Then the
    // old state published again, and the new one: the generation the cached decisions were made in is
    // the active one again, but they belong to an older state. (Their tick of 64 jiffies may end on
    // the way, then the cache is empty anyway and the test cannot tell.)
    let t = std::time::Instant::now();
    for f in &flows[..200] {
        assert_eq!(
            p.run(&old, &frame(f, ACK, 0, 0, None), "before"),
            Outcome::Same
        );
    }
    p.fast.publish(&old).expect("publishes");
    p.fast.publish(&state).expect("publishes");
    let hits = p.stats().cache_hits;
    for f in &flows[..200] {
        // Not a SYN, but the connection belongs to another VIP: a new flow of this one.
        assert_eq!(
            p.run(&state, &frame(f, ACK, 0, 0, None), "after"),
            Outcome::Same
        );
        assert_eq!(p.last[30..34], [198, 18, 6, 1], "to the new VIP's backend");
    }
    assert_eq!(p.stats().cache_hits, hits, "no decision of the old state");
    println!("cached, two publications, checked: {:?}", t.elapsed());
    for f in &flows {
        // A SYN: the new VIP has no past tables, so the program decides it.
        assert_eq!(
            p.run(&state, &frame(f, SYN, 0, 0, None), "after"),
            Outcome::Same
        );
        assert_eq!(p.last[30..34], [198, 18, 6, 1], "to the new VIP's backend");
    }
    assert_eq!(p.differences, 0);
}

/// The program's cost per packet as `BPF_PROG_RUN` measures it (printed; asserts only that it ran).
/// A repeated run sees the frame the previous run left, so repetition measures only frames the program
/// leaves reusable: L2 DSR (the MAC rewrite is the same every time) and frames it hands on; GRE is
/// measured one run at a time.
#[test]
#[ignore = "needs root"]
fn cost_per_packet() {
    lab::require_root();
    pin();
    let c = control();
    let state = c.state();
    let p = Pair::new(&state);
    let prog = p.fast.program();
    let dsr = hex(DSR_IN);
    let gre = hex(GRE4_IN);
    let no_vip = frame(
        &Flow {
            src: vec![198, 18, 50, 1],
            dst: vec![198, 18, 100, 9],
            sport: 1,
            dport: 80,
            proto: 6,
        },
        SYN,
        0,
        0,
        None,
    );
    let repeated = |input: &[u8]| {
        let run = prog.test_run(input, 100_000).expect("runs");
        run.ns_per_run
    };
    let (dsr_ns, pass_ns) = (repeated(&dsr), repeated(&no_vip));
    let runs = 20_000u64;
    let gre_ns: u64 = (0..runs)
        .map(|_| u64::from(prog.test_run(&gre, 1).expect("runs").ns_per_run))
        .sum::<u64>()
        / runs;
    println!(
        "BPF_PROG_RUN ns per packet: L2 DSR (connection hit) {dsr_ns}, no VIP (handed on) {pass_ns}, \
         GRE IPv4 (connection hit, one run at a time) {gre_ns}"
    );
    let s = prog.stats().expect("stats");
    assert!(s.forwarded >= 100_000 + runs, "{s:?}");
}

/// The 128-bit multiply the C program assembles from 32-bit products, written the same way, equals
/// Rust's `u128` product on random and extreme operands.
#[test]
fn folded_multiply_from_32_bit_products() {
    fn fold_mul_32(a: u64, b: u64) -> u64 {
        let (a_lo, a_hi, b_lo, b_hi) = (a & 0xffff_ffff, a >> 32, b & 0xffff_ffff, b >> 32);
        let (ll, lh, hl, hh) = (a_lo * b_lo, a_lo * b_hi, a_hi * b_lo, a_hi * b_hi);
        let mid = (ll >> 32) + (lh & 0xffff_ffff) + (hl & 0xffff_ffff);
        let lo = (ll & 0xffff_ffff) | (mid << 32);
        let hi = hh + (lh >> 32) + (hl >> 32) + (mid >> 32);
        lo ^ hi
    }
    let reference = |a: u64, b: u64| {
        let r = u128::from(a) * u128::from(b);
        (r as u64) ^ ((r >> 64) as u64)
    };
    let mut rng = Rng(7);
    let mut pairs = vec![
        (u64::MAX, u64::MAX),
        (0, u64::MAX),
        (1 << 63, 3),
        (0xffff_ffff, 0xffff_ffff),
    ];
    pairs.extend((0..100_000).map(|_| (rng.next(), rng.next())));
    for (a, b) in pairs {
        assert_eq!(fold_mul_32(a, b), reference(a, b), "{a:#x} * {b:#x}");
    }
}
