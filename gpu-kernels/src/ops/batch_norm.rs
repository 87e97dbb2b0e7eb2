//! Batch norm fused with an activation (`device/src/batch_norm.rs`):
//! training passes run one block per channel, evaluation passes are
//! elementwise.
use pulsefocus_core::backend::{Activation, BatchNormGeom};

use super::elementwise::activation_code;
use super::{at_least, block_per_item, elementwise, fail, index_count, InOut, PlanError};
use crate::driver::KernelArgs;
use crate::{DeviceBuffer, Gpu, GpuError};

/// A batch norm as the kernels take it: `(batch, channels, plane)` and
/// the element count, after checking the buffers hold the tensors
/// (`tensors`) and the per-channel vectors (`per_channel`).
fn plan(
    kernel: &'static str,
    g: &BatchNormGeom,
    tensors: &[(&str, usize)],
    per_channel: &[(&str, usize)],
) -> Result<([u32; 3], usize), PlanError> {
    if g.is_empty() {
        return fail(kernel, format!("empty batch norm {g:?}"));
    }
    let len = g.len();
    index_count(kernel, "x", len)?;
    let shape = [
        index_count(kernel, "batch", g.batch)?,
        index_count(kernel, "channels", g.channels)?,
        index_count(kernel, "spatial", g.spatial)?,
    ];
    at_least(kernel, tensors, len)?;
    at_least(kernel, per_channel, g.channels)?;
    Ok((shape, len))
}

impl Gpu {
    /// Training-mode batch norm + activation forward; `saved` = (mean,
    /// inv_std) for backward, `running` = (mean, var) updated in place.
    #[allow(clippy::too_many_arguments)]
    pub fn batch_norm_train_forward(
        &self,
        g: &BatchNormGeom,
        act: Activation,
        x: &DeviceBuffer,
        gamma: &DeviceBuffer,
        beta: &DeviceBuffer,
        y: &mut DeviceBuffer,
        saved: (&mut DeviceBuffer, &mut DeviceBuffer),
        running: (&mut DeviceBuffer, &mut DeviceBuffer),
        epsilon: f32,
        momentum: f32,
    ) -> Result<(), GpuError> {
        const NAME: &str = "batch_norm_train_forward";
        let (shape, len) = plan(
            NAME,
            g,
            &[("x", x.len()), ("y", y.len())],
            &[
                ("gamma", gamma.len()),
                ("beta", beta.len()),
                ("saved mean", saved.0.len()),
                ("saved inv_std", saved.1.len()),
                ("running mean", running.0.len()),
                ("running var", running.1.len()),
            ],
        )?;
        let c = g.channels;
        let (kind, slope) = activation_code(act);
        let mut args = KernelArgs::new();
        args.input(x, len)
            .input(gamma, c)
            .input(beta, c)
            .output(y, len);
        args.output(saved.0, c).output(saved.1, c);
        args.output(running.0, c).output(running.1, c);
        args.u32(shape[0]).u32(shape[1]).u32(shape[2]);
        args.f32(epsilon).f32(momentum).u32(kind).f32(slope);
        self.launch(NAME, block_per_item(NAME, shape[1])?, &args)
    }

    /// Training-mode backward through the activation (its derivative from
    /// the output `y`): `dx`, and `dgamma`/`dbeta` overwritten.
    #[allow(clippy::too_many_arguments)]
    pub fn batch_norm_train_backward(
        &self,
        g: &BatchNormGeom,
        act: Activation,
        x: &DeviceBuffer,
        y: &DeviceBuffer,
        dy: &DeviceBuffer,
        gamma: &DeviceBuffer,
        saved: (&DeviceBuffer, &DeviceBuffer),
        dx: &mut DeviceBuffer,
        dgamma: &mut DeviceBuffer,
        dbeta: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        const NAME: &str = "batch_norm_train_backward";
        let (shape, len) = plan(
            NAME,
            g,
            &[
                ("x", x.len()),
                ("y", y.len()),
                ("dy", dy.len()),
                ("dx", dx.len()),
            ],
            &[
                ("gamma", gamma.len()),
                ("saved mean", saved.0.len()),
                ("saved inv_std", saved.1.len()),
                ("dgamma", dgamma.len()),
                ("dbeta", dbeta.len()),
            ],
        )?;
        let c = g.channels;
        let (kind, slope) = activation_code(act);
        let mut args = KernelArgs::new();
        args.input(x, len)
            .input(y, len)
            .input(dy, len)
            .input(gamma, c);
        args.input(saved.0, c).input(saved.1, c);
        args.output(dx, len).output(dgamma, c).output(dbeta, c);
        args.u32(shape[0])
            .u32(shape[1])
            .u32(shape[2])
            .u32(kind)
            .f32(slope);
        self.launch(NAME, block_per_item(NAME, shape[1])?, &args)
    }

