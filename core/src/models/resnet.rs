//! ResNet as PaddleDetection 0.x's `ResNet` and `ResNetC5` build it
//! (`ppdet/modeling/backbones/resnet.py`, variant b: a bottleneck's stride is
//! on its 3x3 conv), with the ImageNet names of `name_adapter.py`:
//!
//! - the stem `conv1` (7x7, stride 2, ReLU; norm `bn_conv1`), then a 3x3
//!   stride-2 max pool;
//! - stages res2..res5 of residual blocks `res{stage}{letter}` (`res2a`,
//!   `res2b`, ...; a res4 of more than ten blocks counts `res4a`, `res4b1`,
//!   `res4b2`, ...). A block's residual path is `_branch2a`, `_branch2b`
//!   (and `_branch2c` for bottlenecks), its projection shortcut `_branch1`
//!   when its input and output differ; the sum goes through a ReLU.
//!
//! Every conv has no bias and a norm: `affine_channel` (scale and offset,
//! PaddleDetection's default) or `bn` (with running statistics), named
//! `bn` + the conv name without `res` (`bn2a_branch2a_scale`). `freeze_norm`
//! gives the norm's scale and offset learning rate 0 (and batch norm its
//! running statistics in training too); `norm_decay` is their L2 decay.
//! Conv weights take conv2d's default initialiser and the optimizer's decay
//! (`lr_mult_list` is 1 everywhere in the configs and not described).
//!
//! The Faster R-CNN C4 model runs stages res2..res4 as its backbone
//! (`feature_maps: 4`) and res5 on each RoI (`ResNetC5`, the severed head:
//! the stages of its `feature_maps`, no stem).
//!
//! At run time `ResNetLinks` holds what is not a conv unit (the stem's pool,
//! the blocks' sums and ReLUs) and runs forward and backward on the slice
//! of the detector's `ConvNet` units that the spec lists, the backbone's
//! and the head's alike; `freeze_at` is the backward pass stopping at
//! `frozen_units()`.

use super::conv_unit::{
    accumulate, copy_into, Activation, ConvUnit, ConvUnitSpec, NameStyle, Norm, ParamAttr, Scratch,
    WeightInit,
};
use crate::backend::Backend;
use crate::layers::{ActivationLayer, Add, MaxPool2d};
use crate::tensor::Tensor;

/// The depths PaddleDetection's ResNet builds.
pub const DEPTHS: [usize; 6] = [18, 34, 50, 101, 152, 200];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// Two 3x3 convs (depth 18, 34).
    Basic,
    /// 1x1, 3x3, 1x1 with four times the width out (depth 50 and more).
    Bottleneck,
}

/// ResNet's `norm_type` (`sync_bn` is `bn` on one device).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormType {
    BatchNorm,
    AffineChannel,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ResNetSpec {
    /// Residual blocks of stages res2..res5.
    pub blocks: [usize; 4],
    pub block: BlockKind,
    /// The stem's channels and res2's block width (64); stage `s` is
    /// `width << (s - 2)` wide. Smaller only in the test models.
    pub width: usize,
    pub norm_type: NormType,
    pub freeze_norm: bool,
    pub norm_decay: f32,
    /// The stem and stages res2..=res`freeze_at` get no gradient (0 and 1
    /// freeze nothing: Paddle stops gradients at stage outputs only).
    pub freeze_at: usize,
    /// The stages (2..=5, increasing) whose outputs are the features
    /// `res{s}_sum`; the backbone runs every stage up to the last.
    pub feature_maps: Vec<usize>,
}

/// One residual block's convs.
#[derive(Debug, Clone, PartialEq)]
pub struct ResBlockSpec {
    /// `res2a`, `res4b22`, ...
    pub name: String,
    /// The residual path: branch2a, branch2b (and branch2c), the last
    /// without activation.
    pub branch: Vec<ConvUnitSpec>,
    /// The projection `branch1` (1x1, no activation); None: the input itself.
    pub shortcut: Option<ConvUnitSpec>,
}

impl ResBlockSpec {
    /// The convs in Paddle's creation order: the residual path, then the
    /// shortcut.
    pub fn units(&self) -> impl Iterator<Item = &ConvUnitSpec> {
        self.branch.iter().chain(&self.shortcut)
    }
}

impl ResNetSpec {
    /// PaddleDetection's `ResNet` defaults at `depth`: affine channel,
    /// frozen norms without decay, `freeze_at: 2`, features res2..res5.
    /// None for a depth ResNet does not have (see `DEPTHS`).
    pub fn new(depth: usize) -> Option<ResNetSpec> {
        let (blocks, block) = match depth {
            18 => ([2, 2, 2, 2], BlockKind::Basic),
            34 => ([3, 4, 6, 3], BlockKind::Basic),
            50 => ([3, 4, 6, 3], BlockKind::Bottleneck),
            101 => ([3, 4, 23, 3], BlockKind::Bottleneck),
            152 => ([3, 8, 36, 3], BlockKind::Bottleneck),
            200 => ([3, 12, 48, 3], BlockKind::Bottleneck),
            _ => return None,
        };
        Some(ResNetSpec {
            blocks,
            block,
            width: 64,
            norm_type: NormType::AffineChannel,
            freeze_norm: true,
            norm_decay: 0.0,
            freeze_at: 2,
            feature_maps: vec![2, 3, 4, 5],
        })
    }

    /// `ResNetC5`: the same network's res5 alone, on RoI features.
    pub fn c5_head(&self) -> ResNetSpec {
        ResNetSpec {
            feature_maps: vec![5],
            ..self.clone()
        }
    }

