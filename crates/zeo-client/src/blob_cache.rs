//! The blob directory as the client sees it: ZEO's `zeocache` layout for a
//! local cache of downloaded blobs, or the server's own layout (`bushy` or
//! `lawn`, chosen as ZODB's `auto_layout_select` does) for a shared blob
//! directory; ZEO's per-directory `.lock` files, taken with `flock` as
//! `zc.lockfile` does, so that Python and Rust clients on one host can
//! share a cache directory; and the size check that removes the files
//! accessed least recently, as ZEO's `_check_blob_cache_size` does.
//!
//! Everything here is blocking file-system work: the client runs it on
//! tokio's blocking pool.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tracing::{debug, warn};
use zeo_storage::{Oid, Tid};

use crate::error::{Error, Result};

/// ZODB's `LAYOUT_MARKER`: the file naming a blob directory's layout.
pub const LAYOUT_MARKER: &str = ".layout";
/// ZODB's `BLOB_SUFFIX`.
pub const BLOB_SUFFIX: &str = ".blob";
/// The per-directory lock file of ZEO's blob cache.
pub const LOCK_FILE: &str = ".lock";
/// Held by the one process checking the cache's size.
const CHECK_LOCK: &str = "check_size.lock";
/// Left by a size check that found another one running, so that the
/// running one checks again before it stops.
const CHECK_ATTEMPT: &str = "check_size.attempt";
/// ZEO's `BlobCacheLayout.size`: the number of directories of the cache.
const ZEOCACHE_DIRS: u64 = 997;
/// How often a waiter polls a held `.lock`, and how many times before it
/// gives up (ZEO's `_lock_blob`: ten minutes).
const LOCK_POLL: Duration = Duration::from_millis(10);
const LOCK_TRIES: u32 = 60_000;

/// How blob files are laid out under the base directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// ZEO's client cache: `<oid % 997>/<oid / 997>.<tid hex>.blob`.
    ZeoCache,
    /// ZODB's default: one directory per oid byte, `<tid_repr>.blob`.
    Bushy,
    /// ZODB's deprecated flat layout: `<oid_repr>/<tid_repr>.blob`.
    Lawn,
}

impl Layout {
    /// The name written in the `.layout` marker.
    pub fn name(self) -> &'static str {
        match self {
            Layout::ZeoCache => "zeocache",
            Layout::Bushy => "bushy",
            Layout::Lawn => "lawn",
        }
    }

    fn from_name(name: &str) -> Option<Layout> {
        match name {
            "zeocache" => Some(Layout::ZeoCache),
            "bushy" => Some(Layout::Bushy),
            "lawn" => Some(Layout::Lawn),
            _ => None,
        }
    }

    /// The directory of `oid`'s files, relative to the base.
    pub fn oid_dir(self, oid: Oid) -> PathBuf {
        match self {
            Layout::ZeoCache => PathBuf::from((oid.0 % ZEOCACHE_DIRS).to_string()),
            Layout::Bushy => oid
                .to_bytes()
                .iter()
                .map(|b| format!("0x{b:02x}"))
                .collect(),
            Layout::Lawn => PathBuf::from(id_repr(oid.0)),
        }
    }

    /// The file of revision `tid` of `oid`, relative to the base.
    pub fn file(self, oid: Oid, tid: Tid) -> PathBuf {
        let name = match self {
            Layout::ZeoCache => format!("{}.{:016x}{BLOB_SUFFIX}", oid.0 / ZEOCACHE_DIRS, tid.0),
            Layout::Bushy | Layout::Lawn => format!("{}{BLOB_SUFFIX}", id_repr(tid.0)),
        };
        self.oid_dir(oid).join(name)
    }
}

