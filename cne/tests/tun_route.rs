//! A TUN device with fwmark routing into it, addresses on it, and the transmit-only packet socket,
//! each in a fresh network namespace: marked TCP sockets of the kernel's stack send their SYNs into
//! the TUN, rules are idempotent and go with `Drop`, the device goes with its descriptor, frames of
//! the `Sender` reach a veth peer. Root-only tests are `#[ignore = "needs root"]`.

mod common;

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use cne::afpacket::Sender;
use cne::sys::route::{self, Family, MarkRoute};
use cne::sys::tun::Tun;
use common::{lab_lock, raw_frame, VethLab};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

const MARK: u32 = 0x4e4d;
const TABLE: u32 = 4242;
const PRIORITY: u32 = 100;
const TUN: &str = "hc0";

const LOCAL4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const LOCAL6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 1);
const VIP4: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 1);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x100);

/// A fresh namespace with a veth pair inside it whose end `a` holds [`LOCAL4`]/24 and [`LOCAL6`]/64,
/// both ends up. Field order is drop order: the pair, then the namespace.
struct NsLab {
    pair: lab::VethPair,
    ns: lab::Netns,
}

impl NsLab {
    fn new() -> Self {
        lab::require_root();
        let ns = lab::Netns::new("hc").expect("lab namespace");
        let pair = lab::VethPair::new(&ns, &ns, 1).expect("veth pair");
        let lab = NsLab { pair, ns };
        let (a, b) = (lab.pair.a(), lab.pair.b());
        a.add_addr(LOCAL4.into(), 24).expect("IPv4 address");
        a.add_addr(LOCAL6.into(), 64).expect("IPv6 address");
        a.up().expect("end a up");
        b.up().expect("end b up");
        lab
    }

    /// Runs `f` on a thread that has entered the namespace (devices and sockets it makes are there).
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.ns.run(f)
    }

    /// `ip -n NS args...`.
    fn ip(&self, args: &[&str]) -> String {
        self.ns
            .ip(args)
            .unwrap_or_else(|e| panic!("ip {args:?}: {e:#}"))
    }

    /// The rules of `family` that send [`MARK`] to [`TABLE`].
    fn mark_rules(&self, family: &str) -> usize {
        let wanted = format!("fwmark {MARK:#x} lookup {TABLE}");
        self.ip(&[family, "rule", "show"])
            .lines()
            .filter(|l| l.contains(&wanted))
            .count()
    }
}

/// A TUN device set up with a mark route into it, in the calling (namespace) thread.
fn tun_with_mark_route() -> (Tun, MarkRoute) {
    let tun = Tun::create(TUN).expect("creating the TUN device");
    assert_eq!(tun.name(), TUN);
    tun.set_up(1500).expect("setting the TUN device up");
    let route = MarkRoute::install(MARK, TABLE, PRIORITY, tun.ifindex()).expect("mark route");
    assert_eq!(route.families(), [Family::V4, Family::V6]);
    (tun, route)
}

