//! The seam through which FileStorage writes and syncs its files, so tests
//! can run out of disk space at a chosen byte or sync without a real full
//! file system.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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
}

impl FaultInjector {
    /// An injector that injects nothing until told to.
    pub fn new() -> Arc<FaultInjector> {
        Arc::new(FaultInjector {
            write_budget: AtomicU64::new(u64::MAX),
            failing_syncs: AtomicU64::new(0),
            injected: AtomicU64::new(0),
        })
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
    pub(crate) fn with(faults: Option<Arc<FaultInjector>>) -> Io {
        Io(faults)
    }

    pub(crate) fn write_all_at(&self, file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
        let Some(f) = &self.0 else {
            return file.write_all_at(buf, offset);
        };
        let allowed = f.take(buf.len() as u64) as usize;
        file.write_all_at(&buf[..allowed], offset)?;
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
}
