//! Low-resolution synthesis: turns a 112×112 (or any size) RGB8 chip into an r×r one the way
//! real low-resolution faces degrade (optional blur, a randomly chosen downsampler, optional
//! noise, optional JPEG re-encoding). Deterministic given the `Rng`; it must not normalise.

use super::image::{resize_area, Rgb8};
use crate::error::{Error, Result};
use crate::rng::Rng;

/// A downsampling method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resample {
    /// Exact box averaging (OpenCV INTER_AREA).
    Area,
    /// Bilinear at half-pixel centres, no anti-aliasing (OpenCV INTER_LINEAR).
    Bilinear,
    /// Keys cubic, a = −0.75, at half-pixel centres (OpenCV INTER_CUBIC).
    Bicubic,
}

/// Every parameter of `degrade_to_lr`. A probability of 0 turns that step off.
#[derive(Clone, Debug, PartialEq)]
pub struct DegradeConfig {
    /// Output side in pixels.
    pub resolution: usize,
    /// Downsamplers to choose among, uniformly.
    pub methods: Vec<Resample>,
    /// Probability of a Gaussian blur before downsampling, and its σ range in input pixels.
    pub blur_prob: f32,
    pub blur_sigma: (f32, f32),
    /// Probability of additive Gaussian noise after downsampling, and its σ range (0..255 scale).
    pub noise_prob: f32,
    pub noise_sigma: (f32, f32),
    /// Probability of JPEG re-encoding at the end, and its quality range (1..=100).
    pub jpeg_prob: f32,
    pub jpeg_quality: (u8, u8),
}

impl DegradeConfig {
    /// The default recipe for resolution `r`: all three downsamplers, blur and noise half the
    /// time, JPEG a third of the time.
    pub fn new(resolution: usize) -> Self {
        DegradeConfig {
            resolution,
            methods: vec![Resample::Area, Resample::Bilinear, Resample::Bicubic],
            blur_prob: 0.5,
            blur_sigma: (0.5, 1.5),
            noise_prob: 0.5,
            noise_sigma: (1.0, 6.0),
            jpeg_prob: 0.3,
            jpeg_quality: (40, 95),
        }
    }

    /// Area downsampling only, no blur, noise or JPEG.
    pub fn clean(resolution: usize) -> Self {
        DegradeConfig {
            resolution,
            methods: vec![Resample::Area],
            blur_prob: 0.0,
            blur_sigma: (0.0, 0.0),
            noise_prob: 0.0,
            noise_sigma: (0.0, 0.0),
            jpeg_prob: 0.0,
            jpeg_quality: (90, 90),
        }
    }

    /// Checks every range, so bad settings fail before training starts.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidArgument(m));
        if self.resolution == 0 {
            return bad("degrade resolution must be positive".into());
        }
        if self.methods.is_empty() {
            return bad("degrade needs at least one downsampling method".into());
        }
        for (name, p) in [
            ("blur", self.blur_prob),
            ("noise", self.noise_prob),
            ("jpeg", self.jpeg_prob),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return bad(format!("{name} probability {p} is outside 0..=1"));
            }
        }
        for (name, (lo, hi)) in [
            ("blur sigma", self.blur_sigma),
            ("noise sigma", self.noise_sigma),
        ] {
            if !(lo >= 0.0 && hi >= lo && hi.is_finite()) {
                return bad(format!("{name} range {lo}..{hi} is invalid"));
            }
        }
        let (qlo, qhi) = self.jpeg_quality;
        if qlo == 0 || qhi > 100 || qlo > qhi {
            return bad(format!(
                "jpeg quality range {qlo}..{qhi} must lie in 1..=100"
            ));
        }
        Ok(())
    }
}

fn to_u8(v: f32) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

