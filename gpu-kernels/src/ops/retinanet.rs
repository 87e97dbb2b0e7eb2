//! Paddle's `retinanet_detection_output` on the device
//! (`device/src/retinanet_detect.rs`) for every image of a batch at once,
//! deciding exactly as core's `retinanet::retinanet_detection_output`: the
//! (anchor, class) pairs above the threshold compacted, keyed and sorted
//! per (level, image), the `pre_nms_top_n` best decoded and clipped, sorted again per
//! (image, class), [`super::nms`]'s suppression (pixel IoU, `nms_eta`),
//! each image's survivors ranked by score and the best `detections_per_im`
//! written. What comes back: each image's detection rows and where each
//! image's survivors start in the ranking.
use pulsefocus_core::backend::RetinaLevelInput;
use pulsefocus_core::retinanet::RetinaOutputConfig;
use pulsefocus_core::yolo::Detection;

use pulsefocus_gpu_device::nms::NMS_THREADS;

use super::nms::{compact_blocks, detection_lists, Suppression};
use super::{elementwise, fail, need_len, LaunchShape, PlanError};
use crate::driver::KernelArgs;
use crate::{DeviceBuffer, Gpu, GpuError};

const NAME: &str = "retinanet_detect";

/// The sizes of one batch's detection output, all checked to fit the
/// kernels' `u32` indexing.
#[derive(Clone, Debug, PartialEq)]
pub struct RetinaDetectPlan {
    pub images: u32,
    pub classes: u32,
    /// (anchor, class) pairs of each level, per image.
    pub counts: Vec<u32>,
    /// Pairs decoded per (level, image): at most `pre_nms_top_n`.
    pub top_k: Vec<u32>,
    /// Slots per (level, image) of the ranked list: the largest `top_k`.
    pub slots: u32,
    /// (level, image) pairs.
    pub segments: u32,
    /// Every pair of every image: the entries whose candidates the first
    /// sort orders (their indices fit `u32`).
    pub entries: u32,
    /// Detection rows per image: `detections_per_im`, or every slot of the
    /// image when fewer.
    pub capacity: u32,
}

/// None when there is nothing to detect (no image, class, candidate slot
/// or detection kept).
pub fn plan(
    cfg: &RetinaOutputConfig,
    sizes: &[[usize; 2]],
    anchors_per_cell: usize,
    classes: usize,
    images: usize,
) -> Result<Option<RetinaDetectPlan>, PlanError> {
    if anchors_per_cell == 0 || sizes.iter().any(|&[h, w]| h == 0 || w == 0) {
        return fail(
            NAME,
            format!("levels {sizes:?} with {anchors_per_cell} anchors per cell have no anchors"),
        );
    }
    let counts: Vec<usize> = sizes
        .iter()
        .map(|&[h, w]| {
            h.saturating_mul(w)
                .saturating_mul(anchors_per_cell)
                .saturating_mul(classes)
        })
        .collect();
    let entries = counts
        .iter()
        .fold(0usize, |sum, &c| sum.saturating_add(c))
        .saturating_mul(images);
    let top_k: Vec<usize> = counts.iter().map(|&c| c.min(cfg.pre_nms_top_n)).collect();
    let slots = top_k.iter().copied().max().unwrap_or(0);
    let segments = sizes.len() * images;
    // Every sort and grid-stride loop needs its padded length at most
    // 2^30, and the per-image class segments fit the keys' high half.
    if entries > 1 << 30
        || segments.saturating_mul(slots) > 1 << 30
        || images.saturating_mul(classes) > 1 << 30
    {
        return fail(
            NAME,
            format!(
                "{images} images x pairs {counts:?} (top {slots} of each) must be at most 2^30 entries"
            ),
        );
    }
    let capacity = cfg.detections_per_im.min(sizes.len() * slots);
    if images == 0 || classes == 0 || capacity == 0 {
        return Ok(None);
    }
    Ok(Some(RetinaDetectPlan {
        images: images as u32,
        classes: classes as u32,
        counts: counts.iter().map(|&c| c as u32).collect(),
        top_k: top_k.iter().map(|&k| k as u32).collect(),
        slots: slots as u32,
        segments: segments as u32,
        entries: entries as u32,
        capacity: capacity as u32,
    }))
}

