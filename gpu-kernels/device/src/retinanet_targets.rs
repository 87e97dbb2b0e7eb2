//! RetinaNet's target assignment on the device (Paddle's
//! `retinanet_target_assign`, core's `retinanet::retinanet_target_assign`)
//! for a batch at once, deciding exactly as the CPU: the same IoUs, the
//! same best boxes and the same labels, and box targets with its
//! expressions, so the emulator gives the CPU's bits and the GPU differs
//! only by its approximate `ln`.
//!
//! The ground truth is a table: every image's boxes (already scaled into
//! the anchors' pixels) and classes one image after another, image `n`'s
//! rows `truth_first[n]..truth_first[n + 1]`. The anchors come one FPN
//! level at a time (each level is its own buffer); a block covers
//! [`MATCH_BLOCK_ANCHORS`] anchors of one level for one image, and the
//! per-block results go to column `block_offset + block` of a table with
//! `stride` columns (every level's blocks side by side), so the second
//! passes see the whole image whatever the levels.
//!
//! 1. `gt_best_overlap_blocks` (per level): each block's best IoU with each
//!    of its image's boxes;
//! 2. `gt_best_overlaps`: each box's best over the blocks, i.e. over all
//!    the image's anchors (Paddle's per-box maximum);
//! 3. `retina_target_rows` (per level): each anchor's best box (the first
//!    on ties), whether it is one of a box's best anchors (within
//!    `BEST_OVERLAP_EPSILON`), its label, box target and weight; each
//!    block's count of foreground candidates;
//! 4. `retina_fg_num`: each image's count plus one, Paddle's
//!    `ForegroundNumber`.
//!
//! Steps 1, 2, the [`match_anchor`] rule and [`box_to_delta`] are not
//! RetinaNet's own: they are `rpn_target_assign`'s matching too
//! (`rpn_targets.rs`), which also leaves out the anchors that straddle the
//! image's border ([`inside_image`]; RetinaNet keeps all, a negative
//! threshold).
use crate::reduce::{block_reduce, REDUCE_THREADS};
use crate::{grid_stride, kernel, math, shared_array};

/// Anchors one block of steps 1 and 3 covers (4 a thread).
pub const MATCH_BLOCK_ANCHORS: u32 = REDUCE_THREADS * 4;

/// Paddle's equality tolerance between an overlap and a box's best
/// overlap (core's `rcnn::rpn_target` constant).
const BEST_OVERLAP_EPSILON: f32 = 1e-5;

/// Row `row` of a `[rows, 4]` array.
///
/// # Safety
/// The row exists.
#[inline(always)]
pub unsafe fn quad(rows: *const f32, row: u32) -> [f32; 4] {
    let q = rows.add(row as usize * 4);
    [*q, *q.add(1), *q.add(2), *q.add(3)]
}

/// Core's `rcnn::bbox_overlap` (Paddle's `BboxOverlaps`) operation for
/// operation: pixel boxes, the intersection's sides clamped at 0.
#[inline(always)]
fn bbox_overlap(a: [f32; 4], b: [f32; 4]) -> f32 {
    let area_a = (a[2] - a[0] + 1.0) * (a[3] - a[1] + 1.0);
    let area_b = (b[2] - b[0] + 1.0) * (b[3] - b[1] + 1.0);
    let inter_w = (a[2].min(b[2]) - a[0].max(b[0]) + 1.0).max(0.0);
    let inter_h = (a[3].min(b[3]) - a[1].max(b[1]) + 1.0).max(0.0);
    let inter = inter_w * inter_h;
    if inter == 0.0 {
        return 0.0;
    }
    inter / (area_a + area_b - inter)
}

/// Whether `anchor` counts for an image of `height` by `width` pixels:
/// core's `rpn_target_assign` keeps the anchors within `straddle_thresh`
/// of the border, all of them when it is negative.
#[inline(always)]
pub fn inside_image(anchor: [f32; 4], height: f32, width: f32, straddle_thresh: f32) -> bool {
    let t = straddle_thresh;
    t < 0.0
        || (anchor[0] >= -t && anchor[1] >= -t && anchor[2] < width + t && anchor[3] < height + t)
}

/// The image and the block within the level of this block of a launch of
/// `blocks` blocks per image.
#[inline(always)]
fn image_and_block(block: u32, blocks: u32) -> (u32, u32) {
    (block / blocks, block % blocks)
}

