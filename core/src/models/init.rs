//! Initial parameter values when no checkpoint provides them, following
//! PaddleDetection's legacy models: weights from `WeightInit`, biases 0, norm
//! scale 1, offset 0, running mean 0, running variance 1. A seeded generator
//! makes runs repeatable (Paddle's default seed 0 means "random"; we always
//! take an explicit seed).

use super::conv_unit::{ConvUnitSpec, Norm, ParamAttr, ParamRole, WeightFans, WeightInit};

/// The generator initial weights are drawn from, seeded with
/// `Rng::from_state(seed)`.
pub use pulsefocus_formats::rng::Rng;

/// Fills `values` (the parameter of `role` in `unit`) with its initial value:
/// a weight drawn from its `WeightInit`, a bias its `ParamAttr`'s constant if
/// it declares one, anything else `constant_init`.
pub fn init_param(unit: &ConvUnitSpec, role: ParamRole, values: &mut [f32], rng: &mut Rng) {
    match (role, unit.norm) {
        (ParamRole::ConvWeight, _) => init_weight(unit.init, unit.fans(), values, rng),
        (
            ParamRole::ConvBias,
            Norm::Bias(ParamAttr {
                constant: Some(value),
                ..
            }),
        ) => values.fill(value),
        _ => values.fill(constant_init(role)),
    }
}

/// The constant every parameter but a weight starts from.
pub fn constant_init(role: ParamRole) -> f32 {
    match role {
        // 1 is also `_l2_norm_scale`'s default `init_scale`; the configs'
        // (`normalizations`) come from `L2NormSpec`.
        ParamRole::BnScale | ParamRole::BnVariance | ParamRole::L2NormScale => 1.0,
        ParamRole::ConvBias
        | ParamRole::FcBias
        | ParamRole::TransposedBias
        | ParamRole::BnOffset
        | ParamRole::BnMean => 0.0,
        ParamRole::ConvWeight | ParamRole::FcWeight | ParamRole::TransposedWeight => {
            panic!("{role:?} is drawn from its WeightInit, not a constant")
        }
    }
}

