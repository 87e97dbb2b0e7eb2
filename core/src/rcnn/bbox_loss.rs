//! The Faster R-CNN box head's loss, as PaddleDetection's `BBoxHead.get_loss`
//! writes it with Paddle's operators, and its gradient with respect to the
//! head's two outputs, side by side; Cascade R-CNN's stages
//! (`CascadeBBoxHead.get_loss`) are the same with class-agnostic boxes and
//! each stage's loss weight.
//!
//! For the `R` RoIs `generate_proposal_labels` sampled (every image's,
//! concatenated):
//! - `loss_cls = reduce_mean(softmax_with_cross_entropy(cls_score, label))`:
//!   the mean over the `R` RoIs of the cross-entropy of its `C` class logits
//!   (background is class 0) against its label;
//! - `loss_bbox = reduce_mean(smooth_l1(bbox_pred, bbox_targets, inside,
//!   outside, sigma 1))`: `smooth_l1` sums each RoI's `4 * C` elements
//!   (8 class-agnostic), and the mean is again over the `R` RoIs. The weights
//!   are 1 on the four deltas of a foreground RoI's own class (class 1
//!   class-agnostic) and 0 elsewhere, so only those deltas learn, but the
//!   divisor is all `R` RoIs, background ones included;
//! - a cascade stage multiplies both means by its loss weight (1, 0.5,
//!   0.25: `loss_cls_{i}`, `loss_loc_{i}`).
//!
//! The labels and targets are constants of the step, as in Paddle.

use crate::losses::{smooth_l1, softmax_cross_entropy};
use crate::models::bbox_head::CLASS_AGNOSTIC_BOXES;

/// What `generate_proposal_labels` writes for the sampled RoIs, in its
/// layout: `labels` `[R]` (0 background), the others `[R, 4 * C]` (row `r`
/// holds four deltas per class, class-major) or `[R, 8]` class-agnostic.
#[derive(Debug, Clone, Copy)]
pub struct RoiTargets<'a> {
    pub labels: &'a [i32],
    pub bbox_targets: &'a [f32],
    pub bbox_inside_weights: &'a [f32],
    pub bbox_outside_weights: &'a [f32],
}

/// The box head's two loss terms (`loss_cls`, `loss_bbox`), each already a
/// mean over the RoIs; the total is their sum.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BBoxHeadLoss {
    pub cls: f32,
    pub bbox: f32,
}

/// The loss of `cls_score` (`[R, classes]` logits) and `bbox_pred`
/// (`[R, 4 * classes]`) against `targets`; the gradients of `cls + bbox`
/// with respect to both are written to (overwrite) `grad_cls_score` and
/// `grad_bbox_pred`. No RoIs cost nothing (Paddle would take the mean of
/// nothing; `generate_proposal_labels` always returns the ground truth
/// boxes among the RoIs, so a batch has some).
pub fn bbox_head_loss(
    cls_score: &[f32],
    bbox_pred: &[f32],
    classes: usize,
    targets: &RoiTargets,
    grad_cls_score: &mut [f32],
    grad_bbox_pred: &mut [f32],
) -> BBoxHeadLoss {
    weighted_bbox_head_loss(
        cls_score,
        bbox_pred,
        classes,
        targets,
        1.0,
        grad_cls_score,
        grad_bbox_pred,
    )
}

