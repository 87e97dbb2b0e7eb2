//! What every detector here is made of: a list of conv units in model order
//! (the backbone's first) and the bookkeeping of their parameters. The
//! loading rules, snapshots, the optimizer and freezing work on this, the same
//! for every architecture; each detector adds only its wiring.

use super::conv_unit::{ConvUnit, ConvUnitSpec, Norm, ParamAttr, ParamRole, UnitParam};
use super::fc::FcSpec;
use super::init::Rng;
use super::mask_head::ConvTransposeUnitSpec;
use crate::backend::Backend;
use crate::layers::{ConvTranspose2d, FullyConnected, L2Norm};
use crate::params::ParamSpec;
use crate::tensor::Tensor;
use pulsefocus_formats::{Checkpoint, RawTensor};

/// Why a value could not be set on a model parameter.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SetParamError {
    #[error("the model has no parameter named {0}")]
    Unknown(String),
    #[error("parameter {name} has {expected} values, got {got}")]
    Length {
        name: String,
        expected: usize,
        got: usize,
    },
}

/// Where a parameter lives: its unit, its role there, and its declaration.
/// An L2 norm's scale lives in the unit whose output it normalises
/// (`ConvUnit::l2_norm`) and is frozen with it. A fully connected layer's
/// weight and bias (roles `FcWeight`, `FcBias`) live in `ConvNet::fcs`, a
/// transposed conv's (`TransposedWeight`, `TransposedBias`) in
/// `ConvNet::transposed`, and `unit` is then the index there.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSlot {
    pub unit: usize,
    pub param: UnitParam,
}

/// An L2 norm with a learned per-channel scale on a unit's output, which
/// the detector feeds to its head in place of the output (VGG16-SSD's
/// `conv4_3_norm`, `VGG._l2_norm_scale`). Its scale is a parameter of its
/// own layer, not of the conv's, so it is declared here and not by the
/// unit.
#[derive(Debug, Clone, PartialEq)]
pub struct L2NormSpec {
    /// The scale's name: Paddle's `Scale` layers are unnamed, so their
    /// parameters are `Scale_N.w_0` by that layer type's counter.
    pub name: String,
    /// The unit whose output it normalises.
    pub unit: usize,
    /// The scale's initial value (`VGG.normalizations`: 20).
    pub init_scale: f32,
    /// The unit after whose parameters Paddle creates this one (VGG adds
    /// its norms once the extra blocks are built): the slot order.
    pub declared_after: usize,
}

impl L2NormSpec {
    fn param(&self, channels: usize) -> UnitParam {
        // `create_parameter` without a regularizer: the optimizer's decay.
        UnitParam::new(
            self.name.clone(),
            &[channels],
            ParamRole::L2NormScale,
            ParamAttr::DEFAULT,
        )
    }
}

/// Every parameter's slot: each unit's, with each L2 norm's after the unit
/// it names in `declared_after`, then the fully connected layers' (the R-CNN
/// box heads, created after every conv), then the transposed convs'. This is
/// Paddle's creation order unless a head's convs come after its fully
/// connected layers (Mask R-CNN): `ConvNet::order_slots` puts them there.
pub fn param_slots(
    units: &[ConvUnitSpec],
    norms: &[L2NormSpec],
    fcs: &[FcSpec],
    transposed: &[ConvTransposeUnitSpec],
) -> Vec<ParamSlot> {
    let mut slots = Vec::new();
    for (unit, u) in units.iter().enumerate() {
        slots.extend(
            u.params()
                .into_iter()
                .map(|param| ParamSlot { unit, param }),
        );
        for norm in norms.iter().filter(|n| n.declared_after == unit) {
            slots.push(ParamSlot {
                unit: norm.unit,
                param: norm.param(units[norm.unit].out_channels),
            });
        }
    }
    for (unit, fc) in fcs.iter().enumerate() {
        slots.extend(
            fc.params()
                .into_iter()
                .map(|param| ParamSlot { unit, param }),
        );
    }
    for (unit, t) in transposed.iter().enumerate() {
        slots.extend(
            t.params()
                .into_iter()
                .map(|param| ParamSlot { unit, param }),
        );
    }
    slots
}

/// Running statistics saved before a pass that would move them (planning).
pub struct SavedRunningStats(Vec<(usize, ParamRole, Vec<f32>)>);

