//! Every fast kernel of every ISA this machine runs, against the scalar reference, on random
//! shapes (channel counts and widths that are not multiples of the vector width, batch 1 and
//! odd); the packed scalar oracles against the plain scalar kernels; and the whole student on
//! each ISA against the scalar reference network.
//!
//! Tolerance: kernels accumulate in the same order as the reference but with fused
//! multiply–adds, so results differ by rounding only. We require
//! `max|fast − ref| ≤ 1e-5 · (1 + max|ref|)` per output tensor (f32 epsilon is 1.2e-7; the
//! longest sums here have ≤ 300 terms). Student embeddings are unit vectors: `≤ 1e-5` absolute.

use bridgeface::cpu::packed::{self, Epilogue, PointwiseShape};
use bridgeface::cpu::{
    scalar, scalar_packed, BatchNormBackward, BatchNormPreluForward, ConvDataGrad, ConvGeom,
    ConvWeightGrad, Isa, Kernels,
};
use bridgeface::model::student::{StudentInfo, StudentParams};
use bridgeface::rng::Rng;
use bridgeface::Tensor;

fn random(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.range(-1.0, 1.0)).collect()
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let tol = 1e-5 * (1.0 + scale);
    let mut worst = 0.0f32;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let d = (g - w).abs();
        assert!(
            d <= tol,
            "{what}: index {i}: got {g}, want {w} (tolerance {tol})"
        );
        worst = worst.max(d);
    }
    assert!(worst.is_finite(), "{what}: non-finite difference");
}

#[test]
fn isa_selection_rejects_what_the_cpu_lacks() {
    for isa in [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon] {
        let r = Kernels::for_isa(isa);
        assert_eq!(r.is_ok(), isa.available(), "{}", isa.name());
        if let Ok(k) = r {
            assert_eq!(k.isa, isa);
        } else if let Err(e) = r {
            assert!(e.to_string().contains(isa.name()), "{e}");
        }
    }
    assert!(Isa::parse("sse9").is_err());
    assert_eq!(
        Kernels::best().isa,
        *Kernels::available_isas().last().unwrap()
    );
}

/// A mix of geometries every general `conv2d` entry must get right: pointwise, depthwise 3×3
/// at stride 1 and 2, odd kernels and asymmetric padding, dense direct convs, grouped ones.
fn conv_cases() -> Vec<ConvGeom> {
    let mut v = vec![
        ConvGeom::square(1, 17, 5, 3, 33, 1, 1, 0, 1),
        ConvGeom::square(3, 40, 4, 4, 24, 1, 1, 0, 1),
        ConvGeom::square(1, 19, 7, 9, 19, 3, 1, 1, 19),
        ConvGeom::square(3, 32, 8, 5, 32, 3, 2, 1, 32),
        ConvGeom::square(2, 5, 9, 9, 5, 3, 2, 1, 5),
        ConvGeom::square(1, 3, 11, 13, 32, 3, 1, 1, 1),
        ConvGeom::square(3, 3, 10, 7, 20, 3, 2, 1, 1),
        ConvGeom::square(1, 6, 6, 6, 18, 1, 2, 0, 1),
        ConvGeom::square(1, 8, 6, 6, 12, 3, 1, 1, 2),
        // The student's pointwise layers at 16 and 8 px (the trainer's NCHW GEMM route).
        ConvGeom::square(3, 32, 16, 16, 64, 1, 1, 0, 1),
        ConvGeom::square(2, 128, 8, 8, 256, 1, 1, 0, 1),
        // Depthwise 3×3 on NCHW (the trainer's route): the student's shapes and odd ones.
        ConvGeom::square(2, 64, 8, 8, 64, 3, 1, 1, 64),
        ConvGeom::square(2, 32, 16, 16, 32, 3, 2, 1, 32),
        ConvGeom::square(1, 35, 5, 7, 35, 3, 2, 1, 35),
        ConvGeom::square(2, 1, 3, 2, 1, 3, 1, 1, 1),
    ];
    let mut odd = ConvGeom::square(1, 21, 7, 6, 21, 5, 1, 2, 21);
    odd.kh = 5;
    odd.kw = 3;
    odd.pad_l = 1;
    odd.pad_r = 0;
    odd.stride_w = 2;
    v.push(odd);
    let mut dense = ConvGeom::square(3, 4, 9, 8, 17, 2, 1, 0, 1);
    dense.pad_b = 1;
    v.push(dense);
    v
}

#[test]
fn conv2d_entry_matches_scalar_on_every_route() {
    let mut rng = Rng::new(1);
    for k in Kernels::fast_tables() {
        for g in conv_cases() {
            g.validate().unwrap();
            let x = random(&mut rng, g.input_len());
            let w = random(&mut rng, g.weight_len());
            let b = random(&mut rng, g.c_out);
            for bias in [None, Some(&b[..])] {
                let mut want = vec![0.0; g.output_len()];
                scalar::conv2d(&g, &x, &w, bias, &mut want);
                let mut got = vec![f32::NAN; g.output_len()];
                (k.conv2d)(&g, &x, &w, bias, &mut got);
                assert_close(&format!("{} conv2d {g:?}", k.isa.name()), &got, &want);
            }
        }
    }
}

