//! Scalar reference kernels: the specification every fast kernel is tested against.
//! Plain loops, no unsafe, no layout tricks; shapes are validated by the caller (`ops`).

use super::ConvGeom;

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
