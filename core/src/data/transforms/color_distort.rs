//! ColorDistort, as PaddleDetection's operator: brightness, contrast,
//! saturation and hue, each skipped with its own probability (1/2 by
//! default); with `random_apply` (the default) in a random order, else
//! brightness first, then contrast-saturation-hue or saturation-hue-contrast.
//!
//! The formulas are PaddleDetection's, quirks included: "brightness" adds a
//! delta in [0.5, 1.5] to 0..255 values, "contrast" multiplies by a delta,
//! "saturation" blends with the luma, and "hue" rotates the chroma in YIQ
//! space by `delta * pi` radians with delta in [-18, 18]. Values are not
//! clipped afterwards.
//!
//! Each of the four is an affine map of RGB, so the drawn sequence is
//! composed into one [`ColorAffine`] that the resize applies as it reads
//! pixels: one multiply per output pixel instead of up to four passes over
//! the full-size image. The result is the same up to float rounding.

use super::super::rng::Rng;
use super::super::sample::{ColorAffine, Sample};

/// One distortion's `[low, high, prob]` as PaddleDetection writes it: the
/// delta is drawn from `[low, high)` unless the distortion is skipped, which
/// happens with probability `prob`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeltaRange {
    pub low: f32,
    pub high: f32,
    pub skip_probability: f64,
}

impl DeltaRange {
    const fn new(low: f32, high: f32) -> DeltaRange {
        DeltaRange {
            low,
            high,
            skip_probability: 0.5,
        }
    }
}

/// `ColorDistort`'s parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ColorDistortParams {
    pub brightness: DeltaRange,
    pub contrast: DeltaRange,
    pub saturation: DeltaRange,
    pub hue: DeltaRange,
    pub random_apply: bool,
}

