//! The one forward walk over a Data.fs's transactions that validates what it
//! crosses: `check`, the scan at open (index rebuild and truncated-tail
//! recovery) and pack (its passes over the file and its copier) all walk
//! through [`Walker`].
//!
//! The walk reads headers only — transaction headers, data record headers
//! (and the backpointer of a `plen == 0` record), redundant lengths — never
//! a record's data, and it reads them through a [`Window`] that stops
//! reading ahead when records are large, so a walk over big objects costs
//! one small read per record. Every length comes from the file and is
//! bounded by the walk's end before anything is read; there is no
//! recursion.
//!
//! What the walk does with a problem depends on whose rules it follows
//! ([`Dialect`]): `check` reports the first problem as `fstest` words it,
//! the scan at open recovers from an incomplete tail the way
//! `FileStorage.read_index` does and reports other damage in its own
//! words, and pack reports problems as `fspack`'s `checkTxn`/`checkData`
//! do. The order in which each dialect looks at a header's fields is the
//! order of the tool it mirrors, so the same damage gives the same message
//! as before the walks were merged.

use std::fs::File;
use std::path::Path;

use crate::error::{Error, Result};
use crate::ids::{Oid, Tid};

use super::format::{
    format_error, DataHeader, Reader, TxnHeader, Window, DATA_HEADER_LEN, STATUS_CHECKPOINT,
    STATUS_COMMITTED, STATUS_PACKED, STATUS_UNDONE, TXN_HEADER_LEN, TXN_TRAILER_LEN,
};

/// Whose rules a walk follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// `zeo-server check`: fstest's checks and messages; the records of
    /// `'u'` transactions are not looked at, a version length is allowed.
    Fstest,
    /// The scan at open: an incomplete last transaction ends the walk with
    /// [`Next::SaveAndCut`] (a partial header with [`Next::Cut`]), a
    /// time-stamp reduction or an unknown status is only logged.
    Recovery,
    /// Pack: fspack's checks, records of every transaction included, the
    /// backpointers of `plen == 0` records read.
    Pack,
}

/// A transaction whose header passed the checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Txn {
    /// Position of its header.
    pub pos: u64,
    /// The fixed header.
    pub header: TxnHeader,
    /// Position of its redundant length (`pos + tlen`).
    pub end: u64,
}

/// What [`Walker::next_txn`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// A transaction; its records come from [`Walker::next_record`].
    Txn(Txn),
    /// The end of the walk (or the first transaction after
    /// [`Walker::stop_after`]'s tid).
    End,
    /// Recovery only: a partial transaction header at this position ends
    /// the file; cut it off.
    Cut(u64),
    /// Recovery only: the transaction at this position is incomplete (or
    /// junk ends the file); save the tail to `Data.fs.trN` and cut it off.
    SaveAndCut(u64),
}

/// A data record whose header passed the checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    /// Its position.
    pub pos: u64,
    /// Its header (`back` read only in the [`Dialect::Pack`] walk).
    pub header: DataHeader,
}

/// The transaction being walked.
#[derive(Clone, Copy)]
struct Current {
    txn: Txn,
    /// Next record's position.
    rpos: u64,
    /// Whether its records are walked at all.
    records: bool,
}

/// A forward walk over the transactions in `[start, end)` of one file.
///
/// Use: [`Walker::next_txn`], then [`Walker::next_record`] until `None`,
/// then [`Walker::finish_txn`] (which walks any records not asked for, so
/// they are validated all the same), and so on.
pub(crate) struct Walker<'a> {
    win: Window<'a>,
    path: &'a Path,
    end: u64,
    pos: u64,
    ltid: Tid,
    dialect: Dialect,
    sequence_checks: bool,
    stop_after: Option<Tid>,
    current: Option<Current>,
}

impl<'a> Walker<'a> {
    /// A walk of `file` (named `path` in errors) from `start` to `end`,
    /// after a transaction with tid `ltid` (`Tid::ZERO` at the start).
    pub fn new(
        file: &'a File,
        path: &'a Path,
        end: u64,
        start: u64,
        ltid: Tid,
        dialect: Dialect,
    ) -> Self {
        Walker {
            win: Window::new(file, path, end),
            path,
            end,
            pos: start,
            ltid,
            dialect,
            sequence_checks: true,
            stop_after: None,
            current: None,
        }
    }

