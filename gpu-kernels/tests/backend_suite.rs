//! Every method of the core `Backend` trait on the GPU backend against the
//! CPU backend, with the checks of `suite/` (one `#[test]` per method and
//! backend, made by `backend_tests!`).
//!
//! - `cpu`: the reference against itself, which keeps the suite's own
//!   claims about the reference (tails untouched, inputs unchanged) tested.
//! - `emulated`: `GpuBackend` over the emulated device: the same host code
//!   (argument checks, grids, the memory pool), each launch checked against
//!   the committed PTX's `.entry` and run by the CPU grid emulator. Needs no
//!   GPU and runs in every `cargo test`.
//! - `cuda`: `GpuBackend::open()`, the real device. Without one these tests
//!   print `skipped: ...` and pass, unless PULSEFOCUS_REQUIRE_GPU=1 (set by
//!   scripts/gpu-check.sh), where a missing GPU fails them.

mod suite;

use pulsefocus_core::CpuBackend;
use suite::checks;
use suite::faulty::{Fault, Faulty};

backend_tests!(cpu, Some(CpuBackend::new()));

backend_tests!(
    emulated,
    Some(pulsefocus_gpu::GpuBackend::emulated().expect("open the emulated GPU"))
);

// The suite catches the faults a port makes (each test's backend is the CPU
// with one fault; the check must fail, naming what differs).

#[test]
#[should_panic(expected = "add len 1 seed 1 tail")]
fn a_write_past_the_tensor_is_caught() {
    checks::add_matches(&Faulty(Fault::WritesPastTheEnd));
}

#[test]
#[should_panic(expected = "sum len 1 seed 1: NaN")]
fn a_read_past_the_tensor_is_caught() {
    checks::sum_matches(&Faulty(Fault::ReadsPastTheEnd));
}

#[test]
#[should_panic(expected = "conv2d_backward_filter stem")]
fn accumulating_instead_of_overwriting_is_caught() {
    checks::conv2d_backward_filter_matches(&Faulty(Fault::Accumulates));
}

#[test]
#[should_panic(expected = "channel_sum (1, 1, 1) seed 1")]
fn channel_sums_accumulated_are_caught() {
    checks::channel_sum_matches(&Faulty(Fault::Accumulates));
}

#[test]
#[should_panic(expected = "bias true seed 1")]
fn a_missing_bias_is_caught() {
    checks::conv2d_forward_matches(&Faulty(Fault::ForgetsOneBias));
}

#[test]
#[should_panic(expected = "max_pool_backward")]
fn the_wrong_one_of_tied_maxima_is_caught() {
    checks::max_pool_backward_matches(&Faulty(Fault::LastMaximum));
}

#[test]
#[should_panic(expected = "sgd_momentum")]
fn swapped_arguments_are_caught() {
    checks::sgd_momentum_matches(&Faulty(Fault::SwappedArguments));
}

#[test]
#[should_panic(expected = "rmsprop")]
fn swapped_rmsprop_arguments_are_caught() {
    checks::rmsprop_matches(&Faulty(Fault::SwappedArguments));
}

#[test]
#[should_panic(expected = "running_mean")]
fn skipped_running_statistics_are_caught() {
    checks::batch_norm_forward_train_matches(&Faulty(Fault::SkipsRunningStatistics));
}

#[test]
#[should_panic(expected = "l2_norm_forward")]
fn an_epsilon_left_out_of_the_norm_is_caught() {
    checks::l2_norm_forward_matches(&Faulty(Fault::DropsEpsilon));
}

#[test]
#[should_panic(expected = "head_rows_forward")]
fn rows_without_the_transpose_are_caught() {
    checks::head_rows_forward_matches(&Faulty(Fault::AnchorMajorRows));
}

#[test]
#[should_panic(expected = "roi_align_forward")]
fn a_half_pixel_offset_in_roi_align_is_caught() {
    checks::roi_align_forward_matches(&Faulty(Fault::HalfPixelOffset));
}

#[test]
#[should_panic(expected = "roi_align_backward")]
fn roi_align_gradients_accumulated_into_dx_are_caught() {
    checks::roi_align_backward_matches(&Faulty(Fault::Accumulates));
}

#[test]
#[should_panic(expected = "ssd_detect")]
fn a_reported_background_class_is_caught() {
    checks::ssd_detect_matches(&Faulty(Fault::KeepsBackground));
}

#[test]
#[should_panic(expected = "fc_forward fc6")]
fn a_missing_fc_bias_is_caught() {
    checks::fc_forward_matches(&Faulty(Fault::ForgetsOneBias));
}

#[test]
#[should_panic(
    expected = "fc_backward_weight fc6 on 7x7 RoI features, ReLU, several tiles each way"
)]
fn an_fc_bias_gradient_accumulated_is_caught() {
    checks::fc_backward_weight_matches(&Faulty(Fault::Accumulates));
}

#[test]
#[should_panic(expected = "global_avg_pool_backward")]
fn the_sums_gradient_for_the_means_is_caught() {
    checks::global_avg_pool_backward_matches(&Faulty(Fault::UnscaledPoolGradient));
}