/// Draws a weight of `fans` from `init`.
pub fn init_weight(init: WeightInit, fans: WeightFans, values: &mut [f32], rng: &mut Rng) {
    let uniform = |limit: f64, values: &mut [f32], rng: &mut Rng| {
        values
            .iter_mut()
            .for_each(|v| *v = ((2.0 * rng.uniform() - 1.0) * limit) as f32)
    };
    let normal = |std: f64, values: &mut [f32], rng: &mut Rng| {
        values
            .iter_mut()
            .for_each(|v| *v = (rng.normal() * std) as f32)
    };
    match init {
        WeightInit::ConvDefaultNormal => {
            normal((2.0 / fans.conv_default_elems as f64).sqrt(), values, rng)
        }
        WeightInit::MsraUniform => uniform((6.0 / fans.fan_in as f64).sqrt(), values, rng),
        WeightInit::Normal { std } => normal(std as f64, values, rng),
        WeightInit::MsraNormal { fan_in } => normal((2.0 / fan_in as f64).sqrt(), values, rng),
        WeightInit::XavierUniform { fan_in, fan_out } => {
            let fan_in = fan_in.unwrap_or(fans.fan_in);
            let fan_out = fan_out.unwrap_or(fans.fan_out);
            uniform((6.0 / (fan_in + fan_out) as f64).sqrt(), values, rng)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::conv_unit::{Activation, NameStyle, Norm, ParamAttr};

    fn unit(init: WeightInit, cin: usize, groups: usize) -> ConvUnitSpec {
        ConvUnitSpec {
            prefix: "u".into(),
            style: NameStyle::Dotted,
            in_channels: cin,
            out_channels: 64,
            kernel: 3,
            stride: 1,
            padding: None,
            dilation: 1,
            groups,
            norm: Norm::BatchNorm(ParamAttr::NO_DECAY),
            activation: Activation::LEAKY_0_1,
            init,
            weight: ParamAttr::DEFAULT,
        }
    }

    fn moments(v: &[f32]) -> (f64, f64) {
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        (mean, var.sqrt())
    }

    #[test]
    fn conv_default_normal_has_paddles_std() {
        let u = unit(WeightInit::ConvDefaultNormal, 32, 1);
        let mut w = vec![0.0; 64 * 32 * 9];
        init_param(&u, ParamRole::ConvWeight, &mut w, &mut Rng::from_state(1));
        let (mean, std) = moments(&w);
        let expected = (2.0f64 / (9.0 * 32.0)).sqrt();
        assert!(mean.abs() < 0.02 * expected, "mean {mean}");
        assert!(
            (std / expected - 1.0).abs() < 0.03,
            "std {std} vs {expected}"
        );
    }

    #[test]
    fn msra_uniform_stays_within_its_limit_per_group() {
        let u = unit(WeightInit::MsraUniform, 64, 64);
        let mut w = vec![0.0; 64 * 9];
        init_param(&u, ParamRole::ConvWeight, &mut w, &mut Rng::from_state(2));
        let limit = (6.0f32 / 9.0).sqrt();
        assert!(w.iter().all(|v| v.abs() <= limit));
        assert!(w.iter().any(|v| v.abs() > 0.8 * limit));
    }

    #[test]
    fn bn_and_bias_constants() {
        let u = unit(WeightInit::ConvDefaultNormal, 3, 1);
        let mut rng = Rng::from_state(0);
        for (role, value) in [
            (ParamRole::BnScale, 1.0),
            (ParamRole::BnVariance, 1.0),
            (ParamRole::BnOffset, 0.0),
            (ParamRole::BnMean, 0.0),
            (ParamRole::ConvBias, 0.0),
        ] {
            let mut v = vec![7.0; 5];
            init_param(&u, role, &mut v, &mut rng);
            assert!(v.iter().all(|&x| x == value), "{role:?}");
        }
    }

    /// A bias declaring `Constant(value)` starts at it; the default bias at
    /// 0, and a constant on a norm's attributes moves neither scale nor offset.
    #[test]
    fn a_constant_initializer_sets_the_bias_only() {
        let mut u = unit(WeightInit::Normal { std: 0.01 }, 3, 1);
        u.norm = Norm::Bias(ParamAttr::DETECTRON_BIAS.with_constant(-4.595));
        let mut rng = Rng::from_state(0);
        let mut v = vec![7.0; 5];
        init_param(&u, ParamRole::ConvBias, &mut v, &mut rng);
        assert!(v.iter().all(|&x| x == -4.595), "{v:?}");
        u.norm = Norm::Bias(ParamAttr::DETECTRON_BIAS);
        init_param(&u, ParamRole::ConvBias, &mut v, &mut rng);
        assert!(v.iter().all(|&x| x == 0.0), "{v:?}");
        u.norm = Norm::BatchNorm(ParamAttr::NO_DECAY.with_constant(3.0));
        for (role, value) in [(ParamRole::BnScale, 1.0), (ParamRole::BnOffset, 0.0)] {
            init_param(&u, role, &mut v, &mut rng);
            assert!(v.iter().all(|&x| x == value), "{role:?}");
        }
    }

    #[test]
    fn normal_and_xavier_follow_their_parameters() {
        let fans = WeightFans {
            fan_in: 200,
            fan_out: 30,
            conv_default_elems: 200,
        };
        let mut w = vec![0.0; 20_000];
        let normal = WeightInit::Normal { std: 0.01 };
        init_weight(normal, fans, &mut w, &mut Rng::from_state(4));
        let (mean, std) = moments(&w);
        assert!(
            mean.abs() < 2e-4 && (std / 0.01 - 1.0).abs() < 0.03,
            "{mean} {std}"
        );
        // `MSRA(uniform=False, fan_in=50)`: the stated fan, not the shape's.
        let msra = WeightInit::MsraNormal { fan_in: 50 };
        init_weight(msra, fans, &mut w, &mut Rng::from_state(6));
        let (mean, std) = moments(&w);
        assert!(
            mean.abs() < 2e-3 && (std / 0.2 - 1.0).abs() < 0.03,
            "{mean} {std}"
        );
        // `Xavier(fan_out=100)`: the given fan_out, the shape's fan_in.
        let xavier = WeightInit::XavierUniform {
            fan_in: None,
            fan_out: Some(100),
        };
        init_weight(xavier, fans, &mut w, &mut Rng::from_state(5));
        let limit = (6.0f32 / 300.0).sqrt();
        assert!(w.iter().all(|v| v.abs() <= limit));
        assert!(w.iter().any(|v| v.abs() > 0.99 * limit));
    }
}
