//! Scalar reference kernels: the specification every fast kernel is tested against.
//! Plain loops, no unsafe, no layout tricks; shapes are validated by the caller (`ops`).

use super::{BatchNormBackward, BatchNormPreluForward, ConvDataGrad, ConvGeom, ConvWeightGrad};

/// General 2-D convolution, NCHW input, OIHW weights (`[c_out, c_in/groups, kh, kw]`),
/// any kernel size, stride, padding and group count. `y` is `[n, c_out, out_h, out_w]`.
pub fn conv2d(g: &ConvGeom, x: &[f32], w: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
    let (oh, ow) = (g.out_h(), g.out_w());
    let cin_g = g.c_in / g.groups;
    let cout_g = g.c_out / g.groups;
    for n in 0..g.n {
        for oc in 0..g.c_out {
            let grp = oc / cout_g;
            let b = bias.map_or(0.0, |b| b[oc]);
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = 0.0f32;
                    for icg in 0..cin_g {
                        let ic = grp * cin_g + icg;
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
                                let xv =
                                    x[((n * g.c_in + ic) * g.h + iy as usize) * g.w + ix as usize];
                                let wv = w[((oc * cin_g + icg) * g.kh + ky) * g.kw + kx];
                                acc += xv * wv;
                            }
                        }
                    }
                    y[((n * g.c_out + oc) * oh + oy) * ow + ox] = acc + b;
                }
            }
        }
    }
}

/// Inference batch-norm over NC(HW): `y = (x - mean) / sqrt(var + eps) * gamma + beta`.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm(
    n: usize,
    c: usize,
    hw: usize,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f32,
    y: &mut [f32],
) {
    for b in 0..n {
        for ch in 0..c {
            let scale = gamma[ch] / (var[ch] + eps).sqrt();
            let shift = beta[ch] - mean[ch] * scale;
            let base = (b * c + ch) * hw;
            for i in 0..hw {
                y[base + i] = x[base + i] * scale + shift;
            }
        }
    }
}

/// Folds an inference batch-norm that follows a conv (or linear) layer into its weights and bias.
/// `w` holds `c_out` rows of equal length; `bias` has `c_out` entries (zeros if the layer had none).
pub fn fold_batch_norm(
    w: &mut [f32],
    bias: &mut [f32],
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f32,
) {
    let c_out = bias.len();
    let row = w.len() / c_out;
    for oc in 0..c_out {
        let scale = gamma[oc] / (var[oc] + eps).sqrt();
        for v in &mut w[oc * row..(oc + 1) * row] {
            *v *= scale;
        }
        bias[oc] = (bias[oc] - mean[oc]) * scale + beta[oc];
    }
}

/// ReLU in place.
pub fn relu(x: &mut [f32]) {
    for v in x {
        *v = v.max(0.0);
    }
}

/// PReLU in place with one slope per channel over NC(HW).
pub fn prelu(n: usize, c: usize, hw: usize, x: &mut [f32], alpha: &[f32]) {
    for b in 0..n {
        for ch in 0..c {
            let a = alpha[ch];
            for v in &mut x[(b * c + ch) * hw..(b * c + ch + 1) * hw] {
                if *v < 0.0 {
                    *v *= a;
                }
            }
        }
    }
}

/// Elementwise `a += b`.
pub fn add(a: &mut [f32], b: &[f32]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x += *y;
    }
}

/// Global depthwise conv: each channel's whole `hw` map dotted with that channel's own
/// `hw` weights, giving `y[n, c]`.
pub fn global_depthwise_conv(
    n: usize,
    c: usize,
    hw: usize,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    for b in 0..n {
        for ch in 0..c {
            let xs = &x[(b * c + ch) * hw..(b * c + ch + 1) * hw];
            let ws = &w[ch * hw..(ch + 1) * hw];
            let mut acc = 0.0f32;
            for i in 0..hw {
                acc += xs[i] * ws[i];
            }
            y[b * c + ch] = acc + bias.map_or(0.0, |bb| bb[ch]);
        }
    }
}

/// Fully connected layer: `y[n, m] = x[n, k] · w[m, k]ᵀ + bias[m]`.
pub fn linear(
    n: usize,
    k: usize,
    m: usize,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    for b in 0..n {
        for o in 0..m {
            let mut acc = 0.0f32;
            for i in 0..k {
                acc += x[b * k + i] * w[o * k + i];
            }
            y[b * m + o] = acc + bias.map_or(0.0, |bb| bb[o]);
        }
    }
}

