//! Detections from a model: a batch of normalised images in, each image's
//! boxes (in its original pixels) out. Shared by evaluation during training,
//! `eval` and `infer`.

use crate::backend::Backend;
use crate::models::Yolov3;
use crate::tensor::Tensor;
use crate::yolo::{detect, Detection, Head, NmsConfig, YoloConfig};

/// The buffers of inference, reused from batch to batch.
pub struct Predictor<B: Backend> {
    image: Tensor<B>,
    outputs: [Vec<f32>; 3],
}

impl<B: Backend> Predictor<B> {
    pub fn new(backend: &B) -> Self {
        Predictor {
            image: Tensor::zeros(backend, &[0]),
            outputs: Default::default(),
        }
    }

    /// Runs `model` in evaluation mode (batch norm with running statistics)
    /// on `images` (`[n, 3, h, w]`); `original_sizes` are each image's
    /// `[width, height]` as decoded. The model is left in evaluation mode.
    #[allow(clippy::too_many_arguments)]
    pub fn predict(
        &mut self,
        model: &mut Yolov3<B>,
        yolo: &YoloConfig,
        nms: &NmsConfig,
        images: &[f32],
        n: usize,
        h: usize,
        w: usize,
        original_sizes: &[[u32; 2]],
    ) -> Vec<Vec<Detection>> {
        let backend = model.backend().clone();
        model.set_training(false);
        self.image.reshape_reuse(&backend, &[n, 3, h, w]);
        self.image.upload(&backend, images);
        let outputs = model.forward(&self.image);
        let mut shapes = [(0, 0); 3];
        for (level, out) in outputs.iter().enumerate() {
            let (_, _, oh, ow) = out.nchw();
            shapes[level] = (oh, ow);
            self.outputs[level].resize(out.numel(), 0.0);
            backend.download(out.buf(), &mut self.outputs[level]);
        }
        let heads: Vec<Head> = (0..3)
            .map(|l| Head {
                data: &self.outputs[l],
                batch: n,
                height: shapes[l].0,
                width: shapes[l].1,
            })
            .collect();
        // Paddle's image size input is (height, width).
        let sizes: Vec<[u32; 2]> = original_sizes.iter().map(|&[w, h]| [h, w]).collect();
        detect(yolo, &heads, &sizes, nms)
    }
}
