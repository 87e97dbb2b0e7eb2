//! Transposed 2-D convolution, as Paddle's `fluid.layers.conv2d_transpose`
//! (Mask R-CNN's `conv5_mask`): stride, padding, dilation, groups, optional
//! bias, an activation after the bias. Weights `[c_in, c_out / groups, k,
//! k]`; an input of `h` rows gives `(h - 1) * stride - 2 * pad +
//! dilation * (k - 1) + 1` rows, and likewise columns.
//!
//! The transposed convolution is the adjoint of the convolution `G` that
//! maps this layer's output shape back to its input shape with the same
//! kernel, stride, padding, dilation, groups and weight tensor (`G`'s
//! `c_out` is this layer's `c_in`, so `G`'s weight `[c_out, c_in / groups,
//! k, k]` is this one's). So each pass is one of `G`'s, and every backend
//! runs it with its convolution kernels:
//! - forward `z = G^T x`: `G`'s backward-data with `dy = x`;
//! - input gradient `dx = G dz`: `G`'s forward;
//! - weight gradient: `G`'s backward-filter with its `x` and `dy` swapped
//!   (`G`'s input is our output gradient `dz`, its output our input `x`).
//!
//! Every one of them overwrites its output (`G`'s backward-data writes 0
//! where no input reaches, as with a stride wider than the kernel), and
//! `G` always passes `Conv2dGeom::validate`: its input, this layer's
//! output, spans at least the kernel's reach, and its output size works
//! out to exactly this layer's input size.
//!
//! The bias and the activation, `y = act(z + bias)`, run as a frozen batch
//! norm of scale 1, mean 0 and variance 1 (epsilon 0), as `ConvUnit` runs
//! an affine channel; the bias gradient is `channel_sum` of `dz`.

use super::conv2d::grow;
use crate::backend::{Activation, Backend, BatchNormGeom, Conv2dGeom};
use crate::models::conv_unit::ParamRole;
use crate::tensor::Tensor;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConvTranspose2dConfig {
    pub c_in: usize,
    pub c_out: usize,
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
    pub dilation: usize,
    pub groups: usize,
    pub bias: bool,
    pub activation: Activation,
}

impl ConvTranspose2dConfig {
    /// A `kernel x kernel` transposed convolution with Paddle's defaults for
    /// the rest: no padding, dilation 1, one group, no bias, no activation.
    pub fn new(c_in: usize, c_out: usize, kernel: usize, stride: usize) -> Self {
        ConvTranspose2dConfig {
            c_in,
            c_out,
            kernel,
            stride,
            pad: 0,
            dilation: 1,
            groups: 1,
            bias: false,
            activation: Activation::Identity,
        }
    }

    pub fn with_bias(self) -> Self {
        ConvTranspose2dConfig { bias: true, ..self }
    }

    pub fn with_activation(self, activation: Activation) -> Self {
        ConvTranspose2dConfig { activation, ..self }
    }

    /// Paddle's filter layout: `[c_in, c_out / groups, k, k]`.
    pub fn weight_shape(&self) -> [usize; 4] {
        [
            self.c_in,
            self.c_out / self.groups,
            self.kernel,
            self.kernel,
        ]
    }

    /// Output size along one axis for an input of `size`, or None when the
    /// padding leaves nothing (Paddle rejects such a layer too).
    pub fn output_size(&self, size: usize) -> Option<usize> {
        let reach = self.dilation * self.kernel.checked_sub(1)? + 1;
        let out = (size.checked_sub(1)? * self.stride + reach).checked_sub(2 * self.pad)?;
        (out > 0).then_some(out)
    }

