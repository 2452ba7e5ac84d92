//! Backend selection: the port's connection table first, else the VIP's Maglev table, recording the
//! choice for the flow's next packets.
//!
//! A TCP packet other than a SYN that the table does not know may belong to a connection that began before
//! the Maglev table changed (another port or worker, another load balancer, a restart): it goes where the oldest
//! kept table sends it while that backend exists (the published state keeps the past tables), so table
//! changes and flow moves together break nothing. A SYN to a draining backend opens nothing there. ICMP
//! errors and packets being fragmented ask the same way ([`follow`]) but record nothing.

use super::{Flow, PortPlane};
use crate::conntrack::{Conn, FlowKey};
use crate::control::{BackendState, VipState};
use cne::wire::{IpProtocol, TcpFlags};

/// The backend of the flow an ICMP error quotes (or of a packet [`fragment`](super::fragment) sends): the connection table's
/// if it has the flow, else the one the Maglev tables give the flow (for TCP other than a SYN a past table
/// first, as [`select`] does). Records nothing: an error does not open a connection.
#[cold]
pub(super) fn follow<'s>(
    vip: &'s VipState,
    key: &FlowKey,
    hash: u64,
    plane: &mut PortPlane,
    now: u32,
    syn: bool,
) -> Option<(&'s BackendState, bool)> {
    if let Some(conn) = plane.conntrack.lookup(key, hash, now, false) {
        if let Some((_, b)) = vip.backend(conn.backend, conn.hint) {
            return Some((b, false));
        }
    }
    // An error about a TCP connection this port does not know goes where that connection's packets go.
    if key.proto == u8::from(IpProtocol::Tcp) && !syn {
        if let Some((_, b, _)) = vip.past_pick(hash) {
            return Some((b, false));
        }
    }
    vip.pick(hash).map(|(_, b)| (b, false))
}

/// The backend of a non-fragment packet: the connection table's if it still exists, else the Maglev
/// table's (recorded for the next packets). `(backend, new_conn)`; `None` when the VIP has no backend.
#[inline(always)]
pub(super) fn select<'s>(
    vip: &'s VipState,
    flow: &Flow<'_, '_>,
    flags: TcpFlags,
    plane: &mut PortPlane,
    now: u32,
) -> Option<(&'s BackendState, bool)> {
    let (key, slot) = (flow.key, flow.slot);
    let tcp = key.proto == u8::from(IpProtocol::Tcp);
    let syn = tcp && flags.contains(TcpFlags::SYN) && !flags.contains(TcpFlags::ACK);
    let closing = tcp && (flags.contains(TcpFlags::FIN) || flags.contains(TcpFlags::RST));
    let hit = plane.conntrack.lookup_at(key, slot, now, closing);
    if let Some(conn) = hit {
        match vip.backend(conn.backend, conn.hint) {
            // A SYN opens a new connection: a draining or unhealthy backend gets none, even on a reused
            // 5-tuple (unless the VIP fails open); and a SYN on the 5-tuple of a connection that was
            // closing (FIN or RST seen) is a new connection, given a backend by the current table (as
            // IPVS does), not tied to the old one's.
            Some((index, b))
                if !(syn && (conn.closing || b.weight == 0 || !(b.healthy || vip.fail_open))) =>
            {
                if index != conn.hint {
                    // The backend list changed under the entry: remember the new position.
                    plane.conntrack.insert_at(
                        key,
                        slot,
                        Conn {
                            hint: index,
                            ..conn
                        },
                        now,
                    );
                }
                return Some((b, false));
            }
            Some(_) => {}
            None => plane.counters.rerouted += 1,
        }
    }
    // A connection (not a SYN) nobody here knows may have begun before the table changed: it goes where the
    // oldest kept table sends it while that backend exists. Only after a change, and only on a miss.
    let (index, b) = if hit.is_none() && tcp && !syn && vip.has_past() {
        past_or_pick(vip, key, flow.hash, closing, plane)?
    } else {
        vip.pick(flow.hash)?
    };
    // A full table evicts, the flood guard may refuse: either way the Maglev table keeps the flow on `b`.
    plane.conntrack.insert_at(
        key,
        slot,
        Conn {
            backend: b.id,
            hint: index,
            closing,
        },
        now,
    );
    Some((b, true))
}

