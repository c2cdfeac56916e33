//! A full disk during commit and index writes, through FileStorage's
//! fault-injection seam: a clear error, reads still served, the file intact,
//! and commits again once there is space.

mod common;

use std::path::Path;
use std::sync::Arc;

use zeo_storage::filestorage::{check, FaultInjector, FileStorage, FileStorageOptions};
use zeo_storage::interface::BeginOptions;
use zeo_storage::{Error, Oid, Storage, Tid, TransactionMetaData};

use common::{commit_as, open};
use zeo_storage::Iteration;
use zeo_storage::Pack;

fn open_faulty(path: &Path) -> (FileStorage, Arc<FaultInjector>) {
    let faults = FaultInjector::new();
    let fs =
        FileStorage::open_with_faults(path, FileStorageOptions::default(), Arc::clone(&faults))
            .unwrap();
    (fs, faults)
}

fn meta() -> TransactionMetaData {
    TransactionMetaData::default()
}

fn assert_enospc(err: &Error) {
    assert!(
        err.to_string().contains("No space left on device"),
        "not a clear out-of-space error: {err}"
    );
}

/// Every transaction in the file, as (tid, oids).
fn transactions(fs: &FileStorage) -> Vec<(Tid, Vec<Oid>)> {
    fs.iterator(None, None)
        .unwrap()
        .map(|t| {
            let t = t.unwrap();
            (t.tid, t.records.iter().map(|r| r.oid).collect())
        })
        .collect()
}

#[test]
fn enospc_during_vote_fails_the_transaction_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let (fs, faults) = open_faulty(&path);
    let t1 = commit_as(
        &fs,
        &meta(),
        &[(0, Tid::ZERO, b"root"), (1, Tid::ZERO, b"one")],
    );
    let size = fs.size();

    let big = vec![7u8; 100_000];
    let txn = fs.tpc_begin(&meta(), BeginOptions::default()).unwrap();
    fs.store(txn, Oid(1), t1, &big).unwrap();
    fs.store(txn, Oid(2), Tid::ZERO, &big).unwrap();
    // The disk fills up half way through the transaction's bytes.
    faults.fail_writes_after(50_000);
    let err = fs.tpc_vote(txn).unwrap_err();
    assert_enospc(&err);
    assert_eq!(faults.injected(), 1);
    fs.tpc_abort(txn);

    // Reads are served, the partial transaction is gone, the file is sound.
    assert_eq!(fs.load(Oid(1)).unwrap(), (b"one".to_vec(), t1));
    assert!(matches!(fs.load(Oid(2)), Err(Error::PosKey { .. })));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
    assert_eq!(check(&path).unwrap().transactions, 1);

    // Still full: the next vote fails the same way, nothing is lost.
    let txn = fs.tpc_begin(&meta(), BeginOptions::default()).unwrap();
    fs.store(txn, Oid(1), t1, b"small").unwrap();
    assert_enospc(&fs.tpc_vote(txn).unwrap_err());
    fs.tpc_abort(txn);

    // Space is back.
    faults.heal();
    let t2 = commit_as(&fs, &meta(), &[(1, t1, &big), (2, Tid::ZERO, b"two")]);
    assert_eq!(fs.load(Oid(1)).unwrap(), (big.clone(), t2));
    drop(fs);
    assert_eq!(check(&path).unwrap().transactions, 2);
    let fs = open(&path);
    assert_eq!(
        transactions(&fs),
        vec![(t1, vec![Oid(0), Oid(1)]), (t2, vec![Oid(1), Oid(2)])]
    );
    commit_as(&fs, &meta(), &[(2, t2, b"three")]);
}

#[test]
fn enospc_while_staging_a_large_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let (fs, faults) = open_faulty(&path);
    let t1 = commit_as(&fs, &meta(), &[(0, Tid::ZERO, b"root")]);
    faults.fail_writes_after(0);
    let txn = fs.tpc_begin(&meta(), BeginOptions::default()).unwrap();
    // Larger than the in-memory staging buffer: goes to the temporary file.
    let err = fs.store(txn, Oid(0), t1, &vec![1u8; 1 << 20]).unwrap_err();
    assert_enospc(&err);
    fs.tpc_abort(txn);
    assert_eq!(fs.load(Oid(0)).unwrap(), (b"root".to_vec(), t1));
    faults.heal();
    let t2 = commit_as(&fs, &meta(), &[(0, t1, &vec![1u8; 1 << 20])]);
    assert_eq!(fs.load(Oid(0)).unwrap().1, t2);
    drop(fs);
    assert_eq!(check(&path).unwrap().transactions, 2);
}

