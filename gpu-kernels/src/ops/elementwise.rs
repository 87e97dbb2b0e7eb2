//! Elementwise kernels (`device/src/elementwise.rs`): one grid-stride
//! launch over the first `len` elements.
use pulsefocus_core::backend::Activation;
use pulsefocus_gpu_device::elementwise as kernels;

use super::{elementwise, elementwise_len, InOut};
use crate::driver::KernelArgs;
use crate::{DeviceBuffer, Gpu, GpuError};

/// An activation as the kernels take it: one of the device crate's
/// `ACT_*` codes and the slope of a leaky ReLU.
pub fn activation_code(act: Activation) -> (u32, f32) {
    match act {
        Activation::Identity => (kernels::ACT_IDENTITY, 0.0),
        Activation::Relu => (kernels::ACT_RELU, 0.0),
        Activation::Relu6 => (kernels::ACT_RELU6, 0.0),
        Activation::LeakyRelu(slope) => (kernels::ACT_LEAKY_RELU, slope),
    }
}

impl Gpu {
    /// `x[..len] = value`.
    pub fn fill(&self, len: usize, x: &mut DeviceBuffer, value: f32) -> Result<(), GpuError> {
        let n = elementwise_len("fill", &[("x", x.len())], len)?;
        let mut args = KernelArgs::new();
        args.output(x, len).u32(n).f32(value);
        self.launch("fill", elementwise(n), &args)
    }

    /// `y = act(x)` over the first `len` elements (in place: `x = act(x)`).
    pub fn activation_forward(
        &self,
        act: Activation,
        len: usize,
        mut io: InOut<'_>,
    ) -> Result<(), GpuError> {
        const NAME: &str = "activation_forward";
        let n = elementwise_len(NAME, &io.lens(), len)?;
        let (kind, slope) = activation_code(act);
        let mut args = KernelArgs::new();
        io.input(&mut args, len);
        io.output(&mut args, len);
        args.u32(n).u32(kind).f32(slope);
        self.launch(NAME, elementwise(n), &args)
    }

    /// `dx = dy * act'(x)`, from the forward output `y`.
    pub fn activation_backward(
        &self,
        act: Activation,
        len: usize,
        y: &DeviceBuffer,
        dy: &DeviceBuffer,
        dx: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        const NAME: &str = "activation_backward";
        let n = elementwise_len(
            NAME,
            &[("y", y.len()), ("dy", dy.len()), ("dx", dx.len())],
            len,
        )?;
        let (kind, slope) = activation_code(act);
        let mut args = KernelArgs::new();
        args.input(y, len)
            .input(dy, len)
            .output(dx, len)
            .u32(n)
            .u32(kind)
            .f32(slope);
        self.launch(NAME, elementwise(n), &args)
    }

    /// `x *= alpha` over the first `len` elements.
    pub fn scale(&self, len: usize, alpha: f32, x: &mut DeviceBuffer) -> Result<(), GpuError> {
        let n = elementwise_len("scale", &[("x", x.len())], len)?;
        let mut args = KernelArgs::new();
        args.output(x, len).u32(n).f32(alpha);
        self.launch("scale", elementwise(n), &args)
    }

    pub fn sigmoid_forward(
        &self,
        len: usize,
        x: &DeviceBuffer,
        y: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        const NAME: &str = "sigmoid_forward";
        let n = elementwise_len(NAME, &[("x", x.len()), ("y", y.len())], len)?;
        let mut args = KernelArgs::new();
        args.input(x, len).output(y, len).u32(n);
        self.launch(NAME, elementwise(n), &args)
    }

    /// `dx = dy * y * (1 - y)`.
    pub fn sigmoid_backward(
        &self,
        len: usize,
        y: &DeviceBuffer,
        dy: &DeviceBuffer,
        dx: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        const NAME: &str = "sigmoid_backward";
        let n = elementwise_len(
            NAME,
            &[("y", y.len()), ("dy", dy.len()), ("dx", dx.len())],
            len,
        )?;
        let mut args = KernelArgs::new();
        args.input(y, len).input(dy, len).output(dx, len).u32(n);
        self.launch(NAME, elementwise(n), &args)
    }

    /// `out = a + b`.
    pub fn add(
        &self,
        len: usize,
        a: &DeviceBuffer,
        b: &DeviceBuffer,
        out: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        let n = elementwise_len(
            "add",
            &[("a", a.len()), ("b", b.len()), ("out", out.len())],
            len,
        )?;
        let mut args = KernelArgs::new();
        args.input(a, len).input(b, len).output(out, len).u32(n);
        self.launch("add", elementwise(n), &args)
    }

    /// `y += alpha * x`.
    pub fn axpy(
        &self,
        len: usize,
        alpha: f32,
        x: &DeviceBuffer,
        y: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        let n = elementwise_len("axpy", &[("x", x.len()), ("y", y.len())], len)?;
        let mut args = KernelArgs::new();
        args.f32(alpha).input(x, len).output(y, len).u32(n);
        self.launch("axpy", elementwise(n), &args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{down, gpu, up, values};

    #[test]
    fn activation_codes_agree_with_core() {
        for x in [-2.0f32, -0.5, 0.0, 0.5, 3.0, 7.0] {
            for act in [
                Activation::Identity,
                Activation::Relu,
                Activation::Relu6,
                Activation::LEAKY_0_1,
            ] {
                let (kind, slope) = activation_code(act);
                let y = kernels::activate(kind, slope, x);
                assert_eq!(y, act.forward(x), "{act:?} at {x}");
                assert_eq!(
                    kernels::derivative_from_output(kind, slope, y),
                    act.derivative_from_output(y),
                    "{act:?} derivative at {x}"
                );
            }
        }
    }

    #[test]
    fn elementwise_launches_touch_only_the_first_len_elements() {
        let gpu = gpu();
        let (a, b) = (values(300, 1), values(300, 2));
        let (da, db) = (up(&gpu, &a), up(&gpu, &b));
        let mut out = up(&gpu, &[7.0; 301]);
        gpu.add(300, &da, &db, &mut out).unwrap();
        let got = down(&gpu, &out);
        for i in 0..300 {
            assert_eq!(got[i], a[i] + b[i]);
        }
        assert_eq!(got[300], 7.0);
        gpu.axpy(300, 0.5, &da, &mut out).unwrap();
        gpu.scale(300, 2.0, &mut out).unwrap();
        let got = down(&gpu, &out);
        for i in 0..300 {
            assert_eq!(got[i], 2.0 * (a[i] + b[i] + 0.5 * a[i]));
        }
        assert_eq!(
            gpu.add(302, &da, &db, &mut out).unwrap_err().to_string(),
            "kernel add: a has 300 elements, needs at least 302"
        );
    }
}
