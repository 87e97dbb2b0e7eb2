//! CPU grid emulator: runs a kernel body over a grid of blocks the way a GPU
//! does, so the kernels can be tested without one, and fails where a GPU
//! would silently compute garbage or hang.
//!
//! The threads of a block run on the calling OS thread as stackful
//! coroutines (corosensei): `sync_threads` suspends the thread, and a
//! scheduler resumes every thread of the block up to the barrier, in the
//! order a [`Schedule`] gives, before releasing them all. Blocks run one after
//! the other, in the schedule's order too. Each block sees one shared-memory
//! buffer of [`SHARED_BYTES`], refilled with NaN bytes before the next block,
//! so a kernel that reads shared memory it did not write fails its test.
//! Coroutine stacks come from a per-OS-thread pool, so a launch allocates
//! nothing once the pool is warm.
//!
//! What is caught, as a [`Fault`] naming the kernel:
//! - races: [`run_checked`] runs the launch forward, then again from the same
//!   memory in reverse (threads and blocks), and compares the regions it may
//!   write byte for byte. A result that depends on the order the threads of a
//!   block run between two barriers (a missing barrier between one thread's
//!   write and another's read, two threads writing one word, a block reading
//!   what another block writes) differs. Not caught: interleavings *inside*
//!   one thread's run between barriers (a thread writes a word and reads it
//!   back before the barrier while another also writes it: both orders let it
//!   read its own value), since the emulator only switches threads at
//!   barriers. No kernel uses atomics (see `grep -rn atomic src/`), so byte
//!   equality is the right test; a kernel that adds float atomics would need
//!   a tolerance for its regions.
//! - barrier divergence: a block whose threads do not all reach the same
//!   `sync_threads` (some returned while others wait, or they wait at
//!   different call sites, which CUDA leaves undefined) is reported when the
//!   last thread of the round stops, never a hang.
//! - panics in a body (the shared-memory budget, `sync_threads` in an
//!   independent launch) become [`Fault::Panic`] instead of unwinding into
//!   the caller.
//! - launch shapes no GPU accepts (an empty grid, a block outside 1..=1024
//!   threads) are [`Fault::Launch`].
//!
//! Not caught here: reads and writes outside the launched buffers (raw
//! pointers are not checked; the host crate's emulated device checks every
//! pointer argument's extent at launch and guard bytes after it), a body that
//! loops forever (it hangs as it would on a GPU), and stack overflow inside a
//! body (the coroutine stack's guard page stops the process).
//!
//! [`launch`] and [`launch_independent`] are what the kernel tests call: they
//! race-check every live [`DeviceBuf`] of the calling thread and panic with
//! the fault, so every kernel test is also a race test.
use corosensei::stack::{DefaultStack, Stack, StackPointer};
use corosensei::{Coroutine, CoroutineResult, Yielder};
use std::cell::{Cell, RefCell, UnsafeCell};
use std::fmt;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe, Location};

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

impl fmt::Display for Dim3 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}, {}, {})", self.x, self.y, self.z)
    }
}

/// Shared memory per block, as on every GPU since sm_20 without opt-in.
pub const SHARED_BYTES: usize = 48 * 1024;

/// Threads per block on every GPU since sm_20.
pub const MAX_BLOCK_THREADS: usize = 1024;

/// Stack of one emulated GPU thread. Kernels keep a few registers' worth of
/// locals; unoptimised test builds need more, and untouched pages cost nothing.
const STACK_BYTES: usize = 256 * 1024;

/// The order in which the threads of a block run between two barriers, and
/// the blocks of the grid one after the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// Thread 0 first, block 0 first.
    Forward,
    /// The last thread first, the last block first.
    Reverse,
    /// A fresh permutation for every block and every stretch between
    /// barriers, drawn from the seed.
    Shuffled(u64),
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Forward => write!(f, "forward"),
            Schedule::Reverse => write!(f, "reverse"),
            Schedule::Shuffled(seed) => write!(f, "shuffled (seed {seed})"),
        }
    }
}

