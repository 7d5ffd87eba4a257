//! Bicubic resampling and the evaluation's resolution protocol: a face taken down to r×r by
//! area averaging, then brought to a model's native input size. Pixels in, pixels out; no model.

use super::image::{resize_area, Rgb8};
use crate::error::{Error, Result};

/// The cubic-convolution parameter. −0.75 is OpenCV's `INTER_CUBIC` (PIL uses −0.5); we follow
/// OpenCV because the teacher's reference numbers were measured with its resize.
const CUBIC_A: f64 = -0.75;

/// Keys' cubic-convolution kernel at distance `x`.
fn cubic(x: f64) -> f64 {
    let x = x.abs();
    if x <= 1.0 {
        ((CUBIC_A + 2.0) * x - (CUBIC_A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((CUBIC_A * x - 5.0 * CUBIC_A) * x + 8.0 * CUBIC_A) * x - 4.0 * CUBIC_A
    } else {
        0.0
    }
}

/// The four taps of each output index along one axis: half-pixel centres
/// (`src = (dst + 0.5) · scale − 0.5`) and replicated borders, as OpenCV does.
fn cubic_taps(src: usize, dst: usize) -> Vec<[(usize, f32); 4]> {
    let scale = src as f64 / dst as f64;
    let last = src as i64 - 1;
    (0..dst)
        .map(|o| {
            let fx = (o as f64 + 0.5) * scale - 0.5;
            let x0 = fx.floor();
            let t = fx - x0;
            let mut taps = [(0usize, 0.0f32); 4];
            for (k, tap) in taps.iter_mut().enumerate() {
                let idx = (x0 as i64 - 1 + k as i64).clamp(0, last) as usize;
                *tap = (idx, cubic(t + 1.0 - k as f64) as f32);
            }
            taps
        })
        .collect()
}

/// Resizes RGB8 to `out_w × out_h` by bicubic interpolation (OpenCV `INTER_CUBIC` convention,
/// a = −0.75; results may differ from OpenCV's fixed-point code by one grey level). Meant for
/// upsampling: for downsampling use area averaging (`data::image::resize_area`), which does not
/// alias.
pub fn resize_bicubic(img: &Rgb8, out_w: usize, out_h: usize) -> Result<Rgb8> {
    if out_w == 0 || out_h == 0 {
        return Err(Error::InvalidArgument(format!(
            "cannot resize to an empty {out_w}×{out_h} image"
        )));
    }
    if img.width == 0 || img.height == 0 || img.pixels.len() != img.width * img.height * 3 {
        return Err(Error::InvalidArgument(format!(
            "a {}×{} RGB image needs {} bytes, it has {}",
            img.width,
            img.height,
            img.width * img.height * 3,
            img.pixels.len()
        )));
    }
    let wx = cubic_taps(img.width, out_w);
    let wy = cubic_taps(img.height, out_h);
    // Horizontal pass into floats (no rounding in between), then vertical, then round once.
    let mut rows = vec![0.0f32; img.height * out_w * 3];
    for y in 0..img.height {
        let src = &img.pixels[y * img.width * 3..(y + 1) * img.width * 3];
        for (ox, taps) in wx.iter().enumerate() {
            for ch in 0..3 {
                rows[(y * out_w + ox) * 3 + ch] = taps
                    .iter()
                    .map(|&(ix, f)| src[ix * 3 + ch] as f32 * f)
                    .sum();
            }
        }
    }
    let mut pixels = vec![0u8; out_h * out_w * 3];
    for (oy, taps) in wy.iter().enumerate() {
        for x in 0..out_w * 3 {
            let v: f32 = taps
                .iter()
                .map(|&(iy, f)| rows[iy * out_w * 3 + x] * f)
                .sum();
            pixels[oy * out_w * 3 + x] = v.round().clamp(0.0, 255.0) as u8;
        }
    }
    Ok(Rgb8 {
        width: out_w,
        height: out_h,
        pixels,
    })
}

/// Resizes by area averaging and rounds back to 8 bits, as a camera or a JPEG would store it.
pub fn downsample_area(img: &Rgb8, out_w: usize, out_h: usize) -> Result<Rgb8> {
    if out_w == 0 || out_h == 0 {
        return Err(Error::InvalidArgument(format!(
            "cannot resize to an empty {out_w}×{out_h} image"
        )));
    }
    let pixels = resize_area(img, out_w, out_h)
        .into_iter()
        .map(|v| v.round().clamp(0.0, 255.0) as u8)
        .collect();
    Ok(Rgb8 {
        width: out_w,
        height: out_h,
        pixels,
    })
}

/// The evaluation's resolution protocol: the face is downsampled to `r × r` (area, 8-bit), then
/// brought to the model's native `model_side`: unchanged when equal, bicubic-upsampled when the
/// model is larger (the teacher at 112 sees a blurry face, never more detail than r pixels),
/// area-downsampled when the model is smaller.
pub fn degrade_to_resolution(img: &Rgb8, r: usize, model_side: usize) -> Result<Rgb8> {
    if r == 0 || model_side == 0 {
        return Err(Error::InvalidArgument(format!(
            "resolution {r} and model input {model_side} must be positive"
        )));
    }
    let lr = downsample_area(img, r, r)?;
    match model_side.cmp(&r) {
        std::cmp::Ordering::Equal => Ok(lr),
        std::cmp::Ordering::Greater => resize_bicubic(&lr, model_side, model_side),
        std::cmp::Ordering::Less => downsample_area(&lr, model_side, model_side),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn gray_row(values: &[u8]) -> Rgb8 {
        Rgb8 {
            width: values.len(),
            height: 1,
            pixels: values.iter().flat_map(|&v| [v, v, v]).collect(),
        }
    }

    fn random_image(rng: &mut Rng, w: usize, h: usize) -> Rgb8 {
        Rgb8 {
            width: w,
            height: h,
            pixels: (0..w * h * 3).map(|_| rng.below(256) as u8).collect(),
        }
    }

    #[test]
    fn kernel_weights_sum_to_one() {
        for t in [0.0, 0.1, 0.25, 0.5, 0.75, 0.99] {
            let s: f64 = (0..4).map(|k| cubic(t + 1.0 - k as f64)).sum();
            assert!((s - 1.0).abs() < 1e-12, "t={t}: {s}");
        }
        // Interpolating: weight 1 at the sample itself, 0 at the others.
        assert_eq!(cubic(0.0), 1.0);
        assert_eq!(cubic(1.0), 0.0);
        assert_eq!(cubic(2.0), 0.0);
    }

    #[test]
    fn upsampling_matches_hand_computed_values() {
        // [0, 255] → 4 pixels. Output 1 sits at source x = 0.25: taps at −1, 0, 1, 2 with
        // weights w(1.25) = −0.10546875, w(0.25) = 0.87890625, w(0.75) = 0.26171875,
        // w(1.75) = −0.03515625; borders replicate, so 255·(0.26171875 − 0.03515625) = 57.77.
        // Output 0 (x = −0.25) is 255·w(1.25) < 0, clamped to 0; the rest follow by symmetry.
        let out = resize_bicubic(&gray_row(&[0, 255]), 4, 1).unwrap();
        let reds: Vec<u8> = out.pixels.chunks(3).map(|p| p[0]).collect();
        assert_eq!(reds, vec![0, 58, 197, 255]);
        assert!(out.pixels.chunks(3).all(|p| p[0] == p[1] && p[1] == p[2]));
    }

    #[test]
    fn same_size_is_identity_and_constant_stays_constant() {
        let mut rng = Rng::new(3);
        for (w, h) in [(1, 1), (5, 3), (7, 7)] {
            let img = random_image(&mut rng, w, h);
            assert_eq!(resize_bicubic(&img, w, h).unwrap(), img);
        }
        let flat = Rgb8 {
            width: 5,
            height: 7,
            pixels: [17u8, 200, 96].repeat(35),
        };
        for (w, h) in [(1, 1), (13, 3), (112, 112), (2, 9)] {
            let out = resize_bicubic(&flat, w, h).unwrap();
            assert_eq!((out.width, out.height), (w, h));
            assert!(out.pixels.chunks(3).all(|p| p == [17, 200, 96]));
        }
    }

    /// The separable two-pass implementation against the 2-D definition evaluated directly in
    /// f64: out(x, y) = Σ_ij w(i − sx) · w(j − sy) · src(clamp(i), clamp(j)), on random images
    /// and sizes, up and down. One grey level of slack: the passes accumulate in f32, which can
    /// move a value across a rounding boundary.
    #[test]
    fn separable_passes_match_the_direct_definition() {
        let mut rng = Rng::new(21);
        for _ in 0..12 {
            let (w, h) = (1 + rng.below(9), 1 + rng.below(9));
            let (ow, oh) = (1 + rng.below(20), 1 + rng.below(20));
            let img = random_image(&mut rng, w, h);
            let out = resize_bicubic(&img, ow, oh).unwrap();
            for oy in 0..oh {
                let sy = (oy as f64 + 0.5) * h as f64 / oh as f64 - 0.5;
                for ox in 0..ow {
                    let sx = (ox as f64 + 0.5) * w as f64 / ow as f64 - 0.5;
                    for ch in 0..3 {
                        let mut acc = 0.0f64;
                        for j in sy.floor() as i64 - 1..=sy.floor() as i64 + 2 {
                            for i in sx.floor() as i64 - 1..=sx.floor() as i64 + 2 {
                                let (ci, cj) = (
                                    i.clamp(0, w as i64 - 1) as usize,
                                    j.clamp(0, h as i64 - 1) as usize,
                                );
                                acc += cubic(i as f64 - sx)
                                    * cubic(j as f64 - sy)
                                    * img.pixels[(cj * w + ci) * 3 + ch] as f64;
                            }
                        }
                        let want = acc.round().clamp(0.0, 255.0);
                        let got = out.pixels[(oy * ow + ox) * 3 + ch] as f64;
                        assert!(
                            (got - want).abs() <= 1.0,
                            "{w}×{h} → {ow}×{oh} at ({ox},{oy},{ch}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn degrade_keeps_only_r_pixels_of_detail() {
        let mut rng = Rng::new(9);
        let img = random_image(&mut rng, 64, 48);
        let lr = degrade_to_resolution(&img, 16, 16).unwrap();
        assert_eq!((lr.width, lr.height), (16, 16));
        assert_eq!(lr, downsample_area(&img, 16, 16).unwrap());
        let up = degrade_to_resolution(&img, 8, 112).unwrap();
        assert_eq!((up.width, up.height), (112, 112));
        assert_eq!(
            up,
            resize_bicubic(&downsample_area(&img, 8, 8).unwrap(), 112, 112).unwrap()
        );
        // Area-averaging the upsampled face back to 8×8 gives (nearly) the LR face again:
        // the teacher's input holds no detail beyond r.
        let lr8 = downsample_area(&img, 8, 8).unwrap();
        let back = downsample_area(&up, 8, 8).unwrap();
        let worst = lr8
            .pixels
            .iter()
            .zip(&back.pixels)
            .map(|(a, b)| (*a as i32 - *b as i32).abs())
            .max()
            .unwrap();
        assert!(worst <= 12, "largest difference {worst}");
        let small = degrade_to_resolution(&img, 32, 16).unwrap();
        assert_eq!((small.width, small.height), (16, 16));
        assert!(degrade_to_resolution(&img, 0, 16).is_err());
        assert!(resize_bicubic(&img, 0, 3).is_err());
    }
}
