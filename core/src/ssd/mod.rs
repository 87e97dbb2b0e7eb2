//! SSD (PaddleDetection's `SSD` architecture): the prior boxes of
//! `multi_box_head`, the loss of `ssd_loss` and the output decoder of
//! `detection_output`. The model follows in its own files.

pub mod detect;
pub mod loss;
pub mod prior_box;

pub use detect::{detect, ssd_nms};
pub use loss::{ssd_loss, ImageTruth, SsdLoss, SsdLossConfig};
pub use prior_box::{sizes_from_ratios, PriorBoxLevel};
