//! The description of one fully connected layer as PaddleDetection's R-CNN
//! heads declare it (`fluid.layers.fc` with named `ParamAttr`s): a weight in
//! Paddle's `[inputs, outputs]` layout (`y = x W + b`, the input flattened
//! from NCHW to `[N, C*H*W]`), named `P_w`, and a bias `P_b`, initially 0.

use super::conv_unit::{Activation, ParamAttr, ParamRole, UnitParam, WeightFans, WeightInit};
use super::init::{constant_init, init_weight, Rng};

#[derive(Debug, Clone, PartialEq)]
pub struct FcSpec {
    /// `fc6`, `cls_score`, ...
    pub prefix: String,
    pub inputs: usize,
    pub outputs: usize,
    pub activation: Activation,
    pub init: WeightInit,
    pub weight: ParamAttr,
    pub bias: ParamAttr,
}

impl FcSpec {
    /// A Faster R-CNN head layer: the weight with the optimizer's decay,
    /// the bias with learning rate 2 and no decay.
    pub fn detectron(
        prefix: &str,
        inputs: usize,
        outputs: usize,
        activation: Activation,
        init: WeightInit,
    ) -> FcSpec {
        FcSpec {
            prefix: prefix.to_string(),
            inputs,
            outputs,
            activation,
            init,
            weight: ParamAttr::DEFAULT,
            bias: ParamAttr::DETECTRON_BIAS,
        }
    }

    /// Weight then bias, as Paddle creates them.
    pub fn params(&self) -> Vec<UnitParam> {
        vec![
            UnitParam::new(
                format!("{}_w", self.prefix),
                &[self.inputs, self.outputs],
                ParamRole::FcWeight,
                self.weight,
            ),
            UnitParam::new(
                format!("{}_b", self.prefix),
                &[self.outputs],
                ParamRole::FcBias,
                self.bias,
            ),
        ]
    }

    /// Fills `values` (the parameter of `role`) with its initial value: the
    /// weight from `init` with the fans of `[inputs, outputs]`, the bias 0.
    pub fn init_param(&self, role: ParamRole, values: &mut [f32], rng: &mut Rng) {
        if role == ParamRole::FcWeight {
            let fans = WeightFans {
                fan_in: self.inputs,
                fan_out: self.outputs,
                conv_default_elems: self.inputs,
            };
            init_weight(self.init, fans, values, rng)
        } else {
            values.fill(constant_init(role))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::ParamSpec;

    #[test]
    fn names_shapes_and_attributes() {
        let fc = FcSpec::detectron(
            "fc7",
            1024,
            1024,
            Activation::Relu,
            WeightInit::XavierUniform {
                fan_in: None,
                fan_out: None,
            },
        );
        let params = fc.params();
        assert_eq!(params[0].spec, ParamSpec::new("fc7_w", &[1024, 1024]));
        assert_eq!(params[0].role, ParamRole::FcWeight);
        assert_eq!(
            (params[0].weight_decay, params[0].learning_rate),
            (None, 1.0)
        );
        assert_eq!(params[1].spec, ParamSpec::new("fc7_b", &[1024]));
        assert_eq!(params[1].role, ParamRole::FcBias);
        assert_eq!(
            (params[1].weight_decay, params[1].learning_rate),
            (Some(0.0), 2.0)
        );
    }

    /// `fc7`'s `Xavier()` takes both fans from the `[in, out]` shape.
    #[test]
    fn initial_values() {
        let xavier = WeightInit::XavierUniform {
            fan_in: None,
            fan_out: None,
        };
        let fc = FcSpec::detectron("fc", 300, 100, Activation::Identity, xavier);
        let mut rng = Rng::from_state(9);
        let mut w = vec![0.0; 300 * 100];
        fc.init_param(ParamRole::FcWeight, &mut w, &mut rng);
        let limit = (6.0f32 / 400.0).sqrt();
        assert!(w.iter().all(|v| v.abs() <= limit));
        assert!(w.iter().any(|v| v.abs() > 0.99 * limit));
        let mut b = vec![5.0; 100];
        fc.init_param(ParamRole::FcBias, &mut b, &mut rng);
        assert!(b.iter().all(|&v| v == 0.0));
    }
}
