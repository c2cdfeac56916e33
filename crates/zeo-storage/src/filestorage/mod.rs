//! A storage in one `Data.fs` file, byte-compatible with ZODB's FileStorage
//! (`FS30`): Python's FileStorage, fstest, fsdump and repozo read what this
//! writes, and the other way round.
//!
//! The file is an append-only log of transactions. An in-memory index maps
//! each oid to its current data record; older revisions are reached through
//! the records' `prev` pointers.
//!
//! Concurrency: readers use positional reads on a shared handle and look the
//! index up under a read lock that a commit takes for writing only to
//! publish a finished, already fsynced transaction. Finish releases the
//! commit lock once the transaction is written (group commit): later
//! transactions are written behind it and one fsync covers them all. The commit lock (one
//! transaction between `tpc_begin` and `tpc_finish`/`tpc_abort`) is separate,
//! so loads never wait for a commit's I/O.

mod blobs;
mod check;
mod commit;
mod dump;
mod fault;
mod format;
#[doc(hidden)]
pub mod fuzzing;
mod index;
mod index_file;
mod iteration;
mod lock;
mod pack;
mod refs;
pub mod repozo;
mod scan;
mod sync_group;
mod undo;
mod walker;
mod writeback;

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{
    Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard,
};

pub use blobs::{check_blobs, is_blob_record, BlobCheckReport, BlobPackMode, MAX_LISTED_MISSING};
pub use check::{check, CheckReport};
pub use dump::dump;
#[doc(hidden)]
pub use fault::FaultInjector;
pub use refs::{check_refs, RefProblem, RefProblemKind, RefsReport};

use crate::error::{Error, Result};
use crate::ids::{Oid, Tid};
use crate::interface::{
    BeginOptions, ChangedOidsIter, CurrentRecord, ExternalGc, HistoryEntry, Iteration,
    LoadedRevision, Pack, RecordIteration, Restore, Storage, Submitted, TransactionIter,
    TransactionMetaData, TxnHandle, Undo, UndoEntry, UndoFilter,
};

use commit::CommitState;
use fault::Io;
use format::{Reader, FIRST_TXN_POS};
use index::OidIndex;
use lock::StorageLock;

/// How to open a [`FileStorage`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStorageOptions {
    /// Refuse writes; takes no lock and never modifies the file.
    pub read_only: bool,
    /// Start a new empty file, replacing any existing one (ZODB's
    /// `create=True`).
    pub create: bool,
    /// Whether pack collects garbage by default.
    pub pack_gc: bool,
    /// For benchmarks only: makes every commit fsync (and every other sync
    /// of the file) this much longer, so that one run on a fast disk can
    /// measure group commit as a slow or busy disk would see it. `None`
    /// (the default) in production; the server logs a warning when set.
    /// `zeo-server --bench-fsync-delay-us` sets it.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use zeo_storage::filestorage::{FileStorage, FileStorageOptions};
    /// use zeo_storage::interface::BeginOptions;
    /// use zeo_storage::{Oid, Storage, Tid, TransactionMetaData};
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let delay = Duration::from_millis(30);
    /// let options = FileStorageOptions {
    ///     sync_delay: Some(delay),
    ///     ..FileStorageOptions::default()
    /// };
    /// let fs = FileStorage::open(dir.path().join("Data.fs"), options).unwrap();
    /// let txn = fs
    ///     .tpc_begin(&TransactionMetaData::default(), BeginOptions::default())
    ///     .unwrap();
    /// fs.store(txn, Oid(0), Tid::ZERO, b"root").unwrap();
    /// fs.tpc_vote(txn).unwrap();
    /// let started = Instant::now();
    /// fs.tpc_finish(txn, &mut |_| {}).unwrap();
    /// // The commit's fsync waited at least the delay.
    /// assert!(started.elapsed() >= delay);
    /// assert_eq!(fs.syncs(), Some(1));
    /// ```
    pub sync_delay: Option<std::time::Duration>,
}

