//! Tape-based reverse-mode autograd over the engine's ops: records each forward op with what its
//! backward needs, then walks the tape backwards calling the `Kernels` backward entries.
//! It must not hold arithmetic loops of its own (those live in `cpu`) nor know about datasets.

pub mod loss;
pub mod student;

#[cfg(test)]
mod gradcheck;

use crate::cpu::{BatchNormBackward, ConvDataGrad, ConvGeom, ConvWeightGrad, Kernels};
use crate::error::{Error, Result};
use crate::ops::{self, Conv2d};
use crate::tensor::Tensor;

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

/// The record of one forward pass. Values stay on the tape until it is dropped.
pub struct Tape<'k> {
    k: &'k Kernels,
    nodes: Vec<Node>,
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
        Tape {
            k,
            nodes: Vec::new(),
        }
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
        let y = ops::conv2d(self.k, self.value(x), self.value(w), None, p)?;
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
        let mut y = Tensor::zeros(self.value(x).shape());
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
        let mut y = self.value(x).clone();
        ops::prelu(self.k, &mut y, self.value(alpha).data())?;
        let rg = self.needs(x) || self.needs(alpha);
        Ok(self.push(y, rg, Op::Prelu { x, alpha }))
    }

    /// Elementwise sum of equally shaped values.
    pub fn add(&mut self, a: Var, b: Var) -> Result<Var> {
        let mut y = self.value(a).clone();
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
            return;
        }
        match &mut node.grad {
            Some(acc) => (self.k.add)(acc.data_mut(), g.data()),
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
            let Some(dy) = self.nodes[i].grad.take() else {
                continue;
            };
            let op = std::mem::replace(&mut self.nodes[i].op, Op::Leaf);
            let dy = dy.data();
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
                        let mut dw = Tensor::zeros(self.value(*w).shape());
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
                        let mut dx = Tensor::zeros(self.value(*x).shape());
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
                    let mut dx = Tensor::zeros(self.value(*x).shape());
                    let mut dg = Tensor::zeros(self.value(*gamma).shape());
                    let mut db = Tensor::zeros(self.value(*beta).shape());
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
                    let mut dx = Tensor::zeros(self.value(*x).shape());
                    let mut dg = Tensor::zeros(self.value(*gamma).shape());
                    let mut db = Tensor::zeros(self.value(*beta).shape());
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
                    let mut dx = Tensor::zeros(self.value(*x).shape());
                    let mut da = Tensor::zeros(self.value(*alpha).shape());
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
                    self.accumulate(*a, Tensor::new(&shape, dy.to_vec())?);
                    self.accumulate(*b, Tensor::new(&shape, dy.to_vec())?);
                }
                Op::GlobalDepthwise { x, w } => {
                    let [n, c, h, wd] = self.value(*x).dims4("global depthwise input")?;
                    let mut dx = Tensor::zeros(self.value(*x).shape());
                    let mut dw = Tensor::zeros(self.value(*w).shape());
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
                        let mut dw = Tensor::zeros(self.value(*w).shape());
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
                        let mut dx = Tensor::zeros(self.value(*x).shape());
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
                    let mut dx = Tensor::zeros(self.value(*x).shape());
                    (k.l2_normalize_backward)(n, d, self.value(*x).data(), dy, dx.data_mut());
                    self.accumulate(*x, dx);
                }
            }
            self.nodes[i].op = op;
        }
        Ok(())
    }
}
