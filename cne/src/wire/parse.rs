//! The one-pass frame parser of the data paths: [`parse_frame`] reads Ethernet, VLAN tags, IPv4 or IPv6
//! (with extension headers) and the TCP/UDP ports once and returns a small `Copy` summary.
//!
//! It allocates nothing, reads each header once through fixed-size arrays (one bounds check per header,
//! not per field) and takes a fast path for IPv6 datagrams without extension headers. It checks what a
//! forwarding decision relies on: every length it follows lies inside the frame and the IP total length
//! agrees with the bytes present (a truncated datagram is [`Malformed`]; Ethernet padding after the
//! datagram is tolerated). It does not verify checksums: the kernel or the final receiver does that,
//! and summing every packet would cost more than the rest of the parse.
//!
//! Ports and TCP flags are read from unfragmented datagrams and first fragments only; a first
//! fragment too short to hold the UDP or TCP header is [`Malformed`] (RFC 1858's tiny fragments).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::ipv6::walk_ext;
use super::vlan::{self, MAX_TAGS};
use super::{EtherType, IpProtocol, IpVersion, Malformed, Result, TcpFlags};

/// What the data paths need to know about a frame, found in one pass by [`parse_frame`].
///
/// For frames that carry no IP datagram (`ip_version == None`: ARP, unknown EtherTypes, VLAN stacks
/// deeper than [`MAX_TAGS`]) only `ethertype`, the VLAN fields and `l3_offset` are meaningful; the other
/// fields hold `0.0.0.0`, zeros and [`IpProtocol::Reserved`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameInfo {
    /// EtherType after the VLAN tags.
    pub ethertype: EtherType,
    /// Number of VLAN tags skipped (0 to [`MAX_TAGS`]).
    pub vlan_count: u8,
    /// VLAN ids, outermost first; entries past `vlan_count` are 0.
    pub vlan_ids: [u16; MAX_TAGS],
    /// Offset of the network header (IP, ARP) from the start of the frame.
    pub l3_offset: usize,
    /// IP version, or `None` when the frame carries no IP datagram.
    pub ip_version: Option<IpVersion>,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Length of the IP datagram: the IPv4 total length, or 40 plus the IPv6 payload length. The
    /// datagram ends at `l3_offset + ip_len`; the frame may continue with link padding.
    pub ip_len: usize,
    /// IPv4 TTL or IPv6 hop limit.
    pub hop_limit: u8,
    /// IPv4 type-of-service byte or IPv6 traffic class (DSCP and ECN).
    pub traffic_class: u8,
    /// Upper-layer protocol, after any IPv6 extension headers (for a non-first IPv6 fragment, the next
    /// header named by the fragment header).
    pub l4_protocol: IpProtocol,
    /// Offset of the upper-layer header (or of the fragment data) from the start of the frame.
    pub l4_offset: usize,
    /// Part of a fragmented datagram (IPv4 MF or offset; IPv6 fragment header other than an atomic
    /// fragment).
    pub is_fragment: bool,
    /// The first fragment (offset 0, more fragments): it carries the upper-layer header.
    pub is_first_fragment: bool,
    /// IPv4 identification, or IPv6 fragment identification (0 without a fragment header).
    pub fragment_id: u32,
    /// Fragment offset in bytes.
    pub fragment_offset: u16,
    /// "More fragments" flag.
    pub more_fragments: bool,
    /// TCP or UDP source port; 0 when [`FrameInfo::has_ports`] is false.
    pub src_port: u16,
    /// TCP or UDP destination port; 0 when [`FrameInfo::has_ports`] is false.
    pub dst_port: u16,
    /// TCP flags; empty unless the frame carries a TCP header.
    pub tcp_flags: TcpFlags,
}

impl FrameInfo {
    /// Whether `src_port`/`dst_port` were read: TCP or UDP, unfragmented or first fragment.
    #[inline]
    pub fn has_ports(&self) -> bool {
        matches!(self.l4_protocol, IpProtocol::Tcp | IpProtocol::Udp) && self.fragment_offset == 0
    }

    /// Offset of the end of the IP datagram (where link padding, if any, starts).
    #[inline]
    pub fn l3_end(&self) -> usize {
        self.l3_offset + self.ip_len
    }

    /// Bytes from the upper-layer header to the end of the datagram.
    #[inline]
    pub fn l4_len(&self) -> usize {
        self.l3_end().saturating_sub(self.l4_offset)
    }
}

