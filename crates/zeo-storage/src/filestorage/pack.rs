//! Pack: rewriting `Data.fs` without the revisions nobody can reach any more,
//! producing the file ZODB's `FileStorage.pack` (`fspack.py`) produces.
//!
//! # What is written
//!
//! The *pack position* is the first transaction with a tid later than the
//! pack time (among those committed when the pack started). Before it, each
//! transaction keeps only the records [`gc::find_reachable`] keeps (with
//! `gc == false`: every revision current at the pack time); the survivors
//! are written with status `'p'`, `prev = 0`, their data inline (backpointers
//! resolved; a record whose data resolves to nothing is written as a "no
//! data" record), and a transaction left without records vanishes. Every
//! later transaction is copied whole with its status, `prev` pointers
//! recomputed for the new file and backpointers re-aimed at the same data in
//! the new file, as `PackCopier` does.
//!
//! # Concurrency
//!
//! The new file is built as `Data.fs.pack` from the committed part of the
//! file without the commit lock, so commits go on; transactions committed
//! meanwhile are copied in rounds. Only the last few are copied with the
//! commit lock held (no transaction is in progress then), followed by the
//! fsync and the switch. Readers holding the old file handle keep reading
//! the old, unchanged file.
//!
//! # Crash safety
//!
//! Until the rename of `Data.fs.pack` over `Data.fs`, `Data.fs` is the old
//! file; from then on it is the new, fsynced one. `Data.fs.old` is made a
//! hard link to the old file before that rename, so no moment exists without
//! a `Data.fs` (ZODB renames twice and has such a moment). `Data.fs.index`
//! is removed before the switch and rewritten after it, so a stale index can
//! never be applied to the new file.
//!
//! # Deliberate differences from ZODB
//!
//! Where ZODB's packer fails on files it could pack, this one writes the
//! obvious result instead: a backpointer after the pack position whose
//! target transaction did not survive (possible with `gc == false`, or for
//! an undo committed during the pack) gets its data inline, and a copied
//! transaction whose length changes because of that gets its length fixed
//! (ZODB raises `PackError` or fails an assertion).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use crate::error::{Error, Result};
use crate::gc::{self, PackView, Reachable};
use crate::ids::{Oid, Tid};
use crate::timestamp::TimeStamp;

use super::fault::Io;
use super::format::{
    DataHeader, Reader, TxnHeader, FIRST_TXN_POS, MAGIC, STATUS_CHECKPOINT, STATUS_COMMITTED,
    STATUS_PACKED, STATUS_UNDONE, TXN_HEADER_LEN, TXN_TRAILER_LEN,
};
use super::index::OidIndex;
use super::index_file::{append_suffix, index_path};
use super::{lock, sync_parent_dir, FileStorage};

/// Output bytes buffered before a write.
const OUT_BUFFER: usize = 1 << 20;
/// Rounds of copying newly committed transactions without the commit lock
/// before taking it, so that a steady stream of commits cannot keep the
/// pack from finishing.
const UNLOCKED_ROUNDS: usize = 8;

/// Packs `fs` to `pack_time` (Unix seconds), as `FileStorage.pack` does.
pub(crate) fn pack(fs: &FileStorage, pack_time: f64, gc: bool) -> Result<()> {
    fs.check_open()?;
    if fs.read_only {
        return Err(Error::ReadOnly);
    }
    let stop = TimeStamp::from_unix(pack_time).tid();
    if stop == Tid::ZERO {
        return Err(Error::FileStorage("Invalid pack time".into()));
    }
    if fs.read_published().index.is_empty() {
        return Ok(());
    }
    if fs.packing.swap(true, Ordering::AcqRel) {
        return Err(Error::FileStorage("Already packing".into()));
    }
    let _packing = PackingFlag(fs);

    let old_path = append_suffix(&fs.path, ".old");
    match std::fs::remove_file(&old_path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("removing {}", old_path.display()), e)),
    }

    let pack_path = append_suffix(&fs.path, ".pack");
    let result = build_and_switch(fs, stop, gc, &pack_path);
    if result.is_err() || matches!(result, Ok(false)) {
        let _ = std::fs::remove_file(&pack_path);
    }
    if result? && !fs.closed.load(Ordering::Acquire) {
        fs.save_index();
    }
    Ok(())
}

