//! The storage contract: a small core trait, [`Storage`] (ZODB's
//! `IStorage`), and one trait per optional capability, reached through the
//! core trait's `as_*` accessors:
//!
//! | capability | trait | ZODB interface |
//! |---|---|---|
//! | undo | [`Undo`] | `IStorageUndoable` |
//! | restore / copy | [`Restore`] | `IStorageRestoreable` |
//! | iteration | [`Iteration`] | `IStorageIteration` |
//! | current-record iteration | [`RecordIteration`] | `IStorageCurrentRecordIteration` |
//! | pack / GC | [`Pack`] | (`IStorage.pack`) |
//! | external GC | [`ExternalGc`] | `IExternalGC` |
//! | blobs | [`Blobs`] | `IBlobStorage` |
//! | commits by other writers | [`SharedCommits`] | (RelStorage's polling) |
//!
//! A backend implements the core and the capabilities it has; callers ask
//! [`Storage::capabilities`] (or an accessor) and get
//! [`Error::Unsupported`] from [`require`] when a capability is missing.
//!
//! ## Calls that may block
//!
//! [`Storage::may_block`] says whether the backend's calls can wait on
//! something other than local memory and the page cache (a network round
//! trip, a synchronous database driver, a lock held across I/O). A server
//! runs every call of such a backend on a blocking thread, never on an async
//! runtime worker; a backend that answers `false` (FileStorage,
//! MappingStorage) may be called right on a worker thread, which saves two
//! thread wake-ups per call. Whatever it answers, the accessors `name`,
//! `is_read_only`, `size`, `len`, `last_transaction`, `may_block` and the
//! `as_*` capability accessors must answer from memory without blocking:
//! they are called anywhere.
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

/// A committed transaction's status, ZODB's
/// `IStorageTransactionInformation.status` (a one-character string there;
/// the same character travels in ZEO's `tpc_begin` and iterator replies).
///
/// Only [`TxnStatus::Committed`] and [`TxnStatus::Packed`] mean anything
/// to a backend other than FileStorage: a backend with no use for the
/// distinction reports `Committed` and may refuse to commit as anything
/// else.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
#[non_exhaustive]
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
    /// The status character as ZODB and the ZEO wire spell it.
    pub fn as_byte(self) -> u8 {
        match self {
            TxnStatus::Committed => b' ',
            TxnStatus::Packed => b'p',
            TxnStatus::Checkpoint => b'c',
            TxnStatus::Undone => b'u',
        }
    }

    /// Parses a status character.
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
    /// The status to commit with (copying can commit `Packed`).
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

/// One undoable transaction, as [`Undo::undo_log`] lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct UndoEntry {
    /// The opaque id to pass to [`Undo::undo`]: [`crate::undo_id()`] of the
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

/// One transaction, as [`Iteration::iterator`] yields it.
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

/// One current record, as [`RecordIteration::record_iternext`] yields it.
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

/// Which transactions [`Undo::undo_log`] lists.
pub type UndoFilter<'a> = &'a dyn Fn(&UndoEntry) -> bool;

/// An iterator over transactions, oldest first.
pub type TransactionIter<'a> = Box<dyn Iterator<Item = Result<TransactionRecord>> + Send + 'a>;

/// An iterator over transactions' tids and the oids they changed, oldest
/// first ([`Iteration::changed_oids`]).
pub type ChangedOidsIter<'a> = Box<dyn Iterator<Item = Result<(Tid, Vec<Oid>)>> + Send + 'a>;

/// A transaction whose `tpc_finish` was submitted
/// ([`Storage::tpc_finish_submit`]) and is waiting to be made durable
/// ([`Storage::tpc_finish_durable`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Submitted {
    /// The transaction.
    pub txn: TxnHandle,
    /// Its tid, when the submission already fixed it.
    pub tid: Option<Tid>,
}

