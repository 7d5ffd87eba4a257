//! The student's training-mode forward and backward on one GPU (f32): launchers for the kernels of
//! kernels/train.cu (each checked against `cpu::scalar`) and `CudaTrainNet`, which runs the
//! unfolded network from a plain parameter description up to the un-normalised embedding and
//! back from its gradient to every parameter gradient. It knows nothing of `model`, losses or
//! optimisers: the trainer (`train::gpu`) converts parameters in and gradients out.

use super::device::CudaDevice;
use super::driver_err;
use super::student::{conv3x3, depthwise3x3, dim, need, pointwise, DevBuf, Precision, NULL_PTR};
use crate::error::{Error, Result};
use cudarc::driver::{CudaSlice, LaunchArgs, LaunchConfig, PushKernelArg};
use std::sync::Arc;

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
fn f32_of(b: &DevBuf) -> Result<&CudaSlice<f32>> {
    match b {
        DevBuf::F32(s) => Ok(s),
        DevBuf::F16(_) => Err(Error::Shape("GPU training runs in f32 only".into())),
    }
}

fn f32_of_mut(b: &mut DevBuf) -> Result<&mut CudaSlice<f32>> {
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

/// One conv → batch-norm → PReLU unit of the unfolded student: conv weight (OIHW), BN scale and
/// shift, PReLU slopes. Used for both parameters and their gradients.
#[derive(Clone, Debug)]
pub struct TrainConv {
    pub weight: Vec<f32>,
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
    pub alpha: Vec<f32>,
}

/// A depthwise-3×3 then pointwise-1×1 block with its shape.
#[derive(Clone, Debug)]
pub struct TrainBlock {
    pub dw: TrainConv,
    pub pw: TrainConv,
    pub c_in: usize,
    pub c_out: usize,
    pub stride: usize,
    pub residual: bool,
}

/// The unfolded student as plain arrays (the trainable parameters, or their gradients): the
/// stem (3×3, stride 1, 3 → `stem_channels`), the blocks, then the head: global depthwise conv
/// → BN → linear → BN. Built by `train::gpu` from `StudentParams`.
#[derive(Clone, Debug)]
pub struct TrainLayers {
    pub resolution: usize,
    pub stem: TrainConv,
    pub blocks: Vec<TrainBlock>,
    pub gdc_weight: Vec<f32>,
    pub gdc_bn: (Vec<f32>, Vec<f32>),
    pub linear_weight: Vec<f32>,
    pub head_bn: (Vec<f32>, Vec<f32>),
}

/// The batch statistics of every training-mode BN, in network order (stem, each block's dw and
/// pw, head gdc, head): mean, biased variance, and the count they were taken over.
pub type BnStats = Vec<(Vec<f32>, Vec<f32>, usize)>;

impl TrainLayers {
    pub fn stem_channels(&self) -> usize {
        self.stem.gamma.len()
    }

    /// Channels entering the head.
    pub fn head_channels(&self) -> usize {
        self.blocks.last().map_or(self.stem_channels(), |b| b.c_out)
    }

    pub fn embedding_size(&self) -> usize {
        self.head_bn.0.len()
    }

    /// The side of the head's input map.
    pub fn head_side(&self) -> usize {
        self.blocks
            .iter()
            .fold(self.resolution, |s, b| (s - 1) / b.stride.max(1) + 1)
    }

    /// Checks that every array has the length the shapes imply.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Shape(format!("training layers: {m}")));
        let unit = |u: &TrainConv, k: usize, c: usize, what: &str| -> Result<()> {
            if u.weight.len() != k || u.gamma.len() != c || u.beta.len() != c || u.alpha.len() != c
            {
                return bad(format!("{what} sizes do not match {c} channels"));
            }
            Ok(())
        };
        if self.resolution == 0 {
            return bad("resolution 0".into());
        }
        let c0 = self.stem_channels();
        unit(&self.stem, c0 * 27, c0, "stem")?;
        let mut c = c0;
        for (i, b) in self.blocks.iter().enumerate() {
            if b.c_in != c || b.stride == 0 || (b.residual && (b.stride != 1 || b.c_out != c)) {
                return bad(format!("block {i} does not chain"));
            }
            unit(&b.dw, c * 9, c, "depthwise")?;
            unit(&b.pw, b.c_out * c, b.c_out, "pointwise")?;
            c = b.c_out;
        }
        let side = self.head_side();
        let m = self.embedding_size();
        if self.gdc_weight.len() != c * side * side
            || self.gdc_bn.0.len() != c
            || self.gdc_bn.1.len() != c
            || self.linear_weight.len() != m * c
            || self.head_bn.1.len() != m
            || m == 0
        {
            return bad("head sizes do not match the last block".into());
        }
        Ok(())
    }
}

