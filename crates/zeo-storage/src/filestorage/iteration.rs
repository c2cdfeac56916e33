//! Walking transactions forward, as ZODB's `FileIterator` does.
//!
//! The storage's iterator is strict: damage inside the committed part of
//! the file is reported as an error rather than ending the walk quietly.
//! `dump` uses the lenient mode, which stops where `FileIterator` stops so
//! that its output matches fsdump's line for line.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::Result;
use crate::ids::{Oid, Tid};
use crate::interface::{DataRecord, TransactionMetaData, TransactionRecord, TxnStatus};

use super::format::{
    Reader, TxnHeader, Window, FIRST_TXN_POS, STATUS_CHECKPOINT, STATUS_UNDONE, TXN_HEADER_LEN,
    TXN_TRAILER_LEN,
};

/// One data record as read from the file.
#[derive(Debug, Clone)]
pub(crate) struct RawRecord {
    /// Position of the record.
    #[allow(dead_code)] // kept for tools that report positions
    pub pos: u64,
    /// The object.
    pub oid: Oid,
    /// The record's tid.
    pub tid: Tid,
    /// The data, resolved through backpointers; `None` for no data.
    pub data: Option<Vec<u8>>,
    /// For a backpointer record, the tid of the record it points at.
    pub data_txn: Option<Tid>,
}

/// One transaction as read from the file.
#[derive(Debug, Clone)]
pub(crate) struct RawTxn {
    /// Position of the header.
    pub tpos: u64,
    /// The fixed header.
    pub header: TxnHeader,
    /// User, description, extension.
    pub meta: TransactionMetaData,
    /// Its data records in file order.
    pub records: Vec<RawRecord>,
}

/// A forward walk over the transactions in `[pos, end)`.
pub(crate) struct TxnScanner {
    file: Arc<File>,
    path: PathBuf,
    pos: u64,
    end: u64,
    stop: Option<Tid>,
    strict: bool,
    /// Whether records get their data (and transactions their metadata);
    /// without, the walk reads headers only.
    with_data: bool,
    done: bool,
}

impl TxnScanner {
    /// Starts at the first transaction with a tid `>= start`.
    pub fn new(
        file: Arc<File>,
        path: &Path,
        end: u64,
        start: Option<Tid>,
        stop: Option<Tid>,
        strict: bool,
    ) -> Result<Self> {
        let mut s = TxnScanner {
            file,
            path: path.to_path_buf(),
            pos: FIRST_TXN_POS,
            end,
            stop,
            strict,
            with_data: true,
            done: false,
        };
        if let Some(start) = start {
            s.pos = s.find_start(start)?;
        }
        Ok(s)
    }

    /// Reads headers only: records come without their data (`data` and
    /// `data_txn` are `None`) and transactions without their metadata, for
    /// walks that need only tids and oids. Damage is found as it would be
    /// with the data, since every length and backpointer is still checked.
    pub fn headers_only(mut self) -> Self {
        self.with_data = false;
        self
    }

