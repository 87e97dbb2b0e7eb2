//! Convolutions (`device/src/conv.rs`, and `gemm` for pointwise ones): the
//! three passes of core's `Conv2dGeom`, each picking its kernel by the
//! geometry's kind.
use pulsefocus_core::backend::Conv2dGeom;
use pulsefocus_gpu_device::conv::ConvGeometry;
use pulsefocus_gpu_device::reduce::REDUCE_THREADS;

use super::gemm::Strides;
use super::{elementwise, fail, index_count, need_len, tiled, LaunchShape, PlanError};
use crate::driver::KernelArgs;
use crate::{DeviceBuffer, Gpu, GpuError};

/// Which convolution kernels a geometry uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvKind {
    /// Implicit GEMM on the tile engine (any groups).
    Tiled,
    /// 1x1, stride 1, no padding, one group (dilation is moot): per image exactly the GEMM
    /// `y_n = W x_n`, so forward (without bias) and backward-data run the
    /// batched `gemm` kernel (no im2col index arithmetic); backward-filter
    /// stays implicit.
    Pointwise,
    /// groups == c_in == c_out (MobileNet's 3x3 depthwise).
    Depthwise,
}

/// A convolution ready to launch: the kernels' geometry, its kind and the
/// element counts of its tensors.
#[derive(Clone, Copy, Debug)]
pub struct ConvPlan {
    pub geo: ConvGeometry,
    pub kind: ConvKind,
    pub x_len: usize,
    pub weight_len: usize,
    pub y_len: usize,
}

/// Validates a core convolution and converts it to the kernels' `u32`
/// geometry (the one place this conversion happens), picking its kernels.
pub fn plan(kernel: &'static str, g: &Conv2dGeom) -> Result<ConvPlan, PlanError> {
    g.validate().or_else(|message| fail(kernel, message))?;
    let small = |what: &str, value: usize| index_count(kernel, what, value);
    let geo = ConvGeometry {
        batch: small("batch", g.batch)?,
        c_in: small("c_in", g.c_in)?,
        h: small("h_in", g.h_in)?,
        w: small("w_in", g.w_in)?,
        c_out: small("c_out", g.c_out)?,
        k_h: small("kernel_h", g.kernel_h)?,
        k_w: small("kernel_w", g.kernel_w)?,
        stride_h: small("stride_h", g.stride_h)?,
        stride_w: small("stride_w", g.stride_w)?,
        pad_h: small("pad_h", g.pad_h)?,
        pad_w: small("pad_w", g.pad_w)?,
        dilation_h: small("dilation_h", g.dilation_h)?,
        dilation_w: small("dilation_w", g.dilation_w)?,
        groups: small("groups", g.groups)?,
    };
    // The kernels index every tensor (and the padded input) with u32.
    let (x_len, y_len, weight_len) = (g.input_len(), g.output_len(), g.weight_len());
    for (arg, len) in [
        ("x", x_len),
        ("y", y_len),
        ("weight", weight_len),
        ("padded h", g.h_in + 2 * g.pad_h),
        ("padded w", g.w_in + 2 * g.pad_w),
        (
            "im2col columns",
            g.batch * g.h_in.max(g.h_out()) * g.w_in.max(g.w_out()),
        ),
    ] {
        index_count(kernel, arg, len)?;
    }
    let kind = if g.is_depthwise() {
        ConvKind::Depthwise
    } else if g.is_pointwise() && g.groups == 1 {
        ConvKind::Pointwise
    } else {
        ConvKind::Tiled
    };
    Ok(ConvPlan {
        geo,
        kind,
        x_len,
        weight_len,
        y_len,
    })
}

/// Launch shapes of the three convolution passes.
pub fn forward_shape(kind: ConvKind, g: &ConvGeometry) -> LaunchShape {
    match kind {
        ConvKind::Pointwise => tiled(g.c_out, g.h * g.w, g.batch),
        ConvKind::Tiled => tiled(g.cout_g(), g.batch * g.out_h() * g.out_w(), g.groups),
        ConvKind::Depthwise => elementwise(g.batch * g.c_out * g.out_h() * g.out_w()),
    }
}

