//! The student's training-mode forward and backward on one GPU (f32): launchers for the kernels of
//! kernels/train.cu (each checked against `cpu::scalar`) and `CudaTrainNet`, which runs the
//! unfolded network from a plain parameter description up to the un-normalised embedding and
//! back from its gradient to every parameter gradient. It knows nothing of `model`, losses or
//! optimisers: the trainer (`train::gpu`) converts parameters in and gradients out.
//!
//! The launchers of kernels/train.cu live in `launch/train.rs` and the layer description in
//! `layers.rs`; both are re-exported here under their old paths (`cuda::train::bn_stats`, …).

use super::device::CudaDevice;
use super::driver_err;
use crate::error::{Error, Result};
use cudarc::driver::CudaSlice;
use std::sync::Arc;

use super::buffer::{DevBuf, Precision};
use super::launch::conv3x3::conv3x3;
use super::launch::depthwise::depthwise3x3;
use super::launch::pointwise::pointwise;
pub use super::launch::train::{
    add_inplace, bn_prelu_backward, bn_prelu_forward, bn_stats, conv3x3_backward_weight,
    depthwise_backward_data, gdc_backward, gdc_forward, linear_backward_data,
    linear_backward_weight, linear_forward, pointwise_backward_weight,
};
use super::launch::train::{f32_of, f32_of_mut};
pub use super::layers::{BnStats, TrainBlock, TrainConv, TrainLayers};

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
