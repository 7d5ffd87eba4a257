//! Face alignment geometry: the letterbox into the detector's square input, the least-squares
//! 5-point similarity (Umeyama) onto the ArcFace template, and the bilinear affine warp.
//! Pure image arithmetic; it runs no model.

use super::image::Rgb8;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// The ArcFace 5-point template for a 112×112 chip: right eye, left eye, nose, right and left
/// mouth corners (image left to right), as used by InsightFace and OpenCV's FaceRecognizerSF.
pub const ARCFACE_TEMPLATE: [[f64; 2]; 5] = [
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
];

/// A 2×3 affine map `[a b c; d e f]`: `(x, y) ↦ (a x + b y + c, d x + e y + f)`.
pub type Affine = [[f64; 3]; 2];

/// The similarity transform (rotation, uniform scale, translation, no reflection) that maps
/// `src` onto `dst` with least squared error: Umeyama's closed form specialised to 2-D, where
/// with centred points the optimum is `a = Σ(x·x' + y·y') / Σ|p|²`, `b = Σ(x·y' − y·x') / Σ|p|²`.
pub fn umeyama_similarity(src: &[[f64; 2]], dst: &[[f64; 2]]) -> Result<Affine> {
    if src.len() != dst.len() || src.len() < 2 {
        return Err(Error::InvalidArgument(format!(
            "a similarity needs at least 2 matching points, got {} and {}",
            src.len(),
            dst.len()
        )));
    }
    if let Some(p) = src
        .iter()
        .chain(dst)
        .find(|p| !(p[0].is_finite() && p[1].is_finite()))
    {
        return Err(Error::InvalidArgument(format!(
            "point {p:?} is not finite; a similarity needs finite landmarks"
        )));
    }
    let n = src.len() as f64;
    let mean = |p: &[[f64; 2]]| {
        let s = p.iter().fold([0.0, 0.0], |a, q| [a[0] + q[0], a[1] + q[1]]);
        [s[0] / n, s[1] / n]
    };
    let (ms, md) = (mean(src), mean(dst));
    let (mut num_a, mut num_b, mut den) = (0.0, 0.0, 0.0);
    for (p, q) in src.iter().zip(dst) {
        let (x, y) = (p[0] - ms[0], p[1] - ms[1]);
        let (u, v) = (q[0] - md[0], q[1] - md[1]);
        num_a += x * u + y * v;
        num_b += x * v - y * u;
        den += x * x + y * y;
    }
    if den <= 1e-12 {
        return Err(Error::InvalidArgument(
            "the source points coincide; no similarity fits them".into(),
        ));
    }
    let (a, b) = (num_a / den, num_b / den);
    let m = [
        [a, -b, md[0] - (a * ms[0] - b * ms[1])],
        [b, a, md[1] - (b * ms[0] + a * ms[1])],
    ];
    // Finite points far enough apart (~1e154) overflow the sums; the map would be NaN.
    if !m.as_flattened().iter().all(|v| v.is_finite()) {
        return Err(Error::InvalidArgument(
            "the points are too far apart for a finite similarity; they are not landmarks".into(),
        ));
    }
    Ok(m)
}

/// Applies an affine map to a point.
pub fn apply(m: &Affine, p: [f64; 2]) -> [f64; 2] {
    [
        m[0][0] * p[0] + m[0][1] * p[1] + m[0][2],
        m[1][0] * p[0] + m[1][1] * p[1] + m[1][2],
    ]
}

/// The inverse of an invertible affine map.
pub fn invert(m: &Affine) -> Result<Affine> {
    let det = m[0][0] * m[1][1] - m[0][1] * m[1][0];
    if det.abs() < 1e-12 {
        return Err(Error::InvalidArgument("the affine map is singular".into()));
    }
    let (a, b, c, d) = (m[1][1] / det, -m[0][1] / det, -m[1][0] / det, m[0][0] / det);
    Ok([
        [a, b, -(a * m[0][2] + b * m[1][2])],
        [c, d, -(c * m[0][2] + d * m[1][2])],
    ])
}

