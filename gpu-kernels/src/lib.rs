//! GPU backend: kernels written in Rust, compiled to PTX, launched through the
//! CUDA driver loaded at run time (so the same binary runs without any NVIDIA
//! library).
//!
//! - [`device`]: `--device auto|cpu|gpu` resolution (probes for the driver
//!   and a GPU without ever failing on a machine that has neither).
//! - [`Gpu`]: a context, one stream, the module loaded from the embedded PTX,
//!   and a caching memory [`pool`].
//! - [`GpuBackend`]: the core `Backend` trait on top of the launch methods.
//! - [`plan`]: argument checks and grid/block sizes for every kernel, pure
//!   functions tested here against the device crate's CPU grid emulator; the
//!   launch methods on [`Gpu`] (in [`launch`]) only add the driver call.
//!
//! The kernels themselves live in the `pulsefocus-gpu-device` crate
//! (`gpu-kernels/device`), built to `ptx/kernels_sm53.ptx` by `build-ptx.sh`.

pub mod backend;
pub mod context;
pub mod device;
pub mod launch;
pub mod plan;
pub mod pool;

pub use backend::GpuBackend;
pub use context::{Gpu, GpuError};
pub use device::{DeviceRequest, GpuInfo, SelectedDevice};
pub use launch::{Act, BnShape, PoolShape};
pub use pool::{DeviceBuffer, MemoryPool, PoolStats};

/// The kernels for every GPU from sm_53 (Jetson Nano) up; newer GPUs
/// JIT-compile it when the module loads.
pub const PTX_SM53: &str = include_str!("../ptx/kernels_sm53.ptx");
