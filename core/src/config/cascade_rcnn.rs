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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use proptest::prelude::*;

    use super::*;
    use crate::config::{load, CascadeBBoxAssigner};

    fn cascade_yaml() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/ppdet_configs/cascade_rcnn_r50_fpn_1x.yml")
    }

    /// A list length: mostly the three stages, else any of 0..6.
    fn length() -> impl Strategy<Value = usize> {
        prop_oneof![3 => Just(STAGES), 1 => 0..6usize]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Any `CascadeBBoxAssigner`: with three entries in every list and
        /// positive weights each stage takes its entries (thresholds as
        /// given, the weight as its variances), and `rcnn_config` stage 1's;
        /// else the error names the first list at fault, in one line.
        #[test]
        fn assigner_lists_feed_the_stages_or_name_their_key(
            lengths in proptest::array::uniform4(length()),
            thresholds in proptest::collection::vec(0f32..1.0, 3 * 6),
            weights in proptest::collection::vec(
                prop_oneof![4 => 0.5f64..50.0, 1 => -5f64..=0.0],
                6,
            ),
        ) {
            let path = cascade_yaml();
            let mut c = load(&path, &[]).unwrap();
            let list = |k: usize| thresholds[6 * k..6 * k + lengths[k]].to_vec();
            let given = CascadeBBoxAssigner {
                fg_thresh: list(0),
                bg_thresh_hi: list(1),
                bg_thresh_lo: list(2),
                bbox_reg_weights: weights[..lengths[3]].to_vec(),
                ..CascadeBBoxAssigner::default()
            };
            c.cascade_bbox_assigner = Some(given.clone());
            let keys = ["fg_thresh", "bg_thresh_hi", "bg_thresh_lo", "bbox_reg_weights"];
            let at_fault = match lengths.iter().position(|&n| n != STAGES) {
                Some(k) => Some(keys[k]),
                None => given
                    .bbox_reg_weights
                    .iter()
                    .any(|&w| w <= 0.0)
                    .then_some("bbox_reg_weights"),
            };
            match (c.cascade_rcnn_spec(&path), at_fault) {
                (Ok(spec), None) => {
                    for (k, stage) in spec.stages.iter().enumerate() {
                        prop_assert_eq!(stage.fg_thresh, given.fg_thresh[k]);
                        prop_assert_eq!(stage.bg_thresh_hi, given.bg_thresh_hi[k]);
                        prop_assert_eq!(stage.bg_thresh_lo, given.bg_thresh_lo[k]);
                        let w = given.bbox_reg_weights[k];
                        prop_assert_eq!(stage.bbox_reg_weights, stage_variances(w));
                    }
                    let first = c.rcnn_config(&path).unwrap().bbox_assigner;
                    prop_assert_eq!(first.fg_thresh, given.fg_thresh[0]);
                    prop_assert_eq!(first.bbox_reg_weights, spec.stages[0].bbox_reg_weights);
                }
                (Err(e), Some(key)) => {
                    let e = e.to_string();
                    let want = format!("key CascadeBBoxAssigner.{key})");
                    prop_assert!(e.contains(&want), "{}", e);
                    prop_assert_eq!(e.lines().count(), 1);
                }
                (got, want) => prop_assert!(false, "{:?} for {:?}", got.map(|_| ()), want),
            }
        }
    }
}
