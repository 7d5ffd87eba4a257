//! A small GPU executor for imported graphs (the SFace teacher): a plain op list over numbered
//! values, buffer reuse by liveness, and the launchers of kernels/graph.cu. It knows nothing of
//! `model::graph` or ONNX: the model layer converts a graph into a [`GpuGraph`].

use super::buffer::{DevBuf, Precision};
use super::device::CudaDevice;
use super::driver_err;
use super::gemm::Gemm;
use super::launch::pointwise::pointwise_on;
use super::launch::{dim, need, plane_cfg, push, push_mut, push_opt, same_precision};
use crate::error::{Error, Result};
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};
use std::sync::Arc;

/// The geometry of one convolution on one face (the batch is given at run time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    /// vertical, horizontal
    pub stride: [usize; 2],
    /// top, left, bottom, right
    pub pads: [usize; 4],
    pub groups: usize,
}

impl ConvShape {
    /// Checks that the conv is computable and has a non-empty output.
    pub fn validate(&self) -> Result<()> {
        let ok = self.groups > 0
            && self.c_in > 0
            && self.c_out > 0
            && self.c_in % self.groups == 0
            && self.c_out % self.groups == 0
            && self.stride[0] > 0
            && self.stride[1] > 0
            && self.kh > 0
            && self.kw > 0
            && self.h + self.pads[0] + self.pads[2] >= self.kh
            && self.w + self.pads[1] + self.pads[3] >= self.kw;
        if ok {
            Ok(())
        } else {
            Err(Error::Shape(format!("conv {self:?} is not computable")))
        }
    }

    pub fn out_h(&self) -> usize {
        (self.h + self.pads[0] + self.pads[2] - self.kh) / self.stride[0] + 1
    }

    pub fn out_w(&self) -> usize {
        (self.w + self.pads[1] + self.pads[3] - self.kw) / self.stride[1] + 1
    }

    /// Values of one face's input and output.
    pub fn in_len(&self) -> usize {
        self.c_in * self.h * self.w
    }

    pub fn out_len(&self) -> usize {
        self.c_out * self.out_h() * self.out_w()
    }

    pub fn weight_len(&self) -> usize {
        self.c_out * (self.c_in / self.groups.max(1)) * self.kh * self.kw
    }

    /// A plain 1×1 conv (stride 1, no padding, one group): a GEMM, run by the pointwise kernel.
    pub fn is_pointwise(&self) -> bool {
        self.kh == 1
            && self.kw == 1
            && self.stride == [1, 1]
            && self.pads == [0; 4]
            && self.groups == 1
    }
}

/// One operation over numbered values. Every value is a per-face array (its length is in
/// [`GpuGraph::values`]); weights are f32 here and uploaded in the executor's precision.
#[derive(Clone, Debug)]
pub enum GpuOp {
    /// Convolution (OIHW weights) + bias, then PReLU when `prelu` is given.
    Conv {
        input: usize,
        output: usize,
        shape: ConvShape,
        weight: Vec<f32>,
        bias: Vec<f32>,
        prelu: Option<Vec<f32>>,
    },
    /// Per channel over `[c, hw]`: `x * scale + shift` when `affine` is given, then PReLU when
    /// `prelu` is given.
    ChannelMap {
        input: usize,
        output: usize,
        c: usize,
        hw: usize,
        affine: Option<(Vec<f32>, Vec<f32>)>,
        prelu: Option<Vec<f32>>,
    },
    /// Elementwise sum of two values of equal length.
    Add { a: usize, b: usize, output: usize },
    /// `y = x · wᵀ + bias`, `w: [m, k]`.
    Linear {
        input: usize,
        output: usize,
        k: usize,
        m: usize,
        weight: Vec<f32>,
        bias: Vec<f32>,
    },
}

impl GpuOp {
    /// The values this op reads.
    pub fn inputs(&self) -> Vec<usize> {
        match self {
            GpuOp::Conv { input, .. }
            | GpuOp::ChannelMap { input, .. }
            | GpuOp::Linear { input, .. } => vec![*input],
            GpuOp::Add { a, b, .. } => vec![*a, *b],
        }
    }

