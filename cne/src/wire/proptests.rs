//! Property tests across the wire layer: no parser or checked accessor panics on arbitrary bytes, the
//! frame parser's offsets always lie inside the frame, and emitted headers parse back to what was
//! emitted.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;

/// Calls every getter of every view that accepts `b`; returns how many views accepted it.
fn read_all(b: &[u8]) -> usize {
    let mut accepted = 0;
    if let Ok(p) = EthernetFrame::new_checked(b) {
        accepted += 1;
        let _ = (p.dst_addr(), p.src_addr(), p.ethertype(), p.payload());
    }
    if let Ok(p) = VlanTag::new_checked(b) {
        accepted += 1;
        let _ = (
            p.tci(),
            p.pcp(),
            p.dei(),
            p.vid(),
            p.ethertype(),
            p.payload(),
        );
    }
    if let Ok(p) = ArpPacket::new_checked(b) {
        accepted += 1;
        let _ = ArpRepr::parse(&p);
    }
    if let Ok(p) = Ipv4Packet::new_checked(b) {
        accepted += 1;
        let _ = (
            p.version(),
            p.header_len(),
            p.dscp(),
            p.ecn(),
            p.total_len(),
            p.ident(),
        );
        let _ = (
            p.dont_frag(),
            p.more_frags(),
            p.frag_offset(),
            p.fragment(),
            p.ttl(),
        );
        let _ = (
            p.protocol(),
            p.checksum(),
            p.src_addr(),
            p.dst_addr(),
            p.options(),
        );
        let _ = (p.payload(), p.verify_checksum(), Ipv4Repr::parse(&p));
    }
    if let Ok(p) = Ipv6Packet::new_checked(b) {
        accepted += 1;
        let _ = (
            p.version(),
            p.traffic_class(),
            p.flow_label(),
            p.payload_len(),
        );
        let _ = (
            p.next_header(),
            p.hop_limit(),
            p.src_addr(),
            p.dst_addr(),
            p.payload(),
        );
        let _ = (p.upper_layer(), Ipv6Repr::parse(&p));
    }
    if let Ok(p) = Ipv6ExtHeader::new_checked(b) {
        accepted += 1;
        let _ = (
            p.next_header(),
            p.header_len(),
            p.routing_type(),
            p.segments_left(),
        );
        let _ = (p.data(), p.payload());
    }
    if let Ok(p) = Ipv6FragmentHeader::new_checked(b) {
        accepted += 1;
        let _ = (
            p.next_header(),
            p.frag_offset(),
            p.more_frags(),
            p.ident(),
            p.info(),
            p.payload(),
        );
    }
    let (s6, d6) = (Ipv6Addr::LOCALHOST, Ipv6Addr::UNSPECIFIED);
    if let Ok(p) = Icmpv4Packet::new_checked(b) {
        accepted += 1;
        let _ = (
            p.msg_type(),
            p.code(),
            p.type_code(),
            p.checksum(),
            p.echo_ident(),
        );
        let _ = (
            p.echo_seq(),
            p.next_hop_mtu(),
            p.data(),
            p.verify_checksum(),
        );
    }
    if let Ok(p) = Icmpv6Packet::new_checked(b) {
        accepted += 1;
        let _ = (
            p.msg_type(),
            p.code(),
            p.type_code(),
            p.checksum(),
            p.echo_ident(),
        );
        let _ = (p.echo_seq(), p.mtu(), p.data(), p.verify_checksum(&s6, &d6));
    }
    if let Ok(p) = NdpNeighbor::new_checked(b) {
        accepted += 1;
        let _ = (
            p.msg_type(),
            p.code(),
            p.checksum(),
            p.flags(),
            p.target_addr(),
        );
        let _ = (
            p.options().count(),
            p.source_link_addr(),
            p.target_link_addr(),
        );
        let _ = p.verify_checksum(&s6, &d6);
    }
    let (s4, d4) = (IpAddr::from([198, 18, 0, 1]), IpAddr::from([198, 18, 0, 2]));
    if let Ok(p) = UdpPacket::new_checked(b) {
        accepted += 1;
        let _ = (
            p.src_port(),
            p.dst_port(),
            p.length(),
            p.checksum(),
            p.payload(),
        );
        let _ = (
            p.verify_checksum(&s4, &d4),
            p.verify_checksum(&s4, &IpAddr::V6(s6)),
        );
    }
    if let Ok(p) = TcpPacket::new_checked(b) {
        accepted += 1;
        let _ = (
            p.src_port(),
            p.dst_port(),
            p.seq_number(),
            p.ack_number(),
            p.header_len(),
        );
        let _ = (
            p.flags(),
            p.window_len(),
            p.checksum(),
            p.urgent_at(),
            p.options(),
        );
        let _ = (p.payload(), p.verify_checksum(&s4, &d4));
    }
    if let Ok(p) = GrePacket::new_checked(b) {
        accepted += 1;
        let _ = (
            p.checksum_present(),
            p.key_present(),
            p.seq_present(),
            p.protocol(),
        );
        let _ = (p.header_len(), p.checksum(), p.key(), p.seq(), p.payload());
        let _ = (p.verify_checksum(), GreRepr::parse(&p));
    }
    accepted
}

