//! A reader's transform lists, walked in order into what the loader does.
//!
//! PaddleDetection runs `sample_transforms` then `batch_transforms` one after
//! the other, each on what the previous left: BGR or RGB, 0..255 or
//! normalised, height x width x channels or channels-first, boxes in pixels
//! or 0..1, corners or centre-size. The walk keeps that state, so that every
//! parameter takes effect as it would there, and an order or a value that
//! would make PaddleDetection fail or train on something else than it says
//! is an error naming its key, e.g.
//! `TrainReader.batch_transforms[1].NormalizeImage.is_channel_first`.

use std::path::Path;

use pulsefocus_formats::{Error, Result};

use super::{Architecture, Reader, Transform};
use crate::data::loader::ShortSideResize;
use crate::data::transforms::color_distort::{ColorDistortParams, DeltaRange};
use crate::data::transforms::mixup::MixupParams;
use crate::data::transforms::normalize::ChannelNorm;
use crate::data::transforms::pil_resize::PilFilter;
use crate::data::transforms::random_crop::CropParams;
use crate::data::transforms::random_distort::{DistortRange, RandomDistortParams};
use crate::data::transforms::random_expand::ExpandParams;
use crate::data::transforms::resize::Interp;
use crate::data::transforms::{Augment, SampleAugment};

impl Reader {
    /// Walks `sample_transforms` then `batch_transforms` in order, as
    /// PaddleDetection runs them, into what the loader does; every parameter
    /// either takes effect or is an error naming its key (e.g.
    /// `TrainReader.sample_transforms[2].RandomExpand.ratio`). `reader` is
    /// the reader's key; only `TrainReader` augments. A training reader must
    /// give the boxes `arch`'s loss takes.
    pub fn pipeline_for(
        &self,
        file: &Path,
        reader: &str,
        arch: Architecture,
    ) -> Result<ReaderPipeline> {
        let training = reader == "TrainReader";
        let mut walk = Walk {
            arch,
            training,
            pipeline: ReaderPipeline {
                to_rgb: true,
                sample: SampleAugment::none(),
                random_shape: None,
                resize: None,
                normalize: ChannelNorm::IDENTITY,
                max_boxes: self.inputs_def.num_max_boxes,
                pad_box: false,
                short_side: None,
            },
            decoded: false,
            with_mixup: false,
            image_done: None,
            channel_first: false,
            boxes_normalized: false,
            boxes_xywh: false,
        };
        let listed = self
            .sample_transforms
            .iter()
            .enumerate()
            .map(|(i, t)| ("sample_transforms", i, t))
            .chain(
                self.batch_transforms
                    .iter()
                    .enumerate()
                    .map(|(i, t)| ("batch_transforms", i, t)),
            );
        for (list, i, transform) in listed {
            let first = list == "sample_transforms" && i == 0;
            walk.step(transform, first, self.mixup_epoch)
                .map_err(|(key, message)| {
                    let key = match key {
                        Some(key) => format!("{}.{key}", transform_name(transform)),
                        None => transform_name(transform).to_string(),
                    };
                    Error::at(file, format!("key {reader}.{list}[{i}].{key}"), message)
                })?;
        }
        let pipeline = walk.finish().map_err(|message| {
            Error::at(file, format!("key {reader}.sample_transforms"), message)
        })?;
        if let Some(resize) = &pipeline.short_side {
            if resize.pad_to_stride == 0 && self.batch_size > 1 {
                return Err(Error::at(
                    file,
                    format!("key {reader}.batch_transforms"),
                    "needs a PadBatch: ResizeImage with max_size makes pictures of different sizes, and a batch of more than one holds them in one size",
                ));
            }
        }
        Ok(pipeline)
    }
}

/// What a reader's transform lists ask of the loader.
#[derive(Debug, Clone, PartialEq)]
pub struct ReaderPipeline {
    /// DecodeImage's `to_rgb`.
    pub to_rgb: bool,
    /// The per-sample transforms, in order (training readers only).
    pub sample: SampleAugment,
    pub random_shape: Option<RandomShapeParams>,
    /// The last `ResizeImage`: its size and interpolation.
    pub resize: Option<(usize, Interp)>,
    /// NormalizeImage and Permute, in order.
    pub normalize: ChannelNorm,
    /// Box slots: PadBox's `num_max_boxes`, which must agree with
    /// `inputs_def.num_max_boxes`; 0 (a reader without PadBox, as the R-CNN
    /// and SSD ones): as many as the dataset's most
    /// (`LoaderConfig::max_boxes`).
    pub max_boxes: usize,
    /// PadBox is listed: only the first `max_boxes` boxes of an image are
    /// kept (also those PaddleDetection's VOC evaluation scores against).
    pub pad_box: bool,
    /// ResizeImage with `max_size` and PadBatch (the R-CNN readers), in
    /// place of `resize`; `pad_to_stride` 0 when there is no PadBatch.
    pub short_side: Option<ShortSideResize>,
}

/// `RandomShape`'s parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct RandomShapeParams {
    pub sizes: Vec<usize>,
    pub random_interp: bool,
}

/// The state of the picture and boxes while walking a reader's transforms.
struct Walk {
    arch: Architecture,
    training: bool,
    pipeline: ReaderPipeline,
    decoded: bool,
    with_mixup: bool,
    /// The transform that ended the 0..255, height x width x channels picture
    /// the augmentations work on: NormalizeImage or Permute.
    image_done: Option<&'static str>,
    channel_first: bool,
    boxes_normalized: bool,
    boxes_xywh: bool,
}

