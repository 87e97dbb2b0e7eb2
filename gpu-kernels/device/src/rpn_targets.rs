//! Faster R-CNN's RPN target assignment on the device (Paddle's
//! `rpn_target_assign`, core's `rcnn::rpn_target_assign`) for a batch at
//! once, deciding exactly as the CPU: the same IoUs, best boxes and
//! candidates, and the same samples for the same seed.
//!
//! The matching is RetinaNet's (`retinanet_targets.rs`, the same Paddle
//! source): its steps 1 and 2 (`gt_best_overlap_blocks`,
//! `gt_best_overlaps`) give each box its best overlap over the image's
//! anchors inside the border, then
//!
//! 3. `rpn_anchor_candidates` (per level): each anchor's candidacy
//!    (foreground: overlapping some box by `positive_overlap` or one of a
//!    box's best anchors; background: overlapping every box by less than
//!    `negative_overlap`; neither outside the border) and, for a
//!    foreground candidate, its regression target;
//! 4. `rpn_sample` (a block per image): the foreground candidates of the
//!    `fg_quota` smallest keys kept, then the background candidates of the
//!    `batch - kept` smallest keys, and each anchor's label: 0 for a kept
//!    background candidate (Paddle writes it last), 1 for a kept
//!    foreground one, else -1; and the image's count of labelled anchors.
//!
//! An anchor's key is its index in the image (all levels in order) below
//! [`sample_key`]'s 32 random bits when the draw is random, the index alone
//! otherwise (Paddle's "first ones"): the keys are distinct, so the kept
//! candidates are those whose key is at most the quota-th smallest, which
//! `rpn_sample` finds bit by bit from the top, counting the candidates
//! under each prefix (a select without sorting or atomics).
use crate::reduce::{block_reduce, REDUCE_THREADS};
use crate::retinanet_targets::{box_to_delta, inside_image, match_anchor, quad};
use crate::{grid_stride, kernel, shared_array, Ctx};

/// Candidacy bits of an anchor in step 3's output.
pub const FOREGROUND_CANDIDATE: u32 = 1;
pub const BACKGROUND_CANDIDATE: u32 = 2;

/// The draws of [`sample_key`] (core's `FOREGROUND_DRAW`, `BACKGROUND_DRAW`).
pub const FOREGROUND_DRAW: u32 = 0;
pub const BACKGROUND_DRAW: u32 = 1;

/// Core's `rcnn::rpn_target::sample_key` (tested against it): splitmix64's
/// finaliser of the seed, the image, the draw and the anchor, high 32 bits.
#[inline(always)]
pub fn sample_key(seed: u64, image: u32, which: u32, anchor: u32) -> u32 {
    let lane = (image as u64) << 33 | (which as u64) << 32 | anchor as u64;
    let mut z = seed ^ lane.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    ((z ^ (z >> 31)) >> 32) as u32
}

kernel! {
    /// Step 3, grid-stride over the `images * count` anchors of one level
    /// (`anchors` `[count, 4]`, the image's anchors `first..first + count`
    /// of `total`): anchor `k = first + a` of image `n` (row `n * total +
    /// k`) gets `candidates[row]` (the bits above; 0 when not
    /// [`inside_image`] of `im_info[3 * n..]`), and a foreground candidate
    /// `deltas[4 * row..]`, the delta to its best box (the other rows are
    /// not written). The boxes and `gt_max` are step 2's.
    pub fn rpn_anchor_candidates(ctx, anchors: *const f32, count: u32, first: u32, total: u32,
        images: u32, truth_boxes: *const f32, truth_first: *const u32, gt_max: *const f32,
        im_info: *const f32, straddle_thresh: f32, positive_overlap: f32, negative_overlap: f32,
        candidates: *mut u32, deltas: *mut f32) {
        grid_stride(ctx, images * count, |e| {
            let (n, a) = (e as u32 / count, e as u32 % count);
            let anchor = quad(anchors, a);
            let row = (n * total + first + a) as usize;
            let info = im_info.add(3 * n as usize);
            if !inside_image(anchor, *info, *info.add(1), straddle_thresh) {
                *candidates.add(row) = 0;
                return;
            }
            let (first_gt, last_gt) = (*truth_first.add(n as usize), *truth_first.add(n as usize + 1));
            let m = match_anchor(anchor, truth_boxes, gt_max, first_gt, last_gt);
            let foreground = m.best_overlap >= positive_overlap || m.best_for_a_box;
            let background = m.best_overlap < negative_overlap;
            *candidates.add(row) = if foreground { FOREGROUND_CANDIDATE } else { 0 }
                | if background { BACKGROUND_CANDIDATE } else { 0 };
            if foreground {
                let target = box_to_delta(anchor, quad(truth_boxes, m.best_gt));
                let mut j = 0;
                while j < 4 {
                    *deltas.add(4 * row + j) = target[j];
                    j += 1;
                }
            }
        });
    }
}

