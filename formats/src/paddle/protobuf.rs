//! The few pieces of the protobuf wire format that Paddle's TensorDesc and
//! ProgramDesc need: varints, tags and length-delimited fields. Hand-written
//! because we read three messages and a handful of fields.

/// One field's value as it appears on the wire.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// Reads a varint at `*pos`, advancing it.
pub fn read_varint(data: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let Some(&byte) = data.get(*pos) else {
            return Err(format!("varint runs past the end at byte {}", *pos));
        };
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(format!("varint longer than 10 bytes before byte {}", *pos))
}

/// Iterates over the fields of one message as `(field number, value)`.
pub struct Fields<'a> {
    data: &'a [u8],
    pos: usize,
}

pub fn fields(data: &[u8]) -> Fields<'_> {
    Fields { data, pos: 0 }
}

impl<'a> Fields<'a> {
    fn take(&mut self, n: u64) -> Result<&'a [u8], String> {
        let left = (self.data.len() - self.pos) as u64;
        if n > left {
            return Err(format!(
                "field of {n} bytes at byte {} but only {left} left",
                self.pos
            ));
        }
        let bytes = &self.data[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(bytes)
    }

    fn next_field(&mut self) -> Result<(u32, Value<'a>), String> {
        let tag = read_varint(self.data, &mut self.pos)?;
        let number = (tag >> 3) as u32;
        let value = match tag & 7 {
            0 => Value::Varint(read_varint(self.data, &mut self.pos)?),
            1 => Value::Fixed64(u64::from_le_bytes(
                self.take(8)?.try_into().expect("8 bytes"),
            )),
            2 => {
                let len = read_varint(self.data, &mut self.pos)?;
                Value::Bytes(self.take(len)?)
            }
            5 => Value::Fixed32(u32::from_le_bytes(
                self.take(4)?.try_into().expect("4 bytes"),
            )),
            wire => return Err(format!("unsupported wire type {wire} in tag {tag:#x}")),
        };
        Ok((number, value))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Value<'a>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.data.len() {
            return None;
        }
        let item = self.next_field();
        if item.is_err() {
            self.pos = self.data.len();
        }
        Some(item)
    }
}

pub fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

pub fn write_varint_field(out: &mut Vec<u8>, number: u32, value: u64) {
    write_varint(out, u64::from(number) << 3);
    write_varint(out, value);
}

pub fn write_bytes_field(out: &mut Vec<u8>, number: u32, bytes: &[u8]) {
    write_varint(out, (u64::from(number) << 3) | 2);
    write_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn varint_round_trips(v in any::<u64>()) {
            let mut out = Vec::new();
            write_varint(&mut out, v);
            let mut pos = 0;
            prop_assert_eq!(read_varint(&out, &mut pos), Ok(v));
            prop_assert_eq!(pos, out.len());
        }

        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            for field in fields(&data) {
                if field.is_err() {
                    break;
                }
            }
        }
    }

    #[test]
    fn reads_fields_of_each_wire_type() {
        let mut msg = Vec::new();
        write_varint_field(&mut msg, 1, 300);
        write_bytes_field(&mut msg, 3, b"abc");
        let got: Vec<_> = fields(&msg).collect::<Result<_, _>>().unwrap();
        assert_eq!(got, [(1, Value::Varint(300)), (3, Value::Bytes(b"abc"))]);
        assert!(fields(&[0x1a, 0x05, 1]).next().unwrap().is_err());
    }
}
