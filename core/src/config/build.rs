//! From a checked config to the parts a run is made of: the learning-rate
//! schedule and optimizer settings, the YOLOv3 loss/decoding and NMS settings,
//! the dataset readers and the input pipelines. Each takes exactly the keys
//! PaddleDetection's own builders take.

use std::path::{Path, PathBuf};

use pulsefocus_formats::coco::CocoDataSet as CocoReader;
use pulsefocus_formats::dataset::Dataset;
use pulsefocus_formats::voc::VocDataSet as VocReader;
use pulsefocus_formats::{Error, Result};

use super::{Config, DataSet, Reader, Scheduler, Transform};
use crate::data::loader::{LoaderConfig, Mode, TrainAugment};
use crate::data::transforms::color_distort::{ColorDistortParams, DeltaRange};
use crate::data::transforms::mixup::MixupParams;
use crate::data::transforms::random_crop::CropParams;
use crate::data::transforms::random_expand::ExpandParams;
use crate::data::transforms::resize::Interp;
use crate::data::transforms::SampleAugment;
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

    /// The training pipeline: the augmentations `sample_transforms` lists,
    /// batch sizes drawn from `RandomShape`, mixup for `mixup_epoch` epochs.
    pub fn train_loader_config(&self, seed: u64) -> LoaderConfig {
        let mut augment = TrainAugment {
            sample: self.sample_augment(),
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
            mode: Mode::Train(Box::new(augment)),
            ..LoaderConfig::train(self.batch_size, seed)
        }
    }

    /// The per-sample augmentations `sample_transforms` lists, with their
    /// parameters (`check_sample_transforms` has checked them).
    fn sample_augment(&self) -> SampleAugment {
        let mut augment = SampleAugment::none();
        let delta = |v: &[f32]| DeltaRange {
            low: v[0],
            high: v[1],
            skip_probability: f64::from(v[2]),
        };
        for t in &self.sample_transforms {
            match t {
                Transform::MixupImage(m) => {
                    augment.mixup = Some(MixupParams {
                        alpha: f64::from(m.alpha),
                        beta: f64::from(m.beta),
                    })
                }
                Transform::ColorDistort(c) => {
                    augment.color_distort = Some(ColorDistortParams {
                        brightness: delta(&c.brightness),
                        contrast: delta(&c.contrast),
                        saturation: delta(&c.saturation),
                        hue: delta(&c.hue),
                        random_apply: c.random_apply,
                    })
                }
                Transform::RandomExpand(e) => {
                    augment.expand = Some(ExpandParams {
                        max_ratio: f64::from(e.ratio),
                        skip_probability: f64::from(e.prob),
                        fill: [e.fill_value[0], e.fill_value[1], e.fill_value[2]],
                    })
                }
                Transform::RandomCrop(c) => {
                    augment.crop = Some(CropParams {
                        thresholds: c.thresholds.clone(),
                        scale: [c.scaling[0], c.scaling[1]],
                        aspect_ratio: [c.aspect_ratio[0], c.aspect_ratio[1]],
                        attempts: c.num_attempts,
                        allow_no_crop: c.allow_no_crop,
                        cover_all_boxes: c.cover_all_box,
                    })
                }
                Transform::RandomFlipImage(f) => augment.flip = Some(f64::from(f.prob)),
                _ => {}
            }
        }
        augment
    }

    /// Checks the parameters of the augmentations in `sample_transforms`;
    /// errors name `file` and the reader's key, e.g.
    /// `TrainReader.sample_transforms[2].RandomExpand.ratio`.
    pub fn check_sample_transforms(&self, file: &Path, reader: &str) -> Result<()> {
        let probability = |p: f32| (0.0..=1.0).contains(&p);
        for (i, t) in self.sample_transforms.iter().enumerate() {
            let bad = |key: &str, msg: &str| {
                Error::at(
                    file,
                    format!("key {reader}.sample_transforms[{i}].{key}"),
                    msg.to_string(),
                )
            };
            match t {
                Transform::MixupImage(m) if m.alpha <= 0.0 || m.beta <= 0.0 => {
                    return Err(bad("MixupImage", "alpha and beta must be positive"));
                }
                Transform::ColorDistort(c) => {
                    for (name, v) in [
                        ("brightness", &c.brightness),
                        ("contrast", &c.contrast),
                        ("saturation", &c.saturation),
                        ("hue", &c.hue),
                    ] {
                        if v.len() != 3 || v[0] > v[1] || !probability(v[2]) {
                            return Err(bad(
                                &format!("ColorDistort.{name}"),
                                "must be [low, high, prob] with low <= high and prob in [0, 1]",
                            ));
                        }
                    }
                }
                Transform::RandomExpand(e) => {
                    if e.ratio.is_nan() || e.ratio < 1.0 {
                        return Err(bad("RandomExpand.ratio", "must be at least 1"));
                    }
                    if !probability(e.prob) {
                        return Err(bad("RandomExpand.prob", "must be in [0, 1]"));
                    }
                    if e.fill_value.len() != 3 {
                        return Err(bad("RandomExpand.fill_value", "must be 3 values (RGB)"));
                    }
                }
                Transform::RandomCrop(c) => {
                    let range = |v: &[f32], high: f32| {
                        v.len() == 2 && v[0] > 0.0 && v[0] <= v[1] && v[1] <= high
                    };
                    if !range(&c.scaling, 1.0) {
                        return Err(bad(
                            "RandomCrop.scaling",
                            "must be [low, high] with 0 < low <= high <= 1",
                        ));
                    }
                    if !range(&c.aspect_ratio, f32::MAX) {
                        return Err(bad(
                            "RandomCrop.aspect_ratio",
                            "must be [low, high] with 0 < low <= high",
                        ));
                    }
                    if !c.thresholds.iter().all(|&t| probability(t)) {
                        return Err(bad("RandomCrop.thresholds", "IoUs must be in [0, 1]"));
                    }
                }
                Transform::RandomFlipImage(f) if !probability(f.prob) => {
                    return Err(bad("RandomFlipImage.prob", "must be in [0, 1]"));
                }
                _ => {}
            }
        }
        Ok(())
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
        assert_eq!(augment.sample, SampleAugment::yolov3());
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

    #[test]
    fn sample_transforms_choose_the_augmentations_and_their_parameters() {
        let mut config = shipped("yolov3_mobilenet_v1_voc.ron");
        let reader = &mut config.train_reader;
        reader.sample_transforms = vec![
            Transform::DecodeImage(Default::default()),
            Transform::RandomFlipImage(crate::config::sections::RandomFlipImage {
                prob: 1.0,
                is_normalized: false,
            }),
        ];
        let Mode::Train(augment) = reader.train_loader_config(0).mode else {
            panic!("training mode")
        };
        assert_eq!(
            augment.sample,
            SampleAugment {
                flip: Some(1.0),
                ..SampleAugment::none()
            }
        );

        let file = Path::new("my.ron");
        assert!(reader.check_sample_transforms(file, "TrainReader").is_ok());
        let hue_backwards = crate::config::sections::ColorDistort {
            hue: vec![18.0, -18.0, 0.5],
            ..Default::default()
        };
        reader
            .sample_transforms
            .push(Transform::ColorDistort(hue_backwards));
        let error = reader
            .check_sample_transforms(file, "TrainReader")
            .unwrap_err()
            .to_string();
        assert!(error.contains("my.ron"), "{error}");
        assert!(
            error.contains("TrainReader.sample_transforms[2].ColorDistort.hue"),
            "{error}"
        );
    }
}