/// Clears `FileStorage::packing` when the pack ends, however it ends.
struct PackingFlag<'a>(&'a FileStorage);

impl Drop for PackingFlag<'_> {
    fn drop(&mut self) {
        self.0.packing.store(false, Ordering::Release);
    }
}

/// Points at which a test can run code while a pack is under way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    /// The part up to the pack position has been written; the commit lock
    /// is not held.
    CopiedToPackTime,
    /// Transactions committed since the start have been caught up with;
    /// the commit lock is not held and is taken next.
    BeforeCommitLock,
}

/// Code a test runs at each [`Stage`].
#[cfg(test)]
pub(crate) type Hook = Box<dyn FnMut(Stage)>;

#[cfg(test)]
thread_local! {
    /// Called by a pack running on this thread at each [`Stage`].
    pub(crate) static HOOK: std::cell::RefCell<Option<Hook>> =
        std::cell::RefCell::new(None);
}

fn hook(stage: Stage) {
    #[cfg(test)]
    HOOK.with(|h| {
        if let Some(f) = h.borrow_mut().as_mut() {
            f(stage)
        }
    });
    #[cfg(not(test))]
    let _ = stage;
}

/// Builds `Data.fs.pack` and switches to it; `Ok(false)` when there was
/// nothing to pack (the caller removes the partial output).
fn build_and_switch(fs: &FileStorage, stop: Tid, gc: bool, pack_path: &Path) -> Result<bool> {
    let (file, eof) = fs.snapshot()?;
    let path = fs.path.as_path();
    let r = Reader::new(&file, path, eof);

    let scan = match scan_to_pack_time(&r, stop)? {
        Some(scan) => scan,
        None => {
            tracing::info!(
                "{}: the database has already been packed to a later time or no changes have been made since the last pack",
                path.display()
            );
            return Ok(false);
        }
    };
    let reachable = if gc {
        let future = future_backpointers(&r, scan.packpos, scan.ltid)?;
        let view = View {
            r,
            current: &scan.current,
        };
        let references = |data: &[u8]| -> Result<Vec<Oid>> {
            zeo_pickle::references(data)
                .map(|oids| oids.into_iter().map(Oid).collect())
                .map_err(|e| {
                    Error::Storage(format!("pack: finding the references of a record: {e}"))
                })
        };
        gc::find_reachable(&view, future, &references)?
    } else {
        Reachable::from_current(scan.current.iter().map(|(&oid, &pos)| (Oid(oid), pos)))
    };
    drop(scan.current);

    let mut copier = Copier::new(pack_path, fs.io.clone())?;
    let opos = copier.copy_to_pack_time(&r, scan.packpos, &reachable)?;
    drop(reachable);
    if opos == scan.packpos {
        // Nothing would be freed: ZODB leaves the file alone.
        return Ok(false);
    }
    hook(Stage::CopiedToPackTime);

    // Catch up with commits without holding the commit lock.
    let mut ipos = scan.packpos;
    for _ in 0..UNLOCKED_ROUNDS {
        let end = fs.snapshot()?.1;
        if ipos >= end {
            break;
        }
        ipos = copier.copy_rest(&Reader::new(&file, path, end), ipos)?;
    }
    hook(Stage::BeforeCommitLock);

    let mut st = lock(&fs.commit);
    while st.active.is_some() {
        st = fs
            .commit_done
            .wait(st)
            .unwrap_or_else(PoisonError::into_inner);
    }
    let result = finish_locked(fs, &file, ipos, copier);
    drop(st);
    // This thread may have taken the wake-up meant for a tpc_begin.
    fs.commit_done.notify_one();
    result.map(|()| true)
}

