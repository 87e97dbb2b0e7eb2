//! Training configs in RON, mirroring PaddleDetection's YAML so that a
//! PaddleDetection user recognises every key: the same top-level keys, the same
//! section names (`LearningRate`, `OptimizerBuilder`, `YOLOv3`, `YOLOv3Head`,
//! `TrainReader`, ...), datasets and transforms as RON enums where YAML has tags
//! (`!COCODataSet` -> `COCODataSet(...)`).
//!
//! Loading a config: parse the file into an untyped tree, merge it over its
//! `_BASE_` files (deep merge, like PaddleDetection's `_BASE_`/`_READER_`),
//! apply `-o` overrides, then build the typed structs with ron. Unknown keys
//! and wrong types are errors naming the key (and the closest valid keys).

mod build;
mod cascade_rcnn;
mod faster_rcnn;
mod mask_rcnn;
pub mod overrides;
mod pipeline;
mod retinanet;
mod sections;
pub mod tree;
pub mod yaml;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use pulsefocus_formats::Error;

use crate::detector::ModelSpec;
use crate::models::darknet53::DarkNet53Spec;
use crate::models::mobilenet_v1::MobileNetV1Spec;
use crate::models::{Backbone, Yolov3Spec};
pub use overrides::Override;
pub use pipeline::{RandomShapeParams, ReaderPipeline};
pub use sections::*;
use tree::{MergeRule, Node};

/// The key listing base files, relative to the file that names them.
pub const BASE_KEY: &str = "_BASE_";

/// Reads `path`, its bases and the overrides into a checked config.
pub fn load(path: &Path, overrides: &[Override]) -> Result<Config, Error> {
    let tree = load_resolved_tree(path, overrides)?;
    let overridden: Vec<String> = overrides.iter().map(|o| o.key.join(".")).collect();
    let mut config = build(path, &tree, &overridden)?;
    // PaddleDetection turns pretraining off with `-o pretrain_weights=`.
    if config.pretrain_weights.as_deref() == Some("") {
        config.pretrain_weights = None;
    }
    config.check(path)?;
    Ok(config)
}

/// The config as RON: every key with its value, defaults included (but for
/// the other architecture's unset sections), bases and overrides resolved;
/// `load` reads it back to the same config.
pub fn to_ron(config: &Config) -> String {
    let pretty = ron::ser::PrettyConfig::new()
        .struct_names(false)
        .extensions(ron_options().default_extensions);
    let text = ron::Options::default()
        .to_string_pretty(config, pretty)
        .expect("a config serialises: it holds strings, numbers, lists and structs only");
    // The `#![enable(...)]` line ron writes for its extensions: pulsefocus
    // reads every config with them on.
    let mut lines = text.lines().skip_while(|l| l.starts_with("#!["));
    // The other architecture's sections, at their defaults, would only
    // confuse: they are left out (loading fills them in again).
    let unset: Vec<String> = config
        .other_architecture_sections()
        .into_iter()
        .filter(|(_, set)| !set)
        .map(|(name, _)| format!("    {name}: ("))
        .collect();
    let mut kept = Vec::new();
    while let Some(line) = lines.next() {
        if unset.iter().any(|u| u == line) {
            // The section ends where its closing bracket is indented as it is.
            for inner in lines.by_ref() {
                if inner == "    )," {
                    break;
                }
            }
            continue;
        }
        kept.push(line);
    }
    kept.join("\n")
}

/// The config as PaddleDetection YAML, every key with its value.
pub fn to_yaml(config: &Config) -> String {
    let tree = tree::parse(Path::new("(resolved config)"), &to_ron(config))
        .expect("to_ron writes the RON subset tree::parse reads");
    yaml::render(&tree)
}

/// One file merged over its bases with the overrides applied, untyped.
fn load_resolved_tree(path: &Path, overrides: &[Override]) -> Result<Node, Error> {
    let mut tree = load_tree(path, &mut Vec::new())?;
    for o in overrides {
        o.apply(&mut tree)?;
    }
    // One pattern may be given alone: `-o finetune_exclude_pretrained_params=preset`.
    if let Node::Struct { fields, .. } = &mut tree {
        for (key, value) in fields.iter_mut() {
            if key == "finetune_exclude_pretrained_params" && matches!(value, Node::Str(_)) {
                *value = Node::List(vec![value.clone()]);
            }
        }
    }
    Ok(tree)
}

/// Parses `-o` arguments (each may hold several `key=value` separated by spaces,
/// as PaddleDetection's `-o a=1 b=2` arrives as separate arguments anyway).
pub fn parse_overrides(args: &[String]) -> Result<Vec<Override>, Error> {
    args.iter().map(|a| Override::parse(a)).collect()
}

/// The key naming the reader file a PaddleDetection YAML config is merged
/// over (`_READER_: 'yolov3_reader.yml'`), relative to the file.
pub const READER_KEY: &str = "_READER_";

/// The two formats read, told apart by the file's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Ron,
    Yaml,
}

impl Format {
    pub fn of(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("yml") || ext.eq_ignore_ascii_case("yaml") => {
                Format::Yaml
            }
            _ => Format::Ron,
        }
    }

    fn merge_rule(self) -> MergeRule {
        match self {
            Format::Ron => MergeRule::SameNameMerges,
            Format::Yaml => MergeRule::NamedReplaces,
        }
    }
}

