//! Inference loop nests on the blocked layout of `packed` (pointwise, depthwise, direct conv,
//! global depthwise, linear, the FMA probe), and `forward_entries!`, which writes an ISA's
//! `#[target_feature]` shims around them. Must not check CPU features: the table does.

use super::F32x16;
use crate::cpu::packed::{
    blocks, check_depthwise, check_direct, check_global_depthwise, check_linear, check_pointwise,
    padded, Epilogue, PointwiseShape, BLOCK,
};
use crate::cpu::ConvGeom;

/// Vectors of one output block's epilogue: bias, optional slopes.
#[derive(Clone, Copy)]
struct BlockEpilogue<V> {
    bias: V,
    alpha: Option<V>,
}

impl<V: F32x16> BlockEpilogue<V> {
    #[inline(always)]
    unsafe fn new(ep: &Epilogue, block: usize) -> Self {
        BlockEpilogue {
            bias: V::load(ep.bias.as_ptr().add(block * BLOCK)),
            alpha: ep.prelu.map(|a| V::load(a.as_ptr().add(block * BLOCK))),
        }
    }

    /// Applies bias, PReLU and the optional residual (at `res`, may be null) and stores to `y`.
    #[inline(always)]
    unsafe fn finish(&self, acc: V, res: *const f32, y: *mut f32) {
        let mut v = acc.add(self.bias);
        if let Some(a) = self.alpha {
            v = v.prelu(a);
        }
        if !res.is_null() {
            v = v.add(V::load(res));
        }
        v.store(y);
    }
}
// ------------------------------------------------------------------ pointwise (GEMM-like)

/// Pixels per cache chunk: the chunk's input (`padded(c_in) × 96 × 4` bytes, 96 KiB at 256
/// channels) stays in L2 while every output block's weights (16 KiB) stream through L1.
const POINTWISE_CHUNK: usize = 96;

/// `T` pixels × 16 output channels: `T` accumulators, one weight vector and one broadcast
/// input per multiply–add, so `T` independent FMA chains hide the FMA latency.
#[inline(always)]
unsafe fn pointwise_tile<V: F32x16, const T: usize>(
    cbi: usize,
    block_stride: usize,
    x: *const f32,
    w: *const f32,
    ep: BlockEpilogue<V>,
    res: *const f32,
    y: *mut f32,
) {
    let mut acc = [V::zero(); T];
    let mut wp = w;
    for ib in 0..cbi {
        let xb = x.add(ib * block_stride);
        for l in 0..BLOCK {
            let wv = V::load(wp);
            wp = wp.add(BLOCK);
            for (r, a) in acc.iter_mut().enumerate() {
                *a = a.mul_add(V::splat(*xb.add(r * BLOCK + l)), wv);
            }
        }
    }
    for (r, a) in acc.iter().enumerate() {
        let rp = if res.is_null() {
            res
        } else {
            res.add(r * BLOCK)
        };
        ep.finish(*a, rp, y.add(r * BLOCK));
    }
}

/// # Safety
/// The ISA of `V` must be present. Lengths are checked here.
#[inline(always)]
pub(in crate::cpu) unsafe fn pointwise<V: F32x16, const R: usize>(
    s: &PointwiseShape,
    x: &[f32],
    w: &[f32],
    ep: &Epilogue,
    y: &mut [f32],
) {
    check_pointwise(s, x, w, ep, y);
    let ci = padded(s.c_in);
    let (cbi, px) = (ci / BLOCK, s.pixels);
    let block_stride = px * BLOCK;
    let (xp, wp, yp) = (x.as_ptr(), w.as_ptr(), y.as_mut_ptr());
    let res = ep.residual.map_or(std::ptr::null(), |r| r.as_ptr());
    let mut p0 = 0;
    while p0 < px {
        let pend = (p0 + POINTWISE_CHUNK).min(px);
        for ob in 0..blocks(s.c_out) {
            let bep = BlockEpilogue::<V>::new(ep, ob);
            let wb = wp.add(ob * ci * BLOCK);
            let out = ob * block_stride;
            let mut p = p0;
            while p < pend {
                let rows = (pend - p).min(R);
                let off = out + p * BLOCK;
                let rp = if res.is_null() { res } else { res.add(off) };
                let xt = xp.add(p * BLOCK);
                let yt = yp.add(off);
                p += if rows == R {
                    pointwise_tile::<V, R>(cbi, block_stride, xt, wb, bep, rp, yt);
                    R
                } else {
                    tail_tile!(
                        rows,
                        pointwise_tile::<V>(cbi, block_stride, xt, wb, bep, rp, yt)
                    )
                };
            }
        }
        p0 = pend;
    }
}

