//! RandomFlip: mirror left-right with probability 1/2 (PaddleDetection
//! `RandomFlipImage`, 2.x geometry for boxes: `x -> width - x`, no -1).
//! Polygons, carried for Mask R-CNN, flip as 0.x's `flip_segms` (its
//! `is_mask_flip`) does: `x -> width - x - 1`, in f64 (numpy's float64
//! arithmetic on the JSON's numbers). The one pixel between the two is
//! PaddleDetection 0.x's own: its boxes follow the `x2 = x1 + w - 1`
//! convention that makes `width - x2 - 1` the mirror, its polygons do not.

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
    if let Some(polygons) = &mut sample.polygons {
        flip_polygons(polygons, sample.view.width);
    }
    sample.view.flipped = !sample.view.flipped;
}

/// `flip_segms`' `_flip_poly` on every polygon of every object.
pub fn flip_polygons(polygons: &mut [Vec<Vec<f64>>], width: usize) {
    let w = width as f64;
    for x in polygons
        .iter_mut()
        .flatten()
        .flat_map(|polygon| polygon.iter_mut().step_by(2))
    {
        *x = w - *x - 1.0;
    }
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

    #[test]
    fn polygons_flip_as_paddledetection_0x_flip_segms() {
        let mut s = gradient_sample(10, 4, &[[1.0, 1.0, 4.0, 3.0], [5.0, 0.0, 9.0, 2.0]]);
        s.polygons = Some(vec![
            vec![vec![1.0, 1.0, 4.0, 1.0, 2.5, 3.0]],
            vec![
                vec![5.0, 0.0, 9.0, 0.0, 9.0, 2.0],
                vec![6.0, 0.5, 7.0, 0.5, 7.0, 1.5],
            ],
        ]);
        flip(&mut s);
        // x -> 10 - x - 1; y unchanged.
        assert_eq!(
            s.polygons,
            Some(vec![
                vec![vec![8.0, 1.0, 5.0, 1.0, 6.5, 3.0]],
                vec![
                    vec![4.0, 0.0, 0.0, 0.0, 0.0, 2.0],
                    vec![3.0, 0.5, 2.0, 0.5, 2.0, 1.5]
                ],
            ])
        );
        let mut plain = gradient_sample(10, 4, &[[1.0, 1.0, 4.0, 3.0]]);
        flip(&mut plain);
        assert_eq!(plain.polygons, None);
    }

    proptest::proptest! {
        /// Flipping twice gives the polygons back: exactly for coordinates
        /// on a 1/64 pixel grid (every step exact in f64), within an ulp of
        /// the width for any others (`(w - 1) - ((w - 1) - x)` rounds).
        #[test]
        fn flipping_polygons_twice_is_the_identity(
            width in 1usize..5000,
            grid in proptest::collection::vec(proptest::collection::vec(0u32..320_000, 6..20), 1..4),
            any in proptest::collection::vec(proptest::collection::vec(-10.0f64..5000.0, 6..20), 1..4),
        ) {
            let on_grid: Vec<Vec<f64>> = grid
                .iter()
                .map(|p| p.iter().map(|&v| v as f64 / 64.0).collect())
                .collect();
            let mut polygons = vec![on_grid.clone(), any.clone()];
            flip_polygons(&mut polygons, width);
            flip_polygons(&mut polygons, width);
            proptest::prop_assert_eq!(&polygons[0], &on_grid);
            for (p, q) in polygons[1].iter().zip(&any) {
                for (a, b) in p.iter().zip(q) {
                    proptest::prop_assert!((a - b).abs() <= 4.0 * f64::EPSILON * (width as f64 + b.abs()), "{} {}", a, b);
                }
            }
        }
    }
}
