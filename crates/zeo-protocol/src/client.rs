//! The client's side: building calls, and reading what the server sends
//! (replies and the one-way notifications of [`ClientEvent`]).

use zeo_pickle::Value;
use zeo_storage::{HistoryEntry, LoadedRevision, Oid, Tid, UndoEntry};

use crate::error::{Error, Result};
use crate::message::{Flags, Message};
use crate::reply;
use crate::types::{IteratorId, TxnId};
use crate::wire_error::WireError;

fn id8(bytes: [u8; 8]) -> Value {
    Value::Bytes(bytes.to_vec())
}

fn tid_or_none(t: Option<Tid>) -> Value {
    t.map_or(Value::None, reply::tid)
}

/// Builds the calls a ZEO 5 client makes, with the argument shapes the
/// stock client uses. Synchronous calls take the msgid to use; one-way
/// calls use msgid 0.
///
/// ```
/// use zeo_pickle::Value;
/// use zeo_protocol::ClientRequest;
/// use zeo_storage::{Oid, Tid};
///
/// let msg = ClientRequest::load_before(Oid(0), Tid(1));
/// // The msgid is the (oid, tid) pair, so identical loads share one reply.
/// assert_eq!(msg.msgid, Value::Tuple(vec![Value::Bytes(vec![0; 8]), Value::Bytes(vec![0, 0, 0, 0, 0, 0, 0, 1])]));
/// assert_eq!(msg.method, "loadBefore");
/// ```
pub struct ClientRequest;

impl ClientRequest {
    /// `register(storage, read_only)`.
    pub fn register(msgid: i64, storage: &str, read_only: bool) -> Message {
        Message::call(
            msgid,
            "register",
            vec![Value::Str(storage.to_owned()), Value::Bool(read_only)],
        )
    }

    /// `get_info()`.
    pub fn get_info(msgid: i64) -> Message {
        Message::call(msgid, "get_info", vec![])
    }

    /// `lastTransaction()`.
    pub fn last_transaction(msgid: i64) -> Message {
        Message::call(msgid, "lastTransaction", vec![])
    }

    /// `getInvalidations(tid)`.
    pub fn get_invalidations(msgid: i64, tid: Tid) -> Message {
        Message::call(msgid, "getInvalidations", vec![reply::tid(tid)])
    }

    /// `loadBefore(oid, tid)` with msgid `(oid, tid)`, as the stock client
    /// sends it.
    pub fn load_before(oid: Oid, before: Tid) -> Message {
        let args = vec![id8(oid.to_bytes()), reply::tid(before)];
        Message {
            msgid: Value::Tuple(args.clone()),
            flags: Flags::None,
            method: "loadBefore".to_owned(),
            args: Value::Tuple(args),
        }
    }

    /// `loadSerial(oid, serial)`.
    pub fn load_serial(msgid: i64, oid: Oid, serial: Tid) -> Message {
        Message::call(
            msgid,
            "loadSerial",
            vec![id8(oid.to_bytes()), reply::tid(serial)],
        )
    }

    /// `getTid(oid)`.
    pub fn get_tid(msgid: i64, oid: Oid) -> Message {
        Message::call(msgid, "getTid", vec![id8(oid.to_bytes())])
    }

    /// `history(oid, size)`.
    pub fn history(msgid: i64, oid: Oid, size: usize) -> Message {
        let size = i64::try_from(size).unwrap_or(i64::MAX);
        Message::call(
            msgid,
            "history",
            vec![id8(oid.to_bytes()), Value::Int(size)],
        )
    }

    /// `record_iternext(next)`.
    pub fn record_iternext(msgid: i64, next: Option<Oid>) -> Message {
        let next = next.map_or(Value::None, |o| id8(o.to_bytes()));
        Message::call(msgid, "record_iternext", vec![next])
    }

    /// `new_oids()`: the stock client always takes the default 100.
    pub fn new_oids(msgid: i64) -> Message {
        Message::call(msgid, "new_oids", vec![])
    }

    /// `pack(t, wait)`.
    pub fn pack(msgid: i64, time: f64, wait: bool) -> Message {
        Message::call(msgid, "pack", vec![Value::Float(time), Value::Bool(wait)])
    }

    /// `undoLog(first, last)`.
    pub fn undo_log(msgid: i64, first: i64, last: i64) -> Message {
        Message::call(msgid, "undoLog", vec![Value::Int(first), Value::Int(last)])
    }

