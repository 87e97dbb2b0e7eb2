//! One serialized Paddle LoDTensor (spec `paddle-formats.md` section 1): the
//! record `save_vars` writes to a per-variable file and `save_combine`
//! concatenates into `__params__`.
//!
//! ```text
//! u32 LoDTensor version (0) | u64 lod_level | per level: u64 byte size, offsets
//! u32 Tensor version (0)    | i32 desc size | TensorDesc protobuf | data
//! ```
//!
//! Every length read from the file is checked against the bytes left before it
//! is used, so a lying header gives an error, never a huge allocation.

use std::io::{self, Write};
use std::ops::Range;
use std::path::Path;

use super::protobuf::{self, Value};
use crate::checkpoint::{Bytes, DType, RawTensor, Storage};
use crate::error::{Error, Result};

/// Paddle's `VarType` code for each element type.
pub fn paddle_code(dtype: DType) -> u64 {
    match dtype {
        DType::Bool => 0,
        DType::I16 => 1,
        DType::I32 => 2,
        DType::I64 => 3,
        DType::F16 => 4,
        DType::F32 => 5,
        DType::F64 => 6,
        DType::U8 => 20,
        DType::I8 => 21,
        DType::BF16 => 22,
    }
}

pub fn dtype_from_code(code: u64) -> std::result::Result<DType, String> {
    Ok(match code {
        0 => DType::Bool,
        1 => DType::I16,
        2 => DType::I32,
        3 => DType::I64,
        4 => DType::F16,
        5 => DType::F32,
        6 => DType::F64,
        20 => DType::U8,
        21 => DType::I8,
        22 => DType::BF16,
        19 => return Err("data type SIZE_T (19) is not supported".into()),
        23 | 24 => return Err(format!("complex data type {code} is not supported")),
        _ => return Err(format!("unknown data type {code}")),
    })
}

/// Parses a TensorDesc: field 1 data type, field 2 dims (unpacked or packed).
pub fn parse_desc(desc: &[u8]) -> std::result::Result<(DType, Vec<i64>), String> {
    let mut dtype = None;
    let mut dims = Vec::new();
    for field in protobuf::fields(desc) {
        match field? {
            (1, Value::Varint(code)) => dtype = Some(dtype_from_code(code)?),
            (2, Value::Varint(d)) => dims.push(d as i64),
            (2, Value::Bytes(packed)) => {
                let mut pos = 0;
                while pos < packed.len() {
                    dims.push(protobuf::read_varint(packed, &mut pos)? as i64);
                }
            }
            (1 | 2, other) => return Err(format!("TensorDesc field has wrong type: {other:?}")),
            _ => {} // fields added by later Paddle versions
        }
    }
    let dtype = dtype.ok_or("TensorDesc has no data type")?;
    Ok((dtype, dims))
}

pub fn encode_desc(dtype: DType, shape: &[usize]) -> Vec<u8> {
    let mut desc = Vec::new();
    protobuf::write_varint_field(&mut desc, 1, paddle_code(dtype));
    for &d in shape {
        protobuf::write_varint_field(&mut desc, 2, d as u64);
    }
    desc
}

/// A position in a byte buffer that reports short reads with the file and offset.
struct Reader<'a> {
    file: &'a Path,
    data: &'a [u8],
    pos: usize,
    /// Offset of `data` in the file, so errors give file offsets.
    base: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let left = self.data.len() - self.pos;
        if n > left {
            return Err(Error::at(
                self.file,
                format!("byte {}", self.base + self.pos),
                format!("{what} needs {n} bytes but only {left} are left (truncated file?)"),
            ));
        }
        let bytes = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4, what)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8, what)?.try_into().expect("8 bytes"),
        ))
    }

    fn error(&self, at: usize, message: impl Into<String>) -> Error {
        Error::at(self.file, format!("byte {}", self.base + at), message)
    }
}