impl Default for FileStorageOptions {
    fn default() -> Self {
        FileStorageOptions {
            read_only: false,
            create: false,
            pack_gc: true,
            sync_delay: None,
        }
    }
}

/// What readers see: the last finished transaction's state.
pub(crate) struct Published {
    /// The data file, shared by readers and the committer.
    pub(crate) file: Arc<File>,
    /// oid → current record position.
    pub(crate) index: OidIndex,
    /// End of the last committed transaction.
    pub(crate) pos: u64,
    /// Tid of the last committed transaction.
    pub(crate) ltid: Tid,
}

/// A ZODB FileStorage (`Data.fs`).
pub struct FileStorage {
    path: PathBuf,
    name: String,
    read_only: bool,
    pack_gc: bool,
    published: RwLock<Published>,
    commit: Mutex<CommitState>,
    commit_done: Condvar,
    /// `tpc_begin` calls waiting for the commit lock.
    commit_waiters: AtomicUsize,
    /// A transaction holds the commit lock (between `tpc_begin` and its
    /// submit or abort): a group commit leader waits a little for it.
    txn_open: AtomicBool,
    /// The highest oid in use; `new_oid` hands out the next one.
    max_oid: AtomicU64,
    closed: AtomicBool,
    /// A pack is running (ZODB's `_pack_is_in_progress`).
    packing: AtomicBool,
    lock_file: Mutex<Option<StorageLock>>,
    /// Writes and syncs go through here (a fault-injection seam for tests).
    io: Io,
    /// Submitted transactions waiting for their covering fsync.
    group: sync_group::SyncGroup,
    /// Set when a commit's fsync failed: the storage refuses writes until it
    /// is reopened, since what the kernel kept of the file is unknown.
    write_failure: Mutex<Option<String>>,
    /// The blob directory, when opened with one.
    blobs: Option<blobs::BlobState>,
}