/// With the commit lock held: copies the last transactions, makes the
/// new file durable and switches to it.
fn finish_locked(fs: &FileStorage, file: &File, ipos: u64, mut copier: Copier) -> Result<()> {
    fs.check_open()?;
    let end = fs.read_published().pos;
    let path = fs.path.as_path();
    if ipos < end {
        copier.copy_rest(&Reader::new(file, path, end), ipos)?;
    }
    let Copier {
        mut out, mut index, ..
    } = copier;
    out.flush()?;
    let new_end = out.pos();
    out.io
        .sync_all(&out.file)
        .map_err(|e| Error::io(format!("syncing {}", out.path.display()), e))?;
    index.compact();

    // The index describes the old file; a crash after the switch must
    // not find it.
    let idx = index_path(path);
    match std::fs::remove_file(&idx) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("removing {}", idx.display()), e)),
    }
    if let Err(e) = switch_files(path, &out.path) {
        // Still on the old file: give it its index back.
        fs.save_index();
        return Err(e);
    }
    sync_parent_dir(path);

    let mut p = fs.write_published();
    p.file = Arc::new(out.file);
    p.index = index;
    p.pos = new_end;
    Ok(())
}

/// Makes `Data.fs.old` the old file and `Data.fs` the packed one.
fn switch_files(path: &Path, pack_path: &Path) -> Result<()> {
    let old_path = append_suffix(path, ".old");
    let renaming = |from: &Path, to: &Path, e| {
        Error::io(
            format!("renaming {} to {}", from.display(), to.display()),
            e,
        )
    };
    if let Err(e) = std::fs::hard_link(path, &old_path) {
        // Without hard links, do as ZODB does: a crash between the two
        // renames leaves the data in Data.fs.old and Data.fs.pack.
        tracing::warn!(
            "{}: cannot link to {}: {e}; renaming instead",
            path.display(),
            old_path.display()
        );
        std::fs::rename(path, &old_path).map_err(|e| renaming(path, &old_path, e))?;
        if let Err(e) = std::fs::rename(pack_path, path) {
            let _ = std::fs::rename(&old_path, path);
            return Err(renaming(pack_path, path, e));
        }
        return Ok(());
    }
    std::fs::rename(pack_path, path).map_err(|e| renaming(pack_path, path, e))
}

/// What the scan up to the pack time found (`GC.buildPackIndex`).
struct PackScan {
    /// oid → its record current at the pack time, for objects that existed.
    current: HashMap<u64, u64>,
    /// Position of the first transaction after the pack time (or the end).
    packpos: u64,
    /// Tid of the last transaction scanned, for the time-stamp check of the
    /// transactions after it.
    ltid: Tid,
}

/// Scans the transactions up to the pack time, checking them as ZODB does;
/// `None` when the pack would be redundant (everything before the pack
/// position was packed already, and so is what follows it).
fn scan_to_pack_time(r: &Reader<'_>, stop: Tid) -> Result<Option<PackScan>> {
    let mut current: HashMap<u64, u64> = HashMap::new();
    let mut checker = Checker { ltid: Tid::ZERO };
    let mut pos = FIRST_TXN_POS;
    let mut unpacked = false;
    let mut last_status = None;
    while pos < r.end() {
        let th = r.txn_header(pos)?;
        if th.tid > stop {
            break;
        }
        checker.check_txn(r, pos, &th)?;
        if th.status != STATUS_PACKED {
            unpacked = true;
        }
        last_status = Some(th.status);
        let tend = pos + th.tlen;
        let tpos = pos;
        pos += th.header_len();
        while pos < tend {
            let dh = r.data_header(pos)?;
            let len = check_data(r, &th, tpos, &dh, pos)?;
            if dh.plen > 0 || dh.back != 0 {
                current.insert(dh.oid.0, pos);
            } else {
                current.remove(&dh.oid.0);
            }
            pos += len;
        }
        pos = check_trailer(r, tend, &th)?;
    }
    if !unpacked {
        let next_status = if pos < r.end() {
            Some(r.txn_header(pos)?.status)
        } else {
            last_status
        };
        if next_status == Some(STATUS_PACKED) {
            return Ok(None);
        }
    }
    Ok(Some(PackScan {
        current,
        packpos: pos,
        ltid: checker.ltid,
    }))
}

/// The records after the pack position that point back before it, in file
/// order (`GC.findReachableFromFuture`'s scan).
fn future_backpointers(r: &Reader<'_>, packpos: u64, ltid: Tid) -> Result<Vec<(Oid, u64)>> {
    let mut out = Vec::new();
    let mut checker = Checker { ltid };
    let mut pos = packpos;
    while pos < r.end() {
        let th = r.txn_header(pos)?;
        checker.check_txn(r, pos, &th)?;
        let tend = pos + th.tlen;
        let tpos = pos;
        pos += th.header_len();
        while pos < tend {
            let dh = r.data_header(pos)?;
            let len = check_data(r, &th, tpos, &dh, pos)?;
            if dh.back != 0 && dh.back < packpos {
                out.push((dh.oid, dh.back));
            }
            pos += len;
        }
        pos = check_trailer(r, tend, &th)?;
    }
    Ok(out)
}

