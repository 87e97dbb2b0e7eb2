//! One GPU ready to run the kernels: a [`Driver`] (CUDA, or the emulator)
//! and a memory pool over it, plus the memory operations every kernel
//! launch builds on. The launch methods themselves are in [`crate::ops`],
//! one module per operation.
use std::sync::Arc;

use crate::device::{probe, GpuInfo};
use crate::driver::cuda::CudaDriver;
use crate::driver::emulated::EmulatedDriver;
use crate::driver::{
    as_bytes, as_bytes_mut, Driver, DriverError, Element, KernelArgs, LaunchShape,
};
use crate::ops::{need_len, PlanError};
use crate::pool::{DeviceBuffer, MemoryPool};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GpuError {
    #[error("no GPU: {0}")]
    Unavailable(String),
    #[error("the emulated GPU: {0}")]
    Emulator(String),
    #[error("loading the kernels (PTX for sm_53, JIT-compiled by the driver): {0}")]
    Module(String),
    #[error("kernel {name} is missing from the PTX: {message}")]
    MissingKernel { name: &'static str, message: String },
    /// Out of device memory even after the pool gave its cache back.
    #[error(
        "out of GPU memory: need {:.1} MiB for a buffer of {floats} floats, {:.1} MiB free",
        mib(*bytes),
        mib(*free)
    )]
    OutOfMemory {
        bytes: usize,
        floats: usize,
        free: usize,
    },
    #[error("{what}: {source}")]
    Driver {
        what: &'static str,
        source: DriverError,
    },
    #[error(transparent)]
    Plan(#[from] PlanError),
}

/// Bytes in MiB (shown to one decimal: small buffers on small devices
/// matter too).
fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// Every kernel entry point in the PTX, loaded when the GPU is opened (a
/// missing one is an error then, not in the middle of training).
pub const KERNELS: &[&str] = &[
    "activation_forward",
    "activation_backward",
    "scale",
    "sigmoid_forward",
    "sigmoid_backward",
    "add",
    "axpy",
    "fill",
    "momentum_sgd",
    "rmsprop",
    "gemm",
    "conv2d_forward",
    "conv2d_backward_data",
    "conv2d_backward_filter",
    "depthwise_conv2d_forward",
    "depthwise_conv2d_backward_data",
    "depthwise_conv2d_backward_filter",
    "batch_norm_train_forward",
    "batch_norm_train_backward",
    "batch_norm_eval_forward",
    "batch_norm_eval_backward",
    "max_pool_forward",
    "max_pool_backward",
    "upsample_nearest_forward",
    "upsample_nearest_backward",
    "copy_channels",
    "head_rows_forward",
    "head_rows_backward",
    "l2_norm_forward",
    "l2_norm_backward_data",
    "l2_norm_backward_scale",
    "roi_align_forward",
    "roi_align_backward",
    "fc_forward",
    "global_avg_pool_forward",
    "global_avg_pool_backward",
    "sigmoid_focal_loss",
    "mask_loss",
    "mask_paste",
    "polygon_masks",
    "sum_blocks",
    "channel_sum",
    "yolo_decode",
    "ssd_decode",
    "softmax_rows",
    "ssd_match",
    "ssd_mining_keys",
    "ssd_select_negatives",
    "ssd_loss_rows",
    "nms_count_candidates",
    "nms_compact_candidates",
    "bitonic_sort_step",
    "nms_bounds",
    "nms_suppress",
    "nms_rank_keys",
    "nms_keep_top",
    "nms_write",
    "proposal_keys",
    "proposal_decode",
    "rcnn_decode",
    "rcnn_order_keys",
    "rcnn_write",
    "retina_box_loss",
    "retina_count_candidates",
    "retina_compact_candidates",
    "retina_decode",
    "retina_write",
    "gt_best_overlap_blocks",
    "gt_best_overlaps",
    "retina_target_rows",
    "retina_fg_num",
    "rpn_loss_anchors",
    "rpn_anchor_candidates",
    "rpn_sample",
    "bbox_loss_rows",
];

/// The environment variable that makes `--device gpu|auto` open the
/// emulated device.
pub const EMULATOR_VAR: &str = "PULSEFOCUS_GPU_EMULATOR";

/// Whether `PULSEFOCUS_GPU_EMULATOR=1` is set.
pub fn emulator_requested() -> bool {
    std::env::var(EMULATOR_VAR).as_deref() == Ok("1")
}

