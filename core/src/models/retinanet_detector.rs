//! RetinaNet at run time, as PaddleDetection's `RetinaNet` architecture
//! trains and predicts with `configs/retinanet_r50_fpn_1x.yml`:
//!
//! 1. ResNet res3..res5, and the pyramid on them with two more levels from
//!    stride-2 convs (`fpn_6` on res5, `fpn_7` on its ReLU): P3..P7
//!    (`FpnLinks`);
//! 2. the retina head on every level with one set of weights (named after
//!    P3): the class subnet, `num_convs_per_octave` 3x3 convs with ReLU and
//!    `retnet_cls_pred` (`A * (C - 1)` logits per cell), and the box subnet,
//!    the same convs and `retnet_bbox_pred` (`A * 4` deltas per cell). Each
//!    level's activations are swapped out of the shared units after its
//!    forward pass and back in for its backward pass
//!    (`ConvUnit::swap_output`), so no level runs forward twice;
//! 3. in training: `retinanet_target_assign` of every image on the backend
//!    against the levels' anchors (`Backend::retinanet_targets`: only the
//!    ground truth goes to a device, only each image's foreground count
//!    comes back), which writes each level's per-anchor labels and box
//!    targets; then over each level's outputs the sigmoid focal loss over
//!    the logits and the smooth-L1 box loss over the deltas
//!    (`Backend::sigmoid_focal_loss`, `Backend::retina_box_loss`: only the
//!    two sums leave the device), both divided by the batch's foreground
//!    count as `RetinaHead.get_loss` does;
//! 4. in detection: the sigmoid of the logits on the device, then
//!    `retinanet_detection_output` on the backend
//!    (`Backend::retinanet_detect`: only the detections leave the device).
//!
//! The backward pass runs each level's two subnets down to the level's
//! feature (their parameter gradients summed over the levels), then the
//! pyramid and the backbone down to its frozen stages (`freeze_at`).

use super::conv_unit::{accumulate, ConvUnit, GradSums, Scratch};
use super::fpn::FpnLinks;
use super::network::ConvNet;
use super::resnet::ResNetLinks;
use super::retinanet::RetinaNetSpec;
use crate::backend::{
    Backend, FocalLossGeom, RetinaBoxLossGeom, RetinaLevelInput, RetinaTargetLevel,
    RetinaTargetsGeom, RetinaTruth,
};
use crate::detector::{Detector, Losses};
use crate::rcnn::anchors::retina_anchors;
use crate::rcnn::truth::{by_class_from_zero, image_infos, image_truths, train_on_zeros};
use crate::retinanet::{
    focal_normalizer, retina_box_loss, sigmoid_focal_loss, RetinaConfig, RetinaOutputConfig,
};
use crate::tensor::Tensor;
use crate::yolo::{Detection, GroundTruth};

/// PaddleDetection's loss terms (`loss_cls`, `loss_bbox`), in that order.
pub const LOSS_NAMES: &[&str] = &["cls", "bbox"];

/// One pyramid level the head runs on: its size, the head's activations
/// on it, and what the losses give its outputs.
struct HeadLevel<B: Backend> {
    size: [usize; 2],
    /// The outputs of the subnets' convs below their predictions, holding
    /// this level's forward pass while another level's is in the units
    /// (the predictions' outputs are read before the next level runs).
    activations: Vec<Tensor<B>>,
    /// Per anchor (`[N, H * W * A]`): -1 ignored, 0 background, else the
    /// class (the focal loss's labels), written by `retinanet_targets`.
    labels: Tensor<B>,
    /// Per anchor, the box loss's target (`[N * H * W * A, 4]`) and weight
    /// (`[N * H * W * A]`: 1 foreground, else 0), written with the labels.
    box_targets: [Tensor<B>; 2],
    /// Gradients of the class logits and of the box deltas.
    cls_grad: Tensor<B>,
    box_grad: Tensor<B>,
    /// At detection, the class scores (the sigmoid of the logits) and the
    /// box deltas, kept for the detection output over all levels.
    outputs: [Tensor<B>; 2],
    /// The level's anchors `[H * W * A, 4]`.
    anchors: Tensor<B>,
    /// The gradient of the level's feature, from both subnets.
    feature_grad: Tensor<B>,
}