    /// `undoInfo(first, last, None)`.
    pub fn undo_info(msgid: i64, first: i64, last: i64) -> Message {
        Message::call(
            msgid,
            "undoInfo",
            vec![Value::Int(first), Value::Int(last), Value::None],
        )
    }

    /// One-way `tpc_begin(id, user, description, extension, tid, status)`.
    /// `extension` is the transaction's extension dict.
    pub fn tpc_begin(
        txn: TxnId,
        user: &[u8],
        description: &[u8],
        extension: Value,
        tid: Option<Tid>,
        status: zeo_storage::TxnStatus,
    ) -> Message {
        Message::call_async(
            "tpc_begin",
            vec![
                txn.into(),
                Value::Bytes(user.to_vec()),
                Value::Bytes(description.to_vec()),
                extension,
                tid_or_none(tid),
                Value::Str(char::from(status.as_byte()).to_string()),
            ],
        )
    }

    /// One-way `storea(oid, serial, data, id)`.
    pub fn storea(oid: Oid, serial: Tid, data: &[u8], txn: TxnId) -> Message {
        Message::call_async(
            "storea",
            vec![
                id8(oid.to_bytes()),
                reply::tid(serial),
                Value::Bytes(data.to_vec()),
                txn.into(),
            ],
        )
    }

    /// One-way `checkCurrentSerialInTransaction(oid, serial, id)`.
    pub fn check_current_serial(oid: Oid, serial: Tid, txn: TxnId) -> Message {
        Message::call_async(
            "checkCurrentSerialInTransaction",
            vec![id8(oid.to_bytes()), reply::tid(serial), txn.into()],
        )
    }

    /// One-way `deleteObject(oid, serial, id)`.
    pub fn delete_object(oid: Oid, serial: Tid, txn: TxnId) -> Message {
        Message::call_async(
            "deleteObject",
            vec![id8(oid.to_bytes()), reply::tid(serial), txn.into()],
        )
    }

    /// One-way `restorea(oid, serial, data, prev_txn, id)`.
    pub fn restorea(
        oid: Oid,
        serial: Tid,
        data: Option<&[u8]>,
        prev_txn: Option<Tid>,
        txn: TxnId,
    ) -> Message {
        Message::call_async(
            "restorea",
            vec![
                id8(oid.to_bytes()),
                reply::tid(serial),
                data.map_or(Value::None, |d| Value::Bytes(d.to_vec())),
                tid_or_none(prev_txn),
                txn.into(),
            ],
        )
    }

