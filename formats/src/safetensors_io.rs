//! safetensors files through the `safetensors` crate. Reading memory-maps the
//! file and each tensor borrows its bytes from the map. The checkpoint's
//! metadata is stored in the header's `__metadata__` as JSON text per key.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, View};

use crate::atomic;
use crate::checkpoint::{Bytes, Checkpoint, DType, RawTensor, Storage};
use crate::error::{Error, Result};

fn to_safetensors(dtype: DType) -> Dtype {
    match dtype {
        DType::F32 => Dtype::F32,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
        DType::F64 => Dtype::F64,
        DType::I8 => Dtype::I8,
        DType::I16 => Dtype::I16,
        DType::I32 => Dtype::I32,
        DType::I64 => Dtype::I64,
        DType::U8 => Dtype::U8,
        DType::Bool => Dtype::BOOL,
    }
}

fn from_safetensors(dtype: Dtype) -> Option<DType> {
    DType::ALL.into_iter().find(|&d| to_safetensors(d) == dtype)
}

pub fn read_safetensors(path: &Path) -> Result<Checkpoint> {
    let storage = Storage::map_file(path)?;
    let (header_len, metadata) = SafeTensors::read_metadata(storage.as_slice())
        .map_err(|e| Error::at(path, "header", e.to_string()))?;
    let data_start = 8 + header_len;
    let mut checkpoint = Checkpoint::new();
    for name in metadata.offset_keys() {
        let info = metadata
            .info(&name)
            .expect("offset_keys come from the index");
        let dtype = from_safetensors(info.dtype).ok_or_else(|| {
            Error::at(
                path,
                format!("tensor {name}"),
                format!("unsupported dtype {:?}", info.dtype),
            )
        })?;
        let (begin, end) = info.data_offsets;
        // read_metadata has checked the offsets against the file length.
        let bytes = Bytes::slice_of(&storage, data_start + begin..data_start + end);
        let tensor = RawTensor::new(dtype, info.shape.clone(), bytes)
            .map_err(|m| Error::at(path, format!("tensor {name}"), m))?;
        checkpoint.insert(name, tensor);
    }
    for (key, text) in metadata.metadata().iter().flatten() {
        let value = serde_json::from_str(text).unwrap_or(serde_json::Value::String(text.clone()));
        checkpoint.metadata.insert(key.clone(), value);
    }
    Ok(checkpoint)
}

/// A tensor as the `safetensors` serializer sees it; borrows the bytes.
struct TensorView<'a>(&'a RawTensor);

impl View for TensorView<'_> {
    fn dtype(&self) -> Dtype {
        to_safetensors(self.0.dtype)
    }

    fn shape(&self) -> &[usize] {
        &self.0.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.0.bytes.as_slice())
    }

    fn data_len(&self) -> usize {
        self.0.bytes.len()
    }
}

/// Writes a safetensors file (LoD offsets have no place there and are dropped).
pub fn write_safetensors(checkpoint: &Checkpoint, path: &Path) -> Result<()> {
    let metadata: HashMap<String, String> = checkpoint
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect();
    let metadata = (!metadata.is_empty()).then_some(metadata);
    let tensors = checkpoint.iter().map(|(n, t)| (n, TensorView(t)));
    // Straight to the file: serialize() would first copy every tensor into
    // one buffer.
    atomic::write_through_path(path, |tmp| {
        safetensors::serialize_to_file(tensors, metadata, tmp)
            .map_err(|e| Error::new(path, format!("cannot write safetensors: {e}")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_dtype_and_metadata() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("m.safetensors");
        let mut c = Checkpoint::new();
        for (i, dtype) in DType::ALL.into_iter().enumerate() {
            let bytes = Bytes::from_vec((0..dtype.size() * 3).map(|b| b as u8 + i as u8).collect());
            c.insert(
                format!("t{i}"),
                RawTensor::new(dtype, vec![3], bytes).unwrap(),
            );
        }
        c.metadata
            .insert("LR_Scheduler".into(), serde_json::json!({"last_epoch": 3}));
        write_safetensors(&c, &path).unwrap();
        let back = read_safetensors(&path).unwrap();
        assert_eq!(back.len(), c.len());
        for (name, t) in c.iter() {
            assert_eq!(back.get(name), Some(t), "{name}");
        }
        assert_eq!(back.metadata, c.metadata);
        std::fs::write(&path, [9u8; 12]).unwrap();
        assert!(read_safetensors(&path)
            .unwrap_err()
            .to_string()
            .contains("header"));
    }
}
