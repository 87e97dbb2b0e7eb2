//! The whole Faster R-CNN (C4) against PaddleDetection's own `FasterRCNN`
//! on the same weights and batch (`tests/fixtures/faster_rcnn/model_parity.py`):
//! the four losses and parameter gradients of the train program, the test
//! program's detections, and the loading rules on the checkpoint Paddle
//! saved.

use super::faster_rcnn::FasterRcnnSpec;
use super::faster_rcnn_detector::FasterRcnnDetector;
use crate::detector::{Detector, Losses};
use crate::fixtures::{floats, quads, read};
use crate::loading::{plan_loading, ExcludePatterns, TensorInfo};
use crate::models::ConvNet;
use crate::rcnn::RcnnConfig;
use crate::tensor::Tensor;
use crate::yolo::{Detection, GroundTruth};
use crate::CpuBackend;
use pulsefocus_formats::{load_checkpoint, Checkpoint};
use serde_json::Value;

/// Ground-truth slots per image in the batch (the fixture has up to 3).
const MAX_BOXES: usize = 3;

/// A whole-model fixture's batch (Mask R-CNN's and RetinaNet's read it too).
pub(super) struct Fixture {
    pub json: Value,
    pub classes: usize,
    pub height: usize,
    pub width: usize,
    pub im_info: Vec<[f32; 3]>,
    /// Each picture's original `[height, width]`.
    pub pictures: Vec<[f32; 2]>,
}

impl Fixture {
    /// Each picture's original `[width, height]`, as `detect` takes them.
    pub fn original_sizes(&self) -> Vec<[u32; 2]> {
        self.pictures
            .iter()
            .map(|&[h, w]| [w as u32, h as u32])
            .collect()
    }
}

/// `tests/fixtures/PATH`, a script's `model_parity.json`.
pub(super) fn read_fixture(path: &str) -> Fixture {
    let json = read(path);
    let rows = |key: &str| -> Vec<Vec<f32>> {
        json[key]
            .as_array()
            .expect(key)
            .iter()
            .map(floats)
            .collect()
    };
    let im_info = rows("im_info").iter().map(|v| [v[0], v[1], v[2]]).collect();
    // `[height, width]`, or R-CNN's `[height, width, 1]`.
    let pictures = rows("im_shape").iter().map(|s| [s[0], s[1]]).collect();
    Fixture {
        classes: json["classes"].as_u64().expect("classes") as usize,
        height: json["height"].as_u64().expect("height") as usize,
        width: json["width"].as_u64().expect("width") as usize,
        im_info,
        pictures,
        json,
    }
}

fn fixture() -> Fixture {
    read_fixture("faster_rcnn/model_parity.json")
}

