//! Pascal VOC list file + XML annotations -> `Dataset`, the way PaddleDetection
//! 2.7's `VOCDataSet` builds its records.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::dataset::{Dataset, GroundTruth, Problem, Record};
use crate::error::{Error, Result};

/// The 20 Pascal VOC classes in PaddleDetection's `pascalvoc_label()` order.
pub const DEFAULT_LABELS: [&str; 20] = [
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
];

/// The fields of a PaddleDetection `VOCDataSet` config entry.
#[derive(Debug, Clone, PartialEq)]
pub struct VocDataSet {
    pub dataset_dir: PathBuf,
    /// List file (`trainval.txt`), relative to `dataset_dir`.
    pub anno_path: PathBuf,
    /// Label file relative to `dataset_dir`, used unless `use_default_label`.
    pub label_list: PathBuf,
    pub use_default_label: bool,
    pub with_background: bool,
}

/// What one annotation XML says, before it becomes a record.
#[derive(Debug, Clone, PartialEq)]
pub struct VocAnnotation {
    pub filename: Option<String>,
    /// `<id>`, which Paddle uses as the image id when present.
    pub id: Option<i64>,
    /// `<size>`; `None` when missing or zero.
    pub size: Option<(f64, f64)>,
    pub objects: Vec<VocObject>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VocObject {
    pub name: String,
    /// `[xmin, ymin, xmax, ymax]` as written.
    pub bndbox: [f64; 4],
    pub difficult: bool,
    /// 1-based line of the `<object>` element, for messages.
    pub line: u32,
}

/// Reads the label file: one name per line, blank lines skipped.
pub fn read_label_list(path: &Path) -> Result<Vec<String>> {
    let text = read_text(path)?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    String::from_utf8(bytes).map_err(|e| {
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
        Error::at(path, format!("line {line}"), "text is not valid UTF-8")
    })
}

/// The text of the child element `name`, trimmed.
fn child_text<'a>(node: roxmltree::Node<'a, 'a>, name: &str) -> Option<&'a str> {
    node.children()
        .find(|c| c.has_tag_name(name))
        .map(|c| c.text().unwrap_or("").trim())
}

/// The 1-based lines of positions in a text visited in increasing order: each
/// call counts only the newlines since the previous one. (roxmltree's
/// `text_pos_at` counts from the start of the text every time, which made a
/// file with many objects quadratic: 32,000 objects took 10 s.)
pub(crate) struct LineCounter<'a> {
    text: &'a str,
    counted_to: usize,
    line: u32,
}

impl<'a> LineCounter<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        LineCounter {
            text,
            counted_to: 0,
            line: 1,
        }
    }

    /// The line of byte position `pos`; a position before the previous one
    /// is counted from the start again.
    pub(crate) fn line_at(&mut self, pos: usize) -> u32 {
        if pos < self.counted_to {
            (self.counted_to, self.line) = (0, 1);
        }
        let newlines = self.text.as_bytes()[self.counted_to..pos]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        self.line += newlines as u32;
        self.counted_to = pos;
        self.line
    }
}