impl std::fmt::Debug for FileStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStorage")
            .field("path", &self.path)
            .field("read_only", &self.read_only)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FileStorage {
    /// Opens (or, when writable, creates) the storage at `path`.
    ///
    /// A writable open takes `Data.fs.lock` first, and the lock next to the
    /// file's canonical path when `path` reaches it through a symlink or
    /// `..` ([`Error::Locked`] when another process, or another open in this
    /// one, holds either), uses `Data.fs.index` when it matches the
    /// file, scans the rest, and cuts off an incomplete last transaction into
    /// `Data.fs.trN`. A read-only open takes no lock and changes nothing.
    pub fn open(path: impl AsRef<Path>, options: FileStorageOptions) -> Result<FileStorage> {
        let io = Io::with_sync_delay(None, options.sync_delay);
        Self::open_with_io(path.as_ref(), options, io)
    }

    /// [`FileStorage::open`] with every write and sync of the commit path
    /// and the index file going through `faults`. For tests; not API.
    #[doc(hidden)]
    pub fn open_with_faults(
        path: impl AsRef<Path>,
        options: FileStorageOptions,
        faults: Arc<FaultInjector>,
    ) -> Result<FileStorage> {
        let io = Io::with_sync_delay(Some(faults), options.sync_delay);
        Self::open_with_io(path.as_ref(), options, io)
    }

    /// How many `tpc_begin` calls are waiting for the transaction in
    /// progress to end. For tests; not API.
    #[doc(hidden)]
    pub fn commit_waiters(&self) -> usize {
        self.commit_waiters.load(Ordering::SeqCst)
    }

    /// The longest a commit's fsync waits for transactions that are coming
    /// ([`Storage::commits_coming`]), instead of 1 ms. For tests; not API.
    #[doc(hidden)]
    pub fn set_group_commit_wait(&self, limit: std::time::Duration) {
        self.set_max_gather(limit);
    }

    /// Whether a commit's fsync is waiting for transactions that are
    /// coming. For tests; not API.
    #[doc(hidden)]
    pub fn group_commit_gathering(&self) -> bool {
        self.group.lock().gathering
    }

    fn open_with_io(path: &Path, options: FileStorageOptions, io: Io) -> Result<FileStorage> {
        let path = path.to_path_buf();
        if options.read_only && options.create {
            return Err(Error::InvalidArgument(
                "can't create a read-only file".into(),
            ));
        }
        let lock_file = if options.read_only {
            None
        } else {
            Some(StorageLock::acquire(&path)?)
        };
        let io_err = |what: &str, e| Error::io(format!("{what} {}", path.display()), e);

        let file = if options.read_only {
            File::open(&path).map_err(|e| io_err("opening", e))?
        } else if options.create {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .map_err(|e| io_err("creating", e))?;
            sync_parent_dir(&path);
            f
        } else {
            let existed = path.exists();
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| io_err("opening", e))?;
            if !existed {
                sync_parent_dir(&path);
            }
            f
        };

        let was_empty = scan::file_len(&file, &path)? == 0;
        let mut index = OidIndex::new();
        let mut used_saved_index = false;
        let end = match Self::restore_index(&file, &path, options) {
            Some((saved_pos, saved, ltid)) => {
                index = saved;
                used_saved_index = true;
                scan::read_index(&file, &path, &mut index, saved_pos, ltid, options.read_only)?
            }
            None => scan::read_index(
                &file,
                &path,
                &mut index,
                FIRST_TXN_POS,
                Tid::ZERO,
                options.read_only,
            )?,
        };
        if was_empty && !options.read_only {
            // An empty file got its magic from the scan; make it durable.
            file.sync_all().map_err(|e| io_err("syncing", e))?;
        }
        index.compact();
        let max_oid = scan::max_oid(&index);
        let now = crate::timestamp::TimeStamp::now().tid();
        if end.ltid > now {
            tracing::warn!(
                "{} database records are in the future (last tid {})",
                path.display(),
                end.ltid
            );
        }
        let storage = FileStorage {
            name: path.display().to_string(),
            read_only: options.read_only,
            pack_gc: options.pack_gc,
            published: RwLock::new(Published {
                file: Arc::new(file),
                index,
                pos: end.pos,
                ltid: end.ltid,
            }),
            commit: Mutex::new(CommitState::new(
                end.ltid,
                options.read_only,
                &path,
                io.clone(),
            )?),
            commit_done: Condvar::new(),
            commit_waiters: AtomicUsize::new(0),
            txn_open: AtomicBool::new(false),
            max_oid: AtomicU64::new(max_oid.0),
            closed: AtomicBool::new(false),
            packing: AtomicBool::new(false),
            lock_file: Mutex::new(lock_file),
            io,
            group: sync_group::SyncGroup::default(),
            write_failure: Mutex::new(None),
            blobs: None,
            path,
        };
        if !used_saved_index && !options.read_only {
            storage.save_index();
        }
        Ok(storage)
    }

    /// Loads and validates `Data.fs.index`; `None` means "scan from scratch".
    fn restore_index(
        file: &File,
        path: &Path,
        options: FileStorageOptions,
    ) -> Option<(u64, OidIndex, Tid)> {
        if options.create {
            return None;
        }
        let (pos, index) = match index_file::load(path) {
            Ok(Some(x)) => x,
            Ok(None) => return None,
            Err(why) => {
                tracing::warn!("ignoring index: {}", why.0);
                return None;
            }
        };
        match scan::index_is_sane(file, path, &index, pos) {
            Some(ltid) => Some((pos, index, ltid)),
            None => {
                tracing::warn!("ignoring index for {}", path.display());
                None
            }
        }
    }

    /// The data file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Packs with the garbage collection setting given at open
    /// ([`FileStorageOptions::pack_gc`]), as ZODB's `pack(t, referencesf)`
    /// does without a `gc` argument.
    pub fn pack_default_gc(&self, pack_time: f64) -> Result<()> {
        pack::pack(self, pack_time, self.pack_gc)
    }

    /// Writes `Data.fs.index` for the committed state (writable storages).
    fn save_index(&self) {
        if self.read_only {
            return;
        }
        let p = self.read_published();
        match index_file::save(&self.path, p.pos, &p.index, &self.io) {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                "{}: positions beyond 48 bits; no index file written",
                self.path.display()
            ),
            Err(e) => tracing::error!("saving the index of {}: {e}", self.path.display()),
        }
    }

    pub(crate) fn read_published(&self) -> RwLockReadGuard<'_, Published> {
        self.published
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn write_published(&self) -> RwLockWriteGuard<'_, Published> {
        self.published
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// The data file, the committed size and the position of `oid`'s
    /// current record.
    fn lookup(&self, oid: Oid) -> Result<(Arc<File>, u64, u64)> {
        self.check_open()?;
        let p = self.read_published();
        let pos = p.index.get(oid.0).ok_or_else(|| Error::pos_key(oid))?;
        Ok((Arc::clone(&p.file), p.pos, pos))
    }

    /// A consistent point to back up from, as repozo takes one: the open
    /// data file, its committed size, and the index as of that size
    /// written to `index_path` in ZODB's `.index` format. The handle keeps
    /// reading the same file even when a pack replaces the file under its
    /// path afterwards, so copying its first `size` bytes yields exactly
    /// the transactions committed at this point. Returns `false` as the
    /// third value when the index could not be written in that format
    /// (positions past 48 bits).
    pub fn backup_point(&self, index_path: &Path) -> Result<(Arc<File>, u64, bool)> {
        self.check_open()?;
        let (file, pos, index) = {
            let p = self.read_published();
            // Copied, so that commits do not wait for the index file.
            (Arc::clone(&p.file), p.pos, p.index.clone())
        };
        let saved = index_file::save_at(index_path, pos, &index, &self.io)?;
        Ok((file, pos, saved))
    }

    /// The data file and committed size.
    pub(crate) fn snapshot(&self) -> Result<(Arc<File>, u64)> {
        self.check_open()?;
        let p = self.read_published();
        Ok((Arc::clone(&p.file), p.pos))
    }

    /// [`Iteration::changed_oids`] over the file up to `end`: a walk over
    /// the record headers only, never the data.
    fn changed_oids_until(
        &self,
        file: Arc<File>,
        end: u64,
        start: Option<Tid>,
        stop: Option<Tid>,
    ) -> Result<ChangedOidsIter<'_>> {
        let scanner =
            iteration::TxnScanner::new(file, &self.path, end, start, stop, true)?.headers_only();
        Ok(Box::new(scanner.map(|txn| {
            txn.map(|t| (t.tid, t.records.iter().map(|r| r.oid).collect()))
        })))
    }

    fn reader<'a>(&'a self, file: &'a File, end: u64) -> Reader<'a> {
        Reader::new(file, &self.path, end)
    }

    fn raise_max_oid(&self, oid: Oid) {
        self.max_oid.fetch_max(oid.0, Ordering::AcqRel);
    }
}

