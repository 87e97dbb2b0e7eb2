//! The feature pyramid as PaddleDetection 0.x's `FPN` builds it
//! (`ppdet/modeling/backbones/fpn.py`) without norms, as
//! `faster_rcnn_r50_fpn_1x.yml` and `retinanet_r50_fpn_1x.yml` do. From the
//! deepest backbone feature (`res5_sum`) down:
//!
//! - `fpn_inner_res5_sum`: a 1x1 conv to `num_chan` channels;
//! - for each shallower feature `resN_sum`: a 1x1 lateral conv
//!   `fpn_inner_resN_sum_lateral` plus the level above upsampled 2x
//!   (nearest);
//! - on each of those a 3x3 conv `fpn_resN_sum`, the pyramid's outputs;
//! - without extra convs, when `max_level - min_level` equals the number of
//!   backbone levels, one more level on top: the deepest output max-pooled
//!   with kernel 1, stride 2 (P6, no parameters);
//! - with extra convs (`has_extra_convs`, RetinaNet), one level per level
//!   above the backbone's up to `max_level`: `fpn_6`, a 3x3 stride-2 conv
//!   on the deepest backbone feature itself (Paddle's `use_c5`, its
//!   default), then `fpn_7` on ReLU(`fpn_6`), and so on; each conv's output
//!   (before any ReLU) is its level.
//!
//! Every conv has a bias (learning rate 2, no decay) and an `Xavier` weight
//! whose `fan_out` is the conv's input channels times its kernel area.
//!
//! At run time `FpnLinks` holds the upsamplings, sums, the pool and the
//! ReLUs between extra convs, and runs forward and backward on the slice of
//! the detector's `ConvNet` units that `units` lists.

use super::conv_unit::{
    accumulate, Activation, ConvUnit, ConvUnitSpec, NameStyle, Norm, ParamAttr, Scratch, WeightInit,
};
use crate::backend::Backend;
use crate::layers::{ActivationLayer, Add, MaxPool2d, Upsample2x};
use crate::tensor::Tensor;

#[derive(Debug, Clone, PartialEq)]
pub struct FpnSpec {
    pub num_chan: usize,
    pub min_level: usize,
    pub max_level: usize,
    /// One per backbone level, deepest first (`[1/32, 1/16, 1/8, 1/4]`).
    pub spatial_scale: Vec<f32>,
    /// Levels above the backbone's are strided convs (RetinaNet) instead of
    /// the max-pooled top.
    pub has_extra_convs: bool,
}

impl FpnSpec {
    /// `faster_rcnn_r50_fpn_1x.yml`'s FPN over res2..res5.
    pub fn r50_fpn() -> FpnSpec {
        FpnSpec {
            num_chan: 256,
            min_level: 2,
            max_level: 6,
            spatial_scale: vec![1.0 / 32.0, 1.0 / 16.0, 1.0 / 8.0, 1.0 / 4.0],
            has_extra_convs: false,
        }
    }

    /// `retinanet_r50_fpn_1x.yml`'s FPN over res3..res5, with P6 and P7 by
    /// extra convs.
    pub fn r50_retinanet() -> FpnSpec {
        FpnSpec {
            num_chan: 256,
            min_level: 3,
            max_level: 7,
            spatial_scale: vec![1.0 / 32.0, 1.0 / 16.0, 1.0 / 8.0],
            has_extra_convs: true,
        }
    }

    /// Whether the pyramid has the max-pooled level on top.
    pub fn has_pooled_top(&self) -> bool {
        !self.has_extra_convs && self.max_level - self.min_level == self.spatial_scale.len()
    }

    /// The level of the deepest backbone feature.
    fn highest_backbone_level(&self) -> usize {
        self.min_level + self.spatial_scale.len() - 1
    }

    /// How many levels extra convs add above the backbone's (0 without
    /// `has_extra_convs`).
    pub fn extra_levels(&self) -> usize {
        if self.has_extra_convs {
            self.max_level.saturating_sub(self.highest_backbone_level())
        } else {
            0
        }
    }

    /// The output levels' spatial scales, deepest first (each level above
    /// the backbone's, pooled or by an extra conv, half the one below).
    pub fn output_scales(&self) -> Vec<f32> {
        let mut scales = self.spatial_scale.clone();
        let above = self.extra_levels() + usize::from(self.has_pooled_top());
        for _ in 0..above {
            scales.insert(0, scales[0] * 0.5);
        }
        scales
    }

