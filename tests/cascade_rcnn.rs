//! Cascade R-CNN and Cascade Mask R-CNN end to end: `synth` a dataset,
//! train `configs/cascade_rcnn_fpn_demo.ron` (`configs/cascade_mask_rcnn_fpn_demo.ron`)
//! for a few steps on 64-pixel pictures padded to multiples of 32, evaluate
//! and infer with what it saved; the emulated GPU's first step gives the
//! CPU's losses. Whether the demos learn is not measured here.

use std::path::{Path, PathBuf};

mod common;
use common::{evaluates_and_draws, pulsefocus, run_ok as run, stderr, stdout};

/// `NAME` in `dir`: the demo config `demo` with pictures of 64 (train: 64
/// or 96) on the short side, at most 128, three steps, and `readers` (the
/// datasets, each reader's entries ending in a comma) on top.
fn write_config(dir: &Path, name: &str, demo: &str, flip: &str, datasets: [&str; 3]) -> PathBuf {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../configs")
        .join(demo);
    let transforms = |sizes: &str, flip: &str| {
        format!(
            r#"sample_transforms: [
            DecodeImage(to_rgb: true),
            {flip}
            NormalizeImage(is_channel_first: false, is_scale: true, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]),
            ResizeImage(target_size: {sizes}, max_size: 128, interp: 1, use_cv2: true),
            Permute(to_bgr: false, channel_first: true),
        ],"#
        )
    };
    let [train, eval, test] = datasets;
    let config = format!(
        r#"(
    _BASE_: ["{demo}"],
    max_iters: 3,
    snapshot_iter: 3,
    log_iter: 1,
    TrainReader: (dataset: {train}, {train_transforms}),
    EvalReader: (dataset: {eval}, {eval_transforms}),
    TestReader: (dataset: {test}, {eval_transforms}),
)"#,
        demo = demo.display(),
        train_transforms = transforms("[64, 96]", flip),
        eval_transforms = transforms("64", ""),
    );
    let path = dir.join(name);
    std::fs::write(&path, config).unwrap();
    path
}

/// `synth` six pictures of 96 pixels, three classes, as `format`.
fn synth(dir: &Path, format: &str) {
    run(
        dir,
        &[
            "synth",
            "--out",
            "dataset/synth",
            "--format",
            format,
            "--classes",
            "3",
            "--images",
            "6",
            "--size",
            "96",
            "--seed",
            "3",
        ],
    );
}

/// The header of a run's loss.csv and the loss terms of each step.
fn losses(save_dir: &Path) -> (String, Vec<Vec<f64>>) {
    let text = std::fs::read_to_string(save_dir.join("loss.csv")).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap().to_string();
    let rows = lines
        .map(|l| l.split(',').skip(1).map(|c| c.parse().unwrap()).collect())
        .collect();
    (header, rows)
}

