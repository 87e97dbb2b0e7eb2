//! Mask R-CNN's mask branch as PaddleDetection 0.x builds it
//! (`ppdet/modeling/roi_heads/mask_head.py`, `MaskHead` without a norm):
//!
//! - `mask_inter_feat_1..num_convs`: 3x3 convs (`conv_dim` wide, padding
//!   and dilation `dilation`, ReLU), `MSRA(uniform=False, fan_in=conv_dim *
//!   9)` whatever their input width. FPN: 4 of them on the 14x14 RoI
//!   features; C4: none.
//! - `conv5_mask`: a 2x2 stride-2 transposed conv to `conv_dim` channels
//!   with ReLU, doubling the side to `resolution`; `MSRA(uniform=False,
//!   fan_in=C_in * 4)`.
//! - `mask_fcn_logits`: a 1x1 conv to one logit map per class, no
//!   activation; `MSRA(uniform=False, fan_in=num_classes)` (the class
//!   count, as Paddle passes it, not the weight's fan).
//!
//! Every bias has learning rate 2 and no decay, and the parameters are
//! named after their layers with Detectron's `_w`, `_b`. The C4 model has
//! no mask convs of its own before `conv5_mask`: its input is the box
//! head's res5 output (`BBoxHead.get_head_feat`, shared weights).

use super::conv_unit::{
    param_name, Activation, ConvUnitSpec, NameStyle, Norm, ParamAttr, ParamRole, UnitParam,
    WeightFans, WeightInit,
};
use super::init::{init_weight, Rng};
use crate::backend::Backend;
use crate::layers::{ConvTranspose2d, ConvTranspose2dConfig};

/// A transposed conv with a bias and an activation, as
/// `fluid.layers.conv2d_transpose` declares it (no padding, dilation 1,
/// one group: Paddle's defaults, which `conv5_mask` keeps).
#[derive(Debug, Clone, PartialEq)]
pub struct ConvTransposeUnitSpec {
    /// The name prefix `P` (`conv5_mask`).
    pub prefix: String,
    pub style: NameStyle,
    pub in_channels: usize,
    pub out_channels: usize,
    /// Square kernel.
    pub kernel: usize,
    pub stride: usize,
    pub activation: Activation,
    pub init: WeightInit,
    /// The weight's and the bias's own attributes.
    pub weight: ParamAttr,
    pub bias: ParamAttr,
}

impl ConvTransposeUnitSpec {
    /// The layer that runs it.
    pub fn config(&self) -> ConvTranspose2dConfig {
        ConvTranspose2dConfig::new(
            self.in_channels,
            self.out_channels,
            self.kernel,
            self.stride,
        )
        .with_bias()
        .with_activation(self.activation)
    }

    /// The layer with Paddle's initial values drawn from `rng`: the weight
    /// from `init`, the bias its attribute's constant or 0.
    pub fn build<B: Backend>(&self, backend: &B, rng: &mut Rng) -> ConvTranspose2d<B> {
        let mut layer = ConvTranspose2d::new(backend, self.config());
        let [c_in, c_out, k, _] = self.weight_shape();
        // Paddle's fans of a `[c_in, c_out, k, k]` filter: dims 1 and 0
        // times the kernel's area.
        let fans = WeightFans {
            fan_in: c_out * k * k,
            fan_out: c_in * k * k,
            conv_default_elems: c_out * k * k,
        };
        let mut weight = vec![0.0; c_in * c_out * k * k];
        init_weight(self.init, fans, &mut weight, rng);
        layer.weight.upload(backend, &weight);
        let bias = vec![self.bias.constant.unwrap_or(0.0); c_out];
        layer
            .tensor_mut(ParamRole::TransposedBias)
            .upload(backend, &bias);
        layer
    }

    /// Paddle's filter layout `[in_channels, out_channels, k, k]`.
    pub fn weight_shape(&self) -> [usize; 4] {
        self.config().weight_shape()
    }

    /// The weight, then the bias (Paddle's creation order), named as a
    /// conv's in the unit's style.
    pub fn params(&self) -> Vec<UnitParam> {
        vec![
            UnitParam::new(
                param_name(&self.prefix, self.style, ParamRole::TransposedWeight),
                &self.weight_shape(),
                ParamRole::TransposedWeight,
                self.weight,
            ),
            UnitParam::new(
                param_name(&self.prefix, self.style, ParamRole::TransposedBias),
                &[self.out_channels],
                ParamRole::TransposedBias,
                self.bias,
            ),
        ]
    }
}

/// `MaskHead`'s settings (its `norm_type` left None, as in the configs).
#[derive(Debug, Clone, PartialEq)]
pub struct MaskHeadSpec {
    /// Channels of the features the head runs on: the RoI features (FPN) or
    /// the box head's res5 output (C4).
    pub in_channels: usize,
    /// `mask_inter_feat_*` convs before `conv5_mask`.
    pub num_convs: usize,
    pub conv_dim: usize,
    /// Side of the predicted masks (`conv5_mask` doubles its input's).
    pub resolution: usize,
    pub dilation: usize,
    /// Classes including the background: one logit map each.
    pub num_classes: usize,
}

impl MaskHeadSpec {
    /// `mask_rcnn_r50_1x.yml`'s head on res5's `in_channels`: no convs,
    /// 256 wide, 14x14 masks.
    pub fn c4(in_channels: usize, num_classes: usize) -> MaskHeadSpec {
        MaskHeadSpec {
            in_channels,
            num_convs: 0,
            conv_dim: 256,
            resolution: 14,
            dilation: 1,
            num_classes,
        }
    }

