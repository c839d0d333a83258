//! A restricted unpickler for PyTorch checkpoints that never runs code.
//!
//! `torch.save` writes a pickle whose only callables are a dict constructor and the tensor
//! rebuild functions; the tensors' bytes live beside it in the zip archive and are referenced by
//! persistent ids `('storage', torch.FloatStorage, key, location, numel)`. This module interprets
//! the pickle opcodes itself and accepts exactly those globals ([`ALLOWED_GLOBALS`]); any other
//! global (`os.system`, `builtins.eval`, a Lightning callback class, ...) is refused, by name,
//! before anything is built. All reads are bounds-checked: malformed input gives an error, not a
//! panic.

use std::collections::HashMap;
use std::fmt;

use crate::dtype::DType;

/// The globals a tensor checkpoint needs. Everything else is refused.
pub const ALLOWED_GLOBALS: &[&str] = &[
    "collections.OrderedDict",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_parameter",
    "torch.FloatStorage",
    "torch.HalfStorage",
    "torch.BFloat16Storage",
    "torch.DoubleStorage",
    "torch.LongStorage",
    "torch.IntStorage",
    "torch.ShortStorage",
    "torch.CharStorage",
    "torch.ByteStorage",
    "torch.BoolStorage",
];

#[derive(Debug, PartialEq)]
pub enum PickleError {
    DisallowedGlobal(String),
    Truncated(usize),
    UnknownOpcode(u8, usize),
    Malformed(String),
}

impl fmt::Display for PickleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PickleError::DisallowedGlobal(g) => write!(f, "disallowed global `{g}`"),
            PickleError::Truncated(at) => write!(f, "pickle truncated at byte {at}"),
            PickleError::UnknownOpcode(op, at) => write!(f, "unsupported pickle opcode 0x{op:02x} at byte {at}"),
            PickleError::Malformed(m) => write!(f, "malformed pickle: {m}"),
        }
    }
}

/// A storage referenced by a persistent id.
#[derive(Clone, Debug, PartialEq)]
pub struct StorageRef {
    pub dtype: DType,
    pub key: String,
    pub numel: usize,
}

/// A tensor view built by `_rebuild_tensor_v2`.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorRef {
    pub storage: StorageRef,
    pub offset: usize,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
}

/// The values a tensor checkpoint's pickle can hold.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(String),
    Storage(StorageRef),
    Tensor(TensorRef),
}

type R<T> = Result<T, PickleError>;

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<Vec<Value>>,
    memo: HashMap<u64, Value>,
}

