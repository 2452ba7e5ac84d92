//! ICMP on the packet path: errors that follow their connection, and the errors the load balancer sends.
//!
//! An ICMP error sent to a VIP address quotes a packet the VIP sent (a backend's answer under direct server
//! return); it is classified by the quoted flow, seen from the client, so it reaches the backend that holds
//! the connection ([`classify_icmp_error`]). A packet too big for the GRE tunnel gets "fragmentation
//! needed" (IPv4 with DF) or "packet too big" (IPv6) back, written in place of the packet, so path MTU
//! discovery works through the load balancer ([`too_big`]).

use super::{write_l2, Meta, Outcome, Verdict, MAX_L2};
use crate::conntrack::FlowKey;
use crate::control::{Addr, State, VipState};
use crate::counters::DropReason;
use crate::tunnel::HOP_LIMIT;
use cne::frame::Frame;
use cne::wire::{
    self, checksum, EtherType, FrameInfo, Icmpv6Packet, Icmpv6Type, IpProtocol, IpVersion,
    Ipv4Repr, Ipv6Repr,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IPv6's minimum MTU: the largest ICMPv6 error, and the smallest MTU a packet-too-big may report.
const IPV6_MIN_MTU: usize = 1280;

/// Whether the frame is an ICMPv4 destination unreachable, time exceeded or parameter problem, or an
/// ICMPv6 error (types 1-4).
#[inline]
pub(super) fn is_icmp_error(d: &[u8], info: &FrameInfo) -> bool {
    let Some(&kind) = d.get(info.l4_offset) else {
        return false;
    };
    match info.l4_protocol {
        IpProtocol::Icmp => matches!(kind, 3 | 11 | 12),
        IpProtocol::Icmpv6 => (1..=4).contains(&kind),
        _ => false,
    }
}

/// An ICMP error to a VIP address quotes the start of a packet the VIP sent: a backend's answer under
/// direct server return (VIP:port -> client:port) that a router could not forward, e.g. "fragmentation
/// needed" for path MTU discovery. It belongs to that connection, so it goes where the connection's packets
/// go: the key is the quoted flow seen from the client's side.
#[cold]
pub(super) fn classify_icmp_error<'s>(
    d: &[u8],
    info: &FrameInfo,
    state: &'s State,
    key: &mut FlowKey,
    meta: &mut Meta,
) -> Result<(&'s VipState, u64), Verdict> {
    const MALFORMED: Verdict = Verdict::Drop(DropReason::Malformed);
    // The ICMP header is 8 bytes; the quoted packet follows.
    let quoted = d.get(info.l4_offset + 8..info.l3_end()).ok_or(MALFORMED)?;
    let (v6, vip_bits, client_bits, proto, ports) = match info.ip_version {
        Some(IpVersion::V4) => {
            let h: &[u8; 20] = quoted
                .get(..20)
                .and_then(|s| s.try_into().ok())
                .ok_or(MALFORMED)?;
            let ihl = usize::from(h[0] & 0x0f) * 4;
            // Only a first fragment (offset 0) quotes the transport header.
            if h[0] >> 4 != 4 || ihl < 20 || u16::from_be_bytes([h[6], h[7]]) & 0x1fff != 0 {
                return Err(MALFORMED);
            }
            let a = |o: usize| Addr::v4([h[o], h[o + 1], h[o + 2], h[o + 3]]).bits;
            (
                false,
                a(12),
                a(16),
                h[9],
                quoted.get(ihl..ihl + 4).ok_or(MALFORMED)?,
            )
        }
        Some(IpVersion::V6) => {
            let h: &[u8; 40] = quoted
                .get(..40)
                .and_then(|s| s.try_into().ok())
                .ok_or(MALFORMED)?;
            if h[0] >> 4 != 6 {
                return Err(MALFORMED);
            }
            let a = |o: usize| u128::from_be_bytes(h[o..o + 16].try_into().unwrap_or([0; 16]));
            (
                true,
                a(8),
                a(24),
                h[6],
                quoted.get(40..44).ok_or(MALFORMED)?,
            )
        }
        None => return Err(MALFORMED),
    };
    let vip_addr = Addr { v6, bits: vip_bits };
    // The quoted packet must have come from the address the error is sent to.
    if !matches!(proto, 6 | 17) || Addr::from(info.dst) != vip_addr {
        return Err(Verdict::Drop(DropReason::NoVip));
    }
    let (vip_port, client_port) = (
        u16::from_be_bytes([ports[0], ports[1]]),
        u16::from_be_bytes([ports[2], ports[3]]),
    );
    let vip = state
        .vip(vip_addr, proto, vip_port)
        .ok_or(Verdict::Drop(DropReason::NoVip))?;
    *key = FlowKey {
        src: client_bits,
        dst: vip_bits,
        sport: client_port,
        dport: vip_port,
        proto,
    };
    // Both fit: a frame is far shorter than 64 KiB.
    #[allow(clippy::cast_possible_truncation)]
    {
        *meta = Meta {
            l3: info.l3_offset as u16,
            ip_len: info.ip_len as u16,
            tos: info.traffic_class,
            tcp_flags: 0,
            v6,
            fragment: false,
            icmp_error: true,
        };
    }
    Ok((vip, key.hash(state.hash_seed)))
}

