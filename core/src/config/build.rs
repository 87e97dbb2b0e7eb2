//! From a checked config to the parts a run is made of: the learning-rate
//! schedule and optimizer settings, the YOLOv3 loss/decoding and NMS settings,
//! the dataset readers and the input pipelines. Each takes exactly the keys
//! PaddleDetection's own builders take.

use std::path::PathBuf;

use pulsefocus_formats::coco::CocoDataSet as CocoReader;
use pulsefocus_formats::dataset::Dataset;
use pulsefocus_formats::voc::VocDataSet as VocReader;
use pulsefocus_formats::{Error, Result};

use super::{Config, DataSet, Reader, Scheduler, Transform};
use crate::data::loader::{LoaderConfig, Mode, TrainAugment};
use crate::data::transforms::resize::Interp;
use crate::optim::Schedule;
use crate::train::TrainConfig;
use crate::yolo::{NmsConfig, YoloConfig};

impl Config {
    /// `LearningRate`: LinearWarmup around PiecewiseDecay.
    pub fn schedule(&self) -> Schedule {
        let lr = &self.learning_rate;
        let (mut gamma, mut milestones) = (1.0, Vec::new());
        let (mut warmup_steps, mut warmup_start) = (0, 1.0);
        for s in &lr.schedulers {
            match s {
                Scheduler::PiecewiseDecay(p) => {
                    gamma = p.gamma;
                    milestones = p.milestones.iter().map(|&m| m as u64).collect();
                }
                Scheduler::LinearWarmup(w) => {
                    warmup_steps = w.steps as u64;
                    warmup_start = w.start_factor;
                }
            }
        }
        Schedule::piecewise(lr.base_lr, gamma, &milestones, warmup_steps, warmup_start)
    }

    /// `OptimizerBuilder` and `LearningRate`.
    pub fn train_config(&self) -> TrainConfig {
        let opt = &self.optimizer_builder;
        TrainConfig {
            momentum: opt.optimizer.momentum,
            weight_decay: opt.regularizer.factor,
            schedule: self.schedule(),
            ..TrainConfig::yolov3()
        }
    }

    /// `YOLOv3Head`'s loss and decoding settings.
    pub fn yolo_config(&self) -> YoloConfig {
        let head = &self.yolov3_head;
        YoloConfig {
            anchors: head
                .anchors
                .iter()
                .map(|a| [a[0] as f32, a[1] as f32])
                .collect(),
            anchor_masks: head.anchor_masks.clone(),
            ignore_thresh: head.ignore_thresh,
            label_smooth: head.label_smooth,
            scale_x_y: head.scale_x_y,
            ..YoloConfig::yolov3(self.num_classes)
        }
    }

    /// `YOLOv3Head.nms`.
    pub fn nms_config(&self) -> NmsConfig {
        let nms = &self.yolov3_head.nms;
        let positive = |k: usize| (k > 0).then_some(k);
        NmsConfig {
            score_threshold: nms.score_threshold,
            nms_top_k: positive(nms.nms_top_k),
            keep_top_k: positive(nms.keep_top_k),
            nms_threshold: nms.nms_threshold,
            normalized: nms.normalized,
            background_label: usize::try_from(nms.background_label).ok(),
        }
    }

    /// The reader used to evaluate: `EvalReader`, else `TestReader`.
    pub fn eval_or_test_reader(&self) -> Option<&Reader> {
        self.eval_reader.as_ref().or(self.test_reader.as_ref())
    }
}

impl Reader {
    /// Reads the dataset this reader names, with PaddleDetection's rules.
    /// Paths are relative to the working directory, as in PaddleDetection.
    pub fn load_dataset(&self) -> Result<Dataset> {
        match &self.dataset {
            DataSet::COCODataSet(d) => CocoReader {
                dataset_dir: PathBuf::from(&d.dataset_dir),
                image_dir: PathBuf::from(&d.image_dir),
                anno_path: PathBuf::from(&d.anno_path),
                with_background: d.with_background,
                allow_empty: d.allow_empty || !self.drop_empty,
                load_crowd: d.load_crowd,
            }
            .load(),
            DataSet::VOCDataSet(d) => VocReader {
                dataset_dir: PathBuf::from(&d.dataset_dir),
                anno_path: PathBuf::from(&d.anno_path),
                label_list: PathBuf::from(&d.label_list),
                use_default_label: d.use_default_label,
                with_background: d.with_background,
            }
            .load(),
            DataSet::ImageFolder(d) => Err(Error::new(
                &d.dataset_dir,
                "an ImageFolder has no annotations to train or evaluate on",
            )),
        }
    }

