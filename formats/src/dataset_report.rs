//! What `dataset check` prints: counts, per-class boxes, sizes and every
//! problem a reader found, as text or as one JSON object.

use std::fmt::Write as _;

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use crate::dataset::{Dataset, Problem};

/// The widest the class-name column of the text report gets.
const CLASS_COLUMN_MAX: usize = 40;

/// Box counts per class, serialised as a JSON object in class order.
#[derive(Debug, Clone, PartialEq)]
pub struct PerClass(pub Vec<(String, usize)>);

impl Serialize for PerClass {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, count) in &self.0 {
            map.serialize_entry(name, count)?;
        }
        map.end()
    }
}

/// Smallest, median and largest of a list of values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    pub min: f32,
    pub median: f32,
    pub max: f32,
}

impl Spread {
    fn of(mut values: Vec<f32>) -> Option<Spread> {
        if values.is_empty() {
            return None;
        }
        values.sort_by(f32::total_cmp);
        Some(Spread {
            min: values[0],
            median: values[values.len() / 2],
            max: values[values.len() - 1],
        })
    }
}

/// Boxes by COCO area range: small < 32^2 <= medium < 96^2 <= large.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct AreaBuckets {
    pub small: usize,
    pub medium: usize,
    pub large: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DatasetReport {
    /// "TrainDataset", "EvalDataset", or the annotation file.
    pub name: String,
    pub images: usize,
    pub boxes: usize,
    pub per_class: PerClass,
    pub empty_images: usize,
    pub difficult_boxes: usize,
    pub crowd_boxes: usize,
    pub image_width: Option<Spread>,
    pub image_height: Option<Spread>,
    pub box_width: Option<Spread>,
    pub box_height: Option<Spread>,
    pub box_area: AreaBuckets,
    /// Errors that stopped a sample (training would refuse this dataset).
    pub errors: usize,
    /// Errors first, then every skipped, clipped or missing item.
    pub problems: Vec<Problem>,
}

impl DatasetReport {
    /// `first_class` is the index of the first name in `class_names` (1 when
    /// the reader reserved a background class).
    pub fn new(
        name: &str,
        dataset: &Dataset,
        first_class: u32,
        errors: Vec<Problem>,
    ) -> DatasetReport {
        let mut per_class: Vec<(String, usize)> =
            dataset.class_names.iter().map(|n| (n.clone(), 0)).collect();
        let (mut boxes, mut difficult, mut crowd) = (0, 0, 0);
        let (mut box_w, mut box_h) = (Vec::new(), Vec::new());
        let mut area = AreaBuckets::default();
        for record in &dataset.records {
            for o in &record.objects {
                boxes += 1;
                difficult += o.difficult as usize;
                crowd += o.crowd as usize;
                if let Some(entry) = per_class.get_mut(o.class.wrapping_sub(first_class) as usize) {
                    entry.1 += 1;
                }
                let (w, h) = (o.bbox[2] - o.bbox[0], o.bbox[3] - o.bbox[1]);
                box_w.push(w);
                box_h.push(h);
                match w * h {
                    a if a < 32.0 * 32.0 => area.small += 1,
                    a if a < 96.0 * 96.0 => area.medium += 1,
                    _ => area.large += 1,
                }
            }
        }
        let records = &dataset.records;
        let error_count = errors.len();
        let mut problems = errors;
        problems.extend(dataset.problems.iter().cloned());
        DatasetReport {
            name: name.to_string(),
            images: records.len(),
            boxes,
            per_class: PerClass(per_class),
            empty_images: records.iter().filter(|r| r.objects.is_empty()).count(),
            difficult_boxes: difficult,
            crowd_boxes: crowd,
            image_width: Spread::of(records.iter().map(|r| r.width as f32).collect()),
            image_height: Spread::of(records.iter().map(|r| r.height as f32).collect()),
            box_width: Spread::of(box_w),
            box_height: Spread::of(box_h),
            box_area: area,
            errors: error_count,
            problems,
        }
    }