// ------------------------------------------------------------------ depthwise

/// `T` adjacent output pixels of one 16-channel plane; `x` points at the padded input under
/// the first pixel's top-left tap. `kh`, `kw` are literals (3) on the hot path, so the tap
/// loops unroll.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn depthwise_tile<V: F32x16, const T: usize>(
    kh: usize,
    kw: usize,
    stride_w: usize,
    row_stride: usize,
    x: *const f32,
    w: *const f32,
    ep: BlockEpilogue<V>,
    y: *mut f32,
) {
    let mut acc = [V::zero(); T];
    for ky in 0..kh {
        for kx in 0..kw {
            let wv = V::load(w.add((ky * kw + kx) * BLOCK));
            let xr = x.add(ky * row_stride + kx * BLOCK);
            for (r, a) in acc.iter_mut().enumerate() {
                *a = a.mul_add(V::load(xr.add(r * stride_w * BLOCK)), wv);
            }
        }
    }
    for (r, a) in acc.iter().enumerate() {
        ep.finish(*a, std::ptr::null(), y.add(r * BLOCK));
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn depthwise_plane<V: F32x16, const R: usize>(
    g: &ConvGeom,
    kh: usize,
    kw: usize,
    pad_w: usize,
    x: *const f32,
    w: *const f32,
    ep: BlockEpilogue<V>,
    y: *mut f32,
) {
    let (oh, ow) = (g.out_h(), g.out_w());
    let row_stride = pad_w * BLOCK;
    for oy in 0..oh {
        let xrow = x.add(oy * g.stride_h * row_stride);
        let yrow = y.add(oy * ow * BLOCK);
        let mut ox = 0;
        while ox < ow {
            let rows = (ow - ox).min(R);
            let xt = xrow.add(ox * g.stride_w * BLOCK);
            let yt = yrow.add(ox * BLOCK);
            ox += if rows == R {
                depthwise_tile::<V, R>(kh, kw, g.stride_w, row_stride, xt, w, ep, yt);
                R
            } else {
                tail_tile!(
                    rows,
                    depthwise_tile::<V>(kh, kw, g.stride_w, row_stride, xt, w, ep, yt)
                )
            };
        }
    }
}

/// # Safety
/// The ISA of `V` must be present. Lengths are checked here.
#[inline(always)]
pub(in crate::cpu) unsafe fn depthwise<V: F32x16, const R: usize>(
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    ep: &Epilogue,
    y: &mut [f32],
) {
    check_depthwise(g, x, w, ep, y);
    let (ph, pw) = (g.h + g.pad_t + g.pad_b, g.w + g.pad_l + g.pad_r);
    let (oh, ow, taps) = (g.out_h(), g.out_w(), g.kh * g.kw);
    // Each plane is copied into a zero-bordered scratch so the tap loops need no bounds tests.
    let mut scratch = vec![0.0f32; ph * pw * BLOCK];
    let plane = g.h * g.w * BLOCK;
    for cb in 0..blocks(g.c_in) {
        let bep = BlockEpilogue::<V>::new(ep, cb);
        let wb = w.as_ptr().add(cb * taps * BLOCK);
        for n in 0..g.n {
            let src = &x[(cb * g.n + n) * plane..(cb * g.n + n + 1) * plane];
            for iy in 0..g.h {
                let d = ((iy + g.pad_t) * pw + g.pad_l) * BLOCK;
                scratch[d..d + g.w * BLOCK]
                    .copy_from_slice(&src[iy * g.w * BLOCK..(iy + 1) * g.w * BLOCK]);
            }
            let yt = y.as_mut_ptr().add((cb * g.n + n) * oh * ow * BLOCK);
            let sp = scratch.as_ptr();
            if g.kh == 3 && g.kw == 3 {
                depthwise_plane::<V, R>(g, 3, 3, pw, sp, wb, bep, yt);
            } else {
                depthwise_plane::<V, R>(g, g.kh, g.kw, pw, sp, wb, bep, yt);
            }
        }
    }
}

// ------------------------------------------------------------------ direct (dense) conv

/// `T` adjacent output pixels × 16 output channels of a dense conv; `x` points into the
/// zero-padded NCHW image at channel 0, under the first pixel's top-left tap.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn direct_tile<V: F32x16, const T: usize>(
    c_in: usize,
    kh: usize,
    kw: usize,
    stride_w: usize,
    row_stride: usize,
    plane_stride: usize,
    x: *const f32,
    w: *const f32,
    ep: BlockEpilogue<V>,
    y: *mut f32,
) {
    let mut acc = [V::zero(); T];
    let mut wp = w;
    for ic in 0..c_in {
        let xc = x.add(ic * plane_stride);
        for ky in 0..kh {
            let xr = xc.add(ky * row_stride);
            for kx in 0..kw {
                let wv = V::load(wp);
                wp = wp.add(BLOCK);
                for (r, a) in acc.iter_mut().enumerate() {
                    *a = a.mul_add(V::splat(*xr.add(r * stride_w + kx)), wv);
                }
            }
        }
    }
    for (r, a) in acc.iter().enumerate() {
        ep.finish(*a, std::ptr::null(), y.add(r * BLOCK));
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn direct_rows<V: F32x16, const R: usize>(
    g: &ConvGeom,
    kh: usize,
    kw: usize,
    pw: usize,
    plane_stride: usize,
    x: *const f32,
    w: *const f32,
    ep: BlockEpilogue<V>,
    y: *mut f32,
) {
    let (oh, ow) = (g.out_h(), g.out_w());
    for oy in 0..oh {
        let xrow = x.add(oy * g.stride_h * pw);
        let yrow = y.add(oy * ow * BLOCK);
        let mut ox = 0;
        while ox < ow {
            let rows = (ow - ox).min(R);
            let xt = xrow.add(ox * g.stride_w);
            let yt = yrow.add(ox * BLOCK);
            ox += if rows == R {
                direct_tile::<V, R>(g.c_in, kh, kw, g.stride_w, pw, plane_stride, xt, w, ep, yt);
                R
            } else {
                tail_tile!(
                    rows,
                    direct_tile::<V>(g.c_in, kh, kw, g.stride_w, pw, plane_stride, xt, w, ep, yt)
                )
            };
        }
    }
}

/// # Safety
/// The ISA of `V` must be present. Lengths are checked here.
#[inline(always)]
pub(in crate::cpu) unsafe fn direct_conv<V: F32x16, const R: usize>(
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    ep: &Epilogue,
    y: &mut [f32],
) {
    check_direct(g, x, w, ep, y);
    let (ph, pw) = (g.h + g.pad_t + g.pad_b, g.w + g.pad_l + g.pad_r);
    let (oh, ow, taps) = (g.out_h(), g.out_w(), g.kh * g.kw);
    let plane_stride = ph * pw;
    let mut scratch = vec![0.0f32; g.c_in * plane_stride];
    for n in 0..g.n {
        for ic in 0..g.c_in {
            for iy in 0..g.h {
                let s = ((n * g.c_in + ic) * g.h + iy) * g.w;
                let d = ic * plane_stride + (iy + g.pad_t) * pw + g.pad_l;
                scratch[d..d + g.w].copy_from_slice(&x[s..s + g.w]);
            }
        }
        let sp = scratch.as_ptr();
        for ob in 0..blocks(g.c_out) {
            let bep = BlockEpilogue::<V>::new(ep, ob);
            let wb = w.as_ptr().add(ob * g.c_in * taps * BLOCK);
            let yt = y.as_mut_ptr().add((ob * g.n + n) * oh * ow * BLOCK);
            if g.kh == 3 && g.kw == 3 {
                direct_rows::<V, R>(g, 3, 3, pw, plane_stride, sp, wb, bep, yt);
            } else {
                direct_rows::<V, R>(g, g.kh, g.kw, pw, plane_stride, sp, wb, bep, yt);
            }
        }
    }
}

// ------------------------------------------------------------------ head: global depthwise, linear

/// # Safety
/// The ISA of `V` must be present. Lengths are checked here.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(in crate::cpu) unsafe fn global_depthwise<V: F32x16>(
    n: usize,
    c: usize,
    hw: usize,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    y: &mut [f32],
) {
    check_global_depthwise(n, c, hw, x, w, bias, y);
    let cp = padded(c);
    for cb in 0..blocks(c) {
        let b = V::load(bias.as_ptr().add(cb * BLOCK));
        let wb = w.as_ptr().add(cb * hw * BLOCK);
        for i in 0..n {
            let xb = x.as_ptr().add((cb * n + i) * hw * BLOCK);
            // Sequential order, like the reference: the sum is short (hw ≤ 16 for the student).
            let mut acc = V::zero();
            for p in 0..hw {
                acc = acc.mul_add(V::load(xb.add(p * BLOCK)), V::load(wb.add(p * BLOCK)));
            }
            acc.add(b).store(y.as_mut_ptr().add(i * cp + cb * BLOCK));
        }
    }
}

#[inline(always)]
unsafe fn linear_tile<V: F32x16, const T: usize>(
    k: usize,
    mp: usize,
    x: *const f32,
    w: *const f32,
    b: V,
    y: *mut f32,
) {
    let mut acc = [V::zero(); T];
    for i in 0..k {
        let wv = V::load(w.add(i * BLOCK));
        for (r, a) in acc.iter_mut().enumerate() {
            *a = a.mul_add(V::splat(*x.add(r * k + i)), wv);
        }
    }
    for (r, a) in acc.iter().enumerate() {
        a.add(b).store(y.add(r * mp));
    }
}

/// # Safety
/// The ISA of `V` must be present. Lengths are checked here.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(in crate::cpu) unsafe fn linear<V: F32x16, const R: usize>(
    n: usize,
    k: usize,
    m: usize,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    y: &mut [f32],
) {
    check_linear(n, k, m, x, w, bias, y);
    let mp = padded(m);
    for ob in 0..blocks(m) {
        let b = V::load(bias.as_ptr().add(ob * BLOCK));
        let wb = w.as_ptr().add(ob * k * BLOCK);
        let mut r0 = 0;
        while r0 < n {
            let rows = (n - r0).min(R);
            let xt = x.as_ptr().add(r0 * k);
            let yt = y.as_mut_ptr().add(r0 * mp + ob * BLOCK);
            r0 += if rows == R {
                linear_tile::<V, R>(k, mp, xt, wb, b, yt);
                R
            } else {
                tail_tile!(rows, linear_tile::<V>(k, mp, xt, wb, b, yt))
            };
        }
    }
}

// ------------------------------------------------------------------ FMA peak probe

/// `C` chains of independent fused multiply–adds on registers only (`C` is chosen per ISA to
/// fill the register file without spilling and to exceed latency × ports): `C × 16 ×
/// iterations` FMAs with no loads, the single-core FMA ceiling the benchmarks compare
/// kernels against. Returns a value derived from every accumulator so the work is kept.
///
/// # Safety
/// The ISA of `V` must be present.
#[inline(always)]
pub(in crate::cpu) unsafe fn fma_probe<V: F32x16, const C: usize>(iterations: usize) -> f32 {
    let mut acc = [V::zero(); C];
    let a = V::splat(0.999_99);
    let b = V::splat(1e-6);
    for _ in 0..iterations {
        for x in acc.iter_mut() {
            // x = x·a + b: each FMA depends on the previous one of its chain, and no operand
            // pair is constant, so the compiler cannot fold the product away.
            *x = b.mul_add(*x, a);
        }
    }
    let mut sum = V::zero();
    for x in acc {
        sum = sum.add(x);
    }
    let mut out = [0.0f32; BLOCK];
    sum.store(out.as_mut_ptr());
    out.iter().sum()
}

/// Defines, inside an ISA file, `mod forward` with the safe table entries of the inference
/// kernels above, each named after its `Kernels` field: a `#[target_feature]` shim around the
/// generic loop nest. The ISA file provides the vector type and its tile constants
/// (`POINTWISE_ROWS`, `DEPTHWISE_ROWS`, `DIRECT_ROWS`, `LINEAR_ROWS`, `PROBE_CHAINS`); `$table`
/// names its `Kernels` constructor, whose packed kernels `conv2d` and `linear` route to.
macro_rules! forward_entries {
    ($feature:literal, $V:ident, table = $table:ident) => {
        /// The inference kernels for this ISA (see `simd::forward`), named after the table's
        /// fields.
        pub(super) mod forward {
            use super::$V as V;
            use super::{DEPTHWISE_ROWS, DIRECT_ROWS, LINEAR_ROWS, POINTWISE_ROWS, PROBE_CHAINS};
            use $crate::cpu::packed::{self, Epilogue, PointwiseShape};
            use $crate::cpu::simd::forward as simd;
            use $crate::cpu::{ConvGeom, Kernels};

            #[target_feature(enable = $feature)]
            unsafe fn pointwise_impl(
                s: &PointwiseShape,
                x: &[f32],
                w: &[f32],
                ep: &Epilogue,
                y: &mut [f32],
            ) {
                simd::pointwise::<V, POINTWISE_ROWS>(s, x, w, ep, y)
            }
            #[target_feature(enable = $feature)]
            unsafe fn depthwise_impl(
                g: &ConvGeom,
                x: &[f32],
                w: &[f32],
                ep: &Epilogue,
                y: &mut [f32],
            ) {
                simd::depthwise::<V, DEPTHWISE_ROWS>(g, x, w, ep, y)
            }
            #[target_feature(enable = $feature)]
            unsafe fn direct_conv_impl(
                g: &ConvGeom,
                x: &[f32],
                w: &[f32],
                ep: &Epilogue,
                y: &mut [f32],
            ) {
                simd::direct_conv::<V, DIRECT_ROWS>(g, x, w, ep, y)
            }
            #[target_feature(enable = $feature)]
            unsafe fn global_depthwise_impl(
                n: usize,
                c: usize,
                hw: usize,
                x: &[f32],
                w: &[f32],
                b: &[f32],
                y: &mut [f32],
            ) {
                simd::global_depthwise::<V>(n, c, hw, x, w, b, y)
            }
            #[target_feature(enable = $feature)]
            unsafe fn linear_impl(
                n: usize,
                k: usize,
                m: usize,
                x: &[f32],
                w: &[f32],
                b: &[f32],
                y: &mut [f32],
            ) {
                simd::linear::<V, LINEAR_ROWS>(n, k, m, x, w, b, y)
            }
            #[target_feature(enable = $feature)]
            unsafe fn fma_probe_impl(iterations: usize) -> f32 {
                simd::fma_probe::<V, PROBE_CHAINS>(iterations)
            }

            /// Pointwise 1×1 conv on blocked pixels, bias + PReLU + residual fused.
            pub(in crate::cpu) fn pointwise_packed(
                s: &PointwiseShape,
                x: &[f32],
                w: &[f32],
                ep: &Epilogue,
                y: &mut [f32],
            ) {
                // SAFETY: only reachable through this ISA's table, built after the CPU was
                // checked; `simd::pointwise` checks every slice length before its raw-pointer
                // loops.
                unsafe { pointwise_impl(s, x, w, ep, y) }
            }
            /// Depthwise conv (3×3 fast path, any size works) on blocked planes, bias + PReLU
            /// fused.
            pub(in crate::cpu) fn depthwise_packed(
                g: &ConvGeom,
                x: &[f32],
                w: &[f32],
                ep: &Epilogue,
                y: &mut [f32],
            ) {
                // SAFETY: as in `pointwise_packed`; `simd::depthwise` checks the lengths.
                unsafe { depthwise_impl(g, x, w, ep, y) }
            }
            /// Dense conv (the stem) from NCHW to blocked output, bias + PReLU fused.
            pub(in crate::cpu) fn direct_conv_packed(
                g: &ConvGeom,
                x: &[f32],
                w: &[f32],
                ep: &Epilogue,
                y: &mut [f32],
            ) {
                // SAFETY: as in `pointwise_packed`; `simd::direct_conv` checks the lengths.
                unsafe { direct_conv_impl(g, x, w, ep, y) }
            }
            /// Global depthwise conv on blocked maps.
            pub(in crate::cpu) fn global_depthwise_packed(
                n: usize,
                c: usize,
                hw: usize,
                x: &[f32],
                w: &[f32],
                b: &[f32],
                y: &mut [f32],
            ) {
                // SAFETY: as in `pointwise_packed`; `simd::global_depthwise` checks the lengths.
                unsafe { global_depthwise_impl(n, c, hw, x, w, b, y) }
            }
            /// Linear layer with packed weights.
            pub(in crate::cpu) fn linear_packed(
                n: usize,
                k: usize,
                m: usize,
                x: &[f32],
                w: &[f32],
                b: &[f32],
                y: &mut [f32],
            ) {
                // SAFETY: as in `pointwise_packed`; `simd::linear` checks the lengths.
                unsafe { linear_impl(n, k, m, x, w, b, y) }
            }
            /// The general NCHW conv entry: any shape. A pointwise conv without bias (the
            /// trainer's) runs as a GEMM on NCHW, a depthwise 3×3 (pad 1, stride 1 or 2) with
            /// its channels across the lanes one image at a time; everything else is routed to
            /// this ISA's packed kernels.
            pub(in crate::cpu) fn conv2d(
                g: &ConvGeom,
                x: &[f32],
                w: &[f32],
                bias: Option<&[f32]>,
                y: &mut [f32],
            ) {
                if bias.is_none() && super::backward::pointwise_forward(g, x, w, y).is_some() {
                    return;
                }
                if super::backward::depthwise_forward(g, x, w, bias, y).is_some() {
                    return;
                }
                packed::conv2d_via_packed(&Kernels::$table(), g, x, w, bias, y)
            }
            /// The plain-layout linear entry: packs the weights, then runs `linear_packed`.
            pub(in crate::cpu) fn linear(
                n: usize,
                k: usize,
                m: usize,
                x: &[f32],
                w: &[f32],
                b: Option<&[f32]>,
                y: &mut [f32],
            ) {
                packed::linear_via_packed(&Kernels::$table(), n, k, m, x, w, b, y)
            }
            /// `PROBE_CHAINS × 16 × iterations` register-only FMAs (the peak probe of
            /// `bridge-bench`).
            pub(in crate::cpu) fn fma_probe(iterations: usize) -> f32 {
                // SAFETY: only reachable through this ISA's table, built after the CPU was
                // checked.
                unsafe { fma_probe_impl(iterations) }
            }
        }
    };
}
pub(in crate::cpu) use forward_entries;
