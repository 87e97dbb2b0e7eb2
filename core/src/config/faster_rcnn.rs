//! `architecture: FasterRCNN`: the model (`FasterRcnnSpec`) and the R-CNN
//! operators' settings (`RcnnConfig`) from the sections the `FasterRCNN`
//! section names, with PaddleDetection's defaults for sections left out.
//! Without `FasterRCNN.fpn` the C4 model (`RPNHead`, `RoIAlign`,
//! `BBoxHead.head: ResNetC5`), with `fpn: FPN` the FPN one (`FPNRPNHead`,
//! `FPNRoIAlign`, `BBoxHead.head: TwoFCHead`). `architecture: MaskRCNN`
//! names the same sections by the same keys in its `MaskRCNN` section, and
//! its Faster R-CNN part is read here too (`mask_rcnn.rs` adds the mask
//! branch). So is the trunk of `architecture: CascadeRCNN` and
//! `CascadeMaskRCNN` (FPN only), whose box head is read from
//! `CascadeBBoxHead`, `CascadeTwoFCHead` and `CascadeBBoxAssigner` instead
//! (`cascade_rcnn.rs` adds the stages).

use std::path::Path;

use pulsefocus_formats::{Error, Result};

use super::{
    Architecture, BBoxHead, CascadeRCNN, Config, FasterRCNN, MaskRCNN, MultiClassNMS, RPNHead,
    ResNet,
};
use crate::models::faster_rcnn::{FasterRcnnSpec, RoiExtractorSpec};
use crate::models::fpn::FpnSpec;
use crate::models::resnet::{NormType, ResNetSpec};
use crate::models::rpn_head::{AnchorGeneratorSpec, RpnLevels};
use crate::rcnn::config::{BBoxAssignerConfig, ProposalConfig, RcnnConfig, RpnTargetConfig};
use crate::yolo::NmsConfig;

/// The section names each model is built from: (`rpn_head`,
/// `roi_extractor`, `BBoxHead.head`; the FPN model's RoI head is its box
/// head's, below).
const C4_PARTS: [&str; 3] = ["RPNHead", "RoIAlign", "ResNetC5"];
const FPN_PARTS: [&str; 2] = ["FPNRPNHead", "FPNRoIAlign"];

/// The sections the box head is read from: (`bbox_head`, `bbox_assigner`,
/// the FPN model's RoI head).
const BOX_HEAD: [&str; 3] = ["BBoxHead", "BBoxAssigner", "TwoFCHead"];
const CASCADE_BOX_HEAD: [&str; 3] = ["CascadeBBoxHead", "CascadeBBoxAssigner", "CascadeTwoFCHead"];

impl Config {
    /// The R-CNN architecture section of this config's architecture, by
    /// its name: `MaskRCNN`'s Faster R-CNN keys for Mask R-CNN, the
    /// cascades' keys naming the same parts, else `FasterRCNN`; an error
    /// naming `file` where it is missing.
    fn rcnn_section(&self, file: &Path) -> Result<(&'static str, FasterRCNN)> {
        let (name, section) = match self.arch() {
            Architecture::MaskRCNN => (
                "MaskRCNN",
                self.mask_rcnn.as_ref().map(MaskRCNN::faster_rcnn),
            ),
            Architecture::CascadeRCNN => (
                "CascadeRCNN",
                self.cascade_rcnn.as_ref().map(CascadeRCNN::faster_rcnn),
            ),
            Architecture::CascadeMaskRCNN => (
                "CascadeMaskRCNN",
                self.cascade_mask_rcnn
                    .as_ref()
                    .map(|s| s.cascade_rcnn().faster_rcnn()),
            ),
            _ => ("FasterRCNN", self.faster_rcnn.clone()),
        };
        let missing = || {
            Error::at(
                file,
                format!("key {name}"),
                format!("missing: architecture {name} names its backbone and heads there"),
            )
        };
        Ok((name, section.ok_or_else(missing)?))
    }