/// Interpolation taps for one axis: for each output index, (input index, weight).
fn interp_taps(src: usize, dst: usize, method: Resample) -> Vec<Vec<(usize, f32)>> {
    let scale = src as f64 / dst as f64;
    let cubic = |t: f64| {
        let a = -0.75;
        let t = t.abs();
        if t <= 1.0 {
            ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0
        } else if t < 2.0 {
            ((a * t - 5.0 * a) * t + 8.0 * a) * t - 4.0 * a
        } else {
            0.0
        }
    };
    (0..dst)
        .map(|o| {
            let centre = (o as f64 + 0.5) * scale - 0.5;
            let base = centre.floor();
            let frac = centre - base;
            let offsets: Vec<(isize, f64)> = match method {
                Resample::Bilinear => vec![(0, 1.0 - frac), (1, frac)],
                _ => (-1..=2).map(|k| (k, cubic(frac - k as f64))).collect(),
            };
            let mut taps: Vec<(usize, f32)> = Vec::new();
            for (k, wgt) in offsets {
                let i = (base as isize + k).clamp(0, src as isize - 1) as usize;
                match taps.iter_mut().find(|(j, _)| *j == i) {
                    Some(t) => t.1 += wgt as f32,
                    None => taps.push((i, wgt as f32)),
                }
            }
            taps
        })
        .collect()
}

/// Separable resampling of interleaved RGB f32 by per-axis taps.
fn resample_separable(
    src: &[f32],
    w: usize,
    h: usize,
    wx: &[Vec<(usize, f32)>],
    wy: &[Vec<(usize, f32)>],
) -> Vec<f32> {
    let ow = wx.len();
    let mut rows = vec![0.0f32; h * ow * 3];
    for y in 0..h {
        for (ox, taps) in wx.iter().enumerate() {
            for c in 0..3 {
                rows[(y * ow + ox) * 3 + c] = taps
                    .iter()
                    .map(|&(ix, f)| src[(y * w + ix) * 3 + c] * f)
                    .sum();
            }
        }
    }
    let mut out = vec![0.0f32; wy.len() * ow * 3];
    for (oy, taps) in wy.iter().enumerate() {
        for x in 0..ow * 3 {
            out[oy * ow * 3 + x] = taps.iter().map(|&(iy, f)| rows[iy * ow * 3 + x] * f).sum();
        }
    }
    out
}

/// Resizes RGB8 to `out_w × out_h` with `method`, giving interleaved f32 RGB (0..255, not yet
/// clamped: bicubic overshoots slightly).
pub fn resize(img: &Rgb8, out_w: usize, out_h: usize, method: Resample) -> Vec<f32> {
    match method {
        Resample::Area => resize_area(img, out_w, out_h),
        m => {
            let src: Vec<f32> = img.pixels.iter().map(|&v| v as f32).collect();
            resample_separable(
                &src,
                img.width,
                img.height,
                &interp_taps(img.width, out_w, m),
                &interp_taps(img.height, out_h, m),
            )
        }
    }
}

/// Gaussian blur with standard deviation `sigma` pixels (edges replicated).
pub fn gaussian_blur(img: &Rgb8, sigma: f32) -> Rgb8 {
    if sigma <= 0.0 {
        return img.clone();
    }
    let radius = (3.0 * sigma).ceil() as isize;
    let kernel: Vec<f32> = (-radius..=radius)
        .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let total: f32 = kernel.iter().sum();
    let taps = |n: usize| -> Vec<Vec<(usize, f32)>> {
        (0..n)
            .map(|o| {
                let mut t: Vec<(usize, f32)> = Vec::new();
                for (k, &wgt) in kernel.iter().enumerate() {
                    let i = (o as isize + k as isize - radius).clamp(0, n as isize - 1) as usize;
                    match t.iter_mut().find(|(j, _)| *j == i) {
                        Some(e) => e.1 += wgt / total,
                        None => t.push((i, wgt / total)),
                    }
                }
                t
            })
            .collect()
    };
    let src: Vec<f32> = img.pixels.iter().map(|&v| v as f32).collect();
    let out = resample_separable(
        &src,
        img.width,
        img.height,
        &taps(img.width),
        &taps(img.height),
    );
    Rgb8 {
        width: img.width,
        height: img.height,
        pixels: out.into_iter().map(to_u8).collect(),
    }
}

