//! Cost of the per-packet wire work: `parse_frame` on the frames the data paths see, and the internet
//! checksum over a minimum-size and a full-size frame. Run with `cargo bench -p cne --bench wire`.

use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use cne::wire::{
    checksum, parse_frame, EtherType, EthernetRepr, IpProtocol, Ipv4Repr, Ipv6Repr, MacAddr,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// An Ethernet frame of `len` bytes carrying IPv4 (or IPv6) and a UDP (or TCP) header.
fn frame(len: usize, v6: bool, protocol: IpProtocol) -> Vec<u8> {
    let mut f = vec![0u8; len];
    let eth = EthernetRepr {
        dst: MacAddr([2, 0, 0, 0, 0, 2]),
        src: MacAddr([2, 0, 0, 0, 0, 1]),
        ethertype: if v6 { EtherType::Ipv6 } else { EtherType::Ipv4 },
    };
    let mut at = eth.emit(&mut f).expect("room for Ethernet");
    let ip_payload = if v6 { len - 14 - 40 } else { len - 14 - 20 };
    at += if v6 {
        Ipv6Repr {
            src: Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1),
            dst: Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 2),
            next_header: protocol,
            payload_len: ip_payload as u16,
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0,
        }
        .emit(&mut f[at..])
    } else {
        Ipv4Repr {
            src: Ipv4Addr::new(198, 18, 0, 1),
            dst: Ipv4Addr::new(198, 18, 0, 2),
            protocol,
            payload_len: ip_payload as u16,
            ttl: 64,
            tos: 0,
            ident: 1,
            dont_frag: true,
        }
        .emit(&mut f[at..])
    }
    .expect("room for IP");
    f[at..at + 4].copy_from_slice(&[0x9c, 0x40, 0x00, 0x50]);
    match protocol {
        IpProtocol::Udp => f[at + 4..at + 6].copy_from_slice(&(ip_payload as u16).to_be_bytes()),
        _ => f[at + 12] = 0x50,
    }
    f
}

fn bench_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse_frame");
    for (name, f) in [
        ("ipv4_udp_64", frame(64, false, IpProtocol::Udp)),
        ("ipv6_tcp_64", frame(78, true, IpProtocol::Tcp)),
        ("ipv4_udp_1500", frame(1514, false, IpProtocol::Udp)),
    ] {
        assert!(parse_frame(&f).expect("bench frame parses").has_ports());
        g.throughput(Throughput::Elements(1));
        g.bench_function(name, |b| b.iter(|| parse_frame(black_box(&f))));
    }
    g.finish();
}

fn bench_checksum(c: &mut Criterion) {
    let mut g = c.benchmark_group("checksum");
    for len in [64usize, 1500] {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(format!("data_{len}"), |b| {
            b.iter(|| checksum::data(black_box(&data)))
        });
    }
    g.throughput(Throughput::Elements(1));
    g.bench_function("update_addr_v6", |b| {
        let old = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1).into();
        let new = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 9).into();
        b.iter(|| checksum::update_addr(black_box(0x1234), black_box(&old), black_box(&new)))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(100)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench_parse, bench_checksum
}
criterion_main!(benches);
