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
//!
//! # Layout
//!
//! This module runs a pack from start to switch; `reachability` is the
//! first pass (what is current at the pack time, and what garbage
//! collection keeps), `copier` writes the new file through `output`, and
//! `switch` puts it in place of the old one.

mod copier;
mod output;
mod reachability;
mod switch;

use std::fs::File;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use crate::error::{Error, Result};
use crate::ids::Tid;
use crate::timestamp::TimeStamp;

use super::format::Reader;
use super::index_file::{append_suffix, index_path};
use super::{lock, sync_parent_dir, FileStorage};
use copier::Copier;

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

    fs.remove_old_blob_dir()?;

    let pack_path = append_suffix(&fs.path, ".pack");
    let result = build_and_switch(fs, stop, gc, &pack_path);
    if result.is_err() || matches!(result, Ok(false)) {
        let _ = std::fs::remove_file(&pack_path);
    }
    if result? && !fs.closed.load(Ordering::Acquire) {
        // Blob files of revisions the pack removed go after the switch,
        // as ZODB's do: until then the old file still names them.
        fs.pack_blobs()?;
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

    let scan = match reachability::scan_to_pack_time(&r, stop)? {
        Some(scan) => scan,
        None => {
            tracing::info!(
                "{}: the database has already been packed to a later time or no changes have been made since the last pack",
                path.display()
            );
            return Ok(false);
        }
    };
    let reachable = reachability::reachable(&r, &scan, gc)?;
    let packpos = scan.packpos;
    drop(scan);

    let mut copier = Copier::new(pack_path, fs.io.clone())?;
    let opos = copier.copy_to_pack_time(&r, packpos, &reachable)?;
    drop(reachable);
    if opos == packpos {
        // Nothing would be freed: ZODB leaves the file alone.
        return Ok(false);
    }
    hook(Stage::CopiedToPackTime);

    // Catch up with commits without holding the commit lock.
    let mut ipos = packpos;
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
    // No transaction can be submitted now; the ones already submitted must
    // be durable and published before their bytes are copied.
    fs.wait_for_all_published();
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
    if let Err(e) = switch::switch_files(path, &out.path) {
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

#[cfg(test)]
mod tests;