/// Calls the setters and in-place rewrites of every view that accepts a copy of `b`.
fn write_all(b: &[u8], v16: u16, v32: u32) {
    let [_, v8] = v16.to_be_bytes();
    let a4 = Ipv4Addr::from(v32);
    let a6 = Ipv6Addr::from(u128::from(v32) << 64);
    let mut buf = b.to_vec();
    if let Ok(mut p) = EthernetFrame::new_checked(&mut buf[..]) {
        p.swap_addrs();
        p.set_ethertype(EtherType::from(v16));
        let _ = p.payload_mut();
    }
    let mut buf = b.to_vec();
    if let Ok(mut p) = Ipv4Packet::new_checked(&mut buf[..]) {
        let _ = p.set_total_len(v16);
        p.rewrite_ttl(v8);
        p.rewrite_src_addr(a4);
        p.rewrite_dst_addr(a4);
        p.swap_addrs();
        p.set_fragment(true, true, v16);
        p.fill_checksum();
        let _ = p.payload_mut();
        let _ = p.payload();
    }
    let mut buf = b.to_vec();
    if let Ok(mut p) = Ipv6Packet::new_checked(&mut buf[..]) {
        let _ = p.set_payload_len(v16);
        p.set_traffic_class(v8);
        p.set_flow_label(v32);
        p.swap_addrs();
        p.set_src_addr(a6);
        let _ = p.payload_mut();
        let _ = p.upper_layer();
    }
    let mut buf = b.to_vec();
    if let Ok(mut p) = Icmpv6Packet::new_checked(&mut buf[..]) {
        p.rewrite_type_code(Icmpv6Type::from(v8), v8);
        p.fill_checksum(&a6, &a6);
        p.set_mtu(v32);
    }
    let mut buf = b.to_vec();
    if let Ok(mut p) = NdpNeighbor::new_checked(&mut buf[..]) {
        p.set_flags(NdpFlags(v8));
        p.set_target_addr(a6);
        p.fill_checksum(&a6, &a6);
    }
    let mut buf = b.to_vec();
    if let Ok(mut p) = UdpPacket::new_checked(&mut buf[..]) {
        let _ = p.set_length(v16);
        p.swap_ports();
        let _ = p.fill_checksum(&IpAddr::V4(a4), &IpAddr::V4(a4));
        let _ = p.payload_mut();
    }
    let mut buf = b.to_vec();
    if let Ok(mut p) = TcpPacket::new_checked(&mut buf[..]) {
        p.swap_ports();
        p.set_flags(TcpFlags(v8));
        let _ = p.fill_checksum(&IpAddr::V6(a6), &IpAddr::V6(a6));
        let _ = p.payload_mut();
    }
    let mut buf = b.to_vec();
    if let Ok(mut p) = GrePacket::new_checked(&mut buf[..]) {
        let _ = p.set_key(v32);
        let _ = p.set_seq(v32);
        p.fill_checksum();
        let _ = p.payload_mut();
    }
}

