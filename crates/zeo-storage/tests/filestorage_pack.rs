//! Pack of FileStorage: what survives, what goes, how the file is rewritten
//! and switched while readers and committers carry on.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use zeo_pickle::Value;
use zeo_storage::filestorage::{check, FileStorage, FileStorageOptions};
use zeo_storage::interface::BeginOptions;
use zeo_storage::{
    Error, Oid, Storage, Tid, TimeStamp, TransactionMetaData, TransactionRecord, TxnStatus,
};

/// Transactions are committed at whole seconds from here, so that pack
/// times can fall exactly between them.
const BASE: f64 = 1_700_000_000.0;

fn at(secs: f64) -> Tid {
    TimeStamp::from_unix(BASE + secs).tid()
}

fn meta(desc: &str) -> TransactionMetaData {
    TransactionMetaData {
        user: b"tester".to_vec(),
        description: desc.as_bytes().to_vec(),
        extension: Vec::new(),
    }
}

fn open(path: &Path) -> FileStorage {
    FileStorage::open(path, FileStorageOptions::default()).unwrap()
}

/// A PersistentMapping-like record holding a tag and references.
fn rec(tag: &str, refs: &[u64]) -> Vec<u8> {
    let class = Value::global("persistent.mapping", "PersistentMapping");
    let refs = refs
        .iter()
        .map(|o| Value::persistent_ref(*o, Some(class.clone())))
        .collect();
    let state = Value::Dict(vec![
        (Value::str("tag"), Value::str(tag)),
        (Value::str("refs"), Value::List(refs)),
    ]);
    zeo_pickle::encode_record(&class, &state).unwrap()
}

/// Commits `stores` (oid, data) at `secs`, each against the object's
/// current serial.
fn commit_at(fs: &FileStorage, secs: f64, desc: &str, stores: &[(u64, Vec<u8>)]) -> Tid {
    let options = BeginOptions {
        tid: Some(at(secs)),
        ..BeginOptions::default()
    };
    commit_with(fs, options, desc, stores)
}

fn commit_now(fs: &FileStorage, desc: &str, stores: &[(u64, Vec<u8>)]) -> Tid {
    commit_with(fs, BeginOptions::default(), desc, stores)
}

fn commit_with(
    fs: &FileStorage,
    options: BeginOptions,
    desc: &str,
    stores: &[(u64, Vec<u8>)],
) -> Tid {
    let txn = fs.tpc_begin(&meta(desc), options).unwrap();
    for (oid, data) in stores {
        let serial = fs.get_tid(Oid(*oid)).unwrap_or(Tid::ZERO);
        fs.store(txn, Oid(*oid), serial, data).unwrap();
    }
    fs.tpc_vote(txn).unwrap();
    fs.tpc_finish(txn, &mut |_| {}).unwrap()
}

fn undo_at(fs: &FileStorage, secs: f64, tid: Tid) -> Tid {
    let id = fs
        .undo_log(0, 100, None)
        .unwrap()
        .into_iter()
        .find(|e| e.tid == tid)
        .unwrap()
        .id;
    let options = BeginOptions {
        tid: Some(at(secs)),
        ..BeginOptions::default()
    };
    let txn = fs.tpc_begin(&meta("undo"), options).unwrap();
    fs.undo(txn, &id).unwrap();
    fs.tpc_vote(txn).unwrap();
    fs.tpc_finish(txn, &mut |_| {}).unwrap()
}

