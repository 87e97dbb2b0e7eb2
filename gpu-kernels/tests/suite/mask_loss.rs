//! `mask_loss`: Mask R-CNN's sigmoid cross-entropy on each RoI's class
//! channel, each pixel's loss and every logit's gradient. The emulator runs
//! the CPU's expressions with the host's `exp`/`ln` (the CPU's bits); the
//! GPU's are `ex2`/`lg2.approx` (CUDA's fast-math `__expf`/`__logf`), whose
//! relative error grows with |x| (up to 30 here) to a few 1e-6, and whose
//! absolute error near 1 dominates where a loss is tiny (a confident right
//! answer), hence an absolute part of 1e-6 of the scale `1 / normalizer`.
use pulsefocus_core::backend::MaskLossGeom;
use pulsefocus_core::Backend;

use super::{
    assert_tail_kept, assert_unchanged, assert_within, buffer, cpu, garbage, input, read, Rng,
    SEEDS,
};

/// C4's 14x14 masks over a few classes, FPN's 28x28 over COCO's 81 (more
/// pixels than one pass of the grid), and one class of one pixel; RoI 1 of
/// each (every fourth) is a placeholder.
fn shapes() -> Vec<(&'static str, MaskLossGeom)> {
    let geom = |rois, classes, side| MaskLossGeom {
        rois,
        classes,
        side,
        // Set from the classes drawn.
        normalizer: 1.0,
    };
    vec![
        ("C4 14x14, 5 classes", geom(6, 5, 14)),
        ("FPN 28x28, 81 classes", geom(3, 81, 28)),
        ("one class of one pixel", geom(3, 1, 1)),
    ]
}

/// `(grad, losses)`, whole buffers.
fn run<B: Backend>(
    b: &B,
    g: &MaskLossGeom,
    [logits, roi_classes, targets]: [&[f32]; 3],
    (grad0, losses0): (&[f32], &[f32]),
) -> (Vec<f32>, Vec<f32>) {
    let (xb, cb, tb) = (
        buffer(b, logits),
        buffer(b, roi_classes),
        buffer(b, targets),
    );
    let (mut gb, mut ob) = (buffer(b, grad0), buffer(b, losses0));
    b.mask_loss(g, &xb, &cb, &tb, &mut gb, &mut ob);
    assert_unchanged(b, "logits", &xb, logits);
    assert_unchanged(b, "roi_classes", &cb, roi_classes);
    assert_unchanged(b, "targets", &tb, targets);
    (read(b, &gb), read(b, &ob))
}

pub fn mask_loss_matches<B: Backend>(b: &B) {
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
            let roi_classes: Vec<f32> = (0..g.rois)
                .map(|roi| {
                    if roi % 4 == 1 {
                        -1.0
                    } else {
                        rng.below(g.classes) as f32
                    }
                })
                .collect();
            let targets: Vec<f32> = (0..g.targets_len()).map(|_| rng.below(2) as f32).collect();
            let scored = roi_classes.iter().filter(|&&c| c >= 0.0).count();
            let g = MaskLossGeom {
                normalizer: (scored * g.cells()) as f32,
                ..g
            };
            let data = [input(&logits), input(&roi_classes), input(&targets)];
            let data = [data[0].as_slice(), data[1].as_slice(), data[2].as_slice()];
            let initial = (
                garbage(&mut rng, g.logits_len()),
                garbage(&mut rng, g.targets_len()),
            );
            let init = (initial.0.as_slice(), initial.1.as_slice());
            let what = format!("mask_loss {name} {g:?} seed {seed}");
            let got = run(b, &g, data, init);
            let want = run(&cpu(), &g, data, init);
            for (part, got, want, len, initial) in [
                ("grad", &got.0, &want.0, g.logits_len(), init.0),
                ("losses", &got.1, &want.1, g.targets_len(), init.1),
            ] {
                let what = format!("{what}: {part}");
                let bound: Vec<f32> = want[..len]
                    .iter()
                    .map(|w| 1e-6 / g.normalizer + 3e-5 * w.abs())
                    .collect();
                assert_within(&what, got, want, &bound);
                assert_tail_kept(&what, got, len, initial);
            }
        }
    }
}