#[test]
fn packed_scalar_oracles_match_plain_scalar() {
    // The scalar table's packed kernels, reached through the same routing, equal the plain
    // reference: this pins the packers and the layout, independently of any SIMD.
    let mut rng = Rng::new(2);
    let k = Kernels::scalar();
    for g in conv_cases() {
        let x = random(&mut rng, g.input_len());
        let w = random(&mut rng, g.weight_len());
        let b = random(&mut rng, g.c_out);
        let mut want = vec![0.0; g.output_len()];
        scalar::conv2d(&g, &x, &w, Some(&b), &mut want);
        let mut got = vec![f32::NAN; g.output_len()];
        packed::conv2d_via_packed(&k, &g, &x, &w, Some(&b), &mut got);
        assert_close(&format!("scalar packed {g:?}"), &got, &want);
    }
    for (n, kk, m) in [(1, 7, 5), (3, 256, 128), (5, 33, 17)] {
        let x = random(&mut rng, n * kk);
        let w = random(&mut rng, m * kk);
        let b = random(&mut rng, m);
        let mut want = vec![0.0; n * m];
        scalar::linear(n, kk, m, &x, &w, Some(&b), &mut want);
        let mut got = vec![0.0; n * m];
        packed::linear_via_packed(&k, n, kk, m, &x, &w, Some(&b), &mut got);
        assert_close("scalar packed linear", &got, &want);
    }
    // Global depthwise: packed scalar vs plain scalar through block/unblock.
    let (n, c, hw) = (3, 21, 5);
    let x = random(&mut rng, n * c * hw);
    let w = random(&mut rng, c * hw);
    let b = random(&mut rng, c);
    let mut want = vec![0.0; n * c];
    scalar::global_depthwise_conv(n, c, hw, &x, &w, Some(&b), &mut want);
    let cp = packed::padded(c);
    let mut got = vec![0.0; n * cp];
    scalar_packed::global_depthwise_packed(
        n,
        c,
        hw,
        &packed::block_nchw(&x, n, c, hw),
        &packed::pack_global_depthwise(&w, c, hw),
        &packed::pad_channels(&b),
        &mut got,
    );
    let got: Vec<f32> = (0..n)
        .flat_map(|i| got[i * cp..i * cp + c].to_vec())
        .collect();
    assert_close("scalar packed global depthwise", &got, &want);
}

#[test]
fn prelu_epilogue_matches_unfused_reference() {
    // bias + PReLU + residual fused in the scalar packed kernel == conv, prelu, add in turn.
    let mut rng = Rng::new(3);
    let g = ConvGeom::square(2, 20, 3, 5, 24, 1, 1, 0, 1);
    let (hw, c) = (g.h * g.w, g.c_out);
    let x = random(&mut rng, g.input_len());
    let w = random(&mut rng, g.weight_len());
    let b = random(&mut rng, c);
    let a = random(&mut rng, c);
    let res = random(&mut rng, g.output_len());
    let mut want = vec![0.0; g.output_len()];
    scalar::conv2d(&g, &x, &w, Some(&b), &mut want);
    scalar::prelu(g.n, c, hw, &mut want, &a);
    scalar::add(&mut want, &res);
    let s = PointwiseShape {
        pixels: g.n * hw,
        c_in: g.c_in,
        c_out: c,
    };
    let (bp, ap) = (packed::pad_channels(&b), packed::pad_channels(&a));
    let rb = packed::block_nchw(&res, g.n, c, hw);
    let ep = Epilogue {
        bias: &bp,
        prelu: Some(&ap),
        residual: Some(&rb),
    };
    let mut yb = vec![0.0; packed::padded(c) * g.n * hw];
    scalar_packed::pointwise_packed(
        &s,
        &packed::block_nchw(&x, g.n, g.c_in, hw),
        &packed::pack_pointwise(&w, g.c_in, c),
        &ep,
        &mut yb,
    );
    let mut got = vec![0.0; g.output_len()];
    packed::unblock_nchw(&yb, g.n, c, hw, &mut got);
    assert_close("fused pointwise epilogue", &got, &want);
}

