//! The whole Mask R-CNN (FPN) against PaddleDetection's own `MaskRCNN` on
//! the same weights and batch (`tests/fixtures/mask_rcnn/model_parity.py`):
//! the five losses and parameter gradients of the train program from res3
//! to `mask_fcn_logits`, the test program's detections and their pasted
//! masks, and the loading rules on the checkpoint Paddle saved. The batch
//! and the comparisons are Faster R-CNN's (`faster_rcnn_parity`).

use super::faster_rcnn_detector::{FasterRcnnDetector, MASK_LOSS_NAMES};
use super::faster_rcnn_parity::{
    assert_detections_equal, assert_gradients_equal, assert_losses_equal, images, read_checkpoint,
    read_fixture, set_params, truth_slots, Fixture,
};
use super::mask_rcnn::MaskRcnnSpec;
use crate::detector::Detector;
use crate::fixtures::floats;
use crate::loading::{plan_loading, ExcludePatterns, TensorInfo};
use crate::rcnn::{ProposalConfig, RcnnConfig};
use crate::yolo::GroundTruth;
use crate::CpuBackend;

/// Ground-truth slots per image in the batch (the fixture has up to 3).
const MAX_BOXES: usize = 3;

fn fixture() -> Fixture {
    read_fixture("mask_rcnn/model_parity.json")
}

/// `mask_rcnn_r50_fpn_1x.yml`'s settings: Faster R-CNN's with the
/// proposals' top-n per level, and both samplers taking anchors and RoIs
/// in order as the script sets them.
fn config(classes: usize) -> RcnnConfig {
    let per_level = |pre_nms_top_n, post_nms_top_n| ProposalConfig {
        pre_nms_top_n,
        post_nms_top_n,
        ..ProposalConfig::train()
    };
    let mut config = RcnnConfig {
        train_proposal: per_level(2000, 2000),
        test_proposal: per_level(1000, 1000),
        ..RcnnConfig::faster_rcnn(classes)
    };
    config.rpn_target.use_random = false;
    config.bbox_assigner.use_random = false;
    config
}

fn model(cpu: &CpuBackend, classes: usize) -> FasterRcnnDetector<CpuBackend> {
    let spec = MaskRcnnSpec::small_fpn(classes);
    let mut model = FasterRcnnDetector::with_mask_head(cpu, spec, config(classes), 0);
    set_params(model.net_mut(), &read_checkpoint("mask_rcnn/model_parity"));
    model
}

/// Each image's objects' polygons as the loader gives them: per slot, its
/// polygons `[x0, y0, x1, y1, ...]` in original pixels.
fn polygons(f: &Fixture) -> Vec<Vec<Vec<Vec<f32>>>> {
    f.json["gt_polygons"]
        .as_array()
        .expect("gt_polygons")
        .iter()
        .map(|image| {
            let objects = image.as_array().expect("objects");
            objects
                .iter()
                .map(|o| o.as_array().expect("polygons").iter().map(floats).collect())
                .collect()
        })
        .collect()
}

/// Paddle's train program: each of the five losses within 1e-4 relative,
/// and the gradients of parameters from res3 through the pyramid, the RPN,
/// the box head and the mask head (every `stride`-th value) within their
/// float32 spread, or 1e-4 of their largest value where that is more.
#[test]
fn losses_and_gradients_equal_paddledetections() {
    let cpu = CpuBackend::new();
    let f = fixture();
    let mut model = model(&cpu, f.classes);
    model.net_mut().set_training(true);
    let (boxes, labels) = truth_slots(&f, MAX_BOXES);
    let polygons = polygons(&f);
    let truth = GroundTruth {
        boxes: &boxes,
        labels: &labels,
        scores: None,
        max_boxes: MAX_BOXES,
        polygons: &polygons,
    };
    let losses = model.train_pass(&images(&cpu, &f), &truth, &f.im_info);
    assert_eq!(model.loss_names(), MASK_LOSS_NAMES);
    let names = [
        "loss_rpn_cls",
        "loss_rpn_bbox",
        "loss_cls",
        "loss_bbox",
        "loss_mask",
    ];
    assert_losses_equal(&f, &names, &losses);
    assert_gradients_equal(&f, model.net());
}

