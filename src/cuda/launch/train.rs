//! The launchers of `kernels/train.cu` (f32): the training-mode batch-norm + PReLU forward and
//! backward, the conv, global depthwise and linear gradients, each checked against
//! `cpu::scalar`; and the grid and buffer helpers the training runtime shares. Must not keep
//! state between launches (`cuda::train` owns the network's buffers).

use crate::cuda::buffer::DevBuf;
use crate::cuda::device::CudaDevice;
use crate::cuda::driver_err;
use crate::cuda::launch::{dim, need, NULL_PTR};
use crate::error::{Error, Result};
use cudarc::driver::{CudaSlice, LaunchArgs, LaunchConfig, PushKernelArg};

/// Threads per block of the per-channel reductions (`TR_THREADS` in kernels/train.cu).
const TR_THREADS: u32 = 256;

fn push_opt<'a>(b: &mut LaunchArgs<'a>, x: Option<&'a CudaSlice<f32>>) {
    match x {
        Some(s) => b.arg(s),
        None => b.arg(&NULL_PTR),
    };
}

/// A grid-stride launch over `total` elements.
fn flat_cfg(total: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (total.div_ceil(256).clamp(1, 1 << 20) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One block per channel (or weight row) for the reductions.
fn rows_cfg(rows: usize) -> Result<LaunchConfig> {
    Ok(LaunchConfig {
        grid_dim: (
            u32::try_from(rows.max(1)).map_err(|_| Error::Shape("too many rows".into()))?,
            1,
            1,
        ),
        block_dim: (TR_THREADS, 1, 1),
        shared_mem_bytes: 0,
    })
}

/// The f32 slice of a device buffer (training runs in f32 only).
pub(crate) fn f32_of(b: &DevBuf) -> Result<&CudaSlice<f32>> {
    match b {
        DevBuf::F32(s) => Ok(s),
        DevBuf::F16(_) => Err(Error::Shape("GPU training runs in f32 only".into())),
    }
}

pub(crate) fn f32_of_mut(b: &mut DevBuf) -> Result<&mut CudaSlice<f32>> {
    match b {
        DevBuf::F32(s) => Ok(s),
        DevBuf::F16(_) => Err(Error::Shape("GPU training runs in f32 only".into())),
    }
}

/// Batch mean and biased variance per channel of `x [n, c, hw]`: matches the statistics of
/// `cpu::scalar::batch_norm_train_forward`.
pub fn bn_stats(
    dev: &CudaDevice,
    x: &CudaSlice<f32>,
    mean: &mut CudaSlice<f32>,
    var: &mut CudaSlice<f32>,
    [n, c, hw]: [usize; 3],
) -> Result<()> {
    need(x.len(), n * c * hw, "bn input")?;
    need(mean.len(), c, "bn mean")?;
    need(var.len(), c, "bn var")?;
    if n * hw == 0 {
        return Err(Error::Shape("batch-norm over an empty batch".into()));
    }
    let a = [dim(n, "n")?, dim(c, "c")?, dim(hw, "hw")?];
    let mut b = dev.stream.launch_builder(dev.function("bn_stats_f32")?);
    b.arg(x).arg(mean).arg(var);
    for v in &a {
        b.arg(v);
    }
    // SAFETY: matches `bn_stats_f32` (one block of TR_THREADS per channel); sizes checked above.
    unsafe { b.launch(rows_cfg(c)?) }.map_err(driver_err("bn_stats launch"))?;
    Ok(())
}

/// `z` = batch-norm of `x` with the given statistics, `y` = PReLU(`z`) (or `z` without slopes):
/// matches `batch_norm_train_forward`'s output followed by `cpu::scalar::prelu`.
#[allow(clippy::too_many_arguments)]
pub fn bn_prelu_forward(
    dev: &CudaDevice,
    x: &CudaSlice<f32>,
    (mean, var): (&CudaSlice<f32>, &CudaSlice<f32>),
    (gamma, beta): (&CudaSlice<f32>, &CudaSlice<f32>),
    alpha: Option<&CudaSlice<f32>>,
    z: &mut CudaSlice<f32>,
    y: &mut CudaSlice<f32>,
    [n, c, hw]: [usize; 3],
    eps: f32,
) -> Result<()> {
    let len = n * c * hw;
    need(x.len(), len, "bn input")?;
    need(z.len(), len, "bn output")?;
    need(y.len(), len, "prelu output")?;
    for (s, what) in [
        (mean, "mean"),
        (var, "var"),
        (gamma, "gamma"),
        (beta, "beta"),
    ] {
        need(s.len(), c, what)?;
    }
    need(alpha.map_or(c, |a| a.len()), c, "slopes")?;
    let a = [dim(n, "n")?, dim(c, "c")?, dim(hw, "hw")?];
    let mut b = dev
        .stream
        .launch_builder(dev.function("bn_prelu_forward_f32")?);
    b.arg(x).arg(mean).arg(var).arg(gamma).arg(beta);
    push_opt(&mut b, alpha);
    b.arg(z).arg(y);
    for v in &a {
        b.arg(v);
    }
    b.arg(&eps);
    // SAFETY: matches `bn_prelu_forward_f32` (grid-stride); sizes checked above; z and y are
    // distinct buffers (two `&mut`).
    unsafe { b.launch(flat_cfg(len)) }.map_err(driver_err("bn_prelu_forward launch"))?;
    Ok(())
}

/// Backward of `y = PReLU(BN(x))` (PReLU optional): `dx`, `dgamma`, `dbeta` and, with slopes,
/// `dalpha`. Matches `cpu::scalar::prelu_backward` then `batch_norm_train_backward`.
/// `z` (the BN output) is needed only with PReLU.
#[allow(clippy::too_many_arguments)]
pub fn bn_prelu_backward(
    dev: &CudaDevice,
    x: &CudaSlice<f32>,
    prelu: Option<(&CudaSlice<f32>, &CudaSlice<f32>, &mut CudaSlice<f32>)>,
    dy: &CudaSlice<f32>,
    (gamma, mean, var): (&CudaSlice<f32>, &CudaSlice<f32>, &CudaSlice<f32>),
    dgamma: &mut CudaSlice<f32>,
    dbeta: &mut CudaSlice<f32>,
    dx: &mut CudaSlice<f32>,
    [n, c, hw]: [usize; 3],
    eps: f32,
) -> Result<()> {
    let len = n * c * hw;
    need(x.len(), len, "bn input")?;
    need(dy.len(), len, "output gradient")?;
    need(dx.len(), len, "input gradient")?;
    for (s, what) in [(gamma, "gamma"), (mean, "mean"), (var, "var")] {
        need(s.len(), c, what)?;
    }
    need(dgamma.len(), c, "dgamma")?;
    need(dbeta.len(), c, "dbeta")?;
    let (z, alpha, mut dalpha) = match prelu {
        Some((z, a, da)) => {
            need(z.len(), len, "bn output")?;
            need(a.len(), c, "slopes")?;
            need(da.len(), c, "slope gradient")?;
            (Some(z), Some(a), Some(da))
        }
        None => (None, None, None),
    };
    let a = [dim(n, "n")?, dim(c, "c")?, dim(hw, "hw")?];
    {
        let mut b = dev
            .stream
            .launch_builder(dev.function("bn_prelu_backward_sums_f32")?);
        b.arg(x);
        push_opt(&mut b, z);
        b.arg(dy).arg(mean).arg(var);
        push_opt(&mut b, alpha);
        b.arg(&mut *dgamma).arg(&mut *dbeta);
        match dalpha.as_mut() {
            Some(d) => b.arg(&mut **d),
            None => b.arg(&NULL_PTR),
        };
        for v in &a {
            b.arg(v);
        }
        b.arg(&eps);
        // SAFETY: matches `bn_prelu_backward_sums_f32` (one block of TR_THREADS per channel);
        // sizes checked above; z/alpha/dalpha are all null or all present.
        unsafe { b.launch(rows_cfg(c)?) }.map_err(driver_err("bn backward sums launch"))?;
    }
    let mut b = dev
        .stream
        .launch_builder(dev.function("bn_prelu_backward_dx_f32")?);
    b.arg(x);
    push_opt(&mut b, z);
    b.arg(dy).arg(gamma).arg(mean).arg(var);
    push_opt(&mut b, alpha);
    b.arg(&*dgamma).arg(&*dbeta).arg(dx);
    for v in &a {
        b.arg(v);
    }
    b.arg(&eps);
    // SAFETY: matches `bn_prelu_backward_dx_f32` (grid-stride); sizes checked above; dx is the
    // only buffer written.
    unsafe { b.launch(flat_cfg(len)) }.map_err(driver_err("bn backward dx launch"))?;
    Ok(())
}

/// `a += b` over the first `len` values (the residual add and its gradient).
pub fn add_inplace(
    dev: &CudaDevice,
    a: &mut CudaSlice<f32>,
    b_in: &CudaSlice<f32>,
    len: usize,
) -> Result<()> {
    need(a.len(), len, "sum")?;
    need(b_in.len(), len, "addend")?;
    let l = len as i64;
    let mut b = dev.stream.launch_builder(dev.function("add_inplace_f32")?);
    b.arg(a).arg(b_in).arg(&l);
    // SAFETY: matches `add_inplace_f32`; both buffers hold `len` values and are distinct.
    unsafe { b.launch(flat_cfg(len)) }.map_err(driver_err("add launch"))?;
    Ok(())
}

/// Depthwise 3×3 (pad 1, `stride`) input gradient: matches `cpu::scalar::depthwise_backward_data`.
pub fn depthwise_backward_data(
    dev: &CudaDevice,
    dy: &CudaSlice<f32>,
    w: &CudaSlice<f32>,
    dx: &mut CudaSlice<f32>,
    [n, c, h, wd]: [usize; 4],
    stride: usize,
) -> Result<()> {
    if stride == 0 || h == 0 || wd == 0 {
        return Err(Error::Shape("depthwise backward needs stride ≥ 1".into()));
    }
    let (oh, ow) = ((h - 1) / stride + 1, (wd - 1) / stride + 1);
    need(dy.len(), n * c * oh * ow, "depthwise output gradient")?;
    need(w.len(), c * 9, "depthwise weight")?;
    need(dx.len(), n * c * h * wd, "depthwise input gradient")?;
    let a = [
        dim(n, "n")?,
        dim(c, "c")?,
        dim(h, "h")?,
        dim(wd, "w")?,
        dim(stride, "stride")?,
    ];
    let mut b = dev
        .stream
        .launch_builder(dev.function("depthwise_backward_data_f32")?);
    b.arg(dy).arg(w).arg(dx);
    for v in &a {
        b.arg(v);
    }
    // SAFETY: matches `depthwise_backward_data_f32` (grid-stride); sizes checked above.
    unsafe { b.launch(flat_cfg(n * c * h * wd)) }.map_err(driver_err("dw backward launch"))?;
    Ok(())
}

/// Weight gradient of a 3×3 pad-1 conv, dense (`depthwise == false`, OIHW `[c_out, c_in, 3, 3]`)
/// or depthwise (`[c, 1, 3, 3]`, `c_out == c_in`): matches `conv2d_backward_weight` /
/// `depthwise_backward_weight`.
#[allow(clippy::too_many_arguments)]
pub fn conv3x3_backward_weight(
    dev: &CudaDevice,
    x: &CudaSlice<f32>,
    dy: &CudaSlice<f32>,
    dw: &mut CudaSlice<f32>,
    [n, c_in, h, wd]: [usize; 4],
    c_out: usize,
    stride: usize,
    depthwise: bool,
) -> Result<()> {
    if stride == 0 || h == 0 || wd == 0 || (depthwise && c_out != c_in) {
        return Err(Error::Shape(
            "conv3x3 weight gradient: bad stride or depthwise channels".into(),
        ));
    }
    let (oh, ow) = ((h - 1) / stride + 1, (wd - 1) / stride + 1);
    let cin_g = if depthwise { 1 } else { c_in };
    need(x.len(), n * c_in * h * wd, "conv input")?;
    need(dy.len(), n * c_out * oh * ow, "conv output gradient")?;
    need(dw.len(), c_out * cin_g * 9, "conv weight gradient")?;
    let a = [
        dim(n, "n")?,
        dim(c_in, "c_in")?,
        dim(h, "h")?,
        dim(wd, "w")?,
        dim(c_out, "c_out")?,
        dim(stride, "stride")?,
        i32::from(depthwise),
    ];
    let mut b = dev
        .stream
        .launch_builder(dev.function("conv3x3_backward_weight_f32")?);
    b.arg(x).arg(dy).arg(dw);
    for v in &a {
        b.arg(v);
    }
    // SAFETY: matches `conv3x3_backward_weight_f32` (one block of TR_THREADS per weight row);
    // sizes checked above.
    unsafe { b.launch(rows_cfg(c_out * cin_g)?) }.map_err(driver_err("conv dw launch"))?;
    Ok(())
}

/// Pointwise weight gradient `dw[co, ci] = Σ dy[n, co, p]·x[n, ci, p]`: matches
/// `cpu::scalar::pointwise_backward_weight`. Column chunks give parallelism; their partial sums
/// (f64) are added in a fixed order, so the result is deterministic.
pub fn pointwise_backward_weight(
    dev: &CudaDevice,
    x: &CudaSlice<f32>,
    dy: &CudaSlice<f32>,
    dw: &mut CudaSlice<f32>,
    [n, c_in, hw]: [usize; 3],
    c_out: usize,
) -> Result<()> {
    need(x.len(), n * c_in * hw, "pointwise input")?;
    need(dy.len(), n * c_out * hw, "pointwise output gradient")?;
    need(dw.len(), c_out * c_in, "pointwise weight gradient")?;
    let cols = n * hw;
    let tiles = c_in.div_ceil(16) * c_out.div_ceil(16);
    // About 1024 blocks in all, each chunk a multiple of the 16-column tile.
    let splits = (1024 / tiles.max(1)).clamp(1, cols.div_ceil(16).max(1));
    let chunk = cols.div_ceil(splits).div_ceil(16) * 16;
    let splits = cols.div_ceil(chunk.max(1)).max(1);
    let mut partial: CudaSlice<f64> = dev
        .stream
        .alloc_zeros(splits * c_out * c_in)
        .map_err(driver_err("alloc"))?;
    let a = [
        dim(n, "n")?,
        dim(c_in, "c_in")?,
        dim(c_out, "c_out")?,
        dim(hw, "hw")?,
    ];
    let chunk_arg = chunk as i64;
    {
        let cfg = LaunchConfig {
            grid_dim: (
                c_in.div_ceil(16) as u32,
                c_out.div_ceil(16) as u32,
                splits as u32,
            ),
            block_dim: (16, 16, 1),
            shared_mem_bytes: 0,
        };
        let mut b = dev
            .stream
            .launch_builder(dev.function("pointwise_backward_weight_partial_f32")?);
        b.arg(x).arg(dy).arg(&mut partial);
        for v in &a {
            b.arg(v);
        }
        b.arg(&chunk_arg);
        // SAFETY: matches `pointwise_backward_weight_partial_f32` (16×16 threads, z = chunk);
        // `partial` holds splits·c_out·c_in values; inputs checked above.
        unsafe { b.launch(cfg) }.map_err(driver_err("pw dw launch"))?;
    }
    let len = dim(c_out * c_in, "weights")?;
    let sp = dim(splits, "splits")?;
    let mut b = dev.stream.launch_builder(dev.function("sum_partials_f32")?);
    b.arg(&partial).arg(dw).arg(&len).arg(&sp);
    let cfg = LaunchConfig {
        grid_dim: ((c_out * c_in).div_ceil(256).max(1) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: matches `sum_partials_f32`; `partial` holds splits·len, `dw` len values.
    unsafe { b.launch(cfg) }.map_err(driver_err("sum partials launch"))?;
    Ok(())
}

/// Global depthwise conv without bias, `y[n, c] = Σ_p x[n, c, p]·w[c, p]`: matches
/// `cpu::scalar::global_depthwise_conv`.
pub fn gdc_forward(
    dev: &CudaDevice,
    x: &CudaSlice<f32>,
    w: &CudaSlice<f32>,
    y: &mut CudaSlice<f32>,
    [n, c, hw]: [usize; 3],
) -> Result<()> {
    need(x.len(), n * c * hw, "gdc input")?;
    need(w.len(), c * hw, "gdc weight")?;
    need(y.len(), n * c, "gdc output")?;
    let a = [dim(n, "n")?, dim(c, "c")?, dim(hw, "hw")?];
    let mut b = dev.stream.launch_builder(dev.function("gdc_forward_f32")?);
    b.arg(x).arg(w).arg(y);
    for v in &a {
        b.arg(v);
    }
    // SAFETY: matches `gdc_forward_f32` (one thread per output, bounds-checked); sizes above.
    unsafe { b.launch(flat_cfg(n * c)) }.map_err(driver_err("gdc launch"))?;
    Ok(())
}

/// Backward of the global depthwise conv: matches `cpu::scalar::global_depthwise_backward`.
#[allow(clippy::too_many_arguments)]
pub fn gdc_backward(
    dev: &CudaDevice,
    x: &CudaSlice<f32>,
    w: &CudaSlice<f32>,
    dy: &CudaSlice<f32>,
    dx: &mut CudaSlice<f32>,
    dw: &mut CudaSlice<f32>,
    [n, c, hw]: [usize; 3],
) -> Result<()> {
    need(x.len(), n * c * hw, "gdc input")?;
    need(w.len(), c * hw, "gdc weight")?;
    need(dy.len(), n * c, "gdc output gradient")?;
    need(dx.len(), n * c * hw, "gdc input gradient")?;
    need(dw.len(), c * hw, "gdc weight gradient")?;
    let a = [dim(n, "n")?, dim(c, "c")?, dim(hw, "hw")?];
    let mut b = dev.stream.launch_builder(dev.function("gdc_backward_f32")?);
    b.arg(x).arg(w).arg(dy).arg(dx).arg(dw);
    for v in &a {
        b.arg(v);
    }
    // SAFETY: matches `gdc_backward_f32` (one thread per weight, bounds-checked); sizes above.
    unsafe { b.launch(flat_cfg(c * hw)) }.map_err(driver_err("gdc backward launch"))?;
    Ok(())
}

/// `y[n, m] = x[n, k]·w[m, k]ᵀ` without bias: matches `cpu::scalar::linear`.
pub fn linear_forward(
    dev: &CudaDevice,
    x: &CudaSlice<f32>,
    w: &CudaSlice<f32>,
    y: &mut CudaSlice<f32>,
    [n, k, m]: [usize; 3],
) -> Result<()> {
    linear_launch("linear_forward_f32", dev, x, w, y, [n, k, m], n * m)
}

/// `dx[n, k] = dy[n, m]·w[m, k]`: matches `cpu::scalar::linear_backward_data`.
pub fn linear_backward_data(
    dev: &CudaDevice,
    dy: &CudaSlice<f32>,
    w: &CudaSlice<f32>,
    dx: &mut CudaSlice<f32>,
    [n, k, m]: [usize; 3],
) -> Result<()> {
    need(dy.len(), n * m, "linear output gradient")?;
    need(w.len(), m * k, "linear weight")?;
    need(dx.len(), n * k, "linear input gradient")?;
    linear_launch("linear_backward_data_f32", dev, dy, w, dx, [n, k, m], n * k)
}

/// `dw[m, k] = Σ_n dy[n, m]·x[n, k]`: matches `cpu::scalar::linear_backward_weight`.
pub fn linear_backward_weight(
    dev: &CudaDevice,
    x: &CudaSlice<f32>,
    dy: &CudaSlice<f32>,
    dw: &mut CudaSlice<f32>,
    [n, k, m]: [usize; 3],
) -> Result<()> {
    need(x.len(), n * k, "linear input")?;
    need(dy.len(), n * m, "linear output gradient")?;
    need(dw.len(), m * k, "linear weight gradient")?;
    linear_launch(
        "linear_backward_weight_f32",
        dev,
        x,
        dy,
        dw,
        [n, k, m],
        m * k,
    )
}

/// The three linear kernels share one argument list `(a, b, out, n, k, m)` and one thread per
/// output value.
fn linear_launch(
    name: &str,
    dev: &CudaDevice,
    a_in: &CudaSlice<f32>,
    b_in: &CudaSlice<f32>,
    out: &mut CudaSlice<f32>,
    [n, k, m]: [usize; 3],
    outputs: usize,
) -> Result<()> {
    if name == "linear_forward_f32" {
        need(a_in.len(), n * k, "linear input")?;
        need(b_in.len(), m * k, "linear weight")?;
        need(out.len(), n * m, "linear output")?;
    }
    let a = [dim(n, "n")?, dim(k, "k")?, dim(m, "m")?];
    dim(outputs, "outputs")?;
    let mut b = dev.stream.launch_builder(dev.function(name)?);
    b.arg(a_in).arg(b_in).arg(out);
    for v in &a {
        b.arg(v);
    }
    // SAFETY: matches `linear_*_f32` in kernels/train.cu (bounds-checked, one thread per output
    // value); every caller checked the three buffers' sizes.
    unsafe { b.launch(flat_cfg(outputs)) }.map_err(driver_err("linear launch"))?;
    Ok(())
}
