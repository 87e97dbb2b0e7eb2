//! The launch methods on [`Gpu`](crate::Gpu), one module per operation,
//! mirroring the kernels in `gpu-kernels/device/src`: each checks its
//! arguments (extents against the geometry, sizes that fit the kernels'
//! `u32` indexing), converts core's geometry to the kernel's `u32`
//! arguments in one place, picks the launch shape and queues the kernel.
//! Nothing waits for the device unless it downloads.
//!
//! The shapes and checks are pure functions, tested here against the grid
//! emulator; the emulated driver runs every launch of `cargo test`.
use std::fmt;

use pulsefocus_gpu_device::reduce::REDUCE_THREADS;

use crate::driver::KernelArgs;
pub use crate::driver::LaunchShape;
use crate::DeviceBuffer;

pub mod batch_norm;
pub mod bbox_head_loss;
pub mod concat;
pub mod conv;
pub mod elementwise;
pub mod fc;
pub mod gemm;
pub mod global_avg_pool;
pub mod head_rows;
pub mod l2_norm;
pub mod mask_loss;
pub mod mask_paste;
pub mod nms;
pub mod polygon_masks;
pub mod pool;
pub mod proposals;
pub mod rcnn_detect;
pub mod reduce;
pub mod retina_box_loss;
pub mod retinanet;
pub mod retinanet_targets;
pub mod rmsprop;
pub mod roi_align;
pub mod rpn_loss;
pub mod rpn_targets;
pub mod sgd;
pub mod sigmoid_focal_loss;
pub mod ssd;
pub mod ssd_loss;
pub mod upsample;
pub mod yolo;

/// A bad kernel argument, caught before launch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanError {
    pub kernel: &'static str,
    pub message: String,
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "kernel {}: {}", self.kernel, self.message)
    }
}

impl std::error::Error for PlanError {}

pub(crate) fn fail<T>(kernel: &'static str, message: String) -> Result<T, PlanError> {
    Err(PlanError { kernel, message })
}

/// The input `x` and output `y` of a kernel whose thread reads `x[i]`
/// before it writes `y[i]` and touches no other element of either (the
/// activation and evaluation batch norm forwards): two buffers, or one
/// passed as both, which the kernel then overwrites in place.
pub enum InOut<'a> {
    Apart {
        x: &'a DeviceBuffer,
        y: &'a mut DeviceBuffer,
    },
    InPlace(&'a mut DeviceBuffer),
}

impl InOut<'_> {
    /// The buffers' names and lengths, for the argument checks.
    pub fn lens(&self) -> [(&'static str, usize); 2] {
        match self {
            InOut::Apart { x, y } => [("x", x.len()), ("y", y.len())],
            InOut::InPlace(xy) => [("x (in place)", xy.len()); 2],
        }
    }

    /// Adds `x`, `len` elements read.
    pub fn input(&self, args: &mut KernelArgs, len: usize) {
        match self {
            InOut::Apart { x, .. } => args.input(*x, len),
            InOut::InPlace(xy) => args.input(*xy, len),
        };
    }

    /// Adds `y`, `len` elements written.
    pub fn output(&mut self, args: &mut KernelArgs, len: usize) {
        match self {
            InOut::Apart { y, .. } => args.output(*y, len),
            InOut::InPlace(xy) => args.output(*xy, len),
        };
    }
}

/// Threads per block of the grid-stride kernels.
pub const ELEMENTWISE_THREADS: u32 = 256;
/// Enough blocks to fill the largest GPU; grid-stride loops cover the rest.
const MAX_ELEMENTWISE_BLOCKS: u32 = 4096;

/// `len` as a kernel's `u32` count or extent: kernels index with `u32`, so
/// every tensor must have fewer than 2^32 elements.
pub fn index_count(kernel: &'static str, arg: &str, len: usize) -> Result<u32, PlanError> {
    u32::try_from(len).or_else(|_| {
        fail(
            kernel,
            format!("{arg} has {len} elements; kernels index below 2^32"),
        )
    })
}

/// `arg` must hold at least `want` elements (buffers may be longer than the
/// tensor they hold: memory is planned for the largest shape and reused).
pub fn need_len(kernel: &'static str, arg: &str, got: usize, want: usize) -> Result<(), PlanError> {
    if got >= want {
        Ok(())
    } else {
        fail(
            kernel,
            format!("{arg} has {got} elements, needs at least {want}"),
        )
    }
}

/// Every buffer must hold at least `len` elements.
pub fn at_least(
    kernel: &'static str,
    buffers: &[(&str, usize)],
    len: usize,
) -> Result<(), PlanError> {
    for &(arg, got) in buffers {
        need_len(kernel, arg, got, len)?;
    }
    Ok(())
}

/// The element count of an elementwise kernel over the first `len`
/// elements of `buffers`, after checking that they hold them.
pub fn elementwise_len(
    kernel: &'static str,
    buffers: &[(&str, usize)],
    len: usize,
) -> Result<u32, PlanError> {
    let n = index_count(kernel, "len", len)?;
    at_least(kernel, buffers, len)?;
    Ok(n)
}

/// A 1-D grid-stride launch over `n` elements.
pub fn elementwise(n: u32) -> LaunchShape {
    let blocks = n
        .div_ceil(ELEMENTWISE_THREADS)
        .clamp(1, MAX_ELEMENTWISE_BLOCKS);
    LaunchShape {
        grid: (blocks, 1, 1),
        block: (ELEMENTWISE_THREADS, 1, 1),
    }
}

/// One `REDUCE_THREADS` block per item (channel, weight, ...).
pub fn block_per_item(kernel: &'static str, items: u32) -> Result<LaunchShape, PlanError> {
    if items == 0 || items > i32::MAX as u32 {
        return fail(kernel, format!("{items} blocks is outside 1..2^31"));
    }
    Ok(LaunchShape {
        grid: (items, 1, 1),
        block: (REDUCE_THREADS, 1, 1),
    })
}

/// The tiled matmul engine over a `rows x cols` result, `z` slices.
pub fn tiled(rows: u32, cols: u32, z: u32) -> LaunchShape {
    let (gx, gy) = pulsefocus_gpu_device::tile::grid_for(rows, cols);
    LaunchShape {
        grid: (gx, gy, z),
        block: (pulsefocus_gpu_device::tile::THREADS, 1, 1),
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers for the ops tests: an emulated GPU and host data.
    use crate::{DeviceBuffer, Gpu};

    pub fn gpu() -> Gpu {
        Gpu::emulated_with_memory(256 << 20).expect("emulated GPU")
    }

    /// Deterministic values in [-1, 1).
    pub fn values(len: usize, salt: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                ((i as u32)
                    .wrapping_mul(2654435761)
                    .wrapping_add(salt.wrapping_mul(40503))
                    % 2001) as f32
                    / 1000.0
                    - 1.0
            })
            .collect()
    }

    pub fn up(gpu: &Gpu, host: &[f32]) -> DeviceBuffer {
        gpu.upload(host).expect("upload")
    }

    pub fn down(gpu: &Gpu, buffer: &DeviceBuffer) -> Vec<f32> {
        gpu.download(buffer).expect("download")
    }
}
