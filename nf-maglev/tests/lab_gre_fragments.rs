//! Datagrams larger than the path over GRE arrive whole: 4000-byte UDP datagrams from a client whose link
//! has the segment's MTU (1500), to the IPv4 and the IPv6 VIP, on the Maglev lab in GRE mode.
//!
//! IPv4: the client's kernel sends each datagram as 1500-byte fragments without DF; once encapsulated they
//! exceed the 1500-byte MTU, so nf-maglev fragments each again (the inner packet) and sends every piece in
//! its own GRE packet; the backend's decap step strips the outer headers and its kernel reassembles the
//! datagram. Every datagram must arrive on its first attempt.
//!
//! IPv6: a router may not fragment, so nf-maglev answers the first too-big fragment with an ICMPv6 packet
//! too big (MTU 1456); the client's kernel then fragments its datagrams to fit, and resends the lost ones
//! when the application does (the client tries each datagram up to three times). Every datagram must
//! arrive whole. Needs root; skipped otherwise.
#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::time::Duration;

use lab::maglev::{self, LabSpec, MaglevLab, Mode, LINK_MTU, VIP4, VIP6};
use lab::wait_for;

const NF_MAGLEV: &str = env!("CARGO_BIN_EXE_nf-maglev");
const DATAGRAMS: u32 = 20;
const SIZE: u32 = 4000;

#[test]
#[ignore = "needs root"]
fn big_datagrams_arrive_whole_over_gre() {
    lab::require_root();
    let _serial = maglev::serial();
    let spec = LabSpec::new(Mode::Gre, NF_MAGLEV).client_mtu(LINK_MTU);
    let mut lab = MaglevLab::build(&spec).unwrap();
    lab.start_lb(0, &[]).unwrap();

    for vip in [IpAddr::V4(VIP4), IpAddr::V6(VIP6)] {
        let results = lab.udp(vip, SIZE, DATAGRAMS, None).unwrap();
        assert_eq!(results.len(), DATAGRAMS as usize);
        let whole = results
            .iter()
            .filter(|r| r.error.is_none() && r.whole && r.len == u64::from(SIZE))
            .count();
        let retried = results.iter().filter(|r| r.attempts > 1).count();
        // Workers publish their counters every 250 ms.
        std::thread::sleep(Duration::from_millis(600));
        let m = lab.metrics(0).unwrap();
        eprintln!(
            "{vip}: {whole} of {DATAGRAMS} {SIZE}-byte datagrams arrived whole ({retried} needed a retry); \
             so far {} packets fragmented into {} GRE packets, {} ICMP too-big sent, {} too_big drops",
            m.sum("nf_maglev_gre_fragmented_packets_total", &[]),
            m.sum("nf_maglev_gre_fragments_total", &[]),
            m.sum("nf_maglev_replies_total", &[("kind", "icmp_too_big")]),
            m.sum("nf_maglev_dropped_packets_total", &[("reason", "too_big")]),
        );
        for r in &results {
            assert!(r.error.is_none(), "{vip} datagram from {}: {r:?}", r.sport);
            assert!(r.whole, "{vip} datagram from {} changed: {r:?}", r.sport);
        }
        if vip.is_ipv4() {
            assert_eq!(retried, 0, "no IPv4 datagram is lost");
        }
    }
    // Two 1500-byte client fragments of each IPv4 datagram were fragmented again: 2 x 20 at least.
    let mut fragmented = 0.0;
    let counted = wait_for(Duration::from_secs(5), || {
        fragmented = lab
            .metrics(0)
            .unwrap()
            .sum("nf_maglev_gre_fragmented_packets_total", &[]);
        fragmented >= f64::from(2 * DATAGRAMS)
    });
    assert!(counted, "{fragmented} packets fragmented");
    let m = lab.metrics(0).unwrap();
    assert!(m.sum("nf_maglev_replies_total", &[("kind", "icmp_too_big")]) >= 1.0);
    assert_eq!(
        m.sum("nf_maglev_dropped_packets_total", &[("reason", "no_frame")]),
        0.0
    );

    assert!(lab.backends_running());
    lab.stop_lb(0).unwrap();
}
