//! Paddle's `generate_proposals` on the device (`device/src/proposals.rs`)
//! for every (level, image) of a batch at once, deciding exactly as core's
//! `rcnn::generate_proposals`: the anchors keyed and sorted per (level,
//! image), the `pre_nms_top_n` best decoded, clipped and filtered, sorted
//! again, then [`super::nms`]'s suppression (pixel IoU, `eta`, the
//! post-NMS cut) and write. What comes back: each (level, image)'s kept
//! boxes and scores (at most `post_nms_top_n` rows of each when NMS runs)
//! and their counts.
use pulsefocus_core::backend::RpnProposalInput;
use pulsefocus_core::box_coder::proposal_log_scale_clamp;
use pulsefocus_core::rcnn::{ProposalConfig, Proposals};
use pulsefocus_gpu_device::nms::KEPT;

use super::nms::{block_per_item, detection_lists, Suppression};
use super::{elementwise, fail, need_len, PlanError};
use crate::driver::KernelArgs;
use crate::{DeviceBuffer, Gpu, GpuError};

const NAME: &str = "generate_proposals";

/// The sizes of one batch's proposal generation, all checked to fit the
/// kernels' `u32` indexing.
#[derive(Clone, Debug, PartialEq)]
pub struct ProposalPlan {
    pub images: u32,
    /// Anchors of each level, per image.
    pub counts: Vec<u32>,
    /// Anchors decoded per (level, image): `pre_nms_top_n` or the level's
    /// anchors, whichever is fewer (all of them for 0).
    pub top_k: Vec<u32>,
    /// Slots per (level, image) of the ranked list: the largest `top_k`.
    pub slots: u32,
    /// (level, image) pairs.
    pub segments: u32,
    /// Entries of the first sort: every anchor of every image.
    pub entries: u32,
    /// The NMS threshold (infinite: no NMS) and the kept boxes per
    /// segment after which the rest are dropped (`post_nms_top_n`).
    pub iou_thresh: f32,
    pub max_kept: u32,
    /// Rows written per segment.
    pub capacity: u32,
}

pub fn plan(
    cfg: &ProposalConfig,
    sizes: &[[usize; 2]],
    anchors_per_cell: usize,
    images: usize,
) -> Result<ProposalPlan, PlanError> {
    if anchors_per_cell == 0 || sizes.iter().any(|&[h, w]| h == 0 || w == 0) {
        return fail(
            NAME,
            format!("levels {sizes:?} with {anchors_per_cell} anchors per cell have no anchors"),
        );
    }
    let counts: Vec<usize> = sizes
        .iter()
        .map(|&[h, w]| h.saturating_mul(w).saturating_mul(anchors_per_cell))
        .collect();
    let entries = counts
        .iter()
        .fold(0usize, |sum, &c| sum.saturating_add(c))
        .saturating_mul(images);
    let top_k: Vec<usize> = counts
        .iter()
        .map(|&c| match cfg.pre_nms_top_n {
            0 => c,
            n => n.min(c),
        })
        .collect();
    let slots = top_k.iter().copied().max().unwrap_or(0);
    let segments = sizes.len() * images;
    // Both sorts and the grid-stride loops need their padded lengths at most 2^30.
    if entries > 1 << 30 || segments.saturating_mul(slots) > 1 << 30 {
        return fail(
            NAME,
            format!(
                "{images} images x anchors {counts:?} (top {slots} of each) must be at most 2^30 entries"
            ),
        );
    }
    // As the CPU: NMS and the cut unless `nms_thresh <= 0` (a NaN runs NMS).
    let (iou_thresh, max_kept) = match (cfg.nms_thresh <= 0.0, cfg.post_nms_top_n) {
        (true, _) => (f32::INFINITY, u32::MAX),
        (false, 0) => (cfg.nms_thresh, u32::MAX),
        (false, post) => (cfg.nms_thresh, post.min(u32::MAX as usize) as u32),
    };
    let slots = slots as u32;
    Ok(ProposalPlan {
        images: images as u32,
        counts: counts.iter().map(|&c| c as u32).collect(),
        top_k: top_k.iter().map(|&k| k as u32).collect(),
        slots,
        segments: segments as u32,
        entries: entries as u32,
        iou_thresh,
        max_kept,
        capacity: max_kept.min(slots),
    })
}

