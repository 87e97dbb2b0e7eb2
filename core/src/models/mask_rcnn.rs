//! Mask R-CNN as PaddleDetection 0.x's `MaskRCNN` architecture builds it
//! for `configs/mask_rcnn_r50_1x.yml` (C4) and
//! `configs/mask_rcnn_r50_fpn_1x.yml` (FPN): Faster R-CNN's parts as
//! `FasterRcnnSpec` has them (the configs build the same backbone, FPN,
//! RPN and box head), then the mask head (`MaskHead`), whose parameters
//! come last in Paddle's creation order, which is the checkpoint's.
//!
//! - C4: the mask head runs on the box head's res5 output for the
//!   foreground RoIs (no parameters of its own before `conv5_mask`), 7x7
//!   to 14x14 masks.
//! - FPN: `FPNRoIAlign` cuts 14x14 features (`mask_resolution`) from P2..P5
//!   for the foreground RoIs; four 3x3 convs, then 28x28 masks.

use super::conv_unit::UnitParam;
use super::faster_rcnn::{FasterRcnnSpec, RoiExtractorSpec};
use super::mask_head::MaskHeadSpec;
use crate::params::ParamSpec;

#[derive(Debug, Clone, PartialEq)]
pub struct MaskRcnnSpec {
    pub faster_rcnn: FasterRcnnSpec,
    /// How the mask head's RoI features are cut out: Some for FPN
    /// (`FPNRoIAlign` with `is_mask=True`), None for C4, whose mask head
    /// reads the box head's features.
    pub mask_roi_extractor: Option<RoiExtractorSpec>,
    pub mask_head: MaskHeadSpec,
}

impl MaskRcnnSpec {
    /// The C4 model on `faster_rcnn` with a mask head `conv_dim` wide on its
    /// res5 output.
    pub fn c4(faster_rcnn: FasterRcnnSpec, conv_dim: usize) -> MaskRcnnSpec {
        let res5 = faster_rcnn.roi_head.out_features();
        let mask_head = MaskHeadSpec {
            conv_dim,
            ..MaskHeadSpec::c4(res5, faster_rcnn.num_classes)
        };
        MaskRcnnSpec {
            faster_rcnn,
            mask_roi_extractor: None,
            mask_head,
        }
    }

    /// The FPN model on `faster_rcnn` with a mask head `conv_dim` wide on
    /// 14x14 RoI features (the box head's extractor at `mask_resolution`).
    pub fn fpn(faster_rcnn: FasterRcnnSpec, conv_dim: usize) -> MaskRcnnSpec {
        let fpn = faster_rcnn
            .fpn
            .as_ref()
            .expect("an FPN Mask R-CNN on an FPN Faster R-CNN");
        let mask_roi_extractor = match faster_rcnn.roi_extractor.clone() {
            RoiExtractorSpec::FpnRoiAlign {
                sampling_ratio,
                canonical_level,
                canonical_size,
                min_level,
                max_level,
                ..
            } => RoiExtractorSpec::FpnRoiAlign {
                resolution: 14,
                sampling_ratio,
                canonical_level,
                canonical_size,
                min_level,
                max_level,
            },
            RoiExtractorSpec::RoiAlign { .. } => {
                panic!("an FPN Faster R-CNN extracts with FPNRoIAlign")
            }
        };
        let mask_head = MaskHeadSpec {
            conv_dim,
            ..MaskHeadSpec::fpn(fpn.num_chan, faster_rcnn.num_classes)
        };
        MaskRcnnSpec {
            faster_rcnn,
            mask_roi_extractor: Some(mask_roi_extractor),
            mask_head,
        }
    }

    /// `mask_rcnn_r50_1x.yml` at any class count.
    pub fn r50_c4(num_classes: usize) -> MaskRcnnSpec {
        MaskRcnnSpec::c4(FasterRcnnSpec::r50_c4(num_classes), 256)
    }

