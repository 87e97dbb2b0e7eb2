//! Batch norm fused with each activation: training and inference forward
//! and backward. Tolerances: the statistics and the gradient sums are
//! reductions over batch x space taken in another order and precision (f64
//! on the CPU, f32 trees in shared memory on the GPU), whose relative error
//! grows with the count (at most ~ count * 2^-24, 6e-5 for the 1000-element
//! channels here), and normalising divides by a standard deviation: 1e-4
//! relative, plus 1e-4 of the tensor's largest magnitude for values near
//! zero (a gradient is a difference of sums that largely cancel). The
//! inference passes are a few roundings per element: 1e-5.
use pulsefocus_core::backend::{Activation, BatchNormGeom};
use pulsefocus_core::Backend;

use super::{
    assert_close, assert_same_bits, assert_tail_kept, assert_unchanged, assert_within, buffer, cpu,
    garbage, in_place, input, max_abs, read, Rng, Tol, SEEDS,
};

pub const ACTIVATIONS: [Activation; 4] = [
    Activation::Identity,
    Activation::Relu,
    Activation::Relu6,
    Activation::LEAKY_0_1,
];

/// A 13x13 YOLO map, an odd plane, one plane longer than a 256-thread block
/// strides over, and a single value per image (batch 4, 1x1).
pub fn shapes() -> [BatchNormGeom; 5] {
    [
        BatchNormGeom {
            batch: 2,
            channels: 6,
            spatial: 13 * 13,
        },
        BatchNormGeom {
            batch: 1,
            channels: 4,
            spatial: 7 * 9,
        },
        BatchNormGeom {
            batch: 2,
            channels: 2,
            spatial: 500,
        },
        BatchNormGeom {
            batch: 4,
            channels: 3,
            spatial: 1,
        },
        // The deepest level at 64-pixel inputs: 8 values per channel.
        BatchNormGeom {
            batch: 2,
            channels: 16,
            spatial: 4,
        },
    ]
}

const MOMENTUM: f32 = 0.9;
const EPS: f32 = 1e-5;

/// Host inputs of one case, NaN-tailed: x (each channel off centre, so a
/// variance formula that cancels shows), dy, scale (either sign, large
/// enough that ReLU6 clips), offset, running mean, running var.
struct Inputs {
    x: Vec<f32>,
    dy: Vec<f32>,
    scale: Vec<f32>,
    offset: Vec<f32>,
    mean: Vec<f32>,
    var: Vec<f32>,
}

fn inputs(g: &BatchNormGeom, seed: u64) -> Inputs {
    let mut rng = Rng::new(seed);
    let centres = rng.values(g.channels, -3.0, 3.0);
    let mut x = rng.values(g.len(), -1.0, 1.0);
    for (i, v) in x.iter_mut().enumerate() {
        *v = *v * 2.0 + centres[(i / g.spatial) % g.channels];
    }
    let scale = (0..g.channels)
        .map(|_| {
            let s = rng.uniform(0.5, 4.0);
            if rng.below(4) == 0 {
                -s
            } else {
                s
            }
        })
        .collect::<Vec<_>>();
    Inputs {
        x: input(&x),
        dy: input(&rng.values(g.len(), -1.0, 1.0)),
        scale: input(&scale),
        offset: input(&rng.values(g.channels, -2.0, 3.0)),
        mean: input(&rng.values(g.channels, -1.0, 1.0)),
        var: input(&rng.values(g.channels, 0.1, 3.0)),
    }
}

/// `[y, running_mean, running_var, saved_mean, saved_inv_std]`, whole buffers.
fn forward_train_run<B: Backend>(
    b: &B,
    g: &BatchNormGeom,
    act: Activation,
    i: &Inputs,
    initial: &[Vec<f32>; 3],
) -> [Vec<f32>; 5] {
    let (x, scale, offset) = (buffer(b, &i.x), buffer(b, &i.scale), buffer(b, &i.offset));
    let (mut rm, mut rv) = (buffer(b, &i.mean), buffer(b, &i.var));
    let (mut mean, mut inv_std) = (buffer(b, &initial[1]), buffer(b, &initial[2]));
    let mut y = buffer(b, &initial[0]);
    b.batch_norm_forward_train(
        g,
        act,
        MOMENTUM,
        EPS,
        &x,
        &scale,
        &offset,
        &mut rm,
        &mut rv,
        &mut mean,
        &mut inv_std,
        &mut y,
    );
    assert_unchanged(b, "x", &x, &i.x);
    assert_unchanged(b, "scale", &scale, &i.scale);
    assert_unchanged(b, "offset", &offset, &i.offset);
    [
        read(b, &y),
        read(b, &rm),
        read(b, &rv),
        read(b, &mean),
        read(b, &inv_std),
    ]
}