fn transactions(fs: &FileStorage) -> Vec<TransactionRecord> {
    fs.iterator(None, None)
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// root → 1; 2 unreachable from the start; 1 changes three times.
fn history(fs: &FileStorage) -> [Tid; 4] {
    let t1 = commit_at(
        fs,
        1.0,
        "create",
        &[
            (0, rec("root", &[1])),
            (1, rec("a1", &[])),
            (2, rec("garbage", &[])),
        ],
    );
    let t2 = commit_at(fs, 2.0, "a2", &[(1, rec("a2", &[]))]);
    let t3 = commit_at(fs, 3.0, "a3", &[(1, rec("a3", &[]))]);
    let t4 = commit_at(fs, 4.0, "a4", &[(1, rec("a4", &[]))]);
    [t1, t2, t3, t4]
}

#[test]
fn old_revisions_go_current_ones_stay_byte_identical() {
    for gc in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("Data.fs");
        let fs = open(&path);
        let [t1, t2, t3, t4] = history(&fs);
        let before = std::fs::read(&path).unwrap();

        fs.pack(BASE + 2.5, gc).unwrap();

        // The pre-pack file is kept as it was.
        assert_eq!(std::fs::read(sibling(&path, ".old")).unwrap(), before);
        assert!(!sibling(&path, ".pack").exists());
        assert!(std::fs::metadata(&path).unwrap().len() < before.len() as u64);
        check(&path).unwrap();

        // The revision current at the pack time and the later ones stay.
        assert_eq!(fs.load(Oid(1)).unwrap(), (rec("a4", &[]), t4));
        assert_eq!(fs.load_serial(Oid(1), t2).unwrap(), rec("a2", &[]));
        assert_eq!(fs.load_serial(Oid(1), t3).unwrap(), rec("a3", &[]));
        let r = fs.load_before(Oid(1), t3).unwrap().unwrap();
        assert_eq!((r.data, r.start, r.end), (rec("a2", &[]), t2, Some(t3)));
        // The older one is gone, as in ZODB: loadBefore finds nothing.
        assert_eq!(fs.load_before(Oid(1), t2).unwrap(), None);
        assert!(matches!(
            fs.load_serial(Oid(1), t1),
            Err(Error::PosKey { .. })
        ));
        assert_eq!(fs.history(Oid(1), 10).unwrap().len(), 3);
        assert_eq!(fs.load(Oid(0)).unwrap(), (rec("root", &[1]), t1));

        // Unreachable objects go with GC only.
        if gc {
            assert!(matches!(fs.load(Oid(2)), Err(Error::PosKey { .. })));
            assert_eq!(fs.len(), 2);
        } else {
            assert_eq!(fs.load(Oid(2)).unwrap(), (rec("garbage", &[]), t1));
            assert_eq!(fs.len(), 3);
        }

        let txns = transactions(&fs);
        let listing: Vec<_> = txns
            .iter()
            .map(|t| (t.tid, t.status, t.records.len()))
            .collect();
        let first_len = if gc { 1 } else { 2 };
        assert_eq!(
            listing,
            vec![
                (t1, TxnStatus::Packed, first_len),
                (t2, TxnStatus::Packed, 1),
                (t3, TxnStatus::Committed, 1),
                (t4, TxnStatus::Committed, 1)
            ]
        );
        // Transactions before the pack time cannot be undone any more.
        let undoable: Vec<Tid> = fs
            .undo_log(0, 100, None)
            .unwrap()
            .iter()
            .map(|e| e.tid)
            .collect();
        assert_eq!(undoable, vec![t4, t3]);

        // Commits go on in the new file.
        let t5 = commit_now(&fs, "after pack", &[(1, rec("a5", &[]))]);
        let r = fs.load_before(Oid(1), t5).unwrap().unwrap();
        assert_eq!((r.data, r.start, r.end), (rec("a4", &[]), t4, Some(t5)));
        check(&path).unwrap();
        let expected: Vec<_> = transactions(&fs);
        fs.close().unwrap();

        // Reopen with the index written by pack and close, then without.
        for with_index in [true, false] {
            if !with_index {
                std::fs::remove_file(sibling(&path, ".index")).unwrap();
            }
            let fs = open(&path);
            assert_eq!(transactions(&fs), expected);
            assert_eq!(fs.load(Oid(1)).unwrap(), (rec("a5", &[]), t5));
            assert_eq!(fs.load_serial(Oid(1), t2).unwrap(), rec("a2", &[]));
            assert_eq!(fs.len(), if gc { 2 } else { 3 });
            fs.close().unwrap();
        }
    }
}

