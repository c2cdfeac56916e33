//! The `Z` encoding: messages as pickles, with ZEO's global policies.
//!
//! Encoding is protocol 3 in fast mode (no memo), as ZEO 5's marshaller
//! writes. Decoding accepts protocols 0–3 in full (peers need not use fast
//! mode) and restricts which globals a message may name:
//!
//! * a server accepts only modules `ZopeUndo.Prefix`, `zodbpickle`,
//!   `builtins`, `copy_reg` and `__builtin__` (`server_find_global`);
//! * a client accepts exception classes and objects marked free of side
//!   effects (`find_global`). Python decides that by importing the class;
//!   we decide by name: builtin exception classes, classes of any module
//!   whose names end like exception classes do, ZODB's `_recon` helper and
//!   `ZopeUndo.Prefix.Prefix`.

use zeo_pickle::{Decoder, Protocol, Value};

use crate::error::{Error, Result};
use crate::limits::{copy_budget, shared_budget, MAX_MESSAGE_DEPTH};
use crate::message::Message;

const ENCODING: &str = "pickle";

/// Which peer is decoding; it selects the global policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// A server reading client messages (`server_find_global`).
    Server,
    /// A client reading server messages (`find_global`).
    Client,
}

/// Encodes one value as a protocol 3 pickle, fast mode.
pub(crate) fn encode_value(value: &Value) -> Result<Vec<u8>> {
    zeo_pickle::encode(value, Protocol::V3).map_err(|e| Error::Unencodable(e.to_string()))
}

/// Encodes `msg` as the pickle of its `(msgid, flags, method, args)` tuple.
///
/// Every reply and request goes through here, so the common shapes are
/// written directly into one buffer of the exact size, without building the
/// tuple (which would copy the arguments, record data included). The bytes
/// are those [`encode_value`] writes for the tuple; values the direct writer
/// does not handle (objects, sets, globals, deep nesting, over-long data)
/// take the generic encoder, which also reports what cannot be encoded.
pub(crate) fn encode_message(msg: &Message) -> Result<Vec<u8>> {
    let flags = msg.flags.to_value(&msg.method);
    let sizes = (
        direct::size(&msg.msgid, 0),
        direct::size(&flags, 0),
        direct::str_size(&msg.method),
        direct::size(&msg.args, 0),
    );
    if let (Some(a), Some(b), Some(c), Some(d)) = sizes {
        // PROTO 3, MARK, the four items, TUPLE, STOP.
        let mut out = Vec::with_capacity(2 + 1 + a + b + c + d + 1 + 1);
        out.extend_from_slice(&[direct::PROTO, 3, direct::MARK]);
        direct::write(&msg.msgid, &mut out);
        direct::write(&flags, &mut out);
        direct::write_str(&msg.method, &mut out);
        direct::write(&msg.args, &mut out);
        out.extend_from_slice(&[direct::TUPLE, direct::STOP]);
        debug_assert_eq!(out.len(), out.capacity());
        return Ok(out);
    }
    encode_value(&msg.to_value())
}

/// A writer for the values messages carry, matching `zeo_pickle`'s
/// protocol 3 fast-mode output byte for byte. [`size`] decides whether a
/// value qualifies (and how many bytes it takes); [`write`] must only be
/// given values it accepted.
///
/// Its opcodes and integer forms are zeo-pickle's own (`opcodes`,
/// [`zeo_pickle::write_int`], [`zeo_pickle::Value::from_le_bytes`]), and
/// the differential tests below hold both readers and writers to the same
/// answers.
mod direct {
    use zeo_pickle::opcodes::{
        APPEND, APPENDS, BINBYTES, BINFLOAT, BININT, BININT1, BININT2, BINUNICODE, EMPTY_DICT,
        EMPTY_LIST, EMPTY_TUPLE, LONG1, LONG4, NEWFALSE, NEWTRUE, NONE, SETITEM, SETITEMS,
        SHORT_BINBYTES, TUPLE1, TUPLE3,
    };
    pub use zeo_pickle::opcodes::{MARK, PROTO, STOP, TUPLE};
    use zeo_pickle::Value;

    use crate::limits::{plain_budget, MAX_MESSAGE_DEPTH, VALUE_COST};

    /// Python's pickler batches `APPENDS`/`SETITEMS` in groups of this size.
    const BATCH: usize = 1000;

    /// Deeper values (a peer's odd msgid echoed back, say) are left to the
    /// generic encoder, which does not use the thread's stack for depth.
    const MAX_DEPTH: usize = 32;

    /// Values the direct decoder keeps on its stack at once; a message
    /// needs a handful, so more means an unusual pickle.
    const MAX_STACK: usize = 4096;

