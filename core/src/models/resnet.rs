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

use super::conv_unit::{Activation, ConvUnitSpec, NameStyle, Norm, ParamAttr, WeightInit};

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

#[cfg(test)]
mod tests {
    use super::*;

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
