//! Writing the new file: the transactions before the pack position reduced
//! to the records that survive (`copyToPacktime`), every later one copied
//! whole (`copyRest`), backpointers re-aimed at the new file.

use std::path::Path;

use crate::error::Result;
use crate::gc::Reachable;
use crate::ids::{Oid, Tid};

use super::output::Output;
use crate::filestorage::fault::Io;
use crate::filestorage::format::{
    DataHeader, Reader, TxnHeader, FIRST_TXN_POS, STATUS_PACKED, TXN_HEADER_LEN,
};
use crate::filestorage::index::OidIndex;
use crate::filestorage::walker::{Dialect, Next, Txn, Walker};

/// Writes the new file and the index that goes with it.
pub(super) struct Copier {
    pub out: Output,
    /// oid → current record in the new file.
    pub index: OidIndex,
    /// (tid, position) of every transaction in the new file, in file order.
    txns: Vec<(Tid, u64)>,
    /// Whether `txns` is strictly increasing by tid (always, in a sound
    /// file), which allows a binary search.
    txns_sorted: bool,
}

impl Copier {
    pub(super) fn new(path: &Path, io: Io) -> Result<Self> {
        Ok(Copier {
            out: Output::create(path, io)?,
            index: OidIndex::new(),
            txns: Vec::new(),
            txns_sorted: true,
        })
    }

    fn push_txn(&mut self, tid: Tid, pos: u64) {
        if self.txns.last().is_some_and(|&(last, _)| last >= tid) {
            self.txns_sorted = false;
        }
        self.txns.push((tid, pos));
    }

    /// Writes a transaction header and its metadata copied from `r`.
    fn write_txn_header(
        &mut self,
        r: &Reader<'_>,
        pos: u64,
        th: &TxnHeader,
        status: u8,
    ) -> Result<()> {
        let meta = r.read_vec(
            pos + TXN_HEADER_LEN,
            th.header_len() - TXN_HEADER_LEN,
            "transaction metadata",
        )?;
        self.out.write(&TxnHeader { status, ..*th }.to_bytes())?;
        self.out.write(&meta)
    }

    /// Writes one data record; `data` is `None` for a record with a
    /// backpointer or without data.
    fn write_record(&mut self, h: &DataHeader, data: Option<&[u8]>) -> Result<()> {
        self.out.write(&h.to_bytes())?;
        match data {
            Some(d) if h.plen > 0 => self.out.write(d),
            _ => self.out.write(&h.back.to_be_bytes()),
        }
    }

    /// Closes the transaction started at `new_tpos`: fixes its length when
    /// it differs from `tlen` and appends the redundant length.
    fn end_txn(&mut self, new_tpos: u64, tlen: u64) -> Result<u64> {
        let new_tlen = self.out.pos() - new_tpos;
        if new_tlen != tlen {
            self.out.patch_u64(new_tpos + 8, new_tlen)?;
        }
        self.out.write(&new_tlen.to_be_bytes())?;
        Ok(new_tlen)
    }

    /// `copyToPacktime`: the transactions before `packpos`, reduced to their
    /// reachable records. Returns the output position after them.
    pub(super) fn copy_to_pack_time(
        &mut self,
        r: &Reader<'_>,
        packpos: u64,
        reachable: &Reachable<u64>,
    ) -> Result<u64> {
        let mut walk = Walker::over(r, FIRST_TXN_POS, Tid::ZERO, Dialect::Pack).shape_only();
        let mut new_pos = FIRST_TXN_POS;
        while walk.pos() < packpos {
            let Next::Txn(txn) = walk.next_txn()? else {
                break;
            };
            let th = txn.header;
            let mut new_tpos = None;
            while let Some(rec) = walk.next_record()? {
                let (pos, h) = (rec.pos, rec.header);
                if reachable.is_reachable(h.oid, pos) {
                    let here_txn = match new_tpos {
                        Some(p) => p,
                        None => {
                            let p = self.out.pos();
                            self.write_txn_header(r, txn.pos, &th, STATUS_PACKED)?;
                            new_tpos = Some(p);
                            p
                        }
                    };
                    let data = if h.plen > 0 {
                        Some(r.record_data(pos, &h)?)
                    } else {
                        r.load_back(h.oid, h.back, pos)?.map(|b| b.data)
                    };
                    let plen = data.as_ref().map_or(0, |d| d.len() as u64);
                    let new = DataHeader {
                        oid: h.oid,
                        tid: h.tid,
                        prev: 0,
                        tloc: here_txn,
                        plen,
                        back: 0,
                    };
                    self.index.insert(h.oid.0, self.out.pos());
                    self.write_record(&new, data.as_deref())?;
                }
            }
            if let Some(p) = new_tpos {
                self.end_txn(p, th.tlen)?;
                self.push_txn(th.tid, p);
                new_pos = self.out.pos();
            }
            walk.finish_txn()?;
        }
        Ok(new_pos)
    }

