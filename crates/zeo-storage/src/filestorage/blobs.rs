//! FileStorage's blob support (`FileStorage(blob_dir=…)`): revisions'
//! files in a [`BlobDir`] beside `Data.fs`.
//!
//! A stored blob is moved into place under the transaction's tid at once,
//! as ZODB does; the vote syncs every such file and its directory before
//! the transaction's records are written to `Data.fs`, so a record that a
//! finished commit made durable never names a file that a power loss can
//! take back. An abort (or a close with the transaction still open)
//! removes the files. Each placement is first listed in the blob
//! directory's journal (`.placed`, removed when a transaction finishes
//! durably), so that the open after a crash between vote and finish
//! removes the files whose transaction never reached `Data.fs`, without
//! walking the directory.

use std::path::{Path, PathBuf};

use crate::blobdir::{BlobDir, TxnFiles};
use crate::error::{Error, Result};
use crate::ids::{Oid, Tid};
use crate::interface::{BlobData, BlobSource, Blobs, Storage, TxnHandle};

use super::commit::ActiveTxn;
use super::fault::Io;
use super::format::Reader;
use super::{lock, FileStorage};

/// What pack does with the files of revisions it removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobPackMode {
    /// `<filestorage blob-dir>`: ZODB's FileStorage lists them in
    /// `<blob_dir>/.removed` and removes them, or with `keep_old` moves them
    /// to `<blob_dir>.old`, which then also gets links to the files kept, so
    /// that it is a whole copy of the directory before the pack.
    Removed {
        /// ZODB's `pack-keep-old`.
        keep_old: bool,
    },
    /// `<blobstorage>`: ZODB's `BlobStorage` wrapper removes every file
    /// whose revision no longer loads, and keeps no copy.
    Undoing,
}

impl Default for BlobPackMode {
    fn default() -> Self {
        BlobPackMode::Removed { keep_old: true }
    }
}

/// The blob directory and the files the open transaction put in it.
pub(crate) struct BlobState {
    pub(crate) dir: BlobDir,
    staged: TxnFiles,
    pack_mode: BlobPackMode,
}

impl BlobState {
    pub(crate) fn new(dir: BlobDir) -> Self {
        BlobState {
            staged: TxnFiles::journaled(&dir),
            dir,
            pack_mode: BlobPackMode::default(),
        }
    }

    /// Records a file `txn` moved into place.
    fn add(&self, txn: TxnHandle, path: PathBuf) {
        self.staged.add(txn, path);
    }

    /// Syncs the files of `txn` (through `io`) and their directories.
    pub(crate) fn make_durable(&self, txn: TxnHandle, io: &Io) -> Result<()> {
        self.staged.make_durable(txn, &|f| io.sync_all(f))
    }

    /// Forgets the files of a finished `txn`.
    pub(crate) fn finished(&self, txn: TxnHandle) {
        self.staged.finished(txn);
    }

    /// Removes the files of an aborted `txn`.
    pub(crate) fn aborted(&self, txn: TxnHandle) {
        self.staged.aborted(txn);
    }
}