    /// The value this op writes.
    pub fn output(&self) -> usize {
        match self {
            GpuOp::Conv { output, .. }
            | GpuOp::ChannelMap { output, .. }
            | GpuOp::Linear { output, .. }
            | GpuOp::Add { output, .. } => *output,
        }
    }
}

/// A graph the GPU runs: per-face value lengths, one input value, one output value, and ops in
/// execution order (each value written once, read only after).
#[derive(Clone, Debug)]
pub struct GpuGraph {
    pub values: Vec<usize>,
    pub input: usize,
    pub output: usize,
    pub ops: Vec<GpuOp>,
}

impl GpuGraph {
    /// Checks indices, write-once order, and that every array has the length its op implies.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Shape(format!("GPU graph: {m}")));
        let nv = self.values.len();
        if self.input >= nv || self.output >= nv {
            return bad("input or output value out of range".into());
        }
        let mut written = vec![false; nv];
        written[self.input] = true;
        for (i, op) in self.ops.iter().enumerate() {
            for v in op.inputs() {
                if v >= nv || !written[v] {
                    return bad(format!("op {i} reads value {v} before it is written"));
                }
            }
            let o = op.output();
            if o >= nv || written[o] {
                return bad(format!(
                    "op {i} writes value {o}, out of range or already written"
                ));
            }
            written[o] = true;
            let len = |v: usize| self.values[v];
            let ok = match op {
                GpuOp::Conv {
                    input,
                    shape,
                    weight,
                    bias,
                    prelu,
                    ..
                } => {
                    shape.validate()?;
                    len(*input) == shape.in_len()
                        && len(o) == shape.out_len()
                        && weight.len() == shape.weight_len()
                        && bias.len() == shape.c_out
                        && prelu.as_ref().map_or(true, |a| a.len() == shape.c_out)
                }
                GpuOp::ChannelMap {
                    input,
                    c,
                    hw,
                    affine,
                    prelu,
                    ..
                } => {
                    len(*input) == c * hw
                        && len(o) == c * hw
                        && affine
                            .as_ref()
                            .map_or(true, |(s, t)| s.len() == *c && t.len() == *c)
                        && prelu.as_ref().map_or(true, |a| a.len() == *c)
                }
                GpuOp::Add { a, b, .. } => len(*a) == len(*b) && len(o) == len(*a),
                GpuOp::Linear {
                    input,
                    k,
                    m,
                    weight,
                    bias,
                    ..
                } => {
                    len(*input) == *k
                        && len(o) == *m
                        && weight.len() == m * k
                        && bias.len() == *m
                        && *m > 0
                }
            };
            if !ok {
                return bad(format!("op {i} has arrays that do not match its shape"));
            }
        }
        if !written[self.output] {
            return bad("the output value is never written".into());
        }
        Ok(())
    }

    /// Assigns each value a physical buffer: an op's output takes a buffer freed by a value no
    /// longer read (never one of its own inputs), so a chain runs in a few buffers. The input
    /// keeps buffer 0 (it is uploaded once and may be run many times); the output is never
    /// freed. Returns (buffer of each value, per-face length of each buffer).
    pub fn assign_buffers(&self) -> (Vec<usize>, Vec<usize>) {
        let nv = self.values.len();
        let mut last = vec![None; nv];
        for (i, op) in self.ops.iter().enumerate() {
            for v in op.inputs() {
                last[v] = Some(i);
            }
        }
        last[self.output] = Some(usize::MAX);
        let mut slot = vec![0usize; nv];
        let mut sizes = vec![self.values[self.input]];
        let mut free: Vec<usize> = Vec::new();
        for (i, op) in self.ops.iter().enumerate() {
            let o = op.output();
            let s = free.pop().unwrap_or_else(|| {
                sizes.push(0);
                sizes.len() - 1
            });
            slot[o] = s;
            sizes[s] = sizes[s].max(self.values[o]);
            let mut ins = op.inputs();
            ins.dedup();
            for v in ins {
                if last[v] == Some(i) && v != self.input {
                    free.push(slot[v]);
                }
            }
            if last[o].is_none() {
                free.push(s);
            }
        }
        (slot, sizes)
    }
}

