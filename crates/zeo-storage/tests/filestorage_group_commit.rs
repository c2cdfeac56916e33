//! Group commit in FileStorage: one fsync covers every transaction
//! submitted before it, a failed fsync fails all of them, a check against
//! a pending transaction waits for it, and a power loss in the middle of
//! concurrent commits keeps every acknowledged transaction and nothing
//! half-written (the simulation replays only what was synced, plus any
//! subset of the sectors written since).

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use zeo_storage::filestorage::{check, FaultInjector, FileStorage, FileStorageOptions};
use zeo_storage::interface::BeginOptions;
use zeo_storage::{Error, Iteration, Oid, Storage, Tid, TransactionMetaData, TxnHandle};
use zeo_testkit::{python6, run_python, script};

fn meta(description: &str) -> TransactionMetaData {
    TransactionMetaData {
        description: description.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// Begins, stores and votes; the transaction is ready to finish.
fn voted(fs: &FileStorage, stores: &[(u64, Tid, &[u8])]) -> TxnHandle {
    let txn = fs.tpc_begin(&meta("t"), BeginOptions::default()).unwrap();
    for (oid, serial, data) in stores {
        fs.store(txn, Oid(*oid), *serial, data).unwrap();
    }
    fs.tpc_vote(txn).unwrap();
    txn
}

#[test]
fn one_fsync_covers_every_submitted_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let fs = common::open(&dir.path().join("Data.fs"));
    let before = fs.syncs().unwrap();
    let t1 = voted(&fs, &[(1, Tid::ZERO, b"one")]);
    let s1 = fs.tpc_finish_submit(t1).unwrap();
    // The lock is free: a second transaction is written behind the first.
    let t2 = voted(&fs, &[(2, Tid::ZERO, b"two")]);
    let s2 = fs.tpc_finish_submit(t2).unwrap();
    // Neither is visible before it is durable.
    assert_eq!(fs.last_transaction(), Tid::ZERO);
    assert!(matches!(fs.load(Oid(1)), Err(Error::PosKey { .. })));
    let mut order = Vec::new();
    let tid1 = fs
        .tpc_finish_durable(s1, &mut |tid| order.push(tid))
        .unwrap();
    assert_eq!(fs.syncs().unwrap(), before + 1);
    let tid2 = fs
        .tpc_finish_durable(s2, &mut |tid| order.push(tid))
        .unwrap();
    assert_eq!(
        fs.syncs().unwrap(),
        before + 1,
        "the second needed no fsync"
    );
    assert_eq!(order, [tid1, tid2]);
    assert_eq!((s1.tid, s2.tid), (Some(tid1), Some(tid2)));
    assert!(tid2 > tid1);
    assert_eq!(fs.load(Oid(2)).unwrap(), (b"two".to_vec(), tid2));
    assert_eq!(fs.last_transaction(), tid2);
    drop(fs);
    check(&dir.path().join("Data.fs")).unwrap();
}

#[test]
fn a_failed_fsync_fails_every_transaction_it_covered_and_stops_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let faults = FaultInjector::new();
    let fs = FileStorage::open_with_faults(&path, FileStorageOptions::default(), faults.clone())
        .unwrap();
    let t0 = common::commit_as(&fs, &meta("kept"), &[(1, Tid::ZERO, b"kept")]);
    let size = fs.size();
    let s1 = fs
        .tpc_finish_submit(voted(&fs, &[(1, t0, b"lost 1")]))
        .unwrap();
    let s2 = fs
        .tpc_finish_submit(voted(&fs, &[(2, Tid::ZERO, b"lost 2")]))
        .unwrap();
    faults.fail_next_syncs(1);
    let mut published = Vec::new();
    assert!(fs
        .tpc_finish_durable(s1, &mut |tid| published.push(tid))
        .is_err());
    assert!(fs
        .tpc_finish_durable(s2, &mut |tid| published.push(tid))
        .is_err());
    assert!(published.is_empty(), "a failed transaction was announced");
    // Never retried: writes stay refused though syncs would work again.
    faults.heal();
    assert!(fs.tpc_begin(&meta("x"), BeginOptions::default()).is_err());
    assert_eq!(fs.load(Oid(1)).unwrap(), (b"kept".to_vec(), t0));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
    drop(fs);
    let fs = common::open(&path);
    assert_eq!(fs.last_transaction(), t0);
    assert!(matches!(fs.load(Oid(2)), Err(Error::PosKey { .. })));
    drop(fs);
    check(&path).unwrap();
}

