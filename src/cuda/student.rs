//! The student's inference forward pass on one GPU: per-layer kernel launchers (each checked
//! against `cpu::scalar`), the plain layer description it runs, and device-resident weights.
//! It knows nothing of weight files or `model`: callers convert a folded student into layers.

use super::device::CudaDevice;
use super::driver_err;
use crate::error::{Error, Result};
use cudarc::driver::{
    sys, CudaEvent, CudaGraph, CudaSlice, CudaStream, LaunchArgs, LaunchConfig, PinnedHostSlice,
    PushKernelArg,
};
use half::f16;
use std::collections::HashMap;
use std::sync::Arc;

/// Storage precision of activations and conv/linear weights. Arithmetic is always f32; biases
/// and PReLU slopes stay f32; the embedding comes back as f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    F32,
    F16,
}

impl Precision {
    fn suffix(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
        }
    }

    pub fn name(self) -> &'static str {
        self.suffix()
    }
}

/// A device buffer in either storage precision (f16 kept as raw bits).
pub enum DevBuf {
    F32(CudaSlice<f32>),
    F16(CudaSlice<u16>),
}

impl DevBuf {
    /// Uploads `data`, rounding to f16 for `Precision::F16`.
    pub fn upload(dev: &CudaDevice, data: &[f32], p: Precision) -> Result<DevBuf> {
        let s = &dev.stream;
        Ok(match p {
            Precision::F32 => DevBuf::F32(s.clone_htod(data).map_err(driver_err("upload"))?),
            Precision::F16 => DevBuf::F16(
                s.clone_htod(&to_f16_bits(data))
                    .map_err(driver_err("upload"))?,
            ),
        })
    }

    /// A zeroed buffer of `len` values.
    pub fn zeros(dev: &CudaDevice, len: usize, p: Precision) -> Result<DevBuf> {
        let s = &dev.stream;
        let len = len.max(1);
        Ok(match p {
            Precision::F32 => DevBuf::F32(s.alloc_zeros(len).map_err(driver_err("alloc"))?),
            Precision::F16 => DevBuf::F16(s.alloc_zeros(len).map_err(driver_err("alloc"))?),
        })
    }

    /// Overwrites the first `data.len()` values.
    pub fn write(&mut self, dev: &CudaDevice, data: &[f32]) -> Result<()> {
        if data.len() > self.len() {
            return Err(Error::Shape(format!(
                "{} values do not fit a device buffer of {}",
                data.len(),
                self.len()
            )));
        }
        let s = &dev.stream;
        match self {
            DevBuf::F32(d) => s.memcpy_htod(data, &mut d.slice_mut(0..data.len())),
            DevBuf::F16(d) => s.memcpy_htod(&to_f16_bits(data), &mut d.slice_mut(0..data.len())),
        }
        .map_err(driver_err("copy to device"))
    }

    /// The first `len` values, as f32.
    pub fn read(&self, dev: &CudaDevice, len: usize) -> Result<Vec<f32>> {
        let s = &dev.stream;
        let len = len.min(self.len());
        match self {
            DevBuf::F32(d) => s
                .clone_dtoh(&d.slice(0..len))
                .map_err(driver_err("copy to host")),
            DevBuf::F16(d) => {
                let bits = s
                    .clone_dtoh(&d.slice(0..len))
                    .map_err(driver_err("copy to host"))?;
                Ok(bits
                    .into_iter()
                    .map(|b| f16::from_bits(b).to_f32())
                    .collect())
            }
        }
    }

    pub fn len(&self) -> usize {
        match self {
            DevBuf::F32(d) => d.len(),
            DevBuf::F16(d) => d.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn precision(&self) -> Precision {
        match self {
            DevBuf::F32(_) => Precision::F32,
            DevBuf::F16(_) => Precision::F16,
        }
    }
}

fn to_f16_bits(data: &[f32]) -> Vec<u16> {
    data.iter().map(|&v| f16::from_f32(v).to_bits()).collect()
}

/// Which engine runs the pointwise GEMMs (plain or with the depthwise fused in).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gemm {
    /// f32 FMA tiles (`*_bias_prelu_{f32,f16}`): any precision, any GPU.
    Fma,
    /// `mma.sync` f16 tensor cores with f32 accumulation (`*_mma_f16`): f16 storage, sm_80+.
    TensorCores,
    /// The same, with the pointwise input tile kept k-major in shared memory and read by
    /// `ldmatrix.trans` (`pointwise_mma2_f16`) where planes hold a multiple of 8 pixels; the
    /// first form elsewhere and for fused blocks. Identical results.
    TensorCoresLdmatrix,
}

impl Gemm {
    fn check(self, dev: &CudaDevice, p: Precision) -> Result<()> {
        if self != Gemm::Fma {
            if p != Precision::F16 {
                return Err(Error::Cuda(
                    "the tensor-core kernels take f16 storage only".into(),
                ));
            }
            if !dev.tensor_cores() {
                return Err(Error::Cuda(format!(
                    "{} ({}) has no f16 mma.sync tensor cores (sm_80 or newer needed)",
                    dev.name, dev.arch
                )));
            }
        }
        Ok(())
    }

    fn kernel(self, stem: &str, p: Precision) -> String {
        match self {
            Gemm::Fma => format!("{stem}_bias_prelu_{}", p.suffix()),
            Gemm::TensorCores | Gemm::TensorCoresLdmatrix => format!("{stem}_mma_f16"),
        }
    }

