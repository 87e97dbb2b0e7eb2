//! End-to-end tests of the `--device auto|cpu|gpu` rule and of the GPU path:
//! `pulsefocus device`, and `train`, `eval -c` and `infer`, which run their
//! model on the backend it picks.
//!
//! - On this machine as it is (the emulator variable removed): without a GPU,
//!   `gpu` is a one-line error and `auto` trains on the CPU exactly as `cpu`
//!   does; with one, both run on it and the first losses agree with the
//!   CPU's. `scripts/gpu-check.sh` sets PULSEFOCUS_REQUIRE_GPU=1, which makes
//!   a machine without a usable GPU a failure instead of the CPU-only branch.
//! - With PULSEFOCUS_GPU_EMULATOR=1 on every machine: `--device gpu` opens
//!   the emulated GPU (the GPU backend's host code, each kernel launch
//!   checked against the PTX and run by the CPU grid emulator), and train,
//!   eval and infer there must give the CPU run's losses, mAP and detections
//!   within the tolerances stated at each test.
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use pulsefocus_formats::load_checkpoint;
use pulsefocus_gpu::GpuInfo;

mod common;
use common::stderr;

/// The GPU `--device auto` finds here, or why there is none.
fn gpu_here() -> Result<GpuInfo, String> {
    let probed = pulsefocus_gpu::device::probe();
    if let Err(why) = &probed {
        if std::env::var("PULSEFOCUS_REQUIRE_GPU").as_deref() == Ok("1") {
            panic!("PULSEFOCUS_REQUIRE_GPU=1 but {why}");
        }
    }
    probed
}

/// Makes `--device gpu`/`auto` open the emulated GPU.
const EMULATOR: &str = "PULSEFOCUS_GPU_EMULATOR";

/// `pulsefocus ARGS` on this machine as it is.
fn pulsefocus(args: &[&str]) -> Output {
    common::pulsefocus()
        .env_remove(EMULATOR)
        .args(args)
        .output()
        .expect("run pulsefocus")
}

#[test]
fn cpu_is_always_available() {
    let out = pulsefocus(&["device", "--device", "cpu"]);
    assert!(out.status.success());
    assert_eq!(common::stdout(&out).trim(), "device: CPU (--device cpu)");
}

#[test]
fn unknown_device_is_refused_with_the_choices() {
    let out = pulsefocus(&["device", "--device", "tpu"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("expected auto, cpu or gpu"));
}

#[test]
fn gpu_and_auto_follow_what_the_machine_has() {
    let (gpu, auto) = (
        pulsefocus(&["device", "--device", "gpu"]),
        pulsefocus(&["device"]),
    );
    let auto_out = common::stdout(&auto);
    assert!(auto.status.success());
    match gpu_here() {
        Ok(info) => {
            assert!(gpu.status.success(), "{}", stderr(&gpu));
            assert!(auto_out.contains(&info.name), "{auto_out}");
        }
        Err(why) => {
            // A clear one-line error naming what is missing, and auto says why it chose the CPU.
            let err = stderr(&gpu);
            assert!(!gpu.status.success());
            assert_eq!(err.trim(), format!("error: --device gpu: {why}"));
            assert_eq!(auto_out.trim(), format!("device: CPU (auto: {why})"));
        }
    }
}

/// A directory with a synthetic VOC dataset (3 classes, 6 images), `tiny.ron`
/// (the demo model on 64/96-pixel inputs, two steps of two images, a
/// snapshot and a log line per step; evaluation and inference at 64 pixels, so that they take
/// seconds on the emulated GPU too) and `output/tiny/model_final` trained from
/// it on the CPU (stderr kept in `cpu_train.log`); made once per run.
fn trained_on_cpu() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let synth = run_in(
            &dir,
            &["synth", "--out", "dataset/synth", "--classes", "3"],
            &["--images", "6", "--size", "96", "--format", "voc"],
        );
        assert!(synth.status.success(), "synth: {}", stderr(&synth));
        let config = common::tiny_config(
            "max_iters: 2,
    snapshot_iter: 1,
    log_smooth_window: 1,
    log_iter: 1,
    EvalReader: (sample_transforms: [
        DecodeImage(to_rgb: true),
        ResizeImage(target_size: 64, interp: 2),
        NormalizeImage(mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], is_scale: true, is_channel_first: false),
        PadBox(num_max_boxes: 50),
        Permute(to_bgr: false, channel_first: true),
    ]),
    TestReader: (sample_transforms: [
        DecodeImage(to_rgb: true),
        ResizeImage(target_size: 64, interp: 2),
        NormalizeImage(mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], is_scale: true, is_channel_first: false),
        Permute(to_bgr: false, channel_first: true),
    ]),",
        );
        std::fs::write(dir.join("tiny.ron"), config).unwrap();
        let train = run_in(&dir, &["train", "-c", "tiny.ron"], &["--device", "cpu"]);
        assert!(train.status.success(), "train: {}", stderr(&train));
        std::fs::write(dir.join("cpu_train.log"), stderr(&train)).unwrap();
        dir
    })
}

