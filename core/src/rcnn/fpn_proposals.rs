//! The two FPN steps around the proposals, as Paddle 1.8's operators do them
//! for PaddleDetection's FPN Faster R-CNN:
//!
//! - `collect_fpn_proposals`: each level's `generate_proposals` output is
//!   pooled over the levels *and the batch's images*, the best
//!   `post_nms_top_n` of the whole batch kept (not per image: an image with
//!   better scores takes more), then regrouped by image, best first within
//!   each;
//! - `distribute_fpn_proposals`: each RoI goes to the pyramid level
//!   `floor(log2(sqrt(area) / refer_scale + 1e-6) + refer_level)` clamped to
//!   `[min_level, max_level]` (area with the pixel `+1`, 0 for an inverted
//!   box), so RoI Align reads a 224-pixel RoI from level 4; the restore index
//!   puts the per-level results back in the input order.

use crate::box_coder::BoxXyxy;
use crate::rcnn::Proposals;

/// Which pyramid level RoI Align reads each RoI from (`FPNRoIAlign`).
#[derive(Debug, Clone, PartialEq)]
pub struct FpnLevels {
    pub min_level: usize,
    pub max_level: usize,
    /// The level a RoI of `refer_scale` pixels (sqrt of its area) goes to
    /// (`canconical_level`).
    pub refer_level: usize,
    /// `canonical_size`.
    pub refer_scale: f32,
}

impl FpnLevels {
    /// `FPNRoIAlign` of `faster_rcnn_r50_fpn_1x.yml`.
    pub fn faster_rcnn_fpn() -> Self {
        FpnLevels {
            min_level: 2,
            max_level: 5,
            refer_level: 4,
            refer_scale: 224.0,
        }
    }

    /// The level of one RoI (pixel box).
    pub fn level_of(&self, roi: &BoxXyxy) -> usize {
        let area = if roi[2] < roi[0] || roi[3] < roi[1] {
            0.0
        } else {
            (roi[2] - roi[0] + 1.0) * (roi[3] - roi[1] + 1.0)
        };
        let level = ((area.sqrt() / self.refer_scale + 1e-6).log2() + self.refer_level as f32)
            .floor() as i64;
        level.clamp(self.min_level as i64, self.max_level as i64) as usize
    }
}

/// `distribute_fpn_proposals`' result for a batch's RoIs.
#[derive(Debug, Clone, PartialEq)]
pub struct DistributedRois {
    /// For each level from `min_level`, the indices of its RoIs in the input,
    /// in input order (so grouped by image when the input is).
    pub per_level: Vec<Vec<usize>>,
    /// For each input RoI, its row in the levels' outputs concatenated from
    /// `min_level` up: gathering those rows restores the input order.
    pub restore_index: Vec<usize>,
}

/// Sorts `rois` (a batch's, concatenated image after image, as Paddle's
/// LoD tensor holds them) into pyramid levels.
pub fn distribute_fpn_proposals(levels: &FpnLevels, rois: &[BoxXyxy]) -> DistributedRois {
    assert!(
        levels.min_level <= levels.max_level,
        "min_level above max_level"
    );
    let mut per_level = vec![Vec::new(); levels.max_level - levels.min_level + 1];
    for (i, roi) in rois.iter().enumerate() {
        per_level[levels.level_of(roi) - levels.min_level].push(i);
    }
    let mut restore_index = vec![0; rois.len()];
    for (row, &i) in per_level.iter().flatten().enumerate() {
        restore_index[i] = row;
    }
    DistributedRois {
        per_level,
        restore_index,
    }
}