/// One image's draw in `rpn_sample`: its candidates and how they are keyed.
struct Draw {
    candidates: *const u32,
    total: u32,
    seed: u64,
    image: u32,
    use_random: bool,
    /// Bits of an anchor index (below `total`), under the random ones.
    index_bits: u32,
}

impl Draw {
    /// Anchor `k`'s key in draw `which`.
    #[inline(always)]
    fn key(&self, which: u32, k: u32) -> u64 {
        if self.use_random {
            (sample_key(self.seed, self.image, which, k) as u64) << self.index_bits | k as u64
        } else {
            k as u64
        }
    }

    /// The block's count of the anchors with candidacy `bit` whose key in
    /// draw `which` satisfies `keep`, returned to every thread.
    #[inline(always)]
    unsafe fn count(
        &self,
        ctx: &Ctx,
        scratch: *mut u32,
        bit: u32,
        which: u32,
        keep: impl Fn(u64) -> bool,
    ) -> u32 {
        let mut count = 0u32;
        let mut k = ctx.thread_x();
        while k < self.total {
            if *self.candidates.add(k as usize) & bit != 0 && keep(self.key(which, k)) {
                count += 1;
            }
            k += REDUCE_THREADS;
        }
        block_reduce(ctx, scratch, count, 0, |x, y| x + y)
    }

    /// The candidates with candidacy `bit` to keep, at most `quota` (all
    /// of them when not `sampling`): their count, and the bound their keys
    /// in draw `which` are below.
    unsafe fn select(
        &self,
        ctx: &Ctx,
        scratch: *mut u32,
        bit: u32,
        which: u32,
        quota: u32,
        sampling: bool,
    ) -> (u32, u64) {
        let all = self.count(ctx, scratch, bit, which, |_| true);
        if !sampling || all <= quota {
            return (all, u64::MAX);
        }
        if quota == 0 {
            return (0, 0);
        }
        // The quota-th smallest key, bit by bit: `prefix` holds its bits
        // above `b`, `remaining` its rank among the keys under the prefix.
        let key_bits = self.index_bits + if self.use_random { 32 } else { 0 };
        let (mut prefix, mut remaining) = (0u64, quota);
        let mut b = key_bits;
        while b > 0 {
            b -= 1;
            let low = self.count(ctx, scratch, bit, which, |key| key >> b == prefix >> b);
            if low < remaining {
                remaining -= low;
                prefix |= 1 << b;
            }
        }
        (quota, prefix + 1)
    }
}

