//! Criterion benches for each packed kernel at the student's 16×16 shapes (one chunk of
//! faces, as `StudentNet::forward` runs them) and for the whole student, per available ISA.
use bridgeface::cpu::packed::{self, Epilogue, PointwiseShape};
use bridgeface::cpu::{ConvGeom, Isa, Kernels};
use bridgeface::model::student::{StudentInfo, StudentParams, FACES_PER_CHUNK};
use bridgeface::Tensor;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;

fn fast_tables() -> Vec<Kernels> {
    Kernels::available_isas()
        .into_iter()
        .filter(|i| *i != Isa::Scalar)
        .map(|i| Kernels::for_isa(i).expect("available"))
        .collect()
}

fn kernels(c: &mut Criterion) {
    let n = FACES_PER_CHUNK;
    for k in fast_tables() {
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
    for k in fast_tables() {
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

criterion_group!(benches, kernels, student);
criterion_main!(benches);
