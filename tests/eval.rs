//! `pulsefocus eval --gt --detections`: the binary on real files, compared with
//! pycocotools' stats stored beside the generated cases.

use std::path::Path;

mod common;
use common::pulsefocus;

const CASES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../core/tests/fixtures/coco_eval/cases.json"
);

/// Writes the first committed case as files and returns pycocotools' stats.
fn write_case(dir: &Path) -> Vec<f64> {
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(CASES).unwrap()).unwrap();
    let case = &cases[0];
    std::fs::write(dir.join("gt.json"), case["gt"].to_string()).unwrap();
    std::fs::write(dir.join("bbox.json"), case["results"].to_string()).unwrap();
    case["stats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

#[test]
fn json_stats_equal_pycocotools() {
    let dir = tempfile::tempdir().unwrap();
    let expected = write_case(dir.path());
    let out = pulsefocus()
        .args(["eval", "--json", "--gt"])
        .arg(dir.path().join("gt.json"))
        .arg("--detections")
        .arg(dir.path().join("bbox.json"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let stats = printed["stats"].as_array().unwrap();
    assert_eq!(stats.len(), 12);
    for (i, (ours, theirs)) in stats.iter().zip(&expected).enumerate() {
        let ours = ours.as_f64().unwrap();
        assert!(
            (ours - theirs).abs() <= 1e-4,
            "stat {i}: {ours} vs pycocotools {theirs}"
        );
    }
}

#[test]
fn table_has_pycocotools_layout() {
    let dir = tempfile::tempdir().unwrap();
    let expected = write_case(dir.path());
    let out = pulsefocus()
        .args(["eval", "--gt"])
        .arg(dir.path().join("gt.json"))
        .arg("--detections")
        .arg(dir.path().join("bbox.json"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 12);
    assert_eq!(
        lines[0],
        format!(
            " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = {:.3}",
            expected[0]
        )
    );
    assert!(lines[11]
        .starts_with(" Average Recall     (AR) @[ IoU=0.50:0.95 | area= large | maxDets=100 ]"));
}

#[test]
fn bad_detections_file_names_file_and_place() {
    let dir = tempfile::tempdir().unwrap();
    write_case(dir.path());
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"[{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}]"#,
    )
    .unwrap();
    let out = pulsefocus()
        .args(["eval", "--gt"])
        .arg(dir.path().join("gt.json"))
        .arg("--detections")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.json") && err.contains("[0]") && err.contains("score"),
        "{err}"
    );

    // A detection on an image the annotations do not have.
    std::fs::write(
        &bad,
        r#"[{"image_id": -5, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}]"#,
    )
    .unwrap();
    let out = pulsefocus()
        .args(["eval", "--gt"])
        .arg(dir.path().join("gt.json"))
        .arg("--detections")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("image id -5"), "{err}");

    let out = pulsefocus()
        .args(["eval", "--gt", "/no/such/gt.json", "--detections"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/gt.json"));
}