/// A RetinaNet with its operator settings and the buffers of a step.
pub struct RetinaNetDetector<B: Backend> {
    pub spec: RetinaNetSpec,
    pub config: RetinaConfig,
    /// Conv units: the backbone's, the pyramid's, the head's (class subnet
    /// then box subnet, each ending with its prediction conv).
    net: ConvNet<B>,
    backbone: ResNetLinks<B>,
    backbone_units: usize,
    fpn: FpnLinks<B>,
    /// The head's first unit.
    head_unit: usize,
    /// P3..P7, lowest level first.
    levels: Vec<HeadLevel<B>>,
    /// Gradients of the backbone features the pyramid reads.
    body_grads: Vec<Tensor<B>>,
    /// The head's parameter gradients summed over the levels.
    head_param_sums: GradSums<B>,
    /// The box subnet's share of a level's feature gradient.
    feature_grad_part: Tensor<B>,
    /// Per-element losses of either loss, summed on the device.
    element_losses: Tensor<B>,
    scratch: Scratch<B>,
    /// The levels' sizes the levels' anchors were made for.
    anchor_sizes: Vec<[usize; 2]>,
}

/// The class logits and the box deltas of the level last run forward:
/// the outputs of the head's two subnets, the first `split` units and the
/// rest.
fn head_outputs<B: Backend>(head: &[ConvUnit<B>], split: usize) -> (&Tensor<B>, &Tensor<B>) {
    (head[split - 1].output(), head[head.len() - 1].output())
}

/// Exchanges the outputs of the head's units below its two predictions
/// (the class subnet is the first `split` units) with `saved`.
fn swap_outputs<B: Backend>(head: &mut [ConvUnit<B>], split: usize, saved: &mut [Tensor<B>]) {
    let (cls, bbox) = head.split_at_mut(split);
    let (cls_convs, bbox_convs) = (cls.len() - 1, bbox.len() - 1);
    let below = cls[..cls_convs].iter_mut().chain(&mut bbox[..bbox_convs]);
    for (unit, saved) in below.zip(saved) {
        unit.swap_output(saved);
    }
}

/// A subnet's units on `x`: the convs, then the prediction.
fn subnet_forward<B: Backend>(
    backend: &B,
    units: &mut [ConvUnit<B>],
    x: &Tensor<B>,
    workspace: &mut Tensor<B>,
) {
    for i in 0..units.len() {
        let (before, rest) = units.split_at_mut(i);
        let input = before.last().map_or(x, |u| u.output());
        rest[0].forward(backend, input, workspace);
    }
}

/// A subnet's backward from `dy` (its prediction's output gradient) after
/// its forward on `x`: the units' parameter gradients, and `x`'s into `dx`.
fn subnet_backward<B: Backend>(
    backend: &B,
    units: &mut [ConvUnit<B>],
    x: &Tensor<B>,
    dy: &Tensor<B>,
    dx: &mut Tensor<B>,
    s: &mut Scratch<B>,
) {
    let last = units.len() - 1;
    for i in (0..=last).rev() {
        let (before, rest) = units.split_at_mut(i);
        let input = before.last().map_or(x, |u| u.output());
        let unit_dy = if i == last { dy } else { &s.grad };
        let unit_dx = if i == 0 { &mut *dx } else { &mut s.grad_next };
        rest[0].backward(
            backend,
            input,
            unit_dy,
            &mut s.dz,
            Some(unit_dx),
            &mut s.workspace,
        );
        if i > 0 {
            s.step_down();
        }
    }
}

