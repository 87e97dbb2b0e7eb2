//! One training step as PaddleDetection's trainer runs it, for any
//! [`Detector`]: forward with batch norm in training mode, the
//! architecture's loss, backward, then the config's optimizer (momentum SGD
//! for YOLOv3, RMSProp for SSD) with L2 decay (a parameter's own regulariser
//! wins) at the scheduled learning rate times the parameter's own factor.
//!
//! Every buffer is sized by `plan` (or the first step) for a batch and input
//! size and reused after; `plan` reports the bytes held.

use crate::backend::{Backend, RmsPropStep, SgdStep};
use crate::detector::{Detector, Losses};
use crate::optim::{Optimizer, Schedule};
use crate::tensor::Tensor;
use crate::yolo::GroundTruth;

#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// The update rule and its settings (momentum SGD at 0.9 for YOLOv3).
    pub optimizer: Optimizer,
    /// The optimizer's L2 decay (5e-4), for parameters without their own.
    pub weight_decay: f32,
    pub schedule: Schedule,
    /// Freeze the first this many conv units of the model (the backbone's
    /// come first); `ModelSpec::backbone_unit_count()` freezes the backbone.
    /// A model that freezes more itself (Faster R-CNN's `freeze_at`) keeps
    /// its own.
    pub frozen_units: usize,
    /// Paddle's `freeze_norm`: batch norms use running statistics and their
    /// scale and offset are not trained. False leaves the model's own
    /// setting (the ResNet of the R-CNN configs freezes its norms).
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

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// The batch-mean loss the step minimised (before its update).
    pub loss: Losses,
    pub learning_rate: f32,
}

/// A detector, its optimizer state and the buffers of a training step.
pub struct Trainer<B: Backend> {
    pub model: Box<dyn Detector<B>>,
    pub config: TrainConfig,
    /// Per parameter slot of the model: the optimizer's state tensors in
    /// `Optimizer::state_suffixes` order (empty for running statistics and
    /// frozen parameters).
    state: Vec<Vec<Tensor<B>>>,
    image: Tensor<B>,
    /// Updates done so far; the next step's learning rate is the schedule's
    /// at this step.
    pub step: u64,
}

impl<B: Backend> Trainer<B> {
    pub fn new(mut model: Box<dyn Detector<B>>, config: TrainConfig) -> Self {
        let net = model.net_mut();
        net.freeze_units(net.frozen_units().max(config.frozen_units));
        if config.freeze_norm {
            net.freeze_norm(true);
        }
        net.set_training(true);
        let backend = net.backend().clone();
        let kept = config.optimizer.state_suffixes().len();
        let state = net
            .slots()
            .iter()
            .map(|slot| {
                if net.is_trained(slot) {
                    (0..kept)
                        .map(|_| Tensor::zeros(&backend, &slot.param.spec.shape))
                        .collect()
                } else {
                    Vec::new()
                }
            })
            .collect();
        Trainer {
            image: Tensor::zeros(&backend, &[0]),
            model,
            config,
            state,
            step: 0,
        }
    }

    /// The optimizer state of parameter slot `index` (model order), one
    /// vector per `Optimizer::state_suffixes` entry, for `.pdopt` snapshots;
    /// empty for parameters that are not trained.
    pub fn optimizer_state(&self, index: usize) -> Vec<Vec<f32>> {
        let backend = self.model.net().backend();
        self.state[index]
            .iter()
            .map(|t| t.to_host(backend))
            .collect()
    }

    /// Restores state tensor `which` (an `Optimizer::state_suffixes` index)
    /// of parameter slot `index` from a snapshot; false when that parameter
    /// is not trained or `values` has the wrong length.
    pub fn set_optimizer_state(&mut self, index: usize, which: usize, values: &[f32]) -> bool {
        let backend = self.model.net().backend().clone();
        match self.state.get_mut(index).and_then(|s| s.get_mut(which)) {
            Some(t) if t.numel() == values.len() => {
                t.upload(&backend, values);
                true
            }
            _ => false,
        }
    }

