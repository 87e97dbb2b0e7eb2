//! RandomCrop, SSD style, with PaddleDetection's defaults: pick a minimum
//! IoU from {0, .1, .3, .5, .7, .9, no crop} in random order; for each, try up
//! to 50 crops of scale [0.3, 1] and aspect ratio [0.5, 2]; take the first
//! crop whose IoU with some box reaches the threshold and that keeps at least
//! one box centre. Boxes are cut to the crop; boxes whose centre falls
//! outside are dropped.

use super::super::rng::Rng;
use super::super::sample::Sample;

/// `RandomCrop`'s parameters (PaddleDetection's names in comments).
#[derive(Debug, Clone, PartialEq)]
pub struct CropParams {
    /// Minimum IoUs tried (`thresholds`).
    pub thresholds: Vec<f32>,
    /// `[low, high]` of the crop side over the image side (`scaling`).
    pub scale: [f32; 2],
    /// `[low, high]` of the crop's aspect ratio (`aspect_ratio`).
    pub aspect_ratio: [f32; 2],
    /// Crops drawn per threshold (`num_attempts`).
    pub attempts: usize,
    /// "No crop" is one of the shuffled choices (`allow_no_crop`).
    pub allow_no_crop: bool,
    /// Every box, not just one, must reach the IoU (`cover_all_box`).
    pub cover_all_boxes: bool,
}

impl Default for CropParams {
    fn default() -> Self {
        CropParams {
            thresholds: vec![0.0, 0.1, 0.3, 0.5, 0.7, 0.9],
            scale: [0.3, 1.0],
            aspect_ratio: [0.5, 2.0],
            attempts: 50,
            allow_no_crop: true,
            cover_all_boxes: false,
        }
    }
}

/// Tries to find a crop as above and applies it; leaves the sample as it is
/// when "no crop" comes first, when no crop qualifies, or when there are no
/// boxes.
pub fn random_crop(sample: &mut Sample, params: &CropParams, rng: &mut Rng) {
    if sample.boxes.is_empty() {
        return;
    }
    let (w, h) = (sample.width() as f64, sample.height() as f64);
    // `None` is "no crop", shuffled in with the thresholds.
    let mut thresholds: Vec<Option<f32>> = params.thresholds.iter().map(|&t| Some(t)).collect();
    if params.allow_no_crop {
        thresholds.push(None);
    }
    rng.shuffle(&mut thresholds);
    let [scale_low, scale_high] = params.scale.map(f64::from);
    let [aspect_low, aspect_high] = params.aspect_ratio.map(f64::from);
    for threshold in thresholds {
        let Some(threshold) = threshold else {
            return;
        };
        for _ in 0..params.attempts {
            let scale = rng.range(scale_low, scale_high);
            let aspect = rng.range(
                aspect_low.max(scale * scale),
                aspect_high.min(1.0 / (scale * scale)),
            );
            let crop_h = (h * scale / aspect.sqrt()) as usize;
            let crop_w = (w * scale * aspect.sqrt()) as usize;
            // The aspect bounds keep the crop inside; saturate against rounding.
            let crop_y = rng.below((h as usize).saturating_sub(crop_h) as u64) as usize;
            let crop_x = rng.below((w as usize).saturating_sub(crop_w) as u64) as usize;
            let window = [crop_x, crop_y, crop_w, crop_h];
            let ious = sample.boxes.iter().map(|b| iou(b, &window_box(window)));
            let reached = if params.cover_all_boxes {
                ious.fold(f32::INFINITY, f32::min)
            } else {
                ious.fold(0.0f32, f32::max)
            };
            if reached < threshold {
                continue;
            }
            if crop(sample, window) {
                return;
            }
        }
    }
}

fn window_box([x, y, w, h]: [usize; 4]) -> [f32; 4] {
    [x as f32, y as f32, (x + w) as f32, (y + h) as f32]
}

/// Intersection over union of two xyxy boxes (0 when they do not overlap).
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let iw = a[2].min(b[2]) - a[0].max(b[0]);
    let ih = a[3].min(b[3]) - a[1].max(b[1]);
    let inter = if iw > 0.0 && ih > 0.0 { iw * ih } else { 0.0 };
    let area_a = (a[2] - a[0]) * (a[3] - a[1]);
    let area_b = (b[2] - b[0]) * (b[3] - b[1]);
    inter / (area_a + area_b - inter + 1e-10)
}

