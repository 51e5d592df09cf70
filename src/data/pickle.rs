//! A restricted pickle reader for CIFAR batches.
//!
//! It is a small pickle virtual machine that knows only the opcodes CIFAR batch
//! files use (Python 2 protocol 2 as published, and Python 3 re-pickles at
//! protocols 2 to 5). Nothing is ever executed: the few globals a numpy array
//! pickle names — `numpy.core.multiarray._reconstruct`, `numpy.ndarray`,
//! `numpy.dtype`, `_codecs.encode` and `numpy._core.numeric._frombuffer` — are
//! *interpreted* to rebuild plain byte buffers, and any other global or opcode
//! is refused with an error naming it. Lengths are checked against the bytes
//! that remain before anything is allocated, and shared objects are reference
//! counted rather than copied, so a hostile file can neither run code nor blow
//! up memory. One cohesive thing (a virtual machine is its opcodes, its
//! limits and their tests together), hence its length.
//!
//! Nothing recurses on the depth of the input: the machine is a loop, and it
//! creates at most [`MAX_CONTAINERS`] tuples, lists and dicts. A value nests
//! no deeper than the containers that exist, so dropping (or walking) one
//! never recurses deeper than that either, however the file nests them. The
//! stack, the memo and the items of all containers together are bounded too;
//! strings and bytes are bounded by the file, whose size the caller bounds.

/// Tuples, lists and dicts one pickle may create. A CIFAR batch creates
/// about a dozen (the dict, the labels and filenames lists, the tuples of the
/// array reconstruction); 100 000 nested tuples are a stack-overflow attack.
pub(crate) const MAX_CONTAINERS: usize = 1024;
/// Values the stack and the memo may each hold, and items all containers
/// together may hold: a batch has 10 000 labels and 10 000 file names.
pub(crate) const MAX_ITEMS: usize = 1 << 20;

use std::cell::RefCell;
use std::rc::Rc;

/// An interpreted global: the only callables a CIFAR pickle may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Global {
    /// `numpy.core.multiarray._reconstruct` (or `numpy._core...`).
    Reconstruct,
    /// `numpy.ndarray`, passed to `_reconstruct` as the type to make.
    NdarrayType,
    /// `numpy.dtype`.
    DtypeType,
    /// `_codecs.encode`, which Python 3 uses to pickle `bytes` at protocol 2.
    CodecsEncode,
    /// `numpy._core.numeric._frombuffer`, numpy's protocol-5 array pickle.
    FromBuffer,
}

impl Global {
    fn resolve(module: &str, name: &str) -> Option<Self> {
        match (module, name) {
            ("numpy.core.multiarray" | "numpy._core.multiarray", "_reconstruct") => {
                Some(Self::Reconstruct)
            }
            ("numpy", "ndarray") => Some(Self::NdarrayType),
            ("numpy", "dtype") => Some(Self::DtypeType),
            ("_codecs", "encode") => Some(Self::CodecsEncode),
            ("numpy.core.numeric" | "numpy._core.numeric", "_frombuffer") => Some(Self::FromBuffer),
            _ => None,
        }
    }
}

/// An integer numpy dtype: the only kind a CIFAR batch holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Dtype {
    pub itemsize: usize,
    pub signed: bool,
    pub big_endian: bool,
}

impl Dtype {
    fn parse(descr: &str) -> Option<Self> {
        let (big_endian, rest) = match descr.as_bytes().first() {
            Some(b'>') => (true, &descr[1..]),
            Some(b'<' | b'|' | b'=') => (false, &descr[1..]),
            _ => (false, descr),
        };
        let (signed, size) = match rest {
            "u1" | "B" => (false, 1),
            "i1" | "b" => (true, 1),
            "u2" => (false, 2),
            "i2" => (true, 2),
            "u4" => (false, 4),
            "i4" => (true, 4),
            "u8" => (false, 8),
            "i8" => (true, 8),
            _ => return None,
        };
        Some(Self {
            itemsize: size,
            signed,
            big_endian: big_endian && size > 1,
        })
    }
}

/// A numpy array rebuilt from its pickle: C-ordered raw bytes.
#[derive(Debug)]
pub(crate) struct NdArray {
    pub shape: Vec<usize>,
    pub dtype: Option<Dtype>,
    pub data: Rc<Vec<u8>>,
}

