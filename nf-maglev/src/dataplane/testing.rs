//! Shared test fixtures of the packet path: the test configuration, Katran-style input and expected
//! output frames (generated with scapy), frame builders and small runners.

use super::*;
use crate::config::MaglevSection;
use crate::control::{Addr, Control};
use cne::frame::VecFrame;
use cne::wire::checksum;
use std::net::IpAddr;

pub(crate) use super::fixtures::*;

pub(crate) fn bytes(hex: &str, tail: Option<(u8, usize)>) -> Vec<u8> {
    let mut b: Vec<u8> = hex
        .split_whitespace()
        .map(|h| u8::from_str_radix(h, 16).expect("hex byte"))
        .collect();
    if let Some((byte, n)) = tail {
        b.resize(b.len() + n, byte);
    }
    b
}

pub(crate) fn control() -> Control {
    let s: MaglevSection = serde_json::from_str(CONFIG).expect("parses");
    Control::new(s.validate().expect("valid")).expect("builds")
}

pub(crate) fn run(
    state: &State,
    plane: &mut PortPlane,
    input: &[u8],
    now: u32,
) -> (Verdict, Vec<u8>) {
    let mut f = VecFrame::from_bytes(input);
    let v = process(&mut f, state, plane, now);
    (v, f.data().to_vec())
}

