//! A backbone that is a chain of conv units, each reading the previous
//! one's output (through a max pool where there is one), with some units'
//! outputs also feeding the head: MobileNetV1 (YOLOv3's and SSD's, with
//! SSD's extra blocks) and VGG16 (SSD's, with its pools). Forward and
//! backward side by side; the head's gradients join the chain at their
//! features on the way down.

use super::conv_unit::{accumulate, copy_into, ConvUnit, Scratch};
use crate::backend::Backend;
use crate::layers::MaxPool2d;
use crate::tensor::Tensor;

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
/// features are then the outputs of the units the model names.
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