    /// The Faster R-CNN model of a `FasterRCNN` config (or the Faster R-CNN
    /// part of a `MaskRCNN` one, the trunk of a cascade, whose RoI head is
    /// the `CascadeTwoFCHead` each stage builds); errors name `file` and
    /// the key.
    pub fn faster_rcnn_spec(&self, file: &Path) -> Result<FasterRcnnSpec> {
        let bad = |key: &str, msg: String| Error::at(file, format!("key {key}"), msg);
        let (section, arch) = self.rcnn_section(file)?;
        let with_fpn = self.with_fpn(file)?;
        let (names, box_head) = self.box_head_sections();
        let parts = if with_fpn {
            [FPN_PARTS[0], FPN_PARTS[1], names[2]]
        } else {
            C4_PARTS
        };
        let head = box_head.map_or("", |h| h.head.as_str());
        let key = |k: &str| format!("{section}.{k}");
        let model = match (self.arch().is_cascade(), with_fpn) {
            (true, _) => "cascade",
            (false, true) => "FPN model",
            (false, false) => "C4 model",
        };
        for (key, given, want) in [
            (key("backbone"), arch.backbone.as_str(), "ResNet"),
            (key("rpn_head"), &arch.rpn_head, parts[0]),
            (key("roi_extractor"), &arch.roi_extractor, parts[1]),
            (key("bbox_head"), &arch.bbox_head, names[0]),
            (key("bbox_assigner"), &arch.bbox_assigner, names[1]),
            (format!("{}.head", names[0]), head, parts[2]),
        ] {
            if given != want {
                return Err(bad(&key, format!("is '{given}': the {model} takes {want}")));
            }
        }
        let resnet = self.resnet.clone().unwrap_or_default();
        let backbone =
            resnet_spec(&resnet).map_err(|(key, msg)| bad(&format!("ResNet.{key}"), msg))?;
        let rpn = self.rpn(with_fpn);
        let anchors = anchor_generator(&rpn)
            .map_err(|(k, m)| bad(&format!("{}.anchor_generator.{k}", parts[0]), m))?;
        let num_classes = self.num_classes;
        let mut spec = if with_fpn {
            let f = self.fpn.clone().unwrap_or_default();
            let fpn = FpnSpec {
                num_chan: f.num_chan,
                min_level: f.min_level,
                max_level: f.max_level,
                spatial_scale: f.spatial_scale.clone(),
                has_extra_convs: f.has_extra_convs,
            };
            if fpn.has_extra_convs {
                return Err(bad(
                    "FPN.has_extra_convs",
                    "true is not supported for FasterRCNN (supported: false, P6 max-pooled)".into(),
                ));
            }
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
            let levels = RpnLevels {
                anchor_start_size: rpn.anchor_start_size.unwrap_or(32.0),
                min_level: rpn.min_level.unwrap_or(2),
                max_level: rpn.max_level.unwrap_or(6),
            };
            if (levels.min_level, levels.max_level) != (fpn.min_level, fpn.max_level) {
                return Err(bad(
                    "FPNRPNHead.min_level",
                    "and max_level must equal FPN's: the head runs on every pyramid level".into(),
                ));
            }
            if rpn.num_chan.unwrap_or(256) != fpn.num_chan {
                return Err(bad(
                    "FPNRPNHead.num_chan",
                    format!("must equal FPN.num_chan ({})", fpn.num_chan),
                ));
            }
            let r = self.fpn_roi_align.clone().unwrap_or_default();
            let extractor = RoiExtractorSpec::FpnRoiAlign {
                resolution: r.box_resolution,
                sampling_ratio: r.sampling_ratio,
                canonical_level: r.canconical_level,
                canonical_size: r.canonical_size,
                min_level: r.min_level,
                max_level: r.max_level,
            };
            let mlp_dim = if self.arch().is_cascade() {
                let Some(head) = &self.cascade_two_fc_head else {
                    return Err(bad(
                        "CascadeTwoFCHead",
                        "missing: it sets the stages' mlp_dim, which has no default".into(),
                    ));
                };
                head.mlp_dim
            } else {
                self.two_fc_head.clone().unwrap_or_default().mlp_dim
            };
            if mlp_dim == 0 {
                return Err(bad(
                    &format!("{}.mlp_dim", parts[2]),
                    "must be positive".into(),
                ));
            }
            let mut spec = FasterRcnnSpec::with_fpn(backbone, fpn, extractor, mlp_dim, num_classes);
            spec.rpn.levels = Some(levels);
            spec
        } else {
            if let Some(key) = fpn_only_key(&rpn) {
                return Err(bad(
                    &format!("RPNHead.{key}"),
                    "is an FPNRPNHead key: the C4 model has one level".into(),
                ));
            }
            if backbone.feature_maps.len() != 1 {
                return Err(bad(
                    "ResNet.feature_maps",
                    "must be one stage (4): the C4 model runs its RPN and RoIAlign on it".into(),
                ));
            }
            let c5 = self.resnet_c5.clone().unwrap_or_default();
            for (key, same) in [
                ("depth", c5.depth == resnet.depth),
                ("norm_type", c5.norm_type == resnet.norm_type),
                ("freeze_norm", c5.freeze_norm == resnet.freeze_norm),
                ("norm_decay", c5.norm_decay == resnet.norm_decay),
                ("variant", c5.variant == resnet.variant),
                ("width", c5.width == resnet.width),
                ("blocks", c5.blocks == resnet.blocks),
            ] {
                if !same {
                    return Err(bad(
                        &format!("ResNetC5.{key}"),
                        "must equal ResNet's: the RoI head is the backbone's res5".into(),
                    ));
                }
            }
            let r = self.roi_align.clone().unwrap_or_default();
            let mut spec = FasterRcnnSpec::c4(backbone, num_classes);
            spec.roi_extractor = RoiExtractorSpec::RoiAlign {
                resolution: r.resolution,
                sampling_ratio: r.sampling_ratio,
                spatial_scale: r.spatial_scale,
            };
            spec
        };
        spec.rpn.anchors = anchors;
        Ok(spec)
    }

