//! The Faster R-CNN box head's detection output for one image, as
//! PaddleDetection's `BBoxHead.get_prediction` computes it with Paddle's
//! operators:
//! 1. the RoIs (in the resized input's pixels) are divided by the image's
//!    scale, back to the original picture (`rois / im_scale`);
//! 2. the class logits are softmaxed into scores (`softmax`);
//! 3. each RoI is decoded once per class from that class's four deltas
//!    (`box_coder`, `decode_center_size`, pixel boxes, `axis` 1, the
//!    variances `bbox_reg_weights`: PaddleDetection's `BoxCoder` default
//!    `prior_box_var` is the same `[0.1, 0.1, 0.2, 0.2]` the targets were
//!    encoded with);
//! 4. the boxes are clipped to the original picture (`box_clip` on
//!    `im_shape`);
//! 5. multiclass NMS with the background class 0 left out, each class on
//!    its own boxes (`multiclass_nms` with 2-D scores).
//!
//! Cascade R-CNN's `get_prediction` (`rcnn::cascade_detect`) shares steps
//! 1 and 3-5 ([`BoxRegression::ClassAgnostic`]).
//!
//! Detections are grouped by class and carry Paddle's labels: 1 to `C - 1`
//! for the object classes (the dataset's class `k`, 0-based, is label
//! `k + 1`); boxes are in the original picture's pixels.

use crate::box_coder::{decode, BoxXyxy};
use crate::losses::softmax_in_place;
use crate::models::bbox_head::CLASS_AGNOSTIC_BOXES;
use crate::rcnn::box_clip::box_clip;
use crate::rcnn::RcnnConfig;
use crate::yolo::{multiclass_nms_class_boxes, Detection, NmsConfig};

/// How `bbox_pred` holds a RoI's deltas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoxRegression {
    /// `[R, 4C]`: each class's box from its own four deltas.
    PerClass,
    /// Cascade R-CNN's `cls_agnostic_bbox_reg` (`[R, 8]`): the foreground's
    /// four (columns 4..8) decode the one box every class shares (Paddle
    /// slices them out and expands them to every class before `box_coder`).
    ClassAgnostic,
}

/// One image's detections from its `rois` (`[R]`, resized-input pixels) and
/// the head's `cls_score` (`[R, C]` logits) and `bbox_pred` (`[R, 4 * C]`),
/// with `C = cfg.bbox_assigner.class_nums`. `im_scale` is the resize factor
/// (`im_info[2]`); `im_shape` is PaddleDetection's `im_shape` row: the
/// original height and width and 1.
pub fn bbox_head_detect(
    cfg: &RcnnConfig,
    rois: &[BoxXyxy],
    im_scale: f32,
    im_shape: &[f32; 3],
    cls_score: &[f32],
    bbox_pred: &[f32],
) -> Vec<Detection> {
    let classes = cfg.bbox_assigner.class_nums;
    assert_eq!(
        cls_score.len(),
        rois.len() * classes,
        "bbox_head_detect: cls_score is [R, C]"
    );
    let mut scores = cls_score.to_vec();
    scores.chunks_exact_mut(classes).for_each(softmax_in_place);
    detect_decoded(
        &cfg.nms,
        rois,
        im_scale,
        im_shape,
        &scores,
        classes,
        bbox_pred,
        BoxRegression::PerClass,
        &cfg.bbox_assigner.bbox_reg_weights,
    )
}

