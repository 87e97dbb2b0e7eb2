//! Paddle's `retinanet_detection_output` on the device, for every image of
//! a batch at once, deciding exactly as core's
//! `retinanet::retinanet_detection_output` does per image. The sort, the
//! bounds, the suppression and the ranking are `nms.rs`'s; the per-level
//! ranking is `proposals.rs`'s with (anchor, class) pairs for anchors:
//!
//! 1. `retina_count_candidates`, then `retina_compact_candidates` (a launch
//!    of each per level, the host summing the per-block counts of all
//!    levels in between, as `nms.rs`'s step 1): every (anchor, class) pair
//!    of every image is an entry `v`; it is a candidate when its score is
//!    above the level's threshold (0 on the last level), keyed `s << 32 |
//!    descending score` for its segment `s = l * N + n` (level `l`, image
//!    `n`) and valued `v`, and only the candidates are written, so the sort
//!    is as long as there are candidates, not pairs (at 800 pixels and 80
//!    classes, about 1.6e7 pairs a picture). A segment's entries are
//!    contiguous in pair order (`(cell * A + a) * K + k`, Paddle's), so
//!    after `bitonic_sort_step` and `nms_bounds` each segment's candidates
//!    are best first, equal scores in pair order (the CPU's tie rule).
//! 2. `retina_decode` (a launch per level): the first `top_k` candidates of
//!    each segment (`pre_nms_top_n`) decoded with their anchors' deltas,
//!    divided by the image's scale and clipped to its picture into slot
//!    `s * slots + rank`, keyed `(n * K + k) << 32 | descending score`
//!    (one NMS segment per image and class); the other slots are no
//!    candidates. Equal scores of a class then sort by slot: by level,
//!    then by rank in the level, the CPU's stable sort over its
//!    level-by-level candidate list.
//! 3. The slots sorted again, `nms_bounds` per (image, class),
//!    `nms_suppress` (pixel IoU, `nms_eta`), `nms_rank_keys` and the sort
//!    again (each image's kept boxes by score, ties in class then rank
//!    order: the CPU's stable sort over its class-by-class survivors),
//!    `nms_bounds` per image, and `retina_write` of each image's best
//!    `keep_top_k`.
use crate::nms::{
    compact_candidates, count_candidates, descending_score_bits, scan_scratch, NOT_A_CANDIDATE,
};
use crate::proposals::{decode_proposal, quad};
use crate::{grid_stride, kernel};

/// Entry `e` of one level (laid out as in `retina_count_candidates`): its
/// key `(first_segment + n) << 32 | descending score` when its score is
/// above `threshold`, else not a candidate.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn retina_key(
    scores: *const f32,
    anchors_per_cell: u32,
    classes: u32,
    cells: u32,
    first_segment: u32,
    threshold: f32,
    e: u32,
) -> u64 {
    let count = anchors_per_cell * classes * cells;
    let (n, i) = (e / count, e % count);
    let (anchor, k) = (i / classes, i % classes);
    let (cell, a) = (anchor / anchors_per_cell, anchor % anchors_per_cell);
    let channel = a * classes + k;
    let score = *scores.add(((n * anchors_per_cell * classes + channel) * cells + cell) as usize);
    if score > threshold {
        (((first_segment + n) as u64) << 32) | descending_score_bits(score) as u64
    } else {
        NOT_A_CANDIDATE
    }
}

kernel! {
    /// Step 1a for one level of `images` images with `classes` classes per
    /// anchor, `anchors_per_cell` anchors on each of `cells` cells, on
    /// `NMS_THREADS` threads a block: level entry `e = n * count + i`
    /// (`count = cells * anchors_per_cell * classes`, pair `i = (cell *
    /// anchors_per_cell + a) * classes + k`) is a candidate when the score
    /// `scores[n, a * classes + k, cell]` (`[N, A * K, H, W]`) is above
    /// `threshold`; `counts[b]` = the candidates of block `b`'s span
    /// (`nms::count_candidates`).
    pub fn retina_count_candidates(ctx, scores: *const f32, images: u32, anchors_per_cell: u32,
        classes: u32, cells: u32, threshold: f32, counts: *mut u32) {
        let scratch = scan_scratch!(ctx);
        let key_of = |e| retina_key(scores, anchors_per_cell, classes, cells, 0, threshold, e);
        let entries = images * anchors_per_cell * classes * cells;
        count_candidates(ctx, scratch, entries, key_of, counts);
    }
}

