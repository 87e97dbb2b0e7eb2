//! Per-element loss kernels (`device/src/loss.rs`).
use super::{elementwise, elementwise_len};
use crate::driver::KernelArgs;
use crate::{DeviceBuffer, Gpu, GpuError};

impl Gpu {
    /// Per-element sigmoid cross-entropy loss and gradient.
    pub fn sigmoid_cross_entropy(
        &self,
        logits: &DeviceBuffer,
        target: &DeviceBuffer,
        weight: &DeviceBuffer,
        loss: &mut DeviceBuffer,
        grad: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        self.elementwise_loss("sigmoid_cross_entropy", logits, target, weight, loss, grad)
    }

    /// Per-element L1 loss and gradient.
    pub fn l1_loss(
        &self,
        input: &DeviceBuffer,
        target: &DeviceBuffer,
        weight: &DeviceBuffer,
        loss: &mut DeviceBuffer,
        grad: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        self.elementwise_loss("l1_loss", input, target, weight, loss, grad)
    }

    /// A loss kernel that takes (input, target, weight, loss, grad, count),
    /// every buffer as long as `input`.
    fn elementwise_loss(
        &self,
        kernel: &'static str,
        input: &DeviceBuffer,
        target: &DeviceBuffer,
        weight: &DeviceBuffer,
        loss: &mut DeviceBuffer,
        grad: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        let len = input.len();
        let n = elementwise_len(
            kernel,
            &[
                ("target", target.len()),
                ("weight", weight.len()),
                ("loss", loss.len()),
                ("grad", grad.len()),
            ],
            len,
        )?;
        let mut args = KernelArgs::new();
        args.input(input, len)
            .input(target, len)
            .input(weight, len)
            .output(loss, len)
            .output(grad, len)
            .u32(n);
        self.launch(kernel, elementwise(n), &args)
    }
}
