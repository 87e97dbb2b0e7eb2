//! Paddle's `generate_proposals` on the device, for every (level, image) of
//! a batch at once, deciding exactly as core's `rcnn::generate_proposals`
//! does per image. A segment is one (level, image): segment `l * N + n`.
//! The sort, the bounds, the suppression and the write are `nms.rs`'s:
//!
//! 1. `proposal_keys` (a launch per level): every anchor of every image is
//!    an entry, entry `v` of segment `s` keyed `s << 32 | descending score`
//!    with value `v`; the entries of a segment are contiguous, in anchor
//!    order, so after `bitonic_sort_step` each segment's anchors are its
//!    positions, best first, equal scores by anchor index (the CPU's tie
//!    rule), and segment `s` still starts where its entries did.
//! 2. `proposal_decode` (a launch per level): the first `top_k` of each
//!    segment (`pre_nms_top_n`) decoded, clipped and filtered into slot
//!    `s * slots + rank` of the ranked list; a slot that passes the filter
//!    is keyed again as in step 1, the others (and the slots past the
//!    segment's `top_k`) are no candidates, and its value is the slot.
//! 3. The ranked list sorted again (the survivors of each segment, still
//!    in rank order) and `nms_bounds`; `nms_suppress` with one class, the
//!    pixel `+1`, `eta` and the post-NMS cut as `max_kept` (with
//!    `nms_thresh <= 0` an infinite threshold and no cut: no NMS); and
//!    `nms_write` of each segment's kept boxes and scores, one "image" per
//!    segment.
use crate::nms::{descending_score_bits, NOT_A_CANDIDATE};
use crate::{grid_stride, kernel, math};

kernel! {
    /// Step 1 for one level of `images` images, `anchors_per_cell` anchors
    /// on each of `cells` cells: entry `v = first_entry + n * count + i`
    /// (`count` = `cells * anchors_per_cell`, anchor `i = cell *
    /// anchors_per_cell + a`) gets `keys[v] = (first_segment + n) << 32 |
    /// descending score`, the score `scores[n, a, cell]` (`[N, A, H, W]`),
    /// and `values[v] = v`. Entries from `first_entry + images * count` up
    /// to `end` are padding: not a candidate, their index as value.
    pub fn proposal_keys(ctx, scores: *const f32, images: u32, anchors_per_cell: u32, cells: u32,
        first_entry: u32, first_segment: u32, end: u32, keys: *mut u64, values: *mut u32) {
        let count = anchors_per_cell * cells;
        grid_stride(ctx, end - first_entry, |e| {
            let e = e as u32;
            let key = if e < images * count {
                let (n, i) = (e / count, e % count);
                let (cell, a) = (i / anchors_per_cell, i % anchors_per_cell);
                let score = *scores.add(((n * anchors_per_cell + a) * cells + cell) as usize);
                (((first_segment + n) as u64) << 32) | descending_score_bits(score) as u64
            } else {
                NOT_A_CANDIDATE
            };
            *keys.add((first_entry + e) as usize) = key;
            *values.add((first_entry + e) as usize) = first_entry + e;
        });
    }
}

/// Anchor `anchor`'s box decoded from its `deltas` (`[dx, dy, dw, dh]`)
/// with its `variance`, the log-sizes capped at `max_log_scale`: core's
/// `box_coder::decode_proposal`, operation for operation.
#[inline(always)]
pub(crate) fn decode_proposal(
    anchor: [f32; 4],
    variance: [f32; 4],
    deltas: [f32; 4],
    max_log_scale: f32,
) -> [f32; 4] {
    let (pw, ph) = (anchor[2] - anchor[0] + 1.0, anchor[3] - anchor[1] + 1.0);
    let (px, py) = (anchor[0] + pw / 2.0, anchor[1] + ph / 2.0);
    let cx = variance[0] * deltas[0] * pw + px;
    let cy = variance[1] * deltas[1] * ph + py;
    let w = math::exp((variance[2] * deltas[2]).min(max_log_scale)) * pw;
    let h = math::exp((variance[3] * deltas[3]).min(max_log_scale)) * ph;
    [
        cx - w / 2.0,
        cy - h / 2.0,
        cx + w / 2.0 - 1.0,
        cy + h / 2.0 - 1.0,
    ]
}

/// Row `row` of a `[rows, 4]` array.
#[inline(always)]
pub(crate) unsafe fn quad(rows: *const f32, row: u32) -> [f32; 4] {
    let q = rows.add(row as usize * 4);
    [*q, *q.add(1), *q.add(2), *q.add(3)]
}

