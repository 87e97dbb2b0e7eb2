//! `architecture: CascadeRCNN` and `CascadeMaskRCNN`: the trunk (ResNet,
//! `FPN`, `FPNRPNHead`, `FPNRoIAlign`) and the stages' `CascadeTwoFCHead`
//! as `faster_rcnn.rs` reads them from the `CascadeRCNN`
//! (`CascadeMaskRCNN`) section, then the three stages'
//! `CascadeBBoxAssigner` thresholds and regression weights, and for
//! Cascade Mask R-CNN the mask branch as `mask_rcnn.rs` reads it.
//! PaddleDetection's cascade has three stages, class-agnostic box
//! regression and the loss weights 1, 0.5, 0.25 (in its code, not the
//! config); the lists must give one value per stage.

use std::path::Path;

use pulsefocus_formats::{Error, Result};

use super::{Architecture, Config};
use crate::models::cascade_rcnn::{stage_variances, CascadeMaskSpec, CascadeRcnnSpec};
use crate::rcnn::config::BBoxAssignerConfig;

/// PaddleDetection's cascade: `CascadeRCNN` unpacks three regression
/// weights, one per stage.
const STAGES: usize = 3;

/// One stage's `generate_proposal_labels` settings from
/// `CascadeBBoxAssigner`.
struct StageAssigner {
    fg_thresh: f32,
    bg_thresh_hi: f32,
    bg_thresh_lo: f32,
    bbox_reg_weights: [f32; 4],
}

impl Config {
    /// The Cascade R-CNN (Cascade Mask R-CNN) model of a `CascadeRCNN`
    /// (`CascadeMaskRCNN`) config, each stage with its assigner's
    /// thresholds and regression weights; errors name `file` and the key.
    pub fn cascade_rcnn_spec(&self, file: &Path) -> Result<CascadeRcnnSpec> {
        let trunk = self.faster_rcnn_spec(file)?;
        let stages = self.cascade_stages(file)?;
        let mask = match (self.arch(), &self.cascade_mask_rcnn) {
            (Architecture::CascadeMaskRCNN, Some(arch)) => {
                let names = [arch.mask_head.as_str(), &arch.mask_assigner];
                let masked =
                    self.with_mask_branch(file, trunk.clone(), "CascadeMaskRCNN", names)?;
                Some(CascadeMaskSpec {
                    roi_extractor: masked
                        .mask_roi_extractor
                        .expect("the cascade's trunk is FPN: its mask head has an extractor"),
                    head: masked.mask_head,
                })
            }
            _ => None,
        };
        let mut spec = CascadeRcnnSpec::new(trunk, None);
        spec.mask = mask;
        for (stage, given) in spec.stages.iter_mut().zip(stages) {
            stage.fg_thresh = given.fg_thresh;
            stage.bg_thresh_hi = given.bg_thresh_hi;
            stage.bg_thresh_lo = given.bg_thresh_lo;
            stage.bbox_reg_weights = given.bbox_reg_weights;
        }
        Ok(spec)
    }

    /// `rcnn_config`'s `bbox_assigner` for a cascade: the sampling every
    /// stage shares (`batch_size_per_im`, `fg_fraction`,
    /// `shuffle_before_sample`) with stage 1's thresholds and weights.
    pub(super) fn cascade_assigner(&self, file: &Path) -> Result<BBoxAssignerConfig> {
        let a = self.cascade_bbox_assigner.clone().unwrap_or_default();
        let first = self.cascade_stages(file)?.swap_remove(0);
        if !(0.0..=1.0).contains(&a.fg_fraction) {
            return Err(Error::at(
                file,
                "key CascadeBBoxAssigner.fg_fraction",
                "must be in [0, 1]",
            ));
        }
        Ok(BBoxAssignerConfig {
            batch_size_per_im: a.batch_size_per_im,
            fg_fraction: a.fg_fraction,
            fg_thresh: first.fg_thresh,
            bg_thresh_hi: first.bg_thresh_hi,
            bg_thresh_lo: first.bg_thresh_lo,
            bbox_reg_weights: first.bbox_reg_weights,
            class_nums: self.num_classes,
            use_random: a.shuffle_before_sample,
        })
    }

    /// Each stage's settings from `CascadeBBoxAssigner`: the lists must
    /// have one entry per stage, the weights be positive, the targets
    /// class-agnostic.
    fn cascade_stages(&self, file: &Path) -> Result<Vec<StageAssigner>> {
        let bad =
            |key: &str, msg: String| Error::at(file, format!("key CascadeBBoxAssigner.{key}"), msg);
        let a = self.cascade_bbox_assigner.clone().unwrap_or_default();
        if a.class_aware {
            return Err(bad(
                "class_aware",
                "true is not supported (supported: false: class-agnostic targets and bbox_pred, as PaddleDetection's cascade configs)".into(),
            ));
        }
        for (key, len) in [
            ("fg_thresh", a.fg_thresh.len()),
            ("bg_thresh_hi", a.bg_thresh_hi.len()),
            ("bg_thresh_lo", a.bg_thresh_lo.len()),
            ("bbox_reg_weights", a.bbox_reg_weights.len()),
        ] {
            if len != STAGES {
                return Err(bad(
                    key,
                    format!("has {len} values: give {STAGES}, one per stage (the cascade has {STAGES} stages)"),
                ));
            }
        }
        if let Some(w) = a
            .bbox_reg_weights
            .iter()
            .find(|w| !(w.is_finite() && **w > 0.0))
        {
            return Err(bad(
                "bbox_reg_weights",
                format!("{w} is not a positive weight: the stage's variances are 1/w and 2/w"),
            ));
        }
        Ok((0..STAGES)
            .map(|k| StageAssigner {
                fg_thresh: a.fg_thresh[k],
                bg_thresh_hi: a.bg_thresh_hi[k],
                bg_thresh_lo: a.bg_thresh_lo[k],
                bbox_reg_weights: stage_variances(a.bbox_reg_weights[k]),
            })
            .collect())
    }
}
