//! Native `tools/x2coco.py`: VOC, labelme and cityscapes annotations to COCO
//! instances JSON, with the script's structure, ids, key order and number
//! formatting (see `pyjson`), so outputs compare byte for byte.
//!
//! Where the script depends on `os.listdir` order (the train/val/test split
//! and image ids), pulsefocus sorts names, which makes the output
//! deterministic; for a given directory order the script would agree.

pub mod cityscape;
pub mod labelme;
pub mod polygon;
pub mod pyjson;
pub mod voc;

use std::path::{Path, PathBuf};

use crate::atomic;
use crate::error::{Error, Result};
use pyjson::Py;

/// The image extensions `deal_json` accepts (case-sensitive, as the script).
const IMAGE_EXTENSIONS: [&str; 7] = ["bmp", "jpg", "jpeg", "png", "JPEG", "JPG", "PNG"];

/// Options of the labelme / cityscape modes.
#[derive(Debug, Clone)]
pub struct SplitOptions {
    pub json_input_dir: PathBuf,
    pub image_input_dir: PathBuf,
    pub output_dir: PathBuf,
    pub train_proportion: f64,
    pub val_proportion: f64,
    pub test_proportion: f64,
}

/// Categories in first-seen order, shared by all splits of one run (the
/// script keeps them in module-level lists, so ids continue across splits).
#[derive(Debug, Default)]
pub struct Categories {
    names: Vec<String>,
}

impl Categories {
    /// The 1-based category id of `label`, adding it if new.
    pub fn id(&mut self, label: &str) -> i64 {
        match self.names.iter().position(|n| n == label) {
            Some(i) => i as i64 + 1,
            None => {
                self.names.push(label.to_string());
                self.names.len() as i64
            }
        }
    }

    fn to_py(&self) -> Py {
        Py::List(
            self.names
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    Py::Dict(vec![
                        ("supercategory", Py::Str("component".into())),
                        ("id", Py::Int(i as i64 + 1)),
                        ("name", Py::Str(n.clone())),
                    ])
                })
                .collect(),
        )
    }
}

/// What one input JSON contributes: its image entry and its annotations.
pub struct Converted {
    pub image: Py,
    pub annotations: Vec<Py>,
}

/// Converts one annotation JSON (`data`) for image number `image_num`
/// (0-based within the split); `object_num` counts every shape of the split.
pub type ConvertFn = fn(
    path: &Path,
    data: &serde_json::Value,
    img_file: &str,
    image_num: i64,
    object_num: &mut i64,
    categories: &mut Categories,
) -> Result<Converted>;

/// `np.asarray(points).flatten()` as Python would write it: integers stay
/// integers only when every coordinate is one.
pub fn flatten_numbers(numbers: &[&serde_json::Number]) -> Vec<Py> {
    let all_int = numbers.iter().all(|n| n.is_i64() || n.is_u64());
    numbers
        .iter()
        .map(|n| {
            if all_int {
                Py::number(n)
            } else {
                Py::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        })
        .collect()
}

/// The `images` entry labelme and cityscape conversions write:
/// `{height, width, id, file_name}`, the sizes as the JSON numbers they were
/// (each given with its key, for the error when it is not a number).
pub fn image_entry(
    path: &Path,
    height: (&serde_json::Value, &str),
    width: (&serde_json::Value, &str),
    id: i64,
    file_name: &str,
) -> Result<Py> {
    let number = |(v, name): (&serde_json::Value, &str)| match v {
        serde_json::Value::Number(n) => Ok(Py::number(n)),
        _ => Err(Error::at(path, name, format!("{name} {v} is not a number"))),
    };
    Ok(Py::Dict(vec![
        ("height", number(height)?),
        ("width", number(width)?),
        ("id", Py::Int(id)),
        ("file_name", Py::Str(file_name.to_string())),
    ]))
}

/// Reads `[[x, y], ...]` at `place`, keeping the JSON numbers.
pub fn points<'a>(
    path: &Path,
    place: &str,
    value: &'a serde_json::Value,
) -> Result<Vec<[&'a serde_json::Number; 2]>> {
    let bad = || Error::at(path, place, "expected a list of [x, y] number pairs");
    value
        .as_array()
        .ok_or_else(bad)?
        .iter()
        .map(|p| match p.as_array().map(Vec::as_slice) {
            Some([serde_json::Value::Number(x), serde_json::Value::Number(y)]) => Ok([x, y]),
            _ => Err(bad()),
        })
        .collect()
}

