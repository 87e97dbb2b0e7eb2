//! SSD at run time, as PaddleDetection's `SSD` architecture trains and
//! predicts: the backbone chain (MobileNetV1 and its extra blocks, or VGG
//! with its max pools and extra blocks) run in order, L2 norms on the
//! features that have one (VGG16's `conv4_3`), two head convs per feature
//! level (box offsets, class scores), each
//! head output gathered into the rows of all priors (`multi_box_head`'s
//! transpose, reshape and concat: `Backend::head_rows_*`), then `ssd_loss`
//! where the rows are (`Backend::ssd_loss`: the ground truth goes up, the
//! rows' gradients are written beside them and only the loss terms come
//! back), or decode and NMS there (`Backend::ssd_detect`).
//!
//! The priors depend only on the input and feature-map sizes: they are
//! computed on the host once per input size and kept on the device.

use super::chain;
use super::conv_unit::{accumulate, copy_into, Scratch};
use super::network::ConvNet;
use super::ssd::SsdSpec;
use crate::backend::{Backend, HeadRows};
use crate::box_coder::BoxXyxy;
use crate::detector::{Detector, Losses};
use crate::layers::MaxPool2d;
use crate::ssd::{ssd_nms, ImageTruth, SsdLossConfig};
use crate::tensor::Tensor;
use crate::yolo::{Detection, GroundTruth, NmsConfig};

/// The loss terms, as the progress line shows them.
pub const LOSS_NAMES: &[&str] = &["loc", "conf"];

/// `multi_box_head`'s prior variances (Paddle's default, which
/// PaddleDetection's SSD keeps).
pub const PRIOR_VARIANCE: [f32; 4] = [0.1, 0.1, 0.2, 0.2];

/// Below this width or height a ground-truth slot is padding.
const PADDING: f32 = 1e-6;

/// Offsets (4 values per prior) and scores (one per class): the two convs of
/// each level, in this order.
const LOC: usize = 0;
const CONF: usize = 1;

/// The priors of one input size on the device, `[count, 4]` boxes and
/// variances.
struct PriorCache<B: Backend> {
    size: [usize; 2],
    count: usize,
    boxes: Tensor<B>,
    variances: Tensor<B>,
}

/// An SSD network with its loss and output settings and the buffers of a
/// step. Memory is sized by the first pass at a given batch and input size
/// and reused after (`plan` does that pass up front).
pub struct SsdDetector<B: Backend> {
    pub spec: SsdSpec,
    pub net: ConvNet<B>,
    pub loss: SsdLossConfig,
    pub nms: NmsConfig,
    backbone_units: usize,
    /// Backbone unit index of each feature level.
    features: Vec<usize>,
    /// VGG's max pools, each with the unit whose output it takes.
    pools: Vec<(usize, MaxPool2d<B>)>,
    /// `[N, priors, 4]` box offsets and `[N, priors, classes]` scores of all
    /// levels (`LOC`, `CONF`), and their gradients.
    rows: [Tensor<B>; 2],
    row_grads: [Tensor<B>; 2],
    /// Gradient of the output of the head conv being run backward, and of
    /// its input.
    head_grad: Tensor<B>,
    head_dx: Tensor<B>,
    /// Gradient of each feature from the head.
    feature_grads: Vec<Tensor<B>>,
    scratch: Scratch<B>,
    priors: Option<PriorCache<B>>,
}

impl<B: Backend> SsdDetector<B> {
    /// Builds the model with PaddleDetection's initial values drawn from
    /// `seed`, and `ssd_loss`'s and `SSDOutputDecoder`'s default settings.
    pub fn new(backend: &B, spec: SsdSpec, seed: u64) -> Self {
        let mut units = spec.backbone_units();
        let backbone_units = units.len();
        units.extend(spec.head_units());
        let features = spec.feature_units();
        // PaddleDetection's VGG pools in ceil mode.
        let pools = spec
            .pools()
            .into_iter()
            .map(|(after, p)| {
                (
                    after,
                    MaxPool2d::new(backend, p.kernel, p.stride, p.pad).ceil(),
                )
            })
            .collect();
        let empty = || Tensor::zeros(backend, &[0]);
        SsdDetector {
            net: ConvNet::with_norms(backend, units, &spec.l2_norms(), seed),
            pools,
            loss: SsdLossConfig::default(),
            nms: ssd_nms(),
            backbone_units,
            feature_grads: features.iter().map(|_| empty()).collect(),
            features,
            rows: [empty(), empty()],
            row_grads: [empty(), empty()],
            head_grad: empty(),
            head_dx: empty(),
            scratch: Scratch::new(backend),
            priors: None,
            spec,
        }
    }

    /// The head unit (index into the net's units) of `level`'s offsets
    /// (`LOC`) or scores (`CONF`).
    fn head_unit(&self, level: usize, which: usize) -> usize {
        self.backbone_units + 2 * level + which
    }