    /// The one-way messages that upload a blob: `storeBlobStart()`, one
    /// `storeBlobChunk(chunk)` per chunk, `storeBlobEnd(oid, serial, data,
    /// id)`. They must be written back to back.
    pub fn store_blob<'a>(
        oid: Oid,
        serial: Tid,
        data: &[u8],
        txn: TxnId,
        chunks: impl IntoIterator<Item = &'a [u8]>,
    ) -> Vec<Message> {
        let mut out = vec![Self::store_blob_start()];
        out.extend(chunks.into_iter().map(Self::store_blob_chunk));
        out.push(Self::store_blob_end(oid, serial, data, txn));
        out
    }

    /// One-way `storeBlobStart()`: an upload begins. A client streaming a
    /// large blob sends this, then [`ClientRequest::store_blob_chunk`] for
    /// each chunk as it reads it, then [`ClientRequest::store_blob_end`],
    /// with nothing else of the transaction's in between.
    pub fn store_blob_start() -> Message {
        Message::call_async("storeBlobStart", vec![])
    }

    /// One-way `storeBlobChunk(chunk)`: the next bytes of an upload (ZEO
    /// sends 59,000 at a time).
    pub fn store_blob_chunk(chunk: &[u8]) -> Message {
        Message::call_async("storeBlobChunk", vec![Value::Bytes(chunk.to_vec())])
    }

    /// One-way `storeBlobEnd(oid, serial, data, id)`: the uploaded bytes
    /// are the blob of this store.
    ///
    /// ```
    /// use zeo_protocol::{ClientRequest, TxnId};
    /// use zeo_storage::{Oid, Tid};
    ///
    /// let msgs = ClientRequest::store_blob(Oid(1), Tid(0), b"rec", TxnId(7), [&b"ab"[..]]);
    /// assert_eq!(msgs[0], ClientRequest::store_blob_start());
    /// assert_eq!(msgs[1], ClientRequest::store_blob_chunk(b"ab"));
    /// assert_eq!(msgs[2], ClientRequest::store_blob_end(Oid(1), Tid(0), b"rec", TxnId(7)));
    /// assert_eq!(msgs[2].method, "storeBlobEnd");
    /// ```
    pub fn store_blob_end(oid: Oid, serial: Tid, data: &[u8], txn: TxnId) -> Message {
        Message::call_async(
            "storeBlobEnd",
            vec![
                id8(oid.to_bytes()),
                reply::tid(serial),
                Value::Bytes(data.to_vec()),
                txn.into(),
            ],
        )
    }

    /// One-way `storeBlobShared(oid, serial, data, filename, id)`.
    pub fn store_blob_shared(
        oid: Oid,
        serial: Tid,
        data: &[u8],
        filename: &str,
        txn: TxnId,
    ) -> Message {
        Message::call_async(
            "storeBlobShared",
            vec![
                id8(oid.to_bytes()),
                reply::tid(serial),
                Value::Bytes(data.to_vec()),
                Value::Str(filename.to_owned()),
                txn.into(),
            ],
        )
    }

    /// `sendBlob(oid, serial)`.
    pub fn send_blob(msgid: i64, oid: Oid, serial: Tid) -> Message {
        Message::call(
            msgid,
            "sendBlob",
            vec![id8(oid.to_bytes()), reply::tid(serial)],
        )
    }

    /// `vote(id)`.
    pub fn vote(msgid: i64, txn: TxnId) -> Message {
        Message::call(msgid, "vote", vec![txn.into()])
    }

    /// `tpc_finish(id)`.
    pub fn tpc_finish(msgid: i64, txn: TxnId) -> Message {
        Message::call(msgid, "tpc_finish", vec![txn.into()])
    }

    /// `tpc_abort(id)`.
    pub fn tpc_abort(msgid: i64, txn: TxnId) -> Message {
        Message::call(msgid, "tpc_abort", vec![txn.into()])
    }

    /// One-way `undoa(undo_id, id)`.
    pub fn undoa(undo_id: &[u8], txn: TxnId) -> Message {
        Message::call_async("undoa", vec![Value::Bytes(undo_id.to_vec()), txn.into()])
    }

    /// `iterator_start(start, stop)`.
    pub fn iterator_start(msgid: i64, start: Option<Tid>, stop: Option<Tid>) -> Message {
        Message::call(
            msgid,
            "iterator_start",
            vec![tid_or_none(start), tid_or_none(stop)],
        )
    }

    /// `iterator_next(iid)`.
    pub fn iterator_next(msgid: i64, iid: IteratorId) -> Message {
        Message::call(msgid, "iterator_next", vec![iid.into()])
    }

    /// `iterator_record_start(txn_iid, tid)`.
    pub fn iterator_record_start(msgid: i64, txn_iid: IteratorId, tid: Tid) -> Message {
        Message::call(
            msgid,
            "iterator_record_start",
            vec![txn_iid.into(), reply::tid(tid)],
        )
    }

    /// `iterator_record_next(iid)`.
    pub fn iterator_record_next(msgid: i64, iid: IteratorId) -> Message {
        Message::call(msgid, "iterator_record_next", vec![iid.into()])
    }

    /// One-way `iterator_gc(iids)`.
    pub fn iterator_gc(iids: &[IteratorId]) -> Message {
        Message::call_async(
            "iterator_gc",
            vec![Value::List(iids.iter().map(|i| (*i).into()).collect())],
        )
    }

    /// `server_status()`.
    pub fn server_status(msgid: i64) -> Message {
        Message::call(msgid, "server_status", vec![])
    }

    /// One-way `set_client_label(label)`.
    pub fn set_client_label(label: &str) -> Message {
        Message::call_async("set_client_label", vec![Value::Str(label.to_owned())])
    }

    /// `ping()`.
    pub fn ping(msgid: i64) -> Message {
        Message::call(msgid, "ping", vec![])
    }
}

/// A one-way message from the server.
#[derive(Clone, Debug, PartialEq)]
pub enum ClientEvent {
    /// `invalidateTransaction(tid, oids)`: another client committed.
    InvalidateTransaction {
        /// The committed transaction.
        tid: Tid,
        /// The objects it changed.
        oids: Vec<Oid>,
    },
    /// `info(dict)`: new storage statistics (`length`, `size`).
    Info {
        /// The dict's entries, as sent.
        entries: Vec<(Value, Value)>,
    },
    /// `receiveBlobStart(oid, serial)`.
    ReceiveBlobStart {
        /// The object.
        oid: Oid,
        /// The revision.
        serial: Tid,
    },
    /// `receiveBlobChunk(oid, serial, chunk)`.
    ReceiveBlobChunk {
        /// The object.
        oid: Oid,
        /// The revision.
        serial: Tid,
        /// The next bytes.
        chunk: Vec<u8>,
    },
    /// `receiveBlobStop(oid, serial)`.
    ReceiveBlobStop {
        /// The object.
        oid: Oid,
        /// The revision.
        serial: Tid,
    },
}