/// Reads one record from the start of `within` (a byte range of `storage`,
/// which the record may not pass); returns the tensor (its bytes borrow
/// `storage`, no copy) and the number of bytes the record used. `file` only
/// names the source in errors.
pub fn read_tensor(
    file: &Path,
    storage: &Storage,
    within: Range<usize>,
) -> Result<(RawTensor, usize)> {
    let data = &storage.as_slice()[within.clone()];
    let mut r = Reader {
        file,
        data,
        pos: 0,
        base: within.start,
    };
    let start = 0;
    let version = r.u32("LoDTensor version")?;
    if version != 0 {
        return Err(r.error(start, format!("LoDTensor version {version}, expected 0")));
    }
    let lod_level = r.u64("LoD level count")?;
    // Each level costs at least its 8-byte size field.
    if lod_level > ((data.len() - r.pos) / 8) as u64 {
        return Err(r.error(
            start + 4,
            format!("LoD level count {lod_level} exceeds the file"),
        ));
    }
    let mut lod = Vec::with_capacity(lod_level as usize);
    for level in 0..lod_level {
        let at = r.pos;
        let size = r.u64("LoD level size")?;
        if size % 8 != 0 || size > (data.len() - r.pos) as u64 {
            return Err(r.error(at, format!("LoD level {level} claims {size} bytes")));
        }
        let offsets = r.take(size as usize, "LoD offsets")?;
        lod.push(
            offsets
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
        );
    }
    let at = r.pos;
    let version = r.u32("Tensor version")?;
    if version != 0 {
        return Err(r.error(at, format!("Tensor version {version}, expected 0")));
    }
    let at = r.pos;
    let desc_size = r.u32("TensorDesc size")? as i32;
    if desc_size < 0 {
        return Err(r.error(at, format!("negative TensorDesc size {desc_size}")));
    }
    let desc = r.take(desc_size as usize, "TensorDesc")?;
    let (dtype, dims) = parse_desc(desc).map_err(|m| r.error(at + 4, m))?;
    let mut shape = Vec::with_capacity(dims.len());
    for &d in &dims {
        if d < 0 {
            return Err(r.error(at + 4, format!("negative dim {d} in shape {dims:?}")));
        }
        shape.push(d as usize);
    }
    let size = shape
        .iter()
        .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= data.len() - r.pos)
        .ok_or_else(|| {
            r.error(
                r.pos,
                format!(
                    "shape {dims:?} of {dtype} needs more data than the {} bytes left",
                    data.len() - r.pos
                ),
            )
        })?;
    let begin = within.start + r.pos;
    let bytes = Bytes::slice_of(storage, begin..begin + size);
    r.pos += size;
    let tensor = RawTensor {
        dtype,
        shape,
        lod,
        bytes,
    };
    Ok((tensor, r.pos - start))
}

/// Reads a buffer that must hold exactly one record.
pub fn read_single(file: &Path, storage: &Storage) -> Result<RawTensor> {
    let len = storage.as_slice().len();
    let (tensor, used) = read_tensor(file, storage, 0..len)?;
    if used != len {
        return Err(Error::at(
            file,
            format!("byte {used}"),
            format!("{} bytes after the tensor record", len - used),
        ));
    }
    Ok(tensor)
}

/// The record's header (everything before the data).
pub fn encode_header(tensor: &RawTensor) -> Vec<u8> {
    let mut head = Vec::new();
    head.extend_from_slice(&0u32.to_le_bytes());
    head.extend_from_slice(&(tensor.lod.len() as u64).to_le_bytes());
    for level in &tensor.lod {
        head.extend_from_slice(&((level.len() * 8) as u64).to_le_bytes());
        for &offset in level {
            head.extend_from_slice(&offset.to_le_bytes());
        }
    }
    head.extend_from_slice(&0u32.to_le_bytes());
    let desc = encode_desc(tensor.dtype, &tensor.shape);
    head.extend_from_slice(&(desc.len() as i32).to_le_bytes());
    head.extend_from_slice(&desc);
    head
}

pub fn record_len(tensor: &RawTensor) -> usize {
    encode_header(tensor).len() + tensor.bytes.len()
}

