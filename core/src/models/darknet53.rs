//! DarkNet53 as PaddleDetection's legacy `DarkNet` backbone builds it
//! (`ppdet/modeling/backbones/darknet.py`, release/0.5): a 3x3 stem
//! `yolo_input`, a stride-2 `yolo_input.downsample`, then five stages of
//! residual blocks (1x1 halving, 3x3 restoring, added to the block's input)
//! with a stride-2 downsample between stages. Every conv is followed by batch
//! norm and leaky ReLU (0.1). The detector takes the outputs of stages 2, 3, 4
//! (strides 8, 16, 32).

use super::conv_unit::{
    accumulate, copy_into, Activation, ConvUnit, ConvUnitSpec, NameStyle, Norm, ParamAttr, Scratch,
    WeightInit,
};
use crate::backend::Backend;
use crate::layers::Add;
use crate::tensor::Tensor;

/// Residual blocks per stage.
pub const STAGES: [usize; 5] = [1, 2, 8, 8, 4];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DarkNet53Spec {
    /// Channels of the stem (32 in DarkNet53); every width scales with it,
    /// so tests can build the same structure and names at a fraction of the
    /// size.
    pub width: usize,
}

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
        padding: None,
        dilation: 1,
        groups: 1,
        norm: Norm::BatchNorm(ParamAttr::NO_DECAY),
        activation: Activation::LEAKY_0_1,
        init: WeightInit::ConvDefaultNormal,
        weight: ParamAttr::DEFAULT,
    }
}

impl DarkNet53Spec {
    /// Half the channel count of stage `s`'s residual blocks (`ch` in the spec).
    pub fn stage_channels(&self, stage: usize) -> usize {
        self.width << stage
    }

    /// The conv units in model order: stem, stem downsample, then per stage its
    /// blocks `stage.{s}.{b}.0`, `stage.{s}.{b}.1` and, for s < 4,
    /// `stage.{s}.downsample`.
    pub fn units(&self) -> Vec<ConvUnitSpec> {
        let mut units = vec![
            dotted_unit("yolo_input".into(), 3, self.width, 3, 1),
            dotted_unit(
                "yolo_input.downsample".into(),
                self.width,
                2 * self.width,
                3,
                2,
            ),
        ];
        for (s, &blocks) in STAGES.iter().enumerate() {
            let ch = self.stage_channels(s);
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
        [2, 3, 4].map(|s| 2 * self.stage_channels(s))
    }

    /// Where each stage's units and residual sums sit, in the order of `units()`.
    pub fn layout() -> Vec<StageLayout> {
        let mut next_unit = 2;
        let mut next_add = 0;
        STAGES
            .iter()
            .enumerate()
            .map(|(s, &blocks)| {
                let stage = StageLayout {
                    first_unit: next_unit,
                    first_add: next_add,
                    blocks,
                    downsample: (s + 1 < STAGES.len()).then_some(next_unit + 2 * blocks),
                };
                next_unit += 2 * blocks + usize::from(stage.downsample.is_some());
                next_add += blocks;
                stage
            })
            .collect()
    }

    /// One residual sum per block.
    pub fn residual_count() -> usize {
        STAGES.iter().sum()
    }

    /// The index of the residual sum whose output is the stride 8, 16, 32 feature.
    pub fn feature_adds() -> [usize; 3] {
        let layout = Self::layout();
        [2, 3, 4].map(|s| layout[s].first_add + layout[s].blocks - 1)
    }
}

/// Stage `s`: block `b` is units `first_unit + 2b` (1x1) and `+ 1` (3x3),
/// whose sum with the block's input is residual `first_add + b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageLayout {
    pub first_unit: usize,
    pub first_add: usize,
    pub blocks: usize,
    pub downsample: Option<usize>,
}

/// Where a tensor of the forward pass lives.
#[derive(Debug, Clone, Copy)]
enum Source {
    Image,
    Unit(usize),
    Residual(usize),
}

fn source<'a, B: Backend>(
    image: &'a Tensor<B>,
    units: &'a [ConvUnit<B>],
    adds: &'a [Add<B>],
    at: Source,
) -> &'a Tensor<B> {
    match at {
        Source::Image => image,
        Source::Unit(i) => units[i].output(),
        Source::Residual(i) => adds[i].output(),
    }
}

/// The input of block `b` of stage `s`.
fn block_input(layout: &[StageLayout], s: usize, b: usize) -> Source {
    match (s, b) {
        (0, 0) => Source::Unit(1),
        (_, 0) => Source::Unit(layout[s - 1].downsample.expect("inner stage")),
        _ => Source::Residual(layout[s].first_add + b - 1),
    }
}

fn unit_forward<B: Backend>(
    backend: &B,
    image: &Tensor<B>,
    units: &mut [ConvUnit<B>],
    adds: &[Add<B>],
    k: usize,
    input: Source,
    workspace: &mut Tensor<B>,
) {
    let (done, rest) = units.split_at_mut(k);
    rest[0].forward(backend, source(image, done, adds, input), workspace);
}

