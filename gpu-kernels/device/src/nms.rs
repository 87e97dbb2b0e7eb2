//! Paddle's `multiclass_nms` on the device, for a batch of images at once,
//! deciding exactly as `pulsefocus_core::yolo::multiclass_nms`:
//!
//! 1. `nms_count_candidates` + `nms_compact_candidates`: the candidates of
//!    all (image, class, box) entries of `scores [N, M, classes]` (the
//!    layout `yolo_decode` writes), in entry order, with the host summing the
//!    per-block counts in between (so the sort below is only as long as
//!    there are candidates). Entry `v = (n * classes + c) * M + m` is a
//!    candidate when its score is above the threshold and `c` is not the
//!    background class; its key is `segment << 32 | descending score` with
//!    `segment = n * classes + c`, its value `v`; the padding up to a power
//!    of two is `u64::MAX`.
//! 2. `bitonic_sort_step` (log2(padded)^2 launches): keys ascending, ties by
//!    entry: each segment's candidates best first, equal scores in box order
//!    (the CPU's stable sort), the non-candidates at the end.
//! 3. `nms_bounds`: where each segment's candidates start in the sorted list.
//! 4. `nms_suppress`: one block per segment walks its first `nms_top_k`
//!    candidates in order, keeping a box unless an already kept box of the
//!    segment overlaps it by more than the threshold (Paddle's jaccard rules,
//!    computed as the CPU computes them); flags in `keep` by sorted position.
//!    It also takes Paddle's adaptive threshold (`eta`) and a cap on the
//!    kept boxes, which `generate_proposals` (`proposals.rs`) uses.
//! 5. With a `keep_top_k`: `nms_rank_keys` + the sort again + `nms_bounds`
//!    per image + `nms_keep_top`: the best `keep_top_k` kept entries of each
//!    image by score, ties in (class, rank) order, flagged 2.
//! 6. `nms_write`: per image, the flagged entries in sorted order (grouped
//!    by class, best first: the CPU's output order) as `[class, score, x1, y1,
//!    x2, y2]` rows, and their count.
//!
//! Every step is deterministic: the sort's order is total (entries are
//! unique), and no two threads write one place.
use crate::{grid_stride, kernel, Ctx};

/// The key of a non-candidate: sorts after every candidate.
pub const NOT_A_CANDIDATE: u64 = u64::MAX;
/// Threads of an `nms_suppress` and an `nms_write` block.
pub const NMS_THREADS: u32 = 128;
/// `keep` flags: dropped, kept by NMS, kept and among the image's best `keep_top_k`.
pub const DROPPED: u32 = 0;
pub const KEPT: u32 = 1;
pub const KEPT_TOP: u32 = 2;

/// `score`'s place in descending order as an ascending `u32`: the bits
/// `f32::total_cmp` orders by (the CPU's sort), inverted.
#[inline(always)]
pub fn descending_score_bits(score: f32) -> u32 {
    let bits = score.to_bits() as i32;
    let ordered = bits ^ ((((bits >> 31) as u32) >> 1) as i32);
    !((ordered as u32) ^ 0x8000_0000)
}

/// Entry `v`'s sort key, or `NOT_A_CANDIDATE` (see the module comment).
#[inline(always)]
unsafe fn candidate_key(
    scores: *const f32,
    classes: u32,
    boxes_per_image: u32,
    score_thresh: f32,
    background: u32,
    v: u32,
) -> u64 {
    let (segment, m) = (v / boxes_per_image, v % boxes_per_image);
    let (n, c) = (segment / classes, segment % classes);
    let score = *scores.add(((n * boxes_per_image + m) * classes + c) as usize);
    if c != background && score > score_thresh {
        ((segment as u64) << 32) | descending_score_bits(score) as u64
    } else {
        NOT_A_CANDIDATE
    }
}

/// The entries `[from, to)` thread `tid` of block `block` (of `blocks`, of
/// `threads` each) looks at: each block one contiguous span, each thread one
/// contiguous piece of it, in order. `entries` is below 2^31.
#[inline(always)]
fn piece(entries: u32, blocks: u32, block: u32, threads: u32, tid: u32) -> (u32, u32) {
    let span = entries.div_ceil(blocks);
    let block_from = (block * span).min(entries);
    let block_to = (block_from + span).min(entries);
    let piece = (block_to - block_from).div_ceil(threads);
    let from = (block_from + tid * piece).min(block_to);
    (from, (from + piece).min(block_to))
}

/// Shared scratch for [`block_exclusive_sum`] (`NMS_THREADS` threads a
/// block); declare it once at the top of a kernel.
macro_rules! scan_scratch {
    ($ctx:ident) => {
        $crate::shared_array!($ctx, u32, $crate::nms::NMS_THREADS as usize + 1)
    };
}
pub(crate) use scan_scratch;

