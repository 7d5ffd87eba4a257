//! The SFace teacher on `--device cuda:N` for the CLI: `bridge embed --model teacher` and
//! `bridge-bench --model teacher --device cuda:N`. Holds no arithmetic; errors without CUDA.

use super::device::Device;
use crate::data::image::Rgb8;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::path::PathBuf;

/// Batch sizes of the teacher's GPU benchmark.
pub const TEACHER_CUDA_BENCH_BATCHES: [usize; 3] = [1, 64, 256];

/// L2-normalised teacher embeddings of decoded images on GPU `device` (f32), with the teacher
/// from `weights` (else the fetched ONNX). The device is opened first, so a machine without CUDA
/// gets the CUDA error whether or not the teacher is fetched.
pub fn embed_teacher_on(
    device: Device,
    weights: Option<PathBuf>,
    images: &[Rgb8],
) -> Result<Tensor> {
    let Device::Cuda(ordinal) = device else {
        return Err(Error::InvalidArgument(
            "embed_teacher_on needs a cuda device".into(),
        ));
    };
    cuda_teacher_embed(ordinal, weights, images)
}

#[cfg(not(feature = "cuda"))]
fn cuda_teacher_embed(_ordinal: usize, _w: Option<PathBuf>, _images: &[Rgb8]) -> Result<Tensor> {
    Err(super::device::not_built())
}

#[cfg(feature = "cuda")]
fn cuda_teacher_embed(ordinal: usize, weights: Option<PathBuf>, images: &[Rgb8]) -> Result<Tensor> {
    use crate::cuda::{CudaDevice, Precision};
    use crate::model::gpu::CudaTeacher;
    let dev = std::sync::Arc::new(CudaDevice::open(ordinal)?);
    let teacher = super::onnx::load_teacher(weights)?;
    let x = crate::embed::teacher_input(images)?;
    CudaTeacher::new(dev, &teacher, Precision::F32)?.forward(&x)
}

/// `bridge-bench --model teacher --device cuda:N`: SFace (`weights`, else the fetched ONNX) at
/// each of `batches`, f32 and f16, faces/s from CUDA events (median of `runs`). One line each.
pub fn bench_cuda_teacher(
    device: Device,
    weights: Option<PathBuf>,
    batches: &[usize],
    runs: usize,
) -> Result<()> {
    let Device::Cuda(ordinal) = device else {
        return Err(Error::InvalidArgument(
            "bench_cuda_teacher needs a cuda device".into(),
        ));
    };
    bench_impl(ordinal, weights, batches, runs)
}

#[cfg(not(feature = "cuda"))]
fn bench_impl(_o: usize, _w: Option<PathBuf>, _b: &[usize], _r: usize) -> Result<()> {
    Err(super::device::not_built())
}

#[cfg(feature = "cuda")]
fn bench_impl(
    ordinal: usize,
    weights: Option<PathBuf>,
    batches: &[usize],
    runs: usize,
) -> Result<()> {
    use crate::cuda::{bench::bench_graph, CudaDevice, Precision};
    use crate::model::gpu::CudaTeacher;
    use crate::rng::Rng;
    let dev = std::sync::Arc::new(CudaDevice::open(ordinal)?);
    let teacher = super::onnx::load_teacher(weights)?;
    println!(
        "device cuda:{ordinal} {} ({}), nvrtc {:?}",
        dev.name,
        dev.arch,
        crate::cuda::compile::nvrtc_version()?
    );
    let input = |batch: usize| {
        let mut rng = Rng::new(7);
        (0..batch * 3 * 112 * 112)
            .map(|_| rng.range(0.0, 255.0))
            .collect::<Vec<f32>>()
    };
    for p in [Precision::F32, Precision::F16] {
        let mut t = CudaTeacher::new(dev.clone(), &teacher, p)?;
        let g = t.graph_mut();
        let buffers = g.buffer_count();
        for row in bench_graph(g, batches, runs, input)? {
            println!(
                "teacher 112x112 device=cuda:{ordinal} precision={} batch={}: {:.0} faces/s (median {:.4} ms kernels, {:.4} ms with host copies; {runs} runs; {buffers} activation buffers)",
                p.name(),
                row.batch,
                row.faces_per_s,
                row.median_ms,
                row.median_ms_with_copies
            );
        }
    }
    Ok(())
}
