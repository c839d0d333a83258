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

/// Why a pickle was refused; positions are byte offsets into the pickle.
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

/// Declares [`Opcode`] and its `TryFrom<u8>` from one table, so that each byte is written once.
macro_rules! opcodes {
    ($($name:ident = $byte:expr,)*) => {
        /// The pickle opcodes this unpickler knows, under the names `pickle.py` and `pickletools`
        /// give them. Protocol opcodes missing here (`STRING`, `BYTEARRAY8`, `NEXT_BUFFER`,
        /// `READONLY_BUFFER`) are never written by `torch.save` and are refused as unknown.
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(u8)]
        pub enum Opcode {
            $($name = $byte,)*
        }

        impl TryFrom<u8> for Opcode {
            type Error = UnknownOpcode;
            fn try_from(byte: u8) -> Result<Self, UnknownOpcode> {
                match byte {
                    $($byte => Ok(Opcode::$name),)*
                    _ => Err(UnknownOpcode(byte)),
                }
            }
        }
    };
}

opcodes! {
    // framing
    PROTO = 0x80, FRAME = 0x95, STOP = b'.',
    // stack and memo
    MARK = b'(', POP = b'0', POP_MARK = b'1', DUP = b'2',
    PUT = b'p', BINPUT = b'q', LONG_BINPUT = b'r', MEMOIZE = 0x94,
    GET = b'g', BINGET = b'h', LONG_BINGET = b'j',
    // scalars
    NONE = b'N', NEWTRUE = 0x88, NEWFALSE = 0x89,
    INT = b'I', BININT = b'J', BININT1 = b'K', BININT2 = b'M', LONG = b'L', LONG1 = 0x8a, LONG4 = 0x8b,
    FLOAT = b'F', BINFLOAT = b'G',
    UNICODE = b'V', SHORT_BINUNICODE = 0x8c, BINUNICODE = b'X', BINUNICODE8 = 0x8d,
    SHORT_BINSTRING = b'U', BINSTRING = b'T',
    SHORT_BINBYTES = b'C', BINBYTES = b'B', BINBYTES8 = 0x8e,
    // containers
    EMPTY_TUPLE = b')', TUPLE = b't', TUPLE1 = 0x85, TUPLE2 = 0x86, TUPLE3 = 0x87,
    EMPTY_LIST = b']', LIST = b'l', APPEND = b'a', APPENDS = b'e',
    EMPTY_DICT = b'}', DICT = b'd', SETITEM = b's', SETITEMS = b'u',
    EMPTY_SET = 0x8f, ADDITEMS = 0x90, FROZENSET = 0x91,
    // globals, calls, persistent ids
    GLOBAL = b'c', STACK_GLOBAL = 0x93, INST = b'i', OBJ = b'o',
    REDUCE = b'R', NEWOBJ = 0x81, NEWOBJ_EX = 0x92, BUILD = b'b',
    PERSID = b'P', BINPERSID = b'Q', EXT1 = 0x82, EXT2 = 0x83, EXT4 = 0x84,
}

/// A byte that is not one of the [`Opcode`]s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownOpcode(pub u8);

impl fmt::Display for UnknownOpcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown pickle opcode 0x{:02x}", self.0)
    }
}

impl std::error::Error for UnknownOpcode {}

type R<T> = Result<T, PickleError>;

/// The unpickling VM: its position in `data`, the stack, the stacks set aside by each MARK, and
/// the memo.
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

