//! Answering ARP requests and IPv6 neighbour solicitations for the addresses a network function owns,
//! in place, in the frame that asked (the worker sends it back on the queue it came from).
//!
//! One responder for every NF, with the stricter rules of a host (RFC 826, RFC 4861 sections 7.1.1
//! and 7.2.4, RFC 5227):
//! - ARP: only requests for an owned address are answered, to the sender's hardware address; a sender
//!   with a multicast hardware address is malformed; a gratuitous ARP (sender address = target
//!   address) announcing an owned address is a conflict to report, not a question to answer.
//! - Neighbour solicitations: hop limit 255 (it cannot have been forwarded), code 0, a valid checksum,
//!   a unicast target we own, sent to the target's solicited-node group or to an owned address. The
//!   answer goes to the source link-layer address option if there is one, else to the Ethernet
//!   source, with the solicited and override flags; a solicitation from `::` (duplicate address
//!   detection) must carry no source link-layer option and is answered to all nodes, override only.
//!
//! The Ethernet header keeps its length (an 802.1Q tag stays); only the addresses change. A
//! neighbour advertisement is written fresh over the solicitation and summed in full.
#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv6Addr};

use crate::frame::Frame;
use crate::wire::icmpv6::solicited_node;
use crate::wire::{
    ArpOperation, ArpPacket, EthernetFrame, FrameInfo, Icmpv6Type, IpProtocol, Ipv6Repr, MacAddr,
    NdpFlags, NdpNeighbor, NeighborAdvertRepr,
};

/// IPv6 all-nodes multicast address, the destination of an answer to duplicate address detection.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// Why a request was not answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a question: an ARP reply or another operation, an ICMPv6 message other than a solicitation.
    NotAsked,
    /// A question about an address we do not own, or sent to a destination that is not ours.
    NotOurs,
    /// Breaks the protocol's validity rules (truncated, bad checksum or hop limit, multicast sender).
    Malformed,
    /// Valid and about our address, but not to be answered: a gratuitous ARP announcing it.
    Conflict,
    /// The frame has no room for the longer answer.
    NoRoom,
}

/// Writes `dst` and `src` into the Ethernet header of `data`.
fn set_l2(data: &mut [u8], dst: MacAddr, src: MacAddr) -> Result<(), Refusal> {
    let mut eth = EthernetFrame::new_checked(data).map_err(|_| Refusal::Malformed)?;
    eth.set_dst_addr(dst);
    eth.set_src_addr(src);
    Ok(())
}

/// Turns the ARP request in `data` (an Ethernet frame described by `info`) into the reply from `mac`,
/// if `owns` accepts its target address.
pub fn answer_arp(
    data: &mut [u8],
    info: &FrameInfo,
    mac: MacAddr,
    owns: impl Fn(IpAddr) -> bool,
) -> Result<(), Refusal> {
    let l3 = data.get_mut(info.l3_offset..).ok_or(Refusal::Malformed)?;
    let mut arp = ArpPacket::new_checked(l3).map_err(|_| Refusal::Malformed)?;
    if arp.operation() != ArpOperation::Request {
        return Err(Refusal::NotAsked);
    }
    let target = arp.target_protocol_addr();
    if !owns(IpAddr::V4(target)) {
        return Err(Refusal::NotOurs);
    }
    let (sender_mac, sender_ip) = (arp.sender_hardware_addr(), arp.sender_protocol_addr());
    if sender_mac.is_multicast() {
        return Err(Refusal::Malformed);
    }
    if sender_ip == target {
        return Err(Refusal::Conflict);
    }
    arp.set_operation(ArpOperation::Reply);
    arp.set_target_hardware_addr(sender_mac);
    arp.set_target_protocol_addr(sender_ip);
    arp.set_sender_hardware_addr(mac);
    arp.set_sender_protocol_addr(target);
    set_l2(data, sender_mac, mac)
}