/// The contract every storage keeps: the reads, the object ids and the
/// two-phase commit of ZODB's `IStorage`. Everything else is a capability
/// (see the [module documentation](self)).
///
/// Implementations are `Send + Sync`; any number of threads may read while one
/// transaction commits.
///
/// # Two-phase commit
///
/// `tpc_begin` takes the storage's commit lock and returns a [`TxnHandle`]
/// that every later call of that transaction names; `tpc_finish` or
/// `tpc_abort` releases it. Calls naming a handle that is not the current
/// transaction fail with [`Error::Transaction`], except `tpc_abort`, which
/// ignores them as ZODB does. The tid may be chosen at `tpc_begin`, at vote,
/// or only at finish (as a database that assigns it in its own commit does):
/// [`Storage::transaction_tid`] answers `None` until it is chosen, and
/// finish returns it.
///
/// Finishing has two halves so that a backend can sync several
/// transactions at once (group commit): [`Storage::tpc_finish_submit`]
/// fixes the transaction's place in the commit order and may release the
/// commit lock; [`Storage::tpc_finish_durable`] waits until it is durable,
/// runs the publication callback, and only then makes it visible to
/// readers. Callbacks of successive transactions run in commit order. A
/// backend that syncs each transaction on its own implements only
/// [`Storage::tpc_finish`], which the defaults of the two halves call.
///
/// Reads (`load*`, `history`, iteration) never wait for a commit in
/// progress: they see the last finished transaction.
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

    /// Whether calls other than the cheap accessors may block the calling
    /// thread on anything but memory and local disk (see the [module
    /// documentation](self)). `true` unless the backend says otherwise: a
    /// server then runs its calls on blocking threads only.
    fn may_block(&self) -> bool {
        true
    }

    /// The current revision of an object: its data and tid.
    fn load(&self, oid: Oid) -> Result<(Vec<u8>, Tid)>;

    /// The revision that was current just before `before`, `Ok(None)` when the
    /// object exists but has no revision that old.
    fn load_before(&self, oid: Oid, before: Tid) -> Result<Option<LoadedRevision>>;

    /// The data of one exact revision. A history-free backend may answer
    /// only for the current revision ([`Error::PosKey`] for the others).
    fn load_serial(&self, oid: Oid, serial: Tid) -> Result<Vec<u8>>;

    /// The tid of an object's current revision.
    fn get_tid(&self, oid: Oid) -> Result<Tid> {
        self.load(oid).map(|(_, tid)| tid)
    }

    /// Up to `size` revisions of an object, newest first. The default,
    /// for history-free backends, lists the current revision only, with
    /// no transaction metadata.
    fn history(&self, oid: Oid, size: usize) -> Result<Vec<HistoryEntry>> {
        let (data, tid) = self.load(oid)?;
        if size == 0 {
            return Ok(Vec::new());
        }
        Ok(vec![HistoryEntry {
            tid,
            time: tid.unix_time(),
            user: Vec::new(),
            description: Vec::new(),
            extension: Vec::new(),
            size: data.len() as u64,
        }])
    }

    /// Allocates a new object id.
    fn new_oid(&self) -> Result<Oid>;

    /// Starts a two-phase commit, waiting while another one is in progress.
    /// [`BeginOptions`] other than the defaults are for copying and
    /// restoring; a backend without [`Restore`] may refuse them with
    /// [`Error::Unsupported`].
    fn tpc_begin(&self, meta: &TransactionMetaData, options: BeginOptions) -> Result<TxnHandle>;

    /// The tid the transaction will commit under, `Ok(None)` while the
    /// backend has not chosen it yet (it may wait until finish).
    fn transaction_tid(&self, txn: TxnHandle) -> Result<Option<Tid>>;

    /// Stages a new revision. `serial` is the revision the data was based on
    /// ([`Tid::ZERO`] for a new object); a stale serial fails with
    /// [`Error::Conflict`], at the latest by the vote.
    fn store(&self, txn: TxnHandle, oid: Oid, serial: Tid, data: &[u8]) -> Result<()>;

    /// Fails with [`Error::ReadConflict`] unless `serial` is the object's
    /// current revision; the commit lock keeps it current until finish.
    fn check_current_serial(&self, txn: TxnHandle, oid: Oid, serial: Tid) -> Result<()>;

    /// Makes the transaction ready to commit; returns the oids whose data
    /// differs from what was stored (resolved conflicts, undone objects).
    fn tpc_vote(&self, txn: TxnHandle) -> Result<Vec<Oid>>;

    /// Commits in one step. `on_commit` runs with the new tid once the
    /// transaction is durable but before readers can see it, in commit
    /// order (a group-committing backend may already have let the next
    /// transaction begin). A server queues invalidations
    /// there, so that no client can load a revision before it has been sent
    /// the invalidations that precede it, and no client hears of a tid that
    /// a crash could still take back.
    fn tpc_finish(&self, txn: TxnHandle, on_commit: &mut dyn FnMut(Tid)) -> Result<Tid>;

    /// The first half of finishing: fixes the transaction's place in the
    /// commit order. After it returns, the transaction can no longer fail
    /// for a reason of its own; a group-committing backend has released its
    /// commit lock (the next transaction may begin) but may not have synced.
    /// The default does nothing and leaves the work to
    /// [`Storage::tpc_finish_durable`].
    fn tpc_finish_submit(&self, txn: TxnHandle) -> Result<Submitted> {
        Ok(Submitted { txn, tid: None })
    }

    /// The second half: waits until the submitted transaction is durable,
    /// runs `on_commit` with its tid (as [`Storage::tpc_finish`] does, and
    /// in commit order), then makes it visible and returns the tid. The
    /// default calls [`Storage::tpc_finish`].
    fn tpc_finish_durable(
        &self,
        submitted: Submitted,
        on_commit: &mut dyn FnMut(Tid),
    ) -> Result<Tid> {
        self.tpc_finish(submitted.txn, on_commit)
    }

    /// How many syncs the backend's commits made so far (FileStorage: the
    /// data file's fsyncs), `None` when it does not count them. With group
    /// commit one sync covers several transactions; a server reports the
    /// count as `fsyncs`.
    fn syncs(&self) -> Option<u64> {
        None
    }

    /// Tells the backend how many of the caller's transactions will call
    /// [`Storage::tpc_finish_submit`] soon: the one between its vote and
    /// its submit and those queued behind it (a server's commit lock,
    /// released at submit). A group-committing backend lets the sync of the
    /// transactions already submitted wait for them while the count is
    /// above zero (bounded, see the backend), so that one sync covers them
    /// too. A caller that keeps its own lock until the transaction is
    /// durable must not call it: the sync would wait for transactions that
    /// cannot come. The default ignores it.
    ///
    /// ```
    /// use zeo_storage::{MappingStorage, Storage};
    ///
    /// let storage = MappingStorage::new("m");
    /// storage.commits_coming(2);
    /// storage.commits_coming(0);
    /// ```
    fn commits_coming(&self, count: usize) {
        let _ = count;
    }

    /// Discards the transaction; ignored when `txn` is not the current one.
    fn tpc_abort(&self, txn: TxnHandle);

    /// The tids and changed oids of the last `count` transactions, oldest
    /// first (ZODB's `lastInvalidations`): what a server seeds its
    /// invalidation queue with at start, so clients that missed only those
    /// transactions keep their caches across a server restart. The default
    /// walks [`Iteration`], and is empty without it.
    fn last_invalidations(&self, count: usize) -> Result<Vec<(Tid, Vec<Oid>)>> {
        let Some(iteration) = self.as_iteration() else {
            return Ok(Vec::new());
        };
        if count == 0 {
            return Ok(Vec::new());
        }
        let mut last = std::collections::VecDeque::with_capacity(count.min(1024));
        for txn in iteration.iterator(None, None)? {
            let txn = txn?;
            if last.len() == count {
                last.pop_front();
            }
            last.push_back((txn.tid, txn.records.iter().map(|r| r.oid).collect()));
        }
        Ok(last.into())
    }

    /// Releases files, connections and locks; later calls fail with
    /// [`Error::Closed`].
    fn close(&self) -> Result<()>;

    /// Undo, when the backend keeps history and can undo it.
    fn as_undo(&self) -> Option<&dyn Undo> {
        None
    }

    /// Restoring and copying records verbatim.
    fn as_restore(&self) -> Option<&dyn Restore> {
        None
    }

    /// Iterating over committed transactions.
    fn as_iteration(&self) -> Option<&dyn Iteration> {
        None
    }

    /// Iterating over current records by oid.
    fn as_record_iteration(&self) -> Option<&dyn RecordIteration> {
        None
    }

    /// Packing away old revisions (and unreachable objects).
    fn as_pack(&self) -> Option<&dyn Pack> {
        None
    }

    /// Deleting objects that an outside collector found unreachable.
    fn as_external_gc(&self) -> Option<&dyn ExternalGc> {
        None
    }

    /// Storing and loading blobs.
    fn as_blobs(&self) -> Option<&dyn Blobs> {
        None
    }

    /// Learning of commits that other writers made to the same database
    /// (other servers, other applications).
    fn as_shared_commits(&self) -> Option<&dyn SharedCommits> {
        None
    }

    /// The capabilities the accessors report.
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            undo: self.as_undo().is_some(),
            restore: self.as_restore().is_some(),
            iteration: self.as_iteration().is_some(),
            record_iteration: self.as_record_iteration().is_some(),
            pack: self.as_pack().is_some(),
            external_gc: self.as_external_gc().is_some(),
            blobs: self.as_blobs().is_some(),
            shared_commits: self.as_shared_commits().is_some(),
        }
    }
}

