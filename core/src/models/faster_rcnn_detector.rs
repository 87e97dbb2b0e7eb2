//! Faster R-CNN at run time, as PaddleDetection's `FasterRCNN` architecture
//! trains and predicts with `configs/faster_rcnn_r50_1x.yml` (the C4 form):
//!
//! 1. ResNet res2..res4 on the image (`ResNetLinks::backbone`);
//! 2. the RPN head on res4: `conv_rpn` (3x3, ReLU), then `rpn_cls_logits`
//!    and `rpn_bbox_pred` (1x1);
//! 3. on the host, from the downloaded head outputs: the anchors, in
//!    training `rpn_target_assign` and the RPN loss (its gradients uploaded
//!    for the backward pass), and `generate_proposals` per image; in
//!    training `generate_proposal_labels` samples the RoIs the box head
//!    learns from;
//! 4. RoIAlign of each RoI from res4 (`14 x 14` at 1/16), res5 on the RoIs
//!    (`ResNetC5`), a global average pool, and the two fully connected
//!    layers `cls_score` and `bbox_pred`;
//! 5. on the host again: the box head's loss (gradients uploaded), or
//!    `get_prediction`'s decode, clip and NMS.
//!
//! The backward pass runs the same way down: the box head, res5, RoIAlign's
//! gradient into res4's, the RPN head's added to it, then the backbone down
//! to its frozen stages (`freeze_at`).

use super::bbox_head::RoiHeadSpec;
use super::conv_unit::{accumulate, Scratch};
use super::faster_rcnn::{FasterRcnnSpec, RoiExtractorSpec};
use super::network::ConvNet;
use super::resnet::ResNetLinks;
use crate::backend::Backend;
use crate::box_coder::BoxXyxy;
use crate::data::rng::Rng;
use crate::detector::{Detector, Losses};
use crate::layers::{GlobalAvgPool, RoiAlign};
use crate::rcnn::anchors::{rpn_anchors, Anchors};
use crate::rcnn::rpn_loss::{rpn_loss, RpnLevelGrad, RpnLevelOutput};
use crate::rcnn::rpn_target::{rpn_target_assign, ImInfo};
use crate::rcnn::{
    bbox_head_detect, bbox_head_loss, generate_proposal_labels, generate_proposals, RcnnConfig,
    RoiTargets,
};
use crate::tensor::Tensor;
use crate::yolo::{Detection, GroundTruth};

/// PaddleDetection's loss terms (`loss_rpn_cls`, `loss_rpn_bbox`,
/// `loss_cls`, `loss_bbox`), in that order.
pub const LOSS_NAMES: &[&str] = &["rpn_cls", "rpn_bbox", "cls", "bbox"];

/// Below this width or height a ground-truth slot is padding.
const PADDING: f32 = 1e-6;

/// The RPN head's convs after the backbone's units: `conv_rpn`, then its
/// two outputs `rpn_cls_logits` and `rpn_bbox_pred` (index 0 and 1 of the
/// RPN buffers below).
const RPN_UNITS: usize = 3;

/// The box head's fully connected layers in the net (`cls_score`, then
/// `bbox_pred`).
const CLS_SCORE: usize = 0;
const BBOX_PRED: usize = 1;

/// One image's ground truth as Paddle's R-CNN operators take it: boxes in
/// original-image pixels (width `x2 - x1 + 1`) and classes from 1.
struct ImageTruth {
    boxes: Vec<BoxXyxy>,
    classes: Vec<i32>,
}

/// The RoIs of a pass, on the host and the device: boxes in input pixels
/// and the image each belongs to.
struct Rois<B: Backend> {
    boxes: Vec<BoxXyxy>,
    images: Vec<usize>,
    boxes_device: Tensor<B>,
    images_device: Tensor<B>,
}

impl<B: Backend> Rois<B> {
    fn new(backend: &B) -> Self {
        Rois {
            boxes: Vec::new(),
            images: Vec::new(),
            boxes_device: Tensor::zeros(backend, &[0]),
            images_device: Tensor::zeros(backend, &[0]),
        }
    }

    fn clear(&mut self) {
        self.boxes.clear();
        self.images.clear();
    }

