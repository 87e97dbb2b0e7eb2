//! Paddle's `rpn_target_assign` operator for one image: which anchors the
//! RPN is trained on, their labels (object or not) and, for the objects,
//! the box regression targets.
//!
//! What the operator does, in order (Paddle 1.8, `rpn_target_assign_op.cc`):
//! 1. keeps the anchors inside the resized image by `straddle_thresh`
//!    (`x1, y1 >= -t`, `x2 < width + t`, `y2 < height + t`; all anchors
//!    when `t < 0`);
//! 2. drops the crowd boxes and scales the others by `im_info`'s scale (the
//!    reader's boxes are in original-image pixels, the anchors in resized
//!    ones);
//! 3. foreground candidates: anchors overlapping some box by at least
//!    `positive_overlap`, and for every box the anchors whose overlap with
//!    it is within 1e-5 of its best (even when that best is below
//!    `negative_overlap`); at most `batch_size_per_im * fg_fraction` of
//!    them are kept (a keyed random draw, see [`sample_key`], or the first
//!    ones);
//! 4. background candidates: anchors overlapping every box by less than
//!    `negative_overlap`; `batch_size_per_im` minus the kept foreground are
//!    kept the same way;
//! 5. a kept background anchor that was also kept as foreground (a box's
//!    best anchor that overlaps it by less than `negative_overlap`) ends up
//!    background: Paddle writes the labels in that order. It still emits a
//!    regression row for it (a copy of the first foreground's, with inside
//!    weight 0, so it adds nothing to the loss): that row is left out here;
//! 6. foreground and background are each listed in anchor order; the
//!    foreground anchors' targets are `BoxToDelta` of the anchor to its best
//!    box (first best on ties), without weights.

use crate::box_coder::{box_to_delta, BoxXyxy};
use crate::rcnn::bbox_overlaps::bbox_overlap;
use crate::rcnn::RpnTargetConfig;

/// `ImInfo` of one image: the resized image's height and width, and the
/// scale from the original image to it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImInfo {
    pub height: f32,
    pub width: f32,
    pub scale: f32,
}

/// The sampled anchors of one image, as indices into its anchors. Paddle's
/// `ScoreIndex` is `fg` then `bg` (`TargetLabel` 1 then 0), its
/// `LocationIndex`/`TargetBBox` with inside weight 1 are `fg`/`fg_deltas`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RpnTargets {
    /// Foreground (label 1) anchors, ascending.
    pub fg: Vec<usize>,
    /// Their regression targets, one per `fg` entry.
    pub fg_deltas: Vec<[f32; 4]>,
    /// Background (label 0) anchors, ascending.
    pub bg: Vec<usize>,
}

/// Paddle's equality tolerance between an overlap and a box's best overlap.
const BEST_OVERLAP_EPSILON: f32 = 1e-5;

/// Which draw samples an image's anchors when `use_random`: the step's
/// seed and the image's place in the batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Draw {
    pub seed: u64,
    pub image: u32,
}

/// The draws of [`sample_key`]: the foreground's and the background's are
/// independent.
pub const FOREGROUND_DRAW: u32 = 0;
pub const BACKGROUND_DRAW: u32 = 1;

/// The random key of anchor `anchor` in draw `which` (foreground or
/// background) of `draw`: splitmix64's finaliser of the four mixed
/// together, the high 32 bits. The candidates of the smallest keys (ties
/// by anchor index) are kept, a uniform random subset that a device draws
/// the same way without a sequential generator. The device crate has the
/// same function (`rpn_targets::sample_key`), tested against this one.
pub fn sample_key(draw: Draw, which: u32, anchor: u32) -> u32 {
    let lane = (draw.image as u64) << 33 | (which as u64) << 32 | anchor as u64;
    let mut z = draw.seed ^ lane.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    ((z ^ (z >> 31)) >> 32) as u32
}