/// Each thread's `count` summed over the block's threads before it, and the
/// whole block's sum: thread 0 adds them up in order in `scratch` (one
/// `u32` per thread and one more, from [`scan_scratch!`]). All threads must
/// call it (it synchronises); the scratch may be used again by the next
/// call.
///
/// # Safety
/// `scratch` holds `block_dim_x() + 1` values.
#[inline(always)]
pub unsafe fn block_exclusive_sum(ctx: &Ctx, scratch: *mut u32, count: u32) -> (u32, u32) {
    let (tid, threads) = (ctx.thread_x(), ctx.block_dim_x());
    *scratch.add(tid as usize) = count;
    ctx.sync_threads();
    if tid == 0 {
        let mut total = 0;
        let mut t = 0;
        while t < threads {
            let here = *scratch.add(t as usize);
            *scratch.add(t as usize) = total;
            total += here;
            t += 1;
        }
        *scratch.add(threads as usize) = total;
    }
    ctx.sync_threads();
    (*scratch.add(tid as usize), *scratch.add(threads as usize))
}

/// Step 1a for any layout of `entries` entries whose keys `key_of` gives:
/// `counts[b]` = how many of block `b`'s span are candidates. `scratch`
/// comes from [`scan_scratch!`].
///
/// # Safety
/// `counts` holds one `u32` per block; `key_of` reads only valid entries.
#[inline(always)]
pub unsafe fn count_candidates(
    ctx: &Ctx,
    scratch: *mut u32,
    entries: u32,
    key_of: impl Fn(u32) -> u64,
    counts: *mut u32,
) {
    let (tid, block) = (ctx.thread_x(), ctx.block_x());
    let (from, to) = piece(entries, ctx.grid_dim_x(), block, ctx.block_dim_x(), tid);
    let mut here = 0;
    let mut v = from;
    while v < to {
        here += (key_of(v) != NOT_A_CANDIDATE) as u32;
        v += 1;
    }
    let (_, total) = block_exclusive_sum(ctx, scratch, here);
    if tid == 0 {
        *counts.add(block as usize) = total;
    }
}

/// Step 1b, on the grid of [`count_candidates`]: each block's candidates,
/// in entry order, from `offsets[b]` on (`offsets [blocks + 1]`: the counts
/// summed before each block, then the total of these and any earlier
/// spans) as `keys` and `values` (`value_base + v`); then `keys[total..
/// padded]` = `NOT_A_CANDIDATE`, `values` their index (nothing when
/// `padded` is 0). `scratch` comes from [`scan_scratch!`].
///
/// # Safety
/// As [`count_candidates`]; `keys` and `values` hold `padded` and every
/// candidate's position.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub unsafe fn compact_candidates(
    ctx: &Ctx,
    scratch: *mut u32,
    entries: u32,
    key_of: impl Fn(u32) -> u64,
    value_base: u32,
    offsets: *const u32,
    padded: u32,
    keys: *mut u64,
    values: *mut u32,
) {
    let (tid, block, threads) = (ctx.thread_x(), ctx.block_x(), ctx.block_dim_x());
    let (from, to) = piece(entries, ctx.grid_dim_x(), block, threads, tid);
    let mut here = 0;
    let mut v = from;
    while v < to {
        here += (key_of(v) != NOT_A_CANDIDATE) as u32;
        v += 1;
    }
    let (before, _) = block_exclusive_sum(ctx, scratch, here);
    let mut out = *offsets.add(block as usize) + before;
    let mut v = from;
    while v < to {
        let key = key_of(v);
        if key != NOT_A_CANDIDATE {
            *keys.add(out as usize) = key;
            *values.add(out as usize) = value_base + v;
            out += 1;
        }
        v += 1;
    }
    let total = *offsets.add(ctx.grid_dim_x() as usize);
    let mut i = total + block * threads + tid;
    while i < padded {
        *keys.add(i as usize) = NOT_A_CANDIDATE;
        *values.add(i as usize) = i;
        i += ctx.grid_dim_x() * threads;
    }
}

kernel! {
    /// Step 1a, `NMS_THREADS` threads a block: `counts[b]` = how many of block
    /// `b`'s span of the `batch * classes * boxes_per_image` entries are
    /// candidates (`background` is a class never reported, `classes` for none).
    pub fn nms_count_candidates(ctx, scores: *const f32, batch: u32, classes: u32, boxes_per_image: u32,
        score_thresh: f32, background: u32, counts: *mut u32) {
        let scratch = scan_scratch!(ctx);
        let key_of = |v| candidate_key(scores, classes, boxes_per_image, score_thresh, background, v);
        count_candidates(ctx, scratch, batch * classes * boxes_per_image, key_of, counts);
    }
}