    fn conv(&self, prefix: String, cin: usize, kernel: usize) -> ConvUnitSpec {
        ConvUnitSpec {
            prefix,
            style: NameStyle::Suffixed,
            in_channels: cin,
            out_channels: self.num_chan,
            kernel,
            stride: 1,
            padding: None,
            dilation: 1,
            groups: 1,
            norm: Norm::Bias(ParamAttr::DETECTRON_BIAS),
            activation: Activation::Identity,
            init: WeightInit::XavierUniform {
                fan_in: None,
                fan_out: Some(cin * kernel * kernel),
            },
            weight: ParamAttr::DEFAULT,
        }
    }

    /// The convs in Paddle's creation order for backbone features `body`:
    /// (stage, channels) in backbone order (res2 first). Inner convs deepest
    /// first, then the outputs deepest first, then the extra convs upwards
    /// (`fpn_6` on the deepest feature, `fpn_7`, ...).
    pub fn units(&self, body: &[(usize, usize)]) -> Vec<ConvUnitSpec> {
        let deepest_first: Vec<&(usize, usize)> = body.iter().rev().collect();
        let mut units: Vec<ConvUnitSpec> = deepest_first
            .iter()
            .enumerate()
            .map(|(i, &&(stage, channels))| {
                let lateral = if i == 0 { "" } else { "_lateral" };
                self.conv(format!("fpn_inner_res{stage}_sum{lateral}"), channels, 1)
            })
            .collect();
        units.extend(
            deepest_first
                .iter()
                .map(|&&(stage, _)| self.conv(format!("fpn_res{stage}_sum"), self.num_chan, 3)),
        );
        let first = self.highest_backbone_level() + 1;
        units.extend((0..self.extra_levels()).map(|e| {
            let cin = match e {
                0 => deepest_first[0].1,
                _ => self.num_chan,
            };
            ConvUnitSpec {
                stride: 2,
                ..self.conv(format!("fpn_{}", first + e), cin, 3)
            }
        }));
        units
    }
}

/// The pyramid's layers that are not conv units: the top-down upsamplings
/// (`resize_nearest` at scale 2, which with Paddle's `align_corners`
/// repeats each value twice as `Upsample2x` does) and sums, P6's max pool,
/// and the ReLUs before the second and later extra convs. The conv units
/// are a slice of the detector's `ConvNet` in `FpnSpec::units` order:
/// `levels` inner convs, deepest first, `levels` output convs, deepest
/// first, then the extra convs upwards.
pub struct FpnLinks<B: Backend> {
    levels: usize,
    /// `upsamples[i]`, `sums[i]`: from inner level i to i + 1 (deepest is 0).
    upsamples: Vec<Upsample2x<B>>,
    sums: Vec<Add<B>>,
    /// P6: kernel 1, stride 2 (floor mode) on the deepest output.
    pooled_top: Option<MaxPool2d<B>>,
    /// Levels above the backbone's by strided convs.
    extras: usize,
    /// `relus[e]`: ReLU of extra level e's output, the input of extra conv
    /// e + 1 (one fewer than the extra convs).
    relus: Vec<ActivationLayer<B>>,
}

/// Inner level `i` (deepest is 0): the deepest inner conv, or a sum.
fn inner<'a, B: Backend>(
    sums: &'a [Add<B>],
    inner_units: &'a [ConvUnit<B>],
    i: usize,
) -> &'a Tensor<B> {
    match i {
        0 => inner_units[0].output(),
        _ => sums[i - 1].output(),
    }
}

impl<B: Backend> FpnLinks<B> {
    /// The pyramid of `spec`, on as many backbone features as it has
    /// spatial scales.
    pub fn new(backend: &B, spec: &FpnSpec) -> Self {
        let levels = spec.spatial_scale.len();
        let extras = spec.extra_levels();
        FpnLinks {
            levels,
            upsamples: (1..levels).map(|_| Upsample2x::new(backend)).collect(),
            sums: (1..levels).map(|_| Add::new(backend)).collect(),
            pooled_top: spec
                .has_pooled_top()
                .then(|| MaxPool2d::new(backend, 1, 2, 0)),
            extras,
            relus: (1..extras.max(1))
                .map(|_| ActivationLayer::new(backend, Activation::Relu))
                .collect(),
        }
    }

