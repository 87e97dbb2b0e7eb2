//! Paddle's `BboxOverlaps` (`detection/bbox_util.h`): the IoU of two pixel
//! boxes as the R-CNN operators (`rpn_target_assign`,
//! `generate_proposal_labels`) compute it.
//!
//! It differs from the NMS's `jaccard_overlap` (Paddle's `JaccardOverlap`)
//! for boxes less than a pixel apart: `JaccardOverlap` calls boxes whose
//! coordinates do not overlap disjoint, `BboxOverlaps` clamps
//! `x_max - x_min + 1` at zero and so gives them a sliver of intersection.
//! Gt boxes scaled by `im_info` and anchors at half pixels hit that case.

use crate::box_coder::BoxXyxy;

/// IoU of pixel boxes `a` and `b` (width `x2 - x1 + 1`).
pub fn bbox_overlap(a: &BoxXyxy, b: &BoxXyxy) -> f32 {
    let area = |r: &BoxXyxy| (r[2] - r[0] + 1.0) * (r[3] - r[1] + 1.0);
    let inter_w = (a[2].min(b[2]) - a[0].max(b[0]) + 1.0).max(0.0);
    let inter_h = (a[3].min(b[3]) - a[1].max(b[1]) + 1.0).max(0.0);
    let inter = inter_w * inter_h;
    if inter == 0.0 {
        0.0
    } else {
        inter / (area(a) + area(b) - inter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yolo::nms::jaccard_overlap;

    #[test]
    fn equal_boxes_overlap_fully_and_far_ones_not_at_all() {
        let a = [0.0, 0.0, 9.0, 9.0];
        assert_eq!(bbox_overlap(&a, &a), 1.0);
        assert_eq!(bbox_overlap(&a, &[20.0, 0.0, 29.0, 9.0]), 0.0);
        // Half of a: 50 of 100 pixels.
        assert_eq!(bbox_overlap(&a, &[0.0, 0.0, 4.0, 9.0]), 0.5);
    }

    #[test]
    fn boxes_half_a_pixel_apart_share_a_sliver_unlike_jaccard_overlap() {
        let a = [0.0, 0.0, 9.0, 9.0];
        let b = [9.5, 0.0, 19.5, 9.0];
        // Intersection 0.5 x 10 pixels of 100 + 110 - 5.
        assert_eq!(bbox_overlap(&a, &b), 5.0 / 205.0);
        assert_eq!(jaccard_overlap(&a, &b, false), 0.0);
    }
}