/// An error at a transform: the parameter it is about (`None`: the
/// transform itself) and the message.
type StepError = (Option<&'static str>, String);

fn transform_name(t: &Transform) -> &'static str {
    match t {
        Transform::DecodeImage(_) => "DecodeImage",
        Transform::MixupImage(_) => "MixupImage",
        Transform::ColorDistort(_) => "ColorDistort",
        Transform::RandomDistort(_) => "RandomDistort",
        Transform::RandomExpand(_) => "RandomExpand",
        Transform::ExpandImage(_) => "ExpandImage",
        Transform::RandomCrop(_) => "RandomCrop",
        Transform::RandomFlipImage(_) => "RandomFlipImage",
        Transform::NormalizeBox(_) => "NormalizeBox",
        Transform::PadBox(_) => "PadBox",
        Transform::BboxXYXY2XYWH(_) => "BboxXYXY2XYWH",
        Transform::ResizeImage(_) => "ResizeImage",
        Transform::RandomInterpImage(_) => "RandomInterpImage",
        Transform::RandomShape(_) => "RandomShape",
        Transform::NormalizeImage(_) => "NormalizeImage",
        Transform::Permute(_) => "Permute",
        Transform::Gt2YoloTarget(_) => "Gt2YoloTarget",
        Transform::PadBatch(_) => "PadBatch",
    }
}

