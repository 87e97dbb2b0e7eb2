//! DarkNet53 as PaddleDetection's legacy `DarkNet` backbone builds it
//! (`ppdet/modeling/backbones/darknet.py`, release/0.5): a 3x3 stem
//! `yolo_input`, a stride-2 `yolo_input.downsample`, then five stages of
//! residual blocks (1x1 halving, 3x3 restoring, added to the block's input)
//! with a stride-2 downsample between stages. Every conv is followed by batch
//! norm and leaky ReLU (0.1). The detector takes the outputs of stages 2, 3, 4
//! (strides 8, 16, 32).

use super::conv_unit::{Activation, ConvUnitSpec, NameStyle, WeightInit};

/// Residual blocks per stage.
pub const STAGES: [usize; 5] = [1, 2, 8, 8, 4];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DarkNet53Spec;

pub(crate) fn dotted_unit(
    prefix: String,
    cin: usize,
    cout: usize,
    kernel: usize,
    stride: usize,
) -> ConvUnitSpec {
    ConvUnitSpec {
        prefix,
        style: NameStyle::Dotted,
        in_channels: cin,
        out_channels: cout,
        kernel,
        stride,
        groups: 1,
        batch_norm: true,
        activation: Activation::Leaky,
        init: WeightInit::ConvDefaultNormal,
        weight_decay: None,
    }
}

impl DarkNet53Spec {
    /// Half the channel count of stage `s`'s residual blocks (`ch` in the spec).
    pub fn stage_channels(stage: usize) -> usize {
        32 << stage
    }

    /// The conv units in model order: stem, stem downsample, then per stage its
    /// blocks `stage.{s}.{b}.0`, `stage.{s}.{b}.1` and, for s < 4,
    /// `stage.{s}.downsample`.
    pub fn units(&self) -> Vec<ConvUnitSpec> {
        let mut units = vec![
            dotted_unit("yolo_input".into(), 3, 32, 3, 1),
            dotted_unit("yolo_input.downsample".into(), 32, 64, 3, 2),
        ];
        for (s, &blocks) in STAGES.iter().enumerate() {
            let ch = Self::stage_channels(s);
            for b in 0..blocks {
                units.push(dotted_unit(format!("stage.{s}.{b}.0"), 2 * ch, ch, 1, 1));
                units.push(dotted_unit(format!("stage.{s}.{b}.1"), ch, 2 * ch, 3, 1));
            }
            if s + 1 < STAGES.len() {
                units.push(dotted_unit(
                    format!("stage.{s}.downsample"),
                    2 * ch,
                    4 * ch,
                    3,
                    2,
                ));
            }
        }
        units
    }

    /// Channels of the stride 8, 16, 32 features (outputs of stages 2, 3, 4).
    pub fn feature_channels(&self) -> [usize; 3] {
        [2, 3, 4].map(|s| 2 * Self::stage_channels(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_match_the_spec() {
        let units = DarkNet53Spec.units();
        assert_eq!(units.len(), 52);
        assert_eq!(units[0].weight_shape(), [32, 3, 3, 3]);
        assert_eq!(units[1].weight_shape(), [64, 32, 3, 3]);
        assert_eq!(units[2].prefix, "stage.0.0.0");
        assert_eq!(units[2].weight_shape(), [32, 64, 1, 1]);
        assert_eq!(units[3].weight_shape(), [64, 32, 3, 3]);
        assert_eq!(units[4].prefix, "stage.0.downsample");
        assert_eq!(units[4].weight_shape(), [128, 64, 3, 3]);
        let last = units.last().unwrap();
        assert_eq!(last.prefix, "stage.4.3.1");
        assert_eq!(last.weight_shape(), [1024, 512, 3, 3]);
        assert_eq!(DarkNet53Spec.feature_channels(), [256, 512, 1024]);
    }
}