    /// The encoded size of `value`, or `None` when the direct writer leaves
    /// it to the generic encoder.
    pub fn size(value: &Value, depth: usize) -> Option<usize> {
        if depth > MAX_DEPTH {
            return None;
        }
        Some(match value {
            Value::None | Value::Bool(_) => 1,
            Value::Int(n) => zeo_pickle::int_len(*n),
            Value::BigInt(b) => match b.len() {
                n @ 0..=0xff => 2 + n,
                n => 5 + usize::try_from(i32::try_from(n).ok()?).ok()?,
            },
            Value::Float(_) => 9,
            Value::Bytes(b) => match b.len() {
                n @ 0..=0xff => 2 + n,
                n => 5 + usize::try_from(u32::try_from(n).ok()?).ok()?,
            },
            Value::Str(s) => str_size(s)?,
            Value::Tuple(items) => {
                let inner = items_size(items, depth)?;
                match items.len() {
                    0 => 1,
                    1..=3 => inner + 1,
                    _ => inner + 2,
                }
            }
            Value::List(items) => {
                let inner = items_size(items, depth)?;
                1 + inner + batching_size(items.len())
            }
            Value::Dict(pairs) => {
                let mut inner = 0usize;
                for (k, v) in pairs {
                    inner = inner
                        .checked_add(size(k, depth + 1)?)?
                        .checked_add(size(v, depth + 1)?)?;
                }
                1 + inner + batching_size(pairs.len())
            }
            _ => return None,
        })
    }

    fn items_size(items: &[Value], depth: usize) -> Option<usize> {
        items
            .iter()
            .try_fold(0usize, |acc, v| acc.checked_add(size(v, depth + 1)?))
    }

    /// The opcodes around a list's or dict's items: `APPEND`/`SETITEM` for
    /// one, `MARK` … `APPENDS`/`SETITEMS` per batch otherwise.
    fn batching_size(len: usize) -> usize {
        if len == 1 {
            1
        } else {
            2 * len.div_ceil(BATCH)
        }
    }

    pub fn str_size(s: &str) -> Option<usize> {
        u32::try_from(s.len()).ok()?;
        Some(5 + s.len())
    }

    /// Writes a value [`size`] accepted.
    pub fn write(value: &Value, out: &mut Vec<u8>) {
        match value {
            Value::None => out.push(NONE),
            Value::Bool(true) => out.push(NEWTRUE),
            Value::Bool(false) => out.push(NEWFALSE),
            Value::Int(n) => zeo_pickle::write_int(*n, out),
            Value::BigInt(b) => {
                match u8::try_from(b.len()) {
                    Ok(n) => out.extend_from_slice(&[LONG1, n]),
                    Err(_) => {
                        out.push(LONG4);
                        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
                    }
                }
                out.extend_from_slice(b);
            }
            Value::Float(f) => {
                out.push(BINFLOAT);
                out.extend_from_slice(&f.to_be_bytes());
            }
            Value::Bytes(b) => {
                match u8::try_from(b.len()) {
                    Ok(n) => out.extend_from_slice(&[SHORT_BINBYTES, n]),
                    Err(_) => {
                        out.push(BINBYTES);
                        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
                    }
                }
                out.extend_from_slice(b);
            }
            Value::Str(s) => write_str(s, out),
            Value::Tuple(items) => match items.len() {
                0 => out.push(EMPTY_TUPLE),
                n @ 1..=3 => {
                    items.iter().for_each(|v| write(v, out));
                    out.push(TUPLE1 + (n as u8 - 1));
                }
                _ => {
                    out.push(MARK);
                    items.iter().for_each(|v| write(v, out));
                    out.push(TUPLE);
                }
            },
            Value::List(items) => {
                out.push(EMPTY_LIST);
                if let [single] = items.as_slice() {
                    write(single, out);
                    out.push(APPEND);
                    return;
                }
                for chunk in items.chunks(BATCH) {
                    out.push(MARK);
                    chunk.iter().for_each(|v| write(v, out));
                    out.push(APPENDS);
                }
            }
            Value::Dict(pairs) => {
                out.push(EMPTY_DICT);
                if let [(k, v)] = pairs.as_slice() {
                    write(k, out);
                    write(v, out);
                    out.push(SETITEM);
                    return;
                }
                for chunk in pairs.chunks(BATCH) {
                    out.push(MARK);
                    for (k, v) in chunk {
                        write(k, out);
                        write(v, out);
                    }
                    out.push(SETITEMS);
                }
            }
            // `size` refused everything else.
            _ => debug_assert!(false, "direct::write given a {}", value.type_name()),
        }
    }

    /// Why the direct reader stopped short of a value.
    #[derive(Debug)]
    pub enum Refusal {
        /// Not a pickle it reads (memo, globals, Python 2 strings, dicts,
        /// odd stack use, errors): the generic decoder decides.
        Unhandled,
        /// A limit on what a message may cost; the message is refused.
        Limit(String),
    }

