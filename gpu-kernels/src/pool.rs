//! Caching device-memory pool over any [`Driver`]. Training allocates the
//! same tensor sizes every step; asking the driver each time (cuMemAlloc
//! synchronises) would dominate small steps, so freed buffers go to a free
//! list keyed by size class and are handed out again. The pool also tracks
//! the peak in-use and held bytes, which `bench train-step` reports as the
//! device-memory peak.
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::driver::{DevicePtr, Driver, DriverError, Element};

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

/// Free allocations by size in bytes, and the figures.
#[derive(Default)]
struct Shelves {
    free: HashMap<usize, Vec<DevicePtr>>,
    stats: PoolStats,
}

struct Shared<D: Driver + ?Sized> {
    driver: Arc<D>,
    shelves: Mutex<Shelves>,
}

impl<D: Driver + ?Sized> Shared<D> {
    fn shelves(&self) -> MutexGuard<'_, Shelves> {
        // Every change under the lock is complete before it can panic.
        self.shelves.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Where a dropped buffer's memory goes back to.
trait Recycle: Send + Sync {
    fn recycle(&self, ptr: DevicePtr, bytes: usize);
}

impl<D: Driver + ?Sized> Recycle for Shared<D> {
    fn recycle(&self, ptr: DevicePtr, bytes: usize) {
        let mut shelves = self.shelves();
        shelves.stats.in_use_bytes -= bytes;
        shelves.free.entry(bytes).or_default().push(ptr);
    }
}

impl<D: Driver + ?Sized> Drop for Shared<D> {
    fn drop(&mut self) {
        // Only cached buffers are left: each live one holds this alive.
        let shelves = self.shelves.get_mut().unwrap_or_else(|e| e.into_inner());
        for (_, ptrs) in shelves.free.drain() {
            for ptr in ptrs {
                // Nothing to report to at teardown.
                let _ = self.driver.free(ptr);
            }
        }
    }
}

/// A pool of device buffers on driver `D`.
pub struct MemoryPool<D: Driver + ?Sized> {
    shared: Arc<Shared<D>>,
}

/// A pooled device buffer of `len` elements of `T` (its capacity may be
/// larger); dropping it returns the memory to the pool, not to the driver.
/// A buffer without memory (after a failed allocation) has address 0; the
/// GPU backend stops launching once an operation has failed.
pub struct DeviceBuffer<T = f32> {
    ptr: DevicePtr,
    len: usize,
    bytes: usize,
    pool: Option<Arc<dyn Recycle>>,
    _element: PhantomData<T>,
}

impl<D: Driver + ?Sized + 'static> MemoryPool<D> {
    pub fn new(driver: Arc<D>) -> MemoryPool<D> {
        MemoryPool {
            shared: Arc::new(Shared {
                driver,
                shelves: Mutex::new(Shelves::default()),
            }),
        }
    }

    pub fn driver(&self) -> &D {
        &self.shared.driver
    }

    /// A buffer of `len` elements with unspecified contents.
    pub fn alloc<T: Element>(&self, len: usize) -> Result<DeviceBuffer<T>, DriverError> {
        let bytes = size_class(len) * std::mem::size_of::<T>();
        let mut shelves = self.shared.shelves();
        let reused = shelves.free.get_mut(&bytes).and_then(Vec::pop);
        let ptr = match reused {
            Some(ptr) => ptr,
            None => {
                let ptr = match self.shared.driver.alloc(bytes) {
                    Ok(ptr) => ptr,
                    // Out of memory: give the cached buffers back and try once more.
                    Err(DriverError::OutOfMemory { .. }) => {
                        let cached: Vec<(usize, DevicePtr)> = shelves
                            .free
                            .drain()
                            .flat_map(|(bytes, ptrs)| ptrs.into_iter().map(move |p| (bytes, p)))
                            .collect();
                        for (bytes, ptr) in cached {
                            shelves.stats.held_bytes -= bytes;
                            self.shared.driver.free(ptr)?;
                        }
                        self.shared.driver.alloc(bytes)?
                    }
                    Err(other) => return Err(other),
                };
                shelves.stats.held_bytes += bytes;
                shelves.stats.peak_held_bytes =
                    shelves.stats.peak_held_bytes.max(shelves.stats.held_bytes);
                ptr
            }
        };
        shelves.stats.in_use_bytes += bytes;
        shelves.stats.peak_in_use_bytes = shelves
            .stats
            .peak_in_use_bytes
            .max(shelves.stats.in_use_bytes);
        let pool: Arc<dyn Recycle> = self.shared.clone();
        Ok(DeviceBuffer {
            ptr,
            len,
            bytes,
            pool: Some(pool),
            _element: PhantomData,
        })
    }

