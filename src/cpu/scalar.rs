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
