//! The description of one convolution unit as PaddleDetection declares it: a
//! conv2d (no bias) followed by batch norm and an activation, or a conv2d
//! with a bias and its activation (VGG's ReLU; the identity for the
//! `yolo_output` layers and SSD's head). Every model
//! here is a list of these units plus the wiring between them; the parameter
//! list, the initialisation and the weight decay overrides all come from it.

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
    /// `P.w_0`, `P.b_0`. Such convs here never have a batch norm.
    Generated,
}

/// How a conv weight is drawn when no checkpoint provides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightInit {
    /// Paddle's `fluid.layers.conv2d` default for a `ParamAttr` without an
    /// initializer: Normal(0, sqrt(2 / (k * k * input_channels))), with the full
    /// input channel count even for grouped convs.
    ConvDefaultNormal,
    /// `fluid.initializer.MSRA()` (uniform by default): U(-l, l) with
    /// l = sqrt(6 / fan_in), fan_in = (input_channels / groups) * k * k.
    /// Legacy MobileNetV1 uses it for every conv.
    MsraUniform,
}

/// What a parameter is inside its unit; the optimizer, freezing and the
/// initialiser dispatch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamRole {
    ConvWeight,
    ConvBias,
    BnScale,
    BnOffset,
    /// Running statistics: persistable, saved and loaded, never trained.
    BnMean,
    BnVariance,
    /// The scale of an L2 norm on the unit's output (`ConvUnit::l2_norm`,
    /// VGG16-SSD's `conv4_3_norm`): a parameter of its own layer, which
    /// `network::L2NormSpec` declares and names.
    L2NormScale,
}

impl ParamRole {
    /// Whether the optimizer updates it (running statistics are not parameters
    /// of the loss).
    pub fn is_trainable(self) -> bool {
        !matches!(self, ParamRole::BnMean | ParamRole::BnVariance)
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
    /// true: conv without bias, then batch norm. false: conv with a bias.
    pub batch_norm: bool,
    /// Fused into the batch norm, or after the biased conv.
    pub activation: Activation,
    pub init: WeightInit,
    /// The L2 decay the conv weight declares itself (its `ParamAttr`
    /// regularizer), which wins over the optimizer's; None = the optimizer's.
    pub weight_decay: Option<f32>,
    /// The same for the conv bias (units without batch norm).
    pub bias_decay: Option<f32>,
    /// The conv weight's own learning-rate factor (its `ParamAttr`
    /// `learning_rate`, e.g. MobileNet's `conv_learning_rate`): its updates
    /// use the scheduled rate times this. Biases and batch norms keep 1.
    pub learning_rate: f32,
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
        let p = &self.prefix;
        match (self.style, role) {
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
            // Paddle would name an unnamed batch norm after its own layer
            // (`batch_norm_N`); no model here has one, and the names say so.
            (NameStyle::Generated | NameStyle::Vgg, role) => {
                format!("{p}.unnamed_batch_norm_{role:?}")
            }
        }
    }

    /// The roles this unit has, in the order Paddle creates the variables:
    /// conv weight, conv bias (if any), then BN scale, offset, mean, variance.
    pub fn roles(&self) -> Vec<ParamRole> {
        if self.batch_norm {
            vec![
                ParamRole::ConvWeight,
                ParamRole::BnScale,
                ParamRole::BnOffset,
                ParamRole::BnMean,
                ParamRole::BnVariance,
            ]
        } else {
            vec![ParamRole::ConvWeight, ParamRole::ConvBias]
        }
    }

    /// The unit's parameters in model order. BN scale and offset carry
    /// `L2Decay(0.)` in PaddleDetection (the configs set `norm_decay: 0.`),
    /// so they say Some(0.0); weights and biases say what the unit declares.
    pub fn params(&self) -> Vec<UnitParam> {
        self.roles()
            .into_iter()
            .map(|role| {
                let shape: Vec<usize> = match role {
                    ParamRole::ConvWeight => self.weight_shape().to_vec(),
                    _ => vec![self.out_channels],
                };
                let weight_decay = match role {
                    ParamRole::ConvWeight => self.weight_decay,
                    ParamRole::ConvBias => self.bias_decay,
                    ParamRole::BnScale | ParamRole::BnOffset => Some(0.0),
                    ParamRole::BnMean | ParamRole::BnVariance | ParamRole::L2NormScale => None,
                };
                UnitParam {
                    spec: ParamSpec::new(self.param_name(role), &shape),
                    role,
                    weight_decay,
                    learning_rate: if role == ParamRole::ConvWeight {
                        self.learning_rate
                    } else {
                        1.0
                    },
                }
            })
            .collect()
    }
}

