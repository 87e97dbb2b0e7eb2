//! The whole Mask R-CNN, FPN and C4, against PaddleDetection's own
//! `MaskRCNN` on the same weights and batch
//! (`tests/fixtures/mask_rcnn/model_parity.py`): the five losses and
//! parameter gradients of the train program from res3 to
//! `mask_fcn_logits`, the test program's detections and their pasted
//! masks, and the loading rules on the checkpoint Paddle saved. The batch
//! and the comparisons are Faster R-CNN's (`faster_rcnn_parity`); the C4
//! model is Faster R-CNN's fixture's with a mask head, trained one image a
//! batch as its config's reader does (at two, Paddle's C4 mask head reads
//! the wrong rows for the second image; ours reads its own, which
//! `c4_batch_mask_loss_is_the_images_weighted_mean` checks).

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
use crate::yolo::{Detection, GroundTruth};
use crate::CpuBackend;
use pulsefocus_formats::rle::Rle;
use pulsefocus_formats::Checkpoint;

/// Ground-truth slots per image in the batch (the fixture has up to 3).
const MAX_BOXES: usize = 3;

/// One of the two configs the script builds.
struct Kind {
    /// The script's name for it (`model_parity_<name>.json`).
    name: &'static str,
    spec: fn(usize) -> MaskRcnnSpec,
    /// The checkpoint directories that together hold every parameter.
    checkpoints: &'static [&'static str],
    /// The test program's detections over both images.
    detections: usize,
}

const FPN: Kind = Kind {
    name: "fpn",
    spec: MaskRcnnSpec::small_fpn,
    checkpoints: &["mask_rcnn/model_parity_fpn"],
    detections: 24,
};

const C4: Kind = Kind {
    name: "c4",
    spec: MaskRcnnSpec::small_c4,
    checkpoints: &["faster_rcnn/model_parity", "mask_rcnn/model_parity_c4"],
    detections: 45,
};

impl Kind {
    fn fixture(&self) -> Fixture {
        read_fixture(&format!("mask_rcnn/model_parity_{}.json", self.name))
    }

    fn checkpoints(&self) -> Vec<Checkpoint> {
        self.checkpoints
            .iter()
            .map(|d| read_checkpoint(d))
            .collect()
    }

    /// The config's settings, with both samplers taking anchors and RoIs
    /// in order as the script sets them; FPN's proposals' top-n are per
    /// level.
    fn config(&self, classes: usize) -> RcnnConfig {
        let mut config = RcnnConfig::faster_rcnn(classes);
        if self.name == "fpn" {
            let per_level = |pre_nms_top_n, post_nms_top_n| ProposalConfig {
                pre_nms_top_n,
                post_nms_top_n,
                ..ProposalConfig::train()
            };
            config.train_proposal = per_level(2000, 2000);
            config.test_proposal = per_level(1000, 1000);
        }
        config.rpn_target.use_random = false;
        config.bbox_assigner.use_random = false;
        config
    }

    fn model(&self, cpu: &CpuBackend, classes: usize) -> FasterRcnnDetector<CpuBackend> {
        let spec = (self.spec)(classes);
        let mut model = FasterRcnnDetector::with_mask_head(cpu, spec, self.config(classes), 0);
        set_params(model.net_mut(), &self.checkpoints());
        model
    }
}

/// The polygons of the images `which` as the loader gives them: per image,
/// per slot, its polygons `[x0, y0, x1, y1, ...]` in original pixels
/// (Cascade Mask R-CNN's fixture has them too).
pub(super) fn polygons(f: &Fixture, which: &[usize]) -> Vec<Vec<Vec<Vec<f32>>>> {
    which
        .iter()
        .map(|&n| {
            let objects = f.json["gt_polygons"][n].as_array().expect("objects");
            objects
                .iter()
                .map(|o| o.as_array().expect("polygons").iter().map(floats).collect())
                .collect()
        })
        .collect()
}

/// Paddle's train program on each of the script's train batches (FPN: both
/// images; C4: each alone, see the script's `KINDS`): each of the five
/// losses within 1e-4 relative, and the gradients of parameters from res3
/// through the RPN, the box head and the mask head (every `stride`-th
/// value) within their float32 spread, or 1e-4 of their largest value
/// where that is more.
fn losses_and_gradients_equal(kind: &Kind) {
    let cpu = CpuBackend::new();
    let f = kind.fixture();
    let mut model = kind.model(&cpu, f.classes);
    model.net_mut().set_training(true);
    let steps = f.json["train"].as_array().expect("train");
    assert!(!steps.is_empty());
    for step in steps {
        let which: Vec<usize> = floats(&step["images"])
            .iter()
            .map(|&n| n as usize)
            .collect();
        let (boxes, labels) = truth_slots(&f, &which, MAX_BOXES);
        let polygons = polygons(&f, &which);
        let truth = GroundTruth {
            boxes: &boxes,
            labels: &labels,
            scores: None,
            max_boxes: MAX_BOXES,
            polygons: &polygons,
        };
        let im_info: Vec<[f32; 3]> = which.iter().map(|&n| f.im_info[n]).collect();
        let losses = model.train_pass(&images(&cpu, &f, &which), &truth, &im_info);
        assert_eq!(model.loss_names(), MASK_LOSS_NAMES);
        let names = [
            "loss_rpn_cls",
            "loss_rpn_bbox",
            "loss_cls",
            "loss_bbox",
            "loss_mask",
        ];
        assert_losses_equal(step, &names, &losses);
        assert_gradients_equal(step, model.net());
    }
}