impl NdArray {
    /// The elements as `i64`, for integer arrays of any width.
    pub fn to_i64(&self) -> Option<Vec<i64>> {
        let dtype = self.dtype?;
        let mut out = Vec::with_capacity(self.data.len() / dtype.itemsize);
        for chunk in self.data.chunks_exact(dtype.itemsize) {
            let mut bytes = [0u8; 8];
            if dtype.big_endian {
                for (dst, src) in bytes.iter_mut().zip(chunk.iter().rev()) {
                    *dst = *src;
                }
            } else {
                bytes[..chunk.len()].copy_from_slice(chunk);
            }
            let negative = dtype.signed && bytes[dtype.itemsize - 1] & 0x80 != 0;
            if negative {
                for b in &mut bytes[dtype.itemsize..] {
                    *b = 0xff;
                }
            }
            let value = i64::from_le_bytes(bytes);
            if !dtype.signed && value < 0 {
                return None; // a u8 above i64::MAX: not a label
            }
            out.push(value);
        }
        Some(out)
    }
}

/// A value on the pickle stack. Mutable objects are shared, as in Python.
#[derive(Clone, Debug)]
pub(crate) enum Value {
    None,
    Bool(bool),
    Int(i64),
    Bytes(Rc<Vec<u8>>),
    Str(Rc<str>),
    Tuple(Rc<[Value]>),
    List(Rc<RefCell<Vec<Value>>>),
    Dict(Rc<RefCell<Vec<(Value, Value)>>>),
    Global(Global),
    Dtype(Rc<RefCell<Dtype>>),
    Array(Rc<RefCell<NdArray>>),
}

impl Value {
    /// The Python type name, for messages (never the value: a value may be
    /// cyclic, `l.append(l)`, and printing it would not end).
    pub fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Bytes(_) => "bytes",
            Value::Str(_) => "str",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global(_) => "global",
            Value::Dtype(_) => "numpy.dtype",
            Value::Array(_) => "numpy.ndarray",
        }
    }

    /// The key as text, for `str` and Python-2 `str` (bytes) keys.
    pub fn as_key(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b.as_slice()),
            Value::Str(s) => Some(s.as_bytes()),
            _ => None,
        }
    }
}

/// The name of a pickle opcode, for error messages.
fn opcode_name(op: u8) -> &'static str {
    match op {
        b'(' => "MARK",
        b'.' => "STOP",
        b'0' => "POP",
        b'1' => "POP_MARK",
        b'2' => "DUP",
        b'F' => "FLOAT",
        b'I' => "INT",
        b'J' => "BININT",
        b'K' => "BININT1",
        b'L' => "LONG",
        b'M' => "BININT2",
        b'N' => "NONE",
        b'P' => "PERSID",
        b'Q' => "BINPERSID",
        b'R' => "REDUCE",
        b'S' => "STRING",
        b'T' => "BINSTRING",
        b'U' => "SHORT_BINSTRING",
        b'V' => "UNICODE",
        b'X' => "BINUNICODE",
        b'a' => "APPEND",
        b'b' => "BUILD",
        b'c' => "GLOBAL",
        b'd' => "DICT",
        b'}' => "EMPTY_DICT",
        b'e' => "APPENDS",
        b'g' => "GET",
        b'h' => "BINGET",
        b'i' => "INST",
        b'j' => "LONG_BINGET",
        b'l' => "LIST",
        b']' => "EMPTY_LIST",
        b'o' => "OBJ",
        b'p' => "PUT",
        b'q' => "BINPUT",
        b'r' => "LONG_BINPUT",
        b's' => "SETITEM",
        b't' => "TUPLE",
        b')' => "EMPTY_TUPLE",
        b'u' => "SETITEMS",
        b'G' => "BINFLOAT",
        0x80 => "PROTO",
        0x81 => "NEWOBJ",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        0x85 => "TUPLE1",
        0x86 => "TUPLE2",
        0x87 => "TUPLE3",
        0x88 => "NEWTRUE",
        0x89 => "NEWFALSE",
        0x8a => "LONG1",
        0x8b => "LONG4",
        b'B' => "BINBYTES",
        b'C' => "SHORT_BINBYTES",
        0x8c => "SHORT_BINUNICODE",
        0x8d => "BINUNICODE8",
        0x8e => "BINBYTES8",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x92 => "NEWOBJ_EX",
        0x93 => "STACK_GLOBAL",
        0x94 => "MEMOIZE",
        0x95 => "FRAME",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => "unknown",
    }
}

