//! Transactional undo: listing undoable transactions (`undoLog`) and
//! staging the records that reverse one (`_txn_undo_write` /
//! `_transactionalUndoRecord`). Where a later transaction changed an
//! undone object, ZODB tries conflict resolution between the undone
//! revision, the current one and the one before; here `zeo-conflict` does
//! that for the classes it knows, and the undo fails with [`Error::Undo`]
//! for the others, as ZODB's does when resolution fails.

use crate::error::{Error, Result};
use crate::ids::Oid;
use crate::interface::{undo_log_bounds, TxnHandle, UndoEntry, UndoFilter};
use crate::undo_id::{tid_from_undo_id, undo_id};

use super::commit::{ActiveTxn, Staged};
use super::format::{DataHeader, Reader, DATA_HEADER_LEN, STATUS_COMMITTED, STATUS_PACKED};
use super::FileStorage;

/// ZODB's `UndoSearch`: newest first, stopping at the first packed
/// transaction, skipping any status but `' '`.
pub(crate) fn undo_log(
    r: &Reader<'_>,
    first: i64,
    last: i64,
    filter: Option<UndoFilter<'_>>,
) -> Result<Vec<UndoEntry>> {
    let (first, last) = undo_log_bounds(first, last);
    let mut pos = r.end();
    let mut i = 0usize;
    let mut out = Vec::new();
    while i < last && pos >= 39 {
        let (tpos, h) = r.prev_txn(pos)?;
        pos = tpos;
        if h.status == STATUS_PACKED {
            break;
        }
        if h.status != STATUS_COMMITTED {
            continue;
        }
        let meta = r.txn_meta(tpos, &h)?;
        let entry = UndoEntry {
            id: undo_id(h.tid),
            tid: h.tid,
            time: h.tid.unix_time(),
            user: meta.user,
            description: meta.description,
            extension: meta.extension,
            size: h.tlen,
        };
        if filter.is_none_or(|f| f(&entry)) {
            if i >= first {
                out.push(entry);
            }
            i += 1;
        }
    }
    Ok(out)
}

fn undo_error(reason: &str, oid: Option<Oid>) -> Error {
    Error::Undo {
        reason: reason.to_string(),
        oid,
    }
}

/// What to write for one undone record.
enum Outcome {
    /// `plen = 0` with this backpointer (0: the object's creation is undone).
    Back(u64),
    /// A new revision: the resolved merge of the undo with later changes.
    Data(Vec<u8>),
}

impl FileStorage {
    pub(crate) fn undo_txn(&self, txn: TxnHandle, undo_id: &[u8]) -> Result<Vec<Oid>> {
        let tid =
            tid_from_undo_id(undo_id).ok_or_else(|| undo_error("Invalid transaction id", None))?;
        // Undo reads the committed state as a whole: let the submitted
        // transactions become durable and visible first.
        self.wait_for_all_published();
        self.not_failed()?;
        self.with_txn(txn, |a, staged| {
            if a.next_pos.is_some() {
                return Err(Error::Transaction("undo after tpc_vote".into()));
            }
            let p = self.read_published();
            let r = Reader::new(&p.file, self.path(), p.pos);
            let tpos = r
                .find_txn(tid)?
                .ok_or_else(|| undo_error("Invalid transaction id", None))?;
            let mark = staged.len();
            let result = write_undo(&r, &p.index, a, staged, tpos);
            match result {
                Ok(written) => {
                    if let Err(e) = self.copy_undone_blobs(&r, a, &written) {
                        staged.truncate(mark);
                        return Err(e);
                    }
                    let mut seen = std::collections::HashSet::new();
                    let mut oids = Vec::new();
                    for (oid, pos, _) in written {
                        if seen.insert(oid) {
                            oids.push(oid);
                        }
                        a.record(oid, pos);
                    }
                    Ok(oids)
                }
                Err(e) => {
                    staged.truncate(mark);
                    Err(e)
                }
            }
        })
    }
}

