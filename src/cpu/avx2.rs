//! AVX2+FMA kernels: the 16-lane vector as two `__m256` and its tile constants; the
//! `#[target_feature]` entry points come from `simd::{forward,backward}_entries!`.
//! Reached only through `Kernels::for_isa(Isa::Avx2)`, which checks the CPU first.

use super::simd::{self, F32x16};
use std::arch::x86_64::*;

/// Register blocking per kernel (rows of 16 channels per micro-tile). With two `__m256` per
/// row, 6 rows use 12 of the 16 ymm registers for accumulators: enough independent FMA
/// chains to cover the 4-cycle latency on both FMA ports.
const POINTWISE_ROWS: usize = 6;
const DEPTHWISE_ROWS: usize = 4;
const DIRECT_ROWS: usize = 6;
/// Independent 16-lane FMA chains of the peak probe: 12 ymm accumulators (of 16), no spills.
pub(super) const PROBE_CHAINS: usize = 6;
const LINEAR_ROWS: usize = 4;

#[derive(Clone, Copy)]
pub(super) struct Avx2F32x16(__m256, __m256);

// SAFETY (whole impl): these are only instantiated inside the `#[target_feature(enable =
// "avx2,fma")]` functions below, which run only after `Kernels::for_isa` has checked the CPU;
// pointer validity for 16 lanes is the caller's contract (see `F32x16`).
impl F32x16 for Avx2F32x16 {
    #[inline(always)]
    unsafe fn zero() -> Self {
        Avx2F32x16(_mm256_setzero_ps(), _mm256_setzero_ps())
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        let s = _mm256_set1_ps(v);
        Avx2F32x16(s, s)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Avx2F32x16(_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        _mm256_storeu_ps(p, self.0);
        _mm256_storeu_ps(p.add(8), self.1);
    }
    #[inline(always)]
    unsafe fn mul_add(self, a: Self, b: Self) -> Self {
        Avx2F32x16(
            _mm256_fmadd_ps(a.0, b.0, self.0),
            _mm256_fmadd_ps(a.1, b.1, self.1),
        )
    }
    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        Avx2F32x16(_mm256_add_ps(self.0, b.0), _mm256_add_ps(self.1, b.1))
    }
    #[inline(always)]
    unsafe fn prelu(self, alpha: Self) -> Self {
        let z = _mm256_setzero_ps();
        let half = |x: __m256, a: __m256| {
            let neg = _mm256_cmp_ps::<_CMP_LT_OQ>(x, z);
            _mm256_blendv_ps(x, _mm256_mul_ps(x, a), neg)
        };
        Avx2F32x16(half(self.0, alpha.0), half(self.1, alpha.1))
    }
    #[inline(always)]
    unsafe fn mul(self, b: Self) -> Self {
        Avx2F32x16(_mm256_mul_ps(self.0, b.0), _mm256_mul_ps(self.1, b.1))
    }
    #[inline(always)]
    unsafe fn sub(self, b: Self) -> Self {
        Avx2F32x16(_mm256_sub_ps(self.0, b.0), _mm256_sub_ps(self.1, b.1))
    }
    #[inline(always)]
    unsafe fn select_neg(self, if_neg: Self, otherwise: Self) -> Self {
        let z = _mm256_setzero_ps();
        let half = |x: __m256, a: __m256, b: __m256| {
            _mm256_blendv_ps(b, a, _mm256_cmp_ps::<_CMP_LT_OQ>(x, z))
        };
        Avx2F32x16(
            half(self.0, if_neg.0, otherwise.0),
            half(self.1, if_neg.1, otherwise.1),
        )
    }
    const FAST_TRANSPOSE: bool = true;
    /// Four 8×8 register transposes: the low halves of rows 0–7 and 8–15 give the low and high
    /// halves of rows 0–7, the high halves those of rows 8–15.
    #[inline(always)]
    unsafe fn transpose16(m: &mut [Self; 16]) {
        let half = |k: usize, hi: bool| -> [__m256; 8] {
            let r = |i: usize| if hi { m[k + i].1 } else { m[k + i].0 };
            [r(0), r(1), r(2), r(3), r(4), r(5), r(6), r(7)]
        };
        let a = transpose8(half(0, false));
        let b = transpose8(half(8, false));
        let c = transpose8(half(0, true));
        let d = transpose8(half(8, true));
        for j in 0..8 {
            m[j] = Avx2F32x16(a[j], b[j]);
            m[8 + j] = Avx2F32x16(c[j], d[j]);
        }
    }
}

/// The 8×8 transpose of 8 rows: pairs interleaved, then quads, then 128-bit halves.
#[inline(always)]
unsafe fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    [
        _mm256_permute2f128_ps::<0x20>(s0, s4),
        _mm256_permute2f128_ps::<0x20>(s1, s5),
        _mm256_permute2f128_ps::<0x20>(s2, s6),
        _mm256_permute2f128_ps::<0x20>(s3, s7),
        _mm256_permute2f128_ps::<0x31>(s0, s4),
        _mm256_permute2f128_ps::<0x31>(s1, s5),
        _mm256_permute2f128_ps::<0x31>(s2, s6),
        _mm256_permute2f128_ps::<0x31>(s3, s7),
    ]
}

// The table entries (`forward::pointwise_packed`, …, `backward::prelu_backward`, …): written
// once in `simd`, instantiated here with this file's vector type and tile constants.
simd::forward_entries!("avx2,fma", Avx2F32x16, table = avx2_unchecked);
// The backward pointwise tile has as many rows as the forward one: the same register budget.
simd::backward_entries!("avx2,fma", Avx2F32x16, pointwise_rows = POINTWISE_ROWS);