fn forward_eval_run<B: Backend>(
    b: &B,
    g: &BatchNormGeom,
    act: Activation,
    i: &Inputs,
    y0: &[f32],
) -> Vec<f32> {
    let (x, scale, offset) = (buffer(b, &i.x), buffer(b, &i.scale), buffer(b, &i.offset));
    let (mean, var) = (buffer(b, &i.mean), buffer(b, &i.var));
    let mut y = buffer(b, y0);
    b.batch_norm_forward_eval(g, act, EPS, &x, &scale, &offset, &mean, &var, &mut y);
    for (what, buf, host) in [
        ("x", &x, &i.x),
        ("scale", &scale, &i.scale),
        ("offset", &offset, &i.offset),
        ("mean", &mean, &i.mean),
        ("var", &var, &i.var),
    ] {
        assert_unchanged(b, what, buf, host);
    }
    read(b, &y)
}

/// `[dx, dscale, doffset]` from the reference forward's `y` and statistics.
fn backward_train_run<B: Backend>(
    b: &B,
    g: &BatchNormGeom,
    act: Activation,
    i: &Inputs,
    forward: &[Vec<f32>; 5],
    initial: &[Vec<f32>; 3],
) -> [Vec<f32>; 3] {
    let (x, dy, scale) = (buffer(b, &i.x), buffer(b, &i.dy), buffer(b, &i.scale));
    let y = buffer(b, &input(&forward[0][..g.len()]));
    let mean = buffer(b, &input(&forward[3][..g.channels]));
    let inv_std = buffer(b, &input(&forward[4][..g.channels]));
    let (mut dx, mut dscale, mut doffset) = (
        buffer(b, &initial[0]),
        buffer(b, &initial[1]),
        buffer(b, &initial[2]),
    );
    b.batch_norm_backward_train(
        g,
        act,
        &x,
        &y,
        &dy,
        &scale,
        &mean,
        &inv_std,
        &mut dx,
        &mut dscale,
        &mut doffset,
    );
    assert_unchanged(b, "x", &x, &i.x);
    assert_unchanged(b, "dy", &dy, &i.dy);
    [read(b, &dx), read(b, &dscale), read(b, &doffset)]
}

fn backward_eval_run<B: Backend>(
    b: &B,
    g: &BatchNormGeom,
    act: Activation,
    i: &Inputs,
    y: &[f32],
    dx0: &[f32],
) -> Vec<f32> {
    let (yb, dy, scale, var) = (
        buffer(b, &input(&y[..g.len()])),
        buffer(b, &i.dy),
        buffer(b, &i.scale),
        buffer(b, &i.var),
    );
    let mut dx = buffer(b, dx0);
    b.batch_norm_backward_eval(g, act, EPS, &yb, &dy, &scale, &var, &mut dx);
    assert_unchanged(b, "dy", &dy, &i.dy);
    assert_unchanged(b, "var", &var, &i.var);
    read(b, &dx)
}

/// 1e-4 relative plus 1e-4 of the tensor's largest value (see the module).
fn statistics_tol(want: &[f32], len: usize) -> Tol {
    Tol {
        abs: 1e-4 * max_abs(&want[..len]),
        rel: 1e-4,
    }
}

const PER_ELEMENT: Tol = Tol {
    abs: 1e-5,
    rel: 1e-5,
};

fn train_initial(g: &BatchNormGeom, seed: u64) -> [Vec<f32>; 3] {
    let mut rng = Rng::new(seed + 400);
    [
        garbage(&mut rng, g.len()),
        garbage(&mut rng, g.channels),
        garbage(&mut rng, g.channels),
    ]
}

pub fn batch_norm_forward_train_matches<B: Backend>(b: &B) {
    let reference = cpu();
    for g in shapes() {
        for act in ACTIVATIONS {
            for seed in SEEDS {
                let i = inputs(&g, seed);
                let initial = train_initial(&g, seed);
                let got = forward_train_run(b, &g, act, &i, &initial);
                let want = forward_train_run(&reference, &g, act, &i, &initial);
                let what = format!("batch_norm_forward_train {g:?} {act:?} seed {seed}");
                let names = [
                    "y",
                    "running_mean",
                    "running_var",
                    "saved_mean",
                    "saved_inv_std",
                ];
                for (k, name) in names.iter().enumerate() {
                    let len = if k == 0 { g.len() } else { g.channels };
                    let what = format!("{what}: {name}");
                    assert_close(&what, &got[k], &want[k], len, statistics_tol(&want[k], len));
                    match k {
                        0 => assert_tail_kept(&what, &got[0], len, &initial[0]),
                        1 => assert_tail_kept(&what, &got[1], len, &i.mean),
                        2 => assert_tail_kept(&what, &got[2], len, &i.var),
                        _ => assert_tail_kept(&what, &got[k], len, &initial[k - 2]),
                    }
                }
            }
        }
    }
}