    fn reader(&self) -> Reader<'_> {
        Reader::new(&self.file, &self.path, self.end)
    }

    /// Position of the first transaction with `tid >= start`, walking from
    /// whichever end is closer in time (like `FileIterator._skip_to_start`).
    fn find_start(&self, start: Tid) -> Result<u64> {
        let r = self.reader();
        if self.end < FIRST_TXN_POS + TXN_HEADER_LEN {
            return Ok(self.end.max(FIRST_TXN_POS));
        }
        let first = r.txn_header(FIRST_TXN_POS)?;
        if start <= first.tid {
            return Ok(FIRST_TXN_POS);
        }
        let (last_pos, last) = r.prev_txn(self.end)?;
        if start > last.tid {
            return Ok(self.end);
        }
        if start == last.tid {
            return Ok(last_pos);
        }
        let forward = start.0.abs_diff(first.tid.0) < last.tid.0.abs_diff(start.0);
        if forward {
            let mut pos = FIRST_TXN_POS;
            while pos < self.end {
                let h = r.txn_header(pos)?;
                if h.tid >= start {
                    return Ok(pos);
                }
                pos = next_pos(&r, pos, &h)?;
            }
            Ok(self.end)
        } else {
            let mut pos = self.end;
            while pos > FIRST_TXN_POS {
                let (tpos, h) = r.prev_txn(pos)?;
                if h.tid < start {
                    return Ok(pos);
                }
                pos = tpos;
            }
            Ok(FIRST_TXN_POS)
        }
    }

    /// The next transaction, `None` at the end.
    pub fn next_txn(&mut self) -> Option<Result<RawTxn>> {
        if self.done {
            return None;
        }
        let r = self.next_inner();
        match &r {
            Ok(None) | Err(_) => self.done = true,
            Ok(Some(_)) => {}
        }
        r.transpose()
    }

    fn next_inner(&mut self) -> Result<Option<RawTxn>> {
        let file = Arc::clone(&self.file);
        let r = Reader::new(&file, &self.path, self.end);
        loop {
            let pos = self.pos;
            if pos >= self.end {
                return Ok(None);
            }
            let h = r.txn_header(pos)?;
            if self.stop.is_some_and(|stop| h.tid > stop) {
                return Ok(None);
            }
            if h.status == STATUS_CHECKPOINT {
                return self.stop_or_fail(&r, pos, "transaction still has its checkpoint flag set");
            }
            let tend = match pos
                .checked_add(h.tlen)
                .filter(|e| e.saturating_add(TXN_TRAILER_LEN) <= self.end)
            {
                Some(e) => e,
                None => {
                    return self.stop_or_fail(
                        &r,
                        pos,
                        &format!(
                            "transaction length {} runs past the end of the data",
                            h.tlen
                        ),
                    )
                }
            };
            if self.strict && TxnStatus::from_byte(h.status).is_none() {
                return Err(r.error(
                    pos,
                    format!("invalid transaction status {:?}", h.status as char),
                ));
            }
            if h.tlen < h.header_len() {
                return self.stop_or_fail(
                    &r,
                    pos,
                    &format!(
                        "transaction length {} is less than its header length {}",
                        h.tlen,
                        h.header_len()
                    ),
                );
            }
            let rtl = r.read_u64(tend, "redundant transaction length")?;
            if rtl != h.tlen {
                return self.stop_or_fail(
                    &r,
                    tend,
                    &format!("redundant transaction length {rtl} != {}", h.tlen),
                );
            }
            self.pos = tend + TXN_TRAILER_LEN;
            if h.status == STATUS_UNDONE {
                continue;
            }
            let meta = if self.with_data {
                r.txn_meta(pos, &h)?
            } else {
                TransactionMetaData::default()
            };
            let records = self.records(&r, pos, &h, tend)?;
            return Ok(Some(RawTxn {
                tpos: pos,
                header: h,
                meta,
                records,
            }));
        }
    }

    fn stop_or_fail(&self, r: &Reader<'_>, pos: u64, why: &str) -> Result<Option<RawTxn>> {
        if self.strict {
            Err(r.error(pos, why))
        } else {
            tracing::warn!("{}: {why} at {pos}", self.path.display());
            Ok(None)
        }
    }

    fn records(
        &self,
        r: &Reader<'_>,
        tpos: u64,
        h: &TxnHeader,
        tend: u64,
    ) -> Result<Vec<RawRecord>> {
        let mut out = Vec::new();
        let mut pos = tpos + h.header_len();
        // Records of one transaction whose backpointers lead to the same
        // data would each get a copy of it: a damaged or hostile file could
        // turn a few bytes of backpointers into gigabytes. Distinct data is
        // bounded by the file; repeated data by this budget.
        let mut resolved = HashSet::new();
        let mut repeated_budget = MAX_REPEATED_DATA;
        // Without the data, headers come through a window that reads ahead
        // within the transaction: one system call for many small records.
        let mut win = Window::new(r.file(), r.path(), r.end()).read_ahead_until(tend);
        while pos < tend {
            let d = if self.with_data {
                r.data_header(pos)?
            } else {
                r.data_header_in(&mut win, pos)?
            };
            let len = d.record_len().unwrap_or(u64::MAX);
            if pos.checked_add(len).is_none_or(|e| e > tend) || d.tloc != tpos {
                if self.strict {
                    return Err(r.error(
                        pos,
                        format!("data record exceeds transaction record at {tpos}"),
                    ));
                }
                tracing::warn!(
                    "{} data record exceeds transaction record at {pos}",
                    self.path.display()
                );
                break;
            }
            let (data, data_txn) = if d.plen > 0 {
                let data = if self.with_data {
                    Some(r.record_data(pos, &d)?)
                } else {
                    None
                };
                (data, None)
            } else if d.back == 0 {
                (None, None)
            } else {
                let target = r.back_target(d.oid, d.back, pos)?;
                if let Some((target_pos, target_header)) = &target {
                    if !resolved.insert(*target_pos) {
                        repeated_budget = repeated_budget
                            .checked_sub(target_header.plen)
                            .ok_or_else(|| {
                                r.error(
                                    pos,
                                    format!(
                                        "the backpointers of transaction {tpos} repeat more than \
                                         {MAX_REPEATED_DATA} bytes of data"
                                    ),
                                )
                            })?;
                    }
                }
                let data_txn = r.data_header_for(d.back, d.oid)?.tid;
                if !self.with_data {
                    (None, None)
                } else {
                    let data = match target {
                        Some((p, h)) => Some(r.record_data(p, &h)?),
                        None => None,
                    };
                    (data, Some(data_txn))
                }
            };
            out.push(RawRecord {
                pos,
                oid: d.oid,
                tid: d.tid,
                data,
                data_txn,
            });
            pos += len;
        }
        Ok(out)
    }
}

/// How many bytes of data the records of one transaction may repeat through
/// backpointers to the same record (which no sound file does more than a
/// few times).
const MAX_REPEATED_DATA: u64 = 64 << 20;

fn next_pos(r: &Reader<'_>, pos: u64, h: &TxnHeader) -> Result<u64> {
    pos.checked_add(h.tlen)
        .and_then(|p| p.checked_add(TXN_TRAILER_LEN))
        .ok_or_else(|| r.error(pos, "transaction length overflows"))
}

impl RawTxn {
    /// The storage-level view of this transaction.
    pub fn into_record(self) -> TransactionRecord {
        TransactionRecord {
            tid: self.header.tid,
            status: TxnStatus::from_byte(self.header.status).unwrap_or_default(),
            meta: self.meta,
            records: self
                .records
                .into_iter()
                .map(|r| DataRecord {
                    oid: r.oid,
                    tid: r.tid,
                    data: r.data,
                    data_txn: r.data_txn,
                })
                .collect(),
        }
    }
}

impl Iterator for TxnScanner {
    type Item = Result<TransactionRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_txn().map(|r| r.map(RawTxn::into_record))
    }
}
