//! The storage side of a ZEO transaction: what runs under the commit lock on
//! a blocking thread (replaying the commit log at `vote`, finishing, aborting).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use zeo_protocol::reply::VoteConflict;
use zeo_protocol::{TxnId, WireError};
use zeo_storage::{
    require, BeginOptions, BlobSource, Error, Oid, Storage, Tid, TransactionMetaData, TxnHandle,
    TxnStatus,
};

use crate::commit_lock::ConnId;
use crate::hub::StorageHub;
use crate::txn_log::{ReplayError, TxnLog, TxnOp};

/// The largest commit log whose storage calls may run on the connection's
/// own thread rather than on the blocking pool: its vote writes at most
/// this much to the storage and its finish syncs at most this much.
pub const SMALL_TXN_BYTES: u64 = 256 * 1024;

/// One client transaction, from `tpc_begin` to `tpc_finish`/`tpc_abort`.
#[derive(Debug)]
pub struct OpenTxn {
    /// The client's transaction id (`id(transaction)` in Python).
    pub id: TxnId,
    /// User, description, extension.
    pub meta: TransactionMetaData,
    /// An explicit tid (restore-style `tpc_begin`).
    pub tid: Option<Tid>,
    /// The status byte to commit with.
    pub status: TxnStatus,
    /// The buffered writes.
    pub log: TxnLog,
    /// The storage transaction, once a vote succeeded.
    pub storage_txn: Option<TxnHandle>,
    /// Oids to invalidate in other clients when this commits.
    pub invalidated: Vec<Oid>,
    /// Conflicts the last vote reported, by oid, with the index of the store
    /// in the log that caused them (superseded when the client re-stores).
    pub conflicts: BTreeMap<Oid, u64>,
    /// Why the transaction can no longer commit (it went past
    /// `max-transaction-size`, a blob upload failed, a record was not
    /// bytes): later writes are dropped unlogged and the vote fails with
    /// this error.
    pub rejected: Option<WireError>,
}

/// How a vote treats a store that conflicts.
#[derive(Debug, Clone, Copy)]
pub enum ConflictPolicy<'a> {
    /// Every conflict goes back to the client with the vote (ZEO's
    /// client-side conflict resolution).
    ClientSide,
    /// Conflicts on the classes `zeo-conflict` knows are merged here, as a
    /// Python server resolves them, and the merged oids reported with the
    /// vote; the others go back to the client. Each merge counts in
    /// `resolved`.
    Native {
        /// The `conflicts_resolved` counter.
        resolved: &'a AtomicU64,
    },
}

/// What a vote came to.
#[derive(Debug)]
pub enum VoteOutcome {
    /// The storage voted yes; the lock stays with this transaction. The
    /// oids are those whose data the storage changed (undone or resolved).
    Voted(Vec<Oid>),
    /// Stores conflicted; the storage transaction was aborted and the
    /// client may re-store and vote again.
    Conflicts(Vec<VoteConflict>),
}

impl OpenTxn {
    /// A transaction with an empty commit log.
    pub fn new(
        id: TxnId,
        meta: TransactionMetaData,
        tid: Option<Tid>,
        status: TxnStatus,
        log: TxnLog,
    ) -> Self {
        OpenTxn {
            id,
            meta,
            tid,
            status,
            log,
            storage_txn: None,
            invalidated: Vec::new(),
            conflicts: BTreeMap::new(),
            rejected: None,
        }
    }

    /// Whether the storage work of this transaction is bounded and small:
    /// a commit log of at most [`SMALL_TXN_BYTES`] in memory, and no undo
    /// (which reads back whole transactions, however small its log entry).
    pub fn is_small(&self) -> bool {
        !self.log.spilled() && self.log.undos() == 0 && self.log.size() <= SMALL_TXN_BYTES
    }

    /// Records a store, superseding the conflicting store of the same
    /// object from the last vote so replay does not conflict again.
    pub fn push_store(&mut self, op: TxnOp) -> std::io::Result<()> {
        let oid = match &op {
            TxnOp::Store { oid, .. } => Some(*oid),
            _ => None,
        };
        if let Some(old) = oid.and_then(|oid| self.conflicts.remove(&oid)) {
            self.log.supersede(old);
        }
        self.log.push(&op).map(|_| ())
    }

    /// Begins the storage transaction, replays the log and votes. Runs on a
    /// blocking thread while holding the commit lock. On error the storage
    /// transaction has been aborted.
    pub fn vote(
        &mut self,
        storage: &dyn Storage,
        policy: ConflictPolicy<'_>,
    ) -> Result<VoteOutcome, Error> {
        let options = BeginOptions {
            tid: self.tid,
            status: self.status,
        };
        let handle = storage.tpc_begin(&self.meta, options)?;
        match self.replay_and_vote(storage, handle, policy) {
            Ok(VoteOutcome::Voted(serials)) => {
                self.storage_txn = Some(handle);
                Ok(VoteOutcome::Voted(serials))
            }
            other => {
                storage.tpc_abort(handle);
                other
            }
        }
    }