/// Makes a newly created file's directory entry durable.
fn sync_parent_dir(path: &Path) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

impl Storage for FileStorage {
    fn name(&self) -> &str {
        &self.name
    }

    fn is_read_only(&self) -> bool {
        self.read_only
    }

    fn size(&self) -> u64 {
        self.read_published().pos
    }

    fn len(&self) -> u64 {
        self.read_published().index.len() as u64
    }

    fn last_transaction(&self) -> Tid {
        self.read_published().ltid
    }

    fn load(&self, oid: Oid) -> Result<(Vec<u8>, Tid)> {
        let (file, end, pos) = self.lookup(oid)?;
        let r = self.reader(&file, end);
        let (h, data) = r.data_record_for(pos, oid)?;
        if let Some(data) = data {
            return Ok((data, h.tid));
        }
        match r.load_back(oid, h.back, pos)? {
            Some(b) => Ok((b.data, h.tid)),
            None => Err(Error::pos_key(oid)),
        }
    }

    fn load_before(&self, oid: Oid, before: Tid) -> Result<Option<LoadedRevision>> {
        let (file, end, mut pos) = self.lookup(oid)?;
        let r = self.reader(&file, end);
        let mut end_tid = None;
        // Each hop reads header and data together, so the revision found
        // (usually the first) needs no second read.
        let (h, data) = loop {
            let (h, data) = r.with_data_record(pos, oid, |h, data| {
                (h, data.filter(|_| h.tid < before).map(<[u8]>::to_vec))
            })?;
            if h.tid < before {
                break (h, data);
            }
            if h.prev == 0 {
                return Ok(None);
            }
            if h.prev >= pos {
                return Err(r.error(
                    pos,
                    format!("previous pointer {} does not point backwards", h.prev),
                ));
            }
            end_tid = Some(h.tid);
            pos = h.prev;
        };
        let data = match data {
            Some(data) => data,
            None if h.plen > 0 => r.record_data(pos, &h)?,
            None => match r.load_back(oid, h.back, pos)? {
                Some(b) => b.data,
                None => return Err(Error::pos_key(oid)),
            },
        };
        Ok(Some(LoadedRevision {
            data,
            start: h.tid,
            end: end_tid,
        }))
    }