/// A conv unit at run time: D1's conv layer and either a batch norm fused
/// with the unit's activation, or (a conv with a bias) the activation on its
/// own unless it is the identity.
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
        let config = if spec.batch_norm {
            config
        } else {
            config.with_bias()
        };
        let conv = Conv2d::new(backend, config);
        let bn = spec
            .batch_norm
            .then(|| BatchNorm::new(backend, spec.out_channels, spec.activation));
        let act = (!spec.batch_norm && spec.activation != Activation::Identity)
            .then(|| ActivationLayer::new(backend, spec.activation));
        let mut unit = ConvUnit {
            spec,
            conv,
            bn,
            act,
            l2_norm: None,
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

    /// The gradient of the parameter of `role` (None for running statistics).
    pub fn grad(&self, role: ParamRole) -> Option<&Tensor<B>> {
        match role {
            ParamRole::ConvWeight => Some(&self.conv.weight_grad),
            ParamRole::ConvBias => self.conv.bias_grad.as_ref(),
            ParamRole::BnScale => self.bn.as_ref().map(|bn| &bn.scale_grad),
            ParamRole::BnOffset => self.bn.as_ref().map(|bn| &bn.offset_grad),
            ParamRole::L2NormScale => self.l2_norm.as_ref().map(|n| &n.scale_grad),
            ParamRole::BnMean | ParamRole::BnVariance => None,
        }
    }

    /// The parameter and its gradient, for the optimizer; None for the running
    /// statistics, which have no gradient.
    pub fn param_and_grad_mut(&mut self, role: ParamRole) -> Option<(&mut Tensor<B>, &Tensor<B>)> {
        match role {
            ParamRole::ConvWeight => Some((&mut self.conv.weight, &self.conv.weight_grad)),
            ParamRole::ConvBias => Some((self.conv.bias.as_mut()?, self.conv.bias_grad.as_ref()?)),
            ParamRole::BnScale => self.bn.as_mut().map(|bn| (&mut bn.scale, &bn.scale_grad)),
            ParamRole::BnOffset => self.bn.as_mut().map(|bn| (&mut bn.offset, &bn.offset_grad)),
            ParamRole::L2NormScale => self.l2_norm.as_mut().map(|n| (&mut n.scale, &n.scale_grad)),
            ParamRole::BnMean | ParamRole::BnVariance => None,
        }
    }

    pub fn forward(&mut self, backend: &B, x: &Tensor<B>, workspace: &mut Tensor<B>) -> &Tensor<B> {
        let z = self.conv.forward(backend, x, workspace);
        match (&mut self.bn, &mut self.act) {
            (Some(bn), _) => bn.forward(backend, z),
            (None, Some(act)) => act.forward(backend, z),
            (None, None) => z,
        }
    }

    pub fn output(&self) -> &Tensor<B> {
        unit_output(&self.conv, &self.bn, &self.act)
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
            norm.forward(backend, unit_output(&self.conv, &self.bn, &self.act));
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
            unit_output(&self.conv, &self.bn, &self.act),
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
        match (&mut self.bn, &mut self.act) {
            (Some(bn), _) => {
                bn.backward(backend, self.conv.output(), dy, Some(&mut *dz));
                self.conv.backward(backend, x, dz, dx, workspace);
            }
            (None, Some(act)) => {
                act.backward(backend, dy, dz);
                self.conv.backward(backend, x, dz, dx, workspace);
            }
            (None, None) => self.conv.backward(backend, x, dy, dx, workspace),
        }
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

/// A unit's output: its batch norm's, its activation's, or its conv's.
fn unit_output<'a, B: Backend>(
    conv: &'a Conv2d<B>,
    bn: &'a Option<BatchNorm<B>>,
    act: &'a Option<ActivationLayer<B>>,
) -> &'a Tensor<B> {
    match (bn, act) {
        (Some(bn), _) => bn.output(),
        (None, Some(act)) => act.output(),
        (None, None) => conv.output(),
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

    fn unit(style: NameStyle, batch_norm: bool) -> ConvUnitSpec {
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
            batch_norm,
            activation: Activation::LEAKY_0_1,
            init: WeightInit::ConvDefaultNormal,
            weight_decay: None,
            bias_decay: None,
            learning_rate: 1.0,
        }
    }

    #[test]
    fn dotted_names_and_shapes() {
        let names: Vec<_> = unit(NameStyle::Dotted, true)
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
        let names: Vec<_> = unit(NameStyle::Underscored, true)
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
        let with_bias = unit(NameStyle::Dotted, false).params();
        assert_eq!(with_bias.len(), 2);
        assert_eq!(with_bias[1].spec.name, "p.conv.bias");
        assert_eq!(with_bias[1].weight_decay, None);
        let declared = ConvUnitSpec {
            bias_decay: Some(0.0),
            learning_rate: 1.0,
            ..unit(NameStyle::Generated, false)
        };
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
        let u = unit(NameStyle::Dotted, true);
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
            ..unit(NameStyle::Vgg, false)
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
}