    /// Reads a pickle made of the opcodes [`write`] emits (plus `PROTO`
    /// 2 and `LONG4`), the way the generic decoder would.
    ///
    /// Every value it builds carries its nesting height, and one taller
    /// than [`MAX_MESSAGE_DEPTH`] is refused on the spot, so no value
    /// deeper than that ever exists (dropping one recurses per level).
    /// What it builds is charged against [`plain_budget`].
    pub fn decode(data: &[u8], side: super::Side) -> Result<Value, Refusal> {
        use Refusal::Unhandled;
        if data.first() != Some(&PROTO) {
            return Err(Unhandled);
        }
        let mut stack: Vec<Value> = Vec::with_capacity(8);
        // The height of each value on the stack: 0 for a scalar, one more
        // than its tallest item for a container. Kept apart so containers
        // take their items with one move, as without the bookkeeping.
        let mut heights: Vec<usize> = Vec::with_capacity(8);
        // Stack heights at each open MARK.
        let mut marks: Vec<usize> = Vec::new();
        let mut pos = 0usize;
        let budget = plain_budget(data.len(), side);
        let mut spent = 0usize;
        let take = |pos: &mut usize, n: usize| -> Result<&[u8], Refusal> {
            let end = pos.checked_add(n).ok_or(Unhandled)?;
            let bytes = data.get(*pos..end).ok_or(Unhandled)?;
            *pos = end;
            Ok(bytes)
        };
        let u32_at = |pos: &mut usize| -> Result<usize, Refusal> {
            let b = take(pos, 4)?;
            usize::try_from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])).map_err(|_| Unhandled)
        };
        loop {
            let op = *take(&mut pos, 1)?.first().ok_or(Unhandled)?;
            // Items above the innermost MARK, which is all an opcode sees.
            let base = marks.last().copied().unwrap_or(0);
            let scalar = |value: Value| (value, 0);
            let (value, height) = match op {
                PROTO => match take(&mut pos, 1)?.first() {
                    Some(2 | 3) if pos == 2 => continue,
                    _ => return Err(Unhandled),
                },
                STOP => {
                    return match (stack.len(), marks.is_empty()) {
                        (1, true) => stack.pop().ok_or(Unhandled),
                        _ => Err(Unhandled),
                    };
                }
                MARK => {
                    if marks.len() >= MAX_DEPTH {
                        return Err(Unhandled);
                    }
                    marks.push(stack.len());
                    continue;
                }
                NONE => scalar(Value::None),
                NEWTRUE => scalar(Value::Bool(true)),
                NEWFALSE => scalar(Value::Bool(false)),
                BININT1 => scalar(Value::Int(take(&mut pos, 1)?[0].into())),
                BININT2 => {
                    let b = take(&mut pos, 2)?;
                    scalar(Value::Int(u16::from_le_bytes([b[0], b[1]]).into()))
                }
                BININT => {
                    let b = take(&mut pos, 4)?;
                    scalar(Value::Int(
                        i32::from_le_bytes([b[0], b[1], b[2], b[3]]).into(),
                    ))
                }
                LONG1 => {
                    let n = take(&mut pos, 1)?[0];
                    let bytes = take(&mut pos, n.into())?;
                    spent = spent.saturating_add(bytes.len());
                    scalar(Value::from_le_bytes(bytes))
                }
                LONG4 => {
                    let b = take(&mut pos, 4)?;
                    let n = usize::try_from(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .map_err(|_| Unhandled)?;
                    let bytes = take(&mut pos, n)?;
                    spent = spent.saturating_add(bytes.len());
                    scalar(Value::from_le_bytes(bytes))
                }
                BINFLOAT => {
                    let b = take(&mut pos, 8)?;
                    let mut be = [0u8; 8];
                    be.copy_from_slice(b);
                    scalar(Value::Float(f64::from_be_bytes(be)))
                }
                SHORT_BINBYTES => {
                    let n = take(&mut pos, 1)?[0];
                    let bytes = take(&mut pos, n.into())?;
                    spent = spent.saturating_add(bytes.len());
                    scalar(Value::Bytes(bytes.to_vec()))
                }
                BINBYTES => {
                    let n = u32_at(&mut pos)?;
                    let bytes = take(&mut pos, n)?;
                    spent = spent.saturating_add(bytes.len());
                    scalar(Value::Bytes(bytes.to_vec()))
                }
                BINUNICODE => {
                    let n = u32_at(&mut pos)?;
                    let text = std::str::from_utf8(take(&mut pos, n)?).map_err(|_| Unhandled)?;
                    spent = spent.saturating_add(text.len());
                    scalar(Value::Str(text.to_owned()))
                }
                EMPTY_TUPLE => (Value::Tuple(Vec::new()), 1),
                EMPTY_LIST => (Value::List(Vec::new()), 1),
                TUPLE1..=TUPLE3 => {
                    let n = usize::from(op - TUPLE1) + 1;
                    let from = stack
                        .len()
                        .checked_sub(n)
                        .filter(|f| *f >= base)
                        .ok_or(Unhandled)?;
                    let height = container_height(&mut heights, from)?;
                    (Value::Tuple(stack.split_off(from)), height)
                }
                TUPLE => {
                    let from = marks.pop().ok_or(Unhandled)?;
                    let height = container_height(&mut heights, from)?;
                    (Value::Tuple(stack.split_off(from)), height)
                }
                APPEND => {
                    if stack.len() < base + 2 {
                        return Err(Unhandled);
                    }
                    let list_at = stack.len() - 2;
                    if !matches!(stack[list_at], Value::List(_)) {
                        return Err(Unhandled);
                    }
                    appended_height(&mut heights, list_at)?;
                    let item = stack.pop().ok_or(Unhandled)?;
                    if let Some(Value::List(list)) = stack.last_mut() {
                        list.push(item);
                    }
                    continue;
                }
                APPENDS => {
                    let from = marks.pop().ok_or(Unhandled)?;
                    let below = marks.last().copied().unwrap_or(0);
                    if from <= below {
                        return Err(Unhandled);
                    }
                    if !matches!(stack.get(from - 1), Some(Value::List(_))) {
                        return Err(Unhandled);
                    }
                    appended_height(&mut heights, from - 1)?;
                    let items = stack.split_off(from);
                    if let Some(Value::List(list)) = stack.last_mut() {
                        list.extend(items);
                    }
                    continue;
                }
                _ => return Err(Unhandled),
            };
            if stack.len() >= MAX_STACK {
                return Err(Unhandled);
            }
            spent = spent.saturating_add(VALUE_COST);
            if spent > budget {
                return Err(Refusal::Limit(format!("decoded value over {budget} bytes")));
            }
            stack.push(value);
            heights.push(height);
        }
    }

    /// The height of a container holding the values whose heights are
    /// `heights[from..]` (which it takes off), refused past the limit.
    fn container_height(heights: &mut Vec<usize>, from: usize) -> Result<usize, Refusal> {
        let height = heights
            .get(from..)
            .and_then(|h| h.iter().copied().max())
            .map_or(1, |tallest| tallest + 1);
        heights.truncate(from);
        if height > MAX_MESSAGE_DEPTH {
            return Err(Refusal::Limit(format!(
                "nesting deeper than {MAX_MESSAGE_DEPTH}"
            )));
        }
        Ok(height)
    }

    /// Updates the height of the list at `list_at` for the items above it
    /// (whose heights it takes off) being appended to it.
    fn appended_height(heights: &mut Vec<usize>, list_at: usize) -> Result<(), Refusal> {
        let items = container_height(heights, list_at + 1)?;
        if let Some(list) = heights.last_mut() {
            *list = (*list).max(items);
        }
        Ok(())
    }

    /// `BINUNICODE`, for a string [`str_size`] accepted.
    pub fn write_str(s: &str, out: &mut Vec<u8>) {
        out.push(BINUNICODE);
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
}