    fn expansion(&self) -> usize {
        match self.block {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }

    /// Channels out of stage `stage` (2..=5); 1 is the stem.
    pub fn stage_channels(&self, stage: usize) -> usize {
        if stage < 2 {
            self.width
        } else {
            (self.width << (stage - 2)) * self.expansion()
        }
    }

    /// Channels of the features, in `feature_maps` order.
    pub fn feature_channels(&self) -> Vec<usize> {
        self.feature_maps
            .iter()
            .map(|&s| self.stage_channels(s))
            .collect()
    }

    fn unit(
        &self,
        name: String,
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
        act: Activation,
    ) -> ConvUnitSpec {
        let attr = ParamAttr {
            decay: Some(self.norm_decay),
            learning_rate: if self.freeze_norm { 0.0 } else { 1.0 },
            constant: None,
        };
        ConvUnitSpec {
            prefix: name,
            style: NameStyle::ResNet,
            in_channels: cin,
            out_channels: cout,
            kernel,
            stride,
            padding: None,
            dilation: 1,
            groups: 1,
            norm: match self.norm_type {
                NormType::BatchNorm => Norm::BatchNorm(attr),
                NormType::AffineChannel => Norm::AffineChannel(attr),
            },
            activation: act,
            init: WeightInit::ConvDefaultNormal,
            weight: ParamAttr::DEFAULT,
        }
    }

    /// The stem conv `conv1` (the max pool after it has no parameters).
    pub fn stem(&self) -> ConvUnitSpec {
        self.unit("conv1".into(), 3, self.width, 7, 2, Activation::Relu)
    }

    /// The blocks of stage `stage` (2..=5).
    pub fn stage_blocks(&self, stage: usize) -> Vec<ResBlockSpec> {
        let count = self.blocks[stage - 2];
        let width = self.width << (stage - 2);
        let out = width * self.expansion();
        let mut cin = self.stage_channels(stage - 1);
        (0..count)
            .map(|i| {
                let name = match i {
                    0 => format!("res{stage}a"),
                    _ if count > 10 && stage == 4 => format!("res4b{i}"),
                    _ => format!("res{stage}{}", (b'a' + i as u8) as char),
                };
                let stride = if i == 0 && stage != 2 { 2 } else { 1 };
                let conv = |branch: &str, cin, cout, kernel, stride, act| {
                    self.unit(format!("{name}_{branch}"), cin, cout, kernel, stride, act)
                };
                let relu = Activation::Relu;
                let none = Activation::Identity;
                let branch = match self.block {
                    BlockKind::Bottleneck => vec![
                        conv("branch2a", cin, width, 1, 1, relu),
                        conv("branch2b", width, width, 3, stride, relu),
                        conv("branch2c", width, out, 1, 1, none),
                    ],
                    BlockKind::Basic => vec![
                        conv("branch2a", cin, width, 3, stride, relu),
                        conv("branch2b", width, width, 3, 1, none),
                    ],
                };
                // Basic stages project res2a's input too (`is_first`).
                let first_basic = self.block == BlockKind::Basic && stage == 2 && i == 0;
                let shortcut = (cin != out || stride != 1 || first_basic)
                    .then(|| conv("branch1", cin, out, 1, stride, none));
                cin = out;
                ResBlockSpec {
                    name,
                    branch,
                    shortcut,
                }
            })
            .collect()
    }

    fn last_stage(&self) -> usize {
        self.feature_maps.last().copied().unwrap_or(1)
    }

    /// The backbone's convs in Paddle's creation order: the stem, then
    /// every block of res2 up to the last feature stage.
    pub fn units(&self) -> Vec<ConvUnitSpec> {
        let mut units = vec![self.stem()];
        for stage in 2..=self.last_stage() {
            for block in self.stage_blocks(stage) {
                units.extend(block.units().cloned());
            }
        }
        units
    }

    /// The severed head's convs (`ResNetC5`): the blocks of the
    /// `feature_maps` stages only, no stem.
    pub fn head_units(&self) -> Vec<ConvUnitSpec> {
        let mut units = Vec::new();
        for &stage in &self.feature_maps {
            for block in self.stage_blocks(stage) {
                units.extend(block.units().cloned());
            }
        }
        units
    }

    /// How many of `units()` `freeze_at` freezes: the stem and stages
    /// res2..=res`freeze_at`, none below 2.
    pub fn frozen_units(&self) -> usize {
        if self.freeze_at < 2 {
            return 0;
        }
        1 + (2..=self.freeze_at.min(self.last_stage()))
            .map(|s| {
                self.stage_blocks(s)
                    .iter()
                    .map(|b| b.units().count())
                    .sum::<usize>()
            })
            .sum::<usize>()
    }
}

/// One residual block at run time: where its units sit in the slice the
/// network runs on (the residual path from `first`, then the projection if
/// any), and the ReLU on its sum, whose output is the block's.
struct Block<B: Backend> {
    first: usize,
    branch: usize,
    shortcut: bool,
    relu: ActivationLayer<B>,
}

impl<B: Backend> Block<B> {
    /// The block's last unit: the projection, or the end of the residual path.
    fn last_unit(&self) -> usize {
        self.first + self.branch + usize::from(self.shortcut) - 1
    }
}

/// The layers of a ResNet that are not conv units: the stem's max pool
/// (3x3, stride 2, padding 1, floor mode as `c1_stage`), each block's sum
/// and ReLU. The same code runs the backbone (stem and stages up to the
/// last feature) and the severed head `ResNetC5` (the feature stages on RoI
/// features, no stem); the conv units live in the detector's `ConvNet`,
/// and every call takes the slice of them this network runs, in spec order
/// (`ResNetSpec::units` or `head_units`).
pub struct ResNetLinks<B: Backend> {
    stem_pool: Option<MaxPool2d<B>>,
    blocks: Vec<Block<B>>,
    /// The block whose output is each feature, in `feature_maps` order.
    feature_blocks: Vec<usize>,
    /// One sum for every block whose residual path keeps its output: it is
    /// read once, by the block's ReLU, and backward needs only the ReLU's
    /// output.
    sum: Add<B>,
    /// The outputs no backward pass reads (see `forward`): two buffers lent
    /// in turn, as no more than two of those outputs are read at once.
    lent_outputs: [Tensor<B>; 2],
}

/// What block `b` reads: the previous block's output (`earlier` are the
/// blocks before it), the stem's pool, or the network's input.
fn block_input<'a, B: Backend>(
    stem_pool: &'a Option<MaxPool2d<B>>,
    earlier: &'a [Block<B>],
    input: &'a Tensor<B>,
) -> &'a Tensor<B> {
    match (earlier.last(), stem_pool) {
        (Some(previous), _) => previous.relu.output(),
        (None, Some(pool)) => pool.output(),
        (None, None) => input,
    }
}

