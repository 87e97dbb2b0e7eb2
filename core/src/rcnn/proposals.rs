//! Paddle 1.8's `generate_proposals` for one image: the RPN's scores and box
//! deltas at every anchor become at most `post_nms_top_n` RoIs, in resized
//! image pixels, best first. The CPU backend's
//! `Backend::generate_proposals` runs it per level and image; the GPU's
//! kernels decide as it does.
//!
//! Steps, as `generate_proposals_op.cc` does them:
//! 1. the `pre_nms_top_n` best anchors by score (0, or more than there are
//!    anchors: all of them);
//! 2. their boxes decoded from the deltas with the anchors' variances, the
//!    log-sizes capped at `ln(1000 / 16)` ([`decode_proposal`]);
//! 3. clipped to the image: `[0, w - 1]`, `[0, h - 1]` with `h`, `w` the
//!    resized size in `im_info`;
//! 4. dropped when narrower or lower than `max(min_size, 1)` in
//!    original-image pixels (width `(x2 - x1) / scale + 1`), or when the
//!    centre (`x1 + (x2 - x1 + 1) / 2`) lies past the image's `w` or `h`
//!    (after clipping it cannot, but Paddle tests it);
//! 5. greedy NMS at `nms_thresh` (pixel IoU, adaptive with `eta < 1`), best
//!    score first; `nms_thresh <= 0` skips NMS and the post-NMS cut;
//! 6. the first `post_nms_top_n` (0: all) survivors.
//!
//! When no box survives step 4 the image has no proposals (Paddle 1.8.5
//! writes none, its later versions one zero box).
//!
//! Ties: Paddle picks the pre-NMS top-n with `std::nth_element` and ranks
//! them with a stable sort of that arbitrary order, so equal scores come out
//! in an order no other program reproduces; here equal scores rank by anchor
//! index. Ties are rare but real: the sigmoid rounds to exactly 1.0 in f32
//! for logits above about 17 (an untrained RPN with large weights has dozens
//! of such anchors, see `tests/fixtures/faster_rcnn/model_parity.py`).

use crate::box_coder::{decode_proposal, BoxXyxy};
use crate::rcnn::ProposalConfig;
use crate::yolo::greedy_nms;

/// One image's proposals, best score first.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Proposals {
    /// `[x1, y1, x2, y2]` in resized-image pixels.
    pub boxes: Vec<BoxXyxy>,
    /// The RPN's objectness probability of each box.
    pub scores: Vec<f32>,
}

