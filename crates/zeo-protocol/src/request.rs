//! Typed client → server calls.
//!
//! [`ServerRequest::parse`] turns a decoded [`Message`] into one variant per
//! method a ZEO 5/6 client calls, with arguments checked the way the Python
//! method signatures accept them (defaults filled in, ints where Python
//! takes any truth value, and so on). The server engine never looks at raw
//! values.

use zeo_pickle::Value;
use zeo_storage::{Oid, Tid, TxnStatus};

use crate::args::Args;
use crate::error::{Error, Result};
use crate::message::{Flags, Message};
use crate::types::{IteratorId, TxnId, UndoMatch, UndoSpec};

/// Most oids one `new_oids` call hands out (ZEO clamps `n` to `1..=100`).
pub const MAX_NEW_OIDS: usize = 100;

/// One call a ZEO 5/6 client makes, with typed arguments.
#[derive(Clone, Debug, PartialEq)]
pub enum ServerRequest {
    /// `register(storage_name, read_only)` → last tid. The first and, until
    /// it succeeds, only call allowed.
    Register {
        /// Which storage (`'1'` by default).
        storage: String,
        /// Whether the client wants a read-only connection (any truth value;
        /// the stock client sends the int `0`).
        read_only: bool,
    },
    /// `get_info()` → [`crate::StorageInfo`] dict.
    GetInfo,
    /// `lastTransaction()` → tid.
    LastTransaction,
    /// `getInvalidations(tid)` → `None` or `(tid, [oid, ...])`.
    GetInvalidations {
        /// The client's last known transaction.
        tid: Tid,
    },
    /// `loadBefore(oid, tid)` → `(data, start, end)` or `None`. The stock
    /// client uses `(oid, tid)` as the msgid.
    LoadBefore {
        /// The object.
        oid: Oid,
        /// Load the revision current just before this tid.
        before: Tid,
    },
    /// `loadSerial(oid, serial)` → data.
    LoadSerial {
        /// The object.
        oid: Oid,
        /// The revision.
        serial: Tid,
    },
    /// `getTid(oid)` → tid of the current revision.
    GetTid {
        /// The object.
        oid: Oid,
    },
    /// `history(oid, size=1)` → list of dicts, newest first.
    History {
        /// The object.
        oid: Oid,
        /// How many revisions at most (negative sizes read as 0).
        size: usize,
    },
    /// `record_iternext(next=None)` → `(oid, tid, data, next_oid)`.
    RecordIternext {
        /// Where to continue; `None` starts at the lowest oid.
        next: Option<Oid>,
    },
    /// `new_oids(n=100)` → list of oids.
    NewOids {
        /// How many, already clamped to `1..=100` as ZEO does.
        n: usize,
    },
    /// `new_oid()`: in ZEO's allowed method set but not implemented by its
    /// server, which answers `builtins.AttributeError`
    /// ([`crate::WireError::no_attribute`]).
    NewOid,
    /// `pack(t, wait=1)` → `None`.
    Pack {
        /// Pack time, Unix seconds.
        time: f64,
        /// Reply only once packing is done.
        wait: bool,
    },
    /// `undoLog(first, last)` → list of dicts.
    UndoLog {
        /// First entry.
        first: i64,
        /// End, or a negative count.
        last: i64,
    },
    /// `undoInfo(first, last, specification)` → list of dicts.
    UndoInfo {
        /// First entry.
        first: i64,
        /// End, or a negative count.
        last: i64,
        /// A filter; `None` for none or an empty one.
        specification: Option<UndoSpec>,
    },
    /// `tpc_begin(id, user, description, ext, tid=None, status=' ')`, async.
    TpcBegin {
        /// The client's transaction.
        txn: TxnId,
        /// User name.
        user: Vec<u8>,
        /// Description.
        description: Vec<u8>,
        /// The extension dict, as sent (a [`Value::Dict`], usually empty).
        extension: Value,
        /// Commit under this tid (restoring / copying).
        tid: Option<Tid>,
        /// Status byte for the committed transaction.
        status: TxnStatus,
    },
    /// `storea(oid, serial, data, id)`, async.
    Storea {
        /// The object.
        oid: Oid,
        /// The revision the data was based on (`z64` for new objects).
        serial: Tid,
        /// The object record.
        data: Vec<u8>,
        /// The client's transaction.
        txn: TxnId,
    },
    /// `checkCurrentSerialInTransaction(oid, serial, id)`, async.
    CheckCurrentSerial {
        /// The object.
        oid: Oid,
        /// The revision that must still be current.
        serial: Tid,
        /// The client's transaction.
        txn: TxnId,
    },
    /// `deleteObject(oid, serial, id)`, async.
    DeleteObject {
        /// The object.
        oid: Oid,
        /// Its current revision.
        serial: Tid,
        /// The client's transaction.
        txn: TxnId,
    },
    /// `restorea(oid, serial, data, prev_txn, id)`, async.
    Restorea {
        /// The object.
        oid: Oid,
        /// The revision's tid.
        serial: Tid,
        /// The record; `None` for a "no data" record.
        data: Option<Vec<u8>>,
        /// A transaction holding identical data, for a backpointer.
        prev_txn: Option<Tid>,
        /// The client's transaction.
        txn: TxnId,
    },
    /// `storea` or `storeBlobEnd` whose record is not bytes (a `str`, say):
    /// Python's server logs such a store, and its storage fails the
    /// transaction at the vote with a `TypeError`. Only the record's Python
    /// type is kept.
    StoreNotBytes {
        /// `"storea"` or `"storeBlobEnd"`.
        method: &'static str,
        /// The object.
        oid: Oid,
        /// The client's transaction.
        txn: TxnId,
        /// The record's Python type (`str`, `int`, ...).
        type_name: &'static str,
    },
    /// `storeBlobStart()`, async: a blob upload begins.
    StoreBlobStart,
    /// `storeBlobChunk(chunk)`, async.
    StoreBlobChunk {
        /// The next bytes of the blob.
        chunk: Vec<u8>,
    },
    /// `storeBlobEnd(oid, serial, data, id)`, async: the uploaded blob
    /// belongs to this store.
    StoreBlobEnd {
        /// The object.
        oid: Oid,
        /// The revision the data was based on.
        serial: Tid,
        /// The object record.
        data: Vec<u8>,
        /// The client's transaction.
        txn: TxnId,
    },
    /// `storeBlobShared(oid, serial, data, filename, id)`, async: the blob
    /// is already in the shared blob directory.
    StoreBlobShared {
        /// The object.
        oid: Oid,
        /// The revision the data was based on.
        serial: Tid,
        /// The object record.
        data: Vec<u8>,
        /// Bare file name in the object's blob directory; ZEO refuses names
        /// with a path separator or not ending in `.tmp` plus at most one
        /// character (`builtins.ValueError`).
        filename: String,
        /// The client's transaction.
        txn: TxnId,
    },
    /// `sendBlob(oid, serial)` → `None` after the `receiveBlob*` messages.
    SendBlob {
        /// The object.
        oid: Oid,
        /// The revision.
        serial: Tid,
    },
    /// `vote(id)` → list of oids or of conflict dicts.
    Vote {
        /// The client's transaction.
        txn: TxnId,
    },
    /// `tpc_finish(id)` → committed tid.
    TpcFinish {
        /// The client's transaction.
        txn: TxnId,
    },
    /// `tpc_abort(id)` → `None`.
    TpcAbort {
        /// The client's transaction.
        txn: TxnId,
    },
    /// `undoa(trans_id, id)`, async.
    Undoa {
        /// The undo-log id of the transaction to undo.
        undo_id: Vec<u8>,
        /// The client's transaction.
        txn: TxnId,
    },
    /// `iterator_start(start, stop)` → iterator id.
    IteratorStart {
        /// First tid, `None` for the oldest.
        start: Option<Tid>,
        /// Last tid, `None` for the newest.
        stop: Option<Tid>,
    },
    /// `iterator_next(iid)` → transaction tuple or `None`.
    IteratorNext {
        /// The transaction iterator.
        iid: IteratorId,
    },
    /// `iterator_record_start(txn_iid, tid)` → record iterator id.
    IteratorRecordStart {
        /// The transaction iterator.
        txn_iid: IteratorId,
        /// The transaction last returned by it.
        tid: Tid,
    },
    /// `iterator_record_next(iid)` → record tuple or `None`.
    IteratorRecordNext {
        /// The record iterator.
        iid: IteratorId,
    },
    /// `iterator_gc(iids)`, async: forget these iterators.
    IteratorGc {
        /// Iterator ids; entries that are not ints are dropped, since they
        /// cannot name an iterator.
        iids: Vec<IteratorId>,
    },
    /// `server_status()` → [`crate::ServerStatus`] dict.
    ServerStatus,
    /// `set_client_label(label)`: names the client in server logs.
    SetClientLabel {
        /// The label as Python's `str()` would show it.
        label: String,
    },
    /// `ping()` → `None`.
    Ping,
}

