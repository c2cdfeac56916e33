//! Every single-byte corruption and every truncation of a small Data.fs
//! gives results or errors, never a panic, and never a changed file on a
//! read-only open.

use std::path::Path;

use zeo_storage::filestorage::{check, dump, FileStorage, FileStorageOptions};
use zeo_storage::interface::BeginOptions;
use zeo_storage::ExternalGc;
use zeo_storage::Iteration;
use zeo_storage::RecordIteration;
use zeo_storage::Undo;
use zeo_storage::{Oid, Storage, Tid, TransactionMetaData};

fn build(path: &Path) -> Vec<u8> {
    let fs = FileStorage::open(path, FileStorageOptions::default()).unwrap();
    let meta = TransactionMetaData {
        user: b"u".to_vec(),
        description: b"d".to_vec(),
        extension: b"\x80\x03}q\x00.".to_vec(),
    };
    let mut serials = [Tid::ZERO; 3];
    for round in 0..3u8 {
        let txn = fs.tpc_begin(&meta, BeginOptions::default()).unwrap();
        for oid in 0..3u64 {
            if (oid + u64::from(round)) % 2 == 0 || round == 0 {
                fs.store(
                    txn,
                    Oid(oid),
                    serials[oid as usize],
                    &[b'x', round, oid as u8],
                )
                .unwrap();
            }
        }
        fs.tpc_vote(txn).unwrap();
        let tid = fs.tpc_finish(txn, &mut |_| {}).unwrap();
        for oid in 0..3u64 {
            if (oid + u64::from(round)) % 2 == 0 || round == 0 {
                serials[oid as usize] = tid;
            }
        }
    }
    let log = fs.undo_log(0, 1, None).unwrap();
    let txn = fs.tpc_begin(&meta, BeginOptions::default()).unwrap();
    fs.undo(txn, &log[0].id).unwrap();
    fs.delete_object(txn, Oid(1), serials[1]).unwrap();
    fs.tpc_vote(txn).unwrap();
    fs.tpc_finish(txn, &mut |_| {}).unwrap();
    fs.close().unwrap();
    std::fs::remove_file(path.with_extension("fs.index")).unwrap();
    std::fs::read(path).unwrap()
}

/// Runs every read path; only panics matter here.
fn exercise(path: &Path) {
    let _ = check(path);
    let _ = dump(path, &mut std::io::sink());
    let Ok(fs) = FileStorage::open(
        path,
        FileStorageOptions {
            read_only: true,
            ..Default::default()
        },
    ) else {
        return;
    };
    for oid in 0..4u64 {
        let oid = Oid(oid);
        let _ = fs.load(oid);
        let _ = fs.get_tid(oid);
        let _ = fs.load_before(oid, Tid::MAX);
        if let Ok(h) = fs.history(oid, 10) {
            for e in h {
                let _ = fs.load_before(oid, e.tid);
                let _ = fs.load_serial(oid, e.tid);
            }
        }
    }
    if let Ok(it) = fs.iterator(None, None) {
        for t in it.take(100) {
            let _ = t;
        }
    }
    if let Ok(it) = fs.iterator(Some(Tid(1)), Some(Tid::MAX)) {
        let _ = it.take(100).count();
    }
    let _ = fs.undo_log(0, -20, None);
    let _ = fs.record_iternext(None);
}

#[test]
fn flipped_bytes_and_truncations_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let good_path = dir.path().join("good.fs");
    let good = build(&good_path);
    let path = dir.path().join("bad.fs");
    for i in 0..good.len() {
        for flip in [0xffu8, 0x01] {
            let mut bad = good.clone();
            bad[i] ^= flip;
            std::fs::write(&path, &bad).unwrap();
            exercise(&path);
            assert_eq!(
                std::fs::read(&path).unwrap(),
                bad,
                "byte {i} flip {flip:#x}: file modified"
            );
        }
    }
    for len in 0..good.len() {
        std::fs::write(&path, &good[..len]).unwrap();
        exercise(&path);
        assert_eq!(std::fs::read(&path).unwrap().len(), len);
    }
}
