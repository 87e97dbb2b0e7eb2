//! SSD's loss on the device (Paddle's `ssd_loss`), for a batch at once,
//! deciding exactly as core's `ssd::ssd_loss`: the same matches, the same
//! negatives, and each prior's loss and gradient with its expressions, so
//! the emulator gives the CPU's bits (the loss sums aside, which add in
//! another order) and the GPU differs only by its approximate `exp`/`ln`.
//!
//! 1. `ssd_match`, one block per image: the bipartite match, one box per
//!    round, the best (box, free prior) pair of the round found by a block
//!    maximum of a key that orders as the CPU's scan (larger IoU, then the
//!    first prior, then the first box); then every still free prior to its
//!    best box above the threshold (`per_prediction`), and the image's
//!    matched priors counted.
//! 2. `ssd_mining_keys`: every unmatched prior below `neg_overlap` keyed
//!    `image << 32 | descending loss` (its cross-entropy against the
//!    background), the others no candidates; `nms.rs`'s `bitonic_sort_step`
//!    puts each image's candidates highest loss first, equal losses in prior
//!    order (the CPU's stable sort), and `nms_bounds` finds where each
//!    image's start.
//! 3. `ssd_select_negatives`: the first `neg_pos_ratio` times the image's
//!    matched priors (at most its candidates) become negatives.
//! 4. `ssd_loss_rows`: each prior's confidence and location losses and
//!    gradients (over the batch's matched priors), zero for the rest;
//!    `reduce.rs`'s `sum_blocks` adds the losses up.
use crate::nms::{descending_score_bits, NOT_A_CANDIDATE};
use crate::reduce::{block_reduce, REDUCE_THREADS};
use crate::{grid_stride, kernel, math, shared_array};

/// `matched` of a prior with no box and not mined.
pub const UNMATCHED: u32 = u32::MAX;
/// `matched` of a mined negative.
pub const NEGATIVE: u32 = u32::MAX - 1;
/// Paddle's matching never pairs boxes that overlap by less than this
/// (core's `ssd::loss` rule).
const NO_OVERLAP: f32 = 1e-6;

/// Row `row` of a `[rows, 4]` array.
#[inline(always)]
unsafe fn quad(rows: *const f32, row: u32) -> [f32; 4] {
    let q = rows.add(row as usize * 4);
    [*q, *q.add(1), *q.add(2), *q.add(3)]
}

