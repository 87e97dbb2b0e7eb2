//! `sigmoid_focal_loss`: RetinaNet's classification loss over one level,
//! each logit's loss and gradient. The emulator runs the CPU's expressions
//! with the host's `exp`/`ln`/`powf` (the CPU's bits); the GPU's `exp` and
//! `ln` are `ex2`/`lg2.approx` (CUDA's fast-math `__expf`/`__logf`, about 2
//! ulp plus the rounding of the argument's scaling, which grows with |x|:
//! up to 30 here) and its `pow` is `2^(gamma log2 x)`, so a value may be
//! off by a few 1e-6 relative; where a term is tiny (a confident right
//! answer) `lg2.approx`'s absolute error near 1 dominates, hence an
//! absolute part of 1e-6 of the scale `alpha / normalizer`.
use pulsefocus_core::backend::FocalLossGeom;
use pulsefocus_core::Backend;

use super::{
    assert_tail_kept, assert_unchanged, assert_within, buffer, cpu, garbage, input, read, Rng,
    SEEDS,
};

fn geom(batch: usize, anchors_per_cell: usize, classes: usize, hw: [usize; 2]) -> FocalLossGeom {
    FocalLossGeom {
        batch,
        anchors_per_cell,
        classes,
        height: hw[0],
        width: hw[1],
        gamma: 2.0,
        alpha: 0.25,
        normalizer: 37.0,
    }
}

/// RetinaNet's 9 anchors on a ragged plane, COCO's 80 classes (more
/// logits than one pass of the grid), one anchor of one class, other
/// gamma and alpha, and an empty batch.
fn shapes() -> Vec<(&'static str, FocalLossGeom)> {
    vec![
        ("RetinaNet P3", geom(2, 9, 3, [5, 7])),
        ("80 classes", geom(1, 9, 80, [4, 4])),
        ("one anchor of one class", geom(3, 1, 1, [3, 1])),
        (
            "gamma 0.5, alpha 0.6, normalizer 1",
            FocalLossGeom {
                gamma: 0.5,
                alpha: 0.6,
                normalizer: 1.0,
                ..geom(1, 3, 2, [2, 3])
            },
        ),
        ("empty batch", geom(0, 9, 3, [2, 2])),
    ]
}

/// `(grad, losses)`, whole buffers.
fn run<B: Backend>(
    b: &B,
    g: &FocalLossGeom,
    logits: &[f32],
    labels: &[f32],
    (grad0, losses0): (&[f32], &[f32]),
) -> (Vec<f32>, Vec<f32>) {
    let (xb, lb) = (buffer(b, logits), buffer(b, labels));
    let (mut gb, mut ob) = (buffer(b, grad0), buffer(b, losses0));
    b.sigmoid_focal_loss(g, &xb, &lb, &mut gb, &mut ob);
    assert_unchanged(b, "logits", &xb, logits);
    assert_unchanged(b, "labels", &lb, labels);
    (read(b, &gb), read(b, &ob))
}

pub fn sigmoid_focal_loss_matches<B: Backend>(b: &B) {
    for (name, g) in shapes() {
        for seed in SEEDS {
            let mut rng = Rng::new(seed);
            // Logits in [-8, 8], every 11th saturated at +-30.
            let logits: Vec<f32> = rng
                .values(g.logits_len(), -8.0, 8.0)
                .iter()
                .enumerate()
                .map(|(i, &v)| if i % 11 == 0 { 30f32.copysign(v) } else { v })
                .collect();
            // Labels over -1 (ignored), 0 (background) and every class.
            let labels: Vec<f32> = (0..g.anchors())
                .map(|_| rng.below(g.classes + 2) as f32 - 1.0)
                .collect();
            let (logits, labels) = (input(&logits), input(&labels));
            let initial = (
                garbage(&mut rng, g.logits_len()),
                garbage(&mut rng, g.logits_len()),
            );
            let init = (initial.0.as_slice(), initial.1.as_slice());
            let what = format!("sigmoid_focal_loss {name} {g:?} seed {seed}");
            let got = run(b, &g, &logits, &labels, init);
            let want = run(&cpu(), &g, &logits, &labels, init);
            let scale = g.alpha.max(1.0 - g.alpha) / g.normalizer;
            for (part, got, want, initial) in [
                ("grad", &got.0, &want.0, init.0),
                ("losses", &got.1, &want.1, init.1),
            ] {
                let what = format!("{what}: {part}");
                let bound: Vec<f32> = want[..g.logits_len()]
                    .iter()
                    .map(|w| 1e-6 * scale + 3e-5 * w.abs())
                    .collect();
                assert_within(&what, got, want, &bound);
                assert_tail_kept(&what, got, g.logits_len(), initial);
            }
        }
    }
}
