//! The trainer's kernels on plain NCHW tensors (the hot backward kernels, the pointwise and
//! depthwise 3×3 forward, training-mode batch-norm), and `backward_entries!`, which writes an
//! ISA's `#[target_feature]` shims around them. Must not check CPU features (the table does) nor
//! accumulate into its outputs.
//!
//! The contracts are those of the references in `scalar` (outputs overwritten, never
//! accumulated into). Summation orders differ from the references (vector lanes, fused
//! multiply–adds), so results agree up to rounding. Lengths are checked with `assert!` before
//! any raw pointer use.

use super::F32x16;
use crate::cpu::packed::{blocks, padded, BLOCK};
use crate::cpu::ConvGeom;

/// Pixels per vector in the NCHW backward kernels (one `F32x16`).
const LANES: usize = BLOCK;

/// `T` input channels × 16 pixels of the pointwise data gradient: `dx[ci + r, p..p+16] =
/// Σ_co w[co, ci + r] · dy[co, p..p+16]`. `w` points at `w[0, ci]`; `dy`/`dx` at pixel `p` of
/// channel 0 / `ci`, with row strides `dy_stride` / `dx_stride`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn pointwise_data_tile<V: F32x16, const T: usize>(
    c_in: usize,
    c_out: usize,
    dy: *const f32,
    dy_stride: usize,
    w: *const f32,
    dx: *mut f32,
    dx_stride: usize,
) {
    let mut acc = [V::zero(); T];
    for co in 0..c_out {
        let d = V::load(dy.add(co * dy_stride));
        let wr = w.add(co * c_in);
        for (r, a) in acc.iter_mut().enumerate() {
            *a = a.mul_add(V::splat(*wr.add(r)), d);
        }
    }
    for (r, a) in acc.iter().enumerate() {
        a.store(dx.add(r * dx_stride));
    }
}

/// All input channels of one 16-pixel column, `R` channels per micro-tile.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn pointwise_data_column<V: F32x16, const R: usize>(
    c_in: usize,
    c_out: usize,
    dy: *const f32,
    dy_stride: usize,
    w: *const f32,
    dx: *mut f32,
    dx_stride: usize,
) {
    let mut ci = 0;
    while ci < c_in {
        let rows = (c_in - ci).min(R);
        let (wt, dxt) = (w.add(ci), dx.add(ci * dx_stride));
        ci += if rows == R {
            pointwise_data_tile::<V, R>(c_in, c_out, dy, dy_stride, wt, dxt, dx_stride);
            R
        } else {
            tail_tile!(
                rows,
                pointwise_data_tile::<V>(c_in, c_out, dy, dy_stride, wt, dxt, dx_stride)
            )
        };
    }
}

/// Pointwise (1×1, stride 1, unpadded, one group) conv input gradient on NCHW, as
/// `scalar::pointwise_backward_data`: a GEMM `dx_n = wᵀ · dy_n` per image, register-blocked
/// as `R` input channels × 16 pixels. A pixel tail (`h·w` not a multiple of 16) runs the
/// same tile on a zero-padded copy of the tail columns.
///
/// # Safety
/// The ISA of `V` must be present.
#[inline(always)]
pub(in crate::cpu) unsafe fn pointwise_backward_data<V: F32x16, const R: usize>(
    g: &ConvGeom,
    dy: &[f32],
    w: &[f32],
    dx: &mut [f32],
) {
    let (hw, c_in, c_out) = (g.h * g.w, g.c_in, g.c_out);
    assert!(dy.len() >= g.n * c_out * hw && w.len() >= c_out * c_in && dx.len() >= g.input_len());
    let full = hw / LANES * LANES;
    let rem = hw - full;
    let mut dy_tail = vec![0.0f32; if rem > 0 { c_out * LANES } else { 0 }];
    let mut dx_tail = vec![0.0f32; if rem > 0 { c_in * LANES } else { 0 }];
    for n in 0..g.n {
        let dyn_ = dy.as_ptr().add(n * c_out * hw);
        let dxn = dx.as_mut_ptr().add(n * c_in * hw);
        let mut p = 0;
        while p < full {
            pointwise_data_column::<V, R>(c_in, c_out, dyn_.add(p), hw, w.as_ptr(), dxn.add(p), hw);
            p += LANES;
        }
        if rem > 0 {
            for co in 0..c_out {
                let s = (n * c_out + co) * hw + full;
                dy_tail[co * LANES..co * LANES + rem].copy_from_slice(&dy[s..s + rem]);
            }
            let (dt, xt) = (dy_tail.as_ptr(), dx_tail.as_mut_ptr());
            pointwise_data_column::<V, R>(c_in, c_out, dt, LANES, w.as_ptr(), xt, LANES);
            for ci in 0..c_in {
                let d = (n * c_in + ci) * hw + full;
                dx[d..d + rem].copy_from_slice(&dx_tail[ci * LANES..ci * LANES + rem]);
            }
        }
    }
}

/// `T` output channels × 16 input channels of the pointwise weight gradient, accumulated over
/// one image's `hw` pixels into `acc_out` (row stride `cip`): `dw[co + r, ci..ci+16] +=
/// Σ_p dy[co + r, p] · xᵀ[p, ci..ci+16]`.
#[inline(always)]
unsafe fn pointwise_weight_tile<V: F32x16, const T: usize>(
    hw: usize,
    cip: usize,
    dy: *const f32,
    xt: *const f32,
    acc_out: *mut f32,
) {
    let mut acc = [V::zero(); T];
    for (r, a) in acc.iter_mut().enumerate() {
        *a = V::load(acc_out.add(r * cip));
    }
    for p in 0..hw {
        let xv = V::load(xt.add(p * cip));
        for (r, a) in acc.iter_mut().enumerate() {
            *a = a.mul_add(V::splat(*dy.add(r * hw + p)), xv);
        }
    }
    for (r, a) in acc.iter().enumerate() {
        a.store(acc_out.add(r * cip));
    }
}

