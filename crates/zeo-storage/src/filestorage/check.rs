//! `check`: the structural verification `python -m ZODB.scripts.fstest`
//! performs, read-only, stopping at the first problem.

use std::fs::File;
use std::path::Path;

use crate::error::{Error, Result};
use crate::ids::Tid;

use super::format::{format_error, FIRST_TXN_POS, MAGIC};
use super::scan::file_len;
use super::walker::{Dialect, Next, Walker};

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
    if size == 0 {
        return Err(format_error(path, 0, "empty file"));
    }
    let mut walk = Walker::new(&file, path, size, FIRST_TXN_POS, Tid::ZERO, Dialect::Fstest);
    if walk.array::<4>(0)?.as_ref() != Some(MAGIC) {
        return Err(format_error(path, 0, "invalid file header"));
    }
    let mut report = CheckReport {
        transactions: 0,
        data_records: 0,
        last_tid: Tid::ZERO,
        size,
    };
    while let Next::Txn(txn) = walk.next_txn()? {
        while walk.next_record()?.is_some() {
            report.data_records += 1;
        }
        walk.finish_txn()?;
        report.transactions += 1;
        report.last_tid = txn.header.tid;
    }
    Ok(report)
}
