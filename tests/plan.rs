//! End-to-end tests of `pulsefocus plan`: the shipped demo config against
//! checkpoints written with the formats writers.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pulsefocus_core::models::{Yolov3, Yolov3Spec};
use pulsefocus_formats::{save_checkpoint, Checkpoint, Format, RawTensor};

mod common;
use common::{stderr, stdout};

fn demo_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/demo.ron")
}

fn plan(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pulsefocus"))
        .arg("plan")
        .args(args)
        .output()
        .unwrap()
}

/// The small model trained on 80 classes (the demo trains on 3).
fn write_small_coco_checkpoint(path: &Path, format: Format) {
    let model = Yolov3::new(
        &pulsefocus_core::CpuBackend::new(),
        Yolov3Spec::small(80),
        3,
    );
    save_checkpoint(&model.net.to_checkpoint(), path, format).unwrap();
}

#[test]
fn human_report_from_a_tar_of_another_class_count() {
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("small_coco.tar");
    write_small_coco_checkpoint(&tar, Format::Tar);
    let config = demo_config();
    let weights = format!("pretrain_weights={}", tar.display());
    let out = plan(&["-c", config.to_str().unwrap(), "-o", &weights]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}{}", text, stderr(&out));
    assert!(
        text.contains("model: YOLOv3 with MobileNet backbone, 3 classes: 241 parameters"),
        "{text}"
    );
    assert!(
        text.contains("loaded 235/241 parameters (")
            && text.contains(
                "excluded 6 by 'yolo_output'; 0 shape mismatches; 0 unused in checkpoint"
            ),
        "{text}"
    );
    assert!(text.contains("yolo_output.2.conv.bias"), "{text}");
    assert!(!text.contains("WARNING"), "{text}");

    // Without the preset the outputs do not fit: shape mismatches, both shapes shown.
    let out = plan(&[
        "-c",
        config.to_str().unwrap(),
        "-o",
        &weights,
        "finetune_exclude_pretrained_params=[]",
    ]);
    let text = stdout(&out);
    assert!(text.contains("excluded 0; 6 shape mismatches"), "{text}");
    assert!(
        text.contains("[24, 128, 1, 1]") && text.contains("[255, 128, 1, 1]"),
        "{text}"
    );
}

#[test]
fn json_has_the_schema_and_model_order() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("small_coco");
    write_small_coco_checkpoint(&ckpt, Format::Dir);
    let weights = format!("pretrain_weights={}", ckpt.display());
    let out = plan(&[
        "-c",
        demo_config().to_str().unwrap(),
        "-o",
        &weights,
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "excluded",
            "loaded",
            "missing",
            "model",
            "shape_mismatch",
            "unused"
        ]
    );
    let names: Vec<&str> = json["model"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = Yolov3Spec::small(3)
        .param_specs()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, expected);
    assert_eq!(json["model"][0]["shape"], serde_json::json!([8, 3, 3, 3]));
    assert_eq!(json["loaded"].as_array().unwrap().len(), 235);
    assert_eq!(
        json["excluded"][0],
        serde_json::json!({"name": "yolo_output.0.conv.weights", "pattern": "yolo_output"})
    );
}

#[test]
fn warning_stands_out_when_little_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("partial.safetensors");
    let mut ckpt = Checkpoint::new();
    ckpt.insert(
        "conv1_weights",
        RawTensor::from_f32(vec![8, 3, 3, 3], &[0.5; 216]),
    );
    ckpt.insert("fc7_weights", RawTensor::from_f32(vec![2], &[1.0, 2.0]));
    save_checkpoint(&ckpt, &path, Format::Safetensors).unwrap();
    let weights = format!("pretrain_weights={}", path.display());
    let out = plan(&["-c", demo_config().to_str().unwrap(), "-o", &weights]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(text.contains("loaded 1/241"), "{text}");
    assert!(
        text.contains("!!! WARNING: only 0.0% of the model's values load"),
        "{text}"
    );
    assert!(
        text.contains("unused in checkpoint (1):\n  tensor\n  fc7_weights"),
        "{text}"
    );
    assert!(text.contains("234 missing from checkpoint"), "{text}");
}

#[test]
fn without_pretrain_weights_says_training_from_scratch() {
    let out = plan(&[
        "-c",
        demo_config().to_str().unwrap(),
        "-o",
        "pretrain_weights=",
    ]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        text.trim().ends_with(
            "\n\nno pretrain_weights: the model's 241 parameters keep their initial values \
             (training from scratch)"
        ),
        "{text}"
    );
    assert!(
        !text.contains("WARNING") && !text.contains("missing"),
        "{text}"
    );
}

