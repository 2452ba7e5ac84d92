//! AF_XDP ports on a real veth pair: frames sent from a peer namespace arrive in `rx_burst`, frames
//! given to `tx_burst` arrive at the peer, UMEM sharing across queues, frame accounting, errors.
//! Root-only tests build their own lab (see `common`) and are `#[ignore = "needs root"]`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use cne::bpf::filter::XdpMode;
use cne::frame::Frame;
use cne::xsk::packet::Packet;
use cne::xsk::poll::{AdaptiveWait, Idle, WaitPolicy};
use cne::xsk::port::{BusyPoll, Port, PortConfig, PortError, XskMapSource, XskSocket};
use cne::xsk::umem::{FramePool, Umem, UmemConfig};
use common::{lab_lock, raw_frame, udp_frame, wait_until, VethLab};

const LIMIT: Duration = Duration::from_secs(5);

fn new_umem(frames: u32, regions: Vec<u32>) -> Arc<Umem> {
    Umem::new(&UmemConfig {
        frame_count: frames,
        regions,
        ..UmemConfig::default()
    })
    .expect("umem")
}

fn small_cfg(ifname: &str, qid: u32) -> PortConfig {
    PortConfig {
        rx_size: 256,
        tx_size: 256,
        ..PortConfig::new(ifname, qid)
    }
}

/// Receives until `n` packets are in `got` or the limit passes.
fn rx_until<'p>(port: &mut Port<'p>, got: &mut Vec<Packet<'p>>, n: usize) -> bool {
    wait_until(LIMIT, || {
        port.rx_burst(got, 64);
        got.len() >= n
    })
}

#[test]
fn missing_netdev_is_a_clear_error() {
    let umem = new_umem(64, vec![]);
    let pool = FramePool::new(&umem, 0).expect("pool");
    let name = format!("cxnone{}", std::process::id());
    let err = Port::open(&PortConfig::new(&name, 0), &pool).expect_err("no such netdev");
    assert!(matches!(err, PortError::NoSuchNetdev(_)), "{err:?}");
    assert_eq!(err.to_string(), format!("netdev {name} not found"));
}

#[test]
fn invalid_ring_size_is_rejected_before_any_syscall() {
    let umem = new_umem(64, vec![]);
    let pool = FramePool::new(&umem, 0).expect("pool");
    let cfg = PortConfig {
        rx_size: 1000,
        ..PortConfig::new("lo", 0)
    };
    let err = Port::open(&cfg, &pool).expect_err("rx_size not a power of two");
    assert!(err.to_string().contains("rx_size 1000"), "{err}");
}

#[test]
#[ignore = "needs root"]
fn qid_beyond_the_queues_is_a_clear_error() {
    let _serial = lab_lock();
    let lab = VethLab::new(1);
    let umem = new_umem(1024, vec![]);
    let pool = FramePool::new(&umem, 0).expect("pool");
    let err = Port::open(&small_cfg(&lab.host, 3), &pool).expect_err("qid 3 on one queue");
    assert_eq!(
        err.to_string(),
        format!("{} has 1 rx queues; qid 3 does not exist", lab.host)
    );
    // Nothing was bound or attached: queue 0 still opens.
    let port = Port::open(&small_cfg(&lab.host, 0), &pool).expect("queue 0");
    assert_eq!(port.qid(), 0);
}

#[test]
#[ignore = "needs root"]
fn rx_burst_receives_the_peers_frames() {
    let _serial = lab_lock();
    let lab = VethLab::new(1);
    let umem = new_umem(1024, vec![]);
    let pool = FramePool::new(&umem, 0).expect("pool");
    let mut port = Port::open(&small_cfg(&lab.host, 0), &pool).expect("port");
    let mode = port.mode();
    assert_eq!(mode.xdp, XdpMode::Native);
    assert!(!mode.zero_copy, "veth is copy mode only");
    assert!(mode.need_wakeup);
    assert_eq!(port.ifname(), lab.host);
    assert!(port.fd() >= 0);
    // The fill ring took 2 x rx_size frames.
    assert_eq!(port.frames_lent(), 512);
    assert_eq!(pool.available(), 1024 - 512);

    let frames: Vec<Vec<u8>> = (0..20u16)
        .map(|i| {
            udp_frame(
                &lab.peer_mac,
                &lab.host_mac,
                1000 + i,
                9,
                format!("cne-rx {i}").as_bytes(),
            )
        })
        .collect();
    lab.send(&frames, None);
    let mut got = Vec::with_capacity(64);
    assert!(
        rx_until(&mut port, &mut got, 20),
        "received {} of 20",
        got.len()
    );
    let mut data: Vec<Vec<u8>> = got.iter().map(|p| p.data().to_vec()).collect();
    data.sort();
    let mut want = frames.clone();
    want.sort();
    assert_eq!(data, want, "frames arrive byte for byte");
    assert!(got.iter().all(|p| p.headroom() >= 256));

    let stats = port.stats().expect("stats");
    assert_eq!(stats.rx_packets, 20);
    assert_eq!(
        stats.rx_bytes,
        frames.iter().map(|f| f.len() as u64).sum::<u64>()
    );
    assert_eq!(stats.kernel.rx_dropped, 0);
    assert_eq!(stats.rx_errors, 0);

    // The fill ring was topped up while the 20 packets are held; dropping them returns the frames.
    assert_eq!(
        pool.available() + port.frames_lent() + got.len(),
        pool.capacity()
    );
    drop(got);
    assert_eq!(pool.available() + port.frames_lent(), pool.capacity());
}

