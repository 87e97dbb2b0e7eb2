//! Cascade R-CNN's three box-head stages at run time, on Faster R-CNN FPN's
//! trunk (`FasterRcnnDetector::cascade` runs the backbone, the pyramid, the
//! RPN and, for Cascade Mask R-CNN, the mask branch), as PaddleDetection's
//! `CascadeRCNN` and `CascadeMaskRCNN` wire them
//! (`architectures/cascade_rcnn.py`, `roi_heads/cascade_head.py`):
//!
//! - training: stage 1 samples its RoIs from the proposals as Faster R-CNN
//!   does, at IoU 0.5 with class-agnostic targets; each later stage takes
//!   the previous stage's RoIs moved by that stage's `bbox_pred`
//!   (`refine_rois`, on the host: no gradient flows through the boxes) and
//!   labels all of them at its own IoU (cascade mode, no sampling). Each
//!   stage cuts its RoIs' features from the pyramid (`FPNRoIAlign`, one
//!   pass per stage), runs its own `fc6`, `fc7`, `cls_score` and
//!   class-agnostic `bbox_pred`, and takes its loss weighted 1, 0.5, 0.25
//!   (`loss_cls_i`, `loss_loc_i`);
//! - backward: each stage's layers from its loss's gradients, and the three
//!   RoIAlign gradients added into the pyramid's;
//! - inference: the stages in turn, each on the previous one's refined
//!   RoIs; then the stage-1 and stage-2 heads again on the stage-3 RoIs'
//!   features, and `cascade_head_detect` averages the three softmaxes and
//!   decodes stage 3's boxes.
//!
//! Cascade Mask R-CNN's mask branch learns from the last stage's RoIs and
//! labels (`last_stage_rois`) and at inference runs on the detections, as
//! Mask R-CNN's does.

use super::bbox_head::CLASS_AGNOSTIC_BOXES;
use super::cascade_rcnn::{CascadeRcnnSpec, CascadeStageSpec};
use super::conv_unit::Scratch;
use super::faster_rcnn_detector::{
    backward_box_outputs, forward_box_outputs, roi_extractor, BoxHead,
};
use super::faster_rcnn_rois::{RoiExtractor, Rois};
use crate::backend::Backend;
use crate::box_coder::BoxXyxy;
use crate::data::rng::Rng;
use crate::layers::FullyConnected;
use crate::rcnn::truth::{by_class_from_zero, ImageTruth};
use crate::rcnn::{
    cascade_head_detect, generate_proposal_labels_with, refine_rois, BBoxAssignerConfig,
    BoxHeadLossArgs, LabelSwitches, RoiTargets, SampledRois,
};
use crate::tensor::Tensor;
use crate::yolo::{Detection, NmsConfig};

/// PaddleDetection's loss terms (`loss_rpn_cls`, `loss_rpn_bbox`,
/// `loss_cls_0`, `loss_loc_0`, ... `loss_loc_2`), in that order.
pub const CASCADE_LOSS_NAMES: &[&str] = &[
    "rpn_cls", "rpn_bbox", "cls_0", "loc_0", "cls_1", "loc_1", "cls_2", "loc_2",
];

/// Cascade Mask R-CNN's: Cascade R-CNN's, then `loss_mask`.
pub const CASCADE_MASK_LOSS_NAMES: &[&str] = &[
    "rpn_cls", "rpn_bbox", "cls_0", "loc_0", "cls_1", "loc_1", "cls_2", "loc_2", "mask",
];

/// A stage's fully connected layers in the net, `fc6`, `fc7`, `cls_score`,
/// `bbox_pred` (`CascadeStageSpec::layers`); the stages' follow one another.
const STAGE_FCS: usize = 4;

/// `bbox_pred`'s row: the background's and the foreground's four deltas.
const BOX_DELTAS: usize = 4 * CLASS_AGNOSTIC_BOXES;

/// What the stages run on, lent by the detector: the pyramid's outputs
/// (lowest level first), the net's fully connected layers (the stages'
/// only) and a workspace.
pub(super) struct Trunk<'a, B: Backend> {
    pub features: &'a [&'a Tensor<B>],
    pub fcs: &'a mut [FullyConnected<B>],
    pub workspace: &'a mut Tensor<B>,
}