impl Machine<'_> {
    fn run(&mut self) -> R<Value> {
        loop {
            if let Some(object) = self.step()? {
                return Ok(object);
            }
        }
    }

    /// Reads one opcode and does what it says; returns the pickled object at `STOP`.
    fn step(&mut self) -> R<Option<Value>> {
        use Opcode::*;
        let at = self.pos;
        let op = Opcode::try_from(self.u8()?).map_err(|UnknownOpcode(byte)| PickleError::UnknownOpcode(byte, at))?;
        match op {
            PROTO => self.skip(1),
            FRAME => self.skip(8),
            STOP => return self.pop().map(Some),

            MARK => self.mark(),
            POP => self.pop().map(drop),
            POP_MARK => self.pop_mark().map(drop),
            DUP => self.dup(),
            PUT => self.text_index("PUT").and_then(|i| self.memo_put(i)),
            BINPUT => self.u8().and_then(|i| self.memo_put(i.into())),
            LONG_BINPUT => self.u32().and_then(|i| self.memo_put(i.into())),
            MEMOIZE => self.memo_put(self.memo.len() as u64),
            GET => self.text_index("GET").and_then(|i| self.memo_get(i)),
            BINGET => self.u8().and_then(|i| self.memo_get(i.into())),
            LONG_BINGET => self.u32().and_then(|i| self.memo_get(i.into())),

            NONE => self.push(Value::None),
            NEWTRUE => self.push(Value::Bool(true)),
            NEWFALSE => self.push(Value::Bool(false)),
            INT => self.text_int(),
            BININT => self.u32().and_then(|v| self.push(Value::Int((v as i32).into()))),
            BININT1 => self.u8().and_then(|v| self.push(Value::Int(v.into()))),
            BININT2 => self.u16().and_then(|v| self.push(Value::Int(v.into()))),
            LONG => self.text_long(),
            LONG1 => self.u8().and_then(|n| self.long(n.into())),
            LONG4 => self.u32().and_then(|n| self.long(n as usize)),
            FLOAT => self.text_float(),
            BINFLOAT => self.bin_float(),
            UNICODE => self.text_unicode(),
            SHORT_BINUNICODE => self.u8().and_then(|n| self.unicode(n.into())),
            BINUNICODE => self.u32().and_then(|n| self.unicode(n as usize)),
            BINUNICODE8 => self.u64().and_then(|n| self.unicode(n as usize)),
            SHORT_BINSTRING => self.u8().and_then(|n| self.py2_string(n.into())),
            BINSTRING => self.u32().and_then(|n| self.py2_string(n as usize)),
            SHORT_BINBYTES => self.u8().and_then(|n| self.bytes(n.into())),
            BINBYTES => self.u32().and_then(|n| self.bytes(n as usize)),
            BINBYTES8 => self.u64().and_then(|n| self.bytes(n as usize)),

            EMPTY_TUPLE => self.push(Value::Tuple(Vec::new())),
            TUPLE => self.pop_mark().and_then(|items| self.push(Value::Tuple(items))),
            TUPLE1 => self.tuple_from_stack(1, at),
            TUPLE2 => self.tuple_from_stack(2, at),
            TUPLE3 => self.tuple_from_stack(3, at),
            EMPTY_LIST => self.push(Value::List(Vec::new())),
            LIST => self.pop_mark().and_then(|items| self.push(Value::List(items))),
            APPEND => self.append(),
            APPENDS => self.extend_list("APPENDS to a non-list"),
            EMPTY_DICT => self.push(Value::Dict(Vec::new())),
            DICT => self.pop_mark().and_then(pairs).and_then(|d| self.push(Value::Dict(d))),
            SETITEM => self.set_item(),
            SETITEMS => self.set_items(),
            // Sets are kept as lists: a tensor checkpoint has no use for them.
            EMPTY_SET => self.push(Value::List(Vec::new())),
            ADDITEMS => self.extend_list("ADDITEMS to a non-set"),
            FROZENSET => self.pop_mark().and_then(|items| self.push(Value::List(items))),

            GLOBAL => self.text_global(),
            STACK_GLOBAL => self.stack_global(),
            INST => self.inst(),
            OBJ => self.obj(),
            REDUCE | NEWOBJ => self.reduce("REDUCE"),
            NEWOBJ_EX => self.pop().and_then(|_kwargs| self.reduce("NEWOBJ_EX")),
            BUILD => self.build(),
            PERSID => Err(PickleError::Malformed("text persistent ids are not used by torch.save".into())),
            BINPERSID => self.pop().and_then(persistent_load).and_then(|v| self.push(v)),
            // The copyreg extension registry can stand for any global, so it is refused like one.
            EXT1 | EXT2 | EXT4 => {
                Err(PickleError::DisallowedGlobal(format!("<copyreg extension code, opcode 0x{:02x}>", op as u8)))
            }
        }?;
        Ok(None)
    }
}

/// Operand readers, all bounds-checked.
impl<'a> Machine<'a> {
    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len()).ok_or(PickleError::Truncated(self.pos))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn skip(&mut self, n: usize) -> R<()> {
        self.take(n).map(drop)
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
    /// A text operand (protocol 0 style), up to its newline.
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
    /// The memo index of a text `PUT`/`GET`.
    fn text_index(&mut self, what: &str) -> R<u64> {
        self.line()?.parse().map_err(|_| PickleError::Malformed(format!("{what} index")))
    }
}

