//! Opening a Data.fs: the forward scan that builds (or extends) the index
//! (`read_index`, walking with the recovery rules of [`super::walker`]), the sanity check that decides whether a saved
//! `Data.fs.index` can be trusted (`_check_sanity`), and the truncation of an
//! incomplete last transaction into `Data.fs.trN` (`_truncate`).

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
    loop {
        match walk.next_txn()? {
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
            Next::Txn(_) => {}
        }
        while let Some(rec) = walk.next_record()? {
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
        walk.finish_txn()?;
        // Unlike ZODB, the last tid is that of the last *complete*
        // transaction: a cut-off one never existed for clients.
        for &(oid, p) in &tindex {
            index.insert(oid, p);
        }
        tindex.clear();
    }
    Ok(ScanEnd {
        pos: walk.pos(),
        ltid: walk.ltid(),
    })
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