    /// The grid over (columns, output channels) and the block each kernel assumes.
    fn launch_config(self, cols: usize, c_out: usize) -> Result<LaunchConfig> {
        let (bn, bm, block) = match self {
            Gemm::Fma => (64, 64, (16, 16, 1)),
            Gemm::TensorCores | Gemm::TensorCoresLdmatrix => (128, 64, (256, 1, 1)),
        };
        Ok(LaunchConfig {
            grid_dim: (
                u32::try_from(cols.div_ceil(bn).max(1))
                    .map_err(|_| Error::Shape("batch too large".into()))?,
                c_out.div_ceil(bm).max(1) as u32,
                1,
            ),
            block_dim: block,
            shared_mem_bytes: 0,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Gemm::Fma => "fma",
            Gemm::TensorCores => "tensor-cores",
            Gemm::TensorCoresLdmatrix => "tensor-cores-ldmatrix",
        }
    }
}

/// A null device pointer, for the optional PReLU slopes and residual input.
pub(crate) static NULL_PTR: u64 = 0;

pub(crate) fn push<'a>(b: &mut LaunchArgs<'a>, x: &'a DevBuf) {
    match x {
        DevBuf::F32(s) => b.arg(s),
        DevBuf::F16(s) => b.arg(s),
    };
}

pub(crate) fn push_mut<'a>(b: &mut LaunchArgs<'a>, x: &'a mut DevBuf) {
    match x {
        DevBuf::F32(s) => b.arg(s),
        DevBuf::F16(s) => b.arg(s),
    };
}

pub(crate) fn push_opt<'a>(b: &mut LaunchArgs<'a>, x: Option<&'a CudaSlice<f32>>) {
    match x {
        Some(s) => b.arg(s),
        None => b.arg(&NULL_PTR),
    };
}

pub(crate) fn dim(v: usize, what: &str) -> Result<i32> {
    i32::try_from(v)
        .map_err(|_| Error::Shape(format!("{what} = {v} is too large for the GPU kernels")))
}

pub(crate) fn same_precision(bufs: &[&DevBuf]) -> Result<Precision> {
    let p = bufs[0].precision();
    if bufs.iter().any(|b| b.precision() != p) {
        return Err(Error::Shape("device buffers of mixed precision".into()));
    }
    Ok(p)
}

pub(crate) fn need(buf_len: usize, want: usize, what: &str) -> Result<()> {
    if buf_len < want {
        return Err(Error::Shape(format!(
            "{what} holds {buf_len} values, the kernel needs {want}"
        )));
    }
    Ok(())
}

