//! 2-D convolution: stride, padding, dilation, groups (depthwise included),
//! optional bias. Weights `[c_out, c_in / groups, k, k]` as in Paddle.

use crate::backend::{Backend, Conv2dGeom};
use crate::tensor::Tensor;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dConfig {
    pub c_in: usize,
    pub c_out: usize,
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
    pub dilation: usize,
    pub groups: usize,
    pub bias: bool,
}

impl Conv2dConfig {
    /// A `kernel x kernel` convolution with "same" padding (`kernel / 2`), as
    /// every convolution in YOLOv3, DarkNet53 and MobileNetV1 uses.
    pub fn new(c_in: usize, c_out: usize, kernel: usize, stride: usize) -> Self {
        Conv2dConfig {
            c_in,
            c_out,
            kernel,
            stride,
            pad: kernel / 2,
            dilation: 1,
            groups: 1,
            bias: false,
        }
    }

    pub fn groups(self, groups: usize) -> Self {
        Conv2dConfig { groups, ..self }
    }

    pub fn with_bias(self) -> Self {
        Conv2dConfig { bias: true, ..self }
    }

    pub fn weight_shape(&self) -> [usize; 4] {
        [
            self.c_out,
            self.c_in / self.groups,
            self.kernel,
            self.kernel,
        ]
    }

