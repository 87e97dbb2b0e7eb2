//! Concatenation along channels (YOLOv3's route: upsampled coarse features
//! joined with the backbone's finer ones). Backward splits `dy` back.

use crate::backend::{Backend, ChannelCopy};
use crate::tensor::Tensor;

pub struct Concat<B: Backend> {
    output: Tensor<B>,
}

impl<B: Backend> Concat<B> {
    pub fn new(backend: &B) -> Self {
        Concat {
            output: Tensor::zeros(backend, &[0]),
        }
    }

    pub fn forward(&mut self, backend: &B, inputs: &[&Tensor<B>]) -> &Tensor<B> {
        let (n, _, h, w) = inputs[0].nchw();
        let total: usize = inputs.iter().map(|t| t.nchw().1).sum();
        self.output.reshape_reuse(backend, &[n, total, h, w]);
        let mut first = 0;
        for t in inputs {
            let (tn, c, th, tw) = t.nchw();
            assert_eq!(
                (tn, th, tw),
                (n, h, w),
                "concat: inputs differ in batch or size"
            );
            let copy = ChannelCopy {
                batch: n,
                spatial: h * w,
                src_channels: c,
                src_first: 0,
                dst_channels: total,
                dst_first: first,
                count: c,
            };
            backend.copy_channels(&copy, t.buf(), self.output.buf_mut());
            first += c;
        }
        &self.output
    }

    /// Splits `dy` into one gradient per input, each shaped like its input.
    pub fn backward(
        &mut self,
        backend: &B,
        inputs: &[&Tensor<B>],
        dy: &Tensor<B>,
        dxs: &mut [&mut Tensor<B>],
    ) {
        assert_eq!(inputs.len(), dxs.len(), "concat backward: one dx per input");
        let (n, total, h, w) = dy.nchw();
        let mut first = 0;
        for (x, dx) in inputs.iter().zip(dxs.iter_mut()) {
            let c = x.nchw().1;
            dx.reshape_reuse(backend, x.shape());
            let copy = ChannelCopy {
                batch: n,
                spatial: h * w,
                src_channels: total,
                src_first: first,
                dst_channels: c,
                dst_first: 0,
                count: c,
            };
            backend.copy_channels(&copy, dy.buf(), dx.buf_mut());
            first += c;
        }
    }

    pub fn output(&self) -> &Tensor<B> {
        &self.output
    }

    pub fn planned_bytes(&self, backend: &B) -> usize {
        self.output.capacity_bytes(backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_gradient, probe_loss, random_vec, GradCheck, SEEDS};
    use crate::layers::test_util::{cpu, tensor};

    #[test]
    fn concat_then_split_round_trips() {
        let b = cpu();
        let a = tensor(&[2, 3, 2, 2], 71);
        let c = tensor(&[2, 1, 2, 2], 72);
        let mut cat = Concat::new(&b);
        let y = cat.forward(&b, &[&a, &c]).to_host(&b);
        let (av, cv) = (a.to_host(&b), c.to_host(&b));
        // Image 1, channel 3 of the output is image 1's only channel of `c`.
        assert_eq!(&y[(4 + 3) * 4..(4 + 4) * 4], &cv[4..8]);
        assert_eq!(&y[..12], &av[..12]);
        let dy = Tensor::from_host(&b, &[2, 4, 2, 2], &y);
        let mut da = Tensor::zeros(&b, &[0]);
        let mut dc = Tensor::zeros(&b, &[0]);
        cat.backward(&b, &[&a, &c], &dy, &mut [&mut da, &mut dc]);
        assert_eq!(da.to_host(&b), av);
        assert_eq!(dc.to_host(&b), cv);
        assert_eq!(da.shape(), a.shape());
    }

    #[test]
    fn backward_matches_finite_differences() {
        for seed in SEEDS.map(|s| 100 * s) {
            check_backward(seed);
        }
    }

    fn check_backward(seed: u64) {
        let b = cpu();
        let a = tensor(&[2, 3, 2, 3], seed);
        let c = tensor(&[2, 2, 2, 3], seed + 1);
        let r = random_vec(seed + 2, 2 * 5 * 2 * 3);
        let mut cat = Concat::new(&b);
        cat.forward(&b, &[&a, &c]);
        let dy = Tensor::from_host(&b, &[2, 5, 2, 3], &r);
        let mut da = Tensor::zeros(&b, &[0]);
        let mut dc = Tensor::zeros(&b, &[0]);
        cat.backward(&b, &[&a, &c], &dy, &mut [&mut da, &mut dc]);
        let (av, cv) = (a.to_host(&b), c.to_host(&b));
        let loss = |a: &[f32], c: &[f32]| {
            let at = Tensor::from_host(&b, &[2, 3, 2, 3], a);
            let ct = Tensor::from_host(&b, &[2, 2, 2, 3], c);
            probe_loss(&Concat::new(&b).forward(&b, &[&at, &ct]).to_host(&b), &r)
        };
        let opts = GradCheck::default();
        check_gradient("concat da", &av, &da.to_host(&b), |v| loss(v, &cv), opts).unwrap();
        check_gradient("concat dc", &cv, &dc.to_host(&b), |v| loss(&av, v), opts).unwrap();
    }
}
