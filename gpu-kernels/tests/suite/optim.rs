//! The optimizers. Momentum SGD with L2 decay: `v = momentum * v + (grad +
//! decay * param)`, `param -= lr * v`; RMSProp: the same decayed gradient,
//! a mean square, a moment divided by the root of the mean square. A handful
//! of roundings per element, which a fused multiply-add may skip: 4 EPSILON
//! of the magnitudes involved, carried through the square root.
use pulsefocus_core::backend::{RmsPropStep, SgdStep};
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
            let p0 = with_tail(&mut rng, len, -1.0, 1.0);
            let g = with_tail(&mut rng, len, -1.0, 1.0);
            let v0 = with_tail(&mut rng, len, -0.5, 0.5);
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

/// Parameters, gradients and states with garbage tails (a parameter buffer
/// is planned longer than the tensor too).
fn with_tail(rng: &mut Rng, len: usize, lo: f32, hi: f32) -> Vec<f32> {
    let mut host = rng.values(len, lo, hi);
    host.extend(garbage(rng, 0));
    host
}

type RmsPropState = (Vec<f32>, Vec<f32>, Vec<f32>);

fn run_rmsprop<B: Backend>(
    b: &B,
    step: &RmsPropStep,
    len: usize,
    [p0, g, ms0, m0]: [&[f32]; 4],
) -> RmsPropState {
    let (mut p, gb) = (buffer(b, p0), buffer(b, g));
    let (mut ms, mut m) = (buffer(b, ms0), buffer(b, m0));
    b.rmsprop(step, len, &mut p, &gb, &mut ms, &mut m);
    assert_unchanged(b, "grad", &gb, g);
    (read(b, &p), read(b, &ms), read(b, &m))
}

pub fn rmsprop_matches<B: Backend>(b: &B) {
    for seed in SEEDS {
        for len in LENGTHS {
            let mut rng = Rng::new(seed);
            let step = RmsPropStep {
                lr: rng.uniform(1e-4, 0.1),
                rho: 0.95,
                epsilon: 1e-6,
                momentum: [0.0, 0.9][seed as usize % 2],
                weight_decay: [0.0, 5e-5, 1e-2][seed as usize % 3],
            };
            let p0 = with_tail(&mut rng, len, -1.0, 1.0);
            let g = with_tail(&mut rng, len, -1.0, 1.0);
            let ms0 = with_tail(&mut rng, len, 0.0, 0.5);
            let m0 = with_tail(&mut rng, len, -0.05, 0.05);
            let inputs = [p0.as_slice(), &g, &ms0, &m0];
            let (p, ms, m) = run_rmsprop(b, &step, len, inputs);
            let (want_p, want_ms, want_m) = run_rmsprop(&cpu(), &step, len, inputs);
            let what = format!("rmsprop {step:?} len {len} seed {seed}");
            let eps = 4.0 * f32::EPSILON;
            let (mut ms_bound, mut m_bound, mut p_bound) = (vec![], vec![], vec![]);
            for i in 0..len {
                let gi = g[i] + step.weight_decay * p0[i];
                let ms_b = eps * (step.rho * ms0[i] + (1.0 - step.rho) * gi * gi);
                let root = (want_ms[i] + step.epsilon).sqrt();
                let term = step.lr * gi.abs() / root;
                // 1/sqrt carries half the mean square's relative error.
                let m_b = eps * ((step.momentum * m0[i]).abs() + term)
                    + term * 0.5 * ms_b / (want_ms[i] + step.epsilon);
                ms_bound.push(ms_b);
                m_bound.push(m_b);
                p_bound.push(eps * (p0[i].abs() + want_m[i].abs()) + m_b);
            }
            assert_within(&format!("{what}: mean_square"), &ms, &want_ms, &ms_bound);
            assert_within(&format!("{what}: moment"), &m, &want_m, &m_bound);
            assert_within(&format!("{what}: param"), &p, &want_p, &p_bound);
            for (name, got, before) in [
                ("param", &p, &p0),
                ("mean_square", &ms, &ms0),
                ("moment", &m, &m0),
            ] {
                assert_tail_kept(&format!("{what}: {name}"), got, len, before);
            }
        }
    }
}
