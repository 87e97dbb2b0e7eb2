//! RetinaNet's non-learned operations, as Paddle 1.8's operators compute
//! them for PaddleDetection's `RetinaNet`: target assignment, the sigmoid
//! focal loss and the detection output. Boxes are pixel boxes
//! `[x1, y1, x2, y2]` whose width is `x2 - x1 + 1`, as in the R-CNN
//! operators (`crate::rcnn`), whose anchor generator RetinaNet shares.

pub mod box_loss;
pub mod config;
pub mod detection_output;
pub mod focal_loss;
pub mod target_assign;

pub use box_loss::{level_box_targets, retina_box_loss};
pub use config::{RetinaConfig, RetinaOutputConfig, RetinaTargetConfig};
pub use detection_output::retinanet_detection_output;
pub use focal_loss::{focal_normalizer, level_labels, sigmoid_focal_loss};
pub use target_assign::{retinanet_target_assign, RetinaTargets};
