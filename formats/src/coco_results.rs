//! What COCO scoring reads and writes: the ground truth of a COCO annotations
//! file as pycocotools sees it (image ids, category ids, every annotation with
//! its crowd flag and area, and for mask scoring its `segmentation` as an RLE)
//! and a results file (`bbox.json`: a list of `{image_id, category_id,
//! bbox: [x, y, w, h], score}`; `segm.json`: the same with `segmentation:
//! {size: [h, w], counts: "..."}` in place of, or beside, `bbox`).
//!
//! Unlike the training reader this keeps crowd boxes and does not clip: the
//! metric must see the file exactly as pycocotools does.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::rle::{Rle, RleError};

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
    /// The `segmentation` as pycocotools' `annToRLE` makes it; read only by
    /// `read_coco_ground_truth_with_masks`, and only for annotations whose
    /// image and category the file lists (pycocotools scores no others).
    pub mask: Option<Rle>,
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

/// One detection of a mask results file (`segm.json`).
#[derive(Debug, Clone, PartialEq)]
pub struct CocoMaskResult {
    pub image_id: i64,
    pub category_id: i64,
    pub segmentation: Rle,
    /// x, y, width, height, where the file has it (Mask R-CNN writers often
    /// put the box beside the mask). pycocotools then takes the detection's
    /// area for the area ranges from this box, not from the mask.
    pub bbox: Option<[f64; 4]>,
    pub score: f64,
}

/// A results file: boxes, or masks when its first detection has a
/// `segmentation` (pycocotools' `loadRes` also looks at the first one).
#[derive(Debug, Clone, PartialEq)]
pub enum CocoDetections {
    Boxes(Vec<CocoResult>),
    Masks(Vec<CocoMaskResult>),
}

/// An annotation's `segmentation` as written: one object's polygons
/// `[[x1, y1, x2, y2, ...], ...]`, or an RLE `{size: [h, w], counts}` with
/// counts as a list (uncompressed) or a string (compressed).
#[derive(Debug, Clone, PartialEq)]
pub enum Segmentation {
    Polygons(Vec<Vec<f64>>),
    Rle(Rle),
}

