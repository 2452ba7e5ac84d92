//! Privileged tests of the XDP programs (`xsk_filter`, `gre_decap`) and the AF_PACKET backend.
//!
//! Every test builds its own lab: a veth pair whose names include the process id and a per-test counter,
//! one end in the test's network namespace (where the programs are attached) and the other moved into a
//! fresh namespace of its own. `Drop` deletes both even when the test fails. Addresses come from
//! 198.18.0.0/15 and 2001:2::/48 only. Filter and decap verdicts are checked with `BPF_PROG_RUN` on crafted
//! frames; real traffic crosses only the lab's veth pair. The tests are `#[ignore = "needs root"]`; run anyway without root they fail.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cne::afpacket::AfPacket;
use cne::bpf::decap::{DecapProgram, DecapStats};
use cne::bpf::filter::{AddrFlags, FilterStats, Rule, XdpError, XdpMode, XdpProgram};
use cne::frame::{Frame, VecFrame};

use lab::require_root;

const XDP_PASS: u32 = 2;

/// Runs a command, panicking with its stderr when it fails; returns its stdout.
fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command and ignores the outcome (cleanup).
fn sh_quiet(args: &[&str]) {
    let _ = Command::new(args[0]).args(&args[1..]).output();
}

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// A veth pair ([`lab::VethPair::from_here`]): `host` in this namespace, `peer` in the namespace `ns`,
/// with a /30 of 198.19.0.0/16.
struct Lab {
    host: String,
    peer: String,
    host_ip: Ipv4Addr,
    peer_ip: Ipv4Addr,
    host_mac: [u8; 6],
    peer_mac: [u8; 6],
    extra_links: Vec<String>,
    // Field order is drop order: the pair, then its namespace.
    pair: lab::VethPair,
    ns: lab::Netns,
}

impl Lab {
    fn new() -> Lab {
        let n = NEXT_LAB.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let sub = u8::try_from(pid % 256).expect("fits");
        let host_off = u8::try_from((n % 63) * 4 + 1).expect("fits");
        let nb = u8::try_from(n % 256).expect("fits");
        let ns = lab::Netns::new("x").expect("lab namespace");
        let pair = lab::VethPair::from_here(Some(&ns), 1).expect("veth pair");
        let lab = Lab {
            host: pair.a().name().to_string(),
            peer: pair.b().name().to_string(),
            host_ip: Ipv4Addr::new(198, 19, sub, host_off),
            peer_ip: Ipv4Addr::new(198, 19, sub, host_off + 1),
            host_mac: [0x02, 0xc0, 0xde, sub, nb, 0x01],
            peer_mac: [0x02, 0xc0, 0xde, sub, nb, 0x02],
            extra_links: Vec::new(),
            pair,
            ns,
        };
        // `lab` exists before anything is configured, so a failing step below still cleans up.
        let (host, peer) = (lab.pair.a(), lab.pair.b());
        host.set_mac(lab::Mac(lab.host_mac)).expect("host MAC");
        peer.set_mac(lab::Mac(lab.peer_mac)).expect("peer MAC");
        // No IPv6 on the lab links: keeps router solicitations and MLD reports off the sockets.
        host.disable_ipv6().expect("no IPv6 on the host end");
        peer.disable_ipv6().expect("no IPv6 on the peer end");
        host.add_addr(lab.host_ip.into(), 30).expect("host address");
        host.up().expect("host end up");
        peer.add_addr(lab.peer_ip.into(), 30).expect("peer address");
        peer.up().expect("peer end up");
        lab
    }

    /// `ip -d link show` of the host end.
    fn link_details(&self) -> String {
        sh(&["ip", "-d", "link", "show", "dev", &self.host])
    }

    /// Runs `f` on a thread that has entered the lab's namespace (sockets it opens stay there).
    fn in_peer_ns<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.ns.run(f)
    }

    /// An interface counter of the peer end, read inside its namespace.
    fn peer_counter(&self, name: &str) -> u64 {
        let path = format!("/sys/class/net/{}/statistics/{name}", self.peer);
        sh(&["ip", "netns", "exec", self.ns.name(), "cat", &path])
            .trim()
            .parse()
            .expect("counter")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for link in &self.extra_links {
            sh_quiet(&["ip", "link", "del", link]);
        }
        // The pair and then its namespace go when the fields drop after this.
    }
}

// ---- frame builders -------------------------------------------------------------------------------

const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xaa];
const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xbb];

fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !u16::try_from(sum).expect("folded")
}

fn eth_to(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    eth_to(DST_MAC, SRC_MAC, ethertype, payload)
}

fn eth_vlan(tpid: u16, vid: u16, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut tag = Vec::new();
    tag.extend_from_slice(&vid.to_be_bytes());
    tag.extend_from_slice(&ethertype.to_be_bytes());
    tag.extend_from_slice(payload);
    eth(tpid, &tag)
}

/// IPv4 header (with `options` of a multiple of 4 bytes) plus payload; `frag` is flags and offset.
fn ipv4_opts(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    frag: u16,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let hlen = 20 + options.len();
    let total = u16::try_from(hlen + payload.len()).expect("fits");
    let mut h = vec![0u8; hlen];
    h[0] = 0x40 | u8::try_from(hlen / 4).expect("fits");
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    h[6..8].copy_from_slice(&frag.to_be_bytes());
    h[8] = 64;
    h[9] = proto;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    h[20..].copy_from_slice(options);
    let c = checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, frag: u16, payload: &[u8]) -> Vec<u8> {
    ipv4_opts(src, dst, proto, frag, &[], payload)
}

fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 40];
    h[0] = 0x60;
    h[4..6].copy_from_slice(&u16::try_from(payload.len()).expect("fits").to_be_bytes());
    h[6] = next;
    h[7] = 64;
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&dst.octets());
    h.extend_from_slice(payload);
    h
}

/// An 8-byte IPv6 option header (hop-by-hop or destination options: padding only).
fn ipv6_opt_hdr(next: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![next, 0, 1, 4, 0, 0, 0, 0];
    h.extend_from_slice(payload);
    h
}

fn ipv6_frag_hdr(next: u8, offset_units: u16, more: bool, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![next, 0];
    h.extend_from_slice(&((offset_units << 3) | u16::from(more)).to_be_bytes());
    h.extend_from_slice(&0xabcd_0001u32.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(
        &u16::try_from(8 + payload.len())
            .expect("fits")
            .to_be_bytes(),
    );
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(payload);
    h
}

fn tcp(sport: u16, dport: u16) -> Vec<u8> {
    let mut h = vec![0u8; 20];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[12] = 5 << 4;
    h[13] = 0x02; // SYN
    h
}

fn icmp_echo(kind: u8, id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![kind, 0, 0, 0];
    h.extend_from_slice(&id.to_be_bytes());
    h.extend_from_slice(&seq.to_be_bytes());
    h.extend_from_slice(payload);
    let c = checksum(&h);
    h[2..4].copy_from_slice(&c.to_be_bytes());
    h
}

fn arp(op: u16, spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    let mut h = vec![0, 1, 0x08, 0x00, 6, 4];
    h.extend_from_slice(&op.to_be_bytes());
    h.extend_from_slice(&SRC_MAC);
    h.extend_from_slice(&spa.octets());
    h.extend_from_slice(&[0; 6]);
    h.extend_from_slice(&tpa.octets());
    h
}

/// ICMPv6 neighbour solicitation (135) or advertisement (136) for `target`.
fn icmpv6_nd(kind: u8, target: Ipv6Addr) -> Vec<u8> {
    let mut h = vec![kind, 0, 0, 0, 0, 0, 0, 0];
    h.extend_from_slice(&target.octets());
    h
}

fn gre(flags: u16, proto: u16, extra: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&flags.to_be_bytes());
    h.extend_from_slice(&proto.to_be_bytes());
    h.extend_from_slice(extra);
    h.extend_from_slice(payload);
    h
}

