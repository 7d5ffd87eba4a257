//! The BridgeNet student: parameter budget, BN folding against an unfolded reference forward,
//! determinism, unit-norm output at every supported resolution, and load/save checks.

use bridgeface::cpu::{scalar, ConvGeom, Kernels};
use bridgeface::model::student::{
    self, parameter_shapes, StudentInfo, StudentNet, StudentParams, BLOCKS, BN_EPS,
};
use bridgeface::rng::Rng;
use bridgeface::{Error, Tensor};

fn random_input(rng: &mut Rng, n: usize, r: usize) -> Tensor {
    Tensor::new(
        &[n, 3, r, r],
        (0..n * 3 * r * r).map(|_| rng.range(-1.0, 1.0)).collect(),
    )
    .unwrap()
}

/// Random weights with non-trivial BN statistics and PReLU slopes, so folding is exercised.
fn perturbed_params(r: usize, seed: u64) -> StudentParams {
    let mut p = StudentParams::random(StudentInfo::new(r).unwrap(), seed);
    let mut rng = Rng::new(seed + 100);
    for (name, t) in p.tensors.iter_mut() {
        for v in t.data_mut() {
            if name.ends_with("running_var") {
                *v = rng.range(0.5, 2.0);
            } else if name.ends_with("running_mean") || name.ends_with("bn.bias") {
                *v = rng.range(-0.3, 0.3);
            } else if name.ends_with("bn.weight") {
                *v = rng.range(0.5, 1.5);
            } else if name.ends_with("prelu.weight") {
                *v = rng.range(0.0, 0.5);
            }
        }
    }
    p
}

/// conv → BN → (PReLU), unfolded, with the scalar kernels.
fn conv_bn(
    p: &StudentParams,
    prefix: &str,
    x: &Tensor,
    stride: usize,
    pad: usize,
    groups: usize,
    prelu: bool,
) -> Tensor {
    let w = p.get(&format!("{prefix}.conv.weight")).unwrap();
    let [n, c_in, h, wd] = x.dims4("x").unwrap();
    let s = w.shape();
    let g = ConvGeom {
        kh: s[2],
        kw: s[3],
        ..ConvGeom::square(n, c_in, h, wd, s[0], 1, stride, pad, groups)
    };
    let mut conv = vec![0.0; g.output_len()];
    scalar::conv2d(&g, x.data(), w.data(), None, &mut conv);
    let hw = g.out_h() * g.out_w();
    let bn = |k: &str| p.get(&format!("{prefix}.bn.{k}")).unwrap().data().to_vec();
    let mut y = vec![0.0; conv.len()];
    scalar::batch_norm(
        n,
        s[0],
        hw,
        &conv,
        &bn("weight"),
        &bn("bias"),
        &bn("running_mean"),
        &bn("running_var"),
        BN_EPS,
        &mut y,
    );
    if prelu {
        scalar::prelu(
            n,
            s[0],
            hw,
            &mut y,
            p.get(&format!("{prefix}.prelu.weight")).unwrap().data(),
        );
    }
    Tensor::new(&[n, s[0], g.out_h(), g.out_w()], y).unwrap()
}

fn unfolded_forward(p: &StudentParams, x: &Tensor) -> Vec<f32> {
    let mut y = conv_bn(p, "stem", x, 1, 1, 1, true);
    for b in BLOCKS {
        let mid = conv_bn(p, &format!("{}.dw", b.name), &y, b.stride, 1, b.c_in, true);
        let mut out = conv_bn(p, &format!("{}.pw", b.name), &mid, 1, 0, 1, true);
        if b.residual {
            scalar::add(out.data_mut(), y.data());
        }
        y = out;
    }
    let pooled = conv_bn(p, "head.gdc", &y, 1, 0, 256, false);
    let n = x.shape()[0];
    let mut emb = vec![0.0; n * 128];
    scalar::linear(
        n,
        256,
        128,
        pooled.data(),
        p.get("head.linear.weight").unwrap().data(),
        None,
        &mut emb,
    );
    let bn = |k: &str| p.get(&format!("head.bn.{k}")).unwrap().data().to_vec();
    let mut out = vec![0.0; emb.len()];
    scalar::batch_norm(
        n,
        128,
        1,
        &emb,
        &bn("weight"),
        &bn("bias"),
        &bn("running_mean"),
        &bn("running_var"),
        BN_EPS,
        &mut out,
    );
    scalar::l2_normalize(n, 128, &mut out);
    out
}

