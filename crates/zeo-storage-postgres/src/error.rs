//! The crate's one error type.

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What opening or using a PostgreSQL storage can fail with (beyond the
/// storage contract's own errors, which operations return as
/// [`zeo_storage::Error`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database answered with an error, or the connection failed.
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] postgres::Error),

    /// The schema found does not match what was asked for (history mode,
    /// missing tables of a partial schema, an unknown RelStorage version).
    #[error("schema: {0}")]
    Schema(String),

    /// An option's value is unusable.
    #[error("configuration: {0}")]
    Config(String),
}

impl From<Error> for zeo_storage::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Postgres(p) if p.is_closed() => zeo_storage::Error::transient(p),
            other => zeo_storage::Error::other(other),
        }
    }
}