    /// Values per prior of the offsets (4) or the scores (classes).
    fn values(&self, which: usize) -> usize {
        if which == LOC {
            4
        } else {
            self.spec.num_classes
        }
    }

    /// Where `level`'s head output `which` goes in the rows, after a forward
    /// pass, and the rows in all.
    fn row_geometry(&self, level: usize, which: usize) -> HeadRows {
        let priors_per_cell = |l: usize| self.spec.priors[l].priors_per_cell();
        let cells = |l: usize| {
            let (_, _, h, w) = self.net.units[self.head_unit(l, which)].output().nchw();
            h * w
        };
        let levels = self.features.len();
        let (batch, _, height, width) =
            self.net.units[self.head_unit(level, which)].output().nchw();
        HeadRows {
            batch,
            anchors: priors_per_cell(level),
            values: self.values(which),
            height,
            width,
            total_rows: (0..levels).map(|l| cells(l) * priors_per_cell(l)).sum(),
            first_row: (0..level).map(|l| cells(l) * priors_per_cell(l)).sum(),
        }
    }

    /// Runs the network on `image` and gathers the head outputs into `rows`.
    fn forward(&mut self, image: &Tensor<B>) {
        let backend = self.net.backend().clone();
        let workspace = &mut self.scratch.workspace;
        let (backbone, head) = self.net.units.split_at_mut(self.backbone_units);
        chain::forward(&backend, backbone, &mut self.pools, image, workspace);
        for &feature in &self.features {
            backbone[feature].forward_l2_norm(&backend);
        }
        for (k, unit) in head.iter_mut().enumerate() {
            let feature = backbone[self.features[k / 2]].head_input();
            unit.forward(&backend, feature, workspace);
        }
        for which in [LOC, CONF] {
            for level in 0..self.features.len() {
                let g = self.row_geometry(level, which);
                let shape = [g.batch, g.total_rows, g.values];
                if level == 0 {
                    self.rows[which].reshape_reuse(&backend, &shape);
                }
                let x = self.net.units[self.head_unit(level, which)].output();
                backend.head_rows_forward(&g, x.buf(), self.rows[which].buf_mut());
            }
        }
        self.update_priors([image.shape()[2], image.shape()[3]]);
    }

    /// Makes the prior cache that of input size `[height, width]` (the
    /// feature maps of the last forward pass give the grid of each level).
    fn update_priors(&mut self, size: [usize; 2]) {
        if self.priors.as_ref().is_some_and(|p| p.size == size) {
            return;
        }
        let mut boxes = Vec::new();
        for (level, priors) in self.spec.priors.iter().enumerate() {
            let (_, _, h, w) = self.net.units[self.features[level]].output().nchw();
            boxes.extend(priors.priors([h, w], size));
        }
        let variances = vec![PRIOR_VARIANCE; boxes.len()];
        let backend = self.net.backend();
        let flat = |v: &[[f32; 4]]| v.iter().flatten().copied().collect::<Vec<f32>>();
        let count = boxes.len();
        self.priors = Some(PriorCache {
            size,
            count,
            boxes: Tensor::from_host(backend, &[count, 4], &flat(&boxes)),
            variances: Tensor::from_host(backend, &[count, 4], &flat(&variances)),
        });
    }

    /// Backward from `row_grads` after a `forward` on `image`: every
    /// trained parameter's gradient is overwritten.
    fn backward(&mut self, image: &Tensor<B>) {
        let backend = self.net.backend().clone();
        let stop = self.net.frozen_units();
        let backbone_trained = stop < self.backbone_units;
        for level in 0..self.features.len() {
            for which in [LOC, CONF] {
                let g = self.row_geometry(level, which);
                let unit = self.head_unit(level, which);
                let (backbone, head) = self.net.units.split_at_mut(self.backbone_units);
                let conv = &mut head[unit - self.backbone_units];
                self.head_grad
                    .reshape_reuse(&backend, conv.output().shape());
                backend.head_rows_backward(
                    &g,
                    self.row_grads[which].buf(),
                    self.head_grad.buf_mut(),
                );
                let feature = backbone[self.features[level]].head_input();
                let dx = backbone_trained.then_some(&mut self.head_dx);
                conv.backward(
                    &backend,
                    feature,
                    &self.head_grad,
                    &mut self.scratch.dz,
                    dx,
                    &mut self.scratch.workspace,
                );
                if !backbone_trained {
                    continue;
                }
                if which == LOC {
                    copy_into(&backend, &self.head_dx, &mut self.feature_grads[level]);
                } else {
                    accumulate(&backend, &self.head_dx, &mut self.feature_grads[level]);
                }
            }
            // Through the feature's L2 norm: its scale's gradient, and the
            // gradient of the unit's own output.
            let unit = &mut self.net.units[self.features[level]];
            if backbone_trained && unit.l2_norm.is_some() {
                unit.backward_l2_norm(&backend, &self.feature_grads[level], &mut self.head_dx);
                // A copy, not a swap: each buffer keeps the size planned
                // for it.
                copy_into(&backend, &self.head_dx, &mut self.feature_grads[level]);
            }
        }
        if !backbone_trained {
            return;
        }
        let (backbone, _) = self.net.units.split_at_mut(self.backbone_units);
        chain::backward(
            &backend,
            backbone,
            &mut self.pools,
            image,
            &self.features,
            &self.feature_grads,
            stop,
            &mut self.scratch,
        );
    }

