//! Caching device-memory pool. Training allocates the same tensor sizes every
//! step; asking the driver each time (cuMemAlloc synchronises) would dominate
//! small steps, so freed buffers go to a free list keyed by size class and
//! are handed out again. The pool also tracks the peak in-use and held
//! bytes, which `bench train-step` reports as the device-memory peak.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaSlice, CudaStream, DeviceRepr, DriverError};

/// The capacity (in elements) a request of `len` elements gets: exact
/// multiples of 256 up to 64 Ki elements, then eight classes per power of
/// two, so that reuse is likely and the waste stays under 12.5%.
pub fn size_class(len: usize) -> usize {
    const SMALL: usize = 1 << 16;
    if len <= SMALL {
        len.max(1).next_multiple_of(256)
    } else {
        let step = len.next_power_of_two() / 8;
        len.next_multiple_of(step)
    }
}

/// Bytes the pool holds from the driver and hands out, now and at peak.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub in_use_bytes: usize,
    pub held_bytes: usize,
    pub peak_in_use_bytes: usize,
    pub peak_held_bytes: usize,
}

struct Shelves<T> {
    free: HashMap<usize, Vec<CudaSlice<T>>>,
    stats: PoolStats,
}

/// A pool of device buffers of element type `T` on one stream.
pub struct MemoryPool<T> {
    stream: Arc<CudaStream>,
    shelves: Arc<Mutex<Shelves<T>>>,
}

/// A pooled device buffer of `len` elements (its capacity may be larger);
/// dropping it returns the memory to the pool, not to the driver.
pub struct DeviceBuffer<T: DeviceRepr = f32> {
    slice: Option<CudaSlice<T>>,
    len: usize,
    shelves: Arc<Mutex<Shelves<T>>>,
}

impl<T: DeviceRepr> MemoryPool<T> {
    pub fn new(stream: Arc<CudaStream>) -> MemoryPool<T> {
        MemoryPool {
            stream,
            shelves: Arc::new(Mutex::new(Shelves {
                free: HashMap::new(),
                stats: PoolStats::default(),
            })),
        }
    }

    /// A buffer of `len` elements with unspecified contents.
    pub fn alloc(&self, len: usize) -> Result<DeviceBuffer<T>, DriverError> {
        let class = size_class(len);
        let bytes = class * std::mem::size_of::<T>();
        let mut shelves = self.shelves.lock().expect("pool lock");
        let reused = shelves.free.get_mut(&class).and_then(Vec::pop);
        let slice = match reused {
            Some(slice) => slice,
            None => {
                // SAFETY: contents are unspecified until a kernel or copy writes them.
                let fresh = unsafe { self.stream.alloc::<T>(class) };
                let slice = match fresh {
                    Ok(slice) => slice,
                    // Out of memory: give the cached buffers back and try once more.
                    Err(_) => {
                        let cached: usize = shelves
                            .free
                            .drain()
                            .flat_map(|(_, v)| v)
                            .map(|s| s.num_bytes())
                            .sum();
                        shelves.stats.held_bytes -= cached;
                        unsafe { self.stream.alloc::<T>(class) }?
                    }
                };
                shelves.stats.held_bytes += bytes;
                shelves.stats.peak_held_bytes =
                    shelves.stats.peak_held_bytes.max(shelves.stats.held_bytes);
                slice
            }
        };
        shelves.stats.in_use_bytes += bytes;
        shelves.stats.peak_in_use_bytes = shelves
            .stats
            .peak_in_use_bytes
            .max(shelves.stats.in_use_bytes);
        Ok(DeviceBuffer {
            slice: Some(slice),
            len,
            shelves: self.shelves.clone(),
        })
    }

    /// A buffer holding a copy of `host`.
    pub fn upload(&self, host: &[T]) -> Result<DeviceBuffer<T>, DriverError> {
        let mut buffer = self.alloc(host.len())?;
        let mut view = buffer.slice_mut().slice_mut(0..host.len());
        self.stream.memcpy_htod(host, &mut view)?;
        Ok(buffer)
    }

    /// The buffer's `len` elements, copied back (waits for the stream).
    pub fn download(&self, buffer: &DeviceBuffer<T>) -> Result<Vec<T>, DriverError>
    where
        T: Clone + Default,
    {
        let mut host = vec![T::default(); buffer.len];
        self.stream
            .memcpy_dtoh(&buffer.slice().slice(0..buffer.len), &mut host)?;
        Ok(host)
    }

    pub fn stats(&self) -> PoolStats {
        self.shelves.lock().expect("pool lock").stats
    }
}

impl<T: DeviceRepr> DeviceBuffer<T> {
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The underlying allocation (kernel argument).
    pub fn slice(&self) -> &CudaSlice<T> {
        self.slice.as_ref().expect("live buffer")
    }
    pub fn slice_mut(&mut self) -> &mut CudaSlice<T> {
        self.slice.as_mut().expect("live buffer")
    }
}

impl<T: DeviceRepr> Drop for DeviceBuffer<T> {
    fn drop(&mut self) {
        if let Some(slice) = self.slice.take() {
            let mut shelves = self.shelves.lock().expect("pool lock");
            shelves.stats.in_use_bytes -= slice.num_bytes();
            shelves.free.entry(slice.len()).or_default().push(slice);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn size_classes_fit_and_waste_little(len in 0usize..50_000_000) {
            let class = size_class(len);
            prop_assert!(class >= len.max(1));
            prop_assert!(class - len < 256 || (class - len) * 8 <= len.next_power_of_two());
            // Classes are stable: a class maps to itself, so reuse is exact.
            prop_assert_eq!(size_class(class), class);
        }
    }
}
