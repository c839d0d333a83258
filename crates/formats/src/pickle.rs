//! A restricted unpickler for PyTorch checkpoints that never runs code.
//!
//! `torch.save` writes a pickle whose only callables are a dict constructor and the tensor
//! rebuild functions; the tensors' bytes live beside it in the zip archive and are referenced by
//! persistent ids `('storage', torch.FloatStorage, key, location, numel)`. This module interprets
//! the pickle opcodes itself and accepts exactly those globals ([`ALLOWED_GLOBALS`]); any other
//! global (`os.system`, `builtins.eval`, a Lightning callback class, ...) is refused, by name,
//! before anything is built. All reads are bounds-checked: malformed input gives an error, not a
//! panic.
//!
//! Work and memory are bounded too. Every stack and memo entry carries its value's nesting depth,
//! node count and payload bytes, kept up to date as containers are built and appended to, so
//! that a copy (DUP, memo PUT/GET) is charged to a budget before it is made, without walking the
//! value. A pickle that creates more than [`MAX_NODES`] values or [`MAX_PAYLOAD_BYTES`] bytes of
//! strings (copies included), or nests deeper than [`MAX_DEPTH`], is refused with
//! [`PickleError::Limit`]; so no value that reaches the recursive `Clone`, `Drop`, `PartialEq` or
//! `Debug` of [`Value`] is deeper than [`MAX_DEPTH`].

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

/// The most values one pickle may create, counting every copy made by DUP and memo PUT/GET,
/// every MARK and every memo entry. A real SD1.5 checkpoint's pickle creates about 20-50k (a full
/// training checkpoint with optimizer state a few times that), so this leaves a wide margin while
/// capping the VM at a few hundred MB (a value takes about 150 bytes).
pub const MAX_NODES: u64 = 2_000_000;

/// The most bytes of strings and bytes one pickle may create, copies included. The strings of a
/// real checkpoint (tensor names, storage keys) come to well under a megabyte.
pub const MAX_PAYLOAD_BYTES: u64 = 256 << 20;

/// The deepest nesting of containers accepted. A state dict nests a few levels (a `state_dict`
/// wrapper, the dict, a tensor's argument tuples); Python itself refuses to pickle much deeper.
pub const MAX_DEPTH: u32 = 256;

/// Why a pickle was refused; positions are byte offsets into the pickle.
#[derive(Debug, PartialEq)]
pub enum PickleError {
    DisallowedGlobal(String),
    Truncated(usize),
    UnknownOpcode(u8, usize),
    Malformed(String),
    /// The pickle went past one of the limits on work and memory ([`MAX_NODES`],
    /// [`MAX_PAYLOAD_BYTES`], [`MAX_DEPTH`]); says which, and at which byte.
    Limit(String),
}

impl fmt::Display for PickleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PickleError::DisallowedGlobal(g) => write!(f, "disallowed global `{g}`"),
            PickleError::Truncated(at) => write!(f, "pickle truncated at byte {at}"),
            PickleError::UnknownOpcode(op, at) => write!(f, "unsupported pickle opcode 0x{op:02x} at byte {at}"),
            PickleError::Malformed(m) => write!(f, "malformed pickle: {m}"),
            PickleError::Limit(m) => {
                write!(f, "pickle refused: {m}; no tensor checkpoint comes near this, so the file is corrupt or hostile")
            }
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

impl Value {
    /// The kind of value, for messages (a value itself may be too large to print).
    pub fn kind(&self) -> &'static str {
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
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
        }
    }
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

/// The size of a value, kept beside it so that copies can be charged without walking it.
#[derive(Clone, Copy, Debug, Default)]
struct Size {
    /// Nesting depth: 0 for a scalar, one more than its deepest item for a container.
    depth: u32,
    /// Values in it, itself included.
    nodes: u64,
    /// Bytes of strings and bytes in it.
    bytes: u64,
}

impl Size {
    /// The size of a container (or call result) made of `items`.
    fn around<'e>(items: impl IntoIterator<Item = &'e Entry>) -> Size {
        let mut size = Size { depth: 0, nodes: 1, bytes: 0 };
        for item in items {
            size.add(item.size);
        }
        size
    }
    /// Counts `item` as one more item of this container.
    fn add(&mut self, item: Size) {
        self.depth = self.depth.max(item.depth + 1);
        self.nodes += item.nodes;
        self.bytes += item.bytes;
    }
}

