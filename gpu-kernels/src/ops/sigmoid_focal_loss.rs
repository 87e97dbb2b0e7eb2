//! RetinaNet's focal loss over one level (`device/src/sigmoid_focal_loss.rs`,
//! core's `FocalLossGeom`): a thread per logit writing its loss and its
//! gradient.
use pulsefocus_core::backend::FocalLossGeom;

use super::{elementwise, fail, index_count, need_len};
use crate::driver::KernelArgs;
use crate::{DeviceBuffer, Gpu, GpuError};

impl Gpu {
    /// `losses` and `grad` (both overwritten, shaped as `logits`) from the
    /// level's `logits` and the anchors' `labels`.
    pub fn sigmoid_focal_loss(
        &self,
        g: &FocalLossGeom,
        logits: &DeviceBuffer,
        labels: &DeviceBuffer,
        grad: &mut DeviceBuffer,
        losses: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        const NAME: &str = "sigmoid_focal_loss";
        g.validate().or_else(|message| fail(NAME, message))?;
        let len = index_count(NAME, "logits", g.logits_len())?;
        for (arg, got, want) in [
            ("logits", logits.len(), g.logits_len()),
            ("labels", labels.len(), g.anchors()),
            ("grad", grad.len(), g.logits_len()),
            ("losses", losses.len(), g.logits_len()),
        ] {
            need_len(NAME, arg, got, want)?;
        }
        if len == 0 {
            return Ok(());
        }
        let mut args = KernelArgs::new();
        args.input(logits, g.logits_len())
            .input(labels, g.anchors())
            .output(grad, g.logits_len())
            .output(losses, g.logits_len());
        // Each is at most the logits' element count, below 2^32.
        args.u32(len)
            .u32((g.height * g.width) as u32)
            .u32(g.classes as u32)
            .u32(g.anchors_per_cell as u32)
            .f32(g.gamma)
            .f32(g.alpha)
            .f32(g.normalizer);
        self.launch(NAME, elementwise(len), &args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{down, gpu, up};

    fn geom(batch: usize) -> FocalLossGeom {
        FocalLossGeom {
            batch,
            anchors_per_cell: 2,
            classes: 3,
            height: 2,
            width: 1,
            gamma: 2.0,
            alpha: 0.25,
            normalizer: 1.0,
        }
    }

    #[test]
    fn bad_geometries_and_short_buffers_are_errors() {
        let gpu = gpu();
        let g = geom(1);
        let (x, labels) = (up(&gpu, &[0.0; 12]), up(&gpu, &[0.0; 3]));
        let (mut grad, mut losses) = (up(&gpu, &[0.0; 12]), up(&gpu, &[0.0; 12]));
        let err = gpu
            .sigmoid_focal_loss(&g, &x, &labels, &mut grad, &mut losses)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel sigmoid_focal_loss: labels has 3 elements, needs at least 4"
        );
        let bad = FocalLossGeom {
            normalizer: 0.0,
            ..g
        };
        let err = gpu
            .sigmoid_focal_loss(&bad, &x, &labels, &mut grad, &mut losses)
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("kernel sigmoid_focal_loss: sigmoid_focal_loss: normalizer"),
            "{err}"
        );
    }

    /// An empty batch launches nothing; ignored anchors get zeros.
    #[test]
    fn an_empty_batch_and_ignored_anchors() {
        let gpu = gpu();
        let none = up(&gpu, &[7.0]);
        let mut out = up(&gpu, &[5.0]);
        let mut out2 = up(&gpu, &[5.0]);
        gpu.sigmoid_focal_loss(&geom(0), &none, &none, &mut out, &mut out2)
            .unwrap();
        assert_eq!(
            (down(&gpu, &out), down(&gpu, &out2)),
            (vec![5.0], vec![5.0])
        );
        let (x, labels) = (up(&gpu, &[1.5; 12]), up(&gpu, &[-1.0; 4]));
        let (mut grad, mut losses) = (up(&gpu, &[5.0; 12]), up(&gpu, &[5.0; 12]));
        gpu.sigmoid_focal_loss(&geom(1), &x, &labels, &mut grad, &mut losses)
            .unwrap();
        assert_eq!(
            (down(&gpu, &grad), down(&gpu, &losses)),
            (vec![0.0; 12], vec![0.0; 12])
        );
    }
}
