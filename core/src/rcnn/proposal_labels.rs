//! Paddle 1.8's `generate_proposal_labels` for one image (PaddleDetection's
//! `BBoxAssigner`; not cascade, not class-agnostic): which RoIs the box head
//! is trained on, their classes and their box-regression targets.
//!
//! As `generate_proposal_labels_op.cc` does it:
//! 1. the proposals are divided by the image's scale (to original pixels)
//!    and put after the ground-truth boxes: candidates `[gt..., proposals...]`;
//! 2. each candidate's IoU with every ground-truth box ([`bbox_overlap`]);
//!    its best overlap decides: at least `fg_thresh` is foreground, matched
//!    to the first box within 1e-5 of the best; in `[bg_thresh_lo,
//!    bg_thresh_hi)` background; else unused. A crowd ground-truth box is
//!    never a candidate itself, but proposals covering it are matched to it
//!    like to any other box;
//! 3. at most `floor(batch_size_per_im * fg_fraction)` foreground, then at
//!    most `batch_size_per_im` minus those background, in candidate order,
//!    or with `use_random` by Paddle's reservoir sampling (below);
//! 4. foreground first, then background: the RoIs scaled back to resized
//!    pixels, labels (the matched box's class; 0 for background), and each
//!    foreground RoI's `BoxToDelta` onto its box over `bbox_reg_weights`
//!    ([`box_to_delta`]), written at columns `4 * label .. 4 * label + 4` of
//!    a row of `4 * class_nums` with inside weights 1 there (0 elsewhere).
//!
//! Paddle's sampling, reproduced in kind (its generator is `std::minstd_rand`
//! from `std::random_device`, so no run reproduces another's draws): for
//! `i` from the quota to the count, `r = floor(u * i)` with `u` uniform in
//! `[0, 1)`, and items `r` and `i` swap when `r` is below the quota; for the
//! background the test is against the *foreground* quota (sic), so beyond
//! that many the background kept is the first in candidate order.
//!
//! An image without proposals yields no RoIs (Paddle skips it); without
//! ground truth every candidate's best overlap is taken as 0.

use crate::box_coder::{box_to_delta, BoxXyxy};
use crate::data::rng::Rng;
use crate::rcnn::bbox_overlaps::bbox_overlap;
use crate::rcnn::BBoxAssignerConfig;

/// One image's sampled RoIs and their targets, foreground first.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SampledRois {
    /// `[x1, y1, x2, y2]` in resized-image pixels (the RoI Align input).
    pub rois: Vec<BoxXyxy>,
    /// Class of each RoI, 0 for background (the softmax cross-entropy labels).
    pub labels: Vec<i32>,
    /// `[R, 4 * class_nums]`: a foreground RoI's `[dx, dy, dw, dh]` at columns
    /// `4 * label ..`, 0 elsewhere (Paddle's `BboxTargets`).
    pub bbox_targets: Vec<f32>,
    /// `[R, 4 * class_nums]`: 1 where `bbox_targets` holds a target, else 0
    /// (Paddle's `BboxInsideWeights`; its `BboxOutsideWeights` are the same
    /// values here, so they are not repeated).
    pub bbox_inside_weights: Vec<f32>,
    /// How many of the RoIs (the first ones) are foreground.
    pub foreground: usize,
}