/// Paddle's test program: the same detections per image (see
/// `assert_detections_equal`), and each one's mask as PaddleDetection's
/// `mask_encode` pastes Paddle's `mask_pred` into the picture: the same
/// RLE, pixel for pixel (the script reports how many pixels flip when
/// every mask logit moves by 1e-5: none).
fn detections_and_masks_equal(kind: &Kind) {
    let cpu = CpuBackend::new();
    let f = kind.fixture();
    let mut model = kind.model(&cpu, f.classes);
    model.net_mut().set_training(false);
    let original = f.original_sizes();
    let batch: Vec<usize> = (0..f.im_info.len()).collect();
    let found = model.detect(&images(&cpu, &f, &batch), &original, &f.im_info);
    let masks = model.masks().expect("a mask head's masks");
    let compared = assert_detections_and_masks_equal(&f, &found, masks, &original);
    assert_eq!(compared, kind.detections);
}

/// Each image's detections `found` as `assert_detections_equal` compares
/// them, and their `masks` (pictures of `original` `[width, height]`) as
/// Paddle's pasted RLE in the fixture's `masks`, pixel for pixel; returns
/// how many were compared (Cascade Mask R-CNN's parity uses it too).
pub(super) fn assert_detections_and_masks_equal(
    f: &Fixture,
    found: &[Vec<Detection>],
    masks: &[Vec<Rle>],
    original: &[[u32; 2]],
) -> usize {
    assert_eq!(masks.len(), found.len());
    let mut compared = 0;
    for (n, ours) in found.iter().enumerate() {
        let paddle = assert_detections_equal(f, n, ours);
        assert_eq!(masks[n].len(), ours.len(), "image {n}");
        let [w, h] = original[n];
        for (k, (mask, (i, _))) in masks[n].iter().zip(&paddle).enumerate() {
            let rle = &f.json["masks"][n][*i];
            assert_eq!((mask.height(), mask.width()), (h, w), "image {n}");
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
    compared
}

/// The checkpoint PaddleDetection saved loads whole; the seed's command's
/// `finetune_exclude_pretrained_params=['cls_score', 'bbox_pred',
/// 'mask_fcn_logits']` excludes exactly the box head's two layers and the
/// mask head's last, each reported with its pattern, and the rest loads.
fn checkpoint_loads_whole_and_the_seeds_patterns_exclude_the_heads(kind: &Kind) {
    let classes = kind.fixture().classes;
    let specs = (kind.spec)(classes).param_specs();
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

#[test]
fn fpn_losses_and_gradients_equal_paddledetections() {
    losses_and_gradients_equal(&FPN);
}

#[test]
fn fpn_detections_and_masks_equal_paddledetections() {
    detections_and_masks_equal(&FPN);
}

#[test]
fn fpn_checkpoint_loads_whole_and_the_seeds_patterns_exclude_the_heads() {
    checkpoint_loads_whole_and_the_seeds_patterns_exclude_the_heads(&FPN);
}

#[test]
fn c4_losses_and_gradients_equal_paddledetections() {
    losses_and_gradients_equal(&C4);
}

#[test]
fn c4_detections_and_masks_equal_paddledetections() {
    detections_and_masks_equal(&C4);
}

/// C4 on a batch of both images, which Paddle's own program gets wrong
/// (its mask head reads the first image's rows for the second; see the
/// script's `KINDS`): each image's samples are its own, so the batch's
/// `loss_mask`, a mean over every mask RoI's M x M targets, is the mean of
/// each image's alone weighted by its count of mask RoIs.
#[test]
fn c4_batch_mask_loss_is_the_images_weighted_mean() {
    let cpu = CpuBackend::new();
    let f = C4.fixture();
    let mut model = C4.model(&cpu, f.classes);
    model.net_mut().set_training(true);
    let steps = f.json["train"].as_array().expect("train");
    let (mut weighted, mut rois) = (0.0, 0.0);
    for step in steps {
        let count = step["mask_rois"].as_f64().expect("mask_rois");
        weighted += count * step["losses"]["loss_mask"].as_f64().expect("loss_mask");
        rois += count;
    }
    let batch = [0, 1];
    assert_eq!(steps.len(), batch.len());
    let (boxes, labels) = truth_slots(&f, &batch, MAX_BOXES);
    let polygons = polygons(&f, &batch);
    let truth = GroundTruth {
        boxes: &boxes,
        labels: &labels,
        scores: None,
        max_boxes: MAX_BOXES,
        polygons: &polygons,
    };
    let losses = model.train_pass(&images(&cpu, &f, &batch), &truth, &f.im_info);
    let ours = losses.values()[4];
    let expected = (weighted / rois) as f32;
    assert!(
        (ours - expected).abs() <= 1e-4 * expected,
        "loss_mask {ours}, the images' weighted mean {expected}"
    );
}

/// Faster R-CNN's checkpoint and the mask head's together.
#[test]
fn c4_checkpoint_loads_whole_and_the_seeds_patterns_exclude_the_heads() {
    checkpoint_loads_whole_and_the_seeds_patterns_exclude_the_heads(&C4);
}
