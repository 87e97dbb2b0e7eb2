//! A GPU in host memory: buffers are 16-byte aligned host allocations (their
//! address is the "device pointer"), fenced by guard bytes; every launch is
//! checked against the committed PTX (the entry's `.param` list, sm_53's
//! grid and block limits, each pointer inside a live buffer with the extent
//! the host says the kernel touches) and then runs the kernel's Rust body
//! under the device crate's grid emulator, by its PTX entry name, reading the
//! parameters from the packed bytes as the GPU would. A memory limit makes
//! out-of-memory testable.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use pulsefocus_gpu_device::emu::{self, Ctx, Dim3, Region};
use pulsefocus_gpu_device::registry::{host_entry, HostEntry};

use super::{ArgKind, DevicePtr, Driver, DriverError, KernelArgs, LaunchShape};
use crate::PTX_SM53;

/// The memory an emulated device has unless `PULSEFOCUS_GPU_EMULATOR_MEMORY` says.
pub const DEFAULT_MEMORY: usize = 4 << 30;
/// Guard bytes before and after each buffer.
const GUARD: usize = 64;
/// The guard pattern (repeated).
const CANARY: [u8; 4] = [0xDE, 0xAD, 0xBE, 0xEF];
/// Fresh memory is filled with 0xFF: NaN as f32, so reading memory nothing
/// wrote shows up in results, as garbage would on a GPU.
const FRESH: u8 = 0xFF;
/// Set (to anything) to print each kernel's launches and time on stderr when
/// the device is dropped: where an emulated run spends its time.
pub const PROFILE_VAR: &str = "PULSEFOCUS_GPU_EMULATOR_PROFILE";
/// Which launches run twice (forward and reverse) to catch races: `first`
/// (the default) or `all`; see [`RaceCheck`].
pub const RACE_CHECK_VAR: &str = "PULSEFOCUS_GPU_EMULATOR_RACE_CHECK";

/// Which launches are race-checked (run forward, then in reverse from the
/// same memory, and compared).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RaceCheck {
    /// The first launch of each [`LaunchKey`]; later ones run forward once.
    /// Whether a kernel races is decided by its code, its launch shape, its
    /// scalar arguments and which of its buffers overlap; the values in the
    /// buffers can at most hide a race (both orders writing equal bytes), so
    /// a repeat rarely finds what the first launch did not. A training step
    /// launches the same layers every step: after the first, a step costs
    /// half.
    First,
    /// Every launch.
    All,
}

impl RaceCheck {
    /// `PULSEFOCUS_GPU_EMULATOR_RACE_CHECK`: unset or `first`, or `all`.
    pub fn from_env() -> Result<RaceCheck, String> {
        match std::env::var(RACE_CHECK_VAR) {
            Err(_) => Ok(RaceCheck::First),
            Ok(text) => match text.trim() {
                "first" => Ok(RaceCheck::First),
                "all" => Ok(RaceCheck::All),
                other => Err(format!("{RACE_CHECK_VAR}={other}: expected first or all")),
            },
        }
    }
}

/// What decides whether a launch can race: the kernel, the grid and block,
/// every scalar argument and pointer extent, and which pointer arguments
/// overlap (a kernel reading a buffer it also writes).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct LaunchKey {
    kernel: &'static str,
    grid: (u32, u32, u32),
    block: (u32, u32, u32),
    /// Scalar arguments' bits and pointer arguments' extents, in order.
    values: Vec<u64>,
    /// For each pair (i, j), i < j, of pointer arguments: whether their extents overlap.
    overlaps: Vec<bool>,
}

impl LaunchKey {
    fn new(kernel: &'static str, shape: LaunchShape, args: &KernelArgs) -> LaunchKey {
        let mut values = Vec::with_capacity(args.len());
        let mut pointers = Vec::new();
        for i in 0..args.len() {
            match args.kind(i) {
                ArgKind::Scalar => values.push(args.slot(i)),
                ArgKind::Pointer { bytes, .. } => {
                    values.push(bytes as u64);
                    pointers.push((args.slot(i), bytes as u64));
                }
            }
        }
        let mut overlaps = Vec::new();
        for (i, &(a, an)) in pointers.iter().enumerate() {
            for &(b, bn) in &pointers[i + 1..] {
                overlaps.push(a < b + bn && b < a + an);
            }
        }
        LaunchKey {
            kernel,
            grid: shape.grid,
            block: shape.block,
            values,
            overlaps,
        }
    }
}

/// One `.param` of a PTX entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PtxParam {
    /// The PTX type without the dot: `u64`, `u32`, `f32`, ...
    pub ty: String,
    pub bytes: usize,
    /// Declared `.ptr` (a pointer parameter).
    pub pointer: bool,
}