/// ZODB's `oid_repr`/`tid_repr`: `0x` and the big-endian hex digits
/// without leading zero bytes (`0x00` for zero).
///
/// ```
/// use zeo_client::blob_cache::id_repr;
/// assert_eq!(id_repr(0), "0x00");
/// assert_eq!(id_repr(1), "0x01");
/// assert_eq!(id_repr(0x1234), "0x1234");
/// assert_eq!(id_repr(0x3ff), "0x03ff");
/// ```
pub fn id_repr(n: u64) -> String {
    let hex = format!("{n:x}");
    if hex.len() % 2 == 1 {
        format!("0x0{hex}")
    } else {
        format!("0x{hex}")
    }
}

/// ZODB's `auto_layout_select`: the marker wins; a missing or empty
/// directory (hidden files aside) is `bushy`; anything else is `lawn`.
fn auto_layout(base: &Path) -> Result<Layout> {
    match fs::read_to_string(base.join(LAYOUT_MARKER)) {
        Ok(marker) => {
            let name = marker.trim();
            return Layout::from_name(name).ok_or_else(|| {
                Error::Config(format!(
                    "blob directory {} has an unknown layout `{name}`",
                    base.display()
                ))
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(blob_io(base.join(LAYOUT_MARKER), e)),
    }
    let entries = match fs::read_dir(base) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Layout::Bushy),
        Err(e) => return Err(blob_io(base, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| blob_io(base, e))?;
        if !entry.file_name().to_string_lossy().starts_with('.') {
            return Ok(Layout::Lawn);
        }
    }
    Ok(Layout::Bushy)
}

pub(crate) fn blob_io(path: impl Into<PathBuf>, source: io::Error) -> Error {
    Error::BlobIo {
        path: path.into(),
        source,
    }
}

/// A blob directory: the client's cache, or the server's shared one.
#[derive(Debug)]
pub struct BlobDir {
    base: PathBuf,
    temp: PathBuf,
    layout: Layout,
    shared: bool,
}

impl BlobDir {
    /// Opens `base`. A cache (`shared` false) is created as ZEO's
    /// `FilesystemHelper.create` does, with its `tmp/` and its `zeocache`
    /// marker; a marker naming another layout is refused with ZODB's
    /// message. A shared directory is the server's: its layout is read,
    /// nothing is created.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a layout mismatch, [`Error::BlobIo`] when the
    /// directory cannot be created or read.
    pub fn open(base: &Path, shared: bool) -> Result<BlobDir> {
        let layout = if shared {
            auto_layout(base)?
        } else {
            Layout::ZeoCache
        };
        let dir = BlobDir {
            base: base.to_path_buf(),
            temp: base.join("tmp"),
            layout,
            shared,
        };
        if !shared {
            dir.create()?;
        }
        Ok(dir)
    }

    fn create(&self) -> Result<()> {
        fs::create_dir_all(&self.temp).map_err(|e| blob_io(&self.temp, e))?;
        let marker = self.base.join(LAYOUT_MARKER);
        match fs::read_to_string(&marker) {
            Ok(found) if found.trim() == self.layout.name() => Ok(()),
            Ok(found) => Err(Error::Config(format!(
                "Directory layout `{}` selected for blob directory {}{}, but marker found for layout `{}`",
                self.layout.name(),
                self.base.display(),
                std::path::MAIN_SEPARATOR,
                found.trim()
            ))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::write(&marker, self.layout.name()).map_err(|e| blob_io(&marker, e))
            }
            Err(e) => Err(blob_io(&marker, e)),
        }
    }

    /// The base directory.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// The layout in use.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Whether this is the server's directory.
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// `<base>/tmp`, where callers write blob files before storing them.
    pub fn temporary_directory(&self) -> &Path {
        &self.temp
    }

    /// The committed file of revision `tid` of `oid`.
    pub fn path(&self, oid: Oid, tid: Tid) -> PathBuf {
        self.base.join(self.layout.file(oid, tid))
    }

    /// The directory of `oid`'s files, created when missing.
    ///
    /// # Errors
    ///
    /// [`Error::BlobIo`].
    pub fn oid_dir(&self, oid: Oid) -> Result<PathBuf> {
        let dir = self.base.join(self.layout.oid_dir(oid));
        fs::create_dir_all(&dir).map_err(|e| blob_io(&dir, e))?;
        Ok(dir)
    }

    /// A new empty file in `oid`'s directory, named as ZODB's
    /// `blob_mkstemp` names them (`<tid_repr>…​.tmp`) followed by `-`, as
    /// ZEO's `storeBlob` does: the name a server accepts in
    /// `storeBlobShared`.
    ///
    /// # Errors
    ///
    /// [`Error::BlobIo`].
    pub fn temp_file(&self, oid: Oid, serial: Tid) -> Result<(File, PathBuf)> {
        let dir = self.oid_dir(oid)?;
        for _ in 0..100 {
            let name = format!(
                "{}{:012x}.tmp-",
                id_repr(serial.0),
                crate::client::random_u64() >> 16
            );
            let path = dir.join(name);
            match OpenOptions::new()
                .write(true)
                .read(true)
                .create_new(true)
                .open(&path)
            {
                Ok(f) => return Ok((f, path)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(blob_io(path, e)),
            }
        }
        Err(blob_io(
            dir,
            io::Error::new(io::ErrorKind::AlreadyExists, "no free temporary name"),
        ))
    }
}

/// ZEO's `_accessed`: the access time becomes now, the modification time
/// stays, so the size check keeps what is used.
pub fn touch(path: &Path) {
    let touched = File::open(path)
        .and_then(|f| f.set_times(fs::FileTimes::new().set_accessed(SystemTime::now())));
    if let Err(e) = touched {
        debug!(path = %path.display(), error = %e, "could not update a blob's access time");
    }
}

/// ZODB's `set_not_writable`: committed blob files are read-only.
pub fn set_read_only(path: &Path) -> io::Result<()> {
    let mut perms = fs::metadata(path)?.permissions();
    perms.set_readonly(true);
    fs::set_permissions(path, perms)
}

/// A held `.lock` of one blob directory (`zc.lockfile`'s `LockFile`: an
/// exclusive `flock`, the holder's pid written in the file). Released on
/// drop.
#[derive(Debug)]
pub struct DirLock {
    file: File,
}

impl DirLock {
    fn open(path: &Path) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
    }

    fn locked(mut file: File) -> DirLock {
        // What zc.lockfile writes; only for people reading the file.
        let _ = file
            .set_len(0)
            .and_then(|()| file.write_all(format!(" {}\n", std::process::id()).as_bytes()));
        DirLock { file }
    }

    /// Takes `<dir>/.lock` if no one holds it.
    ///
    /// # Errors
    ///
    /// The lock file cannot be opened.
    pub fn try_acquire(dir: &Path) -> io::Result<Option<DirLock>> {
        Self::try_file(&dir.join(LOCK_FILE))
    }

    fn try_file(path: &Path) -> io::Result<Option<DirLock>> {
        let file = Self::open(path)?;
        match fs4::FileExt::try_lock(&file) {
            Ok(()) => Ok(Some(Self::locked(file))),
            Err(fs4::TryLockError::WouldBlock) => Ok(None),
            Err(fs4::TryLockError::Error(e)) => Err(e),
        }
    }

    /// Takes `<dir>/.lock`, polling while another holder has it, as ZEO's
    /// `_lock_blob` does (and giving up, as it does, after ten minutes).
    /// Blocks the calling thread.
    ///
    /// # Errors
    ///
    /// The lock file cannot be opened, or the lock was held throughout.
    pub fn acquire(dir: &Path) -> io::Result<DirLock> {
        Self::acquire_with(dir, || {})
    }

    /// [`DirLock::acquire`], calling `on_wait` once if the lock was held
    /// at the first try.
    ///
    /// # Errors
    ///
    /// As [`DirLock::acquire`].
    pub fn acquire_with(dir: &Path, on_wait: impl FnOnce()) -> io::Result<DirLock> {
        let path = dir.join(LOCK_FILE);
        let mut on_wait = Some(on_wait);
        for _ in 0..LOCK_TRIES {
            if let Some(lock) = Self::try_file(&path)? {
                return Ok(lock);
            }
            if let Some(f) = on_wait.take() {
                debug!(lock = %path.display(), "waiting for another download of this blob");
                f();
            }
            std::thread::sleep(LOCK_POLL);
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{} stayed locked", path.display()),
        ))
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = fs4::FileExt::unlock(&self.file);
    }
}

/// One size check of a `zeocache` directory, as ZEO's
/// `_check_blob_cache_size`: while the `.blob` files in the numbered
/// directories add up to more than `target` bytes, remove them oldest
/// access time first, skipping directories whose `.lock` is held (a
/// download or commit is using them). One process checks at a time
/// (`check_size.lock`); one that finds the check running leaves
/// `check_size.attempt` so that the running one looks again. Returns the
/// size left.
///
/// # Errors
///
/// [`Error::Config`] for a directory whose marker is not `zeocache`,
/// [`Error::BlobIo`] when it cannot be read.
pub fn check_size(base: &Path, target: u64) -> Result<u64> {
    let marker = base.join(LAYOUT_MARKER);
    let layout = fs::read_to_string(&marker).map_err(|e| blob_io(&marker, e))?;
    if layout.trim() != Layout::ZeoCache.name() {
        return Err(Error::Config(format!(
            "Invalid blob directory layout {}",
            layout.trim()
        )));
    }
    let attempt = base.join(CHECK_ATTEMPT);
    let Some(_check) = DirLock::try_file(&base.join(CHECK_LOCK)).map_err(|e| blob_io(base, e))?
    else {
        debug!(dir = %base.display(), "another process is checking the blob cache size");
        File::create(&attempt).map_err(|e| blob_io(&attempt, e))?;
        return Ok(0);
    };
    // Each round rescans; a round that finds the cache small enough ends
    // the check unless another process asked for a look meanwhile. The
    // bound only guards against a directory that keeps refilling.
    let mut size = 0;
    for _ in 0..1000 {
        let (total, mut by_atime) = scan(base)?;
        size = total;
        if size <= target {
            if fs::remove_file(&attempt).is_ok() {
                continue;
            }
            break;
        }
        'evict: while size > target {
            let Some((_, files)) = by_atime.pop_first() else {
                break;
            };
            for (dir, file) in files {
                let Some(_lock) = DirLock::try_acquire(&dir).map_err(|e| blob_io(&dir, e))? else {
                    debug!(file = %file.display(), "skipping a blob in use");
                    continue;
                };
                let len = fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
                if fs::remove_file(&file).is_ok() {
                    size = size.saturating_sub(len);
                }
                if size <= target {
                    break 'evict;
                }
            }
        }
        debug!(dir = %base.display(), size, "reduced the blob cache");
    }
    Ok(size)
}

