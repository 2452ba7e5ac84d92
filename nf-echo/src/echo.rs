//! The echo network function's packet logic: `process(frame, &config, &mut counters) -> Verdict`, free
//! of sockets and threads so that fixtures drive it byte for byte.
//!
//! Three modes. [`Mode::Echo`] behaves like a minimal host owning the configured addresses: it answers
//! ARP requests and IPv6 neighbour solicitations for them, turns ICMPv4 and ICMPv6 echo requests into
//! replies, and reflects UDP datagrams sent to the configured ports. Each answer is written in place
//! into the received frame (same buffer, no copy) so that the worker transmits it on the queue it came
//! from. [`Mode::MacSwap`] swaps the Ethernet addresses of every frame, like cndpfwd's `lb` mode: the
//! cheapest forwarding baseline. [`Mode::Drop`] drops everything: the rx-drop baseline.
//!
//! Checksums stay correct without summing whole packets again: exchanging source and destination
//! (addresses and ports) leaves every checksum unchanged because ones-complement sums commute, and the
//! ICMP type change and the TTL reset are patched with RFC 1624 incremental updates. A request is
//! answered only when its ICMP, ICMPv6 or UDP checksum verifies (a UDP checksum of zero means "none"
//! over IPv4 only): a frame corrupted on the way, in its addresses above all, must not be answered
//! (to a corrupted source) as a host would not answer it. Those are counted as
//! [`DropReason::BadChecksum`]. Only the neighbour advertisement, written fresh, is summed in full.
//!
//! Every frame gets a verdict and every drop a [`DropReason`], counted in [`EchoCounters`]. Whatever the
//! bytes, nothing here panics or allocates.

use core::fmt;
use core::str::FromStr;
use std::net::IpAddr;

use cne::frame::Frame;
use cne::neighbor::{self, Refusal};
use cne::wire::{
    parse_frame, EtherType, EthernetFrame, FrameInfo, Icmpv4Packet, Icmpv4Type, Icmpv6Packet,
    Icmpv6Type, IpProtocol, IpVersion, Ipv4Packet, Ipv6Packet, MacAddr, UdpPacket,
};

/// TTL / hop limit of every IP reply, like a host's default.
pub const REPLY_TTL: u8 = 64;

/// What the function does with each frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// Answer ARP, neighbour solicitations, ICMP echo and UDP for our addresses; drop the rest.
    #[default]
    Echo,
    /// Swap source and destination MAC and transmit every frame.
    MacSwap,
    /// Drop every frame.
    Drop,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Echo => "echo",
            Mode::MacSwap => "macswap",
            Mode::Drop => "drop",
        })
    }
}

/// A mode name that is none of `echo`, `macswap` (or `lb`), `drop` (or `rx-drop`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown mode {0:?}: expected echo, macswap (or lb) or drop (or rx-drop)")]
pub struct ModeParseError(pub String);

impl FromStr for Mode {
    type Err = ModeParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "echo" => Ok(Mode::Echo),
            "macswap" | "mac-swap" | "lb" => Ok(Mode::MacSwap),
            "drop" | "rx-drop" => Ok(Mode::Drop),
            other => Err(ModeParseError(other.to_string())),
        }
    }
}

/// Configuration of the packet logic.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EchoConfig {
    /// What to do with frames.
    pub mode: Mode,
    /// Our MAC address: the source of every reply; unicast frames to other MACs are not ours.
    pub mac: [u8; 6],
    /// The IPv4 and IPv6 addresses we own.
    pub addrs: Vec<IpAddr>,
    /// UDP ports we reflect; empty means all.
    pub udp_ports: Vec<u16>,
}

impl EchoConfig {
    #[inline]
    fn owns(&self, addr: &IpAddr) -> bool {
        self.addrs.iter().any(|a| a == addr)
    }

    #[inline]
    fn serves_udp(&self, port: u16) -> bool {
        self.udp_ports.is_empty() || self.udp_ports.contains(&port)
    }
}

/// Why a frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// [`Mode::Drop`]: dropping is the job.
    Policy,
    /// Truncated or inconsistent headers, a bad IPv4 header or NDP checksum, an invalid source, or an
    /// NDP message failing RFC 4861 validation.
    Malformed,
    /// Addressed to another MAC or IP address, or to a UDP port we do not serve.
    NotOurs,
    /// Well-formed and ours, but not something we answer (TCP, other ICMP types, fragments, IPv6
    /// extension headers, unknown EtherTypes), or no room to grow the frame for a reply.
    Unsupported,
    /// An ICMP, ICMPv6 or UDP request whose checksum does not verify.
    BadChecksum,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 5] = [
        DropReason::Policy,
        DropReason::Malformed,
        DropReason::NotOurs,
        DropReason::Unsupported,
        DropReason::BadChecksum,
    ];

    /// A short name for metrics labels and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            DropReason::Policy => "policy",
            DropReason::Malformed => "malformed",
            DropReason::NotOurs => "not_ours",
            DropReason::Unsupported => "unsupported",
            DropReason::BadChecksum => "bad_checksum",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The decision for one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The frame now holds the answer: transmit it on the port it arrived on.
    Tx,
    /// Return the frame to the pool.
    Drop(DropReason),
}

/// Per-worker counters: one per kind of answer and one per drop reason. Plain integers, owned by the
/// worker; the control thread reads copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EchoCounters {
    /// ARP replies sent.
    pub arp_replies: u64,
    /// Neighbour advertisements sent.
    pub neighbor_adverts: u64,
    /// ICMPv4 echo replies sent.
    pub icmpv4_echo_replies: u64,
    /// ICMPv6 echo replies sent.
    pub icmpv6_echo_replies: u64,
    /// UDP datagrams reflected.
    pub udp_echoes: u64,
    /// Frames sent back with swapped MACs ([`Mode::MacSwap`]).
    pub mac_swapped: u64,
    /// Drops for [`DropReason::Policy`].
    pub drop_policy: u64,
    /// Drops for [`DropReason::Malformed`].
    pub drop_malformed: u64,
    /// Drops for [`DropReason::NotOurs`].
    pub drop_not_ours: u64,
    /// Drops for [`DropReason::Unsupported`].
    pub drop_unsupported: u64,
    /// Dropped: [`DropReason::BadChecksum`].
    pub drop_bad_checksum: u64,
}