kernel! {
    /// Step 1b, the grid of `nms_count_candidates`: its entries compacted by
    /// [`compact_candidates`], values the entries.
    pub fn nms_compact_candidates(ctx, scores: *const f32, batch: u32, classes: u32, boxes_per_image: u32,
        score_thresh: f32, background: u32, offsets: *const u32, padded: u32,
        keys: *mut u64, values: *mut u32) {
        let scratch = scan_scratch!(ctx);
        let key_of = |v| candidate_key(scores, classes, boxes_per_image, score_thresh, background, v);
        let entries = batch * classes * boxes_per_image;
        compact_candidates(ctx, scratch, entries, key_of, 0, offsets, padded, keys, values);
    }
}

kernel! {
    /// One compare-exchange stage of an ascending bitonic sort of `padded` (a
    /// power of two) keys carrying values; equal keys order by value. Host
    /// loop: `k = 2, 4, .., padded; j = k/2, k/4, .., 1`.
    pub fn bitonic_sort_step(ctx, keys: *mut u64, values: *mut u32, padded: u32, j: u32, k: u32) {
        grid_stride(ctx, padded, |i| {
            let i = i as u32;
            let partner = i ^ j;
            if partner <= i {
                return;
            }
            let (ki, kp) = (*keys.add(i as usize), *keys.add(partner as usize));
            let (vi, vp) = (*values.add(i as usize), *values.add(partner as usize));
            // "p should come before i" in ascending order.
            let p_first = kp < ki || (kp == ki && vp < vi);
            let ascending_run = i & k == 0;
            if p_first == ascending_run {
                *keys.add(i as usize) = kp;
                *keys.add(partner as usize) = ki;
                *values.add(i as usize) = vp;
                *values.add(partner as usize) = vi;
            }
        });
    }
}

kernel! {
    /// Step 3: `bounds[s]` = the first sorted position whose key is at least
    /// `s << 32`, for `s <= segments`: segment `s`'s candidates are
    /// `bounds[s]..bounds[s + 1]`, and `bounds[segments]` is how many there are.
    pub fn nms_bounds(ctx, keys: *const u64, padded: u32, segments: u32, bounds: *mut u32) {
        grid_stride(ctx, segments + 1, |s| {
            let target = (s as u64) << 32;
            let (mut low, mut high) = (0u32, padded);
            while low < high {
                let mid = low + (high - low) / 2;
                if *keys.add(mid as usize) < target {
                    low = mid + 1;
                } else {
                    high = mid;
                }
            }
            *bounds.add(s) = low;
        });
    }
}

/// Box `row` of `boxes [rows, 4]`.
#[inline(always)]
unsafe fn load_box(boxes: *const f32, row: u32) -> [f32; 4] {
    let b = boxes.add(row as usize * 4);
    [*b, *b.add(1), *b.add(2), *b.add(3)]
}

/// Paddle's `BBoxArea`: 0 for an inverted box, `pixel` added per side.
#[inline(always)]
pub fn box_area(b: [f32; 4], pixel: f32) -> f32 {
    if b[2] < b[0] || b[3] < b[1] {
        return 0.0;
    }
    (b[2] - b[0] + pixel) * (b[3] - b[1] + pixel)
}

/// How much the kept box `k` overlaps the later `candidate`: Paddle's
/// `JaccardOverlap(candidate, k)`, written operation for operation as the
/// CPU's `KeptBoxes::overlaps_any`, or -inf when they are apart (which no
/// threshold lets suppress). The candidate is suppressed when the largest
/// overlap with a kept box is above the threshold: the CPU's "any kept box
/// with `!apart & (iou > threshold)`", as `f32::max` passes over a NaN IoU
/// the way `>` does.
#[inline(always)]
pub fn overlap(k: [f32; 4], k_area: f32, candidate: [f32; 4], area: f32, pixel: f32) -> f32 {
    let b = candidate;
    let apart = (k[0] > b[2]) | (k[2] < b[0]) | (k[1] > b[3]) | (k[3] < b[1]);
    let inter =
        (b[2].min(k[2]) - b[0].max(k[0]) + pixel) * (b[3].min(k[3]) - b[1].max(k[1]) + pixel);
    let iou = inter / (area + k_area - inter);
    if apart {
        f32::NEG_INFINITY
    } else {
        iou
    }
}