    /// A walk of what `r` reads, from `start`.
    pub fn over(r: &Reader<'a>, start: u64, ltid: Tid, dialect: Dialect) -> Self {
        Self::new(r.file(), r.path(), r.end(), start, ltid, dialect)
    }

    /// Ends the walk, before any check, at the first transaction with a tid
    /// later than `tid` ([`Walker::pos`] then is its position).
    pub fn stop_after(mut self, tid: Tid) -> Self {
        self.stop_after = Some(tid);
        self
    }

    /// Checks only the shape of each transaction, not the order of tids nor
    /// the status: fspack's copier, which copies what its first pass (or a
    /// commit) already vouched for.
    pub fn shape_only(mut self) -> Self {
        self.sequence_checks = false;
        self
    }

    /// Where the next transaction starts; after [`Next::End`],
    /// [`Next::Cut`] or [`Next::SaveAndCut`], where the walk stopped.
    pub fn pos(&self) -> u64 {
        self.pos
    }

    /// Tid of the last finished transaction (or the `ltid` given).
    pub fn ltid(&self) -> Tid {
        self.ltid
    }

    /// The `N` bytes at `pos`, `None` past the end.
    pub fn array<const N: usize>(&mut self, pos: u64) -> Result<Option<[u8; N]>> {
        self.win.array::<N>(pos)
    }

    fn fail(&self, pos: u64, reason: impl Into<String>) -> Error {
        format_error(self.path, pos, reason)
    }

    /// `what` (`len` bytes at `pos`) does not fit before the end, in the
    /// words of the positional reader pack used to read with.
    fn past_end(&self, pos: u64, what: &str, len: u64) -> Error {
        self.fail(
            pos,
            format!(
                "{what} ({len} bytes) runs past the end of the data at {}",
                self.end
            ),
        )
    }

    /// The next transaction, its header checked.
    pub fn next_txn(&mut self) -> Result<Next> {
        if self.current.is_some() {
            self.finish_txn()?;
        }
        let pos = self.pos;
        if pos >= self.end {
            return Ok(Next::End);
        }
        let Some(raw) = self.win.array::<{ TXN_HEADER_LEN as usize }>(pos)? else {
            return match self.dialect {
                Dialect::Fstest => Err(self.fail(pos, format!("truncated at {pos}"))),
                Dialect::Recovery => {
                    tracing::warn!(
                        "{} truncated at {pos}: partial transaction header",
                        self.path.display()
                    );
                    Ok(Next::Cut(pos))
                }
                Dialect::Pack => Err(self.past_end(pos, "transaction header", TXN_HEADER_LEN)),
            };
        };
        let header = TxnHeader::parse(&raw);
        if self.stop_after.is_some_and(|stop| header.tid > stop) {
            return Ok(Next::End);
        }
        let checked = match self.dialect {
            Dialect::Fstest => self.fstest_txn(pos, &header)?,
            Dialect::Recovery => self.recovery_txn(pos, &header)?,
            Dialect::Pack => self.pack_txn(pos, &header)?,
        };
        let Some(end) = checked else {
            return Ok(Next::SaveAndCut(pos));
        };
        let txn = Txn { pos, header, end };
        let records = self.dialect == Dialect::Pack || header.status != STATUS_UNDONE;
        self.current = Some(Current {
            txn,
            rpos: pos + header.header_len(),
            records,
        });
        Ok(Next::Txn(txn))
    }

    /// The end of the transaction at `pos` when it fits before the walk's
    /// end with its redundant length.
    fn txn_end(&self, pos: u64, h: &TxnHeader) -> Option<u64> {
        pos.checked_add(h.tlen).filter(|e| {
            e.checked_add(TXN_TRAILER_LEN)
                .is_some_and(|x| x <= self.end)
        })
    }

    /// fstest's header checks, in its order.
    fn fstest_txn(&self, pos: u64, h: &TxnHeader) -> Result<Option<u64>> {
        if h.tid <= self.ltid {
            return Err(self.fail(
                pos,
                format!("time-stamp reduction at {pos}: {} <= {}", h.tid, self.ltid),
            ));
        }
        let Some(end) = self.txn_end(pos, h) else {
            return Err(self.fail(
                pos,
                format!("truncated possibly because of damaged records at {pos}"),
            ));
        };
        if h.status == STATUS_CHECKPOINT {
            return Err(self.fail(pos, format!("checkpoint flag was not cleared at {pos}")));
        }
        if !b" up".contains(&h.status) {
            return Err(self.fail(
                pos,
                format!("has invalid status {:?} at {pos}", h.status as char),
            ));
        }
        if h.header_len() > h.tlen {
            return Err(self.fail(pos, format!("has an invalid transaction header at {pos}")));
        }
        Ok(Some(end))
    }

