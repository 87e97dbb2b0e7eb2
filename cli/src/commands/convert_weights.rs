//! `pulsefocus convert-weights IN OUT [--to FORMAT] [--dtype float32|float16]`:
//! reads a checkpoint in any supported format and writes it in another,
//! copying values bit for bit unless `--dtype` casts the floating tensors.

use std::path::PathBuf;

use anyhow::{anyhow, bail};
use clap::Args as ClapArgs;
use pulsefocus_formats::{load_checkpoint, save_checkpoint, Checkpoint, DType, Format};

use super::print_warnings;

#[derive(ClapArgs)]
pub struct Args {
    /// Checkpoint to read (any format `inspect` reads).
    pub input: PathBuf,
    /// Where to write; the format follows the name (.tar, .tar.gz, .tgz,
    /// .pdparams, .pdopt, .safetensors, .pdiparams, __params__; anything else
    /// is a directory of per-variable files) unless --to says.
    pub output: PathBuf,
    /// Output format: dir, tar, pdparams, safetensors or params (combined).
    #[arg(long)]
    pub to: Option<String>,
    /// Cast floating tensors to this type: float32 or float16.
    #[arg(long)]
    pub dtype: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let format = match &args.to {
        Some(name) => Format::from_name(name).ok_or_else(|| {
            anyhow!("unknown --to {name:?}: use dir, tar, pdparams, safetensors or params")
        })?,
        None => Format::from_path(&args.output),
    };
    let cast = match args.dtype.as_deref() {
        None => None,
        Some("float32") => Some(DType::F32),
        Some("float16") => Some(DType::F16),
        Some(other) => bail!("unknown --dtype {other:?}: use float32 or float16"),
    };
    let input = load_checkpoint(&args.input)?;
    print_warnings(&input.warnings);
    let checkpoint = match cast {
        Some(dtype) => {
            let mut cast = Checkpoint::new();
            for (name, tensor) in input.iter() {
                let converted = tensor.cast_float(dtype);
                // A finite value beyond float16's range would silently become
                // infinite (batch-norm running variances can exceed 65504).
                let overflowed = tensor
                    .to_f32_vec()
                    .iter()
                    .zip(converted.to_f32_vec())
                    .any(|(before, after)| before.is_finite() && !after.is_finite());
                if overflowed {
                    bail!(
                        "{} (variable {name}): values beyond the range of {dtype}; keep float32",
                        args.input.display()
                    );
                }
                cast.insert(name, converted);
            }
            cast.metadata = input.metadata.clone();
            cast
        }
        None => input,
    };
    save_checkpoint(&checkpoint, &args.output, format)?;
    eprintln!(
        "wrote {} tensors ({} bytes) to {} as {format:?}",
        checkpoint.len(),
        checkpoint.total_bytes(),
        args.output.display()
    );
    Ok(())
}
