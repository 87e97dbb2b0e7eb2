//! The whole Cascade R-CNN against PaddleDetection's own `CascadeRCNN` on
//! the same weights and batch (`tests/fixtures/cascade_rcnn/model_parity.py`):
//! the eight losses (each stage's weighted as Paddle reports it) and the
//! parameter gradients of the train program from res3 to every stage's
//! `bbox_pred`, the test program's detections, and the loading rules on the
//! checkpoint Paddle saved. The batch and the comparisons are Faster
//! R-CNN's (`faster_rcnn_parity`). Paddle 1.8.5 lacks 2.0's cascade mode
//! of `generate_proposal_labels`; the script does what it does with 1.8.5's
//! op (see its docstring), so stages 2 and 3 label every RoI they are given
//! as 2.0 does.

use super::cascade_heads::CASCADE_LOSS_NAMES;
use super::cascade_rcnn::CascadeRcnnSpec;
use super::faster_rcnn_detector::FasterRcnnDetector;
use super::faster_rcnn_parity::{
    assert_detections_equal, assert_gradients_equal, assert_losses_equal, images, read_checkpoint,
    read_fixture, set_params, truth_slots, Fixture,
};
use crate::detector::Detector;
use crate::loading::{plan_loading, ExcludePatterns, TensorInfo};
use crate::rcnn::{ProposalConfig, RcnnConfig};
use crate::yolo::GroundTruth;
use crate::CpuBackend;
use pulsefocus_formats::Checkpoint;

/// Ground-truth slots per image in the batch (the fixture has up to 3).
const MAX_BOXES: usize = 3;

/// Paddle's names of the losses, in `CASCADE_LOSS_NAMES`' order.
const LOSSES: [&str; 8] = [
    "loss_rpn_cls",
    "loss_rpn_bbox",
    "loss_cls_0",
    "loss_loc_0",
    "loss_cls_1",
    "loss_loc_1",
    "loss_cls_2",
    "loss_loc_2",
];

fn fixture() -> Fixture {
    read_fixture("cascade_rcnn/model_parity.json")
}

fn checkpoint() -> Checkpoint {
    read_checkpoint("cascade_rcnn/model_parity")
}

/// `cascade_rcnn_r50_fpn_1x.yml`'s settings: FPN's proposals (top-n per
/// level), both samplers taking anchors and RoIs in order as the script
/// sets them.
fn config(classes: usize) -> RcnnConfig {
    let mut config = RcnnConfig::faster_rcnn(classes);
    let per_level = |pre_nms_top_n, post_nms_top_n| ProposalConfig {
        pre_nms_top_n,
        post_nms_top_n,
        ..ProposalConfig::train()
    };
    config.train_proposal = per_level(2000, 2000);
    config.test_proposal = per_level(1000, 1000);
    config.rpn_target.use_random = false;
    config.bbox_assigner.use_random = false;
    config
}

fn model(cpu: &CpuBackend, classes: usize) -> FasterRcnnDetector<CpuBackend> {
    let spec = CascadeRcnnSpec::small(classes);
    let mut model = FasterRcnnDetector::cascade(cpu, spec, config(classes), 0);
    set_params(model.net_mut(), &[checkpoint()]);
    model
}

/// Paddle's train program on both images: each of the eight losses within
/// 1e-4 relative, and the gradients of parameters from res3 through the
/// pyramid, the RPN and each stage's `fc6`, `fc7`, `cls_score` and
/// `bbox_pred` (every `stride`-th value) within their float32 spread, or
/// 1e-4 of their largest value where that is more (seen: the losses within
/// 2e-7 relative, the gradients within 4e-6 of their largest value).
#[test]
fn losses_and_gradients_equal_paddledetections() {
    let cpu = CpuBackend::new();
    let f = fixture();
    let mut model = model(&cpu, f.classes);
    model.net_mut().set_training(true);
    let batch: Vec<usize> = (0..f.im_info.len()).collect();
    let (boxes, labels) = truth_slots(&f, &batch, MAX_BOXES);
    let truth = GroundTruth {
        boxes: &boxes,
        labels: &labels,
        scores: None,
        max_boxes: MAX_BOXES,
        polygons: &[],
    };
    let losses = model.train_pass(&images(&cpu, &f, &batch), &truth, &f.im_info);
    assert_eq!(model.loss_names(), CASCADE_LOSS_NAMES);
    let step = &f.json["train"];
    assert_losses_equal(step, &LOSSES, &losses);
    assert_gradients_equal(step, model.net());
}

/// Paddle's test program: the same detections per image in the same order
/// (see `assert_detections_equal`; the script keeps one class's scores
/// 4e-4 or more apart and 1.5e-4 or more from the threshold; the largest
/// differences seen: 4e-7 in score and 2e-5 pixels).
#[test]
fn detections_equal_paddledetections() {
    let cpu = CpuBackend::new();
    let f = fixture();
    let mut model = model(&cpu, f.classes);
    model.net_mut().set_training(false);
    let original: Vec<[u32; 2]> = f
        .pictures
        .iter()
        .map(|&[h, w]| [w as u32, h as u32])
        .collect();
    let batch: Vec<usize> = (0..f.im_info.len()).collect();
    let found = model.detect(&images(&cpu, &f, &batch), &original, &f.im_info);
    let mut compared = 0;
    for (n, ours) in found.iter().enumerate() {
        compared += assert_detections_equal(&f, n, ours).len();
    }
    assert_eq!(compared, 26);
}

/// The checkpoint PaddleDetection saved loads whole; the patterns
/// `['cls_score', 'bbox_pred']` exclude every stage's two output layers
/// (`cls_score_2` matches `cls_score`), each reported with its pattern, and
/// the rest loads.
#[test]
fn checkpoint_loads_whole_and_the_patterns_exclude_every_stages_outputs() {
    let specs = CascadeRcnnSpec::small(fixture().classes).param_specs();
    let tensors = TensorInfo::list(&checkpoint());
    let nothing = ExcludePatterns::new(&[]).expect("no patterns");
    let all = plan_loading(&specs, &tensors, &nothing);
    assert_eq!(all.loaded.len(), specs.len());
    assert!(all.missing.is_empty() && all.unused.is_empty());
    assert!(all.shape_mismatch.is_empty() && all.excluded.is_empty());

    let patterns = ["cls_score", "bbox_pred"].map(String::from);
    let report = plan_loading(
        &specs,
        &tensors,
        &ExcludePatterns::new(&patterns).expect("valid"),
    );
    let excluded: Vec<(&str, &str)> = report
        .excluded
        .iter()
        .map(|e| (e.name.as_str(), e.pattern.as_str()))
        .collect();
    let mut expected = Vec::new();
    for suffix in ["", "_2", "_3"] {
        for (layer, pattern) in [("cls_score", "cls_score"), ("bbox_pred", "bbox_pred")] {
            for part in ["w", "b"] {
                expected.push((format!("{layer}{suffix}_{part}"), pattern));
            }
        }
    }
    let expected: Vec<(&str, &str)> = expected.iter().map(|(n, p)| (n.as_str(), *p)).collect();
    assert_eq!(excluded, expected);
    assert_eq!(report.loaded.len(), specs.len() - 12);
    assert!(report.missing.is_empty() && report.unused.is_empty());
    assert!(report.shape_mismatch.is_empty());
}
