//! The shared `Backend` test suite: every method of the core `Backend`
//! trait, run on the backend under test and on `CpuBackend` (the reference)
//! with the same inputs, results compared with a stated tolerance.
//!
//! Each `*_matches` function takes the backend under test; the
//! [`backend_tests!`] macro makes one `#[test]` of each for a backend
//! constructor (the pattern of candle's `test_device!`). Conventions every
//! check follows:
//! - inputs are deterministic pseudo-random data from several [`SEEDS`];
//! - every buffer is [`TAIL`] elements longer than its tensor (the trait
//!   allows it: memory is planned for the largest shape and reused). Input
//!   tails hold NaN, so a kernel that reads past its tensor poisons its
//!   result; output buffers start as garbage, tail included, so a kernel that
//!   accumulates instead of overwriting, or writes past its tensor, differs
//!   from the reference, and the tail is checked bit for bit;
//! - inputs are read back after the call and must be unchanged;
//! - a backward pass is fed the reference's forward outputs, so a rounding
//!   difference in the forward cannot flip an activation's derivative and
//!   show up as a backward mismatch.

// Each test binary instantiating the suite uses every check, but a helper
// may be unused by one of them.
#![allow(dead_code)]

pub mod batch_norm;
pub mod bbox_head_loss;
pub mod conv;
pub mod conv_transpose;
pub mod detect;
pub mod elementwise;
pub mod faulty;
pub mod fc;
pub mod global_avg_pool;
pub mod head_rows;
pub mod l2_norm;
pub mod mask_loss;
pub mod mask_paste;
pub mod memory;
pub mod optim;
pub mod polygon_masks;
pub mod pool;
pub mod proposals;
pub mod rcnn_detect;
pub mod retina_box_loss;
pub mod retinanet_detect;
pub mod retinanet_targets;
pub mod roi_align;
pub mod rpn_loss;
pub mod sigmoid_focal_loss;
pub mod ssd_loss;

use pulsefocus_core::{Backend, CpuBackend};

/// Every check runs once per seed.
pub const SEEDS: [u64; 3] = [1, 2, 3];

/// Elements every buffer has beyond its tensor (odd, so a kernel that writes
/// whole vectors of 2 or 4 past the end is caught too).
pub const TAIL: usize = 7;

/// The reference backend.
pub fn cpu() -> CpuBackend {
    CpuBackend::new()
}

/// SplitMix64: a few lines, good enough for test data, the same everywhere.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5851_f42d_4c95_7f2d)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * unit
    }

    pub fn values(&mut self, len: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..len).map(|_| self.uniform(lo, hi)).collect()
    }

    /// Multiples of `step` in `[lo, hi]`: many exact ties and exact zeros
    /// (max pool's first-maximum rule, activations at their kinks).
    pub fn steps(&mut self, len: usize, lo: f32, hi: f32, step: f32) -> Vec<f32> {
        let count = ((hi - lo) / step) as u64 + 1;
        (0..len)
            .map(|_| lo + step * (self.next_u64() % count) as f32)
            .collect()
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// `data` followed by a NaN tail: an input buffer's host image.
pub fn input(data: &[f32]) -> Vec<f32> {
    let mut host = data.to_vec();
    host.extend([f32::NAN; TAIL]);
    host
}

/// `len + TAIL` garbage values: an output buffer's initial host image.
pub fn garbage(rng: &mut Rng, len: usize) -> Vec<f32> {
    rng.values(len + TAIL, 100.0, 200.0)
}

/// `data` followed by garbage of either sign: the host image of a buffer
/// an op overwrites in place (every activation but the identity changes
/// such a tail, so a write past the tensor shows).
pub fn in_place(rng: &mut Rng, data: &[f32]) -> Vec<f32> {
    let mut host = data.to_vec();
    let tail = garbage(rng, 0);
    host.extend(
        tail.iter()
            .enumerate()
            .map(|(k, v)| if k % 2 == 0 { -v } else { *v }),
    );
    host
}

/// A buffer of exactly `host.len()` elements holding `host`.
pub fn buffer<B: Backend>(b: &B, host: &[f32]) -> B::Buffer {
    let mut buf = b.alloc(host.len());
    b.upload(host, &mut buf);
    buf
}

/// The whole buffer, tail included. A device backend records its first
/// failure and turns later operations into no-ops (`Backend::check`), so
/// every read first asks whether anything failed.
pub fn read<B: Backend>(b: &B, buf: &B::Buffer) -> Vec<f32> {
    let mut host = vec![0.0; b.buffer_len(buf)];
    b.download(buf, &mut host);
    if let Err(err) = b.check() {
        panic!("{}: {err}", b.name());
    }
    host
}

/// Bit-for-bit equality (NaN tails included).
pub fn assert_same_bits(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits(),
            "{what}[{i}]: {g} where {w} was expected"
        );
    }
}

