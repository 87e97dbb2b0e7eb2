//! Cascade R-CNN and Cascade Mask R-CNN as PaddleDetection 0.x's
//! `CascadeRCNN` and `CascadeMaskRCNN` architectures build them for
//! `configs/cascade_rcnn_r50_fpn_1x.yml` and
//! `configs/cascade_mask_rcnn_r50_fpn_1x.yml`: the parts and their
//! parameters in Paddle's creation order, which is the checkpoint's.
//!
//! The trunk is Faster R-CNN FPN's (`FasterRcnnSpec`): ResNet50 (variant b,
//! the default and what `variant: b` asks; affine channel norms, frozen),
//! `FPN` P2..P6, `FPNRPNHead`, `FPNRoIAlign` 7x7. Then `CascadeBBoxHead`
//! runs three stages, each on the RoIs the previous one refined:
//! - its own `CascadeTwoFCHead` and outputs, named `fc6`, `fc7`,
//!   `cls_score`, `bbox_pred` for stage 1 and with `_2`, `_3` appended for
//!   the others (`fc6_2_w`, `cls_score_3_b`); `bbox_pred` is class-agnostic,
//!   `[mlp_dim, 8]`;
//! - `wb_scalar = 1 / loss weight` (loss weights 1, 0.5, 0.25) multiplies
//!   its layers' learning rates: 1, 2 and 4 for the weights, twice that for
//!   the biases;
//! - `CascadeBBoxAssigner` labels its RoIs at IoU thresholds 0.5, 0.6, 0.7
//!   (foreground at least that, background below it), regression weights
//!   `bbox_reg_weights: [10, 20, 30]`: the targets are multiplied by
//!   `[w, w, w/2, w/2]`, i.e. divided by the variances
//!   `[1/w, 1/w, 2/w, 2/w]` that also decode the stage's deltas.
//!
//! Cascade Mask R-CNN adds Mask R-CNN FPN's mask head (`MaskRcnnSpec::fpn`:
//! `FPNRoIAlign` 14x14, four convs, 28x28 masks) on the stage-3 RoIs; its
//! parameters come last.

use super::bbox_head::{BBoxHeadSpec, RoiHeadSpec, TwoFcHeadSpec, CLASS_AGNOSTIC_BOXES};
use super::conv_unit::UnitParam;
use super::faster_rcnn::{FasterRcnnSpec, RoiExtractorSpec};
use super::fc::FcSpec;
use super::fpn::FpnSpec;
use super::mask_head::MaskHeadSpec;
use super::mask_rcnn::MaskRcnnSpec;
use super::resnet::{NormType, ResNetSpec};
use crate::params::ParamSpec;
use crate::rcnn::BBoxAssignerConfig;

/// `CascadeBBoxAssigner.bbox_reg_weights`, one per stage.
const STAGE_REG_WEIGHTS: [f64; 3] = [10.0, 20.0, 30.0];
/// `CascadeRCNN.cascade_rcnn_loss_weight`.
const STAGE_LOSS_WEIGHTS: [f32; 3] = [1.0, 0.5, 0.25];
/// `CascadeBBoxAssigner`'s `fg_thresh` and `bg_thresh_hi` (equal).
const STAGE_IOU: [f32; 3] = [0.5, 0.6, 0.7];

/// The variances `[1/w, 1/w, 2/w, 2/w]` of a stage whose
/// `CascadeBBoxAssigner.bbox_reg_weights` entry is `w`: Python's `1. / w`
/// and `2. / w` in double, then the f32 attribute.
pub fn stage_variances(w: f64) -> [f32; 4] {
    let (centre, size) = ((1.0 / w) as f32, (2.0 / w) as f32);
    [centre, centre, size, size]
}

/// One stage of `CascadeBBoxHead`.
#[derive(Debug, Clone, PartialEq)]
pub struct CascadeStageSpec {
    /// Appended to the layer names: `""`, `"_2"`, `"_3"`.
    pub suffix: String,
    pub head: TwoFcHeadSpec,
    /// `cls_score` over every class, class-agnostic `bbox_pred`.
    pub outputs: BBoxHeadSpec,
    /// The stage's losses are multiplied by this, its layers' learning
    /// rates divided by it.
    pub loss_weight: f32,
    /// A RoI overlapping a box by at least this is foreground.
    pub fg_thresh: f32,
    /// Background RoIs overlap their best box in `[bg_thresh_lo, bg_thresh_hi)`.
    pub bg_thresh_hi: f32,
    pub bg_thresh_lo: f32,
    /// `[1/w, 1/w, 2/w, 2/w]` for the stage's `w`: the targets are divided
    /// by these and the stage's deltas decoded with them (Paddle's
    /// `prior_box_var`), as `BBoxAssignerConfig::bbox_reg_weights`.
    pub bbox_reg_weights: [f32; 4],
}

