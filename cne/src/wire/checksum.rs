//! The internet checksum (RFC 1071): the ones-complement of the ones-complement sum of 16-bit
//! big-endian words, with the pseudo-headers of IPv4 and IPv6 and RFC 1624 incremental updates.
//!
//! [`data`] sums eight bytes at a time into four independent 64-bit accumulators with end-around carry,
//! then folds to 16 bits. The words are loaded in native byte order and the folded result is swapped
//! once at the end: the ones-complement sum is byte-order independent (RFC 1071 section 2.B), and
//! 2^16 = 1 modulo 0xffff, so summing 64-bit words is the same as summing their four 16-bit parts.
//!
//! Sums compose: the checksum of a pseudo-header followed by a segment is
//! `!combine(&[pseudo_header_v4(..), data(segment)])`, as long as every part but the last has an even
//! length. The incremental updates ([`update_u16`], [`update_u32`], [`update_bytes`], [`update_addr`])
//! use RFC 1624 equation 3, `HC' = ~(~HC + ~m + m')`, which (unlike equation 2 of RFC 1141) never
//! produces the `0xffff` form of zero, so it agrees with a full recomputation whenever the covered
//! data is not all zeros. UDP's "0 means no checksum" is the caller's concern: skip the update when an
//! IPv4 UDP checksum is 0, and transmit a computed 0 as `0xffff`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{IpProtocol, Malformed, Result};

/// Adds with end-around carry (ones-complement addition on 64 bits).
#[inline(always)]
fn add_carry(acc: u64, value: u64) -> u64 {
    let (sum, carry) = acc.overflowing_add(value);
    // When the add overflowed, `sum` is at most 2^64 - 2, so adding the carry cannot overflow again.
    sum.wrapping_add(u64::from(carry))
}

/// Loads eight bytes in native order; `chunk` is always eight bytes long where this is called.
#[inline(always)]
fn ne64(chunk: &[u8]) -> u64 {
    <[u8; 8]>::try_from(chunk).map_or(0, u64::from_ne_bytes)
}

/// Folds a 64-bit ones-complement accumulator to 16 bits.
#[inline(always)]
fn fold(mut acc: u64) -> u16 {
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    // Four folds bring any u64 below 2^16 (the bound after each step: 2^33, 2^18, 2^16 + 1, 2^16 - 1).
    (acc & 0xffff) as u16
}

/// Ones-complement sum of `bytes` as big-endian 16-bit words (an odd trailing byte is padded with a
/// zero byte), folded to 16 bits and not complemented.
#[inline]
pub fn data(bytes: &[u8]) -> u16 {
    let (mut a, mut b, mut c, mut d) = (0u64, 0u64, 0u64, 0u64);
    let mut blocks = bytes.chunks_exact(32);
    for block in &mut blocks {
        a = add_carry(a, ne64(&block[0..8]));
        b = add_carry(b, ne64(&block[8..16]));
        c = add_carry(c, ne64(&block[16..24]));
        d = add_carry(d, ne64(&block[24..32]));
    }
    let mut acc = add_carry(add_carry(a, b), add_carry(c, d));
    let mut words = blocks.remainder().chunks_exact(8);
    for word in &mut words {
        acc = add_carry(acc, ne64(word));
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut tail = [0u8; 8];
        tail[..rest.len()].copy_from_slice(rest);
        acc = add_carry(acc, u64::from_ne_bytes(tail));
    }
    // The sum was taken over native-order words; converting from big-endian swaps the bytes on
    // little-endian machines, which turns it into the sum of big-endian words.
    u16::from_be(fold(acc))
}

/// Ones-complement sum of partial sums (each from [`data`] or a pseudo-header function).
#[inline]
pub fn combine(sums: &[u16]) -> u16 {
    fold(sums.iter().map(|&s| u64::from(s)).sum())
}

/// The checksum field value for `bytes`: `!data(bytes)`. This is what the IPv4 header checksum and the
/// ICMPv4 checksum hold (computed with the checksum field zeroed).
#[inline]
pub fn internet(bytes: &[u8]) -> u16 {
    !data(bytes)
}

/// Sum of the IPv4 pseudo-header (RFC 768, RFC 793): source, destination, protocol and the length of
/// the upper-layer segment.
#[inline]
pub fn pseudo_header_v4(src: &Ipv4Addr, dst: &Ipv4Addr, protocol: IpProtocol, length: u32) -> u16 {
    let s = u32::from(*src);
    let d = u32::from(*dst);
    fold(
        u64::from(s >> 16)
            + u64::from(s & 0xffff)
            + u64::from(d >> 16)
            + u64::from(d & 0xffff)
            + u64::from(u8::from(protocol))
            + u64::from(length >> 16)
            + u64::from(length & 0xffff),
    )
}