/// Interprets a pickle (protocols 2-5) and returns the object it describes.
pub fn load(data: &[u8]) -> R<Value> {
    let mut m = Machine { data, pos: 0, stack: Vec::new(), marks: Vec::new(), memo: HashMap::new() };
    m.run()
}

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len()).ok_or(PickleError::Truncated(self.pos))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> R<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> R<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> R<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> R<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn line(&mut self) -> R<&'a str> {
        let rest = &self.data[self.pos..];
        let n = rest.iter().position(|&b| b == b'\n').ok_or(PickleError::Truncated(self.data.len()))?;
        let s = std::str::from_utf8(&rest[..n]).map_err(|_| PickleError::Malformed("non-UTF-8 text line".into()))?;
        self.pos += n + 1;
        Ok(s)
    }
    fn string(&mut self, n: usize) -> R<String> {
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| PickleError::Malformed("invalid UTF-8 string".into()))
    }
    fn pop(&mut self) -> R<Value> {
        self.stack.pop().ok_or_else(|| PickleError::Malformed(format!("stack underflow at byte {}", self.pos)))
    }
    fn top(&mut self) -> R<&mut Value> {
        let pos = self.pos;
        self.stack.last_mut().ok_or_else(|| PickleError::Malformed(format!("stack underflow at byte {pos}")))
    }
    fn pop_mark(&mut self) -> R<Vec<Value>> {
        let items = std::mem::take(&mut self.stack);
        self.stack = self.marks.pop().ok_or_else(|| PickleError::Malformed("no MARK on the stack".into()))?;
        Ok(items)
    }
    fn global(&mut self, module: &str, name: &str) -> R<()> {
        let full = format!("{module}.{name}");
        if !ALLOWED_GLOBALS.contains(&full.as_str()) {
            return Err(PickleError::DisallowedGlobal(full));
        }
        self.stack.push(Value::Global(full));
        Ok(())
    }

    fn run(&mut self) -> R<Value> {
        loop {
            let at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    self.u8()?; // PROTO
                }
                0x95 => {
                    self.u64()?; // FRAME
                }
                b'.' => return self.pop(), // STOP
                b'(' => self.marks.push(std::mem::take(&mut self.stack)), // MARK
                b'0' => {
                    self.pop()?; // POP
                }
                b'1' => {
                    self.pop_mark()?; // POP_MARK
                }
                b'2' => {
                    let v = self.top()?.clone(); // DUP
                    self.stack.push(v);
                }
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'J' => {
                    let v = self.u32()? as i32;
                    self.stack.push(Value::Int(v as i64))
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v as i64))
                }
                b'M' => {
                    let v = self.u16()?;
                    self.stack.push(Value::Int(v as i64))
                }
                0x8a | 0x8b => {
                    // LONG1 / LONG4: little-endian two's complement
                    let n = if op == 0x8a { self.u8()? as usize } else { self.u32()? as usize };
                    let b = self.take(n)?;
                    if n > 8 {
                        return Err(PickleError::Malformed(format!("integer of {n} bytes is too large")));
                    }
                    let mut buf = if b.last().is_some_and(|&x| x & 0x80 != 0) { [0xffu8; 8] } else { [0u8; 8] };
                    buf[..n].copy_from_slice(b);
                    self.stack.push(Value::Int(i64::from_le_bytes(buf)))
                }
                b'I' => {
                    let l = self.line()?;
                    let v = match l {
                        "01" => Value::Bool(true),
                        "00" => Value::Bool(false),
                        s => Value::Int(s.parse().map_err(|_| PickleError::Malformed(format!("INT `{s}`")))?),
                    };
                    self.stack.push(v)
                }
                b'L' => {
                    let l = self.line()?.trim_end_matches('L');
                    let v = l.parse().map_err(|_| PickleError::Malformed(format!("LONG `{l}`")))?;
                    self.stack.push(Value::Int(v))
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.take(8)?.try_into().unwrap());
                    self.stack.push(Value::Float(v))
                }
                b'F' => {
                    let l = self.line()?;
                    let v = l.parse().map_err(|_| PickleError::Malformed(format!("FLOAT `{l}`")))?;
                    self.stack.push(Value::Float(v))
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let s = self.string(n)?;
                    self.stack.push(Value::Str(s))
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let s = self.string(n)?;
                    self.stack.push(Value::Str(s))
                }
                0x8d => {
                    let n = self.u64()? as usize;
                    let s = self.string(n)?;
                    self.stack.push(Value::Str(s))
                }
                b'V' => {
                    let s = self.line()?.to_owned();
                    self.stack.push(Value::Str(s))
                }
                b'U' | b'C' => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(if op == b'U' { Value::Str(String::from_utf8_lossy(&b).into()) } else { Value::Bytes(b) })
                }
                b'T' | b'B' => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(if op == b'T' { Value::Str(String::from_utf8_lossy(&b).into()) } else { Value::Bytes(b) })
                }
                0x8e => {
                    let n = self.u64()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(b))
                }
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items))
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return Err(PickleError::Malformed(format!("TUPLE{n} with a short stack at byte {at}")));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(items))
                }
                b']' => self.stack.push(Value::List(Vec::new())),
                b'l' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::List(items))
                }
                b'a' => {
                    let v = self.pop()?;
                    match self.top()? {
                        Value::List(l) => l.push(v),
                        _ => return Err(PickleError::Malformed("APPEND to a non-list".into())),
                    }
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    match self.top()? {
                        Value::List(l) => l.extend(items),
                        _ => return Err(PickleError::Malformed("APPENDS to a non-list".into())),
                    }
                }
                b'}' => self.stack.push(Value::Dict(Vec::new())),
                b'd' => {
                    let items = self.pop_mark()?;
                    let d = pairs(items)?;
                    self.stack.push(Value::Dict(d))
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    dict_insert(self.top()?, vec![(k, v)])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let d = pairs(items)?;
                    dict_insert(self.top()?, d)?;
                }
                0x8f => self.stack.push(Value::List(Vec::new())), // EMPTY_SET (as a list)
                0x90 => {
                    let items = self.pop_mark()?; // ADDITEMS
                    match self.top()? {
                        Value::List(l) => l.extend(items),
                        _ => return Err(PickleError::Malformed("ADDITEMS to a non-set".into())),
                    }
                }
                0x91 => {
                    let items = self.pop_mark()?; // FROZENSET
                    self.stack.push(Value::List(items))
                }
                b'q' => {
                    let i = self.u8()? as u64;
                    let v = self.top()?.clone();
                    self.memo.insert(i, v);
                }
                b'r' => {
                    let i = self.u32()? as u64;
                    let v = self.top()?.clone();
                    self.memo.insert(i, v);
                }
                b'p' => {
                    let i: u64 = self.line()?.parse().map_err(|_| PickleError::Malformed("PUT index".into()))?;
                    let v = self.top()?.clone();
                    self.memo.insert(i, v);
                }
                0x94 => {
                    let i = self.memo.len() as u64; // MEMOIZE
                    let v = self.top()?.clone();
                    self.memo.insert(i, v);
                }
                b'h' | b'j' | b'g' => {
                    let i = match op {
                        b'h' => self.u8()? as u64,
                        b'j' => self.u32()? as u64,
                        _ => self.line()?.parse().map_err(|_| PickleError::Malformed("GET index".into()))?,
                    };
                    let v = self.memo.get(&i).cloned().ok_or_else(|| PickleError::Malformed(format!("memo {i} unset")))?;
                    self.stack.push(v)
                }
                b'c' => {
                    let module = self.line()?.to_owned();
                    let name = self.line()?.to_owned();
                    self.global(&module, &name)?
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => self.global(&m, &n)?,
                        _ => return Err(PickleError::Malformed("STACK_GLOBAL without strings".into())),
                    }
                }
                b'i' => {
                    // INST: a global given inline, called with the marked items.
                    let module = self.line()?.to_owned();
                    let name = self.line()?.to_owned();
                    self.global(&module, &name)?;
                    let callable = self.pop()?;
                    let args = self.pop_mark()?;
                    let v = call(callable, args)?;
                    self.stack.push(v)
                }
                b'o' => {
                    let mut items = self.pop_mark()?; // OBJ
                    if items.is_empty() {
                        return Err(PickleError::Malformed("OBJ without a class".into()));
                    }
                    let callable = items.remove(0);
                    let v = call(callable, items)?;
                    self.stack.push(v)
                }
                b'R' | 0x81 => {
                    let args = self.pop()?; // REDUCE / NEWOBJ
                    let callable = self.pop()?;
                    let args = match args {
                        Value::Tuple(a) => a,
                        _ => return Err(PickleError::Malformed("REDUCE arguments are not a tuple".into())),
                    };
                    let v = call(callable, args)?;
                    self.stack.push(v)
                }
                0x92 => {
                    let _kwargs = self.pop()?; // NEWOBJ_EX
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let args = match args {
                        Value::Tuple(a) => a,
                        _ => return Err(PickleError::Malformed("NEWOBJ_EX arguments are not a tuple".into())),
                    };
                    let v = call(callable, args)?;
                    self.stack.push(v)
                }
                b'b' => {
                    // BUILD: object state (e.g. an OrderedDict's `_metadata`), not needed.
                    self.pop()?;
                    self.top()?;
                }
                b'Q' => {
                    let pid = self.pop()?; // BINPERSID
                    let v = persistent_load(pid)?;
                    self.stack.push(v)
                }
                b'P' => return Err(PickleError::Malformed("text persistent ids are not used by torch.save".into())),
                0x82..=0x84 => return Err(PickleError::DisallowedGlobal(format!("<copyreg extension code, opcode 0x{op:02x}>"))),
                _ => return Err(PickleError::UnknownOpcode(op, at)),
            }
        }
    }
}

