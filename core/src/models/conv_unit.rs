//! The description of one convolution unit as PaddleDetection declares it: a
//! conv2d (no bias) followed by batch norm and an activation, or, for the
//! `yolo_output` layers, a conv2d with a bias and nothing after it. Every model
//! here is a list of these units plus the wiring between them; the parameter
//! list, the initialisation and the weight decay overrides all come from it.

use super::init::{init_param, Rng};
use super::param::Param;
use crate::params::ParamSpec;

/// How a unit's parameter names are formed from its prefix `P`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameStyle {
    /// DarkNet53 and the YOLOv3 head: `P.conv.weights`, `P.conv.bias`,
    /// `P.bn.scale`, `P.bn.offset`, `P.bn.mean`, `P.bn.var`.
    Dotted,
    /// MobileNetV1: `P_weights`, `P_bn_scale`, `P_bn_offset`, `P_bn_mean`,
    /// `P_bn_variance`.
    Underscored,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Identity,
    Relu,
    /// Leaky ReLU with slope 0.1, as DarkNet and the YOLOv3 head use.
    Leaky,
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
    /// Square kernel; padding is always `kernel / 2` ("same" at stride 1).
    pub kernel: usize,
    pub stride: usize,
    pub groups: usize,
    /// true: conv without bias, then batch norm. false: conv with a bias.
    pub batch_norm: bool,
    pub activation: Activation,
    pub init: WeightInit,
    /// The L2 decay the conv weight declares itself (its `ParamAttr`
    /// regularizer), which wins over the optimizer's; None = the optimizer's.
    pub weight_decay: Option<f32>,
}

/// One parameter of a unit: its name and shape, what it is, and the L2 decay
/// coefficient its own regularizer sets (None = use the optimizer's).
#[derive(Debug, Clone, PartialEq)]
pub struct UnitParam {
    pub spec: ParamSpec,
    pub role: ParamRole,
    pub weight_decay: Option<f32>,
}

impl ConvUnitSpec {
    pub fn padding(&self) -> usize {
        self.kernel / 2
    }

    /// Output spatial size for an input of `size` pixels along one axis.
    pub fn output_size(&self, size: usize) -> usize {
        (size + 2 * self.padding() - self.kernel) / self.stride + 1
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

    /// The unit's parameters in model order. BN scale and offset, and the
    /// `yolo_output` biases, carry `L2Decay(0.)` in PaddleDetection (the
    /// YOLOv3 configs set `norm_decay: 0.`), so they say Some(0.0).
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
                    ParamRole::ConvBias | ParamRole::BnScale | ParamRole::BnOffset => Some(0.0),
                    ParamRole::BnMean | ParamRole::BnVariance => None,
                };
                UnitParam {
                    spec: ParamSpec::new(self.param_name(role), &shape),
                    role,
                    weight_decay,
                }
            })
            .collect()
    }
}

/// A conv unit at run time: its description and its parameters.
#[derive(Debug, Clone)]
pub struct ConvUnit {
    pub spec: ConvUnitSpec,
    pub weight: Param,
    /// Only units without batch norm (`yolo_output`) have a bias.
    pub bias: Option<Param>,
    pub bn: Option<BnParams>,
}

#[derive(Debug, Clone)]
pub struct BnParams {
    pub scale: Param,
    pub offset: Param,
    pub mean: Param,
    pub variance: Param,
}

impl ConvUnit {
    /// Builds the unit with Paddle's initial values.
    pub fn new(spec: ConvUnitSpec, rng: &mut Rng) -> Self {
        let mut params = spec.params().into_iter().map(|declared| {
            let mut p = Param::new(declared);
            init_param(&spec, p.role, &mut p.value, rng);
            p
        });
        let mut take = || params.next().expect("roles() lists every parameter");
        let weight = take();
        let (bias, bn) = if spec.batch_norm {
            let bn = BnParams {
                scale: take(),
                offset: take(),
                mean: take(),
                variance: take(),
            };
            (None, Some(bn))
        } else {
            (Some(take()), None)
        };
        ConvUnit {
            spec,
            weight,
            bias,
            bn,
        }
    }

    /// Parameters in model order (the order of `ConvUnitSpec::params`).
    pub fn params(&self) -> Vec<&Param> {
        let mut out = vec![&self.weight];
        out.extend(self.bias.as_ref());
        if let Some(bn) = &self.bn {
            out.extend([&bn.scale, &bn.offset, &bn.mean, &bn.variance]);
        }
        out
    }

    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut out = vec![&mut self.weight];
        out.extend(self.bias.as_mut());
        if let Some(bn) = &mut self.bn {
            out.extend([
                &mut bn.scale,
                &mut bn.offset,
                &mut bn.mean,
                &mut bn.variance,
            ]);
        }
        out
    }
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
            groups: 2,
            batch_norm,
            activation: Activation::Leaky,
            init: WeightInit::ConvDefaultNormal,
            weight_decay: None,
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
        assert_eq!(with_bias[1].weight_decay, Some(0.0));
    }

    #[test]
    fn output_size_follows_same_padding() {
        let u = unit(NameStyle::Dotted, true);
        assert_eq!(u.output_size(320), 160);
        assert_eq!(u.output_size(7), 4);
    }
}