kernel! {
    /// Step 4, one block of `NMS_THREADS` per segment (blocks loop over the
    /// segments): greedy NMS of the segment's first `top_k` candidates in
    /// sorted order (the CPU's `yolo::nms::suppress`): a candidate is kept
    /// unless an already kept box overlaps it by more than the threshold,
    /// which starts at `iou_thresh` and, with `eta < 1` (Paddle's adaptive
    /// NMS), is multiplied by `eta` after each kept box while above 0.5; the
    /// walk stops after `max_kept` kept boxes. `keep[p]` = `KEPT` or
    /// `DROPPED` for every sorted position `p` of the segment's candidates;
    /// `overlaps[p]` (scratch) is the largest overlap of candidate `p` with
    /// the boxes kept so far. An infinite threshold suppresses nothing (the
    /// overlaps are then not computed). Entry `v`'s box is row `(v /
    /// boxes_per_image / classes) * boxes_per_image + v % boxes_per_image`
    /// of `boxes`. `pixel` is 1 for Paddle's `normalized: false`, else 0.
    pub fn nms_suppress(ctx, values: *const u32, bounds: *const u32, boxes: *const f32,
        classes: u32, boxes_per_image: u32, segments: u32, top_k: u32, iou_thresh: f32, eta: f32,
        max_kept: u32, pixel: f32, keep: *mut u32, overlaps: *mut f32) {
        let tid = ctx.thread_x();
        let threads = ctx.block_dim_x();
        let box_row = |p: u32| {
            let v = *values.add(p as usize);
            let (segment, m) = (v / boxes_per_image, v % boxes_per_image);
            segment / classes * boxes_per_image + m
        };
        let mut segment = ctx.block_x();
        while segment < segments {
            let (start, end) = (*bounds.add(segment as usize), *bounds.add(segment as usize + 1));
            let count = (end - start).min(top_k);
            let mut r = tid;
            while r < end - start {
                *overlaps.add((start + r) as usize) = f32::NEG_INFINITY;
                r += threads;
            }
            ctx.sync_threads();
            // Every thread walks the candidates and decides alike, so the
            // branches and their barrier are uniform: candidate i's overlap
            // was last written before the previous barrier, and a kept box
            // raises only later candidates' overlaps. Thread i % threads
            // records the decision (no thread reads `keep` here).
            let mut threshold = iou_thresh;
            let mut kept = 0;
            let mut i = 0;
            while i < count && kept < max_kept {
                let suppressed = *overlaps.add((start + i) as usize) > threshold;
                let keep_i = !suppressed;
                if i % threads == tid {
                    *keep.add((start + i) as usize) = if keep_i { KEPT } else { DROPPED };
                }
                if keep_i {
                    kept += 1;
                    if kept < max_kept && threshold < f32::INFINITY {
                        let k = load_box(boxes, box_row(start + i));
                        let k_area = box_area(k, pixel);
                        let mut j = i + 1 + tid;
                        while j < count {
                            let candidate = load_box(boxes, box_row(start + j));
                            let area = box_area(candidate, pixel);
                            let o = overlap(k, k_area, candidate, area, pixel);
                            let slot = overlaps.add((start + j) as usize);
                            *slot = (*slot).max(o);
                            j += threads;
                        }
                        ctx.sync_threads();
                    }
                    if eta < 1.0 && threshold > 0.5 {
                        threshold *= eta;
                    }
                }
                i += 1;
            }
            // Past where the walk stopped (the top_k, or max_kept kept):
            // dropped.
            let mut r = i + tid;
            while r < end - start {
                *keep.add((start + r) as usize) = DROPPED;
                r += threads;
            }
            segment += ctx.grid_dim_x();
        }
    }
}

kernel! {
    /// Step 5a: for the keep_top_k sort, `keys2[p] = n << 32 | (keys[p]'s
    /// score bits)` for the kept candidates (image `n`), else not a
    /// candidate; `values2[p] = p`, so that equal scores keep sorted-position
    /// order: class, then rank (the CPU's stable sort over its class-then-rank list).
    pub fn nms_rank_keys(ctx, keys: *const u64, keep: *const u32, classes: u32, padded: u32,
        keys2: *mut u64, values2: *mut u32) {
        grid_stride(ctx, padded, |p| {
            let key = *keys.add(p);
            let mut key2 = NOT_A_CANDIDATE;
            // Only candidates have a `keep` flag.
            if key != NOT_A_CANDIDATE && *keep.add(p) == KEPT {
                let image = (key >> 32) / classes as u64;
                key2 = (image << 32) | (key & 0xFFFF_FFFF);
            }
            *keys2.add(p) = key2;
            *values2.add(p) = p as u32;
        });
    }
}

kernel! {
    /// Step 5b, after sorting `keys2` and `image_bounds = nms_bounds(keys2,
    /// .., batch)`: the first `keep_top_k` kept entries of each image are
    /// flagged `KEPT_TOP` in `keep` (at their position in the first sort).
    pub fn nms_keep_top(ctx, keys2: *const u64, values2: *const u32, image_bounds: *const u32,
        padded: u32, keep_top_k: u32, keep: *mut u32) {
        grid_stride(ctx, padded, |j| {
            let key = *keys2.add(j);
            if key != NOT_A_CANDIDATE {
                let image = (key >> 32) as usize;
                if j as u32 - *image_bounds.add(image) < keep_top_k {
                    *keep.add(*values2.add(j) as usize) = KEPT_TOP;
                }
            }
        });
    }
}

