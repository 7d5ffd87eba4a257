//! The blocked activation layout and packed weight formats the fast kernels share, the packers
//! (run once, at load), and the general `conv2d` that routes any NCHW conv onto them. No SIMD here.
//!
//! Layout: channels are padded to a multiple of [`BLOCK`] = 16 and stored as
//! `[C/16][N][H][W][16]` ("CNHWc"): one block of 16 channels of every pixel of every image is
//! contiguous. 16 lanes are one AVX-512 register, two AVX2 registers or four NEON registers, so
//! one layout (and one set of packed weights) serves every ISA. Keeping the batch inside each
//! channel block turns a pointwise conv into a single GEMM over `N·H·W` pixels, which matters
//! for the student's 4×4 maps. Padded lanes hold zeros and stay zero (zero weights, zero bias).

use super::{scalar, ConvGeom, Kernels};

/// Channels per block (lanes of one packed vector).
pub const BLOCK: usize = 16;

/// Number of 16-channel blocks holding `c` channels.
pub fn blocks(c: usize) -> usize {
    c.div_ceil(BLOCK)
}

/// `c` rounded up to whole blocks.
pub fn padded(c: usize) -> usize {
    blocks(c) * BLOCK
}

/// What follows the multiply–accumulate, fused into the kernel's store:
/// `y = acc + bias`, then PReLU (`y < 0 ? y·alpha : y`), then `y += residual`.
/// `bias` and `prelu` hold [`padded`] channel counts; `residual` (pointwise only) has the
/// output's blocked shape.
#[derive(Clone, Copy, Debug)]
pub struct Epilogue<'a> {
    pub bias: &'a [f32],
    pub prelu: Option<&'a [f32]>,
    pub residual: Option<&'a [f32]>,
}

/// Shape of a pointwise (1×1, stride 1) conv over `pixels = N·H·W` blocked pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PointwiseShape {
    pub pixels: usize,
    pub c_in: usize,
    pub c_out: usize,
}

/// `pointwise(shape, x [cb_in][pixels][16], w [cb_out][padded(c_in)][16], epilogue, y [cb_out][pixels][16])`.
pub type PointwisePackedFn = fn(&PointwiseShape, &[f32], &[f32], &Epilogue, &mut [f32]);
/// `depthwise(geom, x blocked, w [cb][kh·kw][16], epilogue, y blocked)`; `geom.groups == c_in == c_out`.
pub type DepthwisePackedFn = fn(&ConvGeom, &[f32], &[f32], &Epilogue, &mut [f32]);
/// `direct_conv(geom, x NCHW, w [cb_out][c_in][kh·kw][16], epilogue, y blocked)`; `geom.groups == 1`.
pub type DirectConvPackedFn = fn(&ConvGeom, &[f32], &[f32], &Epilogue, &mut [f32]);
/// `global_depthwise(n, c, hw, x blocked, w [cb][hw][16], bias padded, y [n][padded(c)])`.
pub type GlobalDepthwisePackedFn = fn(usize, usize, usize, &[f32], &[f32], &[f32], &mut [f32]);
/// `linear(n, k, m, x [n][k], w [blocks(m)][k][16], bias padded, y [n][padded(m)])`.
pub type LinearPackedFn = fn(usize, usize, usize, &[f32], &[f32], &[f32], &mut [f32]);

// ---------------------------------------------------------------------------------------------
// Invariants every kernel (scalar or SIMD) asserts before touching memory, so that a wrong
// shape is a panic in a safe wrapper, never an out-of-bounds read in unsafe code.

pub fn check_pointwise(s: &PointwiseShape, x: &[f32], w: &[f32], ep: &Epilogue, y: &[f32]) {
    let (ci, co) = (padded(s.c_in), padded(s.c_out));
    assert_eq!(x.len(), ci * s.pixels, "pointwise input length");
    assert_eq!(w.len(), co * ci, "pointwise packed weight length");
    assert_eq!(y.len(), co * s.pixels, "pointwise output length");
    check_epilogue(ep, co, y.len());
}

