//! AVX-512F kernels: the 16-lane vector as one `__m512`, and the `#[target_feature]` entry
//! points of the packed kernels (pointwise, depthwise, direct conv, global depthwise, linear).
//! Reached only through `Kernels::for_isa(Isa::Avx512)`, which checks the CPU first.

// The `_mm512_*` intrinsics are stable since Rust 1.89, above the manifest's `rust-version`
// (1.80); building this file needs rustc ≥ 1.89 (the project's toolchain is newer).
#![allow(clippy::incompatible_msrv)]

use super::packed::{Epilogue, PointwiseShape};
use super::simd::{self, F32x16};
use super::{packed, ConvGeom, Kernels};
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
}

#[target_feature(enable = "avx512f")]
unsafe fn pointwise_impl(s: &PointwiseShape, x: &[f32], w: &[f32], ep: &Epilogue, y: &mut [f32]) {
    simd::pointwise::<Avx512F32x16, POINTWISE_ROWS>(s, x, w, ep, y)
}

#[target_feature(enable = "avx512f")]
unsafe fn depthwise_impl(g: &ConvGeom, x: &[f32], w: &[f32], ep: &Epilogue, y: &mut [f32]) {
    simd::depthwise::<Avx512F32x16, DEPTHWISE_ROWS>(g, x, w, ep, y)
}

#[target_feature(enable = "avx512f")]
unsafe fn direct_conv_impl(g: &ConvGeom, x: &[f32], w: &[f32], ep: &Epilogue, y: &mut [f32]) {
    simd::direct_conv::<Avx512F32x16, DIRECT_ROWS>(g, x, w, ep, y)
}

#[target_feature(enable = "avx512f")]
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
    simd::global_depthwise::<Avx512F32x16>(n, c, hw, x, w, b, y)
}

#[target_feature(enable = "avx512f")]
unsafe fn linear_impl(
    n: usize,
    k: usize,
    m: usize,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    y: &mut [f32],
) {
    simd::linear::<Avx512F32x16, LINEAR_ROWS>(n, k, m, x, w, b, y)
}

/// Pointwise 1×1 conv on blocked pixels, bias + PReLU + residual fused.
pub(super) fn pointwise_conv_avx512(
    s: &PointwiseShape,
    x: &[f32],
    w: &[f32],
    ep: &Epilogue,
    y: &mut [f32],
) {
    // SAFETY: only reachable through the AVX-512 table, built after avx512f was detected;
    // `simd::pointwise` checks every slice length before its raw-pointer loops.
    unsafe { pointwise_impl(s, x, w, ep, y) }
}

/// Depthwise conv (3×3 fast path, any size works) on blocked planes, bias + PReLU fused.
pub(super) fn depthwise_conv_avx512(
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    ep: &Epilogue,
    y: &mut [f32],
) {
    // SAFETY: as in `pointwise_conv_avx512`; `simd::depthwise` checks the lengths.
    unsafe { depthwise_impl(g, x, w, ep, y) }
}

/// Dense conv (the stem) from NCHW to blocked output, bias + PReLU fused.
pub(super) fn direct_conv_avx512(g: &ConvGeom, x: &[f32], w: &[f32], ep: &Epilogue, y: &mut [f32]) {
    // SAFETY: as in `pointwise_conv_avx512`; `simd::direct_conv` checks the lengths.
    unsafe { direct_conv_impl(g, x, w, ep, y) }
}

/// Global depthwise conv on blocked maps.
pub(super) fn global_depthwise_avx512(
    n: usize,
    c: usize,
    hw: usize,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    y: &mut [f32],
) {
    // SAFETY: as in `pointwise_conv_avx512`; `simd::global_depthwise` checks the lengths.
    unsafe { global_depthwise_impl(n, c, hw, x, w, b, y) }
}

/// Linear layer with packed weights.
pub(super) fn linear_avx512(
    n: usize,
    k: usize,
    m: usize,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    y: &mut [f32],
) {
    // SAFETY: as in `pointwise_conv_avx512`; `simd::linear` checks the lengths.
    unsafe { linear_impl(n, k, m, x, w, b, y) }
}

/// The general NCHW conv entry of the AVX-512 table: any shape, routed to the packed kernels.
pub(super) fn conv2d_avx512(
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    packed::conv2d_via_packed(&Kernels::avx512_unchecked(), g, x, w, bias, y)
}

/// The plain-layout linear entry of the AVX-512 table.
pub(super) fn linear_plain_avx512(
    n: usize,
    k: usize,
    m: usize,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    y: &mut [f32],
) {
    packed::linear_via_packed(&Kernels::avx512_unchecked(), n, k, m, x, w, b, y)
}

#[target_feature(enable = "avx512f")]
unsafe fn fma_probe_impl(iterations: usize) -> f32 {
    simd::fma_probe::<Avx512F32x16, PROBE_CHAINS>(iterations)
}

/// `PROBE_CHAINS × 16 × iterations` register-only FMAs (the peak probe of `bridge-bench`).
pub(super) fn fma_probe_avx512(iterations: usize) -> f32 {
    // SAFETY: only reachable through this ISA's table, built after the CPU was checked.
    unsafe { fma_probe_impl(iterations) }
}

simd::backward_entries!("avx512f", Avx512F32x16, pointwise_rows = 12);