#[test]
fn packed_kernels_match_scalar_packed_with_fused_epilogues() {
    let mut rng = Rng::new(4);
    for k in Kernels::fast_tables() {
        let name = k.isa.name();
        // Pointwise: pixel counts around every tile size, channels off the block size.
        for (pixels, c_in, c_out) in [
            (1, 16, 16),
            (7, 3, 17),
            (13, 40, 33),
            (100, 64, 48),
            (23, 256, 16),
        ] {
            let (ci, co) = (packed::padded(c_in), packed::padded(c_out));
            let s = PointwiseShape {
                pixels,
                c_in,
                c_out,
            };
            // Blocked input: padded lanes are zero, as the layout requires.
            let plain = random(&mut rng, c_in * pixels);
            let x = packed::block_nchw(&plain, 1, c_in, pixels);
            let w = packed::pack_pointwise(&random(&mut rng, c_in * c_out), c_in, c_out);
            let b = packed::pad_channels(&random(&mut rng, c_out));
            let a = packed::pad_channels(&random(&mut rng, c_out));
            let res = random(&mut rng, co * pixels);
            assert_eq!(x.len(), ci * pixels);
            for (prelu, residual) in [
                (None, None),
                (Some(&a[..]), None),
                (Some(&a[..]), Some(&res[..])),
            ] {
                let ep = Epilogue {
                    bias: &b,
                    prelu,
                    residual,
                };
                let mut want = vec![0.0; co * pixels];
                scalar_packed::pointwise_packed(&s, &x, &w, &ep, &mut want);
                let mut got = vec![f32::NAN; co * pixels];
                (k.pointwise_packed)(&s, &x, &w, &ep, &mut got);
                assert_close(&format!("{name} pointwise {s:?}"), &got, &want);
            }
        }
        // Depthwise 3×3 stride 1 and 2 (the student's), plus another kernel size.
        for g in [
            ConvGeom::square(1, 16, 16, 16, 16, 3, 1, 1, 16),
            ConvGeom::square(3, 37, 7, 5, 37, 3, 2, 1, 37),
            ConvGeom::square(1, 64, 4, 4, 64, 3, 2, 1, 64),
            ConvGeom::square(5, 20, 3, 9, 20, 3, 1, 1, 20),
            ConvGeom::square(2, 18, 6, 7, 18, 5, 2, 2, 18),
        ] {
            let c = packed::padded(g.c_in);
            let x = packed::block_nchw(&random(&mut rng, g.input_len()), g.n, g.c_in, g.h * g.w);
            let w = packed::pack_depthwise(&random(&mut rng, g.weight_len()), g.c_in, g.kh * g.kw);
            let b = packed::pad_channels(&random(&mut rng, g.c_in));
            let a = packed::pad_channels(&random(&mut rng, g.c_in));
            let ep = Epilogue {
                bias: &b,
                prelu: Some(&a),
                residual: None,
            };
            let len = c * g.n * g.out_h() * g.out_w();
            let mut want = vec![0.0; len];
            scalar_packed::depthwise_packed(&g, &x, &w, &ep, &mut want);
            let mut got = vec![f32::NAN; len];
            (k.depthwise_packed)(&g, &x, &w, &ep, &mut got);
            assert_close(&format!("{name} depthwise {g:?}"), &got, &want);
        }
        // Direct conv: the student's stem and odd shapes.
        for g in [
            ConvGeom::square(1, 3, 16, 16, 32, 3, 1, 1, 1),
            ConvGeom::square(3, 3, 9, 11, 20, 3, 2, 1, 1),
            ConvGeom::square(1, 5, 5, 5, 7, 1, 1, 0, 1),
        ] {
            let co = packed::padded(g.c_out);
            let x = random(&mut rng, g.input_len());
            let w = packed::pack_direct(
                &random(&mut rng, g.weight_len()),
                g.c_in,
                g.c_out,
                g.kh * g.kw,
            );
            let b = packed::pad_channels(&random(&mut rng, g.c_out));
            let a = packed::pad_channels(&random(&mut rng, g.c_out));
            let ep = Epilogue {
                bias: &b,
                prelu: Some(&a),
                residual: None,
            };
            let len = co * g.n * g.out_h() * g.out_w();
            let mut want = vec![0.0; len];
            scalar_packed::direct_conv_packed(&g, &x, &w, &ep, &mut want);
            let mut got = vec![f32::NAN; len];
            (k.direct_conv_packed)(&g, &x, &w, &ep, &mut got);
            assert_close(&format!("{name} direct {g:?}"), &got, &want);
        }
        // Head: global depthwise and linear, batch 1 and odd.
        for (n, c, hw) in [(1, 256, 16), (5, 20, 9), (3, 16, 1)] {
            let cp = packed::padded(c);
            let x = packed::block_nchw(&random(&mut rng, n * c * hw), n, c, hw);
            let w = packed::pack_global_depthwise(&random(&mut rng, c * hw), c, hw);
            let b = packed::pad_channels(&random(&mut rng, c));
            let mut want = vec![0.0; n * cp];
            scalar_packed::global_depthwise_packed(n, c, hw, &x, &w, &b, &mut want);
            let mut got = vec![f32::NAN; n * cp];
            (k.global_depthwise_packed)(n, c, hw, &x, &w, &b, &mut got);
            assert_close(
                &format!("{name} global depthwise {n} {c} {hw}"),
                &got,
                &want,
            );
        }
        for (n, kk, m) in [(1, 256, 128), (7, 33, 20), (9, 5, 16)] {
            let x = random(&mut rng, n * kk);
            let w = random(&mut rng, m * kk);
            let b = random(&mut rng, m);
            let mut want = vec![0.0; n * m];
            scalar::linear(n, kk, m, &x, &w, Some(&b), &mut want);
            let mut got = vec![f32::NAN; n * m];
            (k.linear)(n, kk, m, &x, &w, Some(&b), &mut got);
            assert_close(&format!("{name} linear {n} {kk} {m}"), &got, &want);
        }
    }
}

/// A student with non-trivial BN statistics and PReLU slopes, so folding and the epilogues
/// are exercised (a fresh init has identity BN and equal slopes).
fn perturbed_student(resolution: usize, seed: u64) -> StudentParams {
    let mut p = StudentParams::random(StudentInfo::new(resolution).unwrap(), seed);
    let mut rng = Rng::new(seed + 100);
    for (name, t) in p.tensors.iter_mut() {
        if name.ends_with("running_var") {
            t.data_mut()
                .iter_mut()
                .for_each(|v| *v = rng.range(0.5, 2.0));
        } else if name.ends_with("running_mean") || name.ends_with("bn.bias") {
            t.data_mut()
                .iter_mut()
                .for_each(|v| *v = rng.range(-0.2, 0.2));
        } else if name.ends_with("prelu.weight") {
            t.data_mut()
                .iter_mut()
                .for_each(|v| *v = rng.range(0.0, 0.5));
        }
    }
    p
}

