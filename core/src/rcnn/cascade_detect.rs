//! Cascade R-CNN's box refinement between stages and its detection output
//! for one image, as PaddleDetection's `CascadeRCNN._decode_box` and
//! `CascadeBBoxHead.get_prediction` compute them with Paddle's operators.
//!
//! Between stages (training and test alike) each RoI is moved by its
//! stage's class-agnostic `bbox_pred` (`[R, 8]`): the foreground's four
//! deltas (columns 4..8, the `slice` of the `[R, 2, 4]` reshape) decoded
//! onto it by `box_coder` (`decode_center_size`, pixel boxes, `axis` 1) with
//! the stage's variances `[1/w, 1/w, 2/w, 2/w]`. Nothing clips these RoIs,
//! nor drops any: stage `k + 1` runs on exactly stage `k`'s RoIs, refined.
//!
//! At the end (`get_prediction`), on the stage-3 RoIs:
//! 1. the stage 1 and stage 2 heads run again on the stage-3 RoI features
//!    (`get_output` by name), so that three heads score the same RoIs; the
//!    class scores are the mean of their three softmaxes,
//!    `(p1 + p2 + p3) * (1 / 3)` (Paddle's `/ 3.0` is a `scale` op);
//! 2. the RoIs are divided by the image's scale and decoded by stage 3's
//!    foreground deltas with stage 3's variances, the one box each RoI gets
//!    shared by every class, clipped to `im_shape` and put through multiclass
//!    NMS with the background left out: `bbox_detect`'s steps 1 and 3-5.

use crate::box_coder::{decode, BoxXyxy};
use crate::losses::softmax_in_place;
use crate::rcnn::bbox_detect::{detect_decoded, BoxRegression};
use crate::yolo::{Detection, NmsConfig};

/// `_decode_box`: `rois` (resized-input pixels) moved by a stage's
/// class-agnostic `bbox_pred` (`[R, 8]`) with its `variances`.
pub fn refine_rois(rois: &[BoxXyxy], bbox_pred: &[f32], variances: &[f32; 4]) -> Vec<BoxXyxy> {
    assert_eq!(
        bbox_pred.len(),
        rois.len() * 8,
        "refine_rois: bbox_pred is [R, 8]"
    );
    rois.iter()
        .zip(bbox_pred.chunks_exact(8))
        .map(|(roi, d)| decode(roi, variances, &[d[4], d[5], d[6], d[7]], false))
        .collect()
}

