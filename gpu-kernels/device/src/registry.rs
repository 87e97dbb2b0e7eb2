//! Every kernel by its PTX entry name, for the host: what an emulated driver
//! needs to run a launch the way a GPU would, from the entry name and the
//! packed parameters alone (see the `pub mod NAME` that [`kernel!`](crate::kernel)
//! generates next to each kernel).
use crate::Ctx;

/// A kernel parameter type: device pointers and the scalars the kernels take.
pub trait Param {
    const POINTER: bool;
}

impl<T> Param for *const T {
    const POINTER: bool = true;
}
impl<T> Param for *mut T {
    const POINTER: bool = true;
}
impl Param for u32 {
    const POINTER: bool = false;
}
impl Param for i32 {
    const POINTER: bool = false;
}
impl Param for f32 {
    const POINTER: bool = false;
}
impl Param for u64 {
    const POINTER: bool = false;
}

/// One kernel as the host runs it.
pub struct HostEntry {
    /// The PTX entry name.
    pub name: &'static str,
    /// Bytes of each parameter, in order.
    pub param_sizes: &'static [usize],
    /// Whether each parameter is a device pointer.
    pub param_pointers: &'static [bool],
    /// Runs one thread of the kernel on packed parameters (see `call_packed`).
    pub call: unsafe fn(&Ctx, &[*const u8]),
}

/// Lists each kernel once, by its module path; the entry name is the
/// function's name, as `#[no_mangle]` makes it in the PTX.
macro_rules! host_entries {
    ($($module:ident :: $name:ident),* $(,)?) => {
        /// Every kernel of the crate, in the order of the source files.
        pub static HOST_ENTRIES: &[HostEntry] = &[
            $(HostEntry {
                name: stringify!($name),
                param_sizes: crate::$module::$name::PARAM_SIZES,
                param_pointers: crate::$module::$name::PARAM_POINTERS,
                call: crate::$module::$name::call_packed,
            }),*
        ];
    };
}

host_entries! {
    batch_norm::batch_norm_train_forward,
    batch_norm::batch_norm_train_backward,
    batch_norm::batch_norm_eval_forward,
    batch_norm::batch_norm_eval_backward,
    bbox_head_loss::bbox_loss_rows,
    concat::copy_channels,
    conv::conv2d_forward,
    conv::conv2d_backward_data,
    conv::conv2d_backward_filter,
    conv::depthwise_conv2d_forward,
    conv::depthwise_conv2d_backward_data,
    conv::depthwise_conv2d_backward_filter,
    elementwise::activation_forward,
    elementwise::activation_backward,
    elementwise::scale,
    elementwise::sigmoid_forward,
    elementwise::sigmoid_backward,
    elementwise::add,
    elementwise::axpy,
    elementwise::fill,
    fc::fc_forward,
    gemm::gemm,
    global_avg_pool::global_avg_pool_forward,
    global_avg_pool::global_avg_pool_backward,
    head_rows::head_rows_forward,
    head_rows::head_rows_backward,
    l2_norm::l2_norm_forward,
    l2_norm::l2_norm_backward_data,
    l2_norm::l2_norm_backward_scale,
    mask_loss::mask_loss,
    mask_paste::mask_paste,
    polygon_masks::polygon_masks,
    nms::nms_count_candidates,
    nms::nms_compact_candidates,
    nms::bitonic_sort_step,
    nms::nms_bounds,
    nms::nms_suppress,
    nms::nms_rank_keys,
    nms::nms_keep_top,
    nms::nms_write,
    pool::max_pool_forward,
    pool::max_pool_backward,
    proposals::proposal_keys,
    proposals::proposal_decode,
    rcnn_detect::rcnn_decode,
    rcnn_detect::rcnn_order_keys,
    rcnn_detect::rcnn_write,
    reduce::sum_blocks,
    reduce::channel_sum,
    retina_box_loss::retina_box_loss,
    retinanet_detect::retina_count_candidates,
    retinanet_detect::retina_compact_candidates,
    retinanet_detect::retina_decode,
    retinanet_detect::retina_write,
    retinanet_targets::gt_best_overlap_blocks,
    retinanet_targets::gt_best_overlaps,
    retinanet_targets::retina_target_rows,
    retinanet_targets::retina_fg_num,
    rmsprop::rmsprop,
    rpn_loss::rpn_loss_anchors,
    rpn_targets::rpn_anchor_candidates,
    rpn_targets::rpn_sample,
    roi_align::roi_align_forward,
    roi_align::roi_align_backward,
    sgd::momentum_sgd,
    sigmoid_focal_loss::sigmoid_focal_loss,
    ssd_decode::ssd_decode,
    ssd_decode::softmax_rows,
    ssd_loss::ssd_match,
    ssd_loss::ssd_mining_keys,
    ssd_loss::ssd_select_negatives,
    ssd_loss::ssd_loss_rows,
    upsample::upsample_nearest_forward,
    upsample::upsample_nearest_backward,
    yolo_decode::yolo_decode,
}

/// The kernel whose PTX entry is `name`.
pub fn host_entry(name: &str) -> Option<&'static HostEntry> {
    HOST_ENTRIES.iter().find(|entry| entry.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_found() {
        for (i, entry) in HOST_ENTRIES.iter().enumerate() {
            assert!(
                HOST_ENTRIES[..i].iter().all(|e| e.name != entry.name),
                "{} listed twice",
                entry.name
            );
            assert!(std::ptr::eq(host_entry(entry.name).unwrap(), entry));
            assert_eq!(entry.param_sizes.len(), entry.param_pointers.len());
        }
        assert!(host_entry("no_such_kernel").is_none());
    }

    #[test]
    fn packed_call_reads_the_parameters_in_order() {
        use crate::emu::{launch_independent, DeviceBuf, Dim3};
        let x = DeviceBuf::new(&[1.0f32, 2.0, 3.0]);
        let y = DeviceBuf::filled(3, 10.0f32);
        let entry = host_entry("axpy").unwrap();
        assert_eq!(entry.param_sizes, &[4, 8, 8, 4]);
        assert_eq!(entry.param_pointers, &[false, true, true, false]);
        let (alpha, xp, yp, n) = (2.0f32, x.ptr() as u64, y.ptr() as u64, 3u32);
        let params: [*const u8; 4] = [
            &alpha as *const f32 as *const u8,
            &xp as *const u64 as *const u8,
            &yp as *const u64 as *const u8,
            &n as *const u32 as *const u8,
        ];
        launch_independent(Dim3::x(1), Dim3::x(4), |ctx| unsafe {
            (entry.call)(ctx, &params)
        });
        assert_eq!(y.to_vec(), vec![12.0, 14.0, 16.0]);
    }
}
