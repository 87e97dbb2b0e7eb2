//! YOLOv3: a backbone (MobileNetV1 or DarkNet53) and the YOLOv3 head, with
//! PaddleDetection's legacy parameter names. `Yolov3Spec` is the structural
//! description everything else is derived from: the parameter list the
//! loading rules read, the model that trains, and the checkpoints it writes.

use super::conv_unit::{ConvUnitSpec, UnitParam};
use super::darknet53::DarkNet53Spec;
use super::mobilenet_v1::MobileNetV1Spec;
use super::yolov3_head::Yolov3HeadSpec;
use crate::params::ParamSpec;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Backbone {
    MobileNetV1(MobileNetV1Spec),
    DarkNet53(DarkNet53Spec),
}

impl Backbone {
    pub fn units(&self) -> Vec<ConvUnitSpec> {
        match self {
            Backbone::MobileNetV1(b) => b.units(),
            Backbone::DarkNet53(b) => b.units(),
        }
    }

    pub fn feature_channels(&self) -> [usize; 3] {
        match self {
            Backbone::MobileNetV1(b) => b.feature_channels(),
            Backbone::DarkNet53(b) => b.feature_channels(),
        }
    }
}

/// PaddleDetection's YOLOv3 anchors, in pixels at the training input size.
pub const DEFAULT_ANCHORS: [[f32; 2]; 9] = [
    [10.0, 13.0],
    [16.0, 30.0],
    [33.0, 23.0],
    [30.0, 61.0],
    [62.0, 45.0],
    [59.0, 119.0],
    [116.0, 90.0],
    [156.0, 198.0],
    [373.0, 326.0],
];

/// Anchor indices per level, level 0 (stride 32) first.
pub const DEFAULT_ANCHOR_MASKS: [[usize; 3]; 3] = [[6, 7, 8], [3, 4, 5], [0, 1, 2]];

/// Downsample ratio of each head level.
pub const LEVEL_STRIDES: [usize; 3] = [32, 16, 8];

#[derive(Debug, Clone, PartialEq)]
pub struct Yolov3Spec {
    pub backbone: Backbone,
    /// `channel` of the head's level 0 (512 in PaddleDetection).
    pub head_width: usize,
    pub num_classes: usize,
    pub anchors: Vec<[f32; 2]>,
    /// Three levels (strides 32, 16, 8), each a list of indices into `anchors`.
    pub anchor_masks: Vec<Vec<usize>>,
}

impl Yolov3Spec {
    fn with_backbone(backbone: Backbone, head_width: usize, num_classes: usize) -> Self {
        Yolov3Spec {
            backbone,
            head_width,
            num_classes,
            anchors: DEFAULT_ANCHORS.to_vec(),
            anchor_masks: DEFAULT_ANCHOR_MASKS.iter().map(|m| m.to_vec()).collect(),
        }
    }

    /// `yolov3_mobilenet_v1`: 241 parameter tensors.
    pub fn mobilenet_v1(num_classes: usize) -> Self {
        Self::with_backbone(
            Backbone::MobileNetV1(MobileNetV1Spec { scale: 1.0 }),
            512,
            num_classes,
        )
    }

    /// `yolov3_darknet`: 366 parameter tensors.
    pub fn darknet53(num_classes: usize) -> Self {
        Self::with_backbone(Backbone::DarkNet53(DarkNet53Spec), 512, num_classes)
    }

    /// The small model for tests and the demo: MobileNetV1 at a quarter width
    /// and a head a quarter as wide, with the same names as `mobilenet_v1`.
    pub fn small(num_classes: usize) -> Self {
        Self::with_backbone(
            Backbone::MobileNetV1(MobileNetV1Spec { scale: 0.25 }),
            128,
            num_classes,
        )
    }

    /// A built-in model by name: `yolov3_mobilenet_v1`, `yolov3_darknet`, `small`.
    pub fn by_name(name: &str, num_classes: usize) -> Option<Self> {
        match name {
            "yolov3_mobilenet_v1" => Some(Self::mobilenet_v1(num_classes)),
            "yolov3_darknet" => Some(Self::darknet53(num_classes)),
            "small" => Some(Self::small(num_classes)),
            _ => None,
        }
    }