impl EchoCounters {
    /// Drops counted for `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        match reason {
            DropReason::Policy => self.drop_policy,
            DropReason::Malformed => self.drop_malformed,
            DropReason::NotOurs => self.drop_not_ours,
            DropReason::Unsupported => self.drop_unsupported,
            DropReason::BadChecksum => self.drop_bad_checksum,
        }
    }

    /// Frames transmitted.
    pub fn tx_total(&self) -> u64 {
        self.arp_replies
            + self.neighbor_adverts
            + self.icmpv4_echo_replies
            + self.icmpv6_echo_replies
            + self.udp_echoes
            + self.mac_swapped
    }

    /// Frames dropped.
    pub fn drop_total(&self) -> u64 {
        DropReason::ALL.iter().map(|&r| self.drops(r)).sum()
    }

    /// Adds `other` (another worker's counters) to these.
    pub fn merge(&mut self, other: &EchoCounters) {
        self.arp_replies += other.arp_replies;
        self.neighbor_adverts += other.neighbor_adverts;
        self.icmpv4_echo_replies += other.icmpv4_echo_replies;
        self.icmpv6_echo_replies += other.icmpv6_echo_replies;
        self.udp_echoes += other.udp_echoes;
        self.mac_swapped += other.mac_swapped;
        self.drop_policy += other.drop_policy;
        self.drop_malformed += other.drop_malformed;
        self.drop_not_ours += other.drop_not_ours;
        self.drop_unsupported += other.drop_unsupported;
        self.drop_bad_checksum += other.drop_bad_checksum;
    }

    fn count(&mut self, outcome: Result<Answer, DropReason>) -> Verdict {
        let counter = match outcome {
            Ok(Answer::Arp) => &mut self.arp_replies,
            Ok(Answer::NeighborAdvert) => &mut self.neighbor_adverts,
            Ok(Answer::Icmpv4Echo) => &mut self.icmpv4_echo_replies,
            Ok(Answer::Icmpv6Echo) => &mut self.icmpv6_echo_replies,
            Ok(Answer::Udp) => &mut self.udp_echoes,
            Ok(Answer::MacSwap) => &mut self.mac_swapped,
            Err(DropReason::Policy) => &mut self.drop_policy,
            Err(DropReason::Malformed) => &mut self.drop_malformed,
            Err(DropReason::NotOurs) => &mut self.drop_not_ours,
            Err(DropReason::Unsupported) => &mut self.drop_unsupported,
            Err(DropReason::BadChecksum) => &mut self.drop_bad_checksum,
        };
        *counter += 1;
        match outcome {
            Ok(_) => Verdict::Tx,
            Err(reason) => Verdict::Drop(reason),
        }
    }
}

/// The kind of answer a frame became.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Arp,
    NeighborAdvert,
    Icmpv4Echo,
    Icmpv6Echo,
    Udp,
    MacSwap,
}

use DropReason::{BadChecksum, Malformed, NotOurs, Unsupported};

/// Decides what to do with `frame` (starting at the Ethernet header) and, for [`Verdict::Tx`],
/// rewrites it in place into the answer. Counts the outcome in `counters`. On [`Verdict::Drop`] the
/// frame's contents are unspecified.
pub fn process<F: Frame>(frame: &mut F, cfg: &EchoConfig, counters: &mut EchoCounters) -> Verdict {
    let outcome = match cfg.mode {
        Mode::Drop => Err(DropReason::Policy),
        Mode::MacSwap => mac_swap(frame.data_mut()),
        Mode::Echo => echo(frame, cfg),
    };
    counters.count(outcome)
}

fn mac_swap(data: &mut [u8]) -> Result<Answer, DropReason> {
    EthernetFrame::new_checked(data)
        .map_err(|_| Malformed)?
        .swap_addrs();
    Ok(Answer::MacSwap)
}

/// Writes the Ethernet addresses of an answer.
fn set_l2(data: &mut [u8], dst: MacAddr, src: MacAddr) -> Result<(), DropReason> {
    let mut eth = EthernetFrame::new_checked(data).map_err(|_| Malformed)?;
    eth.set_dst_addr(dst);
    eth.set_src_addr(src);
    Ok(())
}

fn echo<F: Frame>(frame: &mut F, cfg: &EchoConfig) -> Result<Answer, DropReason> {
    let info = parse_frame(frame.data()).map_err(|_| Malformed)?;
    let eth = EthernetFrame::new_checked(frame.data()).map_err(|_| Malformed)?;
    let (dst_mac, src_mac) = (eth.dst_addr(), eth.src_addr());
    if src_mac.is_multicast() {
        return Err(Malformed);
    }
    if dst_mac.is_unicast() && dst_mac.0 != cfg.mac {
        return Err(NotOurs);
    }
    match info.ip_version {
        Some(IpVersion::V4) => ipv4(frame.data_mut(), &info, src_mac, cfg),
        Some(IpVersion::V6) => ipv6(frame, &info, src_mac, cfg),
        None if info.ethertype == EtherType::Arp => arp(frame.data_mut(), &info, cfg),
        None => Err(Unsupported),
    }
}

/// The shared responder's refusals as this NF counts them.
fn refused(r: Refusal) -> DropReason {
    match r {
        Refusal::NotOurs => NotOurs,
        Refusal::Malformed => Malformed,
        Refusal::NotAsked | Refusal::Conflict | Refusal::NoRoom => Unsupported,
    }
}

fn arp(data: &mut [u8], info: &FrameInfo, cfg: &EchoConfig) -> Result<Answer, DropReason> {
    neighbor::answer_arp(data, info, MacAddr(cfg.mac), |a| cfg.owns(&a)).map_err(refused)?;
    Ok(Answer::Arp)
}

