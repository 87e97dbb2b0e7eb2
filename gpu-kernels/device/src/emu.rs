//! CPU grid emulator: runs a kernel body over a grid of blocks the way a GPU
//! does, so the kernels can be tested without one.
//!
//! [`launch`] gives every thread of a block its own OS thread (spawned once
//! per launch, then walking the blocks in order), so `sync_threads` is a real
//! `std::sync::Barrier` and a block's shared memory is one buffer seen by all
//! its threads. Between blocks the shared buffer is refilled with NaN bytes,
//! so a kernel that reads shared memory it did not write fails its test.
//! [`launch_independent`] runs kernels that never synchronise (elementwise,
//! one thread per output) on the calling thread, one GPU thread after the
//! other; a `sync_threads` there panics, naming the mistake.
use std::cell::{Cell, UnsafeCell};
use std::sync::Barrier;

/// Grid or block extent, as CUDA's `dim3`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dim3 {
    pub x: u32,
    pub y: u32,
    pub z: u32,
}

impl Dim3 {
    pub const fn x(x: u32) -> Dim3 {
        Dim3 { x, y: 1, z: 1 }
    }
    pub const fn xy(x: u32, y: u32) -> Dim3 {
        Dim3 { x, y, z: 1 }
    }
    pub const fn xyz(x: u32, y: u32, z: u32) -> Dim3 {
        Dim3 { x, y, z }
    }
    pub fn count(self) -> usize {
        self.x as usize * self.y as usize * self.z as usize
    }
}

/// Shared memory per block, as on every GPU since sm_20 without opt-in.
pub const SHARED_BYTES: usize = 48 * 1024;

/// Thread and block coordinates of one emulated GPU thread, its block's
/// barrier and shared memory.
pub struct Ctx {
    thread: Dim3,
    block: Cell<Dim3>,
    block_dim: Dim3,
    grid_dim: Dim3,
    barrier: Option<*const Barrier>,
    shared_base: *mut u8,
    shared_used: Cell<usize>,
}

impl Ctx {
    pub fn thread_x(&self) -> u32 {
        self.thread.x
    }
    pub fn thread_y(&self) -> u32 {
        self.thread.y
    }
    pub fn block_x(&self) -> u32 {
        self.block.get().x
    }
    pub fn block_y(&self) -> u32 {
        self.block.get().y
    }
    pub fn block_z(&self) -> u32 {
        self.block.get().z
    }
    pub fn block_dim_x(&self) -> u32 {
        self.block_dim.x
    }
    pub fn block_dim_y(&self) -> u32 {
        self.block_dim.y
    }
    pub fn grid_dim_x(&self) -> u32 {
        self.grid_dim.x
    }

    /// `__syncthreads()`.
    pub fn sync_threads(&self) {
        match self.barrier {
            // SAFETY: the barrier outlives every thread of the launch (scoped threads).
            Some(barrier) => unsafe { (*barrier).wait() },
            None => panic!(
                "kernel calls sync_threads: launch it with emu::launch, not launch_independent"
            ),
        };
    }

    /// The next `len` elements of this block's shared memory (used through
    /// [`shared_array!`](crate::shared_array)).
    pub fn shared<T>(&self, len: usize) -> *mut T {
        let align = std::mem::align_of::<T>().max(16);
        let start = self.shared_used.get().next_multiple_of(align);
        let end = start + len * std::mem::size_of::<T>();
        assert!(
            end <= SHARED_BYTES,
            "kernel asks for {end} bytes of shared memory; a block has {SHARED_BYTES}"
        );
        self.shared_used.set(end);
        // SAFETY: in bounds of the block's buffer (checked above).
        unsafe { self.shared_base.add(start) as *mut T }
    }
}

/// Host memory a test hands to a kernel, written by many emulated threads at
/// once through raw pointers, as device memory is.
pub struct DeviceBuf<T> {
    cells: Box<[UnsafeCell<T>]>,
}

// SAFETY: kernels write through raw pointers from several threads; keeping
// those writes disjoint (or barrier-ordered) is the kernel's contract, as on a GPU.
unsafe impl<T: Send> Sync for DeviceBuf<T> {}

impl<T: Copy> DeviceBuf<T> {
    pub fn new(values: &[T]) -> DeviceBuf<T> {
        DeviceBuf {
            cells: values.iter().map(|&v| UnsafeCell::new(v)).collect(),
        }
    }
    pub fn filled(len: usize, value: T) -> DeviceBuf<T> {
        DeviceBuf {
            cells: (0..len).map(|_| UnsafeCell::new(value)).collect(),
        }
    }
    pub fn ptr(&self) -> *mut T {
        // UnsafeCell<T> has the layout of T.
        self.cells.as_ptr() as *mut T
    }
    pub fn len(&self) -> usize {
        self.cells.len()
    }
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }
    pub fn to_vec(&self) -> Vec<T> {
        // SAFETY: called after the launch, when no kernel thread is running.
        self.cells.iter().map(|c| unsafe { *c.get() }).collect()
    }
}

