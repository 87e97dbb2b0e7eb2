//! PaddleDetection's RPN loss (`RPNHead.get_loss`, `FPNRPNHead.get_loss`)
//! over a batch, with its gradients with respect to the head's raw outputs.
//!
//! Paddle transposes each level's `rpn_cls_logits` `[N, A, H, W]` to
//! `[N, H, W, A]` and `rpn_bbox_pred` `[N, 4A, H, W]` to `[N, H*W*A, 4]`,
//! concatenates the levels per image (FPN, lowest level first) and flattens
//! the batch, so that anchor `k` of image `n` (the order of
//! `anchors::rpn_anchors`) is logit `(n, a, h, w)` and deltas
//! `(n, 4a..4a+4, h, w)` of its level. Here the outputs are read in place
//! at those positions instead.
//!
//! - `loss_rpn_cls`: sigmoid cross-entropy of the sampled anchors' logits
//!   against their labels, averaged over all sampled anchors of the batch
//!   (one `reduce_mean` over the concatenated batch);
//! - `loss_rpn_bbox`: smooth-L1 (sigma 3) of the foreground anchors' deltas
//!   against their targets, summed, divided by the same count of sampled
//!   anchors of the batch (`reduce_prod(shape(score_tgt))`), not by the
//!   foreground count.
//!
//! A batch with no sampled anchor has losses 0 (Paddle would divide by 0).

//! A backend runs it as `Backend::rpn_loss` together with the targets (the
//! CPU's is `rpn_target_assign` then [`rpn_loss`]): a device draws the
//! targets itself from the ground truth, and the outputs never come down.

use crate::losses::smooth_l1;
use crate::rcnn::rpn_target::RpnTargets;

/// `RPNHead.get_loss`'s smooth-L1 sigma.
pub const SIGMA: f32 = 3.0;

/// One level's head outputs for the batch, in buffers of any backend
/// (`Vec<f32>` on the CPU); a buffer may be longer than its tensor.
#[derive(Debug)]
pub struct RpnLevelOutput<'a, Buf: ?Sized> {
    pub height: usize,
    pub width: usize,
    /// `rpn_cls_logits`, `[N, A, H, W]`.
    pub cls_logits: &'a Buf,
    /// `rpn_bbox_pred`, `[N, 4A, H, W]`.
    pub bbox_pred: &'a Buf,
}

/// The gradients of one level's outputs, same shapes.
#[derive(Debug)]
pub struct RpnLevelGrad<'a, Buf: ?Sized> {
    pub cls_logits: &'a mut Buf,
    pub bbox_pred: &'a mut Buf,
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RpnLoss {
    pub loss_rpn_cls: f32,
    pub loss_rpn_bbox: f32,
}

/// Where one anchor's outputs are: its level, its cell `h * W + w` there
/// and its slot `a` in the cell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AnchorSite {
    pub level: usize,
    pub cell: usize,
    pub a: usize,
}

impl AnchorSite {
    /// Anchor `anchor` of an image whose levels (concatenated in order)
    /// have `cells[l]` cells of `anchors_per_cell` anchors each; None past
    /// the last level.
    pub fn locate(anchor: usize, cells: &[usize], anchors_per_cell: usize) -> Option<AnchorSite> {
        let mut k = anchor;
        for (level, &count) in cells.iter().enumerate() {
            let count = count * anchors_per_cell;
            if k < count {
                return Some(AnchorSite {
                    level,
                    cell: k / anchors_per_cell,
                    a: k % anchors_per_cell,
                });
            }
            k -= count;
        }
        None
    }

    /// Its logit in the level's `[N, A, H, W]` for image `n`, the level
    /// having `cells` cells; its `j`-th delta is `delta(.., j)` in `[N,
    /// 4A, H, W]`.
    pub fn logit(&self, n: usize, anchors_per_cell: usize, cells: usize) -> usize {
        (n * anchors_per_cell + self.a) * cells + self.cell
    }

    pub fn delta(&self, n: usize, anchors_per_cell: usize, cells: usize, j: usize) -> usize {
        (n * 4 * anchors_per_cell + 4 * self.a + j) * cells + self.cell
    }
}