struct Machine<'a> {
    bytes: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: std::collections::HashMap<u32, Value>,
    /// Containers created so far (at most [`MAX_CONTAINERS`]).
    containers: usize,
    /// Items added to containers so far (at most [`MAX_ITEMS`]).
    items: usize,
}

type Step<T> = std::result::Result<T, String>;

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize) -> Step<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| {
                format!(
                    "truncated: needs {n} more bytes at offset {}, file has {}",
                    self.pos,
                    self.bytes.len()
                )
            })?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// Counts a new container holding `items` values against the limits.
    fn new_container(&mut self, items: usize) -> Step<()> {
        self.containers += 1;
        if self.containers > MAX_CONTAINERS {
            return Err(format!(
                "more than {MAX_CONTAINERS} tuples, lists and dicts (nested or not); \
                 a CIFAR batch has a dozen"
            ));
        }
        self.add_items(items)
    }

    /// Counts `n` values added to containers against [`MAX_ITEMS`].
    fn add_items(&mut self, n: usize) -> Step<()> {
        self.items = self.items.saturating_add(n);
        if self.items > MAX_ITEMS {
            return Err(format!(
                "containers hold more than {MAX_ITEMS} values; a CIFAR batch has 20 000"
            ));
        }
        Ok(())
    }

    fn u8(&mut self) -> Step<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Step<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Step<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn len8(&mut self) -> Step<usize> {
        let b = self.take(8)?;
        let n = u64::from_le_bytes(b.try_into().expect("8 bytes"));
        usize::try_from(n).map_err(|_| format!("length {n} does not fit in memory"))
    }

    fn line(&mut self) -> Step<&'a str> {
        let rest = &self.bytes[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| format!("truncated: unterminated line at offset {}", self.pos))?;
        self.pos += end + 1;
        std::str::from_utf8(&rest[..end]).map_err(|_| "a text argument is not UTF-8".to_string())
    }

    fn pop(&mut self) -> Step<Value> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(format!("stack underflow at offset {}", self.pos));
        }
        Ok(self.stack.pop().expect("checked non-empty"))
    }

    fn top(&self) -> Step<&Value> {
        self.stack
            .last()
            .ok_or_else(|| format!("stack underflow at offset {}", self.pos))
    }

    fn pop_mark(&mut self) -> Step<Vec<Value>> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| format!("no MARK before offset {}", self.pos))?;
        Ok(self.stack.split_off(mark))
    }

    fn push_str(&mut self, raw: &[u8]) -> Step<()> {
        let s =
            std::str::from_utf8(raw).map_err(|_| "a unicode string is not UTF-8".to_string())?;
        self.stack.push(Value::Str(Rc::from(s)));
        Ok(())
    }

    fn memo_put(&mut self, key: u32) -> Step<()> {
        let v = self.top()?.clone();
        self.memo.insert(key, v);
        Ok(())
    }

    fn memo_get(&mut self, key: u32) -> Step<()> {
        let v = self
            .memo
            .get(&key)
            .cloned()
            .ok_or_else(|| format!("memo key {key} used before it was set"))?;
        self.stack.push(v);
        Ok(())
    }

    #[allow(clippy::too_many_lines)] // one arm per opcode: a dispatch table reads best whole
    fn run(mut self) -> Step<Value> {
        loop {
            if self.stack.len() > MAX_ITEMS || self.memo.len() > MAX_ITEMS {
                return Err(format!(
                    "more than {MAX_ITEMS} values on the pickle stack or memo"
                ));
            }
            let at = self.pos;
            let op = self
                .u8()
                .map_err(|_| "truncated: no STOP opcode".to_string())?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return Err(format!("unsupported pickle protocol {proto}"));
                    }
                }
                0x95 => {
                    self.len8()?; // FRAME: a size hint only
                }
                b'.' => {
                    let v = self.pop()?;
                    if !self.stack.is_empty() || !self.marks.is_empty() {
                        return Err("values left on the stack at STOP".into());
                    }
                    return Ok(v);
                }
                b'(' => self.marks.push(self.stack.len()),
                b'}' => {
                    self.new_container(0)?;
                    self.stack.push(Value::Dict(Rc::default()));
                }
                b']' => {
                    self.new_container(0)?;
                    self.stack.push(Value::List(Rc::default()));
                }
                b')' => {
                    self.new_container(0)?;
                    self.stack.push(Value::Tuple(Rc::from(Vec::new())));
                }
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'J' => {
                    let b = self.take(4)?;
                    let v = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    self.stack.push(Value::Int(i64::from(v)));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(i64::from(v)));
                }
                b'M' => {
                    let v = self.u16()?;
                    self.stack.push(Value::Int(i64::from(v)));
                }
                0x8a => {
                    let n = usize::from(self.u8()?);
                    if n > 8 {
                        return Err(format!("integer of {n} bytes is too large"));
                    }
                    let b = self.take(n)?;
                    let fill = if b.last().is_some_and(|&x| x & 0x80 != 0) { 0xff } else { 0 };
                    let mut le = [fill; 8];
                    le[..n].copy_from_slice(b);
                    self.stack.push(Value::Int(i64::from_le_bytes(le)));
                }
                b'I' => {
                    // Protocol 0 text integers; "00"/"01" are Python 2's False/True.
                    let text = self.line()?;
                    let v = match text {
                        "00" => Value::Bool(false),
                        "01" => Value::Bool(true),
                        _ => Value::Int(
                            text.parse()
                                .map_err(|_| format!("bad INT argument {text:?}"))?,
                        ),
                    };
                    self.stack.push(v);
                }
                b'T' | b'B' => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?;
                    self.stack.push(Value::Bytes(Rc::new(b.to_vec())));
                }
                b'U' | b'C' => {
                    let n = usize::from(self.u8()?);
                    let b = self.take(n)?;
                    self.stack.push(Value::Bytes(Rc::new(b.to_vec())));
                }
                0x8e | 0x96 => {
                    let n = self.len8()?;
                    let b = self.take(n)?;
                    self.stack.push(Value::Bytes(Rc::new(b.to_vec())));
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?;
                    self.push_str(b)?;
                }
                0x8c => {
                    let n = usize::from(self.u8()?);
                    let b = self.take(n)?;
                    self.push_str(b)?;
                }
                0x8d => {
                    let n = self.len8()?;
                    let b = self.take(n)?;
                    self.push_str(b)?;
                }
                b'a' => {
                    self.add_items(1)?;
                    let v = self.pop()?;
                    match self.top()? {
                        Value::List(list) => list.borrow_mut().push(v),
                        other => return Err(format!("APPEND to a {}", other.kind())),
                    }
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.add_items(items.len())?;
                    match self.top()? {
                        Value::List(list) => list.borrow_mut().extend(items),
                        other => return Err(format!("APPENDS to a {}", other.kind())),
                    }
                }
                b's' => {
                    self.add_items(2)?;
                    let v = self.pop()?;
                    let k = self.pop()?;
                    match self.top()? {
                        Value::Dict(d) => d.borrow_mut().push((k, v)),
                        other => return Err(format!("SETITEM on a {}", other.kind())),
                    }
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.add_items(items.len())?;
                    if items.len() % 2 != 0 {
                        return Err("SETITEMS with an odd number of values".into());
                    }
                    match self.top()? {
                        Value::Dict(d) => {
                            let mut d = d.borrow_mut();
                            let mut it = items.into_iter();
                            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                                d.push((k, v));
                            }
                        }
                        other => return Err(format!("SETITEMS on a {}", other.kind())),
                    }
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.new_container(items.len())?;
                    self.stack.push(Value::Tuple(Rc::from(items)));
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let floor = self.marks.last().copied().unwrap_or(0);
                    if self.stack.len() < floor + n {
                        return Err(format!("stack underflow at offset {at}"));
                    }
                    self.new_container(n)?;
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(Rc::from(items)));
                }
                b'q' => {
                    let k = self.u8()?;
                    self.memo_put(u32::from(k))?;
                }
                b'r' => {
                    let k = self.u32()?;
                    self.memo_put(k)?;
                }
                0x94 => {
                    let k = u32::try_from(self.memo.len()).map_err(|_| "memo overflow")?;
                    self.memo_put(k)?;
                }
                b'h' => {
                    let k = self.u8()?;
                    self.memo_get(u32::from(k))?;
                }
                b'j' => {
                    let k = self.u32()?;
                    self.memo_get(k)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.push_global(module, name)?;
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (&module, &name) {
                        (Value::Str(m), Value::Str(n)) => {
                            let (m, n) = (m.clone(), n.clone());
                            self.push_global(&m, &n)?;
                        }
                        _ => return Err("STACK_GLOBAL needs two strings".into()),
                    }
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = reduce(&callable, &args)?;
                    self.stack.push(v);
                }
                b'b' => {
                    let state = self.pop()?;
                    build(self.top()?, &state)?;
                }
                other => {
                    return Err(format!(
                        "unsupported pickle opcode {} ({:?}) at offset {at}; a CIFAR batch never uses it",
                        opcode_name(other),
                        char::from(other)
                    ))
                }
            }
        }
    }

    fn push_global(&mut self, module: &str, name: &str) -> Step<()> {
        let g = Global::resolve(module, name).ok_or_else(|| {
            format!(
                "refusing pickle global {module}.{name}: only the numpy array \
                 reconstruction a CIFAR batch needs is allowed"
            )
        })?;
        self.stack.push(Value::Global(g));
        Ok(())
    }
}

