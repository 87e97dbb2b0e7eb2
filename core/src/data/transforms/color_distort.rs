//! ColorDistort, as PaddleDetection's operator with its defaults
//! (`random_apply: true`): brightness, contrast, saturation and hue, in a
//! random order, each applied with probability 1/2.
//!
//! The formulas are PaddleDetection's, quirks included: "brightness" adds a
//! delta in [0.5, 1.5] to 0..255 values, "contrast" multiplies by a delta,
//! "saturation" blends with the luma, and "hue" rotates the chroma in YIQ
//! space by `delta * pi` radians with delta in [-18, 18]. Values are not
//! clipped afterwards.

use super::super::rng::Rng;
use super::super::sample::Sample;

/// `[low, high]` of each distortion's delta; each is applied with probability 1/2.
pub const BRIGHTNESS: [f32; 2] = [0.5, 1.5];
pub const CONTRAST: [f32; 2] = [0.5, 1.5];
pub const SATURATION: [f32; 2] = [0.5, 1.5];
pub const HUE: [f32; 2] = [-18.0, 18.0];
const APPLY_PROBABILITY: f64 = 0.5;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Distortion {
    Brightness(f32),
    Contrast(f32),
    Saturation(f32),
    Hue(f32),
}

/// Draws the order and the deltas, then distorts the sample's pixels.
pub fn random_color_distort(sample: &mut Sample, rng: &mut Rng) {
    let mut order = [0usize, 1, 2, 3];
    rng.shuffle(&mut order);
    for kind in order {
        // PaddleDetection: `if uniform() < prob: return img` (skip), then the delta.
        if rng.uniform() < APPLY_PROBABILITY {
            continue;
        }
        let [low, high] = [BRIGHTNESS, CONTRAST, SATURATION, HUE][kind];
        let delta = rng.range(low as f64, high as f64) as f32;
        let distortion = match kind {
            0 => Distortion::Brightness(delta),
            1 => Distortion::Contrast(delta),
            2 => Distortion::Saturation(delta),
            _ => Distortion::Hue(delta),
        };
        distort(&mut sample.pixels, distortion);
    }
}

/// Applies one distortion to RGB HWC pixels in place.
pub fn distort(pixels: &mut [f32], distortion: Distortion) {
    match distortion {
        Distortion::Brightness(delta) => pixels.iter_mut().for_each(|v| *v += delta),
        Distortion::Contrast(delta) => pixels.iter_mut().for_each(|v| *v *= delta),
        Distortion::Saturation(delta) => {
            for px in pixels.chunks_exact_mut(3) {
                let gray = 0.299 * px[0] + 0.587 * px[1] + 0.114 * px[2];
                for v in px {
                    *v = *v * delta + gray * (1.0 - delta);
                }
            }
        }
        Distortion::Hue(delta) => {
            let m = hue_matrix(delta);
            for px in pixels.chunks_exact_mut(3) {
                let [r, g, b] = [px[0], px[1], px[2]];
                for (c, v) in px.iter_mut().enumerate() {
                    *v = m[c][0] * r + m[c][1] * g + m[c][2] * b;
                }
            }
        }
    }
}

/// `RGB -> YIQ`, rotate I and Q by `delta * pi`, `YIQ -> RGB`, as one matrix
/// (the constants are PaddleDetection's, slightly off a true inverse pair).
fn hue_matrix(delta: f32) -> [[f32; 3]; 3] {
    let angle = delta as f64 * std::f64::consts::PI;
    let (u, w) = (angle.cos(), angle.sin());
    let rotate = [[1.0, 0.0, 0.0], [0.0, u, -w], [0.0, w, u]];
    let to_yiq = [
        [0.299, 0.587, 0.114],
        [0.596, -0.274, -0.321],
        [0.211, -0.523, 0.311],
    ];
    let from_yiq = [
        [1.0, 0.956, 0.621],
        [1.0, -0.272, -0.647],
        [1.0, -1.107, 1.705],
    ];
    let product = |a: [[f64; 3]; 3], b: [[f64; 3]; 3]| {
        let mut out = [[0.0f64; 3]; 3];
        for i in 0..3 {
            for j in 0..3 {
                out[i][j] = (0..3).map(|k| a[i][k] * b[k][j]).sum();
            }
        }
        out
    };
    product(product(from_yiq, rotate), to_yiq).map(|row| row.map(|v| v as f32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::sample::tests::gradient_sample;

    #[test]
    fn each_distortion_on_one_pixel() {
        let px = [100.0f32, 50.0, 200.0];
        let mut p = px;
        distort(&mut p, Distortion::Brightness(1.25));
        assert_eq!(p, [101.25, 51.25, 201.25]);
        let mut p = px;
        distort(&mut p, Distortion::Contrast(0.5));
        assert_eq!(p, [50.0, 25.0, 100.0]);
        let mut p = px;
        // Saturation 0 leaves the luma 0.299*100 + 0.587*50 + 0.114*200 = 82.05.
        distort(&mut p, Distortion::Saturation(0.0));
        for v in p {
            assert!((v - 82.05).abs() < 1e-3, "{p:?}");
        }
        // A hue turn of a whole circle (delta 2) changes (almost) nothing; a
        // grey pixel has no chroma to turn.
        let mut p = px;
        distort(&mut p, Distortion::Hue(2.0));
        for (a, b) in p.iter().zip(px) {
            assert!((a - b).abs() < 1.0, "{p:?}");
        }
        let mut gray = [80.0f32; 3];
        distort(&mut gray, Distortion::Hue(0.3));
        for v in gray {
            assert!((v - 80.0).abs() < 0.2, "{gray:?}");
        }
    }

    #[test]
    fn same_seed_same_colors() {
        let base = gradient_sample(8, 8, &[]);
        let run = |seed| {
            let mut s = base.clone();
            random_color_distort(&mut s, &mut Rng::new(seed));
            s.pixels
        };
        assert_eq!(run(5), run(5));
        assert!((0..20).any(|seed| run(seed) != base.pixels));
    }
}
