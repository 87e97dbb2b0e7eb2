//! Snapshots in PaddleDetection 2.x's layout: `<stem>.pdparams` holds the
//! model's parameters under their legacy names (readable by `paddle.load` and
//! `load_program_state`), `<stem>.pdopt` the optimizer state: one velocity per
//! trained parameter as `<name>_velocity_0`, and `LR_Scheduler` with the
//! iteration reached. Both are written to a temporary name and renamed, the
//! `.pdopt` first, so a `.pdparams` on disk always has its optimizer state.

use std::path::{Path, PathBuf};

use pulsefocus_formats::{
    load_checkpoint, save_checkpoint, Checkpoint, Error, Format, RawTensor, Result,
};
use serde_json::json;

use crate::backend::Backend;
use crate::train::Trainer;

/// The two files of a snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotPaths {
    pub params: PathBuf,
    pub optimizer: PathBuf,
}

impl SnapshotPaths {
    /// From `output/cfg/100`, `output/cfg/100.pdparams` or `.pdopt`.
    pub fn from_stem(path: &Path) -> Self {
        let stem = match path.extension().and_then(|e| e.to_str()) {
            Some("pdparams" | "pdopt") => path.with_extension(""),
            _ => path.to_path_buf(),
        };
        let with = |ext: &str| {
            let mut s = stem.clone().into_os_string();
            s.push(ext);
            PathBuf::from(s)
        };
        SnapshotPaths {
            params: with(".pdparams"),
            optimizer: with(".pdopt"),
        }
    }
}

/// The velocity key PaddlePaddle's Momentum optimizer uses.
fn velocity_name(param: &str) -> String {
    format!("{param}_velocity_0")
}

/// Writes the model and optimizer state at iteration `trainer.step`.
pub fn save<B: Backend>(trainer: &Trainer<B>, paths: &SnapshotPaths, seed: u64) -> Result<()> {
    let mut optimizer = Checkpoint::new();
    for (index, slot) in trainer.model.slots().iter().enumerate() {
        if let Some(v) = trainer.velocity(index) {
            optimizer.insert(
                velocity_name(&slot.param.spec.name),
                RawTensor::from_f32(slot.param.spec.shape.clone(), &v),
            );
        }
    }
    let step = trainer.step;
    optimizer.metadata.insert(
        "LR_Scheduler".into(),
        json!({
            "last_epoch": step,
            "last_lr": trainer.config.schedule.lr_at(step.saturating_sub(1)),
        }),
    );
    optimizer
        .metadata
        .insert("pulsefocus_seed".into(), json!(seed));
    save_checkpoint(&optimizer, &paths.optimizer, Format::Pdparams)?;
    save_checkpoint(
        &trainer.model.to_checkpoint(),
        &paths.params,
        Format::Pdparams,
    )
}

/// The name of the first parameter, running statistic or velocity holding a
/// NaN or infinity; such a state is not worth a snapshot.
pub fn first_non_finite<B: Backend>(trainer: &Trainer<B>) -> Option<String> {
    let model = trainer.model.to_checkpoint();
    let params = model
        .iter()
        .find(|(_, t)| t.to_f32_vec().iter().any(|v| !v.is_finite()))
        .map(|(name, _)| name.to_string());
    params.or_else(|| {
        trainer
            .model
            .slots()
            .iter()
            .enumerate()
            .find_map(|(i, slot)| {
                let velocity = trainer.velocity(i)?;
                velocity
                    .iter()
                    .any(|v| !v.is_finite())
                    .then(|| velocity_name(&slot.param.spec.name))
            })
    })
}

/// Restores a snapshot written by [`save`]: every parameter and velocity, and
/// the iteration to continue from (returned with the seed it was run with).
pub fn restore<B: Backend>(
    trainer: &mut Trainer<B>,
    paths: &SnapshotPaths,
) -> Result<(u64, Option<u64>)> {
    let params = load_checkpoint(&paths.params)?;
    for slot in trainer.model.slots().to_vec() {
        let name = &slot.param.spec.name;
        let tensor = params.get(name).ok_or_else(|| {
            Error::at(
                &paths.params,
                format!("variable {name}"),
                "missing from the snapshot",
            )
        })?;
        trainer
            .model
            .set_param(name, &tensor.to_f32_vec())
            .map_err(|e| Error::at(&paths.params, format!("variable {name}"), e.to_string()))?;
    }
    let optimizer = load_checkpoint(&paths.optimizer)?;
    for (index, slot) in trainer.model.slots().to_vec().iter().enumerate() {
        let key = velocity_name(&slot.param.spec.name);
        if let Some(v) = optimizer.get(&key) {
            if !trainer.set_velocity(index, &v.to_f32_vec()) {
                return Err(Error::at(
                    &paths.optimizer,
                    key,
                    "does not fit the model's parameter",
                ));
            }
        }
    }
    let step = optimizer
        .metadata
        .get("LR_Scheduler")
        .and_then(|s| s.get("last_epoch"))
        .and_then(|e| e.as_u64())
        .ok_or_else(|| {
            Error::at(
                &paths.optimizer,
                "LR_Scheduler.last_epoch",
                "missing: not a pulsefocus or PaddleDetection snapshot",
            )
        })?;
    let seed = optimizer
        .metadata
        .get("pulsefocus_seed")
        .and_then(|s| s.as_u64());
    trainer.step = step;
    Ok((step, seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems_and_suffixes_name_the_same_snapshot() {
        let a = SnapshotPaths::from_stem(Path::new("out/cfg/100"));
        let b = SnapshotPaths::from_stem(Path::new("out/cfg/100.pdparams"));
        let c = SnapshotPaths::from_stem(Path::new("out/cfg/100.pdopt"));
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a.params, Path::new("out/cfg/100.pdparams"));
        assert_eq!(a.optimizer, Path::new("out/cfg/100.pdopt"));
        let model_final = SnapshotPaths::from_stem(Path::new("out/demo/model_final"));
        assert_eq!(
            model_final.params,
            Path::new("out/demo/model_final.pdparams")
        );
    }
}
