//! SSD as PaddleDetection's `SSD` architecture builds it for
//! `configs/ssd/ssd_mobilenet_v1_voc.yml`: MobileNetV1 with four extra
//! blocks (`conv7_1` ... `conv7_4`, each a 1x1 then a stride-2 3x3 conv with
//! batch norm and ReLU6), and `multi_box_head`'s two convs per feature
//! level, one for the box offsets and one for the class scores; and for
//! `ssd_vgg16_300_voc.yml`: VGG16 with its extra blocks (`vgg`), an L2 norm
//! on `conv4_3` before the head, and 3x3 head convs.
//!
//! The head convs are built without names, so Paddle names their parameters
//! after its unique-name counter of `conv2d` layers: `conv2d_N.w_0` and
//! `conv2d_N.b_0`, where N counts every non-depthwise conv built before it
//! without a name of its own (MobileNet's `_conv_norm` passes none to the
//! layer, only to its parameters; depthwise convs count as
//! `depthwise_conv2d`; VGG's `_conv_layer` names every layer, so its head
//! starts at `conv2d_0`). The seed guide's `^conv2d_` exclusion pattern
//! relies on exactly these names.

use super::conv_unit::{Activation, ConvUnitSpec, NameStyle, Norm, ParamAttr, WeightInit};
use super::mobilenet_v1::MobileNetV1Spec;
use super::network::{param_slots, L2NormSpec};
use super::vgg::{VggPool, VggSpec};
use crate::params::ParamSpec;
use crate::ssd::PriorBoxLevel;

/// `extra_block_filters` of the MobileNet-SSD configs: (1x1 width, 3x3 width).
pub const MOBILENET_EXTRA_BLOCKS: [(usize, usize); 4] =
    [(256, 512), (128, 256), (128, 256), (64, 128)];

/// The network under the head (`SSD.backbone`).
#[derive(Debug, Clone, PartialEq)]
pub enum SsdBackbone {
    /// MobileNetV1, with `SsdSpec::extra_blocks`.
    MobileNetV1(MobileNetV1Spec),
    /// VGG with its own extra blocks, pools and L2 norms.
    Vgg(VggSpec),
}