    /// Sizes every buffer for `batch` images of `size` x `size` and returns
    /// the bytes the model, its optimizer state and the step's buffers hold.
    pub fn plan(&mut self, batch: usize, size: usize) -> usize {
        let model_bytes = self.model.plan(batch, size);
        let backend = self.model.net().backend().clone();
        self.image.reshape_reuse(&backend, &[batch, 3, size, size]);
        let tensors = self
            .state
            .iter()
            .flatten()
            .chain([&self.image])
            .map(|t| t.capacity_bytes(&backend))
            .sum::<usize>();
        model_bytes + tensors
    }

    /// One step on `images` (`[N, 3, height, width]`, normalised as the
    /// reader gives them) and their ground truth; `im_info` as
    /// [`Detector::train_pass`] takes it. Returns the loss before the update.
    pub fn step(
        &mut self,
        images: &[f32],
        batch: usize,
        [height, width]: [usize; 2],
        gt: &GroundTruth,
        im_info: &[[f32; 3]],
    ) -> StepReport {
        let backend = self.model.net().backend().clone();
        assert_eq!(
            images.len(),
            batch * 3 * height * width,
            "images are [N, 3, height, width]"
        );
        self.image
            .reshape_reuse(&backend, &[batch, 3, height, width]);
        self.image.upload(&backend, images);
        let loss = self.model.train_pass(&self.image, gt, im_info);
        let learning_rate = self.config.schedule.lr_at(self.step);
        self.update(learning_rate);
        self.step += 1;
        StepReport {
            loss,
            learning_rate,
        }
    }

    /// The optimizer on every trained parameter, at `lr` times the
    /// parameter's own factor, with its own L2 decay when it declares one
    /// (BN, `yolo_output` biases, MobileNet convs: 0).
    fn update(&mut self, lr: f32) {
        let net = self.model.net_mut();
        let backend = net.backend().clone();
        let slots = net.slots().to_vec();
        for (slot, state) in slots.iter().zip(&mut self.state) {
            if state.is_empty() {
                continue;
            }
            let lr = lr * slot.param.learning_rate;
            let weight_decay = slot.param.weight_decay.unwrap_or(self.config.weight_decay);
            let (param, grad) = net
                .param_and_grad_mut(slot)
                .expect("trained parameters have gradients");
            let len = param.numel();
            match (self.config.optimizer, &mut state[..]) {
                (Optimizer::Momentum { momentum }, [velocity]) => {
                    let step = SgdStep {
                        lr,
                        momentum,
                        weight_decay,
                    };
                    backend.sgd_momentum(
                        &step,
                        len,
                        param.buf_mut(),
                        grad.buf(),
                        velocity.buf_mut(),
                    );
                }
                (
                    Optimizer::RmsProp {
                        rho,
                        epsilon,
                        momentum,
                    },
                    [mean_square, moment],
                ) => {
                    let step = RmsPropStep {
                        lr,
                        rho,
                        epsilon,
                        momentum,
                        weight_decay,
                    };
                    backend.rmsprop(
                        &step,
                        len,
                        param.buf_mut(),
                        grad.buf(),
                        mean_square.buf_mut(),
                        moment.buf_mut(),
                    );
                }
                _ => unreachable!("one state tensor per Optimizer::state_suffixes entry"),
            }
        }
    }
}

/// A deterministic batch for benchmarks and tests: images in [-1, 1) and six
/// boxes per image spread over the frame (the formula
/// `benches/train_step_torch.py` and `train_step_paddle.py` use), padded to 50
/// as PaddleDetection's reader pads them. Each box's outline is its object's
/// polygon (in pixels, Paddle's `x2 = x1 + w - 1`), for a mask head.
pub struct SyntheticBatch {
    pub images: Vec<f32>,
    pub boxes: Vec<f32>,
    pub labels: Vec<i32>,
    pub max_boxes: usize,
    pub polygons: Vec<Vec<Vec<Vec<f32>>>>,
}

impl SyntheticBatch {
    pub const BOXES_PER_IMAGE: usize = 6;
    pub const MAX_BOXES: usize = 50;

