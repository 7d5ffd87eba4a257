//! The student's inference forward pass on one GPU: per-layer kernel launchers (each checked
//! against `cpu::scalar`), the plain layer description it runs, and device-resident weights.
//! It knows nothing of weight files or `model`: callers convert a folded student into layers.

use super::device::CudaDevice;
use super::driver_err;
use crate::error::{Error, Result};
use cudarc::driver::{CudaSlice, LaunchArgs, LaunchConfig, PushKernelArg};
use half::f16;
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

/// A null device pointer, for the optional PReLU slopes and residual input.
pub(crate) static NULL_PTR: u64 = 0;

fn push<'a>(b: &mut LaunchArgs<'a>, x: &'a DevBuf) {
    match x {
        DevBuf::F32(s) => b.arg(s),
        DevBuf::F16(s) => b.arg(s),
    };
}

fn push_mut<'a>(b: &mut LaunchArgs<'a>, x: &'a mut DevBuf) {
    match x {
        DevBuf::F32(s) => b.arg(s),
        DevBuf::F16(s) => b.arg(s),
    };
}

fn push_opt<'a>(b: &mut LaunchArgs<'a>, x: Option<&'a CudaSlice<f32>>) {
    match x {
        Some(s) => b.arg(s),
        None => b.arg(&NULL_PTR),
    };
}

pub(crate) fn dim(v: usize, what: &str) -> Result<i32> {
    i32::try_from(v)
        .map_err(|_| Error::Shape(format!("{what} = {v} is too large for the GPU kernels")))
}