fn solicited_node(addr: Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

const ETH_IP: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const ETH_ARP: u16 = 0x0806;
const MF: u16 = 0x2000;

fn v4(d: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, d)
}

fn v6(d: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, d)
}

// ---- attach / detach ------------------------------------------------------------------------------

#[test]
#[ignore = "needs root"]
fn attach_shows_in_ip_link_and_drop_detaches() {
    require_root();
    let lab = Lab::new();
    let prog = XdpProgram::attach(&lab.host, XdpMode::Native, false).expect("attach native");
    assert_eq!(prog.ifname(), lab.host);
    assert_eq!(prog.mode(), XdpMode::Native);
    assert!(prog.prog_id() > 0);
    assert_eq!(prog.xsks_map_entries(), 256);
    let details = lab.link_details();
    assert!(
        details.contains(&format!("prog/xdp id {}", prog.prog_id())),
        "{details}"
    );
    assert!(details.contains("xsk_filter"), "{details}");
    drop(prog);
    let details = lab.link_details();
    assert!(
        !details.contains("prog/xdp"),
        "still attached after drop: {details}"
    );

    // SKB mode works too and is reported as generic XDP.
    let prog = XdpProgram::attach(&lab.host, XdpMode::Skb, false).expect("attach skb");
    let details = lab.link_details();
    assert!(details.contains("xdpgeneric"), "{details}");
    drop(prog);
    assert!(!lab.link_details().contains("prog/xdp"));
}

#[test]
#[ignore = "needs root"]
fn second_attach_is_refused_and_force_replaces() {
    require_root();
    let lab = Lab::new();
    let first = XdpProgram::attach(&lab.host, XdpMode::Native, false).expect("attach");
    let err = XdpProgram::attach(&lab.host, XdpMode::Native, false).expect_err("must be refused");
    assert!(matches!(err, XdpError::AlreadyAttached { id, .. } if id == first.prog_id()));
    assert_eq!(
        err.to_string(),
        format!(
            "{} already has XDP program id {} (xsk_filter) attached; refusing to replace it without --force",
            lab.host,
            first.prog_id()
        )
    );
    // A different program, and a different mode, are refused the same way.
    let err = DecapProgram::attach(&lab.host, XdpMode::Skb, false, &[]).expect_err("refused");
    assert!(err.to_string().contains("(xsk_filter) attached"), "{err}");
    // Nothing changed on the interface.
    assert!(lab
        .link_details()
        .contains(&format!("prog/xdp id {}", first.prog_id())));

    let forced = XdpProgram::attach(&lab.host, XdpMode::Native, true).expect("forced attach");
    assert_ne!(forced.prog_id(), first.prog_id());
    assert!(lab
        .link_details()
        .contains(&format!("prog/xdp id {}", forced.prog_id())));
    // The replaced program's drop must leave the new one alone.
    drop(first);
    assert!(lab
        .link_details()
        .contains(&format!("prog/xdp id {}", forced.prog_id())));

    // Forcing across modes: the native program is removed, the SKB one attached.
    let decap = DecapProgram::attach(&lab.host, XdpMode::Skb, true, &[]).expect("forced skb");
    let details = lab.link_details();
    assert!(details.contains("xdpgeneric"), "{details}");
    assert!(
        details.contains(&format!("prog/xdp id {}", decap.prog_id())),
        "{details}"
    );
    drop(forced);
    assert!(lab.link_details().contains("xdpgeneric"));
    drop(decap);
    assert!(!lab.link_details().contains("prog/xdp"));
}

