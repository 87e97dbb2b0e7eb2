//! End-to-end tests of `pulsefocus train`: fine-tuning from a checkpoint of
//! another class count, exact resumption (`best_model` included), snapshots that paddlepaddle reads,
//! clear errors on bad input, the NaN stop, Ctrl-C and the plain progress log.
//!
//! Every run is tiny (64/96-pixel images, a few steps of the quarter-width
//! demo model) so the whole file runs in seconds.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use pulsefocus_formats::load_checkpoint;

mod common;
use common::{pulsefocus, stderr, stdout};

/// A working directory with a synthetic VOC dataset in `dataset/synth` and
/// `tiny.ron`: the demo config with small inputs, batches of two and a
/// constant learning rate, so a few steps show learning.
struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new(classes: usize, first_class: usize) -> Workspace {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace { dir };
        ws.synth("dataset/synth", classes, first_class);
        let config = common::tiny_config(&format!(
            "num_classes: {classes},
    max_iters: 4,
    snapshot_iter: 2,
    log_smooth_window: 1,
    log_iter: 1,
    LearningRate: (
        base_lr: 0.001,
        schedulers: [
            PiecewiseDecay(gamma: 0.1, milestones: [100000]),
            LinearWarmup(start_factor: 1.0, steps: 1),
        ],
    ),"
        ));
        std::fs::write(ws.path("tiny.ron"), config).unwrap();
        ws
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn synth(&self, out: &str, classes: usize, first_class: usize) {
        let status = pulsefocus()
            .current_dir(self.dir.path())
            .args(["synth", "--out", out, "--format", "voc", "--images", "16"])
            .args(["--size", "96", "--classes", &classes.to_string()])
            .args(["--first-class", &first_class.to_string()])
            .output()
            .unwrap();
        assert!(status.status.success(), "synth: {}", stderr(&status));
    }

    /// `pulsefocus train -c tiny.ron -o OVERRIDES... EXTRA...`.
    fn train(&self, overrides: &[&str], extra: &[&str]) -> Output {
        self.train_config("tiny.ron", overrides, extra)
    }

    /// `pulsefocus train -c CONFIG -o OVERRIDES... EXTRA...`.
    fn train_config(&self, config: &str, overrides: &[&str], extra: &[&str]) -> Output {
        let mut cmd = pulsefocus();
        cmd.current_dir(self.dir.path())
            .args(["train", "-c", config]);
        if !overrides.is_empty() {
            cmd.arg("-o").args(overrides);
        }
        cmd.args(extra).output().unwrap()
    }
}

/// The per-step losses of the plain progress log (`iter I/N loss X ...`),
/// which with `log_smooth_window: 1` are the raw losses (`log_iter: 1`: every step).
fn step_losses(log: &str) -> Vec<(u64, f64)> {
    log.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("iter ")?;
            let (counter, rest) = rest.split_once(' ')?;
            let iteration = counter.split('/').next()?.parse().ok()?;
            let loss = rest
                .strip_prefix("loss ")?
                .split(' ')
                .next()?
                .parse()
                .ok()?;
            Some((iteration, loss))
        })
        .collect()
}

fn assert_failed_with(out: &Output, needles: &[&str]) {
    let err = stderr(out);
    assert!(!out.status.success(), "expected a failure:\n{err}");
    assert!(!err.contains("panicked"), "panicked:\n{err}");
    for needle in needles {
        assert!(err.contains(needle), "no '{needle}' in:\n{err}");
    }
}

