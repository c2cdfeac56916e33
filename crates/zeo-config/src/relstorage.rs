//! RelStorage's `<relstorage>` storage section and its adapter subsection,
//! as a RelStorage-backed `runzeo` or `zodbconvert` file writes them.
//!
//! Only the `<postgresql>` adapter is served. The keys RelStorage tunes its
//! own Python caches, replicas and pack phases with parse (so such a file is
//! accepted verbatim) and are listed as unsupported by name.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::schema::{key, Checked, KeySpec};
use crate::syntax::Section;

/// The package a file must `%import` before using `<relstorage>`, as ZConfig
/// requires for the section type to exist.
pub const IMPORT_PACKAGE: &str = "relstorage";

/// RelStorage's default `commit-lock-timeout`, in seconds.
pub const DEFAULT_COMMIT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// RelStorage's adapter section types that zeo-rs recognises but refuses.
const OTHER_ADAPTERS: &[&str] = &["mysql", "oracle", "sqlite3"];

/// Every adapter section type a `<relstorage>` may contain.
const ADAPTERS: &[&str] = &["postgresql", "mysql", "oracle", "sqlite3"];

/// The keys of RelStorage's `<relstorage>` section type (RelStorage 4.3).
const RELSTORAGE_KEYS: &[KeySpec] = &[
    key("name"),
    key("read-only"),
    key("blob-dir"),
    key("shared-blob-dir"),
    key("blob-cache-size"),
    key("blob-cache-size-check"),
    key("blob-cache-size-check-external"),
    key("blob-chunk-size"),
    key("keep-history"),
    key("replica-conf"),
    key("ro-replica-conf"),
    key("replica-timeout"),
    key("revert_when_stale"),
    key("poll-interval"),
    key("pack-gc"),
    key("pack-prepack-only"),
    key("pack-skip-prepack"),
    key("pack-batch-timeout"),
    key("pack-commit-busy-delay"),
    key("cache-servers"),
    key("cache-module-name"),
    key("cache-prefix"),
    key("cache-local-mb"),
    key("cache-local-storage"),
    key("cache-local-dir"),
    key("cache-local-dir-count"),
    key("cache-local-dir-read-count"),
    key("cache-local-dir-compress"),
    key("cache-local-dir-write-max-size"),
    key("cache-local-object-max"),
    key("cache-local-compression"),
    key("cache-delta-size-limit"),
    key("commit-lock-timeout"),
    key("commit-lock-id"),
    key("create-schema"),
];

const POSTGRESQL_KEYS: &[KeySpec] = &[key("driver"), key("dsn")];

/// `<relstorage>` settings; defaults are RelStorage 4's.
///
/// ```
/// use zeo_config::{ServerConfig, StorageKind};
///
/// let config = ServerConfig::from_str(
///     "%import relstorage\n\
///      <zeo>\n address 127.0.0.1:0\n</zeo>\n\
///      <relstorage main>\n keep-history true\n blob-dir /var/zeo/blobs\n\
///        <postgresql>\n dsn dbname='zodb' host='/run/postgresql'\n </postgresql>\n\
///      </relstorage>\n",
///     "zeo.conf",
/// ).unwrap();
/// let StorageKind::RelStorage(rs) = &config.storages[0].kind else { panic!() };
/// assert_eq!(rs.dsn, "dbname='zodb' host='/run/postgresql'");
/// assert!(rs.keep_history && !rs.shared_blob_dir);
/// assert_eq!(rs.commit_lock_timeout.as_secs(), 30);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelStorageConfig {
    /// The `name` key: the name the storage reports from `getName`
    /// (RelStorage's default when unset).
    pub name: Option<String>,
    /// Refuse writes (default false).
    pub read_only: bool,
    /// Blob directory; `None` (or an empty value) means no blob support.
    pub blob_dir: Option<PathBuf>,
    /// Blobs live only in `blob_dir` (true) or in the database with
    /// `blob_dir` as a cache (false, the default).
    pub shared_blob_dir: bool,
    /// History-preserving schema (default true) or history-free.
    pub keep_history: bool,
    /// Garbage-collect unreachable objects when packing (default true).
    pub pack_gc: bool,
    /// How long a commit waits for the commit lock (integer seconds,
    /// default 30).
    pub commit_lock_timeout: Duration,
    /// Create the schema when the database has none (default true).
    pub create_schema: bool,
    /// The `<postgresql>` adapter's `dsn`, as libpq reads it (empty: libpq's
    /// defaults, the local server as the current user).
    pub dsn: String,
}

impl RelStorageConfig {
    /// Settings for `dsn` with every other key at RelStorage's default.
    pub fn new(dsn: impl Into<String>) -> Self {
        RelStorageConfig {
            name: None,
            read_only: false,
            blob_dir: None,
            shared_blob_dir: false,
            keep_history: true,
            pack_gc: true,
            commit_lock_timeout: DEFAULT_COMMIT_LOCK_TIMEOUT,
            create_schema: true,
            dsn: dsn.into(),
        }
    }

    /// Reads a `<relstorage>` section and its one adapter subsection.
    pub(crate) fn from_section(section: &Section) -> Result<Self> {
        let c = Checked::new(section, RELSTORAGE_KEYS, ADAPTERS)?;
        let [adapter] = c.children() else {
            return Err(Error::MissingSection {
                at: section.location.clone(),
                what: "<relstorage> needs exactly one adapter section: <postgresql>".into(),
            });
        };
        if OTHER_ADAPTERS.contains(&adapter.type_name.as_str()) {
            return Err(Error::UnsupportedSection {
                at: adapter.location.clone(),
                section_type: adapter.type_name.clone(),
                reason: "zeo-rs serves RelStorage databases on PostgreSQL only (<postgresql>)"
                    .into(),
            });
        }
        let a = Checked::new(adapter, POSTGRESQL_KEYS, &[])?;
        let commit_lock_timeout = match c.count("commit-lock-timeout")? {
            Some(seconds) => Duration::from_secs(seconds),
            None => DEFAULT_COMMIT_LOCK_TIMEOUT,
        };
        Ok(RelStorageConfig {
            name: c.string("name"),
            read_only: c.bool("read-only")?.unwrap_or(false),
            blob_dir: c.path("blob-dir"),
            shared_blob_dir: c.bool("shared-blob-dir")?.unwrap_or(false),
            keep_history: c.bool("keep-history")?.unwrap_or(true),
            pack_gc: c.bool("pack-gc")?.unwrap_or(true),
            commit_lock_timeout,
            create_schema: c.bool("create-schema")?.unwrap_or(true),
            dsn: a.string("dsn").unwrap_or_default(),
        })
    }
}

/// Refuses `<relstorage>` sections in a file without `%import relstorage`:
/// without it ZConfig does not know the section type, so the file would not
/// load in Python either.
pub(crate) fn check_import(root: &Section) -> Result<()> {
    if root.imports().any(|i| i.package == IMPORT_PACKAGE) {
        return Ok(());
    }
    match root.sections().find(|s| s.type_name == "relstorage") {
        Some(section) => Err(Error::Conflict {
            at: section.location.clone(),
            message: format!(
                "<relstorage> needs `%import {IMPORT_PACKAGE}` in the file, as in ZConfig"
            ),
        }),
        None => Ok(()),
    }
}