/// The stack, its marks and the memo.
impl Machine<'_> {
    fn push(&mut self, v: Value) -> R<()> {
        self.stack.push(v);
        Ok(())
    }
    fn pop(&mut self) -> R<Value> {
        self.stack.pop().ok_or_else(|| PickleError::Malformed(format!("stack underflow at byte {}", self.pos)))
    }
    fn top(&mut self) -> R<&mut Value> {
        let pos = self.pos;
        self.stack.last_mut().ok_or_else(|| PickleError::Malformed(format!("stack underflow at byte {pos}")))
    }
    fn dup(&mut self) -> R<()> {
        let v = self.top()?.clone();
        self.push(v)
    }
    /// MARK: the stack so far is set aside; what is pushed after it is the marked items.
    fn mark(&mut self) -> R<()> {
        self.marks.push(std::mem::take(&mut self.stack));
        Ok(())
    }
    /// The items pushed since the last MARK, restoring the stack from before it.
    fn pop_mark(&mut self) -> R<Vec<Value>> {
        let items = std::mem::take(&mut self.stack);
        self.stack = self.marks.pop().ok_or_else(|| PickleError::Malformed("no MARK on the stack".into()))?;
        Ok(items)
    }
    fn memo_put(&mut self, index: u64) -> R<()> {
        let v = self.top()?.clone();
        self.memo.insert(index, v);
        Ok(())
    }
    fn memo_get(&mut self, index: u64) -> R<()> {
        let v = self.memo.get(&index).cloned().ok_or_else(|| PickleError::Malformed(format!("memo {index} unset")))?;
        self.push(v)
    }
}

/// Scalars: numbers, strings and bytes.
impl Machine<'_> {
    /// INT: a decimal line, or `01`/`00` for the booleans of protocol 0.
    fn text_int(&mut self) -> R<()> {
        let v = match self.line()? {
            "01" => Value::Bool(true),
            "00" => Value::Bool(false),
            s => Value::Int(s.parse().map_err(|_| PickleError::Malformed(format!("INT `{s}`")))?),
        };
        self.push(v)
    }
    fn text_long(&mut self) -> R<()> {
        let l = self.line()?.trim_end_matches('L');
        let v = l.parse().map_err(|_| PickleError::Malformed(format!("LONG `{l}`")))?;
        self.push(Value::Int(v))
    }
    /// LONG1 / LONG4: `n` bytes of little-endian two's complement; more than 8 is refused.
    fn long(&mut self, n: usize) -> R<()> {
        let b = self.take(n)?;
        if n > 8 {
            return Err(PickleError::Malformed(format!("integer of {n} bytes is too large")));
        }
        let mut buf = if b.last().is_some_and(|&x| x & 0x80 != 0) { [0xffu8; 8] } else { [0u8; 8] };
        buf[..n].copy_from_slice(b);
        self.push(Value::Int(i64::from_le_bytes(buf)))
    }
    fn text_float(&mut self) -> R<()> {
        let l = self.line()?;
        let v = l.parse().map_err(|_| PickleError::Malformed(format!("FLOAT `{l}`")))?;
        self.push(Value::Float(v))
    }
    /// BINFLOAT: big-endian, unlike every other binary operand.
    fn bin_float(&mut self) -> R<()> {
        let v = f64::from_be_bytes(self.take(8)?.try_into().unwrap());
        self.push(Value::Float(v))
    }
    fn text_unicode(&mut self) -> R<()> {
        let s = self.line()?.to_owned();
        self.push(Value::Str(s))
    }
    fn unicode(&mut self, n: usize) -> R<()> {
        let s = self.string(n)?;
        self.push(Value::Str(s))
    }
    /// A Python 2 `str` (SHORT_BINSTRING / BINSTRING), kept as text, invalid UTF-8 replaced.
    fn py2_string(&mut self, n: usize) -> R<()> {
        let b = self.take(n)?;
        self.push(Value::Str(String::from_utf8_lossy(b).into()))
    }
    fn bytes(&mut self, n: usize) -> R<()> {
        let b = self.take(n)?.to_vec();
        self.push(Value::Bytes(b))
    }
}

