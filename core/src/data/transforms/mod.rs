//! The YOLOv3 input transforms, one file each, in PaddleDetection's order:
//! Mixup, ColorDistort, RandomExpand, RandomCrop, RandomFlip per sample;
//! then per batch the random resize, NormalizeBox/PadBox/XYXY->XYWH
//! (`targets`) and Normalize+Permute. Each transform has a plain function
//! that takes its parameters (tested on hand-computed cases) and a `random_`
//! function that draws them from the sample's generator.

pub mod color_distort;
pub mod mixup;
pub mod normalize;
pub mod random_crop;
pub mod random_expand;
pub mod random_flip;
pub mod resize;
pub mod targets;

use super::rng::Rng;
use super::sample::Sample;
use color_distort::ColorDistortParams;
use mixup::MixupParams;
use random_crop::CropParams;
use random_expand::ExpandParams;

/// Which per-sample augmentations a training reader runs, with their
/// parameters: those its `sample_transforms` list. They always run in the
/// order above, the order every PaddleDetection YOLOv3 reader lists them.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleAugment {
    pub mixup: Option<MixupParams>,
    pub color_distort: Option<ColorDistortParams>,
    pub expand: Option<ExpandParams>,
    pub crop: Option<CropParams>,
    /// `RandomFlipImage`'s chance of mirroring.
    pub flip: Option<f64>,
}

impl SampleAugment {
    /// PaddleDetection's YOLOv3 reader: every augmentation, default parameters.
    pub fn yolov3() -> SampleAugment {
        SampleAugment {
            mixup: Some(MixupParams::default()),
            color_distort: Some(ColorDistortParams::default()),
            expand: Some(ExpandParams::default()),
            crop: Some(CropParams::default()),
            flip: Some(0.5),
        }
    }

    /// No augmentation: the picture as decoded.
    pub fn none() -> SampleAugment {
        SampleAugment {
            mixup: None,
            color_distort: None,
            expand: None,
            crop: None,
            flip: None,
        }
    }
}

/// The per-sample training augmentations, in order. `partner` is the second
/// image for mixup, `None` once mixup is over (or for a one-image dataset);
/// it is ignored when `listed` has no mixup.
pub fn augment(
    sample: &mut Sample,
    partner: Option<Sample>,
    listed: &SampleAugment,
    rng: &mut Rng,
) {
    if let (Some(params), Some(partner)) = (&listed.mixup, partner) {
        mixup::random_mixup(sample, partner, params, rng);
    }
    if let Some(params) = &listed.color_distort {
        color_distort::random_color_distort(sample, params, rng);
    }
    if let Some(params) = &listed.expand {
        random_expand::random_expand(sample, params, rng);
    }
    if let Some(params) = &listed.crop {
        random_crop::random_crop(sample, params, rng);
    }
    if let Some(probability) = listed.flip {
        random_flip::random_flip(sample, probability, rng);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::sample::tests::gradient_sample;
    use proptest::prelude::{prop, prop_assert, prop_assert_eq, proptest};

    /// Up to 6 valid boxes inside a `w` x `h` image, from unit fractions.
    fn boxes_in(w: usize, h: usize, fractions: &[[f32; 4]]) -> Vec<[f32; 4]> {
        let (w, h) = (w as f32, h as f32);
        fractions
            .iter()
            .map(|f| {
                let x1 = f[0] * w * 0.9;
                let y1 = f[1] * h * 0.9;
                let x2 = x1 + (0.05 + 0.95 * f[2]) * (w - x1);
                let y2 = y1 + (0.05 + 0.95 * f[3]) * (h - y1);
                [x1, y1, x2, y2]
            })
            .collect()
    }

    fn assert_valid(s: &Sample, step: &str) {
        let (w, h) = (s.width() as f32, s.height() as f32);
        assert_eq!(s.boxes.len(), s.classes.len(), "{step}");
        assert_eq!(s.boxes.len(), s.scores.len(), "{step}");
        for b in &s.boxes {
            assert!(
                0.0 <= b[0] && b[0] < b[2] && b[2] <= w,
                "{step}: {b:?} in {w}x{h}"
            );
            assert!(
                0.0 <= b[1] && b[1] < b[3] && b[3] <= h,
                "{step}: {b:?} in {w}x{h}"
            );
        }
        for &score in &s.scores {
            assert!(score > 0.0 && score <= 1.0, "{step}: score {score}");
        }
        assert!(s.view.crop_x + s.width() <= s.view.canvas_w, "{step}");
        assert!(s.view.crop_y + s.height() <= s.view.canvas_h, "{step}");
    }

    proptest! {
        #[test]
        fn boxes_stay_valid_and_inside_after_every_transform(
            w in 4usize..90, h in 4usize..90, pw in 4usize..90, ph in 4usize..90,
            fractions in prop::collection::vec(prop::array::uniform4(0.0f32..1.0), 1..7),
            partner_fractions in prop::collection::vec(prop::array::uniform4(0.0f32..1.0), 1..4),
            with_partner: bool,
            seed: u64,
        ) {
            let mut s = gradient_sample(w, h, &boxes_in(w, h, &fractions));
            let partner = gradient_sample(pw, ph, &boxes_in(pw, ph, &partner_fractions));
            let mut rng = Rng::new(seed);
            assert_valid(&s, "input");
            if with_partner {
                mixup::random_mixup(&mut s, partner, &MixupParams::default(), &mut rng);
                assert_valid(&s, "mixup");
            }
            color_distort::random_color_distort(&mut s, &ColorDistortParams::default(), &mut rng);
            random_expand::random_expand(&mut s, &ExpandParams::default(), &mut rng);
            assert_valid(&s, "expand");
            random_crop::random_crop(&mut s, &CropParams::default(), &mut rng);
            assert_valid(&s, "crop");
            prop_assert!(!s.boxes.is_empty());
            random_flip::random_flip(&mut s, 0.5, &mut rng);
            assert_valid(&s, "flip");
            let mut out = vec![0.0; 24 * 16 * 3];
            resize::resize_into(&s, 24, 16, resize::Interp::Cubic, &mut out);
            prop_assert!(out.iter().all(|v| v.is_finite()));
        }

        #[test]
        fn augmentation_is_a_function_of_the_seed(seed: u64) {
            let base = gradient_sample(40, 30, &[[5.0, 5.0, 20.0, 25.0], [22.0, 3.0, 39.0, 12.0]]);
            let partner = gradient_sample(30, 40, &[[1.0, 1.0, 9.0, 9.0]]);
            let run = || {
                let mut s = base.clone();
                augment(&mut s, Some(partner.clone()), &SampleAugment::yolov3(), &mut Rng::new(seed));
                s
            };
            prop_assert_eq!(run(), run());
        }
    }
}
