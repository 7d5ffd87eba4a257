//! The launcher of `kernels/conv3x3.cu`: the stem's direct 3×3 conv with bias and PReLU.
//! Must not keep state between launches.

use crate::cuda::buffer::DevBuf;
use crate::cuda::device::CudaDevice;
use crate::cuda::driver_err;
use crate::cuda::launch::{dim, need, push, push_mut, push_opt, same_precision, thread_cfg};
use crate::error::{Error, Result};
use cudarc::driver::{CudaSlice, PushKernelArg};

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