    fn replay_and_vote(
        &mut self,
        storage: &dyn Storage,
        h: TxnHandle,
        policy: ConflictPolicy<'_>,
    ) -> Result<VoteOutcome, Error> {
        let mut invalidated = BTreeSet::new();
        let mut serials = Vec::new();
        // Merges made here; counted once the vote succeeds (a vote that
        // returns other conflicts is replayed, and merges again).
        let mut merged_here = 0;
        let mut conflicts: BTreeMap<Oid, (u64, VoteConflict)> = BTreeMap::new();
        let replayed = self.log.replay(|index, op| -> Result<(), Error> {
            match op {
                TxnOp::Store { oid, serial, data } => match storage.store(h, oid, serial, &data) {
                    Ok(()) => {
                        conflicts.remove(&oid);
                        invalidated.insert(oid);
                    }
                    Err(err) => {
                        let (committed, old) = conflict_on(err, oid)?;
                        if let ConflictPolicy::Native { .. } = policy {
                            if let Some(merged) =
                                resolve_natively(storage, oid, committed, old, &data)
                            {
                                // Stored on top of the committed revision; the
                                // client learns the oid with the vote and drops
                                // its own copy, as with a Python server.
                                storage.store(h, oid, committed, &merged)?;
                                merged_here += 1;
                                conflicts.remove(&oid);
                                invalidated.insert(oid);
                                serials.push(oid);
                                return Ok(());
                            }
                        }
                        // Client-side conflict resolution: hand the conflict
                        // and the client's own data back with the vote.
                        let conflict = VoteConflict {
                            oid,
                            committed,
                            old,
                            data,
                        };
                        conflicts.insert(oid, (index, conflict));
                    }
                },
                TxnOp::Delete { oid, serial } => {
                    require(storage.as_external_gc(), "deleteObject")?
                        .delete_object(h, oid, serial)?;
                    invalidated.insert(oid);
                }
                TxnOp::CheckCurrent { oid, serial } => {
                    storage.check_current_serial(h, oid, serial)?
                }
                TxnOp::Restore {
                    oid,
                    serial,
                    data,
                    prev_txn,
                } => {
                    require(storage.as_restore(), "restore")?.restore(
                        h,
                        oid,
                        serial,
                        data.as_deref(),
                        prev_txn,
                    )?;
                    invalidated.insert(oid);
                }
                TxnOp::StoreBlob {
                    oid,
                    serial,
                    data,
                    path,
                } => {
                    let blobs = require(storage.as_blobs(), "storeBlob")?;
                    let link = crate::blob_calls::link_for_storage(&path)
                        .map_err(|e| Error::io("linking a blob upload", e))?;
                    match blobs.store_blob(h, oid, serial, &data, BlobSource::File(link)) {
                        Ok(()) => {
                            conflicts.remove(&oid);
                            invalidated.insert(oid);
                        }
                        // Handed back like a store's conflict: the client's
                        // resolution (which refuses blobs) reports it with
                        // the object's class, as against Python's server.
                        Err(err) => {
                            let (committed, old) = conflict_on(err, oid)?;
                            let conflict = VoteConflict {
                                oid,
                                committed,
                                old,
                                data,
                            };
                            conflicts.insert(oid, (index, conflict));
                        }
                    }
                }
                TxnOp::Undo { id } => {
                    let oids = require(storage.as_undo(), "undo")?.undo(h, &id)?;
                    invalidated.extend(oids.iter().copied());
                    serials.extend(oids);
                }
            }
            Ok(())
        });
        match replayed {
            Ok(()) => {}
            Err(ReplayError::Op(err)) => return Err(err),
            Err(ReplayError::Io(err)) => return Err(Error::io("reading the commit log back", err)),
        }
        self.conflicts = conflicts
            .iter()
            .map(|(oid, (index, _))| (*oid, *index))
            .collect();
        if !conflicts.is_empty() {
            return Ok(VoteOutcome::Conflicts(
                conflicts.into_values().map(|(_, c)| c).collect(),
            ));
        }
        let resolved = storage.tpc_vote(h)?;
        if let ConflictPolicy::Native { resolved } = policy {
            resolved.fetch_add(merged_here, Ordering::Relaxed);
        }
        invalidated.extend(resolved.iter().copied());
        serials.extend(resolved);
        self.invalidated = invalidated.into_iter().collect();
        Ok(VoteOutcome::Voted(serials))
    }
}

