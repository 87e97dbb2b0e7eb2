//! VGG as PaddleDetection's legacy `VGG` backbone builds it for SSD
//! (`ppdet/modeling/backbones/vgg.py`, `with_extra_blocks: true`): five
//! blocks of 3x3 convs with biases and ReLU, a max pool after each, the
//! fully connected layers as convs (`fc6`: 3x3 dilated by 6, `fc7`: 1x1),
//! and the extra blocks (a 1x1 conv, then a 3x3 one with its own padding
//! and stride). The head reads `conv4_3` (through an L2 norm with a learned
//! per-channel scale), `fc7`, and each extra block.

use super::conv_unit::{Activation, ConvUnitSpec, NameStyle, Norm, ParamAttr, WeightInit};

/// `VGG.extra_block_filters`' default, which the SSD configs keep: (1x1
/// width, 3x3 width, padding, stride, kernel) per block.
pub const VGG_EXTRA_BLOCKS: [VggExtraBlock; 4] = [
    VggExtraBlock::new(256, 512, 1, 2, 3),
    VggExtraBlock::new(128, 256, 1, 2, 3),
    VggExtraBlock::new(128, 256, 0, 1, 3),
    VggExtraBlock::new(128, 256, 0, 1, 3),
];

/// The widths of the five blocks (`vgg_base`) and of `fc6`/`fc7`.
const BLOCK_WIDTHS: [usize; 5] = [64, 128, 256, 512, 512];
const FC_WIDTH: usize = 1024;

/// One entry of `extra_block_filters`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VggExtraBlock {
    pub first_width: usize,
    pub second_width: usize,
    /// Padding, stride and kernel of the second (3x3) conv.
    pub padding: usize,
    pub stride: usize,
    pub kernel: usize,
}

impl VggExtraBlock {
    pub const fn new(
        first_width: usize,
        second_width: usize,
        padding: usize,
        stride: usize,
        kernel: usize,
    ) -> Self {
        VggExtraBlock {
            first_width,
            second_width,
            padding,
            stride,
            kernel,
        }
    }
}

/// A max pool between units (`VGG._pooling_block`: always `ceil_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VggPool {
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
}