    /// The geometry for an NCHW input shape; an error names what does not fit.
    pub fn geom(&self, input: &[usize]) -> Result<Conv2dGeom, String> {
        if input.len() != 4 || input[1] != self.c_in {
            return Err(format!(
                "conv2d: input shape {input:?} does not match {} input channels",
                self.c_in
            ));
        }
        let g = Conv2dGeom {
            batch: input[0],
            c_in: self.c_in,
            h_in: input[2],
            w_in: input[3],
            c_out: self.c_out,
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
        g.validate()?;
        Ok(g)
    }
}

pub struct Conv2d<B: Backend> {
    pub config: Conv2dConfig,
    pub weight: Tensor<B>,
    pub weight_grad: Tensor<B>,
    pub bias: Option<Tensor<B>>,
    pub bias_grad: Option<Tensor<B>>,
    output: Tensor<B>,
}

impl<B: Backend> Conv2d<B> {
    /// Zero-initialised parameters; the model fills them (initialiser or checkpoint).
    pub fn new(backend: &B, config: Conv2dConfig) -> Self {
        let w = config.weight_shape();
        Conv2d {
            config,
            weight: Tensor::zeros(backend, &w),
            weight_grad: Tensor::zeros(backend, &w),
            bias: config.bias.then(|| Tensor::zeros(backend, &[config.c_out])),
            bias_grad: config.bias.then(|| Tensor::zeros(backend, &[config.c_out])),
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
        self.output
            .reshape_reuse(backend, &[g.batch, g.c_out, g.h_out(), g.w_out()]);
        grow(backend, workspace, backend.conv2d_workspace_len(&g));
        backend.conv2d_forward(
            &g,
            x.buf(),
            self.weight.buf(),
            self.bias.as_ref().map(|b| b.buf()),
            self.output.buf_mut(),
            workspace.buf_mut(),
        );
        &self.output
    }

    /// Parameter gradients from `x` and `dy`; the input gradient into `dx`
    /// when given.
    pub fn backward(
        &mut self,
        backend: &B,
        x: &Tensor<B>,
        dy: &Tensor<B>,
        dx: Option<&mut Tensor<B>>,
        workspace: &mut Tensor<B>,
    ) {
        self.backward_filter(backend, x, dy, workspace);
        if let Some(dx) = dx {
            dx.reshape_reuse(backend, x.shape());
            self.backward_data(backend, dy, dx, false, workspace);
        }
    }

    /// The parameter gradients alone, from `x` and `dy`.
    pub fn backward_filter(
        &mut self,
        backend: &B,
        x: &Tensor<B>,
        dy: &Tensor<B>,
        workspace: &mut Tensor<B>,
    ) {
        let g = self.geom_for(x);
        // Checked against `x`'s geometry, not the saved output: the pass
        // does not read the output, which a unit shared over several inputs
        // may have overwritten since (`ConvUnit::swap_output`).
        assert_eq!(
            dy.shape(),
            [g.batch, g.c_out, g.h_out(), g.w_out()],
            "conv2d backward: dy shape"
        );
        grow(backend, workspace, backend.conv2d_workspace_len(&g));
        backend.conv2d_backward_filter(
            &g,
            x.buf(),
            dy.buf(),
            self.weight_grad.buf_mut(),
            self.bias_grad.as_mut().map(|b| b.buf_mut()),
            workspace.buf_mut(),
        );
    }

    /// The input gradient alone, into `dx` (shaped as the input), or added
    /// onto it with `accumulate`: it needs no input, so `dx` may be the
    /// input's own buffer once `backward_filter` has read it.
    pub fn backward_data(
        &self,
        backend: &B,
        dy: &Tensor<B>,
        dx: &mut Tensor<B>,
        accumulate: bool,
        workspace: &mut Tensor<B>,
    ) {
        let g = self.geom_for(dx);
        assert_eq!(
            dy.shape(),
            [g.batch, g.c_out, g.h_out(), g.w_out()],
            "conv2d backward: dy shape"
        );
        grow(backend, workspace, backend.conv2d_workspace_len(&g));
        backend.conv2d_backward_data(
            &g,
            dy.buf(),
            self.weight.buf(),
            dx.buf_mut(),
            accumulate,
            workspace.buf_mut(),
        );
    }

    pub fn output(&self) -> &Tensor<B> {
        &self.output
    }

    /// The output, for a norm or activation that runs in place on it
    /// (`ConvUnit::forward`): `backward` never reads it.
    pub fn output_mut(&mut self) -> &mut Tensor<B> {
        &mut self.output
    }

    /// Exchanges the saved output with `saved` (see `ConvUnit::swap_output`).
    pub fn swap_output(&mut self, saved: &mut Tensor<B>) {
        std::mem::swap(&mut self.output, saved);
    }

    /// Bytes held: parameters, gradients, output (not the shared workspace).
    pub fn planned_bytes(&self, backend: &B) -> usize {
        let params = [
            Some(&self.weight),
            Some(&self.weight_grad),
            self.bias.as_ref(),
            self.bias_grad.as_ref(),
        ];
        params
            .into_iter()
            .flatten()
            .map(|t| t.capacity_bytes(backend))
            .sum::<usize>()
            + self.output.capacity_bytes(backend)
    }
}

/// Makes `t` hold at least `len` elements.
pub(crate) fn grow<B: Backend>(backend: &B, t: &mut Tensor<B>, len: usize) {
    if t.capacity_bytes(backend) < len * std::mem::size_of::<f32>() {
        t.reshape_reuse(backend, &[len]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_gradient, probe_loss, random_vec, GradCheck, SEEDS};
    use crate::layers::test_util::{cpu, tensor};
    use crate::CpuBackend;
    use proptest::prelude::*;

    /// Direct convolution in f64, straight from the definition.
    fn naive_conv(g: &Conv2dGeom, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f64> {
        let (ho, wo) = (g.h_out(), g.w_out());
        let (cin_g, cout_g) = (g.c_in_per_group(), g.c_out_per_group());
        let mut y = vec![0.0f64; g.output_len()];
        for n in 0..g.batch {
            for co in 0..g.c_out {
                let grp = co / cout_g;
                for oy in 0..ho {
                    for ox in 0..wo {
                        let mut acc = bias.map_or(0.0, |b| b[co] as f64);
                        for ci in 0..cin_g {
                            let c = grp * cin_g + ci;
                            for ki in 0..g.kernel_h {
                                for kj in 0..g.kernel_w {
                                    let iy = (oy * g.stride_h + ki * g.dilation_h) as isize
                                        - g.pad_h as isize;
                                    let ix = (ox * g.stride_w + kj * g.dilation_w) as isize
                                        - g.pad_w as isize;
                                    if iy < 0
                                        || ix < 0
                                        || iy >= g.h_in as isize
                                        || ix >= g.w_in as isize
                                    {
                                        continue;
                                    }
                                    let xv = x[((n * g.c_in + c) * g.h_in + iy as usize) * g.w_in
                                        + ix as usize];
                                    let wv =
                                        w[((co * cin_g + ci) * g.kernel_h + ki) * g.kernel_w + kj];
                                    acc += xv as f64 * wv as f64;
                                }
                            }
                        }
                        y[((n * g.c_out + co) * ho + oy) * wo + ox] = acc;
                    }
                }
            }
        }
        y
    }

    fn run_geom(g: &Conv2dGeom, with_bias: bool, seed: u64) -> Result<(), String> {
        let b = CpuBackend::new();
        let x = random_vec(seed, g.input_len());
        let w = random_vec(seed + 1, g.weight_len());
        let bias = with_bias.then(|| random_vec(seed + 2, g.c_out));
        let mut y = vec![0.0; g.output_len()];
        let mut ws = vec![0.0; b.conv2d_workspace_len(g)];
        b.conv2d_forward(g, &x, &w, bias.as_ref(), &mut y, &mut ws);
        let want = naive_conv(g, &x, &w, bias.as_deref());
        for (i, (got, want)) in y.iter().zip(&want).enumerate() {
            if (*got as f64 - want).abs() > 1e-4 * (1.0 + want.abs()) {
                return Err(format!("{g:?}: y[{i}] = {got}, want {want}"));
            }
        }
        // Backward via the adjoint identity <conv(x), r> = <x, conv^T(r)>
        // = <w, dW(x, r)>, each checked against the f64 reference.
        let r = random_vec(seed + 3, g.output_len());
        let mut dx = vec![0.0; g.input_len()];
        let mut dw = vec![0.0; g.weight_len()];
        let mut db = vec![0.0; g.c_out];
        b.conv2d_backward_data(g, &r, &w, &mut dx, false, &mut ws);
        b.conv2d_backward_filter(g, &x, &r, &mut dw, with_bias.then_some(&mut db), &mut ws);
        // Added onto an input-sized gradient already there: x + dx.
        let mut sum = x.clone();
        b.conv2d_backward_data(g, &r, &w, &mut sum, true, &mut ws);
        for (i, ((s, v), d)) in sum.iter().zip(&x).zip(&dx).enumerate() {
            if (s - (v + d)).abs() > 1e-5 * (1.0 + v.abs() + d.abs()) {
                return Err(format!("{g:?}: accumulated dx[{i}] = {s}, want {v} + {d}"));
            }
        }
        // The probe loss is linear, so each gradient entry equals the loss of
        // a unit input (f64 reference): check a spread of entries exactly.
        let check =
            |name: &str, got: &[f32], unit_loss: &dyn Fn(usize) -> f64| -> Result<(), String> {
                let stride = got.len().div_ceil(40).max(1);
                for i in (0..got.len()).step_by(stride) {
                    let want = unit_loss(i);
                    if (got[i] as f64 - want).abs() > 1e-4 * (1.0 + want.abs()) {
                        return Err(format!("{g:?}: {name}[{i}] = {}, want {want}", got[i]));
                    }
                }
                Ok(())
            };
        let dot = |y: &[f64]| y.iter().zip(&r).map(|(a, &b)| a * b as f64).sum::<f64>();
        check("dx", &dx, &|i| {
            let mut unit = vec![0.0; x.len()];
            unit[i] = 1.0;
            dot(&naive_conv(g, &unit, &w, None))
        })?;
        check("dw", &dw, &|i| {
            let mut unit = vec![0.0; w.len()];
            unit[i] = 1.0;
            dot(&naive_conv(g, &x, &unit, None))
        })?;
        if with_bias {
            check("dbias", &db, &|i| {
                let mut unit = vec![0.0; g.c_out];
                unit[i] = 1.0;
                dot(&naive_conv(g, &vec![0.0; x.len()], &w, Some(&unit)))
            })?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn geom(
        batch: usize,
        c_in: usize,
        h: usize,
        w: usize,
        c_out: usize,
        k: usize,
        s: usize,
        p: usize,
        d: usize,
        groups: usize,
    ) -> Conv2dGeom {
        Conv2dGeom {
            batch,
            c_in,
            h_in: h,
            w_in: w,
            c_out,
            kernel_h: k,
            kernel_w: k,
            stride_h: s,
            stride_w: s,
            pad_h: p,
            pad_w: p,
            dilation_h: d,
            dilation_w: d,
            groups,
        }
    }

    #[test]
    fn each_path_matches_direct_convolution() {
        // im2col 3x3 stride 2, pointwise 1x1, depthwise s1 and s2, grouped, dilated.
        run_geom(&geom(2, 3, 9, 7, 4, 3, 2, 1, 1, 1), true, 1).unwrap();
        run_geom(&geom(3, 5, 4, 6, 7, 1, 1, 0, 1, 1), true, 2).unwrap();
        run_geom(&geom(2, 6, 7, 5, 6, 3, 1, 1, 1, 6), false, 3).unwrap();
        run_geom(&geom(2, 6, 8, 8, 6, 3, 2, 1, 1, 6), true, 4).unwrap();
        run_geom(&geom(1, 4, 6, 6, 6, 3, 1, 1, 1, 2), false, 5).unwrap();
        run_geom(&geom(2, 2, 9, 9, 3, 3, 1, 2, 2, 1), false, 6).unwrap();
        // Maps of more than 512 outputs take one GEMM per image (1x1 reading
        // the input in place); smaller ones batch images per GEMM.
        run_geom(&geom(3, 4, 24, 23, 5, 1, 1, 0, 1, 1), true, 7).unwrap();
        run_geom(&geom(3, 3, 24, 24, 4, 3, 1, 1, 1, 1), false, 8).unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn random_shapes_match_direct_convolution(
            batch in 1usize..4,
            cin_g in 1usize..4,
            cout_g in 1usize..4,
            groups in 1usize..4,
            h in 1usize..9,
            w in 1usize..9,
            k in prop::sample::select(vec![1usize, 2, 3, 5]),
            s in 1usize..3,
            p in 0usize..3,
            d in 1usize..3,
            bias in any::<bool>(),
            seed in 0u64..1000,
        ) {
            let g = geom(batch, cin_g * groups, h, w, cout_g * groups, k, s, p, d, groups);
            prop_assume!(g.validate().is_ok());
            prop_assert_eq!(run_geom(&g, bias, seed), Ok(()));
        }

        #[test]
        fn random_depthwise_shapes_match_direct_convolution(
            batch in 1usize..3,
            c in 2usize..6,
            h in 1usize..10,
            w in 1usize..10,
            s in 1usize..3,
            seed in 0u64..1000,
        ) {
            let g = geom(batch, c, h, w, c, 3, s, 1, 1, c);
            prop_assert_eq!(run_geom(&g, false, seed), Ok(()));
        }
    }

    #[test]
    fn layer_backward_matches_finite_differences() {
        for seed in SEEDS.map(|s| 100 * s) {
            check_layer_backward(seed);
        }
    }

    fn check_layer_backward(seed: u64) {
        let b = cpu();
        let mut conv = Conv2d::new(&b, Conv2dConfig::new(3, 4, 3, 2).with_bias());
        conv.weight.upload(&b, &random_vec(seed, 4 * 3 * 9));
        conv.bias
            .as_mut()
            .unwrap()
            .upload(&b, &random_vec(seed + 1, 4));
        let x = tensor(&[2, 3, 7, 6], seed + 2);
        let mut ws = Tensor::zeros(&b, &[0]);
        let out_len = conv.forward(&b, &x, &mut ws).numel();
        let r = random_vec(seed + 3, out_len);
        let dy = Tensor::from_host(&b, conv.output().shape(), &r);
        let mut dx = Tensor::zeros(&b, &[0]);
        conv.backward(&b, &x, &dy, Some(&mut dx), &mut ws);

        let config = conv.config;
        let weight = conv.weight.to_host(&b);
        let bias = conv.bias.as_ref().unwrap().to_host(&b);
        let x_host = x.to_host(&b);
        let loss = |xv: &[f32], wv: &[f32], bv: &[f32]| {
            let mut c = Conv2d::new(&b, config);
            c.weight.upload(&b, wv);
            c.bias.as_mut().unwrap().upload(&b, bv);
            let xt = Tensor::from_host(&b, x.shape(), xv);
            let mut ws = Tensor::zeros(&b, &[0]);
            probe_loss(&c.forward(&b, &xt, &mut ws).to_host(&b), &r)
        };
        let opts = GradCheck::default();
        check_gradient(
            "conv dx",
            &x_host,
            &dx.to_host(&b),
            |v| loss(v, &weight, &bias),
            opts,
        )
        .unwrap();
        check_gradient(
            "conv dw",
            &weight,
            &conv.weight_grad.to_host(&b),
            |v| loss(&x_host, v, &bias),
            opts,
        )
        .unwrap();
        check_gradient(
            "conv db",
            &bias,
            &conv.bias_grad.as_ref().unwrap().to_host(&b),
            |v| loss(&x_host, &weight, v),
            opts,
        )
        .unwrap();
        assert!(conv.planned_bytes(&b) > 0);
    }

    #[test]
    fn mismatched_input_is_a_clear_error() {
        let config = Conv2dConfig::new(3, 4, 3, 1);
        assert!(config
            .geom(&[1, 5, 8, 8])
            .unwrap_err()
            .contains("3 input channels"));
        assert!(Conv2dConfig::new(4, 6, 3, 1)
            .groups(4)
            .geom(&[1, 4, 8, 8])
            .is_err());
    }
}
