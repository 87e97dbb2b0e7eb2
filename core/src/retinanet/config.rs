//! The settings of RetinaNet's non-learned operations, under the names
//! PaddleDetection's `RetinaHead` section gives them (`target_assign`,
//! `gamma`, `alpha`, `sigma`, `output_decoder`), with the values of
//! `configs/retinanet_r50_fpn_1x.yml`.

/// `retinanet_target_assign`: which anchors are trained as what.
#[derive(Debug, Clone, PartialEq)]
pub struct RetinaTargetConfig {
    /// An anchor overlapping a box by at least this is foreground.
    pub positive_overlap: f32,
    /// An anchor overlapping every box by less than this is background;
    /// between the two it is ignored.
    pub negative_overlap: f32,
}

/// `retinanet_detection_output` (`RetinaOutputDecoder`): from the head's
/// outputs to detections.
#[derive(Debug, Clone, PartialEq)]
pub struct RetinaOutputConfig {
    /// Scores at or below this are dropped (`score_thresh`), but on the
    /// last level, where Paddle keeps every score above 0.
    pub score_thresh: f32,
    pub nms_thresh: f32,
    /// Best-scoring (anchor, class) pairs kept per level before NMS
    /// (`pre_nms_top_n`).
    pub pre_nms_top_n: usize,
    /// Detections kept per image after NMS (`detections_per_im`).
    pub detections_per_im: usize,
    /// Adaptive NMS factor; 1 turns it off.
    pub nms_eta: f32,
}

/// Everything `RetinaHead` needs besides its convolutions.
#[derive(Debug, Clone, PartialEq)]
pub struct RetinaConfig {
    pub target: RetinaTargetConfig,
    /// The focal loss's focusing parameter and foreground weight.
    pub gamma: f32,
    pub alpha: f32,
    /// The box loss's smooth-L1 sigma.
    pub sigma: f32,
    pub output: RetinaOutputConfig,
}

impl Default for RetinaConfig {
    /// `retinanet_r50_fpn_1x.yml`'s values.
    fn default() -> Self {
        RetinaConfig {
            target: RetinaTargetConfig {
                positive_overlap: 0.5,
                negative_overlap: 0.4,
            },
            gamma: 2.0,
            alpha: 0.25,
            sigma: 3.015_113_4,
            output: RetinaOutputConfig {
                score_thresh: 0.05,
                nms_thresh: 0.5,
                pre_nms_top_n: 1000,
                detections_per_im: 100,
                nms_eta: 1.0,
            },
        }
    }
}
