//! The client cache: object revisions the client has seen, kept consistent
//! with the server by invalidations, bounded in size, optionally persistent.
//!
//! It holds *current* revisions (`oid → data, start tid`) and *non-current*
//! ones (`oid, start, end`), so that both `load` and `load_before` can be
//! answered without the server, and remembers the last transaction it is
//! consistent with, which decides how much verification a reconnect needs.
//!
//! Semantics follow ZEO's `ClientCache` (`ZEO/cache.py`):
//! * [`ClientCache::invalidate`]`(oid, tid)` turns the current revision
//!   into a non-current one ending at `tid` (kept: it still answers
//!   `load_before(oid, t)` for `t <= tid`);
//!   [`ClientCache::drop_current`] discards it instead (what verification
//!   does with the oids `getInvalidations` returns);
//! * storing a revision already held is a no-op; storing a *current*
//!   revision while another current one is held means invalidations were
//!   missed: the newer one wins and a warning is logged (ZEO raises);
//! * [`ClientCache::set_last_tid`] never goes backwards while the cache holds
//!   anything.
//!
//! A transient cache ([`ClientCache::memory`]) keeps data in memory. A
//! persistent one ([`ClientCache::open`]) keeps it in a log-structured file
//! described byte by byte in `docs/design/client-cache.md`; any damaged,
//! truncated, foreign or locked-out state is detected, reported through
//! `tracing`, and never trusted.
//!
//! Eviction is S3-FIFO (see the `policy` module): scan-resistant, and a
//! hit costs a counter bump.
//!
//! ```
//! use zeo_client::ClientCache;
//! use zeo_storage::{Oid, Tid};
//!
//! let cache = ClientCache::memory(1 << 20);
//! cache.store(Oid(1), Tid(10), None, b"v1");
//! cache.apply_invalidations(Tid(20), &[Oid(1)]).unwrap();
//! assert_eq!(cache.load(Oid(1)), None); // no current revision any more
//! let old = cache.load_before(Oid(1), Tid(15)).unwrap();
//! assert_eq!((old.data.as_slice(), old.start, old.end), (&b"v1"[..], Tid(10), Some(Tid(20))));
//! assert_eq!(cache.last_tid(), Some(Tid(20)));
//! ```

mod format;
mod policy;

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use tracing::{debug, warn};
use zeo_storage::{LoadedRevision, Oid, Tid};

use crate::error::{Error, Result};
use format::{kind, Record};
use policy::{Key, S3Fifo, Slot, Slots};

/// The default capacity, ZEO's `cache-size` default: 20 MB.
pub const DEFAULT_CACHE_SIZE: u64 = 20 * 1024 * 1024;

/// Bytes each revision is charged beyond its data (its record framing).
const REVISION_OVERHEAD: u64 = format::FRAME_OVERHEAD + format::STORE_PREFIX;

/// The smallest log size at which compaction is considered.
const MIN_COMPACT_AT: u64 = 1 << 20;

/// Counters describing what the cache did since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Loads answered from the cache.
    pub hits: u64,
    /// Loads the cache could not answer.
    pub misses: u64,
    /// Revisions added.
    pub stores: u64,
    /// Revisions evicted to stay within capacity.
    pub evictions: u64,
    /// Current revisions made non-current or dropped by invalidations.
    pub invalidations: u64,
    /// Revisions live now.
    pub revisions: u64,
    /// Bytes charged to live revisions (data plus per-record overhead).
    pub bytes: u64,
    /// The configured capacity in bytes.
    pub capacity: u64,
}

/// A bounded, optionally persistent cache of object revisions.
///
/// All methods take `&self`; one internal mutex serialises them, so the
/// cache can be shared between the connection task that applies
/// invalidations and the threads that load.
#[derive(Debug)]
pub struct ClientCache {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    capacity: u64,
    index: Index,
    policy: S3Fifo,
    last_tid: Option<Tid>,
    backing: Backing,
    stats: CacheStats,
}

