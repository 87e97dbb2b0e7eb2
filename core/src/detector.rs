//! A detector as the trainer, evaluation and `infer` see it, whatever its
//! architecture: a [`ConvNet`] holding every parameter (what the loading
//! rules, snapshots, freezing and the optimizer work on), one training pass
//! (forward, the architecture's loss, backward) and detection.
//!
//! [`ModelSpec`] names an architecture's structural description; `build`
//! turns it into a detector on a backend.

use crate::backend::Backend;
use crate::models::cascade_rcnn::CascadeRcnnSpec;
use crate::models::faster_rcnn::FasterRcnnSpec;
use crate::models::mask_rcnn::MaskRcnnSpec;
use crate::models::retinanet::RetinaNetSpec;
use crate::models::ssd::{SsdBackbone, SsdSpec};
use crate::models::{Backbone, ConvNet, Yolov3Spec};
use crate::params::ParamSpec;
use crate::tensor::Tensor;
use crate::yolo::{Detection, GroundTruth};
use pulsefocus_formats::rle::Rle;

/// The most loss terms an architecture reports.
pub const MAX_LOSS_TERMS: usize = 9;

/// A step's loss term by term, under the names its architecture gives them
/// (YOLOv3: `xy`, `wh`, `obj`, `cls`; SSD: `loc`, `conf`). The total is
/// their sum.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Losses {
    names: &'static [&'static str],
    values: [f32; MAX_LOSS_TERMS],
}

impl Losses {
    /// `values[i]` is the term `names[i]`.
    pub fn new(names: &'static [&'static str], values: &[f32]) -> Self {
        assert!(
            names.len() == values.len() && names.len() <= MAX_LOSS_TERMS,
            "one value per named loss term, at most {MAX_LOSS_TERMS}"
        );
        let mut all = [0.0; MAX_LOSS_TERMS];
        all[..values.len()].copy_from_slice(values);
        Losses { names, values: all }
    }

    pub fn total(&self) -> f32 {
        self.values().iter().sum()
    }

    pub fn names(&self) -> &'static [&'static str] {
        self.names
    }

    pub fn values(&self) -> &[f32] {
        &self.values[..self.names.len()]
    }

    /// `(name, value)` per term, in the architecture's order.
    pub fn terms(&self) -> impl Iterator<Item = (&'static str, f32)> + '_ {
        self.names
            .iter()
            .copied()
            .zip(self.values().iter().copied())
    }
}

/// What every architecture offers the trainer and the predictor.
pub trait Detector<B: Backend>: Send {
    /// The conv units and their parameters, backbone first.
    fn net(&self) -> &ConvNet<B>;
    fn net_mut(&mut self) -> &mut ConvNet<B>;

    /// The names of the loss terms `train_pass` reports.
    fn loss_names(&self) -> &'static [&'static str];

    /// Sizes every buffer for `batch` images of `size` x `size` (one pass
    /// on zeros; running statistics are kept) and returns the bytes held.
    fn plan(&mut self, batch: usize, size: usize) -> usize;

    /// Forward on `image` (`[N, 3, H, W]`, normalised) in the current mode,
    /// the architecture's loss against `truth` (mean over the batch as
    /// PaddleDetection normalises it), and backward: every trained
    /// parameter's gradient is overwritten. Returns the loss.
    ///
    /// `im_info` is Paddle's per image `[resized height, resized width,
    /// scale]`: where each picture lies in the (padded) input and how much it
    /// was scaled. Architectures whose reader resizes every image to the
    /// input's size (YOLOv3, SSD) do not read it.
    fn train_pass(
        &mut self,
        image: &Tensor<B>,
        truth: &GroundTruth,
        im_info: &[[f32; 3]],
    ) -> Losses;

    /// Detections per image in the current mode: boxes in each image's own
    /// pixels (`original_sizes` are `[width, height]`), classes numbered
    /// from 0 over the object classes (an SSD's background is not one),
    /// grouped by class, best first within a class.
    /// `im_info` as for `train_pass`.
    fn detect(
        &mut self,
        image: &Tensor<B>,
        original_sizes: &[[u32; 2]],
        im_info: &[[f32; 3]],
    ) -> Vec<Vec<Detection>>;

    /// Whether PaddleDetection scores this architecture's boxes as
    /// normalised (`is_bbox_normalized`): widths without the pixel `+1`.
    fn boxes_normalized(&self) -> bool;

    /// The masks of the last `detect`: per image, one per detection in the
    /// same order, in the image's own pixels. None for an architecture
    /// without a mask head.
    fn masks(&self) -> Option<&[Vec<Rle>]> {
        None
    }
}

