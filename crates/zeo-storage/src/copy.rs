//! Copying every transaction of one storage into another with the same
//! tids, records, metadata and blobs: ZODB's `copyTransactionsFrom`, which
//! `zodbconvert` runs, over the [`Iteration`](crate::Iteration),
//! [`Restore`](crate::Restore) and [`Blobs`](crate::Blobs) capabilities.
//!
//! The copy is storage-neutral: a Data.fs into PostgreSQL, back, or between
//! two files. Each source transaction becomes one destination transaction
//! begun with the source's tid and status, so a copy that stops half-way
//! leaves whole transactions behind and [`CopyOptions::incremental`]
//! resumes after the destination's last one.
//!
//! ```
//! use zeo_storage::copy::{copy_transactions, CopyOptions};
//! use zeo_storage::{BeginOptions, MappingStorage, Oid, Storage, Tid, TransactionMetaData};
//!
//! let source = MappingStorage::new("source");
//! let meta = TransactionMetaData { user: b"ann".to_vec(), ..Default::default() };
//! let txn = source.tpc_begin(&meta, BeginOptions::default())?;
//! source.store(txn, Oid(0), Tid::ZERO, b"root record")?;
//! source.tpc_vote(txn)?;
//! let tid = source.tpc_finish(txn, &mut |_| {})?;
//!
//! let destination = MappingStorage::new("destination");
//! let report = copy_transactions(&source, &destination, &CopyOptions::default(), &mut |_| {})?;
//! assert_eq!((report.transactions, report.records), (1, 1));
//! assert_eq!(destination.load(Oid(0))?, (b"root record".to_vec(), tid));
//! # Ok::<(), zeo_storage::Error>(())
//! ```

use std::time::Duration;

use crate::error::{Error, Result};
use crate::filestorage::is_blob_record;
use crate::interface::{require, BeginOptions, BlobData, BlobSource, Storage, TransactionRecord};
use crate::Tid;

/// How [`copy_transactions`] runs (`zodbconvert`'s options).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CopyOptions {
    /// Resume after the destination's last transaction instead of refusing
    /// a destination that has data. Nothing checks that the destination's
    /// transactions match the source's up to that point.
    pub incremental: bool,
    /// Open both storages and walk the transactions that would be copied,
    /// reporting each, without writing anything.
    pub dry_run: bool,
}

/// Where a copy stands, passed to the progress callback after every
/// transaction (copied, or listed in a dry run).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CopyProgress {
    /// Transactions done so far.
    pub transactions: u64,
    /// Data records done so far.
    pub records: u64,
    /// Blob files copied so far.
    pub blobs: u64,
    /// Record bytes done so far (blob bytes not counted).
    pub bytes: u64,
    /// The source's size in bytes ([`Storage::size`]), what `bytes` moves
    /// towards: an estimate, since a storage's size includes its own
    /// overhead.
    pub total_bytes: u64,
    /// The transaction just done.
    pub tid: Tid,
    /// Its user name.
    pub user: Vec<u8>,
    /// Its description.
    pub description: Vec<u8>,
}

impl CopyProgress {
    /// The fraction done, from 0 to 1 (by bytes against the source's size).
    pub fn fraction(&self) -> f64 {
        if self.total_bytes == 0 {
            return 0.0;
        }
        (self.bytes as f64 / self.total_bytes as f64).min(1.0)
    }

    /// One line for a terminal: a bar `width` cells wide, then the counts,
    /// the rate in transactions per second and the time left at that rate.
    ///
    /// ```
    /// use std::time::Duration;
    /// use zeo_storage::copy::CopyProgress;
    ///
    /// let p = CopyProgress { transactions: 50, bytes: 500, total_bytes: 1000, ..Default::default() };
    /// assert_eq!(
    ///     p.bar_line(Duration::from_secs(10), 10),
    ///     "[#####     ]  50.0% 50 txns, 0 records, 0 blobs, 5.0 txn/s, ETA 0:00:10"
    /// );
    /// ```
    pub fn bar_line(&self, elapsed: Duration, width: usize) -> String {
        let fraction = self.fraction();
        let filled = ((fraction * width as f64) as usize).min(width);
        format!(
            "[{}{}] {:5.1}% {}",
            "#".repeat(filled),
            " ".repeat(width - filled),
            fraction * 100.0,
            self.counts_line(elapsed)
        )
    }

    /// The counts, rate and time left, for a log line.
    ///
    /// ```
    /// use std::time::Duration;
    /// use zeo_storage::copy::CopyProgress;
    ///
    /// let p = CopyProgress { transactions: 3, records: 7, ..Default::default() };
    /// assert_eq!(p.counts_line(Duration::ZERO), "3 txns, 7 records, 0 blobs, - txn/s, ETA -");
    /// ```
    pub fn counts_line(&self, elapsed: Duration) -> String {
        let seconds = elapsed.as_secs_f64();
        let rate = if seconds > 0.0 {
            format!("{:.1} txn/s", self.transactions as f64 / seconds)
        } else {
            "- txn/s".to_owned()
        };
        let fraction = self.fraction();
        let eta = if seconds > 0.0 && fraction > 0.0 {
            let left = (seconds / fraction - seconds).max(0.0).round() as u64;
            format!("{}:{:02}:{:02}", left / 3600, left / 60 % 60, left % 60)
        } else {
            "-".to_owned()
        };
        format!(
            "{} txns, {} records, {} blobs, {rate}, ETA {eta}",
            self.transactions, self.records, self.blobs
        )
    }
}