#[derive(Debug, Clone, PartialEq)]
pub struct SsdSpec {
    pub backbone: SsdBackbone,
    /// MobileNet's extra blocks (`MobileNet.extra_block_filters`: 1x1
    /// width, 3x3 width). Empty with VGG, which describes its own.
    pub extra_blocks: Vec<(usize, usize)>,
    /// Classes including the background (label 0).
    pub num_classes: usize,
    /// One per feature level, in the head's order.
    pub priors: Vec<PriorBoxLevel>,
    /// The head convs' square kernel (`kernel_size`; padding `kernel / 2`).
    pub head_kernel: usize,
    /// MobileNet's `conv_learning_rate`: the learning-rate factor of every
    /// backbone and extra-block conv weight (0.1 in the VOC config). VGG
    /// has none: 1.
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
            backbone: SsdBackbone::MobileNetV1(MobileNetV1Spec { scale: 1.0 }),
            extra_blocks: MOBILENET_EXTRA_BLOCKS.to_vec(),
            num_classes,
            priors,
            head_kernel: 1,
            conv_learning_rate: 0.1,
        }
    }

    /// `ssd_vgg16_300_voc.yml`'s model at any class count: VGG16 with the
    /// default extra blocks and `conv4_3`'s norm at 20, `MultiBoxHead` with
    /// explicit sizes, steps and Caffe's prior order, 3x3 head convs
    /// (`pad: 1`).
    pub fn vgg16(num_classes: usize) -> SsdSpec {
        let min_sizes = [30.0, 60.0, 111.0, 162.0, 213.0, 264.0];
        let max_sizes = [60.0, 111.0, 162.0, 213.0, 264.0, 315.0];
        let steps = [8.0, 16.0, 32.0, 64.0, 100.0, 300.0];
        let priors = (0..6)
            .map(|level| PriorBoxLevel {
                min_sizes: vec![min_sizes[level]],
                max_sizes: vec![max_sizes[level]],
                aspect_ratios: if (1..4).contains(&level) {
                    vec![2.0, 3.0]
                } else {
                    vec![2.0]
                },
                flip: true,
                clip: false,
                step: [steps[level]; 2],
                offset: 0.5,
                min_max_order: true,
            })
            .collect();
        SsdSpec {
            backbone: SsdBackbone::Vgg(VggSpec::vgg16()),
            extra_blocks: Vec::new(),
            num_classes,
            priors,
            head_kernel: 3,
            conv_learning_rate: 1.0,
        }
    }

    /// The small model for tests: MobileNetV1 at a quarter width and extra
    /// blocks a quarter as wide, with the same names and priors as
    /// `mobilenet_v1`.
    pub fn small(num_classes: usize) -> SsdSpec {
        SsdSpec {
            backbone: SsdBackbone::MobileNetV1(MobileNetV1Spec { scale: 0.25 }),
            extra_blocks: MOBILENET_EXTRA_BLOCKS
                .iter()
                .map(|&(a, b)| (a / 4, b / 4))
                .collect(),
            ..SsdSpec::mobilenet_v1(num_classes)
        }
    }

    /// The backbone's units: MobileNetV1's, then the extra blocks'; or
    /// VGG's, its extra blocks included.
    pub fn backbone_units(&self) -> Vec<ConvUnitSpec> {
        match &self.backbone {
            SsdBackbone::MobileNetV1(mobilenet) => {
                let mut units = mobilenet.units();
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
            SsdBackbone::Vgg(vgg) => {
                assert!(
                    self.extra_blocks.is_empty() && self.conv_learning_rate == 1.0,
                    "SsdSpec: VGG has its own extra blocks (VggSpec) and no conv_learning_rate"
                );
                vgg.units()
            }
        }
    }

    /// Indices into `backbone_units()` of the head's feature levels:
    /// MobileNet's `conv5_5` (stride 16), `conv6` (stride 32), then each
    /// extra block; VGG's `conv4_3`, `fc7`, then each extra block.
    pub fn feature_units(&self) -> Vec<usize> {
        match &self.backbone {
            SsdBackbone::MobileNetV1(mobilenet) => {
                let units = mobilenet.units();
                let conv5_5 = units
                    .iter()
                    .position(|u| u.prefix == "conv5_5_sep")
                    .expect("MobileNetV1 has conv5_5");
                let mut features = vec![conv5_5, units.len() - 1];
                features.extend((0..self.extra_blocks.len()).map(|k| units.len() + 2 * k + 1));
                features
            }
            SsdBackbone::Vgg(vgg) => vgg.feature_units(),
        }
    }

    /// The max pools between backbone units, each with the unit whose
    /// output it takes (VGG's; MobileNet has none).
    pub fn pools(&self) -> Vec<(usize, VggPool)> {
        match &self.backbone {
            SsdBackbone::MobileNetV1(_) => Vec::new(),
            SsdBackbone::Vgg(vgg) => vgg.pools(),
        }
    }

    /// The L2 norms between features and the head (VGG's
    /// `normalizations`, each scale `Scale_N.w_0` in feature order, created
    /// after the extra blocks).
    pub fn l2_norms(&self) -> Vec<L2NormSpec> {
        let SsdBackbone::Vgg(vgg) = &self.backbone else {
            return Vec::new();
        };
        let last = self.backbone_units().len() - 1;
        self.feature_units()
            .into_iter()
            .zip(&vgg.normalizations)
            .filter_map(|(unit, init)| init.map(|init_scale| (unit, init_scale)))
            .enumerate()
            .map(|(k, (unit, init_scale))| L2NormSpec {
                name: format!("Scale_{k}.w_0"),
                unit,
                init_scale,
                declared_after: last,
            })
            .collect()
    }

    /// Paddle's `conv2d` counter after the backbone: its convs built
    /// without a name of their own (MobileNet's non-depthwise ones; none of
    /// VGG's).
    fn unnamed_backbone_convs(&self, backbone: &[ConvUnitSpec]) -> usize {
        match self.backbone {
            SsdBackbone::MobileNetV1(_) => backbone.iter().filter(|u| u.groups == 1).count(),
            SsdBackbone::Vgg(_) => 0,
        }
    }

    /// The head's convs, level by level: offsets then scores.
    pub fn head_units(&self) -> Vec<ConvUnitSpec> {
        let backbone = self.backbone_units();
        let first = self.unnamed_backbone_convs(&backbone);
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
                    padding: None,
                    dilation: 1,
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

    /// Every parameter's name and shape in Paddle's creation order: the
    /// backbone's, its L2 norms', the head's.
    pub fn param_specs(&self) -> Vec<ParamSpec> {
        let mut units = self.backbone_units();
        units.extend(self.head_units());
        param_slots(&units, &self.l2_norms(), &[], &[])
            .into_iter()
            .map(|slot| slot.param.spec)
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
        padding: None,
        dilation: 1,
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

    fn fixture(config: &str, classes: usize) -> Vec<ParamSpec> {
        crate::fixtures::param_specs(&format!("ssd/{config}.{classes}.params.json"))
    }

    /// The parameter list PaddleDetection's own code builds for
    /// ssd_mobilenet_v1_voc (`core/tests/fixtures/ssd/make_fixtures.py`), at
    /// its 21 classes and at 5: names, shapes and order.
    #[test]
    fn parameters_equal_paddledetections() {
        for classes in [21, 5] {
            let ours = SsdSpec::mobilenet_v1(classes).param_specs();
            let theirs = fixture("ssd_mobilenet_v1_voc", classes);
            assert_eq!(ours, theirs, "{classes} classes");
        }
    }

    /// The same for ssd_vgg16_300_voc: VGG16's named convs with biases,
    /// `fc6`/`fc7`, the extra blocks, conv4_3's `Scale_0.w_0` after them,
    /// and the 3x3 head convs from `conv2d_0`.
    #[test]
    fn vgg16_parameters_equal_paddledetections() {
        for classes in [21, 5] {
            let ours = SsdSpec::vgg16(classes).param_specs();
            let theirs = fixture("ssd_vgg16_300_voc", classes);
            assert_eq!(ours, theirs, "{classes} classes");
        }
        let spec = SsdSpec::vgg16(21);
        let norms = spec.l2_norms();
        assert_eq!(norms.len(), 1);
        assert_eq!(spec.backbone_units()[norms[0].unit].prefix, "conv4_3");
        assert_eq!(norms[0].init_scale, 20.0);
        let head = spec.head_units();
        assert_eq!(head.len(), 12);
        assert!(head.iter().all(|u| u.kernel == 3 && u.padding() == 1));
    }

    /// The VGG16 priors of a 300x300 input: the steps put conv4_3's 38x38
    /// centres 8 pixels apart, and Caffe's order gives the min square, the
    /// max square, then the ratios (8732 priors in all).
    #[test]
    fn vgg16_priors_follow_the_steps_and_caffes_order() {
        let spec = SsdSpec::vgg16(21);
        let maps = [38, 19, 10, 5, 3, 1];
        let count: usize = spec
            .priors
            .iter()
            .zip(maps)
            .map(|(level, m)| level.priors([m, m], [300, 300]).len())
            .sum();
        assert_eq!(count, 8732);
        let first = spec.priors[0].priors([38, 38], [300, 300]);
        let centre = 4.0 / 300.0;
        let half_min = 15.0 / 300.0;
        let half_max = (30.0f32 * 60.0).sqrt() / 2.0 / 300.0;
        let expect = [
            [
                centre - half_min,
                centre - half_min,
                centre + half_min,
                centre + half_min,
            ],
            [
                centre - half_max,
                centre - half_max,
                centre + half_max,
                centre + half_max,
            ],
        ];
        for (got, want) in first.iter().zip(expect) {
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
            }
        }
        // The next cell's centre is one step (8 pixels) to the right.
        let next = first[spec.priors[0].priors_per_cell()];
        assert!(
            (next[0] - (12.0 / 300.0 - half_min)).abs() < 1e-6,
            "{next:?}"
        );
    }

    /// The seed guide's pattern excludes exactly the 24 head tensors, in
    /// both models.
    #[test]
    fn the_head_is_exactly_what_conv2d_names() {
        for (spec, first, last) in [
            (SsdSpec::mobilenet_v1(21), "conv2d_22.w_0", "conv2d_33.b_0"),
            (SsdSpec::vgg16(21), "conv2d_0.w_0", "conv2d_11.b_0"),
        ] {
            let head: Vec<String> = spec
                .head_units()
                .iter()
                .flat_map(|u| u.params())
                .map(|p| p.spec.name)
                .collect();
            assert_eq!(head.len(), 24);
            assert_eq!(head[0], first);
            assert_eq!(head[23], last);
            let named_conv2d = spec
                .param_specs()
                .iter()
                .filter(|p| p.name.starts_with("conv2d_"))
                .count();
            assert_eq!(named_conv2d, 24);
        }
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
