//! `Data.fs.lock`, taken the way `zc.lockfile.LockFile` takes it so that a
//! Python process and this one exclude each other: an exclusive,
//! non-blocking `flock` on the file (never truncated before locking), and
//! once locked, the content `" <pid>\n"`. The file is left in place on close.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A held lock; dropping it releases the lock.
#[derive(Debug)]
pub(crate) struct LockFile {
    file: File,
    path: PathBuf,
}

impl LockFile {
    /// Takes the lock at `path` or fails with [`Error::Locked`].
    pub fn acquire(path: &Path) -> Result<LockFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| Error::io(format!("opening lock file {}", path.display()), e))?;
        // SAFETY: flock only reads the descriptor, which `file` keeps open.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::EWOULDBLOCK) => Err(Error::Locked {
                    path: path.to_path_buf(),
                }),
                _ => Err(Error::io(format!("locking {}", path.display()), err)),
            };
        }
        let mut lock = LockFile {
            file,
            path: path.to_path_buf(),
        };
        lock.write_pid()?;
        Ok(lock)
    }

    fn write_pid(&mut self) -> Result<()> {
        let content = format!(" {}\n", std::process::id());
        let io = |e| Error::io(format!("writing lock file {}", self.path.display()), e);
        self.file.seek(SeekFrom::Start(0)).map_err(io)?;
        self.file.write_all(content.as_bytes()).map_err(io)?;
        self.file.set_len(content.len() as u64).map_err(io)?;
        self.file.flush().map_err(io)
    }
}

impl Drop for LockFile {
    fn drop(&mut self) {
        // SAFETY: as above; closing the descriptor would release it anyway.
        unsafe {
            libc::flock(self.file.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_fails_until_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("Data.fs.lock");
        std::fs::write(&p, "some much longer old content\n").unwrap();
        let first = LockFile::acquire(&p).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            format!(" {}\n", std::process::id())
        );
        assert!(matches!(LockFile::acquire(&p), Err(Error::Locked { .. })));
        drop(first);
        let again = LockFile::acquire(&p).unwrap();
        drop(again);
        assert!(p.exists());
    }
}
