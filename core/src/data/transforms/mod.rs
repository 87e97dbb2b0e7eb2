//! The input transforms, one file each: per sample Mixup, ColorDistort,
//! RandomDistort, RandomExpand, RandomCrop, RandomFlip (and a training
//! ResizeImage, with OpenCV's or PIL's resampling), run in
//! the order the reader lists them; then per batch the resize to the batch's
//! size, NormalizeBox/PadBox/XYXY->XYWH (`targets`) and Normalize+Permute.
//! Each transform has a plain function that takes its parameters (tested on
//! hand-computed cases) and a `random_` function that draws them from the
//! sample's generator.

pub mod color_distort;
pub mod mixup;
pub mod normalize;
pub mod pil_resize;
pub mod random_crop;
pub mod random_distort;
pub mod random_expand;
pub mod random_flip;
pub mod resize;
pub mod targets;

use super::rng::Rng;
use super::sample::{ColorAffine, Sample};
use color_distort::ColorDistortParams;
use mixup::MixupParams;
use random_crop::CropParams;
use random_distort::RandomDistortParams;
use random_expand::ExpandParams;
use resize::Interp;

/// One per-sample transform of a training reader, with its parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum Augment {
    Mixup(MixupParams),
    ColorDistort(ColorDistortParams),
    /// SSD's `RandomDistort`, on the 8-bit picture.
    RandomDistort(RandomDistortParams),
    Expand(ExpandParams),
    Crop(CropParams),
    /// `RandomFlipImage`'s chance of mirroring.
    Flip(f64),
    /// `ResizeImage` in a training reader: to `size` x `size`.
    Resize {
        size: usize,
        interp: Interp,
    },
    /// `RandomInterpImage`: to `size` x `size`, the interpolation drawn per
    /// image from `Interp::ALL`.
    RandomInterpResize(usize),
}

/// The per-sample transforms a training reader's `sample_transforms` lists,
/// in its order.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleAugment {
    pub steps: Vec<Augment>,
}

impl SampleAugment {
    /// PaddleDetection's YOLOv3 reader: every augmentation, default
    /// parameters, in its order.
    pub fn yolov3() -> SampleAugment {
        SampleAugment {
            steps: vec![
                Augment::Mixup(MixupParams::default()),
                Augment::ColorDistort(ColorDistortParams::default()),
                Augment::Expand(ExpandParams::default()),
                Augment::Crop(CropParams::default()),
                Augment::Flip(0.5),
            ],
        }
    }

    /// No augmentation: the picture as decoded.
    pub fn none() -> SampleAugment {
        SampleAugment { steps: Vec::new() }
    }

    pub fn has_mixup(&self) -> bool {
        self.steps.iter().any(|s| matches!(s, Augment::Mixup(_)))
    }
}

/// The per-sample transforms, in order. `partner` is the second image for
/// mixup, `None` once mixup is over (or for a one-image dataset); it is
/// ignored when `listed` has no mixup. Mixup and expand take the picture as
/// decoded: after a transform that only changed the view they build it
/// first (`Sample::materialize`), which the usual order never needs.
pub fn augment(
    sample: &mut Sample,
    mut partner: Option<Sample>,
    listed: &SampleAugment,
    rng: &mut Rng,
) {
    for step in &listed.steps {
        match step {
            Augment::Mixup(params) => {
                if let Some(partner) = partner.take() {
                    decoded(sample);
                    mixup::random_mixup(sample, partner, params, rng);
                }
            }
            Augment::ColorDistort(params) => {
                color_distort::random_color_distort(sample, params, rng)
            }
            Augment::RandomDistort(params) => {
                decoded(sample);
                random_distort::random_distort(sample, params, rng);
            }
            Augment::Expand(params) => {
                decoded(sample);
                random_expand::random_expand(sample, params, rng);
            }
            Augment::Crop(params) => random_crop::random_crop(sample, params, rng),
            Augment::Flip(probability) => random_flip::random_flip(sample, *probability, rng),
            Augment::Resize { size, interp } => resize::resize_sample(sample, *size, *interp),
            Augment::RandomInterpResize(size) => {
                let interp = Interp::ALL[rng.below(Interp::ALL.len() as u64) as usize];
                resize::resize_sample(sample, *size, interp)
            }
        }
    }
}

/// Makes the sample's view whole and its colour map the identity.
fn decoded(sample: &mut Sample) {
    if !sample.view.is_whole() || sample.color != ColorAffine::IDENTITY {
        sample.materialize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::sample::tests::gradient_sample;
    use color_distort::DeltaRange;
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

    #[test]
    fn the_listed_order_is_the_order_run() {
        let skip = DeltaRange {
            low: 1.0,
            high: 1.0,
            skip_probability: 1.0,
        };
        let brighter = Augment::ColorDistort(ColorDistortParams {
            brightness: DeltaRange {
                low: 5.0,
                high: 5.0,
                skip_probability: 0.0,
            },
            contrast: skip,
            saturation: skip,
            hue: skip,
            random_apply: false,
        });
        let expand = Augment::Expand(ExpandParams {
            max_ratio: 3.0,
            skip_probability: 0.0,
            fill: [10.0, 20.0, 30.0],
        });
        let run = |steps: Vec<Augment>| {
            let mut s = gradient_sample(6, 4, &[[1.0, 1.0, 3.0, 3.0]]);
            augment(&mut s, None, &SampleAugment { steps }, &mut Rng::new(3));
            s
        };
        // ColorDistort after RandomExpand brightens the fill too.
        let s = run(vec![expand.clone(), brighter.clone()]);
        assert_eq!(s.view.fill, [15.0, 25.0, 35.0]);
        let (x, y) = (s.view.pixels_x, s.view.pixels_y);
        assert_eq!(s.at(x + 2, y + 1), [7.0, 6.0, 12.0]);
        let s = run(vec![brighter, expand.clone()]);
        assert_eq!(s.view.fill, [10.0, 20.0, 30.0]);
        let (x, y) = (s.view.pixels_x, s.view.pixels_y);
        assert_eq!(s.at(x + 2, y + 1), [7.0, 6.0, 12.0]);
        // RandomExpand after a flip expands the mirrored picture.
        let s = run(vec![Augment::Flip(1.0), expand]);
        let (x, y) = (s.view.pixels_x, s.view.pixels_y);
        assert_eq!(s.at(x, y), [5.0, 0.0, 7.0]);
        assert_eq!(
            s.boxes,
            vec![[
                x as f32 + 3.0,
                y as f32 + 1.0,
                x as f32 + 5.0,
                y as f32 + 3.0
            ]]
        );
    }

    /// The SSD configs' RandomDistort.
    fn ssd_distort() -> RandomDistortParams {
        let range = |lower, upper| random_distort::DistortRange {
            lower,
            upper,
            probability: 0.5,
        };
        RandomDistortParams {
            brightness: range(0.875, 1.125),
            contrast: range(0.5, 1.5),
            saturation: range(0.5, 1.5),
            hue: range(-18.0, 18.0),
            count: 4,
            is_order: true,
        }
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
            let boxes = s.boxes.clone();
            decoded(&mut s);
            random_distort::random_distort(&mut s, &ssd_distort(), &mut rng);
            prop_assert_eq!(&s.boxes, &boxes);
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
            let lanczos = resize::Interp::Pil(pil_resize::PilFilter::Lanczos);
            resize::resize_into(&s, 24, 16, lanczos, &mut out);
            prop_assert!(out.iter().all(|v| v.fract() == 0.0 && (0.0..=255.0).contains(v)));
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