/// Parses the Ethernet, VLAN, IP and TCP/UDP headers of `frame` (starting at the destination MAC).
///
/// [`Malformed`] when the frame ends inside a header it announces, the IP version contradicts the
/// EtherType, an IPv4 header length or total length is inconsistent, the IP datagram is longer than the
/// frame, an IPv6 extension header chain is broken or longer than
/// [`super::ipv6::MAX_EXT_HEADERS`], or a UDP length / TCP data offset is out of range.
#[inline(always)]
pub fn parse_frame(frame: &[u8]) -> Result<FrameInfo> {
    let vlans = vlan::walk(frame)?;
    let mut info = FrameInfo {
        ethertype: EtherType::from(vlans.ethertype),
        vlan_count: vlans.count,
        vlan_ids: vlans.vids,
        l3_offset: vlans.offset,
        ip_version: None,
        src: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        ip_len: 0,
        hop_limit: 0,
        traffic_class: 0,
        l4_protocol: IpProtocol::Reserved,
        l4_offset: vlans.offset,
        is_fragment: false,
        is_first_fragment: false,
        fragment_id: 0,
        fragment_offset: 0,
        more_fragments: false,
        src_port: 0,
        dst_port: 0,
        tcp_flags: TcpFlags(0),
    };
    let l3 = frame.get(vlans.offset..).ok_or(Malformed)?;
    match vlans.ethertype {
        0x0800 => ipv4(l3, &mut info)?,
        0x86dd => ipv6(l3, &mut info)?,
        _ => {}
    }
    Ok(info)
}