pub struct Gpu {
    pub info: GpuInfo,
    /// Runs on the CPU grid emulator, not a GPU.
    pub emulated: bool,
    driver: Arc<dyn Driver>,
    pub pool: MemoryPool<dyn Driver>,
}

impl Gpu {
    /// Opens GPU 0 and loads the kernels; a clear error (never a panic) when
    /// there is no driver or no GPU.
    pub fn open() -> Result<Gpu, GpuError> {
        let info = probe().map_err(GpuError::Unavailable)?;
        let driver = CudaDriver::open(&info)?;
        Ok(Gpu::with_driver(info, false, Arc::new(driver)))
    }

    /// The emulated device (memory from `PULSEFOCUS_GPU_EMULATOR_MEMORY`,
    /// else 4 GiB): the same host code, kernels on the CPU grid emulator.
    pub fn emulated() -> Result<Gpu, GpuError> {
        let memory = EmulatedDriver::memory_from_env().map_err(GpuError::Emulator)?;
        Gpu::emulated_with_memory(memory)
    }

    pub fn emulated_with_memory(memory: usize) -> Result<Gpu, GpuError> {
        let driver = EmulatedDriver::new(memory).map_err(GpuError::Emulator)?;
        let info = GpuInfo {
            ordinal: 0,
            name: "emulated GPU".into(),
            compute_capability: (5, 3),
            total_memory: memory,
        };
        Ok(Gpu::with_driver(info, true, Arc::new(driver)))
    }

    /// `Gpu::emulated` when `PULSEFOCUS_GPU_EMULATOR=1`, else `Gpu::open`.
    pub fn open_requested() -> Result<Gpu, GpuError> {
        if emulator_requested() {
            Gpu::emulated()
        } else {
            Gpu::open()
        }
    }

    fn with_driver(info: GpuInfo, emulated: bool, driver: Arc<dyn Driver>) -> Gpu {
        let pool = MemoryPool::new(driver.clone());
        Gpu {
            info,
            emulated,
            driver,
            pool,
        }
    }

    pub fn driver(&self) -> &dyn Driver {
        &*self.driver
    }

    /// Queues `kernel` (its PTX entry name) over `shape`.
    pub fn launch(
        &self,
        kernel: &'static str,
        shape: LaunchShape,
        args: &KernelArgs,
    ) -> Result<(), GpuError> {
        self.driver
            .launch(kernel, shape, args)
            .map_err(|source| GpuError::Driver {
                what: "launch",
                source,
            })
    }

    /// Waits for all queued work.
    pub fn synchronize(&self) -> Result<(), GpuError> {
        self.driver
            .synchronize()
            .map_err(|source| GpuError::Driver {
                what: "synchronising the stream",
                source,
            })
    }

    /// Free and total device memory, from the driver.
    pub fn memory_info(&self) -> Result<(usize, usize), GpuError> {
        self.driver
            .memory_info()
            .map_err(|source| GpuError::Driver {
                what: "device memory",
                source,
            })
    }

    /// A pooled buffer of `len` elements, contents unspecified; out of
    /// memory says how much was needed and how much the driver has free.
    pub fn alloc<T: Element>(&self, len: usize) -> Result<DeviceBuffer<T>, GpuError> {
        self.pool
            .alloc(len)
            .map_err(|source| self.memory_error(len, source))
    }

    fn memory_error(&self, len: usize, source: DriverError) -> GpuError {
        match source {
            DriverError::OutOfMemory { requested } => GpuError::OutOfMemory {
                bytes: requested,
                floats: len,
                free: self.memory_info().map(|(free, _)| free).unwrap_or(0),
            },
            source => GpuError::Driver {
                what: "allocating device memory",
                source,
            },
        }
    }

    /// A zero-filled pooled buffer.
    pub fn zeros(&self, len: usize) -> Result<DeviceBuffer, GpuError> {
        let mut buffer = self.alloc(len)?;
        if len > 0 {
            self.fill(len, &mut buffer, 0.0)?;
        }
        Ok(buffer)
    }

    /// A pooled buffer holding `host`.
    pub fn upload<T: Element>(&self, host: &[T]) -> Result<DeviceBuffer<T>, GpuError> {
        let mut buffer = self.alloc(host.len())?;
        self.upload_into(host, &mut buffer)?;
        Ok(buffer)
    }

