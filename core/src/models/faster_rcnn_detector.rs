//! Faster R-CNN at run time, as PaddleDetection's `FasterRCNN` architecture
//! trains and predicts with `configs/faster_rcnn_r50_1x.yml` (C4) and
//! `configs/faster_rcnn_r50_fpn_1x.yml` (FPN):
//!
//! 1. the features the heads read: ResNet res2..res4 on the image and res4
//!    itself (C4), or res2..res5 and the pyramid on them, P2..P6 (FPN,
//!    `FpnLinks`);
//! 2. the RPN head on each of those features with one set of weights
//!    (`FPNRPNHead` shares `conv_rpn_fpn2` and the rest over the levels):
//!    `conv_rpn` (3x3, ReLU), then `rpn_cls_logits` and `rpn_bbox_pred`
//!    (1x1);
//! 3. on the host, from the downloaded head outputs: the anchors, in
//!    training `rpn_target_assign` and the RPN loss over all levels (its
//!    gradients uploaded for the backward pass), and `generate_proposals`
//!    per image and level (FPN: then `collect_fpn_proposals`, the batch's
//!    best); in training `generate_proposal_labels` samples the RoIs the
//!    box head learns from;
//! 4. RoIAlign of each RoI (`faster_rcnn_rois`: from res4, `14 x 14` at
//!    1/16, or from the pyramid level its size picks, `7 x 7`), the RoI
//!    head (res5 and a global average pool, or `fc6` and `fc7`), and the
//!    two fully connected layers `cls_score` and `bbox_pred`;
//! 5. on the host again: the box head's loss (gradients uploaded), or
//!    `get_prediction`'s decode, clip and NMS.
//!
//! Built `with_mask_head`, it is Mask R-CNN: the mask branch
//! (`mask_branch`) runs after the box head, on the foreground RoIs in
//! training (`generate_mask_labels` on the host, the loss there too) and on
//! the detections at inference, whose masks are then pasted into each
//! picture (`Detector::masks`).
//!
//! The backward pass runs the same way down: the mask head and the box
//! head, RoIAlign's gradient into each feature's, the RPN head's added to
//! it, then the pyramid and the backbone down to its frozen stages
//! (`freeze_at`).

use super::bbox_head::RoiHeadSpec;
use super::conv_unit::{accumulate, ConvUnit, GradSums, Scratch};
use super::faster_rcnn::{FasterRcnnSpec, RoiExtractorSpec};
use super::faster_rcnn_rois::{RoiExtractor, Rois};
use super::fpn::{FpnLinks, FpnSpec};
use super::mask_branch::{MaskBranch, MaskInput};
use super::mask_rcnn::MaskRcnnSpec;
use super::network::ConvNet;
use super::resnet::ResNetLinks;
use std::ops::Range;

use crate::backend::Backend;
use crate::box_coder::BoxXyxy;
use crate::data::rng::Rng;
use crate::detector::{Detector, Losses};
use crate::layers::{FullyConnected, GlobalAvgPool};
use crate::rcnn::anchors::{rpn_anchors, Anchors};
use crate::rcnn::rpn_loss::{rpn_loss, RpnLevelGrad, RpnLevelOutput};
use crate::rcnn::rpn_target::{rpn_target_assign, ImInfo};
use crate::rcnn::truth::{by_class_from_zero, image_infos, image_truths, train_on_zeros};
use crate::rcnn::{
    bbox_head_detect, bbox_head_loss, collect_fpn_proposals, generate_mask_labels,
    generate_proposal_labels, generate_proposals, paste_mask, FpnLevels, Proposals, RcnnConfig,
    RoiTargets,
};
use crate::tensor::Tensor;
use crate::yolo::{Detection, GroundTruth};
use pulsefocus_formats::rle::Rle;

/// PaddleDetection's loss terms (`loss_rpn_cls`, `loss_rpn_bbox`,
/// `loss_cls`, `loss_bbox`), in that order.
pub const LOSS_NAMES: &[&str] = &["rpn_cls", "rpn_bbox", "cls", "bbox"];

/// Mask R-CNN's: Faster R-CNN's, then `loss_mask`.
pub const MASK_LOSS_NAMES: &[&str] = &["rpn_cls", "rpn_bbox", "cls", "bbox", "mask"];

/// PaddleDetection's threshold on the pasted mask probabilities
/// (`mask_encode`'s `thresh_binarize`).
const MASK_THRESHOLD: f32 = 0.5;

/// The RPN head's convs after the backbone's (and the pyramid's) units:
/// `conv_rpn`, then its two outputs `rpn_cls_logits` and `rpn_bbox_pred`
/// (output 0 and 1 below).
const RPN_UNITS: usize = 3;

/// One feature the RPN head runs on (a pyramid level, or C4's res4): its
/// size, the head's outputs on the host, and their gradients on the host
/// and the device.
struct RpnLevel<B: Backend> {
    size: [usize; 2],
    host: [Vec<f32>; 2],
    host_grads: [Vec<f32>; 2],
    grads: [Tensor<B>; 2],
}

/// What runs on each RoI's features before `cls_score` and `bbox_pred`.
enum BoxHead<B: Backend> {
    /// C4: res5 (the net's units after the RPN head's), then a global
    /// average pool.
    ResNetC5 {
        res5: ResNetLinks<B>,
        pool: GlobalAvgPool<B>,
        res5_grad: [Tensor<B>; 1],
    },
    /// FPN: `fc6` and `fc7` (the net's first two fully connected layers),
    /// and the gradient of `fc6`'s output.
    TwoFc { fc6_grad: Tensor<B> },
}

impl<B: Backend> BoxHead<B> {
    /// The net's fully connected layers that are the head's (the first
    /// ones; `cls_score` and `bbox_pred` follow).
    fn fc_count(&self) -> usize {
        match self {
            BoxHead::ResNetC5 { .. } => 0,
            BoxHead::TwoFc { .. } => 2,
        }
    }

    /// The head on the RoI features `x`; `units` and `fcs` are its own.
    fn forward(
        &mut self,
        backend: &B,
        units: &mut [ConvUnit<B>],
        fcs: &mut [FullyConnected<B>],
        x: &Tensor<B>,
        workspace: &mut Tensor<B>,
    ) {
        match self {
            BoxHead::ResNetC5 { res5, pool, .. } => {
                res5.forward(backend, units, x, workspace);
                pool.forward(backend, res5.features()[0]);
            }
            BoxHead::TwoFc { .. } => {
                let (fc6, fc7) = fcs.split_at_mut(1);
                let hidden = fc6[0].forward(backend, x);
                fc7[0].forward(backend, hidden);
            }
        }
    }

    /// C4: res5's output on the RoIs (before the pool), which the mask
    /// head reads too.
    fn res5_output(&self) -> Option<&Tensor<B>> {
        match self {
            BoxHead::ResNetC5 { res5, .. } => Some(res5.features()[0]),
            BoxHead::TwoFc { .. } => None,
        }
    }

    /// What `cls_score` and `bbox_pred` read, after `forward`.
    fn output<'a>(&'a self, fcs: &'a [FullyConnected<B>]) -> &'a Tensor<B> {
        match self {
            BoxHead::ResNetC5 { pool, .. } => pool.output(),
            BoxHead::TwoFc { .. } => fcs[1].output(),
        }
    }

