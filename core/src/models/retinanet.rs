//! RetinaNet as PaddleDetection 0.x's `RetinaNet` architecture builds it for
//! `configs/retinanet_r50_fpn_1x.yml`: ResNet50 res3..res5 (affine channel,
//! `freeze_at: 2`), `FPN` P3..P7 with P6 and P7 by extra convs, and
//! `RetinaHead` on every level; the parts and their parameters in Paddle's
//! creation order, which is the checkpoint's.

use super::conv_unit::{ConvUnitSpec, UnitParam};
use super::faster_rcnn::FasterRcnnSpec;
use super::fpn::FpnSpec;
use super::resnet::{NormType, ResNetSpec};
use super::retina_head::RetinaHeadSpec;
use crate::params::ParamSpec;

#[derive(Debug, Clone, PartialEq)]
pub struct RetinaNetSpec {
    pub backbone: ResNetSpec,
    pub fpn: FpnSpec,
    pub head: RetinaHeadSpec,
    /// Classes including the background (label 0), as the YAML counts them.
    pub num_classes: usize,
}

impl RetinaNetSpec {
    /// `retinanet_r50_fpn_1x.yml` at any class count.
    pub fn r50_fpn(num_classes: usize) -> RetinaNetSpec {
        RetinaNetSpec {
            backbone: ResNetSpec {
                feature_maps: vec![3, 4, 5],
                ..ResNetSpec::new(50).expect("ResNet50")
            },
            fpn: FpnSpec::r50_retinanet(),
            head: RetinaHeadSpec::r50_fpn(num_classes),
            num_classes,
        }
    }

    /// The model for tests and demos: `r50_fpn`'s names on Faster R-CNN's
    /// small ResNet (affine channel, res3..res5), a 16-channel pyramid and
    /// 32-wide subnets.
    pub fn small(num_classes: usize) -> RetinaNetSpec {
        let fpn = FpnSpec {
            num_chan: 16,
            ..FpnSpec::r50_retinanet()
        };
        RetinaNetSpec {
            backbone: FasterRcnnSpec::small_resnet(NormType::AffineChannel, vec![3, 4, 5]),
            head: RetinaHeadSpec {
                in_channels: fpn.num_chan,
                num_chan: 32,
                ..RetinaHeadSpec::r50_fpn(num_classes)
            },
            fpn,
            num_classes,
        }
    }

    /// The FPN's convs on the backbone's features.
    pub fn fpn_units(&self) -> Vec<ConvUnitSpec> {
        let body: Vec<(usize, usize)> = self
            .backbone
            .feature_maps
            .iter()
            .copied()
            .zip(self.backbone.feature_channels())
            .collect();
        self.fpn.units(&body)
    }

    /// Every conv unit in the detector's `ConvNet` order: backbone, FPN,
    /// head (class subnet, then box subnet).
    pub fn units(&self) -> Vec<ConvUnitSpec> {
        let mut units = self.backbone.units();
        units.extend(self.fpn_units());
        units.extend(self.head.units());
        units
    }

