//! SSD (PaddleDetection's `SSD` architecture): the prior boxes of
//! `multi_box_head` and the loss of `ssd_loss`. The model and the output
//! decoding follow in their own files.

pub mod loss;
pub mod prior_box;

pub use loss::{ssd_loss, ImageTruth, SsdLoss, SsdLossConfig};
pub use prior_box::{sizes_from_ratios, PriorBoxLevel};
