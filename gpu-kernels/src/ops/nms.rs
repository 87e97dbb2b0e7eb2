//! Paddle's `multiclass_nms` on the device (`device/src/nms.rs`), for a
//! batch of images at once, deciding exactly as core's
//! `yolo::multiclass_nms`: the candidates compacted, a segmented bitonic
//! sort, per-class suppression by block, `keep_top_k` by a second sort, and
//! one detection list per image. What comes back: the per-block candidate
//! counts (at most 4096 numbers, to size the sort) and the detections.
use pulsefocus_core::yolo::{Detection, NmsConfig};
use pulsefocus_gpu_device::nms::{KEPT, KEPT_TOP, NMS_THREADS};

use super::{elementwise, fail, index_count, need_len, LaunchShape, PlanError};
use crate::driver::KernelArgs;
use crate::{DeviceBuffer, Gpu, GpuError};

/// Multiclass NMS of a batch: the sizes of its buffers, all checked to fit
/// the kernels' `u32` indexing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NmsPlan {
    pub batch: u32,
    pub classes: u32,
    /// Boxes per image.
    pub boxes_per_image: u32,
    /// (image, class) pairs: one NMS each.
    pub segments: u32,
    /// (image, class, box) entries: `segments * boxes_per_image`.
    pub entries: u32,
    /// Blocks of the candidate count and compaction.
    pub compact_blocks: u32,
    /// Candidates per class (Paddle's `nms_top_k`; all when it has none).
    pub top_k: u32,
    /// Detection rows per image: `keep_top_k`, or every candidate there can be.
    pub capacity: u32,
}

pub fn plan(
    batch: usize,
    classes: usize,
    boxes_per_image: usize,
    nms_top_k: Option<usize>,
    keep_top_k: Option<usize>,
) -> Result<NmsPlan, PlanError> {
    const NAME: &str = "multiclass_nms";
    let entries = batch
        .checked_mul(classes)
        .and_then(|e| e.checked_mul(boxes_per_image))
        .unwrap_or(usize::MAX);
    // The sort and the grid-stride loops need the padded length at most 2^30.
    if entries == 0 || entries > 1 << 30 {
        return fail(
            NAME,
            format!(
                "{batch} images x {classes} classes x {boxes_per_image} boxes must be 1..=2^30 scores"
            ),
        );
    }
    let top_k = nms_top_k.map_or(boxes_per_image, |k| k.min(boxes_per_image));
    let capacity = keep_top_k.unwrap_or(classes * top_k);
    index_count(NAME, "detections", batch * capacity.max(1) * 6)?;
    Ok(NmsPlan {
        batch: batch as u32,
        classes: classes as u32,
        boxes_per_image: boxes_per_image as u32,
        segments: (batch * classes) as u32,
        entries: entries as u32,
        compact_blocks: compact_blocks(entries),
        top_k: top_k as u32,
        capacity: capacity as u32,
    })
}

/// The blocks (of `NMS_THREADS`) that count and compact the candidates of
/// `entries` entries: about 16 entries a thread, at most 4096 blocks.
pub(crate) fn compact_blocks(entries: usize) -> u32 {
    entries.div_ceil(16 * NMS_THREADS as usize).clamp(1, 4096) as u32
}

/// The plan of an NMS of `[batch, boxes_per_image, classes]` under `nms`,
/// checked before any work (the decoders call it before decoding); None
/// when there is nothing to detect on (no image, box or class).
pub fn plan_for(
    [batch, boxes_per_image, classes]: [usize; 3],
    nms: &NmsConfig,
) -> Result<Option<NmsPlan>, PlanError> {
    if batch == 0 || classes == 0 || boxes_per_image == 0 {
        return Ok(None);
    }
    plan(
        batch,
        classes,
        boxes_per_image,
        nms.nms_top_k,
        nms.keep_top_k,
    )
    .map(Some)
}

