//! Model-zoo archives: a `.tar` (or gzipped `.tar.gz`/`.tgz`) holding the
//! per-variable files of [`super::dir`], inside one top-level folder (named
//! after the archive) or at the root. An archive holding an inference model
//! (`__params__` or `*.pdiparams` with its program) is read as combined params.
//!
//! A plain tar is memory-mapped and each tensor borrows its bytes from the map;
//! a gzipped one is inflated into one buffer first. Entries that could escape
//! a directory when unpacked (`..`, absolute paths) and links are refused.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::ops::Range;
use std::path::{Component, Path};

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;

use super::{combined, dir, program_desc, tensor_file};
use crate::atomic;
use crate::checkpoint::{Checkpoint, Storage};
use crate::error::{Error, Result};

pub fn is_gzip(data: &[u8]) -> bool {
    data.starts_with(&[0x1f, 0x8b])
}

/// Reads a `.tar`, `.tar.gz` or `.tgz` (gzip is recognised by its magic).
pub fn read_archive(path: &Path) -> Result<Checkpoint> {
    let mapped = Storage::map_file(path)?;
    let storage = if is_gzip(mapped.as_slice()) {
        Storage::from_vec(inflate(path, mapped.as_slice())?)
    } else {
        mapped
    };
    read_tar(path, &storage)
}

/// Deflate never expands data by more than this (its stored-block limit is
/// about 1032:1).
const DEFLATE_MAX_RATIO: usize = 1032;

/// Checkpoints' float weights barely compress (about 1.1:1): the buffer
/// reserved up front is at most this many times the file, and grows past it
/// only as inflated data actually arrives.
const RESERVE_RATIO: usize = 4;

/// Inflates a gzip file into one buffer. Its trailer's ISIZE (the inflated
/// length, mod 2^32), capped by what deflate can produce from the file's
/// size, bounds the read: a stream that inflates past what it declares (a
/// decompression bomb, or a gzip over 4 GiB) is an error, not an allocation
/// without end. The trailer is not trusted for the reservation: a lying one
/// (4 GiB for a file of a few MB) would reserve that much before the stream
/// is found short. flate2 checks the trailer's CRC and length when the
/// stream ends.
fn inflate(path: &Path, gz: &[u8]) -> Result<Vec<u8>> {
    let trailer = gz
        .len()
        .checked_sub(4)
        .map(|at| u32::from_le_bytes([gz[at], gz[at + 1], gz[at + 2], gz[at + 3]]) as usize)
        .ok_or_else(|| Error::at(path, "gzip trailer", "the file is too short to be gzip"))?;
    let declared = trailer.min(gz.len().saturating_mul(DEFLATE_MAX_RATIO));
    let mut inflated = Vec::with_capacity(declared.min(gz.len().saturating_mul(RESERVE_RATIO)));
    let mut decoder = GzDecoder::new(gz);
    let bad = |e: std::io::Error| Error::at(path, "gzip stream", e.to_string());
    (&mut decoder)
        .take(declared as u64)
        .read_to_end(&mut inflated)
        .map_err(bad)?;
    // Reading on checks the trailer, and finds data beyond what it declares.
    let mut beyond = [0u8; 1];
    if decoder.read(&mut beyond).map_err(bad)? != 0 {
        return Err(Error::at(
            path,
            "gzip trailer",
            format!(
                "the stream inflates to more than the {declared} bytes its trailer declares \
                 (damaged, or over 4 GiB: use a plain .tar)"
            ),
        ));
    }
    Ok(inflated)
}

/// One regular file of the archive: its path components and its data range.
struct Member {
    parts: Vec<String>,
    data: Range<usize>,
}