/// `get_prediction`: one image's detections from its stage-3 `rois`
/// (resized-input pixels), the three stages' heads' `cls_scores` on them
/// (`[R, classes]` logits each, stage 1's first) and stage 3's `bbox_pred`
/// (`[R, 8]`) with stage 3's `variances`. `im_scale` is `im_info[2]`;
/// `im_shape` is the original height and width and 1.
#[allow(clippy::too_many_arguments)]
pub fn cascade_head_detect(
    nms: &NmsConfig,
    classes: usize,
    rois: &[BoxXyxy],
    im_scale: f32,
    im_shape: &[f32; 3],
    cls_scores: [&[f32]; 3],
    bbox_pred: &[f32],
    variances: &[f32; 4],
) -> Vec<Detection> {
    let mut mean = vec![0.0f32; rois.len() * classes];
    let mut probabilities = vec![0.0f32; classes];
    for (stage, logits) in cls_scores.iter().enumerate() {
        assert_eq!(
            logits.len(),
            mean.len(),
            "cascade_head_detect: stage {} cls_score is [R, C]",
            stage + 1
        );
        for (sum, row) in mean
            .chunks_exact_mut(classes)
            .zip(logits.chunks_exact(classes))
        {
            probabilities.copy_from_slice(row);
            softmax_in_place(&mut probabilities);
            sum.iter_mut()
                .zip(&probabilities)
                .for_each(|(s, p)| *s += p);
        }
    }
    mean.iter_mut().for_each(|s| *s *= 1.0 / 3.0);
    detect_decoded(
        nms,
        rois,
        im_scale,
        im_shape,
        &mean,
        classes,
        bbox_pred,
        BoxRegression::ClassAgnostic,
        variances,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::box_coder::encode;
    use crate::fixtures::{floats, quads, read};
    use crate::rcnn::{bbox_head_detect, RcnnConfig};
    use proptest::prelude::*;

    fn variances(v: &serde_json::Value) -> [f32; 4] {
        let w = floats(v);
        [w[0], w[1], w[2], w[3]]
    }

    fn assert_close(got: f32, want: f32, what: &str) {
        assert!(
            (got - want).abs() <= 1e-5 * want.abs().max(1.0),
            "{what}: {got} vs Paddle's {want}"
        );
    }

    /// Paddle's `_decode_box` chain on two images' RoIs
    /// (`core/tests/fixtures/cascade_rcnn/cascade_head.py`): the stage 2 and
    /// stage 3 RoIs within 1e-5 relative, some of them past the image.
    #[test]
    fn refinement_equals_paddles() {
        let f = read("cascade_rcnn/cascade_head.json");
        let r = &f["refine"];
        let mut rois = quads(&r["rois"]);
        for (stage, want) in ["stage2_rois", "stage3_rois"].into_iter().enumerate() {
            let variances = variances(&r["variances"][stage]);
            rois = refine_rois(&rois, &floats(&r["bbox_pred"][stage]), &variances);
            let want = quads(&r[want]);
            assert_eq!(rois.len(), want.len());
            for (i, (g, w)) in rois.iter().zip(&want).enumerate() {
                for k in 0..4 {
                    assert_close(g[k], w[k], &format!("stage {} RoI {i}", stage + 2));
                }
            }
        }
        assert!(rois.iter().any(|b| b[0] < 0.0 || b[1] < 0.0));
    }

    /// Paddle's `get_prediction` on the stage-3 RoIs of the refinement, at
    /// keep_top_k 100 and 5: the same detections in the same order, labels
    /// equal, scores and boxes within 1e-5 relative.
    #[test]
    fn detections_equal_paddles() {
        let f = read("cascade_rcnn/cascade_head.json");
        let classes = f["classes"].as_u64().expect("classes") as usize;
        let (r, d) = (&f["refine"], &f["detect"]);
        let count = r["rois_per_image"].as_u64().expect("rois") as usize;
        let rois = quads(&r["stage3_rois"]);
        let scores: Vec<Vec<f32>> = (0..3).map(|s| floats(&d["cls_score"][s])).collect();
        let bbox_pred = floats(&r["bbox_pred"][2]);
        let variances = variances(&r["variances"][2]);
        let mut compared = 0;
        for case in d["cases"].as_array().expect("cases") {
            let mut nms = RcnnConfig::faster_rcnn(classes).nms;
            nms.keep_top_k = Some(case["keep_top_k"].as_u64().expect("keep") as usize);
            for (image, want) in case["detections"]
                .as_array()
                .expect("images")
                .iter()
                .enumerate()
            {
                let info = floats(&d["im_info"][image]);
                let shape = floats(&d["im_shape"][image]);
                let image_scores =
                    |s: usize| &scores[s][image * count * classes..][..count * classes];
                let got = cascade_head_detect(
                    &nms,
                    classes,
                    &rois[image * count..][..count],
                    info[2],
                    &[shape[0], shape[1], shape[2]],
                    [image_scores(0), image_scores(1), image_scores(2)],
                    &bbox_pred[image * count * 8..][..count * 8],
                    &variances,
                );
                let want = want.as_array().expect("rows");
                assert_eq!(got.len(), want.len(), "image {image}, {:?}", nms.keep_top_k);
                for (g, w) in got.iter().zip(want) {
                    let w = floats(w);
                    assert_eq!(g.class, w[0] as usize, "{g:?} vs {w:?}");
                    assert_close(g.score, w[1], "score");
                    for k in 0..4 {
                        assert_close(g.bbox[k], w[2 + k], &format!("{g:?} vs {w:?}"));
                    }
                }
                compared += got.len();
            }
        }
        assert!(compared > 100, "only {compared} detections compared");
    }

    fn a_roi() -> impl Strategy<Value = BoxXyxy> {
        (0.0f32..300.0, 0.0f32..300.0, 2.0f32..200.0, 2.0f32..200.0)
            .prop_map(|(x, y, w, h)| [x, y, x + w, y + h])
    }

    fn stage_variances() -> impl Strategy<Value = [f32; 4]> {
        prop_oneof![Just(10.0f32), Just(20.0), Just(30.0)].prop_map(|w| {
            let (centre, size) = (1.0 / w, 2.0 / w);
            [centre, centre, size, size]
        })
    }

    proptest! {
        /// Refinement reads only the foreground deltas: zero ones leave a
        /// RoI as it is whatever the background's say, and encoding the
        /// refined RoI onto the RoI gives the deltas back.
        #[test]
        fn refinement_decodes_the_foreground_deltas(
            rois in prop::collection::vec(a_roi(), 1..8),
            deltas in prop::collection::vec(-2.0f32..2.0, 64),
            variances in stage_variances(),
        ) {
            let bbox_pred = &deltas[..rois.len() * 8];
            let mut background_only = bbox_pred.to_vec();
            background_only.chunks_exact_mut(8).for_each(|row| row[4..].fill(0.0));
            let same = refine_rois(&rois, &background_only, &variances);
            for (a, b) in same.iter().zip(&rois) {
                for k in 0..4 {
                    prop_assert!((a[k] - b[k]).abs() <= 1e-3 * b[k].abs().max(1.0), "{a:?} vs {b:?}");
                }
            }
            let refined = refine_rois(&rois, bbox_pred, &variances);
            for ((roi, moved), d) in rois.iter().zip(&refined).zip(bbox_pred.chunks_exact(8)) {
                let back = encode(roi, &variances, moved, false);
                // encode takes the target's centre without the pixel +1, so
                // its x, y deltas are off by half a pixel.
                let half = [0.5 / (roi[2] - roi[0] + 1.0) / variances[0], 0.5 / (roi[3] - roi[1] + 1.0) / variances[1]];
                prop_assert!((back[0] + half[0] - d[4]).abs() < 1e-2, "{back:?} vs {d:?}");
                prop_assert!((back[1] + half[1] - d[5]).abs() < 1e-2, "{back:?} vs {d:?}");
                prop_assert!((back[2] - d[6]).abs() < 1e-2 && (back[3] - d[7]).abs() < 1e-2);
            }
        }

        /// With the same logits from all three heads the mean is that
        /// head's softmax, and class-agnostic deltas decode as Faster
        /// R-CNN's per-class ones would if every class had the foreground's:
        /// the cascade's output is then `bbox_head_detect`'s, and every box
        /// lies in the picture.
        #[test]
        fn one_head_three_times_is_the_box_head(
            rois in prop::collection::vec(a_roi(), 1..10),
            logits in prop::collection::vec(-4.0f32..4.0, 40),
            deltas in prop::collection::vec(-2.0f32..2.0, 80),
            scale in 0.5f32..2.0,
        ) {
            let classes = 4;
            let r = rois.len();
            let logits = &logits[..r * classes];
            let agnostic = &deltas[..r * 8];
            let per_class: Vec<f32> = agnostic
                .chunks_exact(8)
                .flat_map(|row| row[4..8].repeat(classes))
                .collect();
            let variances = [0.1, 0.1, 0.2, 0.2];
            let im_shape = [200.0, 240.0, 1.0];
            let mut cfg = RcnnConfig::faster_rcnn(classes);
            cfg.nms.score_threshold = 0.0;
            let cascade = cascade_head_detect(&cfg.nms, classes, &rois, scale, &im_shape, [logits, logits, logits], agnostic, &variances);
            let faster = bbox_head_detect(&cfg, &rois, scale, &im_shape, logits, &per_class);
            prop_assert_eq!(cascade.len(), faster.len());
            for (c, f) in cascade.iter().zip(&faster) {
                prop_assert_eq!(c.class, f.class);
                prop_assert!((c.score - f.score).abs() <= 1e-6, "{c:?} vs {f:?}");
                prop_assert_eq!(c.bbox, f.bbox);
                prop_assert!(c.class >= 1 && c.class < classes);
                prop_assert!(c.bbox[0] >= 0.0 && c.bbox[2] <= 239.0 && c.bbox[1] >= 0.0 && c.bbox[3] <= 199.0);
            }
        }
    }
}