/// The settings of one `nms_suppress` launch (see the kernel): greedy NMS
/// of each of `segments` segments of sorted candidates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Suppression {
    pub segments: u32,
    pub classes: u32,
    pub boxes_per_image: u32,
    /// Candidates per segment looked at.
    pub top_k: u32,
    pub iou_thresh: f32,
    /// Paddle's adaptive NMS: 1 turns it off.
    pub eta: f32,
    /// Kept boxes per segment after which the rest are dropped.
    pub max_kept: u32,
    /// 1 for pixel boxes, 0 for normalised ones.
    pub pixel: f32,
}

/// The `(j, k)` stages of the bitonic sort of `padded` keys, in launch order.
pub fn bitonic_stages(padded: u32) -> Vec<(u32, u32)> {
    let mut stages = Vec::new();
    let mut k = 2;
    while k <= padded {
        let mut j = k / 2;
        while j > 0 {
            stages.push((j, k));
            j /= 2;
        }
        k *= 2;
    }
    stages
}

/// One `NMS_THREADS` block per item (segment or image), at most 4096 blocks
/// (the kernels loop over the rest).
pub fn block_per_item(items: u32) -> LaunchShape {
    LaunchShape {
        grid: (items.clamp(1, 4096), 1, 1),
        block: (NMS_THREADS, 1, 1),
    }
}

/// Steps 1-5's results on the device (see [`Gpu::kept_candidates`]): the
/// sorted candidates (`keys`, `values`: a power of two of each), each
/// (image, class)'s `bounds`, and the `keep` flags; the kept entries are
/// those flagged `want`.
pub(crate) struct KeptCandidates {
    pub keys: DeviceBuffer<u64>,
    pub values: DeviceBuffer<u32>,
    pub bounds: DeviceBuffer<u32>,
    pub keep: DeviceBuffer<u32>,
    pub want: u32,
}

/// `nms_write`'s rows (`[class, score, x1, y1, x2, y2]`, `capacity` per
/// image) as each image's detections: the first `counts[n]` rows of image `n`.
pub fn detection_lists(rows: &[f32], counts: &[u32], capacity: usize) -> Vec<Vec<Detection>> {
    counts
        .iter()
        .enumerate()
        .map(|(n, &count)| {
            rows[n * capacity * 6..]
                .chunks_exact(6)
                .take((count as usize).min(capacity))
                .map(|d| Detection {
                    class: d[0] as usize,
                    score: d[1],
                    bbox: [d[2], d[3], d[4], d[5]],
                })
                .collect()
        })
        .collect()
}

impl Gpu {
    /// Paddle's `multiclass_nms` of each image's `boxes [N, M, 4]` (x1, y1,
    /// x2, y2) and `scores [N, M, classes]` on the device, as core's
    /// `yolo::multiclass_nms` computes it (`batch` = N, `boxes_per_image` =
    /// M). Only the detections (and the candidate counts) are downloaded.
    pub fn multiclass_nms(
        &self,
        boxes: &DeviceBuffer,
        scores: &DeviceBuffer,
        [batch, boxes_per_image, classes]: [usize; 3],
        nms: &NmsConfig,
    ) -> Result<Vec<Vec<Detection>>, GpuError> {
        const NAME: &str = "multiclass_nms";
        let Some(p) = plan_for([batch, boxes_per_image, classes], nms)? else {
            return Ok(vec![Vec::new(); batch]);
        };
        let (box_len, score_len) = (
            batch * boxes_per_image * 4,
            batch * boxes_per_image * classes,
        );
        need_len(NAME, "boxes", boxes.len(), box_len)?;
        need_len(NAME, "scores", scores.len(), score_len)?;
        let Some(KeptCandidates {
            values,
            bounds,
            keep,
            want,
            ..
        }) = self.kept_candidates(&p, nms, (boxes, box_len), (scores, score_len), false)?
        else {
            return Ok(vec![Vec::new(); batch]);
        };
        let (segments, n) = (p.segments as usize, values.len());

        // Step 6: each image's detections, grouped by class, best first.
        let rows = batch * p.capacity as usize * 6;
        let mut detections = self.alloc::<f32>(rows.max(1))?;
        let mut counts = self.alloc::<u32>(batch)?;
        let mut args = KernelArgs::new();
        args.input(&values, n)
            .input(&bounds, segments + 1)
            .input(&keep, n)
            .input(boxes, box_len)
            .input(scores, score_len)
            .u32(p.batch)
            .u32(p.classes)
            .u32(p.boxes_per_image)
            .u32(want)
            .u32(p.capacity)
            .output(&mut detections, rows)
            .output(&mut counts, batch);
        self.launch("nms_write", block_per_item(p.batch), &args)?;
        let counts = self.download(&counts)?;
        let rows = self.download(&detections)?;
        Ok(detection_lists(&rows, &counts, p.capacity as usize))
    }