/// A `.visible .entry` of the PTX and its parameters, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PtxEntry {
    pub name: String,
    pub params: Vec<PtxParam>,
}

fn type_bytes(ty: &str) -> Option<usize> {
    match ty {
        "u8" | "s8" | "b8" => Some(1),
        "u16" | "s16" | "b16" | "f16" => Some(2),
        "u32" | "s32" | "b32" | "f32" => Some(4),
        "u64" | "s64" | "b64" | "f64" => Some(8),
        _ => None,
    }
}

/// Every `.visible .entry NAME(` of `ptx` with its `.param` list
/// (`.param .TYPE [.ptr ...] NAME_param_I`, I counting from 0).
pub fn parse_entries(ptx: &str) -> Result<Vec<PtxEntry>, String> {
    let mut entries = Vec::new();
    let mut lines = ptx.lines().enumerate();
    while let Some((number, line)) = lines.next() {
        let Some(rest) = line.trim().strip_prefix(".visible .entry ") else {
            continue;
        };
        let name = rest.trim_end_matches('(').trim();
        if name.is_empty() || !rest.ends_with('(') {
            return Err(format!("line {}: unreadable entry '{line}'", number + 1));
        }
        let mut params = Vec::new();
        loop {
            let Some((number, line)) = lines.next() else {
                return Err(format!(
                    "entry {name}: the PTX ends inside its parameter list"
                ));
            };
            let line = line.trim();
            if line.starts_with(')') {
                break;
            }
            let words: Vec<&str> = line.trim_end_matches(',').split_whitespace().collect();
            let (Some(&".param"), Some(ty)) = (words.first(), words.get(1)) else {
                return Err(format!(
                    "line {}: expected a .param of {name}, found '{line}'",
                    number + 1
                ));
            };
            let ty = ty.trim_start_matches('.');
            let bytes = type_bytes(ty).ok_or_else(|| {
                format!("line {}: unknown .param type .{ty} of {name}", number + 1)
            })?;
            let expected = format!("{name}_param_{}", params.len());
            if words.last() != Some(&expected.as_str()) {
                return Err(format!(
                    "line {}: expected parameter {expected}, found '{line}'",
                    number + 1
                ));
            }
            params.push(PtxParam {
                ty: ty.to_string(),
                bytes,
                pointer: words.contains(&".ptr"),
            });
        }
        entries.push(PtxEntry {
            name: name.to_string(),
            params,
        });
    }
    Ok(entries)
}

/// The committed PTX's entries by name, parsed once.
pub fn ptx_entries() -> Result<&'static HashMap<String, PtxEntry>, String> {
    static ENTRIES: OnceLock<Result<HashMap<String, PtxEntry>, String>> = OnceLock::new();
    ENTRIES
        .get_or_init(|| {
            let entries = parse_entries(PTX_SM53)?;
            Ok(entries.into_iter().map(|e| (e.name.clone(), e)).collect())
        })
        .as_ref()
        .map_err(|e| format!("the embedded PTX: {e}"))
}

/// Bytes from `PULSEFOCUS_GPU_EMULATOR_MEMORY`: a number, optionally with a
/// KiB, MiB or GiB suffix.
pub fn parse_memory(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let (number, unit) = [("KiB", 1usize << 10), ("MiB", 1 << 20), ("GiB", 1 << 30)]
        .iter()
        .find_map(|&(suffix, unit)| text.strip_suffix(suffix).map(|n| (n.trim(), unit)))
        .unwrap_or((text, 1));
    number
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .filter(|&n| n > 0)
        .ok_or_else(|| {
            format!("PULSEFOCUS_GPU_EMULATOR_MEMORY={text}: expected a positive number of bytes, optionally with KiB, MiB or GiB")
        })
}

/// One live buffer: `bytes` usable bytes at `base + GUARD`, guards around.
struct Allocation {
    base: *mut u8,
    bytes: usize,
    layout: std::alloc::Layout,
}

impl Allocation {
    fn payload(&self) -> DevicePtr {
        self.base as u64 + GUARD as u64
    }
    /// The guard before and the guard after the payload.
    fn guards(&self) -> [*mut u8; 2] {
        // SAFETY: both lie inside the allocation (see `alloc`).
        unsafe { [self.base, self.base.add(GUARD + self.bytes)] }
    }
    /// Which guard (0 before, 1 after) no longer holds the canary.
    fn damaged_guard(&self) -> Option<usize> {
        self.guards().iter().position(|&guard| {
            // SAFETY: GUARD bytes inside the allocation, not written concurrently now.
            let bytes = unsafe { std::slice::from_raw_parts(guard, GUARD) };
            bytes.iter().enumerate().any(|(i, &b)| b != CANARY[i % 4])
        })
    }
    fn write_guards(&self) {
        for guard in self.guards() {
            for i in 0..GUARD {
                // SAFETY: inside the allocation.
                unsafe { *guard.add(i) = CANARY[i % 4] };
            }
        }
    }
}

