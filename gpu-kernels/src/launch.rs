//! Launch methods on [`Gpu`], one per kernel (plus the multi-launch NMS and
//! sum): each checks its arguments through [`plan`], then queues the kernel
//! on the GPU's stream. Nothing waits for the GPU unless it downloads.
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};
use pulsefocus_core::yolo::{Detection, NmsConfig, YoloConfig};
use pulsefocus_gpu_device::conv::ConvGeometry;
use pulsefocus_gpu_device::elementwise;
use pulsefocus_gpu_device::nms::{KEPT, KEPT_TOP};
use pulsefocus_gpu_device::reduce::REDUCE_THREADS;

use crate::plan::{self, index_count, need_len, ConvKind, LaunchShape, PlanError, Strides};
use crate::pool::DeviceBuffer;
use crate::{Gpu, GpuError};

fn config(shape: LaunchShape) -> LaunchConfig {
    LaunchConfig {
        grid_dim: shape.grid,
        block_dim: shape.block,
        shared_mem_bytes: 0,
    }
}

/// Queues kernel `$name` with `$shape` and the arguments in order (buffers as
/// `buf.slice()` / `buf.slice_mut()`, scalars by reference).
macro_rules! launch {
    ($gpu:expr, $name:expr, $shape:expr, $($arg:expr),* $(,)?) => {{
        let mut builder = $gpu.stream.launch_builder($gpu.function($name));
        $( builder.arg($arg); )*
        // SAFETY: the arguments match the kernel's signature in
        // gpu-kernels/device and `plan` checked their extents.
        unsafe { builder.launch(config($shape)) }
            .map(|_| ())
            .map_err(|source| GpuError::Launch { kernel: $name, source })
    }};
}

/// Queues convolution kernel `$name`: its buffers, then the geometry in the
/// order the convolution kernels take it; the depthwise kernels take one
/// channel count and no groups.
macro_rules! launch_conv {
    ($gpu:expr, $name:expr, $shape:expr, $g:expr, [$($buf:expr),*]) => {
        launch!(
            $gpu, $name, $shape, $($buf,)*
            &$g.batch, &$g.c_in, &$g.h, &$g.w, &$g.c_out, &$g.k_h, &$g.k_w,
            &$g.stride_h, &$g.stride_w, &$g.pad_h, &$g.pad_w,
            &$g.dilation_h, &$g.dilation_w, &$g.groups
        )
    };
    (depthwise $gpu:expr, $name:expr, $shape:expr, $g:expr, [$($buf:expr),*]) => {
        launch!(
            $gpu, $name, $shape, $($buf,)*
            &$g.batch, &$g.c_in, &$g.h, &$g.w, &$g.k_h, &$g.k_w,
            &$g.stride_h, &$g.stride_w, &$g.pad_h, &$g.pad_w,
            &$g.dilation_h, &$g.dilation_w
        )
    };
}

/// The null device pointer, for optional arguments.
const NULL: u64 = 0;

/// Every buffer must hold at least `len` elements.
fn at_least(kernel: &'static str, buffers: &[(&str, usize)], len: usize) -> Result<(), GpuError> {
    for &(arg, got) in buffers {
        need_len(kernel, arg, got, len)?;
    }
    Ok(())
}

/// The element count of an elementwise kernel over the first `len`
/// elements of `buffers`, after checking that they hold them.
fn elementwise_len(
    kernel: &'static str,
    buffers: &[(&str, usize)],
    len: usize,
) -> Result<u32, GpuError> {
    let n = index_count(kernel, "len", len)?;
    at_least(kernel, buffers, len)?;
    Ok(n)
}

/// Validates a convolution and picks its kernels, after checking its
/// `[input, weight, output]` buffers (or their gradients), named as the
/// caller calls them, against the geometry.
fn conv_plan(
    kernel: &'static str,
    geo: &ConvGeometry,
    [input, weight, output]: [(&str, &DeviceBuffer); 3],
) -> Result<ConvKind, GpuError> {
    let (kind, lens) = plan::conv(kernel, geo)?;
    need_len(kernel, input.0, input.1.len(), lens.x)?;
    need_len(kernel, weight.0, weight.1.len(), lens.weight)?;
    need_len(kernel, output.0, output.1.len(), lens.y)?;
    Ok(kind)
}

/// An activation as the kernels take it: one of the device crate's
/// `elementwise::ACT_*` codes, and the slope of a leaky ReLU.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Act {
    pub kind: u32,
    pub slope: f32,
}

impl Act {
    pub const IDENTITY: Act = Act {
        kind: elementwise::ACT_IDENTITY,
        slope: 0.0,
    };
    pub const RELU: Act = Act {
        kind: elementwise::ACT_RELU,
        slope: 0.0,
    };
    pub const RELU6: Act = Act {
        kind: elementwise::ACT_RELU6,
        slope: 0.0,
    };
    pub const fn leaky_relu(slope: f32) -> Act {
        Act {
            kind: elementwise::ACT_LEAKY_RELU,
            slope,
        }
    }
}

