//! MobileNetV1 as PaddleDetection's legacy `MobileNet` backbone builds it for
//! YOLOv3 (`ppdet/modeling/backbones/mobilenet.py`, release/0.5): a 3x3 stem
//! `conv1` and thirteen depthwise-separable blocks, every conv followed by batch
//! norm and ReLU. The detector takes the outputs of `conv3_2` (stride 8),
//! `conv4_2` (stride 16) and `conv6` (stride 32).

use super::conv_unit::{
    accumulate, copy_into, Activation, ConvUnit, ConvUnitSpec, NameStyle, Norm, ParamAttr, Scratch,
    WeightInit,
};
use crate::backend::Backend;
use crate::layers::MaxPool2d;
use crate::tensor::Tensor;

/// One depthwise-separable block: (name, channels in, channels out, stride,
/// whether the detector takes its output). Widths are before `scale`.
const BLOCKS: [(&str, usize, usize, usize, bool); 13] = [
    ("conv2_1", 32, 64, 1, false),
    ("conv2_2", 64, 128, 2, false),
    ("conv3_1", 128, 128, 1, false),
    ("conv3_2", 128, 256, 2, true),
    ("conv4_1", 256, 256, 1, false),
    ("conv4_2", 256, 512, 2, true),
    ("conv5_1", 512, 512, 1, false),
    ("conv5_2", 512, 512, 1, false),
    ("conv5_3", 512, 512, 1, false),
    ("conv5_4", 512, 512, 1, false),
    ("conv5_5", 512, 512, 1, false),
    ("conv5_6", 512, 1024, 2, false),
    ("conv6", 1024, 1024, 1, true),
];

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MobileNetV1Spec {
    /// Paddle's `conv_group_scale`: every width is `int(width * scale)`.
    pub scale: f32,
}

impl MobileNetV1Spec {
    fn width(&self, channels: usize) -> usize {
        ((channels as f32 * self.scale) as usize).max(1)
    }

    fn unit(
        &self,
        prefix: String,
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
        groups: usize,
    ) -> ConvUnitSpec {
        ConvUnitSpec {
            prefix,
            style: NameStyle::Underscored,
            in_channels: cin,
            out_channels: cout,
            kernel,
            stride,
            padding: None,
            dilation: 1,
            groups,
            norm: Norm::BatchNorm(ParamAttr::NO_DECAY),
            activation: Activation::Relu,
            init: WeightInit::MsraUniform,
            // The YOLOv3 configs build MobileNet with conv_decay 0.
            weight: ParamAttr::NO_DECAY,
        }
    }

    /// The conv units in model order: `conv1`, then `{block}_dw`, `{block}_sep`.
    pub fn units(&self) -> Vec<ConvUnitSpec> {
        let mut units = vec![self.unit("conv1".into(), 3, self.width(32), 3, 2, 1)];
        for (name, cin, cout, stride, _) in BLOCKS {
            let (cin, cout) = (self.width(cin), self.width(cout));
            units.push(self.unit(format!("{name}_dw"), cin, cin, 3, stride, cin));
            units.push(self.unit(format!("{name}_sep"), cin, cout, 1, 1, 1));
        }
        units
    }

    /// Indices into `units()` whose outputs are the stride 8, 16, 32 features.
    pub fn feature_units(&self) -> [usize; 3] {
        let mut found = BLOCKS
            .iter()
            .enumerate()
            .filter(|(_, b)| b.4)
            .map(|(i, _)| 2 + 2 * i);
        [(); 3].map(|_| found.next().expect("three feature blocks"))
    }

    /// Channels of the stride 8, 16, 32 features.
    pub fn feature_channels(&self) -> [usize; 3] {
        let units = self.units();
        self.feature_units().map(|i| units[i].out_channels)
    }
}

/// Max pools between units of a chain, each with the unit whose output it
/// takes (the next unit reads the pool's output): VGG's; MobileNet has none.
pub type Pools<B> = [(usize, MaxPool2d<B>)];

