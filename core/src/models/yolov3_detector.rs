//! YOLOv3 as a [`Detector`]: the network, Paddle's `yolov3_loss` computed on
//! the host from the downloaded head outputs (its gradients uploaded for the
//! backward pass), and detection by `Backend::yolo_detect` where the outputs
//! are.

use super::yolov3::{Yolov3, Yolov3Spec};
use super::ConvNet;
use crate::backend::{Backend, HeadOutput};
use crate::detector::{Detector, Losses};
use crate::tensor::Tensor;
use crate::yolo::{yolov3_loss, Detection, GroundTruth, Head, NmsConfig, YoloConfig};

/// PaddleDetection's names of the YOLOv3 loss terms, in `LossTerms` order.
pub const LOSS_NAMES: &[&str] = &["xy", "wh", "obj", "cls"];

/// The loss settings of PaddleDetection's YOLOv3 head for this model's
/// anchors and classes.
pub fn loss_config(spec: &Yolov3Spec) -> YoloConfig {
    YoloConfig {
        anchors: spec.anchors.clone(),
        anchor_masks: spec.anchor_masks.clone(),
        ..YoloConfig::yolov3(spec.num_classes)
    }
}

/// A YOLOv3 network with its loss and output settings and the host buffers
/// of the loss.
pub struct Yolov3Detector<B: Backend> {
    pub model: Yolov3<B>,
    pub loss: YoloConfig,
    pub nms: NmsConfig,
    host_outputs: [Vec<f32>; 3],
    host_grads: [Vec<f32>; 3],
    output_grads: [Tensor<B>; 3],
}

impl<B: Backend> Yolov3Detector<B> {
    /// `model` with PaddleDetection's default loss and NMS settings.
    pub fn new(model: Yolov3<B>) -> Self {
        let backend = model.backend().clone();
        let empty = || Tensor::zeros(&backend, &[0]);
        Yolov3Detector {
            loss: loss_config(&model.spec),
            nms: NmsConfig::yolov3(),
            model,
            host_outputs: Default::default(),
            host_grads: Default::default(),
            output_grads: [empty(), empty(), empty()],
        }
    }

    /// Shapes of the host and gradient buffers after a forward pass.
    fn size_buffers(&mut self) -> [[usize; 4]; 3] {
        let backend = self.model.backend().clone();
        let mut shapes = [[0; 4]; 3];
        for (level, out) in self.model.outputs().iter().enumerate() {
            let (n, c, h, w) = out.nchw();
            shapes[level] = [n, c, h, w];
            self.host_outputs[level].resize(out.numel(), 0.0);
            self.host_grads[level].resize(out.numel(), 0.0);
            self.output_grads[level].reshape_reuse(&backend, &shapes[level]);
        }
        shapes
    }
}

impl<B: Backend> Detector<B> for Yolov3Detector<B> {
    fn net(&self) -> &ConvNet<B> {
        &self.model.net
    }

    fn net_mut(&mut self) -> &mut ConvNet<B> {
        &mut self.model.net
    }

    fn loss_names(&self) -> &'static [&'static str] {
        LOSS_NAMES
    }

    fn plan(&mut self, batch: usize, size: usize) -> usize {
        let model_bytes = self.model.plan(batch, size);
        self.size_buffers();
        let backend = self.model.backend();
        let host: usize = self
            .host_outputs
            .iter()
            .chain(&self.host_grads)
            .map(|v| v.capacity() * 4)
            .sum();
        let grads: usize = self
            .output_grads
            .iter()
            .map(|t| t.capacity_bytes(backend))
            .sum();
        model_bytes + host + grads
    }

    fn train_pass(&mut self, image: &Tensor<B>, truth: &GroundTruth, _: &[[f32; 3]]) -> Losses {
        let backend = self.model.backend().clone();
        self.model.forward(image);
        let shapes = self.size_buffers();
        for (out, host) in self.model.outputs().iter().zip(&mut self.host_outputs) {
            backend.download(out.buf(), host);
        }
        let heads: Vec<Head> = (0..3)
            .map(|l| Head {
                data: &self.host_outputs[l],
                batch: shapes[l][0],
                height: shapes[l][2],
                width: shapes[l][3],
            })
            .collect();
        let [g0, g1, g2] = &mut self.host_grads;
        let loss = yolov3_loss(&self.loss, &heads, truth, &mut [g0, g1, g2]).mean;
        for (grad, host) in self.output_grads.iter_mut().zip(&self.host_grads) {
            grad.upload(&backend, host);
        }
        self.model.backward(image, &self.output_grads);
        Losses::new(LOSS_NAMES, &[loss.xy, loss.wh, loss.obj, loss.cls])
    }

    fn detect(
        &mut self,
        image: &Tensor<B>,
        original_sizes: &[[u32; 2]],
        _: &[[f32; 3]],
    ) -> Vec<Vec<Detection>> {
        let backend = self.model.backend().clone();
        let outputs = self.model.forward(image);
        let heads: Vec<HeadOutput<B::Buffer>> = outputs
            .iter()
            .map(|out| {
                let (_, _, height, width) = out.nchw();
                HeadOutput {
                    buf: out.buf(),
                    height,
                    width,
                }
            })
            .collect();
        // Paddle's image size input is (height, width).
        let sizes: Vec<[u32; 2]> = original_sizes.iter().map(|&[w, h]| [h, w]).collect();
        // Decode and NMS where the outputs are: only the detections come back.
        backend.yolo_detect(&self.loss, &heads, &sizes, &self.nms)
    }

    fn boxes_normalized(&self) -> bool {
        false
    }
}
