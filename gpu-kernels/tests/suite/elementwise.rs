//! Activations, sigmoid, add, axpy, scale, sum, sum of squares and
//! per-channel sums, over lengths shorter than their buffers. Activations,
//! add and scale are one select or one correctly rounded operation per
//! element: the same bits.
use pulsefocus_core::Backend;

use super::{
    abs, assert_same_bits, assert_tail_kept, assert_unchanged, assert_within, buffer, cpu, garbage,
    in_place, input, read, summation_bound, Rng, Tol, SEEDS,
};
use crate::suite::batch_norm::ACTIVATIONS;

/// One element, a block's worth and one more, and lengths no block or grid
/// size divides (the grid-stride loops' remainders).
const LENGTHS: [usize; 5] = [1, 256, 257, 1000, 10_007];

/// Half the values on a 0.5 grid (exact 0 and 6: the activations' kinks),
/// half continuous, in [-8, 8] (ReLU6 clips).
fn activation_inputs(rng: &mut Rng, len: usize) -> Vec<f32> {
    let steps = rng.steps(len, -8.0, 8.0, 0.5);
    let smooth = rng.values(len, -8.0, 8.0);
    (0..len)
        .map(|i| if i % 2 == 0 { steps[i] } else { smooth[i] })
        .collect()
}

/// Uploads `inputs` and `out0`, runs `op`, checks the inputs are unchanged
/// and returns the output buffer read back whole.
fn run<B: Backend>(
    b: &B,
    inputs: &[&[f32]],
    out0: &[f32],
    op: impl Fn(&B, &[B::Buffer], &mut B::Buffer),
) -> Vec<f32> {
    let bufs: Vec<B::Buffer> = inputs.iter().map(|h| buffer(b, h)).collect();
    let mut out = buffer(b, out0);
    op(b, &bufs, &mut out);
    for (k, (buf, host)) in bufs.iter().zip(inputs).enumerate() {
        assert_unchanged(b, &format!("input {k}"), buf, host);
    }
    read(b, &out)
}

/// Runs the closure-shaped `op` on the backend under test and on the
/// reference (the body is type-checked once per backend), then compares the
/// first `len` outputs within `bound(reference output)` and checks the tail.
macro_rules! compare {
    ($b:expr, $what:expr, $len:expr, $inputs:expr, $out0:expr, $bound:expr,
     |$be:ident, $bufs:ident, $out:ident| $body:expr) => {{
        let got = run($b, $inputs, $out0, |$be, $bufs, $out| $body);
        let want = run(&cpu(), $inputs, $out0, |$be, $bufs, $out| $body);
        let bound: Vec<f32> = $bound(&want[..$len]);
        assert_within($what, &got, &want, &bound);
        assert_tail_kept($what, &got, $len, $out0);
    }};
}

fn exact(want: &[f32]) -> Vec<f32> {
    Tol::EXACT.bound(want)
}

pub fn activation_forward_matches<B: Backend>(b: &B) {
    for seed in SEEDS {
        for len in LENGTHS {
            for act in ACTIVATIONS {
                let mut rng = Rng::new(seed);
                let x = input(&activation_inputs(&mut rng, len));
                let y0 = garbage(&mut rng, len);
                let what = format!("activation_forward {act:?} len {len} seed {seed}");
                compare!(b, &what, len, &[&x], &y0, exact, |be, i, y| be
                    .activation_forward(act, len, &i[0], y));
            }
        }
    }
}

/// The in-place form against the same backend's out-of-place op: the
/// same bits, and the tail past the tensor left alone.
pub fn activation_forward_in_place_matches<B: Backend>(b: &B) {
    for seed in SEEDS {
        for len in LENGTHS {
            for act in ACTIVATIONS {
                let mut rng = Rng::new(seed);
                let x = activation_inputs(&mut rng, len);
                let xy0 = in_place(&mut rng, &x);
                let y0 = garbage(&mut rng, len);
                let what = format!("activation_forward_in_place {act:?} len {len} seed {seed}");
                let got = run(b, &[], &xy0, |be, _, xy| {
                    be.activation_forward_in_place(act, len, xy)
                });
                let apart = run(b, &[&input(&x)], &y0, |be, i, y| {
                    be.activation_forward(act, len, &i[0], y)
                });
                assert_same_bits(&what, &got[..len], &apart[..len]);
                assert_tail_kept(&what, &got, len, &xy0);
            }
        }
    }
}

