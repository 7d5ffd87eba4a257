//! Tape-based reverse-mode autograd over the engine's ops: records each forward op with what its
//! backward needs, then walks the tape backwards calling the `Kernels` backward entries.
//! It must not hold arithmetic loops of its own (those live in `cpu`) nor know about datasets.

pub mod loss;
pub mod student;

#[cfg(test)]
mod gradcheck;

use crate::cpu::{
    BatchNormBackward, BatchNormPreluForward, ConvDataGrad, ConvGeom, ConvWeightGrad, Kernels,
};
use crate::error::{Error, Result};
use crate::ops::{self, Conv2d};
use crate::tensor::Tensor;
use std::collections::HashMap;

/// A value recorded on a tape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Var(usize);

/// Which backward kernels a convolution uses; chosen from its geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ConvKind {
    General,
    Depthwise,
    Pointwise,
}

impl ConvKind {
    fn of(g: &ConvGeom) -> ConvKind {
        if g.groups == g.c_in && g.c_in == g.c_out && g.groups > 1 {
            ConvKind::Depthwise
        } else if g.groups == 1
            && g.kh == 1
            && g.kw == 1
            && g.stride_h == 1
            && g.stride_w == 1
            && g.pad_t + g.pad_l + g.pad_b + g.pad_r == 0
        {
            ConvKind::Pointwise
        } else {
            ConvKind::General
        }
    }
}

/// What produced a value, with what its backward needs.
enum Op {
    Leaf,
    Conv {
        x: Var,
        w: Var,
        geom: ConvGeom,
    },
    BatchNormTrain {
        x: Var,
        gamma: Var,
        beta: Var,
        mean: Vec<f32>,
        var: Vec<f32>,
        eps: f32,
    },
    BatchNormEval {
        x: Var,
        gamma: Var,
        beta: Var,
        mean: Vec<f32>,
        var: Vec<f32>,
        eps: f32,
    },
    Prelu {
        x: Var,
        alpha: Var,
    },
    Add {
        a: Var,
        b: Var,
    },
    GlobalDepthwise {
        x: Var,
        w: Var,
    },
    Linear {
        x: Var,
        w: Var,
    },
    L2Normalize {
        x: Var,
    },
}

struct Node {
    value: Tensor,
    grad: Option<Tensor>,
    requires_grad: bool,
    op: Op,
}

/// The record of one forward pass. Values stay on the tape until it is dropped, or handed back
/// with `into_pool` for the next tape to reuse.
pub struct Tape<'k> {
    k: &'k Kernels,
    nodes: Vec<Node>,
    pool: BufferPool,
}

/// The buffers of a finished tape, for the next one: a training step records the same graph
/// every time, so once the first step has run, every value and gradient of the next finds a
/// buffer of its exact length here and a step allocates (and zero-fills) no activation memory.
/// Reused buffers hold the previous step's numbers: they are handed only to kernels that
/// overwrite their whole output (the contract of every `Kernels` entry the tape calls).
#[derive(Default)]
pub struct BufferPool {
    free: HashMap<usize, Vec<Vec<f32>>>,
    /// Buffers taken per length since the last `trim`.
    taken: HashMap<usize, usize>,
}

/// A clone starts empty: buffers are scratch space, not state.
impl Clone for BufferPool {
    fn clone(&self) -> Self {
        BufferPool::default()
    }
}

impl std::fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BufferPool({} buffers)", self.len())
    }
}

impl BufferPool {
    /// A buffer of exactly `len` values with unspecified (finite, but stale) contents.
    fn take(&mut self, len: usize) -> Vec<f32> {
        *self.taken.entry(len).or_default() += 1;
        self.free
            .get_mut(&len)
            .and_then(Vec::pop)
            .unwrap_or_else(|| vec![0.0; len])
    }

    /// Keeps, per length, at most as many buffers as were taken since the last trim: what the
    /// next identical step needs. Buffers that came from outside (the input batch, parameter
    /// copies) and are never asked for again are dropped, so the pool does not grow.
    fn trim(&mut self) {
        let taken = std::mem::take(&mut self.taken);
        self.free.retain(|len, bufs| {
            bufs.truncate(taken.get(len).copied().unwrap_or(0));
            !bufs.is_empty()
        });
    }

    fn give(&mut self, buf: Vec<f32>) {
        if !buf.is_empty() {
            self.free.entry(buf.len()).or_default().push(buf);
        }
    }

