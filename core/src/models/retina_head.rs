//! RetinaNet's head as PaddleDetection 0.x builds it
//! (`ppdet/modeling/anchor_heads/retina_head.py`): on every pyramid level
//! P3..P7, with one set of parameters named after the lowest level, a class
//! subnet (`retnet_cls_conv_n0..n3_fpn3`, 3x3 convs with ReLU, then
//! `retnet_cls_pred_fpn3`, `A * (num_classes - 1)` logits per cell) and a
//! box subnet of the same shape (`retnet_bbox_conv_*`, `retnet_bbox_pred_fpn3`,
//! `A * 4` deltas per cell). Every weight is drawn from Normal(0, 0.01);
//! every bias has learning rate 2 and no decay, and the class prediction's
//! starts at `-ln((1 - prior_prob) / prior_prob)`, so every anchor first
//! scores `prior_prob` for every class.
//!
//! Level `l`'s anchors: stride `2^l`, `num_scales_per_octave` sizes
//! `2^l * 2^(o / num_scales_per_octave) * base_scale` times the aspect ratios.

use super::conv_unit::{Activation, ConvUnitSpec, NameStyle, Norm, ParamAttr, WeightInit};
use super::rpn_head::AnchorGeneratorSpec;

#[derive(Debug, Clone, PartialEq)]
pub struct RetinaHeadSpec {
    /// Channels of the pyramid's levels (`FPN.num_chan`).
    pub in_channels: usize,
    /// Width of the subnets' convs.
    pub num_chan: usize,
    pub num_convs_per_octave: usize,
    pub min_level: usize,
    pub max_level: usize,
    /// Every anchor's initial score for every class.
    pub prior_prob: f32,
    pub base_scale: f32,
    pub num_scales_per_octave: usize,
    pub aspect_ratios: Vec<f32>,
    pub variance: [f32; 4],
    /// With the background, as the YAML's num_classes (the head predicts num_classes - 1).
    pub num_classes: usize,
}

impl RetinaHeadSpec {
    /// `retinanet_r50_fpn_1x.yml`'s head at any class count.
    pub fn r50_fpn(num_classes: usize) -> Self {
        RetinaHeadSpec {
            in_channels: 256,
            num_chan: 256,
            num_convs_per_octave: 4,
            min_level: 3,
            max_level: 7,
            prior_prob: 0.01,
            base_scale: 4.0,
            num_scales_per_octave: 3,
            aspect_ratios: vec![1.0, 2.0, 0.5],
            variance: [1.0; 4],
            num_classes,
        }
    }

    /// `A`: the anchors of one cell, every scale times every ratio.
    pub fn anchors_per_cell(&self) -> usize {
        self.num_scales_per_octave * self.aspect_ratios.len()
    }

    /// The anchor generator of pyramid level `level`: stride `2^level`,
    /// sizes `stride * 2^(o / n) * base_scale` computed in double precision
    /// as `_anchor_generate` does in Python, then taken as float32 by the
    /// operator's attribute.
    pub fn level_anchors(&self, level: usize) -> AnchorGeneratorSpec {
        let stride = (1u64 << level) as f64;
        let n = self.num_scales_per_octave as f64;
        let anchor_sizes = (0..self.num_scales_per_octave)
            .map(|o| (stride * 2f64.powf(o as f64 / n) * self.base_scale as f64) as f32)
            .collect();
        AnchorGeneratorSpec {
            anchor_sizes,
            aspect_ratios: self.aspect_ratios.clone(),
            stride: [stride as f32; 2],
            variance: self.variance,
        }
    }

    /// The class prediction's initial bias, `-ln((1 - p) / p)`.
    pub fn prior_bias(&self) -> f32 {
        let p = self.prior_prob as f64;
        (-((1.0 - p) / p).ln()) as f32
    }

    fn conv(
        &self,
        name: String,
        (cin, cout): (usize, usize),
        act: Activation,
        bias: ParamAttr,
    ) -> ConvUnitSpec {
        ConvUnitSpec {
            prefix: format!("{name}_fpn{}", self.min_level),
            style: NameStyle::Suffixed,
            in_channels: cin,
            out_channels: cout,
            kernel: 3,
            stride: 1,
            padding: None,
            dilation: 1,
            groups: 1,
            norm: Norm::Bias(bias),
            activation: act,
            init: WeightInit::Normal { std: 0.01 },
            weight: ParamAttr::DEFAULT,
        }
    }

    /// One subnet (`cls` or `bbox`): its tower, then its prediction of
    /// `cout` channels.
    fn subnet(&self, kind: &str, cout: usize, bias: ParamAttr) -> Vec<ConvUnitSpec> {
        let mut units: Vec<ConvUnitSpec> = (0..self.num_convs_per_octave)
            .map(|i| {
                let cin = if i == 0 {
                    self.in_channels
                } else {
                    self.num_chan
                };
                let name = format!("retnet_{kind}_conv_n{i}");
                let bias = ParamAttr::DETECTRON_BIAS;
                self.conv(name, (cin, self.num_chan), Activation::Relu, bias)
            })
            .collect();
        let cin = match self.num_convs_per_octave {
            0 => self.in_channels,
            _ => self.num_chan,
        };
        let name = format!("retnet_{kind}_pred");
        units.push(self.conv(name, (cin, cout), Activation::Identity, bias));
        units
    }

