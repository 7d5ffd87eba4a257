//! The scalar reference kernels against independent naive versions written another way
//! (im2col + matrix product for conv, f64 accumulation, formulas spelled out), on random shapes.

use bridgeface::cpu::{scalar, ConvGeom};
use bridgeface::rng::Rng;

fn random_vec(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.range(-1.0, 1.0)).collect()
}

fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let scale = 1.0f32.max(x.abs()).max(y.abs());
        assert!(
            (x - y).abs() <= tol * scale,
            "{what}: index {i}: {x} vs {y}"
        );
    }
}

/// Conv as im2col followed by a per-group matrix product, accumulated in f64.
fn conv_im2col(g: &ConvGeom, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let (oh, ow) = (g.out_h(), g.out_w());
    let cin_g = g.c_in / g.groups;
    let cout_g = g.c_out / g.groups;
    let cols = oh * ow;
    let rows = cin_g * g.kh * g.kw;
    let mut y = vec![0.0f32; g.n * g.c_out * cols];
    for n in 0..g.n {
        for grp in 0..g.groups {
            // Build the column matrix [rows, cols] with explicit zero padding.
            let mut col = vec![0.0f64; rows * cols];
            for c in 0..cin_g {
                for ky in 0..g.kh {
                    for kx in 0..g.kw {
                        let r = (c * g.kh + ky) * g.kw + kx;
                        for oy in 0..oh {
                            for ox in 0..ow {
                                let iy = (oy * g.stride_h + ky) as i64 - g.pad_t as i64;
                                let ix = (ox * g.stride_w + kx) as i64 - g.pad_l as i64;
                                let inside = iy >= 0
                                    && ix >= 0
                                    && (iy as usize) < g.h
                                    && (ix as usize) < g.w;
                                col[r * cols + oy * ow + ox] = if inside {
                                    let ic = grp * cin_g + c;
                                    x[((n * g.c_in + ic) * g.h + iy as usize) * g.w + ix as usize]
                                        as f64
                                } else {
                                    0.0
                                };
                            }
                        }
                    }
                }
            }
            for o in 0..cout_g {
                let oc = grp * cout_g + o;
                let wrow = &w[oc * rows..(oc + 1) * rows];
                for p in 0..cols {
                    let mut acc = bias.map_or(0.0, |b| b[oc] as f64);
                    for r in 0..rows {
                        acc += wrow[r] as f64 * col[r * cols + p];
                    }
                    y[(n * g.c_out + oc) * cols + p] = acc as f32;
                }
            }
        }
    }
    y
}

fn random_geom(rng: &mut Rng) -> ConvGeom {
    let groups = [1, 1, 2, 3][rng.below(4)];
    let depthwise = rng.below(3) == 0;
    let c_in = if depthwise {
        1 + rng.below(9)
    } else {
        groups * (1 + rng.below(5))
    };
    let groups = if depthwise { c_in } else { groups };
    let c_out = if depthwise {
        c_in
    } else {
        groups * (1 + rng.below(6))
    };
    let kh = 1 + rng.below(5);
    let kw = 1 + rng.below(5);
    let h = kh + rng.below(9);
    let w = kw + rng.below(9);
    ConvGeom {
        n: 1 + rng.below(3),
        c_in,
        h,
        w,
        c_out,
        kh,
        kw,
        stride_h: 1 + rng.below(3),
        stride_w: 1 + rng.below(3),
        pad_t: rng.below(kh),
        pad_l: rng.below(kw),
        pad_b: rng.below(kh),
        pad_r: rng.below(kw),
        groups,
    }
}

#[test]
fn conv2d_matches_im2col_on_random_shapes() {
    let mut rng = Rng::new(1);
    for case in 0..200 {
        let g = random_geom(&mut rng);
        g.validate().unwrap();
        let x = random_vec(&mut rng, g.input_len());
        let w = random_vec(&mut rng, g.weight_len());
        let b = random_vec(&mut rng, g.c_out);
        let bias = if case % 2 == 0 { Some(&b[..]) } else { None };
        let mut y = vec![f32::NAN; g.output_len()];
        scalar::conv2d(&g, &x, &w, bias, &mut y);
        let want = conv_im2col(&g, &x, &w, bias);
        assert_close(&y, &want, 1e-5, &format!("conv case {case} {g:?}"));
    }
}

#[test]
fn conv2d_known_values() {
    // 1×1×3×3 input 1..9, 2×2 kernel of ones, stride 1, no padding: sums of 2×2 windows.
    let g = ConvGeom::square(1, 1, 3, 3, 1, 2, 1, 0, 1);
    let x: Vec<f32> = (1..=9).map(|v| v as f32).collect();
    let mut y = vec![0.0; 4];
    scalar::conv2d(&g, &x, &[1.0; 4], Some(&[0.5]), &mut y);
    assert_eq!(y, vec![12.5, 16.5, 24.5, 28.5]);
}

