//! Tensor-level operators: check shapes, allocate outputs, call the dispatched kernels.
//! Owns no arithmetic of its own; every loop lives in `cpu`.

use crate::cpu::{ConvGeom, Kernels};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Stride, padding (top, left, bottom, right) and groups of a conv.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2d {
    pub stride: (usize, usize),
    pub pads: [usize; 4],
    pub groups: usize,
}

impl Conv2d {
    pub fn new(stride: usize, pad: usize, groups: usize) -> Self {
        Conv2d {
            stride: (stride, stride),
            pads: [pad; 4],
            groups,
        }
    }

    /// The full geometry for input `x` and weights `w`, validated.
    pub fn geometry(&self, x: &Tensor, w: &Tensor) -> Result<ConvGeom> {
        let [n, c_in, h, wd] = x.dims4("conv input")?;
        let [c_out, cin_g, kh, kw] = w.dims4("conv weight")?;
        let g = ConvGeom {
            n,
            c_in,
            h,
            w: wd,
            c_out,
            kh,
            kw,
            stride_h: self.stride.0,
            stride_w: self.stride.1,
            pad_t: self.pads[0],
            pad_l: self.pads[1],
            pad_b: self.pads[2],
            pad_r: self.pads[3],
            groups: self.groups,
        };
        g.validate()?;
        if cin_g * self.groups != c_in {
            return Err(Error::Shape(format!(
                "conv weight {:?} expects {} input channels in {} groups, input has {c_in}",
                w.shape(),
                cin_g * self.groups,
                self.groups
            )));
        }
        Ok(g)
    }
}

fn check_len(what: &str, got: usize, want: usize) -> Result<()> {
    if got != want {
        return Err(Error::Shape(format!(
            "{what} has {got} values, expected {want}"
        )));
    }
    Ok(())
}

/// Convolution with optional bias.
pub fn conv2d(
    k: &Kernels,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&[f32]>,
    p: Conv2d,
) -> Result<Tensor> {
    let g = p.geometry(x, w)?;
    if let Some(b) = bias {
        check_len("conv bias", b.len(), g.c_out)?;
    }
    let mut y = Tensor::zeros(&[g.n, g.c_out, g.out_h(), g.out_w()]);
    (k.conv2d)(&g, x.data(), w.data(), bias, y.data_mut());
    Ok(y)
}

/// PReLU in place with one slope per channel (dimension 1).
pub fn prelu(k: &Kernels, x: &mut Tensor, alpha: &[f32]) -> Result<()> {
    let (n, c, hw) = nc_hw(x, "prelu input")?;
    check_len("prelu slopes", alpha.len(), c)?;
    (k.prelu)(n, c, hw, x.data_mut(), alpha);
    Ok(())
}

/// `a += b` for equal shapes.
pub fn add(k: &Kernels, a: &mut Tensor, b: &Tensor) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(Error::Shape(format!(
            "cannot add {:?} and {:?}",
            a.shape(),
            b.shape()
        )));
    }
    (k.add)(a.data_mut(), b.data());
    Ok(())
}

/// Global depthwise conv: `[n, c, h, w]` with weights `[c, 1, h, w]` gives `[n, c]`.
pub fn global_depthwise_conv(
    k: &Kernels,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&[f32]>,
) -> Result<Tensor> {
    let [n, c, h, wd] = x.dims4("global depthwise input")?;
    if w.shape() != [c, 1, h, wd] {
        return Err(Error::Shape(format!(
            "global depthwise weight {:?} does not cover input {:?}",
            w.shape(),
            x.shape()
        )));
    }
    if let Some(b) = bias {
        check_len("global depthwise bias", b.len(), c)?;
    }
    let mut y = Tensor::zeros(&[n, c]);
    (k.global_depthwise_conv)(n, c, h * wd, x.data(), w.data(), bias, y.data_mut());
    Ok(y)
}

/// `y = x · wᵀ + b` with `x: [n, k]`, `w: [m, k]`.
pub fn linear(k: &Kernels, x: &Tensor, w: &Tensor, bias: Option<&[f32]>) -> Result<Tensor> {
    let [n, kk] = x.dims2("linear input")?;
    let [m, wk] = w.dims2("linear weight")?;
    if wk != kk {
        return Err(Error::Shape(format!(
            "linear weight {:?} does not take inputs of width {kk}",
            w.shape()
        )));
    }
    if let Some(b) = bias {
        check_len("linear bias", b.len(), m)?;
    }
    let mut y = Tensor::zeros(&[n, m]);
    (k.linear)(n, kk, m, x.data(), w.data(), bias, y.data_mut());
    Ok(y)
}

/// L2-normalises each row of a 2-D tensor in place.
pub fn l2_normalize(k: &Kernels, x: &mut Tensor) -> Result<()> {
    let [n, d] = x.dims2("l2-normalise input")?;
    (k.l2_normalize)(n, d, x.data_mut());
    Ok(())
}

