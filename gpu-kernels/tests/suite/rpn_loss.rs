//! `rpn_loss`: the RPN loss over a batch and every level from the host's
//! sampled anchors, gradients written in place (zero off the sampled
//! anchors). The box gradients are additions, multiplications and
//! comparisons: every backend gives the CPU's bits. The logit gradients go
//! through `exp` (a GPU's is approximate), and the loss sums run in another
//! order on a device.
use pulsefocus_core::rcnn::{RpnLevelGrad, RpnLevelOutput, RpnLoss, RpnTargets};
use pulsefocus_core::Backend;

use super::{
    assert_close, assert_same_bits, assert_tail_kept, assert_unchanged, buffer, cpu, garbage,
    input, read, Rng, Tol, SEEDS,
};

struct Case {
    name: &'static str,
    images: usize,
    anchors_per_cell: usize,
    sizes: Vec<[usize; 2]>,
    /// One anchor in `sample_one_in` sampled (none for 0), a third of those
    /// foreground.
    sample_one_in: usize,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "C4 one level, 15 anchors, 2 images",
            images: 2,
            anchors_per_cell: 15,
            sizes: vec![[5, 7]],
            sample_one_in: 3,
        },
        Case {
            name: "FPN three levels, 3 anchors, 2 images",
            images: 2,
            anchors_per_cell: 3,
            sizes: vec![[8, 6], [4, 3], [2, 2]],
            sample_one_in: 2,
        },
        Case {
            name: "one image, nothing sampled",
            images: 1,
            anchors_per_cell: 3,
            sizes: vec![[3, 2], [2, 1]],
            sample_one_in: 0,
        },
    ]
}

/// Each image's sampled anchors, in random order as the sampler leaves
/// them (no anchor twice).
fn sample(rng: &mut Rng, case: &Case) -> Vec<RpnTargets> {
    let anchors: usize =
        case.sizes.iter().map(|[h, w]| h * w).sum::<usize>() * case.anchors_per_cell;
    (0..case.images)
        .map(|_| {
            let mut t = RpnTargets {
                fg: vec![],
                fg_deltas: vec![],
                bg: vec![],
            };
            for k in 0..anchors {
                if case.sample_one_in == 0 || rng.below(case.sample_one_in) != 0 {
                    continue;
                }
                if rng.below(3) == 0 {
                    t.fg.push(k);
                    let d = rng.values(4, -1.5, 1.5);
                    t.fg_deltas.push([d[0], d[1], d[2], d[3]]);
                } else {
                    t.bg.push(k);
                }
            }
            t
        })
        .collect()
}

/// `(loss, [cls, bbox] gradient buffers per level)`, whole buffers.
fn run<B: Backend>(
    b: &B,
    case: &Case,
    outputs: &[[Vec<f32>; 2]],
    targets: &[RpnTargets],
    initial: &[[Vec<f32>; 2]],
) -> (RpnLoss, Vec<[Vec<f32>; 2]>) {
    let bufs: Vec<[B::Buffer; 2]> = outputs
        .iter()
        .map(|[c, d]| [buffer(b, c), buffer(b, d)])
        .collect();
    let mut grads: Vec<[B::Buffer; 2]> = initial
        .iter()
        .map(|[c, d]| [buffer(b, c), buffer(b, d)])
        .collect();
    let levels: Vec<RpnLevelOutput<B::Buffer>> = bufs
        .iter()
        .zip(&case.sizes)
        .map(|([c, d], &[height, width])| RpnLevelOutput {
            height,
            width,
            cls_logits: c,
            bbox_pred: d,
        })
        .collect();
    let mut grad_refs: Vec<RpnLevelGrad<B::Buffer>> = grads
        .iter_mut()
        .map(|[c, d]| RpnLevelGrad {
            cls_logits: c,
            bbox_pred: d,
        })
        .collect();
    let loss = b.rpn_loss(&levels, case.anchors_per_cell, targets, &mut grad_refs);
    for ([c, d], [hc, hd]) in bufs.iter().zip(outputs) {
        assert_unchanged(b, "cls_logits", c, hc);
        assert_unchanged(b, "bbox_pred", d, hd);
    }
    let grads = grads
        .iter()
        .map(|[c, d]| [read(b, c), read(b, d)])
        .collect();
    (loss, grads)
}

pub fn rpn_loss_matches<B: Backend>(b: &B) {
    for case in cases() {
        for seed in SEEDS {
            let mut rng = Rng::new(seed);
            let lens: Vec<usize> = case
                .sizes
                .iter()
                .map(|[h, w]| case.images * case.anchors_per_cell * h * w)
                .collect();
            // Logits on both sides of 0 and far out (the stable
            // cross-entropy); deltas on both smooth-L1 branches.
            let outputs: Vec<[Vec<f32>; 2]> = lens
                .iter()
                .map(|&n| {
                    [
                        input(&rng.values(n, -9.0, 9.0)),
                        input(&rng.values(4 * n, -1.5, 1.5)),
                    ]
                })
                .collect();
            let targets = sample(&mut rng, &case);
            let initial: Vec<[Vec<f32>; 2]> = lens
                .iter()
                .map(|&n| [garbage(&mut rng, n), garbage(&mut rng, 4 * n)])
                .collect();
            let what = format!("rpn_loss {} seed {seed}", case.name);
            let (got, got_grads) = run(b, &case, &outputs, &targets, &initial);
            let (want, want_grads) = run(&cpu(), &case, &outputs, &targets, &initial);
            for (part, g, w) in [
                ("loss_rpn_cls", got.loss_rpn_cls, want.loss_rpn_cls),
                ("loss_rpn_bbox", got.loss_rpn_bbox, want.loss_rpn_bbox),
            ] {
                assert!(
                    (g - w).abs() <= 1e-5 * w.abs() + 1e-7,
                    "{what}: {part} {g}, reference {w}"
                );
            }
            for (l, ((got, want), initial)) in
                got_grads.iter().zip(&want_grads).zip(&initial).enumerate()
            {
                let n = lens[l];
                let what = format!("{what}: level {l}");
                // sigmoid(x) - z to a few ulps of 1, times 1 / sampled.
                let tol = Tol {
                    abs: 1e-6,
                    rel: 1e-5,
                };
                assert_close(&format!("{what} cls gradient"), &got[0], &want[0], n, tol);
                assert_tail_kept(&format!("{what} cls gradient"), &got[0], n, &initial[0]);
                let bbox = format!("{what} bbox gradient");
                assert_same_bits(&bbox, &got[1][..4 * n], &want[1][..4 * n]);
                assert_tail_kept(&bbox, &got[1], 4 * n, &initial[1]);
            }
        }
    }
}
