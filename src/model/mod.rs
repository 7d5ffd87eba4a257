//! Models built on the kernels: the BridgeNet student (and, later, the imported teacher and
//! detector graphs). Models read weights and call `ops`; they never touch files other than weights.

pub mod detector;
#[cfg(feature = "cuda")]
pub mod gpu;
pub mod graph;
pub mod plan;
pub mod student;
pub mod teacher;