/// Shape of a batch norm: NCHW with `plane` = H*W.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BnShape {
    pub batch: u32,
    pub channels: u32,
    pub plane: u32,
}

impl BnShape {
    pub fn len(&self) -> usize {
        self.batch as usize * self.channels as usize * self.plane as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn check(
        &self,
        kernel: &'static str,
        tensors: &[(&str, usize)],
        per_channel: &[(&str, usize)],
    ) -> Result<(), GpuError> {
        if self.is_empty() {
            return Err(plan::PlanError {
                kernel,
                message: format!("empty batch norm {self:?}"),
            }
            .into());
        }
        index_count(kernel, "x", self.len())?;
        at_least(kernel, tensors, self.len())?;
        at_least(kernel, per_channel, self.channels as usize)
    }
}

/// Shape of a max pool: `planes` = N*C planes of `h x w`, square window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolShape {
    pub planes: u32,
    pub h: u32,
    pub w: u32,
    pub size: u32,
    pub stride: u32,
    pub pad: u32,
}

impl PoolShape {
    /// (input, output) element counts, after checking the window fits.
    fn lens(&self, kernel: &'static str) -> Result<(usize, usize), GpuError> {
        let p = self;
        if p.size == 0
            || p.stride == 0
            || p.pad >= p.size
            || p.h + 2 * p.pad < p.size
            || p.w + 2 * p.pad < p.size
        {
            return Err(plan::PlanError {
                kernel,
                message: format!("window does not fit: {p:?}"),
            }
            .into());
        }
        let (ho, wo) = (
            (p.h + 2 * p.pad - p.size) / p.stride + 1,
            (p.w + 2 * p.pad - p.size) / p.stride + 1,
        );
        Ok((
            p.planes as usize * (p.h * p.w) as usize,
            p.planes as usize * (ho * wo) as usize,
        ))
    }
}

impl Gpu {
    /// A zero-filled pooled buffer.
    pub fn zeros(&self, len: usize) -> Result<DeviceBuffer, GpuError> {
        let mut buffer = self.pool.alloc(len).map_err(GpuError::Memory)?;
        self.fill(len, &mut buffer, 0.0)?;
        Ok(buffer)
    }

    /// `x[..len] = value`.
    pub fn fill(&self, len: usize, x: &mut DeviceBuffer, value: f32) -> Result<(), GpuError> {
        let n = elementwise_len("fill", &[("x", x.len())], len)?;
        launch!(
            self,
            "fill",
            plan::elementwise(n),
            x.slice_mut(),
            &n,
            &value
        )
    }

    /// `y = act(x)` over the first `len` elements.
    pub fn activation_forward(
        &self,
        act: Act,
        len: usize,
        x: &DeviceBuffer,
        y: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        let n = elementwise_len("activation_forward", &[("x", x.len()), ("y", y.len())], len)?;
        launch!(
            self,
            "activation_forward",
            plan::elementwise(n),
            x.slice(),
            y.slice_mut(),
            &n,
            &act.kind,
            &act.slope
        )
    }

    /// `dx = dy * act'(x)`, from the forward output `y`.
    pub fn activation_backward(
        &self,
        act: Act,
        len: usize,
        y: &DeviceBuffer,
        dy: &DeviceBuffer,
        dx: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        let n = elementwise_len(
            "activation_backward",
            &[("y", y.len()), ("dy", dy.len()), ("dx", dx.len())],
            len,
        )?;
        launch!(
            self,
            "activation_backward",
            plan::elementwise(n),
            y.slice(),
            dy.slice(),
            dx.slice_mut(),
            &n,
            &act.kind,
            &act.slope
        )
    }

    /// `x *= alpha` over the first `len` elements.
    pub fn scale(&self, len: usize, alpha: f32, x: &mut DeviceBuffer) -> Result<(), GpuError> {
        let n = elementwise_len("scale", &[("x", x.len())], len)?;
        launch!(
            self,
            "scale",
            plan::elementwise(n),
            x.slice_mut(),
            &n,
            &alpha
        )
    }

    pub fn sigmoid_forward(
        &self,
        len: usize,
        x: &DeviceBuffer,
        y: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        let n = elementwise_len("sigmoid_forward", &[("x", x.len()), ("y", y.len())], len)?;
        launch!(
            self,
            "sigmoid_forward",
            plan::elementwise(n),
            x.slice(),
            y.slice_mut(),
            &n
        )
    }