#[derive(Debug, Default)]
struct Index {
    objects: HashMap<Oid, BTreeMap<Tid, Rev>>,
    live: usize,
}

#[derive(Debug)]
struct Rev {
    end: Option<Tid>,
    loc: Loc,
    slot: Slot,
}

#[derive(Debug)]
enum Loc {
    Memory(Arc<[u8]>),
    /// Offset of the store record in the cache file, and its data length.
    File {
        record: u64,
        data_len: u32,
    },
}

#[derive(Debug)]
enum Backing {
    Memory,
    File(LogFile),
}

#[derive(Debug)]
struct LogFile {
    file: File,
    path: PathBuf,
    salt: u64,
    /// Where the next record goes (the valid length of the file).
    end: u64,
    /// Compact once `end` passes this.
    compact_at: u64,
    storage: String,
    /// Held for the cache's lifetime: another process opening the same
    /// cache file would corrupt it.
    _lock: File,
}

impl Slots for Index {
    fn slot_mut(&mut self, key: Key) -> Option<&mut Slot> {
        self.objects
            .get_mut(&key.0)?
            .get_mut(&key.1)
            .map(|r| &mut r.slot)
    }

    fn live(&self) -> usize {
        self.live
    }
}

impl Index {
    fn current(&self, oid: Oid) -> Option<Tid> {
        self.objects
            .get(&oid)?
            .iter()
            .rev()
            .find(|(_, r)| r.end.is_none())
            .map(|(t, _)| *t)
    }

    fn remove(&mut self, key: Key) -> Option<Rev> {
        let revs = self.objects.get_mut(&key.0)?;
        let rev = revs.remove(&key.1)?;
        if revs.is_empty() {
            self.objects.remove(&key.0);
        }
        self.live -= 1;
        Some(rev)
    }

    fn insert(&mut self, key: Key, rev: Rev) {
        if self
            .objects
            .entry(key.0)
            .or_default()
            .insert(key.1, rev)
            .is_none()
        {
            self.live += 1;
        }
    }
}

impl ClientCache {
    /// A transient cache held in memory, bounded to `capacity` bytes.
    ///
    /// ```
    /// let cache = zeo_client::ClientCache::memory(zeo_client::cache::DEFAULT_CACHE_SIZE);
    /// assert!(cache.is_empty());
    /// assert_eq!(cache.last_tid(), None);
    /// ```
    pub fn memory(capacity: u64) -> Self {
        ClientCache {
            inner: Mutex::new(Inner::new(capacity, Backing::Memory)),
        }
    }

    /// The file name ZEO uses for a persistent cache:
    /// `<var>/<client>-<storage>.zec`.
    ///
    /// ```
    /// use std::path::Path;
    /// let p = zeo_client::ClientCache::persistent_path(Path::new("/var/zeo"), "app", "1");
    /// assert_eq!(p, Path::new("/var/zeo/app-1.zec"));
    /// ```
    pub fn persistent_path(var: &Path, client: &str, storage: &str) -> PathBuf {
        var.join(format!("{client}-{storage}.zec"))
    }

