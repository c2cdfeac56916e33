//! The one error type of the server crate.

use std::io;

/// Result alias for server operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What setting up or running a server can fail with. Problems with single
/// clients never surface here: they are logged and cost that client its
/// connection.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No storage was configured.
    #[error("a server needs at least one storage")]
    NoStorages,

    /// Two storages were given the same name.
    #[error("storage name {0:?} is used twice")]
    DuplicateStorage(String),

    /// An address could not be parsed.
    #[error("bad address {address:?}: {reason}")]
    BadAddress {
        /// The address as given.
        address: String,
        /// What is wrong with it.
        reason: String,
    },

    /// Binding a listening socket failed.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// Another server already answers at this address.
    #[error("address {0} already in use")]
    AddressInUse(String),

    /// Something other than a socket is at a Unix socket address: it is
    /// left alone, and the server does not start.
    #[error("address {0} in use / not a socket: refusing to replace it")]
    NotASocket(String),

    /// `serve` was called on a server that serves already.
    #[error("the server is already serving")]
    AlreadyServing,

    /// The task serving the server ended before its shutdown finished
    /// (its runtime shut down, or it was aborted).
    #[error("the server task ended before its shutdown finished: {0}")]
    Stopped(String),

    /// Closing a storage at shutdown failed.
    #[error("closing storage {name:?}: {source}")]
    Close {
        /// The storage's name.
        name: String,
        /// What the storage reported.
        #[source]
        source: zeo_storage::Error,
    },

    /// A monitor report (see [`crate::MonitorReport`]) that does not parse.
    #[error("monitor report line {line}: {reason}")]
    MonitorReport {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },

    /// Another I/O failure.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}