    /// From `dy`, the gradient of `output()`, to the parameters' and the
    /// RoI features' (`dx`), after a `forward` on `x`. C4: `mask` (Mask
    /// R-CNN's branch, which read res5's output too) adds its gradient
    /// into res5's output's.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &mut self,
        backend: &B,
        units: &mut [ConvUnit<B>],
        fcs: &mut [FullyConnected<B>],
        x: &Tensor<B>,
        dy: &Tensor<B>,
        dx: &mut Tensor<B>,
        mask: Option<&mut MaskBranch<B>>,
        scratch: &mut Scratch<B>,
    ) {
        match self {
            BoxHead::ResNetC5 {
                res5,
                pool,
                res5_grad,
            } => {
                pool.backward(backend, res5.features()[0], dy, &mut res5_grad[0]);
                if let Some(mask) = mask {
                    mask.add_res5_rows_grad(backend, &mut res5_grad[0]);
                }
                res5.backward(backend, units, x, res5_grad, 0, Some(dx), scratch);
            }
            BoxHead::TwoFc { fc6_grad } => {
                let (fc6, fc7) = fcs.split_at_mut(1);
                fc7[0].backward(backend, fc6[0].output(), dy, Some(fc6_grad));
                fc6[0].backward(backend, x, fc6_grad, Some(dx));
            }
        }
    }

    fn planned_bytes(&self, backend: &B) -> usize {
        match self {
            BoxHead::ResNetC5 {
                res5,
                pool,
                res5_grad,
            } => {
                res5.planned_bytes(backend)
                    + pool.planned_bytes(backend)
                    + res5_grad[0].capacity_bytes(backend)
            }
            BoxHead::TwoFc { fc6_grad } => fc6_grad.capacity_bytes(backend),
        }
    }
}

/// The features the heads read, lowest level first: the backbone's one
/// feature (C4), or the pyramid's outputs P2..P6. `body` are the units
/// before the RPN head's: the backbone's, then the pyramid's.
fn head_features<'a, B: Backend>(
    backbone: &'a ResNetLinks<B>,
    fpn: Option<&'a FpnLinks<B>>,
    body: &'a [ConvUnit<B>],
    backbone_units: usize,
) -> Vec<&'a Tensor<B>> {
    match fpn {
        None => backbone.features(),
        Some(fpn) => fpn
            .outputs(&body[backbone_units..])
            .into_iter()
            .rev()
            .collect(),
    }
}

/// The RPN head's three units on one feature.
fn rpn_forward<B: Backend>(
    backend: &B,
    units: &mut [ConvUnit<B>],
    x: &Tensor<B>,
    workspace: &mut Tensor<B>,
) {
    let (conv, outputs) = units.split_at_mut(1);
    let hidden = conv[0].forward(backend, x, workspace);
    for unit in outputs {
        unit.forward(backend, hidden, workspace);
    }
}

/// A Faster R-CNN (C4 or FPN) with its operator settings and the buffers
/// of a step.
pub struct FasterRcnnDetector<B: Backend> {
    pub spec: FasterRcnnSpec,
    pub config: RcnnConfig,
    /// Conv units: the backbone's, the pyramid's (FPN), the RPN head's,
    /// res5's (C4); fully connected layers: `fc6`, `fc7` (FPN),
    /// `cls_score`, `bbox_pred`.
    pub net: ConvNet<B>,
    backbone: ResNetLinks<B>,
    backbone_units: usize,
    /// FPN: the pyramid on the backbone's features, and their gradients.
    fpn: Option<FpnLinks<B>>,
    body_grads: Vec<Tensor<B>>,
    /// The RPN head's first unit.
    rpn_unit: usize,
    /// One per feature the heads read, lowest level first, and those
    /// features' gradients (the RPN head's and RoIAlign's).
    levels: Vec<RpnLevel<B>>,
    level_grads: Vec<Tensor<B>>,
    /// The RPN head's parameter gradients summed over the levels.
    rpn_param_sums: GradSums<B>,
    rois: Rois<B>,
    extractor: RoiExtractor<B>,
    box_head: BoxHead<B>,
    /// `cls_score`'s and `bbox_pred`'s outputs on the host in Paddle's
    /// order of the RoIs, their gradients there, and on the device in the
    /// device's order.
    box_host: [Vec<f32>; 2],
    box_host_grads: [Vec<f32>; 2],
    box_grads: [Tensor<B>; 2],
    /// Gradients on the way down: of the RoI head's output, of the RoI
    /// features, of `conv_rpn`'s output, and a feature-sized part.
    head_grad: Tensor<B>,
    head_grad_part: Tensor<B>,
    roi_features_grad: Tensor<B>,
    rpn_conv_grad: Tensor<B>,
    rpn_conv_grad_part: Tensor<B>,
    feature_grad_part: Tensor<B>,
    scratch: Scratch<B>,
    /// The anchors of the last feature sizes, the levels one after another.
    anchors: Option<(Vec<[usize; 2]>, Anchors)>,
    /// Draws `rpn_target_assign`'s and `generate_proposal_labels`' samples.
    rng: Rng,
    /// Mask R-CNN: the mask branch and the last `detect`'s masks.
    mask: Option<MaskBranch<B>>,
    masks: Vec<Vec<Rle>>,
}

/// The RoI extractor `extractor` describes on the features of `fpn` (None:
/// C4's one feature): the features' count, the extractor, and for FPN the
/// levels its RoIs are distributed over.
fn roi_extractor<B: Backend>(
    backend: &B,
    fpn: Option<&FpnSpec>,
    extractor: &RoiExtractorSpec,
) -> (usize, RoiExtractor<B>, Option<FpnLevels>) {
    match (fpn, extractor) {
        (
            None,
            &RoiExtractorSpec::RoiAlign {
                resolution,
                sampling_ratio,
                spatial_scale,
            },
        ) => {
            let extractor =
                RoiExtractor::new(backend, resolution, sampling_ratio, &[spatial_scale], 0);
            (1, extractor, None)
        }
        (
            Some(fpn),
            &RoiExtractorSpec::FpnRoiAlign {
                resolution,
                sampling_ratio,
                canonical_level,
                canonical_size,
                min_level,
                max_level,
            },
        ) => {
            assert!(
                fpn.min_level <= min_level && max_level <= fpn.max_level,
                "FPNRoIAlign's levels {min_level}..={max_level} must be the pyramid's"
            );
            let mut scales = fpn.output_scales();
            scales.reverse();
            let first = min_level - fpn.min_level;
            let levels = FpnLevels {
                min_level,
                max_level,
                refer_level: canonical_level,
                refer_scale: canonical_size,
            };
            let extractor = RoiExtractor::new(
                backend,
                resolution,
                sampling_ratio,
                &scales[first..=max_level - fpn.min_level],
                first,
            );
            (scales.len(), extractor, Some(levels))
        }
        _ => unreachable!("C4 pools with RoIAlign, FPN with FPNRoIAlign"),
    }
}