/// Containers: tuples, lists, dicts and sets.
impl Machine<'_> {
    /// TUPLE1-3: the top `n` items.
    fn tuple_from_stack(&mut self, n: usize, at: usize) -> R<()> {
        if self.stack.len() < n {
            return Err(PickleError::Malformed(format!("TUPLE{n} with a short stack at byte {at}")));
        }
        let items = self.stack.split_off(self.stack.len() - n);
        self.push(Value::Tuple(items))
    }
    fn append(&mut self) -> R<()> {
        let v = self.pop()?;
        match self.top()? {
            Value::List(l) => l.push(v),
            _ => return Err(PickleError::Malformed("APPEND to a non-list".into())),
        }
        Ok(())
    }
    /// APPENDS / ADDITEMS: the marked items onto the list (or set) below the mark.
    fn extend_list(&mut self, not_a_list: &str) -> R<()> {
        let items = self.pop_mark()?;
        match self.top()? {
            Value::List(l) => l.extend(items),
            _ => return Err(PickleError::Malformed(not_a_list.into())),
        }
        Ok(())
    }
    fn set_item(&mut self) -> R<()> {
        let v = self.pop()?;
        let k = self.pop()?;
        dict_insert(self.top()?, vec![(k, v)])
    }
    fn set_items(&mut self) -> R<()> {
        let items = self.pop_mark()?;
        let d = pairs(items)?;
        dict_insert(self.top()?, d)
    }
}

/// Globals, calls and object state. Every global goes through [`Machine::global`], which is where
/// anything outside [`ALLOWED_GLOBALS`] is refused.
impl Machine<'_> {
    fn global(&mut self, module: &str, name: &str) -> R<()> {
        let full = format!("{module}.{name}");
        if !ALLOWED_GLOBALS.contains(&full.as_str()) {
            return Err(PickleError::DisallowedGlobal(full));
        }
        self.push(Value::Global(full))
    }
    /// GLOBAL: module and name given inline, one line each.
    fn text_global(&mut self) -> R<()> {
        let module = self.line()?.to_owned();
        let name = self.line()?.to_owned();
        self.global(&module, &name)
    }
    /// STACK_GLOBAL: module and name are the top two strings.
    fn stack_global(&mut self) -> R<()> {
        let name = self.pop()?;
        let module = self.pop()?;
        match (module, name) {
            (Value::Str(m), Value::Str(n)) => self.global(&m, &n),
            _ => Err(PickleError::Malformed("STACK_GLOBAL without strings".into())),
        }
    }
    /// INST: a global given inline, called with the marked items.
    fn inst(&mut self) -> R<()> {
        self.text_global()?;
        let callable = self.pop()?;
        let args = self.pop_mark()?;
        let v = call(callable, args)?;
        self.push(v)
    }
    /// OBJ: the first marked item called with the others.
    fn obj(&mut self) -> R<()> {
        let mut items = self.pop_mark()?;
        if items.is_empty() {
            return Err(PickleError::Malformed("OBJ without a class".into()));
        }
        let callable = items.remove(0);
        let v = call(callable, items)?;
        self.push(v)
    }
    /// REDUCE / NEWOBJ (and NEWOBJ_EX once its kwargs are popped): a callable and its argument tuple.
    fn reduce(&mut self, what: &str) -> R<()> {
        let args = self.pop()?;
        let callable = self.pop()?;
        let args = match args {
            Value::Tuple(a) => a,
            _ => return Err(PickleError::Malformed(format!("{what} arguments are not a tuple"))),
        };
        let v = call(callable, args)?;
        self.push(v)
    }
    /// BUILD: object state (e.g. an OrderedDict's `_metadata`) is not needed and is dropped.
    fn build(&mut self) -> R<()> {
        self.pop()?;
        self.top()?;
        Ok(())
    }
}

fn pairs(items: Vec<Value>) -> R<Vec<(Value, Value)>> {
    if !items.len().is_multiple_of(2) {
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
    fn opcodes_are_their_bytes() {
        for byte in 0..=u8::MAX {
            if let Ok(op) = Opcode::try_from(byte) {
                assert_eq!(op as u8, byte);
            }
        }
        assert_eq!(Opcode::try_from(b'('), Ok(Opcode::MARK));
        assert_eq!(Opcode::try_from(0x94), Ok(Opcode::MEMOIZE));
        assert_eq!(Opcode::try_from(b'S'), Err(UnknownOpcode(b'S')));
        assert_eq!(UnknownOpcode(0xfe).to_string(), "unknown pickle opcode 0xfe");
        assert_eq!(load(b"\x80\x02\xfe"), Err(PickleError::UnknownOpcode(0xfe, 2)));
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