/// Pointwise conv weight gradient on NCHW, as `scalar::pointwise_backward_weight`:
/// `dw = Σ_n dy_n · x_nᵀ`. Each image's `x_n` is transposed to pixel-major rows padded to 16
/// channels, so the tile broadcasts `dy` and loads 16 input channels at once; the padded
/// `[c_out, padded(c_in)]` accumulator is copied to `dw` at the end.
///
/// # Safety
/// The ISA of `V` must be present.
#[inline(always)]
pub(in crate::cpu) unsafe fn pointwise_backward_weight<V: F32x16, const R: usize>(
    g: &ConvGeom,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
) {
    let (hw, c_in, c_out) = (g.h * g.w, g.c_in, g.c_out);
    assert!(x.len() >= g.input_len() && dy.len() >= g.n * c_out * hw && dw.len() >= c_out * c_in);
    weight_grad_by_image::<V, R>(g.n, hw, c_in, c_out, dy, dw, |n, xt, cip| {
        for ci in 0..c_in {
            let row = &x[(n * c_in + ci) * hw..(n * c_in + ci + 1) * hw];
            for (p, &v) in row.iter().enumerate() {
                xt[p * cip + ci] = v;
            }
        }
    });
}

/// `dw [c_out, k] = Σ_n dy_n · x_nᵀ` where `fill(n, xt, cip)` writes image `n`'s `x_nᵀ` as
/// pixel-major rows of `cip = padded(k)` floats (lanes past `k` are left zero). One `hw × cip`
/// buffer is reused for every image, so a lowered input (the stem's im2col) is never built for
/// the whole batch. `dy` is `[n, c_out, hw]`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn weight_grad_by_image<V: F32x16, const R: usize>(
    batch: usize,
    hw: usize,
    k: usize,
    c_out: usize,
    dy: &[f32],
    dw: &mut [f32],
    mut fill: impl FnMut(usize, &mut [f32], usize),
) {
    assert!(dy.len() >= batch * c_out * hw && dw.len() >= c_out * k);
    let cip = padded(k);
    let mut xt = vec![0.0f32; hw * cip];
    let mut acc = vec![0.0f32; c_out * cip];
    for n in 0..batch {
        fill(n, &mut xt, cip);
        let dyn_ = dy.as_ptr().add(n * c_out * hw);
        for cb in 0..blocks(k) {
            let xb = xt.as_ptr().add(cb * BLOCK);
            let mut co = 0;
            while co < c_out {
                let rows = (c_out - co).min(R);
                let (dt, at) = (
                    dyn_.add(co * hw),
                    acc.as_mut_ptr().add(co * cip + cb * BLOCK),
                );
                co += if rows == R {
                    pointwise_weight_tile::<V, R>(hw, cip, dt, xb, at);
                    R
                } else {
                    tail_tile!(rows, pointwise_weight_tile::<V>(hw, cip, dt, xb, at))
                };
            }
        }
    }
    for co in 0..c_out {
        dw[co * k..(co + 1) * k].copy_from_slice(&acc[co * cip..co * cip + k]);
    }
}

/// Whether a depthwise geometry takes the vector path: 3×3, pad 1 on every side, the same
/// stride 1 or 2 in both directions. Anything else runs the scalar reference.
pub(in crate::cpu) fn depthwise_backward_fast(g: &ConvGeom) -> bool {
    g.kh == 3
        && g.kw == 3
        && g.stride_h == g.stride_w
        && (g.stride_h == 1 || g.stride_h == 2)
        && [g.pad_t, g.pad_l, g.pad_b, g.pad_r] == [1, 1, 1, 1]
        && g.groups == g.c_in
        && g.c_out == g.c_in
}

/// Copies 16 channels (`cb`) of image `n` from NCHW (`c` channels, `h × w` pixels) into a
/// channel-interleaved plane `dst[(offset + y·pitch + x)·16 + lane]`; lanes past `c` are left as
/// they are (zero in a fresh buffer). With all 16 lanes real channels and an ISA that has them,
/// 16×16 register transposes move 16 pixels of the 16 planes at a time; otherwise, and for the
/// last `h·w mod 16` pixels, a scalar copy.
///
/// # Safety
/// The ISA of `V` must be present.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn interleave_plane<V: F32x16>(
    src: &[f32],
    n: usize,
    c: usize,
    cb: usize,
    h: usize,
    w: usize,
    pitch: usize,
    offset: usize,
    dst: &mut [f32],
) {
    let (hw, lanes) = (h * w, BLOCK.min(c - cb * BLOCK));
    let first = (n * c + cb * BLOCK) * hw;
    assert!(src.len() >= first + lanes * hw);
    assert!(dst.len() >= (offset + (h - 1) * pitch + w) * BLOCK);
    let full = if V::FAST_TRANSPOSE && lanes == BLOCK {
        hw / BLOCK * BLOCK
    } else {
        0
    };
    let (sp, dp) = (src.as_ptr().add(first), dst.as_mut_ptr());
    let mut p = 0;
    while p < full {
        // Plain loops, not `array::from_fn`: a closure does not inherit the shim's target
        // features, so its intrinsics would become calls.
        let mut m = [V::zero(); BLOCK];
        for (lane, v) in m.iter_mut().enumerate() {
            *v = V::load(sp.add(lane * hw + p));
        }
        V::transpose16(&mut m);
        for (j, v) in m.iter().enumerate() {
            let q = p + j;
            v.store(dp.add((offset + q / w * pitch + q % w) * BLOCK));
        }
        p += BLOCK;
    }
    for lane in 0..lanes {
        for q in full..hw {
            dst[(offset + q / w * pitch + q % w) * BLOCK + lane] = src[first + lane * hw + q];
        }
    }
}