pub fn activation_backward_matches<B: Backend>(b: &B) {
    for seed in SEEDS {
        for len in LENGTHS {
            for act in ACTIVATIONS {
                let mut rng = Rng::new(seed);
                let y: Vec<f32> = activation_inputs(&mut rng, len)
                    .iter()
                    .map(|&x| act.forward(x))
                    .collect();
                let (y, dy) = (input(&y), input(&rng.values(len, -1.0, 1.0)));
                let dx0 = garbage(&mut rng, len);
                let what = format!("activation_backward {act:?} len {len} seed {seed}");
                compare!(b, &what, len, &[&y, &dy], &dx0, exact, |be, i, dx| be
                    .activation_backward(act, len, &i[0], &i[1], dx));
            }
        }
    }
}

/// The GPU's exp is `ex2.approx` of `x * log2(e)` (CUDA's fast-math
/// `__expf`): about 2 ulp, plus the rounding of the product, which grows
/// with |x| (20 * 2^-24 here): 1e-5 relative.
const SIGMOID: Tol = Tol {
    abs: 1e-7,
    rel: 1e-5,
};

pub fn sigmoid_forward_matches<B: Backend>(b: &B) {
    for seed in SEEDS {
        for len in LENGTHS {
            let mut rng = Rng::new(seed);
            let x = input(&rng.values(len, -20.0, 20.0));
            let y0 = garbage(&mut rng, len);
            let what = format!("sigmoid_forward len {len} seed {seed}");
            compare!(
                b,
                &what,
                len,
                &[&x],
                &y0,
                |w| SIGMOID.bound(w),
                |be, i, y| be.sigmoid_forward(len, &i[0], y)
            );
        }
    }
}

/// `dy * y * (1 - y)`: three roundings, possibly in another association or
/// fused: 4 EPSILON relative.
pub fn sigmoid_backward_matches<B: Backend>(b: &B) {
    let tol = Tol {
        abs: 0.0,
        rel: 4.0 * f32::EPSILON,
    };
    for seed in SEEDS {
        for len in LENGTHS {
            let mut rng = Rng::new(seed);
            let y = input(&rng.values(len, 0.0, 1.0));
            let dy = input(&rng.values(len, -1.0, 1.0));
            let dx0 = garbage(&mut rng, len);
            let what = format!("sigmoid_backward len {len} seed {seed}");
            compare!(
                b,
                &what,
                len,
                &[&y, &dy],
                &dx0,
                |w| tol.bound(w),
                |be, i, dx| be.sigmoid_backward(len, &i[0], &i[1], dx)
            );
        }
    }
}

pub fn add_matches<B: Backend>(b: &B) {
    for seed in SEEDS {
        for len in LENGTHS {
            let mut rng = Rng::new(seed);
            let (a, c) = (
                input(&rng.values(len, -1.0, 1.0)),
                input(&rng.values(len, -1.0, 1.0)),
            );
            let y0 = garbage(&mut rng, len);
            let what = format!("add len {len} seed {seed}");
            compare!(b, &what, len, &[&a, &c], &y0, exact, |be, i, y| be
                .add(len, &i[0], &i[1], y));
        }
    }
}

/// `y += alpha * x`: with or without a fused multiply-add, one rounding of
/// `alpha * x` apart: EPSILON * (|alpha x| + |y|).
pub fn axpy_matches<B: Backend>(b: &B) {
    for seed in SEEDS {
        for len in LENGTHS {
            let mut rng = Rng::new(seed);
            let alpha = rng.uniform(-2.0, 2.0);
            let x = input(&rng.values(len, -1.0, 1.0));
            let mut y0 = rng.values(len, -1.0, 1.0);
            y0.extend(garbage(&mut rng, 0));
            let bound = |want: &[f32]| -> Vec<f32> {
                (0..want.len())
                    .map(|k| f32::EPSILON * ((alpha * x[k]).abs() + y0[k].abs() + want[k].abs()))
                    .collect()
            };
            let what = format!("axpy alpha {alpha} len {len} seed {seed}");
            compare!(b, &what, len, &[&x], &y0, bound, |be, i, y| be
                .axpy(len, alpha, &i[0], y));
        }
    }
}

