//! Small typed values that appear in requests and replies.

use std::fmt;

use zeo_pickle::Value;

/// The client's name for its open transaction: Python's `id(transaction)`,
/// an arbitrary integer the server only compares.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct TxnId(pub i64);

impl fmt::Display for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<TxnId> for Value {
    fn from(id: TxnId) -> Value {
        Value::Int(id.0)
    }
}

/// A server-side iterator handle (`iterator_start`,
/// `iterator_record_start`): ids come from one per-connection counter.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct IteratorId(pub i64);

impl From<IteratorId> for Value {
    fn from(id: IteratorId) -> Value {
        Value::Int(id.0)
    }
}

/// One condition of an `undoInfo` specification.
#[derive(Clone, Debug, PartialEq)]
pub enum UndoMatch {
    /// The entry's value must equal this one.
    Equals(Value),
    /// Zope's `ZopeUndo.Prefix.Prefix(path)`: the entry's value, split at
    /// `/`, must start with these path elements. A logged user name after
    /// the last space of the value's last element is ignored, as Zope's
    /// class does.
    Prefix(Vec<String>),
}

/// The `specification` of `undoInfo`: undo-log entries are kept when every
/// key matches (ZODB's `UndoLogCompatible.undoInfo`).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct UndoSpec {
    /// Key and condition pairs, in the order the client sent them.
    pub conditions: Vec<(Value, UndoMatch)>,
}

impl UndoSpec {
    /// Whether an undo-log entry (as the dict [`crate::reply`] builds)
    /// satisfies every condition.
    ///
    /// ```
    /// use zeo_pickle::Value;
    /// use zeo_protocol::{UndoMatch, UndoSpec};
    ///
    /// let spec = UndoSpec {
    ///     conditions: vec![(Value::Str("user_name".into()), UndoMatch::Prefix(vec!["".into(), "app".into()]))],
    /// };
    /// let entry = [(Value::Str("user_name".into()), Value::Bytes(b"/app/site admin".to_vec()))];
    /// assert!(spec.matches(&entry));
    /// assert!(!spec.matches(&[]));
    /// ```
    pub fn matches(&self, entry: &[(Value, Value)]) -> bool {
        self.conditions.iter().all(|(key, cond)| {
            let found = entry.iter().find(|(k, _)| k == key).map(|(_, v)| v);
            match cond {
                UndoMatch::Equals(expected) => found.unwrap_or(&Value::None) == expected,
                UndoMatch::Prefix(path) => match found {
                    Some(Value::Str(s)) => path_has_prefix(s, path),
                    Some(Value::Bytes(b)) => path_has_prefix(&String::from_utf8_lossy(b), path),
                    _ => false,
                },
            }
        })
    }
}

fn path_has_prefix(text: &str, prefix: &[String]) -> bool {
    let mut elements: Vec<&str> = text.split('/').collect();
    if let Some(last) = elements.last_mut() {
        if let Some(space) = last.rfind(' ') {
            *last = &last[..space];
        }
    }
    // Python compares the slice `other[:n]` with the prefix list, so a
    // value with fewer elements never matches.
    elements.len() >= prefix.len() && elements.iter().zip(prefix).all(|(a, b)| *a == b)
}

/// What `get_info` reports about the registered storage.
#[derive(Clone, Debug, PartialEq)]
pub struct StorageInfo {
    /// Number of objects (`len(storage)`).
    pub length: u64,
    /// Size in bytes (`getSize()`).
    pub size: u64,
    /// The storage's name (FileStorage: its path).
    pub name: String,
    /// Whether undo works.
    pub supports_undo: bool,
    /// Whether `record_iternext` works.
    pub supports_record_iternext: bool,
    /// `(module, name)` of every interface the storage provides, most
    /// specific first; the client enables features from this list.
    pub interfaces: Vec<(String, String)>,
}

impl StorageInfo {
    /// The interfaces ZODB's FileStorage lists, in its order; a storage with
    /// the same abilities should announce these.
    pub fn file_storage_interfaces() -> Vec<(String, String)> {
        [
            ("ZODB.interfaces", "IBlobStorageRestoreable"),
            ("ZODB.interfaces", "IBlobStorage"),
            ("ZODB.interfaces", "IStorageRestoreable"),
            ("ZODB.interfaces", "IStorageIteration"),
            ("ZODB.interfaces", "IStorageUndoable"),
            ("ZODB.interfaces", "IStorageCurrentRecordIteration"),
            ("ZODB.interfaces", "IExternalGC"),
            ("ZODB.interfaces", "IStorage"),
            ("zope.interface", "Interface"),
        ]
        .into_iter()
        .map(|(m, n)| (m.to_owned(), n.to_owned()))
        .collect()
    }
}

/// Per-storage server statistics: the `server_status` reply and one entry of
/// the `ruok` report.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerStatus {
    /// Connected clients of this storage.
    pub connections: u64,
    /// `loadBefore` calls.
    pub loads: u64,
    /// `storea`/`deleteObject`/`restorea` calls.
    pub stores: u64,
    /// Finished transactions.
    pub commits: u64,
    /// Aborted transactions.
    pub aborts: u64,
    /// Transactions begun and not yet finished or aborted.
    pub active_txns: u64,
    /// When the commit lock was taken (Unix seconds), `None` when free.
    pub lock_time: Option<f64>,
    /// Votes that failed with a conflict.
    pub conflicts: u64,
    /// Conflicts resolved on the server (ZEO 5 never counts these).
    pub conflicts_resolved: u64,
    /// Syncs the storage made to commit (with group commit, one covers
    /// several transactions); `None` when the storage does not count them
    /// (and then the key is left out, as Python's ZEO does).
    pub fsyncs: Option<u64>,
    /// Server start, as Python's `time.ctime()` prints it.
    pub start: String,
    /// Connections waiting for the commit lock.
    pub waiting: u64,
    /// Whether the transaction-timeout watchdog runs; `None` when no
    /// timeout is configured (ZEO reports the string `'stub'`).
    pub timeout_thread_alive: Option<bool>,
    /// The storage's last transaction.
    pub last_transaction: zeo_storage::Tid,
}