kernel! {
    /// Step 2 for one level (laid out as in `proposal_keys`), after the
    /// sort: for image `n < images` and rank `r < slots`, slot `q =
    /// (first_segment + n) * slots + r`. For `r < top_k` the anchor at
    /// sorted position `first_entry + n * count + r` (`values` holds its
    /// entry) is decoded from `deltas` (`[N, 4A, H, W]`) with `anchors` and
    /// `variances` (`[count, 4]`), clipped to `[0, w - 1] x [0, h - 1]` and
    /// kept when at least `min_size` (already `max(min_size, 1)`) wide and
    /// high in original pixels with its centre inside the image (`im_info
    /// [N, 3]`: h, w, scale), as core's `generate_proposals`: `boxes[q]`
    /// and `box_scores[q]` are written, and `keys[q]` = `(first_segment +
    /// n) << 32 | descending score` when kept, else not a candidate (as
    /// for `r >= top_k`); `ranked[q] = q`. Slots from `(first_segment +
    /// images) * slots` up to `end` are padding.
    pub fn proposal_decode(ctx, values: *const u32, scores: *const f32, deltas: *const f32,
        anchors: *const f32, variances: *const f32, im_info: *const f32, images: u32,
        anchors_per_cell: u32, cells: u32, first_entry: u32, first_segment: u32, top_k: u32,
        slots: u32, end: u32, min_size: f32, max_log_scale: f32, boxes: *mut f32,
        box_scores: *mut f32, keys: *mut u64, ranked: *mut u32) {
        let count = anchors_per_cell * cells;
        let first_slot = first_segment * slots;
        grid_stride(ctx, end - first_slot, |e| {
            let e = e as u32;
            let q = first_slot + e;
            let (n, r) = (e / slots, e % slots);
            let mut key = NOT_A_CANDIDATE;
            if n < images && r < top_k {
                let image_first = first_entry + n * count;
                let i = *values.add((image_first + r) as usize) - image_first;
                let (cell, a) = (i / anchors_per_cell, i % anchors_per_cell);
                let plane = |channel: u32| *deltas.add(((n * 4 * anchors_per_cell + channel) * cells + cell) as usize);
                let offsets = [plane(4 * a), plane(4 * a + 1), plane(4 * a + 2), plane(4 * a + 3)];
                let b = decode_proposal(quad(anchors, i), quad(variances, i), offsets, max_log_scale);
                let info = im_info.add(n as usize * 3);
                let (im_h, im_w, scale) = (*info, *info.add(1), *info.add(2));
                let b = [
                    b[0].min(im_w - 1.0).max(0.0),
                    b[1].min(im_h - 1.0).max(0.0),
                    b[2].min(im_w - 1.0).max(0.0),
                    b[3].min(im_h - 1.0).max(0.0),
                ];
                let centre_x = b[0] + (b[2] - b[0] + 1.0) / 2.0;
                let centre_y = b[1] + (b[3] - b[1] + 1.0) / 2.0;
                let original_w = (b[2] - b[0]) / scale + 1.0;
                let original_h = (b[3] - b[1]) / scale + 1.0;
                let score = *scores.add(((n * anchors_per_cell + a) * cells + cell) as usize);
                let out = boxes.add(q as usize * 4);
                *out = b[0];
                *out.add(1) = b[1];
                *out.add(2) = b[2];
                *out.add(3) = b[3];
                *box_scores.add(q as usize) = score;
                if original_w >= min_size && original_h >= min_size && centre_x <= im_w && centre_y <= im_h {
                    key = (((first_segment + n) as u64) << 32) | descending_score_bits(score) as u64;
                }
            }
            *keys.add(q as usize) = key;
            *ranked.add(q as usize) = q;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emu::{launch, launch_independent, DeviceBuf, Dim3};
    use crate::nms::emulated::{bounds, sort};
    use crate::nms::{nms_suppress, nms_write, KEPT, NMS_THREADS};
    use proptest::prelude::*;
    use pulsefocus_core::box_coder::{proposal_log_scale_clamp, BoxXyxy};
    use pulsefocus_core::rcnn::{generate_proposals, ProposalConfig, Proposals};

    const GRID: Dim3 = Dim3::x(3);
    const BLOCK: Dim3 = Dim3::x(32);

    /// One level: `(scores [N, A, H, W], deltas [N, 4A, H, W], anchors,
    /// variances, H, W)`.
    type Level = (
        Vec<f32>,
        Vec<f32>,
        Vec<BoxXyxy>,
        Vec<[f32; 4]>,
        usize,
        usize,
    );

    /// The kernels' launch sequence (what `ops::proposals` does with a
    /// GPU): `result[l][n]`.
    fn device_proposals(
        cfg: &ProposalConfig,
        levels: &[Level],
        a: usize,
        im_info: &[[f32; 3]],
    ) -> Vec<Vec<Proposals>> {
        let images = im_info.len() as u32;
        let counts: Vec<u32> = levels.iter().map(|l| (l.4 * l.5 * a) as u32).collect();
        let total: u32 = counts.iter().sum::<u32>() * images;
        let padded = total.next_power_of_two();
        let keys = DeviceBuf::filled(padded as usize, 0u64);
        let values = DeviceBuf::filled(padded as usize, 0u32);
        let bufs: Vec<[DeviceBuf<f32>; 4]> = levels
            .iter()
            .map(|l| {
                [
                    DeviceBuf::new(&l.0),
                    DeviceBuf::new(&l.1),
                    DeviceBuf::new(&l.2.concat()),
                    DeviceBuf::new(&l.3.concat()),
                ]
            })
            .collect();
        let mut first = 0;
        for (l, &count) in counts.iter().enumerate() {
            let end = if l + 1 == levels.len() {
                padded
            } else {
                first + images * count
            };
            launch_independent(GRID, BLOCK, |c| unsafe {
                proposal_keys(
                    c,
                    bufs[l][0].ptr(),
                    images,
                    a as u32,
                    count / a as u32,
                    first,
                    l as u32 * images,
                    end,
                    keys.ptr(),
                    values.ptr(),
                )
            });
            first += images * count;
        }
        sort(&keys, &values);
        let top_k = |count: u32| match cfg.pre_nms_top_n {
            0 => count,
            n => (n as u32).min(count),
        };
        let slots = counts.iter().map(|&c| top_k(c)).max().unwrap();
        let segments = levels.len() as u32 * images;
        let padded2 = (segments * slots).next_power_of_two();
        let boxes = DeviceBuf::filled((segments * slots * 4) as usize, f32::NAN);
        let box_scores = DeviceBuf::filled((segments * slots) as usize, f32::NAN);
        let keys2 = DeviceBuf::filled(padded2 as usize, 0u64);
        let ranked = DeviceBuf::filled(padded2 as usize, 0u32);
        let info = DeviceBuf::new(&im_info.concat());
        let mut first = 0;
        for (l, &count) in counts.iter().enumerate() {
            let first_segment = l as u32 * images;
            let end = if l + 1 == levels.len() {
                padded2
            } else {
                (first_segment + images) * slots
            };
            launch_independent(GRID, BLOCK, |c| unsafe {
                proposal_decode(
                    c,
                    values.ptr(),
                    bufs[l][0].ptr(),
                    bufs[l][1].ptr(),
                    bufs[l][2].ptr(),
                    bufs[l][3].ptr(),
                    info.ptr(),
                    images,
                    a as u32,
                    count / a as u32,
                    first,
                    first_segment,
                    top_k(count),
                    slots,
                    end,
                    cfg.min_size.max(1.0),
                    proposal_log_scale_clamp(),
                    boxes.ptr(),
                    box_scores.ptr(),
                    keys2.ptr(),
                    ranked.ptr(),
                )
            });
            first += images * count;
        }
        sort(&keys2, &ranked);
        let bounds = bounds(&keys2, segments);
        let keep = DeviceBuf::filled(padded2 as usize, 7u32);
        let overlaps = DeviceBuf::filled(padded2 as usize, f32::NAN);
        let (thresh, max_kept) = match (cfg.nms_thresh <= 0.0, cfg.post_nms_top_n) {
            (true, _) => (f32::INFINITY, u32::MAX),
            (false, 0) => (cfg.nms_thresh, u32::MAX),
            (false, post) => (cfg.nms_thresh, post as u32),
        };
        launch(Dim3::x(segments.min(3)), Dim3::x(NMS_THREADS), |c| unsafe {
            nms_suppress(
                c,
                ranked.ptr(),
                bounds.ptr(),
                boxes.ptr(),
                1,
                slots,
                segments,
                slots,
                thresh,
                cfg.eta,
                max_kept,
                1.0,
                keep.ptr(),
                overlaps.ptr(),
            )
        });
        let capacity = max_kept.min(slots);
        let rows = DeviceBuf::filled((segments * capacity * 6) as usize, f32::NAN);
        let found = DeviceBuf::filled(segments as usize, u32::MAX);
        launch(Dim3::x(segments.min(2)), Dim3::x(NMS_THREADS), |c| unsafe {
            nms_write(
                c,
                ranked.ptr(),
                bounds.ptr(),
                keep.ptr(),
                boxes.ptr(),
                box_scores.ptr(),
                segments,
                1,
                slots,
                KEPT,
                capacity,
                rows.ptr(),
                found.ptr(),
            )
        });
        let (rows, found) = (rows.to_vec(), found.to_vec());
        (0..levels.len())
            .map(|l| {
                (0..im_info.len())
                    .map(|n| {
                        let s = l * im_info.len() + n;
                        let kept = rows[s * capacity as usize * 6..]
                            .chunks_exact(6)
                            .take(found[s] as usize);
                        let mut p = Proposals::default();
                        for row in kept {
                            p.scores.push(row[1]);
                            p.boxes.push([row[2], row[3], row[4], row[5]]);
                        }
                        p
                    })
                    .collect()
            })
            .collect()
    }

    /// One image's proposals as bits: scores, boxes.
    type ProposalBits = (Vec<u32>, Vec<[u32; 4]>);

    /// Proposals to the bit.
    fn bits(p: &[Vec<Proposals>]) -> Vec<Vec<ProposalBits>> {
        p.iter()
            .map(|level| {
                level
                    .iter()
                    .map(|p| {
                        (
                            p.scores.iter().map(|s| s.to_bits()).collect(),
                            p.boxes.iter().map(|b| b.map(f32::to_bits)).collect(),
                        )
                    })
                    .collect()
            })
            .collect()
    }

    /// Levels of `sizes` with `a` anchors per cell on a stride-`16 >> l`
    /// grid, scores from a few values (so that they tie), deltas in halves.
    fn levels(sizes: &[(usize, usize)], a: usize, images: usize, draws: &[u8]) -> Vec<Level> {
        let mut d = draws.iter().cycle();
        sizes
            .iter()
            .enumerate()
            .map(|(l, &(h, w))| {
                let count = h * w * a;
                let stride = (16 >> l) as f32;
                let scores: Vec<f32> = (0..images * count)
                    .map(|_| (*d.next().unwrap() % 6) as f32 / 5.0)
                    .collect();
                let deltas: Vec<f32> = (0..images * 4 * count)
                    .map(|_| (*d.next().unwrap() % 9) as f32 / 4.0 - 1.0)
                    .collect();
                let mut anchors = Vec::new();
                for cell in 0..h * w {
                    let (cx, cy) = (
                        (cell % w) as f32 * stride + 7.5,
                        (cell / w) as f32 * stride + 7.5,
                    );
                    for k in 0..a {
                        let half = 4.0 * (k + 1) as f32 - 0.5;
                        anchors.push([cx - half, cy - half, cx + half, cy + half]);
                    }
                }
                (
                    scores,
                    deltas,
                    anchors,
                    vec![[1.0, 1.0, 0.5, 0.5]; count],
                    h,
                    w,
                )
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// The kernels' proposals equal core's `generate_proposals` per
        /// level and image, to the bit and in order, for every setting.
        #[test]
        fn equals_the_cpu_generate_proposals(
            images in 1usize..3,
            fpn: bool,
            a in 1usize..4,
            draws in prop::collection::vec(any::<u8>(), 64..256),
            pre_nms_top_n in prop_oneof![Just(0usize), 1usize..40],
            post_nms_top_n in prop_oneof![Just(0usize), 1usize..20],
            nms_thresh in prop_oneof![Just(0.0f32), Just(-1.0), Just(0.5), 0.3f32..0.95],
            min_size in prop_oneof![Just(0.0f32), 0.0f32..12.0, Just(1000.0)],
            eta in prop_oneof![Just(1.0f32), 0.5f32..1.0],
        ) {
            let sizes: &[(usize, usize)] = if fpn { &[(4, 5), (2, 3), (1, 1)] } else { &[(3, 4)] };
            let levels = levels(sizes, a, images, &draws);
            let im_info: Vec<[f32; 3]> = (0..images).map(|n| [50.0 - 7.0 * n as f32, 60.0, 1.0 + n as f32 * 0.5]).collect();
            let cfg = ProposalConfig { pre_nms_top_n, post_nms_top_n, nms_thresh, min_size, eta };
            let want: Vec<Vec<Proposals>> = levels
                .iter()
                .map(|(scores, deltas, anchors, variances, h, w)| {
                    let count = h * w * a;
                    im_info
                        .iter()
                        .enumerate()
                        .map(|(n, &info)| {
                            generate_proposals(&cfg, &scores[n * count..][..count],
                                &deltas[n * 4 * count..][..4 * count], anchors, variances, (*h, *w), info)
                        })
                        .collect()
                })
                .collect();
            let got = device_proposals(&cfg, &levels, a, &im_info);
            prop_assert_eq!(bits(&got), bits(&want));
        }
    }
}