/// One stage's RoIs and buffers.
pub(super) struct CascadeStage<B: Backend> {
    pub spec: CascadeStageSpec,
    /// The RoIs it runs on: in training its labelled ones, image after
    /// image; at inference the proposals (stage 1) or the previous stage's
    /// RoIs refined.
    pub rois: Rois<B>,
    extractor: RoiExtractor<B>,
    /// Training: each image's labelled RoIs and their targets.
    sampled: Vec<SampledRois>,
    /// `cls_score`'s (`[R, classes]`) and `bbox_pred`'s (`[R, 8]`) outputs
    /// on the host in Paddle's order of the RoIs (the next stage's RoIs and
    /// the detections are decoded there), and their gradients on the
    /// device in the device's order.
    pub host: [Vec<f32>; 2],
    grads: [Tensor<B>; 2],
}

impl<B: Backend> CascadeStage<B> {
    /// Each image's RoIs moved by the stage's `bbox_pred` (training: its
    /// labelled RoIs), the next stage's proposals.
    fn refined(&self) -> Vec<Vec<BoxXyxy>> {
        let mut first = 0;
        self.sampled
            .iter()
            .map(|s| {
                let rows = first..first + s.rois.len();
                first = rows.end;
                let deltas = &self.host[1][rows.start * BOX_DELTAS..rows.end * BOX_DELTAS];
                refine_rois(&s.rois, deltas, &self.spec.bbox_reg_weights)
            })
            .collect()
    }

    /// The stage's loss on its labelled RoIs after its forward (`outputs`:
    /// its `cls_score` and `bbox_pred`), weighted, on the backend:
    /// `[loss_cls, loss_loc]`; the gradients are then in `grads`.
    fn loss(&mut self, backend: &B, outputs: &[FullyConnected<B>], classes: usize) -> [f32; 2] {
        let concat = |part: fn(&SampledRois) -> &[f32]| -> Vec<f32> {
            self.sampled.iter().flat_map(part).copied().collect()
        };
        let labels: Vec<i32> = self
            .sampled
            .iter()
            .flat_map(|s| &s.labels)
            .copied()
            .collect();
        let bbox_targets = concat(|s| &s.bbox_targets);
        let bbox_weights = concat(|s| &s.bbox_inside_weights);
        let rows = self.rois.device_rows();
        let args = BoxHeadLossArgs {
            classes,
            deltas: BOX_DELTAS,
            loss_weight: self.spec.loss_weight,
            targets: RoiTargets {
                labels: &labels,
                bbox_targets: &bbox_targets,
                bbox_inside_weights: &bbox_weights,
                bbox_outside_weights: &bbox_weights,
            },
            rows: &rows,
        };
        let [grad_cls, grad_bbox] = &mut self.grads;
        grad_cls.reshape_reuse(backend, outputs[0].output().shape());
        grad_bbox.reshape_reuse(backend, outputs[1].output().shape());
        let loss = backend.bbox_head_loss(
            &args,
            outputs[0].output().buf(),
            outputs[1].output().buf(),
            grad_cls.buf_mut(),
            grad_bbox.buf_mut(),
        );
        [loss.cls, loss.bbox]
    }

    fn planned_bytes(&self, backend: &B) -> usize {
        let host = self.host.iter().map(|v| v.capacity() * 4).sum::<usize>();
        self.rois.planned_bytes(backend)
            + self.extractor.planned_bytes(backend)
            + self
                .grads
                .iter()
                .map(|t| t.capacity_bytes(backend))
                .sum::<usize>()
            + host
    }
}

/// The three stages, and what they share: `fc6` and `fc7`'s wiring (each
/// stage's own layers are lent to it) and the gradients on the way down,
/// the stages running one after another.
pub(super) struct CascadeHeads<B: Backend> {
    pub stages: Vec<CascadeStage<B>>,
    head: BoxHead<B>,
    /// The gradient of `fc7`'s output, and one of its two parts.
    head_grad: Tensor<B>,
    head_grad_part: Tensor<B>,
    /// Classes including the background.
    classes: usize,
}

/// Stage `k`'s fully connected layers among the stages' `fcs`.
fn stage_fcs<B: Backend>(fcs: &mut [FullyConnected<B>], k: usize) -> &mut [FullyConnected<B>] {
    &mut fcs[k * STAGE_FCS..][..STAGE_FCS]
}

