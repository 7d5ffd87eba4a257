//! NEON (aarch64) kernels: the 16-lane vector as four `float32x4_t`, and the
//! `#[target_feature]` entry points of the packed kernels (pointwise, depthwise, direct conv,
//! global depthwise, linear). Reached only through `Kernels::for_isa(Isa::Neon)`.

use super::packed::{Epilogue, PointwiseShape};
use super::simd::{self, F32x16};
use super::{packed, ConvGeom, Kernels};
use std::arch::aarch64::*;

/// Register blocking per kernel (rows of 16 channels per micro-tile). Four `float32x4_t` per
/// row: 6 rows use 24 of the 32 vector registers for accumulators, leaving four for the
/// weights and one for the broadcast input (the AVX2 file's 6 rows, mirrored).
const POINTWISE_ROWS: usize = 6;
const DEPTHWISE_ROWS: usize = 4;
const DIRECT_ROWS: usize = 6;
/// Independent 16-lane FMA chains of the peak probe: 24 q accumulators (of 32), no spills.
pub(super) const PROBE_CHAINS: usize = 6;
const LINEAR_ROWS: usize = 4;

#[derive(Clone, Copy)]
pub(super) struct NeonF32x16([float32x4_t; 4]);

// SAFETY (whole impl): these are only instantiated inside the `#[target_feature(enable =
// "neon")]` functions below, which run only after `Kernels::for_isa` has checked the CPU;
// pointer validity for 16 lanes is the caller's contract (see `F32x16`).
impl F32x16 for NeonF32x16 {
    #[inline(always)]
    unsafe fn zero() -> Self {
        NeonF32x16([vdupq_n_f32(0.0); 4])
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        NeonF32x16([vdupq_n_f32(v); 4])
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        NeonF32x16([
            vld1q_f32(p),
            vld1q_f32(p.add(4)),
            vld1q_f32(p.add(8)),
            vld1q_f32(p.add(12)),
        ])
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        vst1q_f32(p, self.0[0]);
        vst1q_f32(p.add(4), self.0[1]);
        vst1q_f32(p.add(8), self.0[2]);
        vst1q_f32(p.add(12), self.0[3]);
    }
    #[inline(always)]
    unsafe fn mul_add(self, a: Self, b: Self) -> Self {
        let f = |i: usize| vfmaq_f32(self.0[i], a.0[i], b.0[i]);
        NeonF32x16([f(0), f(1), f(2), f(3)])
    }
    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        let f = |i: usize| vaddq_f32(self.0[i], b.0[i]);
        NeonF32x16([f(0), f(1), f(2), f(3)])
    }
    #[inline(always)]
    unsafe fn prelu(self, alpha: Self) -> Self {
        let f = |i: usize| {
            let x = self.0[i];
            let neg = vcltq_f32(x, vdupq_n_f32(0.0));
            vbslq_f32(neg, vmulq_f32(x, alpha.0[i]), x)
        };
        NeonF32x16([f(0), f(1), f(2), f(3)])
    }
    #[inline(always)]
    unsafe fn mul(self, b: Self) -> Self {
        let f = |i: usize| vmulq_f32(self.0[i], b.0[i]);
        NeonF32x16([f(0), f(1), f(2), f(3)])
    }
    #[inline(always)]
    unsafe fn sub(self, b: Self) -> Self {
        let f = |i: usize| vsubq_f32(self.0[i], b.0[i]);
        NeonF32x16([f(0), f(1), f(2), f(3)])
    }
    #[inline(always)]
    unsafe fn select_neg(self, if_neg: Self, otherwise: Self) -> Self {
        let f = |i: usize| {
            let neg = vcltq_f32(self.0[i], vdupq_n_f32(0.0));
            vbslq_f32(neg, if_neg.0[i], otherwise.0[i])
        };
        NeonF32x16([f(0), f(1), f(2), f(3)])
    }
}

#[target_feature(enable = "neon")]
unsafe fn pointwise_impl(s: &PointwiseShape, x: &[f32], w: &[f32], ep: &Epilogue, y: &mut [f32]) {
    simd::pointwise::<NeonF32x16, POINTWISE_ROWS>(s, x, w, ep, y)
}