/// Blocks of 256 threads, each covering whole output planes (kernels/graph.cu):
/// returns the launch shape and the planes per block. The kernels index planes in 32 bits.
pub(crate) fn plane_cfg(total_planes: usize, hw_out: usize) -> Result<(LaunchConfig, i32)> {
    let planes = (256 / hw_out.max(1)).max(1);
    if total_planes >= i32::MAX as usize {
        return Err(Error::Shape(format!(
            "{total_planes} output planes exceed the GPU kernels' 32-bit plane index"
        )));
    }
    let cfg = LaunchConfig {
        grid_dim: (total_planes.div_ceil(planes).max(1) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    Ok((cfg, planes as i32))
}

/// One thread per item in blocks of 256; the kernels index items in 32 bits.
fn thread_cfg(total: usize, what: &str) -> Result<LaunchConfig> {
    if total >= i32::MAX as usize {
        return Err(Error::Shape(format!(
            "{total} {what} exceed the GPU kernels' 32-bit index"
        )));
    }
    Ok(LaunchConfig {
        grid_dim: (total.div_ceil(256).max(1) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    })
}

/// Direct 3×3 conv, pad 1, any stride, then bias and optional PReLU: matches
/// `cpu::scalar::conv2d` (groups 1) followed by `cpu::scalar::prelu`.
#[allow(clippy::too_many_arguments)]
pub fn conv3x3(
    dev: &CudaDevice,
    x: &DevBuf,
    w: &DevBuf,
    bias: &CudaSlice<f32>,
    alpha: Option<&CudaSlice<f32>>,
    y: &mut DevBuf,
    [n, c_in, h, wd]: [usize; 4],
    c_out: usize,
    stride: usize,
) -> Result<()> {
    let p = same_precision(&[x, w, y])?;
    let (oh, ow) = (
        (h.max(1) - 1) / stride.max(1) + 1,
        (wd.max(1) - 1) / stride.max(1) + 1,
    );
    need(x.len(), n * c_in * h * wd, "conv3x3 input")?;
    need(w.len(), c_out * c_in * 9, "conv3x3 weight")?;
    need(bias.len(), c_out, "conv3x3 bias")?;
    need(alpha.map_or(c_out, |a| a.len()), c_out, "conv3x3 slopes")?;
    need(y.len(), n * c_out * oh * ow, "conv3x3 output")?;
    if stride == 0 || h == 0 || wd == 0 {
        return Err(Error::Shape(
            "conv3x3 needs a non-empty input and stride ≥ 1".into(),
        ));
    }
    let a = [
        dim(n, "n")?,
        dim(c_in, "c_in")?,
        dim(h, "h")?,
        dim(wd, "w")?,
        dim(c_out, "c_out")?,
        dim(stride, "stride")?,
    ];
    // Small weight sets (the stem) are staged in shared memory (`STEM_SMEM_W` floats), with two
    // adjacent output pixels per thread where the output width is even.
    let (name, cfg) = if c_in * 9 * c_out.div_ceil(4) * 4 > 8192 {
        (
            "conv3x3_bias_prelu",
            thread_cfg(n * oh * ow, "output pixels")?,
        )
    } else if ow % 2 == 0 {
        (
            "conv3x3_smem2",
            thread_cfg(n * oh * ow / 2, "output pixel pairs")?,
        )
    } else {
        ("conv3x3_smem", thread_cfg(n * oh * ow, "output pixels")?)
    };
    let f = dev.function(&format!("{name}_{}", p.suffix()))?;
    let mut b = dev.stream.launch_builder(f);
    push(&mut b, x);
    push(&mut b, w);
    b.arg(bias);
    push_opt(&mut b, alpha);
    push_mut(&mut b, y);
    for v in &a {
        b.arg(v);
    }
    // SAFETY: argument types and order match `conv3x3_bias_prelu_*`, `conv3x3_smem_*` and
    // `conv3x3_smem2_*` in kernels/conv3x3.cu (one thread per output pixel, or per pair of
    // pixels for an even output width, 32-bit index checked by `thread_cfg`; the shared-memory
    // ones only with at most STEM_SMEM_W staged weights, checked above), and every buffer was
    // checked above to hold what the kernel indexes.
    unsafe { b.launch(cfg) }.map_err(driver_err("conv3x3 launch"))?;
    Ok(())
}

/// Which depthwise 3×3 kernel runs (kernels/depthwise.cu).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Depthwise {
    /// One thread per output row, reading the input straight from global memory.
    Rows,
    /// Whole planes staged in shared memory by coalesced loads, one thread per output value;
    /// planes of more than `DW_TILE_ELEMS` values fall back to `Rows`.
    Tiles,
    /// Per layer: `Tiles` for planes of 256 pixels or more and for stride 2, else `Rows`.
    Auto,
}

/// Shared-memory capacity of `depthwise3x3_tile_*` in values, and its most planes per block
/// (`DW_TILE_ELEMS` and `DW_TILE_PLANES` in kernels/depthwise.cu).
const DW_TILE_ELEMS: usize = 4096;
const DW_TILE_PLANES: usize = 256;

impl Depthwise {
    pub fn name(self) -> &'static str {
        match self {
            Depthwise::Rows => "rows",
            Depthwise::Tiles => "tiles",
            Depthwise::Auto => "auto",
        }
    }
}

/// Depthwise 3×3 conv, pad 1, stride 1 or 2, then bias and optional PReLU: matches
/// `cpu::scalar::conv2d` with groups = channels, followed by `prelu`.
#[allow(clippy::too_many_arguments)]
pub fn depthwise3x3(
    dev: &CudaDevice,
    x: &DevBuf,
    w: &DevBuf,
    bias: &CudaSlice<f32>,
    alpha: Option<&CudaSlice<f32>>,
    y: &mut DevBuf,
    dims: [usize; 4],
    stride: usize,
) -> Result<()> {
    depthwise3x3_on(Depthwise::Rows, dev, x, w, bias, alpha, y, dims, stride)
}

/// `depthwise3x3` on the chosen kernel; every kind gives the same values bit for bit.
#[allow(clippy::too_many_arguments)]
pub fn depthwise3x3_on(
    kind: Depthwise,
    dev: &CudaDevice,
    x: &DevBuf,
    w: &DevBuf,
    bias: &CudaSlice<f32>,
    alpha: Option<&CudaSlice<f32>>,
    y: &mut DevBuf,
    [n, c, h, wd]: [usize; 4],
    stride: usize,
) -> Result<()> {
    let p = same_precision(&[x, w, y])?;
    if stride == 0 || h == 0 || wd == 0 {
        return Err(Error::Shape(
            "depthwise3x3 needs a non-empty input and stride ≥ 1".into(),
        ));
    }
    let (oh, ow) = ((h - 1) / stride + 1, (wd - 1) / stride + 1);
    need(x.len(), n * c * h * wd, "depthwise input")?;
    need(w.len(), c * 9, "depthwise weight")?;
    need(bias.len(), c, "depthwise bias")?;
    need(alpha.map_or(c, |a| a.len()), c, "depthwise slopes")?;
    need(y.len(), n * c * oh * ow, "depthwise output")?;
    let a = [
        dim(n, "n")?,
        dim(c, "c")?,
        dim(h, "h")?,
        dim(wd, "w")?,
        dim(stride, "stride")?,
    ];
    let tiles = match kind {
        Depthwise::Rows => false,
        Depthwise::Tiles => true,
        Depthwise::Auto => h * wd >= 256 || stride > 1,
    } && h * wd <= DW_TILE_ELEMS;
    let (cfg, name, planes) = if tiles {
        let planes = (DW_TILE_ELEMS / (h * wd)).clamp(1, DW_TILE_PLANES);
        let blocks = (n * c).div_ceil(planes);
        if blocks >= i32::MAX as usize {
            return Err(Error::Shape(format!(
                "{} depthwise planes exceed the GPU kernels' 32-bit index",
                n * c
            )));
        }
        let cfg = LaunchConfig {
            grid_dim: (blocks.max(1) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        (cfg, "depthwise3x3_tile", planes as i32)
    } else {
        (
            thread_cfg(n * c * oh, "output rows")?,
            "depthwise3x3_bias_prelu",
            0,
        )
    };
    let f = dev.function(&format!("{name}_{}", p.suffix()))?;
    let mut b = dev.stream.launch_builder(f);
    push(&mut b, x);
    push(&mut b, w);
    b.arg(bias);
    push_opt(&mut b, alpha);
    push_mut(&mut b, y);
    for v in &a {
        b.arg(v);
    }
    if tiles {
        b.arg(&planes);
    }
    // SAFETY: matches `depthwise3x3_bias_prelu_*` (one thread per output row, 32-bit row index
    // checked by `thread_cfg`) or `depthwise3x3_tile_*` (256 threads, `planes` whole planes of
    // at most DW_TILE_ELEMS values per block, DW_TILE_PLANES at most) in kernels/depthwise.cu;
    // sizes checked above.
    unsafe { b.launch(cfg) }.map_err(driver_err("depthwise launch"))?;
    Ok(())
}

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

/// The student's head, in three kernels: global depthwise conv + bias into `pooled`
/// (`[n, c]`), the linear layer + bias as a pointwise GEMM over the batch into `lin` (`[n, m]`,
/// on `gemm`), and L2 normalisation into the f32 `y`. Matches the scalar chain
/// (`global_depthwise_conv` → `linear` → `l2_normalize`), except that f16 storage rounds
/// `pooled` and `lin` to f16.
#[allow(clippy::too_many_arguments)]
pub fn head_gemm(
    gemm: Gemm,
    dev: &CudaDevice,
    x: &DevBuf,
    gdc: (&DevBuf, &CudaSlice<f32>),
    linear: (&DevBuf, &CudaSlice<f32>),
    pooled: &mut DevBuf,
    lin: &mut DevBuf,
    y: &mut CudaSlice<f32>,
    [n, c, hw]: [usize; 3],
    m: usize,
) -> Result<()> {
    let p = same_precision(&[x, gdc.0, linear.0, pooled, lin])?;
    need(x.len(), n * c * hw, "head input")?;
    need(gdc.0.len(), c * hw, "gdc weight")?;
    need(gdc.1.len(), c, "gdc bias")?;
    need(pooled.len(), n * c, "pooled buffer")?;
    need(y.len(), n * m, "embedding buffer")?;
    let a = [dim(n, "n")?, dim(c, "c")?, dim(hw, "hw")?];
    let cfg = thread_cfg(n * c, "pooled values")?;
    let f = dev.function(&format!("gdc_bias_{}", p.suffix()))?;
    let mut b = dev.stream.launch_builder(f);
    push(&mut b, x);
    push(&mut b, gdc.0);
    b.arg(gdc.1);
    push_mut(&mut b, pooled);
    for v in &a {
        b.arg(v);
    }
    // SAFETY: matches `gdc_bias_*` in kernels/head.cu (one thread per (image, channel), 32-bit
    // index checked by `thread_cfg`); sizes checked above; `pooled` is not `x`.
    unsafe { b.launch(cfg) }.map_err(driver_err("gdc launch"))?;

    pointwise_on(
        gemm,
        dev,
        pooled,
        linear.0,
        linear.1,
        None,
        None,
        lin,
        [n, c, 1],
        m,
    )?;

    let a = [dim(n, "n")?, dim(m, "m")?];
    let rows_per_block = 8; // 256 threads, one warp per row
    let cfg = LaunchConfig {
        grid_dim: (n.div_ceil(rows_per_block).max(1) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let f = dev.function(&format!("l2_rows_{}", p.suffix()))?;
    let mut b = dev.stream.launch_builder(f);
    push(&mut b, lin);
    b.arg(&*y);
    for v in &a {
        b.arg(v);
    }
    // SAFETY: matches `l2_rows_*` in kernels/head.cu (256 threads = 8 warps, one row each);
    // `lin` holds n * m values (checked by the GEMM above) and `y` n * m floats.
    unsafe { b.launch(cfg) }.map_err(driver_err("l2 launch"))?;
    Ok(())
}

/// A conv layer with its BN folded in: OIHW weights, bias, optional PReLU slopes.
#[derive(Clone, Debug)]
pub struct ConvLayer {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub prelu: Option<Vec<f32>>,
    pub c_in: usize,
    pub c_out: usize,
    pub stride: usize,
}

/// Depthwise 3×3 then pointwise 1×1, with an optional skip from the block input.
#[derive(Clone, Debug)]
pub struct BlockLayers {
    pub dw: ConvLayer,
    pub pw: ConvLayer,
    pub residual: bool,
}

/// The folded student as plain arrays: what the GPU runs. Built from `model::student::StudentNet`
/// by the layer above (`cli::device::student_layers`), so this module needs no `model` import.
#[derive(Clone, Debug)]
pub struct StudentLayers {
    pub resolution: usize,
    pub stem: ConvLayer,
    pub blocks: Vec<BlockLayers>,
    pub gdc_weight: Vec<f32>,
    pub gdc_bias: Vec<f32>,
    pub linear_weight: Vec<f32>,
    pub linear_bias: Vec<f32>,
}

impl StudentLayers {
    /// Checks that every array has the length its neighbours imply.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Shape(format!("student layers: {m}")));
        let conv = |l: &ConvLayer, k: usize, what: &str| -> Result<()> {
            if l.weight.len() != l.c_out * k || l.bias.len() != l.c_out || l.stride == 0 {
                return bad(format!(
                    "{what} weight/bias do not match {}→{}",
                    l.c_in, l.c_out
                ));
            }
            if l.prelu.as_ref().is_some_and(|a| a.len() != l.c_out) {
                return bad(format!("{what} has the wrong number of PReLU slopes"));
            }
            Ok(())
        };
        if self.stem.c_in != 3 {
            return bad("the stem must take 3 channels".into());
        }
        conv(&self.stem, self.stem.c_in * 9, "stem")?;
        let (mut c, mut side) = (
            self.stem.c_out,
            (self.resolution.max(1) - 1) / self.stem.stride.max(1) + 1,
        );
        for (i, b) in self.blocks.iter().enumerate() {
            if b.dw.c_in != c || b.dw.c_out != c || b.pw.c_in != c || b.pw.stride != 1 {
                return bad(format!("block {i} channels do not chain"));
            }
            conv(&b.dw, 9, "depthwise")?;
            conv(&b.pw, b.pw.c_in, "pointwise")?;
            if b.residual && (b.dw.stride != 1 || b.pw.c_out != c) {
                return bad(format!("block {i} cannot have a residual"));
            }
            side = (side - 1) / b.dw.stride + 1;
            c = b.pw.c_out;
        }
        let m = self.linear_bias.len();
        if self.gdc_weight.len() != c * side * side
            || self.gdc_bias.len() != c
            || self.linear_weight.len() != m * c
            || m == 0
        {
            return bad("head sizes do not match the last block".into());
        }
        Ok(())
    }

    pub fn embedding_size(&self) -> usize {
        self.linear_bias.len()
    }
}

struct DevConv {
    w: DevBuf,
    b: CudaSlice<f32>,
    alpha: Option<CudaSlice<f32>>,
    c_in: usize,
    c_out: usize,
    stride: usize,
}

impl DevConv {
    fn upload(dev: &CudaDevice, l: &ConvLayer, p: Precision) -> Result<DevConv> {
        let s = &dev.stream;
        Ok(DevConv {
            w: DevBuf::upload(dev, &l.weight, p)?,
            b: s.clone_htod(&l.bias).map_err(driver_err("upload"))?,
            alpha: match &l.prelu {
                Some(a) => Some(s.clone_htod(a).map_err(driver_err("upload"))?),
                None => None,
            },
            c_in: l.c_in,
            c_out: l.c_out,
            stride: l.stride,
        })
    }
}

/// Faces per chunk of the pipelined `forward`: large enough that launches are negligible,
/// small enough that copies of one chunk overlap the kernels of the previous one.
pub const PIPELINE_CHUNK: usize = 8192;
/// Distinct batch sizes whose launch sequence is kept as a CUDA graph.
const MAX_GRAPHS: usize = 8;

/// The student resident on a GPU, with activation buffers sized for the largest batch seen.
pub struct CudaStudent {
    dev: Arc<CudaDevice>,
    precision: Precision,
    resolution: usize,
    stem: DevConv,
    blocks: Vec<(DevConv, DevConv, bool)>,
    gdc_w: DevBuf,
    gdc_b: CudaSlice<f32>,
    lin_w: DevBuf,
    lin_b: CudaSlice<f32>,
    m: usize,
    /// Which depthwise kernel the unfused blocks use.
    depthwise: Depthwise,
    /// Whether blocks run as one fused depthwise+pointwise kernel or as two (the default).
    fused: bool,
    /// The engine of the pointwise GEMMs: tensor cores by default for f16 on sm_80+.
    gemm: Gemm,
    /// Whether `forward` replays a captured CUDA graph per batch size (the default).
    use_graphs: bool,
    graphs: HashMap<usize, CudaGraph>,
    /// Largest activation of one face, in values.
    per_face: usize,
    capacity: usize,
    /// Two input/embedding slots: slot 0 for `upload_input`/`enqueue`, both for the pipeline.
    inputs: [DevBuf; 2],
    embs: [CudaSlice<f32>; 2],
    /// Activation ping-pong buffers and the unfused blocks' depthwise output.
    cur: DevBuf,
    out: DevBuf,
    mid: DevBuf,
    pipeline: Option<Pipeline>,
    /// When set, `enqueue_slot` records an event after every kernel (see `profile`).
    marks: Option<Vec<(String, CudaEvent)>>,
}

/// What the chunked `forward` keeps between calls: page-locked host staging (so copies are
/// truly asynchronous), a copy stream beside the compute stream, and the events that order them.
struct Pipeline {
    copy: Arc<CudaStream>,
    pin_in: [PinnedHostSlice<u16>; 2],
    pin_in32: [PinnedHostSlice<f32>; 2],
    pin_out: [PinnedHostSlice<f32>; 2],
    in_ready: [CudaEvent; 2],
    in_free: [CudaEvent; 2],
    out_ready: [CudaEvent; 2],
    out_done: [CudaEvent; 2],
}

impl CudaStudent {
    /// Uploads the layers to `dev` in `precision`.
    pub fn new(dev: Arc<CudaDevice>, layers: &StudentLayers, precision: Precision) -> Result<Self> {
        layers.validate()?;
        let r = layers.resolution;
        let mut side = (r - 1) / layers.stem.stride + 1;
        let mut per_face = layers.stem.c_out * side * side;
        let mut blocks = Vec::new();
        for b in &layers.blocks {
            side = (side - 1) / b.dw.stride + 1;
            per_face = per_face
                .max(b.dw.c_out * side * side)
                .max(b.pw.c_out * side * side);
            blocks.push((
                DevConv::upload(&dev, &b.dw, precision)?,
                DevConv::upload(&dev, &b.pw, precision)?,
                b.residual,
            ));
        }
        let s = dev.stream.clone();
        let d: &CudaDevice = &dev;
        // Measured fastest on an H200 (BENCHMARKS.md): f16 on the tensor cores with the k-major
        // (`ldmatrix`) input tile, and the tiled depthwise kernel.
        let gemm = if precision == Precision::F16 && d.tensor_cores() {
            Gemm::TensorCoresLdmatrix
        } else {
            Gemm::Fma
        };
        let emb = || -> Result<CudaSlice<f32>> { s.alloc_zeros(1).map_err(driver_err("alloc")) };
        Ok(CudaStudent {
            precision,
            resolution: r,
            stem: DevConv::upload(d, &layers.stem, precision)?,
            blocks,
            gdc_w: DevBuf::upload(d, &layers.gdc_weight, precision)?,
            gdc_b: s
                .clone_htod(&layers.gdc_bias)
                .map_err(driver_err("upload"))?,
            lin_w: DevBuf::upload(d, &layers.linear_weight, precision)?,
            lin_b: s
                .clone_htod(&layers.linear_bias)
                .map_err(driver_err("upload"))?,
            m: layers.embedding_size(),
            // Separate depthwise and pointwise kernels measured faster than the fused block on
            // an H200 for every engine and batch (BENCHMARKS.md), so they are the default.
            fused: false,
            depthwise: Depthwise::Tiles,
            gemm,
            use_graphs: true,
            graphs: HashMap::new(),
            per_face,
            capacity: 0,
            inputs: [
                DevBuf::zeros(d, 1, precision)?,
                DevBuf::zeros(d, 1, precision)?,
            ],
            embs: [emb()?, emb()?],
            cur: DevBuf::zeros(d, 1, precision)?,
            out: DevBuf::zeros(d, 1, precision)?,
            mid: DevBuf::zeros(d, 1, precision)?,
            pipeline: None,
            marks: None,
            dev,
        })
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Chooses the depthwise kernel of the unfused blocks.
    pub fn set_depthwise(&mut self, kind: Depthwise) {
        if kind != self.depthwise {
            self.depthwise = kind;
            self.graphs.clear();
        }
    }

    pub fn depthwise(&self) -> Depthwise {
        self.depthwise
    }

    /// Chooses fused depthwise+pointwise blocks or the two separate kernels (default).
    pub fn set_fused(&mut self, fused: bool) {
        if fused != self.fused {
            self.graphs.clear();
        }
        self.fused = fused;
    }

    pub fn fused(&self) -> bool {
        self.fused
    }

    /// Chooses the pointwise GEMM engine; tensor cores need f16 storage and sm_80+.
    pub fn set_gemm(&mut self, gemm: Gemm) -> Result<()> {
        gemm.check(&self.dev, self.precision)?;
        if gemm != self.gemm {
            self.graphs.clear();
        }
        self.gemm = gemm;
        Ok(())
    }

    pub fn gemm(&self) -> Gemm {
        self.gemm
    }

    /// Whether `forward` replays one captured CUDA graph per batch size (default on).
    pub fn set_graphs(&mut self, on: bool) {
        self.use_graphs = on;
        if !on {
            self.graphs.clear();
        }
    }

    pub fn graphs(&self) -> bool {
        self.use_graphs
    }

    pub fn device(&self) -> &Arc<CudaDevice> {
        &self.dev
    }

    /// Grows the activation buffers to hold `n` faces (and drops graphs that point at the old).
    pub fn reserve(&mut self, n: usize) -> Result<()> {
        if n <= self.capacity {
            return Ok(());
        }
        self.graphs.clear();
        let d: &CudaDevice = &self.dev;
        let p = self.precision;
        let r = self.resolution;
        for i in 0..2 {
            self.inputs[i] = DevBuf::zeros(d, n * 3 * r * r, p)?;
            self.embs[i] = d
                .stream
                .alloc_zeros(n * self.m)
                .map_err(driver_err("alloc"))?;
        }
        self.cur = DevBuf::zeros(d, n * self.per_face, p)?;
        self.mid = DevBuf::zeros(d, n * self.per_face, p)?;
        self.out = DevBuf::zeros(d, n * self.per_face, p)?;
        self.capacity = n;
        Ok(())
    }

    fn check_input(&self, x: &[f32], n: usize) -> Result<()> {
        let r = self.resolution;
        if x.len() != n * 3 * r * r || n == 0 {
            return Err(Error::Shape(format!(
                "student input must be [n, 3, {r}, {r}] with n ≥ 1, got {} values for n = {n}",
                x.len()
            )));
        }
        Ok(())
    }

    /// Copies `n` normalised faces `[n, 3, r, r]` to the device input buffer (slot 0).
    pub fn upload_input(&mut self, x: &[f32], n: usize) -> Result<()> {
        self.check_input(x, n)?;
        self.reserve(n)?;
        let dev = self.dev.clone();
        self.inputs[0].write(&dev, x)
    }

    /// Queues the forward pass of the `n` faces already in the input buffer (no copies, no
    /// graph): every kernel launched one by one.
    pub fn enqueue(&mut self, n: usize) -> Result<()> {
        self.enqueue_slot(0, n)
    }

    /// As `enqueue`, through the CUDA graph captured for batch `n` (captured on first use).
    pub fn enqueue_graph(&mut self, n: usize) -> Result<()> {
        if n > self.capacity || n == 0 {
            return Err(Error::Shape(format!(
                "batch {n} exceeds the uploaded {}",
                self.capacity
            )));
        }
        if !self.graphs.contains_key(&n) {
            if self.graphs.len() >= MAX_GRAPHS {
                self.graphs.clear();
            }
            let stream = self.dev.stream.clone();
            stream
                .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)
                .map_err(driver_err("begin graph capture"))?;
            let queued = self.enqueue_slot(0, n);
            // Always end the capture, so that a failed launch leaves the stream usable.
            let graph = stream.end_capture(sys::CUgraphInstantiate_flags(0));
            queued?;
            let graph = graph
                .map_err(driver_err("end graph capture"))?
                .ok_or_else(|| Error::Cuda("graph capture recorded nothing".into()))?;
            graph.upload().map_err(driver_err("graph upload"))?;
            self.graphs.insert(n, graph);
        }
        let graph = &self.graphs[&n];
        graph.launch().map_err(driver_err("graph launch"))
    }

    /// The layer sequence for `n` faces from input slot `slot` into embedding slot `slot`.
    /// It always uses the same buffers for the same `n`, so it can be captured as a graph.
    fn enqueue_slot(&mut self, slot: usize, n: usize) -> Result<()> {
        if n > self.capacity || n == 0 {
            return Err(Error::Shape(format!(
                "batch {n} exceeds the uploaded {}",
                self.capacity
            )));
        }
        let CudaStudent {
            dev,
            resolution,
            stem: st,
            blocks,
            gdc_w,
            gdc_b,
            lin_w,
            lin_b,
            m,
            fused,
            depthwise,
            gemm,
            inputs,
            embs,
            cur,
            out,
            mid,
            marks,
            ..
        } = self;
        let dev: &CudaDevice = dev;
        let mut mark = |name: String| -> Result<()> {
            if let Some(m) = marks.as_mut() {
                let e = dev
                    .stream
                    .record_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
                    .map_err(driver_err("event"))?;
                m.push((name, e));
            }
            Ok(())
        };
        mark("start".into())?;
        let r = *resolution;
        let (mut a, mut b) = (cur, out);
        conv3x3(
            dev,
            &inputs[slot],
            &st.w,
            &st.b,
            st.alpha.as_ref(),
            a,
            [n, 3, r, r],
            st.c_out,
            st.stride,
        )?;
        mark("stem conv3x3".into())?;
        let mut side = (r - 1) / st.stride + 1;
        for (i, (dw, pw, residual)) in blocks.iter().enumerate() {
            let in_side = side;
            side = (side - 1) / dw.stride + 1;
            if *fused {
                depthwise_pointwise_on(
                    *gemm,
                    dev,
                    a,
                    (&dw.w, &dw.b, dw.alpha.as_ref()),
                    (&pw.w, &pw.b, pw.alpha.as_ref()),
                    *residual,
                    b,
                    [n, dw.c_in, in_side, in_side],
                    dw.stride,
                    pw.c_out,
                )?;
                mark(format!(
                    "block {} dw+pw {}->{} {in_side}x{in_side}",
                    i + 1,
                    dw.c_in,
                    pw.c_out
                ))?;
            } else {
                depthwise3x3_on(
                    *depthwise,
                    dev,
                    a,
                    &dw.w,
                    &dw.b,
                    dw.alpha.as_ref(),
                    mid,
                    [n, dw.c_in, in_side, in_side],
                    dw.stride,
                )?;
                mark(format!(
                    "block {} depthwise {} {in_side}x{in_side}",
                    i + 1,
                    dw.c_in
                ))?;
                let res = if *residual { Some(&*a) } else { None };
                pointwise_on(
                    *gemm,
                    dev,
                    mid,
                    &pw.w,
                    &pw.b,
                    pw.alpha.as_ref(),
                    res,
                    b,
                    [n, pw.c_in, side * side],
                    pw.c_out,
                )?;
                mark(format!(
                    "block {} pointwise {}->{} {side}x{side}",
                    i + 1,
                    pw.c_in,
                    pw.c_out
                ))?;
            }
            std::mem::swap(&mut a, &mut b);
        }
        let c = blocks.last().map_or(st.c_out, |b| b.1.c_out);
        head_gemm(
            *gemm,
            dev,
            a,
            (gdc_w, gdc_b),
            (lin_w, lin_b),
            mid,
            b,
            &mut embs[slot],
            [n, c, side * side],
            *m,
        )?;
        mark("head gdc+linear+l2".into())
    }

    /// Milliseconds of each kernel of one forward pass over the `n` faces in the input buffer
    /// (CUDA events between launches; one warm-up pass first).
    pub fn profile(&mut self, n: usize) -> Result<Vec<(String, f64)>> {
        self.enqueue_slot(0, n)?;
        self.marks = Some(Vec::new());
        let run = self.enqueue_slot(0, n);
        let marks = self.marks.take().unwrap_or_default();
        run?;
        self.dev.synchronize()?;
        let mut out = Vec::new();
        for w in marks.windows(2) {
            let ms = w[0]
                .1
                .elapsed_ms(&w[1].1)
                .map_err(driver_err("event timing"))?;
            out.push((w[1].0.clone(), ms as f64));
        }
        Ok(out)
    }

    /// The first `n` embeddings `[n, m]` of the last `enqueue`/`enqueue_graph` (waits for it).
    pub fn read_embeddings(&self, n: usize) -> Result<Vec<f32>> {
        if n > self.capacity {
            return Err(Error::Shape(format!(
                "{n} embeddings asked of a buffer for {}",
                self.capacity
            )));
        }
        self.dev
            .stream
            .clone_dtoh(&self.embs[0].slice(0..n * self.m))
            .map_err(driver_err("copy embeddings to host"))
    }

    /// Embeds `n` normalised faces `[n, 3, r, r]` into L2-normalised `[n, m]` rows.
    ///
    /// Up to [`PIPELINE_CHUNK`] faces: one upload, the graph (or launches), one download.
    /// Larger batches go through [`forward_pipelined`](Self::forward_pipelined).
    pub fn forward(&mut self, x: &[f32], n: usize) -> Result<Vec<f32>> {
        self.check_input(x, n)?;
        if n > PIPELINE_CHUNK {
            return self.forward_pipelined(x, n);
        }
        self.upload_input(x, n)?;
        if self.use_graphs {
            self.enqueue_graph(n)?;
        } else {
            self.enqueue(n)?;
        }
        self.read_embeddings(n)
    }

    /// `forward` in chunks of [`PIPELINE_CHUNK`] faces through page-locked buffers: while the
    /// GPU runs chunk c, the copy stream uploads chunk c+1 and downloads chunk c−1, and the host
    /// fills and drains the pinned buffers (in parallel threads). Same results as `forward`.
    pub fn forward_pipelined(&mut self, x: &[f32], n: usize) -> Result<Vec<f32>> {
        self.check_input(x, n)?;
        let chunk = PIPELINE_CHUNK.min(n);
        self.reserve(chunk)?;
        self.ensure_pipeline(chunk)?;
        let face = 3 * self.resolution * self.resolution;
        let m = self.m;
        let chunks = n.div_ceil(chunk);
        let mut result = vec![0f32; n * m];
        let compute = self.dev.stream.clone();
        for c in 0..chunks + 1 {
            if c < chunks {
                let s = c % 2;
                let (lo, hi) = (c * chunk, ((c + 1) * chunk).min(n));
                let len = hi - lo;
                let pl = self.pipeline.as_mut().ok_or_else(no_pipeline)?;
                // The upload of chunk c−2 from this pinned buffer must be done before refilling.
                pl.in_ready[s]
                    .synchronize()
                    .map_err(driver_err("pipeline wait"))?;
                let src = &x[lo * face..hi * face];
                let copy = pl.copy.clone();
                match &mut self.inputs[s] {
                    DevBuf::F16(dst) => {
                        let pin = pl.pin_in[s]
                            .as_mut_slice()
                            .map_err(driver_err("pinned buffer"))?;
                        par_fill(&mut pin[..src.len()], src, |v| f16::from_f32(v).to_bits());
                        copy.wait(&pl.in_free[s]).map_err(driver_err("wait"))?;
                        copy.memcpy_htod(&pl.pin_in[s], &mut dst.slice_mut(0..chunk * face))
                            .map_err(driver_err("copy to device"))?;
                    }
                    DevBuf::F32(dst) => {
                        let pin = pl.pin_in32[s]
                            .as_mut_slice()
                            .map_err(driver_err("pinned buffer"))?;
                        par_fill(&mut pin[..src.len()], src, |v| v);
                        copy.wait(&pl.in_free[s]).map_err(driver_err("wait"))?;
                        copy.memcpy_htod(&pl.pin_in32[s], &mut dst.slice_mut(0..chunk * face))
                            .map_err(driver_err("copy to device"))?;
                    }
                }
                pl.in_ready[s].record(&copy).map_err(driver_err("record"))?;
                compute.wait(&pl.in_ready[s]).map_err(driver_err("wait"))?;
                // The download of chunk c−2 from this embedding slot must be done too.
                compute.wait(&pl.out_done[s]).map_err(driver_err("wait"))?;
                self.enqueue_slot(s, len)?;
                let pl = self.pipeline.as_mut().ok_or_else(no_pipeline)?;
                pl.in_free[s]
                    .record(&compute)
                    .map_err(driver_err("record"))?;
                pl.out_ready[s]
                    .record(&compute)
                    .map_err(driver_err("record"))?;
                copy.wait(&pl.out_ready[s]).map_err(driver_err("wait"))?;
                copy.memcpy_dtoh(&self.embs[s].slice(0..chunk * m), &mut pl.pin_out[s])
                    .map_err(driver_err("copy to host"))?;
                pl.out_done[s].record(&copy).map_err(driver_err("record"))?;
            }
            if c >= 1 {
                // Drain chunk c−1 while chunk c runs.
                let p = c - 1;
                let s = p % 2;
                let (lo, hi) = (p * chunk, ((p + 1) * chunk).min(n));
                let pl = self.pipeline.as_mut().ok_or_else(no_pipeline)?;
                pl.out_done[s]
                    .synchronize()
                    .map_err(driver_err("pipeline wait"))?;
                let pin = pl.pin_out[s]
                    .as_slice()
                    .map_err(driver_err("pinned buffer"))?;
                par_fill(&mut result[lo * m..hi * m], &pin[..(hi - lo) * m], |v| v);
            }
        }
        Ok(result)
    }

    fn ensure_pipeline(&mut self, chunk: usize) -> Result<()> {
        let face = 3 * self.resolution * self.resolution;
        if self
            .pipeline
            .as_ref()
            .is_some_and(|p| p.pin_out[0].len() >= chunk * self.m)
        {
            return Ok(());
        }
        let ctx = self.dev.ctx.clone();
        let (in16, in32) = match self.precision {
            Precision::F16 => (chunk * face, 1),
            Precision::F32 => (1, chunk * face),
        };
        let ev = || ctx.new_event(None).map_err(driver_err("event"));
        let pinned16 = || -> Result<PinnedHostSlice<u16>> {
            // SAFETY: page-locked host memory of `in16` u16s; every value the device reads is
            // written by `par_fill` first (and u16 has no invalid bit patterns).
            unsafe { ctx.alloc_pinned_with_flags::<u16>(in16, 0) }.map_err(driver_err("pinned"))
        };
        let pinned32 = |len: usize| -> Result<PinnedHostSlice<f32>> {
            // SAFETY: as above: written before it is read; any bit pattern is a valid f32.
            unsafe { ctx.alloc_pinned_with_flags::<f32>(len, 0) }.map_err(driver_err("pinned"))
        };
        let in_ready = [ev()?, ev()?];
        let out_done = [ev()?, ev()?];
        // Recorded once so that the first waits on them are satisfied.
        let copy = ctx.new_stream().map_err(driver_err("copy stream"))?;
        for e in in_ready.iter().chain(out_done.iter()) {
            e.record(&copy).map_err(driver_err("record"))?;
        }
        let in_free = [ev()?, ev()?];
        for e in &in_free {
            e.record(&self.dev.stream).map_err(driver_err("record"))?;
        }
        self.pipeline = Some(Pipeline {
            pin_in: [pinned16()?, pinned16()?],
            pin_in32: [pinned32(in32)?, pinned32(in32)?],
            pin_out: [pinned32(chunk * self.m)?, pinned32(chunk * self.m)?],
            in_ready,
            in_free,
            out_ready: [ev()?, ev()?],
            out_done,
            copy,
        });
        Ok(())
    }
}

fn no_pipeline() -> Error {
    Error::Cuda("the copy pipeline is not set up".into())
}

/// `dst[i] = f(src[i])` on up to 8 threads (filling page-locked staging is host-bound).
fn par_fill<S: Copy + Sync, D: Send>(dst: &mut [D], src: &[S], f: impl Fn(S) -> D + Sync) {
    let threads = std::thread::available_parallelism()
        .map_or(1, |t| t.get())
        .clamp(1, 8);
    let part = dst.len().div_ceil(threads).max(1 << 16);
    std::thread::scope(|scope| {
        for (d, s) in dst.chunks_mut(part).zip(src.chunks(part)) {
            let f = &f;
            scope.spawn(move || {
                for (o, i) in d.iter_mut().zip(s) {
                    *o = f(*i);
                }
            });
        }
    });
}
