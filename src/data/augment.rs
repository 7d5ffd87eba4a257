//! Training-time augmentation of RGB8 face chips: random shift, random crop (resized back),
//! horizontal flip and colour jitter. Deterministic given the `Rng`; it must not resize to the
//! student's resolution (that is `degrade`'s job) nor normalise.

use super::image::{resize_area, Rgb8};
use crate::rng::Rng;

/// What augmentation does; every amount is settable and zero turns that part off.
#[derive(Clone, Debug, PartialEq)]
pub struct AugmentConfig {
    /// Largest shift in pixels along each axis (edges are replicated).
    pub max_shift: usize,
    /// Smallest crop side as a fraction of the image side (1.0: no cropping).
    pub min_crop: f32,
    /// Flip left-right with probability ½.
    pub flip: bool,
    /// Brightness factor drawn from `[1 − b, 1 + b]`.
    pub brightness: f32,
    /// Contrast factor drawn from `[1 − c, 1 + c]` (around the mean grey level).
    pub contrast: f32,
    /// Saturation factor drawn from `[1 − s, 1 + s]` (around each pixel's grey).
    pub saturation: f32,
    /// Probability of turning the image grey (all three channels equal), as grey or infrared
    /// cameras deliver it.
    pub grayscale: f32,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig {
            max_shift: 4,
            min_crop: 0.9,
            flip: true,
            brightness: 0.2,
            contrast: 0.2,
            saturation: 0.2,
            grayscale: 0.0,
        }
    }
}

impl AugmentConfig {
    /// No augmentation at all.
    pub fn none() -> Self {
        AugmentConfig {
            max_shift: 0,
            min_crop: 1.0,
            flip: false,
            brightness: 0.0,
            contrast: 0.0,
            saturation: 0.0,
            grayscale: 0.0,
        }
    }

    /// Light augmentation for the student's side of distillation: changes that barely move the
    /// teacher's feature of a view (mirror, a few pixels of shift, mild colour jitter, grey one
    /// time in three), so the view's cached feature still serves as the target.
    pub fn light() -> Self {
        AugmentConfig {
            max_shift: 3,
            min_crop: 1.0,
            flip: true,
            brightness: 0.2,
            contrast: 0.2,
            saturation: 0.2,
            grayscale: 0.33,
        }
    }

    /// Strong augmentation for the fixed views of distillation, where a single photo of a
    /// person has to stand for several: larger shifts and crops, stronger colour changes, and
    /// grey images one time in five.
    pub fn heavy() -> Self {
        AugmentConfig {
            max_shift: 8,
            min_crop: 0.8,
            flip: true,
            brightness: 0.3,
            contrast: 0.3,
            saturation: 0.4,
            grayscale: 0.2,
        }
    }
}

fn to_u8(v: f32) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

/// Applies the configured augmentations in a fixed order: crop, shift, flip, colour.
pub fn augment(img: &Rgb8, cfg: &AugmentConfig, rng: &mut Rng) -> Rgb8 {
    let (w, h) = (img.width, img.height);
    let mut out = img.clone();
    if cfg.min_crop < 1.0 {
        let f = rng.range(cfg.min_crop.clamp(0.1, 1.0), 1.0);
        let (cw, ch) = (
            ((w as f32 * f).round() as usize).clamp(1, w),
            ((h as f32 * f).round() as usize).clamp(1, h),
        );
        let (x0, y0) = (rng.below(w - cw + 1), rng.below(h - ch + 1));
        let mut pixels = Vec::with_capacity(cw * ch * 3);
        for y in y0..y0 + ch {
            pixels.extend_from_slice(&out.pixels[(y * w + x0) * 3..(y * w + x0 + cw) * 3]);
        }
        let crop = Rgb8 {
            width: cw,
            height: ch,
            pixels,
        };
        out.pixels = resize_area(&crop, w, h).into_iter().map(to_u8).collect();
    }
    if cfg.max_shift > 0 {
        let span = 2 * cfg.max_shift + 1;
        let dx = rng.below(span) as isize - cfg.max_shift as isize;
        let dy = rng.below(span) as isize - cfg.max_shift as isize;
        let src = out.pixels.clone();
        for y in 0..h {
            let sy = (y as isize - dy).clamp(0, h as isize - 1) as usize;
            for x in 0..w {
                let sx = (x as isize - dx).clamp(0, w as isize - 1) as usize;
                out.pixels[(y * w + x) * 3..(y * w + x) * 3 + 3]
                    .copy_from_slice(&src[(sy * w + sx) * 3..(sy * w + sx) * 3 + 3]);
            }
        }
    }
    if cfg.flip && rng.uniform() < 0.5 {
        for row in out.pixels.chunks_mut(w * 3) {
            for x in 0..w / 2 {
                for c in 0..3 {
                    row.swap(x * 3 + c, (w - 1 - x) * 3 + c);
                }
            }
        }
    }
    if cfg.brightness > 0.0 || cfg.contrast > 0.0 || cfg.saturation > 0.0 {
        let b = rng.range(1.0 - cfg.brightness, 1.0 + cfg.brightness);
        let c = rng.range(1.0 - cfg.contrast, 1.0 + cfg.contrast);
        let s = rng.range(1.0 - cfg.saturation, 1.0 + cfg.saturation);
        let grey = |p: &[u8]| 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32;
        let mean = out.pixels.chunks(3).map(grey).sum::<f32>() / (w * h) as f32 * b;
        for p in out.pixels.chunks_mut(3) {
            let g = grey(p) * b;
            for v in p.iter_mut() {
                let x = *v as f32 * b;
                let x = g + (x - g) * s;
                *v = to_u8(mean + (x - mean) * c);
            }
        }
    }
    if cfg.grayscale > 0.0 && rng.uniform() < cfg.grayscale {
        for p in out.pixels.chunks_mut(3) {
            let g = to_u8(0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32);
            p.fill(g);
        }
    }
    out
}

