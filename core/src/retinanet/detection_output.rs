//! Paddle's `retinanet_detection_output` for one image, as
//! PaddleDetection's `RetinaHead.get_prediction` calls it on the head's
//! sigmoid scores, box deltas and anchors of each FPN level:
//! 1. per level, the (anchor, class) pairs scoring above `score_thresh`,
//!    best first (ties in anchor-then-class order), at most
//!    `pre_nms_top_n` of them; on the last (highest) level Paddle takes
//!    every pair scoring above 0 instead of `score_thresh`;
//! 2. each pair's anchor is decoded with that anchor's deltas (centre-size,
//!    variance 1, pixel boxes: width `x2 - x1 + 1`, as `box_coder`'s
//!    `decode`), divided by the image's scale and clipped to the original
//!    picture (`box_clip` on `im_info`);
//! 3. per class, the pairs of all levels (level by level, each in its
//!    rank order) are sorted by score (stably) and greedily suppressed
//!    (`greedy_nms`, with `nms_eta`'s adaptive threshold);
//! 4. the survivors of all classes are sorted by score (stably, so ties
//!    stay in class order), the best `detections_per_im` kept.
//!
//! Detections come in that score order, not grouped by class (unlike
//! `multiclass_nms`). Class `k` of the head's `K` (0-based, the dataset's
//! class `k`) is label `k + 1`, as `rcnn::bbox_head_detect` numbers the box
//! head's classes after the background; boxes are in the original
//! picture's pixels.
//!
//! Paddle's Python layer `fluid.layers.retinanet_detection_output` passes
//! the operator `nms_eta` 1 whatever it is given, so PaddleDetection never
//! adapts the threshold; the operator itself, and this function, apply
//! `nms_eta` as given (`retinanet_r50_fpn_1x.yml`'s is 1).

use crate::box_coder::{decode, BoxXyxy};
use crate::rcnn::box_clip::box_clip;
use crate::rcnn::ImInfo;
use crate::retinanet::RetinaOutputConfig;
use crate::yolo::{greedy_nms, Detection};