/// Whether the frame described by `info` is an ICMPv6 neighbour solicitation (by its type only).
pub fn is_neighbor_solicitation(data: &[u8], info: &FrameInfo) -> bool {
    info.l4_protocol == IpProtocol::Icmpv6
        && info.l4_offset == info.l3_offset + Ipv6Repr::HEADER_LEN
        && data
            .get(info.l4_offset)
            .is_some_and(|&t| Icmpv6Type::from(t) == Icmpv6Type::NeighborSolicit)
}

/// Turns the neighbour solicitation in `frame` into the advertisement from `mac`, if it is valid and
/// `owns` accepts its target. The frame grows or shrinks to the advertisement's length.
pub fn answer_neighbor_solicitation<F: Frame>(
    frame: &mut F,
    info: &FrameInfo,
    mac: MacAddr,
    owns: impl Fn(IpAddr) -> bool,
) -> Result<(), Refusal> {
    let (IpAddr::V6(src), IpAddr::V6(dst)) = (info.src, info.dst) else {
        return Err(Refusal::Malformed);
    };
    if info.l4_offset != info.l3_offset + Ipv6Repr::HEADER_LEN {
        // Extension headers before a solicitation: RFC 4861 messages carry none we would honour.
        return Err(Refusal::NotOurs);
    }
    let data = frame.data();
    let eth_src = EthernetFrame::new_checked(data)
        .map_err(|_| Refusal::Malformed)?
        .src_addr();
    let l4 = data
        .get(info.l4_offset..info.l3_end())
        .ok_or(Refusal::Malformed)?;
    let ns = NdpNeighbor::new_checked(l4).map_err(|_| Refusal::Malformed)?;
    if ns.msg_type() != Icmpv6Type::NeighborSolicit {
        return Err(Refusal::NotAsked);
    }
    if info.hop_limit != 255 || ns.code() != 0 || !ns.verify_checksum(&src, &dst) {
        return Err(Refusal::Malformed);
    }
    let target = ns.target_addr();
    if target.is_multicast() || src.is_multicast() {
        return Err(Refusal::Malformed);
    }
    if !owns(IpAddr::V6(target)) {
        return Err(Refusal::NotOurs);
    }
    if dst != solicited_node(&target) && !owns(IpAddr::V6(dst)) {
        return Err(Refusal::NotOurs);
    }
    let (reply_ip, reply_mac, flags) = if src.is_unspecified() {
        if dst != solicited_node(&target) || ns.source_link_addr().is_some() {
            return Err(Refusal::Malformed);
        }
        (
            ALL_NODES,
            MacAddr::ipv6_multicast(&ALL_NODES),
            NdpFlags::OVERRIDE,
        )
    } else {
        let peer = ns.source_link_addr().unwrap_or(eth_src);
        if peer.is_multicast() {
            return Err(Refusal::Malformed);
        }
        (src, peer, NdpFlags::SOLICITED | NdpFlags::OVERRIDE)
    };
    let na = NeighborAdvertRepr {
        flags,
        target,
        target_link_addr: Some(mac),
    };
    let len = na.buffer_len();
    let ip = Ipv6Repr {
        src: target,
        dst: reply_ip,
        next_header: IpProtocol::Icmpv6,
        payload_len: u16::try_from(len).map_err(|_| Refusal::Malformed)?,
        hop_limit: 255,
        traffic_class: 0,
        flow_label: 0,
    };
    let l4_at = info.l3_offset + Ipv6Repr::HEADER_LEN;
    if !frame.set_len(l4_at + len) {
        return Err(Refusal::NoRoom);
    }
    let data = frame.data_mut();
    ip.emit(data.get_mut(info.l3_offset..).ok_or(Refusal::Malformed)?)
        .map_err(|_| Refusal::Malformed)?;
    na.emit(
        data.get_mut(l4_at..).ok_or(Refusal::Malformed)?,
        &target,
        &reply_ip,
    )
    .map_err(|_| Refusal::Malformed)?;
    set_l2(data, reply_mac, mac)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::VecFrame;
    use crate::wire::parse_frame;
    use std::net::Ipv4Addr;

    const US: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
    const US4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    // Ether(dst=ff:ff:ff:ff:ff:ff, src=C_MAC)/ARP(op=1, psrc=198.18.0.1, pdst=198.18.0.2)
    const ARP_REQUEST: &str =
        "ffffffffffff02000000000108060001080006040001020000000001c6120001000000000000c6120002";
    // IPv6(src=2001:2::1, dst=ff02::1:ff00:2)/ICMPv6ND_NS(tgt=2001:2::2)/SLLA(02:00:00:00:00:01)
    const NS: &str = concat!(
        "3333ff00000202000000000186dd6000000000203aff20010002000000000000000000000001ff020000000000000000",
        "0001ff0000028700379300000000200100020000000000000000000000020101020000000001"
    );

    fn arp(frame: &[u8]) -> (Result<(), Refusal>, Vec<u8>) {
        let mut data = frame.to_vec();
        let info = parse_frame(&data).expect("parses");
        let r = answer_arp(&mut data, &info, US, |a| a == IpAddr::V4(US4));
        (r, data)
    }

    fn ns(frame: &[u8]) -> (Result<(), Refusal>, Vec<u8>) {
        let mut f = VecFrame::from_bytes(frame);
        let info = parse_frame(f.data()).expect("parses");
        assert!(is_neighbor_solicitation(f.data(), &info));
        let ours: Ipv6Addr = "2001:2::2".parse().expect("addr");
        let r = answer_neighbor_solicitation(&mut f, &info, US, |a| a == IpAddr::V6(ours));
        (r, f.data().to_vec())
    }

    #[test]
    fn arp_requests_for_our_address_are_answered_to_the_sender() {
        let (r, out) = arp(&hex(ARP_REQUEST));
        assert_eq!(r, Ok(()));
        assert_eq!(&out[0..6], &[2, 0, 0, 0, 0, 1], "to the sender");
        assert_eq!(&out[6..12], &US.0);
        assert_eq!(&out[20..22], &[0, 2], "a reply");
    }

    #[test]
    fn gratuitous_arp_multicast_senders_replies_and_other_targets_are_refused() {
        let mut announce = hex(ARP_REQUEST);
        announce.copy_within(38..42, 28);
        assert_eq!(arp(&announce).0, Err(Refusal::Conflict));
        let mut multicast = hex(ARP_REQUEST);
        multicast[22] |= 1;
        assert_eq!(arp(&multicast).0, Err(Refusal::Malformed));
        let mut reply = hex(ARP_REQUEST);
        reply[21] = 2;
        assert_eq!(arp(&reply).0, Err(Refusal::NotAsked));
        let mut other = hex(ARP_REQUEST);
        other[41] = 99;
        assert_eq!(arp(&other).0, Err(Refusal::NotOurs));
    }

    #[test]
    fn solicitations_are_validated_before_they_are_answered() {
        let (r, out) = ns(&hex(NS));
        assert_eq!(r, Ok(()));
        assert_eq!(
            &out[0..6],
            &[2, 0, 0, 0, 0, 1],
            "to the source link-layer address"
        );
        // Hop limit 254: it may have been forwarded.
        let mut forwarded = hex(NS);
        forwarded[21] = 254;
        assert_eq!(ns(&forwarded).0, Err(Refusal::Malformed));
        // A flipped bit in the target: the checksum fails.
        let mut corrupt = hex(NS);
        corrupt[70] ^= 1;
        assert_eq!(ns(&corrupt).0, Err(Refusal::Malformed));
        // A multicast source link-layer address.
        let mut multicast = hex(NS);
        let n = multicast.len();
        multicast[n - 6] |= 1;
        assert!(ns(&multicast).0.is_err());
    }
}