impl FileStorage {
    /// Opens the storage with its blobs in `blob_dir` (ZODB's
    /// `FileStorage(path, blob_dir=…)`): the directory is created when
    /// missing, its layout chosen as ZODB's `auto_layout_select` does,
    /// wiped when [`super::FileStorageOptions::create`] is set, and its
    /// stale temporary files removed. A read-only open changes nothing.
    ///
    /// ```
    /// use zeo_storage::filestorage::FileStorageOptions;
    /// use zeo_storage::{FileStorage, Storage};
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let fs = FileStorage::open_with_blobs(
    ///     dir.path().join("Data.fs"),
    ///     FileStorageOptions::default(),
    ///     dir.path().join("blobs"),
    /// ).unwrap();
    /// assert!(fs.capabilities().blobs);
    /// assert!(dir.path().join("blobs/.layout").exists());
    /// ```
    pub fn open_with_blobs(
        path: impl AsRef<Path>,
        options: super::FileStorageOptions,
        blob_dir: impl AsRef<Path>,
    ) -> Result<FileStorage> {
        let io = Io::with_sync_delay(None, options.sync_delay);
        Self::open_blobs_with_io(path.as_ref(), options, blob_dir.as_ref(), io)
    }

    /// [`FileStorage::open_with_blobs`] with the writes and syncs of
    /// commits, blob uploads and blob files going through `faults`. For
    /// tests; not API.
    #[doc(hidden)]
    pub fn open_with_blobs_and_faults(
        path: impl AsRef<Path>,
        options: super::FileStorageOptions,
        blob_dir: impl AsRef<Path>,
        faults: std::sync::Arc<super::FaultInjector>,
    ) -> Result<FileStorage> {
        let io = Io::with_sync_delay(Some(faults), options.sync_delay);
        Self::open_blobs_with_io(path.as_ref(), options, blob_dir.as_ref(), io)
    }

    fn open_blobs_with_io(
        path: &Path,
        options: super::FileStorageOptions,
        blob_dir: &Path,
        io: Io,
    ) -> Result<FileStorage> {
        let dir = if options.read_only {
            BlobDir::open_read_only(blob_dir)?
        } else {
            BlobDir::open(blob_dir, options.create)?
        };
        let read_only = options.read_only;
        let mut storage = Self::open_with_io(path, options, io)?;
        storage.blobs = Some(BlobState::new(dir));
        if !read_only {
            storage.remove_unfinished_blobs()?;
        }
        Ok(storage)
    }

    /// Removes the files a crash left behind: those the placement journal
    /// lists whose revision is not in the file (their transaction never
    /// finished), then removes the journal. Only the listed files are
    /// looked at, so this costs nothing for a directory of any size after
    /// a clean stop.
    fn remove_unfinished_blobs(&self) -> Result<()> {
        /// More lines than any transaction stores blobs at once.
        const MAX_LINES: usize = 10_000_000;
        let Some(state) = &self.blobs else {
            return Ok(());
        };
        let listed = crate::blobdir::journaled_files(&state.dir, MAX_LINES)?;
        for (oid, tid) in listed {
            let kept = match self.load_serial(oid, tid) {
                Ok(_) => true,
                Err(e) if e.is_pos_key() => false,
                Err(e) => return Err(e),
            };
            if !kept {
                let path = state.dir.blob_path(oid, tid);
                if path.exists() {
                    tracing::info!(
                        "removing {}: its transaction did not finish",
                        path.display()
                    );
                }
                state.dir.remove_revision(oid, tid)?;
            }
        }
        let journal = state.dir.path().join(crate::blobdir::PLACED_JOURNAL);
        match std::fs::remove_file(&journal) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("removing {}", journal.display()), e)),
        }
    }

    /// Sets what pack does with the files of the revisions it removes
    /// (default: ZODB FileStorage's, keeping `<blob_dir>.old`). No effect
    /// without a blob directory.
    pub fn with_blob_pack_mode(mut self, mode: BlobPackMode) -> Self {
        if let Some(state) = &mut self.blobs {
            state.pack_mode = mode;
        }
        self
    }

    /// The blob directory, when the storage has one.
    pub fn blob_dir(&self) -> Option<&BlobDir> {
        self.blobs.as_ref().map(|b| &b.dir)
    }

    fn blob_state(&self) -> Result<&BlobState> {
        self.blobs
            .as_ref()
            .ok_or(Error::Unsupported("blobs (no blob directory)"))
    }

    fn place_blob(
        &self,
        state: &BlobState,
        txn: TxnHandle,
        oid: Oid,
        tid: Tid,
        src: &Path,
    ) -> Result<()> {
        let placed = state
            .staged
            .will_place(&state.dir.blob_path(oid, tid))
            .and_then(|_| state.dir.commit_file(src, oid, tid));
        if placed.is_err() {
            let _ = std::fs::remove_file(src);
        }
        state.add(txn, placed?);
        Ok(())
    }

    /// ZODB's undo of a blob change: each undo record that points back at
    /// a revision with a blob file gets a copy of that file (a hard link
    /// when possible) under the undoing transaction's tid.
    pub(crate) fn copy_undone_blobs(
        &self,
        r: &Reader<'_>,
        a: &ActiveTxn,
        written: &[(Oid, u64, u64)],
    ) -> Result<()> {
        let Some(state) = &self.blobs else {
            return Ok(());
        };
        for &(oid, here, back) in written {
            if back == 0 {
                continue;
            }
            let Some(found) = r.load_back(oid, back, here)? else {
                continue;
            };
            if !state.dir.blob_path(oid, found.tid).exists() {
                // Not a blob revision (or its file was packed away).
                continue;
            }
            state.staged.will_place(&state.dir.blob_path(oid, a.tid))?;
            let copy = state.dir.copy_revision(oid, found.tid, a.tid)?;
            state.add(a.handle, copy);
        }
        Ok(())
    }

    /// Whether `txn` is the transaction in progress.
    pub(crate) fn is_current(&self, txn: TxnHandle) -> bool {
        lock(&self.commit)
            .active
            .as_ref()
            .is_some_and(|a| a.handle == txn)
    }

    /// The handle of the transaction in progress.
    pub(crate) fn current_txn(&self) -> Option<TxnHandle> {
        lock(&self.commit).active.as_ref().map(|a| a.handle)
    }
}

