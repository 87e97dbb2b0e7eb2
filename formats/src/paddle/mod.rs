//! Paddle's own checkpoint layouts (spec `paddle-formats.md` section 2).

pub mod protobuf;
pub mod tensor_file;
