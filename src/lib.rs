//! bridgeface: bridge distillation of a face-recognition teacher into a tiny low-resolution
//! student, and a fast engine to run it. Modules are listed bottom-up; each imports only from
//! those above it in this list (see docs/ARCHITECTURE.md).

pub mod assets;
pub mod cli;
pub mod cpu;
pub mod data;
pub mod embed;
pub mod error;
pub mod model;
pub mod onnx;
pub mod ops;
pub mod rng;
pub mod tensor;
pub mod weights;

pub use error::{Error, Result};
pub use tensor::Tensor;
