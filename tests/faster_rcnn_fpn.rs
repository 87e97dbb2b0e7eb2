//! Faster R-CNN with FPN end to end: `synth` a VOC dataset, train
//! `configs/faster_rcnn_fpn_demo.ron` (the small FPN model) for a few steps
//! on 64-pixel pictures padded to multiples of 32, evaluate and infer with
//! what it saved, and infer on the emulated GPU. Whether the demo learns is
//! measured in docs, not here.

use std::path::{Path, PathBuf};

mod common;
use common::{
    evaluates_and_draws, infers_the_same_on_the_emulated_gpu, loss_terms, run_ok as run,
    synth_three_classes,
};

/// `fpn.ron` in `dir`: the FPN demo with pictures of 64 (train: 64 or 96)
/// on the short side, at most 128, and three steps.
fn write_config(dir: &Path) -> PathBuf {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/faster_rcnn_fpn_demo.ron");
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
    let config = format!(
        r#"(
    _BASE_: ["{demo}"],
    max_iters: 3,
    snapshot_iter: 3,
    log_iter: 1,
    TrainReader: ({train}),
    EvalReader: ({eval}),
    TestReader: ({eval}),
)"#,
        demo = demo.display(),
        train = transforms("[64, 96]", "RandomFlipImage(prob: 0.5),"),
        eval = transforms("64", ""),
    );
    let path = dir.join("fpn.ron");
    std::fs::write(&path, config).unwrap();
    path
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