/// What a parse error adds when the text looks like the other format.
const FORMATS_HINT: &str = "configs are RON (.ron) or PaddleDetection YAML (.yml, .yaml), \
                            told apart by the file's extension";

/// Parses one config file by its extension.
pub fn parse_file(path: &Path, text: &str) -> Result<Node, Error> {
    let format = Format::of(path);
    let parsed = match format {
        Format::Ron => tree::parse(path, text),
        Format::Yaml => yaml::parse(path, text),
    };
    parsed.map_err(|mut e| {
        // RON opens with `(` (after comments); YAML starts with `key:`.
        let first = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with("//"))
            .unwrap_or_default();
        let looks_like_yaml = !first.starts_with('(') && first.contains(':');
        match (format, looks_like_yaml) {
            (Format::Ron, true) => {
                e.message += &format!(" ({FORMATS_HINT}; this file looks like YAML: name it .yml)")
            }
            (Format::Yaml, false) if first.starts_with('(') => {
                e.message += &format!(" ({FORMATS_HINT}; this file looks like RON: name it .ron)")
            }
            _ => {}
        }
        e
    })
}

/// One file merged over its bases (`_BASE_`, and `_READER_` in YAML), which
/// are relative to the file; `chain` detects include cycles.
fn load_tree(path: &Path, chain: &mut Vec<PathBuf>) -> Result<Node, Error> {
    let canonical = path.canonicalize().map_err(|e| Error::io(path, e))?;
    if chain.contains(&canonical) {
        let cycle: Vec<String> = chain
            .iter()
            .chain([&canonical])
            .map(|p| p.display().to_string())
            .collect();
        return Err(Error::new(
            path,
            format!("config includes itself: {}", cycle.join(" -> ")),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut node = parse_file(path, &text)?;
    let mut bases = Vec::new();
    for key in [BASE_KEY, READER_KEY] {
        let names = match node.take_field(key) {
            None => Vec::new(),
            Some(Node::List(items)) => items,
            Some(single) => vec![single],
        };
        for name in names {
            let Node::Str(name) = name else {
                return Err(Error::at(path, key, "expected file names as strings"));
            };
            bases.push((key, name));
        }
    }
    chain.push(canonical);
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut merged: Option<Node> = None;
    for (key, name) in bases {
        let base_path = match name.strip_prefix("~/") {
            Some(rest) => std::env::var_os("HOME")
                .map_or_else(|| dir.join(&name), |home| Path::new(&home).join(rest)),
            None => dir.join(&name),
        };
        if !base_path.is_file() {
            return Err(Error::at(
                path,
                key,
                format!(
                    "{} file {} not found",
                    if key == BASE_KEY { "base" } else { "reader" },
                    base_path.display()
                ),
            ));
        }
        let base_tree = load_tree(&base_path, chain)?;
        match &mut merged {
            None => merged = Some(base_tree),
            Some(m) => m.merge_from(base_tree, Format::of(&base_path).merge_rule()),
        }
    }
    chain.pop();
    Ok(match merged {
        None => node,
        Some(mut m) => {
            m.merge_from(node, Format::of(path).merge_rule());
            m
        }
    })
}

fn ron_options() -> ron::Options {
    use ron::extensions::Extensions;
    // IMPLICIT_SOME: `weights: "x"` for an optional key, as YAML writes it.
    // UNWRAP_VARIANT_NEWTYPES: `COCODataSet(dataset_dir: ...)` for a variant
    // holding a struct.
    ron::Options::default()
        .with_default_extension(Extensions::IMPLICIT_SOME | Extensions::UNWRAP_VARIANT_NEWTYPES)
}

/// Builds the typed config, turning ron's line-based errors into key-based ones.
fn build(path: &Path, tree: &Node, overridden: &[String]) -> Result<Config, Error> {
    let rendered = tree::render(tree);
    ron_options()
        .from_str::<Config>(&rendered.text)
        .map_err(|e| {
            let line = e.span.start.line.saturating_sub(1);
            let key = rendered.line_keys.get(line).cloned().unwrap_or_default();
            let message = match &e.code {
                ron::Error::NoSuchStructField {
                    expected, found, ..
                } => {
                    let close = closest(found, expected);
                    // Keys pulsefocus once read in YOLOv3Head, where
                    // PaddleDetection does not have them.
                    let moved = ["ignore_thresh", "label_smooth"].contains(&found.as_str())
                        && key.starts_with("YOLOv3Head.");
                    format!(
                        "unknown key '{found}'; {}",
                        if moved {
                            "it belongs in the YOLOv3Loss section, as in PaddleDetection".into()
                        } else {
                            format!("closest valid keys: {}", close.join(", "))
                        }
                    )
                }
                ron::Error::NoSuchEnumVariant {
                    expected, found, ..
                } => format!("unknown kind '{found}'; valid: {}", expected.join(", ")),
                ron::Error::MissingStructField { field, .. } => {
                    format!("missing required key '{field}'")
                }
                other => {
                    let line_text = rendered.text.lines().nth(line).unwrap_or_default();
                    match expected_type(other, line_text) {
                        Some(t) => format!("wrong type: expected {t}"),
                        None => format!("wrong type: {}", lowercase_first(&other.to_string())),
                    }
                }
            };
            // The override that wrote this key, a section holding it, or a
            // value inside it.
            let from_o = overridden.iter().find(|o| {
                key == **o
                    || key.starts_with(&format!("{o}."))
                    || key.starts_with(&format!("{o}["))
                    || (!key.is_empty() && o.starts_with(&format!("{key}.")))
            });
            let place = match from_o {
                Some(o) => format!("key {key}, set by -o {o}=..."),
                None if key.is_empty() => "top level".to_string(),
                None => format!("key {key}"),
            };
            Error::at(path, place, message)
        })
}

/// The type to name where ron's message is about syntax instead (`expected
/// opening [`, `expected comma` after the `1` of `1.5` for an integer key,
/// `integer is out of bounds` for `-1` as a count).
fn expected_type(code: &ron::Error, line_text: &str) -> Option<&'static str> {
    match code {
        ron::Error::ExpectedArray => Some("list"),
        ron::Error::ExpectedMap
        | ron::Error::ExpectedStructLike
        | ron::Error::ExpectedNamedStructLike(_) => Some("section (key: value, ...)"),
        ron::Error::IntegerOutOfBounds => Some("non-negative integer in range"),
        ron::Error::ExpectedComma => {
            let value = line_text.split_once(": ").map_or(line_text, |(_, v)| v);
            let value = value.trim().trim_end_matches(',');
            value.parse::<f64>().is_ok().then_some("integer")
        }
        _ => None,
    }
}

fn lowercase_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// The (up to three) valid keys nearest to `found` by edit distance.
pub fn closest(found: &str, valid: &[&str]) -> Vec<String> {
    let mut scored: Vec<(usize, &str)> = valid
        .iter()
        .map(|v| (edit_distance(&found.to_lowercase(), &v.to_lowercase()), *v))
        .collect();
    scored.sort();
    scored.iter().take(3).map(|(_, v)| v.to_string()).collect()
}

/// Levenshtein distance over characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut row = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != *cb);
            row[j + 1] = substitute.min(prev[j + 1] + 1).min(row[j] + 1);
        }
        prev = row;
    }
    prev[b.len()]
}