kernel! {
    /// Step 6, one block of `NMS_THREADS` per image (blocks loop over the
    /// images): the image's candidates flagged `want` (`KEPT`, or `KEPT_TOP`
    /// after a keep_top_k), in sorted order, as rows `[class, score, x1, y1,
    /// x2, y2]` of `detections [batch, capacity, 6]`; `counts[n]` = how many
    /// (rows beyond `capacity` are not written; the host sizes it so there are none).
    pub fn nms_write(ctx, values: *const u32, bounds: *const u32, keep: *const u32,
        boxes: *const f32, scores: *const f32, batch: u32, classes: u32, boxes_per_image: u32,
        want: u32, capacity: u32, detections: *mut f32, counts: *mut u32) {
        let scratch = scan_scratch!(ctx);
        let tid = ctx.thread_x();
        let threads = ctx.block_dim_x();
        let mut n = ctx.block_x();
        while n < batch {
            // Each thread takes one contiguous piece of the image's
            // candidates, counts its flagged ones, and writes them after the
            // pieces before it.
            let first = *bounds.add((n * classes) as usize);
            let last = *bounds.add(((n + 1) * classes) as usize);
            let piece = (last - first).div_ceil(threads);
            let from = first + (tid * piece).min(last - first);
            let to = (from + piece).min(last);
            let mut found = 0;
            let mut p = from;
            while p < to {
                found += (*keep.add(p as usize) == want) as u32;
                p += 1;
            }
            let (mut out, total) = block_exclusive_sum(ctx, scratch, found);
            if tid == 0 {
                *counts.add(n as usize) = total;
            }
            let mut p = from;
            while p < to {
                if *keep.add(p as usize) == want && out < capacity {
                    let v = *values.add(p as usize);
                    let (segment, m) = (v / boxes_per_image, v % boxes_per_image);
                    let class = segment % classes;
                    let row = n * boxes_per_image + m;
                    let b = load_box(boxes, row);
                    let d = detections.add(((n * capacity + out) * 6) as usize);
                    *d = class as f32;
                    *d.add(1) = *scores.add((row * classes + class) as usize);
                    *d.add(2) = b[0];
                    *d.add(3) = b[1];
                    *d.add(4) = b[2];
                    *d.add(5) = b[3];
                }
                out += (*keep.add(p as usize) == want) as u32;
                p += 1;
            }
            // The offsets are rewritten for the next image.
            ctx.sync_threads();
            n += ctx.grid_dim_x();
        }
    }
}

/// The NMS settings the kernels take, and the launch sequence, on the host
/// side of the emulator: what the host crate's launch code does with a GPU,
/// for the tests here.
#[cfg(test)]
pub(crate) mod emulated {
    use super::*;
    use crate::emu::{launch, launch_independent, DeviceBuf, Dim3};
    use pulsefocus_core::yolo::{Detection, NmsConfig};

    const GRID: Dim3 = Dim3::x(3);
    const BLOCK: Dim3 = Dim3::x(32);

    pub(crate) fn sort(keys: &DeviceBuf<u64>, values: &DeviceBuf<u32>) {
        let padded = keys.len() as u32;
        let mut k = 2;
        while k <= padded {
            let mut j = k / 2;
            while j > 0 {
                launch_independent(GRID, BLOCK, |c| unsafe {
                    bitonic_sort_step(c, keys.ptr(), values.ptr(), padded, j, k)
                });
                j /= 2;
            }
            k *= 2;
        }
    }

    pub(crate) fn bounds(keys: &DeviceBuf<u64>, segments: u32) -> DeviceBuf<u32> {
        let bounds = DeviceBuf::filled(segments as usize + 1, u32::MAX);
        launch_independent(GRID, BLOCK, |c| unsafe {
            nms_bounds(c, keys.ptr(), keys.len() as u32, segments, bounds.ptr())
        });
        bounds
    }

    /// Steps 1-5's results: the sorted candidates, each (image, class)'s
    /// bounds, and the flags; the kept entries are those flagged `want`, at
    /// most `capacity` per image.
    pub(crate) struct Kept {
        pub keys: DeviceBuf<u64>,
        pub values: DeviceBuf<u32>,
        pub bounds: DeviceBuf<u32>,
        pub keep: DeviceBuf<u32>,
        pub want: u32,
        pub capacity: u32,
    }