impl Blobs for FileStorage {
    fn temporary_directory(&self) -> &Path {
        match &self.blobs {
            Some(b) => b.dir.tmp_dir(),
            None => Path::new(""),
        }
    }

    fn store_blob(
        &self,
        txn: TxnHandle,
        oid: Oid,
        serial: Tid,
        data: &[u8],
        blob: BlobSource,
    ) -> Result<()> {
        let state = self.blob_state()?;
        let src = state.dir.source_file(blob)?;
        let stored = self
            .store_record(txn, oid, serial, data)
            .and_then(|_| self.txn_tid(txn));
        match stored {
            Ok(tid) => self.place_blob(state, txn, oid, tid, &src),
            Err(e) => {
                let _ = std::fs::remove_file(&src);
                Err(e)
            }
        }
    }

    fn append_to_temporary(&self, file: &std::fs::File, chunk: &[u8]) -> std::io::Result<()> {
        std::io::Write::write_all(&mut self.io.writer(file), chunk)?;
        super::writeback::after_append(file, chunk.len() as u64);
        Ok(())
    }

    fn load_blob(&self, oid: Oid, serial: Tid) -> Result<BlobData> {
        self.check_open()?;
        Ok(BlobData::Path(
            self.blob_state()?.dir.existing_blob(oid, serial)?,
        ))
    }

    fn oid_directory(&self, oid: Oid) -> Option<PathBuf> {
        self.blobs.as_ref().map(|b| b.dir.oid_dir(oid))
    }

    fn restore_blob(
        &self,
        txn: TxnHandle,
        oid: Oid,
        serial: Tid,
        data: Option<&[u8]>,
        blob: Option<BlobSource>,
    ) -> Result<()> {
        let state = self.blob_state()?;
        let src = blob.map(|b| state.dir.source_file(b)).transpose()?;
        let restored = self.restore_record(txn, oid, serial, data, None);
        match (restored, src) {
            (Ok(()), Some(src)) => self.place_blob(state, txn, oid, serial, &src),
            (Ok(()), None) => Ok(()),
            (Err(e), src) => {
                if let Some(src) = src {
                    let _ = std::fs::remove_file(src);
                }
                Err(e)
            }
        }
    }
}