fn tuple_args<'v>(args: &'v Value, what: &str) -> Step<&'v [Value]> {
    match args {
        Value::Tuple(t) => Ok(t),
        other => Err(format!(
            "{what} arguments are a {}, not a tuple",
            other.kind()
        )),
    }
}

fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::Str(s) => Some(s.to_string()),
        Value::Bytes(b) => std::str::from_utf8(b).ok().map(str::to_string),
        _ => None,
    }
}

fn as_shape(v: &Value) -> Step<Vec<usize>> {
    let dims = match v {
        Value::Tuple(t) => t.to_vec(),
        Value::List(l) => l.borrow().clone(),
        Value::Int(i) => vec![Value::Int(*i)],
        other => return Err(format!("array shape is a {}", other.kind())),
    };
    dims.iter()
        .map(|d| match d {
            Value::Int(i) => usize::try_from(*i).map_err(|_| format!("negative dimension {i}")),
            other => Err(format!("array dimension is a {}", other.kind())),
        })
        .collect()
}

fn checked_len(shape: &[usize], dtype: Dtype) -> Step<usize> {
    shape
        .iter()
        .try_fold(dtype.itemsize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("array shape {shape:?} is too large"))
}

/// `text.encode("latin1")`, byte by byte: in valid UTF-8 the code points
/// below 256 are one byte below 0x80 or a 0xC2/0xC3 lead and one continuation.
/// (Python 3 pickles `bytes` at protocol 2 this way, 30 MB per CIFAR batch.)
fn latin1(text: &str) -> Option<Vec<u8>> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            x @ 0..=0x7f => {
                out.push(x);
                i += 1;
            }
            x @ (0xc2 | 0xc3) => {
                // `text` is valid UTF-8, so a lead byte has its continuation.
                out.push(((x & 0x03) << 6) | (b[i + 1] & 0x3f));
                i += 2;
            }
            _ => return None,
        }
    }
    Some(out)
}

