//! COCO instances JSON -> `Dataset`, the way PaddleDetection 2.7's
//! `COCODataSet` builds its records (see `docs/datasets.md` for the few places
//! where pulsefocus deliberately differs).
//!
//! The JSON is parsed with typed structs: unknown keys (licenses, info, and
//! segmentations unless `with_polygons` asks for them) are skipped by the
//! parser without being built, which is most of why this is much faster than
//! `pycocotools.coco.COCO`.
//!
//! With `with_polygons` every kept box also keeps its `segmentation` polygons
//! (`Record::polygons`), as PaddleDetection 0.x's `COCODataSet` keeps
//! `gt_poly` for Mask R-CNN. Its reader then feeds them to
//! `generate_mask_labels` as point lists (`reader.py` `_segm`), which works
//! for polygons only: a non-crowd box whose segmentation is missing, empty
//! or an RLE makes PaddleDetection fail with a Python error mid-training, so
//! here it is an error at load time naming the file and annotation. Crowd
//! boxes (`load_crowd`; PaddleDetection 0.x never loads them) get no
//! polygons: `generate_mask_labels` gives crowds no mask, and their
//! segmentation, usually an RLE, is not read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::Value;

use crate::coco_results::{segmentation, Segmentation};
use crate::dataset::{Dataset, GroundTruth, Problem, Record};
use crate::error::{Error, Result};

/// The fields of a PaddleDetection `COCODataSet` config entry.
#[derive(Debug, Clone, PartialEq)]
pub struct CocoDataSet {
    pub dataset_dir: PathBuf,
    /// Image folder, relative to `dataset_dir`.
    pub image_dir: PathBuf,
    /// Instances JSON, relative to `dataset_dir`.
    pub anno_path: PathBuf,
    pub with_background: bool,
    /// Keep images that end up with no boxes (otherwise they are skipped with a problem).
    pub allow_empty: bool,
    /// Keep `iscrowd: 1` annotations as (crowd-flagged) boxes.
    pub load_crowd: bool,
    /// Keep each box's `segmentation` polygons in `Record::polygons` (the
    /// Mask R-CNN readers); off, segmentations are not even parsed.
    pub with_polygons: bool,
}

/// The parts of an instances JSON the reader uses. `S` is what an
/// annotation's `segmentation` becomes: skipped unread (`IgnoredAny`) or
/// the JSON value (`Option<Value>`, for `with_polygons`).
#[derive(Debug, Deserialize)]
#[serde(bound = "S: Deserialize<'de> + Default")]
pub struct CocoFile<S = IgnoredAny> {
    pub images: Vec<CocoImage>,
    #[serde(default)]
    pub categories: Vec<CocoCategory>,
    /// Absent in an image-list file (inference input).
    pub annotations: Option<Vec<CocoAnnotation<S>>>,
}

#[derive(Debug, Deserialize)]
pub struct CocoImage {
    pub id: i64,
    pub file_name: String,
    /// Numbers, integer or not: x2coco's VOC mode writes `375.0`.
    pub width: f64,
    pub height: f64,
}

#[derive(Debug, Deserialize)]
pub struct CocoCategory {
    pub id: i64,
    pub name: String,
}

#[derive(Debug, Deserialize)]
pub struct CocoAnnotation<S = IgnoredAny> {
    pub id: i64,
    pub image_id: i64,
    pub category_id: i64,
    /// `[x, y, w, h]`; some tools write `[]` or leave it out for mask-only annotations.
    #[serde(default)]
    pub bbox: Option<Bbox>,
    /// Missing area is taken as `w * h`.
    #[serde(default)]
    pub area: Option<f64>,
    #[serde(default)]
    pub iscrowd: Flag,
    #[serde(default)]
    pub ignore: Flag,
    #[serde(default)]
    pub segmentation: S,
}

/// An annotation's `segmentation` as parsed: the JSON value, if it was read
/// and is there.
pub trait SegmentationField {
    fn json(&self) -> Option<&Value>;
}

impl SegmentationField for IgnoredAny {
    fn json(&self) -> Option<&Value> {
        None
    }
}

