//! A ZEO client: the Rust counterpart of `ZEO.ClientStorage`, wire
//! compatible with ZEO 5/6 servers (pickle `Z5` and msgpack `M5`).
//!
//! * [`ClientCache`] — current and non-current object revisions, bounded,
//!   persistent across restarts when given a file
//!   (`docs/design/client-cache.md`).
//! * [`AsyncClientStorage`] — the client for async callers: connects to one
//!   of several servers, verifies its cache on every (re)connect,
//!   reconnects with back-off, falls back to read-only servers when allowed,
//!   and runs ZEO's two-phase commit with optional client-side conflict
//!   resolution.
//! * [`ClientStorage`] — the same behind the blocking
//!   [`zeo_storage::Storage`] trait, on a runtime of its own.
//!
//! See `docs/client.md` for the behaviour in detail.

#![warn(missing_docs)]

pub mod cache;
mod client;
mod connection;
pub mod error;
mod options;
mod storage;

pub use cache::{CacheStats, ClientCache};
pub use client::{AsyncClientStorage, ClientStats};
pub use connection::Notice;
pub use error::{Error, Result};
pub use options::{ClientOptions, ConflictInfo, ConflictResolver, ServerAddress};
pub use storage::ClientStorage;
