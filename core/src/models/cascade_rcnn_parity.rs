//! The whole Cascade R-CNN and Cascade Mask R-CNN against
//! PaddleDetection's own `CascadeRCNN` and `CascadeMaskRCNN` on the same
//! weights and batch (`tests/fixtures/cascade_rcnn/model_parity.py`): the
//! losses (each stage's weighted as Paddle reports it) and the parameter
//! gradients of the train program from res3 to every stage's `bbox_pred`
//! (and the mask head's), the test program's detections (and their pasted
//! masks), and the loading rules on the checkpoint Paddle saved. The batch
//! and the comparisons are Faster R-CNN's and Mask R-CNN's
//! (`faster_rcnn_parity`, `mask_rcnn_parity`). Paddle 1.8.5 lacks 2.0's
//! cascade mode of `generate_proposal_labels`; the script does what it does
//! with 1.8.5's op (see its docstring), so stages 2 and 3 label every RoI
//! they are given as 2.0 does.

use super::cascade_heads::{CASCADE_LOSS_NAMES, CASCADE_MASK_LOSS_NAMES};
use super::cascade_rcnn::CascadeRcnnSpec;
use super::faster_rcnn_detector::FasterRcnnDetector;
use super::faster_rcnn_parity::{
    assert_detections_equal, assert_gradients_equal, assert_losses_equal, images, read_checkpoint,
    read_fixture, set_params, truth_slots, Fixture,
};
use super::mask_rcnn_parity::{assert_detections_and_masks_equal, polygons};
use crate::detector::Detector;
use crate::loading::{plan_loading, ExcludePatterns, TensorInfo};
use crate::rcnn::{ProposalConfig, RcnnConfig};
use crate::yolo::GroundTruth;
use crate::CpuBackend;
use pulsefocus_formats::Checkpoint;

/// Ground-truth slots per image in the batch (the fixture has up to 3).
const MAX_BOXES: usize = 3;

/// Paddle's names of the losses, in `CASCADE_MASK_LOSS_NAMES`' order
/// (Cascade R-CNN's: all but the last).
const LOSSES: [&str; 9] = [
    "loss_rpn_cls",
    "loss_rpn_bbox",
    "loss_cls_0",
    "loss_loc_0",
    "loss_cls_1",
    "loss_loc_1",
    "loss_cls_2",
    "loss_loc_2",
    "loss_mask",
];

/// One of the two models the script builds.
struct Kind {
    /// The script's `model_parity<_mask>.json`.
    fixture: &'static str,
    spec: fn(usize) -> CascadeRcnnSpec,
    /// The checkpoint directories that together hold every parameter.
    checkpoints: &'static [&'static str],
    /// A checkpoint directory whose tensors replace some of those.
    replaced: Option<&'static str>,
    /// The test program's detections over both images.
    detections: usize,
    loss_names: &'static [&'static str],
    /// The output layers `finetune_exclude_pretrained_params` names.
    heads: &'static [&'static str],
}

const CASCADE: Kind = Kind {
    fixture: "cascade_rcnn/model_parity.json",
    spec: CascadeRcnnSpec::small,
    checkpoints: &["cascade_rcnn/model_parity"],
    replaced: None,
    detections: 26,
    loss_names: CASCADE_LOSS_NAMES,
    heads: &["cls_score", "bbox_pred"],
};

/// The cascade model with every stage's `bbox_pred` ten times larger: the
/// stages move their RoIs further, a fifth to two fifths of them past the
/// picture's edges.
const MOVED: Kind = Kind {
    fixture: "cascade_rcnn/model_parity_moved.json",
    replaced: Some("cascade_rcnn/model_parity_moved"),
    detections: 39,
    ..CASCADE
};

const MASK: Kind = Kind {
    fixture: "cascade_rcnn/model_parity_mask.json",
    spec: CascadeRcnnSpec::small_mask,
    checkpoints: &[
        "cascade_rcnn/model_parity",
        "cascade_rcnn/model_parity_mask",
    ],
    replaced: None,
    detections: 26,
    loss_names: CASCADE_MASK_LOSS_NAMES,
    heads: &["cls_score", "bbox_pred", "mask_fcn_logits"],
};

impl Kind {
    fn fixture(&self) -> Fixture {
        read_fixture(self.fixture)
    }

    fn checkpoints(&self) -> Vec<Checkpoint> {
        self.checkpoints
            .iter()
            .map(|d| read_checkpoint(d))
            .collect()
    }

    fn masks(&self) -> bool {
        self.loss_names.len() == LOSSES.len()
    }

    fn model(&self, cpu: &CpuBackend, classes: usize) -> FasterRcnnDetector<CpuBackend> {
        let spec = (self.spec)(classes);
        let mut model = FasterRcnnDetector::cascade(cpu, spec, config(classes), 0);
        set_params(model.net_mut(), &self.checkpoints());
        if let Some(dir) = self.replaced {
            for (name, tensor) in read_checkpoint(dir).iter() {
                model
                    .net_mut()
                    .set_param(name, &tensor.to_f32_vec())
                    .unwrap_or_else(|e| panic!("{name}: {e:?}"));
            }
        }
        model
    }
}

/// The configs' settings: FPN's proposals (top-n per level), both samplers
/// taking anchors and RoIs in order as the script sets them.
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