/// The architectures `Config::check` accepts (`architecture`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::upper_case_acronyms)]
pub enum Architecture {
    YOLOv3,
    SSD,
    FasterRCNN,
    MaskRCNN,
    CascadeRCNN,
    CascadeMaskRCNN,
    RetinaNet,
}

impl Architecture {
    /// The architecture `architecture` names, as PaddleDetection spells it.
    pub fn from_name(name: &str) -> Option<Architecture> {
        Some(match name {
            "YOLOv3" => Architecture::YOLOv3,
            "SSD" => Architecture::SSD,
            "FasterRCNN" => Architecture::FasterRCNN,
            "MaskRCNN" => Architecture::MaskRCNN,
            "CascadeRCNN" => Architecture::CascadeRCNN,
            "CascadeMaskRCNN" => Architecture::CascadeMaskRCNN,
            "RetinaNet" => Architecture::RetinaNet,
            _ => return None,
        })
    }

    /// Whether its reader is PaddleDetection's R-CNN reader
    /// (`faster_reader.yml`, `faster_fpn_reader.yml`): each picture resized
    /// by its short side (`ResizeImage` with `max_size`) and padded by
    /// `PadBatch`, `im_info` per image, boxes in its pixels, every box kept
    /// (no `PadBox`), no crowd boxes; Mask R-CNN's (`mask_reader.yml`,
    /// `mask_fpn_reader.yml`) with each box's polygons as well. The
    /// cascades read the same.
    pub fn uses_rcnn_reader(self) -> bool {
        !matches!(self, Architecture::YOLOv3 | Architecture::SSD)
    }

    /// Whether the model predicts masks, and trains on the polygons of a
    /// COCO dataset (Mask R-CNN, Cascade Mask R-CNN).
    pub fn has_masks(self) -> bool {
        matches!(self, Architecture::MaskRCNN | Architecture::CascadeMaskRCNN)
    }

    /// Cascade R-CNN or Cascade Mask R-CNN: three box-head stages on
    /// Faster R-CNN FPN's trunk.
    pub fn is_cascade(self) -> bool {
        matches!(
            self,
            Architecture::CascadeRCNN | Architecture::CascadeMaskRCNN
        )
    }
}

/// Whether a reader sets a key (`Config::warnings`).
type ReaderTest = fn(&Reader) -> bool;