pub fn backward_data_shape(kind: ConvKind, g: &ConvGeometry) -> LaunchShape {
    match kind {
        ConvKind::Pointwise => tiled(g.c_in, g.h * g.w, g.batch),
        ConvKind::Tiled => tiled(g.cin_g(), g.batch * g.h * g.w, g.groups),
        ConvKind::Depthwise => elementwise(g.batch * g.c_in * g.h * g.w),
    }
}

pub fn backward_filter_shape(kind: ConvKind, g: &ConvGeometry) -> LaunchShape {
    match kind {
        ConvKind::Tiled | ConvKind::Pointwise => tiled(g.cout_g(), g.filter_len(), g.groups),
        ConvKind::Depthwise => LaunchShape {
            grid: (g.c_in * g.k_h * g.k_w, 1, 1),
            block: (REDUCE_THREADS, 1, 1),
        },
    }
}

/// GEMM operands of a pointwise forward pass: A = weight `[c_out, c_in]`
/// shared by all images, B = image `n` of x as `[c_in, h*w]`; C = image `n` of y.
pub fn pointwise_forward_operands(g: &ConvGeometry) -> (Strides, Strides) {
    let plane = g.h * g.w;
    (
        Strides::row_major(g.c_in, 0),
        Strides::row_major(plane, g.c_in * plane),
    )
}

/// GEMM operands of a pointwise backward-data pass: A = weight transposed
/// (`[c_in, c_out]`), B = image `n` of dy as `[c_out, h*w]`; C = image `n` of dx.
pub fn pointwise_backward_data_operands(g: &ConvGeometry) -> (Strides, Strides) {
    let plane = g.h * g.w;
    (
        Strides::transposed(g.c_in, 0),
        Strides::row_major(plane, g.c_out * plane),
    )
}

/// The geometry after the buffers, in the order the convolution kernels
/// take it; the depthwise kernels take one channel count and no groups.
fn push_geometry(args: &mut KernelArgs, kind: ConvKind, g: &ConvGeometry) {
    args.u32(g.batch).u32(g.c_in).u32(g.h).u32(g.w);
    if kind != ConvKind::Depthwise {
        args.u32(g.c_out);
    }
    args.u32(g.k_h).u32(g.k_w);
    args.u32(g.stride_h)
        .u32(g.stride_w)
        .u32(g.pad_h)
        .u32(g.pad_w);
    args.u32(g.dilation_h).u32(g.dilation_w);
    if kind != ConvKind::Depthwise {
        args.u32(g.groups);
    }
}

impl Gpu {
    /// The convolution's plan after checking its `[input, weight, output]`
    /// buffers (or their gradients), named as the caller calls them.
    fn conv_plan(
        kernel: &'static str,
        g: &Conv2dGeom,
        [input, weight, output]: [(&str, usize); 3],
    ) -> Result<ConvPlan, GpuError> {
        let p = plan(kernel, g)?;
        need_len(kernel, input.0, input.1, p.x_len)?;
        need_len(kernel, weight.0, weight.1, p.weight_len)?;
        need_len(kernel, output.0, output.1, p.y_len)?;
        Ok(p)
    }

    /// `y = conv(x, weight) + bias`.
    pub fn conv2d_forward(
        &self,
        g: &Conv2dGeom,
        x: &DeviceBuffer,
        weight: &DeviceBuffer,
        bias: Option<&DeviceBuffer>,
        y: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        const NAME: &str = "conv2d_forward";
        let buffers = [("x", x.len()), ("weight", weight.len()), ("y", y.len())];
        let p = Gpu::conv_plan(NAME, g, buffers)?;
        if let Some(bias) = bias {
            need_len(NAME, "bias", bias.len(), g.c_out)?;
        }
        let geo = &p.geo;
        if let (ConvKind::Pointwise, None) = (p.kind, bias) {
            let (sa, sb) = pointwise_forward_operands(geo);
            let plane = geo.h * geo.w;
            let (m, n, k) = (geo.c_out, plane, geo.c_in);
            let c_stride = geo.c_out * plane;
            return self.gemm(
                geo.batch,
                (m, n, k),
                1.0,
                weight,
                sa,
                x,
                sb,
                0.0,
                y,
                plane,
                c_stride,
            );
        }
        // The GEMM kernel has no bias: a biased 1x1 takes the implicit kernel.
        let (kernel, kind) = match p.kind {
            ConvKind::Depthwise => ("depthwise_conv2d_forward", ConvKind::Depthwise),
            ConvKind::Tiled | ConvKind::Pointwise => (NAME, ConvKind::Tiled),
        };
        let mut args = KernelArgs::new();
        args.input(x, p.x_len).input(weight, p.weight_len);
        match bias {
            Some(bias) => args.input(bias, g.c_out),
            None => args.null(),
        };
        args.output(y, p.y_len);
        push_geometry(&mut args, kind, geo);
        self.launch(kernel, forward_shape(kind, geo), &args)
    }

