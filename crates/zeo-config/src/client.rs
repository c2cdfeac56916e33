//! Client configuration: ZODB's `<zeoclient>` and ZEO's `<clientstorage>`
//! storage sections, alone or inside a ZODB `<zodb>` database section.

use std::path::{Path, PathBuf};

use crate::datatypes::{ByteSize, Interval, SocketAddress};
use crate::error::{Error, Location, Result};
use crate::schema::{convert_line, key, multikey, Checked, KeySpec};
use crate::server::{parse_max_message_size, DEFAULT_MAX_MESSAGE_SIZE};
use crate::ssl::ClientSsl;
use crate::storage::SERVABLE_STORAGES;
use crate::support::{self, Unsupported};
use crate::syntax::{self, Section};

/// Default client cache size, 20MB, in ZODB's and ZEO's schemas alike.
pub const DEFAULT_CACHE_SIZE: ByteSize = ByteSize(20 * ByteSize::MB);

/// Default `wait-timeout`: ZEO's 30 seconds.
pub const DEFAULT_WAIT_TIMEOUT: Interval = Interval(30);

/// Which section type the client settings came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientSectionKind {
    /// ZODB's `<zeoclient>` (ZODB `component.xml`).
    ZeoClient,
    /// ZEO's `<clientstorage>` (needs `%import ZEO` in Python; optional here).
    ClientStorage,
}

/// Settings for one ZEO client storage.
///
/// Both section types accept the union of their keys here; the docs mark
/// which keys each has in Python.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientConfig {
    /// The file or source name the settings came from.
    pub source: String,
    /// `<zeoclient>` or `<clientstorage>`.
    pub kind: ClientSectionKind,
    /// The storage section's own name, if it had one.
    pub section_name: Option<String>,
    /// Where the storage section starts.
    pub location: Location,
    /// Server addresses, tried in turn (at least one).
    pub servers: Vec<SocketAddress>,
    /// Storage name on the server (default `1`).
    pub storage: String,
    /// Client cache size (default 20MB).
    pub cache_size: ByteSize,
    /// Persistent cache file (`<clientstorage>`'s `cache-path`).
    pub cache_path: Option<PathBuf>,
    /// Storage name reported by `getName`; empty means the server address.
    pub name: String,
    /// Persistent cache base name (`<zeoclient>`'s `client`).
    pub client: Option<String>,
    /// Directory for the persistent cache (default: the working directory).
    pub var: Option<PathBuf>,
    /// ZEO 3/4 reconnect backoff start, seconds (default 5; ignored by ZEO 5).
    pub min_disconnect_poll: i64,
    /// ZEO 3/4 reconnect backoff cap, seconds (default 300; ignored by ZEO 5).
    pub max_disconnect_poll: i64,
    /// Wait for a connection before returning from open (default true).
    pub wait: bool,
    /// How long to wait for a connection (default 30 seconds).
    pub wait_timeout: Interval,
    /// Ask for a read-only connection (default false).
    pub read_only: bool,
    /// Accept a read-only server if no writable one answers (default false).
    pub read_only_fallback: bool,
    /// Make `sync()` a server round trip (default false).
    pub server_sync: bool,
    /// ZEO 3/4: drop the cache instead of verifying (default false; ignored by ZEO 5).
    pub drop_cache_rather_verify: bool,
    /// ZEO 3/4 authentication user.
    pub username: Option<String>,
    /// ZEO 3/4 authentication password.
    pub password: Option<String>,
    /// ZEO 3/4 authentication realm.
    pub realm: Option<String>,
    /// Blob cache directory (or the server's, with `shared_blob_dir`).
    pub blob_dir: Option<PathBuf>,
    /// `blob_dir` is the server's own blob directory (default false).
    pub shared_blob_dir: bool,
    /// Blob cache target size; unbounded when absent.
    pub blob_cache_size: Option<ByteSize>,
    /// Percent of `blob_cache_size` downloaded between size checks (ZEO: 10).
    pub blob_cache_size_check: Option<i64>,
    /// Label for this client in server logs.
    pub client_label: Option<String>,
    /// TLS settings; plain TCP when absent.
    pub ssl: Option<ClientSsl>,
    /// Largest protocol message accepted from the server (ours; default 256MB).
    pub max_message_size: ByteSize,
    /// The enclosing `<zodb>` section's settings, when there is one.
    pub database: Option<DatabaseConfig>,
    /// Settings present that zeo-rs does not honour.
    pub unsupported: Vec<Unsupported>,
}