impl VggPool {
    /// Output size along one axis in Paddle's ceil mode: a last window that
    /// runs past the input still gives an output.
    pub fn output_size(&self, size: usize) -> usize {
        (size + 2 * self.pad - self.kernel).div_ceil(self.stride) + 1
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct VggSpec {
    /// `VGG.depth`: 16 (blocks of 2, 2, 3, 3, 3 convs) or 19 (2, 2, 4, 4, 4).
    pub depth: usize,
    /// Every width of the blocks and of `fc6`/`fc7` is `int(width *
    /// scale)`: 1 in PaddleDetection, smaller for test models.
    pub scale: f32,
    pub extra_blocks: Vec<VggExtraBlock>,
    /// `VGG.normalizations`: per feature (`conv4_3`, `fc7`, then each extra
    /// block) the initial scale of an L2 norm before the head, or None for
    /// none (Paddle's -1).
    pub normalizations: Vec<Option<f32>>,
}

impl VggSpec {
    /// `ssd_vgg16_300_voc.yml`'s `VGG`: depth 16, the default extra blocks,
    /// `normalizations: [20., -1, -1, -1, -1, -1]`.
    pub fn vgg16() -> VggSpec {
        let mut normalizations = vec![None; 2 + VGG_EXTRA_BLOCKS.len()];
        normalizations[0] = Some(20.0);
        VggSpec {
            depth: 16,
            scale: 1.0,
            extra_blocks: VGG_EXTRA_BLOCKS.to_vec(),
            normalizations,
        }
    }

    /// Convs per block (`depth_cfg`); None for a depth VGG does not have.
    pub fn block_depths(&self) -> Option<[usize; 5]> {
        match self.depth {
            16 => Some([2, 2, 3, 3, 3]),
            19 => Some([2, 2, 4, 4, 4]),
            _ => None,
        }
    }

    fn width(&self, channels: usize) -> usize {
        ((channels as f32 * self.scale) as usize).max(1)
    }

    fn depths(&self) -> [usize; 5] {
        self.block_depths()
            .unwrap_or_else(|| panic!("VGG depth {} is not 16 or 19", self.depth))
    }

    /// The conv units in model order: `conv1_1` ... `conv5_3`, `fc6`, `fc7`,
    /// then `conv6_1`, `conv6_2`, ... for the extra blocks.
    pub fn units(&self) -> Vec<ConvUnitSpec> {
        let mut units = Vec::new();
        let mut channels = 3;
        for (block, (&width, &convs)) in BLOCK_WIDTHS.iter().zip(&self.depths()).enumerate() {
            let width = self.width(width);
            for k in 0..convs {
                let name = format!("conv{}_{}", block + 1, k + 1);
                units.push(vgg_unit(name, channels, width, 3, 1, 1, 1));
                channels = width;
            }
        }
        let fc = self.width(FC_WIDTH);
        units.push(vgg_unit("fc6".into(), channels, fc, 3, 1, 6, 6));
        units.push(vgg_unit("fc7".into(), fc, fc, 1, 1, 0, 1));
        channels = fc;
        for (k, b) in self.extra_blocks.iter().enumerate() {
            let name = format!("conv{}_", 6 + k);
            units.push(vgg_unit(
                format!("{name}1"),
                channels,
                b.first_width,
                1,
                1,
                0,
                1,
            ));
            units.push(vgg_unit(
                format!("{name}2"),
                b.first_width,
                b.second_width,
                b.kernel,
                b.stride,
                b.padding,
                1,
            ));
            channels = b.second_width;
        }
        units
    }

    /// The max pools, each with the unit whose output it takes: 2x2 with
    /// stride 2 after each of the first four blocks, 3x3 with stride 1 and
    /// padding 1 after the fifth (so `fc6` keeps its input's size).
    pub fn pools(&self) -> Vec<(usize, VggPool)> {
        let mut last = 0;
        self.depths()
            .iter()
            .enumerate()
            .map(|(block, &convs)| {
                last += convs;
                let pool = if block == 4 {
                    VggPool {
                        kernel: 3,
                        stride: 1,
                        pad: 1,
                    }
                } else {
                    VggPool {
                        kernel: 2,
                        stride: 2,
                        pad: 0,
                    }
                };
                (last - 1, pool)
            })
            .collect()
    }

    /// Indices into `units()` of the head's features: the fourth block's
    /// last conv (`conv4_3`), `fc7`, then each extra block's second conv.
    pub fn feature_units(&self) -> Vec<usize> {
        let depths = self.depths();
        let conv4_last = depths[..4].iter().sum::<usize>() - 1;
        let fc7 = depths.iter().sum::<usize>() + 1;
        let mut features = vec![conv4_last, fc7];
        features.extend((0..self.extra_blocks.len()).map(|k| fc7 + 2 + 2 * k));
        features
    }
}

/// One VGG conv: bias, ReLU, no batch norm, Paddle's default initialiser
/// and the optimizer's decay (`_conv_layer` sets names only).
fn vgg_unit(
    prefix: String,
    cin: usize,
    cout: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
) -> ConvUnitSpec {
    ConvUnitSpec {
        prefix,
        style: NameStyle::Vgg,
        in_channels: cin,
        out_channels: cout,
        kernel,
        stride,
        padding: Some(padding),
        dilation,
        groups: 1,
        // `ParamAttr(name=...)` for weight and bias alike: the optimizer's
        // decay, learning rate 1.
        norm: Norm::Bias(ParamAttr::DEFAULT),
        activation: Activation::Relu,
        init: WeightInit::ConvDefaultNormal,
        weight: ParamAttr::DEFAULT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The feature maps of a 300x300 input where `multi_box_head`'s steps
    /// (8, 16, 32, 64, 100, 300) put them: 38 needs the pools' ceil mode
    /// (75 -> 38), 19 `fc6`'s padding of 6 for its dilation of 6, and 3 and
    /// 1 the unpadded last extra blocks.
    #[test]
    fn feature_maps_at_300_pixels() {
        let spec = VggSpec::vgg16();
        let units = spec.units();
        let pools = spec.pools();
        let mut size = 300;
        let mut sizes = Vec::new();
        for (i, unit) in units.iter().enumerate() {
            size = unit.output_size(size);
            sizes.push(size);
            if let Some((_, pool)) = pools.iter().find(|(after, _)| *after == i) {
                size = pool.output_size(size);
            }
        }
        let features: Vec<usize> = spec.feature_units().iter().map(|&i| sizes[i]).collect();
        assert_eq!(features, [38, 19, 10, 5, 3, 1]);
        let names: Vec<&str> = spec
            .feature_units()
            .iter()
            .map(|&i| units[i].prefix.as_str())
            .collect();
        assert_eq!(
            names,
            ["conv4_3", "fc7", "conv6_2", "conv7_2", "conv8_2", "conv9_2"]
        );
    }

    #[test]
    fn depth_19_has_four_convs_in_the_last_three_blocks() {
        let spec = VggSpec {
            depth: 19,
            ..VggSpec::vgg16()
        };
        let units = spec.units();
        assert_eq!(units.len(), 16 + 2 + 8);
        assert_eq!(units[spec.feature_units()[0]].prefix, "conv4_4");
        assert_eq!(spec.pools()[4].0, 15);
        assert_eq!(units[16].prefix, "fc6");
    }

    #[test]
    fn ceil_mode_keeps_a_last_partial_window() {
        let pool = VggPool {
            kernel: 2,
            stride: 2,
            pad: 0,
        };
        assert_eq!((pool.output_size(75), pool.output_size(76)), (38, 38));
        let same = VggPool {
            kernel: 3,
            stride: 1,
            pad: 1,
        };
        assert_eq!(same.output_size(19), 19);
    }
}