    /// `dx = dy * y * (1 - y)`.
    pub fn sigmoid_backward(
        &self,
        len: usize,
        y: &DeviceBuffer,
        dy: &DeviceBuffer,
        dx: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        let n = elementwise_len(
            "sigmoid_backward",
            &[("y", y.len()), ("dy", dy.len()), ("dx", dx.len())],
            len,
        )?;
        launch!(
            self,
            "sigmoid_backward",
            plan::elementwise(n),
            y.slice(),
            dy.slice(),
            dx.slice_mut(),
            &n
        )
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
        launch!(
            self,
            "add",
            plan::elementwise(n),
            a.slice(),
            b.slice(),
            out.slice_mut(),
            &n
        )
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
        launch!(
            self,
            "axpy",
            plan::elementwise(n),
            &alpha,
            x.slice(),
            y.slice_mut(),
            &n
        )
    }

    /// Paddle's momentum step with L2 decay on the first `len` parameters.
    #[allow(clippy::too_many_arguments)]
    pub fn momentum_sgd(
        &self,
        len: usize,
        param: &mut DeviceBuffer,
        grad: &DeviceBuffer,
        velocity: &mut DeviceBuffer,
        lr: f32,
        momentum: f32,
        weight_decay: f32,
    ) -> Result<(), GpuError> {
        let n = elementwise_len(
            "momentum_sgd",
            &[
                ("param", param.len()),
                ("grad", grad.len()),
                ("velocity", velocity.len()),
            ],
            len,
        )?;
        launch!(
            self,
            "momentum_sgd",
            plan::elementwise(n),
            param.slice_mut(),
            grad.slice(),
            velocity.slice_mut(),
            &n,
            &lr,
            &momentum,
            &weight_decay
        )
    }

    /// `dst[..src.len()] = src` (host to device).
    pub fn upload_into(&self, src: &[f32], dst: &mut DeviceBuffer) -> Result<(), GpuError> {
        need_len("upload", "dst", dst.len(), src.len()).map_err(GpuError::Plan)?;
        let mut view = dst.slice_mut().slice_mut(0..src.len());
        self.stream
            .memcpy_htod(src, &mut view)
            .map_err(GpuError::Memory)
    }

    /// `dst = src[..dst.len()]` (device to host; waits for the stream).
    pub fn download_into(&self, src: &DeviceBuffer, dst: &mut [f32]) -> Result<(), GpuError> {
        need_len("download", "src", src.len(), dst.len()).map_err(GpuError::Plan)?;
        self.stream
            .memcpy_dtoh(&src.slice().slice(0..dst.len()), dst)
            .map_err(GpuError::Memory)
    }

    /// `dst[..len] = src[..len]` on the device.
    pub fn copy(
        &self,
        len: usize,
        src: &DeviceBuffer,
        dst: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        at_least("copy", &[("src", src.len()), ("dst", dst.len())], len)?;
        let mut view = dst.slice_mut().slice_mut(0..len);
        self.stream
            .memcpy_dtod(&src.slice().slice(0..len), &mut view)
            .map_err(GpuError::Memory)
    }