impl<B: Backend> FasterRcnnDetector<B> {
    /// Builds the model with PaddleDetection's initial values drawn from
    /// `seed`, the backbone frozen up to `freeze_at` and its norms as
    /// `freeze_norm` says.
    pub fn new(backend: &B, spec: FasterRcnnSpec, config: RcnnConfig, seed: u64) -> Self {
        FasterRcnnDetector::build(backend, spec, None, config, seed)
    }

    /// Mask R-CNN: `spec`'s Faster R-CNN with its mask branch; the
    /// parameters are in Paddle's order, the mask head's last.
    pub fn with_mask_head(backend: &B, spec: MaskRcnnSpec, config: RcnnConfig, seed: u64) -> Self {
        let faster_rcnn = spec.faster_rcnn.clone();
        FasterRcnnDetector::build(backend, faster_rcnn, Some(spec), config, seed)
    }

    fn build(
        backend: &B,
        spec: FasterRcnnSpec,
        mask_spec: Option<MaskRcnnSpec>,
        config: RcnnConfig,
        seed: u64,
    ) -> Self {
        let empty = || Tensor::zeros(backend, &[0]);
        let backbone = ResNetLinks::backbone(backend, &spec.backbone);
        let backbone_units = backbone.unit_count();
        let fpn_units = spec.fpn_units();
        let rpn_unit = backbone_units + fpn_units.len();
        let mut units = spec.backbone.units();
        units.extend(fpn_units);
        units.extend(spec.rpn.units());
        units.extend(spec.roi_head.conv_units());
        let mask_unit = units.len();
        let mut fcs = spec.roi_head.fc_layers();
        fcs.extend(spec.bbox_head().layers());
        let mut net = match &mask_spec {
            None => ConvNet::with_fcs(backend, units, fcs, seed),
            Some(whole) => {
                let head = &whole.mask_head;
                units.extend(head.conv_units());
                units.push(head.logits());
                let order = whole.param_specs();
                ConvNet::with_transposed(backend, units, fcs, &[head.upsample()], &order, seed)
            }
        };
        net.freeze_units(spec.backbone.frozen_units());
        net.freeze_norm(spec.backbone.freeze_norm);
        let rpn_param_sums = GradSums::new(backend, &mut net.units[rpn_unit..][..RPN_UNITS]);

        // The features, lowest level first, and the RoIs' levels among them.
        let (level_count, extractor, roi_levels) =
            roi_extractor(backend, spec.fpn.as_ref(), &spec.roi_extractor);
        let mask = mask_spec.map(|whole| {
            let head = &whole.mask_head;
            let (input, rois) = match &whole.mask_roi_extractor {
                Some(e) => {
                    let (_, extractor, levels) = roi_extractor(backend, spec.fpn.as_ref(), e);
                    (MaskInput::Pyramid(extractor), Rois::new(backend, levels))
                }
                None => {
                    let input = MaskInput::Res5 {
                        rows: empty(),
                        blocks: Vec::new(),
                        rows_grad: empty(),
                    };
                    (input, Rois::new(backend, roi_levels.clone()))
                }
            };
            MaskBranch::new(
                backend,
                (mask_unit, head.num_convs),
                (head.num_classes, head.resolution),
                input,
                rois,
            )
        });
        let box_head = match &spec.roi_head {
            RoiHeadSpec::ResNetC5(c5) => BoxHead::ResNetC5 {
                res5: ResNetLinks::head(backend, c5),
                pool: GlobalAvgPool::new(backend),
                res5_grad: [empty()],
            },
            RoiHeadSpec::TwoFc(_) => BoxHead::TwoFc { fc6_grad: empty() },
        };
        FasterRcnnDetector {
            net,
            backbone,
            backbone_units,
            fpn: spec.fpn.as_ref().map(|f| FpnLinks::new(backend, f)),
            body_grads: spec.backbone.feature_maps.iter().map(|_| empty()).collect(),
            rpn_unit,
            levels: (0..level_count)
                .map(|_| RpnLevel {
                    size: [0, 0],
                    host: Default::default(),
                    host_grads: Default::default(),
                    grads: [empty(), empty()],
                })
                .collect(),
            level_grads: (0..level_count).map(|_| empty()).collect(),
            rpn_param_sums,
            rois: Rois::new(backend, roi_levels),
            extractor,
            box_head,
            box_host: Default::default(),
            box_host_grads: Default::default(),
            box_grads: [empty(), empty()],
            head_grad: empty(),
            head_grad_part: empty(),
            roi_features_grad: empty(),
            rpn_conv_grad: empty(),
            rpn_conv_grad_part: empty(),
            feature_grad_part: empty(),
            scratch: Scratch::new(backend),
            anchors: None,
            rng: Rng::from_state(seed ^ 0x5a17_c0de),
            mask,
            masks: Vec::new(),
            spec,
            config,
        }
    }

    /// The backbone, the pyramid and the RPN head on `image`; the head's
    /// outputs are then on the host and the anchors those of the features'
    /// sizes.
    fn forward_rpn(&mut self, image: &Tensor<B>) {
        let backend = self.net.backend().clone();
        let workspace = &mut self.scratch.workspace;
        let (body, rest) = self.net.units.split_at_mut(self.rpn_unit);
        let (backbone, pyramid) = body.split_at_mut(self.backbone_units);
        self.backbone.forward(&backend, backbone, image, workspace);
        if let Some(fpn) = &mut self.fpn {
            fpn.forward(&backend, pyramid, &self.backbone.features(), workspace);
        }
        let features = head_features(&self.backbone, self.fpn.as_ref(), body, self.backbone_units);
        let rpn_units = &mut rest[..RPN_UNITS];
        for (level, x) in self.levels.iter_mut().zip(features) {
            rpn_forward(&backend, rpn_units, x, workspace);
            for (k, host) in level.host.iter_mut().enumerate() {
                let out = rpn_units[1 + k].output();
                host.resize(out.numel(), 0.0);
                backend.download(out.buf(), host);
            }
            let (_, _, h, w) = x.nchw();
            level.size = [h, w];
        }
        let sizes: Vec<[usize; 2]> = self.levels.iter().map(|l| l.size).collect();
        if self.anchors.as_ref().is_none_or(|(s, _)| *s != sizes) {
            let anchors = rpn_anchors(&self.spec.rpn, &sizes);
            self.anchors = Some((sizes, anchors));
        }
    }

    /// Each image's proposals from the last `forward_rpn`:
    /// `generate_proposals` per level, then (FPN) `collect_fpn_proposals`.
    fn proposals(&self, im_info: &[[f32; 3]], training: bool) -> Vec<Vec<BoxXyxy>> {
        let (_, anchors) = self.anchors.as_ref().expect("forward_rpn made the anchors");
        let cfg = if training {
            &self.config.train_proposal
        } else {
            &self.config.test_proposal
        };
        let per_cell = self.spec.rpn.anchors_per_cell();
        let mut first = 0;
        let mut per_level: Vec<Vec<Proposals>> = self
            .levels
            .iter()
            .map(|level| {
                let [h, w] = level.size;
                let count = h * w * per_cell;
                let boxes = &anchors.boxes[first..][..count];
                let variances = &anchors.variances[first..][..count];
                first += count;
                im_info
                    .iter()
                    .enumerate()
                    .map(|(n, &info)| {
                        let scores: Vec<f32> = level.host[0][n * count..][..count]
                            .iter()
                            .map(|&x| 1.0 / (1.0 + (-x).exp()))
                            .collect();
                        let deltas = &level.host[1][n * 4 * count..][..4 * count];
                        generate_proposals(cfg, &scores, deltas, boxes, variances, (h, w), info)
                    })
                    .collect()
            })
            .collect();
        let proposals = match self.fpn {
            None => per_level.pop().expect("one level"),
            Some(_) => collect_fpn_proposals(&per_level, cfg.post_nms_top_n),
        };
        proposals.into_iter().map(|p| p.boxes).collect()
    }