/// A dict key that can be hashed, for keeping a dict's keys unique as Python does. Keys of other
/// kinds (floats, tuples) are never merged, which no tensor checkpoint needs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    None,
    Bool(bool),
    Int(i64),
    Str(String),
    Bytes(Vec<u8>),
}

impl Key {
    fn of(v: &Value) -> Option<Key> {
        Some(match v {
            Value::None => Key::None,
            Value::Bool(b) => Key::Bool(*b),
            Value::Int(i) => Key::Int(*i),
            Value::Str(s) => Key::Str(s.clone()),
            Value::Bytes(b) => Key::Bytes(b.clone()),
            _ => return None,
        })
    }
}

/// Where each key of a dict is, so that SETITEM replaces in O(1) instead of searching.
type KeyIndex = HashMap<Key, usize>;

/// A value on the stack or in the memo, with its size. A dict on top of the stack keeps the index
/// of its keys while items are set into it; copies start without one.
#[derive(Debug)]
struct Entry {
    value: Value,
    size: Size,
    index: Option<Box<KeyIndex>>,
}

impl Entry {
    fn new(value: Value, size: Size) -> Entry {
        Entry { value, size, index: None }
    }
}

/// The unpickling VM: its position in `data`, the stack, the stacks set aside by each MARK, the
/// memo, and what has been created so far (counted against [`MAX_NODES`] and
/// [`MAX_PAYLOAD_BYTES`]).
struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Entry>,
    marks: Vec<Vec<Entry>>,
    memo: HashMap<u64, Entry>,
    budget: Budget,
}

