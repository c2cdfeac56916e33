//! The `(msgid, flags, name, args)` tuple every ZEO 5 frame after the
//! handshake carries, in both encodings.

use zeo_pickle::Value;

use crate::error::{Error, Result};

/// The method name of replies (and heartbeats).
pub const REPLY: &str = ".reply";

/// The msgid of heartbeats, which the server ignores.
pub const HEARTBEAT_MSGID: i64 = -1;

/// The second element of a message.
///
/// ZEO only looks at its truth value: on a call it means "one-way, no reply
/// wanted", on a `.reply` it means "the value is an exception". Peers write
/// Python `False`/`True` on calls and the ints `0`/`2` on replies; encoding
/// reproduces that from the method name, so decoding and re-encoding a
/// message from a stock peer gives the same bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Flags {
    /// A synchronous call, or a normal reply.
    #[default]
    None,
    /// A one-way call (msgid 0): no reply is sent.
    Async,
    /// An error reply: the value is `(class_path, fields)`.
    Error,
}

impl Flags {
    /// The wire value for a message with method `method`.
    pub(crate) fn to_value(self, method: &str) -> Value {
        match (self, method == REPLY) {
            (Flags::None, true) => Value::Int(0),
            (Flags::Async, true) => Value::Int(1),
            (Flags::Error, _) => Value::Int(2),
            (Flags::None, false) => Value::Bool(false),
            (Flags::Async, false) => Value::Bool(true),
        }
    }

    /// Reads flags the way ZEO does: by truth value, interpreted according
    /// to whether the message is a reply.
    pub(crate) fn from_value(value: &Value, method: &str) -> Self {
        match (truthy(value), method == REPLY) {
            (false, _) => Flags::None,
            (true, true) => Flags::Error,
            (true, false) => Flags::Async,
        }
    }
}

/// One ZEO message.
///
/// For calls `args` is the tuple of positional arguments; for replies it is
/// the returned value itself (not wrapped), and for error replies the pair
/// `(class_path, fields)`.
///
/// ```
/// use zeo_pickle::Value;
/// use zeo_protocol::{Flags, Message};
///
/// let call = Message::call(1, "lastTransaction", vec![]);
/// assert_eq!(call.flags, Flags::None);
/// assert_eq!(call.call_args(), Some(&[][..]));
/// let reply = Message::reply(call.msgid.clone(), Value::Bytes(vec![0; 8]));
/// assert_eq!(reply.method, ".reply");
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// Matches replies to calls. Usually an int; `loadBefore` uses the tuple
    /// `(oid, tid)`. Replies echo it unchanged.
    pub msgid: Value,
    /// Sync/async for calls, success/error for replies.
    pub flags: Flags,
    /// The method called, or [`REPLY`].
    pub method: String,
    /// The argument tuple of a call, or the value of a reply.
    pub args: Value,
}

impl Message {
    /// A synchronous call with an integer msgid.
    pub fn call(msgid: i64, method: &str, args: Vec<Value>) -> Self {
        Message {
            msgid: Value::Int(msgid),
            flags: Flags::None,
            method: method.to_owned(),
            args: Value::Tuple(args),
        }
    }

    /// A one-way call: msgid 0, async flag set.
    pub fn call_async(method: &str, args: Vec<Value>) -> Self {
        Message {
            msgid: Value::Int(0),
            flags: Flags::Async,
            method: method.to_owned(),
            args: Value::Tuple(args),
        }
    }

    /// A successful reply.
    pub fn reply(msgid: Value, value: Value) -> Self {
        Message {
            msgid,
            flags: Flags::None,
            method: REPLY.to_owned(),
            args: value,
        }
    }

    /// The keep-alive message clients send every 60 seconds:
    /// `(-1, 0, '.reply', None)`.
    pub fn heartbeat() -> Self {
        Message::reply(Value::Int(HEARTBEAT_MSGID), Value::None)
    }

    /// Whether this is a reply (or a heartbeat).
    pub fn is_reply(&self) -> bool {
        self.method == REPLY
    }

    /// Whether the server must ignore this message: msgid -1.
    pub fn is_heartbeat(&self) -> bool {
        matches!(self.msgid, Value::Int(HEARTBEAT_MSGID))
    }

    /// The positional arguments of a call, when `args` is a tuple or list.
    pub fn call_args(&self) -> Option<&[Value]> {
        match &self.args {
            Value::Tuple(items) | Value::List(items) => Some(items),
            _ => None,
        }
    }

    /// The 4-tuple as a value, ready for an encoder.
    pub(crate) fn to_value(&self) -> Value {
        Value::Tuple(vec![
            self.msgid.clone(),
            self.flags.to_value(&self.method),
            Value::Str(self.method.clone()),
            self.args.clone(),
        ])
    }

    /// Reads a decoded 4-tuple (or 4-list, which Python unpacks just the
    /// same).
    pub(crate) fn from_value(value: Value) -> Result<Self> {
        let items = match value {
            Value::Tuple(items) | Value::List(items) => items,
            other => {
                return Err(Error::NotAMessage(format!(
                    "expected a 4-tuple, got {}",
                    other.type_name()
                )))
            }
        };
        let [msgid, flags, method, args]: [Value; 4] = items.try_into().map_err(|v: Vec<_>| {
            Error::NotAMessage(format!("expected 4 elements, got {}", v.len()))
        })?;
        let method = match method {
            Value::Str(s) => s,
            // Python 2 peers may send native strings as bytes.
            Value::Bytes(b) => String::from_utf8(b)
                .map_err(|_| Error::NotAMessage("method name is not UTF-8".into()))?,
            other => {
                return Err(Error::NotAMessage(format!(
                    "method name must be a string, got {}",
                    other.type_name()
                )))
            }
        };
        let flags = Flags::from_value(&flags, &method);
        Ok(Message {
            msgid,
            flags,
            method,
            args,
        })
    }
}

/// Python's truth value of a decoded value.
pub(crate) fn truthy(value: &Value) -> bool {
    match value {
        Value::None => false,
        Value::Bool(b) => *b,
        Value::Int(i) => *i != 0,
        Value::BigInt(bytes) => bytes.iter().any(|b| *b != 0),
        Value::Float(f) => *f != 0.0,
        Value::Bytes(b) | Value::ByteArray(b) => !b.is_empty(),
        Value::Str(s) => !s.is_empty(),
        Value::Tuple(v) | Value::List(v) | Value::Set(v) | Value::FrozenSet(v) => !v.is_empty(),
        Value::Dict(d) => !d.is_empty(),
        // Objects, classes and references are true unless they define
        // otherwise, which we cannot know.
        _ => true,
    }
}