/// A conv unit resident on the device, with the activations of the last forward pass.
struct DevUnit {
    w: DevBuf,
    /// The pointwise weight transposed `[c_in, c_out]`, for the input gradient (a GEMM).
    wt: Option<DevBuf>,
    gamma: CudaSlice<f32>,
    beta: CudaSlice<f32>,
    alpha: CudaSlice<f32>,
    mean: CudaSlice<f32>,
    var: CudaSlice<f32>,
    /// Conv output (BN input), BN output, PReLU output; `[n, c_out, side²]`.
    conv: DevBuf,
    z: CudaSlice<f32>,
    a: DevBuf,
}

/// Uploads `v`; an empty `v` (the head units' unused weight and slopes) becomes one zero, since
/// the driver refuses zero-byte allocations.
fn upload(dev: &CudaDevice, v: &[f32]) -> Result<CudaSlice<f32>> {
    if v.is_empty() {
        return zeros(dev, 1);
    }
    dev.stream.clone_htod(v).map_err(driver_err("upload"))
}

fn zeros(dev: &CudaDevice, len: usize) -> Result<CudaSlice<f32>> {
    dev.stream
        .alloc_zeros(len.max(1))
        .map_err(driver_err("alloc"))
}

fn transpose(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0; w.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = w[r * cols + c];
        }
    }
    t
}

impl DevUnit {
    fn new(dev: &CudaDevice, u: &TrainConv, pointwise_in: Option<usize>) -> Result<DevUnit> {
        let c = u.gamma.len();
        Ok(DevUnit {
            w: DevBuf::F32(upload(dev, &u.weight)?),
            wt: match pointwise_in {
                Some(c_in) => Some(DevBuf::upload(
                    dev,
                    &transpose(&u.weight, c, c_in),
                    Precision::F32,
                )?),
                None => None,
            },
            gamma: upload(dev, &u.gamma)?,
            beta: upload(dev, &u.beta)?,
            alpha: upload(dev, &u.alpha)?,
            mean: zeros(dev, c)?,
            var: zeros(dev, c)?,
            conv: DevBuf::zeros(dev, 1, Precision::F32)?,
            z: zeros(dev, 1)?,
            a: DevBuf::zeros(dev, 1, Precision::F32)?,
        })
    }

    fn set(&mut self, dev: &CudaDevice, u: &TrainConv, pointwise_in: Option<usize>) -> Result<()> {
        let s = &dev.stream;
        self.w.write(dev, &u.weight)?;
        if let (Some(wt), Some(c_in)) = (self.wt.as_mut(), pointwise_in) {
            wt.write(dev, &transpose(&u.weight, u.gamma.len(), c_in))?;
        }
        s.memcpy_htod(&u.gamma, &mut self.gamma)
            .map_err(driver_err("upload"))?;
        s.memcpy_htod(&u.beta, &mut self.beta)
            .map_err(driver_err("upload"))?;
        s.memcpy_htod(&u.alpha, &mut self.alpha)
            .map_err(driver_err("upload"))?;
        Ok(())
    }

    /// Sizes the activation buffers for `len` values.
    fn reserve(&mut self, dev: &CudaDevice, len: usize) -> Result<()> {
        if self.z.len() < len {
            self.conv = DevBuf::zeros(dev, len, Precision::F32)?;
            self.z = zeros(dev, len)?;
            self.a = DevBuf::zeros(dev, len, Precision::F32)?;
        }
        Ok(())
    }

    /// BN (batch statistics) and PReLU over `self.conv`, writing `z` and `a`.
    fn bn_prelu(&mut self, dev: &CudaDevice, shape: [usize; 3], eps: f32) -> Result<()> {
        bn_stats(
            dev,
            f32_of(&self.conv)?,
            &mut self.mean,
            &mut self.var,
            shape,
        )?;
        bn_prelu_forward(
            dev,
            f32_of(&self.conv)?,
            (&self.mean, &self.var),
            (&self.gamma, &self.beta),
            Some(&self.alpha),
            &mut self.z,
            f32_of_mut(&mut self.a)?,
            shape,
            eps,
        )
    }