/// `pulsefocus ARGS MORE` in `dir`, on this machine as it is.
fn run_in(dir: &Path, args: &[&str], more: &[&str]) -> Output {
    common::pulsefocus()
        .current_dir(dir)
        .env_remove(EMULATOR)
        .args(args)
        .args(more)
        .output()
        .expect("run pulsefocus")
}

/// `pulsefocus ARGS --device gpu` in `dir` on the emulated GPU; its wall
/// time is printed (`cargo test -- --nocapture` shows it).
fn run_emulated(dir: &Path, args: &[&str]) -> Output {
    let start = std::time::Instant::now();
    let out = common::pulsefocus()
        .current_dir(dir)
        .env(EMULATOR, "1")
        .args(args)
        .args(["--device", "gpu"])
        .output()
        .expect("run pulsefocus");
    println!(
        "{} on the emulated GPU: {:.1} s",
        args[0],
        start.elapsed().as_secs_f64()
    );
    out
}

/// The per-step losses of the plain progress log (`iter I/N loss X ...`).
fn step_losses(log: &str) -> Vec<f64> {
    log.lines()
        .filter_map(|line| {
            let (_, rest) = line.strip_prefix("iter ")?.split_once(' ')?;
            rest.strip_prefix("loss ")?.split(' ').next()?.parse().ok()
        })
        .collect()
}

#[test]
fn auto_trains_on_what_the_machine_has_and_agrees_with_the_cpu() {
    let dir = trained_on_cpu();
    let cpu_log = std::fs::read_to_string(dir.join("cpu_train.log")).unwrap();
    assert!(cpu_log.contains("device: CPU (--device cpu)"), "{cpu_log}");
    let auto = run_in(dir, &["train", "-c", "tiny.ron"], &["-o", "save_dir=auto"]);
    let auto_log = stderr(&auto);
    assert!(auto.status.success(), "{auto_log}");
    let (cpu_losses, auto_losses) = (step_losses(&cpu_log), step_losses(&auto_log));
    assert_eq!(cpu_losses.len(), 2, "{cpu_log}");
    assert_eq!(auto_losses.len(), 2, "{auto_log}");
    match gpu_here() {
        Err(why) => {
            assert!(
                auto_log.contains(&format!("device: CPU (auto: {why})")),
                "{auto_log}"
            );
            // The same backend from the same seed: the same bits.
            assert_eq!(auto_losses, cpu_losses);
            let cpu = load_checkpoint(&dir.join("output/tiny/model_final.pdparams")).unwrap();
            let auto = load_checkpoint(&dir.join("auto/tiny/model_final.pdparams")).unwrap();
            assert_eq!(cpu.len(), auto.len());
            for (name, tensor) in cpu.iter() {
                let other = auto.get(name).unwrap_or_else(|| panic!("no {name}"));
                assert_eq!(tensor.to_f32_vec(), other.to_f32_vec(), "{name}");
            }
        }
        Ok(info) => {
            assert!(auto_log.contains(&format!("device: {info}")), "{auto_log}");
            // Other kernels, other rounding: close, not equal.
            for (gpu, cpu) in auto_losses.iter().zip(&cpu_losses) {
                assert!(
                    (gpu - cpu).abs() <= 1e-2 * cpu.abs().max(1.0),
                    "GPU losses {auto_losses:?}, CPU {cpu_losses:?}"
                );
            }
        }
    }
}