#[test]
fn student_on_every_isa_matches_the_scalar_reference_network() {
    // Batch 9 crosses chunk boundaries (FACES_PER_CHUNK = 4); 13×13 gives odd map sides.
    // Kept small: this test also runs under qemu for NEON.
    let scalar_k = Kernels::scalar();
    for (resolution, batches) in [(16usize, &[1usize, 9][..]), (13, &[3][..])] {
        let net = perturbed_student(resolution, 7).fold().unwrap();
        let mut rng = Rng::new(resolution as u64);
        for &n in batches {
            let face = 3 * resolution * resolution;
            let x =
                Tensor::new(&[n, 3, resolution, resolution], random(&mut rng, n * face)).unwrap();
            let want = net.forward_reference(&scalar_k, &x).unwrap();
            let mut tables = Kernels::fast_tables();
            if n <= 3 {
                tables.push(scalar_k); // the scalar packed path (slow: small batches only)
            }
            for k in &tables {
                let got = net.forward_threads(k, &x, 1).unwrap();
                assert_eq!(got.shape(), &[n, 128]);
                let worst = max_abs_diff(got.data(), want.data());
                assert!(
                    worst <= 1e-5,
                    "{} student r={resolution} n={n}: max difference {worst}",
                    k.isa.name()
                );
                if n <= 3 {
                    // The unfused path on the fast table's general entries agrees too.
                    let via_ops = net.forward_reference(k, &x).unwrap();
                    let worst = max_abs_diff(via_ops.data(), want.data());
                    assert!(worst <= 1e-5, "{} reference path: {worst}", k.isa.name());
                }
            }
        }
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
}

#[test]
fn thread_count_does_not_change_the_embeddings() {
    let k = Kernels::best();
    let net = perturbed_student(16, 9).fold().unwrap();
    let mut rng = Rng::new(5);
    let n = 37;
    let x = Tensor::new(&[n, 3, 16, 16], random(&mut rng, n * 768)).unwrap();
    let one = net.forward_threads(&k, &x, 1).unwrap();
    for t in [2, 3, 64] {
        assert_eq!(net.forward_threads(&k, &x, t).unwrap(), one, "{t} threads");
    }
    assert!(net.forward_threads(&k, &x, 0).is_err());
    let empty = Tensor::zeros(&[0, 3, 16, 16]);
    assert_eq!(net.forward(&k, &empty).unwrap().shape(), &[0, 128]);
}

// ---- backward kernels (training) ----
//
// Tolerance for sums (conv gradients, PReLU slope, batch-norm γ/β gradients): the fast kernels
// sum in another order than the reference, so we bound each element's error by its sum of
// absolute terms: `|fast − ref| ≤ 1e-5 · Σ|terms|`, with `Σ|terms|` computed by the scalar
// reference on the absolute values of the inputs (f32 rounding of a k-term sum is at most
// k·2⁻²⁴·Σ|terms|, and typically √k·2⁻²⁴; the sums here have ≤ 1,300 terms). Elementwise
// outputs (PReLU dx, batch-norm y and dx) use `assert_close` above.

fn abs(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x.abs()).collect()
}

fn assert_close_to_magnitude(what: &str, got: &[f32], want: &[f32], magnitude: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, ((g, w), m)) in got.iter().zip(want).zip(magnitude).enumerate() {
        let tol = 1e-5 * m;
        assert!(
            (g - w).abs() <= tol,
            "{what}: index {i}: got {g}, want {w} (tolerance {tol} = 1e-5 · Σ|terms|)"
        );
    }
}

/// Pointwise geometries `(n, c_in, h, w, c_out)`: channels and pixel counts off the vector
/// width, batch 1 and odd batches, and the student's 16×16 / 8×8 / 4×4 maps.
fn pointwise_backward_cases() -> Vec<ConvGeom> {
    [
        (1, 17, 5, 3, 33),
        (3, 40, 4, 4, 24),
        (5, 7, 3, 7, 9),
        (2, 32, 16, 16, 16),
        (1, 64, 8, 8, 128),
        (3, 1, 1, 1, 1),
        (1, 130, 2, 3, 19),
    ]
    .into_iter()
    .map(|(n, ci, h, w, co)| ConvGeom::square(n, ci, h, w, co, 1, 1, 0, 1))
    .collect()
}

#[test]
fn pointwise_backward_matches_scalar() {
    let mut rng = Rng::new(51);
    for k in Kernels::fast_tables() {
        for g in pointwise_backward_cases() {
            let x = random(&mut rng, g.input_len());
            let w = random(&mut rng, g.weight_len());
            let dy = random(&mut rng, g.output_len());
            let what = format!("{} pointwise backward {g:?}", k.isa.name());

            let mut want = vec![0.0; g.input_len()];
            let mut mag = vec![0.0; g.input_len()];
            scalar::pointwise_backward_data::<f32>(
                &g,
                ConvDataGrad {
                    dy: &dy,
                    w: &w,
                    dx: &mut want,
                },
            );
            scalar::pointwise_backward_data::<f32>(
                &g,
                ConvDataGrad {
                    dy: &abs(&dy),
                    w: &abs(&w),
                    dx: &mut mag,
                },
            );
            let mut got = vec![f32::NAN; g.input_len()];
            (k.pointwise_backward_data)(
                &g,
                ConvDataGrad {
                    dy: &dy,
                    w: &w,
                    dx: &mut got,
                },
            );
            assert_close_to_magnitude(&format!("{what}: dx"), &got, &want, &mag);

            let mut want = vec![0.0; g.weight_len()];
            let mut mag = vec![0.0; g.weight_len()];
            scalar::pointwise_backward_weight::<f32>(
                &g,
                ConvWeightGrad {
                    x: &x,
                    dy: &dy,
                    dw: &mut want,
                },
            );
            scalar::pointwise_backward_weight::<f32>(
                &g,
                ConvWeightGrad {
                    x: &abs(&x),
                    dy: &abs(&dy),
                    dw: &mut mag,
                },
            );
            let mut got = vec![f32::NAN; g.weight_len()];
            (k.pointwise_backward_weight)(
                &g,
                ConvWeightGrad {
                    x: &x,
                    dy: &dy,
                    dw: &mut got,
                },
            );
            assert_close_to_magnitude(&format!("{what}: dw"), &got, &want, &mag);
        }
    }
}

