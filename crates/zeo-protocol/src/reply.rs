//! Server replies: the message wrappers ([`Reply`]) and the exact value
//! shapes each method returns in ZEO 5 (dict keys, key order, tuple vs.
//! list), so Python clients see what a stock server would send.

use zeo_pickle::Value;
use zeo_storage::{
    CurrentRecord, DataRecord, HistoryEntry, LoadedRevision, Oid, Tid, TransactionRecord, UndoEntry,
};

use crate::error::{Error, Result};
use crate::message::{Flags, Message, REPLY};
use crate::types::{ServerStatus, StorageInfo};
use crate::wire_error::WireError;

/// Builds reply messages.
///
/// ```
/// use zeo_pickle::Value;
/// use zeo_protocol::{reply, Flags, Reply, WireError};
/// use zeo_storage::Tid;
///
/// let ok = Reply::value(Value::Int(1), reply::tid(Tid(5)));
/// assert_eq!(ok.args, Value::Bytes(vec![0, 0, 0, 0, 0, 0, 0, 5]));
/// let err = Reply::error(Value::Int(2), &WireError::type_error("bad"));
/// assert_eq!(err.flags, Flags::Error);
/// ```
pub struct Reply;

impl Reply {
    /// A successful reply carrying `value`.
    pub fn value(msgid: Value, value: Value) -> Message {
        Message::reply(msgid, value)
    }

    /// A reply of `None` (`pack`, `tpc_abort`, `ping`, `sendBlob`, …).
    pub fn none(msgid: Value) -> Message {
        Message::reply(msgid, Value::None)
    }

    /// An error reply: flags 2 and `(class_path, fields)`.
    pub fn error(msgid: Value, error: &WireError) -> Message {
        Message {
            msgid,
            flags: Flags::Error,
            method: REPLY.to_owned(),
            args: error.to_value(),
        }
    }
}

fn s(text: &str) -> Value {
    Value::Str(text.to_owned())
}

fn id8(bytes: [u8; 8]) -> Value {
    Value::Bytes(bytes.to_vec())
}

fn uint(n: u64) -> Value {
    crate::msgpack::uint_value(n)
}

/// A tid (`register`, `lastTransaction`, `getTid`, `tpc_finish`).
pub fn tid(tid: Tid) -> Value {
    id8(tid.to_bytes())
}

/// `getInvalidations`: `None` (the client must drop its cache) or
/// `(latest_tid, [oid, ...])`.
pub fn invalidations(found: Option<(Tid, &[Oid])>) -> Value {
    match found {
        None => Value::None,
        Some((latest, oids)) => Value::Tuple(vec![tid(latest), oid_list(oids)]),
    }
}

/// `loadBefore`: `(data, start_tid, end_tid_or_None)`, or `None` when the
/// object has no revision that old.
pub fn load_before(found: Option<&LoadedRevision>) -> Value {
    match found {
        None => Value::None,
        Some(rev) => Value::Tuple(vec![
            Value::Bytes(rev.data.clone()),
            tid(rev.start),
            rev.end.map_or(Value::None, tid),
        ]),
    }
}

/// `new_oids`, and `vote`'s usual result (oids whose data the server
/// changed): a list of oids.
pub fn oid_list(oids: &[Oid]) -> Value {
    Value::List(oids.iter().map(|o| id8(o.to_bytes())).collect())
}

/// `get_info`.
pub fn get_info(info: &StorageInfo) -> Value {
    Value::Dict(vec![
        (s("length"), uint(info.length)),
        (s("size"), uint(info.size)),
        (s("name"), s(&info.name)),
        (s("supportsUndo"), Value::Bool(info.supports_undo)),
        (
            s("supports_record_iternext"),
            Value::Bool(info.supports_record_iternext),
        ),
        (
            s("interfaces"),
            Value::Tuple(
                info.interfaces
                    .iter()
                    .map(|(m, n)| Value::Tuple(vec![s(m), s(n)]))
                    .collect(),
            ),
        ),
    ])
}

/// The `{'length', 'size'}` dict of the `info` message.
pub fn size_info(length: u64, size: u64) -> Value {
    Value::Dict(vec![(s("length"), uint(length)), (s("size"), uint(size))])
}

/// Decodes a pickled transaction extension; empty bytes mean `{}`.
///
/// # Errors
///
/// [`Error::Malformed`] when the pickle cannot be read.
pub fn extension_dict(pickled: &[u8]) -> Result<Vec<(Value, Value)>> {
    if pickled.is_empty() {
        return Ok(Vec::new());
    }
    match crate::pickle::decode_any(pickled)? {
        Value::Dict(pairs) => Ok(pairs),
        other => Err(Error::malformed(
            "pickle",
            format!(
                "transaction extension is a {}, not a dict",
                other.type_name()
            ),
        )),
    }
}

