//! The two-stage (R-CNN) detectors' non-learned operations, as Paddle 1.8's
//! operators compute them for PaddleDetection's `FasterRCNN` (and Paddle
//! 2.0's for `CascadeRCNN`'s labels): anchors, the RPN's targets and losses,
//! proposals, the sampled RoIs and their labels, the box head's losses and
//! detection output, and the cascade's refinement between stages. They run
//! on the host on a few thousand boxes per image, but for the proposals,
//! which are a backend op (`Backend::generate_proposals`, whose CPU version
//! is `proposals.rs`; a GPU sorts every anchor); the convolutional parts
//! are `models::`.
//!
//! Boxes are pixel boxes `[x1, y1, x2, y2]` whose width is `x2 - x1 + 1`,
//! as in Paddle's R-CNN operators.

pub mod anchors;
pub mod bbox_detect;
pub mod bbox_loss;
pub mod bbox_overlaps;
pub mod box_clip;
pub mod cascade_detect;
pub mod config;
pub mod fpn_proposals;
pub mod mask_labels;
pub mod mask_loss;
pub mod mask_paste;
pub mod proposal_labels;
pub mod proposals;
pub mod rpn_loss;
pub mod rpn_target;
pub mod truth;

pub use anchors::{anchor_generator, rpn_anchors, Anchors};
pub use bbox_detect::bbox_head_detect;
pub use bbox_loss::{
    bbox_head_loss, bbox_head_loss_at_rows, weighted_bbox_head_loss, BBoxHeadLoss, BoxHeadLossArgs,
    RoiTargets,
};
pub use bbox_overlaps::bbox_overlap;
pub use box_clip::box_clip;
pub use cascade_detect::{cascade_head_detect, refine_rois};
pub use config::{BBoxAssignerConfig, ProposalConfig, RcnnConfig, RpnTargetConfig};
pub use fpn_proposals::{
    collect_fpn_proposals, distribute_fpn_proposals, DistributedRois, FpnLevels,
};
pub use mask_labels::{generate_mask_labels, MaskTargets};
pub use mask_loss::mask_loss;
pub use mask_paste::{paste_masks, PasteRegion, Pasted};
pub use proposal_labels::{
    generate_proposal_labels, generate_proposal_labels_with, LabelSwitches, SampledRois,
};
pub use proposals::{generate_proposals, Proposals};
pub use rpn_loss::{rpn_loss, RpnLevelGrad, RpnLevelOutput, RpnLoss};
pub use rpn_target::{rpn_target_assign, sample_key, Draw, ImInfo, RpnTargets};
