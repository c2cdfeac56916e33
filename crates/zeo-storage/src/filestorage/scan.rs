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

    let mut tindex: Vec<(u64, u64)> = Vec::new();
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
            Err(e) => return damaged(e, walk.pos(), sound_ltid),
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
        loop {
            let rec = match walk.next_record() {
                Ok(Some(rec)) => rec,
                Ok(None) => break,
                Err(e) => return damaged(e, txn_pos, sound_ltid),
            };
            let d = rec.header;
            let indexed = index.get(d.oid.0).unwrap_or(0);
            if indexed != d.prev {
                if d.prev != 0 {
                    tracing::error!(
                        "{} incorrect previous pointer at {}",
                        path.display(),
                        rec.pos
                    );
                } else {
                    tracing::warn!(
                        "{} incorrect previous pointer at {}",
                        path.display(),
                        rec.pos
                    );
                }
            }
            tindex.push((d.oid.0, rec.pos));
        }
        if let Err(e) = walk.finish_txn() {
            return damaged(e, txn_pos, sound_ltid);
        }
        // Unlike ZODB, the last tid is that of the last *complete*
        // transaction: a cut-off one never existed for clients.
        for &(oid, p) in &tindex {
            index.insert(oid, p);
        }
        tindex.clear();
        sound_ltid = sound_ltid.max(tid);
    }
    Ok(ScanEnd {
        pos: walk.pos(),
        ltid: walk.ltid(),
    })
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