#[test]
#[ignore = "needs root"]
fn tx_burst_reaches_the_peer_and_frames_come_back() {
    let _serial = lab_lock();
    let lab = VethLab::new(1);
    let umem = new_umem(1024, vec![]);
    let pool = FramePool::new(&umem, 0).expect("pool");
    let mut port = Port::open(&small_cfg(&lab.host, 0), &pool).expect("port");
    let before = lab.peer_counter("rx_packets");
    let capture = lab.capture(0x88b5, 32, LIMIT);

    let mut pkts = Vec::with_capacity(64);
    let mut want = Vec::new();
    for seq in 0..32u32 {
        let mut p = port.alloc().expect("free frame");
        let f = raw_frame(&lab.host_mac, &lab.peer_mac, seq, 60 + seq as usize);
        assert!(p.set_len(f.len()));
        p.data_mut().copy_from_slice(&f);
        pkts.push(p);
        want.push(f);
    }
    assert_eq!(port.tx_burst(&mut pkts), 32);
    assert!(pkts.is_empty(), "tx_burst consumes the packets");

    let got = capture.frames();
    assert_eq!(
        got, want,
        "the peer receives every frame, in order, byte for byte"
    );
    assert!(lab.peer_counter("rx_packets") >= before + 32);
    let stats = port.stats().expect("stats");
    assert_eq!((stats.tx_packets, stats.tx_dropped), (32, 0));
    assert!(stats.tx_kicks >= 1, "copy mode needs a kick");
    assert_eq!(stats.kernel.tx_invalid_descs, 0);

    // Completions return the frames: the pool is full again apart from the fill ring.
    assert!(wait_until(LIMIT, || {
        port.tx_burst(&mut pkts);
        port.sw_stats().tx_completed == 32
    }));
    assert_eq!(pool.available() + port.frames_lent(), pool.capacity());
    assert_eq!(port.frames_lent(), 512);
}

#[test]
#[ignore = "needs root"]
fn received_packets_are_echoed_in_place() {
    let _serial = lab_lock();
    let lab = VethLab::new(1);
    let umem = new_umem(1024, vec![]);
    let pool = FramePool::new(&umem, 0).expect("pool");
    let mut port = Port::open(&small_cfg(&lab.host, 0), &pool).expect("port");
    let frames: Vec<Vec<u8>> = (0..8u32)
        .map(|i| raw_frame(&lab.peer_mac, &lab.host_mac, i, 64))
        .collect();
    let capture = lab.capture(0x88b5, 8, LIMIT);
    lab.send(&frames, None);
    let mut pkts = Vec::with_capacity(64);
    assert!(rx_until(&mut port, &mut pkts, 8));
    for p in &mut pkts {
        let d = p.data_mut();
        let (dst, src) = d.split_at_mut(6);
        dst.swap_with_slice(&mut src[..6]);
    }
    assert_eq!(port.tx_burst(&mut pkts), 8);
    let mut got = capture.frames();
    // The capture sees only frames coming in from the host end: the echoes, MACs swapped.
    got.sort();
    let mut want: Vec<Vec<u8>> = frames
        .iter()
        .map(|f| {
            raw_frame(
                &lab.host_mac,
                &lab.peer_mac,
                u32::from_be_bytes([f[20], f[21], f[22], f[23]]),
                64,
            )
        })
        .collect();
    want.sort();
    assert_eq!(got, want);
}

