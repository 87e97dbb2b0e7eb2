//! Faster R-CNN as PaddleDetection 0.x's `FasterRCNN` architecture builds it
//! for `configs/faster_rcnn_r50_1x.yml` (C4) and
//! `configs/faster_rcnn_r50_fpn_1x.yml` (FPN): the parts and their
//! parameters in Paddle's creation order, which is the checkpoint's.
//!
//! - C4: ResNet50 res2..res4 (affine channel), `RPNHead` on res4,
//!   `RoIAlign` 14x14 at 1/16, res5 on each RoI (`ResNetC5`), `BBoxHead`.
//! - FPN: ResNet50 res2..res5 (frozen batch norm), `FPN` P2..P6,
//!   `FPNRPNHead` on every level, `FPNRoIAlign` 7x7 on P2..P5,
//!   `TwoFCHead`, `BBoxHead`.

use super::bbox_head::{BBoxHeadSpec, RoiHeadSpec, TwoFcHeadSpec};
use super::conv_unit::{ConvUnitSpec, UnitParam};
use super::fpn::FpnSpec;
use super::resnet::{NormType, ResNetSpec};
use super::rpn_head::{AnchorGeneratorSpec, RpnHeadSpec, RpnLevels};
use crate::params::ParamSpec;

/// How each RoI's features are cut out (`roi_extractor`).
#[derive(Debug, Clone, PartialEq)]
pub enum RoiExtractorSpec {
    /// `RoIAlign` on the backbone's last feature (C4).
    RoiAlign {
        resolution: usize,
        /// 0: as many samples as the bin covers, rounded up.
        sampling_ratio: usize,
        spatial_scale: f32,
    },
    /// `FPNRoIAlign`: each RoI from the level its size picks,
    /// `canonical_level + log2(sqrt(area) / canonical_size)` clamped to
    /// `min_level..=max_level`.
    FpnRoiAlign {
        resolution: usize,
        sampling_ratio: usize,
        canonical_level: usize,
        canonical_size: f32,
        min_level: usize,
        max_level: usize,
    },
}

impl RoiExtractorSpec {
    /// `faster_rcnn_r50_1x.yml`'s `RoIAlign`.
    pub fn c4_r50() -> RoiExtractorSpec {
        RoiExtractorSpec::RoiAlign {
            resolution: 14,
            sampling_ratio: 0,
            spatial_scale: 1.0 / 16.0,
        }
    }

    /// `faster_rcnn_r50_fpn_1x.yml`'s `FPNRoIAlign`.
    pub fn fpn_r50() -> RoiExtractorSpec {
        RoiExtractorSpec::FpnRoiAlign {
            resolution: 7,
            sampling_ratio: 2,
            canonical_level: 4,
            canonical_size: 224.0,
            min_level: 2,
            max_level: 5,
        }
    }