/// A detector's conv units on backend `B` with their parameter slots.
pub struct ConvNet<B: Backend> {
    backend: B,
    pub units: Vec<ConvUnit<B>>,
    /// Fully connected layers after the convs (R-CNN box heads), never
    /// frozen by `freeze_units`.
    pub fcs: Vec<FullyConnected<B>>,
    /// Transposed convs of the heads (Mask R-CNN's `conv5_mask`), never
    /// frozen by `freeze_units`.
    pub transposed: Vec<ConvTranspose2d<B>>,
    slots: Vec<ParamSlot>,
    /// Units before this index are frozen: no gradient, no update.
    frozen_units: usize,
}

impl<B: Backend> ConvNet<B> {
    /// Builds the units with PaddleDetection's initial values drawn from
    /// `seed`, in order.
    pub fn new(backend: &B, unit_specs: Vec<ConvUnitSpec>, seed: u64) -> Self {
        ConvNet::build(backend, unit_specs, &[], Vec::new(), &[], seed)
    }

    /// `new`, with fully connected layers after the convs, drawn after them.
    pub fn with_fcs(
        backend: &B,
        unit_specs: Vec<ConvUnitSpec>,
        fc_specs: Vec<FcSpec>,
        seed: u64,
    ) -> Self {
        ConvNet::build(backend, unit_specs, &[], fc_specs, &[], seed)
    }

    /// `with_fcs`, with transposed convs drawn after the fully connected
    /// layers, and the slots in the order of `creation_order` (every
    /// parameter's name once: Paddle's creation order).
    pub fn with_transposed(
        backend: &B,
        unit_specs: Vec<ConvUnitSpec>,
        fc_specs: Vec<FcSpec>,
        transposed: &[ConvTransposeUnitSpec],
        creation_order: &[ParamSpec],
        seed: u64,
    ) -> Self {
        let mut net = ConvNet::build(backend, unit_specs, &[], fc_specs, transposed, seed);
        let position = |slot: &ParamSlot| {
            let name = &slot.param.spec.name;
            creation_order
                .iter()
                .position(|p| p == &slot.param.spec)
                .unwrap_or_else(|| panic!("{name} is not in the creation order given"))
        };
        assert_eq!(
            net.slots.len(),
            creation_order.len(),
            "one slot per parameter of the creation order"
        );
        net.slots.sort_by_key(position);
        net
    }

    /// `new`, with L2 norms on the outputs of some units (their scales at
    /// their initial values; they draw nothing from `seed`).
    pub fn with_norms(
        backend: &B,
        unit_specs: Vec<ConvUnitSpec>,
        norms: &[L2NormSpec],
        seed: u64,
    ) -> Self {
        ConvNet::build(backend, unit_specs, norms, Vec::new(), &[], seed)
    }

