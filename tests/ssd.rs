//! SSD end to end, as a user fine-tunes it (issue 13's flow, shortened):
//! `synth` a VOC dataset of some classes and train the small MobileNet-SSD of
//! `configs/ssd_demo.ron` on it (the "pretrained" checkpoint), then fine-tune
//! on other classes with the seed guide's `^conv2d_` exclusion, evaluate,
//! infer, and train on the emulated GPU. Inputs are 96 pixels and runs a few
//! steps long: whether the full demo's mAP rises is measured in
//! docs/models.md, not here.

use std::path::{Path, PathBuf};

mod common;
use common::{
    assert_step_matches, evaluates_and_draws, loss_terms, pretrain_then_fine_tune,
    synth_three_classes, train_on_emulated_gpu,
};

/// `ssd.ron` in `dir`: configs/ssd_demo.ron on 96-pixel inputs in batches of
/// two, every reader on `dataset`, with `keys` (top-level RON entries, each
/// ending in a comma) on top.
fn write_config(dir: &Path, name: &str, dataset: &str, keys: &str) -> PathBuf {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/ssd_demo.ron");
    let voc = |anno: &str| {
        format!(
            r#"VOCDataSet(dataset_dir: "{dataset}", anno_path: "{anno}", use_default_label: false, label_list: "label_list.txt")"#
        )
    };
    let to_network = r#"Permute(), NormalizeImage(is_scale: false, mean: [127.5, 127.5, 127.5], std: [127.502231, 127.502231, 127.502231])"#;
    let config = format!(
        r#"(
    _BASE_: ["{demo}"],
    {keys}
    TrainReader: (
        dataset: {train},
        sample_transforms: [
            DecodeImage(to_rgb: true),
            RandomDistort(brightness_lower: 0.875, brightness_upper: 1.125, is_order: true),
            RandomExpand(fill_value: [127.5, 127.5, 127.5]),
            RandomCrop(allow_no_crop: false),
            NormalizeBox(),
            ResizeImage(interp: 1, target_size: 96, use_cv2: false),
            RandomFlipImage(is_normalized: true),
            {to_network},
        ],
        batch_size: 2,
    ),
    EvalReader: (
        dataset: {test},
        sample_transforms: [
            DecodeImage(to_rgb: true),
            NormalizeBox(),
            ResizeImage(interp: 1, target_size: 96, use_cv2: false),
            {to_network},
        ],
        batch_size: 2,
    ),
    TestReader: (
        sample_transforms: [
            DecodeImage(to_rgb: true),
            ResizeImage(interp: 1, max_size: 0, target_size: 96, use_cv2: true),
            {to_network},
        ],
    ),
)"#,
        demo = demo.display(),
        train = voc("trainval.txt"),
        test = voc("test.txt"),
    );
    let path = dir.join(name);
    std::fs::write(&path, config).unwrap();
    path
}

fn synth(dir: &Path, out: &str, first_class: &str) {
    synth_three_classes(dir, out, "voc", first_class, "12", "128");
}

/// `[loss_loc, loss_conf]` per step from a run's loss.csv.
fn losses(save_dir: &Path) -> Vec<Vec<f64>> {
    loss_terms(save_dir, "iteration,loss,loss_loc,loss_conf")
}

#[test]
fn fine_tunes_with_conv2d_excluded_then_evaluates_infers_and_trains_on_the_gpu() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    synth(dir, "dataset/other", "6");
    synth(dir, "dataset/synth", "0");

    // The checkpoint: the same model on three other classes. Then
    // everything loads but the 24 head tensors, which the pattern names.
    let fine_tune = pretrain_then_fine_tune(
        dir,
        |name, dataset, keys| write_config(dir, name, dataset, keys),
        "max_iters: 3, snapshot_iter: 3, log_iter: 1,",
        ("ssd.ron", "max_iters: 4, snapshot_iter: 2, log_iter: 1,"),
        "['^conv2d_']",
    );
    let (config, report) = (fine_tune.config.as_str(), &fine_tune.report);
    assert!(report.contains("loaded 175/199 parameters"), "{report}");
    assert!(report.contains("excluded 24 by '^conv2d_'"), "{report}");
    let save_dir = dir.join("output/ssd");
    for file in [
        "model_final.pdparams",
        "model_final.pdopt",
        "best_model.pdparams",
        "map.csv",
    ] {
        assert!(save_dir.join(file).is_file(), "{file} missing");
    }
    // RMSProp's state, under Paddle's accumulator names.
    let optimizer =
        pulsefocus_formats::load_checkpoint(&save_dir.join("model_final.pdopt")).unwrap();
    assert!(optimizer.get("conv2d_22.w_0_mean_square_0").is_some());
    assert!(optimizer.get("conv1_weights_momentum_0").is_some());
    let cpu_losses = losses(&save_dir);
    assert_eq!(cpu_losses.len(), 4);

    let final_weights = format!("weights={}", save_dir.join("model_final").display());
    evaluates_and_draws(dir, config, &final_weights);

    // The same fine-tune on the emulated GPU. The first step's loss terms
    // are the CPU's up to the order of f32 sums (the augmentations draw the
    // same). After one RMSProp update they may not be: its first step moves
    // every weight by about lr / sqrt(1 - rho) whatever the gradient's size,
    // so a gradient that is rounding noise on both devices moves its weight
    // the full step, in either direction. The second step is checked loosely.
    train_on_emulated_gpu(
        dir,
        config,
        &[
            "-o",
            &fine_tune.overrides[0],
            &fine_tune.overrides[1],
            "max_iters=2",
            "save_dir=output_gpu",
        ],
    );
    let gpu_losses = losses(&dir.join("output_gpu/ssd"));
    assert_eq!(gpu_losses.len(), 2);
    assert_step_matches(&cpu_losses, &gpu_losses, 0, 1e-4);
    assert_step_matches(&cpu_losses, &gpu_losses, 1, 5e-2);
}
