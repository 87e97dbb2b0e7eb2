//! The region proposal head as PaddleDetection 0.x builds it
//! (`ppdet/modeling/anchor_heads/rpn_head.py`): a 3x3 conv with ReLU
//! (`conv_rpn`, as wide as its input), then two 1x1 convs, the objectness
//! logits (`rpn_cls_logits`, one per anchor: `num_classes` is 1) and the box
//! deltas (`rpn_bbox_pred`, four per anchor). Every weight is drawn from
//! Normal(0, 0.01); every bias has learning rate 2 and no decay.
//!
//! `RPNHead` (C4) runs once on the backbone's last feature with
//! `len(anchor_sizes) * len(aspect_ratios)` anchors per cell. `FPNRPNHead`
//! runs on every pyramid level with one set of parameters, named after the
//! lowest level (`conv_rpn_fpn2_w`, ...), and `len(aspect_ratios)` anchors
//! per cell of size `anchor_start_size * 2^(level - min_level)` and stride
//! `2^level`.

use super::conv_unit::{Activation, ConvUnitSpec, NameStyle, Norm, ParamAttr, WeightInit};

/// Paddle's `anchor_generator` settings (`AnchorGenerator`).
#[derive(Debug, Clone, PartialEq)]
pub struct AnchorGeneratorSpec {
    pub anchor_sizes: Vec<f32>,
    pub aspect_ratios: Vec<f32>,
    /// Pixels between anchor centres (x, y).
    pub stride: [f32; 2],
    pub variance: [f32; 4],
}

impl AnchorGeneratorSpec {
    /// Both configs' generator (and Paddle's defaults): sizes 32..512,
    /// ratios 0.5, 1, 2, stride 16, variance 1.
    pub fn faster_rcnn() -> AnchorGeneratorSpec {
        AnchorGeneratorSpec {
            anchor_sizes: vec![32.0, 64.0, 128.0, 256.0, 512.0],
            aspect_ratios: vec![0.5, 1.0, 2.0],
            stride: [16.0, 16.0],
            variance: [1.0; 4],
        }
    }
}

/// `FPNRPNHead`'s levels.
#[derive(Debug, Clone, PartialEq)]
pub struct RpnLevels {
    pub anchor_start_size: f32,
    pub min_level: usize,
    pub max_level: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RpnHeadSpec {
    /// Channels in, and of `conv_rpn` out.
    pub channels: usize,
    pub anchors: AnchorGeneratorSpec,
    /// None: `RPNHead` on one feature; Some: `FPNRPNHead`.
    pub levels: Option<RpnLevels>,
}

impl RpnHeadSpec {
    pub fn anchors_per_cell(&self) -> usize {
        let ratios = self.anchors.aspect_ratios.len();
        match self.levels {
            None => self.anchors.anchor_sizes.len() * ratios,
            Some(_) => ratios,
        }
    }

    /// The anchors of pyramid level `level` (FPN); the generator itself
    /// without levels.
    pub fn level_anchors(&self, level: usize) -> AnchorGeneratorSpec {
        match &self.levels {
            None => self.anchors.clone(),
            Some(l) => {
                let step = (1u64 << level) as f32;
                AnchorGeneratorSpec {
                    anchor_sizes: vec![
                        l.anchor_start_size * (1u64 << (level - l.min_level)) as f32,
                    ],
                    stride: [step, step],
                    ..self.anchors.clone()
                }
            }
        }
    }

    fn conv(&self, name: &str, cout: usize, kernel: usize, act: Activation) -> ConvUnitSpec {
        let suffix = match &self.levels {
            None => String::new(),
            Some(l) => format!("_fpn{}", l.min_level),
        };
        ConvUnitSpec {
            prefix: format!("{name}{suffix}"),
            style: NameStyle::Suffixed,
            in_channels: self.channels,
            out_channels: cout,
            kernel,
            stride: 1,
            padding: None,
            dilation: 1,
            groups: 1,
            norm: Norm::Bias(ParamAttr::DETECTRON_BIAS),
            activation: act,
            init: WeightInit::Normal { std: 0.01 },
            weight: ParamAttr::DEFAULT,
        }
    }

    /// `conv_rpn`, `rpn_cls_logits`, `rpn_bbox_pred`, in creation order.
    pub fn units(&self) -> Vec<ConvUnitSpec> {
        let a = self.anchors_per_cell();
        vec![
            self.conv("conv_rpn", self.channels, 3, Activation::Relu),
            self.conv("rpn_cls_logits", a, 1, Activation::Identity),
            self.conv("rpn_bbox_pred", 4 * a, 1, Activation::Identity),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shapes(spec: &RpnHeadSpec) -> Vec<(String, Vec<usize>)> {
        spec.units()
            .iter()
            .flat_map(|u| u.params())
            .map(|p| (p.spec.name, p.spec.shape))
            .collect()
    }

    #[test]
    fn c4_head_has_fifteen_anchors_per_cell() {
        let spec = RpnHeadSpec {
            channels: 1024,
            anchors: AnchorGeneratorSpec::faster_rcnn(),
            levels: None,
        };
        let got = shapes(&spec);
        let want: Vec<(String, Vec<usize>)> = [
            ("conv_rpn_w", vec![1024, 1024, 3, 3]),
            ("conv_rpn_b", vec![1024]),
            ("rpn_cls_logits_w", vec![15, 1024, 1, 1]),
            ("rpn_cls_logits_b", vec![15]),
            ("rpn_bbox_pred_w", vec![60, 1024, 1, 1]),
            ("rpn_bbox_pred_b", vec![60]),
        ]
        .into_iter()
        .map(|(n, s)| (n.to_string(), s))
        .collect();
        assert_eq!(got, want);
        assert_eq!(spec.level_anchors(4), spec.anchors);
        let units = spec.units();
        assert_eq!(units[0].init, WeightInit::Normal { std: 0.01 });
        assert_eq!(units[0].activation, Activation::Relu);
    }

    #[test]
    fn fpn_head_is_shared_and_named_after_the_lowest_level() {
        let spec = RpnHeadSpec {
            channels: 256,
            anchors: AnchorGeneratorSpec::faster_rcnn(),
            levels: Some(RpnLevels {
                anchor_start_size: 32.0,
                min_level: 2,
                max_level: 6,
            }),
        };
        let got = shapes(&spec);
        assert_eq!(
            got[0],
            ("conv_rpn_fpn2_w".to_string(), vec![256, 256, 3, 3])
        );
        assert_eq!(
            got[2],
            ("rpn_cls_logits_fpn2_w".to_string(), vec![3, 256, 1, 1])
        );
        assert_eq!(got[5], ("rpn_bbox_pred_fpn2_b".to_string(), vec![12]));
        let p6 = spec.level_anchors(6);
        assert_eq!(p6.anchor_sizes, [512.0]);
        assert_eq!(p6.stride, [64.0, 64.0]);
        assert_eq!(spec.level_anchors(2).anchor_sizes, [32.0]);
    }
}