impl ClientEvent {
    /// `invalidateTransaction(tid, oids)` as the server sends it.
    ///
    /// ```
    /// use zeo_protocol::{ClientEvent, ClientIncoming};
    /// use zeo_storage::{Oid, Tid};
    ///
    /// let msg = ClientEvent::invalidate_transaction(Tid(7), &[Oid(1)]);
    /// assert_eq!(
    ///     ClientIncoming::parse(&msg).unwrap(),
    ///     ClientIncoming::Event(ClientEvent::InvalidateTransaction { tid: Tid(7), oids: vec![Oid(1)] })
    /// );
    /// ```
    pub fn invalidate_transaction(tid: Tid, oids: &[Oid]) -> Message {
        Message::call_async(
            "invalidateTransaction",
            vec![reply::tid(tid), reply::oid_list(oids)],
        )
    }

    /// `info({'length': length, 'size': size})`.
    pub fn info(length: u64, size: u64) -> Message {
        Message::call_async("info", vec![reply::size_info(length, size)])
    }

    /// `receiveBlobStart(oid, serial)`.
    pub fn receive_blob_start(oid: Oid, serial: Tid) -> Message {
        Message::call_async(
            "receiveBlobStart",
            vec![id8(oid.to_bytes()), reply::tid(serial)],
        )
    }

    /// `receiveBlobChunk(oid, serial, chunk)`.
    pub fn receive_blob_chunk(oid: Oid, serial: Tid, chunk: &[u8]) -> Message {
        Message::call_async(
            "receiveBlobChunk",
            vec![
                id8(oid.to_bytes()),
                reply::tid(serial),
                Value::Bytes(chunk.to_vec()),
            ],
        )
    }

    /// `receiveBlobStop(oid, serial)`.
    pub fn receive_blob_stop(oid: Oid, serial: Tid) -> Message {
        Message::call_async(
            "receiveBlobStop",
            vec![id8(oid.to_bytes()), reply::tid(serial)],
        )
    }

    /// The message for this event.
    pub fn to_message(&self) -> Message {
        match self {
            ClientEvent::InvalidateTransaction { tid, oids } => {
                Self::invalidate_transaction(*tid, oids)
            }
            ClientEvent::Info { entries } => {
                Message::call_async("info", vec![Value::Dict(entries.clone())])
            }
            ClientEvent::ReceiveBlobStart { oid, serial } => {
                Self::receive_blob_start(*oid, *serial)
            }
            ClientEvent::ReceiveBlobChunk { oid, serial, chunk } => {
                Self::receive_blob_chunk(*oid, *serial, chunk)
            }
            ClientEvent::ReceiveBlobStop { oid, serial } => Self::receive_blob_stop(*oid, *serial),
        }
    }
}

/// What a client receives.
#[derive(Clone, Debug, PartialEq)]
pub enum ClientIncoming {
    /// The answer to the call with `msgid`.
    Reply {
        /// The call's msgid.
        msgid: Value,
        /// The value, or the exception the server raised.
        result: Result<Value, WireError>,
    },
    /// A server notification.
    Event(ClientEvent),
}

impl ClientIncoming {
    /// [`ClientIncoming::parse`], taking the message so a reply's value
    /// (a loaded record, say) is moved rather than copied.
    ///
    /// # Errors
    ///
    /// As [`ClientIncoming::parse`].
    pub fn from_message(msg: Message) -> Result<ClientIncoming> {
        if msg.is_reply() && msg.flags == Flags::None && legacy_exception(&msg.args).is_none() {
            return Ok(ClientIncoming::Reply {
                msgid: msg.msgid,
                result: Ok(msg.args),
            });
        }
        ClientIncoming::parse(&msg)
    }

