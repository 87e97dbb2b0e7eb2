//! Batch norm with its activation fused in (the conv -> BN -> act unit of
//! every YOLOv3 backbone and head): one pass writes `act(bn(x))`, so the
//! pre-activation tensor never exists.
//!
//! Modes, as PaddleDetection uses them:
//! - training: batch statistics, running statistics updated with momentum
//!   0.9, epsilon 1e-5; gradients for scale, offset and the input;
//! - eval (`training == false`): running statistics, forward only;
//! - frozen (`freeze_norm`): running statistics in training too; the input
//!   still gets its gradient, scale and offset get none.

use crate::backend::{Activation, Backend, BatchNormGeom};
use crate::tensor::Tensor;

pub const PADDLE_MOMENTUM: f32 = 0.9;
pub const PADDLE_EPSILON: f32 = 1e-5;

pub struct BatchNorm<B: Backend> {
    pub channels: usize,
    pub act: Activation,
    pub momentum: f32,
    pub eps: f32,
    /// Batch statistics in forward (unless frozen); running statistics when false.
    pub training: bool,
    pub frozen: bool,
    pub scale: Tensor<B>,
    pub offset: Tensor<B>,
    pub mean: Tensor<B>,
    pub variance: Tensor<B>,
    pub scale_grad: Tensor<B>,
    pub offset_grad: Tensor<B>,
    saved_mean: Tensor<B>,
    saved_inv_std: Tensor<B>,
    output: Tensor<B>,
}

impl<B: Backend> BatchNorm<B> {
    /// Scale 1, offset 0, mean 0, variance 1 (Paddle's initial values), in training mode.
    pub fn new(backend: &B, channels: usize, act: Activation) -> Self {
        let mut scale = Tensor::zeros(backend, &[channels]);
        scale.fill(backend, 1.0);
        let mut variance = Tensor::zeros(backend, &[channels]);
        variance.fill(backend, 1.0);
        BatchNorm {
            channels,
            act,
            momentum: PADDLE_MOMENTUM,
            eps: PADDLE_EPSILON,
            training: true,
            frozen: false,
            scale,
            offset: Tensor::zeros(backend, &[channels]),
            mean: Tensor::zeros(backend, &[channels]),
            variance,
            scale_grad: Tensor::zeros(backend, &[channels]),
            offset_grad: Tensor::zeros(backend, &[channels]),
            saved_mean: Tensor::zeros(backend, &[channels]),
            saved_inv_std: Tensor::zeros(backend, &[channels]),
            output: Tensor::zeros(backend, &[0]),
        }
    }

    fn uses_batch_stats(&self) -> bool {
        self.training && !self.frozen
    }

    fn geom_for(&self, x: &Tensor<B>) -> BatchNormGeom {
        let (n, c, h, w) = x.nchw();
        assert_eq!(
            c, self.channels,
            "batch_norm: input has {c} channels, layer {}",
            self.channels
        );
        BatchNormGeom {
            batch: n,
            channels: c,
            spatial: h * w,
        }
    }

    pub fn forward(&mut self, backend: &B, x: &Tensor<B>) -> &Tensor<B> {
        let g = self.geom_for(x);
        self.output.reshape_reuse(backend, x.shape());
        if self.uses_batch_stats() {
            backend.batch_norm_forward_train(
                &g,
                self.act,
                self.momentum,
                self.eps,
                x.buf(),
                self.scale.buf(),
                self.offset.buf(),
                self.mean.buf_mut(),
                self.variance.buf_mut(),
                self.saved_mean.buf_mut(),
                self.saved_inv_std.buf_mut(),
                self.output.buf_mut(),
            );
        } else {
            backend.batch_norm_forward_eval(
                &g,
                self.act,
                self.eps,
                x.buf(),
                self.scale.buf(),
                self.offset.buf(),
                self.mean.buf(),
                self.variance.buf(),
                self.output.buf_mut(),
            );
        }
        &self.output
    }

    /// Whether `forward_in_place` may run: with the running statistics
    /// (frozen, or eval) nothing reads the input afterwards, as the frozen
    /// backward reads only the output; batch statistics' backward reads the
    /// input.
    pub fn runs_in_place(&self) -> bool {
        !self.uses_batch_stats()
    }

    /// The forward with running statistics on `xy` itself: `xy =
    /// act(bn(xy))`, the same values as `forward`. The layer's own output
    /// stays empty (a buffer it had keeps its memory, for a later forward
    /// with batch statistics); `backward_from_output` takes `xy`.
    pub fn forward_in_place(&mut self, backend: &B, xy: &mut Tensor<B>) {
        assert!(
            self.runs_in_place(),
            "batch_norm: in place with batch statistics, whose backward reads the input"
        );
        let g = self.geom_for(xy);
        self.output.reshape_reuse(backend, &[0]);
        backend.batch_norm_forward_eval_in_place(
            &g,
            self.act,
            self.eps,
            xy.buf_mut(),
            self.scale.buf(),
            self.offset.buf(),
            self.mean.buf(),
            self.variance.buf(),
        );
    }

