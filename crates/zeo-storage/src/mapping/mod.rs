//! An in-memory storage that behaves exactly like ZODB's `FileStorage`.
//!
//! ZODB's own `MappingStorage` keeps one dict per object and has no undo.
//! This one keeps what a `Data.fs` holds, minus the bytes: an ordered list
//! of transactions, each a list of data records that carry their object, tid,
//! previous-revision link and either data, a backpointer to an earlier
//! record, or nothing (a deletion or an undone creation). Every operation
//! then follows the same records FileStorage follows, so the two agree on
//! loads, histories, undo outcomes, iteration and pack results, and the
//! [`Storage::size`] reported is the exact length the `Data.fs` would have.
//! That is what makes it the model the FileStorage is tested against.
//!
//! The model's records and commit live here; each capability has a module
//! of its own (`undo`, `pack`, `restore`, `iteration`, `external_gc`).
//!
//! `tests/model_zodb.rs` replays random operation sequences on ZODB's own
//! FileStorage and checks that every outcome and observation is identical.
//!
//! Deliberate departures from ZODB's FileStorage, all shared with this
//! crate's FileStorage, where ZODB would corrupt its file, leak its lock or
//! fail on data it could handle:
//! * a failed [`Undo::undo`] stages nothing (ZODB leaves orphan records in
//!   its temporary file); callers abort after an `UndoError` anyway. All the
//!   objects that block it are named in one [`Error::Undo`];
//! * [`Storage::tpc_finish`] before [`Storage::tpc_vote`], a second vote, and
//!   staging after the vote fail with [`Error::Transaction`];
//! * `tpc_begin` refuses, before taking the commit lock, metadata too long
//!   for a Data.fs header, an explicit tid not later than the last
//!   transaction, and the statuses `c` and `u`;
//! * empty data records are refused (a Data.fs reads them as backpointers);
//! * `restore`'s `prev_txn` is only a hint, as ZODB documents it: a
//!   transaction no longer present is ignored (ZODB raises `UndoError`),
//!   only data is ever pointed to (a "no data" restore writes a no-data
//!   record), and never from a record saying the object does not exist
//!   (ZODB would point at it and so lose the restored data);
//! * pack inlines the data of a backpointer whose target transaction did not
//!   survive (possible without GC), where ZODB's packer fails.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard};

use crate::error::{Error, Result};
use crate::filestorage::check_metadata_lengths;
use crate::gc::{self, PackView, Reachable};
use crate::ids::{Oid, Tid};
use crate::interface::{
    undo_log_bounds, BeginOptions, CurrentRecord, DataRecord, ExternalGc, HistoryEntry, Iteration,
    LoadedRevision, Pack, RecordIteration, Restore, Storage, TransactionIter, TransactionMetaData,
    TransactionRecord, TxnHandle, TxnStatus, Undo, UndoEntry, UndoFilter,
};
use crate::timestamp::TimeStamp;
use crate::undo_id::tid_from_undo_id;

mod blobs;
mod external_gc;
mod iteration;
mod pack;
mod records;
mod restore;
mod undo;

use records::*;

/// Scans an object record for the oids it references.
type SharedReferences = Arc<dyn Fn(&[u8]) -> Result<Vec<Oid>> + Send + Sync>;

/// State guarded by the commit lock.
struct CommitState {
    pending: Option<Pending>,
    /// The last tid handed out (`_ts`), which later tids must exceed even
    /// when its transaction was aborted.
    last_ts: TimeStamp,
}

/// The in-memory storage. See the module documentation.
pub struct MappingStorage {
    name: String,
    committed: RwLock<Arc<Committed>>,
    commit: Mutex<CommitState>,
    commit_free: Condvar,
    last_oid: Mutex<u64>,
    next_handle: AtomicU64,
    closed: AtomicBool,
    references: SharedReferences,
    /// The blob directory, when made with one.
    blobs: Option<blobs::MappingBlobs>,
}

