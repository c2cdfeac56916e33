//! Encoding [`Value`]s as protocol 2 or 3 pickles.
//!
//! Output matches CPython's / zodbpickle's pickler byte for byte for the
//! same value: in fast mode (`pickler.fast = True`, what ZEO's marshaller
//! and `fsIndex.save` use) by default, or with memo `PUT`s after the objects
//! Python memoizes when [`Encoder::with_memo`] is on (ZODB's record and
//! transaction-extension pickles). Python also emits `GET` for an object it
//! meets twice; a value tree has no object identity, so repeated objects are
//! written again, which loads to an equal value.

use crate::error::Error;
use crate::opcodes::*;
use crate::value::Value;

/// Pickle protocols this crate writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// Protocol 2 (Python 2.3+). `bytes` has no opcode and is written as
    /// `_codecs.encode(latin1_text, 'latin1')`, as Python 3 does.
    V2,
    /// Protocol 3 (Python 3.0+): what ZODB records, the FileStorage index
    /// and ZEO's pickle marshaller use.
    V3,
}

impl Protocol {
    /// The protocol number written after `PROTO`.
    pub fn number(self) -> u8 {
        match self {
            Protocol::V2 => 2,
            Protocol::V3 => 3,
        }
    }
}

impl TryFrom<u8> for Protocol {
    type Error = Error;

    fn try_from(n: u8) -> Result<Self, Error> {
        match n {
            2 => Ok(Protocol::V2),
            3 => Ok(Protocol::V3),
            _ => Err(Error::Unencodable(format!(
                "pickle protocol {n} (only 2 and 3 are written)"
            ))),
        }
    }
}

/// Deepest value the encoder accepts. The encoder itself does not recurse;
/// the limit keeps pickles within what the other side can reasonably load.
pub const MAX_ENCODE_DEPTH: usize = 100_000;

/// Python's pickler batches `APPENDS`/`SETITEMS` in groups of this size.
const BATCH: usize = 1000;

/// Writes one or more pickles into a buffer.
#[derive(Debug, Clone)]
pub struct Encoder {
    protocol: Protocol,
    memo: bool,
    next_memo: u32,
    out: Vec<u8>,
}

impl Encoder {
    /// An encoder in fast mode (no memo opcodes).
    pub fn new(protocol: Protocol) -> Self {
        Encoder {
            protocol,
            memo: false,
            next_memo: 0,
            out: Vec::new(),
        }
    }

    /// Emits `BINPUT`/`LONG_BINPUT` wherever Python's non-fast pickler
    /// memoizes. The memo counter continues across [`Encoder::dump`] calls,
    /// as with one Python pickler dumping several objects.
    pub fn with_memo(mut self, on: bool) -> Self {
        self.memo = on;
        self
    }

    /// Appends a complete pickle of `value` (`PROTO` ... `STOP`). On error
    /// nothing is appended.
    pub fn dump(&mut self, value: &Value) -> Result<(), Error> {
        let start = self.out.len();
        let memo_start = self.next_memo;
        self.out.extend_from_slice(&[PROTO, self.protocol.number()]);
        match self.save(value) {
            Ok(()) => {
                self.out.push(STOP);
                Ok(())
            }
            Err(e) => {
                self.out.truncate(start);
                self.next_memo = memo_start;
                Err(e)
            }
        }
    }