fn u32_grid(blocks: usize) -> Result<u32> {
    u32::try_from(blocks.max(1)).map_err(|_| Error::Shape("batch too large for the GPU".into()))
}

/// Any convolution + bias + optional PReLU, by the generic direct kernel: matches
/// `cpu::scalar::conv2d` followed by `cpu::scalar::prelu`.
#[allow(clippy::too_many_arguments)]
pub fn conv_direct(
    dev: &CudaDevice,
    x: &DevBuf,
    w: &DevBuf,
    bias: &CudaSlice<f32>,
    alpha: Option<&CudaSlice<f32>>,
    y: &mut DevBuf,
    n: usize,
    s: &ConvShape,
) -> Result<()> {
    let p = same_precision(&[x, w, y])?;
    s.validate()?;
    need(x.len(), n * s.in_len(), "conv input")?;
    need(w.len(), s.weight_len(), "conv weight")?;
    need(bias.len(), s.c_out, "conv bias")?;
    need(alpha.map_or(s.c_out, |a| a.len()), s.c_out, "conv slopes")?;
    need(y.len(), n * s.out_len(), "conv output")?;
    let (oh, ow) = (s.out_h(), s.out_w());
    dim(n * s.c_in, "n · c_in")?;
    let a = [
        dim(n, "n")?,
        dim(s.c_in, "c_in")?,
        dim(s.h, "h")?,
        dim(s.w, "w")?,
        dim(s.c_out, "c_out")?,
        dim(s.kh, "kh")?,
        dim(s.kw, "kw")?,
        dim(s.stride[0], "stride")?,
        dim(s.stride[1], "stride")?,
        dim(s.pads[0], "pad")?,
        dim(s.pads[1], "pad")?,
        dim(s.groups, "groups")?,
        dim(oh, "out h")?,
        dim(ow, "out w")?,
    ];
    let (cfg, planes) = plane_cfg(n * s.c_out, oh * ow)?;
    let f = dev.function(&format!("graph_conv_{}", p.name()))?;
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
    // SAFETY: argument types and order match `graph_conv_*` in kernels/graph.cu; every buffer
    // was checked above to hold what the kernel indexes (n·c_in and the planes fit 32 bits).
    unsafe { b.launch(cfg) }.map_err(driver_err("conv launch"))?;
    Ok(())
}

/// A convolution by the fastest kernel for its shape: the pointwise GEMM for plain 1×1 convs,
/// the direct kernel for the rest. Same result as [`conv_direct`] up to summation order.
#[allow(clippy::too_many_arguments)]
pub fn conv(
    dev: &CudaDevice,
    x: &DevBuf,
    w: &DevBuf,
    bias: &CudaSlice<f32>,
    alpha: Option<&CudaSlice<f32>>,
    y: &mut DevBuf,
    n: usize,
    s: &ConvShape,
) -> Result<()> {
    if s.is_pointwise() {
        // f16 storage on sm_80+ runs the GEMM on the tensor cores (f32 accumulation).
        let gemm = if x.precision() == Precision::F16 && dev.tensor_cores() {
            Gemm::TensorCoresLdmatrix
        } else {
            Gemm::Fma
        };
        pointwise_on(
            gemm,
            dev,
            x,
            w,
            bias,
            alpha,
            None,
            y,
            [n, s.c_in, s.h * s.w],
            s.c_out,
        )
    } else {
        conv_direct(dev, x, w, bias, alpha, y, n, s)
    }
}