/// Re-encodes as JPEG at `quality` and decodes again.
pub fn jpeg_roundtrip(img: &Rgb8, quality: u8) -> Result<Rgb8> {
    let fail = |e: image::ImageError| Error::Image {
        path: "<jpeg re-encoding>".into(),
        reason: e.to_string(),
    };
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, quality.clamp(1, 100))
        .encode(
            &img.pixels,
            img.width as u32,
            img.height as u32,
            image::ExtendedColorType::Rgb8,
        )
        .map_err(fail)?;
    let decoded = image::load_from_memory_with_format(&bytes, image::ImageFormat::Jpeg)
        .map_err(fail)?
        .to_rgb8();
    Ok(Rgb8 {
        width: decoded.width() as usize,
        height: decoded.height() as usize,
        pixels: decoded.into_raw(),
    })
}

/// Degrades a high-resolution chip to `cfg.resolution`: blur (maybe), downsample with a random
/// method, noise (maybe), JPEG (maybe). Every random draw comes from `rng`, in a fixed order.
pub fn degrade_to_lr(img: &Rgb8, cfg: &DegradeConfig, rng: &mut Rng) -> Result<Rgb8> {
    cfg.validate()?;
    let r = cfg.resolution;
    let blurred = if rng.uniform() < cfg.blur_prob {
        gaussian_blur(img, rng.range(cfg.blur_sigma.0, cfg.blur_sigma.1))
    } else {
        img.clone()
    };
    let method = cfg.methods[rng.below(cfg.methods.len())];
    let mut small = resize(&blurred, r, r, method);
    if rng.uniform() < cfg.noise_prob {
        let sigma = rng.range(cfg.noise_sigma.0, cfg.noise_sigma.1);
        for v in &mut small {
            *v += sigma * rng.normal();
        }
    }
    let out = Rgb8 {
        width: r,
        height: r,
        pixels: small.into_iter().map(to_u8).collect(),
    };
    if rng.uniform() < cfg.jpeg_prob {
        let (lo, hi) = cfg.jpeg_quality;
        let q = lo + rng.below((hi - lo) as usize + 1) as u8;
        return jpeg_roundtrip(&out, q);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic::synthetic_face;

    fn flat(v: u8, side: usize) -> Rgb8 {
        Rgb8 {
            width: side,
            height: side,
            pixels: vec![v; side * side * 3],
        }
    }

    #[test]
    fn every_method_keeps_a_flat_image_flat() {
        for m in [Resample::Area, Resample::Bilinear, Resample::Bicubic] {
            let out = resize(&flat(77, 112), 16, 16, m);
            assert!(out.iter().all(|v| (v - 77.0).abs() < 1e-3), "{m:?}");
        }
        let b = gaussian_blur(&flat(200, 20), 1.3);
        assert!(b.pixels.iter().all(|&v| v == 200));
    }

    #[test]
    fn bilinear_halving_averages_pixel_pairs() {
        // At scale 2 the half-pixel centre falls midway between two inputs.
        let img = Rgb8 {
            width: 4,
            height: 1,
            pixels: [10u8, 30, 50, 90].iter().flat_map(|&v| [v, v, v]).collect(),
        };
        let out = resize(&img, 2, 1, Resample::Bilinear);
        assert_eq!(out[0], 20.0);
        assert_eq!(out[3], 70.0);
    }

    #[test]
    fn degrade_is_deterministic_and_has_the_right_size() {
        let img = synthetic_face(1, 0, 0.0);
        let mut cfg = DegradeConfig::new(12);
        cfg.jpeg_prob = 1.0;
        let a = degrade_to_lr(&img, &cfg, &mut Rng::new(9)).unwrap();
        let b = degrade_to_lr(&img, &cfg, &mut Rng::new(9)).unwrap();
        assert_eq!(a, b);
        assert_eq!((a.width, a.height, a.pixels.len()), (12, 12, 12 * 12 * 3));
        let c = degrade_to_lr(&img, &DegradeConfig::clean(12), &mut Rng::new(9)).unwrap();
        assert_ne!(a, c, "blur/noise/jpeg changed nothing");
        let mut bad = DegradeConfig::new(12);
        bad.jpeg_quality = (0, 50);
        assert!(degrade_to_lr(&img, &bad, &mut Rng::new(0)).is_err());
    }
}
