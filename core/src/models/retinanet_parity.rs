//! The whole RetinaNet against PaddleDetection's own `RetinaNet` on the same
//! weights and batch (`tests/fixtures/retinanet/model_parity.py`): both
//! losses and parameter gradients of the train program from res3 to the
//! predictions (P6 and P7's extra convs included), the test program's
//! detections, and the loading rules on the checkpoint Paddle saved.

use super::faster_rcnn_parity::{
    assert_gradients_equal, assert_losses_equal, images, read_checkpoint, read_fixture, set_params,
    truth_slots, Fixture,
};
use super::retinanet::RetinaNetSpec;
use super::retinanet_detector::RetinaNetDetector;
use crate::detector::Detector;
use crate::fixtures::floats;
use crate::loading::{plan_loading, ExcludePatterns, TensorInfo};
use crate::retinanet::RetinaConfig;
use crate::yolo::GroundTruth;
use crate::CpuBackend;
use pulsefocus_formats::Checkpoint;

/// Ground-truth slots per image in the batch (the fixture has up to 4).
const MAX_BOXES: usize = 4;

fn fixture() -> Fixture {
    read_fixture("retinanet/model_parity.json")
}

fn checkpoint() -> Checkpoint {
    read_checkpoint("retinanet/model_parity")
}

/// The model with every parameter Paddle saved.
fn model(cpu: &CpuBackend, classes: usize) -> RetinaNetDetector<CpuBackend> {
    let spec = RetinaNetSpec::small(classes);
    let mut model = RetinaNetDetector::new(cpu, spec, RetinaConfig::default(), 0);
    set_params(model.net_mut(), &[checkpoint()]);
    model
}

/// Both images of the batch.
const BOTH: [usize; 2] = [0, 1];

/// Paddle's train program: both losses within 1e-4 relative, and the
/// gradients of parameters from res3 to `retnet_bbox_pred` (every
/// `stride`-th value) within their float32 spread: how far Paddle's own
/// gradients move when its weights move by a relative 1e-6 (see the
/// script), or 1e-4 of their largest value where that is more.
#[test]
fn losses_and_gradients_equal_paddledetections() {
    let cpu = CpuBackend::new();
    let f = fixture();
    assert_eq!(f.im_info.len(), BOTH.len());
    let mut model = model(&cpu, f.classes);
    model.net_mut().set_training(true);
    let (boxes, labels) = truth_slots(&f, &BOTH, MAX_BOXES);
    let truth = GroundTruth {
        boxes: &boxes,
        labels: &labels,
        scores: None,
        max_boxes: MAX_BOXES,
        polygons: &[],
    };
    let losses = model.train_pass(&images(&cpu, &f, &BOTH), &truth, &f.im_info);
    assert_losses_equal(&f.json, &["loss_cls", "loss_bbox"], &losses);
    assert_gradients_equal(&f.json, model.net());
}

/// Paddle's test program: the same detections per image, as sets (Paddle
/// lists them by score over all classes, ours by class, then score; the
/// script prints how close two scores come), classes from 0, scores within
/// 1e-5 and corners within 1e-3 pixels of the original picture.
#[test]
fn detections_equal_paddledetections() {
    let cpu = CpuBackend::new();
    let f = fixture();
    let mut model = model(&cpu, f.classes);
    model.net_mut().set_training(false);
    let original = f.original_sizes();
    let found = model.detect(&images(&cpu, &f, &BOTH), &original, &f.im_info);
    assert_eq!(found.len(), f.im_info.len());
    for (n, ours) in found.iter().enumerate() {
        let mut paddle: Vec<Vec<f32>> = f.json["detections"][n]
            .as_array()
            .expect("detections")
            .iter()
            .map(floats)
            .collect();
        assert!(!paddle.is_empty());
        assert_eq!(ours.len(), paddle.len(), "image {n}");
        // Each of ours takes away the Paddle row it matches.
        for d in ours {
            let close = |row: &Vec<f32>| {
                d.class + 1 == row[0] as usize
                    && (d.score - row[1]).abs() <= 1e-5
                    && d.bbox
                        .iter()
                        .zip(&row[2..])
                        .all(|(a, b)| (a - b).abs() <= 1e-3)
            };
            let at = paddle.iter().position(close);
            let at = at.unwrap_or_else(|| panic!("image {n}: {d:?} not among Paddle's"));
            paddle.swap_remove(at);
        }
    }
}

/// The checkpoint PaddleDetection saved loads whole; the preset pattern
/// `retnet_cls_pred_fpn` excludes exactly the class prediction's two
/// tensors, and the rest loads.
#[test]
fn a_paddle_checkpoint_loads_whole_and_the_preset_excludes_the_class_prediction() {
    let specs = RetinaNetSpec::small(fixture().classes).param_specs();
    let tensors = TensorInfo::list(&checkpoint());
    let nothing = ExcludePatterns::new(&[]).expect("no patterns");
    let all = plan_loading(&specs, &tensors, &nothing);
    assert_eq!(all.loaded.len(), specs.len());
    assert!(all.missing.is_empty() && all.unused.is_empty());
    assert!(all.shape_mismatch.is_empty() && all.excluded.is_empty());

    let preset = ["retnet_cls_pred_fpn".to_string()];
    let report = plan_loading(
        &specs,
        &tensors,
        &ExcludePatterns::new(&preset).expect("valid"),
    );
    let excluded: Vec<&str> = report.excluded.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        excluded,
        ["retnet_cls_pred_fpn3_w", "retnet_cls_pred_fpn3_b"]
    );
    assert_eq!(report.loaded.len(), specs.len() - 2);
    assert!(report.missing.is_empty() && report.unused.is_empty());
    assert!(report.shape_mismatch.is_empty());
}
