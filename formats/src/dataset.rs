//! The record every dataset reader (COCO, VOC) produces and the training input
//! pipeline consumes: one image and its ground-truth boxes.

use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Full path of the image file.
    pub image_path: PathBuf,
    /// COCO image id, or the running index for VOC.
    pub id: i64,
    pub width: u32,
    pub height: u32,
    pub objects: Vec<GroundTruth>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroundTruth {
    /// Pixel corners `[x1, y1, x2, y2]`, already clipped to the image.
    pub bbox: [f32; 4],
    /// Class index (position in the label list plus `with_background`).
    pub class: u32,
    /// VOC `<difficult>`: trained on, ignored by the VOC metric by default.
    pub difficult: bool,
    /// COCO `iscrowd`: kept only when `load_crowd` is set; never a positive for the metric.
    pub crowd: bool,
}

/// Something a reader skipped, clipped or found wrong, with where it is, so
/// `dataset check` can list it and training can print it as a warning.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub file: String,
    /// "annotation id 17", "line 4", "object 2", ...
    #[serde(rename = "where")]
    pub place: String,
    pub what: String,
}

/// The records of one dataset plus what the reader had to say about them.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    pub class_names: Vec<String>,
    pub records: Vec<Record>,
    pub problems: Vec<Problem>,
}
