//! A model parameter at run time: its declaration (name, shape, role, decay
//! override), its values, its gradient and whether it is frozen.

use super::conv_unit::{ParamRole, UnitParam};

#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    pub shape: Vec<usize>,
    pub role: ParamRole,
    /// The L2 decay its own regularizer sets; None = the optimizer's.
    pub weight_decay: Option<f32>,
    pub value: Vec<f32>,
    /// Gradient of the loss, same length as `value`; empty for the BN running
    /// statistics, which are not trained.
    pub grad: Vec<f32>,
    /// Frozen parameters keep their value: no gradient is accumulated and the
    /// optimizer skips them.
    pub frozen: bool,
}

impl Param {
    /// A parameter with zero values (the caller initialises them).
    pub fn new(declared: UnitParam) -> Self {
        let numel = declared.spec.numel();
        Param {
            name: declared.spec.name,
            shape: declared.spec.shape,
            role: declared.role,
            weight_decay: declared.weight_decay,
            value: vec![0.0; numel],
            grad: if declared.role.is_trainable() {
                vec![0.0; numel]
            } else {
                Vec::new()
            },
            frozen: false,
        }
    }

    /// Whether the optimizer should update it.
    pub fn is_trained(&self) -> bool {
        self.role.is_trainable() && !self.frozen
    }
}