#[test]
fn a_store_on_a_pending_object_conflicts_with_it_once_it_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let fs = Arc::new(common::open(&dir.path().join("Data.fs")));
    let t0 = common::commit_as(&fs, &meta("base"), &[(1, Tid::ZERO, b"base")]);
    let s1 = fs
        .tpc_finish_submit(voted(&fs, &[(1, t0, b"first")]))
        .unwrap();
    // A client can only have read t0: its store conflicts with s1's
    // transaction, and that is checked against s1's record, not t0's.
    let second = {
        let fs = Arc::clone(&fs);
        thread::spawn(move || {
            let txn = fs.tpc_begin(&meta("2"), BeginOptions::default()).unwrap();
            let stored = fs.store(txn, Oid(1), t0, b"second");
            fs.tpc_abort(txn);
            stored
        })
    };
    let tid1 = fs.tpc_finish_durable(s1, &mut |_| {}).unwrap();
    match second.join().unwrap() {
        Err(Error::Conflict { committed, old, .. }) => assert_eq!((committed, old), (tid1, t0)),
        other => panic!("expected a conflict with the pending transaction, got {other:?}"),
    }
}

/// Waits, bounded, until `fs`'s next fsync is gathering.
fn until_gathering(fs: &FileStorage) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !fs.group_commit_gathering() {
        assert!(Instant::now() < deadline, "the fsync never gathered");
        thread::yield_now();
    }
}

#[test]
fn an_fsync_waits_for_the_transactions_said_to_be_coming() {
    let dir = tempfile::tempdir().unwrap();
    let fs = Arc::new(common::open(&dir.path().join("Data.fs")));
    // Long enough that only being told, not the clock, ends the wait.
    fs.set_group_commit_wait(Duration::from_secs(120));
    let before = fs.syncs().unwrap();
    // A server's commit lock: the first transaction holds it, then the
    // second, until both are submitted.
    fs.commits_coming(1);
    let s1 = fs
        .tpc_finish_submit(voted(&fs, &[(1, Tid::ZERO, b"one")]))
        .unwrap();
    let leader = {
        let fs = Arc::clone(&fs);
        thread::spawn(move || fs.tpc_finish_durable(s1, &mut |_| {}))
    };
    until_gathering(&fs);
    let s2 = fs
        .tpc_finish_submit(voted(&fs, &[(2, Tid::ZERO, b"two")]))
        .unwrap();
    let started = Instant::now();
    fs.commits_coming(0);
    let tid1 = leader.join().unwrap().unwrap();
    let tid2 = fs.tpc_finish_durable(s2, &mut |_| {}).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "waited for the clock"
    );
    assert_eq!(fs.syncs().unwrap(), before + 1, "one fsync for both");
    assert!(tid2 > tid1);
    assert_eq!(fs.last_transaction(), tid2);
}

#[test]
fn a_commit_waiting_for_a_pending_object_ends_the_gathering() {
    let dir = tempfile::tempdir().unwrap();
    let fs = Arc::new(common::open(&dir.path().join("Data.fs")));
    fs.set_group_commit_wait(Duration::from_secs(120));
    let t0 = common::commit_as(&fs, &meta("base"), &[(1, Tid::ZERO, b"base")]);
    fs.commits_coming(1);
    let s1 = fs
        .tpc_finish_submit(voted(&fs, &[(1, t0, b"first")]))
        .unwrap();
    let leader = {
        let fs = Arc::clone(&fs);
        thread::spawn(move || fs.tpc_finish_durable(s1, &mut |_| {}))
    };
    until_gathering(&fs);
    // The coming transaction stores on the pending object: it waits for
    // the fsync that was waiting for it, which must stop waiting.
    let started = Instant::now();
    let txn = fs.tpc_begin(&meta("2"), BeginOptions::default()).unwrap();
    let stored = fs.store(txn, Oid(1), t0, b"second");
    fs.tpc_abort(txn);
    fs.commits_coming(0);
    let tid1 = leader.join().unwrap().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "waited for the clock"
    );
    match stored {
        Err(Error::Conflict { committed, old, .. }) => assert_eq!((committed, old), (tid1, t0)),
        other => panic!("expected a conflict with the pending transaction, got {other:?}"),
    }
}

