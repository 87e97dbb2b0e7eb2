//! The R-CNN box head's loss on the device (`device/src/bbox_head_loss.rs`,
//! core's `BoxHeadLossArgs`). What goes up: each RoI's device row and
//! label, and its deltas whose inside and outside weights are both
//! non-zero (the others cost nothing and have gradient 0), about 4 a
//! foreground RoI instead of the `[R, 4C]` tables. The box gradient is
//! zeroed, both gradients are written in place; what comes back is the
//! block partials of the two loss sums.
use pulsefocus_core::rcnn::{BBoxHeadLoss, BoxHeadLossArgs};

use super::{elementwise, fail, index_count};
use crate::driver::KernelArgs;
use crate::{DeviceBuffer, Gpu, GpuError};

const NAME: &str = "bbox_head_loss";

impl Gpu {
    /// The loss of `args` on `cls_score` and `bbox_pred` (device rows); the
    /// gradients (overwritten) as core's `bbox_head_loss_at_rows`'s.
    pub fn bbox_head_loss(
        &self,
        args: &BoxHeadLossArgs,
        cls_score: &DeviceBuffer,
        bbox_pred: &DeviceBuffer,
        grad_cls_score: &mut DeviceBuffer,
        grad_bbox_pred: &mut DeviceBuffer,
    ) -> Result<BBoxHeadLoss, GpuError> {
        let lens = [
            cls_score.len(),
            bbox_pred.len(),
            grad_cls_score.len(),
            grad_bbox_pred.len(),
        ];
        args.check(lens).or_else(|message| fail(NAME, message))?;
        let (rois, classes, deltas) = (args.rois(), args.classes, args.deltas);
        if rois == 0 {
            return Ok(BBoxHeadLoss::default());
        }
        let (cls_len, bbox_len) = (rois * classes, rois * deltas);
        index_count(NAME, "cls_score", cls_len)?;
        index_count(NAME, "bbox_pred", bbox_len)?;
        let t = &args.targets;
        let mut first = vec![0u32];
        let (mut columns, mut entries) = (Vec::new(), Vec::new());
        for r in 0..rois {
            for c in 0..deltas {
                let k = r * deltas + c;
                let (inside, outside) = (t.bbox_inside_weights[k], t.bbox_outside_weights[k]);
                if inside != 0.0 && outside != 0.0 {
                    columns.push(c as u32);
                    entries.extend([t.bbox_targets[k], inside, outside]);
                }
            }
            // At most the deltas' count, below 2^32.
            first.push(columns.len() as u32);
        }
        let rows: Vec<u32> = args.rows.iter().map(|&r| r as u32).collect();
        let labels: Vec<u32> = t.labels.iter().map(|&l| l as u32).collect();
        let up_rows = self.upload(&rows)?;
        let up_labels = self.upload(&labels)?;
        let up_first = self.upload(&first)?;
        let up_columns = self.upload(&columns)?;
        let up_entries = self.upload(&entries)?;
        self.fill(bbox_len, grad_bbox_pred, 0.0)?;
        let mut cls_losses = self.alloc::<f32>(rois)?;
        let mut bbox_losses = self.alloc::<f32>(rois)?;
        let mut kernel_args = KernelArgs::new();
        kernel_args
            .input(cls_score, cls_len)
            .input(bbox_pred, bbox_len)
            .input(&up_rows, rois)
            .input(&up_labels, rois)
            .input(&up_first, rois + 1)
            .input(&up_columns, columns.len())
            .input(&up_entries, entries.len())
            .output(grad_cls_score, cls_len)
            .output(grad_bbox_pred, bbox_len)
            .output(&mut cls_losses, rois)
            .output(&mut bbox_losses, rois);
        // RoIs, classes and deltas are below the outputs' counts (< 2^32).
        let scale = args.loss_weight / rois as f32;
        kernel_args
            .u32(rois as u32)
            .u32(classes as u32)
            .u32(deltas as u32)
            .f32(scale);
        self.launch("bbox_loss_rows", elementwise(rois as u32), &kernel_args)?;
        let cls_sum = self.sum(rois, &cls_losses, false)?;
        let bbox_sum = self.sum(rois, &bbox_losses, false)?;
        Ok(BBoxHeadLoss {
            cls: (cls_sum / rois as f64) as f32 * args.loss_weight,
            bbox: (bbox_sum / rois as f64) as f32 * args.loss_weight,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{down, gpu, up, values};
    use pulsefocus_core::gradcheck::{check_gradient, GradCheck, Probe, SEEDS};
    use pulsefocus_core::rcnn::RoiTargets;

    const CLASSES: usize = 3;
    const DELTAS: usize = 4 * CLASSES;

    /// Four RoIs in rows 2, 0, 3, 1: labels 1, 0, 2, 2; the weights 1 on
    /// a foreground RoI's class deltas, as `generate_proposal_labels`
    /// writes them.
    struct Case {
        labels: Vec<i32>,
        targets: Vec<f32>,
        weights: Vec<f32>,
        rows: Vec<usize>,
    }

    fn case() -> Case {
        let labels = vec![1, 0, 2, 2];
        let mut weights = vec![0.0; 4 * DELTAS];
        for (r, &l) in labels.iter().enumerate() {
            if l > 0 {
                weights[r * DELTAS + 4 * l as usize..][..4].fill(1.0);
            }
        }
        Case {
            labels,
            targets: values(4 * DELTAS, 7).iter().map(|v| 1.5 * v).collect(),
            weights,
            rows: vec![2, 0, 3, 1],
        }
    }

    impl Case {
        fn args(&self) -> BoxHeadLossArgs<'_> {
            BoxHeadLossArgs {
                classes: CLASSES,
                deltas: DELTAS,
                loss_weight: 0.5,
                targets: RoiTargets {
                    labels: &self.labels,
                    bbox_targets: &self.targets,
                    bbox_inside_weights: &self.weights,
                    bbox_outside_weights: &self.weights,
                },
                rows: &self.rows,
            }
        }
    }

    /// `(loss, grad cls, grad bbox)` on the device.
    fn run(
        gpu: &Gpu,
        args: &BoxHeadLossArgs,
        cls: &[f32],
        bbox: &[f32],
    ) -> Result<(BBoxHeadLoss, Vec<f32>, Vec<f32>), GpuError> {
        let (mut gc, mut gb) = (
            up(gpu, &vec![5.0; cls.len()]),
            up(gpu, &vec![5.0; bbox.len()]),
        );
        let loss = gpu.bbox_head_loss(args, &up(gpu, cls), &up(gpu, bbox), &mut gc, &mut gb)?;
        Ok((loss, down(gpu, &gc), down(gpu, &gb)))
    }

    #[test]
    fn bad_targets_and_short_buffers_are_errors() {
        let gpu = gpu();
        let case = case();
        let (cls, bbox) = (values(4 * CLASSES, 1), values(4 * DELTAS, 2));
        let mut args = case.args();
        let labels = [1, 0, 3, 2];
        args.targets.labels = &labels;
        let err = run(&gpu, &args, &cls, &bbox).unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel bbox_head_loss: bbox_head_loss: RoI 2 has label 3 of 3 classes"
        );
        let mut args = case.args();
        let rows = [2, 0, 2, 1];
        args.rows = &rows;
        let err = run(&gpu, &args, &cls, &bbox).unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel bbox_head_loss: bbox_head_loss: RoI 2 at row 2: not a permutation of 4 rows"
        );
        let err = run(&gpu, &case.args(), &cls, &bbox[1..]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel bbox_head_loss: bbox_head_loss: bbox_pred has 47 elements, needs at least 48"
        );
        let mut args = case.args();
        args.deltas = 5;
        assert!(run(&gpu, &args, &cls, &bbox).is_err());
    }

    /// Finite differences of the device's `cls + bbox` against the
    /// device's gradients, on both outputs.
    #[test]
    fn gradient_matches_finite_differences() {
        let gpu = gpu();
        let case = case();
        let args = case.args();
        for seed in SEEDS {
            let cls: Vec<f32> = values(4 * CLASSES, seed as u32)
                .iter()
                .map(|v| 3.0 * v)
                .collect();
            let bbox = values(4 * DELTAS, seed as u32 + 50);
            let (_, gc, gb) = run(&gpu, &args, &cls, &bbox).unwrap();
            let total = |cls: &[f32], bbox: &[f32]| {
                let loss = run(&gpu, &args, cls, bbox).unwrap().0;
                let total = (loss.cls + loss.bbox) as f64;
                Probe {
                    value: total,
                    magnitude: total.abs(),
                }
            };
            let opts = GradCheck {
                step: 1e-2,
                max_points: 4 * DELTAS,
                ..GradCheck::default()
            };
            check_gradient("d/cls_score", &cls, &gc, |c| total(c, &bbox), opts)
                .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            check_gradient("d/bbox_pred", &bbox, &gb, |b| total(&cls, b), opts)
                .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        }
    }
}