/// Checks the loss's buffers, as every backend does before it touches
/// them: a gradient per level, positive sizes, buffers (`len` gives a
/// buffer's length) long enough for `images` images. Returns a message
/// naming the first that is not.
pub fn check_rpn_loss<Buf: ?Sized>(
    levels: &[RpnLevelOutput<Buf>],
    anchors_per_cell: usize,
    images: usize,
    grads: &[RpnLevelGrad<Buf>],
    len: impl Fn(&Buf) -> usize,
) -> Result<(), String> {
    if levels.len() != grads.len() {
        return Err(format!(
            "rpn_loss: {} levels and {} gradients",
            levels.len(),
            grads.len()
        ));
    }
    if anchors_per_cell == 0 {
        return Err("rpn_loss: anchors_per_cell must be positive".into());
    }
    for (l, (level, grad)) in levels.iter().zip(grads).enumerate() {
        if level.height == 0 || level.width == 0 {
            return Err(format!("rpn_loss: level {l} has no cell"));
        }
        let logits = images * anchors_per_cell * level.height * level.width;
        for (name, got, want) in [
            ("cls_logits", len(level.cls_logits), logits),
            ("bbox_pred", len(level.bbox_pred), 4 * logits),
            ("cls gradient", len(grad.cls_logits), logits),
            ("bbox gradient", len(grad.bbox_pred), 4 * logits),
        ] {
            if got < want {
                return Err(format!(
                    "rpn_loss: level {l} {name} has {got} elements, needs at least {want}"
                ));
            }
        }
    }
    Ok(())
}

/// Checks each image has one delta row per foreground anchor and each
/// sampled anchor is one of the image's `anchors`, sampled once.
fn check_targets(targets: &[RpnTargets], anchors: usize) -> Result<(), String> {
    let mut sampled = vec![usize::MAX; anchors];
    for (n, t) in targets.iter().enumerate() {
        if t.fg_deltas.len() != t.fg.len() {
            return Err(format!(
                "rpn_loss: image {n} has {} foreground anchors and {} delta rows",
                t.fg.len(),
                t.fg_deltas.len()
            ));
        }
        for &k in t.fg.iter().chain(&t.bg) {
            // `sampled[k] == n`: already sampled in this image.
            match sampled.get_mut(k) {
                None => return Err(format!("rpn_loss: image {n}: anchor {k} of {anchors}")),
                Some(seen) if *seen == n => {
                    return Err(format!("rpn_loss: image {n}: anchor {k} sampled twice"))
                }
                Some(seen) => *seen = n,
            }
        }
    }
    Ok(())
}

