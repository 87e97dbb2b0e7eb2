//! RandomExpand (PaddleDetection defaults: probability 1/2, ratio up to 4):
//! place the picture at a random spot of a canvas up to 4 times as wide and
//! high, filled with the ImageNet mean colour, so objects get smaller. The
//! canvas is not built; only the sample's view records it (see `sample.rs`).

use super::super::rng::Rng;
use super::super::sample::Sample;

/// ImageNet mean x 255, PaddleDetection's `fill_value` in the YOLOv3 configs.
pub const FILL: [f32; 3] = [123.675, 116.28, 103.53];

/// `RandomExpand`'s parameters, with PaddleDetection's meaning of `prob`:
/// the chance of leaving the sample as it is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExpandParams {
    /// Largest canvas side over the image side (at least 1).
    pub max_ratio: f64,
    pub skip_probability: f64,
    /// Canvas colour, RGB 0-255.
    pub fill: [f32; 3],
}

impl Default for ExpandParams {
    /// The YOLOv3 reader's: ratio up to 4, half the time, ImageNet mean fill.
    fn default() -> Self {
        ExpandParams {
            max_ratio: 4.0,
            skip_probability: 0.5,
            fill: FILL,
        }
    }
}

/// Unless skipped, draws a ratio in [1, max_ratio) and a position, and expands.
pub fn random_expand(sample: &mut Sample, params: &ExpandParams, rng: &mut Rng) {
    if rng.uniform() < params.skip_probability {
        return;
    }
    let ratio = rng.range(1.0, params.max_ratio);
    let (width, height) = (sample.width(), sample.height());
    let w = (width as f64 * ratio) as usize;
    let h = (height as f64 * ratio) as usize;
    if w <= width || h <= height {
        return;
    }
    let y = rng.below((h - height) as u64) as usize;
    let x = rng.below((w - width) as u64) as usize;
    expand(sample, w, h, x, y, params.fill);
}

/// Puts the whole sample at `(x, y)` on a `w` x `h` canvas of colour `fill`.
pub fn expand(sample: &mut Sample, w: usize, h: usize, x: usize, y: usize, fill: [f32; 3]) {
    assert!(
        sample.view.is_whole(),
        "RandomExpand runs before crops and flips"
    );
    assert!(x + sample.width() <= w && y + sample.height() <= h);
    let view = &mut sample.view;
    view.canvas_w = w;
    view.canvas_h = h;
    view.pixels_x = x;
    view.pixels_y = y;
    view.fill = fill;
    view.width = w;
    view.height = h;
    for b in &mut sample.boxes {
        *b = [
            b[0] + x as f32,
            b[1] + y as f32,
            b[2] + x as f32,
            b[3] + y as f32,
        ];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::sample::tests::gradient_sample;

    #[test]
    fn shifts_boxes_and_surrounds_with_fill() {
        let mut s = gradient_sample(4, 3, &[[1.0, 0.5, 3.0, 2.0]]);
        expand(&mut s, 10, 6, 5, 2, FILL);
        assert_eq!((s.width(), s.height()), (10, 6));
        assert_eq!(s.boxes, vec![[6.0, 2.5, 8.0, 4.0]]);
        assert_eq!(s.at(5, 2), [0.0, 0.0, 7.0]);
        assert_eq!(s.at(8, 4), [3.0, 2.0, 7.0]);
        assert_eq!(s.at(4, 2), FILL);
        assert_eq!(s.at(9, 5), FILL);
        assert_eq!(s.at(6, 5), FILL);
    }
}
