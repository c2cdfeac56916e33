//! The seam through which FileStorage writes and syncs its files, so tests
//! can run out of disk space at a chosen byte or sync without a real full
//! file system, slow its syncs down, and simulate a power loss: with
//! recording on, every write and sync is logged per file, and the "crash"
//! yields what a disk could hold afterwards: the file as of its last sync
//! plus any subset of the writes made since (each possibly torn).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Failures to inject into a [`FileStorage`](super::FileStorage)'s writes
/// (commit staging, vote, finish, index file) and syncs. For tests; not
/// part of the API.
#[doc(hidden)]
#[derive(Debug)]
pub struct FaultInjector {
    /// Bytes still writable before `ENOSPC`.
    write_budget: AtomicU64,
    /// Syncs still to fail with `ENOSPC`.
    failing_syncs: AtomicU64,
    /// Failures injected so far.
    injected: AtomicU64,
    /// Added to every sync, in microseconds (a slow disk).
    sync_delay_us: AtomicU64,
    /// Syncs that went through.
    syncs: AtomicU64,
    /// The write and sync log of a power-loss simulation.
    power: Mutex<Option<PowerLog>>,
}

/// A file's identity: device and inode.
type FileKey = (u64, u64);

/// Per file (device, inode): its content at its last sync, and the writes
/// made since.
#[derive(Debug, Default)]
struct PowerLog {
    synced: HashMap<FileKey, Vec<u8>>,
    /// (offset, bytes) of each write since the last sync.
    unsynced: HashMap<FileKey, Vec<(u64, Vec<u8>)>>,
    /// The power is off: every write and sync fails.
    cut: bool,
}

fn file_key(file: &File) -> io::Result<FileKey> {
    let m = file.metadata()?;
    Ok((m.dev(), m.ino()))
}

fn read_whole(file: &File) -> io::Result<Vec<u8>> {
    let len = file.metadata()?.len();
    let mut buf = vec![0u8; usize::try_from(len).map_err(io::Error::other)?];
    file.read_exact_at(&mut buf, 0)?;
    Ok(buf)
}

impl FaultInjector {
    /// An injector that injects nothing until told to.
    pub fn new() -> Arc<FaultInjector> {
        Arc::new(FaultInjector {
            write_budget: AtomicU64::new(u64::MAX),
            failing_syncs: AtomicU64::new(0),
            injected: AtomicU64::new(0),
            sync_delay_us: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            power: Mutex::new(None),
        })
    }

    /// Makes every sync take `delay` longer (a slow or busy disk).
    pub fn delay_syncs(&self, delay: Duration) {
        self.sync_delay_us
            .store(delay.as_micros() as u64, Ordering::SeqCst);
    }

    /// Syncs that went through so far.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::SeqCst)
    }

    /// Starts logging writes and syncs for [`FaultInjector::power_cut`];
    /// `file`'s present content counts as synced.
    pub fn record_power_loss(&self, file: &std::path::Path) -> io::Result<()> {
        let f = File::open(file)?;
        let mut log = PowerLog::default();
        log.synced.insert(file_key(&f)?, read_whole(&f)?);
        *self.power.lock().unwrap_or_else(PoisonError::into_inner) = Some(log);
        Ok(())
    }

    /// Cuts the power: from now on every write and sync through the seam
    /// fails with `EIO`. Returns what the disk may hold of `file`: its
    /// content at its last sync, then each write made since, in order,
    /// applied whole or not at all as `lands(offset)` says (writes reach
    /// the disk in any order; a write is not torn: FS30 has no checksum
    /// that could tell a torn write of a transaction, see
    /// `docs/design/filestorage.md`). Gaps read as zeros. `None` unless
    /// [`FaultInjector::record_power_loss`] ran.
    pub fn power_cut(
        &self,
        file: &std::path::Path,
        lands: &mut dyn FnMut(u64) -> bool,
    ) -> io::Result<Option<Vec<u8>>> {
        let mut power = self.power.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(log) = power.as_mut() else {
            return Ok(None);
        };
        log.cut = true;
        let key = file_key(&File::open(file)?)?;
        let mut image = log.synced.get(&key).cloned().unwrap_or_default();
        for (offset, bytes) in log.unsynced.get(&key).into_iter().flatten() {
            if bytes.is_empty() || !lands(*offset) {
                continue;
            }
            let from = *offset as usize;
            let to = from + bytes.len();
            if image.len() < to {
                image.resize(to, 0);
            }
            image[from..to].copy_from_slice(bytes);
        }
        Ok(Some(image))
    }

    /// Lets `bytes` more bytes be written, then fails every write with
    /// `ENOSPC` (the write that crosses the limit writes its first part, as
    /// a file system that fills up does).
    pub fn fail_writes_after(&self, bytes: u64) {
        self.write_budget.store(bytes, Ordering::SeqCst);
    }

    /// Fails the next `n` syncs with `ENOSPC`.
    pub fn fail_next_syncs(&self, n: u64) {
        self.failing_syncs.store(n, Ordering::SeqCst);
    }

    /// Space is back: writes and syncs succeed again.
    pub fn heal(&self) {
        self.write_budget.store(u64::MAX, Ordering::SeqCst);
        self.failing_syncs.store(0, Ordering::SeqCst);
    }

    /// How many failures were injected.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }

    fn enospc(&self) -> io::Error {
        self.injected.fetch_add(1, Ordering::SeqCst);
        io::Error::from_raw_os_error(libc::ENOSPC)
    }

    /// How much of a `len`-byte write may go through; `len` when all of it.
    fn take(&self, len: u64) -> u64 {
        let mut allowed = 0;
        let _ = self
            .write_budget
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                allowed = left.min(len);
                Some(if left == u64::MAX {
                    left
                } else {
                    left - allowed
                })
            });
        allowed
    }
}