impl std::fmt::Debug for MappingStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappingStorage")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl MappingStorage {
    /// An empty storage; packs find references with the pickle scanner.
    pub fn new(name: impl Into<String>) -> Self {
        Self::with_references(name, Arc::new(gc::record_references))
    }

    /// An empty storage whose garbage-collecting pack finds the references
    /// of a record with `references` (for records that are not pickles).
    pub fn with_references(name: impl Into<String>, references: SharedReferences) -> Self {
        MappingStorage {
            name: name.into(),
            committed: RwLock::new(Arc::new(Committed {
                size: FILE_HEADER_LEN,
                ..Committed::default()
            })),
            commit: Mutex::new(CommitState {
                pending: None,
                last_ts: TimeStamp::now(),
            }),
            commit_free: Condvar::new(),
            last_oid: Mutex::new(0),
            next_handle: AtomicU64::new(1),
            closed: AtomicBool::new(false),
            references,
            blobs: None,
        }
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// A snapshot of the committed state; readers never wait for writers
    /// longer than a pointer swap.
    fn snapshot(&self) -> Result<Arc<Committed>> {
        self.check_open()?;
        Ok(self.read_committed().clone())
    }

    fn read_committed(&self) -> RwLockReadGuard<'_, Arc<Committed>> {
        self.committed.read().unwrap_or_else(|e| e.into_inner())
    }

    fn install(&self, state: Committed) {
        *self.committed.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(state);
    }

    fn lock_commit(&self) -> MutexGuard<'_, CommitState> {
        self.commit.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The commit state once no transaction is in progress (what
    /// `tpc_begin` and pack wait for); `Closed` if the storage closes
    /// meanwhile.
    fn lock_idle(&self) -> Result<MutexGuard<'_, CommitState>> {
        let mut guard = self.lock_commit();
        while guard.pending.is_some() {
            self.check_open()?;
            guard = self
                .commit_free
                .wait(guard)
                .unwrap_or_else(|e| e.into_inner());
        }
        self.check_open()?;
        Ok(guard)
    }

    /// Runs `f` on the current transaction, which `txn` must name; staging
    /// calls also require that the vote has not happened yet.
    fn with_pending<T>(
        &self,
        txn: TxnHandle,
        what: &str,
        staging: bool,
        f: impl FnOnce(&mut Pending, &Committed) -> Result<T>,
    ) -> Result<T> {
        self.check_open()?;
        let mut guard = self.lock_commit();
        let pending = match guard.pending.as_mut() {
            Some(p) if p.handle == txn => p,
            _ => {
                return Err(Error::Transaction(format!(
                    "{what} called with wrong transaction"
                )))
            }
        };
        if staging && pending.voted {
            return Err(Error::Transaction(format!("{what} called after tpc_vote")));
        }
        // The commit lock is held, so the committed state cannot change.
        let committed = self.read_committed().clone();
        f(pending, &committed)
    }

    fn raise_max_oid(&self, oid: Oid) {
        let mut last = self.last_oid.lock().unwrap_or_else(|e| e.into_inner());
        if oid.0 > *last {
            *last = oid.0;
        }
    }
}

impl Storage for MappingStorage {
    fn name(&self) -> &str {
        &self.name
    }

    fn is_read_only(&self) -> bool {
        false
    }

    fn size(&self) -> u64 {
        self.read_committed().size
    }

    fn len(&self) -> u64 {
        self.read_committed().index.len() as u64
    }

    fn last_transaction(&self) -> Tid {
        self.read_committed().last_tid
    }

    fn load(&self, oid: Oid) -> Result<(Vec<u8>, Tid)> {
        let c = self.snapshot()?;
        let rec = c.current(oid)?;
        Ok((c.record_data(rec)?.to_vec(), rec.tid))
    }