/// What [`check_blobs`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BlobCheckReport {
    /// Data records holding a `ZODB.blob.Blob`.
    pub blob_records: u64,
    /// Blob records without their file, as `(oid, tid, expected path)`;
    /// the first [`MAX_LISTED_MISSING`] only.
    pub missing: Vec<(Oid, Tid, PathBuf)>,
    /// How many blob records lack their file in all.
    pub missing_count: u64,
}

/// How many missing files a [`BlobCheckReport`] lists.
pub const MAX_LISTED_MISSING: usize = 1000;

/// Whether a record holds a `ZODB.blob.Blob` (ZODB's `is_blob_record`).
pub fn is_blob_record(data: &[u8]) -> bool {
    zeo_pickle::class_of(data).is_some_and(|(module, name)| module == "ZODB.blob" && name == "Blob")
}

/// Checks that every blob record of the Data.fs at `path` (every
/// revision still in the file) has its file in `blob_dir`, reading both
/// without changing anything.
///
/// ```
/// use zeo_storage::filestorage::{check_blobs, FileStorageOptions};
/// use zeo_storage::FileStorage;
///
/// let dir = tempfile::tempdir().unwrap();
/// drop(FileStorage::open_with_blobs(
///     dir.path().join("Data.fs"), FileStorageOptions::default(), dir.path().join("blobs"),
/// ).unwrap());
/// let report = check_blobs(&dir.path().join("Data.fs"), &dir.path().join("blobs")).unwrap();
/// assert_eq!(report.missing_count, 0);
/// ```
pub fn check_blobs(path: &Path, blob_dir: &Path) -> Result<BlobCheckReport> {
    use crate::interface::Iteration;
    let dir = BlobDir::open_read_only(blob_dir)?;
    let options = super::FileStorageOptions {
        read_only: true,
        ..super::FileStorageOptions::default()
    };
    let storage = FileStorage::open(path, options)?;
    let mut report = BlobCheckReport::default();
    for txn in storage.iterator(None, None)? {
        for record in txn?.records {
            let Some(data) = &record.data else { continue };
            if !is_blob_record(data) {
                continue;
            }
            report.blob_records += 1;
            let file = dir.blob_path(record.oid, record.tid);
            if !file.is_file() {
                report.missing_count += 1;
                if report.missing.len() < MAX_LISTED_MISSING {
                    report.missing.push((record.oid, record.tid, file));
                }
            }
        }
    }
    Ok(report)
}

impl FileStorage {
    /// `<blob_dir>.old` of an earlier pack goes when a new pack starts.
    pub(crate) fn remove_old_blob_dir(&self) -> Result<()> {
        let Some(state) = &self.blobs else {
            return Ok(());
        };
        let old = old_blob_dir(state.dir.path());
        if old.exists() {
            std::fs::remove_dir_all(&old)
                .map_err(|e| Error::io(format!("removing {}", old.display()), e))?;
        }
        Ok(())
    }

