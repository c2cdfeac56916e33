//! The server configuration file (`runzeo -C`): ZEO's `schema.xml` with
//! `<zeo>`, storages, `<eventlog>` and `<runner>`.

use std::path::{Path, PathBuf};

use crate::datatypes::{parse_float, ByteSize, Interval, SocketAddress};
use crate::error::{Error, Location, Result};
use crate::logging::EventLog;
use crate::schema::{key, Checked, KeySpec};
use crate::ssl::ServerSsl;
use crate::storage::{StorageConfig, OTHER_ZODB_STORAGES, SERVABLE_STORAGES};
use crate::support::{self, Unsupported};
use crate::syntax::{self, Section};

/// ZEO's default `invalidation-queue-size`.
pub const DEFAULT_INVALIDATION_QUEUE_SIZE: u64 = 100;

/// Default `max-message-size` (ours; ZEO 5 has no limit): 256 MiB.
///
/// Large enough for any object record ZODB would store without warning
/// (its `large-record-size` warning starts at 16 MiB) with ample headroom,
/// small enough that a hostile length prefix cannot make a connection
/// allocate gigabytes.
pub const DEFAULT_MAX_MESSAGE_SIZE: ByteSize = ByteSize(256 * ByteSize::MB);

/// Smallest accepted `max-message-size`: blob uploads arrive in 59000-byte
/// chunks plus framing, and anything near that would break ordinary use.
pub const MIN_MAX_MESSAGE_SIZE: ByteSize = ByteSize(ByteSize::MB);

/// Largest accepted `max-message-size`: the frame length is a `u32`.
pub const MAX_MAX_MESSAGE_SIZE: ByteSize = ByteSize(u32::MAX as u64);

/// Default `reply-backlog-pause` (ours): 4 MiB.
pub const DEFAULT_REPLY_BACKLOG_PAUSE: ByteSize = ByteSize(4 * ByteSize::MB);

/// Default `max-client-backlog` (ours): 64 MiB.
pub const DEFAULT_MAX_CLIENT_BACKLOG: ByteSize = ByteSize(64 * ByteSize::MB);

/// Default `max-total-backlog` (ours): 256 MiB.
pub const DEFAULT_MAX_TOTAL_BACKLOG: ByteSize = ByteSize(256 * ByteSize::MB);

/// Default `max-connections` (ours).
pub const DEFAULT_MAX_CONNECTIONS: u64 = 1024;

/// Default `max-connections-per-address` (ours).
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: u64 = 256;

/// Default `login-timeout` (ours): 60 seconds.
pub const DEFAULT_LOGIN_TIMEOUT: Interval = Interval(60);

