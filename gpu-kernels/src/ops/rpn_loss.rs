//! PaddleDetection's RPN loss on the device (`device/src/rpn_loss.rs`,
//! core's `rcnn::rpn_loss`) on the targets `ops::rpn_targets` draws there:
//! nothing goes up but the ground truth, and what comes back is each
//! image's count of sampled anchors and the block partials of the two loss
//! sums. The gradients are written in place, every position of them.
use pulsefocus_core::backend::RpnTargetsGeom;
use pulsefocus_core::rcnn::rpn_loss::{check_rpn_loss, SIGMA};
use pulsefocus_core::rcnn::{RpnLevelGrad, RpnLevelOutput, RpnLoss};

use super::{elementwise, fail, index_count};
use crate::driver::KernelArgs;
use crate::{DeviceBuffer, Gpu, GpuError};

const NAME: &str = "rpn_loss";

impl Gpu {
    /// The targets of `g`'s images against the levels' `anchors` (see
    /// `Backend::rpn_loss`) and the loss of the batch, with
    /// `anchors_per_cell` anchors in every cell of every level; the
    /// gradients (one per level, overwritten) as core's `rpn_loss`'s.
    pub fn rpn_loss(
        &self,
        g: &RpnTargetsGeom<'_>,
        anchors: &[&DeviceBuffer],
        levels: &[RpnLevelOutput<'_, DeviceBuffer>],
        anchors_per_cell: usize,
        grads: &mut [RpnLevelGrad<'_, DeviceBuffer>],
    ) -> Result<RpnLoss, GpuError> {
        let images = g.images.len();
        check_rpn_loss(levels, anchors_per_cell, images, grads, |b| b.len())
            .and_then(|()| g.validate(anchors, levels, anchors_per_cell, |b| b.len()))
            .or_else(|message| fail(NAME, message))?;
        if images == 0 {
            return Ok(RpnLoss::default());
        }
        let a_count = anchors_per_cell;
        let counts: Vec<usize> = levels
            .iter()
            .map(|l| l.height * l.width * a_count)
            .collect();
        for &count in &counts {
            index_count(NAME, "bbox_pred", images.saturating_mul(4 * count))?;
        }
        let level_anchors: Vec<(&DeviceBuffer, usize)> = anchors
            .iter()
            .copied()
            .zip(counts.iter().copied())
            .collect();
        let t = self.rpn_targets(g, &level_anchors)?;
        let sampled: usize = t.sampled.iter().map(|&s| s as usize).sum();
        let norm = 1.0 / sampled.max(1) as f32;
        let (rows, total) = (images * t.total, t.total as u32);
        let (mut cls_sum, mut bbox_sum) = (0.0f64, 0.0f64);
        let mut first = 0u32;
        for ((level, grad), &count) in levels.iter().zip(grads).zip(&counts) {
            let logits = images * count;
            let mut cls_losses = self.alloc::<f32>(logits)?;
            let mut bbox_losses = self.alloc::<f32>(logits)?;
            let mut args = KernelArgs::new();
            args.input(level.cls_logits, logits)
                .input(level.bbox_pred, 4 * logits)
                .input(&t.labels, rows)
                .input(&t.deltas, 4 * rows)
                .output(grad.cls_logits, logits)
                .output(grad.bbox_pred, 4 * logits)
                .output(&mut cls_losses, logits)
                .output(&mut bbox_losses, logits);
            // Every count is below the logits' (< 2^32, checked above).
            args.u32(images as u32)
                .u32((level.height * level.width) as u32)
                .u32(a_count as u32)
                .u32(first)
                .u32(total)
                .f32(SIGMA * SIGMA)
                .f32(norm);
            self.launch("rpn_loss_anchors", elementwise(logits as u32), &args)?;
            cls_sum += self.sum(logits, &cls_losses, false)?;
            bbox_sum += self.sum(logits, &bbox_losses, false)?;
            first += count as u32;
        }
        if sampled == 0 {
            return Ok(RpnLoss::default());
        }
        Ok(RpnLoss {
            loss_rpn_cls: (cls_sum / sampled as f64) as f32,
            loss_rpn_bbox: (bbox_sum / sampled as f64) as f32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{down, gpu, up, values};
    use pulsefocus_core::backend::RpnTruth;
    use pulsefocus_core::gradcheck::{check_gradient, GradCheck, Probe, SEEDS};
    use pulsefocus_core::rcnn::RpnTargetConfig;

    /// Two levels of 2x3 and 1x2 cells, 2 anchors a cell (16 anchors an
    /// image), one image.
    const SIZES: [[usize; 2]; 2] = [[2, 3], [1, 2]];

    /// Each level's anchors: cell `(h, w)` of a level of stride `s` has
    /// anchors of `s` and `1.5 s` pixels at `(w s, h s)`.
    fn anchors() -> Vec<Vec<f32>> {
        SIZES
            .iter()
            .zip([10.0, 20.0])
            .map(|(&[h, w], stride)| {
                (0..h * w * 2)
                    .flat_map(|k| {
                        let (cell, a) = (k / 2, k % 2);
                        let (x, y) = ((cell % w) as f32 * stride, (cell / w) as f32 * stride);
                        let side = stride * (1.0 + 0.5 * a as f32);
                        [x, y, x + side - 1.0, y + side - 1.0]
                    })
                    .collect()
            })
            .collect()
    }

    /// Two boxes on anchors of both levels: foreground and background
    /// anchors on each.
    const BOXES: [[f32; 4]; 2] = [[10.0, 0.0, 19.0, 9.0], [20.0, 0.0, 49.0, 29.0]];

    const CONFIG: RpnTargetConfig = RpnTargetConfig {
        batch_size_per_im: 8,
        fg_fraction: 0.5,
        positive_overlap: 0.7,
        negative_overlap: 0.3,
        straddle_thresh: -1.0,
        use_random: true,
    };

    /// Each level's `[cls_logits, bbox_pred]` (or their gradients).
    type Levels = Vec<[Vec<f32>; 2]>;

    /// `(loss, gradients)` on the device, for an image of `im_info` with
    /// `BOXES` and the levels' `anchors`.
    fn run(
        gpu: &Gpu,
        outputs: &[[Vec<f32>; 2]],
        anchors: &[Vec<f32>],
        config: &RpnTargetConfig,
        im_info: [f32; 3],
    ) -> Result<(RpnLoss, Levels), GpuError> {
        let up_outputs: Vec<[DeviceBuffer; 2]> = outputs
            .iter()
            .map(|[c, b]| [up(gpu, c), up(gpu, b)])
            .collect();
        let mut up_grads: Vec<[DeviceBuffer; 2]> = outputs
            .iter()
            .map(|[c, b]| [up(gpu, &vec![5.0; c.len()]), up(gpu, &vec![5.0; b.len()])])
            .collect();
        let up_anchors: Vec<DeviceBuffer> = anchors.iter().map(|a| up(gpu, a)).collect();
        let levels: Vec<RpnLevelOutput<DeviceBuffer>> = up_outputs
            .iter()
            .zip(SIZES)
            .map(|([c, b], [height, width])| RpnLevelOutput {
                height,
                width,
                cls_logits: c,
                bbox_pred: b,
            })
            .collect();
        let mut grads: Vec<RpnLevelGrad<DeviceBuffer>> = up_grads
            .iter_mut()
            .map(|[c, b]| RpnLevelGrad {
                cls_logits: c,
                bbox_pred: b,
            })
            .collect();
        let images = [RpnTruth {
            boxes: &BOXES,
            im_info,
        }];
        let g = RpnTargetsGeom {
            config,
            images: &images,
            seed: 7,
        };
        let anchor_refs: Vec<&DeviceBuffer> = up_anchors.iter().collect();
        let loss = gpu.rpn_loss(&g, &anchor_refs, &levels, 2, &mut grads)?;
        let grads = up_grads
            .iter()
            .map(|[c, b]| [down(gpu, c), down(gpu, b)])
            .collect();
        Ok((loss, grads))
    }

    fn outputs(salt: u32) -> Levels {
        SIZES
            .iter()
            .enumerate()
            .map(|(l, [h, w])| {
                let logits = 2 * h * w;
                let salt = salt + 10 * l as u32;
                let cls = values(logits, salt).iter().map(|v| 3.0 * v).collect();
                [cls, values(4 * logits, salt + 1)]
            })
            .collect()
    }

    const IM_INFO: [f32; 3] = [60.0, 60.0, 1.0];

    #[test]
    fn bad_ground_truth_and_short_buffers_are_errors() {
        let gpu = gpu();
        let outs = outputs(1);
        let err = run(&gpu, &outs, &anchors(), &CONFIG, [60.0, 60.0, 0.0]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel rpn_loss: rpn_loss: image 0: im_info must be finite with a positive scale, got [60.0, 60.0, 0.0]"
        );
        let mut short = anchors();
        short[1].pop();
        let err = run(&gpu, &outs, &short, &CONFIG, IM_INFO).unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel rpn_loss: rpn_loss: level 1 anchors has 15 elements, needs at least 16"
        );
        let mut short = outs.clone();
        short[1][1].pop();
        let err = run(&gpu, &short, &anchors(), &CONFIG, IM_INFO).unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel rpn_loss: rpn_loss: level 1 bbox_pred has 15 elements, needs at least 16"
        );
    }

    /// Every anchor over the border of the image with `straddle_thresh`
    /// 0: nothing sampled, losses 0 and zero gradients everywhere.
    #[test]
    fn nothing_sampled_costs_nothing() {
        let gpu = gpu();
        let far: Vec<Vec<f32>> = anchors()
            .iter()
            .map(|a| a.iter().map(|v| v + 1000.0).collect())
            .collect();
        let inside_only = RpnTargetConfig {
            straddle_thresh: 0.0,
            ..CONFIG
        };
        let (loss, grads) = run(&gpu, &outputs(2), &far, &inside_only, IM_INFO).unwrap();
        assert_eq!(loss, RpnLoss::default());
        for [c, b] in grads {
            assert!(c.iter().chain(&b).all(|&g| g == 0.0));
        }
    }

    /// Finite differences of the device's `loss_rpn_cls + loss_rpn_bbox`
    /// against the device's gradients, on both levels' outputs (the
    /// targets do not depend on them).
    #[test]
    fn gradient_matches_finite_differences() {
        let gpu = gpu();
        for seed in SEEDS {
            let outs = outputs(seed as u32);
            let (_, grads) = run(&gpu, &outs, &anchors(), &CONFIG, IM_INFO).unwrap();
            for l in 0..2 {
                for k in 0..2 {
                    let mut probe_outputs = outs.clone();
                    let mut at = |v: &[f32]| {
                        probe_outputs[l][k] = v.to_vec();
                        let loss = run(&gpu, &probe_outputs, &anchors(), &CONFIG, IM_INFO)
                            .unwrap()
                            .0;
                        let total = (loss.loss_rpn_cls + loss.loss_rpn_bbox) as f64;
                        Probe {
                            value: total,
                            magnitude: total.abs(),
                        }
                    };
                    check_gradient(
                        &format!("seed {seed} level {l} output {k}"),
                        &outs[l][k],
                        &grads[l][k],
                        &mut at,
                        GradCheck {
                            step: 1e-2,
                            max_points: outs[l][k].len(),
                            ..GradCheck::default()
                        },
                    )
                    .unwrap_or_else(|e| panic!("{e}"));
                }
            }
        }
    }
}