/// The input of a block's backward pass: read (with whether its gradient
/// is wanted, then left in `Scratch::grad`), or replaced by its gradient.
enum BlockInput<'a, B: Backend> {
    Read { x: &'a Tensor<B>, below: bool },
    Replace(&'a mut Tensor<B>),
}

/// The residual path's unit `d` from the block's end: the gradient of its
/// output and the scratch its input's gradient goes to. Unit 0 reads the
/// sum's (`grad`) and writes `grad_next`; from there on the two buffers
/// take turns, unit `d` writing `grad_next` when `d` is even (the roles
/// stay fixed: `Scratch::equalize` relies on it).
fn path_grads<'a, B: Backend>(
    grad: &'a Tensor<B>,
    grad_next: &'a mut Tensor<B>,
    grad_branch: &'a mut Tensor<B>,
    d: usize,
) -> (&'a Tensor<B>, &'a mut Tensor<B>) {
    match (d, d % 2) {
        (0, _) => (grad, grad_next),
        (_, 0) => (grad_branch, grad_next),
        _ => (grad_next, grad_branch),
    }
}

impl<B: Backend> ResNetLinks<B> {
    /// The backbone: the stem and stages res2 up to the last of
    /// `feature_maps`, on `spec.units()`.
    pub fn backbone(backend: &B, spec: &ResNetSpec) -> Self {
        let stages: Vec<usize> = (2..=spec.last_stage()).collect();
        Self::build(backend, spec, &stages, true)
    }

    /// The severed head (`ResNetC5`): the `feature_maps` stages alone, on
    /// `spec.head_units()`.
    pub fn head(backend: &B, spec: &ResNetSpec) -> Self {
        Self::build(backend, spec, &spec.feature_maps, false)
    }

    fn build(backend: &B, spec: &ResNetSpec, stages: &[usize], stem: bool) -> Self {
        let mut next = usize::from(stem);
        let mut blocks = Vec::new();
        let mut feature_blocks = Vec::new();
        for &stage in stages {
            for block in spec.stage_blocks(stage) {
                blocks.push(Block {
                    first: next,
                    branch: block.branch.len(),
                    shortcut: block.shortcut.is_some(),
                    relu: ActivationLayer::new(backend, Activation::Relu),
                });
                next += block.units().count();
            }
            if spec.feature_maps.contains(&stage) {
                feature_blocks.push(blocks.len() - 1);
            }
        }
        ResNetLinks {
            stem_pool: stem.then(|| MaxPool2d::new(backend, 3, 2, 1)),
            blocks,
            feature_blocks,
            sum: Add::new(backend),
            lent_outputs: [Tensor::zeros(backend, &[0]), Tensor::zeros(backend, &[0])],
        }
    }

    /// How many conv units the network runs (the length of its slice).
    pub fn unit_count(&self) -> usize {
        self.blocks.last().map_or(0, |b| b.last_unit() + 1)
    }

    /// Runs the network on `input` (the image, or the RoI features for the
    /// head); the features are then `features()`. Every buffer takes the
    /// shapes of this input (images of any size).
    ///
    /// Outputs no backward pass reads are not kept: they go into two shared
    /// buffers (`lent_outputs`), each handed back once the next layer has
    /// read it, instead of one buffer each. That holds for every unit before
    /// `frozen` (the stem when `frozen > 0`, and each block whose units all
    /// come before it: `backward`'s `stop`), and for the two units that end
    /// a trained block, the residual path's last conv and the projection,
    /// when their backward does not read their output (an identity after a
    /// conv and a norm with running statistics: every affine channel). The
    /// block's sum then goes into the residual path's buffer, and only the
    /// ReLU on it keeps an output. At 800 pixels ResNet50's frozen stem
    /// and res2 hold 82 MiB shared instead of 224, and C4's res5 on 512
    /// RoIs 392 MiB shared where its blocks' last units and sums held 980.
    /// Units whose batch norm uses batch
    /// statistics keep their own outputs (their norm reads its input in
    /// backward), and their blocks' sums go through `sum`.
    pub fn forward(
        &mut self,
        backend: &B,
        units: &mut [ConvUnit<B>],
        input: &Tensor<B>,
        frozen: usize,
        workspace: &mut Tensor<B>,
    ) {
        assert_eq!(units.len(), self.unit_count(), "ResNet: unit count");
        let shared = &mut self.lent_outputs;
        if let Some(pool) = &mut self.stem_pool {
            let lend = frozen > 0 && units[0].output_is_conv_output();
            if lend {
                units[0].swap_output(&mut shared[0]);
            }
            let stem = units[0].forward(backend, input, workspace);
            pool.forward(backend, stem);
            if lend {
                units[0].swap_output(&mut shared[0]);
            }
        }
        for b in 0..self.blocks.len() {
            let (earlier, rest) = self.blocks.split_at_mut(b);
            let block = &mut rest[0];
            let (first, branch, last) = (block.first, block.branch, block.last_unit());
            let tail = first + branch - 1;
            let lend_all = last < frozen
                && units[first..=last]
                    .iter()
                    .all(ConvUnit::output_is_conv_output);
            let unread = |k: usize| {
                units[k].output_is_conv_output()
                    && (k < frozen || !units[k].backward_reads_output())
            };
            let lend_tail = lend_all || unread(tail);
            let lend_short = block.shortcut && (lend_all || unread(last));
            // Residual unit `j` lends shared buffer `j % 2`, handing back
            // unit `j - 1`'s once it has read it; the projection takes the
            // buffer the path's last unit does not hold.
            let (tail_slot, short_slot) = ((branch - 1) % 2, branch % 2);
            let x = block_input(&self.stem_pool, earlier, input);
            for k in first..=tail {
                let (done, rest) = units.split_at_mut(k);
                if (k == tail && lend_tail) || lend_all {
                    rest[0].swap_output(&mut shared[(k - first) % 2]);
                }
                let x = if k == first { x } else { done[k - 1].output() };
                rest[0].forward(backend, x, workspace);
                if k > first && lend_all {
                    done[k - 1].swap_output(&mut shared[(k - 1 - first) % 2]);
                }
            }
            if block.shortcut {
                if lend_short {
                    units[last].swap_output(&mut shared[short_slot]);
                }
                units[last].forward(backend, x, workspace);
            }
            let sum = if lend_tail {
                // The path's output, handed back, becomes the sum.
                units[tail].swap_output(&mut shared[tail_slot]);
                let short = if block.shortcut {
                    units[last].output()
                } else {
                    x
                };
                let sum = &mut shared[tail_slot];
                backend.axpy(sum.numel(), 1.0, short.buf(), sum.buf_mut());
                &shared[tail_slot]
            } else {
                let short = if block.shortcut {
                    units[last].output()
                } else {
                    x
                };
                self.sum.forward(backend, short, units[tail].output())
            };
            block.relu.forward(backend, sum);
            if lend_short {
                units[last].swap_output(&mut shared[short_slot]);
            }
        }
    }