#[test]
#[ignore = "needs root"]
fn ports_on_two_queues_share_one_umem() {
    let _serial = lab_lock();
    let lab = VethLab::new(2);
    let umem = new_umem(2048, vec![1024, 1024]);
    let pool0 = FramePool::new(&umem, 0).expect("region 0");
    let pool1 = FramePool::new(&umem, 1).expect("region 1");
    let mut port0 = Port::open(&small_cfg(&lab.host, 0), &pool0).expect("queue 0");
    let map = port0.xsk_map_fd().expect("libxdp default program map");
    // Queue 1 joins the same program through its map and shares the UMEM.
    let cfg1 = PortConfig {
        xsk_map: XskMapSource::Map(map),
        ..small_cfg(&lab.host, 1)
    };
    let sock1 = XskSocket::open(&cfg1, &umem).expect("queue 1 socket");
    assert!(sock1.mode().shared_umem);
    assert!(!port0.mode().shared_umem);
    assert!(matches!(
        Port::attach(
            sock1,
            &FramePool::new(&new_umem(64, vec![]), 0).expect("other umem")
        ),
        Err(PortError::UmemMismatch { .. })
    ));
    let mut port1 = Port::open(&cfg1, &pool1).expect("queue 1");

    // The packet socket spreads flows over the TX queues by hash; veth delivers TX queue n to RX
    // queue n, so distinct UDP ports reach both queues.
    let frames: Vec<Vec<u8>> = (0..32u16)
        .map(|i| udp_frame(&lab.peer_mac, &lab.host_mac, 2000 + i, 9, b"q"))
        .collect();
    lab.send(&frames, None);
    let (mut got0, mut got1) = (Vec::with_capacity(64), Vec::with_capacity(64));
    assert!(wait_until(LIMIT, || {
        port0.rx_burst(&mut got0, 64);
        port1.rx_burst(&mut got1, 64);
        got0.len() + got1.len() >= 32
    }));
    assert!(
        !got0.is_empty() && !got1.is_empty(),
        "{} / {}",
        got0.len(),
        got1.len()
    );
    let mut sports: Vec<u16> = got0
        .iter()
        .chain(&got1)
        .map(|p| u16::from_be_bytes([p.data()[34], p.data()[35]]))
        .collect();
    sports.sort_unstable();
    assert_eq!(
        sports,
        (2000..2032).collect::<Vec<u16>>(),
        "each frame once"
    );
    assert!(got0.iter().all(|p| p.belongs_to(&pool0)));
    assert!(got1.iter().all(|p| p.belongs_to(&pool1)));

    // A packet of pool 1 cannot leave through port 0 (its completion would feed the wrong pool):
    // it is dropped, counted, and back in its own pool.
    let avail1 = pool1.available();
    let n1 = got1.len();
    assert_eq!(port0.tx_burst(&mut got1), 0);
    assert_eq!(port0.sw_stats().tx_dropped, n1 as u64);
    assert_eq!(pool1.available(), avail1 + n1);
    drop(got0);
    assert_eq!(pool0.available() + port0.frames_lent(), pool0.capacity());
}

#[test]
#[ignore = "needs root"]
fn ports_sharing_a_pool_forward_between_each_other() {
    let _serial = lab_lock();
    let lab = VethLab::new(2);
    let umem = new_umem(2048, vec![]);
    let pool = FramePool::new(&umem, 0).expect("pool");
    let port0 = Port::open(&small_cfg(&lab.host, 0), &pool).expect("queue 0");
    let cfg1 = PortConfig {
        xsk_map: XskMapSource::Map(port0.xsk_map_fd().expect("map")),
        ..small_cfg(&lab.host, 1)
    };
    let mut port1 = Port::open(&cfg1, &pool).expect("queue 1");
    let capture = lab.capture(0x88b5, 4, LIMIT);
    // Built from port 0's pool, sent by port 1.
    let mut pkts = Vec::with_capacity(4);
    for seq in 0..4 {
        let mut p = port0.alloc().expect("frame");
        let f = raw_frame(&lab.host_mac, &lab.peer_mac, seq, 64);
        assert!(p.set_len(f.len()));
        p.data_mut().copy_from_slice(&f);
        pkts.push(p);
    }
    assert_eq!(port1.tx_burst(&mut pkts), 4);
    assert_eq!(capture.frames().len(), 4);
    assert!(wait_until(LIMIT, || {
        port1.tx_burst(&mut pkts);
        port1.sw_stats().tx_completed == 4
    }));
    assert_eq!(
        pool.available() + port0.frames_lent() + port1.frames_lent(),
        pool.capacity()
    );
}

#[test]
#[ignore = "needs root"]
fn dropping_a_port_returns_its_frames_and_detaches_the_program() {
    let _serial = lab_lock();
    let lab = VethLab::new(1);
    let umem = new_umem(1024, vec![]);
    let pool = FramePool::new(&umem, 0).expect("pool");
    {
        let port = Port::open(&small_cfg(&lab.host, 0), &pool).expect("port");
        let link = common::run(&["ip", "link", "show", &lab.host]).expect("ip link");
        assert!(
            link.contains("prog/xdp"),
            "libxdp's program is attached: {link}"
        );
        // A frame the port never reads: the drop must take it back from the RX ring too.
        lab.send(&[raw_frame(&lab.peer_mac, &lab.host_mac, 1, 64)], None);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(pool.available() + port.frames_lent(), pool.capacity());
    }
    assert_eq!(
        pool.available(),
        pool.capacity(),
        "every lent frame is back"
    );
    let link = common::run(&["ip", "link", "show", &lab.host]).expect("ip link");
    assert!(
        !link.contains("xdp"),
        "the default program is detached: {link}"
    );
    // The queue and the region can be used again.
    let port = Port::open(&small_cfg(&lab.host, 0), &pool).expect("reopen");
    assert_eq!(port.frames_lent(), 512);
}