impl CascadeStageSpec {
    /// Stage `index` (0-based) of the configs on `head` for `num_classes`.
    fn new(index: usize, head: &TwoFcHeadSpec, num_classes: usize) -> CascadeStageSpec {
        CascadeStageSpec {
            suffix: if index == 0 {
                String::new()
            } else {
                format!("_{}", index + 1)
            },
            head: head.clone(),
            outputs: BBoxHeadSpec {
                in_features: head.mlp_dim,
                num_classes,
                box_classes: CLASS_AGNOSTIC_BOXES,
            },
            loss_weight: STAGE_LOSS_WEIGHTS[index],
            fg_thresh: STAGE_IOU[index],
            bg_thresh_hi: STAGE_IOU[index],
            bg_thresh_lo: 0.0,
            bbox_reg_weights: stage_variances(STAGE_REG_WEIGHTS[index]),
        }
    }

    /// `fc6`, `fc7`, `cls_score`, `bbox_pred` with the stage's suffix and
    /// learning rates (`wb_scalar`), in creation order.
    pub fn layers(&self) -> Vec<FcSpec> {
        let wb_scalar = 1.0 / self.loss_weight;
        let mut layers = RoiHeadSpec::TwoFc(self.head.clone()).fc_layers();
        layers.extend(self.outputs.layers());
        for fc in &mut layers {
            fc.prefix.push_str(&self.suffix);
            fc.weight.learning_rate *= wb_scalar;
            fc.bias.learning_rate *= wb_scalar;
        }
        layers
    }

    pub fn params(&self) -> Vec<UnitParam> {
        self.layers().iter().flat_map(|f| f.params()).collect()
    }

    /// The settings `CascadeBBoxAssigner` calls `generate_proposal_labels`
    /// with for this stage: `base`'s sampling (`batch_size_per_im`,
    /// `fg_fraction`, `use_random`), the stage's thresholds and weights,
    /// `class_nums` 2 (class-agnostic targets). Stages after the first also
    /// pass `is_cascade_rcnn` with the previous stage's overlaps
    /// (`rcnn::LabelSwitches`).
    pub fn assigner(&self, base: &BBoxAssignerConfig) -> BBoxAssignerConfig {
        BBoxAssignerConfig {
            fg_thresh: self.fg_thresh,
            bg_thresh_hi: self.bg_thresh_hi,
            bg_thresh_lo: self.bg_thresh_lo,
            bbox_reg_weights: self.bbox_reg_weights,
            class_nums: CLASS_AGNOSTIC_BOXES,
            ..base.clone()
        }
    }
}

/// Cascade Mask R-CNN's mask branch.
#[derive(Debug, Clone, PartialEq)]
pub struct CascadeMaskSpec {
    /// `FPNRoIAlign` with `is_mask=True` (14x14).
    pub roi_extractor: RoiExtractorSpec,
    pub head: MaskHeadSpec,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CascadeRcnnSpec {
    /// The trunk: backbone, FPN, RPN head, RoI extractor; its `roi_head`
    /// is the `CascadeTwoFCHead` every stage builds. Its `bbox_head()`
    /// (class-aware) is Faster R-CNN's, not a cascade stage's.
    pub faster_rcnn: FasterRcnnSpec,
    /// The three stages, first to last.
    pub stages: Vec<CascadeStageSpec>,
    /// Cascade Mask R-CNN's mask branch; None for Cascade R-CNN.
    pub mask: Option<CascadeMaskSpec>,
}

impl CascadeRcnnSpec {
    /// The cascade on an FPN `faster_rcnn` (whose RoI head is `TwoFc`), with
    /// a mask head `mask_conv_dim` wide when Some.
    pub fn new(faster_rcnn: FasterRcnnSpec, mask_conv_dim: Option<usize>) -> CascadeRcnnSpec {
        let RoiHeadSpec::TwoFc(head) = &faster_rcnn.roi_head else {
            panic!("Cascade R-CNN runs on an FPN Faster R-CNN's two-fc head");
        };
        let stages = (0..STAGE_LOSS_WEIGHTS.len())
            .map(|i| CascadeStageSpec::new(i, head, faster_rcnn.num_classes))
            .collect();
        let mask = mask_conv_dim.map(|conv_dim| {
            let masked = MaskRcnnSpec::fpn(faster_rcnn.clone(), conv_dim);
            CascadeMaskSpec {
                roi_extractor: masked
                    .mask_roi_extractor
                    .expect("an FPN mask head has its extractor"),
                head: masked.mask_head,
            }
        });
        CascadeRcnnSpec {
            faster_rcnn,
            stages,
            mask,
        }
    }