    /// Gradients after a training (or frozen) forward of the same `x`.
    pub fn backward(
        &mut self,
        backend: &B,
        x: &Tensor<B>,
        dy: &Tensor<B>,
        dx: Option<&mut Tensor<B>>,
    ) {
        let g = self.geom_for(x);
        assert_eq!(dy.shape(), x.shape(), "batch_norm backward: dy shape");
        assert!(
            self.training,
            "batch_norm: backward after an eval-mode forward"
        );
        if self.frozen {
            self.frozen_backward(backend, None, dy, dx);
            return;
        }
        // The parameter gradients come out of the same passes as dx, so dx is
        // computed even when the caller does not want it (into a scratch).
        let mut scratch;
        let dx = match dx {
            Some(dx) => dx,
            None => {
                scratch = Tensor::zeros(backend, &[0]);
                &mut scratch
            }
        };
        dx.reshape_reuse(backend, x.shape());
        backend.batch_norm_backward_train(
            &g,
            self.act,
            x.buf(),
            self.output.buf(),
            dy.buf(),
            self.scale.buf(),
            self.saved_mean.buf(),
            self.saved_inv_std.buf(),
            dx.buf_mut(),
            self.scale_grad.buf_mut(),
            self.offset_grad.buf_mut(),
        );
    }

    /// `backward` of a frozen norm after `forward_in_place`: the input
    /// gradient from `y`, the tensor it overwrote.
    pub fn backward_from_output(
        &mut self,
        backend: &B,
        y: &Tensor<B>,
        dy: &Tensor<B>,
        dx: Option<&mut Tensor<B>>,
    ) {
        assert!(
            self.training && self.frozen,
            "batch_norm: backward from the output needs a frozen norm in training"
        );
        self.frozen_backward(backend, Some(y), dy, dx);
    }

    /// A frozen norm's backward: no parameter gradients, and the input's
    /// from the output (`y`, or the layer's own when None).
    fn frozen_backward(
        &mut self,
        backend: &B,
        y: Option<&Tensor<B>>,
        dy: &Tensor<B>,
        dx: Option<&mut Tensor<B>>,
    ) {
        self.scale_grad.fill(backend, 0.0);
        self.offset_grad.fill(backend, 0.0);
        // The identity's derivative never reads `y`, whose buffer the unit
        // may have lent to a later layer since (`ResNetLinks::forward`): the
        // shape comes from `dy`, which stands in for `y`.
        let y = match self.act {
            Activation::Identity => dy,
            _ => y.unwrap_or(&self.output),
        };
        let g = self.geom_for(y);
        assert_eq!(dy.shape(), y.shape(), "batch_norm backward: dy shape");
        if let Some(dx) = dx {
            dx.reshape_reuse(backend, y.shape());
            backend.batch_norm_backward_eval(
                &g,
                self.act,
                self.eps,
                y.buf(),
                dy.buf(),
                self.scale.buf(),
                self.variance.buf(),
                dx.buf_mut(),
            );
        }
    }

    pub fn output(&self) -> &Tensor<B> {
        &self.output
    }

    pub fn planned_bytes(&self, backend: &B) -> usize {
        [
            &self.scale,
            &self.offset,
            &self.mean,
            &self.variance,
            &self.scale_grad,
            &self.offset_grad,
            &self.saved_mean,
            &self.saved_inv_std,
            &self.output,
        ]
        .iter()
        .map(|t| t.capacity_bytes(backend))
        .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_gradient, probe_loss, random_vec, GradCheck, SEEDS};
    use crate::layers::test_util::{cpu, tensor};
    use crate::CpuBackend;

    fn layer(b: &CpuBackend, act: Activation) -> BatchNorm<CpuBackend> {
        let mut bn = BatchNorm::new(b, 3, act);
        bn.scale.upload(b, &[1.5, -0.7, 0.9]);
        bn.offset.upload(b, &[0.1, 0.3, -0.2]);
        bn.mean.upload(b, &[0.2, -0.1, 0.05]);
        bn.variance.upload(b, &[0.8, 1.3, 0.5]);
        bn
    }

