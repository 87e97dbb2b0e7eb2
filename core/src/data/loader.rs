//! Worker threads that turn records into batches, ahead of the trainer.
//!
//! Batches are numbered across epochs (`global = epoch * per_epoch + step`).
//! Worker `k` of `W` builds batches `first + k, first + k + W, ...` and sends
//! each into its own bounded channel; the consumer reads the channels in
//! turn, so batches arrive in order and at most `W * (prefetch + 1)` batches
//! exist at any time, whatever the dataset size. Every random choice comes
//! from generators keyed by `(seed, epoch, step or record index)`, so the
//! batches are the same for any number of workers.
//!
//! Dropping the loader stops the workers: their next send fails (or they
//! see the stop flag between images) and they are joined.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use pulsefocus_formats::dataset::Record;
use pulsefocus_formats::image::decode_file;
use pulsefocus_formats::{Error, Result};

use super::batch::Batch;
use super::rng::Rng;
use super::sample::Sample;
use super::transforms::normalize::ChannelNorm;
use super::transforms::resize::{random_shape, Interp, ShortSideScale, EVAL_SIZE, TRAIN_SIZES};
use super::transforms::targets::MAX_BOXES;
use super::transforms::{augment, Augment, SampleAugment};

/// Independent random streams, so adding draws to one never shifts another.
const SHUFFLE_STREAM: u64 = 1;
const SHAPE_STREAM: u64 = 2;
const SAMPLE_STREAM: u64 = 3;

/// The training augmentation settings of a reader.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainAugment {
    /// The per-sample augmentations and their parameters.
    pub sample: SampleAugment,
    /// Mixup (when `sample` has it) is used in epochs `0..mixup_epochs`.
    pub mixup_epochs: u64,
    /// One is drawn per batch.
    pub sizes: Vec<usize>,
    /// Draw the interpolation per batch (else nearest).
    pub random_interp: bool,
}