#[test]
fn fine_tune_from_another_class_count_learns_and_writes_its_outputs() {
    let ws = Workspace::new(3, 0);
    // The "pretrained" checkpoint: the same model trained on 2 other classes.
    ws.synth("dataset/other", 2, 10);
    let other_dataset = [
        "num_classes=2",
        "save_dir=pretrain",
        "max_iters=4",
        "TrainReader.dataset.dataset_dir=dataset/other",
    ];
    let out = ws.train(&other_dataset, &[]);
    assert!(out.status.success(), "pretraining: {}", stderr(&out));
    assert!(ws.path("pretrain/tiny/model_final.pdparams").is_file());

    let out = ws.train(
        &[
            "pretrain_weights=pretrain/tiny/model_final",
            "max_iters=24",
            "snapshot_iter=10",
        ],
        &[],
    );
    let (log, report) = (stderr(&out), stdout(&out));
    assert!(out.status.success(), "fine-tune: {log}");
    // The load report: the backbone and neck load, the class-count dependent
    // outputs are excluded by the preset.
    assert!(report.contains("excluded 6 by 'yolo_output'"), "{report}");
    assert!(!report.contains("loaded 0/"), "nothing loaded:\n{report}");

    let losses = step_losses(&log);
    assert_eq!(losses.len(), 24, "one log line per step:\n{log}");
    let mean = |s: &[(u64, f64)]| s.iter().map(|l| l.1).sum::<f64>() / s.len() as f64;
    let (first, last) = (mean(&losses[..4]), mean(&losses[20..]));
    assert!(last < 0.8 * first, "loss {first} -> {last}:\n{log}");

    for file in [
        "10.pdparams",
        "10.pdopt",
        "20.pdparams",
        "20.pdopt",
        "model_final.pdparams",
        "model_final.pdopt",
        "loss.svg",
    ] {
        assert!(ws.path("output/tiny").join(file).is_file(), "no {file}");
    }
    let svg = std::fs::read_to_string(ws.path("output/tiny/loss.svg")).unwrap();
    assert!(svg.starts_with("<svg") || svg.starts_with("<?xml"), "{svg}");
    let opt = load_checkpoint(&ws.path("output/tiny/model_final.pdopt")).unwrap();
    assert_eq!(opt.metadata["LR_Scheduler"]["last_epoch"], 24);
    assert!(stdout(&out).contains("finished at iteration 24"));
}

