//! Vector helpers for the lookups of set-associative tables (a bucket's tags compared in one go).
//!
//! Portable: x86_64 uses SSE2, which every x86_64 CPU has; other targets get the same answer from a loop.

/// Bit `i` of the result is set when `lanes[i] == value`: eight 32-bit compares as two vector compares
/// and one mask extraction on x86_64, no branch.
#[inline(always)]
pub fn eq_mask_u32x8(lanes: &[u32; 8], value: u32) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `eq_mask_sse2` only needs SSE2, which is part of the x86_64 baseline: every CPU this
        // code can run on has it.
        unsafe { eq_mask_sse2(lanes, value) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        lanes
            .iter()
            .enumerate()
            .fold(0, |m, (i, &l)| m | (u32::from(l == value) << i))
    }
}

/// [`eq_mask_u32x8`] in SSE2: two compares, two packs and a byte mask.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
#[inline]
// Bit-pattern reinterpretations: lanes are only tested for equality, and the mask has eight bits.
#[allow(clippy::cast_possible_wrap, clippy::cast_sign_loss)]
fn eq_mask_sse2(lanes: &[u32; 8], value: u32) -> u32 {
    use core::arch::x86_64::{
        _mm_cmpeq_epi32, _mm_movemask_epi8, _mm_packs_epi16, _mm_packs_epi32, _mm_set1_epi32,
        _mm_set_epi32, _mm_setzero_si128,
    };
    let l = lanes.map(|x| x as i32);
    let v = _mm_set1_epi32(value as i32);
    let lo = _mm_cmpeq_epi32(_mm_set_epi32(l[3], l[2], l[1], l[0]), v);
    let hi = _mm_cmpeq_epi32(_mm_set_epi32(l[7], l[6], l[5], l[4]), v);
    // 8 x 32-bit all-ones or zero -> 8 x 16-bit -> 8 x 8-bit (upper half zero), then one bit per byte.
    let bytes = _mm_packs_epi16(_mm_packs_epi32(lo, hi), _mm_setzero_si128());
    _mm_movemask_epi8(bytes) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn scalar(lanes: &[u32; 8], value: u32) -> u32 {
        (0..8).fold(0, |m, i| m | (u32::from(lanes[i] == value) << i))
    }

    #[test]
    fn every_lane_and_sign() {
        for i in 0..8 {
            for v in [0, 1, 0x7fff_ffff, 0x8000_0000, u32::MAX] {
                let mut lanes = [v.wrapping_add(1); 8];
                lanes[i] = v;
                assert_eq!(eq_mask_u32x8(&lanes, v), 1 << i, "lane {i}, value {v:#x}");
            }
        }
        assert_eq!(eq_mask_u32x8(&[7; 8], 7), 0xff);
        assert_eq!(eq_mask_u32x8(&[7; 8], 8), 0);
    }

    proptest! {
        #[test]
        fn same_as_a_loop(lanes in any::<[u32; 8]>(), pick in 0usize..9, other in any::<u32>()) {
            // Half the time a value that is in the lanes, so matches are common.
            let value = lanes.get(pick).copied().unwrap_or(other);
            prop_assert_eq!(eq_mask_u32x8(&lanes, value), scalar(&lanes, value));
        }
    }
}