impl Schedule {
    /// Fills `order` with a permutation of `0..order.len()`; `stream` and
    /// `round` pick a different shuffle for every block and barrier stretch.
    fn permute(self, order: &mut [usize], stream: u64, round: u64) {
        for (i, slot) in order.iter_mut().enumerate() {
            *slot = i;
        }
        match self {
            Schedule::Forward => {}
            Schedule::Reverse => order.reverse(),
            Schedule::Shuffled(seed) => {
                let mut state = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ round;
                // Fisher-Yates with splitmix64.
                for i in (1..order.len()).rev() {
                    let j = (splitmix64(&mut state) % (i as u64 + 1)) as usize;
                    order.swap(i, j);
                }
            }
        }
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What a launch did that a GPU would punish.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// The byte at `offset` of `regions[region]` ends differently when the
    /// threads run in the `other` order than in the forward one.
    Race {
        kernel: String,
        region: usize,
        offset: usize,
        forward: u8,
        other: u8,
        schedule: Schedule,
    },
    /// Not every thread of `block` reached the same barrier.
    BarrierDivergence {
        kernel: String,
        block: Dim3,
        detail: String,
    },
    /// The body panicked; `message` names the block and thread.
    Panic { kernel: String, message: String },
    /// A grid or block no GPU launches.
    Launch { kernel: String, message: String },
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Race {
                kernel,
                region,
                offset,
                forward,
                other,
                schedule,
            } => write!(
                f,
                "kernel {kernel}: race: byte {offset} of region {region} is {forward:#04x} \
                 when threads run forward but {other:#04x} when they run {schedule}"
            ),
            Fault::BarrierDivergence {
                kernel,
                block,
                detail,
            } => write!(
                f,
                "kernel {kernel}: barrier divergence in block {block}: {detail}"
            ),
            Fault::Panic { kernel, message } => write!(f, "kernel {kernel}: panicked: {message}"),
            Fault::Launch { kernel, message } => {
                write!(f, "kernel {kernel}: invalid launch: {message}")
            }
        }
    }
}

impl std::error::Error for Fault {}

/// A stretch of memory a launch may write, compared by [`run_checked`].
#[derive(Clone, Copy, Debug)]
pub struct Region {
    ptr: *mut u8,
    len: usize,
}

impl Region {
    /// # Safety
    /// `ptr` must be valid for reads and writes of `len` bytes until the
    /// [`run_checked`] call that receives it returns, and touched by nothing
    /// but that launch meanwhile.
    pub unsafe fn new(ptr: *mut u8, len: usize) -> Region {
        Region { ptr, len }
    }
    /// A copy of the region's bytes.
    fn snapshot(&self) -> Vec<u8> {
        // SAFETY: the promise of `Region::new`; only called while no kernel
        // thread is running.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len).to_vec() }
    }
    /// Puts back bytes taken by `snapshot`.
    fn restore(&self, bytes: &[u8]) {
        assert_eq!(bytes.len(), self.len);
        // SAFETY: as in `snapshot`.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr, self.len) }
    }
}

/// What a suspended thread hands the scheduler: the barrier it waits at.
type Barrier = &'static Location<'static>;