impl Config {
    /// Checks values that types alone cannot: known architecture and
    /// backbone, anchor shapes, masks that index the anchors, priors, the
    /// optimizer and schedule, and every reader's transforms.
    pub fn check(&self, path: &Path) -> Result<(), Error> {
        let bad = |key: &str, msg: String| Error::at(path, format!("key {key}"), msg);
        let Some(arch) = Architecture::from_name(&self.architecture) else {
            return Err(bad(
                "architecture",
                format!(
                    "'{}' is not supported (supported: {})",
                    self.architecture,
                    ARCHITECTURES.join(", ")
                ),
            ));
        };
        match arch {
            Architecture::YOLOv3 => self.check_yolov3(path)?,
            Architecture::SSD => self.check_ssd(path)?,
            Architecture::FasterRCNN
            | Architecture::MaskRCNN
            | Architecture::CascadeRCNN
            | Architecture::CascadeMaskRCNN => {
                let spec = match arch {
                    Architecture::MaskRCNN => self.mask_rcnn_spec(path)?.faster_rcnn,
                    Architecture::CascadeRCNN | Architecture::CascadeMaskRCNN => {
                        self.cascade_rcnn_spec(path)?.faster_rcnn
                    }
                    _ => self.faster_rcnn_spec(path)?,
                };
                self.rcnn_config(path)?;
                if let Some(fpn) = &spec.fpn {
                    let stride = (1.0 / fpn.spatial_scale[0]).round() as usize;
                    self.check_padding(path, stride, "the FPN model")?;
                }
            }
            Architecture::RetinaNet => {
                let spec = self.retinanet_spec(path)?;
                self.retina_config(path)?;
                self.check_padding(path, 1 << spec.fpn.max_level, "RetinaNet's P7")?;
            }
        }
        if arch.has_masks() {
            for (name, reader) in self.readers() {
                if let Some(DataSet::VOCDataSet(_)) = reader.map(|r| &r.dataset) {
                    return Err(bad(
                        &format!("{name}.dataset"),
                        format!("VOCDataSet is not supported for {}: VOC has no object polygons to train or score masks on (use a COCODataSet)", self.architecture),
                    ));
                }
            }
        }
        if arch.uses_rcnn_reader() {
            for (name, reader) in self.readers() {
                if let Some(DataSet::COCODataSet(coco)) = reader.map(|r| &r.dataset) {
                    if coco.load_crowd {
                        return Err(bad(
                            &format!("{name}.dataset.load_crowd"),
                            format!("must be false for {}: the batch has no is_crowd, so crowd boxes would be trained on as objects (PaddleDetection 0.x drops them too)", self.architecture),
                        ));
                    }
                }
            }
        }
        let minimum = if arch == Architecture::YOLOv3 { 1 } else { 2 };
        if self.num_classes < minimum {
            return Err(bad(
                "num_classes",
                format!(
                    "must be at least {minimum}{}",
                    if minimum == 2 {
                        " (it counts the background class)"
                    } else {
                        ""
                    }
                ),
            ));
        }
        self.check_optimizer(path)?;
        for (name, reader) in self.readers() {
            if let Some(reader) = reader {
                reader.pipeline_for(path, name, arch)?;
            }
        }
        Ok(())
    }

    /// The pyramid adds each level to the one above upsampled 2x, so every
    /// reader must give pictures whose sides are multiples of `stride`
    /// (`model`'s): the coarsest backbone stride for Faster R-CNN's FPN
    /// (PaddleDetection's readers pad to 32), `2^max_level` for RetinaNet
    /// (its config pads to 128).
    fn check_padding(&self, path: &Path, stride: usize, model: &str) -> Result<(), Error> {
        for (name, reader) in self.readers() {
            let Some(reader) = reader else { continue };
            let pipeline = reader.pipeline_for(path, name, self.arch())?;
            let (key, fits) = match (&pipeline.short_side, pipeline.resize) {
                (Some(r), _) => (
                    "batch_transforms",
                    r.pad_to_stride > 0 && r.pad_to_stride % stride == 0,
                ),
                (None, Some((size, _))) => ("sample_transforms", size % stride == 0),
                (None, None) => continue,
            };
            if !fits {
                return Err(Error::at(
                    path,
                    format!("key {name}.{key}"),
                    format!("must make pictures whose sides are multiples of {stride} for {model} (PadBatch with pad_to_stride: {stride})"),
                ));
            }
        }
        Ok(())
    }