/// Writes a [`Storage`] impl's `as_*` accessors for the capabilities the
/// type implements itself: any of `undo`, `restore`, `iteration`,
/// `record_iteration`, `pack`, `external_gc`, `blobs`, `shared_commits`.
///
/// ```
/// # use zeo_storage::*;
/// # struct Mine(MappingStorage);
/// # impl Pack for Mine {
/// #     fn pack(&self, t: f64, gc: bool) -> Result<()> { self.0.pack(t, gc) }
/// # }
/// impl Storage for Mine {
///     // name, load, tpc_begin, ... as every backend.
/// #   fn name(&self) -> &str { self.0.name() }
/// #   fn is_read_only(&self) -> bool { false }
/// #   fn size(&self) -> u64 { self.0.size() }
/// #   fn len(&self) -> u64 { self.0.len() }
/// #   fn last_transaction(&self) -> Tid { self.0.last_transaction() }
/// #   fn load(&self, oid: Oid) -> Result<(Vec<u8>, Tid)> { self.0.load(oid) }
/// #   fn load_before(&self, oid: Oid, t: Tid) -> Result<Option<LoadedRevision>> { self.0.load_before(oid, t) }
/// #   fn load_serial(&self, oid: Oid, t: Tid) -> Result<Vec<u8>> { self.0.load_serial(oid, t) }
/// #   fn new_oid(&self) -> Result<Oid> { self.0.new_oid() }
/// #   fn tpc_begin(&self, m: &TransactionMetaData, o: BeginOptions) -> Result<TxnHandle> { self.0.tpc_begin(m, o) }
/// #   fn transaction_tid(&self, t: TxnHandle) -> Result<Option<Tid>> { self.0.transaction_tid(t) }
/// #   fn store(&self, t: TxnHandle, oid: Oid, s: Tid, d: &[u8]) -> Result<()> { self.0.store(t, oid, s, d) }
/// #   fn check_current_serial(&self, t: TxnHandle, oid: Oid, s: Tid) -> Result<()> { self.0.check_current_serial(t, oid, s) }
/// #   fn tpc_vote(&self, t: TxnHandle) -> Result<Vec<Oid>> { self.0.tpc_vote(t) }
/// #   fn tpc_finish(&self, t: TxnHandle, f: &mut dyn FnMut(Tid)) -> Result<Tid> { self.0.tpc_finish(t, f) }
/// #   fn tpc_abort(&self, t: TxnHandle) { self.0.tpc_abort(t) }
/// #   fn close(&self) -> Result<()> { self.0.close() }
///     zeo_storage::provide_capabilities!(pack);
/// }
///
/// let mine = Mine(MappingStorage::new("m"));
/// assert!(mine.capabilities().pack);
/// assert!(!mine.capabilities().undo);
/// ```
#[macro_export]
macro_rules! provide_capabilities {
    ($($capability:ident),* $(,)?) => {
        $($crate::provide_capabilities!(@one $capability);)*
    };
    (@one undo) => {
        fn as_undo(&self) -> Option<&dyn $crate::Undo> {
            Some(self)
        }
    };
    (@one restore) => {
        fn as_restore(&self) -> Option<&dyn $crate::Restore> {
            Some(self)
        }
    };
    (@one iteration) => {
        fn as_iteration(&self) -> Option<&dyn $crate::Iteration> {
            Some(self)
        }
    };
    (@one record_iteration) => {
        fn as_record_iteration(&self) -> Option<&dyn $crate::RecordIteration> {
            Some(self)
        }
    };
    (@one pack) => {
        fn as_pack(&self) -> Option<&dyn $crate::Pack> {
            Some(self)
        }
    };
    (@one external_gc) => {
        fn as_external_gc(&self) -> Option<&dyn $crate::ExternalGc> {
            Some(self)
        }
    };
    (@one blobs) => {
        fn as_blobs(&self) -> Option<&dyn $crate::Blobs> {
            Some(self)
        }
    };
    (@one shared_commits) => {
        fn as_shared_commits(&self) -> Option<&dyn $crate::SharedCommits> {
            Some(self)
        }
    };
}