    pub fn new(batch: usize, size: usize, num_classes: usize, seed: u64) -> Self {
        let images = crate::gradcheck::random_vec(seed, batch * 3 * size * size);
        let mut boxes = vec![0.0; batch * Self::MAX_BOXES * 4];
        let mut labels = vec![0; batch * Self::MAX_BOXES];
        let mut polygons = vec![Vec::new(); batch];
        for (b, image_polygons) in polygons.iter_mut().enumerate() {
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
                let [cx, cy, w, h] = cxcywh.map(|v| (v * size as f64) as f32);
                let (x1, y1) = (cx - w / 2.0, cy - h / 2.0);
                let (x2, y2) = (x1 + w - 1.0, y1 + h - 1.0);
                image_polygons.push(vec![vec![x1, y1, x2, y1, x2, y2, x1, y2]]);
            }
        }
        SyntheticBatch {
            images,
            boxes,
            labels,
            max_boxes: Self::MAX_BOXES,
            polygons,
        }
    }

    /// Numbers the boxes' classes from 1 instead of 0, for an architecture
    /// whose class 0 is the background (SSD).
    pub fn number_from_one(&mut self) {
        for (label, b) in self.labels.iter_mut().zip(self.boxes.chunks_exact(4)) {
            if b[2] > 0.0 {
                *label += 1;
            }
        }
    }

    pub fn ground_truth(&self) -> GroundTruth<'_> {
        GroundTruth {
            boxes: &self.boxes,
            labels: &self.labels,
            scores: None,
            max_boxes: self.max_boxes,
            polygons: &self.polygons,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::conv_unit::ParamRole;
    use crate::models::{Yolov3, Yolov3Detector, Yolov3Spec};
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
        let mut trainer = Trainer::new(Box::new(Yolov3Detector::new(model)), config);
        let (batch, size) = (2, 64);
        let data = SyntheticBatch::new(batch, size, 3, 9);
        let planned = trainer.plan(batch, size);
        assert!(planned > 0);
        let losses: Vec<f32> = (0..8)
            .map(|_| {
                trainer
                    .step(&data.images, batch, [size, size], &data.ground_truth(), &[])
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
        let mut trainer = Trainer::new(Box::new(Yolov3Detector::new(model)), config);
        let before_backbone = trainer
            .model
            .net()
            .param_values("conv6_sep_weights")
            .unwrap();
        let before_head = trainer
            .model
            .net()
            .param_values("yolo_block.0.0.0.conv.weights")
            .unwrap();
        let data = SyntheticBatch::new(2, 64, 2, 1);
        trainer.step(&data.images, 2, [64, 64], &data.ground_truth(), &[]);
        assert_eq!(
            trainer
                .model
                .net()
                .param_values("conv6_sep_weights")
                .unwrap(),
            before_backbone
        );
        assert_ne!(
            trainer
                .model
                .net()
                .param_values("yolo_block.0.0.0.conv.weights")
                .unwrap(),
            before_head
        );
        // Frozen units still run forward in training mode: running stats move.
        let mean = trainer
            .model
            .net()
            .param_values("conv6_sep_bn_mean")
            .unwrap();
        assert!(mean.iter().any(|&m| m != 0.0));
        let trained = trainer
            .model
            .net()
            .slots()
            .iter()
            .filter(|s| trainer.model.net().is_trained(s))
            .count();
        let velocities = (0..trainer.model.net().slots().len())
            .filter(|&i| !trainer.optimizer_state(i).is_empty())
            .count();
        assert_eq!(trained, velocities);
        assert!(trainer
            .model
            .net()
            .slots()
            .iter()
            .all(|s| s.param.role != ParamRole::BnMean || !trainer.model.net().is_trained(s)));
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
        let mut trainer = Trainer::new(Box::new(Yolov3Detector::new(model)), config);
        let name = "yolo_block.1.1.0.conv.weights";
        let before = trainer.model.net().param_values(name).unwrap();
        let data = SyntheticBatch::new(2, 64, 2, 2);
        trainer.step(&data.images, 2, [64, 64], &data.ground_truth(), &[]);
        let grad = trainer.model.net().param_grad(name).unwrap();
        let after = trainer.model.net().param_values(name).unwrap();
        for i in 0..before.len() {
            let expected = before[i] - 0.5 * (grad[i] + 5e-4 * before[i]);
            assert!(
                (after[i] - expected).abs() <= 1e-6 * (1.0 + expected.abs()),
                "{i}"
            );
        }
    }
}