#[test]
fn the_index_saved_by_pack_matches_the_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let fs = open(&path);
    history(&fs);
    fs.pack(BASE + 2.5, true).unwrap();
    // Keep the storage open (no close-time save): the pack's own index
    // must describe the packed file.
    let saved = std::fs::read(sibling(&path, ".index")).unwrap();
    let fresh_dir = tempfile::tempdir().unwrap();
    let copy = fresh_dir.path().join("Data.fs");
    std::fs::copy(&path, &copy).unwrap();
    let other = open(&copy); // scans and writes an index from scratch
    other.close().unwrap();
    assert_eq!(std::fs::read(sibling(&copy, ".index")).unwrap(), saved);
    drop(fs);
}

#[test]
fn backpointers_are_resolved_and_reaimed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let fs = open(&path);
    let t1 = commit_at(
        &fs,
        1.0,
        "create",
        &[(0, rec("root", &[1])), (1, rec("a1", &[]))],
    );
    let t2 = commit_at(
        &fs,
        2.0,
        "change",
        &[
            (1, rec("a2", &[])),
            (0, rec("root", &[1, 3])),
            (3, rec("c", &[])),
        ],
    );
    // Undo before the pack time: a backpointer to t1's record of 1 and of
    // 0, and a "no data" record for 3, whose creation is undone.
    let t3 = undo_at(&fs, 3.0, t2);
    let t4 = commit_at(&fs, 4.0, "a4", &[(1, rec("a4", &[]))]);
    // Undo after the pack time: its backpointer names t3's record of 1.
    let t5 = undo_at(&fs, 5.0, t4);
    assert_eq!(fs.load(Oid(1)).unwrap(), (rec("a1", &[]), t5));
    assert!(matches!(fs.load(Oid(3)), Err(Error::PosKey { .. })));

    fs.pack(BASE + 3.5, true).unwrap();
    check(&path).unwrap();
    let txns = transactions(&fs);
    let listing: Vec<_> = txns.iter().map(|t| (t.tid, t.status)).collect();
    // Nothing in t1 or t2 is current at 3.5: t3's backpointers to t1 are
    // resolved into t3 itself, and the "no data" record of 3 goes.
    assert_eq!(
        listing,
        vec![
            (t3, TxnStatus::Packed),
            (t4, TxnStatus::Committed),
            (t5, TxnStatus::Committed)
        ]
    );
    // Packed records have their data inline.
    for r in &txns[0].records {
        assert_eq!(r.data_txn, None, "{r:?}");
        assert!(r.data.is_some());
    }
    // The undo after the pack time still points at t3's copy of 1.
    let r5 = &txns[2].records[0];
    assert_eq!(
        (r5.oid, r5.data_txn, r5.data.as_deref()),
        (Oid(1), Some(t3), Some(&rec("a1", &[])[..]))
    );
    assert_eq!(fs.load(Oid(1)).unwrap(), (rec("a1", &[]), t5));
    assert_eq!(fs.load(Oid(0)).unwrap(), (rec("root", &[1]), t3));
    assert!(fs.load_before(Oid(1), t3).unwrap().is_none());
    assert!(matches!(
        fs.load_serial(Oid(1), t1),
        Err(Error::PosKey { .. })
    ));

    // A fresh scan of the packed file agrees.
    fs.close().unwrap();
    let fs = FileStorage::open(
        &path,
        FileStorageOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(transactions(&fs), txns);
}