    /// From the gradient of `a` to the gradient of the conv output (returned), writing the BN
    /// and PReLU parameter gradients into `g`.
    fn bn_prelu_back(
        &self,
        dev: &CudaDevice,
        da: &CudaSlice<f32>,
        g: &mut TrainConv,
        shape: [usize; 3],
        eps: f32,
    ) -> Result<CudaSlice<f32>> {
        let c = shape[1];
        let (mut dg, mut db, mut dal) = (zeros(dev, c)?, zeros(dev, c)?, zeros(dev, c)?);
        let mut dconv = zeros(dev, shape.iter().product())?;
        bn_prelu_backward(
            dev,
            f32_of(&self.conv)?,
            Some((&self.z, &self.alpha, &mut dal)),
            da,
            (&self.gamma, &self.mean, &self.var),
            &mut dg,
            &mut db,
            &mut dconv,
            shape,
            eps,
        )?;
        g.gamma = read(dev, &dg, c)?;
        g.beta = read(dev, &db, c)?;
        g.alpha = read(dev, &dal, c)?;
        Ok(dconv)
    }

    fn stats(
        &self,
        dev: &CudaDevice,
        c: usize,
        count: usize,
    ) -> Result<(Vec<f32>, Vec<f32>, usize)> {
        Ok((read(dev, &self.mean, c)?, read(dev, &self.var, c)?, count))
    }
}

fn read(dev: &CudaDevice, s: &CudaSlice<f32>, len: usize) -> Result<Vec<f32>> {
    dev.stream
        .clone_dtoh(&s.slice(0..len))
        .map_err(driver_err("copy to host"))
}

/// A residual block's output (PReLU output of pw plus the block input).
struct DevBlock {
    dw: DevUnit,
    pw: DevUnit,
    sum: Option<DevBuf>,
}

/// The student in training mode on one GPU. `forward` keeps every activation its backward needs;
/// `backward` must follow the `forward` of the same batch.
pub struct CudaTrainNet {
    dev: Arc<CudaDevice>,
    shape: TrainLayers,
    eps: f32,
    zero_bias: CudaSlice<f32>,
    stem: DevUnit,
    blocks: Vec<DevBlock>,
    gdc_w: CudaSlice<f32>,
    gdc: DevUnit,
    lin_w: CudaSlice<f32>,
    head: DevUnit,
    input: DevBuf,
    /// The batch of the last forward pass (0 before any).
    n: usize,
}

impl CudaTrainNet {
    /// Uploads `layers`; `eps` is the batch-norm epsilon.
    pub fn new(dev: Arc<CudaDevice>, layers: &TrainLayers, eps: f32) -> Result<CudaTrainNet> {
        layers.validate()?;
        let d: &CudaDevice = &dev;
        let mut blocks = Vec::with_capacity(layers.blocks.len());
        for b in &layers.blocks {
            blocks.push(DevBlock {
                dw: DevUnit::new(d, &b.dw, None)?,
                pw: DevUnit::new(d, &b.pw, Some(b.c_in))?,
                sum: None,
            });
        }
        let m = layers.embedding_size();
        // The head's BNs have no PReLU; their unused slopes and weights are dummies.
        let bn_unit = |gamma: &[f32], beta: &[f32]| TrainConv {
            weight: Vec::new(),
            gamma: gamma.to_vec(),
            beta: beta.to_vec(),
            alpha: Vec::new(),
        };
        let widest = layers
            .blocks
            .iter()
            .map(|b| b.c_out)
            .chain([layers.stem_channels(), m])
            .max()
            .unwrap_or(1);
        Ok(CudaTrainNet {
            shape: layers.clone(),
            eps,
            zero_bias: zeros(d, widest)?,
            stem: DevUnit::new(d, &layers.stem, None)?,
            blocks,
            gdc_w: upload(d, &layers.gdc_weight)?,
            gdc: DevUnit::new(d, &bn_unit(&layers.gdc_bn.0, &layers.gdc_bn.1), None)?,
            lin_w: upload(d, &layers.linear_weight)?,
            head: DevUnit::new(d, &bn_unit(&layers.head_bn.0, &layers.head_bn.1), None)?,
            input: DevBuf::zeros(d, 1, Precision::F32)?,
            n: 0,
            dev,
        })
    }

    pub fn device(&self) -> &Arc<CudaDevice> {
        &self.dev
    }