#[test]
fn bad_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = demo_config();
    let config = config.to_str().unwrap();
    let garbage = dir.path().join("garbage.pdparams");
    std::fs::write(&garbage, b"not a checkpoint at all").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cache = dir.path().join("cache");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["-o".into(), "TrainReader.batchsize=3".into()],
            "closest valid keys: batch_size",
        ),
        (vec!["-o".into(), "max_iters=many".into()], "key max_iters"),
        (
            vec![
                "-o".into(),
                "finetune_exclude_pretrained_params=['(?<=x)']".into(),
            ],
            "invalid pattern '(?<=x)'",
        ),
        (
            vec![
                "-o".into(),
                format!("pretrain_weights={}", dir.path().join("nope").display()),
            ],
            "pretrained weights not found",
        ),
        (
            vec![
                "-o".into(),
                format!("pretrain_weights={}", garbage.display()),
            ],
            "garbage.pdparams",
        ),
        (
            vec![
                "-o".into(),
                format!("pretrain_weights=http://127.0.0.1:{port}/w.tar"),
                "--weights-cache".into(),
                cache.display().to_string(),
            ],
            "download failed after 3 tries",
        ),
    ];
    for (extra, expected) in cases {
        let mut args = vec!["-c", config];
        args.extend(extra.iter().map(String::as_str));
        let out = plan(&args);
        assert!(!out.status.success(), "{extra:?} should fail");
        let err = stderr(&out);
        assert!(err.contains(expected), "{extra:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        // One line, `error: FILE (PLACE): ...` (download retries are logged above it).
        let last = err.lines().last().unwrap_or_default();
        assert!(last.contains(expected), "{extra:?}: {err}");
        assert!(
            last.starts_with("error: ") && !last.starts_with("error: planning"),
            "{extra:?}: {err}"
        );
    }
    let out = plan(&["-c", dir.path().join("missing.ron").to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("missing.ron"), "{}", stderr(&out));
}

/// A config nested about 16,000 deep overflowed the stack (SIGABRT).
#[test]
fn a_deeply_nested_config_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deep.ron");
    for (open, close) in [("(", ")"), ("[", "]")] {
        let text = format!("(a: {}1{})", open.repeat(16_000), close.repeat(16_000));
        std::fs::write(&path, text).unwrap();
        let out = plan(&["-c", path.to_str().unwrap()]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("deep.ron (line 1, column ") && err.contains("nested more than 64"),
            "{err}"
        );
    }
}

/// The seed's Faster R-CNN command on a checkpoint PaddleDetection's own
/// `FasterRCNN` saved (the parity fixture: `faster_rcnn_demo.ron`'s small C4
/// model with affine channels, 4 classes): it loads whole without patterns, and
/// `finetune_exclude_pretrained_params=['cls_score','bbox_pred']` excludes
/// exactly the box head's four tensors, named with their patterns.
#[test]
fn the_seeds_faster_rcnn_command_on_a_paddle_checkpoint() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let config = root.join("configs/faster_rcnn_demo.ron");
    let weights = format!(
        "pretrain_weights={}",
        root.join("core/tests/fixtures/faster_rcnn/model_parity")
            .display()
    );
    let config = config.to_str().unwrap();
    // The demo's model with the C4 YAML's affine channels, as the fixture's.
    let affine = [
        "ResNet.norm_type=affine_channel",
        "ResNetC5.norm_type=affine_channel",
    ];
    let out = plan(&["-c", config, "-o", &weights, affine[0], affine[1]]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}{}", text, stderr(&out));
    assert!(
        text.contains(
            "loaded 70/70 parameters (100.0% of values); excluded 0; 0 shape mismatches; \
             0 unused in checkpoint"
        ),
        "{text}"
    );

    let seed = "finetune_exclude_pretrained_params=['cls_score','bbox_pred']";
    let out = plan(&["-c", config, "-o", &weights, affine[0], affine[1], seed]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}{}", text, stderr(&out));
    assert!(
        text.contains("loaded 66/70 parameters (")
            && text.contains(
                "excluded 2 by 'cls_score', 2 by 'bbox_pred'; 0 shape mismatches; \
                 0 unused in checkpoint"
            ),
        "{text}"
    );
    for name in ["cls_score_w", "cls_score_b", "bbox_pred_w", "bbox_pred_b"] {
        assert!(text.contains(name), "{name}: {text}");
    }
    assert!(!text.contains("conv_rpn_w"), "{text}");
}