/// The committed and old serials of a write conflict on `oid`; any other
/// error is passed on.
fn conflict_on(err: Error, oid: Oid) -> Result<(Tid, Tid), Error> {
    match err {
        Error::Conflict {
            oid: c_oid,
            committed,
            old,
        } if c_oid == oid => Ok((committed, old)),
        other => Err(other),
    }
}

/// The merged record for a conflicting store, when `zeo-conflict`
/// resolves the object's class: `new` was written against `old`, and
/// `committed` is current. `None` leaves the conflict to the client
/// (another class, a state the crate does not model, or a merge Python
/// refuses too, which the client then reports).
fn resolve_natively(
    storage: &dyn Storage,
    oid: Oid,
    committed: Tid,
    old: Tid,
    new: &[u8],
) -> Option<Vec<u8>> {
    let (module, name) = zeo_conflict::record_class(new)?;
    if !zeo_conflict::resolves(&module, &name) {
        return None;
    }
    let old_data = storage.load_serial(oid, old).ok()?;
    let committed_data = storage.load_serial(oid, committed).ok()?;
    match zeo_conflict::resolve(&old_data, &committed_data, new) {
        Ok(merged) => Some(merged),
        Err(err) => {
            tracing::debug!(%oid, %err, "conflict not resolved natively");
            None
        }
    }
}

/// Finishes a voted transaction: the storage commits, and inside its
/// `on_commit` callback the hub publishes the invalidations under the
/// exclusive publication lock, which is held until the storage has made the
/// transaction visible and `announce` has queued the committer's own reply.
///
/// With `release_after_submit` (group commit) the commit lock is dropped
/// as soon as the storage has the transaction written and queued
/// ([`Storage::tpc_finish_submit`]): the next transaction votes and is
/// written while this one waits for the fsync that covers both. The
/// storage runs the callbacks in commit order, so invalidations and finish
/// replies reach every client in tid order, and only after the covering
/// fsync. Without it, the caller keeps the lock until this returns.
pub fn finish(
    hub: &Arc<StorageHub>,
    conn: ConnId,
    handle: TxnHandle,
    oids: Vec<Oid>,
    release_after_submit: Option<crate::commit_lock::CommitGuard>,
    announce: &mut dyn FnMut(Tid),
) -> Result<Tid, Error> {
    let started = std::time::Instant::now();
    let storage = hub.storage();
    // Other writers' commits: the watcher must not take this one for one
    // of theirs once the database has it.
    let own_finish = hub.is_shared().then(|| hub.own_finish_started());
    let submitted = storage.tpc_finish_submit(handle);
    drop(release_after_submit);
    let result = finish_submitted(hub, conn, submitted, oids, started, announce);
    drop(own_finish);
    result
}

/// The second half of [`finish`], for a transaction whose
/// [`Storage::tpc_finish_submit`] already ran (and whose commit lock is
/// already released): the server submits inline, on the connection's
/// worker, when the storage is not shared with other writers and never
/// blocks, so that the lock is not held through a trip to the blocking
/// pool, and waits for the fsync here, on a blocking thread. `started` is
/// when the finish began, for the finish-time histogram.
pub fn finish_submitted(
    hub: &Arc<StorageHub>,
    conn: ConnId,
    submitted: Result<zeo_storage::Submitted, Error>,
    oids: Vec<Oid>,
    started: std::time::Instant,
    announce: &mut dyn FnMut(Tid),
) -> Result<Tid, Error> {
    let oids: crate::invalidations::OidList = oids.into();
    let mut publication = None;
    let storage = hub.storage();
    let shared = hub.is_shared();
    let result = submitted.and_then(|submitted| {
        storage.tpc_finish_durable(submitted, &mut |tid| {
            // Committed: every tid below it is final, so what is read now
            // is every foreign commit to announce before this one.
            let foreign = shared.then(|| read_foreign_below(hub, tid));
            let guard = hub.write_publication();
            match foreign {
                Some(Ok(foreign)) => {
                    hub.publish_foreign(&guard, foreign);
                }
                Some(Err(err)) => {
                    tracing::warn!(%tid, %err, "reading other writers' commits failed");
                    hub.lost_track(&guard, tid);
                }
                None => {}
            }
            hub.publish_commit(&guard, conn, tid, oids.clone());
            publication = Some(guard);
        })
    });
    if let (Ok(tid), Some(_)) = (&result, &publication) {
        // Visible now (the size it reports counts it), and the next
        // transaction's callback waits for the publication lock: the
        // reply still comes before any later invalidation.
        announce(*tid);
    }
    // Only now may loads see the new transaction.
    drop(publication);
    hub.stats().finish_seconds.observe(started.elapsed());
    result
}