fn list_members(path: &Path, storage: &Storage) -> Result<Vec<Member>> {
    let bytes = storage.as_slice();
    let bad = |place: &str, e: std::io::Error| Error::at(path, place, e.to_string());
    // Seeking over each member's data instead of reading through it keeps
    // listing a 250 MB archive to its 366 headers.
    let mut archive = tar::Archive::new(std::io::Cursor::new(bytes));
    let mut members = Vec::new();
    let entries = archive
        .entries_with_seek()
        .map_err(|e| bad("tar header", e))?;
    for entry in entries {
        let entry = entry.map_err(|e| bad("tar header", e))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let place = format!("entry {name:?}");
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            continue;
        }
        if kind.is_symlink() || kind.is_hard_link() {
            return Err(Error::at(
                path,
                place,
                "links are not allowed in a checkpoint archive",
            ));
        }
        if !(kind.is_file() || kind == tar::EntryType::Continuous) {
            return Err(Error::at(
                path,
                place,
                format!("unsupported entry type {kind:?}"),
            ));
        }
        let entry_path = entry.path().map_err(|e| bad(&place, e))?;
        let mut parts = Vec::new();
        for component in entry_path.components() {
            match component {
                Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
                Component::CurDir => {}
                _ => {
                    return Err(Error::at(path, place, "path leaves the archive's folder"));
                }
            }
        }
        if parts.is_empty() {
            return Err(Error::at(path, place, "entry has an empty name"));
        }
        let start = entry.raw_file_position() as usize;
        let size = entry.size() as usize;
        if start > bytes.len() || size > bytes.len() - start {
            return Err(Error::at(
                path,
                place,
                "entry data runs past the end of the archive",
            ));
        }
        members.push(Member {
            parts,
            data: start..start + size,
        });
    }
    Ok(members)
}

fn read_tar(path: &Path, storage: &Storage) -> Result<Checkpoint> {
    let mut members = list_members(path, storage)?;
    // One top-level folder around everything is the archive's name, not part
    // of the variable names.
    let first = members.first().map(|m| m.parts[0].clone());
    let one_folder = members
        .iter()
        .all(|m| m.parts.len() > 1 && Some(&m.parts[0]) == first.as_ref());
    if one_folder {
        for m in &mut members {
            m.parts.remove(0);
        }
    }
    let (named, warnings) = last_copies(
        path,
        members
            .into_iter()
            .map(|m| (m.parts.join("/"), m.data))
            .collect(),
    );
    let mut checkpoint = match read_combined_member(path, storage, &named)? {
        Some(checkpoint) => checkpoint,
        None => read_variables(path, storage, named)?,
    };
    checkpoint.warnings = warnings;
    Ok(checkpoint)
}

/// The members with each name's last copy only (extracting the archive
/// would leave that one), and a warning per name given more than once.
fn last_copies(
    path: &Path,
    named: Vec<(String, Range<usize>)>,
) -> (Vec<(String, Range<usize>)>, Vec<String>) {
    // Per name: how many copies, and the index of the last.
    let mut copies: HashMap<&str, (usize, usize)> = HashMap::new();
    for (i, (name, _)) in named.iter().enumerate() {
        let (count, _) = copies.get(name.as_str()).copied().unwrap_or_default();
        copies.insert(name, (count + 1, i));
    }
    let mut warnings = Vec::new();
    let mut last = Vec::new();
    for (i, (name, range)) in named.iter().enumerate() {
        let (count, last_index) = copies[name.as_str()];
        if i != last_index {
            continue;
        }
        if count > 1 {
            warnings.push(format!(
                "{} (entry {name}): the archive holds {count} copies; the last is used, \
                 as extracting the archive would",
                path.display()
            ));
        }
        last.push((name.clone(), range.clone()));
    }
    (last, warnings)
}

/// The per-variable files of an archive that holds no inference model.
fn read_variables(
    path: &Path,
    storage: &Storage,
    named: Vec<(String, Range<usize>)>,
) -> Result<Checkpoint> {
    let mut variables: Vec<_> = named
        .into_iter()
        .filter(|(name, _)| !dir::is_not_a_variable(name))
        .collect();
    if variables.is_empty() {
        return Err(Error::new(path, "archive holds no tensor files"));
    }
    variables.sort_by(|a, b| a.0.cmp(&b.0));
    let mut checkpoint = Checkpoint::new();
    for (name, range) in variables {
        let place = format!("variable {name}");
        let (tensor, used) =
            tensor_file::read_tensor(path, storage, range.clone()).map_err(|e| e.within(&place))?;
        if used != range.len() {
            let extra = range.len() - used;
            return Err(Error::at(
                path,
                place,
                format!("{extra} bytes after the record"),
            ));
        }
        checkpoint.insert(name, tensor);
    }
    Ok(checkpoint)
}