impl ClientConfig {
    /// Settings for `servers` with every other key at its schema default.
    pub fn new(servers: Vec<SocketAddress>) -> Self {
        ClientConfig {
            source: String::new(),
            kind: ClientSectionKind::ZeoClient,
            section_name: None,
            location: Location::new("<default>", 0),
            servers,
            storage: "1".to_owned(),
            cache_size: DEFAULT_CACHE_SIZE,
            cache_path: None,
            name: String::new(),
            client: None,
            var: None,
            min_disconnect_poll: 5,
            max_disconnect_poll: 300,
            wait: true,
            wait_timeout: DEFAULT_WAIT_TIMEOUT,
            read_only: false,
            read_only_fallback: false,
            server_sync: false,
            drop_cache_rather_verify: false,
            username: None,
            password: None,
            realm: None,
            blob_dir: None,
            shared_blob_dir: false,
            blob_cache_size: None,
            blob_cache_size_check: None,
            client_label: None,
            ssl: None,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            database: None,
            unsupported: Vec::new(),
        }
    }

    /// The persistent cache file, as ZEO's `open_cache` derives it:
    /// `cache-path` if given, else `<var>/<client>-<storage>.zec` when
    /// `client` is set (`var` defaulting to the working directory), else
    /// `None` for a memory-only cache.
    pub fn persistent_cache_path(&self) -> Option<PathBuf> {
        if let Some(path) = &self.cache_path {
            return Some(path.clone());
        }
        let client = self.client.as_deref().filter(|c| !c.is_empty())?;
        let dir = self.var.clone().unwrap_or_else(|| PathBuf::from("."));
        Some(dir.join(format!("{client}-{}.zec", self.storage)))
    }

    /// Reads the client configuration file at `path`; see [`ClientConfig::from_section`].
    pub fn from_path(path: &Path) -> Result<Self> {
        Self::from_section(&syntax::parse_file(path)?)
    }

    /// Parses `text`; see [`ClientConfig::from_section`].
    pub fn from_str(text: &str, source_name: &str) -> Result<Self> {
        Self::from_section(&syntax::parse(text, source_name)?)
    }

    /// Finds the one client storage in a parsed file: a top-level
    /// `<zeoclient>` or `<clientstorage>`, or one inside a single `<zodb>`.
    /// Files with several use [`ClientConfig::all_from_section`].
    pub fn from_section(root: &Section) -> Result<Self> {
        let mut all = Self::all_from_section(root)?;
        if all.len() > 1 {
            let second = all.swap_remove(1);
            return Err(Error::Conflict {
                at: second.location,
                message: "more than one client storage is configured; pick one".into(),
            });
        }
        all.pop().ok_or_else(|| Error::MissingSection {
            at: Location::new(root.location.file.clone(), 0),
            what: "no <zeoclient> or <clientstorage> section (at the top level or inside <zodb>)"
                .into(),
        })
    }

    /// Every client storage in a parsed file, in order (a multi-database
    /// ZODB configuration has one per `<zodb>`).
    pub fn all_from_section(root: &Section) -> Result<Vec<Self>> {
        let mut allowed = vec!["zeoclient", "clientstorage", "zodb"];
        allowed.extend_from_slice(SERVABLE_STORAGES);
        let top = Checked::new(root, &[], &allowed)?;
        let mut out = Vec::new();
        for child in top.children() {
            match child.type_name.as_str() {
                "zodb" => out.push(DatabaseConfig::client_from_section(child)?),
                "zeoclient" | "clientstorage" => out.push(Self::from_storage_section(child, None)?),
                _ => return Err(not_a_client(child)),
            }
        }
        Ok(out)
    }