/// How long an own commit's callback keeps asking a shared storage that
/// fails transiently (a database restarting just after the commit) for the
/// other writers' commits below it, before giving up on them and
/// disconnecting every client ([`StorageHub::lost_track`]).
const FOREIGN_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// The foreign commits below the own commit `tid`. A transient failure is
/// asked again, with a pause doubling from 50 ms to 1 s, for up to
/// [`FOREIGN_PATIENCE`]: the commit is durable, and a database that is
/// back a moment later spares every client a disconnect. Only a storage
/// that may block is waited for (its callbacks run off the async workers).
fn read_foreign_below(
    hub: &StorageHub,
    tid: Tid,
) -> zeo_storage::Result<Vec<zeo_storage::ForeignCommit>> {
    let deadline = std::time::Instant::now() + FOREIGN_PATIENCE;
    let mut pause = std::time::Duration::from_millis(50);
    loop {
        match hub.read_foreign(Some(tid)) {
            Err(e) if e.is_transient() && hub.storage().may_block() => {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return Err(e);
                }
                std::thread::sleep(pause.min(left));
                pause = (pause * 2).min(std::time::Duration::from_secs(1));
            }
            result => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::txn_log::TxnLog;
    use zeo_pickle::{encode_record, Value};
    use zeo_storage::MappingStorage;

    fn length(n: i64) -> Vec<u8> {
        encode_record(&Value::global("BTrees.Length", "Length"), &Value::Int(n)).unwrap()
    }

    fn commit(storage: &dyn Storage, oid: Oid, serial: Tid, data: &[u8]) -> Tid {
        let h = storage
            .tpc_begin(&TransactionMetaData::default(), BeginOptions::default())
            .unwrap();
        storage.store(h, oid, serial, data).unwrap();
        storage.tpc_vote(h).unwrap();
        storage.tpc_finish(h, &mut |_| {}).unwrap()
    }

    /// A transaction storing `data` for `oid` on top of `serial`.
    fn stale_txn(oid: Oid, serial: Tid, data: &[u8]) -> OpenTxn {
        let mut txn = OpenTxn::new(
            TxnId(1),
            TransactionMetaData::default(),
            None,
            TxnStatus::default(),
            TxnLog::new(usize::MAX, None),
        );
        txn.push_store(TxnOp::Store {
            oid,
            serial,
            data: data.to_vec(),
        })
        .unwrap();
        txn
    }

    /// A storage where `base` then `theirs` were committed for one object,
    /// and an open transaction storing `ours` on top of `base`, voted with
    /// native resolution: the storage, the oid, the transaction, what the
    /// vote came to and the resolution count.
    fn native_vote(
        base: &[u8],
        theirs: &[u8],
        ours: &[u8],
    ) -> (MappingStorage, Oid, OpenTxn, VoteOutcome, u64) {
        let storage = MappingStorage::new("test");
        let oid = storage.new_oid().unwrap();
        let serial = commit(&storage, oid, Tid::ZERO, base);
        commit(&storage, oid, serial, theirs);
        let resolved = AtomicU64::new(0);
        let mut txn = stale_txn(oid, serial, ours);
        let outcome = txn
            .vote(
                &storage,
                ConflictPolicy::Native {
                    resolved: &resolved,
                },
            )
            .unwrap();
        (storage, oid, txn, outcome, resolved.load(Ordering::Relaxed))
    }

    #[test]
    fn native_policy_merges_at_vote_and_reports_the_oid() {
        let (storage, oid, txn, outcome, resolved) =
            native_vote(&length(10), &length(11), &length(15));
        assert!(
            matches!(&outcome, VoteOutcome::Voted(oids) if oids == &[oid]),
            "{outcome:?}"
        );
        assert_eq!(resolved, 1);
        assert_eq!(txn.invalidated, [oid]);
        storage
            .tpc_finish(txn.storage_txn.unwrap(), &mut |_| {})
            .unwrap();
        assert_eq!(storage.load(oid).unwrap().0, length(16));

        // Client-side: the same conflict goes back with the client's data.
        let base = storage.history(oid, 3).unwrap()[2].tid;
        let mut txn = stale_txn(oid, base, &length(15));
        match txn.vote(&storage, ConflictPolicy::ClientSide).unwrap() {
            VoteOutcome::Conflicts(c) => assert_eq!(c.len(), 1),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn classes_without_a_native_merge_still_go_to_the_client() {
        let (_, _, _, outcome, resolved) = native_vote(b"plain", b"theirs", b"ours");
        assert!(matches!(outcome, VoteOutcome::Conflicts(_)), "{outcome:?}");
        assert_eq!(resolved, 0);
    }
}