/// ZODB's `checkTxn`, with the last tid seen.
struct Checker {
    ltid: Tid,
}

impl Checker {
    fn check_txn(&mut self, r: &Reader<'_>, pos: u64, th: &TxnHeader) -> Result<()> {
        if th.tid <= self.ltid {
            return Err(r.error(
                pos,
                format!("time-stamp reduction: {} <= {}", th.tid, self.ltid),
            ));
        }
        self.ltid = th.tid;
        if th.status == STATUS_CHECKPOINT {
            return Err(r.error(pos, "transaction with checkpoint flag set"));
        }
        if ![STATUS_COMMITTED, STATUS_PACKED, STATUS_UNDONE].contains(&th.status) {
            return Err(r.error(
                pos,
                format!("invalid transaction status: {:?}", th.status as char),
            ));
        }
        check_txn_shape(r, pos, th)
    }
}

/// A transaction's length covers its header and stays inside the data.
fn check_txn_shape(r: &Reader<'_>, pos: u64, th: &TxnHeader) -> Result<()> {
    if th.tlen < th.header_len() {
        return Err(r.error(
            pos,
            format!(
                "invalid transaction header: txnlen ({}) < headerlen({})",
                th.tlen,
                th.header_len()
            ),
        ));
    }
    match pos
        .checked_add(th.tlen)
        .and_then(|e| e.checked_add(TXN_TRAILER_LEN))
    {
        Some(e) if e <= r.end() => Ok(()),
        _ => Err(r.error(
            pos,
            format!(
                "transaction length {} runs past the end of the data at {}",
                th.tlen,
                r.end()
            ),
        )),
    }
}

/// ZODB's `checkData`; returns the record's length.
fn check_data(r: &Reader<'_>, th: &TxnHeader, tpos: u64, dh: &DataHeader, pos: u64) -> Result<u64> {
    if dh.tloc != tpos {
        return Err(r.error(
            pos,
            format!(
                "data record does not point to transaction header: {} != {tpos}",
                dh.tloc
            ),
        ));
    }
    let len = dh
        .record_len()
        .ok_or_else(|| r.error(pos, "data record length overflows"))?;
    if pos.checked_add(len).is_none_or(|e| e > tpos + th.tlen) {
        return Err(r.error(
            pos,
            format!(
                "data record size exceeds transaction size at {}",
                tpos + th.tlen
            ),
        ));
    }
    if dh.prev >= pos {
        return Err(r.error(pos, format!("invalid previous pointer: {}", dh.prev)));
    }
    if dh.back >= pos {
        return Err(r.error(pos, format!("invalid back pointer: {}", dh.back)));
    }
    Ok(len)
}

/// Checks the redundant length closing the transaction that ends at `tend`;
/// returns the position after it.
fn check_trailer(r: &Reader<'_>, tend: u64, th: &TxnHeader) -> Result<u64> {
    let tl = r.read_u64(tend, "redundant transaction length")?;
    if tl != th.tlen {
        return Err(r.error(
            tend,
            format!("redundant transaction length does not match initial transaction length: {tl} != {}", th.tlen),
        ));
    }
    Ok(tend + TXN_TRAILER_LEN)
}

/// The file as of the pack time, for the reachability walk.
struct View<'a> {
    r: Reader<'a>,
    current: &'a HashMap<u64, u64>,
}

impl PackView for View<'_> {
    type Pos = u64;

    fn current_at_pack(&self, oid: Oid) -> Option<u64> {
        self.current.get(&oid.0).copied()
    }

    fn nothing_at_pack(&self) -> bool {
        self.current.is_empty()
    }

    fn record_data(&self, pos: u64) -> Result<Option<std::borrow::Cow<'_, [u8]>>> {
        let h = self.r.data_header(pos)?;
        let data = if h.plen > 0 {
            Some(self.r.record_data(pos, &h)?)
        } else {
            self.r.load_back(h.oid, h.back, pos)?.map(|b| b.data)
        };
        Ok(data.map(std::borrow::Cow::Owned))
    }
}