/// An output buffer after a call: its first `len` elements are the result;
/// the tail must still hold what it was given.
pub fn assert_tail_kept(what: &str, got: &[f32], len: usize, initial: &[f32]) {
    assert_same_bits(&format!("{what} tail"), &got[len..], &initial[len..]);
}

/// An input buffer read back after a call must be what was uploaded.
pub fn assert_unchanged<B: Backend>(b: &B, what: &str, buf: &B::Buffer, host: &[f32]) {
    assert_same_bits(&format!("{what} (an input)"), &read(b, buf), host);
}

/// `|got - want| <= bound[i]` for the first `bound.len()` elements (a NaN on
/// either side fails).
pub fn assert_within(what: &str, got: &[f32], want: &[f32], bound: &[f32]) {
    assert!(
        got.len() >= bound.len() && want.len() >= bound.len(),
        "{what}: lengths"
    );
    for i in 0..bound.len() {
        let (g, w) = (got[i], want[i]);
        let ok = g == w || (g - w).abs() <= bound[i];
        assert!(
            ok,
            "{what}[{i}]: {g}, reference {w} (difference {}, allowed {})",
            (g - w).abs(),
            bound[i]
        );
    }
}

/// A tolerance of the form `abs + rel * |reference|`.
#[derive(Clone, Copy, Debug)]
pub struct Tol {
    pub abs: f32,
    pub rel: f32,
}

impl Tol {
    /// Data movement, selections and single correctly rounded operations:
    /// every backend must give the same bits.
    pub const EXACT: Tol = Tol { abs: 0.0, rel: 0.0 };

    pub fn bound(self, want: &[f32]) -> Vec<f32> {
        want.iter().map(|w| self.abs + self.rel * w.abs()).collect()
    }
}

/// `assert_within` with a `Tol` over the first `len` elements.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], len: usize, tol: Tol) {
    assert_within(what, got, want, &tol.bound(&want[..len]));
}

/// The rounding bound of a sum of `terms` products in any order, with or
/// without fused multiply-adds: each result is within `(terms - 1) * u *
/// sum|term|` of the exact value (u = 2^-24), so two of them are within
/// `(terms + 2) * EPSILON * sum|term|` of each other. `envelope[i]` is
/// `sum|term|` for element i (the same linear operation run on the absolute
/// values of its inputs).
pub fn summation_bound(envelope: &[f32], terms: usize) -> Vec<f32> {
    envelope
        .iter()
        .map(|e| e * (terms + 2) as f32 * f32::EPSILON)
        .collect()
}

pub fn abs(values: &[f32]) -> Vec<f32> {
    values.iter().map(|v| v.abs()).collect()
}

