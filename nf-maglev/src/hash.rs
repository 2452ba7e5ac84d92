//! Stable, seeded hashes: one for backend names (table building), one for flows (every packet).
//!
//! Every load balancer instance given the same configuration must build the same Maglev tables and send a
//! flow to the same backend, so both hashes are fixed functions of their input and the configured seed,
//! independent of the Rust release, the platform and the process (unlike `std`'s `DefaultHasher`, whose
//! algorithm is unspecified and whose `RandomState` keys change per process).
//!
//! * Backend names use SipHash-2-4 (Aumasson and Bernstein, 2012), written out here so the function can never
//!   change under us; it is checked against the reference test vectors. The two Maglev hashes `h1` and `h2`
//!   are SipHash under two different keys derived from the seed, i.e. two independent keyed functions.
//! * Flows use a folded-multiply hash (the construction of wyhash and foldhash): each 64-bit word of the key is
//!   mixed by a full 64x64->128-bit multiply whose halves are xored. It costs a few nanoseconds for an IPv6
//!   5-tuple and spreads every input bit over the whole output. The seed keys it, so clients that do not know
//!   the seed cannot aim a flood at one backend by choosing ports.

/// SipHash key half used for the Maglev offset hash `h1` (ASCII "maglev-1").
const H1_KEY: u64 = u64::from_be_bytes(*b"maglev-1");
/// SipHash key half used for the Maglev skip hash `h2` (ASCII "maglev-2").
const H2_KEY: u64 = u64::from_be_bytes(*b"maglev-2");

/// SipHash-2-4 of `data` under the 128-bit key `(k0, k1)` (little-endian halves, as in the reference code).
pub fn siphash24(k0: u64, k1: u64, data: &[u8]) -> u64 {
    let mut s = SipState {
        v0: k0 ^ 0x736f_6d65_7073_6575,
        v1: k1 ^ 0x646f_7261_6e64_6f6d,
        v2: k0 ^ 0x6c79_6765_6e65_7261,
        v3: k1 ^ 0x7465_6462_7974_6573,
    };
    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        s.compress(u64::from_le_bytes(word));
    }
    let rest = chunks.remainder();
    let mut last = [0u8; 8];
    last[..rest.len()].copy_from_slice(rest);
    // The final block carries the message length modulo 256 in its top byte.
    let b = u64::from_le_bytes(last) | ((data.len() as u64 & 0xff) << 56);
    s.compress(b);
    s.v2 ^= 0xff;
    for _ in 0..4 {
        s.round();
    }
    s.v0 ^ s.v1 ^ s.v2 ^ s.v3
}

struct SipState {
    v0: u64,
    v1: u64,
    v2: u64,
    v3: u64,
}

impl SipState {
    #[inline]
    fn round(&mut self) {
        self.v0 = self.v0.wrapping_add(self.v1);
        self.v1 = self.v1.rotate_left(13) ^ self.v0;
        self.v0 = self.v0.rotate_left(32);
        self.v2 = self.v2.wrapping_add(self.v3);
        self.v3 = self.v3.rotate_left(16) ^ self.v2;
        self.v0 = self.v0.wrapping_add(self.v3);
        self.v3 = self.v3.rotate_left(21) ^ self.v0;
        self.v2 = self.v2.wrapping_add(self.v1);
        self.v1 = self.v1.rotate_left(17) ^ self.v2;
        self.v2 = self.v2.rotate_left(32);
    }

    #[inline]
    fn compress(&mut self, m: u64) {
        self.v3 ^= m;
        self.round();
        self.round();
        self.v0 ^= m;
    }
}

/// The two Maglev hashes of a backend name under `seed`: `(h1, h2)`, used as
/// `offset = h1 mod M` and `skip = h2 mod (M - 1) + 1`.
pub fn name_hashes(seed: u64, name: &str) -> (u64, u64) {
    (
        siphash24(seed, H1_KEY, name.as_bytes()),
        siphash24(seed, H2_KEY, name.as_bytes()),
    )
}

// Odd 64-bit constants with balanced bits (the wyhash primes).
const P0: u64 = 0xa076_1d64_78bd_642f;
const P1: u64 = 0xe703_7ed1_a0b4_28db;
const P2: u64 = 0x8ebc_6af0_9c88_c6e3;
const P3: u64 = 0x5899_65cc_7537_4cc3;

/// Multiplies as 128 bits and folds the halves together: every bit of either operand reaches the result.
#[inline(always)]
fn fold_mul(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    // Truncation is the point: the low and high halves are folded together.
    #[allow(clippy::cast_possible_truncation)]
    let (lo, hi) = (r as u64, (r >> 64) as u64);
    lo ^ hi
}

/// A cheap hash of a 128-bit address and one more word, for in-memory indexes (not for flows: no seed).
#[inline]
pub fn addr_hash(addr: u128, word: u64) -> u64 {
    // Truncations split the address into its two 64-bit halves.
    #[allow(clippy::cast_possible_truncation)]
    let (lo, hi) = (addr as u64, (addr >> 64) as u64);
    fold_mul(lo ^ P0, hi ^ word ^ P1)
}

