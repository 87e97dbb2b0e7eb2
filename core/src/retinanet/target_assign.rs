//! Paddle's `retinanet_target_assign` operator for one image: every anchor's
//! class target (ignored, background or a ground-truth class) and, for the
//! foreground, the box regression targets.
//!
//! It is `rpn_target_assign` (`crate::rcnn::rpn_target`, the same source
//! file in Paddle 1.8, `rpn_target_assign_op.cc`) without sampling or
//! straddle filtering:
//! 1. the boxes are scaled by `im_info`'s scale (the reader's boxes are in
//!    original-image pixels, the anchors in resized ones); every anchor is
//!    kept, whatever it straddles;
//! 2. foreground: anchors overlapping some box by at least
//!    `positive_overlap`, and for every box the anchors within 1e-5 of its
//!    best overlap; each is labelled with the class of its best box (first
//!    on ties);
//! 3. background: anchors overlapping every box by less than
//!    `negative_overlap`, written after the foreground, so a box's best
//!    anchor below `negative_overlap` ends up background. For each such
//!    "fake foreground" anchor Paddle emits a regression row first (before
//!    the real ones): the first foreground candidate's anchor and target
//!    with inside weight 0, which adds nothing to the box loss but counts in
//!    `ForegroundNumber`;
//! 4. the rest are ignored: `retina_head.get_loss` gathers only the
//!    foreground and background anchors' logits (`ScoreIndex`), so they add
//!    neither loss nor gradient.
//!
//! `ForegroundNumber` is the number of regression rows plus one (fake ones
//! included): `get_loss` sums it over the batch and divides both losses by
//! the sum.

use crate::box_coder::{box_to_delta, BoxXyxy};
use crate::rcnn::rpn_target::match_anchors;
use crate::rcnn::ImInfo;
use crate::retinanet::RetinaTargetConfig;

/// The targets of one image's anchors (all levels concatenated, P3 first).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RetinaTargets {
    /// Per anchor: -1 ignored, 0 background, c >= 1 foreground of
    /// ground-truth class c.
    pub labels: Vec<i32>,
    /// The anchors of Paddle's `LocationIndex`, in its order: one row per
    /// fake foreground anchor (each the first foreground candidate), then
    /// the foreground anchors ascending.
    pub fg_anchors: Vec<usize>,
    /// `TargetBBox`: `BoxToDelta` of each row's anchor to its best box.
    pub bbox_targets: Vec<[f32; 4]>,
    /// `BBoxInsideWeight`: 0 for the fake rows, 1 for the others.
    pub bbox_inside_weights: Vec<[f32; 4]>,
    /// Paddle's `ForegroundNumber`: the rows of `fg_anchors` plus one.
    pub fg_num: f32,
}

/// The targets of one image with anchors `boxes` (all levels'), ground
/// truth `gt_boxes` (original-image pixels) of classes `gt_classes`
/// (1-based).
pub fn retinanet_target_assign(
    boxes: &[BoxXyxy],
    gt_boxes: &[BoxXyxy],
    gt_classes: &[i32],
    im_info: ImInfo,
    config: &RetinaTargetConfig,
) -> RetinaTargets {
    assert_eq!(
        gt_boxes.len(),
        gt_classes.len(),
        "retinanet_target_assign: one class per gt box"
    );
    let gts: Vec<BoxXyxy> = gt_boxes
        .iter()
        .map(|b| b.map(|v| v * im_info.scale))
        .collect();
    let all: Vec<usize> = (0..boxes.len()).collect();
    let matches = match_anchors(boxes, &all, &gts);

    // Paddle labels the foreground candidates, then overwrites the
    // background ones with 0.
    let candidate = |i: usize| matches[i].is_foreground(config.positive_overlap);
    let background = |i: usize| matches[i].best_overlap < config.negative_overlap;
    let labels: Vec<i32> = all
        .iter()
        .map(|&i| match (background(i), candidate(i)) {
            (true, _) => 0,
            (false, true) => gt_classes[matches[i].best_gt],
            (false, false) => -1,
        })
        .collect();
    let fakes = all
        .iter()
        .filter(|&&i| candidate(i) && background(i))
        .count();
    let first_candidate = all.iter().copied().find(|&i| candidate(i));
    let fake_rows = first_candidate
        .into_iter()
        .flat_map(|first| std::iter::repeat_n((first, 0.0), fakes));
    let real_rows = all
        .iter()
        .filter(|&&i| candidate(i) && !background(i))
        .map(|&i| (i, 1.0));
    let mut targets = RetinaTargets::default();
    for (anchor, weight) in fake_rows.chain(real_rows) {
        targets.fg_anchors.push(anchor);
        targets.bbox_targets.push(box_to_delta(
            &boxes[anchor],
            &gts[matches[anchor].best_gt],
            &[1.0; 4],
        ));
        targets.bbox_inside_weights.push([weight; 4]);
    }
    targets.fg_num = (targets.fg_anchors.len() + 1) as f32;
    targets.labels = labels;
    targets
}