/// Depthwise geometries: 3×3 pad 1 at stride 1 and 2 (the fast path) on odd and even sizes,
/// channel counts off 16, batch 1 and odd; then shapes that must fall back to the reference.
fn depthwise_backward_cases() -> Vec<ConvGeom> {
    let mut v: Vec<ConvGeom> = [
        (1, 19, 7, 9, 1),
        (3, 32, 8, 5, 2),
        (2, 5, 9, 9, 2),
        (1, 33, 16, 16, 1),
        (3, 17, 4, 4, 2),
        (5, 16, 8, 8, 1),
        (1, 3, 1, 1, 1),
        (2, 48, 16, 16, 2),
        (1, 7, 2, 3, 2),
    ]
    .into_iter()
    .map(|(n, c, h, w, s)| ConvGeom::square(n, c, h, w, c, 3, s, 1, c))
    .collect();
    let mut odd = ConvGeom::square(1, 21, 7, 6, 21, 5, 1, 2, 21);
    odd.kw = 3;
    odd.pad_l = 1;
    odd.pad_r = 1;
    v.push(odd);
    v.push(ConvGeom::square(3, 9, 6, 6, 9, 3, 1, 0, 9));
    let mut asym = ConvGeom::square(1, 18, 8, 8, 18, 3, 2, 1, 18);
    asym.pad_b = 0;
    v.push(asym);
    v
}

#[test]
fn depthwise_backward_matches_scalar() {
    let mut rng = Rng::new(52);
    for k in Kernels::fast_tables() {
        for g in depthwise_backward_cases() {
            let x = random(&mut rng, g.input_len());
            let w = random(&mut rng, g.weight_len());
            let dy = random(&mut rng, g.output_len());
            let what = format!("{} depthwise backward {g:?}", k.isa.name());

            let mut want = vec![0.0; g.input_len()];
            let mut mag = vec![0.0; g.input_len()];
            scalar::depthwise_backward_data::<f32>(
                &g,
                ConvDataGrad {
                    dy: &dy,
                    w: &w,
                    dx: &mut want,
                },
            );
            scalar::depthwise_backward_data::<f32>(
                &g,
                ConvDataGrad {
                    dy: &abs(&dy),
                    w: &abs(&w),
                    dx: &mut mag,
                },
            );
            let mut got = vec![f32::NAN; g.input_len()];
            (k.depthwise_backward_data)(
                &g,
                ConvDataGrad {
                    dy: &dy,
                    w: &w,
                    dx: &mut got,
                },
            );
            assert_close_to_magnitude(&format!("{what}: dx"), &got, &want, &mag);

            let mut want = vec![0.0; g.weight_len()];
            let mut mag = vec![0.0; g.weight_len()];
            scalar::depthwise_backward_weight::<f32>(
                &g,
                ConvWeightGrad {
                    x: &x,
                    dy: &dy,
                    dw: &mut want,
                },
            );
            scalar::depthwise_backward_weight::<f32>(
                &g,
                ConvWeightGrad {
                    x: &abs(&x),
                    dy: &abs(&dy),
                    dw: &mut mag,
                },
            );
            let mut got = vec![f32::NAN; g.weight_len()];
            (k.depthwise_backward_weight)(
                &g,
                ConvWeightGrad {
                    x: &x,
                    dy: &dy,
                    dw: &mut got,
                },
            );
            assert_close_to_magnitude(&format!("{what}: dw"), &got, &want, &mag);
        }
    }
}

/// `(n, c, hw)` for the per-channel kernels: planes off and on the vector width.
const CHANNEL_CASES: [(usize, usize, usize); 6] = [
    (1, 3, 7),
    (3, 17, 16),
    (2, 5, 37),
    (5, 16, 64),
    (1, 1, 1),
    (3, 32, 256),
];

#[test]
fn prelu_backward_matches_scalar() {
    let mut rng = Rng::new(53);
    for k in Kernels::fast_tables() {
        for (n, c, hw) in CHANNEL_CASES {
            let len = n * c * hw;
            let mut x = random(&mut rng, len);
            // Exact zeros take the non-negative branch in the reference.
            for v in x.iter_mut().step_by(5) {
                *v = 0.0;
            }
            let alpha = random(&mut rng, c);
            let dy = random(&mut rng, len);
            let what = format!("{} prelu backward n={n} c={c} hw={hw}", k.isa.name());
            let (mut want_dx, mut want_da) = (vec![0.0; len], vec![0.0; c]);
            scalar::prelu_backward::<f32>(n, c, hw, &x, &alpha, &dy, &mut want_dx, &mut want_da);
            let (mut scratch, mut mag) = (vec![0.0; len], vec![0.0; c]);
            let neg_abs_x: Vec<f32> = x.iter().map(|v| -v.abs()).collect();
            // With x ≤ 0 everywhere the slope gradient is Σ dy·x over x < 0: its terms' sum of
            // absolute values is the reference on (−|x|, −|dy|).
            let neg_abs_dy: Vec<f32> = dy.iter().map(|v| -v.abs()).collect();
            scalar::prelu_backward::<f32>(
                n,
                c,
                hw,
                &neg_abs_x,
                &alpha,
                &neg_abs_dy,
                &mut scratch,
                &mut mag,
            );
            let (mut dx, mut da) = (vec![f32::NAN; len], vec![f32::NAN; c]);
            (k.prelu_backward)(n, c, hw, &x, &alpha, &dy, &mut dx, &mut da);
            // dx is one product per element: the same rounding as the reference.
            assert_eq!(dx, want_dx, "{what}: dx");
            assert_close_to_magnitude(&format!("{what}: dalpha"), &da, &want_da, &mag);
        }
    }
}