struct State {
    /// Live buffers by payload address.
    live: BTreeMap<DevicePtr, Allocation>,
    used: usize,
    /// Launches and time per kernel, kept when `PULSEFOCUS_GPU_EMULATOR_PROFILE`
    /// is set and printed when the driver is dropped.
    profile: Option<HashMap<&'static str, (u64, Duration)>>,
    /// The launches race-checked so far (under [`RaceCheck::First`]).
    race_checked: HashSet<LaunchKey>,
}

// SAFETY: the raw pointers are owned host allocations, used under the mutex
// (kernels run while the launching thread holds it).
unsafe impl Send for State {}

/// The emulated GPU (see the module comment).
pub struct EmulatedDriver {
    limit: usize,
    race_check: RaceCheck,
    state: Mutex<State>,
}

/// Runs `body` over the launch's grid under the grid emulator. Race-checked
/// (`race_check`), the threads of each block run forward and then in
/// reverse from the same memory, and a byte of a written buffer (`regions`)
/// that ends differently is a race; otherwise they run forward once.
/// Barrier divergence and panics are faults either way, each naming the
/// kernel.
fn run_on_grid(
    kernel: &'static str,
    shape: LaunchShape,
    race_check: bool,
    regions: &[Region],
    body: impl Fn(&Ctx),
) -> Result<(), String> {
    let (g, b) = (shape.grid, shape.block);
    let (grid, block) = (Dim3::xyz(g.0, g.1, g.2), Dim3::xyz(b.0, b.1, b.2));
    let result = if race_check {
        emu::run_checked(kernel, grid, block, regions, body)
    } else {
        emu::run(kernel, grid, block, emu::Schedule::Forward, body)
    };
    result.map_err(|fault| {
        // The fault's text names the kernel already; the caller adds it once.
        let text = fault.to_string();
        let prefix = format!("kernel {kernel}: ");
        text.strip_prefix(&prefix)
            .map(str::to_string)
            .unwrap_or(text)
    })
}

/// sm_53's launch limits.
fn check_shape(shape: LaunchShape) -> Result<(), String> {
    let (g, b) = (shape.grid, shape.block);
    let threads = b.0 as u64 * b.1 as u64 * b.2 as u64;
    if [g.0, g.1, g.2, b.0, b.1, b.2].contains(&0) {
        return Err(format!("{shape}: every extent must be at least 1"));
    }
    if threads > 1024 || b.0 > 1024 || b.1 > 1024 || b.2 > 64 {
        return Err(format!(
            "{shape}: a block has at most 1024 threads (x, y <= 1024, z <= 64) on sm_53"
        ));
    }
    if g.0 > i32::MAX as u32 || g.1 > 65535 || g.2 > 65535 {
        return Err(format!(
            "{shape}: the grid is at most 2^31-1 x 65535 x 65535 blocks on sm_53"
        ));
    }
    Ok(())
}

impl EmulatedDriver {
    /// An emulated device with `limit` bytes of memory, race-checking the
    /// launches `PULSEFOCUS_GPU_EMULATOR_RACE_CHECK` says.
    pub fn new(limit: usize) -> Result<EmulatedDriver, String> {
        Self::with_race_check(limit, RaceCheck::from_env()?)
    }

    /// [`EmulatedDriver::new`] with the race check given.
    pub fn with_race_check(limit: usize, race_check: RaceCheck) -> Result<EmulatedDriver, String> {
        ptx_entries()?;
        Ok(EmulatedDriver {
            limit,
            race_check,
            state: Mutex::new(State {
                live: BTreeMap::new(),
                used: 0,
                profile: std::env::var_os(PROFILE_VAR).map(|_| HashMap::new()),
                race_checked: HashSet::new(),
            }),
        })
    }