kernel! {
    /// Step 4, `REDUCE_THREADS` threads a block, a block per image: image
    /// `n`'s `total` anchors' `candidates` (rows `n * total..`) sampled as
    /// core's `rpn_target_assign` does with `Draw { seed: seed_high << 32
    /// | seed_low, image: n }` (`use_random` 1) or the first ones (0), at
    /// most `fg_quota` foreground and `batch` in all when `sampling` is 1;
    /// `labels[n * total + k]` = 1, 0 or -1 and `sampled[n]` = the count
    /// of 0s and 1s.
    pub fn rpn_sample(ctx, candidates: *const u32, total: u32, seed_low: u32, seed_high: u32,
        use_random: u32, sampling: u32, fg_quota: u32, batch: u32, labels: *mut f32,
        sampled: *mut u32) {
        let scratch = shared_array!(ctx, u32, REDUCE_THREADS as usize);
        let n = ctx.block_x();
        let base = (n * total) as usize;
        let draw = Draw {
            candidates: candidates.add(base),
            total,
            seed: (seed_high as u64) << 32 | seed_low as u64,
            image: n,
            use_random: use_random != 0,
            index_bits: 32 - total.saturating_sub(1).leading_zeros(),
        };
        let sampling = sampling != 0;
        let (fg_kept, fg_bound) = draw.select(ctx, scratch, FOREGROUND_CANDIDATE, FOREGROUND_DRAW, fg_quota, sampling);
        let bg_quota = batch.saturating_sub(fg_kept);
        let (_, bg_bound) = draw.select(ctx, scratch, BACKGROUND_CANDIDATE, BACKGROUND_DRAW, bg_quota, sampling);
        let mut labelled = 0u32;
        let mut k = ctx.thread_x();
        while k < total {
            let c = *draw.candidates.add(k as usize);
            let background = c & BACKGROUND_CANDIDATE != 0 && draw.key(BACKGROUND_DRAW, k) < bg_bound;
            let foreground = c & FOREGROUND_CANDIDATE != 0 && draw.key(FOREGROUND_DRAW, k) < fg_bound;
            *labels.add(base + k as usize) = if background {
                0.0
            } else if foreground {
                1.0
            } else {
                -1.0
            };
            labelled += (background || foreground) as u32;
            k += REDUCE_THREADS;
        }
        let labelled = block_reduce(ctx, scratch, labelled, 0, |x, y| x + y);
        if ctx.thread_x() == 0 {
            *sampled.add(n as usize) = labelled;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emu::{launch, launch_independent, DeviceBuf, Dim3};
    use crate::retinanet_targets::tests::a_box;
    use crate::retinanet_targets::{
        self, gt_best_overlap_blocks, gt_best_overlaps, MATCH_BLOCK_ANCHORS,
    };
    use proptest::prelude::*;
    use pulsefocus_core::box_coder::BoxXyxy;
    use pulsefocus_core::rcnn::{rpn_target_assign, Draw, ImInfo, RpnTargetConfig};

    #[test]
    fn sample_key_is_cores() {
        let mut state = 0x1234_5678_9abc_def0u64;
        for _ in 0..2000 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let (image, anchor) = ((state >> 59) as u32, (state >> 13) as u32 & 0x3ffff);
            for which in [FOREGROUND_DRAW, BACKGROUND_DRAW] {
                let draw = Draw { seed: state, image };
                assert_eq!(
                    sample_key(state, image, which, anchor),
                    pulsefocus_core::rcnn::sample_key(draw, which, anchor)
                );
            }
        }
    }

    /// Each image's labels (per anchor, -1/0/1), the foreground rows'
    /// deltas (NaN elsewhere) and its count of labelled anchors.
    type Assigned = (Vec<f32>, Vec<f32>, Vec<u32>);

    /// The kernels' launch sequence (what `ops::rpn_targets` does with a
    /// GPU); `truths` are each image's boxes (original pixels) and im_info.
    fn device_targets(
        cfg: &RpnTargetConfig,
        seed: u64,
        levels: &[Vec<BoxXyxy>],
        truths: &[(Vec<BoxXyxy>, [f32; 3])],
    ) -> Assigned {
        let images = truths.len() as u32;
        let total: u32 = levels.iter().map(|l| l.len() as u32).sum();
        let (mut boxes, mut first, mut info) = (Vec::new(), vec![0u32], Vec::new());
        for (b, im_info) in truths {
            boxes.extend(b.iter().flat_map(|q| q.map(|v| v * im_info[2])));
            first.push(boxes.len() as u32 / 4);
            info.extend(im_info);
        }
        let gts = boxes.len() as u32 / 4;
        let blocks: Vec<u32> = levels
            .iter()
            .map(|l| (l.len() as u32).div_ceil(MATCH_BLOCK_ANCHORS))
            .collect();
        let stride: u32 = blocks.iter().sum();
        let (tb, tf, ti) = (
            DeviceBuf::new(&boxes),
            DeviceBuf::new(&first),
            DeviceBuf::new(&info),
        );
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
                        ti.ptr(),
                        cfg.straddle_thresh,
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
        let rows = (images * total) as usize;
        let candidates = DeviceBuf::filled(rows, u32::MAX);
        let deltas = DeviceBuf::filled(4 * rows, f32::NAN);
        let mut first_anchor = 0;
        for (level, ab) in levels.iter().zip(&anchors) {
            launch_independent(Dim3::x(3), Dim3::x(32), |c| unsafe {
                rpn_anchor_candidates(
                    c,
                    ab.ptr(),
                    level.len() as u32,
                    first_anchor,
                    total,
                    images,
                    tb.ptr(),
                    tf.ptr(),
                    gt_max.ptr(),
                    ti.ptr(),
                    cfg.straddle_thresh,
                    cfg.positive_overlap,
                    cfg.negative_overlap,
                    candidates.ptr(),
                    deltas.ptr(),
                )
            });
            first_anchor += level.len() as u32;
        }
        let labels = DeviceBuf::filled(rows, f32::NAN);
        let sampled = DeviceBuf::filled(truths.len(), u32::MAX);
        let sampling = cfg.fg_fraction > 0.0 && cfg.batch_size_per_im > 0;
        let fg_quota = (cfg.fg_fraction * cfg.batch_size_per_im as f32) as u32;
        launch(Dim3::x(images), Dim3::x(REDUCE_THREADS), |c| unsafe {
            rpn_sample(
                c,
                candidates.ptr(),
                total,
                seed as u32,
                (seed >> 32) as u32,
                cfg.use_random as u32,
                sampling as u32,
                fg_quota,
                cfg.batch_size_per_im as u32,
                labels.ptr(),
                sampled.ptr(),
            )
        });
        let labels = labels.to_vec();
        // Only the foreground rows' deltas are the loss's.
        let deltas = deltas
            .to_vec()
            .iter()
            .enumerate()
            .map(|(i, &d)| if labels[i / 4] == 1.0 { d } else { f32::NAN })
            .collect();
        (labels, deltas, sampled.to_vec())
    }

    /// Core's `rpn_target_assign` per image in the same layout.
    fn cpu_targets(
        cfg: &RpnTargetConfig,
        seed: u64,
        levels: &[Vec<BoxXyxy>],
        truths: &[(Vec<BoxXyxy>, [f32; 3])],
    ) -> Assigned {
        let all: Vec<BoxXyxy> = levels.concat();
        let total = all.len();
        let mut labels = vec![-1.0; truths.len() * total];
        let mut deltas = vec![f32::NAN; 4 * truths.len() * total];
        let mut sampled = Vec::new();
        for (n, (boxes, [height, width, scale])) in truths.iter().enumerate() {
            let info = ImInfo {
                height: *height,
                width: *width,
                scale: *scale,
            };
            let draw = Draw {
                seed,
                image: n as u32,
            };
            let t = rpn_target_assign(&all, boxes, &vec![false; boxes.len()], info, cfg, draw);
            for (&k, d) in t.fg.iter().zip(&t.fg_deltas) {
                labels[n * total + k] = 1.0;
                deltas[4 * (n * total + k)..][..4].copy_from_slice(d);
            }
            for &k in &t.bg {
                labels[n * total + k] = 0.0;
            }
            sampled.push((t.fg.len() + t.bg.len()) as u32);
        }
        (labels, deltas, sampled)
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// A grid box from 4 pixels outside the image: some anchors cross the
    /// border, for the straddle filter.
    fn grid_box(b: (u8, u8, u8)) -> BoxXyxy {
        retinanet_targets::tests::grid_box(-4.0, b)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// The kernels' labels, foreground deltas and counts equal core's
        /// `rpn_target_assign` to the bit, random draw or the first ones:
        /// up to three levels (one longer than a block), images with no
        /// box, repeated boxes (ties), straddling anchors in and out,
        /// quotas above and below the candidates.
        #[test]
        fn equals_the_cpu_rpn_target_assign(
            level_draws in prop::collection::vec(prop::collection::vec(a_box(), 1..40), 1..4),
            long_level in any::<bool>(),
            box_draws in prop::collection::vec(prop::collection::vec((a_box(), any::<bool>()), 0..6), 1..4),
            scale in prop_oneof![Just(1.0f32), 0.4f32..1.6],
            straddle_thresh in prop_oneof![Just(-1.0f32), Just(0.0f32), 0.0f32..6.0],
            batch in prop_oneof![Just(0usize), 1usize..300],
            fg_fraction in prop_oneof![Just(0.5f32), 0.0f32..1.0],
            use_random in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let mut levels: Vec<Vec<BoxXyxy>> = level_draws.iter().map(|l| l.iter().copied().map(grid_box).collect()).collect();
            if long_level {
                let long = (0..MATCH_BLOCK_ANCHORS as usize + 37).map(|i| grid_box(((i % 36) as u8, (i / 36 % 4) as u8, (i / 144 % 4) as u8)));
                levels.push(long.collect());
            }
            let truths: Vec<(Vec<BoxXyxy>, [f32; 3])> = box_draws
                .iter()
                .map(|draws| {
                    let mut boxes = Vec::new();
                    for &(b, twice) in draws {
                        boxes.push(grid_box(b));
                        if twice {
                            boxes.push(grid_box(b));
                        }
                    }
                    (boxes, [40.0, 36.0, scale])
                })
                .collect();
            let cfg = RpnTargetConfig {
                batch_size_per_im: batch,
                fg_fraction,
                positive_overlap: 0.7,
                negative_overlap: 0.3,
                straddle_thresh,
                use_random,
            };
            let (got_labels, got_deltas, got_sampled) = device_targets(&cfg, seed, &levels, &truths);
            let (want_labels, want_deltas, want_sampled) = cpu_targets(&cfg, seed, &levels, &truths);
            prop_assert_eq!(got_sampled, want_sampled);
            prop_assert_eq!(bits(&got_labels), bits(&want_labels));
            prop_assert_eq!(bits(&got_deltas), bits(&want_deltas));
        }
    }
}