    /// The YOLOv3 sections.
    fn check_yolov3(&self, path: &Path) -> Result<(), Error> {
        let bad = |key: &str, msg: String| Error::at(path, format!("key {key}"), msg);
        if !BACKBONES.contains(&self.yolov3.backbone.as_str()) {
            return Err(bad(
                "YOLOv3.backbone",
                format!(
                    "'{}' is not supported (supported: {})",
                    self.yolov3.backbone,
                    BACKBONES.join(", ")
                ),
            ));
        }
        for (key, on) in [
            ("use_fine_grained_loss", self.use_fine_grained_loss),
            (
                "YOLOv3Loss.use_fine_grained_loss",
                self.yolov3_loss.use_fine_grained_loss,
            ),
        ] {
            if on {
                return Err(bad(
                    key,
                    "true is not supported (supported: false): the per-level loss on Gt2YoloTarget targets is not implemented".into(),
                ));
            }
        }
        if self.yolov3_head.yolo_loss != "YOLOv3Loss" {
            return Err(bad(
                "YOLOv3Head.yolo_loss",
                format!(
                    "'{}' is not supported (supported: YOLOv3Loss)",
                    self.yolov3_head.yolo_loss
                ),
            ));
        }
        self.check_backbone(path, &self.yolov3.backbone)?;
        // Batch-norm scale and offset are never decayed (`conv_unit.rs`).
        if self.yolov3_head.norm_decay != 0.0 {
            return Err(bad(
                "YOLOv3Head.norm_decay",
                format!(
                    "{} is not supported (supported: 0)",
                    self.yolov3_head.norm_decay
                ),
            ));
        }
        if self.yolov3.backbone == "DarkNet" && self.darknet.depth != 53 {
            return Err(bad(
                "DarkNet.depth",
                format!("{} is not supported (supported: 53)", self.darknet.depth),
            ));
        }
        if self.yolov3_head.width < 4 || !self.yolov3_head.width.is_multiple_of(4) {
            return Err(bad(
                "YOLOv3Head.width",
                "must be a positive multiple of 4".into(),
            ));
        }
        let head = &self.yolov3_head;
        if let Some(i) = head.anchors.iter().position(|a| a.len() != 2) {
            return Err(bad(
                &format!("YOLOv3Head.anchors[{i}]"),
                "an anchor is [width, height]".into(),
            ));
        }
        let mut seen = HashSet::new();
        for (level, mask) in head.anchor_masks.iter().enumerate() {
            for &m in mask {
                if m >= head.anchors.len() || !seen.insert(m) {
                    return Err(bad(
                        &format!("YOLOv3Head.anchor_masks[{level}]"),
                        format!(
                            "anchor index {m} is out of range or repeated ({} anchors)",
                            head.anchors.len()
                        ),
                    ));
                }
            }
        }
        if head.anchor_masks.len() != 3 {
            return Err(bad(
                "YOLOv3Head.anchor_masks",
                "YOLOv3 has three output levels: give three masks".into(),
            ));
        }
        // PaddleDetection's YOLOv3 head would read the extra blocks.
        if self.yolov3.backbone == "MobileNet" && self.mobilenet.with_extra_blocks {
            return Err(bad(
                "MobileNet.with_extra_blocks",
                "true is not supported for YOLOv3 (supported: false)".into(),
            ));
        }
        // The YOLOv3 model has no per-layer learning rate.
        if self.yolov3.backbone == "MobileNet" && self.mobilenet.conv_learning_rate != 1.0 {
            return Err(bad(
                "MobileNet.conv_learning_rate",
                format!(
                    "{} is not supported for YOLOv3 (supported: 1)",
                    self.mobilenet.conv_learning_rate
                ),
            ));
        }
        Ok(())
    }

    /// A backbone section (`MobileNet` or `DarkNet`): its batch norm is
    /// `bn` or `sync_bn` (the same on one device) and never decayed, and
    /// MobileNet's width multiplier is in (0, 4].
    fn check_backbone(&self, path: &Path, backbone: &str) -> Result<(), Error> {
        let bad = |key: &str, msg: String| Error::at(path, format!("key {key}"), msg);
        let (norm_type, norm_decay) = match backbone {
            "MobileNet" => (&self.mobilenet.norm_type, self.mobilenet.norm_decay),
            _ => (&self.darknet.norm_type, self.darknet.norm_decay),
        };
        if !["bn", "sync_bn"].contains(&norm_type.as_str()) {
            return Err(bad(
                &format!("{backbone}.norm_type"),
                format!("'{norm_type}' is not supported (supported: bn, sync_bn)"),
            ));
        }
        // Batch-norm scale and offset are never decayed (`conv_unit.rs`).
        if norm_decay != 0.0 {
            return Err(bad(
                &format!("{backbone}.norm_decay"),
                format!("{norm_decay} is not supported (supported: 0)"),
            ));
        }
        let scale = self.mobilenet.conv_group_scale;
        if backbone == "MobileNet" && !(scale > 0.0 && scale <= 4.0) {
            return Err(bad(
                "MobileNet.conv_group_scale",
                format!("{scale} is outside (0, 4]"),
            ));
        }
        Ok(())
    }

