//! GPU backend: kernels written in Rust, compiled to PTX, launched through a
//! small device interface with two implementations: the CUDA driver loaded
//! at run time (so the same binary runs without any NVIDIA library), and an
//! emulator that runs the same launches on the CPU.
//!
//! - [`device`]: `--device auto|cpu|gpu` resolution (probes for the driver
//!   and a GPU without ever failing on a machine that has neither;
//!   `PULSEFOCUS_GPU_EMULATOR=1` selects the emulated device).
//! - [`driver`]: the device interface, [`driver::cuda`] and
//!   [`driver::emulated`] (which checks each launch against the PTX).
//! - [`Gpu`]: a driver and a caching memory [`pool`] over it.
//! - [`ops`]: one module per operation, mirroring `gpu-kernels/device/src`:
//!   argument checks, launch shape and launch side by side.
//! - [`GpuBackend`]: the core `Backend` trait on top of the ops, recording
//!   the first failure instead of panicking.
//!
//! The kernels themselves live in the `pulsefocus-gpu-device` crate
//! (`gpu-kernels/device`), built to `ptx/kernels_sm53.ptx` by `build-ptx.sh`.

pub mod backend;
pub mod context;
pub mod device;
pub mod driver;
pub mod ops;
pub mod pool;

pub use backend::GpuBackend;
pub use context::{Gpu, GpuError};
pub use device::{DeviceRequest, GpuInfo, SelectedDevice};
pub use ops::gemm::Strides;
pub use ops::PlanError;
pub use pool::{DeviceBuffer, MemoryPool, PoolStats};

/// The kernels for every GPU from sm_53 (Jetson Nano) up; newer GPUs
/// JIT-compile it when the module loads.
pub const PTX_SM53: &str = include_str!("../ptx/kernels_sm53.ptx");