    /// Bytes held now: parameters, gradients, activations, rows, priors and
    /// gradient buffers.
    fn planned_bytes(&self) -> usize {
        let b = self.net.backend();
        let tensors = self
            .rows
            .iter()
            .chain(&self.row_grads)
            .chain([&self.head_grad, &self.head_dx])
            .chain(&self.feature_grads)
            .chain(self.priors.iter().flat_map(|p| [&p.boxes, &p.variances]))
            .map(|t| t.capacity_bytes(b))
            .sum::<usize>();
        let pools = self
            .pools
            .iter()
            .map(|(_, p)| p.planned_bytes(b))
            .sum::<usize>();
        self.net.planned_bytes() + tensors + pools + self.scratch.planned_bytes(b)
    }
}

/// Each image's ground truth from the loader's slots: corner boxes and
/// class indices (the dataset's, with the background as 0), padding left
/// out.
fn image_truths(truth: &GroundTruth, images: usize) -> Vec<(Vec<BoxXyxy>, Vec<usize>)> {
    let m = truth.max_boxes;
    (0..images)
        .map(|n| {
            let mut boxes = Vec::new();
            let mut labels = Vec::new();
            for k in 0..m {
                let b = &truth.boxes[(n * m + k) * 4..][..4];
                if b[2] < PADDING || b[3] < PADDING {
                    continue;
                }
                let (half_w, half_h) = (b[2] / 2.0, b[3] / 2.0);
                boxes.push([b[0] - half_w, b[1] - half_h, b[0] + half_w, b[1] + half_h]);
                labels.push(truth.labels[n * m + k] as usize);
            }
            (boxes, labels)
        })
        .collect()
}