/// Offsets of a parsed frame must lie inside it.
fn check_info(frame: &[u8], info: &FrameInfo) -> std::result::Result<(), TestCaseError> {
    prop_assert!(info.l3_offset <= frame.len());
    if info.ip_version.is_some() {
        prop_assert!(info.l3_offset < info.l4_offset);
        prop_assert!(info.l4_offset <= info.l3_end());
        prop_assert!(info.l3_end() <= frame.len());
    }
    if !info.has_ports() {
        prop_assert_eq!((info.src_port, info.dst_port), (0, 0));
    }
    Ok(())
}

fn ipv4_repr() -> impl Strategy<Value = Ipv4Repr> {
    (
        any::<u32>(),
        any::<u32>(),
        any::<u8>(),
        0u16..=65515,
        any::<u8>(),
        any::<u8>(),
        any::<u16>(),
        any::<bool>(),
    )
        .prop_map(|(s, d, p, len, ttl, tos, ident, df)| Ipv4Repr {
            src: Ipv4Addr::from(s),
            dst: Ipv4Addr::from(d),
            protocol: IpProtocol::from(p),
            payload_len: len,
            ttl,
            tos,
            ident,
            dont_frag: df,
        })
}

fn ipv6_repr() -> impl Strategy<Value = Ipv6Repr> {
    (
        any::<u128>(),
        any::<u128>(),
        any::<u8>(),
        any::<u16>(),
        any::<u8>(),
        any::<u8>(),
        0u32..(1 << 20),
    )
        .prop_map(|(s, d, nh, len, hl, tc, fl)| Ipv6Repr {
            src: Ipv6Addr::from(s),
            dst: Ipv6Addr::from(d),
            next_header: IpProtocol::from(nh),
            payload_len: len,
            hop_limit: hl,
            traffic_class: tc,
            flow_label: fl,
        })
}