/// Decodes a message pickle under `side`'s global policy.
///
/// Bytes after the pickle's `STOP` are ignored, as Python's `Unpickler.load`
/// ignores them. Pickles of plain data as ZEO 5 peers write them (protocol
/// 3, no memo) are read directly; anything else goes through the generic
/// decoder, whose answer is the same where both apply.
///
/// Both readers enforce the limits of [`crate::limits`].
pub(crate) fn decode_message_value(data: &[u8], side: Side) -> Result<Value> {
    match direct::decode(data, side) {
        Ok(value) => Ok(value),
        Err(direct::Refusal::Limit(limit)) => Err(Error::limit(ENCODING, limit)),
        Err(direct::Refusal::Unhandled) => decode_generic(data, side),
    }
}

/// The generic decoder with the limits a message gets.
fn message_decoder(data: &[u8], side: Side) -> Decoder<'_> {
    let budget = shared_budget(data.len(), side);
    Decoder::new(data)
        .with_max_depth(MAX_MESSAGE_DEPTH)
        .with_max_work(budget)
        .with_max_output(budget)
        .with_max_copied_output(copy_budget(data.len()))
}

/// [`decode_message_value`] without the direct reader.
fn decode_generic(data: &[u8], side: Side) -> Result<Value> {
    let policy: fn(&str, &str) -> bool = match side {
        Side::Server => zeo_pickle::zeo_server_find_global,
        Side::Client => client_find_global,
    };
    let mut value = message_decoder(data, side)
        .with_find_global(policy)
        .next_pickle()
        .map_err(map_err)?;
    normalize(&mut value);
    Ok(value)
}