    /// ResNet50 as the cascade configs set it (affine channel, frozen
    /// norms, variant b), FPN and 1024-wide heads at any class count.
    fn r50_trunk(num_classes: usize) -> FasterRcnnSpec {
        let backbone = ResNetSpec::new(50).expect("ResNet50");
        FasterRcnnSpec::with_fpn(
            backbone,
            FpnSpec::r50_fpn(),
            RoiExtractorSpec::fpn_r50(),
            1024,
            num_classes,
        )
    }

    /// The test models' trunk: the small ResNet (affine channel), a
    /// 16-channel pyramid and 32-wide fully connected layers.
    fn small_trunk(num_classes: usize) -> FasterRcnnSpec {
        let backbone = FasterRcnnSpec::small_resnet(NormType::AffineChannel, vec![2, 3, 4, 5]);
        let fpn = FpnSpec {
            num_chan: 16,
            ..FpnSpec::r50_fpn()
        };
        FasterRcnnSpec::with_fpn(backbone, fpn, RoiExtractorSpec::fpn_r50(), 32, num_classes)
    }

    /// `cascade_rcnn_r50_fpn_1x.yml` at any class count.
    pub fn r50_fpn(num_classes: usize) -> CascadeRcnnSpec {
        CascadeRcnnSpec::new(CascadeRcnnSpec::r50_trunk(num_classes), None)
    }

    /// `cascade_mask_rcnn_r50_fpn_1x.yml` at any class count.
    pub fn r50_fpn_mask(num_classes: usize) -> CascadeRcnnSpec {
        CascadeRcnnSpec::new(CascadeRcnnSpec::r50_trunk(num_classes), Some(256))
    }

    /// Cascade R-CNN for tests: `r50_fpn`'s names on a small trunk.
    pub fn small(num_classes: usize) -> CascadeRcnnSpec {
        CascadeRcnnSpec::new(CascadeRcnnSpec::small_trunk(num_classes), None)
    }

    /// Cascade Mask R-CNN for tests: `r50_fpn_mask`'s names on a small
    /// trunk, the mask head 16 wide.
    pub fn small_mask(num_classes: usize) -> CascadeRcnnSpec {
        CascadeRcnnSpec::new(CascadeRcnnSpec::small_trunk(num_classes), Some(16))
    }

    pub fn num_classes(&self) -> usize {
        self.faster_rcnn.num_classes
    }

    /// Every parameter with its role and attributes, in Paddle's creation
    /// order: backbone, FPN, RPN head, the stages in order, the mask head.
    pub fn params(&self) -> Vec<UnitParam> {
        let mut params = self.faster_rcnn.trunk_params();
        params.extend(self.stages.iter().flat_map(|s| s.params()));
        if let Some(mask) = &self.mask {
            params.extend(mask.head.params());
        }
        params
    }

    /// Every parameter's name and shape in Paddle's creation order.
    pub fn param_specs(&self) -> Vec<ParamSpec> {
        self.params().into_iter().map(|p| p.spec).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rcnn::BBoxAssignerConfig;

    type Constructor = fn(usize) -> CascadeRcnnSpec;

    const CONFIGS: [(&str, Constructor); 2] = [
        ("cascade_rcnn_r50_fpn_1x", CascadeRcnnSpec::r50_fpn),
        (
            "cascade_mask_rcnn_r50_fpn_1x",
            CascadeRcnnSpec::r50_fpn_mask,
        ),
    ];

    fn fixture(config: &str, classes: usize) -> serde_json::Value {
        crate::fixtures::read(&format!("cascade_rcnn/{config}.{classes}.params.json"))
    }

    /// The parameter lists PaddleDetection's own code builds for both
    /// configs (`core/tests/fixtures/cascade_rcnn/param_list.py`), at their
    /// 81 classes and at 21: names, shapes and order, and each parameter's
    /// learning rate and L2 decay as its `ParamAttr` sets them.
    #[test]
    fn parameters_equal_paddledetections() {
        for (config, spec) in CONFIGS {
            for classes in [81, 21] {
                let ours = spec(classes).params();
                let path = format!("cascade_rcnn/{config}.{classes}.params.json");
                let theirs = crate::fixtures::param_specs(&path);
                let attrs = fixture(config, classes);
                assert_eq!(ours.len(), theirs.len(), "{config} {classes}");
                for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
                    assert_eq!(a.spec, *b, "{config} at {classes} classes, parameter {i}");
                    let attr = &attrs[i];
                    let rate = attr["learning_rate"].as_f64().expect("learning_rate") as f32;
                    let decay = attr["decay"].as_f64().map(|d| d as f32);
                    assert_eq!(
                        (a.learning_rate, a.weight_decay),
                        (rate, decay),
                        "{config}: {}",
                        b.name
                    );
                }
            }
        }
    }

