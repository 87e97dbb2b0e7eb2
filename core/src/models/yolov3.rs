//! YOLOv3: a backbone (MobileNetV1 or DarkNet53) and the YOLOv3 head, with
//! PaddleDetection's legacy parameter names. `Yolov3Spec` is the structural
//! description everything else is derived from: the parameter list the
//! loading rules read, the model that trains, and the checkpoints it writes.

use super::conv_unit::{ConvUnit, ConvUnitSpec, Scratch, UnitParam};
use super::darknet53::DarkNet53Spec;
use super::mobilenet_v1::MobileNetV1Spec;
use super::network::ConvNet;
use super::yolov3_head::{HeadLinks, Yolov3HeadSpec};
use super::{chain, darknet53, yolov3_head};
use crate::backend::Backend;
use crate::layers::Add;
use crate::params::ParamSpec;
use crate::tensor::Tensor;

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
        Self::with_backbone(
            Backbone::DarkNet53(DarkNet53Spec { width: 32 }),
            512,
            num_classes,
        )
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

    /// The smallest model unit tests train: MobileNetV1 at an eighth of its
    /// width and a 16-channel head, so a step on 64-pixel inputs is instant.
    #[cfg(test)]
    pub fn tiny(num_classes: usize) -> Self {
        Self::with_backbone(
            Backbone::MobileNetV1(MobileNetV1Spec { scale: 0.125 }),
            16,
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

/// A YOLOv3 model at run time on backend `B`: every conv unit (backbone
/// first, in model order), the layers between them, and the gradient buffers
/// of a backward pass. Memory is sized by the first pass at a given batch and
/// input size and reused after (`plan` does that pass up front).
pub struct Yolov3<B: Backend> {
    pub spec: Yolov3Spec,
    pub net: ConvNet<B>,
    backbone_units: usize,
    /// DarkNet53's residual sums (empty for MobileNetV1).
    residuals: Vec<Add<B>>,
    links: HeadLinks<B>,
    feature_grads: [Tensor<B>; 3],
    scratch: Scratch<B>,
}

impl<B: Backend> Yolov3<B> {
    /// Builds the model with PaddleDetection's initial values drawn from `seed`.
    pub fn new(backend: &B, spec: Yolov3Spec, seed: u64) -> Self {
        let units = spec.units();
        Self::with_units(backend, spec, units, seed)
    }

    /// Builds the model from `spec`'s wiring with these units (`spec.units()`
    /// with changes that keep every shape, e.g. another activation).
    pub(crate) fn with_units(
        backend: &B,
        spec: Yolov3Spec,
        unit_specs: Vec<ConvUnitSpec>,
        seed: u64,
    ) -> Self {
        let residuals = match spec.backbone {
            Backbone::DarkNet53(_) => (0..DarkNet53Spec::residual_count())
                .map(|_| Add::new(backend))
                .collect(),
            Backbone::MobileNetV1(_) => Vec::new(),
        };
        let empty = || Tensor::zeros(backend, &[0]);
        Yolov3 {
            backbone_units: spec.backbone_unit_count(),
            net: ConvNet::new(backend, unit_specs, seed),
            spec,
            residuals,
            links: HeadLinks::new(backend),
            feature_grads: [empty(), empty(), empty()],
            scratch: Scratch::new(backend),
        }
    }

    pub fn backend(&self) -> &B {
        self.net.backend()
    }

    /// The three head outputs `[N, anchors * (C + 5), H, W]`, strides 32, 16, 8.
    pub fn outputs(&self) -> [&Tensor<B>; 3] {
        let levels = self.spec.head().level_units();
        levels.map(|l| self.net.units[self.backbone_units + l.output].output())
    }

    /// Runs the model on an NCHW image batch; see `outputs`.
    pub fn forward(&mut self, image: &Tensor<B>) -> [&Tensor<B>; 3] {
        let backend = self.net.backend().clone();
        let (backbone, head) = self.net.units.split_at_mut(self.backbone_units);
        let workspace = &mut self.scratch.workspace;
        match self.spec.backbone {
            Backbone::MobileNetV1(_) => {
                chain::forward(&backend, backbone, &mut [], image, workspace)
            }
            Backbone::DarkNet53(_) => {
                darknet53::forward(&backend, backbone, &mut self.residuals, image, workspace)
            }
        }
        let features = backbone_features(&self.spec.backbone, backbone, &self.residuals);
        yolov3_head::forward(
            &self.spec.head(),
            &backend,
            head,
            &mut self.links,
            features,
            workspace,
        );
        self.outputs()
    }

    /// Backward from the gradients of the three outputs (same shapes as
    /// `outputs`) after a `forward` on `image`: every trained parameter's
    /// gradient is overwritten.
    pub fn backward(&mut self, image: &Tensor<B>, output_grads: &[Tensor<B>; 3]) {
        let backend = self.net.backend().clone();
        let stop = self.net.frozen_units();
        let (backbone, head) = self.net.units.split_at_mut(self.backbone_units);
        let features = backbone_features(&self.spec.backbone, backbone, &self.residuals);
        yolov3_head::backward(
            &self.spec.head(),
            &backend,
            head,
            &mut self.links,
            features,
            output_grads,
            &mut self.feature_grads,
            &mut self.scratch,
        );
        if stop >= self.backbone_units {
            return;
        }
        match self.spec.backbone {
            Backbone::MobileNetV1(m) => chain::backward(
                &backend,
                backbone,
                &mut [],
                image,
                &m.feature_units(),
                &self.feature_grads,
                stop,
                &mut self.scratch,
            ),
            Backbone::DarkNet53(_) => darknet53::backward(
                &backend,
                backbone,
                &self.residuals,
                image,
                &self.feature_grads,
                stop,
                &mut self.scratch,
            ),
        }
    }

    /// Sizes every buffer for `batch` images of `size` x `size` by one
    /// forward and backward pass on zeros (running statistics are restored
    /// afterwards), and returns the bytes the model then holds.
    pub fn plan(&mut self, batch: usize, size: usize) -> usize {
        let running = self.net.save_running_stats();
        let backend = self.net.backend().clone();
        let image = Tensor::zeros(&backend, &[batch, 3, size, size]);
        let shapes = self.forward(&image).map(|t| t.shape().to_vec());
        let grads = shapes.map(|shape| Tensor::zeros(&backend, &shape));
        self.backward(&image, &grads);
        self.scratch.equalize(&backend);
        self.net.restore_running_stats(running);
        self.planned_bytes()
    }

    /// Bytes held now: parameters, gradients, activations, saved statistics
    /// and gradient buffers.
    pub fn planned_bytes(&self) -> usize {
        let b = self.net.backend();
        self.net.planned_bytes()
            + self
                .residuals
                .iter()
                .map(|a| a.planned_bytes(b))
                .sum::<usize>()
            + self.links.planned_bytes(b)
            + self
                .feature_grads
                .iter()
                .map(|t| t.capacity_bytes(b))
                .sum::<usize>()
            + self.scratch.planned_bytes(b)
    }
}

/// The backbone's outputs of stride 8, 16, 32 after a forward pass.
fn backbone_features<'a, B: Backend>(
    backbone: &Backbone,
    units: &'a [ConvUnit<B>],
    residuals: &'a [Add<B>],
) -> [&'a Tensor<B>; 3] {
    match backbone {
        Backbone::MobileNetV1(m) => m.feature_units().map(|i| units[i].output()),
        Backbone::DarkNet53(_) => DarkNet53Spec::feature_adds().map(|i| residuals[i].output()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::check_params;
    use crate::models::SetParamError;
    use crate::CpuBackend;

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
        let cpu = CpuBackend::new();
        let spec = Yolov3Spec::small(3);
        let mut model = Yolov3::new(&cpu, spec.clone(), 7);
        let names: Vec<_> = model
            .net
            .slots()
            .iter()
            .map(|s| s.param.spec.clone())
            .collect();
        assert_eq!(names, spec.param_specs());
        assert!(model
            .net
            .param_values("conv1_bn_variance")
            .unwrap()
            .iter()
            .all(|&v| v == 1.0));
        assert!(model
            .net
            .param_values("conv1_weights")
            .unwrap()
            .iter()
            .any(|&v| v != 0.0));

        let bias = vec![0.5; 3 * 8];
        model
            .net
            .set_param("yolo_output.1.conv.bias", &bias)
            .unwrap();
        assert_eq!(
            model.net.param_values("yolo_output.1.conv.bias").unwrap(),
            bias
        );
        assert_eq!(
            model.net.set_param("yolo_output.1.conv.bias", &[1.0]),
            Err(SetParamError::Length {
                name: "yolo_output.1.conv.bias".into(),
                expected: 24,
                got: 1
            })
        );
        assert!(matches!(
            model.net.set_param("nope", &[]),
            Err(SetParamError::Unknown(_))
        ));

        let checkpoint = model.net.to_checkpoint();
        assert_eq!(checkpoint.len(), 241);
        let mut other = Yolov3::new(&cpu, spec.clone(), 8);
        for (name, tensor) in checkpoint.iter() {
            other.net.set_param(name, &tensor.to_f32_vec()).unwrap();
        }
        for p in spec.param_specs() {
            assert_eq!(
                model.net.param_values(&p.name),
                other.net.param_values(&p.name),
                "{}",
                p.name
            );
        }
    }

    #[test]
    fn freezing_marks_units_and_norm() {
        let cpu = CpuBackend::new();
        let spec = Yolov3Spec::small(2);
        let mut model = Yolov3::new(&cpu, spec.clone(), 0);
        let trained = |m: &Yolov3<CpuBackend>, name: &str| {
            let slot = m
                .net
                .slots()
                .iter()
                .find(|s| s.param.spec.name == name)
                .unwrap();
            m.net.is_trained(slot)
        };
        model.net.freeze_units(spec.backbone_unit_count());
        assert!(!trained(&model, "conv6_sep_weights"));
        assert!(trained(&model, "yolo_block.0.0.0.conv.weights"));
        model.net.freeze_units(0);
        model.net.freeze_norm(true);
        assert!(trained(&model, "conv6_sep_weights"));
        assert!(!trained(&model, "yolo_block.0.0.0.bn.scale"));
        assert!(!trained(&model, "yolo_block.0.0.0.bn.mean"));
    }

    #[test]
    fn outputs_have_the_head_shapes() {
        let cpu = CpuBackend::new();
        for spec in [Yolov3Spec::small(4), Yolov3Spec::tiny(4)] {
            let mut model = Yolov3::new(&cpu, spec, 1);
            let image = Tensor::from_host(
                &cpu,
                &[2, 3, 64, 64],
                &crate::gradcheck::random_vec(3, 2 * 3 * 64 * 64),
            );
            let shapes = model.forward(&image).map(|t| t.shape().to_vec());
            assert_eq!(
                shapes,
                [vec![2, 27, 2, 2], vec![2, 27, 4, 4], vec![2, 27, 8, 8]]
            );
        }
    }

    /// DarkNet53's structure at width 4 (instead of 32) with a head of width 16.
    fn tiny_darknet_spec() -> Yolov3Spec {
        let mut spec = Yolov3Spec::darknet53(4);
        spec.backbone = Backbone::DarkNet53(DarkNet53Spec { width: 4 });
        spec.head_width = 16;
        spec
    }

    /// Finite differences of a probe loss `sum_l sum(out_l * r_l)` against the
    /// model's backward, for parameters spread over backbone, routes and head.
    /// What is checked is the wiring (every layer is checked on its own where
    /// it is written), so the units' activations are made the identity and the
    /// probe's gradient reaches every path; `model_gradients_through_the_yolo_loss`
    /// checks the real activations and loss.
    fn check_model_gradients(spec: Yolov3Spec, names: &[&str]) {
        use crate::gradcheck::{probe_loss, random_vec, SEEDS};
        let cpu = CpuBackend::new();
        for seed in SEEDS {
            let mut units = spec.units();
            for u in &mut units {
                u.activation = crate::backend::Activation::Identity;
            }
            let mut model = Yolov3::with_units(&cpu, spec.clone(), units, seed);
            let (batch, size) = (2, 64);
            let image = Tensor::from_host(
                &cpu,
                &[batch, 3, size, size],
                &random_vec(seed + 100, batch * 3 * size * size),
            );
            let shapes = model.forward(&image).map(|t| t.shape().to_vec());
            let probes: Vec<Vec<f32>> = shapes
                .iter()
                .enumerate()
                .map(|(l, s)| random_vec(seed + 200 + l as u64, s.iter().product()))
                .collect();
            let grads = [0, 1, 2].map(|l| Tensor::from_host(&cpu, &shapes[l], &probes[l]));
            model.backward(&image, &grads);
            // At 3e-3 the rounding allowance (about 3 * depth * eps * |loss|
            // / step) exceeded the gradients, and a chain that dropped the
            // stride-8 feature's gradient passed; at 3e-2 it fails and the
            // batch norms' curvature still fits the truncation estimate.
            let steps = (3e-2, 0.1);
            check_params(
                &mut model,
                |m| &mut m.net,
                names,
                &format!("seed {seed}"),
                steps,
                |model| {
                    let outs = model.forward(&image).map(|t| t.to_host(&cpu));
                    (0..3).map(|l| probe_loss(&outs[l], &probes[l])).sum()
                },
            );
        }
    }

    /// The whole training gradient, as a step computes it: the model with its
    /// real activations (ReLU, leaky ReLU, batch norm in training mode) under
    /// Paddle's YOLOv3 loss on a synthetic batch with boxes at every level.
    /// The ignore mask is a step function of the predictions (a flip within
    /// the step would be a jump, not a wrong gradient), so it is switched off
    /// as in the loss's own check.
    #[test]
    fn model_gradients_through_the_yolo_loss() {
        use crate::gradcheck::{Probe, SEEDS};
        use crate::models::yolov3_detector::loss_config;
        use crate::train::SyntheticBatch;
        use crate::yolo::{yolov3_loss, Head};
        let cpu = CpuBackend::new();
        let spec = Yolov3Spec::tiny(4);
        let mut cfg = loss_config(&spec);
        cfg.ignore_thresh = 1.5;
        // 128 pixels: at 64 the coarsest batch norms normalise over 8 values
        // each, and the loss is too curved for any f32 step.
        let (batch, size) = (2, 128);
        for seed in SEEDS {
            let data = SyntheticBatch::new(batch, size, spec.num_classes, seed);
            let image = Tensor::from_host(&cpu, &[batch, 3, size, size], &data.images);
            let mut model = Yolov3::new(&cpu, spec.clone(), seed);
            // The loss of the model as it stands, and the gradient of that
            // loss with respect to each output level.
            let loss = |model: &mut Yolov3<CpuBackend>| {
                let outs = model.forward(&image);
                let shapes = outs.map(|t| t.shape().to_vec());
                let host = outs.map(|t| t.to_host(&cpu));
                let heads: Vec<Head> = (0..3)
                    .map(|l| Head {
                        data: &host[l],
                        batch,
                        height: shapes[l][2],
                        width: shapes[l][3],
                    })
                    .collect();
                let mut grads = host.clone();
                let [g0, g1, g2] = &mut grads;
                let terms = yolov3_loss(&cfg, &heads, &data.ground_truth(), &mut [g0, g1, g2]);
                // Every term of the loss is non-negative, so the total is also
                // the sum of the magnitudes of what it adds up.
                let total = terms.mean.total() as f64;
                let probe = Probe {
                    value: total,
                    magnitude: total,
                };
                (
                    probe,
                    [0, 1, 2].map(|l| Tensor::from_host(&cpu, &shapes[l], &grads[l])),
                )
            };
            let (_, output_grads) = loss(&mut model);
            model.backward(&image, &output_grads);
            check_params(
                &mut model,
                |m| &mut m.net,
                &[
                    "conv1_weights",
                    "conv2_1_dw_weights",
                    "conv4_2_dw_bn_scale",
                    "conv6_sep_weights",
                    "yolo_block.0.1.1.conv.weights",
                    "yolo_transition.0.bn.offset",
                    "yolo_output.0.conv.weights",
                    "yolo_output.2.conv.bias",
                ],
                &format!("yolo loss seed {seed}"),
                // Every unit of the network moves with an early weight, and
                // with thousands of ReLUs one of them crosses its kink within
                // the step at a fair share of the points.
                (3e-4, 0.5),
                |model| loss(model).0,
            );
        }
    }

    #[test]
    fn mobilenet_model_gradients_match_finite_differences() {
        check_model_gradients(
            Yolov3Spec::tiny(4),
            &[
                "conv1_weights",
                "conv3_2_sep_weights",
                "conv4_2_dw_bn_scale",
                "conv6_sep_weights",
                "yolo_block.0.1.1.conv.weights",
                "yolo_transition.0.conv.weights",
                "yolo_block.2.0.0.bn.offset",
                "yolo_output.1.conv.bias",
            ],
        );
    }

    #[test]
    fn darknet_model_gradients_match_finite_differences() {
        check_model_gradients(
            tiny_darknet_spec(),
            &[
                "yolo_input.conv.weights",
                "stage.0.0.0.conv.weights",
                "stage.2.1.1.conv.weights",
                "stage.2.downsample.bn.scale",
                "stage.4.0.0.conv.weights",
                "yolo_transition.1.conv.weights",
                "yolo_output.2.conv.weights",
            ],
        );
    }

    /// MobileNetV1 at an eighth of its width and a head of width 16: every
    /// structural path of the full model in a few thousand parameters.
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