    /// Steps 1-5 of [`Gpu::multiclass_nms`] under plan `p`: the candidates
    /// of `scores` (`[N, M, classes]`, its first `score_len` elements)
    /// sorted, suppressed and (with a `keep_top_k`) cut, over `boxes`
    /// (`[N, M, 4]`, or with `class_boxes` one box per entry, `[N, classes,
    /// M, 4]`); None when nothing is a candidate.
    pub(crate) fn kept_candidates(
        &self,
        p: &NmsPlan,
        nms: &NmsConfig,
        boxes: (&DeviceBuffer, usize),
        (scores, score_len): (&DeviceBuffer, usize),
        class_boxes: bool,
    ) -> Result<Option<KeptCandidates>, GpuError> {
        let classes = p.classes as usize;
        // Steps 1-3: the candidates, counted per block (the counts summed
        // here: the sort's length depends on them), compacted, sorted (each
        // (image, class)'s best first), and where each (image, class) starts.
        let background = nms
            .background_label
            .map_or(p.classes, |b| b.min(classes) as u32);
        let blocks = p.compact_blocks as usize;
        let compact_shape = LaunchShape {
            grid: (p.compact_blocks, 1, 1),
            block: (NMS_THREADS, 1, 1),
        };
        let mut counts = self.alloc::<u32>(blocks)?;
        let mut args = KernelArgs::new();
        args.input(scores, score_len)
            .u32(p.batch)
            .u32(p.classes)
            .u32(p.boxes_per_image)
            .f32(nms.score_threshold)
            .u32(background)
            .output(&mut counts, blocks);
        self.launch("nms_count_candidates", compact_shape, &args)?;
        let mut offsets = vec![0u32];
        for count in self.download(&counts)? {
            offsets.push(offsets[offsets.len() - 1] + count);
        }
        let total = offsets[blocks];
        if total == 0 {
            return Ok(None);
        }
        let padded = total.next_power_of_two();
        let n = padded as usize;
        let offsets = self.upload(&offsets)?;
        let mut keys = self.alloc::<u64>(n)?;
        let mut values = self.alloc::<u32>(n)?;
        let mut args = KernelArgs::new();
        args.input(scores, score_len)
            .u32(p.batch)
            .u32(p.classes)
            .u32(p.boxes_per_image)
            .f32(nms.score_threshold)
            .u32(background)
            .input(&offsets, blocks + 1)
            .u32(padded)
            .output(&mut keys, n)
            .output(&mut values, n);
        self.launch("nms_compact_candidates", compact_shape, &args)?;
        self.bitonic_sort(&mut keys, &mut values)?;
        let bounds = self.bounds(&keys, p.segments)?;

        // Step 4: suppression, one block per (image, class).
        let pixel = if nms.normalized { 0.0 } else { 1.0 };
        // One box per entry: `nms_suppress` reads row `v` with one class of
        // one box per image.
        let (box_classes, box_m) = if class_boxes {
            (1, 1)
        } else {
            (p.classes, p.boxes_per_image)
        };
        let suppression = Suppression {
            segments: p.segments,
            classes: box_classes,
            boxes_per_image: box_m,
            top_k: p.top_k,
            iou_thresh: nms.nms_threshold,
            eta: 1.0,
            max_kept: u32::MAX,
            pixel,
        };
        let mut keep = self.suppress(&suppression, &values, &bounds, boxes)?;

        // Step 5: the best keep_top_k kept entries of each image.
        let want = match nms.keep_top_k {
            None => KEPT,
            Some(_) => {
                let mut keys2 = self.alloc::<u64>(n)?;
                let mut values2 = self.alloc::<u32>(n)?;
                let mut args = KernelArgs::new();
                args.input(&keys, n)
                    .input(&keep, n)
                    .u32(p.classes)
                    .u32(padded)
                    .output(&mut keys2, n)
                    .output(&mut values2, n);
                self.launch("nms_rank_keys", elementwise(padded), &args)?;
                self.bitonic_sort(&mut keys2, &mut values2)?;
                let image_bounds = self.bounds(&keys2, p.batch)?;
                let mut args = KernelArgs::new();
                args.input(&keys2, n)
                    .input(&values2, n)
                    .input(&image_bounds, p.batch as usize + 1)
                    .u32(padded)
                    .u32(p.capacity)
                    .output(&mut keep, n);
                self.launch("nms_keep_top", elementwise(padded), &args)?;
                KEPT_TOP
            }
        };
        Ok(Some(KeptCandidates {
            keys,
            values,
            bounds,
            keep,
            want,
        }))
    }