/// A blob's directory and file, grouped by access time.
type ByAccessTime = BTreeMap<SystemTime, Vec<(PathBuf, PathBuf)>>;

/// The cached `.blob` files in the numbered directories: their total size
/// and the files by access time.
fn scan(base: &Path) -> Result<(u64, ByAccessTime)> {
    let mut size = 0;
    let mut by_atime: ByAccessTime = BTreeMap::new();
    for entry in fs::read_dir(base).map_err(|e| blob_io(base, e))? {
        let entry = entry.map_err(|e| blob_io(base, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let dir = entry.path();
        let Ok(files) = fs::read_dir(&dir) else {
            continue;
        };
        for file in files.flatten() {
            if !file.file_name().to_string_lossy().ends_with(BLOB_SUFFIX) {
                continue;
            }
            let Ok(meta) = file.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            size += meta.len();
            let atime = meta.accessed().unwrap_or(SystemTime::UNIX_EPOCH);
            by_atime
                .entry(atime)
                .or_default()
                .push((dir.clone(), file.path()));
        }
    }
    Ok((size, by_atime))
}

/// When to check the cache's size: after `check` bytes were downloaded or
/// committed since the last check, bringing it to `size - check`.
#[derive(Debug)]
pub(crate) struct SizeBound {
    target: u64,
    check: u64,
    loaded: std::sync::atomic::AtomicU64,
    running: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl SizeBound {
    pub fn new(size: u64, percent: u8) -> SizeBound {
        let check = size / 100 * u64::from(percent) + size % 100 * u64::from(percent) / 100;
        SizeBound {
            target: size.saturating_sub(check),
            check,
            loaded: Default::default(),
            running: Default::default(),
        }
    }

    /// Counts `bytes` more in the cache; starts a check on the blocking
    /// pool when enough came since the last one (and none is running).
    pub fn added(&self, base: &Path, bytes: u64) {
        use std::sync::atomic::Ordering;
        let loaded = self.loaded.fetch_add(bytes, Ordering::AcqRel) + bytes;
        if loaded < self.check {
            return;
        }
        self.start(base);
    }

    /// Starts a check now (when none is running).
    pub fn start(&self, base: &Path) {
        use std::sync::atomic::Ordering;
        if self.running.swap(true, Ordering::AcqRel) {
            return;
        }
        self.loaded.store(0, Ordering::Release);
        let running = self.running.clone();
        let base = base.to_path_buf();
        let target = self.target;
        let run = move || {
            if let Err(e) = check_size(&base, target) {
                warn!(dir = %base.display(), error = %e, "checking the blob cache size");
            }
            running.store(false, Ordering::Release);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(run)),
            Err(_) => run(),
        }
    }

    /// The size a check brings the cache down to.
    pub fn target(&self) -> u64 {
        self.target
    }

    /// Whether a check is running.
    pub fn is_running(&self) -> bool {
        self.running.load(std::sync::atomic::Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_name_files_as_zodb_and_zeo_do() {
        let (oid, tid) = (Oid(0x03e8), Tid(0x03d1_2c0f_6f0e_8a77));
        assert_eq!(
            Layout::ZeoCache.file(oid, tid),
            Path::new("3/1.03d12c0f6f0e8a77.blob")
        );
        assert_eq!(
            Layout::Bushy.file(oid, tid),
            Path::new("0x00/0x00/0x00/0x00/0x00/0x00/0x03/0xe8/0x03d12c0f6f0e8a77.blob")
        );
        assert_eq!(
            Layout::Lawn.file(oid, tid),
            Path::new("0x03e8/0x03d12c0f6f0e8a77.blob")
        );
    }

    #[test]
    fn the_layout_is_chosen_as_zodb_chooses_it() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("blobs");
        assert_eq!(auto_layout(&base).unwrap(), Layout::Bushy);
        fs::create_dir(&base).unwrap();
        fs::write(base.join(".hidden"), "").unwrap();
        assert_eq!(auto_layout(&base).unwrap(), Layout::Bushy);
        fs::write(base.join("0x01"), "").unwrap();
        assert_eq!(auto_layout(&base).unwrap(), Layout::Lawn);
        fs::write(base.join(LAYOUT_MARKER), "bushy\n").unwrap();
        assert_eq!(auto_layout(&base).unwrap(), Layout::Bushy);
        let err = BlobDir::open(&base, false).unwrap_err();
        assert!(
            err.to_string()
                .contains("Directory layout `zeocache` selected for blob directory"),
            "{err}"
        );
    }

    #[test]
    fn a_held_lock_is_refused_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let held = DirLock::try_acquire(dir.path()).unwrap().unwrap();
        assert!(DirLock::try_acquire(dir.path()).unwrap().is_none());
        drop(held);
        assert!(DirLock::try_acquire(dir.path()).unwrap().is_some());
    }

    #[test]
    fn the_check_size_is_a_percentage_of_the_size() {
        let bound = SizeBound::new(1000, 10);
        assert_eq!((bound.target, bound.check), (900, 100));
        let bound = SizeBound::new(u64::MAX, 99);
        assert!(bound.check > u64::MAX / 100 * 98);
    }
}