/// Thread and block coordinates of one emulated GPU thread, its way back to
/// the block's scheduler and its block's shared memory.
pub struct Ctx {
    thread: Dim3,
    block: Dim3,
    block_dim: Dim3,
    grid_dim: Dim3,
    yielder: Option<*const Yielder<(), Barrier>>,
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
        self.block.x
    }
    pub fn block_y(&self) -> u32 {
        self.block.y
    }
    pub fn block_z(&self) -> u32 {
        self.block.z
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

    /// `__syncthreads()`: suspends this thread until every thread of the
    /// block has reached the same call site.
    #[track_caller]
    pub fn sync_threads(&self) {
        let site = Location::caller();
        match self.yielder {
            // SAFETY: the yielder lives on this coroutine's stack, which is
            // the stack we are running on.
            Some(yielder) => unsafe { (*yielder).suspend(site) },
            None => panic!(
                "kernel calls sync_threads at {site}: launch it with emu::launch, \
                 not launch_independent"
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

/// The stack of one emulated GPU thread, whose top is moved down by a
/// different number of cache lines for each thread of a block. Every stack
/// is a separate mapping of the same size, so without the offset the tops of
/// all of them share one cache set, and the few lines a thread touches
/// between two barriers evict the other threads' lines at every switch
/// (this made a barrier cost two to three times more).
struct ThreadStack {
    stack: DefaultStack,
    colour: usize,
}

impl ThreadStack {
    fn new(index: usize) -> std::io::Result<ThreadStack> {
        // 17 lines apart (odd, so every set is used), within 64 KiB.
        let colour = index * 17 * 64 % (64 * 1024);
        Ok(ThreadStack {
            stack: DefaultStack::new(STACK_BYTES + 64 * 1024)?,
            colour,
        })
    }
}

// SAFETY: the base stays inside the default stack (below its base by less
// than the extra 64 KiB it was given) and is aligned (`colour` is a multiple
// of 64); the limit and its guard page are the default stack's.
unsafe impl Stack for ThreadStack {
    fn base(&self) -> StackPointer {
        let base = self.stack.base().get() - self.colour;
        StackPointer::new(base).unwrap_or(self.stack.base())
    }
    fn limit(&self) -> StackPointer {
        self.stack.limit()
    }
    #[cfg(windows)]
    fn teb_fields(&self) -> corosensei::stack::StackTebFields {
        self.stack.teb_fields()
    }
    #[cfg(windows)]
    fn update_teb_fields(&mut self, stack_limit: usize, guaranteed_stack_bytes: usize) {
        self.stack
            .update_teb_fields(stack_limit, guaranteed_stack_bytes)
    }
}

thread_local! {
    /// Coroutine stacks kept between launches of this OS thread.
    static STACKS: RefCell<Vec<ThreadStack>> = const { RefCell::new(Vec::new()) };
    /// (address, bytes) of every live `DeviceBuf` of this OS thread, which
    /// `launch` race-checks.
    static LIVE_BUFS: RefCell<Vec<(usize, usize)>> = const { RefCell::new(Vec::new()) };
}

/// Host memory a test hands to a kernel, written by many emulated threads
/// through raw pointers, as device memory is. It stays on the thread that
/// made it (not `Send`), where [`launch`] finds it to race-check.
pub struct DeviceBuf<T> {
    cells: Box<[UnsafeCell<T>]>,
    on_this_thread: PhantomData<*mut ()>,
}

impl<T: Copy> DeviceBuf<T> {
    pub fn new(values: &[T]) -> DeviceBuf<T> {
        Self::register(values.iter().map(|&v| UnsafeCell::new(v)).collect())
    }
    pub fn filled(len: usize, value: T) -> DeviceBuf<T> {
        Self::register((0..len).map(|_| UnsafeCell::new(value)).collect())
    }
    fn register(cells: Box<[UnsafeCell<T>]>) -> DeviceBuf<T> {
        let buf = DeviceBuf {
            cells,
            on_this_thread: PhantomData,
        };
        LIVE_BUFS.with(|live| {
            live.borrow_mut()
                .push((buf.ptr() as usize, std::mem::size_of_val(&*buf.cells)))
        });
        buf
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
    /// The buffer's bytes, for [`run_checked`].
    pub fn region(&self) -> Region {
        Region {
            ptr: self.ptr() as *mut u8,
            len: std::mem::size_of_val(&*self.cells),
        }
    }
}

impl<T> Drop for DeviceBuf<T> {
    fn drop(&mut self) {
        let addr = self.cells.as_ptr() as usize;
        LIVE_BUFS.with(|live| {
            let mut live = live.borrow_mut();
            // `remove` keeps creation order, which race reports count in.
            if let Some(i) = live.iter().rposition(|&(a, _)| a == addr) {
                live.remove(i);
            }
        });
    }
}

fn coords(extent: Dim3, index: usize) -> Dim3 {
    let x = (index % extent.x as usize) as u32;
    let y = (index / extent.x as usize % extent.y as usize) as u32;
    let z = (index / (extent.x as usize * extent.y as usize)) as u32;
    Dim3 { x, y, z }
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// One launch: the grid, the block, the kernel's name for faults and the
/// block's shared memory.
struct Grid<'a> {
    kernel: &'a str,
    grid: Dim3,
    block: Dim3,
    shared: *mut u8,
}

impl Grid<'_> {
    fn ctx(&self, block: Dim3, thread: usize, yielder: Option<*const Yielder<(), Barrier>>) -> Ctx {
        Ctx {
            thread: coords(self.block, thread),
            block,
            block_dim: self.block,
            grid_dim: self.grid,
            yielder,
            shared_base: self.shared,
            shared_used: Cell::new(0),
        }
    }

    fn panic_fault(
        &self,
        block: Dim3,
        thread: usize,
        payload: &(dyn std::any::Any + Send),
    ) -> Fault {
        Fault::Panic {
            kernel: self.kernel.to_string(),
            message: format!(
                "block {block} thread {}: {}",
                coords(self.block, thread),
                panic_text(payload)
            ),
        }
    }

    fn divergence(&self, block: Dim3, detail: String) -> Fault {
        Fault::BarrierDivergence {
            kernel: self.kernel.to_string(),
            block,
            detail,
        }
    }

    /// Runs one block's threads as coroutines on `stacks`, barrier stretch
    /// by barrier stretch, in the order `schedule` gives.
    fn run_block(
        &self,
        block: Dim3,
        stream: u64,
        schedule: Schedule,
        stacks: &mut [ThreadStack],
        order: &mut [usize],
        body: &dyn Fn(&Ctx),
    ) -> Result<(), Fault> {
        let n = order.len();
        let mut threads: Vec<Option<Coroutine<(), Barrier, (), &mut ThreadStack>>> = stacks
            .iter_mut()
            .enumerate()
            .map(|(t, stack)| {
                let thread = move |yielder: &Yielder<(), Barrier>, ()| {
                    body(&self.ctx(block, t, Some(yielder as *const _)));
                };
                // SAFETY: the coroutine borrows `body`, `self` and the stack;
                // it is dropped (unwound if suspended) before this function
                // returns, while all three are alive.
                Some(unsafe { Coroutine::with_stack_unchecked(stack, thread) })
            })
            .collect();
        // Where each live thread waits, and after how many barriers each
        // finished one returned.
        let mut waiting: Vec<Option<Barrier>> = vec![None; n];
        let mut returned_after: Vec<Option<u64>> = vec![None; n];
        let mut returned = 0;
        let mut round = 0u64;
        // Forward and reverse run the threads in the same order every round.
        let reshuffle = matches!(schedule, Schedule::Shuffled(_));
        schedule.permute(order, stream, round);
        loop {
            if reshuffle && round > 0 {
                schedule.permute(order, stream, round);
            }
            // The barrier the first waiting thread of the round reached, and
            // whether every other waiting thread reached the same one: the
            // common case needs no second look at `waiting`.
            let mut reached: Option<Barrier> = None;
            let mut same_barrier = true;
            for &t in order.iter() {
                let Some(thread) = threads[t].as_mut() else {
                    continue;
                };
                match catch_unwind(AssertUnwindSafe(|| thread.resume(()))) {
                    Ok(CoroutineResult::Yield(site)) => {
                        waiting[t] = Some(site);
                        match reached {
                            None => reached = Some(site),
                            Some(first) => {
                                same_barrier &= std::ptr::eq(first, site) || *first == *site
                            }
                        }
                    }
                    Ok(CoroutineResult::Return(())) => {
                        threads[t] = None;
                        waiting[t] = None;
                        returned_after[t] = Some(round);
                        returned += 1;
                    }
                    Err(payload) => return Err(self.panic_fault(block, t, &*payload)),
                }
            }
            if reached.is_none() {
                return Ok(());
            }
            if returned == 0 && same_barrier {
                round += 1;
                continue;
            }
            let Some((first, site)) = (0..n).find_map(|t| waiting[t].map(|s| (t, s))) else {
                return Ok(());
            };
            if let Some(gone) = (0..n).find(|&t| returned_after[t].is_some()) {
                return Err(self.divergence(
                    block,
                    format!(
                        "thread {} waits at barrier {} ({site}) but thread {} returned after {} barriers",
                        coords(self.block, first),
                        round + 1,
                        coords(self.block, gone),
                        returned_after[gone].unwrap_or(0),
                    ),
                ));
            }
            let elsewhere = (0..n).find_map(|t| waiting[t].filter(|&s| s != site).map(|s| (t, s)));
            if let Some((other, other_site)) = elsewhere {
                return Err(self.divergence(
                    block,
                    format!(
                        "at barrier {}, thread {} waits at {site} but thread {} at {other_site}",
                        round + 1,
                        coords(self.block, first),
                        coords(self.block, other),
                    ),
                ));
            }
            round += 1;
        }
    }

    /// Runs one block's threads one after the other on the calling stack,
    /// for kernels that never synchronise.
    fn run_block_independent(
        &self,
        block: Dim3,
        stream: u64,
        schedule: Schedule,
        order: &mut [usize],
        body: &dyn Fn(&Ctx),
    ) -> Result<(), Fault> {
        schedule.permute(order, stream, 0);
        for &t in order.iter() {
            let ctx = self.ctx(block, t, None);
            catch_unwind(AssertUnwindSafe(|| body(&ctx)))
                .map_err(|payload| self.panic_fault(block, t, &*payload))?;
        }
        Ok(())
    }
}

/// The emulator proper; not generic, so that it is compiled (optimised, see
/// the workspace's Cargo.toml) once, in this crate.
fn run_grid(
    kernel: &str,
    grid: Dim3,
    block: Dim3,
    schedule: Schedule,
    barriers: bool,
    body: &dyn Fn(&Ctx),
) -> Result<(), Fault> {
    let threads = block.count();
    let launch_fault = |message: String| Fault::Launch {
        kernel: kernel.to_string(),
        message,
    };
    if threads == 0 || threads > MAX_BLOCK_THREADS {
        return Err(launch_fault(format!(
            "a block has 1..={MAX_BLOCK_THREADS} threads, not {threads} (block {block})"
        )));
    }
    if grid.count() == 0 {
        return Err(launch_fault(format!("the grid {grid} has no blocks")));
    }
    // u128 storage gives the 16-byte alignment `shared` promises.
    let mut shared = vec![u128::MAX; SHARED_BYTES / 16];
    let launch = Grid {
        kernel,
        grid,
        block,
        shared: shared.as_mut_ptr() as *mut u8,
    };
    let mut stacks = if barriers {
        STACKS.with(|pool| std::mem::take(&mut *pool.borrow_mut()))
    } else {
        Vec::new()
    };
    while barriers && stacks.len() < threads {
        let stack = ThreadStack::new(stacks.len())
            .map_err(|e| launch_fault(format!("cannot map a thread stack: {e}")))?;
        stacks.push(stack);
    }
    let mut block_order = vec![0; grid.count()];
    schedule.permute(&mut block_order, u64::MAX, 0);
    let mut order = vec![0; threads];
    let mut result = Ok(());
    for &b in &block_order {
        let coord = coords(grid, b);
        result = if barriers {
            launch.run_block(
                coord,
                b as u64,
                schedule,
                &mut stacks[..threads],
                &mut order,
                body,
            )
        } else {
            launch.run_block_independent(coord, b as u64, schedule, &mut order, body)
        };
        if result.is_err() {
            break;
        }
        // SAFETY: no thread of the finished block runs any more.
        unsafe { std::ptr::write_bytes(launch.shared, 0xFF, SHARED_BYTES) };
    }
    if barriers {
        STACKS.with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.len() < stacks.len() {
                *pool = stacks;
            }
        });
    }
    drop(shared);
    result
}

/// Runs `body` for every thread of every block, threads of a block as
/// coroutines that meet at `sync_threads`, in the order `schedule` gives.
pub fn run<F: Fn(&Ctx)>(
    kernel: &str,
    grid: Dim3,
    block: Dim3,
    schedule: Schedule,
    body: F,
) -> Result<(), Fault> {
    run_grid(kernel, grid, block, schedule, true, &body)
}

/// [`run`] for kernels that never synchronise: each thread runs to its end
/// on the calling stack (cheaper); a `sync_threads` is a [`Fault::Panic`].
pub fn run_independent<F: Fn(&Ctx)>(
    kernel: &str,
    grid: Dim3,
    block: Dim3,
    schedule: Schedule,
    body: F,
) -> Result<(), Fault> {
    run_grid(kernel, grid, block, schedule, false, &body)
}

/// Runs the launch forward, then again in reverse from the same contents of
/// `regions` (the memory it may write), and reports the first byte that
/// ends differently as a [`Fault::Race`]. The regions hold the reverse run's
/// result afterwards (equal to the forward one when it returns `Ok`).
pub fn run_checked<F: Fn(&Ctx)>(
    kernel: &str,
    grid: Dim3,
    block: Dim3,
    regions: &[Region],
    body: F,
) -> Result<(), Fault> {
    run_checked_with(kernel, grid, block, regions, true, &body)
}

fn run_checked_with(
    kernel: &str,
    grid: Dim3,
    block: Dim3,
    regions: &[Region],
    barriers: bool,
    body: &dyn Fn(&Ctx),
) -> Result<(), Fault> {
    let before: Vec<Vec<u8>> = regions.iter().map(Region::snapshot).collect();
    run_grid(kernel, grid, block, Schedule::Forward, barriers, body)?;
    let forward: Vec<Vec<u8>> = regions.iter().map(Region::snapshot).collect();
    // Restored in order, so overlapping regions end as they began.
    for (r, bytes) in regions.iter().zip(&before) {
        r.restore(bytes);
    }
    let schedule = Schedule::Reverse;
    run_grid(kernel, grid, block, schedule, barriers, body)?;
    for (region, (r, want)) in regions.iter().zip(&forward).enumerate() {
        let got = r.snapshot();
        if let Some(offset) = (0..want.len()).find(|&i| got[i] != want[i]) {
            return Err(Fault::Race {
                kernel: kernel.to_string(),
                region,
                offset,
                forward: want[offset],
                other: got[offset],
                schedule,
            });
        }
    }
    Ok(())
}

/// The test's name, from the closure's type: `launch` has no kernel name.
fn caller_name<F>() -> String {
    let name = std::any::type_name::<F>();
    name.trim_end_matches("::{{closure}}")
        .trim_end_matches("::{{closure}}")
        .to_string()
}

fn live_regions() -> Vec<Region> {
    LIVE_BUFS.with(|live| {
        live.borrow()
            .iter()
            .map(|&(ptr, len)| Region {
                ptr: ptr as *mut u8,
                len,
            })
            .collect()
    })
}

/// Runs `body` for every thread of every block, race-checked over every live
/// [`DeviceBuf`] of this thread (see [`run_checked`]); panics with the fault.
pub fn launch<F: Fn(&Ctx)>(grid: Dim3, block: Dim3, body: F) {
    let kernel = caller_name::<F>();
    let result = run_checked_with(&kernel, grid, block, &live_regions(), true, &body);
    panic_on_fault(result);
}

/// [`launch`] for kernels whose threads never synchronise (cheaper); a
/// `sync_threads` panics, naming the mistake.
pub fn launch_independent<F: Fn(&Ctx)>(grid: Dim3, block: Dim3, body: F) {
    let kernel = caller_name::<F>();
    let result = run_checked_with(&kernel, grid, block, &live_regions(), false, &body);
    panic_on_fault(result);
}

fn panic_on_fault(result: Result<(), Fault>) {
    match result {
        Ok(()) => {}
        Err(fault @ Fault::Race { region, .. }) => panic!(
            "{fault} (region {region}: the {} DeviceBuf alive on this thread, by creation)",
            ordinal(region + 1)
        ),
        Err(fault) => panic!("{fault}"),
    }
}

fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (1, 11) | (2, 12) | (3, 13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

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

    #[test]
    fn a_missing_barrier_is_a_race_named_after_its_kernel() {
        // Each thread writes its slot and reads its neighbour's without a
        // barrier: forward, the neighbour has not written yet (NaN poison);
        // reverse, it has.
        let out = DeviceBuf::filled(32, 0u32);
        let fault = run_checked(
            "neighbour_without_barrier",
            Dim3::x(1),
            Dim3::x(32),
            &[out.region()],
            |ctx| {
                let tile = crate::shared_array!(ctx, u32, 32);
                let t = ctx.thread_x() as usize;
                unsafe {
                    *tile.add(t) = t as u32;
                    *out.ptr().add(t) = *tile.add((t + 1) % 32);
                }
            },
        )
        .unwrap_err();
        assert!(
            matches!(
                fault,
                Fault::Race {
                    region: 0,
                    offset: 0,
                    ..
                }
            ),
            "{fault:?}"
        );
        assert!(
            fault
                .to_string()
                .starts_with("kernel neighbour_without_barrier: race"),
            "{fault}"
        );
    }

    #[test]
    fn threads_writing_one_word_are_a_race() {
        // shared[0] = tid, barrier, everyone reads shared[0]: the last writer
        // wins, which a GPU does not define.
        let out = DeviceBuf::filled(64, 0u32);
        let fault = run_checked(
            "last_writer_wins",
            Dim3::x(1),
            Dim3::x(64),
            &[out.region()],
            |ctx| {
                let word = crate::shared_array!(ctx, u32, 1);
                unsafe {
                    *word = ctx.thread_x();
                    ctx.sync_threads();
                    *out.ptr().add(ctx.thread_x() as usize) = *word;
                }
            },
        )
        .unwrap_err();
        assert!(
            matches!(&fault, Fault::Race { kernel, .. } if kernel == "last_writer_wins"),
            "{fault:?}"
        );
    }

    #[test]
    fn a_block_reading_another_blocks_output_is_a_race() {
        let out = DeviceBuf::filled(2, 0u32);
        let fault = run_checked(
            "reads_previous_block",
            Dim3::x(2),
            Dim3::x(1),
            &[out.region()],
            |ctx| unsafe {
                let b = ctx.block_x() as usize;
                *out.ptr().add(b) = if b == 0 { 1 } else { *out.ptr() + 1 };
            },
        )
        .unwrap_err();
        assert!(matches!(fault, Fault::Race { offset: 4, .. }), "{fault:?}");
    }

    #[test]
    fn a_barrier_only_some_threads_reach_is_divergence_not_a_hang() {
        let fault = run(
            "lonely_barrier",
            Dim3::x(2),
            Dim3::x(8),
            Schedule::Forward,
            |ctx| {
                if ctx.thread_x() == 0 {
                    ctx.sync_threads();
                }
            },
        )
        .unwrap_err();
        assert!(
            matches!(
                fault,
                Fault::BarrierDivergence {
                    block: Dim3 { x: 0, y: 0, z: 0 },
                    ..
                }
            ),
            "{fault:?}"
        );
        assert!(
            fault
                .to_string()
                .contains("kernel lonely_barrier: barrier divergence"),
            "{fault}"
        );
    }

    #[test]
    fn threads_at_different_barriers_are_divergence() {
        for schedule in [Schedule::Forward, Schedule::Reverse, Schedule::Shuffled(7)] {
            // The same barrier, written twice: CUDA counts call sites.
            let barrier = |ctx: &Ctx| ctx.sync_threads();
            let fault = run("two_barriers", Dim3::x(1), Dim3::x(4), schedule, |ctx| {
                if ctx.thread_x() < 2 {
                    ctx.sync_threads();
                } else {
                    barrier(ctx);
                }
            })
            .unwrap_err();
            assert!(
                matches!(fault, Fault::BarrierDivergence { .. }),
                "{fault:?}"
            );
        }
        // One more barrier in some threads: they wait while the rest returned.
        let fault = run(
            "extra_barrier",
            Dim3::x(1),
            Dim3::x(4),
            Schedule::Reverse,
            |ctx| {
                ctx.sync_threads();
                if ctx.thread_x() == 3 {
                    ctx.sync_threads();
                }
            },
        )
        .unwrap_err();
        assert!(fault.to_string().contains("waits at barrier 2"), "{fault}");
    }

    #[test]
    fn too_much_shared_memory_is_a_fault() {
        let fault = run("greedy", Dim3::x(1), Dim3::x(2), Schedule::Forward, |ctx| {
            let _ = crate::shared_array!(ctx, f32, SHARED_BYTES / 4 + 1);
        })
        .unwrap_err();
        let Fault::Panic { kernel, message } = &fault else {
            panic!("{fault:?}")
        };
        assert_eq!(kernel, "greedy");
        assert!(message.contains("bytes of shared memory"), "{message}");
        assert!(
            message.starts_with("block (0, 0, 0) thread (0, 0, 0)"),
            "{message}"
        );
    }

    #[test]
    fn bad_launch_shapes_are_faults() {
        let body = |_: &Ctx| {};
        for (grid, block) in [
            (Dim3::x(1), Dim3::x(1025)),
            (Dim3::x(0), Dim3::x(32)),
            (Dim3::x(1), Dim3::xy(32, 0)),
        ] {
            let fault = run("shape", grid, block, Schedule::Forward, body).unwrap_err();
            assert!(matches!(fault, Fault::Launch { .. }), "{fault:?}");
        }
        let fault = run_independent(
            "independent",
            Dim3::x(1),
            Dim3::x(2),
            Schedule::Forward,
            |c| c.sync_threads(),
        )
        .unwrap_err();
        assert!(matches!(fault, Fault::Panic { .. }), "{fault:?}");
    }

    #[test]
    fn every_schedule_runs_every_thread_between_barriers() {
        // A correct two-phase kernel gives the same result in every order,
        // including one whose suspended threads are unwound after a fault in
        // a later block.
        for schedule in [
            Schedule::Forward,
            Schedule::Reverse,
            Schedule::Shuffled(1),
            Schedule::Shuffled(2),
        ] {
            let out = DeviceBuf::filled(3 * 48, 0u32);
            run(
                "rotate",
                Dim3::x(3),
                Dim3::xy(16, 3),
                schedule,
                |ctx| unsafe {
                    let tile = crate::shared_array!(ctx, u32, 48);
                    let t = (ctx.thread_y() * 16 + ctx.thread_x()) as usize;
                    *tile.add(t) = t as u32 * 7;
                    ctx.sync_threads();
                    let v = *tile.add((t + 5) % 48);
                    ctx.sync_threads();
                    *tile.add(t) = v + 1;
                    ctx.sync_threads();
                    *out.ptr().add(ctx.block_x() as usize * 48 + t) = *tile.add((t + 1) % 48);
                },
            )
            .unwrap();
            let got = out.to_vec();
            for b in 0..3 {
                for t in 0..48 {
                    assert_eq!(got[b * 48 + t], ((t + 6) % 48) as u32 * 7 + 1, "{schedule}");
                }
            }
        }
        let fault = run(
            "late_panic",
            Dim3::x(2),
            Dim3::x(8),
            Schedule::Forward,
            |ctx| {
                let owned = vec![ctx.thread_x(); 4];
                ctx.sync_threads();
                assert!(
                    ctx.block_x() == 0 || ctx.thread_x() != 5,
                    "thread 5 of block 1 fails"
                );
                ctx.sync_threads();
                drop(owned);
            },
        )
        .unwrap_err();
        assert!(
            fault
                .to_string()
                .contains("block (1, 0, 0) thread (5, 0, 0): thread 5 of block 1 fails"),
            "{fault}"
        );
    }
}