    /// `mask_rcnn_r50_fpn_1x.yml` at any class count.
    pub fn r50_fpn(num_classes: usize) -> MaskRcnnSpec {
        MaskRcnnSpec::fpn(FasterRcnnSpec::r50_fpn(num_classes), 256)
    }

    /// The C4 model for tests: `r50_c4`'s names on Faster R-CNN's small C4
    /// model, the mask head 16 wide.
    pub fn small_c4(num_classes: usize) -> MaskRcnnSpec {
        MaskRcnnSpec::c4(FasterRcnnSpec::small_c4(num_classes), 16)
    }

    /// The FPN model for tests: `r50_fpn`'s names on Faster R-CNN's small
    /// FPN model (a 16-channel pyramid), the mask head 16 wide.
    pub fn small_fpn(num_classes: usize) -> MaskRcnnSpec {
        MaskRcnnSpec::fpn(FasterRcnnSpec::small_fpn(num_classes), 16)
    }

    /// Every parameter with its role and attributes, in Paddle's creation
    /// order: Faster R-CNN's, then the mask head's.
    pub fn params(&self) -> Vec<UnitParam> {
        let mut params = self.faster_rcnn.params();
        params.extend(self.mask_head.params());
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

    type Constructor = fn(usize) -> MaskRcnnSpec;

    const CONFIGS: [(&str, Constructor); 2] = [
        ("mask_rcnn_r50_1x", MaskRcnnSpec::r50_c4),
        ("mask_rcnn_r50_fpn_1x", MaskRcnnSpec::r50_fpn),
    ];

    /// The parameter lists PaddleDetection's own code builds for both
    /// configs (`core/tests/fixtures/mask_rcnn/param_list.py`), at their
    /// 81 classes and at 21: names, shapes and order.
    #[test]
    fn parameters_equal_paddledetections() {
        for (config, spec) in CONFIGS {
            for classes in [81, 21] {
                let ours = spec(classes).param_specs();
                let theirs = crate::fixtures::param_specs(&format!(
                    "mask_rcnn/{config}.{classes}.params.json"
                ));
                assert_eq!(ours.len(), theirs.len(), "{config} {classes}");
                for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
                    assert_eq!(a, b, "{config} at {classes} classes, parameter {i}");
                }
            }
        }
    }

    /// The small models keep the full models' names (a subset of them), in
    /// the same order, the whole mask head's included.
    #[test]
    fn small_models_keep_the_names() {
        let pairs = [
            (MaskRcnnSpec::small_c4(5), MaskRcnnSpec::r50_c4(5)),
            (MaskRcnnSpec::small_fpn(5), MaskRcnnSpec::r50_fpn(5)),
        ];
        let mask_names = |spec: &MaskRcnnSpec| {
            let params = spec.mask_head.params();
            params.into_iter().map(|p| p.spec.name).collect::<Vec<_>>()
        };
        for (small, full) in pairs {
            assert_eq!(mask_names(&small), mask_names(&full));
            let full = full.param_specs();
            let mut rest = full.iter().map(|p| &p.name);
            for p in &small.param_specs() {
                assert!(
                    rest.any(|n| *n == p.name),
                    "{} out of order or unknown",
                    p.name
                );
            }
        }
        let fpn = MaskRcnnSpec::small_fpn(5);
        assert_eq!(fpn.mask_head.conv_units()[0].in_channels, 16);
        assert_eq!(fpn.mask_head.upsample().weight_shape(), [16, 16, 2, 2]);
        assert_eq!(
            fpn.mask_roi_extractor.map(|e| e.resolution()),
            Some(14),
            "FPNRoIAlign's mask_resolution"
        );
        let c4 = MaskRcnnSpec::small_c4(5);
        assert_eq!(c4.mask_head.upsample().weight_shape(), [256, 16, 2, 2]);
        assert_eq!(c4.mask_roi_extractor, None);
    }
}
