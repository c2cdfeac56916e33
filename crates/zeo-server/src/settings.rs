//! Server-wide settings, the `<zeo>` section of a configuration.

use std::path::PathBuf;
use std::time::Duration;

/// How the server behaves towards every storage and client.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// Refuse every write (pack stays allowed), whatever the storages say.
    pub read_only: bool,
    /// Transactions kept for `getInvalidations` (ZEO default 100).
    pub invalidation_queue_size: usize,
    /// When the queue does not reach back far enough, clients whose last
    /// transaction is younger than this get their invalidations by iterating
    /// the storage instead of dropping their cache.
    pub invalidation_age: Option<Duration>,
    /// The longest a transaction may hold the commit lock; the client is
    /// disconnected and its transaction aborted after that.
    pub transaction_timeout: Option<Duration>,
    /// Largest message accepted from a client, in bytes.
    pub max_message_size: usize,
    /// Largest amount of encoded output queued for one client before it is
    /// considered stuck and disconnected.
    pub max_outgoing_backlog: usize,
    /// Announce msgpack (`M5`) instead of pickle (`Z5`) in the handshake.
    /// Clients choose either way: the server speaks whichever they answer.
    pub msgpack: bool,
    /// Commit logs larger than this move from memory to a temporary file.
    pub commit_log_spill_threshold: usize,
    /// Where commit logs spill to (the system temporary directory if `None`).
    pub temporary_directory: Option<PathBuf>,
    /// Where the ZEO 3/4 monitor server listens (`monitor-address`); no
    /// monitor when `None`. See [`crate::monitor`].
    pub monitor_address: Option<crate::ListenAddress>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            read_only: false,
            invalidation_queue_size: 100,
            invalidation_age: None,
            transaction_timeout: None,
            max_message_size: zeo_protocol::DEFAULT_MAX_FRAME,
            max_outgoing_backlog: 512 * 1024 * 1024,
            msgpack: false,
            commit_log_spill_threshold: crate::txn_log::DEFAULT_SPILL_THRESHOLD,
            temporary_directory: None,
            monitor_address: None,
        }
    }
}