#[test]
fn device_gpu_runs_train_eval_and_infer_there_or_fails_in_one_line() {
    let dir = trained_on_cpu();
    let image = dir.join("dataset/synth/JPEGImages");
    let image = std::fs::read_dir(image)
        .unwrap()
        .map(|e| e.unwrap().path())
        .min()
        .unwrap();
    let weights = "weights=output/tiny/model_final";
    let runs = [
        (
            "train",
            vec!["train", "-c", "tiny.ron", "-o", "save_dir=gpu"],
        ),
        ("eval", vec!["eval", "-c", "tiny.ron", "-o", weights]),
        (
            "infer",
            vec![
                "infer",
                "-c",
                "tiny.ron",
                "-o",
                weights,
                "--infer_img",
                image.to_str().unwrap(),
            ],
        ),
    ];
    let here = gpu_here();
    for (command, args) in runs {
        let out = run_in(dir, &args, &["--device", "gpu"]);
        let err = stderr(&out);
        assert!(!err.contains("panicked"), "{command} panicked:\n{err}");
        match &here {
            Err(why) => {
                assert!(!out.status.success(), "{command} succeeded without a GPU");
                assert_eq!(
                    err.trim(),
                    format!("error: --device gpu: {why}"),
                    "{command}"
                );
            }
            Ok(info) => {
                assert!(out.status.success(), "{command} on the GPU:\n{err}");
                assert!(err.contains(&format!("device: {info}")), "{command}: {err}");
            }
        }
    }
}

#[test]
fn bench_train_step_reports_device_memory_on_a_gpu_or_fails_in_one_line() {
    let out = pulsefocus(&[
        "bench",
        "train-step",
        "--model",
        "small",
        "--classes",
        "3",
        "--batch",
        "2",
        "--size",
        "64",
        "--steps",
        "1",
        "--json",
        "--device",
        "gpu",
    ]);
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "bench panicked:\n{err}");
    match gpu_here() {
        Err(why) => {
            assert!(!out.status.success(), "bench succeeded without a GPU");
            assert_eq!(err.trim(), format!("error: --device gpu: {why}"));
        }
        Ok(info) => {
            assert!(out.status.success(), "bench on the GPU:\n{err}");
            assert!(err.contains(&format!("device: {info}")), "{err}");
            let stdout = common::stdout(&out);
            let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
            assert!(v["images_per_second"].as_f64().unwrap() > 0.0, "{v}");
            // The small model's parameters alone are about 0.5 MB.
            assert!(v["peak_device_bytes"].as_u64().unwrap() > 1 << 19, "{v}");
        }
    }
}

// ---- the GPU path on the emulated device, against the CPU ----

/// The `device:` line of a run on the emulated GPU names it as such.
fn assert_on_the_emulated_gpu(command: &str, log: &str) {
    let line = log
        .lines()
        .find(|l| l.starts_with("device: "))
        .unwrap_or_else(|| panic!("{command}: no device line in:\n{log}"));
    assert!(
        line.starts_with("device: emulated GPU"),
        "{command}: not on the emulated GPU: {line}"
    );
}

fn success(command: &str, out: &Output) {
    let err = stderr(out);
    assert!(!err.contains("panicked"), "{command} panicked:\n{err}");
    assert!(out.status.success(), "{command} failed:\n{err}");
}

/// `loss.csv`'s rows: iteration, loss, loss_xy, loss_wh, loss_obj, loss_cls.
fn loss_rows(path: &Path) -> Vec<Vec<f64>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .skip(1)
        .map(|line| line.split(',').map(|v| v.parse().unwrap()).collect())
        .collect()
}