    fn from_storage_section(section: &Section, database: Option<DatabaseConfig>) -> Result<Self> {
        let kind = match section.type_name.as_str() {
            "zeoclient" => ClientSectionKind::ZeoClient,
            "clientstorage" => ClientSectionKind::ClientStorage,
            _ => return Err(not_a_client(section)),
        };
        let c = Checked::new(section, CLIENT_KEYS, &["ssl"])?;
        let servers = c
            .lines("server")
            .iter()
            .map(|kv| convert_line(kv, &SocketAddress::parse_connection))
            .collect::<Result<Vec<_>>>()?;
        if servers.is_empty() {
            return Err(c.missing("server"));
        }
        let defaults = ClientConfig::new(Vec::new());
        let mut unsupported = Vec::new();
        support::collect(section, &mut unsupported);
        if let Some(db) = &database {
            unsupported.extend(db.unsupported.iter().cloned());
        }
        Ok(ClientConfig {
            source: section.location.file.clone(),
            kind,
            section_name: section.name.clone(),
            location: section.location.clone(),
            servers,
            storage: c.string("storage").unwrap_or(defaults.storage),
            cache_size: c.parsed("cache-size")?.unwrap_or(defaults.cache_size),
            cache_path: c.path("cache-path"),
            name: c.string("name").unwrap_or(defaults.name),
            client: c.string("client"),
            var: c.path("var"),
            min_disconnect_poll: c
                .integer("min-disconnect-poll")?
                .unwrap_or(defaults.min_disconnect_poll),
            max_disconnect_poll: c
                .integer("max-disconnect-poll")?
                .unwrap_or(defaults.max_disconnect_poll),
            wait: c.bool("wait")?.unwrap_or(defaults.wait),
            wait_timeout: c.parsed("wait-timeout")?.unwrap_or(defaults.wait_timeout),
            read_only: c.bool("read-only")?.unwrap_or(false),
            read_only_fallback: c.bool("read-only-fallback")?.unwrap_or(false),
            server_sync: c.bool("server-sync")?.unwrap_or(false),
            drop_cache_rather_verify: c.bool("drop-cache-rather-verify")?.unwrap_or(false),
            username: c.string("username"),
            password: c.string("password"),
            realm: c.string("realm"),
            blob_dir: c.path("blob-dir"),
            shared_blob_dir: c.bool("shared-blob-dir")?.unwrap_or(false),
            blob_cache_size: c.parsed("blob-cache-size")?,
            blob_cache_size_check: c.integer("blob-cache-size-check")?,
            client_label: c.string("client-label"),
            ssl: c
                .single_child("ssl")?
                .map(ClientSsl::from_section)
                .transpose()?,
            max_message_size: c
                .get("max-message-size", parse_max_message_size)?
                .unwrap_or(DEFAULT_MAX_MESSAGE_SIZE),
            database,
            unsupported,
        })
    }
}

fn not_a_client(section: &Section) -> Error {
    Error::UnsupportedSection {
        at: section.location.clone(),
        section_type: section.type_name.clone(),
        reason: "a client configuration needs <zeoclient> or <clientstorage>".into(),
    }
}

const CLIENT_KEYS: &[KeySpec] = &[
    multikey("server"),
    key("storage"),
    key("cache-size"),
    key("cache-path"),
    key("name"),
    key("client"),
    key("var"),
    key("min-disconnect-poll"),
    key("max-disconnect-poll"),
    key("wait"),
    key("wait-timeout"),
    key("read-only"),
    key("read-only-fallback"),
    key("server-sync"),
    key("drop-cache-rather-verify"),
    key("username"),
    key("password"),
    key("realm"),
    key("blob-dir"),
    key("shared-blob-dir"),
    key("blob-cache-size"),
    key("blob-cache-size-check"),
    key("client-label"),
    key("max-message-size"),
];

