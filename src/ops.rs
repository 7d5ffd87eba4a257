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