/// The `<zeo>` section: how the server listens and behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct ZeoConfig {
    /// Listening address (required). A bare host means port 0, as in `runzeo`.
    pub address: SocketAddress,
    /// Refuse all writes, whatever the storages allow (default false).
    pub read_only: bool,
    /// Transactions remembered for quick client cache verification (default 100).
    pub invalidation_queue_size: u64,
    /// Serve quick verification by iterating the storage for clients last
    /// seen at most this many seconds ago (ZEO: unset).
    pub invalidation_age: Option<f64>,
    /// Longest a transaction may hold the commit lock before its client is
    /// disconnected (ZEO: unset = no limit). ZEO takes whole seconds; we also
    /// accept time-interval suffixes.
    pub transaction_timeout: Option<Interval>,
    /// Where to write the process id (ZEO: `$INSTANCE/var/ZEO.pid` under zdaemon).
    pub pid_filename: Option<PathBuf>,
    /// Send conflicts to clients for resolution there (default false).
    pub client_conflict_resolution: bool,
    /// Resolve conflicts on BTrees buckets and sets and `BTrees.Length`
    /// in the server without Python (`native-conflict-resolution`, default
    /// true); other classes always go back to the client.
    pub native_conflict_resolution: bool,
    /// Let several transactions share one fsync (`group-commit`, default
    /// true): the commit lock is released once a transaction is written,
    /// and `tpc_finish` still answers only once it is durable. `false`
    /// holds the lock through each transaction's own fsync.
    pub group_commit: bool,
    /// Offer the msgpack encoding; `None` defers to the `ZEO_MSGPACK`
    /// environment variable as ZEO does.
    pub msgpack: Option<bool>,
    /// TLS settings; plain TCP when absent.
    pub ssl: Option<ServerSsl>,
    /// Largest protocol message accepted (ours; default 256MB).
    pub max_message_size: ByteSize,
    /// ZEO 3/4 monitor server address.
    pub monitor_address: Option<SocketAddress>,
    /// Where the Prometheus metrics endpoint listens (`metrics-address`, a
    /// zeo-rs key); a bare port means `127.0.0.1`.
    pub metrics_address: Option<SocketAddress>,
    /// ZEO 3/4 authentication protocol name (e.g. `digest`).
    pub authentication_protocol: Option<String>,
    /// ZEO 3/4 password database.
    pub authentication_database: Option<PathBuf>,
    /// ZEO 3/4 authentication realm.
    pub authentication_realm: Option<String>,
    /// ZEO 4 server key; parsed for compatibility, it has no effect.
    pub drop_cache_rather_verify: bool,
    /// Stop reading a connection's requests while more than this much of
    /// its output waits to be sent (ours; default 4MB).
    pub reply_backlog_pause: ByteSize,
    /// Disconnect a client whose queued output grows past this (ours;
    /// default 64MB).
    pub max_client_backlog: ByteSize,
    /// Stop reading every connection's requests while more than this much
    /// output waits to be sent over all connections (ours; default 256MB;
    /// 0 = no cap).
    pub max_total_backlog: ByteSize,
    /// Most connections served at once (ours; default 1024; 0 = no cap).
    pub max_connections: u64,
    /// Most connections served at once from one IP address (ours; default
    /// 256; 0 = no cap).
    pub max_connections_per_address: u64,
    /// Most bytes one transaction may stage before its vote (ours; `None`,
    /// written `0` or left out, = no cap).
    pub max_transaction_size: Option<ByteSize>,
    /// How long a connection may take to register (and log in, with
    /// authentication) before it is closed (ours; default 60s; `0s`
    /// disables).
    pub login_timeout: Interval,
    /// With authentication configured, let `ruok` answer the full status
    /// rather than liveness only (ours; default false).
    pub public_status: bool,
}

impl ZeoConfig {
    /// Settings listening on `address` with every other key at ZEO's default.
    pub fn new(address: SocketAddress) -> Self {
        ZeoConfig {
            address,
            read_only: false,
            invalidation_queue_size: DEFAULT_INVALIDATION_QUEUE_SIZE,
            invalidation_age: None,
            transaction_timeout: None,
            pid_filename: None,
            client_conflict_resolution: false,
            native_conflict_resolution: true,
            group_commit: true,
            msgpack: None,
            ssl: None,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            monitor_address: None,
            metrics_address: None,
            authentication_protocol: None,
            authentication_database: None,
            authentication_realm: None,
            drop_cache_rather_verify: false,
            reply_backlog_pause: DEFAULT_REPLY_BACKLOG_PAUSE,
            max_client_backlog: DEFAULT_MAX_CLIENT_BACKLOG,
            max_total_backlog: DEFAULT_MAX_TOTAL_BACKLOG,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            max_transaction_size: None,
            login_timeout: DEFAULT_LOGIN_TIMEOUT,
            public_status: false,
        }
    }
}

/// A whole server configuration file.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// The file name or source name the configuration came from.
    pub source: String,
    /// The `<zeo>` section.
    pub zeo: ZeoConfig,
    /// Served storages in file order, with unique names.
    pub storages: Vec<StorageConfig>,
    /// The `<eventlog>` section, if any (without one, `runzeo` logs to
    /// stderr at `info` with [`crate::DEFAULT_LOG_FORMAT`]).
    pub eventlog: Option<EventLog>,
    /// The zdaemon `<runner>` section, checked against zdaemon's keys and
    /// otherwise kept as parsed.
    pub runner: Option<Section>,
    /// Settings present that zeo-rs does not honour; programs should warn.
    pub unsupported: Vec<Unsupported>,
}

const ZEO_KEYS: &[KeySpec] = &[
    key("address"),
    key("read-only"),
    key("invalidation-queue-size"),
    key("invalidation-age"),
    key("transaction-timeout"),
    key("pid-filename"),
    key("client-conflict-resolution"),
    key("native-conflict-resolution"),
    key("group-commit"),
    key("msgpack"),
    key("max-message-size"),
    key("monitor-address"),
    key("metrics-address"),
    key("authentication-protocol"),
    key("authentication-database"),
    key("authentication-realm"),
    key("drop-cache-rather-verify"),
    key("reply-backlog-pause"),
    key("max-client-backlog"),
    key("max-total-backlog"),
    key("max-connections"),
    key("max-connections-per-address"),
    key("max-transaction-size"),
    key("login-timeout"),
    key("public-status"),
];