impl SegmentationField for Option<Value> {
    fn json(&self) -> Option<&Value> {
        self.as_ref()
    }
}

/// A 0/1 flag that tools write as an integer, a float or a boolean.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flag(pub bool);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct FlagVisitor;
        impl serde::de::Visitor<'_> for FlagVisitor {
            type Value = Flag;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("0, 1 or a boolean")
            }
            fn visit_bool<E>(self, v: bool) -> std::result::Result<Flag, E> {
                Ok(Flag(v))
            }
            fn visit_i64<E>(self, v: i64) -> std::result::Result<Flag, E> {
                Ok(Flag(v != 0))
            }
            fn visit_u64<E>(self, v: u64) -> std::result::Result<Flag, E> {
                Ok(Flag(v != 0))
            }
            fn visit_f64<E>(self, v: f64) -> std::result::Result<Flag, E> {
                Ok(Flag(v != 0.0))
            }
        }
        d.deserialize_any(FlagVisitor)
    }
}

/// A bbox list read without allocating: the first four numbers and how many
/// there were (the reader reports any count but 4).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bbox {
    pub values: [f64; 4],
    pub len: usize,
}

impl Bbox {
    /// The numbers as written, when there are at most four.
    pub fn as_slice(&self) -> &[f64] {
        &self.values[..self.len.min(4)]
    }
}

impl<'de> Deserialize<'de> for Bbox {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct BboxVisitor;
        impl<'de> serde::de::Visitor<'de> for BboxVisitor {
            type Value = Bbox;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of numbers")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Bbox, A::Error> {
                let mut bbox = Bbox {
                    values: [0.0; 4],
                    len: 0,
                };
                while let Some(v) = seq.next_element::<f64>()? {
                    if bbox.len < 4 {
                        bbox.values[bbox.len] = v;
                    }
                    bbox.len += 1;
                }
                Ok(bbox)
            }
        }
        d.deserialize_seq(BboxVisitor)
    }
}

/// Parses an instances JSON; syntax and type errors name the line and column.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<CocoFile> {
    parse_as(path, bytes)
}

/// `parse` keeping every annotation's `segmentation` as a JSON value.
pub fn parse_with_segmentations(path: &Path, bytes: &[u8]) -> Result<CocoFile<Option<Value>>> {
    parse_as(path, bytes)
}

fn parse_as<S: serde::de::DeserializeOwned + Default>(
    path: &Path,
    bytes: &[u8],
) -> Result<CocoFile<S>> {
    serde_json::from_slice(bytes).map_err(|e| {
        Error::at(
            path,
            format!("line {}, column {}", e.line(), e.column()),
            format!("invalid COCO instances JSON: {e}"),
        )
    })
}

/// Paddle stores `round(float(v), 3)`: Python rounds the exact binary value to
/// the nearest 3-decimal number, ties to even. Away from a tie the nearest
/// integer `k` of `v * 1000` is unambiguous and `k / 1000` is the same double
/// Python produces; the rare near-ties go through exact decimal formatting
/// (Rust's fixed precision also rounds the exact value, ties to even).
fn round3(v: f64) -> f64 {
    let scaled = v * 1000.0;
    let nearest = scaled.round();
    if (scaled - nearest).abs() < 0.4999 && scaled.abs() < 1e12 {
        nearest / 1000.0
    } else {
        format!("{v:.3}").parse().unwrap_or(v)
    }
}

/// The names in `dir`, or `None` if it cannot be listed. One listing costs a
/// few system calls where checking each of thousands of images costs one each.
fn list_dir(dir: &Path) -> Option<std::collections::HashSet<std::ffi::OsString>> {
    std::fs::read_dir(dir)
        .ok()?
        .map(|entry| entry.ok().map(|e| e.file_name()))
        .collect()
}

impl CocoDataSet {
    pub fn anno_file(&self) -> PathBuf {
        self.dataset_dir.join(&self.anno_path)
    }

