//! Paddle's `generate_proposal_labels` for one image (PaddleDetection's
//! `BBoxAssigner` and `CascadeBBoxAssigner`): which RoIs the box head is
//! trained on, their classes and their box-regression targets.
//!
//! As `generate_proposal_labels_op.cc` does it (1.8; Paddle 2.0 adds the
//! cascade switches below):
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
//!    a row of `4 * class_nums` with inside weights 1 there (0 elsewhere);
//!    and each RoI's best overlap (2.0's `MaxOverlapWithGT`).
//!
//! Paddle 2.0's switches ([`LabelSwitches`]), as `CascadeBBoxAssigner` sets
//! them (`class_nums` 2 at every stage, `is_cascade_rcnn` after the first):
//! - `is_cls_agnostic`: the targets go to columns 4..8 (class 1) whatever
//!   the RoI's class; the label stays the box's class (the classifier still
//!   tells them apart), so labels may exceed `class_nums`;
//! - `is_cascade_rcnn`, with the `MaxOverlap` input (the previous stage's
//!   best overlap of each proposal, the proposals being that stage's RoIs
//!   refined): before step 1 the proposals of no area (`x2 - x1 + 1 <= 0`
//!   or the same in y, in original pixels) or of best overlap 1 (the
//!   previous stage's ground-truth rows, which step 1 adds again) are
//!   dropped; if none is left, one zero box `[0, 0, 0, 0]` stands in. Step 3
//!   keeps every foreground and background candidate: no quotas, no
//!   sampling.
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
    /// `4 * label ..` (`4..8` class-agnostic), 0 elsewhere (Paddle's
    /// `BboxTargets`).
    pub bbox_targets: Vec<f32>,
    /// `[R, 4 * class_nums]`: 1 where `bbox_targets` holds a target, else 0
    /// (Paddle's `BboxInsideWeights`; its `BboxOutsideWeights` are the same
    /// values here, so they are not repeated).
    pub bbox_inside_weights: Vec<f32>,
    /// How many of the RoIs (the first ones) are foreground.
    pub foreground: usize,
    /// Each RoI's best overlap with the ground truth (crowd boxes included;
    /// 1 for the ground-truth rows): the next cascade stage's `MaxOverlap`.
    pub max_overlap: Vec<f32>,
}

/// Paddle 2.0's `is_cls_agnostic` and `is_cascade_rcnn` (with its
/// `MaxOverlap` input); the default, both off, is Faster R-CNN's.
#[derive(Debug, Clone, Copy, Default)]
pub struct LabelSwitches<'a> {
    pub is_cls_agnostic: bool,
    /// `is_cascade_rcnn` on: each proposal's best overlap from the previous
    /// stage (its [`SampledRois::max_overlap`]).
    pub cascade_max_overlap: Option<&'a [f32]>,
}

/// Samples one image's RoIs for the box head (Faster R-CNN: no switches).
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
    generate_proposal_labels_with(
        cfg,
        LabelSwitches::default(),
        proposals,
        gt_boxes,
        gt_classes,
        is_crowd,
        im_info,
        rng,
    )
}

