//! The embeddable ZEO 5 storage server.
#![warn(missing_docs)]

pub mod commit_lock;
pub mod invalidations;
pub mod settings;
pub mod stats;
pub mod txn_log;