/// Paddle's train program on both images: each loss within 1e-4 relative,
/// and the gradients of parameters from res3 through the pyramid, the RPN,
/// each stage's `fc6`, `fc7`, `cls_score` and `bbox_pred` and the mask
/// head (every `stride`-th value) within their float32 spread, or 1e-4 of
/// their largest value where that is more (seen: the losses within 6e-7
/// relative, the gradients within 4e-6 of their largest value).
fn losses_and_gradients_equal(kind: &Kind) {
    let cpu = CpuBackend::new();
    let f = kind.fixture();
    let mut model = kind.model(&cpu, f.classes);
    model.net_mut().set_training(true);
    let batch: Vec<usize> = (0..f.im_info.len()).collect();
    let (boxes, labels) = truth_slots(&f, &batch, MAX_BOXES);
    let polygons = if kind.masks() {
        polygons(&f, &batch)
    } else {
        Vec::new()
    };
    let truth = GroundTruth {
        boxes: &boxes,
        labels: &labels,
        scores: None,
        max_boxes: MAX_BOXES,
        polygons: &polygons,
    };
    let losses = model.train_pass(&images(&cpu, &f, &batch), &truth, &f.im_info);
    assert_eq!(model.loss_names(), kind.loss_names);
    let step = &f.json["train"];
    assert_losses_equal(step, &LOSSES[..kind.loss_names.len()], &losses);
    assert_gradients_equal(step, model.net());
}

/// Paddle's test program: the same detections per image in the same order
/// (see `assert_detections_equal`; the script keeps one class's scores
/// 9e-5 or more apart and 1.5e-4 or more from the threshold; the largest
/// differences seen: 5e-7 in score and 3e-5 pixels), and the mask model's
/// masks as Paddle's pasted RLE, pixel for pixel (the script reports how
/// many pixels flip when every mask logit moves by 1e-4: none).
fn detections_equal(kind: &Kind) {
    let cpu = CpuBackend::new();
    let f = kind.fixture();
    let mut model = kind.model(&cpu, f.classes);
    model.net_mut().set_training(false);
    let original = f.original_sizes();
    let batch: Vec<usize> = (0..f.im_info.len()).collect();
    let found = model.detect(&images(&cpu, &f, &batch), &original, &f.im_info);
    let compared = match model.masks() {
        Some(masks) => assert_detections_and_masks_equal(&f, &found, masks, &original),
        None => (0..found.len())
            .map(|n| assert_detections_equal(&f, n, &found[n]).len())
            .sum(),
    };
    assert_eq!(model.masks().is_some(), kind.masks());
    assert_eq!(compared, kind.detections);
}

/// The checkpoint PaddleDetection saved loads whole; patterns naming the
/// output layers exclude every stage's (`cls_score` matches `cls_score_2`)
/// and the mask head's last, each reported with its pattern, and the rest
/// loads.
fn checkpoint_loads_whole_and_the_patterns_exclude_the_outputs(kind: &Kind) {
    let specs = (kind.spec)(kind.fixture().classes).param_specs();
    let tensors: Vec<TensorInfo> = kind
        .checkpoints()
        .iter()
        .flat_map(TensorInfo::list)
        .collect();
    let nothing = ExcludePatterns::new(&[]).expect("no patterns");
    let all = plan_loading(&specs, &tensors, &nothing);
    assert_eq!(all.loaded.len(), specs.len());
    assert!(all.missing.is_empty() && all.unused.is_empty());
    assert!(all.shape_mismatch.is_empty() && all.excluded.is_empty());

    let patterns: Vec<String> = kind.heads.iter().map(|h| h.to_string()).collect();
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
    let mut layers: Vec<(String, &str)> = Vec::new();
    for suffix in ["", "_2", "_3"] {
        for head in &kind.heads[..2] {
            layers.push((format!("{head}{suffix}"), head));
        }
    }
    layers.extend(kind.heads[2..].iter().map(|h| (h.to_string(), *h)));
    let expected: Vec<(String, &str)> = layers
        .iter()
        .flat_map(|(layer, head)| ["w", "b"].map(|part| (format!("{layer}_{part}"), *head)))
        .collect();
    let expected: Vec<(&str, &str)> = expected.iter().map(|(n, p)| (n.as_str(), *p)).collect();
    assert_eq!(excluded, expected);
    assert_eq!(report.loaded.len(), specs.len() - expected.len());
    assert!(report.missing.is_empty() && report.unused.is_empty());
    assert!(report.shape_mismatch.is_empty());
}

#[test]
fn losses_and_gradients_equal_paddledetections() {
    losses_and_gradients_equal(&CASCADE);
}

#[test]
fn detections_equal_paddledetections() {
    detections_equal(&CASCADE);
}

#[test]
fn checkpoint_loads_whole_and_the_patterns_exclude_every_stages_outputs() {
    checkpoint_loads_whole_and_the_patterns_exclude_the_outputs(&CASCADE);
}

#[test]
fn mask_losses_and_gradients_equal_paddledetections() {
    losses_and_gradients_equal(&MASK);
}

#[test]
fn mask_detections_and_masks_equal_paddledetections() {
    detections_equal(&MASK);
}

#[test]
fn mask_checkpoint_loads_whole_and_the_patterns_exclude_the_outputs() {
    checkpoint_loads_whole_and_the_patterns_exclude_the_outputs(&MASK);
}

#[test]
fn moved_losses_and_gradients_equal_paddledetections() {
    losses_and_gradients_equal(&MOVED);
}

#[test]
fn moved_detections_equal_paddledetections() {
    detections_equal(&MOVED);
}