    /// The features after `forward`, in `feature_maps` order (`res4_sum`
    /// for the C4 backbone, `res2_sum`..`res5_sum` for FPN's, `res5_sum`
    /// for the head).
    pub fn features(&self) -> Vec<&Tensor<B>> {
        self.feature_blocks
            .iter()
            .map(|&b| self.blocks[b].relu.output())
            .collect()
    }

    /// How many features, the shallowest first, have nothing trained
    /// upstream when the units before `stop` are frozen: `backward` never
    /// reads their gradients (frozen stages' outputs, as Paddle's
    /// `stop_gradient` at `res{freeze_at}_sum`), so the layers above need
    /// not compute them.
    pub fn frozen_features(&self, stop: usize) -> usize {
        self.feature_blocks
            .iter()
            .take_while(|&&b| self.blocks[b].last_unit() < stop)
            .count()
    }

    /// Backward from the features' gradients (`feature_grads[k]` for
    /// `features()[k]`) after a `forward` on `input`: the gradients of the
    /// units from `stop` on (those before are frozen and get nothing). The
    /// input gets none (the backbone's image; the head's RoI features take
    /// `backward_replacing_input`).
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &mut self,
        backend: &B,
        units: &mut [ConvUnit<B>],
        input: &Tensor<B>,
        feature_grads: &[Tensor<B>],
        stop: usize,
        s: &mut Scratch<B>,
    ) {
        assert_eq!(units.len(), self.unit_count(), "ResNet: unit count");
        assert_eq!(
            feature_grads.len(),
            self.feature_blocks.len(),
            "ResNet: one gradient per feature"
        );
        let deepest = self.deepest_block();
        for b in (0..=deepest).rev() {
            if self.blocks[b].last_unit() < stop {
                return;
            }
            // s.grad: the gradient of the block's output, from the block
            // above and, for a feature, from the layers on it.
            if let Some(k) = self.feature_blocks.iter().position(|&f| f == b) {
                if b == deepest {
                    copy_into(backend, &feature_grads[k], &mut s.grad);
                } else {
                    accumulate(backend, &feature_grads[k], &mut s.grad);
                }
            }
            let x = block_input(&self.stem_pool, &self.blocks[..b], input);
            // Anything upstream of the block's input to train?
            let below = self.blocks[b].first > stop;
            if !self.block_backward(backend, units, b, BlockInput::Read { x, below }, stop, s) {
                return;
            }
        }
        // s.grad: the gradient of the first block's input.
        if let Some(pool) = &mut self.stem_pool {
            pool.backward(backend, units[0].output(), &s.grad, &mut s.grad_next);
            s.step_down();
            units[0].backward(backend, input, &s.grad, &mut s.dz, None, &mut s.workspace);
        }
    }

    /// The severed head's backward (`ResNetC5`: no stem, one feature,
    /// every unit trained) from its feature's gradient, which the caller
    /// has written into `s.grad` (C4's pool: no buffer of res5's output's
    /// size besides the scratch, no copy), after a `forward` on `input`.
    /// `input` (the RoI features) then holds its own gradient: the first
    /// block overwrites it once its convs have read it, with no buffer of
    /// its size besides (392 MiB at C4's 512 RoIs).
    pub fn backward_replacing_input(
        &mut self,
        backend: &B,
        units: &mut [ConvUnit<B>],
        input: &mut Tensor<B>,
        s: &mut Scratch<B>,
    ) {
        assert_eq!(units.len(), self.unit_count(), "ResNet: unit count");
        assert!(
            self.stem_pool.is_none() && self.feature_blocks.len() == 1,
            "ResNet: only the severed head replaces its input by its gradient"
        );
        for b in (1..=self.deepest_block()).rev() {
            let x = block_input(&self.stem_pool, &self.blocks[..b], input);
            let read = BlockInput::Read { x, below: true };
            self.block_backward(backend, units, b, read, 0, s);
        }
        self.block_backward(backend, units, 0, BlockInput::Replace(input), 0, s);
    }

    /// The last block, whose output is the deepest feature.
    fn deepest_block(&self) -> usize {
        let deepest = self.blocks.len() - 1;
        assert_eq!(
            self.feature_blocks.last(),
            Some(&deepest),
            "the deepest feature is the last block's"
        );
        deepest
    }

    /// Backward through block `b` from its output's gradient in `s.grad`:
    /// the gradients of its units from `stop` on and, when `input` asks
    /// for it, its input's (in `s.grad`, or replacing the input). Returns
    /// whether the blocks below need their pass (the input's gradient was
    /// made).
    fn block_backward(
        &self,
        backend: &B,
        units: &mut [ConvUnit<B>],
        b: usize,
        input: BlockInput<'_, B>,
        stop: usize,
        s: &mut Scratch<B>,
    ) -> bool {
        let block = &self.blocks[b];
        let (first, branch, shortcut) = (block.first, block.branch, block.shortcut);
        let last = block.last_unit();
        block.relu.backward(backend, &s.grad, &mut s.grad_next);
        s.step_down();
        // s.grad: the sum's gradient, which both paths receive. The
        // residual path, last unit first, passes its gradient between
        // grad_next and grad_branch (see `path_grads`); the path's
        // gradient of the block's input lands in grad_next (an odd number
        // of units, the bottleneck's) or grad_branch, the projection's in
        // the other.
        for k in (first + 1..first + branch).rev() {
            if k < stop {
                break;
            }
            let d = first + branch - 1 - k;
            let (dy, dx) = path_grads(&s.grad, &mut s.grad_next, &mut s.grad_branch, d);
            let (done, rest) = units.split_at_mut(k);
            let dx = (k > stop).then_some(dx);
            rest[0].backward(
                backend,
                done[k - 1].output(),
                dy,
                &mut s.dz,
                dx,
                &mut s.workspace,
            );
        }
        let (dy, dx) = path_grads(&s.grad, &mut s.grad_next, &mut s.grad_branch, branch - 1);
        let (path, rest) = units[first..=last]
            .split_first_mut()
            .expect("a block has units");
        let short = shortcut.then(|| &mut rest[branch - 1]);
        match input {
            BlockInput::Read { x, below } => {
                if first >= stop {
                    let dx = below.then_some(dx);
                    path.backward(backend, x, dy, &mut s.dz, dx, &mut s.workspace);
                }
                let in_next = branch % 2 == 1;
                if let Some(short) = short.filter(|_| last >= stop) {
                    let dx = if in_next {
                        &mut s.grad_branch
                    } else {
                        &mut s.grad_next
                    };
                    let dx = below.then_some(dx);
                    short.backward(backend, x, &s.grad, &mut s.dz, dx, &mut s.workspace);
                }
                if !below {
                    return false;
                }
                if shortcut {
                    // The sum of both, in grad_next either way.
                    accumulate(backend, &s.grad_branch, &mut s.grad_next);
                    s.step_down();
                } else {
                    // The identity passes the sum's gradient on: add the
                    // residual path's to it.
                    let path = if in_next {
                        &s.grad_next
                    } else {
                        &s.grad_branch
                    };
                    accumulate(backend, path, &mut s.grad);
                }
            }
            BlockInput::Replace(x) => {
                // Both convs read `x` for their parameters' gradients
                // before the path's input gradient overwrites it; the
                // projection's conv-output gradient waits meanwhile in the
                // scratch the path's input gradient would have taken, and
                // its input gradient is added last.
                let short_dz = short.map(|short| {
                    let own = short.conv_output_grad(backend, &s.grad, dx);
                    let dz = if own { &*dx } else { &s.grad };
                    short.conv.backward_filter(backend, x, dz, &mut s.workspace);
                    (short, own)
                });
                let dz = if path.conv_output_grad(backend, dy, &mut s.dz) {
                    &s.dz
                } else {
                    dy
                };
                path.conv.backward_filter(backend, x, dz, &mut s.workspace);
                path.conv
                    .backward_data(backend, dz, x, false, &mut s.workspace);
                match short_dz {
                    Some((short, own)) => {
                        let dz = if own { &*dx } else { &s.grad };
                        short
                            .conv
                            .backward_data(backend, dz, x, true, &mut s.workspace);
                    }
                    // The identity passes the sum's gradient on.
                    None => accumulate(backend, &s.grad, x),
                }
            }
        }
        true
    }

    /// Bytes of the pool's, the sum's and the ReLUs' outputs and of the
    /// shared ones the units lend.
    pub fn planned_bytes(&self, backend: &B) -> usize {
        self.stem_pool
            .as_ref()
            .map_or(0, |p| p.planned_bytes(backend))
            + self.sum.planned_bytes(backend)
            + self
                .lent_outputs
                .iter()
                .map(|t| t.capacity_bytes(backend))
                .sum::<usize>()
            + self
                .blocks
                .iter()
                .map(|b| b.relu.planned_bytes(backend))
                .sum::<usize>()
    }
}