    pub const BUILT_IN_NAMES: [&'static str; 3] =
        ["yolov3_mobilenet_v1", "yolov3_darknet", "small"];

    pub fn head(&self) -> Yolov3HeadSpec {
        let per_level = |l: usize| self.anchor_masks.get(l).map_or(0, |m| m.len());
        Yolov3HeadSpec {
            feature_channels: self.backbone.feature_channels(),
            width: self.head_width,
            num_classes: self.num_classes,
            anchors_per_level: [per_level(0), per_level(1), per_level(2)],
        }
    }

    /// Every conv unit in model order: backbone, then head.
    pub fn units(&self) -> Vec<ConvUnitSpec> {
        let mut units = self.backbone.units();
        units.extend(self.head().units());
        units
    }

    /// Every parameter with its role and decay override, in model order.
    pub fn params(&self) -> Vec<UnitParam> {
        self.units().iter().flat_map(|u| u.params()).collect()
    }

    /// Names and shapes in model order (what the loading rules and `plan` read).
    pub fn param_specs(&self) -> Vec<ParamSpec> {
        self.params().into_iter().map(|p| p.spec).collect()
    }

    /// Number of backbone units (they come first in `units()`); freezing the
    /// backbone freezes exactly these.
    pub fn backbone_unit_count(&self) -> usize {
        self.backbone.units().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find<'a>(specs: &'a [ParamSpec], name: &str) -> &'a ParamSpec {
        specs
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("{name} missing"))
    }

    #[test]
    fn mobilenet_v1_has_241_tensors_at_any_class_count() {
        for classes in [1, 20, 80] {
            let specs = Yolov3Spec::mobilenet_v1(classes).param_specs();
            assert_eq!(specs.len(), 241, "{classes} classes");
            let out = 3 * (classes + 5);
            assert_eq!(
                find(&specs, "yolo_output.0.conv.weights").shape,
                [out, 1024, 1, 1]
            );
            assert_eq!(find(&specs, "yolo_output.2.conv.bias").shape, [out]);
        }
        let specs = Yolov3Spec::mobilenet_v1(20).param_specs();
        assert_eq!(specs[0].name, "conv1_weights");
        assert_eq!(specs[0].shape, [32, 3, 3, 3]);
        assert_eq!(specs[4].name, "conv1_bn_variance");
        assert_eq!(find(&specs, "conv2_2_dw_weights").shape, [64, 1, 3, 3]);
        assert_eq!(find(&specs, "conv5_6_sep_weights").shape, [1024, 512, 1, 1]);
        assert_eq!(find(&specs, "conv6_sep_bn_mean").shape, [1024]);
        assert_eq!(
            find(&specs, "yolo_block.1.0.0.conv.weights").shape,
            [256, 768, 1, 1]
        );
        assert_eq!(
            find(&specs, "yolo_block.2.0.0.conv.weights").shape,
            [128, 384, 1, 1]
        );
        assert_eq!(find(&specs, "yolo_transition.1.bn.var").shape, [128]);
        assert_eq!(specs.last().unwrap().name, "yolo_output.2.conv.bias");
    }

    #[test]
    fn darknet53_has_366_tensors_at_any_class_count() {
        for classes in [1, 20, 80] {
            let specs = Yolov3Spec::darknet53(classes).param_specs();
            assert_eq!(specs.len(), 366, "{classes} classes");
            let out = 3 * (classes + 5);
            assert_eq!(
                find(&specs, "yolo_output.1.conv.weights").shape,
                [out, 512, 1, 1]
            );
        }
        let specs = Yolov3Spec::darknet53(80).param_specs();
        assert_eq!(specs[0].name, "yolo_input.conv.weights");
        assert_eq!(
            find(&specs, "yolo_input.downsample.conv.weights").shape,
            [64, 32, 3, 3]
        );
        assert_eq!(
            find(&specs, "stage.2.7.1.conv.weights").shape,
            [256, 128, 3, 3]
        );
        assert_eq!(
            find(&specs, "stage.3.downsample.conv.weights").shape,
            [1024, 512, 3, 3]
        );
        assert_eq!(find(&specs, "stage.4.3.0.bn.offset").shape, [512]);
        assert_eq!(
            find(&specs, "yolo_block.0.0.0.conv.weights").shape,
            [512, 1024, 1, 1]
        );
    }

    #[test]
    fn names_are_unique_and_small_keeps_the_names() {
        let full = Yolov3Spec::mobilenet_v1(20).param_specs();
        let small = Yolov3Spec::small(20).param_specs();
        let mut names: Vec<_> = full.iter().map(|p| p.name.clone()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 241);
        assert_eq!(
            full.iter().map(|p| &p.name).collect::<Vec<_>>(),
            small.iter().map(|p| &p.name).collect::<Vec<_>>()
        );
        let small_values: usize = small.iter().map(|p| p.numel()).sum();
        let full_values: usize = full.iter().map(|p| p.numel()).sum();
        assert!(small_values * 10 < full_values);
    }

    #[test]
    fn decay_overrides_follow_paddledetection() {
        let params = Yolov3Spec::mobilenet_v1(20).params();
        let decay = |name: &str| {
            params
                .iter()
                .find(|p| p.spec.name == name)
                .unwrap()
                .weight_decay
        };
        assert_eq!(decay("conv1_weights"), Some(0.0));
        assert_eq!(decay("conv1_bn_scale"), Some(0.0));
        assert_eq!(decay("yolo_block.0.0.0.conv.weights"), None);
        assert_eq!(decay("yolo_block.0.0.0.bn.offset"), Some(0.0));
        assert_eq!(decay("yolo_output.0.conv.weights"), None);
        assert_eq!(decay("yolo_output.0.conv.bias"), Some(0.0));
    }
}