fn block_coords(grid: Dim3, index: usize) -> Dim3 {
    let x = (index % grid.x as usize) as u32;
    let y = (index / grid.x as usize % grid.y as usize) as u32;
    let z = (index / (grid.x as usize * grid.y as usize)) as u32;
    Dim3 { x, y, z }
}

/// Runs `body` for every thread of every block, each thread of a block on
/// its own OS thread, with a real barrier and shared memory.
pub fn launch<F: Fn(&Ctx) + Sync>(grid: Dim3, block: Dim3, body: F) {
    let threads = block.count();
    assert!(
        threads > 0 && threads <= 1024,
        "a block has 1..=1024 threads, not {threads}"
    );
    let barrier = Barrier::new(threads);
    // u128 storage gives the 16-byte alignment `shared` promises.
    let mut shared = vec![u128::MAX; SHARED_BYTES / 16];
    let shared_base = SendPtr(shared.as_mut_ptr() as *mut u8);
    let (barrier, body, shared_base) = (&barrier, &body, &shared_base);
    std::thread::scope(|scope| {
        for t in 0..threads {
            let thread = Dim3 {
                x: (t % block.x as usize) as u32,
                y: (t / block.x as usize % block.y as usize) as u32,
                z: (t / (block.x as usize * block.y as usize)) as u32,
            };
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn_scoped(scope, move || {
                    let ctx = Ctx {
                        thread,
                        block: Cell::new(block_coords(grid, 0)),
                        block_dim: block,
                        grid_dim: grid,
                        barrier: Some(barrier as *const Barrier),
                        shared_base: shared_base.0,
                        shared_used: Cell::new(0),
                    };
                    for b in 0..grid.count() {
                        ctx.block.set(block_coords(grid, b));
                        ctx.shared_used.set(0);
                        body(&ctx);
                        // The block is done only when all its threads are.
                        // Then thread 0 poisons shared memory for the next one.
                        barrier.wait();
                        if t == 0 {
                            // SAFETY: every other thread waits at the barrier below.
                            unsafe { std::ptr::write_bytes(shared_base.0, 0xFF, SHARED_BYTES) };
                        }
                        barrier.wait();
                    }
                })
                .expect("spawn an emulated GPU thread");
        }
    });
    drop(shared);
}

/// Runs `body` for every thread of every block on the calling thread, for
/// kernels whose threads never synchronise.
pub fn launch_independent<F: Fn(&Ctx)>(grid: Dim3, block: Dim3, body: F) {
    let mut shared = vec![u128::MAX; SHARED_BYTES / 16];
    for b in 0..grid.count() {
        for t in 0..block.count() {
            let ctx = Ctx {
                thread: block_coords(block, t),
                block: Cell::new(block_coords(grid, b)),
                block_dim: block,
                grid_dim: grid,
                barrier: None,
                shared_base: shared.as_mut_ptr() as *mut u8,
                shared_used: Cell::new(0),
            };
            body(&ctx);
        }
    }
}

struct SendPtr(*mut u8);
// SAFETY: the shared buffer is used under the barrier discipline above.
unsafe impl Sync for SendPtr {}
unsafe impl Send for SendPtr {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn barrier_orders_shared_memory_within_a_block() {
        // Each thread writes its id to shared memory, syncs, then reads its
        // neighbour's: only correct with a working barrier and one buffer per block.
        let out = DeviceBuf::filled(4 * 32, 0u32);
        launch(Dim3::x(4), Dim3::x(32), |ctx| {
            let tile = crate::shared_array!(ctx, u32, 32);
            let t = ctx.thread_x();
            unsafe {
                *tile.add(t as usize) = t + 100 * ctx.block_x();
                ctx.sync_threads();
                let neighbour = *tile.add(((t + 1) % 32) as usize);
                *out.ptr().add((ctx.block_x() * 32 + t) as usize) = neighbour;
            }
        });
        let got = out.to_vec();
        for b in 0..4 {
            for t in 0..32 {
                assert_eq!(got[b * 32 + t], ((t + 1) % 32) as u32 + 100 * b as u32);
            }
        }
    }

    #[test]
    #[should_panic(expected = "launch it with emu::launch")]
    fn independent_launch_rejects_barriers() {
        launch_independent(Dim3::x(1), Dim3::x(2), |ctx| ctx.sync_threads());
    }

    #[test]
    fn grid_coordinates_cover_every_block_once() {
        let hits = DeviceBuf::filled(2 * 3 * 4, 0u32);
        launch_independent(Dim3::xyz(2, 3, 4), Dim3::x(1), |ctx| unsafe {
            let i = (ctx.block_z() * 6 + ctx.block_y() * 2 + ctx.block_x()) as usize;
            *hits.ptr().add(i) += 1;
        });
        assert!(hits.to_vec().iter().all(|&h| h == 1));
    }
}