    /// The net's units of the RoI head (C4's res5) end here; the mask
    /// head's follow.
    fn roi_head_end(&self) -> usize {
        self.mask
            .as_ref()
            .map_or(self.net.units.len(), |m| m.first_unit)
    }

    /// RoIAlign and the RoI head (res5 and the pool, or `fc6` and `fc7`) on
    /// the RoIs in `self.rois`, or with `on_mask_rois` on the mask
    /// branch's (C4 Mask R-CNN at inference); uploaded.
    fn forward_roi_head(&mut self, on_mask_rois: bool) {
        let backend = self.net.backend().clone();
        let head_units = self.rpn_unit + RPN_UNITS..self.roi_head_end();
        let (body, rest) = self.net.units.split_at_mut(self.rpn_unit);
        let features = head_features(&self.backbone, self.fpn.as_ref(), body, self.backbone_units);
        let rois = match (&self.mask, on_mask_rois) {
            (Some(mask), true) => &mask.rois,
            _ => &self.rois,
        };
        let roi_features = self.extractor.forward(&backend, &features, rois);
        let head_units =
            &mut rest[head_units.start - self.rpn_unit..head_units.end - self.rpn_unit];
        let head_fcs = &mut self.net.fcs[..self.box_head.fc_count()];
        self.box_head.forward(
            &backend,
            head_units,
            head_fcs,
            roi_features,
            &mut self.scratch.workspace,
        );
    }

    /// RoIAlign, the RoI head and both fully connected layers on the RoIs
    /// in `self.rois` (uploaded); their outputs are then on the host, in
    /// Paddle's order.
    fn forward_box_head(&mut self) {
        let backend = self.net.backend().clone();
        self.forward_roi_head(false);
        let (head_fcs, outputs) = self.net.fcs.split_at_mut(self.box_head.fc_count());
        let x = self.box_head.output(head_fcs);
        for (k, fc) in outputs.iter_mut().enumerate() {
            let out = fc.forward(&backend, x);
            self.box_host[k].resize(out.numel(), 0.0);
            backend.download(out.buf(), &mut self.box_host[k]);
            self.rois
                .to_paddle_order(&mut self.box_host[k], fc.spec.outputs);
        }
    }

    /// Uploads the gradients of the RPN head's outputs (`levels[_].host_grads`).
    fn upload_rpn_grads(&mut self) {
        let backend = self.net.backend().clone();
        let per_cell = self.spec.rpn.anchors_per_cell();
        for level in &mut self.levels {
            let [h, w] = level.size;
            let batch = level.host[0].len() / (per_cell * h * w);
            for (k, channels) in [per_cell, 4 * per_cell].into_iter().enumerate() {
                level.grads[k].reshape_reuse(&backend, &[batch, channels, h, w]);
                level.grads[k].upload(&backend, &level.host_grads[k]);
            }
        }
    }

    /// Uploads the gradients of the box head's outputs (`box_host_grads`,
    /// Paddle's order).
    fn upload_box_grads(&mut self) {
        let backend = self.net.backend().clone();
        let rows = self.rois.boxes.len();
        let classes = self.spec.num_classes;
        for (k, width) in [classes, 4 * classes].into_iter().enumerate() {
            let grad = &mut self.box_host_grads[k];
            self.rois.to_device_order(grad, width);
            self.box_grads[k].reshape_reuse(&backend, &[rows, width]);
            self.box_grads[k].upload(&backend, grad);
        }
    }

    /// The mask head on the RoIs in the mask branch's `rois` (uploaded):
    /// their features cut from the pyramid (FPN), or (C4) the rows `blocks`
    /// of res5's output on the box head's RoIs, after `forward_roi_head`.
    /// The logits are then on the host, in the device's order.
    fn forward_mask_head(&mut self, blocks: Vec<Range<usize>>) {
        let backend = self.net.backend().clone();
        let mask = self.mask.as_mut().expect("a mask head");
        match &mask.input {
            MaskInput::Pyramid(_) => {
                let body = &self.net.units[..self.rpn_unit];
                let features =
                    head_features(&self.backbone, self.fpn.as_ref(), body, self.backbone_units);
                mask.extract(&backend, &features);
            }
            MaskInput::Res5 { .. } => {
                let res5 = self
                    .box_head
                    .res5_output()
                    .expect("C4 runs res5 on the RoIs");
                mask.gather_res5_rows(&backend, res5, blocks);
            }
        }
        mask.forward(
            &backend,
            &mut self.net.units,
            &mut self.net.transposed[0],
            &mut self.scratch.workspace,
        );
    }

    /// Mask R-CNN in training, after `forward_box_head`: the mask head on the
    /// mask RoIs (in the mask branch's `rois`, not uploaded; C4: the rows
    /// `blocks` of the box head's RoIs) and its loss against their classes
    /// and targets (`MaskBranch::loss`).
    fn mask_loss(
        &mut self,
        blocks: Vec<Range<usize>>,
        classes: Vec<f32>,
        targets: Vec<f32>,
    ) -> f32 {
        let backend = self.net.backend().clone();
        let mask = self.mask.as_mut().expect("a mask head");
        mask.rois.upload(&backend);
        self.forward_mask_head(blocks);
        let mask = self.mask.as_mut().expect("a mask head");
        mask.loss(&backend, &mut self.net.units, classes, targets)
    }

