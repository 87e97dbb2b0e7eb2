//! From a checked config to the parts a run is made of: the learning-rate
//! schedule and optimizer settings, the YOLOv3 loss/decoding and NMS settings,
//! the dataset readers and the input pipelines. Each takes exactly the keys
//! PaddleDetection's own builders take.

use std::path::{Path, PathBuf};

use pulsefocus_formats::coco::CocoDataSet as CocoReader;
use pulsefocus_formats::dataset::{Dataset, DatasetSource};
use pulsefocus_formats::voc::{VocDataSet as VocReader, DEFAULT_LABELS};
use pulsefocus_formats::{Error, Result};

use super::{CocoDataSet, Config, DataSet, Reader, Scheduler, Transform, VocDataSet};
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
            anchors: head.anchor_pairs(),
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

    /// Checks a dataset's class names against `num_classes`; `from` says
    /// where the names come from (`DataSet::class_names_from`).
    pub fn check_num_classes(
        &self,
        config_path: &Path,
        names: &[String],
        from: &str,
    ) -> Result<()> {
        if names.len() == self.num_classes {
            return Ok(());
        }
        Err(Error::at(
            config_path,
            "key num_classes",
            format!(
                "the config says {} classes but {from} names {} ({}); set -o num_classes={}",
                self.num_classes,
                names.len(),
                names.join(", "),
                names.len()
            ),
        ))
    }

    /// The reader used to evaluate: `EvalReader`, else `TestReader`.
    pub fn eval_or_test_reader(&self) -> Option<&Reader> {
        self.eval_reader.as_ref().or(self.test_reader.as_ref())
    }
}

impl From<&CocoDataSet> for CocoReader {
    fn from(d: &CocoDataSet) -> Self {
        CocoReader {
            dataset_dir: PathBuf::from(&d.dataset_dir),
            image_dir: PathBuf::from(&d.image_dir),
            anno_path: PathBuf::from(&d.anno_path),
            with_background: d.with_background,
            allow_empty: d.allow_empty,
            load_crowd: d.load_crowd,
        }
    }
}

impl From<&VocDataSet> for VocReader {
    fn from(d: &VocDataSet) -> Self {
        VocReader {
            dataset_dir: PathBuf::from(&d.dataset_dir),
            anno_path: PathBuf::from(&d.anno_path),
            label_list: PathBuf::from(&d.label_list),
            use_default_label: d.use_default_label,
            with_background: d.with_background,
        }
    }
}

impl DataSet {
    /// The annotated dataset this names, read with PaddleDetection's rules.
    /// An `ImageFolder` names images only: an error.
    pub fn source(&self) -> Result<DatasetSource> {
        match self {
            DataSet::COCODataSet(d) => Ok(DatasetSource::Coco(d.into())),
            DataSet::VOCDataSet(d) => Ok(DatasetSource::Voc(d.into())),
            DataSet::ImageFolder(d) => Err(Error::new(
                &d.dataset_dir,
                "an ImageFolder has no annotations to train or evaluate on",
            )),
        }
    }

    /// The class names in class-index order: a VOC label list (or the 20
    /// default labels), a COCO file's categories, or for an `ImageFolder` the
    /// COCO file its `anno_path` names (else the default labels).
    pub fn class_names(&self) -> Result<Vec<String>> {
        let coco = match self {
            DataSet::ImageFolder(_) => self.image_folder_categories(),
            _ => match self.source()? {
                DatasetSource::Voc(voc) => {
                    return voc.class_names().map_err(|e| self.name_working_dir(e))
                }
                DatasetSource::Coco(coco) => Some(coco),
            },
        };
        match coco {
            Some(coco) => {
                let coco = coco.load().map_err(|e| self.name_working_dir(e))?;
                Ok(coco.class_names)
            }
            None => Ok(DEFAULT_LABELS.iter().map(|s| s.to_string()).collect()),
        }
    }

    /// A file missing under a relative `dataset_dir` says where relative
    /// paths start: the usual cause is running from another directory than
    /// the one the config's paths assume (PaddleDetection's rule too).
    fn name_working_dir(&self, mut err: Error) -> Error {
        let dataset_dir = match self {
            DataSet::COCODataSet(d) => &d.dataset_dir,
            DataSet::VOCDataSet(d) => &d.dataset_dir,
            DataSet::ImageFolder(d) => &d.dataset_dir,
        };
        let missing = err
            .source
            .as_ref()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound);
        if missing && Path::new(dataset_dir).is_relative() {
            let cwd = match std::env::current_dir() {
                Ok(dir) => dir.display().to_string(),
                Err(e) => format!("unknown: {e}"),
            };
            err.message +=
                &format!("; dataset paths are relative to the working directory, which was {cwd}");
        }
        err
    }

    /// Where `class_names` reads the names, as messages name it.
    pub fn class_names_from(&self) -> String {
        let default_labels = "the default Pascal VOC labels (use_default_label: true)";
        let path = match self {
            DataSet::VOCDataSet(d) if d.use_default_label => return default_labels.into(),
            DataSet::VOCDataSet(d) => Path::new(&d.dataset_dir).join(&d.label_list),
            DataSet::COCODataSet(d) => Path::new(&d.dataset_dir).join(&d.anno_path),
            DataSet::ImageFolder(_) => match self.image_folder_categories() {
                Some(coco) => coco.anno_file(),
                None => return default_labels.into(),
            },
        };
        path.display().to_string()
    }

    /// The COCO file an `ImageFolder` takes its categories from (as in
    /// PaddleDetection, only its categories are used); `None` when it uses the
    /// default labels, and for the other datasets.
    pub fn image_folder_categories(&self) -> Option<CocoReader> {
        match self {
            DataSet::ImageFolder(d) if !d.use_default_label && !d.anno_path.is_empty() => {
                Some(CocoReader::from(&CocoDataSet {
                    dataset_dir: d.dataset_dir.clone(),
                    image_dir: d.image_dir.clone(),
                    anno_path: d.anno_path.clone(),
                    with_background: d.with_background,
                    load_crowd: false,
                    allow_empty: true,
                }))
            }
            _ => None,
        }
    }
}

