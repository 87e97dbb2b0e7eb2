//! End-to-end tests of `pulsefocus device` (the `--device auto|cpu|gpu` rule).
use std::process::Command;

fn pulsefocus(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pulsefocus"))
        .args(args)
        .output()
        .expect("run pulsefocus")
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
    match pulsefocus_gpu::device::probe() {
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
