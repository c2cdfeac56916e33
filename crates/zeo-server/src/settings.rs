//! Server-wide settings, the `<zeo>` section of a configuration.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use zeo_auth::ServerAuthenticator;

/// Default [`ServerSettings::reply_backlog_pause`]: 4 MiB.
pub const DEFAULT_REPLY_BACKLOG_PAUSE: usize = 4 * 1024 * 1024;
/// Default [`ServerSettings::max_outgoing_backlog`]: 64 MiB.
pub const DEFAULT_MAX_CLIENT_BACKLOG: usize = 64 * 1024 * 1024;
/// Default [`ServerSettings::max_total_backlog`]: 256 MiB.
pub const DEFAULT_MAX_TOTAL_BACKLOG: usize = 256 * 1024 * 1024;
/// Default [`ServerSettings::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default [`ServerSettings::max_connections_per_address`].
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 256;
/// Default [`ServerSettings::login_timeout`]: 60 seconds.
pub const DEFAULT_LOGIN_TIMEOUT: Duration = Duration::from_secs(60);

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
    /// considered stuck and disconnected (`max-client-backlog`). Replies
    /// stop growing the queue at [`ServerSettings::reply_backlog_pause`];
    /// what can still push it this far is output queued without waiting:
    /// invalidations and `info` messages from other clients' commits. A
    /// reply counts only if the queue was over this before it, so one
    /// reply larger than the cap still goes out; keep it above
    /// `reply_backlog_pause`.
    pub max_outgoing_backlog: usize,
    /// A connection's requests are not read while more than this many bytes
    /// of its output wait to be sent (`reply-backlog-pause`); reading
    /// resumes once the client has taken enough to get below it.
    pub reply_backlog_pause: usize,
    /// While more than this many bytes of output wait to be sent over all
    /// connections together, no connection with output still queued has
    /// its requests read (`max-total-backlog`; 0 = no server-wide cap). A
    /// connection with nothing queued gets one request at a time read, so
    /// clients that never read cannot stall the others for good.
    pub max_total_backlog: usize,
    /// Most connections served at once (`max-connections`; 0 = no cap).
    /// Connections beyond it are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Most connections served at once from one peer IP address
    /// (`max-connections-per-address`; 0 = no cap). Unix-socket peers are
    /// not counted per address.
    pub max_connections_per_address: usize,
    /// Largest number of bytes one transaction may stage between
    /// `tpc_begin` and `vote` (`max-transaction-size`; `None` = no cap).
    /// A transaction past it fails at its vote with a `StorageError` naming
    /// the limit, and what it staged is dropped at once.
    pub max_transaction_size: Option<u64>,
    /// How long a connection may take from being accepted to registering
    /// with a storage, logging in first when authentication is configured
    /// (`login-timeout`; `None` = no limit). It is closed after that.
    pub login_timeout: Option<Duration>,
    /// With authentication configured, whether `ruok` answers the full
    /// status (storage names, counters, last transaction) rather than
    /// liveness only (`public-status`). Without authentication `ruok`
    /// always answers the full status, as ZEO does.
    pub public_status: bool,
    /// Announce msgpack (`M5`) instead of pickle (`Z5`) in the handshake.
    /// Clients choose either way: the server speaks whichever they answer.
    pub msgpack: bool,
    /// Commit logs larger than this move from memory to a temporary file.
    pub commit_log_spill_threshold: usize,
    /// Where commit logs spill to (the system temporary directory if `None`).
    pub temporary_directory: Option<PathBuf>,
    /// Where the ZEO 3/4 monitor server listens (`monitor-address`); no
    /// monitor when `None`. See [`crate::MonitorReport`].
    pub monitor_address: Option<crate::ListenAddress>,
    /// Where the Prometheus metrics endpoint listens (`metrics-address`,
    /// `--metrics`); none when `None`. A bare port binds `127.0.0.1`. See
    /// `docs/operations.md` for what it serves.
    pub metrics_address: Option<crate::ListenAddress>,
    /// ZEO 3/4 `digest` authentication (`authentication-protocol digest`):
    /// when set, a client must log in before `register`, and every later
    /// message in both directions carries a chained MAC. Only zeo-rs
    /// clients can do this; see `docs/auth.md`.
    pub authentication: Option<Arc<ServerAuthenticator>>,
    /// Whether write conflicts on the classes `zeo-conflict` knows (BTrees
    /// buckets and sets, `BTrees.Length.Length`) are resolved here at vote
    /// (`conflict-resolution`, on by default); off, every conflict goes
    /// back to the client, which resolves it with its own classes.
    pub conflict_resolution: bool,
    /// Whether committers share fsyncs (`group-commit`, on by default): the
    /// commit lock is released once the storage has the transaction
    /// written ([`zeo_storage::Storage::tpc_finish_submit`]), so the next
    /// one is written while this one waits for the fsync that covers it;
    /// its reply and invalidations still go out only after that fsync, in
    /// tid order. Off, the lock is held until the transaction is durable
    /// and visible, one fsync per transaction.
    pub group_commit: bool,
    /// TLS on every listener (`<ssl>`): each accepted connection completes
    /// a handshake, within the configuration's handshake timeout, before
    /// the ZEO protocol starts; clients must present a certificate. The
    /// configuration can be reloaded while serving ([`zeo_tls::ServerTls::reload`]).
    /// The monitor stays plain. See `docs/tls.md`.
    pub tls: Option<Arc<zeo_tls::ServerTls>>,
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
            .field("reply_backlog_pause", &self.reply_backlog_pause)
            .field("max_total_backlog", &self.max_total_backlog)
            .field("max_connections", &self.max_connections)
            .field(
                "max_connections_per_address",
                &self.max_connections_per_address,
            )
            .field("max_transaction_size", &self.max_transaction_size)
            .field("login_timeout", &self.login_timeout)
            .field("public_status", &self.public_status)
            .field("msgpack", &self.msgpack)
            .field(
                "commit_log_spill_threshold",
                &self.commit_log_spill_threshold,
            )
            .field("temporary_directory", &self.temporary_directory)
            .field("monitor_address", &self.monitor_address)
            .field("metrics_address", &self.metrics_address)
            .field(
                "authentication_realm",
                &self.authentication.as_ref().map(|a| a.realm()),
            )
            .field("conflict_resolution", &self.conflict_resolution)
            .field("group_commit", &self.group_commit)
            .field("tls", &self.tls.as_ref().map(|t| t.files()))
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
            max_outgoing_backlog: DEFAULT_MAX_CLIENT_BACKLOG,
            reply_backlog_pause: DEFAULT_REPLY_BACKLOG_PAUSE,
            max_total_backlog: DEFAULT_MAX_TOTAL_BACKLOG,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            max_transaction_size: None,
            login_timeout: Some(DEFAULT_LOGIN_TIMEOUT),
            public_status: false,
            msgpack: false,
            commit_log_spill_threshold: crate::txn_log::DEFAULT_SPILL_THRESHOLD,
            temporary_directory: None,
            monitor_address: None,
            metrics_address: None,
            authentication: None,
            conflict_resolution: true,
            group_commit: true,
            tls: None,
        }
    }
}
