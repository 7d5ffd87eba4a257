//! bridgeface: bridge distillation of a face-recognition teacher into a tiny low-resolution
//! student, and a fast engine to run it. The modules form layers; each imports only from the
//! layers below it, in the order docs/ARCHITECTURE.md draws.

pub mod assets;
pub mod autograd;
pub mod cli;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod data;
pub mod distill;
pub mod embed;
pub mod error;
pub mod eval;
pub mod ffi;
#[cfg(feature = "gallery")]
pub mod gallery;
pub mod log;
pub mod model;
pub mod onnx;
pub mod ops;
pub mod optim;
pub mod rng;
pub mod tensor;
pub mod train;
pub mod weights;

pub use error::{Error, Result};
pub use tensor::Tensor;