impl Walk {
    fn step(
        &mut self,
        t: &Transform,
        first: bool,
        mixup_epoch: i64,
    ) -> std::result::Result<(), StepError> {
        let bad = |key: &'static str, msg: &str| Err((Some(key), msg.to_string()));
        let probability = |p: f32| (0.0..=1.0).contains(&p);
        if first != matches!(t, Transform::DecodeImage(_)) {
            return Err((
                None,
                "DecodeImage must come first in sample_transforms, once: it reads the picture"
                    .into(),
            ));
        }
        let name = transform_name(t);
        let augmentation = matches!(
            t,
            Transform::MixupImage(_)
                | Transform::ColorDistort(_)
                | Transform::RandomDistort(_)
                | Transform::RandomExpand(_)
                | Transform::ExpandImage(_)
                | Transform::RandomCrop(_)
                | Transform::RandomFlipImage(_)
        );
        if augmentation {
            if !self.training {
                return Err((
                    None,
                    "random augmentations run in TrainReader only: evaluation and inference see each picture as it is".into(),
                ));
            }
            if let Some(done) = self.image_done {
                return Err((
                    None,
                    format!("must come before {done}: it works on the 0..255 picture"),
                ));
            }
            if self.pipeline.short_side.is_some() {
                return Err((
                    None,
                    "must come before ResizeImage with max_size: the batch resizes each picture last".into(),
                ));
            }
            if self.arch.uses_rcnn_reader() && !matches!(t, Transform::RandomFlipImage(_)) {
                return Err((
                    None,
                    format!("is not supported in a {:?} reader (RandomFlipImage is): the R-CNN reader's targets take boxes in the decoded picture's pixels", self.arch),
                ));
            }
            let on_normalized_boxes =
                matches!(t, Transform::RandomFlipImage(_) | Transform::ExpandImage(_));
            // RandomDistort leaves the boxes alone.
            let moves_boxes = !matches!(t, Transform::RandomDistort(_));
            if moves_boxes && (self.boxes_xywh || (self.boxes_normalized && !on_normalized_boxes)) {
                return Err((
                    None,
                    "must come before NormalizeBox and BboxXYXY2XYWH: it works on pixel corner boxes"
                        .into(),
                ));
            }
        }
        if self.channel_first
            && matches!(
                t,
                Transform::ResizeImage(_)
                    | Transform::RandomInterpImage(_)
                    | Transform::RandomShape(_)
            )
        {
            return Err((
                None,
                "must come before Permute: it resizes a height x width x channels picture".into(),
            ));
        }
        let steps = &mut self.pipeline.sample.steps;
        match t {
            Transform::DecodeImage(d) => {
                self.decoded = true;
                self.pipeline.to_rgb = d.to_rgb;
                self.with_mixup = d.with_mixup;
            }
            Transform::MixupImage(m) => {
                if m.alpha <= 0.0 || m.beta <= 0.0 {
                    return Err((None, "alpha and beta must be positive".into()));
                }
                if mixup_epoch > 0 && !self.with_mixup {
                    return Err((
                        None,
                        "needs DecodeImage(with_mixup: true) to decode the second picture (or mixup_epoch: 0)".into(),
                    ));
                }
                steps.push(Augment::Mixup(MixupParams {
                    alpha: f64::from(m.alpha),
                    beta: f64::from(m.beta),
                }));
            }
            Transform::ColorDistort(c) => {
                let mut ranges = [DeltaRange {
                    low: 0.0,
                    high: 0.0,
                    skip_probability: 0.0,
                }; 4];
                for (range, (key, v)) in ranges.iter_mut().zip([
                    ("brightness", &c.brightness),
                    ("contrast", &c.contrast),
                    ("saturation", &c.saturation),
                    ("hue", &c.hue),
                ]) {
                    if v.len() != 3 || v[0] > v[1] || !probability(v[2]) {
                        return bad(
                            key,
                            "must be [low, high, prob] with low <= high and prob in [0, 1]",
                        );
                    }
                    *range = DeltaRange {
                        low: v[0],
                        high: v[1],
                        skip_probability: f64::from(v[2]),
                    };
                }
                let [brightness, contrast, saturation, hue] = ranges;
                steps.push(Augment::ColorDistort(ColorDistortParams {
                    brightness,
                    contrast,
                    saturation,
                    hue,
                    random_apply: c.random_apply,
                }));
            }
            Transform::RandomDistort(d) => {
                let mut ranges = [DistortRange {
                    lower: 0.0,
                    upper: 0.0,
                    probability: 0.0,
                }; 4];
                let listed = [
                    (
                        ["brightness_lower", "brightness_prob"],
                        d.brightness_lower,
                        d.brightness_upper,
                        d.brightness_prob,
                    ),
                    (
                        ["contrast_lower", "contrast_prob"],
                        d.contrast_lower,
                        d.contrast_upper,
                        d.contrast_prob,
                    ),
                    (
                        ["saturation_lower", "saturation_prob"],
                        d.saturation_lower,
                        d.saturation_upper,
                        d.saturation_prob,
                    ),
                    (
                        ["hue_lower", "hue_prob"],
                        d.hue_lower,
                        d.hue_upper,
                        d.hue_prob,
                    ),
                ];
                for (range, ([lower_key, prob_key], lower, upper, prob)) in
                    ranges.iter_mut().zip(listed)
                {
                    // numpy's uniform(lower, upper); an enhancement factor
                    // below 0 is no picture (hue is a shift: any sign).
                    let factor = lower_key != "hue_lower";
                    if lower.is_nan() || upper.is_nan() || lower > upper || (factor && lower < 0.0)
                    {
                        return bad(
                            lower_key,
                            "must be at most the upper bound (and, but for hue, not negative)",
                        );
                    }
                    if !probability(prob) {
                        return bad(prob_key, "must be in [0, 1]");
                    }
                    *range = DistortRange {
                        lower,
                        upper,
                        probability: f64::from(prob),
                    };
                }
                if d.count > 4 {
                    return bad("count", "must be at most 4: there are four distortions");
                }
                let [brightness, contrast, saturation, hue] = ranges;
                steps.push(Augment::RandomDistort(RandomDistortParams {
                    brightness,
                    contrast,
                    saturation,
                    hue,
                    count: d.count,
                    is_order: d.is_order,
                }));
            }
            Transform::RandomExpand(e) => {
                // PaddleDetection asserts it.
                if e.ratio.is_nan() || e.ratio <= 1.01 {
                    return bad("ratio", "must be more than 1.01");
                }
                if !probability(e.prob) {
                    return bad("prob", "must be in [0, 1]");
                }
                let [r, g, b] = e.fill_value[..] else {
                    return bad("fill_value", "must be 3 values, one per channel");
                };
                // PaddleDetection fills a uint8 canvas (127.5 is 127): the
                // 8-bit SSD pipeline truncates the fill in its PIL resize;
                // the YOLOv3 pipeline keeps the fraction, as it always has.
                steps.push(Augment::Expand(ExpandParams {
                    max_ratio: f64::from(e.ratio),
                    skip_probability: f64::from(e.prob),
                    fill: [r, g, b],
                }));
            }
            Transform::ExpandImage(e) => {
                if !self.boxes_normalized {
                    return Err((
                        None,
                        "must come after NormalizeBox: it works on 0..1 boxes (RandomExpand is the one for pixel boxes)".into(),
                    ));
                }
                if e.max_ratio.is_nan() || e.max_ratio < 1.0 {
                    return bad("max_ratio", "must be at least 1");
                }
                if !probability(e.prob) {
                    return bad("prob", "must be in [0, 1]");
                }
                let [r, g, b] = e.mean[..] else {
                    return bad("mean", "must be 3 values, one per channel");
                };
                // PaddleDetection leaves the picture as it is below a ratio of
                // 1.01, and fills a uint8 canvas (the mean truncated).
                if e.max_ratio - 1.0 >= 0.01 {
                    steps.push(Augment::Expand(ExpandParams {
                        max_ratio: f64::from(e.max_ratio),
                        skip_probability: 1.0 - f64::from(e.prob),
                        fill: [r, g, b].map(f32::trunc),
                    }));
                }
            }
            Transform::RandomCrop(c) => {
                let range = |v: &[f32], high: f32| {
                    v.len() == 2 && v[0] > 0.0 && v[0] <= v[1] && v[1] <= high
                };
                if !range(&c.scaling, 1.0) {
                    return bad("scaling", "must be [low, high] with 0 < low <= high <= 1");
                }
                if !range(&c.aspect_ratio, f32::MAX) {
                    return bad("aspect_ratio", "must be [low, high] with 0 < low <= high");
                }
                if !c.thresholds.iter().all(|&t| probability(t)) {
                    return bad("thresholds", "IoUs must be in [0, 1]");
                }
                steps.push(Augment::Crop(CropParams {
                    thresholds: c.thresholds.clone(),
                    scale: [c.scaling[0], c.scaling[1]],
                    aspect_ratio: [c.aspect_ratio[0], c.aspect_ratio[1]],
                    attempts: c.num_attempts,
                    allow_no_crop: c.allow_no_crop,
                    cover_all_boxes: c.cover_all_box,
                }));
            }
            Transform::RandomFlipImage(f) => {
                if !probability(f.prob) {
                    return bad("prob", "must be in [0, 1]");
                }
                if f.is_normalized != self.boxes_normalized {
                    return bad(
                        "is_normalized",
                        if f.is_normalized {
                            "is true but the boxes are in pixels here (NormalizeBox comes later): set false"
                        } else {
                            "is false but NormalizeBox came before (the boxes are 0..1 here): set true"
                        },
                    );
                }
                // The loader flips polygons with their boxes; PaddleDetection
                // without is_mask_flip would train on masks left unflipped.
                if self.arch.has_masks() && !f.is_mask_flip {
                    return bad(
                        "is_mask_flip",
                        &format!(
                            "must be true for {:?}: the polygons are mirrored with their boxes",
                            self.arch
                        ),
                    );
                }
                steps.push(Augment::Flip(f64::from(f.prob)));
            }
            Transform::NormalizeBox(_) => {
                if std::mem::replace(&mut self.boxes_normalized, true) {
                    return Err((None, "listed twice: it would divide the boxes twice".into()));
                }
            }
            Transform::BboxXYXY2XYWH(_) => {
                if std::mem::replace(&mut self.boxes_xywh, true) {
                    return Err((
                        None,
                        "listed twice: it would convert the boxes twice".into(),
                    ));
                }
            }
            Transform::PadBox(p) => {
                if p.num_max_boxes != self.pipeline.max_boxes {
                    return bad(
                        "num_max_boxes",
                        &format!(
                            "is {} but inputs_def.num_max_boxes is {}: set both to the same",
                            p.num_max_boxes, self.pipeline.max_boxes
                        ),
                    );
                }
                self.pipeline.pad_box = true;
            }
            Transform::ResizeImage(r) => {
                let interp = match (r.use_cv2, r.interp) {
                    (true, 0) => Interp::Nearest,
                    (true, 1) => Interp::Linear,
                    (true, 2) => Interp::Cubic,
                    (true, _) => {
                        return bad(
                            "interp",
                            "must be 0 (nearest), 1 (linear) or 2 (cubic); OpenCV's area and Lanczos are not supported",
                        )
                    }
                    (false, code) => match PilFilter::from_code(code) {
                        Some(filter) => Interp::Pil(filter),
                        None => {
                            return bad(
                                "interp",
                                "with use_cv2: false is a PIL filter: 1 (Lanczos), 2 (bilinear), 3 (bicubic), 4 (box) or 5 (Hamming); PIL's nearest (0) is not supported",
                            )
                        }
                    },
                };
                let sizes = r.target_size.values();
                if sizes.is_empty() || sizes.contains(&0) {
                    return bad(
                        "target_size",
                        "must be positive (one size or a list of them)",
                    );
                }
                let resized = self.pipeline.resize.is_some() && (r.max_size != 0 || !self.training);
                if resized || self.pipeline.short_side.is_some() {
                    return Err((None, "listed twice: the picture is resized once".into()));
                }
                if r.max_size != 0 {
                    if !r.use_cv2 {
                        return bad(
                            "use_cv2",
                            "must be true with max_size (PaddleDetection refuses PIL there)",
                        );
                    }
                    if self.pipeline.random_shape.is_some() {
                        return Err((None, "with max_size cannot follow RandomShape: each picture keeps its own size".into()));
                    }
                    self.pipeline.short_side = Some(ShortSideResize {
                        target_sizes: sizes,
                        max_size: r.max_size,
                        interp,
                        pad_to_stride: 0,
                        padded_im_info: false,
                    });
                    return Ok(());
                }
                let [size] = sizes[..] else {
                    return bad(
                        "target_size",
                        "a list needs max_size: only the short-side resize draws a size per picture",
                    );
                };
                if self.training {
                    steps.push(Augment::Resize { size, interp });
                }
                self.pipeline.resize = Some((size, interp));
            }
            Transform::PadBatch(p) => {
                let Some(resize) = &mut self.pipeline.short_side else {
                    return Err((
                        None,
                        "needs a ResizeImage with max_size before it: the square resizes make pictures of one size already".into(),
                    ));
                };
                if p.pad_to_stride < -1 {
                    return bad(
                        "pad_to_stride",
                        "must be -1 or 0 (pad to the largest picture) or a positive stride",
                    );
                }
                // PaddleDetection's 0 leaves the pictures as they are, which
                // only stacks for pictures of one size: the largest then.
                resize.pad_to_stride = p.pad_to_stride.max(1) as usize;
                resize.padded_im_info = p.use_padded_im_info;
            }
            Transform::RandomInterpImage(r) => {
                if !self.training {
                    return Err((
                        None,
                        "runs in TrainReader only: it draws the interpolation at random (evaluation resizes with ResizeImage)".into(),
                    ));
                }
                if r.target_size == 0 {
                    return bad("target_size", "must be positive");
                }
                if r.max_size != 0 {
                    return bad(
                        "max_size",
                        "must be 0: only the square target_size x target_size resize is supported, not the short-side resize capped at max_size",
                    );
                }
                steps.push(Augment::RandomInterpResize(r.target_size));
                // Every picture is this size now; without a RandomShape the
                // batch keeps it (the interpolation is not used again).
                self.pipeline.resize = Some((r.target_size, Interp::Linear));
            }
            Transform::RandomShape(r) => {
                if !self.training {
                    return Err((
                        None,
                        "runs in TrainReader only: evaluation sizes come from ResizeImage".into(),
                    ));
                }
                if r.sizes.is_empty() || r.sizes.contains(&0) {
                    return bad("sizes", "must be one or more positive sizes");
                }
                if self.pipeline.random_shape.is_some() {
                    return Err((None, "listed twice".into()));
                }
                if self.pipeline.short_side.is_some() {
                    return Err((
                        None,
                        "cannot follow ResizeImage with max_size: each picture keeps its own size"
                            .into(),
                    ));
                }
                self.pipeline.random_shape = Some(RandomShapeParams {
                    sizes: r.sizes.clone(),
                    random_interp: r.random_inter,
                });
            }
            Transform::NormalizeImage(n) => {
                let (Ok(mean), Ok(std)) = (
                    <[f32; 3]>::try_from(&n.mean[..]),
                    <[f32; 3]>::try_from(&n.std[..]),
                ) else {
                    return bad(
                        if n.mean.len() != 3 { "mean" } else { "std" },
                        "must be 3 values, one per channel",
                    );
                };
                if std.contains(&0.0) {
                    return bad("std", "must not be 0");
                }
                if n.is_channel_first
                    .is_some_and(|first| first != self.channel_first)
                {
                    return bad(
                        "is_channel_first",
                        if !self.channel_first {
                            "is true but the picture is height x width x channels here (Permute comes later): set false"
                        } else {
                            "is false but Permute came before (the picture is channels-first here): set true"
                        },
                    );
                }
                self.pipeline.normalize = self
                    .pipeline
                    .normalize
                    .then_normalize(mean, std, n.is_scale);
                self.image_done.get_or_insert(name);
            }
            Transform::Permute(p) => {
                if !p.channel_first {
                    return bad(
                        "channel_first",
                        "must be true: the network reads channels first",
                    );
                }
                if std::mem::replace(&mut self.channel_first, true) {
                    return Err((
                        None,
                        "listed twice: the picture is channels-first already".into(),
                    ));
                }
                if p.to_bgr {
                    self.pipeline.normalize = self.pipeline.normalize.then_reverse();
                }
                self.image_done.get_or_insert(name);
            }
            // Config::check refuses the fine-grained loss, without which
            // PaddleDetection drops this step; Config::warnings names it.
            Transform::Gt2YoloTarget(_) => {}
        }
        Ok(())
    }

