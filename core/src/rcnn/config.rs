//! The settings of the R-CNN operators, under the names PaddleDetection's
//! YAML gives them (`RPNHead.rpn_target_assign`, `train_proposal`,
//! `test_proposal`, `BBoxAssigner`, `BBoxHead.nms`), with its defaults for
//! `configs/faster_rcnn_r50_1x.yml`.

use crate::yolo::NmsConfig;

/// `rpn_target_assign`: which anchors the RPN is trained on.
#[derive(Debug, Clone, PartialEq)]
pub struct RpnTargetConfig {
    /// Anchors sampled per image (`rpn_batch_size_per_im`).
    pub batch_size_per_im: usize,
    /// At most this share of them foreground (`rpn_fg_fraction`).
    pub fg_fraction: f32,
    /// An anchor overlapping a box by at least this is foreground.
    pub positive_overlap: f32,
    /// An anchor overlapping every box by less than this is background.
    pub negative_overlap: f32,
    /// Anchors further than this outside the image are ignored; negative:
    /// keep every anchor (`rpn_straddle_thresh`).
    pub straddle_thresh: f32,
    /// Sample at random (else the first anchors in order, for parity tests).
    pub use_random: bool,
}

impl Default for RpnTargetConfig {
    fn default() -> Self {
        RpnTargetConfig {
            batch_size_per_im: 256,
            fg_fraction: 0.5,
            positive_overlap: 0.7,
            negative_overlap: 0.3,
            straddle_thresh: 0.0,
            use_random: true,
        }
    }
}

/// `generate_proposals`: how RPN outputs become RoIs.
#[derive(Debug, Clone, PartialEq)]
pub struct ProposalConfig {
    /// Best-scoring anchors decoded per image before NMS.
    pub pre_nms_top_n: usize,
    /// Proposals kept per image after NMS.
    pub post_nms_top_n: usize,
    pub nms_thresh: f32,
    /// Boxes narrower or lower than this (times the image scale) are dropped.
    pub min_size: f32,
    /// Adaptive NMS: the threshold is multiplied by `eta` after each kept
    /// box while above 0.5; 1 turns it off.
    pub eta: f32,
}

impl ProposalConfig {
    /// `train_proposal` of `faster_rcnn_r50_1x.yml`.
    pub fn train() -> Self {
        ProposalConfig {
            pre_nms_top_n: 12000,
            post_nms_top_n: 2000,
            nms_thresh: 0.7,
            min_size: 0.0,
            eta: 1.0,
        }
    }

    /// `test_proposal` of `faster_rcnn_r50_1x.yml`.
    pub fn test() -> Self {
        ProposalConfig {
            pre_nms_top_n: 6000,
            post_nms_top_n: 1000,
            ..ProposalConfig::train()
        }
    }
}

/// `BBoxAssigner` (`generate_proposal_labels`): which RoIs the box head is
/// trained on and their targets.
#[derive(Debug, Clone, PartialEq)]
pub struct BBoxAssignerConfig {
    /// RoIs sampled per image.
    pub batch_size_per_im: usize,
    /// At most this share of them foreground.
    pub fg_fraction: f32,
    /// A RoI overlapping a box by at least this is foreground.
    pub fg_thresh: f32,
    /// Background RoIs overlap their best box in `[bg_thresh_lo, bg_thresh_hi)`.
    pub bg_thresh_hi: f32,
    pub bg_thresh_lo: f32,
    /// The box targets are divided by these (`[wx, wy, ww, wh]`).
    pub bbox_reg_weights: [f32; 4],
    /// Classes including the background (`num_classes`).
    pub class_nums: usize,
    /// Shuffle before sampling (`shuffle_before_sample`); off for parity tests.
    pub use_random: bool,
}

impl BBoxAssignerConfig {
    pub fn faster_rcnn(class_nums: usize) -> Self {
        BBoxAssignerConfig {
            batch_size_per_im: 512,
            fg_fraction: 0.25,
            fg_thresh: 0.5,
            bg_thresh_hi: 0.5,
            bg_thresh_lo: 0.0,
            bbox_reg_weights: [0.1, 0.1, 0.2, 0.2],
            class_nums,
            use_random: true,
        }
    }
}

/// Every non-learned setting of a Faster R-CNN.
#[derive(Debug, Clone, PartialEq)]
pub struct RcnnConfig {
    pub rpn_target: RpnTargetConfig,
    pub train_proposal: ProposalConfig,
    pub test_proposal: ProposalConfig,
    pub bbox_assigner: BBoxAssignerConfig,
    /// `BBoxHead.nms`, with background label 0.
    pub nms: NmsConfig,
}

impl RcnnConfig {
    /// `faster_rcnn_r50_1x.yml` (and `_fpn_1x`, whose values these are too
    /// but for the proposals' top-n per level) for `class_nums` classes
    /// including the background.
    pub fn faster_rcnn(class_nums: usize) -> Self {
        RcnnConfig {
            rpn_target: RpnTargetConfig::default(),
            train_proposal: ProposalConfig::train(),
            test_proposal: ProposalConfig::test(),
            bbox_assigner: BBoxAssignerConfig::faster_rcnn(class_nums),
            nms: NmsConfig {
                score_threshold: 0.05,
                nms_top_k: None,
                keep_top_k: Some(100),
                nms_threshold: 0.5,
                normalized: false,
                background_label: Some(0),
            },
        }
    }
}
