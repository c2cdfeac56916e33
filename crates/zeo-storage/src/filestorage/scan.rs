//! Opening a Data.fs: the forward scan that builds (or extends) the index
//! (`read_index`, walking with the recovery rules of [`super::walker`]), the sanity check that decides whether a saved
//! `Data.fs.index` can be trusted (`_check_sanity`), and the truncation of an
//! incomplete last transaction, or of a group commit's unsynced suffix,
//! into `Data.fs.trN` (`_truncate`).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::ids::{Oid, Tid};

use super::format::{
    check_magic, format_error, Reader, FIRST_TXN_POS, MAGIC, STATUS_COMMITTED, STATUS_PACKED,
    STATUS_UNDONE, TXN_TRAILER_LEN,
};
use super::index::OidIndex;
use super::index_file::append_suffix;
use super::walker::{Dialect, Next, Walker};

/// Where a scan ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScanEnd {
    /// End of the last complete transaction: the committed size.
    pub pos: u64,
    /// Tid of the last transaction read (or the `ltid` passed in).
    pub ltid: Tid,
}

/// Scans transactions from `start`, adding their records to `index`.
///
/// Mirrors ZODB's `read_index`: a partial header at the end is cut off; a
/// last transaction that is incomplete or still flagged `'c'` is moved to
/// `Data.fs.trN` and cut off; a read-only scan stops there without touching
/// the file. Damage anywhere else is an [`Error::Format`], including a
/// transaction that looks incomplete (or is flagged `'c'`) while a sound
/// transaction still ends the file: ZODB would cut all of them off, which
/// turns one flipped byte into lost commits.
pub(crate) fn read_index(
    file: &File,
    path: &Path,
    index: &mut OidIndex,
    start: u64,
    ltid: Tid,
    read_only: bool,
) -> Result<ScanEnd> {
    let file_size = file_len(file, path)?;
    if file_size == 0 {
        if !read_only {
            file.write_all_at(MAGIC, 0)
                .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        }
        return Ok(ScanEnd {
            pos: FIRST_TXN_POS,
            ltid,
        });
    }
    if file_size < start {
        return Err(format_error(
            path,
            file_size,
            format!("file is shorter than the indexed size {start}"),
        ));
    }
    let mut walk = Walker::new(file, path, file_size, start, ltid, Dialect::Recovery);
    match walk.array::<4>(0)? {
        Some(m) => check_magic(path, &m)?,
        None => {
            return Err(format_error(
                path,
                0,
                "file is too short for the FS30 header",
            ))
        }
    }

    let mut found = Found::default();
    // The tid of the last sound transaction, for the suffix rule.
    let mut sound_ltid = ltid;
    loop {
        let damaged = |e: Error, at: u64, sound_ltid: Tid| -> Result<ScanEnd> {
            let damage_at = match &e {
                Error::Format { pos, .. } => (*pos).max(at),
                _ => return Err(e),
            };
            if read_only || !unacknowledged_suffix(file, at, damage_at, file_size, sound_ltid)? {
                return Err(e);
            }
            tracing::error!(
                "{}: {e}; the transactions from {at} on were never synced (group commit) and are cut off",
                path.display()
            );
            truncate_to_tr(file, path, at, file_size)?;
            Ok(ScanEnd {
                pos: at,
                ltid: sound_ltid,
            })
        };
        let next = match walk.next_txn() {
            Ok(next) => next,
            Err(e) => {
                return damaged(e, walk.pos(), sound_ltid).map(|end| found.keep(end, index, path))
            }
        };
        let (txn_pos, tid) = match next {
            Next::End => break,
            Next::Cut(pos) => {
                if !read_only {
                    cut(file, path, pos)?;
                }
                break;
            }
            Next::SaveAndCut(pos) => {
                if !read_only {
                    truncate_to_tr(file, path, pos, file_size)?;
                }
                break;
            }
            Next::Txn(t) => (t.pos, t.header.tid),
        };
        found.begin_txn(txn_pos);
        loop {
            let rec = match walk.next_record() {
                Ok(Some(rec)) => rec,
                Ok(None) => break,
                Err(e) => {
                    return damaged(e, txn_pos, sound_ltid).map(|end| found.keep(end, index, path))
                }
            };
            found.push(rec.header.oid.0, rec.pos, rec.header.prev);
        }
        if let Err(e) = walk.finish_txn() {
            return damaged(e, txn_pos, sound_ltid).map(|end| found.keep(end, index, path));
        }
        found.end_txn();
        // Unlike ZODB, the last tid is that of the last *complete*
        // transaction: a cut-off one never existed for clients.
        if found.full(index) {
            found.apply(index, path);
        }
        sound_ltid = sound_ltid.max(tid);
    }
    found.apply(index, path);
    Ok(ScanEnd {
        pos: walk.pos(),
        ltid: walk.ltid(),
    })
}

