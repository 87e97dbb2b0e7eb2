//! Max pool forward and backward, nearest 2x upsampling forward and
//! backward, channel copies. Forward passes select or copy: the same bits.
//! Backward passes add up to a few gradients per input in another order:
//! the rounding bound of such a sum ([`summation_bound`]).
use pulsefocus_core::backend::{ChannelCopy, PoolGeom};
use pulsefocus_core::Backend;

use super::{
    abs, assert_same_bits, assert_tail_kept, assert_unchanged, assert_within, buffer, cpu, garbage,
    input, read, summation_bound, Rng, Tol, SEEDS,
};

fn pool(
    batch: usize,
    channels: usize,
    (h_in, w_in): (usize, usize),
    kernel: usize,
    stride: usize,
    pad: usize,
) -> PoolGeom {
    PoolGeom {
        batch,
        channels,
        h_in,
        w_in,
        kernel,
        stride,
        pad,
        ceil_mode: false,
    }
}

/// YOLOv3-tiny's 2x2 stride 2, ResNet's 3x3 stride 2 pad 1, the SPP
/// block's 5/9/13 stride 1 (windows overlapping up to 169 times), a 2x2
/// stride 1, a window reaching past odd edges and FPN's P6 (kernel 1
/// stride 2, a subsampling, here of odd maps); in ceil mode, VGG's 2x2
/// stride 2 on odd maps (75 -> 38 at 300 pixels) and a 3x3 stride 2 whose
/// last window covers one row and column.
pub fn shapes() -> Vec<PoolGeom> {
    let ceil = |g: PoolGeom| PoolGeom {
        ceil_mode: true,
        ..g
    };
    vec![
        ceil(pool(2, 3, (9, 7), 2, 2, 0)),
        ceil(pool(1, 2, (8, 8), 3, 2, 1)),
        pool(2, 3, (8, 8), 2, 2, 0),
        pool(2, 3, (9, 8), 3, 2, 1),
        pool(1, 2, (13, 13), 5, 1, 2),
        pool(1, 2, (13, 11), 9, 1, 4),
        pool(1, 1, (13, 13), 13, 1, 6),
        pool(2, 2, (7, 5), 2, 1, 0),
        pool(1, 3, (7, 7), 3, 3, 1),
        pool(2, 3, (5, 3), 1, 2, 0),
    ]
}

/// Inputs per seed: values on a coarse grid (ties everywhere: the first
/// maximum in row-major order must win on every backend), and on odd seeds
/// all negative (a padded cell, which never wins, would).
fn pool_input(rng: &mut Rng, len: usize, seed: u64) -> Vec<f32> {
    if seed % 2 == 1 {
        rng.steps(len, -2.0, -0.25, 0.25)
    } else {
        rng.steps(len, -1.0, 1.0, 0.5)
    }
}

fn forward_run<B: Backend>(b: &B, g: &PoolGeom, x: &[f32], y0: &[f32]) -> Vec<f32> {
    let xb = buffer(b, x);
    let mut y = buffer(b, y0);
    b.max_pool_forward(g, &xb, &mut y);
    assert_unchanged(b, "x", &xb, x);
    read(b, &y)
}

fn backward_run<B: Backend>(b: &B, g: &PoolGeom, x: &[f32], dy: &[f32], dx0: &[f32]) -> Vec<f32> {
    let (xb, dyb) = (buffer(b, x), buffer(b, dy));
    let mut dx = buffer(b, dx0);
    b.max_pool_backward(g, &xb, &dyb, &mut dx);
    assert_unchanged(b, "x", &xb, x);
    assert_unchanged(b, "dy", &dyb, dy);
    read(b, &dx)
}

pub fn max_pool_forward_matches<B: Backend>(b: &B) {
    for g in shapes() {
        for seed in SEEDS {
            let mut rng = Rng::new(seed);
            let x = input(&pool_input(&mut rng, g.input_len(), seed));
            let y0 = garbage(&mut rng, g.output_len());
            let what = format!("max_pool_forward {g:?} seed {seed}");
            let got = forward_run(b, &g, &x, &y0);
            let want = forward_run(&cpu(), &g, &x, &y0);
            assert_same_bits(&what, &got, &want);
            assert_tail_kept(&what, &got, g.output_len(), &y0);
        }
    }
}

pub fn max_pool_backward_matches<B: Backend>(b: &B) {
    for g in shapes() {
        for seed in SEEDS {
            let mut rng = Rng::new(seed);
            let x = input(&pool_input(&mut rng, g.input_len(), seed));
            let dy = input(&rng.values(g.output_len(), -1.0, 1.0));
            let dx0 = garbage(&mut rng, g.input_len());
            let what = format!("max_pool_backward {g:?} seed {seed}");
            let got = backward_run(b, &g, &x, &dy, &dx0);
            let want = backward_run(&cpu(), &g, &x, &dy, &dx0);
            let envelope = backward_run(&cpu(), &g, &x, &abs(&dy), &dx0);
            let windows = g.kernel.div_ceil(g.stride).pow(2);
            let bound = summation_bound(&envelope[..g.input_len()], windows);
            assert_within(&what, &got, &want, &bound);
            assert_tail_kept(&what, &got, g.input_len(), &dx0);
        }
    }
}

