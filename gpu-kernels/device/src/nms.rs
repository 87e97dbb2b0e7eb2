//! Non-maximum suppression on the device, in four launches:
//! 1. `nms_sort_keys`: candidate keys (score, or -inf below the threshold);
//! 2. `bitonic_sort_step` (log2(n)^2 launches): keys descending with their
//!    indices; the host then picks each class's best `top_k` from them
//!    ([`per_class_candidates`]: top-k before NMS, per class as in Paddle);
//! 3. `nms_gather_boxes` + `nms_mask`: the 64-box bitmask scheme, each thread
//!    comparing one box with 64 others and writing one `u64` of "I suppress
//!    these"; class-aware by offsetting each box by `class * class_offset`,
//!    so boxes of different classes never overlap;
//! 4. `nms_reduce`: one block walks the boxes in score order, keeping a box
//!    unless an earlier kept box suppressed it, and ORs in its mask row.
//!
//! Candidates are (box, class) pairs: index `i` of `scores [boxes, classes]`
//! is box `i / classes`, class `i % classes`. IoU follows Paddle's
//! `multiclass_nms`: `pixel_offset` 1 adds one to widths and heights (its
//! `normalized: false`, YOLOv3's setting), 0 uses them as they are.
use crate::{grid_stride, kernel, shared_array};

/// Boxes per mask word (and threads per `nms_mask` block).
pub const NMS_BLOCK: u32 = 64;
/// Most candidates `nms_reduce` handles: its removed-bits live in shared memory.
pub const NMS_MAX_BOXES: u32 = 32768;
/// Threads of the single `nms_reduce` block.
pub const NMS_REDUCE_THREADS: u32 = 256;

kernel! {
    /// `keys[i] = scores[i]` where above `score_thresh`, else -inf; `values[i] = i`;
    /// padding entries `count..padded` get -inf (the sort length is a power of two).
    pub fn nms_sort_keys(ctx, scores: *const f32, count: u32, padded: u32, score_thresh: f32, keys: *mut f32, values: *mut u32) {
        grid_stride(ctx, padded, |i| {
            let s = if (i as u32) < count { *scores.add(i) } else { f32::NEG_INFINITY };
            *keys.add(i) = if s > score_thresh { s } else { f32::NEG_INFINITY };
            *values.add(i) = i as u32;
        });
    }
}

kernel! {
    /// One compare-exchange stage of a descending bitonic sort of `padded`
    /// (a power of two) keys carrying values. Host loop:
    /// `k = 2, 4, .., padded; j = k/2, k/4, .., 1`. Equal keys order by index.
    pub fn bitonic_sort_step(ctx, keys: *mut f32, values: *mut u32, padded: u32, j: u32, k: u32) {
        grid_stride(ctx, padded, |i| {
            let i = i as u32;
            let partner = i ^ j;
            if partner <= i {
                return;
            }
            let (ki, kp) = (*keys.add(i as usize), *keys.add(partner as usize));
            let (vi, vp) = (*values.add(i as usize), *values.add(partner as usize));
            // "p should come before i" in descending order, ties by smaller index.
            let p_first = kp > ki || (kp == ki && vp < vi);
            let descending_run = i & k == 0;
            if p_first == descending_run {
                *keys.add(i as usize) = kp;
                *keys.add(partner as usize) = ki;
                *values.add(i as usize) = vp;
                *values.add(partner as usize) = vi;
            }
        });
    }
}

kernel! {
    /// Candidate boxes in score order, offset by class: `out[r] = boxes[b] +
    /// class * class_offset` for `r < count` with `(b, class)` from `order[r]`.
    pub fn nms_gather_boxes(ctx, boxes: *const f32, order: *const u32, count: u32, classes: u32, class_offset: f32, out: *mut f32) {
        grid_stride(ctx, count, |r| {
            let candidate = *order.add(r);
            let (b, class) = ((candidate / classes) as usize, candidate % classes);
            let shift = class as f32 * class_offset;
            let mut k = 0;
            while k < 4 {
                *out.add(r * 4 + k) = *boxes.add(b * 4 + k) + shift;
                k += 1;
            }
        });
    }
}

