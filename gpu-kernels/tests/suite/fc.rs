//! `fc_forward` / `fc_backward_data` / `fc_backward_weight`: Paddle's
//! `fluid.layers.fc` as the R-CNN box heads use it (fc6/fc7 with ReLU,
//! cls_score/bbox_pred without). Tolerance: each output is a sum of
//! products taken in another order (GEMM tiles on the GPU, the `gemm`
//! crate's on the CPU), held to the rounding bound of such a sum
//! ([`summation_bound`]) from the same product of the inputs' absolute
//! values; an activation moves two values no further apart. The bias
//! gradient is a sum over the rows in another order too (a shared-memory
//! tree on the GPU), under the same bound.
use pulsefocus_core::backend::{Activation, FcGeom};
use pulsefocus_core::Backend;

use super::{
    abs, assert_same_bits, assert_tail_kept, assert_unchanged, assert_within, buffer, cpu, garbage,
    input, read, summation_bound, Rng, SEEDS,
};

fn geom(rows: usize, inputs: usize, outputs: usize) -> FcGeom {
    FcGeom {
        rows,
        inputs,
        outputs,
    }
}

/// The heads' layers, small, with sizes that are not multiples of the
/// 64 x 64 tile, one row, and no rows (no RoIs).
fn shapes() -> Vec<(&'static str, FcGeom, Activation)> {
    vec![
        (
            "fc6 on 7x7 RoI features, ReLU, several tiles each way",
            geom(70, 4 * 7 * 7, 130),
            Activation::Relu,
        ),
        (
            "bbox_pred, ragged tiles",
            geom(37, 130, 21 * 4),
            Activation::Identity,
        ),
        (
            "cls_score of a single RoI",
            geom(1, 96, 21),
            Activation::Identity,
        ),
        (
            "leaky ReLU, one input",
            geom(9, 1, 5),
            Activation::LEAKY_0_1,
        ),
        ("no RoIs", geom(0, 12, 6), Activation::Relu),
    ]
}

/// x, w, bias and dz (the gradient before the activation), with NaN tails.
fn case(g: &FcGeom, seed: u64) -> [Vec<f32>; 4] {
    let mut rng = Rng::new(seed);
    [
        input(&rng.values(g.input_len(), -1.0, 1.0)),
        input(&rng.values(g.weight_len(), -1.0, 1.0)),
        input(&rng.values(g.outputs, -1.0, 1.0)),
        input(&rng.values(g.output_len(), -1.0, 1.0)),
    ]
}

/// The whole `y` buffer.
fn forward_run<B: Backend>(
    b: &B,
    g: &FcGeom,
    act: Activation,
    [x, w, bias]: [&[f32]; 3],
    y0: &[f32],
) -> Vec<f32> {
    let (xb, wb, bb) = (buffer(b, x), buffer(b, w), buffer(b, bias));
    let mut yb = buffer(b, y0);
    b.fc_forward(g, act, &xb, &wb, &bb, &mut yb);
    for (what, buf, host) in [("x", &xb, x), ("w", &wb, w), ("bias", &bb, bias)] {
        assert_unchanged(b, what, buf, host);
    }
    read(b, &yb)
}

fn backward_data_run<B: Backend>(
    b: &B,
    g: &FcGeom,
    dz: &[f32],
    w: &[f32],
    dx0: &[f32],
) -> Vec<f32> {
    let (dzb, wb) = (buffer(b, dz), buffer(b, w));
    let mut dxb = buffer(b, dx0);
    b.fc_backward_data(g, &dzb, &wb, &mut dxb);
    assert_unchanged(b, "dz", &dzb, dz);
    assert_unchanged(b, "w", &wb, w);
    read(b, &dxb)
}

