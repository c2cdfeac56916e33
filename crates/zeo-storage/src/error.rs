//! The one error type of the storage layer.
//!
//! Each variant stands for one ZODB exception class, so that a server can put
//! it on the wire under the class name a Python client expects, with the
//! fields that class carries (`zeo-protocol`'s `wire_error.rs` spells the
//! class names).

use std::io;
use std::path::PathBuf;

use crate::ids::{Oid, Tid};

/// Result alias for storage operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a storage operation can fail with.
///
/// The enum is `#[non_exhaustive]`: backends outside this crate report their
/// own failures through [`Error::Transient`] (retry may succeed) or
/// [`Error::Other`] (it will not), keeping the underlying error as the
/// [`source`](std::error::Error::source) rather than flattening it to text.
///
/// ```
/// use zeo_storage::Error;
///
/// let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "db down");
/// let err = Error::transient(refused);
/// assert!(err.is_transient());
/// assert!(std::error::Error::source(&err).is_some());
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `ZODB.POSException.POSKeyError`: no such object, or no such revision.
    #[error("POSKeyError: {oid}{}", .serial.map(|s| format!(" serial {s}")).unwrap_or_default())]
    PosKey {
        /// The object asked for.
        oid: Oid,
        /// The revision asked for, when one was named.
        serial: Option<Tid>,
    },

    /// `ZODB.POSException.ConflictError`: a store named a serial that is no
    /// longer current.
    #[error("ConflictError: database conflict error (oid {oid}, serial this txn started with {old}, serial currently committed {committed})")]
    Conflict {
        /// The object in conflict.
        oid: Oid,
        /// The revision that is committed now.
        committed: Tid,
        /// The revision the transaction read (the serial it passed to store).
        old: Tid,
    },

    /// `ZODB.POSException.ReadConflictError`: an object checked with
    /// `check_current_serial` has changed.
    #[error("ReadConflictError: database read conflict error (oid {oid}, serial this txn started with {old}, serial currently committed {committed})")]
    ReadConflict {
        /// The object that changed.
        oid: Oid,
        /// The revision that is committed now.
        committed: Tid,
        /// The revision the transaction read.
        old: Tid,
    },

    /// `ZODB.POSException.StorageTransactionError`: a two-phase commit call
    /// out of order or for a transaction that is not the current one.
    #[error("StorageTransactionError: {0}")]
    Transaction(String),

    /// `ZODB.POSException.ReadOnlyError`: a write on a read-only storage.
    #[error("ReadOnlyError: the storage is read-only")]
    ReadOnly,

    /// `ZODB.POSException.UndoError`: the transaction cannot be undone.
    #[error("UndoError: {reason}{}", .oid.map(|o| format!(" (oid {o})")).unwrap_or_default())]
    Undo {
        /// Why not.
        reason: String,
        /// The object that blocks the undo, when one does.
        oid: Option<Oid>,
    },

    /// `ZODB.FileStorage.FileStorageFormatError`: the file is not a sound
    /// Data.fs at `pos`.
    #[error("FileStorageFormatError: {path}: at byte {pos}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// Offset of the damaged record or field.
        pos: u64,
        /// What is wrong there.
        reason: String,
    },

    /// `ZODB.FileStorage.FileStorageError`: a transaction field is too long
    /// for its 16-bit length (user name, description, extension).
    #[error("FileStorageError: {0}")]
    FileStorage(String),

    /// `zc.lockfile.LockError`: another process has the storage open.
    #[error("LockError: couldn't lock {path}: another process has the storage open")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },

    /// `builtins.ValueError`: an argument the storage cannot accept, such as
    /// a pack time earlier than the last pack.
    #[error("ValueError: {0}")]
    InvalidArgument(String),

    /// `builtins.KeyError`: e.g. a garbage-collecting pack of a storage with
    /// no root object.
    #[error("KeyError: {0}")]
    Key(String),

    /// `ZODB.POSException.StorageError`: anything else the storage reports.
    #[error("StorageError: {0}")]
    Storage(String),

    /// `ZODB.POSException.StorageSystemError` for operating-system failures.
    #[error("I/O error: {context}: {source}")]
    Io {
        /// What the storage was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The storage was closed.
    #[error("StorageError: the storage is closed")]
    Closed,

    /// `ZODB.POSException.Unsupported`: the backend lacks the capability
    /// the call needs (undo on a history-free storage, say).
    #[error("Unsupported: {0}")]
    Unsupported(&'static str),

    /// `ZODB.POSException.TransientError`: a failure that retrying the
    /// transaction may get past (a lost database connection, a timeout).
    #[error("TransientError: {0}")]
    Transient(#[source] BoxError),

    /// `ZODB.POSException.StorageError` for any other failure of a backend,
    /// with the backend's own error kept as the source.
    #[error("StorageError: {0}")]
    Other(#[source] BoxError),
}

/// A backend's own error, boxed for [`Error::Transient`] and [`Error::Other`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

impl Error {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Whether this is a write or read conflict (`ConflictError` or its
    /// subclass `ReadConflictError`): the transaction may succeed if
    /// retried from fresh data.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. } | Error::ReadConflict { .. })
    }

    /// Whether this is `ReadOnlyError`.
    pub fn is_read_only(&self) -> bool {
        matches!(self, Error::ReadOnly)
    }

    /// Whether this is `POSKeyError`.
    pub fn is_pos_key(&self) -> bool {
        matches!(self, Error::PosKey { .. })
    }

    /// Whether retrying the transaction may succeed: a conflict or a
    /// [`Error::Transient`] failure.
    pub fn is_transient(&self) -> bool {
        self.is_conflict() || matches!(self, Error::Transient(_))
    }

    /// Wraps a backend error that retrying may get past.
    pub fn transient(source: impl Into<BoxError>) -> Self {
        Error::Transient(source.into())
    }

    /// Wraps any other backend error, keeping it as the source.
    pub fn other(source: impl Into<BoxError>) -> Self {
        Error::Other(source.into())
    }

    /// A POSKeyError for an oid.
    pub fn pos_key(oid: Oid) -> Self {
        Error::PosKey { oid, serial: None }
    }
}
