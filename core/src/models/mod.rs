//! YOLOv3 models with PaddleDetection's legacy parameter names. Each network is
//! described by a list of conv units (`conv_unit`) plus its wiring; the
//! parameter list, initialisation, forward and backward all follow from that
//! one description.

pub mod conv_unit;
pub mod darknet53;
pub mod init;
pub mod mobilenet_v1;
pub mod network;
pub mod ssd;
pub mod ssd_detector;
pub mod vgg;
pub mod yolov3;
pub mod yolov3_detector;
pub mod yolov3_head;

pub use network::{ConvNet, ParamSlot, SetParamError};
pub use ssd_detector::SsdDetector;
pub use yolov3::{Backbone, Yolov3, Yolov3Spec};
pub use yolov3_detector::Yolov3Detector;
