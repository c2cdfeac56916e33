//! Undo in the model: the records that undo a transaction, as FileStorage
//! writes them (`_transactionalUndoRecord`), and the undo log.

use super::*;

/// The data and position of the record an undo compares against
/// (`_undoDataInfo`): inline data, or where its backpointer leads.
struct CurrentInfo {
    pointer: Option<RecId>,
    data: Option<Arc<[u8]>>,
}

fn current_info(id: RecId, rec: &Record) -> CurrentInfo {
    match &rec.payload {
        Payload::Data(d) => CurrentInfo {
            pointer: Some(id),
            data: Some(d.clone()),
        },
        Payload::Back(b) => CurrentInfo {
            pointer: Some(*b),
            data: None,
        },
        Payload::Nothing => CurrentInfo {
            pointer: None,
            data: None,
        },
    }
}

fn undo_error(reason: &str, oid: Oid) -> Error {
    Error::Undo {
        reason: reason.to_string(),
        oid: Some(oid),
    }
}

/// Decides the record that undoes one record of the undone transaction
/// (`_transactionalUndoRecord`, without conflict resolution).
fn undo_record(
    committed: &Committed,
    pending: &Pending,
    pos: RecId,
    rec: &Record,
) -> Result<Payload> {
    let oid = rec.oid;
    let tpos = pending.tindex.get(&oid).copied();
    let ipos = committed.index.get(&oid).copied();
    let mut copy = true;
    if tpos.or(ipos) != Some(pos) {
        let current = match (tpos, ipos) {
            (Some(t), _) => {
                let r = pending
                    .records
                    .get(t.idx)
                    .ok_or_else(|| Error::Storage(format!("dangling staged record {t:?}")))?;
                current_info(t, r)
            }
            (None, Some(i)) => current_info(i, committed.record(i)?),
            (None, None) => return Err(undo_error("_loadBack() failed", oid)),
        };
        if current.pointer != Some(pos) {
            let load_failed = || undo_error("_loadBack() failed", oid);
            let undone = committed.resolve(pos)?.ok_or_else(load_failed)?;
            let now = match current.data {
                Some(d) => d,
                None => {
                    let p = current.pointer.ok_or_else(load_failed)?;
                    committed.resolve(p)?.ok_or_else(load_failed)?
                }
            };
            if undone != now {
                copy = false;
                if rec.prev.is_none() {
                    return Err(undo_error(
                        "Can't undo an add transaction followed by conflicting transactions.",
                        oid,
                    ));
                }
            }
        }
    }
    match rec.prev {
        None => Ok(Payload::Nothing),
        Some(pre) if copy => Ok(Payload::Back(pre)),
        Some(pre) => {
            if committed.resolve(pre)?.is_none() {
                return Err(undo_error("_loadBack() failed", oid));
            }
            Err(undo_error(
                "Some data were modified by a later transaction",
                oid,
            ))
        }
    }
}

impl Undo for MappingStorage {
    fn undo(&self, txn: TxnHandle, undo_id: &[u8]) -> Result<Vec<Oid>> {
        self.with_pending(txn, "undo", true, |p, c| {
            let invalid = || Error::Undo {
                reason: "Invalid transaction id".into(),
                oid: None,
            };
            let tid = tid_from_undo_id(undo_id).ok_or_else(invalid)?;
            let undone = c.txns.get(&tid).ok_or_else(invalid)?;
            if undone.status != TxnStatus::Committed {
                return Err(Error::Undo {
                    reason: "non-undoable transaction".into(),
                    oid: None,
                });
            }
            let mut staged: Vec<Record> = Vec::new();
            let mut local: Vec<(Oid, RecId)> = Vec::new();
            let mut failures: Vec<(Oid, Error)> = Vec::new();
            for (idx, rec) in undone.records.iter().enumerate() {
                // A later record of the same object gets a second chance.
                failures.retain(|(o, _)| *o != rec.oid);
                match undo_record(c, p, RecId { txn: tid, idx }, rec) {
                    Ok(payload) => {
                        let id = RecId {
                            txn: p.tid,
                            idx: p.records.len() + staged.len(),
                        };
                        local.push((rec.oid, id));
                        staged.push(Record {
                            oid: rec.oid,
                            tid: p.tid,
                            prev: c.index.get(&rec.oid).copied(),
                            payload,
                        });
                    }
                    Err(e @ Error::Undo { .. }) => failures.push((rec.oid, e)),
                    Err(e) => return Err(e),
                }
            }
            // As FileStorage reports them: every failure in one message,
            // naming the first object that failed.
            if let Some((first, _)) = failures.first() {
                let reason = failures
                    .iter()
                    .map(|(_, e)| match e {
                        Error::Undo {
                            reason,
                            oid: Some(o),
                        } => format!("{reason} (oid {o})"),
                        Error::Undo { reason, oid: None } => reason.clone(),
                        other => other.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                return Err(Error::Undo {
                    reason,
                    oid: Some(*first),
                });
            }
            let mut oids = Vec::new();
            for (oid, id) in local {
                if !oids.contains(&oid) {
                    oids.push(oid);
                }
                p.tindex.insert(oid, id);
            }
            p.records.extend(staged);
            Ok(oids)
        })
    }

    fn undo_log(
        &self,
        first: i64,
        last: i64,
        filter: Option<UndoFilter<'_>>,
    ) -> Result<Vec<UndoEntry>> {
        let c = self.snapshot()?;
        let (first, last) = undo_log_bounds(first, last);
        let mut out = Vec::new();
        let mut i = 0usize;
        for txn in c.txns.values().rev() {
            if i >= last {
                break;
            }
            match txn.status {
                TxnStatus::Packed => break,
                TxnStatus::Committed => {}
                TxnStatus::Checkpoint | TxnStatus::Undone => continue,
            }
            let entry = c.undo_entry(txn);
            if filter.is_none_or(|f| f(&entry)) {
                if i >= first {
                    out.push(entry);
                }
                i += 1;
            }
        }
        Ok(out)
    }
}