/// Sum of the IPv6 pseudo-header (RFC 8200 section 8.1): source, destination, upper-layer length and
/// next header.
#[inline]
pub fn pseudo_header_v6(
    src: &Ipv6Addr,
    dst: &Ipv6Addr,
    next_header: IpProtocol,
    length: u32,
) -> u16 {
    let s = u128::from(*src);
    let d = u128::from(*dst);
    let mut acc =
        u64::from(u8::from(next_header)) + u64::from(length >> 16) + u64::from(length & 0xffff);
    for word in [
        s >> 64,
        s & u128::from(u64::MAX),
        d >> 64,
        d & u128::from(u64::MAX),
    ] {
        // Each half is below 2^64 by construction; the fold is exact.
        #[allow(clippy::cast_possible_truncation, reason = "each half is below 2^64")]
        let word = word as u64;
        acc = add_carry(acc, word);
    }
    fold(acc)
}

/// Sum of the pseudo-header for either family. [`Malformed`] when the two addresses are of different
/// families.
#[inline]
pub fn pseudo_header(src: &IpAddr, dst: &IpAddr, protocol: IpProtocol, length: u32) -> Result<u16> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Ok(pseudo_header_v4(s, d, protocol, length)),
        (IpAddr::V6(s), IpAddr::V6(d)) => Ok(pseudo_header_v6(s, d, protocol, length)),
        _ => Err(Malformed),
    }
}

/// New checksum after one 16-bit word covered by `checksum` changed from `old` to `new` (RFC 1624
/// equation 3). The word must sit at an even offset of the checksummed data.
#[inline]
pub fn update_u16(checksum: u16, old: u16, new: u16) -> u16 {
    !fold(u64::from(!checksum) + u64::from(!old) + u64::from(new))
}

/// New checksum after a 32-bit field (two words at an even offset) changed from `old` to `new`.
#[inline]
pub fn update_u32(checksum: u16, old: u32, new: u32) -> u16 {
    let old = !old;
    !fold(
        u64::from(!checksum)
            + u64::from(old >> 16)
            + u64::from(old & 0xffff)
            + u64::from(new >> 16)
            + u64::from(new & 0xffff),
    )
}

/// New checksum after the bytes of a field starting at an even offset changed from `old` to `new`.
#[inline]
pub fn update_bytes(checksum: u16, old: &[u8], new: &[u8]) -> u16 {
    update_u16(checksum, data(old), data(new))
}