/// The packet would exceed the MTU once encapsulated: IPv4 without DF is fragmented ([`fragment`](super::fragment));
/// otherwise answer with ICMP "fragmentation needed" (IPv4 with DF) or ICMPv6 "packet too big", rewriting
/// the frame in place, or drop (a non-first IPv6 fragment).
#[cold]
pub(super) fn too_big<F: Frame>(
    frame: &mut F,
    state: &State,
    mac: [u8; 6],
    overhead: usize,
) -> Outcome {
    // Rare: parse again rather than carry every header detail through the burst.
    let Ok(info) = wire::parse_frame(frame.data()) else {
        return Outcome::Dropped(DropReason::Malformed);
    };
    let l3 = info.l3_offset;
    // IPv4 without DF (fragments included): the sender allows fragmentation, so the packet is fragmented.
    if info.ip_version == Some(IpVersion::V4)
        && frame.data().get(l3 + 6).is_some_and(|b| b & 0x40 == 0)
    {
        return Outcome::Fragment;
    }
    // RFC 1122 / 4443: errors only about first fragments; TCP and UDP (VIP traffic) are never ICMP errors.
    if info.fragment_offset != 0 {
        return Outcome::Dropped(DropReason::TooBig);
    }
    let mut l2 = [0u8; MAX_L2];
    l2[..l3].copy_from_slice(&frame.data()[..l3]);
    let client_mac: [u8; 6] = {
        let mut m = [0u8; 6];
        m.copy_from_slice(&l2[6..12]);
        m
    };
    let room = usize::from(state.mtu).saturating_sub(overhead);
    let sent = match (info.src, info.dst) {
        (IpAddr::V4(client), IpAddr::V4(vip)) => {
            let ihl = info.l4_offset - l3;
            let quote = (ihl + 8).min(info.ip_len);
            icmpv4_frag_needed(frame, &l2[..l3], client_mac, mac, vip, client, quote, room)
        }
        (IpAddr::V6(client), IpAddr::V6(vip)) => {
            let quote = info.ip_len.min(IPV6_MIN_MTU - Ipv6Repr::HEADER_LEN - 8);
            icmpv6_packet_too_big(
                frame,
                &l2[..l3],
                client_mac,
                mac,
                vip,
                client,
                quote,
                room.max(IPV6_MIN_MTU),
            )
        }
        _ => false,
    };
    if sent {
        Outcome::Replied
    } else {
        Outcome::Dropped(DropReason::TooBig)
    }
}

/// Rewrites the frame into ICMP type 3 code 4 quoting the first `quote` bytes of the datagram.
#[allow(clippy::too_many_arguments)]
fn icmpv4_frag_needed<F: Frame>(
    frame: &mut F,
    old_l2: &[u8],
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    vip: Ipv4Addr,
    client: Ipv4Addr,
    quote: usize,
    mtu: usize,
) -> bool {
    const ICMP_LEN: usize = 8;
    let l3 = old_l2.len();
    let fresh = Ipv4Repr::HEADER_LEN + ICMP_LEN;
    // The quoted datagram stays where it is; the new headers go in front of it.
    if frame.push_head(fresh).is_none() || !frame.set_len(l3 + fresh + quote) {
        return false;
    }
    let data = frame.data_mut();
    let ip = Ipv4Repr {
        src: vip,
        dst: client,
        protocol: IpProtocol::Icmp,
        payload_len: u16::try_from(ICMP_LEN + quote).unwrap_or(u16::MAX),
        ttl: HOP_LIMIT,
        tos: 0,
        ident: 0,
        dont_frag: false,
    };
    if ip.emit(&mut data[l3..]).is_err() {
        return false;
    }
    let icmp = &mut data[l3 + Ipv4Repr::HEADER_LEN..];
    let mtu = u16::try_from(mtu).unwrap_or(u16::MAX).to_be_bytes();
    icmp[..ICMP_LEN].copy_from_slice(&[3, 4, 0, 0, 0, 0, mtu[0], mtu[1]]);
    let sum = checksum::internet(&icmp[..ICMP_LEN + quote]);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    write_l2(data, old_l2, dst_mac, src_mac, EtherType::Ipv4);
    true
}

