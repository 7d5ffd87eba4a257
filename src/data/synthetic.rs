//! Generated face-like test patterns: deterministic, license-free images for the demo, tests and
//! the trainer's smoke run. Never used as training data for shipped weights.

use super::image::Rgb8;

/// A synthetic 64×64 "face": an oval with two eyes and a mouth, shifted by `jitter` pixels and
/// tinted by `tint`, so that two calls with the same `shape_seed` look alike.
pub fn synthetic_face(shape_seed: u64, jitter: i32, tint: f32) -> Rgb8 {
    let mut rng = crate::rng::Rng::new(shape_seed);
    let (ex, ey, mw) = (
        rng.range(8.0, 14.0),
        rng.range(-14.0, -6.0),
        rng.range(6.0, 14.0),
    );
    let (skin, eye) = (rng.range(120.0, 220.0), rng.range(0.0, 60.0));
    let side = 64usize;
    let mut pixels = Vec::with_capacity(side * side * 3);
    for y in 0..side {
        for x in 0..side {
            let dx = x as f32 - 32.0 - jitter as f32;
            let dy = y as f32 - 32.0;
            let in_face = (dx / 22.0).powi(2) + (dy / 28.0).powi(2) <= 1.0;
            let in_eye = ((dx.abs() - ex).powi(2) + (dy - ey).powi(2)) < 9.0;
            let in_mouth = dy > 10.0 && dy < 14.0 && dx.abs() < mw;
            let v = if in_eye || in_mouth {
                eye
            } else if in_face {
                skin
            } else {
                30.0
            };
            for ch in 0..3 {
                let t = if ch == 0 {
                    1.0 + tint
                } else {
                    1.0 - tint * 0.5
                };
                pixels.push((v * t).clamp(0.0, 255.0) as u8);
            }
        }
    }
    Rgb8 {
        width: side,
        height: side,
        pixels,
    }
}

/// A 64×64 image of pattern class `class`: a 4×4 grid of colours fixed by the class (coarse
/// enough to survive downsampling to 8×8), varied per `sample_seed` by a shift of up to 3 pixels,
/// a brightness change of up to ±10% and pixel noise. For trainer tests that need separable
/// classes.
pub fn pattern_class_image(class: u64, sample_seed: u64) -> Rgb8 {
    let mut cls = crate::rng::Rng::new(class.wrapping_mul(0x9E37_79B9) ^ 0xFACE);
    let grid: Vec<[f32; 3]> = (0..16)
        .map(|_| {
            [
                cls.range(20.0, 235.0),
                cls.range(20.0, 235.0),
                cls.range(20.0, 235.0),
            ]
        })
        .collect();
    let mut rng = crate::rng::Rng::new(sample_seed ^ 0x005A_4D1E);
    let (dx, dy) = (rng.below(7) as i32 - 3, rng.below(7) as i32 - 3);
    let gain = rng.range(0.9, 1.1);
    let side = 64i32;
    let mut pixels = Vec::with_capacity((side * side * 3) as usize);
    for y in 0..side {
        for x in 0..side {
            let gx = ((x - dx).clamp(0, side - 1) / 16) as usize;
            let gy = ((y - dy).clamp(0, side - 1) / 16) as usize;
            for &c in &grid[gy * 4 + gx] {
                let v = c * gain + 8.0 * rng.normal();
                pixels.push(v.clamp(0.0, 255.0) as u8);
            }
        }
    }
    Rgb8 {
        width: side as usize,
        height: side as usize,
        pixels,
    }
}