    /// The convolution `G` whose adjoint this layer is, for an NCHW input
    /// shape: `G` maps `[n, c_out, h_out, w_out]` to the input's `[n, c_in,
    /// h, w]`. An error names what does not fit.
    pub fn geom(&self, input: &[usize]) -> Result<Conv2dGeom, String> {
        if input.len() != 4 || input[1] != self.c_in {
            return Err(format!(
                "conv2d_transpose: input shape {input:?} does not match {} input channels",
                self.c_in
            ));
        }
        let output = |size: usize| {
            self.output_size(size).ok_or_else(|| {
                format!(
                    "conv2d_transpose: kernel {} stride {} dilation {} padding {} gives no \
                     output for input size {size}",
                    self.kernel, self.stride, self.dilation, self.pad
                )
            })
        };
        let g = Conv2dGeom {
            batch: input[0],
            c_in: self.c_out,
            h_in: output(input[2])?,
            w_in: output(input[3])?,
            c_out: self.c_in,
            kernel_h: self.kernel,
            kernel_w: self.kernel,
            stride_h: self.stride,
            stride_w: self.stride,
            pad_h: self.pad,
            pad_w: self.pad,
            dilation_h: self.dilation,
            dilation_w: self.dilation,
            groups: self.groups,
        };
        g.validate()
            .map_err(|e| e.replace("conv2d:", "conv2d_transpose (as its convolution):"))?;
        Ok(g)
    }

    /// Whether anything follows the transposed convolution itself.
    fn has_epilogue(&self) -> bool {
        self.bias || self.activation != Activation::Identity
    }
}

pub struct ConvTranspose2d<B: Backend> {
    pub config: ConvTranspose2dConfig,
    pub weight: Tensor<B>,
    pub weight_grad: Tensor<B>,
    pub bias: Option<Tensor<B>>,
    pub bias_grad: Option<Tensor<B>>,
    /// `[c_out]` ones and zeros: the frozen batch norm's scale and variance,
    /// and its mean (and offset without a bias).
    ones: Tensor<B>,
    zeros: Tensor<B>,
    /// The transposed convolution before bias and activation; unused (the
    /// output holds it) when neither follows.
    conv_output: Tensor<B>,
    output: Tensor<B>,
}

impl<B: Backend> ConvTranspose2d<B> {
    /// Zero-initialised parameters; the model fills them (initialiser or checkpoint).
    pub fn new(backend: &B, config: ConvTranspose2dConfig) -> Self {
        let w = config.weight_shape();
        let channels = [config.c_out];
        let mut ones = Tensor::zeros(backend, &channels);
        ones.fill(backend, 1.0);
        ConvTranspose2d {
            config,
            weight: Tensor::zeros(backend, &w),
            weight_grad: Tensor::zeros(backend, &w),
            bias: config.bias.then(|| Tensor::zeros(backend, &channels)),
            bias_grad: config.bias.then(|| Tensor::zeros(backend, &channels)),
            ones,
            zeros: Tensor::zeros(backend, &channels),
            conv_output: Tensor::zeros(backend, &[0]),
            output: Tensor::zeros(backend, &[0]),
        }
    }

    fn geom_for(&self, x: &Tensor<B>) -> Conv2dGeom {
        self.config
            .geom(x.shape())
            .unwrap_or_else(|msg| panic!("{msg}"))
    }

    /// Scratch elements forward/backward need for this input shape: size the
    /// shared workspace with the largest over all conv layers.
    pub fn workspace_len(&self, backend: &B, input_shape: &[usize]) -> Result<usize, String> {
        Ok(backend.conv2d_workspace_len(&self.config.geom(input_shape)?))
    }

    pub fn forward(&mut self, backend: &B, x: &Tensor<B>, workspace: &mut Tensor<B>) -> &Tensor<B> {
        let g = self.geom_for(x);
        let shape = [g.batch, g.c_in, g.h_in, g.w_in];
        grow(backend, workspace, backend.conv2d_workspace_len(&g));
        let epilogue = self.config.has_epilogue();
        let z = if epilogue {
            &mut self.conv_output
        } else {
            &mut self.output
        };
        z.reshape_reuse(backend, &shape);
        backend.conv2d_backward_data(
            &g,
            x.buf(),
            self.weight.buf(),
            z.buf_mut(),
            false,
            workspace.buf_mut(),
        );
        if epilogue {
            self.output.reshape_reuse(backend, &shape);
            let norm = BatchNormGeom {
                batch: g.batch,
                channels: g.c_in,
                spatial: g.h_in * g.w_in,
            };
            backend.batch_norm_forward_eval(
                &norm,
                self.config.activation,
                0.0,
                self.conv_output.buf(),
                self.ones.buf(),
                self.bias.as_ref().unwrap_or(&self.zeros).buf(),
                self.zeros.buf(),
                self.ones.buf(),
                self.output.buf_mut(),
            );
        }
        &self.output
    }

