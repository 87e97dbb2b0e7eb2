//! SSD prediction on the device (Paddle's `detection_output`): every prior's
//! offsets decoded into a normalised box and its class logits softmaxed
//! (`device/src/ssd_decode.rs`), then multiclass NMS ([`super::nms`]); what
//! core's `ssd::detect` does per image on the CPU, with only the detections
//! downloaded.
use pulsefocus_core::yolo::{Detection, NmsConfig};

use super::{elementwise, need_len};
use crate::driver::KernelArgs;
use crate::{DeviceBuffer, Gpu, GpuError};

impl Gpu {
    /// The detections of `images` images from their `location` (`[N, P,
    /// 4]` offsets) and `confidence` (`[N, P, classes]` logits) predictions
    /// against `priors` and `variances` (`[P, 4]` each, normalised x1, y1,
    /// x2, y2), `shape` = `[images, priors, classes]`. Boxes stay
    /// normalised; the background class is `nms.background_label`.
    pub fn ssd_detect(
        &self,
        nms: &NmsConfig,
        priors: &DeviceBuffer,
        variances: &DeviceBuffer,
        location: &DeviceBuffer,
        confidence: &DeviceBuffer,
        shape @ [images, priors_count, classes]: [usize; 3],
    ) -> Result<Vec<Vec<Detection>>, GpuError> {
        const NAME: &str = "ssd_detect";
        // Checks the sizes of the whole batch before any work; the NMS plan
        // keeps images * priors * classes below 2^30, so every length here
        // fits the kernels' u32 indexing.
        if super::nms::plan_for(shape, nms)?.is_none() {
            return Ok(vec![Vec::new(); images]);
        }
        let rows = images * priors_count;
        let (box_len, score_len) = (rows * 4, rows * classes);
        need_len(NAME, "priors", priors.len(), priors_count * 4)?;
        need_len(NAME, "variances", variances.len(), priors_count * 4)?;
        need_len(NAME, "location", location.len(), box_len)?;
        need_len(NAME, "confidence", confidence.len(), score_len)?;
        let mut boxes = self.alloc::<f32>(box_len)?;
        let mut scores = self.alloc::<f32>(score_len)?;
        let mut args = KernelArgs::new();
        args.input(location, box_len)
            .input(priors, priors_count * 4)
            .input(variances, priors_count * 4)
            .output(&mut boxes, box_len)
            .u32(images as u32)
            .u32(priors_count as u32);
        self.launch("ssd_decode", elementwise(rows as u32), &args)?;
        let mut args = KernelArgs::new();
        args.input(confidence, score_len)
            .output(&mut scores, score_len)
            .u32(rows as u32)
            .u32(classes as u32);
        self.launch("softmax_rows", elementwise(rows as u32), &args)?;
        self.multiclass_nms(&boxes, &scores, shape, nms)
    }
}

#[cfg(test)]
mod tests {
    use crate::ops::testing::{gpu, up, values};
    use pulsefocus_core::ssd::ssd_nms;

    #[test]
    fn short_buffers_and_oversized_batches_are_errors() {
        let gpu = gpu();
        let (priors, variances) = (up(&gpu, &values(12, 1)), up(&gpu, &[0.1; 12]));
        let location = up(&gpu, &values(24, 2));
        let confidence = up(&gpu, &values(17, 3));
        let detect = |shape| {
            gpu.ssd_detect(
                &ssd_nms(),
                &priors,
                &variances,
                &location,
                &confidence,
                shape,
            )
        };
        let err = detect([2, 3, 3]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel ssd_detect: confidence has 17 elements, needs at least 18"
        );
        assert!(detect([1, 4, 2])
            .unwrap_err()
            .to_string()
            .contains("priors has 12"));
        assert!(detect([4096, 1 << 10, 1 << 10])
            .unwrap_err()
            .to_string()
            .contains("must be 1..=2^30 scores"));
        assert_eq!(detect([2, 0, 3]).unwrap(), vec![Vec::new(), Vec::new()]);
    }
}