impl<B: Backend> Detector<B> for SsdDetector<B> {
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
        let running = self.net.save_running_stats();
        let backend = self.net.backend().clone();
        let image = Tensor::zeros(&backend, &[batch, 3, size, size]);
        self.forward(&image);
        for which in [LOC, CONF] {
            let shape = self.rows[which].shape().to_vec();
            self.row_grads[which].reshape_reuse(&backend, &shape);
            backend.fill(
                self.row_grads[which].buf_mut(),
                self.rows[which].numel(),
                0.0,
            );
        }
        self.backward(&image);
        self.scratch.equalize(&backend);
        self.net.restore_running_stats(running);
        self.planned_bytes()
    }

    fn train_pass(&mut self, image: &Tensor<B>, truth: &GroundTruth, _: &[[f32; 3]]) -> Losses {
        let backend = self.net.backend().clone();
        self.forward(image);
        let owned = image_truths(truth, image.shape()[0]);
        let truths: Vec<ImageTruth> = owned
            .iter()
            .map(|(boxes, labels)| ImageTruth { boxes, labels })
            .collect();
        for which in [LOC, CONF] {
            let shape = self.rows[which].shape().to_vec();
            self.row_grads[which].reshape_reuse(&backend, &shape);
        }
        let priors = self.priors.as_ref().expect("forward computed the priors");
        let [grad_loc, grad_conf] = &mut self.row_grads;
        let loss = backend.ssd_loss(
            &self.loss,
            priors.boxes.buf(),
            priors.variances.buf(),
            priors.count,
            self.spec.num_classes,
            self.rows[LOC].buf(),
            self.rows[CONF].buf(),
            &truths,
            grad_loc.buf_mut(),
            grad_conf.buf_mut(),
        );
        self.backward(image);
        Losses::new(LOSS_NAMES, &[loss.location, loss.confidence])
    }

    fn detect(
        &mut self,
        image: &Tensor<B>,
        original_sizes: &[[u32; 2]],
        _: &[[f32; 3]],
    ) -> Vec<Vec<Detection>> {
        let backend = self.net.backend().clone();
        self.forward(image);
        let priors = self.priors.as_ref().expect("forward computed the priors");
        // Decode and NMS where the rows are: only the detections come back.
        let per_image = backend.ssd_detect(
            &self.nms,
            priors.boxes.buf(),
            priors.variances.buf(),
            self.spec.num_classes,
            self.rows[LOC].buf(),
            self.rows[CONF].buf(),
            image.shape()[0],
            priors.count,
        );
        // PaddleDetection's `bbox2out` for normalised boxes: clipped to the
        // picture, scaled by its size, no pixel `+1`. Class 0 is the
        // background, never reported: objects are numbered from 0 here.
        per_image
            .into_iter()
            .zip(original_sizes)
            .map(|(detections, &[w, h])| {
                let (w, h) = (w as f32, h as f32);
                detections
                    .into_iter()
                    .map(|d| {
                        let [x1, y1, x2, y2] = d.bbox.map(|v| v.clamp(0.0, 1.0));
                        Detection {
                            class: d.class - 1,
                            score: d.score,
                            bbox: [x1 * w, y1 * h, x2 * w, y2 * h],
                        }
                    })
                    .collect()
            })
            .collect()
    }

    fn boxes_normalized(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Activation;
    use crate::gradcheck::{check_params, probe_loss, random_vec, Probe, SEEDS};
    use crate::models::mobilenet_v1::MobileNetV1Spec;
    use crate::models::ssd::SsdBackbone;
    use crate::models::vgg::{VggExtraBlock, VggSpec};
    use crate::train::SyntheticBatch;
    use crate::CpuBackend;

    /// MobileNet-SSD at an eighth of the width, extra blocks an eighth as
    /// wide: every path of the full model in a few thousand parameters.
    fn tiny_spec(classes: usize) -> SsdSpec {
        let full = SsdSpec::mobilenet_v1(classes);
        SsdSpec {
            backbone: SsdBackbone::MobileNetV1(MobileNetV1Spec { scale: 0.125 }),
            extra_blocks: full
                .extra_blocks
                .iter()
                .map(|&(a, b)| (a / 8, b / 8))
                .collect(),
            ..full
        }
    }

    fn image(cpu: &CpuBackend, batch: usize, size: usize, seed: u64) -> Tensor<CpuBackend> {
        Tensor::from_host(
            cpu,
            &[batch, 3, size, size],
            &random_vec(seed, batch * 3 * size * size),
        )
    }

    /// The rows hold each level's outputs where `multi_box_head` puts them:
    /// level by level, cell by cell, prior by prior; and the prior count
    /// matches the priors.
    #[test]
    fn rows_follow_multi_box_heads_layout() {
        let cpu = CpuBackend::new();
        let mut model = SsdDetector::new(&cpu, tiny_spec(3), 1);
        let (batch, size) = (2, 96);
        model.forward(&image(&cpu, batch, size, 2));
        let count = model.priors.as_ref().unwrap().count;
        assert_eq!(model.rows[LOC].shape(), [batch, count, 4]);
        assert_eq!(model.rows[CONF].shape(), [batch, count, 3]);
        let rows = model.rows[CONF].to_host(&cpu);
        // Level 1 (conv6, 3x3 at 96 pixels, 6 priors per cell): image 1,
        // cell (1, 2), prior 4, class 2 is channel 4 * 3 + 2 at (1, 2).
        let level = 1;
        let out = model.net.units[model.head_unit(level, CONF)]
            .output()
            .to_host(&cpu);
        let (_, channels, h, w) = model.net.units[model.head_unit(level, CONF)]
            .output()
            .nchw();
        assert_eq!((h, w), (3, 3));
        let first_row = model.row_geometry(level, CONF).first_row;
        let (n, y, x, prior, class) = (1, 1, 2, 4, 2);
        let c = prior * 3 + class;
        let expected = out[((n * channels + c) * h + y) * w + x];
        let row = first_row + (y * w + x) * 6 + prior;
        assert_eq!(rows[(n * count + row) * 3 + class], expected);
    }

    /// VGG16-SSD at a sixteenth of the width with two extra blocks (the
    /// second unpadded, as VGG16's last two), and L2 norms on `conv4_3`
    /// (VGG16's) and on the first extra block (a second `Scale_1.w_0`), so
    /// that a 100-pixel input reaches every path: the ceil-mode pools
    /// (25 -> 13 -> 7), the dilated `fc6`, the norms.
    fn tiny_vgg_spec(classes: usize) -> SsdSpec {
        let full = SsdSpec::vgg16(classes);
        SsdSpec {
            backbone: SsdBackbone::Vgg(VggSpec {
                depth: 16,
                scale: 1.0 / 16.0,
                extra_blocks: vec![
                    VggExtraBlock::new(8, 16, 1, 2, 3),
                    VggExtraBlock::new(8, 16, 0, 1, 3),
                ],
                normalizations: vec![Some(20.0), None, Some(5.0), None],
            }),
            priors: full.priors[..4].to_vec(),
            ..full
        }
    }

    /// The VGG path's feature maps at 100 pixels: the pools in ceil mode
    /// (100 -> 50 -> 25 -> 13 for `conv4_3`, 7 after pool4 and the
    /// same-size pool5 and `fc6`), then 4 and 2 for the extra blocks; the
    /// head reads the norms' outputs.
    #[test]
    fn vgg_features_follow_paddles_pools() {
        let cpu = CpuBackend::new();
        let mut model = SsdDetector::new(&cpu, tiny_vgg_spec(3), 1);
        model.forward(&image(&cpu, 2, 100, 2));
        let sizes: Vec<(usize, usize)> = model
            .features
            .iter()
            .map(|&f| {
                let (_, _, h, w) = model.net.units[f].output().nchw();
                (h, w)
            })
            .collect();
        assert_eq!(sizes, [(13, 13), (7, 7), (4, 4), (2, 2)]);
        let conv4_3 = &model.net.units[model.features[0]];
        let norm = conv4_3.l2_norm.as_ref().expect("conv4_3 has its norm");
        assert!(std::ptr::eq(conv4_3.head_input(), norm.output()));
        // Each position of the norm's output has length 20 (its scale).
        let (_, channels, h, w) = norm.output().nchw();
        let out = norm.output().to_host(&cpu);
        let length: f32 = (0..channels)
            .map(|c| out[c * h * w].powi(2))
            .sum::<f32>()
            .sqrt();
        assert!((length - 20.0).abs() < 1e-3, "{length}");
    }

    /// Finite differences of a probe loss on both row tensors against the
    /// backward pass, for the named parameters of `spec`'s model at `size`
    /// pixels, with steps of `step`. What is checked is the wiring (the
    /// gather, the two convs per feature adding up, the L2 norms, the chain
    /// below with its pools), so
    /// activations are the identity and batch norms are frozen to their
    /// running statistics (the extra blocks' maps are 1x1: a batch norm
    /// over two values is all curvature); the layers and `ssd_loss` have
    /// their own checks.
    fn check_model_gradients(spec: SsdSpec, size: usize, step: f32, names: &[&str]) {
        let cpu = CpuBackend::new();
        for seed in SEEDS {
            let mut model = SsdDetector::new(&cpu, spec.clone(), seed);
            for unit in &mut model.net.units {
                if let Some(bn) = &mut unit.bn {
                    bn.act = Activation::Identity;
                }
                if let Some(act) = &mut unit.act {
                    act.act = Activation::Identity;
                }
            }
            model.net.freeze_norm(true);
            let image = image(&cpu, 2, size, seed + 100);
            model.forward(&image);
            let probes: Vec<Vec<f32>> = [LOC, CONF]
                .map(|w| random_vec(seed + 200 + w as u64, model.rows[w].numel()))
                .to_vec();
            for which in [LOC, CONF] {
                let shape = model.rows[which].shape().to_vec();
                model.row_grads[which] = Tensor::from_host(&cpu, &shape, &probes[which]);
            }
            model.backward(&image);
            check_params(
                &mut model,
                |m| &mut m.net,
                names,
                &format!("seed {seed}"),
                (step, 0.1),
                |model| {
                    model.forward(&image);
                    [LOC, CONF]
                        .map(|w| probe_loss(&model.rows[w].to_host(&cpu), &probes[w]))
                        .into_iter()
                        .sum::<Probe>()
                },
            );
        }
    }

    /// MobileNet-SSD: the backbone, the extra blocks and the head. Without
    /// pools or norms the network is linear in each weight, so the
    /// differences are exact for any step, and a step of 1 keeps the rounding
    /// allowance (about 3 * depth * eps * |loss| / step) under the gradients:
    /// at 3e-3 it exceeded them, and a backward that dropped level 0's score
    /// gradient passed (it fails at 1).
    #[test]
    fn model_gradients_match_finite_differences() {
        check_model_gradients(
            tiny_spec(3),
            64,
            1.0,
            &[
                "conv1_weights",
                "conv4_2_dw_weights",
                "conv5_5_sep_weights",
                "conv6_sep_weights",
                "conv7_1_extra1_weights",
                "conv7_4_extra2_weights",
                "conv2d_22.w_0",
                "conv2d_25.b_0",
                "conv2d_33.w_0",
            ],
        );
    }

    /// VGG16-SSD: below and above each pool, `fc6`, the extra blocks, both
    /// L2 norms' scales and the head. The norms make the head's inputs
    /// vectors of length 20 whatever the weights, so the probe loss adds up
    /// large terms and its rounding allowance (`3 * noise / h`) is large: a
    /// step of 3e-2 brings it under the gradients (at 3e-3 a model whose
    /// backward skipped `conv4_3`'s norm passed; at 3e-2 it fails). With
    /// identity activations the loss is linear in each conv weight between
    /// max-pool switches, so the longer step adds little truncation.
    #[test]
    fn vgg_model_gradients_match_finite_differences() {
        check_model_gradients(
            tiny_vgg_spec(3),
            100,
            3e-2,
            &[
                "conv1_1_weights",
                "conv3_3_biases",
                "conv4_3_weights",
                "conv5_1_weights",
                "fc6_weights",
                "fc7_biases",
                "conv6_2_weights",
                "conv7_2_weights",
                "Scale_0.w_0",
                "Scale_1.w_0",
                "conv2d_0.w_0",
                "conv2d_5.b_0",
                "conv2d_7.w_0",
            ],
        );
    }

    /// A few steps of the real thing on one batch of `size`-pixel images
    /// with `spec(classes)`'s model: the loss falls, planning sized every
    /// buffer, and detections come out in the picture's pixels with object
    /// classes numbered from 0.
    fn check_training(spec: fn(usize) -> SsdSpec, size: usize) {
        use crate::optim::{Optimizer, Schedule};
        use crate::train::{TrainConfig, Trainer};
        let cpu = CpuBackend::new();
        let classes = 4;
        let model = SsdDetector::new(&cpu, spec(classes), 3);
        let config = TrainConfig {
            optimizer: Optimizer::rmsprop(0.0),
            weight_decay: 5e-5,
            schedule: Schedule::piecewise(1e-3, 0.1, &[], 0, 1.0),
            ..TrainConfig::yolov3()
        };
        let mut trainer = Trainer::new(Box::new(model), config);
        let batch = 2;
        let mut data = SyntheticBatch::new(batch, size, classes - 1, 9);
        data.number_from_one();
        let planned = trainer.plan(batch, size);
        let losses: Vec<f32> = (0..20)
            .map(|_| {
                let report =
                    trainer.step(&data.images, batch, [size, size], &data.ground_truth(), &[]);
                assert_eq!(report.loss.names(), LOSS_NAMES);
                report.loss.total()
            })
            .collect();
        assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
        assert!(losses[19] < 0.6 * losses[0], "{losses:?}");
        assert_eq!(trainer.plan(batch, size), planned);

        let image = Tensor::from_host(&cpu, &[batch, 3, size, size], &data.images);
        trainer.model.net_mut().set_training(false);
        let per_image = trainer.model.detect(&image, &[[640, 480], [320, 240]], &[]);
        assert_eq!(per_image.len(), batch);
        for (dets, [w, h]) in per_image.iter().zip([[640.0, 480.0], [320.0, 240.0]]) {
            assert!(!dets.is_empty());
            for d in dets {
                assert!(d.class < classes - 1, "{d:?}");
                assert!(
                    d.bbox[0] >= 0.0 && d.bbox[2] <= w && d.bbox[3] <= h,
                    "{d:?}"
                );
            }
        }
    }

    #[test]
    fn training_lowers_the_loss_and_detection_reports_pixels() {
        check_training(tiny_spec, 96);
    }

    /// The same for VGG16-SSD: its pools and norms are planned too (the
    /// second plan allocates nothing new).
    #[test]
    fn vgg_training_lowers_the_loss_and_detection_reports_pixels() {
        check_training(tiny_vgg_spec, 100);
    }
}

