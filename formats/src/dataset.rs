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
    /// Per object of `objects`, its polygons `[x1, y1, x2, y2, ...]` in image
    /// pixels as the file has them (none for a crowd box), when the reader
    /// was asked for them (COCO `with_polygons`); else empty.
    pub polygons: Vec<Vec<Vec<f64>>>,
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

impl Problem {
    /// An error that stopped one sample, listed by `dataset check` with the rest.
    pub fn from_error(error: &crate::Error) -> Problem {
        Problem {
            file: error.file.display().to_string(),
            place: error.place.clone().unwrap_or_default(),
            what: format!("error: {}", error.message),
        }
    }
}

/// The records of one dataset plus what the reader had to say about them.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    pub class_names: Vec<String>,
    pub records: Vec<Record>,
    pub problems: Vec<Problem>,
}

/// A dataset as a config describes it: PaddleDetection's `COCODataSet` or
/// `VOCDataSet`. Training and `dataset check` both start from this.
#[derive(Debug, Clone, PartialEq)]
pub enum DatasetSource {
    Coco(crate::coco::CocoDataSet),
    Voc(crate::voc::VocDataSet),
}

impl DatasetSource {
    /// Index of the first named class: 1 when a background class is reserved.
    pub fn first_class(&self) -> u32 {
        match self {
            DatasetSource::Coco(coco) => coco.with_background as u32,
            DatasetSource::Voc(voc) => voc.with_background as u32,
        }
    }

    /// Reads the records as training does; a broken file stops it.
    pub fn load(&self) -> crate::Result<Dataset> {
        match self {
            DatasetSource::Coco(coco) => coco.load(),
            DatasetSource::Voc(voc) => voc.load(),
        }
    }

    /// Reads as much as can be read, turning every error into a listed
    /// problem (returned apart from the warnings, so a caller can tell them apart).
    pub fn load_collecting_errors(&self) -> (Dataset, Vec<Problem>) {
        let result = match self {
            DatasetSource::Coco(coco) => coco.load().map(|d| (d, Vec::new())),
            DatasetSource::Voc(voc) => voc.load_collecting_errors(),
        };
        result.unwrap_or_else(|e| (Dataset::default(), vec![Problem::from_error(&e)]))
    }
}
