//! ARP and IPv6 neighbour discovery for the VIP addresses, answered in place on the port the request came
//! in on. Only when the data plane sees all traffic of its queues (`claim_all`): otherwise the kernel
//! answers. Gratuitous ARP and multicast senders are not answered.

use super::{write_l2, PortPlane, Verdict, MAX_L2};
use crate::control::{Addr, State};
use crate::counters::DropReason;
use cne::frame::Frame;
use cne::wire::{
    ArpOperation, ArpPacket, EtherType, FrameInfo, Icmpv6Type, IpProtocol, Ipv6Repr, MacAddr,
    NdpFlags, NdpNeighbor, NeighborAdvertRepr,
};
use std::net::{IpAddr, Ipv6Addr};

/// Answers an ARP request for a VIP address in place.
#[cold]
pub(super) fn answer_arp<F: Frame>(
    frame: &mut F,
    info: &FrameInfo,
    state: &State,
    plane: &mut PortPlane,
) -> Verdict {
    let l3 = info.l3_offset;
    let mac = MacAddr(plane.mac);
    let data = frame.data_mut();
    let Ok(mut arp) = ArpPacket::new_checked(&mut data[l3..]) else {
        return Verdict::Drop(DropReason::Malformed);
    };
    let target = arp.target_protocol_addr();
    if arp.operation() != ArpOperation::Request || !state.is_vip_addr(Addr::v4(target.octets())) {
        return Verdict::Drop(DropReason::NotIp);
    }
    let (asker_mac, asker_ip) = (arp.sender_hardware_addr(), arp.sender_protocol_addr());
    if asker_mac.is_multicast() {
        return Verdict::Drop(DropReason::Malformed);
    }
    if asker_ip == target {
        // A gratuitous ARP announcing the VIP (another holder, or our own echo): a conflict to
        // report, not a question to answer.
        return Verdict::Drop(DropReason::NotIp);
    }
    arp.set_operation(ArpOperation::Reply);
    arp.set_target_hardware_addr(asker_mac);
    arp.set_target_protocol_addr(asker_ip);
    arp.set_sender_hardware_addr(mac);
    arp.set_sender_protocol_addr(target);
    data[0..6].copy_from_slice(&asker_mac.0);
    data[6..12].copy_from_slice(&plane.mac);
    plane.counters.arp_replies += 1;
    Verdict::Tx
}

/// Answers a neighbour solicitation for a VIP address with a neighbour advertisement, in place. `None` when
/// the packet is some other ICMPv6 message (it then goes through the VIP lookup like any packet).
#[cold]
pub(super) fn answer_neighbor_solicitation<F: Frame>(
    frame: &mut F,
    info: &FrameInfo,
    state: &State,
    plane: &mut PortPlane,
) -> Option<Verdict> {
    let (IpAddr::V6(asker), l3, l4) = (info.src, info.l3_offset, info.l4_offset) else {
        return None;
    };
    let ns = NdpNeighbor::new_checked(frame.data().get(l4..info.l3_end())?).ok()?;
    // RFC 4861 7.1.1: a valid solicitation has hop limit 255 (it cannot have been forwarded).
    if ns.msg_type() != Icmpv6Type::NeighborSolicit || ns.code() != 0 || info.hop_limit != 255 {
        return None;
    }
    let target = ns.target_addr();
    if !state.is_vip_addr(Addr::v6(target.octets())) {
        return Some(Verdict::Drop(DropReason::NoVip));
    }
    let mut l2 = [0u8; MAX_L2];
    l2[..l3].copy_from_slice(&frame.data()[..l3]);
    // Duplicate address detection comes from `::` and is answered to all nodes, unsolicited (RFC 4861 7.2.4).
    let dad = asker.is_unspecified();
    let (dst, dst_mac, flags) = if dad {
        (
            Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
            MacAddr::ipv6_multicast(&Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1)).0,
            NdpFlags::OVERRIDE,
        )
    } else {
        let mut m = [0u8; 6];
        m.copy_from_slice(&l2[6..12]);
        (asker, m, NdpFlags::SOLICITED | NdpFlags::OVERRIDE)
    };
    let na = NeighborAdvertRepr {
        flags,
        target,
        target_link_addr: Some(MacAddr(plane.mac)),
    };
    let len = na.buffer_len();
    if !frame.set_len(l3 + Ipv6Repr::HEADER_LEN + len) {
        return Some(Verdict::Drop(DropReason::NoHeadroom));
    }
    let data = frame.data_mut();
    let ip = Ipv6Repr {
        src: target,
        dst,
        next_header: IpProtocol::Icmpv6,
        payload_len: u16::try_from(len).unwrap_or(u16::MAX),
        hop_limit: 255,
        traffic_class: 0,
        flow_label: 0,
    };
    if ip.emit(&mut data[l3..]).is_err()
        || na
            .emit(&mut data[l3 + Ipv6Repr::HEADER_LEN..], &target, &dst)
            .is_err()
    {
        return Some(Verdict::Drop(DropReason::Malformed));
    }
    write_l2(data, &l2[..l3], dst_mac, plane.mac, EtherType::Ipv6);
    plane.counters.nd_replies += 1;
    Some(Verdict::Tx)
}

#[cfg(test)]
mod tests {

    use crate::control::Control;
    use crate::counters::DropReason;
    use crate::dataplane::testing::*;
    use crate::dataplane::{PortPlane, Verdict};

    use crate::config::MaglevSection;

    #[test]
    fn fixture_arp_reply() {
        check("arp", bytes(ARP_IN, None), bytes(ARP_OUT, None));
    }

    #[test]
    fn gratuitous_arp_and_multicast_senders_are_not_answered() {
        let c = control();
        let state = c.state();
        let mut w = PortPlane::new(LB_MAC, &state);
        // Ethernet (14) + ARP: sender MAC at 22, sender IP at 28, target IP at 38.
        let mut announce = bytes(ARP_IN, None);
        let vip: [u8; 4] = announce[38..42].try_into().expect("4 bytes");
        announce[28..32].copy_from_slice(&vip);
        assert_eq!(
            run(&state, &mut w, &announce, 1).0,
            Verdict::Drop(DropReason::NotIp)
        );
        let mut multicast = bytes(ARP_IN, None);
        multicast[22] |= 1;
        assert_eq!(
            run(&state, &mut w, &multicast, 1).0,
            Verdict::Drop(DropReason::Malformed)
        );
        assert_eq!(w.refresh_counters().arp_replies, 0);
    }

    #[test]
    fn fixture_neighbor_advertisement() {
        check("ns", bytes(NS_IN, None), bytes(NS_OUT, None));
    }

    #[test]
    fn claim_all_off_leaves_arp_and_nd_unanswered() {
        let s: MaglevSection =
            serde_json::from_str(&CONFIG.replacen("{", r#"{ "claim_all": false,"#, 1))
                .expect("parses");
        let c = Control::new(s.validate().expect("valid")).expect("builds");
        let state = c.state();
        let mut w = PortPlane::new(LB_MAC, &state);
        assert_eq!(
            run(&state, &mut w, &bytes(ARP_IN, None), 1).0,
            Verdict::Drop(DropReason::NotIp)
        );
        assert_eq!(
            run(&state, &mut w, &bytes(NS_IN, None), 1).0,
            Verdict::Drop(DropReason::NoVip)
        );
    }
}
