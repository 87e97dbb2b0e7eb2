//! The typed config: one struct per PaddleDetection section, field names as in
//! PaddleDetection's YAML, defaults as PaddleDetection's code has them (the
//! YOLOv3 values are those of `yolov3_*_voc.yml` and `yolov3_reader.yml`).

use serde::{Deserialize, Serialize};

/// Backbones the YOLOv3 model is built with (`YOLOv3.backbone`).
pub const BACKBONES: &[&str] = &["MobileNet", "DarkNet"];

/// The architectures pulsefocus builds (`architecture`).
pub const ARCHITECTURES: &[&str] = &[
    "YOLOv3",
    "SSD",
    "FasterRCNN",
    "MaskRCNN",
    "CascadeRCNN",
    "CascadeMaskRCNN",
    "RetinaNet",
];

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub architecture: String,
    /// Sets the head's class count.
    pub num_classes: usize,
    /// Checkpoint to start from: directory, archive, `.pdparams`,
    /// `.safetensors`, URL or `ppdet://` path.
    #[serde(default)]
    pub pretrain_weights: Option<String>,
    /// The trained model, for evaluation and inference.
    #[serde(default)]
    pub weights: Option<String>,
    /// Regular expressions (Python `re.match`); `preset` stands for the
    /// architecture's recommended list.
    #[serde(default)]
    pub finetune_exclude_pretrained_params: Vec<String>,
    pub max_iters: usize,
    #[serde(default = "defaults::snapshot_iter")]
    pub snapshot_iter: usize,
    #[serde(default = "defaults::save_dir")]
    pub save_dir: String,
    /// No effect: `--device` picks the device (`warnings` says so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_gpu: Option<bool>,
    /// The loss printed is smoothed over this many iterations.
    #[serde(default = "defaults::log_smooth_window")]
    pub log_smooth_window: usize,
    /// A log line every this many iterations (without a terminal).
    #[serde(default = "defaults::log_iter")]
    pub log_iter: usize,
    /// PaddleDetection's per-level loss with `Gt2YoloTarget` targets; only
    /// `false` (the YOLOv3 configs' value) is implemented.
    #[serde(default)]
    pub use_fine_grained_loss: bool,
    /// `VOC` or `COCO`.
    #[serde(default = "defaults::metric")]
    pub metric: String,
    /// VOC mAP: `11point` or `integral`.
    #[serde(default = "defaults::map_type")]
    pub map_type: String,
    #[serde(rename = "LearningRate", default)]
    pub learning_rate: LearningRate,
    #[serde(rename = "OptimizerBuilder", default)]
    pub optimizer_builder: OptimizerBuilder,
    #[serde(rename = "YOLOv3", default)]
    pub yolov3: YOLOv3,
    #[serde(rename = "MobileNet", default)]
    pub mobilenet: MobileNet,
    #[serde(rename = "DarkNet", default)]
    pub darknet: DarkNet,
    #[serde(rename = "YOLOv3Head", default)]
    pub yolov3_head: YOLOv3Head,
    #[serde(rename = "YOLOv3Loss", default)]
    pub yolov3_loss: YOLOv3Loss,
    /// Only with `architecture: SSD` (left out of YOLOv3 configs).
    #[serde(rename = "SSD", default, skip_serializing_if = "Option::is_none")]
    pub ssd: Option<SSD>,
    /// Only with `SSD.backbone: VGG`.
    #[serde(rename = "VGG", default, skip_serializing_if = "Option::is_none")]
    pub vgg: Option<VGG>,
    #[serde(
        rename = "MultiBoxHead",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub multi_box_head: Option<MultiBoxHead>,
    /// Only with `architecture: FasterRCNN` (left out of other configs), as
    /// are the sections it names below.
    #[serde(
        rename = "FasterRCNN",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub faster_rcnn: Option<FasterRCNN>,
    /// Only with `architecture: MaskRCNN`: `FasterRCNN`'s keys naming the
    /// same sections, and the mask branch's two (`MaskHead` and
    /// `MaskAssigner`, below the box head's).
    #[serde(rename = "MaskRCNN", default, skip_serializing_if = "Option::is_none")]
    pub mask_rcnn: Option<MaskRCNN>,
    /// Only with `architecture: CascadeRCNN`: the sections it names, the
    /// trunk's as `FasterRCNN` names them (FPN only), the box head's
    /// `CascadeBBoxHead` and `CascadeBBoxAssigner`.
    #[serde(
        rename = "CascadeRCNN",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub cascade_rcnn: Option<CascadeRCNN>,
    /// Only with `architecture: CascadeMaskRCNN`: `CascadeRCNN`'s keys and
    /// the mask branch's two, as `MaskRCNN` has them.
    #[serde(
        rename = "CascadeMaskRCNN",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub cascade_mask_rcnn: Option<CascadeMaskRCNN>,
    #[serde(rename = "ResNet", default, skip_serializing_if = "Option::is_none")]
    pub resnet: Option<ResNet>,
    /// The C4 model's RoI head (`BBoxHead.head: ResNetC5`).
    #[serde(rename = "ResNetC5", default, skip_serializing_if = "Option::is_none")]
    pub resnet_c5: Option<ResNet>,
    #[serde(rename = "FPN", default, skip_serializing_if = "Option::is_none")]
    pub fpn: Option<FPN>,
    #[serde(rename = "RPNHead", default, skip_serializing_if = "Option::is_none")]
    pub rpn_head: Option<RPNHead>,
    #[serde(
        rename = "FPNRPNHead",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub fpn_rpn_head: Option<RPNHead>,
    #[serde(rename = "RoIAlign", default, skip_serializing_if = "Option::is_none")]
    pub roi_align: Option<RoIAlign>,
    #[serde(
        rename = "FPNRoIAlign",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub fpn_roi_align: Option<FPNRoIAlign>,
    #[serde(
        rename = "BBoxAssigner",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub bbox_assigner: Option<BBoxAssigner>,
    #[serde(rename = "BBoxHead", default, skip_serializing_if = "Option::is_none")]
    pub bbox_head: Option<BBoxHead>,
    #[serde(rename = "TwoFCHead", default, skip_serializing_if = "Option::is_none")]
    pub two_fc_head: Option<TwoFCHead>,
    /// The cascade's box head (`CascadeRCNN.bbox_head`, `bbox_assigner`):
    /// each stage's assigner settings, the RoI head every stage builds
    /// (`CascadeBBoxHead.head: CascadeTwoFCHead`) and the NMS of the
    /// detections, as `BBoxHead` has them.
    #[serde(
        rename = "CascadeBBoxAssigner",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub cascade_bbox_assigner: Option<CascadeBBoxAssigner>,
    #[serde(
        rename = "CascadeBBoxHead",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub cascade_bbox_head: Option<BBoxHead>,
    #[serde(
        rename = "CascadeTwoFCHead",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub cascade_two_fc_head: Option<CascadeTwoFCHead>,
    #[serde(rename = "MaskHead", default, skip_serializing_if = "Option::is_none")]
    pub mask_head: Option<MaskHead>,
    #[serde(
        rename = "MaskAssigner",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub mask_assigner: Option<MaskAssigner>,
    /// Only with `architecture: RetinaNet` (left out of other configs), as
    /// is `RetinaHead`; `ResNet` and `FPN` above configure its backbone
    /// and pyramid.
    #[serde(rename = "RetinaNet", default, skip_serializing_if = "Option::is_none")]
    pub retinanet: Option<RetinaNet>,
    #[serde(
        rename = "RetinaHead",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub retina_head: Option<RetinaHead>,
    #[serde(rename = "TrainReader")]
    pub train_reader: Reader,
    #[serde(rename = "EvalReader", default)]
    pub eval_reader: Option<Reader>,
    #[serde(rename = "TestReader", default)]
    pub test_reader: Option<Reader>,
}