/// Paddle's test program: the same detections per image (see
/// `assert_detections_equal`), and each one's mask as PaddleDetection's
/// `mask_encode` pastes Paddle's `mask_pred` into the picture: the same
/// RLE, pixel for pixel (the script checks that moving every mask logit by
/// 1e-4 flips no pixel).
#[test]
fn detections_and_masks_equal_paddledetections() {
    let cpu = CpuBackend::new();
    let f = fixture();
    let mut model = model(&cpu, f.classes);
    model.net_mut().set_training(false);
    let original: Vec<[u32; 2]> = f
        .pictures
        .iter()
        .map(|&[h, w]| [w as u32, h as u32])
        .collect();
    let found = model.detect(&images(&cpu, &f), &original, &f.im_info);
    let masks = model.masks().expect("a mask head's masks");
    assert_eq!(masks.len(), found.len());
    let mut compared = 0;
    for (n, ours) in found.iter().enumerate() {
        let paddle = assert_detections_equal(&f, n, ours);
        assert_eq!(masks[n].len(), ours.len(), "image {n}");
        let [h, w] = original[n];
        for (k, (mask, (i, _))) in masks[n].iter().zip(&paddle).enumerate() {
            let rle = &f.json["masks"][n][*i];
            assert_eq!((mask.height(), mask.width()), (w, h), "image {n}");
            assert_eq!(
                mask.area(),
                rle["area"].as_u64().expect("area"),
                "image {n}, detection {k}"
            );
            assert_eq!(
                mask.to_compressed(),
                rle["counts"].as_str().expect("counts"),
                "image {n}, detection {k}"
            );
            compared += 1;
        }
    }
    assert_eq!(compared, 24);
}

/// The checkpoint PaddleDetection saved loads whole; the seed's command's
/// `finetune_exclude_pretrained_params=['cls_score', 'bbox_pred',
/// 'mask_fcn_logits']` excludes exactly the box head's two layers and the
/// mask head's last, each reported with its pattern, and the rest loads.
#[test]
fn a_paddle_checkpoint_loads_whole_and_the_seeds_patterns_exclude_the_heads() {
    let classes = fixture().classes;
    let specs = MaskRcnnSpec::small_fpn(classes).param_specs();
    let tensors = TensorInfo::list(&read_checkpoint("mask_rcnn/model_parity"));
    let nothing = ExcludePatterns::new(&[]).expect("no patterns");
    let all = plan_loading(&specs, &tensors, &nothing);
    assert_eq!(all.loaded.len(), specs.len());
    assert!(all.missing.is_empty() && all.unused.is_empty());
    assert!(all.shape_mismatch.is_empty() && all.excluded.is_empty());

    let seed = ["cls_score", "bbox_pred", "mask_fcn_logits"].map(String::from);
    let report = plan_loading(
        &specs,
        &tensors,
        &ExcludePatterns::new(&seed).expect("valid"),
    );
    let excluded: Vec<(&str, &str)> = report
        .excluded
        .iter()
        .map(|e| (e.name.as_str(), e.pattern.as_str()))
        .collect();
    assert_eq!(
        excluded,
        [
            ("cls_score_w", "cls_score"),
            ("cls_score_b", "cls_score"),
            ("bbox_pred_w", "bbox_pred"),
            ("bbox_pred_b", "bbox_pred"),
            ("mask_fcn_logits_w", "mask_fcn_logits"),
            ("mask_fcn_logits_b", "mask_fcn_logits"),
        ]
    );
    assert_eq!(report.loaded.len(), specs.len() - 6);
    assert!(report.missing.is_empty() && report.unused.is_empty());
    assert!(report.shape_mismatch.is_empty());
}