    fn load_serial(&self, oid: Oid, serial: Tid) -> Result<Vec<u8>> {
        let (file, end, mut pos) = self.lookup(oid)?;
        let r = self.reader(&file, end);
        let missing = || Error::PosKey {
            oid,
            serial: Some(serial),
        };
        let h = loop {
            let h = r.data_header_for(pos, oid)?;
            if h.tid == serial {
                break h;
            }
            if h.tid < serial || h.prev == 0 {
                return Err(missing());
            }
            if h.prev >= pos {
                return Err(r.error(
                    pos,
                    format!("previous pointer {} does not point backwards", h.prev),
                ));
            }
            pos = h.prev;
        };
        if h.plen > 0 {
            return r.record_data(pos, &h);
        }
        r.load_back(oid, h.back, pos)?
            .map(|b| b.data)
            .ok_or_else(missing)
    }

    fn get_tid(&self, oid: Oid) -> Result<Tid> {
        let (file, end, pos) = self.lookup(oid)?;
        let h = self.reader(&file, end).data_header_for(pos, oid)?;
        if h.plen == 0 && h.back == 0 {
            return Err(Error::pos_key(oid));
        }
        Ok(h.tid)
    }

    fn history(&self, oid: Oid, size: usize) -> Result<Vec<HistoryEntry>> {
        let (file, end, mut pos) = self.lookup(oid)?;
        let r = self.reader(&file, end);
        let mut out = Vec::new();
        while out.len() < size {
            let h = r.data_header_for(pos, oid)?;
            let th = r.txn_header(h.tloc)?;
            let meta = r.txn_meta(h.tloc, &th)?;
            out.push(HistoryEntry {
                tid: h.tid,
                time: h.tid.unix_time(),
                user: meta.user,
                description: meta.description,
                extension: meta.extension,
                size: h.plen,
            });
            if h.prev == 0 {
                break;
            }
            if h.prev >= pos {
                return Err(r.error(
                    pos,
                    format!("previous pointer {} does not point backwards", h.prev),
                ));
            }
            pos = h.prev;
        }
        Ok(out)
    }

