//! The launchers of `kernels/pointwise.cu`: the pointwise GEMM and the fused depthwise +
//! pointwise block, on the engine `Gemm` chooses. Must not keep state between launches.

use crate::cuda::buffer::DevBuf;
use crate::cuda::device::CudaDevice;
use crate::cuda::driver_err;
use crate::cuda::gemm::Gemm;
use crate::cuda::launch::{dim, need, push, push_mut, push_opt, same_precision, NULL_PTR};
use crate::error::{Error, Result};
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

/// Pointwise 1×1 conv as a tiled GEMM, then bias, optional PReLU and optional residual add:
/// matches `conv2d` (1×1) → `prelu` → `add(y, residual)`.
#[allow(clippy::too_many_arguments)]
pub fn pointwise(
    dev: &CudaDevice,
    x: &DevBuf,
    w: &DevBuf,
    bias: &CudaSlice<f32>,
    alpha: Option<&CudaSlice<f32>>,
    residual: Option<&DevBuf>,
    y: &mut DevBuf,
    dims: [usize; 3],
    c_out: usize,
) -> Result<()> {
    pointwise_on(Gemm::Fma, dev, x, w, bias, alpha, residual, y, dims, c_out)
}

/// `pointwise` on the chosen GEMM engine (tensor cores: f16 storage on sm_80 or newer).
#[allow(clippy::too_many_arguments)]
pub fn pointwise_on(
    gemm: Gemm,
    dev: &CudaDevice,
    x: &DevBuf,
    w: &DevBuf,
    bias: &CudaSlice<f32>,
    alpha: Option<&CudaSlice<f32>>,
    residual: Option<&DevBuf>,
    y: &mut DevBuf,
    [n, c_in, hw]: [usize; 3],
    c_out: usize,
) -> Result<()> {
    let p = same_precision(&[x, w, y])?;
    gemm.check(dev, p)?;
    need(x.len(), n * c_in * hw, "pointwise input")?;
    need(w.len(), c_out * c_in, "pointwise weight")?;
    need(bias.len(), c_out, "pointwise bias")?;
    need(alpha.map_or(c_out, |a| a.len()), c_out, "pointwise slopes")?;
    need(y.len(), n * c_out * hw, "pointwise output")?;
    if let Some(r) = residual {
        same_precision(&[x, r])?;
        need(r.len(), n * c_out * hw, "pointwise residual")?;
    }
    let a = [
        dim(n, "n")?,
        dim(c_in, "c_in")?,
        dim(c_out, "c_out")?,
        dim(hw, "hw")?,
    ];
    let (cfg, name) = if gemm == Gemm::TensorCoresLdmatrix && hw % 8 == 0 {
        // One-dimensional grid: the output-channel tiles of each column tile adjacent.
        let blocks = (n * hw).div_ceil(128) * c_out.div_ceil(64);
        let cfg = LaunchConfig {
            grid_dim: (
                u32::try_from(blocks.max(1))
                    .ok()
                    .filter(|&b| b < i32::MAX as u32)
                    .ok_or_else(|| Error::Shape("batch too large".into()))?,
                1,
                1,
            ),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        (cfg, "pointwise_mma2_f16".to_string())
    } else {
        (
            gemm.launch_config(n * hw, c_out)?,
            gemm.kernel("pointwise", p),
        )
    };
    let f = dev.function(&name)?;
    let mut b = dev.stream.launch_builder(f);
    push(&mut b, x);
    push(&mut b, w);
    b.arg(bias);
    push_opt(&mut b, alpha);
    match residual {
        Some(r) => push(&mut b, r),
        None => {
            b.arg(&NULL_PTR);
        }
    }
    push_mut(&mut b, y);
    for v in &a {
        b.arg(v);
    }
    // SAFETY: matches `pointwise_bias_prelu_*` / `pointwise_mma_f16` / `pointwise_mma2_f16`
    // (planes of a multiple of 8 pixels, 256 threads, one block per 64×128 output tile) in
    // kernels/pointwise.cu (the block shape each assumes comes from `Gemm::launch_config` or
    // the grid above); sizes checked above;
    // `residual` is read-only and never `y`; the tensor-core kernel only runs on sm_80+.
    unsafe { b.launch(cfg) }.map_err(driver_err("pointwise launch"))?;
    Ok(())
}

/// A whole block fused: depthwise 3×3 (pad 1, `stride`) + bias + optional PReLU computed while
/// loading the pointwise GEMM's input tile, then pointwise + bias + optional PReLU + optional
/// residual. Matches `depthwise3x3` followed by `pointwise`, without the intermediate buffer.
/// The residual, if any, is the block input `x` (stride 1, `c_out == c_in`).
#[allow(clippy::too_many_arguments)]
pub fn depthwise_pointwise(
    dev: &CudaDevice,
    x: &DevBuf,
    dw: (&DevBuf, &CudaSlice<f32>, Option<&CudaSlice<f32>>),
    pw: (&DevBuf, &CudaSlice<f32>, Option<&CudaSlice<f32>>),
    residual: bool,
    y: &mut DevBuf,
    dims: [usize; 4],
    stride: usize,
    c_out: usize,
) -> Result<()> {
    depthwise_pointwise_on(Gemm::Fma, dev, x, dw, pw, residual, y, dims, stride, c_out)
}

/// `depthwise_pointwise` on the chosen GEMM engine (tensor cores: f16 on sm_80 or newer; the
/// depthwise output is rounded to f16 once, as the tensor cores take f16 operands).
#[allow(clippy::too_many_arguments)]
pub fn depthwise_pointwise_on(
    gemm: Gemm,
    dev: &CudaDevice,
    x: &DevBuf,
    dw: (&DevBuf, &CudaSlice<f32>, Option<&CudaSlice<f32>>),
    pw: (&DevBuf, &CudaSlice<f32>, Option<&CudaSlice<f32>>),
    residual: bool,
    y: &mut DevBuf,
    [n, c_in, h, wd]: [usize; 4],
    stride: usize,
    c_out: usize,
) -> Result<()> {
    let p = same_precision(&[x, dw.0, pw.0, y])?;
    gemm.check(dev, p)?;
    if stride == 0 || h == 0 || wd == 0 {
        return Err(Error::Shape(
            "depthwise_pointwise needs a non-empty input and stride ≥ 1".into(),
        ));
    }
    let (oh, ow) = ((h - 1) / stride + 1, (wd - 1) / stride + 1);
    need(x.len(), n * c_in * h * wd, "block input")?;
    need(dw.0.len(), c_in * 9, "depthwise weight")?;
    need(dw.1.len(), c_in, "depthwise bias")?;
    need(dw.2.map_or(c_in, |a| a.len()), c_in, "depthwise slopes")?;
    need(pw.0.len(), c_out * c_in, "pointwise weight")?;
    need(pw.1.len(), c_out, "pointwise bias")?;
    need(pw.2.map_or(c_out, |a| a.len()), c_out, "pointwise slopes")?;
    need(y.len(), n * c_out * oh * ow, "block output")?;
    if residual && (stride != 1 || c_out != c_in) {
        return Err(Error::Shape(
            "a residual block needs stride 1 and c_out == c_in".into(),
        ));
    }
    let a = [
        dim(n, "n")?,
        dim(c_in, "c_in")?,
        dim(h, "h")?,
        dim(wd, "w")?,
        dim(stride, "stride")?,
        dim(c_out, "c_out")?,
    ];
    let cfg = gemm.launch_config(n * oh * ow, c_out)?;
    let f = dev.function(&gemm.kernel("dwpw", p))?;
    let mut b = dev.stream.launch_builder(f);
    push(&mut b, x);
    push(&mut b, dw.0);
    b.arg(dw.1);
    push_opt(&mut b, dw.2);
    push(&mut b, pw.0);
    b.arg(pw.1);
    push_opt(&mut b, pw.2);
    if residual {
        push(&mut b, x);
    } else {
        b.arg(&NULL_PTR);
    }
    push_mut(&mut b, y);
    for v in &a {
        b.arg(v);
    }
    // SAFETY: matches `dwpw_bias_prelu_*` / `dwpw_mma_f16` in kernels/pointwise.cu (block shape
    // from `Gemm::launch_config`); sizes checked above; `x` (also the residual) is only read and
    // is a different buffer from `y`; the tensor-core kernel only runs on sm_80+.
    unsafe { b.launch(cfg) }.map_err(driver_err("depthwise+pointwise launch"))?;
    Ok(())
}