    /// `copyRest`: every transaction from `ipos` to the reader's end,
    /// whole. Returns the input position reached (the reader's end).
    pub(super) fn copy_rest(&mut self, r: &Reader<'_>, ipos: u64) -> Result<u64> {
        let mut walk = Walker::over(r, ipos, Tid::ZERO, Dialect::Pack).shape_only();
        while let Next::Txn(txn) = walk.next_txn()? {
            self.copy_one(r, &mut walk, txn)?;
        }
        Ok(walk.pos())
    }

    /// `copyOne`: one transaction after the pack position.
    fn copy_one(&mut self, r: &Reader<'_>, walk: &mut Walker<'_>, txn: Txn) -> Result<()> {
        let (ipos, th) = (txn.pos, txn.header);
        let new_tpos = self.out.pos();
        self.write_txn_header(r, ipos, &th, th.status)?;
        let mut tindex: Vec<(u64, u64)> = Vec::new();
        while let Some(rec) = walk.next_record()? {
            let (pos, h) = (rec.pos, rec.header);
            let (data, prev_txn) = if h.plen > 0 {
                (Some(r.record_data(pos, &h)?), None)
            } else if h.back != 0 {
                let data = r.load_back(h.oid, h.back, pos)?.map(|b| b.data);
                (data, Some(r.data_header_for(h.back, h.oid)?.tid))
            } else {
                (None, None)
            };
            let back = match prev_txn {
                Some(tid) => self.resolve_backpointer(tid, h.oid, data.as_deref())?,
                None => 0,
            };
            let prev = self.index.get(h.oid.0).unwrap_or(0);
            let here = self.out.pos();
            tindex.push((h.oid.0, here));
            let new = match &data {
                Some(d) if back == 0 => DataHeader {
                    oid: h.oid,
                    tid: h.tid,
                    prev,
                    tloc: new_tpos,
                    plen: d.len() as u64,
                    back: 0,
                },
                _ => DataHeader {
                    oid: h.oid,
                    tid: h.tid,
                    prev,
                    tloc: new_tpos,
                    plen: 0,
                    back,
                },
            };
            self.write_record(&new, data.as_deref())?;
        }
        let new_tlen = self.end_txn(new_tpos, th.tlen)?;
        if new_tlen != th.tlen {
            tracing::warn!(
                "pack: transaction {} at {ipos} changed length ({} -> {new_tlen}): a backpointer's target was packed away",
                th.tid,
                th.tlen
            );
        }
        self.push_txn(th.tid, new_tpos);
        for (oid, p) in tindex {
            self.index.insert(oid, p);
        }
        walk.finish_txn()
    }

    /// `PackCopier._resolve_backpointer`: the position in the new file of
    /// the record holding the same data for `oid` in transaction `tid`, or
    /// 0 to write the data inline.
    fn resolve_backpointer(&mut self, tid: Tid, oid: Oid, data: Option<&[u8]>) -> Result<u64> {
        let found = if self.txns_sorted {
            self.txns
                .binary_search_by_key(&tid, |e| e.0)
                .ok()
                .and_then(|i| self.txns.get(i))
        } else {
            self.txns.iter().rev().find(|e| e.0 == tid)
        };
        let Some(&(_, tpos)) = found else {
            // ZODB raises PackError("Invalid backpointer transaction id").
            tracing::warn!("pack: backpointer to transaction {tid} that was packed away; copying the data of {oid}");
            return Ok(0);
        };
        let r = self.out.reader()?;
        data_find(&r, tpos, oid, data)
    }
}

/// `PackCopier._data_find`: the first record for `oid` in the transaction
/// at `tpos` of the new file, when it holds `data` or is itself a
/// backpointer (trusted as ZODB trusts it); 0 otherwise.
fn data_find(r: &Reader<'_>, tpos: u64, oid: Oid, data: Option<&[u8]>) -> Result<u64> {
    let th = r.txn_header(tpos)?;
    let tend = tpos + th.tlen;
    let mut pos = tpos + th.header_len();
    while pos < tend {
        let h = r.data_header(pos)?;
        if h.oid == oid {
            if h.plen == 0 {
                return Ok(pos);
            }
            let Some(data) = data.filter(|d| d.len() as u64 == h.plen) else {
                tracing::error!("Mismatch between data and backpointer at {pos}");
                return Ok(0);
            };
            return Ok(if r.record_data(pos, &h)? == data {
                pos
            } else {
                0
            });
        }
        pos += h
            .record_len()
            .ok_or_else(|| r.error(pos, "data record length overflows"))?;
    }
    Ok(0)
}