impl Reader {
    /// The dataset this reader trains or evaluates on, as PaddleDetection reads
    /// it: `drop_empty: false` keeps images without boxes. Paths are relative
    /// to the working directory, as in PaddleDetection.
    pub fn dataset_source(&self) -> Result<DatasetSource> {
        let mut source = self.dataset.source()?;
        if let DatasetSource::Coco(coco) = &mut source {
            coco.allow_empty |= !self.drop_empty;
        }
        Ok(source)
    }

    /// Reads the dataset this reader names, with PaddleDetection's rules.
    pub fn load_dataset(&self) -> Result<Dataset> {
        let source = self.dataset_source()?;
        source.load().map_err(|e| self.dataset.name_working_dir(e))
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
    use proptest::prelude::*;

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

    proptest! {
        #[test]
        fn config_datasets_become_readers_field_by_field(
            dirs in proptest::array::uniform4("[a-z/._ ]{0,12}"),
            flags in proptest::array::uniform4(any::<bool>()),
            drop_empty in any::<bool>(),
        ) {
            let [dataset_dir, image_dir, anno_path, label_list] = dirs;
            let [with_background, load_crowd, allow_empty, use_default_label] = flags;
            let coco = CocoDataSet {
                dataset_dir: dataset_dir.clone(),
                image_dir: image_dir.clone(),
                anno_path: anno_path.clone(),
                with_background,
                load_crowd,
                allow_empty,
            };
            let reader = Reader {
                dataset: DataSet::COCODataSet(coco),
                drop_empty,
                ..shipped("demo.ron").train_reader
            };
            // A reader that keeps empty images keeps them whatever the dataset says.
            let want = DatasetSource::Coco(CocoReader {
                dataset_dir: PathBuf::from(&dataset_dir),
                image_dir: PathBuf::from(&image_dir),
                anno_path: PathBuf::from(&anno_path),
                with_background,
                allow_empty: allow_empty || !drop_empty,
                load_crowd,
            });
            prop_assert_eq!(reader.dataset_source().unwrap(), want);

            let voc = DataSet::VOCDataSet(VocDataSet {
                dataset_dir: dataset_dir.clone(),
                anno_path: anno_path.clone(),
                use_default_label,
                label_list: label_list.clone(),
                with_background,
            });
            let want = DatasetSource::Voc(VocReader {
                dataset_dir: PathBuf::from(&dataset_dir),
                anno_path: PathBuf::from(&anno_path),
                label_list: PathBuf::from(&label_list),
                use_default_label,
                with_background,
            });
            prop_assert_eq!(voc.source().unwrap(), want);
        }
    }

    #[test]
    fn image_folders_name_classes_but_are_not_training_data() {
        let voc = shipped("yolov3_mobilenet_v1_voc.ron");
        let folder = &voc.test_reader.as_ref().unwrap().dataset;
        let err = folder.source().unwrap_err().to_string();
        assert!(err.contains("ImageFolder has no annotations"), "{err}");
        assert_eq!(folder.class_names().unwrap(), DEFAULT_LABELS);
        assert!(folder.class_names_from().contains("use_default_label"));

        // The COCO configs' TestReader takes its names from a COCO file.
        let coco = shipped("yolov3_mobilenet_v1_coco.ron");
        let folder = &coco.test_reader.as_ref().unwrap().dataset;
        let file = "dataset/coco/annotations/instances_val2017.json";
        assert_eq!(folder.class_names_from(), file);
        let err = folder.class_names().unwrap_err();
        assert_eq!(err.file, Path::new(file));
    }

    #[test]
    fn a_missing_dataset_file_names_the_working_directory() {
        // The demo's relative dataset_dir, read from a directory without it
        // (tests run in the crate's folder, which has no dataset/).
        let demo = shipped("demo.ron");
        let cwd = std::env::current_dir().unwrap();
        let hint = format!(
            "relative to the working directory, which was {}",
            cwd.display()
        );
        let err = demo.train_reader.dataset.class_names().unwrap_err();
        assert!(err.message.contains(&hint), "{err}");
        let err = demo.train_reader.load_dataset().unwrap_err();
        assert!(err.message.contains(&hint), "{err}");

        // An absolute dataset_dir needs no hint.
        let mut absolute = demo.train_reader.clone();
        let DataSet::VOCDataSet(voc) = &mut absolute.dataset else {
            panic!("the demo reads VOC")
        };
        voc.dataset_dir = cwd.join("no_such_dataset").display().to_string();
        let err = absolute.dataset.class_names().unwrap_err();
        assert!(!err.message.contains("working directory"), "{err}");
    }

    #[test]
    fn class_count_mismatch_names_the_config_and_the_label_file() {
        let config = shipped("demo.ron");
        let path = Path::new("demo.ron");
        let names: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        assert!(config.check_num_classes(path, &names, "l.txt").is_ok());
        let err = config
            .check_num_classes(path, &names[..2], "l.txt")
            .unwrap_err();
        assert_eq!(err.file, path);
        assert_eq!(err.place.as_deref(), Some("key num_classes"));
        assert_eq!(
            err.message,
            "the config says 3 classes but l.txt names 2 (a, b); set -o num_classes=2"
        );
    }
}
