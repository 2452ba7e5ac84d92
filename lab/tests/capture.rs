//! Hand-made frames go out as given and captures return them byte for byte; through the C
//! forwarder they come back with the Ethernet addresses swapped.

mod common;

use lab::require_root;
use std::path::Path;
use std::time::Duration;

use lab::forwarder::{self, C_L2FWD};
use lab::lab::{DUT_MAC, GEN_MAC};
use lab::{FwdCtx, Lab, Mac};

/// An Ethernet frame of the local-experimental EtherType 0x88b5 with a numbered payload.
fn frame(dst: Mac, src: Mac, n: u8) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend(dst.0);
    f.extend(src.0);
    f.extend([0x88, 0xb5]);
    f.extend(std::iter::repeat_n(n, 50));
    f
}

#[test]
#[ignore = "needs root"]
fn frames_arrive_as_sent() {
    require_root();
    let lab = Lab::new(1).unwrap();
    let cap = lab.dut_if().capture(3, Some("ether proto 0x88b5")).unwrap();
    let sent: Vec<Vec<u8>> = (1..=3).map(|n| frame(DUT_MAC, GEN_MAC, n)).collect();
    lab.gen_if().send_frames(&sent).unwrap();
    let got = cap.finish(Duration::from_secs(5)).unwrap();
    assert_eq!(got, sent);
}

#[test]
#[ignore = "needs root"]
fn l2fwd_swaps_mac_addresses() {
    require_root();
    let lab = Lab::new(1).unwrap();
    let fwd = forwarder::builtin(Path::new("/nonexistent"))
        .into_iter()
        .find(|f| f.name == C_L2FWD)
        .unwrap();
    let ctx = FwdCtx {
        ifname: lab.dut_if().name().to_string(),
        queues: 1,
        cpus: vec![common::ncpus() - 1],
    };
    let mut run = fwd.start(&lab.dut, &ctx).unwrap();
    fwd.wait_ready(&mut run, lab.dut_if(), Duration::from_secs(10))
        .unwrap();

    let cap = lab.gen_if().capture(2, Some("ether proto 0x88b5")).unwrap();
    let sent: Vec<Vec<u8>> = (7..=8).map(|n| frame(DUT_MAC, GEN_MAC, n)).collect();
    lab.gen_if().send_frames(&sent).unwrap();
    let got = cap.finish(Duration::from_secs(5)).unwrap();
    let want: Vec<Vec<u8>> = (7..=8).map(|n| frame(GEN_MAC, DUT_MAC, n)).collect();
    assert_eq!(got, want, "l2fwd stderr: {}", run.proc.stderr());
}

/// A UDP datagram over IPv4 from 198.18.1.1:4000 to 198.18.2.2:80 with `payload` bytes, in a frame.
fn udp_frame(dst: Mac, src: Mac, payload: usize) -> Vec<u8> {
    let udp_len = u16::try_from(8 + payload).unwrap();
    let ip_len = 20 + udp_len;
    let mut f = Vec::with_capacity(14 + usize::from(ip_len));
    f.extend(dst.0);
    f.extend(src.0);
    f.extend([0x08, 0x00, 0x45, 0]);
    f.extend(ip_len.to_be_bytes());
    f.extend([0, 1, 0, 0, 64, 17, 0, 0]);
    f.extend([198, 18, 1, 1, 198, 18, 2, 2]);
    let sum = ip_checksum(&f[14..34]);
    f[24..26].copy_from_slice(&sum.to_be_bytes());
    f.extend([0x0f, 0xa0, 0, 80]);
    f.extend(udp_len.to_be_bytes());
    f.extend([0, 0]);
    f.extend((0..payload).map(|i| i as u8));
    f
}

/// The Internet checksum of `b` (even length).
fn ip_checksum(b: &[u8]) -> u16 {
    let mut s: u32 = b
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// The GRE hairpin, the bench's reference for nf-maglev in GRE mode, does the encapsulation work for
/// real: MACs swapped, the datagram unchanged after a valid outer IPv4 header and a GRE header.
#[test]
#[ignore = "needs root"]
fn the_gre_hairpin_encapsulates_each_datagram() {
    require_root();
    let lab = Lab::new(1).unwrap();
    lab.dut_if()
        .attach_xdp(Path::new(lab::tools::XDP_HAIRPIN_GRE_OBJ), "xdp")
        .unwrap();
    // A veth takes XDP_TX frames from its peer only with NAPI on: the XDP_PASS sink.
    lab.gen_if()
        .attach_xdp(Path::new(lab::tools::XDP_PASS_OBJ), "xdp")
        .unwrap();
    // Only ours: the namespace's own IPv6 (MLD, ND) comes back in GRE too.
    let cap = lab
        .gen_if()
        .capture(2, Some("ip proto 47 and ip[36:4] == 0xc6120101"))
        .unwrap();
    let sent: Vec<Vec<u8>> = [18, 400]
        .iter()
        .map(|&n| udp_frame(DUT_MAC, GEN_MAC, n))
        .collect();
    lab.gen_if().send_frames(&sent).unwrap();
    let got = cap.finish(Duration::from_secs(5)).unwrap();
    lab.dut_if().detach_xdp().unwrap();
    lab.gen_if().detach_xdp().unwrap();
    assert_eq!(got.len(), 2);
    for (g, s) in got.iter().zip(&sent) {
        assert_eq!(g.len(), s.len() + 24, "{g:02x?}");
        assert_eq!(g[..6], GEN_MAC.0);
        assert_eq!(g[6..12], DUT_MAC.0);
        assert_eq!(g[12..14], [0x08, 0x00]);
        let outer = &g[14..34];
        assert_eq!(outer[0], 0x45);
        assert_eq!(
            usize::from(u16::from_be_bytes([outer[2], outer[3]])),
            s.len() - 14 + 24
        );
        assert_eq!(outer[9], 47, "protocol GRE");
        assert_eq!(ip_checksum(outer), 0, "outer checksum of {outer:02x?}");
        assert_eq!(
            g[34..38],
            [0, 0, 0x08, 0x00],
            "GRE without options, IPv4 inside"
        );
        assert_eq!(g[38..], s[14..], "the datagram as sent");
    }
}