    fn new_oid(&self) -> Result<Oid> {
        self.check_open()?;
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        let prev = self
            .max_oid
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |o| o.checked_add(1))
            .map_err(|_| Error::Storage("oids exhausted".into()))?;
        Ok(Oid(prev + 1))
    }

    fn tpc_begin(&self, meta: &TransactionMetaData, options: BeginOptions) -> Result<TxnHandle> {
        self.begin(meta, options)
    }

    fn transaction_tid(&self, txn: TxnHandle) -> Result<Option<Tid>> {
        self.txn_tid(txn).map(Some)
    }

    fn store(&self, txn: TxnHandle, oid: Oid, serial: Tid, data: &[u8]) -> Result<()> {
        self.store_record(txn, oid, serial, data)
    }

    fn check_current_serial(&self, txn: TxnHandle, oid: Oid, serial: Tid) -> Result<()> {
        self.with_txn(txn, |_, _| Ok(()))?;
        self.wait_for_oid(oid)?;
        let committed = self.get_tid(oid)?;
        if committed != serial {
            return Err(Error::ReadConflict {
                oid,
                committed,
                old: serial,
            });
        }
        Ok(())
    }

    fn tpc_vote(&self, txn: TxnHandle) -> Result<Vec<Oid>> {
        if let Some(blobs) = &self.blobs {
            // Blob files durable before the records naming them are written.
            if self.is_current(txn) {
                blobs.make_durable(txn, &self.io)?;
            }
        }
        self.vote(txn)
    }

    fn tpc_finish(&self, txn: TxnHandle, on_commit: &mut dyn FnMut(Tid)) -> Result<Tid> {
        let res = self.finish(txn, on_commit);
        if let Some(blobs) = &self.blobs {
            match res {
                Ok(_) => blobs.finished(txn),
                // A failed finish drops the transaction: its files go too.
                Err(_) if !self.is_current(txn) && lock(&self.write_failure).is_some() => {
                    blobs.aborted(txn)
                }
                Err(_) => {}
            }
        }
        res
    }

    fn tpc_finish_submit(&self, txn: TxnHandle) -> Result<Submitted> {
        let tid = self.submit(txn)?;
        Ok(Submitted {
            txn,
            tid: Some(tid),
        })
    }

    fn tpc_finish_durable(
        &self,
        submitted: Submitted,
        on_commit: &mut dyn FnMut(Tid),
    ) -> Result<Tid> {
        let txn = submitted.txn;
        let res = self.durable(txn, on_commit);
        if let (Ok(_), Some(blobs)) = (&res, &self.blobs) {
            blobs.finished(txn);
        }
        res
    }

    fn syncs(&self) -> Option<u64> {
        Some(self.fsyncs())
    }

    fn commits_coming(&self, count: usize) {
        self.set_commits_coming(count);
    }

    fn tpc_abort(&self, txn: TxnHandle) {
        // Only the transaction in progress: a late abort of a finished one
        // must not remove its committed files.
        let current = self.blobs.is_some() && self.is_current(txn);
        self.abort(txn);
        if let (true, Some(blobs)) = (current, &self.blobs) {
            blobs.aborted(txn);
        }
    }

    fn last_invalidations(&self, count: usize) -> Result<Vec<(Tid, Vec<Oid>)>> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let (file, end) = self.snapshot()?;
        // Walk back `count` transactions over the trailing lengths, as ZODB
        // does, instead of scanning the whole file forwards.
        let mut first = None;
        {
            let r = self.reader(&file, end);
            let mut pos = end;
            for _ in 0..count {
                if pos <= format::FIRST_TXN_POS {
                    break;
                }
                let (tpos, header) = r.prev_txn(pos)?;
                first = Some(header.tid);
                pos = tpos;
            }
        }
        let Some(first) = first else {
            return Ok(Vec::new());
        };
        self.changed_oids_until(file, end, Some(first), None)?
            .collect()
    }

    fn may_block(&self) -> bool {
        // Reads hit the page cache and a commit's writes and one fsync are
        // bounded by the transaction: the server's inline fast path.
        false
    }

    crate::provide_capabilities!(
        undo,
        restore,
        iteration,
        record_iteration,
        pack,
        external_gc
    );

    fn as_blobs(&self) -> Option<&dyn crate::interface::Blobs> {
        self.blobs
            .as_ref()
            .map(|_| self as &dyn crate::interface::Blobs)
    }

    fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.wait_for_all_published();
        let open_txn = self.current_txn();
        self.abort_for_close();
        if let (Some(txn), Some(blobs)) = (open_txn, &self.blobs) {
            blobs.aborted(txn);
        }
        self.save_index();
        drop(lock(&self.lock_file).take());
        Ok(())
    }
}

