//! Detections from a model: a batch of normalised images in, each image's
//! boxes (in its original pixels) out. Shared by evaluation during training,
//! `eval` and `infer`.

use std::path::{Path, PathBuf};

use pulsefocus_formats::coco::CocoDataSet;
use pulsefocus_formats::image::RgbImage;
use pulsefocus_formats::voc::{VocDataSet, DEFAULT_LABELS};
use pulsefocus_formats::{Error, Result};

use crate::backend::Backend;
use crate::config::{Config, DataSet, Reader};
use crate::data::loader::Mode;
use crate::data::sample::Sample;
use crate::data::transforms::resize::Interp;
use crate::data::Batch;
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

    /// One decoded image through the evaluation pipeline: resized to
    /// `size` x `size` with `interp`, normalised, predicted; boxes come back
    /// in the image's own pixels.
    #[allow(clippy::too_many_arguments)]
    pub fn predict_image(
        &mut self,
        model: &mut Yolov3<B>,
        yolo: &YoloConfig,
        nms: &NmsConfig,
        image: &RgbImage,
        size: usize,
        interp: Interp,
    ) -> Vec<Detection> {
        let original = [image.width, image.height];
        let mut batch = Batch::new(1, size, size, 0, 0, 0);
        batch.put(
            &Sample::from_image(image),
            interp,
            0,
            original,
            &mut Vec::new(),
        );
        let mut per_image =
            self.predict(model, yolo, nms, &batch.images, 1, size, size, &[original]);
        per_image.pop().unwrap_or_default()
    }
}

/// The reader `infer` follows: `TestReader`, else `EvalReader`.
pub fn infer_reader<'a>(config: &'a Config, config_path: &Path) -> Result<&'a Reader> {
    config
        .test_reader
        .as_ref()
        .or(config.eval_reader.as_ref())
        .ok_or_else(|| {
            Error::at(
                config_path,
                "TestReader",
                "missing: no TestReader or EvalReader to take the image size and class names from",
            )
        })
}

/// The evaluation size and interpolation of a reader's `ResizeImage`.
pub fn eval_size(reader: &Reader, config_path: &Path) -> Result<(usize, Interp)> {
    match reader.eval_loader_config().mode {
        Mode::Eval { size, interp } if size > 0 => Ok((size, interp)),
        _ => Err(Error::at(
            config_path,
            "ResizeImage.target_size",
            "the reader needs a ResizeImage with a positive target_size",
        )),
    }
}

/// The class names of a reader's dataset, in class-index order, checked
/// against the config's `num_classes`: a VOC label list (or the 20 default
/// labels), a COCO file's categories, or for an `ImageFolder` the COCO file
/// its `anno_path` names.
pub fn class_names(config: &Config, config_path: &Path, reader: &Reader) -> Result<Vec<String>> {
    let coco_categories = |dataset_dir: &str, anno_path: &str| -> Result<Vec<String>> {
        let coco = CocoDataSet {
            dataset_dir: PathBuf::from(dataset_dir),
            image_dir: PathBuf::new(),
            anno_path: PathBuf::from(anno_path),
            with_background: false,
            allow_empty: true,
            load_crowd: false,
        };
        Ok(coco.load()?.class_names)
    };
    let (names, source) = match &reader.dataset {
        DataSet::VOCDataSet(d) => {
            let voc = VocDataSet {
                dataset_dir: PathBuf::from(&d.dataset_dir),
                anno_path: PathBuf::from(&d.anno_path),
                label_list: PathBuf::from(&d.label_list),
                use_default_label: d.use_default_label,
                with_background: d.with_background,
            };
            (
                voc.class_names()?,
                Path::new(&d.dataset_dir).join(&d.label_list),
            )
        }
        DataSet::COCODataSet(d) => (
            coco_categories(&d.dataset_dir, &d.anno_path)?,
            Path::new(&d.dataset_dir).join(&d.anno_path),
        ),
        DataSet::ImageFolder(d) if d.use_default_label || d.anno_path.is_empty() => (
            DEFAULT_LABELS.iter().map(|s| s.to_string()).collect(),
            config_path.to_path_buf(),
        ),
        DataSet::ImageFolder(d) => (
            coco_categories(&d.dataset_dir, &d.anno_path)?,
            Path::new(&d.dataset_dir).join(&d.anno_path),
        ),
    };
    if names.len() != config.num_classes {
        return Err(Error::at(
            config_path,
            "key num_classes",
            format!(
                "the config says {} classes but {} names {}",
                config.num_classes,
                source.display(),
                names.len()
            ),
        ));
    }
    Ok(names)
}