mod defaults {
    pub fn snapshot_iter() -> usize {
        2000
    }
    pub fn save_dir() -> String {
        "output".into()
    }
    pub fn log_smooth_window() -> usize {
        20
    }
    pub fn log_iter() -> usize {
        20
    }
    pub fn metric() -> String {
        "VOC".into()
    }
    pub fn map_type() -> String {
        "11point".into()
    }
    pub fn one() -> usize {
        1
    }
    pub fn yes() -> bool {
        true
    }
    pub fn expand_image_mean() -> Vec<f32> {
        vec![127.5; 3]
    }
    pub fn roi_align() -> String {
        "RoIAlign".into()
    }
    pub fn bbox_head() -> String {
        "BBoxHead".into()
    }
    pub fn bbox_assigner() -> String {
        "BBoxAssigner".into()
    }
    pub fn mask_head() -> String {
        "MaskHead".into()
    }
    pub fn mask_assigner() -> String {
        "MaskAssigner".into()
    }
    pub fn fpn() -> String {
        "FPN".into()
    }
    pub fn fpn_roi_align() -> String {
        "FPNRoIAlign".into()
    }
    pub fn cascade_bbox_head() -> String {
        "CascadeBBoxHead".into()
    }
    pub fn cascade_bbox_assigner() -> String {
        "CascadeBBoxAssigner".into()
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LearningRate {
    pub base_lr: f32,
    /// Applied in order, each multiplying the rate.
    pub schedulers: Vec<Scheduler>,
}

impl Default for LearningRate {
    fn default() -> Self {
        LearningRate {
            base_lr: 0.001,
            schedulers: vec![
                Scheduler::PiecewiseDecay(PiecewiseDecay {
                    gamma: 0.1,
                    milestones: vec![55000, 62000],
                    values: None,
                }),
                Scheduler::LinearWarmup(LinearWarmup {
                    start_factor: 0.0,
                    steps: 1000,
                }),
            ],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub enum Scheduler {
    PiecewiseDecay(PiecewiseDecay),
    LinearWarmup(LinearWarmup),
}

/// Multiplies the rate by `gamma` at each milestone step; with `values`,
/// the rates themselves, one more than the milestones (`gamma` and
/// `base_lr` then play no part, as in PaddleDetection).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PiecewiseDecay {
    pub gamma: f32,
    pub milestones: Vec<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<f32>>,
}

impl Default for PiecewiseDecay {
    fn default() -> Self {
        PiecewiseDecay {
            gamma: 0.1,
            milestones: Vec::new(),
            values: None,
        }
    }
}

/// Rises linearly from `start_factor` x rate to the rate over `steps`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinearWarmup {
    pub start_factor: f32,
    pub steps: usize,
}

impl Default for LinearWarmup {
    fn default() -> Self {
        LinearWarmup {
            start_factor: 1.0 / 3.0,
            steps: 500,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct OptimizerBuilder {
    pub optimizer: Optimizer,
    pub regularizer: Regularizer,
}

/// The update rule and its settings, as `fluid.optimizer`'s keyword
/// arguments.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Optimizer {
    /// `Momentum` (the YOLOv3 configs) or `RMSPropOptimizer` (the SSD configs).
    #[serde(rename = "type")]
    pub kind: String,
    /// Not given: 0.9 for Momentum (PaddleDetection's default optimizer),
    /// 0 for RMSPropOptimizer (Paddle's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub momentum: Option<f32>,
    /// RMSPropOptimizer only: the mean square's decay (Paddle: 0.95).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rho: Option<f32>,
    /// RMSPropOptimizer only: added to the root mean square (Paddle: 1e-6).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epsilon: Option<f32>,
}

impl Default for Optimizer {
    fn default() -> Self {
        Optimizer {
            kind: "Momentum".into(),
            momentum: Some(0.9),
            rho: None,
            epsilon: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Regularizer {
    /// `L2`.
    #[serde(rename = "type")]
    pub kind: String,
    pub factor: f32,
}

impl Default for Regularizer {
    fn default() -> Self {
        Regularizer {
            kind: "L2".into(),
            factor: 0.0005,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct YOLOv3 {
    /// `MobileNet` or `DarkNet`; that section configures it.
    pub backbone: String,
    pub yolo_head: String,
}

impl Default for YOLOv3 {
    fn default() -> Self {
        YOLOv3 {
            backbone: "DarkNet".into(),
            yolo_head: "YOLOv3Head".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MobileNet {
    /// `bn` or `sync_bn` (the same on one device).
    pub norm_type: String,
    /// L2 decay of BN scale/offset.
    pub norm_decay: f32,
    /// Width multiplier: every channel count is `int(width * scale)`.
    pub conv_group_scale: f32,
    /// Learning-rate factor of every backbone conv weight (SSD: 0.1).
    pub conv_learning_rate: f32,
    /// SSD's four extra blocks after `conv6`.
    pub with_extra_blocks: bool,
    /// The extra blocks' `[1x1 width, 3x3 width]`, one pair per block.
    pub extra_block_filters: Vec<Vec<usize>>,
}

impl Default for MobileNet {
    fn default() -> Self {
        MobileNet {
            norm_type: "bn".into(),
            norm_decay: 0.0,
            conv_group_scale: 1.0,
            conv_learning_rate: 1.0,
            with_extra_blocks: false,
            extra_block_filters: crate::models::ssd::MOBILENET_EXTRA_BLOCKS
                .iter()
                .map(|&(a, b)| vec![a, b])
                .collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DarkNet {
    pub depth: usize,
    pub norm_type: String,
    pub norm_decay: f32,
}

impl Default for DarkNet {
    fn default() -> Self {
        DarkNet {
            depth: 53,
            norm_type: "sync_bn".into(),
            norm_decay: 0.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct YOLOv3Head {
    /// `[width, height]` in input pixels.
    pub anchors: Vec<Vec<u32>>,
    /// Anchor indices per output level, stride 32 first.
    pub anchor_masks: Vec<Vec<usize>>,
    /// The loss section: `YOLOv3Loss`, the only one implemented.
    pub yolo_loss: String,
    pub scale_x_y: f32,
    pub norm_decay: f32,
    /// Channels of level 0's blocks (half at level 1, a quarter at level 2).
    /// Not a PaddleDetection key: it fixes 512; smaller heads suit small models.
    pub width: usize,
    pub nms: MultiClassNMS,
}

impl YOLOv3Head {
    /// The anchors as the model and the loss take them (`check` has made
    /// sure each is a pair).
    pub fn anchor_pairs(&self) -> Vec<[f32; 2]> {
        self.anchors
            .iter()
            .map(|a| [a[0] as f32, a[1] as f32])
            .collect()
    }
}

impl Default for YOLOv3Head {
    fn default() -> Self {
        YOLOv3Head {
            anchors: [
                [10, 13],
                [16, 30],
                [33, 23],
                [30, 61],
                [62, 45],
                [59, 119],
                [116, 90],
                [156, 198],
                [373, 326],
            ]
            .iter()
            .map(|a| a.to_vec())
            .collect(),
            anchor_masks: vec![vec![6, 7, 8], vec![3, 4, 5], vec![0, 1, 2]],
            yolo_loss: "YOLOv3Loss".into(),
            scale_x_y: 1.0,
            norm_decay: 0.0,
            width: 512,
            nms: MultiClassNMS {
                score_threshold: 0.01,
                nms_top_k: 1000,
                keep_top_k: 100,
                nms_threshold: 0.45,
                background_label: -1,
                normalized: false,
            },
        }
    }
}

/// The loss the head's `yolo_loss` names, with PaddleDetection's defaults.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct YOLOv3Loss {
    /// Predictions overlapping a box by more than this are not penalised
    /// as background.
    pub ignore_thresh: f32,
    pub label_smooth: bool,
    /// Deprecated in PaddleDetection (`TrainReader.batch_size` is used):
    /// any value but -1 only warns.
    pub batch_size: i64,
    /// As the top-level key, which PaddleDetection shares into this section.
    pub use_fine_grained_loss: bool,
}

impl Default for YOLOv3Loss {
    fn default() -> Self {
        YOLOv3Loss {
            ignore_thresh: 0.7,
            label_smooth: true,
            batch_size: -1,
            use_fine_grained_loss: false,
        }
    }
}

/// `multiclass_nms`'s settings. Defaults: PaddleDetection's `MultiClassNMS`
/// class (what keys left out of a given `nms` take there too); a head
/// without an `nms` has its own (`YOLOv3Head`'s, `BBoxHead`'s).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MultiClassNMS {
    pub score_threshold: f32,
    /// -1: every box above the threshold.
    pub nms_top_k: i64,
    pub keep_top_k: usize,
    pub nms_threshold: f32,
    pub background_label: i32,
    pub normalized: bool,
}

impl Default for MultiClassNMS {
    fn default() -> Self {
        MultiClassNMS {
            score_threshold: 0.05,
            nms_top_k: -1,
            keep_top_k: 100,
            nms_threshold: 0.5,
            background_label: 0,
            normalized: false,
        }
    }
}

/// `architecture: SSD`: the backbone and head sections it names, and the
/// output decoder's settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SSD {
    /// `MobileNet` or `VGG`; that section configures it.
    pub backbone: String,
    /// `MultiBoxHead`, the section with the priors and head convs.
    pub multi_box_head: String,
    pub output_decoder: SSDOutputDecoder,
}

impl Default for SSD {
    fn default() -> Self {
        SSD {
            backbone: "MobileNet".into(),
            multi_box_head: "MultiBoxHead".into(),
            output_decoder: SSDOutputDecoder::default(),
        }
    }
}

/// SSD's VGG backbone (PaddleDetection's `VGG`; defaults its code's).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct VGG {
    /// 16 or 19.
    pub depth: usize,
    /// The extra blocks after `fc7`, whose features the SSD head reads.
    pub with_extra_blocks: bool,
    /// Per feature (`conv4_3`, `fc7`, then each extra block) the initial
    /// scale of an L2 norm before the head, or -1 for none.
    pub normalizations: Vec<f32>,
    /// Per extra block `[1x1 width, 3x3 width, padding, stride, kernel]`.
    pub extra_block_filters: Vec<Vec<usize>>,
}

impl Default for VGG {
    fn default() -> Self {
        let vgg = crate::models::vgg::VggSpec::vgg16();
        VGG {
            depth: 16,
            with_extra_blocks: false,
            normalizations: vgg
                .normalizations
                .iter()
                .map(|n| n.unwrap_or(-1.0))
                .collect(),
            extra_block_filters: vgg
                .extra_blocks
                .iter()
                .map(|b| vec![b.first_width, b.second_width, b.padding, b.stride, b.kernel])
                .collect(),
        }
    }
}

/// `detection_output`'s settings (PaddleDetection's `SSDOutputDecoder`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SSDOutputDecoder {
    pub background_label: i32,
    /// Detections kept per image after NMS (-1: all).
    pub keep_top_k: i64,
    /// Adaptive NMS threshold factor; only 1 (plain NMS) is implemented.
    pub nms_eta: f32,
    pub nms_threshold: f32,
    /// Candidates per class before NMS (-1: all).
    pub nms_top_k: i64,
    pub score_threshold: f32,
}

impl Default for SSDOutputDecoder {
    fn default() -> Self {
        SSDOutputDecoder {
            background_label: 0,
            keep_top_k: 200,
            nms_eta: 1.0,
            nms_threshold: 0.45,
            nms_top_k: 400,
            score_threshold: 0.01,
        }
    }
}

/// One feature level's entry in a `MultiBoxHead` list: a number or a list
/// of numbers (`[]` for none), as `fluid.layers.multi_box_head` takes it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum PerLevel {
    One(f32),
    List(Vec<f32>),
}

impl PerLevel {
    pub fn values(&self) -> Vec<f32> {
        match self {
            PerLevel::One(v) => vec![*v],
            PerLevel::List(v) => v.clone(),
        }
    }
}

/// The SSD head: `fluid.layers.multi_box_head`'s prior-box settings per
/// feature level and its two convs per level. Sizes are in input pixels;
/// without `min_sizes` and `max_sizes` (both `None`) they follow from
/// `min_ratio`/`max_ratio` percent of `base_size`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MultiBoxHead {
    pub min_ratio: i64,
    pub max_ratio: i64,
    pub base_size: f32,
    pub min_sizes: Option<Vec<PerLevel>>,
    pub max_sizes: Option<Vec<PerLevel>>,
    pub aspect_ratios: Vec<PerLevel>,
    /// Pixels between prior centres per level (`None`: image size over
    /// feature-map size).
    pub steps: Option<Vec<f32>>,
    pub offset: f32,
    pub flip: bool,
    pub min_max_aspect_ratios_order: bool,
    pub kernel_size: usize,
    /// Must be `kernel_size / 2`: the head keeps the feature map's size.
    pub pad: usize,
}

impl Default for MultiBoxHead {
    fn default() -> Self {
        let list = |v: &[f32]| PerLevel::List(v.to_vec());
        MultiBoxHead {
            min_ratio: 20,
            max_ratio: 90,
            base_size: 300.0,
            min_sizes: Some(
                [60.0, 105.0, 150.0, 195.0, 240.0, 285.0]
                    .map(PerLevel::One)
                    .to_vec(),
            ),
            max_sizes: Some(
                std::iter::once(list(&[]))
                    .chain([150.0, 195.0, 240.0, 285.0, 300.0].map(PerLevel::One))
                    .collect(),
            ),
            aspect_ratios: std::iter::once(list(&[2.0]))
                .chain(std::iter::repeat_n(list(&[2.0, 3.0]), 5))
                .collect(),
            steps: None,
            offset: 0.5,
            flip: true,
            min_max_aspect_ratios_order: false,
            kernel_size: 1,
            pad: 0,
        }
    }
}

/// A number or a list of numbers, as PaddleDetection takes `target_size`
/// and `feature_maps`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum OneOrList {
    One(usize),
    List(Vec<usize>),
}

impl OneOrList {
    pub fn values(&self) -> Vec<usize> {
        match self {
            OneOrList::One(v) => vec![*v],
            OneOrList::List(v) => v.clone(),
        }
    }
}

/// `architecture: FasterRCNN`: the sections it is built from, by name.
/// `fpn` given: the FPN model (`FPNRPNHead`, `FPNRoIAlign`, `TwoFCHead`),
/// else the C4 one (`RPNHead`, `RoIAlign`, `ResNetC5`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FasterRCNN {
    pub backbone: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fpn: Option<String>,
    pub rpn_head: String,
    #[serde(default = "defaults::roi_align")]
    pub roi_extractor: String,
    #[serde(default = "defaults::bbox_head")]
    pub bbox_head: String,
    #[serde(default = "defaults::bbox_assigner")]
    pub bbox_assigner: String,
}

/// `architecture: MaskRCNN`: `FasterRCNN`'s sections, by the same keys,
/// and the mask branch's: `mask_head` (`MaskHead`) and `mask_assigner`
/// (`MaskAssigner`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MaskRCNN {
    pub backbone: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fpn: Option<String>,
    pub rpn_head: String,
    #[serde(default = "defaults::roi_align")]
    pub roi_extractor: String,
    #[serde(default = "defaults::bbox_head")]
    pub bbox_head: String,
    #[serde(default = "defaults::bbox_assigner")]
    pub bbox_assigner: String,
    #[serde(default = "defaults::mask_head")]
    pub mask_head: String,
    #[serde(default = "defaults::mask_assigner")]
    pub mask_assigner: String,
}

impl MaskRCNN {
    /// The keys naming the Faster R-CNN part's sections, as `FasterRCNN`
    /// has them.
    pub fn faster_rcnn(&self) -> FasterRCNN {
        FasterRCNN {
            backbone: self.backbone.clone(),
            fpn: self.fpn.clone(),
            rpn_head: self.rpn_head.clone(),
            roi_extractor: self.roi_extractor.clone(),
            bbox_head: self.bbox_head.clone(),
            bbox_assigner: self.bbox_assigner.clone(),
        }
    }
}

/// `architecture: CascadeRCNN`: the sections it is built from, by name,
/// with PaddleDetection's defaults (`fpn: FPN`: the cascade runs on the
/// pyramid only).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CascadeRCNN {
    pub backbone: String,
    #[serde(default = "defaults::fpn")]
    pub fpn: String,
    pub rpn_head: String,
    #[serde(default = "defaults::fpn_roi_align")]
    pub roi_extractor: String,
    #[serde(default = "defaults::cascade_bbox_head")]
    pub bbox_head: String,
    #[serde(default = "defaults::cascade_bbox_assigner")]
    pub bbox_assigner: String,
}

impl CascadeRCNN {
    /// The keys naming the trunk's and box head's sections, as
    /// `FasterRCNN` has them.
    pub fn faster_rcnn(&self) -> FasterRCNN {
        FasterRCNN {
            backbone: self.backbone.clone(),
            fpn: Some(self.fpn.clone()),
            rpn_head: self.rpn_head.clone(),
            roi_extractor: self.roi_extractor.clone(),
            bbox_head: self.bbox_head.clone(),
            bbox_assigner: self.bbox_assigner.clone(),
        }
    }
}

/// `architecture: CascadeMaskRCNN`: `CascadeRCNN`'s sections, by the same
/// keys and defaults, and the mask branch's: `mask_head` (`MaskHead`) and
/// `mask_assigner` (`MaskAssigner`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CascadeMaskRCNN {
    pub backbone: String,
    #[serde(default = "defaults::fpn")]
    pub fpn: String,
    pub rpn_head: String,
    #[serde(default = "defaults::fpn_roi_align")]
    pub roi_extractor: String,
    #[serde(default = "defaults::cascade_bbox_head")]
    pub bbox_head: String,
    #[serde(default = "defaults::cascade_bbox_assigner")]
    pub bbox_assigner: String,
    #[serde(default = "defaults::mask_head")]
    pub mask_head: String,
    #[serde(default = "defaults::mask_assigner")]
    pub mask_assigner: String,
}

impl CascadeMaskRCNN {
    /// The keys naming the cascade's sections, as `CascadeRCNN` has them.
    pub fn cascade_rcnn(&self) -> CascadeRCNN {
        CascadeRCNN {
            backbone: self.backbone.clone(),
            fpn: self.fpn.clone(),
            rpn_head: self.rpn_head.clone(),
            roi_extractor: self.roi_extractor.clone(),
            bbox_head: self.bbox_head.clone(),
            bbox_assigner: self.bbox_assigner.clone(),
        }
    }
}

/// Each cascade stage's two fully connected layers, `mlp_dim` wide (no
/// default in PaddleDetection: the configs give it).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CascadeTwoFCHead {
    pub mlp_dim: usize,
}

/// `generate_proposal_labels`' settings per cascade stage: one entry per
/// stage in each list (three stages), the sampling shared. A stage's
/// regression weight `w` gives the variances `[1/w, 1/w, 2/w, 2/w]` its
/// targets are divided by and its deltas decoded with. `class_aware`:
/// class-aware targets and `bbox_pred` (false: class-agnostic, the
/// configs'). Defaults: PaddleDetection's (`num_classes` is the config's).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CascadeBBoxAssigner {
    pub batch_size_per_im: usize,
    pub fg_fraction: f32,
    pub fg_thresh: Vec<f32>,
    pub bg_thresh_hi: Vec<f32>,
    pub bg_thresh_lo: Vec<f32>,
    pub bbox_reg_weights: Vec<f64>,
    pub shuffle_before_sample: bool,
    pub class_aware: bool,
}

impl Default for CascadeBBoxAssigner {
    fn default() -> Self {
        CascadeBBoxAssigner {
            batch_size_per_im: 512,
            fg_fraction: 0.25,
            fg_thresh: vec![0.5, 0.6, 0.7],
            bg_thresh_hi: vec![0.5, 0.6, 0.7],
            bg_thresh_lo: vec![0.0; 3],
            bbox_reg_weights: vec![10.0, 20.0, 30.0],
            shuffle_before_sample: true,
            class_aware: false,
        }
    }
}

/// Mask R-CNN's mask branch (PaddleDetection's `MaskHead` without a norm;
/// defaults its code's, `num_classes` is the config's): `num_convs` 3x3
/// convs `conv_dim` wide with `dilation`, then `conv5_mask` doubling the
/// RoI features' side to `resolution`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MaskHead {
    pub num_convs: usize,
    pub conv_dim: usize,
    pub resolution: usize,
    pub dilation: usize,
}

impl Default for MaskHead {
    fn default() -> Self {
        MaskHead {
            num_convs: 0,
            conv_dim: 256,
            resolution: 14,
            dilation: 1,
        }
    }
}

/// `generate_mask_labels`' settings: the side of the mask targets, which
/// must be the head's `resolution`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MaskAssigner {
    pub resolution: usize,
}

impl Default for MaskAssigner {
    fn default() -> Self {
        MaskAssigner { resolution: 14 }
    }
}

/// `ResNet` (and `ResNetC5`, the same network's res5 on each RoI, whose
/// `feature_maps` is not read). Defaults: PaddleDetection's.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResNet {
    /// 18, 34, 50, 101, 152 or 200.
    pub depth: usize,
    /// Stages up to this one are frozen (0: none).
    pub freeze_at: usize,
    /// `affine_channel` or `bn`.
    pub norm_type: String,
    pub freeze_norm: bool,
    pub norm_decay: f32,
    /// Only `b` (the stride on the 3x3 conv) is built.
    pub variant: String,
    /// The stages whose outputs are features (2..=5).
    pub feature_maps: OneOrList,
    /// Not PaddleDetection keys (small models for tests and demos): the
    /// stem's channels (64) and the blocks per stage (the depth's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocks: Option<Vec<usize>>,
}

impl Default for ResNet {
    fn default() -> Self {
        ResNet {
            depth: 50,
            freeze_at: 2,
            norm_type: "affine_channel".into(),
            freeze_norm: true,
            norm_decay: 0.0,
            variant: "b".into(),
            feature_maps: OneOrList::List(vec![2, 3, 4, 5]),
            width: None,
            blocks: None,
        }
    }
}

/// The feature pyramid (PaddleDetection's `FPN`; only its defaults for the
/// keys not listed here are built).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FPN {
    pub num_chan: usize,
    pub min_level: usize,
    pub max_level: usize,
    /// Of the backbone features, deepest first.
    pub spatial_scale: Vec<f32>,
    /// Levels above the backbone's by strided convs on res5 (RetinaNet)
    /// instead of the max-pooled top.
    pub has_extra_convs: bool,
}

impl Default for FPN {
    fn default() -> Self {
        FPN {
            num_chan: 256,
            min_level: 2,
            max_level: 6,
            spatial_scale: vec![1.0 / 32.0, 1.0 / 16.0, 1.0 / 8.0, 1.0 / 4.0],
            has_extra_convs: false,
        }
    }
}

/// `RPNHead` and `FPNRPNHead` (which adds `anchor_start_size`, `num_chan`,
/// `min_level`, `max_level`; `check` refuses them in an `RPNHead`). A
/// sub-section given in the YAML replaces the default whole, its left-out
/// keys taking the operator class's defaults, as in PaddleDetection.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RPNHead {
    pub anchor_generator: AnchorGenerator,
    pub rpn_target_assign: RPNTargetAssign,
    pub train_proposal: GenerateProposals,
    pub test_proposal: GenerateProposals,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anchor_start_size: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_chan: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_level: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_level: Option<usize>,
}

impl Default for RPNHead {
    fn default() -> Self {
        RPNHead {
            anchor_generator: AnchorGenerator::default(),
            rpn_target_assign: RPNTargetAssign::default(),
            train_proposal: GenerateProposals {
                pre_nms_top_n: 12000,
                post_nms_top_n: 2000,
                ..GenerateProposals::default()
            },
            test_proposal: GenerateProposals::default(),
            anchor_start_size: None,
            num_chan: None,
            min_level: None,
            max_level: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnchorGenerator {
    pub anchor_sizes: Vec<f32>,
    pub aspect_ratios: Vec<f32>,
    /// Not read by `FPNRPNHead` (each level's stride is `2^level`).
    pub stride: Vec<f32>,
    pub variance: Vec<f32>,
}

impl Default for AnchorGenerator {
    fn default() -> Self {
        AnchorGenerator {
            anchor_sizes: vec![32.0, 64.0, 128.0, 256.0, 512.0],
            aspect_ratios: vec![0.5, 1.0, 2.0],
            stride: vec![16.0, 16.0],
            variance: vec![1.0; 4],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RPNTargetAssign {
    pub rpn_batch_size_per_im: usize,
    pub rpn_straddle_thresh: f32,
    pub rpn_fg_fraction: f32,
    pub rpn_positive_overlap: f32,
    pub rpn_negative_overlap: f32,
    pub use_random: bool,
}

impl Default for RPNTargetAssign {
    fn default() -> Self {
        RPNTargetAssign {
            rpn_batch_size_per_im: 256,
            rpn_straddle_thresh: 0.0,
            rpn_fg_fraction: 0.5,
            rpn_positive_overlap: 0.7,
            rpn_negative_overlap: 0.3,
            use_random: true,
        }
    }
}

/// `generate_proposals`' settings; defaults the operator class's.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenerateProposals {
    pub pre_nms_top_n: usize,
    pub post_nms_top_n: usize,
    pub nms_thresh: f32,
    pub min_size: f32,
    pub eta: f32,
}

impl Default for GenerateProposals {
    fn default() -> Self {
        GenerateProposals {
            pre_nms_top_n: 6000,
            post_nms_top_n: 1000,
            nms_thresh: 0.5,
            min_size: 0.1,
            eta: 1.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoIAlign {
    pub resolution: usize,
    pub spatial_scale: f32,
    pub sampling_ratio: usize,
}

impl Default for RoIAlign {
    fn default() -> Self {
        RoIAlign {
            resolution: 7,
            spatial_scale: 1.0 / 16.0,
            sampling_ratio: 0,
        }
    }
}

/// `canconical_level` is PaddleDetection's spelling.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FPNRoIAlign {
    pub sampling_ratio: usize,
    pub min_level: usize,
    pub max_level: usize,
    pub canconical_level: usize,
    pub canonical_size: f32,
    pub box_resolution: usize,
    /// Mask R-CNN: the side of the mask head's RoI features.
    pub mask_resolution: usize,
}

impl Default for FPNRoIAlign {
    fn default() -> Self {
        FPNRoIAlign {
            sampling_ratio: 0,
            min_level: 2,
            max_level: 5,
            canconical_level: 4,
            canonical_size: 224.0,
            box_resolution: 7,
            mask_resolution: 14,
        }
    }
}

/// `generate_proposal_labels`' settings (`num_classes` is the config's).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BBoxAssigner {
    pub batch_size_per_im: usize,
    pub fg_fraction: f32,
    pub fg_thresh: f32,
    pub bg_thresh_hi: f32,
    pub bg_thresh_lo: f32,
    pub bbox_reg_weights: Vec<f32>,
    pub shuffle_before_sample: bool,
}

impl Default for BBoxAssigner {
    fn default() -> Self {
        BBoxAssigner {
            batch_size_per_im: 512,
            fg_fraction: 0.25,
            fg_thresh: 0.5,
            bg_thresh_hi: 0.5,
            bg_thresh_lo: 0.0,
            bbox_reg_weights: vec![0.1, 0.1, 0.2, 0.2],
            shuffle_before_sample: true,
        }
    }
}

/// The box head: the RoI head it runs on (`ResNetC5` or `TwoFCHead`) and
/// the NMS of its detections (`num_classes` is the config's).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BBoxHead {
    pub head: String,
    #[serde(default)]
    pub nms: MultiClassNMS,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TwoFCHead {
    pub mlp_dim: usize,
}

impl Default for TwoFCHead {
    fn default() -> Self {
        TwoFCHead { mlp_dim: 1024 }
    }
}

/// `architecture: RetinaNet`: the sections it is built from, by name.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetinaNet {
    pub backbone: String,
    pub fpn: String,
    pub retina_head: String,
}

/// RetinaNet's head (PaddleDetection's `RetinaHead`; defaults its code's,
/// `num_classes` is the config's). Its `anchor_generator` reads
/// `aspect_ratios` and `variance` only: each level's sizes and stride come
/// from the octave scales.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetinaHead {
    pub anchor_generator: AnchorGenerator,
    pub target_assign: RetinaTargetAssign,
    pub output_decoder: RetinaOutputDecoder,
    pub num_convs_per_octave: usize,
    pub num_chan: usize,
    pub max_level: usize,
    pub min_level: usize,
    pub prior_prob: f32,
    pub base_scale: f32,
    pub num_scales_per_octave: usize,
    pub gamma: f32,
    pub alpha: f32,
    pub sigma: f32,
}

impl Default for RetinaHead {
    fn default() -> Self {
        RetinaHead {
            anchor_generator: AnchorGenerator::default(),
            target_assign: RetinaTargetAssign::default(),
            output_decoder: RetinaOutputDecoder::default(),
            num_convs_per_octave: 4,
            num_chan: 256,
            max_level: 7,
            min_level: 3,
            prior_prob: 0.01,
            base_scale: 4.0,
            num_scales_per_octave: 3,
            gamma: 2.0,
            alpha: 0.25,
            sigma: 3.015_113_4,
        }
    }
}

/// `retinanet_target_assign`'s thresholds; defaults the operator class's.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetinaTargetAssign {
    pub positive_overlap: f32,
    pub negative_overlap: f32,
}

impl Default for RetinaTargetAssign {
    fn default() -> Self {
        RetinaTargetAssign {
            positive_overlap: 0.5,
            negative_overlap: 0.4,
        }
    }
}

/// `retinanet_detection_output`'s settings; defaults the operator class's
/// (its `nms_thresh` 0.3; the config's is 0.5).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetinaOutputDecoder {
    pub score_thresh: f32,
    pub nms_thresh: f32,
    pub pre_nms_top_n: usize,
    pub detections_per_im: usize,
    pub nms_eta: f32,
}

impl Default for RetinaOutputDecoder {
    fn default() -> Self {
        RetinaOutputDecoder {
            score_thresh: 0.05,
            nms_thresh: 0.3,
            pre_nms_top_n: 1000,
            detections_per_im: 100,
            nms_eta: 1.0,
        }
    }
}

/// `TrainReader` / `EvalReader` / `TestReader`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Reader {
    #[serde(default)]
    pub inputs_def: InputsDef,
    pub dataset: DataSet,
    #[serde(default)]
    pub sample_transforms: Vec<Transform>,
    #[serde(default)]
    pub batch_transforms: Vec<Transform>,
    /// Images per step (per device).
    #[serde(default = "defaults::one")]
    pub batch_size: usize,
    #[serde(default)]
    pub shuffle: bool,
    #[serde(default)]
    pub drop_last: bool,
    /// Mixup is applied during the first `mixup_epoch` epochs (none when
    /// negative, PaddleDetection's `-1`).
    #[serde(default)]
    pub mixup_epoch: i64,
    /// Drop images without boxes (training).
    #[serde(default = "defaults::yes")]
    pub drop_empty: bool,
    #[serde(default = "defaults::one")]
    pub worker_num: usize,
    /// No effect: the loader's prefetch depth is fixed (`warnings`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bufsize: Option<usize>,
    /// No effect: the loader uses threads (`warnings`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_process: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct InputsDef {
    /// No effect: the loader feeds what the model needs (`warnings`).
    pub fields: Vec<String>,
    pub num_max_boxes: usize,
    /// No effect: sizes come from `RandomShape`/`ResizeImage` (`warnings`).
    pub image_shape: Vec<usize>,
}

impl Default for InputsDef {
    fn default() -> Self {
        InputsDef {
            fields: Vec::new(),
            num_max_boxes: 50,
            image_shape: Vec::new(),
        }
    }
}

/// The dataset, written as YAML writes its tag: `COCODataSet(...)`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[allow(clippy::upper_case_acronyms)]
pub enum DataSet {
    COCODataSet(CocoDataSet),
    VOCDataSet(VocDataSet),
    ImageFolder(ImageFolder),
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CocoDataSet {
    pub dataset_dir: String,
    /// Images folder, inside `dataset_dir`.
    pub image_dir: String,
    /// Annotation JSON, inside `dataset_dir`.
    pub anno_path: String,
    /// Class index = position in `categories` + this: class 0 is the
    /// background (PaddleDetection's default, SSD's; the YOLOv3 configs set false).
    pub with_background: bool,
    /// Keep `iscrowd: 1` annotations.
    pub load_crowd: bool,
    /// Keep images without boxes.
    pub allow_empty: bool,
}

impl Default for CocoDataSet {
    fn default() -> Self {
        CocoDataSet {
            dataset_dir: "dataset/coco".into(),
            image_dir: "train2017".into(),
            anno_path: "annotations/instances_train2017.json".into(),
            with_background: true,
            load_crowd: false,
            allow_empty: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct VocDataSet {
    pub dataset_dir: String,
    /// List file of `<image> <xml>` lines, inside `dataset_dir`.
    pub anno_path: String,
    /// The 20 VOC classes; otherwise `label_list` inside `dataset_dir`.
    pub use_default_label: bool,
    pub label_list: String,
    pub with_background: bool,
}

impl Default for VocDataSet {
    fn default() -> Self {
        VocDataSet {
            dataset_dir: "dataset/voc".into(),
            anno_path: "trainval.txt".into(),
            use_default_label: true,
            label_list: "label_list.txt".into(),
            with_background: true,
        }
    }
}

/// Images for inference; labels come from the annotation file when given.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageFolder {
    pub dataset_dir: String,
    pub image_dir: String,
    pub anno_path: String,
    pub use_default_label: bool,
    pub with_background: bool,
}

impl Default for ImageFolder {
    /// PaddleDetection's: class 0 is the background.
    fn default() -> Self {
        ImageFolder {
            dataset_dir: String::new(),
            image_dir: String::new(),
            anno_path: String::new(),
            use_default_label: false,
            with_background: true,
        }
    }
}

/// A data transform, named as PaddleDetection's operators are.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub enum Transform {
    DecodeImage(DecodeImage),
    MixupImage(MixupImage),
    ColorDistort(ColorDistort),
    RandomDistort(RandomDistort),
    RandomExpand(RandomExpand),
    ExpandImage(ExpandImage),
    RandomCrop(RandomCrop),
    RandomFlipImage(RandomFlipImage),
    NormalizeBox(NormalizeBox),
    PadBox(PadBox),
    BboxXYXY2XYWH(BboxXYXY2XYWH),
    ResizeImage(ResizeImage),
    RandomInterpImage(RandomInterpImage),
    RandomShape(RandomShape),
    NormalizeImage(NormalizeImage),
    Permute(Permute),
    Gt2YoloTarget(Gt2YoloTarget),
    PadBatch(PadBatch),
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecodeImage {
    pub to_rgb: bool,
    pub with_mixup: bool,
}

impl Default for DecodeImage {
    fn default() -> Self {
        DecodeImage {
            to_rgb: true,
            with_mixup: false,
        }
    }
}

/// Blends two images with a Beta(alpha, beta) factor.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MixupImage {
    pub alpha: f32,
    pub beta: f32,
}

impl Default for MixupImage {
    fn default() -> Self {
        MixupImage {
            alpha: 1.5,
            beta: 1.5,
        }
    }
}

/// Random hue/saturation/contrast/brightness; each is `[low, high, prob]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ColorDistort {
    pub hue: Vec<f32>,
    pub saturation: Vec<f32>,
    pub contrast: Vec<f32>,
    pub brightness: Vec<f32>,
    pub random_apply: bool,
}

impl Default for ColorDistort {
    fn default() -> Self {
        ColorDistort {
            hue: vec![-18.0, 18.0, 0.5],
            saturation: vec![0.5, 1.5, 0.5],
            contrast: vec![0.5, 1.5, 0.5],
            brightness: vec![0.5, 1.5, 0.5],
            random_apply: true,
        }
    }
}

/// SSD's colour distortion, with PIL's image enhancers: brightness,
/// contrast, saturation, hue, each with its own range and chance; the first
/// `count` of them in a fixed order (`is_order`: one of two orders drawn),
/// else `count` of them in random order.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RandomDistort {
    pub brightness_lower: f32,
    pub brightness_upper: f32,
    pub contrast_lower: f32,
    pub contrast_upper: f32,
    pub saturation_lower: f32,
    pub saturation_upper: f32,
    pub hue_lower: f32,
    pub hue_upper: f32,
    pub brightness_prob: f32,
    pub contrast_prob: f32,
    pub saturation_prob: f32,
    pub hue_prob: f32,
    pub count: usize,
    pub is_order: bool,
}

impl Default for RandomDistort {
    fn default() -> Self {
        RandomDistort {
            brightness_lower: 0.5,
            brightness_upper: 1.5,
            contrast_lower: 0.5,
            contrast_upper: 1.5,
            saturation_lower: 0.5,
            saturation_upper: 1.5,
            hue_lower: -18.0,
            hue_upper: 18.0,
            brightness_prob: 0.5,
            contrast_prob: 0.5,
            saturation_prob: 0.5,
            hue_prob: 0.5,
            count: 4,
            is_order: false,
        }
    }
}

/// Places the image on a canvas up to `ratio` times larger, with probability `prob`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RandomExpand {
    pub ratio: f32,
    pub prob: f32,
    /// Canvas colour, RGB 0-255.
    pub fill_value: Vec<f32>,
}

impl Default for RandomExpand {
    fn default() -> Self {
        RandomExpand {
            ratio: 4.0,
            prob: 0.5,
            fill_value: vec![127.5, 127.5, 127.5],
        }
    }
}

/// Like `RandomExpand`, on 0..1 boxes (after `NormalizeBox`): with
/// probability `prob` places the image on a canvas up to `max_ratio` times
/// larger, filled with `mean` (truncated to whole values, as PaddleDetection's
/// uint8 canvas does).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExpandImage {
    pub max_ratio: f32,
    pub prob: f32,
    #[serde(default = "defaults::expand_image_mean")]
    pub mean: Vec<f32>,
}

