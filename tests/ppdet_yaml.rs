//! PaddleDetection's transfer-learning example, `yolov3_mobilenet_v1_fruit.yml`,
//! used unchanged as a PaddleDetection user would: `synth` lays out the fruit
//! dataset where the YAML expects it (dataset/fruit, train.txt, val.txt,
//! label_list.txt with apple, banana, orange), then `train` trains,
//! evaluates and writes snapshots, and `plan`, `dataset check`, `eval`,
//! `infer` and `config convert` take the same file.
//!
//! Tiny settings only through `-o`: the demo's small model (so the bundled
//! small checkpoint is the pretrain_weights) and three steps on 64-pixel
//! pictures.
//!
//! PaddleDetection's cascade configs, unchanged too, plan the parameter
//! list PaddleDetection's own code creates.

use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::{pulsefocus, stderr, stdout};

fn fruit_yaml() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/ppdet_configs/yolov3_mobilenet_v1_fruit.yml")
}

/// The demo's small model, which the bundled checkpoint holds.
const SMALL_MODEL: [&str; 2] = ["MobileNet.conv_group_scale=0.25", "YOLOv3Head.width=128"];

/// Runs `pulsefocus ARGS -c fruit.yml -o SMALL_MODEL OVERRIDES` in `dir`,
/// requiring success.
fn run(dir: &Path, args: &[&str], overrides: &[&str]) -> Output {
    let out = pulsefocus()
        .current_dir(dir)
        .args(args)
        .arg("-c")
        .arg(fruit_yaml())
        .arg("-o")
        .args(SMALL_MODEL)
        .args(overrides)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        stdout(&out),
        stderr(&out)
    );
    out
}

#[test]
fn paddledetections_fruit_yaml_trains_evaluates_and_infers_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path();
    let synth = pulsefocus()
        .current_dir(ws)
        .args([
            "synth",
            "--out",
            "dataset/fruit",
            "--names",
            "apple,banana,orange",
        ])
        .args(["--format", "voc", "--images", "6", "--size", "64"])
        .output()
        .unwrap();
    assert!(synth.status.success(), "{}", stderr(&synth));

    let pretrained = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets/yolov3_small_synth_pretrained.tar")
        .display()
        .to_string();
    let pretrain = format!("pretrain_weights={pretrained}");

    // Every key is read; those without effect are named, once each.
    let plan = run(ws, &["plan"], &[&pretrain]);
    let warnings = stderr(&plan);
    for key in [
        "use_gpu",
        "inputs_def.fields",
        "inputs_def.image_shape",
        "bufsize",
    ] {
        let lines = warnings
            .lines()
            .filter(|l| l.starts_with("warning: ") && l.contains(&format!(": {key} ")))
            .count();
        assert_eq!(lines, 1, "{key}: {warnings}");
    }
    // The small checkpoint loads but for the class-count dependent outputs
    // the YAML excludes.
    let report = stdout(&plan);
    assert!(report.contains("3 classes: 241 parameters"), "{report}");
    assert!(report.contains("excluded (6)"), "{report}");

    let check = run(ws, &["dataset", "check"], &[]);
    let report = stdout(&check);
    for name in ["apple", "banana", "orange"] {
        assert!(report.contains(name), "{report}");
    }

    let train = run(
        ws,
        &["train", "--eval"],
        &[&pretrain, "max_iters=3", "snapshot_iter=2", "log_iter=1"],
    );
    let log = stderr(&train);
    assert!(log.contains("iter 3/3 loss"), "{log}");
    assert!(log.contains("iter 2: mAP"), "{log}");
    let out_dir = ws.join("output/yolov3_mobilenet_v1_fruit");
    for file in ["2.pdparams", "model_final.pdparams", "best_model.pdparams"] {
        assert!(out_dir.join(file).is_file(), "no {file}: {log}");
    }

    // The YAML's weights: output/yolov3_mobilenet_v1_fruit/best_model.
    let eval = run(ws, &["eval"], &[]);
    assert!(stdout(&eval).contains("mAP(0.50)"), "{}", stdout(&eval));
    let infer = run(
        ws,
        &[
            "infer",
            "--infer_img",
            "dataset/fruit/JPEGImages/000005.jpg",
        ],
        &[],
    );
    assert!(ws.join("output/000005.jpg").is_file(), "{}", stderr(&infer));

    // config convert writes RON that loads to the same config.
    let ron = run(ws, &["config", "convert"], &[]);
    std::fs::write(ws.join("fruit.ron"), stdout(&ron)).unwrap();
    let again = pulsefocus()
        .current_dir(ws)
        .args(["config", "convert", "-c", "fruit.ron"])
        .output()
        .unwrap();
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(stdout(&again), stdout(&ron));
}

/// PaddleDetection's two cascade configs, unchanged: `plan -c` names the
/// model and lists its parameters in the order and shapes PaddleDetection's
/// own code creates them (`core/tests/fixtures/cascade_rcnn/`).
#[test]
fn paddledetections_cascade_yamls_plan_paddles_parameter_list() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (name, model) in [
        (
            "cascade_rcnn_r50_fpn_1x",
            "Cascade R-CNN with ResNet-FPN backbone",
        ),
        (
            "cascade_mask_rcnn_r50_fpn_1x",
            "Cascade Mask R-CNN with ResNet-FPN backbone",
        ),
    ] {
        let yaml = root.join(format!("tests/fixtures/ppdet_configs/{name}.yml"));
        let list = root.join(format!(
            "core/tests/fixtures/cascade_rcnn/{name}.81.params.json"
        ));
        let paddle: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(list).unwrap()).unwrap();
        let paddle: Vec<(&str, &serde_json::Value)> = paddle
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["name"].as_str().unwrap(), &p["shape"]))
            .collect();
        // Offline: no pretrain_weights to download.
        let plan = |json: &[&str]| {
            let out = pulsefocus()
                .arg("plan")
                .arg("-c")
                .arg(&yaml)
                .args(["-o", "pretrain_weights="])
                .args(json)
                .output()
                .unwrap();
            assert!(out.status.success(), "{name}: {}", stderr(&out));
            out
        };
        let text = stdout(&plan(&[]));
        let want = format!("model: {model}, 80 classes: {} parameters", paddle.len());
        assert!(text.contains(&want), "{text}");
        let json: serde_json::Value = serde_json::from_slice(&plan(&["--json"]).stdout).unwrap();
        let ours: Vec<(&str, &serde_json::Value)> = json["model"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["name"].as_str().unwrap(), &p["shape"]))
            .collect();
        assert_eq!(ours, paddle, "{name}");
    }
}
