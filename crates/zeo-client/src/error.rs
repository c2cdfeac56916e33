//! The one error type of the client crate.

use std::io;
use std::path::PathBuf;

use zeo_storage::Tid;

/// Result alias for client operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the client can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `ZEO.Exceptions.ClientDisconnected`: no server connection, and none
    /// came back within the wait timeout (or the call needed the server
    /// while it was gone, or a transaction spanned a reconnect).
    #[error("ClientDisconnected: {0}")]
    Disconnected(String),

    /// An error the server reported, or a storage-level error raised here
    /// (conflicts, POSKeyError, read-only, ...).
    #[error(transparent)]
    Storage(#[from] zeo_storage::Error),

    /// ZEO's `AuthError`: the server turned the credentials down
    /// (`Authentication failed`), the client had none to give, or the
    /// realms differ. Retrying with the same options cannot help.
    #[error("AuthError: {0}")]
    Auth(String),

    /// A TLS handshake with a server failed, for this reason (a server
    /// without TLS, an unknown CA, a host name mismatch, an expired
    /// certificate, the server refusing ours, ...). Retrying with the same
    /// configuration will keep failing; the client retries anyway, as ZEO's
    /// does, since the server's certificate may be replaced.
    #[error("TLS: {address}: {reason}")]
    Tls {
        /// The server's address.
        address: String,
        /// Why the handshake failed.
        reason: zeo_tls::FailureReason,
    },

    /// The server said something this client cannot understand.
    #[error("ProtocolError: {0}")]
    Protocol(String),

    /// Another process holds the persistent cache file.
    #[error("the client cache {path} is in use by another process")]
    CacheLocked {
        /// The cache file.
        path: PathBuf,
    },

    /// The cache file could not be created or opened.
    #[error("client cache {path}: {source}")]
    CacheIo {
        /// The cache file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A blob file or directory could not be read or written (a full
    /// disk, say); the path names which.
    #[error("blob {path}: {source}")]
    BlobIo {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A last tid older than the one the cache already holds, while the
    /// cache is not empty (ZEO raises `ValueError` there).
    #[error("new last tid {new} must not be older than the cache's {last}")]
    TidRegression {
        /// The cache's last tid.
        last: Tid,
        /// The tid offered.
        new: Tid,
    },

    /// The cache has seen transactions the server has not: the server was
    /// restored from an older copy, or this is the wrong server. ZEO refuses
    /// such a server; so do we, rather than serve data it never had, once
    /// it has not caught up within `wait_timeout` (a server over a lagging
    /// replica, or one yet to learn of another server's commits, does).
    #[error("client cache is out of sync with the server (cache at {cache}, server at {server}); remove the cache file if this is expected")]
    CacheNewerThanServer {
        /// The cache's last tid.
        cache: Tid,
        /// The server's last tid.
        server: Tid,
    },

    /// The configuration cannot be used (no addresses, bad address, ...).
    #[error("invalid client configuration: {0}")]
    Config(String),

    /// A record could not be decoded or encoded (the `load_record` and
    /// `store_record` helpers).
    #[error(transparent)]
    Record(#[from] zeo_pickle::Error),

    /// The client was closed.
    #[error("the client storage is closed")]
    Closed,
}

impl Error {
    /// Whether the error is the transient "no connection" kind that a retry
    /// after reconnection may cure.
    pub fn is_disconnected(&self) -> bool {
        matches!(self, Error::Disconnected(_))
    }

    /// Whether the error is a write or read conflict (`ConflictError` or
    /// its subclass `ReadConflictError`): retrying the whole transaction
    /// may succeed.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Storage(e) if e.is_conflict())
    }

    /// Whether the error is `ReadOnlyError`: the client or the server it
    /// reached does not accept writes.
    pub fn is_read_only(&self) -> bool {
        matches!(self, Error::Storage(e) if e.is_read_only())
    }

    /// Whether the error is `POSKeyError`: no such object or revision.
    pub fn is_pos_key(&self) -> bool {
        matches!(self, Error::Storage(e) if e.is_pos_key())
    }
}

/// The questions an application asks of an error, answered the same way
/// for both clients' errors: [`Error`] (from [`crate::AsyncClientStorage`],
/// [`crate::ClientStorage::open`] and the commit helpers) and
/// [`zeo_storage::Error`] (from [`crate::ClientStorage`] through the
/// [`zeo_storage::Storage`] trait, where a lost connection is
/// `Storage("ClientDisconnected: ...")`).
///
/// ```
/// use zeo_client::ErrorKind;
/// use zeo_storage::{Oid, Tid};
///
/// let conflict = zeo_storage::Error::Conflict { oid: Oid(1), committed: Tid(2), old: Tid(1) };
/// let lost: zeo_storage::Error = zeo_client::Error::Disconnected("connection lost".into()).into();
/// assert!(conflict.is_conflict() && !conflict.is_disconnected());
/// assert!(lost.is_disconnected());
/// // The same answers from the async client's error type.
/// let conflict = zeo_client::Error::from(conflict);
/// assert!(ErrorKind::is_conflict(&conflict));
/// assert!(zeo_client::Error::Disconnected("x".into()).is_disconnected());
/// assert!(zeo_client::Error::from(zeo_storage::Error::ReadOnly).is_read_only());
/// assert!(zeo_client::Error::from(zeo_storage::Error::pos_key(Oid(9))).is_pos_key());
/// ```
pub trait ErrorKind {
    /// A write or read conflict: retry the transaction.
    fn is_conflict(&self) -> bool;
    /// No connection to a server (`ClientDisconnected`): retry after
    /// reconnection.
    fn is_disconnected(&self) -> bool;
    /// Writes are refused (`ReadOnlyError`).
    fn is_read_only(&self) -> bool;
    /// No such object or revision (`POSKeyError`).
    fn is_pos_key(&self) -> bool;
}

impl ErrorKind for Error {
    fn is_conflict(&self) -> bool {
        Error::is_conflict(self)
    }
    fn is_disconnected(&self) -> bool {
        Error::is_disconnected(self)
    }
    fn is_read_only(&self) -> bool {
        Error::is_read_only(self)
    }
    fn is_pos_key(&self) -> bool {
        Error::is_pos_key(self)
    }
}

impl ErrorKind for zeo_storage::Error {
    fn is_conflict(&self) -> bool {
        zeo_storage::Error::is_conflict(self)
    }
    fn is_disconnected(&self) -> bool {
        is_client_disconnected(self)
    }
    fn is_read_only(&self) -> bool {
        zeo_storage::Error::is_read_only(self)
    }
    fn is_pos_key(&self) -> bool {
        zeo_storage::Error::is_pos_key(self)
    }
}

/// How the message of a lost-connection error starts, in
/// [`Error::Disconnected`]'s display and in the
/// [`zeo_storage::Error::Storage`] it becomes through the `Storage` trait.
pub const CLIENT_DISCONNECTED: &str = "ClientDisconnected:";

/// Whether a storage error returned through the `Storage` trait is ZEO's
/// `ClientDisconnected`: the call could not reach the server, and a retry
/// after reconnection may succeed.
///
/// ```
/// let e: zeo_storage::Error = zeo_client::Error::Disconnected("connection lost".into()).into();
/// assert!(matches!(&e, zeo_storage::Error::Storage(m) if m == "ClientDisconnected: connection lost"));
/// assert!(zeo_client::is_client_disconnected(&e));
/// assert!(!zeo_client::is_client_disconnected(&zeo_storage::Error::ReadOnly));
/// ```
pub fn is_client_disconnected(error: &zeo_storage::Error) -> bool {
    matches!(error, zeo_storage::Error::Storage(m) if m.starts_with(CLIENT_DISCONNECTED))
}

impl From<Error> for zeo_storage::Error {
    /// Maps to the storage error the `Storage` trait speaks.
    ///
    /// `zeo_storage::Error` has no variant for a lost connection; it becomes
    /// `Error::Storage("ClientDisconnected: ...")`, whose message starts
    /// with the ZEO exception name ([`CLIENT_DISCONNECTED`]; see
    /// [`is_client_disconnected`]).
    fn from(e: Error) -> Self {
        match e {
            Error::Storage(inner) => inner,
            Error::Closed => zeo_storage::Error::Closed,
            other => zeo_storage::Error::Storage(other.to_string()),
        }
    }
}