#[test]
fn resume_continues_the_uninterrupted_trajectory_exactly() {
    let ws = Workspace::new(3, 0);
    let straight = ws.train(&["save_dir=straight", "max_iters=6"], &["--seed", "7"]);
    assert!(straight.status.success(), "{}", stderr(&straight));
    let first = ws.train(&["save_dir=split", "max_iters=3"], &["--seed", "7"]);
    assert!(first.status.success(), "{}", stderr(&first));
    // The seed comes from the snapshot, not from the command line.
    let resumed = ws.train(
        &["save_dir=split", "max_iters=6"],
        &["-r", "split/tiny/model_final.pdparams"],
    );
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert!(stderr(&resumed).contains("resuming at iteration 3"));

    let straight_losses = step_losses(&stderr(&straight));
    let resumed_losses = step_losses(&stderr(&resumed));
    assert_eq!(resumed_losses, straight_losses[3..], "losses of steps 4..6");
    // Weights, running statistics, velocities and the step counter.
    for ext in ["pdparams", "pdopt"] {
        let a = std::fs::read(ws.path(&format!("straight/tiny/model_final.{ext}"))).unwrap();
        let b = std::fs::read(ws.path(&format!("split/tiny/model_final.{ext}"))).unwrap();
        assert!(a == b, "model_final.{ext} differs after resuming");
    }
    // The resumed run's curves continue the first run's: its loss.csv (and
    // so loss.svg) covers steps 1..6 with the uninterrupted run's values.
    for file in ["loss.csv", "loss.svg"] {
        let a = std::fs::read_to_string(ws.path(&format!("straight/tiny/{file}"))).unwrap();
        let b = std::fs::read_to_string(ws.path(&format!("split/tiny/{file}"))).unwrap();
        assert_eq!(a, b, "{file} differs after resuming");
    }
    let csv = std::fs::read_to_string(ws.path("split/tiny/loss.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 6, "{csv}");
}

#[test]
fn resuming_keeps_the_better_best_model() {
    let ws = Workspace::new(3, 0);
    let first = ws.train(&["max_iters=2"], &["--eval"]);
    assert!(first.status.success(), "{}", stderr(&first));
    // Say the evaluation at iteration 2 scored 1.0, which nothing can beat:
    // the resumed run's evaluation must not replace its best_model.
    std::fs::write(ws.path("output/tiny/map.csv"), "iteration,map\n2,1\n").unwrap();
    let best = std::fs::read(ws.path("output/tiny/best_model.pdparams")).unwrap();
    let resumed = ws.train(
        &["max_iters=4"],
        &["--eval", "-r", "output/tiny/model_final.pdparams"],
    );
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let after = std::fs::read(ws.path("output/tiny/best_model.pdparams")).unwrap();
    assert!(after == best, "best_model was replaced by a worse model");
    let report = stdout(&resumed);
    assert!(report.contains("best mAP 1.0000 (iteration 2)"), "{report}");
    let csv = std::fs::read_to_string(ws.path("output/tiny/map.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 2, "{csv}");
}

/// DecodeImage's `to_rgb`, NormalizeImage's statistics and Permute's
/// `to_bgr` reach the network: each variant of the reader gives another first
/// loss (they were parsed and ignored, the loss byte-identical).
#[test]
fn reader_transform_parameters_change_the_first_loss() {
    let ws = Workspace::new(3, 0);
    let imagenet = "mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], is_scale: true";
    let ssd =
        "mean: [127.5, 127.5, 127.5], std: [127.502231, 127.502231, 127.502231], is_scale: false";
    let variants = [
        ("rgb", true, imagenet, false),
        ("decoded_bgr", false, imagenet, false),
        ("to_bgr", true, imagenet, true),
        ("ssd", true, ssd, false),
    ];
    let mut first_losses = Vec::new();
    for (name, to_rgb, statistics, to_bgr) in variants {
        let config = format!(
            r#"(
    _BASE_: ["tiny.ron"],
    TrainReader: (
        sample_transforms: [DecodeImage(to_rgb: {to_rgb}), NormalizeBox(), PadBox(num_max_boxes: 50), BboxXYXY2XYWH()],
        batch_transforms: [
            RandomShape(sizes: [64]),
            NormalizeImage({statistics}, is_channel_first: false),
            Permute(to_bgr: {to_bgr}, channel_first: true),
        ],
    ),
)"#
        );
        std::fs::write(ws.path(&format!("{name}.ron")), config).unwrap();
        let out = ws.train_config(&format!("{name}.ron"), &["max_iters=1"], &[]);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        let losses = step_losses(&stderr(&out));
        first_losses.push((name, losses[0].1));
    }
    eprintln!("first losses: {first_losses:?}");
    for (i, (name, loss)) in first_losses.iter().enumerate() {
        for (other, other_loss) in &first_losses[..i] {
            assert_ne!(
                loss, other_loss,
                "{name} and {other} give the same first loss"
            );
        }
    }
}

/// The Python side of the round trip: prints `{name: [shape, values]}` of
/// every tensor, and the optimizer's `LR_Scheduler`, as paddle reads them.
const PADDLE_READER: &str = r#"
import json, sys
import numpy as np
import paddle
out = {}
for path in sys.argv[1:]:
    state = paddle.load(path)
    for name, value in state.items():
        if isinstance(value, dict):
            out[name] = value
        else:
            array = np.asarray(value.numpy() if hasattr(value, "numpy") else value)
            out[name] = [list(array.shape), array.astype(np.float64).ravel().tolist()]
print(json.dumps(out))
"#;

#[test]
fn snapshots_load_in_paddlepaddle_with_the_same_values() {
    let import = Command::new("python3")
        .args(["-c", "import paddle"])
        .output();
    if !import.as_ref().is_ok_and(|o| o.status.success()) {
        assert!(
            std::env::var_os("CI").is_none(),
            "paddlepaddle is required under CI: {import:?}"
        );
        eprintln!("skipping: python3 cannot import paddle");
        return;
    }
    let ws = Workspace::new(3, 0);
    let out = ws.train(&["max_iters=2"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let params = ws.path("output/tiny/model_final.pdparams");
    let optimizer = ws.path("output/tiny/model_final.pdopt");
    let python = Command::new("python3")
        .args(["-c", PADDLE_READER])
        .arg(&params)
        .arg(&optimizer)
        .output()
        .unwrap();
    assert!(python.status.success(), "paddle.load: {}", stderr(&python));
    let read: serde_json::Value = serde_json::from_slice(&python.stdout).unwrap();

    let mut checked = 0;
    for path in [&params, &optimizer] {
        let ours = load_checkpoint(path).unwrap();
        assert!(!ours.is_empty());
        for (name, tensor) in ours.iter() {
            let [shape, values] = read[name].as_array().unwrap().as_slice() else {
                panic!("{name}: {:?}", read[name]);
            };
            let shape: Vec<usize> = serde_json::from_value(shape.clone()).unwrap();
            assert_eq!(shape, tensor.shape(), "{name}");
            let values: Vec<f32> = values
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            assert!(values == tensor.to_f32_vec(), "{name}: values differ");
            checked += 1;
        }
    }
    assert!(read["conv1_weights_velocity_0"].is_array());
    assert_eq!(
        read["LR_Scheduler"]["last_epoch"], 2,
        "{}",
        read["LR_Scheduler"]
    );
    assert!(checked > 200, "only {checked} tensors");
}

#[test]
fn a_missing_weights_path_is_a_clear_error() {
    let ws = Workspace::new(3, 0);
    let out = ws.train(&["pretrain_weights=no/such/checkpoint"], &[]);
    assert_failed_with(&out, &["no/such/checkpoint"]);
    let out = ws.train(&[], &["-r", "no/such/snapshot"]);
    assert_failed_with(&out, &["no/such/snapshot"]);
}

#[test]
fn a_dataset_without_usable_images_is_a_clear_error() {
    let ws = Workspace::new(3, 0);
    for entry in std::fs::read_dir(ws.path("dataset/synth/JPEGImages")).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    let out = ws.train(&[], &[]);
    assert_failed_with(&out, &["trainval.txt", "no usable images"]);
}

#[test]
fn a_config_for_the_wrong_class_count_is_a_clear_error() {
    let ws = Workspace::new(3, 0);
    let out = ws.train(&["num_classes=5"], &[]);
    assert_failed_with(&out, &["num_classes", "5 classes", "set -o num_classes=3"]);
}

#[test]
fn an_invalid_override_is_a_clear_error() {
    let ws = Workspace::new(3, 0);
    let out = ws.train(&["max_iters=many"], &[]);
    assert_failed_with(&out, &["max_iters"]);
}

#[test]
fn a_nan_loss_stops_with_a_clear_message_and_keeps_the_last_snapshot() {
    let ws = Workspace::new(3, 0);
    let out = ws.train(&["max_iters=2"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Diverges at once: the snapshot resumed from is the last good one, or
    // one written before the weights overflowed.
    let out = ws.train(
        &[
            "LearningRate.base_lr=1e9",
            "max_iters=20",
            "snapshot_iter=1",
        ],
        &["-r", "output/tiny/model_final"],
    );
    assert_failed_with(&out, &["became", "Try a lower LearningRate.base_lr"]);
    let err = stderr(&out);
    let last = err
        .split("last good snapshot is ")
        .nth(1)
        .and_then(|s| s.split(".pdparams").next())
        .unwrap_or_else(|| panic!("{err}"));
    let snapshot = load_checkpoint(&ws.path(&format!("{last}.pdparams"))).unwrap();
    for (name, tensor) in snapshot.iter() {
        assert!(
            tensor.to_f32_vec().iter().all(|v| v.is_finite()),
            "{name} in the last good snapshot is not finite"
        );
    }
    assert!(load_checkpoint(&ws.path(&format!("{last}.pdopt"))).is_ok());
}

#[test]
fn ctrl_c_writes_a_snapshot_and_exits_cleanly() {
    let ws = Workspace::new(3, 0);
    let mut child = pulsefocus()
        .current_dir(ws.dir.path())
        .args(["train", "-c", "tiny.ron", "-o", "max_iters=100000"])
        .args(["snapshot_iter=100000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = String::new();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        log.push_str(&line);
        log.push('\n');
        if line.starts_with("iter 2/") {
            break;
        }
    }
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    for line in lines {
        log.push_str(&line.unwrap());
        log.push('\n');
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "exit {:?}:\n{log}", out.status);
    let summary = stdout(&out);
    let iteration: u64 = summary
        .split("stopped at iteration ")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{summary}\n{log}"));
    assert!(iteration >= 2, "{summary}");
    let stem = ws.path(&format!("output/tiny/{iteration}"));
    let params = load_checkpoint(&stem.with_extension("pdparams")).unwrap();
    assert!(!params.is_empty());
    let optimizer = load_checkpoint(&stem.with_extension("pdopt")).unwrap();
    assert_eq!(optimizer.metadata["LR_Scheduler"]["last_epoch"], iteration);
}

#[test]
fn without_a_terminal_progress_is_a_log_line_every_log_iter_steps() {
    let ws = Workspace::new(3, 0);
    let out = ws.train(&["max_iters=7", "log_iter=3", "log_smooth_window=5"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = stderr(&out);
    let logged: Vec<u64> = step_losses(&log).iter().map(|l| l.0).collect();
    assert_eq!(logged, [3, 6, 7], "{log}");
    assert!(!log.contains('\r'), "terminal control in a log:\n{log}");
    for field in ["lr ", "img/s", "xy ", "obj "] {
        assert!(log.contains(field), "no '{field}' in:\n{log}");
    }
}