    /// The SSD sections: the backbone's (MobileNet or VGG), the priors, the
    /// head convs and the output decoder.
    fn check_ssd(&self, path: &Path) -> Result<(), Error> {
        let bad = |key: &str, msg: String| Error::at(path, format!("key {key}"), msg);
        let ssd = self.ssd.clone().unwrap_or_default();
        match ssd.backbone.as_str() {
            "MobileNet" => self.check_ssd_mobilenet(path)?,
            "VGG" => self.check_ssd_vgg(path)?,
            other => {
                return Err(bad(
                    "SSD.backbone",
                    format!("'{other}' is not supported (supported: MobileNet, VGG)"),
                ))
            }
        }
        if ssd.multi_box_head != "MultiBoxHead" {
            return Err(bad(
                "SSD.multi_box_head",
                format!(
                    "'{}' is not supported (supported: MultiBoxHead)",
                    ssd.multi_box_head
                ),
            ));
        }
        let head = self.multi_box_head.clone().unwrap_or_default();
        if head.kernel_size == 0 || head.pad != head.kernel_size / 2 {
            return Err(bad(
                "MultiBoxHead.pad",
                format!(
                    "{} is not supported with kernel_size {} (supported: kernel_size / 2, which keeps the feature map's size)",
                    head.pad, head.kernel_size
                ),
            ));
        }
        self.prior_levels()
            .map_err(|(key, message)| bad(&format!("MultiBoxHead.{key}"), message))?;
        let decoder = &ssd.output_decoder;
        let key = |k: &str| format!("SSD.output_decoder.{k}");
        if decoder.nms_eta != 1.0 {
            return Err(bad(
                &key("nms_eta"),
                format!(
                    "{} is not supported (supported: 1.0, plain NMS)",
                    decoder.nms_eta
                ),
            ));
        }
        for (name, k) in [
            ("nms_top_k", decoder.nms_top_k),
            ("keep_top_k", decoder.keep_top_k),
        ] {
            if k == 0 || k < -1 {
                return Err(bad(&key(name), "must be positive, or -1 for all".into()));
            }
        }
        let label = decoder.background_label;
        if label < -1 || label >= self.num_classes as i32 {
            return Err(bad(
                &key("background_label"),
                format!(
                    "must be a class below num_classes ({}), or -1 for none",
                    self.num_classes
                ),
            ));
        }
        // Class 0 is the background: the datasets number their classes from 1.
        for (name, reader) in self.readers() {
            if let Some(dataset) = reader.map(|r| &r.dataset) {
                if !dataset.with_background() {
                    return Err(bad(
                        &format!("{name}.dataset.{}.with_background", dataset.kind()),
                        "must be true for SSD: its class 0 is the background".into(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// SSD's MobileNet section: its batch norm, width, learning rate and
    /// four extra blocks.
    fn check_ssd_mobilenet(&self, path: &Path) -> Result<(), Error> {
        let bad = |key: &str, msg: String| Error::at(path, format!("key {key}"), msg);
        self.check_backbone(path, "MobileNet")?;
        let m = &self.mobilenet;
        if m.conv_learning_rate.is_nan() || m.conv_learning_rate < 0.0 {
            return Err(bad(
                "MobileNet.conv_learning_rate",
                "must be at least 0".into(),
            ));
        }
        if !m.with_extra_blocks {
            return Err(bad(
                "MobileNet.with_extra_blocks",
                "must be true for SSD: the head reads the extra blocks' features".into(),
            ));
        }
        let pairs = m
            .extra_block_filters
            .iter()
            .all(|f| f.len() == 2 && !f.contains(&0));
        if m.extra_block_filters.len() != 4 || !pairs {
            return Err(bad(
                "MobileNet.extra_block_filters",
                "must be four [1x1 width, 3x3 width] pairs of positive widths: MobileNet builds four extra blocks".into(),
            ));
        }
        Ok(())
    }

    /// SSD's VGG section: depth 16 or 19, the extra blocks on, each block
    /// five positive numbers but the padding, and one L2 norm entry (a
    /// positive initial scale, or -1) per feature level.
    fn check_ssd_vgg(&self, path: &Path) -> Result<(), Error> {
        let bad = |key: &str, msg: String| Error::at(path, format!("key {key}"), msg);
        let v = self.vgg.clone().unwrap_or_default();
        if ![16, 19].contains(&v.depth) {
            return Err(bad(
                "VGG.depth",
                format!("{} is not supported (supported: 16, 19)", v.depth),
            ));
        }
        if !v.with_extra_blocks {
            return Err(bad(
                "VGG.with_extra_blocks",
                "must be true for SSD: the head reads the extra blocks' features".into(),
            ));
        }
        for (k, f) in v.extra_block_filters.iter().enumerate() {
            if f.len() != 5 || f.iter().enumerate().any(|(i, &n)| i != 2 && n == 0) {
                return Err(bad(
                    &format!("VGG.extra_block_filters[{k}]"),
                    "must be [1x1 width, 3x3 width, padding, stride, kernel] with positive widths, stride and kernel".into(),
                ));
            }
        }
        let levels = self.ssd_levels();
        if v.normalizations.len() != levels {
            return Err(bad(
                "VGG.normalizations",
                format!(
                    "has {} entries: give one per feature level ({levels}: conv4_3, fc7, each extra block)",
                    v.normalizations.len()
                ),
            ));
        }
        if let Some(n) = v
            .normalizations
            .iter()
            .find(|&&n| n != -1.0 && !(n.is_finite() && n > 0.0))
        {
            return Err(bad(
                "VGG.normalizations",
                format!(
                    "{n} is not supported (supported: a positive initial scale, or -1 for no norm)"
                ),
            ));
        }
        Ok(())
    }

    /// `OptimizerBuilder` and the `PiecewiseDecay` rates.
    fn check_optimizer(&self, path: &Path) -> Result<(), Error> {
        let bad = |key: &str, msg: String| Error::at(path, format!("key {key}"), msg);
        let opt = &self.optimizer_builder.optimizer;
        match opt.kind.as_str() {
            "Momentum" => {
                for (key, given) in [("rho", opt.rho), ("epsilon", opt.epsilon)] {
                    if given.is_some() {
                        return Err(bad(
                            &format!("OptimizerBuilder.optimizer.{key}"),
                            "is an RMSPropOptimizer setting; Momentum has none".into(),
                        ));
                    }
                }
            }
            "RMSPropOptimizer" => {}
            other => {
                return Err(bad(
                    "OptimizerBuilder.optimizer.type",
                    format!("'{other}' is not supported (supported: Momentum, RMSPropOptimizer)"),
                ))
            }
        }
        let regularizer = &self.optimizer_builder.regularizer.kind;
        if regularizer != "L2" {
            return Err(bad(
                "OptimizerBuilder.regularizer.type",
                format!("'{regularizer}' is not supported (supported: L2)"),
            ));
        }
        for (i, s) in self.learning_rate.schedulers.iter().enumerate() {
            if let Scheduler::PiecewiseDecay(p) = s {
                if let Some(values) = &p.values {
                    if values.len() != p.milestones.len() + 1 {
                        return Err(bad(
                            &format!("LearningRate.schedulers[{i}].PiecewiseDecay.values"),
                            format!(
                                "{} rates for {} milestones: give one more rate than milestones",
                                values.len(),
                                p.milestones.len()
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// One line for each key that is accepted but changes nothing in
    /// pulsefocus, for the caller to show.
    pub fn warnings(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if self.use_gpu.is_some() {
            lines.push("use_gpu has no effect: --device picks the device".to_string());
        }
        // The other architecture's sections, where given.
        let unused: Vec<&str> = self
            .other_architecture_sections()
            .into_iter()
            .filter_map(|(name, set)| set.then_some(name))
            .collect();
        if !unused.is_empty() {
            lines.push(format!(
                "{} has no effect: architecture is {}",
                unused.join(", "),
                self.architecture
            ));
        }
        if self.yolov3_loss.batch_size != -1 && self.arch() == Architecture::YOLOv3 {
            lines.push(
                "YOLOv3Loss.batch_size has no effect: TrainReader.batch_size sets the batch (PaddleDetection ignores it too)".into(),
            );
        }
        // Reader keys: one line each, naming the readers that set it.
        let reader_keys: [(&str, &str, ReaderTest); 4] = [
            (
                "inputs_def.fields",
                "the loader feeds what the model needs",
                |r| !r.inputs_def.fields.is_empty(),
            ),
            (
                "inputs_def.image_shape",
                "the input size comes from RandomShape and ResizeImage",
                |r| !r.inputs_def.image_shape.is_empty(),
            ),
            ("bufsize", "the loader's prefetch depth is fixed", |r| {
                r.bufsize.is_some()
            }),
            ("use_process", "the loader's workers are threads", |r| {
                r.use_process.is_some()
            }),
        ];
        let readers: Vec<(&str, &Reader)> = self
            .readers()
            .into_iter()
            .filter_map(|(name, r)| Some((name, r?)))
            .collect();
        for (key, why, set) in reader_keys {
            let setting: Vec<&str> = readers
                .iter()
                .filter(|(_, r)| set(r))
                .map(|(name, _)| *name)
                .collect();
            if !setting.is_empty() {
                lines.push(format!(
                    "{key} ({}) has no effect: {why}",
                    setting.join(", ")
                ));
            }
        }
        for (name, reader) in readers {
            let listed = [
                ("sample_transforms", &reader.sample_transforms),
                ("batch_transforms", &reader.batch_transforms),
            ];
            for (list, transforms) in listed {
                for (i, t) in transforms.iter().enumerate() {
                    if matches!(t, Transform::Gt2YoloTarget(_)) {
                        lines.push(format!(
                            "{name}.{list}[{i}].Gt2YoloTarget has no effect: it makes the targets of the fine-grained loss, and use_fine_grained_loss is false (PaddleDetection drops it too)"
                        ));
                    }
                }
            }
        }
        lines
    }

    /// The model this config describes (after `check`, which has read the
    /// Faster R-CNN or RetinaNet sections without error).
    pub fn model_spec(&self) -> ModelSpec {
        match self.arch() {
            Architecture::SSD => ModelSpec::Ssd(self.ssd_spec()),
            Architecture::YOLOv3 => ModelSpec::Yolov3(self.yolov3_spec()),
            Architecture::FasterRCNN => ModelSpec::FasterRcnn(Box::new(
                self.faster_rcnn_spec(Path::new(""))
                    .expect("check() read the Faster R-CNN sections"),
            )),
            Architecture::MaskRCNN => ModelSpec::MaskRcnn(Box::new(
                self.mask_rcnn_spec(Path::new(""))
                    .expect("check() read the Mask R-CNN sections"),
            )),
            Architecture::CascadeRCNN | Architecture::CascadeMaskRCNN => {
                ModelSpec::CascadeRcnn(Box::new(
                    self.cascade_rcnn_spec(Path::new(""))
                        .expect("check() read the Cascade R-CNN sections"),
                ))
            }
            Architecture::RetinaNet => ModelSpec::RetinaNet(Box::new(
                self.retinanet_spec(Path::new(""))
                    .expect("check() read the RetinaNet sections"),
            )),
        }
    }

    /// The YOLOv3 model of a `YOLOv3` config.
    pub fn yolov3_spec(&self) -> Yolov3Spec {
        let backbone = match self.yolov3.backbone.as_str() {
            "MobileNet" => Backbone::MobileNetV1(MobileNetV1Spec {
                scale: self.mobilenet.conv_group_scale,
            }),
            _ => Backbone::DarkNet53(DarkNet53Spec { width: 32 }),
        };
        let head = &self.yolov3_head;
        Yolov3Spec {
            backbone,
            head_width: head.width,
            num_classes: self.num_classes,
            anchors: head.anchor_pairs(),
            anchor_masks: head.anchor_masks.clone(),
        }
    }

    /// The sections only the other architectures read, each with whether
    /// it is set (differs from its default).
    fn other_architecture_sections(&self) -> Vec<(&'static str, bool)> {
        use Architecture as A;
        // Faster and Mask R-CNN's own parts (the C4 model's among them),
        // the trunk every R-CNN reads, the cascades' box head, the masks'.
        let own: &[Architecture] = &[A::FasterRCNN, A::MaskRCNN];
        let rcnns: &[Architecture] = &[
            A::FasterRCNN,
            A::MaskRCNN,
            A::CascadeRCNN,
            A::CascadeMaskRCNN,
        ];
        let cascades: &[Architecture] = &[A::CascadeRCNN, A::CascadeMaskRCNN];
        let masks: &[Architecture] = &[A::MaskRCNN, A::CascadeMaskRCNN];
        let resnet_fpn: &[Architecture] = &[
            A::FasterRCNN,
            A::MaskRCNN,
            A::CascadeRCNN,
            A::CascadeMaskRCNN,
            A::RetinaNet,
        ];
        let sections: [(&'static str, bool, &[Architecture]); 29] = [
            ("YOLOv3", self.yolov3 != YOLOv3::default(), &[A::YOLOv3]),
            (
                "YOLOv3Head",
                self.yolov3_head != YOLOv3Head::default(),
                &[A::YOLOv3],
            ),
            (
                "YOLOv3Loss",
                self.yolov3_loss != YOLOv3Loss::default(),
                &[A::YOLOv3],
            ),
            ("DarkNet", self.darknet != DarkNet::default(), &[A::YOLOv3]),
            (
                "MobileNet",
                self.mobilenet != MobileNet::default(),
                &[A::YOLOv3, A::SSD],
            ),
            ("SSD", self.ssd.is_some(), &[A::SSD]),
            ("VGG", self.vgg.is_some(), &[A::SSD]),
            ("MultiBoxHead", self.multi_box_head.is_some(), &[A::SSD]),
            ("ResNet", self.resnet.is_some(), resnet_fpn),
            ("FPN", self.fpn.is_some(), resnet_fpn),
            ("FasterRCNN", self.faster_rcnn.is_some(), &[A::FasterRCNN]),
            ("MaskRCNN", self.mask_rcnn.is_some(), &[A::MaskRCNN]),
            (
                "CascadeRCNN",
                self.cascade_rcnn.is_some(),
                &[A::CascadeRCNN],
            ),
            (
                "CascadeMaskRCNN",
                self.cascade_mask_rcnn.is_some(),
                &[A::CascadeMaskRCNN],
            ),
            ("ResNetC5", self.resnet_c5.is_some(), own),
            ("RPNHead", self.rpn_head.is_some(), own),
            ("FPNRPNHead", self.fpn_rpn_head.is_some(), rcnns),
            ("RoIAlign", self.roi_align.is_some(), own),
            ("FPNRoIAlign", self.fpn_roi_align.is_some(), rcnns),
            ("BBoxAssigner", self.bbox_assigner.is_some(), own),
            ("BBoxHead", self.bbox_head.is_some(), own),
            ("TwoFCHead", self.two_fc_head.is_some(), own),
            (
                "CascadeBBoxAssigner",
                self.cascade_bbox_assigner.is_some(),
                cascades,
            ),
            (
                "CascadeBBoxHead",
                self.cascade_bbox_head.is_some(),
                cascades,
            ),
            (
                "CascadeTwoFCHead",
                self.cascade_two_fc_head.is_some(),
                cascades,
            ),
            ("MaskHead", self.mask_head.is_some(), masks),
            ("MaskAssigner", self.mask_assigner.is_some(), masks),
            ("RetinaNet", self.retinanet.is_some(), &[A::RetinaNet]),
            ("RetinaHead", self.retina_head.is_some(), &[A::RetinaNet]),
        ];
        let arch = self.arch();
        sections
            .into_iter()
            .filter(|(_, _, readers)| !readers.contains(&arch))
            .map(|(name, set, _)| (name, set))
            .collect()
    }

    /// The architecture (after `check`, which refuses any other).
    pub fn arch(&self) -> Architecture {
        Architecture::from_name(&self.architecture).unwrap_or(Architecture::YOLOv3)
    }

    pub fn is_ssd(&self) -> bool {
        self.arch() == Architecture::SSD
    }

    /// The exclusion patterns with `preset` expanded for this architecture.
    pub fn exclude_patterns(&self) -> Result<Vec<String>, crate::loading::LoadingError> {
        crate::loading::expand_presets(&self.architecture, &self.finetune_exclude_pretrained_params)
    }
}

#[cfg(test)]
mod tests;