    fn check_backward(act: Activation, frozen: bool, seed: u64) {
        let b = cpu();
        let x = tensor(&[2, 3, 4, 5], seed);
        let r = random_vec(seed + 1, x.numel());
        let mut bn = layer(&b, act);
        bn.frozen = frozen;
        bn.forward(&b, &x);
        let dy = Tensor::from_host(&b, x.shape(), &r);
        let mut dx = Tensor::zeros(&b, &[0]);
        bn.backward(&b, &x, &dy, Some(&mut dx));

        let xs = x.to_host(&b);
        let scale = bn.scale.to_host(&b);
        let offset = bn.offset.to_host(&b);
        let loss = |xv: &[f32], s: &[f32], o: &[f32]| {
            let mut fresh = layer(&b, act);
            fresh.frozen = frozen;
            fresh.scale.upload(&b, s);
            fresh.offset.upload(&b, o);
            let xt = Tensor::from_host(&b, x.shape(), xv);
            probe_loss(&fresh.forward(&b, &xt).to_host(&b), &r)
        };
        let name = format!("bn {act:?} frozen={frozen} seed {seed}");
        let opts = GradCheck {
            step: 5e-3,
            ..GradCheck::default()
        };
        check_gradient(
            &format!("{name} dx"),
            &xs,
            &dx.to_host(&b),
            |v| loss(v, &scale, &offset),
            opts,
        )
        .unwrap();
        if !frozen {
            check_gradient(
                &format!("{name} dscale"),
                &scale,
                &bn.scale_grad.to_host(&b),
                |v| loss(&xs, v, &offset),
                opts,
            )
            .unwrap();
            check_gradient(
                &format!("{name} doffset"),
                &offset,
                &bn.offset_grad.to_host(&b),
                |v| loss(&xs, &scale, v),
                opts,
            )
            .unwrap();
        } else {
            assert!(bn.scale_grad.to_host(&b).iter().all(|&v| v == 0.0));
        }
    }

    #[test]
    fn backward_matches_finite_differences() {
        for act in [
            Activation::Identity,
            Activation::LEAKY_0_1,
            Activation::Relu,
            Activation::Relu6,
        ] {
            for seed in SEEDS.map(|s| 100 * s) {
                check_backward(act, false, seed);
                check_backward(act, true, seed);
            }
        }
    }

    /// With running statistics (frozen, or eval) the in-place forward
    /// writes the out-of-place output's bits into its input, and the
    /// backward from that tensor gives the same input gradient.
    #[test]
    fn in_place_matches_out_of_place() {
        let b = cpu();
        for act in [
            Activation::Identity,
            Activation::Relu,
            Activation::LEAKY_0_1,
        ] {
            for (training, frozen) in [(true, true), (false, false)] {
                let mut bn = layer(&b, act);
                (bn.training, bn.frozen) = (training, frozen);
                assert!(bn.runs_in_place());
                let x = tensor(&[2, 3, 4, 5], 31);
                let want = bn.forward(&b, &x).to_host(&b);
                let mut xy = tensor(&[2, 3, 4, 5], 31);
                bn.forward_in_place(&b, &mut xy);
                assert_eq!(xy.to_host(&b), want, "{act:?} training={training}");
                assert_eq!(bn.output().numel(), 0);
                if training {
                    let dy = tensor(x.shape(), 32);
                    let (mut dx, mut dx_apart) = (Tensor::zeros(&b, &[0]), Tensor::zeros(&b, &[0]));
                    bn.backward_from_output(&b, &xy, &dy, Some(&mut dx));
                    bn.forward(&b, &x);
                    bn.backward(&b, &x, &dy, Some(&mut dx_apart));
                    assert_eq!(dx.to_host(&b), dx_apart.to_host(&b), "{act:?}");
                }
            }
        }
        let live = layer(&b, Activation::Relu);
        assert!(!live.runs_in_place(), "batch statistics");
    }

    #[test]
    fn training_normalises_and_updates_running_stats_like_paddle() {
        let b = cpu();
        let mut bn = BatchNorm::new(&b, 2, Activation::Identity);
        // Channel 0 holds 1..=4, channel 1 holds 10 x that, over a batch of 2.
        let x = Tensor::from_host(
            &b,
            &[2, 2, 1, 2],
            &[1.0, 2.0, 10.0, 20.0, 3.0, 4.0, 30.0, 40.0],
        );
        let y = bn.forward(&b, &x).to_host(&b);
        let inv_std0 = 1.0 / (1.25f32 + 1e-5).sqrt();
        assert!((y[0] - (1.0 - 2.5) * inv_std0).abs() < 1e-5);
        assert!((y[5] - (4.0 - 2.5) * inv_std0).abs() < 1e-5);
        // running = 0.9 * initial + 0.1 * batch, with the biased variance:
        // paddle 3.3.1 BatchNorm2D gives mean [0.25, 2.5], var [1.025, 13.4].
        let mean = bn.mean.to_host(&b);
        let var = bn.variance.to_host(&b);
        assert!((mean[0] - 0.25).abs() < 1e-6 && (mean[1] - 2.5).abs() < 1e-5);
        assert!((var[0] - (0.9 + 0.125)).abs() < 1e-5 && (var[1] - (0.9 + 12.5)).abs() < 1e-3);
        // Eval mode uses the running statistics and leaves them alone.
        bn.training = false;
        let y = bn.forward(&b, &x).to_host(&b);
        assert!((y[0] - (1.0 - 0.25) / (1.025f32 + 1e-5).sqrt()).abs() < 1e-5);
        assert_eq!(bn.mean.to_host(&b), mean);
    }
}