/// [`VipState::past_pick`], else the current table's pick.
#[cold]
#[inline(never)]
fn past_or_pick<'s>(
    vip: &'s VipState,
    key: &FlowKey,
    hash: u64,
    closing: bool,
    plane: &mut PortPlane,
) -> Option<(u16, &'s BackendState)> {
    if let Some((i, b, _)) = vip.past_pick(hash) {
        plane.counters.past_table += 1;
        plane.past_flow(super::PastFlow {
            key: *key,
            vip: vip.id,
            backend: b.id,
            closing,
        });
        return Some((i, b));
    }
    vip.pick(hash)
}

#[cfg(test)]
mod tests {

    use crate::config::MaglevSection;
    use crate::control::Control;
    use crate::dataplane::testing::*;
    use crate::dataplane::{PortPlane, Verdict};

    #[test]
    fn flows_spread_over_the_pool_and_stay_put() {
        let c = control();
        let state = c.state();
        let mut w = PortPlane::new(LB_MAC, &state);
        let f = flows(4000);
        let first = backends_of(&state, &mut w, &f, SYN, 1);
        for b in 1..=4u8 {
            let n = first.iter().filter(|d| **d == [198, 18, 2, b]).count();
            assert!(
                (800..1200).contains(&n),
                "backend {b} got {n} of 4000 flows"
            );
        }
        assert_eq!(backends_of(&state, &mut w, &f, ACK, 2), first);
        // A second worker (another queue, another instance) with an empty table picks the same backends.
        let mut other = PortPlane::new(LB_MAC, &state);
        assert_eq!(backends_of(&state, &mut other, &f, ACK, 2), first);
    }

    #[test]
    fn removing_a_backend_moves_only_its_flows() {
        let mut c = control();
        let mut w = PortPlane::new(LB_MAC, &c.state());
        let f = flows(2000);
        let before = backends_of(&c.state(), &mut w, &f, SYN, 1);
        c.remove_backend("pool", "p1").expect("removes");
        let after = backends_of(&c.state(), &mut w, &f, ACK, 2);
        let gone = [198, 18, 2, 2];
        let mut moved = 0;
        for (b, a) in before.iter().zip(&after) {
            if *b == gone {
                assert_ne!(*a, gone);
                moved += 1;
            } else {
                assert_eq!(a, b, "a flow of a remaining backend moved");
            }
        }
        assert!(moved > 300);
        assert_eq!(w.refresh_counters().rerouted, moved);
    }

    #[test]
    fn adding_a_backend_keeps_established_flows() {
        let mut c = control();
        let mut w = PortPlane::new(LB_MAC, &c.state());
        let f = flows(2000);
        let before = backends_of(&c.state(), &mut w, &f, SYN, 1);
        let extra = crate::config::BackendSection {
            check: None,
            name: "p4".into(),
            addr: "198.18.2.5".parse().expect("ip"),
            weight: 1,
            mac: None,
        };
        c.add_backend("pool", extra).expect("adds");
        assert_eq!(
            backends_of(&c.state(), &mut w, &f, ACK, 2),
            before,
            "the connection table holds them"
        );
        // New flows do reach the new backend.
        let fresh: Vec<([u8; 4], u16)> = (0..2000)
            .map(|i| ([198, 18, 70, (i % 251) as u8], 20000 + i as u16))
            .collect();
        let to_new = backends_of(&c.state(), &mut w, &fresh, SYN, 2)
            .iter()
            .filter(|d| **d == [198, 18, 2, 5])
            .count();
        assert!(
            (300..500).contains(&to_new),
            "{to_new} of 2000 new flows on the new backend"
        );
    }

    #[test]
    fn draining_keeps_flows_and_turns_new_connections_away() {
        let mut c = control();
        let mut w = PortPlane::new(LB_MAC, &c.state());
        let f = flows(2000);
        let before = backends_of(&c.state(), &mut w, &f, SYN, 1);
        c.drain("pool", "p2").expect("drains");
        let drained = [198, 18, 2, 3];
        assert_eq!(
            backends_of(&c.state(), &mut w, &f, ACK, 2),
            before,
            "established flows stay, drained or not"
        );
        // A FIN keeps going to the drained backend too.
        assert_eq!(backends_of(&c.state(), &mut w, &f, FIN_ACK, 3), before);
        // A new SYN on the same 5-tuple is a new connection: never to the drained backend.
        let again = backends_of(&c.state(), &mut w, &f, SYN, 4);
        assert!(again.iter().all(|d| *d != drained));
        // After the FIN, the current table decides it, as for a flow never seen.
        let mut fresh = PortPlane::new(LB_MAC, &c.state());
        assert_eq!(again, backends_of(&c.state(), &mut fresh, &f, SYN, 4));
        // A SYN on the 5-tuple of a connection that is not closing keeps its backend (unless drained).
        let mut w = PortPlane::new(LB_MAC, &c.state());
        let open = backends_of(&c.state(), &mut w, &f, ACK, 5);
        c.set_weight("pool", "p2", 1).expect("back");
        let reopened = backends_of(&c.state(), &mut w, &f, SYN, 6);
        assert_eq!(reopened, open);
    }

