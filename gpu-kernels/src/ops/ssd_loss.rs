//! SSD's loss on the device (`device/src/ssd_loss.rs`), deciding exactly as
//! core's `ssd::ssd_loss`: matching per image, hard negatives by
//! [`super::nms`]'s bitonic sort, then each prior's loss and gradients,
//! the losses summed by [`Gpu::sum`]. What goes up: the ground truth (a
//! table of boxes, labels and where each image's start). What comes back:
//! the matched and mined counts per image and the sums' block partials.
use pulsefocus_core::ssd::{ImageTruth, SsdLoss, SsdLossConfig};
use pulsefocus_gpu_device::reduce::REDUCE_THREADS;

use super::{elementwise, fail, index_count, need_len, LaunchShape, PlanError};
use crate::driver::KernelArgs;
use crate::{DeviceBuffer, Gpu, GpuError};

const NAME: &str = "ssd_loss";

/// The ground truth of a batch as the kernels take it: every image's boxes
/// (x1, y1, x2, y2) and labels one image after another, and where each
/// image's start (`first[n]..first[n + 1]`).
#[derive(Debug, Default, PartialEq)]
pub struct TruthTable {
    pub boxes: Vec<f32>,
    pub labels: Vec<u32>,
    pub first: Vec<u32>,
}

/// `truths` as a [`TruthTable`], each image with one label per box, each
/// label one of the `classes`.
pub fn truth_table(truths: &[ImageTruth], classes: usize) -> Result<TruthTable, PlanError> {
    let mut table = TruthTable {
        first: vec![0],
        ..TruthTable::default()
    };
    for (n, truth) in truths.iter().enumerate() {
        if truth.boxes.len() != truth.labels.len() {
            return fail(
                NAME,
                format!(
                    "image {n} has {} boxes and {} labels",
                    truth.boxes.len(),
                    truth.labels.len()
                ),
            );
        }
        if let Some(&label) = truth.labels.iter().find(|&&l| l >= classes) {
            return fail(
                NAME,
                format!("image {n}: label {label} of {classes} classes"),
            );
        }
        table.boxes.extend(truth.boxes.iter().flatten());
        table.labels.extend(truth.labels.iter().map(|&l| l as u32));
        table
            .first
            .push(index_count(NAME, "boxes", table.labels.len())?);
    }
    Ok(table)
}

/// The rows (`images * priors_count`) after checking that the kernels can
/// index everything: the sort and the grid-stride loops need the padded
/// rows at most 2^30, the bipartite pairs (priors x an image's boxes) and
/// the confidences fit u32; and that the background is one of the classes.
pub fn check_sizes(
    cfg: &SsdLossConfig,
    images: usize,
    priors_count: usize,
    classes: usize,
    table: &TruthTable,
) -> Result<usize, PlanError> {
    let rows = images.saturating_mul(priors_count);
    let most_boxes = table
        .first
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or(0);
    if rows > 1 << 30 || priors_count.saturating_mul(most_boxes as usize) >= u32::MAX as usize {
        return fail(
            NAME,
            format!(
                "{images} images x {priors_count} priors (up to {most_boxes} boxes an image) must be at most 2^30 rows and 2^32 pairs"
            ),
        );
    }
    index_count(NAME, "confidence", rows.saturating_mul(classes))?;
    if cfg.background_label >= classes {
        return fail(
            NAME,
            format!(
                "background label {} of {classes} classes",
                cfg.background_label
            ),
        );
    }
    Ok(rows)
}

