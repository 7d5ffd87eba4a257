//! Criterion benches for each packed kernel at the student's 16×16 shapes (one chunk of
//! faces, as `StudentNet::forward` runs them) and for the whole student, per available ISA.
use bridgeface::cpu::packed::{self, Epilogue, PointwiseShape};
use bridgeface::cpu::{
    BatchNormBackward, BatchNormPreluForward, ConvDataGrad, ConvGeom, ConvWeightGrad, Kernels,
};
use bridgeface::model::student::{StudentInfo, StudentParams, FACES_PER_CHUNK};
use bridgeface::Tensor;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;

fn kernels(c: &mut Criterion) {
    let n = FACES_PER_CHUNK;
    for k in Kernels::fast_tables() {
        let mut group = c.benchmark_group(format!("kernels/{}", k.isa.name()));
        // Pointwise: b3 (64→128 over 8×8) and b7 (256→256 over 4×4).
        for (name, c_in, c_out, side) in [("b3", 64, 128, 8), ("b7", 256, 256, 4)] {
            let s = PointwiseShape {
                pixels: n * side * side,
                c_in,
                c_out,
            };
            let x = vec![0.5f32; packed::padded(c_in) * s.pixels];
            let w = vec![0.01f32; packed::padded(c_in) * packed::padded(c_out)];
            let b = vec![0.0f32; packed::padded(c_out)];
            let a = vec![0.25f32; packed::padded(c_out)];
            let mut y = vec![0.0f32; packed::padded(c_out) * s.pixels];
            let ep = Epilogue {
                bias: &b,
                prelu: Some(&a),
                residual: None,
            };
            group.throughput(Throughput::Elements((2 * s.pixels * c_in * c_out) as u64));
            group.bench_function(
                format!("pointwise_{name}_{c_in}x{c_out}_{side}x{side}"),
                |bch| bch.iter(|| (k.pointwise_packed)(&s, black_box(&x), &w, &ep, &mut y)),
            );
        }
        // Depthwise 3×3: b1 (stride 1, 32 ch, 16×16) and b2 (stride 2, 64 ch, 16×16).
        for (name, ch, stride) in [("s1_32", 32, 1), ("s2_64", 64, 2)] {
            let g = ConvGeom::square(n, ch, 16, 16, ch, 3, stride, 1, ch);
            let x = vec![0.5f32; ch * n * 256];
            let w = vec![0.01f32; ch * 9];
            let b = vec![0.0f32; ch];
            let a = vec![0.25f32; ch];
            let mut y = vec![0.0f32; ch * n * g.out_h() * g.out_w()];
            let ep = Epilogue {
                bias: &b,
                prelu: Some(&a),
                residual: None,
            };
            group.throughput(Throughput::Elements((2 * 9 * y.len()) as u64));
            group.bench_function(format!("depthwise3x3_{name}_16x16"), |bch| {
                bch.iter(|| (k.depthwise_packed)(&g, black_box(&x), &w, &ep, &mut y))
            });
        }
        // The stem: direct 3×3, 3→32, 16×16.
        let g = ConvGeom::square(n, 3, 16, 16, 32, 3, 1, 1, 1);
        let x = vec![0.5f32; g.input_len()];
        let w = vec![0.01f32; 32 * 27];
        let b = vec![0.0f32; 32];
        let a = vec![0.25f32; 32];
        let mut y = vec![0.0f32; 32 * n * 256];
        let ep = Epilogue {
            bias: &b,
            prelu: Some(&a),
            residual: None,
        };
        group.throughput(Throughput::Elements((2 * 27 * y.len()) as u64));
        group.bench_function("direct3x3_stem_3x32_16x16", |bch| {
            bch.iter(|| (k.direct_conv_packed)(&g, black_box(&x), &w, &ep, &mut y))
        });
        // Head: global depthwise 256 × 4×4, linear 256→128.
        let x = vec![0.5f32; 256 * n * 16];
        let w = vec![0.01f32; 256 * 16];
        let b = vec![0.0f32; 256];
        let mut pooled = vec![0.0f32; n * 256];
        group.throughput(Throughput::Elements((2 * 256 * 16 * n) as u64));
        group.bench_function("global_depthwise_256_4x4", |bch| {
            bch.iter(|| (k.global_depthwise_packed)(n, 256, 16, black_box(&x), &w, &b, &mut pooled))
        });
        let w = vec![0.01f32; 256 * 128];
        let b = vec![0.0f32; 128];
        let mut emb = vec![0.0f32; n * 128];
        group.throughput(Throughput::Elements((2 * 256 * 128 * n) as u64));
        group.bench_function("linear_256x128", |bch| {
            bch.iter(|| (k.linear_packed)(n, 256, 128, black_box(&pooled), &w, &b, &mut emb))
        });
        group.finish();
    }
}

