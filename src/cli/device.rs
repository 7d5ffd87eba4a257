//! `--device cpu|cuda:N` for the CLI: parsing, turning a folded student into the GPU's plain
//! layers, and running an embedding batch or the GPU benchmark there. Holds no arithmetic.

use crate::cpu;
use crate::data::image::{self, Rgb8};
use crate::embed::embed_rgb;
use crate::error::{Error, Result};
use crate::model::student::StudentNet;
use crate::tensor::Tensor;

/// Where a forward pass runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda(usize),
}

impl Device {
    /// Parses `cpu`, `cuda` (= `cuda:0`) or `cuda:N`.
    pub fn parse(s: &str) -> Result<Device> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => match t.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(Device::Cuda(n)),
                _ => Err(Error::InvalidArgument(format!(
                    "device `{s}` is not one of cpu, cuda, cuda:N"
                ))),
            },
        }
    }
}

/// Embeds decoded images on `device`: the CPU kernel table, or the student on GPU `N` in f32.
pub fn embed_rgb_on(device: Device, net: &StudentNet, images: &[Rgb8]) -> Result<Tensor> {
    match device {
        Device::Cpu => embed_rgb(net, cpu::kernels()?, images),
        Device::Cuda(ordinal) => {
            if images.is_empty() {
                return Err(Error::EmptyInput("no images given".into()));
            }
            let inputs = images
                .iter()
                .map(|img| image::to_input(img, net.resolution(), &net.info.normalization))
                .collect::<Result<Vec<_>>>()?;
            let x = Tensor::stack(&inputs)?;
            let emb = cuda_forward(ordinal, net, x.data(), images.len())?;
            Tensor::new(&[images.len(), emb.len() / images.len()], emb)
        }
    }
}

#[cfg(not(feature = "cuda"))]
pub(crate) fn not_built() -> Error {
    Error::Cuda(
        "this binary was built without CUDA support; rebuild with `cargo build --release --features cuda` or use --device cpu"
            .into(),
    )
}

#[cfg(not(feature = "cuda"))]
fn cuda_forward(_ordinal: usize, _net: &StudentNet, _x: &[f32], _n: usize) -> Result<Vec<f32>> {
    Err(not_built())
}

#[cfg(feature = "cuda")]
fn cuda_forward(ordinal: usize, net: &StudentNet, x: &[f32], n: usize) -> Result<Vec<f32>> {
    use crate::cuda::{CudaDevice, CudaStudent, Precision};
    let dev = std::sync::Arc::new(CudaDevice::open(ordinal)?);
    let mut student = CudaStudent::new(dev, &student_layers(net)?, Precision::F32)?;
    student.forward(x, n)
}

/// The folded student as the plain arrays the GPU runs.
#[cfg(feature = "cuda")]
pub fn student_layers(net: &StudentNet) -> Result<crate::cuda::StudentLayers> {
    use crate::cuda::layers::{BlockLayers, ConvLayer};
    use crate::model::student::FoldedConv;
    let conv = |f: &FoldedConv| -> Result<ConvLayer> {
        let [c_out, cin_g, kh, kw] = f.weight.dims4("folded conv weight")?;
        let square = kh == kw && f.conv.stride.0 == f.conv.stride.1;
        let pad_ok = f.conv.pads.iter().all(|&p| p == kh / 2);
        if !square || !pad_ok || !(kh == 1 || kh == 3) {
            return Err(Error::Shape(format!(
                "the GPU runs only 3×3 pad-1 and 1×1 pad-0 convs, got {kh}×{kw} {:?}",
                f.conv
            )));
        }
        Ok(ConvLayer {
            weight: f.weight.data().to_vec(),
            bias: f.bias.clone(),
            prelu: f.prelu.clone(),
            c_in: cin_g * f.conv.groups,
            c_out,
            stride: f.conv.stride.0,
        })
    };
    let mut blocks = Vec::with_capacity(net.blocks.len());
    for b in &net.blocks {
        blocks.push(BlockLayers {
            dw: conv(&b.dw)?,
            pw: conv(&b.pw)?,
            residual: b.residual,
        });
    }
    let layers = crate::cuda::StudentLayers {
        resolution: net.resolution(),
        stem: conv(&net.stem)?,
        blocks,
        gdc_weight: net.gdc_weight.data().to_vec(),
        gdc_bias: net.gdc_bias.clone(),
        linear_weight: net.linear_weight.data().to_vec(),
        linear_bias: net.linear_bias.clone(),
    };
    layers.validate()?;
    Ok(layers)
}