/// The targets of one image whose anchors are `anchors` (all levels'),
/// with ground truth `gt_boxes` in original-image pixels and `is_crowd`
/// beside them. `draw` keys the samples when `config.use_random`.
pub fn rpn_target_assign(
    anchors: &[BoxXyxy],
    gt_boxes: &[BoxXyxy],
    is_crowd: &[bool],
    im_info: ImInfo,
    config: &RpnTargetConfig,
    draw: Draw,
) -> RpnTargets {
    assert_eq!(
        gt_boxes.len(),
        is_crowd.len(),
        "rpn_target_assign: one is_crowd flag per gt box"
    );
    let t = config.straddle_thresh;
    let inside: Vec<usize> = (0..anchors.len())
        .filter(|&i| {
            let a = &anchors[i];
            t < 0.0
                || (a[0] >= -t
                    && a[1] >= -t
                    && a[2] < im_info.width + t
                    && a[3] < im_info.height + t)
        })
        .collect();
    let gts: Vec<BoxXyxy> = gt_boxes
        .iter()
        .zip(is_crowd)
        .filter(|(_, &crowd)| !crowd)
        .map(|(b, _)| b.map(|v| v * im_info.scale))
        .collect();

    let matches = match_anchors(anchors, &inside, &gts);
    let mut fg_candidates: Vec<usize> = (0..inside.len())
        .filter(|&r| matches[r].is_foreground(config.positive_overlap))
        .collect();
    // A fraction or a batch of 0 turns the sampling off (all candidates).
    let sampling = config.fg_fraction > 0.0 && config.batch_size_per_im > 0;
    if sampling {
        let fg_quota = (config.fg_fraction * config.batch_size_per_im as f32) as usize;
        let key = config
            .use_random
            .then_some((draw, FOREGROUND_DRAW, &inside[..]));
        sample(&mut fg_candidates, fg_quota, key);
    }
    // -1 ignored, 0 background, 1 foreground, per inside anchor.
    let mut label = vec![-1i8; inside.len()];
    for &r in &fg_candidates {
        label[r] = 1;
    }
    let mut bg_candidates: Vec<usize> = (0..inside.len())
        .filter(|&r| matches[r].best_overlap < config.negative_overlap)
        .collect();
    if sampling {
        let bg_quota = config.batch_size_per_im.saturating_sub(fg_candidates.len());
        let key = config
            .use_random
            .then_some((draw, BACKGROUND_DRAW, &inside[..]));
        sample(&mut bg_candidates, bg_quota, key);
    }
    for &r in &bg_candidates {
        label[r] = 0;
    }

    let mut targets = RpnTargets::default();
    for (r, &l) in label.iter().enumerate() {
        match l {
            1 => {
                targets.fg.push(inside[r]);
                targets.fg_deltas.push(box_to_delta(
                    &anchors[inside[r]],
                    &gts[matches[r].best_gt],
                    &[1.0; 4],
                ));
            }
            0 => targets.bg.push(inside[r]),
            _ => {}
        }
    }
    targets
}

/// How one anchor overlaps the ground truth, as Paddle's target operators
/// (`rpn_target_assign`, `retinanet_target_assign`) both see it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct AnchorMatch {
    /// Its best overlap with any box; the lowest float without boxes
    /// (Eigen's empty maximum), which makes every anchor background.
    pub best_overlap: f32,
    /// The box of that overlap (the first on ties).
    pub best_gt: usize,
    /// Whether it is one of some box's best anchors: its overlap with that
    /// box is within `BEST_OVERLAP_EPSILON` of the box's best, even when
    /// that best is below the negative threshold.
    pub best_for_a_box: bool,
}

impl AnchorMatch {
    /// Paddle's foreground rule: overlapping some box by `positive_overlap`,
    /// or one of a box's best anchors.
    pub fn is_foreground(&self, positive_overlap: f32) -> bool {
        self.best_overlap >= positive_overlap || self.best_for_a_box
    }
}