/// A stage's layers (`fcs`: `fc6` and `fc7` through `head`, then
/// `cls_score` and `bbox_pred`) on the RoI features `x` of `rois`; the
/// outputs then in `host`, in Paddle's order.
fn run_stage_layers<B: Backend>(
    backend: &B,
    head: &mut BoxHead<B>,
    fcs: &mut [FullyConnected<B>],
    (x, rois): (&Tensor<B>, &Rois<B>),
    host: &mut [Vec<f32>; 2],
    workspace: &mut Tensor<B>,
) {
    let (head_fcs, outputs) = fcs.split_at_mut(head.fc_count());
    head.forward(backend, &mut [], head_fcs, x, workspace);
    forward_box_outputs(backend, outputs, head.output(head_fcs), rois, host);
}

impl<B: Backend> CascadeHeads<B> {
    /// The stages of `spec`, each with its own `FPNRoIAlign` on the trunk's
    /// pyramid.
    pub fn new(backend: &B, spec: &CascadeRcnnSpec) -> Self {
        assert_eq!(spec.stages.len(), 3, "Cascade R-CNN has three stages");
        let trunk = &spec.faster_rcnn;
        let empty = || Tensor::zeros(backend, &[0]);
        let stages = spec
            .stages
            .iter()
            .map(|stage| {
                assert_eq!(stage.layers().len(), STAGE_FCS, "fc6, fc7 and the outputs");
                let (_, extractor, levels) =
                    roi_extractor(backend, trunk.fpn.as_ref(), &trunk.roi_extractor);
                CascadeStage {
                    spec: stage.clone(),
                    rois: Rois::new(backend, levels),
                    extractor,
                    sampled: Vec::new(),
                    host: Default::default(),
                    grads: [empty(), empty()],
                }
            })
            .collect();
        CascadeHeads {
            stages,
            head: BoxHead::TwoFc {
                fc6_grad: empty(),
                features_grad: empty(),
            },
            head_grad: empty(),
            head_grad_part: empty(),
            classes: spec.num_classes(),
        }
    }

    /// Stage `k` on the RoIs in its `rois` (uploaded): their features cut
    /// from the pyramid, then its layers; the outputs are then on the host.
    pub fn forward_stage(&mut self, backend: &B, k: usize, trunk: &mut Trunk<'_, B>) {
        let stage = &mut self.stages[k];
        let x = stage
            .extractor
            .forward(backend, trunk.features, &stage.rois);
        run_stage_layers(
            backend,
            &mut self.head,
            stage_fcs(trunk.fcs, k),
            (x, &stage.rois),
            &mut stage.host,
            trunk.workspace,
        );
    }

    /// Training after the RPN, from each image's `proposals`: every stage's
    /// labels (with the base assigner settings `base` and each stage's
    /// thresholds), forward and loss; the losses' gradients are uploaded.
    /// Returns `[cls_0, loc_0, cls_1, loc_1, cls_2, loc_2]`.
    pub fn train(
        &mut self,
        backend: &B,
        trunk: &mut Trunk<'_, B>,
        base: &BBoxAssignerConfig,
        proposals: Vec<Vec<BoxXyxy>>,
        (truths, im_info): (&[ImageTruth], &[[f32; 3]]),
        rng: &mut Rng,
    ) -> Vec<f32> {
        let mut inputs = proposals;
        let mut losses = Vec::with_capacity(2 * self.stages.len());
        for k in 0..self.stages.len() {
            let (done, rest) = self.stages.split_at_mut(k);
            let previous = done.last();
            if let Some(previous) = previous {
                inputs = previous.refined();
            }
            let stage = &mut rest[0];
            let cfg = stage.spec.assigner(base);
            stage.sampled = inputs
                .iter()
                .zip(truths.iter().zip(im_info))
                .enumerate()
                .map(|(n, (proposals, (t, &info)))| {
                    let switches = LabelSwitches {
                        is_cls_agnostic: true,
                        cascade_max_overlap: previous.map(|p| &p.sampled[n].max_overlap[..]),
                    };
                    generate_proposal_labels_with(
                        &cfg,
                        switches,
                        proposals,
                        &t.boxes,
                        &t.classes,
                        &vec![false; t.boxes.len()],
                        info,
                        rng,
                    )
                })
                .collect();
            stage.rois.clear();
            for (n, sampled) in stage.sampled.iter().enumerate() {
                stage
                    .rois
                    .images
                    .extend(std::iter::repeat_n(n, sampled.rois.len()));
                stage.rois.boxes.extend(&sampled.rois);
            }
            stage.rois.upload(backend);
            self.forward_stage(backend, k, trunk);
            let outputs = &trunk.fcs[k * STAGE_FCS..][self.head.fc_count()..STAGE_FCS];
            losses.extend(self.stages[k].loss(backend, outputs, self.classes));
        }
        losses
    }

