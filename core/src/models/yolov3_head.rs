//! The YOLOv3 head as PaddleDetection's legacy `YOLOv3Head` builds it
//! (`ppdet/modeling/anchor_heads/yolo_head.py`, release/0.5). Level i = 0, 1, 2
//! works on the backbone feature of stride 32, 16, 8 with `channel = width >> i`:
//!
//! ```text
//! x = feature(level 0) | concat([upsample2(transition(route of level i-1)), feature])
//! yolo_block.i.0.0 1x1 -> channel,   yolo_block.i.0.1 3x3 -> 2*channel
//! yolo_block.i.1.0 1x1 -> channel,   yolo_block.i.1.1 3x3 -> 2*channel
//! route = yolo_block.i.2 1x1 -> channel
//! tip   = yolo_block.i.tip 3x3 -> 2*channel
//! output(i) = yolo_output.i 1x1 conv with bias -> anchors_i * (num_classes + 5)
//! for i < 2: yolo_transition.i 1x1 route -> channel/2, then nearest upsample x2
//! ```
//!
//! All units but `yolo_output` are conv + BN + leaky ReLU (0.1).

use super::conv_unit::{Activation, ConvUnitSpec, NameStyle, WeightInit};
use super::darknet53::dotted_unit;

#[derive(Debug, Clone, PartialEq)]
pub struct Yolov3HeadSpec {
    /// Channels of the backbone features of stride 8, 16, 32.
    pub feature_channels: [usize; 3],
    /// `channel` of level 0 (512 in PaddleDetection); level i uses width >> i.
    pub width: usize,
    pub num_classes: usize,
    /// Anchors per level, level 0 first (stride 32).
    pub anchors_per_level: [usize; 3],
}

/// Where each unit of one level sits in `Yolov3HeadSpec::units()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LevelUnits {
    /// The six conv units of `yolo_block.i`, `.0.0` to `.tip`, in order.
    pub block: [usize; 6],
    pub output: usize,
    pub transition: Option<usize>,
}

impl Yolov3HeadSpec {
    pub fn level_channels(&self, level: usize) -> usize {
        self.width >> level
    }

    /// Input channels of level `level`'s first unit.
    pub fn level_input_channels(&self, level: usize) -> usize {
        let feature = self.feature_channels[2 - level];
        if level == 0 {
            feature
        } else {
            self.level_channels(level - 1) / 2 + feature
        }
    }

    pub fn output_channels(&self, level: usize) -> usize {
        self.anchors_per_level[level] * (self.num_classes + 5)
    }

    /// The conv units in model order: per level its block, output, transition.
    pub fn units(&self) -> Vec<ConvUnitSpec> {
        let mut units = Vec::new();
        for i in 0..3 {
            let ch = self.level_channels(i);
            let block = |name: &str| format!("yolo_block.{i}.{name}");
            units.push(dotted_unit(
                block("0.0"),
                self.level_input_channels(i),
                ch,
                1,
                1,
            ));
            units.push(dotted_unit(block("0.1"), ch, 2 * ch, 3, 1));
            units.push(dotted_unit(block("1.0"), 2 * ch, ch, 1, 1));
            units.push(dotted_unit(block("1.1"), ch, 2 * ch, 3, 1));
            units.push(dotted_unit(block("2"), 2 * ch, ch, 1, 1));
            units.push(dotted_unit(block("tip"), ch, 2 * ch, 3, 1));
            units.push(ConvUnitSpec {
                prefix: format!("yolo_output.{i}"),
                style: NameStyle::Dotted,
                in_channels: 2 * ch,
                out_channels: self.output_channels(i),
                kernel: 1,
                stride: 1,
                groups: 1,
                batch_norm: false,
                activation: Activation::Identity,
                init: WeightInit::ConvDefaultNormal,
                weight_decay: None,
            });
            if i < 2 {
                units.push(dotted_unit(
                    format!("yolo_transition.{i}"),
                    ch,
                    ch / 2,
                    1,
                    1,
                ));
            }
        }
        units
    }

    /// The positions of each level's units in `units()`.
    pub fn level_units(&self) -> [LevelUnits; 3] {
        let mut next = 0;
        [0, 1, 2].map(|i| {
            let block = [0, 1, 2, 3, 4, 5].map(|j| next + j);
            let output = next + 6;
            let transition = (i < 2).then_some(next + 7);
            next += if i < 2 { 8 } else { 7 };
            LevelUnits {
                block,
                output,
                transition,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paddle_head(num_classes: usize) -> Yolov3HeadSpec {
        Yolov3HeadSpec {
            feature_channels: [256, 512, 1024],
            width: 512,
            num_classes,
            anchors_per_level: [3, 3, 3],
        }
    }

    #[test]
    fn shapes_match_the_spec() {
        let head = paddle_head(20);
        let units = head.units();
        assert_eq!(units.len(), 23);
        let levels = head.level_units();
        assert_eq!(units[levels[0].block[0]].prefix, "yolo_block.0.0.0");
        assert_eq!(units[levels[0].block[0]].weight_shape(), [512, 1024, 1, 1]);
        assert_eq!(units[levels[0].block[5]].prefix, "yolo_block.0.tip");
        assert_eq!(units[levels[0].output].weight_shape(), [75, 1024, 1, 1]);
        let t0 = levels[0].transition.unwrap();
        assert_eq!(units[t0].prefix, "yolo_transition.0");
        assert_eq!(units[t0].weight_shape(), [256, 512, 1, 1]);
        assert_eq!(units[levels[1].block[0]].weight_shape(), [256, 768, 1, 1]);
        assert_eq!(units[levels[2].block[0]].weight_shape(), [128, 384, 1, 1]);
        assert_eq!(units[levels[2].output].prefix, "yolo_output.2");
        assert_eq!(units[levels[2].output].weight_shape(), [75, 256, 1, 1]);
        assert_eq!(levels[2].transition, None);
        assert_eq!(levels[2].output, units.len() - 1);
    }
}
