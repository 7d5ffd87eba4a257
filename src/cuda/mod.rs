//! The CUDA backend (feature `cuda`): kernel sources compiled at run time with NVRTC, the device
//! context, and the student's forward pass on the GPU. It sits beside `cpu` (imports only
//! error and rng; tests compare with `cpu::scalar`) and never panics when CUDA is missing.

pub mod bench;
pub mod buffer;
pub mod compile;
pub mod device;
pub mod gemm;
pub mod graph;
pub mod launch;
pub mod layers;
pub mod student;
pub mod train;

pub use buffer::Precision;
pub use device::CudaDevice;
pub use gemm::Gemm;
pub use launch::depthwise::Depthwise;
pub use layers::StudentLayers;
pub use student::CudaStudent;

use crate::error::{Error, Result};

/// Checks, without touching any CUDA entry point, that the driver library can be loaded.
///
/// cudarc's dynamic loading panics on the first call into a library it cannot find, so every
/// path into cudarc starts here (and, as a last resort, runs under `catch_unwind`; see
/// [`guard`]).
pub fn driver_present() -> Result<()> {
    // SAFETY: `is_culib_present` only dlopens the candidate names and drops the handle again;
    // it calls no CUDA function, so it is sound with or without a driver installed.
    if unsafe { cudarc::driver::sys::is_culib_present() } {
        Ok(())
    } else {
        Err(Error::Cuda(
            "the NVIDIA driver library (libcuda.so) was not found; install the NVIDIA driver or run with --device cpu".into(),
        ))
    }
}

/// Checks that libnvrtc (CUDA 13: `libnvrtc.so.13`) can be loaded.
pub fn nvrtc_present() -> Result<()> {
    // SAFETY: as in `driver_present`: a dlopen probe, no NVRTC call.
    if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        Ok(())
    } else {
        Err(Error::Cuda(
            "libnvrtc.so.13 (CUDA 13 NVRTC) was not found; `pip install nvidia-cuda-nvrtc` and add its \
             nvidia/cu13/lib folder to LD_LIBRARY_PATH, or run with --device cpu"
                .into(),
        ))
    }
}

/// Runs `f`, turning a panic inside cudarc into an `Error::Cuda`.
///
/// The presence probes above rule out the common panic (a missing library). What remains is a
/// library that loads but lacks a symbol cudarc expects (for example a driver older than CUDA
/// 13): cudarc then panics on the first lookup. That is a bug of the environment, not of the
/// input, and the CLI must still end with a one-line error, hence this last resort.
pub fn guard<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(Error::Cuda(format!(
                "{what} failed inside the CUDA libraries: {}",
                msg.lines().next().unwrap_or("")
            )))
        }
    }
}

/// Converts a cudarc driver error into ours, naming the step that failed.
pub(crate) fn driver_err(what: &str) -> impl Fn(cudarc::driver::DriverError) -> Error + '_ {
    move |e| Error::Cuda(format!("{what}: {e:?}"))
}
