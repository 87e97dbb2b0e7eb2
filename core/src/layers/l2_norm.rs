//! L2 normalisation over channels with a learnable per-channel scale:
//! VGG16-SSD's `conv4_3_norm` (PaddleDetection's `VGG._l2_norm_scale`,
//! Paddle's `l2_normalize(x, axis=1)` times a `Scale` parameter that starts
//! at the config's `normalizations` value, 20). conv4_3's activations are
//! an order of magnitude larger than the deeper features the head also
//! sees; the norm brings them to one scale the head can learn.
//!
//! The layer owns its scale, the scale's gradient, the per-position norms
//! it saves for backward, and its output.

use crate::backend::{Backend, L2NormGeom};
use crate::tensor::Tensor;

/// Paddle's `l2_normalize` default, added to the sum of squares inside the
/// square root.
pub const PADDLE_EPSILON: f32 = 1e-12;

pub struct L2Norm<B: Backend> {
    pub channels: usize,
    pub eps: f32,
    pub scale: Tensor<B>,
    pub scale_grad: Tensor<B>,
    /// `[batch, height * width]` norms of the last forward pass.
    norm: Tensor<B>,
    output: Tensor<B>,
}

impl<B: Backend> L2Norm<B> {
    /// Every channel's scale at `init_scale` (Paddle's `Constant`
    /// initializer of the parameter).
    pub fn new(backend: &B, channels: usize, init_scale: f32) -> Self {
        let mut scale = Tensor::zeros(backend, &[channels]);
        scale.fill(backend, init_scale);
        L2Norm {
            channels,
            eps: PADDLE_EPSILON,
            scale,
            scale_grad: Tensor::zeros(backend, &[channels]),
            norm: Tensor::zeros(backend, &[0]),
            output: Tensor::zeros(backend, &[0]),
        }
    }

    fn geom_for(&self, x: &Tensor<B>) -> L2NormGeom {
        let (n, c, h, w) = x.nchw();
        assert_eq!(
            c, self.channels,
            "l2_norm: input has {c} channels, layer {}",
            self.channels
        );
        L2NormGeom {
            batch: n,
            channels: c,
            spatial: h * w,
        }
    }

    pub fn forward(&mut self, backend: &B, x: &Tensor<B>) -> &Tensor<B> {
        let g = self.geom_for(x);
        self.output.reshape_reuse(backend, x.shape());
        self.norm.reshape_reuse(backend, &[g.batch, g.spatial]);
        backend.l2_norm_forward(
            &g,
            self.eps,
            x.buf(),
            self.scale.buf(),
            self.norm.buf_mut(),
            self.output.buf_mut(),
        );
        &self.output
    }

    /// The scale's gradient and the input's (into `dx`), after a forward of
    /// the same `x`.
    pub fn backward(&mut self, backend: &B, x: &Tensor<B>, dy: &Tensor<B>, dx: &mut Tensor<B>) {
        let g = self.geom_for(x);
        assert_eq!(dy.shape(), x.shape(), "l2_norm backward: dy shape");
        dx.reshape_reuse(backend, x.shape());
        backend.l2_norm_backward(
            &g,
            x.buf(),
            self.scale.buf(),
            self.norm.buf(),
            dy.buf(),
            dx.buf_mut(),
            self.scale_grad.buf_mut(),
        );
    }

    pub fn output(&self) -> &Tensor<B> {
        &self.output
    }

    pub fn planned_bytes(&self, backend: &B) -> usize {
        [&self.scale, &self.scale_grad, &self.norm, &self.output]
            .iter()
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

    fn layer(b: &CpuBackend, scale: &[f32]) -> L2Norm<CpuBackend> {
        let mut norm = L2Norm::new(b, scale.len(), 1.0);
        norm.scale.upload(b, scale);
        norm
    }

    /// Finite differences of `sum(y * r)` against the backward pass, for
    /// the input and the scale; scales around 20 as in VGG16-SSD.
    #[test]
    fn backward_matches_finite_differences() {
        for seed in SEEDS {
            let b = cpu();
            let shape = [2, 5, 3, 4];
            let x = tensor(&shape, seed);
            let scale: Vec<f32> = random_vec(seed + 1, 5)
                .iter()
                .map(|v| 20.0 + 5.0 * v)
                .collect();
            let r = random_vec(seed + 2, x.numel());
            let mut norm = layer(&b, &scale);
            norm.forward(&b, &x);
            let mut dx = Tensor::zeros(&b, &[0]);
            norm.backward(&b, &x, &Tensor::from_host(&b, &shape, &r), &mut dx);

            let xs = x.to_host(&b);
            let loss = |xv: &[f32], s: &[f32]| {
                let mut fresh = layer(&b, s);
                probe_loss(
                    &fresh
                        .forward(&b, &Tensor::from_host(&b, &shape, xv))
                        .to_host(&b),
                    &r,
                )
            };
            let opts = GradCheck {
                step: 1e-3,
                ..GradCheck::default()
            };
            check_gradient(
                &format!("l2_norm dx seed {seed}"),
                &xs,
                &dx.to_host(&b),
                |v| loss(v, &scale),
                opts,
            )
            .unwrap();
            check_gradient(
                &format!("l2_norm dscale seed {seed}"),
                &scale,
                &norm.scale_grad.to_host(&b),
                |v| loss(&xs, v),
                opts,
            )
            .unwrap();
        }
    }

    /// Paddle 1.8.5's `l2_normalize(x, axis=1)` times a scale, and its
    /// gradients (`core/tests/fixtures/ssd/l2_norm_scale.py`), including a
    /// zero vector and an epsilon-sized one, where only an epsilon inside
    /// the square root gives Paddle's values.
    #[test]
    fn equals_paddles_norm_and_gradients() {
        let b = cpu();
        let fixture = read("ssd/l2_norm_scale.json");
        let shape: Vec<usize> = floats(&fixture["shape"])
            .iter()
            .map(|&d| d as usize)
            .collect();
        assert_eq!(
            fixture["epsilon"].as_f64().map(|e| e as f32),
            Some(PADDLE_EPSILON)
        );
        let scale = floats(&fixture["scale"]);
        let mut norm = layer(&b, &scale);
        let x = Tensor::from_host(&b, &shape, &floats(&fixture["x"]));
        let y = norm.forward(&b, &x).to_host(&b);
        let dy = Tensor::from_host(&b, &shape, &floats(&fixture["probe"]));
        let mut dx = Tensor::zeros(&b, &[0]);
        norm.backward(&b, &x, &dy, &mut dx);
        let close = |what: &str, got: &[f32], want: &[f32]| {
            assert_eq!(got.len(), want.len(), "{what}");
            for (i, (g, w)) in got.iter().zip(want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
                    "{what}[{i}]: {g} vs Paddle's {w}"
                );
            }
        };
        close("y", &y, &floats(&fixture["out"]));
        close("dx", &dx.to_host(&b), &floats(&fixture["dx"]));
        close(
            "dscale",
            &norm.scale_grad.to_host(&b),
            &floats(&fixture["dscale"]),
        );
    }
}
