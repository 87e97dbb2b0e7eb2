//! conv2d forward, backward data and backward filter (+ bias gradient) over
//! the shapes the models use. Tolerance: each output is a sum of products
//! taken in another order (GEMM tiles on the GPU, the `gemm` crate's on the
//! CPU) with or without fused multiply-adds, so it is held to the rounding
//! bound of such a sum ([`summation_bound`]), computed per element from the
//! same convolution of the inputs' absolute values. Where the CPU runs
//! Winograd's F(2x2, 3x3) the bound is normwise ([`cpu_bound`]).
use pulsefocus_core::backend::Conv2dGeom;
use pulsefocus_core::Backend;

use super::{
    abs, assert_tail_kept, assert_unchanged, assert_within, buffer, cpu, garbage, input, max_abs,
    read, summation_bound, Rng, SEEDS, TAIL,
};

/// The rounding bound of `g`'s results, sums of `terms` products, against
/// the CPU's: per element ([`summation_bound`]), except where the CPU runs
/// Winograd's F(2x2, 3x3). Each of its results is a combination of sums of
/// transformed values (each input value a signed sum of up to 4 inputs,
/// each filter value a weighted sum of up to 9 taps, each output or filter
/// gradient a combination of up to 9 such sums), whose rounding errors are
/// relative to the magnitudes of the whole tile or filter, not of the one
/// result: the bound is normwise, 16 times the direct sum's at the largest
/// envelope.
fn cpu_bound(g: &Conv2dGeom, envelope: &[f32], terms: usize) -> Vec<f32> {
    if !pulsefocus_core::cpu::conv::runs_winograd(g) {
        return summation_bound(envelope, terms);
    }
    let largest = max_abs(envelope);
    vec![largest * (16 * terms + 2) as f32 * f32::EPSILON; envelope.len()]
}

#[allow(clippy::too_many_arguments)]
fn geom(
    batch: usize,
    c_in: usize,
    (h_in, w_in): (usize, usize),
    c_out: usize,
    (kernel_h, kernel_w): (usize, usize),
    (stride_h, stride_w): (usize, usize),
    (pad_h, pad_w): (usize, usize),
    (dilation_h, dilation_w): (usize, usize),
    groups: usize,
) -> Conv2dGeom {
    Conv2dGeom {
        batch,
        c_in,
        h_in,
        w_in,
        c_out,
        kernel_h,
        kernel_w,
        stride_h,
        stride_w,
        pad_h,
        pad_w,
        dilation_h,
        dilation_w,
        groups,
    }
}

/// The convolutions of the models (DarkNet, MobileNet v1/v3, the YOLO
/// heads), small, with odd sizes, and the corner cases of the kernels.
pub fn shapes() -> Vec<(&'static str, Conv2dGeom)> {
    vec![
        (
            "stem 3x3 stride 1, odd size",
            geom(2, 3, (17, 19), 8, (3, 3), (1, 1), (1, 1), (1, 1), 1),
        ),
        (
            "3x3 stride 2 (downsample)",
            geom(2, 8, (11, 10), 12, (3, 3), (2, 2), (1, 1), (1, 1), 1),
        ),
        (
            "pointwise 1x1 (GEMM)",
            geom(2, 16, (9, 9), 24, (1, 1), (1, 1), (0, 0), (1, 1), 1),
        ),
        // The ragged GEMM of the old parity test: m = 65, n = 130, k = 17.
        (
            "pointwise, ragged GEMM tiles",
            geom(1, 17, (13, 10), 65, (1, 1), (1, 1), (0, 0), (1, 1), 1),
        ),
        // The old parity test's largest GEMM: m = 256, n = 300, k = 129.
        (
            "pointwise, several GEMM tiles each way",
            geom(1, 129, (15, 20), 256, (1, 1), (1, 1), (0, 0), (1, 1), 1),
        ),
        (
            "pointwise on a 1x1 map, batch 3",
            geom(3, 5, (1, 1), 7, (1, 1), (1, 1), (0, 0), (1, 1), 1),
        ),
        (
            "1x1 stride 2",
            geom(2, 4, (7, 7), 6, (1, 1), (2, 2), (0, 0), (1, 1), 1),
        ),
        (
            "depthwise 3x3 stride 1",
            geom(2, 8, (10, 10), 8, (3, 3), (1, 1), (1, 1), (1, 1), 8),
        ),
        (
            "depthwise 3x3 stride 2, odd size",
            geom(2, 12, (11, 9), 12, (3, 3), (2, 2), (1, 1), (1, 1), 12),
        ),
        (
            "depthwise 5x5 stride 2 (MobileNetV3)",
            geom(1, 6, (13, 13), 6, (5, 5), (2, 2), (2, 2), (1, 1), 6),
        ),
        (
            "grouped, dilated, anisotropic stride and padding",
            geom(2, 6, (11, 9), 4, (3, 3), (2, 1), (2, 1), (2, 1), 2),
        ),
        (
            "groups 4, 5x5, padding 2",
            geom(1, 8, (9, 7), 12, (5, 5), (1, 1), (2, 2), (1, 1), 4),
        ),
        (
            "3x1 kernel, dilation 2",
            geom(2, 5, (8, 6), 3, (3, 1), (1, 1), (2, 0), (2, 1), 1),
        ),
        // The YOLO head's deepest level at 64-pixel inputs: a 2x2 map.
        (
            "3x3 on a 2x2 map, wide (the head's tip)",
            geom(2, 64, (2, 2), 128, (3, 3), (1, 1), (1, 1), (1, 1), 1),
        ),
        (
            "depthwise 3x3 on a 2x2 map",
            geom(2, 64, (2, 2), 64, (3, 3), (1, 1), (1, 1), (1, 1), 64),
        ),
        (
            "pointwise on a 3x3 map, wide",
            geom(2, 128, (3, 3), 64, (1, 1), (1, 1), (0, 0), (1, 1), 1),
        ),
        // 3x3 stride 1 with 32+ channels: the CPU runs Winograd's F(2x2, 3x3)
        // (odd sizes: ragged tiles; padding 0 and 2: the backward data pass
        // pads by 2 and 0).
        (
            "3x3 stride 1, 32+ channels, odd size",
            geom(2, 32, (9, 11), 40, (3, 3), (1, 1), (1, 1), (1, 1), 1),
        ),
        (
            "3x3 stride 1, 32+ channels, padding 0 and 2",
            geom(1, 33, (8, 7), 32, (3, 3), (1, 1), (0, 2), (1, 1), 1),
        ),
        (
            "kernel as large as the padded input",
            geom(1, 2, (3, 4), 3, (5, 6), (1, 1), (1, 1), (1, 1), 1),
        ),
    ]
}

