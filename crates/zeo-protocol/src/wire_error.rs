//! Exceptions as they travel in ZEO 5 error replies:
//! `(dotted_class_path, exc.__dict__ or exc.args)`.
//!
//! The Python client rebuilds known classes from this pair
//! (`ZEO.asyncio.client.exc_factories`): `POSKeyError`, `ReadOnlyError`,
//! `StorageTransactionError`, `KeyError` and `TypeError` by splatting the
//! args tuple; `ConflictError` and `ReadConflictError` from a dict with
//! `message`, `oid`, `serials` (and optionally `class_name`);
//! `BTreesConflictError` from `p1..p3, reason`; `MultipleUndoErrors` from
//! `_errs`. Anything else becomes `ZEO.Exceptions.ServerException(class,
//! fields)`. So the exact field shapes below matter.

use zeo_pickle::Value;
use zeo_storage::{Error as StorageError, Oid, Tid};

use crate::types::TxnId;

/// An exception to send to, or received from, the peer.
///
/// ```
/// use zeo_pickle::Value;
/// use zeo_protocol::WireError;
/// use zeo_storage::{Error, Oid};
///
/// let wire = WireError::from(&Error::pos_key(Oid(0)));
/// assert_eq!(wire.class, "ZODB.POSException.POSKeyError");
/// assert_eq!(wire.fields, Value::Tuple(vec![Value::Bytes(vec![0; 8])]));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct WireError {
    /// Dotted path of the exception class, e.g.
    /// `ZODB.POSException.ConflictError`.
    pub class: String,
    /// The instance's non-empty `__dict__`, else its `args` tuple.
    pub fields: Value,
}

fn s(text: &str) -> Value {
    Value::Str(text.to_owned())
}

fn id(bytes: [u8; 8]) -> Value {
    Value::Bytes(bytes.to_vec())
}

impl WireError {
    /// An exception of class `class` with constructor arguments `args`.
    pub fn with_args(class: &str, args: Vec<Value>) -> Self {
        WireError {
            class: class.to_owned(),
            fields: Value::Tuple(args),
        }
    }

    /// `builtins.TypeError(message)`: what Python raises for a call with
    /// arguments that do not fit the signature.
    pub fn type_error(message: &str) -> Self {
        Self::with_args("builtins.TypeError", vec![s(message)])
    }

    /// `builtins.ValueError(message)`: unknown storage, duplicate register,
    /// bad `storeBlobShared` file name.
    pub fn value_error(message: &str) -> Self {
        Self::with_args("builtins.ValueError", vec![s(message)])
    }

    /// `builtins.KeyError(key)`: e.g. an unknown iterator id.
    pub fn key_error(key: Value) -> Self {
        Self::with_args("builtins.KeyError", vec![key])
    }

    /// `builtins.AttributeError` for a method ZEO lists but its server
    /// object lacks (`new_oid`; `record_iternext` on storages without it).
    pub fn no_attribute(name: &str) -> Self {
        Self::with_args(
            "builtins.AttributeError",
            vec![Value::Str(format!(
                "'ZEOStorage' object has no attribute '{name}'"
            ))],
        )
    }

    /// `builtins.AssertionError(message)`: `tpc_finish` without a vote.
    pub fn assertion_error(message: &str) -> Self {
        Self::with_args("builtins.AssertionError", vec![s(message)])
    }

    /// `builtins.Exception(message)`: an out-of-order
    /// `iterator_record_start`.
    pub fn exception(message: &str) -> Self {
        Self::with_args("builtins.Exception", vec![s(message)])
    }

    /// What ZEO sends when a reply cannot be encoded:
    /// `builtins.ValueError("Couldn't pickle response")`.
    pub fn unencodable_reply() -> Self {
        Self::value_error("Couldn't pickle response")
    }

    /// `StorageTransactionError(current, given)`: a call named transaction
    /// `given` while `current` (or none) is open.
    pub fn transaction_mismatch(current: Option<TxnId>, given: TxnId) -> Self {
        Self::with_args(
            "ZODB.POSException.StorageTransactionError",
            vec![current.map_or(Value::None, Value::from), given.into()],
        )
    }