    /// The buffer's elements (waits for the stream).
    pub fn download<T: Element>(&self, buffer: &DeviceBuffer<T>) -> Result<Vec<T>, GpuError> {
        let mut host = vec![T::default(); buffer.len()];
        self.download_into(buffer, &mut host)?;
        Ok(host)
    }

    /// `dst[..src.len()] = src` (host to device).
    pub fn upload_into<T: Element>(
        &self,
        src: &[T],
        dst: &mut DeviceBuffer<T>,
    ) -> Result<(), GpuError> {
        need_len("upload", "dst", dst.len(), src.len())?;
        if src.is_empty() {
            return Ok(());
        }
        self.driver
            .copy_to_device(as_bytes(src), dst.device_ptr())
            .map_err(|source| GpuError::Driver {
                what: "copying to the device",
                source,
            })
    }

    /// `dst = src[..dst.len()]` (device to host; waits for the stream).
    pub fn download_into<T: Element>(
        &self,
        src: &DeviceBuffer<T>,
        dst: &mut [T],
    ) -> Result<(), GpuError> {
        need_len("download", "src", src.len(), dst.len())?;
        if dst.is_empty() {
            return Ok(());
        }
        self.driver
            .copy_to_host(src.device_ptr(), as_bytes_mut(dst))
            .map_err(|source| GpuError::Driver {
                what: "copying to the host",
                source,
            })
    }

    /// `dst[..len] = src[..len]` on the device.
    pub fn copy(
        &self,
        len: usize,
        src: &DeviceBuffer,
        dst: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        need_len("copy", "src", src.len(), len)?;
        need_len("copy", "dst", dst.len(), len)?;
        if len == 0 {
            return Ok(());
        }
        self.driver
            .copy_on_device(src.device_ptr(), dst.device_ptr(), 4 * len)
            .map_err(|source| GpuError::Driver {
                what: "copying on the device",
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PTX_SM53;

    #[test]
    fn every_listed_kernel_is_an_entry_point_of_the_embedded_ptx() {
        let entries: Vec<&str> = PTX_SM53
            .lines()
            .filter_map(|l| l.strip_prefix(".visible .entry "))
            .map(|l| l.trim_end_matches('(').trim())
            .collect();
        for name in KERNELS {
            assert!(entries.contains(name), "{name} missing from the PTX");
        }
        assert_eq!(
            entries.len(),
            KERNELS.len(),
            "PTX entry points not listed in KERNELS: {entries:?}"
        );
    }

    #[test]
    fn ptx_header_records_the_compiler_and_baseline() {
        let header: Vec<&str> = PTX_SM53.lines().take(2).collect();
        assert!(header[1].starts_with("// Compiler: rustc "), "{header:?}");
        assert!(PTX_SM53.contains("\n.target sm_53\n"));
    }

    #[test]
    fn opening_without_a_gpu_is_an_error_not_a_panic() {
        if crate::device::probe().is_err() {
            let err = Gpu::open().err().expect("no GPU here");
            assert!(err.to_string().starts_with("no GPU: "), "{err}");
        }
    }

    #[test]
    fn out_of_memory_says_what_was_needed_and_what_is_free() {
        let gpu = Gpu::emulated_with_memory(3 << 20).unwrap();
        let _held = gpu.zeros(1 << 19).unwrap();
        let err = gpu.alloc::<f32>(1 << 20).err().unwrap();
        assert_eq!(
            err.to_string(),
            "out of GPU memory: need 4.0 MiB for a buffer of 1048576 floats, 1.0 MiB free"
        );
    }

    #[test]
    fn memory_round_trips() {
        let gpu = Gpu::emulated_with_memory(1 << 20).unwrap();
        let a = gpu.upload(&[1.0f32, 2.0, 3.0, 4.0]).unwrap();
        let mut b = gpu.zeros(6).unwrap();
        gpu.copy(3, &a, &mut b).unwrap();
        assert_eq!(gpu.download(&b).unwrap(), [1.0, 2.0, 3.0, 0.0, 0.0, 0.0]);
        let mut two = [0.0f32; 2];
        gpu.download_into(&a, &mut two).unwrap();
        assert_eq!(two, [1.0, 2.0]);
        assert_eq!(
            gpu.copy(7, &a, &mut b).unwrap_err().to_string(),
            "kernel copy: src has 4 elements, needs at least 7"
        );
    }
}
