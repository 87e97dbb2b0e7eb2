//! `.pdparams` / `.pdopt` files: Python pickles of a dict of numpy arrays
//! (spec `paddle-formats.md` section 2).
//!
//! The decoder is a small pickle machine that understands the opcodes of
//! protocols 2-4 and knows exactly the globals such files use: numpy's
//! `_reconstruct`, `ndarray`, `dtype` and `scalar` (both the numpy < 2
//! `numpy.core` and numpy >= 2 `numpy._core` paths), `_codecs.encode` (how
//! Python 3 writes bytes at protocol 2), `collections.OrderedDict` and
//! `tuple`. Any other global is refused: a pickle can run arbitrary code in
//! Python, ours only ever builds arrays and plain containers.
//!
//! Array data (BINBYTES, BINSTRING) is borrowed from the memory-mapped file.
//! Non-tensor values (`LR_Scheduler`, `StructuredToParameterName@@`, ...) go to
//! the checkpoint's metadata as JSON so that the file can be written back.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::Path;
use std::rc::Rc;

use crate::atomic;
use crate::checkpoint::{Bytes, Checkpoint, DType, RawTensor, Storage};
use crate::error::{Error, Result};

/// The key under which protocol 2/3 writers describe params split in slices.
const BIG_PARAM_INFO: &str = "UnpackBigParamInfor@@";

/// The globals a checkpoint pickle may name.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Global {
    Reconstruct,
    NdArray,
    NpDtype,
    NpScalar,
    CodecsEncode,
    OrderedDict,
    Tuple,
}

fn global(module: &str, name: &str) -> Option<Global> {
    let numpy_core = matches!(module, "numpy.core.multiarray" | "numpy._core.multiarray");
    Some(match (module, name) {
        (_, "_reconstruct") if numpy_core => Global::Reconstruct,
        (_, "scalar") if numpy_core => Global::NpScalar,
        ("numpy", "ndarray") => Global::NdArray,
        ("numpy", "dtype") => Global::NpDtype,
        ("_codecs", "encode") => Global::CodecsEncode,
        ("collections", "OrderedDict") => Global::OrderedDict,
        ("builtins" | "__builtin__", "tuple") => Global::Tuple,
        _ => return None,
    })
}

/// A numpy dtype object: the element type, or why it cannot be one of ours.
#[derive(Debug)]
struct NpDtype {
    code: String,
    dtype: std::result::Result<DType, String>,
}

fn dtype_from_numpy(code: &str) -> std::result::Result<DType, String> {
    Ok(match code {
        "f4" => DType::F32,
        "f2" => DType::F16,
        "f8" => DType::F64,
        "i1" => DType::I8,
        "i2" => DType::I16,
        "i4" => DType::I32,
        "i8" => DType::I64,
        "u1" => DType::U8,
        "b1" => DType::Bool,
        // Paddle pickles bfloat16 tensors as uint16 arrays.
        "u2" => DType::BF16,
        _ => return Err(format!("numpy dtype {code:?} is not supported")),
    })
}

fn numpy_code(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "f4",
        DType::F16 => "f2",
        DType::F64 => "f8",
        DType::I8 => "i1",
        DType::I16 => "i2",
        DType::I32 => "i4",
        DType::I64 => "i8",
        DType::U8 => "u1",
        DType::Bool => "b1",
        DType::BF16 => "u2",
    }
}

/// A decoded value. Containers, dtypes and arrays live in the machine's arenas
/// and values refer to them by index: a pickle shares and mutates objects
/// through its memo, and indices give that without reference counting, and
/// free them without recursion however deeply a hostile file nests them.
#[derive(Debug, Clone)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// Shared so that a memo entry fetched many times is never copied.
    Str(Rc<str>),
    /// BINBYTES, or a Python 2 `str` (BINSTRING), which reads as latin-1 text
    /// where text is expected.
    Bytes(Bytes),
    Tuple(usize),
    List(usize),
    /// Items stored flat: key, value, key, value, ...
    Dict(usize),
    Global(Global),
    Dtype(usize),
    /// An ndarray; `None` in its arena slot between `_reconstruct` and BUILD.
    Array(usize),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global(_) => "global",
            Value::Dtype(_) => "dtype",
            Value::Array(_) => "ndarray",
        }
    }

    fn text(&self) -> Option<String> {
        match self {
            Value::Str(s) => Some(s.to_string()),
            Value::Bytes(b) => Some(b.as_slice().iter().map(|&c| c as char).collect()),
            _ => None,
        }
    }

    fn int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }
}

