//! `retina_box_loss`: RetinaNet's box loss over one level, each delta's
//! smooth-L1 loss and gradient against its anchor's target and weight.
//! Only IEEE additions, multiplications, one division and comparisons, so
//! every backend must give the CPU's bits.
use pulsefocus_core::backend::RetinaBoxLossGeom;
use pulsefocus_core::Backend;

use super::{
    assert_same_bits, assert_tail_kept, assert_unchanged, buffer, cpu, garbage, input, read, Rng,
    SEEDS,
};

fn geom(batch: usize, anchors_per_cell: usize, hw: [usize; 2]) -> RetinaBoxLossGeom {
    RetinaBoxLossGeom {
        batch,
        anchors_per_cell,
        height: hw[0],
        width: hw[1],
        sigma: 3.015_113_4,
        normalizer: 37.0,
    }
}

/// RetinaNet's 9 anchors on a ragged plane, one anchor on a column,
/// another sigma and normalizer, and an empty batch.
fn shapes() -> Vec<(&'static str, RetinaBoxLossGeom)> {
    vec![
        ("RetinaNet P3", geom(2, 9, [5, 7])),
        ("one anchor", geom(3, 1, [3, 1])),
        (
            "sigma 0.7, normalizer 1",
            RetinaBoxLossGeom {
                sigma: 0.7,
                normalizer: 1.0,
                ..geom(1, 3, [2, 3])
            },
        ),
        ("empty batch", geom(0, 9, [2, 2])),
    ]
}

/// `(grad, losses)`, whole buffers.
fn run<B: Backend>(
    b: &B,
    g: &RetinaBoxLossGeom,
    (deltas, targets, weights): (&[f32], &[f32], &[f32]),
    (grad0, losses0): (&[f32], &[f32]),
) -> (Vec<f32>, Vec<f32>) {
    let (db, tb, wb) = (buffer(b, deltas), buffer(b, targets), buffer(b, weights));
    let (mut gb, mut ob) = (buffer(b, grad0), buffer(b, losses0));
    b.retina_box_loss(g, &db, &tb, &wb, &mut gb, &mut ob);
    assert_unchanged(b, "deltas", &db, deltas);
    assert_unchanged(b, "targets", &tb, targets);
    assert_unchanged(b, "weights", &wb, weights);
    (read(b, &gb), read(b, &ob))
}

pub fn retina_box_loss_matches<B: Backend>(b: &B) {
    for (name, g) in shapes() {
        for seed in SEEDS {
            let mut rng = Rng::new(seed);
            // Deltas and targets in [-1.5, 1.5]: both smooth-L1 branches.
            let deltas = input(&rng.values(g.deltas_len(), -1.5, 1.5));
            let targets = input(&rng.values(4 * g.anchors(), -1.5, 1.5));
            // About a third of the anchors in the foreground.
            let weights: Vec<f32> = (0..g.anchors())
                .map(|_| (rng.below(3) == 0) as u8 as f32)
                .collect();
            let weights = input(&weights);
            let initial = (
                garbage(&mut rng, g.deltas_len()),
                garbage(&mut rng, g.deltas_len()),
            );
            let init = (initial.0.as_slice(), initial.1.as_slice());
            let inputs = (deltas.as_slice(), targets.as_slice(), weights.as_slice());
            let what = format!("retina_box_loss {name} {g:?} seed {seed}");
            let got = run(b, &g, inputs, init);
            let want = run(&cpu(), &g, inputs, init);
            for (part, got, want, initial) in [
                ("grad", &got.0, &want.0, init.0),
                ("losses", &got.1, &want.1, init.1),
            ] {
                let what = format!("{what}: {part}");
                assert_same_bits(&what, &got[..g.deltas_len()], &want[..g.deltas_len()]);
                assert_tail_kept(&what, got, g.deltas_len(), initial);
            }
        }
    }
}
