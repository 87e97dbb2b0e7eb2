//! Just enough of Paddle's ProgramDesc protobuf (`__model__`, `*.pdmodel`) to
//! name the records of a combined params file: ProgramDesc.blocks = 1 ->
//! BlockDesc.vars = 3 -> VarDesc { name = 1, type = 2 (VarType.type = 1),
//! persistable = 3 }.

use std::path::Path;

use super::protobuf::{self, Value};
use super::tensor_file;
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};

// VarType.Type codes that are persistable but hold no tensor data.
const FEED_MINIBATCH: u64 = 9;
const FETCH_LIST: u64 = 10;
const READER: u64 = 15;
const LOD_TENSOR: u64 = 7;

/// The names `save_combine` wrote: persistable variables of every block minus
/// feed/fetch/reader, deduplicated, in Python `sorted()` (code-point) order.
pub fn persistable_names(file: &Path, program: &[u8]) -> Result<Vec<String>> {
    let bad = |m: String| Error::at(file, "ProgramDesc", m);
    let mut names = Vec::new();
    for (b, block) in protobuf::fields(program).enumerate() {
        let Value::Bytes(block) = (match block.map_err(bad)? {
            (1, value) => value,
            _ => continue,
        }) else {
            return Err(bad(format!("block {b} is not a message")));
        };
        for var in protobuf::fields(block) {
            let Value::Bytes(var) = (match var.map_err(bad)? {
                (3, value) => value,
                _ => continue,
            }) else {
                return Err(bad(format!("a variable of block {b} is not a message")));
            };
            let (mut name, mut kind, mut persistable) = (None, None, false);
            for field in protobuf::fields(var) {
                match field.map_err(bad)? {
                    (1, Value::Bytes(n)) => name = Some(String::from_utf8_lossy(n).into_owned()),
                    (2, Value::Bytes(t)) => {
                        for f in protobuf::fields(t) {
                            if let (1, Value::Varint(k)) = f.map_err(bad)? {
                                kind = Some(k);
                            }
                        }
                    }
                    (3, Value::Varint(p)) => persistable = p != 0,
                    _ => {}
                }
            }
            let name = name.ok_or_else(|| bad(format!("a variable of block {b} has no name")))?;
            let data_free = matches!(kind, Some(FEED_MINIBATCH | FETCH_LIST | READER));
            if persistable && !data_free {
                names.push(name);
            }
        }
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// A minimal program declaring each tensor as a persistable LoDTensor
/// variable, so a combined file written by pulsefocus names its records.
pub fn encode_program(checkpoint: &Checkpoint) -> Vec<u8> {
    let mut block = Vec::new();
    protobuf::write_varint_field(&mut block, 1, 0); // idx
    protobuf::write_varint_field(&mut block, 2, -1i64 as u64); // parent_idx
    for (name, tensor) in checkpoint.iter() {
        let mut lod_tensor = Vec::new();
        let desc = tensor_file::encode_desc(tensor.dtype, &tensor.shape);
        protobuf::write_bytes_field(&mut lod_tensor, 1, &desc);
        protobuf::write_varint_field(&mut lod_tensor, 2, tensor.lod.len() as u64);
        let mut var_type = Vec::new();
        protobuf::write_varint_field(&mut var_type, 1, LOD_TENSOR);
        protobuf::write_bytes_field(&mut var_type, 3, &lod_tensor);
        let mut var = Vec::new();
        protobuf::write_bytes_field(&mut var, 1, name.as_bytes());
        protobuf::write_bytes_field(&mut var, 2, &var_type);
        protobuf::write_varint_field(&mut var, 3, 1);
        protobuf::write_bytes_field(&mut block, 3, &var);
    }
    let mut program = Vec::new();
    protobuf::write_bytes_field(&mut program, 1, &block);
    program
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::RawTensor;

    #[test]
    fn encoded_program_lists_names_sorted() {
        let mut c = Checkpoint::new();
        c.insert("conv_b", RawTensor::from_f32(vec![1], &[0.0]));
        c.insert("conv.w", RawTensor::from_f32(vec![1], &[0.0]));
        c.insert("conv1", RawTensor::from_f32(vec![1], &[0.0]));
        let names = persistable_names(Path::new("m"), &encode_program(&c)).unwrap();
        assert_eq!(names, ["conv.w", "conv1", "conv_b"]);
        assert!(persistable_names(Path::new("m"), &[0x0a, 0x05, 0x1a]).is_err());
    }
}
