//! Launch methods on [`Gpu`], one per kernel (plus the multi-launch NMS and
//! sum): each checks its arguments through [`plan`], then queues the kernel
//! on the GPU's stream. Nothing waits for the GPU unless it downloads.
use cudarc::driver::{LaunchConfig, PushKernelArg};
use pulsefocus_gpu_device::conv::ConvGeometry;
use pulsefocus_gpu_device::elementwise;
use pulsefocus_gpu_device::reduce::REDUCE_THREADS;

use crate::plan::{self, index_count, need_len, ConvKind, LaunchShape, Strides};
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
        let n = elementwise_len(
            kernel,
            &[
                ("target", target.len()),
                ("weight", weight.len()),
                ("loss", loss.len()),
                ("grad", grad.len()),
            ],
            input.len(),
        )?;
        launch!(
            self,
            kernel,
            plan::elementwise(n),
            input.slice(),
            target.slice(),
            weight.slice(),
            loss.slice_mut(),
            grad.slice_mut(),
            &n
        )
    }

    /// Paddle `yolo_box` for one head level (see the device kernel):
    /// `boxes [N, 3*H*W, 4]` in image pixels, `scores [N, 3*H*W, classes]`.
    #[allow(clippy::too_many_arguments)]
    pub fn yolo_decode(
        &self,
        level: &YoloLevel,
        x: &DeviceBuffer,
        image_size: &DeviceBuffer,
        boxes: &mut DeviceBuffer,
        scores: &mut DeviceBuffer,
        conf_thresh: f32,
        clip: bool,
    ) -> Result<(), GpuError> {
        const NAME: &str = "yolo_decode";
        let l = level;
        let cells = l.cells(NAME, "boxes", x)?;
        need_len(NAME, "image_size", image_size.len(), 2 * l.batch as usize)?;
        need_len(NAME, "boxes", boxes.len(), 4 * cells as usize)?;
        need_len(
            NAME,
            "scores",
            scores.len(),
            l.classes as usize * cells as usize,
        )?;
        let a = l.anchors;
        let clip = clip as u32;
        launch!(
            self,
            "yolo_decode",
            plan::elementwise(cells),
            x.slice(),
            image_size.slice(),
            boxes.slice_mut(),
            scores.slice_mut(),
            &l.batch,
            &l.classes,
            &l.grid_h,
            &l.grid_w,
            &l.downsample,
            &a[0],
            &a[1],
            &a[2],
            &a[3],
            &a[4],
            &a[5],
            &conf_thresh,
            &l.scale_x_y,
            &clip
        )
    }

    /// The YOLOv3 objectness ignore mask for one level: `negative [N, 3, H, W]`
    /// against `gt [N, max_boxes, 4]` (normalised cx, cy, w, h).
    pub fn yolo_ignore_mask(
        &self,
        level: &YoloLevel,
        x: &DeviceBuffer,
        gt: &DeviceBuffer,
        max_boxes: u32,
        negative: &mut DeviceBuffer,
        ignore_thresh: f32,
    ) -> Result<(), GpuError> {
        const NAME: &str = "yolo_ignore_mask";
        let l = level;
        let cells = l.cells(NAME, "negative", x)?;
        need_len(NAME, "gt", gt.len(), (l.batch * max_boxes * 4) as usize)?;
        need_len(NAME, "negative", negative.len(), cells as usize)?;
        let a = l.anchors;
        launch!(
            self,
            "yolo_ignore_mask",
            plan::elementwise(cells),
            x.slice(),
            gt.slice(),
            negative.slice_mut(),
            &l.batch,
            &l.classes,
            &l.grid_h,
            &l.grid_w,
            &l.downsample,
            &max_boxes,
            &a[0],
            &a[1],
            &a[2],
            &a[3],
            &a[4],
            &a[5],
            &ignore_thresh,
            &l.scale_x_y
        )
    }

    /// Class-aware NMS of one image on the device: candidates are the
    /// (box, class) entries of `scores [boxes, classes]` above
    /// `options.score_thresh`, the best `top_k` of each class (as Paddle's
    /// `multiclass_nms`); returns the kept entries' indices into `scores`,
    /// best first, at most `keep_top_k`.
    pub fn nms(
        &self,
        boxes: &DeviceBuffer,
        scores: &DeviceBuffer,
        classes: u32,
        options: &NmsOptions,
    ) -> Result<Vec<u32>, GpuError> {
        let o = options;
        let count = index_count("nms", "scores", scores.len())?;
        need_len(
            "nms",
            "boxes",
            boxes.len(),
            4 * (scores.len() / classes.max(1) as usize),
        )?;
        let nms_plan = plan::nms(scores.len(), o.top_k)?;
        let padded = nms_plan.padded;
        let memory = GpuError::Memory;
        let mut keys = self.pool.alloc(padded as usize).map_err(memory)?;
        let mut order = unsafe { self.stream.alloc::<u32>(padded as usize) }.map_err(memory)?;
        launch!(
            self,
            "nms_sort_keys",
            plan::elementwise(padded),
            scores.slice(),
            &count,
            &padded,
            &o.score_thresh,
            keys.slice_mut(),
            &mut order
        )?;
        for (j, k) in plan::bitonic_stages(padded) {
            launch!(
                self,
                "bitonic_sort_step",
                plan::elementwise(padded / 2),
                keys.slice_mut(),
                &mut order,
                &padded,
                &j,
                &k
            )?;
        }
        // The candidates: each class's best top_k above the threshold, as
        // Paddle's multiclass_nms takes them (picked on the host from the
        // sorted keys; the mask and reduce then work on this list).
        let sorted = self.pool.download(&keys).map_err(memory)?;
        let sorted_order = self.stream.clone_dtoh(&order).map_err(memory)?;
        let selected = pulsefocus_gpu_device::nms::per_class_candidates(
            &sorted,
            &sorted_order,
            classes,
            o.top_k,
        );
        if selected.is_empty() {
            return Ok(Vec::new());
        }
        let candidates = selected.len() as u32;
        let mut order = unsafe { self.stream.alloc::<u32>(selected.len()) }.map_err(memory)?;
        self.stream
            .memcpy_htod(&selected, &mut order)
            .map_err(memory)?;
        let mut gathered = self.pool.alloc(4 * candidates as usize).map_err(memory)?;
        launch!(
            self,
            "nms_gather_boxes",
            plan::elementwise(candidates),
            boxes.slice(),
            &order,
            &candidates,
            &classes,
            &o.class_offset,
            gathered.slice_mut()
        )?;
        let col_blocks = candidates.div_ceil(pulsefocus_gpu_device::nms::NMS_BLOCK);
        let mut mask = unsafe { self.stream.alloc::<u64>((candidates * col_blocks) as usize) }
            .map_err(memory)?;
        launch!(
            self,
            "nms_mask",
            plan::nms_mask_shape(candidates),
            gathered.slice(),
            &candidates,
            &o.iou_thresh,
            &o.pixel_offset,
            &mut mask
        )?;
        let mut keep =
            unsafe { self.stream.alloc::<u32>(o.keep_top_k.max(1) as usize) }.map_err(memory)?;
        let mut kept = self.stream.alloc_zeros::<u32>(1).map_err(memory)?;
        launch!(
            self,
            "nms_reduce",
            plan::NMS_REDUCE_SHAPE,
            &mask,
            &candidates,
            &o.keep_top_k,
            &mut keep,
            &mut kept
        )?;
        let kept = self.stream.clone_dtoh(&kept).map_err(memory)?[0] as usize;
        let keep = self.stream.clone_dtoh(&keep).map_err(memory)?;
        Ok(keep[..kept]
            .iter()
            .map(|&rank| selected[rank as usize])
            .collect())
    }
}