    fn build(
        backend: &B,
        unit_specs: Vec<ConvUnitSpec>,
        norms: &[L2NormSpec],
        fc_specs: Vec<FcSpec>,
        transposed: &[ConvTransposeUnitSpec],
        seed: u64,
    ) -> Self {
        let mut rng = Rng::from_state(seed);
        let slots = param_slots(&unit_specs, norms, &fc_specs, transposed);
        let mut units: Vec<ConvUnit<B>> = unit_specs
            .into_iter()
            .map(|u| ConvUnit::new(backend, u, &mut rng))
            .collect();
        let fcs = fc_specs
            .into_iter()
            .map(|f| FullyConnected::new(backend, f, &mut rng))
            .collect();
        let transposed = transposed
            .iter()
            .map(|t| t.build(backend, &mut rng))
            .collect();
        for norm in norms {
            let unit = &mut units[norm.unit];
            unit.l2_norm = Some(L2Norm::new(
                backend,
                unit.spec.out_channels,
                norm.init_scale,
            ));
        }
        ConvNet {
            backend: backend.clone(),
            units,
            fcs,
            transposed,
            slots,
            frozen_units: 0,
        }
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Every parameter's place, in model order (the order of `param_specs`).
    pub fn slots(&self) -> &[ParamSlot] {
        &self.slots
    }

    fn slot(&self, name: &str) -> Option<&ParamSlot> {
        self.slots.iter().find(|s| s.param.spec.name == name)
    }

    /// The tensor holding the parameter in `slot`.
    pub fn tensor(&self, slot: &ParamSlot) -> &Tensor<B> {
        match slot.param.role {
            ParamRole::FcWeight | ParamRole::FcBias => self.fcs[slot.unit].tensor(slot.param.role),
            ParamRole::TransposedWeight | ParamRole::TransposedBias => {
                self.transposed[slot.unit].tensor(slot.param.role)
            }
            role => self.units[slot.unit].tensor(role),
        }
    }

    fn tensor_mut(&mut self, slot: &ParamSlot) -> &mut Tensor<B> {
        match slot.param.role {
            ParamRole::FcWeight | ParamRole::FcBias => {
                self.fcs[slot.unit].tensor_mut(slot.param.role)
            }
            ParamRole::TransposedWeight | ParamRole::TransposedBias => {
                self.transposed[slot.unit].tensor_mut(slot.param.role)
            }
            role => self.units[slot.unit].tensor_mut(role),
        }
    }

    /// The gradient of the parameter in `slot` from the last backward pass;
    /// None for running statistics.
    pub fn grad(&self, slot: &ParamSlot) -> Option<&Tensor<B>> {
        match slot.param.role {
            ParamRole::FcWeight | ParamRole::FcBias => self.fcs[slot.unit].grad(slot.param.role),
            ParamRole::TransposedWeight | ParamRole::TransposedBias => {
                self.transposed[slot.unit].grad(slot.param.role)
            }
            role => self.units[slot.unit].grad(role),
        }
    }

    /// The parameter in `slot` and its gradient, for the optimizer.
    pub fn param_and_grad_mut(&mut self, slot: &ParamSlot) -> Option<(&mut Tensor<B>, &Tensor<B>)> {
        match slot.param.role {
            ParamRole::FcWeight | ParamRole::FcBias => {
                self.fcs[slot.unit].param_and_grad_mut(slot.param.role)
            }
            ParamRole::TransposedWeight | ParamRole::TransposedBias => {
                self.transposed[slot.unit].param_and_grad_mut(slot.param.role)
            }
            role => self.units[slot.unit].param_and_grad_mut(role),
        }
    }

    /// A parameter's values, downloaded from the backend.
    pub fn param_values(&self, name: &str) -> Option<Vec<f32>> {
        let slot = self.slot(name)?;
        Some(self.tensor(slot).to_host(&self.backend))
    }

    /// A parameter's gradient from the last backward pass, downloaded; None
    /// for running statistics and unknown names.
    pub fn param_grad(&self, name: &str) -> Option<Vec<f32>> {
        let slot = self.slot(name)?;
        Some(self.grad(slot)?.to_host(&self.backend))
    }

    /// Overwrites one parameter's values (row-major, as in the checkpoint).
    pub fn set_param(&mut self, name: &str, values: &[f32]) -> Result<(), SetParamError> {
        let slot = self
            .slot(name)
            .ok_or_else(|| SetParamError::Unknown(name.to_string()))?
            .clone();
        let expected = slot.param.spec.numel();
        if values.len() != expected {
            return Err(SetParamError::Length {
                name: name.to_string(),
                expected,
                got: values.len(),
            });
        }
        let backend = self.backend.clone();
        self.tensor_mut(&slot).upload(&backend, values);
        Ok(())
    }

    /// Every parameter as f32 under its legacy name, in model order, so a
    /// snapshot loads back into PaddleDetection.
    pub fn to_checkpoint(&self) -> Checkpoint {
        let mut checkpoint = Checkpoint::new();
        for slot in &self.slots {
            let values = self.tensor(slot).to_host(&self.backend);
            let spec = &slot.param.spec;
            checkpoint.insert(
                spec.name.clone(),
                RawTensor::from_f32(spec.shape.clone(), &values),
            );
        }
        checkpoint
    }

    /// Freezes the first `units` conv units (the backbone's come first): they
    /// get no gradient and no update, and the backward pass stops above them.
    pub fn freeze_units(&mut self, units: usize) {
        self.frozen_units = units.min(self.units.len());
    }

    pub fn frozen_units(&self) -> usize {
        self.frozen_units
    }

    /// Paddle's `freeze_norm`: every batch norm uses its running statistics
    /// and its scale and offset are not trained. Affine-channel units stay
    /// frozen whatever this says (they run as frozen batch norms).
    pub fn freeze_norm(&mut self, frozen: bool) {
        for unit in &mut self.units {
            if let (Norm::BatchNorm(_), Some(bn)) = (unit.spec.norm, unit.bn.as_mut()) {
                bn.frozen = frozen;
            }
        }
    }

    /// Training (batch statistics) or inference (running statistics) mode.
    pub fn set_training(&mut self, training: bool) {
        for bn in self.units.iter_mut().filter_map(|u| u.bn.as_mut()) {
            bn.training = training;
        }
    }

    /// Whether the parameter in `slot` is trained: not a running statistic,
    /// not in a frozen unit, not a frozen norm's scale or offset.
    pub fn is_trained(&self, slot: &ParamSlot) -> bool {
        let role = slot.param.role;
        let frozen_norm = matches!(role, ParamRole::BnScale | ParamRole::BnOffset)
            && self.units[slot.unit]
                .bn
                .as_ref()
                .is_some_and(|bn| bn.frozen);
        let frozen_unit = role.in_conv_unit() && slot.unit < self.frozen_units;
        role.is_trainable() && !frozen_unit && !frozen_norm
    }

    /// The running statistics as they are now, for `restore_running_stats`
    /// after a pass on made-up data (planning) has moved them.
    pub fn save_running_stats(&self) -> SavedRunningStats {
        SavedRunningStats(
            self.slots
                .iter()
                .filter(|s| matches!(s.param.role, ParamRole::BnMean | ParamRole::BnVariance))
                .map(|s| {
                    (
                        s.unit,
                        s.param.role,
                        self.units[s.unit]
                            .tensor(s.param.role)
                            .to_host(&self.backend),
                    )
                })
                .collect(),
        )
    }

    pub fn restore_running_stats(&mut self, saved: SavedRunningStats) {
        for (unit, role, values) in saved.0 {
            self.units[unit]
                .tensor_mut(role)
                .upload(&self.backend, &values);
        }
    }

    /// Bytes of the units' parameters, gradients, activations and saved
    /// statistics.
    pub fn planned_bytes(&self) -> usize {
        let units: usize = self
            .units
            .iter()
            .map(|u| u.planned_bytes(&self.backend))
            .sum();
        let fcs: usize = self
            .fcs
            .iter()
            .map(|f| f.planned_bytes(&self.backend))
            .sum();
        let transposed: usize = self
            .transposed
            .iter()
            .map(|t| t.planned_bytes(&self.backend))
            .sum();
        units + fcs + transposed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::conv_unit::{Activation, NameStyle, ParamAttr, WeightInit};
    use crate::CpuBackend;

    /// `freeze_norm(false)` unfreezes batch norms only: an affine channel
    /// stays frozen (it has no trained form yet), and its scale is not trained.
    #[test]
    fn affine_channel_stays_frozen() {
        let affine = ConvUnitSpec {
            prefix: "conv1".into(),
            style: NameStyle::ResNet,
            in_channels: 3,
            out_channels: 4,
            kernel: 3,
            stride: 1,
            padding: None,
            dilation: 1,
            groups: 1,
            norm: Norm::AffineChannel(ParamAttr {
                decay: Some(0.0),
                learning_rate: 0.0,
                constant: None,
            }),
            activation: Activation::Relu,
            init: WeightInit::ConvDefaultNormal,
            weight: ParamAttr::DEFAULT,
        };
        let bn = ConvUnitSpec {
            prefix: "b".into(),
            style: NameStyle::Underscored,
            in_channels: 4,
            norm: Norm::BatchNorm(ParamAttr::NO_DECAY),
            ..affine.clone()
        };
        let mut net = ConvNet::new(&CpuBackend::new(), vec![affine, bn], 1);
        net.freeze_norm(false);
        let frozen: Vec<bool> = net
            .units
            .iter()
            .map(|u| u.bn.as_ref().unwrap().frozen)
            .collect();
        assert_eq!(frozen, [true, false]);
        let trained: Vec<(&str, bool)> = net
            .slots()
            .iter()
            .filter(|s| s.param.role == ParamRole::BnScale)
            .map(|s| (s.param.spec.name.as_str(), net.is_trained(s)))
            .collect();
        assert_eq!(trained, [("bn_conv1_scale", false), ("b_bn_scale", true)]);
    }
}
