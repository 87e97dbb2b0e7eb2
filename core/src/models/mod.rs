//! YOLOv3 models with PaddleDetection's legacy parameter names. Each network is
//! described by a list of conv units (`conv_unit`) plus its wiring; the
//! parameter list, initialisation, forward and backward all follow from that
//! one description.

pub mod conv_unit;
pub mod darknet53;
pub mod init;
pub mod mobilenet_v1;
pub mod ssd;
pub mod yolov3;
pub mod yolov3_head;

pub use yolov3::{Backbone, SetParamError, Yolov3, Yolov3Spec};
