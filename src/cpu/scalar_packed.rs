//! Scalar reference versions of the packed, fused kernels (the `*_packed` fields of the scalar
//! table): plain index arithmetic on the blocked layout of `packed`, the oracle for every SIMD one.
//! No unsafe and no tiling here; their own correctness is tested against `scalar::conv2d` & co.

use super::packed::{
    blocks, check_depthwise, check_direct, check_global_depthwise, check_linear, check_pointwise,
    padded, Epilogue, PointwiseShape, BLOCK,
};
use super::ConvGeom;

/// The fused epilogue on one value of channel `c` at flat output index `i`.
#[inline]
fn epilogue(ep: &Epilogue, c: usize, i: usize, acc: f32) -> f32 {
    let mut v = acc + ep.bias[c];
    if let Some(a) = ep.prelu {
        if v < 0.0 {
            v *= a[c];
        }
    }
    if let Some(r) = ep.residual {
        v += r[i];
    }
    v
}

/// Pointwise conv on blocked pixels with the fused epilogue.
pub fn pointwise_packed(s: &PointwiseShape, x: &[f32], w: &[f32], ep: &Epilogue, y: &mut [f32]) {
    check_pointwise(s, x, w, ep, y);
    let ci = padded(s.c_in);
    for ob in 0..blocks(s.c_out) {
        for p in 0..s.pixels {
            for l in 0..BLOCK {
                let mut acc = 0.0f32;
                for ic in 0..ci {
                    let xv = x[((ic / BLOCK) * s.pixels + p) * BLOCK + ic % BLOCK];
                    acc += xv * w[(ob * ci + ic) * BLOCK + l];
                }
                let i = (ob * s.pixels + p) * BLOCK + l;
                y[i] = epilogue(ep, ob * BLOCK + l, i, acc);
            }
        }
    }
}

/// Depthwise conv (any kernel, stride, padding) on blocked planes with the fused epilogue.
pub fn depthwise_packed(g: &ConvGeom, x: &[f32], w: &[f32], ep: &Epilogue, y: &mut [f32]) {
    check_depthwise(g, x, w, ep, y);
    let (oh, ow, taps) = (g.out_h(), g.out_w(), g.kh * g.kw);
    for cb in 0..blocks(g.c_in) {
        for n in 0..g.n {
            let xin = (cb * g.n + n) * g.h * g.w;
            let yout = (cb * g.n + n) * oh * ow;
            for oy in 0..oh {
                for ox in 0..ow {
                    for l in 0..BLOCK {
                        let mut acc = 0.0f32;
                        for ky in 0..g.kh {
                            let iy = (oy * g.stride_h + ky) as isize - g.pad_t as isize;
                            if iy < 0 || iy >= g.h as isize {
                                continue;
                            }
                            for kx in 0..g.kw {
                                let ix = (ox * g.stride_w + kx) as isize - g.pad_l as isize;
                                if ix < 0 || ix >= g.w as isize {
                                    continue;
                                }
                                let xv = x[(xin + iy as usize * g.w + ix as usize) * BLOCK + l];
                                acc += xv * w[(cb * taps + ky * g.kw + kx) * BLOCK + l];
                            }
                        }
                        let i = (yout + oy * ow + ox) * BLOCK + l;
                        y[i] = epilogue(ep, cb * BLOCK + l, i, acc);
                    }
                }
            }
        }
    }
}

/// Dense conv from an NCHW input to a blocked output, with the fused epilogue.
pub fn direct_conv_packed(g: &ConvGeom, x: &[f32], w: &[f32], ep: &Epilogue, y: &mut [f32]) {
    check_direct(g, x, w, ep, y);
    let (oh, ow, taps) = (g.out_h(), g.out_w(), g.kh * g.kw);
    for ob in 0..blocks(g.c_out) {
        for n in 0..g.n {
            for oy in 0..oh {
                for ox in 0..ow {
                    for l in 0..BLOCK {
                        let mut acc = 0.0f32;
                        for ic in 0..g.c_in {
                            for ky in 0..g.kh {
                                let iy = (oy * g.stride_h + ky) as isize - g.pad_t as isize;
                                if iy < 0 || iy >= g.h as isize {
                                    continue;
                                }
                                for kx in 0..g.kw {
                                    let ix = (ox * g.stride_w + kx) as isize - g.pad_l as isize;
                                    if ix < 0 || ix >= g.w as isize {
                                        continue;
                                    }
                                    let xv = x[((n * g.c_in + ic) * g.h + iy as usize) * g.w
                                        + ix as usize];
                                    let wi = ((ob * g.c_in + ic) * taps + ky * g.kw + kx) * BLOCK;
                                    acc += xv * w[wi + l];
                                }
                            }
                        }
                        let i = (((ob * g.n + n) * oh + oy) * ow + ox) * BLOCK + l;
                        y[i] = epilogue(ep, ob * BLOCK + l, i, acc);
                    }
                }
            }
        }
    }
}

/// Global depthwise conv on blocked maps; output `[n][padded(c)]`.
pub fn global_depthwise_packed(
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
        for b in 0..n {
            for l in 0..BLOCK {
                let mut acc = 0.0f32;
                for p in 0..hw {
                    acc += x[((cb * n + b) * hw + p) * BLOCK + l] * w[(cb * hw + p) * BLOCK + l];
                }
                y[b * cp + cb * BLOCK + l] = acc + bias[cb * BLOCK + l];
            }
        }
    }
}

/// Linear layer with packed weights; output `[n][padded(m)]`.
pub fn linear_packed(
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
    for b in 0..n {
        for ob in 0..blocks(m) {
            for l in 0..BLOCK {
                let mut acc = 0.0f32;
                for i in 0..k {
                    acc += x[b * k + i] * w[(ob * k + i) * BLOCK + l];
                }
                y[b * mp + ob * BLOCK + l] = acc + bias[ob * BLOCK + l];
            }
        }
    }
}

/// `12 × 16 × iterations` multiply–adds in plain scalar code (the scalar table's peak probe;
/// unfused `a·b + c`, since `f32::mul_add` without an FMA target is a libm call).
pub fn fma_probe(iterations: usize) -> f32 {
    let mut acc = [0.0f32; 12 * BLOCK];
    for _ in 0..iterations {
        for x in acc.iter_mut() {
            *x = *x * 0.999_99 + 1e-6;
        }
    }
    acc.iter().sum()
}