/// Parses one annotation XML. Errors name the file and the line.
pub fn parse_annotation(path: &Path, text: &str) -> Result<VocAnnotation> {
    let doc = roxmltree::Document::parse(text).map_err(|e| {
        Error::at(
            path,
            format!("line {}", e.pos().row),
            format!("invalid XML: {e}"),
        )
    })?;
    let root = doc.root_element();
    let line_of = |node: roxmltree::Node| doc.text_pos_at(node.range().start).row;
    let number = |node: roxmltree::Node, name: &str| -> Result<f64> {
        let text = child_text(node, name).ok_or_else(|| {
            Error::at(
                path,
                format!("line {}", line_of(node)),
                format!("<{}> has no <{name}>", node.tag_name().name()),
            )
        })?;
        match text.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            _ => Err(Error::at(
                path,
                format!("line {}", line_of(node)),
                format!("<{name}> is {text:?}, not a finite number"),
            )),
        }
    };

    let size = match root.children().find(|c| c.has_tag_name("size")) {
        Some(size) => {
            let (w, h) = (number(size, "width")?, number(size, "height")?);
            (w > 0.0 && h > 0.0).then_some((w, h))
        }
        None => None,
    };
    let id = match child_text(root, "id") {
        Some(text) => Some(text.parse::<i64>().map_err(|_| {
            Error::at(path, "<id>", format!("image id {text:?} is not an integer"))
        })?),
        None => None,
    };

    let mut objects = Vec::new();
    let mut lines = LineCounter::new(text);
    for obj in root.children().filter(|c| c.has_tag_name("object")) {
        let line = lines.line_at(obj.range().start);
        let name = child_text(obj, "name")
            .ok_or_else(|| Error::at(path, format!("line {line}"), "<object> has no <name>"))?;
        let bndbox = obj
            .children()
            .find(|c| c.has_tag_name("bndbox"))
            .ok_or_else(|| {
                Error::at(
                    path,
                    format!("line {line}"),
                    format!("<object> {name:?} has no <bndbox>"),
                )
            })?;
        let difficult = match child_text(obj, "difficult") {
            None | Some("") => false,
            Some(text) => text.parse::<f64>().map(|v| v != 0.0).map_err(|_| {
                Error::at(
                    path,
                    format!("line {line}"),
                    format!("<difficult> is {text:?}, not a number"),
                )
            })?,
        };
        objects.push(VocObject {
            name: name.to_string(),
            bndbox: [
                number(bndbox, "xmin")?,
                number(bndbox, "ymin")?,
                number(bndbox, "xmax")?,
                number(bndbox, "ymax")?,
            ],
            difficult,
            line,
        });
    }
    Ok(VocAnnotation {
        filename: child_text(root, "filename").map(String::from),
        id,
        size,
        objects,
    })
}

impl VocDataSet {
    pub fn list_file(&self) -> PathBuf {
        self.dataset_dir.join(&self.anno_path)
    }

    pub fn class_names(&self) -> Result<Vec<String>> {
        if self.use_default_label {
            Ok(DEFAULT_LABELS.iter().map(|s| s.to_string()).collect())
        } else {
            read_label_list(&self.dataset_dir.join(&self.label_list))
        }
    }

    /// Reads the dataset the way training does: a broken XML or an unknown
    /// class name stops it with an error.
    pub fn load(&self) -> Result<Dataset> {
        self.read(None)
    }

    /// Reads the dataset the way `dataset check` does: an error in one sample
    /// is collected into the returned list and the sample skipped, so every
    /// problem of the dataset is found in one pass. Errors that leave nothing
    /// to read (label or list file) are still returned as `Err`.
    pub fn load_collecting_errors(&self) -> Result<(Dataset, Vec<Problem>)> {
        let mut errors = Vec::new();
        let dataset = self.read(Some(&mut errors))?;
        Ok((dataset, errors))
    }