    /// Every parameter with its role and attributes, in Paddle's creation
    /// order.
    pub fn params(&self) -> Vec<UnitParam> {
        self.units().iter().flat_map(|u| u.params()).collect()
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

    fn fixture(classes: usize) -> Vec<ParamSpec> {
        crate::fixtures::param_specs(&format!(
            "retinanet/retinanet_r50_fpn_1x.{classes}.params.json"
        ))
    }

    /// The parameter lists PaddleDetection's own code builds for
    /// `retinanet_r50_fpn_1x.yml` (`core/tests/fixtures/retinanet/param_list.py`)
    /// at its 81 classes and at 21: names, shapes and order.
    #[test]
    fn parameters_equal_paddledetections() {
        for classes in [81, 21] {
            let ours = RetinaNetSpec::r50_fpn(classes).param_specs();
            let theirs = fixture(classes);
            assert_eq!(ours.len(), theirs.len(), "{classes}");
            for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
                assert_eq!(a, b, "at {classes} classes, parameter {i}");
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

    const CLS_PRED: [&str; 2] = ["retnet_cls_pred_fpn3_w", "retnet_cls_pred_fpn3_b"];

    /// The preset `retnet_cls_pred_fpn` excludes exactly the class
    /// prediction's two tensors and loads the rest of a checkpoint of the
    /// same model; a COCO checkpoint into a 21-class model without patterns
    /// mismatches in those two only, by shape.
    #[test]
    fn only_the_class_prediction_depends_on_the_classes() {
        let patterns = ExcludePatterns::new(&["retnet_cls_pred_fpn".into()]).unwrap();
        let model = RetinaNetSpec::r50_fpn(81).param_specs();
        let report = plan_loading(&model, &checkpoint(&fixture(81)), &patterns);
        let excluded: Vec<&str> = report.excluded.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(excluded, CLS_PRED);
        assert_eq!(report.loaded.len(), model.len() - 2);
        assert!(report.missing.is_empty() && report.unused.is_empty());
        assert!(report.shape_mismatch.is_empty());

        let nothing = ExcludePatterns::new(&[]).unwrap();
        let voc = RetinaNetSpec::r50_fpn(21).param_specs();
        let report = plan_loading(&voc, &checkpoint(&fixture(81)), &nothing);
        let mismatched: Vec<(&str, &[usize], &[usize])> = report
            .shape_mismatch
            .iter()
            .map(|m| {
                let (a, b) = (m.model_shape.as_slice(), m.checkpoint_shape.as_slice());
                (m.name.as_str(), a, b)
            })
            .collect();
        assert_eq!(
            mismatched,
            [
                (CLS_PRED[0], &[180, 256, 3, 3][..], &[720, 256, 3, 3][..]),
                (CLS_PRED[1], &[180][..], &[720][..]),
            ]
        );
        assert_eq!(report.loaded.len(), voc.len() - 2);
        assert!(report.missing.is_empty() && report.unused.is_empty());
    }

    /// The small model keeps the full model's names (all of them but the
    /// blocks it does not have), in the same order, with far fewer values.
    #[test]
    fn the_small_model_keeps_the_names() {
        let full = RetinaNetSpec::r50_fpn(5).param_specs();
        let small = RetinaNetSpec::small(5).param_specs();
        let mut rest = full.iter().map(|p| &p.name);
        for p in &small {
            assert!(
                rest.any(|n| *n == p.name),
                "{} out of order or unknown",
                p.name
            );
        }
        // Every name past the backbone is there.
        let head: Vec<&str> = full
            .iter()
            .map(|p| p.name.as_str())
            .filter(|n| n.starts_with("fpn_") || n.starts_with("retnet_"))
            .collect();
        let small_head: Vec<&str> = small
            .iter()
            .map(|p| p.name.as_str())
            .filter(|n| n.starts_with("fpn_") || n.starts_with("retnet_"))
            .collect();
        assert_eq!(head, small_head);
        let values = |list: &[ParamSpec]| list.iter().map(|p| p.numel()).sum::<usize>();
        assert!(values(&small) * 100 < values(&full), "{}", values(&small));
        let spec = RetinaNetSpec::small(5);
        assert_eq!(spec.head.in_channels, spec.fpn.num_chan);
        assert_eq!(spec.fpn_units()[6].in_channels, 256, "fpn_6 on res5");
    }

    /// What each parameter's `ParamAttr` declares: the frozen affine
    /// channels, learning rate 2 and no decay on the pyramid's and head's
    /// biases, the optimizer's decay on weights; `freeze_at: 2`.
    #[test]
    fn attributes_follow_paddledetection() {
        let spec = RetinaNetSpec::r50_fpn(81);
        let attrs: std::collections::HashMap<String, (f32, Option<f32>)> = spec
            .params()
            .into_iter()
            .map(|p| (p.spec.name, (p.learning_rate, p.weight_decay)))
            .collect();
        assert_eq!(attrs["bn_conv1_scale"], (0.0, Some(0.0)));
        assert_eq!(attrs["res3a_branch2a_weights"], (1.0, None));
        assert_eq!(attrs["fpn_6_b"], (2.0, Some(0.0)));
        assert_eq!(attrs["fpn_7_w"], (1.0, None));
        assert_eq!(attrs["retnet_cls_pred_fpn3_b"], (2.0, Some(0.0)));
        assert_eq!(attrs["retnet_bbox_conv_n3_fpn3_w"], (1.0, None));
        let frozen = &spec.backbone.units()[spec.backbone.frozen_units() - 1];
        assert_eq!(frozen.prefix, "res2c_branch2c");
    }
}
