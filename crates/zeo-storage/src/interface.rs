//! The storage contract: what ZODB calls `IStorage` together with
//! `IStorageIteration`, `IStorageUndoable`, `IStorageCurrentRecordIteration`,
//! `IExternalGC` and `IStorageRestoreable`.
//!
//! Two-phase commit follows ZODB: `tpc_begin` takes the storage's commit lock
//! and returns a [`TxnHandle`] that every later call of that transaction
//! names; `tpc_finish` or `tpc_abort` releases it. Calls naming a handle that
//! is not the current transaction fail with [`Error::Transaction`], except
//! `tpc_abort`, which ignores them as ZODB does.
//!
//! Reads (`load*`, `history`, iteration) never wait for a commit in progress:
//! they see the last finished transaction.

use std::fmt;

use crate::error::{Error, Result};
use crate::ids::{Oid, Tid};

/// Identifies one two-phase commit on one storage instance.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct TxnHandle(pub u64);

/// The transaction status byte kept in a Data.fs transaction header.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum TxnStatus {
    /// `' '`: an ordinary committed transaction.
    #[default]
    Committed,
    /// `'p'`: written by pack; undo stops at it.
    Packed,
    /// `'c'`: a checkpoint (voted but not finished); only ever the last
    /// transaction of a live file.
    Checkpoint,
    /// `'u'`: a legacy "undone" transaction, still accepted on read.
    Undone,
}

impl TxnStatus {
    /// The status byte as it stands in the file and on the wire.
    pub fn as_byte(self) -> u8 {
        match self {
            TxnStatus::Committed => b' ',
            TxnStatus::Packed => b'p',
            TxnStatus::Checkpoint => b'c',
            TxnStatus::Undone => b'u',
        }
    }

    /// Parses a status byte.
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            b' ' => Some(TxnStatus::Committed),
            b'p' => Some(TxnStatus::Packed),
            b'c' => Some(TxnStatus::Checkpoint),
            b'u' => Some(TxnStatus::Undone),
            _ => None,
        }
    }
}

/// User, description and extension of a transaction (`TransactionMetaData`).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct TransactionMetaData {
    /// The user name, UTF-8 when produced from text.
    pub user: Vec<u8>,
    /// The description, UTF-8 when produced from text.
    pub description: Vec<u8>,
    /// The extension dict pickled with protocol 3, or empty for `{}`.
    pub extension: Vec<u8>,
}

impl fmt::Debug for TransactionMetaData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransactionMetaData")
            .field("user", &String::from_utf8_lossy(&self.user))
            .field("description", &String::from_utf8_lossy(&self.description))
            .field("extension_len", &self.extension.len())
            .finish()
    }
}

/// Options of `tpc_begin` that only restoring and copying use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BeginOptions {
    /// Commit under this tid instead of a fresh one (`tpc_begin(txn, tid)`).
    /// It must be later than the last transaction.
    pub tid: Option<Tid>,
    /// The status byte to write at finish (copying can write `Packed`).
    pub status: TxnStatus,
}

/// One revision found by [`Storage::load_before`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadedRevision {
    /// The object record (class pickle followed by state pickle).
    pub data: Vec<u8>,
    /// The tid that wrote this revision.
    pub start: Tid,
    /// The tid of the next revision, `None` when this one is current.
    pub end: Option<Tid>,
}

/// One entry of [`Storage::history`], newest first.
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryEntry {
    /// The revision's tid.
    pub tid: Tid,
    /// Its commit time in Unix seconds.
    pub time: f64,
    /// The committing transaction's user name.
    pub user: Vec<u8>,
    /// The committing transaction's description.
    pub description: Vec<u8>,
    /// The committing transaction's pickled extension dict (empty for `{}`).
    pub extension: Vec<u8>,
    /// Size of the record's data in bytes.
    pub size: u64,
}

/// One undoable transaction, as [`Storage::undo_log`] lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct UndoEntry {
    /// The opaque id to pass to [`Storage::undo`]: [`crate::undo_id()`] of the
    /// tid for both storages here, as ZODB's FileStorage writes it.
    pub id: Vec<u8>,
    /// The transaction's tid.
    pub tid: Tid,
    /// Commit time in Unix seconds.
    pub time: f64,
    /// User name.
    pub user: Vec<u8>,
    /// Description.
    pub description: Vec<u8>,
    /// Pickled extension dict (empty for `{}`).
    pub extension: Vec<u8>,
    /// Size of the transaction record in bytes.
    pub size: u64,
}

