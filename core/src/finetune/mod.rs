//! A whole fine-tuning run, as PaddleDetection's `tools/train.py` does it:
//! read the datasets, build the model, apply the transfer-learning loading
//! rules to the pretrained weights, then train with snapshots, optional
//! evaluation at each snapshot (keeping the best model), resumption from a
//! snapshot, and loss/mAP curves in the save directory.
//!
//! The caller sees progress through [`Event`]s (the CLI draws its progress
//! bar from them) and can stop the run between steps with the stop flag
//! (Ctrl-C), which writes a snapshot first.
//!
//! Everything here is generic over the [`Backend`] the caller passes (the CLI
//! picks the CPU or the GPU once, from `--device`): the model's tensors live
//! on that backend, and whatever needs host data (the loss, snapshots, the
//! loading rules, the metrics) goes through the model's own downloads and
//! uploads.

mod curves;
pub mod demo;
pub mod evaluate;
pub mod predict;
pub mod snapshot;
pub mod weights;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pulsefocus_formats::dataset::Dataset;
use pulsefocus_formats::weights_source::Download;
use pulsefocus_formats::{Error, Result};

use crate::backend::Backend;
use crate::config::{Config, DataSet};
use crate::data::loader::Loader;
use crate::detector::{Detector, Losses, ModelSpec};
use crate::loading::{apply_loaded, plan_for_config, LoadReport};
use crate::metrics::voc::ApType;
use crate::models::{FasterRcnnDetector, RetinaNetDetector, SsdDetector, Yolov3, Yolov3Detector};
use crate::train::Trainer;
use crate::yolo::GroundTruth;
use curves::Curves;
pub use evaluate::{evaluate, EvalResult, Metric};
pub use snapshot::SnapshotPaths;

#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Seeds the initial weights, the shuffling and every augmentation.
    pub seed: u64,
    /// Evaluate at every snapshot and keep `best_model`.
    pub eval: bool,
    /// Continue from this snapshot (`-r`).
    pub resume: Option<PathBuf>,
    /// Where downloaded pretrained weights are cached.
    pub weights_cache: PathBuf,
    /// The starting model's mAP, when the caller measured it (the demo
    /// does): the mAP curve's point at iteration 0.
    pub start_map: Option<f64>,
    /// Set (by Ctrl-C) to stop after the current step with a snapshot.
    pub stop: Arc<AtomicBool>,
}

