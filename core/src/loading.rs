//! The transfer-learning loading rules: which model parameters take their value
//! from a pretrained checkpoint and which keep their initial value, and why.
//!
//! PaddleDetection 0.5 (`ppdet/utils/checkpoint.py::load_params`) has two rules:
//! a parameter whose name matches a `finetune_exclude_pretrained_params` pattern
//! is not loaded, and a parameter whose shape differs from the checkpoint's is
//! not loaded. We decide one outcome per model parameter, in this precedence:
//!
//! 1. `excluded`: the name matches a pattern (Python `re.match`: a regular
//!    expression anchored at the start of the name only); the first matching
//!    pattern is recorded.
//! 2. `missing`: the checkpoint has no tensor of that name; the parameter keeps
//!    its initial value (Paddle is silent about these; we report them).
//! 3. `shape_mismatch`: both shapes are recorded.
//! 4. `loaded`: converted to the model's f32 when the checkpoint stores another
//!    dtype (Paddle asserts equal dtypes; we convert and say so).
//!
//! Checkpoint tensors that no model parameter names are `unused`.
//!
//! One more rule comes from `tools/train.py`: a model that normalises with
//! affine channels (`P_scale`, `P_offset` and no running statistics, as
//! `norm_type: affine_channel` builds) loading a checkpoint trained with batch
//! norms (`P_mean`, `P_variance` beside them, as ImageNet's
//! `ResNet50_cos_pretrained`) folds the statistics into the pair
//! (`checkpoint.py::load_and_fusebn`): `scale / sqrt(variance + 1e-5)` and
//! `offset - mean * that`, and the statistics count as used. Paddle fuses
//! only when no exclusion pattern is given and every affine channel has its
//! statistics, else it loads the raw scales (a backbone whose features are
//! off by its statistics); pulsefocus fuses each loaded pair whose
//! statistics the checkpoint holds, with or without patterns.

use std::collections::HashMap;
use std::fmt::Write as _;

use std::path::{Path, PathBuf};

use pulsefocus_formats::weights_source::{resolve_weights, Download};
use pulsefocus_formats::{load_checkpoint, Checkpoint, DType, Error};
use regex_automata::meta::Regex;
use regex_automata::{Anchored, Input};
use serde::Serialize;

use crate::backend::Backend;
use crate::config::Config;
use crate::models::{ConvNet, SetParamError};
use crate::params::ParamSpec;
use crate::python_re;

/// The word that stands for the architecture's recommended patterns in
/// `finetune_exclude_pretrained_params` (config file or `-o`).
pub const PRESET: &str = "preset";

/// Below this fraction of the model's values loaded, the report warns loudly:
/// the checkpoint probably belongs to another model.
pub const LOW_LOAD_FRACTION: f64 = 0.5;

/// Patterns people write are a few dozen characters; a longer one (a pasted
/// file, say) is refused before it is compiled, as compiling costs about 100
/// bytes per character.
pub const MAX_PATTERN_CHARS: usize = 10_000;

/// A pattern as an error quotes it: whole when short, else its first 100
/// characters and its length, so a huge pattern is not echoed whole.
fn quoted(pattern: &str) -> String {
    let length = pattern.chars().count();
    if length <= 100 {
        return format!("'{pattern}'");
    }
    let head: String = pattern.chars().take(100).collect();
    format!("'{head}...' ({length} characters)")
}

/// Why the regex engine refused a translated pattern, in one line (the
/// checks of `python_re` leave only its limits: nesting, size).
fn build_error_text(e: &regex_automata::meta::BuildError) -> String {
    if let Some(limit) = e.size_limit() {
        return format!("it compiles to more than the {limit}-byte limit");
    }
    match e.syntax_error() {
        Some(syntax) => {
            let text = syntax.to_string();
            let last = text.lines().last().unwrap_or_default().trim();
            last.strip_prefix("error: ").unwrap_or(last).to_string()
        }
        None => e.to_string(),
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LoadingError {
    /// `pattern` is already quoted (and cut when long).
    #[error("invalid pattern {pattern} in finetune_exclude_pretrained_params: {message}")]
    InvalidPattern { pattern: String, message: String },
    #[error(
        "finetune_exclude_pretrained_params names '{PRESET}' but architecture '{architecture}' \
         has no preset (known: {known})"
    )]
    NoPreset { architecture: String, known: String },
}

/// The transfer-learning guide's table: the parameters that depend on the class
/// count, per model type, as PaddleDetection names them.
pub fn preset_patterns(architecture: &str) -> Option<&'static [&'static str]> {
    PRESETS
        .iter()
        .find(|(arch, _)| *arch == architecture)
        .map(|(_, patterns)| *patterns)
}

/// Architecture names as PaddleDetection configs spell them.
const PRESETS: &[(&str, &[&str])] = &[
    ("FasterRCNN", &["cls_score", "bbox_pred"]),
    ("CascadeRCNN", &["cls_score", "bbox_pred"]),
    ("MaskRCNN", &["cls_score", "bbox_pred", "mask_fcn_logits"]),
    (
        "CascadeMaskRCNN",
        &["cls_score", "bbox_pred", "mask_fcn_logits"],
    ),
    ("RetinaNet", &["retnet_cls_pred_fpn"]),
    ("SSD", &["^conv2d_"]),
    ("YOLOv3", &["yolo_output"]),
];

