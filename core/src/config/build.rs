//! From a checked config to the parts a run is made of: the learning-rate
//! schedule and optimizer settings, the YOLOv3 loss/decoding and NMS settings,
//! the dataset readers and the input pipelines. Each takes exactly the keys
//! PaddleDetection's own builders take.

use std::path::{Path, PathBuf};

use pulsefocus_formats::coco::CocoDataSet as CocoReader;
use pulsefocus_formats::dataset::{Dataset, DatasetSource};
use pulsefocus_formats::voc::{VocDataSet as VocReader, DEFAULT_LABELS};
use pulsefocus_formats::{Error, Result};

use super::pipeline::RandomShapeParams;
use super::{Architecture, CocoDataSet, Config, DataSet, Reader, Scheduler, VocDataSet};
use crate::data::loader::{LoaderConfig, Mode, TrainAugment};
use crate::models::mobilenet_v1::MobileNetV1Spec;
use crate::models::ssd::{SsdBackbone, SsdSpec};
use crate::models::vgg::{VggExtraBlock, VggSpec};
use crate::optim::{Optimizer, Schedule};
use crate::ssd::{sizes_from_ratios, PriorBoxLevel};
use crate::train::TrainConfig;
use crate::yolo::{NmsConfig, YoloConfig};

impl Config {
    /// `LearningRate`: LinearWarmup around PiecewiseDecay (its `values`
    /// when given, else `base_lr` and `gamma`).
    pub fn schedule(&self) -> Schedule {
        let lr = &self.learning_rate;
        let (mut gamma, mut milestones, mut values) = (1.0, Vec::new(), None);
        let (mut warmup_steps, mut warmup_start) = (0, 1.0);
        for s in &lr.schedulers {
            match s {
                Scheduler::PiecewiseDecay(p) => {
                    gamma = p.gamma;
                    milestones = p.milestones.iter().map(|&m| m as u64).collect();
                    values = p.values.clone();
                }
                Scheduler::LinearWarmup(w) => {
                    warmup_steps = w.steps as u64;
                    warmup_start = w.start_factor;
                }
            }
        }
        match values {
            Some(values) => Schedule::piecewise_values(
                lr.base_lr,
                &milestones,
                values,
                warmup_steps,
                warmup_start,
            ),
            None => Schedule::piecewise(lr.base_lr, gamma, &milestones, warmup_steps, warmup_start),
        }
    }

    /// `OptimizerBuilder` and `LearningRate`. RMSProp's `rho` and
    /// `epsilon` default to Paddle's.
    pub fn train_config(&self) -> TrainConfig {
        let opt = &self.optimizer_builder;
        let o = &opt.optimizer;
        let optimizer = match o.kind.as_str() {
            "RMSPropOptimizer" => {
                let mut rmsprop = Optimizer::rmsprop(o.momentum.unwrap_or(0.0));
                if let Optimizer::RmsProp { rho, epsilon, .. } = &mut rmsprop {
                    *rho = o.rho.unwrap_or(*rho);
                    *epsilon = o.epsilon.unwrap_or(*epsilon);
                }
                rmsprop
            }
            _ => Optimizer::Momentum {
                momentum: o.momentum.unwrap_or(0.9),
            },
        };
        // Faster R-CNN's and RetinaNet's ResNet freezes its first stages
        // (`freeze_at`) and, with `freeze_norm`, its batch norms; the trainer
        // applies both.
        let backbone = match self.arch() {
            // Mask R-CNN's backbone is its Faster R-CNN part's, and so is
            // the cascades' trunk's.
            Architecture::FasterRCNN
            | Architecture::MaskRCNN
            | Architecture::CascadeRCNN
            | Architecture::CascadeMaskRCNN => Some(
                self.faster_rcnn_spec(Path::new(""))
                    .expect("check() read the Faster R-CNN sections")
                    .backbone,
            ),
            Architecture::RetinaNet => Some(
                self.retinanet_spec(Path::new(""))
                    .expect("check() read the RetinaNet sections")
                    .backbone,
            ),
            Architecture::YOLOv3 | Architecture::SSD => None,
        };
        let (frozen_units, freeze_norm) =
            backbone.map_or((0, false), |b| (b.frozen_units(), b.freeze_norm));
        TrainConfig {
            optimizer,
            weight_decay: opt.regularizer.factor,
            schedule: self.schedule(),
            frozen_units,
            freeze_norm,
        }
    }