    /// A buffer holding a copy of `host`.
    pub fn upload<T: Element>(&self, host: &[T]) -> Result<DeviceBuffer<T>, DriverError> {
        let buffer = self.alloc(host.len())?;
        self.shared
            .driver
            .copy_to_device(crate::driver::as_bytes(host), buffer.ptr)?;
        Ok(buffer)
    }

    /// The buffer's `len` elements, copied back (waits for the stream).
    pub fn download<T: Element>(&self, buffer: &DeviceBuffer<T>) -> Result<Vec<T>, DriverError> {
        let mut host = vec![T::default(); buffer.len];
        if buffer.ptr != 0 {
            self.shared
                .driver
                .copy_to_host(buffer.ptr, crate::driver::as_bytes_mut(&mut host))?;
        }
        Ok(host)
    }

    pub fn stats(&self) -> PoolStats {
        self.shared.shelves().stats
    }
}

impl<T> DeviceBuffer<T> {
    /// A buffer of `len` elements with no memory behind it (what a failed
    /// allocation leaves, so that the caller can go on until it checks).
    pub fn without_memory(len: usize) -> DeviceBuffer<T> {
        DeviceBuffer {
            ptr: 0,
            len,
            bytes: 0,
            pool: None,
            _element: PhantomData,
        }
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The device address (a kernel argument); 0 without memory.
    pub fn device_ptr(&self) -> DevicePtr {
        self.ptr
    }
    pub fn has_memory(&self) -> bool {
        self.pool.is_some()
    }
}

impl<T> Drop for DeviceBuffer<T> {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.recycle(self.ptr, self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::emulated::EmulatedDriver;
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

    #[test]
    fn reuses_freed_buffers_and_frees_the_cache_when_memory_runs_out() {
        let driver = Arc::new(EmulatedDriver::new(64 << 10).unwrap());
        let pool = MemoryPool::new(driver.clone());
        let a = pool.upload(&[1.0f32, 2.0, 3.0]).unwrap();
        assert_eq!(pool.download(&a).unwrap(), [1.0, 2.0, 3.0]);
        let first = a.device_ptr();
        drop(a);
        // Same class: the same memory, without asking the driver.
        let b = pool.alloc::<f32>(200).unwrap();
        assert_eq!(b.device_ptr(), first);
        let stats = pool.stats();
        assert_eq!((stats.in_use_bytes, stats.held_bytes), (1024, 1024));
        drop(b);
        // 48 KiB of cached 1 KiB buffers, then a 32 KiB request: it fits
        // only once the cache is given back.
        let small: Vec<DeviceBuffer> = (0..48).map(|_| pool.alloc(256).unwrap()).collect();
        drop(small);
        assert_eq!(pool.stats().held_bytes, 48 << 10);
        let big = pool.alloc::<f32>(8 << 10).unwrap();
        assert_eq!(pool.stats().held_bytes, 32 << 10);
        assert_eq!(pool.stats().peak_held_bytes, 48 << 10);
        // Beyond the device: the driver's error.
        assert!(matches!(
            pool.alloc::<f32>(16 << 10),
            Err(DriverError::OutOfMemory { .. })
        ));
        drop(big);
        drop(pool);
        // Dropping the pool gives every cached buffer back to the driver.
        assert_eq!(driver.memory_info(), Ok((64 << 10, 64 << 10)));
    }
}