    /// Reads a message from the server.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownMethod`] for notifications a ZEO 5 client does not
    /// accept, [`Error::BadReply`] for malformed ones.
    pub fn parse(msg: &Message) -> Result<ClientIncoming> {
        if msg.is_reply() {
            let result = if msg.flags != Flags::None {
                Err(WireError::from_value(&msg.args)
                    .ok_or_else(|| bad(".reply", "error reply is not (class, fields)"))?)
            } else if let Some(err) = legacy_exception(&msg.args) {
                Err(err)
            } else {
                Ok(msg.args.clone())
            };
            return Ok(ClientIncoming::Reply {
                msgid: msg.msgid.clone(),
                result,
            });
        }
        let method = msg.method.as_str();
        let args = msg
            .call_args()
            .ok_or_else(|| bad(method, "arguments are not a tuple"))?;
        let event = match (method, args) {
            ("invalidateTransaction", [tid, oids]) => ClientEvent::InvalidateTransaction {
                tid: as_tid(method, tid)?,
                oids: as_oids(method, oids)?,
            },
            ("info", [Value::Dict(entries)]) => ClientEvent::Info {
                entries: entries.clone(),
            },
            ("receiveBlobStart", [oid, serial]) => ClientEvent::ReceiveBlobStart {
                oid: as_oid(method, oid)?,
                serial: as_tid(method, serial)?,
            },
            ("receiveBlobChunk", [oid, serial, Value::Bytes(chunk)]) => {
                ClientEvent::ReceiveBlobChunk {
                    oid: as_oid(method, oid)?,
                    serial: as_tid(method, serial)?,
                    chunk: chunk.clone(),
                }
            }
            ("receiveBlobStop", [oid, serial]) => ClientEvent::ReceiveBlobStop {
                oid: as_oid(method, oid)?,
                serial: as_tid(method, serial)?,
            },
            (
                "invalidateTransaction"
                | "info"
                | "receiveBlobStart"
                | "receiveBlobChunk"
                | "receiveBlobStop",
                _,
            ) => return Err(bad(method, "unexpected arguments")),
            _ => return Err(Error::UnknownMethod(method.to_owned())),
        };
        Ok(ClientIncoming::Event(event))
    }
}

/// ZEO 3/4 servers reply `(ExceptionClass, instance)` with flags 0; a
/// class reference in first place is what marks it as an error.
fn legacy_exception(value: &Value) -> Option<WireError> {
    match value {
        Value::Tuple(items) if items.len() > 1 && matches!(items[0], Value::Global { .. }) => {
            WireError::from_value(value)
        }
        _ => None,
    }
}

fn bad(method: &str, reason: impl Into<String>) -> Error {
    Error::BadReply {
        method: method.to_owned(),
        reason: reason.into(),
    }
}

fn as_id8(method: &str, value: &Value) -> Result<[u8; 8]> {
    match value {
        Value::Bytes(b) => <[u8; 8]>::try_from(&b[..])
            .map_err(|_| bad(method, format!("expected 8 bytes, got {}", b.len()))),
        other => Err(bad(
            method,
            format!("expected 8 bytes, got {}", other.type_name()),
        )),
    }
}

fn as_tid(method: &str, value: &Value) -> Result<Tid> {
    as_id8(method, value).map(Tid::from_bytes)
}

fn as_oid(method: &str, value: &Value) -> Result<Oid> {
    as_id8(method, value).map(Oid::from_bytes)
}

fn as_oids(method: &str, value: &Value) -> Result<Vec<Oid>> {
    match value {
        Value::Tuple(items) | Value::List(items) => {
            items.iter().map(|v| as_oid(method, v)).collect()
        }
        other => Err(bad(
            method,
            format!("expected a sequence of oids, got {}", other.type_name()),
        )),
    }
}

/// Typed readers for the replies a client most often interprets.
pub mod replies {
    use super::*;

    /// A tid reply (`register`, `lastTransaction`, `getTid`, `tpc_finish`).
    ///
    /// # Errors
    ///
    /// [`Error::BadReply`] when the value is not 8 bytes.
    pub fn tid(method: &str, value: &Value) -> Result<Tid> {
        as_tid(method, value)
    }

    /// `loadBefore`'s reply.
    ///
    /// # Errors
    ///
    /// [`Error::BadReply`] when the value is neither `None` nor
    /// `(data, start, end)`.
    pub fn load_before(value: &Value) -> Result<Option<LoadedRevision>> {
        Ok(load_before_ref(value)?.map(|r| LoadedRevision {
            data: r.data.to_vec(),
            start: r.start,
            end: r.end,
        }))
    }

