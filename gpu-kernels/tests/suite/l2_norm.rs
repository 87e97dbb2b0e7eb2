//! `l2_norm_forward` / `l2_norm_backward`: VGG16-SSD's L2 normalisation over
//! channels with a per-channel scale. Tolerances: each norm and each
//! position's dot product is a sum over the channels, which every backend
//! adds in channel order, and then a few roundings per element, so the
//! forward is allowed `(channels + 8) * 2^-23` relative. The input gradient
//! is a difference of two terms that can cancel, so it is allowed 1e-4 of
//! the tensor's largest magnitude too; the scale gradient is a sum over
//! batch x space in another order on the GPU (a shared-memory tree): 1e-4
//! relative plus 1e-4 of the largest.
use pulsefocus_core::backend::L2NormGeom;
use pulsefocus_core::Backend;

use super::{
    assert_close, assert_tail_kept, assert_unchanged, assert_within, buffer, cpu, garbage, input,
    max_abs, read, Rng, Tol, SEEDS,
};

const EPS: f32 = 1e-12;

/// conv4_3-like channels over a 13x13 map, an odd plane, a plane longer
/// than a 256-thread block strides over, and one position per image.
fn shapes() -> [L2NormGeom; 4] {
    [
        L2NormGeom {
            batch: 2,
            channels: 16,
            spatial: 13 * 13,
        },
        L2NormGeom {
            batch: 1,
            channels: 5,
            spatial: 7 * 9,
        },
        L2NormGeom {
            batch: 2,
            channels: 3,
            spatial: 500,
        },
        L2NormGeom {
            batch: 4,
            channels: 64,
            spatial: 1,
        },
    ]
}

/// x (with every channel of a few positions zero when `zeros`: the epsilon
/// alone keeps their norm positive), scales around VGG16-SSD's 20, dy.
fn inputs(g: &L2NormGeom, seed: u64, zeros: bool) -> [Vec<f32>; 3] {
    let mut rng = Rng::new(seed);
    let mut x = rng.values(g.len(), -3.0, 3.0);
    if zeros {
        for _ in 0..3 {
            let (n, p) = (rng.below(g.batch), rng.below(g.spatial));
            for c in 0..g.channels {
                x[(n * g.channels + c) * g.spatial + p] = 0.0;
            }
        }
    }
    [
        input(&x),
        input(&rng.values(g.channels, 10.0, 30.0)),
        input(&rng.values(g.len(), -1.0, 1.0)),
    ]
}

/// `[y, norm]`, whole buffers.
fn forward_run<B: Backend>(
    b: &B,
    g: &L2NormGeom,
    x: &[f32],
    scale: &[f32],
    initial: &[Vec<f32>; 2],
) -> [Vec<f32>; 2] {
    let (xb, sb) = (buffer(b, x), buffer(b, scale));
    let (mut y, mut norm) = (buffer(b, &initial[0]), buffer(b, &initial[1]));
    b.l2_norm_forward(g, EPS, &xb, &sb, &mut norm, &mut y);
    assert_unchanged(b, "x", &xb, x);
    assert_unchanged(b, "scale", &sb, scale);
    [read(b, &y), read(b, &norm)]
}

pub fn l2_norm_forward_matches<B: Backend>(b: &B) {
    for g in shapes() {
        for seed in SEEDS {
            let [x, scale, _] = inputs(&g, seed, true);
            let mut rng = Rng::new(seed + 10);
            let initial = [garbage(&mut rng, g.len()), garbage(&mut rng, g.positions())];
            let got = forward_run(b, &g, &x, &scale, &initial);
            let want = forward_run(&cpu(), &g, &x, &scale, &initial);
            let tol = Tol {
                abs: 0.0,
                rel: (g.channels + 8) as f32 * f32::EPSILON,
            };
            for (k, (what, len)) in [("y", g.len()), ("norm", g.positions())]
                .into_iter()
                .enumerate()
            {
                let what = format!("l2_norm_forward {g:?} seed {seed}: {what}");
                assert_close(&what, &got[k], &want[k], len, tol);
                assert_tail_kept(&what, &got[k], len, &initial[k]);
            }
        }
    }
}

/// `[dx, dscale]`, whole buffers, from the reference's saved norms.
#[allow(clippy::too_many_arguments)]
fn backward_run<B: Backend>(
    b: &B,
    g: &L2NormGeom,
    x: &[f32],
    scale: &[f32],
    norm: &[f32],
    dy: &[f32],
    initial: &[Vec<f32>; 2],
) -> [Vec<f32>; 2] {
    let (xb, sb, nb, dyb) = (
        buffer(b, x),
        buffer(b, scale),
        buffer(b, norm),
        buffer(b, dy),
    );
    let (mut dx, mut dscale) = (buffer(b, &initial[0]), buffer(b, &initial[1]));
    b.l2_norm_backward(g, &xb, &sb, &nb, &dyb, &mut dx, &mut dscale);
    for (what, buf, host) in [
        ("x", &xb, x),
        ("scale", &sb, scale),
        ("norm", &nb, norm),
        ("dy", &dyb, dy),
    ] {
        assert_unchanged(b, what, buf, host);
    }
    [read(b, &dx), read(b, &dscale)]
}

pub fn l2_norm_backward_matches<B: Backend>(b: &B) {
    for g in shapes() {
        for seed in SEEDS {
            let [x, scale, dy] = inputs(&g, seed, false);
            let mut rng = Rng::new(seed + 20);
            let initial = [garbage(&mut rng, g.len()), garbage(&mut rng, g.channels)];
            let forward = forward_run(
                &cpu(),
                &g,
                &x,
                &scale,
                &[garbage(&mut rng, g.len()), garbage(&mut rng, g.positions())],
            );
            let mut norm = forward[1][..g.positions()].to_vec();
            norm.extend([f32::NAN; super::TAIL]);
            let got = backward_run(b, &g, &x, &scale, &norm, &dy, &initial);
            let want = backward_run(&cpu(), &g, &x, &scale, &norm, &dy, &initial);
            for (k, (what, len)) in [("dx", g.len()), ("dscale", g.channels)]
                .into_iter()
                .enumerate()
            {
                let what = format!("l2_norm_backward {g:?} seed {seed}: {what}");
                let largest = max_abs(&want[k][..len]);
                let bound: Vec<f32> = want[k][..len]
                    .iter()
                    .map(|w| 1e-4 * w.abs() + 1e-4 * largest)
                    .collect();
                assert_within(&what, &got[k], &want[k], &bound);
                assert_tail_kept(&what, &got[k], len, &initial[k]);
            }
        }
    }
}