/// Per channel over `[n, c, hw]`: `x * scale + shift` (if given), then PReLU (if given):
/// matches `cpu::scalar::channel_affine` followed by `cpu::scalar::prelu`.
pub fn channel_map(
    dev: &CudaDevice,
    x: &DevBuf,
    affine: Option<(&CudaSlice<f32>, &CudaSlice<f32>)>,
    slope: Option<&CudaSlice<f32>>,
    y: &mut DevBuf,
    [n, c, hw]: [usize; 3],
) -> Result<()> {
    let p = same_precision(&[x, y])?;
    need(x.len(), n * c * hw, "channel map input")?;
    need(y.len(), n * c * hw, "channel map output")?;
    if let Some((s, t)) = affine {
        need(s.len().min(t.len()), c, "affine scale/shift")?;
    }
    need(slope.map_or(c, |a| a.len()), c, "PReLU slopes")?;
    let a = [dim(n, "n")?, dim(c, "c")?, dim(hw, "hw")?];
    let (cfg, planes) = plane_cfg(n * c, hw)?;
    let f = dev.function(&format!("graph_affine_prelu_{}", p.name()))?;
    let mut b = dev.stream.launch_builder(f);
    push(&mut b, x);
    push_opt(&mut b, affine.map(|(s, _)| s));
    push_opt(&mut b, affine.map(|(_, t)| t));
    push_opt(&mut b, slope);
    push_mut(&mut b, y);
    for v in &a {
        b.arg(v);
    }
    b.arg(&planes);
    // SAFETY: matches `graph_affine_prelu_*` in kernels/graph.cu (scale and shift are both null
    // or both given); sizes checked above.
    unsafe { b.launch(cfg) }.map_err(driver_err("channel map launch"))?;
    Ok(())
}

