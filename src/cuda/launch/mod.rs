//! The kernel launchers, one file per kernel file (`launch/depthwise.rs` launches
//! `kernels/depthwise.cu`), each launcher checked against `cpu::scalar` by `tests/cuda_gpu.rs`;
//! and the argument and grid helpers they share. Must not hold device state between calls:
//! the runtimes (`student.rs`, `train.rs`, `graph.rs`) own buffers, graphs and streams.

pub mod conv3x3;
pub mod depthwise;
pub mod head;
pub mod pointwise;
pub mod train;

use crate::cuda::buffer::{DevBuf, Precision};
use crate::error::{Error, Result};
use cudarc::driver::{CudaSlice, LaunchArgs, LaunchConfig, PushKernelArg};

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
pub(crate) fn thread_cfg(total: usize, what: &str) -> Result<LaunchConfig> {
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