    /// A human-readable summary followed by every problem, one per line.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let spread = |v: &Option<Spread>| match v {
            Some(v) => format!("{} / {} / {}", v.min, v.median, v.max),
            None => "-".into(),
        };
        writeln!(s, "{}", self.name).unwrap();
        writeln!(
            s,
            "  images: {} ({} without boxes)",
            self.images, self.empty_images
        )
        .unwrap();
        writeln!(
            s,
            "  boxes: {} ({} difficult, {} crowd)",
            self.boxes, self.difficult_boxes, self.crowd_boxes
        )
        .unwrap();
        // Padded by hand: a `{:width$}` width over 65535 panics, and a
        // name longer than the column overflows it rather than widening it.
        let width = self
            .per_class
            .0
            .iter()
            .map(|(n, _)| n.chars().count())
            .max()
            .unwrap_or(0)
            .min(CLASS_COLUMN_MAX);
        for (name, count) in &self.per_class.0 {
            let padding = width.saturating_sub(name.chars().count());
            writeln!(s, "    {name}{:padding$}  {count}", "").unwrap();
        }
        writeln!(
            s,
            "  image width  min/median/max: {}",
            spread(&self.image_width)
        )
        .unwrap();
        writeln!(
            s,
            "  image height min/median/max: {}",
            spread(&self.image_height)
        )
        .unwrap();
        writeln!(
            s,
            "  box width    min/median/max: {}",
            spread(&self.box_width)
        )
        .unwrap();
        writeln!(
            s,
            "  box height   min/median/max: {}",
            spread(&self.box_height)
        )
        .unwrap();
        let a = self.box_area;
        writeln!(
            s,
            "  box area: {} small (< 32^2), {} medium, {} large (>= 96^2)",
            a.small, a.medium, a.large
        )
        .unwrap();
        writeln!(
            s,
            "  problems: {} ({} errors)",
            self.problems.len(),
            self.errors
        )
        .unwrap();
        for p in &self.problems {
            // A problem of the whole file has no place to name.
            let place = if p.place.is_empty() {
                String::new()
            } else {
                format!(" ({})", p.place)
            };
            writeln!(s, "    {}{place}: {}", p.file, p.what).unwrap();
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{GroundTruth, Record};

    fn record(width: u32, boxes: &[([f32; 4], u32)]) -> Record {
        Record {
            image_path: "a.jpg".into(),
            id: 0,
            width,
            height: 100,
            objects: boxes
                .iter()
                .map(|&(bbox, class)| GroundTruth {
                    bbox,
                    class,
                    difficult: class == 2,
                    crowd: false,
                })
                .collect(),
            polygons: Vec::new(),
        }
    }

    #[test]
    fn counts_classes_sizes_and_problems() {
        let problem = Problem {
            file: "a.xml".into(),
            place: "line 3".into(),
            what: "clipped".into(),
        };
        let dataset = Dataset {
            class_names: vec!["cat".into(), "dog".into()],
            records: vec![
                record(
                    200,
                    &[([0.0, 0.0, 10.0, 10.0], 1), ([0.0, 0.0, 100.0, 50.0], 2)],
                ),
                record(50, &[]),
                record(120, &[([5.0, 5.0, 205.0, 105.0], 2)]),
            ],
            problems: vec![problem.clone()],
        };
        let error = Problem {
            file: "b.xml".into(),
            place: "line 1".into(),
            what: "error: bad".into(),
        };
        let report = DatasetReport::new("train", &dataset, 1, vec![error.clone()]);
        assert_eq!(
            (report.images, report.boxes, report.empty_images),
            (3, 3, 1)
        );
        assert_eq!(
            report.per_class,
            PerClass(vec![("cat".into(), 1), ("dog".into(), 2)])
        );
        assert_eq!(report.difficult_boxes, 2);
        assert_eq!(
            report.box_area,
            AreaBuckets {
                small: 1,
                medium: 1,
                large: 1
            }
        );
        assert_eq!(
            report.image_width,
            Some(Spread {
                min: 50.0,
                median: 120.0,
                max: 200.0
            })
        );
        assert_eq!(report.problems, [error, problem]);
        assert_eq!(report.errors, 1);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["per_class"]["dog"], 2);
        assert_eq!(json["problems"][1]["where"], "line 3");
        let text = report.to_text();
        assert!(text.contains("images: 3 (1 without boxes)"), "{text}");
        assert!(text.contains("b.xml (line 1): error: bad"), "{text}");
        assert!(text.contains("    cat  1\n    dog  2\n"), "{text}");
    }

    proptest::proptest! {
        /// Any class name prints (a `{:width$}` of 65,536 or more panicked).
        #[test]
        fn any_class_name_prints(length in 0usize..100_000, c in proptest::char::any()) {
            let name = c.to_string().repeat(length);
            let dataset = Dataset {
                class_names: vec![name.clone(), "b".into()],
                records: vec![record(10, &[([0.0, 0.0, 1.0, 1.0], 0)])],
                problems: Vec::new(),
            };
            let text = DatasetReport::new("train", &dataset, 0, Vec::new()).to_text();
            let line_start = format!("    {name}");
            proptest::prop_assert!(text.contains(&line_start));
        }
    }

    #[test]
    fn a_problem_without_place_prints_no_brackets() {
        let whole_file = Problem {
            file: "label_list.txt".into(),
            place: String::new(),
            what: "error: empty".into(),
        };
        let dataset = Dataset {
            class_names: vec!["cat".into()],
            records: vec![],
            problems: vec![],
        };
        let text = DatasetReport::new("train", &dataset, 1, vec![whole_file]).to_text();
        assert!(
            text.contains("    label_list.txt: error: empty\n"),
            "{text}"
        );
    }
}
