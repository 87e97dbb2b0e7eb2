//! `ssd_loss`: SSD's matching, hard-negative mining and losses, the loss
//! terms and both gradients. The emulator runs the CPU's expressions and
//! decides as it does, so the gradients and the counts are the CPU's bits;
//! the loss terms are sums taken in another order (1e-5 relative). On a GPU
//! `exp`/`ln` are `ex2`/`lg2.approx`: a few 1e-6 relative, plus 1e-6 of the
//! gradients' scale `1 / positives` near zero.
use pulsefocus_core::box_coder::BoxXyxy;
use pulsefocus_core::ssd::{ImageTruth, SsdLoss, SsdLossConfig};
use pulsefocus_core::Backend;

use super::{
    assert_tail_kept, assert_unchanged, assert_within, buffer, cpu, garbage, input, read, Rng,
    SEEDS,
};

/// A case: its name, the classes (background included), the priors' grid
/// sides and the boxes of each image.
struct Case {
    name: &'static str,
    classes: usize,
    grids: &'static [usize],
    boxes: &'static [usize],
}

/// A 96-pixel MobileNet-SSD's levels and VOC's classes, images with several
/// boxes and one without; one class beside the background; more boxes
/// than priors.
fn cases() -> [Case; 3] {
    [
        Case {
            name: "MobileNet-SSD at 96 pixels, 21 classes",
            classes: 21,
            grids: &[6, 3, 2, 1],
            boxes: &[3, 0, 7],
        },
        Case {
            name: "one class",
            classes: 2,
            grids: &[4],
            boxes: &[2, 1],
        },
        Case {
            name: "more boxes than priors",
            classes: 4,
            grids: &[2],
            boxes: &[9],
        },
    ]
}

/// Three square priors and a wide one per cell of each `side x side` grid.
fn priors(grids: &[usize]) -> Vec<BoxXyxy> {
    let mut priors = Vec::new();
    for &side in grids {
        let step = 1.0 / side as f32;
        for cell in 0..side * side {
            let (cx, cy) = (
                ((cell % side) as f32 + 0.5) * step,
                ((cell / side) as f32 + 0.5) * step,
            );
            for (w, h) in [(0.5, 0.5), (1.0, 1.0), (1.5, 1.5), (1.4, 0.7)] {
                let (w, h) = (w * step, h * step);
                priors.push([cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0]);
            }
        }
    }
    priors
}

/// The loss and the whole gradient buffers.
#[allow(clippy::too_many_arguments)]
fn run<B: Backend>(
    b: &B,
    cfg: &SsdLossConfig,
    [priors, variances, location, confidence]: [&[f32]; 4],
    (priors_count, classes): (usize, usize),
    truths: &[ImageTruth],
    (grad_location0, grad_confidence0): (&[f32], &[f32]),
) -> (SsdLoss, Vec<f32>, Vec<f32>) {
    let (pb, vb) = (buffer(b, priors), buffer(b, variances));
    let (lb, cb) = (buffer(b, location), buffer(b, confidence));
    let (mut glb, mut gcb) = (buffer(b, grad_location0), buffer(b, grad_confidence0));
    let loss = b.ssd_loss(
        cfg,
        &pb,
        &vb,
        priors_count,
        classes,
        &lb,
        &cb,
        truths,
        &mut glb,
        &mut gcb,
    );
    for (what, buf, host) in [
        ("priors", &pb, priors),
        ("variances", &vb, variances),
        ("location", &lb, location),
        ("confidence", &cb, confidence),
    ] {
        assert_unchanged(b, what, buf, host);
    }
    (loss, read(b, &glb), read(b, &gcb))
}

pub fn ssd_loss_matches<B: Backend>(b: &B) {
    let exact = !b.name().starts_with("cuda");
    let cfg = SsdLossConfig::default();
    for case in cases() {
        let priors = priors(case.grids);
        let count = priors.len();
        let variances = vec![[0.1, 0.1, 0.2, 0.2]; count];
        for seed in SEEDS {
            let mut rng = Rng::new(seed);
            let images = case.boxes.len();
            let truths: Vec<(Vec<BoxXyxy>, Vec<usize>)> = case
                .boxes
                .iter()
                .map(|&boxes| {
                    (0..boxes)
                        .map(|_| {
                            let (x, y) = (rng.uniform(0.0, 0.7), rng.uniform(0.0, 0.7));
                            let (w, h) = (rng.uniform(0.05, 0.6), rng.uniform(0.05, 0.6));
                            let label = 1 + rng.below(case.classes - 1);
                            ([x, y, (x + w).min(1.0), (y + h).min(1.0)], label)
                        })
                        .unzip()
                })
                .collect();
            let truths: Vec<ImageTruth> = truths
                .iter()
                .map(|(boxes, labels)| ImageTruth { boxes, labels })
                .collect();
            let (loc_len, conf_len) = (images * count * 4, images * count * case.classes);
            let location = rng.values(loc_len, -2.0, 2.0);
            let confidence = rng.values(conf_len, -4.0, 4.0);
            let host = [
                input(&priors.concat()),
                input(&variances.concat()),
                input(&location),
                input(&confidence),
            ];
            let data = [
                host[0].as_slice(),
                host[1].as_slice(),
                host[2].as_slice(),
                host[3].as_slice(),
            ];
            let initial = (garbage(&mut rng, loc_len), garbage(&mut rng, conf_len));
            let init = (initial.0.as_slice(), initial.1.as_slice());
            let shape = (count, case.classes);
            let what = format!("ssd_loss {} seed {seed}", case.name);
            let (got, got_location, got_confidence) = run(b, &cfg, data, shape, &truths, init);
            let (want, want_location, want_confidence) =
                run(&cpu(), &cfg, data, shape, &truths, init);
            assert!(want.positives > 0 && want.negatives > 0, "{what}: {want:?}");
            assert_eq!(
                (got.positives, got.negatives),
                (want.positives, want.negatives),
                "{what}: matched and mined priors"
            );
            for (part, g, w) in [
                ("total", got.total, want.total),
                ("confidence", got.confidence, want.confidence),
                ("location", got.location, want.location),
            ] {
                assert!(
                    (g - w).abs() <= 1e-5 * w.abs(),
                    "{what}: {part} {g}, reference {w}"
                );
            }
            let scale = 1.0 / want.positives as f32;
            for (part, got, want, len, initial) in [
                (
                    "grad_location",
                    &got_location,
                    &want_location,
                    loc_len,
                    init.0,
                ),
                (
                    "grad_confidence",
                    &got_confidence,
                    &want_confidence,
                    conf_len,
                    init.1,
                ),
            ] {
                let what = format!("{what}: {part}");
                let bound: Vec<f32> = want[..len]
                    .iter()
                    .map(|w| {
                        if exact {
                            0.0
                        } else {
                            1e-6 * scale + 3e-5 * w.abs()
                        }
                    })
                    .collect();
                assert_within(&what, got, want, &bound);
                assert_tail_kept(&what, got, len, initial);
            }
        }
    }
}
