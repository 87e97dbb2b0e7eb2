//! The CUDA driver through cudarc: opening a context, a stream and the
//! module, then one driver call per [`Driver`] method. This file is the only
//! code that runs only on a real GPU (docs/gpu.md lists its calls).
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Arc;

use cudarc::driver::result;
use cudarc::driver::sys::CUresult;
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream};
use cudarc::nvrtc::Ptx;

use super::{DevicePtr, Driver, DriverError, KernelArgs, LaunchShape};
use crate::context::KERNELS;
use crate::device::GpuInfo;
use crate::{GpuError, PTX_SM53};

/// GPU `info.ordinal` with the kernels loaded.
pub struct CudaDriver {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    _module: Arc<CudaModule>,
    functions: HashMap<&'static str, CudaFunction>,
}

fn cuda_error(err: cudarc::driver::DriverError, requested: usize) -> DriverError {
    if err.0 == CUresult::CUDA_ERROR_OUT_OF_MEMORY {
        DriverError::OutOfMemory { requested }
    } else {
        DriverError::Device(err.to_string())
    }
}

fn other(err: cudarc::driver::DriverError) -> DriverError {
    cuda_error(err, 0)
}

impl CudaDriver {
    /// Opens the GPU and JIT-compiles the embedded PTX; every kernel in
    /// `KERNELS` must be in it.
    pub fn open(info: &GpuInfo) -> Result<CudaDriver, GpuError> {
        let ctx =
            CudaContext::new(info.ordinal).map_err(|e| GpuError::Unavailable(e.to_string()))?;
        let stream = ctx
            .new_stream()
            .map_err(|e| GpuError::Unavailable(e.to_string()))?;
        let module = ctx
            .load_module(Ptx::from_src(PTX_SM53))
            .map_err(|e| GpuError::Module(e.to_string()))?;
        let mut functions = HashMap::new();
        for &name in KERNELS {
            let function = module
                .load_function(name)
                .map_err(|e| GpuError::MissingKernel {
                    name,
                    message: e.to_string(),
                })?;
            functions.insert(name, function);
        }
        Ok(CudaDriver {
            ctx,
            stream,
            _module: module,
            functions,
        })
    }

    /// Makes the context current on the calling thread (the driver's
    /// allocation and query calls act on the current context).
    fn bind(&self) -> Result<(), DriverError> {
        self.ctx.bind_to_thread().map_err(other)
    }
}

impl Driver for CudaDriver {
    fn alloc(&self, bytes: usize) -> Result<DevicePtr, DriverError> {
        self.bind()?;
        // SAFETY: the contents are unspecified until a copy or kernel writes them.
        unsafe { result::malloc_sync(bytes) }.map_err(|e| cuda_error(e, bytes))
    }

    fn free(&self, ptr: DevicePtr) -> Result<(), DriverError> {
        self.bind()?;
        // SAFETY: the pool frees each allocation once, when nothing uses it.
        unsafe { result::free_sync(ptr) }.map_err(other)
    }

    fn copy_to_device(&self, src: &[u8], dst: DevicePtr) -> Result<(), DriverError> {
        self.bind()?;
        // SAFETY: `dst` holds `src.len()` bytes (the typed buffers check it);
        // a copy from pageable memory has read `src` when this returns.
        unsafe { result::memcpy_htod_async(dst, src, self.stream.cu_stream()) }.map_err(other)
    }

    fn copy_to_host(&self, src: DevicePtr, dst: &mut [u8]) -> Result<(), DriverError> {
        self.bind()?;
        // SAFETY: `src` holds `dst.len()` bytes; the stream is synchronised
        // before `dst` is used.
        unsafe { result::memcpy_dtoh_async(dst, src, self.stream.cu_stream()) }.map_err(other)?;
        self.synchronize()
    }

    fn copy_on_device(
        &self,
        src: DevicePtr,
        dst: DevicePtr,
        bytes: usize,
    ) -> Result<(), DriverError> {
        self.bind()?;
        // SAFETY: both hold `bytes` bytes.
        unsafe { result::memcpy_dtod_async(dst, src, bytes, self.stream.cu_stream()) }
            .map_err(other)
    }

    fn launch(
        &self,
        kernel: &'static str,
        shape: LaunchShape,
        args: &KernelArgs,
    ) -> Result<(), DriverError> {
        let Some(function) = self.functions.get(kernel) else {
            return Err(DriverError::Kernel {
                kernel,
                message: "not loaded from the PTX".into(),
            });
        };
        self.bind()?;
        let mut params: Vec<*mut c_void> = args
            .param_pointers()
            .into_iter()
            .map(|p| p as *mut c_void)
            .collect();
        // SAFETY: `params` point into `args`, alive until the call returns
        // (the driver copies parameter values at launch); the ops check the
        // arguments against the kernel's signature and extents.
        unsafe {
            result::launch_kernel(
                function.cu_function(),
                shape.grid,
                shape.block,
                0,
                self.stream.cu_stream(),
                &mut params,
            )
        }
        .map_err(|e| DriverError::Kernel {
            kernel,
            message: e.to_string(),
        })
    }

    fn synchronize(&self) -> Result<(), DriverError> {
        self.bind()?;
        // SAFETY: the stream lives as long as `self`.
        unsafe { result::stream::synchronize(self.stream.cu_stream()) }.map_err(other)
    }

    fn memory_info(&self) -> Result<(usize, usize), DriverError> {
        self.bind()?;
        result::mem_get_info().map_err(other)
    }
}