fn student(c: &mut Criterion) {
    let net = StudentParams::random(StudentInfo::new(16).unwrap(), 0)
        .fold()
        .unwrap();
    for k in Kernels::fast_tables() {
        let mut group = c.benchmark_group(format!("student16/{}", k.isa.name()));
        for batch in [1usize, 16, 256] {
            let x = Tensor::new(&[batch, 3, 16, 16], vec![0.1; batch * 768]).unwrap();
            group.throughput(Throughput::Elements(batch as u64));
            group.bench_function(format!("batch{batch}_1thread"), |bch| {
                bch.iter(|| net.forward_threads(&k, black_box(&x), 1).unwrap())
            });
        }
        group.finish();
    }
}

/// The trainer's backward kernels on NCHW at the student's 16×16 training shapes (batch 32),
/// per ISA including the scalar reference they replace.
fn backward(c: &mut Criterion) {
    let n = 32;
    for k in Kernels::available_isas()
        .into_iter()
        .map(|i| Kernels::for_isa(i).expect("available"))
    {
        let mut group = c.benchmark_group(format!("backward/{}", k.isa.name()));
        group.sample_size(10);
        // Pointwise b3 (64→128 over 8×8): data and weight gradients.
        let g = ConvGeom::square(n, 64, 8, 8, 128, 1, 1, 0, 1);
        let x = vec![0.5f32; g.input_len()];
        let w = vec![0.01f32; g.weight_len()];
        let dy = vec![0.25f32; g.output_len()];
        let (mut dx, mut dw) = (vec![0.0f32; g.input_len()], vec![0.0f32; g.weight_len()]);
        group.throughput(Throughput::Elements((2 * n * 64 * 64 * 128) as u64));
        group.bench_function("pointwise_data_b3_64x128_8x8", |bch| {
            bch.iter(|| {
                (k.pointwise_backward_data)(
                    &g,
                    ConvDataGrad {
                        dy: black_box(&dy),
                        w: &w,
                        dx: &mut dx,
                    },
                )
            })
        });
        group.bench_function("pointwise_weight_b3_64x128_8x8", |bch| {
            bch.iter(|| {
                (k.pointwise_backward_weight)(
                    &g,
                    ConvWeightGrad {
                        x: black_box(&x),
                        dy: &dy,
                        dw: &mut dw,
                    },
                )
            })
        });
        // Depthwise 3×3: stride 1 (32 ch, 16×16) and stride 2 (64 ch, 16×16).
        for (name, ch, stride) in [("s1_32", 32, 1), ("s2_64", 64, 2)] {
            let g = ConvGeom::square(n, ch, 16, 16, ch, 3, stride, 1, ch);
            let x = vec![0.5f32; g.input_len()];
            let w = vec![0.01f32; g.weight_len()];
            let dy = vec![0.25f32; g.output_len()];
            let (mut dx, mut dw) = (vec![0.0f32; g.input_len()], vec![0.0f32; g.weight_len()]);
            group.throughput(Throughput::Elements((2 * 9 * g.output_len()) as u64));
            group.bench_function(format!("depthwise_data_{name}_16x16"), |bch| {
                bch.iter(|| {
                    (k.depthwise_backward_data)(
                        &g,
                        ConvDataGrad {
                            dy: black_box(&dy),
                            w: &w,
                            dx: &mut dx,
                        },
                    )
                })
            });
            group.bench_function(format!("depthwise_weight_{name}_16x16"), |bch| {
                bch.iter(|| {
                    (k.depthwise_backward_weight)(
                        &g,
                        ConvWeightGrad {
                            x: black_box(&x),
                            dy: &dy,
                            dw: &mut dw,
                        },
                    )
                })
            });
        }
        // PReLU and training batch-norm on 64 channels of 8×8.
        let (ch, hw) = (64, 64);
        let len = n * ch * hw;
        let x: Vec<f32> = (0..len).map(|i| (i % 7) as f32 - 3.0).collect();
        let dy = vec![0.25f32; len];
        let (gamma, beta) = (vec![1.0f32; ch], vec![0.0f32; ch]);
        let (mut y, mut dx) = (vec![0.0f32; len], vec![0.0f32; len]);
        let (mut m, mut v, mut dg, mut db) = (
            vec![0.0f32; ch],
            vec![0.0f32; ch],
            vec![0.0f32; ch],
            vec![0.0f32; ch],
        );
        group.throughput(Throughput::Elements(len as u64));
        group.bench_function("prelu_backward_64_8x8", |bch| {
            bch.iter(|| (k.prelu_backward)(n, ch, hw, black_box(&x), &gamma, &dy, &mut dx, &mut dg))
        });
        group.bench_function("batch_norm_train_forward_64_8x8", |bch| {
            bch.iter(|| {
                (k.batch_norm_train_forward)(
                    n,
                    ch,
                    hw,
                    black_box(&x),
                    &gamma,
                    &beta,
                    1e-5,
                    &mut y,
                    &mut m,
                    &mut v,
                )
            })
        });
        let mut z = vec![0.0f32; len];
        group.bench_function("batch_norm_prelu_train_forward_64_8x8", |bch| {
            bch.iter(|| {
                (k.batch_norm_prelu_train_forward)(BatchNormPreluForward {
                    n,
                    c: ch,
                    hw,
                    x: black_box(&x),
                    gamma: &gamma,
                    beta: &beta,
                    alpha: &beta,
                    eps: 1e-5,
                    y: &mut y,
                    z: &mut z,
                    mean: &mut m,
                    var: &mut v,
                })
            })
        });
        group.bench_function("prelu_forward_64_8x8", |bch| {
            bch.iter(|| (k.prelu)(n, ch, hw, black_box(&mut z), &gamma))
        });
        // The trainer's NCHW pointwise forward (b3: 64→128 over 8×8) and the stem's weight
        // gradient (im2col onto the pointwise kernel, 3→32 over 16×16).
        let g = ConvGeom::square(n, 64, 8, 8, 128, 1, 1, 0, 1);
        let (xp, wp) = (vec![0.5f32; g.input_len()], vec![0.01f32; g.weight_len()]);
        let mut yp = vec![0.0f32; g.output_len()];
        group.throughput(Throughput::Elements((2 * g.output_len() * 64) as u64));
        group.bench_function("pointwise_forward_nchw_64x128_8x8", |bch| {
            bch.iter(|| (k.conv2d)(&g, black_box(&xp), &wp, None, &mut yp))
        });
        let g = ConvGeom::square(n, 3, 16, 16, 32, 3, 1, 1, 1);
        let (xs, dys) = (vec![0.5f32; g.input_len()], vec![0.25f32; g.output_len()]);
        let mut dws = vec![0.0f32; g.weight_len()];
        group.throughput(Throughput::Elements((2 * g.output_len() * 27) as u64));
        group.bench_function("conv_weight_stem_3x32_16x16", |bch| {
            bch.iter(|| {
                (k.conv2d_backward_weight)(
                    &g,
                    ConvWeightGrad {
                        x: black_box(&xs),
                        dy: &dys,
                        dw: &mut dws,
                    },
                )
            })
        });
        group.throughput(Throughput::Elements(len as u64));
        group.bench_function("batch_norm_train_backward_64_8x8", |bch| {
            bch.iter(|| {
                (k.batch_norm_train_backward)(BatchNormBackward {
                    n,
                    c: ch,
                    hw,
                    x: black_box(&x),
                    dy: &dy,
                    gamma: &gamma,
                    mean: &m,
                    var: &v,
                    eps: 1e-5,
                    dx: &mut dx,
                    dgamma: &mut dg,
                    dbeta: &mut db,
                })
            })
        });
        group.finish();
    }
}

criterion_group!(benches, kernels, student, backward);
criterion_main!(benches);