/// Rewrites the frame into ICMPv6 packet too big quoting the first `quote` bytes of the datagram.
#[allow(clippy::too_many_arguments)]
fn icmpv6_packet_too_big<F: Frame>(
    frame: &mut F,
    old_l2: &[u8],
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    vip: Ipv6Addr,
    client: Ipv6Addr,
    quote: usize,
    mtu: usize,
) -> bool {
    const ICMP_LEN: usize = 8;
    let l3 = old_l2.len();
    let fresh = Ipv6Repr::HEADER_LEN + ICMP_LEN;
    if frame.push_head(fresh).is_none() || !frame.set_len(l3 + fresh + quote) {
        return false;
    }
    let data = frame.data_mut();
    let ip = Ipv6Repr {
        src: vip,
        dst: client,
        next_header: IpProtocol::Icmpv6,
        payload_len: u16::try_from(ICMP_LEN + quote).unwrap_or(u16::MAX),
        hop_limit: HOP_LIMIT,
        traffic_class: 0,
        flow_label: 0,
    };
    if ip.emit(&mut data[l3..]).is_err() {
        return false;
    }
    let msg = &mut data[l3 + Ipv6Repr::HEADER_LEN..];
    msg[..4].copy_from_slice(&[u8::from(Icmpv6Type::PacketTooBig), 0, 0, 0]);
    let Ok(mut icmp) = Icmpv6Packet::new_checked(msg) else {
        return false;
    };
    icmp.set_mtu(u32::try_from(mtu).unwrap_or(u32::MAX));
    icmp.fill_checksum(&vip, &client);
    write_l2(data, old_l2, dst_mac, src_mac, EtherType::Ipv6);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::DropReason;
    use crate::dataplane::testing::*;
    use crate::dataplane::{PortPlane, Verdict};

    #[test]
    fn fixture_too_big_ipv4_gets_fragmentation_needed() {
        check(
            "big4",
            bytes(BIG4_IN, Some(BIG4_IN_TAIL)),
            bytes(BIG4_OUT, None),
        );
    }

    #[test]
    fn fixture_too_big_ipv6_gets_packet_too_big() {
        check(
            "big6",
            bytes(BIG6_IN, Some(BIG6_IN_TAIL)),
            bytes(BIG6_OUT, Some(BIG6_OUT_TAIL)),
        );
    }

    #[test]
    fn icmp_errors_follow_the_connection_they_quote() {
        let mut c = control();
        let mut w = PortPlane::new(LB_MAC, &c.state());
        let f = flows(1000);
        let first = backends_of(&c.state(), &mut w, &f, SYN, 1);
        // Drained, p2 keeps its connections while the Maglev table sends these flows elsewhere: errors
        // must follow the connection table, not the Maglev table.
        c.drain("pool", "p2").expect("drains");
        let state = c.state();
        let mut followed_drained = 0;
        for (&(src, sport), backend) in f.iter().zip(&first) {
            for (kind, code) in [(3, 4), (11, 0), (12, 0)] {
                let error = icmp4_error(POOL, kind, code, &reply_of(src, sport));
                let (v, out) = run(&state, &mut w, &error, 2);
                assert_eq!(v, Verdict::Tx);
                assert_eq!(
                    outer_dst(&out),
                    *backend,
                    "error {kind}/{code} for {src:?}:{sport}"
                );
                assert_eq!(
                    &out[38..],
                    &error[14..],
                    "the whole ICMP packet is the GRE payload"
                );
            }
            followed_drained += usize::from(*backend == [198, 18, 2, 3]);
        }
        assert!(
            followed_drained > 150,
            "{followed_drained} errors of drained connections"
        );
        assert_eq!(w.refresh_counters().icmp_errors, 3000);

        // A worker that never saw these flows sends their errors where the Maglev table sends the flows,
        // and records nothing: an error opens no connection.
        let mut fresh = PortPlane::new(LB_MAC, &state);
        for &(src, sport) in &f[..50] {
            let (v, out) = run(
                &state,
                &mut fresh,
                &icmp4_error(POOL, 3, 4, &reply_of(src, sport)),
                2,
            );
            assert_eq!(v, Verdict::Tx);
            let mut probe = PortPlane::new(LB_MAC, &state);
            let want = backends_of(&state, &mut probe, &[(src, sport)], ACK, 2);
            assert_eq!(outer_dst(&out), want[0]);
        }
        assert_eq!(fresh.conntrack().live(2), 0);

        // Not errors of a VIP's connection: dropped by reason, never forwarded.
        let (src, sport) = f[0];
        let echo = icmp4_error(POOL, 8, 0, &[0; 8]);
        let mut other_sender = reply_of(src, sport);
        other_sender[12..16].copy_from_slice(&[198, 18, 100, 9]);
        let mut udp = reply_of(src, sport);
        udp[9] = 17;
        let mut other_port = reply_of(src, sport);
        other_port[20..22].copy_from_slice(&9u16.to_be_bytes());
        let cases: [(&str, Vec<u8>, DropReason); 6] = [
            ("echo request", echo, DropReason::NoVip),
            (
                "quote from another address",
                icmp4_error(POOL, 3, 4, &other_sender),
                DropReason::NoVip,
            ),
            (
                "quote of another protocol",
                icmp4_error(POOL, 3, 4, &udp),
                DropReason::NoVip,
            ),
            (
                "quote of a port of no VIP",
                icmp4_error([198, 18, 100, 1], 3, 4, &{
                    let mut q = tcp4([198, 18, 100, 1], 9, src, sport, ACK)[14..].to_vec();
                    q.truncate(28);
                    q
                }),
                DropReason::NoVip,
            ),
            (
                "quote without ports",
                icmp4_error(POOL, 3, 4, &reply_of(src, sport)[..22]),
                DropReason::Malformed,
            ),
            (
                "quote shorter than an IP header",
                icmp4_error(POOL, 3, 4, &reply_of(src, sport)[..12]),
                DropReason::Malformed,
            ),
        ];
        for (what, frame, reason) in cases {
            assert_eq!(
                run(&state, &mut w, &frame, 2).0,
                Verdict::Drop(reason),
                "{what}"
            );
        }
        assert_eq!(
            run(&state, &mut w, &icmp4_error(POOL, 3, 4, &other_port), 2).0,
            Verdict::Tx,
            "all-ports VIP"
        );
    }

    #[test]
    fn icmpv6_packet_too_big_follows_its_connection() {
        let c = control();
        let state = c.state();
        let mut w = PortPlane::new(LB_MAC, &state);
        // GRE6_IN: client 2001:2:50::1 -> VIP web6 2001:2::100:80; its only backend is 2001:2:1::1.
        let (v, _) = run(&state, &mut w, &bytes(GRE6_IN, None), 1);
        assert_eq!(v, Verdict::Tx);
        let client: Ipv6Addr = "2001:2:50::1".parse().unwrap();
        let vip: Ipv6Addr = "2001:2::100".parse().unwrap();
        let mut quoted = vec![0x60, 0, 0, 0, 0, 20, 6, 64];
        quoted.extend_from_slice(&vip.octets());
        quoted.extend_from_slice(&client.octets());
        quoted.extend_from_slice(&80u16.to_be_bytes());
        quoted.extend_from_slice(&40000u16.to_be_bytes());
        quoted.extend_from_slice(&[0; 16]);
        let mut icmp = vec![2, 0, 0, 0, 0, 0, 0x05, 0x00];
        icmp.extend_from_slice(&quoted);
        let mut frame = vec![
            2, 0, 0, 0, 0, 0xaa, 2, 0, 0, 0, 0, 0xcc, 0x86, 0xdd, 0x60, 0, 0, 0,
        ];
        frame.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
        frame.extend_from_slice(&[58, 64]);
        frame.extend_from_slice(&"2001:2:70::1".parse::<Ipv6Addr>().unwrap().octets());
        frame.extend_from_slice(&vip.octets());
        frame.extend_from_slice(&icmp);
        let (v, out) = run(&state, &mut w, &frame, 2);
        assert_eq!(v, Verdict::Tx);
        // Outer IPv6 destination: the backend.
        assert_eq!(
            &out[38..54],
            &"2001:2:1::1".parse::<Ipv6Addr>().unwrap().octets()
        );
        assert_eq!(
            &out[14 + 40 + 4..],
            &frame[14..],
            "the whole ICMPv6 packet is the GRE payload"
        );
        assert_eq!(w.refresh_counters().icmp_errors, 1);
    }
}