    /// Mask R-CNN at inference: each detection's mask in its picture, from
    /// the mask head on the detected boxes (`found`, per image, boxes in
    /// the image's pixels; `im_info` and `original_sizes` as `detect`
    /// takes them), after `forward_rpn`.
    fn detect_masks(
        &mut self,
        found: &[Vec<Detection>],
        im_info: &[[f32; 3]],
        original_sizes: &[[u32; 2]],
    ) -> Vec<Vec<Rle>> {
        let backend = self.net.backend().clone();
        let mask = self.mask.as_mut().expect("a mask head");
        mask.rois.clear();
        for (n, dets) in found.iter().enumerate() {
            let scale = im_info[n][2];
            for d in dets {
                mask.rois.images.push(n);
                mask.rois.boxes.push(d.bbox.map(|v| v * scale));
            }
        }
        let count = mask.rois.boxes.len();
        if count == 0 {
            return vec![Vec::new(); found.len()];
        }
        mask.rois.upload(&backend);
        if let MaskInput::Res5 { .. } = mask.input {
            // C4: res5 again, on the detected boxes.
            self.forward_roi_head(true);
        }
        self.forward_mask_head(std::iter::once(0..count).collect());
        let mask = self.mask.as_mut().expect("a mask head");
        mask.download_logits(&backend, &mut self.net.units);
        let m = mask.resolution;
        let width = mask.num_classes * m * m;
        mask.rois.to_paddle_order(&mut mask.logits, width);
        let mut rows = mask.logits.chunks_exact(width);
        found
            .iter()
            .zip(original_sizes)
            .map(|(dets, &[ow, oh])| {
                dets.iter()
                    .map(|d| {
                        let row = rows.next().expect("one logit row per detection");
                        // The detection's class map (class 0 is the background).
                        let logits = &row[(d.class + 1) * m * m..][..m * m];
                        let probs: Vec<f32> =
                            logits.iter().map(|&x| 1.0 / (1.0 + (-x).exp())).collect();
                        paste_mask(&probs, m, &d.bbox, oh, ow, MASK_THRESHOLD)
                    })
                    .collect()
            })
            .collect()
    }

    /// Backward from the uploaded gradients of the box head's and the RPN's
    /// outputs (and the mask head's on the host), after a training forward
    /// on `image`.
    fn backward(&mut self, image: &Tensor<B>) {
        let backend = self.net.backend().clone();
        let stop = self.net.frozen_units();
        // The mask head first: C4's box head adds the gradient of its
        // input into res5's output's.
        if let Some(mask) = &mut self.mask {
            mask.backward(
                &backend,
                &mut self.net.units,
                &mut self.net.transposed[0],
                &mut self.scratch,
            );
        }
        let head_end = self.roi_head_end() - self.rpn_unit - RPN_UNITS;
        let (body, rest) = self.net.units.split_at_mut(self.rpn_unit);
        let (rpn_units, head_units) = rest.split_at_mut(RPN_UNITS);
        let head_units = &mut head_units[..head_end];
        let (head_fcs, outputs) = self.net.fcs.split_at_mut(self.box_head.fc_count());

        // The box head: both output layers read the RoI head's output.
        let x = self.box_head.output(head_fcs);
        for (k, fc) in outputs.iter_mut().enumerate() {
            let dx = if k == 0 {
                &mut self.head_grad
            } else {
                &mut self.head_grad_part
            };
            fc.backward(&backend, x, &self.box_grads[k], Some(dx));
        }
        accumulate(&backend, &self.head_grad_part, &mut self.head_grad);
        self.box_head.backward(
            &backend,
            head_units,
            head_fcs,
            self.extractor.output(),
            &self.head_grad,
            &mut self.roi_features_grad,
            self.mask.as_mut(),
            &mut self.scratch,
        );

        // The RPN head on each level, the last run forward first: the others
        // run forward again for the activations their backward reads. The
        // parameter gradients are summed over the levels in
        // `rpn_param_sums`.
        let features_trained = self.fpn.is_some() || stop < self.backbone_units;
        let features = head_features(&self.backbone, self.fpn.as_ref(), body, self.backbone_units);
        let last = self.levels.len() - 1;
        for l in (0..=last).rev() {
            if l < last {
                rpn_forward(
                    &backend,
                    rpn_units,
                    features[l],
                    &mut self.scratch.workspace,
                );
            }
            let (conv, outputs) = rpn_units.split_at_mut(1);
            for (k, unit) in outputs.iter_mut().enumerate() {
                let dx = if k == 0 {
                    &mut self.rpn_conv_grad
                } else {
                    &mut self.rpn_conv_grad_part
                };
                unit.backward(
                    &backend,
                    conv[0].output(),
                    &self.levels[l].grads[k],
                    &mut self.scratch.dz,
                    Some(dx),
                    &mut self.scratch.workspace,
                );
            }
            accumulate(&backend, &self.rpn_conv_grad_part, &mut self.rpn_conv_grad);
            conv[0].backward(
                &backend,
                features[l],
                &self.rpn_conv_grad,
                &mut self.scratch.dz,
                features_trained.then_some(&mut self.level_grads[l]),
                &mut self.scratch.workspace,
            );
            self.rpn_param_sums.add(&backend, rpn_units);
        }
        self.rpn_param_sums.finish(rpn_units);
        if !features_trained {
            return;
        }
        self.extractor.backward(
            &backend,
            &features,
            &self.rois,
            &self.roi_features_grad,
            &mut self.level_grads,
            &mut self.feature_grad_part,
        );
        if let (Some(mask), Some(_)) = (&mut self.mask, &self.fpn) {
            mask.extract_backward(
                &backend,
                &features,
                &mut self.level_grads,
                &mut self.feature_grad_part,
            );
        }

        // The pyramid, then the backbone.
        let backbone_trained = stop < self.backbone_units;
        let (backbone, pyramid) = body.split_at_mut(self.backbone_units);
        let feature_grads = match &mut self.fpn {
            None => &self.level_grads,
            Some(fpn) => {
                let deepest_first: Vec<&Tensor<B>> = self.level_grads.iter().rev().collect();
                fpn.backward(
                    &backend,
                    pyramid,
                    &self.backbone.features(),
                    &deepest_first,
                    &mut self.body_grads,
                    self.backbone.frozen_features(stop),
                    &mut self.scratch,
                );
                &self.body_grads
            }
        };
        if backbone_trained {
            self.backbone.backward(
                &backend,
                backbone,
                image,
                feature_grads,
                stop,
                None,
                &mut self.scratch,
            );
        }
    }

    /// Bytes held now on the device and the host.
    fn planned_bytes(&self) -> usize {
        let b = self.net.backend();
        let tensors = self
            .levels
            .iter()
            .flat_map(|l| &l.grads)
            .chain(&self.level_grads)
            .chain(&self.body_grads)
            .chain(&self.box_grads)
            .chain([
                &self.head_grad,
                &self.head_grad_part,
                &self.roi_features_grad,
                &self.rpn_conv_grad,
                &self.rpn_conv_grad_part,
                &self.feature_grad_part,
            ])
            .map(|t| t.capacity_bytes(b))
            .sum::<usize>();
        let host = self
            .levels
            .iter()
            .flat_map(|l| l.host.iter().chain(&l.host_grads))
            .chain(&self.box_host)
            .chain(&self.box_host_grads)
            .map(|v| v.capacity() * 4)
            .sum::<usize>();
        self.net.planned_bytes()
            + self.backbone.planned_bytes(b)
            + self.fpn.as_ref().map_or(0, |f| f.planned_bytes(b))
            + self.box_head.planned_bytes(b)
            + self.extractor.planned_bytes(b)
            + self.rois.planned_bytes(b)
            + self.scratch.planned_bytes(b)
            + self.rpn_param_sums.planned_bytes(b)
            + self.mask.as_ref().map_or(0, |m| m.planned_bytes(b))
            + tensors
            + host
    }
}

impl<B: Backend> Detector<B> for FasterRcnnDetector<B> {
    fn net(&self) -> &ConvNet<B> {
        &self.net
    }

    fn net_mut(&mut self) -> &mut ConvNet<B> {
        &mut self.net
    }

