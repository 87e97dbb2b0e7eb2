//! Writes files so that an interrupted write never leaves a half file under the
//! real name: everything goes to `NAME.tmp-PID` beside it, is flushed and
//! synced, then renamed over the destination.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The temporary name used while `path` is being written.
pub fn temp_name(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

/// Calls `write` with a buffered writer on a temporary file, then renames it to
/// `path`. On any error the temporary file is removed and `path` is untouched.
pub fn write_file<F>(path: &Path, write: F) -> Result<()>
where
    F: FnOnce(&mut BufWriter<File>) -> Result<()>,
{
    let tmp = temp_name(path);
    let result = (|| {
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        write(&mut out)?;
        let file = out
            .into_inner()
            .map_err(|e| Error::io(&tmp, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// For writers that insist on opening the file themselves: `write` creates
/// the file at the temporary path it is given; it is then synced and renamed
/// to `path`, or removed on error.
pub fn write_through_path<F>(path: &Path, write: F) -> Result<()>
where
    F: FnOnce(&Path) -> Result<()>,
{
    let tmp = temp_name(path);
    let result = write(&tmp).and_then(|()| {
        let file = File::open(&tmp).map_err(|e| Error::io(&tmp, e))?;
        file.sync_all().map_err(|e| Error::io(&tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Writes a whole byte buffer atomically.
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    write_file(path, |out| {
        out.write_all(bytes).map_err(|e| Error::io(path, e))
    })
}

/// Builds a directory under a temporary name with `fill`, then renames it to
/// `path`, replacing an existing directory only after the new one is complete.
pub fn write_dir<F>(path: &Path, fill: F) -> Result<()>
where
    F: FnOnce(&Path) -> Result<()>,
{
    let tmp = temp_name(path);
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    if let Err(e) = fill(&tmp) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if path.exists() {
        let old = path.with_file_name(format!(
            "{}.old-{}",
            path.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id()
        ));
        fs::rename(path, &old).map_err(|e| Error::io(path, e))?;
        fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
        let _ = fs::remove_dir_all(&old);
        Ok(())
    } else {
        fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.pdparams");
        write_bytes(&path, b"old").unwrap();
        let err = write_file(&path, |out| {
            out.write_all(b"partial").unwrap();
            Err(Error::new(&path, "interrupted"))
        });
        assert!(err.is_err());
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn directory_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model_final");
        write_dir(&path, |d| write_bytes(&d.join("a"), b"1")).unwrap();
        write_dir(&path, |d| write_bytes(&d.join("b"), b"2")).unwrap();
        assert!(!path.join("a").exists());
        assert_eq!(fs::read(path.join("b")).unwrap(), b"2");
    }
}
