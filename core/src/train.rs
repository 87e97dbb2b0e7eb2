//! One training step, as PaddleDetection's YOLOv3 trainer runs it: forward
//! with batch norm in training mode, Paddle's `yolov3_loss` over the three
//! levels (mean over the batch), backward, then momentum SGD with L2 decay
//! (a parameter's own regulariser wins) at the scheduled learning rate.
//!
//! Every buffer is sized by `plan` (or the first step) for a batch and input
//! size and reused after; `plan` reports the bytes held.

use crate::backend::{Backend, SgdStep};
use crate::models::{Yolov3, Yolov3Spec};
use crate::optim::{Optimizer, Schedule};
use crate::tensor::Tensor;
use crate::yolo::{yolov3_loss, GroundTruth, Head, LossTerms, YoloConfig};

#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// The update rule and its settings (momentum SGD at 0.9 for YOLOv3).
    pub optimizer: Optimizer,
    /// The optimizer's L2 decay (5e-4), for parameters without their own.
    pub weight_decay: f32,
    pub schedule: Schedule,
    /// Freeze the first this many conv units of the model (the backbone's
    /// come first); `Yolov3Spec::backbone_unit_count()` freezes the backbone.
    pub frozen_units: usize,
    /// Paddle's `freeze_norm`: batch norms use running statistics and their
    /// scale and offset are not trained.
    pub freeze_norm: bool,
}

impl TrainConfig {
    /// PaddleDetection's YOLOv3 VOC settings.
    pub fn yolov3() -> Self {
        TrainConfig {
            optimizer: Optimizer::Momentum { momentum: 0.9 },
            weight_decay: 5e-4,
            schedule: Schedule::yolov3(),
            frozen_units: 0,
            freeze_norm: false,
        }
    }
}