/// `Data.fs.pack` being written: appends go through a buffer.
struct Output {
    io: Io,
    file: File,
    path: PathBuf,
    /// Bytes already in the file.
    flushed: u64,
    buf: Vec<u8>,
}

impl Output {
    fn create(path: &Path, io: Io) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        let mut out = Output {
            io,
            file,
            path: path.to_path_buf(),
            flushed: 0,
            buf: Vec::with_capacity(OUT_BUFFER),
        };
        out.write(MAGIC)?;
        Ok(out)
    }

    fn pos(&self) -> u64 {
        self.flushed + self.buf.len() as u64
    }

    fn io_error(&self, e: std::io::Error) -> Error {
        Error::io(format!("writing {}", self.path.display()), e)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        if self.buf.len() + bytes.len() > OUT_BUFFER {
            self.flush()?;
        }
        if bytes.len() > OUT_BUFFER {
            self.io
                .write_all_at(&self.file, bytes, self.flushed)
                .map_err(|e| self.io_error(e))?;
            self.flushed += bytes.len() as u64;
        } else {
            self.buf.extend_from_slice(bytes);
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            self.io
                .write_all_at(&self.file, &self.buf, self.flushed)
                .map_err(|e| self.io_error(e))?;
            self.flushed += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }

    /// Overwrites the 8 bytes at `at` (already written) with `value`.
    fn patch_u64(&mut self, at: u64, value: u64) -> Result<()> {
        let bytes = value.to_be_bytes();
        if at >= self.flushed {
            let off = (at - self.flushed) as usize;
            match self.buf.get_mut(off..off + 8) {
                Some(slot) => slot.copy_from_slice(&bytes),
                None => {
                    return Err(Error::Storage(format!(
                        "pack: patching {} beyond its end",
                        self.path.display()
                    )))
                }
            }
            Ok(())
        } else if at + 8 <= self.flushed {
            self.io
                .write_all_at(&self.file, &bytes, at)
                .map_err(|e| self.io_error(e))
        } else {
            self.flush()?;
            self.io
                .write_all_at(&self.file, &bytes, at)
                .map_err(|e| self.io_error(e))
        }
    }

    /// A reader of everything written so far (flushes first).
    fn reader(&mut self) -> Result<Reader<'_>> {
        self.flush()?;
        Ok(Reader::new(&self.file, &self.path, self.flushed))
    }
}

/// Writes the new file and the index that goes with it.
struct Copier {
    out: Output,
    /// oid → current record in the new file.
    index: OidIndex,
    /// (tid, position) of every transaction in the new file, in file order.
    txns: Vec<(Tid, u64)>,
    /// Whether `txns` is strictly increasing by tid (always, in a sound
    /// file), which allows a binary search.
    txns_sorted: bool,
}

