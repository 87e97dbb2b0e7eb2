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

const SEGM_CASES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../core/tests/fixtures/coco_eval/segm_cases.json"
);

/// Writes mask case `index` (seed `index + 1`; even seeds carry boxes) as
/// gt.json and segm.json and returns it.
fn write_segm_case(dir: &Path, index: usize) -> serde_json::Value {
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(SEGM_CASES).unwrap()).unwrap();
    let case = cases[index].clone();
    std::fs::write(dir.join("gt.json"), case["gt"].to_string()).unwrap();
    write_segm_results(dir, &case);
    case
}

fn eval_segm(dir: &Path, json: bool) -> std::process::Output {
    let mut command = pulsefocus();
    command.arg("eval");
    if json {
        command.arg("--json");
    }
    command
        .arg("--gt")
        .arg(dir.join("gt.json"))
        .arg("--detections")
        .arg(dir.join("segm.json"))
        .output()
        .unwrap()
}

fn assert_stats_close(ours: &serde_json::Value, theirs: &serde_json::Value, what: &str) {
    let (ours, theirs) = (ours.as_array().unwrap(), theirs.as_array().unwrap());
    assert_eq!(ours.len(), 12, "{what}");
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
        assert!(
            (a - b).abs() <= 1e-4,
            "{what} stat {i}: {a} vs pycocotools {b}"
        );
    }
}

/// Masks alone give COCOeval(segm)'s numbers; masks with boxes give both
/// COCOeval(segm)'s and COCOeval(bbox)'s.
#[test]
fn segm_json_stats_equal_pycocotools_with_and_without_boxes() {
    for index in [0, 1] {
        let dir = tempfile::tempdir().unwrap();
        let case = write_segm_case(dir.path(), index);
        let out = eval_segm(dir.path(), true);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(printed["iou_type"], "segm");
        assert_stats_close(&printed["stats"], &case["stats"], "segm");
        assert_eq!(
            printed["detections"].as_u64(),
            Some(case["results"].as_array().unwrap().len() as u64)
        );
        match case.get("bbox_stats") {
            Some(bbox) => assert_stats_close(&printed["bbox_stats"], bbox, "bbox"),
            None => assert!(printed.get("bbox_stats").is_none(), "{printed}"),
        }
    }
}

#[test]
fn segm_table_prints_the_box_then_the_mask_table() {
    let dir = tempfile::tempdir().unwrap();
    let case = write_segm_case(dir.path(), 1);
    let out = eval_segm(dir.path(), false);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 26, "{text}");
    assert_eq!(lines[0], "IoU metric: bbox");
    assert_eq!(lines[13], "IoU metric: segm");
    let expected = |key: &str| case[key][0].as_f64().unwrap();
    let first = |value: f64| {
        format!(
            " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = {value:.3}"
        )
    };
    assert_eq!(lines[1], first(expected("bbox_stats")));
    assert_eq!(lines[14], first(expected("stats")));
}

#[test]
fn bad_segmentations_name_file_and_place() {
    let dir = tempfile::tempdir().unwrap();
    let case = write_segm_case(dir.path(), 0);
    let image_id = &case["gt"]["images"][0]["id"];
    // Counts that run past the declared 2x2 mask.
    std::fs::write(
        dir.path().join("segm.json"),
        format!(
            r#"[{{"image_id": {image_id}, "category_id": 1, "score": 0.5,
                  "segmentation": {{"size": [2, 2], "counts": "7"}}}}]"#
        ),
    )
    .unwrap();
    let out = eval_segm(dir.path(), false);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("segm.json ([0])") && err.contains("past the 2x2 mask"),
        "{err}"
    );

    // A ground-truth polygon of two points.
    let mut gt = case["gt"].clone();
    gt["annotations"][0]["segmentation"] = serde_json::json!([[0, 0, 5, 5]]);
    std::fs::write(dir.path().join("gt.json"), gt.to_string()).unwrap();
    write_segm_results(dir.path(), &case);
    let out = eval_segm(dir.path(), false);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("gt.json (annotations[0])") && err.contains("at least 6 numbers"),
        "{err}"
    );
}

fn write_segm_results(dir: &Path, case: &serde_json::Value) {
    std::fs::write(dir.join("segm.json"), case["results"].to_string()).unwrap();
}