impl Gpu {
    /// The loss of `truths.len()` images and its gradients (overwritten,
    /// shaped as `location` `[images, priors_count, 4]` and `confidence`
    /// `[images, priors_count, classes]`), from `priors` and `variances`
    /// (`[priors_count, 4]` each).
    #[allow(clippy::too_many_arguments)]
    pub fn ssd_loss(
        &self,
        cfg: &SsdLossConfig,
        priors: &DeviceBuffer,
        variances: &DeviceBuffer,
        [priors_count, classes]: [usize; 2],
        location: &DeviceBuffer,
        confidence: &DeviceBuffer,
        truths: &[ImageTruth],
        grad_location: &mut DeviceBuffer,
        grad_confidence: &mut DeviceBuffer,
    ) -> Result<SsdLoss, GpuError> {
        let images = truths.len();
        if images == 0 || priors_count == 0 {
            return Ok(SsdLoss::default());
        }
        let table = truth_table(truths, classes)?;
        let rows = check_sizes(cfg, images, priors_count, classes, &table)?;
        let (loc_len, conf_len) = (rows * 4, rows * classes);
        need_len(NAME, "priors", priors.len(), priors_count * 4)?;
        need_len(NAME, "variances", variances.len(), priors_count * 4)?;
        need_len(NAME, "location", location.len(), loc_len)?;
        need_len(NAME, "confidence", confidence.len(), conf_len)?;
        need_len(NAME, "grad_location", grad_location.len(), loc_len)?;
        need_len(NAME, "grad_confidence", grad_confidence.len(), conf_len)?;
        let TruthTable {
            boxes,
            labels,
            first,
        } = table;
        let truth_boxes = self.upload(&boxes)?;
        let truth_labels = self.upload(&labels)?;
        let truth_first = self.upload(&first)?;
        let (images32, count32, rows32) = (images as u32, priors_count as u32, rows as u32);

        // Step 1: the matching, a block per image.
        let mut taken = self.alloc::<u32>(labels.len())?;
        let mut matched = self.alloc::<u32>(rows)?;
        let mut overlaps = self.alloc::<f32>(rows)?;
        let mut counts = self.alloc::<u32>(2 * images)?;
        let mut args = KernelArgs::new();
        args.input(priors, priors_count * 4)
            .input(&truth_boxes, boxes.len())
            .input(&truth_first, images + 1)
            .u32(images32)
            .u32(count32)
            .f32(cfg.overlap_threshold)
            .output(&mut taken, labels.len())
            .output(&mut matched, rows)
            .output(&mut overlaps, rows)
            .output(&mut counts, images);
        let per_image = LaunchShape {
            grid: (images32.min(4096), 1, 1),
            block: (REDUCE_THREADS, 1, 1),
        };
        self.launch("ssd_match", per_image, &args)?;

        // Steps 2-3: the candidates sorted per image, highest loss first;
        // each image's first ones mined.
        let padded = rows32.next_power_of_two();
        let n = padded as usize;
        let mut keys = self.alloc::<u64>(n)?;
        let mut values = self.alloc::<u32>(n)?;
        let background = cfg.background_label as u32;
        let mut args = KernelArgs::new();
        args.input(confidence, conf_len)
            .input(&matched, rows)
            .input(&overlaps, rows)
            .u32(rows32)
            .u32(count32)
            .u32(classes as u32)
            .u32(background)
            .f32(cfg.neg_overlap)
            .u32(padded)
            .output(&mut keys, n)
            .output(&mut values, n);
        self.launch("ssd_mining_keys", elementwise(padded), &args)?;
        self.bitonic_sort(&mut keys, &mut values)?;
        let bounds = self.bounds(&keys, images32)?;
        let mut args = KernelArgs::new();
        args.input(&keys, n)
            .input(&values, n)
            .input(&bounds, images + 1)
            .u32(images32)
            .f32(cfg.neg_pos_ratio)
            .u32(padded)
            .output(&mut matched, rows)
            .output(&mut counts, 2 * images);
        self.launch("ssd_select_negatives", elementwise(padded), &args)?;

        // Step 4: each prior's losses and gradients, then the sums.
        let mut loc_losses = self.alloc::<f32>(rows)?;
        let mut conf_losses = self.alloc::<f32>(rows)?;
        let mut args = KernelArgs::new();
        args.input(location, loc_len)
            .input(confidence, conf_len)
            .input(priors, priors_count * 4)
            .input(variances, priors_count * 4)
            .input(&truth_boxes, boxes.len())
            .input(&truth_labels, labels.len())
            .input(&matched, rows)
            .input(&counts, images)
            .u32(images32)
            .u32(count32)
            .u32(classes as u32)
            .u32(background)
            .f32(cfg.loc_loss_weight)
            .f32(cfg.conf_loss_weight)
            .output(grad_location, loc_len)
            .output(grad_confidence, conf_len)
            .output(&mut loc_losses, rows)
            .output(&mut conf_losses, rows);
        self.launch("ssd_loss_rows", elementwise(rows32), &args)?;
        let counts = self.download(&counts)?;
        let (positives, negatives) = counts.split_at(images);
        let positives = positives.iter().map(|&c| c as usize).sum::<usize>();
        if positives == 0 {
            // As the CPU: nothing matched, nothing to learn from the batch.
            return Ok(SsdLoss::default());
        }
        let norm = positives as f64;
        let confidence_loss =
            cfg.conf_loss_weight as f64 * self.sum(rows, &conf_losses, false)? / norm;
        let location_loss = cfg.loc_loss_weight as f64 * self.sum(rows, &loc_losses, false)? / norm;
        Ok(SsdLoss {
            total: (confidence_loss + location_loss) as f32,
            confidence: confidence_loss as f32,
            location: location_loss as f32,
            positives,
            negatives: negatives.iter().map(|&c| c as usize).sum(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{down, gpu, up, values};
    use pulsefocus_core::box_coder::BoxXyxy;
    use pulsefocus_core::gradcheck::{check_gradient, random_vec, GradCheck, Probe, SEEDS};

    /// 24 priors on a 6 x 4 grid.
    fn grid_priors() -> Vec<f32> {
        (0..24)
            .flat_map(|i| {
                let (x, y) = ((i % 6) as f32 * 0.15, (i / 6) as f32 * 0.2);
                [x, y, x + 0.3, y + 0.35]
            })
            .collect()
    }

    #[test]
    fn bad_ground_truth_and_short_buffers_are_errors() {
        let gpu = gpu();
        let (priors, variances) = (up(&gpu, &grid_priors()), up(&gpu, &[0.1; 96]));
        let (location, confidence) = (up(&gpu, &values(96, 1)), up(&gpu, &values(71, 2)));
        let (mut grad_location, mut grad_confidence) = (up(&gpu, &[0.0; 96]), up(&gpu, &[0.0; 72]));
        let boxes: [BoxXyxy; 2] = [[0.0, 0.0, 0.3, 0.3], [0.5, 0.5, 0.9, 0.8]];
        let mut loss = |cfg: &SsdLossConfig, labels: &[usize], classes: usize| {
            let truths = [ImageTruth {
                boxes: &boxes[..labels.len().min(2)],
                labels,
            }];
            gpu.ssd_loss(
                cfg,
                &priors,
                &variances,
                [24, classes],
                &location,
                &confidence,
                &truths,
                &mut grad_location,
                &mut grad_confidence,
            )
            .map_err(|e| e.to_string())
        };
        let cfg = SsdLossConfig::default();
        assert_eq!(
            loss(&cfg, &[1, 3], 3).unwrap_err(),
            "kernel ssd_loss: image 0: label 3 of 3 classes"
        );
        assert_eq!(
            loss(&cfg, &[1, 2, 1], 3).unwrap_err(),
            "kernel ssd_loss: image 0 has 2 boxes and 3 labels"
        );
        let far = SsdLossConfig {
            background_label: 3,
            ..cfg
        };
        assert_eq!(
            loss(&far, &[1, 2], 3).unwrap_err(),
            "kernel ssd_loss: background label 3 of 3 classes"
        );
        assert_eq!(
            loss(&cfg, &[1, 2], 3).unwrap_err(),
            "kernel ssd_loss: confidence has 71 elements, needs at least 72"
        );
    }

    /// No image or no prior: nothing to do. Nothing matched (no boxes):
    /// the loss is 0 and so are the gradients, as on the CPU.
    #[test]
    fn nothing_matched_costs_nothing() {
        let gpu = gpu();
        let (priors, variances) = (up(&gpu, &grid_priors()), up(&gpu, &[0.1; 96]));
        let (location, confidence) = (up(&gpu, &values(96, 1)), up(&gpu, &values(72, 2)));
        let (mut grad_location, mut grad_confidence) = (up(&gpu, &[5.0; 97]), up(&gpu, &[5.0; 73]));
        let none = ImageTruth {
            boxes: &[],
            labels: &[],
        };
        for (truths, priors_count) in [(&[][..], 24), (&[none][..], 0), (&[none][..], 24)] {
            let loss = gpu
                .ssd_loss(
                    &SsdLossConfig::default(),
                    &priors,
                    &variances,
                    [priors_count, 3],
                    &location,
                    &confidence,
                    truths,
                    &mut grad_location,
                    &mut grad_confidence,
                )
                .unwrap();
            assert_eq!(loss, SsdLoss::default());
        }
        let mut want_location = vec![0.0; 96];
        want_location.push(5.0);
        let mut want_confidence = vec![0.0; 72];
        want_confidence.push(5.0);
        assert_eq!(down(&gpu, &grad_location), want_location);
        assert_eq!(down(&gpu, &grad_confidence), want_confidence);
    }

    /// Finite differences of the device's loss against the device's
    /// gradients, for random predictions (core's `ssd_loss` check, through
    /// the kernels). The matching does not depend on the predictions, and
    /// the mining only through ranks that a small step rarely swaps; the
    /// check skips the points where one does (a jump, not a slope).
    #[test]
    fn gradient_matches_finite_differences() {
        let gpu = gpu();
        let classes = 4;
        let priors = up(&gpu, &grid_priors());
        let variances = up(&gpu, &[0.1, 0.1, 0.2, 0.2].repeat(24));
        let boxes = [
            [0.02, 0.01, 0.31, 0.37],
            [0.45, 0.4, 0.76, 0.74],
            [0.6, 0.2, 0.88, 0.6],
        ];
        let labels = [1, 2, 3];
        let truths = [
            ImageTruth {
                boxes: &boxes[..2],
                labels: &labels[..2],
            },
            ImageTruth {
                boxes: &boxes[2..],
                labels: &labels[2..],
            },
        ];
        let (mut grad_location, mut grad_confidence) = (
            gpu.zeros(2 * 24 * 4).unwrap(),
            gpu.zeros(2 * 24 * classes).unwrap(),
        );
        let mut run = |location: &[f32], confidence: &[f32]| {
            let loss = gpu
                .ssd_loss(
                    &SsdLossConfig::default(),
                    &priors,
                    &variances,
                    [24, classes],
                    &up(&gpu, location),
                    &up(&gpu, confidence),
                    &truths,
                    &mut grad_location,
                    &mut grad_confidence,
                )
                .unwrap();
            (
                loss.total,
                down(&gpu, &grad_location),
                down(&gpu, &grad_confidence),
            )
        };
        let probe = |total: f32| Probe {
            value: total as f64,
            magnitude: total as f64,
        };
        let opts = GradCheck::default();
        for seed in SEEDS {
            let location: Vec<f32> = random_vec(seed, 2 * 24 * 4)
                .iter()
                .map(|v| 0.8 * v)
                .collect();
            let confidence: Vec<f32> = random_vec(seed + 100, 2 * 24 * classes)
                .iter()
                .map(|v| 2.0 * v)
                .collect();
            let (total, gl, gc) = run(&location, &confidence);
            assert!(total > 0.0);
            check_gradient(
                "ssd_loss d/location",
                &location,
                &gl,
                |l| probe(run(l, &confidence).0),
                opts,
            )
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            check_gradient(
                "ssd_loss d/confidence",
                &confidence,
                &gc,
                |c| probe(run(&location, c).0),
                opts,
            )
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        }
    }
}