#[test]
#[ignore = "needs root"]
fn native_mode_on_an_interface_without_driver_support_is_an_error() {
    require_root();
    let mut lab = Lab::new();
    let bridge = lab::names::unique("br").expect("bridge name");
    lab.extra_links.push(bridge.clone());
    sh(&["ip", "link", "add", &bridge, "type", "bridge"]);
    let err =
        XdpProgram::attach(&bridge, XdpMode::Native, false).expect_err("bridge has no native XDP");
    assert!(matches!(err, XdpError::NativeUnsupported { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("netdev {bridge} does not support native XDP; use skb mode (skb_mode: true)")
    );
    let prog = XdpProgram::attach(&bridge, XdpMode::Skb, false).expect("skb mode works everywhere");
    drop(prog);
    let details = sh(&["ip", "-d", "link", "show", "dev", &bridge]);
    assert!(!details.contains("prog/xdp"), "{details}");
}

// ---- filter verdicts ------------------------------------------------------------------------------

/// Runs `frame` through the filter and returns whether it was claimed, checking the counters moved by
/// exactly one packet and that the frame came back unchanged.
fn claimed(prog: &XdpProgram, frame: &[u8]) -> bool {
    let before = prog.stats().expect("stats");
    let (ret, out) = prog.test_run(frame).expect("test run");
    let after = prog.stats().expect("stats");
    // No socket is bound in these tests: a claimed packet falls back to XDP_PASS.
    assert_eq!(ret, XDP_PASS);
    assert_eq!(out, frame, "the filter never modifies frames");
    let d = FilterStats {
        claimed: after.claimed - before.claimed,
        passed: after.passed - before.passed,
        redirect_failed: after.redirect_failed - before.redirect_failed,
    };
    assert_eq!(d.claimed + d.passed, 1, "{d:?}");
    assert_eq!(d.redirect_failed, d.claimed, "{d:?}");
    d.claimed == 1
}

#[test]
#[ignore = "needs root"]
fn filter_claims_exactly_the_configured_traffic() {
    require_root();
    let lab = Lab::new();
    let prog = XdpProgram::attach(&lab.host, XdpMode::Native, false).expect("attach");

    let vip4 = v4(10);
    let other4 = v4(11);
    let all4 = v4(30);
    let vip6 = v6(0x10);
    let other6 = v6(0x11);
    let client4 = v4(1);
    let client6 = v6(1);
    for rule in [
        Rule {
            addr: IpAddr::V4(vip4),
            proto: Some(17),
            port: Some(53),
        },
        Rule {
            addr: IpAddr::V4(vip4),
            proto: Some(6),
            port: Some(80),
        },
        Rule {
            addr: IpAddr::V4(vip4),
            proto: Some(1),
            port: None,
        },
        Rule {
            addr: IpAddr::V6(vip6),
            proto: Some(6),
            port: Some(443),
        },
        Rule {
            addr: IpAddr::V6(vip6),
            proto: Some(17),
            port: None,
        },
        Rule {
            addr: IpAddr::V4(all4),
            proto: None,
            port: None,
        },
    ] {
        prog.add_rule(&rule).expect("add rule");
    }
    for vip in [IpAddr::V4(vip4), IpAddr::V6(vip6)] {
        prog.own_address(vip, AddrFlags::NEIGH | AddrFlags::FRAGS)
            .expect("own");
    }

    let udp4 = |dst, port| eth(ETH_IP, &ipv4(client4, dst, 17, 0, &udp(40000, port, b"x")));
    let tcp4 = |dst, port| eth(ETH_IP, &ipv4(client4, dst, 6, 0, &tcp(40000, port)));
    let tcp6 = |dst, port| eth(ETH_IPV6, &ipv6(client6, dst, 6, &tcp(40000, port)));
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("udp to vip4:53", udp4(vip4, 53), true),
        ("udp to vip4:54", udp4(vip4, 54), false),
        ("tcp to vip4:80", tcp4(vip4, 80), true),
        ("tcp to vip4:81", tcp4(vip4, 81), false),
        ("tcp to vip4:53 (rule is udp)", tcp4(vip4, 53), false),
        ("udp to other4:53", udp4(other4, 53), false),
        (
            "icmp echo to vip4 (all of proto 1)",
            eth(
                ETH_IP,
                &ipv4(client4, vip4, 1, 0, &icmp_echo(8, 1, 1, b"ping")),
            ),
            true,
        ),
        (
            "icmp echo to other4",
            eth(
                ETH_IP,
                &ipv4(client4, other4, 1, 0, &icmp_echo(8, 1, 1, b"ping")),
            ),
            false,
        ),
        (
            "udp to vip4:53 with ip options",
            eth(
                ETH_IP,
                &ipv4_opts(client4, vip4, 17, 0, &[1, 1, 1, 0], &udp(1, 53, b"")),
            ),
            true,
        ),
        (
            "802.1Q udp to vip4:53",
            eth_vlan(
                0x8100,
                7,
                ETH_IP,
                &ipv4(client4, vip4, 17, 0, &udp(1, 53, b"")),
            ),
            true,
        ),
        (
            "802.1ad udp to vip4:53",
            eth_vlan(
                0x88a8,
                7,
                ETH_IP,
                &ipv4(client4, vip4, 17, 0, &udp(1, 53, b"")),
            ),
            true,
        ),
        (
            "802.1Q udp to vip4:54",
            eth_vlan(
                0x8100,
                7,
                ETH_IP,
                &ipv4(client4, vip4, 17, 0, &udp(1, 54, b"")),
            ),
            false,
        ),
        (
            "arp request for vip4",
            eth(ETH_ARP, &arp(1, client4, vip4)),
            true,
        ),
        (
            "arp reply to vip4",
            eth(ETH_ARP, &arp(2, client4, vip4)),
            true,
        ),
        (
            "arp request for other4",
            eth(ETH_ARP, &arp(1, client4, other4)),
            false,
        ),
        (
            "arp request for all4 (own all)",
            eth(ETH_ARP, &arp(1, client4, all4)),
            true,
        ),
        (
            "802.1Q arp request for vip4",
            eth_vlan(0x8100, 9, ETH_ARP, &arp(1, client4, vip4)),
            true,
        ),
        (
            "ipv4 non-first fragment to vip4",
            eth(
                ETH_IP,
                &ipv4(client4, vip4, 17, 185, b"middle of a datagram"),
            ),
            true,
        ),
        (
            "ipv4 first fragment to vip4, unclaimed port",
            eth(
                ETH_IP,
                &ipv4(client4, vip4, 17, MF, &udp(1, 9999, b"first")),
            ),
            true,
        ),
        (
            // Bytes that look like port 53 in a non-first fragment are payload, not a header.
            "ipv4 non-first fragment to other4",
            eth(ETH_IP, &ipv4(client4, other4, 17, 185, &udp(1, 53, b""))),
            false,
        ),
        ("tcp to all4:22 (own all)", tcp4(all4, 22), true),
        (
            "ipv4 fragment to all4 (own all)",
            eth(ETH_IP, &ipv4(client4, all4, 6, 100, b"frag")),
            true,
        ),
        ("tcp to vip6:443", tcp6(vip6, 443), true),
        ("tcp to vip6:444", tcp6(vip6, 444), false),
        ("tcp to other6:443", tcp6(other6, 443), false),
        (
            "udp to vip6, any port",
            eth(ETH_IPV6, &ipv6(client6, vip6, 17, &udp(1, 12345, b""))),
            true,
        ),
        (
            "tcp to vip6:443 behind hop-by-hop and destination options",
            eth(
                ETH_IPV6,
                &ipv6(
                    client6,
                    vip6,
                    0,
                    &ipv6_opt_hdr(60, &ipv6_opt_hdr(6, &tcp(1, 443))),
                ),
            ),
            true,
        ),
        (
            "tcp to vip6:444 behind hop-by-hop",
            eth(
                ETH_IPV6,
                &ipv6(client6, vip6, 0, &ipv6_opt_hdr(6, &tcp(1, 444))),
            ),
            false,
        ),
        (
            "ipv6 non-first fragment to vip6",
            eth(
                ETH_IPV6,
                &ipv6(client6, vip6, 44, &ipv6_frag_hdr(6, 100, false, b"tail")),
            ),
            true,
        ),
        (
            "ipv6 first fragment to vip6, unclaimed port",
            eth(
                ETH_IPV6,
                &ipv6(client6, vip6, 44, &ipv6_frag_hdr(6, 0, true, &tcp(1, 444))),
            ),
            true,
        ),
        (
            "ipv6 fragment to other6",
            eth(
                ETH_IPV6,
                &ipv6(client6, other6, 44, &ipv6_frag_hdr(6, 100, false, b"tail")),
            ),
            false,
        ),
        (
            "neighbour solicitation for vip6",
            eth(
                ETH_IPV6,
                &ipv6(client6, solicited_node(vip6), 58, &icmpv6_nd(135, vip6)),
            ),
            true,
        ),
        (
            "neighbour solicitation for other6",
            eth(
                ETH_IPV6,
                &ipv6(client6, solicited_node(other6), 58, &icmpv6_nd(135, other6)),
            ),
            false,
        ),
        (
            "neighbour advertisement to vip6",
            eth(ETH_IPV6, &ipv6(client6, vip6, 58, &icmpv6_nd(136, client6))),
            true,
        ),
        (
            "icmpv6 echo to vip6 (no rule)",
            eth(
                ETH_IPV6,
                &ipv6(client6, vip6, 58, &icmp_echo(128, 1, 1, b"")),
            ),
            false,
        ),
        (
            "802.1Q tcp to vip6:443",
            eth_vlan(0x8100, 3, ETH_IPV6, &ipv6(client6, vip6, 6, &tcp(1, 443))),
            true,
        ),
        ("truncated ipv4", eth(ETH_IP, &[0x45, 0, 0, 20]), false),
        (
            "truncated udp header to vip4 (no port)",
            eth(ETH_IP, &ipv4(client4, vip4, 17, 0, &[0, 1])),
            false,
        ),
        ("truncated vlan tag", eth(0x8100, &[0, 7]), false),
        (
            "unknown ethertype",
            eth(0x88b5, b"local experimental"),
            false,
        ),
    ];
    let mut failures = Vec::new();
    for (name, frame, want) in &cases {
        if claimed(&prog, frame) != *want {
            failures.push(format!(
                "{name}: expected {}",
                if *want { "claimed" } else { "passed" }
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "wrong verdicts:\n{}",
        failures.join("\n")
    );
    let total = prog.stats().expect("stats");
    let want_claimed = cases.iter().filter(|c| c.2).count() as u64;
    assert_eq!(total.claimed, want_claimed);
    assert_eq!(total.passed, cases.len() as u64 - want_claimed);

    // claim_all takes everything, even frames no rule describes.
    let unknown = eth(0x88b5, b"local experimental");
    prog.set_claim_all(true).expect("claim all");
    assert!(claimed(&prog, &unknown));
    assert!(claimed(&prog, &udp4(other4, 1)));
    prog.set_claim_all(false).expect("claim all off");
    assert!(!claimed(&prog, &unknown));
}

#[test]
#[ignore = "needs root"]
fn icmp_errors_to_an_address_are_claimed_only_with_their_flag() {
    require_root();
    let lab = Lab::new();
    let prog = XdpProgram::attach(&lab.host, XdpMode::Skb, false).expect("attach");
    let (router4, vip4) = (v4(60), v4(40));
    let (router6, vip6) = (v6(60), v6(40));
    // What an error quotes: the start of a packet the VIP sent (VIP:80 -> client).
    let quoted4 = ipv4(vip4, v4(1), 6, 0, &tcp(80, 40000));
    let quoted6 = ipv6(vip6, v6(1), 6, &tcp(80, 40000));
    let icmp4 = |kind: u8, code: u8| {
        let mut m = vec![kind, code, 0, 0, 0, 0, 0x05, 0xdc];
        m.extend_from_slice(&quoted4);
        eth(ETH_IP, &ipv4(router4, vip4, 1, 0, &m))
    };
    let icmp6 = |kind: u8| {
        let mut m = vec![kind, 0, 0, 0, 0, 0, 0x05, 0x00];
        m.extend_from_slice(&quoted6);
        eth(ETH_IPV6, &ipv6(router6, vip6, 58, &m))
    };
    let echo4 = eth(
        ETH_IP,
        &ipv4(router4, vip4, 1, 0, &icmp_echo(8, 1, 1, b"ping")),
    );
    let echo6 = eth(
        ETH_IPV6,
        &ipv6(router6, vip6, 58, &icmp_echo(128, 1, 1, b"ping")),
    );
    let errors = [
        icmp4(3, 4),
        icmp4(11, 0),
        icmp4(12, 0),
        icmp6(1),
        icmp6(2),
        icmp6(3),
        icmp6(4),
    ];

    for vip in [IpAddr::V4(vip4), IpAddr::V6(vip6)] {
        prog.own_address(vip, AddrFlags::FRAGS).expect("own");
    }
    for f in &errors {
        assert!(!claimed(&prog, f), "claimed without the flag: {f:02x?}");
    }
    for vip in [IpAddr::V4(vip4), IpAddr::V6(vip6)] {
        prog.own_address(vip, AddrFlags::FRAGS | AddrFlags::ICMP_ERRORS)
            .expect("own");
    }
    for f in &errors {
        assert!(claimed(&prog, f), "not claimed: {f:02x?}");
    }
    assert!(
        !claimed(&prog, &echo4),
        "echo requests stay with the kernel"
    );
    assert!(
        !claimed(&prog, &echo6),
        "echo requests stay with the kernel"
    );
    let to_other = {
        let mut m = vec![3, 4, 0, 0, 0, 0, 0x05, 0xdc];
        m.extend_from_slice(&quoted4);
        eth(ETH_IP, &ipv4(router4, v4(41), 1, 0, &m))
    };
    assert!(
        !claimed(&prog, &to_other),
        "errors to other addresses stay with the kernel"
    );
}

#[test]
#[ignore = "needs root"]
fn rules_can_be_removed_cleared_and_replaced() {
    require_root();
    let lab = Lab::new();
    let prog = XdpProgram::attach(&lab.host, XdpMode::Skb, false).expect("attach");
    let a = IpAddr::V4(v4(40));
    let b = IpAddr::V4(v4(41));
    let dns = Rule {
        addr: a,
        proto: Some(17),
        port: Some(53),
    };
    let own_a = Rule {
        addr: a,
        proto: None,
        port: None,
    };
    let frame_a = eth(ETH_IP, &ipv4(v4(1), v4(40), 17, 0, &udp(1, 53, b"")));
    let frame_a_tcp = eth(ETH_IP, &ipv4(v4(1), v4(40), 6, 0, &tcp(1, 22)));
    let frame_b = eth(ETH_IP, &ipv4(v4(1), v4(41), 17, 0, &udp(1, 53, b"")));

    prog.add_rule(&dns).expect("add");
    assert!(claimed(&prog, &frame_a));
    assert!(!claimed(&prog, &frame_a_tcp));
    assert!(prog.remove_rule(&dns).expect("remove"));
    assert!(!prog.remove_rule(&dns).expect("remove again"));
    assert!(!claimed(&prog, &frame_a));

    // Address flags merge: a rule without protocol adds OWN_ALL, removing it keeps NEIGH.
    prog.own_address(a, AddrFlags::NEIGH).expect("own");
    prog.add_rule(&own_a).expect("own all");
    assert_eq!(
        prog.address_flags(a).expect("flags"),
        AddrFlags::NEIGH | AddrFlags::OWN_ALL
    );
    assert!(claimed(&prog, &frame_a_tcp));
    assert!(prog.remove_rule(&own_a).expect("remove own all"));
    assert_eq!(prog.address_flags(a).expect("flags"), AddrFlags::NEIGH);
    assert!(!claimed(&prog, &frame_a_tcp));
    assert!(prog.disown_address(a).expect("disown"));
    assert_eq!(prog.address_flags(a).expect("flags"), AddrFlags::NONE);

    prog.add_rule(&dns).expect("add");
    prog.own_address(a, AddrFlags::FRAGS).expect("own");
    assert_eq!(prog.rule_count().expect("count"), 2);
    prog.replace_rules(
        &[Rule {
            addr: b,
            proto: Some(17),
            port: Some(53),
        }],
        &[(b, AddrFlags::NEIGH), (b, AddrFlags::FRAGS)],
    )
    .expect("replace");
    assert_eq!(prog.rule_count().expect("count"), 2);
    assert!(!claimed(&prog, &frame_a));
    assert!(claimed(&prog, &frame_b));
    assert_eq!(
        prog.address_flags(b).expect("flags"),
        AddrFlags::NEIGH | AddrFlags::FRAGS
    );
    assert_eq!(prog.address_flags(a).expect("flags"), AddrFlags::NONE);

    prog.clear_rules().expect("clear");
    assert_eq!(prog.rule_count().expect("count"), 0);
    assert!(!claimed(&prog, &frame_b));

    let err = prog
        .add_rule(&Rule {
            addr: a,
            proto: None,
            port: Some(80),
        })
        .expect_err("port without protocol");
    assert!(err.to_string().contains("a port needs a protocol"), "{err}");
}

#[test]
#[ignore = "needs root"]
fn filter_passes_unclaimed_host_traffic_on_the_wire() {
    require_root();
    let lab = Lab::new();
    let prog = XdpProgram::attach(&lab.host, XdpMode::Native, false).expect("attach");
    prog.own_address(IpAddr::V4(lab.host_ip), AddrFlags::NEIGH)
        .expect("own");
    // The peer's ARP request for the host address is claimed (and, with no socket bound, falls back to
    // the kernel); the echo requests are not claimed. Either way the host stack answers.
    let host_ip = lab.host_ip.to_string();
    sh(&[
        "ip",
        "netns",
        "exec",
        lab.ns.name(),
        "ping",
        "-c",
        "2",
        "-i",
        "0.2",
        "-W",
        "2",
        &host_ip,
    ]);
    let st = prog.stats().expect("stats");
    assert!(st.claimed >= 1, "{st:?}");
    assert_eq!(st.redirect_failed, st.claimed, "{st:?}");
    assert!(st.passed >= 2, "{st:?}");
}

// ---- GRE decapsulation ----------------------------------------------------------------------------

fn decap_run(prog: &DecapProgram, frame: &[u8]) -> (Vec<u8>, DecapStats) {
    let before = prog.stats().expect("stats");
    let (ret, out) = prog.test_run(frame).expect("test run");
    let after = prog.stats().expect("stats");
    assert_eq!(ret, XDP_PASS, "decap always passes");
    let d = DecapStats {
        decapped: after.decapped - before.decapped,
        passed: after.passed - before.passed,
        malformed: after.malformed - before.malformed,
    };
    assert_eq!(d.decapped + d.passed + d.malformed, 1, "{d:?}");
    (out, d)
}

const DECAPPED: DecapStats = DecapStats {
    decapped: 1,
    passed: 0,
    malformed: 0,
};
const PASSED: DecapStats = DecapStats {
    decapped: 0,
    passed: 1,
    malformed: 0,
};
const MALFORMED: DecapStats = DecapStats {
    decapped: 0,
    passed: 0,
    malformed: 1,
};

#[test]
#[ignore = "needs root"]
fn decap_strips_gre_and_passes_everything_else_untouched() {
    require_root();
    let lab = Lab::new();
    let local4 = v4(50);
    let local6 = v6(0x50);
    let lb4 = v4(2);
    let lb6 = v6(2);
    let prog = DecapProgram::attach(
        &lab.host,
        XdpMode::Native,
        false,
        &[IpAddr::V4(local4), IpAddr::V6(local6)],
    )
    .expect("attach decap");

    let inner4 = ipv4(v4(100), v4(99), 17, 0, &udp(40000, 80, b"inner v4 payload"));
    let inner6 = ipv6(
        v6(0x100),
        v6(0x99),
        17,
        &udp(40000, 80, b"inner v6 payload"),
    );
    let gre4 = gre(0, ETH_IP, &[], &inner4);
    let gre6 = gre(0, ETH_IPV6, &[], &inner6);
    let expect4 = eth(ETH_IP, &inner4);
    let expect6 = eth(ETH_IPV6, &inner6);

    let decap_cases: Vec<(&str, Vec<u8>, Vec<u8>)> = vec![
        (
            "ipv4 in gre in ipv4",
            eth(ETH_IP, &ipv4(lb4, local4, 47, 0, &gre4)),
            expect4.clone(),
        ),
        (
            "ipv6 in gre in ipv6",
            eth(ETH_IPV6, &ipv6(lb6, local6, 47, &gre6)),
            expect6.clone(),
        ),
        (
            "ipv6 in gre in ipv4",
            eth(ETH_IP, &ipv4(lb4, local4, 47, 0, &gre6)),
            expect6.clone(),
        ),
        (
            "ipv4 in gre in ipv6",
            eth(ETH_IPV6, &ipv6(lb6, local6, 47, &gre4)),
            expect4.clone(),
        ),
        (
            "gre with checksum, key and sequence number",
            eth(
                ETH_IP,
                &ipv4(
                    lb4,
                    local4,
                    47,
                    0,
                    &gre(0xb000, ETH_IP, &[0xaa; 12], &inner4),
                ),
            ),
            expect4.clone(),
        ),
        (
            "gre with key only",
            eth(
                ETH_IPV6,
                &ipv6(lb6, local6, 47, &gre(0x2000, ETH_IPV6, &[7; 4], &inner6)),
            ),
            expect6.clone(),
        ),
        (
            "outer ipv4 with options",
            eth(
                ETH_IP,
                &ipv4_opts(lb4, local4, 47, 0, &[1, 1, 1, 0, 1, 1, 1, 0], &gre4),
            ),
            expect4.clone(),
        ),
        (
            "outer ipv6 with destination options",
            eth(ETH_IPV6, &ipv6(lb6, local6, 60, &ipv6_opt_hdr(47, &gre4))),
            expect4.clone(),
        ),
        (
            "802.1Q tagged",
            eth_vlan(0x8100, 42, ETH_IPV6, &ipv6(lb6, local6, 47, &gre4)),
            eth_vlan(0x8100, 42, ETH_IP, &inner4),
        ),
    ];
    let mut failures = Vec::new();
    for (name, frame, want) in &decap_cases {
        let (out, d) = decap_run(&prog, frame);
        if d != DECAPPED || out != *want {
            failures.push(format!(
                "{name}: {d:?}\n  got  {out:02x?}\n  want {want:02x?}"
            ));
        }
    }

    let untouched_cases: Vec<(&str, Vec<u8>, DecapStats)> = vec![
        (
            "udp to a local address",
            eth(ETH_IP, &ipv4(lb4, local4, 17, 0, &udp(1, 80, b"plain"))),
            PASSED,
        ),
        (
            "gre to another address",
            eth(ETH_IP, &ipv4(lb4, v4(51), 47, 0, &gre4)),
            PASSED,
        ),
        (
            "gre to another ipv6 address",
            eth(ETH_IPV6, &ipv6(lb6, v6(0x51), 47, &gre4)),
            PASSED,
        ),
        ("arp", eth(ETH_ARP, &arp(1, lb4, local4)), PASSED),
        (
            "gre version 1 (pptp)",
            eth(
                ETH_IP,
                &ipv4(lb4, local4, 47, 0, &gre(0x0001, ETH_IP, &[], &inner4)),
            ),
            MALFORMED,
        ),
        (
            "gre with rfc 1701 routing",
            eth(
                ETH_IP,
                &ipv4(lb4, local4, 47, 0, &gre(0x4000, ETH_IP, &[], &inner4)),
            ),
            MALFORMED,
        ),
        (
            "transparent ethernet bridging",
            eth(
                ETH_IP,
                &ipv4(lb4, local4, 47, 0, &gre(0, 0x6558, &[], &expect4)),
            ),
            MALFORMED,
        ),
        (
            "gre header cut short",
            eth(ETH_IP, &ipv4(lb4, local4, 47, 0, &[0, 0])),
            MALFORMED,
        ),
        (
            "key flag without room for the key",
            eth(
                ETH_IP,
                &ipv4(lb4, local4, 47, 0, &gre(0x2000, ETH_IP, &[], &[])),
            ),
            MALFORMED,
        ),
        (
            "outer ipv4 fragment",
            eth(ETH_IP, &ipv4(lb4, local4, 47, MF, &gre4)),
            MALFORMED,
        ),
        (
            "outer ipv6 fragment",
            eth(
                ETH_IPV6,
                &ipv6(lb6, local6, 44, &ipv6_frag_hdr(47, 0, true, &gre4)),
            ),
            MALFORMED,
        ),
        (
            "protocol says ipv4, inner header is ipv6",
            eth(
                ETH_IP,
                &ipv4(lb4, local4, 47, 0, &gre(0, ETH_IP, &[], &inner6)),
            ),
            MALFORMED,
        ),
    ];
    for (name, frame, want) in &untouched_cases {
        let (out, d) = decap_run(&prog, frame);
        if d != *want || out != *frame {
            failures.push(format!(
                "{name}: {d:?}, want {want:?}; changed: {}",
                out != *frame
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "wrong results:\n{}",
        failures.join("\n")
    );

    // Local addresses can be changed at run time.
    let frame = eth(ETH_IP, &ipv4(lb4, local4, 47, 0, &gre4));
    assert!(prog.remove_local_addr(IpAddr::V4(local4)).expect("remove"));
    assert_eq!(decap_run(&prog, &frame), (frame.clone(), PASSED));
    prog.add_local_addr(IpAddr::V4(local4)).expect("add");
    assert_eq!(decap_run(&prog, &frame), (expect4, DECAPPED));
}

#[test]
#[ignore = "needs root"]
fn decapsulated_packets_reach_the_host_stack() {
    require_root();
    let lab = Lab::new();
    let _decap = DecapProgram::attach(
        &lab.host,
        XdpMode::Native,
        false,
        &[IpAddr::V4(lab.host_ip)],
    )
    .expect("attach decap");
    // An ICMP echo request inside GRE, as the load balancer would send it. The host kernel (no GRE
    // module) can only answer if the program took the GRE apart.
    let id = u16::try_from(std::process::id() % 65536).expect("fits");
    let inner = ipv4(
        lab.peer_ip,
        lab.host_ip,
        1,
        0,
        &icmp_echo(8, id, 7, b"through gre"),
    );
    let frame = eth_to(
        lab.host_mac,
        lab.peer_mac,
        ETH_IP,
        &ipv4(
            lab.peer_ip,
            lab.host_ip,
            47,
            0,
            &gre(0, ETH_IP, &[], &inner),
        ),
    );
    let peer = lab.peer.clone();
    let mut sock = lab.in_peer_ns(move || AfPacket::open(&peer).expect("open peer socket"));
    assert_eq!(
        sock.send_batch(&[VecFrame::from_bytes(&frame)])
            .expect("send"),
        1
    );

    let mut frames = vec![VecFrame::from_bytes(&[]); 8];
    let mut got_reply = false;
    for _ in 0..50 {
        if !sock
            .poll_readable(Some(Duration::from_millis(100)))
            .expect("poll")
        {
            continue;
        }
        let n = sock.recv_batch(&mut frames).expect("recv");
        got_reply |= frames[..n].iter().any(|f| {
            let d = f.data();
            // Ethernet + IPv4 (20 bytes, ICMP) + echo reply with our id and sequence number.
            d.len() >= 42
                && d[12..14] == ETH_IP.to_be_bytes()
                && d[23] == 1
                && d[34] == 0
                && d[38..40] == id.to_be_bytes()
                && d[40..42] == 7u16.to_be_bytes()
        });
        if got_reply {
            break;
        }
    }
    assert!(
        got_reply,
        "no echo reply: the GRE packet was not decapsulated"
    );
}

// ---- AF_PACKET ------------------------------------------------------------------------------------

/// A test frame: broadcast, local-experimental ethertype, a marker and a sequence number.
fn marked_frame(src: [u8; 6], marker: u8, seq: u8) -> Vec<u8> {
    let mut payload = vec![marker, seq];
    payload.resize(60 - 14, 0);
    eth_to([0xff; 6], src, 0x88b5, &payload)
}

fn is_marked(f: &[u8], marker: u8) -> Option<u8> {
    (f.len() >= 16 && f[12..14] == [0x88, 0xb5] && f[14] == marker).then_some(f[15])
}

/// Receives frames carrying `marker` until `want` arrived or about 5 s passed; returns their sequence
/// numbers in arrival order.
fn recv_marked(sock: &mut AfPacket, marker: u8, want: usize) -> Vec<u8> {
    let mut frames = vec![VecFrame::from_bytes(&[]); 16];
    let mut seen = Vec::new();
    for _ in 0..50 {
        if seen.len() >= want {
            break;
        }
        if !sock
            .poll_readable(Some(Duration::from_millis(100)))
            .expect("poll")
        {
            continue;
        }
        let n = sock.recv_batch(&mut frames).expect("recv");
        seen.extend(
            frames[..n]
                .iter()
                .filter_map(|f| is_marked(f.data(), marker)),
        );
        assert!(frames[n..].iter().all(|f| f.is_empty()));
    }
    seen
}

#[test]
#[ignore = "needs root"]
fn afpacket_receives_and_sends_batches() {
    require_root();
    let lab = Lab::new();
    let err = AfPacket::open("cne-no-such-if").expect_err("no such netdev");
    assert_eq!(err.to_string(), "netdev cne-no-such-if not found");

    let mut host = AfPacket::open(&lab.host).expect("open host socket");
    assert_eq!(host.ifname(), lab.host);
    let peer_name = lab.peer.clone();
    let mut peer = lab.in_peer_ns(move || AfPacket::open(&peer_name).expect("open peer socket"));

    // Peer -> host: 10 frames in one batch.
    let batch: Vec<VecFrame> = (0..10)
        .map(|i| VecFrame::from_bytes(&marked_frame(lab.peer_mac, 0xa1, i)))
        .collect();
    assert_eq!(peer.send_batch(&batch).expect("send"), 10);
    let seen = recv_marked(&mut host, 0xa1, 10);
    assert_eq!(seen, (0..10).collect::<Vec<u8>>());

    // Host -> peer: the peer interface counts them and the peer socket receives them.
    let rx_before = lab.peer_counter("rx_packets");
    let batch: Vec<VecFrame> = (0..20)
        .map(|i| VecFrame::from_bytes(&marked_frame(lab.host_mac, 0xb2, i)))
        .collect();
    let mut sent = 0;
    for _ in 0..100 {
        if sent == batch.len() {
            break;
        }
        sent += host.send_batch(&batch[sent..]).expect("send");
    }
    assert_eq!(sent, 20);
    let seen = recv_marked(&mut peer, 0xb2, 20);
    assert_eq!(seen, (0..20).collect::<Vec<u8>>());
    assert!(lab.peer_counter("rx_packets") >= rx_before + 20);

    // PACKET_IGNORE_OUTGOING: the host socket never saw its own 20 frames (they were tapped on
    // transmit, before the peer received them, so they would be queued by now).
    let mut frames = vec![VecFrame::from_bytes(&[]); 64];
    let mut own = 0;
    while host.poll_readable(Some(Duration::ZERO)).expect("poll") {
        let n = host.recv_batch(&mut frames).expect("recv");
        if n == 0 {
            break;
        }
        own += frames[..n]
            .iter()
            .filter(|f| is_marked(f.data(), 0xb2).is_some())
            .count();
    }
    assert_eq!(own, 0);

    // A frame larger than the buffer is cut short and counted.
    let mut big = marked_frame(lab.peer_mac, 0xc3, 0);
    big.resize(1000, 0x55);
    assert_eq!(
        peer.send_batch(&[VecFrame::from_bytes(&big)])
            .expect("send"),
        1
    );
    let mut small = vec![VecFrame::new(&[], 0, 100)];
    let mut got = 0;
    for _ in 0..50 {
        if host
            .poll_readable(Some(Duration::from_millis(100)))
            .expect("poll")
            && host.recv_batch(&mut small).expect("recv") == 1
            && is_marked(small[0].data(), 0xc3).is_some()
        {
            got = small[0].len();
            break;
        }
    }
    assert_eq!(got, 100);
    assert!(host.truncated() >= 1);
    let st = host.statistics().expect("statistics");
    assert_eq!(st.drops, 0);
    assert!(st.packets >= 11, "{st:?}");
}

// ---- redirect into a real AF_XDP socket -------------------------------------------------------------

const XDP_REDIRECT: u32 = 4;
const XSK_FRAMES: u32 = 256;
const XSK_FRAME_SIZE: u32 = 2048;

/// A bare AF_XDP socket on queue 0 (libxdp, no program of its own) with a stocked fill ring: enough to
/// see claimed packets arrive, independent of the crate's port layer.
struct TestXsk {
    area: *mut std::ffi::c_void,
    len: usize,
    umem: *mut cne_sys::xsk_umem,
    xsk: *mut cne_sys::xsk_socket,
    // libxdp keeps pointers to the rings: boxed so they never move.
    fill: Box<cne_sys::xsk_ring_prod>,
    comp: Box<cne_sys::xsk_ring_cons>,
    rx: Box<cne_sys::xsk_ring_cons>,
}

impl TestXsk {
    fn new(ifname: &str) -> TestXsk {
        let len = (XSK_FRAMES * XSK_FRAME_SIZE) as usize;
        // SAFETY: anonymous private mapping; no existing memory is affected.
        let area = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(
            area,
            libc::MAP_FAILED,
            "mmap: {}",
            io::Error::last_os_error()
        );
        let mut t = TestXsk {
            area,
            len,
            umem: std::ptr::null_mut(),
            xsk: std::ptr::null_mut(),
            fill: Box::default(),
            comp: Box::default(),
            rx: Box::default(),
        };
        let ucfg = cne_sys::xsk_umem_config {
            fill_size: XSK_FRAMES,
            comp_size: XSK_FRAMES,
            frame_size: XSK_FRAME_SIZE,
            frame_headroom: 0,
            flags: 0,
        };
        // SAFETY: area is a page-aligned mapping of len bytes that outlives the umem (unmapped in Drop
        // after the umem is deleted); the ring structs are boxed and live as long as `t`.
        let rc = unsafe {
            cne_sys::xsk_umem__create(
                &mut t.umem,
                area,
                len as u64,
                &mut *t.fill,
                &mut *t.comp,
                &ucfg,
            )
        };
        assert_eq!(
            rc,
            0,
            "xsk_umem__create: {}",
            io::Error::from_raw_os_error(-rc)
        );
        let mut scfg = cne_sys::xsk_socket_config {
            rx_size: XSK_FRAMES,
            xdp_flags: 0,
            bind_flags: u16::try_from(cne_sys::XDP_COPY).expect("fits"),
            ..Default::default()
        };
        scfg.__bindgen_anon_1.libxdp_flags = cne_sys::XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD;
        let name = std::ffi::CString::new(ifname).expect("name");
        // SAFETY: all pointers are valid for the call; the rx ring is boxed and outlives the socket.
        let rc = unsafe {
            cne_sys::xsk_socket__create(
                &mut t.xsk,
                name.as_ptr(),
                0,
                t.umem,
                &mut *t.rx,
                std::ptr::null_mut(),
                &scfg,
            )
        };
        assert_eq!(
            rc,
            0,
            "xsk_socket__create: {}",
            io::Error::from_raw_os_error(-rc)
        );
        let mut idx = 0u32;
        // SAFETY: the fill ring was set up by xsk_umem__create.
        let n = unsafe { cne_sys::xsk_ring_prod__reserve(&mut *t.fill, XSK_FRAMES, &mut idx) };
        assert_eq!(n, XSK_FRAMES);
        for i in 0..XSK_FRAMES {
            // SAFETY: idx + i is within the reserved range, so the slot is ours to write.
            let slot = unsafe { cne_sys::xsk_ring_prod__fill_addr(&mut *t.fill, idx + i) };
            // SAFETY: slot points into the mapped fill ring.
            unsafe { slot.write(u64::from(i * XSK_FRAME_SIZE)) };
        }
        // SAFETY: publishes exactly the slots reserved and written above.
        unsafe { cne_sys::xsk_ring_prod__submit(&mut *t.fill, XSK_FRAMES) };
        t
    }

    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        // SAFETY: xsk is a live socket created in new().
        let fd = unsafe { cne_sys::xsk_socket__fd(self.xsk) };
        // SAFETY: the descriptor stays open as long as self.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
    }

    /// Copies out the frames waiting on the RX ring.
    fn received(&mut self) -> Vec<Vec<u8>> {
        let mut idx = 0u32;
        // SAFETY: the rx ring was set up by xsk_socket__create.
        let n = unsafe { cne_sys::xsk_ring_cons__peek(&mut *self.rx, XSK_FRAMES, &mut idx) };
        let mut out = Vec::new();
        for i in 0..n {
            // SAFETY: idx + i is within the range peek returned.
            let desc = unsafe { cne_sys::xsk_ring_cons__rx_desc(&*self.rx, idx + i) };
            // SAFETY: desc points to a descriptor slot of the mapped RX ring, owned by us until release.
            let desc = unsafe { desc.read() };
            // SAFETY: the kernel wrote desc.len bytes at desc.addr inside the UMEM area.
            let data = unsafe { cne_sys::xsk_umem__get_data(self.area, desc.addr) };
            // SAFETY: as above; the frame is not handed back to the kernel while it is copied.
            let bytes = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), desc.len as usize) };
            out.push(bytes.to_vec());
        }
        // SAFETY: releases exactly the entries peeked above.
        unsafe { cne_sys::xsk_ring_cons__release(&mut *self.rx, n) };
        out
    }
}

impl Drop for TestXsk {
    fn drop(&mut self) {
        if !self.xsk.is_null() {
            // SAFETY: xsk was created in new() and is deleted once.
            unsafe { cne_sys::xsk_socket__delete(self.xsk) };
        }
        if !self.umem.is_null() {
            // SAFETY: the only socket of the umem was deleted above.
            unsafe { cne_sys::xsk_umem__delete(self.umem) };
        }
        // SAFETY: area/len are the mapping made in new(), no longer used by the kernel.
        unsafe { libc::munmap(self.area, self.len) };
    }
}

#[test]
#[ignore = "needs root"]
fn claimed_traffic_reaches_the_socket_at_its_queue() {
    require_root();
    let lab = Lab::new();
    let prog = XdpProgram::attach(&lab.host, XdpMode::Native, false).expect("attach");
    let host_ip = IpAddr::V4(lab.host_ip);
    // Claim ICMP to the host address; ARP stays with the kernel, so the peer can resolve the address.
    prog.add_rule(&Rule::proto(host_ip, 1)).expect("rule");
    let mut xsk = TestXsk::new(&lab.host);
    prog.insert_socket(0, xsk.fd()).expect("insert socket");

    let echo = eth(
        ETH_IP,
        &ipv4(lab.peer_ip, lab.host_ip, 1, 0, &icmp_echo(8, 1, 1, b"x")),
    );
    let before = prog.stats().expect("stats");
    let (ret, _) = prog.test_run(&echo).expect("test run");
    assert_eq!(ret, XDP_REDIRECT, "a socket is bound at queue 0");
    let after = prog.stats().expect("stats");
    assert_eq!(after.claimed, before.claimed + 1);
    assert_eq!(after.redirect_failed, before.redirect_failed);

    // The echo request goes to the socket, so the host stack never answers it.
    let host = lab.host_ip.to_string();
    let ping = |count: &str| {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                lab.ns.name(),
                "ping",
                "-c",
                count,
                "-W",
                "1",
                &host,
            ])
            .output()
            .expect("run ping")
            .status
            .success()
    };
    assert!(
        !ping("1"),
        "the claimed echo request was answered by the kernel"
    );
    let mut frames = Vec::new();
    for _ in 0..50 {
        frames.extend(xsk.received());
        if !frames.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let icmp_to_host = |f: &Vec<u8>| {
        f.len() >= 35
            && f[12..14] == ETH_IP.to_be_bytes()
            && f[23] == 1
            && f[30..34] == lab.host_ip.octets()
            && f[34] == 8
    };
    assert!(
        frames.iter().any(icmp_to_host),
        "no echo request on the socket: {frames:02x?}"
    );
    let st = prog.stats().expect("stats");
    assert_eq!(st.redirect_failed, before.redirect_failed);

    // Without the socket the claimed traffic falls back to the kernel and ping works again.
    assert!(prog.remove_socket(0).expect("remove"));
    assert!(ping("1"), "ping fails without a socket");
    assert!(prog.stats().expect("stats").redirect_failed > st.redirect_failed);
}

// ---- crash recovery: the bpf_link dies with its process -------------------------------------------

/// Set in a child copy of this test binary: the interface its `hold_a_program_until_killed` attaches to.
const HOLD_ENV: &str = "CNE_XDP_TEST_HOLD_IF";

/// Not a test of its own: in a child started by [`Holder::start`] (the variable above is set), attaches
/// the filter to the named interface and waits to be killed. Elsewhere it returns at once.
#[test]
fn hold_a_program_until_killed() {
    let Ok(ifname) = std::env::var(HOLD_ENV) else {
        return;
    };
    let prog = XdpProgram::attach(&ifname, XdpMode::Native, false).expect("child attach");
    println!("attached {}", prog.prog_id());
    std::thread::sleep(Duration::from_secs(60));
}

/// Another process holding the filter on an interface through its bpf_link.
struct Holder(std::process::Child);

impl Holder {
    fn start(ifname: &str) -> Holder {
        let child = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "hold_a_program_until_killed",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(HOLD_ENV, ifname)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn holder");
        let holder = Holder(child);
        let attached = (0..500).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            sh(&["ip", "-d", "link", "show", "dev", ifname]).contains("prog/xdp")
        });
        assert!(attached, "the holder did not attach within 5 s");
        holder
    }

    fn kill(&mut self) {
        self.0.kill().expect("SIGKILL");
        self.0.wait().expect("reap");
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `ip link` until the interface runs no XDP program; the time it took, or `None` after 2 s.
fn wait_detached(lab: &Lab) -> Option<Duration> {
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        if !lab.link_details().contains("prog/xdp") {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

#[test]
#[ignore = "needs root"]
fn a_killed_process_leaves_no_program_and_the_next_attach_needs_no_force() {
    require_root();
    let lab = Lab::new();
    let mut holder = Holder::start(&lab.host);
    // While its owner lives, the program is foreign: refused without force.
    let err = XdpProgram::attach(&lab.host, XdpMode::Native, false).expect_err("held by another");
    assert!(matches!(err, XdpError::AlreadyAttached { .. }), "{err:?}");
    assert!(err.to_string().contains("(xsk_filter)"), "{err}");

    holder.kill();
    let gone = wait_detached(&lab).expect("the program outlived its killed process");
    eprintln!(
        "SIGKILL: the kernel detached the program {} ms after the process was reaped",
        gone.as_millis()
    );
    let prog = XdpProgram::attach(&lab.host, XdpMode::Native, false).expect("attach without force");
    assert!(lab
        .link_details()
        .contains(&format!("prog/xdp id {}", prog.prog_id())));
    drop(prog);
    assert!(!lab.link_details().contains("prog/xdp"));
}

#[test]
#[ignore = "needs root"]
fn force_detaches_a_foreign_link_and_a_netlink_program() {
    require_root();
    let lab = Lab::new();
    // A link held by another live process.
    let mut holder = Holder::start(&lab.host);
    let prog = XdpProgram::attach(&lab.host, XdpMode::Native, true).expect("forced over a link");
    assert!(lab
        .link_details()
        .contains(&format!("prog/xdp id {}", prog.prog_id())));
    holder.kill();
    // The holder's death does not take our program with it.
    assert!(lab
        .link_details()
        .contains(&format!("prog/xdp id {}", prog.prog_id())));
    drop(prog);
    assert!(!lab.link_details().contains("prog/xdp"));

    // A program attached through netlink (as `ip link` and older loaders do) stays until removed.
    let obj = concat!(env!("OUT_DIR"), "/gre_decap.o");
    sh(&[
        "ip",
        "link",
        "set",
        "dev",
        &lab.host,
        "xdpgeneric",
        "obj",
        obj,
        "sec",
        "xdp",
    ]);
    let err = XdpProgram::attach(&lab.host, XdpMode::Native, false).expect_err("netlink program");
    assert!(err.to_string().contains("(gre_decap) attached"), "{err}");
    assert!(err.to_string().contains("--force"), "{err}");
    let prog = XdpProgram::attach(&lab.host, XdpMode::Native, true).expect("forced over netlink");
    let details = lab.link_details();
    assert!(
        details.contains(&format!("prog/xdp id {}", prog.prog_id()))
            && !details.contains("xdpgeneric"),
        "{details}"
    );
    drop(prog);
    assert!(!lab.link_details().contains("prog/xdp"));
}

// ---- claims as one transaction --------------------------------------------------------------------

/// Kernel id of the `rules` map of the program `prog_id` (read with bpftool).
fn rules_map_id(prog_id: u32) -> u32 {
    let prog: serde_json::Value = serde_json::from_str(&sh(&[
        "bpftool",
        "-j",
        "prog",
        "show",
        "id",
        &prog_id.to_string(),
    ]))
    .expect("bpftool prog json");
    prog["map_ids"]
        .as_array()
        .expect("map_ids")
        .iter()
        .filter_map(serde_json::Value::as_u64)
        .find(|id| {
            let map: serde_json::Value = serde_json::from_str(&sh(&[
                "bpftool",
                "-j",
                "map",
                "show",
                "id",
                &id.to_string(),
            ]))
            .expect("bpftool map json");
            map["name"] == "rules"
        })
        .and_then(|id| u32::try_from(id).ok())
        .expect("no rules map")
}

/// Runs `bpftool batch` on `count` entries of generation 2 (a generation the filter never uses):
/// `update` fills the rules map with them, `delete` removes them again.
fn foreign_entries(map_id: u32, count: usize, op: &str) {
    let mut cmds = String::new();
    for i in 0..count {
        let n = u32::try_from(i).expect("fits").to_be_bytes();
        let key = [
            0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, n[0], n[1], n[2], n[3], 6, 2, 0, 80,
        ];
        let hex: Vec<String> = key.iter().map(|b| format!("{b:02x}")).collect();
        cmds.push_str(&format!("map {op} id {map_id} key hex {}", hex.join(" ")));
        if op == "update" {
            cmds.push_str(" value hex 01 00 00 00");
        }
        cmds.push('\n');
    }
    let path = std::env::temp_dir().join(format!("cne-xdp-batch-{}", std::process::id()));
    std::fs::write(&path, cmds).expect("batch file");
    let out = Command::new("bpftool")
        .args(["batch", "file"])
        .arg(&path)
        .output()
        .expect("bpftool");
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "bpftool batch {op}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "needs root"]
fn claims_switch_as_one_transaction_and_a_failed_stage_changes_nothing() {
    require_root();
    let lab = Lab::new();
    let prog = XdpProgram::attach(&lab.host, XdpMode::Skb, false).expect("attach");
    let a = IpAddr::V4(v4(50));
    let b = IpAddr::V4(v4(51));
    let to_a = eth(ETH_IP, &ipv4(v4(1), v4(50), 17, 0, &udp(1, 53, b"")));
    let to_b = eth(ETH_IP, &ipv4(v4(1), v4(51), 17, 0, &udp(1, 53, b"")));
    let tcp_a = eth(ETH_IP, &ipv4(v4(1), v4(50), 6, 0, &tcp(1, 22)));
    assert_eq!(prog.rule_capacity(), cne::bpf::filter::RULE_CAPACITY);
    prog.replace_rules(&[Rule::port(a, 17, 53)], &[(a, AddrFlags::FRAGS)])
        .expect("first claims");
    assert!(claimed(&prog, &to_a));

    // Staged claims are invisible until the switch; the switch shows all of them at once.
    prog.stage_rules(&[Rule::port(b, 17, 53)], &[(b, AddrFlags::FRAGS)])
        .expect("stage");
    assert!(claimed(&prog, &to_a) && !claimed(&prog, &to_b));
    assert_eq!(prog.inactive_rule_count().expect("count"), 2);
    prog.switch_rules().expect("switch");
    assert!(!claimed(&prog, &to_a) && claimed(&prog, &to_b));
    prog.clear_inactive_rules().expect("clear old");
    assert_eq!(prog.inactive_rule_count().expect("count"), 0);
    assert_eq!(prog.rule_count().expect("count"), 2);

    // More than a generation holds: refused before anything is written, naming limit and count.
    let many: Vec<Rule> = (1..=4096u16).map(|p| Rule::port(a, 6, p)).collect();
    let err = prog
        .stage_rules(&many, &[(a, AddrFlags::FRAGS)])
        .expect_err("4097 entries");
    assert!(
        matches!(
            err,
            XdpError::TooManyRules {
                count: 4097,
                limit: 4096
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("4097") && err.to_string().contains("4096"),
        "{err}"
    );
    assert_eq!(prog.inactive_rule_count().expect("count"), 0);
    // Exactly the capacity fits.
    prog.stage_rules(&many[..4095], &[(a, AddrFlags::FRAGS)])
        .expect("4096 entries fit");
    prog.clear_inactive_rules().expect("clear");

    // A map write that fails half-way (the map is full of someone else's entries) leaves the claims
    // packets see as they were and removes what it wrote.
    let map = rules_map_id(prog.prog_id());
    let free = 2 * cne::bpf::filter::RULE_CAPACITY - prog.rule_count().expect("count");
    foreign_entries(map, free - 100, "update");
    let err = prog
        .stage_rules(&many[..1000], &[(a, AddrFlags::FRAGS)])
        .expect_err("the map is full");
    assert!(
        cne::error_chain(&err).contains("bpf_map_update_elem on rules failed: "),
        "{}",
        cne::error_chain(&err)
    );
    assert_eq!(
        prog.inactive_rule_count().expect("count"),
        0,
        "the failed stage left entries"
    );
    assert_eq!(prog.rule_count().expect("count"), 2);
    assert!(!claimed(&prog, &to_a) && claimed(&prog, &to_b));
    // Once there is room again, the same change goes through.
    foreign_entries(map, free - 100, "delete");
    prog.replace_rules(&many[..1000], &[(a, AddrFlags::FRAGS)])
        .expect("room again");
    assert!(claimed(&prog, &tcp_a) && !claimed(&prog, &to_a) && !claimed(&prog, &to_b));
    assert_eq!(prog.rule_count().expect("count"), 1001);
}