/// Samples one image's RoIs for the box head.
///
/// - `proposals`: `generate_proposals`' boxes, resized-image pixels;
/// - `gt_boxes`, `gt_classes`, `is_crowd`: the image's ground truth, boxes in
///   original-image pixels, classes from 1 (0 is the background);
/// - `im_info`: `[resized height, resized width, scale]`;
/// - `rng`: drawn from only when `cfg.use_random`.
pub fn generate_proposal_labels(
    cfg: &BBoxAssignerConfig,
    proposals: &[BoxXyxy],
    gt_boxes: &[BoxXyxy],
    gt_classes: &[i32],
    is_crowd: &[bool],
    im_info: [f32; 3],
    rng: &mut Rng,
) -> SampledRois {
    assert_eq!(gt_classes.len(), gt_boxes.len(), "one class per gt box");
    assert_eq!(is_crowd.len(), gt_boxes.len(), "one crowd flag per gt box");
    if proposals.is_empty() {
        return SampledRois::default();
    }
    let scale = im_info[2];

    // 1-2. Candidates and their best overlaps.
    let candidates: Vec<BoxXyxy> = gt_boxes
        .iter()
        .copied()
        .chain(proposals.iter().map(|p| p.map(|v| v / scale)))
        .collect();
    let mut foreground = Vec::new();
    let mut matched_gt = Vec::new();
    let mut background = Vec::new();
    let mut overlaps = vec![0.0f32; gt_boxes.len()];
    for (i, candidate) in candidates.iter().enumerate() {
        for (overlap, gt) in overlaps.iter_mut().zip(gt_boxes) {
            *overlap = bbox_overlap(candidate, gt);
        }
        // The first maximum, as std::max_element.
        let mut best = overlaps.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if overlaps.is_empty() {
            best = 0.0;
        }
        if i < gt_boxes.len() && is_crowd[i] {
            best = -1.0;
        }
        if best >= cfg.fg_thresh {
            let gt = overlaps
                .iter()
                .position(|&o| (best - o).abs() < 1e-5)
                .expect("the best overlap is one of them");
            foreground.push(i);
            matched_gt.push(gt);
        } else if best >= cfg.bg_thresh_lo && best < cfg.bg_thresh_hi {
            background.push(i);
        }
    }

    // 3. Quotas, and the reservoir when random.
    let fg_quota =
        ((cfg.batch_size_per_im as f32 * cfg.fg_fraction).floor() as usize).min(foreground.len());
    let bg_quota = (cfg.batch_size_per_im - fg_quota).min(background.len());
    if cfg.use_random {
        for i in fg_quota..foreground.len() {
            let r = (rng.uniform_f32() * i as f32).floor() as usize;
            if r < fg_quota {
                foreground.swap(r, i);
                matched_gt.swap(r, i);
            }
        }
        for i in bg_quota..background.len() {
            let r = (rng.uniform_f32() * i as f32).floor() as usize;
            if r < fg_quota {
                background.swap(r, i);
            }
        }
    }
    foreground.truncate(fg_quota);
    background.truncate(bg_quota);

    // 4. Outputs.
    let width = 4 * cfg.class_nums;
    let count = fg_quota + bg_quota;
    let mut out = SampledRois {
        rois: Vec::with_capacity(count),
        labels: Vec::with_capacity(count),
        bbox_targets: vec![0.0; count * width],
        bbox_inside_weights: vec![0.0; count * width],
        foreground: fg_quota,
    };
    for (row, (&i, &gt)) in foreground.iter().zip(&matched_gt).enumerate() {
        let label = gt_classes[gt];
        assert!(
            label > 0 && (label as usize) < cfg.class_nums,
            "gt class {label} outside 1..{}",
            cfg.class_nums
        );
        let targets = box_to_delta(&candidates[i], &gt_boxes[gt], &cfg.bbox_reg_weights);
        let at = row * width + 4 * label as usize;
        out.bbox_targets[at..at + 4].copy_from_slice(&targets);
        out.bbox_inside_weights[at..at + 4].fill(1.0);
        out.labels.push(label);
    }
    out.labels.resize(count, 0);
    for &i in foreground.iter().chain(&background) {
        out.rois.push(candidates[i].map(|v| v * scale));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::rng::Rng;
    use crate::fixtures::{floats, quads, read};
    use crate::rcnn::proposals::tests::assert_boxes_close;
    use proptest::prelude::*;

    fn settings(fixture: &serde_json::Value) -> BBoxAssignerConfig {
        let s = &fixture["label_settings"];
        let float = |key: &str| s[key].as_f64().expect(key) as f32;
        let w = floats(&s["bbox_reg_weights"]);
        BBoxAssignerConfig {
            batch_size_per_im: s["batch_size_per_im"].as_u64().expect("batch") as usize,
            fg_fraction: float("fg_fraction"),
            fg_thresh: float("fg_thresh"),
            bg_thresh_hi: float("bg_thresh_hi"),
            bg_thresh_lo: float("bg_thresh_lo"),
            bbox_reg_weights: [w[0], w[1], w[2], w[3]],
            class_nums: s["class_nums"].as_u64().expect("class_nums") as usize,
            use_random: s["use_random"].as_bool().expect("use_random"),
        }
    }

    fn rows(v: &serde_json::Value) -> Vec<f32> {
        v.as_array()
            .expect("rows")
            .iter()
            .flat_map(floats)
            .collect()
    }

    /// Paddle's `generate_proposal_labels` (use_random false) on its own
    /// proposals for two images and on hand-made RoIs at the thresholds'
    /// edges (`core/tests/fixtures/faster_rcnn/proposals.py`).
    #[test]
    fn equals_paddles_generate_proposal_labels() {
        let fixture = read("faster_rcnn/proposals.json");
        let cfg = settings(&fixture);
        assert!(!cfg.use_random);
        let mut rng = Rng::from_state(0);
        let mut foreground = 0;
        for case in fixture["label_cases"].as_array().expect("cases") {
            for (k, image) in case["images"]
                .as_array()
                .expect("images")
                .iter()
                .enumerate()
            {
                let image = image.as_u64().expect("image") as usize;
                let gt = &fixture["gt"][image];
                let classes: Vec<i32> = floats(&gt["classes"]).iter().map(|&c| c as i32).collect();
                let crowd: Vec<bool> = floats(&gt["is_crowd"]).iter().map(|&c| c != 0.0).collect();
                let info = floats(&fixture["im_info"][image]);
                let got = generate_proposal_labels(
                    &cfg,
                    &quads(&case["rpn_rois"][k]),
                    &quads(&gt["boxes"]),
                    &classes,
                    &crowd,
                    [info[0], info[1], info[2]],
                    &mut rng,
                );
                let what = format!("image {image}");
                assert_boxes_close(&got.rois, &quads(&case["rois"][k]), &what);
                let labels: Vec<i32> = rows(&case["labels"][k]).iter().map(|&l| l as i32).collect();
                assert_eq!(got.labels, labels, "{what}");
                let want = rows(&case["bbox_targets"][k]);
                assert_eq!(got.bbox_targets.len(), want.len(), "{what}");
                for (g, w) in got.bbox_targets.iter().zip(&want) {
                    assert!(
                        (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                        "{what}: {g} vs {w}"
                    );
                }
                assert_eq!(
                    got.bbox_inside_weights,
                    rows(&case["bbox_inside_weights"][k])
                );
                assert_eq!(
                    got.bbox_inside_weights,
                    rows(&case["bbox_outside_weights"][k])
                );
                assert_eq!(got.foreground, labels.iter().filter(|&&l| l > 0).count());
                foreground += got.foreground;
            }
        }
        assert!(
            foreground >= 8,
            "only {foreground} foreground RoIs compared"
        );
    }

    fn config(use_random: bool) -> BBoxAssignerConfig {
        BBoxAssignerConfig {
            batch_size_per_im: 8,
            use_random,
            ..BBoxAssignerConfig::faster_rcnn(4)
        }
    }

    #[test]
    fn labels_by_hand() {
        // Scale 2: proposals in resized pixels are twice the originals.
        let gt = [[0.0, 0.0, 9.0, 9.0], [20.0, 20.0, 39.0, 39.0]];
        let proposals = [
            [0.0, 0.0, 39.0, 19.0],       // [0, 0, 19.5, 9.5]: IoU 100 / 215.25 with gt 0
            [40.0, 40.0, 78.0, 78.0],     // [20, 20, 39, 39]: gt 1 exactly
            [0.0, 0.0, 18.0, 18.0],       // [0, 0, 9, 9]: gt 0 exactly
            [100.0, 100.0, 110.0, 110.0], // apart: background at IoU 0
        ];
        let sixteen = BBoxAssignerConfig {
            batch_size_per_im: 16,
            ..config(false)
        };
        let out = generate_proposal_labels(
            &sixteen,
            &proposals,
            &gt,
            &[3, 1],
            &[false, false],
            [200.0, 200.0, 2.0],
            &mut Rng::from_state(0),
        );
        // Foreground (4 of 16): gt 0, gt 1, proposals 1 and 2; background the rest.
        assert_eq!(out.labels, vec![3, 1, 1, 3, 0, 0]);
        assert_eq!(out.foreground, 4);
        assert_eq!(out.rois[0], [0.0, 0.0, 18.0, 18.0]);
        assert_eq!(out.rois[4], proposals[0]);
        // Row 1 (class 1): exact match, zero targets, weights at 4..8.
        assert_eq!(
            &out.bbox_inside_weights[16..32],
            &[0., 0., 0., 0., 1., 1., 1., 1., 0., 0., 0., 0., 0., 0., 0., 0.]
        );
        assert!(out.bbox_targets.iter().all(|&t| t == 0.0));

        // A crowd box is no candidate; the proposal on it still matches it.
        let out = generate_proposal_labels(
            &config(false),
            &proposals[1..2],
            &gt,
            &[3, 1],
            &[false, true],
            [200.0, 200.0, 2.0],
            &mut Rng::from_state(0),
        );
        assert_eq!(out.labels, vec![3, 1]);
        assert_eq!(out.rois, vec![[0.0, 0.0, 18.0, 18.0], proposals[1]]);
    }

    fn boxes(n: std::ops::Range<usize>) -> impl Strategy<Value = Vec<BoxXyxy>> {
        prop::collection::vec((0.0f32..80.0, 0.0f32..80.0, 2.0f32..40.0, 2.0f32..40.0), n).prop_map(
            |v| {
                v.into_iter()
                    .map(|(x, y, w, h)| [x, y, x + w, y + h])
                    .collect()
            },
        )
    }

    proptest! {
        /// The counts obey the fractions, labels and weights agree, and the
        /// random and the ordered sampler pick equally many of each.
        #[test]
        fn sampling_obeys_the_fractions(
            proposals in boxes(1..60),
            gt in boxes(1..5),
            scale in 0.5f32..2.0,
            seed in any::<u64>(),
        ) {
            let classes: Vec<i32> = (0..gt.len()).map(|i| 1 + (i % 3) as i32).collect();
            let crowd: Vec<bool> = (0..gt.len()).map(|i| i == 3).collect();
            let proposals: Vec<BoxXyxy> = proposals.iter().map(|b| b.map(|v| v * scale)).collect();
            let info = [200.0, 200.0, scale];
            let ordered = generate_proposal_labels(&config(false), &proposals, &gt, &classes, &crowd, info, &mut Rng::from_state(seed));
            let random = generate_proposal_labels(&config(true), &proposals, &gt, &classes, &crowd, info, &mut Rng::from_state(seed));
            for out in [&ordered, &random] {
                let r = out.rois.len();
                prop_assert!(r <= 8);
                prop_assert!(out.foreground <= 2); // floor(8 * 0.25)
                prop_assert_eq!(out.labels.len(), r);
                prop_assert_eq!(out.bbox_targets.len(), r * 16);
                for (row, &label) in out.labels.iter().enumerate() {
                    prop_assert_eq!(label > 0, row < out.foreground);
                    let weights = &out.bbox_inside_weights[row * 16..(row + 1) * 16];
                    prop_assert_eq!(weights.iter().sum::<f32>(), if label > 0 { 4.0 } else { 0.0 });
                    if label > 0 {
                        prop_assert!(weights[4 * label as usize..4 * label as usize + 4].iter().all(|&w| w == 1.0));
                    }
                }
            }
            prop_assert_eq!(ordered.foreground, random.foreground);
            prop_assert_eq!(ordered.rois.len(), random.rois.len());
        }
    }
}