    pub fn load(&self) -> Result<Dataset> {
        let path = self.anno_file();
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        if self.with_polygons {
            self.build(&path, &parse_with_segmentations(&path, &bytes)?)
        } else {
            self.build(&path, &parse(&path, &bytes)?)
        }
    }

    /// Turns a parsed file into records, checking images on disk. Fails only
    /// on a segmentation `with_polygons` cannot use.
    pub fn build<S: SegmentationField>(
        &self,
        anno_file: &Path,
        coco: &CocoFile<S>,
    ) -> Result<Dataset> {
        let file_name = anno_file.display().to_string();
        let mut problems = Vec::new();
        let problem = |place: String, what: String| Problem {
            file: file_name.clone(),
            place,
            what,
        };

        // Category order is JSON order; a repeated id keeps its first position
        // (a Python dict keeps the first insertion's position).
        let mut class_of_category = HashMap::new();
        let mut class_names = Vec::new();
        for cat in &coco.categories {
            if class_of_category.contains_key(&cat.id) {
                problems.push(problem(
                    format!("category id {}", cat.id),
                    "duplicate category id; first one kept".into(),
                ));
                continue;
            }
            class_of_category.insert(cat.id, class_names.len() as u32);
            class_names.push(cat.name.clone());
        }
        let background = self.with_background as u32;

        // pycocotools keys images by id (a repeated id keeps the last entry);
        // Paddle 2.7 visits them in sorted id order.
        let mut image_index: HashMap<i64, usize> = HashMap::with_capacity(coco.images.len());
        for (i, img) in coco.images.iter().enumerate() {
            if image_index.insert(img.id, i).is_some() {
                problems.push(problem(
                    format!("image id {}", img.id),
                    "duplicate image id; the last entry is used".into(),
                ));
            }
        }
        let mut order: Vec<(i64, usize)> = image_index.iter().map(|(&id, &i)| (id, i)).collect();
        order.sort_unstable();

        let mut annotations_of: HashMap<i64, Vec<&CocoAnnotation<S>>> = HashMap::new();
        let annotations = coco.annotations.as_deref().unwrap_or(&[]);
        for ann in annotations {
            if !image_index.contains_key(&ann.image_id) {
                problems.push(problem(
                    format!("annotation id {}", ann.id),
                    format!("image_id {} is not in `images`; box ignored", ann.image_id),
                ));
                continue;
            }
            annotations_of.entry(ann.image_id).or_default().push(ann);
        }

        let image_root = self.dataset_dir.join(&self.image_dir);
        let listed = list_dir(&image_root);
        let exists = |name: &str, path: &Path| match &listed {
            Some(names) if !name.contains('/') => names.contains(std::ffi::OsStr::new(name)),
            _ => path.exists(),
        };
        let mut records = Vec::with_capacity(order.len());
        for (id, i) in order {
            let img = &coco.images[i];
            let image_path = image_root.join(&img.file_name);
            let valid_size = |v: f64| v > 0.0 && v.is_finite();
            if !(valid_size(img.width) && valid_size(img.height)) {
                problems.push(problem(
                    format!("image id {id}"),
                    format!(
                        "invalid width {} or height {}; image skipped",
                        img.width, img.height
                    ),
                ));
                continue;
            }
            if !exists(&img.file_name, &image_path) {
                problems.push(Problem {
                    file: image_path.display().to_string(),
                    place: format!("image id {id}"),
                    what: "image file not found; image skipped".into(),
                });
                continue;
            }
            let (w, h) = (img.width, img.height);
            let mut objects = Vec::new();
            let mut polygons = Vec::new();
            for ann in annotations_of.get(&id).map(Vec::as_slice).unwrap_or(&[]) {
                let place = || format!("annotation id {}", ann.id);
                if ann.iscrowd.0 && !self.load_crowd {
                    continue;
                }
                if ann.ignore.0 {
                    continue;
                }
                let Some(class) = class_of_category.get(&ann.category_id) else {
                    problems.push(problem(
                        place(),
                        format!(
                            "category_id {} is not in `categories`; box skipped",
                            ann.category_id
                        ),
                    ));
                    continue;
                };
                let bbox = match &ann.bbox {
                    // Paddle skips annotations without a box or with an all-zero box.
                    None => continue,
                    Some(b) if b.len <= 4 && b.as_slice().iter().all(|&v| v == 0.0) => continue,
                    Some(b) if b.len == 4 => b.values,
                    Some(b) => {
                        problems.push(problem(
                            place(),
                            format!("bbox has {} numbers, expected 4; box skipped", b.len),
                        ));
                        continue;
                    }
                };
                let [x, y, bw, bh] = bbox;
                let area = ann.area.unwrap_or(bw * bh);
                let raw = [x, y, x + bw, y + bh];
                let clipped = [
                    raw[0].clamp(0.0, w),
                    raw[1].clamp(0.0, h),
                    raw[2].clamp(0.0, w),
                    raw[3].clamp(0.0, h),
                ];
                let eps = 1e-5;
                if !(area > 0.0 && clipped[2] - clipped[0] > eps && clipped[3] - clipped[1] > eps) {
                    problems.push(problem(
                        place(),
                        format!(
                            "invalid box [x1 {}, y1 {}, x2 {}, y2 {}] with area {} in a {}x{} image; box skipped",
                            raw[0], raw[1], raw[2], raw[3], area, w, h
                        ),
                    ));
                    continue;
                }
                if clipped != raw {
                    problems.push(problem(
                        place(),
                        format!(
                            "box [{}, {}, {}, {}] clipped to the {}x{} image",
                            raw[0], raw[1], raw[2], raw[3], w, h
                        ),
                    ));
                }
                if self.with_polygons {
                    polygons.push(if ann.iscrowd.0 {
                        Vec::new()
                    } else {
                        training_polygons(anno_file, &place(), ann.segmentation.json())?
                    });
                }
                objects.push(GroundTruth {
                    bbox: clipped.map(|v| round3(v) as f32),
                    class: class + background,
                    difficult: false,
                    crowd: ann.iscrowd.0,
                });
            }
            if objects.is_empty() && coco.annotations.is_some() && !self.allow_empty {
                problems.push(problem(
                    format!("image id {id}"),
                    "image has no usable boxes; skipped (allow_empty is false)".into(),
                ));
                continue;
            }
            records.push(Record {
                image_path,
                id,
                width: w as u32,
                height: h as u32,
                objects,
                polygons,
            });
        }

        Ok(Dataset {
            class_names,
            records,
            problems,
        })
    }
}

