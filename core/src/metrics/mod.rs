//! Detection metrics: PaddleDetection's VOC mAP (`voc`) and a port of
//! pycocotools' COCOeval for boxes (`coco`).

pub mod voc;

pub use voc::{ApType, DetectionMap};