impl Segmentation {
    /// pycocotools' `annToRLE`: polygons rasterised at the image's size and
    /// merged into one mask; an RLE keeps its own size.
    pub fn to_rle(&self, height: u32, width: u32) -> std::result::Result<Rle, RleError> {
        match self {
            Segmentation::Polygons(polygons) => {
                let parts = polygons
                    .iter()
                    .map(|p| Rle::from_polygon(p, height, width))
                    .collect::<std::result::Result<Vec<Rle>, RleError>>()?;
                if parts.is_empty() {
                    return Err(RleError("no polygons".into()));
                }
                Rle::merge(&parts)
            }
            Segmentation::Rle(rle) => Ok(rle.clone()),
        }
    }
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

/// A size or a count: a non-negative integer that fits in `u32` (`3.0` too).
fn as_u32(value: &Value) -> Option<u32> {
    if let Some(n) = value.as_u64() {
        return u32::try_from(n).ok();
    }
    let v = value.as_f64()?;
    (v.fract() == 0.0 && (0.0..=u32::MAX as f64).contains(&v)).then_some(v as u32)
}

/// `{size: [h, w], counts}` with counts compressed (a string) or not (a list).
fn rle(path: &Path, place: &str, value: &Value) -> Result<Rle> {
    let bad = |what: &str| Error::at(path, place, format!("\"segmentation\" {what}"));
    let size = value
        .get("size")
        .and_then(Value::as_array)
        .filter(|s| s.len() == 2)
        .and_then(|s| Some([as_u32(&s[0])?, as_u32(&s[1])?]))
        .ok_or_else(|| bad("needs \"size\": [height, width]"))?;
    let [height, width] = size;
    let rle = match value.get("counts") {
        Some(Value::String(s)) => Rle::from_compressed(s, height, width),
        Some(Value::Array(list)) => {
            let counts = list
                .iter()
                .map(as_u32)
                .collect::<Option<Vec<u32>>>()
                .ok_or_else(|| bad("\"counts\" must be non-negative integers"))?;
            Rle::new(height, width, counts)
        }
        _ => return Err(bad("needs \"counts\": a string or a list of integers")),
    };
    rle.map_err(|e| bad(&format!("is not a valid RLE: {e}")))
}

/// An annotation's or a detection's `segmentation`.
pub fn segmentation(path: &Path, place: &str, value: &Value) -> Result<Segmentation> {
    let bad = |what: String| Error::at(path, place, format!("\"segmentation\" {what}"));
    match value {
        Value::Array(polygons) if polygons.is_empty() => Err(bad("is an empty list".into())),
        Value::Array(polygons) => polygons
            .iter()
            .enumerate()
            .map(|(j, p)| {
                p.as_array()
                    .and_then(|l| l.iter().map(Value::as_f64).collect::<Option<Vec<f64>>>())
                    .ok_or_else(|| bad(format!("[{j}] must be a polygon: a list of numbers")))
            })
            .collect::<Result<Vec<_>>>()
            .map(Segmentation::Polygons),
        Value::Object(_) => rle(path, place, value).map(Segmentation::Rle),
        other => Err(bad(format!(
            "must be polygons or an RLE {{size, counts}}, found {other}"
        ))),
    }
}

/// Reads a COCO annotations file for box scoring (segmentations are not read).
pub fn read_coco_ground_truth(path: &Path) -> Result<CocoGroundTruth> {
    read_ground_truth(path, false)
}

/// Reads a COCO annotations file for mask scoring: as `read_coco_ground_truth`
/// plus every scored annotation's `segmentation` as an RLE (polygons need
/// their image's `height` and `width`).
pub fn read_coco_ground_truth_with_masks(path: &Path) -> Result<CocoGroundTruth> {
    read_ground_truth(path, true)
}

fn read_ground_truth(path: &Path, with_masks: bool) -> Result<CocoGroundTruth> {
    let root = read_json(path)?;
    let mut image_ids = Vec::new();
    // Image id -> [height, width], where both are usable sizes.
    let mut image_sizes: HashMap<i64, Option<[u32; 2]>> = HashMap::new();
    for (i, image) in list(path, &root, "images")?.iter().enumerate() {
        let id = integer(path, &format!("images[{i}]"), image, "id")?;
        image_ids.push(id);
        let size = |key: &str| image.get(key).and_then(as_u32);
        image_sizes.insert(id, size("height").zip(size("width")).map(|(h, w)| [h, w]));
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
        let image_id = integer(path, &place, ann, "image_id")?;
        let category_id = integer(path, &place, ann, "category_id")?;
        let scored = image_sizes.contains_key(&image_id) && category_ids.contains(&category_id);
        let mask = if with_masks && scored {
            let size = image_sizes[&image_id];
            Some(
                match segmentation(path, &place, field(path, &place, ann, "segmentation")?)? {
                    Segmentation::Rle(rle) => rle,
                    polygons => {
                        let [h, w] = size.ok_or_else(|| {
                            Error::at(
                                path,
                                &place,
                                format!(
                                    "polygons need the image's size, but image id {image_id} \
                                     has no integer \"height\" and \"width\""
                                ),
                            )
                        })?;
                        polygons.to_rle(h, w).map_err(|e| {
                            Error::at(path, &place, format!("\"segmentation\": {e}"))
                        })?
                    }
                },
            )
        } else {
            None
        };
        annotations.push(CocoGtAnnotation {
            id: integer(path, &place, ann, "id")?,
            image_id,
            category_id,
            bbox,
            area,
            iscrowd,
            mask,
        });
    }
    Ok(CocoGroundTruth {
        image_ids,
        category_ids,
        annotations,
    })
}

fn results_list<'a>(path: &Path, root: &'a Value) -> Result<&'a [Value]> {
    root.as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| Error::new(path, "a results file must be a JSON list of detections"))
}