    /// `nms_suppress`: the `keep` flags of every sorted position of
    /// `values` (`bounds` from [`Gpu::bounds`]), the boxes the first
    /// `box_len` elements of `boxes`.
    pub(crate) fn suppress(
        &self,
        s: &Suppression,
        values: &DeviceBuffer<u32>,
        bounds: &DeviceBuffer<u32>,
        (boxes, box_len): (&DeviceBuffer, usize),
    ) -> Result<DeviceBuffer<u32>, GpuError> {
        let n = values.len();
        let mut keep = self.alloc::<u32>(n)?;
        let mut overlaps = self.alloc::<f32>(n)?;
        let mut args = KernelArgs::new();
        args.input(values, n)
            .input(bounds, s.segments as usize + 1)
            .input(boxes, box_len)
            .u32(s.classes)
            .u32(s.boxes_per_image)
            .u32(s.segments)
            .u32(s.top_k)
            .f32(s.iou_thresh)
            .f32(s.eta)
            .u32(s.max_kept)
            .f32(s.pixel)
            .output(&mut keep, n)
            .output(&mut overlaps, n);
        self.launch("nms_suppress", block_per_item(s.segments), &args)?;
        Ok(keep)
    }

    /// Sorts `keys` ascending, equal keys by value (as many of each, a power
    /// of two).
    pub(crate) fn bitonic_sort(
        &self,
        keys: &mut DeviceBuffer<u64>,
        values: &mut DeviceBuffer<u32>,
    ) -> Result<(), GpuError> {
        let n = keys.len();
        let padded = index_count("bitonic_sort_step", "keys", n)?;
        need_len("bitonic_sort_step", "values", values.len(), n)?;
        for (j, k) in bitonic_stages(padded) {
            let mut args = KernelArgs::new();
            args.output(keys, n)
                .output(values, n)
                .u32(padded)
                .u32(j)
                .u32(k);
            self.launch("bitonic_sort_step", elementwise(padded / 2), &args)?;
        }
        Ok(())
    }

