//! End-to-end tests of device failures on the emulated GPU
//! (`PULSEFOCUS_GPU_EMULATOR=1`): they reach the user as one `error:` line
//! and a non-zero exit, never a panic. The emulator's memory limit
//! (`PULSEFOCUS_GPU_EMULATOR_MEMORY`) makes out-of-memory reproducible.
use std::path::Path;
use std::process::Output;

mod common;
use common::stderr;

/// pulsefocus in `dir` on the emulated GPU, with `memory` as its limit.
fn pulsefocus(dir: &Path, args: &[&str], memory: Option<&str>) -> Output {
    let mut command = common::pulsefocus();
    command
        .current_dir(dir)
        .args(args)
        .env("PULSEFOCUS_GPU_EMULATOR", "1")
        .env_remove("PULSEFOCUS_GPU_EMULATOR_MEMORY");
    if let Some(memory) = memory {
        command.env("PULSEFOCUS_GPU_EMULATOR_MEMORY", memory);
    }
    command.output().expect("run pulsefocus")
}

/// The lines of `stderr` that report an error.
fn error_lines(err: &str) -> Vec<&str> {
    err.lines().filter(|l| l.starts_with("error")).collect()
}

#[test]
fn device_reports_the_emulated_gpu() {
    let dir = tempfile::tempdir().unwrap();
    let out = pulsefocus(dir.path(), &["device", "--device", "gpu"], Some("512MiB"));
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0],
        "device: emulated GPU (PULSEFOCUS_GPU_EMULATOR=1; kernels run on the CPU grid emulator)"
    );
    let kernels: usize = lines[1]
        .strip_prefix("kernels: ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(kernels > 30, "{stdout}");
    assert!(
        lines[1].ends_with("run by the grid emulator, each launch checked against the PTX (sm_53)"),
        "{stdout}"
    );
    assert_eq!(lines[2], "memory: 512.0 MiB free of 512.0 MiB");
    // auto takes it too; cpu stays the CPU.
    let auto = pulsefocus(dir.path(), &["device"], None);
    assert!(String::from_utf8_lossy(&auto.stdout).starts_with("device: emulated GPU"));
    let cpu = pulsefocus(dir.path(), &["device", "--device", "cpu"], None);
    assert_eq!(
        String::from_utf8_lossy(&cpu.stdout).trim(),
        "device: CPU (--device cpu)"
    );
}

#[test]
fn a_bad_memory_size_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = pulsefocus(dir.path(), &["device", "--device", "gpu"], Some("lots"));
    assert!(!out.status.success());
    assert_eq!(
        error_lines(&stderr(&out)),
        ["error: the emulated GPU: PULSEFOCUS_GPU_EMULATOR_MEMORY=lots: expected a positive number of bytes, optionally with KiB, MiB or GiB"]
    );
}

#[test]
fn training_out_of_gpu_memory_is_one_error_line_and_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let synth = pulsefocus(
        dir.path(),
        &[
            "synth",
            "--out",
            "dataset/synth",
            "--classes",
            "3",
            "--images",
            "4",
            "--size",
            "96",
            "--format",
            "voc",
        ],
        None,
    );
    assert!(synth.status.success(), "synth: {}", stderr(&synth));
    let config = common::tiny_config("max_iters: 2,\n    log_iter: 1,");
    std::fs::write(dir.path().join("tiny.ron"), config).unwrap();
    let out = pulsefocus(
        dir.path(),
        &["train", "-c", "tiny.ron", "--device", "gpu"],
        Some("1MiB"),
    );
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.starts_with("device: emulated GPU"), "{err}");
    let errors = error_lines(&err);
    assert_eq!(errors.len(), 1, "{err}");
    let line = errors[0];
    assert!(
        line.starts_with("error: out of GPU memory: need ")
            && line.contains(" MiB for a buffer of ")
            && line.ends_with(" MiB free"),
        "{line}"
    );
    assert_eq!(err.trim_end().lines().last(), Some(line), "{err}");
    // No step ran.
    assert!(!err.contains("iter 1/2"), "{err}");
}

#[test]
fn bench_out_of_gpu_memory_prints_no_figures() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
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
    ];
    let out = pulsefocus(dir.path(), &args, Some("2MiB"));
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let errors = error_lines(&err);
    assert_eq!(errors.len(), 1, "{err}");
    assert!(
        errors[0].starts_with("error: out of GPU memory: need "),
        "{err}"
    );
}