    /// Each stage's head by name: suffixes, the class-agnostic box output,
    /// its thresholds and its variances.
    #[test]
    fn stages_follow_the_configs() {
        let spec = CascadeRcnnSpec::r50_fpn(81);
        let names: Vec<Vec<String>> = spec
            .stages
            .iter()
            .map(|s| s.layers().into_iter().map(|f| f.prefix).collect())
            .collect();
        assert_eq!(names[0], ["fc6", "fc7", "cls_score", "bbox_pred"]);
        assert_eq!(names[2], ["fc6_3", "fc7_3", "cls_score_3", "bbox_pred_3"]);
        let bbox_pred = &spec.stages[1].layers()[3];
        assert_eq!((bbox_pred.inputs, bbox_pred.outputs), (1024, 8));
        let thresholds: Vec<(f32, f32)> = spec
            .stages
            .iter()
            .map(|s| (s.fg_thresh, s.bg_thresh_hi))
            .collect();
        assert_eq!(thresholds, [(0.5, 0.5), (0.6, 0.6), (0.7, 0.7)]);
        // [10, 10, 5, 5], [20, 20, 10, 10], [30, 30, 15, 15] as divisors.
        for (stage, w) in spec.stages.iter().zip([10.0f32, 20.0, 30.0]) {
            let multipliers = stage.bbox_reg_weights.map(|v| 1.0 / v);
            for (m, want) in multipliers.iter().zip([w, w, w / 2.0, w / 2.0]) {
                assert!((m - want).abs() < 1e-4 * want, "{multipliers:?}");
            }
        }
        assert_eq!(spec.stages[0].bbox_reg_weights, [0.1, 0.1, 0.2, 0.2]);
        let base = BBoxAssignerConfig::faster_rcnn(81);
        let third = spec.stages[2].assigner(&base);
        assert_eq!((third.fg_thresh, third.class_nums), (0.7, 2));
        assert_eq!(third.batch_size_per_im, base.batch_size_per_im);
        assert!(spec.mask.is_none());
    }

    /// The small models keep the full models' names (a subset of them), in
    /// the same order, the three stages' and the mask head's whole.
    #[test]
    fn small_models_keep_the_names() {
        let pairs = [
            (CascadeRcnnSpec::small(5), CascadeRcnnSpec::r50_fpn(5)),
            (
                CascadeRcnnSpec::small_mask(5),
                CascadeRcnnSpec::r50_fpn_mask(5),
            ),
        ];
        for (small, full) in pairs {
            let head_names = |spec: &CascadeRcnnSpec| {
                let mut params: Vec<UnitParam> =
                    spec.stages.iter().flat_map(|s| s.params()).collect();
                params.extend(spec.mask.iter().flat_map(|m| m.head.params()));
                params.into_iter().map(|p| p.spec.name).collect::<Vec<_>>()
            };
            assert_eq!(head_names(&small), head_names(&full));
            let full = full.param_specs();
            let mut rest = full.iter().map(|p| &p.name);
            let small = small.param_specs();
            for p in &small {
                assert!(
                    rest.any(|n| *n == p.name),
                    "{} out of order or unknown",
                    p.name
                );
            }
            let values = |list: &[ParamSpec]| list.iter().map(|p| p.numel()).sum::<usize>();
            assert!(values(&small) * 100 < values(&full), "{}", values(&small));
        }
        let small = CascadeRcnnSpec::small_mask(5);
        assert_eq!(small.stages[2].layers()[0].inputs, 16 * 7 * 7);
        assert_eq!(small.stages[2].layers()[3].outputs, 8);
        let mask = small.mask.expect("a mask branch");
        assert_eq!(mask.roi_extractor.resolution(), 14);
        assert_eq!(mask.head.conv_units()[0].in_channels, 16);
    }
}
