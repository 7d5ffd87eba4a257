//! The GEMM engine policy of the pointwise convs (and the head's linear layer): `Gemm` chooses
//! FMA tiles or f16 tensor cores, checks the device and precision can run it, and names the
//! kernel and its launch grid. Must not launch anything itself (`launch::pointwise` does).

use crate::cuda::buffer::Precision;
use crate::cuda::device::CudaDevice;
use crate::error::{Error, Result};
use cudarc::driver::LaunchConfig;

/// Which engine runs the pointwise GEMMs (plain or with the depthwise fused in).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gemm {
    /// f32 FMA tiles (`*_bias_prelu_{f32,f16}`): any precision, any GPU.
    Fma,
    /// `mma.sync` f16 tensor cores with f32 accumulation (`*_mma_f16`): f16 storage, sm_80+.
    TensorCores,
    /// The same, with the pointwise input tile kept k-major in shared memory and read by
    /// `ldmatrix.trans` (`pointwise_mma2_f16`) where planes hold a multiple of 8 pixels; the
    /// first form elsewhere and for fused blocks. Identical results.
    TensorCoresLdmatrix,
}

impl Gemm {
    pub(crate) fn check(self, dev: &CudaDevice, p: Precision) -> Result<()> {
        if self != Gemm::Fma {
            if p != Precision::F16 {
                return Err(Error::Cuda(
                    "the tensor-core kernels take f16 storage only".into(),
                ));
            }
            if !dev.tensor_cores() {
                return Err(Error::Cuda(format!(
                    "{} ({}) has no f16 mma.sync tensor cores (sm_80 or newer needed)",
                    dev.name, dev.arch
                )));
            }
        }
        Ok(())
    }

    pub(crate) fn kernel(self, stem: &str, p: Precision) -> String {
        match self {
            Gemm::Fma => format!("{stem}_bias_prelu_{}", p.suffix()),
            Gemm::TensorCores | Gemm::TensorCoresLdmatrix => format!("{stem}_mma_f16"),
        }
    }

    /// The grid over (columns, output channels) and the block each kernel assumes.
    pub(crate) fn launch_config(self, cols: usize, c_out: usize) -> Result<LaunchConfig> {
        let (bn, bm, block) = match self {
            Gemm::Fma => (64, 64, (16, 16, 1)),
            Gemm::TensorCores | Gemm::TensorCoresLdmatrix => (128, 64, (256, 1, 1)),
        };
        Ok(LaunchConfig {
            grid_dim: (
                u32::try_from(cols.div_ceil(bn).max(1))
                    .map_err(|_| Error::Shape("batch too large".into()))?,
                c_out.div_ceil(bm).max(1) as u32,
                1,
            ),
            block_dim: block,
            shared_mem_bytes: 0,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Gemm::Fma => "fma",
            Gemm::TensorCores => "tensor-cores",
            Gemm::TensorCoresLdmatrix => "tensor-cores-ldmatrix",
        }
    }
}