    /// Steps 1-5 of `batch` images' `scores [N, M, classes]` with `boxes
    /// [N, M, 4]`, or with `class_boxes` one box per entry (`[N, classes,
    /// M, 4]`, entry order); None when nothing is a candidate.
    pub(crate) fn kept(
        cfg: &NmsConfig,
        boxes: &DeviceBuf<f32>,
        scores: &DeviceBuf<f32>,
        [batch, classes, m]: [u32; 3],
        class_boxes: bool,
    ) -> Option<Kept> {
        let segments = batch * classes;
        let background = cfg.background_label.map_or(classes, |b| b as u32);
        // A block count that does not divide the entries evenly.
        let blocks = 3;
        let counts = DeviceBuf::filled(blocks as usize, u32::MAX);
        launch(Dim3::x(blocks), Dim3::x(NMS_THREADS), |c| unsafe {
            nms_count_candidates(
                c,
                scores.ptr(),
                batch,
                classes,
                m,
                cfg.score_threshold,
                background,
                counts.ptr(),
            )
        });
        let mut offsets = vec![0u32];
        for count in counts.to_vec() {
            offsets.push(offsets[offsets.len() - 1] + count);
        }
        let total = offsets[blocks as usize];
        if total == 0 {
            return None;
        }
        let padded = total.next_power_of_two();
        let offsets = DeviceBuf::new(&offsets);
        let keys = DeviceBuf::filled(padded as usize, 0u64);
        let values = DeviceBuf::filled(padded as usize, 0u32);
        launch(Dim3::x(blocks), Dim3::x(NMS_THREADS), |c| unsafe {
            nms_compact_candidates(
                c,
                scores.ptr(),
                batch,
                classes,
                m,
                cfg.score_threshold,
                background,
                offsets.ptr(),
                padded,
                keys.ptr(),
                values.ptr(),
            )
        });
        sort(&keys, &values);
        let segment_bounds = bounds(&keys, segments);
        // Flags a kernel reads without having written fail the comparison.
        let keep = DeviceBuf::filled(padded as usize, 7u32);
        let overlaps = DeviceBuf::filled(padded as usize, f32::NAN);
        let top_k = cfg.nms_top_k.map_or(u32::MAX, |k| k.min(m as usize) as u32);
        let pixel = if cfg.normalized { 0.0 } else { 1.0 };
        // One box per entry: `nms_suppress` reads row `v` with one class of
        // one box per image.
        let (box_classes, box_m) = if class_boxes { (1, 1) } else { (classes, m) };
        launch(Dim3::x(segments.min(3)), Dim3::x(NMS_THREADS), |c| unsafe {
            nms_suppress(
                c,
                values.ptr(),
                segment_bounds.ptr(),
                boxes.ptr(),
                box_classes,
                box_m,
                segments,
                top_k,
                cfg.nms_threshold,
                1.0,
                u32::MAX,
                pixel,
                keep.ptr(),
                overlaps.ptr(),
            )
        });
        let mut want = KEPT;
        let capacity = match cfg.keep_top_k {
            Some(keep_top_k) => {
                let (keys2, values2) = (
                    DeviceBuf::filled(padded as usize, 0u64),
                    DeviceBuf::filled(padded as usize, 0u32),
                );
                launch_independent(GRID, BLOCK, |c| unsafe {
                    nms_rank_keys(
                        c,
                        keys.ptr(),
                        keep.ptr(),
                        classes,
                        padded,
                        keys2.ptr(),
                        values2.ptr(),
                    )
                });
                sort(&keys2, &values2);
                let image_bounds = bounds(&keys2, batch);
                launch_independent(GRID, BLOCK, |c| unsafe {
                    nms_keep_top(
                        c,
                        keys2.ptr(),
                        values2.ptr(),
                        image_bounds.ptr(),
                        padded,
                        keep_top_k as u32,
                        keep.ptr(),
                    )
                });
                want = KEPT_TOP;
                keep_top_k as u32
            }
            None => classes * top_k.min(m),
        };
        Some(Kept {
            keys,
            values,
            bounds: segment_bounds,
            keep,
            want,
            capacity,
        })
    }