/// The matches of `anchors[i]` for each `i` in `which` with the boxes
/// `gts` (in the anchors' pixels), in `which`'s order.
pub(crate) fn match_anchors(
    anchors: &[BoxXyxy],
    which: &[usize],
    gts: &[BoxXyxy],
) -> Vec<AnchorMatch> {
    // Overlaps of the anchors (rows) with the boxes (columns).
    let overlaps: Vec<f32> = which
        .iter()
        .flat_map(|&i| gts.iter().map(move |g| bbox_overlap(&anchors[i], g)))
        .collect();
    let row = |r: usize| &overlaps[r * gts.len()..(r + 1) * gts.len()];
    let mut gt_max = vec![f32::MIN; gts.len()];
    for r in 0..which.len() {
        for (best, &v) in gt_max.iter_mut().zip(row(r)) {
            *best = best.max(v);
        }
    }
    (0..which.len())
        .map(|r| {
            let mut m = AnchorMatch {
                best_overlap: f32::MIN,
                best_gt: 0,
                best_for_a_box: false,
            };
            for (g, (&v, &best)) in row(r).iter().zip(&gt_max).enumerate() {
                if v > m.best_overlap {
                    m.best_overlap = v;
                    m.best_gt = g;
                }
                m.best_for_a_box |= (v - best).abs() < BEST_OVERLAP_EPSILON;
            }
            m
        })
        .collect()
}

/// Keeps `quota` of `candidates` (rows of `inside`, ascending): those of
/// the smallest keys (`sample_key` of the anchor `inside[r]` in draw
/// `which`, ties by anchor index) when `key` is given, else the first
/// ones. Either way the first ones of an order on the anchors, which a
/// device selects without sorting (in the order left here, which the
/// caller does not rely on).
///
/// Paddle's reservoir draws the slot of item `i` in `[0, i)` from a copy of
/// one `minstd_rand` made at every call, so its foreground and background
/// draws repeat each other; neither quirk is kept, only the distribution's
/// intent (every subset equally likely).
fn sample(candidates: &mut Vec<usize>, quota: usize, key: Option<(Draw, u32, &[usize])>) {
    if candidates.len() <= quota {
        return;
    }
    if let Some((draw, which, inside)) = key {
        candidates.sort_by_key(|&r| (sample_key(draw, which, inside[r] as u32), inside[r]));
    }
    candidates.truncate(quota);
}

/// The Paddle fixture's cases (`core/tests/fixtures/faster_rcnn/rpn_targets.py`)
/// as this module's inputs, for its parity test and `rpn_loss`'s.
#[cfg(test)]
pub(crate) mod paddle_fixture {
    use super::*;
    use crate::fixtures::{floats, quads};
    use crate::models::rpn_head::AnchorGeneratorSpec;
    use crate::rcnn::anchors::anchor_generator;

    /// One case: the batch's images and the settings.
    pub(crate) struct PaddleCase {
        pub anchors: Vec<BoxXyxy>,
        pub gt_boxes: Vec<Vec<BoxXyxy>>,
        pub is_crowd: Vec<Vec<bool>>,
        pub im_info: Vec<ImInfo>,
        pub config: RpnTargetConfig,
    }

    pub(crate) fn paddle_case(case: &serde_json::Value) -> PaddleCase {
        let levels = case["levels"].as_array().expect("levels");
        let mut anchors = Vec::new();
        for level in levels {
            let generator = AnchorGeneratorSpec {
                anchor_sizes: floats(&level["anchor_sizes"]),
                stride: [level["stride"].as_f64().expect("stride") as f32; 2],
                ..AnchorGeneratorSpec::faster_rcnn()
            };
            let dim = |k: &str| level[k].as_u64().expect("a size") as usize;
            anchors.extend(anchor_generator(&generator, dim("height"), dim("width")).boxes);
        }
        let assign = &case["rpn_target_assign"];
        let number = |k: &str| assign[k].as_f64().expect("a number") as f32;
        PaddleCase {
            anchors,
            gt_boxes: case["gt_boxes"]
                .as_array()
                .expect("gt_boxes")
                .iter()
                .map(quads)
                .collect(),
            is_crowd: case["is_crowd"]
                .as_array()
                .expect("is_crowd")
                .iter()
                .map(|c| floats(c).iter().map(|&v| v != 0.0).collect())
                .collect(),
            im_info: case["im_info"]
                .as_array()
                .expect("im_info")
                .iter()
                .map(|v| {
                    let v = floats(v);
                    ImInfo {
                        height: v[0],
                        width: v[1],
                        scale: v[2],
                    }
                })
                .collect(),
            config: RpnTargetConfig {
                batch_size_per_im: number("rpn_batch_size_per_im") as usize,
                fg_fraction: number("rpn_fg_fraction"),
                positive_overlap: number("rpn_positive_overlap"),
                negative_overlap: number("rpn_negative_overlap"),
                straddle_thresh: number("rpn_straddle_thresh"),
                use_random: false,
            },
        }
    }