    fn upload(&mut self, backend: &B) {
        let flat: Vec<f32> = self.boxes.iter().flatten().copied().collect();
        let images: Vec<f32> = self.images.iter().map(|&i| i as f32).collect();
        let count = self.boxes.len();
        self.boxes_device.reshape_reuse(backend, &[count, 4]);
        self.boxes_device.upload(backend, &flat);
        self.images_device.reshape_reuse(backend, &[count]);
        self.images_device.upload(backend, &images);
    }
}

/// A Faster R-CNN (C4) with its operator settings and the buffers of a
/// step.
pub struct FasterRcnnDetector<B: Backend> {
    pub spec: FasterRcnnSpec,
    pub config: RcnnConfig,
    /// Conv units: the backbone's, the RPN head's, res5's; fully connected
    /// layers: `cls_score`, `bbox_pred`.
    pub net: ConvNet<B>,
    backbone: ResNetLinks<B>,
    head: ResNetLinks<B>,
    backbone_units: usize,
    roi_align: RoiAlign<B>,
    pool: GlobalAvgPool<B>,
    rois: Rois<B>,
    /// The RPN outputs (`RPN_CLS`, `RPN_BBOX`) and box head outputs
    /// (`CLS_SCORE`, `BBOX_PRED`) on the host, their gradients there and
    /// on the device.
    rpn_host: [Vec<f32>; 2],
    rpn_host_grads: [Vec<f32>; 2],
    rpn_grads: [Tensor<B>; 2],
    box_host: [Vec<f32>; 2],
    box_host_grads: [Vec<f32>; 2],
    box_grads: [Tensor<B>; 2],
    /// Gradients on the way down: of the pooled features, of res5's output,
    /// of the RoI features, of `conv_rpn`'s output and its input, and of
    /// res4 (the sum of RoIAlign's and the RPN's).
    pooled_grad: Tensor<B>,
    pooled_grad_part: Tensor<B>,
    res5_grad: [Tensor<B>; 1],
    roi_features_grad: Tensor<B>,
    rpn_conv_grad: Tensor<B>,
    rpn_conv_grad_part: Tensor<B>,
    feature_grad: [Tensor<B>; 1],
    feature_grad_part: Tensor<B>,
    scratch: Scratch<B>,
    /// The anchors of the last feature-map size.
    anchors: Option<([usize; 2], Anchors)>,
    /// Draws `rpn_target_assign`'s and `generate_proposal_labels`' samples.
    rng: Rng,
}

impl<B: Backend> FasterRcnnDetector<B> {
    /// Builds the model with PaddleDetection's initial values drawn from
    /// `seed`, the backbone frozen up to `freeze_at`.
    pub fn new(backend: &B, spec: FasterRcnnSpec, config: RcnnConfig, seed: u64) -> Self {
        assert!(
            spec.fpn.is_none(),
            "Faster R-CNN with FPN is not wired at run time yet"
        );
        let RoiExtractorSpec::RoiAlign {
            resolution,
            sampling_ratio,
            spatial_scale,
        } = spec.roi_extractor
        else {
            unreachable!("the C4 model pools with RoIAlign")
        };
        let RoiHeadSpec::ResNetC5(c5) = &spec.roi_head else {
            unreachable!("the C4 model's RoI head is ResNetC5")
        };
        let backbone = ResNetLinks::backbone(backend, &spec.backbone);
        let head = ResNetLinks::head(backend, c5);
        let backbone_units = backbone.unit_count();
        let mut units = spec.backbone.units();
        units.extend(spec.rpn.units());
        units.extend(spec.roi_head.conv_units());
        let mut net = ConvNet::with_fcs(backend, units, spec.bbox_head().layers(), seed);
        net.freeze_units(spec.backbone.frozen_units());
        net.freeze_norm(spec.backbone.freeze_norm);
        let empty = || Tensor::zeros(backend, &[0]);
        FasterRcnnDetector {
            net,
            backbone,
            head,
            backbone_units,
            roi_align: RoiAlign::new(
                backend,
                (resolution, resolution),
                spatial_scale,
                sampling_ratio as i32,
            ),
            pool: GlobalAvgPool::new(backend),
            rois: Rois::new(backend),
            rpn_host: Default::default(),
            rpn_host_grads: Default::default(),
            rpn_grads: [empty(), empty()],
            box_host: Default::default(),
            box_host_grads: Default::default(),
            box_grads: [empty(), empty()],
            pooled_grad: empty(),
            pooled_grad_part: empty(),
            res5_grad: [empty()],
            roi_features_grad: empty(),
            rpn_conv_grad: empty(),
            rpn_conv_grad_part: empty(),
            feature_grad: [empty()],
            feature_grad_part: empty(),
            scratch: Scratch::new(backend),
            anchors: None,
            rng: Rng::from_state(seed ^ 0x5a17_c0de),
            spec,
            config,
        }
    }