/// What unit `i` of the chain reads: the image, the previous unit's output,
/// or the pool on it.
fn chain_input<'a, B: Backend>(
    done: &'a [ConvUnit<B>],
    pools: &'a Pools<B>,
    image: &'a Tensor<B>,
) -> &'a Tensor<B> {
    let Some(previous) = done.last() else {
        return image;
    };
    match pools.iter().find(|(after, _)| *after == done.len() - 1) {
        Some((_, pool)) => pool.output(),
        None => previous.output(),
    }
}

/// Runs the units in order on `image`, each pool on its unit's output; the
/// features are then the outputs of the units `feature_units()` names.
pub fn forward<B: Backend>(
    backend: &B,
    units: &mut [ConvUnit<B>],
    pools: &mut Pools<B>,
    image: &Tensor<B>,
    workspace: &mut Tensor<B>,
) {
    for i in 0..units.len() {
        let (done, rest) = units.split_at_mut(i);
        rest[0].forward(backend, chain_input(done, pools, image), workspace);
        if let Some((_, pool)) = pools.iter_mut().find(|(after, _)| *after == i) {
            pool.forward(backend, rest[0].output());
        }
    }
}

/// Backward through the chain of `units` from the gradients of its
/// features: `features` are unit indices in increasing order, the last one
/// the last unit, and `feature_grads[k]` the gradient of unit
/// `features[k]`'s output from the layers above (the head). SSD's backbone
/// (with its extra blocks) is the same chain with more features, VGG's with
/// `pools` between units too. Units before `stop` are frozen and get
/// nothing (the pass ends at unit `stop`).
#[allow(clippy::too_many_arguments)]
pub fn backward<B: Backend>(
    backend: &B,
    units: &mut [ConvUnit<B>],
    pools: &mut Pools<B>,
    image: &Tensor<B>,
    features: &[usize],
    feature_grads: &[Tensor<B>],
    stop: usize,
    s: &mut Scratch<B>,
) {
    let last = units.len() - 1;
    assert_eq!(
        features.last(),
        Some(&last),
        "the deepest feature is the last unit"
    );
    assert_eq!(
        features.len(),
        feature_grads.len(),
        "one gradient per feature"
    );
    copy_into(backend, &feature_grads[features.len() - 1], &mut s.grad);
    for i in (stop..=last).rev() {
        let (done, rest) = units.split_at_mut(i);
        let x = chain_input(done, pools, image);
        let dx = (i > stop).then_some(&mut s.grad_next);
        rest[0].backward(backend, x, &s.grad, &mut s.dz, dx, &mut s.workspace);
        if i == stop {
            break;
        }
        s.step_down();
        if let Some((_, pool)) = pools.iter_mut().find(|(after, _)| *after == i - 1) {
            pool.backward(backend, done[i - 1].output(), &s.grad, &mut s.grad_next);
            s.step_down();
        }
        // A feature's output also feeds the head: its gradient adds up.
        if let Some(k) = features.iter().position(|&f| f == i - 1) {
            accumulate(backend, &feature_grads[k], &mut s.grad);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_width_shapes_match_the_spec() {
        let spec = MobileNetV1Spec { scale: 1.0 };
        let units = spec.units();
        assert_eq!(units.len(), 27);
        assert_eq!(units[0].weight_shape(), [32, 3, 3, 3]);
        assert_eq!(units[1].prefix, "conv2_1_dw");
        assert_eq!(units[1].weight_shape(), [32, 1, 3, 3]);
        assert_eq!(units[2].weight_shape(), [64, 32, 1, 1]);
        assert_eq!(units[26].prefix, "conv6_sep");
        assert_eq!(units[26].weight_shape(), [1024, 1024, 1, 1]);
        assert_eq!(spec.feature_units(), [8, 12, 26]);
        assert_eq!(spec.feature_channels(), [256, 512, 1024]);
        let strides: usize = units.iter().map(|u| u.stride).product();
        assert_eq!(strides, 32);
    }

    #[test]
    fn quarter_width() {
        let spec = MobileNetV1Spec { scale: 0.25 };
        assert_eq!(spec.feature_channels(), [64, 128, 256]);
        assert_eq!(spec.units()[0].weight_shape(), [8, 3, 3, 3]);
    }
}
