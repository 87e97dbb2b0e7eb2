//! The feature pyramid as PaddleDetection 0.x's `FPN` builds it
//! (`ppdet/modeling/backbones/fpn.py`) without norms or extra convs, as
//! `faster_rcnn_r50_fpn_1x.yml` does. From the deepest backbone feature
//! (`res5_sum`) down:
//!
//! - `fpn_inner_res5_sum`: a 1x1 conv to `num_chan` channels;
//! - for each shallower feature `resN_sum`: a 1x1 lateral conv
//!   `fpn_inner_resN_sum_lateral` plus the level above upsampled 2x
//!   (nearest);
//! - on each of those a 3x3 conv `fpn_resN_sum`, the pyramid's outputs;
//! - when `max_level - min_level` equals the number of backbone levels, one
//!   more level on top: the deepest output max-pooled with kernel 1,
//!   stride 2 (P6, no parameters).
//!
//! Every conv has a bias (learning rate 2, no decay) and an `Xavier` weight
//! whose `fan_out` is the conv's input channels times its kernel area.

use super::conv_unit::{Activation, ConvUnitSpec, NameStyle, Norm, ParamAttr, WeightInit};

#[derive(Debug, Clone, PartialEq)]
pub struct FpnSpec {
    pub num_chan: usize,
    pub min_level: usize,
    pub max_level: usize,
    /// One per backbone level, deepest first (`[1/32, 1/16, 1/8, 1/4]`).
    pub spatial_scale: Vec<f32>,
}

impl FpnSpec {
    /// `faster_rcnn_r50_fpn_1x.yml`'s FPN over res2..res5.
    pub fn r50_fpn() -> FpnSpec {
        FpnSpec {
            num_chan: 256,
            min_level: 2,
            max_level: 6,
            spatial_scale: vec![1.0 / 32.0, 1.0 / 16.0, 1.0 / 8.0, 1.0 / 4.0],
        }
    }

    /// Whether the pyramid has the max-pooled level on top.
    pub fn has_pooled_top(&self) -> bool {
        self.max_level - self.min_level == self.spatial_scale.len()
    }

    /// The output levels' spatial scales, deepest first (the pooled level's
    /// is half the deepest backbone level's).
    pub fn output_scales(&self) -> Vec<f32> {
        let mut scales = self.spatial_scale.clone();
        if self.has_pooled_top() {
            scales.insert(0, scales[0] * 0.5);
        }
        scales
    }

    fn conv(&self, prefix: String, cin: usize, kernel: usize) -> ConvUnitSpec {
        ConvUnitSpec {
            prefix,
            style: NameStyle::Suffixed,
            in_channels: cin,
            out_channels: self.num_chan,
            kernel,
            stride: 1,
            padding: None,
            dilation: 1,
            groups: 1,
            norm: Norm::Bias(ParamAttr::DETECTRON_BIAS),
            activation: Activation::Identity,
            init: WeightInit::XavierUniform {
                fan_in: None,
                fan_out: Some(cin * kernel * kernel),
            },
            weight: ParamAttr::DEFAULT,
        }
    }

    /// The convs in Paddle's creation order for backbone features `body`:
    /// (stage, channels) in backbone order (res2 first). Inner convs deepest
    /// first, then the outputs deepest first.
    pub fn units(&self, body: &[(usize, usize)]) -> Vec<ConvUnitSpec> {
        let deepest_first: Vec<&(usize, usize)> = body.iter().rev().collect();
        let mut units: Vec<ConvUnitSpec> = deepest_first
            .iter()
            .enumerate()
            .map(|(i, &&(stage, channels))| {
                let lateral = if i == 0 { "" } else { "_lateral" };
                self.conv(format!("fpn_inner_res{stage}_sum{lateral}"), channels, 1)
            })
            .collect();
        units.extend(
            deepest_first
                .iter()
                .map(|&&(stage, _)| self.conv(format!("fpn_res{stage}_sum"), self.num_chan, 3)),
        );
        units
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_shapes_and_initialisers() {
        let fpn = FpnSpec::r50_fpn();
        let units = fpn.units(&[(2, 256), (3, 512), (4, 1024), (5, 2048)]);
        let got: Vec<(&str, [usize; 4])> = units
            .iter()
            .map(|u| (u.prefix.as_str(), u.weight_shape()))
            .collect();
        assert_eq!(
            got,
            [
                ("fpn_inner_res5_sum", [256, 2048, 1, 1]),
                ("fpn_inner_res4_sum_lateral", [256, 1024, 1, 1]),
                ("fpn_inner_res3_sum_lateral", [256, 512, 1, 1]),
                ("fpn_inner_res2_sum_lateral", [256, 256, 1, 1]),
                ("fpn_res5_sum", [256, 256, 3, 3]),
                ("fpn_res4_sum", [256, 256, 3, 3]),
                ("fpn_res3_sum", [256, 256, 3, 3]),
                ("fpn_res2_sum", [256, 256, 3, 3]),
            ]
        );
        assert_eq!(
            units[1].init,
            WeightInit::XavierUniform {
                fan_in: None,
                fan_out: Some(1024)
            }
        );
        assert_eq!(
            units[4].init,
            WeightInit::XavierUniform {
                fan_in: None,
                fan_out: Some(256 * 9)
            }
        );
        let bias = &units[0].params()[1];
        assert_eq!(bias.spec.name, "fpn_inner_res5_sum_b");
        assert_eq!((bias.learning_rate, bias.weight_decay), (2.0, Some(0.0)));
    }

    #[test]
    fn the_pooled_top_level_is_p6() {
        let fpn = FpnSpec::r50_fpn();
        assert!(fpn.has_pooled_top());
        assert_eq!(
            fpn.output_scales(),
            [1.0 / 64.0, 1.0 / 32.0, 1.0 / 16.0, 1.0 / 8.0, 1.0 / 4.0]
        );
        let up_to_p5 = FpnSpec {
            max_level: 5,
            ..FpnSpec::r50_fpn()
        };
        assert!(!up_to_p5.has_pooled_top());
        assert_eq!(up_to_p5.output_scales().len(), 4);
    }
}