    /// `YOLOv3Head`'s decoding and the `YOLOv3Loss` it names.
    pub fn yolo_config(&self) -> YoloConfig {
        let head = &self.yolov3_head;
        YoloConfig {
            anchors: head.anchor_pairs(),
            anchor_masks: head.anchor_masks.clone(),
            ignore_thresh: self.yolov3_loss.ignore_thresh,
            label_smooth: self.yolov3_loss.label_smooth,
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
            nms_top_k: usize::try_from(nms.nms_top_k).ok().and_then(positive),
            keep_top_k: positive(nms.keep_top_k),
            nms_threshold: nms.nms_threshold,
            normalized: nms.normalized,
            background_label: usize::try_from(nms.background_label).ok(),
        }
    }

    /// `SSD.output_decoder`, as `detection_output` runs it: boxes are
    /// normalised (0..1 of the input).
    pub fn ssd_nms_config(&self) -> NmsConfig {
        let decoder = self.ssd.clone().unwrap_or_default().output_decoder;
        let positive = |k: i64| usize::try_from(k).ok().filter(|&k| k > 0);
        NmsConfig {
            score_threshold: decoder.score_threshold,
            nms_top_k: positive(decoder.nms_top_k),
            keep_top_k: positive(decoder.keep_top_k),
            nms_threshold: decoder.nms_threshold,
            normalized: true,
            background_label: usize::try_from(decoder.background_label).ok(),
        }
    }

    /// The SSD model (after `check`): MobileNet with its extra blocks, or
    /// VGG with its own and its L2 norms; `MultiBoxHead`'s priors and convs,
    /// `num_classes` with the background.
    pub fn ssd_spec(&self) -> SsdSpec {
        let priors = self
            .prior_levels()
            .unwrap_or_else(|(key, e)| panic!("check() accepts MultiBoxHead.{key}: {e}"));
        let head_kernel = self.multi_box_head.clone().unwrap_or_default().kernel_size;
        let num_classes = self.num_classes;
        if self.ssd_on_vgg() {
            let v = self.vgg.clone().unwrap_or_default();
            let vgg = VggSpec {
                depth: v.depth,
                scale: 1.0,
                extra_blocks: v
                    .extra_block_filters
                    .iter()
                    .map(|f| VggExtraBlock::new(f[0], f[1], f[2], f[3], f[4]))
                    .collect(),
                // Paddle skips a norm whose entry is exactly -1.
                normalizations: v
                    .normalizations
                    .iter()
                    .map(|&n| (n != -1.0).then_some(n))
                    .collect(),
            };
            return SsdSpec {
                backbone: SsdBackbone::Vgg(vgg),
                extra_blocks: Vec::new(),
                num_classes,
                priors,
                head_kernel,
                conv_learning_rate: 1.0,
            };
        }
        let m = &self.mobilenet;
        SsdSpec {
            backbone: SsdBackbone::MobileNetV1(MobileNetV1Spec {
                scale: m.conv_group_scale,
            }),
            extra_blocks: m.extra_block_filters.iter().map(|f| (f[0], f[1])).collect(),
            num_classes,
            priors,
            head_kernel,
            conv_learning_rate: m.conv_learning_rate,
        }
    }

    /// Whether the SSD's backbone is VGG (`SSD.backbone: VGG`), not MobileNet.
    pub(super) fn ssd_on_vgg(&self) -> bool {
        self.ssd.as_ref().is_some_and(|ssd| ssd.backbone == "VGG")
    }

    /// The SSD head's feature levels: the backbone's two, then one per
    /// extra block.
    pub(super) fn ssd_levels(&self) -> usize {
        2 + if self.ssd_on_vgg() {
            self.vgg
                .clone()
                .unwrap_or_default()
                .extra_block_filters
                .len()
        } else {
            self.mobilenet.extra_block_filters.len()
        }
    }