/// Interprets `callable(*args)` for the allow-listed globals.
fn reduce(callable: &Value, args: &Value) -> Step<Value> {
    let Value::Global(g) = callable else {
        return Err(format!(
            "REDUCE on a {}, not an allowed global",
            callable.kind()
        ));
    };
    let args = tuple_args(args, "call")?;
    match g {
        Global::CodecsEncode => {
            let (Some(Value::Str(text)), Some(enc)) = (args.first(), args.get(1)) else {
                return Err("_codecs.encode needs (str, encoding)".into());
            };
            let enc = as_text(enc).unwrap_or_default();
            if enc != "latin1" && enc != "latin-1" {
                return Err(format!(
                    "_codecs.encode with encoding {enc:?}, expected latin1"
                ));
            }
            let bytes = latin1(text).ok_or("_codecs.encode of non-latin1 text")?;
            Ok(Value::Bytes(Rc::new(bytes)))
        }
        Global::DtypeType => {
            let descr = args
                .first()
                .and_then(as_text)
                .ok_or("numpy.dtype needs a type string")?;
            let dtype = Dtype::parse(&descr)
                .ok_or_else(|| format!("unsupported array dtype {descr:?} (integers only)"))?;
            Ok(Value::Dtype(Rc::new(RefCell::new(dtype))))
        }
        Global::Reconstruct => {
            if !matches!(args.first(), Some(Value::Global(Global::NdarrayType))) {
                return Err("_reconstruct of something other than numpy.ndarray".into());
            }
            Ok(Value::Array(Rc::new(RefCell::new(NdArray {
                shape: vec![0],
                dtype: None,
                data: Rc::default(),
            }))))
        }
        Global::FromBuffer => {
            // _frombuffer(buffer, dtype, shape, order)
            let [Value::Bytes(buf), Value::Dtype(dtype), shape, order] = args else {
                return Err("_frombuffer needs (buffer, dtype, shape, order)".into());
            };
            let shape = as_shape(shape)?;
            let dtype = *dtype.borrow();
            if as_text(order).as_deref() != Some("C") && shape.len() > 1 {
                return Err("Fortran-ordered arrays are not supported".into());
            }
            if checked_len(&shape, dtype)? != buf.len() {
                return Err(format!(
                    "array of shape {shape:?} needs {} bytes, buffer has {}",
                    checked_len(&shape, dtype)?,
                    buf.len()
                ));
            }
            Ok(Value::Array(Rc::new(RefCell::new(NdArray {
                shape,
                dtype: Some(dtype),
                data: buf.clone(),
            }))))
        }
        Global::NdarrayType => Err("calling numpy.ndarray directly is not supported".into()),
    }
}