/// The loss settings of PaddleDetection's YOLOv3 head for this model's
/// anchors and classes.
pub fn loss_config(spec: &Yolov3Spec) -> YoloConfig {
    YoloConfig {
        anchors: spec.anchors.clone(),
        anchor_masks: spec.anchor_masks.clone(),
        ..YoloConfig::yolov3(spec.num_classes)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// The batch-mean loss the step minimised (before its update).
    pub loss: LossTerms,
    pub learning_rate: f32,
}

/// A model, its optimizer state and the buffers of a training step.
pub struct Trainer<B: Backend> {
    pub model: Yolov3<B>,
    pub loss_config: YoloConfig,
    pub config: TrainConfig,
    /// One velocity per parameter slot of the model (None for running
    /// statistics and frozen parameters).
    velocities: Vec<Option<Tensor<B>>>,
    image: Tensor<B>,
    host_outputs: [Vec<f32>; 3],
    host_grads: [Vec<f32>; 3],
    output_grads: [Tensor<B>; 3],
    /// Updates done so far; the next step's learning rate is the schedule's
    /// at this step.
    pub step: u64,
}

impl<B: Backend> Trainer<B> {
    pub fn new(mut model: Yolov3<B>, config: TrainConfig) -> Self {
        model.freeze_units(config.frozen_units);
        model.freeze_norm(config.freeze_norm);
        model.set_training(true);
        let backend = model.backend().clone();
        let velocities = model
            .slots()
            .iter()
            .map(|slot| {
                model
                    .is_trained(slot)
                    .then(|| Tensor::zeros(&backend, &slot.param.spec.shape))
            })
            .collect();
        let empty = || Tensor::zeros(&backend, &[0]);
        Trainer {
            loss_config: loss_config(&model.spec),
            model,
            config,
            velocities,
            image: empty(),
            host_outputs: Default::default(),
            host_grads: Default::default(),
            output_grads: [empty(), empty(), empty()],
            step: 0,
        }
    }

    /// The velocity of parameter slot `index` (model order), for `.pdopt`
    /// snapshots; None for parameters that are not trained.
    pub fn velocity(&self, index: usize) -> Option<Vec<f32>> {
        let backend = self.model.backend();
        self.velocities[index].as_ref().map(|v| v.to_host(backend))
    }

    /// Restores the velocity of parameter slot `index` from a `.pdopt`
    /// snapshot; false when that parameter is not trained or `values` has the
    /// wrong length.
    pub fn set_velocity(&mut self, index: usize, values: &[f32]) -> bool {
        let backend = self.model.backend().clone();
        match self.velocities.get_mut(index) {
            Some(Some(v)) if v.numel() == values.len() => {
                v.upload(&backend, values);
                true
            }
            _ => false,
        }
    }

    /// Sizes every buffer for `batch` images of `size` x `size` and returns
    /// the bytes the model, its optimizer state and the step's buffers hold.
    pub fn plan(&mut self, batch: usize, size: usize) -> usize {
        let model_bytes = self.model.plan(batch, size);
        let backend = self.model.backend().clone();
        self.image.reshape_reuse(&backend, &[batch, 3, size, size]);
        for (level, out) in self.model.outputs().iter().enumerate() {
            let shape = out.shape().to_vec();
            self.output_grads[level].reshape_reuse(&backend, &shape);
            self.host_outputs[level].resize(out.numel(), 0.0);
            self.host_grads[level].resize(out.numel(), 0.0);
        }
        let host: usize = self
            .host_outputs
            .iter()
            .chain(&self.host_grads)
            .map(|v| v.capacity() * 4)
            .sum();
        let tensors = self
            .velocities
            .iter()
            .flatten()
            .chain([&self.image])
            .chain(&self.output_grads)
            .map(|t| t.capacity_bytes(&backend))
            .sum::<usize>();
        model_bytes + host + tensors
    }

    /// One step on `images` (`[N, 3, size, size]`, normalised as the reader
    /// gives them) and their ground truth. Returns the loss before the update.
    pub fn step(
        &mut self,
        images: &[f32],
        batch: usize,
        size: usize,
        gt: &GroundTruth,
    ) -> StepReport {
        let backend = self.model.backend().clone();
        assert_eq!(
            images.len(),
            batch * 3 * size * size,
            "images are [N, 3, size, size]"
        );
        self.image.reshape_reuse(&backend, &[batch, 3, size, size]);
        self.image.upload(&backend, images);

        let outputs = self.model.forward(&self.image);
        let mut shapes: [[usize; 4]; 3] = [[0; 4]; 3];
        for (level, out) in outputs.iter().enumerate() {
            let (n, c, h, w) = out.nchw();
            shapes[level] = [n, c, h, w];
            self.host_outputs[level].resize(out.numel(), 0.0);
            self.host_grads[level].resize(out.numel(), 0.0);
            backend.download(out.buf(), &mut self.host_outputs[level]);
        }
        let heads: Vec<Head> = (0..3)
            .map(|l| Head {
                data: &self.host_outputs[l],
                batch,
                height: shapes[l][2],
                width: shapes[l][3],
            })
            .collect();
        let [g0, g1, g2] = &mut self.host_grads;
        let loss = yolov3_loss(&self.loss_config, &heads, gt, &mut [g0, g1, g2]);
        for ((grad, shape), host) in self
            .output_grads
            .iter_mut()
            .zip(&shapes)
            .zip(&self.host_grads)
        {
            grad.reshape_reuse(&backend, shape);
            grad.upload(&backend, host);
        }
        self.model.backward(&self.image, &self.output_grads);

        let learning_rate = self.config.schedule.lr_at(self.step);
        self.update(learning_rate);
        self.step += 1;
        StepReport {
            loss: loss.mean,
            learning_rate,
        }
    }

    /// Momentum SGD on every trained parameter, with its own L2 decay when it
    /// declares one (BN, `yolo_output` biases, MobileNet convs: 0).
    fn update(&mut self, lr: f32) {
        let backend = self.model.backend().clone();
        let slots = self.model.slots().to_vec();
        for (slot, velocity) in slots.iter().zip(&mut self.velocities) {
            let Some(velocity) = velocity else { continue };
            let step = SgdStep {
                lr,
                momentum: match self.config.optimizer {
                    Optimizer::Momentum { momentum } => momentum,
                    Optimizer::RmsProp { .. } => unimplemented!("RMSProp training"),
                },
                weight_decay: slot.param.weight_decay.unwrap_or(self.config.weight_decay),
            };
            let unit = &mut self.model.units[slot.unit];
            let (param, grad) = unit
                .param_and_grad_mut(slot.param.role)
                .expect("trained parameters have gradients");
            backend.sgd_momentum(
                &step,
                param.numel(),
                param.buf_mut(),
                grad.buf(),
                velocity.buf_mut(),
            );
        }
    }
}

/// A deterministic batch for benchmarks and tests: images in [-1, 1) and six
/// boxes per image spread over the frame (the formula
/// `benches/train_step_torch.py` and `train_step_paddle.py` use), padded to 50
/// as PaddleDetection's reader pads them.
pub struct SyntheticBatch {
    pub images: Vec<f32>,
    pub boxes: Vec<f32>,
    pub labels: Vec<i32>,
    pub max_boxes: usize,
}

impl SyntheticBatch {
    pub const BOXES_PER_IMAGE: usize = 6;
    pub const MAX_BOXES: usize = 50;

    pub fn new(batch: usize, size: usize, num_classes: usize, seed: u64) -> Self {
        let images = crate::gradcheck::random_vec(seed, batch * 3 * size * size);
        let mut boxes = vec![0.0; batch * Self::MAX_BOXES * 4];
        let mut labels = vec![0; batch * Self::MAX_BOXES];
        for b in 0..batch {
            for k in 0..Self::BOXES_PER_IMAGE {
                let i = b * Self::BOXES_PER_IMAGE + k;
                let t = (i as f64 * 0.618_033_988_7) % 1.0;
                let s = (i as f64 * 0.754_877_666_2) % 1.0;
                let slot = b * Self::MAX_BOXES + k;
                let cxcywh = [0.2 + 0.6 * t, 0.2 + 0.6 * s, 0.05 + 0.4 * s, 0.05 + 0.4 * t];
                for (j, v) in cxcywh.iter().enumerate() {
                    boxes[slot * 4 + j] = *v as f32;
                }
                labels[slot] = (i % num_classes.max(1)) as i32;
            }
        }
        SyntheticBatch {
            images,
            boxes,
            labels,
            max_boxes: Self::MAX_BOXES,
        }
    }

    pub fn ground_truth(&self) -> GroundTruth<'_> {
        GroundTruth {
            boxes: &self.boxes,
            labels: &self.labels,
            scores: None,
            max_boxes: self.max_boxes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::conv_unit::ParamRole;
    use crate::CpuBackend;

    fn constant_lr(lr: f32) -> Schedule {
        Schedule::piecewise(lr, 0.1, &[], 0, 1.0)
    }

    #[test]
    fn loss_decreases_over_a_few_steps_on_one_batch() {
        let cpu = CpuBackend::new();
        let spec = Yolov3Spec::tiny(3);
        let model = Yolov3::new(&cpu, spec, 3);
        let config = TrainConfig {
            schedule: constant_lr(1e-2),
            ..TrainConfig::yolov3()
        };
        let mut trainer = Trainer::new(model, config);
        let (batch, size) = (2, 64);
        let data = SyntheticBatch::new(batch, size, 3, 9);
        let planned = trainer.plan(batch, size);
        assert!(planned > 0);
        let losses: Vec<f32> = (0..8)
            .map(|_| {
                trainer
                    .step(&data.images, batch, size, &data.ground_truth())
                    .loss
                    .total()
            })
            .collect();
        assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
        assert!(losses[7] < 0.8 * losses[0], "{losses:?}");
        assert_eq!(trainer.step, 8);
        // Planning sized everything: the steps allocated nothing more.
        assert_eq!(trainer.plan(batch, size), planned);
    }

    #[test]
    fn frozen_parameters_do_not_move_and_running_stats_do() {
        let cpu = CpuBackend::new();
        let spec = Yolov3Spec::tiny(2);
        let backbone_units = spec.backbone_unit_count();
        let model = Yolov3::new(&cpu, spec, 4);
        let config = TrainConfig {
            schedule: constant_lr(1e-2),
            frozen_units: backbone_units,
            ..TrainConfig::yolov3()
        };
        let mut trainer = Trainer::new(model, config);
        let before_backbone = trainer.model.param_values("conv6_sep_weights").unwrap();
        let before_head = trainer
            .model
            .param_values("yolo_block.0.0.0.conv.weights")
            .unwrap();
        let data = SyntheticBatch::new(2, 64, 2, 1);
        trainer.step(&data.images, 2, 64, &data.ground_truth());
        assert_eq!(
            trainer.model.param_values("conv6_sep_weights").unwrap(),
            before_backbone
        );
        assert_ne!(
            trainer
                .model
                .param_values("yolo_block.0.0.0.conv.weights")
                .unwrap(),
            before_head
        );
        // Frozen units still run forward in training mode: running stats move.
        let mean = trainer.model.param_values("conv6_sep_bn_mean").unwrap();
        assert!(mean.iter().any(|&m| m != 0.0));
        let trained = trainer
            .model
            .slots()
            .iter()
            .filter(|s| trainer.model.is_trained(s))
            .count();
        let velocities = (0..trainer.model.slots().len())
            .filter(|&i| trainer.velocity(i).is_some())
            .count();
        assert_eq!(trained, velocities);
        assert!(trainer
            .model
            .slots()
            .iter()
            .all(|s| s.param.role != ParamRole::BnMean || !trainer.model.is_trained(s)));
    }

    #[test]
    fn first_update_is_paddles_momentum_step() {
        // With zero velocity the first update is p -= lr * (g + decay * p).
        let cpu = CpuBackend::new();
        let spec = Yolov3Spec::tiny(2);
        let model = Yolov3::new(&cpu, spec, 5);
        let config = TrainConfig {
            schedule: constant_lr(0.5),
            ..TrainConfig::yolov3()
        };
        let mut trainer = Trainer::new(model, config);
        let name = "yolo_block.1.1.0.conv.weights";
        let before = trainer.model.param_values(name).unwrap();
        let data = SyntheticBatch::new(2, 64, 2, 2);
        trainer.step(&data.images, 2, 64, &data.ground_truth());
        let grad = trainer.model.param_grad(name).unwrap();
        let after = trainer.model.param_values(name).unwrap();
        for i in 0..before.len() {
            let expected = before[i] - 0.5 * (grad[i] + 5e-4 * before[i]);
            assert!(
                (after[i] - expected).abs() <= 1e-6 * (1.0 + expected.abs()),
                "{i}"
            );
        }
    }
}
