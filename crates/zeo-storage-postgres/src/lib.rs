//! A ZODB storage on PostgreSQL, in RelStorage 4's schema.
//!
//! Existing RelStorage databases are served as they are, and Python
//! RelStorage applications can commit to the same database beside
//! zeo-server: commits serialize through the same advisory locks and the
//! same tid rule. The backend is blocking (it runs SQL over the sync
//! `postgres` client), so it declares [`Storage::may_block`] and the server
//! calls it off its async workers.
//!
//! See `docs/postgresql.md` for deployment and configuration.

// Until the storage calls them, only the tests (feature `internals`) do.
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
mod blob_chunk;
mod error;
mod options;
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
mod pack;

/// The blob and pack internals, reachable by this crate's integration
/// tests only (feature `internals`); not an API.
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod testing_internals {
    /// See the crate-private module `blob_chunk`.
    pub mod blob_chunk {
        pub use crate::blob_chunk::*;
    }
    /// See the crate-private module `pack`.
    pub mod pack {
        pub use crate::pack::*;
    }
}

pub use error::{Error, Result};
pub use options::{HistoryMode, PostgresOptions};

use std::sync::Arc;

/// Opens (and, when allowed and absent, creates) the storage `options`
/// describe, ready to be served.
///
/// # Errors
///
/// When the database cannot be reached, its schema does not match
/// `options`, or an option is unusable.
pub fn open_storage(options: PostgresOptions) -> Result<Arc<dyn zeo_storage::Storage>> {
    Err(Error::Config(format!(
        "storage {:?}: the PostgreSQL backend cannot open databases yet",
        options.name
    )))
}