/// What a finished copy did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// Transactions copied (or, in a dry run, that would be).
    pub transactions: u64,
    /// Data records copied.
    pub records: u64,
    /// Blob files copied.
    pub blobs: u64,
    /// With [`CopyOptions::incremental`], the destination's last tid that
    /// the copy resumed after; `None` when it started from the beginning.
    pub resumed_after: Option<Tid>,
}

/// Whether `storage` holds any transaction.
fn has_data(storage: &dyn Storage) -> bool {
    storage.last_transaction() != Tid::ZERO
}

/// Copies the source's transactions into the destination, oldest first,
/// calling `progress` after each.
///
/// # Errors
///
/// When the source cannot iterate or the destination cannot restore
/// ([`Error::Unsupported`]); when the destination has data and the copy is
/// not incremental; when a blob record's blob cannot be copied (the source
/// or the destination has no blob directory); and whatever either storage
/// reports. A failing transaction is aborted in the destination: the
/// transactions before it stay copied.
pub fn copy_transactions(
    source: &dyn Storage,
    destination: &dyn Storage,
    options: &CopyOptions,
    progress: &mut dyn FnMut(&CopyProgress),
) -> Result<CopyReport> {
    let iteration = require(source.as_iteration(), "iterator")?;
    let mut report = CopyReport::default();
    let start = if has_data(destination) {
        if !options.incremental {
            return Err(Error::Storage(
                "the destination storage has data; copy into an empty one, or resume with \
                 --incremental"
                    .into(),
            ));
        }
        let last = destination.last_transaction();
        report.resumed_after = Some(last);
        Some(last.next())
    } else {
        None
    };
    if !options.dry_run {
        require(destination.as_restore(), "restore")?;
        if destination.is_read_only() {
            return Err(Error::ReadOnly);
        }
    }
    let mut state = CopyProgress {
        total_bytes: source.size(),
        ..CopyProgress::default()
    };
    for txn in iteration.iterator(start, None)? {
        let txn = txn?;
        let blobs = if options.dry_run {
            0
        } else {
            copy_one(source, destination, &txn)?
        };
        state.transactions += 1;
        state.records += txn.records.len() as u64;
        state.blobs += blobs;
        state.bytes += txn_bytes(&txn);
        state.tid = txn.tid;
        state.user.clone_from(&txn.meta.user);
        state.description.clone_from(&txn.meta.description);
        progress(&state);
    }
    report.transactions = state.transactions;
    report.records = state.records;
    report.blobs = state.blobs;
    Ok(report)
}

/// A transaction's share of the source's size: its records and metadata.
fn txn_bytes(txn: &TransactionRecord) -> u64 {
    let meta = txn.meta.user.len() + txn.meta.description.len() + txn.meta.extension.len();
    let records: usize = txn
        .records
        .iter()
        .map(|r| r.data.as_ref().map_or(0, Vec::len) + 42)
        .sum();
    (meta + records + 23) as u64
}

/// Copies one transaction under its own tid and status; returns how many
/// blobs it carried.
fn copy_one(
    source: &dyn Storage,
    destination: &dyn Storage,
    txn: &TransactionRecord,
) -> Result<u64> {
    let begin = BeginOptions {
        tid: Some(txn.tid),
        status: txn.status,
    };
    let handle = destination.tpc_begin(&txn.meta, begin)?;
    let staged = stage(source, destination, txn, handle);
    let blobs = match staged {
        Ok(blobs) => blobs,
        Err(e) => {
            destination.tpc_abort(handle);
            return Err(e);
        }
    };
    if let Err(e) = destination.tpc_vote(handle) {
        destination.tpc_abort(handle);
        return Err(e);
    }
    let tid = destination.tpc_finish(handle, &mut |_| {})?;
    if tid != txn.tid {
        return Err(Error::Storage(format!(
            "the destination committed transaction {} as {tid}",
            txn.tid
        )));
    }
    Ok(blobs)
}

/// Restores every record of `txn` into the open destination transaction.
fn stage(
    source: &dyn Storage,
    destination: &dyn Storage,
    txn: &TransactionRecord,
    handle: crate::TxnHandle,
) -> Result<u64> {
    let restore = require(destination.as_restore(), "restore")?;
    let mut blobs = 0;
    for record in &txn.records {
        let data = record.data.as_deref();
        if data.is_some_and(is_blob_record) {
            let Some(source_blobs) = source.as_blobs() else {
                return Err(Error::Storage(format!(
                    "oid {} in transaction {} is a blob, but the source has no blob directory",
                    record.oid, txn.tid
                )));
            };
            let Some(destination_blobs) = destination.as_blobs() else {
                return Err(Error::Storage(format!(
                    "oid {} in transaction {} is a blob, but the destination has no blob \
                     directory",
                    record.oid, txn.tid
                )));
            };
            let blob = match source_blobs.load_blob(record.oid, txn.tid)? {
                BlobData::Path(path) => {
                    let file = std::fs::File::open(&path).map_err(|source| Error::Io {
                        context: format!("opening blob {}", path.display()),
                        source,
                    })?;
                    BlobSource::Stream(Box::new(file))
                }
                BlobData::Reader(reader) => BlobSource::Stream(reader),
            };
            destination_blobs.restore_blob(handle, record.oid, txn.tid, data, Some(blob))?;
            blobs += 1;
        } else {
            restore.restore(handle, record.oid, txn.tid, data, record.data_txn)?;
        }
    }
    Ok(blobs)
}