pub fn batch_norm_backward_train_matches<B: Backend>(b: &B) {
    let reference = cpu();
    for g in shapes() {
        for act in ACTIVATIONS {
            for seed in SEEDS {
                let i = inputs(&g, seed);
                let forward = forward_train_run(&reference, &g, act, &i, &train_initial(&g, seed));
                let initial = train_initial(&g, seed + 1);
                let got = backward_train_run(b, &g, act, &i, &forward, &initial);
                let want = backward_train_run(&reference, &g, act, &i, &forward, &initial);
                let what = format!("batch_norm_backward_train {g:?} {act:?} seed {seed}");
                for (k, name) in ["dx", "dscale", "doffset"].iter().enumerate() {
                    let len = if k == 0 { g.len() } else { g.channels };
                    let what = format!("{what}: {name}");
                    assert_close(&what, &got[k], &want[k], len, statistics_tol(&want[k], len));
                    assert_tail_kept(&what, &got[k], len, &initial[k]);
                }
            }
        }
    }
}

pub fn batch_norm_forward_eval_matches<B: Backend>(b: &B) {
    let reference = cpu();
    for g in shapes() {
        for act in ACTIVATIONS {
            for seed in SEEDS {
                let i = inputs(&g, seed);
                let y0 = garbage(&mut Rng::new(seed + 500), g.len());
                let got = forward_eval_run(b, &g, act, &i, &y0);
                let want = forward_eval_run(&reference, &g, act, &i, &y0);
                let what = format!("batch_norm_forward_eval {g:?} {act:?} seed {seed}");
                assert_within(&what, &got, &want, &PER_ELEMENT.bound(&want[..g.len()]));
                assert_tail_kept(&what, &got, g.len(), &y0);
            }
        }
    }
}

/// The in-place form against the same backend's out-of-place op: the
/// same bits, the statistics unchanged, and the tail past the tensor left
/// alone.
pub fn batch_norm_forward_eval_in_place_matches<B: Backend>(b: &B) {
    for g in shapes() {
        for act in ACTIVATIONS {
            for seed in SEEDS {
                let i = inputs(&g, seed);
                let mut rng = Rng::new(seed + 700);
                let xy0 = in_place(&mut rng, &i.x[..g.len()]);
                let apart = forward_eval_run(b, &g, act, &i, &garbage(&mut rng, g.len()));
                let (scale, offset) = (buffer(b, &i.scale), buffer(b, &i.offset));
                let (mean, var) = (buffer(b, &i.mean), buffer(b, &i.var));
                let mut xy = buffer(b, &xy0);
                b.batch_norm_forward_eval_in_place(
                    &g, act, EPS, &mut xy, &scale, &offset, &mean, &var,
                );
                for (what, buf, host) in [
                    ("scale", &scale, &i.scale),
                    ("offset", &offset, &i.offset),
                    ("mean", &mean, &i.mean),
                    ("var", &var, &i.var),
                ] {
                    assert_unchanged(b, what, buf, host);
                }
                let got = read(b, &xy);
                let what = format!("batch_norm_forward_eval_in_place {g:?} {act:?} seed {seed}");
                assert_same_bits(&what, &got[..g.len()], &apart[..g.len()]);
                assert_tail_kept(&what, &got, g.len(), &xy0);
            }
        }
    }
}

pub fn batch_norm_backward_eval_matches<B: Backend>(b: &B) {
    let reference = cpu();
    for g in shapes() {
        for act in ACTIVATIONS {
            for seed in SEEDS {
                let i = inputs(&g, seed);
                let y = forward_eval_run(
                    &reference,
                    &g,
                    act,
                    &i,
                    &garbage(&mut Rng::new(seed), g.len()),
                );
                let dx0 = garbage(&mut Rng::new(seed + 600), g.len());
                let got = backward_eval_run(b, &g, act, &i, &y, &dx0);
                let want = backward_eval_run(&reference, &g, act, &i, &y, &dx0);
                let what = format!("batch_norm_backward_eval {g:?} {act:?} seed {seed}");
                assert_within(&what, &got, &want, &PER_ELEMENT.bound(&want[..g.len()]));
                assert_tail_kept(&what, &got, g.len(), &dx0);
            }
        }
    }
}
