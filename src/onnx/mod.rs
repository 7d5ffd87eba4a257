//! ONNX interchange: importing SFace/YuNet-style graphs into our IR and exporting the student.
//! It sits just above `model` (it builds `model::graph::Graph`s); it never runs a network itself.

pub mod export;
pub mod import;
pub mod proto;

pub use import::{import_bytes, import_file};