#[test]
fn prelu_forward_matches_scalar_exactly() {
    let mut rng = Rng::new(57);
    for k in Kernels::fast_tables() {
        for (n, c, hw) in CHANNEL_CASES {
            let mut x = random(&mut rng, n * c * hw);
            for v in x.iter_mut().step_by(7) {
                *v = 0.0;
            }
            let alpha = random(&mut rng, c);
            let mut want = x.clone();
            scalar::prelu(n, c, hw, &mut want, &alpha);
            let mut got = x.clone();
            (k.prelu)(n, c, hw, &mut got, &alpha);
            // One comparison and one product per element: the same rounding as the reference.
            assert_eq!(got, want, "{} prelu n={n} c={c} hw={hw}", k.isa.name());
        }
    }
}

#[test]
fn conv2d_backward_weight_matches_scalar_on_every_geometry() {
    let mut rng = Rng::new(58);
    // The stem of the 16, 12 and 8 px students, plus every geometry of `conv_cases` (grouped
    // ones take the reference, dense ones the im2col route).
    let mut cases = vec![
        ConvGeom::square(5, 3, 16, 16, 32, 3, 1, 1, 1),
        ConvGeom::square(3, 3, 12, 12, 32, 3, 1, 1, 1),
        ConvGeom::square(2, 3, 8, 8, 32, 3, 1, 1, 1),
    ];
    cases.extend(conv_cases());
    for k in Kernels::fast_tables() {
        for g in &cases {
            let x = random(&mut rng, g.input_len());
            let dy = random(&mut rng, g.n * g.c_out * g.out_h() * g.out_w());
            let what = format!("{} conv weight gradient {g:?}", k.isa.name());
            let mut want = vec![0.0; g.weight_len()];
            let mut mag = vec![0.0; g.weight_len()];
            scalar::conv2d_backward_weight::<f32>(
                g,
                ConvWeightGrad {
                    x: &x,
                    dy: &dy,
                    dw: &mut want,
                },
            );
            scalar::conv2d_backward_weight::<f32>(
                g,
                ConvWeightGrad {
                    x: &abs(&x),
                    dy: &abs(&dy),
                    dw: &mut mag,
                },
            );
            let mut got = vec![f32::NAN; g.weight_len()];
            (k.conv2d_backward_weight)(
                g,
                ConvWeightGrad {
                    x: &x,
                    dy: &dy,
                    dw: &mut got,
                },
            );
            assert_close_to_magnitude(&what, &got, &want, &mag);
        }
    }
}

#[test]
fn fused_batch_norm_prelu_matches_scalar() {
    let mut rng = Rng::new(59);
    let eps = 1e-5;
    for k in Kernels::fast_tables() {
        for (n, c, hw) in CHANNEL_CASES {
            let len = n * c * hw;
            let x: Vec<f32> = random(&mut rng, len).iter().map(|v| v + 0.3).collect();
            let gamma: Vec<f32> = random(&mut rng, c).iter().map(|v| v + 1.5).collect();
            let beta = random(&mut rng, c);
            let alpha = random(&mut rng, c);
            let what = format!("{} batch-norm + prelu n={n} c={c} hw={hw}", k.isa.name());
            let mut want = (vec![0.0; len], vec![0.0; len], vec![0.0; c], vec![0.0; c]);
            scalar::batch_norm_prelu_train_forward(BatchNormPreluForward {
                n,
                c,
                hw,
                x: &x,
                gamma: &gamma,
                beta: &beta,
                alpha: &alpha,
                eps,
                y: &mut want.0,
                z: &mut want.1,
                mean: &mut want.2,
                var: &mut want.3,
            });
            let nan = vec![f32::NAN; len];
            let mut got = (nan.clone(), nan, vec![f32::NAN; c], vec![f32::NAN; c]);
            (k.batch_norm_prelu_train_forward)(BatchNormPreluForward {
                n,
                c,
                hw,
                x: &x,
                gamma: &gamma,
                beta: &beta,
                alpha: &alpha,
                eps,
                y: &mut got.0,
                z: &mut got.1,
                mean: &mut got.2,
                var: &mut got.3,
            });
            assert_close(&format!("{what}: y"), &got.0, &want.0);
            assert_close(&format!("{what}: mean"), &got.2, &want.2);
            assert_close(&format!("{what}: var"), &got.3, &want.3);
            // z is exactly the reference PReLU of the kernel's own y.
            let mut z = got.0.clone();
            scalar::prelu(n, c, hw, &mut z, &alpha);
            assert_eq!(got.1, z, "{what}: z");
            // ... and the unfused kernel gives the same y.
            let (mut y, mut m, mut v) = (vec![0.0; len], vec![0.0; c], vec![0.0; c]);
            (k.batch_norm_train_forward)(n, c, hw, &x, &gamma, &beta, eps, &mut y, &mut m, &mut v);
            assert_eq!(got.0, y, "{what}: y against the unfused kernel");
        }
    }
}