/// A checkpoint of the parameters a PaddleDetection train program creates,
/// as a parameter list fixture (`core/tests/fixtures/<list>`) names them,
/// those `keep` keeps, zeros for values (written for the test).
fn write_paddle_checkpoint(list: &str, path: &Path, keep: fn(&str) -> bool) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let list = root.join("core/tests/fixtures").join(list);
    let list: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(list).unwrap()).unwrap();
    let mut checkpoint = Checkpoint::new();
    for p in list.as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        if !keep(name) {
            continue;
        }
        let shape: Vec<usize> = p["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        let zeros = vec![0.0; shape.iter().product()];
        checkpoint.insert(name, RawTensor::from_f32(shape, &zeros));
    }
    save_checkpoint(&checkpoint, path, Format::Safetensors).unwrap();
}

/// `configs/retinanet_r50_fpn_1x.ron` on PaddleDetection's COCO RetinaNet:
/// with the preset's pattern every parameter loads but the class
/// prediction's two, excluded by it; in a 21-class model without patterns
/// those two are the only shape mismatches.
#[test]
fn retinanet_on_a_paddle_coco_checkpoint() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let config = root.join("configs/retinanet_r50_fpn_1x.ron");
    let config = config.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("retinanet_r50_fpn_1x.safetensors");
    // PaddleDetection's own RetinaNet at COCO's 81 classes (150 MB).
    write_paddle_checkpoint(
        "retinanet/retinanet_r50_fpn_1x.81.params.json",
        &ckpt,
        |_| true,
    );
    let weights = format!("pretrain_weights={}", ckpt.display());
    let pattern = "finetune_exclude_pretrained_params=['retnet_cls_pred_fpn']";
    let out = plan(&["-c", config, "-o", &weights, pattern]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}{}", text, stderr(&out));
    assert!(
        text.contains("model: RetinaNet with ResNet-FPN backbone, 80 classes: 195 parameters"),
        "{text}"
    );
    assert!(
        text.contains("loaded 193/195 parameters (")
            && text.contains(
                "excluded 2 by 'retnet_cls_pred_fpn'; 0 shape mismatches; 0 unused in checkpoint"
            ),
        "{text}"
    );
    assert!(!text.contains("missing from checkpoint"), "{text}");
    for name in ["retnet_cls_pred_fpn3_w", "retnet_cls_pred_fpn3_b"] {
        assert!(text.contains(name), "{name}: {text}");
    }
    assert!(!text.contains("retnet_bbox_pred_fpn3_w"), "{text}");

    let voc = "num_classes=21";
    let out = plan(&["-c", config, "-o", &weights, voc]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}{}", text, stderr(&out));
    assert!(
        text.contains("loaded 193/195 parameters (")
            && text.contains("excluded 0; 2 shape mismatches; 0 unused in checkpoint"),
        "{text}"
    );
    assert!(
        text.contains("[180, 256, 3, 3]") && text.contains("[720, 256, 3, 3]"),
        "{text}"
    );
}

