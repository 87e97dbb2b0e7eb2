//! The description of one convolution unit as PaddleDetection declares it: a
//! conv2d (no bias) followed by a norm (batch norm, or ResNet's affine
//! channel) and an activation, or a conv2d with a bias and its activation
//! (VGG's ReLU; the identity for `yolo_output` and the SSD, FPN and RPN
//! head convs). Every model here is a
//! list of these units plus the wiring between them; the parameter list, the
//! initialisation and the weight decay overrides all come from it.

use super::init::{init_param, Rng};
pub use crate::backend::Activation;
use crate::backend::Backend;
use crate::layers::{ActivationLayer, BatchNorm, Conv2d, Conv2dConfig, L2Norm};
use crate::params::ParamSpec;
use crate::tensor::Tensor;

/// How a unit's parameter names are formed from its prefix `P`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameStyle {
    /// DarkNet53 and the YOLOv3 head: `P.conv.weights`, `P.conv.bias`,
    /// `P.bn.scale`, `P.bn.offset`, `P.bn.mean`, `P.bn.var`.
    Dotted,
    /// MobileNetV1: `P_weights`, `P_bn_scale`, `P_bn_offset`, `P_bn_mean`,
    /// `P_bn_variance`.
    Underscored,
    /// VGG (`VGG._conv_layer`, the names of the Caffe-converted weights):
    /// `P_weights`, `P_biases`. Its convs have biases, never a batch norm.
    Vgg,
    /// A conv built without a name, as SSD's head convs: Paddle names its
    /// parameters after the layer's unique name `P` (`conv2d_22`):
    /// `P.w_0`, `P.b_0`. Such convs here never have a norm.
    Generated,
    /// ResNet's ImageNet names (`name_adapter.py`): `P_weights`, and the norm
    /// named `bn` + `P` without its `res` (`res2a_branch2a` ->
    /// `bn2a_branch2a_scale`; the stem `conv1` -> `bn_conv1_scale`), with
    /// `_offset`, `_mean`, `_variance`. ResNet convs never have a bias.
    ResNet,
    /// The Detectron names of the FPN, RPN and fully connected layers:
    /// `P_w`, `P_b`. Such convs here never have a norm.
    Suffixed,
}

/// How a weight is drawn when no checkpoint provides it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WeightInit {
    /// Paddle's `fluid.layers.conv2d` default for a `ParamAttr` without an
    /// initializer: Normal(0, sqrt(2 / (k * k * input_channels))), with the full
    /// input channel count even for grouped convs.
    ConvDefaultNormal,
    /// `fluid.initializer.MSRA()` (uniform by default): U(-l, l) with
    /// l = sqrt(6 / fan_in), fan_in = (input_channels / groups) * k * k.
    /// Legacy MobileNetV1 uses it for every conv.
    MsraUniform,
    /// `Normal(loc=0., scale=std)`: the RPN convs (0.01), `cls_score` (0.01)
    /// and `bbox_pred` (0.001).
    Normal { std: f32 },
    /// `MSRA(uniform=False, fan_in=fan_in)`: Normal(0, sqrt(2 / fan_in))
    /// with the fan the layer states, which for the Mask R-CNN head is not
    /// always the weight's (`mask_fcn_logits` passes its class count).
    MsraNormal { fan_in: usize },
    /// `Xavier(fan_out=...)` (uniform by default): U(-l, l) with
    /// l = sqrt(6 / (fan_in + fan_out)). A fan left None is Paddle's
    /// `_compute_fans` of the weight's shape: conv `[out, in/g, k, k]` gives
    /// fan_in `in/g * k * k`, fan_out `out * k * k`; fully connected
    /// `[in, out]` gives `in`, `out`. The FPN convs and `fc6` set fan_out,
    /// `fc7` neither.
    XavierUniform {
        fan_in: Option<usize>,
        fan_out: Option<usize>,
    },
}

/// What Paddle's `ParamAttr` says of one parameter beyond its name: its own
/// L2 decay (the `regularizer`, which wins over the optimizer's; None = the
/// optimizer's), its factor on the scheduled learning rate and, for a conv's
/// bias, a `Constant` initializer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParamAttr {
    pub decay: Option<f32>,
    pub learning_rate: f32,
    /// `initializer=Constant(value)` of a conv's bias (`Norm::Bias`), as
    /// RetinaNet's class prediction declares its prior; None: the role's
    /// usual start (`init::constant_init`). Weights draw from their
    /// `WeightInit` and norms start at their fixed values whatever it says.
    pub constant: Option<f32>,
}

impl ParamAttr {
    /// No regulariser, learning rate 1: the optimizer decides.
    pub const DEFAULT: ParamAttr = ParamAttr {
        decay: None,
        learning_rate: 1.0,
        constant: None,
    };
    /// `L2Decay(0.)`, learning rate 1: the batch norms of DarkNet and
    /// MobileNet, `yolo_output`'s bias.
    pub const NO_DECAY: ParamAttr = ParamAttr {
        decay: Some(0.0),
        ..ParamAttr::DEFAULT
    };
    /// `learning_rate=2., regularizer=L2Decay(0.)`: every bias of the Faster
    /// R-CNN and RetinaNet heads (FPN, RPN, fully connected layers, the
    /// RetinaNet subnets).
    pub const DETECTRON_BIAS: ParamAttr = ParamAttr {
        decay: Some(0.0),
        learning_rate: 2.0,
        constant: None,
    };

    /// The same attributes with a `Constant(value)` initializer.
    pub const fn with_constant(self, value: f32) -> ParamAttr {
        ParamAttr {
            constant: Some(value),
            ..self
        }
    }
}

/// What follows the conv, and the attributes of its parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Norm {
    /// No norm: the conv has a bias (initially 0) with these attributes.
    Bias(ParamAttr),
    /// `batch_norm`: scale (initially 1) and offset (0) with these
    /// attributes, then the running mean (0) and variance (1).
    BatchNorm(ParamAttr),
    /// `affine_channel`: `y = scale * x + offset` per channel, scale and
    /// offset only (ResNet's default in PaddleDetection, always frozen there).
    AffineChannel(ParamAttr),
}