#[inline(always)]
fn ipv4(l3: &[u8], info: &mut FrameInfo) -> Result<()> {
    let h: &[u8; 20] = l3
        .get(..20)
        .and_then(|s| s.try_into().ok())
        .ok_or(Malformed)?;
    let ihl = usize::from(h[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
    if h[0] >> 4 != 4 || ihl < 20 || total < ihl || total > l3.len() {
        return Err(Malformed);
    }
    let flags_offset = u16::from_be_bytes([h[6], h[7]]);
    let more = flags_offset & 0x2000 != 0;
    let offset = (flags_offset & 0x1fff) << 3;
    info.ip_version = Some(IpVersion::V4);
    info.src = IpAddr::V4(Ipv4Addr::new(h[12], h[13], h[14], h[15]));
    info.dst = IpAddr::V4(Ipv4Addr::new(h[16], h[17], h[18], h[19]));
    info.ip_len = total;
    info.hop_limit = h[8];
    info.traffic_class = h[1];
    info.l4_protocol = IpProtocol::from(h[9]);
    info.l4_offset = info.l3_offset + ihl;
    info.is_fragment = more || offset != 0;
    info.is_first_fragment = more && offset == 0;
    info.fragment_id = u32::from(u16::from_be_bytes([h[4], h[5]]));
    info.fragment_offset = offset;
    info.more_fragments = more;
    if offset == 0 {
        let l4 = l3.get(ihl..total).ok_or(Malformed)?;
        ports(l4, info)?;
    }
    Ok(())
}

#[inline(always)]
fn ipv6(l3: &[u8], info: &mut FrameInfo) -> Result<()> {
    let h: &[u8; 40] = l3
        .get(..40)
        .and_then(|s| s.try_into().ok())
        .ok_or(Malformed)?;
    let total = 40 + usize::from(u16::from_be_bytes([h[4], h[5]]));
    if h[0] >> 4 != 6 || total > l3.len() {
        return Err(Malformed);
    }
    let mut src = [0u8; 16];
    src.copy_from_slice(&h[8..24]);
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&h[24..40]);
    info.ip_version = Some(IpVersion::V6);
    info.src = IpAddr::V6(Ipv6Addr::from(src));
    info.dst = IpAddr::V6(Ipv6Addr::from(dst));
    info.ip_len = total;
    info.hop_limit = h[7];
    info.traffic_class = (h[0] << 4) | (h[1] >> 4);
    let next = h[6];
    let (protocol, l4_at) = if matches!(next, 0 | 43 | 44 | 60) {
        let ul = walk_ext(l3, total)?;
        if let Some(f) = ul.fragment {
            info.is_fragment = f.is_fragment();
            info.is_first_fragment = f.is_first();
            info.fragment_id = f.ident;
            info.fragment_offset = f.offset;
            info.more_fragments = f.more;
        }
        (ul.protocol, ul.offset)
    } else {
        (IpProtocol::from(next), 40)
    };
    info.l4_protocol = protocol;
    info.l4_offset = info.l3_offset + l4_at;
    if info.fragment_offset == 0 {
        let l4 = l3.get(l4_at..total).ok_or(Malformed)?;
        ports(l4, info)?;
    }
    Ok(())
}

/// Reads ports (and TCP flags) from the upper-layer header `l4` (which ends where the datagram ends).
#[inline(always)]
fn ports(l4: &[u8], info: &mut FrameInfo) -> Result<()> {
    match info.l4_protocol {
        IpProtocol::Udp => {
            let h: &[u8; 8] = l4
                .get(..8)
                .and_then(|s| s.try_into().ok())
                .ok_or(Malformed)?;
            // A first fragment holds only part of the datagram the length field describes.
            let len = usize::from(u16::from_be_bytes([h[4], h[5]]));
            if !info.is_fragment && (len < 8 || len > l4.len()) {
                return Err(Malformed);
            }
            info.src_port = u16::from_be_bytes([h[0], h[1]]);
            info.dst_port = u16::from_be_bytes([h[2], h[3]]);
        }
        IpProtocol::Tcp => {
            let h: &[u8; 20] = l4
                .get(..20)
                .and_then(|s| s.try_into().ok())
                .ok_or(Malformed)?;
            let hlen = usize::from(h[12] >> 4) * 4;
            if hlen < 20 || hlen > l4.len() {
                return Err(Malformed);
            }
            info.src_port = u16::from_be_bytes([h[0], h[1]]);
            info.dst_port = u16::from_be_bytes([h[2], h[3]]);
            info.tcp_flags = TcpFlags(h[13]);
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn v4(s: &str) -> IpAddr {
        IpAddr::V4(s.parse().unwrap())
    }

    fn v6(s: &str) -> IpAddr {
        IpAddr::V6(s.parse().unwrap())
    }

    // Frames below were generated with scapy 2.8; the expression precedes each. E is
    // Ether(dst="02:00:00:00:00:02", src="02:00:00:00:00:01").

    // E/IP(src="198.18.0.1", dst="198.18.0.2", id=1)/UDP(sport=1234, dport=7)/b"hello"
    const UDP4: &str = "020000000002020000000001080045000021000100004011eea3c6120001c612000204d20007000d2b0168656c6c6f";

    // E/IP(src="198.18.0.1", dst="198.18.1.1", id=2, options=[IPOption_Router_Alert()])/
    //   TCP(sport=40000, dport=443, flags="SA", seq=1, ack=2, options=[("MSS",1460),("NOP",None),("WScale",7)])
    const TCP4_OPTIONS: &str = "0200000000020200000000010800460000340002000040065897c6120001c6120101940400009c4001bb00000001000000027012200038e30000020405b401030307";

    // fragment(IP(src="198.18.0.1", dst="198.18.0.2", id=0xbeef)/UDP(sport=5000, dport=6000)/(b"x"*60), fragsize=32)
    const FRAG4: [&str; 3] = [
        "020000000002020000000001080045000034beef200040110fa2c6120001c61200021388177000442a28787878787878787878787878787878787878787878787878",
        "020000000002020000000001080045000034beef200440110f9ec6120001c61200027878787878787878787878787878787878787878787878787878787878787878",
        "020000000002020000000001080045000018beef000840112fb6c6120001c612000278787878",
    ];

    // E/Dot1Q(vlan=42, prio=3)/IPv6(src="2001:2::1", dst="2001:2::2", tc=0xb8, fl=0x12345)/
    //   TCP(sport=1111, dport=80, flags="PA")/b"GET"
    const VLAN_TCP6: &str = "0200000000020200000000018100602a86dd6b81234500170640200100020000000000000000000000012001000200000000000000000000000204570050000000000000000050182000afd40000474554";

    // E/Dot1AD(vlan=100)/Dot1Q(vlan=200)/IPv6(src="2001:2::1", dst="2001:2::2")/IPv6ExtHdrHopByHop()/
    //   IPv6ExtHdrDestOpt()/UDP(sport=53, dport=5353)/b"q"
    const QINQ_EXT6: &str = "02000000000202000000000188a80064810000c886dd600000000019004020010002000000000000000000000001200100020000000000000000000000023c000104000000001100010400000000003514e9000939b571";

    // fragment6(IPv6(src="2001:2::1", dst="2001:2::2")/IPv6ExtHdrFragment(id=0xcafe)/
    //   UDP(sport=7000, dport=8000)/(b"y"*100), 80): first and second of four
    const FRAG6: [&str; 2] = [
        "02000000000202000000000186dd6000000000282c402001000200000000000000000000000120010002000000000000000000000002110000010000cafe1b581f40006ccabb797979797979797979797979797979797979797979797979",
        "02000000000202000000000186dd6000000000282c402001000200000000000000000000000120010002000000000000000000000002110000210000cafe7979797979797979797979797979797979797979797979797979797979797979",
    ];

    // Ether(dst="ff:ff:ff:ff:ff:ff", src="02:00:00:00:00:01")/ARP(op=1, hwsrc="02:00:00:00:00:01",
    //   psrc="198.18.0.1", pdst="198.18.0.2")
    const ARP: &str =
        "ffffffffffff02000000000108060001080006040001020000000001c6120001000000000000c6120002";

    // E/IPv6(src="2001:2::1", dst="2001:2::2")/ICMPv6EchoRequest(id=1, seq=2)
    const ICMP6: &str = "02000000000202000000000186dd6000000000083a40200100020000000000000000000000012001000200000000000000000000000280003fb100010002";

    #[test]
    fn ipv4_udp_with_padding() {
        let mut f = hex(UDP4);
        assert_eq!(f.len(), 47);
        f.resize(60, 0);
        let i = parse_frame(&f).unwrap();
        assert_eq!(i.ethertype, EtherType::Ipv4);
        assert_eq!((i.vlan_count, i.l3_offset), (0, 14));
        assert_eq!(i.ip_version, Some(IpVersion::V4));
        assert_eq!((i.src, i.dst), (v4("198.18.0.1"), v4("198.18.0.2")));
        assert_eq!((i.ip_len, i.l3_end(), i.hop_limit), (33, 47, 64));
        assert_eq!(
            (i.l4_protocol, i.l4_offset, i.l4_len()),
            (IpProtocol::Udp, 34, 13)
        );
        assert!(!i.is_fragment && !i.is_first_fragment);
        assert_eq!(i.fragment_id, 1);
        assert!(i.has_ports());
        assert_eq!((i.src_port, i.dst_port), (1234, 7));
        assert!(i.tcp_flags.is_empty());
    }

    #[test]
    fn ipv4_truncated_or_inconsistent_is_malformed() {
        let f = hex(UDP4);
        assert_eq!(parse_frame(&f[..46]), Err(Malformed));
        assert_eq!(parse_frame(&f[..33]), Err(Malformed));
        assert_eq!(parse_frame(&f[..13]), Err(Malformed));
        // UDP length field beyond the datagram, then below the header.
        let mut bad = f.clone();
        bad[39] = 14;
        assert_eq!(parse_frame(&bad), Err(Malformed));
        bad[39] = 7;
        assert_eq!(parse_frame(&bad), Err(Malformed));
        // IP version 6 under EtherType IPv4; header length 4 words.
        let mut bad = f.clone();
        bad[14] = 0x65;
        assert_eq!(parse_frame(&bad), Err(Malformed));
        bad[14] = 0x44;
        assert_eq!(parse_frame(&bad), Err(Malformed));
        // Total length shorter than the header.
        let mut bad = f;
        bad[17] = 19;
        assert_eq!(parse_frame(&bad), Err(Malformed));
    }

    #[test]
    fn ipv4_options_and_tcp_flags() {
        let f = hex(TCP4_OPTIONS);
        let i = parse_frame(&f).unwrap();
        assert_eq!((i.l4_protocol, i.l4_offset), (IpProtocol::Tcp, 14 + 24));
        assert_eq!((i.src_port, i.dst_port), (40000, 443));
        assert_eq!(i.tcp_flags, TcpFlags::SYN | TcpFlags::ACK);
        assert_eq!(i.dst, v4("198.18.1.1"));
        // TCP data offset beyond the segment.
        let mut bad = f.clone();
        bad[38 + 12] = 0xf0;
        assert_eq!(parse_frame(&bad), Err(Malformed));
        // Data offset below 5 words.
        bad[38 + 12] = 0x40;
        assert_eq!(parse_frame(&bad), Err(Malformed));
    }

    #[test]
    fn ipv4_fragments() {
        let first = parse_frame(&hex(FRAG4[0])).unwrap();
        assert!(first.is_fragment && first.is_first_fragment && first.more_fragments);
        assert_eq!((first.fragment_id, first.fragment_offset), (0xbeef, 0));
        assert!(first.has_ports());
        assert_eq!((first.src_port, first.dst_port), (5000, 6000));

        let middle = parse_frame(&hex(FRAG4[1])).unwrap();
        assert!(middle.is_fragment && !middle.is_first_fragment && middle.more_fragments);
        assert_eq!((middle.fragment_id, middle.fragment_offset), (0xbeef, 32));
        assert_eq!(middle.l4_protocol, IpProtocol::Udp);
        assert!(!middle.has_ports());
        assert_eq!((middle.src_port, middle.dst_port), (0, 0));

        let last = parse_frame(&hex(FRAG4[2])).unwrap();
        assert!(last.is_fragment && !last.is_first_fragment && !last.more_fragments);
        assert_eq!(last.fragment_offset, 64);

        // A first fragment too short for the UDP header.
        let mut tiny = hex(FRAG4[0]);
        tiny.truncate(14 + 20 + 4);
        tiny[17] = 24;
        assert_eq!(parse_frame(&tiny), Err(Malformed));
    }

    #[test]
    fn vlan_ipv6_tcp() {
        let i = parse_frame(&hex(VLAN_TCP6)).unwrap();
        assert_eq!((i.vlan_count, i.vlan_ids), (1, [42, 0]));
        assert_eq!((i.ethertype, i.l3_offset), (EtherType::Ipv6, 18));
        assert_eq!(i.ip_version, Some(IpVersion::V6));
        assert_eq!((i.src, i.dst), (v6("2001:2::1"), v6("2001:2::2")));
        assert_eq!((i.traffic_class, i.hop_limit, i.ip_len), (0xb8, 64, 63));
        assert_eq!((i.l4_protocol, i.l4_offset), (IpProtocol::Tcp, 58));
        assert_eq!((i.src_port, i.dst_port), (1111, 80));
        assert_eq!(i.tcp_flags, TcpFlags::PSH | TcpFlags::ACK);
        assert!(!i.is_fragment);
    }

    #[test]
    fn qinq_ipv6_extension_headers() {
        let f = hex(QINQ_EXT6);
        let i = parse_frame(&f).unwrap();
        assert_eq!((i.vlan_count, i.vlan_ids, i.l3_offset), (2, [100, 200], 22));
        assert_eq!(
            (i.l4_protocol, i.l4_offset),
            (IpProtocol::Udp, 22 + 40 + 16)
        );
        assert_eq!((i.src_port, i.dst_port), (53, 5353));
        // Cut inside the destination options header (payload length adjusted to match).
        let mut bad = f[..22 + 40 + 12].to_vec();
        bad[22 + 5] = 12;
        assert_eq!(parse_frame(&bad), Err(Malformed));
    }

    #[test]
    fn ipv6_fragments() {
        let first = parse_frame(&hex(FRAG6[0])).unwrap();
        assert!(first.is_fragment && first.is_first_fragment);
        assert_eq!(
            (first.fragment_id, first.l4_protocol),
            (0xcafe, IpProtocol::Udp)
        );
        assert_eq!(
            (first.l4_offset, first.src_port, first.dst_port),
            (14 + 48, 7000, 8000)
        );

        let second = parse_frame(&hex(FRAG6[1])).unwrap();
        assert!(second.is_fragment && !second.is_first_fragment);
        assert_eq!((second.fragment_id, second.fragment_offset), (0xcafe, 32));
        assert_eq!(
            (second.l4_protocol, second.l4_offset),
            (IpProtocol::Udp, 62)
        );
        assert!(!second.has_ports());
    }

    #[test]
    fn ipv6_truncated_is_malformed() {
        let f = hex(ICMP6);
        let i = parse_frame(&f).unwrap();
        assert_eq!(
            (i.l4_protocol, i.l4_offset, i.l4_len()),
            (IpProtocol::Icmpv6, 54, 8)
        );
        assert!(!i.has_ports());
        assert_eq!(parse_frame(&f[..61]), Err(Malformed));
        assert_eq!(parse_frame(&f[..53]), Err(Malformed));
        let mut bad = f;
        bad[14] = 0x45;
        assert_eq!(parse_frame(&bad), Err(Malformed));
    }

    #[test]
    fn non_ip_frames() {
        let i = parse_frame(&hex(ARP)).unwrap();
        assert_eq!(
            (i.ethertype, i.l3_offset, i.ip_version),
            (EtherType::Arp, 14, None)
        );
        assert_eq!(
            (i.l4_protocol, i.ip_len, i.src),
            (IpProtocol::Reserved, 0, v4("0.0.0.0"))
        );
        assert!(!i.has_ports());
        let mut lldp = hex(ARP);
        lldp[12..14].copy_from_slice(&[0x88, 0xcc]);
        assert_eq!(
            parse_frame(&lldp).unwrap().ethertype,
            EtherType::Unknown(0x88cc)
        );
        assert_eq!(parse_frame(&lldp[..14]).unwrap().l3_offset, 14);
    }
}
