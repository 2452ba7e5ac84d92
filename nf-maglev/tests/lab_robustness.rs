//! nf-maglev under bad input, on the Maglev lab (GRE mode).
//!
//! Malformed and truncated frames aimed at the VIP are sent as raw frames from the client's namespace:
//! the XDP filter claims them (they name the VIP, protocol and port), the data plane counts each under
//! `nf_maglev_dropped_packets_total{reason="malformed"}` and drops it, and real connections keep working.
//! A configuration that does not validate is refused by `POST /api/reload` (400, with the reason) and by
//! SIGHUP (logged), the running state keeps serving, and a good file reloads afterwards. ICMP errors
//! quoting the VIP's replies reach the backends through the tunnel. Needs root; skipped otherwise.
#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use lab::maglev::{self, LabSpec, MaglevLab, Mode, Spread, HTTP_PORT, VIP4, VIP6};
use lab::{wait_for, Mac};

const NF_MAGLEV: &str = env!("CARGO_BIN_EXE_nf-maglev");
const COPIES: usize = 10;

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn ether(dst: Mac, src: Mac, ethertype: u16) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend(dst.0);
    f.extend(src.0);
    f.extend(ethertype.to_be_bytes());
    f
}

/// An IPv4 header (valid checksum) claiming `total_len`, followed by `l4` as is.
fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, total_len: u16, l4: &[u8]) -> Vec<u8> {
    let mut h = vec![0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0];
    h[2..4].copy_from_slice(&total_len.to_be_bytes());
    h.extend(src.octets());
    h.extend(dst.octets());
    let c = checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend(l4);
    h
}

/// An IPv6 header claiming `payload_len` of TCP, followed by `l4` as is.
fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, payload_len: u16, l4: &[u8]) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend(payload_len.to_be_bytes());
    h.extend([6, 64]);
    h.extend(src.octets());
    h.extend(dst.octets());
    h.extend(l4);
    h
}

/// A TCP SYN header from port 40000 to the HTTP port (checksum left 0: these frames are dropped by
/// the load balancer before anything would check it).
fn tcp_syn(data_offset_words: u8) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend(40000u16.to_be_bytes());
    t.extend(HTTP_PORT.to_be_bytes());
    t.extend([0, 0, 0, 1, 0, 0, 0, 0]);
    t.push(data_offset_words << 4);
    t.push(0x02);
    t.extend([0xff, 0xff, 0, 0, 0, 0]);
    t
}

/// (what is wrong, frame) for each bad frame aimed at the VIPs.
fn bad_frames(lab: &MaglevLab) -> Vec<(&'static str, Vec<u8>)> {
    let (lb, client) = (lab.lb(0).mac(), lab.client().mac());
    let (c4, c6) = (lab.client().v4(), lab.client().v6());
    let v4 = |ip: Vec<u8>| [ether(lb, client, 0x0800), ip].concat();
    let v6 = |ip: Vec<u8>| [ether(lb, client, 0x86dd), ip].concat();
    let syn = tcp_syn(5);
    vec![
        (
            "IPv4 total length beyond the frame",
            v4(ipv4(c4, VIP4, 1000, &syn)),
        ),
        (
            "IPv4 TCP header cut after the ports",
            v4(ipv4(c4, VIP4, 24, &syn[..4])),
        ),
        (
            "IPv6 payload length beyond the frame",
            v6(ipv6(c6, VIP6, 200, &syn)),
        ),
        (
            "IPv6 TCP header cut after 8 bytes",
            v6(ipv6(c6, VIP6, 8, &syn[..8])),
        ),
        (
            "IPv4 TCP data offset below 5 words",
            v4(ipv4(c4, VIP4, 40, &tcp_syn(2))),
        ),
    ]
}

/// `n` ICMP "fragmentation needed" messages to the VIP, each quoting a reply of the VIP's HTTP port to
/// another client port, sent from the client's address as a router on the way would.
fn icmp_errors(lab: &MaglevLab, n: u16) -> Vec<Vec<u8>> {
    let (lb, client) = (lab.lb(0).mac(), lab.client().mac());
    let c4 = lab.client().v4();
    (0..n)
        .map(|i| {
            let mut reply = vec![0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0];
            reply.extend(VIP4.octets());
            reply.extend(c4.octets());
            reply.extend(HTTP_PORT.to_be_bytes());
            reply.extend((41000 + i).to_be_bytes());
            reply.extend([0, 0, 0, 1]);
            let mut icmp = vec![3, 4, 0, 0, 0, 0, 0x05, 0x78];
            icmp.extend(&reply);
            let c = checksum(&icmp);
            icmp[2..4].copy_from_slice(&c.to_be_bytes());
            let mut ip = ipv4(c4, VIP4, (20 + icmp.len()) as u16, &icmp);
            // ipv4() writes protocol 6: make it ICMP and fix the header checksum.
            ip[9] = 1;
            ip[10..12].copy_from_slice(&[0, 0]);
            let c = checksum(&ip[..20]);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            [ether(lb, client, 0x0800), ip].concat()
        })
        .collect()
}

fn malformed(lab: &MaglevLab) -> f64 {
    lab.metrics(0).unwrap().sum(
        "nf_maglev_dropped_packets_total",
        &[("reason", "malformed")],
    )
}