#[test]
#[ignore = "needs root"]
fn idle_worker_sleeps_and_wakes_on_traffic() {
    let _serial = lab_lock();
    let lab = VethLab::new(1);
    let umem = new_umem(1024, vec![]);
    let pool = FramePool::new(&umem, 0).expect("pool");
    let mut port = Port::open(&small_cfg(&lab.host, 0), &pool).expect("port");
    // A sleep this long only ends early if the socket wakes the worker.
    let mut wait = AdaptiveWait::new(WaitPolicy {
        spin: Duration::from_micros(50),
        sleep: Duration::from_secs(60),
    });
    wait.watch(&port);
    let frames: Vec<Vec<u8>> = (0..5u32)
        .map(|i| raw_frame(&lab.peer_mac, &lab.host_mac, i, 64))
        .collect();
    let mut got = Vec::with_capacity(64);
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            lab.send(&frames, None);
        });
        let mut woke = false;
        while got.len() < 5 {
            let n = port.rx_burst(&mut got, 64);
            if let Idle::Slept { ready } = wait.idle(n) {
                assert!(ready, "woken by traffic, not by the 60 s timeout");
                woke = true;
            }
        }
        assert!(woke, "the worker slept while idle");
    });
    assert_eq!(got.len(), 5);
    assert_eq!(wait.stats().timeouts, 0);
}

#[test]
#[ignore = "needs root"]
fn our_xdp_program_feeds_a_port_through_its_map() {
    let _serial = lab_lock();
    let lab = VethLab::new(1);
    let prog = cne::bpf::filter::XdpProgram::attach(&lab.host, XdpMode::Native, false)
        .expect("xsk_filter");
    prog.set_claim_all(true).expect("claim all");
    let umem = new_umem(1024, vec![]);
    let pool = FramePool::new(&umem, 0).expect("pool");
    let cfg = PortConfig {
        xsk_map: XskMapSource::Map(std::os::fd::AsRawFd::as_raw_fd(&prog.xsks_map_fd())),
        ..small_cfg(&lab.host, 0)
    };
    let mut port = Port::open(&cfg, &pool).expect("port on our program's map");
    assert_eq!(port.xsk_map_fd(), None, "no libxdp program involved");
    assert_eq!(port.mode().xdp, XdpMode::Native);
    let frames: Vec<Vec<u8>> = (0..10u32)
        .map(|i| raw_frame(&lab.peer_mac, &lab.host_mac, i, 64))
        .collect();
    lab.send(&frames, None);
    let mut got = Vec::with_capacity(64);
    assert!(rx_until(&mut port, &mut got, 10), "received {}", got.len());
    assert_eq!(got.len(), 10);
    drop(got);
    drop(port);
    // The program is ours: the port left it attached.
    let link = common::run(&["ip", "link", "show", &lab.host]).expect("ip link");
    assert!(link.contains("prog/xdp"), "{link}");
}

#[test]
#[ignore = "needs root"]
fn zero_copy_request_falls_back_to_copy_and_busy_poll_receives() {
    let _serial = lab_lock();
    let lab = VethLab::new(1);
    let umem = new_umem(1024, vec![]);
    let pool = FramePool::new(&umem, 0).expect("pool");
    let cfg = PortConfig {
        zero_copy: true,
        busy_poll: Some(BusyPoll {
            timeout_us: 20,
            budget: 64,
        }),
        ..small_cfg(&lab.host, 0)
    };
    let mut port = Port::open(&cfg, &pool).expect("port");
    let mode = port.mode();
    assert!(
        !mode.zero_copy,
        "veth has no zero-copy: copy mode negotiated"
    );
    assert!(mode.busy_poll);
    assert_eq!(mode.to_string(), "native/copy");
    let frames: Vec<Vec<u8>> = (0..4u32)
        .map(|i| raw_frame(&lab.peer_mac, &lab.host_mac, i, 64))
        .collect();
    lab.send(&frames, None);
    let mut got = Vec::with_capacity(64);
    assert!(rx_until(&mut port, &mut got, 4), "received {}", got.len());
    assert_eq!(got.len(), 4);
}