/// The pickle machine's state over one file.
struct Machine<'a> {
    storage: &'a Storage,
    data: &'a [u8],
    pos: usize,
    /// Position of the opcode being run, for error messages.
    op_pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u64, Value>,
    /// Items of every tuple, list and dict.
    containers: Vec<Vec<Value>>,
    dtypes: Vec<NpDtype>,
    arrays: Vec<Option<RawTensor>>,
}

type Step<T> = std::result::Result<T, String>;

impl<'a> Machine<'a> {
    fn new(storage: &'a Storage) -> Self {
        Machine {
            storage,
            data: storage.as_slice(),
            pos: 0,
            op_pos: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            containers: Vec::new(),
            dtypes: Vec::new(),
            arrays: Vec::new(),
        }
    }

    fn take(&mut self, n: u64) -> Step<&'a [u8]> {
        let left = (self.data.len() - self.pos) as u64;
        if n > left {
            return Err(format!(
                "needs {n} bytes but only {left} are left (truncated file?)"
            ));
        }
        let bytes = &self.data[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(bytes)
    }

    fn uint(&mut self, n: usize) -> Step<u64> {
        let bytes = self.take(n as u64)?;
        Ok(bytes
            .iter()
            .rev()
            .fold(0, |acc, &b| (acc << 8) | u64::from(b)))
    }

    /// The next `n` bytes as a range of the storage, not copied.
    fn borrow(&mut self, n: u64) -> Step<Bytes> {
        let start = self.pos;
        self.take(n)?;
        Ok(Bytes::slice_of(self.storage, start..self.pos))
    }

    fn string(&mut self, n: u64) -> Step<Rc<str>> {
        let bytes = self.take(n)?;
        let text = std::str::from_utf8(bytes).map_err(|_| "string is not UTF-8".to_string())?;
        Ok(Rc::from(text))
    }