/// `dict.update`: replaces values of existing keys in place, appends new ones.
fn update(dict: &mut Vec<(Value, Value)>, pairs: impl IntoIterator<Item = (Value, Value)>) {
    for (key, value) in pairs {
        match dict.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => dict.push((key, value)),
        }
    }
}

/// `history`: FileStorage's dicts, the extension's keys first, then `time`,
/// `user_name`, `description`, `tid`, `size`.
///
/// # Errors
///
/// When an extension pickle cannot be read.
pub fn history(entries: &[HistoryEntry]) -> Result<Value> {
    let dicts = entries
        .iter()
        .map(|e| {
            let mut d = extension_dict(&e.extension)?;
            update(
                &mut d,
                [
                    (s("time"), Value::Float(e.time)),
                    (s("user_name"), Value::Bytes(e.user.clone())),
                    (s("description"), Value::Bytes(e.description.clone())),
                    (s("tid"), tid(e.tid)),
                    (s("size"), uint(e.size)),
                ],
            );
            Ok(Value::Dict(d))
        })
        .collect::<Result<_>>()?;
    Ok(Value::List(dicts))
}

/// One `undoLog`/`undoInfo` dict, as FileStorage builds it: `id`, `time`,
/// `user_name`, `size`, `description`, then the extension's keys (which win
/// over the standard ones, as `dict.update` does).
///
/// # Errors
///
/// When the extension pickle cannot be read.
pub fn undo_entry(entry: &UndoEntry) -> Result<Vec<(Value, Value)>> {
    let mut d = vec![
        (s("id"), Value::Bytes(entry.id.clone())),
        (s("time"), Value::Float(entry.time)),
        (s("user_name"), Value::Bytes(entry.user.clone())),
        (s("size"), uint(entry.size)),
        (s("description"), Value::Bytes(entry.description.clone())),
    ];
    update(&mut d, extension_dict(&entry.extension)?);
    Ok(d)
}

/// `undoLog` / `undoInfo`: a list of [`undo_entry`] dicts. (When the
/// storage does not support undo ZEO replies with an empty *tuple*.)
///
/// # Errors
///
/// When an extension pickle cannot be read.
pub fn undo_log(entries: &[UndoEntry]) -> Result<Value> {
    entries
        .iter()
        .map(|e| undo_entry(e).map(Value::Dict))
        .collect::<Result<_>>()
        .map(Value::List)
}

/// `record_iternext`: `(oid, tid, data, next_oid_or_None)`.
pub fn record_iternext(record: &CurrentRecord) -> Value {
    Value::Tuple(vec![
        id8(record.oid.to_bytes()),
        tid(record.tid),
        Value::Bytes(record.data.clone()),
        record.next.map_or(Value::None, |o| id8(o.to_bytes())),
    ])
}

/// A conflict returned by `vote` under client-side conflict resolution.
#[derive(Clone, Debug, PartialEq)]
pub struct VoteConflict {
    /// The object.
    pub oid: Oid,
    /// The revision committed meanwhile.
    pub committed: Tid,
    /// The revision the client's data was based on.
    pub old: Tid,
    /// The data the client tried to store.
    pub data: Vec<u8>,
}

/// `vote` under client-side conflict resolution: a list of
/// `{'oid', 'serials': (committed, old), 'data'}` dicts.
pub fn vote_conflicts(conflicts: &[VoteConflict]) -> Value {
    Value::List(
        conflicts
            .iter()
            .map(|c| {
                Value::Dict(vec![
                    (s("oid"), id8(c.oid.to_bytes())),
                    (
                        s("serials"),
                        Value::Tuple(vec![tid(c.committed), tid(c.old)]),
                    ),
                    (s("data"), Value::Bytes(c.data.clone())),
                ])
            })
            .collect(),
    )
}

/// `iterator_next`: `(tid, status, user, description, extension_dict)`, or
/// `None` at the end.
///
/// # Errors
///
/// When the extension pickle cannot be read.
pub fn iterator_next(txn: Option<&TransactionRecord>) -> Result<Value> {
    let Some(txn) = txn else {
        return Ok(Value::None);
    };
    Ok(Value::Tuple(vec![
        tid(txn.tid),
        Value::Str(char::from(txn.status.as_byte()).to_string()),
        Value::Bytes(txn.meta.user.clone()),
        Value::Bytes(txn.meta.description.clone()),
        Value::Dict(extension_dict(&txn.meta.extension)?),
    ]))
}

