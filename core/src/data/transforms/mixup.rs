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

/// `MixupImage`'s parameters: the blend factor is drawn from Beta(alpha, beta).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MixupParams {
    pub alpha: f64,
    pub beta: f64,
}

impl Default for MixupParams {
    fn default() -> Self {
        MixupParams {
            alpha: 1.5,
            beta: 1.5,
        }
    }
}

/// Draws f and mixes `partner` into `sample`.
pub fn random_mixup(sample: &mut Sample, partner: Sample, params: &MixupParams, rng: &mut Rng) {
    let factor = rng.beta(params.alpha, params.beta).clamp(0.0, 1.0) as f32;
    mixup(sample, partner, factor);
}

/// `sample = factor * sample + (1 - factor) * partner`, boxes concatenated.
/// Both samples must be as decoded (mixup comes first).
pub fn mixup(sample: &mut Sample, mut partner: Sample, factor: f32) {
    assert!(
        sample.view.is_whole()
            && partner.view.is_whole()
            && sample.color == ColorAffine::IDENTITY
            && partner.color == ColorAffine::IDENTITY,
        "mixup runs before the colour and geometric transforms"
    );
    let w = sample.pixels_w.max(partner.pixels_w);
    let h = sample.pixels_h.max(partner.pixels_h);
    // Blend into whichever buffer already covers both images (usually one
    // does: same-size photos), so no new full-size buffer is needed.
    let (mut blend, rest, rest_weight) = if (sample.pixels_w, sample.pixels_h) == (w, h) {
        let own = std::mem::take(&mut sample.pixels);
        scale(own, factor, &partner, 1.0 - factor)
    } else if (partner.pixels_w, partner.pixels_h) == (w, h) {
        let theirs = std::mem::take(&mut partner.pixels);
        scale(theirs, 1.0 - factor, sample, factor)
    } else {
        let mut blend = vec![0.0f32; w * h * 3];
        add_rows(&mut blend, w, sample, factor);
        (blend, &partner, 1.0 - factor)
    };
    add_rows(&mut blend, w, rest, rest_weight);
    sample.pixels = blend;
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

/// `buffer * weight`, handing on the other image and its weight.
fn scale(
    mut buffer: Vec<f32>,
    weight: f32,
    other: &Sample,
    other_weight: f32,
) -> (Vec<f32>, &Sample, f32) {
    buffer.iter_mut().for_each(|v| *v *= weight);
    (buffer, other, other_weight)
}

/// Adds `weight * src` into the top-left corner of `blend` (rows `w` wide).
fn add_rows(blend: &mut [f32], w: usize, src: &Sample, weight: f32) {
    let row_len = src.pixels_w * 3;
    for y in 0..src.pixels_h {
        let from = &src.pixels[y * row_len..(y + 1) * row_len];
        let to = &mut blend[y * w * 3..y * w * 3 + row_len];
        for (o, &v) in to.iter_mut().zip(from) {
            *o += v * weight;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::sample::tests::gradient_sample;

    #[test]
    fn blends_pixels_and_weights_scores() {
        let mut a = gradient_sample(4, 2, &[[0.0, 0.0, 2.0, 2.0]]);
        let b = gradient_sample(3, 5, &[[1.0, 1.0, 3.0, 4.0]]);
        mixup(&mut a, b, 0.25);
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

    #[test]
    fn blend_is_the_same_whichever_buffer_is_reused() {
        // Larger first, larger second, and neither covering the other.
        for (wa, ha, wb, hb) in [(6, 5, 3, 2), (3, 2, 6, 5), (6, 2, 3, 5)] {
            let a = gradient_sample(wa, ha, &[]);
            let b = gradient_sample(wb, hb, &[]);
            let mut mixed = a.clone();
            mixup(&mut mixed, b.clone(), 0.3);
            for v in 0..5 {
                for u in 0..6 {
                    let part = |s: &Sample, f: f32| {
                        if u < s.pixels_w && v < s.pixels_h {
                            s.at(u, v).map(|c| c * f)
                        } else {
                            [0.0; 3]
                        }
                    };
                    let (pa, pb) = (part(&a, 0.3), part(&b, 0.7));
                    let got = mixed.at(u, v);
                    for c in 0..3 {
                        assert!(
                            (got[c] - (pa[c] + pb[c])).abs() < 1e-5,
                            "{wa}x{ha} {wb}x{hb}"
                        );
                    }
                }
            }
        }
    }
}