/// Stages the undo records of the transaction at `tpos`; returns the
/// (oid, position, backpointer) of each record written, in order (a
/// backpointer of 0 when the record holds its data).
fn write_undo(
    r: &Reader<'_>,
    index: &super::index::OidIndex,
    a: &ActiveTxn,
    staged: &mut Staged,
    tpos: u64,
) -> Result<Vec<(Oid, u64, u64)>> {
    let th = r.txn_header(tpos)?;
    if th.status != STATUS_COMMITTED {
        return Err(undo_error("non-undoable transaction", None));
    }
    let tend = tpos + th.tlen;
    let mut pos = tpos + th.header_len();
    let mut failures: Vec<(Oid, Error)> = Vec::new();
    let mut written: Vec<(Oid, u64, u64)> = Vec::new();
    while pos < tend {
        let h = r.data_header(pos)?;
        failures.retain(|(o, _)| *o != h.oid);
        match undo_record(r, index, a, staged, h.oid, pos, h.prev) {
            Ok((outcome, ipos)) => {
                let here = a.here(staged);
                let (back, data) = match &outcome {
                    Outcome::Back(back) => (*back, None),
                    Outcome::Data(data) => (0, Some(data.as_slice())),
                };
                let rec = DataHeader {
                    oid: h.oid,
                    tid: a.tid,
                    prev: ipos,
                    tloc: a.base,
                    plen: data.map_or(0, |d| d.len() as u64),
                    back,
                };
                let mut bytes =
                    Vec::with_capacity(DATA_HEADER_LEN as usize + data.map_or(8, <[u8]>::len));
                rec.write_record(data, &mut bytes);
                staged.append(&bytes)?;
                written.push((h.oid, here, back));
            }
            Err(e @ Error::Undo { .. }) => failures.push((h.oid, e)),
            Err(e) => return Err(e),
        }
        pos = pos.saturating_add(h.record_len().unwrap_or(u64::MAX));
        if pos > tend {
            return Err(undo_error("non-undoable transaction", None));
        }
    }
    if let Some((oid, _)) = failures.first() {
        let reason = failures
            .iter()
            .map(|(_, e)| match e {
                Error::Undo { reason, oid } => match oid {
                    Some(o) => format!("{reason} (oid {o})"),
                    None => reason.clone(),
                },
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join("; ");
        return Err(Error::Undo {
            reason,
            oid: Some(*oid),
        });
    }
    Ok(written)
}

/// `_transactionalUndoRecord` for the record of `oid` at `pos` whose
/// previous revision is `pre`; returns what to write and the committed
/// current position (the new record's `prev`).
fn undo_record(
    r: &Reader<'_>,
    index: &super::index::OidIndex,
    a: &ActiveTxn,
    staged: &Staged,
    oid: Oid,
    pos: u64,
    pre: u64,
) -> Result<(Outcome, u64)> {
    let tpos = a.tindex.get(&oid.0).copied().unwrap_or(0);
    let ipos = index.get(oid.0).unwrap_or(0);
    let tipos = if tpos != 0 { tpos } else { ipos };
    let mut copy = true;
    // The undone and the current revision, when they differ.
    let mut conflict = None;
    if tipos != pos {
        if tipos == 0 {
            return Err(undo_error("_loadBack() failed", Some(oid)));
        }
        // The current state: from this transaction's staged records when an
        // earlier undo in it touched the object, else from the file.
        let (cdataptr, current_data) = if tpos != 0 {
            let off = tpos - a.base - a.thl;
            let mut raw = [0u8; DATA_HEADER_LEN as usize];
            staged.read_at(off, &mut raw)?;
            let mut h =
                DataHeader::parse(&raw).map_err(|_| Error::Storage("bad staged record".into()))?;
            if h.oid != oid {
                return Err(undo_error("Invalid undo transaction id", Some(oid)));
            }
            if h.plen > 0 {
                let mut d = vec![0u8; h.plen as usize];
                staged.read_at(off + DATA_HEADER_LEN, &mut d)?;
                (tpos, d)
            } else {
                let mut b = [0u8; 8];
                staged.read_at(off + DATA_HEADER_LEN, &mut b)?;
                h.back = u64::from_be_bytes(b);
                (h.back, Vec::new())
            }
        } else {
            let h = r.data_header_for(ipos, oid)?;
            if h.plen > 0 {
                (ipos, r.record_data(ipos, &h)?)
            } else {
                (h.back, Vec::new())
            }
        };
        if cdataptr != pos {
            let failed = || undo_error("_loadBack() failed", Some(oid));
            let to_undo = r.resolve(oid, pos)?.ok_or_else(failed)?.data;
            let current = if current_data.is_empty() {
                if cdataptr == 0 {
                    return Err(failed());
                }
                r.resolve(oid, cdataptr)?.ok_or_else(failed)?.data
            } else {
                current_data
            };
            if to_undo != current {
                copy = false;
                if pre == 0 {
                    return Err(undo_error(
                        "Can't undo an add transaction followed by conflicting transactions.",
                        Some(oid),
                    ));
                }
                conflict = Some((to_undo, current));
            }
        }
    }
    if pre == 0 {
        return Ok((Outcome::Back(0), ipos));
    }
    if copy {
        return Ok((Outcome::Back(pre), ipos));
    }
    // As ZODB: resolve a conflict in which the undone revision is the old
    // state, the current one is committed, and the state before the undone
    // transaction is the new one. Classes `zeo-conflict` does not know need
    // the application's code, so their undo is refused as ZODB refuses it
    // when resolution fails.
    let Some(before) = r.resolve(oid, pre)? else {
        return Err(undo_error("_loadBack() failed", Some(oid)));
    };
    if let Some((undone, current)) = conflict {
        if let Ok(merged) = zeo_conflict::resolve(&undone, &current, &before.data) {
            return Ok((Outcome::Data(merged), ipos));
        }
    }
    Err(undo_error(
        "Some data were modified by a later transaction",
        Some(oid),
    ))
}