    /// Where each of `segments` segments starts in the sorted `keys` (its
    /// number in the keys' high 32 bits), and at `segments`, how many
    /// candidates there are.
    pub(crate) fn bounds(
        &self,
        keys: &DeviceBuffer<u64>,
        segments: u32,
    ) -> Result<DeviceBuffer<u32>, GpuError> {
        let n = keys.len();
        let mut bounds = self.alloc::<u32>(segments as usize + 1)?;
        let mut args = KernelArgs::new();
        args.input(keys, n)
            .u32(index_count("nms_bounds", "keys", n)?)
            .u32(segments)
            .output(&mut bounds, segments as usize + 1);
        self.launch("nms_bounds", elementwise(segments + 1), &args)?;
        Ok(bounds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{gpu, up};
    use proptest::prelude::*;
    use pulsefocus_core::yolo::multiclass_nms;

    #[test]
    fn plan_sizes_and_sort_stages() {
        assert_eq!(
            plan(2, 20, 22743, Some(1000), Some(100)).unwrap(),
            NmsPlan {
                batch: 2,
                classes: 20,
                boxes_per_image: 22743,
                segments: 40,
                entries: 909_720,
                compact_blocks: 445,
                top_k: 1000,
                capacity: 100,
            }
        );
        let all = plan(1, 3, 5, None, None).unwrap();
        assert_eq!((all.compact_blocks, all.top_k, all.capacity), (1, 5, 15));
        assert!(plan(0, 3, 5, None, None).is_err());
        assert!(plan(64, 80, 1 << 20, Some(1000), Some(100)).is_err());
        assert!(plan(1, 1 << 10, (1 << 20) + 1, None, Some(100)).is_err());
        assert_eq!(
            bitonic_stages(8),
            vec![(1, 2), (2, 4), (1, 4), (4, 8), (2, 8), (1, 8)]
        );
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

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10))]
        /// Through the host code and the emulated driver (every launch's
        /// arguments checked against the PTX): the CPU's `multiclass_nms`
        /// of each image, to the bit and in order. Integer boxes make IoUs
        /// exactly at the threshold common, score levels make ties common.
        #[test]
        fn equals_the_cpu_multiclass_nms(
            batch in 1usize..3,
            classes in 1usize..4,
            corners in prop::collection::vec((0u8..10, 0u8..10, 1u8..6, 1u8..6), 2 * 24),
            levels in prop::collection::vec(0u8..6, 2 * 24 * 3),
            nms_top_k in prop::option::of(0usize..10),
            keep_top_k in prop::option::of(0usize..12),
            normalized: bool,
            background in prop::option::of(0usize..3),
        ) {
            let m = 24;
            let boxes: Vec<f32> = corners[..batch * m]
                .iter()
                .flat_map(|&(x, y, w, h)| [x as f32, y as f32, (x + w) as f32, (y + h) as f32])
                .collect();
            let scores: Vec<f32> = levels[..batch * m * classes].iter().map(|&l| l as f32 / 4.0).collect();
            let cfg = NmsConfig {
                score_threshold: 0.25,
                nms_top_k,
                keep_top_k,
                nms_threshold: 0.5,
                normalized,
                background_label: background,
            };
            let want: Vec<Vec<Detection>> = (0..batch)
                .map(|i| {
                    let b: Vec<[f32; 4]> = boxes[i * m * 4..(i + 1) * m * 4]
                        .chunks_exact(4)
                        .map(|b| [b[0], b[1], b[2], b[3]])
                        .collect();
                    multiclass_nms(&cfg, &b, &scores[i * m * classes..(i + 1) * m * classes], classes)
                })
                .collect();
            let gpu = gpu();
            let got = gpu
                .multiclass_nms(&up(&gpu, &boxes), &up(&gpu, &scores), [batch, m, classes], &cfg)
                .unwrap();
            prop_assert_eq!(bits(&got), bits(&want));
        }
    }

    #[test]
    fn buffers_too_short_are_errors() {
        let gpu = gpu();
        let (boxes, scores) = (up(&gpu, &[0.0; 8]), up(&gpu, &[0.5; 3]));
        let err = gpu
            .multiclass_nms(&boxes, &scores, [1, 2, 2], &NmsConfig::yolov3())
            .unwrap_err();
        assert!(err.to_string().contains("scores has 3 elements"), "{err}");
        assert_eq!(
            gpu.multiclass_nms(&boxes, &scores, [0, 2, 2], &NmsConfig::yolov3())
                .unwrap(),
            Vec::<Vec<Detection>>::new()
        );
    }
}