/// The capability a call needs, or [`Error::Unsupported`] naming it.
///
/// ```
/// use zeo_storage::{interface::require, MappingStorage, Storage};
///
/// let storage = MappingStorage::new("demo");
/// let pack = require(storage.as_pack(), "pack").unwrap();
/// pack.pack(0.0, false).unwrap();
/// ```
pub fn require<'a, T: ?Sized>(capability: Option<&'a T>, what: &'static str) -> Result<&'a T> {
    capability.ok_or(Error::Unsupported(what))
}

/// `IStorageUndoable`: undoing committed transactions.
pub trait Undo: Send + Sync {
    /// Stages the undo of the transaction `undo_id` names (an id from
    /// [`Undo::undo_log`]); returns the oids it changes.
    fn undo(&self, txn: TxnHandle, undo_id: &[u8]) -> Result<Vec<Oid>>;

    /// Undoable transactions, newest first, sliced like ZODB's
    /// `undoLog(first, last)`: a negative `last` means "`-last` entries".
    fn undo_log(
        &self,
        first: i64,
        last: i64,
        filter: Option<UndoFilter<'_>>,
    ) -> Result<Vec<UndoEntry>>;
}

/// `IStorageRestoreable`: copying revisions in verbatim, with their tids
/// (`tpc_begin` with [`BeginOptions::tid`]).
pub trait Restore: Send + Sync {
    /// Copies a revision in without conflict checks. `data` `None` writes a
    /// "no data" record. With `prev_txn`, a storage may point to identical
    /// data in that transaction instead of copying it.
    fn restore(
        &self,
        txn: TxnHandle,
        oid: Oid,
        serial: Tid,
        data: Option<&[u8]>,
        prev_txn: Option<Tid>,
    ) -> Result<()>;
}