    /// `fluid.layers.multi_box_head`'s `prior_box` settings, one per
    /// feature level (MobileNet-SSD: `conv5_5`, `conv6` and the four extra
    /// blocks; VGG16-SSD: `conv4_3`, `fc7` and its four): sizes from `min_sizes`/`max_sizes`, or when neither is given
    /// from `min_ratio`/`max_ratio` of `base_size`; the same `steps` across
    /// and down; never clipped. An error names the key (in MultiBoxHead).
    pub(super) fn prior_levels(&self) -> std::result::Result<Vec<PriorBoxLevel>, (String, String)> {
        let head = self.multi_box_head.clone().unwrap_or_default();
        let levels = self.ssd_levels();
        let per_level = |key: &str, len: usize| {
            if len == levels {
                Ok(())
            } else {
                Err((
                    key.to_string(),
                    format!("has {len} entries: give one per feature level ({levels})"),
                ))
            }
        };
        let (min_sizes, max_sizes): (Vec<Vec<f32>>, Vec<Vec<f32>>) =
            match (&head.min_sizes, &head.max_sizes) {
                (Some(min), Some(max)) => {
                    per_level("min_sizes", min.len())?;
                    per_level("max_sizes", max.len())?;
                    (
                        min.iter().map(|m| m.values()).collect(),
                        max.iter().map(|m| m.values()).collect(),
                    )
                }
                (None, None) => {
                    let (min, max) =
                        sizes_from_ratios(levels, head.base_size, head.min_ratio, head.max_ratio)
                            .map_err(|e| ("max_ratio".to_string(), e))?;
                    // Paddle steps through the ratios and uses the first ones.
                    (
                        min.iter().take(levels).map(|&m| vec![m]).collect(),
                        max.iter().take(levels).map(|&m| vec![m]).collect(),
                    )
                }
                (None, Some(_)) | (Some(_), None) => {
                    return Err((
                        "min_sizes".into(),
                        "give both min_sizes and max_sizes, or neither (then min_ratio and max_ratio set them)".into(),
                    ))
                }
            };
        per_level("aspect_ratios", head.aspect_ratios.len())?;
        if let Some(steps) = &head.steps {
            per_level("steps", steps.len())?;
            if steps.iter().any(|&s| s.is_nan() || s < 0.0) {
                return Err(("steps".into(), "must not be negative".into()));
            }
        }
        let mut priors = Vec::with_capacity(levels);
        for level in 0..levels {
            let (min, max) = (&min_sizes[level], &max_sizes[level]);
            if min.is_empty() || min.iter().any(|&m| m.is_nan() || m <= 0.0) {
                return Err((
                    format!("min_sizes[{level}]"),
                    "must be one or more positive sizes".into(),
                ));
            }
            if !max.is_empty()
                && (max.len() != min.len()
                    || max.iter().zip(min).any(|(a, b)| a.is_nan() || a <= b))
            {
                return Err((
                    format!("max_sizes[{level}]"),
                    "must be empty or one size per min size, each larger than it".into(),
                ));
            }
            let aspect_ratios = head.aspect_ratios[level].values();
            if aspect_ratios.iter().any(|&r| r.is_nan() || r <= 0.0) {
                return Err((format!("aspect_ratios[{level}]"), "must be positive".into()));
            }
            let step = head.steps.as_ref().map_or(0.0, |s| s[level]);
            priors.push(PriorBoxLevel {
                min_sizes: min.clone(),
                max_sizes: max.clone(),
                aspect_ratios,
                flip: head.flip,
                clip: false,
                step: [step, step],
                offset: head.offset,
                min_max_order: head.min_max_aspect_ratios_order,
            });
        }
        Ok(priors)
    }

    /// Checks a dataset's class names against `num_classes`; `from` says
    /// where the names come from (`DataSet::class_names_from`).
    pub fn check_num_classes(
        &self,
        config_path: &Path,
        names: &[String],
        from: &str,
    ) -> Result<()> {
        // SSD and Faster R-CNN count the background as class 0.
        let background = usize::from(self.arch() != Architecture::YOLOv3);
        if names.len() + background == self.num_classes {
            return Ok(());
        }
        Err(Error::at(
            config_path,
            "key num_classes",
            format!(
                "the config says {} classes{} but {from} names {} ({}); set -o num_classes={}",
                self.num_classes,
                if background == 1 {
                    " with the background"
                } else {
                    ""
                },
                names.len(),
                names.join(", "),
                names.len() + background
            ),
        ))
    }