/// [`generate_proposal_labels`] with Paddle 2.0's `switches` (a cascade
/// stage's `proposals` are the previous stage's RoIs, refined).
#[allow(clippy::too_many_arguments)]
pub fn generate_proposal_labels_with(
    cfg: &BBoxAssignerConfig,
    switches: LabelSwitches,
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
    let mut kept: Vec<BoxXyxy> = proposals.iter().map(|p| p.map(|v| v / scale)).collect();
    if let Some(previous) = switches.cascade_max_overlap {
        assert_eq!(
            previous.len(),
            proposals.len(),
            "one previous max overlap per proposal"
        );
        let mut overlaps = previous.iter();
        kept.retain(|b| {
            let overlap = *overlaps.next().expect("as many as the proposals");
            b[2] - b[0] + 1.0 > 0.0 && b[3] - b[1] + 1.0 > 0.0 && overlap < 1.0
        });
        if kept.is_empty() {
            kept.push([0.0; 4]);
        }
    }
    let candidates: Vec<BoxXyxy> = gt_boxes.iter().copied().chain(kept).collect();
    let mut foreground = Vec::new();
    let mut matched_gt = Vec::new();
    let mut background = Vec::new();
    let mut max_overlap = Vec::with_capacity(candidates.len());
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
        max_overlap.push(best);
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

    // 3. Quotas, and the reservoir when random; a cascade stage keeps all.
    let (fg_quota, bg_quota) = if switches.cascade_max_overlap.is_some() {
        (foreground.len(), background.len())
    } else {
        let fg = ((cfg.batch_size_per_im as f32 * cfg.fg_fraction).floor() as usize)
            .min(foreground.len());
        (fg, (cfg.batch_size_per_im - fg).min(background.len()))
    };
    if cfg.use_random && switches.cascade_max_overlap.is_none() {
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
        max_overlap: Vec::with_capacity(count),
    };
    for (row, (&i, &gt)) in foreground.iter().zip(&matched_gt).enumerate() {
        let label = gt_classes[gt];
        assert!(
            label > 0 && (switches.is_cls_agnostic || (label as usize) < cfg.class_nums),
            "gt class {label} outside 1..{}",
            cfg.class_nums
        );
        let column = if switches.is_cls_agnostic {
            1
        } else {
            label as usize
        };
        let targets = box_to_delta(&candidates[i], &gt_boxes[gt], &cfg.bbox_reg_weights);
        let at = row * width + 4 * column;
        out.bbox_targets[at..at + 4].copy_from_slice(&targets);
        out.bbox_inside_weights[at..at + 4].fill(1.0);
        out.labels.push(label);
    }
    out.labels.resize(count, 0);
    for &i in foreground.iter().chain(&background) {
        out.rois.push(candidates[i].map(|v| v * scale));
        out.max_overlap.push(max_overlap[i]);
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

    fn settings(s: &serde_json::Value) -> BBoxAssignerConfig {
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

    /// Runs `case`'s image `k` (ground truth `gt`, `im_info` row `info`)
    /// and checks every output against Paddle's; the foreground count.
    fn check_against_paddle(
        cfg: &BBoxAssignerConfig,
        switches: LabelSwitches,
        (case, k): (&serde_json::Value, usize),
        gt: &serde_json::Value,
        info: &serde_json::Value,
        what: &str,
    ) -> usize {
        let classes: Vec<i32> = floats(&gt["classes"]).iter().map(|&c| c as i32).collect();
        let crowd: Vec<bool> = floats(&gt["is_crowd"]).iter().map(|&c| c != 0.0).collect();
        let info = floats(info);
        let got = generate_proposal_labels_with(
            cfg,
            switches,
            &quads(&case["rpn_rois"][k]),
            &quads(&gt["boxes"]),
            &classes,
            &crowd,
            [info[0], info[1], info[2]],
            &mut Rng::from_state(0),
        );
        assert_boxes_close(&got.rois, &quads(&case["rois"][k]), what);
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
            rows(&case["bbox_inside_weights"][k]),
            "{what}"
        );
        assert_eq!(
            got.bbox_inside_weights,
            rows(&case["bbox_outside_weights"][k]),
            "{what}"
        );
        assert_eq!(got.foreground, labels.iter().filter(|&&l| l > 0).count());
        assert_eq!(got.max_overlap.len(), labels.len());
        got.foreground
    }

    /// Paddle's `generate_proposal_labels` (use_random false) on its own
    /// proposals for two images and on hand-made RoIs at the thresholds'
    /// edges (`core/tests/fixtures/faster_rcnn/proposals.py`).
    #[test]
    fn equals_paddles_generate_proposal_labels() {
        let fixture = read("faster_rcnn/proposals.json");
        let cfg = settings(&fixture["label_settings"]);
        assert!(!cfg.use_random);
        let mut foreground = 0;
        for case in fixture["label_cases"].as_array().expect("cases") {
            for (k, image) in case["images"]
                .as_array()
                .expect("images")
                .iter()
                .enumerate()
            {
                let image = image.as_u64().expect("image") as usize;
                foreground += check_against_paddle(
                    &cfg,
                    LabelSwitches::default(),
                    (case, k),
                    &fixture["gt"][image],
                    &fixture["im_info"][image],
                    &format!("image {image}"),
                );
            }
        }
        assert!(
            foreground >= 8,
            "only {foreground} foreground RoIs compared"
        );
    }

    /// Paddle's class-agnostic labels as `CascadeBBoxAssigner` asks for them
    /// at stage 1 (`class_nums` 2, `is_cls_agnostic`), at stage 1's and
    /// stage 2's thresholds and weights, on two images with classes up to 4
    /// and a crowd box (`core/tests/fixtures/cascade_rcnn/cascade_head.py`,
    /// Paddle 1.8.5, use_random false).
    #[test]
    fn class_agnostic_labels_equal_paddles() {
        let fixture = read("cascade_rcnn/cascade_head.json");
        let switches = LabelSwitches {
            is_cls_agnostic: true,
            cascade_max_overlap: None,
        };
        let mut foreground = 0;
        for (stage, case) in fixture["labels"]
            .as_array()
            .expect("cases")
            .iter()
            .enumerate()
        {
            let cfg = settings(&case["settings"]);
            assert_eq!((cfg.class_nums, cfg.use_random), (2, false));
            for image in 0..2 {
                foreground += check_against_paddle(
                    &cfg,
                    switches,
                    (case, image),
                    &fixture["gt"][image],
                    &fixture["im_info"][image],
                    &format!("stage {} image {image}", stage + 1),
                );
            }
        }
        assert!(foreground >= 20, "only {foreground} foreground RoIs");
    }

    /// A cascade stage by hand from Paddle 2.0's `generate_proposal_labels_op.cc`
    /// (`is_cascade_rcnn`, `is_cls_agnostic`; 1.8.5 cannot run it): at stage
    /// 2's settings with `batch_size_per_im` 2, which would leave no room for
    /// foreground if the quotas applied.
    #[test]
    fn a_cascade_stage_by_hand() {
        let cfg = BBoxAssignerConfig {
            batch_size_per_im: 2,
            fg_thresh: 0.6,
            bg_thresh_hi: 0.6,
            bbox_reg_weights: [0.05, 0.05, 0.1, 0.1],
            class_nums: 2,
            use_random: true,
            ..BBoxAssignerConfig::faster_rcnn(2)
        };
        // Original pixels; gt 2 is crowd.
        let gt = [
            [0.0, 0.0, 9.0, 9.0],
            [20.0, 20.0, 39.0, 39.0],
            [60.0, 60.0, 79.0, 79.0],
        ];
        let classes = [3, 1, 2];
        let crowd = [false, false, true];
        // Scale 2: the proposals (previous stage's RoIs, refined) in resized
        // pixels, with the previous stage's overlaps.
        let proposals = [
            [0.0, 0.0, 18.0, 18.0],       // gt 0's row of the previous stage: dropped
            [0.0, 0.0, 39.0, 19.0],       // [0, 0, 19.5, 9.5]: IoU 100 / 215.25 with gt 0
            [40.0, 40.0, 78.0, 78.0],     // gt 1 exactly
            [20.0, 20.0, 8.0, 60.0],      // x2 - x1 + 1 = -5: dropped
            [100.0, 100.0, 110.0, 110.0], // apart: IoU 0
            [0.0, 0.0, 20.0, 20.0],       // [0, 0, 10, 10]: IoU 100 / 121 with gt 0
            [122.0, 122.0, 156.0, 156.0], // inside the crowd box: IoU 324 / 400
        ];
        let previous = [1.0, 0.3, 0.8, 0.2, 0.0, 0.55, 0.9];
        let switches = LabelSwitches {
            is_cls_agnostic: true,
            cascade_max_overlap: Some(&previous),
        };
        let out = generate_proposal_labels_with(
            &cfg,
            switches,
            &proposals,
            &gt,
            &classes,
            &crowd,
            [200.0, 200.0, 2.0],
            &mut Rng::from_state(0),
        );
        // Every foreground (gt 0, gt 1, proposals 2, 5, 6), then every
        // background (proposals 1, 4); the crowd box is no candidate.
        assert_eq!(out.labels, [3, 1, 1, 3, 2, 0, 0]);
        assert_eq!(out.foreground, 5);
        assert_eq!(
            out.rois,
            [
                [0.0, 0.0, 18.0, 18.0],
                [40.0, 40.0, 78.0, 78.0],
                proposals[2],
                proposals[5],
                proposals[6],
                proposals[1],
                proposals[4],
            ]
        );
        let want_overlap = [1.0, 1.0, 1.0, 100.0 / 121.0, 0.81, 100.0 / 215.25, 0.0];
        for (g, w) in out.max_overlap.iter().zip(want_overlap) {
            assert!((g - w).abs() < 1e-6, "{:?}", out.max_overlap);
        }
        // Targets at columns 4..8 of 8 whatever the class. Proposal 5 onto
        // gt 0: centres 5.5 and 5, widths 11 and 10, over [0.05, 0.05, 0.1, 0.1].
        let (dxy, dwh) = (-0.5 / 11.0 / 0.05, (10.0f32 / 11.0).ln() / 0.1);
        // Proposal 6 onto the crowd box: same centre, widths 18 and 20.
        let crowd_dwh = (20.0f32 / 18.0).ln() / 0.1;
        let mut want = vec![0.0; 7 * 8];
        want[3 * 8 + 4..3 * 8 + 8].copy_from_slice(&[dxy, dxy, dwh, dwh]);
        want[4 * 8 + 4..4 * 8 + 8].copy_from_slice(&[0.0, 0.0, crowd_dwh, crowd_dwh]);
        for (i, (g, w)) in out.bbox_targets.iter().zip(&want).enumerate() {
            assert!((g - w).abs() < 1e-5, "target {i}: {g} vs {w}");
        }
        for (row, weights) in out.bbox_inside_weights.chunks_exact(8).enumerate() {
            let fg = if row < 5 { 1.0 } else { 0.0 };
            assert_eq!(weights, [0.0, 0.0, 0.0, 0.0, fg, fg, fg, fg], "row {row}");
        }

        // Nothing left after the filter: one zero box stands in, background
        // at IoU 1 / 100 with gt 0.
        let all_seen = [1.0; 7];
        let out = generate_proposal_labels_with(
            &cfg,
            LabelSwitches {
                cascade_max_overlap: Some(&all_seen),
                ..switches
            },
            &proposals,
            &gt,
            &classes,
            &crowd,
            [200.0, 200.0, 2.0],
            &mut Rng::from_state(0),
        );
        assert_eq!(out.labels, [3, 1, 0]);
        assert_eq!(out.rois[2], [0.0; 4]);
        assert_eq!(out.max_overlap, [1.0, 1.0, 0.01]);
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

        /// A cascade stage keeps every candidate its thresholds label and
        /// nothing else: each RoI is a (non-crowd) ground-truth box or a
        /// proposal of some area not fully on a box before; foreground
        /// exactly where the best overlap reaches `fg_thresh`, background
        /// below `bg_thresh_hi`; class-agnostic targets; no draws.
        #[test]
        fn a_cascade_stage_keeps_what_its_thresholds_label(
            proposals in boxes(1..40),
            gt in boxes(1..5),
            previous in prop::collection::vec(prop_oneof![Just(1.0f32), 0.0f32..1.0], 40),
            flip in prop::collection::vec(any::<bool>(), 40),
            seed in any::<u64>(),
        ) {
            let classes: Vec<i32> = (0..gt.len()).map(|i| 1 + 7 * i as i32).collect();
            let crowd: Vec<bool> = (0..gt.len()).map(|i| i == 3).collect();
            // Some proposals turned inside out (x1 > x2 + 1).
            let proposals: Vec<BoxXyxy> = proposals
                .iter()
                .zip(&flip)
                .map(|(b, &f)| if f && b[2] - b[0] > 3.0 { [b[2], b[1], b[0], b[3]] } else { *b })
                .collect();
            let previous = &previous[..proposals.len()];
            let cfg = BBoxAssignerConfig { fg_thresh: 0.6, bg_thresh_hi: 0.6, class_nums: 2, ..config(true) };
            let switches = LabelSwitches { is_cls_agnostic: true, cascade_max_overlap: Some(previous) };
            let run = |seed| generate_proposal_labels_with(&cfg, switches, &proposals, &gt, &classes, &crowd, [200.0, 200.0, 1.0], &mut Rng::from_state(seed));
            let out = run(seed);
            prop_assert_eq!(&out, &run(seed.wrapping_add(1)));
            let r = out.rois.len();
            prop_assert_eq!(out.max_overlap.len(), r);
            for (row, (roi, &label)) in out.rois.iter().zip(&out.labels).enumerate() {
                let is_gt = gt.iter().zip(&crowd).any(|(g, &c)| g == roi && !c);
                let kept = proposals.iter().zip(previous).any(|(p, &o)| {
                    p == roi && o < 1.0 && p[2] - p[0] + 1.0 > 0.0 && p[3] - p[1] + 1.0 > 0.0
                });
                prop_assert!(is_gt || kept || *roi == [0.0; 4], "{roi:?}");
                let overlap = out.max_overlap[row];
                prop_assert_eq!(label > 0, row < out.foreground);
                prop_assert_eq!(label > 0, overlap >= cfg.fg_thresh, "{} at {}", label, overlap);
                if label == 0 {
                    prop_assert!(overlap < cfg.bg_thresh_hi);
                }
                let weights = &out.bbox_inside_weights[row * 8..(row + 1) * 8];
                let on = if label > 0 { 1.0 } else { 0.0 };
                prop_assert_eq!(weights, &[0.0, 0.0, 0.0, 0.0, on, on, on, on][..]);
            }
            for (g, &c) in gt.iter().zip(&crowd) {
                prop_assert_eq!(out.rois.contains(g), !c || proposals.iter().zip(previous).any(|(p, &o)| p == g && o < 1.0));
            }
            let candidates = gt.len() - crowd.iter().filter(|&&c| c).count()
                + proposals.iter().zip(previous).filter(|(p, &o)| o < 1.0 && p[2] - p[0] + 1.0 > 0.0).count().max(1);
            prop_assert!(r <= candidates);
        }
    }
}