    /// Runs the pyramid on the backbone's features `body` (res2 first, as
    /// `ResNetLinks::features`); the outputs are then `outputs()`. The
    /// image must be padded to a multiple of 32 (`PadBatch`'s
    /// `pad_to_stride`) so each level is twice the one above, as in Paddle.
    pub fn forward(
        &mut self,
        backend: &B,
        units: &mut [ConvUnit<B>],
        body: &[&Tensor<B>],
        workspace: &mut Tensor<B>,
    ) {
        let (levels, extras) = (self.levels, self.extras);
        assert_eq!(body.len(), levels, "FPN: one feature per level");
        assert_eq!(units.len(), 2 * levels + extras, "FPN: unit count");
        for i in 0..levels {
            let feature = body[levels - 1 - i];
            units[i].forward(backend, feature, workspace);
            if i > 0 {
                let upper = inner(&self.sums, units, i - 1);
                let up = self.upsamples[i - 1].forward(backend, upper);
                let lateral = units[i].output();
                assert_eq!(
                    up.shape(),
                    lateral.shape(),
                    "FPN: backbone feature {} (res2 is 0) does not match the level above \
                     upsampled (pad the image to a multiple of 32)",
                    levels - 1 - i
                );
                self.sums[i - 1].forward(backend, lateral, up);
            }
        }
        for i in 0..levels {
            let (inner_units, outputs) = units.split_at_mut(levels);
            outputs[i].forward(backend, inner(&self.sums, inner_units, i), workspace);
        }
        if let Some(pool) = &mut self.pooled_top {
            pool.forward(backend, units[levels].output());
        }
        // Extra level e: a strided conv on the deepest feature (e = 0) or
        // on ReLU(level e - 1).
        for e in 0..extras {
            let (below, rest) = units.split_at_mut(2 * levels + e);
            let x = match e {
                0 => body[levels - 1],
                _ => self.relus[e - 1].forward(backend, below[2 * levels + e - 1].output()),
            };
            rest[0].forward(backend, x, workspace);
        }
    }

    /// The pyramid's outputs after `forward`, deepest first as Paddle's
    /// `fpn_dict`: the extra levels (P7, P6) or the pooled level (P6), if
    /// any, then one per backbone feature (P5..P2 for res5..res2).
    pub fn outputs<'a>(&'a self, units: &'a [ConvUnit<B>]) -> Vec<&'a Tensor<B>> {
        let extras = units[2 * self.levels..].iter().rev().map(|u| u.output());
        let convs = units[self.levels..2 * self.levels]
            .iter()
            .map(|u| u.output());
        extras
            .chain(self.pooled_top.iter().map(|p| p.output()))
            .chain(convs)
            .collect()
    }