    /// `read_index`'s header checks: `None` when the file's tail is to be
    /// saved and cut off.
    fn recovery_txn(&mut self, pos: u64, h: &TxnHeader) -> Result<Option<u64>> {
        if h.tid <= self.ltid {
            tracing::warn!("{} time-stamp reduction at {pos}", self.path.display());
        }
        let end = self.txn_end(pos, h);
        if end.is_none() || h.status == STATUS_CHECKPOINT {
            if self.complete_txn_after(pos)? {
                // ZODB would cut everything from here on, but a sound
                // transaction ends the file: this is damage in the middle.
                return Err(self.fail(
                    pos,
                    if end.is_none() {
                        format!("transaction length {} runs past the end of the file, but later transactions follow", h.tlen)
                    } else {
                        "checkpoint flag set on a transaction that is not the last".to_string()
                    },
                ));
            }
            tracing::warn!(
                "{} truncated, possibly due to damaged records at {pos}",
                self.path.display()
            );
            return Ok(None);
        }
        if ![STATUS_COMMITTED, STATUS_UNDONE, STATUS_PACKED].contains(&h.status) {
            tracing::warn!(
                "{} has invalid status {:?} at {pos}",
                self.path.display(),
                h.status as char
            );
        }
        if h.tlen < h.header_len() {
            // Either damage in the middle or junk at the end: the last 8
            // bytes tell which, as in ZODB.
            let rtl = match self.win.array::<8>(self.end - 8)? {
                Some(b) => u64::from_be_bytes(b),
                None => 0,
            };
            if self.end.saturating_sub(rtl) < pos || rtl < TXN_HEADER_LEN {
                tracing::error!(
                    "{} has invalid transaction header at {pos}; truncating junk at the end",
                    self.path.display()
                );
                return Ok(None);
            }
            return Err(self.fail(
                pos,
                format!(
                    "invalid transaction header: length {} is less than header length {}",
                    h.tlen,
                    h.header_len()
                ),
            ));
        }
        Ok(end)
    }

    /// Whether the file ends with a complete transaction that starts after
    /// `pos` (its redundant length leads back to a header that agrees).
    fn complete_txn_after(&mut self, pos: u64) -> Result<bool> {
        let Some(trailer_pos) = self.end.checked_sub(TXN_TRAILER_LEN) else {
            return Ok(false);
        };
        let Some(rtl) = self.win.array::<8>(trailer_pos)?.map(u64::from_be_bytes) else {
            return Ok(false);
        };
        let Some(start) = trailer_pos.checked_sub(rtl) else {
            return Ok(false);
        };
        if start <= pos || rtl < TXN_HEADER_LEN {
            return Ok(false);
        }
        Ok(
            match self.win.array::<{ TXN_HEADER_LEN as usize }>(start)? {
                Some(raw) => {
                    let h = TxnHeader::parse(&raw);
                    h.tlen == rtl
                        && [STATUS_COMMITTED, STATUS_PACKED, STATUS_UNDONE].contains(&h.status)
                }
                None => false,
            },
        )
    }

    /// fspack's `checkTxn` (the sequence part skipped by
    /// [`Walker::shape_only`]).
    fn pack_txn(&self, pos: u64, h: &TxnHeader) -> Result<Option<u64>> {
        if self.sequence_checks {
            if h.tid <= self.ltid {
                return Err(self.fail(
                    pos,
                    format!("time-stamp reduction: {} <= {}", h.tid, self.ltid),
                ));
            }
            if h.status == STATUS_CHECKPOINT {
                return Err(self.fail(pos, "transaction with checkpoint flag set"));
            }
            if ![STATUS_COMMITTED, STATUS_PACKED, STATUS_UNDONE].contains(&h.status) {
                return Err(self.fail(
                    pos,
                    format!("invalid transaction status: {:?}", h.status as char),
                ));
            }
        }
        if h.tlen < h.header_len() {
            return Err(self.fail(
                pos,
                format!(
                    "invalid transaction header: txnlen ({}) < headerlen({})",
                    h.tlen,
                    h.header_len()
                ),
            ));
        }
        match self.txn_end(pos, h) {
            Some(end) => Ok(Some(end)),
            None => Err(self.fail(
                pos,
                format!(
                    "transaction length {} runs past the end of the data at {}",
                    h.tlen, self.end
                ),
            )),
        }
    }