    /// The unit of the RPN output `k` (0: `rpn_cls_logits`, 1:
    /// `rpn_bbox_pred`).
    fn rpn_output_unit(&self, k: usize) -> usize {
        self.backbone_units + 1 + k
    }

    fn head_units(&self) -> std::ops::Range<usize> {
        self.backbone_units + RPN_UNITS..self.net.units.len()
    }

    /// The backbone and the RPN head on `image`; the head's outputs are then
    /// on the host and the anchors those of the feature map's size.
    fn forward_rpn(&mut self, image: &Tensor<B>) {
        let backend = self.net.backend().clone();
        let workspace = &mut self.scratch.workspace;
        let (backbone, rest) = self.net.units.split_at_mut(self.backbone_units);
        self.backbone.forward(&backend, backbone, image, workspace);
        let feature = self.backbone.features()[0];
        let (conv, outputs) = rest.split_at_mut(1);
        let hidden = conv[0].forward(&backend, feature, workspace);
        for (k, unit) in outputs[..2].iter_mut().enumerate() {
            let out = unit.forward(&backend, hidden, workspace);
            self.rpn_host[k].resize(out.numel(), 0.0);
            backend.download(out.buf(), &mut self.rpn_host[k]);
        }
        let (_, _, h, w) = feature.nchw();
        if self
            .anchors
            .as_ref()
            .is_none_or(|(size, _)| *size != [h, w])
        {
            self.anchors = Some(([h, w], rpn_anchors(&self.spec.rpn, &[[h, w]])));
        }
    }

    /// `generate_proposals` for image `n` of the last `forward_rpn`.
    fn proposals(&self, n: usize, im_info: [f32; 3], training: bool) -> Vec<BoxXyxy> {
        let ([h, w], anchors) = self.anchors.as_ref().expect("forward_rpn made the anchors");
        let per_image = self.rpn_host[0].len() / self.batch_of_rpn();
        let scores: Vec<f32> = self.rpn_host[0][n * per_image..][..per_image]
            .iter()
            .map(|&x| 1.0 / (1.0 + (-x).exp()))
            .collect();
        let deltas = &self.rpn_host[1][n * 4 * per_image..][..4 * per_image];
        let cfg = if training {
            &self.config.train_proposal
        } else {
            &self.config.test_proposal
        };
        generate_proposals(
            cfg,
            &scores,
            deltas,
            &anchors.boxes,
            &anchors.variances,
            (*h, *w),
            im_info,
        )
        .boxes
    }

    fn batch_of_rpn(&self) -> usize {
        self.net.units[self.rpn_output_unit(0)].output().shape()[0]
    }

    /// RoIAlign on res4, res5, the pool and both fully connected layers on
    /// the RoIs in `self.rois` (uploaded); their outputs are then on the host.
    fn forward_box_head(&mut self) {
        let backend = self.net.backend().clone();
        let head_units = self.head_units();
        let workspace = &mut self.scratch.workspace;
        let feature = self.backbone.features()[0];
        let roi_features = self.roi_align.forward(
            &backend,
            feature,
            &self.rois.boxes_device,
            &self.rois.images_device,
        );
        self.head.forward(
            &backend,
            &mut self.net.units[head_units],
            roi_features,
            workspace,
        );
        let pooled = self.pool.forward(&backend, self.head.features()[0]);
        for (k, fc) in self.net.fcs.iter_mut().enumerate() {
            let out = fc.forward(&backend, pooled);
            self.box_host[k].resize(out.numel(), 0.0);
            backend.download(out.buf(), &mut self.box_host[k]);
        }
    }