#[test]
fn parameter_count_and_flops_match_the_table() {
    let p = StudentParams::random(StudentInfo::new(16).unwrap(), 0);
    let total = p.parameter_count();
    assert!((190_000..=230_000).contains(&total), "{total} parameters");
    let buffers: usize = p
        .tensors
        .iter()
        .filter(|(n, _)| n.contains("running_"))
        .map(|(_, t)| t.numel())
        .sum();
    assert_eq!(
        total - buffers,
        196_672,
        "trainable parameters changed: update the README table"
    );
    let flops = 2 * student::macs_per_face(16);
    assert!(
        (7_000_000..=9_000_000).contains(&flops),
        "{flops} FLOPs at 16×16"
    );
    assert_eq!(student::final_map_side(16), 4);
    assert_eq!(student::final_map_side(8), 2);
    assert_eq!(student::final_map_side(12), 3);
}

#[test]
fn folded_forward_equals_unfolded_reference() {
    let k = Kernels::scalar();
    for (r, seed) in [(16, 1u64), (12, 2), (9, 3)] {
        let p = perturbed_params(r, seed);
        let x = random_input(&mut Rng::new(seed), 3, r);
        let got = p.fold().unwrap().forward(&k, &x).unwrap();
        let want = unfolded_forward(&p, &x);
        for (i, (g, w)) in got.data().iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() < 1e-4,
                "r={r} index {i}: folded {g} vs unfolded {w}"
            );
        }
    }
}

#[test]
fn forward_is_deterministic_unit_norm_and_batch_independent() {
    let k = Kernels::scalar();
    for r in [8, 11, 16, 24, 32] {
        let net = perturbed_params(r, 7).fold().unwrap();
        let x = random_input(&mut Rng::new(r as u64), 3, r);
        let a = net.forward(&k, &x).unwrap();
        let b = net.forward(&k, &x).unwrap();
        assert_eq!(a, b, "r={r}: two runs differ");
        assert_eq!(a.shape(), &[3, 128]);
        for i in 0..3 {
            let norm: f32 = a.row(i).iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "r={r} row {i} norm {norm}");
        }
        // Each face's embedding does not depend on the rest of the batch.
        let one = Tensor::new(&[1, 3, r, r], x.data()[3 * r * r..6 * r * r].to_vec()).unwrap();
        let single = net.forward(&k, &one).unwrap();
        for (s, b) in single.row(0).iter().zip(a.row(1)) {
            assert!((s - b).abs() < 1e-6);
        }
        // Different faces give different embeddings.
        assert!(a
            .row(0)
            .iter()
            .zip(a.row(2))
            .any(|(p, q)| (p - q).abs() > 1e-3));
    }
}

#[test]
fn wrong_input_shape_is_a_shape_error() {
    let k = Kernels::scalar();
    let net = StudentParams::random(StudentInfo::new(16).unwrap(), 0)
        .fold()
        .unwrap();
    for shape in [vec![1, 3, 12, 12], vec![1, 1, 16, 16], vec![3, 16, 16]] {
        let x = Tensor::zeros(&shape);
        assert!(
            matches!(net.forward(&k, &x), Err(Error::Shape(_))),
            "{shape:?}"
        );
    }
    assert!(matches!(
        StudentInfo::new(7),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        StudentInfo::new(33),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn save_and_load_round_trip_and_reject_foreign_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let p = perturbed_params(12, 9);
    let path = dir.join("s.safetensors");
    p.save(&path, bridgeface::weights::StoreDtype::F32).unwrap();
    let q = StudentParams::load(&path).unwrap();
    assert_eq!(q.info, p.info);
    assert_eq!(q.tensors, p.tensors);
    let x = random_input(&mut Rng::new(1), 2, 12);
    let k = Kernels::scalar();
    assert_eq!(
        StudentNet::load(&path).unwrap().forward(&k, &x).unwrap(),
        p.fold().unwrap().forward(&k, &x).unwrap()
    );

    // A file with the right tensors but another architecture name is refused.
    let mut info_meta = p.info.to_metadata();
    info_meta.insert("architecture".into(), "ResNet".into());
    let named: Vec<(String, &Tensor)> = p.tensors.iter().map(|(n, t)| (n.clone(), t)).collect();
    let foreign = dir.join("foreign.safetensors");
    bridgeface::weights::save(
        &foreign,
        &named,
        &info_meta,
        bridgeface::weights::StoreDtype::F32,
    )
    .unwrap();
    assert!(matches!(
        StudentParams::load(&foreign),
        Err(Error::Metadata { .. })
    ));

    // A NaN weight is refused rather than silently giving NaN embeddings.
    let mut bad = p.clone();
    bad.tensors.get_mut("b3.pw.conv.weight").unwrap().data_mut()[5] = f32::NAN;
    let nan_path = dir.join("nan.safetensors");
    bad.save(&nan_path, bridgeface::weights::StoreDtype::F32)
        .unwrap();
    assert!(matches!(
        StudentParams::load(&nan_path),
        Err(Error::WeightFormat { .. })
    ));

    // Every parameter named in the architecture is required.
    assert_eq!(parameter_shapes(12).len(), p.tensors.len());
}
