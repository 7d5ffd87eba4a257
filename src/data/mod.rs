//! Data: reading images, resizing them to a model's input, and (later) datasets, alignment and
//! low-resolution degradation. Produces tensors for models; never runs a model itself.

pub mod align;
pub mod augment;
pub mod degrade;
pub mod folder;
pub mod image;
pub mod loader;
#[cfg(feature = "gallery")]
pub mod parquet_embeddings;
pub mod resample;
pub mod store;
pub mod synthetic;
pub mod views;