    fn line(&mut self) -> Step<String> {
        let rest = &self.data[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("unterminated line")?;
        let text = String::from_utf8_lossy(&rest[..end]).into_owned();
        self.pos += end + 1;
        Ok(text)
    }

    fn pop(&mut self) -> Step<Value> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err("stack underflow".into());
        }
        Ok(self.stack.pop().expect("checked length"))
    }

    fn top(&self) -> Step<&Value> {
        self.stack
            .last()
            .ok_or_else(|| "stack underflow".to_string())
    }

    fn pop_mark(&mut self) -> Step<Vec<Value>> {
        let mark = self.marks.pop().ok_or("no MARK before this opcode")?;
        Ok(self.stack.split_off(mark))
    }

    fn memo_get(&self, index: u64) -> Step<Value> {
        self.memo
            .get(&index)
            .cloned()
            .ok_or_else(|| format!("memo entry {index} was never stored"))
    }

    fn memo_put(&mut self, index: u64) -> Step<()> {
        let value = self.top()?.clone();
        self.memo.insert(index, value);
        Ok(())
    }

    /// Stores a new container and returns the value naming it.
    fn container(&mut self, kind: fn(usize) -> Value, items: Vec<Value>) -> Value {
        self.containers.push(items);
        kind(self.containers.len() - 1)
    }

    fn items(&self, value: &Value, what: &str) -> Step<&[Value]> {
        match value {
            Value::Tuple(i) | Value::List(i) | Value::Dict(i) => Ok(&self.containers[*i]),
            other => Err(format!("{what} must be a tuple, got {}", other.kind())),
        }
    }

    fn set_items(&mut self, items: Vec<Value>) -> Step<()> {
        if !items.len().is_multiple_of(2) {
            return Err("odd number of items for a dict".into());
        }
        let Value::Dict(dict) = *self.top()? else {
            return Err("SETITEM(S) on something that is not a dict".into());
        };
        self.containers[dict].extend(items);
        Ok(())
    }

    fn append(&mut self, items: Vec<Value>) -> Step<()> {
        let Value::List(list) = *self.top()? else {
            return Err("APPEND(S) on something that is not a list".into());
        };
        self.containers[list].extend(items);
        Ok(())
    }

    /// Runs to STOP and returns the pickled object.
    fn run(&mut self) -> Step<Value> {
        loop {
            self.op_pos = self.pos;
            let op = self.take(1)?[0];
            match op {
                0x80 => {
                    let protocol = self.take(1)?[0];
                    if protocol > 4 {
                        return Err(format!(
                            "pickle protocol {protocol} is not supported (2-4 are)"
                        ));
                    }
                }
                0x95 => {
                    self.take(8)?; // FRAME: a length hint only
                }
                b'.' => return self.pop(),
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let top = self.top()?.clone();
                    self.stack.push(top);
                }
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'J' => {
                    let v = self.uint(4)? as u32 as i32;
                    self.stack.push(Value::Int(v.into()));
                }
                b'K' => {
                    let v = self.uint(1)?;
                    self.stack.push(Value::Int(v as i64));
                }
                b'M' => {
                    let v = self.uint(2)?;
                    self.stack.push(Value::Int(v as i64));
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a {
                        self.uint(1)?
                    } else {
                        self.uint(4)?
                    };
                    if n > 8 {
                        return Err(format!("integer of {n} bytes is too large"));
                    }
                    let bytes = self.take(n)?;
                    let mut full = [0u8; 8];
                    full[..bytes.len()].copy_from_slice(bytes);
                    if bytes.last().is_some_and(|&b| b & 0x80 != 0) {
                        full[bytes.len()..].fill(0xff);
                    }
                    self.stack.push(Value::Int(i64::from_le_bytes(full)));
                }
                b'G' => {
                    let bytes = self.take(8)?.try_into().expect("8 bytes");
                    self.stack.push(Value::Float(f64::from_be_bytes(bytes)));
                }
                0x8c | b'X' | 0x8d => {
                    let n = match op {
                        0x8c => self.uint(1)?,
                        b'X' => self.uint(4)?,
                        _ => self.uint(8)?,
                    };
                    let s = self.string(n)?;
                    self.stack.push(Value::Str(s));
                }
                b'C' | b'B' | 0x8e | b'U' | b'T' => {
                    let n = match op {
                        b'C' | b'U' => self.uint(1)?,
                        b'B' | b'T' => self.uint(4)?,
                        _ => self.uint(8)?,
                    };
                    let bytes = self.borrow(n)?;
                    self.stack.push(Value::Bytes(bytes));
                }
                b')' => {
                    let tuple = self.container(Value::Tuple, Vec::new());
                    self.stack.push(tuple);
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    let tuple = self.container(Value::Tuple, items);
                    self.stack.push(tuple);
                }
                b't' => {
                    let items = self.pop_mark()?;
                    let tuple = self.container(Value::Tuple, items);
                    self.stack.push(tuple);
                }
                b']' => {
                    let list = self.container(Value::List, Vec::new());
                    self.stack.push(list);
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    let list = self.container(Value::List, items);
                    self.stack.push(list);
                }
                b'}' => {
                    let dict = self.container(Value::Dict, Vec::new());
                    self.stack.push(dict);
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    let dict = self.container(Value::Dict, Vec::new());
                    self.stack.push(dict);
                    self.set_items(items)?;
                }
                b's' => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    self.set_items(vec![key, value])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?;
                }
                b'a' => {
                    let item = self.pop()?;
                    self.append(vec![item])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.append(items)?;
                }
                b'q' => {
                    let i = self.uint(1)?;
                    self.memo_put(i)?;
                }
                b'r' => {
                    let i = self.uint(4)?;
                    self.memo_put(i)?;
                }
                0x94 => {
                    let i = self.memo.len() as u64;
                    self.memo_put(i)?;
                }
                b'h' => {
                    let i = self.uint(1)?;
                    let v = self.memo_get(i)?;
                    self.stack.push(v);
                }
                b'j' => {
                    let i = self.uint(4)?;
                    let v = self.memo_get(i)?;
                    self.stack.push(v);
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.push_global(&module, &name)?;
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module.text(), name.text()) {
                        (Some(m), Some(n)) => self.push_global(&m, &n)?,
                        _ => return Err("STACK_GLOBAL needs two strings".into()),
                    }
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let result = self.reduce(callable, args)?;
                    self.stack.push(result);
                }
                b'b' => {
                    let state = self.pop()?;
                    let target = self.top()?.clone();
                    self.build(target, state)?;
                }
                _ => return Err(format!("opcode {op:#04x} is not supported in a checkpoint")),
            }
        }
    }

    fn push_global(&mut self, module: &str, name: &str) -> Step<()> {
        let g = global(module, name).ok_or_else(|| {
            format!(
                "refusing global {module}.{name}: a checkpoint holds only arrays and plain values"
            )
        })?;
        self.stack.push(Value::Global(g));
        Ok(())
    }

    /// REDUCE: calls one of the allowed globals.
    fn reduce(&mut self, callable: Value, args: Value) -> Step<Value> {
        let Value::Global(g) = callable else {
            return Err(format!("REDUCE on a {}, not a global", callable.kind()));
        };
        let Value::Tuple(args) = args else {
            return Err(format!("REDUCE arguments are a {}", args.kind()));
        };
        let args = self.containers[args].clone();
        match g {
            Global::Reconstruct => match args.first() {
                Some(Value::Global(Global::NdArray)) => {
                    self.arrays.push(None);
                    Ok(Value::Array(self.arrays.len() - 1))
                }
                _ => Err("_reconstruct of something other than ndarray".into()),
            },
            Global::NpDtype => {
                let code = args
                    .first()
                    .and_then(Value::text)
                    .ok_or("dtype() needs a type code")?;
                let dtype = dtype_from_numpy(&code);
                self.dtypes.push(NpDtype { code, dtype });
                Ok(Value::Dtype(self.dtypes.len() - 1))
            }
            Global::CodecsEncode => {
                let text = args
                    .first()
                    .and_then(Value::text)
                    .ok_or("encode() needs a string")?;
                let encoding = args.get(1).and_then(Value::text).unwrap_or_default();
                if !matches!(encoding.as_str(), "latin1" | "latin-1") {
                    return Err(format!("_codecs.encode with encoding {encoding:?}"));
                }
                let bytes = text
                    .chars()
                    .map(|c| u8::try_from(c as u32).map_err(|_| "character outside latin-1"))
                    .collect::<std::result::Result<Vec<u8>, _>>()?;
                Ok(Value::Bytes(Bytes::from_vec(bytes)))
            }
            Global::OrderedDict => Ok(self.container(Value::Dict, Vec::new())),
            Global::Tuple => match args.first() {
                None => Ok(self.container(Value::Tuple, Vec::new())),
                Some(Value::Tuple(i) | Value::List(i)) => {
                    let items = self.containers[*i].clone();
                    Ok(self.container(Value::Tuple, items))
                }
                Some(other) => Err(format!("tuple() of a {}", other.kind())),
            },
            Global::NpScalar => {
                let (Some(Value::Dtype(d)), Some(Value::Bytes(bytes))) =
                    (args.first(), args.get(1))
                else {
                    return Err("scalar() needs a dtype and bytes".into());
                };
                let dtype = self.dtypes[*d].dtype.clone()?;
                let tensor = RawTensor::new(dtype, vec![], bytes.clone())?;
                let le8 = |b: &Bytes| <[u8; 8]>::try_from(b.as_slice()).expect("8 bytes");
                Ok(match dtype {
                    DType::F64 => Value::Float(f64::from_le_bytes(le8(bytes))),
                    DType::I64 => Value::Int(i64::from_le_bytes(le8(bytes))),
                    d if d.is_float() => Value::Float(tensor.to_f32_vec()[0].into()),
                    DType::Bool => Value::Bool(bytes.as_slice()[0] != 0),
                    _ => Value::Int(tensor.to_f32_vec()[0] as i64),
                })
            }
            Global::NdArray => Err("ndarray called directly".into()),
        }
    }

    /// BUILD: sets the state of an array or a dtype.
    fn build(&mut self, target: Value, state: Value) -> Step<()> {
        match target {
            Value::Dtype(d) => {
                let state = self.items(&state, "dtype state")?;
                let order = state.get(1).and_then(Value::text).unwrap_or_default();
                let dtype = &self.dtypes[d];
                let size = dtype.dtype.as_ref().map(|d| d.size()).unwrap_or(1);
                if order == ">" && size > 1 {
                    return Err(format!(
                        "big-endian dtype {:?} is not supported",
                        dtype.code
                    ));
                }
                Ok(())
            }
            Value::Array(a) => {
                let state = self.items(&state, "ndarray state")?;
                let [_version, shape, dtype, fortran, data] = state else {
                    return Err(format!(
                        "ndarray state has {} items, expected 5",
                        state.len()
                    ));
                };
                let shape = self
                    .items(shape, "ndarray shape")?
                    .iter()
                    .map(|d| match d.int() {
                        Some(d) if d >= 0 => Ok(d as usize),
                        _ => Err(format!("bad dimension {d:?}")),
                    })
                    .collect::<Step<Vec<usize>>>()?;
                let Value::Dtype(d) = dtype else {
                    return Err("ndarray state has no dtype".into());
                };
                let dtype = self.dtypes[*d].dtype.clone()?;
                let data = match data {
                    Value::Bytes(b) => b.clone(),
                    Value::Str(s) => Bytes::from_vec(s.chars().map(|c| c as u8).collect()),
                    other => return Err(format!("ndarray data is a {}", other.kind())),
                };
                if fortran.int() == Some(1) && shape.iter().filter(|&&d| d > 1).count() > 1 {
                    return Err("Fortran-ordered arrays are not supported".into());
                }
                self.arrays[a] = Some(RawTensor::new(dtype, shape, data)?);
                Ok(())
            }
            Value::Dict(_) if matches!(state, Value::None) => Ok(()),
            other => Err(format!("BUILD on a {}", other.kind())),
        }
    }

    /// A plain value as JSON, for the checkpoint metadata.
    fn to_json(&self, value: &Value, depth: usize) -> Step<serde_json::Value> {
        use serde_json::Value as J;
        if depth > 32 {
            return Err("values nested too deeply".into());
        }
        Ok(match value {
            Value::None => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(_) | Value::Bytes(_) => J::String(value.text().expect("text")),
            Value::Tuple(i) | Value::List(i) => J::Array(
                self.containers[*i]
                    .iter()
                    .map(|v| self.to_json(v, depth + 1))
                    .collect::<Step<_>>()?,
            ),
            Value::Dict(i) => {
                let mut map = serde_json::Map::new();
                for pair in self.containers[*i].chunks_exact(2) {
                    let (k, v) = (&pair[0], &pair[1]);
                    let key = k.text().or_else(|| k.int().map(|i| i.to_string()));
                    let key = key.ok_or_else(|| format!("dict key is a {}", k.kind()))?;
                    map.insert(key, self.to_json(v, depth + 1)?);
                }
                J::Object(map)
            }
            other => {
                return Err(format!(
                    "a {} inside a non-tensor value is not supported",
                    other.kind()
                ))
            }
        })
    }

    /// The tensor a top-level value holds: an array, or a `.pdopt` `(name, array)`.
    fn as_tensor(&self, value: &Value) -> Step<Option<RawTensor>> {
        match value {
            Value::Array(a) => match &self.arrays[*a] {
                Some(t) => Ok(Some(t.clone())),
                None => Err("ndarray without data (no BUILD)".into()),
            },
            Value::Tuple(i) => match self.containers[*i].as_slice() {
                [_, array @ Value::Array(_)] => self.as_tensor(array),
                _ => Ok(None),
            },
            _ => Ok(None),
        }
    }
}