#[inline(always)]
unsafe fn iou(a: *const f32, b: *const f32, pixel_offset: f32) -> f32 {
    let area = |p: *const f32| {
        let (w, h) = (
            *p.add(2) - *p + pixel_offset,
            *p.add(3) - *p.add(1) + pixel_offset,
        );
        if w > 0.0 && h > 0.0 {
            w * h
        } else {
            0.0
        }
    };
    let iw = (*a.add(2)).min(*b.add(2)) - (*a).max(*b) + pixel_offset;
    let ih = (*a.add(3)).min(*b.add(3)) - (*a.add(1)).max(*b.add(1)) + pixel_offset;
    if iw <= 0.0 || ih <= 0.0 {
        return 0.0;
    }
    let inter = iw * ih;
    inter / (area(a) + area(b) - inter)
}

kernel! {
    /// `mask[row * col_blocks + col_block]` bit `c` = box `row` suppresses box
    /// `col_block * 64 + c` (a later box, IoU > `iou_thresh`). Grid
    /// `(col_blocks, col_blocks)`, block `NMS_BLOCK`; blocks below the diagonal exit.
    pub fn nms_mask(ctx, boxes: *const f32, count: u32, iou_thresh: f32, pixel_offset: f32, mask: *mut u64) {
        let (row_block, col_block) = (ctx.block_y(), ctx.block_x());
        if row_block > col_block {
            return;
        }
        let col_boxes = shared_array!(ctx, f32, (NMS_BLOCK * 4) as usize);
        let tid = ctx.thread_x();
        let col = col_block * NMS_BLOCK + tid;
        if col < count {
            let mut k = 0;
            while k < 4 {
                *col_boxes.add((tid * 4 + k) as usize) = *boxes.add((col * 4 + k) as usize);
                k += 1;
            }
        }
        ctx.sync_threads();
        let row = row_block * NMS_BLOCK + tid;
        if row >= count {
            return;
        }
        let cols_here = (count - col_block * NMS_BLOCK).min(NMS_BLOCK);
        let mut bits = 0u64;
        // On the diagonal, only later boxes.
        let mut c = if row_block == col_block { tid + 1 } else { 0 };
        while c < cols_here {
            if iou(boxes.add((row * 4) as usize), col_boxes.add((c * 4) as usize), pixel_offset) > iou_thresh {
                bits |= 1u64 << c;
            }
            c += 1;
        }
        let col_blocks = count.div_ceil(NMS_BLOCK);
        *mask.add((row * col_blocks + col_block) as usize) = bits;
    }
}

kernel! {
    /// Greedy pass over the mask in score order (one block of
    /// `NMS_REDUCE_THREADS`): `keep[0..*kept]` = kept ranks, at most `max_keep`.
    pub fn nms_reduce(ctx, mask: *const u64, count: u32, max_keep: u32, keep: *mut u32, kept: *mut u32) {
        let removed = shared_array!(ctx, u64, (NMS_MAX_BOXES / NMS_BLOCK) as usize);
        let tid = ctx.thread_x();
        let col_blocks = count.div_ceil(NMS_BLOCK);
        let mut w = tid;
        while w < col_blocks {
            *removed.add(w as usize) = 0;
            w += NMS_REDUCE_THREADS;
        }
        ctx.sync_threads();
        let mut n_kept = 0;
        let mut i = 0;
        while i < count && n_kept < max_keep {
            // Every thread reads the same word, so the branch is uniform.
            let suppressed = (*removed.add((i / NMS_BLOCK) as usize) >> (i % NMS_BLOCK)) & 1 == 1;
            if !suppressed {
                if tid == 0 {
                    *keep.add(n_kept as usize) = i;
                }
                n_kept += 1;
                // All reads of `removed` for box i happen before anyone ORs.
                ctx.sync_threads();
                let mut w = i / NMS_BLOCK + tid;
                while w < col_blocks {
                    *removed.add(w as usize) |= *mask.add((i * col_blocks + w) as usize);
                    w += NMS_REDUCE_THREADS;
                }
                ctx.sync_threads();
            }
            i += 1;
        }
        if tid == 0 {
            *kept = n_kept;
        }
    }
}

