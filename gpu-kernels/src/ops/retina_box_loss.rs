//! RetinaNet's box loss over one level (`device/src/retina_box_loss.rs`,
//! core's `RetinaBoxLossGeom`): a thread per delta writing its loss and its
//! gradient.
use pulsefocus_core::backend::RetinaBoxLossGeom;

use super::{elementwise, fail, index_count, need_len};
use crate::driver::KernelArgs;
use crate::{DeviceBuffer, Gpu, GpuError};

impl Gpu {
    /// `losses` and `grad` (both overwritten, shaped as `deltas`) from the
    /// level's `deltas` and the anchors' `targets` and `weights`.
    pub fn retina_box_loss(
        &self,
        g: &RetinaBoxLossGeom,
        deltas: &DeviceBuffer,
        targets: &DeviceBuffer,
        weights: &DeviceBuffer,
        grad: &mut DeviceBuffer,
        losses: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        const NAME: &str = "retina_box_loss";
        g.validate().or_else(|message| fail(NAME, message))?;
        let len = index_count(NAME, "deltas", g.deltas_len())?;
        for (arg, got, want) in [
            ("deltas", deltas.len(), g.deltas_len()),
            ("targets", targets.len(), 4 * g.anchors()),
            ("weights", weights.len(), g.anchors()),
            ("grad", grad.len(), g.deltas_len()),
            ("losses", losses.len(), g.deltas_len()),
        ] {
            need_len(NAME, arg, got, want)?;
        }
        if len == 0 {
            return Ok(());
        }
        let mut args = KernelArgs::new();
        args.input(deltas, g.deltas_len())
            .input(targets, 4 * g.anchors())
            .input(weights, g.anchors())
            .output(grad, g.deltas_len())
            .output(losses, g.deltas_len());
        // Each is at most the deltas' element count, below 2^32.
        args.u32(len)
            .u32((g.height * g.width) as u32)
            .u32(g.anchors_per_cell as u32)
            .f32(g.sigma)
            .f32(g.normalizer);
        self.launch(NAME, elementwise(len), &args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{down, gpu, up};

    fn geom(batch: usize) -> RetinaBoxLossGeom {
        RetinaBoxLossGeom {
            batch,
            anchors_per_cell: 2,
            height: 2,
            width: 1,
            sigma: 3.0,
            normalizer: 2.0,
        }
    }

    #[test]
    fn bad_geometries_and_short_buffers_are_errors() {
        let gpu = gpu();
        let g = geom(1);
        let (deltas, targets, weights) = (
            up(&gpu, &[0.0; 16]),
            up(&gpu, &[0.0; 16]),
            up(&gpu, &[1.0; 3]),
        );
        let (mut grad, mut losses) = (up(&gpu, &[0.0; 16]), up(&gpu, &[0.0; 16]));
        let err = gpu
            .retina_box_loss(&g, &deltas, &targets, &weights, &mut grad, &mut losses)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel retina_box_loss: weights has 3 elements, needs at least 4"
        );
        let bad = RetinaBoxLossGeom { sigma: 0.0, ..g };
        let err = gpu
            .retina_box_loss(&bad, &deltas, &targets, &weights, &mut grad, &mut losses)
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("kernel retina_box_loss: retina_box_loss: sigma"),
            "{err}"
        );
    }

    /// An empty batch launches nothing; an anchor of weight 0 gets zeros,
    /// one of weight 1 its smooth-L1 (`|d| = 1 >= 1 / 9`: the linear
    /// branch).
    #[test]
    fn an_empty_batch_and_the_foreground_only() {
        let gpu = gpu();
        let none = up(&gpu, &[7.0]);
        let mut out = up(&gpu, &[5.0]);
        let mut out2 = up(&gpu, &[5.0]);
        gpu.retina_box_loss(&geom(0), &none, &none, &none, &mut out, &mut out2)
            .unwrap();
        assert_eq!(
            (down(&gpu, &out), down(&gpu, &out2)),
            (vec![5.0], vec![5.0])
        );
        let (deltas, targets) = (up(&gpu, &[1.0; 16]), up(&gpu, &[0.0; 16]));
        let weights = up(&gpu, &[1.0, 0.0, 0.0, 0.0]);
        let (mut grad, mut losses) = (up(&gpu, &[5.0; 16]), up(&gpu, &[5.0; 16]));
        gpu.retina_box_loss(
            &geom(1),
            &deltas,
            &targets,
            &weights,
            &mut grad,
            &mut losses,
        )
        .unwrap();
        // Anchor 0 is slot 0 of cell 0: channels 0..4 at cell 0.
        let mut want_grad = vec![0.0; 16];
        let mut want_losses = vec![0.0; 16];
        for c in 0..4 {
            want_grad[2 * c] = 0.5;
            want_losses[2 * c] = (1.0 - 0.5 / 9.0) * 0.5;
        }
        assert_eq!(down(&gpu, &grad), want_grad);
        assert_eq!(down(&gpu, &losses), want_losses);
    }
}