/// `y = conv(x, w) + bias` on `b`; the whole `y` buffer.
fn forward_run<B: Backend>(
    b: &B,
    g: &Conv2dGeom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y0: &[f32],
) -> Vec<f32> {
    let (xb, wb) = (buffer(b, x), buffer(b, w));
    let bb = bias.map(|bias| buffer(b, bias));
    let mut yb = buffer(b, y0);
    let mut ws = buffer(b, &vec![f32::NAN; b.conv2d_workspace_len(g) + TAIL]);
    b.conv2d_forward(g, &xb, &wb, bb.as_ref(), &mut yb, &mut ws);
    assert_unchanged(b, "x", &xb, x);
    assert_unchanged(b, "w", &wb, w);
    if let (Some(bb), Some(bias)) = (&bb, bias) {
        assert_unchanged(b, "bias", bb, bias);
    }
    read(b, &yb)
}

fn backward_data_run<B: Backend>(
    b: &B,
    g: &Conv2dGeom,
    dy: &[f32],
    w: &[f32],
    dx0: &[f32],
    accumulate: bool,
) -> Vec<f32> {
    let (dyb, wb) = (buffer(b, dy), buffer(b, w));
    let mut dxb = buffer(b, dx0);
    let mut ws = buffer(b, &vec![f32::NAN; b.conv2d_workspace_len(g) + TAIL]);
    b.conv2d_backward_data(g, &dyb, &wb, &mut dxb, accumulate, &mut ws);
    assert_unchanged(b, "dy", &dyb, dy);
    assert_unchanged(b, "w", &wb, w);
    read(b, &dxb)
}

/// `(dw, dbias)`: dbias is the untouched initial buffer without bias.
fn backward_filter_run<B: Backend>(
    b: &B,
    g: &Conv2dGeom,
    x: &[f32],
    dy: &[f32],
    (dw0, dbias0): (&[f32], &[f32]),
    with_bias: bool,
) -> (Vec<f32>, Vec<f32>) {
    let (xb, dyb) = (buffer(b, x), buffer(b, dy));
    let (mut dwb, mut dbb) = (buffer(b, dw0), buffer(b, dbias0));
    let mut ws = buffer(b, &vec![f32::NAN; b.conv2d_workspace_len(g) + TAIL]);
    b.conv2d_backward_filter(
        g,
        &xb,
        &dyb,
        &mut dwb,
        with_bias.then_some(&mut dbb),
        &mut ws,
    );
    assert_unchanged(b, "x", &xb, x);
    assert_unchanged(b, "dy", &dyb, dy);
    (read(b, &dwb), read(b, &dbb))
}

