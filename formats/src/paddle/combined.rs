//! Combined params (`__params__`, `*.pdiparams`, written by `save_combine`):
//! tensor records back to back, no count and no names. The names come from the
//! ProgramDesc beside the file or from a list the caller gives; records are in
//! Python `sorted()` order of the names.

use std::io::Write;
use std::ops::Range;
use std::path::Path;

use super::tensor_file;
use crate::atomic;
use crate::checkpoint::{Checkpoint, Storage};
use crate::error::{Error, Result};

/// Reads the records in `range` of `storage`, naming them with `names` in
/// order; the count must match exactly.
pub fn read_records(
    file: &Path,
    storage: &Storage,
    range: Range<usize>,
    names: &[String],
) -> Result<Checkpoint> {
    let mut checkpoint = Checkpoint::new();
    let mut offset = range.start;
    for name in names {
        if offset >= range.end {
            return Err(Error::at(
                file,
                format!("variable {name}"),
                format!(
                    "file ends after {} records but the program names {}",
                    checkpoint.len(),
                    names.len()
                ),
            ));
        }
        let (tensor, used) = tensor_file::read_tensor(file, storage, offset..range.end)
            .map_err(|e| e.within(format!("variable {name}")))?;
        offset += used;
        checkpoint.insert(name.clone(), tensor);
    }
    if offset != range.end {
        return Err(Error::at(
            file,
            format!("byte {}", offset - range.start),
            format!(
                "{} bytes left after the {} named records (names do not match the file?)",
                range.end - offset,
                names.len()
            ),
        ));
    }
    Ok(checkpoint)
}

/// Reads a combined file whose record names the caller knows (any order: they
/// are sorted here as `save_combine` sorted them).
pub fn read_combined(params: &Path, names: &[String]) -> Result<Checkpoint> {
    let mut sorted = names.to_vec();
    sorted.sort();
    let storage = Storage::map_file(params)?;
    let len = storage.as_slice().len();
    read_records(params, &storage, 0..len, &sorted)
}

/// The records in sorted-name order, as `save_combine` writes them.
pub fn write_records(checkpoint: &Checkpoint, out: &mut impl Write) -> std::io::Result<()> {
    let mut entries: Vec<_> = checkpoint.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    for (_, tensor) in entries {
        tensor_file::write_tensor(out, tensor)?;
    }
    Ok(())
}

pub fn write_combined(checkpoint: &Checkpoint, params: &Path) -> Result<()> {
    atomic::write_file(params, |out| {
        write_records(checkpoint, out).map_err(|e| Error::io(params, e))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::RawTensor;

    #[test]
    fn names_are_matched_in_sorted_order() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("__params__");
        let mut c = Checkpoint::new();
        c.insert("b_w", RawTensor::from_f32(vec![1], &[1.0]));
        c.insert("b.w", RawTensor::from_f32(vec![2], &[2.0, 3.0]));
        write_combined(&c, &path).unwrap();
        let names = ["b_w".to_string(), "b.w".to_string()];
        let back = read_combined(&path, &names).unwrap();
        assert_eq!(back.names().collect::<Vec<_>>(), ["b.w", "b_w"]);
        assert_eq!(back.get("b_w"), c.get("b_w"));
        let err = read_combined(&path, &names[..1]).unwrap_err().to_string();
        assert!(err.contains("bytes left"), "{err}");
        let three = [names.to_vec(), vec!["c".into()]].concat();
        let err = read_combined(&path, &three).unwrap_err().to_string();
        assert!(
            err.contains("variable c") && err.contains("ends after 2"),
            "{err}"
        );
    }
}