/// Step 2b, on the host between the sort and the mask: Paddle's
/// `multiclass_nms` keeps the best `top_k` candidates of *each class* before
/// NMS. Given the sorted keys (descending; -inf marks "below
/// the score threshold" and everything after it) and their indices into
/// `scores [boxes, classes]`, returns the indices to run NMS on, still best
/// first: each one while its class has had fewer than `top_k`. The on-device
/// reduce holds at most `NMS_MAX_BOXES` candidates; beyond that the lowest
/// scores are dropped (they could only matter when fewer than `keep_top_k`
/// better boxes survive).
#[cfg(not(target_arch = "nvptx64"))]
pub fn per_class_candidates(keys: &[f32], order: &[u32], classes: u32, top_k: u32) -> Vec<u32> {
    let mut taken = vec![0u32; classes.max(1) as usize];
    let mut selected = Vec::new();
    for (&key, &index) in keys.iter().zip(order) {
        if key == f32::NEG_INFINITY || selected.len() == NMS_MAX_BOXES as usize {
            break;
        }
        let count = &mut taken[(index % classes.max(1)) as usize];
        if *count < top_k {
            *count += 1;
            selected.push(index);
        }
    }
    selected
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emu::{launch, launch_independent, DeviceBuf, Dim3};
    use proptest::prelude::*;

    /// Paddle multiclass_nms for one image, per class, then all kept sorted by
    /// score and cut to keep_top_k; returns (score, box, class).
    fn reference(
        boxes: &[[f32; 4]],
        scores: &[f32],
        classes: usize,
        thresh: f32,
        iou_t: f32,
        top_k: usize,
        keep_top_k: usize,
    ) -> Vec<(f32, usize, usize)> {
        let iou_ref = |a: &[f32; 4], b: &[f32; 4]| {
            let area = |p: &[f32; 4]| (p[2] - p[0] + 1.0).max(0.0) * (p[3] - p[1] + 1.0).max(0.0);
            let iw = a[2].min(b[2]) - a[0].max(b[0]) + 1.0;
            let ih = a[3].min(b[3]) - a[1].max(b[1]) + 1.0;
            if iw <= 0.0 || ih <= 0.0 {
                0.0
            } else {
                iw * ih / (area(a) + area(b) - iw * ih)
            }
        };
        let mut all: Vec<(f32, usize, usize)> = (0..boxes.len() * classes)
            .filter(|&i| scores[i] > thresh)
            .map(|i| (scores[i], i / classes, i % classes))
            .collect();
        all.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap());
        let mut taken = vec![0usize; classes];
        all.retain(|cand| {
            taken[cand.2] += 1;
            taken[cand.2] <= top_k
        });
        let mut kept: Vec<(f32, usize, usize)> = Vec::new();
        for cand in all {
            if kept
                .iter()
                .all(|k| k.2 != cand.2 || iou_ref(&boxes[k.1], &boxes[cand.1]) <= iou_t)
            {
                kept.push(cand);
            }
        }
        kept.truncate(keep_top_k);
        kept
    }

    fn device_nms(
        boxes: &[[f32; 4]],
        scores: &[f32],
        classes: usize,
        thresh: f32,
        iou_t: f32,
        top_k: usize,
        keep_top_k: usize,
    ) -> Vec<(f32, usize, usize)> {
        let count = scores.len() as u32;
        let padded = count.next_power_of_two();
        let sb = DeviceBuf::new(scores);
        let (keys, values) = (
            DeviceBuf::filled(padded as usize, 0.0f32),
            DeviceBuf::filled(padded as usize, 0u32),
        );
        let grid = (Dim3::x(4), Dim3::x(64));
        launch_independent(grid.0, grid.1, |c| unsafe {
            nms_sort_keys(c, sb.ptr(), count, padded, thresh, keys.ptr(), values.ptr())
        });
        let mut k = 2;
        while k <= padded {
            let mut j = k / 2;
            while j > 0 {
                launch_independent(grid.0, grid.1, |c| unsafe {
                    bitonic_sort_step(c, keys.ptr(), values.ptr(), padded, j, k)
                });
                j /= 2;
            }
            k *= 2;
        }
        let sorted = keys.to_vec();
        let selected =
            per_class_candidates(&sorted, &values.to_vec(), classes as u32, top_k as u32);
        if selected.is_empty() {
            return Vec::new();
        }
        let candidates = selected.len() as u32;
        let order = DeviceBuf::new(&selected);
        let flat: Vec<f32> = boxes.iter().flatten().copied().collect();
        let bb = DeviceBuf::new(&flat);
        let gathered = DeviceBuf::filled(candidates as usize * 4, f32::NAN);
        launch_independent(grid.0, grid.1, |c| unsafe {
            nms_gather_boxes(
                c,
                bb.ptr(),
                order.ptr(),
                candidates,
                classes as u32,
                10_000.0,
                gathered.ptr(),
            )
        });
        let col_blocks = candidates.div_ceil(NMS_BLOCK);
        let mask = DeviceBuf::filled((candidates * col_blocks) as usize, 0u64);
        launch(
            Dim3::xy(col_blocks, col_blocks),
            Dim3::x(NMS_BLOCK),
            |c| unsafe { nms_mask(c, gathered.ptr(), candidates, iou_t, 1.0, mask.ptr()) },
        );
        let (keep, kept) = (
            DeviceBuf::filled(keep_top_k, 0u32),
            DeviceBuf::filled(1, 0u32),
        );
        launch(Dim3::x(1), Dim3::x(NMS_REDUCE_THREADS), |c| unsafe {
            nms_reduce(
                c,
                mask.ptr(),
                candidates,
                keep_top_k as u32,
                keep.ptr(),
                kept.ptr(),
            )
        });
        keep.to_vec()[..kept.to_vec()[0] as usize]
            .iter()
            .map(|&r| {
                let i = selected[r as usize] as usize;
                (scores[i], i / classes, i % classes)
            })
            .collect()
    }

    proptest! {
        /// Against a brute-force reference: per class, the `top_k` best
        /// entries above the threshold; together, in descending score order.
        #[test]
        fn per_class_candidates_keep_each_class_best_top_k(
            scores in proptest::collection::vec(-1.0f32..1.0, 1..300),
            classes in 1u32..6,
            top_k in 1u32..20,
            thresh in -1.0f32..1.0,
        ) {
            // The device's sort: descending keys, ties by index, -inf below the threshold.
            let key = |i: usize| if scores[i] > thresh { scores[i] } else { f32::NEG_INFINITY };
            let mut order: Vec<u32> = (0..scores.len() as u32).collect();
            order.sort_by(|&a, &b| key(b as usize).total_cmp(&key(a as usize)).then(a.cmp(&b)));
            let keys: Vec<f32> = order.iter().map(|&i| key(i as usize)).collect();
            let got = per_class_candidates(&keys, &order, classes, top_k);

            let mut expected = Vec::new();
            for c in 0..classes {
                let mut of_class: Vec<u32> = order
                    .iter()
                    .copied()
                    .filter(|&i| i % classes == c && scores[i as usize] > thresh)
                    .collect();
                of_class.truncate(top_k as usize);
                expected.extend(of_class);
            }
            expected.sort_by_key(|&i| order.iter().position(|&o| o == i));
            prop_assert_eq!(got, expected);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]
        #[test]
        fn matches_greedy_per_class_nms(n_boxes in 1usize..150, classes in 1usize..4, iou_t in 0.2f32..0.7,
            top_k in 1usize..400, keep_top_k in 1usize..100, seed in 0u64..10_000) {
            let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let mut rand = || { state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); (state >> 33) as f32 / (1u64 << 31) as f32 };
            // Boxes clustered in a small area so that many overlap.
            let boxes: Vec<[f32; 4]> = (0..n_boxes).map(|_| {
                let (x, y) = (rand() * 60.0, rand() * 60.0);
                [x, y, x + 10.0 + rand() * 30.0, y + 10.0 + rand() * 30.0]
            }).collect();
            // Distinct scores: ties would make the order (and the result) arbitrary.
            let mut scores: Vec<f32> = (0..n_boxes * classes).map(|i| (i as f32 + 0.5) / (n_boxes * classes) as f32).collect();
            for i in (1..scores.len()).rev() { let j = (rand() * (i + 1) as f32) as usize % (i + 1); scores.swap(i, j); }
            let want = reference(&boxes, &scores, classes, 0.1, iou_t, top_k, keep_top_k);
            let got = device_nms(&boxes, &scores, classes, 0.1, iou_t, top_k, keep_top_k);
            prop_assert_eq!(got, want);
        }
    }
}