/// `(dw, dbias)`, whole buffers.
fn backward_weight_run<B: Backend>(
    b: &B,
    g: &FcGeom,
    x: &[f32],
    dz: &[f32],
    (dw0, db0): (&[f32], &[f32]),
) -> (Vec<f32>, Vec<f32>) {
    let (xb, dzb) = (buffer(b, x), buffer(b, dz));
    let (mut dwb, mut dbb) = (buffer(b, dw0), buffer(b, db0));
    b.fc_backward_weight(g, &xb, &dzb, &mut dwb, &mut dbb);
    assert_unchanged(b, "x", &xb, x);
    assert_unchanged(b, "dz", &dzb, dz);
    (read(b, &dwb), read(b, &dbb))
}

pub fn fc_forward_matches<B: Backend>(b: &B) {
    let reference = cpu();
    for (name, g, act) in shapes() {
        for seed in SEEDS {
            let [x, w, bias, _] = case(&g, seed);
            let y0 = garbage(&mut Rng::new(seed + 100), g.output_len());
            let what = format!("fc_forward {name} {g:?} {act:?} seed {seed}");
            let got = forward_run(b, &g, act, [&x, &w, &bias], &y0);
            let want = forward_run(&reference, &g, act, [&x, &w, &bias], &y0);
            let (ax, aw, ab) = (abs(&x), abs(&w), abs(&bias));
            let envelope = forward_run(&reference, &g, Activation::Identity, [&ax, &aw, &ab], &y0);
            let bound = summation_bound(&envelope[..g.output_len()], g.inputs + 1);
            assert_within(&what, &got, &want, &bound);
            assert_tail_kept(&what, &got, g.output_len(), &y0);
        }
    }
}

pub fn fc_backward_data_matches<B: Backend>(b: &B) {
    let reference = cpu();
    for (name, g, _) in shapes() {
        for seed in SEEDS {
            let [_, w, _, dz] = case(&g, seed);
            let dx0 = garbage(&mut Rng::new(seed + 200), g.input_len());
            let what = format!("fc_backward_data {name} {g:?} seed {seed}");
            let got = backward_data_run(b, &g, &dz, &w, &dx0);
            let want = backward_data_run(&reference, &g, &dz, &w, &dx0);
            let envelope = backward_data_run(&reference, &g, &abs(&dz), &abs(&w), &dx0);
            let bound = summation_bound(&envelope[..g.input_len()], g.outputs);
            assert_within(&what, &got, &want, &bound);
            assert_tail_kept(&what, &got, g.input_len(), &dx0);
        }
    }
}

/// No rows give exactly zero gradients (the envelope is zero, and so is the
/// bound).
pub fn fc_backward_weight_matches<B: Backend>(b: &B) {
    let reference = cpu();
    for (name, g, _) in shapes() {
        for seed in SEEDS {
            let [x, _, _, dz] = case(&g, seed);
            let mut rng = Rng::new(seed + 300);
            let initial = (
                garbage(&mut rng, g.weight_len()),
                garbage(&mut rng, g.outputs),
            );
            let init = (initial.0.as_slice(), initial.1.as_slice());
            let what = format!("fc_backward_weight {name} {g:?} seed {seed}");
            let (dw, db) = backward_weight_run(b, &g, &x, &dz, init);
            let (want_dw, want_db) = backward_weight_run(&reference, &g, &x, &dz, init);
            let (env_dw, env_db) = backward_weight_run(&reference, &g, &abs(&x), &abs(&dz), init);
            for (part, got, want, envelope, len, initial) in [
                ("dw", &dw, &want_dw, &env_dw, g.weight_len(), init.0),
                ("dbias", &db, &want_db, &env_db, g.outputs, init.1),
            ] {
                let what = format!("{what}: {part}");
                let bound = summation_bound(&envelope[..len], g.rows);
                assert_within(&what, got, want, &bound);
                assert_tail_kept(&what, got, len, initial);
                if g.rows == 0 {
                    assert_same_bits(&what, &got[..len], &vec![0.0; len]);
                }
            }
        }
    }
}