/// A file with one transaction, then those `later` commits on top of its
/// tid, the first of which is flagged `'c'` again (its status flip lost):
/// the directory, the path, where the flagged one starts, the first tid
/// and the file's bytes.
fn flag_after_first(
    later: &dyn Fn(&FileStorage, Tid),
) -> (tempfile::TempDir, std::path::PathBuf, u64, Tid, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let fs = common::open(&path);
    let t0 = common::commit_as(&fs, &meta("first"), &[(1, Tid::ZERO, b"first")]);
    let end = fs.size();
    later(&fs, t0);
    drop(fs);
    std::fs::remove_file(dir.path().join("Data.fs.index")).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[end as usize + 16] = b'c';
    std::fs::write(&path, &bytes).unwrap();
    (dir, path, end, t0, bytes)
}

#[test]
fn an_unsynced_suffix_of_several_transactions_goes_to_a_tr_file() {
    let (dir, path, end, t0, bytes) = flag_after_first(&|fs, t0| {
        common::commit_as(fs, &meta("a"), &[(1, t0, b"a")]);
        common::commit_as(fs, &meta("b"), &[(2, Tid::ZERO, b"b")]);
    });
    let fs = common::open(&path);
    assert_eq!((fs.size(), fs.last_transaction()), (end, t0));
    drop(fs);
    let tr = std::fs::read(dir.path().join("Data.fs.tr0")).unwrap();
    assert_eq!(tr, &bytes[end as usize..]);
    check(&path).unwrap();
}

#[test]
fn a_checkpoint_flag_before_older_transactions_is_still_damage() {
    // Later transactions spread over more than a minute were acknowledged
    // one by one: a flag on the first of them is damage, not a lost suffix.
    let (_dir, path, _, _, bytes) = flag_after_first(&|fs, t0| {
        let mut serial = t0;
        for minutes in [1u64, 3] {
            let at = t0.unix_time() + (minutes * 60) as f64;
            let options = BeginOptions {
                tid: Some(zeo_storage::TimeStamp::from_unix(at).tid()),
                ..Default::default()
            };
            let txn = fs.tpc_begin(&meta("later"), options).unwrap();
            fs.store(txn, Oid(1), serial, b"later").unwrap();
            fs.tpc_vote(txn).unwrap();
            serial = fs.tpc_finish(txn, &mut |_| {}).unwrap();
        }
    });
    assert!(matches!(
        FileStorage::open(&path, FileStorageOptions::default()),
        Err(Error::Format { .. })
    ));
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "the file was touched");
}

/// What a committer was told: committer, sequence, oids, tid.
type Ack = (u64, u64, Vec<u64>, Tid);

/// The record committer `w` writes for `oid` in its `i`th transaction.
fn data_of(w: u64, i: u64, oid: u64) -> Vec<u8> {
    let mut data = format!("w{w} i{i} oid{oid};").into_bytes();
    data.resize(20 + ((w * 131 + i * 71) % 700) as usize, b'.');
    data
}