/// [`bbox_head_loss`] times `loss_weight` (both terms and the gradients),
/// with `bbox_pred` and the targets either `[R, 4 * classes]` or
/// class-agnostic `[R, 8]`: a cascade stage's `loss_cls_{i}` and
/// `loss_loc_{i}`.
pub fn weighted_bbox_head_loss(
    cls_score: &[f32],
    bbox_pred: &[f32],
    classes: usize,
    targets: &RoiTargets,
    loss_weight: f32,
    grad_cls_score: &mut [f32],
    grad_bbox_pred: &mut [f32],
) -> BBoxHeadLoss {
    let rois = targets.labels.len();
    assert_eq!(
        cls_score.len(),
        rois * classes,
        "bbox_head_loss: cls_score is [R, C]"
    );
    let deltas = if bbox_pred.len() == rois * 4 * CLASS_AGNOSTIC_BOXES {
        4 * CLASS_AGNOSTIC_BOXES
    } else {
        4 * classes
    };
    assert_eq!(
        bbox_pred.len(),
        rois * deltas,
        "bbox_head_loss: bbox_pred is [R, 4C] or [R, 8]"
    );
    for (what, v) in [
        ("bbox_targets", targets.bbox_targets),
        ("bbox_inside_weights", targets.bbox_inside_weights),
        ("bbox_outside_weights", targets.bbox_outside_weights),
    ] {
        assert_eq!(
            v.len(),
            bbox_pred.len(),
            "bbox_head_loss: {what} is as bbox_pred"
        );
    }
    assert_eq!(
        grad_cls_score.len(),
        cls_score.len(),
        "bbox_head_loss: grad_cls_score"
    );
    assert_eq!(
        grad_bbox_pred.len(),
        bbox_pred.len(),
        "bbox_head_loss: grad_bbox_pred"
    );
    if rois == 0 {
        return BBoxHeadLoss::default();
    }
    // reduce_mean over the RoIs, times the weight: each RoI's term and
    // gradient weigh loss_weight / R.
    let scale = loss_weight / rois as f32;
    let (mut cls_sum, mut bbox_sum) = (0.0f64, 0.0f64);
    for (r, &label) in targets.labels.iter().enumerate() {
        let label = usize::try_from(label)
            .ok()
            .filter(|&l| l < classes)
            .unwrap_or_else(|| {
                panic!("bbox_head_loss: RoI {r} has label {label} of {classes} classes")
            });
        let logits = &cls_score[r * classes..][..classes];
        let grad = &mut grad_cls_score[r * classes..][..classes];
        cls_sum += softmax_cross_entropy(logits, label, Some((grad, scale))) as f64;
        let row = r * deltas..(r + 1) * deltas;
        bbox_sum += smooth_l1(
            &bbox_pred[row.clone()],
            &targets.bbox_targets[row.clone()],
            Some((
                &targets.bbox_inside_weights[row.clone()],
                &targets.bbox_outside_weights[row.clone()],
            )),
            1.0,
            &mut grad_bbox_pred[row],
            scale,
        ) as f64;
    }
    BBoxHeadLoss {
        cls: (cls_sum / rois as f64) as f32 * loss_weight,
        bbox: (bbox_sum / rois as f64) as f32 * loss_weight,
    }
}

/// The box head's loss on a backend (`Backend::bbox_head_loss`): the
/// outputs stay where the head wrote them, `cls_score` `[R, classes]` and
/// `bbox_pred` `[R, deltas]` in the backend's row order (FPN's groups the
/// RoIs by level), and the targets, from the host, in Paddle's.
#[derive(Debug, Clone, Copy)]
pub struct BoxHeadLossArgs<'a> {
    pub classes: usize,
    /// Deltas per RoI: `4 * classes`, or 8 class-agnostic (a cascade stage).
    pub deltas: usize,
    pub loss_weight: f32,
    /// Paddle's order, rows of `deltas`.
    pub targets: RoiTargets<'a>,
    /// The row of the outputs holding each RoI's (Paddle's order): a
    /// permutation of `0..R`.
    pub rows: &'a [usize],
}

