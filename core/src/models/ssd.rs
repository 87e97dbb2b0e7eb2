//! SSD as PaddleDetection's `SSD` architecture builds it for
//! `configs/ssd/ssd_mobilenet_v1_voc.yml`: MobileNetV1 with four extra
//! blocks (`conv7_1` ... `conv7_4`, each a 1x1 then a stride-2 3x3 conv with
//! batch norm and ReLU6), and `multi_box_head`'s two convs per feature
//! level, one for the box offsets and one for the class scores.
//!
//! The head convs are built without names, so Paddle names their parameters
//! after its unique-name counter of `conv2d` layers: `conv2d_N.w_0` and
//! `conv2d_N.b_0`, where N counts every non-depthwise conv built before it
//! without a name of its own (the backbone's `_conv_norm` passes none to the
//! layer, only to its parameters; depthwise convs count as
//! `depthwise_conv2d`). The seed guide's `^conv2d_` exclusion pattern relies
//! on exactly these names.

use super::conv_unit::{Activation, ConvUnitSpec, NameStyle, Norm, ParamAttr, WeightInit};
use super::mobilenet_v1::MobileNetV1Spec;
use crate::params::ParamSpec;
use crate::ssd::PriorBoxLevel;

/// `extra_block_filters` of the MobileNet-SSD configs: (1x1 width, 3x3 width).
pub const MOBILENET_EXTRA_BLOCKS: [(usize, usize); 4] =
    [(256, 512), (128, 256), (128, 256), (64, 128)];

#[derive(Debug, Clone, PartialEq)]
pub struct SsdSpec {
    pub backbone: MobileNetV1Spec,
    pub extra_blocks: Vec<(usize, usize)>,
    /// Classes including the background (label 0).
    pub num_classes: usize,
    /// One per feature level, in the head's order.
    pub priors: Vec<PriorBoxLevel>,
    /// The head convs' square kernel (`kernel_size`; padding `kernel / 2`).
    pub head_kernel: usize,
    /// MobileNet's `conv_learning_rate`: the learning-rate factor of every
    /// backbone and extra-block conv weight (0.1 in the VOC config).
    pub conv_learning_rate: f32,
}

impl SsdSpec {
    /// `ssd_mobilenet_v1_voc.yml`'s model (`MultiBoxHead` with explicit
    /// sizes for a 300x300 input) at any class count.
    pub fn mobilenet_v1(num_classes: usize) -> SsdSpec {
        let min_sizes = [60.0, 105.0, 150.0, 195.0, 240.0, 285.0];
        let max_sizes: [&[f32]; 6] = [&[], &[150.0], &[195.0], &[240.0], &[285.0], &[300.0]];
        let priors = (0..6)
            .map(|level| PriorBoxLevel {
                min_sizes: vec![min_sizes[level]],
                max_sizes: max_sizes[level].to_vec(),
                aspect_ratios: if level == 0 {
                    vec![2.0]
                } else {
                    vec![2.0, 3.0]
                },
                flip: true,
                clip: false,
                step: [0.0, 0.0],
                offset: 0.5,
                min_max_order: false,
            })
            .collect();
        SsdSpec {
            backbone: MobileNetV1Spec { scale: 1.0 },
            extra_blocks: MOBILENET_EXTRA_BLOCKS.to_vec(),
            num_classes,
            priors,
            head_kernel: 1,
            conv_learning_rate: 0.1,
        }
    }

    /// The small model for tests: MobileNetV1 at a quarter width and extra
    /// blocks a quarter as wide, with the same names and priors as
    /// `mobilenet_v1`.
    pub fn small(num_classes: usize) -> SsdSpec {
        SsdSpec {
            backbone: MobileNetV1Spec { scale: 0.25 },
            extra_blocks: MOBILENET_EXTRA_BLOCKS
                .iter()
                .map(|&(a, b)| (a / 4, b / 4))
                .collect(),
            ..SsdSpec::mobilenet_v1(num_classes)
        }
    }

    /// The backbone's units: MobileNetV1's, then the extra blocks'.
    pub fn backbone_units(&self) -> Vec<ConvUnitSpec> {
        let mut units = self.backbone.units();
        let mut channels = units.last().map_or(0, |u| u.out_channels);
        for (k, &(first, second)) in self.extra_blocks.iter().enumerate() {
            let name = format!("conv7_{}", k + 1);
            units.push(extra_unit(format!("{name}_extra1"), channels, first, 1, 1));
            units.push(extra_unit(format!("{name}_extra2"), first, second, 3, 2));
            channels = second;
        }
        for unit in &mut units {
            unit.weight.learning_rate = self.conv_learning_rate;
        }
        units
    }