    /// The last stage's labelled RoIs per image, after `train`: what
    /// Cascade Mask R-CNN's mask head learns from.
    pub fn last_stage_rois(&self) -> &[SampledRois] {
        &self.stages.last().expect("three stages").sampled
    }

    /// Every stage's `cls_score` and `bbox_pred` (among `fcs`) outputs on
    /// the device, and their gradients there, stage after stage (tests set
    /// the gradients by hand).
    #[cfg(test)]
    pub fn outputs<'a>(&self, fcs: &'a [FullyConnected<B>]) -> Vec<&'a Tensor<B>> {
        let first = self.head.fc_count();
        let stages = fcs.chunks(STAGE_FCS).take(self.stages.len());
        stages
            .flat_map(|f| &f[first..])
            .map(|fc| fc.output())
            .collect()
    }

    #[cfg(test)]
    pub fn output_grads(&mut self) -> impl Iterator<Item = &mut Tensor<B>> {
        self.stages.iter_mut().flat_map(|s| &mut s.grads)
    }

    /// Each stage's layers from its outputs' uploaded gradients, after a
    /// training forward: their parameters' gradients, and the gradient of
    /// the stage's RoI features.
    pub fn backward_heads(
        &mut self,
        backend: &B,
        fcs: &mut [FullyConnected<B>],
        scratch: &mut Scratch<B>,
    ) {
        for (k, stage) in self.stages.iter_mut().enumerate() {
            let (head_fcs, outputs) = stage_fcs(fcs, k).split_at_mut(self.head.fc_count());
            let x = self.head.output(head_fcs);
            backward_box_outputs(
                backend,
                outputs,
                x,
                &stage.grads,
                &mut self.head_grad,
                &mut self.head_grad_part,
            );
            self.head.backward(
                backend,
                &mut [],
                head_fcs,
                stage.extractor.output_mut(),
                &self.head_grad,
                None,
                scratch,
            );
        }
    }

    /// Adds every stage's RoIAlign gradient into the pyramid's
    /// (`feature_grads`, lowest level first), after `backward_heads`;
    /// `part` is scratch.
    pub fn extract_backward(
        &mut self,
        backend: &B,
        features: &[&Tensor<B>],
        feature_grads: &mut [Tensor<B>],
        part: &mut Tensor<B>,
    ) {
        for stage in &mut self.stages {
            stage.extractor.backward_from_output(
                backend,
                features,
                &stage.rois,
                feature_grads,
                part,
            );
        }
    }

    /// Detections per image from each image's `proposals` (some), in each
    /// image's own pixels (`original_sizes` are `[width, height]`), classes
    /// from 0: the stages in turn, the stage-1 and stage-2 layers again on
    /// the stage-3 RoIs, then `cascade_head_detect` with `nms`.
    pub fn detect(
        &mut self,
        backend: &B,
        trunk: &mut Trunk<'_, B>,
        proposals: Vec<Vec<BoxXyxy>>,
        (im_info, original_sizes): (&[[f32; 3]], &[[u32; 2]]),
        nms: &NmsConfig,
    ) -> Vec<Vec<Detection>> {
        let counts: Vec<usize> = proposals.iter().map(Vec::len).collect();
        let images: Vec<usize> = counts
            .iter()
            .enumerate()
            .flat_map(|(n, &count)| std::iter::repeat_n(n, count))
            .collect();
        let mut boxes = proposals.concat();
        for k in 0..self.stages.len() {
            if k > 0 {
                let previous = &self.stages[k - 1];
                let deltas = &previous.host[1];
                boxes = refine_rois(
                    &previous.rois.boxes,
                    deltas,
                    &previous.spec.bbox_reg_weights,
                );
            }
            let rois = &mut self.stages[k].rois;
            rois.clear();
            rois.images.extend(&images);
            rois.boxes.append(&mut boxes);
            rois.upload(backend);
            self.forward_stage(backend, k, trunk);
        }

        // Stage 1's and stage 2's layers again, on the stage-3 RoIs'
        // features: three classifiers score the same RoIs.
        let stages = self.stages.len();
        let (earlier, last) = self.stages.split_at_mut(stages - 1);
        let last = &last[0];
        for (k, stage) in earlier.iter_mut().enumerate() {
            run_stage_layers(
                backend,
                &mut self.head,
                stage_fcs(trunk.fcs, k),
                (last.extractor.output(), &last.rois),
                &mut stage.host,
                trunk.workspace,
            );
        }
        let classes = self.classes;
        let mut first = 0;
        counts
            .iter()
            .zip(im_info)
            .zip(original_sizes)
            .map(|((&count, info), &[ow, oh])| {
                let rows = first..first + count;
                first += count;
                let scores = rows.start * classes..rows.end * classes;
                let found = cascade_head_detect(
                    nms,
                    classes,
                    &last.rois.boxes[rows.clone()],
                    info[2],
                    &[oh as f32, ow as f32, 1.0],
                    [
                        &earlier[0].host[0][scores.clone()],
                        &earlier[1].host[0][scores.clone()],
                        &last.host[0][scores],
                    ],
                    &last.host[1][rows.start * BOX_DELTAS..rows.end * BOX_DELTAS],
                    &last.spec.bbox_reg_weights,
                );
                // Paddle lists a class's detections by RoI.
                by_class_from_zero(found)
            })
            .collect()
    }

    pub fn planned_bytes(&self, backend: &B) -> usize {
        self.stages
            .iter()
            .map(|s| s.planned_bytes(backend))
            .sum::<usize>()
            + self.head.planned_bytes(backend)
            + self.head_grad.capacity_bytes(backend)
            + self.head_grad_part.capacity_bytes(backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::rng::Rng;
    use crate::detector::Detector;
    use crate::gradcheck::random_vec;
    use crate::models::FasterRcnnDetector;
    use crate::rcnn::truth::ImageTruth;
    use crate::rcnn::{bbox_overlap, RcnnConfig};
    use crate::yolo::GroundTruth;
    use crate::CpuBackend;

    /// A picture of 128 x 96 with two boxes and their outlines as
    /// triangles (scale 1), as `small_models_train_a_pass_and_detect` of
    /// Faster R-CNN has it.
    const BOXES: [f32; 8] = [0.4, 0.5, 0.3, 0.4, 0.7, 0.3, 0.2, 0.2];
    const LABELS: [i32; 2] = [1, 3];

    fn polygons() -> Vec<Vec<Vec<Vec<f32>>>> {
        vec![vec![
            vec![vec![32.0, 29.0, 63.0, 29.0, 47.0, 66.0]],
            vec![vec![77.0, 19.0, 102.0, 19.0, 90.0, 38.0]],
        ]]
    }

    /// Both small models (4 classes with the background): their slots are
    /// the spec's parameters in Paddle's order with the spec's attributes
    /// (the optimizer scales each by `slot.param.learning_rate`: stage 2's
    /// layers 2, stage 3's 4, their biases twice that); planned, they train
    /// a pass on polygons with finite terms under Paddle's names, each
    /// stage's classification loss its loss weight times ln 4 when its
    /// `cls_score` weights are 0 (so stages 2 and 3 learnt from RoIs,
    /// weighted 0.5 and 0.25); and they detect, classes from 0, boxes in
    /// the picture, the mask model one mask per detection the picture's
    /// size.
    #[test]
    fn small_cascade_models_train_a_pass_and_detect() {
        let cpu = CpuBackend::new();
        for spec in [CascadeRcnnSpec::small(4), CascadeRcnnSpec::small_mask(4)] {
            let masked = spec.mask.is_some();
            let mut model =
                FasterRcnnDetector::cascade(&cpu, spec.clone(), RcnnConfig::faster_rcnn(4), 7);
            let slots: Vec<_> = model.net.slots().iter().map(|s| s.param.clone()).collect();
            assert_eq!(slots, spec.params());
            let rate = |name: &str| {
                let slot = slots.iter().find(|p| p.spec.name == name);
                slot.expect(name).learning_rate
            };
            let rates = [
                "fc6_w",
                "fc7_2_w",
                "cls_score_2_b",
                "bbox_pred_3_w",
                "fc6_3_b",
            ]
            .map(rate);
            assert_eq!(rates, [1.0, 2.0, 4.0, 4.0, 8.0]);

            assert!(model.plan(1, 90) > 0);
            for suffix in ["", "_2", "_3"] {
                let name = format!("cls_score{suffix}_w");
                model.net.set_param(&name, &[0.0; 32 * 4]).expect(&name);
            }
            let image = Tensor::from_host(&cpu, &[1, 3, 96, 128], &random_vec(3, 3 * 96 * 128));
            let polygons = polygons();
            let truth = GroundTruth {
                boxes: &BOXES,
                labels: &LABELS,
                scores: None,
                max_boxes: 2,
                polygons: &polygons,
            };
            let losses = model.train_pass(&image, &truth, &[[96.0, 128.0, 1.0]]);
            let names = match masked {
                false => CASCADE_LOSS_NAMES,
                true => CASCADE_MASK_LOSS_NAMES,
            };
            assert_eq!(losses.names(), names);
            let values = losses.values();
            assert!(values.iter().all(|v| v.is_finite()), "{losses:?}");
            for (k, weight) in [1.0f32, 0.5, 0.25].into_iter().enumerate() {
                let cls = values[2 + 2 * k];
                let want = weight * 4.0f32.ln();
                assert!((cls - want).abs() < 1e-5, "stage {k}: {losses:?}");
                assert!(values[3 + 2 * k] >= 0.0, "{losses:?}");
            }
            assert!(values[0] > 0.0, "{losses:?}");
            if masked {
                assert!(values[8] > 0.0, "{losses:?}");
            }

            let found = model.detect(&image, &[[128, 96]], &[[96.0, 128.0, 1.0]]);
            assert_eq!(found.len(), 1);
            assert!(!found[0].is_empty());
            for d in &found[0] {
                assert!(d.class < 3 && (0.0..=1.0).contains(&d.score), "{d:?}");
                assert!(d.bbox[0] >= 0.0 && d.bbox[2] <= 127.0, "{d:?}");
                assert!(d.bbox[1] >= 0.0 && d.bbox[3] <= 95.0, "{d:?}");
            }
            match model.masks() {
                None => assert!(!masked),
                Some(masks) => {
                    assert_eq!(masks.len(), 1);
                    assert_eq!(masks[0].len(), found[0].len());
                    assert!(masks[0]
                        .iter()
                        .all(|m| (m.height(), m.width()) == (96, 128)));
                }
            }
        }
    }

    /// Stage 1 samples from the proposals (at most `batch_size_per_im`);
    /// each later stage labels every RoI of the previous one moved by that
    /// stage's `bbox_pred`, but for its ground-truth rows (overlap 1), which
    /// come back as the candidates' first rows: the ground truth and the
    /// refined RoIs, none dropped, none sampled, each foreground at the
    /// stage's IoU or background.
    #[test]
    fn later_stages_label_every_refined_roi() {
        let cpu = CpuBackend::new();
        let spec = CascadeRcnnSpec::small(4);
        let mut heads = CascadeHeads::new(&cpu, &spec);
        // P2..P6 of a 96 x 128 picture, 16 channels.
        let features: Vec<Tensor<CpuBackend>> = (2..=6u32)
            .map(|level| {
                let shape = [
                    1,
                    16,
                    96usize.div_ceil(1 << level),
                    128usize.div_ceil(1 << level),
                ];
                let values = random_vec(level as u64, shape.iter().product());
                Tensor::from_host(&cpu, &shape, &values)
            })
            .collect();
        let features: Vec<&Tensor<CpuBackend>> = features.iter().collect();
        let mut rng = Rng::from_state(11);
        let mut fcs: Vec<FullyConnected<CpuBackend>> = spec
            .stages
            .iter()
            .flat_map(|s| s.layers())
            .map(|f| FullyConnected::new(&cpu, f, &mut rng))
            .collect();
        let mut workspace = Tensor::zeros(&cpu, &[0]);
        let mut trunk = Trunk {
            features: &features,
            fcs: &mut fcs,
            workspace: &mut workspace,
        };
        // 600 proposals, up to 15 pixels off one of the two boxes.
        let gt = [[20.0, 30.0, 60.0, 70.0], [70.0, 10.0, 110.0, 40.0]];
        let jitter = random_vec(7, 600 * 4);
        let proposals: Vec<BoxXyxy> = jitter
            .chunks_exact(4)
            .enumerate()
            .map(|(i, j)| {
                let g: [f32; 4] = gt[i % 2];
                [0, 1, 2, 3].map(|c| g[c] + 15.0 * j[c])
            })
            .collect();
        let truths = [ImageTruth {
            boxes: gt.to_vec(),
            classes: vec![1, 3],
            slots: vec![0, 1],
        }];
        let base = BBoxAssignerConfig::faster_rcnn(4);
        let losses = heads.train(
            &cpu,
            &mut trunk,
            &base,
            vec![proposals],
            (&truths, &[[96.0, 128.0, 1.0]]),
            &mut rng,
        );
        assert_eq!(losses.len(), 6);
        assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
        // Stage 1 sampled: its foreground quota full, the rest background.
        let quota = (base.batch_size_per_im as f32 * base.fg_fraction) as usize;
        assert_eq!(heads.stages[0].sampled[0].foreground, quota);
        assert!(heads.stages[0].rois.boxes.len() <= base.batch_size_per_im);
        let sorted = |mut boxes: Vec<BoxXyxy>| {
            boxes.sort_by_key(|b| b.map(f32::to_bits));
            boxes
        };
        for k in 1..3 {
            let previous = &heads.stages[k - 1];
            let refined = previous.refined().remove(0);
            let overlaps = &previous.sampled[0].max_overlap;
            let mut want = gt.to_vec();
            want.extend(
                refined
                    .iter()
                    .zip(overlaps)
                    .filter(|&(_, &o)| o < 1.0)
                    .map(|(b, _)| *b),
            );
            let stage = &heads.stages[k];
            assert_eq!(
                sorted(stage.rois.boxes.clone()),
                sorted(want.clone()),
                "stage {}",
                k + 1
            );
            let best = |b: &BoxXyxy| gt.iter().map(|g| bbox_overlap(b, g)).fold(0.0, f32::max);
            let foreground = want
                .iter()
                .filter(|b| best(b) >= stage.spec.fg_thresh)
                .count();
            assert_eq!(stage.sampled[0].foreground, foreground, "stage {}", k + 1);
            assert!(foreground > 2 && foreground < want.len(), "{foreground}");
        }
    }

    /// The scores are the mean of the three stages' softmaxes: with stage 1
    /// and stage 2 sure of class 2 (a bias of 20) and stage 3 undecided (its
    /// `cls_score` weights 0), every detection of class 2 (1 from 0) scores
    /// (1 + 1 + 1/4) / 3 and the others 1/12.
    #[test]
    fn detections_score_the_three_stages_mean() {
        let cpu = CpuBackend::new();
        let spec = CascadeRcnnSpec::small(4);
        let mut model = FasterRcnnDetector::cascade(&cpu, spec, RcnnConfig::faster_rcnn(4), 7);
        for name in ["cls_score_b", "cls_score_2_b"] {
            model
                .net
                .set_param(name, &[0.0, 0.0, 20.0, 0.0])
                .expect("a bias of 4");
        }
        model
            .net
            .set_param("cls_score_3_w", &[0.0; 32 * 4])
            .expect("32 x 4 weights");
        let image = Tensor::from_host(&cpu, &[1, 3, 96, 128], &random_vec(5, 3 * 96 * 128));
        let found = model.detect(&image, &[[128, 96]], &[[96.0, 128.0, 1.0]]);
        assert!(found[0].iter().any(|d| d.class == 1));
        for d in &found[0] {
            let want = if d.class == 1 { 2.25 / 3.0 } else { 0.25 / 3.0 };
            assert!((d.score - want).abs() < 1e-4, "{d:?}");
        }
    }
}