/// An architecture's structural description.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelSpec {
    Yolov3(Yolov3Spec),
    Ssd(SsdSpec),
    FasterRcnn(Box<FasterRcnnSpec>),
    MaskRcnn(Box<MaskRcnnSpec>),
    /// Cascade R-CNN, and Cascade Mask R-CNN when it has a mask head.
    CascadeRcnn(Box<CascadeRcnnSpec>),
    RetinaNet(Box<RetinaNetSpec>),
}

impl ModelSpec {
    /// Names and shapes in model order (what the loading rules and `plan` read).
    pub fn param_specs(&self) -> Vec<ParamSpec> {
        match self {
            ModelSpec::Yolov3(s) => s.param_specs(),
            ModelSpec::Ssd(s) => s.param_specs(),
            ModelSpec::FasterRcnn(s) => s.params().into_iter().map(|p| p.spec).collect(),
            ModelSpec::MaskRcnn(s) => s.param_specs(),
            ModelSpec::CascadeRcnn(s) => s.param_specs(),
            ModelSpec::RetinaNet(s) => s.param_specs(),
        }
    }

    /// Conv units of the backbone (they come first): freezing the backbone
    /// freezes exactly these.
    pub fn backbone_unit_count(&self) -> usize {
        match self {
            ModelSpec::Yolov3(s) => s.backbone_unit_count(),
            ModelSpec::Ssd(s) => s.backbone_units().len(),
            ModelSpec::FasterRcnn(s) => s.backbone.units().len(),
            ModelSpec::MaskRcnn(s) => s.faster_rcnn.backbone.units().len(),
            ModelSpec::CascadeRcnn(s) => s.faster_rcnn.backbone.units().len(),
            ModelSpec::RetinaNet(s) => s.backbone.units().len(),
        }
    }

    /// What the model is, for reports: `YOLOv3 with MobileNet backbone`.
    pub fn describe(&self) -> String {
        let (architecture, backbone) = match self {
            ModelSpec::Yolov3(s) => (
                "YOLOv3",
                match s.backbone {
                    Backbone::MobileNetV1(_) => "MobileNet",
                    Backbone::DarkNet53(_) => "DarkNet",
                },
            ),
            ModelSpec::Ssd(s) => (
                "SSD",
                match s.backbone {
                    SsdBackbone::MobileNetV1(_) => "MobileNet",
                    SsdBackbone::Vgg(_) => "VGG",
                },
            ),
            ModelSpec::FasterRcnn(s) => ("Faster R-CNN", resnet_name(s)),
            ModelSpec::MaskRcnn(s) => ("Mask R-CNN", resnet_name(&s.faster_rcnn)),
            ModelSpec::CascadeRcnn(s) => (
                match s.mask {
                    None => "Cascade R-CNN",
                    Some(_) => "Cascade Mask R-CNN",
                },
                "ResNet-FPN",
            ),
            ModelSpec::RetinaNet(_) => ("RetinaNet", "ResNet-FPN"),
        };
        format!("{architecture} with {backbone} backbone")
    }

    /// The object classes detections are numbered in (SSD's `num_classes`
    /// counts the background as well).
    pub fn foreground_classes(&self) -> usize {
        match self {
            ModelSpec::Yolov3(s) => s.num_classes,
            ModelSpec::Ssd(s) => s.num_classes - 1,
            ModelSpec::FasterRcnn(s) => s.num_classes - 1,
            ModelSpec::MaskRcnn(s) => s.faster_rcnn.num_classes - 1,
            ModelSpec::CascadeRcnn(s) => s.num_classes() - 1,
            ModelSpec::RetinaNet(s) => s.num_classes - 1,
        }
    }
}

/// An R-CNN's backbone as reports name it: `ResNet` (C4) or `ResNet-FPN`.
fn resnet_name(spec: &FasterRcnnSpec) -> &'static str {
    match spec.fpn {
        None => "ResNet",
        Some(_) => "ResNet-FPN",
    }
}