impl Gpu {
    /// Each image's proposals from each level (`result[l][n]`), as core's
    /// `rcnn::generate_proposals` computes them from the level's `scores`,
    /// `deltas`, `anchors` and `variances` (see [`RpnProposalInput`]) and
    /// image `n`'s `im_info` `[height, width, scale]`.
    pub fn generate_proposals(
        &self,
        cfg: &ProposalConfig,
        levels: &[RpnProposalInput<'_, DeviceBuffer>],
        anchors_per_cell: usize,
        im_info: &[[f32; 3]],
    ) -> Result<Vec<Vec<Proposals>>, GpuError> {
        let images = im_info.len();
        if images == 0 || levels.is_empty() {
            return Ok(vec![Vec::new(); levels.len()]);
        }
        let sizes: Vec<[usize; 2]> = levels.iter().map(|l| [l.height, l.width]).collect();
        let p = plan(cfg, &sizes, anchors_per_cell, images)?;
        for (level, &count) in levels.iter().zip(&p.counts) {
            let count = count as usize;
            need_len(NAME, "scores", level.scores.len(), images * count)?;
            need_len(NAME, "deltas", level.deltas.len(), images * 4 * count)?;
            need_len(NAME, "anchors", level.anchors.len(), 4 * count)?;
            need_len(NAME, "variances", level.variances.len(), 4 * count)?;
        }
        let a = anchors_per_cell as u32;
        let last = levels.len() - 1;

        // Step 1: every anchor keyed by (level, image) and score, sorted.
        let padded = p.entries.next_power_of_two();
        let n = padded as usize;
        let mut keys = self.alloc::<u64>(n)?;
        let mut values = self.alloc::<u32>(n)?;
        let mut first = 0;
        for (l, level) in levels.iter().enumerate() {
            let count = p.counts[l];
            let end = if l == last {
                padded
            } else {
                first + p.images * count
            };
            let mut args = KernelArgs::new();
            args.input(level.scores, (p.images * count) as usize)
                .u32(p.images)
                .u32(a)
                .u32(count / a)
                .u32(first)
                .u32(l as u32 * p.images)
                .u32(end)
                .output(&mut keys, n)
                .output(&mut values, n);
            self.launch("proposal_keys", elementwise(end - first), &args)?;
            first += p.images * count;
        }
        self.bitonic_sort(&mut keys, &mut values)?;

        // Step 2: the best of each (level, image) decoded, clipped, filtered.
        let rows = (p.segments * p.slots) as usize;
        let padded2 = (rows as u32).next_power_of_two();
        let n2 = padded2 as usize;
        let info = self.upload(&im_info.concat())?;
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
            let mut args = KernelArgs::new();
            args.input(&values, n)
                .input(level.scores, (p.images * count) as usize)
                .input(level.deltas, (p.images * 4 * count) as usize)
                .input(level.anchors, 4 * count as usize)
                .input(level.variances, 4 * count as usize)
                .input(&info, 3 * images)
                .u32(p.images)
                .u32(a)
                .u32(count / a)
                .u32(first)
                .u32(first_segment)
                .u32(p.top_k[l])
                .u32(p.slots)
                .u32(end)
                .f32(cfg.min_size.max(1.0))
                .f32(proposal_log_scale_clamp())
                .output(&mut boxes, rows * 4)
                .output(&mut box_scores, rows)
                .output(&mut keys2, n2)
                .output(&mut ranked, n2);
            self.launch(
                "proposal_decode",
                elementwise(end - first_segment * p.slots),
                &args,
            )?;
            first += p.images * count;
        }

        // Step 3: the survivors sorted again, NMS, each segment's kept rows.
        self.bitonic_sort(&mut keys2, &mut ranked)?;
        let bounds = self.bounds(&keys2, p.segments)?;
        let suppression = Suppression {
            segments: p.segments,
            classes: 1,
            boxes_per_image: p.slots,
            top_k: p.slots,
            iou_thresh: p.iou_thresh,
            eta: cfg.eta,
            max_kept: p.max_kept,
            pixel: 1.0,
        };
        let keep = self.suppress(&suppression, &ranked, &bounds, (&boxes, rows * 4))?;
        let segments = p.segments as usize;
        let out_len = segments * p.capacity as usize * 6;
        let mut out = self.alloc::<f32>(out_len)?;
        let mut found = self.alloc::<u32>(segments)?;
        let mut args = KernelArgs::new();
        args.input(&ranked, n2)
            .input(&bounds, segments + 1)
            .input(&keep, n2)
            .input(&boxes, rows * 4)
            .input(&box_scores, rows)
            .u32(p.segments)
            .u32(1)
            .u32(p.slots)
            .u32(KEPT)
            .u32(p.capacity)
            .output(&mut out, out_len)
            .output(&mut found, segments);
        self.launch("nms_write", block_per_item(p.segments), &args)?;
        let found = self.download(&found)?;
        let out = self.download(&out)?;
        let mut lists = detection_lists(&out, &found, p.capacity as usize).into_iter();
        Ok(levels
            .iter()
            .map(|_| {
                lists
                    .by_ref()
                    .take(images)
                    .map(|kept| Proposals {
                        scores: kept.iter().map(|d| d.score).collect(),
                        boxes: kept.iter().map(|d| d.bbox).collect(),
                    })
                    .collect()
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{gpu, up, values};
    use pulsefocus_core::rcnn::generate_proposals;

    fn cfg() -> ProposalConfig {
        ProposalConfig {
            pre_nms_top_n: 30,
            post_nms_top_n: 8,
            nms_thresh: 0.7,
            min_size: 0.0,
            eta: 1.0,
        }
    }

    #[test]
    fn plan_sizes() {
        let p = plan(&cfg(), &[[4, 5], [2, 2]], 3, 2).unwrap();
        assert_eq!(
            p,
            ProposalPlan {
                images: 2,
                counts: vec![60, 12],
                top_k: vec![30, 12],
                slots: 30,
                segments: 4,
                entries: 144,
                iou_thresh: 0.7,
                max_kept: 8,
                capacity: 8,
            }
        );
        let all = ProposalConfig {
            pre_nms_top_n: 0,
            nms_thresh: 0.0,
            ..cfg()
        };
        let p = plan(&all, &[[4, 5]], 3, 1).unwrap();
        assert_eq!((p.slots, p.max_kept, p.capacity), (60, u32::MAX, 60));
        assert!(p.iou_thresh.is_infinite());
        assert!(plan(&cfg(), &[[4, 0]], 3, 1).is_err());
        assert!(plan(&cfg(), &[[1 << 12, 1 << 12]], 15, 8)
            .unwrap_err()
            .to_string()
            .contains("at most 2^30 entries"));
    }

    /// Through the host code and the emulated driver (every launch checked
    /// against the PTX): core's proposals, to the bit, two levels of two
    /// images with adaptive NMS.
    #[test]
    fn equals_the_cpu_generate_proposals() {
        let gpu = gpu();
        let (a, images) = (2, 2);
        let sizes = [(3usize, 4usize), (2, 2)];
        let im_info = [[40.0, 50.0, 1.0], [30.0, 60.0, 2.0]];
        let cfg = ProposalConfig { eta: 0.9, ..cfg() };
        let mut host = Vec::new();
        for (l, &(h, w)) in sizes.iter().enumerate() {
            let count = h * w * a;
            let scores: Vec<f32> = values(images * count, l as u32)
                .iter()
                .map(|v| (v * 3.0).round() / 4.0 + 0.5)
                .collect();
            let deltas = values(images * 4 * count, 10 + l as u32);
            let anchors: Vec<[f32; 4]> = (0..count)
                .map(|i| {
                    let (x, y) = ((i / a % w) as f32 * 8.0, (i / a / w) as f32 * 8.0);
                    let side = 8.0 * (1 + i % a) as f32;
                    [x, y, x + side, y + side]
                })
                .collect();
            host.push((scores, deltas, anchors, h, w));
        }
        let variances = vec![[1.0f32; 4]; 24];
        let bufs: Vec<[DeviceBuffer; 4]> = host
            .iter()
            .map(|(s, d, an, _, _)| {
                [
                    up(&gpu, s),
                    up(&gpu, d),
                    up(&gpu, &an.concat()),
                    up(&gpu, &variances.concat()),
                ]
            })
            .collect();
        let levels: Vec<RpnProposalInput<'_, DeviceBuffer>> = bufs
            .iter()
            .zip(&host)
            .map(|(b, &(_, _, _, height, width))| RpnProposalInput {
                scores: &b[0],
                deltas: &b[1],
                anchors: &b[2],
                variances: &b[3],
                height,
                width,
            })
            .collect();
        let got = gpu.generate_proposals(&cfg, &levels, a, &im_info).unwrap();
        for (l, (scores, deltas, anchors, h, w)) in host.iter().enumerate() {
            let count = h * w * a;
            for (n, &info) in im_info.iter().enumerate() {
                let want = generate_proposals(
                    &cfg,
                    &scores[n * count..][..count],
                    &deltas[n * 4 * count..][..4 * count],
                    anchors,
                    &variances[..count],
                    (*h, *w),
                    info,
                );
                assert!(!want.boxes.is_empty(), "level {l} image {n}");
                assert_eq!(got[l][n], want, "level {l} image {n}");
            }
        }
        // Level 0 with level 1's anchors.
        let short = RpnProposalInput {
            scores: &bufs[0][0],
            deltas: &bufs[0][1],
            anchors: &bufs[1][2],
            variances: &bufs[0][3],
            height: 3,
            width: 4,
        };
        let err = gpu
            .generate_proposals(&cfg, &[short], a, &im_info)
            .unwrap_err();
        assert!(err.to_string().contains("anchors has 32 elements"), "{err}");
    }
}