/// What a parameter is inside its unit; the optimizer, freezing and the
/// initialiser dispatch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamRole {
    ConvWeight,
    ConvBias,
    /// The norm's scale and offset: batch norm's or affine channel's.
    BnScale,
    BnOffset,
    /// Running statistics: persistable, saved and loaded, never trained.
    BnMean,
    BnVariance,
    /// The scale of an L2 norm on the unit's output (`ConvUnit::l2_norm`,
    /// VGG16-SSD's `conv4_3_norm`): a parameter of its own layer, which
    /// `network::L2NormSpec` declares and names.
    L2NormScale,
    /// A fully connected layer's weight, `[inputs, outputs]`, and bias.
    FcWeight,
    FcBias,
    /// A transposed conv's weight, `[in_channels, out_channels, k, k]`, and
    /// bias (Mask R-CNN's `conv5_mask`); the layer lives in
    /// `ConvNet::transposed`.
    TransposedWeight,
    TransposedBias,
}

impl ParamRole {
    /// Whether the optimizer updates it (running statistics are not parameters
    /// of the loss).
    pub fn is_trainable(self) -> bool {
        !matches!(self, ParamRole::BnMean | ParamRole::BnVariance)
    }

    /// Whether the parameter lives in a conv unit (`ConvNet::units`), which
    /// the backbone's freezing reaches; the heads' fully connected and
    /// transposed layers live apart.
    pub fn in_conv_unit(self) -> bool {
        !matches!(
            self,
            ParamRole::FcWeight
                | ParamRole::FcBias
                | ParamRole::TransposedWeight
                | ParamRole::TransposedBias
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConvUnitSpec {
    /// The name prefix `P`, e.g. `yolo_block.0.0.0` or `conv2_1_dw`.
    pub prefix: String,
    pub style: NameStyle,
    pub in_channels: usize,
    pub out_channels: usize,
    /// Square kernel.
    pub kernel: usize,
    pub stride: usize,
    /// Padding on every side when the layer declares its own (VGG's
    /// `fc6`: 6; its extra blocks' 3x3 convs: 0 or 1); None is "same"
    /// padding, `kernel / 2`, as every other conv here.
    pub padding: Option<usize>,
    /// Spacing of the kernel taps (Paddle's `dilation`; VGG's `fc6`: 6).
    pub dilation: usize,
    pub groups: usize,
    pub norm: Norm,
    /// Fused into the batch norm, or after the biased conv.
    pub activation: Activation,
    pub init: WeightInit,
    /// The conv weight's own attributes (e.g. MobileNet's `conv_decay` and
    /// `conv_learning_rate`).
    pub weight: ParamAttr,
}

/// One parameter of a unit: its name and shape, what it is, and the L2 decay
/// coefficient its own regularizer sets (None = use the optimizer's).
#[derive(Debug, Clone, PartialEq)]
pub struct UnitParam {
    pub spec: ParamSpec,
    pub role: ParamRole,
    pub weight_decay: Option<f32>,
    /// Factor on the scheduled learning rate for this parameter.
    pub learning_rate: f32,
}

impl UnitParam {
    pub fn new(name: String, shape: &[usize], role: ParamRole, attr: ParamAttr) -> UnitParam {
        UnitParam {
            spec: ParamSpec::new(name, shape),
            role,
            weight_decay: attr.decay,
            learning_rate: attr.learning_rate,
        }
    }
}

impl ConvUnitSpec {
    pub fn padding(&self) -> usize {
        self.padding.unwrap_or(self.kernel / 2)
    }

    /// Output spatial size for an input of `size` pixels along one axis.
    pub fn output_size(&self, size: usize) -> usize {
        (size + 2 * self.padding() - self.dilation * (self.kernel - 1) - 1) / self.stride + 1
    }

    pub fn weight_shape(&self) -> [usize; 4] {
        [
            self.out_channels,
            self.in_channels / self.groups,
            self.kernel,
            self.kernel,
        ]
    }

    pub fn param_name(&self, role: ParamRole) -> String {
        param_name(&self.prefix, self.style, role)
    }

    /// The roles this unit has, in the order Paddle creates the variables:
    /// conv weight, conv bias (if any), then the norm's scale, offset and,
    /// for batch norm, mean and variance.
    pub fn roles(&self) -> Vec<ParamRole> {
        match self.norm {
            Norm::Bias(_) => vec![ParamRole::ConvWeight, ParamRole::ConvBias],
            Norm::BatchNorm(_) => vec![
                ParamRole::ConvWeight,
                ParamRole::BnScale,
                ParamRole::BnOffset,
                ParamRole::BnMean,
                ParamRole::BnVariance,
            ],
            Norm::AffineChannel(_) => vec![
                ParamRole::ConvWeight,
                ParamRole::BnScale,
                ParamRole::BnOffset,
            ],
        }
    }

    /// The attributes of the bias or of the norm's scale and offset.
    fn norm_attr(&self) -> ParamAttr {
        match self.norm {
            Norm::Bias(attr) | Norm::BatchNorm(attr) | Norm::AffineChannel(attr) => attr,
        }
    }

    /// The unit's parameters in model order, each with the attributes its
    /// `ParamAttr` declares; running statistics have no regulariser and are
    /// not trained (their learning rate is never read).
    pub fn params(&self) -> Vec<UnitParam> {
        self.roles()
            .into_iter()
            .map(|role| {
                let shape: Vec<usize> = match role {
                    ParamRole::ConvWeight => self.weight_shape().to_vec(),
                    _ => vec![self.out_channels],
                };
                let attr = match role {
                    ParamRole::ConvWeight => self.weight,
                    // The L2 norm's scale is no role of `roles()`
                    // (`L2NormSpec` declares it); were it listed, it would
                    // have `create_parameter`'s defaults.
                    ParamRole::BnMean | ParamRole::BnVariance | ParamRole::L2NormScale => {
                        ParamAttr::DEFAULT
                    }
                    _ => self.norm_attr(),
                };
                UnitParam::new(self.param_name(role), &shape, role, attr)
            })
            .collect()
    }

    /// Paddle's fans of the conv weight, for the initialisers.
    pub fn fans(&self) -> WeightFans {
        let k2 = self.kernel * self.kernel;
        WeightFans {
            fan_in: self.in_channels / self.groups * k2,
            fan_out: self.out_channels * k2,
            conv_default_elems: self.in_channels * k2,
        }
    }
}

/// The name of the parameter of `role` in a unit named `prefix` in `style`
/// (a convolution's, or a transposed convolution's, which Paddle names
/// alike).
pub fn param_name(prefix: &str, style: NameStyle, role: ParamRole) -> String {
    let p = prefix;
    match (style, role) {
        (NameStyle::Dotted, ParamRole::ConvWeight) => format!("{p}.conv.weights"),
        (NameStyle::Dotted, ParamRole::ConvBias) => format!("{p}.conv.bias"),
        (NameStyle::Dotted, ParamRole::BnScale) => format!("{p}.bn.scale"),
        (NameStyle::Dotted, ParamRole::BnOffset) => format!("{p}.bn.offset"),
        (NameStyle::Dotted, ParamRole::BnMean) => format!("{p}.bn.mean"),
        (NameStyle::Dotted, ParamRole::BnVariance) => format!("{p}.bn.var"),
        (NameStyle::Underscored, ParamRole::ConvWeight) => format!("{p}_weights"),
        (NameStyle::Underscored, ParamRole::ConvBias) => format!("{p}_bias"),
        (NameStyle::Underscored, ParamRole::BnScale) => format!("{p}_bn_scale"),
        (NameStyle::Underscored, ParamRole::BnOffset) => format!("{p}_bn_offset"),
        (NameStyle::Underscored, ParamRole::BnMean) => format!("{p}_bn_mean"),
        (NameStyle::Underscored, ParamRole::BnVariance) => format!("{p}_bn_variance"),
        (NameStyle::Vgg, ParamRole::ConvWeight) => format!("{p}_weights"),
        (NameStyle::Vgg, ParamRole::ConvBias) => format!("{p}_biases"),
        (NameStyle::Generated, ParamRole::ConvWeight) => format!("{p}.w_0"),
        (NameStyle::Generated, ParamRole::ConvBias) => format!("{p}.b_0"),
        // Paddle names an L2 norm's scale after its own `Scale` layer
        // (`Scale_N.w_0`), which the unit does not know:
        // `L2NormSpec::name` has it.
        (_, ParamRole::L2NormScale) => format!("{p}.unnamed_l2_norm_scale"),
        (NameStyle::ResNet, ParamRole::ConvWeight) => format!("{p}_weights"),
        (NameStyle::ResNet, ParamRole::BnScale) => format!("{}_scale", resnet_norm_name(p)),
        (NameStyle::ResNet, ParamRole::BnOffset) => format!("{}_offset", resnet_norm_name(p)),
        (NameStyle::ResNet, ParamRole::BnMean) => format!("{}_mean", resnet_norm_name(p)),
        (NameStyle::ResNet, ParamRole::BnVariance) => {
            format!("{}_variance", resnet_norm_name(p))
        }
        (NameStyle::Suffixed, ParamRole::ConvWeight | ParamRole::TransposedWeight) => {
            format!("{p}_w")
        }
        (NameStyle::Suffixed, ParamRole::ConvBias | ParamRole::TransposedBias) => {
            format!("{p}_b")
        }
        // Combinations no model here has (a norm after an unnamed,
        // VGG-named or Detectron-named conv, a bias on a ResNet conv, a
        // fully connected role on a conv): the names say so.
        (_, role) => format!("{p}.unnamed_{role:?}"),
    }
}

/// What an initialiser needs to know of the weight it fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeightFans {
    /// Paddle's `_compute_fans` of the weight's shape (see `XavierUniform`).
    pub fan_in: usize,
    pub fan_out: usize,
    /// `k * k * input_channels` with every input channel, what conv2d's
    /// default Normal counts (`ConvDefaultNormal`).
    pub conv_default_elems: usize,
}

/// ResNet's norm name for conv `name` (`NameAdapter.fix_conv_norm_name`):
/// `bn_conv1` for the stem, else `bn` + the name without its first three
/// characters (`res`).
fn resnet_norm_name(name: &str) -> String {
    if name == "conv1" {
        "bn_conv1".to_string()
    } else {
        format!("bn{}", name.get(3..).unwrap_or_default())
    }
}

/// A conv unit at run time: D1's conv layer and either a norm, a batch norm
/// fused with the unit's activation (an affine channel runs as a frozen
/// batch norm, see `new`), or (a conv with a bias) the activation on its own
/// unless it is the identity.
///
/// The norm or activation runs in place on the conv's output whenever its
/// backward would not read the conv's output: a batch norm with running
/// statistics (frozen, as every affine channel, or in eval), and the
/// activation after a biased conv (both backward passes read only their
/// output, and the conv's backward reads its input and `dy`). The unit then
/// keeps one activation tensor instead of two; only a batch norm with
/// batch statistics keeps the conv's output apart from its own.
pub struct ConvUnit<B: Backend> {
    pub spec: ConvUnitSpec,
    pub conv: Conv2d<B>,
    pub bn: Option<BatchNorm<B>>,
    pub act: Option<ActivationLayer<B>>,
    /// An L2 norm of the unit's output that the detector feeds to its head
    /// instead (VGG16-SSD's `conv4_3_norm`; `ConvNet::with_norms` adds it).
    /// The unit's `forward` does not run it: the chain below continues from
    /// the output itself.
    pub l2_norm: Option<L2Norm<B>>,
    /// Whether the last `forward` ran the norm or activation in place, so
    /// the unit's output is the conv's buffer. Decided per call: a batch
    /// norm may be frozen, unfrozen or switched to eval between calls.
    in_place: bool,
}

impl<B: Backend> ConvUnit<B> {
    /// Builds the unit with Paddle's initial values.
    pub fn new(backend: &B, spec: ConvUnitSpec, rng: &mut Rng) -> Self {
        let config = Conv2dConfig {
            pad: spec.padding(),
            dilation: spec.dilation,
            ..Conv2dConfig::new(
                spec.in_channels,
                spec.out_channels,
                spec.kernel,
                spec.stride,
            )
        }
        .groups(spec.groups);
        let config = match spec.norm {
            Norm::Bias(_) => config.with_bias(),
            Norm::BatchNorm(_) | Norm::AffineChannel(_) => config,
        };
        let conv = Conv2d::new(backend, config);
        let bn = match spec.norm {
            Norm::Bias(_) => None,
            Norm::BatchNorm(_) => Some(BatchNorm::new(backend, spec.out_channels, spec.activation)),
            Norm::AffineChannel(attr) => {
                assert!(
                    attr.learning_rate == 0.0,
                    "{}: affine channel with trained scale and offset (freeze_norm: false) \
                     is not built yet",
                    spec.prefix
                );
                // `act(scale * x + offset)` is exactly a frozen batch norm
                // whose mean is 0, variance 1 and epsilon 0, forward and
                // backward; its statistics are no parameters of the unit.
                let mut bn = BatchNorm::new(backend, spec.out_channels, spec.activation);
                bn.eps = 0.0;
                bn.frozen = true;
                Some(bn)
            }
        };
        let act = (bn.is_none() && spec.activation != Activation::Identity)
            .then(|| ActivationLayer::new(backend, spec.activation));
        let mut unit = ConvUnit {
            spec,
            conv,
            bn,
            act,
            l2_norm: None,
            in_place: false,
        };
        for declared in unit.spec.params() {
            let mut values = vec![0.0; declared.spec.numel()];
            init_param(&unit.spec, declared.role, &mut values, rng);
            unit.tensor_mut(declared.role).upload(backend, &values);
        }
        unit
    }

    /// The tensor holding the parameter of `role`.
    pub fn tensor(&self, role: ParamRole) -> &Tensor<B> {
        let bn = || {
            self.bn
                .as_ref()
                .expect("batch-norm role on a unit without BN")
        };
        let l2_norm = || {
            self.l2_norm
                .as_ref()
                .expect("L2-norm role on a unit without an L2 norm")
        };
        match role {
            ParamRole::ConvWeight => &self.conv.weight,
            ParamRole::ConvBias => self
                .conv
                .bias
                .as_ref()
                .expect("bias role on a unit without bias"),
            ParamRole::BnScale => &bn().scale,
            ParamRole::BnOffset => &bn().offset,
            ParamRole::BnMean => &bn().mean,
            ParamRole::BnVariance => &bn().variance,
            ParamRole::L2NormScale => &l2_norm().scale,
            role @ (ParamRole::FcWeight
            | ParamRole::FcBias
            | ParamRole::TransposedWeight
            | ParamRole::TransposedBias) => {
                panic!("{role:?}: not a role of conv unit {}", self.spec.prefix)
            }
        }
    }

    pub fn tensor_mut(&mut self, role: ParamRole) -> &mut Tensor<B> {
        match role {
            ParamRole::ConvWeight => &mut self.conv.weight,
            ParamRole::ConvBias => self
                .conv
                .bias
                .as_mut()
                .expect("bias role on a unit without bias"),
            ParamRole::L2NormScale => {
                &mut self
                    .l2_norm
                    .as_mut()
                    .expect("L2-norm role on a unit without an L2 norm")
                    .scale
            }
            role @ (ParamRole::FcWeight
            | ParamRole::FcBias
            | ParamRole::TransposedWeight
            | ParamRole::TransposedBias) => {
                panic!("{role:?}: not a role of conv unit {}", self.spec.prefix)
            }
            _ => {
                let bn = self
                    .bn
                    .as_mut()
                    .expect("batch-norm role on a unit without BN");
                match role {
                    ParamRole::BnScale => &mut bn.scale,
                    ParamRole::BnOffset => &mut bn.offset,
                    ParamRole::BnMean => &mut bn.mean,
                    _ => &mut bn.variance,
                }
            }
        }
    }

    /// The gradient of the parameter of `role` (None for running statistics
    /// and roles the unit does not have).
    pub fn grad(&self, role: ParamRole) -> Option<&Tensor<B>> {
        match role {
            ParamRole::ConvWeight => Some(&self.conv.weight_grad),
            ParamRole::ConvBias => self.conv.bias_grad.as_ref(),
            ParamRole::BnScale => self.bn.as_ref().map(|bn| &bn.scale_grad),
            ParamRole::BnOffset => self.bn.as_ref().map(|bn| &bn.offset_grad),
            ParamRole::L2NormScale => self.l2_norm.as_ref().map(|n| &n.scale_grad),
            ParamRole::BnMean
            | ParamRole::BnVariance
            | ParamRole::FcWeight
            | ParamRole::FcBias
            | ParamRole::TransposedWeight
            | ParamRole::TransposedBias => None,
        }
    }

    /// The parameter and its gradient, for the optimizer; None for the running
    /// statistics, which have no gradient, and roles the unit does not have.
    pub fn param_and_grad_mut(&mut self, role: ParamRole) -> Option<(&mut Tensor<B>, &Tensor<B>)> {
        match role {
            ParamRole::ConvWeight => Some((&mut self.conv.weight, &self.conv.weight_grad)),
            ParamRole::ConvBias => Some((self.conv.bias.as_mut()?, self.conv.bias_grad.as_ref()?)),
            ParamRole::BnScale => self.bn.as_mut().map(|bn| (&mut bn.scale, &bn.scale_grad)),
            ParamRole::BnOffset => self.bn.as_mut().map(|bn| (&mut bn.offset, &bn.offset_grad)),
            ParamRole::L2NormScale => self.l2_norm.as_mut().map(|n| (&mut n.scale, &n.scale_grad)),
            ParamRole::BnMean
            | ParamRole::BnVariance
            | ParamRole::FcWeight
            | ParamRole::FcBias
            | ParamRole::TransposedWeight
            | ParamRole::TransposedBias => None,
        }
    }

    pub fn forward(&mut self, backend: &B, x: &Tensor<B>, workspace: &mut Tensor<B>) -> &Tensor<B> {
        self.conv.forward(backend, x, workspace);
        let z = self.conv.output_mut();
        self.in_place = match (&mut self.bn, &mut self.act) {
            (Some(bn), _) if bn.runs_in_place() => {
                bn.forward_in_place(backend, z);
                true
            }
            (Some(bn), _) => {
                bn.forward(backend, z);
                false
            }
            (None, Some(act)) => {
                act.forward_in_place(backend, z);
                true
            }
            (None, None) => false,
        };
        self.output()
    }

    pub fn output(&self) -> &Tensor<B> {
        unit_output(&self.conv, &self.bn, self.in_place)
    }

    /// What a detector head reads from this unit: the output, or its L2
    /// norm's output after `forward_l2_norm`.
    pub fn head_input(&self) -> &Tensor<B> {
        match &self.l2_norm {
            Some(norm) => norm.output(),
            None => self.output(),
        }
    }

    /// Runs the unit's L2 norm (if any) on its output, after `forward`.
    pub fn forward_l2_norm(&mut self, backend: &B) {
        if let Some(norm) = &mut self.l2_norm {
            norm.forward(backend, unit_output(&self.conv, &self.bn, self.in_place));
        }
    }

    /// From `dy`, the gradient of the L2 norm's output, to its scale's
    /// gradient and the unit output's (into `dx`). The unit must have an L2
    /// norm.
    pub fn backward_l2_norm(&mut self, backend: &B, dy: &Tensor<B>, dx: &mut Tensor<B>) {
        let norm = self
            .l2_norm
            .as_mut()
            .expect("backward_l2_norm on a unit without an L2 norm");
        norm.backward(
            backend,
            unit_output(&self.conv, &self.bn, self.in_place),
            dy,
            dx,
        );
    }

    /// From `dy` (gradient of the unit's output) to the parameter gradients
    /// and, when `dx` is given, the input gradient. `dz` is scratch for the
    /// gradient of the conv output.
    pub fn backward(
        &mut self,
        backend: &B,
        x: &Tensor<B>,
        dy: &Tensor<B>,
        dz: &mut Tensor<B>,
        dx: Option<&mut Tensor<B>>,
        workspace: &mut Tensor<B>,
    ) {
        let dz = if self.conv_output_grad(backend, dy, dz) {
            dz
        } else {
            dy
        };
        self.conv.backward(backend, x, dz, dx, workspace);
    }

    /// The gradient of the conv's output from `dy` (the unit's output's),
    /// the first half of `backward`: through the norm or activation into
    /// `dz` (true), or none to take for a bare conv, whose output's
    /// gradient is `dy` itself (false, `dz` untouched).
    pub fn conv_output_grad(&mut self, backend: &B, dy: &Tensor<B>, dz: &mut Tensor<B>) -> bool {
        // After an in-place forward the conv's buffer holds the unit's
        // output, which the norm's or activation's backward reads.
        let z_or_y = self.conv.output();
        match (&mut self.bn, &self.act) {
            (Some(bn), _) if self.in_place => {
                bn.backward_from_output(backend, z_or_y, dy, Some(dz))
            }
            (Some(bn), _) => bn.backward(backend, z_or_y, dy, Some(dz)),
            (None, Some(act)) => act.backward_from_output(backend, z_or_y, dy, dz),
            (None, None) => return false,
        }
        true
    }

    /// Exchanges the unit's output (its conv's buffer, on which any
    /// activation ran in place) with `saved`. A head whose parameters are
    /// shared over several inputs (RetinaNet's over the pyramid levels)
    /// runs forward on each and swaps that run's outputs out, then swaps
    /// them back in for the backward pass of that input: no copy, and no
    /// second forward pass. A unit's backward reads its output and its
    /// input (the unit below's output), nothing else of the forward. The
    /// last unit of a chain needs none of its outputs kept once its output
    /// gradient is known. A batch norm with batch statistics keeps its own
    /// output and statistics of its input, so such a unit cannot be shared
    /// this way.
    pub fn swap_output(&mut self, saved: &mut Tensor<B>) {
        assert!(
            self.output_is_conv_output(),
            "{}: a unit whose batch norm uses batch statistics cannot swap its output",
            self.spec.prefix
        );
        self.conv.swap_output(saved);
    }

    /// Whether `backward` reads the unit's output: the derivative of an
    /// activation other than the identity reads it, and so does a batch
    /// norm with batch statistics (its input, the conv's output). A unit
    /// whose backward does not may lend its output to the layers above once
    /// they have read it (`ResNetLinks::forward`).
    pub fn backward_reads_output(&self) -> bool {
        match &self.bn {
            Some(bn) => !bn.runs_in_place() || bn.act != Activation::Identity,
            // The unit keeps an activation only when it is not the identity.
            None => self.act.is_some(),
        }
    }

    /// Whether the unit's output is its conv's buffer (no batch norm, or
    /// one that runs in place), so that `swap_output` moves all of it.
    pub fn output_is_conv_output(&self) -> bool {
        self.bn.as_ref().is_none_or(|bn| bn.runs_in_place())
    }

    /// Bytes of parameters, gradients, activations and saved statistics.
    pub fn planned_bytes(&self, backend: &B) -> usize {
        self.conv.planned_bytes(backend)
            + self.bn.as_ref().map_or(0, |bn| bn.planned_bytes(backend))
            + self
                .act
                .as_ref()
                .map_or(0, |act| act.planned_bytes(backend))
            + self
                .l2_norm
                .as_ref()
                .map_or(0, |n| n.planned_bytes(backend))
    }
}

/// Parameter gradients summed over several backward passes of the same
/// units (a head shared over pyramid levels): each pass overwrites the
/// units' gradients, so after each one `add` moves them into the sums (the
/// first by a swap), and `finish` swaps the sums back into the units.
pub struct GradSums<B: Backend> {
    sums: Vec<Tensor<B>>,
    passes: usize,
}

/// The trained gradients of `units`: each conv's weight's and bias's.
fn param_grads<B: Backend>(units: &mut [ConvUnit<B>]) -> impl Iterator<Item = &mut Tensor<B>> {
    units.iter_mut().flat_map(|u| {
        [Some(&mut u.conv.weight_grad), u.conv.bias_grad.as_mut()]
            .into_iter()
            .flatten()
    })
}

impl<B: Backend> GradSums<B> {
    /// Sums for the gradients of `units` (bias-and-activation units: a
    /// batch norm's would be left out).
    pub fn new(backend: &B, units: &mut [ConvUnit<B>]) -> Self {
        GradSums {
            sums: param_grads(units)
                .map(|g| Tensor::zeros(backend, g.shape()))
                .collect(),
            passes: 0,
        }
    }

    /// Adds the gradients of the backward pass that just ran on `units`.
    pub fn add(&mut self, backend: &B, units: &mut [ConvUnit<B>]) {
        for (grad, sum) in param_grads(units).zip(&mut self.sums) {
            if self.passes == 0 {
                std::mem::swap(grad, sum);
            } else {
                accumulate(backend, grad, sum);
            }
        }
        self.passes += 1;
    }

    /// Puts the sums into `units` as their gradients, for the next passes.
    pub fn finish(&mut self, units: &mut [ConvUnit<B>]) {
        if self.passes > 0 {
            for (grad, sum) in param_grads(units).zip(&mut self.sums) {
                std::mem::swap(grad, sum);
            }
        }
        self.passes = 0;
    }

    pub fn planned_bytes(&self, backend: &B) -> usize {
        self.sums.iter().map(|t| t.capacity_bytes(backend)).sum()
    }
}

/// A unit's output: its batch norm's when that did not run in place, else
/// its conv's buffer (which any activation overwrote).
fn unit_output<'a, B: Backend>(
    conv: &'a Conv2d<B>,
    bn: &'a Option<BatchNorm<B>>,
    in_place: bool,
) -> &'a Tensor<B> {
    match bn {
        Some(bn) if !in_place => bn.output(),
        _ => conv.output(),
    }
}

