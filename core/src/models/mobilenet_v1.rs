//! MobileNetV1 as PaddleDetection's legacy `MobileNet` backbone builds it for
//! YOLOv3 (`ppdet/modeling/backbones/mobilenet.py`, release/0.5): a 3x3 stem
//! `conv1` and thirteen depthwise-separable blocks, every conv followed by batch
//! norm and ReLU. The detector takes the outputs of `conv3_2` (stride 8),
//! `conv4_2` (stride 16) and `conv6` (stride 32). It runs as a chain
//! (`models::chain`).

use super::conv_unit::{Activation, ConvUnitSpec, NameStyle, Norm, ParamAttr, WeightInit};

/// One depthwise-separable block: (name, channels in, channels out, stride,
/// whether the detector takes its output). Widths are before `scale`.
const BLOCKS: [(&str, usize, usize, usize, bool); 13] = [
    ("conv2_1", 32, 64, 1, false),
    ("conv2_2", 64, 128, 2, false),
    ("conv3_1", 128, 128, 1, false),
    ("conv3_2", 128, 256, 2, true),
    ("conv4_1", 256, 256, 1, false),
    ("conv4_2", 256, 512, 2, true),
    ("conv5_1", 512, 512, 1, false),
    ("conv5_2", 512, 512, 1, false),
    ("conv5_3", 512, 512, 1, false),
    ("conv5_4", 512, 512, 1, false),
    ("conv5_5", 512, 512, 1, false),
    ("conv5_6", 512, 1024, 2, false),
    ("conv6", 1024, 1024, 1, true),
];

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MobileNetV1Spec {
    /// Paddle's `conv_group_scale`: every width is `int(width * scale)`.
    pub scale: f32,
}

impl MobileNetV1Spec {
    fn width(&self, channels: usize) -> usize {
        ((channels as f32 * self.scale) as usize).max(1)
    }

    fn unit(
        &self,
        prefix: String,
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
        groups: usize,
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
            groups,
            norm: Norm::BatchNorm(ParamAttr::NO_DECAY),
            activation: Activation::Relu,
            init: WeightInit::MsraUniform,
            // The YOLOv3 configs build MobileNet with conv_decay 0.
            weight: ParamAttr::NO_DECAY,
        }
    }

    /// The conv units in model order: `conv1`, then `{block}_dw`, `{block}_sep`.
    pub fn units(&self) -> Vec<ConvUnitSpec> {
        let mut units = vec![self.unit("conv1".into(), 3, self.width(32), 3, 2, 1)];
        for (name, cin, cout, stride, _) in BLOCKS {
            let (cin, cout) = (self.width(cin), self.width(cout));
            units.push(self.unit(format!("{name}_dw"), cin, cin, 3, stride, cin));
            units.push(self.unit(format!("{name}_sep"), cin, cout, 1, 1, 1));
        }
        units
    }

    /// Indices into `units()` whose outputs are the stride 8, 16, 32 features.
    pub fn feature_units(&self) -> [usize; 3] {
        let mut found = BLOCKS
            .iter()
            .enumerate()
            .filter(|(_, b)| b.4)
            .map(|(i, _)| 2 + 2 * i);
        [(); 3].map(|_| found.next().expect("three feature blocks"))
    }

    /// Channels of the stride 8, 16, 32 features.
    pub fn feature_channels(&self) -> [usize; 3] {
        let units = self.units();
        self.feature_units().map(|i| units[i].out_channels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_width_shapes_match_the_spec() {
        let spec = MobileNetV1Spec { scale: 1.0 };
        let units = spec.units();
        assert_eq!(units.len(), 27);
        assert_eq!(units[0].weight_shape(), [32, 3, 3, 3]);
        assert_eq!(units[1].prefix, "conv2_1_dw");
        assert_eq!(units[1].weight_shape(), [32, 1, 3, 3]);
        assert_eq!(units[2].weight_shape(), [64, 32, 1, 1]);
        assert_eq!(units[26].prefix, "conv6_sep");
        assert_eq!(units[26].weight_shape(), [1024, 1024, 1, 1]);
        assert_eq!(spec.feature_units(), [8, 12, 26]);
        assert_eq!(spec.feature_channels(), [256, 512, 1024]);
        let strides: usize = units.iter().map(|u| u.stride).product();
        assert_eq!(strides, 32);
    }

    #[test]
    fn quarter_width() {
        let spec = MobileNetV1Spec { scale: 0.25 };
        assert_eq!(spec.feature_channels(), [64, 128, 256]);
        assert_eq!(spec.units()[0].weight_shape(), [8, 3, 3, 3]);
    }
}
