//! `bbox_head_loss`: the R-CNN box head's loss on outputs in the backend's
//! row order, targets from the host, gradients written in place. The box
//! gradients are additions, multiplications and comparisons: every backend
//! gives the CPU's values (a zero's sign aside: a delta of weight 0 is +0
//! on a device); the class gradients go through `exp` (a GPU's is
//! approximate), and the loss sums run in another order on a device.
use pulsefocus_core::rcnn::{BBoxHeadLoss, BoxHeadLossArgs, RoiTargets};
use pulsefocus_core::Backend;

use super::{
    assert_close, assert_tail_kept, assert_unchanged, buffer, cpu, garbage, input, read, Rng, Tol,
    SEEDS,
};

struct Case {
    name: &'static str,
    rois: usize,
    classes: usize,
    /// Class-agnostic deltas (a cascade stage's 8) and the stage's weight.
    agnostic: bool,
    loss_weight: f32,
    /// The outside weights differ from the inside ones.
    own_outside: bool,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "Faster R-CNN, 6 classes, 67 RoIs",
            rois: 67,
            classes: 6,
            agnostic: false,
            loss_weight: 1.0,
            own_outside: false,
        },
        Case {
            name: "cascade stage 2, 8 deltas, weight 0.5, own outside weights",
            rois: 40,
            classes: 4,
            agnostic: true,
            loss_weight: 0.5,
            own_outside: true,
        },
        Case {
            name: "one RoI",
            rois: 1,
            classes: 3,
            agnostic: false,
            loss_weight: 1.0,
            own_outside: false,
        },
    ]
}

struct Targets {
    labels: Vec<i32>,
    bbox_targets: Vec<f32>,
    inside: Vec<f32>,
    outside: Vec<f32>,
    rows: Vec<usize>,
}

/// Labels (about a third foreground), weights on a foreground RoI's class
/// deltas (the second four class-agnostic) as `generate_proposal_labels`
/// writes them, and the rows shuffled (FPN's order by level).
fn targets(rng: &mut Rng, case: &Case, deltas: usize) -> Targets {
    let mut t = Targets {
        labels: vec![],
        bbox_targets: rng.values(case.rois * deltas, -1.5, 1.5),
        inside: vec![0.0; case.rois * deltas],
        outside: vec![0.0; case.rois * deltas],
        rows: (0..case.rois).collect(),
    };
    for r in 0..case.rois {
        let label = match rng.below(3) {
            0 => 1 + rng.below(case.classes - 1),
            _ => 0,
        };
        t.labels.push(label as i32);
        if label > 0 {
            let block = if case.agnostic { 1 } else { label };
            for c in 4 * block..4 * block + 4 {
                t.inside[r * deltas + c] = 1.0;
                t.outside[r * deltas + c] = if case.own_outside {
                    rng.uniform(0.5, 1.5)
                } else {
                    1.0
                };
            }
        }
    }
    for i in (1..case.rois).rev() {
        t.rows.swap(i, rng.below(i + 1));
    }
    t
}

/// `(loss, grad cls, grad bbox)`, whole buffers.
fn run<B: Backend>(
    b: &B,
    args: &BoxHeadLossArgs,
    (cls, bbox): (&[f32], &[f32]),
    (grad_cls0, grad_bbox0): (&[f32], &[f32]),
) -> (BBoxHeadLoss, Vec<f32>, Vec<f32>) {
    let (cb, bb) = (buffer(b, cls), buffer(b, bbox));
    let (mut gc, mut gb) = (buffer(b, grad_cls0), buffer(b, grad_bbox0));
    let loss = b.bbox_head_loss(args, &cb, &bb, &mut gc, &mut gb);
    assert_unchanged(b, "cls_score", &cb, cls);
    assert_unchanged(b, "bbox_pred", &bb, bbox);
    (loss, read(b, &gc), read(b, &gb))
}

pub fn bbox_head_loss_matches<B: Backend>(b: &B) {
    for case in cases() {
        let deltas = if case.agnostic { 8 } else { 4 * case.classes };
        let (cls_len, bbox_len) = (case.rois * case.classes, case.rois * deltas);
        for seed in SEEDS {
            let mut rng = Rng::new(seed);
            let t = targets(&mut rng, &case, deltas);
            let args = BoxHeadLossArgs {
                classes: case.classes,
                deltas,
                loss_weight: case.loss_weight,
                targets: RoiTargets {
                    labels: &t.labels,
                    bbox_targets: &t.bbox_targets,
                    bbox_inside_weights: &t.inside,
                    bbox_outside_weights: &t.outside,
                },
                rows: &t.rows,
            };
            // Deltas on both smooth-L1 branches.
            let cls = input(&rng.values(cls_len, -6.0, 6.0));
            let bbox = input(&rng.values(bbox_len, -2.0, 2.0));
            let initial = (garbage(&mut rng, cls_len), garbage(&mut rng, bbox_len));
            let init = (initial.0.as_slice(), initial.1.as_slice());
            let what = format!("bbox_head_loss {} seed {seed}", case.name);
            let (got, got_cls, got_bbox) = run(b, &args, (&cls, &bbox), init);
            let (want, want_cls, want_bbox) = run(&cpu(), &args, (&cls, &bbox), init);
            for (part, g, w) in [("cls", got.cls, want.cls), ("bbox", got.bbox, want.bbox)] {
                assert!(
                    (g - w).abs() <= 1e-5 * w.abs() + 1e-7,
                    "{what}: {part} {g}, reference {w}"
                );
            }
            let tol = Tol {
                abs: 1e-6,
                rel: 1e-5,
            };
            let part = format!("{what}: cls gradient");
            assert_close(&part, &got_cls, &want_cls, cls_len, tol);
            assert_tail_kept(&part, &got_cls, cls_len, init.0);
            let part = format!("{what}: bbox gradient");
            assert_close(&part, &got_bbox, &want_bbox, bbox_len, Tol::EXACT);
            assert_tail_kept(&part, &got_bbox, bbox_len, init.1);
        }
    }
}