    #[test]
    fn unhealthy_backends_keep_flows_get_no_new_ones_and_all_down_fails_open() {
        let mut c = control();
        let mut w = PortPlane::new(LB_MAC, &c.state());
        let f = flows(2000);
        let before = backends_of(&c.state(), &mut w, &f, SYN, 1);
        let down = [198, 18, 2, 3];
        let out = |names: &[&str]| -> std::collections::BTreeSet<(String, String)> {
            names
                .iter()
                .map(|n| ("pool".to_owned(), (*n).to_owned()))
                .collect()
        };
        assert!(c.set_unhealthy(out(&["p2"])).expect("publishes"));
        assert!(
            !c.set_unhealthy(out(&["p2"])).expect("same"),
            "no change, no state"
        );
        let vip = c.state();
        let v = vip.vip_by_name("pool").expect("vip");
        assert!(v.ready() && !v.fail_open);
        assert_eq!(
            backends_of(&c.state(), &mut w, &f, ACK, 2),
            before,
            "established flows stay on an unhealthy backend"
        );
        // A SYN on a reused 5-tuple is a new connection: not to the unhealthy backend.
        let again = backends_of(&c.state(), &mut w, &f, SYN, 3);
        assert!(again.iter().all(|d| *d != down));
        // Every backend down: fail open, all of them share the table again.
        let names: Vec<String> = v.backends().iter().map(|b| b.name.clone()).collect();
        let all: Vec<&str> = names.iter().map(String::as_str).collect();
        c.set_unhealthy(out(&all)).expect("publishes");
        let vip = c.state();
        let v = vip.vip_by_name("pool").expect("vip");
        assert!(v.fail_open && !v.ready());
        let mut fresh = PortPlane::new(LB_MAC, &c.state());
        let open = backends_of(&c.state(), &mut fresh, &f, SYN, 4);
        assert!(open.contains(&down), "fail-open sends to every backend");
        // Health back: the table is the original one again.
        c.set_unhealthy(out(&[])).expect("publishes");
        let mut fresh = PortPlane::new(LB_MAC, &c.state());
        assert_eq!(backends_of(&c.state(), &mut fresh, &f, SYN, 5), before);
    }

    #[test]
    fn connections_that_lose_their_entry_keep_their_backend_after_a_table_change() {
        let mut c = control();
        c.set_now(Some(1_000_000));
        let f = flows(1000);
        let (under_a, moved) = moved_by_adding_p4(&mut c, &f);
        assert_eq!(
            c.state()
                .vip_by_name("pool")
                .expect("vip")
                .past_tables()
                .len(),
            1
        );
        // Another worker (another queue, instance or a restart): an empty connection table. Packets of
        // established connections go to the backend table A gave them, and stay there (recorded).
        let mut other = PortPlane::new(LB_MAC, &c.state());
        assert_eq!(backends_of(&c.state(), &mut other, &f, ACK, 3), under_a);
        assert_eq!(other.refresh_counters().past_table, f.len() as u64);
        assert_eq!(backends_of(&c.state(), &mut other, &f, ACK, 4), under_a);
        assert_eq!(
            other.refresh_counters().past_table,
            f.len() as u64,
            "once per flow"
        );
        // A SYN is a new connection: the current table B.
        let mut syn = PortPlane::new(LB_MAC, &c.state());
        let new = backends_of(&c.state(), &mut syn, &f, SYN, 3);
        assert!(moved.iter().all(|&i| new[i] == [198, 18, 2, 5]));
        assert_eq!(syn.refresh_counters().past_table, 0);
        // UDP follows the current table (no connections to keep).
        let udp_vip = c.state();
        let udp = udp_vip.vip_by_name("pool").expect("vip");
        assert!(udp.has_past());
    }