    /// The training pipeline: PaddleDetection's YOLOv3 augmentations, batch
    /// sizes drawn from `RandomShape`, mixup for `mixup_epoch` epochs.
    pub fn train_loader_config(&self, seed: u64) -> LoaderConfig {
        let mut augment = TrainAugment {
            mixup_epochs: self.mixup_epoch as u64,
            ..TrainAugment::default()
        };
        for t in self.sample_transforms.iter().chain(&self.batch_transforms) {
            if let Transform::RandomShape(shape) = t {
                augment.sizes = shape.sizes.clone();
                augment.random_interp = shape.random_inter;
            }
        }
        LoaderConfig {
            batch_size: self.batch_size,
            workers: self.worker_num.max(1),
            allow_empty: !self.drop_empty,
            max_boxes: self.inputs_def.num_max_boxes,
            mode: Mode::Train(augment),
            ..LoaderConfig::train(self.batch_size, seed)
        }
    }

    /// The evaluation pipeline: every image once, resized as `ResizeImage` says.
    pub fn eval_loader_config(&self) -> LoaderConfig {
        let mut config = LoaderConfig {
            workers: self.worker_num.max(1),
            ..LoaderConfig::eval(self.batch_size)
        };
        for t in &self.sample_transforms {
            if let Transform::ResizeImage(r) = t {
                let interp = match r.interp {
                    0 => Interp::Nearest,
                    1 => Interp::Linear,
                    _ => Interp::Cubic,
                };
                config.mode = Mode::Eval {
                    size: r.target_size,
                    interp,
                };
            }
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn shipped(name: &str) -> Config {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../configs")
            .join(name);
        super::super::load(&path, &[]).unwrap()
    }

    #[test]
    fn yolov3_voc_matches_paddledetection_defaults() {
        let config = shipped("yolov3_mobilenet_v1_voc.ron");
        assert_eq!(config.schedule(), Schedule::yolov3());
        let train = config.train_config();
        assert_eq!((train.momentum, train.weight_decay), (0.9, 5e-4));
        assert_eq!(config.yolo_config(), YoloConfig::yolov3(20));
        assert_eq!(config.nms_config(), NmsConfig::yolov3());
        let loader = config.train_reader.train_loader_config(3);
        assert_eq!(loader.batch_size, 8);
        let Mode::Train(augment) = &loader.mode else {
            panic!("training mode")
        };
        assert_eq!(augment.sizes, (320..=608).step_by(32).collect::<Vec<_>>());
        let eval = config.eval_or_test_reader().unwrap().eval_loader_config();
        assert_eq!(
            eval.mode,
            Mode::Eval {
                size: 608,
                interp: Interp::Cubic
            }
        );
    }

    #[test]
    fn demo_schedule_and_sizes_come_from_its_sections() {
        let config = shipped("demo.ron");
        let schedule = config.schedule();
        assert_eq!(schedule.base_lr, config.learning_rate.base_lr);
        for s in &config.learning_rate.schedulers {
            match s {
                Scheduler::LinearWarmup(w) => assert_eq!(schedule.warmup_steps, w.steps as u64),
                Scheduler::PiecewiseDecay(p) => {
                    let milestones: Vec<u64> = p.milestones.iter().map(|&m| m as u64).collect();
                    assert_eq!(schedule.boundaries, milestones);
                }
            }
        }
        let Mode::Train(augment) = config.train_reader.train_loader_config(0).mode else {
            panic!("training mode")
        };
        let shape = config
            .train_reader
            .batch_transforms
            .iter()
            .find_map(|t| match t {
                Transform::RandomShape(r) => Some(r.sizes.clone()),
                _ => None,
            });
        assert_eq!(Some(augment.sizes), shape);
        assert_eq!(augment.mixup_epochs, config.train_reader.mixup_epoch as u64);
    }
}
