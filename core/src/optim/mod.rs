//! Parameter updates: Paddle's momentum SGD with L2 decay and per-parameter
//! decay overrides (`momentum`), and the learning-rate schedule (`schedule`).

pub mod momentum;
pub mod schedule;

pub use momentum::{momentum_update, yolov3_decay, Momentum};
pub use schedule::Schedule;