kernel! {
    /// Step 1b, the grid of `retina_count_candidates`: the level's
    /// candidates compacted (`nms::compact_candidates`) from `offsets` on,
    /// keyed `(first_segment + n) << 32 | descending score`, valued by
    /// their entry `first_entry + e` among every level's; the last level
    /// pads `keys` to `padded` (0 for the others).
    pub fn retina_compact_candidates(ctx, scores: *const f32, images: u32, anchors_per_cell: u32,
        classes: u32, cells: u32, threshold: f32, first_entry: u32, first_segment: u32,
        offsets: *const u32, padded: u32, keys: *mut u64, values: *mut u32) {
        let scratch = scan_scratch!(ctx);
        let key_of =
            |e| retina_key(scores, anchors_per_cell, classes, cells, first_segment, threshold, e);
        let entries = images * anchors_per_cell * classes * cells;
        compact_candidates(ctx, scratch, entries, key_of, first_entry, offsets, padded, keys, values);
    }
}

kernel! {
    /// Step 2 for one level (laid out as in `retina_keys`), after the sort
    /// and `bounds` (`nms_bounds` of its keys over every (level, image)
    /// segment): for image `n < images` and rank `r < slots`, slot `q =
    /// (first_segment + n) * slots + r`. When `r` is below `top_k` and the
    /// segment's candidate count, the pair at sorted position
    /// `bounds[first_segment + n] + r` (`values` holds its entry) is decoded
    /// from `deltas` (`[N, 4A, H, W]`) and its anchor in `anchors` (`[cells
    /// * A, 4]`, variance 1, no cap on the log-sizes), divided by the
    /// image's scale and clipped to its picture (`pictures [N, 3]`: scale,
    /// then the picture's height and width, rounded as core's `box_clip`
    /// rounds them): `boxes[q]`, `box_scores[q]` are written and `keys[q] =
    /// (n * classes + k) << 32 | descending score`; otherwise `keys[q]` is
    /// not a candidate. `ranked[q] = q`. Slots from `(first_segment +
    /// images) * slots` up to `end` are padding.
    pub fn retina_decode(ctx, values: *const u32, bounds: *const u32, scores: *const f32,
        deltas: *const f32, anchors: *const f32, pictures: *const f32, images: u32,
        anchors_per_cell: u32, classes: u32, cells: u32, first_entry: u32, first_segment: u32,
        top_k: u32, slots: u32, end: u32, boxes: *mut f32, box_scores: *mut f32,
        keys: *mut u64, ranked: *mut u32) {
        let count = anchors_per_cell * classes * cells;
        let first_slot = first_segment * slots;
        grid_stride(ctx, end - first_slot, |e| {
            let e = e as u32;
            let q = first_slot + e;
            let (n, r) = (e / slots, e % slots);
            let mut key = NOT_A_CANDIDATE;
            if n < images {
                let segment = (first_segment + n) as usize;
                let (start, stop) = (*bounds.add(segment), *bounds.add(segment + 1));
                if r < top_k && r < stop - start {
                    let i = *values.add((start + r) as usize) - (first_entry + n * count);
                    let (anchor, k) = (i / classes, i % classes);
                    let (cell, a) = (anchor / anchors_per_cell, anchor % anchors_per_cell);
                    let plane = |channel: u32| *deltas.add(((n * 4 * anchors_per_cell + channel) * cells + cell) as usize);
                    let offsets = [plane(4 * a), plane(4 * a + 1), plane(4 * a + 2), plane(4 * a + 3)];
                    let b = decode_proposal(quad(anchors, anchor), [1.0; 4], offsets, f32::INFINITY);
                    let picture = pictures.add(n as usize * 3);
                    let (scale, height, width) = (*picture, *picture.add(1), *picture.add(2));
                    let clip = |v: f32, size: f32| (v / scale).min(size - 1.0).max(0.0);
                    let channel = a * classes + k;
                    let score = *scores.add(((n * anchors_per_cell * classes + channel) * cells + cell) as usize);
                    let out = boxes.add(q as usize * 4);
                    *out = clip(b[0], width);
                    *out.add(1) = clip(b[1], height);
                    *out.add(2) = clip(b[2], width);
                    *out.add(3) = clip(b[3], height);
                    *box_scores.add(q as usize) = score;
                    key = (((n * classes + k) as u64) << 32) | descending_score_bits(score) as u64;
                }
            }
            *keys.add(q as usize) = key;
            *ranked.add(q as usize) = q;
        });
    }
}