#[test]
fn folded_batch_norm_equals_conv_then_batch_norm() {
    let mut rng = Rng::new(2);
    for _ in 0..20 {
        let g = random_geom(&mut rng);
        let x = random_vec(&mut rng, g.input_len());
        let w = random_vec(&mut rng, g.weight_len());
        let gamma = random_vec(&mut rng, g.c_out);
        let beta = random_vec(&mut rng, g.c_out);
        let mean = random_vec(&mut rng, g.c_out);
        let var: Vec<f32> = (0..g.c_out).map(|_| rng.range(0.1, 2.0)).collect();
        let mut conv = vec![0.0; g.output_len()];
        scalar::conv2d(&g, &x, &w, None, &mut conv);
        let hw = g.out_h() * g.out_w();
        let mut want = vec![0.0; conv.len()];
        scalar::batch_norm(
            g.n, g.c_out, hw, &conv, &gamma, &beta, &mean, &var, 1e-5, &mut want,
        );
        // Independent check of batch_norm itself, in f64.
        for (i, v) in want.iter().enumerate() {
            let c = (i / hw) % g.c_out;
            let r = (conv[i] as f64 - mean[c] as f64) / (var[c] as f64 + 1e-5).sqrt()
                * gamma[c] as f64
                + beta[c] as f64;
            assert!((*v as f64 - r).abs() < 1e-4, "batch_norm {v} vs {r}");
        }
        let mut wf = w.clone();
        let mut bf = vec![0.0; g.c_out];
        scalar::fold_batch_norm(&mut wf, &mut bf, &gamma, &beta, &mean, &var, 1e-5);
        let mut got = vec![0.0; g.output_len()];
        scalar::conv2d(&g, &x, &wf, Some(&bf), &mut got);
        assert_close(&got, &want, 1e-4, "folded BN");
    }
}

#[test]
fn prelu_relu_add() {
    let mut rng = Rng::new(3);
    let (n, c, hw) = (3, 5, 7);
    let x = random_vec(&mut rng, n * c * hw);
    let alpha = random_vec(&mut rng, c);
    let mut y = x.clone();
    scalar::prelu(n, c, hw, &mut y, &alpha);
    for (i, (&xi, &yi)) in x.iter().zip(&y).enumerate() {
        let a = alpha[(i / hw) % c];
        let want = if xi >= 0.0 { xi } else { a * xi };
        assert_eq!(yi, want);
    }
    let mut r = x.clone();
    scalar::relu(&mut r);
    assert!(r
        .iter()
        .zip(&x)
        .all(|(r, x)| *r == if *x > 0.0 { *x } else { 0.0 }));
    let b = random_vec(&mut rng, x.len());
    let mut s = x.clone();
    scalar::add(&mut s, &b);
    assert!(s
        .iter()
        .zip(x.iter().zip(&b))
        .all(|(s, (x, b))| *s == x + b));
}

#[test]
fn global_depthwise_equals_full_kernel_depthwise_conv_sum() {
    let mut rng = Rng::new(4);
    for _ in 0..30 {
        let (n, c, h, w) = (
            1 + rng.below(3),
            1 + rng.below(20),
            1 + rng.below(6),
            1 + rng.below(6),
        );
        let x = random_vec(&mut rng, n * c * h * w);
        let wt = random_vec(&mut rng, c * h * w);
        let b = random_vec(&mut rng, c);
        let mut y = vec![0.0; n * c];
        scalar::global_depthwise_conv(n, c, h * w, &x, &wt, Some(&b), &mut y);
        let g = ConvGeom::square(n, c, h, w, c, 0, 1, 0, c);
        let g = ConvGeom { kh: h, kw: w, ..g };
        let want = conv_im2col(&g, &x, &wt, Some(&b));
        assert_close(&y, &want, 1e-5, "global depthwise");
    }
}

#[test]
fn linear_matches_f64_column_loop() {
    let mut rng = Rng::new(5);
    for _ in 0..30 {
        let (n, k, m) = (1 + rng.below(5), 1 + rng.below(70), 1 + rng.below(40));
        let x = random_vec(&mut rng, n * k);
        let w = random_vec(&mut rng, m * k);
        let b = random_vec(&mut rng, m);
        let mut y = vec![0.0; n * m];
        scalar::linear(n, k, m, &x, &w, Some(&b), &mut y);
        let mut want = vec![0.0f64; n * m];
        for i in 0..k {
            for o in 0..m {
                for r in 0..n {
                    want[r * m + o] += x[r * k + i] as f64 * w[o * k + i] as f64;
                }
            }
        }
        let want: Vec<f32> = want
            .iter()
            .enumerate()
            .map(|(i, v)| (v + b[i % m] as f64) as f32)
            .collect();
        assert_close(&y, &want, 1e-5, "linear");
    }
}

#[test]
fn l2_normalize_gives_unit_rows_and_keeps_zero_rows_finite() {
    let mut rng = Rng::new(6);
    let (n, d) = (4, 33);
    let mut x = random_vec(&mut rng, n * d);
    for v in &mut x[2 * d..3 * d] {
        *v = 0.0;
    }
    let orig = x.clone();
    scalar::l2_normalize(n, d, &mut x);
    for r in 0..n {
        let row = &x[r * d..(r + 1) * d];
        let norm: f64 = row.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
        if r == 2 {
            assert!(row.iter().all(|v| *v == 0.0));
        } else {
            assert!((norm - 1.0).abs() < 1e-5, "row {r} norm {norm}");
            // Direction is kept: each value is the original over the original norm.
            let on: f64 = orig[r * d..(r + 1) * d]
                .iter()
                .map(|v| (*v as f64).powi(2))
                .sum::<f64>()
                .sqrt();
            for i in 0..d {
                assert!((row[i] as f64 - orig[r * d + i] as f64 / on).abs() < 1e-6);
            }
        }
    }
}