/// One image's detections from the head's outputs on each level (lowest
/// level first): `scores[l]` the sigmoid of the class logits in the head's
/// NCHW layout for this image, `[A*K, H_l, W_l]` (channel `a*K + k`),
/// `deltas[l]` the box output `[A*4, H_l, W_l]` (channel `a*4 + j`),
/// `level_sizes[l]` `[H_l, W_l]`, `anchors[l]` that level's anchors in
/// `rcnn::anchor_generator` order (`(h*W + w)*A + a`), `A` being
/// `anchors_per_cell`. `K` is read off the scores' size.
pub fn retinanet_detection_output(
    scores: &[&[f32]],
    deltas: &[&[f32]],
    level_sizes: &[[usize; 2]],
    anchors_per_cell: usize,
    anchors: &[&[BoxXyxy]],
    im_info: ImInfo,
    config: &RetinaOutputConfig,
) -> Vec<Detection> {
    let levels = level_sizes.len();
    assert!(
        scores.len() == levels && deltas.len() == levels && anchors.len() == levels,
        "retinanet_detection_output: one scores, deltas and anchors slice per level"
    );
    let [h0, w0] = level_sizes.first().copied().unwrap_or([0, 0]);
    let classes = scores
        .first()
        .map_or(0, |s| s.len() / (anchors_per_cell * h0 * w0).max(1));
    let im_info_row = [im_info.height, im_info.width, im_info.scale];

    // Each class's candidates over all levels, as (box, score).
    let mut per_class: Vec<Vec<(BoxXyxy, f32)>> = vec![Vec::new(); classes];
    let mut ranked: Vec<(f32, usize)> = Vec::new();
    for (l, &[height, width]) in level_sizes.iter().enumerate() {
        let cells = height * width;
        let pairs = cells * anchors_per_cell * classes;
        assert_eq!(
            scores[l].len(),
            pairs,
            "retinanet_detection_output: level {l}'s scores are [A*K, H, W]"
        );
        assert_eq!(
            deltas[l].len(),
            cells * anchors_per_cell * 4,
            "retinanet_detection_output: level {l}'s deltas are [A*4, H, W]"
        );
        assert_eq!(
            anchors[l].len(),
            cells * anchors_per_cell,
            "retinanet_detection_output: level {l} has H*W*A anchors"
        );
        let threshold = if l + 1 < levels {
            config.score_thresh
        } else {
            0.0
        };
        // Pair i = (cell * A + a) * K + k, Paddle's index into the
        // transposed [H*W*A, K] scores. The NCHW scores are read channel by
        // channel (contiguously); the sort below orders them by score and
        // then pair, so the order they are gathered in does not matter.
        ranked.clear();
        for (channel, plane) in scores[l].chunks_exact(cells.max(1)).enumerate() {
            let (a, k) = (channel / classes, channel % classes);
            for (cell, &score) in plane.iter().enumerate() {
                if score > threshold {
                    ranked.push((score, (cell * anchors_per_cell + a) * classes + k));
                }
            }
        }
        // Best first, equal scores in pair order: the order Paddle's stable
        // sort gives, as a total order so that the top k can be selected
        // before sorting.
        let best_first =
            |x: &(f32, usize), y: &(f32, usize)| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1));
        if ranked.len() > config.pre_nms_top_n {
            if config.pre_nms_top_n > 0 {
                ranked.select_nth_unstable_by(config.pre_nms_top_n - 1, best_first);
            }
            ranked.truncate(config.pre_nms_top_n);
        }
        ranked.sort_unstable_by(best_first);

        for &(score, pair) in &ranked {
            let (anchor, k) = (pair / classes, pair % classes);
            let (cell, a) = (anchor / anchors_per_cell, anchor % anchors_per_cell);
            let d = |j: usize| deltas[l][(a * 4 + j) * cells + cell];
            let decoded = decode(
                &anchors[l][anchor],
                &[1.0; 4],
                &[d(0), d(1), d(2), d(3)],
                false,
            );
            let in_picture = box_clip(&decoded.map(|v| v / im_info.scale), &im_info_row);
            per_class[k].push((in_picture, score));
        }
    }

    // (score, class, candidate) of every survivor, class by class, each
    // class's in its NMS rank order.
    let mut kept: Vec<(f32, usize, usize)> = Vec::new();
    for (k, candidates) in per_class.iter().enumerate() {
        let boxes: Vec<BoxXyxy> = candidates.iter().map(|c| c.0).collect();
        let mut order: Vec<usize> = (0..candidates.len()).collect();
        order.sort_by(|&x, &y| candidates[y].1.total_cmp(&candidates[x].1));
        let survivors = greedy_nms(&boxes, &order, config.nms_thresh, config.nms_eta, false);
        kept.extend(survivors.into_iter().map(|m| (candidates[m].1, k, m)));
    }
    kept.sort_by(|x, y| y.0.total_cmp(&x.0));
    kept.truncate(config.detections_per_im);
    kept.into_iter()
        .map(|(score, k, m)| Detection {
            class: k + 1,
            score,
            bbox: per_class[k][m].0,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{floats, quads, read};
    use crate::models::rpn_head::AnchorGeneratorSpec;
    use crate::rcnn::anchor_generator;
    use crate::yolo::nms::jaccard_overlap;
    use crate::yolo::sigmoid;
    use proptest::prelude::*;

    fn config(
        score_thresh: f32,
        pre_nms_top_n: usize,
        detections_per_im: usize,
    ) -> RetinaOutputConfig {
        RetinaOutputConfig {
            score_thresh,
            nms_thresh: 0.5,
            pre_nms_top_n,
            detections_per_im,
            nms_eta: 1.0,
        }
    }

    const UNSCALED: ImInfo = ImInfo {
        height: 100.0,
        width: 100.0,
        scale: 1.0,
    };

    /// Detections as (label, score), for the rules below.
    fn labels_and_scores(out: &[Detection]) -> Vec<(usize, f32)> {
        out.iter().map(|d| (d.class, d.score)).collect()
    }

    /// Two levels of one 1x1 cell, one anchor each, far apart, two classes;
    /// zero deltas.
    fn two_levels(first: [f32; 2], last: [f32; 2], cfg: &RetinaOutputConfig) -> Vec<Detection> {
        let anchors = [[[0.0, 0.0, 9.0, 9.0]], [[50.0, 50.0, 69.0, 69.0]]];
        retinanet_detection_output(
            &[&first, &last],
            &[&[0.0; 4], &[0.0; 4]],
            &[[1, 1], [1, 1]],
            1,
            &[&anchors[0], &anchors[1]],
            UNSCALED,
            cfg,
        )
    }

    #[test]
    fn scores_must_pass_the_threshold_except_on_the_last_level() {
        // First level: 0.3 is not above 0.3; last level: 0.01 and 0.2 pass
        // (threshold 0 there). Labels are 1-based, output best first.
        let out = two_levels([0.3, 0.5], [0.01, 0.2], &config(0.3, 10, 10));
        assert_eq!(labels_and_scores(&out), vec![(2, 0.5), (2, 0.2), (1, 0.01)]);
        assert_eq!(out[0].bbox, [0.0, 0.0, 9.0, 9.0]);
        assert_eq!(out[1].bbox, [50.0, 50.0, 69.0, 69.0]);
    }

    #[test]
    fn pre_nms_top_n_cuts_each_level_and_keep_top_k_the_image() {
        // One pair per level survives the per-level cut, best of its level,
        // even though the first level's second pair beats the last level's.
        let out = two_levels([0.6, 0.9], [0.1, 0.2], &config(0.05, 1, 10));
        assert_eq!(labels_and_scores(&out), vec![(2, 0.9), (2, 0.2)]);
        let out = two_levels([0.6, 0.9], [0.1, 0.2], &config(0.05, 2, 3));
        assert_eq!(labels_and_scores(&out), vec![(2, 0.9), (1, 0.6), (2, 0.2)]);
        // Equal scores: the lower (anchor, class) pair first, both per level
        // and over the image (class order).
        let out = two_levels([0.7, 0.7], [0.0, 0.0], &config(0.05, 1, 10));
        assert_eq!(labels_and_scores(&out), vec![(1, 0.7)]);
        let out = two_levels([0.7, 0.7], [0.0, 0.0], &config(0.05, 2, 10));
        assert_eq!(labels_and_scores(&out), vec![(1, 0.7), (2, 0.7)]);
    }

    #[test]
    fn suppression_is_per_class() {
        // Two anchors of one cell, nearly the same box: class 1 keeps only
        // the better; class 2 keeps it as well, whichever class scores more.
        let anchors = [[0.0, 0.0, 19.0, 19.0], [0.0, 0.0, 19.0, 18.0]];
        // [A*K, 1, 1]: channel a*K + k.
        let scores = [0.9, 0.3, 0.8, 0.4];
        let out = retinanet_detection_output(
            &[&scores],
            &[&[0.0; 8]],
            &[[1, 1]],
            2,
            &[&anchors],
            UNSCALED,
            &config(0.05, 10, 10),
        );
        assert_eq!(labels_and_scores(&out), vec![(1, 0.9), (2, 0.4)]);
        assert_eq!(out[1].bbox, anchors[1]);
    }

    #[test]
    fn boxes_are_decoded_scaled_and_clipped_to_the_picture() {
        // Scale 2: a 120 x 90 input is a 60 x 45 picture. Anchor 20..59
        // (40 wide, centre 40); deltas move the centre by half a width
        // right and double the width: centre 60, width 80, so x 20..99 in
        // the input, 10..49.5 in the picture. In y: a zero delta gives the
        // anchor, 30..69 halved is 15..34.5; the picture ends at 44.
        // A second anchor far to the bottom right is clipped to the corner.
        let anchors = [[20.0, 30.0, 59.0, 69.0], [200.0, 200.0, 239.0, 239.0]];
        // [A*4, 1, 1]: anchor 0's (dx, dy, dw, dh), then anchor 1's.
        let deltas = [0.5, 0.0, 2f32.ln(), 0.0, 0.0, 0.0, 0.0, 0.0];
        let out = retinanet_detection_output(
            &[&[0.9, 0.8]],
            &[&deltas],
            &[[1, 1]],
            2,
            &[&anchors],
            ImInfo {
                height: 90.0,
                width: 120.0,
                scale: 2.0,
            },
            &config(0.05, 10, 10),
        );
        assert_eq!(out.len(), 2);
        let want = [10.0, 15.0, 49.5, 34.5];
        for (got, want) in out[0].bbox.iter().zip(want) {
            assert!((got - want).abs() < 1e-4, "{:?}", out[0]);
        }
        assert_eq!(out[1].bbox, [59.0, 44.0, 59.0, 44.0]);
    }

    /// `(h, w)` channel-major `[C, H, W]` data from Paddle's transposed
    /// `[H*W*A, per_anchor]` rows: the head's layout.
    fn nchw_from_rows(rows: &[f32], cells: usize, channels: usize) -> Vec<f32> {
        let mut out = vec![0.0; rows.len()];
        for cell in 0..cells {
            for c in 0..channels {
                out[c * cells + cell] = rows[cell * channels + c];
            }
        }
        out
    }

    #[test]
    fn nchw_scores_are_read_as_paddles_transposed_rows() {
        // 1x2 cells, 2 anchors, 2 classes: Paddle's pair (cell, a, k)
        // row-major; the head holds channel a*K + k at each cell.
        let rows: Vec<f32> = (0..8).map(|i| 0.1 + 0.1 * i as f32).collect();
        let scores = nchw_from_rows(&rows, 2, 4);
        let anchors: Vec<BoxXyxy> = (0..4)
            .map(|i| {
                let x = 30.0 * i as f32;
                [x, 0.0, x + 9.0, 9.0]
            })
            .collect();
        let out = retinanet_detection_output(
            &[&scores],
            &[&[0.0; 16]],
            &[[1, 2]],
            2,
            &[&anchors],
            UNSCALED,
            &config(0.05, 100, 100),
        );
        // Best first: pair 7 is anchor 3, class 2, 0.8; ...; pair 0 is
        // anchor 0, class 1.
        for (rank, d) in out.iter().enumerate() {
            let pair = 7 - rank;
            assert_eq!(d.class, pair % 2 + 1);
            assert_eq!(d.bbox, anchors[pair / 2]);
            assert!((d.score - rows[pair]).abs() < 1e-7);
        }
    }

    /// Paddle's `retinanet_detection_output` on the inputs
    /// `RetinaHead.get_prediction` builds for two images, five levels
    /// (`core/tests/fixtures/retinanet/detection_output.py`), in four
    /// settings: the same labels in the same order, scores within 1e-6,
    /// boxes within 1e-4 pixels. The anchors are ours, equal to Paddle's.
    #[test]
    fn detections_equal_paddles() {
        let f = read("retinanet/detection_output.json");
        let count = |v: &serde_json::Value| v.as_u64().expect("a count") as usize;
        let classes = count(&f["classes"]);
        let per_cell = count(&f["anchors_per_cell"]);
        let levels = f["levels"].as_array().expect("levels");
        let images = f["im_info"].as_array().expect("im_info").len();
        let mut sizes = Vec::new();
        let mut anchors = Vec::new();
        let mut scores = Vec::new();
        let mut deltas = Vec::new();
        for level in levels {
            let [height, width] = [count(&level["height"]), count(&level["width"])];
            let stride = level["stride"].as_f64().expect("stride") as f32;
            let spec = AnchorGeneratorSpec {
                anchor_sizes: floats(&level["anchor_sizes"]),
                aspect_ratios: floats(&f["aspect_ratios"]),
                stride: [stride, stride],
                variance: [1.0; 4],
            };
            let ours = anchor_generator(&spec, height, width).boxes;
            assert_eq!(ours, quads(&level["anchors"]), "stride {stride}");
            sizes.push([height, width]);
            anchors.push(ours);
            let logits = floats(&level["logits"]);
            assert_eq!(logits.len(), images * per_cell * classes * height * width);
            scores.push(logits.iter().map(|&x| sigmoid(x)).collect::<Vec<f32>>());
            deltas.push(floats(&level["deltas"]));
        }
        let mut below_threshold = 0;
        for case in f["cases"].as_array().expect("cases") {
            let name = case["name"].as_str().expect("name");
            let number = |k: &str| case[k].as_f64().expect(k) as f32;
            let cfg = RetinaOutputConfig {
                score_thresh: number("score_threshold"),
                nms_thresh: number("nms_threshold"),
                pre_nms_top_n: count(&case["nms_top_k"]),
                detections_per_im: count(&case["keep_top_k"]),
                nms_eta: number("nms_eta"),
            };
            for image in 0..images {
                let im = floats(&f["im_info"][image]);
                let per_image = |all: &[Vec<f32>]| -> Vec<Vec<f32>> {
                    all.iter()
                        .map(|level| {
                            let n = level.len() / images;
                            level[image * n..][..n].to_vec()
                        })
                        .collect()
                };
                let (s, d) = (per_image(&scores), per_image(&deltas));
                let detect = |cfg: &RetinaOutputConfig| {
                    retinanet_detection_output(
                        &s.iter().map(Vec::as_slice).collect::<Vec<_>>(),
                        &d.iter().map(Vec::as_slice).collect::<Vec<_>>(),
                        &sizes,
                        per_cell,
                        &anchors.iter().map(Vec::as_slice).collect::<Vec<_>>(),
                        ImInfo {
                            height: im[0],
                            width: im[1],
                            scale: im[2],
                        },
                        cfg,
                    )
                };
                let got = detect(&cfg);
                let want = case["detections"][image].as_array().expect("rows");
                assert_eq!(got.len(), want.len(), "{name}, image {image}");
                for (g, w) in got.iter().zip(want) {
                    let w = floats(w);
                    assert_eq!(g.class, w[0] as usize, "{name}: {g:?} vs {w:?}");
                    assert!((g.score - w[1]).abs() <= 1e-6, "{name}: {g:?} vs {w:?}");
                    for k in 0..4 {
                        assert!(
                            (g.bbox[k] - w[2 + k]).abs() <= 1e-4,
                            "{name}: {g:?} vs {w:?}"
                        );
                    }
                }
                below_threshold += got.iter().filter(|g| g.score <= cfg.score_thresh).count();
                // The eta case tells adaptive NMS apart from plain NMS.
                if cfg.nms_eta < 1.0 {
                    let plain = RetinaOutputConfig {
                        nms_eta: 1.0,
                        ..cfg.clone()
                    };
                    assert_ne!(detect(&plain), got, "{name}, image {image}");
                }
            }
        }
        // The last level's candidates below score_thresh reach the output.
        assert!(below_threshold > 0);
    }

    /// Random heads over two levels (4x5 and 2x3 cells at strides 8 and
    /// 16, 3 anchors a cell, 3 classes) on a picture of random size and
    /// scale.
    fn random_case(
    ) -> impl Strategy<Value = (Vec<Vec<f32>>, Vec<Vec<f32>>, ImInfo, RetinaOutputConfig)> {
        let level = |cells: usize| {
            (
                prop::collection::vec(0.0f32..1.0, cells * 9),
                prop::collection::vec(-1.5f32..1.5, cells * 12),
            )
        };
        (
            level(20),
            level(6),
            (20.0f32..40.0, 30.0f32..48.0, 0.5f32..2.0),
            (0.0f32..0.5, 1usize..40, 1usize..30, 0.3f32..0.8),
        )
            .prop_map(|((s0, d0), (s1, d1), (h, w, scale), (t, top, keep, nms))| {
                let cfg = RetinaOutputConfig {
                    score_thresh: t,
                    nms_thresh: nms,
                    pre_nms_top_n: top,
                    detections_per_im: keep,
                    nms_eta: 1.0,
                };
                let im = ImInfo {
                    height: h,
                    width: w,
                    scale,
                };
                (vec![s0, s1], vec![d0, d1], im, cfg)
            })
    }

    proptest! {
        /// Every detection lies in the original picture, carries a label
        /// 1..=K and, but for the last level's, a score above the
        /// threshold; at most `detections_per_im` come, best first; no two
        /// of one class overlap by more than `nms_thresh`.
        #[test]
        fn detections_obey_the_rules((scores, deltas, im, cfg) in random_case()) {
            let sizes = [[4, 5], [2, 3]];
            let anchors: Vec<Vec<BoxXyxy>> = sizes
                .iter()
                .zip([8.0f32, 16.0])
                .map(|(&[h, w], stride)| {
                    let spec = AnchorGeneratorSpec {
                        anchor_sizes: vec![stride * 2.0, stride * 3.0, stride * 4.0],
                        aspect_ratios: vec![1.0],
                        stride: [stride, stride],
                        variance: [1.0; 4],
                    };
                    anchor_generator(&spec, h, w).boxes
                })
                .collect();
            let out = retinanet_detection_output(
                &scores.iter().map(Vec::as_slice).collect::<Vec<_>>(),
                &deltas.iter().map(Vec::as_slice).collect::<Vec<_>>(),
                &sizes,
                3,
                &anchors.iter().map(Vec::as_slice).collect::<Vec<_>>(),
                im,
                &cfg,
            );
            let height = (im.height / im.scale).round();
            let width = (im.width / im.scale).round();
            prop_assert!(out.len() <= cfg.detections_per_im);
            // At most pre_nms_top_n candidates from each level.
            prop_assert!(out.len() <= 2 * cfg.pre_nms_top_n);
            for d in &out {
                prop_assert!((1..=3).contains(&d.class), "{d:?}");
                prop_assert!(scores.iter().flatten().any(|&s| s == d.score), "{d:?}");
                let below = d.score <= cfg.score_thresh;
                prop_assert!(!below || scores[1].contains(&d.score), "{d:?}");
                let [x1, y1, x2, y2] = d.bbox;
                for (lo, hi, size) in [(x1, x2, width), (y1, y2, height)] {
                    prop_assert!(0.0 <= lo && lo <= size - 1.0, "{d:?} in {width} x {height}");
                    prop_assert!(0.0 <= hi && hi <= size - 1.0, "{d:?} in {width} x {height}");
                }
            }
            for pair in out.windows(2) {
                prop_assert!(pair[0].score >= pair[1].score);
            }
            for (i, a) in out.iter().enumerate() {
                for b in out[i + 1..].iter().filter(|b| b.class == a.class) {
                    prop_assert!(jaccard_overlap(&a.bbox, &b.bbox, false) <= cfg.nms_thresh);
                }
            }
        }
    }
}