/// A parsed client message.
#[derive(Clone, Debug, PartialEq)]
pub enum Incoming {
    /// A keep-alive (msgid -1): ignore it.
    Heartbeat,
    /// A call.
    Call(Call),
}

/// A call with what is needed to answer it.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    /// Echo this in the reply.
    pub msgid: Value,
    /// One-way: send no reply, and close the connection if it fails.
    pub oneway: bool,
    /// What is asked.
    pub request: ServerRequest,
}

impl ServerRequest {
    /// Every method name the parser knows, in ZEO's order: `register` plus
    /// ZEO's `registered_methods`.
    pub const METHODS: &'static [&'static str] = &[
        "register",
        "get_info",
        "lastTransaction",
        "getInvalidations",
        "new_oids",
        "pack",
        "loadBefore",
        "storea",
        "checkCurrentSerialInTransaction",
        "restorea",
        "storeBlobStart",
        "storeBlobChunk",
        "storeBlobEnd",
        "storeBlobShared",
        "deleteObject",
        "tpc_begin",
        "vote",
        "tpc_finish",
        "tpc_abort",
        "history",
        "record_iternext",
        "sendBlob",
        "getTid",
        "loadSerial",
        "new_oid",
        "undoa",
        "undoLog",
        "undoInfo",
        "iterator_start",
        "iterator_next",
        "iterator_record_start",
        "iterator_record_next",
        "iterator_gc",
        "server_status",
        "set_client_label",
        "ping",
    ];

    /// Parses a message from a client.
    ///
    /// ```
    /// use zeo_pickle::Value;
    /// use zeo_protocol::{Incoming, Message, ServerRequest};
    ///
    /// let msg = Message::call(1, "register", vec![Value::Str("1".into()), Value::Int(0)]);
    /// let Incoming::Call(call) = ServerRequest::parse(&msg).unwrap() else { panic!() };
    /// assert_eq!(call.request, ServerRequest::Register { storage: "1".into(), read_only: false });
    /// assert!(!call.oneway);
    /// assert_eq!(ServerRequest::parse(&Message::heartbeat()).unwrap(), Incoming::Heartbeat);
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::UnknownMethod`] for names outside [`ServerRequest::METHODS`]
    /// (ZEO closes the connection), [`Error::BadArguments`] when the
    /// arguments do not fit (ZEO answers a sync call with `TypeError`).
    pub fn parse(msg: &Message) -> Result<Incoming> {
        // ZEO checks the msgid before anything else, whatever the name.
        if msg.is_heartbeat() {
            return Ok(Incoming::Heartbeat);
        }
        let request = Self::parse_call(&msg.method, &msg.args)?;
        Ok(Incoming::Call(Call {
            msgid: msg.msgid.clone(),
            oneway: msg.flags != Flags::None,
            request,
        }))
    }

    /// Parses a method name and its argument tuple.
    ///
    /// # Errors
    ///
    /// As [`ServerRequest::parse`].
    pub fn parse_call(method: &str, args: &Value) -> Result<ServerRequest> {
        let Some(&method) = Self::METHODS.iter().find(|m| **m == method) else {
            return Err(Error::UnknownMethod(method.to_owned()));
        };
        let items = match args {
            Value::Tuple(items) | Value::List(items) => &items[..],
            other => {
                return Err(Error::BadArguments {
                    method: method.to_owned(),
                    reason: format!("arguments must be a tuple, got {}", other.type_name()),
                })
            }
        };
        let a = |required, optional| Args::new(method, items, required, optional);
        use ServerRequest as R;
        Ok(match method {
            "register" => {
                // ZEO 5.0-5.4 clients given credentials send them as a third
                // argument; stock servers fail with TypeError, we ignore it.
                let a = a(2, 1)?;
                R::Register {
                    storage: a.string(0, "storage_id")?,
                    read_only: a.flag(1, false),
                }
            }
            "get_info" => no_args(a(0, 0)?, R::GetInfo),
            "lastTransaction" => no_args(a(0, 0)?, R::LastTransaction),
            "getInvalidations" => R::GetInvalidations {
                tid: a(1, 0)?.tid(0, "tid")?,
            },
            "loadBefore" => {
                let a = a(2, 0)?;
                R::LoadBefore {
                    oid: a.oid(0, "oid")?,
                    before: a.tid(1, "tid")?,
                }
            }
            "loadSerial" => {
                let a = a(2, 0)?;
                R::LoadSerial {
                    oid: a.oid(0, "oid")?,
                    serial: a.tid(1, "serial")?,
                }
            }
            "getTid" => R::GetTid {
                oid: a(1, 0)?.oid(0, "oid")?,
            },
            "history" => {
                let a = a(1, 1)?;
                let size = match a.get(1) {
                    None => 1,
                    Some(_) => usize::try_from(a.int(1, "size")?.max(0)).unwrap_or(usize::MAX),
                };
                R::History {
                    oid: a.oid(0, "oid")?,
                    size,
                }
            }
            "record_iternext" => R::RecordIternext {
                next: a(0, 1)?.opt_oid(0, "next")?,
            },
            "new_oids" => {
                let a = a(0, 1)?;
                let n = match a.get(0) {
                    None => MAX_NEW_OIDS as i64,
                    Some(_) => a.int(0, "n")?,
                };
                R::NewOids {
                    n: n.clamp(1, MAX_NEW_OIDS as i64) as usize,
                }
            }
            "new_oid" => no_args(a(0, 0)?, R::NewOid),
            "pack" => {
                let a = a(1, 1)?;
                R::Pack {
                    time: a.float(0, "t")?,
                    wait: a.flag(1, true),
                }
            }
            "undoLog" => {
                let a = a(2, 0)?;
                R::UndoLog {
                    first: a.int(0, "first")?,
                    last: a.int(1, "last")?,
                }
            }
            "undoInfo" => {
                let a = a(3, 0)?;
                R::UndoInfo {
                    first: a.int(0, "first")?,
                    last: a.int(1, "last")?,
                    specification: undo_spec(&a, 2)?,
                }
            }
            "tpc_begin" => {
                let a = a(4, 2)?;
                let extension = match a.get(3) {
                    Some(v @ Value::Dict(_)) => v.clone(),
                    Some(v) => match dict_call(v) {
                        Some(dict) => dict,
                        // Python's TransactionMetaData takes a falsy
                        // extension as {}.
                        None if !crate::message::truthy(v) => Value::Dict(Vec::new()),
                        None => {
                            return Err(
                                a.error(format!("ext must be a dict, got {}", v.type_name()))
                            )
                        }
                    },
                    None => Value::Dict(Vec::new()),
                };
                R::TpcBegin {
                    txn: a.txn(0)?,
                    user: a.text_bytes(1, "user")?,
                    description: a.text_bytes(2, "description")?,
                    extension,
                    tid: a.opt_tid(4, "tid")?,
                    status: status(&a, 5)?,
                }
            }
            "storea" => {
                let a = a(4, 0)?;
                if let Some(store) = store_not_bytes(&a, "storea")? {
                    return Ok(store);
                }
                R::Storea {
                    oid: a.oid(0, "oid")?,
                    serial: a.store_serial(1, "serial")?,
                    data: a.bytes(2, "data")?,
                    txn: a.txn(3)?,
                }
            }
            "checkCurrentSerialInTransaction" => {
                let a = a(3, 0)?;
                R::CheckCurrentSerial {
                    oid: a.oid(0, "oid")?,
                    serial: a.tid(1, "serial")?,
                    txn: a.txn(2)?,
                }
            }
            "deleteObject" => {
                let a = a(3, 0)?;
                R::DeleteObject {
                    oid: a.oid(0, "oid")?,
                    serial: a.tid(1, "serial")?,
                    txn: a.txn(2)?,
                }
            }
            "restorea" => {
                let a = a(5, 0)?;
                R::Restorea {
                    oid: a.oid(0, "oid")?,
                    serial: a.tid(1, "serial")?,
                    data: a.opt_bytes(2, "data")?,
                    prev_txn: a.opt_tid(3, "prev_txn")?,
                    txn: a.txn(4)?,
                }
            }
            "storeBlobStart" => no_args(a(0, 0)?, R::StoreBlobStart),
            "storeBlobChunk" => R::StoreBlobChunk {
                chunk: a(1, 0)?.bytes(0, "chunk")?,
            },
            "storeBlobEnd" => {
                let a = a(4, 0)?;
                if let Some(store) = store_not_bytes(&a, "storeBlobEnd")? {
                    return Ok(store);
                }
                R::StoreBlobEnd {
                    oid: a.oid(0, "oid")?,
                    serial: a.store_serial(1, "serial")?,
                    data: a.bytes(2, "data")?,
                    txn: a.txn(3)?,
                }
            }
            "storeBlobShared" => {
                let a = a(5, 0)?;
                R::StoreBlobShared {
                    oid: a.oid(0, "oid")?,
                    serial: a.store_serial(1, "serial")?,
                    data: a.bytes(2, "data")?,
                    filename: a.string(3, "filename")?,
                    txn: a.txn(4)?,
                }
            }
            "sendBlob" => {
                let a = a(2, 0)?;
                R::SendBlob {
                    oid: a.oid(0, "oid")?,
                    serial: a.tid(1, "serial")?,
                }
            }
            "vote" => R::Vote {
                txn: a(1, 0)?.txn(0)?,
            },
            "tpc_finish" => R::TpcFinish {
                txn: a(1, 0)?.txn(0)?,
            },
            "tpc_abort" => R::TpcAbort {
                txn: a(1, 0)?.txn(0)?,
            },
            "undoa" => {
                let a = a(2, 0)?;
                R::Undoa {
                    undo_id: a.bytes(0, "trans_id")?,
                    txn: a.txn(1)?,
                }
            }
            "iterator_start" => {
                let a = a(2, 0)?;
                R::IteratorStart {
                    start: a.opt_tid(0, "start")?,
                    stop: a.opt_tid(1, "stop")?,
                }
            }
            "iterator_next" => R::IteratorNext {
                iid: IteratorId(a(1, 0)?.int(0, "iid")?),
            },
            "iterator_record_start" => {
                let a = a(2, 0)?;
                R::IteratorRecordStart {
                    txn_iid: IteratorId(a.int(0, "txn_iid")?),
                    tid: a.tid(1, "tid")?,
                }
            }
            "iterator_record_next" => R::IteratorRecordNext {
                iid: IteratorId(a(1, 0)?.int(0, "iid")?),
            },
            "iterator_gc" => {
                let a = a(1, 0)?;
                let iids = match a.get(0) {
                    Some(
                        Value::Tuple(v) | Value::List(v) | Value::Set(v) | Value::FrozenSet(v),
                    ) => v
                        .iter()
                        .filter_map(|v| match v {
                            Value::Int(i) => Some(IteratorId(*i)),
                            _ => None,
                        })
                        .collect(),
                    Some(other) => {
                        return Err(a.error(format!(
                            "iids must be a sequence, got {}",
                            other.type_name()
                        )))
                    }
                    None => Vec::new(),
                };
                R::IteratorGc { iids }
            }
            "server_status" => no_args(a(0, 0)?, R::ServerStatus),
            "set_client_label" => {
                let a = a(1, 0)?;
                R::SetClientLabel {
                    label: a.get(0).map(python_str).unwrap_or_default(),
                }
            }
            "ping" => no_args(a(0, 0)?, R::Ping),
            other => return Err(Error::UnknownMethod(other.to_owned())),
        })
    }

    /// The wire name of the method.
    pub fn method(&self) -> &'static str {
        use ServerRequest as R;
        match self {
            R::Register { .. } => "register",
            R::GetInfo => "get_info",
            R::LastTransaction => "lastTransaction",
            R::GetInvalidations { .. } => "getInvalidations",
            R::LoadBefore { .. } => "loadBefore",
            R::LoadSerial { .. } => "loadSerial",
            R::GetTid { .. } => "getTid",
            R::History { .. } => "history",
            R::RecordIternext { .. } => "record_iternext",
            R::NewOids { .. } => "new_oids",
            R::NewOid => "new_oid",
            R::Pack { .. } => "pack",
            R::UndoLog { .. } => "undoLog",
            R::UndoInfo { .. } => "undoInfo",
            R::TpcBegin { .. } => "tpc_begin",
            R::Storea { .. } => "storea",
            R::CheckCurrentSerial { .. } => "checkCurrentSerialInTransaction",
            R::DeleteObject { .. } => "deleteObject",
            R::Restorea { .. } => "restorea",
            R::StoreNotBytes { method, .. } => method,
            R::StoreBlobStart => "storeBlobStart",
            R::StoreBlobChunk { .. } => "storeBlobChunk",
            R::StoreBlobEnd { .. } => "storeBlobEnd",
            R::StoreBlobShared { .. } => "storeBlobShared",
            R::SendBlob { .. } => "sendBlob",
            R::Vote { .. } => "vote",
            R::TpcFinish { .. } => "tpc_finish",
            R::TpcAbort { .. } => "tpc_abort",
            R::Undoa { .. } => "undoa",
            R::IteratorStart { .. } => "iterator_start",
            R::IteratorNext { .. } => "iterator_next",
            R::IteratorRecordStart { .. } => "iterator_record_start",
            R::IteratorRecordNext { .. } => "iterator_record_next",
            R::IteratorGc { .. } => "iterator_gc",
            R::ServerStatus => "server_status",
            R::SetClientLabel { .. } => "set_client_label",
            R::Ping => "ping",
        }
    }
}

/// A `(oid, serial, data, id)` store whose `data` is a plain value that
/// is not bytes (text, a number, `None`), the other arguments being valid:
/// [`ServerRequest::StoreNotBytes`]. Containers and objects stay argument
/// errors.
fn store_not_bytes(a: &Args<'_>, method: &'static str) -> Result<Option<ServerRequest>> {
    let plain = matches!(
        a.get(2),
        Some(
            Value::Str(_)
                | Value::Int(_)
                | Value::BigInt(_)
                | Value::Float(_)
                | Value::Bool(_)
                | Value::None
        )
    );
    if !plain {
        return Ok(None);
    }
    let oid = a.oid(0, "oid")?;
    a.store_serial(1, "serial")?;
    let txn = a.txn(3)?;
    Ok(Some(ServerRequest::StoreNotBytes {
        method,
        oid,
        txn,
        type_name: a.get(2).map_or("NoneType", Value::type_name),
    }))
}

/// `builtins.dict(...)` as an extension pickles when it is a dict subclass
/// reducing to `dict` (ZODB's `testTransactionExtensionFromIterator`).
/// Python's server unpickles the call, which its unpickler allows for
/// `builtins`, and so gets a plain dict; this does the same for the forms
/// `dict()`, `dict(mapping)` and `dict(pairs)`.
fn dict_call(value: &Value) -> Option<Value> {
    let Value::Call {
        callable,
        args,
        new_object: false,
    } = value
    else {
        return None;
    };
    match callable.as_ref() {
        Value::Global { module, name }
            if (module == "builtins" || module == "__builtin__") && name == "dict" => {}
        _ => return None,
    }
    let Value::Tuple(args) = args.as_ref() else {
        return None;
    };
    match args.as_slice() {
        [] => Some(Value::Dict(Vec::new())),
        [d @ Value::Dict(_)] => Some(d.clone()),
        [Value::Tuple(items) | Value::List(items)] => {
            let mut pairs: Vec<(Value, Value)> = Vec::with_capacity(items.len());
            for item in items {
                let (Value::Tuple(kv) | Value::List(kv)) = item else {
                    return None;
                };
                let [k, v] = kv.as_slice() else {
                    return None;
                };
                // A repeated key keeps its first place and its last value.
                match pairs.iter_mut().find(|(old, _)| old == k) {
                    Some(slot) => slot.1 = v.clone(),
                    None => pairs.push((k.clone(), v.clone())),
                }
            }
            Some(Value::Dict(pairs))
        }
        _ => None,
    }
}

fn no_args(_: Args<'_>, request: ServerRequest) -> ServerRequest {
    request
}

fn status(a: &Args<'_>, i: usize) -> Result<TxnStatus> {
    let byte = match a.get(i) {
        None => return Ok(TxnStatus::Committed),
        Some(Value::Str(s)) if s.len() == 1 => s.as_bytes()[0],
        Some(Value::Bytes(b)) if b.len() == 1 => b[0],
        Some(other) => {
            return Err(a.error(format!(
                "status must be one character, got {}",
                other.type_name()
            )))
        }
    };
    TxnStatus::from_byte(byte)
        .ok_or_else(|| a.error(format!("unknown transaction status {:?}", char::from(byte))))
}

fn undo_spec(a: &Args<'_>, i: usize) -> Result<Option<UndoSpec>> {
    let pairs = match a.get(i) {
        None | Some(Value::None) => return Ok(None),
        Some(Value::Dict(pairs)) => pairs,
        Some(other) => {
            return Err(a.error(format!(
                "specification must be a dict, got {}",
                other.type_name()
            )))
        }
    };
    if pairs.is_empty() {
        return Ok(None);
    }
    let conditions = pairs
        .iter()
        .map(|(k, v)| {
            let cond =
                prefix_path(v).map_or_else(|| UndoMatch::Equals(v.clone()), UndoMatch::Prefix);
            (k.clone(), cond)
        })
        .collect();
    Ok(Some(UndoSpec { conditions }))
}

/// Recognises a pickled `ZopeUndo.Prefix.Prefix`: a new object of that class
/// whose state holds `path`, the list of path elements.
fn prefix_path(value: &Value) -> Option<Vec<String>> {
    let Value::Build { object, state } = value else {
        return None;
    };
    let Value::Call { callable, .. } = &**object else {
        return None;
    };
    let Value::Global { module, name } = &**callable else {
        return None;
    };
    if module != "ZopeUndo.Prefix" || name != "Prefix" {
        return None;
    }
    let Value::Dict(attrs) = &**state else {
        return None;
    };
    let (_, path) = attrs
        .iter()
        .find(|(k, _)| matches!(k, Value::Str(s) if s == "path"))?;
    let (Value::List(items) | Value::Tuple(items)) = path else {
        return None;
    };
    items
        .iter()
        .map(|v| match v {
            Value::Str(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

/// Roughly Python's `str(value)`, for labels that only reach logs.
fn python_str(value: &Value) -> String {
    match value {
        Value::Str(s) => s.clone(),
        Value::Bytes(b) => format!("b{:?}", String::from_utf8_lossy(b)),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::None => "None".into(),
        other => format!("{other:?}"),
    }
}