impl<B: Backend> RetinaNetDetector<B> {
    /// Builds the model with PaddleDetection's initial values drawn from
    /// `seed`, the backbone frozen up to `freeze_at` and its norms as
    /// `freeze_norm` says.
    pub fn new(backend: &B, spec: RetinaNetSpec, config: RetinaConfig, seed: u64) -> Self {
        let empty = || Tensor::zeros(backend, &[0]);
        let backbone = ResNetLinks::backbone(backend, &spec.backbone);
        let backbone_units = backbone.unit_count();
        let fpn_units = spec.fpn_units();
        let head_unit = backbone_units + fpn_units.len();
        let head_units = spec.head.units();
        let head_count = head_units.len();
        let mut units = spec.backbone.units();
        units.extend(fpn_units);
        units.extend(head_units);
        let mut net = ConvNet::new(backend, units, seed);
        net.freeze_units(spec.backbone.frozen_units());
        net.freeze_norm(spec.backbone.freeze_norm);
        let head_param_sums = GradSums::new(backend, &mut net.units[head_unit..]);
        let level_count = spec.fpn.max_level - spec.fpn.min_level + 1;
        RetinaNetDetector {
            net,
            backbone,
            backbone_units,
            fpn: FpnLinks::new(backend, &spec.fpn),
            head_unit,
            levels: (0..level_count)
                .map(|_| HeadLevel {
                    size: [0, 0],
                    activations: (0..head_count - 2).map(|_| empty()).collect(),
                    labels: empty(),
                    cls_grad: empty(),
                    box_grad: empty(),
                    box_targets: [empty(), empty()],
                    outputs: [empty(), empty()],
                    anchors: empty(),
                    feature_grad: empty(),
                })
                .collect(),
            body_grads: spec.backbone.feature_maps.iter().map(|_| empty()).collect(),
            head_param_sums,
            feature_grad_part: empty(),
            element_losses: empty(),
            scratch: Scratch::new(backend),
            anchor_sizes: Vec::new(),
            spec,
            config,
        }
    }

    /// The units of the class subnet (the first ones of the head, up to
    /// `retnet_cls_pred`; the box subnet's follow).
    fn subnet_len(&self) -> usize {
        self.spec.head.cls_pred_index() + 1
    }

    /// The backbone and the pyramid on `image`; the levels' sizes and the
    /// anchors are then those of its features.
    fn forward_features(&mut self, image: &Tensor<B>) {
        let backend = self.net.backend().clone();
        let workspace = &mut self.scratch.workspace;
        let frozen = self.net.frozen_units();
        let (body, _) = self.net.units.split_at_mut(self.head_unit);
        let (backbone, pyramid) = body.split_at_mut(self.backbone_units);
        self.backbone
            .forward(&backend, backbone, image, frozen, workspace);
        self.fpn
            .forward(&backend, pyramid, &self.backbone.features(), workspace);
        let outputs = self.fpn.outputs(pyramid);
        for (level, x) in self.levels.iter_mut().zip(outputs.into_iter().rev()) {
            let (_, _, h, w) = x.nchw();
            level.size = [h, w];
        }
        let sizes: Vec<[usize; 2]> = self.levels.iter().map(|l| l.size).collect();
        if self.anchor_sizes != sizes {
            let anchors = retina_anchors(&self.spec.head, &sizes);
            let per_cell = self.spec.head.anchors_per_cell();
            let mut first = 0;
            for level in &mut self.levels {
                let count = level.size[0] * level.size[1] * per_cell;
                level.anchors.reshape_reuse(&backend, &[count, 4]);
                let boxes = &anchors.boxes[first..][..count];
                level.anchors.upload(&backend, boxes.as_flattened());
                first += count;
            }
            self.anchor_sizes = sizes;
        }
    }

    /// The head on level `l` (0 is P3) after `forward_features`; its
    /// outputs are then `head_outputs()`.
    fn forward_level(&mut self, l: usize) {
        let backend = self.net.backend().clone();
        let split = self.subnet_len();
        let (body, head) = self.net.units.split_at_mut(self.head_unit);
        let outputs = self.fpn.outputs(&body[self.backbone_units..]);
        let x = outputs[outputs.len() - 1 - l];
        let (cls, bbox) = head.split_at_mut(split);
        subnet_forward(&backend, cls, x, &mut self.scratch.workspace);
        subnet_forward(&backend, bbox, x, &mut self.scratch.workspace);
    }