pub fn scale_matches<B: Backend>(b: &B) {
    for seed in SEEDS {
        for len in LENGTHS {
            let mut rng = Rng::new(seed);
            let alpha = rng.uniform(-2.0, 2.0);
            let mut x0 = rng.values(len, -1.0, 1.0);
            x0.extend(garbage(&mut rng, 0));
            let what = format!("scale alpha {alpha} len {len} seed {seed}");
            compare!(b, &what, len, &[], &x0, exact, |be, _i, x| be
                .scale(len, alpha, x));
        }
    }
}

/// Sums of up to 10^4 values: the GPU adds in f32 (per thread, then a
/// tree per block; the host adds the blocks' partials in f64), the CPU in
/// f64. An f32 sum of n terms in any order is within (n - 1) 2^-24
/// sum|x|; each thread adds n / (threads in the grid) terms and the tree
/// 8 more, so 1e-5 * sum|x| holds with a wide margin.
fn sum_check<B: Backend>(b: &B, squares: bool) {
    let reference = cpu();
    let name = if squares { "sum_squares" } else { "sum" };
    for seed in SEEDS {
        for len in LENGTHS {
            let mut rng = Rng::new(seed);
            // Off-centre values: a sum that is not near zero.
            let data: Vec<f32> = rng.values(len, -0.5, 1.0);
            let x = input(&data);
            let (xb, xr) = (buffer(b, &x), buffer(&reference, &x));
            let (got, want) = if squares {
                (b.sum_squares(len, &xb), reference.sum_squares(len, &xr))
            } else {
                (b.sum(len, &xb), reference.sum(len, &xr))
            };
            assert_unchanged(b, "x", &xb, &x);
            let envelope: f64 = data
                .iter()
                .map(|&v| {
                    if squares {
                        (v as f64) * (v as f64)
                    } else {
                        (v as f64).abs()
                    }
                })
                .sum();
            assert!(
                (got - want).abs() <= 1e-5 * envelope,
                "{name} len {len} seed {seed}: {got}, reference {want} (sum of |terms| {envelope})"
            );
        }
    }
}

pub fn sum_matches<B: Backend>(b: &B) {
    sum_check(b, false);
}

pub fn sum_squares_matches<B: Backend>(b: &B) {
    sum_check(b, true);
}

/// `channel_sum` of `x` into a buffer starting as `out0`; the whole buffer.
fn channel_sum_run<B: Backend>(
    b: &B,
    (batch, channels, plane): (usize, usize, usize),
    x: &[f32],
    out0: &[f32],
) -> Vec<f32> {
    run(b, &[x], out0, |be, i, out| {
        be.channel_sum(batch, channels, plane, &i[0], out)
    })
}

/// Per-channel sums of NCHW tensors: a single value, planes no block size
/// divides, several images. Each sum has `batch * plane` terms in another
/// order on each backend (f32 per thread and a tree on the GPU, f64 on the
/// CPU): within the rounding bound of such a sum.
pub fn channel_sum_matches<B: Backend>(b: &B) {
    let reference = cpu();
    for seed in SEEDS {
        for shape in [(1, 1, 1), (2, 3, 257), (3, 5, 1000), (1, 7, 49)] {
            let (batch, channels, plane) = shape;
            let mut rng = Rng::new(seed);
            let x = input(&rng.values(batch * channels * plane, -0.5, 1.0));
            let out0 = garbage(&mut rng, channels);
            let what = format!("channel_sum {shape:?} seed {seed}");
            let got = channel_sum_run(b, shape, &x, &out0);
            let want = channel_sum_run(&reference, shape, &x, &out0);
            let envelope = channel_sum_run(&reference, shape, &abs(&x), &out0);
            let bound = summation_bound(&envelope[..channels], batch * plane);
            assert_within(&what, &got, &want, &bound);
            assert_tail_kept(&what, &got, channels, &out0);
        }
    }
}
