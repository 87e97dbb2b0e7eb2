//! The checkpoint type every reader produces and every writer consumes: an
//! ordered map from variable name to a raw tensor (dtype, shape, bytes).
//!
//! Bytes are shared, not copied: a memory-mapped file or one read buffer is held
//! behind an `Arc`, and each tensor is a range of it.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

/// Element types Paddle checkpoints use (complex types are refused by readers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
    F64,
    I8,
    I16,
    I32,
    I64,
    U8,
    Bool,
}

impl DType {
    pub const ALL: [DType; 10] = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::F64,
        DType::I8,
        DType::I16,
        DType::I32,
        DType::I64,
        DType::U8,
        DType::Bool,
    ];

    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    /// The numpy-style name used by `inspect` and in JSON output.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
            DType::F64 => "float64",
            DType::I8 => "int8",
            DType::I16 => "int16",
            DType::I32 => "int32",
            DType::I64 => "int64",
            DType::U8 => "uint8",
            DType::Bool => "bool",
        }
    }

    pub fn from_name(name: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.name() == name)
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16 | DType::F64)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Backing memory shared by many tensors.
#[derive(Clone)]
pub enum Storage {
    Owned(Arc<Vec<u8>>),
    Mapped(Arc<memmap2::Mmap>),
}

impl Storage {
    pub fn from_vec(v: Vec<u8>) -> Self {
        Storage::Owned(Arc::new(v))
    }

    /// Memory-maps a whole file read-only (an empty file becomes an empty
    /// buffer: mapping zero bytes is an error on some systems).
    pub fn map_file(path: &std::path::Path) -> crate::Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| crate::Error::io(path, e))?;
        let len = file
            .metadata()
            .map_err(|e| crate::Error::io(path, e))?
            .len();
        if len == 0 {
            return Ok(Storage::from_vec(Vec::new()));
        }
        // SAFETY: the map is read-only; like every mmap reader we rely on the
        // file not being truncated by another process while it is in use.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| crate::Error::io(path, e))?;
        Ok(Storage::Mapped(Arc::new(map)))
    }

    pub fn as_slice(&self) -> &[u8] {
        match self {
            Storage::Owned(v) => v,
            Storage::Mapped(m) => m,
        }
    }
}

/// A byte range of a shared storage; cheap to clone.
#[derive(Clone)]
pub struct Bytes {
    storage: Storage,
    range: Range<usize>,
}

impl Bytes {
    pub fn from_vec(v: Vec<u8>) -> Self {
        let len = v.len();
        Bytes {
            storage: Storage::Owned(Arc::new(v)),
            range: 0..len,
        }
    }

    /// A sub-range of `storage`; the caller has checked the range fits.
    pub fn slice_of(storage: &Storage, range: Range<usize>) -> Self {
        assert!(range.end <= storage.as_slice().len() && range.start <= range.end);
        Bytes {
            storage: storage.clone(),
            range,
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.storage.as_slice()[self.range.clone()]
    }

    pub fn len(&self) -> usize {
        self.range.len()
    }

    pub fn is_empty(&self) -> bool {
        self.range.is_empty()
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes({} bytes)", self.len())
    }
}

impl PartialEq for Bytes {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

/// One stored tensor: little-endian, row-major bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// Paddle LoD offsets (empty for parameters); kept so files round-trip.
    pub lod: Vec<Vec<u64>>,
    pub bytes: Bytes,
}

impl RawTensor {
    /// Builds a tensor, checking the byte length matches dtype and shape.
    pub fn new(dtype: DType, shape: Vec<usize>, bytes: Bytes) -> Result<Self, String> {
        let expected = shape
            .iter()
            .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| format!("shape {shape:?} overflows"))?;
        if expected != bytes.len() {
            return Err(format!(
                "shape {shape:?} of {dtype} needs {expected} bytes, have {}",
                bytes.len()
            ));
        }
        Ok(RawTensor {
            dtype,
            shape,
            lod: Vec::new(),
            bytes,
        })
    }