/// The inverse of `interleave_plane`: the 16 channels (`cb`) of image `n` of an NCHW `dst`
/// (`c` channels, `h × w`) from the interleaved plane `src[(offset + y·pitch + x)·16 + lane]`.
///
/// # Safety
/// The ISA of `V` must be present.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn deinterleave_plane<V: F32x16>(
    src: &[f32],
    pitch: usize,
    offset: usize,
    n: usize,
    c: usize,
    cb: usize,
    h: usize,
    w: usize,
    dst: &mut [f32],
) {
    let (hw, lanes) = (h * w, BLOCK.min(c - cb * BLOCK));
    let first = (n * c + cb * BLOCK) * hw;
    assert!(dst.len() >= first + lanes * hw);
    assert!(src.len() >= (offset + (h - 1) * pitch + w) * BLOCK);
    let full = if V::FAST_TRANSPOSE && lanes == BLOCK {
        hw / BLOCK * BLOCK
    } else {
        0
    };
    let (sp, dp) = (src.as_ptr(), dst.as_mut_ptr().add(first));
    let mut p = 0;
    while p < full {
        let mut m = [V::zero(); BLOCK];
        for (j, v) in m.iter_mut().enumerate() {
            let q = p + j;
            *v = V::load(sp.add((offset + q / w * pitch + q % w) * BLOCK));
        }
        V::transpose16(&mut m);
        for (lane, v) in m.iter().enumerate() {
            v.store(dp.add(lane * hw + p));
        }
        p += BLOCK;
    }
    for lane in 0..lanes {
        for q in full..hw {
            dst[first + lane * hw + q] = src[(offset + q / w * pitch + q % w) * BLOCK + lane];
        }
    }
}

/// 16 channels' 3×3 weights as 9 tap vectors (`[tap][lane]`, zero past `c`).
///
/// # Safety
/// The ISA of `V` must be present.
#[inline(always)]
unsafe fn depthwise_tap_vectors<V: F32x16>(w: &[f32], c: usize, cb: usize) -> [V; 9] {
    let mut taps = [0.0f32; 9 * BLOCK];
    for lane in 0..BLOCK.min(c - cb * BLOCK) {
        for t in 0..9 {
            taps[t * BLOCK + lane] = w[(cb * BLOCK + lane) * 9 + t];
        }
    }
    let mut tv = [V::zero(); 9];
    for (t, v) in tv.iter_mut().enumerate() {
        *v = V::load(taps.as_ptr().add(t * BLOCK));
    }
    tv
}

/// Depthwise 3×3 (pad 1, stride 1 or 2) input gradient on NCHW, as
/// `scalar::depthwise_backward_data`. The student's maps are 16, 8 and 4 pixels wide, too
/// narrow for vectors along a row, so 16 channels go across the lanes: each image's `dy` is
/// interleaved, every output pixel scatters its 9 taps into a zero-bordered interleaved `dx`
/// plane, whose interior is copied back to NCHW.
///
/// # Safety
/// The ISA of `V` must be present and `depthwise_backward_fast(g)` must hold.
#[inline(always)]
pub(in crate::cpu) unsafe fn depthwise_backward_data<V: F32x16>(
    g: &ConvGeom,
    dy: &[f32],
    w: &[f32],
    dx: &mut [f32],
) {
    let (c, s, oh, ow) = (g.c_in, g.stride_h, g.out_h(), g.out_w());
    let (ph, pw) = (g.h + 2, g.w + 2);
    assert!(dy.len() >= g.output_len() && w.len() >= c * 9 && dx.len() >= g.input_len());
    let mut dyb = vec![0.0f32; oh * ow * BLOCK];
    let mut dxb = vec![0.0f32; ph * pw * BLOCK];
    for cb in 0..blocks(c) {
        let tv = depthwise_tap_vectors::<V>(w, c, cb);
        for n in 0..g.n {
            interleave_plane::<V>(dy, n, c, cb, oh, ow, ow, 0, &mut dyb);
            dxb.fill(0.0);
            let xp = dxb.as_mut_ptr();
            for oy in 0..oh {
                for ox in 0..ow {
                    let d = V::load(dyb.as_ptr().add((oy * ow + ox) * BLOCK));
                    for ky in 0..3 {
                        let row = xp.add(((oy * s + ky) * pw + ox * s) * BLOCK);
                        for kx in 0..3 {
                            let q = row.add(kx * BLOCK);
                            V::load(q).mul_add(d, tv[ky * 3 + kx]).store(q);
                        }
                    }
                }
            }
            deinterleave_plane::<V>(&dxb, pw, pw + 1, n, c, cb, g.h, g.w, dx);
        }
    }
}

