//! PaddleDetection's RPN loss on the device (`device/src/rpn_loss.rs`,
//! core's `rcnn::rpn_loss`). What goes up: per level, the sampled anchors'
//! logit positions (foreground first) and the foreground deltas' targets,
//! about 256 rows an image. The gradients are zeroed and written in place;
//! what comes back is the block partials of the two loss sums.
use pulsefocus_core::rcnn::rpn_loss::{check_rpn_loss, AnchorSite, SIGMA};
use pulsefocus_core::rcnn::{RpnLevelGrad, RpnLevelOutput, RpnLoss, RpnTargets};

use super::{elementwise, fail, index_count};
use crate::driver::KernelArgs;
use crate::{DeviceBuffer, Gpu, GpuError};

const NAME: &str = "rpn_loss";

/// One level's sampled rows as the kernel takes them: the logit position
/// of each foreground anchor, then of each background anchor, and the
/// foreground's targets, four a row.
#[derive(Debug, Default)]
struct LevelRows {
    fg_sites: Vec<u32>,
    bg_sites: Vec<u32>,
    targets: Vec<f32>,
}

impl Gpu {
    /// The loss of the batch whose image `n` has targets `targets[n]`,
    /// with `anchors_per_cell` anchors in every cell of every level; the
    /// gradients (one per level, overwritten) as core's `rpn_loss`'s.
    pub fn rpn_loss(
        &self,
        levels: &[RpnLevelOutput<'_, DeviceBuffer>],
        anchors_per_cell: usize,
        targets: &[RpnTargets],
        grads: &mut [RpnLevelGrad<'_, DeviceBuffer>],
    ) -> Result<RpnLoss, GpuError> {
        check_rpn_loss(levels, anchors_per_cell, targets, grads, |b| b.len())
            .or_else(|message| fail(NAME, message))?;
        let a_count = anchors_per_cell;
        let cells: Vec<usize> = levels.iter().map(|l| l.height * l.width).collect();
        let mut rows: Vec<LevelRows> = levels.iter().map(|_| LevelRows::default()).collect();
        for (n, t) in targets.iter().enumerate() {
            let site = |k: usize| {
                AnchorSite::locate(k, &cells, a_count).expect("check_rpn_loss checked the anchors")
            };
            for (&k, target) in t.fg.iter().zip(&t.fg_deltas) {
                let s = site(k);
                let level = &mut rows[s.level];
                // Below the logits' length, which index_count checks below.
                level
                    .fg_sites
                    .push(s.logit(n, a_count, cells[s.level]) as u32);
                level.targets.extend(target);
            }
            for &k in &t.bg {
                let s = site(k);
                rows[s.level]
                    .bg_sites
                    .push(s.logit(n, a_count, cells[s.level]) as u32);
            }
        }
        let sampled: usize = rows
            .iter()
            .map(|r| r.fg_sites.len() + r.bg_sites.len())
            .sum();
        let norm = 1.0 / sampled.max(1) as f32;
        let (mut cls_sum, mut bbox_sum) = (0.0f64, 0.0f64);
        for (((level, grad), rows), &cells) in levels.iter().zip(grads).zip(rows).zip(&cells) {
            let logits = targets.len() * a_count * cells;
            index_count(NAME, "bbox_pred", 4 * logits)?;
            self.fill(logits, grad.cls_logits, 0.0)?;
            self.fill(4 * logits, grad.bbox_pred, 0.0)?;
            let LevelRows {
                fg_sites,
                bg_sites,
                targets: deltas,
            } = rows;
            let (fg_rows, count) = (fg_sites.len(), fg_sites.len() + bg_sites.len());
            if count == 0 {
                continue;
            }
            let sites = self.upload(&[fg_sites, bg_sites].concat())?;
            let deltas = self.upload(&deltas)?;
            let mut cls_losses = self.alloc::<f32>(count)?;
            let mut bbox_losses = self.alloc::<f32>(count)?;
            let mut args = KernelArgs::new();
            args.input(level.cls_logits, logits)
                .input(level.bbox_pred, 4 * logits)
                .input(&sites, count)
                .input(&deltas, 4 * fg_rows)
                .output(grad.cls_logits, logits)
                .output(grad.bbox_pred, 4 * logits)
                .output(&mut cls_losses, count)
                .output(&mut bbox_losses, count);
            // Rows, cells and anchors are below the logits' count (< 2^32).
            args.u32(count as u32)
                .u32(fg_rows as u32)
                .u32(cells as u32)
                .u32(a_count as u32)
                .f32(SIGMA * SIGMA)
                .f32(norm);
            self.launch("rpn_loss_rows", elementwise(count as u32), &args)?;
            cls_sum += self.sum(count, &cls_losses, false)?;
            bbox_sum += self.sum(count, &bbox_losses, false)?;
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
    use pulsefocus_core::gradcheck::{check_gradient, GradCheck, Probe, SEEDS};

    /// Two levels of 2x3 and 1x2 cells, 2 anchors a cell (16 anchors an
    /// image), one image.
    const SIZES: [[usize; 2]; 2] = [[2, 3], [1, 2]];

    fn targets() -> Vec<RpnTargets> {
        vec![RpnTargets {
            fg: vec![1, 13],
            fg_deltas: vec![[0.3, -0.2, 1.5, 0.05], [-0.4, 0.1, 0.0, 0.9]],
            bg: vec![0, 4, 7, 12, 15],
        }]
    }

    /// Each level's `[cls_logits, bbox_pred]` (or their gradients).
    type Levels = Vec<[Vec<f32>; 2]>;

    /// `(loss, gradients)` on the device.
    fn run(
        gpu: &Gpu,
        outputs: &[[Vec<f32>; 2]],
        targets: &[RpnTargets],
    ) -> Result<(RpnLoss, Levels), GpuError> {
        let up_outputs: Vec<[DeviceBuffer; 2]> = outputs
            .iter()
            .map(|[c, b]| [up(gpu, c), up(gpu, b)])
            .collect();
        let mut up_grads: Vec<[DeviceBuffer; 2]> = outputs
            .iter()
            .map(|[c, b]| [up(gpu, &vec![5.0; c.len()]), up(gpu, &vec![5.0; b.len()])])
            .collect();
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
        let loss = gpu.rpn_loss(&levels, 2, targets, &mut grads)?;
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

    #[test]
    fn bad_targets_and_short_buffers_are_errors() {
        let gpu = gpu();
        let outs = outputs(1);
        let mut bad = targets();
        bad[0].bg.push(16);
        let err = run(&gpu, &outs, &bad).unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel rpn_loss: rpn_loss: image 0: anchor 16 of 16"
        );
        let mut bad = targets();
        bad[0].bg.push(13);
        let err = run(&gpu, &outs, &bad).unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel rpn_loss: rpn_loss: image 0: anchor 13 sampled twice"
        );
        let mut bad = targets();
        bad[0].fg_deltas.pop();
        assert!(run(&gpu, &outs, &bad).is_err());
        let mut short = outs.clone();
        short[1][1].pop();
        let err = run(&gpu, &short, &targets()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel rpn_loss: rpn_loss: level 1 bbox_pred has 15 elements, needs at least 16"
        );
    }

    /// No sampled anchor: losses 0 and zero gradients everywhere.
    #[test]
    fn nothing_sampled_costs_nothing() {
        let gpu = gpu();
        let none = [RpnTargets {
            fg: vec![],
            fg_deltas: vec![],
            bg: vec![],
        }];
        let (loss, grads) = run(&gpu, &outputs(2), &none).unwrap();
        assert_eq!(loss, RpnLoss::default());
        for [c, b] in grads {
            assert!(c.iter().chain(&b).all(|&g| g == 0.0));
        }
    }

    /// Finite differences of the device's `loss_rpn_cls + loss_rpn_bbox`
    /// against the device's gradients, on both levels' outputs.
    #[test]
    fn gradient_matches_finite_differences() {
        let gpu = gpu();
        for seed in SEEDS {
            let outs = outputs(seed as u32);
            let (_, grads) = run(&gpu, &outs, &targets()).unwrap();
            for l in 0..2 {
                for k in 0..2 {
                    let mut probe_outputs = outs.clone();
                    let mut at = |v: &[f32]| {
                        probe_outputs[l][k] = v.to_vec();
                        let loss = run(&gpu, &probe_outputs, &targets()).unwrap().0;
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
