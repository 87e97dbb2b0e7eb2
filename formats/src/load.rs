//! The two entry points the rest of pulsefocus uses: [`load_checkpoint`] finds
//! out what a path holds and reads it; [`save_checkpoint`] writes one format.

use std::path::{Path, PathBuf};

use crate::checkpoint::{Checkpoint, Storage};
use crate::error::{Error, Result};
use crate::paddle::{archive, combined, dir, pickle, program_desc, tensor_file};
use crate::safetensors_io;

/// Output formats of [`save_checkpoint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A directory with one file per variable (legacy model zoo layout).
    Dir,
    /// A model-zoo `.tar` of such a directory (gzipped for `.tar.gz`/`.tgz`).
    Tar,
    /// A `.pdparams`/`.pdopt` pickle (protocol 4).
    Pdparams,
    /// A safetensors file.
    Safetensors,
    /// Combined params in sorted-name order: `X.pdiparams` with `X.pdmodel`
    /// beside it, or a directory with `__params__` and `__model__`.
    Combined,
}

impl Format {
    /// The format a path's name asks for; a name without a known extension is
    /// a directory.
    pub fn from_path(path: &Path) -> Format {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let ext = |e: &str| name.ends_with(e);
        if ext(".tar") || ext(".tar.gz") || ext(".tgz") {
            Format::Tar
        } else if ext(".pdparams") || ext(".pdopt") {
            Format::Pdparams
        } else if ext(".safetensors") {
            Format::Safetensors
        } else if ext(".pdiparams") || name == "__params__" {
            Format::Combined
        } else {
            Format::Dir
        }
    }

    /// Parses the `--to` names of `convert-weights`.
    pub fn from_name(name: &str) -> Option<Format> {
        Some(match name {
            "dir" => Format::Dir,
            "tar" => Format::Tar,
            "pdparams" => Format::Pdparams,
            "safetensors" => Format::Safetensors,
            "params" | "combined" => Format::Combined,
            _ => return None,
        })
    }
}

/// Reads a checkpoint in any supported layout:
/// - a directory of per-variable files, or one holding `__params__` +
///   `__model__` or `X.pdiparams` + `X.pdmodel` (combined params);
/// - a `.tar`, `.tar.gz` or `.tgz` model-zoo archive;
/// - a `.pdparams`/`.pdopt` pickle (also found as `PATH.pdparams` when `PATH`
///   itself does not exist, as PaddleDetection's `load_params` does);
/// - a safetensors file;
/// - `__params__`/`*.pdiparams` (names from the program beside it), or the
///   program file itself;
/// - a single per-variable tensor file (named after the file).
///
/// Files are memory-mapped and tensors borrow from the map where the format
/// stores raw little-endian data.
pub fn load_checkpoint(path: &Path) -> Result<Checkpoint> {
    if path.is_dir() {
        return match combined_in_dir(path)? {
            Some((params, program)) => read_combined_with_program(&params, &program),
            None => dir::read_dir(path),
        };
    }
    if !path.exists() {
        let mut beside = path.as_os_str().to_owned();
        beside.push(".pdparams");
        let beside = PathBuf::from(beside);
        if beside.is_file() {
            return pickle::read_pickle(&beside);
        }
        return Err(Error::new(path, "no such file or directory"));
    }
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    if name == "__params__" {
        return read_combined_with_program(path, &path.with_file_name("__model__"));
    }
    if name == "__model__" {
        return read_combined_with_program(&path.with_file_name("__params__"), path);
    }
    if name.ends_with(".pdiparams") {
        return read_combined_with_program(path, &path.with_extension("pdmodel"));
    }
    if name.ends_with(".pdmodel") {
        return read_combined_with_program(&path.with_extension("pdiparams"), path);
    }
    if name.ends_with(".safetensors") {
        return safetensors_io::read_safetensors(path);
    }
    if name.ends_with(".pdparams") || name.ends_with(".pdopt") {
        return pickle::read_pickle(path);
    }
    // Otherwise the content decides. safetensors is tried before pickle: its
    // header length may start with the pickle PROTO byte 0x80.
    let storage = Storage::map_file(path)?;
    let head = storage.as_slice();
    if looks_like_safetensors(head) {
        safetensors_io::read_safetensors(path)
    } else if head.len() >= 2 && head[0] == 0x80 && (2..=5).contains(&head[1]) {
        pickle::read_pickle_from(path, &storage)
    } else if archive::is_gzip(head) || head.get(257..262) == Some(b"ustar") {
        archive::read_archive(path)
    } else {
        let tensor = tensor_file::read_single(path, &storage).map_err(|e| Error {
            message: format!("not a recognised checkpoint ({})", e.message),
            ..e
        })?;
        let mut checkpoint = Checkpoint::new();
        checkpoint.insert(name.into_owned(), tensor);
        Ok(checkpoint)
    }
}