/// Depthwise 3×3 (pad 1, stride 1 or 2) forward on NCHW, as `scalar::conv2d` on a depthwise
/// geometry (the trainer's; inference runs the packed kernels on blocked tensors). 16 channels
/// go across the lanes as in `depthwise_backward_data`: each image's 16 planes are interleaved
/// into a zero-bordered plane small enough for L1, every output pixel is 9 fused multiply–adds,
/// and the output plane is copied back to NCHW. This replaces converting the whole batch to the
/// blocked layout and back at every call.
///
/// # Safety
/// The ISA of `V` must be present and `depthwise_backward_fast(g)` must hold.
#[inline(always)]
pub(in crate::cpu) unsafe fn depthwise_forward<V: F32x16>(
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let (c, s, oh, ow) = (g.c_in, g.stride_h, g.out_h(), g.out_w());
    let (ph, pw) = (g.h + 2, g.w + 2);
    assert!(x.len() >= g.input_len() && w.len() >= c * 9 && y.len() >= g.output_len());
    assert!(bias.map_or(true, |b| b.len() >= c));
    let mut xb = vec![0.0f32; ph * pw * BLOCK];
    let mut yb = vec![0.0f32; oh * ow * BLOCK];
    for cb in 0..blocks(c) {
        let tv = depthwise_tap_vectors::<V>(w, c, cb);
        let mut bias_lanes = [0.0f32; BLOCK];
        if let Some(b) = bias {
            let lanes = BLOCK.min(c - cb * BLOCK);
            bias_lanes[..lanes].copy_from_slice(&b[cb * BLOCK..cb * BLOCK + lanes]);
        }
        let bv = V::load(bias_lanes.as_ptr());
        for n in 0..g.n {
            // The border stays zero: only the interior is ever written.
            interleave_plane::<V>(x, n, c, cb, g.h, g.w, pw, pw + 1, &mut xb);
            let xp = xb.as_ptr();
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut a = bv;
                    for ky in 0..3 {
                        let row = xp.add(((oy * s + ky) * pw + ox * s) * BLOCK);
                        for kx in 0..3 {
                            a = a.mul_add(V::load(row.add(kx * BLOCK)), tv[ky * 3 + kx]);
                        }
                    }
                    a.store(yb.as_mut_ptr().add((oy * ow + ox) * BLOCK));
                }
            }
            deinterleave_plane::<V>(&yb, ow, 0, n, c, cb, oh, ow, y);
        }
    }
}

/// Depthwise 3×3 (pad 1, stride 1 or 2) weight gradient on NCHW, as
/// `scalar::depthwise_backward_weight`: 16 channels across the lanes (see
/// `depthwise_backward_data`), 9 tap accumulators summed over the whole batch.
///
/// # Safety
/// The ISA of `V` must be present and `depthwise_backward_fast(g)` must hold.
#[inline(always)]
pub(in crate::cpu) unsafe fn depthwise_backward_weight<V: F32x16>(
    g: &ConvGeom,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
) {
    let (c, s, oh, ow) = (g.c_in, g.stride_h, g.out_h(), g.out_w());
    let (ph, pw) = (g.h + 2, g.w + 2);
    assert!(x.len() >= g.input_len() && dy.len() >= g.output_len() && dw.len() >= c * 9);
    let mut dyb = vec![0.0f32; oh * ow * BLOCK];
    let mut xb = vec![0.0f32; ph * pw * BLOCK];
    for cb in 0..blocks(c) {
        let mut acc = [V::zero(); 9];
        for n in 0..g.n {
            interleave_plane::<V>(dy, n, c, cb, oh, ow, ow, 0, &mut dyb);
            // The border stays zero: only the interior is ever written.
            interleave_plane::<V>(x, n, c, cb, g.h, g.w, pw, pw + 1, &mut xb);
            let xp = xb.as_ptr();
            for oy in 0..oh {
                for ox in 0..ow {
                    let d = V::load(dyb.as_ptr().add((oy * ow + ox) * BLOCK));
                    for ky in 0..3 {
                        let row = xp.add(((oy * s + ky) * pw + ox * s) * BLOCK);
                        for kx in 0..3 {
                            let a = &mut acc[ky * 3 + kx];
                            *a = a.mul_add(d, V::load(row.add(kx * BLOCK)));
                        }
                    }
                }
            }
        }
        let mut out = [0.0f32; 9 * BLOCK];
        for (t, a) in acc.iter().enumerate() {
            a.store(out.as_mut_ptr().add(t * BLOCK));
        }
        for lane in 0..BLOCK.min(c - cb * BLOCK) {
            for t in 0..9 {
                dw[(cb * BLOCK + lane) * 9 + t] = out[t * BLOCK + lane];
            }
        }
    }
}

/// PReLU backward on NCHW, as `scalar::prelu_backward`: vectors along each `hw` plane, a
/// scalar tail.
///
/// # Safety
/// The ISA of `V` must be present.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(in crate::cpu) unsafe fn prelu_backward<V: F32x16>(
    n: usize,
    c: usize,
    hw: usize,
    x: &[f32],
    alpha: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    dalpha: &mut [f32],
) {
    let len = n * c * hw;
    assert!(x.len() >= len && dy.len() >= len && dx.len() >= len && alpha.len() >= c);
    assert!(dalpha.len() >= c);
    dalpha[..c].fill(0.0);
    let full = hw / LANES * LANES;
    let zero = V::zero();
    for b in 0..n {
        for ch in 0..c {
            let base = (b * c + ch) * hw;
            let (a, av) = (alpha[ch], V::splat(alpha[ch]));
            let mut dav = V::zero();
            let mut p = 0;
            while p < full {
                let xv = V::load(x.as_ptr().add(base + p));
                let d = V::load(dy.as_ptr().add(base + p));
                xv.select_neg(d.mul(av), d)
                    .store(dx.as_mut_ptr().add(base + p));
                dav = dav.add(xv.select_neg(d.mul(xv), zero));
                p += LANES;
            }
            let mut da = dav.sum();
            for i in base + full..base + hw {
                let (xv, d) = (x[i], dy[i]);
                if xv < 0.0 {
                    dx[i] = d * a;
                    da += d * xv;
                } else {
                    dx[i] = d;
                }
            }
            dalpha[ch] += da;
        }
    }
}

/// PReLU forward in place on NCHW, as `scalar::prelu`: the same comparison and product per
/// element (so the result is bit-identical), vectors along each plane and a scalar tail.
///
/// # Safety
/// The ISA of `V` must be present.
#[inline(always)]
pub(in crate::cpu) unsafe fn prelu_forward<V: F32x16>(
    n: usize,
    c: usize,
    hw: usize,
    x: &mut [f32],
    alpha: &[f32],
) {
    assert!(x.len() >= n * c * hw && alpha.len() >= c);
    let full = hw / LANES * LANES;
    let xp = x.as_mut_ptr();
    for b in 0..n {
        for (ch, &a) in alpha[..c].iter().enumerate() {
            let base = (b * c + ch) * hw;
            let av = V::splat(a);
            let mut p = 0;
            while p < full {
                V::load(xp.add(base + p)).prelu(av).store(xp.add(base + p));
                p += LANES;
            }
            for v in &mut x[base + full..base + hw] {
                if *v < 0.0 {
                    *v *= a;
                }
            }
        }
    }
}