#[test]
fn batch_norm_train_matches_scalar() {
    let mut rng = Rng::new(54);
    let eps = 1e-5;
    for k in Kernels::fast_tables() {
        for (n, c, hw) in CHANNEL_CASES {
            let len = n * c * hw;
            // An offset mean so the two-pass variance matters.
            let x: Vec<f32> = random(&mut rng, len).iter().map(|v| v + 0.7).collect();
            let gamma: Vec<f32> = random(&mut rng, c).iter().map(|v| v + 1.5).collect();
            let beta = random(&mut rng, c);
            let dy = random(&mut rng, len);
            let what = format!("{} batch-norm train n={n} c={c} hw={hw}", k.isa.name());

            let (mut wy, mut wm, mut wv) = (vec![0.0; len], vec![0.0; c], vec![0.0; c]);
            scalar::batch_norm_train_forward::<f32>(
                n, c, hw, &x, &gamma, &beta, eps, &mut wy, &mut wm, &mut wv,
            );
            let (mut y, mut m, mut v) = (vec![f32::NAN; len], vec![f32::NAN; c], vec![0.0; c]);
            (k.batch_norm_train_forward)(n, c, hw, &x, &gamma, &beta, eps, &mut y, &mut m, &mut v);
            assert_close(&format!("{what}: y"), &y, &wy);
            assert_close(&format!("{what}: mean"), &m, &wm);
            assert_close(&format!("{what}: var"), &v, &wv);

            let (mut wdx, mut wdg, mut wdb) = (vec![0.0; len], vec![0.0; c], vec![0.0; c]);
            scalar::batch_norm_train_backward::<f32>(BatchNormBackward {
                n,
                c,
                hw,
                x: &x,
                dy: &dy,
                gamma: &gamma,
                mean: &wm,
                var: &wv,
                eps,
                dx: &mut wdx,
                dgamma: &mut wdg,
                dbeta: &mut wdb,
            });
            let (mut dx, mut dg, mut db) = (vec![f32::NAN; len], vec![0.0; c], vec![0.0; c]);
            (k.batch_norm_train_backward)(BatchNormBackward {
                n,
                c,
                hw,
                x: &x,
                dy: &dy,
                gamma: &gamma,
                mean: &wm,
                var: &wv,
                eps,
                dx: &mut dx,
                dgamma: &mut dg,
                dbeta: &mut db,
            });
            assert_close(&format!("{what}: dx"), &dx, &wdx);
            // Σ|dy| and Σ|dy·x̂| per channel bound the γ and β gradients' rounding.
            let (mut mag_g, mut mag_b) = (vec![0.0f32; c], vec![0.0f32; c]);
            for b in 0..n {
                for ch in 0..c {
                    let inv = 1.0 / (wv[ch] + eps).sqrt();
                    for i in (b * c + ch) * hw..(b * c + ch + 1) * hw {
                        mag_b[ch] += dy[i].abs();
                        mag_g[ch] += (dy[i] * (x[i] - wm[ch]) * inv).abs();
                    }
                }
            }
            assert_close_to_magnitude(&format!("{what}: dgamma"), &dg, &wdg, &mag_g);
            assert_close_to_magnitude(&format!("{what}: dbeta"), &db, &wdb, &mag_b);
        }
    }
}

// ---- imported-graph plans (model::plan): packed once, fused, blocked between convs ----

/// A random graph that exercises every plan route: a scalar affine on the NCHW input, a direct
/// conv fused with PReLU, a strided asymmetric-padded depthwise conv fused with ReLU, a
/// pointwise conv read twice (so not fused), blocked PReLU, Add and per-channel affine, a
/// grouped conv (reference route) fused with ReLU, a max-pool (NCHW fallback), a pointwise conv
/// with ReLU, flatten and a linear layer; the pointwise output is also a graph output.
fn random_plan_graph(seed: u64) -> bridgeface::model::graph::Graph {
    use bridgeface::model::graph::{Graph, GraphInput, GraphSpec, Node, Op};
    use std::collections::BTreeMap;
    let mut rng = Rng::new(seed);
    let mut params = BTreeMap::new();
    let mut put = |name: &str, shape: &[usize], scale: f32| {
        let n: usize = shape.iter().product();
        let data = (0..n).map(|_| rng.range(-1.0, 1.0) * scale).collect();
        params.insert(name.to_string(), Tensor::new(shape, data).unwrap());
    };
    put("aff.s", &[1], 1.0);
    put("aff.t", &[1], 1.0);
    put("c1.w", &[19, 5, 3, 3], 0.15);
    put("c1.b", &[19], 1.0);
    put("p1", &[19], 0.5);
    put("dw.w", &[19, 1, 3, 3], 0.3);
    put("dw.b", &[19], 1.0);
    put("pw.w", &[21, 19, 1, 1], 0.25);
    put("p2", &[21], 0.5);
    put("aff2.s", &[21], 1.0);
    put("aff2.t", &[21], 1.0);
    put("gc.w", &[6, 7, 3, 3], 0.1);
    put("gc.b", &[6], 1.0);
    put("pw2.w", &[17, 6, 1, 1], 0.4);
    put("pw2.b", &[17], 1.0);
    // 9×7 → depthwise stride 2, pads (1,0,1,1) → 5×3 → max-pool 2/2 → 2×1.
    put("fc.w", &[10, 17 * 2], 0.1);
    put("fc.b", &[10], 1.0);
    let node = |name: &str, op: Op, inputs: &[&str], output: &str| Node {
        name: name.into(),
        op,
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        output: output.into(),
    };
    let conv =
        |w: &str, b: Option<&str>, stride: usize, pads: [usize; 4], groups: usize| Op::Conv {
            weight: w.into(),
            bias: b.map(str::to_string),
            stride: [stride, stride],
            pads,
            groups,
        };
    let nodes = vec![
        node(
            "aff",
            Op::Affine {
                scale: "aff.s".into(),
                shift: "aff.t".into(),
            },
            &["x"],
            "a",
        ),
        node("c1", conv("c1.w", Some("c1.b"), 1, [1; 4], 1), &["a"], "b0"),
        node("p1", Op::PRelu { slope: "p1".into() }, &["b0"], "b"),
        node(
            "dw",
            conv("dw.w", Some("dw.b"), 2, [1, 0, 1, 1], 19),
            &["b"],
            "c0",
        ),
        node("r1", Op::Relu, &["c0"], "c"),
        node("pw", conv("pw.w", None, 1, [0; 4], 1), &["c"], "d"),
        node("p2", Op::PRelu { slope: "p2".into() }, &["d"], "e"),
        node("add", Op::Add, &["e", "d"], "f"),
        node(
            "aff2",
            Op::Affine {
                scale: "aff2.s".into(),
                shift: "aff2.t".into(),
            },
            &["f"],
            "g",
        ),
        node("gc", conv("gc.w", Some("gc.b"), 1, [1; 4], 3), &["g"], "h0"),
        node("r2", Op::Relu, &["h0"], "h"),
        node(
            "mp",
            Op::MaxPool {
                kernel: [2, 2],
                stride: [2, 2],
                pads: [0; 4],
            },
            &["h"],
            "i",
        ),
        node(
            "pw2",
            conv("pw2.w", Some("pw2.b"), 1, [0; 4], 1),
            &["i"],
            "j0",
        ),
        node("r3", Op::Relu, &["j0"], "j"),
        node("fl", Op::Flatten { axis: 1 }, &["j"], "k"),
        node(
            "fc",
            Op::Linear {
                weight: "fc.w".into(),
                bias: Some("fc.b".into()),
            },
            &["k"],
            "out",
        ),
    ];
    Graph {
        spec: GraphSpec {
            inputs: vec![GraphInput {
                name: "x".into(),
                shape: vec![None, Some(5), Some(9), Some(7)],
            }],
            outputs: vec!["out".into(), "d".into()],
            nodes,
        },
        params,
        metadata: BTreeMap::new(),
    }
}

