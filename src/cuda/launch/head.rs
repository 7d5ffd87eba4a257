//! The launchers of `kernels/head.cu` (global depthwise conv, L2 normalisation) around the
//! head's linear layer on the pointwise GEMM. Must not keep state between launches.

use crate::cuda::buffer::DevBuf;
use crate::cuda::device::CudaDevice;
use crate::cuda::driver_err;
use crate::cuda::gemm::Gemm;
use crate::cuda::launch::pointwise::pointwise_on;
use crate::cuda::launch::{dim, need, push, push_mut, same_precision, thread_cfg};
use crate::error::Result;
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

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
