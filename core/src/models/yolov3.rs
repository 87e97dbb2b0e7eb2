//! YOLOv3: a backbone (MobileNetV1 or DarkNet53) and the YOLOv3 head, with
//! PaddleDetection's legacy parameter names. `Yolov3Spec` is the structural
//! description everything else is derived from: the parameter list the
//! loading rules read, the model that trains, and the checkpoints it writes.

use super::conv_unit::{ConvUnit, ConvUnitSpec, ParamRole, UnitParam};
use super::darknet53::DarkNet53Spec;
use super::init::Rng;
use super::mobilenet_v1::MobileNetV1Spec;
use super::param::Param;
use super::yolov3_head::Yolov3HeadSpec;
use crate::params::ParamSpec;
use pulsefocus_formats::{Checkpoint, RawTensor};

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

/// Why a value could not be set on a model parameter.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SetParamError {
    #[error("the model has no parameter named {0}")]
    Unknown(String),
    #[error("parameter {name} has {expected} values, got {got}")]
    Length {
        name: String,
        expected: usize,
        got: usize,
    },
}

/// A YOLOv3 model at run time: the spec and every conv unit with its
/// parameters, backbone units first, in model order.
#[derive(Debug, Clone)]
pub struct Yolov3 {
    pub spec: Yolov3Spec,
    pub units: Vec<ConvUnit>,
}

impl Yolov3 {
    /// Builds the model with PaddleDetection's initial values drawn from `seed`.
    pub fn new(spec: Yolov3Spec, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let units = spec
            .units()
            .into_iter()
            .map(|u| ConvUnit::new(u, &mut rng))
            .collect();
        Yolov3 { spec, units }
    }

    /// Every parameter in model order (the order of `Yolov3Spec::param_specs`).
    pub fn params(&self) -> impl Iterator<Item = &Param> {
        self.units.iter().flat_map(|u| u.params())
    }

    pub fn params_mut(&mut self) -> impl Iterator<Item = &mut Param> {
        self.units.iter_mut().flat_map(|u| u.params_mut())
    }

    pub fn param(&self, name: &str) -> Option<&Param> {
        self.params().find(|p| p.name == name)
    }

    /// Overwrites one parameter's values (row-major, as in the checkpoint).
    pub fn set_param(&mut self, name: &str, values: &[f32]) -> Result<(), SetParamError> {
        let param = self
            .params_mut()
            .find(|p| p.name == name)
            .ok_or_else(|| SetParamError::Unknown(name.to_string()))?;
        if param.value.len() != values.len() {
            return Err(SetParamError::Length {
                name: name.to_string(),
                expected: param.value.len(),
                got: values.len(),
            });
        }
        param.value.copy_from_slice(values);
        Ok(())
    }

    /// Every parameter as f32 under its legacy name, in model order, so a
    /// snapshot loads back into PaddleDetection.
    pub fn to_checkpoint(&self) -> Checkpoint {
        let mut checkpoint = Checkpoint::new();
        for p in self.params() {
            checkpoint.insert(
                p.name.clone(),
                RawTensor::from_f32(p.shape.clone(), &p.value),
            );
        }
        checkpoint
    }

    /// Freezes the backbone's units and/or every BN scale and offset (Paddle's
    /// `freeze_norm`); frozen parameters get no gradient and no update.
    pub fn set_frozen(&mut self, freeze_backbone: bool, freeze_norm: bool) {
        let backbone_units = self.spec.backbone_unit_count();
        for (i, unit) in self.units.iter_mut().enumerate() {
            for p in unit.params_mut() {
                let is_norm = matches!(p.role, ParamRole::BnScale | ParamRole::BnOffset);
                p.frozen = (freeze_backbone && i < backbone_units) || (freeze_norm && is_norm);
            }
        }
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
    fn runtime_params_follow_the_spec_and_round_trip_through_a_checkpoint() {
        let spec = Yolov3Spec::small(3);
        let mut model = Yolov3::new(spec.clone(), 7);
        let names: Vec<_> = model
            .params()
            .map(|p| (p.name.clone(), p.shape.clone()))
            .collect();
        let declared: Vec<_> = spec
            .param_specs()
            .into_iter()
            .map(|p| (p.name, p.shape))
            .collect();
        assert_eq!(names, declared);
        assert!(model
            .param("conv1_bn_variance")
            .unwrap()
            .value
            .iter()
            .all(|&v| v == 1.0));
        assert!(model
            .param("conv1_weights")
            .unwrap()
            .value
            .iter()
            .any(|&v| v != 0.0));

        let bias = vec![0.5; 3 * 8];
        model.set_param("yolo_output.1.conv.bias", &bias).unwrap();
        assert_eq!(
            model.set_param("yolo_output.1.conv.bias", &[1.0]),
            Err(SetParamError::Length {
                name: "yolo_output.1.conv.bias".into(),
                expected: 24,
                got: 1
            })
        );
        assert!(matches!(
            model.set_param("nope", &[]),
            Err(SetParamError::Unknown(_))
        ));

        let checkpoint = model.to_checkpoint();
        assert_eq!(checkpoint.len(), 241);
        let mut other = Yolov3::new(spec, 8);
        for (name, tensor) in checkpoint.iter() {
            other.set_param(name, &tensor.to_f32_vec()).unwrap();
        }
        for (a, b) in model.params().zip(other.params()) {
            assert_eq!(a.value, b.value, "{}", a.name);
        }
    }

    #[test]
    fn freezing_marks_backbone_and_norm() {
        let mut model = Yolov3::new(Yolov3Spec::small(2), 0);
        model.set_frozen(true, false);
        assert!(model.param("conv6_sep_weights").unwrap().frozen);
        assert!(!model.param("yolo_block.0.0.0.conv.weights").unwrap().frozen);
        model.set_frozen(false, true);
        assert!(!model.param("conv6_sep_weights").unwrap().frozen);
        assert!(model.param("yolo_block.0.0.0.bn.scale").unwrap().frozen);
        assert!(!model
            .param("yolo_block.0.0.0.bn.mean")
            .unwrap()
            .is_trained());
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