/// zdaemon's `<runner>` keys (`zdaemon/component.xml`).
const RUNNER_KEYS: &[KeySpec] = &[
    key("program"),
    key("python"),
    key("zdrun"),
    key("socket-name"),
    key("daemon"),
    key("directory"),
    key("backoff-limit"),
    key("forever"),
    key("exit-codes"),
    key("start-test-program"),
    key("start-timeout"),
    key("stop-timeout"),
    key("user"),
    key("umask"),
    key("hang-around"),
    key("default-to-interactive"),
    key("logfile"),
    key("transcript"),
    key("prompt"),
];

/// Accepts a plain number of seconds (ZEO's `integer`) or a time interval.
fn parse_timeout(s: &str) -> Result<Interval, String> {
    s.parse::<Interval>()
}

/// A `max-message-size` value (server and client alike), within
/// [`MIN_MAX_MESSAGE_SIZE`]..=[`MAX_MAX_MESSAGE_SIZE`].
pub(crate) fn parse_max_message_size(s: &str) -> Result<ByteSize, String> {
    let size = s.parse::<ByteSize>()?;
    if size < MIN_MAX_MESSAGE_SIZE || size > MAX_MAX_MESSAGE_SIZE {
        return Err(format!(
            "must be between {MIN_MAX_MESSAGE_SIZE} and {} bytes",
            MAX_MAX_MESSAGE_SIZE.0
        ));
    }
    Ok(size)
}

/// A byte size that must not be zero.
fn parse_nonzero_size(s: &str) -> Result<ByteSize, String> {
    let size = s.parse::<ByteSize>()?;
    if size.0 == 0 {
        return Err("must be more than 0 bytes".into());
    }
    Ok(size)
}

/// A byte size where `0` means "no limit".
fn parse_optional_size(s: &str) -> Result<Option<ByteSize>, String> {
    let size = s.parse::<ByteSize>()?;
    Ok((size.0 != 0).then_some(size))
}

fn parse_age(s: &str) -> Result<f64, String> {
    let v = parse_float(s)?;
    if !v.is_finite() || v < 0.0 {
        return Err("must be a non-negative number of seconds".into());
    }
    Ok(v)
}

impl ZeoConfig {
    fn from_section(section: &Section) -> Result<Self> {
        let c = Checked::new(section, ZEO_KEYS, &["ssl"])?;
        let ssl = c
            .single_child("ssl")?
            .map(ServerSsl::from_section)
            .transpose()?;
        Ok(ZeoConfig {
            address: c.require("address", SocketAddress::parse_binding)?,
            read_only: c.bool("read-only")?.unwrap_or(false),
            invalidation_queue_size: c
                .count("invalidation-queue-size")?
                .unwrap_or(DEFAULT_INVALIDATION_QUEUE_SIZE),
            invalidation_age: c.get("invalidation-age", parse_age)?,
            transaction_timeout: c.get("transaction-timeout", parse_timeout)?,
            pid_filename: c.path("pid-filename"),
            client_conflict_resolution: c.bool("client-conflict-resolution")?.unwrap_or(false),
            native_conflict_resolution: c.bool("native-conflict-resolution")?.unwrap_or(true),
            group_commit: c.bool("group-commit")?.unwrap_or(true),
            msgpack: c.bool("msgpack")?,
            ssl,
            max_message_size: c
                .get("max-message-size", parse_max_message_size)?
                .unwrap_or(DEFAULT_MAX_MESSAGE_SIZE),
            monitor_address: c.get("monitor-address", SocketAddress::parse_binding)?,
            metrics_address: c.get("metrics-address", SocketAddress::parse_binding)?,
            authentication_protocol: c.string("authentication-protocol"),
            authentication_database: c.path("authentication-database"),
            authentication_realm: c.string("authentication-realm"),
            drop_cache_rather_verify: c.bool("drop-cache-rather-verify")?.unwrap_or(false),
            reply_backlog_pause: c
                .get("reply-backlog-pause", parse_nonzero_size)?
                .unwrap_or(DEFAULT_REPLY_BACKLOG_PAUSE),
            max_client_backlog: c
                .get("max-client-backlog", parse_nonzero_size)?
                .unwrap_or(DEFAULT_MAX_CLIENT_BACKLOG),
            max_total_backlog: c
                .parsed("max-total-backlog")?
                .unwrap_or(DEFAULT_MAX_TOTAL_BACKLOG),
            max_connections: c
                .count("max-connections")?
                .unwrap_or(DEFAULT_MAX_CONNECTIONS),
            max_connections_per_address: c
                .count("max-connections-per-address")?
                .unwrap_or(DEFAULT_MAX_CONNECTIONS_PER_ADDRESS),
            max_transaction_size: c
                .get("max-transaction-size", parse_optional_size)?
                .flatten(),
            login_timeout: c
                .get("login-timeout", parse_timeout)?
                .unwrap_or(DEFAULT_LOGIN_TIMEOUT),
            public_status: c.bool("public-status")?.unwrap_or(false),
        })
    }
}

