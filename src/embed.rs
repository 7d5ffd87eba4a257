//! The library's front door for embedding: decoded images in, L2-normalised embeddings out,
//! through the student and the run-time kernel table. Used by the CLI and the C ABI alike.

use crate::cpu::Kernels;
use crate::data::image::{self, Rgb8};
use crate::error::{Error, Result};
use crate::model::student::StudentNet;
use crate::tensor::Tensor;

/// Embeds decoded images with one batched forward pass (on all CPUs).
pub fn embed_rgb(net: &StudentNet, k: &Kernels, images: &[Rgb8]) -> Result<Tensor> {
    embed_rgb_threads(net, k, images, crate::model::student::default_threads())
}

/// Embeds decoded images with one batched forward pass split over `threads` threads.
pub fn embed_rgb_threads(
    net: &StudentNet,
    k: &Kernels,
    images: &[Rgb8],
    threads: usize,
) -> Result<Tensor> {
    if threads == 0 {
        return Err(Error::InvalidArgument(
            "--threads must be at least 1".into(),
        ));
    }
    if images.is_empty() {
        return Err(Error::EmptyInput("no images given".into()));
    }
    let inputs = images
        .iter()
        .map(|img| image::to_input(img, net.resolution(), &net.info.normalization))
        .collect::<Result<Vec<_>>>()?;
    net.forward_threads(k, &Tensor::stack(&inputs)?, threads)
}