    /// `StorageTransactionError(message)`, e.g. "Already voting (locked)".
    pub fn storage_transaction(message: &str) -> Self {
        Self::with_args(
            "ZODB.POSException.StorageTransactionError",
            vec![s(message)],
        )
    }

    /// `ZODB.POSException.StorageError(message)`: a request the server
    /// could not carry out (a transaction over `max-transaction-size`, a
    /// failed vote, a reply it cannot build, too many open iterators).
    pub fn storage_error(message: &str) -> Self {
        Self::with_args("ZODB.POSException.StorageError", vec![s(message)])
    }

    /// `ZODB.POSException.ReadOnlyError()`: a write on a read-only
    /// connection or storage.
    pub fn read_only() -> Self {
        Self::from(&StorageError::ReadOnly)
    }

    /// `ZODB.POSException.Unsupported(message)`: a feature the server does
    /// not offer (blobs).
    pub fn unsupported(message: &str) -> Self {
        Self::with_args("ZODB.POSException.Unsupported", vec![s(message)])
    }

    /// `ZEO.Exceptions.AuthError(message)`: `register` before logging in.
    pub fn auth_error(message: &str) -> Self {
        Self::with_args("ZEO.Exceptions.AuthError", vec![s(message)])
    }

    /// What a failed `auth_response` raises: `builtins.LookupError` for a
    /// user the password database does not know, `builtins.ValueError` for
    /// anything else (a stale challenge, a malformed response).
    pub fn login_failed(unknown_user: bool, message: &str) -> Self {
        let class = if unknown_user {
            "builtins.LookupError"
        } else {
            "builtins.ValueError"
        };
        Self::with_args(class, vec![s(message)])
    }

    /// A `ConflictError` with its attribute dict. `class_name` is the
    /// dotted class of the conflicting object when known (ZODB derives it
    /// from the stored pickle), `None` otherwise.
    pub fn conflict(oid: Oid, committed: Tid, old: Tid, class_name: Option<&str>) -> Self {
        conflict_dict(
            "ZODB.POSException.ConflictError",
            "database conflict error",
            oid,
            committed,
            old,
            class_name,
        )
    }

    /// A `ConflictError` as ZODB raises it from a failed store: the
    /// `class_name` is read from the stored record's class pickle
    /// (`get_pickle_metadata`), `"."` when the record does not say.
    ///
    /// ```
    /// use zeo_pickle::Value;
    /// use zeo_protocol::WireError;
    /// use zeo_storage::{Oid, Tid};
    ///
    /// let record = b"\x80\x03cpersistent.mapping\nPersistentMapping\nq\x00.";
    /// let e = WireError::conflict_for_record(Oid(1), Tid(2), Tid(1), record);
    /// assert_eq!(e.fields.get("class_name"), Some(&Value::str("persistent.mapping.PersistentMapping")));
    /// ```
    pub fn conflict_for_record(oid: Oid, committed: Tid, old: Tid, record: &[u8]) -> Self {
        let class_name = zeo_pickle::class_of(record).map_or_else(
            || ".".to_owned(),
            |(module, name)| format!("{module}.{name}"),
        );
        Self::conflict(oid, committed, old, Some(&class_name))
    }

    /// The `(class_path, fields)` pair carried by an error reply.
    pub fn to_value(&self) -> Value {
        Value::Tuple(vec![Value::Str(self.class.clone()), self.fields.clone()])
    }

    /// Reads the value of an error reply.
    ///
    /// Besides ZEO 5's `(class_path, fields)` it takes ZEO 3/4's
    /// `(ExceptionClass, instance)`, where the class is a pickled global.
    pub fn from_value(value: &Value) -> Option<Self> {
        let (Value::Tuple(items) | Value::List(items)) = value else {
            return None;
        };
        match items.as_slice() {
            [Value::Str(class), fields] => Some(WireError {
                class: class.clone(),
                fields: fields.clone(),
            }),
            [Value::Global { module, name }, instance, ..] => Some(WireError {
                class: format!("{module}.{name}"),
                fields: instance.clone(),
            }),
            _ => None,
        }
    }

