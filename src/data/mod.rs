//! Data: reading images, resizing them to a model's input, and (later) datasets, alignment and
//! low-resolution degradation. Produces tensors for models; never runs a model itself.

pub mod align;
pub mod folder;
pub mod image;
pub mod synthetic;