kernel! {
    /// Step 1, `REDUCE_THREADS` threads a block, `blocks * images` blocks:
    /// block `b` of image `n` takes anchors `b * MATCH_BLOCK_ANCHORS..` of
    /// the level's `count` (`anchors` `[count, 4]`); for each of the image's
    /// boxes `g`, `partial[g * stride + block_offset + b]` = the largest
    /// IoU of those anchors with it (`f32::MIN` for none, the CPU's start).
    /// Only the anchors [`inside_image`] of image `n` count, its height and
    /// width `im_info[3 * n..]`.
    pub fn gt_best_overlap_blocks(ctx, anchors: *const f32, count: u32, truth_boxes: *const f32,
        truth_first: *const u32, im_info: *const f32, straddle_thresh: f32, blocks: u32,
        stride: u32, block_offset: u32, partial: *mut f32) {
        let scratch = shared_array!(ctx, f32, REDUCE_THREADS as usize);
        let (n, b) = image_and_block(ctx.block_x(), blocks);
        let start = b * MATCH_BLOCK_ANCHORS;
        let end = count.min(start + MATCH_BLOCK_ANCHORS);
        let (height, width) = (*im_info.add(3 * n as usize), *im_info.add(3 * n as usize + 1));
        let mut g = *truth_first.add(n as usize);
        while g < *truth_first.add(n as usize + 1) {
            let gt = quad(truth_boxes, g);
            let mut best = f32::MIN;
            let mut a = start + ctx.thread_x();
            while a < end {
                let anchor = quad(anchors, a);
                if inside_image(anchor, height, width, straddle_thresh) {
                    best = best.max(bbox_overlap(anchor, gt));
                }
                a += REDUCE_THREADS;
            }
            // Exact whatever the order: a maximum rounds nothing.
            let best = block_reduce(ctx, scratch, best, f32::MIN, f32::max);
            if ctx.thread_x() == 0 {
                *partial.add((g * stride + block_offset + b) as usize) = best;
            }
            g += 1;
        }
    }
}

kernel! {
    /// Step 2, grid-stride over the `gts` boxes of the batch: `gt_max[g]` =
    /// the largest of row `g` of `partial` (`stride` columns).
    pub fn gt_best_overlaps(ctx, partial: *const f32, gts: u32, stride: u32, gt_max: *mut f32) {
        grid_stride(ctx, gts, |g| {
            let row = partial.add(g * stride as usize);
            let mut best = f32::MIN;
            let mut k = 0;
            while k < stride as usize {
                best = best.max(*row.add(k));
                k += 1;
            }
            *gt_max.add(g) = best;
        });
    }
}

/// How one anchor overlaps its image's boxes (core's `AnchorMatch`).
pub struct AnchorMatch {
    /// Its best overlap, `f32::MIN` without boxes.
    pub best_overlap: f32,
    /// The table row of the box of that overlap (the first on ties).
    pub best_gt: u32,
    /// Whether its overlap with some box is within `BEST_OVERLAP_EPSILON`
    /// of that box's best (`gt_max`).
    pub best_for_a_box: bool,
}

/// `anchor` against the boxes in rows `first..last` of `truth_boxes`,
/// core's `match_anchors` for one anchor (the same scan, the same
/// comparisons).
///
/// # Safety
/// The rows and `gt_max[first..last]` exist.
#[inline(always)]
pub unsafe fn match_anchor(
    anchor: [f32; 4],
    truth_boxes: *const f32,
    gt_max: *const f32,
    first: u32,
    last: u32,
) -> AnchorMatch {
    let mut m = AnchorMatch {
        best_overlap: f32::MIN,
        best_gt: first,
        best_for_a_box: false,
    };
    let mut g = first;
    while g < last {
        let v = bbox_overlap(anchor, quad(truth_boxes, g));
        if v > m.best_overlap {
            m.best_overlap = v;
            m.best_gt = g;
        }
        m.best_for_a_box |= math::abs(v - *gt_max.add(g as usize)) < BEST_OVERLAP_EPSILON;
        g += 1;
    }
    m
}