/// An inference-model archive: `__params__` + `__model__`, or `X.pdiparams` +
/// `X.pdmodel`, read as combined params named by the program.
fn read_combined_member(
    path: &Path,
    storage: &Storage,
    named: &[(String, Range<usize>)],
) -> Result<Option<Checkpoint>> {
    let find = |name: &str| {
        named
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, r)| r.clone())
    };
    let params = named
        .iter()
        .find(|(n, _)| n == "__params__" || n.ends_with(".pdiparams"));
    let Some((params_name, params_range)) = params else {
        return Ok(None);
    };
    let program_name = match params_name.strip_suffix(".pdiparams") {
        Some(stem) => format!("{stem}.pdmodel"),
        None => "__model__".to_string(),
    };
    let program = find(&program_name).ok_or_else(|| {
        Error::at(
            path,
            format!("entry {params_name}"),
            format!("combined params need their program {program_name} for names"),
        )
    })?;
    let names = program_desc::persistable_names(path, &storage.as_slice()[program])?;
    combined::read_records(path, storage, params_range.clone(), &names).map(Some)
}

/// Writes a model-zoo archive: a folder named after the archive's stem with
/// one file per variable. Gzipped when the name ends in `.gz` or `.tgz`.
pub fn write_archive(checkpoint: &Checkpoint, path: &Path) -> Result<()> {
    let file_name = path.file_name().unwrap_or_default().to_string_lossy();
    let gzip = file_name.ends_with(".gz") || file_name.ends_with(".tgz");
    let stem = ["tar.gz", "tgz", "tar"]
        .iter()
        .find_map(|ext| file_name.strip_suffix(&format!(".{ext}")))
        .unwrap_or(&file_name)
        .to_string();
    atomic::write_file(path, |out| {
        let io = |e| Error::io(path, e);
        if gzip {
            let mut encoder = GzEncoder::new(out, flate2::Compression::default());
            append_members(checkpoint, &stem, path, &mut encoder)?;
            encoder.finish().map_err(io)?;
        } else {
            append_members(checkpoint, &stem, path, out)?;
        }
        Ok(())
    })
}