    /// `mask_rcnn_r50_fpn_1x.yml`'s head on `in_channels` RoI features:
    /// four convs, 256 wide, 28x28 masks.
    pub fn fpn(in_channels: usize, num_classes: usize) -> MaskHeadSpec {
        MaskHeadSpec {
            in_channels,
            num_convs: 4,
            conv_dim: 256,
            resolution: 28,
            dilation: 1,
            num_classes,
        }
    }

    /// A conv of the head, padded to keep the size: Detectron names, the
    /// heads' bias attributes.
    fn conv(
        prefix: String,
        (in_channels, out_channels): (usize, usize),
        (kernel, dilation): (usize, usize),
        activation: Activation,
        fan_in: usize,
    ) -> ConvUnitSpec {
        ConvUnitSpec {
            prefix,
            style: NameStyle::Suffixed,
            in_channels,
            out_channels,
            kernel,
            stride: 1,
            padding: Some(dilation * (kernel / 2)),
            dilation,
            groups: 1,
            norm: Norm::Bias(ParamAttr::DETECTRON_BIAS),
            activation,
            init: WeightInit::MsraNormal { fan_in },
            weight: ParamAttr::DEFAULT,
        }
    }

    /// `mask_inter_feat_1..num_convs`, in creation order.
    pub fn conv_units(&self) -> Vec<ConvUnitSpec> {
        (1..=self.num_convs)
            .map(|i| {
                let cin = if i == 1 {
                    self.in_channels
                } else {
                    self.conv_dim
                };
                MaskHeadSpec::conv(
                    format!("mask_inter_feat_{i}"),
                    (cin, self.conv_dim),
                    (3, self.dilation),
                    Activation::Relu,
                    self.conv_dim * 9,
                )
            })
            .collect()
    }

    /// `conv5_mask`.
    pub fn upsample(&self) -> ConvTransposeUnitSpec {
        let in_channels = if self.num_convs > 0 {
            self.conv_dim
        } else {
            self.in_channels
        };
        ConvTransposeUnitSpec {
            prefix: "conv5_mask".into(),
            style: NameStyle::Suffixed,
            in_channels,
            out_channels: self.conv_dim,
            kernel: 2,
            stride: 2,
            activation: Activation::Relu,
            init: WeightInit::MsraNormal {
                fan_in: in_channels * 4,
            },
            weight: ParamAttr::DEFAULT,
            bias: ParamAttr::DETECTRON_BIAS,
        }
    }

    /// `mask_fcn_logits`.
    pub fn logits(&self) -> ConvUnitSpec {
        MaskHeadSpec::conv(
            "mask_fcn_logits".into(),
            (self.conv_dim, self.num_classes),
            (1, 1),
            Activation::Identity,
            self.num_classes,
        )
    }

    /// Every parameter in Paddle's creation order: the convs, `conv5_mask`,
    /// `mask_fcn_logits`.
    pub fn params(&self) -> Vec<UnitParam> {
        let convs = self.conv_units().into_iter().flat_map(|u| u.params());
        convs
            .chain(self.upsample().params())
            .chain(self.logits().params())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fpn_head_units_follow_mask_head_py() {
        let head = MaskHeadSpec::fpn(256, 81);
        let convs = head.conv_units();
        assert_eq!(convs.len(), 4);
        let third = &convs[2];
        assert_eq!(
            (third.prefix.as_str(), third.weight_shape()),
            ("mask_inter_feat_3", [256, 256, 3, 3])
        );
        assert_eq!((third.padding(), third.output_size(14)), (1, 14));
        assert_eq!(third.init, WeightInit::MsraNormal { fan_in: 2304 });
        let up = head.upsample();
        assert_eq!(up.weight_shape(), [256, 256, 2, 2]);
        assert_eq!(up.config().output_size(14), Some(head.resolution));
        assert_eq!(up.init, WeightInit::MsraNormal { fan_in: 1024 });
        let logits = head.logits();
        assert_eq!(logits.weight_shape(), [81, 256, 1, 1]);
        assert_eq!((logits.padding(), logits.output_size(28)), (0, 28));
        assert_eq!(logits.init, WeightInit::MsraNormal { fan_in: 81 });
    }

    /// C4: `conv5_mask` reads res5's output directly; 7x7 RoI features
    /// become 14x14 masks.
    #[test]
    fn c4_head_upsamples_res5() {
        let head = MaskHeadSpec::c4(2048, 21);
        assert!(head.conv_units().is_empty());
        let up = head.upsample();
        assert_eq!(up.weight_shape(), [2048, 256, 2, 2]);
        assert_eq!(up.config().output_size(7), Some(head.resolution));
        assert_eq!(up.init, WeightInit::MsraNormal { fan_in: 8192 });
        let params: Vec<(String, f32, Option<f32>)> = head
            .params()
            .into_iter()
            .map(|p| (p.spec.name, p.learning_rate, p.weight_decay))
            .collect();
        assert_eq!(
            params,
            [
                ("conv5_mask_w".to_string(), 1.0, None),
                ("conv5_mask_b".to_string(), 2.0, Some(0.0)),
                ("mask_fcn_logits_w".to_string(), 1.0, None),
                ("mask_fcn_logits_b".to_string(), 2.0, Some(0.0)),
            ]
        );
    }

    /// `dilation` pads the 3x3 convs by itself and keeps their size.
    #[test]
    fn dilation_keeps_the_size() {
        let head = MaskHeadSpec {
            dilation: 2,
            ..MaskHeadSpec::fpn(8, 3)
        };
        let conv = &head.conv_units()[0];
        assert_eq!((conv.padding(), conv.dilation), (2, 2));
        assert_eq!(conv.output_size(14), 14);
        assert_eq!(conv.weight_shape(), [256, 8, 3, 3]);
    }
}