    impl PaddleCase {
        pub fn targets(&self) -> Vec<RpnTargets> {
            (0..self.gt_boxes.len())
                .map(|i| {
                    rpn_target_assign(
                        &self.anchors,
                        &self.gt_boxes[i],
                        &self.is_crowd[i],
                        self.im_info[i],
                        &self.config,
                        Draw {
                            seed: 0,
                            image: i as u32,
                        },
                    )
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::paddle_fixture::paddle_case;
    use super::*;
    use crate::fixtures::{quads, read};

    fn config(batch: usize, fg_fraction: f32, use_random: bool) -> RpnTargetConfig {
        RpnTargetConfig {
            batch_size_per_im: batch,
            fg_fraction,
            straddle_thresh: -1.0,
            use_random,
            ..RpnTargetConfig::default()
        }
    }

    /// A 10 x 10 grid of 10-pixel anchors (one per cell).
    fn grid() -> Vec<BoxXyxy> {
        (0..100)
            .map(|i| {
                let (x, y) = ((i % 10) as f32 * 10.0, (i / 10) as f32 * 10.0);
                [x, y, x + 9.0, y + 9.0]
            })
            .collect()
    }

    const DRAW: Draw = Draw { seed: 0, image: 0 };

    const FULL: ImInfo = ImInfo {
        height: 100.0,
        width: 100.0,
        scale: 1.0,
    };

    #[test]
    fn boxes_on_anchors_are_foreground_and_crowds_are_ignored() {
        let anchors = grid();
        // Anchor 11 exactly; a crowd box on anchor 55 must not make it
        // foreground nor keep its neighbours from being background.
        let gts = [[10.0, 10.0, 19.0, 19.0], [50.0, 50.0, 59.0, 59.0]];
        let t = rpn_target_assign(
            &anchors,
            &gts,
            &[false, true],
            FULL,
            &config(256, 0.5, false),
            DRAW,
        );
        assert_eq!(t.fg, [11]);
        assert_eq!(t.fg_deltas, [[0.0; 4]]);
        assert_eq!(t.bg.len(), 99);
        assert!(t.bg.contains(&55));
    }

    #[test]
    fn gt_boxes_are_scaled_into_the_resized_image() {
        let anchors = grid();
        // Original pixels: the box becomes anchor 22 at scale 2.
        let gts = [[10.0, 10.0, 14.5, 14.5]];
        let info = ImInfo { scale: 2.0, ..FULL };
        let t = rpn_target_assign(
            &anchors,
            &gts,
            &[false],
            info,
            &config(256, 0.5, false),
            DRAW,
        );
        assert_eq!(t.fg, [22]);
    }

    #[test]
    fn straddling_anchors_are_ignored_unless_the_threshold_is_negative() {
        let anchors = grid();
        let gts = [[10.0, 10.0, 19.0, 19.0]];
        // 85 x 85 image: anchors whose x2 or y2 (89, 99) reach 85 go.
        let info = ImInfo {
            height: 85.0,
            width: 85.0,
            scale: 1.0,
        };
        let run = |straddle_thresh: f32| {
            let cfg = RpnTargetConfig {
                straddle_thresh,
                ..config(256, 0.5, false)
            };
            rpn_target_assign(&anchors, &gts, &[false], info, &cfg, DRAW)
        };
        let t = run(0.0);
        assert_eq!(t.fg.len() + t.bg.len(), 64);
        assert!(t.bg.iter().all(|&i| i % 10 < 8 && i / 10 < 8));
        // 5 pixels of slack keeps x2 = 89, not 99.
        let t = run(5.0);
        assert_eq!(t.fg.len() + t.bg.len(), 81);
        let t = run(-1.0);
        assert_eq!(t.fg.len() + t.bg.len(), 100);
    }

    /// A box below `negative_overlap` with every anchor: its best anchor is
    /// first foreground, then background (Paddle's order), and the
    /// background quota counts it as foreground.
    #[test]
    fn a_best_anchor_below_the_negative_overlap_ends_up_background() {
        let anchors = grid();
        let gts = [[12.0, 12.0, 14.0, 14.0]];
        let t = rpn_target_assign(
            &anchors,
            &gts,
            &[false],
            FULL,
            &config(20, 0.5, false),
            DRAW,
        );
        assert!(t.fg.is_empty());
        // 20 - 1 background kept: the first 19 anchors, 11 among them.
        assert_eq!(t.bg, (0..19).collect::<Vec<_>>());
    }

    #[test]
    fn without_boxes_every_anchor_is_background() {
        let anchors = grid();
        let t = rpn_target_assign(&anchors, &[], &[], FULL, &config(256, 0.5, false), DRAW);
        assert!(t.fg.is_empty());
        assert_eq!(t.bg.len(), 100);
    }

    /// Random sampling keeps the deterministic counts, draws a different
    /// subset per seed (the same for the same seed), and picks every
    /// candidate about equally often.
    #[test]
    fn random_sampling_is_uniform_over_the_candidates() {
        let anchors = grid();
        // Ten boxes on ten anchors (10 foreground candidates, quota 4).
        let gts: Vec<BoxXyxy> = (0..10).map(|k| anchors[k * 11]).collect();
        let crowd = vec![false; gts.len()];
        let cfg = config(8, 0.5, true);
        let draw = |seed: u64| {
            let draw = Draw { seed, image: 0 };
            rpn_target_assign(&anchors, &gts, &crowd, FULL, &cfg, draw)
        };
        let fg_candidates: Vec<usize> = (0..10).map(|k| k * 11).collect();
        let mut fg_count = [0usize; 100];
        let mut bg_count = [0usize; 100];
        let trials = 2000;
        for seed in 0..trials {
            let t = draw(seed);
            assert_eq!((t.fg.len(), t.bg.len()), (4, 4));
            assert!(t.fg.iter().all(|i| fg_candidates.contains(i)));
            assert!(t.fg.windows(2).all(|w| w[0] < w[1]));
            t.fg.iter().for_each(|&i| fg_count[i] += 1);
            t.bg.iter().for_each(|&i| bg_count[i] += 1);
        }
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        // Each of 10 candidates kept with probability 4/10: 800 of 2000,
        // binomial sd 22; each of 90 background ones with 4/90: 89, sd 9.
        for &i in &fg_candidates {
            assert!(
                (fg_count[i] as f64 - 800.0).abs() < 5.0 * 22.0,
                "{fg_count:?}"
            );
        }
        for i in (0..100).filter(|i| !fg_candidates.contains(i)) {
            assert!(
                (bg_count[i] as f64 - 88.9).abs() < 5.0 * 9.2,
                "{bg_count:?}"
            );
        }
    }

    /// The keyed draw keeps exactly `min(quota, candidates)` of the
    /// candidates, the same ones for the same seed and image, others for
    /// another seed or image; without `use_random` the first ones.
    #[test]
    fn keyed_sampling_keeps_the_quota_and_follows_the_seed() {
        let inside: Vec<usize> = (0..300).map(|i| 3 * i + 1).collect();
        let keep = |count: usize, quota: usize, key: Option<(Draw, u32, &[usize])>| {
            let mut candidates: Vec<usize> = (0..count).map(|r| 2 * r).collect();
            sample(&mut candidates, quota, key);
            candidates.sort_unstable();
            candidates
        };
        let draw = |seed: u64, image: u32| Draw { seed, image };
        for (count, quota) in [(0, 5), (3, 5), (5, 5), (40, 5), (150, 128), (150, 0)] {
            let all: Vec<usize> = (0..count).map(|r| 2 * r).collect();
            let one = keep(count, quota, Some((draw(9, 0), FOREGROUND_DRAW, &inside)));
            assert_eq!(one.len(), quota.min(count), "{count} {quota}");
            assert!(one.iter().all(|r| all.contains(r)));
            assert!(one.windows(2).all(|w| w[0] < w[1]), "no candidate twice");
            let again = keep(count, quota, Some((draw(9, 0), FOREGROUND_DRAW, &inside)));
            assert_eq!(one, again);
            assert_eq!(keep(count, quota, None), all[..quota.min(count)]);
            if count > quota && quota > 0 {
                for other in [
                    (draw(10, 0), FOREGROUND_DRAW),
                    (draw(9, 1), FOREGROUND_DRAW),
                    (draw(9, 0), BACKGROUND_DRAW),
                ] {
                    let key = Some((other.0, other.1, &inside[..]));
                    assert_ne!(one, keep(count, quota, key), "{other:?}");
                }
            }
        }
    }

    /// Paddle's `ScoreIndex`/`TargetLabel` equal the images' `fg ++ bg`
    /// (offset by the image's first anchor), its `LocationIndex` and
    /// `TargetBBox` rows of inside weight 1 equal `fg` and `fg_deltas`.
    #[test]
    fn equals_paddles_rpn_target_assign() {
        let fixture = read("faster_rcnn/rpn_targets.json");
        for name in ["c4", "c4_keep_all", "fpn"] {
            let json = &fixture[name];
            let case = paddle_case(json);
            let targets = case.targets();
            let per_image = case.anchors.len();
            let ints = |k: &str| -> Vec<usize> {
                json[k]
                    .as_array()
                    .expect(k)
                    .iter()
                    .map(|v| v.as_u64().expect("an index") as usize)
                    .collect()
            };
            let mut score_index = Vec::new();
            let mut labels = Vec::new();
            let mut loc_index = Vec::new();
            let mut deltas: Vec<[f32; 4]> = Vec::new();
            for (i, t) in targets.iter().enumerate() {
                score_index.extend(t.fg.iter().chain(&t.bg).map(|&a| a + i * per_image));
                labels.extend(t.fg.iter().map(|_| 1).chain(t.bg.iter().map(|_| 0)));
                loc_index.extend(t.fg.iter().map(|&a| a + i * per_image));
                deltas.extend(&t.fg_deltas);
            }
            assert_eq!(score_index, ints("score_index"), "{name}");
            assert_eq!(labels, ints("target_label"), "{name}");
            let weights = quads(&json["bbox_inside_weight"]);
            let paddle_loc: Vec<usize> = ints("location_index")
                .into_iter()
                .zip(&weights)
                .filter(|(_, w)| w[0] == 1.0)
                .map(|(a, _)| a)
                .collect();
            assert_eq!(loc_index, paddle_loc, "{name}");
            let paddle_deltas: Vec<[f32; 4]> = quads(&json["target_bbox"])
                .into_iter()
                .zip(&weights)
                .filter(|(_, w)| w[0] == 1.0)
                .map(|(d, _)| d)
                .collect();
            for (got, want) in deltas.iter().zip(&paddle_deltas) {
                for k in 0..4 {
                    assert!(
                        (got[k] - want[k]).abs() <= 1e-5 * (1.0 + want[k].abs()),
                        "{name}: {got:?} vs {want:?}"
                    );
                }
            }
        }
    }
}
