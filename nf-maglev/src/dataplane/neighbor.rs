//! ARP and IPv6 neighbour discovery for the VIP addresses, answered in place on the port the request came
//! in on, by cne's shared responder ([`cne::neighbor`]: the rules of a host, the same as nf-echo's). Only
//! when the data plane sees all traffic of its queues (`claim_all`): otherwise the kernel answers.

use super::{PortPlane, Verdict};
use crate::control::{Addr, State};
use crate::counters::DropReason;
use cne::frame::Frame;
use cne::neighbor::{self, Refusal};
use cne::wire::{FrameInfo, MacAddr};

/// The responder's refusals as this data plane counts them: what is not a question for a VIP is
/// `not_ip` for ARP and `no_vip` for neighbour discovery, as any other packet for no VIP.
fn refused(r: Refusal, not_ours: DropReason) -> Verdict {
    Verdict::Drop(match r {
        Refusal::NotAsked | Refusal::NotOurs | Refusal::Conflict => not_ours,
        Refusal::Malformed => DropReason::Malformed,
        Refusal::NoRoom => DropReason::NoHeadroom,
    })
}

/// Answers an ARP request for a VIP address in place.
#[cold]
pub(super) fn answer_arp<F: Frame>(
    frame: &mut F,
    info: &FrameInfo,
    state: &State,
    plane: &mut PortPlane,
) -> Verdict {
    match neighbor::answer_arp(frame.data_mut(), info, MacAddr(plane.mac), |a| {
        state.is_vip_addr(Addr::from(a))
    }) {
        Ok(()) => {
            plane.counters.arp_replies += 1;
            Verdict::Tx
        }
        Err(r) => refused(r, DropReason::NotIp),
    }
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
    if !neighbor::is_neighbor_solicitation(frame.data(), info) {
        return None;
    }
    Some(
        match neighbor::answer_neighbor_solicitation(frame, info, MacAddr(plane.mac), |a| {
            state.is_vip_addr(Addr::from(a))
        }) {
            Ok(()) => {
                plane.counters.nd_replies += 1;
                Verdict::Tx
            }
            Err(r) => refused(r, DropReason::NoVip),
        },
    )
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