/// Pointwise conv forward on NCHW without bias, as `scalar::conv2d` on a pointwise geometry:
/// `y_n = w · x_n` is the input-gradient GEMM `dx_n = w'ᵀ · dy_n` with the roles swapped
/// (`dy` ← `x`, `dx` ← `y`, `w'` = `wᵀ`, `c_in` ↔ `c_out`), so the trainer's forward runs
/// on its own NCHW tensors with no conversion to the blocked layout and back.
///
/// # Safety
/// The ISA of `V` must be present; `g` must be a pointwise geometry (1×1, stride 1, no
/// padding, one group).
#[inline(always)]
pub(in crate::cpu) unsafe fn pointwise_forward<V: F32x16, const R: usize>(
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    y: &mut [f32],
) {
    let (c_in, c_out) = (g.c_in, g.c_out);
    assert!(w.len() >= c_out * c_in);
    let mut wt = vec![0.0f32; c_in * c_out];
    for o in 0..c_out {
        for i in 0..c_in {
            wt[i * c_out + o] = w[o * c_in + i];
        }
    }
    let swapped = ConvGeom::square(g.n, c_out, g.h, g.w, c_in, 1, 1, 0, 1);
    pointwise_backward_data::<V, R>(&swapped, x, &wt, y);
}

/// Dense conv (`groups == 1`) weight gradient, as `scalar::conv2d_backward_weight`, lowered
/// to the pointwise one: each image's receptive fields are unrolled (im2col) into a
/// `[c_in·kh·kw, oh·ow]` matrix `cols_n` (zeros where the window overhangs the padding), so
/// `dw [c_out, c_in·kh·kw] = Σ_n dy_n · cols_nᵀ`, which is the pointwise weight gradient on a
/// `c_in·kh·kw`-channel, `oh×ow` input. `cols_nᵀ` is written straight into the pixel-major
/// buffer of `weight_grad_by_image`, one image at a time. This is the stem's weight gradient
/// in training.
///
/// # Safety
/// The ISA of `V` must be present; `g.groups` must be 1.
#[inline(always)]
pub(in crate::cpu) unsafe fn conv2d_backward_weight<V: F32x16, const R: usize>(
    g: &ConvGeom,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
) {
    assert_eq!(g.groups, 1, "the im2col weight gradient is for dense convs");
    let (oh, ow) = (g.out_h(), g.out_w());
    let taps = g.c_in * g.kh * g.kw;
    assert!(x.len() >= g.input_len() && dy.len() >= g.n * g.c_out * oh * ow);
    assert!(dw.len() >= g.weight_len());
    let hw = oh * ow;
    weight_grad_by_image::<V, R>(g.n, hw, taps, g.c_out, dy, dw, |n, xt, cip| {
        for ic in 0..g.c_in {
            let plane = &x[(n * g.c_in + ic) * g.h * g.w..(n * g.c_in + ic + 1) * g.h * g.w];
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    let t = (ic * g.kh + ky) * g.kw + kx;
                    for oy in 0..oh {
                        let iy = (oy * g.stride_h + ky) as isize - g.pad_t as isize;
                        for ox in 0..ow {
                            let ix = (ox * g.stride_w + kx) as isize - g.pad_l as isize;
                            let inside =
                                iy >= 0 && iy < g.h as isize && ix >= 0 && ix < g.w as isize;
                            // Every tap is written, zeros where the window overhangs the padding.
                            xt[(oy * ow + ox) * cip + t] = if inside {
                                plane[iy as usize * g.w + ix as usize]
                            } else {
                                0.0
                            };
                        }
                    }
                }
            }
        }
    });
}

/// Per-channel sums `out[ch] = Σ_b Σ_p f(ch, i)` over an NC(HW) tensor, walked image by image
/// so memory is read in order: a channel's planes lie `c·hw` floats apart, a power-of-two
/// stride that thrashes the cache sets when walked channel by channel. `vf(ch, i)` gives the
/// 16 terms at flat index `i`, `sf(ch, i)` one term of a plane's scalar tail. Each channel
/// keeps a vector accumulator (its lanes summed at the end) and a scalar one for the tails.
#[inline(always)]
unsafe fn channel_sums<V: F32x16>(
    n: usize,
    c: usize,
    hw: usize,
    vf: impl Fn(usize, usize) -> V,
    sf: impl Fn(usize, usize) -> f32,
    out: &mut [f32],
) {
    let full = hw / LANES * LANES;
    let mut acc = vec![V::zero(); c];
    let mut tail = vec![0.0f32; c];
    for b in 0..n {
        for ch in 0..c {
            let base = (b * c + ch) * hw;
            let mut a = acc[ch];
            let mut p = 0;
            while p < full {
                a = a.add(vf(ch, base + p));
                p += LANES;
            }
            acc[ch] = a;
            for i in base + full..base + hw {
                tail[ch] += sf(ch, i);
            }
        }
    }
    for ch in 0..c {
        out[ch] = acc[ch].sum() + tail[ch];
    }
}

/// Training-mode batch-norm forward on NC(HW), as `scalar::batch_norm_train_forward`
/// (two-pass mean and biased variance, then `y = (x − mean)·γ/√(var + ε) + β`).
///
/// # Safety
/// The ISA of `V` must be present.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(in crate::cpu) unsafe fn batch_norm_train_forward<V: F32x16>(
    n: usize,
    c: usize,
    hw: usize,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    y: &mut [f32],
    mean: &mut [f32],
    var: &mut [f32],
) {
    batch_norm_prelu_train_forward::<V>(n, c, hw, x, gamma, beta, eps, y, None, mean, var)
}