#[test]
fn an_undo_after_the_pack_time_keeps_the_old_revision_it_restores() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let fs = open(&path);
    // An obsolete revision of the root, so that the pack frees something.
    commit_at(&fs, 0.5, "first root", &[(0, rec("root", &[]))]);
    let t1 = commit_at(
        &fs,
        1.0,
        "create",
        &[
            (0, rec("root", &[1])),
            (1, rec("a1", &[2])),
            (2, rec("b", &[])),
        ],
    );
    // 2 becomes garbage at t2, but t1's revision of 1 refers to it.
    let t2 = commit_at(&fs, 2.0, "drop b", &[(1, rec("a2", &[]))]);
    let t3 = undo_at(&fs, 3.0, t2);
    fs.pack(BASE + 2.5, true).unwrap();
    check(&path).unwrap();
    let listing: Vec<_> = transactions(&fs)
        .iter()
        .map(|t| (t.tid, t.status, t.records.len()))
        .collect();
    assert_eq!(
        listing,
        vec![
            (t1, TxnStatus::Packed, 3),
            (t2, TxnStatus::Packed, 1),
            (t3, TxnStatus::Committed, 1)
        ]
    );
    assert_eq!(fs.load(Oid(1)).unwrap(), (rec("a1", &[2]), t3));
    assert_eq!(fs.load(Oid(2)).unwrap(), (rec("b", &[]), t1));
}

#[test]
fn gc_failures_are_key_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let fs = open(&path);
    // No root object at all.
    commit_at(&fs, 1.0, "no root", &[(1, rec("a", &[]))]);
    commit_at(&fs, 2.0, "more", &[(1, rec("a2", &[]))]);
    let before = std::fs::read(&path).unwrap();
    assert!(matches!(fs.pack(BASE + 3.0, true), Err(Error::Key(_))));
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert!(!sibling(&path, ".pack").exists());
    // Without GC the same pack works.
    fs.pack(BASE + 3.0, false).unwrap();
    assert_eq!(fs.load(Oid(1)).unwrap().0, rec("a2", &[]));

    // A root referring to an object that does not exist.
    commit_at(&fs, 4.0, "dangling", &[(0, rec("root", &[7]))]);
    commit_at(&fs, 5.0, "more", &[(0, rec("root", &[1, 7]))]);
    assert!(matches!(fs.pack(BASE + 6.0, true), Err(Error::Key(_))));
    check(&path).unwrap();
}

#[test]
fn packs_that_free_nothing_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let fs = open(&path);

    // An empty storage.
    fs.pack(BASE + 10.0, true).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"FS30");

    history(&fs);
    let before = std::fs::read(&path).unwrap();
    // Before the first transaction.
    fs.pack(BASE + 0.5, true).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert!(!sibling(&path, ".old").exists());
    // Only t1 before the pack time, and everything in it is current.
    commit_at(&fs, 5.0, "x", &[(3, rec("x", &[]))]);
    let before = std::fs::read(&path).unwrap();
    fs.pack(BASE + 1.5, false).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert!(transactions(&fs)
        .iter()
        .all(|t| t.status == TxnStatus::Committed));

    // A real pack, then the same pack again: redundant.
    fs.pack(BASE + 3.5, true).unwrap();
    let packed = std::fs::read(&path).unwrap();
    assert!(packed.len() < before.len());
    fs.pack(BASE + 3.5, true).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), packed);
    // The next pack removed the previous Data.fs.old.
    assert!(!sibling(&path, ".old").exists());
}

#[test]
fn invalid_pack_time_and_read_only_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let fs = open(&path);
    history(&fs);
    // 1900-01-01T00:00:00Z encodes as tid 0.
    let e = fs.pack(-2_208_988_800.0, true).unwrap_err();
    assert!(
        matches!(&e, Error::FileStorage(m) if m == "Invalid pack time"),
        "{e}"
    );
    fs.close().unwrap();
    let ro = FileStorage::open(
        &path,
        FileStorageOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(matches!(ro.pack(BASE + 2.5, true), Err(Error::ReadOnly)));
    assert!(matches!(fs.pack(BASE + 2.5, true), Err(Error::Closed)));
}