/// `IStorageIteration`: committed transactions in order.
pub trait Iteration: Send + Sync {
    /// Transactions with `start <= tid <= stop`, oldest first.
    fn iterator(&self, start: Option<Tid>, stop: Option<Tid>) -> Result<TransactionIter<'_>>;

    /// The tid and changed oids of every transaction with
    /// `start <= tid <= stop`, oldest first, without their data or
    /// metadata: what a server walks for `getInvalidations` when its
    /// invalidation queue does not reach back far enough. The default
    /// walks [`Iteration::iterator`]; a backend that can read the oids
    /// without the data should override it.
    fn changed_oids(&self, start: Option<Tid>, stop: Option<Tid>) -> Result<ChangedOidsIter<'_>> {
        Ok(Box::new(self.iterator(start, stop)?.map(|txn| {
            txn.map(|t| (t.tid, t.records.into_iter().map(|r| r.oid).collect()))
        })))
    }
}

/// `IStorageCurrentRecordIteration`: the current records in oid order.
pub trait RecordIteration: Send + Sync {
    /// The current record of the first object with an oid `>= next` (from
    /// the lowest when `None`); `Ok(None)` when the storage is empty.
    fn record_iternext(&self, next: Option<Oid>) -> Result<Option<CurrentRecord>>;
}