    /// Indices into `backbone_units()` of the head's feature levels:
    /// `conv5_5` (stride 16), `conv6` (stride 32), then each extra block.
    pub fn feature_units(&self) -> Vec<usize> {
        let units = self.backbone.units();
        let conv5_5 = units
            .iter()
            .position(|u| u.prefix == "conv5_5_sep")
            .expect("MobileNetV1 has conv5_5");
        let mut features = vec![conv5_5, units.len() - 1];
        features.extend((0..self.extra_blocks.len()).map(|k| units.len() + 2 * k + 1));
        features
    }

    /// The head's convs, level by level: offsets then scores.
    pub fn head_units(&self) -> Vec<ConvUnitSpec> {
        let backbone = self.backbone_units();
        // Paddle's `conv2d` counter after the backbone: its unnamed
        // non-depthwise convs.
        let first = backbone.iter().filter(|u| u.groups == 1).count();
        let mut units = Vec::new();
        for (level, (&feature, priors)) in self.feature_units().iter().zip(&self.priors).enumerate()
        {
            let channels = backbone[feature].out_channels;
            let per_cell = priors.priors_per_cell();
            for (k, outputs) in [per_cell * 4, per_cell * self.num_classes]
                .into_iter()
                .enumerate()
            {
                units.push(ConvUnitSpec {
                    prefix: format!("conv2d_{}", first + 2 * level + k),
                    style: NameStyle::Generated,
                    in_channels: channels,
                    out_channels: outputs,
                    kernel: self.head_kernel,
                    stride: 1,
                    groups: 1,
                    norm: Norm::Bias(ParamAttr::DEFAULT),
                    activation: Activation::Identity,
                    init: WeightInit::ConvDefaultNormal,
                    weight: ParamAttr::DEFAULT,
                });
            }
        }
        units
    }

    /// Every parameter's name and shape in Paddle's creation order.
    pub fn param_specs(&self) -> Vec<ParamSpec> {
        self.backbone_units()
            .iter()
            .chain(&self.head_units())
            .flat_map(|u| u.params())
            .map(|p| p.spec)
            .collect()
    }
}

/// One conv of an extra block: batch norm and ReLU6, MobileNet's names,
/// initialiser and (zero) decay.
fn extra_unit(
    prefix: String,
    cin: usize,
    cout: usize,
    kernel: usize,
    stride: usize,
) -> ConvUnitSpec {
    ConvUnitSpec {
        prefix,
        style: NameStyle::Underscored,
        in_channels: cin,
        out_channels: cout,
        kernel,
        stride,
        groups: 1,
        norm: Norm::BatchNorm(ParamAttr::NO_DECAY),
        activation: Activation::Relu6,
        init: WeightInit::MsraUniform,
        weight: ParamAttr::NO_DECAY,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(classes: usize) -> Vec<ParamSpec> {
        crate::fixtures::param_specs(&format!("ssd/ssd_mobilenet_v1_voc.{classes}.params.json"))
    }

    /// The parameter list PaddleDetection's own code builds for
    /// ssd_mobilenet_v1_voc (`core/tests/fixtures/ssd/make_fixtures.py`), at
    /// its 21 classes and at 5: names, shapes and order.
    #[test]
    fn parameters_equal_paddledetections() {
        for classes in [21, 5] {
            let ours = SsdSpec::mobilenet_v1(classes).param_specs();
            assert_eq!(ours, fixture(classes), "{classes} classes");
        }
    }

    /// The seed guide's pattern excludes exactly the 24 head tensors.
    #[test]
    fn the_head_is_exactly_what_conv2d_names() {
        let spec = SsdSpec::mobilenet_v1(21);
        let head: Vec<String> = spec
            .head_units()
            .iter()
            .flat_map(|u| u.params())
            .map(|p| p.spec.name)
            .collect();
        assert_eq!(head.len(), 24);
        assert_eq!(head[0], "conv2d_22.w_0");
        assert_eq!(head[23], "conv2d_33.b_0");
        let named_conv2d = spec
            .param_specs()
            .iter()
            .filter(|p| p.name.starts_with("conv2d_"))
            .count();
        assert_eq!(named_conv2d, 24);
    }

    #[test]
    fn features_are_conv5_5_conv6_and_the_extra_blocks() {
        let spec = SsdSpec::mobilenet_v1(21);
        let units = spec.backbone_units();
        let names: Vec<&str> = spec
            .feature_units()
            .iter()
            .map(|&i| units[i].prefix.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "conv5_5_sep",
                "conv6_sep",
                "conv7_1_extra2",
                "conv7_2_extra2",
                "conv7_3_extra2",
                "conv7_4_extra2"
            ]
        );
        let channels: Vec<usize> = spec
            .feature_units()
            .iter()
            .map(|&i| units[i].out_channels)
            .collect();
        assert_eq!(channels, [512, 1024, 512, 256, 256, 128]);
    }
}