#[test]
fn readers_of_the_old_file_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let fs = open(&path);
    let tids = history(&fs);
    let mut it = fs.iterator(None, None).unwrap();
    assert_eq!(it.next().unwrap().unwrap().tid, tids[0]);
    fs.pack(BASE + 3.5, true).unwrap();
    // The iterator began on the old file and sees it to its end.
    let rest: Vec<Tid> = it.map(|t| t.unwrap().tid).collect();
    assert_eq!(rest, tids[1..].to_vec());
    let now: Vec<Tid> = transactions(&fs).iter().map(|t| t.tid).collect();
    assert_eq!(now, vec![tids[0], tids[2], tids[3]]);
}

#[test]
fn pack_default_gc_follows_the_open_option() {
    for pack_gc in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("Data.fs");
        let fs = FileStorage::open(
            &path,
            FileStorageOptions {
                pack_gc,
                ..Default::default()
            },
        )
        .unwrap();
        history(&fs);
        fs.pack_default_gc(BASE + 2.5).unwrap();
        assert_eq!(fs.load(Oid(2)).is_ok(), !pack_gc);
    }
}

#[test]
fn commits_from_another_thread_during_a_pack_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let fs = Arc::new(open(&path));
    // A file big enough for the pack to take a while: many revisions of
    // many objects, most of them obsolete at the pack time.
    let objects = 200u64;
    let root_refs: Vec<u64> = (1..=objects).collect();
    commit_at(&fs, 1.0, "root", &[(0, rec("root", &root_refs))]);
    let mut secs = 2.0;
    for round in 0..40 {
        let stores: Vec<(u64, Vec<u8>)> = (1..=objects)
            .map(|o| (o, rec(&format!("{o}-{round}-{}", "x".repeat(400)), &[])))
            .collect();
        commit_at(&fs, secs, "round", &stores);
        secs += 1.0;
    }
    let pack_time = BASE + secs - 0.5;

    let stop = Arc::new(AtomicBool::new(false));
    let committer = {
        let fs = Arc::clone(&fs);
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut done = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Acquire) {
                let oid = 1 + n % objects;
                let data = rec(&format!("late-{n}"), &[]);
                let tid = commit_now(&fs, "late", &[(oid, data.clone())]);
                done.push((Instant::now(), oid, tid, data));
                n += 1;
            }
            done
        })
    };
    // Let the committer get going, then pack while it runs.
    while fs.last_transaction() < at(secs) {
        std::thread::yield_now();
    }
    let started = Instant::now();
    fs.pack(pack_time, true).unwrap();
    let ended = Instant::now();
    // A few commits after the switch too.
    // allow-sleep: not yet on a paused clock or an awaited event
    std::thread::sleep(std::time::Duration::from_millis(20));
    stop.store(true, Ordering::Release);
    let done = committer.join().unwrap();

    let during = done
        .iter()
        .filter(|(t, ..)| *t > started && *t < ended)
        .count();
    eprintln!(
        "pack took {:?}; {during} of {} commits finished meanwhile",
        ended - started,
        done.len()
    );
    assert!(during > 0, "no commit finished while the pack ran");
    check(&path).unwrap();
    let present: std::collections::HashSet<Tid> = transactions(&fs).iter().map(|t| t.tid).collect();
    for (_, oid, tid, data) in &done {
        assert!(present.contains(tid), "transaction {tid} lost");
        assert_eq!(fs.load_serial(Oid(*oid), *tid).unwrap(), *data);
    }
    // Each object's last late revision is current.
    let mut last = std::collections::HashMap::new();
    for (_, oid, tid, data) in &done {
        last.insert(*oid, (data.clone(), *tid));
    }
    for (oid, expected) in last {
        assert_eq!(fs.load(Oid(oid)).unwrap(), expected);
    }
    fs.close().unwrap();
    let fs = open(&path);
    assert_eq!(transactions(&fs).len(), present.len());
}
