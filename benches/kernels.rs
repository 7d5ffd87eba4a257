//! Criterion benches for the kernels and the whole student, on the run-time kernel table.
use bridgeface::cpu::{self, ConvGeom};
use bridgeface::model::student::{StudentInfo, StudentParams};
use bridgeface::Tensor;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;

fn kernels(c: &mut Criterion) {
    let k = cpu::kernels().expect("kernel table");
    let mut group = c.benchmark_group(format!("kernels/{}", k.isa.name()));
    // b3's pointwise layer at 16×16 input: 64→128 over an 8×8 map, batch 16.
    let g = ConvGeom::square(16, 64, 8, 8, 128, 1, 1, 0, 1);
    let x = vec![0.5f32; g.input_len()];
    let w = vec![0.01f32; g.weight_len()];
    let b = vec![0.0f32; g.c_out];
    let mut y = vec![0.0f32; g.output_len()];
    group.throughput(Throughput::Elements((g.output_len() * g.c_in) as u64));
    group.bench_function("pointwise_64x128_8x8_b16", |bch| {
        bch.iter(|| (k.conv2d)(&g, black_box(&x), &w, Some(&b), &mut y))
    });
    let g = ConvGeom::square(16, 64, 16, 16, 64, 3, 2, 1, 64);
    let x = vec![0.5f32; g.input_len()];
    let w = vec![0.01f32; g.weight_len()];
    let mut y = vec![0.0f32; g.output_len()];
    group.bench_function("depthwise3x3_s2_64_16x16_b16", |bch| {
        bch.iter(|| (k.conv2d)(&g, black_box(&x), &w, Some(&b), &mut y))
    });
    group.finish();
}

fn student(c: &mut Criterion) {
    let k = cpu::kernels().expect("kernel table");
    let net = StudentParams::random(StudentInfo::new(16).unwrap(), 0)
        .fold()
        .unwrap();
    let mut group = c.benchmark_group(format!("student16/{}", k.isa.name()));
    for batch in [1usize, 16] {
        let x = Tensor::new(&[batch, 3, 16, 16], vec![0.1; batch * 768]).unwrap();
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("batch{batch}"), |bch| {
            bch.iter(|| net.forward(k, black_box(&x)).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, kernels, student);
criterion_main!(benches);