/// Records a batch holds at least before it is applied to the index.
const MIN_BATCH: usize = 1 << 20;

/// The records a scan found, applied to the index a batch at a time:
/// sorting a batch by oid and merging it into the index in one pass costs a
/// fraction of a lookup and an insert per record, which is what a file of
/// small records is made of. A batch holds whole transactions only.
#[derive(Default)]
struct Found {
    /// `(oid, position, previous-record pointer)` of each record, in file
    /// order until [`Found::apply`] sorts them.
    records: Vec<(u64, u64, u64)>,
    /// Start of each transaction with records in `records`, ascending.
    txns: Vec<u64>,
    /// How many of `records` and of `txns` belong to complete transactions.
    complete: (usize, usize),
}

impl Found {
    fn begin_txn(&mut self, pos: u64) {
        self.txns.push(pos);
    }

    fn push(&mut self, oid: u64, pos: u64, prev: u64) {
        self.records.push((oid, pos, prev));
    }

    fn end_txn(&mut self) {
        self.complete = (self.records.len(), self.txns.len());
    }

    /// Whether the batch is big enough to apply: at least as many records as
    /// the index holds, so the merge's cost is spread over them.
    fn full(&self, index: &OidIndex) -> bool {
        self.records.len() >= MIN_BATCH.max(index.len())
    }

    /// Forgets the records of the transaction being walked (it is cut off),
    /// applies the rest and passes `end` through.
    fn keep(&mut self, end: ScanEnd, index: &mut OidIndex, path: &Path) -> ScanEnd {
        self.records.truncate(self.complete.0);
        self.txns.truncate(self.complete.1);
        self.apply(index, path);
        end
    }

    /// Applies the batch to `index` and logs the records whose
    /// previous-record pointer is wrong, as ZODB's `read_index` does.
    fn apply(&mut self, index: &mut OidIndex, path: &Path) {
        for (pos, prev) in self.settle(index) {
            if prev != 0 {
                tracing::error!("{} incorrect previous pointer at {pos}", path.display());
            } else {
                tracing::warn!("{} incorrect previous pointer at {pos}", path.display());
            }
        }
    }

    /// Sets each oid's position to its last record's; returns, in file
    /// order, `(position, pointer)` of each record whose previous-record
    /// pointer is not the position the index held when its transaction
    /// began.
    fn settle(&mut self, index: &mut OidIndex) -> Vec<(u64, u64)> {
        let mut bad_prev: Vec<(u64, u64)> = Vec::new();
        if self.records.is_empty() {
            self.txns.clear();
            return bad_prev;
        }
        // Positions grow through the file, so each oid's records end up in
        // file order.
        self.records
            .sort_unstable_by_key(|&(oid, pos, _)| (oid, pos));
        let few = self.records.len().saturating_mul(8) < index.len();
        let mut updates: Vec<(u64, u64)> = Vec::new();
        {
            // A forward cursor over the index when the batch is large; a
            // lookup per oid when it is small next to the index.
            let mut cursor = index.iter().peekable();
            let mut indexed = |oid: u64| -> u64 {
                if few {
                    return index.get(oid).unwrap_or(0);
                }
                while cursor.next_if(|e| e.0 < oid).is_some() {}
                cursor.next_if(|e| e.0 == oid).map_or(0, |e| e.1)
            };
            let txns = &self.txns;
            for group in self.records.chunk_by(|a, b| a.0 == b.0) {
                let oid = group[0].0;
                let mut committed = indexed(oid);
                let mut last: Option<u64> = None;
                for &(_, pos, prev) in group {
                    if let Some(earlier) = last {
                        let txn = txns[txns.partition_point(|&t| t <= pos).saturating_sub(1)];
                        if earlier < txn {
                            committed = earlier;
                        }
                    }
                    if prev != committed {
                        bad_prev.push((pos, prev));
                    }
                    last = Some(pos);
                }
                updates.push((oid, last.unwrap_or(committed)));
            }
        }
        bad_prev.sort_unstable();
        index.update_sorted(updates);
        self.records.clear();
        self.txns.clear();
        self.complete = (0, 0);
        bad_prev
    }
}

