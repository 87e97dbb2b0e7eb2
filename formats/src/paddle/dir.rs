//! The legacy model-zoo layout: a directory with one tensor file per variable
//! (`save_persistables`), the variable name being the file's path relative to
//! the directory with `/` separators.

use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Component, Path, PathBuf};

use super::tensor_file;
use crate::atomic;
use crate::checkpoint::{Checkpoint, Storage};
use crate::error::{Error, Result};

/// Files in a variable directory that are not variables: the program of an
/// inference model and hidden files (editor and OS litter).
pub fn is_not_a_variable(name: &str) -> bool {
    let base = name.rsplit('/').next().unwrap_or(name);
    base == "__model__" || base.ends_with(".pdmodel") || base.starts_with('.')
}

/// Reads every file under `dir` as one variable, in name order.
pub fn read_dir(dir: &Path) -> Result<Checkpoint> {
    let mut files = Vec::new();
    collect_files(dir, dir, &mut files)?;
    files.retain(|(name, _)| !is_not_a_variable(name));
    if files.is_empty() {
        return Err(Error::new(dir, "directory holds no tensor files"));
    }
    files.sort();
    let mut checkpoint = Checkpoint::new();
    for (name, path) in files {
        let storage = Storage::map_file(&path)?;
        let tensor = tensor_file::read_single(&path, &storage)
            .map_err(|e| e.within(format!("variable {name}")))?;
        checkpoint.insert(name, tensor);
    }
    Ok(checkpoint)
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| Error::io(&path, e))?;
        if kind.is_dir() {
            collect_files(root, &path, out)?;
        } else {
            let relative = path.strip_prefix(root).expect("walked from root");
            let name = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            out.push((name, path));
        }
    }
    Ok(())
}

/// The relative path a variable is stored under; refuses names that would
/// escape the directory.
pub fn safe_relative_path(file: &Path, name: &str) -> Result<PathBuf> {
    let path = Path::new(name);
    let plain = path.components().all(|c| matches!(c, Component::Normal(_)));
    if name.is_empty() || !plain {
        return Err(Error::at(
            file,
            format!("variable {name:?}"),
            "name cannot be used as a file path",
        ));
    }
    Ok(path.to_path_buf())
}

/// Writes one file per tensor into a new directory `dir`. An existing `dir`
/// is replaced whole, but only when it is empty or itself a checkpoint
/// directory: a mistyped output path must never wipe unrelated files.
pub fn write_dir(checkpoint: &Checkpoint, dir: &Path) -> Result<()> {
    if dir.exists() {
        let empty = fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_none());
        if !empty && read_dir(dir).is_err() {
            return Err(Error::new(
                dir,
                "exists and is not a checkpoint directory; not replacing it",
            ));
        }
    }
    atomic::write_dir(dir, |tmp| {
        let mut written = Vec::with_capacity(checkpoint.len());
        for (name, tensor) in checkpoint.iter() {
            let path = tmp.join(safe_relative_path(dir, name)?);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            }
            let file = File::create(&path).map_err(|e| Error::io(&path, e))?;
            let mut out = BufWriter::new(file);
            tensor_file::write_tensor(&mut out, tensor).map_err(|e| Error::io(&path, e))?;
            let file = out
                .into_inner()
                .map_err(|e| Error::io(&path, e.into_error()))?;
            written.push((path, file));
        }
        sync_all_files(written)
    })
}

/// Syncs every file before the directory is renamed into place. One fsync
/// per file in turn costs a disk flush each (about 5 s for 366 files); issued
/// from several threads at once the kernel merges them into far fewer.
fn sync_all_files(files: Vec<(PathBuf, File)>) -> Result<()> {
    const THREADS: usize = 8;
    let chunk = files.len().div_ceil(THREADS).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    for (path, file) in part {
                        file.sync_all().map_err(|e| Error::io(path, e))?;
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().expect("sync thread does not panic"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::RawTensor;

    #[test]
    fn round_trips_nested_names_and_skips_the_program() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("model");
        let mut c = Checkpoint::new();
        c.insert("b.w", RawTensor::from_f32(vec![2], &[1.0, 2.0]));
        c.insert("a/x", RawTensor::from_f32(vec![], &[3.0]));
        write_dir(&c, &dir).unwrap();
        fs::write(dir.join("__model__"), b"program").unwrap();
        let back = read_dir(&dir).unwrap();
        assert_eq!(back.names().collect::<Vec<_>>(), ["a/x", "b.w"]);
        assert_eq!(back.get("a/x"), c.get("a/x"));
        assert_eq!(back.get("b.w"), c.get("b.w"));
    }

    #[test]
    fn errors_name_the_file_and_variable() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(read_dir(tmp.path())
            .unwrap_err()
            .to_string()
            .contains("no tensor files"));
        fs::write(tmp.path().join("conv1_weights"), [0u8; 10]).unwrap();
        let err = read_dir(tmp.path()).unwrap_err().to_string();
        assert!(
            err.contains("conv1_weights (variable conv1_weights, byte 4)"),
            "{err}"
        );
        let mut c = Checkpoint::new();
        c.insert("../evil", RawTensor::from_f32(vec![1], &[1.0]));
        assert!(write_dir(&c, &tmp.path().join("out")).is_err());
        // A directory of other files is not replaced.
        let mut ok = Checkpoint::new();
        ok.insert("w", RawTensor::from_f32(vec![1], &[1.0]));
        let err = write_dir(&ok, tmp.path()).unwrap_err().to_string();
        assert!(err.contains("not a checkpoint directory"), "{err}");
        assert!(tmp.path().join("conv1_weights").exists());
    }
}