/// The loss of the batch whose image `n` has targets `targets[n]`, with
/// `anchors_per_cell` anchors in every cell of every level. The gradient
/// of `loss_rpn_cls + loss_rpn_bbox` is written to `grads` (one per level),
/// zero where no sampled anchor is. Panics with `check_rpn_loss`'s or the
/// targets' check's message on bad inputs.
pub fn rpn_loss<Buf: AsRef<[f32]> + AsMut<[f32]> + ?Sized>(
    levels: &[RpnLevelOutput<Buf>],
    anchors_per_cell: usize,
    targets: &[RpnTargets],
    grads: &mut [RpnLevelGrad<Buf>],
) -> RpnLoss {
    let a_count = anchors_per_cell;
    let batch = targets.len();
    let cells: Vec<usize> = levels.iter().map(|l| l.height * l.width).collect();
    let anchors = cells.iter().sum::<usize>() * a_count;
    if let Err(msg) = check_rpn_loss(levels, a_count, batch, grads, |b| b.as_ref().len())
        .and_then(|()| check_targets(targets, anchors))
    {
        panic!("{msg}");
    }
    for (grad, &cells) in grads.iter_mut().zip(&cells) {
        let len = batch * a_count * cells;
        grad.cls_logits.as_mut()[..len].fill(0.0);
        grad.bbox_pred.as_mut()[..4 * len].fill(0.0);
    }
    let site = |anchor: usize| {
        AnchorSite::locate(anchor, &cells, a_count).expect("check_rpn_loss checked the anchors")
    };

    let sampled: usize = targets.iter().map(|t| t.fg.len() + t.bg.len()).sum();
    if sampled == 0 {
        return RpnLoss::default();
    }
    let norm = 1.0 / sampled as f32;
    let mut cls_sum = 0.0f64;
    let mut bbox_sum = 0.0f64;
    for (n, t) in targets.iter().enumerate() {
        let labelled =
            t.fg.iter()
                .map(|&k| (k, 1.0))
                .chain(t.bg.iter().map(|&k| (k, 0.0)));
        for (anchor, label) in labelled {
            let s = site(anchor);
            let at = s.logit(n, a_count, cells[s.level]);
            let x = levels[s.level].cls_logits.as_ref()[at];
            // max(x, 0) - x z + ln(1 + e^-|x|), gradient sigmoid(x) - z.
            cls_sum += (x.max(0.0) - x * label + (-x.abs()).exp().ln_1p()) as f64;
            grads[s.level].cls_logits.as_mut()[at] = norm * (1.0 / (1.0 + (-x).exp()) - label);
        }
        for (&anchor, target) in t.fg.iter().zip(&t.fg_deltas) {
            let s = site(anchor);
            let at = |j: usize| s.delta(n, a_count, cells[s.level], j);
            let pred = [0, 1, 2, 3].map(|j| levels[s.level].bbox_pred.as_ref()[at(j)]);
            let mut grad = [0.0; 4];
            bbox_sum += smooth_l1(&pred, target, None, SIGMA, &mut grad, norm) as f64;
            for (j, g) in grad.into_iter().enumerate() {
                grads[s.level].bbox_pred.as_mut()[at(j)] = g;
            }
        }
    }
    RpnLoss {
        loss_rpn_cls: (cls_sum / sampled as f64) as f32,
        loss_rpn_bbox: (bbox_sum / sampled as f64) as f32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{floats, read};
    use crate::gradcheck::{check_gradient, random_vec, GradCheck, Probe, SEEDS};
    use crate::models::rpn_head::{AnchorGeneratorSpec, RpnHeadSpec, RpnLevels};
    use crate::rcnn::anchors::rpn_anchors;
    use crate::rcnn::rpn_target::paddle_fixture::paddle_case;
    use crate::rcnn::rpn_target::{rpn_target_assign, Draw, ImInfo};
    use crate::rcnn::RpnTargetConfig;

    /// Outputs and gradient buffers of every level, owned.
    struct Outputs {
        sizes: Vec<[usize; 2]>,
        cls: Vec<Vec<f32>>,
        bbox: Vec<Vec<f32>>,
    }

    impl Outputs {
        fn field(&mut self, which: &str, level: usize) -> &mut Vec<f32> {
            match which {
                "cls_logits" => &mut self.cls[level],
                _ => &mut self.bbox[level],
            }
        }

        fn loss(
            &self,
            a: usize,
            targets: &[RpnTargets],
        ) -> (RpnLoss, Vec<Vec<f32>>, Vec<Vec<f32>>) {
            let levels: Vec<RpnLevelOutput<Vec<f32>>> = (0..self.sizes.len())
                .map(|l| RpnLevelOutput {
                    height: self.sizes[l][0],
                    width: self.sizes[l][1],
                    cls_logits: &self.cls[l],
                    bbox_pred: &self.bbox[l],
                })
                .collect();
            let mut gcls: Vec<Vec<f32>> =
                self.cls.iter().map(|c| vec![f32::NAN; c.len()]).collect();
            let mut gbbox: Vec<Vec<f32>> =
                self.bbox.iter().map(|b| vec![f32::NAN; b.len()]).collect();
            let mut grads: Vec<RpnLevelGrad<Vec<f32>>> = gcls
                .iter_mut()
                .zip(gbbox.iter_mut())
                .map(|(c, b)| RpnLevelGrad {
                    cls_logits: c,
                    bbox_pred: b,
                })
                .collect();
            let loss = rpn_loss(&levels, a, targets, &mut grads);
            (loss, gcls, gbbox)
        }
    }

    fn close(got: &[f32], want: &[f32], tolerance: f32, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= tolerance * (w.abs().max(1e-3)),
                "{what}[{i}]: {g} vs Paddle's {w}"
            );
        }
    }

    /// Paddle's losses and gradients on the fixture's outputs and targets
    /// (`core/tests/fixtures/faster_rcnn/rpn_targets.py`).
    #[test]
    fn equals_paddles_rpn_head_loss() {
        let fixture = read("faster_rcnn/rpn_targets.json");
        for name in ["c4", "c4_keep_all", "fpn"] {
            let json = &fixture[name];
            let targets = paddle_case(json).targets();
            let levels = json["levels"].as_array().expect("levels");
            let dim = |l: &serde_json::Value, k: &str| l[k].as_u64().expect("a size") as usize;
            let outputs = Outputs {
                sizes: levels
                    .iter()
                    .map(|l| [dim(l, "height"), dim(l, "width")])
                    .collect(),
                cls: levels.iter().map(|l| floats(&l["cls_logits"])).collect(),
                bbox: levels.iter().map(|l| floats(&l["bbox_pred"])).collect(),
            };
            let a = json["anchors_per_cell"].as_u64().expect("anchors_per_cell") as usize;
            let (loss, gcls, gbbox) = outputs.loss(a, &targets);
            let want_cls = json["loss_rpn_cls"].as_f64().expect("loss") as f32;
            let want_bbox = json["loss_rpn_bbox"].as_f64().expect("loss") as f32;
            close(&[loss.loss_rpn_cls], &[want_cls], 1e-4, name);
            close(&[loss.loss_rpn_bbox], &[want_bbox], 1e-4, name);
            for (l, level) in levels.iter().enumerate() {
                close(&gcls[l], &floats(&level["grad_cls_logits"]), 1e-5, name);
                close(&gbbox[l], &floats(&level["grad_bbox_pred"]), 1e-5, name);
            }
        }
    }

    #[test]
    fn the_box_loss_is_divided_by_every_sampled_anchor() {
        // One image, one level of 1x2 cells with one anchor each: anchor 0
        // foreground with targets off by 1 in x (smooth-L1 1 - 1/18),
        // anchor 1 background; logits 0 (cross-entropy ln 2 each).
        let targets = [RpnTargets {
            fg: vec![0],
            fg_deltas: vec![[1.0, 0.0, 0.0, 0.0]],
            bg: vec![1],
        }];
        let outputs = Outputs {
            sizes: vec![[1, 2]],
            cls: vec![vec![0.0; 2]],
            bbox: vec![vec![0.0; 8]],
        };
        let (loss, gcls, gbbox) = outputs.loss(1, &targets);
        assert!((loss.loss_rpn_cls - 2f32.ln()).abs() < 1e-6);
        assert!((loss.loss_rpn_bbox - (1.0 - 1.0 / 18.0) / 2.0).abs() < 1e-6);
        assert_eq!(gcls[0], [0.5 * (0.5 - 1.0), 0.5 * 0.5]);
        // Channel x of anchor 0 at cell 0; the rest zero.
        assert_eq!(gbbox[0], [-0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    }

    /// Finite differences of `loss_rpn_cls + loss_rpn_bbox` with respect to
    /// both outputs of both levels of a 2-image FPN batch, targets fixed.
    #[test]
    fn gradient_matches_finite_differences_for_any_seed() {
        let spec = RpnHeadSpec {
            channels: 8,
            anchors: AnchorGeneratorSpec::faster_rcnn(),
            levels: Some(RpnLevels {
                anchor_start_size: 16.0,
                min_level: 2,
                max_level: 3,
            }),
        };
        let sizes = vec![[6, 8], [3, 4]];
        let anchors = rpn_anchors(&spec, &sizes).boxes;
        let a = spec.anchors_per_cell();
        let config = RpnTargetConfig {
            batch_size_per_im: 64,
            straddle_thresh: -1.0,
            ..RpnTargetConfig::default()
        };
        let info = ImInfo {
            height: 24.0,
            width: 32.0,
            scale: 1.0,
        };
        for seed in SEEDS {
            let targets: Vec<RpnTargets> = (0..2)
                .map(|n| {
                    let r = random_vec(seed * 10 + n, 8);
                    let gts: Vec<[f32; 4]> = r
                        .chunks(4)
                        .map(|v| {
                            let (x, y) = (12.0 + 10.0 * v[0], 10.0 + 8.0 * v[1]);
                            let (w, h) = (14.0 + 6.0 * v[2], 12.0 + 5.0 * v[3]);
                            [x, y, x + w, y + h]
                        })
                        .collect();
                    let draw = Draw {
                        seed,
                        image: n as u32,
                    };
                    rpn_target_assign(&anchors, &gts, &[false, false], info, &config, draw)
                })
                .collect();
            assert!(targets.iter().all(|t| !t.fg.is_empty() && !t.bg.is_empty()));
            let mut outputs = Outputs {
                cls: sizes
                    .iter()
                    .enumerate()
                    .map(|(l, s)| random_vec(seed * 100 + l as u64, 2 * a * s[0] * s[1]))
                    .collect(),
                bbox: sizes
                    .iter()
                    .enumerate()
                    .map(|(l, s)| random_vec(seed * 200 + l as u64, 8 * a * s[0] * s[1]))
                    .collect(),
                sizes: sizes.clone(),
            };
            let (_, gcls, gbbox) = outputs.loss(a, &targets);
            for l in 0..2 {
                for (which, analytic) in [("cls_logits", &gcls[l]), ("bbox_pred", &gbbox[l])] {
                    let x = outputs.field(which, l).clone();
                    let mut at = |v: &[f32]| {
                        outputs.field(which, l).copy_from_slice(v);
                        let loss = outputs.loss(a, &targets).0;
                        let total = (loss.loss_rpn_cls + loss.loss_rpn_bbox) as f64;
                        Probe {
                            value: total,
                            magnitude: total.abs(),
                        }
                    };
                    let result = check_gradient(
                        &format!("seed {seed} level {l} {which}"),
                        &x,
                        analytic,
                        &mut at,
                        GradCheck {
                            step: 1e-2,
                            max_points: x.len(),
                            ..GradCheck::default()
                        },
                    );
                    at(&x);
                    result.unwrap_or_else(|e| panic!("{e}"));
                }
            }
        }
    }
}