/// Input, expected verdict and output, Katran-fixture style.
pub(crate) fn check(name: &str, input: Vec<u8>, want: Vec<u8>) {
    let c = control();
    let state = c.state();
    let mut w = PortPlane::new(LB_MAC, &state);
    let (v, out) = run(&state, &mut w, &input, 1);
    assert_eq!(v, Verdict::Tx, "{name}");
    assert_eq!(hex(&out), hex(&want), "{name}");
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.chunks(16)
        .map(|c| {
            c.iter()
                .map(|x| format!("{x:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Sets the 20-bit IPv6 flow label at `l3` to the flow hash's low bits, as the encapsulation does.
pub(crate) fn with_flow_label(mut frame: Vec<u8>, l3: usize, key: FlowKey) -> Vec<u8> {
    let label = (key.hash(7) as u32) & 0xf_ffff;
    let word = u32::from_be_bytes([frame[l3], frame[l3 + 1], frame[l3 + 2], frame[l3 + 3]])
        & 0xfff0_0000
        | label;
    frame[l3..l3 + 4].copy_from_slice(&word.to_be_bytes());
    frame
}

pub(crate) fn v4(s: &str) -> u128 {
    Addr::from(s.parse::<IpAddr>().expect("ip")).bits
}

/// An Ethernet/IPv4/TCP frame (checksums are not checked on this path, so they stay zero).
pub(crate) fn tcp4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, flags: u8) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 0xaa, 2, 0, 0, 0, 0, 0xcc, 8, 0];
    f.extend_from_slice(&[0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0x20, 0, 0, 0, 0, 0]);
    f
}

/// An IPv4 fragment of protocol `proto` at byte `offset` with `more` fragments, carrying `payload`.
pub(crate) fn frag4(
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    id: u16,
    offset: u16,
    more: bool,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 0xaa, 2, 0, 0, 0, 0, 0xcc, 8, 0];
    let total = (20 + payload.len()) as u16;
    let fo = (offset / 8) | if more { 0x2000 } else { 0 };
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&id.to_be_bytes());
    f.extend_from_slice(&fo.to_be_bytes());
    f.extend_from_slice(&[64, proto, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(payload);
    f
}

pub(crate) const SYN: u8 = 0x02;
pub(crate) const ACK: u8 = 0x10;
pub(crate) const FIN_ACK: u8 = 0x11;
pub(crate) const POOL: [u8; 4] = [198, 18, 100, 4];

/// The backend (outer IPv4 destination) a GRE frame goes to.
pub(crate) fn outer_dst(out: &[u8]) -> [u8; 4] {
    [out[30], out[31], out[32], out[33]]
}

/// Sends a non-SYN packet of each flow and returns the backend it went to.
pub(crate) fn backends_of(
    state: &State,
    w: &mut PortPlane,
    flows: &[([u8; 4], u16)],
    flags: u8,
    now: u32,
) -> Vec<[u8; 4]> {
    flows
        .iter()
        .map(|&(src, sport)| {
            let (v, out) = run(state, w, &tcp4(src, sport, POOL, 8080, flags), now);
            assert_eq!(v, Verdict::Tx);
            outer_dst(&out)
        })
        .collect()
}

pub(crate) fn flows(n: u32) -> Vec<([u8; 4], u16)> {
    (0..n)
        .map(|i| {
            (
                [198, 18, 60 + (i % 7) as u8, (i % 251) as u8],
                1024 + i as u16,
            )
        })
        .collect()
}

/// An ICMPv4 error `kind`/`code` from a router to `vip` quoting `quoted` (the start of a packet the
/// VIP sent).
pub(crate) fn icmp4_error(vip: [u8; 4], kind: u8, code: u8, quoted: &[u8]) -> Vec<u8> {
    let mut icmp = vec![kind, code, 0, 0, 0, 0, 0x05, 0x78];
    icmp.extend_from_slice(quoted);
    frag4([198, 18, 70, 1], vip, 1, 9, 0, false, &icmp)
}

/// What a backend sends to a client under direct server return, from the VIP: IP and TCP headers.
pub(crate) fn reply_of(src: [u8; 4], sport: u16) -> Vec<u8> {
    tcp4(POOL, 8080, src, sport, SYN | ACK)[14..].to_vec()
}

/// Table A (p0-p3), then B (p4 added): the flows whose slot B gives to p4.
pub(crate) fn moved_by_adding_p4(
    c: &mut Control,
    f: &[([u8; 4], u16)],
) -> (Vec<[u8; 4]>, Vec<usize>) {
    let mut w = PortPlane::new(LB_MAC, &c.state());
    let under_a = backends_of(&c.state(), &mut w, f, SYN, 1);
    let p4 = crate::config::BackendSection {
        check: None,
        name: "p4".into(),
        addr: "198.18.2.5".parse().expect("ip"),
        weight: 1,
        mac: None,
    };
    c.add_backend("pool", p4).expect("adds");
    let mut fresh = PortPlane::new(LB_MAC, &c.state());
    let under_b = backends_of(&c.state(), &mut fresh, f, SYN, 2);
    let moved: Vec<usize> = (0..f.len()).filter(|&i| under_a[i] != under_b[i]).collect();
    assert!(
        moved.iter().all(|&i| under_b[i] == [198, 18, 2, 5]),
        "adding a backend moves flows only to it"
    );
    assert!(moved.len() > 100, "{} of {} moved", moved.len(), f.len());
    (under_a, moved)
}

/// An IPv4 UDP packet (or a piece of one) from 198.18.50.1 to `dst`:`dport` carrying `payload`, with the
/// flags/offset word `frag` (DF = 0x4000, MF = 0x2000) and header options `opts` (a multiple of 4).
pub(crate) fn udp4_raw(
    dst: [u8; 4],
    dport: u16,
    frag: u16,
    opts: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let ihl = 20 + opts.len();
    let mut f = vec![2, 0, 0, 0, 0, 0xaa, 2, 0, 0, 0, 0, 0xcc, 8, 0];
    let total = (ihl + 8 + payload.len()) as u16;
    f.push(0x40 | (ihl / 4) as u8);
    f.push(0x28);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&0x1234u16.to_be_bytes());
    f.extend_from_slice(&frag.to_be_bytes());
    f.extend_from_slice(&[64, 17, 0, 0, 198, 18, 50, 1]);
    f.extend_from_slice(&dst);
    f.extend_from_slice(opts);
    let sum = checksum::internet(&f[14..14 + ihl]);
    f[24..26].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&5000u16.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

/// Runs one frame through `process` and, for [`Verdict::Fragment`], through [`fragment`] with a pool of
/// `pool` frames: the verdict and the frames sent.
pub(crate) fn run_fragmenting(
    state: &State,
    w: &mut PortPlane,
    input: &[u8],
    pool: usize,
) -> (Verdict, Vec<Vec<u8>>) {
    let mut f = VecFrame::new(input, 64, 4096);
    let v = process(&mut f, state, w, 1);
    let mut out = Vec::new();
    if v != Verdict::Fragment {
        return (v, out);
    }
    let mut left = pool;
    let n = fragment(
        &mut f,
        state,
        w,
        1,
        || {
            left = left.checked_sub(1)?;
            Some(VecFrame::new(&[], 64, 2048))
        },
        |g| out.push(g.data().to_vec()),
    );
    assert_eq!(n, out.len());
    (v, out)
}

/// Checks one GRE-over-IPv4 frame to 198.18.1.5 carrying an inner IPv4 fragment within the 1500-byte
/// MTU: (inner header length, offset in bytes, MF, inner payload).
pub(crate) fn inner_fragment(out: &[u8]) -> (usize, usize, bool, Vec<u8>) {
    assert_eq!(&out[6..12], &LB_MAC.0, "from the load balancer");
    assert_eq!(&out[12..14], &[8, 0]);
    let outer = &out[14..34];
    assert_eq!(outer[0], 0x45);
    assert_eq!(&outer[16..20], &[198, 18, 1, 5], "to the backend");
    assert_eq!(outer[9], 47);
    assert_eq!(checksum::internet(outer), 0, "outer checksum");
    let outer_len = usize::from(u16::from_be_bytes([outer[2], outer[3]]));
    assert_eq!(outer_len, out.len() - 14);
    assert!(outer_len <= 1500, "within the MTU: {outer_len}");
    assert_eq!(&out[34..38], &[0, 0, 8, 0], "GRE carrying IPv4");
    let inner = &out[38..];
    let ihl = usize::from(inner[0] & 0xf) * 4;
    assert_eq!(checksum::internet(&inner[..ihl]), 0, "inner checksum");
    assert_eq!(
        usize::from(u16::from_be_bytes([inner[2], inner[3]])),
        inner.len()
    );
    assert_eq!(&inner[4..6], &[0x12, 0x34], "the datagram's id");
    assert_eq!(inner[1], 0x28, "TOS kept");
    assert_eq!(outer[1], 0x28, "TOS copied to the outer header");
    let word = u16::from_be_bytes([inner[6], inner[7]]);
    assert_eq!(word & 0x4000, 0, "no DF");
    (
        ihl,
        usize::from(word & 0x1fff) * 8,
        word & 0x2000 != 0,
        inner[ihl..].to_vec(),
    )
}

/// The state of [`CONFIG`], built once for all tests that only read it.
pub(crate) fn shared_state() -> std::sync::Arc<State> {
    static STATE: std::sync::OnceLock<std::sync::Arc<State>> = std::sync::OnceLock::new();
    STATE.get_or_init(|| control().state()).clone()
}

pub(crate) fn state_and_plane() -> (std::sync::Arc<State>, PortPlane) {
    let state = shared_state();
    let w = PortPlane::new(LB_MAC, &state);
    (state, w)
}