    #[test]
    fn past_tables_give_way_when_the_old_backend_is_removed_or_the_window_passes() {
        let mut c = control();
        c.set_now(Some(1_000_000));
        let f = flows(1000);
        let (under_a, moved) = moved_by_adding_p4(&mut c, &f);
        // Draining the old backend keeps its connections where they are.
        let victim = under_a[moved[0]];
        let name = format!("p{}", victim[3] - 1);
        c.drain("pool", &name).expect("drains");
        let mut w = PortPlane::new(LB_MAC, &c.state());
        let drained = backends_of(&c.state(), &mut w, &f, ACK, 3);
        assert_eq!(drained, under_a, "drained backends keep their connections");
        // Removed: its connections go where the current table sends them; everyone else's stay.
        c.remove_backend("pool", &name).expect("removes");
        let current = {
            let mut syn = PortPlane::new(LB_MAC, &c.state());
            backends_of(&c.state(), &mut syn, &f, SYN, 3)
        };
        let mut w = PortPlane::new(LB_MAC, &c.state());
        let after = backends_of(&c.state(), &mut w, &f, ACK, 3);
        for i in 0..f.len() {
            if under_a[i] == victim {
                assert_eq!(after[i], current[i], "flow {i} of the removed backend");
            } else {
                assert_eq!(after[i], under_a[i], "flow {i}");
            }
        }
        // Once the TCP idle timeout (900 s) has passed since the change, the past tables are forgotten: every
        // connection without an entry follows the current table.
        c.set_now(Some(1_000_000 + 899));
        assert!(!c.tick(), "nothing to forget yet");
        c.set_now(Some(1_000_000 + 900));
        assert!(c.tick());
        assert!(!c.state().vip_by_name("pool").expect("vip").has_past());
        let mut w = PortPlane::new(LB_MAC, &c.state());
        assert_eq!(backends_of(&c.state(), &mut w, &f, ACK, 3), current);
        assert_eq!(w.refresh_counters().past_table, 0);
    }

    #[test]
    fn fin_shortens_the_timeout_and_flows_expire() {
        let mut c = control();
        let mut w = PortPlane::new(LB_MAC, &c.state());
        let f = flows(500);
        let before = backends_of(&c.state(), &mut w, &f, SYN, 1);
        backends_of(&c.state(), &mut w, &f, FIN_ACK, 2);
        // Past the FIN timeout (30 s) the entries are gone: after a table change the flows follow the table.
        c.remove_backend("pool", "p0").expect("removes");
        let later = backends_of(&c.state(), &mut w, &f, ACK, 2 + 31);
        assert!(w.conntrack().stats().expired > 0);
        let kept = before.iter().zip(&later).filter(|(b, a)| b == a).count();
        assert!(kept < 500 && kept > 200, "{kept}");
    }

    #[test]
    fn fragments_of_a_datagram_reach_one_backend() {
        let c = control();
        let state = c.state();
        let mut w = PortPlane::new(LB_MAC, &state);
        let mut seen = std::collections::HashSet::new();
        for i in 0..200u16 {
            let src = [198, 18, 61, (i % 200) as u8];
            // First fragment: the TCP header with the ports, then a later fragment without.
            let mut tcp = tcp4(src, 1000 + i, POOL, 8080, ACK)[34..].to_vec();
            tcp.extend_from_slice(&[0xab; 4]);
            let first = frag4(src, POOL, 6, i, 0, true, &tcp);
            let second = frag4(src, POOL, 6, i, 24, false, &[0xcd; 40]);
            let (v1, o1) = run(&state, &mut w, &first, 1);
            let (v2, o2) = run(&state, &mut w, &second, 1);
            assert_eq!((v1, v2), (Verdict::Tx, Verdict::Tx));
            assert_eq!(outer_dst(&o1), outer_dst(&o2), "datagram {i}");
            seen.insert(outer_dst(&o1));
        }
        assert_eq!(seen.len(), 4, "different clients spread over the pool");
        assert_eq!(w.refresh_counters().fragments, 400);
        assert_eq!(
            w.conntrack().stats().inserted,
            0,
            "fragments are not connections"
        );
    }

    #[test]
    fn flood_guard_forwards_unrecorded_flows() {
        let s: MaglevSection = serde_json::from_str(&CONFIG.replacen(
            "{",
            r#"{ "flood_guard": { "max_new_conns_per_sec": 10 },"#,
            1,
        ))
        .expect("parses");
        let c = Control::new(s.validate().expect("valid")).expect("builds");
        let state = c.state();
        let mut w = PortPlane::new(LB_MAC, &state);
        let f = flows(50);
        let first = backends_of(&state, &mut w, &f, SYN, 1);
        assert_eq!(w.conntrack().stats().inserted, 10);
        assert_eq!(w.conntrack().stats().limited, 40);
        // Unrecorded flows still go where the Maglev table says, which is where they went.
        assert_eq!(backends_of(&state, &mut w, &f, ACK, 1), first);
        assert_eq!(w.refresh_counters().tx_packets, 100);
    }
}