    /// Backward from the uploaded gradients of the box head's and the RPN's
    /// outputs, after a training forward on `image`.
    fn backward(&mut self, image: &Tensor<B>) {
        let backend = self.net.backend().clone();
        let head_units = self.head_units();
        // The box head: both layers read the pooled features.
        let pooled = self.pool.output();
        for (k, fc) in self.net.fcs.iter_mut().enumerate() {
            let dx = if k == CLS_SCORE {
                &mut self.pooled_grad
            } else {
                &mut self.pooled_grad_part
            };
            fc.backward(&backend, pooled, &self.box_grads[k], Some(dx));
        }
        accumulate(&backend, &self.pooled_grad_part, &mut self.pooled_grad);
        self.pool.backward(
            &backend,
            self.head.features()[0],
            &self.pooled_grad,
            &mut self.res5_grad[0],
        );
        self.head.backward(
            &backend,
            &mut self.net.units[head_units],
            self.roi_align.output(),
            &self.res5_grad,
            0,
            Some(&mut self.roi_features_grad),
            &mut self.scratch,
        );
        let feature = self.backbone.features()[0];
        self.roi_align.backward(
            &backend,
            feature,
            &self.rois.boxes_device,
            &self.rois.images_device,
            &self.roi_features_grad,
            &mut self.feature_grad[0],
        );
        // The RPN head: both outputs read conv_rpn's.
        let stop = self.net.frozen_units();
        let (backbone, rest) = self.net.units.split_at_mut(self.backbone_units);
        let (conv, outputs) = rest.split_at_mut(1);
        for (k, unit) in outputs[..2].iter_mut().enumerate() {
            let dx = if k == 0 {
                &mut self.rpn_conv_grad
            } else {
                &mut self.rpn_conv_grad_part
            };
            unit.backward(
                &backend,
                conv[0].output(),
                &self.rpn_grads[k],
                &mut self.scratch.dz,
                Some(dx),
                &mut self.scratch.workspace,
            );
        }
        accumulate(&backend, &self.rpn_conv_grad_part, &mut self.rpn_conv_grad);
        let backbone_trained = stop < self.backbone_units;
        conv[0].backward(
            &backend,
            feature,
            &self.rpn_conv_grad,
            &mut self.scratch.dz,
            backbone_trained.then_some(&mut self.feature_grad_part),
            &mut self.scratch.workspace,
        );
        if !backbone_trained {
            return;
        }
        accumulate(&backend, &self.feature_grad_part, &mut self.feature_grad[0]);
        self.backbone.backward(
            &backend,
            backbone,
            image,
            &self.feature_grad,
            stop,
            None,
            &mut self.scratch,
        );
    }

    /// Bytes held now on the device and the host.
    fn planned_bytes(&self) -> usize {
        let b = self.net.backend();
        let tensors = self
            .rpn_grads
            .iter()
            .chain(&self.box_grads)
            .chain(&self.res5_grad)
            .chain(&self.feature_grad)
            .chain([
                &self.pooled_grad,
                &self.pooled_grad_part,
                &self.roi_features_grad,
                &self.rpn_conv_grad,
                &self.rpn_conv_grad_part,
                &self.feature_grad_part,
                &self.rois.boxes_device,
                &self.rois.images_device,
            ])
            .map(|t| t.capacity_bytes(b))
            .sum::<usize>();
        let host = self
            .rpn_host
            .iter()
            .chain(&self.rpn_host_grads)
            .chain(&self.box_host)
            .chain(&self.box_host_grads)
            .map(|v| v.capacity() * 4)
            .sum::<usize>();
        self.net.planned_bytes()
            + self.backbone.planned_bytes(b)
            + self.head.planned_bytes(b)
            + self.roi_align.planned_bytes(b)
            + self.pool.planned_bytes(b)
            + self.scratch.planned_bytes(b)
            + tensors
            + host
    }
}

/// Each image's ground truth from the loader's slots (normalised
/// `[cx, cy, w, h]` relative to the resized picture, classes with the
/// background as 0) in original-image pixels, Paddle's COCO convention
/// `x2 = x1 + w - 1`.
fn image_truths(truth: &GroundTruth, im_info: &[[f32; 3]]) -> Vec<ImageTruth> {
    let m = truth.max_boxes;
    im_info
        .iter()
        .enumerate()
        .map(|(n, &[height, width, scale])| {
            let (w, h) = (width / scale, height / scale);
            let mut boxes = Vec::new();
            let mut classes = Vec::new();
            for k in 0..m {
                let b = &truth.boxes[(n * m + k) * 4..][..4];
                if b[2] < PADDING || b[3] < PADDING {
                    continue;
                }
                let x1 = (b[0] - b[2] / 2.0) * w;
                let y1 = (b[1] - b[3] / 2.0) * h;
                boxes.push([x1, y1, x1 + b[2] * w - 1.0, y1 + b[3] * h - 1.0]);
                classes.push(truth.labels[n * m + k]);
            }
            ImageTruth { boxes, classes }
        })
        .collect()
}