/// Two training steps on the emulated GPU from the CPU run's seed: each
/// step's loss and its four terms within 1e-3 relative of the CPU's (the
/// kernels sum in other orders, with fused multiply-adds; measured: 1.5e-4
/// at most, in loss_wh). Training from random weights is ill-conditioned:
/// on the CPU alone, weights perturbed by 1e-6 (relative) change the first
/// step's gradients by up to 78% (median 8%) and its loss terms by up to
/// 2.5e-4. So the weights are held to the size of an update: the first
/// step's learning rate is 0 (warm-up from 0), so each run's snapshot after
/// it holds its starting point (BN running statistics included, which do
/// move), and from there each value of the emulated run's final weights may
/// differ from the CPU's by at most the largest second-step update of that
/// tensor (a wrong or missing update fails; a rounding does not).
#[test]
fn emulated_training_matches_the_cpu() {
    let dir = trained_on_cpu();
    let out = run_emulated(dir, &["train", "-c", "tiny.ron", "-o", "save_dir=emulated"]);
    success("train", &out);
    assert_on_the_emulated_gpu("train", &stderr(&out));
    let cpu = loss_rows(&dir.join("output/tiny/loss.csv"));
    let gpu = loss_rows(&dir.join("emulated/tiny/loss.csv"));
    println!(
        "losses per step (iteration, loss, xy, wh, obj, cls):\n  cpu {cpu:?}\n  emulated {gpu:?}"
    );
    assert_eq!(cpu.len(), 2, "{cpu:?}");
    assert_eq!(gpu.len(), cpu.len(), "{gpu:?}");
    for (g, c) in gpu.iter().zip(&cpu) {
        assert_eq!(g[0], c[0], "iterations");
        for column in 1..6 {
            assert!(
                (g[column] - c[column]).abs() <= 1e-3 * c[column].abs(),
                "step {} column {column}: emulated {} vs cpu {}",
                c[0],
                g[column],
                c[column]
            );
        }
    }
    let checkpoint = |path: &str| load_checkpoint(&dir.join(path)).unwrap();
    let (cpu_start, gpu_start) = (
        checkpoint("output/tiny/1.pdparams"),
        checkpoint("emulated/tiny/1.pdparams"),
    );
    let (cpu, gpu) = (
        checkpoint("output/tiny/model_final.pdparams"),
        checkpoint("emulated/tiny/model_final.pdparams"),
    );
    assert_eq!(cpu.len(), gpu.len());
    let mut worst = (0.0f32, String::new());
    for (name, tensor) in cpu.iter() {
        let values = |c: &pulsefocus_formats::Checkpoint| {
            c.get(name)
                .unwrap_or_else(|| panic!("no {name}"))
                .to_f32_vec()
        };
        let (c, g, c0, g0) = (
            tensor.to_f32_vec(),
            values(&gpu),
            values(&cpu_start),
            values(&gpu_start),
        );
        let update = c
            .iter()
            .zip(&c0)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        let moved = g
            .iter()
            .zip(&g0)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        for (i, (a, b)) in g.iter().zip(&c).enumerate() {
            let difference = (a - b).abs() - (g0[i] - c0[i]).abs();
            assert!(
                difference <= update.max(moved) + 1e-7,
                "{name}[{i}]: emulated {a} vs cpu {b}, beyond the largest update {update}"
            );
            if update > 0.0 && difference / update > worst.0 {
                worst = (difference / update, name.to_string());
            }
        }
    }
    println!(
        "weights: largest difference {:.2} of the CPU's largest update of the tensor ({})",
        worst.0, worst.1
    );
}