#[target_feature(enable = "neon")]
unsafe fn depthwise_impl(g: &ConvGeom, x: &[f32], w: &[f32], ep: &Epilogue, y: &mut [f32]) {
    simd::depthwise::<NeonF32x16, DEPTHWISE_ROWS>(g, x, w, ep, y)
}

#[target_feature(enable = "neon")]
unsafe fn direct_conv_impl(g: &ConvGeom, x: &[f32], w: &[f32], ep: &Epilogue, y: &mut [f32]) {
    simd::direct_conv::<NeonF32x16, DIRECT_ROWS>(g, x, w, ep, y)
}

#[target_feature(enable = "neon")]
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
    simd::global_depthwise::<NeonF32x16>(n, c, hw, x, w, b, y)
}

#[target_feature(enable = "neon")]
unsafe fn linear_impl(
    n: usize,
    k: usize,
    m: usize,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    y: &mut [f32],
) {
    simd::linear::<NeonF32x16, LINEAR_ROWS>(n, k, m, x, w, b, y)
}

/// Pointwise 1×1 conv on blocked pixels, bias + PReLU + residual fused.
pub(super) fn pointwise_conv_neon(
    s: &PointwiseShape,
    x: &[f32],
    w: &[f32],
    ep: &Epilogue,
    y: &mut [f32],
) {
    // SAFETY: only reachable through the NEON table, built after NEON was detected;
    // `simd::pointwise` checks every slice length before its raw-pointer loops.
    unsafe { pointwise_impl(s, x, w, ep, y) }
}

/// Depthwise conv (3×3 fast path, any size works) on blocked planes, bias + PReLU fused.
pub(super) fn depthwise_conv_neon(
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    ep: &Epilogue,
    y: &mut [f32],
) {
    // SAFETY: as in `pointwise_conv_neon`; `simd::depthwise` checks the lengths.
    unsafe { depthwise_impl(g, x, w, ep, y) }
}

/// Dense conv (the stem) from NCHW to blocked output, bias + PReLU fused.
pub(super) fn direct_conv_neon(g: &ConvGeom, x: &[f32], w: &[f32], ep: &Epilogue, y: &mut [f32]) {
    // SAFETY: as in `pointwise_conv_neon`; `simd::direct_conv` checks the lengths.
    unsafe { direct_conv_impl(g, x, w, ep, y) }
}

/// Global depthwise conv on blocked maps.
pub(super) fn global_depthwise_neon(
    n: usize,
    c: usize,
    hw: usize,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    y: &mut [f32],
) {
    // SAFETY: as in `pointwise_conv_neon`; `simd::global_depthwise` checks the lengths.
    unsafe { global_depthwise_impl(n, c, hw, x, w, b, y) }
}

/// Linear layer with packed weights.
pub(super) fn linear_neon(
    n: usize,
    k: usize,
    m: usize,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    y: &mut [f32],
) {
    // SAFETY: as in `pointwise_conv_neon`; `simd::linear` checks the lengths.
    unsafe { linear_impl(n, k, m, x, w, b, y) }
}

/// The general NCHW conv entry of the NEON table: any shape, routed to the packed kernels.
pub(super) fn conv2d_neon(g: &ConvGeom, x: &[f32], w: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
    packed::conv2d_via_packed(&Kernels::neon_unchecked(), g, x, w, bias, y)
}

/// The plain-layout linear entry of the NEON table.
pub(super) fn linear_plain_neon(
    n: usize,
    k: usize,
    m: usize,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    y: &mut [f32],
) {
    packed::linear_via_packed(&Kernels::neon_unchecked(), n, k, m, x, w, b, y)
}

#[target_feature(enable = "neon")]
unsafe fn fma_probe_impl(iterations: usize) -> f32 {
    simd::fma_probe::<NeonF32x16, PROBE_CHAINS>(iterations)
}

/// `PROBE_CHAINS × 16 × iterations` register-only FMAs (the peak probe of `bridge-bench`).
pub(super) fn fma_probe_neon(iterations: usize) -> f32 {
    // SAFETY: only reachable through this ISA's table, built after the CPU was checked.
    unsafe { fma_probe_impl(iterations) }
}

simd::backward_entries!("neon", NeonF32x16, pointwise_rows = 6);
