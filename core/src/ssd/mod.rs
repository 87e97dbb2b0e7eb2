//! SSD (PaddleDetection's `SSD` architecture): the prior boxes of
//! `multi_box_head`. The model, box coding, loss and output decoding follow
//! in their own files.

pub mod prior_box;

pub use prior_box::{sizes_from_ratios, PriorBoxLevel};