fn serves(lab: &MaglevLab, spec: &LabSpec, what: &str) {
    let spread = Spread::of(&lab.tcp_conns(IpAddr::V4(VIP4), 200, 32, None).unwrap());
    assert_eq!(spread.failed, 0, "{what}:\n{spread}");
    spread.check_weights(&spec.backends, 5.0).unwrap();
    let v6 = Spread::of(&lab.tcp_conns(IpAddr::V6(VIP6), 50, 16, None).unwrap());
    assert_eq!(v6.failed, 0, "{what} (IPv6):\n{v6}");
}

fn state(lab: &MaglevLab) -> serde_json::Value {
    serde_json::from_str(&lab.admin_ok(0, "GET", "/api/state", None).unwrap()).unwrap()
}

#[test]
#[ignore = "needs root"]
fn malformed_frames_and_bad_reloads() {
    lab::require_root();
    let _serial = maglev::serial();
    let spec = LabSpec::new(Mode::Gre, NF_MAGLEV);
    let mut lab = MaglevLab::build(&spec).unwrap();
    lab.start_lb(0, &[]).unwrap();
    serves(&lab, &spec, "before any bad input");

    // Malformed frames: each kind counted on its own, so a miss names the frame.
    for (what, frame) in bad_frames(&lab) {
        let before = malformed(&lab);
        lab.send_from_client(&vec![frame; COPIES]).unwrap();
        let mut now = before;
        let counted = wait_for(Duration::from_secs(5), || {
            now = malformed(&lab);
            now >= before + COPIES as f64
        });
        assert!(
            counted,
            "{what}: malformed drops went from {before} to {now}, expected +{COPIES}"
        );
        assert_eq!(
            now,
            before + COPIES as f64,
            "{what}: counted more than sent"
        );
    }
    assert!(lab.lb_running(0), "nf-maglev died on malformed frames");
    serves(&lab, &spec, "after malformed frames");

    // ICMP errors about packets the VIP sent (as a router on the way back to the client would send
    // "fragmentation needed"): claimed by the filter, counted, tunnelled to backends, decapsulated there.
    let decapped = |lab: &MaglevLab| -> u64 {
        (0..spec.backends.len())
            .map(|i| lab.decapped(i).unwrap_or(0))
            .sum()
    };
    // The backends' decap counters are printed once a second: wait until they stop moving after the
    // connections above, so that what comes next counts only the errors.
    let mut before = decapped(&lab);
    let settled = wait_for(Duration::from_secs(10), || {
        std::thread::sleep(Duration::from_millis(1500));
        let now = decapped(&lab);
        std::mem::replace(&mut before, now) == now
    });
    assert!(settled, "the backends' decap counters kept moving");
    let errors = icmp_errors(&lab, 30);
    lab.send_from_client(&errors).unwrap();
    let seen = wait_for(Duration::from_secs(10), || {
        lab.metrics(0)
            .unwrap()
            .sum("nf_maglev_icmp_errors_total", &[])
            >= 30.0
            && decapped(&lab) >= before + 30
    });
    assert!(
        seen,
        "ICMP errors: {} counted by the load balancer, {} decapsulated by the backends (+30 expected)",
        lab.metrics(0).unwrap().sum("nf_maglev_icmp_errors_total", &[]),
        decapped(&lab) - before
    );

    // A bad reload through the API: refused with the reason, nothing changes.
    let good = std::fs::read_to_string(lab.config_path(0)).unwrap();
    let mut bad = lab.config(0);
    bad["maglev"]["table_size"] = 65536.into();
    lab.write_config(0, &serde_json::to_string_pretty(&bad).unwrap())
        .unwrap();
    let generation = state(&lab)["generation"].clone();
    let (code, body) = lab.admin(0, "POST", "/api/reload", None).unwrap();
    assert_eq!(code, 400, "bad reload: {body}");
    assert!(
        body.contains("table_size"),
        "the reason names the key: {body}"
    );
    let after = state(&lab);
    assert_eq!(
        after["generation"], generation,
        "a refused reload changed the state"
    );
    serves(&lab, &spec, "after a refused API reload");

    // The same file through SIGHUP: logged, refused, still serving.
    let rejected = after["reloads"]["rejected"].as_u64().unwrap();
    lab.sighup_lb(0).unwrap();
    let logged = wait_for(Duration::from_secs(10), || {
        state(&lab)["reloads"]["rejected"].as_u64() == Some(rejected + 1)
    });
    assert!(logged, "SIGHUP with a bad file was not counted as rejected");
    assert!(
        lab.lb_log(0).contains("table_size"),
        "the log names the problem:\n{}",
        lab.lb_log(0)
    );
    assert_eq!(state(&lab)["generation"], generation);
    assert!(lab.lb_running(0));
    serves(&lab, &spec, "after a refused SIGHUP reload");

    // The good file again: accepted.
    lab.write_config(0, &good).unwrap();
    let (code, body) = lab.admin(0, "POST", "/api/reload", None).unwrap();
    assert_eq!(code, 200, "good reload: {body}");
    serves(&lab, &spec, "after a good reload");
    lab.stop_lb(0).unwrap();
}