/// The checkpoint directory `tests/fixtures/DIR` as Paddle saved it.
pub(super) fn read_checkpoint(dir: &str) -> Checkpoint {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir);
    load_checkpoint(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

fn checkpoint() -> Checkpoint {
    read_checkpoint("faster_rcnn/model_parity")
}

/// The script's settings: the config's, with both samplers taking anchors
/// and RoIs in order.
fn config(classes: usize) -> RcnnConfig {
    let mut config = RcnnConfig::faster_rcnn(classes);
    config.rpn_target.use_random = false;
    config.bbox_assigner.use_random = false;
    config
}

/// Sets every parameter of `net` from `checkpoints` (Mask R-CNN's C4
/// fixture adds its mask head's to Faster R-CNN's): each of ours set, none
/// of Paddle's left over.
pub(super) fn set_params(net: &mut ConvNet<CpuBackend>, checkpoints: &[Checkpoint]) {
    for (name, tensor) in checkpoints.iter().flat_map(|c| c.iter()) {
        net.set_param(name, &tensor.to_f32_vec())
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
    }
    let count: usize = checkpoints.iter().map(|c| c.len()).sum();
    assert_eq!(count, net.slots().len());
}

fn model(cpu: &CpuBackend, classes: usize) -> FasterRcnnDetector<CpuBackend> {
    let spec = FasterRcnnSpec::small_c4(classes);
    let mut model = FasterRcnnDetector::new(cpu, spec, config(classes), 0);
    set_params(model.net_mut(), &[checkpoint()]);
    model
}

/// The images `which` of the batch as the script makes them: a hash of the
/// position, exact in f32.
pub(super) fn images(cpu: &CpuBackend, f: &Fixture, which: &[usize]) -> Tensor<CpuBackend> {
    let (h, w) = (f.height, f.width);
    let mut values = Vec::with_capacity(which.len() * 3 * h * w);
    for &n in which {
        for c in 0..3 {
            for y in 0..h {
                for x in 0..w {
                    let hash = (x * x * 7 + x * y * 3 + y * 13 + c * 29 + n * 31) % 17;
                    values.push((hash as f32 - 8.0) / 4.0);
                }
            }
        }
    }
    Tensor::from_host(cpu, &[which.len(), 3, h, w], &values)
}

/// Paddle's pixel boxes (width x2 - x1 + 1) of the images `which` as the
/// loader's slots, centre and size relative to the original picture,
/// `max_boxes` per image; and their classes.
pub(super) fn truth_slots(f: &Fixture, which: &[usize], max_boxes: usize) -> (Vec<f32>, Vec<i32>) {
    let mut boxes = vec![0.0; which.len() * max_boxes * 4];
    let mut labels = vec![0; which.len() * max_boxes];
    for (i, &n) in which.iter().enumerate() {
        let [height, width] = f.pictures[n];
        let corners = quads(&f.json["gt_boxes"][n]);
        let classes = floats(&f.json["gt_classes"][n]);
        assert!(corners.len() <= max_boxes);
        for (k, ([x1, y1, x2, y2], class)) in corners.iter().zip(classes).enumerate() {
            let (w, h) = (x2 - x1 + 1.0, y2 - y1 + 1.0);
            let slot = i * max_boxes + k;
            boxes[slot * 4..][..4].copy_from_slice(&[
                (x1 + w / 2.0) / width,
                (y1 + h / 2.0) / height,
                w / width,
                h / height,
            ]);
            labels[slot] = class as i32;
        }
    }
    (boxes, labels)
}

/// Each loss within 1e-4 relative of Paddle's (`names` in our order) in a
/// train step's `paddle` (`losses`).
pub(super) fn assert_losses_equal(paddle: &Value, names: &[&str], losses: &Losses) {
    assert_eq!(names.len(), losses.values().len());
    for (name, &ours) in names.iter().zip(losses.values()) {
        let paddle = paddle["losses"][name].as_f64().expect(name) as f32;
        assert!(
            (ours - paddle).abs() <= 1e-4 * paddle.abs(),
            "{name}: {ours}, Paddle's {paddle}"
        );
    }
}

/// A train step's gradients in `step` (`grads`: every `stride`-th value)
/// within their float32 spread (`grad_spread`), or 1e-4 of their largest
/// value where that is more.
pub(super) fn assert_gradients_equal(step: &Value, net: &ConvNet<CpuBackend>) {
    for (name, paddle) in step["grads"].as_object().expect("grads") {
        let stride = paddle["stride"].as_u64().expect("stride") as usize;
        let paddle = floats(&paddle["values"]);
        let ours = net
            .param_grad(name)
            .unwrap_or_else(|| panic!("{name}: no gradient"));
        let ours: Vec<f32> = ours.into_iter().step_by(stride).collect();
        assert_eq!(ours.len(), paddle.len(), "{name}");
        let largest = paddle.iter().fold(0.0f32, |m, g| m.max(g.abs()));
        assert!(largest > 0.0, "{name}: all zero");
        let spread = step["grad_spread"][name].as_f64().expect("spread") as f32;
        let allowed = spread.max(1e-4 * largest);
        let worst = ours
            .iter()
            .zip(&paddle)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            worst <= allowed,
            "{name}: off by {worst}, allowed {allowed}"
        );
    }
}

/// Image `n`'s detections in Paddle's test program as our `detect` orders
/// them (by class, then best first; Paddle lists a class's detections by
/// RoI), each with its index in Paddle's list; asserts ours (`found`) are
/// the same: classes from 0, scores within 1e-4 and corners within 1e-2
/// pixels of the original picture.
pub(super) fn assert_detections_equal(
    f: &Fixture,
    n: usize,
    found: &[Detection],
) -> Vec<(usize, Vec<f32>)> {
    let mut paddle: Vec<(usize, Vec<f32>)> = f.json["detections"][n]
        .as_array()
        .expect("detections")
        .iter()
        .map(floats)
        .enumerate()
        .collect();
    assert!(!paddle.is_empty());
    assert_eq!(found.len(), paddle.len(), "image {n}");
    paddle.sort_by(|(_, a), (_, b)| a[0].total_cmp(&b[0]).then(b[1].total_cmp(&a[1])));
    for (d, (_, row)) in found.iter().zip(&paddle) {
        let close = d.class + 1 == row[0] as usize
            && (d.score - row[1]).abs() <= 1e-4
            && d.bbox
                .iter()
                .zip(&row[2..])
                .all(|(a, b)| (a - b).abs() <= 1e-2);
        assert!(close, "image {n}: {d:?}, Paddle's {row:?}");
    }
    paddle
}

/// Paddle's train program: each of the four losses within 1e-4 relative,
/// and the gradients of parameters from res3 to `bbox_pred` (every
/// `stride`-th value) within their float32 spread: how far Paddle's own
/// gradients move when its weights move by a relative 1e-6 (see the
/// script), or 1e-4 of their largest value where that is more.
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
    let names = ["loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox"];
    assert_losses_equal(&f.json, &names, &losses);
    assert_gradients_equal(&f.json, model.net());
}

