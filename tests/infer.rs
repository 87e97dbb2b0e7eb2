//! `pulsefocus infer` and `pulsefocus eval -c` end to end: a tiny synthetic
//! dataset, two training steps of the demo's small model, then the commands
//! on its weights, and their errors for bad input.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

mod common;
use common::pulsefocus;

fn demo_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/demo.ron")
}

fn success(out: &Output) {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn failure_saying(out: &Output, words: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "should fail; stderr: {stderr}");
    for word in words {
        assert!(stderr.contains(word), "'{word}' missing from: {stderr}");
    }
}

/// A working directory with `dataset/synth` (3 classes, 6 small images) and
/// `output/demo/model_final` after two training steps; made once per run.
fn trained() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        success(
            &pulsefocus()
                .current_dir(&dir)
                .args(["synth", "--out", "dataset/synth", "--classes", "3"])
                .args(["--images", "6", "--size", "96", "--format", "voc"])
                .output()
                .unwrap(),
        );
        success(
            &pulsefocus()
                .current_dir(&dir)
                .arg("train")
                .arg("-c")
                .arg(demo_config())
                .args([
                    "-o",
                    "max_iters=2",
                    "snapshot_iter=2",
                    "TrainReader.batch_size=2",
                ])
                .args(["--device", "cpu"])
                .output()
                .unwrap(),
        );
        dir
    })
}

fn run_in(dir: &Path, args: &[&str]) -> Output {
    pulsefocus()
        .current_dir(dir)
        .args(args)
        .arg("-c")
        .arg(demo_config())
        .output()
        .unwrap()
}

fn first_synth_image(dir: &Path) -> PathBuf {
    let mut images: Vec<PathBuf> = std::fs::read_dir(dir.join("dataset/synth/JPEGImages"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    images.sort();
    images.remove(0)
}

#[test]
fn infer_draws_the_picture_and_lists_detections_with_class_names() {
    let dir = trained();
    let image = first_synth_image(dir);
    let out = run_in(
        dir,
        &[
            "infer",
            "--infer_img",
            image.to_str().unwrap(),
            "--output_dir",
            "drawn",
            "--draw_threshold",
            "0",
        ],
    );
    success(&out);
    let name = image.file_name().unwrap();
    let drawn = pulsefocus_formats::image::decode_file(&dir.join("drawn").join(name)).unwrap();
    let original = pulsefocus_formats::image::decode_file(&image).unwrap();
    assert_eq!(
        (drawn.width, drawn.height),
        (original.width, original.height)
    );

    let json_path = dir
        .join("drawn")
        .join(Path::new(name).with_extension("json"));
    let listed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json_path).unwrap()).unwrap();
    assert_eq!(listed["image"], image.display().to_string());
    let labels = std::fs::read_to_string(dir.join("dataset/synth/label_list.txt")).unwrap();
    let names: Vec<&str> = labels.lines().collect();
    let detections = listed["detections"].as_array().unwrap();
    assert!(!detections.is_empty(), "threshold 0 keeps what NMS keeps");
    for d in detections {
        let class = d["class"].as_u64().unwrap() as usize;
        assert_eq!(d["class_name"], names[class]);
        assert!(d["score"].as_f64().unwrap() >= 0.0);
        let b: Vec<f64> = d["bbox"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(b.len(), 4);
        assert!(b[0] <= b[2] && b[1] <= b[3], "{b:?}");
    }
}

#[test]
fn infer_runs_on_a_directory_of_real_photos() {
    let dir = trained();
    // Photos from PaddleDetection's demo folder (tests/data/README.md).
    let photos = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/photos");
    let out = run_in(
        dir,
        &[
            "infer",
            "--infer_dir",
            photos.to_str().unwrap(),
            "--output_dir",
            "photos",
        ],
    );
    success(&out);
    let mut inputs = 0;
    for entry in std::fs::read_dir(&photos).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap();
        assert!(dir.join("photos").join(name).is_file(), "{name:?}");
        assert!(dir
            .join("photos")
            .join(Path::new(name).with_extension("json"))
            .is_file());
        inputs += 1;
    }
    assert!(inputs > 0);
}

#[test]
fn eval_with_a_config_prints_voc_map_per_class_and_writes_bbox_json() {
    let dir = trained();
    let out = run_in(
        dir,
        &[
            "eval",
            "--json",
            "--output_eval",
            "evaluated",
            "-o",
            "weights=output/demo/model_final",
        ],
    );
    success(&out);
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let map = printed["map"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&map), "{map}");
    assert_eq!(printed["per_class"].as_object().unwrap().len(), 3);
    assert!(printed["images"].as_u64().unwrap() > 0);
    let bbox: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("evaluated/bbox.json")).unwrap())
            .unwrap();
    for d in bbox.as_array().unwrap() {
        assert_eq!(d["bbox"].as_array().unwrap().len(), 4);
        assert!((1..=3).contains(&d["category_id"].as_i64().unwrap()));
    }
}

#[test]
fn a_bad_weights_path_is_named() {
    let dir = trained();
    let image = first_synth_image(dir);
    let out = run_in(
        dir,
        &[
            "infer",
            "--infer_img",
            image.to_str().unwrap(),
            "-o",
            "weights=output/nope/model",
        ],
    );
    failure_saying(&out, &["output/nope/model"]);
    let out = run_in(dir, &["eval", "-o", "weights=output/nope/model"]);
    failure_saying(&out, &["output/nope/model"]);
}

#[test]
fn a_missing_image_is_named() {
    let dir = trained();
    let out = run_in(dir, &["infer", "--infer_img", "no_such_picture.jpg"]);
    failure_saying(&out, &["no_such_picture.jpg"]);
}

#[test]
fn weights_of_another_class_count_name_the_parameter() {
    let dir = trained();
    let image = first_synth_image(dir);
    let out = run_in(
        dir,
        &[
            "infer",
            "--infer_img",
            image.to_str().unwrap(),
            "-o",
            "num_classes=4",
        ],
    );
    failure_saying(&out, &["model_final", "yolo_output", "shape"]);
}