    /// Evaluation (running statistics) forward with the activation, from
    /// `x` into `y` or in place.
    #[allow(clippy::too_many_arguments)]
    pub fn batch_norm_eval_forward(
        &self,
        g: &BatchNormGeom,
        act: Activation,
        mut io: InOut<'_>,
        gamma: &DeviceBuffer,
        beta: &DeviceBuffer,
        running: (&DeviceBuffer, &DeviceBuffer),
        epsilon: f32,
    ) -> Result<(), GpuError> {
        const NAME: &str = "batch_norm_eval_forward";
        let (shape, len) = plan(
            NAME,
            g,
            &io.lens(),
            &[
                ("gamma", gamma.len()),
                ("beta", beta.len()),
                ("running mean", running.0.len()),
                ("running var", running.1.len()),
            ],
        )?;
        let c = g.channels;
        let (kind, slope) = activation_code(act);
        let mut args = KernelArgs::new();
        io.input(&mut args, len);
        args.input(gamma, c).input(beta, c);
        args.input(running.0, c).input(running.1, c);
        io.output(&mut args, len);
        args.u32(shape[0]).u32(shape[1]).u32(shape[2]);
        args.f32(epsilon).u32(kind).f32(slope);
        self.launch(NAME, elementwise(len as u32), &args)
    }

    /// Evaluation (frozen) backward to `x` only.
    #[allow(clippy::too_many_arguments)]
    pub fn batch_norm_eval_backward(
        &self,
        g: &BatchNormGeom,
        act: Activation,
        y: &DeviceBuffer,
        dy: &DeviceBuffer,
        gamma: &DeviceBuffer,
        running_var: &DeviceBuffer,
        dx: &mut DeviceBuffer,
        epsilon: f32,
    ) -> Result<(), GpuError> {
        const NAME: &str = "batch_norm_eval_backward";
        let (shape, len) = plan(
            NAME,
            g,
            &[("y", y.len()), ("dy", dy.len()), ("dx", dx.len())],
            &[("gamma", gamma.len()), ("running var", running_var.len())],
        )?;
        let c = g.channels;
        let (kind, slope) = activation_code(act);
        let mut args = KernelArgs::new();
        args.input(y, len)
            .input(dy, len)
            .input(gamma, c)
            .input(running_var, c);
        args.output(dx, len);
        args.u32(shape[0]).u32(shape[1]).u32(shape[2]);
        args.f32(epsilon).u32(kind).f32(slope);
        self.launch(NAME, elementwise(len as u32), &args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::gpu;

    #[test]
    fn refuses_empty_and_short_buffers_by_name() {
        let gpu = gpu();
        let g = BatchNormGeom {
            batch: 2,
            channels: 3,
            spatial: 4,
        };
        let (x, short) = (gpu.zeros(24).unwrap(), gpu.zeros(2).unwrap());
        let mut y = gpu.zeros(24).unwrap();
        let err = gpu
            .batch_norm_eval_forward(
                &g,
                Activation::Relu,
                InOut::Apart { x: &x, y: &mut y },
                &short,
                &x,
                (&x, &x),
                1e-5,
            )
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel batch_norm_eval_forward: gamma has 2 elements, needs at least 3"
        );
        let empty = BatchNormGeom { batch: 0, ..g };
        assert!(gpu
            .batch_norm_eval_forward(
                &empty,
                Activation::Relu,
                InOut::Apart { x: &x, y: &mut y },
                &x,
                &x,
                (&x, &x),
                1e-5
            )
            .unwrap_err()
            .to_string()
            .contains("empty batch norm"));
        let mut xy = gpu.zeros(23).unwrap();
        let err = gpu
            .batch_norm_eval_forward(
                &g,
                Activation::Relu,
                InOut::InPlace(&mut xy),
                &x,
                &x,
                (&x, &x),
                1e-5,
            )
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel batch_norm_eval_forward: x (in place) has 23 elements, needs at least 24"
        );
    }
}