fn box_results(path: &Path, items: &[Value]) -> Result<Vec<CocoResult>> {
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

/// Reads a box results file (a JSON list of detections).
pub fn read_coco_results(path: &Path) -> Result<Vec<CocoResult>> {
    let root = read_json(path)?;
    box_results(path, results_list(path, &root)?)
}

/// Reads a results file of boxes or of masks (see `CocoDetections`).
/// Detection masks must be RLEs, as pycocotools' `loadRes` requires; a
/// `bbox` beside them is optional (`[]` counts as absent, as in `loadRes`).
pub fn read_coco_detections(path: &Path) -> Result<CocoDetections> {
    let root = read_json(path)?;
    let items = results_list(path, &root)?;
    let masks = items
        .first()
        .is_some_and(|first| first.get("segmentation").is_some());
    if !masks {
        return box_results(path, items).map(CocoDetections::Boxes);
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let place = format!("[{i}]");
            let segmentation = match segmentation(
                path,
                &place,
                field(path, &place, item, "segmentation")?,
            )? {
                Segmentation::Rle(rle) => rle,
                Segmentation::Polygons(_) => return Err(Error::at(
                    path,
                    &place,
                    "a detection's \"segmentation\" must be an RLE {size, counts}, not polygons",
                )),
            };
            let bbox = match item.get("bbox") {
                None => None,
                Some(Value::Array(list)) if list.is_empty() => None,
                Some(_) => Some(bbox(path, &place, item)?),
            };
            Ok(CocoMaskResult {
                image_id: integer(path, &place, item, "image_id")?,
                category_id: integer(path, &place, item, "category_id")?,
                segmentation,
                bbox,
                score: number(path, &place, item, "score")?,
            })
        })
        .collect::<Result<Vec<_>>>()
        .map(CocoDetections::Masks)
}

/// Writes a box results file atomically.
pub fn write_coco_results(path: &Path, results: &[CocoResult]) -> Result<()> {
    write_json_list(path, results)
}

/// A mask as results files write it: `{size: [h, w], counts: "..."}`,
/// the counts compressed as pycocotools' `encode` gives them.
pub fn segmentation_json(mask: &Rle) -> Value {
    serde_json::json!({
        "size": [mask.height(), mask.width()],
        "counts": mask.to_compressed(),
    })
}

/// Writes a mask results file atomically, masks as compressed RLEs.
pub fn write_coco_mask_results(path: &Path, results: &[CocoMaskResult]) -> Result<()> {
    let items: Vec<Value> = results
        .iter()
        .map(|r| {
            let mut item = serde_json::json!({
                "image_id": r.image_id,
                "category_id": r.category_id,
                "segmentation": segmentation_json(&r.segmentation),
                "score": r.score,
            });
            if let Some(bbox) = r.bbox {
                item["bbox"] = serde_json::json!(bbox);
            }
            item
        })
        .collect();
    write_json_list(path, &items)
}

