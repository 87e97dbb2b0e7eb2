//! Cascade R-CNN and Cascade Mask R-CNN end to end: `synth` a COCO dataset,
//! train `configs/cascade_rcnn_fpn_demo.ron` (`configs/cascade_mask_rcnn_fpn_demo.ron`)
//! for a few steps on 64-pixel pictures padded to multiples of 32, evaluate
//! and infer with what it saved; the emulated GPU's first step gives the
//! CPU's losses. Whether the demos learn is not measured here.

use std::path::{Path, PathBuf};

mod common;
use common::{
    assert_step_matches, evaluates_and_draws, loss_terms, run_ok as run, stdout,
    synth_three_classes, train_on_emulated_gpu, write_rcnn_config, Layout, RcnnReaders,
};

/// configs/`demo` on the COCO dataset in dataset/synth at 64 pixels
/// (training: 64 or 96, `flip` first), three steps.
fn write_config(dir: &Path, name: &str, demo: &str, flip: &str) -> PathBuf {
    let readers = RcnnReaders {
        dataset: "dataset/synth",
        layout: Layout::Coco,
        train_sizes: "[64, 96]",
        eval_size: "64",
        max_size: 128,
        flip,
    };
    let keys = "max_iters: 3, snapshot_iter: 3, log_iter: 1,";
    write_rcnn_config(dir, name, demo, keys, &readers)
}

/// `synth` six pictures of 96 pixels, three classes, as a COCO dataset
/// (with polygons).
fn synth(dir: &Path) {
    synth_three_classes(dir, "dataset/synth", "coco", "0", "6", "96");
}

/// Cascade R-CNN's loss.csv header: the RPN's two terms, then each stage's
/// classification and box terms.
const CASCADE_LOSSES: &str = "iteration,loss,loss_rpn_cls,loss_rpn_bbox,\
    loss_cls_0,loss_loc_0,loss_cls_1,loss_loc_1,loss_cls_2,loss_loc_2";

#[test]
fn cascade_trains_evaluates_infers_and_trains_on_the_emulated_gpu() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    synth(dir);
    let config = write_config(
        dir,
        "cascade.ron",
        "cascade_rcnn_fpn_demo.ron",
        "RandomFlipImage(prob: 0.5),",
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
    let rows = loss_terms(&save_dir, CASCADE_LOSSES);
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
    train_on_emulated_gpu(dir, config, &["-o", "max_iters=1", "save_dir=output_gpu"]);
    let gpu = loss_terms(&dir.join("output_gpu/cascade"), CASCADE_LOSSES);
    assert_eq!(gpu.len(), 1);
    assert_step_matches(&rows, &gpu, 0, 1e-3);
}

#[test]
fn cascade_mask_trains_and_evaluates_boxes_and_masks() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    synth(dir);
    let config = write_config(
        dir,
        "cascade_mask.ron",
        "cascade_mask_rcnn_fpn_demo.ron",
        "RandomFlipImage(prob: 0.5, is_mask_flip: true),",
    );
    let config = config.to_str().unwrap();
    run(dir, &["train", "-c", config]);
    let save_dir = dir.join("output/cascade_mask");
    // Cascade R-CNN's terms, then the mask loss.
    let rows = loss_terms(&save_dir, &format!("{CASCADE_LOSSES},loss_mask"));
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