pub fn check_depthwise(g: &ConvGeom, x: &[f32], w: &[f32], ep: &Epilogue, y: &[f32]) {
    assert!(
        g.groups == g.c_in && g.c_in == g.c_out,
        "depthwise geometry"
    );
    assert!(g.validate().is_ok(), "depthwise geometry is not computable");
    let c = padded(g.c_in);
    assert_eq!(x.len(), c * g.n * g.h * g.w, "depthwise input length");
    assert_eq!(w.len(), c * g.kh * g.kw, "depthwise packed weight length");
    assert_eq!(
        y.len(),
        c * g.n * g.out_h() * g.out_w(),
        "depthwise output length"
    );
    assert!(ep.residual.is_none(), "depthwise has no residual epilogue");
    check_epilogue(ep, c, y.len());
}

pub fn check_direct(g: &ConvGeom, x: &[f32], w: &[f32], ep: &Epilogue, y: &[f32]) {
    assert_eq!(g.groups, 1, "direct conv is dense");
    assert!(
        g.validate().is_ok(),
        "direct conv geometry is not computable"
    );
    let co = padded(g.c_out);
    assert_eq!(x.len(), g.input_len(), "direct conv input length");
    assert_eq!(
        w.len(),
        co * g.c_in * g.kh * g.kw,
        "direct conv weight length"
    );
    assert_eq!(
        y.len(),
        co * g.n * g.out_h() * g.out_w(),
        "direct conv output length"
    );
    assert!(
        ep.residual.is_none(),
        "direct conv has no residual epilogue"
    );
    check_epilogue(ep, co, y.len());
}

pub fn check_global_depthwise(
    n: usize,
    c: usize,
    hw: usize,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    y: &[f32],
) {
    let cp = padded(c);
    assert_eq!(x.len(), cp * n * hw, "global depthwise input length");
    assert_eq!(w.len(), cp * hw, "global depthwise weight length");
    assert_eq!(b.len(), cp, "global depthwise bias length");
    assert_eq!(y.len(), n * cp, "global depthwise output length");
}

pub fn check_linear(n: usize, k: usize, m: usize, x: &[f32], w: &[f32], b: &[f32], y: &[f32]) {
    let mp = padded(m);
    assert_eq!(x.len(), n * k, "linear input length");
    assert_eq!(w.len(), mp * k, "linear packed weight length");
    assert_eq!(b.len(), mp, "linear bias length");
    assert_eq!(y.len(), n * mp, "linear output length");
}

fn check_epilogue(ep: &Epilogue, c_padded: usize, y_len: usize) {
    assert_eq!(ep.bias.len(), c_padded, "epilogue bias length");
    if let Some(a) = ep.prelu {
        assert_eq!(a.len(), c_padded, "epilogue prelu length");
    }
    if let Some(r) = ep.residual {
        assert_eq!(r.len(), y_len, "epilogue residual length");
    }
}

// ---------------------------------------------------------------------------------------------
// Packers: plain PyTorch layouts in, blocked layouts out. Missing channels are zero.

/// A per-channel vector (bias, PReLU slopes) padded with zeros to whole blocks.
pub fn pad_channels(v: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0; padded(v.len())];
    out[..v.len()].copy_from_slice(v);
    out
}

/// Pointwise weights `[c_out][c_in]` → `[cb_out][padded(c_in)][16]`.
pub fn pack_pointwise(w: &[f32], c_in: usize, c_out: usize) -> Vec<f32> {
    assert_eq!(w.len(), c_in * c_out);
    let ci = padded(c_in);
    let mut p = vec![0.0; padded(c_out) * ci];
    for oc in 0..c_out {
        let (ob, l) = (oc / BLOCK, oc % BLOCK);
        for ic in 0..c_in {
            p[(ob * ci + ic) * BLOCK + l] = w[oc * c_in + ic];
        }
    }
    p
}

/// Depthwise weights `[c][1][kh][kw]` → `[cb][kh·kw][16]`.
pub fn pack_depthwise(w: &[f32], c: usize, taps: usize) -> Vec<f32> {
    assert_eq!(w.len(), c * taps);
    let mut p = vec![0.0; padded(c) * taps];
    for ch in 0..c {
        let (b, l) = (ch / BLOCK, ch % BLOCK);
        for t in 0..taps {
            p[(b * taps + t) * BLOCK + l] = w[ch * taps + t];
        }
    }
    p
}