pub fn max_abs(values: &[f32]) -> f32 {
    values.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

/// One `#[test]` per check of the suite for a backend: `$open` is an
/// expression giving `Option<backend>` (None: the test prints why and
/// passes, for a device this machine lacks).
#[macro_export]
macro_rules! backend_tests {
    ($module:ident, $open:expr) => {
        $crate::backend_tests!(
            $module,
            $open;
            memory_matches,
            device_queries_are_sane,
            conv2d_forward_matches,
            conv2d_backward_data_matches,
            conv2d_backward_filter_matches,
            conv_transpose2d_layer_matches,
            batch_norm_forward_train_matches,
            batch_norm_forward_eval_matches,
            batch_norm_forward_eval_in_place_matches,
            batch_norm_backward_train_matches,
            batch_norm_backward_eval_matches,
            activation_forward_matches,
            activation_forward_in_place_matches,
            activation_backward_matches,
            sigmoid_forward_matches,
            sigmoid_backward_matches,
            add_matches,
            axpy_matches,
            scale_matches,
            sum_matches,
            sum_squares_matches,
            channel_sum_matches,
            max_pool_forward_matches,
            max_pool_backward_matches,
            upsample2x_forward_matches,
            upsample2x_backward_matches,
            copy_channels_matches,
            head_rows_forward_matches,
            head_rows_backward_matches,
            l2_norm_forward_matches,
            l2_norm_backward_matches,
            roi_align_forward_matches,
            roi_align_backward_matches,
            fc_forward_matches,
            fc_backward_data_matches,
            fc_backward_weight_matches,
            global_avg_pool_forward_matches,
            global_avg_pool_backward_matches,
            sigmoid_focal_loss_matches,
            retina_box_loss_matches,
            mask_loss_matches,
            polygon_masks_matches,
            mask_paste_matches,
            sgd_momentum_matches,
            rmsprop_matches,
            yolo_detect_matches,
            ssd_detect_matches,
            generate_proposals_matches,
            ssd_loss_matches,
            retinanet_detect_matches,
            retinanet_targets_matches,
            rcnn_detect_matches,
            rpn_loss_matches,
            bbox_head_loss_matches,
        );
    };
    ($module:ident, $open:expr; $($check:ident),+ $(,)?) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                fn $check() {
                    if let Some(backend) = $open {
                        $crate::suite::checks::$check(&backend);
                    }
                }
            )+
        }
    };
}

/// Every check, by name, for the macro.
pub mod checks {
    pub use super::batch_norm::{
        batch_norm_backward_eval_matches, batch_norm_backward_train_matches,
        batch_norm_forward_eval_in_place_matches, batch_norm_forward_eval_matches,
        batch_norm_forward_train_matches,
    };
    pub use super::bbox_head_loss::bbox_head_loss_matches;
    pub use super::conv::{
        conv2d_backward_data_matches, conv2d_backward_filter_matches, conv2d_forward_matches,
    };
    pub use super::conv_transpose::conv_transpose2d_layer_matches;
    pub use super::detect::{ssd_detect_matches, yolo_detect_matches};
    pub use super::elementwise::{
        activation_backward_matches, activation_forward_in_place_matches,
        activation_forward_matches, add_matches, axpy_matches, channel_sum_matches, scale_matches,
        sigmoid_backward_matches, sigmoid_forward_matches, sum_matches, sum_squares_matches,
    };
    pub use super::fc::{fc_backward_data_matches, fc_backward_weight_matches, fc_forward_matches};
    pub use super::global_avg_pool::{
        global_avg_pool_backward_matches, global_avg_pool_forward_matches,
    };
    pub use super::head_rows::{head_rows_backward_matches, head_rows_forward_matches};
    pub use super::l2_norm::{l2_norm_backward_matches, l2_norm_forward_matches};
    pub use super::mask_loss::mask_loss_matches;
    pub use super::mask_paste::mask_paste_matches;
    pub use super::memory::{device_queries_are_sane, memory_matches};
    pub use super::optim::{rmsprop_matches, sgd_momentum_matches};
    pub use super::polygon_masks::polygon_masks_matches;
    pub use super::pool::{
        copy_channels_matches, max_pool_backward_matches, max_pool_forward_matches,
        upsample2x_backward_matches, upsample2x_forward_matches,
    };
    pub use super::proposals::generate_proposals_matches;
    pub use super::rcnn_detect::rcnn_detect_matches;
    pub use super::retina_box_loss::retina_box_loss_matches;
    pub use super::retinanet_detect::retinanet_detect_matches;
    pub use super::retinanet_targets::retinanet_targets_matches;
    pub use super::roi_align::{roi_align_backward_matches, roi_align_forward_matches};
    pub use super::rpn_loss::rpn_loss_matches;
    pub use super::sigmoid_focal_loss::sigmoid_focal_loss_matches;
    pub use super::ssd_loss::ssd_loss_matches;
}