/// What the run reports as it goes.
#[derive(Debug)]
pub enum Event<'a> {
    /// How the download of the pretrained weights goes (a URL not yet cached).
    Download(Download<'a>),
    /// The loading rules' outcome, before the first step.
    Loaded(&'a LoadReport),
    /// Training records read, and the bytes the step's buffers hold.
    Ready {
        train_images: usize,
        eval_images: Option<usize>,
        planned_bytes: usize,
        start_iteration: u64,
    },
    Step {
        /// 1-based: the number of updates done.
        iteration: u64,
        max_iters: u64,
        loss: Losses,
        learning_rate: f32,
        images_per_second: f64,
        /// The share of this run's time spent waiting for the data loader
        /// (PaddleDetection's `reader_cost` over `batch_cost`): near 0 when
        /// the input pipeline keeps up with training.
        data_wait: f64,
    },
    Snapshot(&'a SnapshotPaths),
    Evaluated {
        iteration: u64,
        result: &'a EvalResult,
        best: bool,
    },
}

#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub save_dir: PathBuf,
    pub final_snapshot: SnapshotPaths,
    pub iterations: u64,
    /// Stopped early by the stop flag.
    pub interrupted: bool,
    pub last_loss: Option<Losses>,
    /// The last evaluation, when `eval` was on.
    pub last_eval: Option<EvalResult>,
    /// The best evaluation, `(iteration, mAP)`, this run's or (resumed)
    /// the earlier run's: the one `best_model` holds.
    pub best_map: Option<(u64, f64)>,
    pub loss_curve: PathBuf,
}

/// The save directory of a config: `save_dir/<config file stem>`, as
/// PaddleDetection names it.
pub fn save_dir(config_path: &Path, config: &Config) -> PathBuf {
    let stem = config_path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    Path::new(&config.save_dir).join(stem)
}

/// The metric the config asks for, on the evaluation dataset.
pub fn metric_for(config: &Config, config_path: &Path) -> Result<Metric> {
    match config.metric.as_str() {
        "VOC" => Ok(Metric::Voc {
            ap_type: if config.map_type == "integral" {
                ApType::Area
            } else {
                ApType::ElevenPoint
            },
            evaluate_difficult: false,
            max_ground_truth: match config.eval_or_test_reader() {
                Some((name, reader)) => {
                    let pipeline = reader.pipeline_for(config_path, name, config.arch())?;
                    pipeline.pad_box.then_some(pipeline.max_boxes)
                }
                None => None,
            },
        }),
        "COCO" => match config.eval_or_test_reader().map(|(_, r)| &r.dataset) {
            Some(DataSet::COCODataSet(d)) => Ok(Metric::Coco {
                annotations: Path::new(&d.dataset_dir).join(&d.anno_path),
            }),
            _ => Err(Error::at(
                config_path,
                "key metric",
                "the COCO metric needs a COCODataSet in EvalReader",
            )),
        },
        other => Err(Error::at(
            config_path,
            "key metric",
            format!("unknown metric '{other}' (VOC or COCO)"),
        )),
    }
}

/// Reads a reader's dataset and checks it can be used with this config.
pub fn load_dataset_for(config: &Config, config_path: &Path, which: &str) -> Result<Dataset> {
    let reader = match which {
        "TrainReader" => Some(&config.train_reader),
        _ => config.eval_or_test_reader().map(|(_, r)| r),
    }
    .ok_or_else(|| Error::at(config_path, which, "missing: no dataset to evaluate on"))?;
    // Mask R-CNN trains on the polygons; evaluation reads the masks from
    // the annotation file itself (`Metric::Coco`).
    let polygons = which == "TrainReader" && config.arch().has_masks();
    let dataset = reader.load_dataset(polygons)?;
    let anno = dataset_file(&reader.dataset);
    if dataset.records.is_empty() {
        return Err(Error::new(
            &anno,
            format!("{which}: the dataset has no usable images (see the warnings above, or run `pulsefocus dataset check`)"),
        ));
    }
    config.check_num_classes(
        config_path,
        &dataset.class_names,
        &reader.dataset.class_names_from(),
    )?;
    Ok(dataset)
}

fn dataset_file(dataset: &DataSet) -> PathBuf {
    match dataset {
        DataSet::COCODataSet(d) => Path::new(&d.dataset_dir).join(&d.anno_path),
        DataSet::VOCDataSet(d) => Path::new(&d.dataset_dir).join(&d.anno_path),
        DataSet::ImageFolder(d) => Path::new(&d.dataset_dir).join(&d.image_dir),
    }
}

fn with_background(dataset: &DataSet) -> bool {
    match dataset {
        DataSet::COCODataSet(d) => d.with_background,
        DataSet::VOCDataSet(d) => d.with_background,
        DataSet::ImageFolder(d) => d.with_background,
    }
}

/// The detector `config` describes, on `backend`, with fresh weights drawn
/// from `seed` and the config's loss and output settings.
pub fn build_detector<B: Backend>(backend: &B, config: &Config, seed: u64) -> Box<dyn Detector<B>> {
    match config.model_spec() {
        ModelSpec::Yolov3(spec) => {
            let mut detector = Yolov3Detector::new(Yolov3::new(backend, spec, seed));
            detector.loss = config.yolo_config();
            detector.nms = config.nms_config();
            Box::new(detector)
        }
        ModelSpec::Ssd(spec) => {
            let mut detector = SsdDetector::new(backend, spec, seed);
            detector.nms = config.ssd_nms_config();
            Box::new(detector)
        }
        ModelSpec::FasterRcnn(spec) => {
            let rcnn = config
                .rcnn_config(Path::new(""))
                .expect("check() read the Faster R-CNN sections");
            Box::new(FasterRcnnDetector::new(backend, *spec, rcnn, seed))
        }
        ModelSpec::MaskRcnn(spec) => {
            let rcnn = config
                .rcnn_config(Path::new(""))
                .expect("check() read the Mask R-CNN sections");
            Box::new(FasterRcnnDetector::with_mask_head(
                backend, *spec, rcnn, seed,
            ))
        }
        ModelSpec::CascadeRcnn(spec) => {
            let rcnn = config
                .rcnn_config(Path::new(""))
                .expect("check() read the Cascade R-CNN sections");
            Box::new(FasterRcnnDetector::cascade(backend, *spec, rcnn, seed))
        }
        ModelSpec::RetinaNet(spec) => {
            let retina = config
                .retina_config(Path::new(""))
                .expect("check() read the RetinaNet sections");
            Box::new(RetinaNetDetector::new(backend, *spec, retina, seed))
        }
    }
}

/// The model a fine-tune starts from: fresh weights drawn from `seed` with the
/// config's `pretrain_weights` loaded over them by the loading rules (excluded
/// and mismatched parameters keep their fresh values), and the rules' report.
/// `on_download` hears how a download of the weights goes.
pub fn start_model<B: Backend>(
    backend: &B,
    config_path: &Path,
    config: &Config,
    weights_cache: &Path,
    seed: u64,
    on_download: &mut dyn FnMut(Download),
) -> Result<(Box<dyn Detector<B>>, LoadReport)> {
    let mut model = build_detector(backend, config, seed);
    let (report, pretrained) = plan_for_config(config_path, config, weights_cache, on_download)?;
    if let Some(pretrained) = &pretrained {
        apply_loaded(&report, &pretrained.checkpoint, model.net_mut())
            .map_err(|e| Error::new(&pretrained.path, e.to_string()))?;
    }
    Ok((model, report))
}

/// Evaluates `model` on the config's evaluation dataset.
pub fn evaluate_config<B: Backend>(
    model: &mut dyn Detector<B>,
    config: &Config,
    config_path: &Path,
    dataset: &Dataset,
) -> Result<EvalResult> {
    let (name, reader) = config
        .eval_or_test_reader()
        .ok_or_else(|| Error::at(config_path, "EvalReader", "missing"))?;
    evaluate(
        model,
        config.model_spec().foreground_classes(),
        dataset,
        reader.eval_loader_config(config_path, name, config.arch())?,
        &metric_for(config, config_path)?,
        with_background(&reader.dataset),
    )
}

/// Runs the whole fine-tune on `backend`.
pub fn train<B: Backend>(
    backend: &B,
    config_path: &Path,
    config: &Config,
    options: &TrainOptions,
    on_event: &mut dyn FnMut(Event),
) -> Result<TrainSummary> {
    let train_set = load_dataset_for(config, config_path, "TrainReader")?;
    let eval_set = if options.eval {
        metric_for(config, config_path)?;
        Some(load_dataset_for(config, config_path, "EvalReader")?)
    } else {
        None
    };
    let save_dir = save_dir(config_path, config);
    std::fs::create_dir_all(&save_dir).map_err(|e| Error::io(&save_dir, e))?;

    let (model, report) = start_model(
        backend,
        config_path,
        config,
        &options.weights_cache,
        options.seed,
        &mut |d| on_event(Event::Download(d)),
    )?;
    on_event(Event::Loaded(&report));
    // The device reports a failure (out of memory, say) where a command can
    // stop cleanly: after building the model, planning and each step.
    let device_failed = |e: crate::backend::DeviceError| Error::new(&save_dir, e.to_string());
    backend.check().map_err(device_failed)?;

    let loss_names = model.loss_names();
    let mut trainer = Trainer::new(model, config.train_config());
    let mut seed = options.seed;
    if let Some(resume) = &options.resume {
        let paths = SnapshotPaths::from_stem(resume);
        let (_, saved_seed) = snapshot::restore(&mut trainer, &paths)?;
        // The batches after the snapshot are those of the original run.
        seed = saved_seed.unwrap_or(seed);
    }
    let start = trainer.step;
    let max_iters = config.max_iters as u64;

    let loader_config =
        config
            .train_reader
            .train_loader_config(config_path, seed, config.arch())?;
    let largest = match (&loader_config.short_side, &loader_config.mode) {
        // The R-CNN readers: no picture is longer than `max_size`, padded.
        (Some(resize), _) => {
            resize
                .padded_size(std::iter::once((resize.max_size, resize.max_size)))
                .0
        }
        (None, crate::data::loader::Mode::Train(a)) => a.sizes.iter().copied().max().unwrap_or(608),
        (None, crate::data::loader::Mode::Eval { size, .. }) => *size,
    };
    let planned_bytes = trainer.plan(loader_config.batch_size, largest);
    backend.check().map_err(device_failed)?;
    on_event(Event::Ready {
        train_images: train_set.records.len(),
        eval_images: eval_set.as_ref().map(|d| d.records.len()),
        planned_bytes,
        start_iteration: start,
    });

    let records = Arc::new(train_set.records);
    let mut loader = Loader::from_batch(records, loader_config, start)?;
    let snapshot_iter = config.snapshot_iter.max(1) as u64;
    // A resumed run continues the curves of the run it resumes.
    let mut curves = if options.resume.is_some() {
        Curves::read(&save_dir, loss_names, start)?
    } else {
        let mut curves = Curves::new(loss_names);
        if let Some(map) = options.start_map {
            curves.push_map(0, map);
        }
        curves
    };
    // The snapshot resumed from is the last good one until this run writes one.
    let mut last_good: Option<SnapshotPaths> =
        options.resume.as_deref().map(SnapshotPaths::from_stem);
    let mut last_loss = None;
    let mut last_eval = None;
    // A resumed run competes with the evaluations it continues, so that
    // `best_model` is replaced only by a better one.
    let mut best_map = curves.best_map();
    let mut interrupted = false;
    let started = Instant::now();
    let mut waited = Duration::ZERO;

    while trainer.step < max_iters {
        let wait_started = Instant::now();
        let batch = loader
            .next()
            .ok_or_else(|| Error::new(&save_dir, "the training loader stopped early"))??;
        waited += wait_started.elapsed();
        trainer.model.net_mut().set_training(true);
        let gt = GroundTruth {
            boxes: &batch.gt_boxes,
            labels: &batch.gt_classes,
            scores: Some(&batch.gt_scores),
            max_boxes: batch.max_boxes,
            polygons: &batch.gt_polys,
        };
        let step = trainer.step(
            &batch.images,
            batch.n,
            [batch.h, batch.w],
            &gt,
            &batch.im_info,
        );
        backend.check().map_err(device_failed)?;
        let iteration = trainer.step;
        let diverged = |what: String| {
            let kept = last_good
                .as_ref()
                .map(|p| format!("the last good snapshot is {}", p.params.display()))
                .unwrap_or_else(|| "no snapshot was written yet".into());
            Error::new(
                &save_dir,
                format!(
                    "{what} at iteration {iteration} (learning rate {}); stopping: {kept}. Try a lower LearningRate.base_lr",
                    step.learning_rate
                ),
            )
        };
        if !step.loss.total().is_finite() {
            curves.write(&save_dir)?;
            return Err(diverged(format!("the loss became {}", step.loss.total())));
        }
        let done = iteration - start;
        let elapsed = started.elapsed().as_secs_f64().max(1e-9);
        let images_per_second = (done as usize * batch.n) as f64 / elapsed;
        on_event(Event::Step {
            iteration,
            max_iters,
            loss: step.loss,
            learning_rate: step.learning_rate,
            images_per_second,
            data_wait: waited.as_secs_f64() / elapsed,
        });
        curves.push_loss(iteration, &step.loss);
        last_loss = Some(step.loss);

        let stop = options.stop.load(Ordering::Relaxed);
        if iteration.is_multiple_of(snapshot_iter) || iteration == max_iters || stop {
            // The loss above is that of the weights before this step's
            // update; an update that overflowed shows only in the weights,
            // and a snapshot of them would not be a good one.
            if let Some(name) = snapshot::first_non_finite(&trainer) {
                curves.write(&save_dir)?;
                return Err(diverged(format!("the weight {name} became non-finite")));
            }
            let paths = if iteration == max_iters {
                SnapshotPaths::from_stem(&save_dir.join("model_final"))
            } else {
                SnapshotPaths::from_stem(&save_dir.join(iteration.to_string()))
            };
            snapshot::save(&trainer, &paths, seed)?;
            on_event(Event::Snapshot(&paths));
            last_good = Some(paths);
            if let Some(eval_set) = &eval_set {
                let result =
                    evaluate_config(trainer.model.as_mut(), config, config_path, eval_set)?;
                let best = best_map.is_none_or(|(_, b)| result.map > b);
                if best {
                    best_map = Some((iteration, result.map));
                    snapshot::save(
                        &trainer,
                        &SnapshotPaths::from_stem(&save_dir.join("best_model")),
                        seed,
                    )?;
                }
                on_event(Event::Evaluated {
                    iteration,
                    result: &result,
                    best,
                });
                curves.push_map(iteration, result.map);
                last_eval = Some(result);
            }
            curves.write(&save_dir)?;
        }
        if stop {
            interrupted = true;
            break;
        }
    }
    curves.write(&save_dir)?;
    // Resumed at or past max_iters, nothing was trained: the snapshot resumed
    // from is the final one.
    let final_snapshot =
        last_good.unwrap_or_else(|| SnapshotPaths::from_stem(&save_dir.join("model_final")));
    Ok(TrainSummary {
        loss_curve: save_dir.join("loss.svg"),
        save_dir,
        final_snapshot,
        iterations: trainer.step,
        interrupted,
        last_loss,
        last_eval,
        best_map,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PaddleDetection's VOC evaluation scores against the boxes PadBox kept.
    #[test]
    fn voc_metric_scores_against_the_eval_readers_padded_boxes() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/demo.ron");
        let mut config = crate::config::load(&path, &[]).unwrap();
        let limit = |config: &Config| match metric_for(config, &path).unwrap() {
            Metric::Voc {
                max_ground_truth, ..
            } => max_ground_truth,
            other => panic!("{other:?}"),
        };
        assert_eq!(limit(&config), Some(50));
        let eval = config.eval_reader.as_mut().unwrap();
        eval.sample_transforms
            .retain(|t| !matches!(t, crate::config::Transform::PadBox(_)));
        assert_eq!(limit(&config), None);
    }

    /// Mask R-CNN trains on each box's polygons: the training dataset is
    /// read with them and every batch carries them, one list per box; the
    /// evaluation dataset is read without (the metric reads the file).
    #[test]
    fn mask_rcnn_training_reads_the_polygons_into_the_batches() {
        use pulsefocus_formats::synth::{self, SynthConfig, SynthFormat};
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("shapes");
        let synth_config = SynthConfig {
            images: 10,
            size: 64,
            classes: 3,
            format: SynthFormat::Coco,
            ..SynthConfig::default()
        };
        synth::write(&data, &synth_config).unwrap();
        let base =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/mask_rcnn_r50_fpn_1x.ron");
        let dataset = |split: &str| {
            format!(
                r#"dataset: COCODataSet(dataset_dir: "{}", image_dir: "JPEGImages", anno_path: "annotations/instances_{split}.json")"#,
                data.display()
            )
        };
        let path = dir.path().join("mask.ron");
        std::fs::write(
            &path,
            format!(
                r#"(_BASE_: ["{}"], num_classes: 4, TrainReader: ({}, batch_size: 2), EvalReader: ({}))"#,
                base.display(),
                dataset("train"),
                dataset("val")
            ),
        )
        .unwrap();
        let config = crate::config::load(&path, &[]).unwrap();
        let train = load_dataset_for(&config, &path, "TrainReader").unwrap();
        assert_eq!(train.records.len(), 8);
        for record in &train.records {
            assert_eq!(record.polygons.len(), record.objects.len());
            assert!(record.polygons.iter().all(|p| !p.is_empty()));
        }
        let eval = load_dataset_for(&config, &path, "EvalReader").unwrap();
        assert!(eval.records.iter().all(|r| r.polygons.is_empty()));

        let loader_config = config
            .train_reader
            .train_loader_config(&path, 0, config.arch())
            .unwrap();
        let records = Arc::new(train.records);
        let mut loader = Loader::from_batch(records.clone(), loader_config, 0).unwrap();
        let batch = loader.next().unwrap().unwrap();
        assert_eq!(batch.gt_polys.len(), 2);
        for (i, polys) in batch.gt_polys.iter().enumerate() {
            let record = &records[batch.record_indices[i]];
            assert_eq!(polys.len(), record.objects.len());
            assert!(polys.iter().all(|p| !p.is_empty()));
        }
    }
}