/// New checksum after an address covered by it (in a header or a pseudo-header) changed from `old` to
/// `new`.
#[inline]
pub fn update_addr(checksum: u16, old: &IpAddr, new: &IpAddr) -> u16 {
    match (old, new) {
        (IpAddr::V4(o), IpAddr::V4(n)) => update_u32(checksum, u32::from(*o), u32::from(*n)),
        (IpAddr::V6(o), IpAddr::V6(n)) => update_bytes(checksum, &o.octets(), &n.octets()),
        (IpAddr::V4(o), IpAddr::V6(n)) => update_bytes(checksum, &o.octets(), &n.octets()),
        (IpAddr::V6(o), IpAddr::V4(n)) => update_bytes(checksum, &o.octets(), &n.octets()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 1071 taken literally: 16-bit big-endian words, end-around carry after each add.
    fn reference(bytes: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        for pair in bytes.chunks(2) {
            let word = u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]);
            sum += u32::from(word);
            sum = (sum & 0xffff) + (sum >> 16);
        }
        u16::try_from(sum).expect("folded to 16 bits")
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2.
        let bytes = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(data(&bytes), 0xddf2);
        assert_eq!(internet(&bytes), !0xddf2);
    }

    #[test]
    fn ipv4_header_known_good() {
        // Header of an ICMP echo request 198.18.0.1 -> 198.18.0.2; its checksum, 0x4153, was computed with
        // a plain python3 RFC 1071 loop.
        let hdr = [
            0x45, 0x00, 0x00, 0x54, 0x6d, 0x2e, 0x40, 0x00, 0x40, 0x01, 0x00, 0x00, 0xc6, 0x12,
            0x00, 0x01, 0xc6, 0x12, 0x00, 0x02,
        ];
        let expected = internet(&hdr);
        let mut full = hdr;
        full[10..12].copy_from_slice(&expected.to_be_bytes());
        assert_eq!(
            data(&full),
            0xffff,
            "a header with its checksum sums to all ones"
        );
        assert_eq!(expected, 0x4153);
    }

    #[test]
    fn odd_lengths_pad_with_zero() {
        assert_eq!(data(&[0xab]), 0xab00);
        assert_eq!(data(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
        assert_eq!(data(&[]), 0);
    }

    #[test]
    fn pseudo_header_mixed_families_rejected() {
        let v4 = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert_eq!(pseudo_header(&v4, &v6, IpProtocol::Udp, 8), Err(Malformed));
    }

    #[test]
    fn pseudo_headers_match_byte_layout() {
        let s = Ipv4Addr::new(198, 18, 0, 1);
        let d = Ipv4Addr::new(198, 19, 255, 254);
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&s.octets());
        bytes.extend_from_slice(&d.octets());
        bytes.extend_from_slice(&[0, 17, 0x05, 0xdc]);
        assert_eq!(
            pseudo_header_v4(&s, &d, IpProtocol::Udp, 1500),
            reference(&bytes)
        );

        let s6: Ipv6Addr = "2001:2::1".parse().unwrap();
        let d6: Ipv6Addr = "2001:2:0:ffff::fffe".parse().unwrap();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&s6.octets());
        bytes.extend_from_slice(&d6.octets());
        bytes.extend_from_slice(&70000u32.to_be_bytes());
        bytes.extend_from_slice(&[0, 0, 0, 58]);
        assert_eq!(
            pseudo_header_v6(&s6, &d6, IpProtocol::Icmpv6, 70000),
            reference(&bytes)
        );
    }

    /// Full checksum of `buf` with its checksum field (bytes 0..2) taken as zero.
    fn full(buf: &[u8]) -> u16 {
        internet(&buf[2..])
    }

    proptest! {
        #[test]
        fn fast_sum_matches_reference(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            prop_assert_eq!(data(&bytes), reference(&bytes));
        }

        #[test]
        fn combine_matches_concatenation(
            a in proptest::collection::vec(any::<u8>(), 0..100),
            b in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            // Every part but the last must have an even length.
            let mut a = a;
            if a.len() % 2 == 1 { a.pop(); }
            let mut cat = a.clone();
            cat.extend_from_slice(&b);
            prop_assert_eq!(combine(&[data(&a), data(&b)]), reference(&cat));
        }

        #[test]
        fn incremental_u16_matches_full(
            mut buf in proptest::collection::vec(any::<u8>(), 6..200),
            at in 0usize..100,
            new in any::<u16>(),
        ) {
            // A fixed non-zero word outside the changed range keeps the data from being all zeros,
            // the one case where the two forms of ones-complement zero differ.
            buf[2] = 0x45;
            let at = 4 + (at % ((buf.len() - 4) / 2)) * 2;
            prop_assume!(at + 2 <= buf.len());
            let before = full(&buf);
            let old = u16::from_be_bytes([buf[at], buf[at + 1]]);
            buf[at..at + 2].copy_from_slice(&new.to_be_bytes());
            prop_assert_eq!(update_u16(before, old, new), full(&buf));
        }

        #[test]
        fn incremental_u32_matches_full(
            mut buf in proptest::collection::vec(any::<u8>(), 8..200),
            at in 0usize..100,
            new in any::<u32>(),
        ) {
            buf[2] = 0x45;
            let slots = (buf.len() - 4) / 2;
            let at = 4 + (at % slots) * 2;
            prop_assume!(at + 4 <= buf.len());
            let before = full(&buf);
            let old = u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
            buf[at..at + 4].copy_from_slice(&new.to_be_bytes());
            prop_assert_eq!(update_u32(before, old, new), full(&buf));
        }

        #[test]
        fn incremental_addr_matches_full(
            mut buf in proptest::collection::vec(any::<u8>(), 40..120),
            old6 in any::<[u8; 16]>(),
            new6 in any::<[u8; 16]>(),
            old4 in any::<[u8; 4]>(),
            new4 in any::<[u8; 4]>(),
        ) {
            buf[2] = 0x60;
            buf[8..24].copy_from_slice(&old6);
            buf[24..28].copy_from_slice(&old4);
            let before = full(&buf);
            buf[8..24].copy_from_slice(&new6);
            let mid = update_addr(before, &IpAddr::from(old6), &IpAddr::from(new6));
            prop_assert_eq!(mid, full(&buf));
            buf[24..28].copy_from_slice(&new4);
            let after = update_addr(mid, &IpAddr::from(old4), &IpAddr::from(new4));
            prop_assert_eq!(after, full(&buf));
            // Replacing a byte range is the same as replacing its partial sum.
            prop_assert_eq!(update_bytes(before, &old6, &new6), mid);
        }
    }
}