/// Dense conv weights `[c_out][c_in][kh][kw]` → `[cb_out][c_in][kh·kw][16]`.
pub fn pack_direct(w: &[f32], c_in: usize, c_out: usize, taps: usize) -> Vec<f32> {
    assert_eq!(w.len(), c_out * c_in * taps);
    let mut p = vec![0.0; padded(c_out) * c_in * taps];
    for oc in 0..c_out {
        let (ob, l) = (oc / BLOCK, oc % BLOCK);
        for i in 0..c_in * taps {
            p[(ob * c_in * taps + i) * BLOCK + l] = w[oc * c_in * taps + i];
        }
    }
    p
}

/// Global depthwise weights `[c][1][h][w]` → `[cb][hw][16]` (the same shape as depthwise).
pub fn pack_global_depthwise(w: &[f32], c: usize, hw: usize) -> Vec<f32> {
    pack_depthwise(w, c, hw)
}

/// Linear weights `[m][k]` → `[blocks(m)][k][16]` (a pointwise pack with k unpadded).
pub fn pack_linear(w: &[f32], k: usize, m: usize) -> Vec<f32> {
    assert_eq!(w.len(), k * m);
    let mut p = vec![0.0; padded(m) * k];
    for o in 0..m {
        let (ob, l) = (o / BLOCK, o % BLOCK);
        for i in 0..k {
            p[(ob * k + i) * BLOCK + l] = w[o * k + i];
        }
    }
    p
}

/// NCHW `[n][c][hw]` → blocked `[cb][n][hw][16]`.
pub fn block_nchw(x: &[f32], n: usize, c: usize, hw: usize) -> Vec<f32> {
    assert_eq!(x.len(), n * c * hw);
    let mut out = vec![0.0; padded(c) * n * hw];
    for b in 0..n {
        for ch in 0..c {
            let (cb, l) = (ch / BLOCK, ch % BLOCK);
            let src = &x[(b * c + ch) * hw..(b * c + ch + 1) * hw];
            let base = (cb * n + b) * hw;
            for (p, v) in src.iter().enumerate() {
                out[(base + p) * BLOCK + l] = *v;
            }
        }
    }
    out
}