/// safetensors starts with a u64 header length and the header's `{`.
fn looks_like_safetensors(head: &[u8]) -> bool {
    head.len() >= 9 && head[8] == b'{' && {
        let n = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
        n <= (head.len() - 8) as u64
    }
}

/// `__params__` + `__model__`, or exactly one `X.pdiparams` with `X.pdmodel`.
fn combined_in_dir(path: &Path) -> Result<Option<(PathBuf, PathBuf)>> {
    if path.join("__params__").is_file() {
        return Ok(Some((path.join("__params__"), path.join("__model__"))));
    }
    let mut params = Vec::new();
    for entry in std::fs::read_dir(path).map_err(|e| Error::io(path, e))? {
        let entry = entry.map_err(|e| Error::io(path, e))?.path();
        if entry.extension().is_some_and(|e| e == "pdiparams") {
            params.push(entry);
        }
    }
    match params.len() {
        0 => Ok(None),
        1 => {
            let program = params[0].with_extension("pdmodel");
            Ok(Some((params.remove(0), program)))
        }
        n => Err(Error::new(
            path,
            format!("{n} .pdiparams files: give the one to read"),
        )),
    }
}

fn read_combined_with_program(params: &Path, program: &Path) -> Result<Checkpoint> {
    if !program.is_file() {
        return Err(Error::new(
            params,
            format!(
                "combined params need the program {} for the variable names",
                program.display()
            ),
        ));
    }
    let bytes = std::fs::read(program).map_err(|e| Error::io(program, e))?;
    let names = program_desc::persistable_names(program, &bytes)?;
    combined::read_combined(params, &names)
}

/// Writes `checkpoint` to `path` in `format`, atomically (temporary name, then
/// rename).
pub fn save_checkpoint(checkpoint: &Checkpoint, path: &Path, format: Format) -> Result<()> {
    if checkpoint.is_empty() {
        return Err(Error::new(path, "refusing to write an empty checkpoint"));
    }
    // As paddle.save: the folder the file goes in is created if needed.
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    match format {
        Format::Dir => dir::write_dir(checkpoint, path),
        Format::Tar => archive::write_archive(checkpoint, path),
        Format::Pdparams => pickle::write_pickle(checkpoint, path),
        Format::Safetensors => safetensors_io::write_safetensors(checkpoint, path),
        Format::Combined => write_combined_with_program(checkpoint, path),
    }
}