    /// Backward from the outputs' gradients (as `outputs()`, deepest
    /// first) after a `forward` on `body`: every unit's gradients, and the
    /// gradients of the backbone features from `first_body_grad` on (res2
    /// first; those before are frozen stages' outputs) into `body_grads`.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &mut self,
        backend: &B,
        units: &mut [ConvUnit<B>],
        body: &[&Tensor<B>],
        output_grads: &[&Tensor<B>],
        body_grads: &mut [Tensor<B>],
        first_body_grad: usize,
        s: &mut Scratch<B>,
    ) {
        let (levels, extras) = (self.levels, self.extras);
        let above = extras + usize::from(self.pooled_top.is_some());
        assert_eq!(output_grads.len(), levels + above, "FPN: output gradients");
        assert_eq!(body_grads.len(), levels, "FPN: one gradient per feature");
        // The extra levels from the top down: s.grad holds the gradient of
        // level e's output, its own plus what flows back through the ReLU
        // from level e + 1. The deepest feature's share ends in
        // s.grad_branch.
        let deepest_trained = first_body_grad < levels;
        for e in (0..extras).rev() {
            let dy = if e == extras - 1 {
                output_grads[0]
            } else {
                &s.grad
            };
            let unit = &mut units[2 * levels + e];
            if e == 0 {
                let dx = deepest_trained.then_some(&mut s.grad_branch);
                unit.backward(
                    backend,
                    body[levels - 1],
                    dy,
                    &mut s.dz,
                    dx,
                    &mut s.workspace,
                );
            } else {
                let x = self.relus[e - 1].output();
                let dx = Some(&mut s.grad_next);
                unit.backward(backend, x, dy, &mut s.dz, dx, &mut s.workspace);
                self.relus[e - 1].backward(backend, &s.grad_next, &mut s.grad);
                accumulate(backend, output_grads[extras - e], &mut s.grad);
            }
        }
        // The deepest output's gradient: its own plus what P6 gives it.
        if let Some(pool) = &mut self.pooled_top {
            pool.backward(
                backend,
                units[levels].output(),
                output_grads[0],
                &mut s.grad_branch,
            );
            accumulate(backend, output_grads[1], &mut s.grad_branch);
        }
        // From the finest level up: s.grad collects each inner level's
        // gradient, from its output conv and from the level below through
        // the upsampling.
        for i in (0..levels).rev() {
            let dy = if i == 0 && self.pooled_top.is_some() {
                &s.grad_branch
            } else {
                output_grads[above + i]
            };
            let (inner_units, outputs) = units.split_at_mut(levels);
            let x = inner(&self.sums, inner_units, i);
            outputs[i].backward(
                backend,
                x,
                dy,
                &mut s.dz,
                Some(&mut s.grad_next),
                &mut s.workspace,
            );
            if i == levels - 1 {
                s.step_down();
            } else {
                accumulate(backend, &s.grad_next, &mut s.grad);
            }
            // The inner (or lateral) conv on backbone feature `f`.
            let f = levels - 1 - i;
            let dx = (f >= first_body_grad).then_some(&mut body_grads[f]);
            units[i].backward(backend, body[f], &s.grad, &mut s.dz, dx, &mut s.workspace);
            if i > 0 {
                self.upsamples[i - 1].backward(backend, &s.grad, &mut s.grad_next);
                s.step_down();
            }
        }
        // The deepest feature also feeds the first extra conv.
        if extras > 0 && deepest_trained {
            accumulate(backend, &s.grad_branch, &mut body_grads[levels - 1]);
        }
    }

    /// Bytes of the upsamplings', sums', pool's and ReLUs' outputs.
    pub fn planned_bytes(&self, backend: &B) -> usize {
        self.upsamples
            .iter()
            .map(|u| u.planned_bytes(backend))
            .chain(self.sums.iter().map(|a| a.planned_bytes(backend)))
            .chain(self.pooled_top.iter().map(|p| p.planned_bytes(backend)))
            .chain(self.relus.iter().map(|r| r.planned_bytes(backend)))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_params, probe_loss, random_vec, Probe, SEEDS};
    use crate::models::resnet::fixture::{self, SIZES};
    use crate::models::resnet::{ResNetLinks, ResNetSpec};
    use crate::models::retinanet::RetinaNetSpec;
    use crate::models::{ConvNet, FasterRcnnSpec};
    use crate::CpuBackend;

    /// A backbone with the pyramid on it: the backbone's units first.
    struct Pyramid {
        net: ConvNet<CpuBackend>,
        backbone_units: usize,
        body: ResNetLinks<CpuBackend>,
        fpn: FpnLinks<CpuBackend>,
        scratch: Scratch<CpuBackend>,
        body_grads: Vec<Tensor<CpuBackend>>,
    }

    impl Pyramid {
        fn new(cpu: &CpuBackend, backbone: &ResNetSpec, fpn: &FpnSpec, seed: u64) -> Self {
            let mut units = backbone.units();
            let backbone_units = units.len();
            let body: Vec<(usize, usize)> = backbone
                .feature_maps
                .iter()
                .copied()
                .zip(backbone.feature_channels())
                .collect();
            units.extend(fpn.units(&body));
            let mut net = ConvNet::new(cpu, units, seed);
            net.freeze_norm(true);
            net.freeze_units(backbone.frozen_units());
            Pyramid {
                net,
                backbone_units,
                body: ResNetLinks::backbone(cpu, backbone),
                fpn: FpnLinks::new(cpu, fpn),
                scratch: Scratch::new(cpu),
                body_grads: (0..body.len()).map(|_| Tensor::zeros(cpu, &[0])).collect(),
            }
        }

        /// The outputs, P6 first.
        fn forward(&mut self, image: &Tensor<CpuBackend>) -> Vec<&Tensor<CpuBackend>> {
            let cpu = *self.net.backend();
            let frozen = self.net.frozen_units();
            let (backbone, pyramid) = self.net.units.split_at_mut(self.backbone_units);
            let workspace = &mut self.scratch.workspace;
            self.body.forward(&cpu, backbone, image, frozen, workspace);
            self.fpn
                .forward(&cpu, pyramid, &self.body.features(), workspace);
            self.fpn.outputs(pyramid)
        }

        fn backward(&mut self, image: &Tensor<CpuBackend>, output_grads: &[Tensor<CpuBackend>]) {
            let cpu = *self.net.backend();
            let stop = self.net.frozen_units();
            let (backbone, pyramid) = self.net.units.split_at_mut(self.backbone_units);
            let s = &mut self.scratch;
            self.fpn.backward(
                &cpu,
                pyramid,
                &self.body.features(),
                &output_grads.iter().collect::<Vec<_>>(),
                &mut self.body_grads,
                self.body.frozen_features(stop),
                s,
            );
            self.body
                .backward(&cpu, backbone, image, &self.body_grads, stop, s);
        }

        fn probe(&mut self, image: &Tensor<CpuBackend>, probes: &[Vec<f32>]) -> Probe {
            let cpu = *self.net.backend();
            let outputs = self.forward(image);
            outputs
                .iter()
                .zip(probes)
                .map(|(o, r)| probe_loss(&o.to_host(&cpu), r))
                .sum()
        }
    }

    /// The script's output names, P6 first, and their probes' numbers.
    const OUTPUTS: [(&str, usize); 5] = [
        ("fpn_res5_sum_subsampled_2x", 2),
        ("fpn_res5_sum", 3),
        ("fpn_res4_sum", 4),
        ("fpn_res3_sum", 5),
        ("fpn_res2_sum", 6),
    ];

    /// The same for RetinaNet's pyramid, P7 first.
    const RETINA_OUTPUTS: [(&str, usize); 5] = [
        ("fpn_7", 7),
        ("fpn_6", 8),
        ("fpn_res5_sum", 3),
        ("fpn_res4_sum", 4),
        ("fpn_res3_sum", 5),
    ];

    /// One of the fixture's pyramids (`backbone` under `fpn`) on Paddle's
    /// weights: its `outputs` (named `<tag><size>.<name>` in the fixture) at
    /// two image sizes and back, then the gradients of a probe loss for
    /// `grads` (`grad.<program>.<name>`), with `freeze_at: 2` none for the
    /// stem and res2. Within 1e-5 of the largest value.
    fn equals_paddles(
        backbone: &ResNetSpec,
        fpn: &FpnSpec,
        (tag, program): (&str, &str),
        outputs: &[(&str, usize)],
        grads: &[&str],
    ) {
        let cpu = CpuBackend::new();
        let expected = fixture::expected();
        let mut model = Pyramid::new(&cpu, backbone, fpn, 1);
        crate::finetune::weights::load_weights(&mut model.net, &fixture::weights())
            .expect("the weights load");
        let mut image = Tensor::zeros(&cpu, &[0]);
        let mut shapes = Vec::new();
        for (h, w) in [SIZES[0], SIZES[1], SIZES[0]] {
            image = Tensor::from_host(&cpu, &[1, 3, h, w], &fixture::image(h, w));
            let ours = model.forward(&image);
            assert_eq!(ours.len(), outputs.len(), "the pyramid's levels");
            shapes = ours.iter().map(|o| o.shape().to_vec()).collect();
            for ((name, _), ours) in outputs.iter().zip(ours) {
                let (shape, paddle) = fixture::tensor(&expected, &format!("{tag}{h}x{w}.{name}"));
                assert_eq!(ours.shape(), shape.as_slice(), "{name}");
                fixture::assert_close(name, &ours.to_host(&cpu), &paddle, 1e-5);
            }
        }
        let output_grads: Vec<Tensor<CpuBackend>> = outputs
            .iter()
            .zip(&shapes)
            .map(|(&(_, k), shape)| {
                let n = shape.iter().product();
                Tensor::from_host(&cpu, shape, &fixture::probe(k, n))
            })
            .collect();
        model.backward(&image, &output_grads);
        for name in grads {
            let (_, paddle) = fixture::tensor(&expected, &format!("grad.{program}.{name}"));
            let ours = model.net.param_grad(name).expect("a gradient");
            fixture::assert_close(name, &ours, &paddle, 1e-5);
        }
        fixture::assert_frozen_untouched(&model.net);
    }

    /// `small_fpn`'s backbone (frozen batch norm on Paddle's running
    /// statistics) and pyramid on Paddle's weights: P6..P2 (seen: within
    /// 5e-7 for the outputs, 1e-6 for the gradients).
    #[test]
    fn pyramid_equals_paddledetections() {
        let spec = FasterRcnnSpec::small_fpn(5);
        let fpn = spec.fpn.clone().expect("an FPN");
        let grads = [
            "res3a_branch2a_weights",
            "res4b_branch2a_weights",
            "res5a_branch2a_weights",
            "fpn_inner_res5_sum_w",
            "fpn_inner_res2_sum_lateral_w",
            "fpn_inner_res3_sum_lateral_b",
            "fpn_res2_sum_w",
            "fpn_res4_sum_b",
            "fpn_res5_sum_w",
        ];
        equals_paddles(&spec.backbone, &fpn, ("", "fpn"), &OUTPUTS, &grads);
    }

    /// `RetinaNetSpec::small`'s backbone (affine channel, res3..res5) and
    /// pyramid on Paddle's weights: P7..P3 with `fpn_6` on res5 and `fpn_7`
    /// on its ReLU, and the gradients through them into res5 (seen: within
    /// 1.1e-6 for the outputs and the gradients).
    #[test]
    fn extra_convs_equal_paddledetections() {
        let spec = RetinaNetSpec::small(5);
        let grads = [
            "res3a_branch2a_weights",
            "res5a_branch2a_weights",
            "fpn_inner_res5_sum_w",
            "fpn_res3_sum_w",
            "fpn_res5_sum_b",
            "fpn_6_w",
            "fpn_6_b",
            "fpn_7_w",
            "fpn_7_b",
        ];
        let tags = ("retina.", "retina");
        equals_paddles(&spec.backbone, &spec.fpn, tags, &RETINA_OUTPUTS, &grads);
    }

    /// Finite differences of a probe loss on the pyramid's outputs against
    /// `backward`, for every kind of conv and the backbone's stages under
    /// them (with `freeze_at: 2` and without), on the tiny ResNet: Faster
    /// R-CNN's P6..P2 (the top-down sums, P6's pool) and RetinaNet's P7..P3
    /// (the extra convs, the ReLU between them, res5's two consumers).
    #[test]
    fn gradients_match_finite_differences() {
        let cpu = CpuBackend::new();
        let faster = (
            vec![2, 3, 4, 5],
            FpnSpec {
                num_chan: 4,
                ..FpnSpec::r50_fpn()
            },
            vec![
                "fpn_inner_res5_sum_w",
                "fpn_inner_res4_sum_lateral_w",
                "fpn_inner_res2_sum_lateral_b",
                "fpn_res5_sum_w",
                "fpn_res3_sum_b",
                "fpn_res2_sum_w",
            ],
        );
        let retina = (
            vec![3, 4, 5],
            FpnSpec {
                num_chan: 4,
                ..FpnSpec::r50_retinanet()
            },
            vec![
                "fpn_inner_res5_sum_w",
                "fpn_inner_res3_sum_lateral_b",
                "fpn_res4_sum_w",
                "fpn_6_w",
                "fpn_6_b",
                "fpn_7_w",
                "fpn_7_b",
            ],
        );
        for (feature_maps, fpn, pyramid_names) in [faster, retina] {
            for freeze_at in [0, 2] {
                let backbone = ResNetSpec {
                    blocks: [1, 1, 2, 1],
                    width: 2,
                    norm_type: crate::models::resnet::NormType::BatchNorm,
                    freeze_at,
                    feature_maps: feature_maps.clone(),
                    ..ResNetSpec::new(50).expect("ResNet50")
                };
                for seed in SEEDS {
                    let mut model = Pyramid::new(&cpu, &backbone, &fpn, seed);
                    let image_shape = [2, 3, 64, 32];
                    let image = Tensor::from_host(
                        &cpu,
                        &image_shape,
                        &random_vec(seed + 100, image_shape.iter().product()),
                    );
                    let shapes: Vec<Vec<usize>> = model
                        .forward(&image)
                        .iter()
                        .map(|o| o.shape().to_vec())
                        .collect();
                    assert_eq!(shapes.len(), 5, "{feature_maps:?}: the pyramid's levels");
                    let probes: Vec<Vec<f32>> = shapes
                        .iter()
                        .enumerate()
                        .map(|(k, s)| random_vec(seed + 200 + k as u64, s.iter().product()))
                        .collect();
                    let grads: Vec<Tensor<CpuBackend>> = shapes
                        .iter()
                        .zip(&probes)
                        .map(|(s, r)| Tensor::from_host(&cpu, s, r))
                        .collect();
                    model.backward(&image, &grads);
                    fixture::assert_frozen_untouched(&model.net);
                    let mut names = pyramid_names.clone();
                    names.extend(["res3a_branch1_weights", "res5a_branch2b_weights"]);
                    if freeze_at == 0 {
                        names.extend(["conv1_weights", "res2a_branch2a_weights"]);
                    }
                    check_params(
                        &mut model,
                        |m| &mut m.net,
                        &names,
                        &format!("{feature_maps:?} freeze_at {freeze_at} seed {seed}"),
                        (3e-3, 0.1),
                        |m| m.probe(&image, &probes),
                    );
                }
            }
        }
    }

    /// The pyramid alone on random backbone features: it is linear (P6's
    /// pool of kernel 1 only subsamples), so a long step has no truncation
    /// error and the check is tight. Every unit's weight and bias, and the
    /// gradient of every feature but the frozen first.
    #[test]
    fn pyramid_alone_matches_finite_differences() {
        use crate::gradcheck::{check_gradient, GradCheck};
        let cpu = CpuBackend::new();
        let spec = FpnSpec {
            num_chan: 4,
            ..FpnSpec::r50_fpn()
        };
        // res2..res5 of the tiny ResNet on a 64x32 image, batch 2.
        let body_shapes = [[2, 8, 16, 8], [2, 16, 8, 4], [2, 32, 4, 2], [2, 64, 2, 1]];
        let levels: Vec<(usize, usize)> = (2..6).zip(body_shapes.map(|s| s[1])).collect();
        let units = spec.units(&levels);
        let names: Vec<String> = units
            .iter()
            .flat_map(|u| u.params())
            .map(|p| p.spec.name)
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let step = 1e-1;
        for seed in SEEDS {
            let mut model = Alone {
                net: ConvNet::new(&cpu, units.clone(), seed),
                links: FpnLinks::new(&cpu, &spec),
                scratch: Scratch::new(&cpu),
            };
            // Biases start at 0 in Paddle; any value checks the wiring.
            for u in &units {
                let bias = u.param_name(crate::models::conv_unit::ParamRole::ConvBias);
                let values = random_vec(seed + 50, u.out_channels);
                model.net.set_param(&bias, &values).expect("a bias");
            }
            let body: Vec<Vec<f32>> = body_shapes
                .iter()
                .enumerate()
                .map(|(k, s)| random_vec(seed + 100 + k as u64, s.iter().product()))
                .collect();
            let tensors = |body: &[Vec<f32>]| -> Vec<Tensor<CpuBackend>> {
                body.iter()
                    .zip(&body_shapes)
                    .map(|(v, s)| Tensor::from_host(&cpu, s, v))
                    .collect()
            };
            let shapes: Vec<Vec<usize>> = model
                .forward(&tensors(&body))
                .iter()
                .map(|o| o.shape().to_vec())
                .collect();
            let probes: Vec<Vec<f32>> = shapes
                .iter()
                .enumerate()
                .map(|(k, s)| random_vec(seed + 200 + k as u64, s.iter().product()))
                .collect();
            let grads: Vec<Tensor<CpuBackend>> = shapes
                .iter()
                .zip(&probes)
                .map(|(s, r)| Tensor::from_host(&cpu, s, r))
                .collect();
            let mut body_grads: Vec<Tensor<CpuBackend>> =
                (0..4).map(|_| Tensor::zeros(&cpu, &[0])).collect();
            let inputs = tensors(&body);
            let inputs: Vec<&Tensor<CpuBackend>> = inputs.iter().collect();
            let units = &mut model.net.units;
            let s = &mut model.scratch;
            model.links.backward(
                &cpu,
                units,
                &inputs,
                &grads.iter().collect::<Vec<_>>(),
                &mut body_grads,
                1,
                s,
            );
            assert_eq!(body_grads[0].numel(), 0, "the frozen feature's gradient");
            let case = format!("seed {seed}");
            check_params(
                &mut model,
                |m| &mut m.net,
                &names,
                &case,
                (step, 0.0),
                |m| m.probe(&tensors(&body), &probes),
            );
            let opts = GradCheck {
                step,
                depth: 16.0 * model.net.units.len() as f64,
                max_points: 30,
                max_kink_fraction: 0.0,
            };
            for f in 1..4 {
                let loss = |v: &[f32]| {
                    let mut moved = body.clone();
                    moved[f] = v.to_vec();
                    model.probe(&tensors(&moved), &probes)
                };
                let analytic = body_grads[f].to_host(&cpu);
                check_gradient(
                    &format!("{case} feature {f}"),
                    &body[f],
                    &analytic,
                    loss,
                    opts,
                )
                .unwrap();
            }
        }
    }

    /// The pyramid without a backbone, on given features.
    struct Alone {
        net: ConvNet<CpuBackend>,
        links: FpnLinks<CpuBackend>,
        scratch: Scratch<CpuBackend>,
    }

    impl Alone {
        fn forward(&mut self, body: &[Tensor<CpuBackend>]) -> Vec<&Tensor<CpuBackend>> {
            let cpu = *self.net.backend();
            let body: Vec<&Tensor<CpuBackend>> = body.iter().collect();
            let workspace = &mut self.scratch.workspace;
            self.links
                .forward(&cpu, &mut self.net.units, &body, workspace);
            self.links.outputs(&self.net.units)
        }

        fn probe(&mut self, body: &[Tensor<CpuBackend>], probes: &[Vec<f32>]) -> Probe {
            let cpu = *self.net.backend();
            self.forward(body)
                .iter()
                .zip(probes)
                .map(|(o, r)| probe_loss(&o.to_host(&cpu), r))
                .sum()
        }
    }

    /// A level that is not twice the one above (an image not padded to a
    /// multiple of 32) is refused, as Paddle's sum of the two fails.
    #[test]
    #[should_panic(expected = "pad the image to a multiple of 32")]
    fn unpadded_images_are_refused() {
        let cpu = CpuBackend::new();
        let spec = FasterRcnnSpec::small_fpn(5);
        let fpn = spec.fpn.clone().expect("an FPN");
        let mut model = Pyramid::new(&cpu, &spec.backbone, &fpn, 1);
        model.forward(&Tensor::zeros(&cpu, &[1, 3, 48, 64]));
    }

    #[test]
    fn names_shapes_and_initialisers() {
        let fpn = FpnSpec::r50_fpn();
        let units = fpn.units(&[(2, 256), (3, 512), (4, 1024), (5, 2048)]);
        let got: Vec<(&str, [usize; 4])> = units
            .iter()
            .map(|u| (u.prefix.as_str(), u.weight_shape()))
            .collect();
        assert_eq!(
            got,
            [
                ("fpn_inner_res5_sum", [256, 2048, 1, 1]),
                ("fpn_inner_res4_sum_lateral", [256, 1024, 1, 1]),
                ("fpn_inner_res3_sum_lateral", [256, 512, 1, 1]),
                ("fpn_inner_res2_sum_lateral", [256, 256, 1, 1]),
                ("fpn_res5_sum", [256, 256, 3, 3]),
                ("fpn_res4_sum", [256, 256, 3, 3]),
                ("fpn_res3_sum", [256, 256, 3, 3]),
                ("fpn_res2_sum", [256, 256, 3, 3]),
            ]
        );
        assert_eq!(
            units[1].init,
            WeightInit::XavierUniform {
                fan_in: None,
                fan_out: Some(1024)
            }
        );
        assert_eq!(
            units[4].init,
            WeightInit::XavierUniform {
                fan_in: None,
                fan_out: Some(256 * 9)
            }
        );
        let bias = &units[0].params()[1];
        assert_eq!(bias.spec.name, "fpn_inner_res5_sum_b");
        assert_eq!((bias.learning_rate, bias.weight_decay), (2.0, Some(0.0)));
    }

    /// RetinaNet's pyramid: no pooled top, `fpn_6` (3x3, stride 2) on
    /// res5's 2048 channels and `fpn_7` on `fpn_6`'s, after the outputs, as
    /// Paddle creates them; P7 is 1/128.
    #[test]
    fn extra_convs_are_p6_and_p7() {
        let fpn = FpnSpec::r50_retinanet();
        assert!(!fpn.has_pooled_top());
        assert_eq!(fpn.extra_levels(), 2);
        assert_eq!(
            fpn.output_scales(),
            [1.0 / 128.0, 1.0 / 64.0, 1.0 / 32.0, 1.0 / 16.0, 1.0 / 8.0]
        );
        let units = fpn.units(&[(3, 512), (4, 1024), (5, 2048)]);
        let got: Vec<(&str, [usize; 4], usize)> = units
            .iter()
            .map(|u| (u.prefix.as_str(), u.weight_shape(), u.stride))
            .collect();
        assert_eq!(
            got[4..],
            [
                ("fpn_res4_sum", [256, 256, 3, 3], 1),
                ("fpn_res3_sum", [256, 256, 3, 3], 1),
                ("fpn_6", [256, 2048, 3, 3], 2),
                ("fpn_7", [256, 256, 3, 3], 2),
            ]
        );
        assert_eq!(units[6].padding(), 1);
        assert_eq!(
            units[6].init,
            WeightInit::XavierUniform {
                fan_in: None,
                fan_out: Some(2048 * 9)
            }
        );
        let bias = &units[7].params()[1];
        assert_eq!(bias.spec.name, "fpn_7_b");
        assert_eq!((bias.learning_rate, bias.weight_decay), (2.0, Some(0.0)));
        // Without extra convs and a level above the backbone's: the pool.
        let pooled = FpnSpec {
            has_extra_convs: false,
            max_level: 6,
            ..FpnSpec::r50_retinanet()
        };
        assert!(pooled.has_pooled_top());
        assert_eq!(pooled.units(&[(3, 512), (4, 1024), (5, 2048)]).len(), 6);
    }

    #[test]
    fn the_pooled_top_level_is_p6() {
        let fpn = FpnSpec::r50_fpn();
        assert!(fpn.has_pooled_top());
        assert_eq!(
            fpn.output_scales(),
            [1.0 / 64.0, 1.0 / 32.0, 1.0 / 16.0, 1.0 / 8.0, 1.0 / 4.0]
        );
        let up_to_p5 = FpnSpec {
            max_level: 5,
            ..FpnSpec::r50_fpn()
        };
        assert!(!up_to_p5.has_pooled_top());
        assert_eq!(up_to_p5.output_scales().len(), 4);
    }
}