/// Interprets `obj.__setstate__(state)` for arrays and dtypes.
fn build(obj: &Value, state: &Value) -> Step<()> {
    let state = tuple_args(state, "BUILD")?;
    match obj {
        Value::Dtype(dtype) => {
            // (version, byteorder, subdescr, names, fields, elsize, alignment, flags[, metadata])
            let order = state.get(1).and_then(as_text).unwrap_or_default();
            let mut d = dtype.borrow_mut();
            d.big_endian = order == ">" && d.itemsize > 1;
            if state
                .get(3)
                .is_some_and(|names| !matches!(names, Value::None))
            {
                return Err("structured dtypes are not supported".into());
            }
            Ok(())
        }
        Value::Array(array) => {
            // ([version,] shape, dtype, is_fortran, rawdata)
            let fields = match state.len() {
                5 => &state[1..],
                4 => state,
                n => return Err(format!("array state has {n} fields, expected 4 or 5")),
            };
            let shape = as_shape(&fields[0])?;
            let Value::Dtype(dtype) = &fields[1] else {
                return Err(format!("array dtype is a {}", fields[1].kind()));
            };
            let dtype = *dtype.borrow();
            let fortran = match &fields[2] {
                Value::Bool(b) => *b,
                Value::Int(i) => *i != 0,
                other => return Err(format!("array order flag is a {}", other.kind())),
            };
            if fortran && shape.iter().filter(|&&d| d > 1).count() > 1 {
                return Err("Fortran-ordered arrays are not supported".into());
            }
            let Value::Bytes(raw) = &fields[3] else {
                return Err(format!(
                    "array data is a {}, expected raw bytes",
                    fields[3].kind()
                ));
            };
            let need = checked_len(&shape, dtype)?;
            if need != raw.len() {
                return Err(format!(
                    "array of shape {shape:?} needs {need} bytes, pickle holds {}",
                    raw.len()
                ));
            }
            let mut a = array.borrow_mut();
            a.shape = shape;
            a.dtype = Some(dtype);
            a.data = raw.clone();
            Ok(())
        }
        other => Err(format!("BUILD on a {}", other.kind())),
    }
}