    /// The R-CNN operators' settings of a `FasterRCNN`, `MaskRCNN` or
    /// cascade config (whose `bbox_assigner` is the stages' shared sampling
    /// with stage 1's thresholds and weights; `cascade_rcnn_spec` gives
    /// each stage its own).
    pub fn rcnn_config(&self, file: &Path) -> Result<RcnnConfig> {
        let bad = |key: &str, msg: String| Error::at(file, format!("key {key}"), msg);
        let with_fpn = self.with_fpn(file)?;
        let rpn = self.rpn(with_fpn);
        let section = if with_fpn { FPN_PARTS[0] } else { C4_PARTS[0] };
        let t = &rpn.rpn_target_assign;
        let rpn_target = RpnTargetConfig {
            batch_size_per_im: t.rpn_batch_size_per_im,
            fg_fraction: t.rpn_fg_fraction,
            positive_overlap: t.rpn_positive_overlap,
            negative_overlap: t.rpn_negative_overlap,
            straddle_thresh: t.rpn_straddle_thresh,
            use_random: t.use_random,
        };
        if !(0.0..=1.0).contains(&rpn_target.fg_fraction) {
            return Err(bad(
                &format!("{section}.rpn_target_assign.rpn_fg_fraction"),
                "must be in [0, 1]".into(),
            ));
        }
        let proposal = |p: &super::GenerateProposals| ProposalConfig {
            pre_nms_top_n: p.pre_nms_top_n,
            post_nms_top_n: p.post_nms_top_n,
            nms_thresh: p.nms_thresh,
            min_size: p.min_size,
            eta: p.eta,
        };
        let bbox_assigner = if self.arch().is_cascade() {
            self.cascade_assigner(file)?
        } else {
            let a = self.bbox_assigner.clone().unwrap_or_default();
            let Ok(bbox_reg_weights) = <[f32; 4]>::try_from(&a.bbox_reg_weights[..]) else {
                return Err(bad(
                    "BBoxAssigner.bbox_reg_weights",
                    "must be 4 values: [wx, wy, ww, wh]".into(),
                ));
            };
            if !(0.0..=1.0).contains(&a.fg_fraction) {
                return Err(bad("BBoxAssigner.fg_fraction", "must be in [0, 1]".into()));
            }
            BBoxAssignerConfig {
                batch_size_per_im: a.batch_size_per_im,
                fg_fraction: a.fg_fraction,
                fg_thresh: a.fg_thresh,
                bg_thresh_hi: a.bg_thresh_hi,
                bg_thresh_lo: a.bg_thresh_lo,
                bbox_reg_weights,
                class_nums: self.num_classes,
                use_random: a.shuffle_before_sample,
            }
        };
        let nms = self
            .box_head_sections()
            .1
            .map_or_else(MultiClassNMS::default, |h| h.nms.clone());
        let positive = |k: i64| usize::try_from(k).ok().filter(|&k| k > 0);
        Ok(RcnnConfig {
            rpn_target,
            train_proposal: proposal(&rpn.train_proposal),
            test_proposal: proposal(&rpn.test_proposal),
            bbox_assigner,
            nms: NmsConfig {
                score_threshold: nms.score_threshold,
                nms_top_k: positive(nms.nms_top_k),
                keep_top_k: Some(nms.keep_top_k).filter(|&k| k > 0),
                nms_threshold: nms.nms_threshold,
                normalized: nms.normalized,
                background_label: usize::try_from(nms.background_label).ok(),
            },
        })
    }

