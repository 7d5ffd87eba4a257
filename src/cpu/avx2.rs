//! AVX2+FMA kernels: the 16-lane vector as two `__m256`, and the `#[target_feature]` entry
//! points of the packed kernels (pointwise, depthwise, direct conv, global depthwise, linear).
//! Reached only through `Kernels::for_isa(Isa::Avx2)`, which checks the CPU first.

use super::packed::{Epilogue, PointwiseShape};
use super::simd::{self, F32x16};
use super::{packed, ConvGeom, Kernels};
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
}

#[target_feature(enable = "avx2,fma")]
unsafe fn pointwise_impl(s: &PointwiseShape, x: &[f32], w: &[f32], ep: &Epilogue, y: &mut [f32]) {
    simd::pointwise::<Avx2F32x16, POINTWISE_ROWS>(s, x, w, ep, y)
}

#[target_feature(enable = "avx2,fma")]
unsafe fn depthwise_impl(g: &ConvGeom, x: &[f32], w: &[f32], ep: &Epilogue, y: &mut [f32]) {
    simd::depthwise::<Avx2F32x16, DEPTHWISE_ROWS>(g, x, w, ep, y)
}

#[target_feature(enable = "avx2,fma")]
unsafe fn direct_conv_impl(g: &ConvGeom, x: &[f32], w: &[f32], ep: &Epilogue, y: &mut [f32]) {
    simd::direct_conv::<Avx2F32x16, DIRECT_ROWS>(g, x, w, ep, y)
}

#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn global_depthwise_impl(
    n: usize,
    c: usize,
    hw: usize,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    y: &mut [f32],
) {
    simd::global_depthwise::<Avx2F32x16>(n, c, hw, x, w, b, y)
}

#[target_feature(enable = "avx2,fma")]
unsafe fn linear_impl(
    n: usize,
    k: usize,
    m: usize,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    y: &mut [f32],
) {
    simd::linear::<Avx2F32x16, LINEAR_ROWS>(n, k, m, x, w, b, y)
}

/// Pointwise 1×1 conv on blocked pixels, bias + PReLU + residual fused.
pub(super) fn pointwise_conv_avx2(
    s: &PointwiseShape,
    x: &[f32],
    w: &[f32],
    ep: &Epilogue,
    y: &mut [f32],
) {
    // SAFETY: only reachable through the AVX2 table, built after avx2+fma were detected;
    // `simd::pointwise` checks every slice length before its raw-pointer loops.
    unsafe { pointwise_impl(s, x, w, ep, y) }
}

/// Depthwise conv (3×3 fast path, any size works) on blocked planes, bias + PReLU fused.
pub(super) fn depthwise_conv_avx2(
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    ep: &Epilogue,
    y: &mut [f32],
) {
    // SAFETY: as in `pointwise_conv_avx2`; `simd::depthwise` checks the lengths.
    unsafe { depthwise_impl(g, x, w, ep, y) }
}

/// Dense conv (the stem) from NCHW to blocked output, bias + PReLU fused.
pub(super) fn direct_conv_avx2(g: &ConvGeom, x: &[f32], w: &[f32], ep: &Epilogue, y: &mut [f32]) {
    // SAFETY: as in `pointwise_conv_avx2`; `simd::direct_conv` checks the lengths.
    unsafe { direct_conv_impl(g, x, w, ep, y) }
}

/// Global depthwise conv on blocked maps.
pub(super) fn global_depthwise_avx2(
    n: usize,
    c: usize,
    hw: usize,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    y: &mut [f32],
) {
    // SAFETY: as in `pointwise_conv_avx2`; `simd::global_depthwise` checks the lengths.
    unsafe { global_depthwise_impl(n, c, hw, x, w, b, y) }
}

/// Linear layer with packed weights.
pub(super) fn linear_avx2(
    n: usize,
    k: usize,
    m: usize,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    y: &mut [f32],
) {
    // SAFETY: as in `pointwise_conv_avx2`; `simd::linear` checks the lengths.
    unsafe { linear_impl(n, k, m, x, w, b, y) }
}

/// The general NCHW conv entry of the AVX2 table: any shape, routed to the packed kernels.
pub(super) fn conv2d_avx2(g: &ConvGeom, x: &[f32], w: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
    packed::conv2d_via_packed(&Kernels::avx2_unchecked(), g, x, w, bias, y)
}

/// The plain-layout linear entry of the AVX2 table.
pub(super) fn linear_plain_avx2(
    n: usize,
    k: usize,
    m: usize,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    y: &mut [f32],
) {
    packed::linear_via_packed(&Kernels::avx2_unchecked(), n, k, m, x, w, b, y)
}

#[target_feature(enable = "avx2,fma")]
unsafe fn fma_probe_impl(iterations: usize) -> f32 {
    simd::fma_probe::<Avx2F32x16, PROBE_CHAINS>(iterations)
}

/// `PROBE_CHAINS × 16 × iterations` register-only FMAs (the peak probe of `bridge-bench`).
pub(super) fn fma_probe_avx2(iterations: usize) -> f32 {
    // SAFETY: only reachable through this ISA's table, built after the CPU was checked.
    unsafe { fma_probe_impl(iterations) }
}

simd::backward_entries!("avx2,fma", Avx2F32x16, pointwise_rows = 6);