#[test]
fn graph_plan_matches_the_graph_executor_on_every_isa() {
    use bridgeface::model::plan::GraphPlan;
    let scalar = Kernels::scalar();
    for seed in [1u64, 2] {
        let g = random_plan_graph(seed);
        let plan = GraphPlan::new(g.clone()).unwrap();
        for n in [1usize, 3] {
            let mut rng = Rng::new(seed * 10 + n as u64);
            let x = Tensor::new(&[n, 5, 9, 7], random(&mut rng, n * 5 * 9 * 7)).unwrap();
            let want = g.run(&scalar, vec![("x".into(), x.clone())]).unwrap();
            assert_eq!(want[0].shape(), [n, 10]);
            assert_eq!(want[1].shape(), [n, 21, 5, 3]);
            let mut tables = vec![scalar];
            tables.extend(Kernels::fast_tables());
            for k in &tables {
                let got = plan.run(k, vec![("x".into(), x.clone())]).unwrap();
                assert_eq!(got.len(), 2);
                for (gt, wt) in got.iter().zip(&want) {
                    assert_eq!(gt.shape(), wt.shape());
                    let what = format!("plan {} seed {seed} batch {n}", k.isa.name());
                    assert_close(&what, gt.data(), wt.data());
                }
            }
        }
    }
    // Several runs with the per-sample tail (the final linear) batched give, row for row,
    // what separate runs give; an intermediate output ("d") is stacked too.
    for seed in [1u64, 2] {
        let plan = GraphPlan::new(random_plan_graph(seed)).unwrap();
        assert!(plan.batched_tail().is_some());
        let mut tables = vec![scalar];
        tables.extend(Kernels::fast_tables());
        for k in &tables {
            let mut rng = Rng::new(seed + 40);
            let xs: Vec<Tensor> = [1usize, 3, 2]
                .iter()
                .map(|&n| Tensor::new(&[n, 5, 9, 7], random(&mut rng, n * 315)).unwrap())
                .collect();
            let runs = xs.iter().map(|x| vec![("x".into(), x.clone())]).collect();
            let got = plan.run_many(k, runs).unwrap();
            for (o, width) in [(0usize, 10usize), (1, 21 * 5 * 3)] {
                let want: Vec<f32> = xs
                    .iter()
                    .flat_map(|x| {
                        plan.run(k, vec![("x".into(), x.clone())]).unwrap()[o]
                            .data()
                            .to_vec()
                    })
                    .collect();
                assert_eq!(got[o].shape()[0], 6);
                assert_eq!(got[o].numel(), 6 * width);
                assert_eq!(
                    got[o].data(),
                    &want[..],
                    "run_many {} seed {seed} output {o}",
                    k.isa.name()
                );
            }
        }
    }
    // Wrong inputs are errors, not panics.
    let plan = GraphPlan::new(random_plan_graph(1)).unwrap();
    let bad = Tensor::new(&[1, 4, 9, 7], vec![0.0; 4 * 9 * 7]).unwrap();
    assert!(plan
        .run_many(&scalar, vec![vec![("x".into(), bad)]])
        .is_err());
    assert!(plan.run_many(&scalar, vec![]).is_err());
    let bad = Tensor::new(&[1, 4, 9, 7], vec![0.0; 4 * 9 * 7]).unwrap();
    assert!(plan.run(&scalar, vec![("x".into(), bad)]).is_err());
    assert!(plan.run(&scalar, vec![]).is_err());
    let mut broken = random_plan_graph(1);
    broken.params.remove("pw.w");
    assert!(GraphPlan::new(broken).is_err());
}