/// IoU of two normalised boxes (no pixel `+1`), core's `ssd::loss::iou`
/// operation for operation.
#[inline(always)]
fn iou(a: [f32; 4], b: [f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let area_a = (a[2] - a[0]) * (a[3] - a[1]);
    let area_b = (b[2] - b[0]) * (b[3] - b[1]);
    inter / (area_a + area_b - inter)
}

kernel! {
    /// Step 1, `REDUCE_THREADS` threads a block, blocks looping over the
    /// images. Image `n`'s boxes are rows `truth_first[n]..truth_first[n +
    /// 1]` of `truth_boxes` (normalised x1, y1, x2, y2); for each of its
    /// priors (rows of `priors`, `priors_count` of them), `matched[n, p]` =
    /// the row of its box or `UNMATCHED`, `overlaps[n, p]` their IoU (0 when
    /// free); `counts[n]` = the matched priors. `taken` (a flag per box)
    /// is scratch.
    pub fn ssd_match(ctx, priors: *const f32, truth_boxes: *const f32, truth_first: *const u32,
        images: u32, priors_count: u32, threshold: f32, taken: *mut u32, matched: *mut u32,
        overlaps: *mut f32, counts: *mut u32) {
        let scratch = shared_array!(ctx, u64, REDUCE_THREADS as usize);
        let (tid, threads) = (ctx.thread_x(), ctx.block_dim_x());
        let mut n = ctx.block_x();
        while n < images {
            let (first, last) = (*truth_first.add(n as usize), *truth_first.add(n as usize + 1));
            let boxes = last - first;
            let row = n * priors_count;
            let mut p = tid;
            while p < priors_count {
                *matched.add((row + p) as usize) = UNMATCHED;
                *overlaps.add((row + p) as usize) = 0.0;
                p += threads;
            }
            let mut g = tid;
            while g < boxes {
                *taken.add((first + g) as usize) = 0;
                g += threads;
            }
            ctx.sync_threads();
            // Bipartite: a round's best pair has the largest key, the IoU's
            // bits (positive, so ordered as the IoU) over the complement of
            // the pair's index `p * boxes + g`, so that a tie goes to the
            // first prior, then the first box. 0: no pair left.
            let mut round = 0;
            while round < boxes {
                let mut best = 0u64;
                let mut pair = tid;
                while pair < priors_count * boxes {
                    let (p, g) = (pair / boxes, pair % boxes);
                    if *matched.add((row + p) as usize) == UNMATCHED && *taken.add((first + g) as usize) == 0 {
                        let overlap = iou(quad(truth_boxes, first + g), quad(priors, p));
                        if overlap >= NO_OVERLAP {
                            let key = ((overlap.to_bits() as u64) << 32) | (u32::MAX - pair) as u64;
                            best = best.max(key);
                        }
                    }
                    pair += threads;
                }
                let best = block_reduce(ctx, scratch, best, 0, u64::max);
                if best == 0 {
                    break;
                }
                if tid == 0 {
                    let pair = u32::MAX - best as u32;
                    let (p, g) = (pair / boxes, pair % boxes);
                    *matched.add((row + p) as usize) = first + g;
                    *overlaps.add((row + p) as usize) = f32::from_bits((best >> 32) as u32);
                    *taken.add((first + g) as usize) = 1;
                }
                ctx.sync_threads();
                round += 1;
            }
            // Per prediction: each free prior to its best box above the
            // threshold (the first of equal ones); and the matched counted.
            let mut found = 0u64;
            let mut p = tid;
            while p < priors_count {
                let at = (row + p) as usize;
                if *matched.add(at) == UNMATCHED {
                    let mut g = 0;
                    while g < boxes {
                        let overlap = iou(quad(truth_boxes, first + g), quad(priors, p));
                        if overlap >= NO_OVERLAP && overlap >= threshold && overlap > *overlaps.add(at) {
                            *matched.add(at) = first + g;
                            *overlaps.add(at) = overlap;
                        }
                        g += 1;
                    }
                }
                found += (*matched.add(at) != UNMATCHED) as u64;
                p += threads;
            }
            let found = block_reduce(ctx, scratch, found, 0, |a, b| a + b);
            if tid == 0 {
                *counts.add(n as usize) = found as u32;
            }
            n += ctx.grid_dim_x();
        }
    }
}

kernel! {
    /// Step 2, grid-stride over `padded` (a power of two, at least `rows` =
    /// images * `priors_count`): row `i < rows` is a candidate when it is
    /// `UNMATCHED` with an overlap below `neg_overlap`, keyed `image << 32 |
    /// descending_score_bits(its cross-entropy against background)`; the
    /// rest (and the padding) `NOT_A_CANDIDATE`; `values[i] = i`.
    pub fn ssd_mining_keys(ctx, confidence: *const f32, matched: *const u32, overlaps: *const f32,
        rows: u32, priors_count: u32, classes: u32, background: u32, neg_overlap: f32, padded: u32,
        keys: *mut u64, values: *mut u32) {
        grid_stride(ctx, padded, |i| {
            let mut key = NOT_A_CANDIDATE;
            if i < rows as usize && *matched.add(i) == UNMATCHED && *overlaps.add(i) < neg_overlap {
                let logits = confidence.add(i * classes as usize);
                let loss = math::softmax_cross_entropy(logits, classes, background, core::ptr::null_mut(), 0.0);
                let image = i as u64 / priors_count as u64;
                key = (image << 32) | descending_score_bits(loss) as u64;
            }
            *keys.add(i) = key;
            *values.add(i) = i as u32;
        });
    }
}

kernel! {
    /// Step 3, grid-stride over `padded`, after the sort and `bounds =
    /// nms_bounds(keys, .., images)`: image `n` takes `wanted = min(counts[n]
    /// * neg_pos_ratio, its candidates)` negatives, the first of its sorted
    /// candidates, each marked `NEGATIVE` in `matched`; `counts[images + n]`
    /// = `wanted`.
    pub fn ssd_select_negatives(ctx, keys: *const u64, values: *const u32, bounds: *const u32,
        images: u32, neg_pos_ratio: f32, padded: u32, matched: *mut u32, counts: *mut u32) {
        let wanted = |n: usize| {
            let candidates = *bounds.add(n + 1) - *bounds.add(n);
            ((*counts.add(n) as f32 * neg_pos_ratio) as u32).min(candidates)
        };
        grid_stride(ctx, padded, |q| {
            if q < images as usize {
                *counts.add(images as usize + q) = wanted(q);
            }
            let key = *keys.add(q);
            if key != NOT_A_CANDIDATE {
                let n = (key >> 32) as usize;
                if (q as u32 - *bounds.add(n)) < wanted(n) {
                    *matched.add(*values.add(q) as usize) = NEGATIVE;
                }
            }
        });
    }
}

/// Core's `box_coder::encode` of `target` on `prior` with `variance`, for
/// normalised boxes (its `+ 0.0` pixel term included, which makes a -0.0
/// width 0.0).
#[inline(always)]
fn encode(prior: [f32; 4], variance: [f32; 4], target: [f32; 4]) -> [f32; 4] {
    let (pw, ph) = (prior[2] - prior[0] + 0.0, prior[3] - prior[1] + 0.0);
    let (px, py) = (prior[0] + pw / 2.0, prior[1] + ph / 2.0);
    let tw = target[2] - target[0] + 0.0;
    let th = target[3] - target[1] + 0.0;
    let tx = (target[0] + target[2]) / 2.0;
    let ty = (target[1] + target[3]) / 2.0;
    [
        (tx - px) / pw / variance[0],
        (ty - py) / ph / variance[1],
        math::ln(math::abs(tw / pw)) / variance[2],
        math::ln(math::abs(th / ph)) / variance[3],
    ]
}

kernel! {
    /// Step 4, grid-stride over the `images * priors_count` rows: with `P`
    /// the batch's matched priors (`counts[..images]` summed), a matched
    /// row costs the cross-entropy of its `confidence` against its box's
    /// label (`truth_labels`) plus the smooth-L1 (sigma 1) of its
    /// `location` against the box encoded on its prior (`priors`,
    /// `variances`); a `NEGATIVE` row the cross-entropy against
    /// `background`; the rest nothing. `conf_losses[i]`, `loc_losses[i]`
    /// get the row's terms, unscaled; `grad_confidence`, `grad_location`
    /// its gradients scaled by `conf_weight / P` and `loc_weight / P`
    /// (everything 0 when `P` is 0).
    pub fn ssd_loss_rows(ctx, location: *const f32, confidence: *const f32, priors: *const f32,
        variances: *const f32, truth_boxes: *const f32, truth_labels: *const u32,
        matched: *const u32, counts: *const u32, images: u32, priors_count: u32, classes: u32,
        background: u32, loc_weight: f32, conf_weight: f32, grad_location: *mut f32,
        grad_confidence: *mut f32, loc_losses: *mut f32, conf_losses: *mut f32) {
        let mut positives = 0u32;
        let mut n = 0;
        while n < images {
            positives += *counts.add(n as usize);
            n += 1;
        }
        let norm = positives as f32;
        let (conf_scale, loc_scale) = (conf_weight / norm, loc_weight / norm);
        grid_stride(ctx, images * priors_count, |i| {
            let role = *matched.add(i);
            let logits = confidence.add(i * classes as usize);
            let conf_grad = grad_confidence.add(i * classes as usize);
            let loc_grad = grad_location.add(i * 4);
            let (mut conf_loss, mut loc_loss) = (0.0, 0.0);
            let label = if positives == 0 || role == UNMATCHED {
                None
            } else if role == NEGATIVE {
                Some(background)
            } else {
                Some(*truth_labels.add(role as usize))
            };
            match label {
                Some(label) => conf_loss = math::softmax_cross_entropy(logits, classes, label, conf_grad, conf_scale),
                None => {
                    let mut c = 0;
                    while c < classes as usize {
                        *conf_grad.add(c) = 0.0;
                        c += 1;
                    }
                }
            }
            let target = if positives > 0 && role != UNMATCHED && role != NEGATIVE {
                let p = (i % priors_count as usize) as u32;
                Some(encode(quad(priors, p), quad(variances, p), quad(truth_boxes, role)))
            } else {
                None
            };
            let mut k = 0;
            while k < 4 {
                // core's `losses::smooth_l1` with sigma 1 and no weights.
                *loc_grad.add(k) = match target {
                    Some(target) => {
                        let d = *location.add(i * 4 + k) - target[k];
                        let (value, slope) = math::smooth_l1(d, 1.0);
                        loc_loss += value;
                        loc_scale * slope
                    }
                    None => 0.0,
                };
                k += 1;
            }
            *conf_losses.add(i) = conf_loss;
            *loc_losses.add(i) = loc_loss;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emu::{launch, launch_independent, DeviceBuf, Dim3};
    use crate::nms::emulated::{bounds, sort};
    use crate::reduce::REDUCE_THREADS;
    use proptest::prelude::*;
    use pulsefocus_core::box_coder::BoxXyxy;
    use pulsefocus_core::ssd::{ssd_loss, ImageTruth, SsdLoss, SsdLossConfig};

    const GRID: Dim3 = Dim3::x(3);
    const BLOCK: Dim3 = Dim3::x(32);

    /// One image's boxes and labels.
    type Truth = (Vec<BoxXyxy>, Vec<usize>);

    /// The kernels' launch sequence (what `ops::ssd_loss` does with a GPU):
    /// the loss (its sums taken in f64 here) and the two gradients.
    fn device_loss(
        cfg: &SsdLossConfig,
        priors: &[BoxXyxy],
        variances: &[[f32; 4]],
        classes: usize,
        location: &[f32],
        confidence: &[f32],
        truths: &[Truth],
    ) -> (SsdLoss, Vec<f32>, Vec<f32>) {
        let (images, count) = (truths.len() as u32, priors.len() as u32);
        let rows = images * count;
        let mut first = vec![0u32];
        for (boxes, _) in truths {
            first.push(first[first.len() - 1] + boxes.len() as u32);
        }
        let boxes: Vec<f32> = truths.iter().flat_map(|t| t.0.concat()).collect();
        let labels: Vec<u32> = truths
            .iter()
            .flat_map(|t| t.1.iter().map(|&l| l as u32))
            .collect();
        let (pb, vb) = (
            DeviceBuf::new(&priors.concat()),
            DeviceBuf::new(&variances.concat()),
        );
        let (tb, tl, tf) = (
            DeviceBuf::new(&boxes),
            DeviceBuf::new(&labels),
            DeviceBuf::new(&first),
        );
        let (lb, cb) = (DeviceBuf::new(location), DeviceBuf::new(confidence));
        // Scratch a kernel reads without having written fails the comparison.
        let taken = DeviceBuf::filled(labels.len(), 7u32);
        let matched = DeviceBuf::filled(rows as usize, 7u32);
        let overlaps = DeviceBuf::filled(rows as usize, f32::NAN);
        let counts = DeviceBuf::filled(2 * images as usize, u32::MAX);
        launch(
            Dim3::x(images.min(2)),
            Dim3::x(REDUCE_THREADS),
            |c| unsafe {
                ssd_match(
                    c,
                    pb.ptr(),
                    tb.ptr(),
                    tf.ptr(),
                    images,
                    count,
                    cfg.overlap_threshold,
                    taken.ptr(),
                    matched.ptr(),
                    overlaps.ptr(),
                    counts.ptr(),
                )
            },
        );
        let padded = rows.next_power_of_two();
        let keys = DeviceBuf::filled(padded as usize, 0u64);
        let values = DeviceBuf::filled(padded as usize, 0u32);
        launch_independent(GRID, BLOCK, |c| unsafe {
            ssd_mining_keys(
                c,
                cb.ptr(),
                matched.ptr(),
                overlaps.ptr(),
                rows,
                count,
                classes as u32,
                cfg.background_label as u32,
                cfg.neg_overlap,
                padded,
                keys.ptr(),
                values.ptr(),
            )
        });
        sort(&keys, &values);
        let image_bounds = bounds(&keys, images);
        launch_independent(GRID, BLOCK, |c| unsafe {
            ssd_select_negatives(
                c,
                keys.ptr(),
                values.ptr(),
                image_bounds.ptr(),
                images,
                cfg.neg_pos_ratio,
                padded,
                matched.ptr(),
                counts.ptr(),
            )
        });
        let grad_location = DeviceBuf::filled(location.len(), f32::NAN);
        let grad_confidence = DeviceBuf::filled(confidence.len(), f32::NAN);
        let loc_losses = DeviceBuf::filled(rows as usize, f32::NAN);
        let conf_losses = DeviceBuf::filled(rows as usize, f32::NAN);
        launch_independent(GRID, BLOCK, |c| unsafe {
            ssd_loss_rows(
                c,
                lb.ptr(),
                cb.ptr(),
                pb.ptr(),
                vb.ptr(),
                tb.ptr(),
                tl.ptr(),
                matched.ptr(),
                counts.ptr(),
                images,
                count,
                classes as u32,
                cfg.background_label as u32,
                cfg.loc_loss_weight,
                cfg.conf_loss_weight,
                grad_location.ptr(),
                grad_confidence.ptr(),
                loc_losses.ptr(),
                conf_losses.ptr(),
            )
        });
        let counts = counts.to_vec();
        let (positives, negatives) = counts.split_at(images as usize);
        let positives = positives.iter().sum::<u32>() as usize;
        let sum = |b: &DeviceBuf<f32>| b.to_vec().iter().map(|&v| v as f64).sum::<f64>();
        let loss = if positives == 0 {
            SsdLoss::default()
        } else {
            let norm = positives as f64;
            let confidence = cfg.conf_loss_weight as f64 * sum(&conf_losses) / norm;
            let location = cfg.loc_loss_weight as f64 * sum(&loc_losses) / norm;
            SsdLoss {
                total: (confidence + location) as f32,
                confidence: confidence as f32,
                location: location as f32,
                positives,
                negatives: negatives.iter().sum::<u32>() as usize,
            }
        };
        (loss, grad_location.to_vec(), grad_confidence.to_vec())
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// Priors on a coarse grid in two sizes (so that IoUs tie, some
    /// exactly at the thresholds), and boxes drawn on the same grid.
    fn grid_box(cell: u8, size: u8) -> BoxXyxy {
        let (x, y) = ((cell % 4) as f32 * 0.2, (cell / 4 % 4) as f32 * 0.2);
        let s = 0.2 + size as f32 * 0.1;
        [x, y, x + s, y + s]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// The kernels' gradients, matched and mined counts equal core's
        /// `ssd_loss` to the bit, and the loss within the f64 sums' order
        /// (1e-6 relative): images with no box and with more boxes than
        /// priors, logits from a few levels (so that mining losses tie),
        /// thresholds on and off the grid's IoUs.
        #[test]
        fn equals_the_cpu_ssd_loss(
            images in 1usize..4,
            classes in 2usize..5,
            prior_draws in prop::collection::vec((0u8..16, 0u8..3), 1..28),
            box_draws in prop::collection::vec(prop::collection::vec((0u8..16, 0u8..3, 1usize..5), 0..6), 3),
            logits in prop::collection::vec(0u8..4, 3 * 28 * 4),
            deltas in prop::collection::vec(-8i8..8, 3 * 28 * 4),
            overlap_threshold in prop_oneof![Just(0.5f32), 0.1f32..0.9],
            neg_pos_ratio in prop_oneof![Just(3.0f32), 0.0f32..5.0],
            neg_overlap in prop_oneof![Just(0.5f32), Just(0.0), 0.1f32..0.9],
            background in 0usize..2,
        ) {
            let priors: Vec<BoxXyxy> = prior_draws.iter().map(|&(c, s)| grid_box(c, s)).collect();
            let count = priors.len();
            let variances: Vec<[f32; 4]> = (0..count).map(|p| [0.1, 0.1, 0.2 + p as f32 * 0.01, 0.2]).collect();
            let truths: Vec<Truth> = box_draws[..images]
                .iter()
                .map(|b| {
                    let labels = b.iter().map(|&(_, _, l)| l % classes).map(|l| if l == background { (l + 1) % classes } else { l });
                    (b.iter().map(|&(c, s, _)| grid_box(c, s)).collect(), labels.collect())
                })
                .collect();
            let location: Vec<f32> = deltas[..images * count * 4].iter().map(|&d| d as f32 / 4.0).collect();
            let confidence: Vec<f32> = logits[..images * count * classes].iter().map(|&l| l as f32 - 1.5).collect();
            let cfg = SsdLossConfig { background_label: background, overlap_threshold, neg_pos_ratio, neg_overlap, ..SsdLossConfig::default() };

            let image_truths: Vec<ImageTruth> = truths.iter().map(|(boxes, labels)| ImageTruth { boxes, labels }).collect();
            let mut want_location = vec![0.0; location.len()];
            let mut want_confidence = vec![0.0; confidence.len()];
            let want = ssd_loss(&cfg, &priors, &variances, classes, &location, &confidence, &image_truths,
                &mut want_location, &mut want_confidence);
            let (got, got_location, got_confidence) =
                device_loss(&cfg, &priors, &variances, classes, &location, &confidence, &truths);
            prop_assert_eq!((got.positives, got.negatives), (want.positives, want.negatives));
            prop_assert_eq!(bits(&got_location), bits(&want_location));
            prop_assert_eq!(bits(&got_confidence), bits(&want_confidence));
            for (what, g, w) in [("total", got.total, want.total), ("confidence", got.confidence, want.confidence), ("location", got.location, want.location)] {
                prop_assert!((g - w).abs() <= 1e-6 * w.abs(), "{}: {} vs {}", what, g, w);
            }
        }
    }
}