    /// Replaces the parameters (after an optimiser step) with arrays of the same shapes.
    pub fn set_params(&mut self, layers: &TrainLayers) -> Result<()> {
        layers.validate()?;
        let same = layers.resolution == self.shape.resolution
            && layers.blocks.len() == self.shape.blocks.len()
            && layers.blocks.iter().zip(&self.shape.blocks).all(|(a, b)| {
                (a.c_in, a.c_out, a.stride, a.residual) == (b.c_in, b.c_out, b.stride, b.residual)
            })
            && layers.stem_channels() == self.shape.stem_channels()
            && layers.embedding_size() == self.shape.embedding_size();
        if !same {
            return Err(Error::Shape(
                "new parameters do not have the network's shapes".into(),
            ));
        }
        let d: &CudaDevice = &self.dev;
        self.stem.set(d, &layers.stem, None)?;
        for (db, b) in self.blocks.iter_mut().zip(&layers.blocks) {
            db.dw.set(d, &b.dw, None)?;
            db.pw.set(d, &b.pw, Some(b.c_in))?;
        }
        let s = &d.stream;
        s.memcpy_htod(&layers.gdc_weight, &mut self.gdc_w)
            .map_err(driver_err("upload"))?;
        s.memcpy_htod(&layers.linear_weight, &mut self.lin_w)
            .map_err(driver_err("upload"))?;
        for (u, (g, b)) in [
            (&mut self.gdc, &layers.gdc_bn),
            (&mut self.head, &layers.head_bn),
        ] {
            s.memcpy_htod(g, &mut u.gamma)
                .map_err(driver_err("upload"))?;
            s.memcpy_htod(b, &mut u.beta)
                .map_err(driver_err("upload"))?;
        }
        Ok(())
    }

    /// Training-mode forward of `n ≥ 2` normalised faces `x [n, 3, r, r]`: returns the head-BN
    /// output `[n, m]` (before L2 normalisation, which the caller does) and every BN's batch
    /// statistics in network order.
    pub fn forward(&mut self, x: &[f32], n: usize) -> Result<(Vec<f32>, BnStats)> {
        let r = self.shape.resolution;
        if n < 2 || x.len() != n * 3 * r * r {
            return Err(Error::Shape(format!(
                "training input must be [n ≥ 2, 3, {r}, {r}], got {} values for n = {n}",
                x.len()
            )));
        }
        let dev = self.dev.clone();
        let d: &CudaDevice = &dev;
        let eps = self.eps;
        if self.input.len() < x.len() {
            self.input = DevBuf::zeros(d, x.len(), Precision::F32)?;
        }
        self.input.write(d, x)?;
        let zb = &self.zero_bias;
        let mut stats = Vec::new();
        // Stem.
        let c0 = self.shape.stem_channels();
        let hw = r * r;
        self.stem.reserve(d, n * c0 * hw)?;
        conv3x3(
            d,
            &self.input,
            &self.stem.w,
            zb,
            None,
            &mut self.stem.conv,
            [n, 3, r, r],
            c0,
            1,
        )?;
        self.stem.bn_prelu(d, [n, c0, hw], eps)?;
        stats.push(self.stem.stats(d, c0, n * hw)?);
        let mut side = r;
        for i in 0..self.blocks.len() {
            let spec = self.shape.blocks[i].clone();
            let in_side = side;
            side = (side - 1) / spec.stride + 1;
            let ohw = side * side;
            let (before, rest) = self.blocks.split_at_mut(i);
            let blk = &mut rest[0];
            let input: &DevBuf = match before.last() {
                None => &self.stem.a,
                Some(p) => p.sum.as_ref().unwrap_or(&p.pw.a),
            };
            blk.dw.reserve(d, n * spec.c_in * ohw)?;
            depthwise3x3(
                d,
                input,
                &blk.dw.w,
                zb,
                None,
                &mut blk.dw.conv,
                [n, spec.c_in, in_side, in_side],
                spec.stride,
            )?;
            blk.dw.bn_prelu(d, [n, spec.c_in, ohw], eps)?;
            stats.push(blk.dw.stats(d, spec.c_in, n * ohw)?);
            blk.pw.reserve(d, n * spec.c_out * ohw)?;
            pointwise(
                d,
                &blk.dw.a,
                &blk.pw.w,
                zb,
                None,
                None,
                &mut blk.pw.conv,
                [n, spec.c_in, ohw],
                spec.c_out,
            )?;
            blk.pw.bn_prelu(d, [n, spec.c_out, ohw], eps)?;
            stats.push(blk.pw.stats(d, spec.c_out, n * ohw)?);
            blk.sum = if spec.residual {
                let len = n * spec.c_out * ohw;
                let mut s = zeros(d, len)?;
                d.stream
                    .memcpy_dtod(&f32_of(&blk.pw.a)?.slice(0..len), &mut s)
                    .map_err(driver_err("copy"))?;
                add_inplace(d, &mut s, f32_of(input)?, len)?;
                Some(DevBuf::F32(s))
            } else {
                None
            };
        }
        // Head: gdc → BN → linear → BN.
        let c = self.shape.head_channels();
        let m = self.shape.embedding_size();
        let ohw = side * side;
        let last: &DevBuf = match self.blocks.last() {
            None => &self.stem.a,
            Some(p) => p.sum.as_ref().unwrap_or(&p.pw.a),
        };
        self.gdc.reserve(d, n * c)?;
        gdc_forward(
            d,
            f32_of(last)?,
            &self.gdc_w,
            f32_of_mut(&mut self.gdc.conv)?,
            [n, c, ohw],
        )?;
        bn_stats(
            d,
            f32_of(&self.gdc.conv)?,
            &mut self.gdc.mean,
            &mut self.gdc.var,
            [n, c, 1],
        )?;
        bn_prelu_forward(
            d,
            f32_of(&self.gdc.conv)?,
            (&self.gdc.mean, &self.gdc.var),
            (&self.gdc.gamma, &self.gdc.beta),
            None,
            &mut self.gdc.z,
            f32_of_mut(&mut self.gdc.a)?,
            [n, c, 1],
            eps,
        )?;
        stats.push(self.gdc.stats(d, c, n)?);
        self.head.reserve(d, n * m)?;
        linear_forward(
            d,
            f32_of(&self.gdc.a)?,
            &self.lin_w,
            f32_of_mut(&mut self.head.conv)?,
            [n, c, m],
        )?;
        bn_stats(
            d,
            f32_of(&self.head.conv)?,
            &mut self.head.mean,
            &mut self.head.var,
            [n, m, 1],
        )?;
        bn_prelu_forward(
            d,
            f32_of(&self.head.conv)?,
            (&self.head.mean, &self.head.var),
            (&self.head.gamma, &self.head.beta),
            None,
            &mut self.head.z,
            f32_of_mut(&mut self.head.a)?,
            [n, m, 1],
            eps,
        )?;
        stats.push(self.head.stats(d, m, n)?);
        self.n = n;
        Ok((read(d, f32_of(&self.head.a)?, n * m)?, stats))
    }