impl ServerConfig {
    /// Reads and checks the server configuration file at `path`.
    pub fn from_path(path: &Path) -> Result<Self> {
        Self::from_section(&syntax::parse_file(path)?)
    }

    /// Parses and checks `text`; `source_name` names it in errors and is the
    /// base for relative `%include` paths.
    pub fn from_str(text: &str, source_name: &str) -> Result<Self> {
        Self::from_section(&syntax::parse(text, source_name)?)
    }

    /// Checks an already parsed tree (for callers using their own [`syntax::Parser`]).
    pub fn from_section(root: &Section) -> Result<Self> {
        let mut allowed: Vec<&str> = vec!["zeo", "runner", "eventlog"];
        allowed.extend_from_slice(SERVABLE_STORAGES);
        allowed.extend_from_slice(OTHER_ZODB_STORAGES);
        let top = Checked::new(root, &[], &allowed)?;
        let file_level = Location::new(root.location.file.clone(), 0);

        let zeo_section = top
            .single_child("zeo")?
            .ok_or_else(|| Error::MissingSection {
                at: file_level.clone(),
                what: "a <zeo> section with the server address is required".into(),
            })?;
        let zeo = ZeoConfig::from_section(zeo_section)?;

        let eventlog = top
            .single_child("eventlog")?
            .map(EventLog::from_section)
            .transpose()?;

        let runner = match top.single_child("runner")? {
            Some(section) => {
                let c = Checked::new(section, RUNNER_KEYS, &["eventlog", "logger"])?;
                c.single_child("eventlog")?
                    .map(EventLog::from_section)
                    .transpose()?;
                Some(section.clone())
            }
            None => None,
        };

        crate::relstorage::check_import(root)?;
        let storages = Self::storages(&top)?;
        if storages.is_empty() {
            return Err(Error::MissingSection {
                at: file_level,
                what:
                    "no storage section (such as <filestorage> or <mappingstorage>) is configured"
                        .into(),
            });
        }

        let mut unsupported = Vec::new();
        support::collect(root, &mut unsupported);

        Ok(ServerConfig {
            source: root.location.file.clone(),
            zeo,
            storages,
            eventlog,
            runner,
            unsupported,
        })
    }

    /// Reads the storage sections and names the unnamed one `1`, with
    /// `runzeo`'s rules: at most one unnamed storage, and then none named `1`.
    fn storages(top: &Checked<'_>) -> Result<Vec<StorageConfig>> {
        let sections = top.children().iter().filter(|s| {
            SERVABLE_STORAGES.contains(&s.type_name.as_str())
                || OTHER_ZODB_STORAGES.contains(&s.type_name.as_str())
        });
        let mut storages = Vec::new();
        let mut unnamed: Option<usize> = None;
        for section in sections {
            let storage = StorageConfig::from_section(section)?;
            if section.name.is_none() {
                if let Some(first) = unnamed.and_then(|i| storages.get(i)) {
                    let first: &StorageConfig = first;
                    return Err(Error::Conflict {
                        at: section.location.clone(),
                        message: format!(
                            "no more than one storage may be unnamed (the other is at {})",
                            first.location
                        ),
                    });
                }
                unnamed = Some(storages.len());
            }
            storages.push(storage);
        }
        if let Some(i) = unnamed {
            if let Some(named_1) = storages.iter().find(|s| s.name == "1") {
                return Err(Error::Conflict {
                    at: named_1.location.clone(),
                    message: "can't have an unnamed storage and a storage named 1".into(),
                });
            }
            if let Some(s) = storages.get_mut(i) {
                s.name = "1".to_owned();
            }
        }
        Ok(storages)
    }

    /// The storage called `name`, if served.
    pub fn storage(&self, name: &str) -> Option<&StorageConfig> {
        self.storages.iter().find(|s| s.name == name)
    }
}