impl BoxHeadLossArgs<'_> {
    pub fn rois(&self) -> usize {
        self.targets.labels.len()
    }

    /// Checks the sizes, the labels, the targets' lengths, that `rows` is
    /// a permutation and the output buffers (`lens`: `cls_score`,
    /// `bbox_pred` and their gradients) are long enough; returns a message
    /// naming the first that is not.
    pub fn check(&self, lens: [usize; 4]) -> Result<(), String> {
        let (rois, classes) = (self.rois(), self.classes);
        if classes == 0 || ![4 * classes, 4 * CLASS_AGNOSTIC_BOXES].contains(&self.deltas) {
            return Err(format!(
                "bbox_head_loss: {} deltas a RoI with {classes} classes",
                self.deltas
            ));
        }
        if !self.loss_weight.is_finite() {
            return Err(format!("bbox_head_loss: loss weight {}", self.loss_weight));
        }
        let t = &self.targets;
        for (name, got) in [
            ("bbox_targets", t.bbox_targets.len()),
            ("bbox_inside_weights", t.bbox_inside_weights.len()),
            ("bbox_outside_weights", t.bbox_outside_weights.len()),
        ] {
            if got != rois * self.deltas {
                return Err(format!(
                    "bbox_head_loss: {name} has {got} elements for {rois} RoIs of {} deltas",
                    self.deltas
                ));
            }
        }
        if let Some((r, label)) = t
            .labels
            .iter()
            .enumerate()
            .find(|(_, &l)| usize::try_from(l).map_or(true, |l| l >= classes))
        {
            return Err(format!(
                "bbox_head_loss: RoI {r} has label {label} of {classes} classes"
            ));
        }
        if self.rows.len() != rois {
            return Err(format!(
                "bbox_head_loss: {} rows for {rois} RoIs",
                self.rows.len()
            ));
        }
        let mut taken = vec![false; rois];
        for (r, &row) in self.rows.iter().enumerate() {
            match taken.get_mut(row) {
                Some(seen) if !*seen => *seen = true,
                _ => {
                    return Err(format!(
                        "bbox_head_loss: RoI {r} at row {row}: not a permutation of {rois} rows"
                    ))
                }
            }
        }
        let names = ["cls_score", "bbox_pred", "grad_cls_score", "grad_bbox_pred"];
        let wants = [rois * classes, rois * self.deltas];
        for (k, (name, got)) in names.into_iter().zip(lens).enumerate() {
            if got < wants[k % 2] {
                return Err(format!(
                    "bbox_head_loss: {name} has {got} elements, needs at least {}",
                    wants[k % 2]
                ));
            }
        }
        Ok(())
    }
}