/// Runs DarkNet53 on `image`; the features are then the outputs of the
/// residual sums `feature_adds()` names.
pub fn forward<B: Backend>(
    backend: &B,
    units: &mut [ConvUnit<B>],
    adds: &mut [Add<B>],
    image: &Tensor<B>,
    workspace: &mut Tensor<B>,
) {
    let layout = DarkNet53Spec::layout();
    unit_forward(backend, image, units, adds, 0, Source::Image, workspace);
    unit_forward(backend, image, units, adds, 1, Source::Unit(0), workspace);
    for (s, stage) in layout.iter().enumerate() {
        for b in 0..stage.blocks {
            let input = block_input(&layout, s, b);
            let u = stage.first_unit + 2 * b;
            unit_forward(backend, image, units, adds, u, input, workspace);
            unit_forward(
                backend,
                image,
                units,
                adds,
                u + 1,
                Source::Unit(u),
                workspace,
            );
            let a = stage.first_add + b;
            let (earlier, rest) = adds.split_at_mut(a);
            let x = source(image, units, earlier, input);
            rest[0].forward(backend, x, units[u + 1].output());
        }
        if let Some(d) = stage.downsample {
            let last = Source::Residual(stage.first_add + stage.blocks - 1);
            unit_forward(backend, image, units, adds, d, last, workspace);
        }
    }
}

/// Backward of unit `k` from `s.grad`, into `s.grad_next` when `k > stop`.
#[allow(clippy::too_many_arguments)]
fn unit_backward<B: Backend>(
    backend: &B,
    image: &Tensor<B>,
    units: &mut [ConvUnit<B>],
    adds: &[Add<B>],
    k: usize,
    input: Source,
    stop: usize,
    s: &mut Scratch<B>,
) {
    let (done, rest) = units.split_at_mut(k);
    let x = source(image, done, adds, input);
    let dx = (k > stop).then_some(&mut s.grad_next);
    rest[0].backward(backend, x, &s.grad, &mut s.dz, dx, &mut s.workspace);
}

/// Backward from the gradients of the three features. Units before `stop` are
/// frozen and get nothing (the pass ends at unit `stop`).
pub fn backward<B: Backend>(
    backend: &B,
    units: &mut [ConvUnit<B>],
    adds: &[Add<B>],
    image: &Tensor<B>,
    feature_grads: &[Tensor<B>; 3],
    stop: usize,
    s: &mut Scratch<B>,
) {
    let layout = DarkNet53Spec::layout();
    // s.grad holds the gradient of the current tensor: first stage 4's output.
    copy_into(backend, &feature_grads[2], &mut s.grad);
    for st in (0..layout.len()).rev() {
        let stage = layout[st];
        if let Some(d) = stage.downsample {
            // s.grad is the gradient of the downsample's output (stage st+1's input).
            if d < stop {
                return;
            }
            let last = Source::Residual(stage.first_add + stage.blocks - 1);
            unit_backward(backend, image, units, adds, d, last, stop, s);
            if d == stop {
                return;
            }
            s.step_down();
            if st >= 2 {
                accumulate(backend, &feature_grads[st - 2], &mut s.grad);
            }
        }
        for b in (0..stage.blocks).rev() {
            // s.grad is the gradient of the block's output = input + branch.
            let u = stage.first_unit + 2 * b;
            if u + 1 < stop {
                return;
            }
            unit_backward(backend, image, units, adds, u + 1, Source::Unit(u), stop, s);
            if u + 1 == stop {
                return;
            }
            // Through the 1x1 unit, from grad_next into grad_branch.
            let input = block_input(&layout, st, b);
            let (done, rest) = units.split_at_mut(u);
            let x = source(image, done, adds, input);
            let dx = (u > stop).then_some(&mut s.grad_branch);
            rest[0].backward(backend, x, &s.grad_next, &mut s.dz, dx, &mut s.workspace);
            if u == stop {
                return;
            }
            // The block's input gets the output gradient directly (the
            // shortcut) plus the branch's.
            accumulate(backend, &s.grad_branch, &mut s.grad);
        }
    }
    // The stem: s.grad is the gradient of `yolo_input.downsample`'s output.
    if stop <= 1 {
        unit_backward(backend, image, units, adds, 1, Source::Unit(0), stop, s);
        if stop == 0 {
            s.step_down();
            unit_backward(backend, image, units, adds, 0, Source::Image, stop, s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_match_the_spec() {
        let units = DarkNet53Spec { width: 32 }.units();
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
        assert_eq!(
            DarkNet53Spec { width: 32 }.feature_channels(),
            [256, 512, 1024]
        );
    }

    #[test]
    fn layout_agrees_with_the_unit_list() {
        let units = DarkNet53Spec { width: 32 }.units();
        let layout = DarkNet53Spec::layout();
        for (s, stage) in layout.iter().enumerate() {
            assert_eq!(units[stage.first_unit].prefix, format!("stage.{s}.0.0"));
            let last = stage.first_unit + 2 * stage.blocks - 1;
            assert_eq!(
                units[last].prefix,
                format!("stage.{s}.{}.1", stage.blocks - 1)
            );
            if let Some(d) = stage.downsample {
                assert_eq!(units[d].prefix, format!("stage.{s}.downsample"));
            }
        }
        assert_eq!(DarkNet53Spec::residual_count(), 23);
        assert_eq!(DarkNet53Spec::feature_adds(), [10, 18, 22]);
    }
}
