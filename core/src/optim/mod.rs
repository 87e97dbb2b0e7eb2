//! Parameter updates: Paddle's momentum SGD with L2 decay and per-parameter
//! decay overrides (`momentum`), and the learning-rate schedule (`schedule`).
//! [`Optimizer`] says which update rule a config's `OptimizerBuilder` names;
//! the kernels themselves are `Backend::sgd_momentum` and `Backend::rmsprop`.

pub mod momentum;
pub mod schedule;

pub use momentum::{momentum_update, yolov3_decay, Momentum};
pub use schedule::Schedule;

/// The update rule `OptimizerBuilder.optimizer.type` names, with its settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Optimizer {
    /// `Momentum`: momentum SGD (the YOLOv3 configs, momentum 0.9). State:
    /// one velocity per parameter (`<name>_velocity_0`).
    Momentum { momentum: f32 },
    /// `RMSPropOptimizer` (the SSD configs), not centred. State: a mean
    /// square and a moment per parameter (`<name>_mean_square_0`,
    /// `<name>_momentum_0`).
    RmsProp {
        rho: f32,
        epsilon: f32,
        momentum: f32,
    },
}

impl Optimizer {
    /// `fluid.optimizer.RMSPropOptimizer`'s defaults with the given momentum.
    pub fn rmsprop(momentum: f32) -> Self {
        Optimizer::RmsProp {
            rho: 0.95,
            epsilon: 1e-6,
            momentum,
        }
    }

    /// The names Paddle gives this optimizer's state tensors of a
    /// parameter, as suffixes of the parameter's name, in the order
    /// `Trainer` keeps them.
    pub fn state_suffixes(&self) -> &'static [&'static str] {
        match self {
            Optimizer::Momentum { .. } => &["_velocity_0"],
            Optimizer::RmsProp { .. } => &["_mean_square_0", "_momentum_0"],
        }
    }
}