/// Warps `img` to `out_w × out_h` where output pixel (x, y) samples the input at
/// `dst_to_src(x, y)` bilinearly (OpenCV `warpAffine` with `WARP_INVERSE_MAP`, INTER_LINEAR,
/// constant-zero border: samples outside the image blend with black).
pub fn warp_affine(img: &Rgb8, dst_to_src: &Affine, out_w: usize, out_h: usize) -> Rgb8 {
    let (w, h) = (img.width as isize, img.height as isize);
    let px = |x: isize, y: isize, ch: usize| -> f64 {
        if x < 0 || y < 0 || x >= w || y >= h {
            0.0
        } else {
            img.pixels[(y as usize * img.width + x as usize) * 3 + ch] as f64
        }
    };
    let mut pixels = vec![0u8; out_w * out_h * 3];
    for oy in 0..out_h {
        for ox in 0..out_w {
            let [sx, sy] = apply(dst_to_src, [ox as f64, oy as f64]);
            let (x0, y0) = (sx.floor(), sy.floor());
            let (fx, fy) = (sx - x0, sy - y0);
            let (x0, y0) = (x0 as isize, y0 as isize);
            for ch in 0..3 {
                let v = px(x0, y0, ch) * (1.0 - fx) * (1.0 - fy)
                    + px(x0 + 1, y0, ch) * fx * (1.0 - fy)
                    + px(x0, y0 + 1, ch) * (1.0 - fx) * fy
                    + px(x0 + 1, y0 + 1, ch) * fx * fy;
                pixels[(oy * out_w + ox) * 3 + ch] = v.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    Rgb8 {
        width: out_w,
        height: out_h,
        pixels,
    }
}

/// An image scaled (aspect kept) into the top-left of a black `side × side` square.
#[derive(Clone, Debug)]
pub struct Letterbox {
    pub image: Rgb8,
    /// Letterbox pixel = `scale` × original pixel (pixel-centre convention).
    pub scale: f64,
}

impl Letterbox {
    /// Maps a point of the letterboxed image back to the original image.
    pub fn to_original(&self, p: [f64; 2]) -> [f64; 2] {
        [
            (p[0] + 0.5) / self.scale - 0.5,
            (p[1] + 0.5) / self.scale - 0.5,
        ]
    }

    /// The letterbox as a `[1, 3, side, side]` tensor in BGR order, values 0..255 (YuNet's input).
    pub fn to_bgr_tensor(&self) -> Tensor {
        let (w, h) = (self.image.width, self.image.height);
        let mut data = vec![0.0f32; 3 * w * h];
        for i in 0..w * h {
            for ch in 0..3 {
                data[(2 - ch) * w * h + i] = self.image.pixels[i * 3 + ch] as f32;
            }
        }
        Tensor::new(&[1, 3, h, w], data).expect("3·w·h values")
    }
}

/// Resizes `img` bilinearly so its longer side is `side` and pads right/bottom with black.
pub fn letterbox(img: &Rgb8, side: usize) -> Letterbox {
    let scale = side as f64 / img.width.max(img.height) as f64;
    let (sw, sh) = (
        ((img.width as f64 * scale).round() as usize).clamp(1, side),
        ((img.height as f64 * scale).round() as usize).clamp(1, side),
    );
    // Half-pixel centres, as OpenCV's resize: src = (dst + 0.5) / scale - 0.5.
    let inv = 1.0 / scale;
    let m: Affine = [[inv, 0.0, 0.5 * inv - 0.5], [0.0, inv, 0.5 * inv - 0.5]];
    // Edge samples are clamped, so the image border does not darken as it would with a black fill.
    let mut scaled = warp_affine_clamped(img, &m, sw, sh);
    let mut pixels = vec![0u8; side * side * 3];
    for y in 0..sh {
        pixels[y * side * 3..y * side * 3 + sw * 3]
            .copy_from_slice(&scaled.pixels[y * sw * 3..(y + 1) * sw * 3]);
    }
    scaled.pixels.clear();
    Letterbox {
        image: Rgb8 {
            width: side,
            height: side,
            pixels,
        },
        scale,
    }
}

/// Like `warp_affine` but with replicated edges (for resizing, where every sample is inside).
fn warp_affine_clamped(img: &Rgb8, dst_to_src: &Affine, out_w: usize, out_h: usize) -> Rgb8 {
    let (w, h) = (img.width as f64, img.height as f64);
    let mut pixels = vec![0u8; out_w * out_h * 3];
    for oy in 0..out_h {
        for ox in 0..out_w {
            let [sx, sy] = apply(dst_to_src, [ox as f64, oy as f64]);
            let sx = sx.clamp(0.0, w - 1.0);
            let sy = sy.clamp(0.0, h - 1.0);
            let (x0, y0) = (sx.floor() as usize, sy.floor() as usize);
            let (x1, y1) = ((x0 + 1).min(img.width - 1), (y0 + 1).min(img.height - 1));
            let (fx, fy) = (sx - x0 as f64, sy - y0 as f64);
            for ch in 0..3 {
                let p = |x: usize, y: usize| img.pixels[(y * img.width + x) * 3 + ch] as f64;
                let v = p(x0, y0) * (1.0 - fx) * (1.0 - fy)
                    + p(x1, y0) * fx * (1.0 - fy)
                    + p(x0, y1) * (1.0 - fx) * fy
                    + p(x1, y1) * fx * fy;
                pixels[(oy * out_w + ox) * 3 + ch] = v.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    Rgb8 {
        width: out_w,
        height: out_h,
        pixels,
    }
}

/// The ArcFace template scaled to a `size × size` chip.
pub fn template_for(size: usize) -> [[f64; 2]; 5] {
    let s = size as f64 / 112.0;
    ARCFACE_TEMPLATE.map(|p| [p[0] * s, p[1] * s])
}

/// Warps the face with these five landmarks (original image coordinates) onto a
/// `size × size` ArcFace-aligned chip.
pub fn align_face(img: &Rgb8, landmarks: &[[f64; 2]; 5], size: usize) -> Result<Rgb8> {
    if size < 8 {
        return Err(Error::InvalidArgument(format!(
            "aligned chip size {size} is below 8 pixels"
        )));
    }
    let to_chip = umeyama_similarity(landmarks, &template_for(size))?;
    Ok(warp_affine(img, &invert(&to_chip)?, size, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn umeyama_recovers_a_known_similarity_exactly() {
        let theta: f64 = 0.3;
        let s = 1.7;
        let m: Affine = [
            [s * theta.cos(), -s * theta.sin(), 12.0],
            [s * theta.sin(), s * theta.cos(), -4.0],
        ];
        let src = [
            [1.0, 2.0],
            [10.0, 3.0],
            [5.0, 8.0],
            [2.0, 12.0],
            [9.0, 11.5],
        ];
        let dst: Vec<[f64; 2]> = src.iter().map(|&p| apply(&m, p)).collect();
        let got = umeyama_similarity(&src, &dst).unwrap();
        for r in 0..2 {
            for c in 0..3 {
                assert!((got[r][c] - m[r][c]).abs() < 1e-9, "{got:?} vs {m:?}");
            }
        }
        let back = apply(&invert(&got).unwrap(), dst[3]);
        assert!((back[0] - src[3][0]).abs() < 1e-9 && (back[1] - src[3][1]).abs() < 1e-9);
        assert!(umeyama_similarity(&[[1.0, 1.0]; 3], &dst[..3]).is_err());
    }

    #[test]
    fn umeyama_is_the_least_squares_fit_under_noise() {
        // Perturbing the optimum in any parameter must not lower the squared error.
        let src = ARCFACE_TEMPLATE;
        let dst = [
            [30.0, 40.0],
            [61.0, 38.5],
            [47.0, 57.0],
            [35.0, 75.0],
            [58.0, 74.0],
        ];
        let m = umeyama_similarity(&src, &dst).unwrap();
        let err = |m: &Affine| -> f64 {
            src.iter()
                .zip(&dst)
                .map(|(&p, q)| {
                    let r = apply(m, p);
                    (r[0] - q[0]).powi(2) + (r[1] - q[1]).powi(2)
                })
                .sum()
        };
        let e0 = err(&m);
        let params = [m[0][0], m[1][0], m[0][2], m[1][2]];
        for i in 0..4 {
            for sgn in [-1.0, 1.0] {
                let mut q = params;
                q[i] += sgn * 1e-3;
                let p: Affine = [[q[0], -q[1], q[2]], [q[1], q[0], q[3]]];
                assert!(err(&p) > e0, "moving parameter {i} lowered the error");
            }
        }
    }

    #[test]
    fn warp_with_identity_copies_and_outside_is_black() {
        let img = crate::data::synthetic::synthetic_face(3, 0, 0.0);
        let id: Affine = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]];
        assert_eq!(warp_affine(&img, &id, img.width, img.height), img);
        let shifted: Affine = [[1.0, 0.0, -1000.0], [0.0, 1.0, 0.0]];
        assert!(warp_affine(&img, &shifted, 8, 8)
            .pixels
            .iter()
            .all(|&p| p == 0));
        // Half-way between two columns is their mean.
        let half: Affine = [[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]];
        let w = warp_affine(&img, &half, 4, 4);
        let a = img.pixels[(2 * img.width + 1) * 3] as f64;
        let b = img.pixels[(2 * img.width + 2) * 3] as f64;
        assert_eq!(w.pixels[(2 * 4 + 1) * 3], ((a + b) / 2.0).round() as u8);
    }

    #[test]
    fn letterbox_keeps_aspect_pads_black_and_maps_back() {
        let img = Rgb8 {
            width: 92,
            height: 112,
            pixels: vec![200; 92 * 112 * 3],
        };
        let lb = letterbox(&img, 640);
        assert_eq!((lb.image.width, lb.image.height), (640, 640));
        let sw = (92.0 * 640.0 / 112.0f64).round() as usize;
        assert_eq!(lb.image.pixels[(100 * 640 + sw - 1) * 3], 200);
        assert_eq!(lb.image.pixels[(100 * 640 + sw + 1) * 3], 0);
        let (x, y) = (40.0, 77.0);
        let p = lb.to_original([lb.scale * (x + 0.5) - 0.5, lb.scale * (y + 0.5) - 0.5]);
        assert!((p[0] - x).abs() < 1e-9 && (p[1] - y).abs() < 1e-9);
        let t = lb.to_bgr_tensor();
        assert_eq!(t.shape(), [1, 3, 640, 640]);
    }
}
