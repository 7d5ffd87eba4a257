//! Image input: decode any format the `image` crate reads into RGB8, resize with exact area
//! averaging, and normalise into an NCHW tensor. Owns no model logic.

use crate::error::{Error, Result};
use crate::model::student::Normalization;
use crate::tensor::Tensor;
use std::path::Path;

/// A packed RGB8 image.
#[derive(Clone, Debug, PartialEq)]
pub struct Rgb8 {
    pub width: usize,
    pub height: usize,
    /// `height * width * 3` bytes, row-major, no padding.
    pub pixels: Vec<u8>,
}

impl Rgb8 {
    /// Copies a strided RGB8 buffer (`row_stride` bytes per row, at least `width * 3`).
    pub fn from_strided(
        width: usize,
        height: usize,
        row_stride: usize,
        data: &[u8],
    ) -> Result<Self> {
        if width == 0 || height == 0 {
            return Err(Error::InvalidArgument(format!(
                "image size {width}×{height} is empty"
            )));
        }
        if row_stride < width * 3 {
            return Err(Error::InvalidArgument(format!(
                "row stride {row_stride} is less than width×3 = {}",
                width * 3
            )));
        }
        let need = (height - 1) * row_stride + width * 3;
        if data.len() < need {
            return Err(Error::InvalidArgument(format!(
                "pixel buffer holds {} bytes, a {width}×{height} image with stride {row_stride} needs {need}",
                data.len()
            )));
        }
        let mut pixels = Vec::with_capacity(width * height * 3);
        for y in 0..height {
            pixels.extend_from_slice(&data[y * row_stride..y * row_stride + width * 3]);
        }
        Ok(Rgb8 {
            width,
            height,
            pixels,
        })
    }
}

/// Decodes an image file (PNG, JPEG, BMP, PGM/PPM, GIF, TIFF, WebP) to RGB8.
pub fn load_rgb8(path: impl AsRef<Path>) -> Result<Rgb8> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_rgb8(&bytes, path)
}

/// Decodes an encoded image held in memory (any format `load_rgb8` reads) to RGB8; `source`
/// names it in errors (a path, or a placeholder such as `<bytes 3>`).
pub fn decode_rgb8(bytes: &[u8], source: impl AsRef<Path>) -> Result<Rgb8> {
    let img = image::load_from_memory(bytes).map_err(|e| Error::Image {
        path: source.as_ref().to_path_buf(),
        reason: e.to_string(),
    })?;
    let rgb = img.to_rgb8();
    Ok(Rgb8 {
        width: rgb.width() as usize,
        height: rgb.height() as usize,
        pixels: rgb.into_raw(),
    })
}

/// Area-weighted resampling weights along one axis: for each output index, the input indices it
/// covers and the fraction of each, summing to 1. For downscaling this is an exact box filter
/// (OpenCV's INTER_AREA); for upscaling each output samples the input cell it falls in.
fn area_weights(src: usize, dst: usize) -> Vec<Vec<(usize, f32)>> {
    let scale = src as f64 / dst as f64;
    (0..dst)
        .map(|o| {
            let start = o as f64 * scale;
            let end = start + scale;
            let mut taps = Vec::new();
            let mut i = start.floor() as usize;
            while (i as f64) < end && i < src {
                let lo = start.max(i as f64);
                let hi = end.min(i as f64 + 1.0);
                if hi > lo {
                    taps.push((i, ((hi - lo) / scale) as f32));
                }
                i += 1;
            }
            taps
        })
        .collect()
}

/// Resizes RGB8 to `out_w × out_h` by area averaging, giving interleaved f32 RGB in 0..255.
pub fn resize_area(img: &Rgb8, out_w: usize, out_h: usize) -> Vec<f32> {
    let wx = area_weights(img.width, out_w);
    let wy = area_weights(img.height, out_h);
    // Horizontal pass into a float buffer, then vertical.
    let mut rows = vec![0.0f32; img.height * out_w * 3];
    for y in 0..img.height {
        for (ox, taps) in wx.iter().enumerate() {
            for ch in 0..3 {
                let mut acc = 0.0f32;
                for &(ix, f) in taps {
                    acc += img.pixels[(y * img.width + ix) * 3 + ch] as f32 * f;
                }
                rows[(y * out_w + ox) * 3 + ch] = acc;
            }
        }
    }
    let mut out = vec![0.0f32; out_h * out_w * 3];
    for (oy, taps) in wy.iter().enumerate() {
        for x in 0..out_w * 3 {
            let mut acc = 0.0f32;
            for &(iy, f) in taps {
                acc += rows[iy * out_w * 3 + x] * f;
            }
            out[oy * out_w * 3 + x] = acc;
        }
    }
    out
}

/// Resizes to `side × side` and normalises into a `[3, side, side]` CHW tensor.
pub fn to_input(img: &Rgb8, side: usize, norm: &Normalization) -> Result<Tensor> {
    let hwc = resize_area(img, side, side);
    let mut chw = vec![0.0f32; 3 * side * side];
    for i in 0..side * side {
        for ch in 0..3 {
            chw[ch * side * side + i] = (hwc[i * 3 + ch] - norm.mean[ch]) / norm.std[ch];
        }
    }
    Tensor::new(&[3, side, side], chw)
}