impl Default for ColorDistortParams {
    fn default() -> Self {
        ColorDistortParams {
            brightness: DeltaRange::new(0.5, 1.5),
            contrast: DeltaRange::new(0.5, 1.5),
            saturation: DeltaRange::new(0.5, 1.5),
            hue: DeltaRange::new(-18.0, 18.0),
            random_apply: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Distortion {
    Brightness(f32),
    Contrast(f32),
    Saturation(f32),
    Hue(f32),
}

/// Draws the order and the deltas, and adds the distortions to the sample's
/// colour map.
pub fn random_color_distort(sample: &mut Sample, params: &ColorDistortParams, rng: &mut Rng) {
    // 0 brightness, 1 contrast, 2 saturation, 3 hue.
    let order = if params.random_apply {
        let mut order = [0usize, 1, 2, 3];
        rng.shuffle(&mut order);
        order
    } else if rng.below(2) == 1 {
        [0, 1, 2, 3]
    } else {
        [0, 2, 3, 1]
    };
    for kind in order {
        let range = [
            params.brightness,
            params.contrast,
            params.saturation,
            params.hue,
        ][kind];
        // PaddleDetection: `if uniform() < prob: return img` (skip), then the delta.
        if rng.uniform() < range.skip_probability {
            continue;
        }
        let delta = rng.range(range.low as f64, range.high as f64) as f32;
        let distortion = match kind {
            0 => Distortion::Brightness(delta),
            1 => Distortion::Contrast(delta),
            2 => Distortion::Saturation(delta),
            _ => Distortion::Hue(delta),
        };
        let map = affine(distortion);
        sample.color = sample.color.then(&map);
        // After a RandomExpand the fill is part of the picture and changes too.
        sample.view.fill = map.apply(sample.view.fill);
    }
}

/// One distortion as an affine map of RGB.
pub fn affine(distortion: Distortion) -> ColorAffine {
    let scaled = |d: f32| [[d, 0.0, 0.0], [0.0, d, 0.0], [0.0, 0.0, d]];
    match distortion {
        Distortion::Brightness(delta) => ColorAffine {
            offset: [delta; 3],
            ..ColorAffine::IDENTITY
        },
        Distortion::Contrast(delta) => ColorAffine {
            matrix: scaled(delta),
            offset: [0.0; 3],
        },
        Distortion::Saturation(delta) => {
            // delta * rgb + (1 - delta) * luma, luma = 0.299 r + 0.587 g + 0.114 b
            let luma = [0.299, 0.587, 0.114].map(|l| l * (1.0 - delta));
            let mut matrix = scaled(delta);
            for row in &mut matrix {
                for (m, l) in row.iter_mut().zip(luma) {
                    *m += l;
                }
            }
            ColorAffine {
                matrix,
                offset: [0.0; 3],
            }
        }
        Distortion::Hue(delta) => ColorAffine {
            matrix: hue_matrix(delta),
            offset: [0.0; 3],
        },
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

    fn distort(px: [f32; 3], distortion: Distortion) -> [f32; 3] {
        affine(distortion).apply(px)
    }

    #[test]
    fn each_distortion_on_one_pixel() {
        let px = [100.0f32, 50.0, 200.0];
        assert_eq!(
            distort(px, Distortion::Brightness(1.25)),
            [101.25, 51.25, 201.25]
        );
        assert_eq!(distort(px, Distortion::Contrast(0.5)), [50.0, 25.0, 100.0]);
        // Saturation 0 leaves the luma 0.299*100 + 0.587*50 + 0.114*200 = 82.05;
        // saturation 2 doubles the distance from it.
        for v in distort(px, Distortion::Saturation(0.0)) {
            assert!((v - 82.05).abs() < 1e-3);
        }
        let p = distort(px, Distortion::Saturation(2.0));
        for (a, b) in p.iter().zip(px) {
            assert!((a - (2.0 * b - 82.05)).abs() < 1e-3, "{p:?}");
        }
        // A hue turn of a whole circle (delta 2) changes (almost) nothing; a
        // grey pixel has no chroma to turn.
        let p = distort(px, Distortion::Hue(2.0));
        for (a, b) in p.iter().zip(px) {
            assert!((a - b).abs() < 1.0, "{p:?}");
        }
        for v in distort([80.0; 3], Distortion::Hue(0.3)) {
            assert!((v - 80.0).abs() < 0.2);
        }
    }

    #[test]
    fn composed_map_equals_applying_in_turn() {
        let px = [30.0f32, 140.0, 220.0];
        let steps = [
            Distortion::Hue(0.7),
            Distortion::Brightness(1.1),
            Distortion::Saturation(1.4),
            Distortion::Contrast(0.8),
        ];
        let in_turn = steps.iter().fold(px, |p, &d| distort(p, d));
        let composed = steps
            .iter()
            .fold(ColorAffine::IDENTITY, |m, &d| m.then(&affine(d)))
            .apply(px);
        for (a, b) in in_turn.iter().zip(composed) {
            assert!((a - b).abs() < 1e-3, "{in_turn:?} {composed:?}");
        }
    }

    #[test]
    fn a_distortion_always_skipped_never_changes_colours() {
        let never = DeltaRange {
            skip_probability: 1.0,
            ..DeltaRange::new(0.5, 1.5)
        };
        let params = ColorDistortParams {
            brightness: never,
            contrast: never,
            saturation: never,
            hue: never,
            random_apply: false,
        };
        let mut s = gradient_sample(8, 8, &[]);
        for seed in 0..20 {
            random_color_distort(&mut s, &params, &mut Rng::new(seed));
            assert_eq!(s.color, ColorAffine::IDENTITY);
        }
        // Only brightness, always: an offset within [low, high) on every channel.
        let params = ColorDistortParams {
            brightness: DeltaRange {
                skip_probability: 0.0,
                ..DeltaRange::new(10.0, 20.0)
            },
            ..params
        };
        random_color_distort(&mut s, &params, &mut Rng::new(7));
        let offset = s.color.offset[0];
        assert!((10.0..20.0).contains(&offset), "{offset}");
        assert_eq!(s.color.offset, [offset; 3]);
    }

    #[test]
    fn same_seed_same_colors() {
        let base = gradient_sample(8, 8, &[]);
        let run = |seed| {
            let mut s = base.clone();
            random_color_distort(&mut s, &ColorDistortParams::default(), &mut Rng::new(seed));
            assert_eq!(s.pixels, base.pixels);
            s.color
        };
        assert_eq!(run(5), run(5));
        assert!((0..20).any(|seed| run(seed) != ColorAffine::IDENTITY));
    }
}
