//! Mask R-CNN's detections' masks pasted into their pictures
//! (`device/src/mask_paste.rs`, core's `MaskPasteGeom`): a thread per
//! pixel of the parts.
use pulsefocus_core::backend::{MaskPasteGeom, MASK_PASTE_FIELDS};

use super::{elementwise, fail, index_count, need_len};
use crate::driver::KernelArgs;
use crate::{DeviceBuffer, Gpu, GpuError};

impl Gpu {
    /// `pixels`: each detection's part inside its picture, 0/1 (the table
    /// `detections`, the probabilities `probs`).
    pub fn mask_paste(
        &self,
        g: &MaskPasteGeom,
        probs: &DeviceBuffer,
        detections: &DeviceBuffer,
        pixels: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        const NAME: &str = "mask_paste";
        g.validate().or_else(|message| fail(NAME, message))?;
        index_count(NAME, "probs", g.probs_len())?;
        let table = g.detections * MASK_PASTE_FIELDS;
        for (arg, got, want) in [
            ("probs", probs.len(), g.probs_len()),
            ("detections", detections.len(), table),
            ("pixels", pixels.len(), g.pixels),
        ] {
            need_len(NAME, arg, got, want)?;
        }
        let mut args = KernelArgs::new();
        args.input(probs, g.probs_len())
            .input(detections, table)
            .output(pixels, g.pixels);
        // Each is at most the probabilities' count or below 2^24.
        args.u32(g.detections as u32)
            .u32(g.rows as u32)
            .u32(g.channels as u32)
            .u32(g.side as u32)
            .u32(g.pixels as u32)
            .f32(g.threshold);
        self.launch(NAME, elementwise(g.pixels as u32), &args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{down, gpu, up};

    fn geom() -> MaskPasteGeom {
        MaskPasteGeom {
            detections: 1,
            rows: 1,
            channels: 1,
            side: 2,
            pixels: 49,
            threshold: 0.5,
        }
    }

    #[test]
    fn bad_geometries_and_short_buffers_are_errors() {
        let gpu = gpu();
        let g = geom();
        let (probs, table) = (up(&gpu, &[1.0; 4]), up(&gpu, &[0.0; 11]));
        let mut short = up(&gpu, &[0.0; 48]);
        let err = gpu.mask_paste(&g, &probs, &table, &mut short).unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel mask_paste: pixels has 48 elements, needs at least 49"
        );
        let bad = MaskPasteGeom {
            threshold: f32::NAN,
            ..g
        };
        let err = gpu
            .mask_paste(&bad, &probs, &table, &mut short)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel mask_paste: mask_paste: threshold must be finite, got NaN"
        );
    }

    /// M = 2 of ones resized to 7x7 from [0, 0]: along each axis 0, 0.357,
    /// 0.929, 1, 0.929, 0.357, 0, so pixels 2..=4 of rows 2..=4 are set.
    #[test]
    fn a_mask_of_ones_by_hand() {
        let gpu = gpu();
        let probs = up(&gpu, &[1.0; 4]);
        let table = up(
            &gpu,
            &[0.0, 0.0, 0.0, 0.0, 7.0, 7.0, 0.0, 0.0, 7.0, 7.0, 0.0],
        );
        let mut pixels = up(&gpu, &[5.0; 49]);
        gpu.mask_paste(&geom(), &probs, &table, &mut pixels)
            .unwrap();
        let got = down(&gpu, &pixels);
        for (i, &v) in got.iter().enumerate() {
            let (x, y) = (i % 7, i / 7);
            let inside = (2..=4).contains(&x) && (2..=4).contains(&y);
            assert_eq!(v, if inside { 1.0 } else { 0.0 }, "pixel {x}, {y}");
        }
    }
}