/// `annotations_polygon`: the bbox is the extent Pillow fills on a
/// `height x width` mask.
#[allow(clippy::too_many_arguments)]
pub fn polygon_annotation(
    path: &Path,
    place: &str,
    height: &serde_json::Value,
    width: &serde_json::Value,
    pts: &[[&serde_json::Number; 2]],
    image_id: i64,
    category_id: i64,
    id: i64,
) -> Result<Py> {
    let size = |v: &serde_json::Value, name: &str| {
        v.as_i64()
            .ok_or_else(|| Error::at(path, name, format!("image {name} {v} is not an integer")))
    };
    let (h, w) = (size(height, "height")?, size(width, "width")?);
    let as_f64: Vec<[f64; 2]> = pts
        .iter()
        .map(|[x, y]| {
            [
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            ]
        })
        .collect();
    let [x0, y0, x1, y1] = polygon::fill_extent(&as_f64, w, h).ok_or_else(|| {
        Error::at(
            path,
            place,
            format!("polygon fills no pixel of the {w}x{h} image (x2coco.py fails here too)"),
        )
    })?;
    let bbox = [x0, y0, x1 - x0, y1 - y0].map(|v| v as f64);
    let flat: Vec<&serde_json::Number> = pts.iter().flatten().copied().collect();
    Ok(annotation(
        flatten_numbers(&flat),
        image_id,
        bbox,
        category_id,
        id,
    ))
}

/// An annotation in the script's key order.
pub fn annotation(
    segmentation: Vec<Py>,
    image_id: i64,
    bbox: [f64; 4],
    category_id: i64,
    id: i64,
) -> Py {
    Py::Dict(vec![
        ("segmentation", Py::List(vec![Py::List(segmentation)])),
        ("iscrowd", Py::Int(0)),
        ("image_id", Py::Int(image_id)),
        (
            "bbox",
            Py::List(bbox.iter().map(|&v| Py::Float(v)).collect()),
        ),
        ("area", Py::Float(bbox[2] * bbox[3])),
        ("category_id", Py::Int(category_id)),
        ("id", Py::Int(id)),
    ])
}

fn sorted_entries(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if entry.path().is_file() {
            names.push((
                entry.file_name().to_string_lossy().into_owned(),
                entry.path(),
            ));
        }
    }
    names.sort();
    Ok(names)
}

/// `deal_json`: every image in `split_dir` with its annotation JSON.
fn deal_json(
    convert: ConvertFn,
    split_dir: &Path,
    json_dir: &Path,
    categories: &mut Categories,
) -> Result<Py> {
    let mut images = Vec::new();
    let mut annotations = Vec::new();
    let mut image_num = -1;
    let mut object_num = -1;
    for (img_file, _) in sorted_entries(split_dir)? {
        let ext = img_file.rsplit('.').next().unwrap_or("");
        if !IMAGE_EXTENSIONS.contains(&ext) {
            continue;
        }
        let stem = Path::new(&img_file)
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy();
        let label_file = json_dir.join(format!("{stem}.json"));
        image_num += 1;
        let bytes = std::fs::read(&label_file).map_err(|e| Error::io(&label_file, e))?;
        let data: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            Error::at(
                &label_file,
                format!("line {}, column {}", e.line(), e.column()),
                format!("invalid JSON: {e}"),
            )
        })?;
        let converted = convert(
            &label_file,
            &data,
            &img_file,
            image_num,
            &mut object_num,
            categories,
        )?;
        images.push(converted.image);
        annotations.extend(converted.annotations);
    }
    Ok(Py::Dict(vec![
        ("images", Py::List(images)),
        ("categories", categories.to_py()),
        ("annotations", Py::List(annotations)),
    ]))
}