    fn load_before(&self, oid: Oid, before: Tid) -> Result<Option<LoadedRevision>> {
        let c = self.snapshot()?;
        let mut id = *c.index.get(&oid).ok_or_else(|| Error::pos_key(oid))?;
        let mut end = None;
        loop {
            let rec = c.record(id)?;
            if rec.tid < before {
                let data = c.record_data(rec)?.to_vec();
                return Ok(Some(LoadedRevision {
                    data,
                    start: rec.tid,
                    end,
                }));
            }
            end = Some(rec.tid);
            match rec.prev {
                Some(p) => id = p,
                None => return Ok(None),
            }
        }
    }

    fn load_serial(&self, oid: Oid, serial: Tid) -> Result<Vec<u8>> {
        let c = self.snapshot()?;
        let mut id = *c.index.get(&oid).ok_or_else(|| Error::pos_key(oid))?;
        loop {
            let rec = c.record(id)?;
            if rec.tid == serial {
                return match &rec.payload {
                    Payload::Data(d) => Ok(d.to_vec()),
                    Payload::Back(b) => Ok(c.load_back(oid, *b)?.to_vec()),
                    Payload::Nothing => Err(Error::pos_key(oid)),
                };
            }
            match rec.prev {
                Some(p) if rec.tid > serial => id = p,
                _ => return Err(Error::pos_key(oid)),
            }
        }
    }

    fn get_tid(&self, oid: Oid) -> Result<Tid> {
        self.snapshot()?.current_tid(oid)
    }

    fn history(&self, oid: Oid, size: usize) -> Result<Vec<HistoryEntry>> {
        let c = self.snapshot()?;
        let mut next = Some(*c.index.get(&oid).ok_or_else(|| Error::pos_key(oid))?);
        let mut out = Vec::new();
        while let Some(id) = next {
            if out.len() >= size {
                break;
            }
            let rec = c.record(id)?;
            let txn = c
                .txns
                .get(&id.txn)
                .ok_or_else(|| Error::Storage(format!("dangling record reference {id:?}")))?;
            out.push(HistoryEntry {
                tid: rec.tid,
                time: rec.tid.unix_time(),
                user: txn.meta.user.clone(),
                description: txn.meta.description.clone(),
                extension: txn.meta.extension.clone(),
                size: rec.payload.plen(),
            });
            next = rec.prev;
        }
        Ok(out)
    }

    fn new_oid(&self) -> Result<Oid> {
        self.check_open()?;
        let mut last = self.last_oid.lock().unwrap_or_else(|e| e.into_inner());
        *last = last
            .checked_add(1)
            .ok_or_else(|| Error::Storage("oids exhausted".into()))?;
        Ok(Oid(*last))
    }

    fn tpc_begin(&self, meta: &TransactionMetaData, options: BeginOptions) -> Result<TxnHandle> {
        self.check_open()?;
        check_metadata_lengths(meta)?;
        if matches!(options.status, TxnStatus::Checkpoint | TxnStatus::Undone) {
            return Err(Error::InvalidArgument(format!(
                "a transaction cannot be committed with status {:?}",
                char::from(options.status.as_byte())
            )));
        }
        let mut guard = self.lock_idle()?;
        let tid = match options.tid {
            Some(tid) => {
                let last = self.read_committed().last_tid;
                if tid <= last {
                    return Err(Error::InvalidArgument(format!(
                        "tid {tid} is not later than the last transaction {last}"
                    )));
                }
                guard.last_ts = TimeStamp::from_tid(tid);
                tid
            }
            None => {
                let ts = TimeStamp::now().later_than(guard.last_ts);
                guard.last_ts = ts;
                ts.tid()
            }
        };
        let handle = TxnHandle(self.next_handle.fetch_add(1, Ordering::Relaxed));
        guard.pending = Some(Pending {
            handle,
            tid,
            status: options.status,
            meta: meta.clone(),
            records: Vec::new(),
            tindex: HashMap::new(),
            voted: false,
        });
        Ok(handle)
    }

    fn transaction_tid(&self, txn: TxnHandle) -> Result<Option<Tid>> {
        self.with_pending(txn, "transaction_tid", false, |p, _| Ok(Some(p.tid)))
    }

