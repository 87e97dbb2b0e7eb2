//! RandomFlip: mirror left-right with probability 1/2 (PaddleDetection
//! `RandomFlipImage`, 2.x geometry: `x -> width - x`, no -1).

use super::super::rng::Rng;
use super::super::sample::Sample;

/// `RandomFlipImage`'s `prob`: the chance of mirroring (0.5 in PaddleDetection).
pub fn random_flip(sample: &mut Sample, probability: f64, rng: &mut Rng) {
    if rng.uniform() < probability {
        flip(sample);
    }
}

pub fn flip(sample: &mut Sample) {
    let w = sample.width() as f32;
    for b in &mut sample.boxes {
        *b = [w - b[2], b[1], w - b[0], b[3]];
    }
    sample.view.flipped = !sample.view.flipped;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::sample::tests::gradient_sample;
    use crate::data::transforms::random_crop::crop;

    #[test]
    fn mirrors_boxes_and_pixels() {
        let mut s = gradient_sample(10, 4, &[[1.0, 1.0, 4.0, 3.0]]);
        flip(&mut s);
        assert_eq!(s.boxes, vec![[6.0, 1.0, 9.0, 3.0]]);
        assert_eq!(s.at(0, 2), [9.0, 2.0, 7.0]);
        assert_eq!(s.at(9, 0), [0.0, 0.0, 7.0]);
    }

    #[test]
    fn crop_after_flip_takes_the_mirrored_window() {
        let mut s = gradient_sample(10, 4, &[[1.0, 1.0, 4.0, 3.0]]);
        flip(&mut s); // box now [6, 1, 9, 3]
        assert!(crop(&mut s, [5, 0, 5, 4]));
        assert_eq!(s.boxes, vec![[1.0, 1.0, 4.0, 3.0]]);
        // View column 0 is flipped column 5, i.e. original column 4.
        assert_eq!(s.at(0, 0), [4.0, 0.0, 7.0]);
        assert_eq!(s.at(4, 0), [0.0, 0.0, 7.0]);
        flip(&mut s);
        assert_eq!(s.at(0, 0), [0.0, 0.0, 7.0]);
        assert_eq!(s.boxes, vec![[1.0, 1.0, 4.0, 3.0]]);
    }
}