    /// The next record of the current transaction, its header checked;
    /// `None` after its last one.
    pub fn next_record(&mut self) -> Result<Option<Record>> {
        let Some(cur) = self.current else {
            return Ok(None);
        };
        if !cur.records || cur.rpos >= cur.txn.end {
            return Ok(None);
        }
        let pos = cur.rpos;
        let (header, len) = match self.dialect {
            Dialect::Fstest => self.fstest_record(pos, &cur.txn)?,
            Dialect::Recovery => self.recovery_record(pos, &cur.txn)?,
            Dialect::Pack => self.pack_record(pos, &cur.txn)?,
        };
        if let Some(c) = self.current.as_mut() {
            c.rpos = pos + len;
        }
        Ok(Some(Record { pos, header }))
    }

    /// fstest's record checks; a version length is allowed and counted.
    fn fstest_record(&mut self, pos: u64, txn: &Txn) -> Result<(DataHeader, u64)> {
        let Some(raw) = self.win.array::<{ DATA_HEADER_LEN as usize }>(pos)? else {
            return Err(self.fail(pos, format!("truncated at {pos}")));
        };
        let (header, vlen) = parse_with_version(&raw);
        let mut len = header.record_len();
        if vlen != 0 {
            len = len.and_then(|d| d.checked_add(16 + u64::from(vlen)));
        }
        if header.tloc != txn.pos {
            return Err(self.fail(
                pos,
                format!(
                    "data record exceeds transaction record at {pos}: tloc {} != tpos {}",
                    header.tloc, txn.pos
                ),
            ));
        }
        let next = len.and_then(|d| pos.checked_add(d));
        match (next, len) {
            (Some(n), Some(len)) if n <= txn.end => Ok((header, len)),
            _ => Err(self.fail(
                pos,
                format!(
                    "has data records that extend beyond the transaction record; end at {}",
                    next.map_or_else(|| "overflow".to_string(), |n| n.to_string())
                ),
            )),
        }
    }

    /// `read_index`'s record checks.
    fn recovery_record(&mut self, pos: u64, txn: &Txn) -> Result<(DataHeader, u64)> {
        let Some(raw) = self.win.array::<{ DATA_HEADER_LEN as usize }>(pos)? else {
            return Err(self.fail(pos, "data record header runs past the end of the file"));
        };
        let header = DataHeader::parse(&raw).map_err(|vlen| self.version_error(pos, vlen))?;
        let len = header
            .record_len()
            .ok_or_else(|| self.fail(pos, "data record length overflows"))?;
        if pos.checked_add(len).is_none_or(|e| e > txn.end) || header.tloc != txn.pos {
            return Err(self.fail(
                pos,
                format!(
                    "data record exceeds transaction record at {} (tloc {}, length {len})",
                    txn.pos, header.tloc
                ),
            ));
        }
        Ok((header, len))
    }

    /// fspack's record reading and `checkData`.
    fn pack_record(&mut self, pos: u64, txn: &Txn) -> Result<(DataHeader, u64)> {
        let Some(raw) = self.win.array::<{ DATA_HEADER_LEN as usize }>(pos)? else {
            return Err(self.past_end(pos, "data record header", DATA_HEADER_LEN));
        };
        let mut header = DataHeader::parse(&raw).map_err(|vlen| self.version_error(pos, vlen))?;
        let after_header = pos + DATA_HEADER_LEN;
        if header.plen == 0 {
            let Some(back) = self.win.array::<8>(after_header)? else {
                return Err(self.past_end(after_header, "backpointer", 8));
            };
            header.back = u64::from_be_bytes(back);
        } else if header.plen > self.end.saturating_sub(after_header) {
            return Err(self.fail(
                pos,
                format!(
                    "data length {} runs past the end of the data at {}",
                    header.plen, self.end
                ),
            ));
        }
        if header.tloc != txn.pos {
            return Err(self.fail(
                pos,
                format!(
                    "data record does not point to transaction header: {} != {}",
                    header.tloc, txn.pos
                ),
            ));
        }
        let len = header
            .record_len()
            .ok_or_else(|| self.fail(pos, "data record length overflows"))?;
        if pos.checked_add(len).is_none_or(|e| e > txn.end) {
            return Err(self.fail(
                pos,
                format!("data record size exceeds transaction size at {}", txn.end),
            ));
        }
        if header.prev >= pos {
            return Err(self.fail(pos, format!("invalid previous pointer: {}", header.prev)));
        }
        if header.back >= pos {
            return Err(self.fail(pos, format!("invalid back pointer: {}", header.back)));
        }
        Ok((header, len))
    }