/// One power loss while `writers` threads commit; returns the crashed
/// file's path.
fn power_loss_round(dir: &Path, seed: u64, writers: u64) -> std::path::PathBuf {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let path = dir.join("Data.fs");
    let faults = FaultInjector::new();
    let fs = Arc::new(
        FileStorage::open_with_faults(&path, FileStorageOptions::default(), faults.clone())
            .unwrap(),
    );
    common::commit_as(&fs, &meta("root"), &[(0, Tid::ZERO, b"root")]);
    faults.record_power_loss(&path).unwrap();
    // A disk slow enough for commits to queue behind one fsync.
    faults.delay_syncs(Duration::from_millis(1));
    let acks: Arc<Mutex<Vec<Ack>>> = Arc::default();
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let (fs, acks) = (Arc::clone(&fs), Arc::clone(&acks));
            thread::spawn(move || {
                let own = 1 + w;
                let mut serial = Tid::ZERO;
                for i in 0..2000u64 {
                    let txn = match fs.tpc_begin(&meta(&format!("w{w} i{i}")), Default::default()) {
                        Ok(txn) => txn,
                        Err(_) => return,
                    };
                    let mut oids = vec![own];
                    if i % 3 == 0 {
                        oids.push(fs.new_oid().unwrap().0 + 1000);
                    }
                    let committed = oids
                        .iter()
                        .try_for_each(|&oid| {
                            let base = if oid == own { serial } else { Tid::ZERO };
                            fs.store(txn, Oid(oid), base, &data_of(w, i, oid))
                        })
                        .and_then(|()| fs.tpc_vote(txn))
                        .and_then(|_| fs.tpc_finish(txn, &mut |_| {}));
                    match committed {
                        Ok(tid) => {
                            serial = tid;
                            acks.lock().unwrap().push((w, i, oids, tid));
                        }
                        Err(_) => {
                            fs.tpc_abort(txn);
                            return;
                        }
                    }
                }
            })
        })
        .collect();
    let want = rng.random_range(5..80);
    let deadline = Instant::now() + Duration::from_secs(20);
    while acks.lock().unwrap().len() < want {
        assert!(Instant::now() < deadline, "the committers made no progress");
        thread::yield_now();
    }
    let image = faults
        .power_cut(&path, &mut |_| rng.random_bool(0.5))
        .unwrap()
        .unwrap();
    for t in threads {
        t.join().unwrap();
    }
    let acked = acks.lock().unwrap().clone();
    assert!(
        writers < 8 || faults.syncs() < acked.len() as u64,
        "no fsync was shared: {} syncs for {} commits",
        faults.syncs(),
        acked.len()
    );
    drop(fs);

    let crashed_dir = dir.join("crashed");
    std::fs::create_dir(&crashed_dir).unwrap();
    let crashed = crashed_dir.join("Data.fs");
    std::fs::write(&crashed, &image).unwrap();
    let fs = FileStorage::open(&crashed, FileStorageOptions::default())
        .unwrap_or_else(|e| panic!("seed {seed}: the crashed file does not open: {e}"));
    // Every acknowledged transaction is there.
    for (w, i, oids, tid) in &acked {
        for &oid in oids {
            assert_eq!(
                fs.load_serial(Oid(oid), *tid).unwrap(),
                data_of(*w, *i, oid),
                "seed {seed}: acknowledged w{w} i{i} lost"
            );
        }
    }
    // Every transaction there is whole.
    let mut seen = 0;
    for txn in fs.iterator(None, None).unwrap() {
        let txn = txn.unwrap();
        let description = String::from_utf8(txn.meta.description.clone()).unwrap();
        if description == "root" {
            continue;
        }
        let (w, i) = description
            .strip_prefix('w')
            .and_then(|d| d.split_once(" i"))
            .map(|(w, i)| (w.parse::<u64>().unwrap(), i.parse::<u64>().unwrap()))
            .unwrap();
        let expected = if i % 3 == 0 { 2 } else { 1 };
        assert_eq!(txn.records.len(), expected, "seed {seed}: {description}");
        for r in &txn.records {
            assert_eq!(r.data.as_deref(), Some(&data_of(w, i, r.oid.0)[..]));
        }
        seen += 1;
    }
    assert!(seen >= acked.len(), "seed {seed}");
    drop(fs);
    check(&crashed).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    crashed
}

#[test]
fn a_power_loss_keeps_every_acknowledged_transaction_and_no_half() {
    let seeds: u64 = std::env::var("ZEO_POWER_LOSS_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let mut last = None;
    for seed in 0..seeds {
        let dir = tempfile::tempdir().unwrap();
        let writers = [8, 1, 4][seed as usize % 3];
        power_loss_round(dir.path(), seed, writers);
        last = Some(dir);
    }
    // Python's fstest agrees with the last crashed file.
    let dir = last.unwrap();
    let crashed = dir.path().join("crashed").join("Data.fs");
    std::fs::remove_file(dir.path().join("crashed").join("Data.fs.index")).ok();
    let out = run_python(
        &python6(),
        &script("check_file.py"),
        &[crashed.as_os_str()],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "fstest: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("no errors detected"));
}
