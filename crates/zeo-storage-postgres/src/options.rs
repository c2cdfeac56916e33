//! How a PostgreSQL storage is opened: the settings of a `<relstorage>`
//! section with a `<postgresql>` adapter.

use std::path::PathBuf;
use std::time::Duration;

/// RelStorage's two schemas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HistoryMode {
    /// `keep-history true` (RelStorage's default): every revision kept,
    /// undo, history and `loadBefore` of replaced revisions work.
    #[default]
    Preserving,
    /// `keep-history false`: only current revisions. Degraded for ZEO
    /// clients: no undo, history or transaction metadata.
    Free,
}

/// Settings for opening a [`PostgresStorage`](crate).
///
/// ```
/// use zeo_storage_postgres::{HistoryMode, PostgresOptions};
///
/// let options = PostgresOptions::new("host=/run/postgresql dbname=zodb");
/// assert_eq!(options.history, HistoryMode::Preserving);
/// assert!(options.create_schema);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PostgresOptions {
    /// The database, as libpq understands it (`host=… dbname=… user=…` or a
    /// `postgresql://` URL); `sslmode` is honoured.
    pub dsn: String,
    /// The storage's name (the section's name), reported to clients.
    pub name: String,
    /// Which schema; refused when the database holds the other one.
    pub history: HistoryMode,
    /// Create the schema when the database has none (RelStorage's
    /// `create-schema`, default true).
    pub create_schema: bool,
    /// Refuse every write.
    pub read_only: bool,
    /// Blob directory (`blob-dir`); `None` keeps blobs unsupported.
    pub blob_dir: Option<PathBuf>,
    /// `shared-blob-dir`: true means blobs live only in `blob_dir` (no
    /// `blob_chunk` rows); false (the default here and in RelStorage 4)
    /// keeps them in the database with `blob_dir` as a cache.
    pub shared_blob_dir: bool,
    /// How long to wait for the commit lock (`commit-lock-timeout`, 30 s).
    pub commit_lock_timeout: Duration,
    /// Connections kept open for loads (the commit path has its own).
    pub pool_size: usize,
}

impl PostgresOptions {
    /// Defaults for `dsn`, as RelStorage's defaults are.
    pub fn new(dsn: impl Into<String>) -> Self {
        PostgresOptions {
            dsn: dsn.into(),
            name: "RelStorage".to_owned(),
            history: HistoryMode::Preserving,
            create_schema: true,
            read_only: false,
            blob_dir: None,
            shared_blob_dir: false,
            commit_lock_timeout: Duration::from_secs(30),
            pool_size: 4,
        }
    }
}