/// Interprets a pickle (protocols 2-5) and returns the object it describes.
pub fn load(data: &[u8]) -> R<Value> {
    let mut m = Machine {
        data,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        budget: Budget::default(),
    };
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
            STOP => return self.pop().map(|e| Some(e.value)),

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
            TUPLE => self.pop_mark().and_then(|items| self.push_built(items, Value::Tuple)),
            TUPLE1 => self.tuple_from_stack(1, at),
            TUPLE2 => self.tuple_from_stack(2, at),
            TUPLE3 => self.tuple_from_stack(3, at),
            EMPTY_LIST => self.push(Value::List(Vec::new())),
            LIST => self.pop_mark().and_then(|items| self.push_built(items, Value::List)),
            APPEND => self.append(),
            APPENDS => self.extend_list("APPENDS to a non-list"),
            EMPTY_DICT => self.push(Value::Dict(Vec::new())),
            DICT => self.dict(),
            SETITEM => self.set_item(),
            SETITEMS => self.set_items(),
            // Sets are kept as lists: a tensor checkpoint has no use for them.
            EMPTY_SET => self.push(Value::List(Vec::new())),
            ADDITEMS => self.extend_list("ADDITEMS to a non-set"),
            FROZENSET => self.pop_mark().and_then(|items| self.push_built(items, Value::List)),

            GLOBAL => self.text_global(),
            STACK_GLOBAL => self.stack_global(),
            INST => self.inst(),
            OBJ => self.obj(),
            REDUCE | NEWOBJ => self.reduce("REDUCE"),
            NEWOBJ_EX => self.pop().and_then(|_kwargs| self.reduce("NEWOBJ_EX")),
            BUILD => self.build(),
            PERSID => Err(PickleError::Malformed("text persistent ids are not used by torch.save".into())),
            BINPERSID => self.persistent_id(),
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

/// What a pickle has created so far, values and string bytes, copies included.
#[derive(Default)]
struct Budget {
    nodes: u64,
    bytes: u64,
}

impl Budget {
    /// Counts `nodes` values and `bytes` of strings as created at byte `pos`; refuses past the
    /// limits.
    fn charge(&mut self, nodes: u64, bytes: u64, pos: usize) -> R<()> {
        self.nodes = self.nodes.saturating_add(nodes);
        self.bytes = self.bytes.saturating_add(bytes);
        if self.nodes > MAX_NODES {
            return Err(PickleError::Limit(format!(
                "more than {MAX_NODES} values (copies made by DUP and memo PUT/GET included) by byte {pos}"
            )));
        }
        if self.bytes > MAX_PAYLOAD_BYTES {
            return Err(PickleError::Limit(format!(
                "more than {MAX_PAYLOAD_BYTES} bytes of strings (copies included) by byte {pos}"
            )));
        }
        Ok(())
    }
    /// A copy of `e` (DUP, memo PUT/GET), charged in full before it is made.
    fn copy(&mut self, e: &Entry, pos: usize) -> R<Entry> {
        self.charge(e.size.nodes, e.size.bytes, pos)?;
        Ok(Entry::new(e.value.clone(), e.size))
    }
}

fn underflow(pos: usize) -> PickleError {
    PickleError::Malformed(format!("stack underflow at byte {pos}"))
}

/// The stack, its marks and the memo.
impl Machine<'_> {
    fn charge(&mut self, nodes: u64, bytes: u64) -> R<()> {
        self.budget.charge(nodes, bytes, self.pos)
    }
    /// Pushes a new scalar (or empty container).
    fn push(&mut self, v: Value) -> R<()> {
        let bytes = match &v {
            Value::Str(s) => s.len() as u64,
            Value::Bytes(b) => b.len() as u64,
            _ => 0,
        };
        self.charge(1, bytes)?;
        self.stack.push(Entry::new(v, Size { depth: 0, nodes: 1, bytes }));
        Ok(())
    }
    /// Pushes a value built from `items` (a container, or what a call made of its arguments);
    /// its size is that of a container of them, an upper bound.
    fn push_made_of(&mut self, v: Value, size: Size) -> R<()> {
        check_depth(size, self.pos)?;
        self.charge(1, 0)?;
        self.stack.push(Entry::new(v, size));
        Ok(())
    }
    /// Pushes the container `make` builds from `items`.
    fn push_built(&mut self, items: Vec<Entry>, make: fn(Vec<Value>) -> Value) -> R<()> {
        let size = Size::around(&items);
        self.push_made_of(make(values(items)), size)
    }
    fn pop(&mut self) -> R<Entry> {
        self.stack.pop().ok_or_else(|| underflow(self.pos))
    }
    fn top(&mut self) -> R<&mut Entry> {
        self.stack.last_mut().ok_or_else(|| underflow(self.pos))
    }
    fn dup(&mut self) -> R<()> {
        let top = self.stack.last().ok_or_else(|| underflow(self.pos))?;
        let copy = self.budget.copy(top, self.pos)?;
        self.stack.push(copy);
        Ok(())
    }
    /// MARK: the stack so far is set aside; what is pushed after it is the marked items.
    fn mark(&mut self) -> R<()> {
        self.charge(1, 0)?;
        self.marks.push(std::mem::take(&mut self.stack));
        Ok(())
    }
    /// The items pushed since the last MARK, restoring the stack from before it.
    fn pop_mark(&mut self) -> R<Vec<Entry>> {
        let items = std::mem::take(&mut self.stack);
        self.stack = self.marks.pop().ok_or_else(|| PickleError::Malformed("no MARK on the stack".into()))?;
        Ok(items)
    }
    fn memo_put(&mut self, index: u64) -> R<()> {
        let top = self.stack.last().ok_or_else(|| underflow(self.pos))?;
        let copy = self.budget.copy(top, self.pos)?;
        self.memo.insert(index, copy);
        Ok(())
    }
    fn memo_get(&mut self, index: u64) -> R<()> {
        let e = self.memo.get(&index).ok_or_else(|| PickleError::Malformed(format!("memo {index} unset")))?;
        let copy = self.budget.copy(e, self.pos)?;
        self.stack.push(copy);
        Ok(())
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
        self.push_built(items, Value::Tuple)
    }
    fn dict(&mut self) -> R<()> {
        let items = self.pop_mark()?;
        let size = Size::around(&items);
        let d = unique_keys(pairs(values(items))?);
        self.push_made_of(Value::Dict(d), size)
    }
    fn append(&mut self) -> R<()> {
        let item = self.pop()?;
        self.extend_top(vec![item], "APPEND to a non-list")
    }
    /// APPENDS / ADDITEMS: the marked items onto the list (or set) below the mark.
    fn extend_list(&mut self, not_a_list: &str) -> R<()> {
        let items = self.pop_mark()?;
        self.extend_top(items, not_a_list)
    }
    /// Appends `items` to the list on top of the stack, keeping its size up to date.
    fn extend_top(&mut self, items: Vec<Entry>, not_a_list: &str) -> R<()> {
        let pos = self.pos;
        let top = self.stack.last_mut().ok_or_else(|| underflow(pos))?;
        let Value::List(list) = &mut top.value else {
            return Err(PickleError::Malformed(not_a_list.into()));
        };
        let mut size = top.size;
        items.iter().for_each(|item| size.add(item.size));
        check_depth(size, pos)?;
        list.extend(values(items));
        top.size = size;
        Ok(())
    }
    fn set_item(&mut self) -> R<()> {
        let v = self.pop()?;
        let k = self.pop()?;
        self.set_on_top(vec![(k, v)])
    }
    fn set_items(&mut self) -> R<()> {
        let items = self.pop_mark()?;
        self.set_on_top(pairs(items)?)
    }
    /// Sets `items` into the dict on top of the stack: a key already there has its value
    /// replaced, as in Python. The dict's key index is built on first use, so each set is O(1).
    fn set_on_top(&mut self, items: Vec<(Entry, Entry)>) -> R<()> {
        let pos = self.pos;
        let top = self.stack.last_mut().ok_or_else(|| underflow(pos))?;
        let Value::Dict(d) = &mut top.value else {
            return Err(PickleError::Malformed("SETITEM on a non-dict".into()));
        };
        let mut size = top.size;
        for (k, v) in &items {
            size.add(k.size);
            size.add(v.size);
        }
        check_depth(size, pos)?;
        let index = top.index.get_or_insert_with(|| Box::new(key_index(d)));
        for (k, v) in items {
            dict_set(d, index, k.value, v.value);
        }
        top.size = size;
        Ok(())
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
        match (module.value, name.value) {
            (Value::Str(m), Value::Str(n)) => self.global(&m, &n),
            _ => Err(PickleError::Malformed("STACK_GLOBAL without strings".into())),
        }
    }
    /// Pushes what `callable` makes of `args`, sized as if it held them.
    fn push_call(&mut self, callable: Value, args: Vec<Entry>) -> R<()> {
        let size = Size::around(&args);
        let v = call(callable, values(args))?;
        self.push_made_of(v, size)
    }
    /// INST: a global given inline, called with the marked items.
    fn inst(&mut self) -> R<()> {
        self.text_global()?;
        let callable = self.pop()?;
        let args = self.pop_mark()?;
        self.push_call(callable.value, args)
    }
    /// OBJ: the first marked item called with the others.
    fn obj(&mut self) -> R<()> {
        let mut items = self.pop_mark()?;
        if items.is_empty() {
            return Err(PickleError::Malformed("OBJ without a class".into()));
        }
        let callable = items.remove(0);
        self.push_call(callable.value, items)
    }
    /// REDUCE / NEWOBJ (and NEWOBJ_EX once its kwargs are popped): a callable and its argument tuple.
    fn reduce(&mut self, what: &str) -> R<()> {
        let args = self.pop()?;
        let callable = self.pop()?;
        let size = Size::around([&args]);
        let args = match args.value {
            Value::Tuple(a) => a,
            _ => return Err(PickleError::Malformed(format!("{what} arguments are not a tuple"))),
        };
        let v = call(callable.value, args)?;
        self.push_made_of(v, size)
    }
    /// BUILD: object state (e.g. an OrderedDict's `_metadata`) is not needed and is dropped.
    fn build(&mut self) -> R<()> {
        self.pop()?;
        self.top()?;
        Ok(())
    }
    /// BINPERSID: a storage reference.
    fn persistent_id(&mut self) -> R<()> {
        let pid = self.pop()?;
        let size = Size::around([&pid]);
        let v = persistent_load(pid.value)?;
        self.push_made_of(v, size)
    }
}