/// Waits for the TUN device to be readable, up to what is left of `deadline`.
fn wait_readable(tun: &Tun, deadline: Instant) -> bool {
    let left = deadline.saturating_duration_since(Instant::now());
    let mut pfd = libc::pollfd {
        fd: tun.as_fd().as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: pfd is one live pollfd for the call.
    let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
    rc > 0
}

/// Source, destination, destination port and TCP flags of an IPv4 or IPv6 TCP packet.
fn tcp_of(pkt: &[u8]) -> Option<(IpAddr, IpAddr, u16, u8)> {
    let (src, dst, tcp): (IpAddr, IpAddr, &[u8]) = match pkt.first()? >> 4 {
        4 => {
            let ihl = usize::from(pkt[0] & 0xf) * 4;
            if pkt.len() < ihl + 20 || pkt[9] != 6 {
                return None;
            }
            let a = |i: usize| Ipv4Addr::new(pkt[i], pkt[i + 1], pkt[i + 2], pkt[i + 3]);
            (a(12).into(), a(16).into(), &pkt[ihl..])
        }
        6 => {
            if pkt.len() < 60 || pkt[6] != 6 {
                return None;
            }
            let a = |i: usize| {
                let b: [u8; 16] = pkt[i..i + 16].try_into().expect("16 bytes");
                Ipv6Addr::from(b)
            };
            (a(8).into(), a(24).into(), &pkt[40..])
        }
        _ => return None,
    };
    Some((src, dst, u16::from_be_bytes([tcp[2], tcp[3]]), tcp[13]))
}

/// Connects a marked TCP socket bound to `local` to `remote` without waiting, and returns the
/// first TCP packet read from `tun` within 2 s (source, destination, port, flags), with the socket.
fn marked_syn(
    tun: &Tun,
    local: IpAddr,
    remote: SocketAddr,
) -> (Option<(IpAddr, IpAddr, u16, u8)>, Socket) {
    let domain = Domain::for_address(remote);
    let sock = Socket::new(domain, Type::STREAM, Some(Protocol::TCP)).expect("tcp socket");
    sock.set_mark(MARK).expect("SO_MARK");
    sock.set_nonblocking(true).expect("non-blocking");
    sock.bind(&SockAddr::from(SocketAddr::new(local, 0)))
        .expect("binding the local address");
    match sock.connect(&SockAddr::from(remote)) {
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        other => panic!("connect to {remote}: {other:?}"),
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut buf = [0u8; 2048];
    while wait_readable(tun, deadline) {
        match tun.read(&mut buf) {
            Ok(n) => {
                if let Some(tcp) = tcp_of(&buf[..n]) {
                    return (Some(tcp), sock);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("reading the TUN device: {e}"),
        }
    }
    (None, sock)
}

const SYN: u8 = 0x02;

#[test]
#[ignore = "needs root"]
fn marked_syns_of_the_kernel_stack_arrive_on_the_tun() {
    let lab = NsLab::new();
    lab.run(|| {
        let (tun, _route) = tun_with_mark_route();
        let mut buf = [0u8; 2048];
        // Nothing of the kernel's own (no link-local address, so no router solicitation).
        let e = tun.read(&mut buf).expect_err("nothing waiting yet");
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);

        let pairs: [(IpAddr, IpAddr); 2] =
            [(LOCAL4.into(), VIP4.into()), (LOCAL6.into(), VIP6.into())];
        for (local, vip) in pairs {
            let (got, _sock) = marked_syn(&tun, local, SocketAddr::new(vip, 80));
            let (src, dst, port, flags) =
                got.unwrap_or_else(|| panic!("no SYN to {vip} on the TUN within 2 s"));
            assert_eq!((src, dst, port), (local, vip, 80));
            assert_eq!(flags & 0x17, SYN, "SYN alone: {flags:#x}");
        }
    });
}

#[test]
#[ignore = "needs root"]
fn unmarked_sockets_do_not_use_the_tun() {
    let lab = NsLab::new();
    lab.run(|| {
        let (tun, _route) = tun_with_mark_route();
        let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
        sock.set_nonblocking(true).expect("non-blocking");
        sock.bind(&SockAddr::from(SocketAddr::new(LOCAL4.into(), 0)))
            .expect("bind");
        // No route for it in the main table: refused at once, nothing on the TUN.
        let r = sock.connect(&SockAddr::from(SocketAddr::new(VIP4.into(), 80)));
        assert_eq!(
            r.expect_err("no route").raw_os_error(),
            Some(libc::ENETUNREACH)
        );
        assert!(!wait_readable(
            &tun,
            Instant::now() + Duration::from_millis(200)
        ));
    });
}

#[test]
#[ignore = "needs root"]
fn rules_are_idempotent_and_go_with_drop_and_the_device_with_its_descriptor() {
    let lab = NsLab::new();
    let tun = lab.run(|| {
        let tun = Tun::create(TUN).expect("TUN");
        tun.set_up(1400).expect("up");
        // An earlier process that died left its rules behind.
        let stale = MarkRoute::install(MARK, TABLE, PRIORITY, tun.ifindex()).expect("first");
        std::mem::forget(stale);
        tun
    });
    assert_eq!(lab.mark_rules("-4"), 1);
    assert_eq!(lab.mark_rules("-6"), 1);
    let link = lab.ip(&["link", "show", "dev", TUN]);
    assert!(link.contains("mtu 1400") && link.contains(",UP"), "{link}");
    assert!(!lab.ip(&["-6", "addr", "show", "dev", TUN]).contains("fe80"));

    let ifindex = tun.ifindex();
    let route = lab.run(move || MarkRoute::install(MARK, TABLE, PRIORITY, ifindex).expect("again"));
    assert_eq!(
        lab.mark_rules("-4"),
        1,
        "{}",
        lab.ip(&["-4", "rule", "show"])
    );
    assert_eq!(
        lab.mark_rules("-6"),
        1,
        "{}",
        lab.ip(&["-6", "rule", "show"])
    );
    let routes = lab.ip(&["-4", "route", "show", "table", &TABLE.to_string()]);
    assert!(routes.contains(&format!("default dev {TUN}")), "{routes}");
    let routes = lab.ip(&["-6", "route", "show", "table", &TABLE.to_string()]);
    assert!(routes.contains(&format!("default dev {TUN}")), "{routes}");

    lab.run(move || drop(route));
    assert_eq!(lab.mark_rules("-4"), 0);
    assert_eq!(lab.mark_rules("-6"), 0);

    // Installed again and removed explicitly.
    let route = lab.run(move || MarkRoute::install(MARK, TABLE, PRIORITY, ifindex).expect("third"));
    assert_eq!(lab.mark_rules("-4"), 1);
    lab.run(move || route.remove().expect("remove"));
    assert_eq!(lab.mark_rules("-4"), 0);
    assert_eq!(lab.mark_rules("-6"), 0);

    assert!(lab.ns.links().expect("links").iter().any(|l| l == TUN));
    drop(tun);
    assert!(!lab.ns.links().expect("links").iter().any(|l| l == TUN));
}

#[test]
#[ignore = "needs root"]
fn addresses_are_added_to_the_tun_and_deleted() {
    let lab = NsLab::new();
    let tun = lab.run(|| {
        let tun = Tun::create(TUN).expect("TUN");
        tun.set_up(1500).expect("up");
        route::add_address(tun.ifindex(), VIP4.into(), 32).expect("IPv4 address");
        route::add_address(tun.ifindex(), VIP6.into(), 128).expect("IPv6 address");
        // Adding again is no error.
        route::add_address(tun.ifindex(), VIP4.into(), 32).expect("IPv4 address again");
        assert!(tun.is_up().expect("flags"));
        // Ensuring tells whether it added.
        let ensure = |a: IpAddr, len| route::ensure_address(tun.ifindex(), a, len).expect("ensure");
        assert!(!ensure(VIP4.into(), 32));
        assert!(ensure(Ipv4Addr::new(198, 18, 100, 2).into(), 32));
        assert!(!ensure(Ipv4Addr::new(198, 18, 100, 2).into(), 32));
        // The IPv4 local route comes with the address, and goes once.
        assert!(route::del_local_route(tun.ifindex(), VIP4.into()).expect("local route"));
        assert!(!route::del_local_route(tun.ifindex(), VIP4.into()).expect("no local route"));
        route::del_address(tun.ifindex(), Ipv4Addr::new(198, 18, 100, 2).into(), 32)
            .expect("deleting the second address");
        tun
    });
    let shown = lab.ip(&["addr", "show", "dev", TUN]);
    assert!(shown.contains("inet 198.18.100.1/32"), "{shown}");
    assert!(shown.contains("inet6 2001:2::100/128"), "{shown}");
    assert!(!shown.contains("tentative"), "{shown}");

    let ifindex = tun.ifindex();
    lab.run(move || {
        route::del_address(ifindex, VIP4.into(), 32).expect("deleting IPv4");
        route::del_address(ifindex, VIP6.into(), 128).expect("deleting IPv6");
        let e = route::del_address(ifindex, VIP4.into(), 32).expect_err("already gone");
        assert_eq!(e.raw_os_error(), Some(libc::EADDRNOTAVAIL));
        assert!(
            e.to_string()
                .contains("deleting the address 198.18.100.1/32"),
            "{e}"
        );
    });
    let shown = lab.ip(&["addr", "show", "dev", TUN]);
    assert!(
        !shown.contains("198.18.100.1") && !shown.contains("2001:2::100"),
        "{shown}"
    );
    drop(tun);
}

#[test]
#[ignore = "needs root"]
fn sender_frames_reach_the_peer_and_nothing_is_received() {
    let _serial = lab_lock();
    let lab = VethLab::new(1);
    let sender = Sender::open(&lab.host).expect("sender");
    assert_eq!(sender.ifname(), lab.host);
    let capture = lab.capture(0x88b5, 3, Duration::from_secs(3));
    let frames: Vec<Vec<u8>> = (0..3)
        .map(|i| raw_frame(&lab.host_mac, &lab.peer_mac, i, 64))
        .collect();
    for f in &frames {
        sender.send(f).expect("send");
    }
    let got = capture.frames();
    assert_eq!(got, frames);

    // Frames arriving on the interface are not queued on the sender.
    lab.send(&frames, None);
    let mut pfd = libc::pollfd {
        fd: sender.as_fd().as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: pfd is one live pollfd for the call.
    let rc = unsafe { libc::poll(&mut pfd, 1, 100) };
    assert_eq!(rc, 0, "the transmit-only socket received something");

    let e = sender.send(&[0u8; 10]).expect_err("short frame");
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn missing_interface_is_a_clear_error() {
    let name = format!("hcnone{}", std::process::id() % 10000);
    let e = Sender::open(&name).expect_err("no such netdev");
    assert_eq!(e.to_string(), format!("netdev {name} not found"));
}