/// Combined params plus a program naming them, so the result reads back. An
/// existing program beside `X.pdiparams` (an inference model being updated)
/// is kept when it names exactly these variables, and is an error otherwise.
fn write_combined_with_program(checkpoint: &Checkpoint, path: &Path) -> Result<()> {
    let (params, program) = if path.extension().is_some_and(|e| e == "pdiparams") {
        (path.to_path_buf(), path.with_extension("pdmodel"))
    } else if path.file_name().is_some_and(|n| n == "__params__") {
        (path.to_path_buf(), path.with_file_name("__model__"))
    } else {
        std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))?;
        (path.join("__params__"), path.join("__model__"))
    };
    if program.is_file() {
        let bytes = std::fs::read(&program).map_err(|e| Error::io(&program, e))?;
        let names = program_desc::persistable_names(&program, &bytes)?;
        let mut ours: Vec<&str> = checkpoint.names().collect();
        ours.sort();
        if names != ours {
            return Err(Error::new(
                &program,
                "existing program names other variables than the checkpoint; remove it or write elsewhere",
            ));
        }
    } else {
        crate::atomic::write_bytes(&program, &program_desc::encode_program(checkpoint))?;
    }
    combined::write_combined(checkpoint, &params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::RawTensor;
    use crate::paddle::tensor_file::tests::arb_tensor;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Every format, every dtype, 0-d and zero-size shapes: what is written
        /// reads back identical (LoD only where the format stores it).
        #[test]
        fn write_read_is_identity_for_every_format(
            tensors in proptest::collection::vec(arb_tensor(), 1..5),
        ) {
            let mut c = Checkpoint::new();
            for (i, t) in tensors.into_iter().enumerate() {
                c.insert(format!("layer_{i}.w_0"), t);
            }
            let tmp = tempfile::tempdir().unwrap();
            for name in ["d", "m.tar", "m.tgz", "m.pdparams", "m.safetensors", "m.pdiparams"] {
                let path = tmp.path().join(name);
                let format = Format::from_path(&path);
                save_checkpoint(&c, &path, format).unwrap();
                let back = load_checkpoint(&path).unwrap();
                let keeps_lod = !matches!(format, Format::Pdparams | Format::Safetensors);
                prop_assert_eq!(back.len(), c.len());
                for (n, t) in c.iter() {
                    let b = back.get(n).unwrap();
                    prop_assert_eq!((b.dtype, &b.shape, &b.bytes), (t.dtype, &t.shape, &t.bytes));
                    if keeps_lod {
                        prop_assert_eq!(&b.lod, &t.lod);
                    }
                }
            }
        }
    }

    fn sample() -> Checkpoint {
        let mut c = Checkpoint::new();
        c.insert("conv.w", RawTensor::from_f32(vec![2, 1], &[1.0, -2.0]));
        c.insert("bn_mean", RawTensor::from_f32(vec![], &[0.5]));
        c
    }

    fn same_tensors(a: &Checkpoint, b: &Checkpoint) {
        assert_eq!(a.len(), b.len());
        for (name, t) in a.iter() {
            assert_eq!(b.get(name), Some(t), "{name}");
        }
    }

    #[test]
    fn every_format_reads_back_through_detection() {
        let tmp = tempfile::tempdir().unwrap();
        for name in [
            "d",
            "m.tar",
            "m.tgz",
            "m.pdparams",
            "m.safetensors",
            "m.pdiparams",
            "inf",
            "x/__params__",
        ] {
            let path = tmp.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let format = if name == "inf" {
                Format::Combined
            } else {
                Format::from_path(&path)
            };
            save_checkpoint(&sample(), &path, format).unwrap();
            same_tensors(&sample(), &load_checkpoint(&path).unwrap());
        }
        // Content detection without the extensions.
        for (name, renamed) in [
            ("m.safetensors", "st"),
            ("m.pdparams", "pk"),
            ("m.tgz", "gz"),
        ] {
            std::fs::rename(tmp.path().join(name), tmp.path().join(renamed)).unwrap();
            same_tensors(
                &sample(),
                &load_checkpoint(&tmp.path().join(renamed)).unwrap(),
            );
        }
        let single = tmp.path().join("d/conv.w");
        assert_eq!(
            load_checkpoint(&single)
                .unwrap()
                .names()
                .collect::<Vec<_>>(),
            ["conv.w"]
        );
        std::fs::rename(tmp.path().join("pk"), tmp.path().join("m.pdparams")).unwrap();
        same_tensors(&sample(), &load_checkpoint(&tmp.path().join("m")).unwrap());
        let program = tmp.path().join("m.pdmodel");
        same_tensors(&sample(), &load_checkpoint(&program).unwrap());
    }

    #[test]
    fn missing_parent_folders_are_created() {
        let tmp = tempfile::tempdir().unwrap();
        for name in [
            "a/m.pdparams",
            "b/m.safetensors",
            "c/m.tar",
            "d/m.pdiparams",
            "e/__params__",
            "f/g/dir",
        ] {
            let path = tmp.path().join(name);
            save_checkpoint(&sample(), &path, Format::from_path(&path)).unwrap();
            same_tensors(&sample(), &load_checkpoint(&path).unwrap());
        }
    }

    #[test]
    fn clear_errors_for_missing_and_unknown_input() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("nope");
        assert!(load_checkpoint(&missing)
            .unwrap_err()
            .to_string()
            .contains("no such file"));
        let junk = tmp.path().join("junk.bin");
        std::fs::write(&junk, b"hello").unwrap();
        let err = load_checkpoint(&junk).unwrap_err().to_string();
        assert!(
            err.contains("junk.bin") && err.contains("not a recognised"),
            "{err}"
        );
        let lonely = tmp.path().join("a.pdiparams");
        std::fs::write(&lonely, b"").unwrap();
        assert!(load_checkpoint(&lonely)
            .unwrap_err()
            .to_string()
            .contains("a.pdmodel"));
        let mut other = sample();
        other.insert("extra", RawTensor::from_f32(vec![1], &[1.0]));
        let p = tmp.path().join("m.pdiparams");
        save_checkpoint(&sample(), &p, Format::Combined).unwrap();
        assert!(save_checkpoint(&other, &p, Format::Combined).is_err());
    }
}