/// Reads a `.pdparams` or `.pdopt` file.
pub fn read_pickle(path: &Path) -> Result<Checkpoint> {
    let storage = Storage::map_file(path)?;
    read_pickle_from(path, &storage)
}

/// Decodes a pickle held in `storage`; `path` names it in errors.
pub fn read_pickle_from(path: &Path, storage: &Storage) -> Result<Checkpoint> {
    let mut machine = Machine::new(storage);
    let root = machine
        .run()
        .map_err(|m| Error::at(path, format!("byte {}", machine.op_pos), m))?;
    let Value::Dict(root) = root else {
        return Err(Error::new(
            path,
            format!("pickle holds a {}, expected a dict", root.kind()),
        ));
    };
    let mut tensors: Vec<(String, RawTensor)> = Vec::new();
    let mut checkpoint = Checkpoint::new();
    let mut big_params = None;
    for pair in machine.containers[root].chunks_exact(2) {
        let (key, value) = (&pair[0], &pair[1]);
        let name = key
            .text()
            .ok_or_else(|| Error::new(path, format!("a top-level key is a {}", key.kind())))?;
        let bad = |m: String| Error::at(path, format!("key {name}"), m);
        if name == BIG_PARAM_INFO {
            big_params = Some(machine.to_json(value, 0).map_err(bad)?);
        } else if let Some(tensor) = machine.as_tensor(value).map_err(bad)? {
            tensors.push((name, tensor));
        } else {
            let json = machine.to_json(value, 0).map_err(bad)?;
            checkpoint.metadata.insert(name, json);
        }
    }
    if let Some(info) = big_params {
        join_big_params(path, &mut tensors, &info)?;
    }
    for (name, tensor) in tensors {
        checkpoint.insert(name, tensor);
    }
    Ok(checkpoint)
}