/// Packing: discarding history, and with `gc` unreachable objects.
pub trait Pack: Send + Sync {
    /// Discards revisions that stopped being current before `pack_time`
    /// (Unix seconds) and, with `gc`, objects unreachable from the root.
    fn pack(&self, pack_time: f64, gc: bool) -> Result<()>;
}

/// `IExternalGC`: deleting objects a collector outside the storage found
/// unreachable.
pub trait ExternalGc: Send + Sync {
    /// Stages a record saying the object no longer exists; `serial` must be
    /// its current revision.
    fn delete_object(&self, txn: TxnHandle, oid: Oid, serial: Tid) -> Result<()>;
}

/// Where a blob's bytes come from when it is stored.
#[non_exhaustive]
pub enum BlobSource {
    /// A file the caller wrote in [`Blobs::temporary_directory`]; the
    /// storage takes ownership of it (renames it into place, or removes it
    /// when the transaction aborts). The caller must not touch it again.
    File(std::path::PathBuf),
    /// A stream the storage reads to its end during the call.
    Stream(Box<dyn std::io::Read + Send>),
}

/// How a committed blob revision is handed out.
#[non_exhaustive]
pub enum BlobData {
    /// A file that stays valid, unchanged, until the revision is packed
    /// away; readers must not write it.
    Path(std::path::PathBuf),
    /// A stream of the blob's bytes.
    Reader(Box<dyn std::io::Read + Send>),
}

impl fmt::Debug for BlobData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlobData::Path(p) => f.debug_tuple("Path").field(p).finish(),
            BlobData::Reader(_) => f.write_str("Reader(..)"),
        }
    }
}

/// `IBlobStorage`: objects with a large binary body kept beside the record.
///
/// Blob revisions are immutable and named by `(oid, tid)`: a file-based
/// backend lays them out as ZODB's bushy layout does (one directory level
/// per oid byte, `<tid>.blob` inside), so undo can hard-link or copy the
/// older revision's file under the new tid, and pack removes the files of
/// the revisions it discards. Temporary files belong to the storage from the
/// moment they are handed to [`Blobs::store_blob`]: it removes them on
/// abort and on close.
pub trait Blobs: Send + Sync {
    /// A directory on the same file system as the blob store, where callers
    /// write blob files before storing them (so that storing is a rename).
    fn temporary_directory(&self) -> &std::path::Path;