    /// The memory `PULSEFOCUS_GPU_EMULATOR_MEMORY` sets, else [`DEFAULT_MEMORY`].
    pub fn memory_from_env() -> Result<usize, String> {
        match std::env::var("PULSEFOCUS_GPU_EMULATOR_MEMORY") {
            Ok(text) => parse_memory(&text),
            Err(_) => Ok(DEFAULT_MEMORY),
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic under the lock leaves the state consistent (every change
        // is one insert or remove), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The live buffer holding `bytes` bytes from `ptr`, or what is wrong.
    fn find(state: &State, ptr: DevicePtr, bytes: usize) -> Result<(), String> {
        let Some((&start, allocation)) = state.live.range(..=ptr).next_back() else {
            return Err(format!("0x{ptr:x} is not in any live buffer"));
        };
        let end = start + allocation.bytes as u64;
        if ptr >= end && !(ptr == end && bytes == 0) {
            return Err(format!("0x{ptr:x} is not in any live buffer"));
        }
        let offset = ptr - start;
        if offset + bytes as u64 > allocation.bytes as u64 {
            return Err(format!(
                "0x{ptr:x} is byte {offset} of a {}-byte buffer, which leaves {} bytes; the launch needs {bytes}",
                allocation.bytes,
                end - ptr
            ));
        }
        Ok(())
    }

    /// The launch's arguments against the PTX entry and the live buffers.
    fn check_launch(
        state: &State,
        kernel: &'static str,
        shape: LaunchShape,
        args: &KernelArgs,
    ) -> Result<(&'static HostEntry, Vec<Region>), String> {
        let entries = ptx_entries()?;
        let ptx = entries
            .get(kernel)
            .ok_or_else(|| "no such .entry in the PTX".to_string())?;
        let entry = host_entry(kernel)
            .ok_or_else(|| "no kernel body of that name in the device crate".to_string())?;
        if args.len() != ptx.params.len() {
            return Err(format!(
                "{} arguments passed, the PTX entry takes {}",
                args.len(),
                ptx.params.len()
            ));
        }
        let mut regions = Vec::new();
        for (i, param) in ptx.params.iter().enumerate() {
            if args.size(i) != param.bytes {
                return Err(format!(
                    "argument {i} is {} bytes, the PTX entry's .param {i} is .{} ({} bytes)",
                    args.size(i),
                    param.ty,
                    param.bytes
                ));
            }
            match args.kind(i) {
                ArgKind::Scalar if param.pointer => {
                    return Err(format!(
                        "argument {i} is a scalar, the PTX entry's .param {i} is a pointer"
                    ));
                }
                ArgKind::Scalar => {}
                ArgKind::Pointer { .. } if !param.pointer => {
                    return Err(format!(
                        "argument {i} is a pointer, the PTX entry's .param {i} is .{}",
                        param.ty
                    ));
                }
                ArgKind::Pointer { bytes, writes } => {
                    let ptr = args.slot(i);
                    if ptr == 0 && bytes == 0 {
                        continue; // an absent optional buffer
                    }
                    Self::find(state, ptr, bytes).map_err(|e| format!("argument {i}: {e}"))?;
                    if writes && bytes > 0 {
                        // SAFETY: inside a live buffer (checked above), which
                        // nothing but this launch touches until it returns
                        // (the launch holds the driver's lock).
                        regions.push(unsafe { Region::new(ptr as *mut u8, bytes) });
                    }
                }
            }
        }
        check_shape(shape)?;
        Ok((entry, regions))
    }

    /// The first damaged guard after a launch, named by buffer; the guard
    /// is rewritten so that one fault is reported once.
    fn check_guards(state: &State) -> Result<(), String> {
        for allocation in state.live.values() {
            if let Some(which) = allocation.damaged_guard() {
                allocation.write_guards();
                let side = ["before the start", "after the end"][which];
                return Err(format!(
                    "wrote outside a buffer: the {GUARD} bytes {side} of the {}-byte buffer at 0x{:x} were overwritten",
                    allocation.bytes,
                    allocation.payload()
                ));
            }
        }
        Ok(())
    }
}

/// The pointer arguments a launch only reads (not overlapping any it
/// writes), as (index, address, bytes).
fn read_only(args: &KernelArgs) -> Vec<(usize, DevicePtr, usize)> {
    let pointers = (0..args.len()).filter_map(|i| match args.kind(i) {
        ArgKind::Pointer { bytes, writes } if bytes > 0 => Some((i, args.slot(i), bytes, writes)),
        _ => None,
    });
    let pointers: Vec<_> = pointers.collect();
    let overlaps = |a: u64, an: usize, b: u64, bn: usize| a < b + bn as u64 && b < a + an as u64;
    pointers
        .iter()
        .filter(|&&(_, ptr, bytes, writes)| {
            !writes
                && !pointers
                    .iter()
                    .any(|&(_, p, n, w)| w && overlaps(ptr, bytes, p, n))
        })
        .map(|&(i, ptr, bytes, _)| (i, ptr, bytes))
        .collect()
}

/// A fingerprint of `bytes` bytes at `ptr` (inside a live buffer).
fn fingerprint(ptr: DevicePtr, bytes: usize) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    // SAFETY: the caller checked the range is inside a live buffer.
    unsafe { std::slice::from_raw_parts(ptr as *const u8, bytes) }.hash(&mut hasher);
    hasher.finish()
}

/// The kernels by time spent, most first, one line each.
fn print_profile(profile: HashMap<&'static str, (u64, Duration)>) {
    let mut kernels: Vec<_> = profile.into_iter().collect();
    kernels.sort_by_key(|k| std::cmp::Reverse(k.1 .1));
    let total: Duration = kernels.iter().map(|k| k.1 .1).sum();
    eprintln!(
        "emulated GPU profile: {:.3} s in kernels",
        total.as_secs_f64()
    );
    for (kernel, (launches, time)) in kernels {
        eprintln!(
            "{:>9.3} s {launches:>7} launches  {kernel}",
            time.as_secs_f64()
        );
    }
}

impl Drop for EmulatedDriver {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(profile) = state.profile.take() {
            print_profile(profile);
        }
        for (_, allocation) in std::mem::take(&mut state.live) {
            // SAFETY: allocated with this layout in `alloc`.
            unsafe { std::alloc::dealloc(allocation.base, allocation.layout) };
        }
    }
}

impl Driver for EmulatedDriver {
    fn alloc(&self, bytes: usize) -> Result<DevicePtr, DriverError> {
        let mut state = self.lock();
        let oom = DriverError::OutOfMemory { requested: bytes };
        if bytes > self.limit - state.used {
            return Err(oom);
        }
        let total = (GUARD + bytes + GUARD).next_multiple_of(16);
        let layout = std::alloc::Layout::from_size_align(total, 16).map_err(|_| oom.clone())?;
        // SAFETY: `total` > 0.
        let base = unsafe { std::alloc::alloc(layout) };
        if base.is_null() {
            return Err(oom);
        }
        // SAFETY: `base` holds `total` bytes.
        unsafe { std::ptr::write_bytes(base, FRESH, total) };
        let allocation = Allocation {
            base,
            bytes,
            layout,
        };
        allocation.write_guards();
        let ptr = allocation.payload();
        state.used += bytes;
        state.live.insert(ptr, allocation);
        Ok(ptr)
    }