/// One YOLOv3 head level.
#[derive(Clone, Copy, Debug)]
pub struct YoloLevel {
    pub batch: u32,
    pub classes: u32,
    pub grid_h: u32,
    pub grid_w: u32,
    /// Stride of this level in input pixels (32, 16, 8).
    pub downsample: u32,
    /// The level's three anchors as (w, h) pairs, in input pixels.
    pub anchors: [f32; 6],
    pub scale_x_y: f32,
}

impl YoloLevel {
    /// The level's anchor cells (N * 3 * H * W, one kernel thread each), after
    /// checking that the head output `x` holds `5 + classes` values per cell;
    /// `output` names the per-cell result in errors.
    fn cells(&self, kernel: &'static str, output: &str, x: &DeviceBuffer) -> Result<u32, GpuError> {
        let cells = index_count(
            kernel,
            output,
            self.batch as usize * 3 * self.grid_h as usize * self.grid_w as usize,
        )?;
        need_len(
            kernel,
            "x",
            x.len(),
            cells as usize * (5 + self.classes as usize),
        )?;
        Ok(cells)
    }
}

/// Paddle `multiclass_nms` settings (YOLOv3: score 0.01, top_k 1000, keep 100, IoU 0.45).
#[derive(Clone, Copy, Debug)]
pub struct NmsOptions {
    pub score_thresh: f32,
    pub iou_thresh: f32,
    pub top_k: u32,
    pub keep_top_k: u32,
    /// 1 for Paddle's `normalized: false` (pixel boxes, +1 in widths), else 0.
    pub pixel_offset: f32,
    /// Added per class index to the coordinates so classes never overlap:
    /// more than the largest coordinate.
    pub class_offset: f32,
}