    /// Stages a new revision with its blob, like [`Storage::store`].
    fn store_blob(
        &self,
        txn: TxnHandle,
        oid: Oid,
        serial: Tid,
        data: &[u8],
        blob: BlobSource,
    ) -> Result<()>;

    /// The blob of one committed revision; [`Error::PosKey`] when that
    /// revision has no blob.
    fn load_blob(&self, oid: Oid, serial: Tid) -> Result<BlobData>;

    /// The directory of an oid's revisions in a ZODB blob directory that
    /// clients may share (ZEO's `shared_blob_dir`): where such a client
    /// writes a new blob before `storeBlobShared` names it. `None` for a
    /// backend whose blobs are not files in ZODB's layout.
    ///
    /// Added beside the original shape of this trait once serving shared
    /// blob directories showed that the server must resolve the bare file
    /// name a client sends against the backend's own layout.
    fn oid_directory(&self, oid: Oid) -> Option<std::path::PathBuf> {
        let _ = oid;
        None
    }

    /// Appends `chunk` to `file`, a file being written in
    /// [`Blobs::temporary_directory`] (a server streaming an upload to it),
    /// through the backend's own write path: a backend with a
    /// fault-injection seam runs out of space here as it would on a full
    /// disk. An error leaves the file's length unspecified; the caller
    /// removes the file.
    ///
    /// ```
    /// use zeo_storage::filestorage::FileStorageOptions;
    /// use zeo_storage::{Blobs, FileStorage};
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let fs = FileStorage::open_with_blobs(
    ///     dir.path().join("Data.fs"), FileStorageOptions::default(), dir.path().join("blobs"),
    /// ).unwrap();
    /// let path = fs.temporary_directory().join("upload.tmp");
    /// let file = std::fs::File::create(&path).unwrap();
    /// fs.append_to_temporary(&file, b"first ").unwrap();
    /// fs.append_to_temporary(&file, b"chunk").unwrap();
    /// assert_eq!(std::fs::read(&path).unwrap(), b"first chunk");
    /// ```
    fn append_to_temporary(&self, file: &std::fs::File, chunk: &[u8]) -> std::io::Result<()> {
        std::io::Write::write_all(&mut &*file, chunk)
    }

    /// Copies a revision in with its blob, like [`Restore::restore`]
    /// (`IBlobStorageRestoreable`); `None` when the revision has no blob.
    fn restore_blob(
        &self,
        txn: TxnHandle,
        oid: Oid,
        serial: Tid,
        data: Option<&[u8]>,
        blob: Option<BlobSource>,
    ) -> Result<()> {
        let _ = (txn, oid, serial, data, blob);
        Err(Error::Unsupported("restoreBlob"))
    }
}

/// One transaction another writer committed, as [`SharedCommits`] reports
/// it: its tid and the objects it changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForeignCommit {
    /// The transaction's tid.
    pub tid: Tid,
    /// The objects it wrote (in no particular order, without repeats).
    pub oids: Vec<Oid>,
}

