//! Mask R-CNN's mask loss (`device/src/mask_loss.rs`, core's
//! `MaskLossGeom`): a thread per target pixel writing its loss and the
//! gradient of its pixel in every channel.
use pulsefocus_core::backend::MaskLossGeom;

use super::{elementwise, fail, index_count, need_len};
use crate::driver::KernelArgs;
use crate::{DeviceBuffer, Gpu, GpuError};

impl Gpu {
    /// `losses` (`[rois, side, side]`) and `grad` (shaped as `logits`), both
    /// overwritten, from the head's `logits`, one class per RoI in
    /// `roi_classes` and the 0/1 `targets`.
    pub fn mask_loss(
        &self,
        g: &MaskLossGeom,
        logits: &DeviceBuffer,
        roi_classes: &DeviceBuffer,
        targets: &DeviceBuffer,
        grad: &mut DeviceBuffer,
        losses: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        const NAME: &str = "mask_loss";
        g.validate().or_else(|message| fail(NAME, message))?;
        // The kernel indexes the logits, the largest tensor.
        index_count(NAME, "logits", g.logits_len())?;
        for (arg, got, want) in [
            ("logits", logits.len(), g.logits_len()),
            ("roi_classes", roi_classes.len(), g.rois),
            ("targets", targets.len(), g.targets_len()),
            ("grad", grad.len(), g.logits_len()),
            ("losses", losses.len(), g.targets_len()),
        ] {
            need_len(NAME, arg, got, want)?;
        }
        let len = g.targets_len() as u32;
        let mut args = KernelArgs::new();
        args.input(logits, g.logits_len())
            .input(roi_classes, g.rois)
            .input(targets, g.targets_len())
            .output(grad, g.logits_len())
            .output(losses, g.targets_len());
        // Each is at most the logits' element count, below 2^32.
        args.u32(len)
            .u32(g.cells() as u32)
            .u32(g.classes as u32)
            .f32(g.normalizer);
        self.launch(NAME, elementwise(len), &args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{down, gpu, up};

    fn geom() -> MaskLossGeom {
        MaskLossGeom {
            rois: 2,
            classes: 3,
            side: 2,
            normalizer: 4.0,
        }
    }

    #[test]
    fn bad_geometries_and_short_buffers_are_errors() {
        let gpu = gpu();
        let g = geom();
        let (x, classes, targets) = (up(&gpu, &[0.0; 24]), up(&gpu, &[1.0]), up(&gpu, &[0.0; 8]));
        let (mut grad, mut losses) = (up(&gpu, &[0.0; 24]), up(&gpu, &[0.0; 8]));
        let err = gpu
            .mask_loss(&g, &x, &classes, &targets, &mut grad, &mut losses)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel mask_loss: roi_classes has 1 elements, needs at least 2"
        );
        let bad = MaskLossGeom {
            normalizer: 0.0,
            ..g
        };
        let err = gpu
            .mask_loss(&bad, &x, &classes, &targets, &mut grad, &mut losses)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel mask_loss: mask_loss: normalizer must be positive and finite, got 0"
        );
    }

    /// RoI 0 scores channel 2 (the by-hand values at x = 0: ln 2 and
    /// `(1/2 - t)` over the normalizer); RoI 1 is a placeholder: zeros.
    #[test]
    fn the_class_channel_is_scored_and_a_placeholder_is_not() {
        let gpu = gpu();
        let g = geom();
        let (x, classes) = (up(&gpu, &[0.0; 24]), up(&gpu, &[2.0, -1.0]));
        let targets = up(&gpu, &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0]);
        let (mut grad, mut losses) = (up(&gpu, &[5.0; 24]), up(&gpu, &[5.0; 8]));
        gpu.mask_loss(&g, &x, &classes, &targets, &mut grad, &mut losses)
            .unwrap();
        let l = std::f32::consts::LN_2 / 4.0;
        assert_eq!(down(&gpu, &losses), [l, l, l, l, 0.0, 0.0, 0.0, 0.0]);
        let mut want = [0.0; 24];
        want[8..12].copy_from_slice(&[-0.125, 0.125, 0.125, -0.125]);
        assert_eq!(down(&gpu, &grad), want);
    }
}