/// Training-mode batch-norm forward with, when `prelu` is `(alpha, z)`, the PReLU of its
/// output written to `z` in the same pass (as `scalar::batch_norm_prelu_train_forward`: `y`
/// as the unfused kernel, `z` exactly `prelu(y)`). Each channel's three passes run while its
/// values are in cache, so the PReLU costs one more store instead of a pass over the tensor.
///
/// # Safety
/// The ISA of `V` must be present.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(in crate::cpu) unsafe fn batch_norm_prelu_train_forward<V: F32x16>(
    n: usize,
    c: usize,
    hw: usize,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    y: &mut [f32],
    mut prelu: Option<(&[f32], &mut [f32])>,
    mean: &mut [f32],
    var: &mut [f32],
) {
    let len = n * c * hw;
    assert!(x.len() >= len && y.len() >= len && gamma.len() >= c && beta.len() >= c);
    assert!(mean.len() >= c && var.len() >= c);
    if let Some((alpha, z)) = &prelu {
        assert!(alpha.len() >= c && z.len() >= len);
    }
    let count = (n * hw) as f32;
    let full = hw / LANES * LANES;
    let xp = x.as_ptr();
    channel_sums::<V>(n, c, hw, |_, i| V::load(xp.add(i)), |_, i| x[i], mean);
    for m in mean[..c].iter_mut() {
        *m /= count;
    }
    let mean = &mean[..c];
    channel_sums::<V>(
        n,
        c,
        hw,
        |ch, i| {
            let d = V::load(xp.add(i)).sub(V::splat(mean[ch]));
            d.mul(d)
        },
        |ch, i| (x[i] - mean[ch]) * (x[i] - mean[ch]),
        var,
    );
    let mut scale = vec![0.0f32; c];
    for ch in 0..c {
        var[ch] /= count;
        scale[ch] = gamma[ch] / (var[ch] + eps).sqrt();
    }
    for b in 0..n {
        for ch in 0..c {
            let (m, sc) = (mean[ch], scale[ch]);
            let (mv, sv, bv) = (V::splat(m), V::splat(sc), V::splat(beta[ch]));
            let base = (b * c + ch) * hw;
            let mut p = 0;
            while p < full {
                let v = V::load(xp.add(base + p)).sub(mv);
                bv.mul_add(v, sv).store(y.as_mut_ptr().add(base + p));
                p += LANES;
            }
            for i in base + full..base + hw {
                y[i] = (x[i] - m) * sc + beta[ch];
            }
            // The plane just written is still in L1: the PReLU reads it from there.
            if let Some((alpha, z)) = &mut prelu {
                let (a, av) = (alpha[ch], V::splat(alpha[ch]));
                let (yp, zp) = (y.as_ptr(), z.as_mut_ptr());
                let mut p = 0;
                while p < full {
                    V::load(yp.add(base + p)).prelu(av).store(zp.add(base + p));
                    p += LANES;
                }
                for i in base + full..base + hw {
                    z[i] = if y[i] < 0.0 { y[i] * a } else { y[i] };
                }
            }
        }
    }
}

/// Training-mode batch-norm backward on NC(HW), as `scalar::batch_norm_train_backward`.
///
/// # Safety
/// The ISA of `V` must be present.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(in crate::cpu) unsafe fn batch_norm_train_backward<V: F32x16>(
    n: usize,
    c: usize,
    hw: usize,
    x: &[f32],
    dy: &[f32],
    gamma: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f32,
    dx: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) {
    let len = n * c * hw;
    assert!(x.len() >= len && dy.len() >= len && dx.len() >= len);
    assert!(gamma.len() >= c && mean.len() >= c && var.len() >= c);
    assert!(dgamma.len() >= c && dbeta.len() >= c);
    let count = (n * hw) as f32;
    let full = hw / LANES * LANES;
    let (xp, dp) = (x.as_ptr(), dy.as_ptr());
    let invstd: Vec<f32> = (0..c).map(|ch| 1.0 / (var[ch] + eps).sqrt()).collect();
    channel_sums::<V>(n, c, hw, |_, i| V::load(dp.add(i)), |_, i| dy[i], dbeta);
    channel_sums::<V>(
        n,
        c,
        hw,
        |ch, i| {
            let xhat = V::load(xp.add(i))
                .sub(V::splat(mean[ch]))
                .mul(V::splat(invstd[ch]));
            V::load(dp.add(i)).mul(xhat)
        },
        |ch, i| dy[i] * ((x[i] - mean[ch]) * invstd[ch]),
        dgamma,
    );
    for b in 0..n {
        for ch in 0..c {
            let (m, is, sd, sdx) = (mean[ch], invstd[ch], dbeta[ch], dgamma[ch]);
            let k = gamma[ch] * is / count;
            let (mv, iv) = (V::splat(m), V::splat(is));
            let (kv, cv, sdv, nsdx) = (V::splat(k), V::splat(count), V::splat(sd), V::splat(-sdx));
            let base = (b * c + ch) * hw;
            let mut p = 0;
            while p < full {
                let xhat = V::load(xp.add(base + p)).sub(mv).mul(iv);
                let t = V::zero().mul_add(V::load(dp.add(base + p)), cv).sub(sdv);
                t.mul_add(xhat, nsdx)
                    .mul(kv)
                    .store(dx.as_mut_ptr().add(base + p));
                p += LANES;
            }
            for i in base + full..base + hw {
                let xhat = (x[i] - m) * is;
                dx[i] = k * (count * dy[i] - sd - xhat * sdx);
            }
        }
    }
}