    /// How many buffers are waiting to be reused.
    pub fn len(&self) -> usize {
        self.free.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Splits a 2-D or 4-D shape into (batch, channels, spatial size).
fn nc_hw(t: &Tensor, what: &str) -> Result<(usize, usize, usize)> {
    match t.shape() {
        [n, c] => Ok((*n, *c, 1)),
        [n, c, h, w] => Ok((*n, *c, h * w)),
        s => Err(Error::Shape(format!(
            "{what} must be 2-D or 4-D, got {s:?}"
        ))),
    }
}

fn check_channels(what: &str, t: &Tensor, c: usize) -> Result<()> {
    if t.numel() != c {
        return Err(Error::Shape(format!(
            "{what} has {} values, expected one per channel ({c})",
            t.numel()
        )));
    }
    Ok(())
}

impl<'k> Tape<'k> {
    pub fn new(k: &'k Kernels) -> Self {
        Self::with_pool(k, BufferPool::default())
    }

    /// A tape that takes its buffers from `pool` (see `BufferPool`).
    pub fn with_pool(k: &'k Kernels, pool: BufferPool) -> Self {
        Tape {
            k,
            nodes: Vec::new(),
            pool,
        }
    }

    /// Ends the tape, handing every value and gradient buffer back for the next one.
    pub fn into_pool(self) -> BufferPool {
        let mut pool = self.pool;
        for node in self.nodes {
            // Leaves came from outside (inputs, parameter copies): the next step brings its
            // own, so keeping theirs would only grow the pool.
            if !matches!(node.op, Op::Leaf) {
                pool.give(node.value.into_data());
            }
            if let Some(g) = node.grad {
                pool.give(g.into_data());
            }
        }
        pool.trim();
        pool
    }

    /// A tensor of `shape` from the pool, contents unspecified: only for outputs that the
    /// kernel called next overwrites whole.
    fn output(&mut self, shape: &[usize]) -> Tensor {
        let len = shape.iter().product();
        Tensor::from_buffer(shape, self.pool.take(len))
    }

    /// A pooled tensor of `v`'s shape, contents unspecified (see `output`).
    fn output_like(&mut self, v: Var) -> Tensor {
        let shape = self.value(v).shape().to_vec();
        self.output(&shape)
    }

    /// A pooled copy of `v`'s value (for the ops that work in place).
    fn copy_of(&mut self, v: Var) -> Tensor {
        let shape = self.value(v).shape().to_vec();
        let mut t = self.output(&shape);
        t.data_mut().copy_from_slice(self.nodes[v.0].value.data());
        t
    }

    pub fn kernels(&self) -> &'k Kernels {
        self.k
    }

    fn push(&mut self, value: Tensor, requires_grad: bool, op: Op) -> Var {
        self.nodes.push(Node {
            value,
            grad: None,
            requires_grad,
            op,
        });
        Var(self.nodes.len() - 1)
    }

    fn needs(&self, v: Var) -> bool {
        self.nodes[v.0].requires_grad
    }

    /// An input or parameter. Gradients are kept only for leaves that ask for them.
    pub fn leaf(&mut self, value: Tensor, requires_grad: bool) -> Var {
        self.push(value, requires_grad, Op::Leaf)
    }

    pub fn value(&self, v: Var) -> &Tensor {
        &self.nodes[v.0].value
    }

    /// The gradient accumulated into `v` by `backward` (None if nothing flowed into it).
    pub fn grad(&self, v: Var) -> Option<&Tensor> {
        self.nodes[v.0].grad.as_ref()
    }

    /// Convolution without bias (a batch-norm always follows in the student).
    pub fn conv2d(&mut self, x: Var, w: Var, p: Conv2d) -> Result<Var> {
        let geom = p.geometry(self.value(x), self.value(w))?;
        let mut y = self.output(&[geom.n, geom.c_out, geom.out_h(), geom.out_w()]);
        (self.k.conv2d)(
            &geom,
            self.value(x).data(),
            self.value(w).data(),
            None,
            y.data_mut(),
        );
        let rg = self.needs(x) || self.needs(w);
        Ok(self.push(y, rg, Op::Conv { x, w, geom }))
    }

    /// Training-mode batch-norm: normalises with the batch statistics and returns them
    /// (mean, biased variance) so the caller can update running statistics.
    pub fn batch_norm_train(
        &mut self,
        x: Var,
        gamma: Var,
        beta: Var,
        eps: f32,
    ) -> Result<(Var, Vec<f32>, Vec<f32>)> {
        let (n, c, hw) = nc_hw(self.value(x), "batch-norm input")?;
        check_channels("batch-norm weight", self.value(gamma), c)?;
        check_channels("batch-norm bias", self.value(beta), c)?;
        if n * hw < 2 {
            return Err(Error::InvalidArgument(
                "training batch-norm needs at least two values per channel; use a batch of 2 or more"
                    .into(),
            ));
        }
        let shape = self.value(x).shape().to_vec();
        let mut y = self.output(&shape);
        let (mut mean, mut var) = (vec![0.0; c], vec![0.0; c]);
        (self.k.batch_norm_train_forward)(
            n,
            c,
            hw,
            self.value(x).data(),
            self.value(gamma).data(),
            self.value(beta).data(),
            eps,
            y.data_mut(),
            &mut mean,
            &mut var,
        );
        let rg = self.needs(x) || self.needs(gamma) || self.needs(beta);
        let out = self.push(
            y,
            rg,
            Op::BatchNormTrain {
                x,
                gamma,
                beta,
                mean: mean.clone(),
                var: var.clone(),
                eps,
            },
        );
        Ok((out, mean, var))
    }

    /// Training-mode batch-norm followed by PReLU (slopes `alpha`): records the same two nodes
    /// as `batch_norm_train` then `prelu`, both values written by one fused kernel. Returns the
    /// PReLU's output and the batch statistics.
    pub fn batch_norm_prelu_train(
        &mut self,
        x: Var,
        gamma: Var,
        beta: Var,
        alpha: Var,
        eps: f32,
    ) -> Result<(Var, Vec<f32>, Vec<f32>)> {
        let (n, c, hw) = nc_hw(self.value(x), "batch-norm input")?;
        check_channels("batch-norm weight", self.value(gamma), c)?;
        check_channels("batch-norm bias", self.value(beta), c)?;
        check_channels("prelu slopes", self.value(alpha), c)?;
        if n * hw < 2 {
            return Err(Error::InvalidArgument(
                "training batch-norm needs at least two values per channel; use a batch of 2 or more"
                    .into(),
            ));
        }
        let shape = self.value(x).shape().to_vec();
        let mut y = self.output(&shape);
        let mut z = self.output(&shape);
        let (mut mean, mut var) = (vec![0.0; c], vec![0.0; c]);
        (self.k.batch_norm_prelu_train_forward)(BatchNormPreluForward {
            n,
            c,
            hw,
            x: self.value(x).data(),
            gamma: self.value(gamma).data(),
            beta: self.value(beta).data(),
            alpha: self.value(alpha).data(),
            eps,
            y: y.data_mut(),
            z: z.data_mut(),
            mean: &mut mean,
            var: &mut var,
        });
        let rg = self.needs(x) || self.needs(gamma) || self.needs(beta);
        let bn = self.push(
            y,
            rg,
            Op::BatchNormTrain {
                x,
                gamma,
                beta,
                mean: mean.clone(),
                var: var.clone(),
                eps,
            },
        );
        let rg = rg || self.needs(alpha);
        let out = self.push(z, rg, Op::Prelu { x: bn, alpha });
        Ok((out, mean, var))
    }

    /// Inference-mode batch-norm with fixed statistics.
    pub fn batch_norm_eval(
        &mut self,
        x: Var,
        gamma: Var,
        beta: Var,
        mean: &[f32],
        var: &[f32],
        eps: f32,
    ) -> Result<Var> {
        let (n, c, hw) = nc_hw(self.value(x), "batch-norm input")?;
        check_channels("batch-norm weight", self.value(gamma), c)?;
        check_channels("batch-norm bias", self.value(beta), c)?;
        if mean.len() != c || var.len() != c {
            return Err(Error::Shape(format!(
                "batch-norm statistics have {}/{} values, expected {c}",
                mean.len(),
                var.len()
            )));
        }
        let mut y = Tensor::zeros(self.value(x).shape());
        crate::cpu::scalar::batch_norm(
            n,
            c,
            hw,
            self.value(x).data(),
            self.value(gamma).data(),
            self.value(beta).data(),
            mean,
            var,
            eps,
            y.data_mut(),
        );
        let rg = self.needs(x) || self.needs(gamma) || self.needs(beta);
        Ok(self.push(
            y,
            rg,
            Op::BatchNormEval {
                x,
                gamma,
                beta,
                mean: mean.to_vec(),
                var: var.to_vec(),
                eps,
            },
        ))
    }

    /// PReLU with one slope per channel.
    pub fn prelu(&mut self, x: Var, alpha: Var) -> Result<Var> {
        let mut y = self.copy_of(x);
        ops::prelu(self.k, &mut y, self.value(alpha).data())?;
        let rg = self.needs(x) || self.needs(alpha);
        Ok(self.push(y, rg, Op::Prelu { x, alpha }))
    }

    /// Elementwise sum of equally shaped values.
    pub fn add(&mut self, a: Var, b: Var) -> Result<Var> {
        let mut y = self.copy_of(a);
        ops::add(self.k, &mut y, self.value(b))?;
        let rg = self.needs(a) || self.needs(b);
        Ok(self.push(y, rg, Op::Add { a, b }))
    }

    /// Global depthwise conv without bias: `[n, c, h, w]` × `[c, 1, h, w]` → `[n, c]`.
    pub fn global_depthwise(&mut self, x: Var, w: Var) -> Result<Var> {
        let y = ops::global_depthwise_conv(self.k, self.value(x), self.value(w), None)?;
        let rg = self.needs(x) || self.needs(w);
        Ok(self.push(y, rg, Op::GlobalDepthwise { x, w }))
    }

    /// `y = x · wᵀ` with `x: [n, k]`, `w: [m, k]`.
    pub fn linear(&mut self, x: Var, w: Var) -> Result<Var> {
        let y = ops::linear(self.k, self.value(x), self.value(w), None)?;
        let rg = self.needs(x) || self.needs(w);
        Ok(self.push(y, rg, Op::Linear { x, w }))
    }

    /// Row-wise L2 normalisation of a 2-D value.
    pub fn l2_normalize(&mut self, x: Var) -> Result<Var> {
        let mut y = self.value(x).clone();
        ops::l2_normalize(self.k, &mut y)?;
        let rg = self.needs(x);
        Ok(self.push(y, rg, Op::L2Normalize { x }))
    }

    fn accumulate(&mut self, v: Var, g: Tensor) {
        let node = &mut self.nodes[v.0];
        if !node.requires_grad {
            self.pool.give(g.into_data());
            return;
        }
        match &mut node.grad {
            Some(acc) => {
                (self.k.add)(acc.data_mut(), g.data());
                self.pool.give(g.into_data());
            }
            None => node.grad = Some(g),
        }
    }

    /// Adds `g` to the gradient of `v` before `backward`, for objectives with several terms on
    /// different values: seed the earlier values here, then call `backward` on the last one.
    pub fn add_grad(&mut self, v: Var, g: Tensor) -> Result<()> {
        if g.shape() != self.value(v).shape() {
            return Err(Error::Shape(format!(
                "gradient {:?} does not match value {:?}",
                g.shape(),
                self.value(v).shape()
            )));
        }
        self.accumulate(v, g);
        Ok(())
    }

    /// Back-propagates `dout` (the gradient of the objective with respect to `out`) through
    /// everything recorded before `out`. Gradients of intermediate values are freed as they are
    /// used; leaves keep theirs.
    pub fn backward(&mut self, out: Var, dout: Tensor) -> Result<()> {
        if dout.shape() != self.value(out).shape() {
            return Err(Error::Shape(format!(
                "output gradient {:?} does not match output {:?}",
                dout.shape(),
                self.value(out).shape()
            )));
        }
        self.accumulate(out, dout);
        let k = self.k;
        for i in (0..=out.0).rev() {
            if matches!(self.nodes[i].op, Op::Leaf) {
                continue;
            }
            let Some(dy_t) = self.nodes[i].grad.take() else {
                continue;
            };
            let op = std::mem::replace(&mut self.nodes[i].op, Op::Leaf);
            let dy = dy_t.data();
            match &op {
                Op::Leaf => {}
                Op::Conv { x, w, geom } => {
                    let kind = ConvKind::of(geom);
                    let (bd, bw) = match kind {
                        ConvKind::General => (k.conv2d_backward_data, k.conv2d_backward_weight),
                        ConvKind::Depthwise => {
                            (k.depthwise_backward_data, k.depthwise_backward_weight)
                        }
                        ConvKind::Pointwise => {
                            (k.pointwise_backward_data, k.pointwise_backward_weight)
                        }
                    };
                    if self.needs(*w) {
                        let mut dw = self.output_like(*w);
                        let x = self.value(*x).data();
                        bw(
                            geom,
                            ConvWeightGrad {
                                x,
                                dy,
                                dw: dw.data_mut(),
                            },
                        );
                        self.accumulate(*w, dw);
                    }
                    if self.needs(*x) {
                        let mut dx = self.output_like(*x);
                        let w = self.value(*w).data();
                        bd(
                            geom,
                            ConvDataGrad {
                                dy,
                                w,
                                dx: dx.data_mut(),
                            },
                        );
                        self.accumulate(*x, dx);
                    }
                }
                Op::BatchNormTrain {
                    x,
                    gamma,
                    beta,
                    mean,
                    var,
                    eps,
                } => {
                    let (n, c, hw) = nc_hw(self.value(*x), "batch-norm input")?;
                    let mut dx = self.output_like(*x);
                    let mut dg = self.output_like(*gamma);
                    let mut db = self.output_like(*beta);
                    (k.batch_norm_train_backward)(BatchNormBackward {
                        n,
                        c,
                        hw,
                        x: self.value(*x).data(),
                        dy,
                        gamma: self.value(*gamma).data(),
                        mean,
                        var,
                        eps: *eps,
                        dx: dx.data_mut(),
                        dgamma: dg.data_mut(),
                        dbeta: db.data_mut(),
                    });
                    self.accumulate(*gamma, dg);
                    self.accumulate(*beta, db);
                    self.accumulate(*x, dx);
                }
                Op::BatchNormEval {
                    x,
                    gamma,
                    beta,
                    mean,
                    var,
                    eps,
                } => {
                    let (n, c, hw) = nc_hw(self.value(*x), "batch-norm input")?;
                    let mut dx = self.output_like(*x);
                    let mut dg = self.output_like(*gamma);
                    let mut db = self.output_like(*beta);
                    (k.batch_norm_eval_backward)(BatchNormBackward {
                        n,
                        c,
                        hw,
                        x: self.value(*x).data(),
                        dy,
                        gamma: self.value(*gamma).data(),
                        mean,
                        var,
                        eps: *eps,
                        dx: dx.data_mut(),
                        dgamma: dg.data_mut(),
                        dbeta: db.data_mut(),
                    });
                    self.accumulate(*gamma, dg);
                    self.accumulate(*beta, db);
                    self.accumulate(*x, dx);
                }
                Op::Prelu { x, alpha } => {
                    let (n, c, hw) = nc_hw(self.value(*x), "prelu input")?;
                    let mut dx = self.output_like(*x);
                    let mut da = self.output_like(*alpha);
                    (k.prelu_backward)(
                        n,
                        c,
                        hw,
                        self.value(*x).data(),
                        self.value(*alpha).data(),
                        dy,
                        dx.data_mut(),
                        da.data_mut(),
                    );
                    self.accumulate(*alpha, da);
                    self.accumulate(*x, dx);
                }
                Op::Add { a, b } => {
                    let shape = self.value(*a).shape().to_vec();
                    let mut da = self.output(&shape);
                    da.data_mut().copy_from_slice(dy);
                    self.accumulate(*a, da);
                    let mut db = self.output(&shape);
                    db.data_mut().copy_from_slice(dy);
                    self.accumulate(*b, db);
                }
                Op::GlobalDepthwise { x, w } => {
                    let [n, c, h, wd] = self.value(*x).dims4("global depthwise input")?;
                    let mut dx = self.output_like(*x);
                    let mut dw = self.output_like(*w);
                    (k.global_depthwise_backward)(
                        n,
                        c,
                        h * wd,
                        self.value(*x).data(),
                        self.value(*w).data(),
                        dy,
                        dx.data_mut(),
                        dw.data_mut(),
                    );
                    self.accumulate(*w, dw);
                    self.accumulate(*x, dx);
                }
                Op::Linear { x, w } => {
                    let [n, kk] = self.value(*x).dims2("linear input")?;
                    let [m, _] = self.value(*w).dims2("linear weight")?;
                    if self.needs(*w) {
                        let mut dw = self.output_like(*w);
                        (k.linear_backward_weight)(
                            n,
                            kk,
                            m,
                            self.value(*x).data(),
                            dy,
                            dw.data_mut(),
                        );
                        self.accumulate(*w, dw);
                    }
                    if self.needs(*x) {
                        let mut dx = self.output_like(*x);
                        (k.linear_backward_data)(
                            n,
                            kk,
                            m,
                            dy,
                            self.value(*w).data(),
                            dx.data_mut(),
                        );
                        self.accumulate(*x, dx);
                    }
                }
                Op::L2Normalize { x } => {
                    let [n, d] = self.value(*x).dims2("l2-normalise input")?;
                    let mut dx = self.output_like(*x);
                    (k.l2_normalize_backward)(n, d, self.value(*x).data(), dy, dx.data_mut());
                    self.accumulate(*x, dx);
                }
            }
            self.nodes[i].op = op;
            self.pool.give(dy_t.into_data());
        }
        Ok(())
    }
}