fn ipv4(
    data: &mut [u8],
    info: &FrameInfo,
    peer_mac: MacAddr,
    cfg: &EchoConfig,
) -> Result<Answer, DropReason> {
    let IpAddr::V4(src) = info.src else {
        return Err(Malformed);
    };
    if !cfg.owns(&info.dst) {
        return Err(NotOurs);
    }
    if src.is_unspecified() || src.is_broadcast() || src.is_multicast() {
        // A reply would go nowhere or to a group.
        return Err(Malformed);
    }
    if info.is_fragment {
        return Err(Unsupported);
    }
    let l3 = info.l3_offset..info.l3_end();
    let l4 = info.l4_offset..info.l3_end();
    let header_ok = Ipv4Packet::new_checked(data.get(l3.clone()).ok_or(Malformed)?)
        .map_err(|_| Malformed)?
        .verify_checksum();
    if !header_ok {
        return Err(Malformed);
    }
    let answer = match info.l4_protocol {
        IpProtocol::Icmp => {
            let mut icmp = Icmpv4Packet::new_checked(data.get_mut(l4).ok_or(Malformed)?)
                .map_err(|_| Malformed)?;
            if icmp.msg_type() != Icmpv4Type::EchoRequest {
                return Err(Unsupported);
            }
            if !icmp.verify_checksum() {
                return Err(BadChecksum);
            }
            icmp.rewrite_type_code(Icmpv4Type::EchoReply, 0);
            Answer::Icmpv4Echo
        }
        IpProtocol::Udp => {
            if !cfg.serves_udp(info.dst_port) {
                return Err(NotOurs);
            }
            let mut udp = UdpPacket::new_checked(data.get_mut(l4).ok_or(Malformed)?)
                .map_err(|_| Malformed)?;
            if !udp.verify_checksum(&info.src, &info.dst) {
                return Err(BadChecksum);
            }
            udp.swap_ports();
            Answer::Udp
        }
        _ => return Err(Unsupported),
    };
    let mut ip =
        Ipv4Packet::new_checked(data.get_mut(l3).ok_or(Malformed)?).map_err(|_| Malformed)?;
    ip.swap_addrs();
    ip.rewrite_ttl(REPLY_TTL);
    set_l2(data, peer_mac, MacAddr(cfg.mac))?;
    Ok(answer)
}

