//! NEON (aarch64) kernels: the 16-lane vector as four `float32x4_t` and its tile constants;
//! the `#[target_feature]` entry points come from `simd::{forward,backward}_entries!`.
//! Reached only through `Kernels::for_isa(Isa::Neon)`.

use super::simd::{self, F32x16};
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

// The table entries (`forward::pointwise_packed`, …, `backward::prelu_backward`, …): written
// once in `simd`, instantiated here with this file's vector type and tile constants.
simd::forward_entries!("neon", NeonF32x16, table = neon_unchecked);
// The backward pointwise tile has as many rows as the forward one: the same register budget.
simd::backward_entries!("neon", NeonF32x16, pointwise_rows = POINTWISE_ROWS);
