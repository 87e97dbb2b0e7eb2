//! Snapshots in PaddleDetection 2.x's layout: `<stem>.pdparams` holds the
//! model's parameters under their legacy names (readable by `paddle.load` and
//! `load_program_state`), `<stem>.pdopt` the optimizer state: per trained
//! parameter its state tensors under Paddle's accumulator names
//! (`<name>_velocity_0` for momentum, `<name>_mean_square_0` and
//! `<name>_momentum_0` for RMSProp), and `LR_Scheduler` with the
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

/// The optimizer state of every trained parameter as `(key, shape, values)`,
/// keys as Paddle names its accumulators.
fn optimizer_state<B: Backend>(trainer: &Trainer<B>) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let suffixes = trainer.config.optimizer.state_suffixes();
    let mut state = Vec::new();
    for (index, slot) in trainer.model.net().slots().iter().enumerate() {
        let spec = &slot.param.spec;
        for (suffix, values) in suffixes.iter().zip(trainer.optimizer_state(index)) {
            state.push((format!("{}{suffix}", spec.name), spec.shape.clone(), values));
        }
    }
    state
}

/// Writes the model and optimizer state at iteration `trainer.step`.
pub fn save<B: Backend>(trainer: &Trainer<B>, paths: &SnapshotPaths, seed: u64) -> Result<()> {
    let mut optimizer = Checkpoint::new();
    for (key, shape, values) in optimizer_state(trainer) {
        optimizer.insert(key, RawTensor::from_f32(shape, &values));
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
        &trainer.model.net().to_checkpoint(),
        &paths.params,
        Format::Pdparams,
    )
}

/// The name of the first parameter, running statistic or optimizer state
/// holding a NaN or infinity; such a state is not worth a snapshot.
pub fn first_non_finite<B: Backend>(trainer: &Trainer<B>) -> Option<String> {
    let model = trainer.model.net().to_checkpoint();
    let params = model
        .iter()
        .find(|(_, t)| t.to_f32_vec().iter().any(|v| !v.is_finite()))
        .map(|(name, _)| name.to_string());
    params.or_else(|| {
        optimizer_state(trainer)
            .into_iter()
            .find(|(_, _, values)| values.iter().any(|v| !v.is_finite()))
            .map(|(key, _, _)| key)
    })
}

/// Restores a snapshot written by [`save`]: every parameter and velocity, and
/// the iteration to continue from (returned with the seed it was run with).
pub fn restore<B: Backend>(
    trainer: &mut Trainer<B>,
    paths: &SnapshotPaths,
) -> Result<(u64, Option<u64>)> {
    let params = load_checkpoint(&paths.params)?;
    for slot in trainer.model.net().slots().to_vec() {
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
            .net_mut()
            .set_param(name, &tensor.to_f32_vec())
            .map_err(|e| Error::at(&paths.params, format!("variable {name}"), e.to_string()))?;
    }
    let optimizer = load_checkpoint(&paths.optimizer)?;
    let suffixes = trainer.config.optimizer.state_suffixes();
    for (index, slot) in trainer.model.net().slots().to_vec().iter().enumerate() {
        for (which, suffix) in suffixes.iter().enumerate() {
            let key = format!("{}{suffix}", slot.param.spec.name);
            if let Some(v) = optimizer.get(&key) {
                if !trainer.set_optimizer_state(index, which, &v.to_f32_vec()) {
                    return Err(Error::at(
                        &paths.optimizer,
                        key,
                        "does not fit the model's parameter",
                    ));
                }
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