    /// A revision in a `loadBefore` reply, its data borrowed from the value.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct RevisionRef<'a> {
        /// The record.
        pub data: &'a [u8],
        /// The tid that wrote it.
        pub start: Tid,
        /// The tid that replaced it, `None` while it is current.
        pub end: Option<Tid>,
    }

    /// `loadBefore`'s reply, borrowing the data, for a reader that copies it
    /// elsewhere (a cache) and keeps the value.
    ///
    /// # Errors
    ///
    /// As [`load_before`].
    pub fn load_before_ref(value: &Value) -> Result<Option<RevisionRef<'_>>> {
        const M: &str = "loadBefore";
        match value {
            Value::None => Ok(None),
            Value::Tuple(items) | Value::List(items) => match items.as_slice() {
                [Value::Bytes(data), start, end] => Ok(Some(RevisionRef {
                    data,
                    start: as_tid(M, start)?,
                    end: match end {
                        Value::None => None,
                        other => Some(as_tid(M, other)?),
                    },
                })),
                _ => Err(bad(M, "expected (data, start, end)")),
            },
            other => Err(bad(
                M,
                format!("expected a tuple or None, got {}", other.type_name()),
            )),
        }
    }

    /// [`load_before`], taking the value so the data is moved rather than
    /// copied.
    ///
    /// # Errors
    ///
    /// As [`load_before`].
    pub fn into_load_before(value: Value) -> Result<Option<LoadedRevision>> {
        const M: &str = "loadBefore";
        match value {
            Value::Tuple(items) | Value::List(items) if items.len() == 3 => {
                let mut items = items.into_iter();
                match (items.next(), items.next(), items.next()) {
                    (Some(Value::Bytes(data)), Some(start), Some(end)) => {
                        Ok(Some(LoadedRevision {
                            data,
                            start: as_tid(M, &start)?,
                            end: match end {
                                Value::None => None,
                                other => Some(as_tid(M, &other)?),
                            },
                        }))
                    }
                    _ => Err(bad(M, "expected (data, start, end)")),
                }
            }
            other => load_before(&other),
        }
    }

    /// `getInvalidations`' reply.
    ///
    /// # Errors
    ///
    /// [`Error::BadReply`] when the value is neither `None` nor
    /// `(tid, oids)`.
    pub fn invalidations(value: &Value) -> Result<Option<(Tid, Vec<Oid>)>> {
        const M: &str = "getInvalidations";
        match value {
            Value::None => Ok(None),
            Value::Tuple(items) | Value::List(items) => match items.as_slice() {
                [tid, oids] => Ok(Some((as_tid(M, tid)?, as_oids(M, oids)?))),
                _ => Err(bad(M, "expected (tid, oids)")),
            },
            other => Err(bad(
                M,
                format!("expected a tuple or None, got {}", other.type_name()),
            )),
        }
    }

    /// `new_oids`' reply.
    ///
    /// # Errors
    ///
    /// [`Error::BadReply`] when the value is not a sequence of oids.
    pub fn oids(method: &str, value: &Value) -> Result<Vec<Oid>> {
        as_oids(method, value)
    }

    /// `history`'s reply: FileStorage's dicts, newest first. Keys beyond
    /// the standard ones (`tid`/`serial`, `time`, `user_name`,
    /// `description`, `size`; `version` is dropped) are the transaction's
    /// extension and are pickled back into [`HistoryEntry::extension`].
    ///
    /// ```
    /// use zeo_protocol::{client::replies, reply};
    /// use zeo_storage::{HistoryEntry, Tid};
    ///
    /// let entry = HistoryEntry {
    ///     tid: Tid(7), time: 1.5, user: b"u".to_vec(), description: b"d".to_vec(),
    ///     extension: Vec::new(), size: 3,
    /// };
    /// let value = reply::history(&[entry.clone()]).unwrap();
    /// assert_eq!(replies::history(&value).unwrap(), vec![entry]);
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::BadReply`] when the value is not a list of dicts or a tid
    /// is not 8 bytes.
    pub fn history(value: &Value) -> Result<Vec<HistoryEntry>> {
        const M: &str = "history";
        metadata_dicts(M, value, &["tid", "serial", "version"])?
            .into_iter()
            .map(|d| {
                let mut tid = Tid::ZERO;
                for (key, v) in d.own {
                    // A tid of another type is left at zero, as a missing one.
                    if let ("tid" | "serial", Value::Bytes(b)) = (key, v) {
                        tid = Tid::from_slice(b).ok_or_else(|| bad(M, "bad tid"))?;
                    }
                }
                Ok(HistoryEntry {
                    tid,
                    time: d.time,
                    user: d.user,
                    description: d.description,
                    extension: d.extension,
                    size: d.size,
                })
            })
            .collect()
    }

    /// `undoLog`'s and `undoInfo`'s reply. Servers identify FileStorage
    /// transactions by [`zeo_storage::undo_id()`]; the tid is decoded from
    /// that id, and is [`Tid::ZERO`] for ids of another form. Keys beyond
    /// the standard ones (`id`, `time`, `user_name`, `description`, `size`)
    /// are pickled back into [`UndoEntry::extension`].
    ///
    /// ```
    /// use zeo_protocol::{client::replies, reply};
    /// use zeo_storage::{undo_id, Tid, UndoEntry};
    ///
    /// let entry = UndoEntry {
    ///     id: undo_id(Tid(7)), tid: Tid(7), time: 1.5, user: b"u".to_vec(),
    ///     description: b"d".to_vec(), extension: Vec::new(), size: 3,
    /// };
    /// let value = reply::undo_log(&[entry.clone()]).unwrap();
    /// assert_eq!(replies::undo_log(&value).unwrap(), vec![entry]);
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::BadReply`] when the value is not a list of dicts.
    pub fn undo_log(value: &Value) -> Result<Vec<UndoEntry>> {
        metadata_dicts("undoLog", value, &["id"])?
            .into_iter()
            .map(|d| {
                let mut id = Vec::new();
                for (_, v) in d.own {
                    id = text(v);
                }
                Ok(UndoEntry {
                    tid: zeo_storage::tid_from_undo_id(&id).unwrap_or(Tid::ZERO),
                    id,
                    time: d.time,
                    user: d.user,
                    description: d.description,
                    extension: d.extension,
                    size: d.size,
                })
            })
            .collect()
    }

    /// What `history` and `undoLog` dicts share: the transaction's
    /// metadata, plus the keys the caller reads itself.
    struct MetadataDict<'a> {
        time: f64,
        user: Vec<u8>,
        description: Vec<u8>,
        size: u64,
        /// The keys that are neither standard nor claimed, pickled as the
        /// extension dict they came from (empty when there are none).
        extension: Vec<u8>,
        /// The claimed keys, in the order sent.
        own: Vec<(&'a str, &'a Value)>,
    }

    /// Reads a list of transaction-metadata dicts. Keys in `own` are handed
    /// back as they are; entries with keys that are not strings are skipped,
    /// and standard keys of an unexpected type read as empty or zero, so a
    /// server's oddities do not hide the rest of the list.
    fn metadata_dicts<'a>(
        method: &str,
        value: &'a Value,
        own: &[&str],
    ) -> Result<Vec<MetadataDict<'a>>> {
        let (Value::List(items) | Value::Tuple(items)) = value else {
            return Err(bad(method, "not a list"));
        };
        items
            .iter()
            .map(|item| {
                let Value::Dict(pairs) = item else {
                    return Err(bad(method, "entry is not a dict"));
                };
                let mut d = MetadataDict {
                    time: 0.0,
                    user: Vec::new(),
                    description: Vec::new(),
                    size: 0,
                    extension: Vec::new(),
                    own: Vec::new(),
                };
                let mut extension = Vec::new();
                for (k, v) in pairs {
                    let Value::Str(k) = k else { continue };
                    match k.as_str() {
                        k if own.contains(&k) => d.own.push((k, v)),
                        "time" => {
                            d.time = match v {
                                Value::Float(f) => *f,
                                Value::Int(i) => *i as f64,
                                _ => 0.0,
                            }
                        }
                        "user_name" => d.user = text(v),
                        "description" => d.description = text(v),
                        "size" => {
                            d.size = if let Value::Int(i) = v {
                                (*i).max(0) as u64
                            } else {
                                0
                            }
                        }
                        _ => extension.push((Value::Str(k.clone()), v.clone())),
                    }
                }
                if !extension.is_empty() {
                    d.extension =
                        zeo_pickle::encode(&Value::Dict(extension), zeo_pickle::Protocol::V3)
                            .map_err(|e| bad(method, e.to_string()))?;
                }
                Ok(d)
            })
            .collect()
    }

    /// Bytes or text as bytes; anything else as empty.
    fn text(v: &Value) -> Vec<u8> {
        match v {
            Value::Bytes(b) => b.clone(),
            Value::Str(s) => s.as_bytes().to_vec(),
            _ => Vec::new(),
        }
    }

    /// One item of `vote`'s reply.
    #[derive(Clone, Debug, PartialEq)]
    pub enum VoteItem {
        /// The server changed this object (resolved a conflict or undid
        /// it): the client must not cache its own data for it.
        Changed(Oid),
        /// An unresolved conflict the client should resolve and re-store.
        Conflict(crate::reply::VoteConflict),
    }

    /// `vote`'s reply.
    ///
    /// # Errors
    ///
    /// [`Error::BadReply`] for items that are neither oids nor conflict
    /// dicts.
    pub fn vote(value: &Value) -> Result<Vec<VoteItem>> {
        const M: &str = "vote";
        let items = match value {
            Value::None => return Ok(Vec::new()),
            Value::Tuple(items) | Value::List(items) => items,
            other => {
                return Err(bad(
                    M,
                    format!("expected a list, got {}", other.type_name()),
                ))
            }
        };
        items
            .iter()
            .map(|item| match item {
                Value::Dict(pairs) => {
                    let get = |key: &str| {
                        pairs
                            .iter()
                            .find(|(k, _)| matches!(k, Value::Str(s) if s == key))
                            .map(|(_, v)| v)
                            .ok_or_else(|| bad(M, format!("conflict without {key:?}")))
                    };
                    let (committed, old) = match get("serials")? {
                        Value::Tuple(p) | Value::List(p) if p.len() == 2 => {
                            (as_tid(M, &p[0])?, as_tid(M, &p[1])?)
                        }
                        _ => return Err(bad(M, "serials is not a pair")),
                    };
                    let data = match get("data")? {
                        Value::Bytes(d) => d.clone(),
                        _ => return Err(bad(M, "data is not bytes")),
                    };
                    Ok(VoteItem::Conflict(crate::reply::VoteConflict {
                        oid: as_oid(M, get("oid")?)?,
                        committed,
                        old,
                        data,
                    }))
                }
                other => as_oid(M, other).map(VoteItem::Changed),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> Value {
        Value::Bytes(n.to_be_bytes().to_vec())
    }

    #[test]
    fn owned_and_borrowed_load_before_readers_agree() {
        let values = [
            Value::None,
            Value::Tuple(vec![Value::Bytes(b"data".to_vec()), id(5), Value::None]),
            Value::List(vec![Value::Bytes(Vec::new()), id(5), id(9)]),
            Value::Tuple(vec![Value::Bytes(b"data".to_vec()), id(5)]),
            Value::Tuple(vec![Value::Str("data".into()), id(5), Value::None]),
            Value::Tuple(vec![
                Value::Bytes(b"data".to_vec()),
                Value::Int(5),
                Value::None,
            ]),
            Value::Tuple(vec![Value::Bytes(b"data".to_vec()), id(5), Value::Int(0)]),
            Value::Int(3),
        ];
        for value in values {
            let borrowed = replies::load_before(&value).map_err(|e| e.to_string());
            let by_ref = replies::load_before_ref(&value)
                .map(|found| {
                    found.map(|r| LoadedRevision {
                        data: r.data.to_vec(),
                        start: r.start,
                        end: r.end,
                    })
                })
                .map_err(|e| e.to_string());
            let owned = replies::into_load_before(value.clone()).map_err(|e| e.to_string());
            assert_eq!(borrowed, owned, "{value:?}");
            assert_eq!(borrowed, by_ref, "{value:?}");
        }
        let found = replies::into_load_before(Value::Tuple(vec![
            Value::Bytes(b"data".to_vec()),
            id(5),
            id(9),
        ]))
        .unwrap();
        assert_eq!(
            found,
            Some(LoadedRevision {
                data: b"data".to_vec(),
                start: Tid(5),
                end: Some(Tid(9)),
            })
        );
    }

    #[test]
    fn from_message_reads_what_parse_reads() {
        let legacy = Value::Tuple(vec![
            Value::Global {
                module: "ZODB.POSException".into(),
                name: "POSKeyError".into(),
            },
            Value::Tuple(vec![id(1)]),
        ]);
        let messages = [
            Message::reply(Value::Int(3), Value::Bytes(vec![1; 100])),
            Message::reply(Value::Tuple(vec![id(1), id(2)]), Value::None),
            Message::reply(Value::Int(4), legacy),
            crate::Reply::error(Value::Int(5), &crate::WireError::type_error("bad")),
            Message {
                flags: Flags::Error,
                ..Message::reply(Value::Int(6), Value::Int(1))
            },
            ClientEvent::invalidate_transaction(Tid(7), &[Oid(1), Oid(2)]),
            Message::call_async("invalidateTransaction", vec![id(7)]),
            Message::call_async("nonsense", vec![]),
        ];
        for msg in messages {
            let parsed = ClientIncoming::parse(&msg).map_err(|e| e.to_string());
            let owned = ClientIncoming::from_message(msg.clone()).map_err(|e| e.to_string());
            assert_eq!(parsed, owned, "{msg:?}");
        }
    }
}
