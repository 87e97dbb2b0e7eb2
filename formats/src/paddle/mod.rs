//! Paddle's own checkpoint layouts (spec `paddle-formats.md` section 2).

pub mod archive;
pub mod combined;
pub mod dir;
pub mod pickle;
pub mod program_desc;
pub mod protobuf;
pub mod tensor_file;