/// Hash of a flow key given as two 128-bit addresses and one word of ports and protocol.
///
/// IPv4 addresses are passed IPv4-mapped (`::ffff:a.b.c.d`). The Maglev lookup uses the high 32 bits of
/// the result, the connection table the low bits, so the two stay uncorrelated.
#[inline]
pub fn flow_hash(seed: u64, src: u128, dst: u128, ports_proto: u64) -> u64 {
    // Truncations split each address into its two 64-bit halves.
    #[allow(clippy::cast_possible_truncation)]
    let (s_lo, s_hi, d_lo, d_hi) = (
        src as u64,
        (src >> 64) as u64,
        dst as u64,
        (dst >> 64) as u64,
    );
    let a = fold_mul(s_lo ^ P0, s_hi ^ seed ^ P1);
    let b = fold_mul(d_lo ^ P2, d_hi ^ P3);
    let c = fold_mul(ports_proto ^ a ^ P1, b ^ seed ^ P2);
    fold_mul(c ^ P3, a.rotate_left(23) ^ P0 ^ seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: (u64, u64) = (0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908);

    fn msg(n: u8) -> Vec<u8> {
        (0..n).collect()
    }

    #[test]
    fn siphash_reference_vectors() {
        // From the SipHash paper's reference implementation (vectors.h): key 00..0f, message 00..(len-1).
        assert_eq!(siphash24(KEY.0, KEY.1, &msg(0)), 0x726f_db47_dd0e_0e31);
        assert_eq!(siphash24(KEY.0, KEY.1, &msg(1)), 0x74f8_39c5_93dc_67fd);
        assert_eq!(siphash24(KEY.0, KEY.1, &msg(15)), 0xa129_ca61_49be_45e5);
        assert_eq!(siphash24(KEY.0, KEY.1, &msg(8)), 0x93f5_f579_9a93_2462);
    }

    #[test]
    #[allow(deprecated)] // std::hash::SipHasher is the same function (SipHash-2-4); only a cross-check.
    fn siphash_matches_std_siphasher() {
        use std::hash::Hasher;
        for n in 0..64u8 {
            let data: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37).wrapping_add(n)).collect();
            let mut h = std::hash::SipHasher::new_with_keys(0x1234_5678_9abc_def0, 42);
            h.write(&data);
            assert_eq!(
                siphash24(0x1234_5678_9abc_def0, 42, &data),
                h.finish(),
                "len {n}"
            );
        }
    }

    #[test]
    fn name_hashes_are_stable_and_independent() {
        let (a1, a2) = name_hashes(0, "backend-1");
        // Golden value: a change of the name hash silently reshuffles every table, so it must be deliberate.
        assert_eq!(a2, 0xd584_8195_7e85_fd6a);
        assert_ne!(a1, a2);
        assert_ne!(name_hashes(1, "backend-1"), (a1, a2));
        assert_ne!(name_hashes(0, "backend-2"), (a1, a2));
        assert_eq!(a1, siphash24(0, H1_KEY, b"backend-1"));
    }

    #[test]
    fn flow_hash_depends_on_every_field_and_seed() {
        let base = flow_hash(7, 1, 2, 3);
        assert_ne!(flow_hash(8, 1, 2, 3), base);
        assert_ne!(flow_hash(7, 1 << 100, 2, 3), base);
        assert_ne!(flow_hash(7, 1, 2 | (1 << 127), 3), base);
        assert_ne!(flow_hash(7, 1, 2, 3 | (1 << 40)), base);
        assert_ne!(flow_hash(7, 2, 1, 3), base);
    }

    #[test]
    fn flow_hash_spreads_sequential_ports_evenly() {
        // 64k flows differing only in the source port must spread evenly over 16 buckets of both the high
        // bits (Maglev) and the low bits (connection table).
        let mut hi = [0u32; 16];
        let mut lo = [0u32; 16];
        let src = 0xffff_c612_0001u128;
        let dst = 0xffff_c612_6401u128;
        for port in 0..65536u64 {
            let h = flow_hash(0, src, dst, (port << 16) | (80 << 8) | 6);
            hi[(h >> 60) as usize] += 1;
            lo[(h & 15) as usize] += 1;
        }
        for b in hi.iter().chain(lo.iter()) {
            assert!(
                (3800..4400).contains(b),
                "bucket {b} of 4096 expected: {hi:?} {lo:?}"
            );
        }
    }

    #[test]
    fn flow_hash_avalanche() {
        // Flipping any single input bit flips about half of the output bits on average.
        let (src, dst, pp) = (
            0xffff_c612_0a0bu128,
            0x2001_0002_0000_0000_0000_0000_0000_0100u128,
            0x1234_0050_0006,
        );
        let base = flow_hash(99, src, dst, pp);
        let mut total = 0u32;
        let mut n = 0u32;
        for bit in 0..128 {
            total += (base ^ flow_hash(99, src ^ (1 << bit), dst, pp)).count_ones();
            total += (base ^ flow_hash(99, src, dst ^ (1 << bit), pp)).count_ones();
            n += 2;
        }
        for bit in 0..64 {
            total += (base ^ flow_hash(99, src, dst, pp ^ (1 << bit))).count_ones();
            n += 1;
        }
        let mean = f64::from(total) / f64::from(n);
        assert!((28.0..36.0).contains(&mean), "mean flipped bits {mean}");
    }
}