/// Transactions a group commit's suffix may hold at most.
const SUFFIX_TXNS: usize = 100_000;
/// How far apart (seconds) the tids of one unsynced suffix may lie: the
/// transactions submitted while one fsync ran.
const SUFFIX_SECONDS: f64 = 60.0;

/// Whether the damage at `pos` is the head of an unacknowledged group
/// commit suffix rather than damage in the middle of the file.
///
/// Group commit writes several transactions before one fsync covers them,
/// and a power loss may keep any part of those writes: a transaction still
/// flagged `'c'`, or torn, with later ones intact behind it. None of them
/// was acknowledged (the fsync that would have covered the later ones
/// covers the earlier one too). Such a suffix is recognised by walking
/// by what a lost write leaves at the damage (see [`lost_write_at`]),
/// and, when sound transactions follow it (found walking back from the end
/// of the file over the redundant lengths), by their tids: later than the
/// last sound one before the damage and, with the damaged one's, all
/// within [`SUFFIX_SECONDS`]. A flipped byte is not a lost write, and a
/// checkpoint flag on an older transaction is followed by transactions
/// spread over more time than that: both stay errors.
fn unacknowledged_suffix(
    file: &File,
    pos: u64,
    damage_at: u64,
    file_size: u64,
    ltid: Tid,
) -> Result<bool> {
    if !lost_write_at(file, pos, damage_at, file_size)? {
        return Ok(false);
    }
    let mut end = file_size;
    let mut tids = Vec::new();
    let mut trailer = [0u8; 8];
    let mut header = [0u8; super::format::TXN_HEADER_LEN as usize];
    while tids.len() < SUFFIX_TXNS {
        let Some(tpos) = end.checked_sub(TXN_TRAILER_LEN) else {
            break;
        };
        if file.read_exact_at(&mut trailer, tpos).is_err() {
            break;
        }
        let tl = u64::from_be_bytes(trailer);
        let Some(start) = tpos.checked_sub(tl) else {
            break;
        };
        if start <= pos || file.read_exact_at(&mut header, start).is_err() {
            break;
        }
        let h = super::format::TxnHeader::parse(&header);
        if h.tlen != tl || ![STATUS_COMMITTED, STATUS_PACKED, STATUS_UNDONE].contains(&h.status) {
            break;
        }
        tids.push(h.tid);
        end = start;
    }
    let (Some(&last), Some(&sound_first)) = (tids.first(), tids.last()) else {
        // Nothing sound behind the damage (the last transaction was being
        // written too): all of it is the lost suffix.
        return Ok(true);
    };
    // The damaged transaction's own tid, when its header still tells it.
    let first = match file.read_exact_at(&mut header, pos) {
        Ok(()) => {
            let tid = super::format::TxnHeader::parse(&header).tid;
            if tid > ltid && tid < sound_first {
                tid
            } else {
                sound_first
            }
        }
        Err(_) => sound_first,
    };
    Ok(first > ltid
        && tids.windows(2).all(|w| w[0] > w[1])
        && last.unix_time() - first.unix_time() <= SUFFIX_SECONDS)
}

/// The unit a disk writes whole.
const SECTOR: u64 = 512;