    /// `dx = d conv / d x` applied to `dy`.
    pub fn conv2d_backward_data(
        &self,
        g: &Conv2dGeom,
        dy: &DeviceBuffer,
        weight: &DeviceBuffer,
        dx: &mut DeviceBuffer,
        accumulate: bool,
    ) -> Result<(), GpuError> {
        const NAME: &str = "conv2d_backward_data";
        let buffers = [("dx", dx.len()), ("weight", weight.len()), ("dy", dy.len())];
        let p = Gpu::conv_plan(NAME, g, buffers)?;
        let geo = &p.geo;
        let kernel = match p.kind {
            ConvKind::Pointwise => {
                let (sa, sb) = pointwise_backward_data_operands(geo);
                let plane = geo.h * geo.w;
                let (m, n, k) = (geo.c_in, plane, geo.c_out);
                let c_stride = geo.c_in * plane;
                return self.gemm(
                    geo.batch,
                    (m, n, k),
                    1.0,
                    weight,
                    sa,
                    dy,
                    sb,
                    if accumulate { 1.0 } else { 0.0 },
                    dx,
                    plane,
                    c_stride,
                );
            }
            ConvKind::Depthwise => "depthwise_conv2d_backward_data",
            ConvKind::Tiled => NAME,
        };
        let mut args = KernelArgs::new();
        args.input(dy, p.y_len)
            .input(weight, p.weight_len)
            .output(dx, p.x_len);
        push_geometry(&mut args, p.kind, geo);
        args.u32(accumulate.into());
        self.launch(kernel, backward_data_shape(p.kind, geo), &args)
    }

    /// `dweight` from `x` and `dy`, summed over the batch (overwritten).
    pub fn conv2d_backward_filter(
        &self,
        g: &Conv2dGeom,
        x: &DeviceBuffer,
        dy: &DeviceBuffer,
        dweight: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        const NAME: &str = "conv2d_backward_filter";
        let buffers = [("x", x.len()), ("dweight", dweight.len()), ("dy", dy.len())];
        let p = Gpu::conv_plan(NAME, g, buffers)?;
        let (kernel, kind) = match p.kind {
            ConvKind::Depthwise => ("depthwise_conv2d_backward_filter", ConvKind::Depthwise),
            ConvKind::Tiled | ConvKind::Pointwise => (NAME, ConvKind::Tiled),
        };
        let mut args = KernelArgs::new();
        args.input(x, p.x_len)
            .input(dy, p.y_len)
            .output(dweight, p.weight_len);
        push_geometry(&mut args, kind, &p.geo);
        self.launch(kernel, backward_filter_shape(kind, &p.geo), &args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{down, gpu, up, values};
    use pulsefocus_core::{Backend, CpuBackend};

    fn geom(c_in: usize, c_out: usize, k: usize, stride: usize, groups: usize) -> Conv2dGeom {
        Conv2dGeom {
            batch: 2,
            c_in,
            h_in: 7,
            w_in: 6,
            c_out,
            kernel_h: k,
            kernel_w: k,
            stride_h: stride,
            stride_w: stride,
            pad_h: k / 2,
            pad_w: k / 2,
            dilation_h: 1,
            dilation_w: 1,
            groups,
        }
    }

    #[test]
    fn rejects_bad_convolutions_with_a_message() {
        let bad = geom(6, 4, 3, 1, 4);
        assert_eq!(
            plan("conv2d_forward", &bad).unwrap_err().to_string(),
            "kernel conv2d_forward: conv2d: groups 4 must divide c_in 6 and c_out 4"
        );
        let big = Conv2dGeom {
            kernel_h: 11,
            pad_h: 0,
            ..geom(4, 4, 3, 1, 1)
        };
        assert!(plan("c", &big)
            .unwrap_err()
            .message
            .contains("does not fit"));
        let huge = Conv2dGeom {
            batch: 1 << 31,
            ..geom(4, 4, 3, 1, 1)
        };
        assert!(plan("c", &huge)
            .unwrap_err()
            .message
            .contains("kernels index below 2^32"));
        assert_eq!(
            plan("c", &geom(6, 6, 3, 1, 6)).unwrap().kind,
            ConvKind::Depthwise
        );
        assert_eq!(
            plan("c", &geom(6, 4, 1, 1, 1)).unwrap().kind,
            ConvKind::Pointwise
        );
        assert_eq!(
            plan("c", &geom(6, 4, 1, 1, 2)).unwrap().kind,
            ConvKind::Tiled
        );
        assert_eq!(
            plan("c", &geom(6, 4, 3, 2, 2)).unwrap().kind,
            ConvKind::Tiled
        );
    }

    fn close(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-4 * w.abs().max(1.0),
                "{what}[{i}]: GPU {g}, CPU {w}"
            );
        }
    }