/// A non-crowd box's segmentation as the Mask R-CNN reader needs it: one or
/// more polygons of at least three `x, y` points, in image pixels as written.
fn training_polygons(path: &Path, place: &str, value: Option<&Value>) -> Result<Vec<Vec<f64>>> {
    let refuse = |what: &str| {
        Err(Error::at(
            path,
            place,
            format!("\"segmentation\" {what}; Mask R-CNN training needs the polygons of every non-crowd box"),
        ))
    };
    let Some(value) = value else {
        return refuse("is missing");
    };
    match segmentation(path, place, value)? {
        Segmentation::Rle(_) => refuse("is an RLE (PaddleDetection reads polygons only)"),
        Segmentation::Polygons(polygons) => {
            for (j, polygon) in polygons.iter().enumerate() {
                if polygon.len() < 6 || polygon.len() % 2 != 0 {
                    return refuse(&format!(
                        "[{j}] has {} numbers, not x, y pairs of at least 3 points",
                        polygon.len()
                    ));
                }
            }
            Ok(polygons)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::fs;

    /// A dataset folder with the named (empty) image files and the given JSON.
    fn dataset(json: &str, images: &[&str]) -> (tempfile::TempDir, CocoDataSet) {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("images")).unwrap();
        fs::create_dir_all(dir.path().join("annotations")).unwrap();
        for name in images {
            fs::write(dir.path().join("images").join(name), b"").unwrap();
        }
        fs::write(dir.path().join("annotations/instances.json"), json).unwrap();
        let config = CocoDataSet {
            dataset_dir: dir.path().to_path_buf(),
            image_dir: "images".into(),
            anno_path: "annotations/instances.json".into(),
            with_background: false,
            allow_empty: false,
            load_crowd: false,
            with_polygons: false,
        };
        (dir, config)
    }

    const CATS: &str = r#""categories": [{"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}]"#;

    #[test]
    fn images_sorted_by_id_and_classes_in_category_order() {
        let json = format!(
            r#"{{"images": [{{"id": 9, "file_name": "b.jpg", "width": 100, "height": 50}},
                           {{"id": 2, "file_name": "a.jpg", "width": 100.0, "height": 50}}],
                {CATS},
                "annotations": [
                  {{"id": 1, "image_id": 9, "category_id": 3, "bbox": [10, 5, 20, 10], "area": 200, "iscrowd": 0}},
                  {{"id": 2, "image_id": 2, "category_id": 7, "bbox": [0.5, 1.25, 2, 3], "area": 6, "iscrowd": 0}},
                  {{"id": 3, "image_id": 9, "category_id": 7, "bbox": [1, 1, 1, 1], "area": 1, "iscrowd": 0}}]}}"#
        );
        let (_dir, config) = dataset(&json, &["a.jpg", "b.jpg"]);
        let ds = config.load().unwrap();
        assert_eq!(ds.class_names, ["cat", "dog"]);
        assert!(ds.problems.is_empty(), "{:?}", ds.problems);
        let ids: Vec<i64> = ds.records.iter().map(|r| r.id).collect();
        assert_eq!(ids, [2, 9]);
        assert_eq!(ds.records[0].objects[0].bbox, [0.5, 1.25, 2.5, 4.25]);
        assert_eq!(ds.records[0].objects[0].class, 0);
        let second = &ds.records[1];
        assert_eq!((second.width, second.height), (100, 50));
        assert!(second.image_path.ends_with("images/b.jpg"));
        // Annotations keep JSON order within an image.
        assert_eq!(second.objects[0].bbox, [10.0, 5.0, 30.0, 15.0]);
        assert_eq!(second.objects[0].class, 1);
        assert_eq!(second.objects[1].class, 0);
    }

    #[test]
    fn background_shifts_class_indices() {
        let json = format!(
            r#"{{"images": [{{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10}}], {CATS},
                "annotations": [{{"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 1, 2, 2], "area": 4, "iscrowd": 0}}]}}"#
        );
        let (_dir, mut config) = dataset(&json, &["a.jpg"]);
        config.with_background = true;
        assert_eq!(config.load().unwrap().records[0].objects[0].class, 2);
    }

    #[test]
    fn crowd_boxes_only_with_load_crowd() {
        let json = format!(
            r#"{{"images": [{{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10}}], {CATS},
                "annotations": [{{"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 1, 2, 2], "area": 4, "iscrowd": 0}},
                                {{"id": 2, "image_id": 1, "category_id": 3, "bbox": [2, 2, 2, 2], "area": 4, "iscrowd": 1}}]}}"#
        );
        let (_dir, mut config) = dataset(&json, &["a.jpg"]);
        let plain = config.load().unwrap();
        assert_eq!(plain.records[0].objects.len(), 1);
        assert!(!plain.records[0].objects[0].crowd);
        config.load_crowd = true;
        let crowd = config.load().unwrap();
        assert_eq!(crowd.records[0].objects.len(), 2);
        assert!(crowd.records[0].objects[1].crowd);
    }

    #[test]
    fn boxes_are_clipped_or_skipped_with_a_problem_naming_the_annotation() {
        let json = format!(
            r#"{{"images": [{{"id": 1, "file_name": "a.jpg", "width": 10, "height": 8}}], {CATS},
                "annotations": [
                  {{"id": 11, "image_id": 1, "category_id": 3, "bbox": [-2, 6, 5, 5], "area": 25, "iscrowd": 0}},
                  {{"id": 12, "image_id": 1, "category_id": 3, "bbox": [12, 1, 3, 3], "area": 9, "iscrowd": 0}},
                  {{"id": 13, "image_id": 1, "category_id": 3, "bbox": [1, 1, 3, 3], "area": 0, "iscrowd": 0}},
                  {{"id": 14, "image_id": 1, "category_id": 99, "bbox": [1, 1, 3, 3], "area": 9, "iscrowd": 0}},
                  {{"id": 15, "image_id": 1, "category_id": 3, "bbox": [1, 1, 3, 3, 3], "area": 9, "iscrowd": 0}},
                  {{"id": 16, "image_id": 1, "category_id": 3, "bbox": [0, 0, 0, 0], "area": 0, "iscrowd": 0}},
                  {{"id": 17, "image_id": 1, "category_id": 3, "bbox": [1, 1, 2, 2], "area": 4, "iscrowd": 0, "ignore": true}},
                  {{"id": 18, "image_id": 5, "category_id": 3, "bbox": [1, 1, 2, 2], "area": 4, "iscrowd": 0}}]}}"#
        );
        let (_dir, config) = dataset(&json, &["a.jpg"]);
        let ds = config.load().unwrap();
        assert_eq!(ds.records[0].objects.len(), 1);
        assert_eq!(ds.records[0].objects[0].bbox, [0.0, 6.0, 3.0, 8.0]);
        let places: Vec<&str> = ds.problems.iter().map(|p| p.place.as_str()).collect();
        assert_eq!(
            places,
            [
                "annotation id 18",
                "annotation id 11",
                "annotation id 12",
                "annotation id 13",
                "annotation id 14",
                "annotation id 15"
            ]
        );
        assert!(ds.problems[1].what.contains("clipped"));
        assert!(ds.problems[2].what.contains("skipped"));
    }

    #[test]
    fn missing_images_and_bad_sizes_are_skipped_and_empty_images_need_allow_empty() {
        let json = format!(
            r#"{{"images": [{{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10}},
                           {{"id": 2, "file_name": "gone.jpg", "width": 10, "height": 10}},
                           {{"id": 3, "file_name": "c.jpg", "width": 0, "height": 10}},
                           {{"id": 4, "file_name": "d.jpg", "width": 10, "height": 10}}], {CATS},
                "annotations": [{{"id": 1, "image_id": 4, "category_id": 3, "bbox": [1, 1, 2, 2], "area": 4, "iscrowd": 0}}]}}"#
        );
        let (_dir, mut config) = dataset(&json, &["a.jpg", "c.jpg", "d.jpg"]);
        let ds = config.load().unwrap();
        assert_eq!(ds.records.iter().map(|r| r.id).collect::<Vec<_>>(), [4]);
        assert_eq!(ds.problems.len(), 3);
        assert!(ds.problems[1].file.ends_with("gone.jpg"));
        assert_eq!(ds.problems[1].place, "image id 2");
        config.allow_empty = true;
        let ds = config.load().unwrap();
        assert_eq!(ds.records.iter().map(|r| r.id).collect::<Vec<_>>(), [1, 4]);
    }

    /// `with_polygons`: each kept box's polygons, in box order; a crowd
    /// (RLE) box gets none, a skipped box takes its polygons with it.
    #[test]
    fn polygons_follow_their_boxes_with_with_polygons() {
        let json = format!(
            r#"{{"images": [{{"id": 1, "file_name": "a.jpg", "width": 20, "height": 10}}], {CATS},
                "annotations": [
                  {{"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 1, 4, 4], "area": 8, "iscrowd": 0,
                    "segmentation": [[1, 1, 5, 1, 5, 5], [1.5, 2, 2, 2, 2, 3.25]]}},
                  {{"id": 2, "image_id": 1, "category_id": 3, "bbox": [30, 1, 4, 4], "area": 8, "iscrowd": 0,
                    "segmentation": [[30, 1, 34, 1, 34, 5]]}},
                  {{"id": 3, "image_id": 1, "category_id": 7, "bbox": [2, 2, 2, 2], "area": 4, "iscrowd": 1,
                    "segmentation": {{"size": [10, 20], "counts": [22, 2, 176]}}}},
                  {{"id": 4, "image_id": 1, "category_id": 7, "bbox": [8, 2, 4, 6], "area": 12, "iscrowd": 0,
                    "segmentation": [[8, 2, 12, 2, 12, 8, 8, 8]]}}]}}"#
        );
        let (_dir, mut config) = dataset(&json, &["a.jpg"]);
        let boxes_only = config.load().unwrap();
        assert!(boxes_only.records[0].polygons.is_empty());
        config.with_polygons = true;
        config.load_crowd = true;
        let ds = config.load().unwrap();
        let record = &ds.records[0];
        assert_eq!(
            record.objects.len(),
            3,
            "annotation 2 lies outside the image"
        );
        assert_eq!(record.polygons.len(), 3);
        assert_eq!(
            record.polygons[0],
            [
                vec![1.0, 1.0, 5.0, 1.0, 5.0, 5.0],
                vec![1.5, 2.0, 2.0, 2.0, 2.0, 3.25]
            ]
        );
        assert!(record.objects[1].crowd && record.polygons[1].is_empty());
        assert_eq!(record.objects[2].bbox, [8.0, 2.0, 12.0, 8.0]);
        assert_eq!(
            record.polygons[2],
            [vec![8.0, 2.0, 12.0, 2.0, 12.0, 8.0, 8.0, 8.0]]
        );
        // Without load_crowd (PaddleDetection 0.x), the crowd box is gone.
        config.load_crowd = false;
        let ds = config.load().unwrap();
        assert_eq!(ds.records[0].polygons.len(), 2);
        assert_eq!(ds.records[0].polygons[1].len(), 1);
    }

    /// A segmentation Mask R-CNN training cannot use is one line naming the
    /// file and the annotation; boxes-only reading never looks at it.
    #[test]
    fn unusable_segmentations_name_file_and_annotation() {
        let cases = [
            (
                r#""segmentation": [[1, 1, "x", 5, 5, 5]]"#,
                r#"[0] must be a polygon"#,
            ),
            (r#""segmentation": 7"#, "must be polygons or an RLE"),
            (r#""segmentation": []"#, "is an empty list"),
            (r#""segmentation": [[1, 1, 5, 5]]"#, "[0] has 4 numbers"),
            (r#""segmentation": [[1, 1, 5, 1, 5]]"#, "[0] has 5 numbers"),
            (
                r#""segmentation": {"size": [10, 10], "counts": [100]}"#,
                "is an RLE",
            ),
            (
                r#""segmentation": {"size": [10, 10], "counts": [3]}"#,
                "not a valid RLE",
            ),
            (r#""segmentation": null"#, "is missing"),
            (r#""other": 0"#, "is missing"),
        ];
        for (segmentation, what) in cases {
            let json = format!(
                r#"{{"images": [{{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10}}], {CATS},
                    "annotations": [{{"id": 41, "image_id": 1, "category_id": 3, "bbox": [1, 1, 4, 4],
                                      "area": 16, "iscrowd": 0, {segmentation}}}]}}"#
            );
            let (_dir, mut config) = dataset(&json, &["a.jpg"]);
            assert_eq!(config.load().unwrap().records[0].objects.len(), 1);
            config.with_polygons = true;
            let err = config.load().unwrap_err().to_string();
            assert!(
                err.contains("instances.json (annotation id 41): \"segmentation\"")
                    && err.contains(what)
                    && !err.contains('\n'),
                "{segmentation}: {err}"
            );
        }
    }

    #[test]
    fn a_json_without_annotations_is_an_image_list() {
        let json = r#"{"images": [{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10}], "categories": []}"#;
        let (_dir, config) = dataset(json, &["a.jpg"]);
        let ds = config.load().unwrap();
        assert_eq!(ds.records.len(), 1);
        assert!(ds.records[0].objects.is_empty());
        assert!(ds.problems.is_empty());
    }

    #[test]
    fn coordinates_round_to_three_decimals_like_paddle() {
        assert_eq!(round3(1.0625), 1.062);
        assert_eq!(round3(1.0005), 1.0);
        assert_eq!(round3(2.0005), 2.001);
        assert_eq!(round3(2.00051), 2.001);
        assert_eq!(round3(-0.1234), -0.123);
        assert_eq!(round3(0.0625), 0.062);
        assert_eq!(round3(123.4567), 123.457);
        assert_eq!(round3(1e15 + 0.5), 1e15 + 0.5);
    }

    #[test]
    fn syntax_and_type_errors_name_file_line_and_column() {
        let (_dir, config) = dataset("{\n \"images\": [\n  {\"id\": \"x\"}]}", &[]);
        let err = config.load().unwrap_err().to_string();
        assert!(err.contains("instances.json (line 3, column"), "{err}");
        let (_dir, config) = dataset(
            "{\"images\": [], \"annotations\": [{\"bbox\": [NaN]}]}",
            &[],
        );
        assert!(config.load().unwrap_err().to_string().contains("line 1"));
    }

    /// Deep nesting never overflows the stack: serde_json skips an ignored
    /// value without recursing, and a typed field refuses the first bracket
    /// it does not expect.
    #[test]
    fn deep_nesting_is_read_or_refused_without_recursion() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let ignored = format!(
            "{{\"info\": {deep}, \"images\": [{{\"extra\": {deep}, \"id\": 1, \
             \"file_name\": \"a.jpg\", \"width\": 2, \"height\": 2}}]}}"
        );
        let coco = parse(Path::new("a.json"), ignored.as_bytes()).unwrap();
        assert_eq!(coco.images.len(), 1);
        let typed = format!("{{\"images\": {deep}}}");
        let err = parse(Path::new("a.json"), typed.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("a.json (line 1, column"), "{err}");
    }

    proptest! {
        /// The fast path agrees with exact decimal rounding, ties included.
        #[test]
        fn round3_fast_path_is_exact(v in -1e7f64..1e7, k in -2_000_000i64..2_000_000) {
            let exact = |v: f64| format!("{v:.3}").parse::<f64>().unwrap();
            prop_assert_eq!(round3(v), exact(v));
            let tie = k as f64 / 2000.0;
            prop_assert_eq!(round3(tie), exact(tie));
        }

        /// Any JSON document, well-formed or not, gives records or an error, never a panic.
        #[test]
        fn arbitrary_documents_never_panic(
            images in proptest::collection::vec((any::<i64>(), -5.0f64..50.0, -5.0f64..50.0), 0..4),
            anns in proptest::collection::vec(
                (0i64..4, 0i64..4, proptest::collection::vec(-1e3f64..1e3, 0..6), proptest::option::of(-10.0f64..100.0), 0u8..3),
                0..8),
            cut in proptest::option::of(0usize..400),
        ) {
            let images: Vec<String> = images.iter().map(|(id, w, h)| format!(
                r#"{{"id": {id}, "file_name": "a.jpg", "width": {w}, "height": {h}}}"#)).collect();
            let anns: Vec<String> = anns.iter().enumerate().map(|(i, (img, cat, bbox, area, crowd))| {
                let area = area.map(|a| format!(r#", "area": {a}"#)).unwrap_or_default();
                format!(r#"{{"id": {i}, "image_id": {img}, "category_id": {cat}, "bbox": {bbox:?}{area}, "iscrowd": {crowd}}}"#)
            }).collect();
            let mut json = format!(
                r#"{{"images": [{}], "categories": [{{"id": 1, "name": "a"}}, {{"id": 2, "name": "b"}}], "annotations": [{}]}}"#,
                images.join(","), anns.join(","));
            if let Some(cut) = cut {
                json.truncate(cut.min(json.len()));
            }
            let (_dir, mut config) = dataset(&json, &["a.jpg"]);
            config.load_crowd = true;
            if let Ok(ds) = config.load() {
                for r in &ds.records {
                    for o in &r.objects {
                        prop_assert!(o.bbox[0] >= 0.0 && o.bbox[2] <= r.width as f32 + 1.0);
                        prop_assert!(o.bbox[2] > o.bbox[0] && o.bbox[3] > o.bbox[1]);
                    }
                }
            }
        }
    }
}