/// Paddle's test program: the same detections per image in the same order
/// (by class, then by score: the script keeps one class's scores 3.9e-4 or
/// more apart and from the threshold), classes from 0, scores within 1e-4
/// and corners within 1e-2 pixels of the original picture (the largest
/// differences seen: 6e-7 and 2e-5 pixels).
#[test]
fn detections_equal_paddledetections() {
    let cpu = CpuBackend::new();
    let f = fixture();
    let mut model = model(&cpu, f.classes);
    model.net_mut().set_training(false);
    let original = f.original_sizes();
    let batch: Vec<usize> = (0..f.im_info.len()).collect();
    let found = model.detect(&images(&cpu, &f, &batch), &original, &f.im_info);
    for (n, ours) in found.iter().enumerate() {
        assert_detections_equal(&f, n, ours);
    }
}

/// The names the model has but an ImageNet classification checkpoint does
/// not: the RPN head and the box head's two layers.
const HEADS: &[&str] = &[
    "conv_rpn_",
    "rpn_cls_logits_",
    "rpn_bbox_pred_",
    "cls_score_",
    "bbox_pred_",
];

/// The checkpoint PaddleDetection saved loads whole; the seed's command's
/// `finetune_exclude_pretrained_params=['cls_score','bbox_pred']` excludes
/// exactly `cls_score_w/_b` and `bbox_pred_w/_b`, each reported with its
/// pattern, and the rest loads.
#[test]
fn a_paddle_checkpoint_loads_whole_and_the_seeds_patterns_exclude_the_box_head() {
    let classes = fixture().classes;
    let specs = FasterRcnnSpec::small_c4(classes).param_specs();
    let tensors = TensorInfo::list(&checkpoint());
    let nothing = ExcludePatterns::new(&[]).expect("no patterns");
    let all = plan_loading(&specs, &tensors, &nothing);
    assert_eq!(all.loaded.len(), specs.len());
    assert!(all.missing.is_empty() && all.unused.is_empty());
    assert!(all.shape_mismatch.is_empty() && all.excluded.is_empty());

    let seed = ["cls_score".to_string(), "bbox_pred".to_string()];
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
        ]
    );
    assert_eq!(report.loaded.len(), specs.len() - 4);
    assert!(report.missing.is_empty() && report.unused.is_empty());
    assert!(report.shape_mismatch.is_empty());
}

/// Fine-tuning to another class count without patterns: the box head's
/// four tensors have the other count's shapes and are skipped by shape;
/// everything else loads.
#[test]
fn another_class_count_skips_the_box_head_by_shape() {
    let classes = fixture().classes + 2;
    let specs = FasterRcnnSpec::small_c4(classes).param_specs();
    let tensors = TensorInfo::list(&checkpoint());
    let report = plan_loading(&specs, &tensors, &ExcludePatterns::new(&[]).expect("none"));
    let skipped: Vec<&str> = report
        .shape_mismatch
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(
        skipped,
        ["cls_score_w", "cls_score_b", "bbox_pred_w", "bbox_pred_b"]
    );
    assert_eq!(report.loaded.len(), specs.len() - 4);
    assert!(report.missing.is_empty() && report.unused.is_empty());
    assert!(report.excluded.is_empty());
}

/// An ImageNet classification checkpoint (as `ResNet50_cos_pretrained`:
/// the backbone's names, res5 included, and a classifier `fc_0`, made here
/// from Paddle's saved tensors): the backbone and res5 load, the RPN and
/// box heads are missing, and `fc_0.*` is reported unused.
#[test]
fn an_imagenet_checkpoint_loads_the_backbone_and_leaves_the_classifier_unused() {
    let classes = fixture().classes;
    let specs = FasterRcnnSpec::small_c4(classes).param_specs();
    let mut tensors: Vec<TensorInfo> = TensorInfo::list(&checkpoint())
        .into_iter()
        .filter(|t| !HEADS.iter().any(|h| t.name.starts_with(h)))
        .collect();
    let features = specs
        .iter()
        .find(|p| p.name == "res5a_branch2c_weights")
        .expect("res5")
        .shape[0];
    let dtype = tensors[0].dtype;
    for (name, shape) in [("fc_0.w_0", vec![features, 1000]), ("fc_0.b_0", vec![1000])] {
        tensors.push(TensorInfo {
            name: name.to_string(),
            shape,
            dtype,
        });
    }
    let report = plan_loading(&specs, &tensors, &ExcludePatterns::new(&[]).expect("none"));
    assert_eq!(report.unused, ["fc_0.b_0", "fc_0.w_0"]);
    let heads: Vec<String> = specs
        .iter()
        .filter(|p| HEADS.iter().any(|h| p.name.starts_with(h)))
        .map(|p| p.name.clone())
        .collect();
    assert_eq!(heads.len(), 10);
    assert_eq!(report.missing, heads);
    assert_eq!(report.loaded.len(), specs.len() - heads.len());
    assert!(report.loaded.iter().any(|n| n == "res5a_branch2a_weights"));
    assert!(report.shape_mismatch.is_empty() && report.excluded.is_empty());
}
