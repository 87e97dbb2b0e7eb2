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

use super::conv_unit::{
    accumulate, Activation, ConvUnit, ConvUnitSpec, NameStyle, Norm, ParamAttr, Scratch, WeightInit,
};
use super::darknet53::dotted_unit;
use crate::backend::Backend;
use crate::layers::{Concat, Upsample2x};
use crate::tensor::Tensor;

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
                padding: None,
                dilation: 1,
                groups: 1,
                // `yolo_output`'s bias declares L2Decay(0.).
                norm: Norm::Bias(ParamAttr::NO_DECAY),
                activation: Activation::Identity,
                init: WeightInit::ConvDefaultNormal,
                weight: ParamAttr::DEFAULT,
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

/// The head's layers that are not conv units: for levels 1 and 2, the
/// upsampling of the previous level's transition and its concat with the
/// backbone feature; and the gradients that flow between levels.
pub struct HeadLinks<B: Backend> {
    upsamples: [Upsample2x<B>; 2],
    concats: [Concat<B>; 2],
    /// Gradient reaching `yolo_block.i.2`'s output through `yolo_transition.i`.
    route_grads: [Tensor<B>; 2],
    /// Gradient of an upsampled transition (the first part of a concat).
    upsampled_grad: Tensor<B>,
}

impl<B: Backend> HeadLinks<B> {
    pub fn new(backend: &B) -> Self {
        HeadLinks {
            upsamples: [Upsample2x::new(backend), Upsample2x::new(backend)],
            concats: [Concat::new(backend), Concat::new(backend)],
            route_grads: [Tensor::zeros(backend, &[0]), Tensor::zeros(backend, &[0])],
            upsampled_grad: Tensor::zeros(backend, &[0]),
        }
    }

    pub fn planned_bytes(&self, backend: &B) -> usize {
        self.upsamples
            .iter()
            .map(|u| u.planned_bytes(backend))
            .sum::<usize>()
            + self
                .concats
                .iter()
                .map(|c| c.output().capacity_bytes(backend))
                .sum::<usize>()
            + self
                .route_grads
                .iter()
                .map(|t| t.capacity_bytes(backend))
                .sum::<usize>()
            + self.upsampled_grad.capacity_bytes(backend)
    }
}

fn level_input<'a, B: Backend>(
    links: &'a HeadLinks<B>,
    features: &[&'a Tensor<B>; 3],
    level: usize,
) -> &'a Tensor<B> {
    if level == 0 {
        features[2]
    } else {
        links.concats[level - 1].output()
    }
}

/// Runs the head on the backbone features (strides 8, 16, 32); the outputs
/// are then the outputs of the `yolo_output` units.
pub fn forward<B: Backend>(
    spec: &Yolov3HeadSpec,
    backend: &B,
    units: &mut [ConvUnit<B>],
    links: &mut HeadLinks<B>,
    features: [&Tensor<B>; 3],
    workspace: &mut Tensor<B>,
) {
    for (i, level) in spec.level_units().iter().enumerate() {
        if i > 0 {
            let up = links.upsamples[i - 1].output();
            links.concats[i - 1].forward(backend, &[up, features[2 - i]]);
        }
        for (j, &k) in level.block.iter().enumerate() {
            let (done, rest) = units.split_at_mut(k);
            let x = if j == 0 {
                level_input(links, &features, i)
            } else {
                done[level.block[j - 1]].output()
            };
            rest[0].forward(backend, x, workspace);
        }
        let (done, rest) = units.split_at_mut(level.output);
        rest[0].forward(backend, done[level.block[5]].output(), workspace);
        if let Some(t) = level.transition {
            let (done, rest) = units.split_at_mut(t);
            let route = rest[0].forward(backend, done[level.block[4]].output(), workspace);
            links.upsamples[i].forward(backend, route);
        }
    }
}

/// Backward from the gradients of the three outputs (level 0 first) to the
/// gradients of the three features (stride 8 first), written into
/// `feature_grads`.
#[allow(clippy::too_many_arguments)]
pub fn backward<B: Backend>(
    spec: &Yolov3HeadSpec,
    backend: &B,
    units: &mut [ConvUnit<B>],
    links: &mut HeadLinks<B>,
    features: [&Tensor<B>; 3],
    output_grads: &[Tensor<B>; 3],
    feature_grads: &mut [Tensor<B>; 3],
    s: &mut Scratch<B>,
) {
    let levels = spec.level_units();
    for i in (0..3).rev() {
        let level = levels[i];
        // yolo_output.i, then the tip: s.grad becomes the route's gradient.
        let (done, rest) = units.split_at_mut(level.output);
        let tip = done[level.block[5]].output();
        rest[0].backward(
            backend,
            tip,
            &output_grads[i],
            &mut s.dz,
            Some(&mut s.grad),
            &mut s.workspace,
        );
        let (done, rest) = units.split_at_mut(level.block[5]);
        let route = done[level.block[4]].output();
        rest[0].backward(
            backend,
            route,
            &s.grad,
            &mut s.dz,
            Some(&mut s.grad_next),
            &mut s.workspace,
        );
        s.step_down();
        if i < 2 {
            accumulate(backend, &links.route_grads[i], &mut s.grad);
        }
        // The five units of the block, down to the level's input.
        for j in (0..5).rev() {
            let k = level.block[j];
            let (done, rest) = units.split_at_mut(k);
            let x = if j == 0 {
                level_input(links, &features, i)
            } else {
                done[level.block[j - 1]].output()
            };
            let dx = if j == 0 && i == 0 {
                &mut feature_grads[2]
            } else {
                &mut s.grad_next
            };
            rest[0].backward(backend, x, &s.grad, &mut s.dz, Some(dx), &mut s.workspace);
            if !(j == 0 && i == 0) {
                s.step_down();
            }
        }
        if i == 0 {
            break;
        }
        // Split the concat's gradient, then back through the upsample and
        // the previous level's transition to its route.
        let up = links.upsamples[i - 1].output();
        links.concats[i - 1].backward(
            backend,
            &[up, features[2 - i]],
            &s.grad,
            &mut [&mut links.upsampled_grad, &mut feature_grads[2 - i]],
        );
        links.upsamples[i - 1].backward(backend, &links.upsampled_grad, &mut s.grad_next);
        let t = levels[i - 1]
            .transition
            .expect("levels 0 and 1 have a transition");
        let (done, rest) = units.split_at_mut(t);
        let route = done[levels[i - 1].block[4]].output();
        rest[0].backward(
            backend,
            route,
            &s.grad_next,
            &mut s.dz,
            Some(&mut links.route_grads[i - 1]),
            &mut s.workspace,
        );
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