    /// The reader used to evaluate, `EvalReader` else `TestReader`, with
    /// its key.
    pub fn eval_or_test_reader(&self) -> Option<(&'static str, &Reader)> {
        self.readers()
            .into_iter()
            .skip(1)
            .find_map(|(name, r)| Some((name, r?)))
    }

    /// `TrainReader`, `EvalReader` and `TestReader` with their keys.
    pub fn readers(&self) -> [(&'static str, Option<&Reader>); 3] {
        [
            ("TrainReader", Some(&self.train_reader)),
            ("EvalReader", self.eval_reader.as_ref()),
            ("TestReader", self.test_reader.as_ref()),
        ]
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
            // `Reader::load_dataset` asks for them for Mask R-CNN's training.
            with_polygons: false,
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
    /// Whether class 0 is the background (the dataset's classes from 1).
    pub fn with_background(&self) -> bool {
        match self {
            DataSet::COCODataSet(d) => d.with_background,
            DataSet::VOCDataSet(d) => d.with_background,
            DataSet::ImageFolder(d) => d.with_background,
        }
    }

    /// The kind, as configs write it.
    pub fn kind(&self) -> &'static str {
        match self {
            DataSet::COCODataSet(_) => "COCODataSet",
            DataSet::VOCDataSet(_) => "VOCDataSet",
            DataSet::ImageFolder(_) => "ImageFolder",
        }
    }

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
    /// file its `anno_path` names (else the default labels).
    pub fn class_names(&self) -> Result<Vec<String>> {
        let source = match self {
            DataSet::ImageFolder(_) => self.image_folder_labels(),
            _ => Some(self.source()?),
        };
        let names = match source {
            Some(DatasetSource::Voc(voc)) => voc.class_names(),
            Some(DatasetSource::Coco(coco)) => coco.load().map(|c| c.class_names),
            None => return Ok(DEFAULT_LABELS.iter().map(|s| s.to_string()).collect()),
        };
        names.map_err(|e| self.name_working_dir(e))
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
            DataSet::ImageFolder(_) => match self.image_folder_labels() {
                Some(DatasetSource::Coco(coco)) => coco.anno_file(),
                Some(DatasetSource::Voc(voc)) => voc.dataset_dir.join(&voc.label_list),
                None => return default_labels.into(),
            },
        };
        path.display().to_string()
    }