/// Blacks out everything outside a random rotated rectangle around the face, the way a face
/// aligned near the edge of its photo comes out of alignment (the chip reaches past the photo,
/// and the warp fills that with black). The face itself does not move, so the view's target
/// feature still holds. The rectangle's centre lies within 10% of the chip's, its half-sides
/// are 38–60% of the width and 42–65% of the height, and it is turned by up to ±15°; now and
/// then it covers the whole chip and nothing changes.
pub fn black_frame(img: &Rgb8, rng: &mut Rng) -> Rgb8 {
    let (w, h) = (img.width as f32, img.height as f32);
    let cx = w / 2.0 + rng.range(-0.1, 0.1) * w;
    let cy = h / 2.0 + rng.range(-0.1, 0.1) * h;
    let a = rng.range(0.38, 0.6) * w;
    let b = rng.range(0.42, 0.65) * h;
    let theta = rng.range(-15.0, 15.0).to_radians();
    let (sin, cos) = theta.sin_cos();
    let mut out = img.clone();
    for y in 0..img.height {
        for x in 0..img.width {
            let (px, py) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
            let (u, v) = (cos * px + sin * py, -sin * px + cos * py);
            if u.abs() > a || v.abs() > b {
                let i = (y * img.width + x) * 3;
                out.pixels[i..i + 3].fill(0);
            }
        }
    }
    out
}