fn append_members(
    checkpoint: &Checkpoint,
    folder: &str,
    path: &Path,
    out: &mut impl Write,
) -> Result<()> {
    let io = |e| Error::io(path, e);
    let mut builder = tar::Builder::new(out);
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_mode(0o755);
    header.set_size(0);
    builder
        .append_data(&mut header, folder, std::io::empty())
        .map_err(io)?;
    for (name, tensor) in checkpoint.iter() {
        let relative = dir::safe_relative_path(path, name)?;
        let head = tensor_file::encode_header(tensor);
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size((head.len() + tensor.bytes.len()) as u64);
        let data = head.as_slice().chain(tensor.bytes.as_slice());
        builder
            .append_data(&mut header, Path::new(folder).join(relative), data)
            .map_err(io)?;
    }
    builder.into_inner().map_err(io)?.flush().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::RawTensor;

    fn sample() -> Checkpoint {
        let mut c = Checkpoint::new();
        c.insert(
            "yolo_input.conv.weights",
            RawTensor::from_f32(vec![2], &[1.0, 2.0]),
        );
        c.insert("a.b", RawTensor::from_f32(vec![], &[3.0]));
        c
    }

    #[test]
    fn tar_and_tgz_round_trip_under_one_folder() {
        let tmp = tempfile::tempdir().unwrap();
        for name in ["yolov3.tar", "yolov3.tar.gz", "yolov3.tgz"] {
            let path = tmp.path().join(name);
            write_archive(&sample(), &path).unwrap();
            let back = read_archive(&path).unwrap();
            assert_eq!(
                back.names().collect::<Vec<_>>(),
                ["a.b", "yolo_input.conv.weights"]
            );
            for (n, t) in sample().iter() {
                assert_eq!(back.get(n), Some(t));
            }
        }
    }

    fn raw_tar(name: &[u8], kind: tar::EntryType, data: &[u8]) -> Vec<u8> {
        let mut header = tar::Header::new_old();
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_cksum();
        let mut b = tar::Builder::new(Vec::new());
        b.append(&header, data).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn a_gzip_inflating_past_its_trailer_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("m.tar.gz");
        write_archive(&sample(), &path).unwrap();
        let mut gz = std::fs::read(&path).unwrap();
        let at = gz.len() - 4;
        // Declare 100 inflated bytes: the read stops there and reports it.
        gz[at..].copy_from_slice(&100u32.to_le_bytes());
        std::fs::write(&path, &gz).unwrap();
        let err = read_archive(&path).unwrap_err().to_string();
        assert!(
            err.contains("gzip trailer") && err.contains("more than the 100 bytes"),
            "{err}"
        );
        // A trailer declaring 4 GiB of a few hundred bytes reserves only what
        // deflate could produce from them, and the length check fails.
        gz[at..].copy_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(&path, &gz).unwrap();
        let err = read_archive(&path).unwrap_err().to_string();
        assert!(err.contains("gzip"), "{err}");
    }

    /// A tar holding one member twice: the last copy is used, as
    /// extracting it would, and a warning says so.
    #[test]
    fn a_member_given_twice_uses_the_last_copy_with_a_warning() {
        let tmp = tempfile::tempdir().unwrap();
        let record = |v: f32| {
            let mut r = Vec::new();
            tensor_file::write_tensor(&mut r, &RawTensor::from_f32(vec![1], &[v])).unwrap();
            r
        };
        let mut tar = Vec::new();
        for (name, v) in [("m/x", 1.0), ("m/y", 5.0), ("m/x", 2.0), ("m/x", 3.0)] {
            let one = raw_tar(name.as_bytes(), tar::EntryType::Regular, &record(v));
            // Each raw_tar ends with the two zero blocks that close an archive.
            tar.extend_from_slice(&one[..one.len() - 1024]);
        }
        tar.extend_from_slice(&[0; 1024]);
        let path = tmp.path().join("m.tar");
        std::fs::write(&path, &tar).unwrap();
        let back = read_archive(&path).unwrap();
        assert_eq!(back.names().collect::<Vec<_>>(), ["x", "y"]);
        assert_eq!(back.get("x").unwrap().to_f32_vec(), [3.0]);
        assert_eq!(back.warnings.len(), 1, "{:?}", back.warnings);
        let warning = &back.warnings[0];
        assert!(
            warning.contains("m.tar (entry x): the archive holds 3 copies; the last is used"),
            "{warning}"
        );
        // Without duplicates there is nothing to say.
        std::fs::write(
            &path,
            raw_tar(b"m/x", tar::EntryType::Regular, &record(1.0)),
        )
        .unwrap();
        assert!(read_archive(&path).unwrap().warnings.is_empty());
    }

    #[test]
    fn refuses_escaping_paths_and_links() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("bad.tar");
        let mut record = Vec::new();
        tensor_file::write_tensor(&mut record, &RawTensor::from_f32(vec![1], &[1.0])).unwrap();
        let cases: [(&[u8], tar::EntryType, &str); 3] = [
            (b"m/../x", tar::EntryType::Regular, "leaves"),
            (b"/etc/x", tar::EntryType::Regular, "leaves"),
            (b"m/x", tar::EntryType::Symlink, "links"),
        ];
        for (name, kind, message) in cases {
            std::fs::write(&path, raw_tar(name, kind, &record)).unwrap();
            let err = read_archive(&path).unwrap_err().to_string();
            assert!(err.contains(message), "{err}");
        }
        std::fs::write(&path, raw_tar(b"m/x", tar::EntryType::Regular, &record)).unwrap();
        assert_eq!(
            read_archive(&path).unwrap().names().collect::<Vec<_>>(),
            ["x"]
        );
        std::fs::write(&path, raw_tar(b"x", tar::EntryType::Regular, &record)).unwrap();
        assert_eq!(
            read_archive(&path).unwrap().names().collect::<Vec<_>>(),
            ["x"]
        );
    }

    #[test]
    fn reads_an_inference_model_archive_as_combined() {
        let tmp = tempfile::tempdir().unwrap();
        let c = sample();
        let mut params = Vec::new();
        combined::write_records(&c, &mut params).unwrap();
        let program = program_desc::encode_program(&c);
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in [("inf/__params__", &params), ("inf/__model__", &program)] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            b.append_data(&mut h, name, data.as_slice()).unwrap();
        }
        let path = tmp.path().join("inf.tar");
        std::fs::write(&path, b.into_inner().unwrap()).unwrap();
        let back = read_archive(&path).unwrap();
        assert_eq!(back.get("a.b"), c.get("a.b"));
        assert_eq!(back.len(), 2);
    }
}
