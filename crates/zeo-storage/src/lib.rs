//! ZODB storages in Rust: the [`Storage`] contract, the id types, an in-memory
//! [`MappingStorage`] and a [`FileStorage`] that reads and writes ZODB's
//! `Data.fs` (`FS30`) format byte for byte.
//!
//! This crate knows nothing of networks: servers and clients build on it.

#![warn(missing_docs)]

pub mod blobdir;
pub mod block_buffer;
pub mod copy;
pub mod error;
pub mod filestorage;
pub mod gc;
pub mod ids;
pub mod interface;
pub mod mapping;
#[cfg(feature = "testing")]
pub mod testing;
pub mod timestamp;
pub mod undo_id;

pub use error::{BoxError, Error, Result};
pub use filestorage::FileStorage;
pub use ids::{Oid, Tid};
pub use interface::{
    require, BeginOptions, BlobData, BlobSource, Blobs, Capabilities, ChangedOidsIter,
    CurrentRecord, DataRecord, ExternalGc, ForeignCommit, HistoryEntry, Iteration, LoadedRevision,
    Pack, RecordIteration, Restore, SharedCommits, Storage, Submitted, TransactionIter,
    TransactionMetaData, TransactionRecord, TxnHandle, TxnStatus, Undo, UndoEntry, UndoFilter,
};
pub use mapping::MappingStorage;
pub use timestamp::TimeStamp;
pub use undo_id::{tid_from_undo_id, undo_id};

/// `docs/blobs.md`, whose examples run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/blobs.md")]
pub struct BlobsGuide;