/// Blocked `[cb][n][hw][16]` → NCHW `[n][c][hw]` (padded channels dropped).
pub fn unblock_nchw(xb: &[f32], n: usize, c: usize, hw: usize, y: &mut [f32]) {
    assert_eq!(xb.len(), padded(c) * n * hw);
    assert_eq!(y.len(), n * c * hw);
    for b in 0..n {
        for ch in 0..c {
            let (cb, l) = (ch / BLOCK, ch % BLOCK);
            let base = (cb * n + b) * hw;
            for (p, v) in y[(b * c + ch) * hw..(b * c + ch + 1) * hw]
                .iter_mut()
                .enumerate()
            {
                *v = xb[(base + p) * BLOCK + l];
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// Which fast path a general NCHW conv takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvRoute {
    /// 1×1, stride 1, no padding, dense.
    Pointwise,
    /// One filter per channel (`groups == c_in == c_out`), any kernel, stride and padding.
    Depthwise,
    /// Dense (`groups == 1`), any kernel, stride and padding.
    Direct,
    /// Anything else (grouped convs, channel multipliers): the scalar reference.
    Reference,
}

/// Chooses the fast path for a conv geometry.
pub fn conv_route(g: &ConvGeom) -> ConvRoute {
    let no_pad = g.pad_t == 0 && g.pad_l == 0 && g.pad_b == 0 && g.pad_r == 0;
    if g.groups == 1 && g.kh == 1 && g.kw == 1 && g.stride_h == 1 && g.stride_w == 1 && no_pad {
        ConvRoute::Pointwise
    } else if g.groups == g.c_in && g.c_in == g.c_out {
        ConvRoute::Depthwise
    } else if g.groups == 1 {
        ConvRoute::Direct
    } else {
        ConvRoute::Reference
    }
}

/// The general NCHW `conv2d` of every fast table: packs the weights and input for this call,
/// runs the table's pointwise, depthwise or direct kernel, and unpacks the output. Callers
/// that run the same weights many times (the student) pack once instead and call the packed
/// kernels directly.
pub fn conv2d_via_packed(
    k: &Kernels,
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let zeros;
    let bias = match bias {
        Some(b) => b,
        None => {
            zeros = vec![0.0; g.c_out];
            &zeros
        }
    };
    let bias_p = pad_channels(bias);
    let ep = Epilogue {
        bias: &bias_p,
        prelu: None,
        residual: None,
    };
    let (oh, ow) = (g.out_h(), g.out_w());
    match conv_route(g) {
        ConvRoute::Pointwise => {
            let hw = g.h * g.w;
            let xb = block_nchw(x, g.n, g.c_in, hw);
            let wp = pack_pointwise(w, g.c_in, g.c_out);
            let s = PointwiseShape {
                pixels: g.n * hw,
                c_in: g.c_in,
                c_out: g.c_out,
            };
            let mut yb = vec![0.0; padded(g.c_out) * g.n * hw];
            (k.pointwise_packed)(&s, &xb, &wp, &ep, &mut yb);
            unblock_nchw(&yb, g.n, g.c_out, hw, y);
        }
        ConvRoute::Depthwise => {
            let xb = block_nchw(x, g.n, g.c_in, g.h * g.w);
            let wp = pack_depthwise(w, g.c_in, g.kh * g.kw);
            let mut yb = vec![0.0; padded(g.c_out) * g.n * oh * ow];
            (k.depthwise_packed)(g, &xb, &wp, &ep, &mut yb);
            unblock_nchw(&yb, g.n, g.c_out, oh * ow, y);
        }
        ConvRoute::Direct => {
            let wp = pack_direct(w, g.c_in, g.c_out, g.kh * g.kw);
            let mut yb = vec![0.0; padded(g.c_out) * g.n * oh * ow];
            (k.direct_conv_packed)(g, x, &wp, &ep, &mut yb);
            unblock_nchw(&yb, g.n, g.c_out, oh * ow, y);
        }
        ConvRoute::Reference => scalar::conv2d(g, x, w, Some(bias), y),
    }
}

/// The plain-layout `linear` of every fast table, through the packed kernel.
#[allow(clippy::too_many_arguments)]
pub fn linear_via_packed(
    k: &Kernels,
    n: usize,
    kk: usize,
    m: usize,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let bias_p = match bias {
        Some(b) => pad_channels(b),
        None => vec![0.0; padded(m)],
    };
    let wp = pack_linear(w, kk, m);
    let mp = padded(m);
    let mut yp = vec![0.0; n * mp];
    (k.linear_packed)(n, kk, m, x, &wp, &bias_p, &mut yp);
    for b in 0..n {
        y[b * m..(b + 1) * m].copy_from_slice(&yp[b * mp..b * mp + m]);
    }
}

// ---------------------------------------------------------------------------------------------
// Elementwise ops on blocked activations, for imported graphs whose activation, affine or add
// could not be fused into a conv epilogue. Padded lanes stay zero (their slope/scale/shift are
// zero). Plain loops over 16 lanes, which the compiler vectorises.

/// PReLU on a blocked `[cb][pixels][16]` tensor; `slopes` holds [`padded`] channels.
pub fn prelu_blocked(x: &mut [f32], pixels: usize, slopes: &[f32]) {
    assert_eq!(x.len(), slopes.len() * pixels, "blocked prelu length");
    if pixels == 0 {
        return;
    }
    for (xb, s) in x
        .chunks_exact_mut(pixels * BLOCK)
        .zip(slopes.chunks_exact(BLOCK))
    {
        for px in xb.chunks_exact_mut(BLOCK) {
            for (v, a) in px.iter_mut().zip(s) {
                if *v < 0.0 {
                    *v *= a;
                }
            }
        }
    }
}

/// `x = x·scale + shift` per channel on a blocked `[cb][pixels][16]` tensor; `scale` and
/// `shift` hold [`padded`] channels (zeros in the padding, so padded lanes stay zero).
pub fn affine_blocked(x: &mut [f32], pixels: usize, scale: &[f32], shift: &[f32]) {
    assert_eq!(
        scale.len(),
        shift.len(),
        "blocked affine scale/shift lengths"
    );
    assert_eq!(x.len(), scale.len() * pixels, "blocked affine length");
    if pixels == 0 {
        return;
    }
    for ((xb, s), t) in x
        .chunks_exact_mut(pixels * BLOCK)
        .zip(scale.chunks_exact(BLOCK))
        .zip(shift.chunks_exact(BLOCK))
    {
        for px in xb.chunks_exact_mut(BLOCK) {
            for ((v, a), b) in px.iter_mut().zip(s).zip(t) {
                *v = *v * a + b;
            }
        }
    }
}
