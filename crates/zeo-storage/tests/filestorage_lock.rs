//! One writer per data file, whatever name it is opened by.

mod common;

use std::path::Path;

use zeo_storage::filestorage::{FileStorage, FileStorageOptions};
use zeo_storage::{Error, Oid, Storage, Tid, TransactionMetaData};

use common::{commit_as, open};
use zeo_storage::Pack;

fn try_open(path: &Path) -> zeo_storage::Result<FileStorage> {
    FileStorage::open(path, FileStorageOptions::default())
}

fn assert_locked(path: &Path) {
    match try_open(path) {
        Err(Error::Locked { .. }) => {}
        other => panic!("{}: expected LockError, got {other:?}", path.display()),
    }
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn a_second_writer_through_a_symlink_or_dotdot_is_refused_also_after_pack() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("Data.fs");
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let link = dir.path().join("link.fs");
    std::os::unix::fs::symlink("Data.fs", &link).unwrap();
    let dotdot = sub.join("../Data.fs");

    let fs = open(&real);
    let meta = TransactionMetaData::default();
    let t1 = commit_as(&fs, &meta, &[(0, Tid::ZERO, b"root-1")]);
    let t2 = commit_as(&fs, &meta, &[(0, t1, b"root-2")]);

    assert_locked(&link);
    assert_locked(&dotdot);
    assert_locked(&real);

    // Pack switches to a new file; the locks are keyed by path and stay.
    let before = std::fs::metadata(&real).unwrap().len();
    fs.pack(now() + 1.0, false).unwrap();
    assert!(
        std::fs::metadata(&real).unwrap().len() < before,
        "pack freed nothing"
    );
    assert_locked(&link);
    assert_locked(&dotdot);
    assert_locked(&real);
    assert_eq!(fs.load(Oid(0)).unwrap(), (b"root-2".to_vec(), t2));

    fs.close().unwrap();
    drop(fs);
    let again = open(&link);
    assert_eq!(again.load(Oid(0)).unwrap(), (b"root-2".to_vec(), t2));
    assert_locked(&real);
    assert_locked(&dotdot);
    drop(again);
    let again = open(&dotdot);
    assert_locked(&link);
    drop(again);
    open(&real);
}

#[test]
fn a_writer_through_a_symlink_excludes_the_real_name() {
    let dir = tempfile::tempdir().unwrap();
    let real_dir = dir.path().join("real");
    std::fs::create_dir(&real_dir).unwrap();
    let linked_dir = dir.path().join("linked");
    std::os::unix::fs::symlink(&real_dir, &linked_dir).unwrap();

    // Created through the symlinked directory; Python's zc.lockfile on the
    // real `Data.fs.lock` is excluded too since it is the file locked here.
    let fs = open(&linked_dir.join("Data.fs"));
    commit_as(
        &fs,
        &TransactionMetaData::default(),
        &[(0, Tid::ZERO, b"x")],
    );
    assert!(real_dir.join("Data.fs.lock").exists());
    assert_locked(&real_dir.join("Data.fs"));
    // Read-only opens take no lock, as before.
    let ro = FileStorage::open(
        real_dir.join("Data.fs"),
        FileStorageOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(ro.len(), 1);
    drop(fs);
    open(&real_dir.join("Data.fs"));
}
