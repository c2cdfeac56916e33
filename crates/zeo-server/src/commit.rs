//! The storage side of a ZEO transaction: what runs under the commit lock on
//! a blocking thread (replaying the commit log at `vote`, finishing, aborting).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use zeo_protocol::reply::VoteConflict;
use zeo_protocol::TxnId;
use zeo_storage::{
    BeginOptions, Error, Oid, Storage, Tid, TransactionMetaData, TxnHandle, TxnStatus,
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
    /// Why the transaction can no longer commit, once it went past
    /// `max-transaction-size`: later writes are dropped unlogged and the
    /// vote fails with this message.
    pub rejected: Option<String>,
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
    pub fn vote(&mut self, storage: &dyn Storage) -> Result<VoteOutcome, Error> {
        let options = BeginOptions {
            tid: self.tid,
            status: self.status,
        };
        let handle = storage.tpc_begin(&self.meta, options)?;
        match self.replay_and_vote(storage, handle) {
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
    ) -> Result<VoteOutcome, Error> {
        let mut invalidated = BTreeSet::new();
        let mut serials = Vec::new();
        let mut conflicts: BTreeMap<Oid, (u64, VoteConflict)> = BTreeMap::new();
        let replayed = self.log.replay(|index, op| -> Result<(), Error> {
            match op {
                TxnOp::Store { oid, serial, data } => match storage.store(h, oid, serial, &data) {
                    Ok(()) => {
                        conflicts.remove(&oid);
                        invalidated.insert(oid);
                    }
                    // Client-side conflict resolution: hand the conflict and
                    // the client's own data back with the vote.
                    Err(Error::Conflict {
                        oid: c_oid,
                        committed,
                        old,
                    }) if c_oid == oid => {
                        conflicts.insert(
                            oid,
                            (
                                index,
                                VoteConflict {
                                    oid,
                                    committed,
                                    old,
                                    data,
                                },
                            ),
                        );
                    }
                    Err(err) => return Err(err),
                },
                TxnOp::Delete { oid, serial } => {
                    storage.delete_object(h, oid, serial)?;
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
                    storage.restore(h, oid, serial, data.as_deref(), prev_txn)?;
                    invalidated.insert(oid);
                }
                TxnOp::Undo { id } => {
                    let oids = storage.undo(h, &id)?;
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
        invalidated.extend(resolved.iter().copied());
        serials.extend(resolved);
        self.invalidated = invalidated.into_iter().collect();
        Ok(VoteOutcome::Voted(serials))
    }
}

/// Finishes a voted transaction: the storage commits, and inside its
/// `on_commit` callback the hub publishes the invalidations under the
/// exclusive publication lock, which is held until the storage has made the
/// transaction visible. Runs on a blocking thread.
pub fn finish(
    hub: &Arc<StorageHub>,
    conn: ConnId,
    handle: TxnHandle,
    oids: Vec<Oid>,
) -> Result<Tid, Error> {
    let oids: crate::invalidations::OidList = oids.into();
    let mut publication = None;
    let started = std::time::Instant::now();
    let result = hub.storage().tpc_finish(handle, &mut |tid| {
        let guard = hub.write_publication();
        hub.publish_commit(&guard, conn, tid, oids.clone());
        publication = Some(guard);
    });
    // Only now may loads see the new transaction.
    drop(publication);
    hub.stats().finish_seconds.observe(started.elapsed());
    result
}