    fn read(&self, mut errors: Option<&mut Vec<Problem>>) -> Result<Dataset> {
        let class_names = self.class_names()?;
        let class_of: HashMap<&str, u32> = class_names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i as u32 + self.with_background as u32))
            .collect();
        let list_path = self.list_file();
        let list = read_text(&list_path)?;
        let list_name = list_path.display().to_string();

        let mut problems = Vec::new();
        let mut records = Vec::new();
        for (line_index, line) in list.lines().enumerate() {
            let line_place = format!("line {}", line_index + 1);
            let tokens: Vec<&str> = line.split_whitespace().collect();
            let (image_rel, xml_rel) = match tokens.as_slice() {
                [] => continue,
                [image, xml, ..] => (image, xml),
                [_] => {
                    problems.push(Problem {
                        file: list_name.clone(),
                        place: line_place,
                        what: "expected `<image path> <xml path>`, found one token; line skipped"
                            .into(),
                    });
                    continue;
                }
            };
            let image_path = self.dataset_dir.join(image_rel);
            let xml_path = self.dataset_dir.join(xml_rel);
            let listed_at = format!("{list_name} {line_place}");
            let missing = if !image_path.exists() {
                Some((&image_path, "image file not found; sample skipped"))
            } else if !xml_path.is_file() {
                Some((&xml_path, "annotation XML not found; sample skipped"))
            } else {
                None
            };
            if let Some((path, what)) = missing {
                problems.push(Problem {
                    file: path.display().to_string(),
                    place: listed_at,
                    what: what.into(),
                });
                continue;
            }
            match self.sample(&class_of, image_path, &xml_path, &listed_at, &mut problems) {
                Ok(Some(mut record)) => {
                    // Paddle's running count of records, unless the XML has an <id>.
                    if record.id < 0 {
                        record.id = records.len() as i64;
                    }
                    records.push(record);
                }
                Ok(None) => {}
                Err(e) => match errors.as_deref_mut() {
                    Some(errors) => errors.push(Problem::from_error(&e)),
                    None => return Err(e),
                },
            }
        }
        Ok(Dataset {
            class_names,
            records,
            problems,
        })
    }

    /// One list entry whose files exist. `None` when the XML has no objects;
    /// the record's id is -1 unless the XML gives one.
    fn sample(
        &self,
        class_of: &HashMap<&str, u32>,
        image_path: PathBuf,
        xml_path: &Path,
        listed_at: &str,
        problems: &mut Vec<Problem>,
    ) -> Result<Option<Record>> {
        let annotation = parse_annotation(xml_path, &read_text(xml_path)?)?;
        let xml_name = xml_path.display().to_string();
        if annotation.objects.is_empty() {
            problems.push(Problem {
                file: xml_name,
                place: "<annotation>".into(),
                what: "no <object>; sample skipped".into(),
            });
            return Ok(None);
        }
        let (w, h) = match annotation.size {
            Some(size) => size,
            None => {
                let (w, h) = image::ImageReader::open(&image_path)
                    .and_then(|r| r.with_guessed_format())
                    .map_err(|e| Error::io(&image_path, e))?
                    .into_dimensions()
                    .map_err(|e| {
                        Error::at(
                            &image_path,
                            listed_at,
                            format!("<size> is missing in {xml_name} and the image header is unreadable: {e}"),
                        )
                    })?;
                (w as f64, h as f64)
            }
        };

        let mut objects = Vec::with_capacity(annotation.objects.len());
        for (k, obj) in annotation.objects.iter().enumerate() {
            let place = format!("line {}, object {}", obj.line, k + 1);
            let Some(&class) = class_of.get(obj.name.as_str()) else {
                return Err(Error::at(
                    xml_path,
                    place,
                    format!("class name {:?} is not in the label list", obj.name),
                ));
            };
            let raw = obj.bndbox;
            let clipped = [
                raw[0].max(0.0),
                raw[1].max(0.0),
                raw[2].min(w - 1.0),
                raw[3].min(h - 1.0),
            ];
            if !(clipped[2] > clipped[0] && clipped[3] > clipped[1]) {
                problems.push(Problem {
                    file: xml_name.clone(),
                    place,
                    what: format!(
                        "invalid box [xmin {}, ymin {}, xmax {}, ymax {}] in a {w}x{h} image; box skipped",
                        raw[0], raw[1], raw[2], raw[3]
                    ),
                });
                continue;
            }
            if clipped != raw {
                problems.push(Problem {
                    file: xml_name.clone(),
                    place,
                    what: format!(
                        "box [{}, {}, {}, {}] clipped to [0, {}] x [0, {}]",
                        raw[0],
                        raw[1],
                        raw[2],
                        raw[3],
                        w - 1.0,
                        h - 1.0
                    ),
                });
            }
            objects.push(GroundTruth {
                bbox: clipped.map(|v| v as f32),
                class,
                difficult: obj.difficult,
                crowd: false,
            });
        }
        Ok(Some(Record {
            image_path,
            id: annotation.id.unwrap_or(-1),
            width: w as u32,
            height: h as u32,
            objects,
            polygons: Vec::new(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::fs;

    fn xml(size: &str, objects: &[(&str, [f64; 4], Option<&str>)]) -> String {
        let mut s = format!("<annotation>\n<filename>x.jpg</filename>\n{size}\n");
        for (name, b, difficult) in objects {
            s += &format!(
                "<object>\n<name>{name}</name>\n{}<bndbox><xmin>{}</xmin><ymin>{}</ymin><xmax>{}</xmax><ymax>{}</ymax></bndbox>\n</object>\n",
                difficult.map(|d| format!("<difficult>{d}</difficult>")).unwrap_or_default(),
                b[0], b[1], b[2], b[3]
            );
        }
        s + "</annotation>\n"
    }

    /// A real photo kept in the repository (tests/data/README.md says where from).
    fn photo(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/data/photos")
            .join(name)
    }

    const SIZE: &str = "<size><width>100</width><height>50</height><depth>3</depth></size>";

    /// A VOC folder with `samples` (image name, xml text or None for a missing xml).
    fn dataset(list: &str, files: &[(&str, &str)]) -> (tempfile::TempDir, VocDataSet) {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in files {
            let path = dir.path().join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, content).unwrap();
        }
        fs::write(dir.path().join("trainval.txt"), list).unwrap();
        fs::write(dir.path().join("label_list.txt"), "dog\ncat\n\n").unwrap();
        let config = VocDataSet {
            dataset_dir: dir.path().to_path_buf(),
            anno_path: "trainval.txt".into(),
            label_list: "label_list.txt".into(),
            use_default_label: false,
            with_background: false,
        };
        (dir, config)
    }

    #[test]
    fn records_follow_the_list_with_labels_clipping_and_difficult() {
        let a = xml(
            SIZE,
            &[
                ("cat", [-3.0, 2.0, 120.0, 50.0], Some("1")),
                ("dog", [10.0, 10.0, 20.0, 30.0], None),
            ],
        );
        let b = xml(SIZE, &[("dog", [1.0, 1.0, 2.0, 2.0], Some("0"))]);
        let list = "J/a.jpg A/a.xml extra\nJ/b.jpg A/b.xml\n";
        let (_dir, config) = dataset(
            list,
            &[
                ("J/a.jpg", ""),
                ("A/a.xml", &a),
                ("J/b.jpg", ""),
                ("A/b.xml", &b),
            ],
        );
        let ds = config.load().unwrap();
        assert_eq!(ds.class_names, ["dog", "cat"]);
        assert_eq!(ds.records.len(), 2);
        let r = &ds.records[0];
        assert_eq!((r.id, r.width, r.height), (0, 100, 50));
        assert_eq!(r.objects[0].bbox, [0.0, 2.0, 99.0, 49.0]);
        assert_eq!(r.objects[0].class, 1);
        assert!(r.objects[0].difficult);
        assert!(!r.objects[1].difficult);
        assert_eq!(ds.records[1].id, 1);
        assert_eq!(ds.problems.len(), 1);
        assert_eq!(ds.problems[0].place, "line 4, object 1");
        assert!(ds.problems[0].what.contains("clipped"));
    }

    #[test]
    fn default_labels_and_background() {
        let a = xml(SIZE, &[("person", [1.0, 1.0, 5.0, 5.0], None)]);
        let (_dir, mut config) = dataset("a.jpg a.xml", &[("a.jpg", ""), ("a.xml", &a)]);
        config.use_default_label = true;
        config.with_background = true;
        let ds = config.load().unwrap();
        assert_eq!(ds.class_names.len(), 20);
        assert_eq!(ds.records[0].objects[0].class, 15);
    }

    #[test]
    fn missing_files_empty_xml_bad_lines_and_invalid_boxes_are_problems() {
        let empty = xml(SIZE, &[]);
        let bad_box = xml(SIZE, &[("dog", [50.0, 1.0, 40.0, 5.0], None)]);
        let list = "gone.jpg a.xml\nb.jpg gone.xml\nonetoken\n\nc.jpg c.xml\nd.jpg d.xml\n";
        let files = [
            ("b.jpg", ""),
            ("c.jpg", ""),
            ("c.xml", empty.as_str()),
            ("d.jpg", ""),
            ("d.xml", bad_box.as_str()),
        ];
        let (_dir, config) = dataset(list, &files);
        let ds = config.load().unwrap();
        let found: Vec<(String, &str)> = ds
            .problems
            .iter()
            .map(|p| {
                (
                    Path::new(&p.file)
                        .file_name()
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                    p.place.as_str(),
                )
            })
            .collect();
        assert_eq!(found.len(), 5);
        assert_eq!(found[0].0, "gone.jpg");
        assert!(found[0].1.ends_with("trainval.txt line 1"));
        assert_eq!(found[1].0, "gone.xml");
        assert_eq!(found[2], ("trainval.txt".into(), "line 3"));
        assert_eq!(found[3].0, "c.xml");
        assert_eq!(found[4], ("d.xml".into(), "line 4, object 1"));
        // An XML whose boxes are all invalid still gives a record, with no boxes (as Paddle).
        assert_eq!(ds.records.len(), 1);
        assert!(ds.records[0].objects.is_empty());
    }

    #[test]
    fn unknown_class_is_an_error_naming_file_and_name() {
        let a = xml(
            SIZE,
            &[
                ("dog", [1.0, 1.0, 5.0, 5.0], None),
                ("zebra", [1.0, 1.0, 5.0, 5.0], None),
            ],
        );
        let (_dir, config) = dataset("a.jpg a.xml", &[("a.jpg", ""), ("a.xml", &a)]);
        let err = config.load().unwrap_err().to_string();
        assert!(err.contains("a.xml (line 8, object 2)"), "{err}");
        assert!(err.contains("\"zebra\""), "{err}");
    }

    #[test]
    fn collecting_errors_finds_every_broken_sample() {
        let good = xml(SIZE, &[("dog", [1.0, 1.0, 5.0, 5.0], None)]);
        let zebra = xml(SIZE, &[("zebra", [1.0, 1.0, 5.0, 5.0], None)]);
        let list = "a.jpg a.xml\nb.jpg b.xml\nc.jpg c.xml\n";
        let files = [
            ("a.jpg", ""),
            ("a.xml", "<annotation>"),
            ("b.jpg", ""),
            ("b.xml", zebra.as_str()),
            ("c.jpg", ""),
            ("c.xml", good.as_str()),
        ];
        let (_dir, config) = dataset(list, &files);
        assert!(config.load().is_err());
        let (ds, errors) = config.load_collecting_errors().unwrap();
        assert_eq!(ds.records.len(), 1);
        assert_eq!(ds.records[0].id, 0);
        assert_eq!(errors.len(), 2);
        assert!(errors[0].file.ends_with("a.xml") && errors[0].what.contains("invalid XML"));
        assert_eq!(errors[1].place, "line 4, object 1");
    }

    #[test]
    fn missing_size_reads_the_image_header() {
        let a = xml(
            "<size><width>0</width><height>0</height></size>",
            &[("orange", [1.0, 1.0, 5000.0, 5.0], None)],
        );
        let dir = tempfile::tempdir().unwrap();
        let image = photo("orange_71.jpg");
        let (w, _) = image::image_dimensions(&image).unwrap();
        fs::write(dir.path().join("a.xml"), a).unwrap();
        fs::write(
            dir.path().join("list.txt"),
            format!("{} a.xml\n", image.display()),
        )
        .unwrap();
        let config = VocDataSet {
            dataset_dir: dir.path().to_path_buf(),
            anno_path: "list.txt".into(),
            label_list: "unused".into(),
            use_default_label: false,
            with_background: false,
        };
        let config = VocDataSet {
            use_default_label: true,
            ..config
        };
        let err = config.load().unwrap_err().to_string();
        assert!(err.contains("\"orange\""), "{err}");
        fs::write(dir.path().join("labels.txt"), "orange").unwrap();
        let config = VocDataSet {
            use_default_label: false,
            label_list: "labels.txt".into(),
            ..config
        };
        let ds = config.load().unwrap();
        assert_eq!(ds.records[0].width, w);
        assert_eq!(ds.records[0].objects[0].bbox[2], (w - 1) as f32);
    }

    #[test]
    fn malformed_xml_and_numbers_name_file_and_line() {
        let path = Path::new("a.xml");
        let err = parse_annotation(path, "<annotation>\n<object>\n</annotation>").unwrap_err();
        assert!(err.to_string().starts_with("a.xml (line 3)"), "{err}");
        let nan = xml(SIZE, &[("dog", [f64::NAN, 1.0, 5.0, 5.0], None)]);
        let err = parse_annotation(path, &nan).unwrap_err().to_string();
        assert!(
            err.contains("line 6") && err.contains("<xmin> is \"NaN\""),
            "{err}"
        );
        let err = read_text(Path::new("/nonexistent/list.txt")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/list.txt"));
    }

    #[test]
    fn non_utf8_text_names_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("list.txt");
        fs::write(&path, b"a.jpg a.xml\nb\xff.jpg b.xml\n").unwrap();
        let err = read_text(&path).unwrap_err().to_string();
        assert!(err.contains("(line 2): text is not valid UTF-8"), "{err}");
    }

    /// Each object's line used to be counted from the start of the file:
    /// 32,000 objects took 10 s and 50,000 would take minutes.
    #[test]
    fn many_objects_read_in_linear_time() {
        let objects = vec![("dog", [1.0, 2.0, 3.0, 4.0], None); 50_000];
        let text = xml(SIZE, &objects);
        let started = std::time::Instant::now();
        let annotation = parse_annotation(Path::new("a.xml"), &text).unwrap();
        let elapsed = started.elapsed();
        assert_eq!(annotation.objects.len(), 50_000);
        // Four lines per object after three of header.
        assert_eq!(annotation.objects[0].line, 4);
        assert_eq!(annotation.objects[49_999].line, 4 + 4 * 49_999);
        assert!(elapsed.as_secs() < 20, "50,000 objects took {elapsed:?}");
    }

    #[test]
    fn line_counter_counts_forward_and_restarts_backward() {
        let text = "a\nb\n\nc";
        let mut lines = LineCounter::new(text);
        assert_eq!(lines.line_at(0), 1);
        assert_eq!(lines.line_at(2), 2);
        assert_eq!(lines.line_at(5), 4);
        assert_eq!(lines.line_at(1), 1);
    }

    /// roxmltree builds its tree without recursion and nothing here walks it
    /// recursively, so a deeply nested file is read, not a stack overflow.
    #[test]
    fn deep_nesting_does_not_overflow_the_stack() {
        let depth = 200_000;
        let text = format!(
            "<annotation>{}{}</annotation>",
            "<a>".repeat(depth),
            "</a>".repeat(depth)
        );
        let annotation = parse_annotation(Path::new("a.xml"), &text).unwrap();
        assert!(annotation.objects.is_empty());
    }

    proptest! {
        /// Arbitrary, possibly broken annotation documents give a value or an error, never a panic.
        #[test]
        fn arbitrary_xml_never_panics(
            parts in proptest::collection::vec(prop_oneof![
                Just("<annotation>".to_string()), Just("</annotation>".to_string()),
                Just("<object>".to_string()), Just("</object>".to_string()),
                Just("<bndbox>".to_string()), Just("</bndbox>".to_string()),
                Just("<size><width>3</width><height>0</height></size>".to_string()),
                Just("<name>dog</name>".to_string()), Just("<difficult>x</difficult>".to_string()),
                "<(xmin|ymin|xmax|ymax)>-?[0-9.eNa]{0,6}</(xmin|ymin|xmax|ymax)>",
                "[<>&;a-z ]{0,5}",
            ], 0..30)
        ) {
            let _ = parse_annotation(Path::new("f.xml"), &parts.concat());
        }
    }
}