    /// What the lists must hold as a whole.
    fn finish(mut self) -> std::result::Result<ReaderPipeline, String> {
        if !self.decoded {
            return Err("needs DecodeImage first: it reads the picture".into());
        }
        if !self.channel_first {
            return Err(
                "needs a Permute(channel_first: true): the network reads channels first".into(),
            );
        }
        // Without a PadBox PaddleDetection feeds every box (the R-CNN and
        // SSD readers' `gt_bbox` is a LoD tensor): slots for the most an
        // image has. (YOLOv3 needs the PadBox, below.)
        if !self.pipeline.pad_box {
            self.pipeline.max_boxes = 0;
        }
        if self.arch.uses_rcnn_reader() {
            if self.pipeline.short_side.is_none() {
                return Err("needs a ResizeImage with max_size: the R-CNN models take each picture at its aspect ratio".into());
            }
            if self.boxes_normalized || self.boxes_xywh {
                return Err("needs no NormalizeBox and no BboxXYXY2XYWH: the R-CNN ops take pixel corner boxes".into());
            }
            return Ok(self.pipeline);
        }
        if self.pipeline.short_side.is_some() {
            return Err(
                "has a ResizeImage with max_size, which only FasterRCNN, MaskRCNN, CascadeRCNN, CascadeMaskRCNN and RetinaNet take: set max_size: 0"
                    .into(),
            );
        }
        if self.training {
            if self.pipeline.random_shape.is_none() && self.pipeline.resize.is_none() {
                return Err("needs a RandomShape or a ResizeImage: a batch has one size".into());
            }
            match self.arch {
                Architecture::YOLOv3 => {
                    if !(self.boxes_normalized && self.boxes_xywh && self.pipeline.pad_box) {
                        return Err("needs NormalizeBox, BboxXYXY2XYWH and PadBox: the YOLOv3 loss takes 0..1 centre-size boxes in fixed slots".into());
                    }
                }
                Architecture::SSD => {
                    if !self.boxes_normalized || self.boxes_xywh {
                        return Err("needs NormalizeBox and no BboxXYXY2XYWH: the SSD loss takes 0..1 corner boxes".into());
                    }
                }
                Architecture::FasterRCNN
                | Architecture::MaskRCNN
                | Architecture::CascadeRCNN
                | Architecture::CascadeMaskRCNN
                | Architecture::RetinaNet => {
                    unreachable!("returned above")
                }
            }
        } else if self.pipeline.resize.is_none() {
            return Err("needs a ResizeImage with a target_size: the size the network sees".into());
        }
        Ok(self.pipeline)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use pulsefocus_formats::dataset::{GroundTruth, Record};

    use super::*;
    use crate::config::{load, DataSet, InputsDef, VocDataSet};
    use crate::data::loader::{Loader, LoaderConfig, Mode};
    use crate::data::Batch;

    const FILE: &str = "my.ron";

    /// A transform list written as in a config.
    fn transforms(ron: &str) -> Vec<Transform> {
        super::super::ron_options().from_str(ron).unwrap()
    }

    /// A reader with `sample` and `batch` transform lists and 3 box slots.
    fn reader(sample: &str, batch: &str) -> Reader {
        Reader {
            inputs_def: InputsDef {
                num_max_boxes: 3,
                ..InputsDef::default()
            },
            dataset: DataSet::VOCDataSet(VocDataSet::default()),
            sample_transforms: transforms(sample),
            batch_transforms: transforms(batch),
            batch_size: 1,
            shuffle: false,
            drop_last: false,
            mixup_epoch: 0,
            drop_empty: true,
            worker_num: 1,
            bufsize: None,
            use_process: None,
        }
    }

    const BOXES: &str = "NormalizeBox(), PadBox(num_max_boxes: 3), BboxXYXY2XYWH()";
    const TO_NETWORK: &str = "[RandomShape(sizes: [64]), NormalizeImage(), Permute()]";

    fn error(reader: &Reader, name: &str) -> String {
        reader
            .pipeline_for(Path::new(FILE), name, Architecture::YOLOv3)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn sample_transforms_run_in_the_listed_order_with_their_parameters() {
        let sample = format!(
            "[DecodeImage(to_rgb: false), RandomFlipImage(prob: 1.0), \
             RandomExpand(ratio: 2.0, prob: 0.25, fill_value: [1, 2, 3]), {BOXES}]"
        );
        let pipeline = reader(&sample, TO_NETWORK)
            .pipeline_for(Path::new(FILE), "TrainReader", Architecture::YOLOv3)
            .unwrap();
        assert!(!pipeline.to_rgb);
        assert_eq!(
            pipeline.sample.steps,
            vec![
                Augment::Flip(1.0),
                Augment::Expand(ExpandParams {
                    max_ratio: 2.0,
                    skip_probability: 0.25,
                    fill: [1.0, 2.0, 3.0],
                }),
            ]
        );
        assert_eq!(pipeline.max_boxes, 3);
        assert_eq!(
            pipeline.random_shape,
            Some(RandomShapeParams {
                sizes: vec![64],
                random_interp: false
            })
        );
    }

    #[test]
    fn ssd_order_permute_then_normalize_channels_first() {
        let sample = "[DecodeImage(), NormalizeBox(), ResizeImage(target_size: 300, interp: 1), \
             RandomFlipImage(is_normalized: true), PadBox(num_max_boxes: 3), BboxXYXY2XYWH()]";
        let batch = "[Permute(to_bgr: true), NormalizeImage(mean: [127.5, 127.5, 127.5], \
             std: [127.502231, 127.502231, 127.502231], is_scale: false, is_channel_first: true)]";
        let pipeline = reader(sample, batch)
            .pipeline_for(Path::new(FILE), "TrainReader", Architecture::YOLOv3)
            .unwrap();
        assert_eq!(
            pipeline.sample.steps,
            vec![
                Augment::Resize {
                    size: 300,
                    interp: Interp::Linear
                },
                Augment::Flip(0.5),
            ]
        );
        let want =
            ChannelNorm::IDENTITY
                .then_reverse()
                .then_normalize([127.5; 3], [127.502_23; 3], false);
        assert_eq!(pipeline.normalize, want);
        assert_eq!(pipeline.normalize.source, [2, 1, 0]);
    }

    #[test]
    fn every_misplaced_or_unsupported_parameter_is_an_error_naming_its_key() {
        let flip_first = format!("[DecodeImage(), RandomFlipImage(), {BOXES}]");
        let cases: &[(&str, String, &str, &str, &str)] = &[
            (
                "TrainReader",
                format!(
                    "[DecodeImage(), ColorDistort(), ColorDistort(hue: [18, -18, 0.5]), {BOXES}]"
                ),
                TO_NETWORK,
                "TrainReader.sample_transforms[2].ColorDistort.hue",
                "low <= high",
            ),
            (
                "TrainReader",
                flip_first.clone(),
                "[RandomShape(sizes: [64]), NormalizeImage(is_channel_first: true), Permute()]",
                "TrainReader.batch_transforms[1].NormalizeImage.is_channel_first",
                "Permute comes later",
            ),
            (
                "TrainReader",
                flip_first.clone(),
                "[RandomShape(sizes: [64]), Permute(), NormalizeImage(is_channel_first: false)]",
                "TrainReader.batch_transforms[2].NormalizeImage.is_channel_first",
                "set true",
            ),
            (
                "TrainReader",
                flip_first.clone(),
                "[RandomShape(sizes: [64]), NormalizeImage(mean: [0.5, 0.5]), Permute()]",
                "TrainReader.batch_transforms[1].NormalizeImage.mean",
                "3 values",
            ),
            (
                "TrainReader",
                flip_first.clone(),
                "[RandomShape(sizes: [64]), NormalizeImage(std: [0.2, 0, 0.2]), Permute()]",
                "TrainReader.batch_transforms[1].NormalizeImage.std",
                "not be 0",
            ),
            (
                "TrainReader",
                flip_first.clone(),
                "[RandomShape(sizes: [64]), NormalizeImage(), Permute(channel_first: false)]",
                "TrainReader.batch_transforms[2].Permute.channel_first",
                "channels first",
            ),
            (
                "TrainReader",
                flip_first.clone(),
                "[ResizeImage(target_size: 64, interp: 3), NormalizeImage(), Permute()]",
                "TrainReader.batch_transforms[0].ResizeImage.interp",
                "not supported",
            ),
            (
                "TrainReader",
                format!("[DecodeImage(), RandomFlipImage(is_normalized: true), {BOXES}]"),
                TO_NETWORK,
                "TrainReader.sample_transforms[1].RandomFlipImage.is_normalized",
                "NormalizeBox comes later",
            ),
            (
                "TrainReader",
                format!("[DecodeImage(), {BOXES}, RandomCrop()]"),
                TO_NETWORK,
                "TrainReader.sample_transforms[4].RandomCrop",
                "before NormalizeBox",
            ),
            (
                "TrainReader",
                format!("[DecodeImage(), NormalizeImage(), ColorDistort(), {BOXES}]"),
                "[RandomShape(sizes: [64]), Permute()]",
                "TrainReader.sample_transforms[2].ColorDistort",
                "before NormalizeImage",
            ),
            (
                "TrainReader",
                "[DecodeImage(), NormalizeBox(), PadBox(num_max_boxes: 50), BboxXYXY2XYWH()]"
                    .into(),
                TO_NETWORK,
                "TrainReader.sample_transforms[2].PadBox.num_max_boxes",
                "inputs_def.num_max_boxes is 3",
            ),
            (
                "TrainReader",
                format!("[DecodeImage(), RandomExpand(ratio: 1.0), {BOXES}]"),
                TO_NETWORK,
                "TrainReader.sample_transforms[1].RandomExpand.ratio",
                "more than 1.01",
            ),
            (
                "TrainReader",
                format!("[DecodeImage(), RandomDistort(hue_prob: 2), {BOXES}]"),
                TO_NETWORK,
                "TrainReader.sample_transforms[1].RandomDistort.hue_prob",
                "in [0, 1]",
            ),
            (
                "EvalReader",
                "[DecodeImage(), RandomDistort(), ResizeImage()]".into(),
                "[NormalizeImage(), Permute()]",
                "EvalReader.sample_transforms[1].RandomDistort",
                "TrainReader only",
            ),
            (
                "TrainReader",
                format!("[RandomFlipImage(), DecodeImage(), {BOXES}]"),
                TO_NETWORK,
                "TrainReader.sample_transforms[0].RandomFlipImage",
                "DecodeImage must come first",
            ),
            (
                "TrainReader",
                flip_first.clone(),
                "[NormalizeImage(), Permute()]",
                "TrainReader.sample_transforms",
                "RandomShape or a ResizeImage",
            ),
            (
                "TrainReader",
                "[DecodeImage(), RandomFlipImage()]".into(),
                TO_NETWORK,
                "TrainReader.sample_transforms",
                "NormalizeBox, BboxXYXY2XYWH and PadBox",
            ),
            (
                "TrainReader",
                flip_first.clone(),
                "[RandomShape(sizes: [64]), NormalizeImage()]",
                "TrainReader.sample_transforms",
                "needs a Permute",
            ),
            (
                "EvalReader",
                "[DecodeImage(), RandomFlipImage(), ResizeImage()]".into(),
                "[NormalizeImage(), Permute()]",
                "EvalReader.sample_transforms[1].RandomFlipImage",
                "TrainReader only",
            ),
            (
                "TestReader",
                "[DecodeImage()]".into(),
                "[NormalizeImage(), Permute()]",
                "TestReader.sample_transforms",
                "needs a ResizeImage",
            ),
        ];
        for (name, sample, batch, key, message) in cases {
            let error = error(&reader(sample, batch), name);
            assert!(error.contains(FILE), "{error}");
            assert!(error.contains(&format!("key {key}):")), "{key}: {error}");
            assert!(error.contains(message), "{message}: {error}");
            assert_eq!(error.lines().count(), 1, "{error}");
        }
    }

    /// SSD's TrainReader (`configs/ssd_mobilenet_v1_voc.ron`, as the YAML):
    /// RandomDistort, RandomExpand, RandomCrop without the no-crop choice,
    /// PIL's Lanczos resize to 300, the flip, then BGR and (v - 127.5) / 127.5.
    #[test]
    fn ssd_training_reader_runs_paddledetections_ssd_transforms() {
        use crate::data::transforms::random_distort::RandomDistortParams;
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/ssd_mobilenet_v1_voc.ron");
        let config = load(&path, &[]).unwrap();
        let reader = &config.train_reader;
        let pipeline = reader
            .pipeline_for(&path, "TrainReader", Architecture::SSD)
            .unwrap();
        let range = |lower, upper| DistortRange {
            lower,
            upper,
            probability: 0.5,
        };
        assert_eq!(
            pipeline.sample.steps,
            vec![
                Augment::RandomDistort(RandomDistortParams {
                    brightness: range(0.875, 1.125),
                    contrast: range(0.5, 1.5),
                    saturation: range(0.5, 1.5),
                    hue: range(-18.0, 18.0),
                    count: 4,
                    is_order: true,
                }),
                Augment::Expand(ExpandParams {
                    max_ratio: 4.0,
                    skip_probability: 0.5,
                    fill: [127.5; 3],
                }),
                Augment::Crop(CropParams {
                    allow_no_crop: false,
                    ..CropParams::default()
                }),
                Augment::Resize {
                    size: 300,
                    interp: Interp::Pil(PilFilter::Lanczos),
                },
                Augment::Flip(0.5),
            ]
        );
        let want =
            ChannelNorm::IDENTITY
                .then_reverse()
                .then_normalize([127.5; 3], [127.502_23; 3], false);
        assert_eq!(pipeline.normalize, want);
        assert!(!pipeline.pad_box);
        // The YOLOv3 loss would need centre-size boxes in fixed slots.
        let error = error(reader, "TrainReader");
        assert!(
            error.contains("NormalizeBox, BboxXYXY2XYWH and PadBox"),
            "{error}"
        );
        let loader = reader
            .train_loader_config(&path, 1, Architecture::SSD)
            .unwrap();
        let Mode::Train(augment) = &loader.mode else {
            panic!("training mode")
        };
        assert_eq!(
            (augment.sizes.as_slice(), loader.batch_size),
            (&[300][..], 32)
        );
        // The EvalReader resizes with PIL too; the TestReader with OpenCV.
        for (name, interp) in [
            ("EvalReader", Interp::Pil(PilFilter::Lanczos)),
            ("TestReader", Interp::Linear),
        ] {
            let r = if name == "EvalReader" {
                config.eval_reader.as_ref()
            } else {
                config.test_reader.as_ref()
            };
            let eval = r
                .unwrap()
                .eval_loader_config(&path, name, config.arch())
                .unwrap();
            assert_eq!(eval.mode, Mode::Eval { size: 300, interp }, "{name}");
            assert_eq!(eval.normalize, want);
        }
    }

    #[test]
    fn ssd_readers_need_normalized_corner_boxes_and_may_pad() {
        let file = Path::new(FILE);
        let ssd = |sample: &str| {
            reader(sample, TO_NETWORK).pipeline_for(file, "TrainReader", Architecture::SSD)
        };
        // Every box without a PadBox (PaddleDetection's SSD reader feeds
        // them all), the first 3 with one.
        let slots = |sample: &str| ssd(sample).map(|p| p.max_boxes).unwrap();
        assert_eq!(slots("[DecodeImage(), NormalizeBox()]"), 0);
        assert_eq!(
            slots("[DecodeImage(), NormalizeBox(), PadBox(num_max_boxes: 3)]"),
            3
        );
        for sample in [
            "[DecodeImage()]",
            "[DecodeImage(), NormalizeBox(), BboxXYXY2XYWH()]",
        ] {
            let e = ssd(sample).unwrap_err().to_string();
            assert!(
                e.contains(
                    "key TrainReader.sample_transforms): needs NormalizeBox and no BboxXYXY2XYWH"
                ),
                "{e}"
            );
        }
        // RandomDistort leaves boxes alone: it may follow NormalizeBox.
        assert!(ssd("[DecodeImage(), NormalizeBox(), RandomDistort()]").is_ok());
    }

    #[test]
    fn mixup_needs_its_second_picture_decoded_while_it_runs() {
        let sample = format!("[DecodeImage(with_mixup: false), MixupImage(), {BOXES}]");
        let mut train = reader(&sample, TO_NETWORK);
        train.mixup_epoch = 0;
        assert!(train
            .pipeline_for(Path::new(FILE), "TrainReader", Architecture::YOLOv3)
            .is_ok());
        train.mixup_epoch = 10;
        let error = error(&train, "TrainReader");
        assert!(
            error.contains(
                "TrainReader.sample_transforms[1].MixupImage): needs DecodeImage(with_mixup: true)"
            ),
            "{error}"
        );
    }

    #[test]
    fn shipped_configs_have_valid_readers() {
        for name in [
            "demo.ron",
            "yolov3_mobilenet_v1_voc.ron",
            "yolov3_mobilenet_v1_coco.ron",
            "yolov3_darknet_voc.ron",
            "yolov3_darknet_coco.ron",
            "ssd_mobilenet_v1_voc.ron",
            "ssd_vgg16_300_voc.ron",
        ] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../configs")
                .join(name);
            load(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    /// PaddleDetection's operators on a 7 x 5 picture, as
    /// `tests/fixtures/transforms/make_fixtures.py` ran them: our pipeline
    /// must give the same network input and targets, case by case (decode
    /// order, mean/std/is_scale, is_channel_first with Permute before or
    /// after, to_bgr, interpolations, flips with pixel or 0..1 boxes, PadBox).
    #[test]
    fn the_pipeline_gives_what_paddledetections_operators_give() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/transforms");
        let text = std::fs::read_to_string(dir.join("cases.json")).unwrap();
        let fixture: serde_json::Value = serde_json::from_str(&text).unwrap();
        let picture = dir.join(fixture["picture"].as_str().unwrap());
        let floats = |v: &serde_json::Value| -> Vec<f32> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        };
        let cases = fixture["cases"].as_array().unwrap();
        assert!(cases.len() >= 8);
        let mut outputs = Vec::new();
        for case in cases {
            let name = case["name"].as_str().unwrap();
            let box_ = floats(&case["box"]);
            let records = Arc::new(vec![Record {
                image_path: picture.clone(),
                id: 0,
                width: 7,
                height: 5,
                objects: vec![GroundTruth {
                    bbox: [box_[0], box_[1], box_[2], box_[3]],
                    class: 2,
                    difficult: false,
                    crowd: false,
                }],
                polygons: Vec::new(),
            }]);
            let reader = reader(case["ron"].as_str().unwrap(), "[]");
            let file = Path::new(FILE);
            let config = match case.get("gt_bbox") {
                Some(_) => reader
                    .train_loader_config(file, 5, Architecture::YOLOv3)
                    .unwrap(),
                None => reader
                    .eval_loader_config(file, "EvalReader", Architecture::YOLOv3)
                    .unwrap(),
            };
            let config = LoaderConfig {
                workers: 1,
                ..config
            };
            if let Mode::Train(augment) = &config.mode {
                assert!(!augment.random_interp, "{name}");
            }
            let batch: Batch = Loader::new(records, config, 0, Some(1))
                .unwrap()
                .next()
                .unwrap()
                .unwrap();
            let want = floats(&case["chw"]);
            assert_eq!(batch.images.len(), want.len(), "{name}");
            for (i, (a, b)) in batch.images.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                    "{name}: value {i} is {a}, PaddleDetection {b}"
                );
            }
            if let Some(gt) = case.get("gt_bbox") {
                let gt = floats(gt);
                assert_eq!(batch.gt_boxes.len(), gt.len(), "{name}");
                for (a, b) in batch.gt_boxes.iter().zip(&gt) {
                    assert!(
                        (a - b).abs() < 1e-6,
                        "{name}: {:?} vs {gt:?}",
                        batch.gt_boxes
                    );
                }
            }
            outputs.push(batch.images);
        }
        // Each case changes the input: no parameter is ignored.
        for (i, a) in outputs.iter().enumerate() {
            for b in &outputs[..i] {
                assert_ne!(a, b, "case {i} gives the same input as an earlier one");
            }
        }
    }
}