/// L2-normalises each of the `n` rows of length `d` in place. A zero row stays zero
/// (divided by `max(norm, 1e-12)`), so the result is never NaN.
pub fn l2_normalize(n: usize, d: usize, x: &mut [f32]) {
    for b in 0..n {
        let row = &mut x[b * d..(b + 1) * d];
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        for v in row {
            *v /= norm;
        }
    }
}

// ---- backward kernels ----
//
// Reverse-mode kernels for training, generic over the float type so the same code runs in f32
// (training, through the `Kernels` table) and in f64 (the finite-difference gradient checks).
// Each writes (never accumulates into) its outputs; the caller sums gradients.

use num_traits::Float;

/// A constant in the kernel's float type.
fn cst<T: Float>(v: f64) -> T {
    T::from(v).unwrap_or_else(T::nan)
}

/// Gradient of a general conv (any groups, stride, padding) with respect to its input:
/// `dx[n, ic, iy, ix] = Σ dy[n, oc, oy, ox] · w[oc, ic_g, ky, kx]` over the taps that read it.
pub fn conv2d_backward_data<T: Float>(g: &ConvGeom, a: ConvDataGrad<'_, T>) {
    let ConvDataGrad { dy, w, dx } = a;
    let (oh, ow) = (g.out_h(), g.out_w());
    let cin_g = g.c_in / g.groups;
    let cout_g = g.c_out / g.groups;
    dx[..g.input_len()].fill(T::zero());
    for n in 0..g.n {
        for oc in 0..g.c_out {
            let grp = oc / cout_g;
            for oy in 0..oh {
                for ox in 0..ow {
                    let d = dy[((n * g.c_out + oc) * oh + oy) * ow + ox];
                    for icg in 0..cin_g {
                        let ic = grp * cin_g + icg;
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
                                let wv = w[((oc * cin_g + icg) * g.kh + ky) * g.kw + kx];
                                let xi =
                                    ((n * g.c_in + ic) * g.h + iy as usize) * g.w + ix as usize;
                                dx[xi] = dx[xi] + d * wv;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Gradient of a general conv with respect to its weights (OIHW), summed over the batch.
pub fn conv2d_backward_weight<T: Float>(g: &ConvGeom, a: ConvWeightGrad<'_, T>) {
    let ConvWeightGrad { x, dy, dw } = a;
    let (oh, ow) = (g.out_h(), g.out_w());
    let cin_g = g.c_in / g.groups;
    let cout_g = g.c_out / g.groups;
    dw[..g.weight_len()].fill(T::zero());
    for n in 0..g.n {
        for oc in 0..g.c_out {
            let grp = oc / cout_g;
            for oy in 0..oh {
                for ox in 0..ow {
                    let d = dy[((n * g.c_out + oc) * oh + oy) * ow + ox];
                    for icg in 0..cin_g {
                        let ic = grp * cin_g + icg;
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
                                let xv =
                                    x[((n * g.c_in + ic) * g.h + iy as usize) * g.w + ix as usize];
                                let wi = ((oc * cin_g + icg) * g.kh + ky) * g.kw + kx;
                                dw[wi] = dw[wi] + d * xv;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Depthwise conv (`groups == c_in == c_out`) input gradient; same result as
/// `conv2d_backward_data`, with the channel loop outermost so each map is touched once.
pub fn depthwise_backward_data<T: Float>(g: &ConvGeom, a: ConvDataGrad<'_, T>) {
    let ConvDataGrad { dy, w, dx } = a;
    let (oh, ow) = (g.out_h(), g.out_w());
    let (kh, kw) = (g.kh, g.kw);
    dx[..g.input_len()].fill(T::zero());
    for n in 0..g.n {
        for c in 0..g.c_in {
            let dys = &dy[(n * g.c_in + c) * oh * ow..(n * g.c_in + c + 1) * oh * ow];
            let ws = &w[c * kh * kw..(c + 1) * kh * kw];
            let dxs = &mut dx[(n * g.c_in + c) * g.h * g.w..(n * g.c_in + c + 1) * g.h * g.w];
            for oy in 0..oh {
                for ky in 0..kh {
                    let iy = (oy * g.stride_h + ky) as isize - g.pad_t as isize;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    let row = iy as usize * g.w;
                    for ox in 0..ow {
                        let d = dys[oy * ow + ox];
                        for kx in 0..kw {
                            let ix = (ox * g.stride_w + kx) as isize - g.pad_l as isize;
                            if ix < 0 || ix >= g.w as isize {
                                continue;
                            }
                            let xi = row + ix as usize;
                            dxs[xi] = dxs[xi] + d * ws[ky * kw + kx];
                        }
                    }
                }
            }
        }
    }
}

/// Depthwise conv weight gradient (`[c, 1, kh, kw]`), summed over the batch.
pub fn depthwise_backward_weight<T: Float>(g: &ConvGeom, a: ConvWeightGrad<'_, T>) {
    let ConvWeightGrad { x, dy, dw } = a;
    let (oh, ow) = (g.out_h(), g.out_w());
    let (kh, kw) = (g.kh, g.kw);
    dw[..g.weight_len()].fill(T::zero());
    for n in 0..g.n {
        for c in 0..g.c_in {
            let dys = &dy[(n * g.c_in + c) * oh * ow..(n * g.c_in + c + 1) * oh * ow];
            let xs = &x[(n * g.c_in + c) * g.h * g.w..(n * g.c_in + c + 1) * g.h * g.w];
            for ky in 0..kh {
                for kx in 0..kw {
                    let mut acc = T::zero();
                    for oy in 0..oh {
                        let iy = (oy * g.stride_h + ky) as isize - g.pad_t as isize;
                        if iy < 0 || iy >= g.h as isize {
                            continue;
                        }
                        for ox in 0..ow {
                            let ix = (ox * g.stride_w + kx) as isize - g.pad_l as isize;
                            if ix < 0 || ix >= g.w as isize {
                                continue;
                            }
                            acc = acc + dys[oy * ow + ox] * xs[iy as usize * g.w + ix as usize];
                        }
                    }
                    let wi = c * kh * kw + ky * kw + kx;
                    dw[wi] = dw[wi] + acc;
                }
            }
        }
    }
}

/// Pointwise conv (1×1, stride 1, no padding, one group) input gradient:
/// `dx[n, ci, p] = Σ_co w[co, ci] · dy[n, co, p]`.
pub fn pointwise_backward_data<T: Float>(g: &ConvGeom, a: ConvDataGrad<'_, T>) {
    let ConvDataGrad { dy, w, dx } = a;
    let hw = g.h * g.w;
    dx[..g.input_len()].fill(T::zero());
    for n in 0..g.n {
        for ci in 0..g.c_in {
            let dxs = &mut dx[(n * g.c_in + ci) * hw..(n * g.c_in + ci + 1) * hw];
            for co in 0..g.c_out {
                let wv = w[co * g.c_in + ci];
                let dys = &dy[(n * g.c_out + co) * hw..(n * g.c_out + co + 1) * hw];
                for (d, &e) in dxs.iter_mut().zip(dys) {
                    *d = *d + wv * e;
                }
            }
        }
    }
}

/// Pointwise conv weight gradient: `dw[co, ci] = Σ_{n,p} dy[n, co, p] · x[n, ci, p]`.
pub fn pointwise_backward_weight<T: Float>(g: &ConvGeom, a: ConvWeightGrad<'_, T>) {
    let ConvWeightGrad { x, dy, dw } = a;
    let hw = g.h * g.w;
    dw[..g.weight_len()].fill(T::zero());
    for n in 0..g.n {
        for co in 0..g.c_out {
            let dys = &dy[(n * g.c_out + co) * hw..(n * g.c_out + co + 1) * hw];
            for ci in 0..g.c_in {
                let xs = &x[(n * g.c_in + ci) * hw..(n * g.c_in + ci + 1) * hw];
                let mut acc = T::zero();
                for (&a, &b) in dys.iter().zip(xs) {
                    acc = acc + a * b;
                }
                dw[co * g.c_in + ci] = dw[co * g.c_in + ci] + acc;
            }
        }
    }
}

/// The trainer's batch-norm + PReLU: `batch_norm_train_forward` into `y`, then `prelu` of a
/// copy of `y` into `z` (the definition the fused kernels are tested against).
pub fn batch_norm_prelu_train_forward(a: BatchNormPreluForward<'_>) {
    let BatchNormPreluForward {
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
    batch_norm_train_forward::<f32>(n, c, hw, x, gamma, beta, eps, y, mean, var);
    let len = n * c * hw;
    z[..len].copy_from_slice(&y[..len]);
    prelu(n, c, hw, z, alpha);
}

/// Training-mode batch-norm over NC(HW): normalises with the batch's own statistics.
/// Writes `y`, the per-channel batch mean and the biased batch variance (what the
/// normalisation used); the caller updates running statistics from them.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_train_forward<T: Float>(
    n: usize,
    c: usize,
    hw: usize,
    x: &[T],
    gamma: &[T],
    beta: &[T],
    eps: T,
    y: &mut [T],
    mean: &mut [T],
    var: &mut [T],
) {
    let count = cst::<T>((n * hw) as f64);
    for ch in 0..c {
        let mut s = T::zero();
        for b in 0..n {
            for &v in &x[(b * c + ch) * hw..(b * c + ch + 1) * hw] {
                s = s + v;
            }
        }
        let m = s / count;
        let mut q = T::zero();
        for b in 0..n {
            for &v in &x[(b * c + ch) * hw..(b * c + ch + 1) * hw] {
                q = q + (v - m) * (v - m);
            }
        }
        let vr = q / count;
        let scale = gamma[ch] / (vr + eps).sqrt();
        for b in 0..n {
            let base = (b * c + ch) * hw;
            for i in 0..hw {
                y[base + i] = (x[base + i] - m) * scale + beta[ch];
            }
        }
        mean[ch] = m;
        var[ch] = vr;
    }
}

/// Backward of training-mode batch-norm, given the batch mean and biased variance of the forward.
pub fn batch_norm_train_backward<T: Float>(a: BatchNormBackward<'_, T>) {
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
    let count = cst::<T>((n * hw) as f64);
    for ch in 0..c {
        let invstd = T::one() / (var[ch] + eps).sqrt();
        let (mut sd, mut sdx) = (T::zero(), T::zero());
        for b in 0..n {
            let base = (b * c + ch) * hw;
            for i in 0..hw {
                let xhat = (x[base + i] - mean[ch]) * invstd;
                sd = sd + dy[base + i];
                sdx = sdx + dy[base + i] * xhat;
            }
        }
        dbeta[ch] = sd;
        dgamma[ch] = sdx;
        let k = gamma[ch] * invstd / count;
        for b in 0..n {
            let base = (b * c + ch) * hw;
            for i in 0..hw {
                let xhat = (x[base + i] - mean[ch]) * invstd;
                dx[base + i] = k * (count * dy[base + i] - sd - xhat * sdx);
            }
        }
    }
}

/// Backward of per-channel PReLU given its input `x`: `dx` and the slope gradient `dalpha`.
#[allow(clippy::too_many_arguments)]
pub fn prelu_backward<T: Float>(
    n: usize,
    c: usize,
    hw: usize,
    x: &[T],
    alpha: &[T],
    dy: &[T],
    dx: &mut [T],
    dalpha: &mut [T],
) {
    dalpha[..c].fill(T::zero());
    for b in 0..n {
        for ch in 0..c {
            let base = (b * c + ch) * hw;
            let mut da = T::zero();
            for i in 0..hw {
                let (xv, d) = (x[base + i], dy[base + i]);
                if xv < T::zero() {
                    dx[base + i] = d * alpha[ch];
                    da = da + d * xv;
                } else {
                    dx[base + i] = d;
                }
            }
            dalpha[ch] = dalpha[ch] + da;
        }
    }
}

/// Backward of the global depthwise conv (no bias): input and weight gradients.
#[allow(clippy::too_many_arguments)]
pub fn global_depthwise_backward<T: Float>(
    n: usize,
    c: usize,
    hw: usize,
    x: &[T],
    w: &[T],
    dy: &[T],
    dx: &mut [T],
    dw: &mut [T],
) {
    dw[..c * hw].fill(T::zero());
    for b in 0..n {
        for ch in 0..c {
            let d = dy[b * c + ch];
            let base = (b * c + ch) * hw;
            for i in 0..hw {
                dx[base + i] = d * w[ch * hw + i];
                dw[ch * hw + i] = dw[ch * hw + i] + d * x[base + i];
            }
        }
    }
}

/// Linear layer input gradient: `dx[n, k] = Σ_m dy[n, m] · w[m, k]`.
pub fn linear_backward_data<T: Float>(
    n: usize,
    k: usize,
    m: usize,
    dy: &[T],
    w: &[T],
    dx: &mut [T],
) {
    dx[..n * k].fill(T::zero());
    for b in 0..n {
        let row = &mut dx[b * k..(b + 1) * k];
        for o in 0..m {
            let d = dy[b * m + o];
            for (r, &wv) in row.iter_mut().zip(&w[o * k..(o + 1) * k]) {
                *r = *r + d * wv;
            }
        }
    }
}

/// Linear layer weight gradient: `dw[m, k] = Σ_n dy[n, m] · x[n, k]`.
pub fn linear_backward_weight<T: Float>(
    n: usize,
    k: usize,
    m: usize,
    x: &[T],
    dy: &[T],
    dw: &mut [T],
) {
    dw[..m * k].fill(T::zero());
    for b in 0..n {
        let xs = &x[b * k..(b + 1) * k];
        for o in 0..m {
            let d = dy[b * m + o];
            for (r, &xv) in dw[o * k..(o + 1) * k].iter_mut().zip(xs) {
                *r = *r + d * xv;
            }
        }
    }
}

/// Backward of row-wise L2 normalisation `y = x / max(‖x‖, 1e-12)` given the input `x`:
/// `dx = (dy − y (y·dy)) / ‖x‖`, or `dy / 1e-12` for a row whose norm is below the floor.
pub fn l2_normalize_backward<T: Float>(n: usize, d: usize, x: &[T], dy: &[T], dx: &mut [T]) {
    let floor = cst::<T>(1e-12);
    for b in 0..n {
        let xs = &x[b * d..(b + 1) * d];
        let ds = &dy[b * d..(b + 1) * d];
        let norm = xs.iter().fold(T::zero(), |a, &v| a + v * v).sqrt();
        let out = &mut dx[b * d..(b + 1) * d];
        if norm <= floor {
            for (o, &g) in out.iter_mut().zip(ds) {
                *o = g / floor;
            }
            continue;
        }
        let dot = xs.iter().zip(ds).fold(T::zero(), |a, (&v, &g)| a + v * g) / norm;
        for ((o, &v), &g) in out.iter_mut().zip(xs).zip(ds) {
            *o = (g - v / norm * dot) / norm;
        }
    }
}

/// Backward of inference-mode batch-norm `y = (x − mean)·γ/√(var + ε) + β` (fixed statistics):
/// every gradient is elementwise. Writes `dx`, `dgamma` and `dbeta`.
pub fn batch_norm_eval_backward<T: Float>(a: BatchNormBackward<'_, T>) {
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
    dgamma[..c].fill(T::zero());
    dbeta[..c].fill(T::zero());
    for b in 0..n {
        for ch in 0..c {
            let s = T::one() / (var[ch] + eps).sqrt();
            for i in (b * c + ch) * hw..(b * c + ch + 1) * hw {
                dx[i] = dy[i] * s * gamma[ch];
                dgamma[ch] = dgamma[ch] + dy[i] * (x[i] - mean[ch]) * s;
                dbeta[ch] = dbeta[ch] + dy[i];
            }
        }
    }
}

/// Logistic sigmoid in place.
pub fn sigmoid(x: &mut [f32]) {
    for v in x {
        *v = 1.0 / (1.0 + (-*v).exp());
    }
}

/// Per-channel affine map in place over NC(HW): `x = x * scale[c] + shift[c]` (an inference
/// batch-norm or a scalar normalisation already reduced to scale and shift).
pub fn channel_affine(n: usize, c: usize, hw: usize, x: &mut [f32], scale: &[f32], shift: &[f32]) {
    for b in 0..n {
        for ch in 0..c {
            let (s, t) = (scale[ch], shift[ch]);
            for v in &mut x[(b * c + ch) * hw..(b * c + ch + 1) * hw] {
                *v = *v * s + t;
            }
        }
    }
}

/// Max pooling over NCHW with the window, stride and padding of `g` (`c_out == c_in`, weights
/// unused). Padded positions never win: a window that covers only padding gives `-inf`.
pub fn max_pool2d(g: &ConvGeom, x: &[f32], y: &mut [f32]) {
    let (oh, ow) = (g.out_h(), g.out_w());
    for n in 0..g.n {
        for ch in 0..g.c_in {
            let plane = &x[(n * g.c_in + ch) * g.h * g.w..(n * g.c_in + ch + 1) * g.h * g.w];
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut m = f32::NEG_INFINITY;
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
                            m = m.max(plane[iy as usize * g.w + ix as usize]);
                        }
                    }
                    y[((n * g.c_in + ch) * oh + oy) * ow + ox] = m;
                }
            }
        }
    }
}

/// Nearest-neighbour resize of NCHW planes `h×w` to `oh×ow` with ONNX's `asymmetric`
/// coordinates and `floor` rounding: output `o` reads input `floor(o / scale)`, clamped.
#[allow(clippy::too_many_arguments)]
pub fn resize_nearest(
    nc: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    scale_h: f32,
    scale_w: f32,
    x: &[f32],
    y: &mut [f32],
) {
    let src = |o: usize, scale: f32, len: usize| ((o as f32 / scale).floor() as usize).min(len - 1);
    for p in 0..nc {
        for oy in 0..oh {
            let iy = src(oy, scale_h, h);
            for ox in 0..ow {
                let ix = src(ox, scale_w, w);
                y[(p * oh + oy) * ow + ox] = x[(p * h + iy) * w + ix];
            }
        }
    }
}

/// Permutes the axes of a dense row-major tensor: output axis `i` is input axis `perm[i]`.
pub fn transpose(shape: &[usize], perm: &[usize], x: &[f32], y: &mut [f32]) {
    let rank = shape.len();
    let mut in_strides = vec![1usize; rank];
    for i in (0..rank.saturating_sub(1)).rev() {
        in_strides[i] = in_strides[i + 1] * shape[i + 1];
    }
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let strides: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    let mut idx = vec![0usize; rank];
    for v in y.iter_mut() {
        let off: usize = idx.iter().zip(&strides).map(|(i, s)| i * s).sum();
        *v = x[off];
        for d in (0..rank).rev() {
            idx[d] += 1;
            if idx[d] < out_shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

#[cfg(test)]
mod appended_kernel_tests {
    use super::*;

    #[test]
    fn sigmoid_matches_closed_form_values() {
        let mut x = [0.0f32, 2.0, -2.0, 30.0, -30.0];
        sigmoid(&mut x);
        assert_eq!(x[0], 0.5);
        assert!((x[1] - 0.880_797_1).abs() < 1e-6 && (x[2] - 0.119_202_92).abs() < 1e-6);
        assert!(x[3] > 0.999_999 && x[4] < 1e-12 && x[4] >= 0.0);
    }

    #[test]
    fn channel_affine_uses_each_channels_own_scale() {
        let mut x = vec![1.0f32; 2 * 3 * 2];
        channel_affine(2, 3, 2, &mut x, &[1.0, 2.0, 3.0], &[0.0, -1.0, 0.5]);
        assert_eq!(
            x,
            [1.0, 1.0, 1.0, 1.0, 3.5, 3.5, 1.0, 1.0, 1.0, 1.0, 3.5, 3.5]
        );
    }

    #[test]
    fn max_pool_picks_window_maxima_and_ignores_padding() {
        // 1×1×3×3 input, 2×2 window, stride 2, padding 1 on bottom/right only.
        let x: Vec<f32> = vec![-1.0, -2.0, -3.0, -4.0, -5.0, -6.0, -7.0, -8.0, -9.0];
        let g = ConvGeom {
            n: 1,
            c_in: 1,
            h: 3,
            w: 3,
            c_out: 1,
            kh: 2,
            kw: 2,
            stride_h: 2,
            stride_w: 2,
            pad_t: 0,
            pad_l: 0,
            pad_b: 1,
            pad_r: 1,
            groups: 1,
        };
        let mut y = vec![0.0; g.output_len()];
        max_pool2d(&g, &x, &mut y);
        // Windows: {-1,-2,-4,-5}, {-3,-6}, {-7,-8}, {-9}: padding (zeros) must not win.
        assert_eq!(y, [-1.0, -3.0, -7.0, -9.0]);
    }

    #[test]
    fn resize_nearest_doubles_each_pixel() {
        let x = [1.0f32, 2.0, 3.0, 4.0];
        let mut y = [0.0f32; 16];
        resize_nearest(1, 2, 2, 4, 4, 2.0, 2.0, &x, &mut y);
        assert_eq!(
            y,
            [1., 1., 2., 2., 1., 1., 2., 2., 3., 3., 4., 4., 3., 3., 4., 4.]
        );
    }

    #[test]
    fn transpose_nchw_to_nhwc_and_back_is_identity() {
        let shape = [2usize, 3, 4, 5];
        let x: Vec<f32> = (0..120).map(|v| v as f32).collect();
        let mut y = vec![0.0; 120];
        transpose(&shape, &[0, 2, 3, 1], &x, &mut y);
        // y[n, h, w, c] == x[n, c, h, w] at n = 1, c = 1, h = 2, w = 3
        assert_eq!(y[((4 + 2) * 5 + 3) * 3 + 1], x[((3 + 1) * 4 + 2) * 5 + 3]);
        let mut z = vec![0.0; 120];
        transpose(&[2, 4, 5, 3], &[0, 3, 1, 2], &y, &mut z);
        assert_eq!(z, x);
    }
}