    /// `C_z = alpha A_z B_z + beta C_z` for `z < batch`, strided operands
    /// (see the device kernel); `C` is row-major with leading dimension `ldc`.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm(
        &self,
        batch: u32,
        (m, n, k): (u32, u32, u32),
        alpha: f32,
        a: &DeviceBuffer,
        sa: Strides,
        b: &DeviceBuffer,
        sb: Strides,
        beta: f32,
        c: &mut DeviceBuffer,
        ldc: u32,
        c_batch_stride: u32,
    ) -> Result<(), GpuError> {
        plan::gemm_operand("A", a.len(), batch, m, k, sa)?;
        plan::gemm_operand("B", b.len(), batch, k, n, sb)?;
        plan::gemm_operand(
            "C",
            c.len(),
            batch,
            m,
            n,
            Strides {
                row: ldc,
                col: 1,
                batch: c_batch_stride,
            },
        )?;
        launch!(
            self,
            "gemm",
            plan::tiled(m, n, batch),
            &m,
            &n,
            &k,
            &alpha,
            a.slice(),
            &sa.row,
            &sa.col,
            &sa.batch,
            b.slice(),
            &sb.row,
            &sb.col,
            &sb.batch,
            &beta,
            c.slice_mut(),
            &ldc,
            &c_batch_stride
        )
    }

    /// `y = conv(x, weight) + bias`; depthwise geometries take the direct kernel.
    pub fn conv2d_forward(
        &self,
        geo: &ConvGeometry,
        x: &DeviceBuffer,
        weight: &DeviceBuffer,
        bias: Option<&DeviceBuffer>,
        y: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        const NAME: &str = "conv2d_forward";
        let kind = conv_plan(NAME, geo, [("x", x), ("weight", weight), ("y", y)])?;
        let g = geo;
        match (kind, bias) {
            (ConvKind::Pointwise, None) => {
                let (sa, sb) = plan::pointwise_forward_operands(g);
                let plane = g.h * g.w;
                self.gemm(
                    g.batch,
                    (g.c_out, plane, g.c_in),
                    1.0,
                    weight,
                    sa,
                    x,
                    sb,
                    0.0,
                    y,
                    plane,
                    g.c_out * plane,
                )
            }
            (ConvKind::Depthwise, None) => launch_conv!(
                depthwise self,
                "depthwise_conv2d_forward",
                plan::conv_forward_shape(kind, geo),
                g,
                [x.slice(), weight.slice(), y.slice_mut()]
            ),
            (ConvKind::Depthwise, Some(_)) => Err(plan::PlanError {
                kernel: "depthwise_conv2d_forward",
                message: "takes no bias (MobileNet's depthwise convolutions have none)".into(),
            }
            .into()),
            // The GEMM kernel has no bias: a biased 1x1 takes the implicit kernel.
            (ConvKind::Tiled | ConvKind::Pointwise, bias) => {
                let shape = plan::conv_forward_shape(ConvKind::Tiled, geo);
                match bias {
                    Some(bias) => {
                        need_len(NAME, "bias", bias.len(), g.c_out as usize)?;
                        launch_conv!(
                            self,
                            "conv2d_forward",
                            shape,
                            g,
                            [x.slice(), weight.slice(), bias.slice(), y.slice_mut()]
                        )
                    }
                    None => launch_conv!(
                        self,
                        "conv2d_forward",
                        shape,
                        g,
                        [x.slice(), weight.slice(), &NULL, y.slice_mut()]
                    ),
                }
            }
        }
    }

    pub fn conv2d_backward_data(
        &self,
        geo: &ConvGeometry,
        dy: &DeviceBuffer,
        weight: &DeviceBuffer,
        dx: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        const NAME: &str = "conv2d_backward_data";
        let kind = conv_plan(NAME, geo, [("dx", dx), ("weight", weight), ("dy", dy)])?;
        let g = geo;
        match kind {
            ConvKind::Pointwise => {
                let (sa, sb) = plan::pointwise_backward_data_operands(g);
                let plane = g.h * g.w;
                self.gemm(
                    g.batch,
                    (g.c_in, plane, g.c_out),
                    1.0,
                    weight,
                    sa,
                    dy,
                    sb,
                    0.0,
                    dx,
                    plane,
                    g.c_in * plane,
                )
            }
            ConvKind::Tiled | ConvKind::Depthwise => {
                let shape = plan::conv_backward_data_shape(kind, geo);
                let kernels = [NAME, "depthwise_conv2d_backward_data"];
                self.conv_backward(kernels, kind, shape, geo, [dy, weight], dx)
            }
        }
    }

    /// `dweight` is overwritten (accumulate with `axpy` if needed).
    pub fn conv2d_backward_filter(
        &self,
        geo: &ConvGeometry,
        x: &DeviceBuffer,
        dy: &DeviceBuffer,
        dweight: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        const NAME: &str = "conv2d_backward_filter";
        let kind = conv_plan(NAME, geo, [("x", x), ("dweight", dweight), ("dy", dy)])?;
        let shape = plan::conv_backward_filter_shape(kind, geo);
        let kernels = [NAME, "depthwise_conv2d_backward_filter"];
        self.conv_backward(kernels, kind, shape, geo, [x, dy], dweight)
    }

    /// Queues a convolution backward kernel, whose buffers are two inputs
    /// then the output: `kernels` names the implicit-GEMM kernel and its
    /// depthwise twin.
    fn conv_backward(
        &self,
        [tiled, depthwise]: [&'static str; 2],
        kind: ConvKind,
        shape: LaunchShape,
        g: &ConvGeometry,
        [a, b]: [&DeviceBuffer; 2],
        out: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        let (a, b, out) = (a.slice(), b.slice(), out.slice_mut());
        match kind {
            ConvKind::Depthwise => launch_conv!(depthwise self, depthwise, shape, g, [a, b, out]),
            ConvKind::Tiled | ConvKind::Pointwise => {
                launch_conv!(self, tiled, shape, g, [a, b, out])
            }
        }
    }

    /// Per-channel sum over N, H, W (the bias gradient).
    pub fn channel_sum(
        &self,
        x: &DeviceBuffer,
        out: &mut DeviceBuffer,
        nchw: (u32, u32, u32),
    ) -> Result<(), GpuError> {
        let (batch, channels, plane) = nchw;
        need_len(
            "channel_sum",
            "x",
            x.len(),
            (batch * channels * plane) as usize,
        )?;
        need_len("channel_sum", "out", out.len(), channels as usize)?;
        launch!(
            self,
            "channel_sum",
            plan::block_per_item("channel_sum", channels)?,
            x.slice(),
            out.slice_mut(),
            &batch,
            &channels,
            &plane
        )
    }

    /// Training-mode batch norm + activation forward; `saved` = (mean,
    /// inv_std) for backward, `running` = (mean, var) updated in place.
    #[allow(clippy::too_many_arguments)]
    pub fn batch_norm_train_forward(
        &self,
        g: BnShape,
        act: Act,
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
        g.check(
            NAME,
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
        launch!(
            self,
            "batch_norm_train_forward",
            plan::block_per_item(NAME, g.channels)?,
            x.slice(),
            gamma.slice(),
            beta.slice(),
            y.slice_mut(),
            saved.0.slice_mut(),
            saved.1.slice_mut(),
            running.0.slice_mut(),
            running.1.slice_mut(),
            &g.batch,
            &g.channels,
            &g.plane,
            &epsilon,
            &momentum,
            &act.kind,
            &act.slope
        )
    }

    /// Training-mode backward through the activation (its derivative from
    /// the output `y`): `dx`, and `dgamma`/`dbeta` overwritten.
    #[allow(clippy::too_many_arguments)]
    pub fn batch_norm_train_backward(
        &self,
        g: BnShape,
        act: Act,
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
        g.check(
            NAME,
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
        launch!(
            self,
            "batch_norm_train_backward",
            plan::block_per_item(NAME, g.channels)?,
            x.slice(),
            y.slice(),
            dy.slice(),
            gamma.slice(),
            saved.0.slice(),
            saved.1.slice(),
            dx.slice_mut(),
            dgamma.slice_mut(),
            dbeta.slice_mut(),
            &g.batch,
            &g.channels,
            &g.plane,
            &act.kind,
            &act.slope
        )
    }

    /// Evaluation (running statistics) forward with the activation.
    #[allow(clippy::too_many_arguments)]
    pub fn batch_norm_eval_forward(
        &self,
        g: BnShape,
        act: Act,
        x: &DeviceBuffer,
        gamma: &DeviceBuffer,
        beta: &DeviceBuffer,
        running: (&DeviceBuffer, &DeviceBuffer),
        y: &mut DeviceBuffer,
        epsilon: f32,
    ) -> Result<(), GpuError> {
        const NAME: &str = "batch_norm_eval_forward";
        g.check(
            NAME,
            &[("x", x.len()), ("y", y.len())],
            &[
                ("gamma", gamma.len()),
                ("beta", beta.len()),
                ("running mean", running.0.len()),
                ("running var", running.1.len()),
            ],
        )?;
        let n = index_count(NAME, "x", g.len())?;
        launch!(
            self,
            "batch_norm_eval_forward",
            plan::elementwise(n),
            x.slice(),
            gamma.slice(),
            beta.slice(),
            running.0.slice(),
            running.1.slice(),
            y.slice_mut(),
            &g.batch,
            &g.channels,
            &g.plane,
            &epsilon,
            &act.kind,
            &act.slope
        )
    }

    /// Evaluation (frozen) backward to `x` only.
    #[allow(clippy::too_many_arguments)]
    pub fn batch_norm_eval_backward(
        &self,
        g: BnShape,
        act: Act,
        y: &DeviceBuffer,
        dy: &DeviceBuffer,
        gamma: &DeviceBuffer,
        running_var: &DeviceBuffer,
        dx: &mut DeviceBuffer,
        epsilon: f32,
    ) -> Result<(), GpuError> {
        const NAME: &str = "batch_norm_eval_backward";
        g.check(
            NAME,
            &[("y", y.len()), ("dy", dy.len()), ("dx", dx.len())],
            &[("gamma", gamma.len()), ("running var", running_var.len())],
        )?;
        let n = index_count(NAME, "x", g.len())?;
        launch!(
            self,
            "batch_norm_eval_backward",
            plan::elementwise(n),
            y.slice(),
            dy.slice(),
            gamma.slice(),
            running_var.slice(),
            dx.slice_mut(),
            &g.batch,
            &g.channels,
            &g.plane,
            &epsilon,
            &act.kind,
            &act.slope
        )
    }

    /// Max pool forward over `planes` = N*C planes of `h x w`.
    pub fn max_pool_forward(
        &self,
        p: PoolShape,
        x: &DeviceBuffer,
        y: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        let (input, output) = p.lens("max_pool_forward")?;
        at_least("max_pool_forward", &[("x", x.len())], input)?;
        at_least("max_pool_forward", &[("y", y.len())], output)?;
        let n = index_count("max_pool_forward", "y", output)?;
        launch!(
            self,
            "max_pool_forward",
            plan::elementwise(n),
            x.slice(),
            y.slice_mut(),
            &p.planes,
            &p.h,
            &p.w,
            &p.size,
            &p.stride,
            &p.pad
        )
    }

    /// Max pool backward: each window's gradient to its first maximum in `x`.
    pub fn max_pool_backward(
        &self,
        p: PoolShape,
        x: &DeviceBuffer,
        dy: &DeviceBuffer,
        dx: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        let (input, output) = p.lens("max_pool_backward")?;
        at_least(
            "max_pool_backward",
            &[("x", x.len()), ("dx", dx.len())],
            input,
        )?;
        at_least("max_pool_backward", &[("dy", dy.len())], output)?;
        let n = index_count("max_pool_backward", "x", input)?;
        launch!(
            self,
            "max_pool_backward",
            plan::elementwise(n),
            x.slice(),
            dy.slice(),
            dx.slice_mut(),
            &p.planes,
            &p.h,
            &p.w,
            &p.size,
            &p.stride,
            &p.pad
        )
    }

    /// Nearest upsampling of `planes` = N*C planes of `h x w` by `factor`.
    pub fn upsample_nearest_forward(
        &self,
        x: &DeviceBuffer,
        y: &mut DeviceBuffer,
        planes: u32,
        hw: (u32, u32),
        factor: u32,
    ) -> Result<(), GpuError> {
        let (h, w) = hw;
        need_len(
            "upsample_nearest_forward",
            "x",
            x.len(),
            (planes * h * w) as usize,
        )?;
        let n = index_count(
            "upsample_nearest_forward",
            "y",
            (planes * h * w) as usize * (factor * factor) as usize,
        )?;
        need_len("upsample_nearest_forward", "y", y.len(), n as usize)?;
        launch!(
            self,
            "upsample_nearest_forward",
            plan::elementwise(n),
            x.slice(),
            y.slice_mut(),
            &planes,
            &h,
            &w,
            &factor
        )
    }

    pub fn upsample_nearest_backward(
        &self,
        dy: &DeviceBuffer,
        dx: &mut DeviceBuffer,
        planes: u32,
        hw: (u32, u32),
        factor: u32,
    ) -> Result<(), GpuError> {
        let (h, w) = hw;
        let n = index_count("upsample_nearest_backward", "dx", (planes * h * w) as usize)?;
        need_len("upsample_nearest_backward", "dx", dx.len(), n as usize)?;
        need_len(
            "upsample_nearest_backward",
            "dy",
            dy.len(),
            n as usize * (factor * factor) as usize,
        )?;
        launch!(
            self,
            "upsample_nearest_backward",
            plan::elementwise(n),
            dy.slice(),
            dx.slice_mut(),
            &planes,
            &h,
            &w,
            &factor
        )
    }

    /// Copies `count` channels (`src` channel `src_first..` to `dst` channel
    /// `dst_first..`) for each of `batch` images of `plane` values per channel:
    /// concat forward (into the output) and backward (out of its gradient).
    #[allow(clippy::too_many_arguments)]
    pub fn copy_channels(
        &self,
        src: &DeviceBuffer,
        src_channels: u32,
        src_first: u32,
        dst: &mut DeviceBuffer,
        dst_channels: u32,
        dst_first: u32,
        count: u32,
        batch: u32,
        plane: u32,
    ) -> Result<(), GpuError> {
        const NAME: &str = "copy_channels";
        if src_first + count > src_channels || dst_first + count > dst_channels {
            return Err(plan::PlanError { kernel: NAME, message: format!("channels {src_first}+{count} of {src_channels} -> {dst_first}+{count} of {dst_channels} out of range") }.into());
        }
        need_len(
            NAME,
            "src",
            src.len(),
            (batch * src_channels * plane) as usize,
        )?;
        need_len(
            NAME,
            "dst",
            dst.len(),
            (batch * dst_channels * plane) as usize,
        )?;
        let n = index_count(NAME, "copy", (batch * count * plane) as usize)?;
        launch!(
            self,
            "copy_channels",
            plan::elementwise(n),
            src.slice(),
            &src_channels,
            &src_first,
            dst.slice_mut(),
            &dst_channels,
            &dst_first,
            &count,
            &batch,
            &plane
        )
    }

    /// The sum (or, with `square`, the sum of squares) of the first `len`
    /// elements: per-block partial sums on the device, added in f64 here
    /// (waits for the result).
    pub fn sum(&self, len: usize, x: &DeviceBuffer, square: bool) -> Result<f64, GpuError> {
        let n = elementwise_len("sum_blocks", &[("x", x.len())], len)?;
        let blocks = n.div_ceil(REDUCE_THREADS).clamp(1, 1024);
        let mut partial = self.pool.alloc(blocks as usize).map_err(GpuError::Memory)?;
        let shape = LaunchShape {
            grid: (blocks, 1, 1),
            block: (REDUCE_THREADS, 1, 1),
        };
        let square = square as u32;
        launch!(
            self,
            "sum_blocks",
            shape,
            x.slice(),
            &n,
            &square,
            partial.slice_mut()
        )?;
        let partials = self.pool.download(&partial).map_err(GpuError::Memory)?;
        Ok(partials.iter().map(|&v| v as f64).sum())
    }

    /// PaddleDetection's YOLOv3 prediction on the device, as core's
    /// `yolo::detect` computes it on the CPU: each level of `heads` (head
    /// output, grid height, grid width) decoded into one box list per image
    /// (`yolo_decode`), then Paddle's `multiclass_nms` per image (the
    /// `nms_*` kernels; see the device crate's `nms` module for the steps).
    /// Only the detections (`keep_top_k` rows per image) are downloaded.
    /// `image_sizes` are each image's (height, width).
    pub fn yolo_detect(
        &self,
        cfg: &YoloConfig,
        heads: &[(&DeviceBuffer, usize, usize)],
        image_sizes: &[[u32; 2]],
        nms: &NmsConfig,
    ) -> Result<Vec<Vec<Detection>>, GpuError> {
        const NAME: &str = "yolo_detect";
        let batch = image_sizes.len();
        if batch == 0 || cfg.num_classes == 0 {
            return Ok(vec![Vec::new(); batch]);
        }
        if heads.len() != cfg.anchor_masks.len() || heads.len() != cfg.downsample_ratios.len() {
            return Err(PlanError {
                kernel: NAME,
                message: format!(
                    "{} head outputs for {} anchor masks and {} downsample ratios",
                    heads.len(),
                    cfg.anchor_masks.len(),
                    cfg.downsample_ratios.len()
                ),
            }
            .into());
        }
        let classes = cfg.num_classes;
        let boxes_per_image: usize = heads
            .iter()
            .zip(&cfg.anchor_masks)
            .map(|(&(_, h, w), mask)| mask.len() * h * w)
            .sum();
        if boxes_per_image == 0 {
            return Ok(vec![Vec::new(); batch]);
        }
        let p = plan::detect(
            batch,
            classes,
            boxes_per_image,
            nms.nms_top_k,
            nms.keep_top_k,
        )?;
        let memory = GpuError::Memory;

        // Decode: every level into one [N, M, 4] box list and [N, M, classes] scores.
        let sizes: Vec<f32> = image_sizes
            .iter()
            .flat_map(|&[h, w]| [h as f32, w as f32])
            .collect();
        let sizes = self.pool.upload(&sizes).map_err(memory)?;
        let rows = batch * boxes_per_image;
        let mut boxes = self.pool.alloc(4 * rows).map_err(memory)?;
        let mut scores = self.pool.alloc(classes * rows).map_err(memory)?;
        let mut first_box = 0u32;
        for (level, &(x, grid_h, grid_w)) in heads.iter().enumerate() {
            let mask = &cfg.anchor_masks[level];
            let anchors: Vec<f32> = mask.iter().flat_map(|&a| cfg.anchors[a]).collect();
            let anchors = self.pool.upload(&anchors).map_err(memory)?;
            need_len(
                NAME,
                "head output",
                x.len(),
                batch * cfg.head_channels(level) * grid_h * grid_w,
            )?;
            let num_anchors = mask.len() as u32;
            let (grid_h, grid_w) = (grid_h as u32, grid_w as u32);
            let downsample = index_count(NAME, "downsample ratio", cfg.downsample_ratios[level])?;
            let cells = p.batch * num_anchors * grid_h * grid_w;
            let clip = 1u32;
            launch!(
                self,
                "yolo_decode",
                plan::elementwise(cells),
                x.slice(),
                sizes.slice(),
                anchors.slice(),
                boxes.slice_mut(),
                scores.slice_mut(),
                &p.batch,
                &num_anchors,
                &p.classes,
                &grid_h,
                &grid_w,
                &downsample,
                &first_box,
                &p.boxes_per_image,
                &nms.score_threshold,
                &cfg.scale_x_y,
                &clip
            )?;
            first_box += num_anchors * grid_h * grid_w;
        }

        self.multiclass_nms(&boxes, &scores, batch, boxes_per_image, classes, nms)
    }

    /// Paddle's `multiclass_nms` of each image's `boxes [N, M, 4]` (x1, y1,
    /// x2, y2) and `scores [N, M, classes]` on the device, as core's
    /// `yolo::multiclass_nms` computes it (`batch` = N, `boxes_per_image` =
    /// M). Only the detections are downloaded.
    #[allow(clippy::too_many_arguments)]
    pub fn multiclass_nms(
        &self,
        boxes: &DeviceBuffer,
        scores: &DeviceBuffer,
        batch: usize,
        boxes_per_image: usize,
        classes: usize,
        nms: &NmsConfig,
    ) -> Result<Vec<Vec<Detection>>, GpuError> {
        const NAME: &str = "multiclass_nms";
        if batch == 0 || classes == 0 || boxes_per_image == 0 {
            return Ok(vec![Vec::new(); batch]);
        }
        need_len(NAME, "boxes", boxes.len(), batch * boxes_per_image * 4)?;
        need_len(
            NAME,
            "scores",
            scores.len(),
            batch * boxes_per_image * classes,
        )?;
        let p = plan::detect(
            batch,
            classes,
            boxes_per_image,
            nms.nms_top_k,
            nms.keep_top_k,
        )?;
        let memory = GpuError::Memory;

        // Per (image, class): candidates sorted, bounded, suppressed.
        let padded = p.padded as usize;
        let mut keys = unsafe { self.stream.alloc::<u64>(padded) }.map_err(memory)?;
        let mut values = unsafe { self.stream.alloc::<u32>(padded) }.map_err(memory)?;
        let background = nms
            .background_label
            .map_or(p.classes, |b| b.min(classes) as u32);
        launch!(
            self,
            "nms_candidate_keys",
            plan::elementwise(p.padded),
            scores.slice(),
            &p.batch,
            &p.classes,
            &p.boxes_per_image,
            &nms.score_threshold,
            &background,
            &p.padded,
            &mut keys,
            &mut values
        )?;
        self.bitonic_sort(&mut keys, &mut values, p.padded)?;
        let mut bounds =
            unsafe { self.stream.alloc::<u32>(p.segments as usize + 1) }.map_err(memory)?;
        launch!(
            self,
            "nms_bounds",
            plan::elementwise(p.segments + 1),
            &keys,
            &p.padded,
            &p.segments,
            &mut bounds
        )?;
        let mut keep = unsafe { self.stream.alloc::<u32>(padded) }.map_err(memory)?;
        let pixel: f32 = if nms.normalized { 0.0 } else { 1.0 };
        launch!(
            self,
            "nms_suppress",
            plan::nms_blocks(p.segments),
            &values,
            &bounds,
            boxes.slice(),
            &p.classes,
            &p.boxes_per_image,
            &p.segments,
            &p.top_k,
            &nms.nms_threshold,
            &pixel,
            &mut keep
        )?;

        // keep_top_k: the kept entries sorted again by (image, score).
        let want = match nms.keep_top_k {
            None => KEPT,
            Some(_) => {
                let mut keys2 = unsafe { self.stream.alloc::<u64>(padded) }.map_err(memory)?;
                let mut values2 = unsafe { self.stream.alloc::<u32>(padded) }.map_err(memory)?;
                launch!(
                    self,
                    "nms_rank_keys",
                    plan::elementwise(p.padded),
                    &keys,
                    &keep,
                    &p.classes,
                    &p.padded,
                    &mut keys2,
                    &mut values2
                )?;
                self.bitonic_sort(&mut keys2, &mut values2, p.padded)?;
                let mut image_bounds =
                    unsafe { self.stream.alloc::<u32>(batch + 1) }.map_err(memory)?;
                launch!(
                    self,
                    "nms_bounds",
                    plan::elementwise(p.batch + 1),
                    &keys2,
                    &p.padded,
                    &p.batch,
                    &mut image_bounds
                )?;
                let keep_top_k = p.capacity;
                launch!(
                    self,
                    "nms_keep_top",
                    plan::elementwise(p.padded),
                    &keys2,
                    &values2,
                    &image_bounds,
                    &p.padded,
                    &keep_top_k,
                    &mut keep
                )?;
                KEPT_TOP
            }
        };

        let mut detections = self
            .pool
            .alloc(batch * p.capacity.max(1) as usize * 6)
            .map_err(memory)?;
        let mut counts = unsafe { self.stream.alloc::<u32>(batch) }.map_err(memory)?;
        launch!(
            self,
            "nms_write",
            plan::nms_blocks(p.batch),
            &values,
            &bounds,
            &keep,
            boxes.slice(),
            scores.slice(),
            &p.batch,
            &p.classes,
            &p.boxes_per_image,
            &want,
            &p.capacity,
            detections.slice_mut(),
            &mut counts
        )?;
        let counts = self.stream.clone_dtoh(&counts).map_err(memory)?;
        let rows = self.pool.download(&detections).map_err(memory)?;
        Ok(detection_lists(&rows, &counts, p.capacity as usize))
    }

    /// Sorts `keys` ascending, equal keys by value (`padded` of each, a power of two).
    fn bitonic_sort(
        &self,
        keys: &mut CudaSlice<u64>,
        values: &mut CudaSlice<u32>,
        padded: u32,
    ) -> Result<(), GpuError> {
        for (j, k) in plan::bitonic_stages(padded) {
            launch!(
                self,
                "bitonic_sort_step",
                plan::elementwise(padded / 2),
                &mut *keys,
                &mut *values,
                &padded,
                &j,
                &k
            )?;
        }
        Ok(())
    }
}

/// `nms_write`'s rows (`[class, score, x1, y1, x2, y2]`, `capacity` per
/// image) as each image's detections, the first `counts[n]` rows of image `n`.
pub fn detection_lists(rows: &[f32], counts: &[u32], capacity: usize) -> Vec<Vec<Detection>> {
    counts
        .iter()
        .enumerate()
        .map(|(n, &count)| {
            rows[n * capacity * 6..]
                .chunks_exact(6)
                .take((count as usize).min(capacity))
                .map(|d| Detection {
                    class: d[0] as usize,
                    score: d[1],
                    bbox: [d[2], d[3], d[4], d[5]],
                })
                .collect()
        })
        .collect()
}
