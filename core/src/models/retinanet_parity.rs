//! The whole RetinaNet against PaddleDetection's own `RetinaNet` on the same
//! weights and batch (`tests/fixtures/retinanet/model_parity.py`): both
//! losses and parameter gradients of the train program from res3 to the
//! predictions (P6 and P7's extra convs included), the test program's
//! detections, and the loading rules on the checkpoint Paddle saved.

use super::retinanet::RetinaNetSpec;
use super::retinanet_detector::RetinaNetDetector;
use crate::detector::Detector;
use crate::fixtures::{floats, quads, read};
use crate::loading::{plan_loading, ExcludePatterns, TensorInfo};
use crate::retinanet::RetinaConfig;
use crate::tensor::Tensor;
use crate::yolo::GroundTruth;
use crate::CpuBackend;
use pulsefocus_formats::{load_checkpoint, Checkpoint};
use serde_json::Value;

/// Ground-truth slots per image in the batch (the fixture has up to 4).
const MAX_BOXES: usize = 4;

struct Fixture {
    json: Value,
    classes: usize,
    height: usize,
    width: usize,
    im_info: Vec<[f32; 3]>,
    /// Each picture's original `[height, width]`.
    pictures: Vec<[f32; 2]>,
}

fn fixture() -> Fixture {
    let json = read("retinanet/model_parity.json");
    let rows = |key: &str| -> Vec<Vec<f32>> {
        json[key]
            .as_array()
            .expect(key)
            .iter()
            .map(floats)
            .collect()
    };
    let im_info = rows("im_info").iter().map(|v| [v[0], v[1], v[2]]).collect();
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

fn checkpoint() -> Checkpoint {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/retinanet/model_parity");
    load_checkpoint(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

/// The model with every parameter Paddle saved: each of ours set, none of
/// Paddle's left over.
fn model(cpu: &CpuBackend, classes: usize) -> RetinaNetDetector<CpuBackend> {
    let checkpoint = checkpoint();
    let spec = RetinaNetSpec::small(classes);
    let mut model = RetinaNetDetector::new(cpu, spec, RetinaConfig::default(), 0);
    for (name, tensor) in checkpoint.iter() {
        model
            .net_mut()
            .set_param(name, &tensor.to_f32_vec())
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
    }
    assert_eq!(checkpoint.len(), model.net().slots().len());
    model
}

/// The images as the script makes them: a hash of the position, exact in
/// f32.
fn images(cpu: &CpuBackend, f: &Fixture) -> Tensor<CpuBackend> {
    let (count, h, w) = (f.im_info.len(), f.height, f.width);
    let mut values = Vec::with_capacity(count * 3 * h * w);
    for n in 0..count {
        for c in 0..3 {
            for y in 0..h {
                for x in 0..w {
                    let hash = (x * x * 7 + x * y * 3 + y * 13 + c * 29 + n * 31) % 17;
                    values.push((hash as f32 - 8.0) / 4.0);
                }
            }
        }
    }
    Tensor::from_host(cpu, &[count, 3, h, w], &values)
}

/// Paddle's train program: both losses within 1e-4 relative, and the
/// gradients of parameters from res3 to `retnet_bbox_pred` (every
/// `stride`-th value) within their float32 spread: how far Paddle's own
/// gradients move when its weights move by a relative 1e-6 (see the
/// script), or 1e-4 of their largest value where that is more.
#[test]
fn losses_and_gradients_equal_paddledetections() {
    let cpu = CpuBackend::new();
    let f = fixture();
    let mut model = model(&cpu, f.classes);
    model.net_mut().set_training(true);

    // Paddle's pixel boxes (width x2 - x1 + 1) as the loader's slots:
    // centre and size relative to the original picture.
    let count = f.im_info.len();
    let mut boxes = vec![0.0; count * MAX_BOXES * 4];
    let mut labels = vec![0; count * MAX_BOXES];
    for (n, &[height, width]) in f.pictures.iter().enumerate() {
        let corners = quads(&f.json["gt_boxes"][n]);
        let classes = floats(&f.json["gt_classes"][n]);
        assert!(corners.len() <= MAX_BOXES);
        for (k, ([x1, y1, x2, y2], class)) in corners.iter().zip(classes).enumerate() {
            let (w, h) = (x2 - x1 + 1.0, y2 - y1 + 1.0);
            let slot = n * MAX_BOXES + k;
            boxes[slot * 4..][..4].copy_from_slice(&[
                (x1 + w / 2.0) / width,
                (y1 + h / 2.0) / height,
                w / width,
                h / height,
            ]);
            labels[slot] = class as i32;
        }
    }
    let truth = GroundTruth {
        boxes: &boxes,
        labels: &labels,
        scores: None,
        max_boxes: MAX_BOXES,
        polygons: &[],
    };
    let losses = model.train_pass(&images(&cpu, &f), &truth, &f.im_info);
    for (name, &ours) in ["loss_cls", "loss_bbox"].iter().zip(losses.values()) {
        let paddle = f.json["losses"][name].as_f64().expect(name) as f32;
        assert!(
            (ours - paddle).abs() <= 1e-4 * paddle.abs(),
            "{name}: {ours}, Paddle's {paddle}"
        );
    }

    for (name, paddle) in f.json["grads"].as_object().expect("grads") {
        let stride = paddle["stride"].as_u64().expect("stride") as usize;
        let paddle = floats(&paddle["values"]);
        let ours = model
            .net()
            .param_grad(name)
            .unwrap_or_else(|| panic!("{name}: no gradient"));
        let ours: Vec<f32> = ours.into_iter().step_by(stride).collect();
        assert_eq!(ours.len(), paddle.len(), "{name}");
        let largest = paddle.iter().fold(0.0f32, |m, g| m.max(g.abs()));
        assert!(largest > 0.0, "{name}: all zero");
        let spread = f.json["grad_spread"][name].as_f64().expect("spread") as f32;
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
    let original: Vec<[u32; 2]> = f
        .pictures
        .iter()
        .map(|&[h, w]| [w as u32, h as u32])
        .collect();
    let found = model.detect(&images(&cpu, &f), &original, &f.im_info);
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
