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
//!
//! ```
//! use zeo_storage::{BeginOptions, Oid, Storage, Tid, TransactionMetaData};
//! use zeo_storage_postgres::{open_storage, PostgresOptions};
//! # let db = zeo_testkit::postgres::TestDatabase::create("doc");
//! # let dsn = db.dsn();
//!
//! // `dsn` as libpq takes it: "host=/run/postgresql dbname=zodb user=zodb".
//! let storage = open_storage(PostgresOptions::new(dsn))?;
//! let txn = storage.tpc_begin(&TransactionMetaData::default(), BeginOptions::default())?;
//! storage.store(txn, Oid::ROOT, Tid::ZERO, b"root record")?;
//! storage.tpc_vote(txn)?;
//! let tid = storage.tpc_finish(txn, &mut |_| {})?;
//! assert_eq!(storage.load(Oid::ROOT)?, (b"root record".to_vec(), tid));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Schema
//!
//! Both of RelStorage's variants are served: history-preserving
//! (`keep-history true`, every revision in `object_state`, the current one
//! named by `current_object`, metadata in `transaction`) and history-free
//! (current revisions only; no undo, history or transaction metadata, and
//! `load_before` answers only for the current revision, so ZEO clients see
//! more read conflicts). A database holding the other variant is refused
//! with a message saying so. A database holding none is given one, created
//! by zeo-rs's own statements, that RelStorage 4.3 opens as its own.
//!
//! # Connections
//!
//! Loads run on a small pool of connections (`pool_size`); a commit runs
//! its vote and finish on one connection of its own, inside one database
//! transaction. A connection found lost (the database restarted) is
//! replaced: a read is retried once on a fresh connection; a failed
//! attempt to connect makes the next ones wait (100 ms, doubling up to
//! 5 s), failing fast meanwhile with a transient error.
//!
//! # Commit protocol and lock order
//!
//! Locks are PostgreSQL advisory locks with RelStorage's ids: an object
//! locks its own oid, the commit lock is [`COMMIT_LOCK`] (−1) and the pack
//! lock [`PACK_LOCK`] (−2). Every committer takes them in the same order,
//! which is what keeps zeo-server and RelStorage processes from
//! deadlocking one another:
//!
//! 1. `tpc_begin` takes the storage's own lock (one transaction at a time
//!    per storage, as the kit's contract says); `store` stages records in
//!    memory, after checking each one's serial against the committed rows
//!    so that conflicts come back at store (where the server resolves them
//!    natively or hands them to the client); a new object's store (serial
//!    zero: nothing to resolve against) is left to the vote's check.
//! 2. `tpc_vote` opens the database transaction (with `lock_timeout` set
//!    to `commit-lock-timeout`), tries shared locks on the objects named by
//!    `check_current_serial` (without waiting, as RelStorage does; failing
//!    is a read conflict), takes exclusive locks on every stored oid in
//!    increasing order, and then checks every serial again against the
//!    committed rows: a conflict found there names the committed serial.
//!    Oids stored beyond what `zoid_seq` handed out raise the sequence.
//!    Blob files were uploaded as large objects just before, outside any
//!    lock (see `blobs.rs`); an undo takes the pack lock here.
//! 3. `tpc_finish` takes the commit lock, chooses the tid inside the
//!    database (the later of the database clock and the last tid + 1),
//!    writes the rows (`transaction`, `object_state` with `md5` and
//!    `prev_tid`, `current_object`; in the history-free variant an upsert
//!    of `object_state`; `blob_chunk` rows for the uploaded blobs) and
//!    COMMITs, which releases every lock. The commit lock is held for that
//!    only, unless blobs live in a shared blob directory
//!    (`shared-blob-dir true`): a transaction with blobs then takes it at
//!    the vote, chooses the tid and moves its files into place there, and
//!    holds it to the finish. Then `on_commit` runs; until it returns,
//!    this storage's readers wait, so that no client loads a revision
//!    before its invalidation was queued.
//! 4. A connection lost before COMMIT leaves nothing behind (the database
//!    rolls back); lost during COMMIT, the storage asks on a fresh
//!    connection whether the transaction's row exists, and reports the
//!    commit only if it does.

#![warn(missing_docs)]

// Some functions only this crate's tests (feature `internals`) call.
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
mod blob_chunk;
mod blobs;
mod changes;
mod error;
mod iteration;
mod options;
mod pack;
mod poll;
mod pool;
mod restore;
mod schema;
mod storage;
mod tls;
mod undo;

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

pub use changes::{changes_after, newest_changes, Change};
pub use error::{Error, Result};
pub use options::{HistoryMode, PostgresOptions};
pub use storage::PostgresStorage;

use std::sync::Arc;

#[allow(unused_imports)] // for the documentation's links
use zeo_storage::Storage;

/// The advisory lock id of RelStorage's commit lock.
pub const COMMIT_LOCK: i64 = -1;
/// The advisory lock id of RelStorage's pack lock (pack and undo).
pub const PACK_LOCK: i64 = -2;

/// Opens (and, when allowed and absent, creates) the storage `options`
/// describe, ready to be served.
///
/// # Errors
///
/// When the database cannot be reached, its schema does not match
/// `options`, or an option is unusable.
pub fn open_storage(options: PostgresOptions) -> Result<Arc<dyn zeo_storage::Storage>> {
    Ok(Arc::new(PostgresStorage::open(options)?))
}