impl Default for TrainAugment {
    /// PaddleDetection's YOLOv3 reader.
    fn default() -> Self {
        TrainAugment {
            sample: SampleAugment::yolov3(),
            mixup_epochs: 250,
            sizes: TRAIN_SIZES.to_vec(),
            random_interp: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// The reader's augmentations (`TrainAugment`), a random size per batch.
    Train(Box<TrainAugment>),
    /// Resize only (to `size` x `size`).
    Eval { size: usize, interp: Interp },
}

/// The R-CNN readers' ResizeImage with `max_size` and their PadBatch: each
/// picture keeps its aspect ratio, and the batch is as large as its
/// largest picture, rounded up to a multiple of `pad_to_stride`.
#[derive(Debug, Clone, PartialEq)]
pub struct ShortSideResize {
    /// The shorter side; one is drawn per image when there are several.
    pub target_sizes: Vec<usize>,
    /// The longer side's cap.
    pub max_size: usize,
    /// OpenCV's nearest, linear or cubic.
    pub interp: Interp,
    /// PadBatch's `pad_to_stride` (1: to the largest picture).
    pub pad_to_stride: usize,
    /// PadBatch's `use_padded_im_info`.
    pub padded_im_info: bool,
}

impl ShortSideResize {
    /// The batch size for pictures of these (width, height).
    pub fn padded_size(&self, sizes: impl Iterator<Item = (usize, usize)>) -> (usize, usize) {
        let (w, h) = sizes.fold((0, 0), |(w, h), (a, b)| (w.max(a), h.max(b)));
        let stride = self.pad_to_stride.max(1);
        (w.div_ceil(stride) * stride, h.div_ceil(stride) * stride)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LoaderConfig {
    pub batch_size: usize,
    /// Worker threads (at least 1).
    pub workers: usize,
    /// Finished batches each worker may queue ahead.
    pub prefetch: usize,
    pub seed: u64,
    /// Reorder the records every epoch.
    pub shuffle: bool,
    /// Leave out the last, smaller batch of an epoch.
    pub drop_last: bool,
    /// Keep records without boxes (PaddleDetection's training reader drops them).
    pub allow_empty: bool,
    /// Box slots per image; boxes beyond are dropped. 0: as many as the
    /// records used have at most (the R-CNN readers, which keep every box
    /// and never add any).
    pub max_boxes: usize,
    pub mode: Mode,
    /// DecodeImage's `to_rgb`: false keeps OpenCV's BGR order, so every
    /// later transform sees blue first.
    pub to_rgb: bool,
    /// NormalizeImage and Permute, in the reader's order.
    pub normalize: ChannelNorm,
    /// Given: the R-CNN readers' resize and padding, in place of the square
    /// size `mode` names (its augmentations still run).
    pub short_side: Option<ShortSideResize>,
    /// Carry each box's polygons (`Record::polygons`, read with the COCO
    /// reader's `with_polygons`) into `Batch::gt_polys`, as PaddleDetection
    /// 0.x's Mask R-CNN readers carry `gt_poly` into `gt_mask`. Needs
    /// `short_side` and no augmentation that moves pixels but the flip.
    pub with_polygons: bool,
}

impl LoaderConfig {
    /// PaddleDetection's YOLOv3 training reader.
    pub fn train(batch_size: usize, seed: u64) -> LoaderConfig {
        LoaderConfig {
            batch_size,
            workers: 2,
            prefetch: 2,
            seed,
            shuffle: true,
            drop_last: true,
            allow_empty: false,
            max_boxes: MAX_BOXES,
            mode: Mode::Train(Box::default()),
            to_rgb: true,
            normalize: ChannelNorm::imagenet(),
            short_side: None,
            with_polygons: false,
        }
    }

    /// PaddleDetection's YOLOv3 evaluation reader: every image once, in
    /// order, resized to 608 with bicubic interpolation.
    pub fn eval(batch_size: usize) -> LoaderConfig {
        LoaderConfig {
            batch_size,
            workers: 2,
            prefetch: 2,
            seed: 0,
            shuffle: false,
            drop_last: false,
            allow_empty: true,
            max_boxes: MAX_BOXES,
            mode: Mode::Eval {
                size: EVAL_SIZE,
                interp: Interp::Cubic,
            },
            to_rgb: true,
            normalize: ChannelNorm::imagenet(),
            short_side: None,
            with_polygons: false,
        }
    }
}

/// What every worker needs to build any batch.
struct Plan {
    records: Arc<Vec<Record>>,
    /// Indices into `records` of the records this loader uses.
    used: Vec<usize>,
    config: LoaderConfig,
    batches_per_epoch: u64,
}

impl Plan {
    /// Positions into `used`, in the order of `epoch`.
    fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.used.len()).collect();
        if self.config.shuffle {
            Rng::derive(self.config.seed, &[SHUFFLE_STREAM, epoch]).shuffle(&mut order);
        }
        order
    }

    fn load(&self, index: usize) -> Result<(Sample, [u32; 2])> {
        let record = &self.records[index];
        let image = decode_file(&record.image_path)?;
        let mut sample = Sample::new(&image, record);
        if self.config.with_polygons {
            sample.polygons = Some(record.polygons.clone());
        }
        if !self.config.to_rgb {
            sample.reverse_channels();
        }
        Ok((sample, [image.width, image.height]))
    }

    /// Builds batch number `global`; `order` caches the current epoch's order.
    fn build(
        &self,
        global: u64,
        order: &mut Option<(u64, Vec<usize>)>,
        stop: &AtomicBool,
    ) -> Result<Batch> {
        let epoch = global / self.batches_per_epoch;
        let step = global % self.batches_per_epoch;
        if order.as_ref().is_none_or(|(e, _)| *e != epoch) {
            *order = Some((epoch, self.epoch_order(epoch)));
        }
        let order = &order.as_ref().expect("just set").1;
        let bs = self.config.batch_size;
        let start = step as usize * bs;
        let positions = &order[start..(start + bs).min(order.len())];
        let seed = self.config.seed;
        let mut samples = Vec::with_capacity(positions.len());
        let n = self.used.len();
        for &pos in positions {
            if stop.load(Ordering::Relaxed) {
                return Err(Error::new("data loader", "stopped"));
            }
            let index = self.used[pos];
            let (mut sample, original_size) = self.load(index)?;
            let mut rng = Rng::derive(seed, &[SAMPLE_STREAM, epoch, index as u64]);
            if let Mode::Train(aug) = &self.config.mode {
                // PaddleDetection's partner: a uniformly drawn other record.
                let partner = if aug.sample.has_mixup() && epoch < aug.mixup_epochs && n > 1 {
                    let other = self.used[(pos + 1 + rng.below(n as u64 - 1) as usize) % n];
                    Some(self.load(other)?.0)
                } else {
                    None
                };
                augment(&mut sample, partner, &aug.sample, &mut rng);
            }
            samples.push((sample, index, original_size, rng));
        }
        let mut scratch = Vec::new();
        if let Some(resize) = &self.config.short_side {
            // ResizeImage after the augmentations, its size drawn per image.
            let shapes: Vec<ShortSideScale> = samples
                .iter_mut()
                .map(|(sample, _, _, rng)| {
                    let sizes = &resize.target_sizes;
                    let target = sizes[rng.below(sizes.len() as u64) as usize];
                    ShortSideScale::new(sample.width(), sample.height(), target, resize.max_size)
                })
                .collect();
            let (w, h) = resize.padded_size(shapes.iter().map(|s| (s.w, s.h)));
            let mut batch = Batch::new(samples.len(), w, h, self.config.max_boxes, epoch, step);
            for ((sample, index, original_size, _), shape) in samples.iter().zip(&shapes) {
                batch.put_short_side(
                    sample,
                    shape,
                    resize.interp,
                    resize.padded_im_info,
                    &self.config.normalize,
                    *index,
                    *original_size,
                    &mut scratch,
                );
            }
            return Ok(batch);
        }
        let (size, interp) = match &self.config.mode {
            Mode::Train(aug) => random_shape(
                &aug.sizes,
                aug.random_interp,
                &mut Rng::derive(seed, &[SHAPE_STREAM, epoch, step]),
            ),
            Mode::Eval { size, interp } => (*size, *interp),
        };
        let mut batch = Batch::new(
            samples.len(),
            size,
            size,
            self.config.max_boxes,
            epoch,
            step,
        );
        for (sample, index, original_size, _) in &samples {
            batch.put(
                sample,
                interp,
                &self.config.normalize,
                *index,
                *original_size,
                &mut scratch,
            );
        }
        Ok(batch)
    }
}

/// `with_polygons` keeps polygons in the original picture's pixels, so the
/// batch must keep `im_info`'s scale to it (the R-CNN resize) and only the
/// flip, which moves polygons with the picture, may change geometry; and
/// every record must have been read with its polygons.
fn check_polygon_pipeline(config: &LoaderConfig, records: &[Record], used: &[usize]) -> Result<()> {
    let invalid = |msg: String| Err(Error::new("data loader", msg));
    if config.short_side.is_none() {
        return invalid("with_polygons needs the R-CNN resize (short_side): polygons stay in original pixels, mapped by im_info's scale".into());
    }
    if let Mode::Train(aug) = &config.mode {
        for step in &aug.sample.steps {
            let keeps_polygons = matches!(
                step,
                Augment::Flip(_) | Augment::ColorDistort(_) | Augment::RandomDistort(_)
            );
            if !keeps_polygons {
                return invalid(format!(
                    "with_polygons: {step:?} would move the boxes away from their polygons (only flips and colour changes follow them)"
                ));
            }
        }
    }
    for &i in used {
        let record = &records[i];
        if record.polygons.len() != record.objects.len() {
            return Err(Error::new(
                &record.image_path,
                format!(
                    "{} boxes but {} polygon lists: with_polygons needs the records read with polygons (the COCO reader's with_polygons)",
                    record.objects.len(),
                    record.polygons.len()
                ),
            ));
        }
    }
    Ok(())
}

pub struct Loader {
    receivers: Vec<Receiver<Result<Batch>>>,
    workers: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    /// Global number of the first batch and of the next one to hand out.
    first: u64,
    next: u64,
    /// Global number one past the last batch (`None`: endless).
    end: Option<u64>,
    batches_per_epoch: u64,
    failed: bool,
}

impl Loader {
    /// Starts the workers for `epochs` epochs from `first_epoch` (forever
    /// when `None`). Evaluation: `new(records, LoaderConfig::eval(8), 0, Some(1))`.
    pub fn new(
        records: Arc<Vec<Record>>,
        config: LoaderConfig,
        first_epoch: u64,
        epochs: Option<u64>,
    ) -> Result<Loader> {
        Loader::start(records, config, |per_epoch| {
            (
                first_epoch * per_epoch,
                epochs.map(|e| (first_epoch + e) * per_epoch),
            )
        })
    }

    /// Endless batches from batch number `first_batch`, counted from the
    /// first batch of epoch 0: training that resumes at iteration `i` calls
    /// `from_batch(records, config, i)` and sees exactly the batches an
    /// uninterrupted run would have.
    pub fn from_batch(
        records: Arc<Vec<Record>>,
        config: LoaderConfig,
        first_batch: u64,
    ) -> Result<Loader> {
        Loader::start(records, config, |_| (first_batch, None))
    }

    /// `span` maps the number of batches per epoch to the global numbers of
    /// the first batch and of one past the last.
    fn start(
        records: Arc<Vec<Record>>,
        mut config: LoaderConfig,
        span: impl FnOnce(u64) -> (u64, Option<u64>),
    ) -> Result<Loader> {
        let invalid = |msg: String| Error::new("data loader", msg);
        if config.batch_size == 0 {
            return Err(invalid("batch size must be at least 1".into()));
        }
        if let (Mode::Train(aug), None) = (&config.mode, &config.short_side) {
            if aug.sizes.is_empty() || aug.sizes.contains(&0) {
                return Err(invalid(format!("bad training sizes {:?}", aug.sizes)));
            }
        }
        if let Some(resize) = &config.short_side {
            if resize.target_sizes.is_empty()
                || resize.target_sizes.contains(&0)
                || resize.max_size == 0
            {
                return Err(invalid(format!(
                    "bad ResizeImage target sizes {:?} or max_size {}",
                    resize.target_sizes, resize.max_size
                )));
            }
        }
        let used: Vec<usize> = (0..records.len())
            .filter(|&i| config.allow_empty || !records[i].objects.is_empty())
            .collect();
        if config.with_polygons {
            check_polygon_pipeline(&config, &records, &used)?;
        }
        if config.max_boxes == 0 {
            let most = used.iter().map(|&i| records[i].objects.len()).max();
            config.max_boxes = most.unwrap_or(0).max(1);
        }
        let batches_per_epoch = if config.drop_last {
            used.len() / config.batch_size
        } else {
            used.len().div_ceil(config.batch_size)
        } as u64;
        if batches_per_epoch == 0 {
            return Err(invalid(format!(
                "{} usable images ({} records{}) make no batch of {}",
                used.len(),
                records.len(),
                if config.allow_empty {
                    ""
                } else {
                    ", those without boxes left out"
                },
                config.batch_size
            )));
        }
        let workers = config.workers.max(1);
        let prefetch = config.prefetch.max(1);
        let (first, end) = span(batches_per_epoch);
        let plan = Arc::new(Plan {
            records,
            used,
            config,
            batches_per_epoch,
        });
        let stop = Arc::new(AtomicBool::new(false));
        let mut receivers = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for k in 0..workers {
            let (sender, receiver) = sync_channel(prefetch);
            let (plan, stop) = (plan.clone(), stop.clone());
            let handle = std::thread::Builder::new()
                .name(format!("loader-{k}"))
                .spawn(move || {
                    let mut order = None;
                    let mut global = first + k as u64;
                    while !stop.load(Ordering::Relaxed) && end.is_none_or(|e| global < e) {
                        let result = plan.build(global, &mut order, &stop);
                        let failed = result.is_err();
                        if sender.send(result).is_err() || failed {
                            break;
                        }
                        global += workers as u64;
                    }
                })
                .map_err(|e| invalid(format!("cannot start worker thread: {e}")))?;
            receivers.push(receiver);
            handles.push(handle);
        }
        Ok(Loader {
            receivers,
            workers: handles,
            stop,
            first,
            next: first,
            end,
            batches_per_epoch,
            failed: false,
        })
    }

    pub fn batches_per_epoch(&self) -> u64 {
        self.batches_per_epoch
    }
}

impl Iterator for Loader {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if self.failed || self.end.is_some_and(|e| self.next >= e) {
            return None;
        }
        let k = ((self.next - self.first) % self.receivers.len() as u64) as usize;
        self.next += 1;
        match self.receivers[k].recv() {
            Ok(Ok(batch)) => Some(Ok(batch)),
            Ok(Err(e)) => {
                self.failed = true;
                Some(Err(e))
            }
            Err(_) => {
                self.failed = true;
                Some(Err(Error::new(
                    "data loader",
                    format!("worker {k} stopped unexpectedly"),
                )))
            }
        }
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Dropping the receivers wakes any worker blocked on a full queue.
        self.receivers.clear();
        for handle in self.workers.drain(..) {
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::transforms::SampleAugment;
    use pulsefocus_formats::dataset::GroundTruth;
    use pulsefocus_formats::image::{write_png, RgbImage};
    use std::path::Path;

    /// `count` small PNGs of varied sizes in `dir`; every third has no boxes.
    fn dataset(dir: &Path, count: usize) -> Arc<Vec<Record>> {
        let records = (0..count)
            .map(|i| {
                let (w, h) = (24 + 4 * (i % 5) as u32, 20 + 3 * (i % 4) as u32);
                let path = dir.join(format!("{i}.png"));
                let shade = (i * 20 % 256) as u8;
                write_png(&RgbImage::filled(w, h, [shade, 100, 255 - shade]), &path).unwrap();
                let objects = if i % 3 == 2 {
                    vec![]
                } else {
                    vec![GroundTruth {
                        bbox: [2.0, 3.0, 15.0, 14.0],
                        class: (i % 4) as u32,
                        difficult: false,
                        crowd: false,
                    }]
                };
                Record {
                    image_path: path,
                    id: i as i64,
                    width: w,
                    height: h,
                    objects,
                    polygons: Vec::new(),
                }
            })
            .collect();
        Arc::new(records)
    }

    fn small_train(batch_size: usize, workers: usize) -> LoaderConfig {
        LoaderConfig {
            workers,
            mode: Mode::Train(Box::new(TrainAugment {
                sizes: vec![32, 64],
                ..TrainAugment::default()
            })),
            ..LoaderConfig::train(batch_size, 42)
        }
    }

    #[test]
    fn each_record_with_boxes_once_per_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let records = dataset(dir.path(), 10); // 7 with boxes
        let loader = Loader::new(records, small_train(2, 2), 0, Some(2)).unwrap();
        assert_eq!(loader.batches_per_epoch(), 3); // drop_last: 7 / 2
        let batches: Vec<Batch> = loader.map(|b| b.unwrap()).collect();
        assert_eq!(batches.len(), 6);
        for epoch in 0..2u64 {
            let mut seen: Vec<usize> = batches
                .iter()
                .filter(|b| b.epoch == epoch)
                .flat_map(|b| b.record_indices.clone())
                .collect();
            assert_eq!(seen.len(), 6);
            seen.sort();
            seen.dedup();
            assert_eq!(seen.len(), 6, "no record twice in epoch {epoch}");
            assert!(seen.iter().all(|i| i % 3 != 2));
        }
        let order = |e: u64| -> Vec<usize> {
            batches
                .iter()
                .filter(|b| b.epoch == e)
                .flat_map(|b| b.record_indices.clone())
                .collect()
        };
        assert_ne!(order(0), order(1), "shuffled per epoch");
        for b in &batches {
            assert!(b.h == 32 || b.h == 64);
            assert_eq!(b.images.len(), 2 * 3 * b.h * b.w);
            // Mixup (epoch < 250): two boxes per image, scores f and 1 - f.
            for i in 0..2 {
                let s = &b.gt_scores[i * 50..i * 50 + 2];
                assert!((s[0] + s[1] - 1.0).abs() < 1e-5 || s[1] == 0.0, "{s:?}");
            }
        }
    }

    #[test]
    fn eval_keeps_every_record_in_order_with_a_last_small_batch() {
        let dir = tempfile::tempdir().unwrap();
        let records = dataset(dir.path(), 5);
        let config = LoaderConfig {
            mode: Mode::Eval {
                size: 40,
                interp: Interp::Cubic,
            },
            ..LoaderConfig::eval(2)
        };
        let batches: Vec<Batch> = Loader::new(records, config, 0, Some(1))
            .unwrap()
            .map(|b| b.unwrap())
            .collect();
        let seen: Vec<usize> = batches
            .iter()
            .flat_map(|b| b.record_indices.clone())
            .collect();
        assert_eq!(seen, vec![0, 1, 2, 3, 4]);
        assert_eq!(batches[2].n, 1);
        assert_eq!(batches[0].original_sizes, vec![[24, 20], [28, 23]]);
        // Box [2, 3, 15, 14] of the 24x20 image 0, normalised cxcywh.
        let want = [8.5 / 24.0, 8.5 / 20.0, 13.0 / 24.0, 11.0 / 20.0];
        for (a, b) in batches[0].gt_boxes[..4].iter().zip(want) {
            assert!((a - b).abs() < 1e-6);
        }
    }

    #[test]
    fn batches_do_not_depend_on_the_number_of_workers() {
        let dir = tempfile::tempdir().unwrap();
        let records = dataset(dir.path(), 9);
        let run = |workers| -> Vec<Batch> {
            Loader::new(records.clone(), small_train(3, workers), 3, Some(1))
                .unwrap()
                .map(|b| b.unwrap())
                .collect()
        };
        let one = run(1);
        assert_eq!(one.len(), 2);
        assert_eq!(one[0].epoch, 3);
        assert_eq!(one, run(3));
    }

    #[test]
    fn undecodable_image_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let records = dataset(dir.path(), 4);
        std::fs::write(&records[1].image_path, b"not a picture").unwrap();
        let config = LoaderConfig {
            shuffle: false,
            ..small_train(1, 2)
        };
        let mut loader = Loader::new(records.clone(), config, 300, None).unwrap();
        assert!(loader.next().unwrap().is_ok());
        let err = loader.next().unwrap().unwrap_err();
        assert!(err.to_string().contains("1.png"), "{err}");
        assert!(loader.next().is_none());
    }

    #[test]
    fn resuming_at_a_batch_continues_the_same_stream() {
        let dir = tempfile::tempdir().unwrap();
        let records = dataset(dir.path(), 9); // 6 with boxes: 3 batches of 2
        let whole: Vec<Batch> = Loader::new(records.clone(), small_train(2, 2), 0, Some(2))
            .unwrap()
            .map(|b| b.unwrap())
            .collect();
        let resumed: Vec<Batch> = Loader::from_batch(records, small_train(2, 3), 2)
            .unwrap()
            .take(4)
            .map(|b| b.unwrap())
            .collect();
        assert_eq!(resumed, whole[2..]);
        assert_eq!((resumed[1].epoch, resumed[1].step), (1, 0));
    }

    #[test]
    fn endless_loader_stops_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let records = dataset(dir.path(), 6);
        let mut loader = Loader::new(records, small_train(2, 2), 0, None).unwrap();
        for _ in 0..5 {
            loader.next().unwrap().unwrap();
        }
        drop(loader); // joins the workers; the test would hang otherwise
    }

