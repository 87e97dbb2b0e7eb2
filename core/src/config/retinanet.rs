//! `architecture: RetinaNet`: the model (`RetinaNetSpec`) and the settings
//! of its non-learned operations (`RetinaConfig`) from the sections the
//! `RetinaNet` section names (`ResNet`, `FPN`, `RetinaHead`), with
//! PaddleDetection's defaults for sections left out.

use std::path::Path;

use pulsefocus_formats::{Error, Result};

use super::faster_rcnn::resnet_spec;
use super::Config;
use crate::models::fpn::FpnSpec;
use crate::models::retina_head::RetinaHeadSpec;
use crate::models::retinanet::RetinaNetSpec;
use crate::retinanet::{RetinaConfig, RetinaOutputConfig, RetinaTargetConfig};

impl Config {
    /// The RetinaNet model of a `RetinaNet` config; errors name `file` and
    /// the key.
    pub fn retinanet_spec(&self, file: &Path) -> Result<RetinaNetSpec> {
        let bad = |key: &str, msg: String| Error::at(file, format!("key {key}"), msg);
        let Some(arch) = &self.retinanet else {
            return Err(bad(
                "RetinaNet",
                "missing: architecture RetinaNet names its backbone, fpn and retina_head there"
                    .into(),
            ));
        };
        for (key, given, want) in [
            ("RetinaNet.backbone", &arch.backbone, "ResNet"),
            ("RetinaNet.fpn", &arch.fpn, "FPN"),
            ("RetinaNet.retina_head", &arch.retina_head, "RetinaHead"),
        ] {
            if given != want {
                return Err(bad(
                    key,
                    format!("'{given}' is not supported (supported: {want})"),
                ));
            }
        }
        let resnet = self.resnet.clone().unwrap_or_default();
        let backbone =
            resnet_spec(&resnet).map_err(|(key, msg)| bad(&format!("ResNet.{key}"), msg))?;
        let f = self.fpn.clone().unwrap_or_default();
        let fpn = FpnSpec {
            num_chan: f.num_chan,
            min_level: f.min_level,
            max_level: f.max_level,
            spatial_scale: f.spatial_scale.clone(),
            has_extra_convs: f.has_extra_convs,
        };
        if fpn.spatial_scale.len() != backbone.feature_maps.len() {
            return Err(bad(
                "FPN.spatial_scale",
                format!(
                    "has {} scales for {} backbone features (ResNet.feature_maps)",
                    fpn.spatial_scale.len(),
                    backbone.feature_maps.len()
                ),
            ));
        }
        // The backbone's features are the pyramid's lowest levels.
        let stages: Vec<usize> = (fpn.min_level..fpn.min_level + fpn.spatial_scale.len()).collect();
        if backbone.feature_maps != stages {
            return Err(bad(
                "ResNet.feature_maps",
                format!("must be {stages:?}: FPN.min_level and spatial_scale put the backbone's features at those levels"),
            ));
        }
        let h = self.retina_head.clone().unwrap_or_default();
        if (h.min_level, h.max_level) != (fpn.min_level, fpn.max_level) {
            return Err(bad(
                "RetinaHead.min_level",
                "and max_level must equal FPN's: the head runs on every pyramid level".into(),
            ));
        }
        let scales = fpn.output_scales();
        if scales.len() != fpn.max_level - fpn.min_level + 1 {
            return Err(bad(
                "FPN.has_extra_convs",
                format!(
                    "must be true for RetinaNet: levels {}..{} above the backbone's are extra convs",
                    fpn.min_level + fpn.spatial_scale.len(),
                    fpn.max_level
                ),
            ));
        }
        // Each level's anchor stride is 2^level, which Paddle reads back
        // from the scales.
        let powers = scales
            .iter()
            .zip((fpn.min_level..=fpn.max_level).rev())
            .all(|(&s, level)| s == 0.5f32.powi(level as i32));
        if !powers {
            return Err(bad(
                "FPN.spatial_scale",
                "must be 1 / 2^level for each backbone level, deepest first (RetinaNet's anchors have stride 2^level)".into(),
            ));
        }
        let g = &h.anchor_generator;
        let Ok(variance) = <[f32; 4]>::try_from(&g.variance[..]) else {
            return Err(bad(
                "RetinaHead.anchor_generator.variance",
                "must be 4 values".into(),
            ));
        };
        if g.aspect_ratios.is_empty() || g.aspect_ratios.iter().any(|&r| !positive(r)) {
            return Err(bad(
                "RetinaHead.anchor_generator.aspect_ratios",
                "must be positive ratios, at least one".into(),
            ));
        }
        if h.num_scales_per_octave == 0 {
            return Err(bad(
                "RetinaHead.num_scales_per_octave",
                "must be at least 1".into(),
            ));
        }
        if !positive(h.base_scale) {
            return Err(bad("RetinaHead.base_scale", "must be positive".into()));
        }
        if !(h.prior_prob > 0.0 && h.prior_prob < 1.0) {
            return Err(bad(
                "RetinaHead.prior_prob",
                "must be in (0, 1): the class prediction's bias is -ln((1 - p) / p)".into(),
            ));
        }
        if h.num_chan == 0 {
            return Err(bad("RetinaHead.num_chan", "must be positive".into()));
        }
        let num_classes = self.num_classes;
        Ok(RetinaNetSpec {
            head: RetinaHeadSpec {
                in_channels: fpn.num_chan,
                num_chan: h.num_chan,
                num_convs_per_octave: h.num_convs_per_octave,
                min_level: h.min_level,
                max_level: h.max_level,
                prior_prob: h.prior_prob,
                base_scale: h.base_scale,
                num_scales_per_octave: h.num_scales_per_octave,
                aspect_ratios: g.aspect_ratios.clone(),
                variance,
                num_classes,
            },
            backbone,
            fpn,
            num_classes,
        })
    }