    /// The bytes written so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.out
    }

    /// Consumes the encoder, returning the bytes written.
    pub fn into_bytes(self) -> Vec<u8> {
        self.out
    }

    fn memoize(&mut self) -> Result<(), Error> {
        if !self.memo {
            return Ok(());
        }
        let key = self.next_memo;
        match u8::try_from(key) {
            Ok(k) => self.out.extend_from_slice(&[BINPUT, k]),
            Err(_) => {
                self.out.push(LONG_BINPUT);
                self.out.extend_from_slice(&key.to_le_bytes());
            }
        }
        self.next_memo = key
            .checked_add(1)
            .ok_or_else(|| Error::Unencodable("more than 2^32 memoized objects".into()))?;
        Ok(())
    }

    fn len4(len: usize, what: &str) -> Result<[u8; 4], Error> {
        u32::try_from(len)
            .map(u32::to_le_bytes)
            .map_err(|_| Error::Unencodable(format!("{what} of {len} bytes (over 4 GiB)")))
    }

    fn save_int(&mut self, n: i64) {
        crate::text::write_int(n, &mut self.out);
    }

    fn save_long(&mut self, b: &[u8]) -> Result<(), Error> {
        match u8::try_from(b.len()) {
            Ok(n) => self.out.extend_from_slice(&[LONG1, n]),
            Err(_) => {
                let n = i32::try_from(b.len())
                    .map_err(|_| Error::Unencodable("integer of over 2 GiB".into()))?;
                self.out.push(LONG4);
                self.out.extend_from_slice(&n.to_le_bytes());
            }
        }
        self.out.extend_from_slice(b);
        Ok(())
    }

    fn save_str(&mut self, s: &str) -> Result<(), Error> {
        let len = Self::len4(s.len(), "str")?;
        self.out.push(BINUNICODE);
        self.out.extend_from_slice(&len);
        self.out.extend_from_slice(s.as_bytes());
        self.memoize()
    }

    fn save_global(&mut self, module: &str, name: &str) -> Result<(), Error> {
        if module.contains('\n') || name.contains('\n') {
            return Err(Error::Unencodable(format!(
                "global {module:?}.{name:?}: names with a newline need protocol 4"
            )));
        }
        self.out.push(GLOBAL);
        self.out.extend_from_slice(module.as_bytes());
        self.out.push(b'\n');
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(b'\n');
        self.memoize()
    }

    fn builtins_module(&self) -> &'static str {
        // Python's fix_imports writes Python 2 module names below protocol 3.
        match self.protocol {
            Protocol::V2 => "__builtin__",
            Protocol::V3 => "builtins",
        }
    }

    /// Python's `save_reduce` for a builtin callable and argument saver.
    fn save_builtin_call(
        &mut self,
        module: &str,
        name: &str,
        save_args: impl FnOnce(&mut Self) -> Result<(), Error>,
    ) -> Result<(), Error> {
        self.save_global(module, name)?;
        save_args(self)?;
        self.out.push(REDUCE);
        self.memoize()
    }

    fn save_latin1_args(&mut self, b: &[u8], encoding: &str) -> Result<(), Error> {
        let text: String = b.iter().map(|&c| char::from(c)).collect();
        self.save_str(&text)?;
        self.save_str(encoding)?;
        self.out.push(TUPLE2);
        self.memoize()
    }

    fn save_bytes(&mut self, b: &[u8]) -> Result<(), Error> {
        match self.protocol {
            Protocol::V3 => {
                match u8::try_from(b.len()) {
                    Ok(n) => self.out.extend_from_slice(&[SHORT_BINBYTES, n]),
                    Err(_) => {
                        let len = Self::len4(b.len(), "bytes")?;
                        self.out.push(BINBYTES);
                        self.out.extend_from_slice(&len);
                    }
                }
                self.out.extend_from_slice(b);
                self.memoize()
            }
            Protocol::V2 if b.is_empty() => {
                let m = self.builtins_module();
                self.save_builtin_call(m, "bytes", |e| {
                    e.out.push(EMPTY_TUPLE);
                    Ok(())
                })
            }
            Protocol::V2 => {
                self.save_builtin_call("_codecs", "encode", |e| e.save_latin1_args(b, "latin1"))
            }
        }
    }

    fn save_bytearray(&mut self, b: &[u8]) -> Result<(), Error> {
        let m = self.builtins_module();
        let protocol = self.protocol;
        self.save_builtin_call(m, "bytearray", |e| {
            if b.is_empty() {
                e.out.push(EMPTY_TUPLE);
                Ok(())
            } else if protocol == Protocol::V2 {
                e.save_latin1_args(b, "latin-1")
            } else {
                e.save_bytes(b)?;
                e.out.push(TUPLE1);
                e.memoize()
            }
        })
    }

    fn save(&mut self, root: &Value) -> Result<(), Error> {
        // Iterative, so deep values cannot exhaust this thread's stack.
        let mut tasks = vec![Task::Save(root, 0)];
        while let Some(task) = tasks.pop() {
            match task {
                Task::Op(op) => self.out.push(op),
                Task::Memoize => self.memoize()?,
                Task::Save(value, depth) => {
                    if depth > MAX_ENCODE_DEPTH {
                        return Err(Error::Unencodable(format!(
                            "value nested deeper than {MAX_ENCODE_DEPTH}"
                        )));
                    }
                    let mut seq = Vec::new();
                    self.save_one(value, depth + 1, &mut seq)?;
                    tasks.extend(seq.into_iter().rev());
                }
            }
        }
        Ok(())
    }

    /// Writes a scalar, or what comes before a compound value's children
    /// and leaves the rest (children, closing opcodes) in `seq`, in order.
    fn save_one<'v>(
        &mut self,
        value: &'v Value,
        d: usize,
        seq: &mut Vec<Task<'v>>,
    ) -> Result<(), Error> {
        match value {
            Value::None => self.out.push(NONE),
            Value::Bool(true) => self.out.push(NEWTRUE),
            Value::Bool(false) => self.out.push(NEWFALSE),
            Value::Int(n) => self.save_int(*n),
            Value::BigInt(b) => self.save_long(b)?,
            Value::Float(f) => {
                self.out.push(BINFLOAT);
                self.out.extend_from_slice(&f.to_be_bytes());
            }
            Value::Bytes(b) => self.save_bytes(b)?,
            Value::ByteArray(b) => self.save_bytearray(b)?,
            Value::Str(s) => self.save_str(s)?,
            Value::Tuple(items) => match items.len() {
                0 => self.out.push(EMPTY_TUPLE),
                n @ 1..=3 => {
                    seq.extend(items.iter().map(|v| Task::Save(v, d)));
                    seq.push(Task::Op(TUPLE1 + (n as u8 - 1)));
                    seq.push(Task::Memoize);
                }
                _ => {
                    self.out.push(MARK);
                    seq.extend(items.iter().map(|v| Task::Save(v, d)));
                    seq.push(Task::Op(TUPLE));
                    seq.push(Task::Memoize);
                }
            },
            Value::List(items) => {
                self.out.push(EMPTY_LIST);
                self.memoize()?;
                appends(seq, items, true, d);
            }
            Value::Dict(items) => {
                self.out.push(EMPTY_DICT);
                self.memoize()?;
                setitems(seq, items, true, d);
            }
            Value::Set(items) | Value::FrozenSet(items) => {
                // Below protocol 4: set(list_of_items) via REDUCE.
                let name = match value {
                    Value::Set(_) => "set",
                    _ => "frozenset",
                };
                let module = self.builtins_module();
                self.save_global(module, name)?;
                self.out.push(EMPTY_LIST);
                self.memoize()?;
                appends(seq, items, true, d);
                seq.extend([
                    Task::Op(TUPLE1),
                    Task::Memoize,
                    Task::Op(REDUCE),
                    Task::Memoize,
                ]);
            }
            Value::Global { module, name } => self.save_global(module, name)?,
            Value::Call {
                callable,
                args,
                new_object,
            } => {
                seq.extend([
                    Task::Save(callable, d),
                    Task::Save(args, d),
                    Task::Op(if *new_object { NEWOBJ } else { REDUCE }),
                    Task::Memoize,
                ]);
            }
            Value::Build { object, state } => {
                seq.extend([Task::Save(object, d), Task::Save(state, d), Task::Op(BUILD)]);
            }
            Value::PersistentId(pid) => {
                seq.extend([Task::Save(pid, d), Task::Op(BINPERSID)]);
            }
            Value::ListItems { object, items } => {
                seq.push(Task::Save(object, d));
                appends(seq, items, false, d);
            }
            Value::DictItems { object, items } => {
                seq.push(Task::Save(object, d));
                setitems(seq, items, false, d);
            }
        }
        Ok(())
    }
}