/// SSD-style crop constrained by the IoU with the boxes.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RandomCrop {
    pub aspect_ratio: Vec<f32>,
    pub thresholds: Vec<f32>,
    pub scaling: Vec<f32>,
    pub num_attempts: usize,
    pub allow_no_crop: bool,
    pub cover_all_box: bool,
}

impl Default for RandomCrop {
    fn default() -> Self {
        RandomCrop {
            aspect_ratio: vec![0.5, 2.0],
            thresholds: vec![0.0, 0.1, 0.3, 0.5, 0.7, 0.9],
            scaling: vec![0.3, 1.0],
            num_attempts: 50,
            allow_no_crop: true,
            cover_all_box: false,
        }
    }
}

/// Mirrors left-right with probability `prob`. `is_mask_flip`: the
/// polygons are mirrored too (Mask R-CNN's reader; must be true there).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RandomFlipImage {
    pub prob: f32,
    pub is_normalized: bool,
    pub is_mask_flip: bool,
}

impl Default for RandomFlipImage {
    fn default() -> Self {
        RandomFlipImage {
            prob: 0.5,
            is_normalized: false,
            is_mask_flip: false,
        }
    }
}

/// Boxes to `[0, 1]` by the image size.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NormalizeBox {}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PadBox {
    pub num_max_boxes: usize,
}