/// The labelme / cityscape modes: split the images into `train/ val/ test/`
/// under `output_dir` as the script does (first `int(n * train_proportion)`
/// images to train, then val, then the rest to test; `n` counts the input
/// JSON files) and write `annotations/instance_{split}.json` for each split
/// with a non-zero proportion. Returns the written JSON paths.
pub fn convert_split(convert: ConvertFn, options: &SplitOptions) -> Result<Vec<PathBuf>> {
    let o = options;
    for dir in [&o.json_input_dir, &o.image_input_dir] {
        if !dir.is_dir() {
            return Err(Error::new(dir, "folder does not exist"));
        }
    }
    let proportions = [o.train_proportion, o.val_proportion, o.test_proportion];
    if (proportions.iter().sum::<f64>() - 1.0).abs() >= 1e-5 || proportions.iter().any(|p| *p < 0.0)
    {
        return Err(Error::new(
            &o.output_dir,
            format!("train/val/test proportions {proportions:?} must be >= 0 and sum to 1"),
        ));
    }
    let total = sorted_entries(&o.json_input_dir)?
        .iter()
        .filter(|(name, _)| name.ends_with(".json"))
        .count();
    let train_num = if o.train_proportion != 0.0 {
        (total as f64 * o.train_proportion) as usize
    } else {
        0
    };
    let val_num = if o.val_proportion != 0.0 {
        (total as f64 * o.val_proportion) as usize
    } else {
        0
    };
    let splits = ["train", "val", "test"];
    let split_dirs: Vec<PathBuf> = splits.iter().map(|s| o.output_dir.join(s)).collect();
    for (dir, p) in split_dirs.iter().zip(proportions) {
        if p != 0.0 {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
    }
    for (count, (name, path)) in sorted_entries(&o.image_input_dir)?.into_iter().enumerate() {
        let count = count + 1;
        let split = if count <= train_num {
            0
        } else if count <= train_num + val_num {
            1
        } else {
            2
        };
        if split_dirs[split].is_dir() {
            let dest = split_dirs[split].join(&name);
            std::fs::copy(&path, &dest).map_err(|e| Error::io(&dest, e))?;
        }
    }
    let annotations_dir = o.output_dir.join("annotations");
    std::fs::create_dir_all(&annotations_dir).map_err(|e| Error::io(&annotations_dir, e))?;
    let mut categories = Categories::default();
    let mut written = Vec::new();
    for ((split, dir), p) in splits.iter().zip(&split_dirs).zip(proportions) {
        if p == 0.0 {
            continue;
        }
        let coco = deal_json(convert, dir, &o.json_input_dir, &mut categories)?;
        let path = annotations_dir.join(format!("instance_{split}.json"));
        atomic::write_bytes(&path, coco.dumps(Some(4)).as_bytes())?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden outputs were written by PaddleDetection's `tools/x2coco.py`
    /// (see `formats/tests/fixtures/x2coco/README.md`).
    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/x2coco")
    }

    fn assert_same_file(got: &Path, want: &Path) {
        let (got_text, want_text) = (
            std::fs::read_to_string(got).unwrap(),
            std::fs::read_to_string(want).unwrap(),
        );
        assert!(
            got_text == want_text,
            "{} differs from {}:\n{got_text}",
            got.display(),
            want.display()
        );
    }

    #[test]
    fn voc_matches_x2coco_py_byte_for_byte() {
        let out = tempfile::tempdir().unwrap();
        let f = fixtures();
        let written = voc::convert(&voc::VocOptions {
            voc_anno_dir: f.join("voc/Annotations"),
            voc_anno_list: f.join("voc/trainval.txt"),
            voc_label_list: f.join("voc/label_list.txt"),
            output_dir: out.path().to_path_buf(),
            voc_out_name: "voc.json".into(),
        })
        .unwrap();
        assert_same_file(&written, &f.join("expected/voc.json"));
    }

    fn split(kind: &str, proportions: [f64; 3], out: &Path) -> SplitOptions {
        SplitOptions {
            json_input_dir: fixtures().join(kind).join("json"),
            image_input_dir: fixtures().join(kind).join("images"),
            output_dir: out.to_path_buf(),
            train_proportion: proportions[0],
            val_proportion: proportions[1],
            test_proportion: proportions[2],
        }
    }

    #[test]
    fn labelme_split_matches_x2coco_py_byte_for_byte() {
        let out = tempfile::tempdir().unwrap();
        let written = convert_split(
            labelme::convert,
            &split("labelme", [0.5, 0.25, 0.25], out.path()),
        )
        .unwrap();
        assert_eq!(written.len(), 3);
        for path in &written {
            assert_same_file(
                path,
                &fixtures()
                    .join("expected/labelme")
                    .join(path.file_name().unwrap()),
            );
        }
        for (dir, name) in [
            ("train", "a.jpg"),
            ("train", "b.png"),
            ("val", "c.jpg"),
            ("test", "d.jpg"),
        ] {
            let copied = std::fs::read(out.path().join(dir).join(name)).unwrap();
            assert_eq!(copied, format!("img-{name}").as_bytes());
        }
    }

    #[test]
    fn cityscape_matches_x2coco_py_byte_for_byte() {
        let out = tempfile::tempdir().unwrap();
        let written = convert_split(
            cityscape::convert,
            &split("cityscape", [1.0, 0.0, 0.0], out.path()),
        )
        .unwrap();
        assert_eq!(written.len(), 1);
        assert_same_file(
            &written[0],
            &fixtures().join("expected/cityscape/instance_train.json"),
        );
        assert!(!out.path().join("val").exists());
    }

    #[test]
    fn bad_inputs_are_errors_naming_the_file() {
        let out = tempfile::tempdir().unwrap();
        let err = convert_split(
            labelme::convert,
            &split("labelme", [0.5, 0.2, 0.2], out.path()),
        )
        .unwrap_err();
        assert!(err.to_string().contains("sum to 1"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("json")).unwrap();
        std::fs::create_dir_all(dir.path().join("images")).unwrap();
        std::fs::write(dir.path().join("images/x.jpg"), b"").unwrap();
        std::fs::write(
            dir.path().join("json/x.json"),
            r#"{"imagePath": "x.jpg", "imageHeight": 10, "imageWidth": 10,
                "shapes": [{"label": "a", "points": [[50, 50], [60, 50], [55, 60]], "shape_type": "polygon"}]}"#,
        )
        .unwrap();
        let options = SplitOptions {
            json_input_dir: dir.path().join("json"),
            image_input_dir: dir.path().join("images"),
            output_dir: dir.path().join("out"),
            train_proportion: 1.0,
            val_proportion: 0.0,
            test_proportion: 0.0,
        };
        let err = convert_split(labelme::convert, &options)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("x.json (shapes[0])") && err.contains("fills no pixel"),
            "{err}"
        );
        std::fs::write(dir.path().join("json/x.json"), "{\"imagePath\": 3,").unwrap();
        let err = convert_split(labelme::convert, &options)
            .unwrap_err()
            .to_string();
        assert!(err.contains("x.json (line 1, column"), "{err}");
        // serde_json stops at 128 levels: deep nesting is an error, not a
        // stack overflow (labelme and cityscape files are both read here).
        let deep = format!(
            "{{\"shapes\": {}{}}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        std::fs::write(dir.path().join("json/x.json"), deep).unwrap();
        for convert in [labelme::convert as ConvertFn, cityscape::convert] {
            let err = convert_split(convert, &options).unwrap_err().to_string();
            assert!(
                err.contains("x.json (line 1, column") && err.contains("recursion limit exceeded"),
                "{err}"
            );
        }
    }
}