    fn store(&self, txn: TxnHandle, oid: Oid, serial: Tid, data: &[u8]) -> Result<()> {
        if data.is_empty() {
            // A Data.fs record with no data reads as a backpointer.
            return Err(Error::InvalidArgument(
                "cannot store an empty data record".into(),
            ));
        }
        self.with_pending(txn, "store", true, |p, c| {
            self.raise_max_oid(oid);
            let old = c.index.get(&oid).copied();
            if let Some(old) = old {
                let committed = c.record(old)?.tid;
                if committed != serial {
                    return Err(Error::Conflict {
                        oid,
                        committed,
                        old: serial,
                    });
                }
            }
            p.push(Record {
                oid,
                tid: p.tid,
                prev: old,
                payload: Payload::Data(data.into()),
            });
            Ok(())
        })
    }

    fn check_current_serial(&self, txn: TxnHandle, oid: Oid, serial: Tid) -> Result<()> {
        self.with_pending(txn, "check_current_serial", true, |_, c| {
            let committed = c.current_tid(oid)?;
            if committed != serial {
                return Err(Error::ReadConflict {
                    oid,
                    committed,
                    old: serial,
                });
            }
            Ok(())
        })
    }

    fn tpc_vote(&self, txn: TxnHandle) -> Result<Vec<Oid>> {
        self.with_pending(txn, "tpc_vote", false, |p, _| {
            if p.voted {
                return Err(Error::Transaction("tpc_vote called twice".into()));
            }
            p.voted = true;
            Ok(Vec::new())
        })
    }

    fn tpc_finish(&self, txn: TxnHandle, on_commit: &mut dyn FnMut(Tid)) -> Result<Tid> {
        self.check_open()?;
        let mut guard = self.lock_commit();
        let pending = match guard.pending.take() {
            Some(p) if p.handle == txn && p.voted => p,
            Some(p) if p.handle == txn => {
                guard.pending = Some(p);
                return Err(Error::Transaction(
                    "tpc_finish called before tpc_vote".into(),
                ));
            }
            other => {
                guard.pending = other;
                return Err(Error::Transaction(
                    "tpc_finish called with wrong transaction".into(),
                ));
            }
        };
        let tid = pending.tid;
        let pending_handle = pending.handle;
        // Readers cannot see the transaction before it is installed below.
        on_commit(tid);
        let old = self.read_committed().clone();
        let txn = Txn {
            tid,
            status: pending.status,
            meta: pending.meta,
            records: pending.records,
        };
        let mut txns = old.txns.clone();
        let mut index = old.index.clone();
        index.extend(pending.tindex);
        let size = old.size + txn.tlen() + TXN_TRAILER_LEN;
        txns.insert(tid, Arc::new(txn));
        self.install(Committed {
            txns,
            index,
            last_tid: tid,
            size,
        });
        if let Some(blobs) = &self.blobs {
            blobs.staged.finished(pending_handle);
        }
        drop(guard);
        self.commit_free.notify_one();
        Ok(tid)
    }

    fn tpc_abort(&self, txn: TxnHandle) {
        let mut guard = self.lock_commit();
        if guard.pending.as_ref().is_some_and(|p| p.handle == txn) {
            guard.pending = None;
            if let Some(blobs) = &self.blobs {
                blobs.staged.aborted(txn);
            }
            drop(guard);
            self.commit_free.notify_one();
        }
    }

    fn may_block(&self) -> bool {
        false
    }

    crate::provide_capabilities!(
        undo,
        restore,
        iteration,
        record_iteration,
        pack,
        external_gc
    );

    fn as_blobs(&self) -> Option<&dyn crate::interface::Blobs> {
        self.blobs
            .as_ref()
            .map(|_| self as &dyn crate::interface::Blobs)
    }

    fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        // Wake every waiting tpc_begin so it can fail with Closed.
        let _guard = self.lock_commit();
        self.commit_free.notify_all();
        Ok(())
    }
}
