//! `pulsefocus demo` end to end, shortened (a few iterations on a tiny
//! dataset): the JSON summary and the files a user is pointed to. Whether the
//! full demo reaches its mAP target is measured in docs/demo.md, not here.

use std::path::Path;
use std::process::Command;

fn run_demo(out: &Path, extra: &[&str]) -> (String, serde_json::Value) {
    let output = Command::new(env!("CARGO_BIN_EXE_pulsefocus"))
        .args(["demo", "--json", "--iters", "2", "--images", "10", "--out"])
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let last = stdout.lines().last().expect("demo printed nothing");
    let summary = serde_json::from_str(last).expect("the last line is the JSON summary");
    (stdout, summary)
}

#[test]
fn short_demo_fine_tunes_the_bundled_checkpoint_and_writes_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let (stdout, summary) = run_demo(&out, &[]);

    // The load report: the backbone and most of the head load, the class-count
    // dependent outputs do not.
    assert!(stdout.contains("loaded "), "{stdout}");
    assert!(stdout.contains("by 'yolo_output'"), "{stdout}");

    for key in ["map_before", "map_after", "seconds"] {
        let v = summary[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key}: {summary}"));
        assert!(v.is_finite() && v >= 0.0, "{key} = {v}");
    }
    assert!(summary["map_before"].as_f64().unwrap() <= 1.0);
    assert!(summary["map_after"].as_f64().unwrap() <= 1.0);
    assert_eq!(summary["iterations"], 2);
    let output_dir = Path::new(summary["output_dir"].as_str().unwrap());
    assert_eq!(output_dir, out.canonicalize().unwrap());

    for file in [
        "yolov3_small_synth_pretrained.tar",
        "configs/demo.ron",
        "dataset/synth/trainval.txt",
        "dataset/synth/test.txt",
        "output/demo/model_final.pdparams",
        "output/demo/model_final.pdopt",
        "output/demo/loss.svg",
        "output/demo/map.svg",
        "output/demo/best_model.pdparams",
    ] {
        assert!(output_dir.join(file).is_file(), "{file} missing");
    }
    for key in ["weights", "loss_curve", "map_curve", "best_model"] {
        assert!(Path::new(summary[key].as_str().unwrap()).is_file(), "{key}");
    }
    let samples = summary["samples"].as_array().unwrap();
    assert!(!samples.is_empty());
    for sample in samples {
        let path = Path::new(sample.as_str().unwrap());
        assert!(path.starts_with(output_dir.join("samples")), "{path:?}");
        let bytes = std::fs::read(path).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "{path:?} is not a PNG");
    }

    // The summary names the curves and the best model, and the `infer`
    // command it suggests works as printed.
    assert!(stdout.contains("mAP curve: "), "{stdout}");
    assert!(stdout.contains("best model (mAP "), "{stdout}");
    let suggested = stdout
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix(&format!("cd {} && pulsefocus ", output_dir.display()))
        })
        .unwrap_or_else(|| panic!("no infer command in:\n{stdout}"));
    let infer = Command::new(env!("CARGO_BIN_EXE_pulsefocus"))
        .args(suggested.split_whitespace())
        .current_dir(output_dir)
        .output()
        .unwrap();
    assert!(
        infer.status.success(),
        "{suggested}:\n{}",
        String::from_utf8_lossy(&infer.stderr)
    );
    assert!(output_dir.join("infer").is_dir());
}

#[test]
fn demo_from_random_weights_loads_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_, summary) = run_demo(&dir.path().join("demo"), &["--no-pretrained"]);
    assert!(summary["pretrained"].is_null(), "{summary}");
    assert_eq!(summary["iterations"], 2);
}
