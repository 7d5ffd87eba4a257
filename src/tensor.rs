//! The dense f32 tensor in NCHW order, and conversion to and from f16 storage.
//! It owns shape bookkeeping only; arithmetic lives in `cpu` and `ops`.

use crate::error::{Error, Result};
use half::f16;

/// A dense, row-major f32 tensor. Image batches are NCHW.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Vec<f32>,
}

impl Tensor {
    /// Builds a tensor, checking that `data` holds exactly `shape`'s element count.
    pub fn new(shape: &[usize], data: Vec<f32>) -> Result<Self> {
        let n = numel(shape);
        if n != data.len() {
            return Err(Error::Shape(format!(
                "shape {shape:?} needs {n} values, got {}",
                data.len()
            )));
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            data,
        })
    }

    /// A tensor of zeros.
    /// A tensor over a buffer of `shape`'s element count (e.g. a reused one); a buffer of
    /// another length is resized to it, new values zero.
    pub fn from_buffer(shape: &[usize], mut data: Vec<f32>) -> Self {
        data.resize(numel(shape), 0.0);
        Tensor {
            shape: shape.to_vec(),
            data,
        }
    }

    pub fn zeros(shape: &[usize]) -> Self {
        Tensor {
            shape: shape.to_vec(),
            data: vec![0.0; numel(shape)],
        }
    }

    /// Converts f16 storage to an f32 tensor.
    pub fn from_f16(shape: &[usize], data: &[f16]) -> Result<Self> {
        Self::new(shape, data.iter().map(|v| v.to_f32()).collect())
    }

    /// The values rounded to f16 storage.
    pub fn to_f16(&self) -> Vec<f16> {
        self.data.iter().map(|&v| f16::from_f32(v)).collect()
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn data(&self) -> &[f32] {
        &self.data
    }

    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    pub fn into_data(self) -> Vec<f32> {
        self.data
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// The same values under another shape with the same element count.
    pub fn reshape(mut self, shape: &[usize]) -> Result<Self> {
        if numel(shape) != self.data.len() {
            return Err(Error::Shape(format!(
                "cannot reshape {:?} to {shape:?}",
                self.shape
            )));
        }
        self.shape = shape.to_vec();
        Ok(self)
    }

    /// The shape as (N, C, H, W), or an error naming `what` if it is not 4-D.
    pub fn dims4(&self, what: &str) -> Result<[usize; 4]> {
        match self.shape[..] {
            [n, c, h, w] => Ok([n, c, h, w]),
            _ => Err(Error::Shape(format!(
                "{what} must be 4-D (N,C,H,W), got {:?}",
                self.shape
            ))),
        }
    }

    /// The shape as (rows, cols), or an error naming `what` if it is not 2-D.
    pub fn dims2(&self, what: &str) -> Result<[usize; 2]> {
        match self.shape[..] {
            [r, c] => Ok([r, c]),
            _ => Err(Error::Shape(format!(
                "{what} must be 2-D, got {:?}",
                self.shape
            ))),
        }
    }

    /// Row `i` of the leading dimension.
    pub fn row(&self, i: usize) -> &[f32] {
        let stride = self.data.len() / self.shape[0].max(1);
        &self.data[i * stride..(i + 1) * stride]
    }

    /// Stacks equally shaped tensors along a new leading axis.
    pub fn stack(items: &[Tensor]) -> Result<Tensor> {
        let first = items
            .first()
            .ok_or_else(|| Error::EmptyInput("no tensors to stack".into()))?;
        let mut data = Vec::with_capacity(first.numel() * items.len());
        for t in items {
            if t.shape != first.shape {
                return Err(Error::Shape(format!(
                    "cannot stack {:?} with {:?}",
                    t.shape, first.shape
                )));
            }
            data.extend_from_slice(&t.data);
        }
        let mut shape = vec![items.len()];
        shape.extend_from_slice(&first.shape);
        Tensor::new(&shape, data)
    }
}

/// Element count of a shape.
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}