/// Core's `box_coder::box_to_delta` of `anchor` to `gt` with weights
/// `[1; 4]` (a division by 1 changes no bit, so it is left out).
#[inline(always)]
pub fn box_to_delta(anchor: [f32; 4], gt: [f32; 4]) -> [f32; 4] {
    let (pw, ph) = (anchor[2] - anchor[0] + 1.0, anchor[3] - anchor[1] + 1.0);
    let (px, py) = (anchor[0] + pw / 2.0, anchor[1] + ph / 2.0);
    let (tw, th) = (gt[2] - gt[0] + 1.0, gt[3] - gt[1] + 1.0);
    let (tx, ty) = (gt[0] + tw / 2.0, gt[1] + th / 2.0);
    [
        (tx - px) / pw,
        (ty - py) / ph,
        math::ln(tw / pw),
        math::ln(th / ph),
    ]
}

kernel! {
    /// Step 3, `REDUCE_THREADS` threads a block, `blocks * images` blocks
    /// over the level as step 1. Anchor `a` of image `n` (row `r = n *
    /// count + a`) is a foreground candidate when its best overlap is at
    /// least `positive_overlap` or it is one of a box's best anchors, and
    /// background when its best overlap is below `negative_overlap`
    /// (background wins: Paddle writes it last). `labels[r]` = 0
    /// background, the best box's class (`truth_classes`) for the other
    /// candidates, else -1 (ignored). The candidates that are not
    /// background regress: `box_targets[r]` = the delta to their best box,
    /// `box_weights[r]` = 1; every other row zeros and weight 0 (Paddle's
    /// "fake" rows of the background candidates have weight 0 too, so they
    /// add nothing but their count). `fg_partial[n * stride + block_offset
    /// + b]` = the block's candidates.
    pub fn retina_target_rows(ctx, anchors: *const f32, count: u32, truth_boxes: *const f32,
        truth_classes: *const f32, truth_first: *const u32, gt_max: *const f32, blocks: u32,
        positive_overlap: f32, negative_overlap: f32, stride: u32, block_offset: u32,
        labels: *mut f32, box_targets: *mut f32, box_weights: *mut f32, fg_partial: *mut u32) {
        let scratch = shared_array!(ctx, u32, REDUCE_THREADS as usize);
        let (n, b) = image_and_block(ctx.block_x(), blocks);
        let (first, last) = (*truth_first.add(n as usize), *truth_first.add(n as usize + 1));
        let start = b * MATCH_BLOCK_ANCHORS;
        let end = count.min(start + MATCH_BLOCK_ANCHORS);
        let mut candidates = 0u32;
        let mut a = start + ctx.thread_x();
        while a < end {
            let anchor = quad(anchors, a);
            let m = match_anchor(anchor, truth_boxes, gt_max, first, last);
            let candidate = m.best_overlap >= positive_overlap || m.best_for_a_box;
            let background = m.best_overlap < negative_overlap;
            let row = (n * count + a) as usize;
            *labels.add(row) = if background {
                0.0
            } else if candidate {
                *truth_classes.add(m.best_gt as usize)
            } else {
                -1.0
            };
            let regress = candidate && !background;
            let target = if regress { box_to_delta(anchor, quad(truth_boxes, m.best_gt)) } else { [0.0; 4] };
            let mut k = 0;
            while k < 4 {
                *box_targets.add(4 * row + k) = target[k];
                k += 1;
            }
            *box_weights.add(row) = if regress { 1.0 } else { 0.0 };
            candidates += candidate as u32;
            a += REDUCE_THREADS;
        }
        let candidates = block_reduce(ctx, scratch, candidates, 0, |x, y| x + y);
        if ctx.thread_x() == 0 {
            *fg_partial.add((n * stride + block_offset + b) as usize) = candidates;
        }
    }
}

