//! Mask R-CNN end to end, as the seed guide's table fine-tunes it (issue
//! 15's flow, shortened): `synth` a COCO dataset of some classes (its
//! annotations carry each shape's outline as a polygon) and train the small
//! FPN model of `configs/mask_rcnn_fpn_demo.ron` on it (the "pretrained"
//! checkpoint), then fine-tune on other classes with
//! `finetune_exclude_pretrained_params=['cls_score','bbox_pred','mask_fcn_logits']`,
//! evaluate (COCO box and mask mAP, `segm.json`), infer (masks in the
//! picture and the JSON), and train on the emulated GPU. Pictures are 64
//! pixels and runs a few steps long: whether the full demo's mAP rises is
//! measured in docs/models.md, not here.

use std::path::{Path, PathBuf};

mod common;
use common::{
    assert_step_matches, loss_terms, pretrain_then_fine_tune, run_ok as run, stdout,
    synth_three_classes, train_on_emulated_gpu, write_rcnn_config, Layout, RcnnReaders,
};

/// configs/mask_rcnn_fpn_demo.ron on the COCO dataset `dataset` at 64
/// pixels (training: 64 or 96, the masks flipped with the pictures), with
/// `keys` on top.
fn write_config(dir: &Path, name: &str, dataset: &str, keys: &str) -> PathBuf {
    let readers = RcnnReaders {
        dataset,
        layout: Layout::Coco,
        train_sizes: "[64, 96]",
        eval_size: "64",
        max_size: 128,
        flip: "RandomFlipImage(prob: 0.5, is_mask_flip: true),",
    };
    write_rcnn_config(dir, name, "mask_rcnn_fpn_demo.ron", keys, &readers)
}

fn synth(dir: &Path, out: &str, first_class: &str) {
    synth_three_classes(dir, out, "coco", first_class, "6", "96");
}

/// Mask R-CNN's five loss terms per step from a run's loss.csv.
fn losses(save_dir: &Path) -> Vec<Vec<f64>> {
    loss_terms(
        save_dir,
        "iteration,loss,loss_rpn_cls,loss_rpn_bbox,loss_cls,loss_bbox,loss_mask",
    )
}

#[test]
fn fine_tunes_with_the_seed_exclusion_then_evaluates_masks_infers_and_trains_on_the_gpu() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    synth(dir, "dataset/other", "6");
    synth(dir, "dataset/synth", "0");

    // The checkpoint: the same model on three other classes. Then the seed
    // guide's pattern: everything loads but the three class-dependent
    // outputs (the box head's two and the mask logits).
    let fine_tune = pretrain_then_fine_tune(
        dir,
        |name, dataset, keys| write_config(dir, name, dataset, keys),
        "max_iters: 2, snapshot_iter: 2, log_iter: 1,",
        (
            "mask_rcnn.ron",
            "max_iters: 3, snapshot_iter: 3, log_iter: 1,",
        ),
        "['cls_score','bbox_pred','mask_fcn_logits']",
    );
    let (config, report) = (fine_tune.config.as_str(), &fine_tune.report);
    assert!(
        report.contains("excluded 2 by 'cls_score', 2 by 'bbox_pred', 2 by 'mask_fcn_logits'"),
        "{report}"
    );
    assert!(report.contains("mAP"), "--eval reports: {report}");
    let save_dir = dir.join("output/mask_rcnn");
    let cpu_losses = losses(&save_dir);
    assert_eq!(cpu_losses.len(), 3);
    assert!(
        cpu_losses.iter().flatten().all(|v| v.is_finite()),
        "{cpu_losses:?}"
    );
    // The mask head is trained and saved under Paddle's names.
    let saved =
        pulsefocus_formats::load_checkpoint(&save_dir.join("model_final.pdparams")).unwrap();
    for name in ["mask_inter_feat_1_w", "conv5_mask_w", "mask_fcn_logits_w"] {
        assert!(saved.get(name).is_some(), "{name} saved");
    }
    let optimizer =
        pulsefocus_formats::load_checkpoint(&save_dir.join("model_final.pdopt")).unwrap();
    assert!(optimizer.get("conv5_mask_w_velocity_0").is_some());

    // eval scores boxes and masks and writes both results files.
    let final_weights = format!("weights={}", save_dir.join("model_final").display());
    let eval = run(
        dir,
        &[
            "eval",
            "-c",
            config,
            "-o",
            &final_weights,
            "--output_eval",
            "eval",
            "--json",
        ],
    );
    let result: serde_json::Value = serde_json::from_str(&stdout(&eval)).unwrap();
    for key in ["stats", "segm_stats"] {
        let stats = result[key].as_array().unwrap_or_else(|| panic!("{key}"));
        assert_eq!(stats.len(), 12, "{key}");
    }
    for file in ["bbox.json", "segm.json"] {
        let text = std::fs::read_to_string(dir.join("eval").join(file)).unwrap();
        assert!(text.starts_with('['), "{file}");
    }

    // infer lists each detection's mask as a COCO RLE.
    let infer = run(
        dir,
        &[
            "infer",
            "-c",
            config,
            "-o",
            &final_weights,
            "--draw_threshold",
            "0.0",
            "--output_dir",
            "drawn",
            "--infer_dir",
            "dataset/synth/JPEGImages",
        ],
    );
    assert!(stdout(&infer).contains("detections"), "{}", stdout(&infer));
    let mut jsons = 0;
    for entry in std::fs::read_dir(dir.join("drawn")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            jsons += 1;
            let listed: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            for detection in listed["detections"].as_array().unwrap() {
                let rle = &detection["segmentation"];
                assert!(rle["counts"].is_string(), "{path:?}: {detection}");
                assert!(rle["size"].is_array(), "{path:?}: {detection}");
            }
        }
    }
    assert!(jsons > 0, "infer wrote a JSON per picture");

    // The same fine-tune on the emulated GPU: the first step's loss terms
    // are the CPU's up to the order of f32 sums (the samplers draw the same
    // RoIs from the same seed).
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
    let gpu_losses = losses(&dir.join("output_gpu/mask_rcnn"));
    assert_eq!(gpu_losses.len(), 1);
    assert_step_matches(&cpu_losses, &gpu_losses, 0, 1e-3);
}