impl Default for PadBox {
    fn default() -> Self {
        PadBox { num_max_boxes: 50 }
    }
}

/// Corners to centre and size.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BboxXYXY2XYWH {}

/// Resize to `target_size` square, or with `max_size` (the R-CNN readers)
/// keeping the aspect ratio: the shorter side to `target_size` (a list:
/// one drawn per image), the longer capped at `max_size`. `interp` is an
/// OpenCV code (0 nearest, 1 linear, 2 cubic) with `use_cv2`, else a PIL
/// one (1 Lanczos, 2 bilinear, 3 bicubic, 4 box, 5 Hamming; square only).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResizeImage {
    pub target_size: OneOrList,
    pub interp: u32,
    pub max_size: usize,
    pub use_cv2: bool,
}

impl Default for ResizeImage {
    fn default() -> Self {
        ResizeImage {
            target_size: OneOrList::One(608),
            interp: 1,
            max_size: 0,
            use_cv2: true,
        }
    }
}

/// Pads a batch's pictures (bottom and right, with zeros after
/// normalisation) to its largest (`pad_to_stride` 0 or -1), rounded up to a
/// multiple of `pad_to_stride` when positive. `use_padded_im_info`: im_info's
/// height and width are the padded ones.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PadBatch {
    pub pad_to_stride: i64,
    pub use_padded_im_info: bool,
}

