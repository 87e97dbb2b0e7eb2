//! What COCO scoring reads and writes: the ground truth of a COCO annotations
//! file as pycocotools sees it (image ids, category ids, every annotation with
//! its crowd flag and area) and a results file (`bbox.json`: a list of
//! `{image_id, category_id, bbox: [x, y, w, h], score}`).
//!
//! Unlike the training reader this keeps crowd boxes and does not clip: the
//! metric must see the file exactly as pycocotools does.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct CocoGtAnnotation {
    pub id: i64,
    pub image_id: i64,
    pub category_id: i64,
    /// x, y, width, height.
    pub bbox: [f64; 4],
    /// The file's `area` (pycocotools' area ranges use it, not the box).
    pub area: f64,
    pub iscrowd: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CocoGroundTruth {
    pub image_ids: Vec<i64>,
    pub category_ids: Vec<i64>,
    pub annotations: Vec<CocoGtAnnotation>,
}

/// One detection of a results file.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CocoResult {
    pub image_id: i64,
    pub category_id: i64,
    /// x, y, width, height.
    pub bbox: [f64; 4],
    pub score: f64,
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| {
        Error::at(
            path,
            format!("line {} column {}", e.line(), e.column()),
            e.to_string(),
        )
    })
}

fn field<'a>(path: &Path, place: &str, entry: &'a Value, key: &str) -> Result<&'a Value> {
    entry
        .get(key)
        .ok_or_else(|| Error::at(path, place, format!("missing \"{key}\"")))
}

fn integer(path: &Path, place: &str, entry: &Value, key: &str) -> Result<i64> {
    let value = field(path, place, entry, key)?;
    // Some exporters write ids as 3.0; pycocotools accepts any number.
    match value.as_i64() {
        Some(v) => Ok(v),
        None => match value.as_f64() {
            Some(v) if v.fract() == 0.0 => Ok(v as i64),
            _ => Err(Error::at(
                path,
                place,
                format!("\"{key}\" must be an integer, found {value}"),
            )),
        },
    }
}

fn number(path: &Path, place: &str, entry: &Value, key: &str) -> Result<f64> {
    let value = field(path, place, entry, key)?;
    value.as_f64().ok_or_else(|| {
        Error::at(
            path,
            place,
            format!("\"{key}\" must be a number, found {value}"),
        )
    })
}

fn bbox(path: &Path, place: &str, entry: &Value) -> Result<[f64; 4]> {
    let value = field(path, place, entry, "bbox")?;
    let bad = || {
        Error::at(
            path,
            place,
            format!("\"bbox\" must be 4 numbers [x, y, w, h], found {value}"),
        )
    };
    let list = value.as_array().filter(|l| l.len() == 4).ok_or_else(bad)?;
    let mut out = [0.0; 4];
    for (o, v) in out.iter_mut().zip(list) {
        *o = v.as_f64().ok_or_else(bad)?;
    }
    Ok(out)
}

fn list<'a>(path: &Path, root: &'a Value, key: &str) -> Result<&'a [Value]> {
    match root.get(key) {
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(Error::at(path, key, "must be a list")),
        None => Err(Error::new(
            path,
            format!("missing \"{key}\": not a COCO annotations file"),
        )),
    }
}