/// Whole-model parity with PaddleDetection's own SSD
/// (`core/tests/fixtures/ssd/model_parity.py`): MobileNet-SSD at an eighth
/// of the width and VGG16-SSD at a thirty-second (`--vgg`), 4 classes, a
/// batch of four 300x300 images, on weights Paddle initialised and saved
/// (batch norms and score biases perturbed there).
#[cfg(test)]
mod paddle_parity {
    use super::*;
    use crate::fixtures::{floats, quads, read};
    use crate::models::mobilenet_v1::MobileNetV1Spec;
    use crate::models::ssd::SsdBackbone;
    use crate::models::vgg::{VggExtraBlock, VggSpec};
    use crate::CpuBackend;
    use serde_json::Value;

    /// Which of the script's models.
    #[derive(Clone, Copy)]
    enum Kind {
        MobileNet,
        Vgg,
    }

    impl Kind {
        /// The fixture's name: `<stem>.json` and the `<stem>/` weights.
        fn stem(self) -> &'static str {
            match self {
                Kind::MobileNet => "model_parity",
                Kind::Vgg => "vgg_model_parity",
            }
        }

        /// The images' hash (modulus, centre, divisor): VGG's takes a
        /// modulus whose pattern repeats on none of its strides' grids, so
        /// no two distant priors tie (see the script).
        fn hash(self) -> (usize, f32, f32) {
            match self {
                Kind::MobileNet => (17, 8.0, 4.0),
                Kind::Vgg => (251, 125.0, 64.0),
            }
        }
    }

    struct Fixture {
        json: Value,
        spec: SsdSpec,
        images: usize,
        size: usize,
    }

    /// The fixture and the `SsdSpec` of the script's model: the config's
    /// head and priors, its backbone scale and extra blocks.
    fn fixture(kind: Kind) -> Fixture {
        let json = read(&format!("ssd/{}.json", kind.stem()));
        let scale = json["scale"].as_f64().expect("scale") as f32;
        let classes = json["classes"].as_u64().expect("classes") as usize;
        let extra_blocks: Vec<Vec<usize>> = json["extra_blocks"]
            .as_array()
            .expect("extra_blocks")
            .iter()
            .map(|b| floats(b).iter().map(|&w| w as usize).collect())
            .collect();
        let spec = match kind {
            Kind::MobileNet => SsdSpec {
                backbone: SsdBackbone::MobileNetV1(MobileNetV1Spec { scale }),
                extra_blocks: extra_blocks.iter().map(|b| (b[0], b[1])).collect(),
                ..SsdSpec::mobilenet_v1(classes)
            },
            // [1x1 width, 3x3 width, padding, stride, kernel], as VGG's
            // `extra_block_filters`.
            Kind::Vgg => SsdSpec {
                backbone: SsdBackbone::Vgg(VggSpec {
                    scale,
                    extra_blocks: extra_blocks
                        .iter()
                        .map(|b| VggExtraBlock::new(b[0], b[1], b[2], b[3], b[4]))
                        .collect(),
                    ..VggSpec::vgg16()
                }),
                ..SsdSpec::vgg16(classes)
            },
        };
        Fixture {
            images: json["gt_boxes"].as_array().expect("gt_boxes").len(),
            size: json["size"].as_u64().expect("size") as usize,
            json,
            spec,
        }
    }

    /// The model with every persistable Paddle saved (per-variable files):
    /// each of ours set, none of Paddle's left over.
    fn model(cpu: &CpuBackend, kind: Kind, spec: &SsdSpec) -> SsdDetector<CpuBackend> {
        let dir = format!(
            "{}/tests/fixtures/ssd/{}",
            env!("CARGO_MANIFEST_DIR"),
            kind.stem()
        );
        let checkpoint = pulsefocus_formats::load_checkpoint(std::path::Path::new(&dir))
            .unwrap_or_else(|e| panic!("{dir}: {e}"));
        let mut model = SsdDetector::new(cpu, spec.clone(), 0);
        for (name, tensor) in checkpoint.iter() {
            model
                .net_mut()
                .set_param(name, &tensor.to_f32_vec())
                .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        }
        assert_eq!(checkpoint.len(), model.net().slots().len());
        model
    }

    /// The images as the script makes them: a hash of the position, exact
    /// in f32.
    fn images(cpu: &CpuBackend, kind: Kind, images: usize, size: usize) -> Tensor<CpuBackend> {
        let (modulus, centre, divisor) = kind.hash();
        let mut values = Vec::with_capacity(images * 3 * size * size);
        for n in 0..images {
            for c in 0..3 {
                for y in 0..size {
                    for x in 0..size {
                        let hash = (x * x * 7 + x * y * 3 + y * 13 + c * 29 + n * 31) % modulus;
                        values.push((hash as f32 - centre) / divisor);
                    }
                }
            }
        }
        Tensor::from_host(cpu, &[images, 3, size, size], &values)
    }

    /// Paddle's train program on batch statistics: reduce_sum of ssd_loss
    /// within 1e-4 relative, and the gradients of parameters in the
    /// backbone, the extra blocks and the head within their float32 spread:
    /// how far Paddle's own gradients move when its weights move by a
    /// relative 1e-6 (the backbone's by several percent, the head's by
    /// about 1e-4 of their largest value; see the script).
    fn check_loss_and_gradients(kind: Kind) {
        let cpu = CpuBackend::new();
        let Fixture {
            json,
            spec,
            images: count,
            size,
        } = fixture(kind);
        let mut model = model(&cpu, kind, &spec);
        model.net_mut().set_training(true);

        // Paddle's corner boxes as the loader's centre-size slots, padding
        // after each image's boxes.
        let max_boxes = 4;
        let mut boxes = vec![0.0; count * max_boxes * 4];
        let mut labels = vec![0; count * max_boxes];
        for n in 0..count {
            let corners = quads(&json["gt_boxes"][n]);
            let classes = floats(&json["gt_labels"][n]);
            assert!(corners.len() <= max_boxes);
            for (k, ([x1, y1, x2, y2], class)) in corners.iter().zip(classes).enumerate() {
                let slot = n * max_boxes + k;
                boxes[slot * 4..][..4].copy_from_slice(&[
                    (x1 + x2) / 2.0,
                    (y1 + y2) / 2.0,
                    x2 - x1,
                    y2 - y1,
                ]);
                labels[slot] = class as i32;
            }
        }
        let truth = GroundTruth {
            boxes: &boxes,
            labels: &labels,
            scores: None,
            max_boxes,
            polygons: &[],
        };
        let loss = model
            .train_pass(&images(&cpu, kind, count, size), &truth, &[])
            .total();
        let expected = json["loss"].as_f64().expect("loss") as f32;
        assert!(
            (loss - expected).abs() <= 1e-4 * expected.abs(),
            "loss {loss}, Paddle's {expected}"
        );

        for (name, paddle) in json["grads"].as_object().expect("grads") {
            let paddle = floats(paddle);
            let ours = model
                .net()
                .param_grad(name)
                .unwrap_or_else(|| panic!("{name}: no gradient"));
            assert_eq!(ours.len(), paddle.len(), "{name}");
            assert!(paddle.iter().any(|&g| g != 0.0), "{name}: all zero");
            // A gradient that barely moves with the weights (a head bias
            // without batch norms below it) still sums thousands of terms in
            // another order than Paddle: float32 allows 1e-5 of its largest.
            let largest = paddle.iter().fold(0.0f32, |m, g| m.max(g.abs()));
            let spread = json["grad_spread"][name].as_f64().expect("spread") as f32;
            let allowed = spread.max(1e-5 * largest);
            let worst = ours
                .iter()
                .zip(&paddle)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(
                worst <= allowed,
                "{name}: off by {worst}, allowed {allowed}"
            );
        }
    }

    #[test]
    fn loss_and_gradients_equal_paddledetections() {
        check_loss_and_gradients(Kind::MobileNet);
    }

    /// VGG16-SSD: `conv1_1` to `conv5_3`, `fc6`/`fc7`, the extra blocks,
    /// `conv4_3`'s L2 norm scale (`Scale_0.w_0`) and the head.
    #[test]
    fn vgg_loss_and_gradients_equal_paddledetections() {
        check_loss_and_gradients(Kind::Vgg);
    }

    /// Paddle's test program on running statistics: the same detections in
    /// the same order (the script keeps one class's scores apart, 1e-4 for
    /// MobileNet and 8e-5 for VGG, and from the threshold), clipped to the
    /// picture and scaled to its size, classes numbered from 0. Scores within
    /// 1e-5 and corners within 5e-5 of the picture: about five times the
    /// largest float32 differences seen (2e-6, 3e-3 pixels).
    fn check_detections(kind: Kind) {
        let cpu = CpuBackend::new();
        let Fixture {
            json,
            spec,
            images: count,
            size,
        } = fixture(kind);
        let mut model = model(&cpu, kind, &spec);
        model.net_mut().set_training(false);
        let picture = [size as u32, size as u32];
        let ours = model.detect(&images(&cpu, kind, count, size), &vec![picture; count], &[]);
        let scale = size as f32;
        for (n, ours) in ours.iter().enumerate() {
            let paddle = json["detections"][n].as_array().expect("detections");
            assert!(!paddle.is_empty());
            assert_eq!(ours.len(), paddle.len(), "image {n}");
            for (d, row) in ours.iter().zip(paddle) {
                let row = floats(row);
                let close = d.class == row[0] as usize - 1
                    && (d.score - row[1]).abs() <= 1e-5
                    && d.bbox.iter().zip(&row[2..]).all(|(ours, theirs)| {
                        (ours - theirs.clamp(0.0, 1.0) * scale).abs() <= 5e-5 * scale
                    });
                assert!(close, "image {n}: {d:?}, Paddle's {row:?}");
            }
        }
    }

    #[test]
    fn detections_equal_paddledetections() {
        check_detections(Kind::MobileNet);
    }

    #[test]
    fn vgg_detections_equal_paddledetections() {
        check_detections(Kind::Vgg);
    }

    /// The seed guide's SSD rule on weights PaddleDetection saved, as a
    /// per-variable directory (`save_persistables`) and as one `.pdparams`
    /// (`fluid.save`): both hold the same values and load whole, and
    /// `^conv2d_` excludes exactly the 24 head tensors; without the caret
    /// the pattern (anchored by `re.match`) excludes the same.
    #[test]
    fn conv2d_excludes_exactly_the_head_of_a_paddle_checkpoint() {
        use crate::loading::{plan_loading, ExcludePatterns, TensorInfo};
        use pulsefocus_formats::load_checkpoint;
        let spec = fixture(Kind::MobileNet).spec;
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ssd");
        let from_dir =
            load_checkpoint(&fixtures.join("model_parity")).expect("the directory loads");
        let from_file =
            load_checkpoint(&fixtures.join("model_parity.pdparams")).expect("the .pdparams loads");
        assert_eq!(from_dir.len(), from_file.len());
        for (name, tensor) in from_dir.iter() {
            let other = from_file.get(name).expect("the same variables");
            assert_eq!(tensor.to_f32_vec(), other.to_f32_vec(), "{name}");
        }
        let head: Vec<String> = spec
            .head_units()
            .iter()
            .flat_map(|u| u.params())
            .map(|p| p.spec.name)
            .collect();
        assert_eq!(head.len(), 24);
        for checkpoint in [&from_dir, &from_file] {
            let nothing = ExcludePatterns::new(&[]).expect("no patterns");
            let all = plan_loading(&spec.param_specs(), &TensorInfo::list(checkpoint), &nothing);
            assert_eq!(all.loaded.len(), spec.param_specs().len());
            assert!(all.missing.is_empty() && all.unused.is_empty());
            for pattern in ["^conv2d_", "conv2d_"] {
                let exclude = ExcludePatterns::new(&[pattern.to_string()]).expect("valid");
                let report =
                    plan_loading(&spec.param_specs(), &TensorInfo::list(checkpoint), &exclude);
                let excluded: Vec<&str> = report.excluded.iter().map(|e| e.name.as_str()).collect();
                assert_eq!(excluded, head, "{pattern}");
                assert!(report.excluded.iter().all(|e| e.pattern == pattern));
                assert_eq!(report.loaded.len(), spec.param_specs().len() - 24);
                assert!(report.missing.is_empty() && report.unused.is_empty());
                assert!(report.shape_mismatch.is_empty());
            }
        }
    }
}
