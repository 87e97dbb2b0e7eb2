//! `global_avg_pool_forward` / `global_avg_pool_backward`: the C4 head's
//! pool after res5. Every backend adds a plane's values in order and
//! divides by the count (one correctly rounded operation each), and the
//! gradient is one product per value, so all give the CPU's bits.
use pulsefocus_core::backend::GlobalPoolGeom;
use pulsefocus_core::Backend;

use super::{
    assert_same_bits, assert_tail_kept, assert_unchanged, buffer, cpu, garbage, input, read, Rng,
    SEEDS,
};

/// The C4 head's 7x7 RoI features (few channels), a 1x1 map, a plane
/// longer than a 256-thread block, and an empty batch (no RoIs).
fn shapes() -> [GlobalPoolGeom; 4] {
    let geom = |batch, channels, spatial| GlobalPoolGeom {
        batch,
        channels,
        spatial,
    };
    [
        geom(3, 20, 7 * 7),
        geom(2, 5, 1),
        geom(2, 3, 17 * 19),
        geom(0, 4, 3 * 3),
    ]
}

fn forward_run<B: Backend>(b: &B, g: &GlobalPoolGeom, x: &[f32], y0: &[f32]) -> Vec<f32> {
    let xb = buffer(b, x);
    let mut yb = buffer(b, y0);
    b.global_avg_pool_forward(g, &xb, &mut yb);
    assert_unchanged(b, "x", &xb, x);
    read(b, &yb)
}

fn backward_run<B: Backend>(b: &B, g: &GlobalPoolGeom, dy: &[f32], dx0: &[f32]) -> Vec<f32> {
    let dyb = buffer(b, dy);
    let mut dxb = buffer(b, dx0);
    b.global_avg_pool_backward(g, &dyb, &mut dxb);
    assert_unchanged(b, "dy", &dyb, dy);
    read(b, &dxb)
}

pub fn global_avg_pool_forward_matches<B: Backend>(b: &B) {
    for g in shapes() {
        for seed in SEEDS {
            let mut rng = Rng::new(seed);
            let x = input(&rng.values(g.input_len(), -3.0, 3.0));
            let y0 = garbage(&mut rng, g.planes());
            let what = format!("global_avg_pool_forward {g:?} seed {seed}");
            let got = forward_run(b, &g, &x, &y0);
            let want = forward_run(&cpu(), &g, &x, &y0);
            assert_same_bits(&what, &got, &want);
            assert_tail_kept(&what, &got, g.planes(), &y0);
        }
    }
}

pub fn global_avg_pool_backward_matches<B: Backend>(b: &B) {
    for g in shapes() {
        for seed in SEEDS {
            let mut rng = Rng::new(seed + 10);
            let dy = input(&rng.values(g.planes(), -1.0, 1.0));
            let dx0 = garbage(&mut rng, g.input_len());
            let what = format!("global_avg_pool_backward {g:?} seed {seed}");
            let got = backward_run(b, &g, &dy, &dx0);
            let want = backward_run(&cpu(), &g, &dy, &dx0);
            assert_same_bits(&what, &got, &want);
            assert_tail_kept(&what, &got, g.input_len(), &dx0);
        }
    }
}
