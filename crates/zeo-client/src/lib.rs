//! A ZEO client: the Rust counterpart of `ZEO.ClientStorage`.
//!
//! * [`ClientCache`] — the client cache: current and non-current object
//!   revisions, bounded, persistent across restarts when given a file.

#![warn(missing_docs)]

pub mod cache;
pub mod error;

pub use cache::{CacheStats, ClientCache};
pub use error::{Error, Result};
