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
    /// such a server; so do we, rather than serve data it never had.
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
