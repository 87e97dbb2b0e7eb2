//! YOLOv3 head maths on plain `f32` slices with explicit shapes: the training
//! loss (`loss`), the box decoding used at inference (`decode`) and multiclass
//! NMS (`nms`). Each follows Paddle's operator of the same name, so that a model
//! fine-tuned here behaves as it would in PaddleDetection.

pub mod decode;
pub mod loss;
pub mod nms;

pub use decode::{detect, yolo_box, DecodeConfig, DecodedBoxes};
pub use loss::{yolov3_loss, GroundTruth, Head, LossTerms, YoloLoss};
pub use nms::{greedy_nms, multiclass_nms, multiclass_nms_class_boxes, Detection, NmsConfig};

/// The YOLOv3 head settings shared by loss and decode.
#[derive(Debug, Clone, PartialEq)]
pub struct YoloConfig {
    /// All anchors as (width, height) in input pixels.
    pub anchors: Vec<[f32; 2]>,
    /// For each output level, the indices into `anchors` that level predicts.
    pub anchor_masks: Vec<Vec<usize>>,
    pub num_classes: usize,
    /// A prediction whose decoded box overlaps any ground truth by more than
    /// this is neither positive nor negative for objectness.
    pub ignore_thresh: f32,
    pub label_smooth: bool,
    /// Input pixels per grid cell at each level (32, 16, 8).
    pub downsample_ratios: Vec<usize>,
    pub scale_x_y: f32,
}

impl YoloConfig {
    /// PaddleDetection's yolov3_mobilenet_v1_voc / yolov3_darknet_voc head.
    pub fn yolov3(num_classes: usize) -> Self {
        YoloConfig {
            anchors: vec![
                [10.0, 13.0],
                [16.0, 30.0],
                [33.0, 23.0],
                [30.0, 61.0],
                [62.0, 45.0],
                [59.0, 119.0],
                [116.0, 90.0],
                [156.0, 198.0],
                [373.0, 326.0],
            ],
            anchor_masks: vec![vec![6, 7, 8], vec![3, 4, 5], vec![0, 1, 2]],
            num_classes,
            ignore_thresh: 0.7,
            label_smooth: false,
            downsample_ratios: vec![32, 16, 8],
            scale_x_y: 1.0,
        }
    }

    /// Channels of level `level`'s output: `[tx, ty, tw, th, obj, cls...]` per anchor.
    pub fn head_channels(&self, level: usize) -> usize {
        self.anchor_masks[level].len() * (5 + self.num_classes)
    }
}

pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// A box as centre and size, the form Paddle's YOLO operators compare boxes in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct CenterBox {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

/// Overlap of two 1-D segments given by centre and length, 0 when apart.
fn overlap_1d(c1: f32, w1: f32, c2: f32, w2: f32) -> f32 {
    let left = (c1 - w1 / 2.0).max(c2 - w2 / 2.0);
    let right = (c1 + w1 / 2.0).min(c2 + w2 / 2.0);
    (right - left).max(0.0)
}

/// Intersection over union of two centre-size boxes (Paddle's `CalcBoxIoU`).
pub(crate) fn center_iou(a: CenterBox, b: CenterBox) -> f32 {
    let inter = overlap_1d(a.x, a.w, b.x, b.w) * overlap_1d(a.y, a.h, b.y, b.h);
    inter / (a.w * a.h + b.w * b.h - inter)
}