    /// Removes (or moves to `<blob_dir>.old`) the files of revisions that
    /// no longer load after a pack. Files of transactions later than the
    /// last committed one when this starts (a commit in progress) are left
    /// alone; files a crash left without a record go like packed ones.
    pub(crate) fn pack_blobs(&self) -> Result<()> {
        let Some(state) = &self.blobs else {
            return Ok(());
        };
        let ltid = self.last_transaction();
        let mut gone_oids = Vec::new();
        let mut gone_files = Vec::new();
        let files = state.dir.list_blobs()?;
        // Only "no such revision" condemns a file; any other failure stops.
        let gone = |res: Result<()>| match res {
            Ok(()) => Ok(false),
            Err(e) if e.is_pos_key() => Ok(true),
            Err(e) => Err(e),
        };
        for group in files.chunk_by(|a, b| a.0 == b.0) {
            let oid = group[0].0;
            let mut dead = Vec::new();
            for entry in group {
                if entry.1 <= ltid && gone(self.load_serial(oid, entry.1).map(drop))? {
                    dead.push(entry);
                }
            }
            let oid_gone = dead.len() == group.len() && gone(self.load(oid).map(drop))?;
            if oid_gone {
                gone_oids.push(oid);
            } else {
                gone_files.extend(dead.into_iter().map(|(o, t, _)| (*o, *t)));
            }
        }
        match state.pack_mode {
            BlobPackMode::Undoing => {
                for oid in &gone_oids {
                    remove_oid_dir(&state.dir, *oid)?;
                }
                for (oid, tid) in &gone_files {
                    state.dir.remove_revision(*oid, *tid)?;
                }
            }
            BlobPackMode::Removed { keep_old } => {
                let removed = state.dir.path().join(".removed");
                let mut list = String::new();
                for oid in &gone_oids {
                    list.push_str(&hex(&oid.to_bytes()));
                    list.push('\n');
                }
                for (oid, tid) in &gone_files {
                    list.push_str(&hex(&oid.to_bytes()));
                    list.push_str(&hex(&tid.to_bytes()));
                    list.push('\n');
                }
                std::fs::write(&removed, list)
                    .map_err(|e| Error::io(format!("writing {}", removed.display()), e))?;
                if keep_old {
                    move_to_old(&state.dir, &gone_oids, &gone_files)?;
                } else {
                    for oid in &gone_oids {
                        remove_oid_dir(&state.dir, *oid)?;
                    }
                    for (oid, tid) in &gone_files {
                        state.dir.remove_revision(*oid, *tid)?;
                    }
                }
                std::fs::remove_file(&removed)
                    .map_err(|e| Error::io(format!("removing {}", removed.display()), e))?;
            }
        }
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `<blob_dir>.old`.
pub(crate) fn old_blob_dir(dir: &Path) -> PathBuf {
    let mut name = dir.as_os_str().to_owned();
    name.push(".old");
    PathBuf::from(name)
}

fn io_err(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let context = format!("{what} {}", path.display());
    move |e| Error::io(context, e)
}

fn remove_oid_dir(dir: &BlobDir, oid: Oid) -> Result<()> {
    let path = dir.oid_dir(oid);
    if path.exists() {
        std::fs::remove_dir_all(&path).map_err(io_err("removing", &path))?;
    }
    dir.remove_empty_parents(path.parent().unwrap_or(dir.path()))
}

/// ZODB's `pack-keep-old` for blobs: the removed files move to
/// `<blob_dir>.old` and the kept ones are linked there too.
fn move_to_old(dir: &BlobDir, gone_oids: &[Oid], gone_files: &[(Oid, Tid)]) -> Result<()> {
    let old = old_blob_dir(dir.path());
    std::fs::create_dir_all(&old).map_err(io_err("creating", &old))?;
    let marker = crate::blobdir::LAYOUT_MARKER;
    std::fs::copy(dir.path().join(marker), old.join(marker))
        .map_err(io_err("copying the layout marker to", &old))?;
    let relocate = |path: &Path| -> Result<()> {
        let rel = path.strip_prefix(dir.path()).unwrap_or(path);
        let target = old.join(rel);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
        }
        std::fs::rename(path, &target).map_err(io_err("moving", path))
    };
    for oid in gone_oids {
        let path = dir.oid_dir(*oid);
        if path.exists() {
            relocate(&path)?;
            dir.remove_empty_parents(path.parent().unwrap_or(dir.path()))?;
        }
    }
    for (oid, tid) in gone_files {
        let path = dir.blob_path(*oid, *tid);
        if path.exists() {
            relocate(&path)?;
            dir.remove_empty_parents(&dir.oid_dir(*oid))?;
        }
    }
    for (_, _, path) in dir.list_blobs()? {
        let rel = path.strip_prefix(dir.path()).unwrap_or(&path);
        let target = old.join(rel);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
        }
        if std::fs::hard_link(&path, &target).is_err() {
            std::fs::copy(&path, &target).map_err(io_err("copying", &path))?;
        }
    }
    Ok(())
}
