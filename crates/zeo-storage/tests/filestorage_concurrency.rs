//! Readers never wait for a commit; commits are serialized.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use zeo_storage::filestorage::{check, FileStorage, FileStorageOptions};
use zeo_storage::interface::BeginOptions;
use zeo_storage::{Oid, Storage, Tid, TransactionMetaData};

use common::commit_as;
use zeo_storage::Iteration;

fn commit(fs: &FileStorage, stores: &[(u64, Tid, &[u8])]) -> Tid {
    commit_as(fs, &TransactionMetaData::default(), stores)
}

#[test]
fn readers_proceed_while_a_commit_is_between_vote_and_finish() {
    let dir = tempfile::tempdir().unwrap();
    let fs = Arc::new(
        FileStorage::open(dir.path().join("Data.fs"), FileStorageOptions::default()).unwrap(),
    );
    let data: Vec<Vec<u8>> = (0..200)
        .map(|i| format!("object {i} v1").into_bytes())
        .collect();
    let stores: Vec<(u64, Tid, &[u8])> = (0..200)
        .map(|i| (i as u64, Tid::ZERO, &data[i][..]))
        .collect();
    let t1 = commit(&fs, &stores);

    let txn = fs
        .tpc_begin(&TransactionMetaData::default(), BeginOptions::default())
        .unwrap();
    for i in 0..200u64 {
        fs.store(txn, Oid(i), t1, format!("object {i} v2").as_bytes())
            .unwrap();
    }
    fs.tpc_vote(txn).unwrap();

    // The commit is stuck between vote and finish: readers see t1 only,
    // and each finishes its loads (a reader blocked by the commit would
    // never report).
    let (done_tx, done_rx) = mpsc::channel();
    let readers: Vec<_> = (0..4)
        .map(|r| {
            let (fs, done) = (Arc::clone(&fs), done_tx.clone());
            thread::spawn(move || {
                let mut i = r;
                for _ in 0..500 {
                    let oid = i % 200;
                    let (d, tid) = fs.load(Oid(oid)).unwrap();
                    assert_eq!(tid, t1);
                    assert_eq!(d, format!("object {oid} v1").into_bytes());
                    assert_eq!(fs.last_transaction(), t1);
                    i += 7;
                }
                let _ = done.send(r);
            })
        })
        .collect();
    for _ in 0..readers.len() {
        done_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("readers made no progress while a commit was voted");
    }
    for r in readers {
        r.join().unwrap();
    }

    // Inside on_commit (after the fsync, before publication) loads still
    // run and still see t1.
    let (tx, rx) = mpsc::channel();
    let t2 = {
        let fs2 = Arc::clone(&fs);
        fs.tpc_finish(txn, &mut |tid| {
            let fs3 = Arc::clone(&fs2);
            let tx = tx.clone();
            thread::spawn(move || {
                let _ = tx.send(fs3.load(Oid(3)).map(|(_, t)| t));
            });
            let seen = rx
                .recv_timeout(Duration::from_secs(10))
                .expect("a load blocked on the commit");
            assert_eq!(seen.unwrap(), t1);
            assert!(tid > t1);
        })
        .unwrap()
    };
    assert_eq!(fs.load(Oid(3)).unwrap(), (b"object 3 v2".to_vec(), t2));
}

#[test]
fn a_second_tpc_begin_waits_for_the_first_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let fs = Arc::new(
        FileStorage::open(dir.path().join("Data.fs"), FileStorageOptions::default()).unwrap(),
    );
    let first = fs
        .tpc_begin(&TransactionMetaData::default(), BeginOptions::default())
        .unwrap();
    fs.store(first, Oid(0), Tid::ZERO, b"root").unwrap();
    let began = Arc::new(AtomicBool::new(false));
    let waiter = {
        let (fs, began) = (Arc::clone(&fs), Arc::clone(&began));
        thread::spawn(move || {
            let txn = fs
                .tpc_begin(&TransactionMetaData::default(), BeginOptions::default())
                .unwrap();
            began.store(true, Ordering::SeqCst);
            // The first transaction may still be waiting for its fsync
            // (group commit): a store on its object would wait for it.
            fs.store(txn, Oid(1), Tid::ZERO, b"second").unwrap();
            fs.tpc_vote(txn).unwrap();
            fs.tpc_finish(txn, &mut |_| {}).unwrap()
        })
    };
    // Until the second tpc_begin either returns or is seen waiting.
    let deadline = Instant::now() + Duration::from_secs(10);
    while fs.commit_waiters() == 0 && !began.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "second tpc_begin never ran");
        thread::yield_now();
    }
    assert!(
        !began.load(Ordering::SeqCst),
        "second tpc_begin did not wait"
    );
    assert_eq!(fs.commit_waiters(), 1);
    fs.tpc_vote(first).unwrap();
    let t1 = fs.tpc_finish(first, &mut |_| {}).unwrap();
    let t2 = waiter.join().unwrap();
    assert!(t2 > t1);
    assert_eq!(fs.load(Oid(0)).unwrap(), (b"root".to_vec(), t1));
    assert_eq!(fs.load(Oid(1)).unwrap(), (b"second".to_vec(), t2));
}

#[test]
fn concurrent_committers_and_readers_keep_the_file_sound() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let fs = Arc::new(FileStorage::open(&path, FileStorageOptions::default()).unwrap());
    commit(&fs, &[(0, Tid::ZERO, b"root")]);
    let writers: Vec<_> = (0..4u64)
        .map(|w| {
            let fs = Arc::clone(&fs);
            thread::spawn(move || {
                let oid = fs.new_oid().unwrap();
                let mut serial = Tid::ZERO;
                for i in 0..25 {
                    let txn = fs
                        .tpc_begin(&TransactionMetaData::default(), BeginOptions::default())
                        .unwrap();
                    fs.store(txn, oid, serial, format!("w{w} i{i}").as_bytes())
                        .unwrap();
                    if i % 5 == 4 {
                        fs.tpc_abort(txn);
                        continue;
                    }
                    fs.tpc_vote(txn).unwrap();
                    serial = fs.tpc_finish(txn, &mut |_| {}).unwrap();
                }
                (oid, serial)
            })
        })
        .collect();
    let reader = {
        let fs = Arc::clone(&fs);
        thread::spawn(move || {
            for _ in 0..2000 {
                let (_, t) = fs.load(Oid(0)).unwrap();
                assert!(t <= fs.last_transaction());
                let _ = fs.iterator(None, None).unwrap().count();
            }
        })
    };
    let results: Vec<_> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    reader.join().unwrap();
    for (oid, serial) in &results {
        assert_eq!(fs.load(*oid).unwrap().1, *serial);
    }
    assert_eq!(fs.history(results[0].0, 100).unwrap().len(), 20);
    fs.close().unwrap();
    let report = check(&path).unwrap();
    assert_eq!(report.transactions, 1 + 4 * 20);
}
