//! core's `ConvTranspose2d` layer (Paddle's `conv2d_transpose`), which runs
//! on the convolution kernels with their roles swapped (forward on
//! backward-data, the input gradient on forward, the weight gradient on
//! backward-filter) and its bias gradient on `channel_sum`: its forward
//! and backward on the backend under test against the CPU's, over
//! geometries the convolution checks do not have (kernel 2 stride 2,
//! strides wider than the kernel, depthwise with a kernel of 4).
//!
//! Inputs, weights, biases and output gradients are multiples of 1/8 in
//! [-1, 1], so every pre-activation value is a multiple of 1/64, exact on
//! both backends: a ReLU cannot see different signs on the two, and each
//! result is held to the rounding bound of its sum ([`summation_bound`])
//! as in the convolution checks.
use pulsefocus_core::backend::Activation;
use pulsefocus_core::layers::{ConvTranspose2d, ConvTranspose2dConfig};
use pulsefocus_core::{Backend, Tensor};

use super::{abs, assert_within, cpu, summation_bound, Rng, SEEDS};

fn cases() -> Vec<(&'static str, ConvTranspose2dConfig, [usize; 4])> {
    let base = ConvTranspose2dConfig::new;
    vec![
        (
            "conv5_mask: kernel 2 stride 2, bias, ReLU, several tiles",
            base(64, 32, 2, 2)
                .with_bias()
                .with_activation(Activation::Relu),
            [2, 64, 7, 7],
        ),
        (
            "kernel 3 stride 2 padding 1, bias",
            ConvTranspose2dConfig {
                pad: 1,
                ..base(8, 6, 3, 2).with_bias()
            },
            [2, 8, 5, 6],
        ),
        (
            "grouped, dilated, padded, no bias",
            ConvTranspose2dConfig {
                pad: 2,
                dilation: 2,
                groups: 2,
                ..base(4, 6, 3, 1)
            },
            [1, 4, 6, 5],
        ),
        (
            "depthwise kernel 4 stride 2 padding 1, bias",
            ConvTranspose2dConfig {
                pad: 1,
                groups: 8,
                ..base(8, 8, 4, 2).with_bias()
            },
            [2, 8, 5, 5],
        ),
        (
            "1x1 stride 2 (outputs no input reaches), bias, ReLU",
            base(5, 3, 1, 2)
                .with_bias()
                .with_activation(Activation::Relu),
            [2, 5, 4, 3],
        ),
    ]
}

/// The layer's forward and backward on `b`: `[y, dx, dw, dbias]` (dbias
/// empty without a bias).
fn layer_run<B: Backend>(
    b: &B,
    config: ConvTranspose2dConfig,
    shape: [usize; 4],
    [x, w, bias, dy]: [&[f32]; 4],
) -> [Vec<f32>; 4] {
    let mut layer = ConvTranspose2d::new(b, config);
    layer.weight.upload(b, w);
    if let Some(t) = &mut layer.bias {
        t.upload(b, bias);
    }
    let x = Tensor::from_host(b, &shape, x);
    let mut workspace = Tensor::zeros(b, &[0]);
    let y = layer.forward(b, &x, &mut workspace).to_host(b);
    let dy = Tensor::from_host(b, layer.output().shape(), dy);
    let (mut dz, mut dx) = (Tensor::zeros(b, &[0]), Tensor::zeros(b, &[0]));
    layer.backward(b, &x, &dy, &mut dz, Some(&mut dx), &mut workspace);
    let dbias = layer
        .bias_grad
        .as_ref()
        .map_or(Vec::new(), |t| t.to_host(b));
    let results = [y, dx.to_host(b), layer.weight_grad.to_host(b), dbias];
    if let Err(err) = b.check() {
        panic!("{}: {err}", b.name());
    }
    results
}

pub fn conv_transpose2d_layer_matches<B: Backend>(b: &B) {
    let reference = cpu();
    for (name, config, shape) in cases() {
        for seed in SEEDS {
            let mut rng = Rng::new(seed);
            let grid = |rng: &mut Rng, len: usize| rng.steps(len, -1.0, 1.0, 0.125);
            let x = grid(&mut rng, shape.iter().product());
            let w = grid(&mut rng, config.weight_shape().iter().product());
            let bias = grid(&mut rng, config.c_out);
            let out = |size| config.output_size(size).expect("an output");
            let y_len = shape[0] * config.c_out * out(shape[2]) * out(shape[3]);
            let dy = grid(&mut rng, y_len);
            let inputs = [&x[..], &w[..], &bias[..], &dy[..]];
            let got = layer_run(b, config, shape, inputs);
            let want = layer_run(&reference, config, shape, inputs);
            // Each result's sum of |terms|: the same layer on the absolute
            // values, without the activation (which only zeroes terms).
            let (ax, aw, ab, ady) = (abs(&x), abs(&w), abs(&bias), abs(&dy));
            let linear = ConvTranspose2dConfig {
                activation: Activation::Identity,
                ..config
            };
            let envelope = layer_run(&reference, linear, shape, [&ax, &aw, &ab, &ady]);
            let k2 = config.kernel * config.kernel;
            let terms = [
                config.c_in / config.groups * k2 + 1,
                config.c_out / config.groups * k2,
                y_len / config.c_out,
                y_len / config.c_out,
            ];
            for (i, what) in ["y", "dx", "dw", "dbias"].into_iter().enumerate() {
                let what = format!("conv_transpose2d {name} {config:?} seed {seed}: {what}");
                assert_eq!(got[i].len(), want[i].len(), "{what}: lengths");
                let bound = summation_bound(&envelope[i], terms[i]);
                assert_within(&what, &got[i], &want[i], &bound);
            }
        }
    }
}