impl Gpu {
    /// Each image's detections, as core's `retinanet_detection_output`
    /// computes them from every level's `scores`, `deltas` and `anchors`
    /// (see [`RetinaLevelInput`]) and image `n`'s `im_info` `[height,
    /// width, scale]`: best first, labels `1..=classes`.
    pub fn retinanet_detect(
        &self,
        cfg: &RetinaOutputConfig,
        levels: &[RetinaLevelInput<'_, DeviceBuffer>],
        anchors_per_cell: usize,
        classes: usize,
        im_info: &[[f32; 3]],
    ) -> Result<Vec<Vec<Detection>>, GpuError> {
        let images = im_info.len();
        if levels.is_empty() {
            return Ok(vec![Vec::new(); images]);
        }
        let sizes: Vec<[usize; 2]> = levels.iter().map(|l| [l.height, l.width]).collect();
        let Some(p) = plan(cfg, &sizes, anchors_per_cell, classes, images)? else {
            return Ok(vec![Vec::new(); images]);
        };
        for (level, &count) in levels.iter().zip(&p.counts) {
            let (pairs, anchors) = (count as usize, count as usize / classes);
            need_len(NAME, "scores", level.scores.len(), images * pairs)?;
            need_len(NAME, "deltas", level.deltas.len(), images * 4 * anchors)?;
            need_len(NAME, "anchors", level.anchors.len(), 4 * anchors)?;
        }
        let a = anchors_per_cell as u32;
        let per_cell = a * p.classes;
        let last = levels.len() - 1;

        // Step 1: every pair above its level's threshold keyed by (level,
        // image) and score: the candidates counted per block (the counts of
        // every level summed here: the sort's length depends on them),
        // compacted, sorted; where each (level, image) starts.
        let threshold = |l: usize| if l == last { 0.0 } else { cfg.score_thresh };
        let compact = |count: u32| {
            let blocks = compact_blocks((p.images * count) as usize);
            let shape = LaunchShape {
                grid: (blocks, 1, 1),
                block: (NMS_THREADS, 1, 1),
            };
            (blocks as usize, shape)
        };
        let mut offsets = vec![0u32];
        for (l, level) in levels.iter().enumerate() {
            let count = p.counts[l];
            let (blocks, shape) = compact(count);
            let mut counts = self.alloc::<u32>(blocks)?;
            let mut args = KernelArgs::new();
            args.input(level.scores, (p.images * count) as usize)
                .u32(p.images)
                .u32(a)
                .u32(p.classes)
                .u32(count / per_cell)
                .f32(threshold(l))
                .output(&mut counts, blocks);
            self.launch("retina_count_candidates", shape, &args)?;
            for found in self.download(&counts)? {
                offsets.push(offsets[offsets.len() - 1] + found);
            }
        }
        let padded = offsets[offsets.len() - 1].next_power_of_two();
        let n = padded as usize;
        let mut keys = self.alloc::<u64>(n)?;
        let mut values = self.alloc::<u32>(n)?;
        let (mut first, mut first_block) = (0, 0);
        for (l, level) in levels.iter().enumerate() {
            let count = p.counts[l];
            let (blocks, shape) = compact(count);
            let level_offsets = self.upload(&offsets[first_block..=first_block + blocks])?;
            let mut args = KernelArgs::new();
            args.input(level.scores, (p.images * count) as usize)
                .u32(p.images)
                .u32(a)
                .u32(p.classes)
                .u32(count / per_cell)
                .f32(threshold(l))
                .u32(first)
                .u32(l as u32 * p.images)
                .input(&level_offsets, blocks + 1)
                .u32(if l == last { padded } else { 0 })
                .output(&mut keys, n)
                .output(&mut values, n);
            self.launch("retina_compact_candidates", shape, &args)?;
            first += p.images * count;
            first_block += blocks;
        }
        self.bitonic_sort(&mut keys, &mut values)?;
        let level_bounds = self.bounds(&keys, p.segments)?;

        // Step 2: the best of each (level, image) decoded and clipped,
        // keyed by (image, class) and score.
        let rows = (p.segments * p.slots) as usize;
        let padded2 = (rows as u32).next_power_of_two();
        let n2 = padded2 as usize;
        // As core's `box_clip`: the picture is the resized image over the
        // scale, rounded.
        let pictures: Vec<f32> = im_info
            .iter()
            .flat_map(|&[height, width, scale]| {
                [scale, (height / scale).round(), (width / scale).round()]
            })
            .collect();
        let pictures = self.upload(&pictures)?;
        let mut boxes = self.alloc::<f32>(rows * 4)?;
        let mut box_scores = self.alloc::<f32>(rows)?;
        let mut keys2 = self.alloc::<u64>(n2)?;
        let mut ranked = self.alloc::<u32>(n2)?;
        let mut first = 0;
        for (l, level) in levels.iter().enumerate() {
            let count = p.counts[l];
            let first_segment = l as u32 * p.images;
            let end = if l == last {
                padded2
            } else {
                (first_segment + p.images) * p.slots
            };
            let anchors = (count / p.classes) as usize;
            let mut args = KernelArgs::new();
            args.input(&values, n)
                .input(&level_bounds, p.segments as usize + 1)
                .input(level.scores, (p.images * count) as usize)
                .input(level.deltas, images * 4 * anchors)
                .input(level.anchors, 4 * anchors)
                .input(&pictures, 3 * images)
                .u32(p.images)
                .u32(a)
                .u32(p.classes)
                .u32(count / per_cell)
                .u32(first)
                .u32(first_segment)
                .u32(p.top_k[l])
                .u32(p.slots)
                .u32(end)
                .output(&mut boxes, rows * 4)
                .output(&mut box_scores, rows)
                .output(&mut keys2, n2)
                .output(&mut ranked, n2);
            self.launch(
                "retina_decode",
                elementwise(end - first_segment * p.slots),
                &args,
            )?;
            first += p.images * count;
        }

        // Step 3: NMS per (image, class), then each image's survivors by
        // score and the best `detections_per_im` of them written.
        self.bitonic_sort(&mut keys2, &mut ranked)?;
        let class_segments = p.images * p.classes;
        let class_bounds = self.bounds(&keys2, class_segments)?;
        let suppression = Suppression {
            segments: class_segments,
            classes: 1,
            boxes_per_image: p.slots,
            top_k: u32::MAX,
            iou_thresh: cfg.nms_thresh,
            eta: cfg.nms_eta,
            max_kept: u32::MAX,
            pixel: 1.0,
        };
        let keep = self.suppress(&suppression, &ranked, &class_bounds, (&boxes, rows * 4))?;
        let mut rank_keys = self.alloc::<u64>(n2)?;
        let mut rank_values = self.alloc::<u32>(n2)?;
        let mut args = KernelArgs::new();
        args.input(&keys2, n2)
            .input(&keep, n2)
            .u32(p.classes)
            .u32(padded2)
            .output(&mut rank_keys, n2)
            .output(&mut rank_values, n2);
        self.launch("nms_rank_keys", elementwise(padded2), &args)?;
        self.bitonic_sort(&mut rank_keys, &mut rank_values)?;
        let image_bounds = self.bounds(&rank_keys, p.images)?;
        let out_len = images * p.capacity as usize * 6;
        let mut out = self.alloc::<f32>(out_len)?;
        let mut args = KernelArgs::new();
        args.input(&rank_keys, n2)
            .input(&rank_values, n2)
            .input(&image_bounds, images + 1)
            .input(&keys2, n2)
            .input(&ranked, n2)
            .input(&boxes, rows * 4)
            .input(&box_scores, rows)
            .u32(padded2)
            .u32(p.classes)
            .u32(p.capacity)
            .output(&mut out, out_len);
        self.launch("retina_write", elementwise(padded2), &args)?;
        let image_bounds = self.download(&image_bounds)?;
        let kept: Vec<u32> = image_bounds.windows(2).map(|b| b[1] - b[0]).collect();
        let out = self.download(&out)?;
        Ok(detection_lists(&out, &kept, p.capacity as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{gpu, up, values};
    use pulsefocus_core::rcnn::ImInfo;
    use pulsefocus_core::retinanet::retinanet_detection_output;

    fn cfg() -> RetinaOutputConfig {
        RetinaOutputConfig {
            score_thresh: 0.3,
            nms_thresh: 0.5,
            pre_nms_top_n: 30,
            detections_per_im: 12,
            nms_eta: 1.0,
        }
    }

    #[test]
    fn plan_sizes() {
        let p = plan(&cfg(), &[[4, 5], [2, 2]], 3, 2, 2).unwrap().unwrap();
        assert_eq!(
            p,
            RetinaDetectPlan {
                images: 2,
                classes: 2,
                counts: vec![120, 24],
                top_k: vec![30, 24],
                slots: 30,
                segments: 4,
                entries: 288,
                capacity: 12,
            }
        );
        let few = RetinaOutputConfig {
            pre_nms_top_n: 2,
            ..cfg()
        };
        let p = plan(&few, &[[4, 5], [2, 2]], 3, 2, 1).unwrap().unwrap();
        assert_eq!((p.slots, p.capacity), (2, 4));
        let nothing = RetinaOutputConfig {
            pre_nms_top_n: 0,
            ..cfg()
        };
        assert_eq!(plan(&nothing, &[[4, 5]], 3, 2, 1).unwrap(), None);
        assert_eq!(plan(&cfg(), &[[4, 5]], 3, 0, 1).unwrap(), None);
        assert!(plan(&cfg(), &[[4, 0]], 3, 2, 1).is_err());
        assert!(plan(&cfg(), &[[1 << 10, 1 << 10]], 9, 80, 2)
            .unwrap_err()
            .to_string()
            .contains("at most 2^30 entries"));
    }

    /// Through the host code and the emulated driver (every launch checked
    /// against the PTX): core's detections, to the bit, two levels of two
    /// images with adaptive NMS.
    #[test]
    fn equals_the_cpu_retinanet_detection_output() {
        let gpu = gpu();
        let (a, classes) = (2, 3);
        let sizes = [[3usize, 4usize], [2, 2]];
        let im_info = [[40.0, 50.0, 1.0], [30.0, 60.0, 1.5]];
        let cfg = RetinaOutputConfig {
            nms_eta: 0.9,
            ..cfg()
        };
        let mut host = Vec::new();
        for (l, &[h, w]) in sizes.iter().enumerate() {
            let count = h * w * a;
            let scores: Vec<f32> = values(im_info.len() * count * classes, l as u32)
                .iter()
                .map(|v| (v * 3.0).round() / 8.0 + 0.5)
                .collect();
            let deltas = values(im_info.len() * 4 * count, 10 + l as u32);
            let anchors: Vec<[f32; 4]> = (0..count)
                .map(|i| {
                    let (x, y) = ((i / a % w) as f32 * 8.0, (i / a / w) as f32 * 8.0);
                    let side = 8.0 * (1 + i % a) as f32;
                    [x, y, x + side, y + side]
                })
                .collect();
            host.push((scores, deltas, anchors));
        }
        let bufs: Vec<[DeviceBuffer; 3]> = host
            .iter()
            .map(|(s, d, an)| [up(&gpu, s), up(&gpu, d), up(&gpu, &an.concat())])
            .collect();
        let levels: Vec<RetinaLevelInput<'_, DeviceBuffer>> = bufs
            .iter()
            .zip(&sizes)
            .map(|(b, &[height, width])| RetinaLevelInput {
                scores: &b[0],
                deltas: &b[1],
                anchors: &b[2],
                height,
                width,
            })
            .collect();
        let got = gpu
            .retinanet_detect(&cfg, &levels, a, classes, &im_info)
            .unwrap();
        for (n, &[height, width, scale]) in im_info.iter().enumerate() {
            let per_image = |v: &[f32]| v.len() / im_info.len();
            let scores: Vec<&[f32]> = host
                .iter()
                .map(|l| &l.0[n * per_image(&l.0)..][..per_image(&l.0)])
                .collect();
            let deltas: Vec<&[f32]> = host
                .iter()
                .map(|l| &l.1[n * per_image(&l.1)..][..per_image(&l.1)])
                .collect();
            let anchors: Vec<&[[f32; 4]]> = host.iter().map(|l| l.2.as_slice()).collect();
            let want = retinanet_detection_output(
                &scores,
                &deltas,
                &sizes,
                a,
                &anchors,
                ImInfo {
                    height,
                    width,
                    scale,
                },
                &cfg,
            );
            assert!(want.len() > 3, "image {n}: {want:?}");
            assert_eq!(got[n], want, "image {n}");
        }
        // Level 0 with level 1's anchors.
        let short = RetinaLevelInput {
            anchors: &bufs[1][2],
            ..levels[0]
        };
        let err = gpu
            .retinanet_detect(&cfg, &[short], a, classes, &im_info)
            .unwrap_err();
        assert!(err.to_string().contains("anchors has 32 elements"), "{err}");
    }
}
