//! Faster R-CNN end to end, as the seed guide's example command fine-tunes
//! it (issue 14's flow, shortened): `synth` a VOC dataset of some classes and
//! train the small C4 model of `configs/faster_rcnn_demo.ron` on it (the
//! "pretrained" checkpoint), then fine-tune on other classes with
//! `finetune_exclude_pretrained_params=['cls_score','bbox_pred']`, evaluate,
//! infer, and train on the emulated GPU. Pictures are 64 pixels on the short
//! side and runs a few steps long: whether the full demo's mAP rises is
//! measured in docs/models.md, not here.

use std::path::{Path, PathBuf};

mod common;
use common::{
    assert_step_matches, evaluates_and_draws, loss_terms, pretrain_then_fine_tune,
    synth_three_classes, train_on_emulated_gpu, write_rcnn_config, Layout, RcnnReaders,
};

/// configs/faster_rcnn_demo.ron on `dataset` (VOC) at 64 pixels (at most
/// 96), with `keys` on top.
fn write_config(dir: &Path, name: &str, dataset: &str, keys: &str) -> PathBuf {
    let readers = RcnnReaders {
        dataset,
        layout: Layout::Voc,
        train_sizes: "64",
        eval_size: "64",
        max_size: 96,
        flip: "RandomFlipImage(prob: 0.5),",
    };
    write_rcnn_config(dir, name, "faster_rcnn_demo.ron", keys, &readers)
}

fn synth(dir: &Path, out: &str, first_class: &str) {
    synth_three_classes(dir, out, "voc", first_class, "12", "96");
}

/// The four loss terms per step from a run's loss.csv.
fn losses(save_dir: &Path) -> Vec<Vec<f64>> {
    loss_terms(
        save_dir,
        "iteration,loss,loss_rpn_cls,loss_rpn_bbox,loss_cls,loss_bbox",
    )
}

#[test]
fn fine_tunes_with_the_seed_exclusion_then_evaluates_infers_and_trains_on_the_gpu() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    synth(dir, "dataset/other", "6");
    synth(dir, "dataset/synth", "0");

    // The checkpoint: the same model on three other classes. Then the seed
    // guide's command: everything loads but the box head's four tensors,
    // which the two patterns name.
    let fine_tune = pretrain_then_fine_tune(
        dir,
        |name, dataset, keys| write_config(dir, name, dataset, keys),
        "max_iters: 2, snapshot_iter: 2, log_iter: 1,",
        (
            "faster_rcnn.ron",
            "max_iters: 3, snapshot_iter: 3, log_iter: 1,",
        ),
        "['cls_score','bbox_pred']",
    );
    let (config, report) = (fine_tune.config.as_str(), &fine_tune.report);
    assert!(report.contains("loaded 106/110 parameters"), "{report}");
    assert!(
        report.contains("excluded 2 by 'cls_score', 2 by 'bbox_pred'"),
        "{report}"
    );
    let save_dir = dir.join("output/faster_rcnn");
    for file in ["model_final.pdparams", "model_final.pdopt", "map.csv"] {
        assert!(save_dir.join(file).is_file(), "{file} missing");
    }
    let optimizer =
        pulsefocus_formats::load_checkpoint(&save_dir.join("model_final.pdopt")).unwrap();
    assert!(optimizer.get("cls_score_w_velocity_0").is_some());
    assert!(optimizer.get("res5a_branch2a_weights_velocity_0").is_some());
    // freeze_at 2: the stem and res2 are not trained.
    assert!(optimizer.get("conv1_weights_velocity_0").is_none());
    let cpu_losses = losses(&save_dir);
    assert_eq!(cpu_losses.len(), 3);

    let final_weights = format!("weights={}", save_dir.join("model_final").display());
    evaluates_and_draws(dir, config, &final_weights);

    // The same fine-tune on the emulated GPU: the first step's loss terms
    // are the CPU's up to the order of f32 sums (the same anchors and RoIs
    // are sampled: the samplers draw from the same seed, and the first
    // step's proposals rank the same scores).
    train_on_emulated_gpu(
        dir,
        config,
        &[
            "-o",
            &fine_tune.overrides[0],
            &fine_tune.overrides[1],
            "max_iters=1",
            "save_dir=output_gpu",
        ],
    );
    let gpu_losses = losses(&dir.join("output_gpu/faster_rcnn"));
    assert_eq!(gpu_losses.len(), 1);
    assert_step_matches(&cpu_losses, &gpu_losses, 0, 1e-3);
}