    /// Paddle's creation order: retnet_cls_conv_n0..n{N-1}_fpn{min} (3x3, ReLU, Normal(0,0.01), bias lr 2 no decay),
    /// retnet_cls_pred_fpn{min} (A*(C-1) out, bias Constant(-ln((1-p)/p))), then the same for bbox (A*4 out).
    pub fn units(&self) -> Vec<ConvUnitSpec> {
        let a = self.anchors_per_cell();
        let prior = ParamAttr::DETECTRON_BIAS.with_constant(self.prior_bias());
        let mut units = self.subnet("cls", a * (self.num_classes - 1), prior);
        units.extend(self.subnet("bbox", a * 4, ParamAttr::DETECTRON_BIAS));
        units
    }

    /// Index in `units()` of `retnet_cls_pred`: the class subnet is
    /// `units()[..=cls_pred_index()]`.
    pub fn cls_pred_index(&self) -> usize {
        self.num_convs_per_octave
    }

    /// Index in `units()` of `retnet_bbox_pred`, the last: the box subnet is
    /// `units()[cls_pred_index() + 1..=bbox_pred_index()]`.
    pub fn bbox_pred_index(&self) -> usize {
        2 * self.num_convs_per_octave + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::conv_unit::ParamRole;
    use crate::models::init::{init_param, Rng};

    #[test]
    fn subnets_in_creation_order_named_after_the_lowest_level() {
        let spec = RetinaHeadSpec::r50_fpn(81);
        let units = spec.units();
        let got: Vec<(&str, [usize; 4], Activation)> = units
            .iter()
            .map(|u| (u.prefix.as_str(), u.weight_shape(), u.activation))
            .collect();
        let conv = [256, 256, 3, 3];
        let relu = Activation::Relu;
        assert_eq!(
            got,
            [
                ("retnet_cls_conv_n0_fpn3", conv, relu),
                ("retnet_cls_conv_n1_fpn3", conv, relu),
                ("retnet_cls_conv_n2_fpn3", conv, relu),
                ("retnet_cls_conv_n3_fpn3", conv, relu),
                (
                    "retnet_cls_pred_fpn3",
                    [720, 256, 3, 3],
                    Activation::Identity
                ),
                ("retnet_bbox_conv_n0_fpn3", conv, relu),
                ("retnet_bbox_conv_n1_fpn3", conv, relu),
                ("retnet_bbox_conv_n2_fpn3", conv, relu),
                ("retnet_bbox_conv_n3_fpn3", conv, relu),
                (
                    "retnet_bbox_pred_fpn3",
                    [36, 256, 3, 3],
                    Activation::Identity
                ),
            ]
        );
        assert_eq!(units[spec.cls_pred_index()].prefix, "retnet_cls_pred_fpn3");
        assert_eq!(
            units[spec.bbox_pred_index()].prefix,
            "retnet_bbox_pred_fpn3"
        );
        assert_eq!(spec.bbox_pred_index(), units.len() - 1);
        for u in &units {
            assert_eq!(u.init, WeightInit::Normal { std: 0.01 }, "{}", u.prefix);
            assert_eq!(u.padding(), 1);
            let bias = &u.params()[1];
            assert_eq!((bias.learning_rate, bias.weight_decay), (2.0, Some(0.0)));
        }
    }

    /// The class prediction's bias starts at `-ln(99)` (Paddle's
    /// `Constant(-4.59511985...)` as float32), every other bias at 0.
    #[test]
    fn the_class_bias_starts_at_the_prior() {
        let spec = RetinaHeadSpec::r50_fpn(21);
        assert_eq!(spec.prior_bias(), -4.595_12_f32);
        assert_eq!(spec.prior_bias(), (-(99.0f64).ln()) as f32);
        let units = spec.units();
        let mut rng = Rng::from_state(0);
        for (i, u) in units.iter().enumerate() {
            let mut bias = vec![9.0; u.out_channels];
            init_param(u, ParamRole::ConvBias, &mut bias, &mut rng);
            let want = if i == spec.cls_pred_index() {
                spec.prior_bias()
            } else {
                0.0
            };
            assert!(bias.iter().all(|&b| b == want), "{}", u.prefix);
        }
        assert_eq!(units[spec.cls_pred_index()].out_channels, 9 * 20);
    }

    /// Nine anchors per cell: three sizes an octave apart per level, each
    /// at the three ratios; the sizes as Paddle's float32 attribute holds
    /// them (`anchors.py` prints them).
    #[test]
    fn level_anchors_are_an_octave_of_scales() {
        let spec = RetinaHeadSpec::r50_fpn(81);
        assert_eq!(spec.anchors_per_cell(), 9);
        let p3 = spec.level_anchors(3);
        assert_eq!(p3.stride, [8.0, 8.0]);
        assert_eq!(p3.anchor_sizes, [32.0, 40.317_474, 50.796_833]);
        assert_eq!(p3.aspect_ratios, [1.0, 2.0, 0.5]);
        let p7 = spec.level_anchors(7);
        assert_eq!(p7.stride, [128.0, 128.0]);
        assert_eq!(p7.anchor_sizes, [512.0, 645.079_6, 812.749_3]);
    }
}