/// Refuses a value nested deeper than [`MAX_DEPTH`] (found at byte `pos`).
fn check_depth(size: Size, pos: usize) -> R<()> {
    if size.depth > MAX_DEPTH {
        return Err(PickleError::Limit(format!("containers nested more than {MAX_DEPTH} deep at byte {pos}")));
    }
    Ok(())
}

fn values(items: Vec<Entry>) -> Vec<Value> {
    items.into_iter().map(|e| e.value).collect()
}

fn pairs<T>(items: Vec<T>) -> R<Vec<(T, T)>> {
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

/// Where each (hashable) key of `d` is.
fn key_index(d: &[(Value, Value)]) -> KeyIndex {
    d.iter().enumerate().filter_map(|(i, (k, _))| Key::of(k).map(|key| (key, i))).collect()
}

/// Sets `k` to `v` in `d`: a key already there keeps its place and takes the new value.
fn dict_set(d: &mut Vec<(Value, Value)>, index: &mut KeyIndex, k: Value, v: Value) {
    match Key::of(&k) {
        Some(key) => match index.get(&key) {
            Some(&i) => d[i].1 = v,
            None => {
                index.insert(key, d.len());
                d.push((k, v));
            }
        },
        None => d.push((k, v)),
    }
}

/// A dict of `items` in which, as in Python, a repeated key keeps its first place and last value.
fn unique_keys(items: Vec<(Value, Value)>) -> Vec<(Value, Value)> {
    let mut index = KeyIndex::new();
    let mut d = Vec::with_capacity(items.len());
    for (k, v) in items {
        dict_set(&mut d, &mut index, k, v);
    }
    d
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
        other => return Err(PickleError::Malformed(format!("call of a non-callable {}", other.kind()))),
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
                Ok(Value::Dict(unique_keys(d)))
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

    fn is_limit(r: R<Value>) -> bool {
        matches!(r, Err(PickleError::Limit(_)))
    }

    #[test]
    fn dup_bomb_is_refused() {
        // `]` then DUP + APPEND 40 times: each step doubles the list, 2^40 values in 83 bytes.
        let mut p = b"\x80\x02]".to_vec();
        p.extend(b"2a".repeat(40));
        p.push(b'.');
        assert!(is_limit(load(&p)));
    }

    #[test]
    fn memo_bomb_is_refused() {
        // Each level is a list of two memo GETs of the level before, stored back in the memo.
        let mut p = b"\x80\x02]q\x00".to_vec();
        for i in 0..47u8 {
            p.extend([b'(', b'h', i, b'h', i, b'l', b'q', i + 1]);
        }
        p.push(b'.');
        let e = load(&p).unwrap_err();
        assert!(e.to_string().contains("more than 2000000 values"), "{e}");
    }

    #[test]
    fn many_pushes_are_refused() {
        let mut p = vec![b'N'; MAX_NODES as usize + 10];
        p.push(b'.');
        assert!(is_limit(load(&p)));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let n = 2_000_000;
        // Lists appended into each other, one level each.
        let mut p = b"]".repeat(n);
        p.extend(b"a".repeat(n - 1));
        p.push(b'.');
        assert!(is_limit(load(&p)));
        // Dicts set into each other, with nodes to spare (no budget refusal first).
        let n = 1000;
        let mut p = b"}K\x01".repeat(n);
        p.push(b'}');
        p.extend(b"s".repeat(n));
        p.push(b'.');
        let e = load(&p).unwrap_err();
        assert!(e.to_string().contains("nested more than 256 deep"), "{e}");
        // MARKs then LISTs.
        let mut p = b"(".repeat(n);
        p.extend(b"l".repeat(n));
        p.push(b'.');
        assert!(is_limit(load(&p)));
        let mut p = b"(".repeat(2_000_000);
        p.extend(b"l".repeat(2_000_000));
        p.push(b'.');
        assert!(is_limit(load(&p)));
    }

    #[test]
    fn nesting_within_the_limit_loads() {
        let n = MAX_DEPTH as usize;
        let mut p = b"(".repeat(n);
        p.extend(b"l".repeat(n));
        p.push(b'.');
        let mut v = load(&p).unwrap();
        for _ in 1..n {
            v = match v {
                Value::List(mut items) => items.pop().unwrap(),
                other => panic!("{}", other.kind()),
            };
        }
        assert_eq!(v, Value::List(Vec::new()));
    }

    #[test]
    fn copies_of_long_strings_are_charged() {
        // A 1 MiB string DUPed 300 times is 300 MiB of copies.
        let mut p = b"B\x00\x00\x10\x00".to_vec();
        p.extend(vec![b'x'; 1 << 20]);
        p.extend(b"2".repeat(300));
        p.push(b'.');
        let e = load(&p).unwrap_err();
        assert!(e.to_string().contains("bytes of strings"), "{e}");
    }

    #[test]
    fn repeated_dict_keys_keep_the_last_value() {
        // SETITEMS, DICT and OrderedDict all keep a repeated key's first place and last value.
        let want = Value::Dict(vec![(Value::Int(1), Value::Int(3)), (Value::Int(2), Value::Int(4))]);
        assert_eq!(load(b"}(K\x01K\x02K\x02K\x04K\x01K\x03u.").unwrap(), want);
        assert_eq!(load(b"(K\x01K\x02K\x02K\x04K\x01K\x03d.").unwrap(), want);
        let od = b"ccollections\nOrderedDict\n](K\x01K\x02\x86K\x02K\x04\x86K\x01K\x03\x86e\x85R.";
        assert_eq!(load(od).unwrap(), want);
    }

    #[test]
    fn messages_name_the_kind_not_the_value() {
        let mut p = b"]".to_vec();
        p.extend(b"K\x07a".repeat(1000));
        p.extend(b")R.");
        let e = load(&p).unwrap_err().to_string();
        assert!(e.contains("call of a non-callable list") && e.len() < 200, "{e}");
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
