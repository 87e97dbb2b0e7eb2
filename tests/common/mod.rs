//! What several end-to-end test files share.
// Each test file uses some of these helpers, not all.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The freshly built binary.
pub fn pulsefocus() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pulsefocus"))
}

/// `pulsefocus ARGS` in `dir` on this machine as it is (never the emulated
/// GPU unless asked), which must succeed; its output.
pub fn run_ok(dir: &Path, args: &[&str]) -> Output {
    let out = pulsefocus()
        .current_dir(dir)
        .env_remove("PULSEFOCUS_GPU_EMULATOR")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pulsefocus {args:?} failed:\n{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    out
}

/// `eval -c CONFIG -o WEIGHTS` in `dir` reports a mAP (VOC's, or COCO's
/// twelve numbers), and `infer` with
/// the same weights draws the first picture of `dataset/synth/JPEGImages`
/// (every detection, threshold 0) into `drawn/`.
pub fn evaluates_and_draws(dir: &Path, config: &str, weights: &str) {
    let eval = run_ok(dir, &["eval", "-c", config, "-o", weights]);
    let report = stdout(&eval);
    assert!(
        report.contains("mAP(0.50)") || report.contains("Average Precision  (AP) @[ IoU=0.50 "),
        "{report}"
    );
    let picture = std::fs::read_dir(dir.join("dataset/synth/JPEGImages"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let infer = run_ok(
        dir,
        &[
            "infer",
            "-c",
            config,
            "-o",
            weights,
            "--draw_threshold",
            "0.0",
            "--output_dir",
            "drawn",
            "--infer_img",
            picture.to_str().unwrap(),
        ],
    );
    assert!(stdout(&infer).contains("detections"), "{}", stdout(&infer));
    let drawn = dir.join("drawn").join(picture.file_name().unwrap());
    assert!(drawn.is_file(), "{drawn:?}");
}

/// `infer` of the first picture of `dataset/synth/JPEGImages` with
/// `weights` (every detection, threshold 0) on the CPU and on the emulated
/// GPU (`--device gpu`, which must say it ran there): the same detections,
/// class for class in the same order, scores within `score_tolerance` and
/// box numbers within `box_tolerance` pixels; and at least one.
pub fn infers_the_same_on_the_emulated_gpu(
    dir: &Path,
    config: &str,
    weights: &str,
    score_tolerance: f64,
    box_tolerance: f64,
) {
    let picture = std::fs::read_dir(dir.join("dataset/synth/JPEGImages"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .min()
        .unwrap();
    let detections = |device: &str| -> Vec<serde_json::Value> {
        let out_dir = format!("infer_{device}");
        let out = pulsefocus()
            .current_dir(dir)
            .env("PULSEFOCUS_GPU_EMULATOR", "1")
            .args([
                "infer",
                "-c",
                config,
                "-o",
                weights,
                "--draw_threshold",
                "0",
            ])
            .args(["--output_dir", &out_dir, "--device", device, "--infer_img"])
            .arg(&picture)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(
            device == "gpu",
            stderr(&out).contains("emulated GPU"),
            "{}",
            stderr(&out)
        );
        let json = dir
            .join(out_dir)
            .join(picture.with_extension("json").file_name().unwrap());
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
        v["detections"].as_array().unwrap().clone()
    };
    let (cpu, gpu) = (detections("cpu"), detections("gpu"));
    assert!(!cpu.is_empty(), "threshold 0 keeps what NMS keeps");
    assert_eq!(gpu.len(), cpu.len(), "detection count");
    for (k, (g, c)) in gpu.iter().zip(&cpu).enumerate() {
        let at = format!("detection {k}: emulated {g} vs cpu {c}");
        assert_eq!(g["class"], c["class"], "{at}");
        let number = |v: &serde_json::Value| v.as_f64().unwrap();
        assert!(
            (number(&g["score"]) - number(&c["score"])).abs() <= score_tolerance,
            "{at}"
        );
        let (gb, cb) = (g["bbox"].as_array().unwrap(), c["bbox"].as_array().unwrap());
        for (p, q) in gb.iter().zip(cb) {
            assert!((number(p) - number(q)).abs() <= box_tolerance, "{at}");
        }
    }
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `tiny.ron`: the demo config on 64/96-pixel inputs in batches of two, so a
/// few training steps take a moment. `keys` are more top-level RON entries
/// (each ending in a comma), e.g. `max_iters: 2,`.
pub fn tiny_config(keys: &str) -> String {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/demo.ron");
    format!(
        r#"(
    _BASE_: ["{}"],
    {keys}
    TrainReader: (
        batch_transforms: [
            RandomShape(sizes: [64, 96], random_inter: true),
            NormalizeImage(mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], is_scale: true, is_channel_first: false),
            Permute(to_bgr: false, channel_first: true),
        ],
        batch_size: 2,
    ),
)"#,
        demo.display()
    )
}

/// The loss terms of each step (the columns after `iteration,loss`) of the
/// loss.csv in `save_dir`, whose header must be `header`: the model's loss
/// terms name the columns.
pub fn loss_terms(save_dir: &Path, header: &str) -> Vec<Vec<f64>> {
    let text = std::fs::read_to_string(save_dir.join("loss.csv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(header), "{}", save_dir.display());
    lines
        .map(|l| l.split(',').skip(2).map(|c| c.parse().unwrap()).collect())
        .collect()
}

/// `train -c CONFIG --device gpu ARGS` in `dir` on the emulated GPU, which
/// must succeed and say it ran there.
pub fn train_on_emulated_gpu(dir: &Path, config: &str, args: &[&str]) {
    let out = pulsefocus()
        .current_dir(dir)
        .env("PULSEFOCUS_GPU_EMULATOR", "1")
        .args(["train", "-c", config, "--device", "gpu"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stdout(&out) + &stderr(&out);
    assert!(said.contains("emulated"), "{said}");
}

/// Step `step`'s loss terms on the CPU and the emulated GPU agree within
/// `tolerance` relative (and 1e-6 absolute, for a term near zero).
pub fn assert_step_matches(cpu: &[Vec<f64>], gpu: &[Vec<f64>], step: usize, tolerance: f64) {
    let (c, g) = (&cpu[step], &gpu[step]);
    assert_eq!(c.len(), g.len());
    for (a, b) in c.iter().zip(g) {
        assert!(
            (a - b).abs() <= tolerance * a.abs() + 1e-6,
            "step {step}: cpu {c:?} emulated {g:?}"
        );
    }
}

/// `synth` in `dir`: `images` pictures of `size` pixels with three classes
/// from catalogue entry `first_class` on, as a `format` (voc or coco)
/// dataset in `out`, seed 3.
pub fn synth_three_classes(
    dir: &Path,
    out: &str,
    format: &str,
    first_class: &str,
    images: &str,
    size: &str,
) {
    run_ok(
        dir,
        &[
            "synth",
            "--out",
            out,
            "--format",
            format,
            "--classes",
            "3",
            "--first-class",
            first_class,
            "--images",
            images,
            "--size",
            size,
            "--seed",
            "3",
        ],
    );
}

/// A `pulsefocus synth` dataset's layout.
#[derive(Clone, Copy, PartialEq)]
pub enum Layout {
    Voc,
    Coco,
}

/// The readers of an R-CNN-family test config ([`write_rcnn_config`]): the
/// `layout` dataset `synth` wrote to `dataset`, ImageNet's normalisation,
/// `ResizeImage` to `train_sizes` (one size or a RON list) in training and
/// to `eval_size` at evaluation and inference, the longer side at most
/// `max_size`, and `flip` (a transform and its comma, or nothing) first in
/// training.
pub struct RcnnReaders<'a> {
    pub dataset: &'a str,
    pub layout: Layout,
    pub train_sizes: &'a str,
    pub eval_size: &'a str,
    pub max_size: u32,
    pub flip: &'a str,
}

/// Writes `dir/name`, configs/`demo` with `keys` (top-level RON entries,
/// each ending in a comma) and `readers` (batches of two in training); its
/// path. The save directory is `output/` and `name` without `.ron`.
pub fn write_rcnn_config(
    dir: &Path,
    name: &str,
    demo: &str,
    keys: &str,
    readers: &RcnnReaders,
) -> PathBuf {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../configs")
        .join(demo);
    let RcnnReaders {
        dataset,
        layout,
        train_sizes,
        eval_size,
        max_size,
        flip,
    } = readers;
    let (train, eval, test) = match layout {
        Layout::Voc => {
            let voc = |anno: &str| {
                format!(
                    r#"VOCDataSet(dataset_dir: "{dataset}", anno_path: "{anno}", use_default_label: false, label_list: "label_list.txt")"#
                )
            };
            let names = format!(
                r#"ImageFolder(anno_path: "{dataset}/label_list.txt", use_default_label: false)"#
            );
            (voc("trainval.txt"), voc("test.txt"), names)
        }
        Layout::Coco => {
            let coco = |anno: &str| {
                format!(
                    r#"COCODataSet(dataset_dir: "{dataset}", image_dir: "JPEGImages", anno_path: "annotations/{anno}")"#
                )
            };
            let names = format!(
                r#"ImageFolder(anno_path: "{dataset}/annotations/instances_val.json", use_default_label: false)"#
            );
            (
                coco("instances_train.json"),
                coco("instances_val.json"),
                names,
            )
        }
    };
    let transforms = |sizes: &str, flip: &str| {
        format!(
            r#"sample_transforms: [
            DecodeImage(to_rgb: true),
            {flip}
            NormalizeImage(is_channel_first: false, is_scale: true, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]),
            ResizeImage(target_size: {sizes}, max_size: {max_size}, interp: 1, use_cv2: true),
            Permute(to_bgr: false, channel_first: true),
        ],"#
        )
    };
    let config = format!(
        r#"(
    _BASE_: ["{demo}"],
    {keys}
    TrainReader: (dataset: {train}, {train_transforms} batch_size: 2),
    EvalReader: (dataset: {eval}, {eval_transforms}),
    TestReader: (dataset: {test}, {eval_transforms}),
)"#,
        demo = demo.display(),
        train_transforms = transforms(train_sizes, flip),
        eval_transforms = transforms(eval_size, ""),
    );
    let path = dir.join(name);
    std::fs::write(&path, config).unwrap();
    path
}

/// A fine-tune run by [`pretrain_then_fine_tune`].
pub struct FineTuned {
    /// The fine-tune's config file.
    pub config: String,
    /// `pretrain_weights=CHECKPOINT` and the exclusion, as `-o` took them.
    pub overrides: [String; 2],
    /// What the fine-tune printed (the load report among it).
    pub report: String,
}

/// The seed guide's flow, shortened, on the `synth` datasets
/// `dir/dataset/other` and `dir/dataset/synth` (three classes each, other
/// ones): `write(name, dataset, keys)` writes a test config; the checkpoint
/// is its model trained on `dataset/other` with `pretrain_keys`
/// (`pretrain.ron`, saved in `output/pretrain`), then `train -c NAME --eval
/// -o pretrain_weights=CHECKPOINT EXCLUDE` on `dataset/synth` with
/// `fine_tune_keys`, which must succeed.
pub fn pretrain_then_fine_tune(
    dir: &Path,
    write: impl Fn(&str, &str, &str) -> PathBuf,
    pretrain_keys: &str,
    (name, fine_tune_keys): (&str, &str),
    exclude: &str,
) -> FineTuned {
    let pretrain = write("pretrain.ron", "dataset/other", pretrain_keys);
    run_ok(dir, &["train", "-c", pretrain.to_str().unwrap()]);
    let checkpoint = dir.join("output/pretrain/model_final");
    let weights = format!("pretrain_weights={}", checkpoint.display());
    let exclude = format!("finetune_exclude_pretrained_params={exclude}");
    let config = write(name, "dataset/synth", fine_tune_keys);
    let config = config.to_str().unwrap().to_string();
    let trained = run_ok(
        dir,
        &["train", "-c", &config, "--eval", "-o", &weights, &exclude],
    );
    FineTuned {
        config,
        overrides: [weights, exclude],
        report: stdout(&trained) + &stderr(&trained),
    }
}
