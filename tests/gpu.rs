//! End-to-end tests of the `--device auto|cpu|gpu` rule: `pulsefocus device`,
//! and `train`, `eval -c` and `infer`, which run their model on the backend it
//! picks. Each test checks what this machine has: without a GPU, `gpu` is a
//! one-line error and `auto` trains on the CPU exactly as `cpu` does; with
//! one, both run on it and the first losses agree with the CPU's.
//! `scripts/gpu-check.sh` sets PULSEFOCUS_REQUIRE_GPU=1, which makes a machine
//! without a usable GPU a failure instead of the CPU-only branch.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use pulsefocus_formats::load_checkpoint;
use pulsefocus_gpu::GpuInfo;

mod common;

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

fn pulsefocus(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pulsefocus"))
        .args(args)
        .output()
        .expect("run pulsefocus")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn cpu_is_always_available() {
    let out = pulsefocus(&["device", "--device", "cpu"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "device: CPU (--device cpu)"
    );
}

#[test]
fn unknown_device_is_refused_with_the_choices() {
    let out = pulsefocus(&["device", "--device", "tpu"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected auto, cpu or gpu"));
}

#[test]
fn gpu_and_auto_follow_what_the_machine_has() {
    let (gpu, auto) = (
        pulsefocus(&["device", "--device", "gpu"]),
        pulsefocus(&["device"]),
    );
    let auto_out = String::from_utf8_lossy(&auto.stdout).to_string();
    assert!(auto.status.success());
    match gpu_here() {
        Ok(info) => {
            assert!(
                gpu.status.success(),
                "{}",
                String::from_utf8_lossy(&gpu.stderr)
            );
            assert!(auto_out.contains(&info.name), "{auto_out}");
        }
        Err(why) => {
            // A clear one-line error naming what is missing, and auto says why it chose the CPU.
            let err = String::from_utf8_lossy(&gpu.stderr);
            assert!(!gpu.status.success());
            assert_eq!(err.trim(), format!("error: --device gpu: {why}"));
            assert_eq!(auto_out.trim(), format!("device: CPU (auto: {why})"));
        }
    }
}

/// A directory with a synthetic VOC dataset (3 classes, 6 images), `tiny.ron`
/// (the demo model on 64/96-pixel inputs, two steps of two images, a log
/// line per step) and `output/tiny/model_final` trained from it on the CPU
/// (stderr kept in `cpu_train.log`); made once per run.
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
    snapshot_iter: 2,
    log_smooth_window: 1,
    log_iter: 1,",
        );
        std::fs::write(dir.join("tiny.ron"), config).unwrap();
        let train = run_in(&dir, &["train", "-c", "tiny.ron"], &["--device", "cpu"]);
        assert!(train.status.success(), "train: {}", stderr(&train));
        std::fs::write(dir.join("cpu_train.log"), stderr(&train)).unwrap();
        dir
    })
}

fn run_in(dir: &Path, args: &[&str], more: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pulsefocus"))
        .current_dir(dir)
        .args(args)
        .args(more)
        .output()
        .expect("run pulsefocus")
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
            let stdout = String::from_utf8_lossy(&out.stdout);
            let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
            assert!(v["images_per_second"].as_f64().unwrap() > 0.0, "{v}");
            // The small model's parameters alone are about 0.5 MB.
            assert!(v["peak_device_bytes"].as_u64().unwrap() > 1 << 19, "{v}");
        }
    }
}