/// Runs the restricted machine over `bytes` and returns the unpickled value.
///
/// # Errors
/// A message naming what is wrong: an opcode or global outside the allow-list,
/// truncation, or a malformed numpy array.
pub(crate) fn load(bytes: &[u8]) -> Step<Value> {
    Machine {
        bytes,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: std::collections::HashMap::new(),
        containers: 0,
        items: 0,
    }
    .run()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `pickle.dumps({"a": [1, 300, -2]}, protocol=2)` as written by Python 3.
    const SMALL: &[u8] =
        b"\x80\x02}q\x00X\x01\x00\x00\x00aq\x01]q\x02(K\x01M,\x01J\xfe\xff\xff\xffes.";

    #[test]
    fn reads_a_small_dict() {
        let Value::Dict(d) = load(SMALL).unwrap() else {
            panic!("not a dict")
        };
        let d = d.borrow();
        assert_eq!(d[0].0.as_key(), Some(&b"a"[..]));
        let Value::List(l) = &d[0].1 else {
            panic!("not a list")
        };
        let ints: Vec<i64> = l
            .borrow()
            .iter()
            .map(|v| match v {
                Value::Int(i) => *i,
                _ => panic!("not an int"),
            })
            .collect();
        assert_eq!(ints, [1, 300, -2]);
    }

    #[test]
    fn rebuilds_a_python2_array() {
        // Python 2 cPickle, protocol 2, of np.arange(6, dtype=uint8).reshape(2, 3).
        let mut p = b"\x80\x02cnumpy.core.multiarray\n_reconstruct\nq\x01cnumpy\nndarray\nq\x02K\x00\x85U\x01b\x87R(K\x01K\x02K\x03\x86cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89T\x06\x00\x00\x00".to_vec();
        p.extend_from_slice(&[0, 1, 2, 3, 4, 5]);
        p.extend_from_slice(b"tb.");
        let Value::Array(a) = load(&p).unwrap() else {
            panic!("not an array")
        };
        let a = a.borrow();
        assert_eq!(a.shape, [2, 3]);
        assert_eq!(a.data.as_slice(), [0, 1, 2, 3, 4, 5]);
        assert_eq!(a.to_i64().unwrap(), [0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn refuses_other_globals_and_opcodes() {
        let err = load(b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00echo\x85R.").unwrap_err();
        assert!(err.contains("os.system"), "{err}");
        let err = load(b"\x80\x02(i__builtin__\nlist\n.").unwrap_err();
        assert!(err.contains("INST"), "{err}");
    }

    #[test]
    fn latin1_matches_chars() {
        let text: String = (0u32..256).filter_map(char::from_u32).collect();
        let want: Vec<u8> = (0..=255).collect();
        assert_eq!(latin1(&text).unwrap(), want);
        assert_eq!(latin1("caf\u{e9}").unwrap(), b"caf\xe9");
        assert!(latin1("\u{100}").is_none());
        assert!(latin1("\u{20ac}").is_none());
    }

    #[test]
    fn deep_nesting_and_cycles_are_refused_or_harmless() {
        // 100 000 nested 1-tuples: `K\0` then TUPLE1 again and again.
        let mut p = b"\x80\x02K\x00".to_vec();
        p.extend(std::iter::repeat_n(0x85u8, 100_000));
        p.push(b'.');
        let err = load(&p).unwrap_err();
        assert!(err.contains("tuples, lists and dicts"), "{err}");
        // The same with lists: EMPTY_LIST, then (LIST, APPEND) pairs.
        let mut p = b"\x80\x02]".to_vec();
        for _ in 0..100_000 {
            p.extend_from_slice(b"]");
        }
        p.extend(std::iter::repeat_n(b'a', 100_000));
        p.push(b'.');
        assert!(load(&p).is_err());
        // A list that holds itself loads (and is never printed).
        let Value::List(l) = load(b"\x80\x02]q\x00h\x00a.").unwrap() else {
            panic!("not a list")
        };
        assert_eq!(l.borrow()[0].kind(), "list");
        // A million MARKs and ints: the stack is bounded.
        let mut p = b"\x80\x02".to_vec();
        for _ in 0..(MAX_ITEMS + 2) {
            p.extend_from_slice(b"N");
        }
        assert!(load(&p).unwrap_err().contains("stack"));
    }

    #[test]
    fn reports_truncation() {
        let err = load(&SMALL[..SMALL.len() - 4]).unwrap_err();
        assert!(err.contains("truncated") || err.contains("STOP"), "{err}");
        let err = load(b"\x80\x02T\xff\xff\xff\x7fabc").unwrap_err();
        assert!(err.contains("truncated"), "{err}");
    }
}