    /// Opens (or creates) the persistent cache at `path` for the server
    /// storage named `storage`, bounded to `capacity` bytes.
    ///
    /// A file that is damaged, was written for another storage, or is not a
    /// cache file of ours is renamed to `<path>.bad` with a warning and a
    /// fresh cache is started; a torn tail left by a crash is cut off and
    /// the consistent prefix kept.
    ///
    /// ```
    /// use zeo_client::ClientCache;
    /// use zeo_storage::{Oid, Tid};
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = ClientCache::persistent_path(dir.path(), "app", "1");
    /// {
    ///     let cache = ClientCache::open(&path, "1", 1 << 20).unwrap();
    ///     cache.store(Oid(7), Tid(3), None, b"state");
    ///     cache.set_last_tid(Tid(3)).unwrap();
    /// }
    /// let cache = ClientCache::open(&path, "1", 1 << 20).unwrap();
    /// assert_eq!(cache.load(Oid(7)), Some((b"state".to_vec(), Tid(3))));
    /// assert_eq!(cache.last_tid(), Some(Tid(3)));
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::CacheLocked`] when another process has the cache open,
    /// [`Error::CacheIo`] when the file cannot be created at all.
    pub fn open(path: &Path, storage: &str, capacity: u64) -> Result<Self> {
        let io_err = |source| Error::CacheIo {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(io_err)?;
        }
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(suffixed(path, ".lock"))
            .map_err(io_err)?;
        // flock(2), as zc.lockfile takes it: a Python client using the same
        // file name is locked out too.
        match fs4::FileExt::try_lock(&lock) {
            Ok(()) => {}
            Err(fs4::TryLockError::WouldBlock) => {
                return Err(Error::CacheLocked {
                    path: path.to_owned(),
                })
            }
            Err(fs4::TryLockError::Error(e)) => return Err(io_err(e)),
        }
        // A compaction interrupted before its rename left this behind.
        let _ = fs::remove_file(suffixed(path, ".tmp"));

        let mut inner = Inner::new(capacity, Backing::Memory);
        let log = match inner.replay(path, storage, lock).map_err(io_err)? {
            Ok(log) => log,
            Err((lock, reason)) => {
                warn!(path = %path.display(), %reason, "discarding client cache file");
                let bad = suffixed(path, ".bad");
                let _ = fs::remove_file(&bad);
                if fs::rename(path, &bad).is_err() {
                    let _ = fs::remove_file(path);
                }
                inner = Inner::new(capacity, Backing::Memory);
                LogFile::create(path, storage, lock, capacity).map_err(io_err)?
            }
        };
        inner.backing = Backing::File(log);
        inner.enforce_capacity();
        inner.maybe_compact();
        Ok(ClientCache {
            inner: Mutex::new(inner),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves an index that is at worst
        // missing an entry; keep serving rather than poison every caller.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The last transaction the cache is consistent with, `None` before the
    /// first one was set.
    pub fn last_tid(&self) -> Option<Tid> {
        self.lock().last_tid
    }

    /// Records that the cache reflects every invalidation up to `tid`.
    /// A zero tid is ignored, as are repeats.
    ///
    /// # Errors
    ///
    /// [`Error::TidRegression`] when `tid` is older than the current last
    /// tid and the cache is not empty.
    pub fn set_last_tid(&self, tid: Tid) -> Result<()> {
        self.lock().set_last_tid(tid)
    }

    /// Number of revisions held.
    pub fn len(&self) -> usize {
        self.lock().index.live
    }

    /// Whether no revision is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counters and sizes.
    pub fn stats(&self) -> CacheStats {
        let inner = self.lock();
        CacheStats {
            revisions: inner.index.live as u64,
            bytes: inner.policy.bytes(),
            capacity: inner.capacity,
            ..inner.stats
        }
    }

    /// Whether the cache is backed by a file that survives restarts.
    pub fn is_persistent(&self) -> bool {
        matches!(self.lock().backing, Backing::File(_))
    }

    /// The current revision of `oid`: its data and start tid.
    pub fn load(&self, oid: Oid) -> Option<(Vec<u8>, Tid)> {
        let mut inner = self.lock();
        let found = inner
            .index
            .current(oid)
            .and_then(|start| inner.read(oid, start));
        match found {
            Some((data, start, _)) => {
                inner.stats.hits += 1;
                Some((data, start))
            }
            None => {
                inner.stats.misses += 1;
                None
            }
        }
    }

    /// The revision of `oid` that was current just before `before`, when
    /// the cache knows it. `end` is `None` when that revision is current as
    /// far as the cache knows (up to its last tid).
    pub fn load_before(&self, oid: Oid, before: Tid) -> Option<LoadedRevision> {
        let mut inner = self.lock();
        let candidate = inner
            .index
            .objects
            .get(&oid)
            .and_then(|revs| revs.range(..before).next_back())
            .filter(|(_, r)| r.end.is_none_or(|end| end >= before))
            .map(|(start, _)| *start);
        match candidate.and_then(|start| inner.read(oid, start)) {
            Some((data, start, end)) => {
                inner.stats.hits += 1;
                Some(LoadedRevision { data, start, end })
            }
            None => {
                inner.stats.misses += 1;
                None
            }
        }
    }

    /// Adds a revision: current when `end` is `None`, else valid from
    /// `start` up to (not including) `end`. Revisions larger than the whole
    /// cache, and revisions already held, are ignored.
    pub fn store(&self, oid: Oid, start: Tid, end: Option<Tid>, data: &[u8]) {
        self.lock().store(oid, start, end, data);
    }

    /// The current revision of `oid` ends at `tid`: it stays cached as a
    /// non-current revision. A miss is a no-op.
    pub fn invalidate(&self, oid: Oid, tid: Tid) {
        let mut inner = self.lock();
        let mut buf = Vec::new();
        inner.invalidate(oid, tid, &mut buf);
        inner.append(&buf);
    }

    /// Discards the current revision of `oid` (non-current ones stay: they
    /// are history and cannot go stale).
    pub fn drop_current(&self, oid: Oid) {
        let mut inner = self.lock();
        if let Some(start) = inner.index.current(oid) {
            let mut buf = Vec::new();
            inner.log(&mut buf, &[&[kind::DROP_CURRENT], &oid.to_bytes()]);
            if let Some(rev) = inner.index.remove((oid, start)) {
                inner.policy.forget(&rev.slot);
            }
            inner.stats.invalidations += 1;
            inner.append(&buf);
        }
    }

    /// Applies a server `invalidateTransaction(tid, oids)`: invalidates each
    /// oid at `tid`, then sets the last tid, in one step that other callers
    /// cannot observe half-done.
    ///
    /// # Errors
    ///
    /// As [`ClientCache::set_last_tid`]; the invalidations are applied
    /// regardless.
    pub fn apply_invalidations(&self, tid: Tid, oids: &[Oid]) -> Result<()> {
        let mut inner = self.lock();
        let mut buf = Vec::new();
        for &oid in oids {
            inner.invalidate(oid, tid, &mut buf);
        }
        inner.append(&buf);
        inner.set_last_tid(tid)
    }

    /// Drops every revision; the last tid is kept (the caller sets a new one
    /// after verification, as ZEO does).
    pub fn clear(&self) {
        let mut inner = self.lock();
        let mut buf = Vec::new();
        inner.log(&mut buf, &[&[kind::CLEAR]]);
        inner.append(&buf);
        inner.index = Index::default();
        inner.policy.clear();
    }

    /// Forces everything written so far to stable storage (a no-op for a
    /// transient cache). Dropping the cache does this too.
    ///
    /// # Errors
    ///
    /// The I/O error of the fsync.
    pub fn sync(&self) -> Result<()> {
        let inner = self.lock();
        if let Backing::File(log) = &inner.backing {
            log.file.sync_data().map_err(|source| Error::CacheIo {
                path: log.path.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

impl Drop for ClientCache {
    fn drop(&mut self) {
        if let Err(e) = self.sync() {
            warn!(error = %e, "could not sync the client cache on close");
        }
    }
}

fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// A salt that differs between cache files created on this machine.
fn fresh_salt() -> u64 {
    crate::client::random_u64()
}

impl LogFile {
    fn create(path: &Path, storage: &str, lock: File, capacity: u64) -> io::Result<LogFile> {
        let salt = fresh_salt();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        let mut buf = format::encode_header(salt).to_vec();
        format::encode_record(&mut buf, salt, &[&[kind::IDENTITY], storage.as_bytes()]);
        file.write_all_at(&buf, 0)?;
        file.sync_all()?;
        sync_parent(path);
        Ok(LogFile {
            file,
            path: path.to_owned(),
            salt,
            end: buf.len() as u64,
            compact_at: compact_threshold(capacity),
            storage: storage.to_owned(),
            _lock: lock,
        })
    }
}

fn compact_threshold(capacity: u64) -> u64 {
    capacity.saturating_mul(2).max(MIN_COMPACT_AT)
}

fn sync_parent(path: &Path) {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

/// Why an existing file was not accepted (it is set aside, not an error).
type Rejected = (File, String);

impl Inner {
    fn new(capacity: u64, backing: Backing) -> Self {
        Inner {
            capacity: capacity.max(1),
            index: Index::default(),
            policy: S3Fifo::default(),
            last_tid: None,
            backing,
            stats: CacheStats::default(),
        }
    }

    /// Reads an existing cache file into the index. The outer error is an
    /// I/O failure; the inner one a file to set aside.
    fn replay(
        &mut self,
        path: &Path,
        storage: &str,
        lock: File,
    ) -> io::Result<std::result::Result<LogFile, Rejected>> {
        let file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return LogFile::create(path, storage, lock, self.capacity).map(Ok)
            }
            Err(e) => return Err(e),
        };
        let file_len = file.metadata()?.len();
        let mut header = [0u8; format::HEADER_LEN as usize];
        let got = read_up_to(&file, &mut header)?;
        let salt = match format::decode_header(&header[..got]) {
            Ok(salt) => salt,
            Err(format::HeaderFault::Short) if file_len == 0 => {
                return LogFile::create(path, storage, lock, self.capacity).map(Ok)
            }
            Err(fault) => return Ok(Err((lock, format!("bad header: {fault:?}")))),
        };

        let mut records = Vec::new();
        let (valid_end, tail) = format::scan(&file, salt, file_len, |at, r| records.push((at, r)))?;
        let mut records = records.into_iter();
        match records.next() {
            Some((_, Record::Identity(name))) if name == storage.as_bytes() => {}
            Some((_, Record::Identity(name))) => {
                return Ok(Err((
                    lock,
                    format!("written for storage {:?}", String::from_utf8_lossy(&name)),
                )))
            }
            _ => return Ok(Err((lock, "no identity record".into()))),
        }
        if let Some(tail) = &tail {
            warn!(
                path = %path.display(),
                offset = tail.offset,
                reason = tail.reason,
                dropped = file_len - tail.offset,
                "client cache file has a damaged tail (interrupted write?); keeping the part before it"
            );
            file.set_len(valid_end)?;
        }
        for (at, record) in records {
            self.replay_record(at, record);
        }
        debug!(path = %path.display(), revisions = self.index.live, last_tid = ?self.last_tid, "client cache opened");
        Ok(Ok(LogFile {
            file,
            path: path.to_owned(),
            salt,
            end: valid_end,
            compact_at: compact_threshold(self.capacity),
            storage: storage.to_owned(),
            _lock: lock,
        }))
    }

    fn replay_record(&mut self, at: u64, record: Record) {
        match record {
            Record::Identity(_) => {}
            Record::LastTid(tid) => self.last_tid = Some(tid),
            Record::Store {
                oid,
                start,
                end,
                data_len,
            } => {
                self.put(
                    oid,
                    start,
                    end,
                    Loc::File {
                        record: at,
                        data_len,
                    },
                    data_len.into(),
                );
            }
            Record::Invalidate { oid, tid } => {
                if let Some(start) = self.index.current(oid) {
                    self.set_end(oid, start, tid);
                }
            }
            Record::DropCurrent(oid) => {
                if let Some(start) = self.index.current(oid) {
                    self.forget((oid, start));
                }
            }
            Record::Evict { oid, start } => self.forget((oid, start)),
            Record::Clear => {
                self.index = Index::default();
                self.policy.clear();
            }
        }
    }

    /// Inserts a revision (replacing one with the same key, and any other
    /// current revision when this one is current).
    fn put(&mut self, oid: Oid, start: Tid, end: Option<Tid>, loc: Loc, data_len: u64) {
        self.forget((oid, start));
        if end.is_none() {
            if let Some(other) = self.index.current(oid) {
                self.forget((oid, other));
            }
        }
        let slot = self
            .policy
            .admit((oid, start), data_len + REVISION_OVERHEAD);
        self.index.insert((oid, start), Rev { end, loc, slot });
    }

    fn forget(&mut self, key: Key) {
        if let Some(rev) = self.index.remove(key) {
            self.policy.forget(&rev.slot);
        }
    }

    fn set_end(&mut self, oid: Oid, start: Tid, end: Tid) {
        if let Some(rev) = self
            .index
            .objects
            .get_mut(&oid)
            .and_then(|r| r.get_mut(&start))
        {
            rev.end = Some(end);
        }
    }

    fn set_last_tid(&mut self, tid: Tid) -> Result<()> {
        if tid == Tid::ZERO || self.last_tid == Some(tid) {
            return Ok(());
        }
        if let Some(last) = self.last_tid {
            if tid < last && self.index.live > 0 {
                return Err(Error::TidRegression { last, new: tid });
            }
        }
        let mut buf = Vec::new();
        self.log(&mut buf, &[&[kind::LAST_TID], &tid.to_bytes()]);
        self.append(&buf);
        self.last_tid = Some(tid);
        Ok(())
    }

    fn invalidate(&mut self, oid: Oid, tid: Tid, buf: &mut Vec<u8>) {
        let Some(start) = self.index.current(oid) else {
            return;
        };
        self.stats.invalidations += 1;
        if tid == start {
            warn!(%oid, %tid, "ignoring an invalidation with the current revision's own tid");
        } else if tid < start {
            // Cannot end before it began: something is confused, so trust
            // nothing about this object.
            warn!(%oid, %tid, %start, "invalidation older than the cached revision; dropping it");
            self.log(buf, &[&[kind::DROP_CURRENT], &oid.to_bytes()]);
            self.forget((oid, start));
        } else {
            self.log(
                buf,
                &[&[kind::INVALIDATE], &oid.to_bytes(), &tid.to_bytes()],
            );
            self.set_end(oid, start, tid);
        }
    }

    fn store(&mut self, oid: Oid, start: Tid, end: Option<Tid>, data: &[u8]) {
        if end.is_some_and(|e| e <= start) {
            warn!(%oid, %start, ?end, "refusing to cache a revision that ends before it starts");
            return;
        }
        let size = data.len() as u64 + REVISION_OVERHEAD;
        if size > self.capacity || data.len() as u64 > u64::from(format::MAX_PAYLOAD) / 2 {
            return;
        }
        if let Some(existing) = self.index.objects.get(&oid).and_then(|r| r.get(&start)) {
            match (existing.end, end) {
                // Learned that the held current revision has ended.
                (None, Some(e)) => {
                    let mut buf = Vec::new();
                    self.invalidate(oid, e, &mut buf);
                    self.append(&buf);
                }
                (Some(had), Some(new)) if had != new => {
                    warn!(%oid, %start, %had, %new, "conflicting end tids for one revision; keeping the cached one");
                }
                _ => {}
            }
            return;
        }
        if end.is_none() {
            if let Some(current) = self.index.current(oid) {
                if current > start {
                    warn!(%oid, %start, %current, "ignoring a current revision older than the cached one");
                    return;
                }
                warn!(%oid, %start, %current, "replacing a current revision that was never invalidated");
            }
        }
        let loc = match &self.backing {
            Backing::Memory => Loc::Memory(data.into()),
            Backing::File(log) => {
                let mut buf = Vec::with_capacity(data.len() + REVISION_OVERHEAD as usize);
                format::encode_record(
                    &mut buf,
                    log.salt,
                    &[&format::store_prefix(oid, start, end), data],
                );
                match self.append(&buf) {
                    Some(record) => Loc::File {
                        record,
                        data_len: data.len() as u32,
                    },
                    None => Loc::Memory(data.into()),
                }
            }
        };
        self.put(oid, start, end, loc, data.len() as u64);
        self.stats.stores += 1;
        self.enforce_capacity();
        self.maybe_compact();
    }

    /// Encodes a record for the log, when there is one.
    fn log(&self, buf: &mut Vec<u8>, parts: &[&[u8]]) {
        if let Backing::File(log) = &self.backing {
            format::encode_record(buf, log.salt, parts);
        }
    }

    /// Appends encoded records; returns the offset they start at. On a
    /// write error the file is abandoned (see [`Inner::abandon_file`]) and
    /// `None` returned.
    fn append(&mut self, buf: &[u8]) -> Option<u64> {
        if buf.is_empty() {
            return None;
        }
        let Backing::File(log) = &mut self.backing else {
            return None;
        };
        let at = log.end;
        match log.file.write_all_at(buf, at) {
            Ok(()) => {
                log.end += buf.len() as u64;
                Some(at)
            }
            Err(e) => {
                self.abandon_file(&e);
                None
            }
        }
    }

    /// Falls back to a transient, empty cache after the file failed. The
    /// file keeps a consistent (older) prefix, but a half-written record
    /// after it could hide later appends, so it is removed.
    fn abandon_file(&mut self, e: &io::Error) {
        if let Backing::File(log) = std::mem::replace(&mut self.backing, Backing::Memory) {
            warn!(path = %log.path.display(), error = %e, "client cache file failed; continuing with a transient cache");
            let _ = fs::remove_file(&log.path);
        }
        self.index = Index::default();
        self.policy.clear();
    }

    /// Reads a revision's data, checking its checksum; a damaged record is
    /// dropped and reads as a miss.
    fn read(&mut self, oid: Oid, start: Tid) -> Option<(Vec<u8>, Tid, Option<Tid>)> {
        let rev = self.index.objects.get_mut(&oid)?.get_mut(&start)?;
        S3Fifo::touch(&mut rev.slot);
        let end = rev.end;
        let data = match (&rev.loc, &self.backing) {
            (Loc::Memory(data), _) => Some(data.to_vec()),
            (Loc::File { record, data_len }, Backing::File(log)) => {
                read_store_record(log, *record, *data_len)
            }
            (Loc::File { .. }, Backing::Memory) => None,
        };
        match data {
            Some(data) => Some((data, start, end)),
            None => {
                warn!(%oid, %start, "damaged client cache record; dropping it");
                let mut buf = Vec::new();
                self.log(
                    &mut buf,
                    &[&[kind::EVICT], &oid.to_bytes(), &start.to_bytes()],
                );
                self.append(&buf);
                self.forget((oid, start));
                None
            }
        }
    }

    fn enforce_capacity(&mut self) {
        let mut buf = Vec::new();
        while self.policy.bytes() > self.capacity {
            let Some(key) = self.policy.victim(&mut self.index, self.capacity) else {
                break;
            };
            if self.index.remove(key).is_some() {
                self.stats.evictions += 1;
                self.log(
                    &mut buf,
                    &[&[kind::EVICT], &key.0.to_bytes(), &key.1.to_bytes()],
                );
            }
        }
        self.append(&buf);
    }

    fn maybe_compact(&mut self) {
        let Backing::File(log) = &self.backing else {
            return;
        };
        if log.end <= log.compact_at {
            return;
        }
        match self.compact() {
            Ok(()) => {}
            Err(e) => {
                let Backing::File(log) = &mut self.backing else {
                    return;
                };
                warn!(path = %log.path.display(), error = %e, "client cache compaction failed");
                let _ = fs::remove_file(suffixed(&log.path, ".tmp"));
                // Do not retry on every write.
                log.compact_at = log.end.saturating_add(compact_threshold(self.capacity) / 2);
            }
        }
    }

    /// Rewrites the live revisions into a fresh file and renames it over
    /// the log: the rename is the commit point, so a crash leaves either
    /// the old log or the complete new one.
    fn compact(&mut self) -> io::Result<()> {
        let Backing::File(log) = &self.backing else {
            return Ok(());
        };
        let tmp_path = suffixed(&log.path, ".tmp");
        let salt = fresh_salt();
        let tmp = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp_path)?;
        let mut out = io::BufWriter::with_capacity(1 << 16, &tmp);
        let mut pos = 0u64;
        let mut emit = |out: &mut io::BufWriter<&File>, bytes: &[u8]| -> io::Result<u64> {
            out.write_all(bytes)?;
            let at = pos;
            pos += bytes.len() as u64;
            Ok(at)
        };
        emit(&mut out, &format::encode_header(salt))?;
        let mut buf = Vec::new();
        format::encode_record(&mut buf, salt, &[&[kind::IDENTITY], log.storage.as_bytes()]);
        if let Some(tid) = self.last_tid {
            format::encode_record(&mut buf, salt, &[&[kind::LAST_TID], &tid.to_bytes()]);
        }
        emit(&mut out, &buf)?;

        let mut moved = Vec::new();
        let mut lost = Vec::new();
        for (&oid, revs) in &self.index.objects {
            for (&start, rev) in revs {
                let Loc::File { record, data_len } = rev.loc else {
                    continue;
                };
                let Some(data) = read_store_record(log, record, data_len) else {
                    lost.push((oid, start));
                    continue;
                };
                buf.clear();
                format::encode_record(
                    &mut buf,
                    salt,
                    &[&format::store_prefix(oid, start, rev.end), &data],
                );
                moved.push(((oid, start), emit(&mut out, &buf)?));
            }
        }
        out.flush()?;
        drop(out);
        tmp.sync_all()?;
        fs::rename(&tmp_path, &log.path)?;
        sync_parent(&log.path);

        let Backing::File(log) = &mut self.backing else {
            return Ok(());
        };
        log.file = tmp;
        log.salt = salt;
        log.end = pos;
        log.compact_at = compact_threshold(self.capacity).max(pos.saturating_mul(2));
        debug!(path = %log.path.display(), bytes = pos, "client cache compacted");
        for ((oid, start), record) in moved {
            if let Some(rev) = self
                .index
                .objects
                .get_mut(&oid)
                .and_then(|r| r.get_mut(&start))
            {
                if let Loc::File { record: r, .. } = &mut rev.loc {
                    *r = record;
                }
            }
        }
        for key in lost {
            warn!(oid = %key.0, start = %key.1, "damaged client cache record dropped during compaction");
            self.forget(key);
        }
        Ok(())
    }
}

/// Replays `bytes` as the persistent cache file of storage `"1"` in `dir`
/// and reads from the result: the entry point of the `client_cache_replay`
/// fuzz target and of the test that replays its corpus. Not API.
#[doc(hidden)]
pub fn fuzz_replay(dir: &Path, bytes: &[u8]) {
    let path = dir.join("fuzz-1.zec");
    if fs::write(&path, bytes).is_err() {
        return;
    }
    if let Ok(cache) = ClientCache::open(&path, "1", 1 << 20) {
        let _ = (cache.last_tid(), cache.len(), cache.stats());
        for oid in 0..8 {
            let _ = cache.load(Oid(oid));
            let _ = cache.load_before(Oid(oid), Tid(u64::MAX));
        }
        cache.store(Oid(1), Tid(u64::MAX - 1), None, b"after replay");
        let _ = cache.sync();
    }
}

fn read_up_to(mut file: &File, buf: &mut [u8]) -> io::Result<usize> {
    io::Seek::seek(&mut file, io::SeekFrom::Start(0))?;
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

fn read_store_record(log: &LogFile, record: u64, data_len: u32) -> Option<Vec<u8>> {
    let payload = u64::from(data_len) + format::STORE_PREFIX;
    let framed_len = usize::try_from(payload + format::FRAME_OVERHEAD).ok()?;
    if record.checked_add(framed_len as u64)? > log.end {
        return None;
    }
    let mut framed = vec![0u8; framed_len];
    log.file.read_exact_at(&mut framed, record).ok()?;
    let payload = format::verify_record(log.salt, &framed)?;
    if payload.first() != Some(&kind::STORE) {
        return None;
    }
    payload
        .get(format::STORE_PREFIX as usize..)
        .map(<[u8]>::to_vec)
}

#[cfg(test)]
mod tests;
