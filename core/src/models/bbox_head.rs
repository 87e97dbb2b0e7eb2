//! The second stage of Faster R-CNN as PaddleDetection 0.x builds it
//! (`ppdet/modeling/roi_heads/bbox_head.py`): a head on each RoI's
//! features, then `BBoxHead`'s two fully connected outputs.
//!
//! - `ResNetC5` (C4 model): res5 on the 14x14 RoI features, then a global
//!   average pool; `TwoFCHead` (FPN model): the 7x7 RoI features flattened
//!   through `fc6` and `fc7` (`mlp_dim` wide, ReLU). `fc6` draws from
//!   `Xavier(fan_out=C*H*W)`, `fc7` from `Xavier()`.
//! - `cls_score` (`num_classes` logits, Normal(0, 0.01)) and `bbox_pred`
//!   (four deltas per class, Normal(0, 0.001)), no activation. These two
//!   depend on the class count: the transfer-learning guide excludes them.
//!   Cascade R-CNN's `bbox_pred` is class-agnostic (`cls_agnostic_bbox_reg`
//!   2): four deltas for the background and four for any object.
//!
//! Every fully connected bias has learning rate 2 and no decay.

use super::conv_unit::{Activation, ConvUnitSpec, UnitParam, WeightInit};
use super::fc::FcSpec;
use super::resnet::ResNetSpec;

/// `TwoFCHead`.
#[derive(Debug, Clone, PartialEq)]
pub struct TwoFcHeadSpec {
    /// Values of one RoI's features: channels x resolution x resolution.
    pub in_features: usize,
    pub mlp_dim: usize,
}

impl TwoFcHeadSpec {
    pub fn layers(&self) -> Vec<FcSpec> {
        vec![
            FcSpec::detectron(
                "fc6",
                self.in_features,
                self.mlp_dim,
                Activation::Relu,
                WeightInit::XavierUniform {
                    fan_in: None,
                    fan_out: Some(self.in_features),
                },
            ),
            FcSpec::detectron(
                "fc7",
                self.mlp_dim,
                self.mlp_dim,
                Activation::Relu,
                WeightInit::XavierUniform {
                    fan_in: None,
                    fan_out: None,
                },
            ),
        ]
    }
}

/// `BBoxHead.head`: what runs on each RoI's features.
#[derive(Debug, Clone, PartialEq)]
pub enum RoiHeadSpec {
    /// `ResNetC5`: the severed res5 (see `ResNetSpec::head_units`).
    ResNetC5(ResNetSpec),
    TwoFc(TwoFcHeadSpec),
}

impl RoiHeadSpec {
    /// The head's convs (ResNetC5) in creation order.
    pub fn conv_units(&self) -> Vec<ConvUnitSpec> {
        match self {
            RoiHeadSpec::ResNetC5(resnet) => resnet.head_units(),
            RoiHeadSpec::TwoFc(_) => Vec::new(),
        }
    }

    /// The head's fully connected layers (TwoFC) in creation order.
    pub fn fc_layers(&self) -> Vec<FcSpec> {
        match self {
            RoiHeadSpec::ResNetC5(_) => Vec::new(),
            RoiHeadSpec::TwoFc(two_fc) => two_fc.layers(),
        }
    }

    /// Features per RoI into `cls_score` and `bbox_pred`: res5's channels
    /// after the average pool, or `mlp_dim`.
    pub fn out_features(&self) -> usize {
        match self {
            RoiHeadSpec::ResNetC5(resnet) => *resnet
                .feature_channels()
                .last()
                .expect("ResNetC5 has feature_maps [5]"),
            RoiHeadSpec::TwoFc(two_fc) => two_fc.mlp_dim,
        }
    }

    pub fn params(&self) -> Vec<UnitParam> {
        let convs = self.conv_units().into_iter().flat_map(|u| u.params());
        convs
            .chain(self.fc_layers().into_iter().flat_map(|f| f.params()))
            .collect()
    }
}

/// `BBoxHead`'s outputs.
#[derive(Debug, Clone, PartialEq)]
pub struct BBoxHeadSpec {
    pub in_features: usize,
    /// Classes including the background (label 0).
    pub num_classes: usize,
    /// The classes `bbox_pred` has four deltas for: `num_classes`, or
    /// [`CLASS_AGNOSTIC_BOXES`].
    pub box_classes: usize,
}

/// Cascade R-CNN's `cls_agnostic_bbox_reg`: `bbox_pred` regresses the
/// background's box and one box for whatever object (columns 4..8), not
/// one per class.
pub const CLASS_AGNOSTIC_BOXES: usize = 2;

impl BBoxHeadSpec {
    /// `cls_score`, then `bbox_pred`.
    pub fn layers(&self) -> Vec<FcSpec> {
        let layer = |name, outputs, std| {
            FcSpec::detectron(
                name,
                self.in_features,
                outputs,
                Activation::Identity,
                WeightInit::Normal { std },
            )
        };
        vec![
            layer("cls_score", self.num_classes, 0.01),
            layer("bbox_pred", 4 * self.box_classes, 0.001),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_fc_head_and_outputs() {
        let head = RoiHeadSpec::TwoFc(TwoFcHeadSpec {
            in_features: 256 * 7 * 7,
            mlp_dim: 1024,
        });
        assert!(head.conv_units().is_empty());
        let fc = head.fc_layers();
        assert_eq!(
            fc[0].init,
            WeightInit::XavierUniform {
                fan_in: None,
                fan_out: Some(12544)
            }
        );
        let outputs = BBoxHeadSpec {
            in_features: head.out_features(),
            num_classes: 21,
            box_classes: 21,
        };
        let got: Vec<(String, Vec<usize>)> = head
            .params()
            .into_iter()
            .chain(outputs.layers().iter().flat_map(|f| f.params()))
            .map(|p| (p.spec.name, p.spec.shape))
            .collect();
        let want: Vec<(String, Vec<usize>)> = [
            ("fc6_w", vec![12544, 1024]),
            ("fc6_b", vec![1024]),
            ("fc7_w", vec![1024, 1024]),
            ("fc7_b", vec![1024]),
            ("cls_score_w", vec![1024, 21]),
            ("cls_score_b", vec![21]),
            ("bbox_pred_w", vec![1024, 84]),
            ("bbox_pred_b", vec![84]),
        ]
        .into_iter()
        .map(|(n, s)| (n.to_string(), s))
        .collect();
        assert_eq!(got, want);
        assert_eq!(outputs.layers()[1].init, WeightInit::Normal { std: 0.001 });
    }

    #[test]
    fn resnet_c5_head_feeds_2048_features() {
        let c5 = ResNetSpec::new(50).unwrap().c5_head();
        let head = RoiHeadSpec::ResNetC5(c5);
        assert_eq!(head.out_features(), 2048);
        assert!(head.fc_layers().is_empty());
        assert_eq!(head.params()[0].spec.name, "res5a_branch2a_weights");
    }
}