    /// Parameter gradients from `x` and `dy` (the gradient of the output);
    /// the input gradient into `dx` when given. `dz` is scratch for the
    /// gradient before the activation.
    pub fn backward(
        &mut self,
        backend: &B,
        x: &Tensor<B>,
        dy: &Tensor<B>,
        dz: &mut Tensor<B>,
        dx: Option<&mut Tensor<B>>,
        workspace: &mut Tensor<B>,
    ) {
        let g = self.geom_for(x);
        assert_eq!(
            dy.shape(),
            self.output.shape(),
            "conv2d_transpose backward: dy shape"
        );
        grow(backend, workspace, backend.conv2d_workspace_len(&g));
        let dz: &Tensor<B> = if self.config.activation == Activation::Identity {
            dy
        } else {
            dz.reshape_reuse(backend, dy.shape());
            backend.activation_backward(
                self.config.activation,
                dy.numel(),
                self.output.buf(),
                dy.buf(),
                dz.buf_mut(),
            );
            dz
        };
        if let Some(bias_grad) = &mut self.bias_grad {
            let plane = g.h_in * g.w_in;
            backend.channel_sum(g.batch, g.c_in, plane, dz.buf(), bias_grad.buf_mut());
        }
        backend.conv2d_backward_filter(
            &g,
            dz.buf(),
            x.buf(),
            self.weight_grad.buf_mut(),
            None,
            workspace.buf_mut(),
        );
        if let Some(dx) = dx {
            dx.reshape_reuse(backend, x.shape());
            backend.conv2d_forward(
                &g,
                dz.buf(),
                self.weight.buf(),
                None,
                dx.buf_mut(),
                workspace.buf_mut(),
            );
        }
    }

    pub fn output(&self) -> &Tensor<B> {
        &self.output
    }

    /// The parameter of `role` (`TransposedWeight`, `TransposedBias`).
    pub fn tensor(&self, role: ParamRole) -> &Tensor<B> {
        match (role, &self.bias) {
            (ParamRole::TransposedWeight, _) => &self.weight,
            (ParamRole::TransposedBias, Some(bias)) => bias,
            _ => panic!("{role:?}: not a role of this conv2d_transpose"),
        }
    }

    pub fn tensor_mut(&mut self, role: ParamRole) -> &mut Tensor<B> {
        match (role, &mut self.bias) {
            (ParamRole::TransposedWeight, _) => &mut self.weight,
            (ParamRole::TransposedBias, Some(bias)) => bias,
            _ => panic!("{role:?}: not a role of this conv2d_transpose"),
        }
    }

    /// The gradient of the parameter of `role`; None for roles the layer
    /// does not have.
    pub fn grad(&self, role: ParamRole) -> Option<&Tensor<B>> {
        match role {
            ParamRole::TransposedWeight => Some(&self.weight_grad),
            ParamRole::TransposedBias => self.bias_grad.as_ref(),
            _ => None,
        }
    }

    /// The parameter and its gradient, for the optimizer.
    pub fn param_and_grad_mut(&mut self, role: ParamRole) -> Option<(&mut Tensor<B>, &Tensor<B>)> {
        match role {
            ParamRole::TransposedWeight => Some((&mut self.weight, &self.weight_grad)),
            ParamRole::TransposedBias => Some((self.bias.as_mut()?, self.bias_grad.as_ref()?)),
            _ => None,
        }
    }