    /// Exchanges the head's outputs below its predictions with level `l`'s
    /// store.
    fn swap_level(&mut self, l: usize) {
        let split = self.subnet_len();
        swap_outputs(
            &mut self.net.units[self.head_unit..],
            split,
            &mut self.levels[l].activations,
        );
    }

    /// Each level's focal-loss labels and box-loss targets for the images
    /// of `g`, after `forward_features`; returns each image's foreground
    /// count.
    fn assign_targets(&mut self, g: &RetinaTargetsGeom<'_>) -> Vec<f32> {
        let backend = self.net.backend().clone();
        let a = self.spec.head.anchors_per_cell();
        let mut levels: Vec<RetinaTargetLevel<'_, B::Buffer>> = self
            .levels
            .iter_mut()
            .map(|level| {
                let count = level.size[0] * level.size[1] * a;
                let rows = g.images.len() * count;
                let [box_targets, box_weights] = &mut level.box_targets;
                level.labels.reshape_reuse(&backend, &[rows]);
                box_targets.reshape_reuse(&backend, &[rows, 4]);
                box_weights.reshape_reuse(&backend, &[rows]);
                RetinaTargetLevel {
                    anchors: level.anchors.buf(),
                    count,
                    labels: level.labels.buf_mut(),
                    box_targets: box_targets.buf_mut(),
                    box_weights: box_weights.buf_mut(),
                }
            })
            .collect();
        backend.retinanet_targets(g, &mut levels)
    }

    /// Backward from each level's uploaded gradients, after a training
    /// forward on `image` (the last level's activations in the units).
    fn backward(&mut self, image: &Tensor<B>) {
        let backend = self.net.backend().clone();
        let stop = self.net.frozen_units();
        let split = self.subnet_len();
        let last = self.levels.len() - 1;
        let (body, head) = self.net.units.split_at_mut(self.head_unit);
        {
            let outputs = self.fpn.outputs(&body[self.backbone_units..]);
            for l in (0..=last).rev() {
                let level = &mut self.levels[l];
                if l < last {
                    swap_outputs(head, split, &mut level.activations);
                }
                let x = outputs[last - l];
                let (cls, bbox) = head.split_at_mut(split);
                subnet_backward(
                    &backend,
                    bbox,
                    x,
                    &level.box_grad,
                    &mut self.feature_grad_part,
                    &mut self.scratch,
                );
                subnet_backward(
                    &backend,
                    cls,
                    x,
                    &level.cls_grad,
                    &mut level.feature_grad,
                    &mut self.scratch,
                );
                accumulate(&backend, &self.feature_grad_part, &mut level.feature_grad);
                self.head_param_sums.add(&backend, head);
            }
        }
        self.head_param_sums.finish(head);

        // The pyramid, then the backbone.
        let (backbone, pyramid) = body.split_at_mut(self.backbone_units);
        let deepest_first: Vec<&Tensor<B>> =
            self.levels.iter().rev().map(|l| &l.feature_grad).collect();
        self.fpn.backward(
            &backend,
            pyramid,
            &self.backbone.features(),
            &deepest_first,
            &mut self.body_grads,
            self.backbone.frozen_features(stop),
            &mut self.scratch,
        );
        if stop < self.backbone_units {
            self.backbone.backward(
                &backend,
                backbone,
                image,
                &self.body_grads,
                stop,
                &mut self.scratch,
            );
        }
    }