/// `y = a + b` over the first `len` values: matches `cpu::scalar::add`.
pub fn add(dev: &CudaDevice, a: &DevBuf, b: &DevBuf, y: &mut DevBuf, len: usize) -> Result<()> {
    let p = same_precision(&[a, b, y])?;
    need(a.len(), len, "add input")?;
    need(b.len(), len, "add input")?;
    need(y.len(), len, "add output")?;
    let cfg = LaunchConfig {
        grid_dim: (u32_grid(len.div_ceil(256).min(65536))?, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let len = len as i64;
    let f = dev.function(&format!("graph_add_{}", p.name()))?;
    let mut lb = dev.stream.launch_builder(f);
    push(&mut lb, a);
    push(&mut lb, b);
    push_mut(&mut lb, y);
    lb.arg(&len);
    // SAFETY: matches `graph_add_*` in kernels/graph.cu (grid-stride over `len`); sizes checked.
    unsafe { lb.launch(cfg) }.map_err(driver_err("add launch"))?;
    Ok(())
}

/// Output tile of the split-K linear kernel (rows and outputs), see kernels/graph.cu.
const LIN_TILE: usize = 64;
/// K step of the linear kernel; chunks are multiples of it.
const LIN_BK: usize = 16;

/// How the linear layer `[n, k] · [m, k]ᵀ` is split over K: (splits, chunk). Enough splits for
/// about 512 blocks (a few per SM on any current GPU), each at least 64 K values long.
pub fn linear_splits(n: usize, k: usize, m: usize) -> (usize, usize) {
    let tiles = m.div_ceil(LIN_TILE).max(1) * n.div_ceil(LIN_TILE).max(1);
    let want = 512usize.div_ceil(tiles).clamp(1, k.div_ceil(64).max(1));
    let chunk = k.div_ceil(want).div_ceil(LIN_BK).max(1) * LIN_BK;
    (k.div_ceil(chunk).max(1), chunk)
}

/// Values of the f32 scratch the linear layer needs at batch `n`.
pub fn linear_scratch_len(n: usize, k: usize, m: usize) -> usize {
    linear_splits(n, k, m).0 * n * m
}

/// `y[n, m] = x[n, k] · w[m, k]ᵀ + bias`, split over K into `partial` (f32 scratch of at least
/// [`linear_scratch_len`] values) then summed in a fixed order: matches `cpu::scalar::linear`.
#[allow(clippy::too_many_arguments)]
pub fn linear(
    dev: &CudaDevice,
    x: &DevBuf,
    w: &DevBuf,
    bias: &CudaSlice<f32>,
    partial: &mut CudaSlice<f32>,
    y: &mut DevBuf,
    n: usize,
    k: usize,
    m: usize,
) -> Result<()> {
    let p = same_precision(&[x, w, y])?;
    if n == 0 || k == 0 || m == 0 {
        return Err(Error::Shape("linear needs n, k and m ≥ 1".into()));
    }
    need(x.len(), n * k, "linear input")?;
    need(w.len(), m * k, "linear weight")?;
    need(bias.len(), m, "linear bias")?;
    need(y.len(), n * m, "linear output")?;
    let (splits, chunk) = linear_splits(n, k, m);
    need(partial.len(), splits * n * m, "linear scratch")?;
    let a = [
        dim(n, "n")?,
        dim(k, "k")?,
        dim(m, "m")?,
        dim(chunk, "chunk")?,
    ];
    dim(splits * n * m, "linear scratch")?;
    let cfg = LaunchConfig {
        grid_dim: (
            u32_grid(m.div_ceil(LIN_TILE))?,
            u32_grid(n.div_ceil(LIN_TILE))?,
            u32_grid(splits)?,
        ),
        block_dim: (16, 16, 1),
        shared_mem_bytes: 0,
    };
    if n.div_ceil(LIN_TILE) > 65535 || splits > 65535 {
        return Err(Error::Shape(format!(
            "linear batch {n} exceeds the GPU grid"
        )));
    }
    let f = dev.function(&format!("graph_linear_splitk_{}", p.name()))?;
    let mut b = dev.stream.launch_builder(f);
    push(&mut b, x);
    push(&mut b, w);
    b.arg(&mut *partial);
    for v in &a {
        b.arg(v);
    }
    // SAFETY: matches `graph_linear_splitk_*` in kernels/graph.cu (16×16 threads, the tile shape
    // it assumes); `partial` holds splits·n·m values, the rest was checked above.
    unsafe { b.launch(cfg) }.map_err(driver_err("linear launch"))?;
    let rcfg = LaunchConfig {
        grid_dim: (u32_grid((n * m).div_ceil(256).min(65536))?, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let r = [dim(n, "n")?, dim(m, "m")?, dim(splits, "splits")?];
    let f = dev.function(&format!("graph_linear_reduce_{}", p.name()))?;
    let mut b = dev.stream.launch_builder(f);
    b.arg(&*partial);
    b.arg(bias);
    push_mut(&mut b, y);
    for v in &r {
        b.arg(v);
    }
    // SAFETY: matches `graph_linear_reduce_*` in kernels/graph.cu; the split-K kernel above wrote
    // splits·n·m partial sums on the same stream, so they are complete when this runs.
    unsafe { b.launch(rcfg) }.map_err(driver_err("linear reduce launch"))?;
    Ok(())
}

/// One op with its parameters on the device.
enum DevOp {
    Conv {
        input: usize,
        output: usize,
        shape: ConvShape,
        w: DevBuf,
        b: CudaSlice<f32>,
        alpha: Option<CudaSlice<f32>>,
    },
    ChannelMap {
        input: usize,
        output: usize,
        c: usize,
        hw: usize,
        affine: Option<(CudaSlice<f32>, CudaSlice<f32>)>,
        slope: Option<CudaSlice<f32>>,
    },
    Add {
        a: usize,
        b: usize,
        output: usize,
    },
    Linear {
        input: usize,
        output: usize,
        k: usize,
        m: usize,
        w: DevBuf,
        b: CudaSlice<f32>,
    },
}

/// A [`GpuGraph`] resident on a GPU, with activation buffers sized for the largest batch seen.
pub struct GraphRunner {
    dev: Arc<CudaDevice>,
    precision: Precision,
    values: Vec<usize>,
    input: usize,
    output: usize,
    ops: Vec<DevOp>,
    /// Physical buffer of each value, and each buffer's per-face length.
    slot: Vec<usize>,
    sizes: Vec<usize>,
    bufs: Vec<Option<DevBuf>>,
    /// (k, m) of each linear op, to size the split-K scratch.
    linears: Vec<(usize, usize)>,
    partial: CudaSlice<f32>,
    capacity: usize,
}

impl GraphRunner {
    /// Validates `g` and uploads its parameters to `dev` in `precision` (biases, slopes and
    /// affine maps stay f32).
    pub fn new(dev: Arc<CudaDevice>, g: &GpuGraph, precision: Precision) -> Result<GraphRunner> {
        g.validate()?;
        let s = dev.stream.clone();
        let up = |v: &[f32]| s.clone_htod(v).map_err(driver_err("upload"));
        let mut ops = Vec::with_capacity(g.ops.len());
        let mut linears = Vec::new();
        for op in &g.ops {
            ops.push(match op {
                GpuOp::Conv {
                    input,
                    output,
                    shape,
                    weight,
                    bias,
                    prelu,
                } => DevOp::Conv {
                    input: *input,
                    output: *output,
                    shape: *shape,
                    w: DevBuf::upload(&dev, weight, precision)?,
                    b: up(bias)?,
                    alpha: prelu.as_deref().map(up).transpose()?,
                },
                GpuOp::ChannelMap {
                    input,
                    output,
                    c,
                    hw,
                    affine,
                    prelu,
                } => DevOp::ChannelMap {
                    input: *input,
                    output: *output,
                    c: *c,
                    hw: *hw,
                    affine: match affine {
                        Some((sc, sh)) => Some((up(sc)?, up(sh)?)),
                        None => None,
                    },
                    slope: prelu.as_deref().map(up).transpose()?,
                },
                GpuOp::Add { a, b, output } => DevOp::Add {
                    a: *a,
                    b: *b,
                    output: *output,
                },
                GpuOp::Linear {
                    input,
                    output,
                    k,
                    m,
                    weight,
                    bias,
                } => {
                    linears.push((*k, *m));
                    DevOp::Linear {
                        input: *input,
                        output: *output,
                        k: *k,
                        m: *m,
                        w: DevBuf::upload(&dev, weight, precision)?,
                        b: up(bias)?,
                    }
                }
            });
        }
        let (slot, sizes) = g.assign_buffers();
        let partial = s.alloc_zeros(1).map_err(driver_err("alloc"))?;
        Ok(GraphRunner {
            precision,
            values: g.values.clone(),
            input: g.input,
            output: g.output,
            ops,
            bufs: sizes.iter().map(|_| None).collect(),
            slot,
            sizes,
            linears,
            partial,
            capacity: 0,
            dev,
        })
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    pub fn device(&self) -> &Arc<CudaDevice> {
        &self.dev
    }

    /// Values of one face's input and output.
    pub fn input_len(&self) -> usize {
        self.values[self.input]
    }

    pub fn output_len(&self) -> usize {
        self.values[self.output]
    }

    /// How many activation buffers the graph runs in (after reuse by liveness).
    pub fn buffer_count(&self) -> usize {
        self.sizes.len()
    }

    /// Grows the activation buffers to hold `n` faces.
    pub fn reserve(&mut self, n: usize) -> Result<()> {
        if n <= self.capacity {
            return Ok(());
        }
        let d: &CudaDevice = &self.dev;
        for (buf, &size) in self.bufs.iter_mut().zip(&self.sizes) {
            *buf = None; // free the old one before allocating its successor
            *buf = Some(DevBuf::zeros(d, n * size, self.precision)?);
        }
        // The split count varies with the batch, so take the largest need of any batch ≤ n.
        let scratch = self
            .linears
            .iter()
            .flat_map(|&(k, m)| (1..=n).map(move |b| linear_scratch_len(b, k, m)))
            .max()
            .unwrap_or(1);
        self.partial = d
            .stream
            .alloc_zeros(scratch.max(1))
            .map_err(driver_err("alloc"))?;
        self.capacity = n;
        Ok(())
    }

    /// Copies `n` faces (`n · input_len` values) to the device input buffer.
    pub fn upload_input(&mut self, x: &[f32], n: usize) -> Result<()> {
        if n == 0 || x.len() != n * self.input_len() {
            return Err(Error::Shape(format!(
                "graph input must hold n ≥ 1 faces of {} values, got {} values for n = {n}",
                self.input_len(),
                x.len()
            )));
        }
        self.reserve(n)?;
        let dev = self.dev.clone();
        self.buf_mut(self.input)?.write(&dev, x)
    }

    fn buf_mut(&mut self, value: usize) -> Result<&mut DevBuf> {
        self.bufs[self.slot[value]]
            .as_mut()
            .ok_or_else(|| Error::Cuda("graph buffers are not allocated".into()))
    }

    /// Queues the ops on the `n` faces already in the input buffer (no copies).
    pub fn enqueue(&mut self, n: usize) -> Result<()> {
        if n == 0 || n > self.capacity {
            return Err(Error::Shape(format!(
                "batch {n} exceeds the uploaded {}",
                self.capacity
            )));
        }
        let dev: &CudaDevice = &self.dev;
        for op in &self.ops {
            let out_value = match op {
                DevOp::Conv { output, .. }
                | DevOp::ChannelMap { output, .. }
                | DevOp::Add { output, .. }
                | DevOp::Linear { output, .. } => *output,
            };
            let os = self.slot[out_value];
            // The output buffer is taken out for the launch; `assign_buffers` never gives an op
            // an input that shares its output's buffer, so the inputs stay in place.
            let mut y = self.bufs[os]
                .take()
                .ok_or_else(|| Error::Cuda("graph buffers are not allocated".into()))?;
            let bufs = &self.bufs;
            let get = |v: usize| {
                bufs[self.slot[v]]
                    .as_ref()
                    .ok_or_else(|| Error::Cuda("a graph op reads its own output buffer".into()))
            };
            let r = match op {
                DevOp::Conv {
                    input,
                    shape,
                    w,
                    b,
                    alpha,
                    ..
                } => conv(dev, get(*input)?, w, b, alpha.as_ref(), &mut y, n, shape),
                DevOp::ChannelMap {
                    input,
                    c,
                    hw,
                    affine,
                    slope,
                    ..
                } => channel_map(
                    dev,
                    get(*input)?,
                    affine.as_ref().map(|(s, t)| (s, t)),
                    slope.as_ref(),
                    &mut y,
                    [n, *c, *hw],
                ),
                DevOp::Add { a, b, output } => {
                    add(dev, get(*a)?, get(*b)?, &mut y, n * self.values[*output])
                }
                DevOp::Linear {
                    input, k, m, w, b, ..
                } => linear(
                    dev,
                    get(*input)?,
                    w,
                    b,
                    &mut self.partial,
                    &mut y,
                    n,
                    *k,
                    *m,
                ),
            };
            self.bufs[os] = Some(y);
            r?;
        }
        Ok(())
    }

    /// Runs `n` faces (`n · input_len` values) and returns `n · output_len` f32 outputs.
    pub fn forward(&mut self, x: &[f32], n: usize) -> Result<Vec<f32>> {
        self.upload_input(x, n)?;
        self.enqueue(n)?;
        let len = n * self.output_len();
        let dev = self.dev.clone();
        let out = self.buf_mut(self.output)?;
        out.read(&dev, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every K value lies in exactly one chunk, chunks are whole K steps, and batch 1 of SFace's
    /// 50176 → 128 layer is split enough to occupy a large GPU.
    #[test]
    fn linear_splits_cover_k_exactly_once() {
        for n in [1, 2, 63, 64, 65, 256, 4096] {
            for k in [1, 7, 16, 17, 1000, 50176] {
                for m in [1, 5, 64, 128, 130] {
                    let (splits, chunk) = linear_splits(n, k, m);
                    assert_eq!(chunk % LIN_BK, 0, "n={n} k={k} m={m}");
                    assert!(
                        splits * chunk >= k && (splits - 1) * chunk < k,
                        "n={n} k={k} m={m}"
                    );
                    assert_eq!(linear_scratch_len(n, k, m), splits * n * m);
                }
            }
        }
        let (splits, _) = linear_splits(1, 50176, 128);
        assert!(splits * 2 >= 400, "only {splits} splits at batch 1");
    }

    /// Output sizes follow the conv arithmetic, and uncomputable geometries are errors.
    #[test]
    fn conv_shapes_give_the_conv_output_size_and_reject_bad_ones() {
        let s = ConvShape {
            c_in: 6,
            h: 11,
            w: 10,
            c_out: 9,
            kh: 3,
            kw: 1,
            stride: [2, 1],
            pads: [0, 1, 2, 0],
            groups: 3,
        };
        s.validate().unwrap();
        assert_eq!((s.out_h(), s.out_w()), (6, 11));
        assert_eq!(s.weight_len(), 9 * 2 * 3);
        assert!(!s.is_pointwise());
        for bad in [
            ConvShape { groups: 4, ..s },
            ConvShape {
                stride: [0, 1],
                ..s
            },
            ConvShape { kh: 14, ..s },
            ConvShape { groups: 0, ..s },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
