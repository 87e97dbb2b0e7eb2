//! Loading trained weights (`-o weights=PATH`, PaddleDetection's key) into a
//! model for `eval` and `infer`. Unlike the transfer-learning rules for
//! `pretrain_weights`, nothing may be skipped here: every parameter of the
//! model must be in the checkpoint with the model's shape, because a
//! half-loaded detector would silently score and draw nonsense.

use std::path::Path;

use pulsefocus_formats::{load_checkpoint, Error, Result};

use crate::backend::Backend;
use crate::models::ConvNet;

/// Loads every parameter of `model` from the checkpoint at `path`: a
/// `.pdparams`, a directory of per-variable files, a `.tar`, a
/// `.safetensors`, or a snapshot stem without its `.pdparams` suffix, as
/// PaddleDetection accepts. Names extra to the model are ignored (a training
/// snapshot may hold more); a missing parameter, one of another shape or one
/// that is not a float is an error naming the file and the parameter.
/// Returns the checkpoint reader's warnings, for the caller to show.
pub fn load_weights<B: Backend>(model: &mut ConvNet<B>, path: &Path) -> Result<Vec<String>> {
    let checkpoint = load_checkpoint(path)?;
    for slot in model.slots().to_vec() {
        let spec = &slot.param.spec;
        let place = format!("parameter {}", spec.name);
        let tensor = checkpoint.get(&spec.name).ok_or_else(|| {
            Error::at(
                path,
                &place,
                format!(
                    "missing: the model needs it with shape {:?} (are these weights of this config's model?)",
                    spec.shape
                ),
            )
        })?;
        if tensor.shape() != spec.shape.as_slice() {
            return Err(Error::at(
                path,
                &place,
                format!(
                    "has shape {:?} but the model needs {:?} (weights for another num_classes or model size?)",
                    tensor.shape(),
                    spec.shape
                ),
            ));
        }
        if !tensor.dtype().is_float() {
            return Err(Error::at(
                path,
                &place,
                format!("is {}, not a float tensor", tensor.dtype().name()),
            ));
        }
        model
            .set_param(&spec.name, &tensor.to_f32_vec())
            .map_err(|e| Error::at(path, &place, e.to_string()))?;
    }
    Ok(checkpoint.warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{Yolov3, Yolov3Spec};
    use crate::CpuBackend;
    use pulsefocus_formats::{save_checkpoint, Checkpoint, Format};

    #[test]
    fn a_saved_model_loads_back_exactly_from_its_stem() {
        let cpu = CpuBackend::new();
        let trained = Yolov3::new(&cpu, Yolov3Spec::tiny(3), 1);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("model_final.pdparams");
        save_checkpoint(&trained.net.to_checkpoint(), &file, Format::Pdparams).unwrap();

        let mut fresh = Yolov3::new(&cpu, Yolov3Spec::tiny(3), 2);
        load_weights(&mut fresh.net, &dir.path().join("model_final")).unwrap();
        for slot in trained.net.slots() {
            let name = &slot.param.spec.name;
            assert_eq!(
                fresh.net.param_values(name),
                trained.net.param_values(name),
                "{name}"
            );
        }
    }

    #[test]
    fn weights_of_another_class_count_name_the_parameter() {
        let cpu = CpuBackend::new();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("five.pdparams");
        let five = Yolov3::new(&cpu, Yolov3Spec::tiny(5), 1);
        save_checkpoint(&five.net.to_checkpoint(), &file, Format::Pdparams).unwrap();

        let mut three = Yolov3::new(&cpu, Yolov3Spec::tiny(3), 1);
        let message = load_weights(&mut three.net, &file).unwrap_err().to_string();
        assert!(message.contains("five.pdparams"), "{message}");
        assert!(message.contains("yolo_output"), "{message}");
        assert!(message.contains("has shape"), "{message}");
    }

    #[test]
    fn a_missing_parameter_is_named() {
        let cpu = CpuBackend::new();
        let model = Yolov3::new(&cpu, Yolov3Spec::tiny(3), 1);
        let full = model.net.to_checkpoint();
        let dropped = model.net.slots()[0].param.spec.name.clone();
        let mut partial = Checkpoint::new();
        for (name, tensor) in full.iter().filter(|(name, _)| *name != dropped) {
            partial.insert(name, tensor.clone());
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("partial.safetensors");
        save_checkpoint(&partial, &file, Format::Safetensors).unwrap();

        let mut target = Yolov3::new(&cpu, Yolov3Spec::tiny(3), 1);
        let message = load_weights(&mut target.net, &file)
            .unwrap_err()
            .to_string();
        assert!(message.contains(&dropped), "{message}");
        assert!(message.contains("missing"), "{message}");
    }

    #[test]
    fn a_missing_file_is_an_error_not_a_panic() {
        let cpu = CpuBackend::new();
        let mut model = Yolov3::new(&cpu, Yolov3Spec::tiny(3), 1);
        let message = load_weights(&mut model.net, Path::new("no/such/weights"))
            .unwrap_err()
            .to_string();
        assert!(message.contains("no/such/weights"), "{message}");
    }
}
