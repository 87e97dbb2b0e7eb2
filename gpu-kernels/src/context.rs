//! One GPU ready to run the kernels: its context, a stream, the module JIT-
//! compiled from the embedded PTX, the kernel handles, and a memory pool.
use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream, DriverError};
use cudarc::nvrtc::Ptx;

use crate::device::{probe, GpuInfo};
use crate::plan::PlanError;
use crate::pool::MemoryPool;
use crate::PTX_SM53;

#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("no GPU: {0}")]
    Unavailable(String),
    #[error("loading the kernels (PTX for sm_53, JIT-compiled by the driver): {0}")]
    Module(DriverError),
    #[error("kernel {name} is missing from the PTX: {source}")]
    MissingKernel {
        name: &'static str,
        source: DriverError,
    },
    #[error("launching {kernel}: {source}")]
    Launch {
        kernel: &'static str,
        source: DriverError,
    },
    #[error("device memory: {0}")]
    Memory(DriverError),
    #[error(transparent)]
    Plan(#[from] PlanError),
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
    "sum_blocks",
    "channel_sum",
    "yolo_decode",
    "nms_candidate_keys",
    "bitonic_sort_step",
    "nms_bounds",
    "nms_suppress",
    "nms_rank_keys",
    "nms_keep_top",
    "nms_write",
];

pub struct Gpu {
    pub info: GpuInfo,
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) stream: Arc<CudaStream>,
    _module: Arc<CudaModule>,
    functions: HashMap<&'static str, CudaFunction>,
    pub pool: MemoryPool<f32>,
}

impl Gpu {
    /// Opens GPU 0 and loads the kernels; a clear error (never a panic) when
    /// there is no driver or no GPU.
    pub fn open() -> Result<Gpu, GpuError> {
        let info = probe().map_err(GpuError::Unavailable)?;
        let ctx =
            CudaContext::new(info.ordinal).map_err(|e| GpuError::Unavailable(e.to_string()))?;
        let stream = ctx
            .new_stream()
            .map_err(|e| GpuError::Unavailable(e.to_string()))?;
        let module = ctx
            .load_module(Ptx::from_src(PTX_SM53))
            .map_err(GpuError::Module)?;
        let mut functions = HashMap::new();
        for &name in KERNELS {
            let function = module
                .load_function(name)
                .map_err(|source| GpuError::MissingKernel { name, source })?;
            functions.insert(name, function);
        }
        let pool = MemoryPool::new(stream.clone());
        Ok(Gpu {
            info,
            ctx,
            stream,
            _module: module,
            functions,
            pool,
        })
    }

    pub(crate) fn function(&self, name: &'static str) -> &CudaFunction {
        // Every name in KERNELS was loaded in `open`; launch code uses only those.
        &self.functions[name]
    }

    /// Waits for all queued work.
    pub fn synchronize(&self) -> Result<(), GpuError> {
        self.stream
            .synchronize()
            .map_err(|source| GpuError::Launch {
                kernel: "(stream synchronize)",
                source,
            })
    }

    /// Free and total device memory, from the driver.
    pub fn memory_info(&self) -> Result<(usize, usize), GpuError> {
        self.ctx.mem_get_info().map_err(GpuError::Memory)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