/// (planes, h, w): a 13x13 map upsampled in YOLOv3's neck, odd and
/// one-wide maps.
const UPSAMPLE: [(usize, usize, usize); 4] = [(4, 13, 13), (6, 4, 5), (3, 7, 1), (2, 1, 1)];

fn upsample_run<B: Backend>(
    b: &B,
    (planes, h, w): (usize, usize, usize),
    backward: bool,
    from: &[f32],
    to0: &[f32],
) -> Vec<f32> {
    let src = buffer(b, from);
    let mut dst = buffer(b, to0);
    if backward {
        b.upsample2x_backward(planes, h, w, &src, &mut dst);
    } else {
        b.upsample2x_forward(planes, h, w, &src, &mut dst);
    }
    assert_unchanged(b, "source", &src, from);
    read(b, &dst)
}

pub fn upsample2x_forward_matches<B: Backend>(b: &B) {
    for shape in UPSAMPLE {
        for seed in SEEDS {
            let (planes, h, w) = shape;
            let mut rng = Rng::new(seed);
            let x = input(&rng.values(planes * h * w, -1.0, 1.0));
            let y0 = garbage(&mut rng, planes * 4 * h * w);
            let what = format!("upsample2x_forward {shape:?} seed {seed}");
            let got = upsample_run(b, shape, false, &x, &y0);
            let want = upsample_run(&cpu(), shape, false, &x, &y0);
            assert_same_bits(&what, &got, &want);
            assert_tail_kept(&what, &got, planes * 4 * h * w, &y0);
        }
    }
}

pub fn upsample2x_backward_matches<B: Backend>(b: &B) {
    for shape in UPSAMPLE {
        for seed in SEEDS {
            let (planes, h, w) = shape;
            let mut rng = Rng::new(seed);
            let dy = input(&rng.values(planes * 4 * h * w, -1.0, 1.0));
            let dx0 = garbage(&mut rng, planes * h * w);
            let what = format!("upsample2x_backward {shape:?} seed {seed}");
            let got = upsample_run(b, shape, true, &dy, &dx0);
            let want = upsample_run(&cpu(), shape, true, &dy, &dx0);
            let envelope = upsample_run(&cpu(), shape, true, &abs(&dy), &dx0);
            let bound = summation_bound(&envelope[..planes * h * w], 4);
            assert_within(&what, &got, &want, &bound);
            assert_tail_kept(&what, &got, planes * h * w, &dx0);
        }
    }
}

/// Concat forward (a whole source into the middle of a wider destination),
/// split backward (a middle block of a wider source into a whole
/// destination), and a one-channel block at the end.
fn copies() -> [ChannelCopy; 3] {
    [
        ChannelCopy {
            batch: 2,
            spatial: 13 * 13,
            src_channels: 3,
            src_first: 0,
            dst_channels: 8,
            dst_first: 2,
            count: 3,
        },
        ChannelCopy {
            batch: 3,
            spatial: 7,
            src_channels: 6,
            src_first: 2,
            dst_channels: 3,
            dst_first: 0,
            count: 3,
        },
        ChannelCopy {
            batch: 1,
            spatial: 1,
            src_channels: 4,
            src_first: 3,
            dst_channels: 5,
            dst_first: 4,
            count: 1,
        },
    ]
}

fn copy_run<B: Backend>(b: &B, c: &ChannelCopy, src: &[f32], dst0: &[f32]) -> Vec<f32> {
    let s = buffer(b, src);
    let mut d = buffer(b, dst0);
    b.copy_channels(c, &s, &mut d);
    assert_unchanged(b, "src", &s, src);
    read(b, &d)
}

pub fn copy_channels_matches<B: Backend>(b: &B) {
    for c in copies() {
        for seed in SEEDS {
            let mut rng = Rng::new(seed);
            let src = input(&rng.values(c.batch * c.src_channels * c.spatial, -1.0, 1.0));
            // The destination's other channels hold data that must survive.
            let dst0 = garbage(&mut rng, c.batch * c.dst_channels * c.spatial);
            let what = format!("copy_channels {c:?} seed {seed}");
            let got = copy_run(b, &c, &src, &dst0);
            let want = copy_run(&cpu(), &c, &src, &dst0);
            assert_within(&what, &got, &want, &Tol::EXACT.bound(&want));
            // The reference moved exactly the block.
            for n in 0..c.batch {
                for ch in 0..c.dst_channels {
                    let inside = (c.dst_first..c.dst_first + c.count).contains(&ch);
                    for p in 0..c.spatial {
                        let at = (n * c.dst_channels + ch) * c.spatial + p;
                        let expected = if inside {
                            src[(n * c.src_channels + c.src_first + ch - c.dst_first) * c.spatial
                                + p]
                        } else {
                            dst0[at]
                        };
                        assert_eq!(
                            want[at].to_bits(),
                            expected.to_bits(),
                            "{what}: reference at {at}"
                        );
                    }
                }
            }
        }
    }
}