#[cfg(test)]
pub(crate) mod paddle_fixture {
    //! The Paddle fixture (`core/tests/fixtures/retinanet/retina_loss.py`)
    //! as this module's inputs, for its parity test and the losses'.
    use super::*;
    use crate::fixtures::{floats, quads, read};
    use crate::models::rpn_head::AnchorGeneratorSpec;
    use crate::rcnn::{anchor_generator, Anchors};

    pub(crate) struct PaddleCase {
        pub json: serde_json::Value,
        pub anchors: Anchors,
        /// `[height, width]` of each level.
        pub sizes: Vec<[usize; 2]>,
        pub anchors_per_cell: usize,
        pub classes: usize,
        pub config: RetinaTargetConfig,
        pub gamma: f32,
        pub alpha: f32,
        pub sigma: f32,
    }

    fn number(json: &serde_json::Value, key: &str) -> f32 {
        json[key].as_f64().expect(key) as f32
    }

    /// The anchors as `RetinaHead._anchor_generate` makes them, from the
    /// fixture's settings.
    pub(crate) fn paddle_case() -> PaddleCase {
        let json = read("retinanet/retina_loss.json");
        let scales = number(&json, "scales_per_octave") as usize;
        let mut anchors = Anchors {
            boxes: Vec::new(),
            variances: Vec::new(),
        };
        let mut sizes = Vec::new();
        for level in json["levels"].as_array().expect("levels") {
            let stride = 2f32.powi(number(level, "level") as i32);
            let spec = AnchorGeneratorSpec {
                anchor_sizes: (0..scales)
                    .map(|o| {
                        let octave = 2f64.powf(o as f64 / scales as f64);
                        (stride as f64 * octave * number(&json, "base_scale") as f64) as f32
                    })
                    .collect(),
                aspect_ratios: floats(&json["aspect_ratios"]),
                stride: [stride; 2],
                variance: [1.0; 4],
            };
            let size = [
                number(level, "height") as usize,
                number(level, "width") as usize,
            ];
            let generated = anchor_generator(&spec, size[0], size[1]);
            anchors.boxes.extend(generated.boxes);
            anchors.variances.extend(generated.variances);
            sizes.push(size);
        }
        PaddleCase {
            anchors,
            sizes,
            anchors_per_cell: number(&json, "anchors_per_cell") as usize,
            classes: number(&json, "num_classes") as usize - 1,
            config: RetinaTargetConfig {
                positive_overlap: number(&json, "positive_overlap"),
                negative_overlap: number(&json, "negative_overlap"),
            },
            gamma: number(&json, "gamma"),
            alpha: number(&json, "alpha"),
            sigma: number(&json, "sigma"),
            json,
        }
    }

    impl PaddleCase {
        pub fn images(&self) -> usize {
            number(&self.json, "images") as usize
        }

        pub fn targets(&self) -> Vec<RetinaTargets> {
            (0..self.images())
                .map(|n| {
                    let info = floats(&self.json["im_info"][n]);
                    let classes: Vec<i32> = floats(&self.json["gt_labels"][n])
                        .iter()
                        .map(|&c| c as i32)
                        .collect();
                    retinanet_target_assign(
                        &self.anchors.boxes,
                        &quads(&self.json["gt_boxes"][n]),
                        &classes,
                        ImInfo {
                            height: info[0],
                            width: info[1],
                            scale: info[2],
                        },
                        &self.config,
                    )
                })
                .collect()
        }