fn write_json_list<T: Serialize>(path: &Path, items: &[T]) -> Result<()> {
    crate::atomic::write_file(path, |out| {
        serde_json::to_writer(&mut *out, items).map_err(|e| Error::new(path, e.to_string()))?;
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
    fn reads_gt_segmentations_in_all_three_forms_as_ann_to_rle() {
        let dir = tempfile::tempdir().unwrap();
        let gt = dir.path().join("gt.json");
        // A 4x5 image: a polygon object of two parts, an uncompressed RLE
        // (left two columns), the same as a compressed string, and annotations
        // pycocotools never scores (unknown image or category) with junk.
        std::fs::write(
            &gt,
            r#"{"images": [{"id": 1, "height": 4, "width": 5.0}], "categories": [{"id": 2}],
               "annotations": [
                 {"id": 1, "image_id": 1, "category_id": 2, "bbox": [0, 0, 2, 2], "area": 4,
                  "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2], [3, 3, 5, 3, 5, 4, 3, 4]]},
                 {"id": 2, "image_id": 1, "category_id": 2, "bbox": [0, 0, 2, 4], "area": 8, "iscrowd": 1,
                  "segmentation": {"size": [4, 5], "counts": [0, 8, 12]}},
                 {"id": 3, "image_id": 1, "category_id": 2, "bbox": [0, 0, 2, 4], "area": 8,
                  "segmentation": {"size": [4, 5], "counts": "08<"}},
                 {"id": 4, "image_id": 9, "category_id": 2, "bbox": [0, 0, 1, 1], "segmentation": 7},
                 {"id": 5, "image_id": 1, "category_id": 8, "bbox": [0, 0, 1, 1], "segmentation": []}]}"#,
        )
        .unwrap();
        // Box scoring does not look at segmentations at all.
        let boxes = read_coco_ground_truth(&gt).unwrap();
        assert!(boxes.annotations.iter().all(|a| a.mask.is_none()));

        let parsed = read_coco_ground_truth_with_masks(&gt).unwrap();
        let masks: Vec<Option<&Rle>> = parsed.annotations.iter().map(|a| a.mask.as_ref()).collect();
        let square = Rle::from_polygon(&[0.0, 0.0, 2.0, 0.0, 2.0, 2.0, 0.0, 2.0], 4, 5).unwrap();
        let strip = Rle::from_polygon(&[3.0, 3.0, 5.0, 3.0, 5.0, 4.0, 3.0, 4.0], 4, 5).unwrap();
        assert_eq!(masks[0], Some(&Rle::merge(&[square, strip]).unwrap()));
        let left = Rle::new(4, 5, vec![0, 8, 12]).unwrap();
        assert_eq!(masks[1], Some(&left));
        assert_eq!(masks[2], Some(&left));
        assert_eq!(left.to_compressed(), "08<");
        assert_eq!(masks[3..], [None, None]);
    }

    #[test]
    fn mask_results_round_trip_and_box_files_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segm.json");
        let mask = Rle::encode(&[0, 1, 1, 0, 1, 1], 2, 3).unwrap();
        let results = vec![
            CocoMaskResult {
                image_id: 7,
                category_id: 3,
                segmentation: mask.clone(),
                bbox: None,
                score: 0.5,
            },
            CocoMaskResult {
                image_id: 8,
                category_id: 1,
                segmentation: mask,
                bbox: Some([1.0, 0.0, 2.0, 2.0]),
                score: 0.25,
            },
        ];
        write_coco_mask_results(&path, &results).unwrap();
        assert_eq!(
            read_coco_detections(&path).unwrap(),
            CocoDetections::Masks(results)
        );
        let boxes = vec![CocoResult {
            image_id: 7,
            category_id: 3,
            bbox: [1.0, 2.0, 3.0, 4.0],
            score: 0.5,
        }];
        write_coco_results(&path, &boxes).unwrap();
        assert_eq!(
            read_coco_detections(&path).unwrap(),
            CocoDetections::Boxes(boxes)
        );
    }

    #[test]
    fn bad_segmentations_name_file_and_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segm.json");
        let error = |json: &str| {
            std::fs::write(&path, json).unwrap();
            read_coco_detections(&path).unwrap_err().to_string()
        };
        let good = r#"{"image_id": 1, "category_id": 1, "score": 0.5, "segmentation": {"size": [2, 2], "counts": "04"}}"#;
        let err = error(&format!(
            r#"[{good}, {{"image_id": 1, "category_id": 1, "score": 0.5, "segmentation": {{"size": [2, 2], "counts": "7"}}}}]"#
        ));
        assert!(
            err.contains("segm.json ([1])") && err.contains("past the 2x2 mask"),
            "{err}"
        );
        let err = error(&format!(
            r#"[{good}, {{"image_id": 1, "category_id": 1, "score": 0.5, "segmentation": [[0, 0, 1, 0, 1, 1]]}}]"#
        ));
        assert!(err.contains("[1]") && err.contains("not polygons"), "{err}");
        let err = error(&format!(
            r#"[{good}, {{"image_id": 1, "category_id": 1, "score": 0.5}}]"#
        ));
        assert!(err.contains("missing \"segmentation\""), "{err}");
        let err = error(
            r#"[{"image_id": 1, "category_id": 1, "score": 0.5, "segmentation": {"size": [2], "counts": "04"}}]"#,
        );
        assert!(err.contains("[height, width]"), "{err}");

        let gt = dir.path().join("gt.json");
        let gt_error = |annotation: &str, image: &str| {
            std::fs::write(
                &gt,
                format!(
                    r#"{{"images": [{{"id": 1{image}}}], "categories": [{{"id": 1}}],
                        "annotations": [{{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]{annotation}}}]}}"#
                ),
            )
            .unwrap();
            read_coco_ground_truth_with_masks(&gt)
                .unwrap_err()
                .to_string()
        };
        let polygon = r#", "segmentation": [[0, 0, 1, 0, 1, 1]]"#;
        let err = gt_error(polygon, "");
        assert!(
            err.contains("annotations[0]") && err.contains("\"height\""),
            "{err}"
        );
        let err = gt_error(
            r#", "segmentation": [[0, 0, 1, 0]]"#,
            r#", "height": 2, "width": 2"#,
        );
        assert!(err.contains("at least 6 numbers"), "{err}");
        let err = gt_error(r#", "segmentation": []"#, r#", "height": 2, "width": 2"#);
        assert!(err.contains("empty list"), "{err}");
        let err = gt_error("", r#", "height": 2, "width": 2"#);
        assert!(err.contains("missing \"segmentation\""), "{err}");
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