/// Splits a 2-D or 4-D shape into (batch, channels, spatial size).
fn nc_hw(x: &Tensor, what: &str) -> Result<(usize, usize, usize)> {
    match x.shape() {
        [n, c] => Ok((*n, *c, 1)),
        [n, c, h, w] => Ok((*n, *c, h * w)),
        s => Err(Error::Shape(format!(
            "{what} must be 2-D or 4-D, got {s:?}"
        ))),
    }
}

/// Cosine similarity of two equal-length vectors (0 if either is all zeros).
pub fn cosine(a: &[f32], b: &[f32]) -> Result<f32> {
    if a.len() != b.len() || a.is_empty() {
        return Err(Error::Shape(format!(
            "cannot compare embeddings of lengths {} and {}",
            a.len(),
            b.len()
        )));
    }
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        return Ok(0.0);
    }
    Ok((dot / (na * nb)) as f32)
}

// Operators added for imported ONNX graphs (SFace, YuNet). They are memory-bound, so they
// call the scalar reference kernels directly rather than a per-ISA table entry.

/// ReLU in place.
pub fn relu(k: &Kernels, x: &mut Tensor) {
    (k.relu)(x.data_mut());
}

/// Sigmoid in place.
pub fn sigmoid(x: &mut Tensor) {
    crate::cpu::scalar::sigmoid(x.data_mut());
}

/// `x = x * scale[c] + shift[c]` over dimension 1 (2-D or 4-D input).
pub fn channel_affine(x: &mut Tensor, scale: &[f32], shift: &[f32]) -> Result<()> {
    let (n, c, hw) = nc_hw(x, "affine input")?;
    check_len("affine scale", scale.len(), c)?;
    check_len("affine shift", shift.len(), c)?;
    crate::cpu::scalar::channel_affine(n, c, hw, x.data_mut(), scale, shift);
    Ok(())
}

/// Max pooling with a `kernel` window, `stride` and pads (top, left, bottom, right).
pub fn max_pool2d(
    x: &Tensor,
    kernel: (usize, usize),
    stride: (usize, usize),
    pads: [usize; 4],
) -> Result<Tensor> {
    let [n, c, h, w] = x.dims4("max-pool input")?;
    let g = ConvGeom {
        n,
        c_in: c,
        h,
        w,
        c_out: c,
        kh: kernel.0,
        kw: kernel.1,
        stride_h: stride.0,
        stride_w: stride.1,
        pad_t: pads[0],
        pad_l: pads[1],
        pad_b: pads[2],
        pad_r: pads[3],
        groups: c.max(1),
    };
    g.validate()?;
    let mut y = Tensor::zeros(&[n, c, g.out_h(), g.out_w()]);
    crate::cpu::scalar::max_pool2d(&g, x.data(), y.data_mut());
    Ok(y)
}

/// Nearest-neighbour upscaling of an NCHW tensor by (`scale_h`, `scale_w`), ONNX `asymmetric`
/// coordinates with `floor` rounding; the output side is `floor(side * scale)`.
pub fn resize_nearest(x: &Tensor, scale_h: f32, scale_w: f32) -> Result<Tensor> {
    let [n, c, h, w] = x.dims4("resize input")?;
    if !(scale_h.is_finite() && scale_w.is_finite() && scale_h > 0.0 && scale_w > 0.0) {
        return Err(Error::Shape(format!(
            "resize scales must be positive, got {scale_h}×{scale_w}"
        )));
    }
    let (oh, ow) = (
        (h as f32 * scale_h).floor() as usize,
        (w as f32 * scale_w).floor() as usize,
    );
    if oh == 0 || ow == 0 || h == 0 || w == 0 {
        return Err(Error::Shape(format!(
            "resize of {h}×{w} by {scale_h}×{scale_w} is empty"
        )));
    }
    let mut y = Tensor::zeros(&[n, c, oh, ow]);
    crate::cpu::scalar::resize_nearest(
        n * c,
        h,
        w,
        oh,
        ow,
        scale_h,
        scale_w,
        x.data(),
        y.data_mut(),
    );
    Ok(y)
}

/// Permutes axes: output axis `i` is input axis `perm[i]`.
pub fn transpose(x: &Tensor, perm: &[usize]) -> Result<Tensor> {
    let rank = x.shape().len();
    let mut seen = vec![false; rank];
    if perm.len() != rank
        || perm
            .iter()
            .any(|&p| p >= rank || std::mem::replace(&mut seen[p], true))
    {
        return Err(Error::Shape(format!(
            "{perm:?} is not a permutation of the {rank} axes of {:?}",
            x.shape()
        )));
    }
    let out_shape: Vec<usize> = perm.iter().map(|&p| x.shape()[p]).collect();
    let mut y = Tensor::zeros(&out_shape);
    crate::cpu::scalar::transpose(x.shape(), perm, x.data(), y.data_mut());
    Ok(y)
}
