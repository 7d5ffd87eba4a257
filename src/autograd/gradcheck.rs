//! Finite-difference gradient checks in f64 for every backward kernel and every loss, on random
//! shapes (odd sizes, strides, padding, groups). Test-only: the f64 forward references here
//! mirror the f32 forward kernels the tape calls; the backward code checked is the very code the
//! `Kernels` table instantiates at f32.

use super::loss::{self, Margin};
use crate::cpu::scalar;
use crate::cpu::{BatchNormBackward, ConvDataGrad, ConvGeom, ConvWeightGrad};
use crate::rng::Rng;

const H: f64 = 1e-6;

fn randv(rng: &mut Rng, n: usize) -> Vec<f64> {
    (0..n).map(|_| rng.normal() as f64).collect()
}

/// Checks `analytic` against central differences of `f` around `x`, element by element.
fn assert_close_to_numeric(
    what: &str,
    x: &[f64],
    analytic: &[f64],
    f: &mut dyn FnMut(&[f64]) -> f64,
) {
    assert_eq!(x.len(), analytic.len(), "{what}: gradient length");
    let mut xp = x.to_vec();
    for i in 0..x.len() {
        xp[i] = x[i] + H;
        let up = f(&xp);
        xp[i] = x[i] - H;
        let down = f(&xp);
        xp[i] = x[i];
        let numeric = (up - down) / (2.0 * H);
        let err = (numeric - analytic[i]).abs();
        let tol = 1e-6 * (1.0 + numeric.abs().max(analytic[i].abs()));
        assert!(
            err <= tol,
            "{what}: d/dx[{i}] analytic {} vs numeric {numeric} (error {err})",
            analytic[i]
        );
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// f64 mirror of `scalar::conv2d` without bias.
fn conv_forward(g: &ConvGeom, x: &[f64], w: &[f64]) -> Vec<f64> {
    let (oh, ow) = (g.out_h(), g.out_w());
    let (cin_g, cout_g) = (g.c_in / g.groups, g.c_out / g.groups);
    let mut y = vec![0.0; g.output_len()];
    for n in 0..g.n {
        for oc in 0..g.c_out {
            let grp = oc / cout_g;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = 0.0;
                    for icg in 0..cin_g {
                        let ic = grp * cin_g + icg;
                        for ky in 0..g.kh {
                            let iy = (oy * g.stride_h + ky) as isize - g.pad_t as isize;
                            for kx in 0..g.kw {
                                let ix = (ox * g.stride_w + kx) as isize - g.pad_l as isize;
                                if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                    continue;
                                }
                                acc += x
                                    [((n * g.c_in + ic) * g.h + iy as usize) * g.w + ix as usize]
                                    * w[((oc * cin_g + icg) * g.kh + ky) * g.kw + kx];
                            }
                        }
                    }
                    y[((n * g.c_out + oc) * oh + oy) * ow + ox] = acc;
                }
            }
        }
    }
    y
}

