//! `architecture: MaskRCNN`: the Faster R-CNN part as `faster_rcnn.rs`
//! reads it (the `MaskRCNN` section names the same sections by the same
//! keys), then the mask branch from `MaskHead`, `MaskAssigner` and, for
//! FPN, `FPNRoIAlign.mask_resolution`. `rcnn_config` gives the operators'
//! settings of both. Cascade Mask R-CNN's mask branch is read here too.

use std::path::Path;

use pulsefocus_formats::{Error, Result};

use super::Config;
use crate::models::faster_rcnn::{FasterRcnnSpec, RoiExtractorSpec};
use crate::models::mask_rcnn::MaskRcnnSpec;

impl Config {
    /// The Mask R-CNN model of a `MaskRCNN` config; errors name `file` and
    /// the key.
    pub fn mask_rcnn_spec(&self, file: &Path) -> Result<MaskRcnnSpec> {
        let faster_rcnn = self.faster_rcnn_spec(file)?;
        let arch = self
            .mask_rcnn
            .as_ref()
            .expect("faster_rcnn_spec() found the MaskRCNN section");
        let names = [arch.mask_head.as_str(), &arch.mask_assigner];
        self.with_mask_branch(file, faster_rcnn, "MaskRCNN", names)
    }

    /// `faster_rcnn` with the mask branch the sections give, which
    /// `section` (`MaskRCNN`, `CascadeMaskRCNN`) names `[mask_head,
    /// mask_assigner]`.
    pub(super) fn with_mask_branch(
        &self,
        file: &Path,
        faster_rcnn: FasterRcnnSpec,
        section: &str,
        [mask_head, mask_assigner]: [&str; 2],
    ) -> Result<MaskRcnnSpec> {
        let bad = |key: &str, msg: String| Error::at(file, format!("key {key}"), msg);
        for (key, given, want) in [
            ("mask_head", mask_head, "MaskHead"),
            ("mask_assigner", mask_assigner, "MaskAssigner"),
        ] {
            if given != want {
                return Err(bad(
                    &format!("{section}.{key}"),
                    format!("'{given}' is not supported (supported: {want})"),
                ));
            }
        }
        let head = self.mask_head.clone().unwrap_or_default();
        for (key, value) in [
            ("conv_dim", head.conv_dim),
            ("resolution", head.resolution),
            ("dilation", head.dilation),
        ] {
            if value == 0 {
                return Err(bad(&format!("MaskHead.{key}"), "must be positive".into()));
            }
        }
        let with_fpn = faster_rcnn.fpn.is_some();
        let mut spec = if with_fpn {
            MaskRcnnSpec::fpn(faster_rcnn, head.conv_dim)
        } else {
            MaskRcnnSpec::c4(faster_rcnn, head.conv_dim)
        };
        // The side of the features `conv5_mask` doubles: FPN cuts them at
        // `mask_resolution`; C4's are the box head's res5 output, its
        // stride-2 blocks on the RoIAlign features.
        let (side, from) = match &mut spec.mask_roi_extractor {
            Some(RoiExtractorSpec::FpnRoiAlign { resolution, .. }) => {
                *resolution = self
                    .fpn_roi_align
                    .clone()
                    .unwrap_or_default()
                    .mask_resolution;
                (*resolution, "FPNRoIAlign.mask_resolution")
            }
            _ => (
                spec.faster_rcnn.roi_extractor.resolution().div_ceil(2),
                "RoIAlign.resolution",
            ),
        };
        if side == 0 {
            return Err(bad(from, "must be positive".into()));
        }
        if head.resolution != 2 * side {
            return Err(bad(
                "MaskHead.resolution",
                format!(
                    "must be {}: conv5_mask doubles the {side}x{side} RoI features ({from}{})",
                    2 * side,
                    if with_fpn { "" } else { " halved by res5" }
                ),
            ));
        }
        let assigner = self.mask_assigner.clone().unwrap_or_default();
        if assigner.resolution != head.resolution {
            return Err(bad(
                "MaskAssigner.resolution",
                format!(
                    "must equal MaskHead.resolution ({}): the targets are the predicted masks' size",
                    head.resolution
                ),
            ));
        }
        spec.mask_head.num_convs = head.num_convs;
        spec.mask_head.resolution = head.resolution;
        spec.mask_head.dilation = head.dilation;
        Ok(spec)
    }
}