/// Decodes a pickle with no global restriction (transaction extensions,
/// which ZODB unpickles freely), under a message's limits since a peer
/// sent it.
pub(crate) fn decode_any(data: &[u8]) -> Result<Value> {
    let mut d = message_decoder(data, Side::Server);
    let value = d.next_pickle().map_err(map_err)?;
    if !d.is_at_end() {
        return Err(map_err(zeo_pickle::Error::TrailingData {
            offset: d.position(),
        }));
    }
    Ok(value)
}

fn map_err(err: zeo_pickle::Error) -> Error {
    match err {
        zeo_pickle::Error::GlobalRejected { module, name, .. } => {
            Error::ForbiddenGlobal { module, name }
        }
        zeo_pickle::Error::LimitExceeded { offset, what } => {
            Error::limit(ENCODING, format!("{what} (at byte {offset})"))
        }
        other => Error::malformed(ENCODING, other.to_string()),
    }
}

/// Python's builtin exception classes that derive from `Exception`
/// (`BaseException`, `SystemExit`, `KeyboardInterrupt` and `GeneratorExit`
/// do not, so ZEO's client refuses them).
const BUILTIN_EXCEPTIONS: &[&str] = &[
    "Exception",
    "ArithmeticError",
    "AssertionError",
    "AttributeError",
    "BlockingIOError",
    "BrokenPipeError",
    "BufferError",
    "BytesWarning",
    "ChildProcessError",
    "ConnectionAbortedError",
    "ConnectionError",
    "ConnectionRefusedError",
    "ConnectionResetError",
    "DeprecationWarning",
    "EOFError",
    "EnvironmentError",
    "FileExistsError",
    "FileNotFoundError",
    "FloatingPointError",
    "FutureWarning",
    "IOError",
    "ImportError",
    "ImportWarning",
    "IndentationError",
    "IndexError",
    "InterruptedError",
    "IsADirectoryError",
    "KeyError",
    "LookupError",
    "MemoryError",
    "ModuleNotFoundError",
    "NameError",
    "NotADirectoryError",
    "NotImplementedError",
    "OSError",
    "OverflowError",
    "PendingDeprecationWarning",
    "PermissionError",
    "ProcessLookupError",
    "RecursionError",
    "ReferenceError",
    "ResourceWarning",
    "RuntimeError",
    "RuntimeWarning",
    "StandardError",
    "StopAsyncIteration",
    "StopIteration",
    "SyntaxError",
    "SyntaxWarning",
    "SystemError",
    "TabError",
    "TimeoutError",
    "TypeError",
    "UnboundLocalError",
    "UnicodeDecodeError",
    "UnicodeEncodeError",
    "UnicodeError",
    "UnicodeTranslateError",
    "UnicodeWarning",
    "UserWarning",
    "ValueError",
    "Warning",
    "ZeroDivisionError",
];

/// The client's global policy (see the module documentation).
///
/// ```
/// use zeo_protocol::client_find_global;
///
/// assert!(client_find_global("ZODB.POSException", "ConflictError"));
/// assert!(client_find_global("builtins", "KeyError"));
/// assert!(!client_find_global("os", "system"));
/// ```
pub fn client_find_global(module: &str, name: &str) -> bool {
    match module {
        "builtins" | "exceptions" | "__builtin__" => BUILTIN_EXCEPTIONS.contains(&name),
        // `_recon` rebuilds POSError instances and is marked side-effect free.
        "ZODB.POSException" if name == "_recon" => true,
        "ZopeUndo.Prefix" if name == "Prefix" => true,
        // Exception classes whose names do not say so.
        "ZEO.Exceptions" => {
            matches!(
                name,
                "UnrecognizedResult" | "ClientDisconnected" | "ServerException"
            ) || name.ends_with("Error")
        }
        "ZODB.POSException" => name.ends_with("Error") || name.ends_with("Errors"),
        _ => {
            !module.is_empty()
                && ["Error", "Errors", "Exception", "Warning", "Conflict"]
                    .iter()
                    .any(|suffix| name.ends_with(suffix))
        }
    }
}