    /// Multiclass NMS of `batch` images' decoded `boxes [N, M, 4]` and
    /// `scores [N, M, classes]` through the kernels.
    pub fn multiclass_nms(
        cfg: &NmsConfig,
        boxes: &DeviceBuf<f32>,
        scores: &DeviceBuf<f32>,
        batch: usize,
        classes: usize,
    ) -> Vec<Vec<Detection>> {
        let m = boxes.len() / 4 / batch;
        let (batch, classes, m) = (batch as u32, classes as u32, m as u32);
        let Some(Kept {
            values,
            bounds: segment_bounds,
            keep,
            want,
            capacity,
            ..
        }) = kept(cfg, boxes, scores, [batch, classes, m], false)
        else {
            return vec![Vec::new(); batch as usize];
        };
        let detections = DeviceBuf::filled((batch * capacity.max(1) * 6) as usize, f32::NAN);
        let counts = DeviceBuf::filled(batch as usize, u32::MAX);
        launch(Dim3::x(batch.min(2)), Dim3::x(NMS_THREADS), |c| unsafe {
            nms_write(
                c,
                values.ptr(),
                segment_bounds.ptr(),
                keep.ptr(),
                boxes.ptr(),
                scores.ptr(),
                batch,
                classes,
                m,
                want,
                capacity,
                detections.ptr(),
                counts.ptr(),
            )
        });
        let (detections, counts) = (detections.to_vec(), counts.to_vec());
        (0..batch as usize)
            .map(|n| {
                assert!(counts[n] <= capacity, "more detections than the capacity");
                let rows = &detections[n * capacity as usize * 6..];
                rows.chunks_exact(6)
                    .take(counts[n] as usize)
                    .map(|d| Detection {
                        class: d[0] as usize,
                        score: d[1],
                        bbox: [d[2], d[3], d[4], d[5]],
                    })
                    .collect()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::emulated;
    use super::*;
    use crate::emu::{launch_independent, DeviceBuf, Dim3};
    use proptest::prelude::*;
    use pulsefocus_core::yolo::{multiclass_nms, Detection, NmsConfig};

    #[test]
    fn descending_score_bits_order_as_total_cmp_reversed() {
        let values = [
            f32::NEG_INFINITY,
            -2.5,
            -1e-30,
            -0.0,
            0.0,
            1e-40,
            0.01,
            0.25,
            0.2500001,
            1.0,
            f32::INFINITY,
        ];
        for a in values {
            for b in values {
                assert_eq!(
                    descending_score_bits(a).cmp(&descending_score_bits(b)),
                    b.total_cmp(&a),
                    "{a} vs {b}"
                );
            }
        }
    }

    proptest! {
        #[test]
        fn bitonic_sort_orders_keys_then_values(keys in prop::collection::vec(0u64..6, 1..70)) {
            let padded = keys.len().next_power_of_two();
            let mut padded_keys = keys.clone();
            padded_keys.resize(padded, NOT_A_CANDIDATE);
            let k = DeviceBuf::new(&padded_keys);
            // Values in reverse, so the ties' order comes from the sort.
            let v = DeviceBuf::new(&(0..padded as u32).rev().collect::<Vec<_>>());
            let mut want: Vec<(u64, u32)> = padded_keys.iter().copied().zip((0..padded as u32).rev()).collect();
            want.sort();
            let mut kk = 2;
            while kk <= padded as u32 {
                let mut j = kk / 2;
                while j > 0 {
                    launch_independent(Dim3::x(2), Dim3::x(8), |c| unsafe {
                        bitonic_sort_step(c, k.ptr(), v.ptr(), padded as u32, j, kk)
                    });
                    j /= 2;
                }
                kk *= 2;
            }
            let got: Vec<(u64, u32)> = k.to_vec().into_iter().zip(v.to_vec()).collect();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn bounds_are_lower_bounds(mut segments_of in prop::collection::vec(0u64..5, 0..40), extra in 0usize..9) {
            segments_of.sort();
            let mut keys: Vec<u64> = segments_of.iter().enumerate().map(|(i, &s)| s << 32 | i as u64).collect();
            keys.resize(keys.len() + extra + 1, NOT_A_CANDIDATE);
            let kb = DeviceBuf::new(&keys);
            let bounds = DeviceBuf::filled(6, u32::MAX);
            launch_independent(Dim3::x(1), Dim3::x(4), |c| unsafe {
                nms_bounds(c, kb.ptr(), keys.len() as u32, 5, bounds.ptr())
            });
            let want: Vec<u32> = (0..6u64).map(|s| keys.partition_point(|&k| k < s << 32) as u32).collect();
            prop_assert_eq!(bounds.to_vec(), want);
        }
    }

    /// The CPU's `multiclass_nms` on each image.
    fn cpu_nms(
        cfg: &NmsConfig,
        boxes: &[f32],
        scores: &[f32],
        batch: usize,
        classes: usize,
    ) -> Vec<Vec<Detection>> {
        let m = boxes.len() / 4 / batch;
        (0..batch)
            .map(|n| {
                let b: Vec<[f32; 4]> = boxes[n * m * 4..(n + 1) * m * 4]
                    .chunks_exact(4)
                    .map(|b| [b[0], b[1], b[2], b[3]])
                    .collect();
                multiclass_nms(
                    cfg,
                    &b,
                    &scores[n * m * classes..(n + 1) * m * classes],
                    classes,
                )
            })
            .collect()
    }

    fn device_nms(
        cfg: &NmsConfig,
        boxes: &[f32],
        scores: &[f32],
        batch: usize,
        classes: usize,
    ) -> Vec<Vec<Detection>> {
        let (b, s) = (DeviceBuf::new(boxes), DeviceBuf::new(scores));
        emulated::multiclass_nms(cfg, &b, &s, batch, classes)
    }

    /// Detections compared to the bit (`Detection`'s `==` would call
    /// -0.0 and 0.0 equal).
    fn bits(d: &[Vec<Detection>]) -> Vec<Vec<(usize, u32, [u32; 4])>> {
        d.iter()
            .map(|image| {
                image
                    .iter()
                    .map(|d| (d.class, d.score.to_bits(), d.bbox.map(f32::to_bits)))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn by_hand_iou_at_the_threshold_ties_top_k_and_background() {
        // Pixel boxes: b overlaps a by exactly 0.5 (50 / (100 + 50 - 50)),
        // c overlaps a by 0.81 (more than 0.5), d is apart.
        #[rustfmt::skip]
        let boxes = [
            0.0, 0.0, 9.0, 9.0,
            0.0, 0.0, 9.0, 4.0,
            0.0, 0.0, 9.0, 8.1,
            50.0, 50.0, 60.0, 60.0,
        ];
        // Class 0: a and c tie (a first, by box order), b and d tie. Class 1: all below 0.1.
        #[rustfmt::skip]
        let scores = [
            0.9, 0.05,
            0.5, 0.0,
            0.9, 0.05,
            0.5, 0.1,
        ];
        let cfg = NmsConfig {
            score_threshold: 0.1,
            nms_top_k: None,
            keep_top_k: None,
            nms_threshold: 0.5,
            normalized: false,
            background_label: None,
        };
        let got = device_nms(&cfg, &boxes, &scores, 1, 2);
        let want = cpu_nms(&cfg, &boxes, &scores, 1, 2);
        assert_eq!(bits(&got), bits(&want));
        // a kept, c suppressed, b kept (IoU exactly 0.5 is not "more than"), d kept.
        let kept: Vec<[f32; 4]> = got[0].iter().map(|d| d.bbox).collect();
        assert_eq!(
            kept,
            vec![
                [0.0, 0.0, 9.0, 9.0],
                [0.0, 0.0, 9.0, 4.0],
                [50.0, 50.0, 60.0, 60.0]
            ]
        );

        for (nms_top_k, keep_top_k, background_label) in [
            (Some(1), None, None),
            (Some(3), Some(2), None),
            (None, Some(0), None),
            (Some(0), None, None),
            (None, None, Some(0)),
            (None, Some(1), Some(1)),
        ] {
            let cfg = NmsConfig {
                nms_top_k,
                keep_top_k,
                background_label,
                ..cfg.clone()
            };
            let got = device_nms(&cfg, &boxes, &scores, 1, 2);
            assert_eq!(
                bits(&got),
                bits(&cpu_nms(&cfg, &boxes, &scores, 1, 2)),
                "{cfg:?}"
            );
        }
        let high = NmsConfig {
            score_threshold: 0.95,
            ..cfg
        };
        assert_eq!(device_nms(&high, &boxes, &scores, 1, 2), vec![Vec::new()]);
    }

    /// Boxes on an integer grid (so that many IoUs are exact fractions,
    /// some exactly at the threshold), some inverted or degenerate, and
    /// scores from a few levels (so that ties are common), with classes that
    /// have no box above the threshold.
    fn batch_strategy() -> impl Strategy<Value = (usize, usize, Vec<f32>, Vec<f32>)> {
        (1usize..4, 1usize..5, 1usize..40).prop_flat_map(|(batch, classes, m)| {
            let corner = (0u8..12, 0u8..12, 0u8..8, 0u8..8);
            (
                Just(batch),
                Just(classes),
                prop::collection::vec(corner, batch * m),
                prop::collection::vec(0u8..10, batch * m * classes),
                prop::collection::vec(any::<bool>(), classes),
            )
                .prop_map(|(batch, classes, corners, levels, silent)| {
                    let boxes = corners
                        .iter()
                        .flat_map(|&(x, y, w, h)| {
                            let (x, y) = (x as f32, y as f32);
                            // w == 0 makes an inverted box in pixel mode's eyes, h == 7 a flat one.
                            [
                                x,
                                y,
                                x + w as f32 - 1.0,
                                y + if h == 7 { 0.0 } else { h as f32 },
                            ]
                        })
                        .collect();
                    let scores = levels
                        .iter()
                        .enumerate()
                        .map(|(i, &l)| {
                            if silent[i % classes] {
                                0.0
                            } else {
                                l as f32 / 8.0
                            }
                        })
                        .collect();
                    (batch, classes, boxes, scores)
                })
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// The kernels' detections equal the CPU's `multiclass_nms`, to the
        /// bit and in the same order, for every setting.
        #[test]
        fn equals_the_cpu_multiclass_nms(
            (batch, classes, boxes, scores) in batch_strategy(),
            score_threshold in prop_oneof![Just(0.0f32), Just(0.125), 0.0f32..1.0],
            nms_top_k in prop::option::of(0usize..12),
            keep_top_k in prop::option::of(0usize..20),
            nms_threshold in prop_oneof![Just(0.5f32), Just(0.25), Just(0.0), 0.0f32..1.0],
            normalized: bool,
            background in prop::option::of(0usize..5),
        ) {
            let cfg = NmsConfig {
                score_threshold,
                nms_top_k,
                keep_top_k,
                nms_threshold,
                normalized,
                background_label: background,
            };
            let want = cpu_nms(&cfg, &boxes, &scores, batch, classes);
            let got = device_nms(&cfg, &boxes, &scores, batch, classes);
            prop_assert_eq!(bits(&got), bits(&want));
        }
    }
}