/// Whether the damage found at `damage_at`, in the transaction at `pos`,
/// looks like writes that never reached the disk rather than changed
/// bytes: the transaction is still flagged `'c'` (its status flip was
/// lost), or the 8 bytes where the damage was found, or a stretch of at
/// least 8 bytes that ends or starts at a sector boundary near it, read as
/// zeros (a lost write or sector of a file that grew).
fn lost_write_at(file: &File, pos: u64, damage_at: u64, file_size: u64) -> Result<bool> {
    let end = file_size.min(damage_at.saturating_add(SECTOR));
    let mut status = [0u8; 1];
    if file.read_exact_at(&mut status, pos + 16).is_ok()
        && status[0] == super::format::STATUS_CHECKPOINT
    {
        return Ok(true);
    }
    let mut buf = vec![0u8; SECTOR as usize];
    let mut zeros = |from: u64, to: u64| -> Result<bool> {
        let n = to.saturating_sub(from) as usize;
        if n < 8 {
            return Ok(false);
        }
        file.read_exact_at(&mut buf[..n], from)
            .map_err(|e| Error::io("reading a damaged transaction", e))?;
        Ok(buf[..n].iter().all(|&b| b == 0))
    };
    if zeros(damage_at, (damage_at + 8).min(file_size))? {
        return Ok(true);
    }
    let mut boundary = (pos / SECTOR + 1) * SECTOR;
    while boundary <= end {
        // The lost sector before the boundary (from the damaged
        // transaction's start at most) or the one after it.
        if zeros(pos.max(boundary - SECTOR), boundary)?
            || zeros(boundary, (boundary + SECTOR).min(file_size))?
        {
            return Ok(true);
        }
        boundary += SECTOR;
    }
    Ok(false)
}

/// The size of `file`.
pub(crate) fn file_len(file: &File, path: &Path) -> Result<u64> {
    file.metadata()
        .map(|m| m.len())
        .map_err(|e| Error::io(format!("reading the size of {}", path.display()), e))
}

fn cut(file: &File, path: &Path, pos: u64) -> Result<()> {
    file.set_len(pos)
        .map_err(|e| Error::io(format!("truncating {} at {pos}", path.display()), e))?;
    file.sync_all()
        .map_err(|e| Error::io(format!("syncing {}", path.display()), e))
}

/// Copies `file[pos..]` to the first free `Data.fs.trN`, syncs it, then cuts
/// the file at `pos`.
pub(crate) fn truncate_to_tr(file: &File, path: &Path, pos: u64, file_size: u64) -> Result<()> {
    let mut i = 0u32;
    let (tr_path, mut out) = loop {
        let candidate = append_suffix(path, &format!(".tr{i}"));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&candidate)
        {
            Ok(f) => break (candidate, f),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => i += 1,
            Err(e) => return Err(Error::io(format!("creating {}", candidate.display()), e)),
        }
    };
    tracing::warn!(
        "writing truncated data from {} to {}",
        path.display(),
        tr_path.display()
    );
    let io = |e| Error::io(format!("saving truncated data to {}", tr_path.display()), e);
    let mut buf = vec![0u8; 1 << 20];
    let mut at = pos;
    while at < file_size {
        let n = ((file_size - at) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], at).map_err(io)?;
        out.write_all(&buf[..n]).map_err(io)?;
        at += n as u64;
    }
    out.sync_all().map_err(io)?;
    cut(file, path, pos)
}

/// ZODB's `_check_sanity`: whether an index saved for size `pos` agrees with
/// the last non-empty transaction before `pos`. Returns that transaction's
/// tid (the last tid of the indexed part) when it does.
pub(crate) fn index_is_sane(file: &File, path: &Path, index: &OidIndex, pos: u64) -> Option<Tid> {
    if pos < 100 {
        return None;
    }
    let size = file_len(file, path).ok()?;
    if size < pos {
        return None;
    }
    let r = Reader::new(file, path, size);
    let mut pos = pos;
    let mut ltid: Option<Tid> = None;
    loop {
        if pos < FIRST_TXN_POS + TXN_TRAILER_LEN {
            return None;
        }
        let tl = r.read_u64(pos - TXN_TRAILER_LEN, "redundant length").ok()?;
        let tpos = pos.checked_sub(tl)?.checked_sub(TXN_TRAILER_LEN)?;
        if tpos < FIRST_TXN_POS {
            return None;
        }
        let h = r.txn_header(tpos).ok()?;
        ltid.get_or_insert(h.tid);
        if h.tlen != tl {
            return None;
        }
        pos = tpos;
        if h.status == STATUS_UNDONE {
            continue;
        }
        if h.status != STATUS_COMMITTED && h.status != STATUS_PACKED {
            return None;
        }
        if tl < h.header_len() {
            return None;
        }
        let tend = tpos + tl;
        let mut opos = tpos + h.header_len();
        if opos == tend {
            continue;
        }
        let mut checked = 0;
        while opos < tend && checked < 5 {
            let d = r.data_header(opos).ok()?;
            let len = d.record_len()?;
            if opos + len > tend || d.tloc != tpos {
                return None;
            }
            if index.get(d.oid.0) != Some(opos) {
                return None;
            }
            checked += 1;
            opos += len;
        }
        return ltid;
    }
}

