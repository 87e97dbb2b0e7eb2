//! YOLOv3, SSD, Faster R-CNN, Mask R-CNN, Cascade R-CNN and RetinaNet models with
//! PaddleDetection's legacy parameter names. Each network is described by a
//! list of conv units (`conv_unit`), fully connected layers (`fc`) and its
//! wiring; the parameter list, initialisation, forward and backward all
//! follow from that one description.

pub mod bbox_head;
mod cascade_heads;
pub mod cascade_rcnn;
#[cfg(test)]
mod cascade_rcnn_parity;
pub mod chain;
pub mod conv_unit;
pub mod darknet53;
pub mod faster_rcnn;
pub mod faster_rcnn_detector;
#[cfg(test)]
mod faster_rcnn_parity;
mod faster_rcnn_rois;
pub mod fc;
pub mod fpn;
pub mod init;
mod mask_branch;
pub mod mask_head;
pub mod mask_rcnn;
#[cfg(test)]
mod mask_rcnn_parity;
pub mod mobilenet_v1;
pub mod network;
pub mod resnet;
pub mod retina_head;
pub mod retinanet;
pub mod retinanet_detector;
#[cfg(test)]
mod retinanet_parity;
pub mod rpn_head;
pub mod ssd;
pub mod ssd_detector;
pub mod vgg;
pub mod yolov3;
pub mod yolov3_detector;
pub mod yolov3_head;

pub use cascade_heads::{CASCADE_LOSS_NAMES, CASCADE_MASK_LOSS_NAMES};
pub use cascade_rcnn::CascadeRcnnSpec;
pub use faster_rcnn::FasterRcnnSpec;
pub use faster_rcnn_detector::FasterRcnnDetector;
pub use mask_rcnn::MaskRcnnSpec;
pub use network::{ConvNet, ParamSlot, SetParamError};
pub use retinanet::RetinaNetSpec;
pub use retinanet_detector::RetinaNetDetector;
pub use ssd_detector::SsdDetector;
pub use yolov3::{Backbone, Yolov3, Yolov3Spec};
pub use yolov3_detector::Yolov3Detector;
