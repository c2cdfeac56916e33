//! Undo, the undo log and external garbage collection: the
//! history-preserving schema's capabilities that write new revisions from
//! old ones.

use zeo_storage::interface::{undo_log_bounds, ExternalGc, Undo};
use zeo_storage::{
    tid_from_undo_id, undo_id, Error as StorageError, Oid, Result, Tid, TxnHandle, UndoEntry,
    UndoFilter,
};

use crate::storage::{PostgresStorage, Staged, StagedBlob};

/// How many transactions one query of the undo log reads.
const LOG_BATCH: i64 = 100;

fn undo_error(reason: impl Into<String>, oid: Option<Oid>) -> StorageError {
    StorageError::Undo {
        reason: reason.into(),
        oid,
    }
}

impl Undo for PostgresStorage {
    fn undo(&self, txn: TxnHandle, id: &[u8]) -> Result<Vec<Oid>> {
        self.transaction_is(txn)?;
        let tid = tid_from_undo_id(id).ok_or_else(|| undo_error("malformed undo id", None))?;
        let t = tid.0 as i64;
        // Each object the transaction wrote, its current tid, and the
        // state of the revision before the one being undone.
        let rows = self.read(|c| {
            let known: bool = c
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM \"transaction\" \
                     WHERE tid = $1 AND tid > 0 AND NOT packed)",
                    &[&t],
                )?
                .get(0);
            if !known {
                return Ok(None);
            }
            Ok(Some(c.query(
                "SELECT s.zoid, c.tid, p.state, p.tid, \
                   EXISTS (SELECT 1 FROM blob_chunk b WHERE b.zoid = s.zoid AND b.tid = p.tid), \
                   cs.state IS NOT DISTINCT FROM s.state, s.state, cs.state \
                 FROM object_state s JOIN current_object c USING (zoid) \
                 JOIN object_state cs ON cs.zoid = c.zoid AND cs.tid = c.tid \
                 LEFT JOIN LATERAL (SELECT o.state, o.tid FROM object_state o \
                   WHERE o.zoid = s.zoid AND o.tid < $1 ORDER BY o.tid DESC LIMIT 1) p ON TRUE \
                 WHERE s.tid = $1 ORDER BY s.zoid",
                &[&t],
            )?))
        })?;
        let rows =
            rows.ok_or_else(|| undo_error(format!("no undoable transaction {tid}"), None))?;
        let mut staged = Vec::with_capacity(rows.len());
        for r in &rows {
            let oid = Oid(r.get::<_, i64>(0) as u64);
            let mut serial = Tid(r.get::<_, i64>(1) as u64);
            let restored_tid = r.get::<_, Option<i64>>(3);
            // As FileStorage: the undone revision must be current, or the
            // current state must equal it (a later undo brought it back);
            // an earlier undo of this transaction counts as current.
            let undone: Option<Vec<u8>> = r.get(6);
            let before: Option<Vec<u8>> = r.get(2);
            let (same, current) = match self.staged_record(txn, oid)? {
                Some((base, data)) => {
                    serial = base;
                    (data == undone, data)
                }
                None => (serial == tid || r.get::<_, bool>(5), r.get(7)),
            };
            if !same {
                if restored_tid.is_none() {
                    return Err(undo_error(
                        "Can't undo an add transaction followed by conflicting transactions.",
                        Some(oid),
                    ));
                }
                // As ZODB: a conflict in which the undone revision is the
                // old state, the current one is committed and the state
                // before the undone transaction is the new one; classes
                // `zeo-conflict` does not know are refused.
                let merged = match (&undone, &current, &before) {
                    (Some(old), Some(committed), Some(new)) => {
                        zeo_conflict::resolve(old, committed, new).ok()
                    }
                    _ => None,
                };
                let Some(merged) = merged else {
                    return Err(undo_error(
                        "Some data were modified by a later transaction",
                        Some(oid),
                    ));
                };
                staged.push((oid, Staged::record(serial, Some(merged), true)));
                continue;
            }
            let mut revision = Staged::record(serial, before, true);
            let from = Tid(restored_tid.unwrap_or(0) as u64);
            let has_blob = if self.shared_blobs {
                restored_tid.is_some() && self.shared_blob_exists(oid, from)
            } else {
                r.get::<_, Option<bool>>(4) == Some(true)
            };
            if has_blob {
                // The restored revision's blob is shared with it.
                revision.blob = StagedBlob::SameAs(from);
            }
            staged.push((oid, revision));
        }
        let oids: Vec<Oid> = staged.iter().map(|(oid, _)| *oid).collect();
        for (oid, revision) in staged {
            self.stage(txn, oid, revision)?;
        }
        self.mark_undo(txn)?;
        Ok(oids)
    }

    fn undo_log(
        &self,
        first: i64,
        last: i64,
        filter: Option<UndoFilter<'_>>,
    ) -> Result<Vec<UndoEntry>> {
        let (first, last) = undo_log_bounds(first, last);
        let mut out = Vec::new();
        let mut matched = 0usize;
        let mut before = i64::MAX;
        // Newest first, a batch at a time, until the slice is full.
        while matched < last {
            let rows = self.read(|c| {
                Ok(c.query(
                    "SELECT t.tid, t.username, t.description, t.extension, \
                       (SELECT COALESCE(sum(s.state_size), 0)::bigint FROM object_state s \
                        WHERE s.tid = t.tid) \
                     FROM \"transaction\" t \
                     WHERE t.tid > 0 AND t.tid < $1 AND NOT t.packed \
                     ORDER BY t.tid DESC LIMIT $2",
                    &[&before, &LOG_BATCH],
                )?)
            })?;
            let Some(oldest) = rows.last() else { break };
            before = oldest.get(0);
            for r in &rows {
                let tid = Tid(r.get::<_, i64>(0) as u64);
                let entry = UndoEntry {
                    id: undo_id(tid),
                    tid,
                    time: tid.unix_time(),
                    user: r.get(1),
                    description: r.get(2),
                    extension: r.get::<_, Option<Vec<u8>>>(3).unwrap_or_default(),
                    size: r.get::<_, i64>(4) as u64,
                };
                if filter.is_some_and(|f| !f(&entry)) {
                    continue;
                }
                if matched >= first && matched < last {
                    out.push(entry);
                }
                matched += 1;
                if matched >= last {
                    break;
                }
            }
        }
        Ok(out)
    }
}

impl ExternalGc for PostgresStorage {
    fn delete_object(&self, txn: TxnHandle, oid: Oid, serial: Tid) -> Result<()> {
        self.transaction_is(txn)?;
        let committed = self
            .committed_tid(oid)?
            .ok_or_else(|| StorageError::pos_key(oid))?;
        if committed != serial {
            return Err(StorageError::Conflict {
                oid,
                committed,
                old: serial,
            });
        }
        // A revision without state: RelStorage's "the object does not
        // exist" (as undoing a creation writes).
        self.stage(txn, oid, Staged::record(serial, None, true))
    }
}