pub fn write_tensor(out: &mut impl Write, tensor: &RawTensor) -> io::Result<()> {
    out.write_all(&encode_header(tensor))?;
    out.write_all(tensor.bytes.as_slice())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Any tensor of any dtype, shape (0-d and zero-size included) and LoD.
    pub fn arb_tensor() -> impl Strategy<Value = RawTensor> {
        (
            proptest::sample::select(DType::ALL.to_vec()),
            proptest::collection::vec(0usize..4, 0..4),
            proptest::collection::vec(proptest::collection::vec(any::<u64>(), 0..4), 0..3),
        )
            .prop_flat_map(|(dtype, shape, lod)| {
                let len = shape.iter().product::<usize>() * dtype.size();
                proptest::collection::vec(any::<u8>(), len).prop_map(move |data| RawTensor {
                    dtype,
                    shape: shape.clone(),
                    lod: lod.clone(),
                    bytes: Bytes::from_vec(data),
                })
            })
    }

    fn encode(tensor: &RawTensor) -> Vec<u8> {
        let mut out = Vec::new();
        write_tensor(&mut out, tensor).unwrap();
        out
    }

    fn read(data: Vec<u8>) -> Result<RawTensor> {
        read_single(Path::new("t"), &Storage::from_vec(data))
    }

    #[test]
    fn matches_the_spec_example() {
        let t = RawTensor::from_f32(vec![4], &[1.0, 2.0, 3.0, 4.0]);
        let bytes = encode(&t);
        let head = [
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 8, 5, 16, 4,
        ];
        assert_eq!(&bytes[..24], head);
        assert_eq!(bytes.len(), 24 + 16);
        assert_eq!(encode_desc(DType::F64, &[300])[2..], [0x10, 0xac, 0x02]);
    }

    #[test]
    fn accepts_packed_dims() {
        let mut desc = vec![0x08, 0x05];
        protobuf::write_bytes_field(&mut desc, 2, &[2, 3]);
        let mut data = vec![0u8; 16]; // both versions and lod_level are 0
        data.extend_from_slice(&(desc.len() as i32).to_le_bytes());
        data.extend_from_slice(&desc);
        data.extend_from_slice(&[0u8; 24]);
        let t = read(data).unwrap();
        assert_eq!((t.dtype, t.shape), (DType::F32, vec![2, 3]));
    }

    #[test]
    fn rejects_bad_headers_with_place() {
        let good = encode(&RawTensor::from_f32(vec![2], &[1.0, 2.0]));
        let mut bad_version = good.clone();
        bad_version[0] = 1;
        assert!(read(bad_version)
            .unwrap_err()
            .to_string()
            .contains("version 1"));
        let mut lying_dims = good.clone();
        lying_dims[23] = 0x7f; // dim 127
        assert!(read(lying_dims)
            .unwrap_err()
            .to_string()
            .contains("needs more data"));
        let mut huge_desc = good.clone();
        huge_desc[16..20].copy_from_slice(&i32::MAX.to_le_bytes());
        assert!(read(huge_desc)
            .unwrap_err()
            .to_string()
            .contains("TensorDesc needs"));
        let mut negative = good.clone();
        negative.splice(23..24, [0xff; 9].into_iter().chain([1]));
        negative[16] += 9;
        assert!(read(negative)
            .unwrap_err()
            .to_string()
            .contains("negative dim"));
        let mut unknown = good.clone();
        unknown[21] = 99;
        assert!(read(unknown)
            .unwrap_err()
            .to_string()
            .contains("unknown data type 99"));
        let lod_bomb = [vec![0; 4], u64::MAX.to_le_bytes().to_vec()].concat();
        assert!(read(lod_bomb).unwrap_err().to_string().contains("exceeds"));
        assert!(read(good[..30].to_vec()).is_err());
    }

    proptest! {
        #[test]
        fn write_read_is_identity(t in arb_tensor()) {
            prop_assert_eq!(read(encode(&t)).unwrap(), t);
        }

        #[test]
        fn corruption_never_panics(t in arb_tensor(), cut in any::<prop::sample::Index>(),
                                   flip in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut bytes = encode(&t);
            let _ = read(bytes[..cut.index(bytes.len())].to_vec());
            let i = flip.index(bytes.len());
            bytes[i] ^= 1 << bit;
            let _ = read(bytes);
        }
    }
}