/// ZODB `<zodb>` database settings (ZODB's `component.xml`), kept so a
/// client application can size its object caches and pools.
#[derive(Debug, Clone, PartialEq)]
pub struct DatabaseConfig {
    /// The `<zodb>` section's name, if any.
    pub section_name: Option<String>,
    /// Where the section starts.
    pub location: Location,
    /// Objects per connection cache (default 5000).
    pub cache_size: i64,
    /// Estimated bytes per connection cache; 0 = no limit (default).
    pub cache_size_bytes: ByteSize,
    /// Record size above which ZODB warns (default 16MB).
    pub large_record_size: ByteSize,
    /// Expected simultaneous connections (default 7).
    pub pool_size: i64,
    /// How long unused connections are kept (default: forever).
    pub pool_timeout: Option<Interval>,
    /// Expected simultaneous historical connections (default 3).
    pub historical_pool_size: i64,
    /// Objects per historical connection cache (default 1000).
    pub historical_cache_size: i64,
    /// Bytes per historical connection cache (default 0 = no limit).
    pub historical_cache_size_bytes: ByteSize,
    /// How long unused historical connections are kept (default 5m).
    pub historical_timeout: Interval,
    /// Name in a multi-database collection.
    pub database_name: Option<String>,
    /// Allow implicit cross-database references.
    pub allow_implicit_cross_references: Option<bool>,
    /// Python class factory (unsupported).
    pub class_factory: Option<String>,
    /// Unsupported settings found in the `<zodb>` section itself.
    pub unsupported: Vec<Unsupported>,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            section_name: None,
            location: Location::new("<default>", 0),
            cache_size: 5000,
            cache_size_bytes: ByteSize(0),
            large_record_size: ByteSize(16 * ByteSize::MB),
            pool_size: 7,
            pool_timeout: None,
            historical_pool_size: 3,
            historical_cache_size: 1000,
            historical_cache_size_bytes: ByteSize(0),
            historical_timeout: Interval(300),
            database_name: None,
            allow_implicit_cross_references: None,
            class_factory: None,
            unsupported: Vec::new(),
        }
    }
}

const ZODB_KEYS: &[KeySpec] = &[
    key("cache-size"),
    key("cache-size-bytes"),
    key("large-record-size"),
    key("pool-size"),
    key("pool-timeout"),
    key("historical-pool-size"),
    key("historical-cache-size"),
    key("historical-cache-size-bytes"),
    key("historical-timeout"),
    key("database-name"),
    key("allow-implicit-cross-references"),
    key("class-factory"),
];

impl DatabaseConfig {
    /// Reads a `<zodb>` section and the client storage inside it.
    fn client_from_section(section: &Section) -> Result<ClientConfig> {
        let mut allowed = vec!["zeoclient", "clientstorage"];
        allowed.extend_from_slice(SERVABLE_STORAGES);
        let c = Checked::new(section, ZODB_KEYS, &allowed)?;
        let d = DatabaseConfig::default();
        let mut unsupported = Vec::new();
        support::collect_keys(section, &mut unsupported);
        let db = DatabaseConfig {
            section_name: section.name.clone(),
            location: section.location.clone(),
            cache_size: c.integer("cache-size")?.unwrap_or(d.cache_size),
            cache_size_bytes: c.parsed("cache-size-bytes")?.unwrap_or(d.cache_size_bytes),
            large_record_size: c
                .parsed("large-record-size")?
                .unwrap_or(d.large_record_size),
            pool_size: c.integer("pool-size")?.unwrap_or(d.pool_size),
            pool_timeout: c.parsed("pool-timeout")?,
            historical_pool_size: c
                .integer("historical-pool-size")?
                .unwrap_or(d.historical_pool_size),
            historical_cache_size: c
                .integer("historical-cache-size")?
                .unwrap_or(d.historical_cache_size),
            historical_cache_size_bytes: c
                .parsed("historical-cache-size-bytes")?
                .unwrap_or(d.historical_cache_size_bytes),
            historical_timeout: c
                .parsed("historical-timeout")?
                .unwrap_or(d.historical_timeout),
            database_name: c.string("database-name"),
            allow_implicit_cross_references: c.bool("allow-implicit-cross-references")?,
            class_factory: c.string("class-factory"),
            unsupported,
        };
        let storages = c.children();
        let storage = match storages {
            [only] => *only,
            [] => {
                return Err(Error::MissingSection {
                    at: section.location.clone(),
                    what: format!("{section} has no storage section"),
                })
            }
            [first, second, ..] => {
                return Err(Error::DuplicateSection {
                    at: second.location.clone(),
                    section_type: second.type_name.clone(),
                    parent: section.to_string(),
                    first: first.location.clone(),
                })
            }
        };
        ClientConfig::from_storage_section(storage, Some(db))
    }
}