/// Folds the spellings Python 2 peers use for byte strings back to bytes:
/// `zodbpickle.binary(data)` and `copy_reg._reconstructor(zodbpickle.binary,
/// str, data)`.
///
/// In place, so nothing is rebuilt and each level of the (depth-limited)
/// recursion costs one small frame.
fn normalize(value: &mut Value) {
    match value {
        Value::Call { callable, args, .. } => match binary_payload(callable, args) {
            Some(bytes) => *value = Value::Bytes(bytes),
            None => {
                normalize(callable);
                normalize(args);
            }
        },
        Value::Tuple(items) | Value::List(items) => items.iter_mut().for_each(normalize),
        Value::Dict(pairs) => {
            for (k, v) in pairs {
                normalize(k);
                normalize(v);
            }
        }
        _ => {}
    }
}

fn is_global(value: &Value, module: &str, name: &str) -> bool {
    matches!(value, Value::Global { module: m, name: n } if m == module && n == name)
}

fn binary_payload(callable: &Value, args: &Value) -> Option<Vec<u8>> {
    let Value::Tuple(args) = args else {
        return None;
    };
    let data = if is_global(callable, "zodbpickle", "binary") {
        match args.as_slice() {
            [data] => data,
            _ => return None,
        }
    } else if is_global(callable, "copy_reg", "_reconstructor") {
        match args.as_slice() {
            [class, _, data] if is_global(class, "zodbpickle", "binary") => data,
            _ => return None,
        }
    } else {
        return None;
    };
    match data {
        Value::Bytes(b) => Some(b.clone()),
        Value::Str(s) => Some(s.as_bytes().to_vec()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::message::Flags;

    fn int() -> impl Strategy<Value = i64> {
        // Every integer opcode's edges, and anything at all.
        prop_oneof![
            -2i64..300,
            0xff00i64..0x1_0100,
            Just(i64::from(i32::MIN)),
            Just(i64::from(i32::MAX)),
            Just(i64::from(i32::MIN) - 1),
            Just(i64::from(i32::MAX) + 1),
            Just(i64::MIN),
            Just(i64::MAX),
            any::<i64>(),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::None),
            any::<bool>().prop_map(Value::Bool),
            int().prop_map(Value::Int),
            proptest::collection::vec(any::<u8>(), 0..12).prop_map(Value::BigInt),
            any::<f64>()
                .prop_filter("NaN never equals itself", |f| !f.is_nan())
                .prop_map(Value::Float),
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(Value::Bytes),
            ".{0,20}".prop_map(Value::Str),
            // Left to the generic encoder.
            proptest::collection::vec(any::<u8>(), 0..4).prop_map(Value::ByteArray),
            Just(Value::Global {
                module: "builtins".into(),
                name: "KeyError".into()
            }),
        ];
        leaf.prop_recursive(5, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Tuple),
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::List),
                proptest::collection::vec((inner.clone(), inner.clone()), 0..4)
                    .prop_map(Value::Dict),
                proptest::collection::vec(inner, 0..3).prop_map(Value::Set),
            ]
        })
    }

    fn message() -> impl Strategy<Value = Message> {
        (
            value(),
            prop_oneof![Just(Flags::None), Just(Flags::Async), Just(Flags::Error)],
            prop_oneof![Just(crate::REPLY.to_owned()), ".{0,40}"],
            value(),
        )
            .prop_map(|(msgid, flags, method, args)| Message {
                msgid,
                flags,
                method,
                args,
            })
    }

    fn generic(msg: &Message) -> Result<Vec<u8>> {
        encode_value(&msg.to_value())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn direct_encoding_matches_the_generic_encoder(msg in message()) {
            let direct = encode_message(&msg).map_err(|e| e.to_string());
            let generic = generic(&msg).map_err(|e| e.to_string());
            prop_assert_eq!(direct, generic);
        }
    }

    fn has_dict(value: &Value) -> bool {
        match value {
            Value::Dict(_) => true,
            Value::Tuple(items) | Value::List(items) => items.iter().any(has_dict),
            _ => false,
        }
    }

    /// Where the direct reader answers, the generic decoder gives the
    /// same value.
    fn check_decoders_agree(data: &[u8]) -> std::result::Result<(), TestCaseError> {
        if let Ok(direct) = direct::decode(data, Side::Server) {
            for side in [Side::Server, Side::Client] {
                let generic = decode_generic(data, side).map_err(|e| e.to_string());
                prop_assert_eq!(&generic, &Ok(direct.clone()), "{:02x?}", data);
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn direct_decoding_matches_the_generic_decoder(msg in message()) {
            let Ok(data) = generic(&msg) else { return Ok(()) };
            check_decoders_agree(&data)?;
            // A message of plain data never needs the generic decoder.
            let whole = msg.to_value();
            if direct::size(&whole, 0).is_some() && !has_dict(&whole) {
                prop_assert!(direct::decode(&data, Side::Server).is_ok());
            }
        }

        #[test]
        fn direct_decoding_of_damaged_pickles_matches_the_generic_decoder(
            msg in message(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4),
        ) {
            let Ok(mut data) = generic(&msg) else { return Ok(()) };
            for (at, byte, kind) in edits {
                if data.is_empty() {
                    break;
                }
                let i = at.index(data.len());
                match kind {
                    0 => data[i] = byte,
                    1 => { data.remove(i); }
                    _ => data.insert(i, byte),
                }
            }
            check_decoders_agree(&data)?;
        }
    }

    #[test]
    fn direct_decoding_handles_the_hot_messages() {
        let oids = Value::List(
            (0..100u64)
                .map(|i| Value::Bytes(i.to_be_bytes().to_vec()))
                .collect(),
        );
        let id = |n: u64| Value::Bytes(n.to_be_bytes().to_vec());
        let messages = [
            Message::call(7, "loadBefore", vec![id(1), id(u64::MAX)]),
            Message::reply(
                Value::Tuple(vec![id(1), id(u64::MAX)]),
                Value::Tuple(vec![Value::Bytes(vec![3; 1024]), id(5), Value::None]),
            ),
            Message::call(0, "invalidateTransaction", vec![id(9), oids]),
            Message::call(
                3,
                "storea",
                vec![
                    id(1),
                    id(0),
                    Value::Bytes(vec![1; 300]),
                    Value::Int(140_326_466_128_656),
                ],
            ),
            Message::call(4, "ping", vec![]),
            Message::reply(Value::Int(4), Value::None),
        ];
        for msg in messages {
            let data = encode_message(&msg).unwrap();
            let direct = direct::decode(&data, Side::Server).expect("read directly");
            assert_eq!(Message::from_value(direct).unwrap(), msg);
            check_decoders_agree(&data).unwrap();
        }
    }

    #[test]
    fn batches_deep_values_and_long_data_match_the_generic_encoder() {
        let oids = |n: u64| {
            Value::List(
                (0..n)
                    .map(|i| Value::Bytes(i.to_be_bytes().to_vec()))
                    .collect(),
            )
        };
        let pairs = |n: i64| Value::Dict((0..n).map(|i| (Value::Int(i), Value::None)).collect());
        let mut deep = Value::Int(1);
        for _ in 0..100 {
            deep = Value::Tuple(vec![deep]);
        }
        let cases = [
            oids(0),
            oids(1),
            oids(999),
            oids(1000),
            oids(1001),
            oids(2500),
            pairs(1),
            pairs(1000),
            pairs(1001),
            deep,
            Value::Bytes(vec![7; 70_000]),
            Value::Str("é".repeat(40_000)),
            Value::BigInt(vec![0x55; 300]),
        ];
        for args in cases {
            for msgid in [
                Value::Int(5),
                Value::Tuple(vec![Value::Bytes(vec![0; 8]); 2]),
            ] {
                let msg = Message::reply(msgid, args.clone());
                assert_eq!(encode_message(&msg).unwrap(), generic(&msg).unwrap());
                let call = Message {
                    method: "invalidateTransaction".into(),
                    ..msg
                };
                assert_eq!(encode_message(&call).unwrap(), generic(&call).unwrap());
            }
        }
    }

    /// Every message shape ZEO sends, in each direction, built by this
    /// crate's own request, reply and event builders.
    fn every_message_shape() -> Vec<Message> {
        use zeo_storage::{LoadedRevision, Oid, Tid, TxnStatus};

        use crate::client::ClientEvent;
        use crate::reply::{self as r, VoteConflict};
        use crate::types::{IteratorId, StorageInfo, TxnId};
        use crate::{ClientRequest as Q, Reply, WireError};

        let (oid, tid, txn) = (Oid(0x0102), Tid(0x03de_ad00_beef_0001), TxnId(-7));
        let extension = Value::Dict(vec![(Value::Str("user_note".into()), Value::Int(1))]);
        let revision = LoadedRevision {
            data: vec![0x80, 3, b'N', b'.'],
            start: tid,
            end: Some(Tid(tid.0 + 1)),
        };
        let info = StorageInfo {
            length: 12,
            size: 4096,
            name: "Data.fs".into(),
            supports_undo: true,
            supports_record_iternext: true,
            interfaces: StorageInfo::file_storage_interfaces(),
        };
        let conflict = VoteConflict {
            oid,
            committed: tid,
            old: Tid(1),
            data: b"mine".to_vec(),
        };
        let reply = |value: Value| Message::reply(Value::Int(9), value);
        let oids: Vec<Oid> = (0..1200).map(Oid).collect();
        vec![
            // Client to server.
            Q::register(1, "1", false),
            Q::get_info(2),
            Q::last_transaction(3),
            Q::get_invalidations(4, tid),
            Q::load_before(oid, Tid::MAX),
            Q::load_serial(5, oid, tid),
            Q::get_tid(6, oid),
            Q::history(7, oid, 10),
            Q::record_iternext(8, None),
            Q::record_iternext(8, Some(oid)),
            Q::new_oids(9),
            Q::pack(10, 1_700_000_000.25, true),
            Q::undo_log(11, 0, -20),
            Q::undo_info(12, 0, 20),
            Q::tpc_begin(
                txn,
                b"alice",
                b"a change",
                extension,
                None,
                TxnStatus::Committed,
            ),
            Q::tpc_begin(
                txn,
                b"",
                b"",
                Value::Dict(Vec::new()),
                Some(tid),
                TxnStatus::Packed,
            ),
            Q::storea(oid, tid, &[7; 300], txn),
            Q::check_current_serial(oid, tid, txn),
            Q::delete_object(oid, tid, txn),
            Q::restorea(oid, tid, Some(b"data"), Some(Tid(2)), txn),
            Q::restorea(oid, tid, None, None, txn),
            Q::send_blob(13, oid, tid),
            Q::vote(14, txn),
            Q::tpc_finish(15, txn),
            Q::tpc_abort(16, txn),
            Q::undoa(b"undo-id=", txn),
            Q::iterator_start(17, None, Some(tid)),
            Q::iterator_next(18, IteratorId(1)),
            Q::iterator_record_start(19, IteratorId(1), tid),
            Q::iterator_record_next(20, IteratorId(2)),
            Q::iterator_gc(&[IteratorId(1), IteratorId(2)]),
            Q::server_status(21),
            Q::set_client_label("worker-1"),
            Q::ping(22),
            Message::heartbeat(),
            // Server to client: events.
            ClientEvent::invalidate_transaction(tid, &[oid, Oid(1)]),
            ClientEvent::invalidate_transaction(tid, &oids),
            ClientEvent::info(12, 4096),
            ClientEvent::receive_blob_start(oid, tid),
            ClientEvent::receive_blob_chunk(oid, tid, &[1; 1000]),
            ClientEvent::receive_blob_stop(oid, tid),
            // Server to client: replies.
            reply(Value::None),
            reply(r::tid(tid)),
            reply(r::invalidations(Some((tid, &[oid])))),
            reply(r::invalidations(None)),
            reply(r::load_before(Some(&revision))),
            reply(r::load_before(None)),
            reply(r::oid_list(&oids)),
            reply(r::get_info(&info)),
            reply(r::size_info(12, 4096)),
            reply(r::vote_conflicts(&[conflict.clone(), conflict])),
            reply(Value::Bytes(vec![9; 70_000])),
            Reply::error(
                Value::Int(9),
                &WireError::from(&zeo_storage::Error::ReadOnly),
            ),
            Reply::error(
                Value::Int(9),
                &WireError::from(&zeo_storage::Error::Conflict {
                    oid,
                    committed: tid,
                    old: Tid(1),
                }),
            ),
            Reply::error(Value::Int(9), &WireError::type_error("bad arguments")),
        ]
    }

    /// The direct reader and the generic decoder agree on every message
    /// shape, whole (where the shape is plain data, the direct reader
    /// answers), cut short anywhere, and with any one byte changed: for
    /// every input, the direct reader either leaves it to the generic
    /// decoder or gives the value the generic decoder gives. So they also
    /// refuse the same malformed inputs.
    #[test]
    fn both_readers_agree_on_every_message_shape_whole_and_damaged() {
        let mut direct_answers = 0;
        let mut inputs = 0;
        for msg in every_message_shape() {
            let data = encode_message(&msg).unwrap();
            assert_eq!(data, generic(&msg).unwrap(), "{msg:?}");
            let whole = msg.to_value();
            if direct::size(&whole, 0).is_some() && !has_dict(&whole) {
                let read = direct::decode(&data, Side::Client).expect("read directly");
                assert_eq!(Message::from_value(read).unwrap(), msg);
                direct_answers += 1;
            }
            check_decoders_agree(&data).unwrap();
            // Large payloads are cut at their edges only: the middle of a
            // byte string is all alike.
            let cuts: Vec<usize> = if data.len() <= 4096 {
                (0..data.len()).collect()
            } else {
                (0..64).chain(data.len() - 64..data.len()).collect()
            };
            for &cut in &cuts {
                check_decoders_agree(&data[..cut]).unwrap();
                for change in [0x01, 0x80, 0xff] {
                    let mut damaged = data.clone();
                    damaged[cut] ^= change;
                    check_decoders_agree(&damaged).unwrap();
                    inputs += 1;
                }
                inputs += 1;
            }
        }
        // Not vacuous: most shapes are plain data the direct reader takes.
        assert!(direct_answers >= 40, "{direct_answers}");
        assert!(inputs > 10_000, "{inputs}");
    }
}