    fn free(&self, ptr: DevicePtr) -> Result<(), DriverError> {
        let mut state = self.lock();
        let allocation = state
            .live
            .remove(&ptr)
            .ok_or_else(|| DriverError::Device(format!("free of 0x{ptr:x}: not a live buffer")))?;
        state.used -= allocation.bytes;
        // SAFETY: allocated with this layout in `alloc`, and no longer listed.
        unsafe { std::alloc::dealloc(allocation.base, allocation.layout) };
        Ok(())
    }

    fn copy_to_device(&self, src: &[u8], dst: DevicePtr) -> Result<(), DriverError> {
        let state = self.lock();
        Self::find(&state, dst, src.len())
            .map_err(|e| DriverError::Device(format!("copy to the device: {e}")))?;
        // SAFETY: `dst..dst + src.len()` is inside a live buffer (checked).
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst as *mut u8, src.len()) };
        Ok(())
    }

    fn copy_to_host(&self, src: DevicePtr, dst: &mut [u8]) -> Result<(), DriverError> {
        let state = self.lock();
        Self::find(&state, src, dst.len())
            .map_err(|e| DriverError::Device(format!("copy to the host: {e}")))?;
        // SAFETY: as above.
        unsafe { std::ptr::copy_nonoverlapping(src as *const u8, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    fn copy_on_device(
        &self,
        src: DevicePtr,
        dst: DevicePtr,
        bytes: usize,
    ) -> Result<(), DriverError> {
        let state = self.lock();
        for (what, ptr) in [("source", src), ("destination", dst)] {
            Self::find(&state, ptr, bytes)
                .map_err(|e| DriverError::Device(format!("copy on the device, {what}: {e}")))?;
        }
        // SAFETY: both ranges are inside live buffers; `copy` allows overlap.
        unsafe { std::ptr::copy(src as *const u8, dst as *mut u8, bytes) };
        Ok(())
    }

    fn launch(
        &self,
        kernel: &'static str,
        shape: LaunchShape,
        args: &KernelArgs,
    ) -> Result<(), DriverError> {
        let fail = |message| DriverError::Kernel { kernel, message };
        // Held for the whole launch: one stream, so work runs in order.
        let mut state = self.lock();
        let start = Instant::now();
        let (entry, regions) = Self::check_launch(&state, kernel, shape, args).map_err(fail)?;
        // The host says these are only read: the kernel must leave them so.
        let inputs = read_only(args);
        let before: Vec<u64> = inputs.iter().map(|&(_, p, n)| fingerprint(p, n)).collect();
        let params = args.param_pointers();
        let call = entry.call;
        let race_check = match self.race_check {
            RaceCheck::All => true,
            RaceCheck::First => state
                .race_checked
                .insert(LaunchKey::new(kernel, shape, args)),
        };
        // SAFETY: the arguments match the entry's signature and point into
        // live buffers with the extents the host computed (checked above).
        run_on_grid(kernel, shape, race_check, &regions, move |ctx| unsafe {
            call(ctx, &params)
        })
        .map_err(fail)?;
        Self::check_guards(&state).map_err(fail)?;
        for (&(i, ptr, bytes), &hash) in inputs.iter().zip(&before) {
            if fingerprint(ptr, bytes) != hash {
                return Err(fail(format!(
                    "argument {i} is passed as read-only, but the kernel wrote to it"
                )));
            }
        }
        if let Some(profile) = state.profile.as_mut() {
            let entry = profile.entry(kernel).or_default();
            entry.0 += 1;
            entry.1 += start.elapsed();
        }
        Ok(())
    }

    fn synchronize(&self) -> Result<(), DriverError> {
        Ok(())
    }

    fn memory_info(&self) -> Result<(usize, usize), DriverError> {
        let used = self.lock().used;
        Ok((self.limit - used, self.limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulsefocus_gpu_device::registry::HOST_ENTRIES;

    #[test]
    fn parses_entries_and_their_params() {
        let ptx = "\
.visible .entry axpy(
\t.param .f32 axpy_param_0,
\t.param .u64 .ptr .align 1 axpy_param_1,
\t.param .u32 axpy_param_2
)
{
}
.visible .entry none(
)
";
        let entries = parse_entries(ptx).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].name, "axpy");
        let kinds: Vec<(&str, usize, bool)> = entries[0]
            .params
            .iter()
            .map(|p| (p.ty.as_str(), p.bytes, p.pointer))
            .collect();
        assert_eq!(
            kinds,
            [("f32", 4, false), ("u64", 8, true), ("u32", 4, false)]
        );
        assert!(entries[1].params.is_empty());
        let bad = ".visible .entry k(\n\t.param .u32 k_param_1\n)\n";
        assert!(parse_entries(bad)
            .unwrap_err()
            .contains("expected parameter k_param_0"));
        let cut = ".visible .entry k(\n\t.param .u32 k_param_0,\n";
        assert!(parse_entries(cut).unwrap_err().contains("ends inside"));
        let odd = ".visible .entry k(\n\t.param .q32 k_param_0\n)\n";
        assert!(parse_entries(odd)
            .unwrap_err()
            .contains("unknown .param type .q32"));
    }

    #[test]
    fn the_registry_matches_the_ptx_entry_for_entry() {
        let entries = ptx_entries().unwrap();
        let mut registry: Vec<&str> = HOST_ENTRIES.iter().map(|e| e.name).collect();
        let mut ptx: Vec<&str> = entries.keys().map(String::as_str).collect();
        registry.sort();
        ptx.sort();
        assert_eq!(registry, ptx);
        for host in HOST_ENTRIES {
            let params = &entries[host.name].params;
            let sizes: Vec<usize> = params.iter().map(|p| p.bytes).collect();
            let pointers: Vec<bool> = params.iter().map(|p| p.pointer).collect();
            assert_eq!(host.param_sizes, &sizes[..], "{}", host.name);
            assert_eq!(host.param_pointers, &pointers[..], "{}", host.name);
        }
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("1MiB"), Ok(1 << 20));
        assert_eq!(parse_memory("512KiB"), Ok(512 << 10));
        assert_eq!(parse_memory("4GiB"), Ok(4 << 30));
        assert_eq!(parse_memory(" 1000 "), Ok(1000));
        assert!(parse_memory("lots")
            .unwrap_err()
            .contains("KiB, MiB or GiB"));
        assert!(parse_memory("0").is_err());
    }

    fn f32_buffer(driver: &EmulatedDriver, values: &[f32]) -> DevicePtr {
        let ptr = driver.alloc(4 * values.len()).unwrap();
        driver
            .copy_to_device(super::super::as_bytes(values), ptr)
            .unwrap();
        ptr
    }

    fn read(driver: &EmulatedDriver, ptr: DevicePtr, len: usize) -> Vec<f32> {
        let mut out = vec![0.0f32; len];
        driver
            .copy_to_host(ptr, super::super::as_bytes_mut(&mut out))
            .unwrap();
        out
    }

    const ONE_BLOCK: LaunchShape = LaunchShape {
        grid: (1, 1, 1),
        block: (32, 1, 1),
    };

    fn pointer(args: &mut KernelArgs, ptr: DevicePtr, bytes: usize, writes: bool) {
        args.raw(ptr, 8, ArgKind::Pointer { bytes, writes });
    }

    /// `axpy(alpha, x, y, n)` arguments over 4 elements.
    fn axpy_args(x: DevicePtr, y: DevicePtr) -> KernelArgs {
        let mut args = KernelArgs::new();
        args.f32(2.0);
        pointer(&mut args, x, 16, false);
        pointer(&mut args, y, 16, true);
        args.u32(4);
        args
    }

    #[test]
    fn runs_a_kernel_from_packed_arguments() {
        let driver = EmulatedDriver::new(1 << 20).unwrap();
        let x = f32_buffer(&driver, &[1.0, 2.0, 3.0, 4.0]);
        let y = f32_buffer(&driver, &[1.0; 4]);
        driver.launch("axpy", ONE_BLOCK, &axpy_args(x, y)).unwrap();
        assert_eq!(read(&driver, y, 4), [3.0, 5.0, 7.0, 9.0]);
        // Swapped buffers give the other result: the order reaches the body.
        driver.launch("axpy", ONE_BLOCK, &axpy_args(y, x)).unwrap();
        assert_eq!(read(&driver, x, 4), [7.0, 12.0, 17.0, 22.0]);
    }

    fn launch_error(
        driver: &EmulatedDriver,
        kernel: &'static str,
        shape: LaunchShape,
        args: &KernelArgs,
    ) -> String {
        driver.launch(kernel, shape, args).unwrap_err().to_string()
    }

    #[test]
    fn abi_mistakes_are_errors_naming_the_kernel() {
        let driver = EmulatedDriver::new(1 << 20).unwrap();
        let x = f32_buffer(&driver, &[1.0; 4]);
        let y = f32_buffer(&driver, &[1.0; 4]);
        let short = f32_buffer(&driver, &[1.0; 3]);

        let mut missing = axpy_args(x, y);
        missing = {
            let mut args = KernelArgs::new();
            for i in 0..missing.len() - 1 {
                args.raw(missing.slot(i), missing.size(i), missing.kind(i));
            }
            args
        };
        assert_eq!(
            launch_error(&driver, "axpy", ONE_BLOCK, &missing),
            "kernel axpy: 3 arguments passed, the PTX entry takes 4"
        );

        let mut wide = KernelArgs::new();
        wide.raw(2.0f64.to_bits(), 8, ArgKind::Scalar);
        pointer(&mut wide, x, 16, false);
        pointer(&mut wide, y, 16, true);
        wide.u32(4);
        assert_eq!(
            launch_error(&driver, "axpy", ONE_BLOCK, &wide),
            "kernel axpy: argument 0 is 8 bytes, the PTX entry's .param 0 is .f32 (4 bytes)"
        );

        let mut scalar_for_pointer = KernelArgs::new();
        scalar_for_pointer.f32(2.0);
        scalar_for_pointer.raw(x, 8, ArgKind::Scalar);
        pointer(&mut scalar_for_pointer, y, 16, true);
        scalar_for_pointer.u32(4);
        assert!(
            launch_error(&driver, "axpy", ONE_BLOCK, &scalar_for_pointer)
                .starts_with("kernel axpy: argument 1 is a scalar")
        );

        let nowhere = axpy_args(0x10, y);
        assert_eq!(
            launch_error(&driver, "axpy", ONE_BLOCK, &nowhere),
            "kernel axpy: argument 1: 0x10 is not in any live buffer"
        );
        driver.free(short).unwrap();
        let freed = axpy_args(short, y);
        assert!(launch_error(&driver, "axpy", ONE_BLOCK, &freed).contains("not in any live buffer"));

        let short = f32_buffer(&driver, &[1.0; 3]);
        let too_short = axpy_args(x, short);
        assert!(
            launch_error(&driver, "axpy", ONE_BLOCK, &too_short)
                .starts_with("kernel axpy: argument 2: 0x")
                && launch_error(&driver, "axpy", ONE_BLOCK, &too_short).ends_with(
                    "is byte 0 of a 12-byte buffer, which leaves 12 bytes; the launch needs 16"
                ),
            "{}",
            launch_error(&driver, "axpy", ONE_BLOCK, &too_short)
        );

        let big_block = LaunchShape {
            grid: (1, 1, 1),
            block: (2048, 1, 1),
        };
        assert!(
            launch_error(&driver, "axpy", big_block, &axpy_args(x, y)).starts_with(
                "kernel axpy: grid (1, 1, 1) block (2048, 1, 1): a block has at most 1024 threads"
            )
        );
        let empty_grid = LaunchShape {
            grid: (0, 1, 1),
            block: (32, 1, 1),
        };
        assert!(launch_error(&driver, "axpy", empty_grid, &axpy_args(x, y)).contains("at least 1"));
        assert_eq!(
            launch_error(&driver, "no_such_kernel", ONE_BLOCK, &axpy_args(x, y)),
            "kernel no_such_kernel: no such .entry in the PTX"
        );
        // Nothing ran: y is untouched by the refused launches.
        assert_eq!(read(&driver, y, 4), [1.0; 4]);
    }

    #[test]
    fn a_write_past_a_buffer_is_caught_by_its_guard() {
        let driver = EmulatedDriver::new(1 << 20).unwrap();
        // `fill(x, n, value)` told to fill 5 elements of a 4-element buffer,
        // with the host claiming (wrongly) that it touches only 4.
        let x = f32_buffer(&driver, &[0.0; 4]);
        let mut args = KernelArgs::new();
        pointer(&mut args, x, 16, true);
        args.u32(5);
        args.f32(1.0);
        let err = launch_error(&driver, "fill", ONE_BLOCK, &args);
        assert!(
            err.starts_with("kernel fill: wrote outside a buffer: the 64 bytes after the end of the 16-byte buffer at 0x"),
            "{err}"
        );
        // Reported once; the buffer itself holds the four values.
        assert_eq!(read(&driver, x, 4), [1.0; 4]);
        let mut args = KernelArgs::new();
        pointer(&mut args, x, 16, true);
        args.u32(4);
        args.f32(2.0);
        driver.launch("fill", ONE_BLOCK, &args).unwrap();
    }

    #[test]
    fn a_buffer_passed_as_read_only_must_stay_so() {
        let driver = EmulatedDriver::new(1 << 20).unwrap();
        let x = f32_buffer(&driver, &[1.0; 4]);
        // `scale(x, n, alpha)` writes x; the host here claims it only reads it.
        let mut args = KernelArgs::new();
        pointer(&mut args, x, 16, false);
        args.u32(4).f32(3.0);
        assert_eq!(
            launch_error(&driver, "scale", ONE_BLOCK, &args),
            "kernel scale: argument 0 is passed as read-only, but the kernel wrote to it"
        );
    }

    #[test]
    fn a_race_is_an_error_naming_the_kernel() {
        let driver = EmulatedDriver::new(1 << 20).unwrap();
        // copy_channels within one buffer, channels 0..2 onto 1..3: a thread
        // reads channel 1 that another writes, so the result depends on
        // which runs first.
        let values: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let buffer = f32_buffer(&driver, &values);
        let mut args = KernelArgs::new();
        pointer(&mut args, buffer, 48, false);
        args.u32(3).u32(0);
        pointer(&mut args, buffer, 48, true);
        args.u32(3).u32(1).u32(2).u32(1).u32(4);
        let err = launch_error(&driver, "copy_channels", ONE_BLOCK, &args);
        assert!(err.starts_with("kernel copy_channels: race: "), "{err}");
    }

    /// `copy_channels` of 3 channels, 0..2 of `src` onto 1..3 of `dst`.
    fn copy_args(src: DevicePtr, dst: DevicePtr) -> KernelArgs {
        let mut args = KernelArgs::new();
        pointer(&mut args, src, 48, false);
        args.u32(3).u32(0);
        pointer(&mut args, dst, 48, true);
        args.u32(3).u32(1).u32(2).u32(1).u32(4);
        args
    }

    #[test]
    fn the_first_launch_of_each_kind_is_race_checked() {
        let values: Vec<f32> = (0..12).map(|i| i as f32).collect();
        for check in [RaceCheck::First, RaceCheck::All] {
            let driver = EmulatedDriver::with_race_check(1 << 20, check).unwrap();
            let (a, b) = (f32_buffer(&driver, &values), f32_buffer(&driver, &values));
            // Between two buffers: no race, and the repeat is not checked.
            driver
                .launch("copy_channels", ONE_BLOCK, &copy_args(a, b))
                .unwrap();
            driver
                .launch("copy_channels", ONE_BLOCK, &copy_args(a, b))
                .unwrap();
            // Within one buffer the arguments overlap: a new kind, checked.
            let racy = copy_args(a, a);
            let err = launch_error(&driver, "copy_channels", ONE_BLOCK, &racy);
            assert!(err.starts_with("kernel copy_channels: race: "), "{err}");
            // Its repeat (on the same values) is checked only when every
            // launch is.
            driver
                .copy_to_device(super::super::as_bytes(&values), a)
                .unwrap();
            let again = driver.launch("copy_channels", ONE_BLOCK, &racy);
            assert_eq!(again.is_err(), check == RaceCheck::All, "{check:?}");
        }
    }

    #[test]
    fn memory_limit_and_accounting() {
        let driver = EmulatedDriver::new(1000).unwrap();
        let a = driver.alloc(600).unwrap();
        assert_eq!(a % 16, 0);
        assert_eq!(driver.memory_info(), Ok((400, 1000)));
        assert_eq!(
            driver.alloc(500),
            Err(DriverError::OutOfMemory { requested: 500 })
        );
        driver.free(a).unwrap();
        assert_eq!(driver.memory_info(), Ok((1000, 1000)));
        assert!(driver.free(a).is_err());
        let b = driver.alloc(1000).unwrap();
        let mut out = [0u8; 8];
        assert!(driver
            .copy_to_host(b + 996, &mut out)
            .unwrap_err()
            .to_string()
            .contains("leaves 4 bytes"));
    }
}