impl Default for PadBatch {
    fn default() -> Self {
        PadBatch {
            pad_to_stride: 0,
            use_padded_im_info: true,
        }
    }
}

/// Resize to `target_size` square with an interpolation drawn per image;
/// `max_size` (PaddleDetection's short-side resize capped at it) must be 0.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RandomInterpImage {
    pub target_size: usize,
    pub max_size: usize,
}

/// Per batch, resize to a size drawn from `sizes`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RandomShape {
    pub sizes: Vec<usize>,
    pub random_inter: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NormalizeImage {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// Divide by 255 first.
    pub is_scale: bool,
    /// Whether the picture is channels-first here (after Permute). Not
    /// given: as the picture is (PaddleDetection's default, true, is right
    /// after Permute only, where the SSD configs leave it out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_channel_first: Option<bool>,
}

impl Default for NormalizeImage {
    fn default() -> Self {
        NormalizeImage {
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
            is_scale: true,
            is_channel_first: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Permute {
    pub to_bgr: bool,
    pub channel_first: bool,
}

impl Default for Permute {
    /// PaddleDetection's: BGR (the SSD configs rely on it; the YOLOv3
    /// configs set `to_bgr: false`).
    fn default() -> Self {
        Permute {
            to_bgr: true,
            channel_first: true,
        }
    }
}

/// The fine-grained loss's per-level targets. Without
/// `use_fine_grained_loss` PaddleDetection drops it from the reader, and so
/// does pulsefocus (with a warning); the parameters are read and kept.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Gt2YoloTarget {
    pub anchors: Vec<Vec<u32>>,
    pub anchor_masks: Vec<Vec<usize>>,
    pub downsample_ratios: Vec<usize>,
    pub num_classes: usize,
    pub iou_thresh: f32,
}

impl Default for Gt2YoloTarget {
    fn default() -> Self {
        Gt2YoloTarget {
            anchors: Vec::new(),
            anchor_masks: Vec::new(),
            downsample_ratios: vec![32, 16, 8],
            num_classes: 80,
            iou_thresh: 1.0,
        }
    }
}