impl Undo for FileStorage {
    fn undo(&self, txn: TxnHandle, undo_id: &[u8]) -> Result<Vec<Oid>> {
        self.undo_txn(txn, undo_id)
    }

    fn undo_log(
        &self,
        first: i64,
        last: i64,
        filter: Option<UndoFilter<'_>>,
    ) -> Result<Vec<UndoEntry>> {
        if self.packing.load(Ordering::Acquire) {
            return Err(Error::Undo {
                reason: "Undo is currently disabled for database maintenance.<p>".into(),
                oid: None,
            });
        }
        let (file, end) = self.snapshot()?;
        undo::undo_log(&self.reader(&file, end), first, last, filter)
    }
}

impl Restore for FileStorage {
    fn restore(
        &self,
        txn: TxnHandle,
        oid: Oid,
        serial: Tid,
        data: Option<&[u8]>,
        prev_txn: Option<Tid>,
    ) -> Result<()> {
        self.restore_record(txn, oid, serial, data, prev_txn)
    }
}

impl Iteration for FileStorage {
    fn iterator(&self, start: Option<Tid>, stop: Option<Tid>) -> Result<TransactionIter<'_>> {
        let (file, end) = self.snapshot()?;
        Ok(Box::new(iteration::TxnScanner::new(
            file, &self.path, end, start, stop, true,
        )?))
    }

    fn changed_oids(&self, start: Option<Tid>, stop: Option<Tid>) -> Result<ChangedOidsIter<'_>> {
        let (file, end) = self.snapshot()?;
        self.changed_oids_until(file, end, start, stop)
    }
}

impl RecordIteration for FileStorage {
    fn record_iternext(&self, next: Option<Oid>) -> Result<Option<CurrentRecord>> {
        self.check_open()?;
        let (oid, following) = {
            let p = self.read_published();
            let Some(oid) = p.index.min_key_from(next.map_or(0, |o| o.0)) else {
                return Ok(None);
            };
            let following = oid.checked_add(1).and_then(|o| p.index.min_key_from(o));
            (oid, following)
        };
        let (data, tid) = self.load(Oid(oid))?;
        Ok(Some(CurrentRecord {
            oid: Oid(oid),
            tid,
            data,
            next: following.map(Oid),
        }))
    }
}

impl Pack for FileStorage {
    fn pack(&self, pack_time: f64, gc: bool) -> Result<()> {
        pack::pack(self, pack_time, gc)
    }
}

impl ExternalGc for FileStorage {
    fn delete_object(&self, txn: TxnHandle, oid: Oid, serial: Tid) -> Result<()> {
        self.delete_record(txn, oid, serial)
    }
}

/// Checks the 16-bit limits a Data.fs header imposes on transaction metadata,
/// with the messages ZODB's FileStorage gives.
pub(crate) fn check_metadata_lengths(meta: &TransactionMetaData) -> Result<()> {
    if meta.user.len() > usize::from(u16::MAX) {
        return Err(Error::FileStorage("user name too long".into()));
    }
    if meta.description.len() > usize::from(u16::MAX) {
        return Err(Error::FileStorage("description too long".into()));
    }
    if meta.extension.len() > usize::from(u16::MAX) {
        return Err(Error::FileStorage("too much extension data".into()));
    }
    Ok(())
}

impl Drop for FileStorage {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

#[cfg(test)]
mod tests;