    /// `FasterRCNN.fpn` (`MaskRCNN.fpn`): `FPN` (the FPN model) or not
    /// given (C4); the cascades' is always `FPN`.
    pub(super) fn with_fpn(&self, file: &Path) -> Result<bool> {
        let (section, arch) = self.rcnn_section(file)?;
        match arch.fpn.as_deref() {
            None => Ok(false),
            Some("FPN") => Ok(true),
            Some(other) => Err(Error::at(
                file,
                format!("key {section}.fpn"),
                format!(
                    "'{other}' is not supported (supported: FPN{})",
                    if self.arch().is_cascade() {
                        ": the cascade runs on the pyramid"
                    } else {
                        ", or no fpn key for C4"
                    }
                ),
            )),
        }
    }

    /// The box head's section names (`BOX_HEAD`, or the cascades'
    /// `CASCADE_BOX_HEAD`) and its `BBoxHead` (`CascadeBBoxHead`) section
    /// where given.
    pub(super) fn box_head_sections(&self) -> ([&'static str; 3], Option<&BBoxHead>) {
        if self.arch().is_cascade() {
            (CASCADE_BOX_HEAD, self.cascade_bbox_head.as_ref())
        } else {
            (BOX_HEAD, self.bbox_head.as_ref())
        }
    }

    /// The RPN head section the model reads, or its defaults.
    fn rpn(&self, with_fpn: bool) -> RPNHead {
        let given = if with_fpn {
            &self.fpn_rpn_head
        } else {
            &self.rpn_head
        };
        given.clone().unwrap_or_default()
    }
}

/// A key only `FPNRPNHead` has, where an `RPNHead` sets it.
fn fpn_only_key(rpn: &RPNHead) -> Option<&'static str> {
    [
        ("anchor_start_size", rpn.anchor_start_size.is_some()),
        ("num_chan", rpn.num_chan.is_some()),
        ("min_level", rpn.min_level.is_some()),
        ("max_level", rpn.max_level.is_some()),
    ]
    .into_iter()
    .find_map(|(key, set)| set.then_some(key))
}

pub(super) type KeyError = (&'static str, String);

pub(super) fn resnet_spec(r: &ResNet) -> std::result::Result<ResNetSpec, KeyError> {
    let Some(base) = ResNetSpec::new(r.depth) else {
        return Err((
            "depth",
            format!("{} is not a ResNet (18, 34, 50, 101, 152, 200)", r.depth),
        ));
    };
    let norm_type = match r.norm_type.as_str() {
        "affine_channel" => NormType::AffineChannel,
        "bn" => NormType::BatchNorm,
        other => {
            return Err((
                "norm_type",
                format!("'{other}' is not supported (supported: affine_channel, bn)"),
            ))
        }
    };
    if norm_type == NormType::AffineChannel && !r.freeze_norm {
        return Err((
            "freeze_norm",
            "a trained affine channel is not supported: use freeze_norm: true, or norm_type: bn"
                .into(),
        ));
    }
    if r.variant != "b" {
        return Err((
            "variant",
            format!("'{}' is not supported (supported: b)", r.variant),
        ));
    }
    let feature_maps = r.feature_maps.values();
    if feature_maps.is_empty() || feature_maps.iter().any(|s| !(2..=5).contains(s)) {
        return Err(("feature_maps", "must be stages among 2, 3, 4, 5".into()));
    }
    if r.freeze_at > 5 {
        return Err(("freeze_at", "must be at most 5 (0: nothing frozen)".into()));
    }
    if r.width == Some(0) {
        return Err(("width", "must be positive".into()));
    }
    let blocks = match &r.blocks {
        None => base.blocks,
        Some(b) => match <[usize; 4]>::try_from(&b[..]) {
            Ok(b) if !b.contains(&0) => b,
            _ => return Err(("blocks", "must be 4 positive counts, one per stage".into())),
        },
    };
    Ok(ResNetSpec {
        width: r.width.unwrap_or(base.width),
        blocks,
        norm_type,
        freeze_norm: r.freeze_norm,
        norm_decay: r.norm_decay,
        freeze_at: r.freeze_at,
        feature_maps,
        ..base
    })
}

fn anchor_generator(rpn: &RPNHead) -> std::result::Result<AnchorGeneratorSpec, KeyError> {
    let g = &rpn.anchor_generator;
    let Ok(stride) = <[f32; 2]>::try_from(&g.stride[..]) else {
        return Err(("stride", "must be 2 values".into()));
    };
    let Ok(variance) = <[f32; 4]>::try_from(&g.variance[..]) else {
        return Err(("variance", "must be 4 values".into()));
    };
    if g.anchor_sizes.is_empty() || g.aspect_ratios.is_empty() {
        return Err(("anchor_sizes", "and aspect_ratios must not be empty".into()));
    }
    Ok(AnchorGeneratorSpec {
        anchor_sizes: g.anchor_sizes.clone(),
        aspect_ratios: g.aspect_ratios.clone(),
        stride,
        variance,
    })
}
