//! Server-wide settings, the `<zeo>` section of a configuration.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use zeo_auth::ServerAuthenticator;

/// How the server behaves towards every storage and client.
#[derive(Clone)]
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
    /// ZEO 3/4 `digest` authentication (`authentication-protocol digest`):
    /// when set, a client must log in before `register`, and every later
    /// message in both directions carries a chained MAC. Only zeo-rs
    /// clients can do this; see `docs/auth.md`.
    pub authentication: Option<Arc<ServerAuthenticator>>,
}

impl fmt::Debug for ServerSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Written out so that the password hashes the authenticator holds
        // never reach a log: only the realm is shown.
        f.debug_struct("ServerSettings")
            .field("read_only", &self.read_only)
            .field("invalidation_queue_size", &self.invalidation_queue_size)
            .field("invalidation_age", &self.invalidation_age)
            .field("transaction_timeout", &self.transaction_timeout)
            .field("max_message_size", &self.max_message_size)
            .field("max_outgoing_backlog", &self.max_outgoing_backlog)
            .field("msgpack", &self.msgpack)
            .field(
                "commit_log_spill_threshold",
                &self.commit_log_spill_threshold,
            )
            .field("temporary_directory", &self.temporary_directory)
            .field("monitor_address", &self.monitor_address)
            .field(
                "authentication_realm",
                &self.authentication.as_ref().map(|a| a.realm()),
            )
            .finish()
    }
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
            authentication: None,
        }
    }
}