fn pairs(items: Vec<Value>) -> R<Vec<(Value, Value)>> {
    if items.len() % 2 != 0 {
        return Err(PickleError::Malformed("odd number of dict items".into()));
    }
    let mut it = items.into_iter();
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

fn dict_insert(target: &mut Value, items: Vec<(Value, Value)>) -> R<()> {
    match target {
        Value::Dict(d) => {
            for (k, v) in items {
                if let Some(slot) = d.iter_mut().find(|(ek, _)| *ek == k) {
                    slot.1 = v;
                } else {
                    d.push((k, v));
                }
            }
            Ok(())
        }
        _ => Err(PickleError::Malformed("SETITEM on a non-dict".into())),
    }
}

fn storage_dtype(class: &str) -> Option<DType> {
    Some(match class {
        "torch.FloatStorage" => DType::F32,
        "torch.HalfStorage" => DType::F16,
        "torch.BFloat16Storage" => DType::BF16,
        "torch.DoubleStorage" => DType::F64,
        "torch.LongStorage" => DType::I64,
        "torch.IntStorage" => DType::I32,
        "torch.ShortStorage" => DType::I16,
        "torch.CharStorage" => DType::I8,
        "torch.ByteStorage" => DType::U8,
        "torch.BoolStorage" => DType::Bool,
        _ => return None,
    })
}

fn persistent_load(pid: Value) -> R<Value> {
    let bad = || PickleError::Malformed("persistent id is not ('storage', <StorageType>, key, location, numel)".into());
    let items = match pid {
        Value::Tuple(items) => items,
        _ => return Err(bad()),
    };
    match items.as_slice() {
        [Value::Str(kind), Value::Global(class), key, _location, Value::Int(numel)] if kind == "storage" => {
            let dtype = storage_dtype(class).ok_or_else(bad)?;
            let key = match key {
                Value::Str(s) => s.clone(),
                Value::Int(i) => i.to_string(),
                _ => return Err(bad()),
            };
            let numel = usize::try_from(*numel).map_err(|_| bad())?;
            Ok(Value::Storage(StorageRef { dtype, key, numel }))
        }
        _ => Err(bad()),
    }
}

fn usize_tuple(v: &Value, what: &str) -> R<Vec<usize>> {
    match v {
        Value::Tuple(items) | Value::List(items) => items
            .iter()
            .map(|x| match x {
                Value::Int(i) if *i >= 0 => Ok(*i as usize),
                _ => Err(PickleError::Malformed(format!("{what} holds a non-integer"))),
            })
            .collect(),
        _ => Err(PickleError::Malformed(format!("{what} is not a tuple"))),
    }
}

/// Applies one of the allowed callables.
fn call(callable: Value, args: Vec<Value>) -> R<Value> {
    let name = match callable {
        Value::Global(name) => name,
        other => return Err(PickleError::Malformed(format!("call of a non-callable {other:?}"))),
    };
    match name.as_str() {
        "collections.OrderedDict" => match args.into_iter().next() {
            None => Ok(Value::Dict(Vec::new())),
            Some(Value::List(items)) | Some(Value::Tuple(items)) => {
                let mut d = Vec::new();
                for item in items {
                    match item {
                        Value::Tuple(mut kv) if kv.len() == 2 => {
                            let v = kv.pop().unwrap();
                            let k = kv.pop().unwrap();
                            d.push((k, v));
                        }
                        _ => return Err(PickleError::Malformed("OrderedDict item is not a pair".into())),
                    }
                }
                Ok(Value::Dict(d))
            }
            Some(_) => Err(PickleError::Malformed("OrderedDict argument".into())),
        },
        "torch._utils._rebuild_tensor_v2" => {
            if args.len() < 4 {
                return Err(PickleError::Malformed("_rebuild_tensor_v2 needs (storage, offset, size, stride, ...)".into()));
            }
            let storage = match &args[0] {
                Value::Storage(s) => s.clone(),
                _ => return Err(PickleError::Malformed("_rebuild_tensor_v2: first argument is not a storage".into())),
            };
            let offset = match &args[1] {
                Value::Int(i) if *i >= 0 => *i as usize,
                _ => return Err(PickleError::Malformed("_rebuild_tensor_v2: bad storage offset".into())),
            };
            let shape = usize_tuple(&args[2], "tensor size")?;
            let stride = usize_tuple(&args[3], "tensor stride")?;
            if shape.len() != stride.len() {
                return Err(PickleError::Malformed("tensor size and stride differ in length".into()));
            }
            Ok(Value::Tensor(TensorRef { storage, offset, shape, stride }))
        }
        "torch._utils._rebuild_parameter" => match args.into_iter().next() {
            Some(t @ Value::Tensor(_)) => Ok(t),
            _ => Err(PickleError::Malformed("_rebuild_parameter without a tensor".into())),
        },
        other => Err(PickleError::Malformed(format!("`{other}` cannot be called"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_os_system() {
        // protocol 2: c os\nsystem\n (S'echo hi' tR.
        let p = b"\x80\x02cos\nsystem\nq\x00X\x07\x00\x00\x00echo hiq\x01\x85q\x02Rq\x03.";
        assert_eq!(load(p), Err(PickleError::DisallowedGlobal("os.system".into())));
    }

    #[test]
    fn refuses_stack_global_eval() {
        let p = b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93\x8c\x011\x85R.";
        assert_eq!(load(p), Err(PickleError::DisallowedGlobal("builtins.eval".into())));
    }

    #[test]
    fn truncated_is_an_error() {
        let p = b"\x80\x02}q\x00(X\x05\x00\x00\x00ab";
        assert!(matches!(load(p), Err(PickleError::Truncated(_))));
        assert!(load(b"").is_err());
        assert!(load(b"\x80\x02").is_err());
    }

    #[test]
    fn plain_values() {
        let p = b"\x80\x02}q\x00(X\x01\x00\x00\x00aK\x05X\x01\x00\x00\x00bG?\xf0\x00\x00\x00\x00\x00\x00u.";
        assert_eq!(
            load(p).unwrap(),
            Value::Dict(vec![(Value::Str("a".into()), Value::Int(5)), (Value::Str("b".into()), Value::Float(1.0))])
        );
    }
}
