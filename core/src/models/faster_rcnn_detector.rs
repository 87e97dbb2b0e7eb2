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
//! 3. the anchors of the features' sizes (on the host, uploaded once per
//!    size); `generate_proposals` for every image and level on the backend
//!    (`Backend::generate_proposals`: only the proposals leave the device),
//!    then (FPN) `collect_fpn_proposals` on the host, the batch's best; in
//!    training, `rpn_target_assign` and the RPN loss over all levels on the
//!    backend (`Backend::rpn_loss`: the ground truth and a seed drawn from
//!    the detector's generator go up, the anchors are matched and sampled
//!    where they live, the gradients are written in place, the two losses
//!    come back), and `generate_proposal_labels` samples the RoIs the box
//!    head learns from;
//! 4. RoIAlign of each RoI (`faster_rcnn_rois`: from res4, `14 x 14` at
//!    1/16, or from the pyramid level its size picks, `7 x 7`), the RoI
//!    head (res5 and a global average pool, or `fc6` and `fc7`), and the
//!    two fully connected layers `cls_score` and `bbox_pred`;
//! 5. the box head's loss on the backend (`Backend::bbox_head_loss`: the
//!    RoIs' targets go up, the gradients are written in place), or
//!    `get_prediction`'s decode, clip and NMS (`Backend::rcnn_detect`).
//!
//! Built `cascade`, it is Cascade R-CNN (FPN only): three box heads
//! (`cascade_heads`), each with its own RoIAlign pass, take the place of
//! steps 4 and 5, every stage after the first on the previous one's RoIs
//! refined.
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
use super::cascade_heads::{CascadeHeads, Trunk, CASCADE_LOSS_NAMES, CASCADE_MASK_LOSS_NAMES};
use super::cascade_rcnn::CascadeRcnnSpec;
use super::conv_unit::{accumulate, ConvUnit, GradSums, Scratch};
use super::faster_rcnn::{FasterRcnnSpec, RoiExtractorSpec};
use super::faster_rcnn_rois::{RoiExtractor, Rois};
use super::fc::FcSpec;
use super::fpn::{FpnLinks, FpnSpec};
use super::mask_branch::{MaskBranch, MaskInput};
use super::mask_head::MaskHeadSpec;
use super::mask_rcnn::MaskRcnnSpec;
use super::network::ConvNet;
use super::resnet::ResNetLinks;
use std::ops::Range;

