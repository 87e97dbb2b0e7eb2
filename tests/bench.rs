//! End-to-end tests of `pulsefocus bench train-step`.

use std::path::PathBuf;

mod common;
use common::pulsefocus;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `bench train-step` on the CPU (`--device auto` would pick a GPU where
/// there is one, and add its memory to the JSON).
fn bench(args: &[&str]) -> std::process::Output {
    pulsefocus()
        .args(["bench", "train-step", "--device", "cpu"])
        .args(args)
        .output()
        .unwrap()
}

fn json_of(out: &std::process::Output) -> serde_json::Value {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn json_reports_speed_and_peak_memory() {
    let out = bench(&[
        "--model",
        "small",
        "--classes",
        "3",
        "--batch",
        "2",
        "--size",
        "64",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--json",
    ]);
    let v = json_of(&out);
    let object = v.as_object().unwrap();
    assert_eq!(object.len(), 3, "{v}");
    assert!(v["images_per_second"].as_f64().unwrap() > 0.0);
    // `Trainer::plan`: at least the parameters, their gradients and momenta.
    assert!(v["planned_bytes"].as_u64().unwrap() > 1 << 20);
    // At least the model's parameters (about 0.5 MB for the small model).
    assert!(v["peak_rss_bytes"].as_u64().unwrap() > 1 << 20);
}

#[test]
fn human_output_names_model_and_rate() {
    let out = bench(&[
        "--model", "small", "--batch", "1", "--size", "64", "--steps", "1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("small: 20 classes, batch 1 at 64x64"),
        "{text}"
    );
    assert!(text.contains("images/s"), "{text}");
    assert!(text.contains("peak RSS"), "{text}");
}

#[test]
fn config_file_gives_the_model() {
    let config = repo().join("configs/demo.ron");
    let out = bench(&[
        "-c",
        config.to_str().unwrap(),
        "-o",
        "num_classes=2",
        "--batch",
        "1",
        "--size",
        "64",
        "--steps",
        "1",
        "--warmup",
        "0",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("demo.ron: 2 classes"), "{text}");
}

#[test]
fn bad_arguments_are_clear_errors() {
    let cases: [(&[&str], &str); 4] = [
        (&["--size", "100"], "multiple of 32"),
        (
            &["--model", "resnet"],
            "built-in models: yolov3_mobilenet_v1, yolov3_darknet, small",
        ),
        (&["--batch", "0"], "at least 1"),
        (&["-o", "num_classes=3"], "needs a config file"),
    ];
    for (args, message) in cases {
        let out = bench(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
    let out = bench(&["-c", "/no/such/config.ron"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("config.ron"));
}

#[test]
fn size_rule_follows_the_architecture() {
    // Faster R-CNN C4's single stride-16 map takes any size.
    let demo = repo().join("configs/faster_rcnn_demo.ron");
    let out = bench(&[
        "-c",
        demo.to_str().unwrap(),
        "--batch",
        "1",
        "--size",
        "72",
        "--steps",
        "1",
        "--warmup",
        "0",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The FPN adds upsampled maps to the backbone's, as YOLOv3 does.
    let fpn = repo().join("configs/faster_rcnn_r50_fpn_1x.ron");
    let out = bench(&["-c", fpn.to_str().unwrap(), "--size", "100"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not a multiple of 32 (the FPN's"),
        "{stderr}"
    );
}
