//! Detections from a model: a batch of normalised images in, each image's
//! boxes (in its original pixels) out. Shared by evaluation during training,
//! `eval` and `infer`.

use std::path::Path;

use pulsefocus_formats::image::RgbImage;
use pulsefocus_formats::{Error, Result};

use crate::backend::Backend;
use crate::config::{Architecture, Config, Reader};
use crate::data::loader::{Mode, ShortSideResize};
use crate::data::sample::Sample;
use crate::data::transforms::normalize::ChannelNorm;
use crate::data::transforms::resize::{Interp, ShortSideScale};
use crate::data::Batch;
use crate::detector::Detector;
use crate::tensor::Tensor;
use crate::yolo::Detection;

/// The input buffer of inference, reused from batch to batch.
pub struct Predictor<B: Backend> {
    image: Tensor<B>,
}

impl<B: Backend> Predictor<B> {
    pub fn new(backend: &B) -> Self {
        Predictor {
            image: Tensor::zeros(backend, &[0]),
        }
    }

    /// Runs `model` in evaluation mode (batch norm with running statistics)
    /// on `images` (`[n, 3, h, w]`); `original_sizes` are each image's
    /// `[width, height]` as decoded, `im_info` as [`Detector::train_pass`]
    /// takes it. The model is left in evaluation mode.
    pub fn predict(
        &mut self,
        model: &mut dyn Detector<B>,
        images: &[f32],
        [n, h, w]: [usize; 3],
        original_sizes: &[[u32; 2]],
        im_info: &[[f32; 3]],
    ) -> Vec<Vec<Detection>> {
        let backend = model.net().backend().clone();
        model.net_mut().set_training(false);
        self.image.reshape_reuse(&backend, &[n, 3, h, w]);
        self.image.upload(&backend, images);
        model.detect(&self.image, original_sizes, im_info)
    }

    /// One decoded image through the reader's pipeline (`input`): resized,
    /// normalised, predicted; boxes come back in the image's own pixels.
    pub fn predict_image(
        &mut self,
        model: &mut dyn Detector<B>,
        image: &RgbImage,
        input: &ImageInput,
    ) -> Vec<Detection> {
        let original = [image.width, image.height];
        let mut sample = Sample::from_image(image);
        if !input.to_rgb {
            sample.reverse_channels();
        }
        let mut scratch = Vec::new();
        let batch = match &input.resize {
            InputResize::Square { size, interp } => {
                let mut batch = Batch::new(1, *size, *size, 0, 0, 0);
                batch.put(
                    &sample,
                    *interp,
                    &input.normalize,
                    0,
                    original,
                    &mut scratch,
                );
                batch
            }
            InputResize::ShortSide(resize) => {
                // One picture: the first target size, padded as the reader pads.
                let shape = ShortSideScale::new(
                    sample.width(),
                    sample.height(),
                    resize.target_sizes[0],
                    resize.max_size,
                );
                let (w, h) = resize.padded_size(std::iter::once((shape.w, shape.h)));
                let mut batch = Batch::new(1, w, h, 0, 0, 0);
                batch.put_short_side(
                    &sample,
                    &shape,
                    resize.interp,
                    resize.padded_im_info,
                    &input.normalize,
                    0,
                    original,
                    &mut scratch,
                );
                batch
            }
        };
        let shape = [1, batch.h, batch.w];
        let mut per_image = self.predict(model, &batch.images, shape, &[original], &batch.im_info);
        per_image.pop().unwrap_or_default()
    }
}

/// The reader `infer` follows, `TestReader` else `EvalReader`, with its key.
pub fn infer_reader<'a>(
    config: &'a Config,
    config_path: &Path,
) -> Result<(&'static str, &'a Reader)> {
    let [_, eval, test] = config.readers();
    [test, eval]
        .into_iter()
        .find_map(|(name, reader)| Some((name, reader?)))
        .ok_or_else(|| {
            Error::at(
                config_path,
                "TestReader",
                "missing: no TestReader or EvalReader to take the image size and class names from",
            )
        })
}

/// What `infer` does to a picture before the network, as its reader says:
/// DecodeImage's channel order, ResizeImage, NormalizeImage and Permute.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageInput {
    pub resize: InputResize,
    pub to_rgb: bool,
    pub normalize: ChannelNorm,
}

/// How a picture is sized for the network.
#[derive(Debug, Clone, PartialEq)]
pub enum InputResize {
    /// To `size` x `size` (YOLOv3's and SSD's readers).
    Square { size: usize, interp: Interp },
    /// The shorter side to a target, the longer capped, padded (the R-CNN
    /// readers: ResizeImage with `max_size`, PadBatch).
    ShortSide(ShortSideResize),
}

impl ImageInput {
    /// The input of `reader`, whose key is `name`, for architecture `arch`.
    pub fn of_reader(
        reader: &Reader,
        name: &str,
        config_path: &Path,
        arch: Architecture,
    ) -> Result<ImageInput> {
        let loader = reader.eval_loader_config(config_path, name, arch)?;
        let resize = match (loader.short_side, loader.mode) {
            (Some(resize), _) => InputResize::ShortSide(resize),
            (None, Mode::Eval { size, interp }) => InputResize::Square { size, interp },
            (None, Mode::Train(_)) => unreachable!("eval_loader_config gives an evaluation mode"),
        };
        Ok(ImageInput {
            resize,
            to_rgb: loader.to_rgb,
            normalize: loader.normalize,
        })
    }
}

/// The class names of a reader's dataset, in class-index order
/// (`DataSet::class_names`), checked against the config's `num_classes`.
pub fn class_names(config: &Config, config_path: &Path, reader: &Reader) -> Result<Vec<String>> {
    let names = reader.dataset.class_names()?;
    config.check_num_classes(config_path, &names, &reader.dataset.class_names_from())?;
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load;

    /// `infer` follows the TestReader: its decode order, size, interpolation
    /// and normalisation, not the EvalReader's.
    #[test]
    fn infer_takes_its_input_from_the_test_reader() {
        let dir = tempfile::tempdir().unwrap();
        let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/demo.ron");
        let path = dir.path().join("c.ron");
        let config = format!(
            r#"(
    _BASE_: ["{}"],
    TestReader: (
        dataset: ImageFolder(),
        sample_transforms: [
            DecodeImage(to_rgb: false),
            ResizeImage(target_size: 96, interp: 0),
            Permute(to_bgr: true, channel_first: true),
            NormalizeImage(mean: [127.5, 127.5, 127.5], std: [127.5, 127.5, 127.5], is_scale: false, is_channel_first: true),
        ],
    ),
)"#,
            demo.display()
        );
        std::fs::write(&path, config).unwrap();
        let config = load(&path, &[]).unwrap();
        let (name, reader) = infer_reader(&config, &path).unwrap();
        assert_eq!(name, "TestReader");
        let input = ImageInput::of_reader(reader, name, &path, config.arch()).unwrap();
        let normalize = ChannelNorm::IDENTITY
            .then_reverse()
            .then_normalize([127.5; 3], [127.5; 3], false);
        assert_eq!(
            input,
            ImageInput {
                resize: InputResize::Square {
                    size: 96,
                    interp: Interp::Nearest,
                },
                to_rgb: false,
                normalize,
            }
        );
    }
}