/// One data record of a transaction, as iteration yields it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataRecord {
    /// The object.
    pub oid: Oid,
    /// The revision's tid (the enclosing transaction's).
    pub tid: Tid,
    /// The object record; `None` when the record says the object does not
    /// exist in this revision (creation undone, or deleted).
    pub data: Option<Vec<u8>>,
    /// When the data was copied from an earlier transaction by reference
    /// (a backpointer), that transaction's tid.
    pub data_txn: Option<Tid>,
}

/// One transaction, as [`Storage::iterator`] yields it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransactionRecord {
    /// The transaction id.
    pub tid: Tid,
    /// Its status byte.
    pub status: TxnStatus,
    /// User, description and extension.
    pub meta: TransactionMetaData,
    /// The data records in file order.
    pub records: Vec<DataRecord>,
}

/// One current record, as [`Storage::record_iternext`] yields it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CurrentRecord {
    /// The object.
    pub oid: Oid,
    /// Its current tid.
    pub tid: Tid,
    /// Its current data.
    pub data: Vec<u8>,
    /// The next oid to ask for, `None` after the last object.
    pub next: Option<Oid>,
}

/// Which transactions [`Storage::undo_log`] lists.
pub type UndoFilter<'a> = &'a dyn Fn(&UndoEntry) -> bool;

/// An iterator over transactions, oldest first.
pub type TransactionIter<'a> = Box<dyn Iterator<Item = Result<TransactionRecord>> + Send + 'a>;

/// The contract every storage keeps: FileStorage, MappingStorage, and the
/// network client.
///
/// Implementations are `Send + Sync`; any number of threads may read while one
/// transaction commits.
pub trait Storage: Send + Sync {
    /// An informational name (FileStorage: the file's path).
    fn name(&self) -> &str;

    /// Whether writes are refused.
    fn is_read_only(&self) -> bool;

    /// Approximate size in bytes.
    fn size(&self) -> u64;

    /// Approximate number of objects.
    fn len(&self) -> u64;

    /// Whether the storage holds no object.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The last committed transaction, [`Tid::ZERO`] when there is none.
    fn last_transaction(&self) -> Tid;

    /// The current revision of an object: its data and tid.
    fn load(&self, oid: Oid) -> Result<(Vec<u8>, Tid)>;

    /// The revision that was current just before `before`, `Ok(None)` when the
    /// object exists but has no revision that old.
    fn load_before(&self, oid: Oid, before: Tid) -> Result<Option<LoadedRevision>>;

    /// The data of one exact revision.
    fn load_serial(&self, oid: Oid, serial: Tid) -> Result<Vec<u8>>;

    /// The tid of an object's current revision.
    fn get_tid(&self, oid: Oid) -> Result<Tid> {
        self.load(oid).map(|(_, tid)| tid)
    }

    /// Up to `size` revisions of an object, newest first.
    fn history(&self, oid: Oid, size: usize) -> Result<Vec<HistoryEntry>>;

    /// Allocates a new object id.
    fn new_oid(&self) -> Result<Oid>;

    /// Starts a two-phase commit, waiting while another one is in progress.
    fn tpc_begin(&self, meta: &TransactionMetaData, options: BeginOptions) -> Result<TxnHandle>;

    /// The tid the transaction will commit under, known from `tpc_begin` on.
    fn transaction_tid(&self, txn: TxnHandle) -> Result<Tid>;

    /// Stages a new revision. `serial` is the revision the data was based on
    /// ([`Tid::ZERO`] for a new object); a stale serial fails with
    /// [`Error::Conflict`].
    fn store(&self, txn: TxnHandle, oid: Oid, serial: Tid, data: &[u8]) -> Result<()>;

    /// Fails with [`Error::ReadConflict`] unless `serial` is the object's
    /// current revision; the commit lock keeps it current until finish.
    fn check_current_serial(&self, txn: TxnHandle, oid: Oid, serial: Tid) -> Result<()>;

    /// Stages a record saying the object no longer exists (`IExternalGC`).
    fn delete_object(&self, txn: TxnHandle, oid: Oid, serial: Tid) -> Result<()>;