    /// Bytes held now on the device and the host.
    fn planned_bytes(&self) -> usize {
        let b = self.net.backend();
        let levels = self
            .levels
            .iter()
            .map(|l| {
                l.activations
                    .iter()
                    .chain([&l.labels, &l.cls_grad, &l.box_grad, &l.feature_grad])
                    .chain(&l.box_targets)
                    .chain(&l.outputs)
                    .chain([&l.anchors])
                    .map(|t| t.capacity_bytes(b))
                    .sum::<usize>()
            })
            .sum::<usize>();
        let tensors = self
            .body_grads
            .iter()
            .chain([&self.feature_grad_part, &self.element_losses])
            .map(|t| t.capacity_bytes(b))
            .sum::<usize>();
        self.net.planned_bytes()
            + self.backbone.planned_bytes(b)
            + self.fpn.planned_bytes(b)
            + self.head_param_sums.planned_bytes(b)
            + self.scratch.planned_bytes(b)
            + levels
            + tensors
    }
}

impl<B: Backend> Detector<B> for RetinaNetDetector<B> {
    fn net(&self) -> &ConvNet<B> {
        &self.net
    }

    fn net_mut(&mut self) -> &mut ConvNet<B> {
        &mut self.net
    }

    fn loss_names(&self) -> &'static [&'static str] {
        LOSS_NAMES
    }

    fn plan(&mut self, batch: usize, size: usize) -> usize {
        // The reader pads to the coarsest level's stride (PadBatch).
        let stride = 1 << self.spec.fpn.max_level;
        train_on_zeros(self, batch, size, stride);
        let backend = self.net.backend().clone();
        self.scratch.equalize(&backend);
        self.planned_bytes()
    }

    fn train_pass(
        &mut self,
        image: &Tensor<B>,
        truth: &GroundTruth,
        im_info: &[[f32; 3]],
    ) -> Losses {
        let backend = self.net.backend().clone();
        let im_info = image_infos(image, im_info);
        let truths = image_truths(truth, &im_info);
        self.forward_features(image);
        let images: Vec<RetinaTruth<'_>> = truths
            .iter()
            .zip(&im_info)
            .map(|(t, &im_info)| RetinaTruth {
                boxes: &t.boxes,
                classes: &t.classes,
                im_info,
            })
            .collect();
        let target_config = self.config.target.clone();
        let g = RetinaTargetsGeom {
            config: &target_config,
            images: &images,
        };
        // Paddle divides both losses by the batch's foreground count.
        let fg_total = focal_normalizer(&self.assign_targets(&g));

        // Each level: the head and both its losses on the device; then its
        // activations out of the units (the last level's stay for the
        // backward pass, which starts there).
        let batch = im_info.len();
        let a = self.spec.head.anchors_per_cell();
        let (mut loss_cls, mut loss_bbox) = (0.0, 0.0);
        for l in 0..self.levels.len() {
            self.forward_level(l);
            let [height, width] = self.levels[l].size;
            let geom = FocalLossGeom {
                batch,
                anchors_per_cell: a,
                classes: self.spec.num_classes - 1,
                height,
                width,
                gamma: self.config.gamma,
                alpha: self.config.alpha,
                normalizer: fg_total,
            };
            let (cls, deltas) = head_outputs(&self.net.units[self.head_unit..], self.subnet_len());
            let level = &mut self.levels[l];
            loss_cls += sigmoid_focal_loss(
                &backend,
                cls,
                &level.labels,
                &geom,
                &mut level.cls_grad,
                &mut self.element_losses,
            );
            let box_geom = RetinaBoxLossGeom {
                batch,
                anchors_per_cell: a,
                height,
                width,
                sigma: self.config.sigma,
                normalizer: fg_total,
            };
            loss_bbox += retina_box_loss(
                &backend,
                deltas,
                &level.box_targets[0],
                &level.box_targets[1],
                &box_geom,
                &mut level.box_grad,
                &mut self.element_losses,
            );
            if l + 1 < self.levels.len() {
                self.swap_level(l);
            }
        }
        self.backward(image);
        Losses::new(LOSS_NAMES, &[loss_cls as f32, loss_bbox as f32])
    }

    fn detect(
        &mut self,
        image: &Tensor<B>,
        _original_sizes: &[[u32; 2]],
        im_info: &[[f32; 3]],
    ) -> Vec<Vec<Detection>> {
        let backend = self.net.backend().clone();
        let im_info = image_infos(image, im_info);
        self.forward_features(image);
        let split = self.subnet_len();
        for l in 0..self.levels.len() {
            self.forward_level(l);
            // The scores into the level's tensor, the deltas swapped out of
            // the box prediction (its next forward overwrites what it gets).
            let head = &mut self.net.units[self.head_unit..];
            let [scores, deltas] = &mut self.levels[l].outputs;
            let logits = head[split - 1].output();
            scores.reshape_reuse(&backend, logits.shape());
            backend.sigmoid_forward(logits.numel(), logits.buf(), scores.buf_mut());
            head[head.len() - 1].swap_output(deltas);
        }
        let levels: Vec<RetinaLevelInput<'_, B::Buffer>> = self
            .levels
            .iter()
            .map(|level| RetinaLevelInput {
                scores: level.outputs[0].buf(),
                deltas: level.outputs[1].buf(),
                anchors: level.anchors.buf(),
                height: level.size[0],
                width: level.size[1],
            })
            .collect();
        // Paddle 1.8's `retinanet_detection_output` layer hands the operator
        // an `nms_eta` of 1 whatever `RetinaOutputDecoder` says: adaptive
        // NMS never runs in PaddleDetection's RetinaNet.
        let output = RetinaOutputConfig {
            nms_eta: 1.0,
            ..self.config.output.clone()
        };
        backend
            .retinanet_detect(
                &output,
                &levels,
                self.spec.head.anchors_per_cell(),
                self.spec.num_classes - 1,
                &im_info,
            )
            .into_iter()
            .map(by_class_from_zero)
            .collect()
    }

    fn boxes_normalized(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_params, probe_loss, random_vec, Probe, SEEDS};
    use crate::CpuBackend;

    fn image(cpu: &CpuBackend, n: usize, h: usize, w: usize, seed: u64) -> Tensor<CpuBackend> {
        Tensor::from_host(cpu, &[n, 3, h, w], &random_vec(seed, n * 3 * h * w))
    }

    /// The small model plans, trains a pass with finite losses (the focal
    /// loss positive) and detects in its object classes.
    #[test]
    fn small_model_trains_a_pass_and_detects() {
        let cpu = CpuBackend::new();
        let mut model =
            RetinaNetDetector::new(&cpu, RetinaNetSpec::small(4), RetinaConfig::default(), 7);
        // Planned on 128: 90 rounded up to P7's stride.
        assert!(model.plan(1, 90) > 0);
        let image = image(&cpu, 2, 128, 256, 3);
        let boxes = [
            0.4, 0.5, 0.3, 0.4, 0.7, 0.3, 0.2, 0.2, 0.5, 0.5, 0.9, 0.8, 0.0, 0.0, 0.0, 0.0,
        ];
        let labels = [1, 3, 2, 0];
        let truth = GroundTruth {
            boxes: &boxes,
            labels: &labels,
            scores: None,
            max_boxes: 2,
            polygons: &[],
        };
        let info = [[128.0, 256.0, 1.0], [128.0, 200.0, 1.0]];
        let losses = model.train_pass(&image, &truth, &info);
        assert!(losses.values().iter().all(|v| v.is_finite()), "{losses:?}");
        assert!(losses.values()[0] > 0.0, "{losses:?}");
        let found = model.detect(&image, &[[256, 128], [200, 128]], &info);
        assert_eq!(found.len(), 2);
        assert!(found.iter().flatten().all(|d| d.class < 3));
    }

    /// A pass after a pass on another input size (the reader's multi-scale
    /// training) gives what a fresh model gives: no buffer keeps anything
    /// of an earlier shape.
    #[test]
    fn a_pass_after_another_size_equals_a_fresh_pass() {
        let cpu = CpuBackend::new();
        let boxes = [0.4, 0.5, 0.3, 0.4, 0.6, 0.4, 0.5, 0.6];
        let labels = [1, 2];
        let truth = GroundTruth {
            boxes: &boxes,
            labels: &labels,
            scores: None,
            max_boxes: 1,
            polygons: &[],
        };
        let new =
            || RetinaNetDetector::new(&cpu, RetinaNetSpec::small(3), RetinaConfig::default(), 7);
        let (mut fresh, mut reused) = (new(), new());
        let large = image(&cpu, 2, 256, 384, 2);
        reused.train_pass(&large, &truth, &[[256.0, 384.0, 1.5], [200.0, 300.0, 1.2]]);
        let small = image(&cpu, 2, 128, 128, 1);
        let info = [[128.0, 128.0, 1.0], [100.0, 128.0, 0.5]];
        let want = fresh.train_pass(&small, &truth, &info);
        assert_eq!(reused.train_pass(&small, &truth, &info), want);
        for slot in fresh.net.slots() {
            let grad =
                |m: &RetinaNetDetector<CpuBackend>| m.net.grad(slot).map(|g| g.to_host(&cpu));
            assert_eq!(grad(&reused), grad(&fresh), "{}", slot.param.spec.name);
        }
    }

    /// The wiring of the backward pass, whatever the targets: with random
    /// probes as the gradients of both subnets' outputs on every level of a
    /// `[2, 3, 128, 64]` image, every parameter in the list (the head's,
    /// summed over P3..P7, the pyramid's with P6 and P7, the backbone's
    /// trained stages) has the finite difference of `sum(outputs * probes)`
    /// as its gradient.
    #[test]
    fn backward_matches_finite_differences_for_any_seed() {
        let cpu = CpuBackend::new();
        let names = [
            "res3a_branch2b_weights",
            "res5a_branch1_weights",
            "fpn_inner_res5_sum_w",
            "fpn_inner_res3_sum_lateral_b",
            "fpn_res4_sum_w",
            "fpn_6_w",
            "fpn_7_b",
            "retnet_cls_conv_n0_fpn3_w",
            "retnet_cls_pred_fpn3_b",
            "retnet_bbox_conv_n1_fpn3_b",
            "retnet_bbox_pred_fpn3_w",
        ];
        for seed in SEEDS {
            let spec = RetinaNetSpec::small(3);
            let mut model = RetinaNetDetector::new(&cpu, spec, RetinaConfig::default(), seed);
            let image = image(&cpu, 2, 128, 64, seed + 100);
            // Each level's class logits and box deltas, on the host.
            let run = |m: &mut RetinaNetDetector<CpuBackend>| -> Vec<Vec<f32>> {
                m.forward_features(&image);
                let mut outputs = Vec::new();
                for l in 0..m.levels.len() {
                    m.forward_level(l);
                    let (cls, deltas) = head_outputs(&m.net.units[m.head_unit..], m.subnet_len());
                    outputs.extend([cls.to_host(&cpu), deltas.to_host(&cpu)]);
                    if l + 1 < m.levels.len() {
                        m.swap_level(l);
                    }
                }
                outputs
            };
            let outputs = run(&mut model);
            let probes: Vec<Vec<f32>> = outputs
                .iter()
                .enumerate()
                .map(|(k, y)| random_vec(seed + 200 + k as u64, y.len()))
                .collect();
            for (l, level) in model.levels.iter_mut().enumerate() {
                let [h, w] = level.size;
                let shape = |k: usize| [2, probes[k].len() / (2 * h * w), h, w];
                level.cls_grad = Tensor::from_host(&cpu, &shape(2 * l), &probes[2 * l]);
                level.box_grad = Tensor::from_host(&cpu, &shape(2 * l + 1), &probes[2 * l + 1]);
            }
            model.backward(&image);
            check_params(
                &mut model,
                |m| &mut m.net,
                &names,
                &format!("seed {seed}"),
                (1e-2, 0.2),
                |m| {
                    run(m)
                        .iter()
                        .zip(&probes)
                        .map(|(y, r)| probe_loss(y, r))
                        .sum::<Probe>()
                },
            );
        }
    }
}