/// Batch sizes of the GPU benchmark.
pub const CUDA_BENCH_BATCHES: [usize; 4] = [1, 256, 4096, 65536];

/// `bridge-bench --device cuda:N`: a random 16×16 student at each batch size, f32 and f16,
/// with fused and with separate depthwise/pointwise block kernels,
/// faces/s from CUDA events (median of `runs`). Prints one line per measurement.
pub fn bench_cuda(device: Device, runs: usize) -> Result<()> {
    let Device::Cuda(ordinal) = device else {
        return Err(Error::InvalidArgument(
            "bench_cuda needs a cuda device".into(),
        ));
    };
    bench_cuda_impl(ordinal, runs)
}

#[cfg(not(feature = "cuda"))]
fn bench_cuda_impl(_ordinal: usize, _runs: usize) -> Result<()> {
    Err(not_built())
}

#[cfg(feature = "cuda")]
fn bench_cuda_impl(ordinal: usize, runs: usize) -> Result<()> {
    use crate::cuda::{bench::bench_student, CudaDevice, CudaStudent, Depthwise, Gemm, Precision};
    use crate::model::student::{StudentInfo, StudentParams};
    let r = 16;
    let net = StudentParams::random(StudentInfo::new(r)?, 0).fold()?;
    let layers = student_layers(&net)?;
    let dev = std::sync::Arc::new(CudaDevice::open(ordinal)?);
    println!(
        "device cuda:{ordinal} {} ({}), nvrtc {:?}",
        dev.name,
        dev.arch,
        crate::cuda::compile::nvrtc_version()?
    );
    let mut configs = vec![(Precision::F32, Gemm::Fma), (Precision::F16, Gemm::Fma)];
    if dev.tensor_cores() {
        configs.push((Precision::F16, Gemm::TensorCores));
        configs.push((Precision::F16, Gemm::TensorCoresLdmatrix));
    }
    for (p, gemm) in configs {
        let mut student = CudaStudent::new(dev.clone(), &layers, p)?;
        student.set_gemm(gemm)?;
        // Fused blocks, then separate depthwise (row, tiled and per-layer kernels) and pointwise.
        for (fused, dw) in [
            (true, Depthwise::Rows),
            (false, Depthwise::Rows),
            (false, Depthwise::Tiles),
            (false, Depthwise::Auto),
        ] {
            if fused && gemm == Gemm::TensorCoresLdmatrix {
                continue; // fused blocks run the first tensor-core form
            }
            student.set_fused(fused);
            student.set_depthwise(dw);
            let blocks = if fused {
                "fused".to_string()
            } else {
                format!("dw+pw depthwise={}", dw.name())
            };
            for row in bench_student(&mut student, r, &CUDA_BENCH_BATCHES, runs)? {
                println!(
                    "student {r}x{r} device=cuda:{ordinal} precision={} gemm={} blocks={blocks} batch={}: {:.0} faces/s kernels (median {:.4} ms), {:.0} faces/s as a CUDA graph ({:.4} ms), {:.0} faces/s with host copies ({:.4} ms wall); {runs} runs",
                    p.name(),
                    gemm.name(),
                    row.batch,
                    row.faces_per_s,
                    row.median_ms,
                    row.faces_per_s_graph(),
                    row.median_ms_graph,
                    row.faces_per_s_with_copies(),
                    row.median_ms_with_copies
                );
            }
            let n = *CUDA_BENCH_BATCHES.last().unwrap_or(&1);
            let profile = student.profile(n)?;
            let total: f64 = profile.iter().map(|(_, ms)| ms).sum();
            for (name, ms) in profile {
                println!(
                    "  profile precision={} gemm={} blocks={blocks} batch={n}: {name}: {ms:.3} ms ({:.0}%)",
                    p.name(),
                    gemm.name(),
                    100.0 * ms / total.max(1e-12)
                );
            }
        }
    }
    Ok(())
}

/// `bridge-bench --model train --device cuda:N`: faces per second of whole training steps of a
/// fresh 16×16 student with the network on the GPU (CosFace over 100 identities, SGD), at each
/// batch size; wall clock around each step, which ends synchronised (the gradients come back to
/// the host). Median of `runs` after one warm-up step; also the network's forward alone.
pub fn bench_train_cuda(device: Device, batches: &[usize], runs: usize) -> Result<()> {
    let Device::Cuda(ordinal) = device else {
        return Err(Error::InvalidArgument(
            "bench_train_cuda needs a cuda device".into(),
        ));
    };
    bench_train_cuda_impl(ordinal, batches, runs)
}