kernel! {
    /// Step 4, grid-stride over the `images`: `fg_num[n]` = row `n` of
    /// `fg_partial` (`stride` columns) summed, plus one (Paddle's
    /// `ForegroundNumber`: the regression rows, fake ones included, plus
    /// one).
    pub fn retina_fg_num(ctx, fg_partial: *const u32, images: u32, stride: u32, fg_num: *mut f32) {
        grid_stride(ctx, images, |n| {
            let row = fg_partial.add(n * stride as usize);
            let mut total = 1u32;
            let mut k = 0;
            while k < stride as usize {
                total += *row.add(k);
                k += 1;
            }
            *fg_num.add(n) = total as f32;
        });
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::emu::{launch, launch_independent, DeviceBuf, Dim3};
    use proptest::prelude::*;
    use pulsefocus_core::box_coder::BoxXyxy;
    use pulsefocus_core::rcnn::ImInfo;
    use pulsefocus_core::retinanet::{
        level_box_targets, level_labels, retinanet_target_assign, RetinaTargetConfig,
    };

    /// One image's boxes (original pixels), classes and scale.
    type Truth = (Vec<BoxXyxy>, Vec<i32>, f32);

    /// Each level's `(labels, box targets, box weights)` and each image's
    /// `fg_num`.
    type Assigned = (Vec<(Vec<f32>, Vec<f32>, Vec<f32>)>, Vec<f32>);

    /// The kernels' launch sequence (what `ops::retinanet_targets` does
    /// with a GPU), every output starting as NaN.
    fn device_targets(
        cfg: &RetinaTargetConfig,
        levels: &[Vec<BoxXyxy>],
        truths: &[Truth],
    ) -> Assigned {
        let images = truths.len() as u32;
        let mut first = vec![0u32];
        let (mut boxes, mut classes) = (Vec::new(), Vec::new());
        for (b, c, scale) in truths {
            boxes.extend(b.iter().flat_map(|q| q.map(|v| v * scale)));
            classes.extend(c.iter().map(|&c| c as f32));
            first.push(classes.len() as u32);
        }
        let gts = classes.len() as u32;
        let blocks: Vec<u32> = levels
            .iter()
            .map(|l| (l.len() as u32).div_ceil(MATCH_BLOCK_ANCHORS))
            .collect();
        let stride: u32 = blocks.iter().sum();
        let (tb, tc, tf) = (
            DeviceBuf::new(&boxes),
            DeviceBuf::new(&classes),
            DeviceBuf::new(&first),
        );
        // No anchor straddles: RetinaNet keeps them all.
        let im_info = DeviceBuf::filled(3 * truths.len(), 0.0f32);
        let anchors: Vec<DeviceBuf<f32>> =
            levels.iter().map(|l| DeviceBuf::new(&l.concat())).collect();
        let partial = DeviceBuf::filled((gts * stride) as usize, f32::NAN);
        let mut offset = 0;
        for ((level, ab), &blocks) in levels.iter().zip(&anchors).zip(&blocks) {
            launch(
                Dim3::x(blocks * images),
                Dim3::x(REDUCE_THREADS),
                |c| unsafe {
                    gt_best_overlap_blocks(
                        c,
                        ab.ptr(),
                        level.len() as u32,
                        tb.ptr(),
                        tf.ptr(),
                        im_info.ptr(),
                        -1.0,
                        blocks,
                        stride,
                        offset,
                        partial.ptr(),
                    )
                },
            );
            offset += blocks;
        }
        let gt_max = DeviceBuf::filled(gts as usize, f32::NAN);
        launch_independent(Dim3::x(2), Dim3::x(32), |c| unsafe {
            gt_best_overlaps(c, partial.ptr(), gts, stride, gt_max.ptr())
        });
        let fg_partial = DeviceBuf::filled((images * stride) as usize, u32::MAX);
        let mut outputs = Vec::new();
        let mut offset = 0;
        for ((level, ab), &blocks) in levels.iter().zip(&anchors).zip(&blocks) {
            let rows = truths.len() * level.len();
            let labels = DeviceBuf::filled(rows, f32::NAN);
            let targets = DeviceBuf::filled(4 * rows, f32::NAN);
            let weights = DeviceBuf::filled(rows, f32::NAN);
            launch(
                Dim3::x(blocks * images),
                Dim3::x(REDUCE_THREADS),
                |c| unsafe {
                    retina_target_rows(
                        c,
                        ab.ptr(),
                        level.len() as u32,
                        tb.ptr(),
                        tc.ptr(),
                        tf.ptr(),
                        gt_max.ptr(),
                        blocks,
                        cfg.positive_overlap,
                        cfg.negative_overlap,
                        stride,
                        offset,
                        labels.ptr(),
                        targets.ptr(),
                        weights.ptr(),
                        fg_partial.ptr(),
                    )
                },
            );
            offset += blocks;
            outputs.push((labels.to_vec(), targets.to_vec(), weights.to_vec()));
        }
        let fg_num = DeviceBuf::filled(truths.len(), f32::NAN);
        launch_independent(Dim3::x(1), Dim3::x(32), |c| unsafe {
            retina_fg_num(c, fg_partial.ptr(), images, stride, fg_num.ptr())
        });
        (outputs, fg_num.to_vec())
    }

    /// Core's `retinanet_target_assign` per image, laid out per level as the
    /// CPU backend does.
    fn cpu_targets(
        cfg: &RetinaTargetConfig,
        levels: &[Vec<BoxXyxy>],
        truths: &[Truth],
    ) -> Assigned {
        let all: Vec<BoxXyxy> = levels.concat();
        let targets: Vec<_> = truths
            .iter()
            .map(|(b, c, scale)| {
                let info = ImInfo {
                    height: 0.0,
                    width: 0.0,
                    scale: *scale,
                };
                retinanet_target_assign(&all, b, c, info, cfg)
            })
            .collect();
        let mut first = 0;
        let outputs = levels
            .iter()
            .map(|level| {
                let labels = level_labels(&targets, first, level.len());
                let (boxes, weights) = level_box_targets(&targets, first, level.len());
                first += level.len();
                (labels, boxes, weights)
            })
            .collect();
        (outputs, targets.iter().map(|t| t.fg_num).collect())
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// An anchor or a box on a coarse pixel grid of 6x6 cells from
    /// `origin`, in a few sizes, so that IoUs tie (between anchors and
    /// between boxes) and sit at the thresholds (and, from a negative
    /// origin, some cross the image's border).
    pub(crate) fn grid_box(origin: f32, (cell, w, h): (u8, u8, u8)) -> BoxXyxy {
        let (x, y) = (
            origin + (cell % 6) as f32 * 8.0,
            origin + (cell / 6 % 6) as f32 * 8.0,
        );
        [x, y, x + 7.0 + 4.0 * w as f32, y + 7.0 + 4.0 * h as f32]
    }

    /// A [`grid_box`]'s cell and size.
    pub(crate) fn a_box() -> impl Strategy<Value = (u8, u8, u8)> {
        (0u8..36, 0u8..4, 0u8..4)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// The kernels' labels, box targets, weights and foreground counts
        /// equal core's `retinanet_target_assign` laid out per level, to the
        /// bit: up to three levels (one longer than a block), images with no
        /// box, repeated boxes of other classes (ties), scales that put
        /// boxes off the grid, thresholds on and off the grid's IoUs.
        #[test]
        fn equals_the_cpu_retinanet_target_assign(
            level_draws in prop::collection::vec(prop::collection::vec(a_box(), 1..40), 1..4),
            long_level in any::<bool>(),
            box_draws in prop::collection::vec(prop::collection::vec((a_box(), 1i32..4, any::<bool>()), 0..6), 1..4),
            scale in prop_oneof![Just(1.0f32), Just(0.5f32), 0.4f32..1.6],
            positive_overlap in prop_oneof![Just(0.5f32), 0.2f32..0.9],
            negative_overlap in prop_oneof![Just(0.4f32), 0.1f32..0.6],
        ) {
            let mut levels: Vec<Vec<BoxXyxy>> = level_draws.iter().map(|l| l.iter().copied().map(|b| grid_box(0.0, b)).collect()).collect();
            if long_level {
                // More anchors than a block takes: several blocks per level.
                let long = (0..MATCH_BLOCK_ANCHORS as usize + 37).map(|i| grid_box(0.0, ((i % 36) as u8, (i / 36 % 4) as u8, (i / 144 % 4) as u8)));
                levels.push(long.collect());
            }
            let truths: Vec<Truth> = box_draws
                .iter()
                .map(|draws| {
                    let mut boxes = Vec::new();
                    let mut classes = Vec::new();
                    for &(b, class, twice) in draws {
                        boxes.push(grid_box(0.0, b));
                        classes.push(class);
                        if twice {
                            // The same box again, another class: a tie.
                            boxes.push(grid_box(0.0, b));
                            classes.push(class % 3 + 1);
                        }
                    }
                    (boxes, classes, scale)
                })
                .collect();
            let cfg = RetinaTargetConfig { positive_overlap, negative_overlap };
            let (got, got_fg) = device_targets(&cfg, &levels, &truths);
            let (want, want_fg) = cpu_targets(&cfg, &levels, &truths);
            prop_assert_eq!(bits(&got_fg), bits(&want_fg));
            for (l, (g, w)) in got.iter().zip(&want).enumerate() {
                prop_assert_eq!(bits(&g.0), bits(&w.0), "labels of level {}", l);
                prop_assert_eq!(bits(&g.1), bits(&w.1), "box targets of level {}", l);
                prop_assert_eq!(bits(&g.2), bits(&w.2), "box weights of level {}", l);
            }
        }
    }
}
