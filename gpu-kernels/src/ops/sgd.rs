//! The optimizer step (`device/src/sgd.rs`).
use pulsefocus_core::backend::SgdStep;

use super::{elementwise, elementwise_len};
use crate::driver::KernelArgs;
use crate::{DeviceBuffer, Gpu, GpuError};

impl Gpu {
    /// Paddle's momentum step with L2 decay on the first `len` parameters.
    pub fn momentum_sgd(
        &self,
        step: &SgdStep,
        len: usize,
        param: &mut DeviceBuffer,
        grad: &DeviceBuffer,
        velocity: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        const NAME: &str = "momentum_sgd";
        let n = elementwise_len(
            NAME,
            &[
                ("param", param.len()),
                ("grad", grad.len()),
                ("velocity", velocity.len()),
            ],
            len,
        )?;
        let mut args = KernelArgs::new();
        args.output(param, len)
            .input(grad, len)
            .output(velocity, len)
            .u32(n)
            .f32(step.lr)
            .f32(step.momentum)
            .f32(step.weight_decay);
        self.launch(NAME, elementwise(n), &args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{down, gpu, up, values};

    #[test]
    fn one_step_matches_paddles_formula() {
        let gpu = gpu();
        let (p, g, v) = (values(40, 1), values(40, 2), values(40, 3));
        let (mut dp, dg, mut dv) = (up(&gpu, &p), up(&gpu, &g), up(&gpu, &v));
        let step = SgdStep {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.01,
        };
        gpu.momentum_sgd(&step, 40, &mut dp, &dg, &mut dv).unwrap();
        let (got_p, got_v) = (down(&gpu, &dp), down(&gpu, &dv));
        for i in 0..40 {
            let velocity = 0.9 * v[i] + (g[i] + 0.01 * p[i]);
            assert!((got_v[i] - velocity).abs() < 1e-6);
            assert!((got_p[i] - (p[i] - 0.1 * velocity)).abs() < 1e-6);
        }
    }
}