/// File operations, optionally through a [`FaultInjector`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Io(Option<Arc<FaultInjector>>);

impl Io {
    #[cfg(test)]
    pub(crate) fn with(faults: Option<Arc<FaultInjector>>) -> Io {
        Io(faults)
    }

    /// `faults` (or plain file operations), with every sync made `delay`
    /// longer when one is given ([`super::FileStorageOptions::sync_delay`]).
    pub(crate) fn with_sync_delay(
        faults: Option<Arc<FaultInjector>>,
        delay: Option<Duration>,
    ) -> Io {
        match delay.filter(|d| !d.is_zero()) {
            Some(delay) => {
                tracing::warn!(
                    "benchmarking: every commit fsync takes {} µs longer",
                    delay.as_micros()
                );
                let faults = faults.unwrap_or_else(FaultInjector::new);
                faults.delay_syncs(delay);
                Io(Some(faults))
            }
            None => Io(faults),
        }
    }

    pub(crate) fn write_all_at(&self, file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
        let Some(f) = &self.0 else {
            return file.write_all_at(buf, offset);
        };
        let allowed = f.take(buf.len() as u64) as usize;
        let mut power = f.power.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(log) = power.as_mut() {
            if log.cut {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            log.unsynced
                .entry(file_key(file)?)
                .or_default()
                .push((offset, buf[..allowed].to_vec()));
        }
        file.write_all_at(&buf[..allowed], offset)?;
        drop(power);
        if allowed < buf.len() {
            return Err(f.enospc());
        }
        Ok(())
    }

    pub(crate) fn sync_all(&self, file: &File) -> io::Result<()> {
        if let Some(f) = &self.0 {
            let failing = f
                .failing_syncs
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
            if failing.is_ok() {
                return Err(f.enospc());
            }
            let delay = f.sync_delay_us.load(Ordering::SeqCst);
            if delay > 0 {
                // Stands for the disk's latency, outside any test's clock.
                std::thread::sleep(Duration::from_micros(delay));
            }
            let mut power = f.power.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(log) = power.as_mut() {
                if log.cut {
                    return Err(io::Error::from_raw_os_error(libc::EIO));
                }
                file.sync_all()?;
                let key = file_key(file)?;
                log.synced.insert(key, read_whole(file)?);
                log.unsynced.remove(&key);
                f.syncs.fetch_add(1, Ordering::SeqCst);
                return Ok(());
            }
            file.sync_all()?;
            f.syncs.fetch_add(1, Ordering::SeqCst);
            return Ok(());
        }
        file.sync_all()
    }

    /// A sequential writer over `file` (from its current position).
    pub(crate) fn writer<'a>(&'a self, file: &'a File) -> SeqWriter<'a> {
        SeqWriter { io: self, file }
    }
}

/// [`Io`]'s writes, as a [`Write`] for a file written from the start.
pub(crate) struct SeqWriter<'a> {
    io: &'a Io,
    file: &'a File,
}

impl Write for SeqWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(f) = &self.io.0 else {
            return (&mut &*self.file).write(buf);
        };
        let allowed = f.take(buf.len() as u64) as usize;
        if allowed == 0 && !buf.is_empty() {
            return Err(f.enospc());
        }
        (&mut &*self.file).write(&buf[..allowed])
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_stop_at_the_budget_and_syncs_fail_as_told() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("f")).unwrap();
        let faults = FaultInjector::new();
        let io = Io::with(Some(Arc::clone(&faults)));
        io.write_all_at(&file, b"hello", 0).unwrap();
        faults.fail_writes_after(3);
        let err = io.write_all_at(&file, b"world", 5).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
        assert!(err.to_string().contains("No space left on device"), "{err}");
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"hellowor");
        assert!(io.write_all_at(&file, b"x", 8).is_err());
        faults.fail_next_syncs(1);
        assert!(io.sync_all(&file).is_err());
        faults.heal();
        io.sync_all(&file).unwrap();
        io.write_all_at(&file, b"ld", 8).unwrap();
        assert_eq!(faults.injected(), 3);
        let mut w = io.writer(&file);
        faults.fail_writes_after(0);
        assert!(w.write_all(b"abc").is_err());
    }

    #[test]
    fn a_power_cut_keeps_what_was_synced_and_any_part_of_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"base").unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let faults = FaultInjector::new();
        let io = Io::with(Some(Arc::clone(&faults)));
        faults.record_power_loss(&path).unwrap();
        io.write_all_at(&file, b"-one", 4).unwrap();
        io.sync_all(&file).unwrap();
        io.write_all_at(&file, b"-two", 8).unwrap();
        io.write_all_at(&file, b"-six", 20).unwrap();
        assert_eq!(faults.syncs(), 1);
        // The second unsynced write lands, the first does not.
        let mut asked = Vec::new();
        let image = faults
            .power_cut(&path, &mut |offset| {
                asked.push(offset);
                offset == 20
            })
            .unwrap()
            .unwrap();
        assert_eq!(asked, [8, 20]);
        assert_eq!(image, b"base-one\0\0\0\0\0\0\0\0\0\0\0\0-six");
        // The real file got everything; after the cut nothing more goes.
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"base-one-two\0\0\0\0\0\0\0\0-six"
        );
        assert!(io.write_all_at(&file, b"x", 0).is_err());
        assert!(io.sync_all(&file).is_err());
    }
}
