//! Momentum SGD with L2 decay. `v = momentum * v + (grad + decay * param)`,
//! `param -= lr * v`: a handful of roundings per element, which a fused
//! multiply-add may skip; 4 EPSILON of the magnitudes involved.
use pulsefocus_core::backend::SgdStep;
use pulsefocus_core::Backend;

use super::{
    assert_tail_kept, assert_unchanged, assert_within, buffer, cpu, garbage, read, Rng, SEEDS,
};

const LENGTHS: [usize; 3] = [1, 257, 10_007];

fn run<B: Backend>(
    b: &B,
    step: &SgdStep,
    len: usize,
    (p0, g, v0): (&[f32], &[f32], &[f32]),
) -> (Vec<f32>, Vec<f32>) {
    let (mut p, gb, mut v) = (buffer(b, p0), buffer(b, g), buffer(b, v0));
    b.sgd_momentum(step, len, &mut p, &gb, &mut v);
    assert_unchanged(b, "grad", &gb, g);
    (read(b, &p), read(b, &v))
}

pub fn sgd_momentum_matches<B: Backend>(b: &B) {
    for seed in SEEDS {
        for len in LENGTHS {
            let mut rng = Rng::new(seed);
            let step = SgdStep {
                lr: rng.uniform(1e-4, 0.1),
                momentum: 0.9,
                weight_decay: [0.0, 5e-4, 1e-2][seed as usize % 3],
            };
            // Parameters, gradients and velocities with garbage tails (a
            // parameter buffer is planned longer than the tensor too).
            let with_tail = |rng: &mut Rng, lo, hi| {
                let mut host = rng.values(len, lo, hi);
                host.extend(garbage(rng, 0));
                host
            };
            let p0 = with_tail(&mut rng, -1.0, 1.0);
            let g = with_tail(&mut rng, -1.0, 1.0);
            let v0 = with_tail(&mut rng, -0.5, 0.5);
            let inputs = (p0.as_slice(), g.as_slice(), v0.as_slice());
            let (p, v) = run(b, &step, len, inputs);
            let (want_p, want_v) = run(&cpu(), &step, len, inputs);
            let what = format!("sgd_momentum {step:?} len {len} seed {seed}");
            let v_bound: Vec<f32> = (0..len)
                .map(|i| {
                    4.0 * f32::EPSILON
                        * ((step.momentum * v0[i]).abs()
                            + g[i].abs()
                            + (step.weight_decay * p0[i]).abs())
                })
                .collect();
            let p_bound: Vec<f32> = (0..len)
                .map(|i| {
                    4.0 * f32::EPSILON * (p0[i].abs() + (step.lr * want_v[i]).abs())
                        + step.lr * v_bound[i]
                })
                .collect();
            assert_within(&format!("{what}: velocity"), &v, &want_v, &v_bound);
            assert_within(&format!("{what}: param"), &p, &want_p, &p_bound);
            assert_tail_kept(&format!("{what}: velocity"), &v, len, &v0);
            assert_tail_kept(&format!("{what}: param"), &p, len, &p0);
        }
    }
}