/// [`weighted_bbox_head_loss`] on outputs in a backend's row order (the
/// CPU backend's `bbox_head_loss`): the rows gathered into Paddle's order,
/// the gradients written back to the rows. Panics with
/// [`BoxHeadLossArgs::check`]'s message on bad inputs.
pub fn bbox_head_loss_at_rows(
    args: &BoxHeadLossArgs,
    cls_score: &[f32],
    bbox_pred: &[f32],
    grad_cls_score: &mut [f32],
    grad_bbox_pred: &mut [f32],
) -> BBoxHeadLoss {
    let lens = [
        cls_score.len(),
        bbox_pred.len(),
        grad_cls_score.len(),
        grad_bbox_pred.len(),
    ];
    if let Err(msg) = args.check(lens) {
        panic!("{msg}");
    }
    let (classes, deltas) = (args.classes, args.deltas);
    let gather = |outputs: &[f32], width: usize| -> Vec<f32> {
        let rows = args.rows.iter();
        rows.flat_map(|&row| &outputs[row * width..][..width])
            .copied()
            .collect()
    };
    let (cls, bbox) = (gather(cls_score, classes), gather(bbox_pred, deltas));
    let (mut grad_cls, mut grad_bbox) = (vec![0.0; cls.len()], vec![0.0; bbox.len()]);
    let loss = weighted_bbox_head_loss(
        &cls,
        &bbox,
        classes,
        &args.targets,
        args.loss_weight,
        &mut grad_cls,
        &mut grad_bbox,
    );
    for (r, &row) in args.rows.iter().enumerate() {
        grad_cls_score[row * classes..][..classes]
            .copy_from_slice(&grad_cls[r * classes..][..classes]);
        grad_bbox_pred[row * deltas..][..deltas]
            .copy_from_slice(&grad_bbox[r * deltas..][..deltas]);
    }
    loss
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{floats, read};
    use crate::gradcheck::{check_gradient, random_vec, GradCheck, Probe, SEEDS};

    fn targets_of(case: &serde_json::Value) -> (Vec<i32>, [Vec<f32>; 3]) {
        let labels = case["labels"]
            .as_array()
            .expect("labels")
            .iter()
            .map(|l| l.as_i64().expect("a label") as i32)
            .collect();
        (
            labels,
            [
                floats(&case["bbox_targets"]),
                floats(&case["bbox_inside_weights"]),
                floats(&case["bbox_outside_weights"]),
            ],
        )
    }

    /// Paddle's `get_loss` ops on targets `generate_proposal_labels` made for
    /// two images, and on fractional hand-made weights
    /// (`core/tests/fixtures/faster_rcnn/bbox_head.py`): both losses within
    /// 1e-4 relative, both gradients within 1e-5.
    #[test]
    fn loss_and_gradients_equal_paddles() {
        let f = read("faster_rcnn/bbox_head.json");
        let classes = f["classes"].as_u64().expect("classes") as usize;
        for case in f["losses"].as_array().expect("losses") {
            let name = case["name"].as_str().expect("name");
            let (labels, [bbox_targets, inside, outside]) = targets_of(case);
            let targets = RoiTargets {
                labels: &labels,
                bbox_targets: &bbox_targets,
                bbox_inside_weights: &inside,
                bbox_outside_weights: &outside,
            };
            let cls_score = floats(&case["cls_score"]);
            let bbox_pred = floats(&case["bbox_pred"]);
            // Stale values in the gradient buffers must be overwritten.
            let mut grad_cls = vec![7.0; cls_score.len()];
            let mut grad_bbox = vec![7.0; bbox_pred.len()];
            let loss = bbox_head_loss(
                &cls_score,
                &bbox_pred,
                classes,
                &targets,
                &mut grad_cls,
                &mut grad_bbox,
            );
            for (what, got, want) in [
                ("loss_cls", loss.cls, &case["loss_cls"]),
                ("loss_bbox", loss.bbox, &case["loss_bbox"]),
            ] {
                let want = want.as_f64().expect("a loss") as f32;
                assert!(
                    (got - want).abs() <= 1e-4 * want.abs(),
                    "{name} {what}: {got} vs Paddle's {want}"
                );
            }
            for (what, got, want) in [
                ("cls_score", &grad_cls, floats(&case["grad_cls_score"])),
                ("bbox_pred", &grad_bbox, floats(&case["grad_bbox_pred"])),
            ] {
                assert_eq!(got.len(), want.len(), "{name} grad {what}");
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!((g - w).abs() <= 1e-5, "{name} grad {what}[{i}]: {g} vs {w}");
                }
            }
        }
    }

    /// The gradient of `cls + bbox` against central differences, for RoIs
    /// of three kinds: background (weights 0), foreground with 0/1 weights as
    /// `generate_proposal_labels` writes them, and fractional weights; per
    /// class at weight 1 and class-agnostic at a cascade stage's 0.25.
    #[test]
    fn gradient_matches_finite_differences_for_any_seed() {
        let (rois, classes) = (6, 3);
        for (agnostic, loss_weight) in [(false, 1.0), (true, 0.25)] {
            let deltas = if agnostic { 8 } else { 4 * classes };
            for seed in SEEDS {
                let what = format!("seed {seed}, class-agnostic {agnostic}");
                gradient_check(rois, classes, deltas, loss_weight, seed, &what);
            }
        }
    }

    fn gradient_check(
        rois: usize,
        classes: usize,
        deltas: usize,
        loss_weight: f32,
        seed: u64,
        what: &str,
    ) {
        let cls_score = random_vec(seed, rois * classes);
        let bbox_pred: Vec<f32> = random_vec(seed + 10, rois * deltas)
            .iter()
            .map(|v| 2.0 * v)
            .collect();
        let bbox_targets = random_vec(seed + 20, rois * deltas);
        let labels: Vec<i32> = (0..rois as i32).map(|r| r % classes as i32).collect();
        let mut inside = vec![0.0; rois * deltas];
        for (r, &label) in labels.iter().enumerate() {
            let column = if deltas == 8 { 1 } else { label as usize };
            if label > 0 {
                inside[r * deltas + 4 * column..][..4].fill(1.0);
            }
        }
        // The last RoI: fractional weights on every delta.
        let fractional = random_vec(seed + 30, deltas);
        for (w, f) in inside[(rois - 1) * deltas..].iter_mut().zip(&fractional) {
            *w = f + 1.0;
        }
        let outside: Vec<f32> = inside
            .iter()
            .map(|&w| if w > 0.0 { 2.0 - w * 0.5 } else { 0.0 })
            .collect();
        let targets = RoiTargets {
            labels: &labels,
            bbox_targets: &bbox_targets,
            bbox_inside_weights: &inside,
            bbox_outside_weights: &outside,
        };
        let loss = |score: &[f32], pred: &[f32], grads: &mut (Vec<f32>, Vec<f32>)| {
            weighted_bbox_head_loss(
                score,
                pred,
                classes,
                &targets,
                loss_weight,
                &mut grads.0,
                &mut grads.1,
            )
        };
        let mut grads = (vec![0.0; cls_score.len()], vec![0.0; bbox_pred.len()]);
        loss(&cls_score, &bbox_pred, &mut grads);
        let total = |score: &[f32], pred: &[f32]| {
            let mut scratch = (vec![0.0; score.len()], vec![0.0; pred.len()]);
            let l = loss(score, pred, &mut scratch);
            Probe {
                value: l.cls as f64 + l.bbox as f64,
                magnitude: l.cls.abs() as f64 + l.bbox.abs() as f64,
            }
        };
        check_gradient(
            "bbox_head_loss cls_score",
            &cls_score,
            &grads.0,
            |x| total(x, &bbox_pred),
            GradCheck::default(),
        )
        .unwrap_or_else(|e| panic!("{what}: {e}"));
        check_gradient(
            "bbox_head_loss bbox_pred",
            &bbox_pred,
            &grads.1,
            |x| total(&cls_score, x),
            GradCheck {
                step: 1e-3,
                ..GradCheck::default()
            },
        )
        .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(grads.1.iter().any(|&g| g != 0.0), "{what}: no box gradient");
    }

    /// Paddle's `CascadeBBoxHead.get_loss` on three stages (loss weights 1,
    /// 0.5, 0.25; class-agnostic `[R, 8]` boxes), the first two on
    /// `generate_proposal_labels`' class-agnostic targets, the third on
    /// fractional weights (`core/tests/fixtures/cascade_rcnn/cascade_head.py`):
    /// `loss_cls_{i}`, `loss_loc_{i}` within 1e-4 relative, the gradients of
    /// their sum within 1e-5.
    #[test]
    fn cascade_stage_losses_equal_paddles() {
        let f = read("cascade_rcnn/cascade_head.json");
        let classes = f["classes"].as_u64().expect("classes") as usize;
        for (i, stage) in f["losses"].as_array().expect("stages").iter().enumerate() {
            let (labels, [bbox_targets, inside, outside]) = targets_of(stage);
            let targets = RoiTargets {
                labels: &labels,
                bbox_targets: &bbox_targets,
                bbox_inside_weights: &inside,
                bbox_outside_weights: &outside,
            };
            let cls_score = floats(&stage["cls_score"]);
            let bbox_pred = floats(&stage["bbox_pred"]);
            assert_eq!(bbox_pred.len(), labels.len() * 8);
            let mut grad_cls = vec![7.0; cls_score.len()];
            let mut grad_bbox = vec![7.0; bbox_pred.len()];
            let loss = weighted_bbox_head_loss(
                &cls_score,
                &bbox_pred,
                classes,
                &targets,
                stage["loss_weight"].as_f64().expect("weight") as f32,
                &mut grad_cls,
                &mut grad_bbox,
            );
            for (what, got, want) in [
                ("loss_cls", loss.cls, &stage["loss_cls"]),
                ("loss_loc", loss.bbox, &stage["loss_loc"]),
            ] {
                let want = want.as_f64().expect("a loss") as f32;
                assert!(
                    (got - want).abs() <= 1e-4 * want.abs(),
                    "stage {i} {what}: {got} vs Paddle's {want}"
                );
            }
            for (what, got, want) in [
                ("cls_score", &grad_cls, floats(&stage["grad_cls_score"])),
                ("bbox_pred", &grad_bbox, floats(&stage["grad_bbox_pred"])),
            ] {
                assert_eq!(got.len(), want.len(), "stage {i} grad {what}");
                for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() <= 1e-5,
                        "stage {i} grad {what}[{k}]: {g} vs {w}"
                    );
                }
            }
        }
    }

    #[test]
    fn background_rois_count_in_the_box_mean_but_learn_no_box() {
        // Two RoIs of 2 classes: RoI 0 foreground (class 1, deltas 4..8 off by
        // 0.5: 4 * 0.125 = 0.5), RoI 1 background. loss_bbox = 0.5 / 2.
        let labels = [1, 0];
        let mut inside = [0.0; 16];
        inside[4..8].fill(1.0);
        let targets = RoiTargets {
            labels: &labels,
            bbox_targets: &[0.0; 16],
            bbox_inside_weights: &inside,
            bbox_outside_weights: &inside,
        };
        let mut bbox_pred = [3.0; 16];
        bbox_pred[4..8].fill(0.5);
        let (mut grad_cls, mut grad_bbox) = ([0.0; 4], [9.0; 16]);
        let loss = bbox_head_loss(
            &[0.0; 4],
            &bbox_pred,
            2,
            &targets,
            &mut grad_cls,
            &mut grad_bbox,
        );
        assert!((loss.bbox - 0.25).abs() < 1e-7, "{loss:?}");
        assert!((loss.cls - 2f32.ln()).abs() < 1e-6, "{loss:?}");
        let mut want = [0.0; 16];
        want[4..8].fill(0.25);
        assert_eq!(grad_bbox, want);
        assert_eq!(grad_cls, [0.25, -0.25, -0.25, 0.25]);
    }

    /// On outputs in another row order: the same losses, each RoI's
    /// gradients at its row, and bad inputs named.
    #[test]
    fn at_rows_reads_and_writes_each_rois_row() {
        let (classes, rois) = (3, 4);
        let deltas = 4 * classes;
        let cls = random_vec(1, rois * classes);
        let bbox = random_vec(2, rois * deltas);
        let bbox_targets = random_vec(3, rois * deltas);
        let labels = [1, 0, 2, 2];
        let mut weights = vec![0.0; rois * deltas];
        for (r, &l) in labels.iter().enumerate() {
            weights[r * deltas + 4 * l as usize..][..4].fill(1.0);
        }
        let targets = RoiTargets {
            labels: &labels,
            bbox_targets: &bbox_targets,
            bbox_inside_weights: &weights,
            bbox_outside_weights: &weights,
        };
        let (mut want_cls, mut want_bbox) = (vec![0.0; cls.len()], vec![0.0; bbox.len()]);
        let want = weighted_bbox_head_loss(
            &cls,
            &bbox,
            classes,
            &targets,
            0.5,
            &mut want_cls,
            &mut want_bbox,
        );
        let rows = [2, 0, 3, 1];
        let scatter = |values: &[f32], width: usize| {
            let mut out = vec![0.0; values.len()];
            for (r, &row) in rows.iter().enumerate() {
                out[row * width..][..width].copy_from_slice(&values[r * width..][..width]);
            }
            out
        };
        let args = BoxHeadLossArgs {
            classes,
            deltas,
            loss_weight: 0.5,
            targets,
            rows: &rows,
        };
        let (mut grad_cls, mut grad_bbox) = (vec![f32::NAN; cls.len()], vec![f32::NAN; bbox.len()]);
        let got = bbox_head_loss_at_rows(
            &args,
            &scatter(&cls, classes),
            &scatter(&bbox, deltas),
            &mut grad_cls,
            &mut grad_bbox,
        );
        assert_eq!(got, want);
        assert_eq!(grad_cls, scatter(&want_cls, classes));
        assert_eq!(grad_bbox, scatter(&want_bbox, deltas));
        let lens = [cls.len(), bbox.len(), cls.len(), bbox.len()];
        let twice = [2, 0, 2, 1];
        let bad = BoxHeadLossArgs {
            rows: &twice,
            ..args
        };
        assert_eq!(
            bad.check(lens).unwrap_err(),
            "bbox_head_loss: RoI 2 at row 2: not a permutation of 4 rows"
        );
        assert_eq!(
            args.check([cls.len(), bbox.len() - 1, cls.len(), bbox.len()])
                .unwrap_err(),
            "bbox_head_loss: bbox_pred has 47 elements, needs at least 48"
        );
    }
}