/// Inputs of one case: x, w, bias, dy (with NaN tails).
fn case(g: &Conv2dGeom, seed: u64) -> [Vec<f32>; 4] {
    let mut rng = Rng::new(seed);
    [
        input(&rng.values(g.input_len(), -1.0, 1.0)),
        input(&rng.values(g.weight_len(), -1.0, 1.0)),
        input(&rng.values(g.c_out, -1.0, 1.0)),
        input(&rng.values(g.output_len(), -1.0, 1.0)),
    ]
}

pub fn conv2d_forward_matches<B: Backend>(b: &B) {
    let reference = cpu();
    for (name, g) in shapes() {
        for seed in SEEDS {
            // Bias on every other seed: both paths run on every shape.
            let with_bias = seed % 2 == 1;
            let [x, w, bias, _] = case(&g, seed);
            let y0 = garbage(&mut Rng::new(seed + 100), g.output_len());
            let bias = with_bias.then_some(bias.as_slice());
            let what = format!("conv2d_forward {name} {g:?} bias {with_bias} seed {seed}");
            let got = forward_run(b, &g, &x, &w, bias, &y0);
            let want = forward_run(&reference, &g, &x, &w, bias, &y0);
            let abs_bias = bias.map(abs);
            let envelope =
                forward_run(&reference, &g, &abs(&x), &abs(&w), abs_bias.as_deref(), &y0);
            let terms = g.c_in_per_group() * g.kernel_h * g.kernel_w + 1;
            let bound = cpu_bound(&g, &envelope[..g.output_len()], terms);
            assert_within(&what, &got, &want, &bound);
            assert_tail_kept(&what, &got, g.output_len(), &y0);
        }
    }
}

pub fn conv2d_backward_data_matches<B: Backend>(b: &B) {
    let reference = cpu();
    for (name, g) in shapes() {
        for seed in SEEDS {
            let [x, w, _, dy] = case(&g, seed);
            // Overwriting garbage, and (odd seeds) adding onto an
            // input-sized gradient already there.
            let accumulate = seed % 2 == 1;
            let mut dx0 = garbage(&mut Rng::new(seed + 200), g.input_len());
            if accumulate {
                dx0[..g.input_len()].copy_from_slice(&x[..g.input_len()]);
            }
            let what =
                format!("conv2d_backward_data {name} {g:?} seed {seed} accumulate {accumulate}");
            let got = backward_data_run(b, &g, &dy, &w, &dx0, accumulate);
            let want = backward_data_run(&reference, &g, &dy, &w, &dx0, accumulate);
            let onto = if accumulate { abs(&dx0) } else { dx0.clone() };
            let envelope =
                backward_data_run(&reference, &g, &abs(&dy), &abs(&w), &onto, accumulate);
            let terms = g.c_out_per_group() * g.kernel_h * g.kernel_w + usize::from(accumulate);
            let bound = cpu_bound(&g, &envelope[..g.input_len()], terms);
            assert_within(&what, &got, &want, &bound);
            assert_tail_kept(&what, &got, g.input_len(), &dx0);
        }
    }
}

pub fn conv2d_backward_filter_matches<B: Backend>(b: &B) {
    let reference = cpu();
    for (name, g) in shapes() {
        for seed in SEEDS {
            let with_bias = seed % 2 == 0;
            let [x, _, _, dy] = case(&g, seed);
            let mut rng = Rng::new(seed + 300);
            let initial = (
                garbage(&mut rng, g.weight_len()),
                garbage(&mut rng, g.c_out),
            );
            let init = (initial.0.as_slice(), initial.1.as_slice());
            let what = format!("conv2d_backward_filter {name} {g:?} bias {with_bias} seed {seed}");
            let (dw, dbias) = backward_filter_run(b, &g, &x, &dy, init, with_bias);
            let (want_dw, want_dbias) =
                backward_filter_run(&reference, &g, &x, &dy, init, with_bias);
            let (env_dw, env_dbias) =
                backward_filter_run(&reference, &g, &abs(&x), &abs(&dy), init, with_bias);
            let terms = g.batch * g.h_out() * g.w_out();
            let bound = cpu_bound(&g, &env_dw[..g.weight_len()], terms);
            assert_within(&format!("{what}: dw"), &dw, &want_dw, &bound);
            assert_tail_kept(&format!("{what}: dw"), &dw, g.weight_len(), init.0);
            if with_bias {
                let bound = summation_bound(&env_dbias[..g.c_out], terms);
                assert_within(&format!("{what}: dbias"), &dbias, &want_dbias, &bound);
                assert_tail_kept(&format!("{what}: dbias"), &dbias, g.c_out, init.1);
            } else {
                super::assert_same_bits(&format!("{what}: dbias not asked for"), &dbias, init.1);
            }
        }
    }
}