/// `collect_fpn_proposals`: `levels[level][image]` are each level's
/// proposals for each image of the batch; the result has, for each image,
/// its share of the batch's `post_nms_top_n` best (all of them when there
/// are fewer; 0 keeps none, as in Paddle), best first.
///
/// Equal scores rank as Paddle's `std::stable_sort` with its `>=` comparison
/// leaves them: the later in (level, image, index) order first.
pub fn collect_fpn_proposals(levels: &[Vec<Proposals>], post_nms_top_n: usize) -> Vec<Proposals> {
    let images = levels.first().map_or(0, Vec::len);
    assert!(
        levels.iter().all(|l| l.len() == images),
        "every level needs the same images"
    );
    // (level, image, index) of every proposal, in Paddle's input order.
    let mut all: Vec<(usize, usize, usize)> = Vec::new();
    for (level, per_image) in levels.iter().enumerate() {
        for (image, proposals) in per_image.iter().enumerate() {
            assert_eq!(proposals.boxes.len(), proposals.scores.len());
            all.extend((0..proposals.boxes.len()).map(|index| (level, image, index)));
        }
    }
    let score = |&(level, image, index): &(usize, usize, usize)| levels[level][image].scores[index];
    // Best first; among equal scores the later input first.
    let mut ranked: Vec<usize> = (0..all.len()).collect();
    ranked.sort_by(|&a, &b| score(&all[b]).total_cmp(&score(&all[a])).then(b.cmp(&a)));
    ranked.truncate(post_nms_top_n);

    let mut out = vec![Proposals::default(); images];
    for &k in &ranked {
        let (level, image, index) = all[k];
        out[image].boxes.push(levels[level][image].boxes[index]);
        out[image].scores.push(levels[level][image].scores[index]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{floats, quads, read};
    use proptest::prelude::*;

    /// Paddle's `collect_fpn_proposals` and `distribute_fpn_proposals` on
    /// fixed boxes for two images (`core/tests/fixtures/faster_rcnn/
    /// fpn_proposals.py`): the batch-wide cut, equal scores, and RoIs at the
    /// level boundaries.
    #[test]
    fn equals_paddles_fpn_ops() {
        let fixture = read("faster_rcnn/fpn_proposals.json");
        let collect = &fixture["collect"];
        let levels: Vec<Vec<Proposals>> = (0..5)
            .map(|l| {
                (0..2)
                    .map(|i| Proposals {
                        boxes: quads(&collect["level_rois"][l][i]),
                        scores: floats(&collect["level_scores"][l][i]),
                    })
                    .collect()
            })
            .collect();
        for case in collect["cases"].as_array().expect("cases") {
            let top_n = case["post_nms_top_n"].as_u64().expect("top n") as usize;
            let got = collect_fpn_proposals(&levels, top_n);
            for (image, proposals) in got.iter().enumerate() {
                assert_eq!(
                    proposals.boxes,
                    quads(&case["rois"][image]),
                    "top {top_n} image {image}"
                );
            }
        }

        let distribute = &fixture["distribute"];
        let int = |key: &str| distribute[key].as_u64().expect(key) as usize;
        let cfg = FpnLevels {
            min_level: int("min_level"),
            max_level: int("max_level"),
            refer_level: int("refer_level"),
            refer_scale: int("refer_scale") as f32,
        };
        let per_image: Vec<Vec<BoxXyxy>> = (0..2).map(|i| quads(&distribute["rois"][i])).collect();
        let rois: Vec<BoxXyxy> = per_image.concat();
        let got = distribute_fpn_proposals(&cfg, &rois);
        for (level, indices) in got.per_level.iter().enumerate() {
            let want: Vec<BoxXyxy> = (0..2)
                .flat_map(|i| quads(&distribute["levels"][level][i]))
                .collect();
            let boxes: Vec<BoxXyxy> = indices.iter().map(|&i| rois[i]).collect();
            assert_eq!(boxes, want, "level {level}");
        }
        let want: Vec<usize> = floats(&distribute["restore_index"])
            .iter()
            .map(|&i| i as usize)
            .collect();
        assert_eq!(got.restore_index, want);
    }

    #[test]
    fn levels_by_hand() {
        let cfg = FpnLevels::faster_rcnn_fpn();
        let square = |side: f32| [0.0, 0.0, side - 1.0, side - 1.0];
        assert_eq!(cfg.level_of(&square(224.0)), 4);
        assert_eq!(cfg.level_of(&square(223.0)), 3);
        assert_eq!(cfg.level_of(&square(448.0)), 5);
        assert_eq!(cfg.level_of(&square(5000.0)), 5);
        assert_eq!(cfg.level_of(&square(1.0)), 2);
        assert_eq!(cfg.level_of(&[5.0, 5.0, 4.0, 300.0]), 2);
    }

    proptest! {
        /// The levels partition the RoIs, and gathering the concatenated
        /// levels by the restore index gives the input back.
        #[test]
        fn restore_index_restores(
            rois in prop::collection::vec((0.0f32..500.0, 0.0f32..500.0, 0.0f32..900.0, 0.0f32..900.0), 0..80)
        ) {
            let rois: Vec<BoxXyxy> = rois.into_iter().map(|(x, y, w, h)| [x, y, x + w, y + h]).collect();
            let cfg = FpnLevels::faster_rcnn_fpn();
            let out = distribute_fpn_proposals(&cfg, &rois);
            let concatenated: Vec<BoxXyxy> = out.per_level.iter().flatten().map(|&i| rois[i]).collect();
            prop_assert_eq!(concatenated.len(), rois.len());
            for (i, roi) in rois.iter().enumerate() {
                prop_assert_eq!(concatenated[out.restore_index[i]], *roi);
            }
            for (level, indices) in out.per_level.iter().enumerate() {
                prop_assert!(indices.windows(2).all(|w| w[0] < w[1]));
                prop_assert!(indices.iter().all(|&i| cfg.level_of(&rois[i]) == level + cfg.min_level));
            }
        }

        /// The collected proposals are the batch's best, best first per image.
        #[test]
        fn collect_keeps_the_batch_best(
            scores in prop::collection::vec(prop::collection::vec(prop::collection::vec(0.0f32..1.0, 0..6), 3), 4),
            top_n in 0usize..40,
        ) {
            let levels: Vec<Vec<Proposals>> = scores.iter().map(|per_image| {
                per_image.iter().map(|s| Proposals {
                    boxes: s.iter().map(|&v| [v, v, v + 1.0, v + 1.0]).collect(),
                    scores: s.clone(),
                }).collect()
            }).collect();
            let out = collect_fpn_proposals(&levels, top_n);
            let mut all: Vec<f32> = scores.iter().flatten().flatten().copied().collect();
            all.sort_by(|a, b| b.total_cmp(a));
            all.truncate(top_n);
            let mut got: Vec<f32> = out.iter().flat_map(|p| p.scores.clone()).collect();
            got.sort_by(|a, b| b.total_cmp(a));
            prop_assert_eq!(got, all);
            for p in &out {
                prop_assert!(p.scores.windows(2).all(|w| w[0] >= w[1]));
            }
        }
    }
}
