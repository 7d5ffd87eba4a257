//! The launchers of `kernels/depthwise.cu`: depthwise 3×3 with bias and PReLU, and the choice
//! between its two kernels (`Depthwise`). Must not keep state between launches.

use crate::cuda::buffer::DevBuf;
use crate::cuda::device::CudaDevice;
use crate::cuda::driver_err;
use crate::cuda::launch::{dim, need, push, push_mut, push_opt, same_precision, thread_cfg};
use crate::error::{Error, Result};
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

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
