//! `Data.fs.lock`, taken the way `zc.lockfile.LockFile` takes it so that a
//! Python process and this one exclude each other: an exclusive,
//! non-blocking `flock` on the file (never truncated before locking), and
//! once locked, the content `" <pid>\n"`. The file is left in place on close.
//!
//! `<path as given>.lock` alone lets a second writer in through another name
//! for the same file (a symlink, `dir/../Data.fs`, another relative path), so
//! a storage also locks `<canonical path>.lock` when that is another file.
//! Both are keyed by path, not by the data file's inode, so they stay valid
//! across pack's switch to a new file. `flock` locks belong to an open file
//! description, so two opens in one process exclude each other as two
//! processes do.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

use super::index_file::append_suffix;

/// A held lock; dropping it releases the lock.
#[derive(Debug)]
pub(crate) struct LockFile {
    file: File,
    path: PathBuf,
}

/// The locks of one writable storage: `<path as given>.lock` and, when it
/// is another file, `<canonical path>.lock`.
#[derive(Debug)]
pub(crate) struct StorageLock {
    _given: LockFile,
    _canonical: Option<LockFile>,
}

impl StorageLock {
    /// Locks the storage at `data_path` (the data file need not exist yet)
    /// or fails with [`Error::Locked`] naming the lock file that is held.
    pub fn acquire(data_path: &Path) -> Result<StorageLock> {
        let given = LockFile::acquire(&append_suffix(data_path, ".lock"))?;
        let canonical = match canonical_data_path(data_path) {
            Some(real) => {
                let real_lock = append_suffix(&real, ".lock");
                if same_file(&given.file, &real_lock) {
                    None
                } else {
                    Some(LockFile::acquire(&real_lock)?)
                }
            }
            // Unresolvable (a parent directory vanished): the open that
            // follows fails anyway.
            None => None,
        };
        Ok(StorageLock {
            _given: given,
            _canonical: canonical,
        })
    }
}

/// Whether `path` names the file `file` has open.
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// The absolute path with no symlink, `.` or `..` that `path` leads to,
/// also when the file (or the target of a dangling symlink) does not exist
/// yet; `None` when no directory on the way can be resolved.
pub(crate) fn canonical_data_path(path: &Path) -> Option<PathBuf> {
    let mut path = path.to_path_buf();
    // Bounded as the kernel bounds symlink chains (ELOOP after 40).
    for _ in 0..40 {
        if let Ok(real) = std::fs::canonicalize(&path) {
            return Some(real);
        }
        let parent = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        match std::fs::read_link(&path) {
            // A dangling symlink: where the data file will be created.
            Ok(target) => path = parent.join(target),
            Err(_) => {
                let name = path.file_name()?;
                return Some(std::fs::canonicalize(&parent).ok()?.join(name));
            }
        }
    }
    None
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

    #[test]
    fn another_name_for_the_same_file_is_excluded() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("Data.fs");
        std::fs::write(&data, b"FS30").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::os::unix::fs::symlink(&data, dir.path().join("link.fs")).unwrap();
        let held = StorageLock::acquire(&dir.path().join("link.fs")).unwrap();
        // Through the real name, `..` and another symlink.
        for other in [
            data.clone(),
            dir.path().join("sub/../Data.fs"),
            dir.path().join("sub/../link.fs"),
        ] {
            match StorageLock::acquire(&other) {
                Err(Error::Locked { path }) => assert!(
                    ["Data.fs.lock", "link.fs.lock"]
                        .contains(&path.file_name().unwrap().to_str().unwrap()),
                    "{other:?}: {path:?}"
                ),
                other => panic!("expected Locked, got {other:?}"),
            }
        }
        drop(held);
        let again = StorageLock::acquire(&dir.path().join("sub/../Data.fs")).unwrap();
        drop(again);
    }

    #[test]
    fn canonical_path_of_missing_files_and_dangling_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let real_dir = std::fs::canonicalize(dir.path()).unwrap();
        assert_eq!(
            canonical_data_path(&dir.path().join("new.fs")).unwrap(),
            real_dir.join("new.fs")
        );
        std::os::unix::fs::symlink("target.fs", dir.path().join("dangling.fs")).unwrap();
        assert_eq!(
            canonical_data_path(&dir.path().join("dangling.fs")).unwrap(),
            real_dir.join("target.fs")
        );
        std::os::unix::fs::symlink("loop.fs", dir.path().join("loop.fs")).unwrap();
        assert!(canonical_data_path(&dir.path().join("loop.fs")).is_none());
        assert!(canonical_data_path(&dir.path().join("no/such/dir/x.fs")).is_none());
    }
}