        /// One level's values under `key` (`cls`, `box`, `grad_cls`, ...).
        pub fn level_values(&self, level: usize, key: &str) -> Vec<f32> {
            floats(&self.json["levels"][level][key])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::paddle_fixture::paddle_case;
    use super::*;
    use crate::fixtures::{floats, quads};

    const CONFIG: RetinaTargetConfig = RetinaTargetConfig {
        positive_overlap: 0.5,
        negative_overlap: 0.4,
    };

    const FULL: ImInfo = ImInfo {
        height: 100.0,
        width: 100.0,
        scale: 1.0,
    };

    /// A 10 x 10 grid of 10-pixel anchors (one per cell).
    fn grid() -> Vec<BoxXyxy> {
        (0..100)
            .map(|i| {
                let (x, y) = ((i % 10) as f32 * 10.0, (i / 10) as f32 * 10.0);
                [x, y, x + 9.0, y + 9.0]
            })
            .collect()
    }

    /// A box on an anchor makes it foreground of the box's class with a
    /// zero target, a box 3 pixels off its anchor (overlap 70/130) too;
    /// the boxes are scaled into the resized image.
    #[test]
    fn foreground_classes_and_targets() {
        let anchors = grid();
        // At scale 2: anchor 11 exactly, and [53, 50, 62, 59] beside anchor 55.
        let gts = [[5.0, 5.0, 9.5, 9.5], [26.5, 25.0, 31.0, 29.5]];
        let info = ImInfo { scale: 2.0, ..FULL };
        let t = retinanet_target_assign(&anchors, &gts, &[3, 1], info, &CONFIG);
        assert_eq!((t.labels[11], t.labels[55]), (3, 1));
        assert_eq!(t.fg_anchors, [11, 55]);
        assert_eq!(t.bbox_targets[0], [0.0; 4]);
        assert_eq!(t.bbox_targets[1], [0.3, 0.0, 0.0, 0.0]);
        assert_eq!(t.bbox_inside_weights, [[1.0; 4]; 2]);
        assert_eq!(t.fg_num, 3.0);
        assert_eq!(t.labels.iter().filter(|&&l| l == 0).count(), 98);
    }

    /// A box's best anchors below `negative_overlap` end up background,
    /// each leaving a weight-0 row of the first candidate before the real
    /// rows, counted in `fg_num`.
    #[test]
    fn fake_foreground_rows_come_first() {
        let anchors = grid();
        // Box 0 (13 x 10) overlaps anchor 0 by 100/130; box 1 straddles
        // anchors 22 and 23, 50/150 each: both its best, both below 0.4.
        let gts = [[0.0, 0.0, 12.0, 9.0], [25.0, 20.0, 34.0, 29.0]];
        let t = retinanet_target_assign(&anchors, &gts, &[2, 2], FULL, &CONFIG);
        assert_eq!((t.labels[0], t.labels[22], t.labels[23]), (2, 0, 0));
        assert_eq!(t.fg_anchors, [0, 0, 0]);
        assert_eq!(t.bbox_inside_weights, [[0.0; 4], [0.0; 4], [1.0; 4]]);
        assert_eq!(t.bbox_targets[0], t.bbox_targets[2]);
        assert_eq!(t.fg_num, 4.0);
    }

    /// A 19 x 10 box overlaps anchor 0 by 100/190 (foreground) and anchor 1
    /// by 90/200 (between the thresholds, not its best: ignored).
    #[test]
    fn an_overlap_between_the_thresholds_is_ignored() {
        let t = retinanet_target_assign(&grid(), &[[0.0, 0.0, 18.0, 9.0]], &[1], FULL, &CONFIG);
        assert_eq!(t.labels[..3], [1, -1, 0]);
        assert_eq!(t.fg_anchors, [0]);
    }

    #[test]
    fn without_boxes_every_anchor_is_background() {
        let t = retinanet_target_assign(&grid(), &[], &[], FULL, &CONFIG);
        assert!(t.labels.iter().all(|&l| l == 0));
        assert!(t.fg_anchors.is_empty());
        assert_eq!(t.fg_num, 1.0);
    }

    /// Paddle's outputs: `ScoreIndex`/`TargetLabel` are each image's labelled
    /// anchors (foreground ascending with their classes, then background
    /// ascending with 0), `LocationIndex`/`TargetBBox`/`BBoxInsideWeight`
    /// the regression rows, `ForegroundNumber` one per image; indices offset
    /// by the image's first anchor.
    #[test]
    fn equals_paddles_retinanet_target_assign() {
        let case = paddle_case();
        let json = &case.json;
        let per_image = case.anchors.boxes.len();
        let anchors_json: Vec<[f32; 4]> = (0..case.sizes.len())
            .flat_map(|l| quads(&json["levels"][l]["anchors"]))
            .collect();
        assert_eq!(case.anchors.boxes, anchors_json, "anchor_generator");
        let ints = |k: &str| -> Vec<i64> {
            json[k]
                .as_array()
                .expect(k)
                .iter()
                .map(|v| v.as_i64().expect("an integer"))
                .collect()
        };
        let targets = case.targets();
        let (mut score_index, mut labels, mut loc_index) = (Vec::new(), Vec::new(), Vec::new());
        let (mut deltas, mut weights, mut fg_num): (Vec<[f32; 4]>, Vec<[f32; 4]>, Vec<f32>) =
            (Vec::new(), Vec::new(), Vec::new());
        for (n, t) in targets.iter().enumerate() {
            let offset = (n * per_image) as i64;
            for wanted in [|l: i32| l >= 1, |l: i32| l == 0] {
                for (i, &l) in t.labels.iter().enumerate() {
                    if wanted(l) {
                        score_index.push(i as i64 + offset);
                        labels.push(l as i64);
                    }
                }
            }
            loc_index.extend(t.fg_anchors.iter().map(|&i| i as i64 + offset));
            deltas.extend(&t.bbox_targets);
            weights.extend(&t.bbox_inside_weights);
            fg_num.push(t.fg_num);
        }
        assert_eq!(score_index, ints("score_index"));
        assert_eq!(labels, ints("target_label"));
        assert_eq!(loc_index, ints("location_index"));
        assert_eq!(weights, quads(&json["bbox_inside_weight"]));
        assert_eq!(fg_num, floats(&json["foreground_number"]));
        let paddle_deltas = quads(&json["target_bbox"]);
        assert_eq!(deltas.len(), paddle_deltas.len());
        for (got, want) in deltas.iter().zip(&paddle_deltas) {
            for k in 0..4 {
                assert!(
                    (got[k] - want[k]).abs() <= 1e-5 * (1.0 + want[k].abs()),
                    "{got:?} vs {want:?}"
                );
            }
        }
        // The fixture has what it claims: ignored anchors and fake rows.
        assert!(targets[0].labels.contains(&-1));
        assert!(weights.iter().any(|w| w[0] == 0.0));
    }
}
