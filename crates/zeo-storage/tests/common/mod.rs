//! Helpers shared by the FileStorage test files.

#![allow(dead_code)] // Each test crate uses its own subset.

use std::path::Path;

use zeo_storage::filestorage::{FileStorage, FileStorageOptions};
use zeo_storage::interface::BeginOptions;
use zeo_storage::{Oid, Storage, Tid, TransactionMetaData};

/// Opens (creating when missing) the FileStorage at `path`, writable.
pub fn open(path: &Path) -> FileStorage {
    FileStorage::open(path, FileStorageOptions::default()).unwrap()
}

/// Commits `stores` (`(oid, serial, data)`) in one transaction described
/// by `meta`. FileStorage resolves no conflicts, so the vote names no
/// objects.
pub fn commit_as(
    fs: &FileStorage,
    meta: &TransactionMetaData,
    stores: &[(u64, Tid, &[u8])],
) -> Tid {
    let txn = fs.tpc_begin(meta, BeginOptions::default()).unwrap();
    for (oid, serial, data) in stores {
        fs.store(txn, Oid(*oid), *serial, data).unwrap();
    }
    assert!(fs.tpc_vote(txn).unwrap().is_empty());
    fs.tpc_finish(txn, &mut |_| {}).unwrap()
}