    #[test]
    fn too_few_images_for_a_batch_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let records = dataset(dir.path(), 3); // 2 with boxes
        let err = Loader::new(records, small_train(4, 1), 0, Some(1))
            .err()
            .unwrap();
        assert!(err.to_string().contains("2 usable images"), "{err}");
    }

    /// The R-CNN readers' batches: pictures at their aspect ratio, a target
    /// drawn per picture, padded to 32; im_info and the pixel boxes follow
    /// each picture (flipped or not).
    #[test]
    fn short_side_batches_keep_each_pictures_scale_and_boxes() {
        let dir = tempfile::tempdir().unwrap();
        let records = dataset(dir.path(), 10);
        let resize = ShortSideResize {
            target_sizes: vec![40, 48],
            max_size: 64,
            interp: Interp::Linear,
            pad_to_stride: 32,
            padded_im_info: false,
        };
        let config = LoaderConfig {
            mode: Mode::Train(Box::new(TrainAugment {
                sample: SampleAugment {
                    steps: vec![super::super::transforms::Augment::Flip(0.5)],
                },
                mixup_epochs: 0,
                sizes: Vec::new(),
                random_interp: false,
            })),
            short_side: Some(resize),
            max_boxes: 0,
            ..LoaderConfig::train(2, 7)
        };
        let batches: Vec<Batch> = Loader::new(records.clone(), config, 0, Some(2))
            .unwrap()
            .map(|b| b.unwrap())
            .collect();
        let (mut flipped, mut targets) = (0, std::collections::BTreeSet::new());
        for b in &batches {
            assert_eq!(b.max_boxes, 1, "slots for the most boxes a record has");
            assert!(b.h % 32 == 0 && b.w % 32 == 0, "{}x{}", b.w, b.h);
            assert_eq!(b.images.len(), b.n * 3 * b.h * b.w);
            for i in 0..b.n {
                let [w, h] = b.original_sizes[i].map(|v| v as usize);
                let target = [40, 48]
                    .into_iter()
                    .find(|&t| ShortSideScale::new(w, h, t, 64).scale as f32 == b.im_info[i][2])
                    .expect("the scale of a drawn target");
                targets.insert(target);
                let shape = ShortSideScale::new(w, h, target, 64);
                assert_eq!(b.im_info[i], shape.im_info(w, h));
                assert!(shape.w <= b.w && shape.h <= b.h);
                // Box [2, 3, 15, 14]: x2 = 14 in Paddle's convention, or mirrored.
                let (pixel, class) = b.gt_pixel_boxes(i)[0];
                let want = if pixel[0] > 2.5 {
                    flipped += 1;
                    [w as f32 - 15.0, 3.0, w as f32 - 3.0, 13.0]
                } else {
                    [2.0, 3.0, 14.0, 13.0]
                };
                for (a, b) in pixel.iter().zip(want) {
                    assert!((a - b).abs() < 1e-4, "{pixel:?} vs {want:?}");
                }
                assert_eq!(class, (b.record_indices[i] % 4) as i32);
            }
        }
        assert!(flipped > 0 && flipped < 14, "{flipped} of 14 flipped");
        assert_eq!(targets.len(), 2, "both targets drawn");
    }

    /// A Mask R-CNN-like reader: the R-CNN resize, a flip half the time,
    /// polygons carried.
    fn polygon_config(batch_size: usize, steps: Vec<Augment>) -> LoaderConfig {
        LoaderConfig {
            mode: Mode::Train(Box::new(TrainAugment {
                sample: SampleAugment { steps },
                mixup_epochs: 0,
                sizes: Vec::new(),
                random_interp: false,
            })),
            short_side: Some(ShortSideResize {
                target_sizes: vec![48],
                max_size: 80,
                interp: Interp::Linear,
                pad_to_stride: 32,
                padded_im_info: false,
            }),
            max_boxes: 0,
            with_polygons: true,
            ..LoaderConfig::train(batch_size, 11)
        }
    }

    /// synth -> COCO reader with polygons -> batches: every box slot in use
    /// has its object's polygons, flipped with the picture as PaddleDetection
    /// 0.x flips them, still spanning the box (synth outlines reach all four
    /// sides of their box).
    #[test]
    fn polygons_stay_with_their_boxes_through_flips_into_the_batch() {
        use pulsefocus_formats::coco::CocoDataSet;
        use pulsefocus_formats::synth::{self, SynthConfig, SynthFormat};
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("shapes");
        let synth_config = SynthConfig {
            images: 16,
            size: 64,
            classes: 6,
            format: SynthFormat::Coco,
            ..SynthConfig::default()
        };
        synth::write(&out, &synth_config).unwrap();
        let dataset = CocoDataSet {
            dataset_dir: out,
            image_dir: "JPEGImages".into(),
            anno_path: "annotations/instances_train.json".into(),
            with_background: true,
            allow_empty: false,
            load_crowd: false,
            with_polygons: true,
        }
        .load()
        .unwrap();
        assert!(dataset.problems.is_empty(), "{:?}", dataset.problems);
        let records = Arc::new(dataset.records);
        let config = polygon_config(2, vec![Augment::Flip(0.5)]);
        let batches: Vec<Batch> = Loader::new(records.clone(), config, 0, Some(3))
            .unwrap()
            .map(|b| b.unwrap())
            .collect();
        let (mut flipped, mut kept, mut objects) = (0, 0, 0);
        for b in &batches {
            assert_eq!(b.gt_polys.len(), b.n);
            for i in 0..b.n {
                let record = &records[b.record_indices[i]];
                let boxes = b.gt_pixel_boxes(i);
                assert_eq!(b.gt_polys[i].len(), boxes.len());
                assert_eq!(boxes.len(), record.objects.len());
                let width = record.width as f32;
                // The first box tells whether the picture was mirrored.
                let is_flipped = (boxes[0].0[0] - record.objects[0].bbox[0]).abs() > 1e-3;
                if is_flipped {
                    flipped += 1;
                } else {
                    kept += 1;
                }
                for (k, ((pixel, class), polygons)) in boxes.iter().zip(&b.gt_polys[i]).enumerate()
                {
                    assert_eq!(*class as u32, record.objects[k].class);
                    let want: Vec<Vec<f32>> = record.polygons[k]
                        .iter()
                        .map(|p| {
                            p.iter()
                                .enumerate()
                                .map(|(j, &v)| {
                                    let v = if is_flipped && j % 2 == 0 {
                                        record.width as f64 - v - 1.0
                                    } else {
                                        v
                                    };
                                    v as f32
                                })
                                .collect()
                        })
                        .collect();
                    assert_eq!(polygons, &want);
                    let span = |axis: usize| {
                        let values = polygons.iter().flat_map(|p| p.iter().skip(axis).step_by(2));
                        values.fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)))
                    };
                    let ((x_lo, x_hi), (y_lo, y_hi)) = (span(0), span(1));
                    // Box x2 = x1 + w - 1 (Paddle's convention); a polygon
                    // spans x1..x1 + w, mirrored one pixel further left.
                    let shift = if is_flipped { 1.0 } else { 0.0 };
                    let close = |a: f32, b: f32| (a - b).abs() < 1e-3;
                    assert!(
                        close(x_lo, pixel[0] - shift)
                            && close(x_hi, pixel[2] + 1.0 - shift)
                            && close(y_lo, pixel[1])
                            && close(y_hi, pixel[3] + 1.0),
                        "box {pixel:?} polygon x {x_lo}..{x_hi} y {y_lo}..{y_hi} (width {width})"
                    );
                    objects += 1;
                }
            }
        }
        assert!(flipped > 0 && kept > 0, "{flipped} flipped, {kept} kept");
        assert!(objects > 20, "{objects}");
    }

    #[test]
    fn polygons_need_polygon_records_the_rcnn_resize_and_geometry_that_follows_them() {
        let dir = tempfile::tempdir().unwrap();
        let records = dataset(dir.path(), 4);
        let err = |config: LoaderConfig, records: Arc<Vec<Record>>| {
            Loader::new(records, config, 0, Some(1))
                .err()
                .unwrap()
                .to_string()
        };
        let e = err(polygon_config(1, vec![Augment::Flip(0.5)]), records.clone());
        assert!(e.contains("0.png: 1 boxes but 0 polygon lists"), "{e}");
        let mut with_polygons: Vec<Record> = records.to_vec();
        for r in &mut with_polygons {
            r.polygons = vec![vec![vec![2.0, 3.0, 15.0, 3.0, 15.0, 14.0]]; r.objects.len()];
        }
        let with_polygons = Arc::new(with_polygons);
        let crop = Augment::Crop(super::super::transforms::random_crop::CropParams::default());
        let e = err(
            polygon_config(1, vec![Augment::Flip(0.5), crop]),
            with_polygons.clone(),
        );
        assert!(e.contains("with_polygons: Crop"), "{e}");
        let square = LoaderConfig {
            short_side: None,
            mode: Mode::Eval {
                size: 32,
                interp: Interp::Linear,
            },
            ..polygon_config(1, vec![])
        };
        assert!(err(square, with_polygons.clone()).contains("needs the R-CNN resize"));
        // Without the flag nothing is carried, with it every image is.
        let run = |config: LoaderConfig| -> Vec<Batch> {
            Loader::new(with_polygons.clone(), config, 0, Some(1))
                .unwrap()
                .map(|b| b.unwrap())
                .collect()
        };
        let plain = run(LoaderConfig {
            with_polygons: false,
            ..polygon_config(2, vec![])
        });
        assert!(plain.iter().all(|b| b.gt_polys.is_empty()));
        let carried = run(polygon_config(2, vec![]));
        assert!(carried.iter().all(|b| b.gt_polys.len() == b.n));
        assert_eq!(
            carried[0].gt_polys[0],
            [vec![vec![2.0, 3.0, 15.0, 3.0, 15.0, 14.0]]]
        );
        // The same pictures and boxes either way.
        for (a, b) in plain.iter().zip(&carried) {
            assert_eq!(
                (&a.images, &a.gt_boxes, &a.im_info),
                (&b.images, &b.gt_boxes, &b.im_info)
            );
        }
    }
}