    pub fn from_f32(shape: Vec<usize>, values: &[f32]) -> Self {
        let bytes = Bytes::from_vec(bytemuck::cast_slice(values).to_vec());
        RawTensor::new(DType::F32, shape, bytes).expect("length matches shape")
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Casts a floating tensor to another floating type (through f64, which
    /// holds every f16/bf16/f32 value exactly, so each value is rounded once).
    /// Non-floating tensors and same-type casts are returned unchanged.
    pub fn cast_float(&self, to: DType) -> RawTensor {
        if !self.dtype.is_float() || !to.is_float() || self.dtype == to {
            return self.clone();
        }
        let b = self.bytes.as_slice();
        let values: Vec<f64> = match self.dtype {
            DType::F64 => b
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
            _ => self.to_f32_vec().into_iter().map(f64::from).collect(),
        };
        let out: Vec<u8> = match to {
            DType::F64 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            DType::F32 => values
                .iter()
                .flat_map(|&v| (v as f32).to_le_bytes())
                .collect(),
            DType::F16 => values
                .iter()
                .flat_map(|&v| half::f16::from_f64(v).to_le_bytes())
                .collect(),
            DType::BF16 => values
                .iter()
                .flat_map(|&v| half::bf16::from_f64(v).to_le_bytes())
                .collect(),
            _ => unreachable!("checked is_float above"),
        };
        RawTensor {
            dtype: to,
            shape: self.shape.clone(),
            lod: self.lod.clone(),
            bytes: Bytes::from_vec(out),
        }
    }

    /// Values as f32, converting from any floating type (integers too, as Paddle
    /// would when a model parameter is float). Bytes are little-endian.
    pub fn to_f32_vec(&self) -> Vec<f32> {
        let b = self.bytes.as_slice();
        match self.dtype {
            DType::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            DType::F16 => b
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            DType::BF16 => b
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            DType::F64 => b
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect(),
            DType::I8 => b.iter().map(|&v| v as i8 as f32).collect(),
            DType::U8 | DType::Bool => b.iter().map(|&v| v as f32).collect(),
            DType::I16 => b
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as f32)
                .collect(),
            DType::I32 => b
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32)
                .collect(),
            DType::I64 => b
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect(),
        }
    }
}

/// Named tensors in file order, with lookup by name.
///
/// `metadata` holds the non-tensor values a `.pdparams`/`.pdopt` pickle carries
/// (`LR_Scheduler`, `StructuredToParameterName@@`, ...) as JSON, so that such a
/// file can be written back; formats without a place for them drop them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Checkpoint {
    entries: Vec<(String, RawTensor)>,
    index: HashMap<String, usize>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// What the reader accepted but the user should hear of (an archive
    /// member given twice), one line each; the caller shows them.
    pub warnings: Vec<String>,
}

impl Checkpoint {
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts or replaces; a replaced entry keeps its position.
    pub fn insert(&mut self, name: impl Into<String>, tensor: RawTensor) {
        let name = name.into();
        match self.index.get(&name) {
            Some(&i) => self.entries[i].1 = tensor,
            None => {
                self.index.insert(name.clone(), self.entries.len());
                self.entries.push((name, tensor));
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<&RawTensor> {
        self.index.get(name).map(|&i| &self.entries[i].1)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &RawTensor)> {
        self.entries.iter().map(|(n, t)| (n.as_str(), t))
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(n, _)| n.as_str())
    }

    pub fn total_bytes(&self) -> usize {
        self.entries.iter().map(|(_, t)| t.bytes.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_keeps_order_and_replaces_in_place() {
        let mut c = Checkpoint::new();
        c.insert("b", RawTensor::from_f32(vec![1], &[1.0]));
        c.insert("a", RawTensor::from_f32(vec![2], &[2.0, 3.0]));
        c.insert("b", RawTensor::from_f32(vec![1], &[4.0]));
        assert_eq!(c.names().collect::<Vec<_>>(), ["b", "a"]);
        assert_eq!(c.get("b").unwrap().to_f32_vec(), [4.0]);
    }

    #[test]
    fn new_rejects_wrong_length() {
        assert!(RawTensor::new(DType::F32, vec![3], Bytes::from_vec(vec![0; 8])).is_err());
        assert!(RawTensor::new(DType::F32, vec![usize::MAX, 2], Bytes::from_vec(vec![])).is_err());
    }

    #[test]
    fn converts_half_types() {
        let h: Vec<u8> = [half::f16::from_f32(1.5), half::f16::from_f32(-2.0)]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let t = RawTensor::new(DType::F16, vec![2], Bytes::from_vec(h)).unwrap();
        assert_eq!(t.to_f32_vec(), [1.5, -2.0]);
    }
}