    /// Where an `ImageFolder` takes its class names, as PaddleDetection's
    /// inference does: the categories of a COCO file (`anno_path` ending
    /// `.json`; only its categories are used), else a label list, one name
    /// a line. `None` when it uses the default labels, and for the other
    /// datasets.
    pub fn image_folder_labels(&self) -> Option<DatasetSource> {
        let DataSet::ImageFolder(d) = self else {
            return None;
        };
        if d.use_default_label || d.anno_path.is_empty() {
            return None;
        }
        Some(if d.anno_path.ends_with(".json") {
            DatasetSource::Coco(CocoReader::from(&CocoDataSet {
                dataset_dir: d.dataset_dir.clone(),
                image_dir: d.image_dir.clone(),
                anno_path: d.anno_path.clone(),
                with_background: d.with_background,
                load_crowd: false,
                allow_empty: true,
            }))
        } else {
            DatasetSource::Voc(VocReader::from(&VocDataSet {
                dataset_dir: d.dataset_dir.clone(),
                anno_path: String::new(),
                use_default_label: false,
                label_list: d.anno_path.clone(),
                with_background: d.with_background,
            }))
        })
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

    /// Reads the dataset this reader names, with PaddleDetection's rules;
    /// `with_polygons`: each box's polygons too (a COCO dataset's, for
    /// training Mask R-CNN; `Config::check` refuses other datasets there).
    pub fn load_dataset(&self, with_polygons: bool) -> Result<Dataset> {
        let mut source = self.dataset_source()?;
        if let DatasetSource::Coco(coco) = &mut source {
            coco.with_polygons = with_polygons;
        }
        source.load().map_err(|e| self.dataset.name_working_dir(e))
    }

    /// The training pipeline: the per-sample transforms `sample_transforms`
    /// lists, in its order; batch sizes from `RandomShape` (else the
    /// `ResizeImage` size); mixup for `mixup_epoch` epochs; the decode order
    /// and normalisation the lists ask for; the boxes `arch`'s loss takes,
    /// with their polygons for a mask head. `file` names the config in
    /// errors.
    pub fn train_loader_config(
        &self,
        file: &Path,
        seed: u64,
        arch: Architecture,
    ) -> Result<LoaderConfig> {
        let pipeline = self.pipeline_for(file, "TrainReader", arch)?;
        let sizes = match (pipeline.random_shape.clone(), pipeline.resize) {
            (Some(shape), _) => shape,
            // The ResizeImage step made every picture this size already.
            (None, Some((size, _))) => RandomShapeParams {
                sizes: vec![size],
                random_interp: false,
            },
            // The R-CNN readers: each picture's own size (`short_side`).
            (None, None) => RandomShapeParams {
                sizes: Vec::new(),
                random_interp: false,
            },
        };
        let augment = TrainAugment {
            sample: pipeline.sample,
            mixup_epochs: self.mixup_epoch.max(0) as u64,
            sizes: sizes.sizes,
            random_interp: sizes.random_interp,
        };
        Ok(LoaderConfig {
            batch_size: self.batch_size,
            workers: self.worker_num.max(1),
            shuffle: self.shuffle,
            drop_last: self.drop_last,
            allow_empty: !self.drop_empty,
            max_boxes: pipeline.max_boxes,
            mode: Mode::Train(Box::new(augment)),
            to_rgb: pipeline.to_rgb,
            normalize: pipeline.normalize,
            short_side: pipeline.short_side,
            with_polygons: arch.has_masks(),
            ..LoaderConfig::train(self.batch_size, seed)
        })
    }

    /// The evaluation pipeline: every image once, resized as `ResizeImage`
    /// says (`short_side` for the R-CNN reader's architectures), decoded
    /// and normalised as the lists say. `reader` is the reader's key (`EvalReader` or
    /// `TestReader`) for errors.
    pub fn eval_loader_config(
        &self,
        file: &Path,
        reader: &str,
        arch: Architecture,
    ) -> Result<LoaderConfig> {
        let pipeline = self.pipeline_for(file, reader, arch)?;
        let (size, interp) = match (&pipeline.resize, &pipeline.short_side) {
            (Some(square), _) => *square,
            // Not read: `short_side` sizes each picture.
            (None, Some(resize)) => (0, resize.interp),
            (None, None) => {
                unreachable!("pipeline_for() requires a ResizeImage outside a TrainReader")
            }
        };
        Ok(LoaderConfig {
            workers: self.worker_num.max(1),
            shuffle: self.shuffle,
            drop_last: self.drop_last,
            mode: Mode::Eval { size, interp },
            to_rgb: pipeline.to_rgb,
            normalize: pipeline.normalize,
            short_side: pipeline.short_side,
            ..LoaderConfig::eval(self.batch_size)
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::config::Transform;
    use crate::data::transforms::normalize::ChannelNorm;
    use crate::data::transforms::resize::Interp;
    use crate::data::transforms::SampleAugment;

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
        assert_eq!(
            (train.optimizer, train.weight_decay),
            (Optimizer::Momentum { momentum: 0.9 }, 5e-4)
        );
        assert_eq!(config.yolo_config(), YoloConfig::yolov3(20));
        assert_eq!(config.nms_config(), NmsConfig::yolov3());
        let file = Path::new("yolov3_mobilenet_v1_voc.ron");
        let loader = config
            .train_reader
            .train_loader_config(file, 3, Architecture::YOLOv3)
            .unwrap();
        assert_eq!(loader.batch_size, 8);
        assert!(loader.shuffle && loader.drop_last);
        assert!(loader.to_rgb);
        assert_eq!(loader.normalize, ChannelNorm::imagenet());
        let Mode::Train(augment) = &loader.mode else {
            panic!("training mode")
        };
        assert_eq!(augment.sizes, (320..=608).step_by(32).collect::<Vec<_>>());
        assert_eq!(augment.sample, SampleAugment::yolov3());
        let (name, reader) = config.eval_or_test_reader().unwrap();
        assert_eq!(name, "EvalReader");
        let eval = reader
            .eval_loader_config(file, name, Architecture::YOLOv3)
            .unwrap();
        assert_eq!(eval.normalize, ChannelNorm::imagenet());
        assert!(!eval.shuffle && !eval.drop_last);
        let mut in_order = config.train_reader.clone();
        (in_order.shuffle, in_order.drop_last) = (false, false);
        let loader = in_order
            .train_loader_config(file, 3, Architecture::YOLOv3)
            .unwrap();
        assert!(!loader.shuffle && !loader.drop_last);
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
        let file = Path::new("demo.ron");
        let Mode::Train(augment) = config
            .train_reader
            .train_loader_config(file, 0, Architecture::YOLOv3)
            .unwrap()
            .mode
        else {
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
        let mut never = config.train_reader.clone();
        never.mixup_epoch = -1;
        let Mode::Train(augment) = never
            .train_loader_config(file, 0, Architecture::YOLOv3)
            .unwrap()
            .mode
        else {
            panic!("training mode")
        };
        assert_eq!(augment.mixup_epochs, 0);
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
                with_polygons: false,
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

    proptest! {
        /// Without size lists, `multi_box_head`'s sizes: 10% and 20% of
        /// base_size at level 0, then equal ratio steps, each level's max
        /// the next level's min. A level's size written as a number or as a
        /// one-element list is the same prior.
        #[test]
        fn prior_sizes_follow_the_ratios_or_the_lists(
            min_ratio in 1i64..60, span in 4i64..120, base in 100f32..600.0,
            sizes in proptest::collection::vec(10f32..200.0, 6),
            extra in proptest::collection::vec(1f32..100.0, 6),
        ) {
            use crate::config::{MultiBoxHead, PerLevel};
            let mut config = shipped("ssd_mobilenet_v1_voc.ron");
            let with_head = |config: &mut Config, head: MultiBoxHead| {
                config.multi_box_head = Some(head);
                config.ssd_spec().priors
            };
            let head = MultiBoxHead {
                min_sizes: None,
                max_sizes: None,
                min_ratio,
                max_ratio: min_ratio + span,
                base_size: base,
                ..MultiBoxHead::default()
            };
            let priors = with_head(&mut config, head.clone());
            prop_assert_eq!(priors.len(), 6);
            prop_assert_eq!(&priors[0].min_sizes, &vec![base * 0.1]);
            prop_assert_eq!(&priors[0].max_sizes, &vec![base * 0.2]);
            prop_assert_eq!(priors[1].min_sizes[0], base * min_ratio as f32 / 100.0);
            for level in 1..5 {
                prop_assert_eq!(&priors[level].max_sizes, &priors[level + 1].min_sizes);
                prop_assert!(priors[level].min_sizes[0] < priors[level + 1].min_sizes[0]);
            }
            let maxes: Vec<f32> = sizes.iter().zip(&extra).map(|(s, e)| s + e).collect();
            let as_numbers = with_head(&mut config, MultiBoxHead {
                min_sizes: Some(sizes.iter().map(|&s| PerLevel::One(s)).collect()),
                max_sizes: Some(maxes.iter().map(|&s| PerLevel::One(s)).collect()),
                ..head.clone()
            });
            let as_lists = with_head(&mut config, MultiBoxHead {
                min_sizes: Some(sizes.iter().map(|&s| PerLevel::List(vec![s])).collect()),
                max_sizes: Some(maxes.iter().map(|&s| PerLevel::List(vec![s])).collect()),
                ..head
            });
            prop_assert_eq!(&as_numbers, &as_lists);
            for (level, prior) in as_numbers.iter().enumerate() {
                prop_assert_eq!(&prior.min_sizes, &vec![sizes[level]]);
                prop_assert_eq!(&prior.max_sizes, &vec![maxes[level]]);
                prop_assert!(!prior.clip);
            }
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
        let err = demo.train_reader.load_dataset(false).unwrap_err();
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