/// Protocol 2/3 writers split params over 4 GB into `name@@.0`, `name@@.1`,
/// ...; `UnpackBigParamInfor@@` maps each name to `OriginShape` and `slices`.
fn join_big_params(
    path: &Path,
    tensors: &mut Vec<(String, RawTensor)>,
    info: &serde_json::Value,
) -> Result<()> {
    let place = |name: &str| format!("{BIG_PARAM_INFO} {name}");
    let info = info
        .as_object()
        .ok_or_else(|| Error::at(path, BIG_PARAM_INFO, "is not a dict"))?;
    for (name, entry) in info {
        let bad = |m: &str| Error::at(path, place(name), m.to_string());
        let shape: Vec<usize> = entry["OriginShape"]
            .as_array()
            .ok_or_else(|| bad("no OriginShape"))?
            .iter()
            .map(|d| {
                d.as_u64()
                    .map(|d| d as usize)
                    .ok_or_else(|| bad("bad OriginShape"))
            })
            .collect::<Result<_>>()?;
        let slices = entry["slices"].as_array().ok_or_else(|| bad("no slices"))?;
        let mut data = Vec::new();
        let mut dtype = None;
        let mut at = None;
        for slice in slices {
            let slice = slice
                .as_str()
                .ok_or_else(|| bad("slice name is not a string"))?;
            let i = tensors
                .iter()
                .position(|(n, _)| n == slice)
                .ok_or_else(|| bad(&format!("slice {slice} is missing")))?;
            let (_, part) = tensors.remove(i);
            if dtype.is_some_and(|d| d != part.dtype) {
                return Err(bad("slices differ in dtype"));
            }
            dtype = Some(part.dtype);
            at = Some(at.unwrap_or(i).min(i));
            data.extend_from_slice(part.bytes.as_slice());
        }
        let dtype = dtype.ok_or_else(|| bad("no slices"))?;
        let tensor = RawTensor::new(dtype, shape, Bytes::from_vec(data)).map_err(|m| bad(&m))?;
        tensors.insert(at.unwrap_or(tensors.len()), (name.clone(), tensor));
    }
    Ok(())
}