/// Gradient buffers a backward pass reuses from layer to layer: sized by the
/// first pass and kept (the model's memory is planned once per input shape).
pub struct Scratch<B: Backend> {
    /// Gradient of the current unit's output.
    pub grad: Tensor<B>,
    /// Gradient of its input, swapped into `grad` as the pass moves down.
    pub grad_next: Tensor<B>,
    /// A third gradient, for the second branch of a residual block.
    pub grad_branch: Tensor<B>,
    /// Gradient of a conv output inside a unit (before its batch norm).
    pub dz: Tensor<B>,
    /// The conv kernels' workspace, shared by every conv.
    pub workspace: Tensor<B>,
}

impl<B: Backend> Scratch<B> {
    pub fn new(backend: &B) -> Self {
        let empty = || Tensor::zeros(backend, &[0]);
        Scratch {
            grad: empty(),
            grad_next: empty(),
            grad_branch: empty(),
            dz: empty(),
            workspace: empty(),
        }
    }

    /// Moves down one layer: the input gradient just computed becomes the
    /// output gradient of the layer below.
    pub fn step_down(&mut self) {
        std::mem::swap(&mut self.grad, &mut self.grad_next);
    }

    /// `grad` and `grad_next` swap roles at every layer, so after a pass
    /// each is given the largest size either needed: the next pass then
    /// allocates nothing, whatever its parity.
    pub fn equalize(&mut self, backend: &B) {
        let largest = self
            .grad
            .capacity_bytes(backend)
            .max(self.grad_next.capacity_bytes(backend))
            / 4;
        for t in [&mut self.grad, &mut self.grad_next] {
            t.reshape_reuse(backend, &[largest]);
        }
    }