    /// Bytes held: parameters, gradients, constants, outputs (not the
    /// shared workspace).
    pub fn planned_bytes(&self, backend: &B) -> usize {
        let held = [
            Some(&self.weight),
            Some(&self.weight_grad),
            self.bias.as_ref(),
            self.bias_grad.as_ref(),
            Some(&self.ones),
            Some(&self.zeros),
            Some(&self.conv_output),
            Some(&self.output),
        ];
        held.into_iter()
            .flatten()
            .map(|t| t.capacity_bytes(backend))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{floats, read};
    use crate::gradcheck::{check_gradient, probe_loss, random_vec, GradCheck, SEEDS};
    use crate::layers::test_util::{cpu, tensor};
    use crate::CpuBackend;
    use proptest::prelude::*;

    /// The transposed convolution straight from its definition, in f64:
    /// every input value scattered through the kernel into the output.
    fn naive(c: &ConvTranspose2dConfig, shape: [usize; 4], x: &[f32], w: &[f32]) -> Vec<f64> {
        let [n, c_in, h, wd] = shape;
        let (ho, wo) = (c.output_size(h).unwrap(), c.output_size(wd).unwrap());
        let (cin_g, cout_g) = (c.c_in / c.groups, c.c_out / c.groups);
        let mut y = vec![0.0f64; n * c.c_out * ho * wo];
        for b in 0..n {
            for ci in 0..c_in {
                let grp = ci / cin_g;
                for (iy, ix) in (0..h).flat_map(|iy| (0..wd).map(move |ix| (iy, ix))) {
                    let xv = x[((b * c_in + ci) * h + iy) * wd + ix] as f64;
                    for co in 0..cout_g {
                        for (ki, kj) in
                            (0..c.kernel).flat_map(|i| (0..c.kernel).map(move |j| (i, j)))
                        {
                            let oy = (iy * c.stride + ki * c.dilation) as isize - c.pad as isize;
                            let ox = (ix * c.stride + kj * c.dilation) as isize - c.pad as isize;
                            if oy < 0 || ox < 0 || oy >= ho as isize || ox >= wo as isize {
                                continue;
                            }
                            let wv = w[((ci * cout_g + co) * c.kernel + ki) * c.kernel + kj] as f64;
                            let out_c = grp * cout_g + co;
                            y[((b * c.c_out + out_c) * ho + oy as usize) * wo + ox as usize] +=
                                xv * wv;
                        }
                    }
                }
            }
        }
        y
    }

    fn forward_matches_definition(c: ConvTranspose2dConfig, shape: [usize; 4], seed: u64) {
        let b = cpu();
        let mut layer = ConvTranspose2d::new(&b, c);
        let w = random_vec(seed, c.weight_shape().iter().product());
        layer.weight.upload(&b, &w);
        let x = tensor(&shape, seed + 1);
        let mut ws = Tensor::zeros(&b, &[0]);
        let y = layer.forward(&b, &x, &mut ws).to_host(&b);
        let want = naive(&c, shape, &x.to_host(&b), &w);
        assert_eq!(y.len(), want.len(), "{c:?} {shape:?}");
        for (i, (&got, &want)) in y.iter().zip(&want).enumerate() {
            assert!(
                (got as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()),
                "{c:?} {shape:?}: y[{i}] = {got}, want {want}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Any geometry: the adjoint of the convolution is the scatter of
        /// the definition, including strides wider than the kernel (outputs
        /// no input reaches stay 0).
        #[test]
        fn forward_is_the_definition(
            batch in 1usize..3,
            cin_g in 1usize..4,
            cout_g in 1usize..4,
            groups in 1usize..3,
            h in 1usize..6,
            w in 1usize..6,
            kernel in 1usize..5,
            stride in 1usize..4,
            pad in 0usize..3,
            dilation in 1usize..3,
            seed in 0u64..1000,
        ) {
            let c = ConvTranspose2dConfig {
                pad,
                dilation,
                groups,
                ..ConvTranspose2dConfig::new(cin_g * groups, cout_g * groups, kernel, stride)
            };
            prop_assume!(c.geom(&[batch, cin_g * groups, h, w]).is_ok());
            forward_matches_definition(c, [batch, cin_g * groups, h, w], seed);
        }
    }

    /// Every gradient (input, weight, bias) against finite differences of
    /// the probe loss, for a padded, grouped kernel-3 stride-2 layer and
    /// Mask R-CNN's `conv5_mask` (kernel 2 stride 2, bias, ReLU).
    #[test]
    fn layer_backward_matches_finite_differences() {
        let padded = ConvTranspose2dConfig {
            pad: 1,
            groups: 2,
            ..ConvTranspose2dConfig::new(4, 6, 3, 2).with_bias()
        };
        let conv5_mask = ConvTranspose2dConfig::new(3, 4, 2, 2)
            .with_bias()
            .with_activation(Activation::Relu);
        for seed in SEEDS.map(|s| 100 * s) {
            check_layer_backward(padded, [2, 4, 3, 4], seed);
            check_layer_backward(conv5_mask, [2, 3, 4, 3], seed);
        }
    }

    fn check_layer_backward(config: ConvTranspose2dConfig, shape: [usize; 4], seed: u64) {
        let b = cpu();
        let mut layer = ConvTranspose2d::new(&b, config);
        layer.weight.upload(
            &b,
            &random_vec(seed, config.weight_shape().iter().product()),
        );
        let bias = random_vec(seed + 1, config.c_out);
        layer.bias.as_mut().unwrap().upload(&b, &bias);
        let x = tensor(&shape, seed + 2);
        let mut ws = Tensor::zeros(&b, &[0]);
        let out_len = layer.forward(&b, &x, &mut ws).numel();
        let r = random_vec(seed + 3, out_len);
        let dy = Tensor::from_host(&b, layer.output().shape(), &r);
        let (mut dz, mut dx) = (Tensor::zeros(&b, &[0]), Tensor::zeros(&b, &[0]));
        layer.backward(&b, &x, &dy, &mut dz, Some(&mut dx), &mut ws);

        let weight = layer.weight.to_host(&b);
        let x_host = x.to_host(&b);
        let loss = |xv: &[f32], wv: &[f32], bv: &[f32]| {
            let mut l = ConvTranspose2d::new(&b, config);
            l.weight.upload(&b, wv);
            l.bias.as_mut().unwrap().upload(&b, bv);
            let xt = Tensor::from_host(&b, x.shape(), xv);
            let mut ws = Tensor::zeros(&b, &[0]);
            probe_loss(&l.forward(&b, &xt, &mut ws).to_host(&b), &r)
        };
        let opts = GradCheck::default();
        let case = format!("{config:?} seed {seed}");
        check_gradient(
            &format!("{case} dx"),
            &x_host,
            &dx.to_host(&b),
            |v| loss(v, &weight, &bias),
            opts,
        )
        .unwrap();
        check_gradient(
            &format!("{case} dw"),
            &weight,
            &layer.weight_grad.to_host(&b),
            |v| loss(&x_host, v, &bias),
            opts,
        )
        .unwrap();
        let bias_grad = layer.bias_grad.as_ref().unwrap().to_host(&b);
        if config.activation == Activation::Identity {
            check_gradient(
                &format!("{case} db"),
                &bias,
                &bias_grad,
                |v| loss(&x_host, &weight, v),
                opts,
            )
            .unwrap();
        } else {
            // A bias moves every output of its channel, so a step of the
            // finite differences crosses some ReLU kink on most channels:
            // check the sums instead, of `dy` where the output is positive.
            let y = layer.output().to_host(&b);
            let plane = y.len() / (shape[0] * config.c_out);
            for (c, &got) in bias_grad.iter().enumerate() {
                let want: f64 = (0..shape[0])
                    .flat_map(|n| (0..plane).map(move |p| (n * config.c_out + c) * plane + p))
                    .filter(|&i| y[i] > 0.0)
                    .map(|i| r[i] as f64)
                    .sum();
                assert!(
                    (got as f64 - want).abs() <= 1e-5,
                    "{case} db[{c}]: {got}, want {want}"
                );
            }
        }
        assert!(layer.planned_bytes(&b) > 0);
    }

    /// Paddle 1.8.5's `conv2d_transpose` on the cases of
    /// `core/tests/fixtures/mask_rcnn/conv2d_transpose.py` (`conv5_mask`,
    /// kernel 3 stride 2 padding 1, dilated and grouped without bias): the
    /// output and the gradients of `sum(y * r)` within 1e-5 of each
    /// tensor's largest value.
    #[test]
    fn matches_paddle() {
        let b = CpuBackend::new();
        let cases = read("mask_rcnn/conv2d_transpose.json");
        for case in cases.as_array().expect("a list of cases") {
            let name = case["name"].as_str().expect("name");
            let size = |key: &str| case[key].as_u64().expect(key) as usize;
            let activation = match case["act"].as_str() {
                Some("relu") => Activation::Relu,
                None => Activation::Identity,
                Some(other) => panic!("{name}: activation {other}"),
            };
            let config = ConvTranspose2dConfig {
                pad: size("pad"),
                dilation: size("dilation"),
                groups: size("groups"),
                bias: case["bias"].as_bool().expect("bias"),
                activation,
                ..ConvTranspose2dConfig::new(
                    size("c_in"),
                    size("c_out"),
                    size("kernel"),
                    size("stride"),
                )
            };
            let shape = [size("batch"), size("c_in"), size("h"), size("w")];
            let mut layer = ConvTranspose2d::new(&b, config);
            layer.weight.upload(&b, &floats(&case["filter"]));
            if let Some(bias) = &mut layer.bias {
                bias.upload(&b, &floats(&case["b"]));
            }
            let x = Tensor::from_host(&b, &shape, &floats(&case["x"]));
            let mut ws = Tensor::zeros(&b, &[0]);
            let y = layer.forward(&b, &x, &mut ws);
            let y_shape: Vec<usize> = floats(&case["y_shape"])
                .iter()
                .map(|&d| d as usize)
                .collect();
            assert_eq!(y.shape(), y_shape.as_slice(), "{name}");
            let y = y.to_host(&b);
            let dy = Tensor::from_host(&b, &y_shape, &floats(&case["r"]));
            let (mut dz, mut dx) = (Tensor::zeros(&b, &[0]), Tensor::zeros(&b, &[0]));
            layer.backward(&b, &x, &dy, &mut dz, Some(&mut dx), &mut ws);
            let mut compared = vec![
                ("y", y, floats(&case["y"])),
                ("x_grad", dx.to_host(&b), floats(&case["x_grad"])),
                (
                    "w_grad",
                    layer.weight_grad.to_host(&b),
                    floats(&case["filter_grad"]),
                ),
            ];
            if let Some(bias_grad) = &layer.bias_grad {
                compared.push(("b_grad", bias_grad.to_host(&b), floats(&case["b_grad"])));
            }
            for (what, got, want) in compared {
                assert_eq!(got.len(), want.len(), "{name} {what}");
                let largest = want.iter().fold(0f32, |m, v| m.max(v.abs()));
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() <= 1e-5 * largest,
                        "{name} {what}[{i}]: {g}, Paddle {w} (largest {largest})"
                    );
                }
            }
        }
    }

    #[test]
    fn output_size_and_errors() {
        let c = ConvTranspose2dConfig::new(8, 4, 2, 2);
        assert_eq!(c.output_size(14), Some(28));
        assert_eq!(c.weight_shape(), [8, 4, 2, 2]);
        let padded = ConvTranspose2dConfig {
            pad: 1,
            ..ConvTranspose2dConfig::new(8, 4, 3, 2)
        };
        assert_eq!(padded.output_size(7), Some(13));
        let g = padded.geom(&[2, 8, 7, 5]).unwrap();
        assert_eq!((g.c_in, g.c_out, g.h_in, g.w_in), (4, 8, 13, 9));
        assert_eq!((g.h_out(), g.w_out()), (7, 5));
        assert!(c
            .geom(&[1, 5, 4, 4])
            .unwrap_err()
            .contains("8 input channels"));
        let over_padded = ConvTranspose2dConfig { pad: 2, ..c };
        assert!(over_padded
            .geom(&[1, 8, 1, 4])
            .unwrap_err()
            .contains("gives no output for input size 1"));
        let bad_groups = ConvTranspose2dConfig { groups: 3, ..c };
        assert!(bad_groups
            .geom(&[1, 8, 4, 4])
            .unwrap_err()
            .contains("conv2d_transpose (as its convolution): groups 3"));
    }
}