/// Steps 1 and 3-5 on class probabilities `scores` (`[R, classes]`): the
/// RoIs back to the original picture, decoded by `bbox_pred` as
/// `regression` says with `variances`, clipped to `im_shape`, and NMS.
#[allow(clippy::too_many_arguments)]
pub(crate) fn detect_decoded(
    nms: &NmsConfig,
    rois: &[BoxXyxy],
    im_scale: f32,
    im_shape: &[f32; 3],
    scores: &[f32],
    classes: usize,
    bbox_pred: &[f32],
    regression: BoxRegression,
    variances: &[f32; 4],
) -> Vec<Detection> {
    assert_eq!(scores.len(), rois.len() * classes, "scores are [R, C]");
    let box_classes = match regression {
        BoxRegression::PerClass => classes,
        BoxRegression::ClassAgnostic => CLASS_AGNOSTIC_BOXES,
    };
    assert_eq!(
        bbox_pred.len(),
        rois.len() * 4 * box_classes,
        "bbox_pred is [R, {}]",
        4 * box_classes
    );
    // [R, C] boxes: RoI r's box for class c at r * C + c.
    let mut boxes = Vec::with_capacity(rois.len() * classes);
    for (roi, deltas) in rois.iter().zip(bbox_pred.chunks_exact(4 * box_classes)) {
        let prior = roi.map(|v| v / im_scale);
        let decode_clip = |d: &[f32]| {
            let decoded = decode(&prior, variances, &[d[0], d[1], d[2], d[3]], false);
            box_clip(&decoded, im_shape)
        };
        match regression {
            BoxRegression::PerClass => boxes.extend(deltas.chunks_exact(4).map(decode_clip)),
            BoxRegression::ClassAgnostic => {
                let shared = decode_clip(&deltas[4..8]);
                boxes.extend(std::iter::repeat_n(shared, classes));
            }
        }
    }
    multiclass_nms_class_boxes(nms, &boxes, scores, classes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{floats, quads, read};

    /// Paddle's `get_prediction` ops on two images' RoIs and head outputs,
    /// at BBoxHead's NMS settings and with keep_top_k 6
    /// (`core/tests/fixtures/faster_rcnn/bbox_head.py`): the same
    /// detections in the same order, scores within 1e-5, boxes within
    /// 1e-3 pixels.
    #[test]
    fn detections_equal_paddles() {
        let f = read("faster_rcnn/bbox_head.json");
        let classes = f["classes"].as_u64().expect("classes") as usize;
        let d = &f["detection"];
        let count = d["rois_per_image"].as_u64().expect("rois") as usize;
        let cls_score = floats(&d["cls_score"]);
        let bbox_pred = floats(&d["bbox_pred"]);
        let row3 = |v: &serde_json::Value| {
            let r = floats(v);
            [r[0], r[1], r[2]]
        };
        for case in d["cases"].as_array().expect("cases") {
            let mut cfg = RcnnConfig::faster_rcnn(classes);
            cfg.nms.keep_top_k = Some(case["keep_top_k"].as_u64().expect("keep") as usize);
            for (image, want) in case["detections"]
                .as_array()
                .expect("images")
                .iter()
                .enumerate()
            {
                let im_info = row3(&d["im_info"][image]);
                let got = bbox_head_detect(
                    &cfg,
                    &quads(&d["rois"][image]),
                    im_info[2],
                    &row3(&d["im_shape"][image]),
                    &cls_score[image * count * classes..][..count * classes],
                    &bbox_pred[image * count * 4 * classes..][..count * 4 * classes],
                );
                let want = want.as_array().expect("rows");
                let keep = cfg.nms.keep_top_k;
                assert_eq!(got.len(), want.len(), "image {image}, keep {keep:?}");
                for (g, w) in got.iter().zip(want) {
                    let w = floats(w);
                    assert_eq!(g.class, w[0] as usize, "{g:?} vs {w:?}");
                    assert!((g.score - w[1]).abs() <= 1e-5, "{g:?} vs {w:?}");
                    for k in 0..4 {
                        assert!((g.bbox[k] - w[2 + k]).abs() <= 1e-3, "{g:?} vs {w:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn zero_deltas_give_the_roi_in_the_original_picture() {
        // One RoI at scale 2, two classes, confident in class 1, no offsets:
        // the detection is the RoI halved (decode of zero deltas is the prior,
        // as Paddle's x2 = centre + w / 2 - 1 with w = x2 - x1 + 1).
        let cfg = RcnnConfig::faster_rcnn(2);
        let roi = [20.0, 40.0, 59.0, 99.0];
        let out = bbox_head_detect(
            &cfg,
            &[roi],
            2.0,
            &[100.0, 100.0, 1.0],
            &[0.0, 5.0],
            &[0.0; 8],
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].class, 1);
        assert_eq!(out[0].bbox, [10.0, 20.0, 29.5, 49.5]);
        assert!((out[0].score - 1.0 / (1.0 + (-5f32).exp())).abs() < 1e-6);
    }
}
