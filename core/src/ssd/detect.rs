//! SSD's output decoder, as Paddle's `detection_output`: each prior's
//! offsets decoded into a box (`box_coder`, normalised), the class scores
//! softmaxed, then multiclass NMS with the background class left out.
//! Boxes stay normalised to `[0, 1]` of the network input, as Paddle's;
//! the caller scales them to the picture.

use crate::box_coder::{decode, BoxXyxy};
use crate::losses::softmax_in_place;
use crate::yolo::{multiclass_nms, Detection, NmsConfig};

/// PaddleDetection's `SSDOutputDecoder` defaults (the SSD configs keep them).
pub fn ssd_nms() -> NmsConfig {
    NmsConfig {
        score_threshold: 0.01,
        nms_top_k: Some(400),
        keep_top_k: Some(200),
        nms_threshold: 0.45,
        normalized: true,
        background_label: Some(0),
    }
}

/// One image's detections from its `location` (`[priors, 4]`) and
/// `confidence` (`[priors, classes]`, logits) predictions.
pub fn detect(
    nms: &NmsConfig,
    priors: &[BoxXyxy],
    variances: &[[f32; 4]],
    classes: usize,
    location: &[f32],
    confidence: &[f32],
) -> Vec<Detection> {
    assert_eq!(location.len(), priors.len() * 4, "detect: location shape");
    assert_eq!(
        confidence.len(),
        priors.len() * classes,
        "detect: confidence shape"
    );
    let boxes: Vec<BoxXyxy> = priors
        .iter()
        .zip(variances)
        .zip(location.chunks_exact(4))
        .map(|((prior, variance), deltas)| {
            let deltas = [deltas[0], deltas[1], deltas[2], deltas[3]];
            decode(prior, variance, &deltas, true)
        })
        .collect();
    let mut scores = confidence.to_vec();
    scores.chunks_exact_mut(classes).for_each(softmax_in_place);
    multiclass_nms(nms, &boxes, &scores, classes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{floats, quads, read};

    /// Paddle's `detection_output` on fixed predictions for two images, at
    /// the SSD configs' settings and with keep_top_k 5
    /// (`core/tests/fixtures/ssd/detection_output.py`): same detections, in
    /// the same order, scores and boxes within float rounding.
    #[test]
    fn detections_equal_paddles() {
        let f = read("ssd/detection_output.json");
        let count = f["priors_count"].as_u64().expect("priors") as usize;
        let classes = f["classes"].as_u64().expect("classes") as usize;
        let priors = quads(&f["priors"]);
        let variances = quads(&f["variances"]);
        let location = floats(&f["location"]);
        let confidence = floats(&f["confidence"]);
        for case in f["cases"].as_array().expect("cases") {
            let mut nms = ssd_nms();
            nms.keep_top_k = Some(case["keep_top_k"].as_u64().expect("keep") as usize);
            for (image, want) in case["detections"]
                .as_array()
                .expect("images")
                .iter()
                .enumerate()
            {
                let got = detect(
                    &nms,
                    &priors,
                    &variances,
                    classes,
                    &location[image * count * 4..][..count * 4],
                    &confidence[image * count * classes..][..count * classes],
                );
                let want = want.as_array().expect("rows");
                assert_eq!(
                    got.len(),
                    want.len(),
                    "image {image}, keep {:?}",
                    nms.keep_top_k
                );
                for (g, w) in got.iter().zip(want) {
                    let w = floats(w);
                    assert_eq!(g.class, w[0] as usize, "{g:?} vs {w:?}");
                    assert!((g.score - w[1]).abs() <= 1e-5, "{g:?} vs {w:?}");
                    for k in 0..4 {
                        assert!((g.bbox[k] - w[2 + k]).abs() <= 1e-5, "{g:?} vs {w:?}");
                    }
                }
            }
        }
    }
}