kernel! {
    /// Step 3's end, after `nms_rank_keys` of the NMS sort (`keys`,
    /// `ranked`, `keep`) into `rank_keys`/`rank_values`, their sort and
    /// `image_bounds` (`nms_bounds` over the images): position `j` of the
    /// rank sort holding image `n`'s kept box of rank `j -
    /// image_bounds[n]` below `capacity` writes row `[class + 1, score, x1,
    /// y1, x2, y2]` of `detections [N, capacity, 6]`, the class from its
    /// NMS key (`classes` per image), its box and score from its slot.
    pub fn retina_write(ctx, rank_keys: *const u64, rank_values: *const u32,
        image_bounds: *const u32, keys: *const u64, ranked: *const u32, boxes: *const f32,
        box_scores: *const f32, padded: u32, classes: u32, capacity: u32, detections: *mut f32) {
        grid_stride(ctx, padded, |j| {
            let key = *rank_keys.add(j);
            if key != NOT_A_CANDIDATE {
                let n = (key >> 32) as u32;
                let rank = j as u32 - *image_bounds.add(n as usize);
                if rank < capacity {
                    let p = *rank_values.add(j) as usize;
                    let class = ((*keys.add(p) >> 32) as u32) % classes;
                    let q = *ranked.add(p);
                    let b = quad(boxes, q);
                    let d = detections.add(((n * capacity + rank) * 6) as usize);
                    *d = (class + 1) as f32;
                    *d.add(1) = *box_scores.add(q as usize);
                    *d.add(2) = b[0];
                    *d.add(3) = b[1];
                    *d.add(4) = b[2];
                    *d.add(5) = b[3];
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emu::{launch, launch_independent, DeviceBuf, Dim3};
    use crate::nms::emulated::{bounds, sort};
    use crate::nms::{nms_rank_keys, nms_suppress, NMS_THREADS};
    use proptest::prelude::*;
    use pulsefocus_core::box_coder::BoxXyxy;
    use pulsefocus_core::rcnn::ImInfo;
    use pulsefocus_core::retinanet::{retinanet_detection_output, RetinaOutputConfig};
    use pulsefocus_core::yolo::Detection;

    const GRID: Dim3 = Dim3::x(3);
    const BLOCK: Dim3 = Dim3::x(32);
    /// Blocks of step 1: more than one, and spans that cut a level anywhere.
    const COMPACT_BLOCKS: u32 = 3;

    /// One level: `(scores [N, A*K, H, W], deltas [N, 4A, H, W], anchors,
    /// H, W)`.
    type Level = (Vec<f32>, Vec<f32>, Vec<BoxXyxy>, usize, usize);

    /// The kernels' launch sequence (what `ops::retinanet` does with a
    /// GPU): each image's detections.
    fn device_detect(
        cfg: &RetinaOutputConfig,
        levels: &[Level],
        a: usize,
        classes: usize,
        im_info: &[[f32; 3]],
    ) -> Vec<Vec<Detection>> {
        let (images, k) = (im_info.len() as u32, classes as u32);
        let counts: Vec<u32> = levels
            .iter()
            .map(|l| (l.3 * l.4 * a * classes) as u32)
            .collect();
        let top_k: Vec<u32> = counts
            .iter()
            .map(|&c| c.min(cfg.pre_nms_top_n as u32))
            .collect();
        let slots = top_k.iter().copied().max().unwrap();
        let capacity = (cfg.detections_per_im as u32).min(levels.len() as u32 * slots);
        if capacity == 0 {
            return vec![Vec::new(); im_info.len()];
        }
        let bufs: Vec<[DeviceBuf<f32>; 3]> = levels
            .iter()
            .map(|l| {
                [
                    DeviceBuf::new(&l.0),
                    DeviceBuf::new(&l.1),
                    DeviceBuf::new(&l.2.concat()),
                ]
            })
            .collect();
        let last = levels.len() - 1;
        let threshold = |l: usize| if l == last { 0.0 } else { cfg.score_thresh };
        let cells = |l: usize| counts[l] / (a as u32 * k);
        // Step 1: each level's candidates counted per block, the counts
        // summed over all levels, then compacted.
        let compact = Dim3::x(COMPACT_BLOCKS);
        let mut offsets = vec![0u32];
        for (l, buf) in bufs.iter().enumerate() {
            let found = DeviceBuf::filled(COMPACT_BLOCKS as usize, u32::MAX);
            launch(compact, Dim3::x(NMS_THREADS), |c| unsafe {
                let (scores, t) = (buf[0].ptr(), threshold(l));
                retina_count_candidates(c, scores, images, a as u32, k, cells(l), t, found.ptr())
            });
            for count in found.to_vec() {
                offsets.push(offsets[offsets.len() - 1] + count);
            }
        }
        let padded = offsets[offsets.len() - 1].next_power_of_two();
        let keys = DeviceBuf::filled(padded as usize, 0u64);
        let values = DeviceBuf::filled(padded as usize, 0u32);
        let mut first = 0;
        for (l, &count) in counts.iter().enumerate() {
            let blocks = COMPACT_BLOCKS as usize;
            let level_offsets = DeviceBuf::new(&offsets[l * blocks..=(l + 1) * blocks]);
            let pad = if l == last { padded } else { 0 };
            launch(compact, Dim3::x(NMS_THREADS), |c| unsafe {
                retina_compact_candidates(
                    c,
                    bufs[l][0].ptr(),
                    images,
                    a as u32,
                    k,
                    cells(l),
                    threshold(l),
                    first,
                    l as u32 * images,
                    level_offsets.ptr(),
                    pad,
                    keys.ptr(),
                    values.ptr(),
                )
            });
            first += images * count;
        }
        sort(&keys, &values);
        let segments = levels.len() as u32 * images;
        let level_bounds = bounds(&keys, segments);
        let padded2 = (segments * slots).next_power_of_two();
        let boxes = DeviceBuf::filled((segments * slots * 4) as usize, f32::NAN);
        let box_scores = DeviceBuf::filled((segments * slots) as usize, f32::NAN);
        let keys2 = DeviceBuf::filled(padded2 as usize, 0u64);
        let ranked = DeviceBuf::filled(padded2 as usize, 0u32);
        let pictures: Vec<f32> = im_info
            .iter()
            .flat_map(|&[h, w, s]| [s, (h / s).round(), (w / s).round()])
            .collect();
        let pictures = DeviceBuf::new(&pictures);
        let mut first = 0;
        for (l, &count) in counts.iter().enumerate() {
            let first_segment = l as u32 * images;
            let end = if l == last {
                padded2
            } else {
                (first_segment + images) * slots
            };
            launch_independent(GRID, BLOCK, |c| unsafe {
                retina_decode(
                    c,
                    values.ptr(),
                    level_bounds.ptr(),
                    bufs[l][0].ptr(),
                    bufs[l][1].ptr(),
                    bufs[l][2].ptr(),
                    pictures.ptr(),
                    images,
                    a as u32,
                    k,
                    count / (a as u32 * k),
                    first,
                    first_segment,
                    top_k[l],
                    slots,
                    end,
                    boxes.ptr(),
                    box_scores.ptr(),
                    keys2.ptr(),
                    ranked.ptr(),
                )
            });
            first += images * count;
        }
        sort(&keys2, &ranked);
        let class_segments = images * k;
        let class_bounds = bounds(&keys2, class_segments);
        let keep = DeviceBuf::filled(padded2 as usize, 7u32);
        let overlaps = DeviceBuf::filled(padded2 as usize, f32::NAN);
        launch(
            Dim3::x(class_segments.min(3)),
            Dim3::x(NMS_THREADS),
            |c| unsafe {
                nms_suppress(
                    c,
                    ranked.ptr(),
                    class_bounds.ptr(),
                    boxes.ptr(),
                    1,
                    slots,
                    class_segments,
                    u32::MAX,
                    cfg.nms_thresh,
                    cfg.nms_eta,
                    u32::MAX,
                    1.0,
                    keep.ptr(),
                    overlaps.ptr(),
                )
            },
        );
        let rank_keys = DeviceBuf::filled(padded2 as usize, 0u64);
        let rank_values = DeviceBuf::filled(padded2 as usize, 0u32);
        launch_independent(GRID, BLOCK, |c| unsafe {
            nms_rank_keys(
                c,
                keys2.ptr(),
                keep.ptr(),
                k,
                padded2,
                rank_keys.ptr(),
                rank_values.ptr(),
            )
        });
        sort(&rank_keys, &rank_values);
        let image_bounds = bounds(&rank_keys, images);
        let rows = DeviceBuf::filled((images * capacity * 6) as usize, f32::NAN);
        launch_independent(GRID, BLOCK, |c| unsafe {
            retina_write(
                c,
                rank_keys.ptr(),
                rank_values.ptr(),
                image_bounds.ptr(),
                keys2.ptr(),
                ranked.ptr(),
                boxes.ptr(),
                box_scores.ptr(),
                padded2,
                k,
                capacity,
                rows.ptr(),
            )
        });
        let (rows, image_bounds) = (rows.to_vec(), image_bounds.to_vec());
        (0..im_info.len())
            .map(|n| {
                let kept = (image_bounds[n + 1] - image_bounds[n]).min(capacity) as usize;
                rows[n * capacity as usize * 6..]
                    .chunks_exact(6)
                    .take(kept)
                    .map(|d| Detection {
                        class: d[0] as usize,
                        score: d[1],
                        bbox: [d[2], d[3], d[4], d[5]],
                    })
                    .collect()
            })
            .collect()
    }

    /// Detections to the bit.
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

    /// Levels of `sizes` with `a` anchors per cell on a stride-`16 >> l`
    /// grid (neighbours overlap), scores in eighths (so that they tie and
    /// sit on the threshold), deltas in quarters up to 1.
    fn levels(
        sizes: &[(usize, usize)],
        a: usize,
        classes: usize,
        images: usize,
        draws: &[u8],
    ) -> Vec<Level> {
        let mut d = draws.iter().cycle();
        sizes
            .iter()
            .enumerate()
            .map(|(l, &(h, w))| {
                let anchors_count = h * w * a;
                let stride = (16 >> l) as f32;
                let scores: Vec<f32> = (0..images * anchors_count * classes)
                    .map(|_| (*d.next().unwrap() % 9) as f32 / 8.0)
                    .collect();
                let deltas: Vec<f32> = (0..images * 4 * anchors_count)
                    .map(|_| (*d.next().unwrap() % 9) as f32 / 4.0 - 1.0)
                    .collect();
                let mut anchors = Vec::new();
                for cell in 0..h * w {
                    let (cx, cy) = (
                        (cell % w) as f32 * stride + 7.5,
                        (cell / w) as f32 * stride + 7.5,
                    );
                    for k in 0..a {
                        let half = 5.0 * (k + 1) as f32 - 0.5;
                        anchors.push([cx - half, cy - half, cx + half, cy + half]);
                    }
                }
                (scores, deltas, anchors, h, w)
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// The kernels' detections equal core's
        /// `retinanet_detection_output` per image, to the bit and in
        /// order, for every setting.
        #[test]
        fn equals_the_cpu_retinanet_detection_output(
            images in 1usize..3,
            fpn: bool,
            a in 1usize..3,
            classes in 1usize..4,
            draws in prop::collection::vec(any::<u8>(), 64..256),
            score_thresh in prop_oneof![Just(0.0f32), Just(0.25), 0.0f32..0.9],
            pre_nms_top_n in prop_oneof![Just(0usize), 1usize..40, Just(10_000)],
            detections_per_im in prop_oneof![Just(0usize), 1usize..30, Just(10_000)],
            nms_thresh in prop_oneof![Just(0.5f32), Just(0.0), 0.3f32..0.95],
            nms_eta in prop_oneof![Just(1.0f32), 0.5f32..1.0],
        ) {
            let sizes: &[(usize, usize)] = if fpn { &[(3, 4), (2, 2), (1, 1)] } else { &[(2, 3)] };
            let levels = levels(sizes, a, classes, images, &draws);
            let im_info: Vec<[f32; 3]> = (0..images)
                .map(|n| [40.0 - 7.0 * n as f32, 50.0, 1.0 + n as f32 * 0.7])
                .collect();
            let cfg = RetinaOutputConfig { score_thresh, nms_thresh, pre_nms_top_n, detections_per_im, nms_eta };
            let level_sizes: Vec<[usize; 2]> = sizes.iter().map(|&(h, w)| [h, w]).collect();
            let want: Vec<Vec<Detection>> = im_info
                .iter()
                .enumerate()
                .map(|(n, &[height, width, scale])| {
                    let part = |v: &[f32]| {
                        let per_image = v.len() / images;
                        v[n * per_image..][..per_image].to_vec()
                    };
                    let scores: Vec<Vec<f32>> = levels.iter().map(|l| part(&l.0)).collect();
                    let deltas: Vec<Vec<f32>> = levels.iter().map(|l| part(&l.1)).collect();
                    retinanet_detection_output(
                        &scores.iter().map(Vec::as_slice).collect::<Vec<_>>(),
                        &deltas.iter().map(Vec::as_slice).collect::<Vec<_>>(),
                        &level_sizes,
                        a,
                        &levels.iter().map(|l| l.2.as_slice()).collect::<Vec<_>>(),
                        ImInfo { height, width, scale },
                        &cfg,
                    )
                })
                .collect();
            let got = device_detect(&cfg, &levels, a, classes, &im_info);
            prop_assert_eq!(bits(&got), bits(&want));
        }
    }
}