/// A database that other writers commit to as well: several servers over
/// one database, or applications writing to it directly (RelStorage
/// clients beside zeo-servers on PostgreSQL).
///
/// A server serving such a storage cannot learn of every commit from its
/// own clients. It asks the backend instead, in a loop: wait until
/// something may have been committed ([`SharedCommits::wait_for_commits`]),
/// then read what was committed after the last transaction it announced
/// ([`SharedCommits::commits_after`]), and tell its clients. The backend's
/// own commits show up in that list too; the server recognises them (it
/// announces them itself) and never announces one twice.
///
/// The list is authoritative: a wake-up only says when to look, so a lost
/// or spurious notification costs latency, never correctness. A backend
/// with no way of being woken waits out the timeout and returns `false`,
/// which makes the server's loop a periodic poll.
///
/// ```
/// use std::time::Duration;
/// use zeo_storage::testing::{commit, record, SharedDatabase};
/// use zeo_storage::{Storage, Tid};
///
/// let db = SharedDatabase::new("one database");
/// let (a, b) = (db.handle(), db.handle());
/// let oid = a.new_oid().unwrap();
/// let tid = commit(&a, &[(oid, Tid::ZERO, record(&[], b"data"))]).unwrap();
/// let shared = b.as_shared_commits().unwrap();
/// assert!(shared.wait_for_commits(Duration::from_secs(5)).unwrap());
/// let seen = shared.commits_after(Tid::ZERO, 100).unwrap();
/// assert_eq!((seen[0].tid, seen[0].oids.clone()), (tid, vec![oid]));
/// ```
pub trait SharedCommits: Send + Sync {
    /// Transactions committed with a tid after `after`, oldest first, at
    /// most `limit` of them (the caller asks again from the last one for
    /// more). Only transactions that are durable and visible to every
    /// reader of the database are listed, and once a transaction is
    /// listed no transaction with a smaller tid may appear later: the
    /// backend reads in its database's commit order.
    fn commits_after(&self, after: Tid, limit: usize) -> Result<Vec<ForeignCommit>>;

    /// Blocks until something may have been committed since the previous
    /// call, or `timeout` passes: `Ok(true)` when woken, `Ok(false)` on
    /// timeout (always, for a backend with no wake-up). May return early
    /// for no reason. Runs on a blocking thread.
    fn wait_for_commits(&self, timeout: std::time::Duration) -> Result<bool>;

    /// Whether every transaction stays visible on its own. A history-free
    /// database keeps only current rows: a transaction whose objects were
    /// all rewritten since is no longer visible, and what one read finds
    /// is not a faithful list of transactions. The server then announces
    /// everything one read finds as a single transaction at the newest
    /// tid. `true` by default.
    fn keeps_intermediate_tids(&self) -> bool {
        true
    }
}

/// Which capabilities a storage has: what a server advertises in
/// `get_info` and what the contract suite tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// [`Undo`].
    pub undo: bool,
    /// [`Restore`].
    pub restore: bool,
    /// [`Iteration`].
    pub iteration: bool,
    /// [`RecordIteration`].
    pub record_iteration: bool,
    /// [`Pack`].
    pub pack: bool,
    /// [`ExternalGc`].
    pub external_gc: bool,
    /// [`Blobs`].
    pub blobs: bool,
    /// [`SharedCommits`] (nothing is advertised for it: ZEO clients see
    /// other writers' commits as ordinary invalidations).
    pub shared_commits: bool,
}

impl Capabilities {
    /// The ZODB interfaces (`(module, name)`, most specific first, as ZODB
    /// lists them) a storage with these capabilities provides.
    ///
    /// ```
    /// use zeo_storage::{MappingStorage, Storage};
    ///
    /// let names: Vec<_> = MappingStorage::new("m").capabilities().zodb_interfaces()
    ///     .into_iter().map(|(_, name)| name).collect();
    /// assert!(names.contains(&"IStorageUndoable"));
    /// assert_eq!(names.last(), Some(&"Interface"));
    /// ```
    pub fn zodb_interfaces(&self) -> Vec<(&'static str, &'static str)> {
        let z = "ZODB.interfaces";
        [
            // Restoring blobs: `Blobs::restore_blob` on a backend that
            // also restores records.
            (self.blobs && self.restore, (z, "IBlobStorageRestoreable")),
            (self.blobs, (z, "IBlobStorage")),
            (self.restore, (z, "IStorageRestoreable")),
            (self.iteration, (z, "IStorageIteration")),
            (self.undo, (z, "IStorageUndoable")),
            (self.record_iteration, (z, "IStorageCurrentRecordIteration")),
            (self.external_gc, (z, "IExternalGC")),
            (true, (z, "IStorage")),
            (true, ("zope.interface", "Interface")),
        ]
        .into_iter()
        .filter_map(|(has, name)| has.then_some(name))
        .collect()
    }
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
