//! The device interface every GPU operation goes through: raw device memory
//! (addresses as `u64`), copies, kernel launches by PTX entry name with a
//! packed parameter list, synchronisation and the memory figures.
//!
//! Two implementations:
//! - [`cuda::CudaDriver`]: one cudarc call per method; the only code that
//!   runs only on a real GPU (listed in docs/gpu.md);
//! - [`emulated::EmulatedDriver`]: buffers in host memory, each launch
//!   checked against the committed PTX's `.entry` signatures and run by the
//!   device crate's grid emulator (`PULSEFOCUS_GPU_EMULATOR=1`).
//!
//! Everything above them (the memory pool, argument checks and packing,
//! launch shapes) is shared, so `cargo test` runs it without a GPU.
use std::fmt;

use crate::pool::DeviceBuffer;

pub mod cuda;
pub mod emulated;

/// A device address (the host address of the buffer under the emulator).
pub type DevicePtr = u64;

/// What a driver call can report.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DriverError {
    #[error("out of device memory ({requested} bytes requested)")]
    OutOfMemory { requested: usize },
    /// A launch the device refused or that failed (the ABI checks of the
    /// emulator, a fault, a driver error), naming the kernel.
    #[error("kernel {kernel}: {message}")]
    Kernel {
        kernel: &'static str,
        message: String,
    },
    #[error("{0}")]
    Device(String),
}

/// Grid and block extents (x, y, z).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchShape {
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
}

/// How a kernel uses one parameter: a scalar, or a device pointer through
/// which it touches `bytes` bytes (reading, or writing too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgKind {
    Scalar,
    Pointer { bytes: usize, writes: bool },
}

/// A kernel's parameters, packed as the driver passes them: each value in
/// its own 8-byte slot (little-endian, so a 4-byte parameter is the slot's
/// first four bytes), with its size in bytes and how the kernel uses it.
#[derive(Clone, Debug, Default)]
pub struct KernelArgs {
    slots: Vec<u64>,
    sizes: Vec<usize>,
    kinds: Vec<ArgKind>,
}

impl KernelArgs {
    pub fn new() -> KernelArgs {
        KernelArgs::default()
    }

    fn push(&mut self, slot: u64, size: usize, kind: ArgKind) -> &mut KernelArgs {
        self.slots.push(slot);
        self.sizes.push(size);
        self.kinds.push(kind);
        self
    }

    pub fn u32(&mut self, value: u32) -> &mut KernelArgs {
        self.push(value as u64, 4, ArgKind::Scalar)
    }

    pub fn f32(&mut self, value: f32) -> &mut KernelArgs {
        self.push(value.to_bits() as u64, 4, ArgKind::Scalar)
    }

    /// A buffer the kernel reads, `len` elements of it from the start.
    pub fn input<T>(&mut self, buffer: &DeviceBuffer<T>, len: usize) -> &mut KernelArgs {
        let bytes = len * std::mem::size_of::<T>();
        self.push(
            buffer.device_ptr(),
            8,
            ArgKind::Pointer {
                bytes,
                writes: false,
            },
        )
    }

    /// A buffer the kernel writes (and may read), `len` elements of it.
    pub fn output<T>(&mut self, buffer: &mut DeviceBuffer<T>, len: usize) -> &mut KernelArgs {
        let bytes = len * std::mem::size_of::<T>();
        self.push(
            buffer.device_ptr(),
            8,
            ArgKind::Pointer {
                bytes,
                writes: true,
            },
        )
    }

    /// The null pointer of an optional buffer.
    pub fn null(&mut self) -> &mut KernelArgs {
        self.push(
            0,
            8,
            ArgKind::Pointer {
                bytes: 0,
                writes: false,
            },
        )
    }

    /// A raw slot, for tests of the ABI checks.
    pub fn raw(&mut self, slot: u64, size: usize, kind: ArgKind) -> &mut KernelArgs {
        self.push(slot, size, kind)
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
    pub fn size(&self, index: usize) -> usize {
        self.sizes[index]
    }
    pub fn kind(&self, index: usize) -> ArgKind {
        self.kinds[index]
    }
    /// The parameter's value as a 64-bit slot (a pointer's address).
    pub fn slot(&self, index: usize) -> u64 {
        self.slots[index]
    }

    /// One pointer per parameter to its bytes: `cuLaunchKernel`'s
    /// `kernelParams`. Valid while `self` is neither moved nor changed.
    pub fn param_pointers(&self) -> Vec<*const u8> {
        self.slots
            .iter()
            .map(|slot| slot as *const u64 as *const u8)
            .collect()
    }
}

/// An element type of device buffers: plain data, copied as bytes.
///
/// # Safety
/// Every bit pattern of `size_of::<Self>()` bytes is a valid value.
pub unsafe trait Element: Copy + Default + Send + Sync + 'static {}
unsafe impl Element for f32 {}
unsafe impl Element for u32 {}
unsafe impl Element for u64 {}

pub fn as_bytes<T: Element>(values: &[T]) -> &[u8] {
    // SAFETY: Element types are plain data with no padding.
    unsafe {
        std::slice::from_raw_parts(values.as_ptr() as *const u8, std::mem::size_of_val(values))
    }
}

pub fn as_bytes_mut<T: Element>(values: &mut [T]) -> &mut [u8] {
    // SAFETY: as above, and every bit pattern is a valid `T`.
    unsafe {
        std::slice::from_raw_parts_mut(
            values.as_mut_ptr() as *mut u8,
            std::mem::size_of_val(values),
        )
    }
}

/// A device the host code runs on (see the module comment).
///
/// Addresses passed in come from `alloc` of the same driver and stay inside
/// the allocation; the pool and the typed buffers above keep that promise,
/// and the emulator checks it.
pub trait Driver: Send + Sync {
    /// `bytes` bytes of uninitialised device memory.
    fn alloc(&self, bytes: usize) -> Result<DevicePtr, DriverError>;
    /// Gives back an allocation; nothing may use it afterwards.
    fn free(&self, ptr: DevicePtr) -> Result<(), DriverError>;
    /// Host to device, queued on the stream.
    fn copy_to_device(&self, src: &[u8], dst: DevicePtr) -> Result<(), DriverError>;
    /// Device to host; waits for the stream first.
    fn copy_to_host(&self, src: DevicePtr, dst: &mut [u8]) -> Result<(), DriverError>;
    /// Device to device, queued on the stream.
    fn copy_on_device(
        &self,
        src: DevicePtr,
        dst: DevicePtr,
        bytes: usize,
    ) -> Result<(), DriverError>;
    /// Queues kernel `kernel` (its PTX entry name) over `shape`.
    fn launch(
        &self,
        kernel: &'static str,
        shape: LaunchShape,
        args: &KernelArgs,
    ) -> Result<(), DriverError>;
    /// Waits for everything queued.
    fn synchronize(&self) -> Result<(), DriverError>;
    /// (free, total) device memory in bytes.
    fn memory_info(&self) -> Result<(usize, usize), DriverError>;
}

impl fmt::Display for LaunchShape {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let (g, b) = (self.grid, self.block);
        write!(
            f,
            "grid ({}, {}, {}) block ({}, {}, {})",
            g.0, g.1, g.2, b.0, b.1, b.2
        )
    }
}