/// Crops the view to `[x, y, w, h]` if at least one box keeps its centre
/// inside (and a non-empty part); returns whether it cropped. Kept boxes are
/// cut to the window and moved into its coordinates.
pub fn crop(sample: &mut Sample, [x, y, w, h]: [usize; 4]) -> bool {
    let window = window_box([x, y, w, h]);
    let keep: Vec<bool> = sample
        .boxes
        .iter()
        .map(|b| {
            let (cx, cy) = ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0);
            let centre_inside =
                window[0] <= cx && cx < window[2] && window[1] <= cy && cy < window[3];
            let cut = cut_box(b, &window);
            centre_inside && cut[0] < cut[2] && cut[1] < cut[3]
        })
        .collect();
    if !keep.contains(&true) {
        return false;
    }
    let mut k = keep.iter();
    sample.classes.retain(|_| *k.next().unwrap());
    let mut k = keep.iter();
    sample.scores.retain(|_| *k.next().unwrap());
    let mut k = keep.iter();
    sample.boxes.retain(|_| *k.next().unwrap());
    for b in &mut sample.boxes {
        *b = cut_box(b, &window);
    }
    // The window is in view coordinates; on a mirrored view its left edge is
    // the canvas's right.
    let view = &mut sample.view;
    view.crop_x += if view.flipped {
        view.width - (x + w)
    } else {
        x
    };
    view.crop_y += y;
    view.width = w;
    view.height = h;
    true
}

/// `b` clipped to `window` and shifted so the window's corner is the origin.
fn cut_box(b: &[f32; 4], window: &[f32; 4]) -> [f32; 4] {
    [
        b[0].max(window[0]) - window[0],
        b[1].max(window[1]) - window[1],
        b[2].min(window[2]) - window[0],
        b[3].min(window[3]) - window[1],
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::sample::tests::gradient_sample;

    #[test]
    fn cuts_boxes_and_drops_those_centred_outside() {
        let mut s = gradient_sample(
            20,
            10,
            &[
                [2.0, 2.0, 8.0, 6.0],   // centre (5, 4): kept, cut on the left
                [12.0, 1.0, 19.0, 9.0], // centre (15.5, 5): outside
                [4.0, 3.0, 14.0, 5.0],  // centre (9, 4): kept, cut on the right
            ],
        );
        assert!(crop(&mut s, [4, 1, 8, 6]));
        assert_eq!((s.width(), s.height()), (8, 6));
        assert_eq!(s.boxes, vec![[0.0, 1.0, 4.0, 5.0], [0.0, 2.0, 8.0, 4.0]]);
        assert_eq!(s.classes, vec![0, 2]);
        assert_eq!(s.scores, vec![1.0, 1.0]);
        assert_eq!(s.at(0, 0), [4.0, 1.0, 7.0]);
        assert_eq!(s.at(7, 5), [11.0, 6.0, 7.0]);
    }

    #[test]
    fn refuses_a_window_that_keeps_no_box() {
        let mut s = gradient_sample(20, 10, &[[0.0, 0.0, 4.0, 4.0]]);
        let before = s.clone();
        assert!(!crop(&mut s, [10, 0, 10, 10]));
        assert_eq!(s, before);
    }

    #[test]
    fn iou_of_hand_cases() {
        let a = [0.0, 0.0, 4.0, 4.0];
        assert!((iou(&a, &a) - 1.0).abs() < 1e-6);
        assert!((iou(&a, &[2.0, 0.0, 6.0, 4.0]) - 8.0 / 24.0).abs() < 1e-6);
        assert_eq!(iou(&a, &[5.0, 5.0, 6.0, 6.0]), 0.0);
    }

    #[test]
    fn crops_satisfy_the_drawn_threshold_or_leave_the_sample() {
        for seed in 0..50 {
            let mut s = gradient_sample(60, 40, &[[10.0, 10.0, 30.0, 25.0]]);
            random_crop(&mut s, &CropParams::default(), &mut Rng::new(seed));
            assert!(s.width() <= 60 && s.height() <= 40);
            assert!(s.width() >= 60 * 3 / 10 / 2 && s.height() >= 40 * 3 / 10 / 2);
            assert_eq!(s.boxes.len(), 1);
        }
    }

    #[test]
    fn without_no_crop_and_with_a_zero_threshold_it_always_crops() {
        let params = CropParams {
            thresholds: vec![0.0],
            scale: [0.5, 0.9],
            allow_no_crop: false,
            ..CropParams::default()
        };
        for seed in 0..30 {
            let mut s = gradient_sample(60, 40, &[[20.0, 12.0, 40.0, 28.0]]);
            random_crop(&mut s, &params, &mut Rng::new(seed));
            assert!(s.width() < 60 && s.height() < 40, "seed {seed}");
        }
    }

    #[test]
    fn cover_all_boxes_needs_every_box_to_reach_the_threshold() {
        // Two far-apart boxes: no window of at most 0.6 x the side overlaps
        // both by IoU 0.1, so with cover_all_boxes nothing is cropped.
        let params = CropParams {
            thresholds: vec![0.1],
            scale: [0.3, 0.6],
            allow_no_crop: false,
            cover_all_boxes: true,
            ..CropParams::default()
        };
        for seed in 0..30 {
            let mut s = gradient_sample(
                100,
                100,
                &[[0.0, 0.0, 10.0, 10.0], [90.0, 90.0, 100.0, 100.0]],
            );
            random_crop(&mut s, &params, &mut Rng::new(seed));
            assert_eq!((s.width(), s.height()), (100, 100), "seed {seed}");
        }
    }
}