fn same_precision(bufs: &[&DevBuf]) -> Result<Precision> {
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

/// Blocks of 256 threads, each covering whole output planes (see kernels/depthwise.cu):
/// returns the launch shape and the planes per block. The kernels index planes in 32 bits.
fn plane_cfg(total_planes: usize, hw_out: usize) -> Result<(LaunchConfig, i32)> {
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
    let (cfg, planes) = plane_cfg(n * c_out, oh * ow)?;
    let f = dev.function(&format!("conv3x3_bias_prelu_{}", p.suffix()))?;
    let mut b = dev.stream.launch_builder(f);
    push(&mut b, x);
    push(&mut b, w);
    b.arg(bias);
    push_opt(&mut b, alpha);
    push_mut(&mut b, y);
    for v in &a {
        b.arg(v);
    }
    b.arg(&planes);
    // SAFETY: argument types and order match `conv3x3_bias_prelu_*` in kernels/conv3x3.cu, and
    // every buffer was checked above to hold what the kernel indexes.
    unsafe { b.launch(cfg) }.map_err(driver_err("conv3x3 launch"))?;
    Ok(())
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
    let (cfg, planes) = plane_cfg(n * c, oh * ow)?;
    let f = dev.function(&format!("depthwise3x3_bias_prelu_{}", p.suffix()))?;
    let mut b = dev.stream.launch_builder(f);
    push(&mut b, x);
    push(&mut b, w);
    b.arg(bias);
    push_opt(&mut b, alpha);
    push_mut(&mut b, y);
    for v in &a {
        b.arg(v);
    }
    b.arg(&planes);
    // SAFETY: matches `depthwise3x3_bias_prelu_*` in kernels/depthwise.cu; sizes checked above.
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
    [n, c_in, hw]: [usize; 3],
    c_out: usize,
) -> Result<()> {
    let p = same_precision(&[x, w, y])?;
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
    let cols = n * hw;
    let cfg = LaunchConfig {
        grid_dim: (
            u32::try_from(cols.div_ceil(64).max(1))
                .map_err(|_| Error::Shape("batch too large".into()))?,
            c_out.div_ceil(64).max(1) as u32,
            1,
        ),
        block_dim: (16, 16, 1),
        shared_mem_bytes: 0,
    };
    let f = dev.function(&format!("pointwise_bias_prelu_{}", p.suffix()))?;
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
    // SAFETY: matches `pointwise_bias_prelu_*` in kernels/pointwise.cu (16×16 threads, the
    // tile shape it assumes); sizes checked above; `residual` is read-only and never `y`.
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
    [n, c_in, h, wd]: [usize; 4],
    stride: usize,
    c_out: usize,
) -> Result<()> {
    let p = same_precision(&[x, dw.0, pw.0, y])?;
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
    let cols = n * oh * ow;
    let cfg = LaunchConfig {
        grid_dim: (
            u32::try_from(cols.div_ceil(64).max(1))
                .map_err(|_| Error::Shape("batch too large".into()))?,
            c_out.div_ceil(64).max(1) as u32,
            1,
        ),
        block_dim: (16, 16, 1),
        shared_mem_bytes: 0,
    };
    let f = dev.function(&format!("dwpw_bias_prelu_{}", p.suffix()))?;
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
    // SAFETY: matches `dwpw_bias_prelu_*` in kernels/pointwise.cu (16×16 threads); sizes checked
    // above; `x` (also the residual) is only read and is a different buffer from `y`.
    unsafe { b.launch(cfg) }.map_err(driver_err("depthwise+pointwise launch"))?;
    Ok(())
}

/// The fused head: global depthwise conv + bias, linear + bias, L2-normalise, one block per
/// face: matches `global_depthwise_conv` → `linear` → `l2_normalize`. `y` is f32 `[n, m]`.
#[allow(clippy::too_many_arguments)]
pub fn head(
    dev: &CudaDevice,
    x: &DevBuf,
    gdc_w: &DevBuf,
    gdc_b: &CudaSlice<f32>,
    lin_w: &DevBuf,
    lin_b: &CudaSlice<f32>,
    y: &mut CudaSlice<f32>,
    [n, c, hw]: [usize; 3],
    m: usize,
) -> Result<()> {
    let p = same_precision(&[x, gdc_w, lin_w])?;
    need(x.len(), n * c * hw, "head input")?;
    need(gdc_w.len(), c * hw, "head gdc weight")?;
    need(gdc_b.len(), c, "head gdc bias")?;
    need(lin_w.len(), m * c, "head linear weight")?;
    need(lin_b.len(), m, "head linear bias")?;
    need(y.len(), n * m, "head output")?;
    let smem = (c + m + 32) * 4;
    if smem > 48 * 1024 {
        return Err(Error::Shape(format!(
            "head of {c} channels → {m} does not fit shared memory"
        )));
    }
    let a = [dim(c, "c")?, dim(hw, "hw")?, dim(m, "m")?];
    let cfg = LaunchConfig {
        grid_dim: (
            u32::try_from(n.max(1)).map_err(|_| Error::Shape("batch too large".into()))?,
            1,
            1,
        ),
        block_dim: (256, 1, 1),
        shared_mem_bytes: smem as u32,
    };
    let f = dev.function(&format!("head_gdc_linear_l2_{}", p.suffix()))?;
    let mut b = dev.stream.launch_builder(f);
    push(&mut b, x);
    push(&mut b, gdc_w);
    b.arg(gdc_b);
    push(&mut b, lin_w);
    b.arg(lin_b);
    b.arg(y);
    for v in &a {
        b.arg(v);
    }
    // SAFETY: matches `head_gdc_linear_l2_*` in kernels/head.cu; 256 threads (a multiple of the
    // warp size, as its shuffle reduction needs) and (c + m + 32) floats of shared memory.
    unsafe { b.launch(cfg) }.map_err(driver_err("head launch"))?;
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
    /// Whether blocks run as one fused depthwise+pointwise kernel (the default) or as two.
    fused: bool,
    /// Largest activation of one face, in values.
    per_face: usize,
    capacity: usize,
    input: DevBuf,
    cur: DevBuf,
    mid: DevBuf,
    out: DevBuf,
    emb: CudaSlice<f32>,
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
            fused: true,
            per_face,
            capacity: 0,
            input: DevBuf::zeros(d, 1, precision)?,
            cur: DevBuf::zeros(d, 1, precision)?,
            mid: DevBuf::zeros(d, 1, precision)?,
            out: DevBuf::zeros(d, 1, precision)?,
            emb: s.alloc_zeros(1).map_err(driver_err("alloc"))?,
            dev,
        })
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Chooses fused depthwise+pointwise blocks (default) or the two separate kernels.
    pub fn set_fused(&mut self, fused: bool) {
        self.fused = fused;
    }

    pub fn fused(&self) -> bool {
        self.fused
    }

    pub fn device(&self) -> &Arc<CudaDevice> {
        &self.dev
    }

    /// Grows the activation buffers to hold `n` faces.
    pub fn reserve(&mut self, n: usize) -> Result<()> {
        if n <= self.capacity {
            return Ok(());
        }
        let d: &CudaDevice = &self.dev;
        let p = self.precision;
        let r = self.resolution;
        self.input = DevBuf::zeros(d, n * 3 * r * r, p)?;
        self.cur = DevBuf::zeros(d, n * self.per_face, p)?;
        self.mid = DevBuf::zeros(d, n * self.per_face, p)?;
        self.out = DevBuf::zeros(d, n * self.per_face, p)?;
        self.emb = d
            .stream
            .alloc_zeros(n * self.m)
            .map_err(driver_err("alloc"))?;
        self.capacity = n;
        Ok(())
    }

    /// Copies `n` normalised faces `[n, 3, r, r]` to the device input buffer.
    pub fn upload_input(&mut self, x: &[f32], n: usize) -> Result<()> {
        let r = self.resolution;
        if x.len() != n * 3 * r * r || n == 0 {
            return Err(Error::Shape(format!(
                "student input must be [n, 3, {r}, {r}] with n ≥ 1, got {} values for n = {n}",
                x.len()
            )));
        }
        self.reserve(n)?;
        let dev = self.dev.clone();
        self.input.write(&dev, x)
    }

    /// Queues the forward pass of the `n` faces already in the input buffer (no copies).
    pub fn enqueue(&mut self, n: usize) -> Result<()> {
        if n > self.capacity || n == 0 {
            return Err(Error::Shape(format!(
                "batch {n} exceeds the uploaded {}",
                self.capacity
            )));
        }
        let dev: &CudaDevice = &self.dev;
        let r = self.resolution;
        let st = &self.stem;
        conv3x3(
            dev,
            &self.input,
            &st.w,
            &st.b,
            st.alpha.as_ref(),
            &mut self.cur,
            [n, 3, r, r],
            st.c_out,
            st.stride,
        )?;
        let mut side = (r - 1) / st.stride + 1;
        for (dw, pw, residual) in &self.blocks {
            let in_side = side;
            side = (side - 1) / dw.stride + 1;
            if self.fused {
                depthwise_pointwise(
                    dev,
                    &self.cur,
                    (&dw.w, &dw.b, dw.alpha.as_ref()),
                    (&pw.w, &pw.b, pw.alpha.as_ref()),
                    *residual,
                    &mut self.out,
                    [n, dw.c_in, in_side, in_side],
                    dw.stride,
                    pw.c_out,
                )?;
            } else {
                depthwise3x3(
                    dev,
                    &self.cur,
                    &dw.w,
                    &dw.b,
                    dw.alpha.as_ref(),
                    &mut self.mid,
                    [n, dw.c_in, in_side, in_side],
                    dw.stride,
                )?;
                let res = if *residual { Some(&self.cur) } else { None };
                pointwise(
                    dev,
                    &self.mid,
                    &pw.w,
                    &pw.b,
                    pw.alpha.as_ref(),
                    res,
                    &mut self.out,
                    [n, pw.c_in, side * side],
                    pw.c_out,
                )?;
            }
            std::mem::swap(&mut self.cur, &mut self.out);
        }
        let c = self.blocks.last().map_or(st.c_out, |b| b.1.c_out);
        head(
            dev,
            &self.cur,
            &self.gdc_w,
            &self.gdc_b,
            &self.lin_w,
            &self.lin_b,
            &mut self.emb,
            [n, c, side * side],
            self.m,
        )
    }

    /// Embeds `n` normalised faces `[n, 3, r, r]` into L2-normalised `[n, m]` rows.
    pub fn forward(&mut self, x: &[f32], n: usize) -> Result<Vec<f32>> {
        self.upload_input(x, n)?;
        self.enqueue(n)?;
        self.dev
            .stream
            .clone_dtoh(&self.emb.slice(0..n * self.m))
            .map_err(driver_err("copy embeddings to host"))
    }
}