    fn loss_names(&self) -> &'static [&'static str] {
        match self.mask {
            None => LOSS_NAMES,
            Some(_) => MASK_LOSS_NAMES,
        }
    }

    fn plan(&mut self, batch: usize, size: usize) -> usize {
        // The pyramid takes images padded to its coarsest stride (PadBatch).
        let stride = self
            .spec
            .fpn
            .as_ref()
            .map_or(1, |f| (1.0 / f.spatial_scale[0]).round() as usize);
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
        self.forward_rpn(image);

        // The RPN's loss over the batch and every level.
        let (_, anchors) = self.anchors.as_ref().expect("forward_rpn made the anchors");
        let targets: Vec<_> = truths
            .iter()
            .zip(&im_info)
            .map(|(t, &[height, width, scale])| {
                rpn_target_assign(
                    &anchors.boxes,
                    &t.boxes,
                    &vec![false; t.boxes.len()],
                    ImInfo {
                        height,
                        width,
                        scale,
                    },
                    &self.config.rpn_target,
                    &mut self.rng,
                )
            })
            .collect();
        let (outputs, mut grads): (Vec<_>, Vec<_>) = self
            .levels
            .iter_mut()
            .map(|level| {
                let [height, width] = level.size;
                let host: &[Vec<f32>; 2] = &level.host;
                let [cls, bbox] = &mut level.host_grads;
                cls.resize(host[0].len(), 0.0);
                bbox.resize(host[1].len(), 0.0);
                (
                    RpnLevelOutput {
                        height,
                        width,
                        cls_logits: &host[0],
                        bbox_pred: &host[1],
                    },
                    RpnLevelGrad {
                        cls_logits: cls,
                        bbox_pred: bbox,
                    },
                )
            })
            .unzip();
        let rpn = rpn_loss(
            &outputs,
            self.spec.rpn.anchors_per_cell(),
            &targets,
            &mut grads,
        );
        self.upload_rpn_grads();

        // The RoIs the box head learns from, and their targets.
        self.rois.clear();
        let classes = self.spec.num_classes;
        let mut labels = Vec::new();
        let mut bbox_targets = Vec::new();
        let mut bbox_weights = Vec::new();
        let proposals = self.proposals(&im_info, true);
        // Mask R-CNN: the mask RoIs, their targets, and (C4) the blocks of
        // the box head's RoIs they are.
        let mut mask_blocks: Vec<Range<usize>> = Vec::new();
        let mut mask_classes = Vec::new();
        let mut mask_targets = Vec::new();
        if let Some(mask) = &mut self.mask {
            mask.rois.clear();
        }
        for (n, ((t, &info), proposals)) in truths.iter().zip(&im_info).zip(proposals).enumerate() {
            let sampled = generate_proposal_labels(
                &self.config.bbox_assigner,
                &proposals,
                &t.boxes,
                &t.classes,
                &vec![false; t.boxes.len()],
                info,
                &mut self.rng,
            );
            if let Some(mask) = &mut self.mask {
                let polygons = truth.polygons.get(n).expect(
                    "a mask head trains on each image's polygons (the reader's with_polygons)",
                );
                let polygons: Vec<Vec<Vec<f32>>> =
                    t.slots.iter().map(|&k| polygons[k].clone()).collect();
                let [height, width, scale] = info;
                let targets = generate_mask_labels(
                    &sampled.rois,
                    &sampled.labels,
                    ImInfo {
                        height,
                        width,
                        scale,
                    },
                    &polygons,
                    &t.classes,
                    &vec![false; t.boxes.len()],
                    classes,
                    mask.resolution,
                )
                .expect("the COCO reader gives every non-crowd box polygons of 3 points or more");
                // The indices are into this image's RoIs; the box head's
                // rows are the batch's, this image's from `first`. (Paddle's
                // MaskRCNN gathers with `RoiHasMaskInt32` as it is, so at a
                // batch of two its C4 mask head reads the first image's rows
                // for the second; the configs train one image a batch.)
                let first = self.rois.boxes.len();
                let cells = mask.resolution * mask.resolution;
                let row = classes * cells;
                for (r, &i) in targets.roi_indices.iter().enumerate() {
                    match mask_blocks.last_mut() {
                        Some(block) if block.end == first + i => block.end += 1,
                        _ => mask_blocks.push(first + i..first + i + 1),
                    }
                    // The RoI's class map of `MaskInt32` (all -1 for a
                    // placeholder row, whose label is the background).
                    let class = sampled.labels[i] as usize;
                    let target = &targets.targets[r * row + class * cells..][..cells];
                    mask_classes.push(if class > 0 { class as f32 } else { -1.0 });
                    mask_targets.extend(target.iter().map(|&t| t.max(0) as f32));
                }
                mask.rois
                    .images
                    .extend(std::iter::repeat_n(n, targets.rois.len()));
                mask.rois.boxes.extend(&targets.rois);
            }
            self.rois
                .images
                .extend(std::iter::repeat_n(n, sampled.rois.len()));
            self.rois.boxes.extend(&sampled.rois);
            labels.extend(&sampled.labels);
            bbox_targets.extend(&sampled.bbox_targets);
            bbox_weights.extend(&sampled.bbox_inside_weights);
        }
        self.rois.upload(&backend);
        self.forward_box_head();
        for k in 0..2 {
            let len = self.box_host[k].len();
            self.box_host_grads[k].resize(len, 0.0);
        }
        let [grad_cls, grad_bbox] = &mut self.box_host_grads;
        let boxes = bbox_head_loss(
            &self.box_host[0],
            &self.box_host[1],
            classes,
            &RoiTargets {
                labels: &labels,
                bbox_targets: &bbox_targets,
                bbox_inside_weights: &bbox_weights,
                bbox_outside_weights: &bbox_weights,
            },
            grad_cls,
            grad_bbox,
        );
        self.upload_box_grads();
        let mut losses = vec![rpn.loss_rpn_cls, rpn.loss_rpn_bbox, boxes.cls, boxes.bbox];
        if self.mask.is_some() {
            losses.push(self.mask_loss(mask_blocks, mask_classes, mask_targets));
        }
        self.backward(image);
        Losses::new(self.loss_names(), &losses)
    }

    fn detect(
        &mut self,
        image: &Tensor<B>,
        original_sizes: &[[u32; 2]],
        im_info: &[[f32; 3]],
    ) -> Vec<Vec<Detection>> {
        let backend = self.net.backend().clone();
        let im_info = image_infos(image, im_info);
        self.forward_rpn(image);
        self.rois.clear();
        let mut counts = Vec::with_capacity(im_info.len());
        for (n, proposals) in self.proposals(&im_info, false).into_iter().enumerate() {
            counts.push(proposals.len());
            self.rois
                .images
                .extend(std::iter::repeat_n(n, proposals.len()));
            self.rois.boxes.extend(proposals);
        }
        if self.rois.boxes.is_empty() {
            self.masks = vec![Vec::new(); im_info.len()];
            return vec![Vec::new(); im_info.len()];
        }
        self.rois.upload(&backend);
        self.forward_box_head();
        let classes = self.spec.num_classes;
        let mut first = 0;
        let found: Vec<Vec<Detection>> = counts
            .iter()
            .zip(&im_info)
            .zip(original_sizes)
            .map(|((&count, info), &[ow, oh])| {
                let rows = first..first + count;
                first += count;
                let found = bbox_head_detect(
                    &self.config,
                    &self.rois.boxes[rows.clone()],
                    info[2],
                    &[oh as f32, ow as f32, 1.0],
                    &self.box_host[0][rows.start * classes..rows.end * classes],
                    &self.box_host[1][rows.start * 4 * classes..rows.end * 4 * classes],
                );
                // Paddle lists a class's detections by RoI.
                by_class_from_zero(found)
            })
            .collect();
        if self.mask.is_some() {
            self.masks = self.detect_masks(&found, &im_info, original_sizes);
        }
        found
    }

    fn boxes_normalized(&self) -> bool {
        false
    }

    fn masks(&self) -> Option<&[Vec<Rle>]> {
        self.mask.as_ref().map(|_| &self.masks[..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_params, probe_loss, random_vec, Probe, SEEDS};
    use crate::models::mask_rcnn::MaskRcnnSpec;
    use crate::CpuBackend;

    fn image(cpu: &CpuBackend, n: usize, h: usize, w: usize, seed: u64) -> Tensor<CpuBackend> {
        Tensor::from_host(cpu, &[n, 3, h, w], &random_vec(seed, n * 3 * h * w))
    }

    fn faster_rcnn(
        cpu: &CpuBackend,
        spec: FasterRcnnSpec,
        seed: u64,
    ) -> FasterRcnnDetector<CpuBackend> {
        let config = RcnnConfig::faster_rcnn(spec.num_classes);
        FasterRcnnDetector::new(cpu, spec, config, seed)
    }

    fn mask_rcnn(
        cpu: &CpuBackend,
        spec: MaskRcnnSpec,
        seed: u64,
    ) -> FasterRcnnDetector<CpuBackend> {
        let config = RcnnConfig::faster_rcnn(spec.faster_rcnn.num_classes);
        FasterRcnnDetector::with_mask_head(cpu, spec, config, seed)
    }

    /// A planned model (C4 and FPN) trains a pass with finite, non-zero
    /// loss terms and detects with classes numbered from 0 over the object
    /// classes.
    #[test]
    fn small_models_train_a_pass_and_detect() {
        let cpu = CpuBackend::new();
        for spec in [FasterRcnnSpec::small_c4(4), FasterRcnnSpec::small_fpn(4)] {
            let mut model = FasterRcnnDetector::new(&cpu, spec, RcnnConfig::faster_rcnn(4), 7);
            // FPN plans on 96: 90 rounded up to a multiple of 32.
            assert!(model.plan(1, 90) > 0);
            let image = image(&cpu, 1, 96, 128, 3);
            let boxes = [0.4, 0.5, 0.3, 0.4, 0.7, 0.3, 0.2, 0.2];
            let labels = [1, 3];
            let truth = GroundTruth {
                boxes: &boxes,
                labels: &labels,
                scores: None,
                max_boxes: 2,
                polygons: &[],
            };
            let losses = model.train_pass(&image, &truth, &[[96.0, 128.0, 1.0]]);
            assert!(losses.values().iter().all(|v| v.is_finite()), "{losses:?}");
            assert!(
                losses.values()[0] > 0.0 && losses.values()[2] > 0.0,
                "{losses:?}"
            );
            let found = model.detect(&image, &[[128, 96]], &[[96.0, 128.0, 1.0]]);
            assert_eq!(found.len(), 1);
            assert!(found[0].iter().all(|d| d.class < 3));
        }
    }

    /// The FPN model's batch norms are frozen (`freeze_norm`), its stem and
    /// res2 (`freeze_at: 2`) too, and its parameters are Paddle's in
    /// Paddle's order.
    #[test]
    fn fpn_model_freezes_as_the_config_says() {
        let cpu = CpuBackend::new();
        let spec = FasterRcnnSpec::small_fpn(4);
        let model = FasterRcnnDetector::new(&cpu, spec.clone(), RcnnConfig::faster_rcnn(4), 7);
        let specs: Vec<_> = model
            .net
            .slots()
            .iter()
            .map(|s| s.param.spec.clone())
            .collect();
        assert_eq!(specs, spec.param_specs());
        let trained = |name: &str| {
            let slot = model.net.slots().iter().find(|s| s.param.spec.name == name);
            model.net.is_trained(slot.expect(name))
        };
        assert!(!trained("bn3a_branch2a_scale"));
        assert!(!trained("res2a_branch2a_weights"));
        assert!(trained("res3a_branch2a_weights"));
        assert!(trained("fc6_w"));
    }

    /// The wiring of the backward pass of `spec`'s model, whatever the
    /// targets: with fixed RoIs (the samplers pick them on the host and no
    /// gradient flows into their boxes, as in Paddle) on a `[2, 3, h, w]`
    /// image and random probes as the gradients of the RPN's outputs on
    /// every level and of the box head's, every parameter in `names` has
    /// the finite difference of `sum(outputs * probes)` as its gradient.
    ///
    /// A Mask R-CNN (`build` makes the model from a seed) runs its mask head
    /// on the first two RoIs as well, with a probe on its logits.
    fn check_backward_wiring(
        build: impl Fn(&CpuBackend, u64) -> FasterRcnnDetector<CpuBackend>,
        (h, w): (usize, usize),
        rois: &[BoxXyxy],
        names: &[&str],
    ) {
        let cpu = CpuBackend::new();
        for seed in SEEDS {
            let mut model = build(&cpu, seed);
            let image = image(&cpu, 2, h, w, seed + 100);
            let run = |m: &mut FasterRcnnDetector<CpuBackend>| {
                m.forward_rpn(&image);
                m.rois.clear();
                m.rois.boxes.extend(rois);
                m.rois.images.extend((0..rois.len()).map(|i| i % 2));
                m.rois.upload(&cpu);
                m.forward_box_head();
                if let Some(mask) = &mut m.mask {
                    mask.rois.clear();
                    mask.rois.boxes.extend(&rois[..2]);
                    mask.rois.images.extend([0, 1]);
                    mask.rois.upload(&cpu);
                    m.forward_mask_head(std::iter::once(0..2).collect());
                    let mask = m.mask.as_mut().expect("a mask head");
                    mask.download_logits(&cpu, &mut m.net.units);
                }
            };
            run(&mut model);
            let mut probes: Vec<Vec<f32>> = Vec::new();
            for level in &mut model.levels {
                for k in 0..2 {
                    let probe = random_vec(seed + 200 + probes.len() as u64, level.host[k].len());
                    level.host_grads[k] = probe.clone();
                    probes.push(probe);
                }
            }
            for k in 0..2 {
                let probe = random_vec(seed + 200 + probes.len() as u64, model.box_host[k].len());
                model.box_host_grads[k] = probe.clone();
                probes.push(probe);
            }
            if let Some(mask) = &mut model.mask {
                let probe = random_vec(seed + 200 + probes.len() as u64, mask.logits.len());
                let shape = [2, mask.num_classes, mask.resolution, mask.resolution];
                mask.logits_grad = Tensor::from_host(&cpu, &shape, &probe);
                probes.push(probe);
            }
            model.upload_rpn_grads();
            model.upload_box_grads();
            model.backward(&image);
            check_params(
                &mut model,
                |m| &mut m.net,
                names,
                &format!("seed {seed}"),
                (1e-2, 0.2),
                |m| {
                    run(m);
                    let rpn = m.levels.iter().flat_map(|l| &l.host);
                    let mask = m.mask.iter().map(|mask| &mask.logits);
                    rpn.chain(&m.box_host)
                        .chain(mask)
                        .zip(&probes)
                        .map(|(y, r)| probe_loss(y, r))
                        .sum::<Probe>()
                },
            );
        }
    }

    /// C4: the box head, res5, the RoIAlign and RPN gradients added into
    /// res4, and the backbone's trained stages.
    #[test]
    fn backward_matches_finite_differences_for_any_seed() {
        check_backward_wiring(
            |cpu, seed| faster_rcnn(cpu, FasterRcnnSpec::small_c4(3), seed),
            (64, 48),
            &[
                [3.0, 5.0, 40.0, 30.0],
                [10.0, 0.0, 47.0, 63.0],
                [0.5, 8.0, 20.0, 50.5],
            ],
            &[
                "res3a_branch2b_weights",
                "res4a_branch1_weights",
                "res4b_branch2c_weights",
                "conv_rpn_w",
                "rpn_cls_logits_b",
                "rpn_bbox_pred_w",
                "res5a_branch2a_weights",
                "res5a_branch1_weights",
                "cls_score_w",
                "bbox_pred_b",
            ],
        );
    }

    /// FPN: RoIs on each of the levels 2..5 (RoIs larger than the picture
    /// reach the coarse levels), the shared RPN head's gradients summed over
    /// P2..P6, the pyramid and the backbone's trained stages.
    #[test]
    fn fpn_backward_matches_finite_differences_for_any_seed() {
        let rois = [
            [3.0, 5.0, 40.0, 30.0],
            [-40.0, -30.0, 100.0, 90.0],
            [-100.0, -90.0, 150.0, 160.0],
            [-250.0, -200.0, 300.0, 280.0],
            [0.5, 8.0, 20.0, 50.5],
        ];
        let levels = FpnLevels::faster_rcnn_fpn();
        let mut reached: Vec<usize> = rois.iter().map(|r| levels.level_of(r)).collect();
        reached.sort();
        reached.dedup();
        assert_eq!(reached, [2, 3, 4, 5]);
        check_backward_wiring(
            |cpu, seed| faster_rcnn(cpu, FasterRcnnSpec::small_fpn(3), seed),
            (64, 32),
            &rois,
            &[
                "res3a_branch2b_weights",
                "res4a_branch1_weights",
                "res5a_branch2c_weights",
                "fpn_inner_res5_sum_w",
                "fpn_inner_res2_sum_lateral_b",
                "fpn_res4_sum_w",
                "fpn_res2_sum_b",
                "conv_rpn_fpn2_w",
                "rpn_cls_logits_fpn2_b",
                "rpn_bbox_pred_fpn2_w",
                "fc6_w",
                "fc7_b",
                "cls_score_w",
                "bbox_pred_b",
            ],
        );
    }

    /// C4 Mask R-CNN: the mask head's gradients (`conv5_mask` on res5's
    /// rows), and res5's and the backbone's with the mask head's added.
    #[test]
    fn c4_mask_backward_matches_finite_differences_for_any_seed() {
        check_backward_wiring(
            |cpu, seed| mask_rcnn(cpu, MaskRcnnSpec::small_c4(3), seed),
            (64, 48),
            &[
                [3.0, 5.0, 40.0, 30.0],
                [10.0, 0.0, 47.0, 63.0],
                [0.5, 8.0, 20.0, 50.5],
            ],
            &[
                "res4b_branch2c_weights",
                "res5a_branch2a_weights",
                "conv5_mask_w",
                "conv5_mask_b",
                "mask_fcn_logits_w",
                "mask_fcn_logits_b",
            ],
        );
    }

    /// FPN Mask R-CNN: the mask head's convs, and the pyramid's and the
    /// backbone's gradients with the mask RoIAlign's added.
    #[test]
    fn fpn_mask_backward_matches_finite_differences_for_any_seed() {
        check_backward_wiring(
            |cpu, seed| mask_rcnn(cpu, MaskRcnnSpec::small_fpn(3), seed),
            (64, 32),
            &[
                [3.0, 5.0, 40.0, 30.0],
                [-100.0, -90.0, 150.0, 160.0],
                [0.5, 8.0, 20.0, 50.5],
            ],
            &[
                "res5a_branch2c_weights",
                "fpn_res2_sum_w",
                "fpn_res4_sum_b",
                "mask_inter_feat_1_w",
                "mask_inter_feat_4_b",
                "conv5_mask_w",
                "mask_fcn_logits_w",
            ],
        );
    }

    /// A planned Mask R-CNN (C4 and FPN) trains a pass on polygons with five
    /// finite loss terms, the mask's positive, and detects with one mask
    /// per detection, each the size of its picture; its parameters are
    /// Paddle's in Paddle's order.
    #[test]
    fn small_mask_models_train_a_pass_and_detect_masks() {
        let cpu = CpuBackend::new();
        for spec in [MaskRcnnSpec::small_c4(4), MaskRcnnSpec::small_fpn(4)] {
            let mut model = mask_rcnn(&cpu, spec.clone(), 7);
            let names: Vec<_> = model
                .net
                .slots()
                .iter()
                .map(|s| s.param.spec.clone())
                .collect();
            assert_eq!(names, spec.param_specs());
            assert!(model.plan(1, 90) > 0);
            let image = image(&cpu, 1, 96, 128, 3);
            let boxes = [0.4, 0.5, 0.3, 0.4, 0.7, 0.3, 0.2, 0.2];
            let labels = [1, 3];
            // The boxes' outlines (128 x 96 pixels, scale 1) as triangles.
            let polygons = vec![vec![
                vec![vec![32.0, 29.0, 63.0, 29.0, 47.0, 66.0]],
                vec![vec![77.0, 19.0, 102.0, 19.0, 90.0, 38.0]],
            ]];
            let truth = GroundTruth {
                boxes: &boxes,
                labels: &labels,
                scores: None,
                max_boxes: 2,
                polygons: &polygons,
            };
            let losses = model.train_pass(&image, &truth, &[[96.0, 128.0, 1.0]]);
            assert_eq!(losses.names(), MASK_LOSS_NAMES);
            assert!(losses.values().iter().all(|v| v.is_finite()), "{losses:?}");
            assert!(losses.values()[4] > 0.0, "{losses:?}");
            let found = model.detect(&image, &[[128, 96]], &[[96.0, 128.0, 1.0]]);
            let masks = model.masks().expect("a mask head");
            assert_eq!(masks.len(), 1);
            assert_eq!(masks[0].len(), found[0].len());
            assert!(masks[0]
                .iter()
                .all(|m| (m.height(), m.width()) == (96, 128)));
        }
    }
}