fn ipv6<F: Frame>(
    frame: &mut F,
    info: &FrameInfo,
    peer_mac: MacAddr,
    cfg: &EchoConfig,
) -> Result<Answer, DropReason> {
    let (IpAddr::V6(src), IpAddr::V6(dst)) = (info.src, info.dst) else {
        return Err(Malformed);
    };
    if info.l4_offset != info.l3_offset + 40 {
        // Extension headers (fragments included): a host would have to process them; we do not.
        return Err(Unsupported);
    }
    let l3 = info.l3_offset..info.l3_end();
    let l4 = info.l4_offset..info.l3_end();
    if info.l4_protocol == IpProtocol::Icmpv6 {
        let icmp = Icmpv6Packet::new_checked(frame.data().get(l4.clone()).ok_or(Malformed)?)
            .map_err(|_| Malformed)?;
        if icmp.msg_type() == Icmpv6Type::NeighborSolicit {
            neighbor::answer_neighbor_solicitation(frame, info, MacAddr(cfg.mac), |a| cfg.owns(&a))
                .map_err(refused)?;
            return Ok(Answer::NeighborAdvert);
        }
    }
    if !cfg.owns(&info.dst) {
        return Err(NotOurs);
    }
    if src.is_unspecified() || src.is_multicast() {
        return Err(Malformed);
    }
    let data = frame.data_mut();
    let answer = match info.l4_protocol {
        IpProtocol::Icmpv6 => {
            let mut icmp = Icmpv6Packet::new_checked(data.get_mut(l4).ok_or(Malformed)?)
                .map_err(|_| Malformed)?;
            if icmp.msg_type() != Icmpv6Type::EchoRequest {
                return Err(Unsupported);
            }
            if !icmp.verify_checksum(&src, &dst) {
                return Err(BadChecksum);
            }
            icmp.rewrite_type_code(Icmpv6Type::EchoReply, 0);
            Answer::Icmpv6Echo
        }
        IpProtocol::Udp => {
            if !cfg.serves_udp(info.dst_port) {
                return Err(NotOurs);
            }
            let mut udp = UdpPacket::new_checked(data.get_mut(l4).ok_or(Malformed)?)
                .map_err(|_| Malformed)?;
            if udp.checksum() == 0 {
                // RFC 8200 section 8.1: a zero UDP checksum over IPv6 is invalid.
                return Err(Malformed);
            }
            if !udp.verify_checksum(&info.src, &info.dst) {
                return Err(BadChecksum);
            }
            udp.swap_ports();
            Answer::Udp
        }
        _ => return Err(Unsupported),
    };
    let mut ip =
        Ipv6Packet::new_checked(data.get_mut(l3).ok_or(Malformed)?).map_err(|_| Malformed)?;
    ip.swap_addrs();
    ip.set_hop_limit(REPLY_TTL);
    set_l2(data, peer_mac, MacAddr(cfg.mac))?;
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cne::frame::VecFrame;
    use cne::wire::{Ipv6Repr, NdpNeighbor, TcpPacket, UdpPacket};
    use proptest::prelude::*;
    use std::net::Ipv6Addr;

    const US_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];

    fn config(mode: Mode) -> EchoConfig {
        EchoConfig {
            mode,
            mac: US_MAC,
            addrs: vec![
                "198.18.0.2".parse().unwrap(),
                "2001:2::2".parse().unwrap(),
                "fe80::ff:fe00:2".parse().unwrap(),
            ],
            udp_ports: vec![7, 9],
        }
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn to_hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// Runs one frame through a fresh counter set; returns verdict, output and counters.
    fn run(input: &[u8], cfg: &EchoConfig) -> (Verdict, Vec<u8>, EchoCounters) {
        let mut frame = VecFrame::from_bytes(input);
        let mut counters = EchoCounters::default();
        let verdict = process(&mut frame, cfg, &mut counters);
        (verdict, frame.data().to_vec(), counters)
    }

    /// Whether every checksum the frame carries (IPv4 header, ICMP, ICMPv6, UDP, TCP) verifies,
    /// recomputed from scratch by the wire layer.
    fn checksums_ok(f: &[u8]) -> bool {
        let Ok(i) = parse_frame(f) else {
            return false;
        };
        if i.ip_version.is_none() {
            return true;
        }
        if i.ip_version == Some(IpVersion::V4)
            && !Ipv4Packet::new_checked(&f[i.l3_offset..]).is_ok_and(|p| p.verify_checksum())
        {
            return false;
        }
        if i.fragment_offset != 0 || i.is_first_fragment {
            return true;
        }
        let l4 = &f[i.l4_offset..i.l3_end()];
        match (i.l4_protocol, i.src, i.dst) {
            (IpProtocol::Icmp, ..) => {
                Icmpv4Packet::new_checked(l4).is_ok_and(|p| p.verify_checksum())
            }
            (IpProtocol::Icmpv6, IpAddr::V6(s), IpAddr::V6(d)) => {
                Icmpv6Packet::new_checked(l4).is_ok_and(|p| p.verify_checksum(&s, &d))
            }
            (IpProtocol::Udp, s, d) => {
                UdpPacket::new_checked(l4).is_ok_and(|p| p.verify_checksum(&s, &d))
            }
            (IpProtocol::Tcp, s, d) => {
                TcpPacket::new_checked(l4).is_ok_and(|p| p.verify_checksum(&s, &d))
            }
            _ => true,
        }
    }

    struct Fixture {
        name: &'static str,
        input: &'static str,
        output: Option<&'static str>,
        verdict: Verdict,
    }

    // Fixtures in the style of Katran's lib/testing fixtures: input frame, expected output frame,
    // expected verdict. Built with scapy 2.8, an implementation independent of this one, so the
    // expected bytes (checksums included) are a check of ours. Client C_MAC 02:00:00:00:00:01,
    // C4 198.18.0.1, C6 2001:2::1; us US_MAC 02:00:00:00:00:02, US4 198.18.0.2, US6 2001:2::2;
    // Ethernet addressed to US_MAC from C_MAC unless stated.
    const FIXTURES: &[Fixture] = &[
        Fixture {
            name: "ARP request for our IPv4 address",
            // Ether(dst=ff:ff:ff:ff:ff:ff)/ARP(op=1, psrc=C4, pdst=US4) -> ARP(op=2) to the asker
            input: "ffffffffffff02000000000108060001080006040001020000000001c6120001000000000000c6120002",
            output: Some("02000000000102000000000208060001080006040002020000000002c6120002020000000001c6120001"),
            verdict: Verdict::Tx,
        },
        Fixture {
            name: "ICMPv4 echo request, TTL 63, DF",
            // IP(src=C4, dst=US4, ttl=63, id=0x1111, flags=DF)/ICMP(type=8, id=0x77, seq=3)/b"ping-payload" -> type 0, TTL 64
            input: concat!(
            "020000000002020000000001080045000028111140003f019e9cc6120001c61200020800bbf70077000370696e672d70",
            "61796c6f6164",
        ),
            output: Some(concat!(
            "0200000000010200000000020800450000281111400040019d9cc6120002c61200010000c3f70077000370696e672d70",
            "61796c6f6164",
        )),
            verdict: Verdict::Tx,
        },
        Fixture {
            name: "ICMPv4 echo request padded to 60 bytes",
            // IP(id=9)/ICMP(type=8, id=1, seq=1) + 18 bytes of padding, kept
            input: concat!(
            "02000000000202000000000108004500001c000900004001eeb0c6120001c61200020800f7fd00010001000000000000",
            "000000000000000000000000",
        ),
            output: Some(concat!(
            "02000000000102000000000208004500001c000900004001eeb0c6120002c61200010000fffd00010001000000000000",
            "000000000000000000000000",
        )),
            verdict: Verdict::Tx,
        },
        Fixture {
            name: "ICMPv4 echo request in an 802.1Q tag",
            // Dot1Q(vlan=10, prio=2)/IP(ttl=5, id=7)/ICMP(type=8, id=2, seq=2)/b"tagged" -> tag kept
            input: concat!(
            "0200000000020200000000018100400a08004500002200070000050129adc6120001c61200020800b6ce000200027461",
            "67676564",
        ),
            output: Some(concat!(
            "0200000000010200000000028100400a080045000022000700004001eeacc6120002c61200010000bece000200027461",
            "67676564",
        )),
            verdict: Verdict::Tx,
        },
        Fixture {
            name: "ICMPv6 echo request, hop limit 60",
            // IPv6(src=C6, dst=US6, hlim=60)/ICMPv6EchoRequest(id=0x77, seq=3, data=b"ping6-payload")
            input: concat!(
            "02000000000202000000000186dd6000000000153a3c2001000200000000000000000000000120010002000000000000",
            "00000000000280006cff0077000370696e67362d7061796c6f6164",
        ),
            output: Some(concat!(
            "02000000000102000000000286dd6000000000153a402001000200000000000000000000000220010002000000000000",
            "00000000000181006bff0077000370696e67362d7061796c6f6164",
        )),
            verdict: Verdict::Tx,
        },
        Fixture {
            name: "NS to the solicited-node address with SLLA",
            // IPv6(src=C6, dst=ff02::1:ff00:2)/ICMPv6ND_NS(tgt=US6)/ICMPv6NDOptSrcLLAddr(C_MAC) -> NA(S, O)/TLLA(US_MAC)
            input: concat!(
            "3333ff00000202000000000186dd6000000000203aff20010002000000000000000000000001ff020000000000000000",
            "0001ff0000028700379300000000200100020000000000000000000000020101020000000001",
        ),
            output: Some(concat!(
            "02000000000102000000000286dd6000000000203aff2001000200000000000000000000000220010002000000000000",
            "0000000000018800b39360000000200100020000000000000000000000020201020000000002",
        )),
            verdict: Verdict::Tx,
        },
        Fixture {
            name: "unicast NS without SLLA",
            // IPv6(src=C6, dst=US6)/ICMPv6ND_NS(tgt=US6) -> NA(S, O) to the Ethernet source, frame grows by 8 bytes
            input: concat!(
            "02000000000202000000000186dd6000000000183aff2001000200000000000000000000000120010002000000000000",
            "0000000000028700189f0000000020010002000000000000000000000002",
        ),
            output: Some(concat!(
            "02000000000102000000000286dd6000000000203aff2001000200000000000000000000000220010002000000000000",
            "0000000000018800b39360000000200100020000000000000000000000020201020000000002",
        )),
            verdict: Verdict::Tx,
        },
        Fixture {
            name: "DAD NS from the unspecified address",
            // IPv6(src=::, dst=ff02::1:ff00:2)/ICMPv6ND_NS(tgt=US6) -> NA(O) to ff02::1 (33:33:00:00:00:01)
            input: concat!(
            "3333ff00000202000000000386dd6000000000183aff00000000000000000000000000000000ff020000000000000000",
            "0001ff00000287005aa10000000020010002000000000000000000000002",
        ),
            output: Some(concat!(
            "33330000000102000000000286dd6000000000203aff20010002000000000000000000000002ff020000000000000000",
            "0000000000018800149420000000200100020000000000000000000000020201020000000002",
        )),
            verdict: Verdict::Tx,
        },
        Fixture {
            name: "UDP to port 7 over IPv4",
            // IP(ttl=50, id=0x2222)/UDP(sport=40000, dport=7)/b"echo me" -> ports and addresses swapped, TTL 64
            input: concat!(
            "020000000002020000000001080045000023222200003211da80c6120001c61200029c400007000f84206563686f206d",
            "65",
        ),
            output: Some(concat!(
            "020000000001020000000002080045000023222200004011cc80c6120002c612000100079c40000f84206563686f206d",
            "65",
        )),
            verdict: Verdict::Tx,
        },
        Fixture {
            name: "UDP over IPv4 without checksum",
            // UDP(sport=40001, dport=9, chksum=0)/b"no checksum" -> checksum stays 0
            input: concat!(
            "020000000002020000000001080045000027000300004011ee9bc6120001c61200029c410009001300006e6f20636865",
            "636b73756d",
        ),
            output: Some(concat!(
            "020000000001020000000002080045000027000300004011ee9bc6120002c612000100099c41001300006e6f20636865",
            "636b73756d",
        )),
            verdict: Verdict::Tx,
        },
        Fixture {
            name: "UDP to port 7 over IPv6, hop limit 1",
            // IPv6(hlim=1)/UDP(sport=40000, dport=7)/b"echo me six" -> hop limit 64
            input: concat!(
            "02000000000202000000000186dd60000000001311012001000200000000000000000000000120010002000000000000",
            "0000000000029c4000070013e4ad6563686f206d6520736978",
        ),
            output: Some(concat!(
            "02000000000102000000000286dd60000000001311402001000200000000000000000000000220010002000000000000",
            "00000000000100079c400013e4ad6563686f206d6520736978",
        )),
            verdict: Verdict::Tx,
        },
        Fixture {
            name: "UDP over IPv6 with a zero checksum",
            // IPv6()/UDP(dport=7, chksum=0)
            input: concat!(
            "02000000000202000000000186dd60000000000911402001000200000000000000000000000120010002000000000000",
            "0000000000029c4000070009000078",
        ),
            output: None,
            verdict: Verdict::Drop(DropReason::Malformed),
        },
        Fixture {
            name: "UDP to a port we do not serve",
            // IP()/UDP(dport=53)
            input: "020000000002020000000001080045000020000100004011eea4c6120001c61200029c400035000cff8a646e733f",
            output: None,
            verdict: Verdict::Drop(DropReason::NotOurs),
        },
        Fixture {
            name: "TCP SYN to us",
            // IP()/TCP(dport=80, flags=S)
            input: concat!(
            "020000000002020000000001080045000028000100004006eea7c6120001c61200029c40005000000000000000005002",
            "2000672a0000",
        ),
            output: None,
            verdict: Verdict::Drop(DropReason::Unsupported),
        },
        Fixture {
            name: "ICMPv4 destination unreachable to us",
            // IP()/ICMP(type=3, code=1)/...
            input: concat!(
            "020000000002020000000001080045000038000100004001ee9cc6120001c612000203018948000000004500001c0001",
            "00004011eea0c6120002c612000900010002000873ab",
        ),
            output: None,
            verdict: Verdict::Drop(DropReason::Unsupported),
        },
        Fixture {
            name: "ICMPv4 echo request to another address",
            // IP(dst=198.18.0.99)/ICMP(type=8)
            input: "02000000000202000000000108004500001c000100004001ee57c6120001c61200630800f7ff00000000",
            output: None,
            verdict: Verdict::Drop(DropReason::NotOurs),
        },
        Fixture {
            name: "ARP request for another address",
            // ARP(op=1, pdst=198.18.0.99)
            input: "ffffffffffff02000000000108060001080006040001020000000001c6120001000000000000c6120063",
            output: None,
            verdict: Verdict::Drop(DropReason::NotOurs),
        },
        Fixture {
            name: "ARP reply",
            // ARP(op=2)
            input: "02000000000202000000000108060001080006040002020000000001c6120001020000000002c6120002",
            output: None,
            verdict: Verdict::Drop(DropReason::Unsupported),
        },
        Fixture {
            name: "first fragment of a UDP datagram to port 7",
            // fragment(IP(id=0x4444)/UDP(dport=7)/(b"z"*64), fragsize=32)[0]
            input: concat!(
            "0200000000020200000000010800450000344444200040118a4dc6120001c61200029c4000070048879f7a7a7a7a7a7a",
            "7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a",
        ),
            output: None,
            verdict: Verdict::Drop(DropReason::Unsupported),
        },
        Fixture {
            name: "ICMPv4 echo request to another unicast MAC",
            // Ether(dst=02:00:00:00:00:09)/IP(dst=US4)/ICMP(type=8)
            input: "02000000000902000000000108004500001c000100004001eeb8c6120001c61200020800f7ff00000000",
            output: None,
            verdict: Verdict::Drop(DropReason::NotOurs),
        },
        Fixture {
            name: "ICMPv4 echo request from the broadcast address",
            // IP(src=255.255.255.255)/ICMP(type=8)
            input: "02000000000202000000000108004500001c000100004001b4ccffffffffc61200020800f7ff00000000",
            output: None,
            verdict: Verdict::Drop(DropReason::Malformed),
        },
        Fixture {
            name: "LLDP",
            // Ether(dst=01:80:c2:00:00:0e, type=0x88cc)
            input: "0180c200000e02000000000188cc0207040200000000010000",
            output: None,
            verdict: Verdict::Drop(DropReason::Unsupported),
        },
        Fixture {
            name: "ICMPv6 echo request to all nodes",
            // IPv6(dst=ff02::1)/ICMPv6EchoRequest()
            input: concat!(
            "33330000000102000000000186dd6000000000083a4020010002000000000000000000000001ff020000000000000000",
            "000000000001800060b300010001",
        ),
            output: None,
            verdict: Verdict::Drop(DropReason::NotOurs),
        },
        Fixture {
            name: "ICMPv6 echo request behind a destination options header",
            // IPv6()/IPv6ExtHdrDestOpt()/ICMPv6EchoRequest()
            input: concat!(
            "02000000000202000000000186dd6000000000103c402001000200000000000000000000000120010002000000000000",
            "0000000000023a0001040000000080003fb200010001",
        ),
            output: None,
            verdict: Verdict::Drop(DropReason::Unsupported),
        },
        Fixture {
            name: "NS with hop limit 254",
            // IPv6(hlim=254)/ICMPv6ND_NS(tgt=US6)
            input: concat!(
            "3333ff00000202000000000186dd6000000000203afe20010002000000000000000000000001ff020000000000000000",
            "0001ff0000028700379300000000200100020000000000000000000000020101020000000001",
        ),
            output: None,
            verdict: Verdict::Drop(DropReason::Malformed),
        },
        Fixture {
            name: "NS for another address",
            // ICMPv6ND_NS(tgt=2001:2::99)
            input: concat!(
            "3333ff00009902000000000186dd6000000000203aff20010002000000000000000000000001ff020000000000000000",
            "0001ff0000998700366500000000200100020000000000000000000000990101020000000001",
        ),
            output: None,
            verdict: Verdict::Drop(DropReason::NotOurs),
        },
    ];

    // E/IP(src=C4, dst=US4, ttl=63, id=0x1111, flags=DF)/ICMP(type=8, id=0x77, seq=3)/b"ping-payload"
    // with only the MAC addresses swapped.
    const MACSWAP_OUT: &str = concat!(
            "020000000001020000000002080045000028111140003f019e9cc6120001c61200020800bbf70077000370696e672d70",
            "61796c6f6164",
        );

    // Captured with tcpdump between two Linux 6.18 network namespaces (veth, 02:00:00:00:00:01 with
    // 198.18.0.1 and 2001:2::1 pinging 02:00:00:00:00:02 with 198.18.0.2 and 2001:2::2): the kernel's
    // requests and the kernel's own answers.
    const KERNEL_ARP_REQUEST: &str =
        "ffffffffffff02000000000108060001080006040001020000000001c6120001000000000000c6120002";
    const KERNEL_ARP_REPLY: &str =
        "02000000000102000000000208060001080006040002020000000002c6120002020000000001c6120001";
    const KERNEL_NS: &str = concat!(
        "3333ff00000202000000000186dd6000000000203aff20010002000000000000000000000001ff02000000000000",
        "00000001ff0000028700379300000000200100020000000000000000000000020101020000000001",
    );
    const KERNEL_NA: &str = concat!(
        "02000000000102000000000286dd6000000000203aff200100020000000000000000000000022001000200000000",
        "00000000000000018800b39360000000200100020000000000000000000000020201020000000002",
    );
    const KERNEL_ICMP4_REQUEST: &str = concat!(
        "02000000000202000000000108004500002cbfdb40004001eecdc6120001c61200020800621413450001478c026b",
        "0000000038ae000000000000",
    );
    const KERNEL_ICMP4_REPLY: &str = concat!(
        "02000000000102000000000208004500002c47d900004001a6d0c6120002c612000100006a1413450001478c026b",
        "0000000038ae000000000000",
    );
    const KERNEL_ICMP6_REQUEST: &str = concat!(
        "02000000000202000000000186dd600102f800183a40200100020000000000000000000000012001000200000000",
        "00000000000000028000987813460001478c026b0000000049ed000000000000",
    );
    const KERNEL_ICMP6_REPLY: &str = concat!(
        "02000000000102000000000286dd600435db00183a40200100020000000000000000000000022001000200000000",
        "00000000000000018100977813460001478c026b0000000049ed000000000000",
    );
    // The kernel's duplicate address detection for fe80::ff:fe00:2, with a nonce option (RFC 7527).
    const KERNEL_DAD_NS: &str = concat!(
        "3333ff00000202000000000286dd6000000000203aff00000000000000000000000000000000ff02000000000000",
        "00000001ff0000028700ba4b00000000fe80000000000000000000fffe0000020e01b483899d76ad",
    );
    // Ether(dst=33:33:00:00:00:01, src=US_MAC)/IPv6(src=fe80::ff:fe00:2, dst=ff02::1, hlim=255)/
    //   ICMPv6ND_NA(tgt=fe80::ff:fe00:2, R=0, S=0, O=1)/ICMPv6NDOptDstLLAddr(US_MAC), by scapy.
    const DAD_NA: &str = concat!(
        "33330000000102000000000286dd6000000000203afffe80000000000000000000fffe000002ff02000000000000",
        "00000000000000018800599820000000fe80000000000000000000fffe0000020201020000000002",
    );

    #[test]
    fn fixtures() {
        let cfg = config(Mode::Echo);
        for fx in FIXTURES {
            let input = hex(fx.input);
            if fx.verdict != Verdict::Drop(DropReason::Malformed) {
                assert!(checksums_ok(&input), "{}: the input is valid", fx.name);
            }
            let (verdict, out, counters) = run(&input, &cfg);
            assert_eq!(verdict, fx.verdict, "{}", fx.name);
            assert_eq!(
                counters.tx_total() + counters.drop_total(),
                1,
                "{}",
                fx.name
            );
            if let Some(expected) = fx.output {
                assert_eq!(to_hex(&out), expected, "{}", fx.name);
                assert!(checksums_ok(&out), "{}: output checksums", fx.name);
            }
        }
    }

    /// Every single-bit corruption of an answerable request past the Ethernet header is either
    /// dropped or answered with checksums that verify: no answer carries a corrupted address or
    /// payload (the checksums cover both). Corrupted ICMP and UDP requests are counted as
    /// `bad_checksum`.
    #[test]
    fn corrupted_requests_are_never_answered() {
        let cfg = config(Mode::Echo);
        let mut bad_checksum = 0;
        for fx in FIXTURES.iter().filter(|f| f.verdict == Verdict::Tx) {
            let input = hex(fx.input);
            let Ok(info) = parse_frame(&input) else {
                continue;
            };
            if info.ip_version.is_none()
                || info.l4_protocol == IpProtocol::Icmpv6 && fx.name.contains("NS")
            {
                continue;
            }
            for bit in info.l3_offset * 8..input.len() * 8 {
                let mut corrupt = input.clone();
                corrupt[bit / 8] ^= 1 << (bit % 8);
                let (verdict, out, counters) = run(&corrupt, &cfg);
                bad_checksum += counters.drop_bad_checksum;
                if verdict == Verdict::Tx {
                    assert!(
                        checksums_ok(&out),
                        "{}: bit {bit} flipped: answered with bad checksums",
                        fx.name
                    );
                }
            }
        }
        assert!(
            bad_checksum > 0,
            "no corruption was counted as bad_checksum"
        );
    }

    #[test]
    fn bad_checksums_are_counted_and_dropped() {
        let cfg = config(Mode::Echo);
        // Without a checksum (zero, IPv4 only) nothing can be verified.
        let checked =
            |f: &&Fixture| f.verdict == Verdict::Tx && !f.name.contains("without checksum");
        for fx in FIXTURES.iter().filter(checked) {
            let input = hex(fx.input);
            let info = parse_frame(&input).expect("fixture parses");
            let echo6 =
                info.l4_protocol == IpProtocol::Icmpv6 && fx.name.starts_with("ICMPv6 echo");
            if !(matches!(info.l4_protocol, IpProtocol::Udp | IpProtocol::Icmp) || echo6) {
                continue;
            }
            // The last payload byte (not the Ethernet padding): covered by the L4 checksum only.
            let mut corrupt = input.clone();
            corrupt[info.l3_end() - 1] ^= 0x40;
            let (verdict, _, counters) = run(&corrupt, &cfg);
            assert_eq!(
                verdict,
                Verdict::Drop(DropReason::BadChecksum),
                "{}",
                fx.name
            );
            assert_eq!(counters.drop_bad_checksum, 1, "{}", fx.name);
        }
    }

    #[test]
    fn answers_match_the_kernel() {
        let cfg = config(Mode::Echo);
        // ARP and neighbour discovery: byte for byte what Linux answers.
        for (request, reply) in [
            (KERNEL_ARP_REQUEST, KERNEL_ARP_REPLY),
            (KERNEL_NS, KERNEL_NA),
            (KERNEL_DAD_NS, DAD_NA),
        ] {
            let (verdict, out, _) = run(&hex(request), &cfg);
            assert_eq!(verdict, Verdict::Tx);
            assert_eq!(to_hex(&out), reply);
            assert!(checksums_ok(&out));
        }
        // Echo: the kernel picks a fresh IPv4 id (and clears DF) and a fresh IPv6 flow label, which
        // we keep from the request; everything from the ICMP header on is identical, checksum included.
        for (request, reply, l4) in [
            (KERNEL_ICMP4_REQUEST, KERNEL_ICMP4_REPLY, 34),
            (KERNEL_ICMP6_REQUEST, KERNEL_ICMP6_REPLY, 54),
        ] {
            let (verdict, out, _) = run(&hex(request), &cfg);
            assert_eq!(verdict, Verdict::Tx);
            let kernel = hex(reply);
            assert_eq!(out[..12], kernel[..12], "MAC addresses");
            assert_eq!(to_hex(&out[l4..]), to_hex(&kernel[l4..]), "ICMP message");
            let (ours, theirs) = (parse_frame(&out).unwrap(), parse_frame(&kernel).unwrap());
            assert_eq!(
                (ours.src, ours.dst, ours.hop_limit),
                (theirs.src, theirs.dst, theirs.hop_limit)
            );
            assert!(checksums_ok(&out));
        }
    }

    #[test]
    fn every_truncation_is_malformed() {
        let cfg = config(Mode::Echo);
        for fx in FIXTURES
            .iter()
            .filter(|f| f.verdict == Verdict::Tx && !f.name.contains("padded"))
        {
            let input = hex(fx.input);
            for len in 0..input.len() {
                let (verdict, ..) = run(&input[..len], &cfg);
                assert_eq!(
                    verdict,
                    Verdict::Drop(DropReason::Malformed),
                    "{} cut to {len}",
                    fx.name
                );
            }
        }
    }

    #[test]
    fn corrupted_checksums_and_sources() {
        let cfg = config(Mode::Echo);
        let drop = Verdict::Drop(DropReason::Malformed);
        // NS whose ICMPv6 checksum is off by one.
        let mut ns = hex(KERNEL_NS);
        ns[14 + 40 + 3] ^= 1;
        assert_eq!(run(&ns, &cfg).0, drop);
        // IPv4 header checksum off by one.
        let mut ping = hex(KERNEL_ICMP4_REQUEST);
        ping[14 + 11] ^= 1;
        assert_eq!(run(&ping, &cfg).0, drop);
        // Multicast Ethernet source.
        let mut ping = hex(KERNEL_ICMP4_REQUEST);
        ping[6] |= 1;
        assert_eq!(run(&ping, &cfg).0, drop);
        // DAD NS carrying a source link-layer address option (forbidden by RFC 4861 7.1.1).
        let mut dad = hex(KERNEL_DAD_NS);
        dad[14 + 40 + 24] = 1;
        let ip = Ipv6Packet::new_checked(&dad[14..]).unwrap();
        let (s, d) = (ip.src_addr(), ip.dst_addr());
        NdpNeighbor::new_checked(&mut dad[54..])
            .unwrap()
            .fill_checksum(&s, &d);
        assert_eq!(run(&dad, &cfg).0, drop);
    }

    #[test]
    fn a_kernel_request_with_a_bad_checksum_is_dropped() {
        let mut ping = hex(KERNEL_ICMP6_REQUEST);
        ping[60] ^= 0xff;
        let (verdict, _, counters) = run(&ping, &config(Mode::Echo));
        assert_eq!(verdict, Verdict::Drop(DropReason::BadChecksum));
        assert_eq!(counters.drop_bad_checksum, 1);
    }

    #[test]
    fn advertisement_needs_tailroom() {
        // The unicast NS has no options: the answer is 8 bytes longer.
        let ns = hex(FIXTURES
            .iter()
            .find(|f| f.name == "unicast NS without SLLA")
            .unwrap()
            .input);
        let mut tight = VecFrame::new(&ns, 0, ns.len());
        let mut counters = EchoCounters::default();
        let verdict = process(&mut tight, &config(Mode::Echo), &mut counters);
        assert_eq!(verdict, Verdict::Drop(DropReason::Unsupported));
        assert_eq!(counters.drop_unsupported, 1);
        let (verdict, out, _) = run(&ns, &config(Mode::Echo));
        assert_eq!((verdict, out.len()), (Verdict::Tx, ns.len() + 8));
    }

    #[test]
    fn mac_swap_and_drop_modes() {
        let ping = hex(FIXTURES[1].input);
        let (verdict, out, counters) = run(&ping, &config(Mode::MacSwap));
        assert_eq!(
            (verdict, to_hex(&out)),
            (Verdict::Tx, MACSWAP_OUT.to_string())
        );
        assert_eq!(counters.mac_swapped, 1);
        assert_eq!(run(&ping[..14], &config(Mode::MacSwap)).0, Verdict::Tx);
        assert_eq!(
            run(&ping[..13], &config(Mode::MacSwap)).0,
            Verdict::Drop(DropReason::Malformed)
        );
        for fx in FIXTURES {
            let (verdict, out, counters) = run(&hex(fx.input), &config(Mode::Drop));
            assert_eq!(verdict, Verdict::Drop(DropReason::Policy));
            assert_eq!(out, hex(fx.input), "drop mode leaves the frame alone");
            assert_eq!(counters.drop_policy, 1);
        }
    }

    #[test]
    fn counters_add_up() {
        let cfg = config(Mode::Echo);
        let mut frame = VecFrame::from_bytes(&[]);
        let mut total = EchoCounters::default();
        for fx in FIXTURES {
            let mut one = EchoCounters::default();
            assert!(frame.reset(&hex(fx.input), VecFrame::DEFAULT_HEADROOM));
            process(&mut frame, &cfg, &mut one);
            total.merge(&one);
        }
        let tx = FIXTURES.iter().filter(|f| f.verdict == Verdict::Tx).count() as u64;
        assert_eq!(total.tx_total(), tx);
        assert_eq!(total.drop_total(), FIXTURES.len() as u64 - tx);
        assert_eq!(
            (
                total.arp_replies,
                total.neighbor_adverts,
                total.icmpv4_echo_replies
            ),
            (1, 3, 3)
        );
        assert_eq!((total.icmpv6_echo_replies, total.udp_echoes), (1, 3));
        for reason in DropReason::ALL {
            let expected = FIXTURES
                .iter()
                .filter(|f| f.verdict == Verdict::Drop(reason))
                .count() as u64;
            assert_eq!(total.drops(reason), expected, "{reason}");
        }
    }

    #[test]
    fn modes_parse() {
        assert_eq!("echo".parse(), Ok(Mode::Echo));
        assert_eq!("lb".parse(), Ok(Mode::MacSwap));
        assert_eq!("macswap".parse(), Ok(Mode::MacSwap));
        assert_eq!("rx-drop".parse(), Ok(Mode::Drop));
        assert!("fwd".parse::<Mode>().is_err());
        for m in [Mode::Echo, Mode::MacSwap, Mode::Drop] {
            assert_eq!(m.to_string().parse(), Ok(m));
        }
    }

    /// An echo request (ICMPv4, ICMPv6, UDP over either) from a random peer, optionally VLAN-tagged,
    /// built with the wire layer's emit helpers and checksums.
    fn request() -> impl Strategy<Value = Vec<u8>> {
        (
            0u8..4,
            any::<[u8; 16]>(),
            any::<u16>(),
            any::<u16>(),
            prop::sample::select(vec![7u16, 9]),
            proptest::collection::vec(any::<u8>(), 0..100),
            1u8..=255,
            proptest::option::of(0u16..4096),
        )
            .prop_map(|(kind, peer, ident, sport, dport, payload, ttl, vid)| {
                use cne::wire::{EthernetRepr, Ipv4Repr};
                let v6 = kind >= 2;
                let icmp = kind % 2 == 0;
                let l4_len = 8 + payload.len();
                let mut f = vec![0u8; 18 + 40 + l4_len];
                let ethertype = if v6 { EtherType::Ipv6 } else { EtherType::Ipv4 };
                let mut at = EthernetRepr {
                    dst: MacAddr(US_MAC),
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
                let (src, dst): (IpAddr, IpAddr) = if v6 {
                    let mut p = peer;
                    p[..2].copy_from_slice(&[0x20, 0x01]);
                    let r = Ipv6Repr {
                        src: Ipv6Addr::from(p),
                        dst: "2001:2::2".parse().unwrap(),
                        next_header: if icmp {
                            IpProtocol::Icmpv6
                        } else {
                            IpProtocol::Udp
                        },
                        payload_len: l4_len as u16,
                        hop_limit: ttl,
                        traffic_class: 0,
                        flow_label: 0,
                    };
                    at += r.emit(&mut f[at..]).unwrap();
                    (r.src.into(), r.dst.into())
                } else {
                    let r = Ipv4Repr {
                        src: std::net::Ipv4Addr::new(198, 18, peer[0], peer[1].max(1)),
                        dst: std::net::Ipv4Addr::new(198, 18, 0, 2),
                        protocol: if icmp {
                            IpProtocol::Icmp
                        } else {
                            IpProtocol::Udp
                        },
                        payload_len: l4_len as u16,
                        ttl,
                        tos: 0,
                        ident,
                        dont_frag: true,
                    };
                    at += r.emit(&mut f[at..]).unwrap();
                    (r.src.into(), r.dst.into())
                };
                f.truncate(at + l4_len);
                let l4 = &mut f[at..];
                l4[8..].copy_from_slice(&payload);
                if icmp {
                    l4[..2].copy_from_slice(if v6 { &[128, 0] } else { &[8, 0] });
                    l4[4..6].copy_from_slice(&ident.to_be_bytes());
                    l4[6..8].copy_from_slice(&sport.to_be_bytes());
                    match (src, dst) {
                        (IpAddr::V6(s), IpAddr::V6(d)) => {
                            Icmpv6Packet::new_checked(l4).unwrap().fill_checksum(&s, &d)
                        }
                        _ => Icmpv4Packet::new_checked(l4).unwrap().fill_checksum(),
                    }
                } else {
                    l4[..2].copy_from_slice(&sport.to_be_bytes());
                    l4[2..4].copy_from_slice(&dport.to_be_bytes());
                    l4[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
                    UdpPacket::new_checked(l4)
                        .unwrap()
                        .fill_checksum(&src, &dst)
                        .unwrap();
                }
                f
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            for mode in [Mode::Echo, Mode::MacSwap, Mode::Drop] {
                let (_, _, counters) = run(&bytes, &config(mode));
                prop_assert_eq!(counters.tx_total() + counters.drop_total(), 1);
            }
        }

        #[test]
        fn requests_become_valid_answers(req in request()) {
            prop_assert!(checksums_ok(&req));
            let (verdict, out, _) = run(&req, &config(Mode::Echo));
            prop_assert_eq!(verdict, Verdict::Tx);
            prop_assert!(checksums_ok(&out), "answer checksums");
            let (i, o) = (parse_frame(&req).unwrap(), parse_frame(&out).unwrap());
            prop_assert_eq!((o.src, o.dst), (i.dst, i.src));
            prop_assert_eq!((o.src_port, o.dst_port), (i.dst_port, i.src_port));
            prop_assert_eq!((o.hop_limit, o.vlan_ids), (REPLY_TTL, i.vlan_ids));
            prop_assert_eq!(&out[..6], &req[6..12]);
            prop_assert_eq!(&out[6..12], &US_MAC[..]);
            // Payload untouched.
            prop_assert_eq!(&out[o.l4_offset + 8..], &req[i.l4_offset + 8..]);
        }

        #[test]
        fn mutated_requests_never_panic_and_answers_stay_valid(
            req in request(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut f = req;
            for (at, v) in flips {
                let i = at.index(f.len());
                f[i] = v;
            }
            let f = &f[..cut.index(f.len() + 1)];
            let (verdict, out, counters) = run(f, &config(Mode::Echo));
            prop_assert_eq!(counters.tx_total() + counters.drop_total(), 1);
            if verdict == Verdict::Tx {
                prop_assert!(parse_frame(&out).is_ok());
                prop_assert_eq!(&out[6..12], &US_MAC[..]);
                if checksums_ok(f) {
                    prop_assert!(checksums_ok(&out));
                }
            }
        }
    }
}