impl Copier {
    fn new(path: &Path, io: Io) -> Result<Self> {
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
    fn copy_to_pack_time(
        &mut self,
        r: &Reader<'_>,
        packpos: u64,
        reachable: &Reachable<u64>,
    ) -> Result<u64> {
        let mut pos = FIRST_TXN_POS;
        let mut new_pos = FIRST_TXN_POS;
        while pos < packpos {
            let th = r.txn_header(pos)?;
            check_txn_shape(r, pos, &th)?;
            let tpos = pos;
            let tend = pos + th.tlen;
            let mut new_tpos = None;
            pos += th.header_len();
            while pos < tend {
                let h = r.data_header(pos)?;
                let len = check_data(r, &th, tpos, &h, pos)?;
                if reachable.is_reachable(h.oid, pos) {
                    let here_txn = match new_tpos {
                        Some(p) => p,
                        None => {
                            let p = self.out.pos();
                            self.write_txn_header(r, tpos, &th, STATUS_PACKED)?;
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
                pos += len;
            }
            if let Some(p) = new_tpos {
                self.end_txn(p, th.tlen)?;
                self.push_txn(th.tid, p);
                new_pos = self.out.pos();
            }
            pos = check_trailer(r, tend, &th)?;
        }
        Ok(new_pos)
    }

    /// `copyRest`: every transaction from `ipos` to the reader's end,
    /// whole. Returns the input position reached (the reader's end).
    fn copy_rest(&mut self, r: &Reader<'_>, mut ipos: u64) -> Result<u64> {
        while ipos < r.end() {
            ipos = self.copy_one(r, ipos)?;
        }
        Ok(ipos)
    }

    /// `copyOne`: one transaction after the pack position.
    fn copy_one(&mut self, r: &Reader<'_>, ipos: u64) -> Result<u64> {
        let th = r.txn_header(ipos)?;
        check_txn_shape(r, ipos, &th)?;
        let new_tpos = self.out.pos();
        self.write_txn_header(r, ipos, &th, th.status)?;
        let tend = ipos + th.tlen;
        let mut pos = ipos + th.header_len();
        let mut tindex: Vec<(u64, u64)> = Vec::new();
        while pos < tend {
            let h = r.data_header(pos)?;
            let len = check_data(r, &th, ipos, &h, pos)?;
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
            pos += len;
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
        check_trailer(r, tend, &th)
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

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::*;
    use crate::filestorage::FileStorageOptions;
    use crate::interface::Undo;
    use crate::interface::{BeginOptions, Storage, TransactionMetaData};

    fn commit(fs: &FileStorage, tid: Option<Tid>, stores: &[(u64, &[u8])]) -> Tid {
        let meta = TransactionMetaData {
            user: Vec::new(),
            description: b"t".to_vec(),
            extension: Vec::new(),
        };
        let txn = fs
            .tpc_begin(
                &meta,
                BeginOptions {
                    tid,
                    ..BeginOptions::default()
                },
            )
            .unwrap();
        for (oid, data) in stores {
            let serial = fs.get_tid(Oid(*oid)).unwrap_or(Tid::ZERO);
            fs.store(txn, Oid(*oid), serial, data).unwrap();
        }
        fs.tpc_vote(txn).unwrap();
        fs.tpc_finish(txn, &mut |_| {}).unwrap()
    }

    #[test]
    fn commits_made_while_copying_and_before_the_lock_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("Data.fs");
        let fs = Arc::new(FileStorage::open(&path, FileStorageOptions::default()).unwrap());
        let base = 1_700_000_000.0;
        let at = |s: f64| TimeStamp::from_unix(base + s).tid();
        commit(&fs, Some(at(1.0)), &[(0, b"root-1"), (1, b"one-1")]);
        commit(&fs, Some(at(2.0)), &[(1, b"one-2")]);
        let t3 = commit(&fs, Some(at(3.0)), &[(1, b"one-3")]);

        let during: Rc<RefCell<Vec<(Stage, Tid)>>> = Rc::default();
        {
            let fs = Arc::clone(&fs);
            let during = Rc::clone(&during);
            HOOK.with(|h| {
                *h.borrow_mut() = Some(Box::new(move |stage: Stage| {
                    // Undo is disabled while a pack runs, as in ZODB.
                    assert!(matches!(fs.undo_log(0, 10, None), Err(Error::Undo { .. })));
                    let data: &[u8] = match stage {
                        Stage::CopiedToPackTime => b"one-during-copy",
                        Stage::BeforeCommitLock => b"one-before-lock",
                    };
                    let tid = commit(&fs, None, &[(1, data), (2, data)]);
                    during.borrow_mut().push((stage, tid));
                }))
            });
        }
        let result = pack(&fs, base + 2.5, false);
        HOOK.with(|h| h.borrow_mut().take());
        result.unwrap();

        let during = during.borrow();
        assert_eq!(
            during.iter().map(|d| d.0).collect::<Vec<_>>(),
            [Stage::CopiedToPackTime, Stage::BeforeCommitLock]
        );
        let (t_copy, t_lock) = (during[0].1, during[1].1);
        assert_eq!(
            fs.load(Oid(1)).unwrap(),
            (b"one-before-lock".to_vec(), t_lock)
        );
        let r = fs.load_before(Oid(1), t_lock).unwrap().unwrap();
        assert_eq!(
            (r.data, r.start, r.end),
            (b"one-during-copy".to_vec(), t_copy, Some(t_lock))
        );
        let r = fs.load_before(Oid(2), t_lock).unwrap().unwrap();
        assert_eq!((r.start, r.end), (t_copy, Some(t_lock)));
        assert_eq!(fs.load_serial(Oid(1), t3).unwrap(), b"one-3");
        assert_eq!(fs.load_before(Oid(1), at(2.0)).unwrap(), None);
        assert!(fs.undo_log(0, 10, None).is_ok());
        let report = crate::filestorage::check(&path).unwrap();
        assert_eq!(report.size, fs.size());
        assert_eq!(report.transactions, 5);

        // The old file holds everything committed before the switch.
        let old = crate::filestorage::check(&append_suffix(&path, ".old")).unwrap();
        assert_eq!(old.transactions, 5);
        assert_eq!(old.last_tid, t_lock);
    }

    #[test]
    fn a_pack_that_dies_before_the_switch_leaves_the_old_file_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("Data.fs");
        let at = |s: f64| TimeStamp::from_unix(1_700_000_000.0 + s).tid();
        let fs = FileStorage::open(&path, FileStorageOptions::default()).unwrap();
        commit(&fs, Some(at(1.0)), &[(0, b"root-1"), (1, b"one-1")]);
        commit(&fs, Some(at(2.0)), &[(1, b"one-2")]);
        commit(&fs, Some(at(3.0)), &[(1, b"one-3")]);
        fs.close().unwrap();
        let before = std::fs::read(&path).unwrap();

        for stage in [Stage::CopiedToPackTime, Stage::BeforeCommitLock] {
            let fs = FileStorage::open(&path, FileStorageOptions::default()).unwrap();
            HOOK.with(|h| {
                *h.borrow_mut() = Some(Box::new(move |s: Stage| {
                    if s == stage {
                        panic!("simulated crash");
                    }
                }))
            });
            let died = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                pack(&fs, 1_700_000_002.5, false)
            }));
            HOOK.with(|h| h.borrow_mut().take());
            assert!(died.is_err());
            // The partial Data.fs.pack is left behind, as after a crash.
            assert!(append_suffix(&path, ".pack").exists());
            assert_eq!(std::fs::read(&path).unwrap(), before);
            assert_eq!(fs.load(Oid(1)).unwrap().0, b"one-3");
            drop(fs);
            let fs = FileStorage::open(&path, FileStorageOptions::default()).unwrap();
            assert_eq!(fs.load_serial(Oid(1), at(1.0)).unwrap(), b"one-1");
            fs.close().unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), before);
        }