/// Work items of the encoder.
enum Task<'v> {
    Save(&'v Value, usize),
    Op(u8),
    Memoize,
}

/// `APPEND`/`APPENDS` in batches the way CPython's C pickler writes them:
/// for an exact list (`exact`) only a one-item list uses `APPEND`; for other
/// objects (items from an iterator) any one-item batch does.
fn appends<'v>(seq: &mut Vec<Task<'v>>, items: &'v [Value], exact: bool, d: usize) {
    if let (true, [single]) = (exact, items) {
        seq.extend([Task::Save(single, d), Task::Op(APPEND)]);
        return;
    }
    for chunk in items.chunks(BATCH) {
        match chunk {
            [single] if !exact => seq.extend([Task::Save(single, d), Task::Op(APPEND)]),
            _ => {
                seq.push(Task::Op(MARK));
                seq.extend(chunk.iter().map(|v| Task::Save(v, d)));
                seq.push(Task::Op(APPENDS));
            }
        }
    }
}

/// `SETITEM`/`SETITEMS`, batched like [`appends`].
fn setitems<'v>(seq: &mut Vec<Task<'v>>, items: &'v [(Value, Value)], exact: bool, d: usize) {
    if let (true, [(k, v)]) = (exact, items) {
        seq.extend([Task::Save(k, d), Task::Save(v, d), Task::Op(SETITEM)]);
        return;
    }
    for chunk in items.chunks(BATCH) {
        match chunk {
            [(k, v)] if !exact => {
                seq.extend([Task::Save(k, d), Task::Save(v, d), Task::Op(SETITEM)]);
            }
            _ => {
                seq.push(Task::Op(MARK));
                for (k, v) in chunk {
                    seq.extend([Task::Save(k, d), Task::Save(v, d)]);
                }
                seq.push(Task::Op(SETITEMS));
            }
        }
    }
}

/// Encodes `value` as one pickle in fast mode (no memo), as ZEO's
/// marshaller and ZODB's `fsIndex.save` do.
pub fn encode(value: &Value, protocol: Protocol) -> Result<Vec<u8>, Error> {
    let mut e = Encoder::new(protocol);
    e.dump(value)?;
    Ok(e.into_bytes())
}
