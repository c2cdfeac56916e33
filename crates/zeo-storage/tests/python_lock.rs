//! The data file lock against Python ZODB's `zc.lockfile`, through other
//! names of the same file. Needs the Python venvs (`cargo xtask venv`).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use zeo_storage::filestorage::{FileStorage, FileStorageOptions};
use zeo_storage::Error;
use zeo_testkit::python6;

const TRY_OPEN: &str = "\
import sys, zc.lockfile, ZODB.FileStorage as F
try:
    F.FileStorage(sys.argv[1]).close()
except zc.lockfile.LockError:
    print('locked')
else:
    print('opened')
";

const HOLD_OPEN: &str = "\
import sys, ZODB.FileStorage as F
s = F.FileStorage(sys.argv[1])
print('open', flush=True)
sys.stdin.read()
s.close()
";

fn python_try_open(path: &Path) -> String {
    let out = Command::new(python6())
        .args(["-c", TRY_OPEN])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A Python process holding `path` open until dropped.
struct PythonHolder(Child);

impl PythonHolder {
    fn start(path: &Path) -> PythonHolder {
        let mut child = Command::new(python6())
            .args(["-c", HOLD_OPEN])
            .arg(path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        // Returns at the first line or when the process exits.
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "open", "the Python holder did not start");
        PythonHolder(child)
    }
}

impl Drop for PythonHolder {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

fn layout() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("Data.fs");
    drop(FileStorage::open(&real, FileStorageOptions::default()).unwrap());
    let link = dir.path().join("link.fs");
    std::os::unix::fs::symlink("Data.fs", &link).unwrap();
    (dir, real, link)
}

#[test]
fn we_exclude_python_through_the_real_name_when_opened_through_a_symlink() {
    let (_dir, real, link) = layout();
    let fs = FileStorage::open(&link, FileStorageOptions::default()).unwrap();
    assert_eq!(python_try_open(&real), "locked");
    assert_eq!(python_try_open(&link), "locked");
    drop(fs);
    assert_eq!(python_try_open(&real), "opened");
}

#[test]
fn python_on_the_real_name_excludes_us_through_any_name() {
    let (dir, real, link) = layout();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let holder = PythonHolder::start(&real);
    for path in [
        real.clone(),
        link.clone(),
        dir.path().join("sub/../Data.fs"),
    ] {
        match FileStorage::open(&path, FileStorageOptions::default()) {
            Err(Error::Locked { .. }) => {}
            other => panic!("{}: expected LockError, got {other:?}", path.display()),
        }
    }
    drop(holder);
    drop(FileStorage::open(&link, FileStorageOptions::default()).unwrap());
}