/// One image's proposals from its RPN outputs.
///
/// - `scores`: the sigmoid of `rpn_cls_logits`, as the head writes it,
///   `[A, H, W]` (one image's slice of the NCHW output);
/// - `deltas`: `rpn_bbox_pred`, `[4 * A, H, W]`, channel `4 * a + k` the
///   `k`-th of anchor `a`'s `[dx, dy, dw, dh]`;
/// - `anchors`, `variances`: `[H * W * A]`, anchor `a` at cell `(h, w)` at
///   `(h * W + w) * A + a` (the order of Paddle's `anchor_generator`);
/// - `im_info`: `[resized height, resized width, scale]`.
pub fn generate_proposals(
    cfg: &ProposalConfig,
    scores: &[f32],
    deltas: &[f32],
    anchors: &[BoxXyxy],
    variances: &[[f32; 4]],
    (height, width): (usize, usize),
    im_info: [f32; 3],
) -> Proposals {
    let cells = height * width;
    let count = anchors.len();
    assert!(
        cells > 0 && count.is_multiple_of(cells),
        "{count} anchors do not fill a {height}x{width} map"
    );
    let per_cell = count / cells;
    assert_eq!(scores.len(), count, "scores must be [A, H, W]");
    assert_eq!(deltas.len(), 4 * count, "deltas must be [4A, H, W]");
    assert_eq!(variances.len(), count, "one variance per anchor");
    // Anchor index (h * W + w) * A + a reads channel a (scores) or 4a + k
    // (deltas) of the NCHW maps at cell h * W + w.
    let score_of = |i: usize| scores[(i % per_cell) * cells + i / per_cell];
    let deltas_of = |i: usize| {
        let (cell, a) = (i / per_cell, i % per_cell);
        [0, 1, 2, 3].map(|k| deltas[(4 * a + k) * cells + cell])
    };

    // 1. Best first; equal scores by anchor index, so the order is total.
    let by_rank = |&i: &usize, &j: &usize| score_of(j).total_cmp(&score_of(i)).then(i.cmp(&j));
    let mut ranked: Vec<usize> = (0..count).collect();
    let top_n = match cfg.pre_nms_top_n {
        0 => count,
        n => n.min(count),
    };
    if top_n < count {
        ranked.select_nth_unstable_by(top_n, by_rank);
        ranked.truncate(top_n);
    }
    ranked.sort_unstable_by(by_rank);

    // 2-4. Decode, clip, filter.
    let [im_h, im_w, scale] = im_info;
    let min_size = cfg.min_size.max(1.0);
    let mut boxes = Vec::with_capacity(ranked.len());
    let mut box_scores = Vec::with_capacity(ranked.len());
    for &i in &ranked {
        let b = decode_proposal(&anchors[i], &variances[i], &deltas_of(i));
        let b = [
            b[0].min(im_w - 1.0).max(0.0),
            b[1].min(im_h - 1.0).max(0.0),
            b[2].min(im_w - 1.0).max(0.0),
            b[3].min(im_h - 1.0).max(0.0),
        ];
        let centre_x = b[0] + (b[2] - b[0] + 1.0) / 2.0;
        let centre_y = b[1] + (b[3] - b[1] + 1.0) / 2.0;
        let original_w = (b[2] - b[0]) / scale + 1.0;
        let original_h = (b[3] - b[1]) / scale + 1.0;
        if original_w >= min_size && original_h >= min_size && centre_x <= im_w && centre_y <= im_h
        {
            boxes.push(b);
            box_scores.push(score_of(i));
        }
    }
    if cfg.nms_thresh <= 0.0 {
        return Proposals {
            boxes,
            scores: box_scores,
        };
    }

    // 5-6. The boxes are already best first.
    let order: Vec<usize> = (0..boxes.len()).collect();
    let mut kept = greedy_nms(&boxes, &order, cfg.nms_thresh, cfg.eta, false);
    if cfg.post_nms_top_n > 0 {
        kept.truncate(cfg.post_nms_top_n);
    }
    Proposals {
        boxes: kept.iter().map(|&k| boxes[k]).collect(),
        scores: kept.iter().map(|&k| box_scores[k]).collect(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::fixtures::{floats, quads, read};
    use crate::yolo::nms::jaccard_overlap;
    use proptest::prelude::*;

    fn config(case: &serde_json::Value) -> ProposalConfig {
        let int = |key: &str| case[key].as_u64().expect(key) as usize;
        let float = |key: &str| case[key].as_f64().expect(key) as f32;
        ProposalConfig {
            pre_nms_top_n: int("pre_nms_top_n"),
            post_nms_top_n: int("post_nms_top_n"),
            nms_thresh: float("nms_thresh"),
            min_size: float("min_size"),
            eta: float("eta"),
        }
    }

    /// Boxes equal within 1e-4 relative or absolute pixels.
    pub(crate) fn assert_boxes_close(got: &[BoxXyxy], want: &[BoxXyxy], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: count");
        for (g, w) in got.iter().zip(want) {
            for k in 0..4 {
                assert!(
                    (g[k] - w[k]).abs() <= 1e-4 * (1.0 + w[k].abs()),
                    "{what}: {g:?} vs {w:?}"
                );
            }
        }
    }

    /// Paddle's `anchor_generator` + `generate_proposals` on fixed RPN
    /// outputs for two images with different scales, four settings
    /// (`core/tests/fixtures/faster_rcnn/proposals.py`).
    #[test]
    fn equals_paddles_generate_proposals() {
        let fixture = read("faster_rcnn/proposals.json");
        let dim = |key: &str| fixture[key].as_u64().expect(key) as usize;
        let (height, width) = (dim("height"), dim("width"));
        let anchors = quads(&fixture["anchors"]);
        let variances = quads(&fixture["variances"]);
        let mut checked = 0;
        for case in fixture["proposal_cases"].as_array().expect("cases") {
            let cfg = config(case);
            for image in 0..dim("images") {
                let scores = floats(&fixture["scores"][image]);
                let deltas = floats(&fixture["deltas"][image]);
                let info = floats(&fixture["im_info"][image]);
                let got = generate_proposals(
                    &cfg,
                    &scores,
                    &deltas,
                    &anchors,
                    &variances,
                    (height, width),
                    [info[0], info[1], info[2]],
                );
                let what = format!("{cfg:?} image {image}");
                assert_boxes_close(&got.boxes, &quads(&case["rois"][image]), &what);
                assert_eq!(got.scores, floats(&case["scores"][image]), "{what}");
                checked += got.boxes.len();
            }
        }
        assert!(checked > 100, "only {checked} proposals compared");
    }

    #[test]
    fn clips_filters_and_suppresses_by_hand() {
        // A 1x1 map with three anchors on a 20x30 image at scale 2.
        let anchors = [
            [0.0, 0.0, 15.0, 15.0],
            [2.0, 2.0, 13.0, 13.0],
            [-8.0, -8.0, 23.0, 23.0],
        ];
        let variances = [[1.0; 4]; 3];
        let scores = [0.9, 0.8, 0.7];
        let deltas = vec![0.0; 12];
        let cfg = ProposalConfig {
            pre_nms_top_n: 0,
            post_nms_top_n: 0,
            nms_thresh: 0.7,
            min_size: 0.0,
            eta: 1.0,
        };
        let info = [20.0, 30.0, 2.0];
        let out = generate_proposals(&cfg, &scores, &deltas, &anchors, &variances, (1, 1), info);
        // Anchor 1 (12x12 inside 16x16: IoU 0.5625) survives 0.7; anchor 2
        // is clipped to [0, 0, 23, 19], IoU 256 / 480 with anchor 0.
        assert_eq!(
            out.boxes,
            vec![anchors[0], anchors[1], [0.0, 0.0, 23.0, 19.0]]
        );
        assert_eq!(out.scores, vec![0.9, 0.8, 0.7]);

        // min_size 7 in original pixels: anchor 1 is (13 - 2) / 2 + 1 = 6.5.
        let small = ProposalConfig {
            min_size: 7.0,
            ..cfg.clone()
        };
        let out = generate_proposals(&small, &scores, &deltas, &anchors, &variances, (1, 1), info);
        assert_eq!(out.scores, vec![0.9, 0.7]);

        // pre_nms_top_n 2 keeps the two best; nms 0.5 drops anchor 1.
        let tight = ProposalConfig {
            pre_nms_top_n: 2,
            nms_thresh: 0.5,
            ..cfg.clone()
        };
        let out = generate_proposals(&tight, &scores, &deltas, &anchors, &variances, (1, 1), info);
        assert_eq!(out.boxes, vec![anchors[0]]);
    }

    #[test]
    fn reads_the_nchw_layout() {
        // A 1x2 map with 2 anchors per cell: anchor index (h * W + w) * A + a.
        let anchors = [
            [0.0, 0.0, 9.0, 9.0],
            [0.0, 0.0, 19.0, 19.0],
            [40.0, 0.0, 49.0, 9.0],
            [30.0, 0.0, 49.0, 19.0],
        ];
        // scores [A, H, W]: anchor a at cell w is scores[a * 2 + w].
        let scores = [0.1, 0.4, 0.3, 0.2];
        // deltas [4A, H, W]: only anchor 1 of cell 1 (index 3) moves, dx 0.5.
        let mut deltas = vec![0.0; 16];
        deltas[4 * 2 + 1] = 0.5;
        let cfg = ProposalConfig {
            pre_nms_top_n: 0,
            post_nms_top_n: 0,
            nms_thresh: 0.99,
            min_size: 0.0,
            eta: 1.0,
        };
        let variances = [[1.0; 4]; 4];
        let info = [100.0, 100.0, 1.0];
        let out = generate_proposals(&cfg, &scores, &deltas, &anchors, &variances, (1, 2), info);
        // Ranked: index 2 (0.4), 1 (0.3), 3 (0.2, moved 10 px right), 0 (0.1).
        assert_eq!(out.scores, vec![0.4, 0.3, 0.2, 0.1]);
        assert_eq!(
            out.boxes,
            vec![anchors[2], anchors[1], [40.0, 0.0, 59.0, 19.0], anchors[0]]
        );
    }

    fn rpn_case() -> impl Strategy<Value = (Vec<f32>, Vec<f32>, [f32; 3], ProposalConfig)> {
        let (h, w, a) = (3usize, 4usize, 3usize);
        let n = h * w * a;
        (
            prop::collection::vec(0.0f32..1.0, n),
            prop::collection::vec(-3.0f32..3.0, 4 * n),
            (20.0f32..70.0, 20.0f32..70.0, 0.5f32..2.0),
            (
                0usize..50,
                0usize..20,
                0.3f32..0.9,
                0.0f32..20.0,
                0.8f32..1.0,
            ),
        )
            .prop_map(
                |(scores, deltas, (im_h, im_w, scale), (pre, post, thresh, min_size, eta))| {
                    let cfg = ProposalConfig {
                        pre_nms_top_n: pre,
                        post_nms_top_n: post,
                        nms_thresh: thresh,
                        min_size,
                        eta,
                    };
                    (scores, deltas, [im_h, im_w, scale], cfg)
                },
            )
    }

    /// Anchors of sizes 16, 32, 48 centred on the cells of a stride-16 map.
    fn grid_anchors() -> (Vec<BoxXyxy>, Vec<[f32; 4]>) {
        let mut anchors = Vec::new();
        for h in 0..3 {
            for w in 0..4 {
                for size in [16.0f32, 32.0, 48.0] {
                    let (cx, cy) = (w as f32 * 16.0 + 8.0, h as f32 * 16.0 + 8.0);
                    let half = (size - 1.0) / 2.0;
                    anchors.push([cx - half, cy - half, cx + half, cy + half]);
                }
            }
        }
        let variances = vec![[1.0; 4]; anchors.len()];
        (anchors, variances)
    }

    proptest! {
        /// Every proposal lies inside the image, passes the size rule, and
        /// there are at most post_nms_top_n of them, best first, none
        /// overlapping a better one by more than the (non-adaptive) threshold.
        #[test]
        fn proposals_obey_the_rules((scores, deltas, info, cfg) in rpn_case()) {
            let (anchors, variances) = grid_anchors();
            let out = generate_proposals(&cfg, &scores, &deltas, &anchors, &variances, (3, 4), info);
            let [im_h, im_w, scale] = info;
            prop_assert_eq!(out.boxes.len(), out.scores.len());
            if cfg.post_nms_top_n > 0 {
                prop_assert!(out.boxes.len() <= cfg.post_nms_top_n);
            }
            if cfg.pre_nms_top_n > 0 {
                prop_assert!(out.boxes.len() <= cfg.pre_nms_top_n);
            }
            for b in &out.boxes {
                prop_assert!(b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= im_w - 1.0 && b[3] <= im_h - 1.0, "{:?}", b);
                prop_assert!((b[2] - b[0]) / scale + 1.0 >= cfg.min_size.max(1.0));
            }
            for pair in out.scores.windows(2) {
                prop_assert!(pair[0] >= pair[1]);
            }
            for (i, a) in out.boxes.iter().enumerate() {
                for b in &out.boxes[i + 1..] {
                    prop_assert!(jaccard_overlap(a, b, false) <= cfg.nms_thresh);
                }
            }
        }
    }
}
