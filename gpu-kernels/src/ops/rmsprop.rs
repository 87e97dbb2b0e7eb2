//! The RMSProp step (`device/src/rmsprop.rs`).
use pulsefocus_core::backend::RmsPropStep;

use super::{elementwise, elementwise_len};
use crate::driver::KernelArgs;
use crate::{DeviceBuffer, Gpu, GpuError};

impl Gpu {
    /// Paddle's RMSProp step with L2 decay on the first `len` parameters.
    pub fn rmsprop(
        &self,
        step: &RmsPropStep,
        len: usize,
        param: &mut DeviceBuffer,
        grad: &DeviceBuffer,
        mean_square: &mut DeviceBuffer,
        moment: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        const NAME: &str = "rmsprop";
        let n = elementwise_len(
            NAME,
            &[
                ("param", param.len()),
                ("grad", grad.len()),
                ("mean_square", mean_square.len()),
                ("moment", moment.len()),
            ],
            len,
        )?;
        let mut args = KernelArgs::new();
        args.output(param, len)
            .input(grad, len)
            .output(mean_square, len)
            .output(moment, len)
            .u32(n)
            .f32(step.lr)
            .f32(step.rho)
            .f32(step.epsilon)
            .f32(step.momentum)
            .f32(step.weight_decay);
        self.launch(NAME, elementwise(n), &args)
    }
}