    /// The three passes on the emulated GPU against the CPU backend, every
    /// kernel kind, with and without bias, outputs longer than the tensor.
    #[test]
    fn every_kind_matches_the_cpu_backend() {
        let gpu = gpu();
        let cpu = CpuBackend::new();
        for (g, with_bias) in [
            (geom(3, 5, 3, 1, 1), true),
            (geom(4, 6, 3, 2, 2), false),
            (geom(6, 6, 3, 1, 6), true),
            (geom(6, 6, 3, 2, 6), false),
            (geom(5, 3, 1, 1, 1), false),
            (geom(5, 3, 1, 1, 1), true),
        ] {
            let (x, w, b) = (
                values(g.input_len(), 1),
                values(g.weight_len(), 2),
                values(g.c_out, 3),
            );
            let dy = values(g.output_len(), 4);
            let (gx, gw, gb, gdy) = (up(&gpu, &x), up(&gpu, &w), up(&gpu, &b), up(&gpu, &dy));
            let mut gy = up(&gpu, &vec![9.0; g.output_len() + 3]);
            let bias = with_bias.then_some(&gb);
            gpu.conv2d_forward(&g, &gx, &gw, bias, &mut gy).unwrap();
            let mut gdx = gpu.zeros(g.input_len()).unwrap();
            gpu.conv2d_backward_data(&g, &gdy, &gw, &mut gdx, false)
                .unwrap();
            let mut gdw = gpu.zeros(g.weight_len()).unwrap();
            gpu.conv2d_backward_filter(&g, &gx, &gdy, &mut gdw).unwrap();

            let mut ws = cpu.alloc(cpu.conv2d_workspace_len(&g));
            let (cx, cw, cb, cdy) = (
                cpu_up(&cpu, &x),
                cpu_up(&cpu, &w),
                cpu_up(&cpu, &b),
                cpu_up(&cpu, &dy),
            );
            let mut cy = cpu.alloc(g.output_len());
            cpu.conv2d_forward(&g, &cx, &cw, with_bias.then_some(&cb), &mut cy, &mut ws);
            let mut cdx = cpu.alloc(g.input_len());
            cpu.conv2d_backward_data(&g, &cdy, &cw, &mut cdx, false, &mut ws);
            let mut cdw = cpu.alloc(g.weight_len());
            cpu.conv2d_backward_filter(&g, &cx, &cdy, &mut cdw, None, &mut ws);

            let y = down(&gpu, &gy);
            close(
                &y[..g.output_len()],
                &cpu_down(&cpu, &cy),
                &format!("y {g:?}"),
            );
            assert_eq!(&y[g.output_len()..], &[9.0; 3], "past the tensor");
            close(
                &down(&gpu, &gdx),
                &cpu_down(&cpu, &cdx),
                &format!("dx {g:?}"),
            );
            close(
                &down(&gpu, &gdw),
                &cpu_down(&cpu, &cdw),
                &format!("dw {g:?}"),
            );
        }
    }

    fn cpu_up(cpu: &CpuBackend, host: &[f32]) -> <CpuBackend as Backend>::Buffer {
        let mut buffer = cpu.alloc(host.len());
        cpu.upload(host, &mut buffer);
        buffer
    }

    fn cpu_down(cpu: &CpuBackend, buffer: &<CpuBackend as Backend>::Buffer) -> Vec<f32> {
        let mut host = vec![0.0; cpu.buffer_len(buffer)];
        cpu.download(buffer, &mut host);
        host
    }
}