/// Protocol-4 pickle writer for the subset above: a dict of arrays (numpy < 2
/// paths, which numpy >= 2 also reads) followed by the metadata values.
struct Writer<W: Write> {
    out: W,
}

impl<W: Write> Writer<W> {
    fn op(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)
    }

    fn str(&mut self, s: &str) -> io::Result<()> {
        if s.len() < 256 {
            self.op(&[0x8c, s.len() as u8])?;
        } else {
            self.op(b"X")?;
            self.op(&(s.len() as u32).to_le_bytes())?;
        }
        self.op(s.as_bytes())
    }

    fn bytes(&mut self, b: &[u8]) -> io::Result<()> {
        if b.len() < 256 {
            self.op(&[b'C', b.len() as u8])?;
        } else if let Ok(n) = u32::try_from(b.len()) {
            self.op(b"B")?;
            self.op(&n.to_le_bytes())?;
        } else {
            self.op(&[0x8e])?;
            self.op(&(b.len() as u64).to_le_bytes())?;
        }
        self.op(b)
    }

    fn int(&mut self, v: i64) -> io::Result<()> {
        if (0..256).contains(&v) {
            self.op(&[b'K', v as u8])
        } else if let Ok(v) = i32::try_from(v) {
            self.op(b"J")?;
            self.op(&v.to_le_bytes())
        } else {
            self.op(&[0x8a, 8])?;
            self.op(&v.to_le_bytes())
        }
    }

    fn global(&mut self, module: &str, name: &str) -> io::Result<()> {
        self.str(module)?;
        self.str(name)?;
        self.op(&[0x93])
    }

    fn array(&mut self, t: &RawTensor) -> io::Result<()> {
        self.global("numpy.core.multiarray", "_reconstruct")?;
        self.global("numpy", "ndarray")?;
        self.int(0)?;
        self.op(&[0x85])?;
        self.bytes(b"b")?;
        self.op(&[0x87, b'R', b'('])?;
        self.int(1)?;
        self.op(b"(")?;
        for &d in &t.shape {
            self.int(d as i64)?;
        }
        self.op(b"t")?;
        self.global("numpy", "dtype")?;
        self.str(numpy_code(t.dtype))?;
        self.op(&[0x89, 0x88, 0x87, b'R', b'('])?;
        self.int(3)?;
        self.str(if t.dtype.size() == 1 { "|" } else { "<" })?;
        self.op(b"NNN")?;
        self.int(-1)?;
        self.int(-1)?;
        self.int(0)?;
        self.op(b"tb")?;
        self.op(&[0x89])?;
        self.bytes(t.bytes.as_slice())?;
        self.op(b"tb")
    }

    fn json(&mut self, v: &serde_json::Value) -> io::Result<()> {
        use serde_json::Value as J;
        match v {
            J::Null => self.op(b"N"),
            J::Bool(b) => self.op(&[if *b { 0x88 } else { 0x89 }]),
            J::Number(n) => match n.as_i64() {
                Some(i) => self.int(i),
                None => {
                    self.op(b"G")?;
                    self.op(&n.as_f64().unwrap_or(f64::NAN).to_be_bytes())
                }
            },
            J::String(s) => self.str(s),
            J::Array(items) => {
                self.op(b"](")?;
                for item in items {
                    self.json(item)?;
                }
                self.op(b"e")
            }
            J::Object(map) => {
                self.op(b"}(")?;
                for (k, v) in map {
                    self.str(k)?;
                    self.json(v)?;
                }
                self.op(b"u")
            }
        }
    }
}