/// Replaces each `preset` entry by the architecture's recommended patterns,
/// keeping the user's order and dropping repeats.
pub fn expand_presets(
    architecture: &str,
    patterns: &[String],
) -> Result<Vec<String>, LoadingError> {
    let mut out: Vec<String> = Vec::new();
    for pattern in patterns {
        let expanded: Vec<String> = if pattern == PRESET {
            let preset = preset_patterns(architecture).ok_or_else(|| LoadingError::NoPreset {
                architecture: architecture.to_string(),
                known: PRESETS
                    .iter()
                    .map(|(a, _)| *a)
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
            preset.iter().map(|p| p.to_string()).collect()
        } else {
            vec![pattern.clone()]
        };
        for p in expanded {
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    Ok(out)
}

/// Exclusion patterns compiled with Python `re.match` semantics: each is
/// checked and translated on its own (`python_re`), then searched anchored at
/// the start of the name.
#[derive(Debug, Clone, Default)]
pub struct ExcludePatterns {
    patterns: Vec<(String, Regex)>,
}

impl ExcludePatterns {
    pub fn new(patterns: &[String]) -> Result<Self, LoadingError> {
        let patterns = patterns
            .iter()
            .map(|p| {
                let invalid = |message: String| LoadingError::InvalidPattern {
                    pattern: quoted(p),
                    message,
                };
                let length = p.chars().count();
                if length > MAX_PATTERN_CHARS {
                    return Err(invalid(format!(
                        "{length} characters is more than the {MAX_PATTERN_CHARS} allowed"
                    )));
                }
                let translated = python_re::translate(p).map_err(invalid)?;
                let re = Regex::new(&translated).map_err(|e| invalid(build_error_text(&e)))?;
                Ok((p.clone(), re))
            })
            .collect::<Result<_, _>>()?;
        Ok(ExcludePatterns { patterns })
    }

    /// The first pattern (in the user's order) that matches `name`.
    pub fn first_match(&self, name: &str) -> Option<&str> {
        self.patterns
            .iter()
            .find(|(_, re)| re.is_match(Input::new(name).anchored(Anchored::Yes)))
            .map(|(p, _)| p.as_str())
    }

    pub fn patterns(&self) -> impl Iterator<Item = &str> {
        self.patterns.iter().map(|(p, _)| p.as_str())
    }
}

/// What the rules need to know of one checkpoint tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: DType,
}

impl TensorInfo {
    pub fn list(checkpoint: &Checkpoint) -> Vec<TensorInfo> {
        checkpoint
            .iter()
            .map(|(name, t)| TensorInfo {
                name: name.to_string(),
                shape: t.shape.clone(),
                dtype: t.dtype,
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelParam {
    pub name: String,
    pub shape: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Excluded {
    pub name: String,
    pub pattern: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShapeMismatch {
    pub name: String,
    pub model_shape: Vec<usize>,
    pub checkpoint_shape: Vec<usize>,
}

/// A loaded parameter whose checkpoint dtype is not the model's f32.
#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    pub name: String,
    pub from: DType,
}

/// A loaded affine channel (`P_scale`, `P_offset`) whose batch-norm
/// statistics (`P_mean`, `P_variance`) the checkpoint holds: loaded fused.
#[derive(Debug, Clone, PartialEq)]
pub struct FusedNorm {
    pub scale: String,
    pub offset: String,
    pub mean: String,
    pub variance: String,
}

/// Paddle's epsilon in `load_and_fusebn` (its batch norms' default).
pub const FUSE_EPSILON: f32 = 1e-5;

/// One outcome per model parameter, each group in model order, plus the
/// checkpoint's unused tensors sorted by name. Serialises to the `plan --json`
/// schema.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadReport {
    pub model: Vec<ModelParam>,
    pub loaded: Vec<String>,
    pub excluded: Vec<Excluded>,
    pub shape_mismatch: Vec<ShapeMismatch>,
    pub missing: Vec<String>,
    pub unused: Vec<String>,
    /// Loaded parameters that were converted to f32 (not part of the JSON schema).
    #[serde(skip)]
    pub converted: Vec<Converted>,
    /// Loaded affine channels that take the checkpoint's batch-norm
    /// statistics folded in (not part of the JSON schema).
    #[serde(skip)]
    pub fused: Vec<FusedNorm>,
    /// No `pretrain_weights` was given: every parameter is `missing` by
    /// design, which the human report says in one line instead of warning.
    #[serde(skip)]
    pub without_checkpoint: bool,
    /// What the checkpoint reader warned of (an archive member given twice).
    #[serde(skip)]
    pub checkpoint_warnings: Vec<String>,
}

/// Applies the rules to every model parameter (see the module comment).
pub fn plan_loading(
    model: &[ParamSpec],
    checkpoint: &[TensorInfo],
    exclude: &ExcludePatterns,
) -> LoadReport {
    let by_name: HashMap<&str, &TensorInfo> =
        checkpoint.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut report = LoadReport {
        model: model
            .iter()
            .map(|p| ModelParam {
                name: p.name.clone(),
                shape: p.shape.clone(),
            })
            .collect(),
        loaded: Vec::new(),
        excluded: Vec::new(),
        shape_mismatch: Vec::new(),
        missing: Vec::new(),
        unused: Vec::new(),
        converted: Vec::new(),
        fused: Vec::new(),
        without_checkpoint: false,
        checkpoint_warnings: Vec::new(),
    };
    for param in model {
        if let Some(pattern) = exclude.first_match(&param.name) {
            report.excluded.push(Excluded {
                name: param.name.clone(),
                pattern: pattern.to_string(),
            });
            continue;
        }
        let Some(tensor) = by_name.get(param.name.as_str()) else {
            report.missing.push(param.name.clone());
            continue;
        };
        if tensor.shape != param.shape {
            report.shape_mismatch.push(ShapeMismatch {
                name: param.name.clone(),
                model_shape: param.shape.clone(),
                checkpoint_shape: tensor.shape.clone(),
            });
            continue;
        }
        if tensor.dtype != DType::F32 {
            report.converted.push(Converted {
                name: param.name.clone(),
                from: tensor.dtype,
            });
        }
        report.loaded.push(param.name.clone());
    }
    let model_names: std::collections::HashSet<&str> =
        model.iter().map(|p| p.name.as_str()).collect();
    report.fused = fused_norms(model, &model_names, &report.loaded, &by_name);
    let statistics: std::collections::HashSet<&str> = report
        .fused
        .iter()
        .flat_map(|f| [f.mean.as_str(), f.variance.as_str()])
        .collect();
    report.unused = checkpoint
        .iter()
        .filter(|t| !model_names.contains(t.name.as_str()) && !statistics.contains(t.name.as_str()))
        .map(|t| t.name.clone())
        .collect();
    report.unused.sort();
    report.unused.dedup();
    report
}

/// The model's affine channels (a `P_scale` and `P_offset` without `P_mean`)
/// whose two parameters both load and whose statistics `P_mean` and
/// `P_variance` the checkpoint holds in the scale's shape, in model order.
/// `model_names` are `model`'s names.
fn fused_norms(
    model: &[ParamSpec],
    model_names: &std::collections::HashSet<&str>,
    loaded: &[String],
    checkpoint: &HashMap<&str, &TensorInfo>,
) -> Vec<FusedNorm> {
    let loaded: std::collections::HashSet<&str> = loaded.iter().map(String::as_str).collect();
    model
        .iter()
        .filter_map(|param| {
            let prefix = param.name.strip_suffix("scale")?;
            let name = |suffix: &str| format!("{prefix}{suffix}");
            let fused = FusedNorm {
                scale: param.name.clone(),
                offset: name("offset"),
                mean: name("mean"),
                variance: name("variance"),
            };
            let affine = model_names.contains(fused.offset.as_str())
                && !model_names.contains(fused.mean.as_str());
            let both_load =
                loaded.contains(fused.scale.as_str()) && loaded.contains(fused.offset.as_str());
            let has_statistics = [&fused.mean, &fused.variance].iter().all(|n| {
                checkpoint
                    .get(n.as_str())
                    .is_some_and(|t| t.shape == param.shape)
            });
            (affine && both_load && has_statistics).then_some(fused)
        })
        .collect()
}

impl LoadReport {
    /// Fraction of the model's values (elements, not tensors) that load.
    pub fn loaded_value_fraction(&self) -> f64 {
        let numel = |shape: &[usize]| shape.iter().product::<usize>() as f64;
        // fold from +0.0: an empty float `sum()` is -0.0, shown as "-0.0%".
        let total = self.model.iter().fold(0.0, |acc, p| acc + numel(&p.shape));
        if total == 0.0 {
            return 0.0;
        }
        let loaded: std::collections::HashSet<&str> =
            self.loaded.iter().map(String::as_str).collect();
        let loaded_values = self
            .model
            .iter()
            .filter(|p| loaded.contains(p.name.as_str()))
            .fold(0.0, |acc, p| acc + numel(&p.shape));
        loaded_values / total
    }

    /// "loaded 230/241 parameters (95.4% of values); excluded 6 by 'yolo_output';
    /// 0 shape mismatches; 5 unused in checkpoint"
    pub fn summary(&self) -> String {
        let mut s = format!(
            "loaded {}/{} parameters ({:.1}% of values); excluded ",
            self.loaded.len(),
            self.model.len(),
            100.0 * self.loaded_value_fraction()
        );
        // Count per pattern in the order patterns first matched.
        let mut per_pattern: Vec<(&str, usize)> = Vec::new();
        for e in &self.excluded {
            match per_pattern.iter_mut().find(|(p, _)| *p == e.pattern) {
                Some((_, n)) => *n += 1,
                None => per_pattern.push((&e.pattern, 1)),
            }
        }
        if per_pattern.is_empty() {
            s.push('0');
        } else {
            let parts: Vec<String> = per_pattern
                .iter()
                .map(|(p, n)| format!("{n} by '{p}'"))
                .collect();
            s.push_str(&parts.join(", "));
        }
        let mismatches = self.shape_mismatch.len();
        let plural = if mismatches == 1 { "" } else { "es" };
        write!(s, "; {mismatches} shape mismatch{plural}").unwrap();
        if !self.missing.is_empty() {
            write!(
                s,
                "; {} missing from checkpoint (keep initial values)",
                self.missing.len()
            )
            .unwrap();
        }
        write!(s, "; {} unused in checkpoint", self.unused.len()).unwrap();
        if !self.fused.is_empty() {
            write!(
                s,
                "; {} batch norms fused into affine channels",
                self.fused.len()
            )
            .unwrap();
        }
        s
    }

    /// The summary line, a loud warning when little loads, then one table per
    /// non-empty group that did not load, for a person to read.
    pub fn render(&self) -> String {
        if self.without_checkpoint {
            return format!(
                "no pretrain_weights: the model's {} parameters keep their initial values (training from scratch)\n",
                self.model.len()
            );
        }
        let mut out = self.summary();
        out.push('\n');
        for warning in &self.checkpoint_warnings {
            writeln!(out, "warning: {warning}").unwrap();
        }
        let fraction = self.loaded_value_fraction();
        if fraction < LOW_LOAD_FRACTION {
            writeln!(
                out,
                "\n!!! WARNING: only {:.1}% of the model's values load from this checkpoint.\n\
                 !!! Is pretrain_weights the checkpoint of this architecture?",
                100.0 * fraction
            )
            .unwrap();
        }
        if !self.excluded.is_empty() {
            let rows = self
                .excluded
                .iter()
                .map(|e| vec![e.name.clone(), format!("'{}'", e.pattern)])
                .collect();
            table(&mut out, "excluded", &["parameter", "pattern"], rows);
        }
        if !self.shape_mismatch.is_empty() {
            let rows = self
                .shape_mismatch
                .iter()
                .map(|m| {
                    vec![
                        m.name.clone(),
                        format!("{:?}", m.model_shape),
                        format!("{:?}", m.checkpoint_shape),
                    ]
                })
                .collect();
            table(
                &mut out,
                "shape mismatch, not loaded",
                &["parameter", "model shape", "checkpoint shape"],
                rows,
            );
        }
        if !self.missing.is_empty() {
            let shapes: HashMap<&str, &[usize]> = self
                .model
                .iter()
                .map(|p| (p.name.as_str(), p.shape.as_slice()))
                .collect();
            let rows = self
                .missing
                .iter()
                .map(|n| vec![n.clone(), format!("{:?}", shapes[n.as_str()])])
                .collect();
            table(
                &mut out,
                "missing from checkpoint, keep initial values",
                &["parameter", "shape"],
                rows,
            );
        }
        if !self.unused.is_empty() {
            let rows = self.unused.iter().map(|n| vec![n.clone()]).collect();
            table(&mut out, "unused in checkpoint", &["tensor"], rows);
        }
        if !self.fused.is_empty() {
            let rows = self
                .fused
                .iter()
                .map(|f| vec![f.scale.clone(), f.offset.clone()])
                .collect();
            table(
                &mut out,
                "batch-norm statistics fused into affine channels (scale / sqrt(variance + 1e-5), offset - mean * that)",
                &["scale", "offset"],
                rows,
            );
        }
        if !self.converted.is_empty() {
            let rows = self
                .converted
                .iter()
                .map(|c| vec![c.name.clone(), c.from.to_string()])
                .collect();
            table(
                &mut out,
                "converted to float32",
                &["parameter", "checkpoint dtype"],
                rows,
            );
        }
        out
    }
}

/// A checkpoint read from a config's `pretrain_weights`.
pub struct Pretrained {
    /// The local file or folder it was read from (after any download).
    pub path: PathBuf,
    pub checkpoint: Checkpoint,
}

/// What `plan` shows and `train` does before its first step: resolve and read
/// the config's `pretrain_weights` (downloading into `cache_dir` if it is a
/// URL, which `on_download` hears about) and apply the rules to the config's
/// model. Without `pretrain_weights` every parameter is `missing`.
pub fn plan_for_config(
    config_path: &Path,
    config: &Config,
    cache_dir: &Path,
    on_download: &mut dyn FnMut(Download),
) -> Result<(LoadReport, Option<Pretrained>), Error> {
    let key = "key finetune_exclude_pretrained_params";
    let patterns = config
        .exclude_patterns()
        .and_then(|p| ExcludePatterns::new(&p))
        .map_err(|e| Error::at(config_path, key, e.to_string()))?;
    let model = config.model_spec().param_specs();
    let Some(spec) = &config.pretrain_weights else {
        let report = LoadReport {
            without_checkpoint: true,
            ..plan_loading(&model, &[], &patterns)
        };
        return Ok((report, None));
    };
    let path = resolve_weights(spec, cache_dir, on_download)?;
    let checkpoint = load_checkpoint(&path)?;
    if checkpoint.is_empty() {
        return Err(Error::new(&path, "the checkpoint holds no tensors"));
    }
    let report = LoadReport {
        checkpoint_warnings: checkpoint.warnings.clone(),
        ..plan_loading(&model, &TensorInfo::list(&checkpoint), &patterns)
    };
    Ok((report, Some(Pretrained { path, checkpoint })))
}

/// Sets every `loaded` parameter of `model` from the checkpoint (converted to
/// f32; the `fused` affine channels with their statistics folded in); the
/// others keep their values.
pub fn apply_loaded<B: Backend>(
    report: &LoadReport,
    checkpoint: &Checkpoint,
    model: &mut ConvNet<B>,
) -> Result<(), SetParamError> {
    let values = |name: &str| {
        checkpoint
            .get(name)
            .expect("the report's names come from this checkpoint")
            .to_f32_vec()
    };
    let mut values_of: HashMap<&str, Vec<f32>> = HashMap::new();
    for f in &report.fused {
        let (scale, offset) = fuse_norm(
            &values(&f.scale),
            &values(&f.offset),
            &values(&f.mean),
            &values(&f.variance),
        );
        values_of.insert(&f.scale, scale);
        values_of.insert(&f.offset, offset);
    }
    for name in &report.loaded {
        match values_of.get(name.as_str()) {
            Some(v) => model.set_param(name, v)?,
            None => model.set_param(name, &values(name))?,
        }
    }
    Ok(())
}

/// A batch norm's scale and offset with its statistics folded in: the
/// affine channel that computes what the batch norm did at inference.
fn fuse_norm(
    scale: &[f32],
    offset: &[f32],
    mean: &[f32],
    variance: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let fused_scale: Vec<f32> = scale
        .iter()
        .zip(variance)
        .map(|(s, v)| s / (v + FUSE_EPSILON).sqrt())
        .collect();
    let fused_offset = offset
        .iter()
        .zip(mean)
        .zip(&fused_scale)
        .map(|((o, m), s)| o - m * s)
        .collect();
    (fused_scale, fused_offset)
}

/// The widest a table column gets: a longer cell overflows its line rather
/// than widening every line (and a `{:w$}` width over 65535 panics).
const TABLE_COLUMN_MAX: usize = 80;

/// A titled, left-aligned text table.
fn table(out: &mut String, title: &str, header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len()).min(TABLE_COLUMN_MAX);
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_string()
    };
    writeln!(out, "\n{title} ({}):", rows.len()).unwrap();
    writeln!(out, "  {}", line(header.to_vec())).unwrap();
    for row in &rows {
        writeln!(out, "  {}", line(row.iter().map(String::as_str).collect())).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(name: &str, shape: &[usize]) -> ParamSpec {
        ParamSpec::new(name, shape)
    }

    fn info(name: &str, shape: &[usize]) -> TensorInfo {
        TensorInfo {
            name: name.into(),
            shape: shape.to_vec(),
            dtype: DType::F32,
        }
    }

    fn patterns(p: &[&str]) -> ExcludePatterns {
        ExcludePatterns::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn re_match_examples_from_the_spec() {
        let p = patterns(&["yolo_output"]);
        assert!(p.first_match("yolo_output.0.conv.weights").is_some());
        assert!(p.first_match("yolo_block.0.0.0.conv.weights").is_none());
        let p = patterns(&["cls_score"]);
        assert!(p.first_match("cls_score_w").is_some());
        assert!(p.first_match("cls_score_2_w").is_some());
        let p = patterns(&["bbox_pred"]);
        assert!(p.first_match("rpn_bbox_pred_w").is_none());
        let p = patterns(&["^conv2d_"]);
        assert!(p.first_match("conv2d_12.w_0").is_some());
        // `.` is any character, and alternation stays anchored.
        let p = patterns(&["yolo.output", "a|b"]);
        assert!(p.first_match("yoloXoutput").is_some());
        assert!(p.first_match("xb").is_none());
    }

    #[test]
    fn invalid_pattern_is_named() {
        let err = ExcludePatterns::new(&["ok".into(), "bad(".into()]).unwrap_err();
        assert!(err.to_string().contains("'bad('"), "{err}");
    }

    #[test]
    fn presets_expand_in_place() {
        let got = expand_presets("YOLOv3", &["preset".into(), "extra".into()]).unwrap();
        assert_eq!(got, ["yolo_output", "extra"]);
        let got = expand_presets("FasterRCNN", &["cls_score".into(), "preset".into()]).unwrap();
        assert_eq!(got, ["cls_score", "bbox_pred"]);
        let err = expand_presets("Nope", &["preset".into()]).unwrap_err();
        assert!(err.to_string().contains("YOLOv3"), "{err}");
    }

    /// SSD's head convs are unnamed (`conv2d_22.w_0` ...): its preset is
    /// anchored at the start, so that it excludes them and no backbone name
    /// that merely contains `conv2d_`.
    #[test]
    fn ssd_preset_is_the_anchored_conv2d_pattern() {
        let got = expand_presets("SSD", &["preset".into(), "^conv2d_".into()]).unwrap();
        assert_eq!(got, ["^conv2d_"]);
        let patterns = ExcludePatterns::new(&got).unwrap();
        assert!(patterns.first_match("conv2d_22.w_0").is_some());
        assert!(patterns.first_match("conv2d_33.b_0").is_some());
        assert!(patterns.first_match("conv7_1_extra1_weights").is_none());
        assert!(patterns.first_match("x_conv2d_1.w_0").is_none());
    }

    #[test]
    fn precedence_and_report() {
        let model = [
            spec("yolo_output.0.conv.weights", &[75, 1024, 1, 1]),
            spec("a", &[2, 2]),
            spec("b", &[3]),
            spec("c", &[4]),
            spec("d", &[5]),
        ];
        let ckpt = [
            info("zz_unused", &[1]),
            info("yolo_output.0.conv.weights", &[255, 1024, 1, 1]),
            info("a", &[2, 2]),
            TensorInfo {
                dtype: DType::F16,
                ..info("b", &[3])
            },
            info("c", &[2, 2]),
            info("fc7_weights", &[1]),
        ];
        let r = plan_loading(&model, &ckpt, &patterns(&["yolo_output"]));
        assert_eq!(r.loaded, ["a", "b"]);
        assert_eq!(
            r.excluded,
            [Excluded {
                name: "yolo_output.0.conv.weights".into(),
                pattern: "yolo_output".into()
            }]
        );
        assert_eq!(r.shape_mismatch[0].checkpoint_shape, [2, 2]);
        assert_eq!(r.missing, ["d"]);
        assert_eq!(r.unused, ["fc7_weights", "zz_unused"]);
        assert_eq!(r.converted[0].from, DType::F16);
        assert_eq!(
            r.summary(),
            "loaded 2/5 parameters (0.0% of values); excluded 1 by 'yolo_output'; \
             1 shape mismatch; 1 missing from checkpoint (keep initial values); \
             2 unused in checkpoint"
        );
        let text = r.render();
        assert!(text.contains("WARNING"), "{text}");
        assert!(text.contains("[4]          [2, 2]"), "{text}");
        assert!(text.contains("float16"), "{text}");
    }

    #[test]
    fn json_has_exactly_the_plan_schema() {
        let r = plan_loading(
            &[spec("a", &[2]), spec("b", &[1])],
            &[info("a", &[3])],
            &patterns(&["b"]),
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "model": [{"name": "a", "shape": [2]}, {"name": "b", "shape": [1]}],
                "loaded": [],
                "excluded": [{"name": "b", "pattern": "b"}],
                "shape_mismatch": [{"name": "a", "model_shape": [2], "checkpoint_shape": [3]}],
                "missing": [],
                "unused": [],
            })
        );
    }

    #[test]
    fn full_load_has_no_warning() {
        let model = [spec("a", &[10]), spec("b", &[1])];
        let r = plan_loading(&model, &[info("a", &[10]), info("b", &[1])], &patterns(&[]));
        assert_eq!(
            r.summary(),
            "loaded 2/2 parameters (100.0% of values); excluded 0; 0 shape mismatches; \
             0 unused in checkpoint"
        );
        assert!(!r.render().contains("WARNING"));
    }

    /// A tensor name of 65,536 characters or more made a `{:w$}` width
    /// out of range (a panic).
    #[test]
    fn huge_tensor_names_render() {
        let long = "x".repeat(70_000);
        let model = [spec("a", &[1])];
        let r = plan_loading(&model, &[info(&long, &[1])], &patterns(&[]));
        assert!(r.render().contains(&long));
    }

    #[test]
    fn checkpoint_warnings_are_in_the_report() {
        let model = [spec("a", &[1])];
        let r = LoadReport {
            checkpoint_warnings: vec!["m.tar (entry a): the archive holds 2 copies".into()],
            ..plan_loading(&model, &[info("a", &[1])], &patterns(&[]))
        };
        assert!(r
            .render()
            .contains("\nwarning: m.tar (entry a): the archive holds 2 copies\n"));
    }

    #[test]
    fn without_pretrain_weights_the_report_says_so_instead_of_warning() {
        let model = [spec("a", &[10]), spec("b", &[1])];
        let scratch = LoadReport {
            without_checkpoint: true,
            ..plan_loading(&model, &[], &patterns(&[]))
        };
        assert_eq!(
            scratch.render(),
            "no pretrain_weights: the model's 2 parameters keep their initial values \
             (training from scratch)\n"
        );
    }

    /// An affine channel whose batch-norm statistics the checkpoint holds
    /// loads fused and uses them; a batch norm (its model has the
    /// statistics) and an affine channel whose offset is excluded do not
    /// fuse, and the latter's statistics stay unused.
    #[test]
    fn batch_norm_statistics_fuse_into_affine_channels() {
        let model = [
            spec("bn_conv1_scale", &[4]),
            spec("bn_conv1_offset", &[4]),
            spec("bn2a_scale", &[4]),
            spec("bn2a_offset", &[4]),
            spec("bn2a_mean", &[4]),
            spec("bn2a_variance", &[4]),
            spec("bn3a_scale", &[2]),
            spec("bn3a_offset", &[2]),
        ];
        let checkpoint: Vec<TensorInfo> = ["bn_conv1", "bn2a", "bn3a"]
            .iter()
            .flat_map(|p| {
                let n = if *p == "bn3a" { 2 } else { 4 };
                ["scale", "offset", "mean", "variance"].map(|s| info(&format!("{p}_{s}"), &[n]))
            })
            .collect();
        let r = plan_loading(&model, &checkpoint, &patterns(&["bn3a_offset"]));
        assert_eq!(
            r.fused,
            [FusedNorm {
                scale: "bn_conv1_scale".into(),
                offset: "bn_conv1_offset".into(),
                mean: "bn_conv1_mean".into(),
                variance: "bn_conv1_variance".into(),
            }]
        );
        assert_eq!(r.unused, ["bn3a_mean", "bn3a_variance"]);
        assert!(r
            .summary()
            .ends_with("; 1 batch norms fused into affine channels"));
        assert!(r.render().contains("bn_conv1_scale  bn_conv1_offset"));
        // Statistics in another shape are not the channel's: `bn_conv1`
        // loads unfused (`bn3a`, no longer excluded, fuses).
        let mut other = checkpoint.clone();
        other[2].shape = vec![5];
        let r = plan_loading(&model, &other, &patterns(&[]));
        let fused: Vec<&str> = r.fused.iter().map(|f| f.scale.as_str()).collect();
        assert_eq!(fused, ["bn3a_scale"]);
        assert_eq!(r.unused, ["bn_conv1_mean", "bn_conv1_variance"]);
    }

    /// A conv unit normalised by affine channels, loaded from the same unit
    /// trained with batch norms, computes what the batch norm computes at
    /// inference (running statistics) on any input.
    #[test]
    fn a_fused_affine_channel_computes_the_batch_norm() {
        use crate::models::conv_unit::{
            Activation, ConvUnitSpec, NameStyle, Norm, ParamAttr, WeightInit,
        };
        use crate::models::ConvNet;
        use crate::tensor::Tensor;
        let cpu = crate::CpuBackend::new();
        let unit = |norm| ConvUnitSpec {
            prefix: "conv1".into(),
            style: NameStyle::ResNet,
            in_channels: 3,
            out_channels: 5,
            kernel: 3,
            stride: 1,
            padding: None,
            dilation: 1,
            groups: 1,
            norm,
            activation: Activation::Relu,
            init: WeightInit::ConvDefaultNormal,
            weight: ParamAttr::DEFAULT,
        };
        let mut trained = ConvNet::new(&cpu, vec![unit(Norm::BatchNorm(ParamAttr::DEFAULT))], 3);
        let mut rng = crate::data::rng::Rng::from_state(9);
        for (name, low, high) in [
            ("bn_conv1_scale", -2.0, 2.0),
            ("bn_conv1_offset", -1.0, 1.0),
            ("bn_conv1_mean", -1.0, 1.0),
            ("bn_conv1_variance", 0.1, 3.0),
        ] {
            let values: Vec<f32> = (0..5).map(|_| rng.range_f32(low, high)).collect();
            trained.set_param(name, &values).unwrap();
        }
        trained.set_training(false);
        let checkpoint = trained.to_checkpoint();

        let attr = ParamAttr {
            decay: Some(0.0),
            learning_rate: 0.0,
            constant: None,
        };
        let mut affine = ConvNet::new(&cpu, vec![unit(Norm::AffineChannel(attr))], 4);
        let specs: Vec<ParamSpec> = affine
            .slots()
            .iter()
            .map(|s| s.param.spec.clone())
            .collect();
        let report = plan_loading(&specs, &TensorInfo::list(&checkpoint), &patterns(&[]));
        assert_eq!(report.fused.len(), 1);
        assert!(report.unused.is_empty() && report.missing.is_empty());
        apply_loaded(&report, &checkpoint, &mut affine).unwrap();

        let image: Vec<f32> = (0..3 * 6 * 7).map(|_| rng.range_f32(-1.0, 1.0)).collect();
        let input = Tensor::from_host(&cpu, &[1, 3, 6, 7], &image);
        let mut workspace = Tensor::zeros(&cpu, &[0]);
        let expected = trained.units[0]
            .forward(&cpu, &input, &mut workspace)
            .to_host(&cpu);
        let got = affine.units[0]
            .forward(&cpu, &input, &mut workspace)
            .to_host(&cpu);
        for (g, e) in got.iter().zip(&expected) {
            assert!((g - e).abs() <= 1e-5 * (1.0 + e.abs()), "{g} against {e}");
        }
    }

    fn demo_config(overrides: &[&str]) -> (std::path::PathBuf, Config) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/demo.ron");
        let args: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        let o = crate::config::parse_overrides(&args).unwrap();
        let config = crate::config::load(&path, &o).unwrap();
        (path, config)
    }

    #[test]
    fn config_plan_loads_a_checkpoint_of_another_class_count() {
        use crate::models::{Yolov3, Yolov3Spec};
        let dir = tempfile::tempdir().unwrap();
        let ckpt_dir = dir.path().join("small_coco");
        let cpu = crate::CpuBackend::new();
        let source = Yolov3::new(&cpu, Yolov3Spec::small(80), 7);
        pulsefocus_formats::save_checkpoint(
            &source.net.to_checkpoint(),
            &ckpt_dir,
            pulsefocus_formats::Format::Dir,
        )
        .unwrap();
        let weights = format!("pretrain_weights={}", ckpt_dir.display());
        let (path, config) = demo_config(&[&weights]);
        let (report, pretrained) =
            plan_for_config(&path, &config, dir.path(), &mut |_| {}).unwrap();
        let pretrained = pretrained.unwrap();
        assert_eq!(pretrained.path, ckpt_dir);
        assert_eq!(report.excluded.len(), 6, "{}", report.summary());
        assert!(report.excluded.iter().all(|e| e.pattern == "yolo_output"));
        assert_eq!(report.loaded.len(), 241 - 6);
        assert!(report.missing.is_empty() && report.unused.is_empty());

        let mut model = Yolov3::new(&cpu, config.yolov3_spec(), 1);
        let before = model
            .net
            .param_values("yolo_output.0.conv.weights")
            .unwrap();
        apply_loaded(&report, &pretrained.checkpoint, &mut model.net).unwrap();
        let name = "conv1_weights";
        assert_eq!(model.net.param_values(name), source.net.param_values(name));
        assert_eq!(
            model
                .net
                .param_values("yolo_output.0.conv.weights")
                .unwrap(),
            before
        );

        // Without exclusions the class-count outputs are shape mismatches.
        let (path, config) = demo_config(&[&weights, "finetune_exclude_pretrained_params=[]"]);
        let (report, _) = plan_for_config(&path, &config, dir.path(), &mut |_| {}).unwrap();
        assert_eq!(report.shape_mismatch.len(), 6);
    }

    #[test]
    fn config_plan_errors_name_the_cause() {
        let dir = tempfile::tempdir().unwrap();
        let (path, config) = demo_config(&["finetune_exclude_pretrained_params=['(']"]);
        let err = plan_for_config(&path, &config, dir.path(), &mut |_| {})
            .err()
            .unwrap();
        assert!(err.to_string().contains("invalid pattern '('"), "{err}");
        assert!(!err.to_string().contains('\n'), "{err}");
        assert!(
            err.to_string()
                .ends_with("missing ), unterminated subpattern at position 0"),
            "{err}"
        );
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let weights = format!("pretrain_weights={}", empty.display());
        let (path, config) = demo_config(&[&weights]);
        let err = plan_for_config(&path, &config, dir.path(), &mut |_| {})
            .err()
            .unwrap();
        assert!(err.to_string().contains("no tensor"), "{err}");
        for no_weights in [&[][..], &["pretrain_weights="]] {
            let (path, config) = demo_config(no_weights);
            let (report, pretrained) =
                plan_for_config(&path, &config, dir.path(), &mut |_| {}).unwrap();
            assert!(pretrained.is_none());
            assert_eq!(report.missing.len() + report.excluded.len(), 241);
        }
    }

    /// Python's own `re.match` on the spec's examples, a grid of patterns,
    /// malformed and tricky ones, and legacy names: a pattern Python rejects
    /// must be an error here too, and one it accepts must match the same
    /// names, unless it is one of the constructs refused as not supported.
    #[test]
    fn agrees_with_python_re_match() {
        let patterns = [
            "yolo_output",
            "cls_score",
            "bbox_pred",
            "^conv2d_",
            "mask_fcn_logits",
            "retnet_cls_pred_fpn",
            "yolo_block\\.0",
            "yolo.block",
            "stage\\.[0-2]\\.",
            "conv[0-9]+_",
            "(a|yolo)_",
            "fc7|conv1",
            ".*bias$",
            "yolo_output\\.1",
            // Tricky but valid in Python.
            "x|",
            "|x",
            "a|",
            "",
            "()",
            "(?i)YOLO_OUTPUT",
            "(?i:CLS)_score",
            "(?i)(?m)a",
            "(?#comment)(?i)bn",
            "(?P<head>yolo)_output",
            "(?P<a>x)|(?P<b>conv)",
            "conv1$",
            "conv1_weights$",
            ".*bn\\.scale$",
            "a_b\\Z",
            "a{,1}_",
            "a{}",
            "a{1,x",
            "conv{1}",
            "[]a]_b",
            "[a&&b]_b",
            "[^]]",
            "a\\-b",
            "\\<a",
            "conv\\d",
            "conv\\w+\\b",
            "\\x61_b",
            "a(?#x)*_",
            "a*?_b",
            "(?s:.)",
            "(?u)a",
        ];
        // Rejected by Python (checked below, so this list stays honest).
        let malformed = [
            "zzz)|(bn",
            "(bn",
            "a)",
            "[bn",
            "*bn",
            "a**",
            "a{2}*",
            "^*",
            "\\b*",
            "a(?i)b",
            "x|(?i)a",
            "((?i)a)",
            "[z-a]",
            "[\\d-z]",
            "\\q",
            "a\\",
            "\\x6",
            "(?P<1a>x)",
            "(?P<a>x)(?P<a>y)",
            "(?P<a",
            "(?Q)",
            "(?<n>a)",
            "(?L)a",
            "(?-i)a",
            "(?i-i:a)",
            "a{3,2}",
            "(?#unclosed",
        ];
        // Accepted by Python, refused here with an error naming the construct.
        let unsupported = [
            "a(?=_)",
            "a(?!_)",
            "(?<=a)_",
            "(?<!a)_",
            "(a)_\\1",
            "(?P<n>a)_(?P=n)",
            "(a)?(?(1)_|b)",
            "(?>a)_",
            "a*+",
            "(?x) a _ b",
            "(?a)\\w",
            "\\N{DIGIT ONE}",
        ];
        let names = [
            "yolo_output.0.conv.weights",
            "yolo_output.1.conv.bias",
            "yolo_block.0.0.0.conv.weights",
            "yoloXblock.1",
            "cls_score_w",
            "cls_score_2_w",
            "rpn_bbox_pred_w",
            "bbox_pred_w",
            "conv2d_12.w_0",
            "conv5_6_sep_weights",
            "conv1_weights",
            "fc7_weights",
            "stage.2.3.0.conv.weights",
            "stage.3.0.0.bn.scale",
            "retnet_cls_pred_fpn3_w",
            "mask_fcn_logits_w",
            "a_b",
            "conv1",
            "a{}",
            "a{1,x",
            "]_b",
            "&_b",
            "a-b",
            "x",
            "",
        ];
        let all: Vec<&str> = patterns
            .iter()
            .chain(&malformed)
            .chain(&unsupported)
            .copied()
            .collect();
        // One row per pattern: null when Python refuses it.
        let script = "import json, re, sys, warnings\n\
            warnings.simplefilter('ignore')\n\
            d = json.load(sys.stdin)\n\
            def row(p):\n    \
                try:\n        \
                    r = re.compile(p)\n    \
                except (re.error, OverflowError):\n        \
                    return None\n    \
                return [r.match(n) is not None for n in d['names']]\n\
            print(json.dumps([row(p) for p in d['patterns']]))";
        let input = serde_json::json!({"patterns": all, "names": names}).to_string();
        let child = std::process::Command::new("python3")
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) if std::env::var_os("CI").is_none() => {
                println!("skipped: python3 not runnable ({e})");
                return;
            }
            Err(e) => panic!("python3 is required under CI: {e}"),
        };
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let python: Vec<Option<Vec<bool>>> = serde_json::from_slice(&out.stdout).unwrap();
        for (p, row) in all.iter().zip(&python) {
            let ours = ExcludePatterns::new(&[p.to_string()]);
            match (row, ours) {
                (None, Ok(_)) => panic!("Python refuses {p:?} but it compiled here"),
                (None, Err(e)) => {
                    assert!(malformed.contains(p), "Python refuses {p:?} ({e})");
                    assert_eq!(e.to_string().lines().count(), 1, "{e}");
                }
                (Some(_), Err(e)) => {
                    assert!(unsupported.contains(p), "{p:?} refused: {e}");
                    assert!(e.to_string().contains("not supported"), "{e}");
                }
                (Some(row), Ok(ours)) => {
                    assert!(patterns.contains(p), "{p:?} compiled here");
                    for (n, &expected) in names.iter().zip(row) {
                        assert_eq!(
                            ours.first_match(n).is_some(),
                            expected,
                            "re.match({p:?}, {n:?})"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_issue_pattern_is_an_error_and_anchoring_holds() {
        let err = ExcludePatterns::new(&["zzz)|(bn".into()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid pattern 'zzz)|(bn' in finetune_exclude_pretrained_params: \
             unbalanced parenthesis at position 3"
        );
        // An alternative never escapes the anchor.
        let p = patterns(&["zzz|bn"]);
        assert!(p.first_match("stage.0.bn.scale").is_none());
        assert!(p.first_match("bn.scale").is_some());
    }

    #[test]
    fn long_patterns_are_refused_and_quoted_short() {
        let huge = "(".repeat(MAX_PATTERN_CHARS + 1);
        let err = ExcludePatterns::new(&[huge]).unwrap_err().to_string();
        assert!(err.len() < 300, "{err}");
        assert!(
            err.contains(&format!("({} characters)", MAX_PATTERN_CHARS + 1)),
            "{err}"
        );
        // Under the limit, a malformed long pattern is quoted cut as well.
        let long = format!("{}(", "a".repeat(5_000));
        let err = ExcludePatterns::new(&[long]).unwrap_err().to_string();
        assert!(err.len() < 300, "{err}");
        assert!(err.contains("(5001 characters)"), "{err}");
        // Short but huge once compiled: the regex engine's size limit.
        let err = ExcludePatterns::new(&["(a{1000}){1000}".into()])
            .unwrap_err()
            .to_string();
        assert!(err.ends_with("-byte limit"), "{err}");
    }

    /// A classic backtracking matcher for the generated pattern language:
    /// literal characters, `\.` for a literal dot, `.` for any character, each
    /// optionally followed by `*`; anchored at the start like `re.match`.
    fn reference_match(pattern: &[Atom], name: &[char]) -> bool {
        match pattern.split_first() {
            None => true,
            Some((atom, rest)) => {
                let fits = |c: &char| match atom.ch {
                    None => true,
                    Some(l) => *c == l,
                };
                if atom.star {
                    // Zero or more: try every run length, longest first.
                    let run = name.iter().take_while(|c| fits(c)).count();
                    (0..=run).rev().any(|k| reference_match(rest, &name[k..]))
                } else {
                    name.first().is_some_and(fits) && reference_match(rest, &name[1..])
                }
            }
        }
    }

    #[derive(Debug, Clone)]
    struct Atom {
        /// `None` is `.` (any character).
        ch: Option<char>,
        star: bool,
    }

    fn atom() -> impl Strategy<Value = Atom> {
        (
            prop_oneof![
                3 => prop::sample::select(vec!['a', 'b', '0', '_', '.']).prop_map(Some),
                1 => Just(None),
            ],
            prop::bool::weighted(0.2),
        )
            .prop_map(|(ch, star)| Atom { ch, star })
    }

    fn regex_text(atoms: &[Atom]) -> String {
        atoms
            .iter()
            .map(|a| {
                let c = match a.ch {
                    None => ".".to_string(),
                    Some('.') => "\\.".to_string(),
                    Some(c) => c.to_string(),
                };
                if a.star {
                    c + "*"
                } else {
                    c
                }
            })
            .collect()
    }

    fn name() -> impl Strategy<Value = String> {
        "[ab0_.]{0,8}"
    }

    fn model_and_checkpoint() -> impl Strategy<Value = (Vec<ParamSpec>, Vec<TensorInfo>)> {
        // Unique names; each model parameter is in the checkpoint with the same
        // shape, another shape, or not at all; plus extra checkpoint tensors.
        (
            prop::collection::btree_map("[a-c][a-c0-2_.]{0,5}", (1usize..4, 0u8..3), 0..12),
            prop::collection::btree_set("x[a-c0-2]{0,4}", 0..4),
        )
            .prop_map(|(params, extra)| {
                let mut model = Vec::new();
                let mut ckpt = Vec::new();
                for (name, (dim, fate)) in params {
                    model.push(spec(&name, &[dim, 2]));
                    match fate {
                        0 => ckpt.push(info(&name, &[dim, 2])),
                        1 => ckpt.push(info(&name, &[dim + 1, 2])),
                        _ => {}
                    }
                }
                ckpt.extend(extra.iter().map(|n| info(n, &[1])));
                (model, ckpt)
            })
    }

    fn pattern_list() -> impl Strategy<Value = Vec<String>> {
        prop::collection::vec(prop::collection::vec(atom(), 1..4), 0..3)
            .prop_map(|ps| ps.iter().map(|a| regex_text(a)).collect())
    }

    proptest! {
        #[test]
        fn matches_the_reference_matcher(atoms in prop::collection::vec(atom(), 0..6), name in name()) {
            let text = regex_text(&atoms);
            let compiled = ExcludePatterns::new(std::slice::from_ref(&text)).unwrap();
            let chars: Vec<char> = name.chars().collect();
            prop_assert_eq!(
                compiled.first_match(&name).is_some(),
                reference_match(&atoms, &chars),
                "pattern {:?} name {:?}", text, name
            );
        }

        #[test]
        fn every_parameter_lands_in_exactly_one_group(
            (model, ckpt) in model_and_checkpoint(), pats in pattern_list()
        ) {
            let r = plan_loading(&model, &ckpt, &ExcludePatterns::new(&pats).unwrap());
            for p in &model {
                let n = &p.name;
                let hits = r.loaded.iter().filter(|x| *x == n).count()
                    + r.excluded.iter().filter(|x| &x.name == n).count()
                    + r.shape_mismatch.iter().filter(|x| &x.name == n).count()
                    + r.missing.iter().filter(|x| *x == n).count();
                prop_assert_eq!(hits, 1, "{}", n);
            }
            let total = r.loaded.len() + r.excluded.len() + r.shape_mismatch.len() + r.missing.len();
            prop_assert_eq!(total, model.len());
        }

        #[test]
        fn adding_a_pattern_never_loads_more(
            (model, ckpt) in model_and_checkpoint(), pats in pattern_list(), extra in pattern_list()
        ) {
            let before = plan_loading(&model, &ckpt, &ExcludePatterns::new(&pats).unwrap());
            let more: Vec<String> = pats.iter().chain(&extra).cloned().collect();
            let after = plan_loading(&model, &ckpt, &ExcludePatterns::new(&more).unwrap());
            prop_assert!(after.loaded.len() <= before.loaded.len());
            prop_assert!(after.loaded.iter().all(|n| before.loaded.contains(n)));
        }

        #[test]
        fn a_different_shape_never_loads((model, ckpt) in model_and_checkpoint(), pats in pattern_list()) {
            let r = plan_loading(&model, &ckpt, &ExcludePatterns::new(&pats).unwrap());
            for name in &r.loaded {
                let m = model.iter().find(|p| &p.name == name).unwrap();
                let c = ckpt.iter().find(|t| &t.name == name).unwrap();
                prop_assert_eq!(&m.shape, &c.shape);
            }
        }

        #[test]
        fn checkpoint_order_does_not_matter(
            (model, ckpt) in model_and_checkpoint(), pats in pattern_list(), seed in any::<u64>()
        ) {
            let exclude = ExcludePatterns::new(&pats).unwrap();
            let mut shuffled = ckpt.clone();
            // A deterministic shuffle driven by the generated seed.
            let mut state = seed | 1;
            for i in (1..shuffled.len()).rev() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                shuffled.swap(i, (state % (i as u64 + 1)) as usize);
            }
            prop_assert_eq!(plan_loading(&model, &ckpt, &exclude), plan_loading(&model, &shuffled, &exclude));
        }

        #[test]
        fn no_patterns_and_same_shapes_load_everything(
            params in prop::collection::btree_map("[a-z_.0-9]{1,10}", prop::collection::vec(1usize..5, 0..4), 0..20)
        ) {
            let model: Vec<ParamSpec> = params.iter().map(|(n, s)| spec(n, s)).collect();
            let ckpt: Vec<TensorInfo> = params.iter().map(|(n, s)| info(n, s)).collect();
            let r = plan_loading(&model, &ckpt, &ExcludePatterns::default());
            prop_assert_eq!(r.loaded.len(), model.len());
            prop_assert!(r.unused.is_empty());
        }
    }
}