/// `im_info` as given, or for callers that give none (inputs that are the
/// pictures, unscaled) `[height, width, 1]` of the input.
fn image_infos<B: Backend>(image: &Tensor<B>, im_info: &[[f32; 3]]) -> Vec<[f32; 3]> {
    let (n, _, h, w) = image.nchw();
    if im_info.is_empty() {
        vec![[h as f32, w as f32, 1.0]; n]
    } else {
        assert_eq!(im_info.len(), n, "one im_info per image");
        im_info.to_vec()
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
        LOSS_NAMES
    }

    fn plan(&mut self, batch: usize, size: usize) -> usize {
        // One pass on zeros, with one whole-image box per image as the truth:
        // every buffer takes the size of a step on this input.
        let running = self.net.save_running_stats();
        let backend = self.net.backend().clone();
        let image = Tensor::zeros(&backend, &[batch, 3, size, size]);
        let boxes: Vec<f32> = (0..batch).flat_map(|_| [0.5, 0.5, 0.5, 0.5]).collect();
        let labels = vec![1; batch];
        let truth = GroundTruth {
            boxes: &boxes,
            labels: &labels,
            scores: None,
            max_boxes: 1,
        };
        self.train_pass(&image, &truth, &[]);
        self.scratch.equalize(&backend);
        self.net.restore_running_stats(running);
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

        // The RPN's loss over the batch.
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
        let (_, _, h, w) = self.net.units[self.rpn_output_unit(0)].output().nchw();
        for k in 0..2 {
            let len = self.rpn_host[k].len();
            self.rpn_host_grads[k].resize(len, 0.0);
        }
        let [grad_cls, grad_bbox] = &mut self.rpn_host_grads;
        let rpn = rpn_loss(
            &[RpnLevelOutput {
                height: h,
                width: w,
                cls_logits: &self.rpn_host[0],
                bbox_pred: &self.rpn_host[1],
            }],
            self.spec.rpn.anchors_per_cell(),
            &targets,
            &mut [RpnLevelGrad {
                cls_logits: grad_cls,
                bbox_pred: grad_bbox,
            }],
        );
        for k in 0..2 {
            let shape = self.net.units[self.rpn_output_unit(k)]
                .output()
                .shape()
                .to_vec();
            self.rpn_grads[k].reshape_reuse(&backend, &shape);
            self.rpn_grads[k].upload(&backend, &self.rpn_host_grads[k]);
        }

        // The RoIs the box head learns from, and their targets.
        self.rois.clear();
        let classes = self.spec.num_classes;
        let mut labels = Vec::new();
        let mut bbox_targets = Vec::new();
        let mut bbox_weights = Vec::new();
        for (n, (t, &info)) in truths.iter().zip(&im_info).enumerate() {
            let proposals = self.proposals(n, info, true);
            let sampled = generate_proposal_labels(
                &self.config.bbox_assigner,
                &proposals,
                &t.boxes,
                &t.classes,
                &vec![false; t.boxes.len()],
                info,
                &mut self.rng,
            );
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
            &self.box_host[CLS_SCORE],
            &self.box_host[BBOX_PRED],
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
        for k in 0..2 {
            let shape = self.net.fcs[k].output().shape().to_vec();
            self.box_grads[k].reshape_reuse(&backend, &shape);
            self.box_grads[k].upload(&backend, &self.box_host_grads[k]);
        }
        self.backward(image);
        Losses::new(
            LOSS_NAMES,
            &[rpn.loss_rpn_cls, rpn.loss_rpn_bbox, boxes.cls, boxes.bbox],
        )
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
        for (n, &info) in im_info.iter().enumerate() {
            let proposals = self.proposals(n, info, false);
            counts.push(proposals.len());
            self.rois
                .images
                .extend(std::iter::repeat_n(n, proposals.len()));
            self.rois.boxes.extend(proposals);
        }
        if self.rois.boxes.is_empty() {
            return vec![Vec::new(); im_info.len()];
        }
        self.rois.upload(&backend);
        self.forward_box_head();
        let classes = self.spec.num_classes;
        let mut first = 0;
        counts
            .iter()
            .zip(&im_info)
            .zip(original_sizes)
            .map(|((&count, info), &[ow, oh])| {
                let rows = first..first + count;
                first += count;
                let mut found = bbox_head_detect(
                    &self.config,
                    &self.rois.boxes[rows.clone()],
                    info[2],
                    &[oh as f32, ow as f32, 1.0],
                    &self.box_host[CLS_SCORE][rows.start * classes..rows.end * classes],
                    &self.box_host[BBOX_PRED][rows.start * 4 * classes..rows.end * 4 * classes],
                );
                // Paddle lists a class's detections by RoI in this form: best
                // first here, as every detector reports them; classes from 0.
                found.sort_by(|a, b| a.class.cmp(&b.class).then(b.score.total_cmp(&a.score)));
                for d in &mut found {
                    d.class -= 1;
                }
                found
            })
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

    /// A planned model trains a pass with finite, non-zero loss terms and
    /// detects with classes numbered from 0 over the object classes.
    #[test]
    fn small_c4_trains_a_pass_and_detects() {
        let cpu = CpuBackend::new();
        let spec = FasterRcnnSpec::small_c4(4);
        let mut model = FasterRcnnDetector::new(&cpu, spec, RcnnConfig::faster_rcnn(4), 7);
        assert!(model.plan(1, 96) > 0);
        let image = image(&cpu, 1, 96, 128, 3);
        let boxes = [0.4, 0.5, 0.3, 0.4, 0.7, 0.3, 0.2, 0.2];
        let labels = [1, 3];
        let truth = GroundTruth {
            boxes: &boxes,
            labels: &labels,
            scores: None,
            max_boxes: 2,
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

    /// The wiring of the backward pass, whatever the targets: with fixed
    /// RoIs (the samplers pick them on the host and no gradient flows into
    /// their boxes, as in Paddle) and random probes as the gradients of the
    /// RPN's and the box head's outputs, every parameter's gradient is the
    /// finite difference of `sum(outputs * probes)`: the box head, res5, the
    /// RoIAlign and RPN gradients added into res4, and the backbone's
    /// trained stages.
    #[test]
    fn backward_matches_finite_differences_for_any_seed() {
        let cpu = CpuBackend::new();
        for seed in SEEDS {
            let spec = FasterRcnnSpec::small_c4(3);
            let mut model = FasterRcnnDetector::new(&cpu, spec, RcnnConfig::faster_rcnn(3), seed);
            let image = image(&cpu, 2, 64, 48, seed + 100);
            let rois = [
                [3.0, 5.0, 40.0, 30.0],
                [10.0, 0.0, 47.0, 63.0],
                [0.5, 8.0, 20.0, 50.5],
            ];
            let run = |m: &mut FasterRcnnDetector<CpuBackend>| {
                m.forward_rpn(&image);
                m.rois.clear();
                m.rois.boxes.extend(rois);
                m.rois.images.extend([0, 1, 1]);
                m.rois.upload(&cpu);
                m.forward_box_head();
            };
            run(&mut model);
            let probes: Vec<Vec<f32>> = (0..4)
                .map(|k| {
                    let len = if k < 2 {
                        model.rpn_host[k].len()
                    } else {
                        model.box_host[k - 2].len()
                    };
                    random_vec(seed + 200 + k as u64, len)
                })
                .collect();
            for k in 0..2 {
                let rpn = model.net.units[model.rpn_output_unit(k)]
                    .output()
                    .shape()
                    .to_vec();
                model.rpn_grads[k] = Tensor::from_host(&cpu, &rpn, &probes[k]);
                let fc = model.net.fcs[k].output().shape().to_vec();
                model.box_grads[k] = Tensor::from_host(&cpu, &fc, &probes[2 + k]);
            }
            model.backward(&image);
            check_params(
                &mut model,
                |m| &mut m.net,
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
                &format!("seed {seed}"),
                (1e-2, 0.2),
                |m| {
                    run(m);
                    let outputs = [
                        &m.rpn_host[0],
                        &m.rpn_host[1],
                        &m.box_host[0],
                        &m.box_host[1],
                    ];
                    outputs
                        .iter()
                        .zip(&probes)
                        .map(|(y, r)| probe_loss(y, r))
                        .sum::<Probe>()
                },
            );
        }
    }
}