    /// The settings of RetinaNet's target assignment, losses and detection
    /// output (`RetinaHead`'s `target_assign`, `gamma`, `alpha`, `sigma`,
    /// `output_decoder`).
    pub fn retina_config(&self, file: &Path) -> Result<RetinaConfig> {
        let bad = |key: &str, msg: String| Error::at(file, format!("key {key}"), msg);
        let h = self.retina_head.clone().unwrap_or_default();
        let t = &h.target_assign;
        for (key, v) in [
            ("positive_overlap", t.positive_overlap),
            ("negative_overlap", t.negative_overlap),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(bad(
                    &format!("RetinaHead.target_assign.{key}"),
                    "must be in [0, 1]".into(),
                ));
            }
        }
        if t.negative_overlap > t.positive_overlap {
            return Err(bad(
                "RetinaHead.target_assign.negative_overlap",
                "must be at most positive_overlap".into(),
            ));
        }
        if !positive(h.sigma) {
            return Err(bad("RetinaHead.sigma", "must be positive".into()));
        }
        if !(0.0..=1.0).contains(&h.alpha) {
            return Err(bad("RetinaHead.alpha", "must be in [0, 1]".into()));
        }
        if !(h.gamma.is_finite() && h.gamma >= 0.0) {
            return Err(bad("RetinaHead.gamma", "must be at least 0".into()));
        }
        let o = &h.output_decoder;
        if !(o.nms_eta > 0.0 && o.nms_eta <= 1.0) {
            return Err(bad(
                "RetinaHead.output_decoder.nms_eta",
                "must be in (0, 1] (1: plain NMS)".into(),
            ));
        }
        Ok(RetinaConfig {
            target: RetinaTargetConfig {
                positive_overlap: t.positive_overlap,
                negative_overlap: t.negative_overlap,
            },
            gamma: h.gamma,
            alpha: h.alpha,
            sigma: h.sigma,
            output: RetinaOutputConfig {
                score_thresh: o.score_thresh,
                nms_thresh: o.nms_thresh,
                pre_nms_top_n: o.pre_nms_top_n,
                detections_per_im: o.detections_per_im,
                nms_eta: o.nms_eta,
            },
        })
    }
}

fn positive(x: f32) -> bool {
    x.is_finite() && x > 0.0
}