/// Writes the checkpoint as a protocol-4 pickle of a dict: tensors as numpy
/// arrays in order, then the metadata values.
pub fn write_pickle_to(checkpoint: &Checkpoint, out: impl Write) -> io::Result<()> {
    let mut w = Writer { out };
    w.op(&[0x80, 4, b'}', b'('])?;
    for (name, tensor) in checkpoint.iter() {
        w.str(name)?;
        w.array(tensor)?;
    }
    for (key, value) in &checkpoint.metadata {
        w.str(key)?;
        w.json(value)?;
    }
    w.op(b"u.")
}

pub fn write_pickle(checkpoint: &Checkpoint, path: &Path) -> Result<()> {
    atomic::write_file(path, |out| {
        write_pickle_to(checkpoint, out).map_err(|e| Error::io(path, e))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paddle::tensor_file::tests::arb_tensor;
    use proptest::prelude::*;

    fn decode(bytes: Vec<u8>) -> Result<Checkpoint> {
        read_pickle_from(Path::new("m.pdparams"), &Storage::from_vec(bytes))
    }

    fn encode(c: &Checkpoint) -> Vec<u8> {
        let mut out = Vec::new();
        write_pickle_to(c, &mut out).unwrap();
        out
    }

    #[test]
    fn refuses_foreign_globals() {
        let evil = b"\x80\x04cos\nsystem\n\x8c\x02ls\x85R.".to_vec();
        let err = decode(evil).unwrap_err().to_string();
        assert!(err.contains("refusing global os.system"), "{err}");
        assert!(err.contains("m.pdparams (byte 2)"), "{err}");
    }

    #[test]
    fn protocol2_codecs_encoded_bytes() {
        // Protocol 2 as Python 3 writes bytes: _codecs.encode(str, 'latin1').
        // pickle.dumps({'w': b'\xff\x01'}, protocol=2)
        let p = b"\x80\x02}q\x00X\x01\x00\x00\x00wq\x01c_codecs\nencode\nq\x02X\x03\x00\x00\x00\xc3\xbf\x01q\x03X\x06\x00\x00\x00latin1q\x04\x86q\x05Rq\x06s.";
        let c = decode(p.to_vec()).unwrap();
        assert_eq!(c.metadata["w"], serde_json::json!("\u{ff}\u{1}"));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let mut deep = b"\x80\x04)".to_vec();
        deep.extend(std::iter::repeat_n(0x85, 1 << 20)); // TUPLE1, a million times
        deep.push(b'.');
        let err = decode(deep.clone()).unwrap_err().to_string();
        assert!(err.contains("holds a tuple"), "{err}");
        let mut in_dict = b"\x80\x04}\x8c\x01k".to_vec();
        in_dict.extend_from_slice(&deep[2..deep.len() - 1]);
        in_dict.extend_from_slice(b"s.");
        let err = decode(in_dict).unwrap_err().to_string();
        assert!(
            err.contains("key k") && err.contains("nested too deeply"),
            "{err}"
        );
    }

    #[test]
    fn joins_split_big_params() {
        let mut c = Checkpoint::new();
        c.insert("w@@.0", RawTensor::from_f32(vec![2], &[1.0, 2.0]));
        c.insert("w@@.1", RawTensor::from_f32(vec![1], &[3.0]));
        c.metadata.insert(
            BIG_PARAM_INFO.into(),
            serde_json::json!({"w": {"OriginShape": [3, 1], "slices": ["w@@.0", "w@@.1"]}}),
        );
        let back = decode(encode(&c)).unwrap();
        assert_eq!(back.names().collect::<Vec<_>>(), ["w"]);
        assert_eq!(back.get("w").unwrap().shape, [3, 1]);
        assert_eq!(back.get("w").unwrap().to_f32_vec(), [1.0, 2.0, 3.0]);
    }

    proptest! {
        #[test]
        fn write_read_is_identity(tensors in proptest::collection::vec(arb_tensor(), 1..4)) {
            let mut c = Checkpoint::new();
            for (i, mut t) in tensors.into_iter().enumerate() {
                t.lod.clear();
                c.insert(format!("p{i}"), t);
            }
            c.metadata.insert("LR_Scheduler".into(), serde_json::json!({"last_epoch": 3, "last_lr": 0.5}));
            prop_assert_eq!(decode(encode(&c)).unwrap(), c);
        }

        #[test]
        fn corruption_never_panics(t in arb_tensor(), cut in any::<prop::sample::Index>(),
                                   flip in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut c = Checkpoint::new();
            c.insert("x", t);
            let mut bytes = encode(&c);
            let _ = decode(bytes[..cut.index(bytes.len())].to_vec());
            let i = flip.index(bytes.len());
            bytes[i] ^= 1 << bit;
            let _ = decode(bytes);
        }
    }
}
