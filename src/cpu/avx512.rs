//! AVX-512F kernels: the 16-lane vector as one `__m512` and its tile constants; the
//! `#[target_feature]` entry points come from `simd::{forward,backward}_entries!`.
//! Reached only through `Kernels::for_isa(Isa::Avx512)`, which checks the CPU first.

// The `_mm512_*` intrinsics are stable since Rust 1.89, above the manifest's `rust-version`
// (1.80); building this file needs rustc ≥ 1.89 (the project's toolchain is newer).
#![allow(clippy::incompatible_msrv)]

use super::simd::{self, F32x16};
use std::arch::x86_64::*;

/// Register blocking per kernel (rows of 16 channels per micro-tile). One `__m512` per row:
/// 12 rows use 12 of the 32 zmm registers for accumulators, enough independent FMA chains
/// to cover the FMA latency on two ports (the AVX2 file's 6 rows × 2 registers, mirrored).
const POINTWISE_ROWS: usize = 12;
const DEPTHWISE_ROWS: usize = 8;
const DIRECT_ROWS: usize = 12;
/// Independent 16-lane FMA chains of the peak probe: 12 zmm accumulators, no spills.
pub(super) const PROBE_CHAINS: usize = 12;
const LINEAR_ROWS: usize = 8;

#[derive(Clone, Copy)]
pub(super) struct Avx512F32x16(__m512);

// SAFETY (whole impl): these are only instantiated inside the `#[target_feature(enable =
// "avx512f")]` functions below, which run only after `Kernels::for_isa` has checked the CPU;
// pointer validity for 16 lanes is the caller's contract (see `F32x16`).
impl F32x16 for Avx512F32x16 {
    #[inline(always)]
    unsafe fn zero() -> Self {
        Avx512F32x16(_mm512_setzero_ps())
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        Avx512F32x16(_mm512_set1_ps(v))
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Avx512F32x16(_mm512_loadu_ps(p))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        _mm512_storeu_ps(p, self.0)
    }
    #[inline(always)]
    unsafe fn mul_add(self, a: Self, b: Self) -> Self {
        Avx512F32x16(_mm512_fmadd_ps(a.0, b.0, self.0))
    }
    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        Avx512F32x16(_mm512_add_ps(self.0, b.0))
    }
    #[inline(always)]
    unsafe fn prelu(self, alpha: Self) -> Self {
        let neg = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(self.0, _mm512_setzero_ps());
        Avx512F32x16(_mm512_mask_mul_ps(self.0, neg, self.0, alpha.0))
    }
    #[inline(always)]
    unsafe fn mul(self, b: Self) -> Self {
        Avx512F32x16(_mm512_mul_ps(self.0, b.0))
    }
    #[inline(always)]
    unsafe fn sub(self, b: Self) -> Self {
        Avx512F32x16(_mm512_sub_ps(self.0, b.0))
    }
    #[inline(always)]
    unsafe fn select_neg(self, if_neg: Self, otherwise: Self) -> Self {
        let neg = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(self.0, _mm512_setzero_ps());
        Avx512F32x16(_mm512_mask_blend_ps(neg, otherwise.0, if_neg.0))
    }
    const FAST_TRANSPOSE: bool = true;
    /// Each group of 4 rows is transposed within its 128-bit blocks (unpack, then shuffle), which
    /// leaves column `4b + k` of the group in block `b` of its vector `k`; a 4×4 transpose of
    /// 128-bit blocks across the groups (two rounds of `shuffle_f32x4`) finishes it.
    #[inline(always)]
    unsafe fn transpose16(m: &mut [Self; 16]) {
        // s[k][g]: block b holds column 4b + k of rows 4g..4g+4.
        let mut s = [[_mm512_setzero_ps(); 4]; 4];
        for g in 0..4 {
            let (a, b, c, d) = (m[4 * g].0, m[4 * g + 1].0, m[4 * g + 2].0, m[4 * g + 3].0);
            let u0 = _mm512_unpacklo_ps(a, b);
            let u1 = _mm512_unpackhi_ps(a, b);
            let u2 = _mm512_unpacklo_ps(c, d);
            let u3 = _mm512_unpackhi_ps(c, d);
            s[0][g] = _mm512_shuffle_ps::<0x44>(u0, u2);
            s[1][g] = _mm512_shuffle_ps::<0xEE>(u0, u2);
            s[2][g] = _mm512_shuffle_ps::<0x44>(u1, u3);
            s[3][g] = _mm512_shuffle_ps::<0xEE>(u1, u3);
        }
        for (k, v) in s.iter().enumerate() {
            let t0 = _mm512_shuffle_f32x4::<0x44>(v[0], v[1]);
            let t1 = _mm512_shuffle_f32x4::<0xEE>(v[0], v[1]);
            let t2 = _mm512_shuffle_f32x4::<0x44>(v[2], v[3]);
            let t3 = _mm512_shuffle_f32x4::<0xEE>(v[2], v[3]);
            m[k] = Avx512F32x16(_mm512_shuffle_f32x4::<0x88>(t0, t2));
            m[4 + k] = Avx512F32x16(_mm512_shuffle_f32x4::<0xDD>(t0, t2));
            m[8 + k] = Avx512F32x16(_mm512_shuffle_f32x4::<0x88>(t1, t3));
            m[12 + k] = Avx512F32x16(_mm512_shuffle_f32x4::<0xDD>(t1, t3));
        }
    }
}

// The table entries (`forward::pointwise_packed`, …, `backward::prelu_backward`, …): written
// once in `simd`, instantiated here with this file's vector type and tile constants.
simd::forward_entries!("avx512f", Avx512F32x16, table = avx512_unchecked);
// The backward pointwise tile has as many rows as the forward one: the same register budget.
simd::backward_entries!("avx512f", Avx512F32x16, pointwise_rows = POINTWISE_ROWS);
