//! The crate's one error type.

use std::time::Duration;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What opening or using a PostgreSQL storage can fail with (beyond the
/// storage contract's own errors, which operations return as
/// [`zeo_storage::Error`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database answered with an error, or the connection failed
    /// (the message carries the causes: a refused certificate, say).
    #[error("PostgreSQL: {}", with_causes(.0))]
    Postgres(#[from] postgres::Error),

    /// The schema found does not match what was asked for (history mode,
    /// missing tables of a partial schema, an unknown RelStorage version).
    #[error("schema: {0}")]
    Schema(String),

    /// An option's value is unusable.
    #[error("configuration: {0}")]
    Config(String),

    /// The database could not be reached lately; no new connection is
    /// tried before the back-off delay has passed.
    #[error("PostgreSQL unreachable (next attempt in {retry_in:?}): {reason}")]
    Unreachable {
        /// Why the last connection attempt failed.
        reason: String,
        /// How long until the next attempt.
        retry_in: Duration,
    },
}

/// An error's message followed by those of its sources.
fn with_causes(e: &postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    // Bounded: error chains are short, and a cycle must not hang us.
    for _ in 0..8 {
        let Some(s) = source else { break };
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

impl Error {
    /// Whether the error says the connection is gone (closed, terminated
    /// by the server, or never established): the connection is dropped and
    /// a retry on a fresh one may succeed.
    pub fn is_connection_lost(&self) -> bool {
        match self {
            Error::Postgres(p) => connection_lost(p),
            Error::Unreachable { .. } => true,
            _ => false,
        }
    }
}

/// Whether a driver error means the connection cannot be used again.
pub(crate) fn connection_lost(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        // Class 08 (connection exception) and 57 (operator intervention:
        // terminated backend, server shutting down).
        Some(code) => {
            let c = code.code();
            c.starts_with("08") || c.starts_with("57P")
        }
        // An error without a SQLSTATE is the client's own: I/O, protocol.
        None => e.as_db_error().is_none(),
    }
}

/// Whether a driver error is a lock wait that timed out or a deadlock:
/// retrying the transaction may get past it.
fn lock_failure(e: &postgres::Error) -> bool {
    e.code().is_some_and(|c| {
        *c == postgres::error::SqlState::LOCK_NOT_AVAILABLE
            || *c == postgres::error::SqlState::T_R_DEADLOCK_DETECTED
            || *c == postgres::error::SqlState::QUERY_CANCELED
    })
}

impl From<Error> for zeo_storage::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Postgres(ref p) if connection_lost(p) || lock_failure(p) => {
                zeo_storage::Error::transient(e)
            }
            Error::Unreachable { .. } => zeo_storage::Error::transient(e),
            other => zeo_storage::Error::other(other),
        }
    }
}
