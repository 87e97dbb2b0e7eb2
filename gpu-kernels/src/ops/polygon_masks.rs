//! Mask R-CNN's mask targets drawn from polygons
//! (`device/src/polygon_masks.rs`, core's `PolygonMaskGeom`): a thread per
//! mask column.
use pulsefocus_core::backend::PolygonMaskGeom;

use super::{elementwise, fail, index_count, need_len};
use crate::driver::KernelArgs;
use crate::{DeviceBuffer, Gpu, GpuError};

impl Gpu {
    /// `masks` (`[rois, side, side]`, overwritten): each RoI's polygons
    /// (the tables `points`, `polygons`, `roi_polygons`) drawn and OR-ed.
    pub fn polygon_masks(
        &self,
        g: &PolygonMaskGeom,
        points: &DeviceBuffer,
        polygons: &DeviceBuffer,
        roi_polygons: &DeviceBuffer,
        masks: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        const NAME: &str = "polygon_masks";
        g.validate().or_else(|message| fail(NAME, message))?;
        // The kernel indexes the masks, and the tables' entries are floats.
        index_count(NAME, "masks", g.masks_len())?;
        for (arg, count) in [("points", g.points), ("polygons", g.polygons)] {
            if count >= 1 << 24 {
                fail::<()>(NAME, format!("{count} {arg}; the tables index below 2^24"))?;
            }
        }
        for (arg, got, want) in [
            ("points", points.len(), 2 * g.points),
            ("polygons", polygons.len(), 2 * g.polygons),
            ("roi_polygons", roi_polygons.len(), 2 * g.rois),
            ("masks", masks.len(), g.masks_len()),
        ] {
            need_len(NAME, arg, got, want)?;
        }
        let columns = (g.rois * g.side) as u32;
        let mut args = KernelArgs::new();
        args.input(points, 2 * g.points)
            .input(polygons, 2 * g.polygons)
            .input(roi_polygons, 2 * g.rois)
            .output(masks, g.masks_len());
        // Each is below the masks' element count, below 2^32.
        args.u32(g.rois as u32)
            .u32(g.side as u32)
            .u32(g.polygons as u32)
            .u32(g.points as u32);
        self.launch(NAME, elementwise(columns), &args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{down, gpu, up};

    fn geom() -> PolygonMaskGeom {
        PolygonMaskGeom {
            rois: 2,
            side: 4,
            polygons: 1,
            points: 4,
        }
    }

    #[test]
    fn bad_geometries_and_short_buffers_are_errors() {
        let gpu = gpu();
        let g = geom();
        let (points, polygons) = (up(&gpu, &[0.0; 8]), up(&gpu, &[0.0, 4.0]));
        let (short, mut masks) = (up(&gpu, &[0.0, 1.0]), up(&gpu, &[0.0; 32]));
        let err = gpu
            .polygon_masks(&g, &points, &polygons, &short, &mut masks)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel polygon_masks: roi_polygons has 2 elements, needs at least 4"
        );
        let bad = PolygonMaskGeom { side: 0, ..g };
        let err = gpu
            .polygon_masks(&bad, &points, &polygons, &short, &mut masks)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel polygon_masks: polygon_masks: side must be positive"
        );
    }

    /// RoI 0: a square over the left half (pixel centres inside); RoI 1 has
    /// no polygon: zeros over the garbage.
    #[test]
    fn a_half_square_and_an_empty_roi() {
        let gpu = gpu();
        let points = up(&gpu, &[0.0, 0.0, 2.0, 0.0, 2.0, 4.0, 0.0, 4.0]);
        let (polygons, rois) = (up(&gpu, &[0.0, 4.0]), up(&gpu, &[0.0, 1.0, 1.0, 0.0]));
        let mut masks = up(&gpu, &[5.0; 32]);
        gpu.polygon_masks(&geom(), &points, &polygons, &rois, &mut masks)
            .unwrap();
        let row = [1.0, 1.0, 0.0, 0.0];
        let mut want = [row, row, row, row].concat();
        want.extend([0.0; 16]);
        assert_eq!(down(&gpu, &masks), want);
    }
}