    fn version_error(&self, pos: u64, vlen: u16) -> Error {
        self.fail(
            pos,
            format!("data record has version length {vlen}; versions are not supported"),
        )
    }

    /// Walks the current transaction's remaining records, checks its
    /// redundant length and moves past it.
    pub fn finish_txn(&mut self) -> Result<()> {
        while self.next_record()?.is_some() {}
        let Some(cur) = self.current else {
            return Ok(());
        };
        let (end, tlen) = (cur.txn.end, cur.txn.header.tlen);
        let rtl = self.win.array::<8>(end)?.map(u64::from_be_bytes);
        if rtl != Some(tlen) {
            return Err(match self.dialect {
                Dialect::Fstest => {
                    self.fail(end, format!("has inconsistent transaction length at {end}"))
                }
                Dialect::Recovery => self.fail(
                    end,
                    format!("redundant transaction length check failed: {rtl:?} != {tlen}"),
                ),
                Dialect::Pack => match rtl {
                    None => self.past_end(end, "redundant transaction length", 8),
                    Some(tl) => self.fail(
                        end,
                        format!("redundant transaction length does not match initial transaction length: {tl} != {tlen}"),
                    ),
                },
            });
        }
        self.current = None;
        self.pos = end + TXN_TRAILER_LEN;
        self.ltid = cur.txn.header.tid;
        Ok(())
    }
}

