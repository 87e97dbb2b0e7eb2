//! VOC XMLs listed in a file -> one COCO JSON, as `tools/x2coco.py --dataset_type voc`.

use std::path::{Path, PathBuf};

use super::pyjson::Py;
use crate::atomic;
use crate::error::{Error, Result};
use crate::voc::LineCounter;

#[derive(Debug, Clone)]
pub struct VocOptions {
    pub voc_anno_dir: PathBuf,
    pub voc_anno_list: PathBuf,
    pub voc_label_list: PathBuf,
    pub output_dir: PathBuf,
    pub voc_out_name: String,
}

fn child<'a, 'i>(n: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    n.children().find(|c| c.has_tag_name(name))
}

/// Element text as `findtext` gives it: `""` for an empty element.
fn text_of<'a>(n: roxmltree::Node<'a, '_>, name: &str) -> Option<&'a str> {
    child(n, name).map(|c| c.text().unwrap_or(""))
}

fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    String::from_utf8(bytes).map_err(|_| Error::new(path, "text is not valid UTF-8"))
}

/// Python's `float(text)`, refusing what would not make a usable box.
fn number(path: &Path, line: u32, name: &str, text: Option<&str>) -> Result<f64> {
    let text =
        text.ok_or_else(|| Error::at(path, format!("line {line}"), format!("missing <{name}>")))?;
    match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(Error::at(
            path,
            format!("line {line}"),
            format!("<{name}> is {text:?}, not a finite number"),
        )),
    }
}

/// Converts and writes `output_dir/voc_out_name`; returns its path.
pub fn convert(o: &VocOptions) -> Result<PathBuf> {
    // Labels: whitespace-separated words; ids from 1. A repeated label keeps
    // its first position and takes the later id (a Python dict).
    let mut labels: Vec<(String, i64)> = Vec::new();
    for (i, word) in read_text(&o.voc_label_list)?.split_whitespace().enumerate() {
        match labels.iter_mut().find(|(l, _)| l == word) {
            Some(entry) => entry.1 = i as i64 + 1,
            None => labels.push((word.to_string(), i as i64 + 1)),
        }
    }
    let mut images = Vec::new();
    let mut annotations = Vec::new();
    let mut bnd_id = 1;
    let list = read_text(&o.voc_anno_list)?;
    // The script takes the last space-separated token of each line; blank lines
    // (which would make it fail) are skipped.
    let ids = list
        .lines()
        .map(|l| l.trim().rsplit(' ').next().unwrap_or(""))
        .filter(|id| !id.is_empty());
    for (im_id, aid) in ids.enumerate() {
        let path = if aid.ends_with("xml") {
            o.voc_anno_dir.join(aid)
        } else {
            o.voc_anno_dir.join(format!("{aid}.xml"))
        };
        let text = read_text(&path)?;
        let doc = roxmltree::Document::parse(&text).map_err(|e| {
            Error::at(
                &path,
                format!("line {}", e.pos().row),
                format!("invalid XML: {e}"),
            )
        })?;
        let root = doc.root_element();
        let line_of = |n: roxmltree::Node| doc.text_pos_at(n.range().start).row;
        let filename = text_of(root, "filename")
            .ok_or_else(|| Error::at(&path, "<annotation>", "missing <filename>"))?;
        let size = child(root, "size")
            .ok_or_else(|| Error::at(&path, "<annotation>", "missing <size>"))?;
        let height = number(&path, line_of(size), "height", text_of(size, "height"))?;
        let width = number(&path, line_of(size), "width", text_of(size, "width"))?;
        images.push(Py::Dict(vec![
            ("file_name", Py::Str(filename.to_string())),
            ("height", Py::Float(height)),
            ("width", Py::Float(width)),
            ("id", Py::Int(im_id as i64)),
        ]));
        let mut lines = LineCounter::new(&text);
        for obj in root.children().filter(|c| c.has_tag_name("object")) {
            let line = lines.line_at(obj.range().start);
            let label = text_of(obj, "name").unwrap_or("");
            let category_id = labels
                .iter()
                .find(|(l, _)| l == label)
                .map(|(_, id)| *id)
                .ok_or_else(|| {
                    Error::at(
                        &path,
                        format!("line {line}"),
                        format!("label {label:?} is not in the label list"),
                    )
                })?;
            let bndbox = child(obj, "bndbox")
                .ok_or_else(|| Error::at(&path, format!("line {line}"), "missing <bndbox>"))?;
            let [xmin, ymin, xmax, ymax] = ["xmin", "ymin", "xmax", "ymax"]
                .map(|name| number(&path, line, name, text_of(bndbox, name)));
            let (xmin, ymin, xmax, ymax) = (xmin?, ymin?, xmax?, ymax?);
            if !(xmax > xmin && ymax > ymin) {
                return Err(Error::at(
                    &path,
                    format!("line {line}"),
                    format!("box size error: xmin {xmin} ymin {ymin} xmax {xmax} ymax {ymax}"),
                ));
            }
            let (w, h) = (xmax - xmin, ymax - ymin);
            annotations.push(Py::Dict(vec![
                ("area", Py::Float(w * h)),
                ("iscrowd", Py::Int(0)),
                (
                    "bbox",
                    Py::List(vec![
                        Py::Float(xmin),
                        Py::Float(ymin),
                        Py::Float(w),
                        Py::Float(h),
                    ]),
                ),
                ("category_id", Py::Int(category_id)),
                ("ignore", Py::Int(0)),
                ("image_id", Py::Int(im_id as i64)),
                ("id", Py::Int(bnd_id)),
            ]));
            bnd_id += 1;
        }
    }
    let categories = labels
        .iter()
        .map(|(label, id)| {
            Py::Dict(vec![
                ("supercategory", Py::Str("none".into())),
                ("id", Py::Int(*id)),
                ("name", Py::Str(label.clone())),
            ])
        })
        .collect();
    let coco = Py::Dict(vec![
        ("images", Py::List(images)),
        ("type", Py::Str("instances".into())),
        ("annotations", Py::List(annotations)),
        ("categories", Py::List(categories)),
    ]);
    std::fs::create_dir_all(&o.output_dir).map_err(|e| Error::io(&o.output_dir, e))?;
    let out = o.output_dir.join(&o.voc_out_name);
    atomic::write_bytes(&out, coco.dumps(None).as_bytes())?;
    Ok(out)
}