/// Defines, inside an ISA file, `mod backward` with the safe table entries of the backward
/// kernels above: each a `#[target_feature]` shim around the generic loop nest. Depthwise
/// geometries other than `depthwise_backward_fast` go to the scalar reference.
macro_rules! backward_entries {
    ($feature:literal, $V:ident, pointwise_rows = $R:ident) => {
        /// The trainer's backward kernels for this ISA (see `simd::backward`).
        pub(super) mod backward {
            use super::$V as V;
            use $crate::cpu::simd::backward as simd;
            use $crate::cpu::{scalar, BatchNormBackward, ConvDataGrad, ConvGeom, ConvWeightGrad};

            const R: usize = super::$R;

            #[target_feature(enable = $feature)]
            unsafe fn pointwise_data_impl(g: &ConvGeom, dy: &[f32], w: &[f32], dx: &mut [f32]) {
                simd::pointwise_backward_data::<V, R>(g, dy, w, dx)
            }
            #[target_feature(enable = $feature)]
            unsafe fn pointwise_weight_impl(g: &ConvGeom, x: &[f32], dy: &[f32], dw: &mut [f32]) {
                simd::pointwise_backward_weight::<V, R>(g, x, dy, dw)
            }
            #[target_feature(enable = $feature)]
            unsafe fn depthwise_data_impl(g: &ConvGeom, dy: &[f32], w: &[f32], dx: &mut [f32]) {
                simd::depthwise_backward_data::<V>(g, dy, w, dx)
            }
            #[target_feature(enable = $feature)]
            unsafe fn depthwise_weight_impl(g: &ConvGeom, x: &[f32], dy: &[f32], dw: &mut [f32]) {
                simd::depthwise_backward_weight::<V>(g, x, dy, dw)
            }
            #[target_feature(enable = $feature)]
            #[allow(clippy::too_many_arguments)]
            unsafe fn prelu_impl(
                n: usize,
                c: usize,
                hw: usize,
                x: &[f32],
                alpha: &[f32],
                dy: &[f32],
                dx: &mut [f32],
                dalpha: &mut [f32],
            ) {
                simd::prelu_backward::<V>(n, c, hw, x, alpha, dy, dx, dalpha)
            }
            #[target_feature(enable = $feature)]
            unsafe fn prelu_forward_impl(n: usize, c: usize, hw: usize, x: &mut [f32], a: &[f32]) {
                simd::prelu_forward::<V>(n, c, hw, x, a)
            }
            #[target_feature(enable = $feature)]
            unsafe fn depthwise_forward_impl(
                g: &ConvGeom,
                x: &[f32],
                w: &[f32],
                b: Option<&[f32]>,
                y: &mut [f32],
            ) {
                simd::depthwise_forward::<V>(g, x, w, b, y)
            }
            #[target_feature(enable = $feature)]
            unsafe fn pointwise_forward_impl(g: &ConvGeom, x: &[f32], w: &[f32], y: &mut [f32]) {
                simd::pointwise_forward::<V, R>(g, x, w, y)
            }
            #[target_feature(enable = $feature)]
            unsafe fn conv_weight_impl(g: &ConvGeom, x: &[f32], dy: &[f32], dw: &mut [f32]) {
                simd::conv2d_backward_weight::<V, R>(g, x, dy, dw)
            }
            #[target_feature(enable = $feature)]
            #[allow(clippy::too_many_arguments)]
            unsafe fn bn_forward_impl(
                n: usize,
                c: usize,
                hw: usize,
                x: &[f32],
                gamma: &[f32],
                beta: &[f32],
                eps: f32,
                y: &mut [f32],
                mean: &mut [f32],
                var: &mut [f32],
            ) {
                simd::batch_norm_train_forward::<V>(n, c, hw, x, gamma, beta, eps, y, mean, var)
            }
            #[target_feature(enable = $feature)]
            #[allow(clippy::too_many_arguments)]
            unsafe fn bn_prelu_forward_impl(
                n: usize,
                c: usize,
                hw: usize,
                x: &[f32],
                gamma: &[f32],
                beta: &[f32],
                eps: f32,
                y: &mut [f32],
                prelu: (&[f32], &mut [f32]),
                mean: &mut [f32],
                var: &mut [f32],
            ) {
                simd::batch_norm_prelu_train_forward::<V>(
                    n,
                    c,
                    hw,
                    x,
                    gamma,
                    beta,
                    eps,
                    y,
                    Some(prelu),
                    mean,
                    var,
                )
            }
            #[target_feature(enable = $feature)]
            #[allow(clippy::too_many_arguments)]
            unsafe fn bn_backward_impl(
                n: usize,
                c: usize,
                hw: usize,
                x: &[f32],
                dy: &[f32],
                gamma: &[f32],
                mean: &[f32],
                var: &[f32],
                eps: f32,
                dx: &mut [f32],
                dgamma: &mut [f32],
                dbeta: &mut [f32],
            ) {
                simd::batch_norm_train_backward::<V>(
                    n, c, hw, x, dy, gamma, mean, var, eps, dx, dgamma, dbeta,
                )
            }

            /// Pointwise conv input gradient.
            pub(in crate::cpu) fn pointwise_backward_data(g: &ConvGeom, a: ConvDataGrad<'_>) {
                let ConvDataGrad { dy, w, dx } = a;
                // SAFETY: only reachable through this ISA's table, built after the CPU was
                // checked; the loop nest asserts every slice length before using pointers.
                unsafe { pointwise_data_impl(g, dy, w, dx) }
            }
            /// Pointwise conv weight gradient.
            pub(in crate::cpu) fn pointwise_backward_weight(g: &ConvGeom, a: ConvWeightGrad<'_>) {
                let ConvWeightGrad { x, dy, dw } = a;
                // SAFETY: as in `pointwise_backward_data`.
                unsafe { pointwise_weight_impl(g, x, dy, dw) }
            }
            /// Depthwise conv input gradient (3×3 pad 1 stride 1/2 fast, else the reference).
            pub(in crate::cpu) fn depthwise_backward_data(g: &ConvGeom, a: ConvDataGrad<'_>) {
                if !simd::depthwise_backward_fast(g) {
                    return scalar::depthwise_backward_data::<f32>(g, a);
                }
                let ConvDataGrad { dy, w, dx } = a;
                // SAFETY: as in `pointwise_backward_data`; the geometry was checked above.
                unsafe { depthwise_data_impl(g, dy, w, dx) }
            }
            /// Depthwise conv weight gradient (3×3 pad 1 stride 1/2 fast, else the reference).
            pub(in crate::cpu) fn depthwise_backward_weight(g: &ConvGeom, a: ConvWeightGrad<'_>) {
                if !simd::depthwise_backward_fast(g) {
                    return scalar::depthwise_backward_weight::<f32>(g, a);
                }
                let ConvWeightGrad { x, dy, dw } = a;
                // SAFETY: as in `pointwise_backward_data`; the geometry was checked above.
                unsafe { depthwise_weight_impl(g, x, dy, dw) }
            }
            /// PReLU forward in place (the trainer's; inference fuses it into the convs).
            pub(in crate::cpu) fn prelu(n: usize, c: usize, hw: usize, x: &mut [f32], a: &[f32]) {
                // SAFETY: as in `pointwise_backward_data`.
                unsafe { prelu_forward_impl(n, c, hw, x, a) }
            }
            /// Pointwise conv forward on NCHW without bias (the trainer's); `None` when `g` is
            /// not pointwise, for the caller's other routes.
            pub(in crate::cpu) fn pointwise_forward(
                g: &ConvGeom,
                x: &[f32],
                w: &[f32],
                y: &mut [f32],
            ) -> Option<()> {
                if $crate::cpu::packed::conv_route(g) != $crate::cpu::packed::ConvRoute::Pointwise {
                    return None;
                }
                // SAFETY: as in `pointwise_backward_data`; the geometry was checked above.
                unsafe { pointwise_forward_impl(g, x, w, y) };
                Some(())
            }
            /// Depthwise 3×3 conv forward on NCHW (the trainer's); `None` when `g` is not
            /// `depthwise_backward_fast`, for the caller's other routes.
            pub(in crate::cpu) fn depthwise_forward(
                g: &ConvGeom,
                x: &[f32],
                w: &[f32],
                b: Option<&[f32]>,
                y: &mut [f32],
            ) -> Option<()> {
                if !simd::depthwise_backward_fast(g) {
                    return None;
                }
                // SAFETY: as in `pointwise_backward_data`; the geometry was checked above.
                unsafe { depthwise_forward_impl(g, x, w, b, y) };
                Some(())
            }
            /// Dense conv weight gradient (im2col onto the pointwise kernel); grouped convs go
            /// to the reference.
            pub(in crate::cpu) fn conv2d_backward_weight(g: &ConvGeom, a: ConvWeightGrad<'_>) {
                if g.groups != 1 {
                    return scalar::conv2d_backward_weight::<f32>(g, a);
                }
                let ConvWeightGrad { x, dy, dw } = a;
                // SAFETY: as in `pointwise_backward_data`; groups was checked above.
                unsafe { conv_weight_impl(g, x, dy, dw) }
            }
            /// PReLU input and slope gradients.
            #[allow(clippy::too_many_arguments)]
            pub(in crate::cpu) fn prelu_backward(
                n: usize,
                c: usize,
                hw: usize,
                x: &[f32],
                alpha: &[f32],
                dy: &[f32],
                dx: &mut [f32],
                dalpha: &mut [f32],
            ) {
                // SAFETY: as in `pointwise_backward_data`.
                unsafe { prelu_impl(n, c, hw, x, alpha, dy, dx, dalpha) }
            }
            /// Training-mode batch-norm forward.
            #[allow(clippy::too_many_arguments)]
            pub(in crate::cpu) fn batch_norm_train_forward(
                n: usize,
                c: usize,
                hw: usize,
                x: &[f32],
                gamma: &[f32],
                beta: &[f32],
                eps: f32,
                y: &mut [f32],
                mean: &mut [f32],
                var: &mut [f32],
            ) {
                // SAFETY: as in `pointwise_backward_data`.
                unsafe { bn_forward_impl(n, c, hw, x, gamma, beta, eps, y, mean, var) }
            }
            /// Training-mode batch-norm with the PReLU after it, in one pass.
            pub(in crate::cpu) fn batch_norm_prelu_train_forward(
                a: $crate::cpu::BatchNormPreluForward<'_>,
            ) {
                let $crate::cpu::BatchNormPreluForward {
                    n,
                    c,
                    hw,
                    x,
                    gamma,
                    beta,
                    alpha,
                    eps,
                    y,
                    z,
                    mean,
                    var,
                } = a;
                // SAFETY: as in `pointwise_backward_data`.
                unsafe {
                    bn_prelu_forward_impl(n, c, hw, x, gamma, beta, eps, y, (alpha, z), mean, var)
                }
            }
            /// Training-mode batch-norm backward.
            pub(in crate::cpu) fn batch_norm_train_backward(a: BatchNormBackward<'_>) {
                let BatchNormBackward {
                    n,
                    c,
                    hw,
                    x,
                    dy,
                    gamma,
                    mean,
                    var,
                    eps,
                    dx,
                    dgamma,
                    dbeta,
                } = a;
                // SAFETY: as in `pointwise_backward_data`.
                unsafe {
                    bn_backward_impl(n, c, hw, x, dy, gamma, mean, var, eps, dx, dgamma, dbeta)
                }
            }
        }
    };
}
pub(in crate::cpu) use backward_entries;