    /// Back-propagates `demb` (the gradient of the loss with respect to the `forward` output,
    /// `[n, m]`) to every parameter; returns the gradients in the parameters' layout.
    pub fn backward(&mut self, demb: &[f32]) -> Result<TrainLayers> {
        let n = self.n;
        let m = self.shape.embedding_size();
        let c = self.shape.head_channels();
        if n == 0 || demb.len() != n * m {
            return Err(Error::Shape(format!(
                "embedding gradient of {} values after a forward of {n} faces × {m}",
                demb.len()
            )));
        }
        let dev = self.dev.clone();
        let d: &CudaDevice = &dev;
        let eps = self.eps;
        let mut g = self.shape.clone();
        // Head BN (no PReLU) → linear.
        let dhead = upload(d, demb)?;
        let (mut dg, mut db) = (zeros(d, m)?, zeros(d, m)?);
        let mut dlin = zeros(d, n * m)?;
        bn_prelu_backward(
            d,
            f32_of(&self.head.conv)?,
            None,
            &dhead,
            (&self.head.gamma, &self.head.mean, &self.head.var),
            &mut dg,
            &mut db,
            &mut dlin,
            [n, m, 1],
            eps,
        )?;
        g.head_bn = (read(d, &dg, m)?, read(d, &db, m)?);
        let mut dlw = zeros(d, m * c)?;
        linear_backward_weight(d, f32_of(&self.gdc.a)?, &dlin, &mut dlw, [n, c, m])?;
        g.linear_weight = read(d, &dlw, m * c)?;
        let mut dpool = zeros(d, n * c)?;
        linear_backward_data(d, &dlin, &self.lin_w, &mut dpool, [n, c, m])?;
        // Gdc BN → gdc.
        let (mut dg, mut db) = (zeros(d, c)?, zeros(d, c)?);
        let mut dgdc = zeros(d, n * c)?;
        bn_prelu_backward(
            d,
            f32_of(&self.gdc.conv)?,
            None,
            &dpool,
            (&self.gdc.gamma, &self.gdc.mean, &self.gdc.var),
            &mut dg,
            &mut db,
            &mut dgdc,
            [n, c, 1],
            eps,
        )?;
        g.gdc_bn = (read(d, &dg, c)?, read(d, &db, c)?);
        let sides = self.sides();
        let side = *sides.last().unwrap_or(&self.shape.resolution);
        let ohw = side * side;
        let last: &DevBuf = match self.blocks.last() {
            None => &self.stem.a,
            Some(p) => p.sum.as_ref().unwrap_or(&p.pw.a),
        };
        let mut dout = zeros(d, n * c * ohw)?;
        let mut dgw = zeros(d, c * ohw)?;
        gdc_backward(
            d,
            f32_of(last)?,
            &self.gdc_w,
            &dgdc,
            &mut dout,
            &mut dgw,
            [n, c, ohw],
        )?;
        g.gdc_weight = read(d, &dgw, c * ohw)?;
        // Blocks, last first; `dout` is the gradient of the block's output.
        for i in (0..self.blocks.len()).rev() {
            let spec = self.shape.blocks[i].clone();
            let (in_side, out_side) = (sides[i], sides[i + 1]);
            let (ihw, ohw) = (in_side * in_side, out_side * out_side);
            let input: &DevBuf = match i {
                0 => &self.stem.a,
                _ => {
                    let p = &self.blocks[i - 1];
                    p.sum.as_ref().unwrap_or(&p.pw.a)
                }
            };
            let blk = &self.blocks[i];
            let gb = &mut g.blocks[i];
            let dpw = blk
                .pw
                .bn_prelu_back(d, &dout, &mut gb.pw, [n, spec.c_out, ohw], eps)?;
            let mut dw = zeros(d, spec.c_out * spec.c_in)?;
            pointwise_backward_weight(
                d,
                f32_of(&blk.dw.a)?,
                &dpw,
                &mut dw,
                [n, spec.c_in, ohw],
                spec.c_out,
            )?;
            gb.pw.weight = read(d, &dw, spec.c_out * spec.c_in)?;
            let mut da = DevBuf::zeros(d, n * spec.c_in * ohw, Precision::F32)?;
            let wt = blk
                .pw
                .wt
                .as_ref()
                .ok_or_else(|| Error::Shape("pointwise weight transpose missing".into()))?;
            pointwise(
                d,
                &DevBuf::F32(dpw),
                wt,
                &self.zero_bias,
                None,
                None,
                &mut da,
                [n, spec.c_out, ohw],
                spec.c_in,
            )?;
            let ddw =
                blk.dw
                    .bn_prelu_back(d, f32_of(&da)?, &mut gb.dw, [n, spec.c_in, ohw], eps)?;
            let mut dwdw = zeros(d, spec.c_in * 9)?;
            conv3x3_backward_weight(
                d,
                f32_of(input)?,
                &ddw,
                &mut dwdw,
                [n, spec.c_in, in_side, in_side],
                spec.c_in,
                spec.stride,
                true,
            )?;
            gb.dw.weight = read(d, &dwdw, spec.c_in * 9)?;
            let mut din = zeros(d, n * spec.c_in * ihw)?;
            depthwise_backward_data(
                d,
                &ddw,
                f32_of(&blk.dw.w)?,
                &mut din,
                [n, spec.c_in, in_side, in_side],
                spec.stride,
            )?;
            if spec.residual {
                add_inplace(d, &mut din, &dout, n * spec.c_in * ihw)?;
            }
            dout = din;
        }
        // Stem (no input gradient: the input is data).
        let r = self.shape.resolution;
        let c0 = self.shape.stem_channels();
        let dstem = self
            .stem
            .bn_prelu_back(d, &dout, &mut g.stem, [n, c0, r * r], eps)?;
        let mut dsw = zeros(d, c0 * 27)?;
        conv3x3_backward_weight(
            d,
            f32_of(&self.input)?,
            &dstem,
            &mut dsw,
            [n, 3, r, r],
            c0,
            1,
            false,
        )?;
        g.stem.weight = read(d, &dsw, c0 * 27)?;
        Ok(g)
    }

    /// The map side entering each block, then the head's.
    fn sides(&self) -> Vec<usize> {
        let mut s = vec![self.shape.resolution];
        for b in &self.shape.blocks {
            let last = *s.last().unwrap_or(&1);
            s.push((last - 1) / b.stride + 1);
        }
        s
    }
}