#[test]
fn cascade_trains_evaluates_infers_and_trains_on_the_emulated_gpu() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    synth(dir, "voc");
    let voc = |list: &str| {
        format!(
            r#"VOCDataSet(dataset_dir: "dataset/synth", anno_path: "{list}", use_default_label: false, label_list: "label_list.txt")"#
        )
    };
    let folder =
        r#"ImageFolder(anno_path: "dataset/synth/label_list.txt", use_default_label: false)"#;
    let config = write_config(
        dir,
        "cascade.ron",
        "cascade_rcnn_fpn_demo.ron",
        "RandomFlipImage(prob: 0.5),",
        [&voc("trainval.txt"), &voc("test.txt"), folder],
    );
    let config = config.to_str().unwrap();
    let plan = run(dir, &["plan", "-c", config]);
    assert!(
        stdout(&plan).contains("model: Cascade R-CNN with ResNet-FPN backbone, 3 classes"),
        "{}",
        stdout(&plan)
    );
    run(dir, &["train", "-c", config]);

    let save_dir = dir.join("output/cascade");
    let (header, rows) = losses(&save_dir);
    // The RPN's two terms, then each stage's classification and box terms.
    assert_eq!(header.split(',').count(), 2 + 8, "{header}");
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().flatten().all(|v| v.is_finite()), "{rows:?}");
    // Every stage's head under Paddle's names.
    let saved =
        pulsefocus_formats::load_checkpoint(&save_dir.join("model_final.pdparams")).unwrap();
    for name in [
        "fc6_w",
        "fc7_2_b",
        "cls_score_3_w",
        "bbox_pred_2_w",
        "fpn_res2_sum_w",
    ] {
        assert!(saved.get(name).is_some(), "{name} saved");
    }

    let weights = format!("weights={}", save_dir.join("model_final").display());
    evaluates_and_draws(dir, config, &weights);
    let listed = std::fs::read_dir(dir.join("drawn"))
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| e.path().extension().is_some_and(|x| x == "json"));
    assert!(listed, "infer lists its detections as JSON");

    // The first step on the emulated GPU: the CPU's loss terms up to the
    // order of f32 sums (the samplers draw from the same seed).
    let out = pulsefocus()
        .current_dir(dir)
        .env("PULSEFOCUS_GPU_EMULATOR", "1")
        .args(["train", "-c", config, "--device", "gpu", "-o"])
        .args(["max_iters=1", "save_dir=output_gpu"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stdout(&out) + &stderr(&out);
    assert!(said.contains("emulated"), "{said}");
    let (_, gpu) = losses(&dir.join("output_gpu/cascade"));
    assert_eq!(gpu.len(), 1);
    for (c, g) in rows[0].iter().zip(&gpu[0]) {
        assert!(
            (c - g).abs() <= 1e-3 * c.abs() + 1e-6,
            "first step: cpu {:?} emulated {:?}",
            rows[0],
            gpu[0]
        );
    }
}

#[test]
fn cascade_mask_trains_and_evaluates_boxes_and_masks() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    synth(dir, "coco");
    let coco = |anno: &str| {
        format!(
            r#"COCODataSet(dataset_dir: "dataset/synth", image_dir: "JPEGImages", anno_path: "annotations/{anno}")"#
        )
    };
    let folder = r#"ImageFolder(anno_path: "dataset/synth/annotations/instances_val.json", use_default_label: false)"#;
    let config = write_config(
        dir,
        "cascade_mask.ron",
        "cascade_mask_rcnn_fpn_demo.ron",
        "RandomFlipImage(prob: 0.5, is_mask_flip: true),",
        [
            &coco("instances_train.json"),
            &coco("instances_val.json"),
            folder,
        ],
    );
    let config = config.to_str().unwrap();
    run(dir, &["train", "-c", config]);
    let save_dir = dir.join("output/cascade_mask");
    let (header, rows) = losses(&save_dir);
    // Cascade R-CNN's terms, then the mask loss.
    assert_eq!(header.split(',').count(), 2 + 9, "{header}");
    assert!(header.ends_with("mask"), "{header}");
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().flatten().all(|v| v.is_finite()), "{rows:?}");
    let saved =
        pulsefocus_formats::load_checkpoint(&save_dir.join("model_final.pdparams")).unwrap();
    for name in ["mask_fcn_logits_w", "conv5_mask_w", "cls_score_3_b"] {
        assert!(saved.get(name).is_some(), "{name} saved");
    }

    let weights = format!("weights={}", save_dir.join("model_final").display());
    let eval = run(
        dir,
        &[
            "eval",
            "-c",
            config,
            "-o",
            &weights,
            "--output_eval",
            "scored",
        ],
    );
    let report = stdout(&eval);
    assert!(
        report.contains("Average Precision  (AP) @[ IoU=0.50 "),
        "{report}"
    );
    for file in ["bbox.json", "segm.json"] {
        assert!(dir.join("scored").join(file).is_file(), "{file}: {report}");
    }
}