/// `eval -c` on the CPU and on the emulated GPU with the same weights: the
/// same images, mAP and per-class AP within 1e-4 (detection scores differ
/// by ~1e-6, which could only reorder two detections of equal score), and
/// `bbox.json` the same detections: categories and images equal, scores
/// within 1e-5, boxes within 1e-2 pixels.
#[test]
fn emulated_eval_matches_the_cpu() {
    let dir = trained_on_cpu();
    let args = |out: &'static str| {
        [
            "eval",
            "-c",
            "tiny.ron",
            "-o",
            "weights=output/tiny/model_final",
            "--json",
            "--output_eval",
            out,
        ]
    };
    let cpu = run_in(dir, &args("eval_cpu"), &["--device", "cpu"]);
    success("eval on the CPU", &cpu);
    let gpu = run_emulated(dir, &args("eval_emulated"));
    success("eval", &gpu);
    assert_on_the_emulated_gpu("eval", &stderr(&gpu));
    let json = |out: &Output| -> serde_json::Value {
        serde_json::from_str(common::stdout(out).trim()).unwrap()
    };
    let (c, g) = (json(&cpu), json(&gpu));
    println!("mAP: cpu {} emulated {}", c["map"], g["map"]);
    assert_eq!(c["images"], g["images"]);
    let close = |what: &str, a: &serde_json::Value, b: &serde_json::Value| {
        let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
        assert!((a - b).abs() <= 1e-4, "{what}: emulated {b} vs cpu {a}");
    };
    close("mAP", &c["map"], &g["map"]);
    let per_class = c["per_class"].as_object().unwrap();
    assert_eq!(per_class.len(), 3);
    for (class, ap) in per_class {
        close(&format!("AP of {class}"), ap, &g["per_class"][class]);
    }
    let boxes = |sub: &str| -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(dir.join(sub).join("bbox.json")).unwrap();
        serde_json::from_str::<serde_json::Value>(&text)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    };
    let (c, g) = (boxes("eval_cpu"), boxes("eval_emulated"));
    println!(
        "bbox.json: {} detections on the CPU, {} emulated",
        c.len(),
        g.len()
    );
    assert!(!c.is_empty());
    assert_same_detections("bbox.json", &c, &g, "category_id");
}

/// Detections in the same order: `class_key` and (for bbox.json) the image
/// equal, scores within 1e-5, box numbers within 1e-2 pixels (the images
/// are at most 96 pixels; the GPU's exp moves an edge by ~1e-4).
fn assert_same_detections(
    what: &str,
    cpu: &[serde_json::Value],
    gpu: &[serde_json::Value],
    class_key: &str,
) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: detection count");
    for (k, (g, c)) in gpu.iter().zip(cpu).enumerate() {
        let at = format!("{what}[{k}]: emulated {g} vs cpu {c}");
        assert_eq!(g[class_key], c[class_key], "{at}");
        assert_eq!(g.get("image_id"), c.get("image_id"), "{at}");
        let (gs, cs) = (g["score"].as_f64().unwrap(), c["score"].as_f64().unwrap());
        assert!((gs - cs).abs() <= 1e-5, "{at}");
        let numbers = |v: &serde_json::Value| -> Vec<f64> {
            v["bbox"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        };
        for (p, q) in numbers(g).iter().zip(numbers(c)) {
            assert!((p - q).abs() <= 1e-2, "{at}");
        }
    }
}

/// `infer` of one image with every detection NMS keeps (threshold 0) on the
/// CPU and on the emulated GPU: the same detections (see
/// `assert_same_detections`).
#[test]
fn emulated_infer_matches_the_cpu() {
    let dir = trained_on_cpu();
    let image = std::fs::read_dir(dir.join("dataset/synth/JPEGImages"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .min()
        .unwrap();
    let args = |out: &'static str| {
        vec![
            "infer".to_string(),
            "-c".into(),
            "tiny.ron".into(),
            "-o".into(),
            "weights=output/tiny/model_final".into(),
            "--infer_img".into(),
            image.display().to_string(),
            "--output_dir".into(),
            out.into(),
            "--draw_threshold".into(),
            "0".into(),
        ]
    };
    let (cpu_args, gpu_args) = (args("infer_cpu"), args("infer_emulated"));
    let cpu = run_in(dir, &as_str(&cpu_args)[..], &["--device", "cpu"]);
    success("infer on the CPU", &cpu);
    let gpu = run_emulated(dir, &as_str(&gpu_args)[..]);
    success("infer", &gpu);
    assert_on_the_emulated_gpu("infer", &stderr(&gpu));
    let listed = |sub: &str| -> Vec<serde_json::Value> {
        let name = Path::new(image.file_name().unwrap()).with_extension("json");
        let text = std::fs::read_to_string(dir.join(sub).join(name)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["detections"].as_array().unwrap().clone()
    };
    let (c, g) = (listed("infer_cpu"), listed("infer_emulated"));
    println!(
        "infer: {} detections on the CPU, {} emulated",
        c.len(),
        g.len()
    );
    assert!(!c.is_empty(), "threshold 0 keeps what NMS keeps");
    assert_same_detections("infer", &c, &g, "class");
}

fn as_str(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}