/// The largest oid in an index, for the new-oid counter.
pub(crate) fn max_oid(index: &OidIndex) -> Oid {
    Oid(index.max_key().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Transactions of records `(oid, prev)`; positions are made up, 100
    /// bytes per record and per transaction header.
    type Txns = Vec<Vec<(u64, u64)>>;

    /// What the scan did before batches: a lookup per record against the
    /// index as of its transaction's start, the index updated per
    /// transaction.
    fn per_record(index: &mut OidIndex, txns: &Txns) -> Vec<(u64, u64)> {
        let mut bad = Vec::new();
        let mut pos = 4;
        for txn in txns {
            pos += 100;
            let mut tindex = Vec::new();
            for &(oid, prev) in txn {
                if index.get(oid).unwrap_or(0) != prev {
                    bad.push((pos, prev));
                }
                tindex.push((oid, pos));
                pos += 100;
            }
            for (oid, p) in tindex {
                index.insert(oid, p);
            }
        }
        bad
    }

    /// The same through [`Found`], applied every `batch` transactions.
    fn batched(index: &mut OidIndex, txns: &Txns, batch: usize) -> Vec<(u64, u64)> {
        let mut found = Found::default();
        let mut bad = Vec::new();
        let mut pos = 4;
        for (i, txn) in txns.iter().enumerate() {
            found.begin_txn(pos);
            pos += 100;
            for &(oid, prev) in txn {
                found.push(oid, pos, prev);
                pos += 100;
            }
            found.end_txn();
            if (i + 1) % batch == 0 {
                bad.extend(found.settle(index));
            }
        }
        bad.extend(found.settle(index));
        bad
    }

    /// A record's previous pointer: mostly right (the oid's last position,
    /// which the model knows only by walking), sometimes 0 or made up.
    fn txns() -> impl Strategy<Value = Txns> {
        let record = (
            0u64..40,
            prop_oneof![Just(None), Just(Some(0u64)), (1u64..3000).prop_map(Some)],
        );
        prop::collection::vec(prop::collection::vec(record, 0..6), 0..40).prop_map(|txns| {
            let mut last = std::collections::HashMap::new();
            let mut pos = 4;
            txns.into_iter()
                .map(|txn| {
                    pos += 100;
                    let mut out = Vec::new();
                    let mut tlast = Vec::new();
                    for (oid, prev) in txn {
                        let right = last.get(&oid).copied().unwrap_or(0);
                        out.push((oid, prev.unwrap_or(right)));
                        tlast.push((oid, pos));
                        pos += 100;
                    }
                    last.extend(tlast);
                    out
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn batches_index_and_report_as_a_lookup_per_record_does(
            txns in txns(),
            start in prop::collection::vec((0u64..60, 1u64..4), 0..30),
            batch in 1usize..8,
        ) {
            let mut start_index = OidIndex::new();
            for (oid, pos) in start {
                start_index.insert(oid, pos);
            }
            let mut want_index = start_index.clone();
            let want = per_record(&mut want_index, &txns);
            let mut got_index = start_index;
            let got = batched(&mut got_index, &txns, batch);
            prop_assert_eq!(got, want);
            prop_assert_eq!(got_index.iter().collect::<Vec<_>>(), want_index.iter().collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_record_repeated_within_its_transaction_is_checked_against_the_one_before_it() {
        // Oid 7 at 104 (txn at 4), then twice in the transaction at 204:
        // both pointers must be 104, not each other.
        let txns: Txns = vec![vec![(7, 0)], vec![(7, 104), (7, 104)], vec![(7, 404)]];
        let mut index = OidIndex::new();
        assert_eq!(batched(&mut index, &txns, 10), []);
        assert_eq!(index.get(7), Some(604));
        let txns: Txns = vec![vec![(7, 0)], vec![(7, 104), (7, 304)]];
        let mut index = OidIndex::new();
        assert_eq!(batched(&mut index, &txns, 10), [(404, 304)]);
    }
}