/// A UDP datagram over IPv4 or IPv6 in an Ethernet frame, optionally VLAN-tagged, built with the emit
/// helpers: (frame, source port, destination port, payload length, VLAN id).
fn udp_frame() -> impl Strategy<Value = (Vec<u8>, u16, u16, usize, Option<u16>)> {
    (
        any::<bool>(),
        any::<[u8; 16]>(),
        any::<[u8; 16]>(),
        any::<u16>(),
        any::<u16>(),
        proptest::collection::vec(any::<u8>(), 0..64),
        proptest::option::of(0u16..4096),
    )
        .prop_map(|(v6, s, d, sp, dp, payload, vid)| {
            let mut f = vec![0u8; 14 + 4 + 40 + 8 + payload.len()];
            let l3 = if vid.is_some() { 18 } else { 14 };
            let ethertype = if v6 { EtherType::Ipv6 } else { EtherType::Ipv4 };
            let mut at = EthernetRepr {
                dst: MacAddr([2, 0, 0, 0, 0, 2]),
                src: MacAddr([2, 0, 0, 0, 0, 1]),
                ethertype: if vid.is_some() {
                    EtherType::Vlan
                } else {
                    ethertype
                },
            }
            .emit(&mut f)
            .unwrap();
            if let Some(vid) = vid {
                f[at..at + 2].copy_from_slice(&vid.to_be_bytes());
                f[at + 2..at + 4].copy_from_slice(&u16::from(ethertype).to_be_bytes());
                at += 4;
            }
            let udp_len = 8 + u16::try_from(payload.len()).unwrap();
            let (src, dst): (IpAddr, IpAddr) = if v6 {
                let r = Ipv6Repr {
                    src: Ipv6Addr::from(s),
                    dst: Ipv6Addr::from(d),
                    next_header: IpProtocol::Udp,
                    payload_len: udp_len,
                    hop_limit: 64,
                    traffic_class: 0,
                    flow_label: 0,
                };
                at += r.emit(&mut f[at..]).unwrap();
                (r.src.into(), r.dst.into())
            } else {
                let r = Ipv4Repr {
                    src: Ipv4Addr::from([s[0], s[1], s[2], s[3]]),
                    dst: Ipv4Addr::from([d[0], d[1], d[2], d[3]]),
                    protocol: IpProtocol::Udp,
                    payload_len: udp_len,
                    ttl: 64,
                    tos: 0,
                    ident: 0,
                    dont_frag: true,
                };
                at += r.emit(&mut f[at..]).unwrap();
                (r.src.into(), r.dst.into())
            };
            let end = at + usize::from(udp_len);
            f.truncate(end);
            f[at..at + 2].copy_from_slice(&sp.to_be_bytes());
            f[at + 2..at + 4].copy_from_slice(&dp.to_be_bytes());
            f[at + 4..at + 6].copy_from_slice(&udp_len.to_be_bytes());
            f[at + 8..end].copy_from_slice(&payload);
            UdpPacket::new_checked(&mut f[at..end])
                .unwrap()
                .fill_checksum(&src, &dst)
                .unwrap();
            debug_assert_eq!(l3 + if v6 { 40 } else { 20 }, at);
            (f, sp, dp, payload.len(), vid)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parse_frame_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1600)) {
        if let Ok(info) = parse_frame(&bytes) {
            check_info(&bytes, &info)?;
        }
    }

    #[test]
    fn parse_frame_survives_mutations(
        (frame, ..) in udp_frame(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut f = frame;
        for (at, v) in flips {
            let i = at.index(f.len());
            f[i] = v;
        }
        let f = &f[..cut.index(f.len() + 1)];
        if let Ok(info) = parse_frame(f) {
            check_info(f, &info)?;
        }
    }

    #[test]
    fn views_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
        v16 in any::<u16>(),
        v32 in any::<u32>(),
    ) {
        read_all(&bytes);
        write_all(&bytes, v16, v32);
    }

    #[test]
    fn views_never_panic_on_plausible_headers(
        first in prop::sample::select(vec![0x45u8, 0x46, 0x4f, 0x60, 0x87, 0x88, 0x50, 0xb0, 0x30]),
        rest in proptest::collection::vec(any::<u8>(), 0..120),
        v16 in any::<u16>(),
        v32 in any::<u32>(),
    ) {
        // A plausible first byte gets arbitrary bytes past the first length check more often.
        let mut b = vec![first];
        b.extend_from_slice(&rest);
        read_all(&b);
        write_all(&b, v16, v32);
    }

    #[test]
    fn udp_frames_round_trip((frame, sp, dp, plen, vid) in udp_frame()) {
        let info = parse_frame(&frame).unwrap();
        check_info(&frame, &info)?;
        prop_assert_eq!(info.vlan_count, u8::from(vid.is_some()));
        prop_assert_eq!(info.vlan_ids[0], vid.unwrap_or(0));
        prop_assert_eq!(info.l4_protocol, IpProtocol::Udp);
        prop_assert_eq!((info.src_port, info.dst_port), (sp, dp));
        prop_assert_eq!(info.l4_len(), 8 + plen);
        prop_assert_eq!(info.l3_end(), frame.len());
        let udp = UdpPacket::new_checked(&frame[info.l4_offset..info.l3_end()]).unwrap();
        prop_assert!(udp.verify_checksum(&info.src, &info.dst));
        if info.ip_version == Some(IpVersion::V4) {
            prop_assert!(Ipv4Packet::new_checked(&frame[info.l3_offset..]).unwrap().verify_checksum());
        }
    }

    #[test]
    fn ipv4_emit_parse(repr in ipv4_repr()) {
        let mut b = vec![0u8; 20 + usize::from(repr.payload_len)];
        prop_assert_eq!(repr.emit(&mut b), Ok(20));
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        prop_assert!(p.verify_checksum());
        prop_assert_eq!(Ipv4Repr::parse(&p), repr);
    }

    #[test]
    fn ipv6_emit_parse(repr in ipv6_repr()) {
        let mut b = vec![0u8; 40 + usize::from(repr.payload_len)];
        prop_assert_eq!(repr.emit(&mut b), Ok(40));
        prop_assert_eq!(Ipv6Repr::parse(&Ipv6Packet::new_checked(&b[..]).unwrap()), repr);
    }

    #[test]
    fn gre_encapsulation_round_trip(
        outer in ipv4_repr(),
        checksum in any::<bool>(),
        key in proptest::option::of(any::<u32>()),
        seq in proptest::option::of(any::<u32>()),
        (inner, sp, dp, ..) in udp_frame(),
    ) {
        // Ethernet + IPv4 + GRE prepended to the inner IP datagram, as a load balancer encapsulates.
        let inner_info = parse_frame(&inner).unwrap();
        let inner_ip = &inner[inner_info.l3_offset..];
        let gre = GreRepr { protocol: inner_info.ethertype, checksum, key, seq };
        let outer = Ipv4Repr {
            protocol: IpProtocol::Gre,
            payload_len: u16::try_from(gre.header_len() + inner_ip.len()).unwrap(),
            ..outer
        };
        let head = 14 + 20 + gre.header_len();
        let mut f = vec![0u8; head + inner_ip.len()];
        f[head..].copy_from_slice(inner_ip);
        let eth = EthernetRepr {
            dst: MacAddr([2, 0, 0, 0, 0, 3]),
            src: MacAddr([2, 0, 0, 0, 0, 4]),
            ethertype: EtherType::Ipv4,
        };
        let mut at = eth.emit(&mut f)?;
        at += outer.emit(&mut f[at..])?;
        at += gre.emit(&mut f[at..])?;
        prop_assert_eq!(at, head);
        GrePacket::new_checked(&mut f[34..])?.fill_checksum();

        let info = parse_frame(&f).unwrap();
        prop_assert_eq!(info.l4_protocol, IpProtocol::Gre);
        prop_assert_eq!((info.src, info.dst), (IpAddr::V4(outer.src), IpAddr::V4(outer.dst)));
        prop_assert!(!info.has_ports());
        let g = GrePacket::new_checked(&f[info.l4_offset..info.l3_end()]).unwrap();
        prop_assert_eq!(GreRepr::parse(&g), gre);
        prop_assert!(g.verify_checksum());
        // The decapsulated datagram parses to the inner flow.
        let mut decap = f.clone();
        decap.drain(14..head);
        decap[12..14].copy_from_slice(&u16::from(inner_info.ethertype).to_be_bytes());
        let d = parse_frame(&decap).unwrap();
        prop_assert_eq!((d.src, d.dst, d.src_port, d.dst_port), (inner_info.src, inner_info.dst, sp, dp));
    }

    #[test]
    fn arp_and_ndp_emit_parse(
        sm in any::<[u8; 6]>(), tm in any::<[u8; 6]>(), si in any::<u32>(), ti in any::<u32>(),
        op in any::<u16>(), target in any::<u128>(), opt in any::<bool>(), flags in any::<u8>(),
    ) {
        let arp = ArpRepr {
            operation: ArpOperation::from(op),
            sender_mac: MacAddr(sm),
            sender_ip: Ipv4Addr::from(si),
            target_mac: MacAddr(tm),
            target_ip: Ipv4Addr::from(ti),
        };
        let mut b = [0u8; 28];
        arp.emit(&mut b)?;
        prop_assert_eq!(ArpRepr::parse(&ArpPacket::new_checked(&b[..])?), arp);

        let (src, dst) = (Ipv6Addr::from(si as u128), Ipv6Addr::from(target));
        let na = NeighborAdvertRepr {
            flags: NdpFlags(flags & 0xe0),
            target: Ipv6Addr::from(target),
            target_link_addr: opt.then_some(MacAddr(tm)),
        };
        let mut b = [0u8; 32];
        let n = na.emit(&mut b, &src, &dst)?;
        prop_assert_eq!(n, na.buffer_len());
        let v = NdpNeighbor::new_checked(&b[..n])?;
        prop_assert!(v.verify_checksum(&src, &dst));
        prop_assert_eq!((v.flags(), v.target_addr(), v.target_link_addr()), (na.flags, na.target, na.target_link_addr));
        let ns = NeighborSolicitRepr { target: na.target, source_link_addr: opt.then_some(MacAddr(sm)) };
        let n = ns.emit(&mut b, &src, &dst)?;
        let v = NdpNeighbor::new_checked(&b[..n])?;
        prop_assert!(v.verify_checksum(&src, &dst));
        prop_assert_eq!(v.source_link_addr(), ns.source_link_addr);
    }
}