/// PaddleDetection's ResNet, ResNetC5 and FPN at the small models' size on
/// fixed weights and inputs (`core/tests/fixtures/faster_rcnn/
/// resnet_features.py`): the inputs as the script makes them, and its
/// outputs and gradients.
#[cfg(test)]
pub(crate) mod fixture {
    use pulsefocus_formats::{load_checkpoint, Checkpoint};
    use std::path::PathBuf;

    /// The image sizes (height, width) the script ran.
    pub const SIZES: [(usize, usize); 2] = [(64, 64), (64, 96)];
    pub const ROI_SHAPE: [usize; 4] = [1, 128, 14, 14];

    pub fn dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/faster_rcnn/resnet_features")
    }

    /// The weights of both programs, one file per variable.
    pub fn weights() -> PathBuf {
        dir().join("weights")
    }

    pub fn expected() -> Checkpoint {
        load_checkpoint(&dir().join("expected")).expect("the expected values load")
    }

    /// An expected tensor's shape and values.
    pub fn tensor(expected: &Checkpoint, name: &str) -> (Vec<usize>, Vec<f32>) {
        let t = expected
            .get(name)
            .unwrap_or_else(|| panic!("{name}: not in the fixture"));
        (t.shape().to_vec(), t.to_f32_vec())
    }

    /// `((x*x*7 + x*y*3 + y*13 + c*29) % 17 - 8) / 4`, one image.
    pub fn image(height: usize, width: usize) -> Vec<f32> {
        let mut v = Vec::with_capacity(3 * height * width);
        for c in 0..3 {
            for y in 0..height {
                for x in 0..width {
                    let code = (x * x * 7 + x * y * 3 + y * 13 + c * 29) % 17;
                    v.push((code as f32 - 8.0) / 4.0);
                }
            }
        }
        v
    }

    pub fn roi_feat() -> Vec<f32> {
        let n: usize = ROI_SHAPE.iter().product();
        (0..n).map(|i| ((i * 13) % 19) as f32 / 8.0).collect()
    }

    /// The probe of the script's output `k` (its position in `PROBES`).
    pub fn probe(k: usize, len: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 37 + k * 11) % 13) as f32 / 8.0 - 0.75)
            .collect()
    }

    /// Every value within `rel` of Paddle's largest magnitude; returns the
    /// largest difference relative to it.
    pub fn assert_close(what: &str, ours: &[f32], theirs: &[f32], rel: f32) -> f32 {
        assert_eq!(ours.len(), theirs.len(), "{what}: lengths");
        let scale = theirs.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(scale > 0.0, "{what}: Paddle's values are all zero");
        let worst = ours
            .iter()
            .zip(theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max)
            / scale;
        assert!(worst <= rel, "{what}: off by {worst:e} of {scale}");
        worst
    }

    /// The frozen units' gradients were never written (they start at 0).
    pub(crate) fn assert_frozen_untouched(net: &crate::models::ConvNet<crate::CpuBackend>) {
        for slot in net.slots() {
            if slot.unit < net.frozen_units() {
                let grad = net.param_grad(&slot.param.spec.name).unwrap_or_default();
                assert!(
                    grad.iter().all(|&g| g == 0.0),
                    "{} is frozen but has a gradient",
                    slot.param.spec.name
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::fixture::{self, SIZES};
    use crate::gradcheck::{
        check_gradient, check_params, probe_loss, random_vec, GradCheck, SEEDS,
    };
    use crate::models::{ConvNet, FasterRcnnSpec};
    use crate::CpuBackend;

    /// `small_c4`'s backbone (res2..res4) and ResNetC5 head on Paddle's
    /// weights: res4 at two image sizes (and back: the buffers follow the
    /// input), res5 on a RoI feature, and with `freeze_at: 2` the gradients
    /// of a probe loss for parameters of res3..res5 and of the RoI feature,
    /// none for the stem and res2. Within 1e-5 of the largest value
    /// (seen: 6e-7 for the features, 1.2e-6 for the gradients).
    #[test]
    fn c4_backbone_and_head_equal_paddledetections() {
        let cpu = CpuBackend::new();
        let expected = fixture::expected();
        let backbone = FasterRcnnSpec::small_c4(5).backbone;
        let head_spec = backbone.c5_head();
        let mut specs = backbone.units();
        let split = specs.len();
        specs.extend(head_spec.head_units());
        let mut net = ConvNet::new(&cpu, specs, 1);
        crate::finetune::weights::load_weights(&mut net, &fixture::weights())
            .expect("the weights load");
        net.freeze_units(backbone.frozen_units());
        let stop = net.frozen_units();
        let mut body = ResNetLinks::backbone(&cpu, &backbone);
        let mut head = ResNetLinks::head(&cpu, &head_spec);
        let mut s = Scratch::new(&cpu);
        let (body_units, head_units) = net.units.split_at_mut(split);
        let mut image = Tensor::zeros(&cpu, &[0]);
        for (h, w) in [SIZES[0], SIZES[1], SIZES[0]] {
            image = Tensor::from_host(&cpu, &[1, 3, h, w], &fixture::image(h, w));
            body.forward(&cpu, body_units, &image, stop, &mut s.workspace);
            let (shape, paddle) = fixture::tensor(&expected, &format!("{h}x{w}.res4_sum"));
            let ours = body.features()[0];
            assert_eq!(ours.shape(), shape.as_slice());
            fixture::assert_close("res4", &ours.to_host(&cpu), &paddle, 1e-5);
        }
        let roi = Tensor::from_host(&cpu, &fixture::ROI_SHAPE, &fixture::roi_feat());
        head.forward(&cpu, head_units, &roi, 0, &mut s.workspace);
        let (shape, paddle) = fixture::tensor(&expected, "64x64.res5_sum");
        assert_eq!(head.features()[0].shape(), shape.as_slice());
        fixture::assert_close("res5", &head.features()[0].to_host(&cpu), &paddle, 1e-5);

        let probe = |k: usize, t: &Tensor<CpuBackend>| {
            Tensor::from_host(&cpu, t.shape(), &fixture::probe(k, t.numel()))
        };
        let res4_grad = probe(0, body.features()[0]);
        let res5_grad = probe(1, head.features()[0]);
        // The head replaces its input (the same values as `roi`) by its
        // gradient.
        let mut roi_grad = Tensor::from_host(&cpu, &fixture::ROI_SHAPE, &fixture::roi_feat());
        copy_into(&cpu, &res5_grad, &mut s.grad);
        head.backward_replacing_input(&cpu, head_units, &mut roi_grad, &mut s);
        body.backward(&cpu, body_units, &image, &[res4_grad], stop, &mut s);
        let (_, paddle) = fixture::tensor(&expected, "grad.c4.roi_feat");
        fixture::assert_close("roi_feat gradient", &roi_grad.to_host(&cpu), &paddle, 1e-5);
        let names = [
            "res3a_branch2a_weights",
            "res3a_branch1_weights",
            "res4a_branch2b_weights",
            "res4b_branch2c_weights",
            "res5a_branch2a_weights",
            "res5a_branch2c_weights",
        ];
        for name in names {
            let (_, paddle) = fixture::tensor(&expected, &format!("grad.c4.{name}"));
            let ours = net.param_grad(name).expect("a gradient");
            fixture::assert_close(name, &ours, &paddle, 1e-5);
        }
        fixture::assert_frozen_untouched(&net);
    }

    /// ResNet50's bottleneck structure at width 2 with [1, 1, 2, 1] blocks.
    fn tiny(feature_maps: Vec<usize>, freeze_at: usize) -> ResNetSpec {
        ResNetSpec {
            blocks: [1, 1, 2, 1],
            width: 2,
            freeze_at,
            feature_maps,
            ..ResNetSpec::new(50).expect("ResNet50")
        }
    }

    struct Tiny {
        net: ConvNet<CpuBackend>,
        links: ResNetLinks<CpuBackend>,
        scratch: Scratch<CpuBackend>,
    }

    impl Tiny {
        fn features(&mut self, input: &Tensor<CpuBackend>) -> Vec<Vec<f32>> {
            let cpu = *self.net.backend();
            let workspace = &mut self.scratch.workspace;
            let frozen = self.net.frozen_units();
            self.links
                .forward(&cpu, &mut self.net.units, input, frozen, workspace);
            self.links
                .features()
                .iter()
                .map(|t| t.to_host(&cpu))
                .collect()
        }
    }

    /// The probe loss `sum_k sum(feature_k * probe_k)` of `model` on `input`.
    fn probe_features(
        model: &mut Tiny,
        input: &Tensor<CpuBackend>,
        probes: &[Vec<f32>],
    ) -> crate::gradcheck::Probe {
        let features = model.features(input);
        features
            .iter()
            .zip(probes)
            .map(|(f, r)| probe_loss(f, r))
            .sum()
    }

    /// Finite differences of a probe loss on the features against
    /// `backward`, for parameters at every kind of place in the wiring
    /// (stem and pool, projection and identity shortcuts, the first units
    /// of a stage that `freeze_at` stops at), with the input's gradient for
    /// the head. The units' activations are the identity so the ReLUs after
    /// the sums are the only kinks.
    fn check(spec: &ResNetSpec, head: bool, input_shape: [usize; 4], names: &[&str]) {
        let cpu = CpuBackend::new();
        for seed in SEEDS {
            let mut units = if head {
                spec.head_units()
            } else {
                spec.units()
            };
            for u in &mut units {
                u.activation = Activation::Identity;
            }
            let mut net = ConvNet::new(&cpu, units, seed);
            if !head {
                net.freeze_units(spec.frozen_units());
            }
            let links = if head {
                ResNetLinks::head(&cpu, spec)
            } else {
                ResNetLinks::backbone(&cpu, spec)
            };
            let mut model = Tiny {
                net,
                links,
                scratch: Scratch::new(&cpu),
            };
            let n = input_shape.iter().product();
            let x = random_vec(seed + 100, n);
            let input = Tensor::from_host(&cpu, &input_shape, &x);
            let features = model.features(&input);
            let probes: Vec<Vec<f32>> = features
                .iter()
                .enumerate()
                .map(|(k, f)| random_vec(seed + 200 + k as u64, f.len()))
                .collect();
            let grads: Vec<Tensor<CpuBackend>> = model
                .links
                .features()
                .iter()
                .zip(&probes)
                .map(|(f, r)| Tensor::from_host(&cpu, f.shape(), r))
                .collect();
            // The head replaces its input (a copy: the checks below run
            // the model on `input` again) by its gradient.
            let mut input_grad = Tensor::from_host(&cpu, &input_shape, &x);
            let stop = model.net.frozen_units();
            let (units, s) = (&mut model.net.units, &mut model.scratch);
            if head {
                copy_into(&cpu, &grads[0], &mut s.grad);
                model
                    .links
                    .backward_replacing_input(&cpu, units, &mut input_grad, s);
            } else {
                model.links.backward(&cpu, units, &input, &grads, stop, s);
            }
            fixture::assert_frozen_untouched(&model.net);
            let case = format!("seed {seed}");
            check_params(
                &mut model,
                |m| &mut m.net,
                names,
                &case,
                (3e-3, 0.1),
                |m| probe_features(m, &input, &probes),
            );
            if head {
                let opts = GradCheck {
                    depth: 16.0 * model.net.units.len() as f64,
                    max_points: 40,
                    ..GradCheck::default()
                };
                let loss = |v: &[f32]| {
                    let input = Tensor::from_host(&cpu, &input_shape, v);
                    probe_features(&mut model, &input, &probes)
                };
                check_gradient(
                    &format!("{case} input"),
                    &x,
                    &input_grad.to_host(&cpu),
                    loss,
                    opts,
                )
                .unwrap();
            }
        }
    }

    #[test]
    fn backbone_gradients_match_finite_differences() {
        // Everything trained: the stem's gradient comes through the pool.
        check(
            &tiny(vec![2, 3, 4, 5], 0),
            false,
            [2, 3, 32, 32],
            &[
                "conv1_weights",
                "res2a_branch1_weights",
                "res2a_branch2b_weights",
                "res4a_branch2a_weights",
                "res4b_branch2c_weights",
                "res5a_branch1_weights",
            ],
        );
        // Basic blocks (two units on the residual path): projections and
        // identities.
        check(
            &ResNetSpec {
                blocks: [2, 1, 1, 1],
                width: 2,
                freeze_at: 0,
                ..ResNetSpec::new(18).expect("ResNet18")
            },
            false,
            [1, 3, 32, 32],
            &[
                "conv1_weights",
                "res2a_branch1_weights",
                "res2a_branch2b_weights",
                "res2b_branch2a_weights",
                "res4a_branch2a_weights",
            ],
        );
        // freeze_at 2 (the stem and res2 get nothing), the C4 split.
        check(
            &tiny(vec![4], 2),
            false,
            [1, 3, 48, 32],
            &[
                "res3a_branch2a_weights",
                "res3a_branch1_weights",
                "res4b_branch2a_weights",
            ],
        );
    }

    #[test]
    fn head_gradients_match_finite_differences() {
        let head = tiny(vec![4], 2).c5_head();
        check(
            &head,
            true,
            [2, 32, 6, 6],
            &[
                "res5a_branch2a_weights",
                "res5a_branch2b_weights",
                "res5a_branch1_weights",
            ],
        );
    }

    fn names(units: &[ConvUnitSpec]) -> Vec<String> {
        units
            .iter()
            .flat_map(|u| u.params())
            .map(|p| p.spec.name)
            .collect()
    }

    #[test]
    fn resnet50_stages_and_shortcuts() {
        let spec = ResNetSpec::new(50).unwrap();
        let units = spec.units();
        // 1 stem + 16 blocks of 3 convs + 4 projections.
        assert_eq!(units.len(), 1 + 16 * 3 + 4);
        assert_eq!(spec.feature_channels(), [256, 512, 1024, 2048]);
        let res3a: Vec<(&str, [usize; 4], usize)> = units
            .iter()
            .filter(|u| u.prefix.starts_with("res3a_"))
            .map(|u| (u.prefix.as_str(), u.weight_shape(), u.stride))
            .collect();
        assert_eq!(
            res3a,
            [
                ("res3a_branch2a", [128, 256, 1, 1], 1),
                ("res3a_branch2b", [128, 128, 3, 3], 2),
                ("res3a_branch2c", [512, 128, 1, 1], 1),
                ("res3a_branch1", [512, 256, 1, 1], 2),
            ]
        );
        let strides: usize = units.iter().map(|u| u.stride).product();
        // conv1, res3a, res4a, res5a: each stride 2 twice (branch and shortcut).
        assert_eq!(strides, 2 * 4 * 4 * 4);
        // freeze_at 2: the stem and res2's 3 blocks (+ res2a's projection).
        assert_eq!(spec.frozen_units(), 1 + 3 * 3 + 1);
    }

    #[test]
    fn norm_type_and_freezing_set_the_norm_params() {
        let mut spec = ResNetSpec::new(50).unwrap();
        let params = spec.stem().params();
        assert_eq!(params.len(), 3);
        assert_eq!(params[1].spec.name, "bn_conv1_scale");
        assert_eq!(
            (params[1].learning_rate, params[1].weight_decay),
            (0.0, Some(0.0))
        );
        assert_eq!(
            (params[0].learning_rate, params[0].weight_decay),
            (1.0, None)
        );
        spec.norm_type = NormType::BatchNorm;
        spec.freeze_norm = false;
        spec.norm_decay = 1e-4;
        let params = spec.stem().params();
        let got: Vec<(&str, f32, Option<f32>)> = params
            .iter()
            .map(|p| (p.spec.name.as_str(), p.learning_rate, p.weight_decay))
            .collect();
        assert_eq!(
            got,
            [
                ("conv1_weights", 1.0, None),
                ("bn_conv1_scale", 1.0, Some(1e-4)),
                ("bn_conv1_offset", 1.0, Some(1e-4)),
                ("bn_conv1_mean", 1.0, None),
                ("bn_conv1_variance", 1.0, None),
            ]
        );
    }

    /// ResNet101's res4 of 23 blocks counts `res4a`, `res4b1` ... `res4b22`.
    #[test]
    fn long_res4_is_counted_by_number() {
        let spec = ResNetSpec::new(101).unwrap();
        let blocks: Vec<String> = spec.stage_blocks(4).into_iter().map(|b| b.name).collect();
        assert_eq!(blocks.len(), 23);
        assert_eq!(&blocks[..3], ["res4a", "res4b1", "res4b2"]);
        assert_eq!(blocks[22], "res4b22");
        let res3: Vec<String> = spec.stage_blocks(3).into_iter().map(|b| b.name).collect();
        assert_eq!(res3, ["res3a", "res3b", "res3c", "res3d"]);
    }

    /// Basic blocks: two 3x3 convs, the stride on the first, and res2a
    /// projects its input although the widths agree.
    #[test]
    fn resnet18_basic_blocks() {
        let spec = ResNetSpec::new(18).unwrap();
        let res2 = names(
            &spec
                .stage_blocks(2)
                .iter()
                .flat_map(|b| b.units().cloned())
                .collect::<Vec<_>>(),
        );
        let weights: Vec<&String> = res2.iter().filter(|n| n.ends_with("_weights")).collect();
        assert_eq!(
            weights,
            [
                "res2a_branch2a_weights",
                "res2a_branch2b_weights",
                "res2a_branch1_weights",
                "res2b_branch2a_weights",
                "res2b_branch2b_weights"
            ]
        );
        let res3a = &spec.stage_blocks(3)[0];
        assert_eq!(res3a.branch[0].weight_shape(), [128, 64, 3, 3]);
        assert_eq!(res3a.branch[0].stride, 2);
        assert_eq!(spec.feature_channels(), [64, 128, 256, 512]);
        assert!(ResNetSpec::new(42).is_none());
    }

    /// Frozen units lend their outputs from two shared buffers: the
    /// features are the same bits as with only the blocks' last units
    /// lending, the frozen units hold nothing after the pass, and the whole
    /// holds less. Either way every block's last units (`branch2c` and the
    /// projection `branch1`: an affine channel and no activation, whose
    /// backward reads no output) hold nothing. `freeze_at: 3` freezes the
    /// stem, res2 and res3 (two blocks there, projection and identity),
    /// with a trained block after them. (That the blocks' backward passes
    /// are right with their last units lent, the finite-difference and
    /// PaddleDetection checks above show.)
    #[test]
    fn unread_outputs_share_two_buffers() {
        let cpu = CpuBackend::new();
        let spec = ResNetSpec {
            blocks: [1, 2, 1, 1],
            ..tiny(vec![3, 4], 3)
        };
        let input = Tensor::from_host(&cpu, &[1, 3, 64, 64], &random_vec(7, 3 * 64 * 64));
        let run = |share: bool| {
            let mut net = ConvNet::new(&cpu, spec.units(), 3);
            net.freeze_units(spec.frozen_units());
            let frozen = if share { net.frozen_units() } else { 0 };
            let mut links = ResNetLinks::backbone(&cpu, &spec);
            let mut workspace = Tensor::zeros(&cpu, &[0]);
            links.forward(&cpu, &mut net.units, &input, frozen, &mut workspace);
            let features: Vec<Vec<f32>> =
                links.features().iter().map(|t| t.to_host(&cpu)).collect();
            let frozen_held: usize = net.units[..net.frozen_units()]
                .iter()
                .map(|u| u.output().numel())
                .sum();
            let held = net.planned_bytes() + links.planned_bytes(&cpu);
            let last_units = net.units.iter().filter(|u| {
                u.spec.prefix.ends_with("branch2c") || u.spec.prefix.ends_with("branch1")
            });
            assert_eq!(last_units.clone().count(), 7);
            assert!(last_units.clone().all(|u| !u.backward_reads_output()));
            assert_eq!(last_units.map(|u| u.output().numel()).sum::<usize>(), 0);
            (features, frozen_held, held)
        };
        let (shared, shared_frozen_held, shared_held) = run(true);
        let (own, own_frozen_held, own_held) = run(false);
        assert_eq!(shared, own);
        assert_eq!(shared_frozen_held, 0);
        assert!(own_frozen_held > 0);
        assert!(shared_held < own_held, "{shared_held} >= {own_held}");
    }

    /// The C4 split: res2..res4 in the backbone, res5 alone in the head,
    /// together exactly the whole network.
    #[test]
    fn c5_head_is_the_rest_of_the_network() {
        let whole = ResNetSpec::new(50).unwrap();
        let backbone = ResNetSpec {
            feature_maps: vec![4],
            ..whole.clone()
        };
        let head = backbone.c5_head();
        let mut split = names(&backbone.units());
        assert_eq!(split.last().unwrap(), "bn4f_branch2c_offset");
        let res5 = names(&head.head_units());
        assert_eq!(res5[0], "res5a_branch2a_weights");
        assert_eq!(head.head_units()[0].in_channels, 1024);
        split.extend(res5);
        assert_eq!(split, names(&whole.units()));
    }
}