#[cfg(not(feature = "cuda"))]
fn bench_train_cuda_impl(_ordinal: usize, _batches: &[usize], _runs: usize) -> Result<()> {
    Err(not_built())
}

#[cfg(feature = "cuda")]
fn bench_train_cuda_impl(ordinal: usize, batches: &[usize], runs: usize) -> Result<()> {
    use crate::cuda::train::CudaTrainNet;
    use crate::model::student::BN_EPS;
    use crate::rng::Rng;
    use crate::train::gpu::{train_layers, GpuTrainer};
    use crate::train::{TrainConfig, TrainState};
    use std::time::Instant;
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let k = cpu::kernels()?;
    let r = 16;
    let classes = 100;
    let cfg = TrainConfig::new(r);
    let mut gpu = GpuTrainer::open(ordinal)?;
    println!(
        "device cuda:{ordinal} {} ({}); host kernels {}",
        gpu.device().name,
        gpu.device().arch,
        k.isa.name()
    );
    for &batch in batches {
        let mut rng = Rng::new(7);
        let x: Vec<f32> = (0..batch * 3 * r * r)
            .map(|_| rng.range(-1.0, 1.0))
            .collect();
        let labels: Vec<usize> = (0..batch).map(|_| rng.below(classes)).collect();
        let indices: Vec<usize> = (0..batch).collect();
        let mut state = TrainState::new(&cfg, classes)?;
        let mut step_s = Vec::with_capacity(runs);
        for i in 0..=runs {
            let input = Tensor::new(&[batch, 3, r, r], x.clone())?;
            let t = Instant::now();
            gpu.step(
                k,
                &cfg,
                &mut state,
                input,
                &labels,
                &indices,
                0.01,
                &crate::train::Classification,
            )?;
            if i > 0 {
                step_s.push(t.elapsed().as_secs_f64());
            }
        }
        let mut net =
            CudaTrainNet::new(gpu.device().clone(), &train_layers(&state.params)?, BN_EPS)?;
        let mut fwd_s = Vec::with_capacity(runs);
        for i in 0..=runs {
            let t = Instant::now();
            std::hint::black_box(net.forward(&x, batch)?);
            if i > 0 {
                fwd_s.push(t.elapsed().as_secs_f64());
            }
        }
        let (step, fwd) = (median(step_s), median(fwd_s));
        println!(
            "train {r}x{r} device=cuda:{ordinal} f32 batch={batch}: step {:.2} ms = {:.0} faces/s (network forward {:.2} ms; median of {runs})",
            step * 1e3,
            batch as f64 / step,
            fwd * 1e3
        );
    }
    Ok(())
}

/// The `--device X` / `--device=X` of a raw argument list, if given (for `bridge-bench`).
pub fn device_from_args(args: &[String]) -> Result<Option<Device>> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--device" {
            let v = it.next().ok_or_else(|| {
                Error::InvalidArgument("--device needs a value: cpu, cuda or cuda:N".into())
            })?;
            return Device::parse(v).map(Some);
        }
        if let Some(v) = a.strip_prefix("--device=") {
            return Device::parse(v).map(Some);
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse_and_bad_ones_are_errors() {
        assert_eq!(Device::parse("cpu").unwrap(), Device::Cpu);
        assert_eq!(Device::parse("CUDA").unwrap(), Device::Cuda(0));
        assert_eq!(Device::parse("cuda:3").unwrap(), Device::Cuda(3));
        for bad in ["gpu", "cuda:", "cuda:-1", "cuda:x", ""] {
            assert!(
                matches!(Device::parse(bad), Err(Error::InvalidArgument(_))),
                "{bad:?} should be rejected"
            );
        }
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(device_from_args(&args(&["x"])).unwrap(), None);
        assert_eq!(
            device_from_args(&args(&["--device", "cuda:1"])).unwrap(),
            Some(Device::Cuda(1))
        );
        assert_eq!(
            device_from_args(&args(&["--device=cpu"])).unwrap(),
            Some(Device::Cpu)
        );
        assert!(device_from_args(&args(&["--device"])).is_err());
    }
}