#[test]
fn a_failed_fsync_at_finish_is_never_reported_as_a_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let (fs, faults) = open_faulty(&path);
    let t1 = commit_as(&fs, &meta(), &[(0, Tid::ZERO, b"root")]);

    let txn = fs.tpc_begin(&meta(), BeginOptions::default()).unwrap();
    fs.store(txn, Oid(0), t1, b"lost").unwrap();
    fs.store(txn, Oid(1), Tid::ZERO, b"lost too").unwrap();
    fs.tpc_vote(txn).unwrap();
    faults.fail_next_syncs(1);
    let mut called = false;
    let err = fs.tpc_finish(txn, &mut |_| called = true).unwrap_err();
    assert_enospc(&err);
    assert!(!called, "the commit callback ran for a failed commit");

    // Reads are served from what was durable before.
    assert_eq!(fs.load(Oid(0)).unwrap(), (b"root".to_vec(), t1));
    assert!(matches!(fs.load(Oid(1)), Err(Error::PosKey { .. })));
    assert_eq!(fs.last_transaction(), t1);
    // The transaction's bytes are cut off; the file is sound.
    assert_eq!(std::fs::metadata(&path).unwrap().len(), fs.size());
    assert_eq!(check(&path).unwrap().transactions, 1);

    // Writes are refused until reopened, even with space back: the fsync
    // is not retried.
    faults.heal();
    match fs.tpc_begin(&meta(), BeginOptions::default()) {
        Err(Error::Storage(why)) => {
            assert!(
                why.contains("reopened") && why.contains("No space left"),
                "{why}"
            )
        }
        other => panic!("expected a refusal, got {other:?}"),
    }

    drop(fs);
    let (fs, _faults) = open_faulty(&path);
    assert_eq!(transactions(&fs), vec![(t1, vec![Oid(0)])]);
    let t2 = commit_as(&fs, &meta(), &[(0, t1, b"after"), (1, Tid::ZERO, b"x")]);
    assert_eq!(fs.load(Oid(0)).unwrap(), (b"after".to_vec(), t2));
    drop(fs);
    assert_eq!(check(&path).unwrap().transactions, 2);
}

#[test]
fn enospc_while_writing_the_index_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let index = dir.path().join("Data.fs.index");
    let tmp = dir.path().join("Data.fs.index.index_tmp");
    let (fs, faults) = open_faulty(&path);
    let before = std::fs::read(&index).unwrap();
    let mut serial = Tid::ZERO;
    for i in 0..50u64 {
        serial = commit_as(
            &fs,
            &meta(),
            &[(0, serial, b"root"), (i + 1, Tid::ZERO, b"x")],
        );
    }
    faults.fail_writes_after(20);
    fs.close().unwrap();
    assert!(faults.injected() >= 1);
    assert!(!tmp.exists(), "index_tmp left behind");
    // The index written at creation is still there, untouched.
    assert_eq!(std::fs::read(&index).unwrap(), before);

    // The stale index only costs a scan from where it ends.
    let fs = open(&path);
    assert_eq!(fs.len(), 51);
    assert_eq!(fs.load(Oid(0)).unwrap(), (b"root".to_vec(), serial));
    drop(fs);
    assert!(!tmp.exists());
    assert_ne!(std::fs::read(&index).unwrap(), before);
    assert_eq!(check(&path).unwrap().transactions, 50);
}

#[test]
fn enospc_during_pack_leaves_the_file_and_removes_the_partial_copy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let (fs, faults) = open_faulty(&path);
    let mut serial = Tid::ZERO;
    for i in 0..20u8 {
        serial = commit_as(&fs, &meta(), &[(0, serial, &[i; 10_000])]);
    }
    let before = std::fs::read(&path).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for fail in ["write", "sync"] {
        if fail == "write" {
            faults.fail_writes_after(5_000);
        } else {
            faults.heal();
            faults.fail_next_syncs(1);
        }
        let err = fs.pack(now + 1.0, false).unwrap_err();
        assert_enospc(&err);
        assert!(!dir.path().join("Data.fs.pack").exists(), "{fail}");
        assert_eq!(std::fs::read(&path).unwrap(), before, "{fail}");
        assert_eq!(fs.load(Oid(0)).unwrap(), (vec![19; 10_000], serial));
    }
    // Commits go on, and so does the pack once there is space.
    faults.heal();
    let last = commit_as(&fs, &meta(), &[(0, serial, b"last")]);
    fs.pack(now + 1.0, false).unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() < before.len() as u64);
    assert_eq!(fs.load(Oid(0)).unwrap(), (b"last".to_vec(), last));
    drop(fs);
    check(&path).unwrap();
}