/// A data record header with whatever version length it has (fstest
/// allows one).
fn parse_with_version(raw: &[u8; DATA_HEADER_LEN as usize]) -> (DataHeader, u16) {
    let vlen = u16::from_be_bytes([raw[32], raw[33]]);
    let mut unversioned = *raw;
    unversioned[32] = 0;
    unversioned[33] = 0;
    let header = DataHeader::parse(&unversioned).unwrap_or(DataHeader {
        oid: Oid(0),
        tid: Tid::ZERO,
        prev: 0,
        tloc: 0,
        plen: 0,
        back: 0,
    });
    (header, vlen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filestorage::format::MAGIC;

    /// A transaction at `tpos` with one record per `(oid, data)`.
    fn txn(tpos: u64, tid: u64, status: u8, records: &[(u64, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        let mut pos = tpos + TXN_HEADER_LEN;
        for &(oid, data) in records {
            let h = DataHeader {
                oid: Oid(oid),
                tid: Tid(tid),
                prev: 0,
                tloc: tpos,
                plen: data.len() as u64,
                back: 0,
            };
            h.write_record(Some(data), &mut body);
            pos += h.record_len().unwrap();
        }
        let tlen = pos - tpos;
        let header = TxnHeader {
            tid: Tid(tid),
            tlen,
            status,
            ulen: 0,
            dlen: 0,
            elen: 0,
        };
        let mut out = header.to_bytes().to_vec();
        out.extend_from_slice(&body);
        out.extend_from_slice(&tlen.to_be_bytes());
        out
    }

    /// A file of transactions with these tids and statuses, two records
    /// each; returns it and the position of each transaction.
    fn file(txns: &[(u64, u8)]) -> (Vec<u8>, Vec<u64>) {
        let mut bytes = MAGIC.to_vec();
        let mut positions = Vec::new();
        for &(tid, status) in txns {
            positions.push(bytes.len() as u64);
            let t = txn(
                bytes.len() as u64,
                tid,
                status,
                &[(1, b"one"), (tid, b"two")],
            );
            bytes.extend_from_slice(&t);
        }
        (bytes, positions)
    }

    /// Walks `bytes` in `dialect`: the transactions' (tid, record count)
    /// and how the walk ended.
    fn walk(
        bytes: &[u8],
        dialect: Dialect,
        setup: impl FnOnce(Walker<'_>) -> Walker<'_>,
    ) -> (Vec<(u64, usize)>, Result<Next>, u64) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("Data.fs");
        std::fs::write(&path, bytes).unwrap();
        let file = File::open(&path).unwrap();
        let mut w = setup(Walker::new(
            &file,
            &path,
            bytes.len() as u64,
            4,
            Tid::ZERO,
            dialect,
        ));
        let mut seen = Vec::new();
        let end = loop {
            match w.next_txn() {
                Ok(Next::Txn(t)) => {
                    let mut n = 0;
                    loop {
                        match w.next_record() {
                            Ok(Some(_)) => n += 1,
                            Ok(None) => break,
                            Err(e) => return (seen, Err(e), w.pos()),
                        }
                    }
                    if let Err(e) = w.finish_txn() {
                        return (seen, Err(e), w.pos());
                    }
                    seen.push((t.header.tid.0, n));
                }
                other => break other,
            }
        };
        (seen, end, w.pos())
    }

    fn reason(r: &Result<Next>) -> String {
        match r {
            Err(Error::Format { reason, .. }) => reason.clone(),
            other => panic!("expected a format error, got {other:?}"),
        }
    }

    #[test]
    fn stop_after_ends_the_walk_before_checking_the_later_transaction() {
        let (bytes, at) = file(&[(10, b' '), (20, b' '), (30, STATUS_CHECKPOINT)]);
        let (seen, end, pos) = walk(&bytes, Dialect::Pack, |w| w.stop_after(Tid(20)));
        assert_eq!(seen, [(10, 2), (20, 2)]);
        assert_eq!((end.unwrap(), pos), (Next::End, at[2]));
        let (seen, end, _) = walk(&bytes, Dialect::Pack, |w| w);
        assert_eq!(seen.len(), 2);
        assert_eq!(reason(&end), "transaction with checkpoint flag set");
    }

    #[test]
    fn each_dialect_words_a_time_stamp_reduction_as_its_tool_does() {
        let (bytes, at) = file(&[(10, b' '), (30, b' '), (20, b' ')]);
        let (_, end, _) = walk(&bytes, Dialect::Fstest, |w| w);
        assert_eq!(
            reason(&end),
            format!(
                "time-stamp reduction at {}: {} <= {}",
                at[2],
                Tid(20),
                Tid(30)
            )
        );
        let (_, end, _) = walk(&bytes, Dialect::Pack, |w| w);
        assert_eq!(
            reason(&end),
            format!("time-stamp reduction: {} <= {}", Tid(20), Tid(30))
        );
        // The scan at open only logs it; pack's copier does not look.
        let (seen, end, _) = walk(&bytes, Dialect::Recovery, |w| w);
        assert_eq!((seen.len(), end.unwrap()), (3, Next::End));
        let (seen, end, _) = walk(&bytes, Dialect::Pack, |w| w.shape_only());
        assert_eq!((seen.len(), end.unwrap()), (3, Next::End));
    }

    #[test]
    fn recovery_cuts_a_partial_header_and_saves_an_incomplete_transaction() {
        let (mut bytes, _) = file(&[(10, b' '), (20, b' ')]);
        let sound = bytes.len() as u64;
        bytes.extend_from_slice(&[0u8; 10]);
        let (seen, end, pos) = walk(&bytes, Dialect::Recovery, |w| w);
        assert_eq!(
            (seen.len(), end.unwrap(), pos),
            (2, Next::Cut(sound), sound)
        );
        let (_, end, _) = walk(&bytes, Dialect::Fstest, |w| w);
        assert_eq!(reason(&end), format!("truncated at {sound}"));

        let (mut bytes, _) = file(&[(10, b' '), (20, b' ')]);
        let t = txn(sound, 30, b' ', &[(5, b"five")]);
        bytes.extend_from_slice(&t[..t.len() - 3]);
        let (seen, end, pos) = walk(&bytes, Dialect::Recovery, |w| w);
        assert_eq!(
            (seen.len(), end.unwrap(), pos),
            (2, Next::SaveAndCut(sound), sound)
        );
        let (_, end, _) = walk(&bytes, Dialect::Pack, |w| w);
        assert!(reason(&end).contains("runs past the end of the data"));
    }

    #[test]
    fn records_of_undone_transactions_are_walked_by_pack_only() {
        let (bytes, _) = file(&[(10, b' '), (20, STATUS_UNDONE)]);
        for (dialect, records) in [
            (Dialect::Fstest, 0),
            (Dialect::Recovery, 0),
            (Dialect::Pack, 2),
        ] {
            let (seen, end, _) = walk(&bytes, dialect, |w| w);
            assert_eq!(seen, [(10, 2), (20, records)], "{dialect:?}");
            assert_eq!(end.unwrap(), Next::End);
        }
    }
}