    pub fn resolution(&self) -> usize {
        match *self {
            RoiExtractorSpec::RoiAlign { resolution, .. }
            | RoiExtractorSpec::FpnRoiAlign { resolution, .. } => resolution,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct FasterRcnnSpec {
    pub backbone: ResNetSpec,
    pub fpn: Option<FpnSpec>,
    /// The RPN head and its anchor generator.
    pub rpn: RpnHeadSpec,
    pub roi_extractor: RoiExtractorSpec,
    pub roi_head: RoiHeadSpec,
    /// Classes including the background (label 0).
    pub num_classes: usize,
}

impl FasterRcnnSpec {
    /// The C4 model on `backbone` (whose last feature stage is res4), with
    /// the configs' anchors and `RoIAlign`.
    pub fn c4(backbone: ResNetSpec, num_classes: usize) -> FasterRcnnSpec {
        let channels = *backbone.feature_channels().last().expect("a feature");
        FasterRcnnSpec {
            rpn: RpnHeadSpec {
                channels,
                anchors: AnchorGeneratorSpec::faster_rcnn(),
                levels: None,
            },
            roi_extractor: RoiExtractorSpec::c4_r50(),
            roi_head: RoiHeadSpec::ResNetC5(backbone.c5_head()),
            fpn: None,
            backbone,
            num_classes,
        }
    }

    /// The FPN model on `backbone` (features res2..res5) with `fpn`, the
    /// configs' anchors and `roi_extractor` (whose resolution sizes the
    /// first fully connected layer).
    pub fn with_fpn(
        backbone: ResNetSpec,
        fpn: FpnSpec,
        roi_extractor: RoiExtractorSpec,
        mlp_dim: usize,
        num_classes: usize,
    ) -> FasterRcnnSpec {
        let in_features = fpn.num_chan * roi_extractor.resolution().pow(2);
        FasterRcnnSpec {
            rpn: RpnHeadSpec {
                channels: fpn.num_chan,
                anchors: AnchorGeneratorSpec::faster_rcnn(),
                levels: Some(RpnLevels {
                    anchor_start_size: 32.0,
                    min_level: fpn.min_level,
                    max_level: fpn.max_level,
                }),
            },
            roi_extractor,
            roi_head: RoiHeadSpec::TwoFc(TwoFcHeadSpec {
                in_features,
                mlp_dim,
            }),
            fpn: Some(fpn),
            backbone,
            num_classes,
        }
    }

    /// `faster_rcnn_r50_1x.yml` at any class count.
    pub fn r50_c4(num_classes: usize) -> FasterRcnnSpec {
        let backbone = ResNetSpec {
            feature_maps: vec![4],
            ..ResNetSpec::new(50).expect("ResNet50")
        };
        FasterRcnnSpec::c4(backbone, num_classes)
    }

    /// `faster_rcnn_r50_fpn_1x.yml` at any class count.
    pub fn r50_fpn(num_classes: usize) -> FasterRcnnSpec {
        let backbone = ResNetSpec {
            norm_type: NormType::BatchNorm,
            ..ResNetSpec::new(50).expect("ResNet50")
        };
        let fpn = FpnSpec::r50_fpn();
        FasterRcnnSpec::with_fpn(
            backbone,
            fpn,
            RoiExtractorSpec::fpn_r50(),
            1024,
            num_classes,
        )
    }

    /// ResNet50's structure at an eighth of its width with one or two
    /// blocks per stage: the same names as far as they go (also
    /// `RetinaNetSpec::small`'s backbone).
    pub(crate) fn small_resnet(norm_type: NormType, feature_maps: Vec<usize>) -> ResNetSpec {
        ResNetSpec {
            blocks: [1, 1, 2, 1],
            width: 8,
            norm_type,
            feature_maps,
            ..ResNetSpec::new(50).expect("ResNet50")
        }
    }

    /// The C4 model for tests: `r50_c4`'s names on the small ResNet.
    pub fn small_c4(num_classes: usize) -> FasterRcnnSpec {
        let backbone = FasterRcnnSpec::small_resnet(NormType::AffineChannel, vec![4]);
        FasterRcnnSpec::c4(backbone, num_classes)
    }

    /// The FPN model for tests: `r50_fpn`'s names on the small ResNet, a
    /// 16-channel pyramid and 32-wide fully connected layers.
    pub fn small_fpn(num_classes: usize) -> FasterRcnnSpec {
        let backbone = FasterRcnnSpec::small_resnet(NormType::BatchNorm, vec![2, 3, 4, 5]);
        let fpn = FpnSpec {
            num_chan: 16,
            ..FpnSpec::r50_fpn()
        };
        FasterRcnnSpec::with_fpn(backbone, fpn, RoiExtractorSpec::fpn_r50(), 32, num_classes)
    }

    /// The FPN's convs (none without FPN).
    pub fn fpn_units(&self) -> Vec<ConvUnitSpec> {
        let Some(fpn) = &self.fpn else {
            return Vec::new();
        };
        let body: Vec<(usize, usize)> = self
            .backbone
            .feature_maps
            .iter()
            .zip(self.backbone.feature_channels())
            .map(|(&stage, channels)| (stage, channels))
            .collect();
        fpn.units(&body)
    }

    pub fn bbox_head(&self) -> BBoxHeadSpec {
        BBoxHeadSpec {
            in_features: self.roi_head.out_features(),
            num_classes: self.num_classes,
            box_classes: self.num_classes,
        }
    }

    /// The parameters before the RoI head's (backbone, FPN, RPN head), in
    /// Paddle's creation order: what Cascade R-CNN shares.
    pub fn trunk_params(&self) -> Vec<UnitParam> {
        let convs = [self.backbone.units(), self.fpn_units(), self.rpn.units()];
        convs.iter().flatten().flat_map(|u| u.params()).collect()
    }

    /// Every parameter with its role and attributes, in Paddle's creation
    /// order: backbone, FPN, RPN head, RoI head, `cls_score`, `bbox_pred`.
    pub fn params(&self) -> Vec<UnitParam> {
        let mut params = self.trunk_params();
        params.extend(self.roi_head.params());
        params.extend(self.bbox_head().layers().iter().flat_map(|f| f.params()));
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
    use crate::loading::{plan_loading, ExcludePatterns, TensorInfo};
    use pulsefocus_formats::DType;

    type Constructor = fn(usize) -> FasterRcnnSpec;

    const CONFIGS: [(&str, Constructor); 2] = [
        ("faster_rcnn_r50_1x", FasterRcnnSpec::r50_c4),
        ("faster_rcnn_r50_fpn_1x", FasterRcnnSpec::r50_fpn),
    ];

    fn fixture(config: &str, classes: usize) -> Vec<ParamSpec> {
        crate::fixtures::param_specs(&format!("faster_rcnn/{config}.{classes}.params.json"))
    }

    /// The parameter lists PaddleDetection's own code builds for both
    /// configs (`core/tests/fixtures/faster_rcnn/make_fixtures.py`), at
    /// their 81 classes and at 5: names, shapes and order.
    #[test]
    fn parameters_equal_paddledetections() {
        for (config, spec) in CONFIGS {
            for classes in [81, 5] {
                let ours = spec(classes).param_specs();
                let theirs = fixture(config, classes);
                assert_eq!(ours.len(), theirs.len(), "{config} {classes}");
                for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
                    assert_eq!(a, b, "{config} at {classes} classes, parameter {i}");
                }
            }
        }
    }

    fn checkpoint(list: &[ParamSpec]) -> Vec<TensorInfo> {
        list.iter()
            .map(|p| TensorInfo {
                name: p.name.clone(),
                shape: p.shape.clone(),
                dtype: DType::F32,
            })
            .collect()
    }

    const HEAD: [&str; 4] = ["cls_score_w", "cls_score_b", "bbox_pred_w", "bbox_pred_b"];

    /// The seed's `finetune_exclude_pretrained_params=['cls_score','bbox_pred']`
    /// excludes exactly `BBoxHead`'s four tensors (not `rpn_cls_logits`,
    /// `rpn_bbox_pred`) and loads the rest of a checkpoint of the same model.
    #[test]
    fn the_seeds_patterns_exclude_exactly_the_bbox_head() {
        let patterns = ExcludePatterns::new(&["cls_score".into(), "bbox_pred".into()]).unwrap();
        for (config, spec) in CONFIGS {
            let model = spec(81).param_specs();
            let report = plan_loading(&model, &checkpoint(&fixture(config, 81)), &patterns);
            let excluded: Vec<&str> = report.excluded.iter().map(|e| e.name.as_str()).collect();
            assert_eq!(excluded, HEAD, "{config}");
            assert_eq!(report.loaded.len(), model.len() - 4, "{config}");
            assert!(report.missing.is_empty() && report.shape_mismatch.is_empty());
            assert!(report.unused.is_empty(), "{config}: {:?}", report.unused);
        }
    }

    /// A COCO (81-class) checkpoint into a VOC-sized (21-class) model
    /// without patterns: only the four head tensors differ, by shape.
    #[test]
    fn a_coco_checkpoint_mismatches_a_voc_model_only_in_the_head() {
        let nothing = ExcludePatterns::new(&[]).unwrap();
        for (config, spec) in CONFIGS {
            let model = spec(21).param_specs();
            let report = plan_loading(&model, &checkpoint(&fixture(config, 81)), &nothing);
            let mismatched: Vec<(&str, &[usize], &[usize])> = report
                .shape_mismatch
                .iter()
                .map(|m| {
                    (
                        m.name.as_str(),
                        m.model_shape.as_slice(),
                        m.checkpoint_shape.as_slice(),
                    )
                })
                .collect();
            let in_features = spec(21).roi_head.out_features();
            assert_eq!(
                mismatched,
                [
                    (HEAD[0], &[in_features, 21][..], &[in_features, 81][..]),
                    (HEAD[1], &[21][..], &[81][..]),
                    (HEAD[2], &[in_features, 84][..], &[in_features, 324][..]),
                    (HEAD[3], &[84][..], &[324][..]),
                ],
                "{config}"
            );
            assert_eq!(report.loaded.len(), model.len() - 4, "{config}");
            assert!(report.missing.is_empty() && report.unused.is_empty());
        }
    }

    /// The small models keep the full models' names (a subset of them), in
    /// the same order, with far fewer values.
    #[test]
    fn small_models_keep_the_names() {
        let pairs = [
            (FasterRcnnSpec::small_c4(5), FasterRcnnSpec::r50_c4(5)),
            (FasterRcnnSpec::small_fpn(5), FasterRcnnSpec::r50_fpn(5)),
        ];
        for (small, full) in pairs {
            let full = full.param_specs();
            let small = small.param_specs();
            let mut rest = full.iter().map(|p| &p.name);
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
        let fpn = FasterRcnnSpec::small_fpn(5);
        let fc6 = fpn.roi_head.fc_layers()[0].clone();
        assert_eq!((fc6.inputs, fc6.outputs), (16 * 7 * 7, 32));
        let c4 = FasterRcnnSpec::small_c4(5);
        assert_eq!(c4.rpn.channels, 128);
        assert_eq!(c4.roi_head.conv_units()[0].in_channels, 128);
        assert_eq!(c4.bbox_head().in_features, 256);
    }

    /// What each parameter's `ParamAttr` declares, as the optimizer will
    /// read it: frozen norms, learning rate 2 and no decay on head biases,
    /// the optimizer's decay on weights.
    #[test]
    fn attributes_follow_paddledetection() {
        let attrs = |spec: FasterRcnnSpec| {
            spec.params()
                .into_iter()
                .map(|p| (p.spec.name, (p.learning_rate, p.weight_decay)))
                .collect::<std::collections::HashMap<_, _>>()
        };
        let c4 = attrs(FasterRcnnSpec::r50_c4(81));
        assert_eq!(c4["res2a_branch2a_weights"], (1.0, None));
        assert_eq!(c4["bn5c_branch2c_scale"], (0.0, Some(0.0)));
        assert_eq!(c4["conv_rpn_b"], (2.0, Some(0.0)));
        assert_eq!(c4["cls_score_w"], (1.0, None));
        assert_eq!(c4["bbox_pred_b"], (2.0, Some(0.0)));
        let fpn = attrs(FasterRcnnSpec::r50_fpn(81));
        assert_eq!(fpn["bn_conv1_offset"], (0.0, Some(0.0)));
        assert_eq!(fpn["fpn_res2_sum_b"], (2.0, Some(0.0)));
        assert_eq!(fpn["fc6_w"], (1.0, None));
        assert_eq!(fpn["fc7_b"], (2.0, Some(0.0)));
        // freeze_at 2: the stem and res2 of the backbone.
        let spec = FasterRcnnSpec::r50_fpn(81);
        let frozen = &spec.backbone.units()[spec.backbone.frozen_units() - 1];
        assert_eq!(frozen.prefix, "res2c_branch2c");
    }
}