/// `iterator_record_next`: `(oid, tid, data_or_None, data_txn_or_None)`, or
/// `None` at the end.
pub fn iterator_record_next(record: Option<&DataRecord>) -> Value {
    match record {
        None => Value::None,
        Some(r) => Value::Tuple(vec![
            id8(r.oid.to_bytes()),
            tid(r.tid),
            r.data
                .as_ref()
                .map_or(Value::None, |d| Value::Bytes(d.clone())),
            r.data_txn.map_or(Value::None, tid),
        ]),
    }
}

/// `server_status`, keys in ZEO's order.
pub fn server_status(status: &ServerStatus) -> Value {
    let tid_hex: String = status
        .last_transaction
        .to_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut dict = Value::Dict(vec![
        (s("connections"), uint(status.connections)),
        (s("loads"), uint(status.loads)),
        (s("stores"), uint(status.stores)),
        (s("commits"), uint(status.commits)),
        (s("aborts"), uint(status.aborts)),
        (s("active_txns"), uint(status.active_txns)),
        (
            s("lock_time"),
            status.lock_time.map_or(Value::None, Value::Float),
        ),
        (s("conflicts"), uint(status.conflicts)),
        (s("conflicts_resolved"), uint(status.conflicts_resolved)),
        (s("start"), s(&status.start)),
        (s("waiting"), uint(status.waiting)),
        (
            s("timeout-thread-is-alive"),
            status.timeout_thread_alive.map_or(s("stub"), Value::Bool),
        ),
        (s("last-transaction"), Value::Str(tid_hex)),
    ]);
    if let (Some(fsyncs), Value::Dict(entries)) = (status.fsyncs, &mut dict) {
        entries.push((s("fsyncs"), uint(fsyncs)));
    }
    dict
}

/// The JSON document answering a `ruok` probe: `{storage: status, ...}`,
/// formatted as Python's `json.dumps` does (`", "` and `": "` separators,
/// ASCII-only output).
///
/// ```
/// use zeo_protocol::{ruok_reply, ServerStatus};
/// use zeo_storage::Tid;
///
/// let status = ServerStatus {
///     connections: 0, loads: 0, stores: 0, commits: 0, aborts: 0, active_txns: 0,
///     lock_time: None, conflicts: 0, conflicts_resolved: 0, fsyncs: None,
///     start: "Wed Nov 25 11:21:31 2026".into(), waiting: 0,
///     timeout_thread_alive: None, last_transaction: Tid(0),
/// };
/// let json = String::from_utf8(ruok_reply(&[("1", &status)])).unwrap();
/// assert!(json.starts_with(r#"{"1": {"connections": 0, "loads": 0,"#));
/// assert!(json.ends_with(r#""timeout-thread-is-alive": "stub", "last-transaction": "0000000000000000"}}"#));
/// ```
pub fn ruok_reply(storages: &[(&str, &ServerStatus)]) -> Vec<u8> {
    let mut out = String::from("{");
    for (i, (name, status)) in storages.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        json_str(name, &mut out);
        out.push_str(": ");
        json_value(&server_status(status), &mut out);
    }
    out.push('}');
    out.into_bytes()
}

/// JSON for the scalar/dict values a status holds.
fn json_value(value: &Value, out: &mut String) {
    match value {
        Value::None => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Int(i) => out.push_str(&i.to_string()),
        Value::BigInt(b) => match crate::msgpack::bigint_to_u64(b) {
            Some(u) => out.push_str(&u.to_string()),
            None => out.push_str("null"),
        },
        Value::Float(f) => out.push_str(&python_float_repr(*f)),
        Value::Str(s) => json_str(s, out),
        Value::Dict(pairs) => {
            out.push('{');
            for (i, (k, v)) in pairs.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                match k {
                    Value::Str(k) => json_str(k, out),
                    other => json_str(&format!("{other:?}"), out),
                }
                out.push_str(": ");
                json_value(v, out);
            }
            out.push('}');
        }
        _ => out.push_str("null"),
    }
}

fn json_str(text: &str, out: &mut String) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if c.is_ascii() && !c.is_ascii_control() => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
}

/// Python's `repr(float)` for the finite values a status holds.
fn python_float_repr(f: f64) -> String {
    if !f.is_finite() {
        return if f.is_nan() {
            "NaN".into()
        } else if f > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    let text = format!("{f}");
    if text.contains('.') || text.contains('e') {
        text
    } else {
        format!("{text}.0")
    }
}
