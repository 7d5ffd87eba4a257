//! Device buffers and their storage precision: `Precision` (f32 or f16 storage, f32
//! arithmetic) and `DevBuf`, uploaded, zeroed and read back in either. Must not launch kernels.

use crate::cuda::device::CudaDevice;
use crate::cuda::driver_err;
use crate::error::{Error, Result};
use cudarc::driver::CudaSlice;
use half::f16;

/// Storage precision of activations and conv/linear weights. Arithmetic is always f32; biases
/// and PReLU slopes stay f32; the embedding comes back as f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    F32,
    F16,
}

impl Precision {
    pub(crate) fn suffix(self) -> &'static str {
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