#[test]
#[should_panic(expected = "sigmoid_focal_loss RetinaNet P3")]
fn an_ignored_anchor_taken_for_background_is_caught() {
    checks::sigmoid_focal_loss_matches(&Faulty(Fault::IgnoredAsBackground));
}

#[test]
#[should_panic(expected = "accumulate true")]
fn an_input_gradient_overwritten_instead_of_added_is_caught() {
    checks::conv2d_backward_data_matches(&Faulty(Fault::OverwritesInsteadOfAccumulating));
}

#[test]
#[should_panic(expected = "mask_loss C4 14x14, 5 classes")]
fn a_placeholder_roi_scored_is_caught() {
    checks::mask_loss_matches(&Faulty(Fault::PlaceholderScored));
}

#[test]
#[should_panic(expected = "polygon_masks C4 14x14")]
fn polygons_overwritten_instead_of_ored_are_caught() {
    checks::polygon_masks_matches(&Faulty(Fault::FirstPolygonOnly));
}

#[test]
#[should_panic(expected = "mask_paste C4 14x14, 5 classes")]
fn a_mask_read_one_channel_early_is_caught() {
    checks::mask_paste_matches(&Faulty(Fault::ChannelOffByOne));
}

#[test]
#[should_panic(expected = "activation_forward_in_place Relu len 1 seed 1 tail")]
fn an_in_place_write_past_the_tensor_is_caught() {
    checks::activation_forward_in_place_matches(&Faulty(Fault::WritesPastTheEnd));
}

#[test]
#[should_panic(
    expected = "batch_norm_forward_eval_in_place BatchNormGeom { batch: 2, channels: 6, spatial: 169 } Relu seed 1"
)]
fn an_in_place_norm_without_its_activation_is_caught() {
    checks::batch_norm_forward_eval_in_place_matches(&Faulty(Fault::DropsActivation));
}

#[test]
#[should_panic(expected = "generate_proposals C4 one level, 2 images, adaptive NMS seed 1")]
fn proposals_without_adaptive_nms_are_caught() {
    checks::generate_proposals_matches(&Faulty(Fault::FixedNmsThreshold));
}

#[test]
#[should_panic(expected = "ssd_loss MobileNet-SSD at 96 pixels, 21 classes seed 1")]
fn mining_without_the_negative_ratio_is_caught() {
    checks::ssd_loss_matches(&Faulty(Fault::MinesEveryCandidate));
}

#[test]
#[should_panic(expected = "retinanet_detect one level, 2 images, adaptive NMS, no cuts seed 1")]
fn retinanet_thresholds_on_the_last_level_are_caught() {
    checks::retinanet_detect_matches(&Faulty(Fault::ThresholdsEveryLevel));
}

#[test]
#[should_panic(expected = "rcnn_detect 2 images, 4 classes, Paddle's settings seed 1")]
fn rcnn_detections_by_score_are_caught() {
    checks::rcnn_detect_matches(&Faulty(Fault::ListsByScore));
}

#[test]
#[should_panic(expected = "retina_box_loss RetinaNet P3")]
fn a_box_loss_over_every_anchor_is_caught() {
    checks::retina_box_loss_matches(&Faulty(Fault::RegressesEveryAnchor));
}

#[test]
#[should_panic(expected = "retinanet_targets P3-P7 on 128x192, 3 images seed 1")]
fn ties_to_the_last_best_box_are_caught() {
    checks::retinanet_targets_matches(&Faulty(Fault::LastBestBox));
}

#[test]
#[should_panic(
    expected = "rpn_loss C4 one level, 15 anchors, 2 images, random draw seed 1: loss_rpn_bbox"
)]
fn an_rpn_box_loss_over_the_foreground_count_is_caught() {
    checks::rpn_loss_matches(&Faulty(Fault::DividesByForeground));
}

#[test]
#[should_panic(
    expected = "rpn_loss C4 one level, 15 anchors, 2 images, random draw seed 1: loss_rpn_cls"
)]
fn rpn_samples_not_drawn_at_random_are_caught() {
    checks::rpn_loss_matches(&Faulty(Fault::SamplesTheFirstOnes));
}

#[test]
#[should_panic(expected = "bbox_head_loss Faster R-CNN, 6 classes, 67 RoIs seed 1: bbox gradient")]
fn box_gradients_left_unzeroed_are_caught() {
    checks::bbox_head_loss_matches(&Faulty(Fault::KeepsUnweightedBoxGradients));
}

/// The real GPU, or None (printing why) on a machine without one.
fn cuda() -> Option<pulsefocus_gpu::GpuBackend> {
    match pulsefocus_gpu::GpuBackend::open() {
        Ok(backend) => Some(backend),
        Err(err) if std::env::var("PULSEFOCUS_REQUIRE_GPU").as_deref() == Ok("1") => {
            panic!("PULSEFOCUS_REQUIRE_GPU=1 but {err}")
        }
        Err(err) => {
            println!("skipped: {err}");
            None
        }
    }
}

backend_tests!(cuda, cuda());