/// Reads a COCO annotations file for scoring.
pub fn read_coco_ground_truth(path: &Path) -> Result<CocoGroundTruth> {
    let root = read_json(path)?;
    let mut image_ids = Vec::new();
    for (i, image) in list(path, &root, "images")?.iter().enumerate() {
        image_ids.push(integer(path, &format!("images[{i}]"), image, "id")?);
    }
    let mut category_ids = Vec::new();
    for (i, category) in list(path, &root, "categories")?.iter().enumerate() {
        category_ids.push(integer(path, &format!("categories[{i}]"), category, "id")?);
    }
    let mut annotations = Vec::new();
    for (i, ann) in list(path, &root, "annotations")?.iter().enumerate() {
        let place = format!("annotations[{i}]");
        let bbox = bbox(path, &place, ann)?;
        let area = match ann.get("area") {
            Some(_) => number(path, &place, ann, "area")?,
            None => bbox[2] * bbox[3],
        };
        let iscrowd = match ann.get("iscrowd") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(v) => v.as_f64().map(|n| n != 0.0).ok_or_else(|| {
                Error::at(
                    path,
                    &place,
                    format!("\"iscrowd\" must be 0 or 1, found {v}"),
                )
            })?,
        };
        annotations.push(CocoGtAnnotation {
            id: integer(path, &place, ann, "id")?,
            image_id: integer(path, &place, ann, "image_id")?,
            category_id: integer(path, &place, ann, "category_id")?,
            bbox,
            area,
            iscrowd,
        });
    }
    Ok(CocoGroundTruth {
        image_ids,
        category_ids,
        annotations,
    })
}

/// Reads a results file (a JSON list of detections).
pub fn read_coco_results(path: &Path) -> Result<Vec<CocoResult>> {
    let root = read_json(path)?;
    let items = root
        .as_array()
        .ok_or_else(|| Error::new(path, "a results file must be a JSON list of detections"))?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let place = format!("[{i}]");
            Ok(CocoResult {
                image_id: integer(path, &place, item, "image_id")?,
                category_id: integer(path, &place, item, "category_id")?,
                bbox: bbox(path, &place, item)?,
                score: number(path, &place, item, "score")?,
            })
        })
        .collect()
}

/// Writes a results file atomically.
pub fn write_coco_results(path: &Path, results: &[CocoResult]) -> Result<()> {
    crate::atomic::write_file(path, |out| {
        serde_json::to_writer(&mut *out, results).map_err(|e| Error::new(path, e.to_string()))?;
        out.write_all(b"\n").map_err(|e| Error::io(path, e))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ground_truth_and_results() {
        let dir = tempfile::tempdir().unwrap();
        let gt = dir.path().join("gt.json");
        std::fs::write(
            &gt,
            r#"{"images": [{"id": 7, "file_name": "a.jpg"}], "categories": [{"id": 3, "name": "cat"}],
               "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [1, 2, 3, 4], "area": 10.5, "iscrowd": 1},
                               {"id": 2, "image_id": 7, "category_id": 3, "bbox": [0, 0, 2, 2]}]}"#,
        )
        .unwrap();
        let parsed = read_coco_ground_truth(&gt).unwrap();
        assert_eq!(parsed.image_ids, vec![7]);
        assert_eq!(parsed.category_ids, vec![3]);
        assert_eq!(parsed.annotations[0].area, 10.5);
        assert!(parsed.annotations[0].iscrowd);
        assert_eq!(parsed.annotations[1].area, 4.0);
        assert!(!parsed.annotations[1].iscrowd);

        let results = vec![CocoResult {
            image_id: 7,
            category_id: 3,
            bbox: [1.0, 2.0, 3.5, 4.0],
            score: 0.25,
        }];
        let path = dir.path().join("bbox.json");
        write_coco_results(&path, &results).unwrap();
        assert_eq!(read_coco_results(&path).unwrap(), results);
    }

    #[test]
    fn bad_input_names_file_and_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bbox.json");
        std::fs::write(
            &path,
            r#"[{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3], "score": 0.5}]"#,
        )
        .unwrap();
        let err = read_coco_results(&path).unwrap_err().to_string();
        assert!(
            err.contains("bbox.json") && err.contains("[0]") && err.contains("4 numbers"),
            "{err}"
        );

        std::fs::write(&path, "[{\"image_id\": 1,\n oops}]").unwrap();
        let err = read_coco_results(&path).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");

        std::fs::write(&path, r#"{"images": [], "categories": []}"#).unwrap();
        let err = read_coco_ground_truth(&path).unwrap_err().to_string();
        assert!(err.contains("missing \"annotations\""), "{err}");
    }
}
