//! Mixup (PaddleDetection `MixupImage`, alpha = beta = 1.5): blend two
//! training images with a factor f ~ Beta(1.5, 1.5), keep both images' boxes,
//! and weight their scores by f and 1 - f. Used only for the first
//! `mixup_epochs` epochs (250 in the YOLOv3 configs).
//!
//! The blend is as large as the larger of the two in each direction, each
//! image anchored at the top-left corner and zero elsewhere. Unlike
//! PaddleDetection the blend is not rounded to uint8.

use super::super::rng::Rng;
use super::super::sample::{ColorAffine, Sample, View};

pub const ALPHA: f64 = 1.5;
pub const BETA: f64 = 1.5;

/// Draws f and mixes `partner` into `sample`.
pub fn random_mixup(sample: &mut Sample, partner: &Sample, rng: &mut Rng) {
    let factor = rng.beta(ALPHA, BETA).clamp(0.0, 1.0) as f32;
    mixup(sample, partner, factor);
}

/// `sample = factor * sample + (1 - factor) * partner`, boxes concatenated.
/// Both samples must be as decoded (mixup comes first).
pub fn mixup(sample: &mut Sample, partner: &Sample, factor: f32) {
    assert!(
        sample.view.is_whole()
            && partner.view.is_whole()
            && sample.color == ColorAffine::IDENTITY
            && partner.color == ColorAffine::IDENTITY,
        "mixup runs before the colour and geometric transforms"
    );
    let w = sample.pixels_w.max(partner.pixels_w);
    let h = sample.pixels_h.max(partner.pixels_h);
    let mut pixels = vec![0.0f32; w * h * 3];
    for (src, weight) in [(&*sample, factor), (partner, 1.0 - factor)] {
        let row_len = src.pixels_w * 3;
        for y in 0..src.pixels_h {
            let from = &src.pixels[y * row_len..(y + 1) * row_len];
            let to = &mut pixels[y * w * 3..y * w * 3 + row_len];
            for (o, &v) in to.iter_mut().zip(from) {
                *o += v * weight;
            }
        }
    }
    sample.pixels = pixels;
    sample.pixels_w = w;
    sample.pixels_h = h;
    sample.view = View::whole(w, h);
    for score in &mut sample.scores {
        *score *= factor;
    }
    sample.boxes.extend_from_slice(&partner.boxes);
    sample.classes.extend_from_slice(&partner.classes);
    sample
        .scores
        .extend(partner.scores.iter().map(|s| s * (1.0 - factor)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::sample::tests::gradient_sample;

    #[test]
    fn blends_pixels_and_weights_scores() {
        let mut a = gradient_sample(4, 2, &[[0.0, 0.0, 2.0, 2.0]]);
        let b = gradient_sample(3, 5, &[[1.0, 1.0, 3.0, 4.0]]);
        mixup(&mut a, &b, 0.25);
        assert_eq!((a.width(), a.height()), (4, 5));
        // (2, 1) is in both: 0.25 * [2, 1, 7] + 0.75 * [2, 1, 7].
        assert_eq!(a.at(2, 1), [2.0, 1.0, 7.0]);
        // (3, 0) only in a; (0, 4) only in b; (3, 4) in neither.
        assert_eq!(a.at(3, 0), [0.75, 0.0, 1.75]);
        assert_eq!(a.at(0, 4), [0.0, 3.0, 5.25]);
        assert_eq!(a.at(3, 4), [0.0, 0.0, 0.0]);
        assert_eq!(a.boxes, vec![[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 4.0]]);
        assert_eq!(a.classes, vec![0, 0]);
        assert_eq!(a.scores, vec![0.25, 0.75]);
    }
}
