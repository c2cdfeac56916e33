//! `check`: the structural verification `python -m ZODB.scripts.fstest`
//! performs, read-only, stopping at the first problem.

use std::fs::File;
use std::path::Path;

use crate::error::{Error, Result};
use crate::ids::Tid;

use super::format::{
    format_error, Window, DATA_HEADER_LEN, MAGIC, STATUS_CHECKPOINT, STATUS_UNDONE, TXN_HEADER_LEN,
};
use super::scan::file_len;

/// What [`check`] found in a sound file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckReport {
    /// Number of transactions.
    pub transactions: u64,
    /// Number of data records (those of `'u'` transactions not counted, as
    /// fstest does not look at them).
    pub data_records: u64,
    /// Tid of the last transaction, [`Tid::ZERO`] for an empty storage.
    pub last_tid: Tid,
    /// File size in bytes.
    pub size: u64,
}

/// Checks a Data.fs the way fstest does: the magic, strictly increasing tids,
/// transaction lengths within the file and agreeing with their redundant
/// copies, no checkpoint flag, a valid status, header lengths, and data
/// record headers that point at their transaction and stay inside it.
/// Pickles, `prev` and backpointers are not examined (fstest does not).
///
/// The first problem is returned as [`Error::Format`] with its offset.
pub fn check(path: &Path) -> Result<CheckReport> {
    let file = File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let size = file_len(&file, path)?;
    let fail = |pos: u64, reason: String| -> Error { format_error(path, pos, reason) };
    if size == 0 {
        return Err(fail(0, "empty file".into()));
    }
    let mut win = Window::new(&file, path, size);
    if win.array::<4>(0)?.as_ref() != Some(MAGIC) {
        return Err(fail(0, "invalid file header".into()));
    }
    let mut report = CheckReport {
        transactions: 0,
        data_records: 0,
        last_tid: Tid::ZERO,
        size,
    };
    let mut pos = 4u64;
    let mut ltid = Tid::ZERO;
    while pos < size {
        let Some(h) = win.array::<{ TXN_HEADER_LEN as usize }>(pos)? else {
            return Err(fail(pos, format!("truncated at {pos}")));
        };
        let h = super::format::TxnHeader::parse(&h);
        if h.tid <= ltid {
            return Err(fail(
                pos,
                format!("time-stamp reduction at {pos}: {} <= {}", h.tid, ltid),
            ));
        }
        ltid = h.tid;
        let tend = match pos.checked_add(h.tlen) {
            Some(e) if e.checked_add(8).is_some_and(|x| x <= size) => e,
            _ => {
                return Err(fail(
                    pos,
                    format!("truncated possibly because of damaged records at {pos}"),
                ))
            }
        };
        if h.status == STATUS_CHECKPOINT {
            return Err(fail(
                pos,
                format!("checkpoint flag was not cleared at {pos}"),
            ));
        }
        if !b" up".contains(&h.status) {
            return Err(fail(
                pos,
                format!("has invalid status {:?} at {pos}", h.status as char),
            ));
        }
        if h.header_len() > h.tlen {
            return Err(fail(
                pos,
                format!("has an invalid transaction header at {pos}"),
            ));
        }
        let tpos = pos;
        if h.status != STATUS_UNDONE {
            let mut dpos = tpos + h.header_len();
            while dpos < tend {
                let Some(raw) = win.array::<{ DATA_HEADER_LEN as usize }>(dpos)? else {
                    return Err(fail(dpos, format!("truncated at {dpos}")));
                };
                let tloc = u64::from_be_bytes(raw[24..32].try_into().unwrap_or_default());
                let vlen = u16::from_be_bytes([raw[32], raw[33]]);
                let plen = u64::from_be_bytes(raw[34..42].try_into().unwrap_or_default());
                let mut dlen = DATA_HEADER_LEN.checked_add(if plen == 0 { 8 } else { plen });
                if vlen != 0 {
                    dlen = dlen.and_then(|d| d.checked_add(16 + u64::from(vlen)));
                }
                if tloc != tpos {
                    return Err(fail(dpos, format!("data record exceeds transaction record at {dpos}: tloc {tloc} != tpos {tpos}")));
                }
                let next = dlen.and_then(|d| dpos.checked_add(d));
                match next {
                    Some(n) if n <= tend => dpos = n,
                    _ => {
                        return Err(fail(
                            dpos,
                            format!(
                            "has data records that extend beyond the transaction record; end at {}",
                            next.map_or_else(|| "overflow".to_string(), |n| n.to_string())
                        ),
                        ))
                    }
                }
                report.data_records += 1;
            }
        }
        let rtl = win.array::<8>(tend)?.map(u64::from_be_bytes);
        if rtl != Some(h.tlen) {
            return Err(fail(
                tend,
                format!("has inconsistent transaction length at {tend}"),
            ));
        }
        pos = tend + 8;
        report.transactions += 1;
        report.last_tid = h.tid;
    }
    Ok(report)
}