type ConvBackwardData64 = fn(&ConvGeom, ConvDataGrad<'_, f64>);
type ConvBackwardWeight64 = fn(&ConvGeom, ConvWeightGrad<'_, f64>);

fn check_conv(g: &ConvGeom, data: ConvBackwardData64, weight: ConvBackwardWeight64, seed: u64) {
    g.validate().unwrap();
    let mut rng = Rng::new(seed);
    let x = randv(&mut rng, g.input_len());
    let w = randv(&mut rng, g.weight_len());
    let r = randv(&mut rng, g.output_len());
    let mut dx = vec![f64::NAN; x.len()];
    data(
        g,
        ConvDataGrad {
            dy: &r,
            w: &w,
            dx: &mut dx,
        },
    );
    assert_close_to_numeric(&format!("conv data {g:?}"), &x, &dx, &mut |xp| {
        dot(&conv_forward(g, xp, &w), &r)
    });
    let mut dw = vec![f64::NAN; w.len()];
    weight(
        g,
        ConvWeightGrad {
            x: &x,
            dy: &r,
            dw: &mut dw,
        },
    );
    assert_close_to_numeric(&format!("conv weight {g:?}"), &w, &dw, &mut |wp| {
        dot(&conv_forward(g, &x, wp), &r)
    });
}

#[test]
fn general_conv_backward_matches_finite_differences() {
    let mut rng = Rng::new(1);
    for case in 0..6u64 {
        let groups = [1, 2, 3][case as usize % 3];
        let g = ConvGeom {
            n: 1 + rng.below(2),
            c_in: groups * (1 + rng.below(2)),
            h: 3 + rng.below(5),
            w: 3 + rng.below(5),
            c_out: groups * (1 + rng.below(3)),
            kh: 1 + rng.below(3),
            kw: 1 + rng.below(3),
            stride_h: 1 + rng.below(2),
            stride_w: 1 + rng.below(2),
            pad_t: rng.below(2),
            pad_l: rng.below(2),
            pad_b: rng.below(2),
            pad_r: rng.below(2),
            groups,
        };
        check_conv(
            &g,
            scalar::conv2d_backward_data::<f64>,
            scalar::conv2d_backward_weight::<f64>,
            case,
        );
    }
}

#[test]
fn depthwise_conv_backward_matches_finite_differences() {
    for (i, (c, h, w, stride, k)) in [
        (3, 5, 7, 1, 3),
        (4, 6, 5, 2, 3),
        (2, 9, 9, 2, 3),
        (5, 3, 3, 1, 1),
    ]
    .into_iter()
    .enumerate()
    {
        let pad = k / 2;
        let g = ConvGeom::square(2, c, h, w, c, k, stride, pad, c);
        check_conv(
            &g,
            scalar::depthwise_backward_data::<f64>,
            scalar::depthwise_backward_weight::<f64>,
            10 + i as u64,
        );
    }
}

#[test]
fn pointwise_conv_backward_matches_finite_differences() {
    for (i, (ci, co, h, w)) in [(3, 5, 4, 4), (7, 2, 3, 5), (1, 6, 1, 1)]
        .into_iter()
        .enumerate()
    {
        let g = ConvGeom::square(2, ci, h, w, co, 1, 1, 0, 1);
        check_conv(
            &g,
            scalar::pointwise_backward_data::<f64>,
            scalar::pointwise_backward_weight::<f64>,
            20 + i as u64,
        );
    }
}

#[test]
fn batch_norm_train_backward_matches_finite_differences() {
    let mut rng = Rng::new(30);
    for (n, c, hw) in [(3, 2, 5), (4, 3, 1), (2, 1, 7)] {
        let x = randv(&mut rng, n * c * hw);
        let gamma = randv(&mut rng, c);
        let beta = randv(&mut rng, c);
        let r = randv(&mut rng, n * c * hw);
        let eps = 1e-5;
        let fwd = |x: &[f64], gamma: &[f64], beta: &[f64]| {
            let mut y = vec![0.0; x.len()];
            let (mut m, mut v) = (vec![0.0; c], vec![0.0; c]);
            scalar::batch_norm_train_forward(n, c, hw, x, gamma, beta, eps, &mut y, &mut m, &mut v);
            (dot(&y, &r), m, v)
        };
        let (_, mean, var) = fwd(&x, &gamma, &beta);
        let (mut dx, mut dg, mut db) = (vec![0.0; x.len()], vec![0.0; c], vec![0.0; c]);
        scalar::batch_norm_train_backward(BatchNormBackward {
            n,
            c,
            hw,
            x: &x,
            dy: &r,
            gamma: &gamma,
            mean: &mean,
            var: &var,
            eps,
            dx: &mut dx,
            dgamma: &mut dg,
            dbeta: &mut db,
        });
        assert_close_to_numeric("bn dx", &x, &dx, &mut |xp| fwd(xp, &gamma, &beta).0);
        assert_close_to_numeric("bn dgamma", &gamma, &dg, &mut |gp| fwd(&x, gp, &beta).0);
        assert_close_to_numeric("bn dbeta", &beta, &db, &mut |bp| fwd(&x, &gamma, bp).0);
    }
}

#[test]
fn batch_norm_eval_backward_matches_finite_differences() {
    let mut rng = Rng::new(35);
    let (n, c, hw) = (2, 3, 4);
    let x = randv(&mut rng, n * c * hw);
    let gamma = randv(&mut rng, c);
    let beta = randv(&mut rng, c);
    let mean = randv(&mut rng, c);
    let var: Vec<f64> = (0..c).map(|_| rng.range(0.2, 2.0) as f64).collect();
    let r = randv(&mut rng, x.len());
    let eps = 1e-5;
    let fwd = |x: &[f64], g: &[f64], b: &[f64]| {
        let mut s = 0.0;
        for (i, &v) in x.iter().enumerate() {
            let ch = (i / hw) % c;
            s += r[i] * ((v - mean[ch]) / (var[ch] + eps).sqrt() * g[ch] + b[ch]);
        }
        s
    };
    let (mut dx, mut dg, mut db) = (vec![0.0; x.len()], vec![0.0; c], vec![0.0; c]);
    scalar::batch_norm_eval_backward(BatchNormBackward {
        n,
        c,
        hw,
        x: &x,
        dy: &r,
        gamma: &gamma,
        mean: &mean,
        var: &var,
        eps,
        dx: &mut dx,
        dgamma: &mut dg,
        dbeta: &mut db,
    });
    assert_close_to_numeric("bn eval dx", &x, &dx, &mut |xp| fwd(xp, &gamma, &beta));
    assert_close_to_numeric("bn eval dgamma", &gamma, &dg, &mut |gp| fwd(&x, gp, &beta));
    assert_close_to_numeric("bn eval dbeta", &beta, &db, &mut |bp| fwd(&x, &gamma, bp));
}

#[test]
fn prelu_backward_matches_finite_differences() {
    let mut rng = Rng::new(40);
    let (n, c, hw) = (2, 3, 5);
    // Keep inputs away from the kink at 0, where the derivative is undefined.
    let x: Vec<f64> = randv(&mut rng, n * c * hw)
        .into_iter()
        .map(|v| {
            if v.abs() < 0.05 {
                v + 0.1f64.copysign(v)
            } else {
                v
            }
        })
        .collect();
    let alpha = randv(&mut rng, c);
    let r = randv(&mut rng, x.len());
    let fwd = |x: &[f64], a: &[f64]| {
        let mut s = 0.0;
        for (i, &v) in x.iter().enumerate() {
            let ch = (i / hw) % c;
            s += r[i] * if v < 0.0 { v * a[ch] } else { v };
        }
        s
    };
    let (mut dx, mut da) = (vec![0.0; x.len()], vec![0.0; c]);
    scalar::prelu_backward(n, c, hw, &x, &alpha, &r, &mut dx, &mut da);
    assert_close_to_numeric("prelu dx", &x, &dx, &mut |xp| fwd(xp, &alpha));
    assert_close_to_numeric("prelu dalpha", &alpha, &da, &mut |ap| fwd(&x, ap));
}

#[test]
fn add_backward_is_identity_for_both_inputs() {
    // y = a + b, so ∂(r·y)/∂a = ∂(r·y)/∂b = r; the tape passes dy through unchanged.
    let mut rng = Rng::new(45);
    let (a, b, r) = (
        randv(&mut rng, 11),
        randv(&mut rng, 11),
        randv(&mut rng, 11),
    );
    let f = |a: &[f64], b: &[f64]| a.iter().zip(b).zip(&r).map(|((x, y), z)| (x + y) * z).sum();
    assert_close_to_numeric("add da", &a, &r, &mut |ap| f(ap, &b));
    assert_close_to_numeric("add db", &b, &r, &mut |bp| f(&a, bp));
}

#[test]
fn global_depthwise_backward_matches_finite_differences() {
    let mut rng = Rng::new(50);
    let (n, c, hw) = (3, 4, 6);
    let x = randv(&mut rng, n * c * hw);
    let w = randv(&mut rng, c * hw);
    let r = randv(&mut rng, n * c);
    let fwd = |x: &[f64], w: &[f64]| {
        let mut s = 0.0;
        for b in 0..n {
            for ch in 0..c {
                let y: f64 = (0..hw)
                    .map(|i| x[(b * c + ch) * hw + i] * w[ch * hw + i])
                    .sum();
                s += y * r[b * c + ch];
            }
        }
        s
    };
    let (mut dx, mut dw) = (vec![0.0; x.len()], vec![0.0; w.len()]);
    scalar::global_depthwise_backward(n, c, hw, &x, &w, &r, &mut dx, &mut dw);
    assert_close_to_numeric("gdc dx", &x, &dx, &mut |xp| fwd(xp, &w));
    assert_close_to_numeric("gdc dw", &w, &dw, &mut |wp| fwd(&x, wp));
}

#[test]
fn linear_backward_matches_finite_differences() {
    let mut rng = Rng::new(60);
    let (n, k, m) = (3, 7, 5);
    let x = randv(&mut rng, n * k);
    let w = randv(&mut rng, m * k);
    let r = randv(&mut rng, n * m);
    let fwd = |x: &[f64], w: &[f64]| {
        let mut s = 0.0;
        for b in 0..n {
            for o in 0..m {
                s += r[b * m + o] * (0..k).map(|i| x[b * k + i] * w[o * k + i]).sum::<f64>();
            }
        }
        s
    };
    let (mut dx, mut dw) = (vec![0.0; x.len()], vec![0.0; w.len()]);
    scalar::linear_backward_data(n, k, m, &r, &w, &mut dx);
    scalar::linear_backward_weight(n, k, m, &x, &r, &mut dw);
    assert_close_to_numeric("linear dx", &x, &dx, &mut |xp| fwd(xp, &w));
    assert_close_to_numeric("linear dw", &w, &dw, &mut |wp| fwd(&x, wp));
}

fn l2_forward(n: usize, d: usize, x: &[f64]) -> Vec<f64> {
    let mut y = x.to_vec();
    for row in y.chunks_mut(d).take(n) {
        let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
        row.iter_mut().for_each(|v| *v /= norm);
    }
    y
}

#[test]
fn l2_normalize_backward_matches_finite_differences() {
    let mut rng = Rng::new(70);
    for (n, d) in [(2, 5), (3, 1), (1, 9)] {
        let x = randv(&mut rng, n * d);
        let r = randv(&mut rng, n * d);
        let mut dx = vec![0.0; x.len()];
        scalar::l2_normalize_backward(n, d, &x, &r, &mut dx);
        assert_close_to_numeric("l2 dx", &x, &dx, &mut |xp| dot(&l2_forward(n, d, xp), &r));
    }
}

#[test]
fn softmax_cross_entropy_gradient_matches_finite_differences() {
    let mut rng = Rng::new(80);
    let (n, m) = (4, 6);
    let logits: Vec<f64> = randv(&mut rng, n * m).iter().map(|v| 3.0 * v).collect();
    let labels: Vec<usize> = (0..n).map(|_| rng.below(m)).collect();
    let mut d = vec![0.0; n * m];
    let l = loss::softmax_cross_entropy(&logits, n, m, &labels, &mut d).unwrap();
    assert!(l > 0.0);
    let mut scratch = vec![0.0; n * m];
    assert_close_to_numeric("softmax ce", &logits, &d, &mut |lp| {
        loss::softmax_cross_entropy(lp, n, m, &labels, &mut scratch).unwrap()
    });
}

#[test]
fn margin_softmax_gradients_match_finite_differences() {
    let mut rng = Rng::new(90);
    let (n, m) = (5, 4);
    for margin in [Margin::None, Margin::CosFace(0.35), Margin::ArcFace(0.5)] {
        // Cosines spread over (−0.95, 0.95), covering both ArcFace branches.
        let cos: Vec<f64> = (0..n * m).map(|_| rng.range(-0.95, 0.95) as f64).collect();
        let labels: Vec<usize> = (0..n).map(|_| rng.below(m)).collect();
        let mut d = vec![0.0; n * m];
        loss::margin_softmax(&cos, n, m, &labels, 16.0, margin, &mut d).unwrap();
        let mut scratch = vec![0.0; n * m];
        assert_close_to_numeric(&format!("{margin:?}"), &cos, &d, &mut |cp| {
            loss::margin_softmax(cp, n, m, &labels, 16.0, margin, &mut scratch)
                .unwrap()
                .0
        });
    }
}

#[test]
fn margins_lower_the_target_logit() {
    // A margin makes the loss strictly larger for the same cosines.
    let cos = [0.6f64, 0.1, 0.2, 0.3];
    let mut d = [0.0; 4];
    let plain = loss::margin_softmax(&cos, 1, 4, &[0], 10.0, Margin::None, &mut d)
        .unwrap()
        .0;
    let cosface = loss::margin_softmax(&cos, 1, 4, &[0], 10.0, Margin::CosFace(0.2), &mut d)
        .unwrap()
        .0;
    let arcface = loss::margin_softmax(&cos, 1, 4, &[0], 10.0, Margin::ArcFace(0.2), &mut d)
        .unwrap()
        .0;
    assert!(
        cosface > plain && arcface > plain,
        "{plain} {cosface} {arcface}"
    );
}

type Regression = fn(&[f64], &[f64], usize, usize, &mut [f64]) -> crate::Result<f64>;

#[test]
fn feature_losses_match_finite_differences() {
    let mut rng = Rng::new(100);
    let cases: [(&str, Regression); 3] = [
        ("cosine", loss::cosine_regression::<f64>),
        ("l2", loss::l2_regression::<f64>),
        ("relation", loss::relation_distillation::<f64>),
    ];
    for (name, f) in cases {
        for (n, d) in [(3, 4), (5, 2), (1, 6)] {
            let s = randv(&mut rng, n * d);
            let t = randv(&mut rng, n * d);
            let mut ds = vec![0.0; n * d];
            let l = f(&s, &t, n, d, &mut ds).unwrap();
            assert!(l >= 0.0, "{name}");
            let mut scratch = vec![0.0; n * d];
            assert_close_to_numeric(&format!("{name} n={n} d={d}"), &s, &ds, &mut |sp| {
                f(sp, &t, n, d, &mut scratch).unwrap()
            });
            // Identical features give zero loss and zero gradient.
            let zero = f(&t, &t, n, d, &mut ds).unwrap();
            assert!(zero.abs() < 1e-12, "{name}: {zero}");
        }
    }
}

#[test]
fn contrastive_distillation_matches_finite_differences() {
    let mut rng = Rng::new(101);
    for (n, d, labels) in [
        (4, 3, vec![0, 1, 2, 3]),
        (5, 4, vec![0, 1, 0, 2, 1]),
        (1, 5, vec![7]),
    ] {
        let s = randv(&mut rng, n * d);
        let t = randv(&mut rng, n * d);
        let mut ds = vec![0.0; n * d];
        let f = |sp: &[f64], g: &mut [f64]| {
            loss::contrastive_distillation(sp, &t, &labels, n, d, 5.0, g).unwrap()
        };
        let l = f(&s, &mut ds);
        assert!(l >= 0.0);
        let mut scratch = vec![0.0; n * d];
        assert_close_to_numeric(&format!("contrastive n={n} d={d}"), &s, &ds, &mut |sp| {
            f(sp, &mut scratch)
        });
    }
    // The loss is the cross-entropy of picking the own teacher row: lower when each student
    // row equals its own, and rows of the same label do not compete.
    let t = vec![1.0, 0.0, 0.0, 1.0, -1.0, 0.0];
    let mut g = vec![0.0; 6];
    let own = loss::contrastive_distillation(&t, &t, &[0, 1, 2], 3, 2, 10.0, &mut g).unwrap();
    let swapped = [0.0, 1.0, 1.0, 0.0, -1.0, 0.0];
    let wrong =
        loss::contrastive_distillation(&swapped, &t, &[0, 1, 2], 3, 2, 10.0, &mut g).unwrap();
    assert!(own < wrong, "{own} {wrong}");
    let alone =
        loss::contrastive_distillation(&swapped, &t, &[0, 0, 2], 3, 2, 10.0, &mut g).unwrap();
    assert!(alone < wrong, "same-label rows must leave the softmax");
    assert!(loss::contrastive_distillation(&t, &t, &[0, 1], 3, 2, 10.0, &mut g).is_err());
    assert!(loss::contrastive_distillation(&t, &t, &[0, 1, 2], 3, 2, 0.0, &mut g).is_err());
}

/// The tape's wiring: a small network using every tape op (general, depthwise and pointwise conv,
/// training and eval batch-norm, PReLU, residual add, global depthwise conv, linear, L2
/// normalisation), its gradients compared with directional central differences of the whole
/// f32 forward. The kernels are checked in f64 above; this catches a kernel called with the
/// wrong operands. Small sizes keep PReLU kinks out of reach of the step.
#[test]
fn tape_gradients_match_directional_differences() {
    use super::{Tape, Var};
    use crate::cpu::Kernels;
    use crate::ops::Conv2d;
    use crate::tensor::Tensor;
    let k = Kernels::scalar();
    let mut rng = Rng::new(200);
    let mut t = |shape: &[usize], scale: f32, offset: f32| {
        let n: usize = shape.iter().product();
        Tensor::new(
            shape,
            (0..n).map(|_| offset + scale * rng.normal()).collect(),
        )
        .unwrap()
    };
    let params: Vec<(&str, Tensor)> = vec![
        ("stem", t(&[4, 3, 3, 3], 0.5, 0.0)),
        ("g1", t(&[4], 0.2, 1.0)),
        ("b1", t(&[4], 0.2, 0.0)),
        ("a1", t(&[4], 0.1, 0.25)),
        ("dw", t(&[4, 1, 3, 3], 0.5, 0.0)),
        ("g2", t(&[4], 0.2, 1.0)),
        ("b2", t(&[4], 0.2, 0.0)),
        ("pw", t(&[4, 4, 1, 1], 0.5, 0.0)),
        ("a2", t(&[4], 0.1, 0.25)),
        ("gdc", t(&[4, 1, 3, 3], 0.5, 0.0)),
        ("lin", t(&[5, 4], 0.5, 0.0)),
        ("g3", t(&[5], 0.2, 1.0)),
        ("b3", t(&[5], 0.2, 0.0)),
    ];
    let x = t(&[3, 3, 6, 6], 1.0, 0.0);
    let r = t(&[3, 5], 1.0, 0.0);
    let (eval_mean, eval_var) = (
        vec![0.1f32, -0.2, 0.05, 0.0, 0.3],
        vec![0.8f32, 1.2, 0.5, 1.0, 2.0],
    );
    let forward = |tape: &mut Tape, p: &[(&str, Tensor)]| -> (Vec<Var>, Var) {
        let v: Vec<Var> = p.iter().map(|(_, t)| tape.leaf(t.clone(), true)).collect();
        let xi = tape.leaf(x.clone(), false);
        let y = tape.conv2d(xi, v[0], Conv2d::new(2, 1, 1)).unwrap(); // 6×6 → 3×3
        let (y, _, _) = tape.batch_norm_train(y, v[1], v[2], 1e-5).unwrap();
        let y = tape.prelu(y, v[3]).unwrap();
        let d = tape.conv2d(y, v[4], Conv2d::new(1, 1, 4)).unwrap();
        let (d, _, _) = tape.batch_norm_train(d, v[5], v[6], 1e-5).unwrap();
        let pw = tape.conv2d(d, v[7], Conv2d::new(1, 0, 1)).unwrap();
        let pw = tape.prelu(pw, v[8]).unwrap();
        let s = tape.add(pw, y).unwrap();
        let g = tape.global_depthwise(s, v[9]).unwrap();
        let l = tape.linear(g, v[10]).unwrap();
        let l = tape
            .batch_norm_eval(l, v[11], v[12], &eval_mean, &eval_var, 1e-5)
            .unwrap();
        (v, tape.l2_normalize(l).unwrap())
    };
    let objective = |p: &[(&str, Tensor)]| -> f64 {
        let mut tape = Tape::new(&k);
        let (_, out) = forward(&mut tape, p);
        let o = tape.value(out).data();
        o.iter()
            .zip(r.data())
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum()
    };
    let mut tape = Tape::new(&k);
    let (vars, out) = forward(&mut tape, &params);
    tape.backward(out, r.clone()).unwrap();
    let mut drng = Rng::new(201);
    for (i, (name, value)) in params.iter().enumerate() {
        let grad = tape.grad(vars[i]).unwrap().data().to_vec();
        let mut dir: Vec<f32> = (0..value.numel()).map(|_| drng.normal()).collect();
        let norm = dir.iter().map(|d| d * d).sum::<f32>().sqrt();
        dir.iter_mut().for_each(|d| *d /= norm);
        let analytic: f64 = grad
            .iter()
            .zip(&dir)
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum();
        let h = 3e-3f32;
        let shifted = |s: f32| {
            let mut q = params.clone();
            for (w, d) in q[i].1.data_mut().iter_mut().zip(&dir) {
                *w += s * d;
            }
            objective(&q)
        };
        let numeric = (shifted(h) - shifted(-h)) / (2.0 * h as f64);
        // f32 forward: ~1e-7 relative rounding over a 3e-3 step gives ~1e-4 absolute noise.
        assert!(
            (numeric - analytic).abs() <= 0.01 * analytic.abs().max(numeric.abs()) + 1e-3,
            "{name}: tape gives {analytic}, finite difference {numeric}"
        );
    }
}