    pub fn planned_bytes(&self, backend: &B) -> usize {
        [
            &self.grad,
            &self.grad_next,
            &self.grad_branch,
            &self.dz,
            &self.workspace,
        ]
        .iter()
        .map(|t| t.capacity_bytes(backend))
        .sum()
    }
}

/// `dst = src` (reshaping `dst` to `src`'s shape).
pub fn copy_into<B: Backend>(backend: &B, src: &Tensor<B>, dst: &mut Tensor<B>) {
    dst.reshape_reuse(backend, src.shape());
    backend.copy(src.numel(), src.buf(), dst.buf_mut());
}

/// `dst += src` (same shapes).
pub fn accumulate<B: Backend>(backend: &B, src: &Tensor<B>, dst: &mut Tensor<B>) {
    assert_eq!(
        src.shape(),
        dst.shape(),
        "accumulate: gradient shapes differ"
    );
    backend.axpy(src.numel(), 1.0, src.buf(), dst.buf_mut());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(style: NameStyle, norm: Norm) -> ConvUnitSpec {
        ConvUnitSpec {
            prefix: "p".into(),
            style,
            in_channels: 8,
            out_channels: 4,
            kernel: 3,
            stride: 2,
            padding: None,
            dilation: 1,
            groups: 2,
            norm,
            activation: Activation::LEAKY_0_1,
            init: WeightInit::ConvDefaultNormal,
            weight: ParamAttr::DEFAULT,
        }
    }

    const BN: Norm = Norm::BatchNorm(ParamAttr::NO_DECAY);

    #[test]
    fn dotted_names_and_shapes() {
        let names: Vec<_> = unit(NameStyle::Dotted, BN)
            .params()
            .into_iter()
            .map(|p| (p.spec.name, p.spec.shape))
            .collect();
        assert_eq!(
            names,
            [
                ("p.conv.weights".to_string(), vec![4, 4, 3, 3]),
                ("p.bn.scale".to_string(), vec![4]),
                ("p.bn.offset".to_string(), vec![4]),
                ("p.bn.mean".to_string(), vec![4]),
                ("p.bn.var".to_string(), vec![4]),
            ]
        );
    }

    #[test]
    fn underscored_names_and_bias_unit() {
        let names: Vec<_> = unit(NameStyle::Underscored, BN)
            .params()
            .into_iter()
            .map(|p| p.spec.name)
            .collect();
        assert_eq!(
            names,
            [
                "p_weights",
                "p_bn_scale",
                "p_bn_offset",
                "p_bn_mean",
                "p_bn_variance"
            ]
        );
        let with_bias = unit(NameStyle::Dotted, Norm::Bias(ParamAttr::DEFAULT)).params();
        assert_eq!(with_bias.len(), 2);
        assert_eq!(with_bias[1].spec.name, "p.conv.bias");
        assert_eq!(with_bias[1].weight_decay, None);
        let declared = unit(NameStyle::Generated, Norm::Bias(ParamAttr::NO_DECAY));
        let names: Vec<_> = declared
            .params()
            .into_iter()
            .map(|p| (p.spec.name, p.weight_decay))
            .collect();
        assert_eq!(
            names,
            [
                ("p.w_0".to_string(), None),
                ("p.b_0".to_string(), Some(0.0))
            ]
        );
    }

    #[test]
    fn output_size_follows_same_padding() {
        let u = unit(NameStyle::Dotted, BN);
        assert_eq!(u.output_size(320), 160);
        assert_eq!(u.output_size(7), 4);
    }

    /// VGG's `fc6` (3x3, dilation 6, padding 6) keeps the size; an
    /// unpadded 3x3 (its last extra blocks) takes 2 off.
    #[test]
    fn explicit_padding_and_dilation() {
        let fc6 = ConvUnitSpec {
            stride: 1,
            padding: Some(6),
            dilation: 6,
            ..unit(NameStyle::Vgg, Norm::Bias(ParamAttr::DEFAULT))
        };
        assert_eq!((fc6.padding(), fc6.output_size(19)), (6, 19));
        let unpadded = ConvUnitSpec {
            padding: Some(0),
            dilation: 1,
            ..fc6.clone()
        };
        assert_eq!(unpadded.output_size(5), 3);
        let names: Vec<_> = fc6.params().into_iter().map(|p| p.spec.name).collect();
        assert_eq!(names, ["p_weights", "p_biases"]);
    }

    #[test]
    fn resnet_and_suffixed_names() {
        let frozen = ParamAttr {
            decay: Some(0.0),
            learning_rate: 0.0,
            constant: None,
        };
        let named = |prefix: &str, style, norm| {
            ConvUnitSpec {
                prefix: prefix.into(),
                ..unit(style, norm)
            }
            .params()
            .into_iter()
            .map(|p| (p.spec.name, p.learning_rate))
            .collect::<Vec<_>>()
        };
        assert_eq!(
            named("conv1", NameStyle::ResNet, Norm::AffineChannel(frozen)),
            [
                ("conv1_weights".to_string(), 1.0),
                ("bn_conv1_scale".to_string(), 0.0),
                ("bn_conv1_offset".to_string(), 0.0)
            ]
        );
        let names: Vec<String> = named(
            "res4b22_branch1",
            NameStyle::ResNet,
            Norm::BatchNorm(frozen),
        )
        .into_iter()
        .map(|(name, _)| name)
        .collect();
        assert_eq!(
            names,
            [
                "res4b22_branch1_weights",
                "bn4b22_branch1_scale",
                "bn4b22_branch1_offset",
                "bn4b22_branch1_mean",
                "bn4b22_branch1_variance"
            ]
        );
        let rpn = ConvUnitSpec {
            prefix: "conv_rpn".into(),
            ..unit(NameStyle::Suffixed, Norm::Bias(ParamAttr::DETECTRON_BIAS))
        }
        .params();
        assert_eq!(rpn[0].spec.name, "conv_rpn_w");
        assert_eq!((rpn[0].weight_decay, rpn[0].learning_rate), (None, 1.0));
        assert_eq!(rpn[1].spec.name, "conv_rpn_b");
        assert_eq!(
            (rpn[1].weight_decay, rpn[1].learning_rate),
            (Some(0.0), 2.0)
        );
    }

    /// Paddle's `affine_channel` with a ReLU: `y = relu(scale * z + offset)`
    /// per channel of the conv output `z`, and in backward
    /// `dz = dy * relu'(y) * scale`, scale and offset frozen.
    #[test]
    fn affine_channel_is_scale_times_conv_plus_offset() {
        use crate::layers::test_util::{cpu, tensor};
        let b = cpu();
        let frozen = ParamAttr {
            decay: Some(0.0),
            learning_rate: 0.0,
            constant: None,
        };
        let spec = ConvUnitSpec {
            groups: 1,
            activation: Activation::Relu,
            ..unit(NameStyle::ResNet, Norm::AffineChannel(frozen))
        };
        let mut u = ConvUnit::new(&b, spec, &mut Rng::from_state(3));
        let (scale, offset) = ([1.5, -0.5, 0.25, 2.0], [0.1, -0.2, 0.3, 0.0]);
        u.tensor_mut(ParamRole::BnScale).upload(&b, &scale);
        u.tensor_mut(ParamRole::BnOffset).upload(&b, &offset);
        let x = tensor(&[2, 8, 6, 6], 7);
        let mut workspace = Tensor::zeros(&b, &[0]);
        // The unit's forward overwrites the conv's output with its own.
        let z = u.conv.forward(&b, &x, &mut workspace).to_host(&b);
        let y = u.forward(&b, &x, &mut workspace).to_host(&b);
        let plane = 3 * 3;
        let channel = |i: usize| (i / plane) % 4;
        for (i, (&zi, &yi)) in z.iter().zip(&y).enumerate() {
            let want = (scale[channel(i)] * zi + offset[channel(i)]).max(0.0);
            assert!(
                (yi - want).abs() <= 1e-6 * want.abs().max(1.0),
                "y[{i}] {yi} vs {want}"
            );
        }
        let dy = tensor(u.output().shape(), 8);
        let mut dz = Tensor::zeros(&b, &[0]);
        let mut dx = Tensor::zeros(&b, &[0]);
        u.backward(&b, &x, &dy, &mut dz, Some(&mut dx), &mut workspace);
        let (dy, dz) = (dy.to_host(&b), dz.to_host(&b));
        for i in 0..dz.len() {
            let want = if y[i] > 0.0 {
                dy[i] * scale[channel(i)]
            } else {
                0.0
            };
            assert!((dz[i] - want).abs() <= 1e-6, "dz[{i}] {} vs {want}", dz[i]);
        }
        let scale_grad = u.grad(ParamRole::BnScale).expect("a scale").to_host(&b);
        assert!(scale_grad.iter().all(|&g| g == 0.0));
    }

    /// What a unit's forward and backward give: output, input gradient,
    /// conv weight gradient, and the unit's planned bytes after both.
    type Pass = (Vec<f32>, Vec<f32>, Vec<f32>, usize);

    /// `spec`'s unit (weights from `seed`, the norm's statistics set to
    /// values far from their start) after `prepare`, run forward and
    /// backward on `x` and `dy`, through `ConvUnit` when `whole`, else
    /// layer by layer as the unit ran before its in-place forms: the norm
    /// or activation reading the conv's output into its own.
    fn unit_pass(
        spec: &ConvUnitSpec,
        prepare: impl Fn(&mut ConvUnit<crate::CpuBackend>),
        whole: bool,
    ) -> Pass {
        use crate::layers::test_util::{cpu, tensor};
        let b = cpu();
        let mut u = ConvUnit::new(&b, spec.clone(), &mut Rng::from_state(11));
        if let Some(bn) = &mut u.bn {
            bn.scale.upload(&b, &[1.5, -0.5, 0.25, 2.0]);
            bn.offset.upload(&b, &[0.1, -0.2, 0.3, 0.0]);
            bn.mean.upload(&b, &[0.2, -0.1, 0.0, 0.3]);
            bn.variance.upload(&b, &[0.8, 1.3, 0.5, 2.0]);
        }
        prepare(&mut u);
        let x = tensor(&[2, 8, 6, 6], 12);
        let dy = tensor(&[2, 4, 3, 3], 13);
        let mut workspace = Tensor::zeros(&b, &[0]);
        let (mut dz, mut dx) = (Tensor::zeros(&b, &[0]), Tensor::zeros(&b, &[0]));
        let y = if whole {
            let y = u.forward(&b, &x, &mut workspace).to_host(&b);
            u.backward(&b, &x, &dy, &mut dz, Some(&mut dx), &mut workspace);
            y
        } else {
            let z = u.conv.forward(&b, &x, &mut workspace);
            let y = match (&mut u.bn, &mut u.act) {
                (Some(bn), _) => bn.forward(&b, z).to_host(&b),
                (None, Some(act)) => act.forward(&b, z).to_host(&b),
                (None, None) => z.to_host(&b),
            };
            match (&mut u.bn, &mut u.act) {
                (Some(bn), _) => bn.backward(&b, u.conv.output(), &dy, Some(&mut dz)),
                (None, Some(act)) => act.backward(&b, &dy, &mut dz),
                (None, None) => copy_into(&b, &dy, &mut dz),
            }
            u.conv.backward(&b, &x, &dz, Some(&mut dx), &mut workspace);
            y
        };
        let grads = u.conv.weight_grad.to_host(&b);
        (y, dx.to_host(&b), grads, u.planned_bytes(&b))
    }

    /// A frozen batch norm, an affine channel and a biased conv's ReLU run
    /// in place: the unit holds one activation tensor (its planned bytes
    /// are the layer-by-layer run's less exactly the output's), and its
    /// output and gradients are those of the layer-by-layer run, bit for
    /// bit. A batch norm with batch statistics keeps both tensors.
    #[test]
    fn in_place_units_hold_one_activation_tensor() {
        let frozen = ParamAttr {
            decay: Some(0.0),
            learning_rate: 0.0,
            constant: None,
        };
        let spec = |norm| ConvUnitSpec {
            groups: 1,
            activation: Activation::Relu,
            ..unit(NameStyle::Dotted, norm)
        };
        let freeze = |u: &mut ConvUnit<crate::CpuBackend>| {
            if let Some(bn) = &mut u.bn {
                bn.frozen = true;
            }
        };
        let output_bytes = 2 * 4 * 3 * 3 * 4;
        for (name, spec) in [
            ("frozen batch norm", spec(BN)),
            ("affine channel", spec(Norm::AffineChannel(frozen))),
            ("bias and ReLU", spec(Norm::Bias(ParamAttr::DEFAULT))),
        ] {
            let whole = unit_pass(&spec, freeze, true);
            let layers = unit_pass(&spec, freeze, false);
            assert_eq!(whole.0, layers.0, "{name}: output");
            assert_eq!(whole.1, layers.1, "{name}: input gradient");
            assert_eq!(whole.2, layers.2, "{name}: weight gradient");
            assert_eq!(whole.3 + output_bytes, layers.3, "{name}: planned bytes");
        }
        let live = unit_pass(&spec(BN), |_| {}, true);
        let layers = unit_pass(&spec(BN), |_| {}, false);
        assert_eq!(live, layers, "batch statistics");
    }

    /// A unit decides per forward: batch statistics out of place, frozen
    /// and eval in place on the conv's buffer, and back; each forward's
    /// output and backward are those of a unit that ran only in that mode.
    #[test]
    fn a_unit_switches_between_in_place_and_apart() {
        use crate::layers::test_util::{cpu, tensor};
        let b = cpu();
        let spec = ConvUnitSpec {
            groups: 1,
            ..unit(NameStyle::Dotted, BN)
        };
        let x = tensor(&[2, 8, 6, 6], 21);
        let dy = tensor(&[2, 4, 3, 3], 22);
        let mut workspace = Tensor::zeros(&b, &[0]);
        // (training, frozen) of each forward; eval runs no backward.
        let modes = [(true, false), (true, true), (false, false), (true, false)];
        let run = |u: &mut ConvUnit<crate::CpuBackend>, (training, frozen), ws: &mut Tensor<_>| {
            let bn = u.bn.as_mut().expect("a batch norm");
            (bn.training, bn.frozen) = (training, frozen);
            let y = u.forward(&b, &x, ws).to_host(&b);
            let (mut dz, mut dx) = (Tensor::zeros(&b, &[0]), Tensor::zeros(&b, &[0]));
            if training {
                u.backward(&b, &x, &dy, &mut dz, Some(&mut dx), ws);
            }
            (y, dx.to_host(&b))
        };
        let mut switching = ConvUnit::new(&b, spec.clone(), &mut Rng::from_state(23));
        for (k, mode) in modes.into_iter().enumerate() {
            let mut alone = ConvUnit::new(&b, spec.clone(), &mut Rng::from_state(23));
            // The running statistics the switching unit has moved so far.
            for role in [ParamRole::BnMean, ParamRole::BnVariance] {
                let stats = switching.tensor(role).to_host(&b);
                alone.tensor_mut(role).upload(&b, &stats);
            }
            let want = run(&mut alone, mode, &mut workspace);
            assert_eq!(
                run(&mut switching, mode, &mut workspace),
                want,
                "forward {k}"
            );
        }
    }

    /// A unit run on two inputs, the first run's output swapped out and back
    /// in, gives the first input the backward pass it gets alone (its conv's
    /// output is then the second run's).
    #[test]
    fn swapped_activations_give_each_input_its_own_backward() {
        use crate::layers::test_util::{cpu, tensor};
        let b = cpu();
        let spec = ConvUnitSpec {
            groups: 1,
            activation: Activation::Relu,
            ..unit(NameStyle::Suffixed, Norm::Bias(ParamAttr::DEFAULT))
        };
        let mut u = ConvUnit::new(&b, spec, &mut Rng::from_state(5));
        let mut workspace = Tensor::zeros(&b, &[0]);
        let (mut dz, mut dx) = (Tensor::zeros(&b, &[0]), Tensor::zeros(&b, &[0]));
        let (x1, x2) = (tensor(&[1, 8, 6, 6], 1), tensor(&[2, 8, 10, 4], 2));
        let dy = tensor(&[1, 4, 3, 3], 3);
        let mut alone = |u: &mut ConvUnit<crate::CpuBackend>| {
            u.backward(&b, &x1, &dy, &mut dz, Some(&mut dx), &mut workspace);
            (
                dx.to_host(&b),
                u.conv.weight_grad.to_host(&b),
                u.output().to_host(&b),
            )
        };
        u.forward(&b, &x1, &mut Tensor::zeros(&b, &[0]));
        let want = alone(&mut u);

        let mut saved = Tensor::zeros(&b, &[0]);
        u.forward(&b, &x1, &mut Tensor::zeros(&b, &[0]));
        u.swap_output(&mut saved);
        u.forward(&b, &x2, &mut Tensor::zeros(&b, &[0]));
        u.swap_output(&mut saved);
        assert_eq!(alone(&mut u), want);
    }
}
