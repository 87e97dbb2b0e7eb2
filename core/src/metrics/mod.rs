//! Detection metrics: PaddleDetection's VOC mAP (`voc`) and a port of
//! pycocotools' COCOeval for boxes (`coco`).

pub mod coco;
pub mod voc;

pub use coco::{evaluate_bbox, evaluate_segm, summary_lines, CocoEval, CocoEvalError};
pub use voc::{ApType, DetectionMap};