    /// The storage error a Rust client should raise for this exception, so
    /// callers see the same variants a local storage gives them.
    ///
    /// ```
    /// use zeo_protocol::WireError;
    /// use zeo_storage::{Error, Oid, Tid};
    ///
    /// let sent = Error::Conflict { oid: Oid(1), committed: Tid(9), old: Tid(5) };
    /// let back = WireError::from(&sent).to_storage_error();
    /// assert!(matches!(back, Error::Conflict { oid: Oid(1), committed: Tid(9), old: Tid(5) }));
    /// ```
    pub fn to_storage_error(&self) -> StorageError {
        let args: &[Value] = match &self.fields {
            Value::Tuple(items) | Value::List(items) => items,
            _ => &[],
        };
        let field = |key: &str| match &self.fields {
            Value::Dict(pairs) => pairs
                .iter()
                .find(|(k, _)| matches!(k, Value::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        };
        let as_oid = |v: Option<&Value>| match v {
            Some(Value::Bytes(b)) => Oid::from_slice(b),
            _ => None,
        };
        let serials = || match field("serials") {
            Some(Value::Tuple(pair) | Value::List(pair)) => match pair.as_slice() {
                [Value::Bytes(a), Value::Bytes(b)] => Tid::from_slice(a).zip(Tid::from_slice(b)),
                _ => None,
            },
            _ => None,
        };
        let short = self.class.rsplit('.').next().unwrap_or(&self.class);
        match short {
            "POSKeyError" => {
                let mut ids = args.iter().filter_map(|v| match v {
                    Value::Bytes(b) => Some(b),
                    _ => None,
                });
                if let Some(oid) = ids.next().and_then(|b| Oid::from_slice(b)) {
                    let serial = ids.next().and_then(|b| Tid::from_slice(b));
                    return StorageError::PosKey { oid, serial };
                }
            }
            "ConflictError" | "ReadConflictError" => {
                if let (Some(oid), Some((committed, old))) = (as_oid(field("oid")), serials()) {
                    return if short == "ConflictError" {
                        StorageError::Conflict {
                            oid,
                            committed,
                            old,
                        }
                    } else {
                        StorageError::ReadConflict {
                            oid,
                            committed,
                            old,
                        }
                    };
                }
            }
            "ReadOnlyError" => return StorageError::ReadOnly,
            "StorageTransactionError" => return StorageError::Transaction(self.describe()),
            "UndoError" | "MultipleUndoErrors" => {
                let reason = match field("_reason") {
                    Some(Value::Str(r)) => r.clone(),
                    _ => self.describe(),
                };
                return StorageError::Undo {
                    reason,
                    oid: as_oid(field("_oid")),
                };
            }
            _ => {}
        }
        match self.class.as_str() {
            "builtins.ValueError" => StorageError::InvalidArgument(self.describe()),
            "builtins.KeyError" => StorageError::Key(self.describe()),
            _ => StorageError::Storage(format!("{}: {}", self.class, self.describe())),
        }
    }

    /// The exception's message as Python would print a one-argument
    /// exception, else a debug rendering of the fields.
    fn describe(&self) -> String {
        match &self.fields {
            Value::Tuple(items) if items.len() == 1 => match &items[0] {
                Value::Str(s) => s.clone(),
                other => format!("{other:?}"),
            },
            other => format!("{other:?}"),
        }
    }
}

fn conflict_dict(
    class: &str,
    message: &str,
    oid: Oid,
    committed: Tid,
    old: Tid,
    class_name: Option<&str>,
) -> WireError {
    // Key order follows ConflictError.__init__'s assignments.
    WireError {
        class: class.to_owned(),
        fields: Value::Dict(vec![
            (s("message"), s(message)),
            (s("oid"), id(oid.to_bytes())),
            (s("class_name"), class_name.map_or(Value::None, s)),
            (
                s("serials"),
                Value::Tuple(vec![id(committed.to_bytes()), id(old.to_bytes())]),
            ),
        ]),
    }
}

/// The dotted name of the Python exception class a storage error stands
/// for: what a ZEO client raises for it.
///
/// ```
/// use zeo_protocol::python_class;
/// use zeo_storage::{Error as StorageError, Oid};
/// assert_eq!(python_class(&StorageError::PosKey { oid: Oid(1), serial: None }), "ZODB.POSException.POSKeyError");
/// ```
pub fn python_class(err: &StorageError) -> &'static str {
    match err {
        StorageError::PosKey { .. } => "ZODB.POSException.POSKeyError",
        StorageError::Conflict { .. } => "ZODB.POSException.ConflictError",
        StorageError::ReadConflict { .. } => "ZODB.POSException.ReadConflictError",
        StorageError::Transaction(_) => "ZODB.POSException.StorageTransactionError",
        StorageError::ReadOnly => "ZODB.POSException.ReadOnlyError",
        StorageError::Undo { .. } => "ZODB.POSException.UndoError",
        StorageError::Format { .. } => "ZODB.FileStorage.FileStorage.FileStorageFormatError",
        StorageError::FileStorage(_) => "ZODB.FileStorage.FileStorage.FileStorageError",
        StorageError::Locked { .. } => "zc.lockfile.LockError",
        StorageError::InvalidArgument(_) => "builtins.ValueError",
        StorageError::Key(_) => "builtins.KeyError",
        StorageError::Storage(_) | StorageError::Closed => "ZODB.POSException.StorageError",
        StorageError::Io { .. } => "ZODB.POSException.StorageSystemError",
        StorageError::Unsupported(_) => "ZODB.POSException.Unsupported",
        StorageError::Transient(_) => "ZODB.POSException.TransientError",
        // `Other`, and kinds added later: the base class of them all.
        _ => "ZODB.POSException.StorageError",
    }
}

impl From<&StorageError> for WireError {
    fn from(err: &StorageError) -> Self {
        let class = python_class(err);
        let args = |args: Vec<Value>| WireError::with_args(class, args);
        match err {
            StorageError::PosKey { oid, serial } => {
                let mut fields = vec![id(oid.to_bytes())];
                fields.extend(serial.map(|t| id(t.to_bytes())));
                args(fields)
            }
            StorageError::Conflict {
                oid,
                committed,
                old,
            } => WireError::conflict(*oid, *committed, *old, None),
            StorageError::ReadConflict {
                oid,
                committed,
                old,
            } => conflict_dict(
                class,
                "database read conflict error",
                *oid,
                *committed,
                *old,
                None,
            ),
            StorageError::Transaction(msg) => args(vec![s(msg)]),
            StorageError::ReadOnly => args(vec![]),
            // UndoError keeps its reason and oid as attributes, so its
            // non-empty __dict__ is what travels. FileStorage collects the
            // failures of single objects into MultipleUndoErrors, the only
            // undo error the Python client rebuilds (from `_errs`, a list of
            // `(oid, reason)` pairs); anything else would reach it as a
            // ServerException that `except UndoError` does not catch.
            StorageError::Undo {
                reason,
                oid: Some(oid),
            } => WireError {
                class: "ZODB.POSException.MultipleUndoErrors".to_owned(),
                fields: Value::Dict(vec![
                    (s("_reason"), s(reason)),
                    (s("_oid"), id(oid.to_bytes())),
                    (
                        s("_errs"),
                        Value::List(vec![Value::Tuple(vec![id(oid.to_bytes()), s(reason)])]),
                    ),
                ]),
            },
            StorageError::Undo { reason, oid: None } => WireError {
                class: class.to_owned(),
                fields: Value::Dict(vec![(s("_reason"), s(reason)), (s("_oid"), Value::None)]),
            },
            StorageError::Format { path, pos, reason } => args(vec![
                Value::Str(path.display().to_string()),
                Value::Int(i64::try_from(*pos).unwrap_or(i64::MAX)),
                s(reason),
            ]),
            StorageError::Locked { path } => args(vec![Value::Str(format!(
                "Couldn't lock {:?}",
                path.display().to_string()
            ))]),
            StorageError::FileStorage(msg)
            | StorageError::InvalidArgument(msg)
            | StorageError::Key(msg)
            | StorageError::Storage(msg) => args(vec![s(msg)]),
            // I/O, closed, and whatever a backend reports: its message.
            _ => args(vec![Value::Str(err.to_string())]),
        }
    }
}

impl From<StorageError> for WireError {
    fn from(err: StorageError) -> Self {
        WireError::from(&err)
    }
}
