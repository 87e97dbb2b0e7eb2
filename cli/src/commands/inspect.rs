//! `pulsefocus inspect FILE_OR_DIR [--json]`: lists the tensors of a
//! checkpoint in any supported format, one line each, with totals.

use std::io::Write;
use std::path::PathBuf;

use clap::Args as ClapArgs;
use pulsefocus_formats::load_checkpoint;

use super::print_warnings;

#[derive(ClapArgs)]
pub struct Args {
    /// Checkpoint: directory, .tar/.tar.gz/.tgz, .pdparams/.pdopt, .safetensors,
    /// __params__/.pdiparams (with the program beside it), or one tensor file.
    pub path: PathBuf,
    /// Print a JSON array of {"name", "dtype", "shape"} in the file's order.
    #[arg(long)]
    pub json: bool,
}

#[derive(serde::Serialize)]
struct Entry<'a> {
    name: &'a str,
    dtype: &'a str,
    shape: &'a [usize],
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let checkpoint = load_checkpoint(&args.path)?;
    print_warnings(&checkpoint.warnings);
    let mut out = std::io::stdout().lock();
    if args.json {
        let entries: Vec<Entry> = checkpoint
            .iter()
            .map(|(name, t)| Entry {
                name,
                dtype: t.dtype.name(),
                shape: &t.shape,
            })
            .collect();
        // One object per line: readable, and still one JSON array.
        let lines = entries
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()?;
        writeln!(out, "[\n{}\n]", lines.join(",\n"))?;
        return Ok(());
    }
    let shapes: Vec<String> = checkpoint
        .iter()
        .map(|(_, t)| format!("{:?}", t.shape))
        .collect();
    // Capped: a longer name overflows its line rather than widening every
    // line (and a `{:w$}` width over 65535 panics).
    let name_width = checkpoint.names().map(str::len).max().unwrap_or(0).min(80);
    let shape_width = shapes.iter().map(String::len).max().unwrap_or(0).min(80);
    let mut elements = 0usize;
    for ((name, t), shape) in checkpoint.iter().zip(&shapes) {
        elements += t.numel();
        writeln!(
            out,
            "{name:<name_width$}  {:<8}  {shape:<shape_width$}  {:>10}",
            t.dtype.name(),
            t.numel()
        )?;
    }
    for (key, value) in &checkpoint.metadata {
        writeln!(out, "metadata {key}: {}", shortened(value))?;
    }
    writeln!(
        out,
        "{} tensors, {elements} elements, {} bytes",
        checkpoint.len(),
        checkpoint.total_bytes()
    )?;
    Ok(())
}

/// A metadata value as JSON, cut after [`METADATA_CHARS`] characters with its
/// entry count: a PaddleDetection model's `StructuredToParameterName@@` alone
/// is tens of kilobytes on one line.
fn shortened(value: &serde_json::Value) -> String {
    let text = value.to_string();
    if text.chars().count() <= METADATA_CHARS {
        return text;
    }
    let head: String = text.chars().take(METADATA_CHARS).collect();
    match value {
        serde_json::Value::Object(m) => format!("{head}... ({} entries)", m.len()),
        serde_json::Value::Array(a) => format!("{head}... ({} items)", a.len()),
        _ => format!("{head}..."),
    }
}

const METADATA_CHARS: usize = 100;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_metadata_is_cut_with_its_count() {
        let short = serde_json::json!({"last_epoch": 3});
        assert_eq!(shortened(&short), r#"{"last_epoch":3}"#);
        let long: serde_json::Map<String, serde_json::Value> = (0..50)
            .map(|i| {
                (
                    format!("layer.{i}.weight"),
                    format!("conv2d_{i}.w_0").into(),
                )
            })
            .collect();
        let text = shortened(&serde_json::Value::Object(long));
        assert!(text.ends_with("... (50 entries)"), "{text}");
        assert_eq!(
            text.chars().count(),
            METADATA_CHARS + "... (50 entries)".len()
        );
    }
}