/// `configs/mask_rcnn_r50_fpn_1x.ron` fine-tuned from a COCO Faster R-CNN
/// FPN checkpoint (PaddleDetection's Mask R-CNN's parameters but its mask
/// head's, 170 MB): with the preset the class-dependent predictions are
/// excluded, the mask logits among them, and the plan lists the rest of
/// the mask head, with shapes, as missing (they keep their initial
/// values); at 21 classes without patterns the box predictions mismatch by
/// shape and the whole mask head is missing, its logits 21 wide.
#[test]
fn mask_rcnn_from_a_paddle_faster_rcnn_checkpoint() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let config = root.join("configs/mask_rcnn_r50_fpn_1x.ron");
    let config = config.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("faster_rcnn_r50_fpn_1x.safetensors");
    write_paddle_checkpoint(
        "mask_rcnn/mask_rcnn_r50_fpn_1x.81.params.json",
        &ckpt,
        |name| !(name.starts_with("mask_") || name.starts_with("conv5_mask")),
    );
    let weights = format!("pretrain_weights={}", ckpt.display());
    let preset = "finetune_exclude_pretrained_params=preset";
    let out = plan(&["-c", config, "-o", &weights, preset]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}{}", text, stderr(&out));
    assert!(
        text.contains("model: Mask R-CNN with ResNet-FPN backbone, 80 classes: 307 parameters"),
        "{text}"
    );
    assert!(
        text.contains("finetune_exclude_pretrained_params: [\"cls_score\", \"bbox_pred\", \"mask_fcn_logits\"]"),
        "{text}"
    );
    assert!(
        text.contains("loaded 291/307 parameters (")
            && text.contains(
                "excluded 2 by 'cls_score', 2 by 'bbox_pred', 2 by 'mask_fcn_logits'; \
                 0 shape mismatches; 10 missing from checkpoint (keep initial values); \
                 0 unused in checkpoint"
            ),
        "{text}"
    );
    let missing = text
        .split("missing from checkpoint, keep initial values")
        .nth(1)
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        text.contains("  mask_fcn_logits_w  'mask_fcn_logits'"),
        "{text}"
    );
    for (name, shape) in [
        ("mask_inter_feat_1_w", "[256, 256, 3, 3]"),
        ("mask_inter_feat_4_b", "[256]"),
        ("conv5_mask_w", "[256, 256, 2, 2]"),
        ("conv5_mask_b", "[256]"),
    ] {
        let row = missing
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name}: {text}"));
        assert!(row.contains(shape), "{row}");
    }

    let voc = "num_classes=21";
    let out = plan(&["-c", config, "-o", &weights, voc]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}{}", text, stderr(&out));
    assert!(
        text.contains("loaded 291/307 parameters (")
            && text.contains("excluded 0; 4 shape mismatches; 12 missing from checkpoint"),
        "{text}"
    );
    assert!(text.contains("[21, 256, 1, 1]"), "{text}");
}

/// `configs/cascade_rcnn_r50_fpn_1x.ron` and
/// `cascade_mask_rcnn_r50_fpn_1x.ron` on PaddleDetection's COCO cascade
/// checkpoints (their parameter lists): with the preset every stage's class
/// score and box output (and the mask logits) are excluded and the rest
/// loads; at 21 classes without patterns only the three class scores (and
/// the mask logits) mismatch by shape, every stage's box output being
/// class-agnostic.
#[test]
fn cascades_on_paddle_coco_checkpoints() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "cascade_rcnn_r50_fpn_1x",
            "Cascade R-CNN with ResNet-FPN backbone, 80 classes: 205 parameters",
            "loaded 193/205 parameters (",
            "excluded 6 by 'cls_score', 6 by 'bbox_pred'; 0 shape mismatches; 0 unused",
            "excluded 0; 6 shape mismatches; 0 unused",
        ),
        (
            "cascade_mask_rcnn_r50_fpn_1x",
            "Cascade Mask R-CNN with ResNet-FPN backbone, 80 classes: 217 parameters",
            "loaded 203/217 parameters (",
            "excluded 6 by 'cls_score', 6 by 'bbox_pred', 2 by 'mask_fcn_logits'; 0 shape mismatches; 0 unused",
            "excluded 0; 8 shape mismatches; 0 unused",
        ),
    ];
    for (name, model, loaded, preset_counts, voc_counts) in cases {
        let config = root.join(format!("configs/{name}.ron"));
        let config = config.to_str().unwrap();
        let ckpt = dir.path().join(format!("{name}.safetensors"));
        write_paddle_checkpoint(
            &format!("cascade_rcnn/{name}.81.params.json"),
            &ckpt,
            |_| true,
        );
        let weights = format!("pretrain_weights={}", ckpt.display());
        let preset = "finetune_exclude_pretrained_params=preset";
        let out = plan(&["-c", config, "-o", &weights, preset]);
        let text = stdout(&out);
        assert!(out.status.success(), "{}{}", text, stderr(&out));
        assert!(text.contains(&format!("model: {model}")), "{text}");
        assert!(
            text.contains(loaded) && text.contains(preset_counts),
            "{text}"
        );
        let row = ["cls_score_3_w", "'cls_score'"];
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().eq(row.iter().copied())),
            "{text}"
        );

        let out = plan(&["-c", config, "-o", &weights, "num_classes=21"]);
        let text = stdout(&out);
        assert!(out.status.success(), "{}{}", text, stderr(&out));
        assert!(text.contains(voc_counts), "{text}");
        assert!(text.contains("[1024, 21]"), "{text}");
    }
}