    /// Copies a revision in without conflict checks (`IStorageRestoreable`).
    /// `data` `None` writes a "no data" record. With `prev_txn`, a storage may
    /// point to identical data in that transaction instead of copying it.
    fn restore(
        &self,
        txn: TxnHandle,
        oid: Oid,
        serial: Tid,
        data: Option<&[u8]>,
        prev_txn: Option<Tid>,
    ) -> Result<()>;

    /// Stages the undo of the transaction `undo_id` names (an id from
    /// [`Storage::undo_log`]); returns the oids it changes.
    fn undo(&self, txn: TxnHandle, undo_id: &[u8]) -> Result<Vec<Oid>>;

    /// Makes the transaction durable up to the final flip; returns the oids
    /// whose data differs from what was stored (resolved conflicts).
    fn tpc_vote(&self, txn: TxnHandle) -> Result<Vec<Oid>>;

    /// Commits. `on_commit` runs with the new tid once the transaction is
    /// durable (after the fsync) but before readers can see it, while the
    /// storage still holds its commit lock. A server queues invalidations
    /// there, so that no client can load a revision before it has been sent
    /// the invalidations that precede it, and no client hears of a tid that a
    /// crash could still take back.
    fn tpc_finish(&self, txn: TxnHandle, on_commit: &mut dyn FnMut(Tid)) -> Result<Tid>;

    /// Discards the transaction; ignored when `txn` is not the current one.
    fn tpc_abort(&self, txn: TxnHandle);

    /// Transactions with `start <= tid <= stop`, oldest first.
    fn iterator(&self, start: Option<Tid>, stop: Option<Tid>) -> Result<TransactionIter<'_>>;

    /// The tids and changed oids of the last `count` transactions, oldest
    /// first (ZODB's `lastInvalidations`): what a server seeds its
    /// invalidation queue with at start, so clients that missed only those
    /// transactions keep their caches across a server restart.
    fn last_invalidations(&self, count: usize) -> Result<Vec<(Tid, Vec<Oid>)>> {
        let mut last = std::collections::VecDeque::with_capacity(count.min(1024));
        if count == 0 {
            return Ok(Vec::new());
        }
        for txn in self.iterator(None, None)? {
            let txn = txn?;
            if last.len() == count {
                last.pop_front();
            }
            last.push_back((txn.tid, txn.records.iter().map(|r| r.oid).collect()));
        }
        Ok(last.into())
    }

    /// The current record of the first object with an oid `>= next` (from
    /// the lowest when `None`); `Ok(None)` when the storage is empty.
    fn record_iternext(&self, next: Option<Oid>) -> Result<Option<CurrentRecord>>;

    /// Whether [`Storage::undo`] and [`Storage::undo_log`] work.
    fn supports_undo(&self) -> bool {
        false
    }

    /// Undoable transactions, newest first, sliced like ZODB's
    /// `undoLog(first, last)`: a negative `last` means "`-last` entries".
    fn undo_log(
        &self,
        first: i64,
        last: i64,
        filter: Option<UndoFilter<'_>>,
    ) -> Result<Vec<UndoEntry>> {
        let _ = (first, last, filter);
        Ok(Vec::new())
    }

    /// Discards revisions that stopped being current before `pack_time`
    /// (Unix seconds) and, with `gc`, objects unreachable from the root.
    fn pack(&self, pack_time: f64, gc: bool) -> Result<()>;

    /// Releases files and locks; later calls fail with [`Error::Closed`].
    fn close(&self) -> Result<()>;
}

/// Checks the 16-bit limits a Data.fs header imposes on transaction metadata,
/// with the messages ZODB gives.
pub fn check_metadata_lengths(meta: &TransactionMetaData) -> Result<()> {
    if meta.user.len() > usize::from(u16::MAX) {
        return Err(Error::FileStorage("user name too long".into()));
    }
    if meta.description.len() > usize::from(u16::MAX) {
        return Err(Error::FileStorage("description too long".into()));
    }
    if meta.extension.len() > usize::from(u16::MAX) {
        return Err(Error::FileStorage("too much extension data".into()));
    }
    Ok(())
}

/// Resolves ZODB's `undoLog(first, last)` slice bounds: a negative `last`
/// counts entries from `first`.
pub fn undo_log_bounds(first: i64, last: i64) -> (usize, usize) {
    let first = first.max(0) as usize;
    let last = if last < 0 {
        first + (-last) as usize
    } else {
        last as usize
    };
    (first, last.max(first))
}