        // The next pack overwrites the leftover and succeeds.
        let fs = FileStorage::open(&path, FileStorageOptions::default()).unwrap();
        pack(&fs, 1_700_000_002.5, false).unwrap();
        assert!(!append_suffix(&path, ".pack").exists());
        assert_eq!(std::fs::read(append_suffix(&path, ".old")).unwrap(), before);
        assert_eq!(fs.load_before(Oid(1), at(2.0)).unwrap(), None);
        assert_eq!(fs.load_serial(Oid(1), at(2.0)).unwrap(), b"one-2");
    }

    #[test]
    fn a_second_concurrent_pack_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("Data.fs");
        let fs = Arc::new(FileStorage::open(&path, FileStorageOptions::default()).unwrap());
        let at = |s: f64| TimeStamp::from_unix(1_700_000_000.0 + s).tid();
        commit(&fs, Some(at(1.0)), &[(0, b"root-1")]);
        commit(&fs, Some(at(2.0)), &[(0, b"root-2")]);
        commit(&fs, Some(at(3.0)), &[(0, b"root-3")]);
        let seen: Rc<RefCell<Vec<String>>> = Rc::default();
        {
            let fs = Arc::clone(&fs);
            let seen = Rc::clone(&seen);
            HOOK.with(|h| {
                *h.borrow_mut() = Some(Box::new(move |_| {
                    seen.borrow_mut()
                        .push(pack(&fs, 1_700_000_010.0, false).unwrap_err().to_string());
                }))
            });
        }
        let result = pack(&fs, 1_700_000_002.5, false);
        HOOK.with(|h| h.borrow_mut().take());
        result.unwrap();
        assert_eq!(seen.borrow().len(), 2);
        assert!(
            seen.borrow().iter().all(|m| m.contains("Already packing")),
            "{:?}",
            seen.borrow()
        );
        // And once it is over, packing works again.
        pack(&fs, 1_700_000_010.0, false).unwrap();
    }
}