/// Rotates `img` by `degrees` (counter-clockwise as seen, with y pointing down) about its centre, sampling bilinearly and
/// replicating the edge where the source falls outside: a head tilted in the camera's view.
pub fn rotate(img: &Rgb8, degrees: f32) -> Rgb8 {
    let (w, h) = (img.width, img.height);
    let (sin, cos) = degrees.to_radians().sin_cos();
    let (cx, cy) = (w as f32 / 2.0, h as f32 / 2.0);
    let px = |x: isize, y: isize, c: usize| -> f32 {
        let x = x.clamp(0, w as isize - 1) as usize;
        let y = y.clamp(0, h as isize - 1) as usize;
        f32::from(img.pixels[(y * w + x) * 3 + c])
    };
    let mut out = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            // The source of output pixel (x, y): the inverse rotation of its centre.
            let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
            let sx = cos * dx - sin * dy + cx - 0.5;
            let sy = sin * dx + cos * dy + cy - 0.5;
            let (x0, y0) = (sx.floor(), sy.floor());
            let (fx, fy) = (sx - x0, sy - y0);
            let (x0, y0) = (x0 as isize, y0 as isize);
            for c in 0..3 {
                let top = px(x0, y0, c) * (1.0 - fx) + px(x0 + 1, y0, c) * fx;
                let bottom = px(x0, y0 + 1, c) * (1.0 - fx) + px(x0 + 1, y0 + 1, c) * fx;
                out.push(to_u8(top * (1.0 - fy) + bottom * fy));
            }
        }
    }
    Rgb8 {
        width: w,
        height: h,
        pixels: out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic::synthetic_face;

    #[test]
    fn rotation_by_zero_is_identity_and_a_quarter_turn_moves_pixels_where_expected() {
        let img = synthetic_face(4, 1, 0.0);
        assert_eq!(rotate(&img, 0.0), img);
        let mut dot = Rgb8 {
            width: 9,
            height: 9,
            pixels: vec![0; 9 * 9 * 3],
        };
        // A bright pixel right of the centre goes above it after +90° (y grows downwards).
        dot.pixels[(4 * 9 + 7) * 3] = 255;
        let r = rotate(&dot, 90.0);
        let at = |x: usize, y: usize| r.pixels[(y * 9 + x) * 3];
        assert!(
            at(4, 1) > 200,
            "rotated dot lands at (4, 1), got {}",
            at(4, 1)
        );
        assert_eq!(at(7, 4), 0);
        let turned = rotate(&img, 8.0);
        assert_ne!(turned, img);
        assert_eq!((turned.width, turned.height), (img.width, img.height));
    }

    #[test]
    fn same_seed_same_result_and_none_is_identity() {
        let img = synthetic_face(3, 0, 0.1);
        let cfg = AugmentConfig::default();
        let a = augment(&img, &cfg, &mut Rng::new(5));
        let b = augment(&img, &cfg, &mut Rng::new(5));
        assert_eq!(a, b);
        let outs: Vec<Rgb8> = (0..8)
            .map(|s| augment(&img, &cfg, &mut Rng::new(s)))
            .collect();
        assert!(
            outs.iter().any(|o| *o != outs[0]),
            "augmentation never varies"
        );
        assert_eq!(augment(&img, &AugmentConfig::none(), &mut Rng::new(1)), img);
    }

    #[test]
    fn flip_alone_mirrors_or_keeps_the_image() {
        let img = synthetic_face(4, 5, 0.0);
        let cfg = AugmentConfig {
            flip: true,
            ..AugmentConfig::none()
        };
        let mut flipped = 0;
        for s in 0..16 {
            let o = augment(&img, &cfg, &mut Rng::new(s));
            let w = img.width;
            let mirrored = (0..img.height).all(|y| {
                (0..w).all(|x| o.pixels[(y * w + x) * 3] == img.pixels[(y * w + w - 1 - x) * 3])
            });
            assert!(o == img || mirrored);
            flipped += usize::from(mirrored && o != img);
        }
        assert!(flipped > 0 && flipped < 16);
    }

    #[test]
    fn black_frame_keeps_the_centre_and_blacks_some_border() {
        let img = Rgb8 {
            width: 40,
            height: 40,
            pixels: vec![200; 40 * 40 * 3],
        };
        let mut framed = 0;
        for s in 0..20 {
            let o = black_frame(&img, &mut Rng::new(s));
            let px = |x: usize, y: usize| &o.pixels[(y * 40 + x) * 3..(y * 40 + x) * 3 + 3];
            // The middle fifth of the chip always survives: the rectangle reaches at least
            // 38% − 10% of the side from the centre, less the rotation's corner cut.
            for y in 16..24 {
                for x in 16..24 {
                    assert_eq!(px(x, y), [200, 200, 200], "seed {s} at ({x}, {y})");
                }
            }
            let black = o.pixels.chunks(3).filter(|p| *p == [0, 0, 0]).count();
            let kept = o.pixels.chunks(3).filter(|p| *p == [200, 200, 200]).count();
            assert_eq!(black + kept, 1600, "only black or untouched pixels");
            assert!(black < 1600 - 64, "seed {s}: the centre went black");
            framed += usize::from(black > 0);
        }
        assert!(
            framed >= 12,
            "only {framed} of 20 frames blacked anything out"
        );
        assert_eq!(
            black_frame(&img, &mut Rng::new(3)),
            black_frame(&img, &mut Rng::new(3))
        );
    }

    #[test]
    fn grayscale_makes_channels_equal_with_its_probability() {
        let img = synthetic_face(6, 1, 0.3);
        let cfg = AugmentConfig {
            grayscale: 0.5,
            ..AugmentConfig::none()
        };
        let mut grey = 0;
        for s in 0..40 {
            let o = augment(&img, &cfg, &mut Rng::new(s));
            let is_grey = o.pixels.chunks(3).all(|p| p[0] == p[1] && p[1] == p[2]);
            assert!(is_grey || o == img);
            grey += usize::from(is_grey);
        }
        assert!((8..=32).contains(&grey), "{grey} of 40 grey at p = 0.5");
        assert!(img.pixels.chunks(3).any(|p| p[0] != p[1]));
    }
}
