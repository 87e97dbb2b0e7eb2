//! Faster R-CNN with FPN end to end: `synth` a VOC dataset, train
//! `configs/faster_rcnn_fpn_demo.ron` (the small FPN model) for a few steps
//! on 64-pixel pictures padded to multiples of 32, evaluate and infer with
//! what it saved, and infer on the emulated GPU. Whether the demo learns is
//! measured in docs, not here.

use std::path::{Path, PathBuf};

mod common;
use common::{
    evaluates_and_draws, infers_the_same_on_the_emulated_gpu, loss_terms, run_ok as run,
    synth_three_classes, write_rcnn_config, Layout, RcnnReaders,
};

/// configs/faster_rcnn_fpn_demo.ron on the VOC dataset in dataset/synth at
/// 64 pixels (training: 64 or 96), three steps.
fn write_config(dir: &Path) -> PathBuf {
    let readers = RcnnReaders {
        dataset: "dataset/synth",
        layout: Layout::Voc,
        train_sizes: "[64, 96]",
        eval_size: "64",
        max_size: 128,
        flip: "RandomFlipImage(prob: 0.5),",
    };
    let keys = "max_iters: 3, snapshot_iter: 3, log_iter: 1,";
    write_rcnn_config(dir, "fpn.ron", "faster_rcnn_fpn_demo.ron", keys, &readers)
}

#[test]
fn fpn_trains_evaluates_and_infers() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    synth_three_classes(dir, "dataset/synth", "voc", "0", "6", "96");
    let config = write_config(dir);
    let config = config.to_str().unwrap();
    run(dir, &["train", "-c", config]);

    let save_dir = dir.join("output/fpn");
    let rows = losses(&save_dir);
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().flatten().all(|v| v.is_finite()), "{rows:?}");
    // The pyramid's, the shared RPN head's and TwoFCHead's parameters under
    // Paddle's names.
    let saved =
        pulsefocus_formats::load_checkpoint(&save_dir.join("model_final.pdparams")).unwrap();
    for name in ["fpn_res2_sum_w", "conv_rpn_fpn2_w", "fc6_w", "fc7_b"] {
        assert!(saved.get(name).is_some(), "{name} saved");
    }

    let weights = format!("weights={}", save_dir.join("model_final").display());
    evaluates_and_draws(dir, config, &weights);

    // Inference on the CPU and on the emulated GPU, where every level's and
    // image's proposals are made on the device at once: the same
    // detections (the convolutions add in another order: scores within
    // 1e-5, box numbers within 1e-2 pixels).
    infers_the_same_on_the_emulated_gpu(dir, config, &weights, 1e-5, 1e-2);
}

/// The loss terms of each step of a run's loss.csv.
fn losses(save_dir: &Path) -> Vec<Vec<f64>> {
    loss_terms(
        save_dir,
        "iteration,loss,loss_rpn_cls,loss_rpn_bbox,loss_cls,loss_bbox",
    )
}