use crate::backend::{
    Backend, BoxHeadRois, RoiPolygons, RpnProposalInput, RpnTargetsGeom, RpnTruth,
};
use crate::box_coder::BoxXyxy;
use crate::data::rng::Rng;
use crate::detector::{Detector, Losses};
use crate::layers::{FullyConnected, GlobalAvgPool};
use crate::params::ParamSpec;
use crate::rcnn::anchors::{rpn_anchors, Anchors};
use crate::rcnn::rpn_loss::{RpnLevelGrad, RpnLevelOutput};
use crate::rcnn::truth::{
    by_class_from_zero, image_infos, image_truths, train_on_zeros, ImageTruth,
};
use crate::rcnn::{
    collect_fpn_proposals, generate_mask_labels, generate_proposal_labels, paste_masks,
    BoxHeadLossArgs, FpnLevels, ImInfo, Pasted, RcnnConfig, RoiTargets, SampledRois,
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
/// size, the head's outputs as the proposals read them (the objectness
/// probabilities and the deltas, kept on the device: the next level's run
/// of the shared head overwrites its units' outputs) and its anchors and
/// their variances there, the head's logits as the loss reads them
/// (training), and the gradients of the logits and the deltas.
struct RpnLevel<B: Backend> {
    size: [usize; 2],
    outputs: [Tensor<B>; 2],
    anchors: [Tensor<B>; 2],
    logits: Tensor<B>,
    grads: [Tensor<B>; 2],
}

/// What runs on each RoI's features before `cls_score` and `bbox_pred`.
pub(super) enum BoxHead<B: Backend> {
    /// C4: res5 (the net's units after the RPN head's), then a global
    /// average pool.
    ResNetC5 {
        res5: ResNetLinks<B>,
        pool: GlobalAvgPool<B>,
    },
    /// FPN: `fc6` and `fc7` (the net's first two fully connected layers),
    /// the gradient of `fc6`'s output and that of the RoI features, which
    /// trades places with them (see `backward`).
    TwoFc {
        fc6_grad: Tensor<B>,
        features_grad: Tensor<B>,
    },
}

impl<B: Backend> BoxHead<B> {
    /// The net's fully connected layers that are the head's (the first
    /// ones; `cls_score` and `bbox_pred` follow).
    pub(super) fn fc_count(&self) -> usize {
        match self {
            BoxHead::ResNetC5 { .. } => 0,
            BoxHead::TwoFc { .. } => 2,
        }
    }

    /// The head on the RoI features `x`; `units` and `fcs` are its own.
    pub(super) fn forward(
        &mut self,
        backend: &B,
        units: &mut [ConvUnit<B>],
        fcs: &mut [FullyConnected<B>],
        x: &Tensor<B>,
        workspace: &mut Tensor<B>,
    ) {
        match self {
            BoxHead::ResNetC5 { res5, pool, .. } => {
                res5.forward(backend, units, x, 0, workspace);
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
    pub(super) fn output<'a>(&'a self, fcs: &'a [FullyConnected<B>]) -> &'a Tensor<B> {
        match self {
            BoxHead::ResNetC5 { pool, .. } => pool.output(),
            BoxHead::TwoFc { .. } => fcs[1].output(),
        }
    }

    /// From `dy`, the gradient of `output()`, to the parameters' and the
    /// RoI features', after a `forward` on `features`, which then hold
    /// their gradient (the RoIAlign's backward reads nothing else of
    /// them): C4's res5 overwrites them (no second buffer of their 392
    /// MiB), FPN's `fc6` writes a buffer of their size that trades places
    /// with them. C4: `mask` (Mask R-CNN's branch, which read res5's output
    /// too) adds its gradient into res5's output's, built in `scratch`,
    /// where res5's backward starts.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn backward(
        &mut self,
        backend: &B,
        units: &mut [ConvUnit<B>],
        fcs: &mut [FullyConnected<B>],
        features: &mut Tensor<B>,
        dy: &Tensor<B>,
        mask: Option<&mut MaskBranch<B>>,
        scratch: &mut Scratch<B>,
    ) {
        match self {
            BoxHead::ResNetC5 { res5, pool } => {
                pool.backward(backend, res5.features()[0], dy, &mut scratch.grad);
                if let Some(mask) = mask {
                    mask.add_res5_rows_grad(backend, &mut scratch.grad);
                }
                res5.backward_replacing_input(backend, units, features, scratch);
            }
            BoxHead::TwoFc {
                fc6_grad,
                features_grad,
            } => {
                let (fc6, fc7) = fcs.split_at_mut(1);
                fc7[0].backward(backend, fc6[0].output(), dy, Some(fc6_grad));
                fc6[0].backward(backend, features, fc6_grad, Some(features_grad));
                std::mem::swap(features, features_grad);
            }
        }
    }

    pub(super) fn planned_bytes(&self, backend: &B) -> usize {
        match self {
            BoxHead::ResNetC5 { res5, pool } => {
                res5.planned_bytes(backend) + pool.planned_bytes(backend)
            }
            BoxHead::TwoFc {
                fc6_grad,
                features_grad,
            } => fc6_grad.capacity_bytes(backend) + features_grad.capacity_bytes(backend),
        }
    }
}

/// `cls_score` and `bbox_pred` (`outputs`) on the RoI head's output `x` for
/// `rois` (uploaded); their outputs downloaded into `host`, in Paddle's
/// order of the RoIs.
pub(super) fn forward_box_outputs<B: Backend>(
    backend: &B,
    outputs: &mut [FullyConnected<B>],
    x: &Tensor<B>,
    rois: &Rois<B>,
    host: &mut [Vec<f32>; 2],
) {
    for (fc, host) in outputs.iter_mut().zip(host) {
        let out = fc.forward(backend, x);
        host.resize(out.numel(), 0.0);
        backend.download(out.buf(), host);
        rois.to_paddle_order(host, fc.spec.outputs);
    }
}

/// Backward through `cls_score` and `bbox_pred` (`outputs`) from their
/// outputs' gradients `grads`, after `forward_box_outputs` on `x`: both
/// read `x`, so its gradient in `dx` is the sum of theirs (`part` is
/// scratch).
pub(super) fn backward_box_outputs<B: Backend>(
    backend: &B,
    outputs: &mut [FullyConnected<B>],
    x: &Tensor<B>,
    grads: &[Tensor<B>; 2],
    dx: &mut Tensor<B>,
    part: &mut Tensor<B>,
) {
    let (cls_score, bbox_pred) = outputs.split_at_mut(1);
    cls_score[0].backward(backend, x, &grads[0], Some(dx));
    bbox_pred[0].backward(backend, x, &grads[1], Some(part));
    accumulate(backend, part, dx);
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

/// Mask R-CNN in training: the mask RoIs' classes (-1 for a placeholder
/// row) and the polygons their `M x M` targets are drawn from, in Paddle's
/// order, and (C4) the blocks of the box head's RoIs they are.
#[derive(Default)]
struct MaskSamples {
    blocks: Vec<Range<usize>>,
    classes: Vec<f32>,
    polygons: RoiPolygons,
}

impl MaskSamples {
    /// Image `n`'s mask RoIs (ground truth `t` and `im_info` `info`):
    /// `generate_mask_labels` on its sampled RoIs `sampled`, which are the
    /// rows from `first` of the box head's; they go into `mask.rois`, their
    /// classes, polygons and blocks here. `truth` holds the polygons.
    fn add_image<B: Backend>(
        &mut self,
        mask: &mut MaskBranch<B>,
        truth: &GroundTruth,
        (n, t, info): (usize, &ImageTruth, [f32; 3]),
        sampled: &SampledRois,
        first: usize,
        classes: usize,
    ) {
        let polygons = truth
            .polygons
            .get(n)
            .expect("a mask head trains on each image's polygons (the reader's with_polygons)");
        let polygons: Vec<Vec<Vec<f32>>> = t.slots.iter().map(|&k| polygons[k].clone()).collect();
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
        // The indices are into this image's RoIs; the box head's rows are
        // the batch's, this image's from `first`. (Paddle's MaskRCNN gathers
        // with `RoiHasMaskInt32` as it is, so at a batch of two its C4 mask
        // head reads the first image's rows for the second; the configs
        // train one image a batch.)
        for (r, &i) in targets.roi_indices.iter().enumerate() {
            match self.blocks.last_mut() {
                Some(block) if block.end == first + i => block.end += 1,
                _ => self.blocks.push(first + i..first + i + 1),
            }
            // The class whose map is scored (none for a placeholder row,
            // whose label is the background and which has no polygons).
            let class = sampled.labels[i];
            self.classes
                .push(if class > 0 { class as f32 } else { -1.0 });
            self.polygons
                .push_roi(targets.polygons[r].iter().map(|p| p.as_slice()));
        }
        mask.rois
            .images
            .extend(std::iter::repeat_n(n, targets.rois.len()));
        mask.rois.boxes.extend(&targets.rois);
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
    /// The gradients of `cls_score`'s and `bbox_pred`'s outputs, in the
    /// device's order of the RoIs.
    box_grads: [Tensor<B>; 2],
    /// Gradients on the way down: of the RoI head's output, of
    /// `conv_rpn`'s output, and a feature-sized part (the RoI features'
    /// replaces them: `BoxHead::backward`).
    head_grad: Tensor<B>,
    head_grad_part: Tensor<B>,
    rpn_conv_grad: Tensor<B>,
    rpn_conv_grad_part: Tensor<B>,
    feature_grad_part: Tensor<B>,
    scratch: Scratch<B>,
    /// The anchors of the last feature sizes, the levels one after another.
    anchors: Option<(Vec<[usize; 2]>, Anchors)>,
    /// Draws the RPN targets' seed (one a step) and
    /// `generate_proposal_labels`' samples.
    rng: Rng,
    /// Mask R-CNN: the mask branch and the last `detect`'s masks.
    mask: Option<MaskBranch<B>>,
    masks: Vec<Vec<Rle>>,
    /// Cascade R-CNN: the three stages, which take the place of the box
    /// head (`box_head`, `rois`, `extractor` and their buffers stay empty).
    cascade: Option<CascadeHeads<B>>,
}

/// Faster R-CNN's box head: the RoI head's fully connected layers (FPN's
/// `fc6`, `fc7`), then `cls_score` and `bbox_pred`.
fn box_head_fcs(spec: &FasterRcnnSpec) -> Vec<FcSpec> {
    let mut fcs = spec.roi_head.fc_layers();
    fcs.extend(spec.bbox_head().layers());
    fcs
}

/// A mask head on the trunk: its convs, its RoI extractor (None: C4's,
/// which reads the box head's res5 rows), and every parameter of the model
/// in Paddle's creation order (the head's convs come after the box head's
/// fully connected layers there).
struct MaskParts {
    head: MaskHeadSpec,
    roi_extractor: Option<RoiExtractorSpec>,
    creation_order: Vec<ParamSpec>,
}

/// The RoI extractor `extractor` describes on the features of `fpn` (None:
/// C4's one feature): the features' count, the extractor, and for FPN the
/// levels its RoIs are distributed over.
pub(super) fn roi_extractor<B: Backend>(
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
        let fcs = box_head_fcs(&spec);
        FasterRcnnDetector::build(backend, spec, fcs, None, config, seed)
    }

    /// Mask R-CNN: `spec`'s Faster R-CNN with its mask branch; the
    /// parameters are in Paddle's order, the mask head's last.
    pub fn with_mask_head(backend: &B, spec: MaskRcnnSpec, config: RcnnConfig, seed: u64) -> Self {
        let fcs = box_head_fcs(&spec.faster_rcnn);
        let mask = MaskParts {
            creation_order: spec.param_specs(),
            head: spec.mask_head,
            roi_extractor: spec.mask_roi_extractor,
        };
        FasterRcnnDetector::build(backend, spec.faster_rcnn, fcs, Some(mask), config, seed)
    }

    /// Cascade R-CNN, or Cascade Mask R-CNN when `spec` has a mask head:
    /// Faster R-CNN FPN's trunk with the three stages (`cascade_heads`) in
    /// place of its box head; the parameters are in Paddle's order, the
    /// stages' after the RPN head's, the mask head's last.
    pub fn cascade(backend: &B, spec: CascadeRcnnSpec, config: RcnnConfig, seed: u64) -> Self {
        let fcs = spec.stages.iter().flat_map(|s| s.layers()).collect();
        let mask = spec.mask.as_ref().map(|m| MaskParts {
            creation_order: spec.param_specs(),
            head: m.head.clone(),
            roi_extractor: Some(m.roi_extractor.clone()),
        });
        let heads = CascadeHeads::new(backend, &spec);
        let mut model =
            FasterRcnnDetector::build(backend, spec.faster_rcnn, fcs, mask, config, seed);
        model.cascade = Some(heads);
        model
    }

    fn build(
        backend: &B,
        spec: FasterRcnnSpec,
        fcs: Vec<FcSpec>,
        mask_spec: Option<MaskParts>,
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
        let mut net = match &mask_spec {
            None => ConvNet::with_fcs(backend, units, fcs, seed),
            Some(whole) => {
                let head = &whole.head;
                units.extend(head.conv_units());
                units.push(head.logits());
                let order = &whole.creation_order;
                ConvNet::with_transposed(backend, units, fcs, &[head.upsample()], order, seed)
            }
        };
        net.freeze_units(spec.backbone.frozen_units());
        net.freeze_norm(spec.backbone.freeze_norm);
        let rpn_param_sums = GradSums::new(backend, &mut net.units[rpn_unit..][..RPN_UNITS]);

        // The features, lowest level first, and the RoIs' levels among them.
        let (level_count, extractor, roi_levels) =
            roi_extractor(backend, spec.fpn.as_ref(), &spec.roi_extractor);
        let mask = mask_spec.map(|whole| {
            let head = &whole.head;
            let (input, rois) = match &whole.roi_extractor {
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
            },
            RoiHeadSpec::TwoFc(_) => BoxHead::TwoFc {
                fc6_grad: empty(),
                features_grad: empty(),
            },
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
                    outputs: [empty(), empty()],
                    anchors: [empty(), empty()],
                    logits: empty(),
                    grads: [empty(), empty()],
                })
                .collect(),
            level_grads: (0..level_count).map(|_| empty()).collect(),
            rpn_param_sums,
            rois: Rois::new(backend, roi_levels),
            extractor,
            box_head,
            box_grads: [empty(), empty()],
            head_grad: empty(),
            head_grad_part: empty(),
            rpn_conv_grad: empty(),
            rpn_conv_grad_part: empty(),
            feature_grad_part: empty(),
            scratch: Scratch::new(backend),
            anchors: None,
            rng: Rng::from_state(seed ^ 0x5a17_c0de),
            mask,
            masks: Vec::new(),
            cascade: None,
            spec,
            config,
        }
    }

    /// The backbone, the pyramid and the RPN head on `image`; each level's
    /// `outputs` are then those of the head, and in `training` its `logits`
    /// too, and the anchors (`self.anchors`, each
    /// level's `anchors`) those of the features' sizes.
    fn forward_rpn(&mut self, image: &Tensor<B>, training: bool) {
        let backend = self.net.backend().clone();
        let workspace = &mut self.scratch.workspace;
        let frozen = self.net.frozen_units();
        let (body, rest) = self.net.units.split_at_mut(self.rpn_unit);
        let (backbone, pyramid) = body.split_at_mut(self.backbone_units);
        self.backbone
            .forward(&backend, backbone, image, frozen, workspace);
        if let Some(fpn) = &mut self.fpn {
            fpn.forward(&backend, pyramid, &self.backbone.features(), workspace);
        }
        let features = head_features(&self.backbone, self.fpn.as_ref(), body, self.backbone_units);
        let rpn_units = &mut rest[..RPN_UNITS];
        for (level, x) in self.levels.iter_mut().zip(features) {
            rpn_forward(&backend, rpn_units, x, workspace);
            let (logits, deltas) = (rpn_units[1].output(), rpn_units[2].output());
            let [scores, level_deltas] = &mut level.outputs;
            scores.reshape_reuse(&backend, logits.shape());
            backend.sigmoid_forward(logits.numel(), logits.buf(), scores.buf_mut());
            level_deltas.reshape_reuse(&backend, deltas.shape());
            backend.copy(deltas.numel(), deltas.buf(), level_deltas.buf_mut());
            if training {
                level.logits.reshape_reuse(&backend, logits.shape());
                backend.copy(logits.numel(), logits.buf(), level.logits.buf_mut());
            }
            let (_, _, h, w) = x.nchw();
            level.size = [h, w];
        }
        let sizes: Vec<[usize; 2]> = self.levels.iter().map(|l| l.size).collect();
        if self.anchors.as_ref().is_none_or(|(s, _)| *s != sizes) {
            let anchors = rpn_anchors(&self.spec.rpn, &sizes);
            let per_cell = self.spec.rpn.anchors_per_cell();
            let mut first = 0;
            for level in &mut self.levels {
                let count = level.size[0] * level.size[1] * per_cell;
                for (device, host) in level
                    .anchors
                    .iter_mut()
                    .zip([&anchors.boxes, &anchors.variances])
                {
                    device.reshape_reuse(&backend, &[count, 4]);
                    device.upload(&backend, host[first..][..count].as_flattened());
                }
                first += count;
            }
            self.anchors = Some((sizes, anchors));
        }
    }

    /// Each image's proposals from the last `forward_rpn`: the backend's
    /// `generate_proposals` on every level, then (FPN)
    /// `collect_fpn_proposals`.
    fn proposals(&self, im_info: &[[f32; 3]], training: bool) -> Vec<Vec<BoxXyxy>> {
        let cfg = if training {
            &self.config.train_proposal
        } else {
            &self.config.test_proposal
        };
        let levels: Vec<RpnProposalInput<'_, B::Buffer>> = self
            .levels
            .iter()
            .map(|level| RpnProposalInput {
                scores: level.outputs[0].buf(),
                deltas: level.outputs[1].buf(),
                anchors: level.anchors[0].buf(),
                variances: level.anchors[1].buf(),
                height: level.size[0],
                width: level.size[1],
            })
            .collect();
        let mut per_level = self.net.backend().generate_proposals(
            cfg,
            &levels,
            self.spec.rpn.anchors_per_cell(),
            im_info,
        );
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
    /// in `self.rois` (uploaded); their outputs stay on the device, in its
    /// order of the RoIs.
    fn forward_box_head(&mut self) {
        let backend = self.net.backend().clone();
        self.forward_roi_head(false);
        let (head_fcs, outputs) = self.net.fcs.split_at_mut(self.box_head.fc_count());
        let x = self.box_head.output(head_fcs);
        for fc in outputs {
            fc.forward(&backend, x);
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
    /// `samples.blocks` of the box head's RoIs) and its loss against their
    /// classes and targets (`MaskBranch::loss`).
    fn mask_loss(&mut self, samples: MaskSamples) -> f32 {
        let backend = self.net.backend().clone();
        let mask = self.mask.as_mut().expect("a mask head");
        mask.rois.upload(&backend);
        self.forward_mask_head(samples.blocks);
        let mask = self.mask.as_mut().expect("a mask head");
        mask.loss(
            &backend,
            &mut self.net.units,
            samples.classes,
            samples.polygons,
        )
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
        // Each detection's row of the head's output (device order).
        let mut rows: Vec<f32> = (0..count).map(|r| r as f32).collect();
        mask.rois.to_paddle_order(&mut rows, 1);
        let mut pasted = Vec::with_capacity(count);
        for (dets, &[ow, oh]) in found.iter().zip(original_sizes) {
            for d in dets {
                pasted.push(Pasted {
                    row: rows[pasted.len()] as usize,
                    // The detection's class map (class 0 is the background).
                    channel: d.class + 1,
                    bbox: d.bbox,
                    image: [oh, ow],
                });
            }
        }
        let probs = mask.probabilities(&backend, &self.net.units);
        let mut masks = paste_masks(&backend, probs, &pasted, MASK_THRESHOLD).into_iter();
        found
            .iter()
            .map(|dets| {
                dets.iter()
                    .map(|_| masks.next().expect("one mask per detection"))
                    .collect()
            })
            .collect()
    }

    /// Faster R-CNN's (and Mask R-CNN's) box head in training, after the
    /// RPN's loss: the RoIs sampled from each image's `proposals`, the head
    /// on them and its loss, `[cls, bbox]`, whose gradients are uploaded. A
    /// mask head's RoIs and targets go into `mask_samples`.
    fn train_box_head(
        &mut self,
        truth: &GroundTruth,
        (truths, im_info): (&[ImageTruth], &[[f32; 3]]),
        proposals: Vec<Vec<BoxXyxy>>,
        mask_samples: &mut MaskSamples,
    ) -> Vec<f32> {
        let backend = self.net.backend().clone();
        let classes = self.spec.num_classes;
        // The RoIs the box head learns from, and their targets.
        self.rois.clear();
        let mut labels = Vec::new();
        let mut bbox_targets = Vec::new();
        let mut bbox_weights = Vec::new();
        for (n, ((t, &info), proposals)) in truths.iter().zip(im_info).zip(proposals).enumerate() {
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
                let first = self.rois.boxes.len();
                mask_samples.add_image(mask, truth, (n, t, info), &sampled, first, classes);
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
        // On the backend: the targets go up (in Paddle's order, with each
        // RoI's device row), the gradients are written in the device's
        // order, only the two terms come back.
        let rows = self.rois.device_rows();
        let args = BoxHeadLossArgs {
            classes,
            deltas: 4 * classes,
            loss_weight: 1.0,
            targets: RoiTargets {
                labels: &labels,
                bbox_targets: &bbox_targets,
                bbox_inside_weights: &bbox_weights,
                bbox_outside_weights: &bbox_weights,
            },
            rows: &rows,
        };
        let outputs = &self.net.fcs[self.box_head.fc_count()..];
        let [grad_cls, grad_bbox] = &mut self.box_grads;
        grad_cls.reshape_reuse(&backend, outputs[0].output().shape());
        grad_bbox.reshape_reuse(&backend, outputs[1].output().shape());
        let boxes = backend.bbox_head_loss(
            &args,
            outputs[0].output().buf(),
            outputs[1].output().buf(),
            grad_cls.buf_mut(),
            grad_bbox.buf_mut(),
        );
        vec![boxes.cls, boxes.bbox]
    }

    /// Cascade R-CNN's stages in training, after the RPN's loss
    /// (`CascadeHeads::train` from each image's `proposals`): their losses
    /// `[cls_0, loc_0, ..., loc_2]`, whose gradients are uploaded. Cascade
    /// Mask R-CNN's mask head learns from the last stage's RoIs and labels:
    /// their mask RoIs and targets go into `mask_samples`.
    fn train_cascade(
        &mut self,
        truth: &GroundTruth,
        (truths, im_info): (&[ImageTruth], &[[f32; 3]]),
        proposals: Vec<Vec<BoxXyxy>>,
        mask_samples: &mut MaskSamples,
    ) -> Vec<f32> {
        let backend = self.net.backend().clone();
        let cascade = self.cascade.as_mut().expect("a cascade");
        let body = &self.net.units[..self.rpn_unit];
        let features = head_features(&self.backbone, self.fpn.as_ref(), body, self.backbone_units);
        let mut trunk = Trunk {
            features: &features,
            fcs: &mut self.net.fcs,
            workspace: &mut self.scratch.workspace,
        };
        let losses = cascade.train(
            &backend,
            &mut trunk,
            &self.config.bbox_assigner,
            proposals,
            (truths, im_info),
            &mut self.rng,
        );
        if let Some(mask) = &mut self.mask {
            let mut first = 0;
            for (n, sampled) in cascade.last_stage_rois().iter().enumerate() {
                let image = (n, &truths[n], im_info[n]);
                let classes = self.spec.num_classes;
                mask_samples.add_image(mask, truth, image, sampled, first, classes);
                first += sampled.rois.len();
            }
        }
        losses
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
        match &mut self.cascade {
            Some(cascade) => cascade.backward_heads(&backend, &mut self.net.fcs, &mut self.scratch),
            None => {
                let head_units = &mut head_units[..head_end];
                let (head_fcs, outputs) = self.net.fcs.split_at_mut(self.box_head.fc_count());
                // The box head: both output layers read the RoI head's output.
                let x = self.box_head.output(head_fcs);
                backward_box_outputs(
                    &backend,
                    outputs,
                    x,
                    &self.box_grads,
                    &mut self.head_grad,
                    &mut self.head_grad_part,
                );
                self.box_head.backward(
                    &backend,
                    head_units,
                    head_fcs,
                    self.extractor.output_mut(),
                    &self.head_grad,
                    self.mask.as_mut(),
                    &mut self.scratch,
                );
            }
        }

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
        match &mut self.cascade {
            Some(cascade) => cascade.extract_backward(
                &backend,
                &features,
                &mut self.level_grads,
                &mut self.feature_grad_part,
            ),
            None => self.extractor.backward_from_output(
                &backend,
                &features,
                &self.rois,
                &mut self.level_grads,
                &mut self.feature_grad_part,
            ),
        }
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
            .flat_map(|l| l.grads.iter().chain(&l.outputs).chain(&l.anchors))
            .chain(self.levels.iter().map(|l| &l.logits))
            .chain(&self.level_grads)
            .chain(&self.body_grads)
            .chain(&self.box_grads)
            .chain([
                &self.head_grad,
                &self.head_grad_part,
                &self.rpn_conv_grad,
                &self.rpn_conv_grad_part,
                &self.feature_grad_part,
            ])
            .map(|t| t.capacity_bytes(b))
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
            + self.cascade.as_ref().map_or(0, |c| c.planned_bytes(b))
            + tensors
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
        match (&self.cascade, &self.mask) {
            (None, None) => LOSS_NAMES,
            (None, Some(_)) => MASK_LOSS_NAMES,
            (Some(_), None) => CASCADE_LOSS_NAMES,
            (Some(_), Some(_)) => CASCADE_MASK_LOSS_NAMES,
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
        let im_info = image_infos(image, im_info);
        let truths = image_truths(truth, &im_info);
        self.forward_rpn(image, true);

        // The RPN's targets and loss over the batch and every level, on the
        // backend: the ground truth goes up, the gradients are written in
        // place and only the two losses come back.
        let images: Vec<RpnTruth<'_>> = truths
            .iter()
            .zip(&im_info)
            .map(|(t, &im_info)| RpnTruth {
                boxes: &t.boxes,
                im_info,
            })
            .collect();
        let g = RpnTargetsGeom {
            config: &self.config.rpn_target,
            images: &images,
            seed: self.rng.next_u64(),
        };
        let backend = self.net.backend().clone();
        let mut anchors = Vec::with_capacity(self.levels.len());
        let mut outputs = Vec::with_capacity(self.levels.len());
        let mut grads = Vec::with_capacity(self.levels.len());
        for level in &mut self.levels {
            let [height, width] = level.size;
            let [cls, bbox] = &mut level.grads;
            cls.reshape_reuse(&backend, level.logits.shape());
            bbox.reshape_reuse(&backend, level.outputs[1].shape());
            anchors.push(level.anchors[0].buf());
            outputs.push(RpnLevelOutput {
                height,
                width,
                cls_logits: level.logits.buf(),
                bbox_pred: level.outputs[1].buf(),
            });
            grads.push(RpnLevelGrad {
                cls_logits: cls.buf_mut(),
                bbox_pred: bbox.buf_mut(),
            });
        }
        let rpn = backend.rpn_loss(
            &g,
            &anchors,
            &outputs,
            self.spec.rpn.anchors_per_cell(),
            &mut grads,
        );

        let proposals = self.proposals(&im_info, true);
        let mut losses = vec![rpn.loss_rpn_cls, rpn.loss_rpn_bbox];
        // Mask R-CNN: the mask RoIs and their targets.
        let mut mask_samples = MaskSamples::default();
        if let Some(mask) = &mut self.mask {
            mask.rois.clear();
        }
        // The box head's RoIs and loss, or each cascade stage's.
        let images = (&truths[..], &im_info[..]);
        losses.extend(match self.cascade {
            None => self.train_box_head(truth, images, proposals, &mut mask_samples),
            Some(_) => self.train_cascade(truth, images, proposals, &mut mask_samples),
        });
        if self.mask.is_some() {
            losses.push(self.mask_loss(mask_samples));
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
        self.forward_rpn(image, false);
        let proposals = self.proposals(&im_info, false);
        if proposals.iter().all(Vec::is_empty) {
            self.masks = vec![Vec::new(); im_info.len()];
            return vec![Vec::new(); im_info.len()];
        }
        let found = if let Some(cascade) = &mut self.cascade {
            let body = &self.net.units[..self.rpn_unit];
            let features =
                head_features(&self.backbone, self.fpn.as_ref(), body, self.backbone_units);
            let mut trunk = Trunk {
                features: &features,
                fcs: &mut self.net.fcs,
                workspace: &mut self.scratch.workspace,
            };
            cascade.detect(
                &backend,
                &mut trunk,
                proposals,
                (&im_info, original_sizes),
                &self.config.nms,
            )
        } else {
            self.rois.clear();
            let counts: Vec<usize> = proposals.iter().map(Vec::len).collect();
            for (n, proposals) in proposals.into_iter().enumerate() {
                self.rois
                    .images
                    .extend(std::iter::repeat_n(n, proposals.len()));
                self.rois.boxes.extend(proposals);
            }
            self.rois.upload(&backend);
            self.forward_roi_head(false);
            let (head_fcs, outputs) = self.net.fcs.split_at_mut(self.box_head.fc_count());
            let x = self.box_head.output(head_fcs);
            for fc in outputs.iter_mut() {
                fc.forward(&backend, x);
            }
            let scales: Vec<f32> = im_info.iter().map(|info| info[2]).collect();
            let im_shapes: Vec<[f32; 3]> = original_sizes
                .iter()
                .map(|&[ow, oh]| [oh as f32, ow as f32, 1.0])
                .collect();
            let rows = self.rois.device_rows();
            let rois = BoxHeadRois {
                boxes: &self.rois.boxes,
                counts: &counts,
                rows: &rows,
                scales: &scales,
                im_shapes: &im_shapes,
            };
            let [cls_score, bbox_pred] = [0, 1].map(|k| outputs[k].output().buf());
            backend
                .rcnn_detect(&self.config, &rois, cls_score, bbox_pred)
                .into_iter()
                // Paddle lists a class's detections by RoI.
                .map(by_class_from_zero)
                .collect()
        };
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
    use crate::models::cascade_rcnn::CascadeRcnnSpec;
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

    fn cascade_rcnn(
        cpu: &CpuBackend,
        spec: CascadeRcnnSpec,
        seed: u64,
    ) -> FasterRcnnDetector<CpuBackend> {
        let config = RcnnConfig::faster_rcnn(spec.num_classes());
        FasterRcnnDetector::cascade(cpu, spec, config, seed)
    }

    /// Each cascade stage of `m` on its own fixed RoIs, after `forward_rpn`:
    /// stage `k` on `rois` rotated by `k`, the images alternating from `k`.
    fn forward_stages_on(m: &mut FasterRcnnDetector<CpuBackend>, rois: &[BoxXyxy]) {
        let cpu = *m.net.backend();
        let cascade = m.cascade.as_mut().expect("a cascade");
        let body = &m.net.units[..m.rpn_unit];
        let features = head_features(&m.backbone, m.fpn.as_ref(), body, m.backbone_units);
        let mut trunk = Trunk {
            features: &features,
            fcs: &mut m.net.fcs,
            workspace: &mut m.scratch.workspace,
        };
        for k in 0..cascade.stages.len() {
            let stage_rois = &mut cascade.stages[k].rois;
            stage_rois.clear();
            stage_rois
                .boxes
                .extend(rois.iter().cycle().skip(k).take(rois.len()));
            stage_rois
                .images
                .extend((0..rois.len()).map(|i| (i + k) % 2));
            stage_rois.upload(&cpu);
            cascade.forward_stage(&cpu, k, &mut trunk);
        }
    }

    /// The box head's outputs (`cls_score`'s, `bbox_pred`'s, in the
    /// device's order of the RoIs), or every cascade stage's.
    fn box_outputs(m: &FasterRcnnDetector<CpuBackend>) -> Vec<&Tensor<CpuBackend>> {
        match &m.cascade {
            None => m.net.fcs[m.box_head.fc_count()..]
                .iter()
                .map(|fc| fc.output())
                .collect(),
            Some(c) => c.outputs(&m.net.fcs),
        }
    }

    /// Sets the gradients of those outputs to `probes`, in the same order.
    fn set_box_output_grads(m: &mut FasterRcnnDetector<CpuBackend>, probes: &[Vec<f32>]) {
        let cpu = CpuBackend::new();
        let shapes: Vec<Vec<usize>> = box_outputs(m).iter().map(|y| y.shape().to_vec()).collect();
        let grads: Vec<&mut Tensor<CpuBackend>> = match &mut m.cascade {
            None => m.box_grads.iter_mut().collect(),
            Some(c) => c.output_grads().collect(),
        };
        for ((grad, shape), probe) in grads.into_iter().zip(&shapes).zip(probes) {
            *grad = Tensor::from_host(&cpu, shape, probe);
        }
    }

    /// The wiring of the backward pass of `spec`'s model, whatever the
    /// targets: with fixed RoIs (the samplers pick them on the host and no
    /// gradient flows into their boxes, as in Paddle) on a `[2, 3, h, w]`
    /// image and random probes as the gradients of the RPN's outputs on
    /// every level and of the box head's, every parameter in `names` has
    /// the finite difference of `sum(outputs * probes)` as its gradient.
    ///
    /// A Mask R-CNN (`build` makes the model from a seed) runs its mask head
    /// on the first two RoIs as well, with a probe on its logits. A Cascade
    /// R-CNN runs each stage on its own RoIs (`forward_stages_on`), with
    /// probes on every stage's outputs.
    fn check_backward_wiring(
        build: impl Fn(&CpuBackend, u64) -> FasterRcnnDetector<CpuBackend>,
        (h, w): (usize, usize),
        rois: &[BoxXyxy],
        names: &[&str],
    ) {
        let cpu = CpuBackend::new();
        for seed in SEEDS {
            let mut model = build(&cpu, seed);
            // The output layers' weights as large as the others' (Paddle
            // draws them at 0.01 and 0.001), so that the box heads' share
            // of the features' gradient weighs as much as the RPN's.
            let outputs: Vec<(String, usize)> = model
                .net
                .fcs
                .iter()
                .map(|fc| &fc.spec)
                .filter(|f| f.prefix.starts_with("cls_score") || f.prefix.starts_with("bbox_pred"))
                .map(|f| (format!("{}_w", f.prefix), f.inputs * f.outputs))
                .collect();
            for (i, (name, len)) in outputs.iter().enumerate() {
                let values = random_vec(seed + 300 + i as u64, *len);
                model.net.set_param(name, &values).expect(name);
            }
            let image = image(&cpu, 2, h, w, seed + 100);
            let run = |m: &mut FasterRcnnDetector<CpuBackend>| {
                m.forward_rpn(&image, true);
                if m.cascade.is_some() {
                    forward_stages_on(m, rois);
                } else {
                    m.rois.clear();
                    m.rois.boxes.extend(rois);
                    m.rois.images.extend((0..rois.len()).map(|i| i % 2));
                    m.rois.upload(&cpu);
                    m.forward_box_head();
                }
                if let Some(mask) = &mut m.mask {
                    mask.rois.clear();
                    mask.rois.boxes.extend(&rois[..2]);
                    mask.rois.images.extend([0, 1]);
                    mask.rois.upload(&cpu);
                    m.forward_mask_head(std::iter::once(0..2).collect());
                }
            };
            // The mask head's logits on the host, if there is one.
            let mask_logits = |m: &FasterRcnnDetector<CpuBackend>| -> Option<Vec<f32>> {
                let mask = m.mask.as_ref()?;
                Some(mask.logits(&m.net.units).to_host(&cpu))
            };
            run(&mut model);
            let mut probes: Vec<Vec<f32>> = Vec::new();
            for level in &mut model.levels {
                for (k, output) in [&level.logits, &level.outputs[1]].into_iter().enumerate() {
                    let probe = random_vec(seed + 200 + probes.len() as u64, output.numel());
                    level.grads[k] = Tensor::from_host(&cpu, output.shape(), &probe);
                    probes.push(probe);
                }
            }
            let mut box_probes = Vec::new();
            for y in box_outputs(&model) {
                let probe = random_vec(seed + 200 + probes.len() as u64, y.numel());
                box_probes.push(probe.clone());
                probes.push(probe);
            }
            set_box_output_grads(&mut model, &box_probes);
            if let Some(logits) = mask_logits(&model) {
                let probe = random_vec(seed + 200 + probes.len() as u64, logits.len());
                let mask = model.mask.as_mut().expect("a mask head");
                let shape = [2, mask.num_classes, mask.resolution, mask.resolution];
                mask.logits_grad = Tensor::from_host(&cpu, &shape, &probe);
                probes.push(probe);
            }
            model.backward(&image);
            check_params(
                &mut model,
                |m| &mut m.net,
                names,
                &format!("seed {seed}"),
                (1e-2, 0.2),
                |m| {
                    run(m);
                    let rpn = m
                        .levels
                        .iter()
                        .flat_map(|l| [l.logits.to_host(&cpu), l.outputs[1].to_host(&cpu)]);
                    let boxes = box_outputs(m).into_iter().map(|y| y.to_host(&cpu));
                    rpn.chain(boxes)
                        .chain(mask_logits(m))
                        .zip(&probes)
                        .map(|(y, r)| probe_loss(&y, r))
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

    /// Cascade R-CNN: every stage's layers, the three stages' RoIAlign
    /// gradients (each stage on its own RoIs, over levels 2..5) added into
    /// the pyramid's with the RPN head's, and the backbone's trained stages.
    #[test]
    fn cascade_backward_matches_finite_differences_for_any_seed() {
        check_backward_wiring(
            |cpu, seed| cascade_rcnn(cpu, CascadeRcnnSpec::small(3), seed),
            (64, 32),
            &[
                [3.0, 5.0, 40.0, 30.0],
                [-40.0, -30.0, 100.0, 90.0],
                [-100.0, -90.0, 150.0, 160.0],
                [-250.0, -200.0, 300.0, 280.0],
                [0.5, 8.0, 20.0, 50.5],
            ],
            &[
                "res3a_branch2b_weights",
                "res5a_branch2c_weights",
                "fpn_inner_res5_sum_w",
                "fpn_res2_sum_b",
                "conv_rpn_fpn2_w",
                "rpn_bbox_pred_fpn2_b",
                "fc6_w",
                "fc7_b",
                "cls_score_w",
                "bbox_pred_b",
                "fc6_2_b",
                "fc7_2_w",
                "cls_score_2_b",
                "bbox_pred_2_w",
                "fc6_3_w",
                "fc7_3_b",
                "cls_score_3_w",
                "bbox_pred_3_b",
            ],
        );
    }

    /// Cascade Mask R-CNN: the mask head's convs and the stages' layers,
    /// and the pyramid's gradient with the mask RoIAlign's and the stages'
    /// added.
    #[test]
    fn cascade_mask_backward_matches_finite_differences_for_any_seed() {
        check_backward_wiring(
            |cpu, seed| cascade_rcnn(cpu, CascadeRcnnSpec::small_mask(3), seed),
            (64, 32),
            &[
                [3.0, 5.0, 40.0, 30.0],
                [-100.0, -90.0, 150.0, 160.0],
                [0.5, 8.0, 20.0, 50.5],
            ],
            &[
                "res4a_branch1_weights",
                "fpn_res3_sum_w",
                "fpn_inner_res4_sum_lateral_b",
                "fc6_2_w",
                "bbox_pred_3_w",
                "mask_inter_feat_1_w",
                "mask_inter_feat_4_b",
                "conv5_mask_w",
                "mask_fcn_logits_b",
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
