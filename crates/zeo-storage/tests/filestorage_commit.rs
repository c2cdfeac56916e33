//! Commit, read and reopen round trips of FileStorage.

mod common;

use zeo_storage::filestorage::{check, dump, FileStorage, FileStorageOptions};
use zeo_storage::interface::BeginOptions;
use zeo_storage::{Error, Oid, Storage, Tid, TransactionMetaData, TxnStatus};

use common::{commit_as, open};
use zeo_storage::ExternalGc;
use zeo_storage::Iteration;
use zeo_storage::RecordIteration;
use zeo_storage::Undo;

fn meta(user: &str, desc: &str) -> TransactionMetaData {
    TransactionMetaData {
        user: user.into(),
        description: desc.into(),
        extension: Vec::new(),
    }
}

fn commit(fs: &FileStorage, desc: &str, stores: &[(u64, Tid, &[u8])]) -> Tid {
    commit_as(fs, &meta("user", desc), stores)
}

#[test]
fn new_storage_is_empty_and_has_the_magic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let fs = open(&path);
    assert_eq!(fs.size(), 4);
    assert_eq!(fs.len(), 0);
    assert!(fs.is_empty());
    assert_eq!(fs.last_transaction(), Tid::ZERO);
    assert!(matches!(fs.load(Oid(0)), Err(Error::PosKey { .. })));
    assert_eq!(fs.new_oid().unwrap(), Oid(1));
    assert_eq!(fs.new_oid().unwrap(), Oid(2));
    fs.close().unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"FS30");
    assert!(matches!(fs.load(Oid(0)), Err(Error::Closed)));
    let report = check(&path).unwrap();
    assert_eq!(
        (report.transactions, report.data_records, report.size),
        (0, 0, 4)
    );
}

#[test]
fn store_load_history_and_load_before() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let fs = open(&path);
    let t1 = commit(
        &fs,
        "one",
        &[(0, Tid::ZERO, b"root-1"), (1, Tid::ZERO, b"a-1")],
    );
    let t2 = commit(&fs, "two", &[(1, t1, b"a-2")]);
    let t3 = commit(&fs, "three", &[(1, t2, b"a-3"), (0, t1, b"root-2")]);
    assert!(t1 < t2 && t2 < t3);
    assert_eq!(fs.last_transaction(), t3);
    assert_eq!(fs.len(), 2);
    assert_eq!(fs.load(Oid(1)).unwrap(), (b"a-3".to_vec(), t3));
    assert_eq!(fs.get_tid(Oid(0)).unwrap(), t3);
    assert_eq!(fs.load_serial(Oid(1), t2).unwrap(), b"a-2");
    assert!(matches!(
        fs.load_serial(Oid(1), Tid(t2.0 + 1)),
        Err(Error::PosKey {
            serial: Some(_),
            ..
        })
    ));

    let r = fs.load_before(Oid(1), t3).unwrap().unwrap();
    assert_eq!(
        (r.data.as_slice(), r.start, r.end),
        (&b"a-2"[..], t2, Some(t3))
    );
    let r = fs.load_before(Oid(1), t2).unwrap().unwrap();
    assert_eq!(
        (r.data.as_slice(), r.start, r.end),
        (&b"a-1"[..], t1, Some(t2))
    );
    let r = fs.load_before(Oid(1), Tid::MAX).unwrap().unwrap();
    assert_eq!((r.start, r.end), (t3, None));
    assert_eq!(fs.load_before(Oid(1), t1).unwrap(), None);
    assert!(matches!(
        fs.load_before(Oid(9), t3),
        Err(Error::PosKey { .. })
    ));

    let h = fs.history(Oid(1), 10).unwrap();
    assert_eq!(
        h.iter().map(|e| e.tid).collect::<Vec<_>>(),
        vec![t3, t2, t1]
    );
    assert_eq!(h[0].description, b"three");
    assert_eq!(h[0].user, b"user");
    assert_eq!(h[0].size, 3);
    assert!((h[0].time - t3.unix_time()).abs() < 1e-9);
    assert_eq!(fs.history(Oid(1), 2).unwrap().len(), 2);

    // The tail after a commit is exactly the committed size.
    assert_eq!(std::fs::metadata(&path).unwrap().len(), fs.size());
    let report = check(&path).unwrap();
    assert_eq!(
        (report.transactions, report.data_records, report.last_tid),
        (3, 5, t3)
    );
}

#[test]
fn conflicts_and_serial_checks() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(&dir.path().join("Data.fs"));
    let t1 = commit(&fs, "one", &[(0, Tid::ZERO, b"root")]);
    let txn = fs
        .tpc_begin(&meta("", ""), BeginOptions::default())
        .unwrap();
    // New oids are not checked, as in ZODB.
    fs.store(txn, Oid(5), Tid(12345), b"new").unwrap();
    match fs.store(txn, Oid(0), Tid(1), b"x") {
        Err(Error::Conflict {
            oid,
            committed,
            old,
        }) => assert_eq!((oid, committed, old), (Oid(0), t1, Tid(1))),
        other => panic!("{other:?}"),
    }
    match fs.check_current_serial(txn, Oid(0), Tid(7)) {
        Err(Error::ReadConflict { committed, .. }) => assert_eq!(committed, t1),
        other => panic!("{other:?}"),
    }
    fs.check_current_serial(txn, Oid(0), t1).unwrap();
    assert!(matches!(
        fs.check_current_serial(txn, Oid(3), t1),
        Err(Error::PosKey { .. })
    ));
    assert!(matches!(
        fs.store(txn, Oid(0), t1, b""),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        fs.store(zeo_storage::TxnHandle(999), Oid(0), t1, b"x"),
        Err(Error::Transaction(_))
    ));
    assert!(matches!(
        fs.tpc_finish(txn, &mut |_| {}),
        Err(Error::Transaction(_))
    ));
    fs.tpc_vote(txn).unwrap();
    let t2 = fs.tpc_finish(txn, &mut |_| {}).unwrap();
    assert_eq!(fs.load(Oid(5)).unwrap().1, t2);
    // A stored oid raises the new-oid counter.
    assert_eq!(fs.new_oid().unwrap(), Oid(6));
}

#[test]
fn metadata_limits_give_zodb_errors() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(&dir.path().join("Data.fs"));
    let long = TransactionMetaData {
        user: vec![b'u'; 70_000],
        ..Default::default()
    };
    match fs.tpc_begin(&long, BeginOptions::default()) {
        Err(Error::FileStorage(m)) => assert_eq!(m, "user name too long"),
        other => panic!("{other:?}"),
    }
    // The commit lock was not taken.
    let txn = fs
        .tpc_begin(&meta("", ""), BeginOptions::default())
        .unwrap();
    fs.tpc_abort(txn);
}

#[test]
fn on_commit_sees_the_tid_before_readers_do() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(&dir.path().join("Data.fs"));
    let txn = fs
        .tpc_begin(&meta("", ""), BeginOptions::default())
        .unwrap();
    let tid = fs.transaction_tid(txn).unwrap().unwrap();
    fs.store(txn, Oid(0), Tid::ZERO, b"root").unwrap();
    fs.tpc_vote(txn).unwrap();
    let mut seen = None;
    let done = fs
        .tpc_finish(txn, &mut |t| {
            seen = Some(t);
        })
        .unwrap();
    assert_eq!(seen, Some(tid));
    assert_eq!(done, tid);
    assert_eq!(fs.last_transaction(), tid);
}

#[test]
fn abort_after_vote_truncates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let fs = open(&path);
    let t1 = commit(&fs, "one", &[(0, Tid::ZERO, b"root")]);
    let size = fs.size();
    let txn = fs
        .tpc_begin(&meta("", "aborted"), BeginOptions::default())
        .unwrap();
    fs.store(txn, Oid(0), t1, &vec![7u8; 100_000]).unwrap();
    fs.tpc_vote(txn).unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() > size);
    // Readers do not see the voted transaction.
    assert_eq!(fs.load(Oid(0)).unwrap(), (b"root".to_vec(), t1));
    fs.tpc_abort(txn);
    fs.tpc_abort(txn); // ignored
    assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
    assert_eq!(fs.size(), size);
    let t2 = commit(&fs, "two", &[(0, t1, b"root-2")]);
    assert_eq!(fs.load(Oid(0)).unwrap(), (b"root-2".to_vec(), t2));
    check(&path).unwrap();
}

#[test]
fn large_transactions_spill_to_the_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let fs = open(&path);
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let stores: Vec<(u64, Tid, &[u8])> = (0..50u64)
        .map(|i| {
            (
                i,
                Tid::ZERO,
                if i % 10 == 3 { &big[..] } else { &b"small"[..] },
            )
        })
        .collect();
    let t = commit(&fs, "big", &stores);
    for i in 0..50u64 {
        let (data, tid) = fs.load(Oid(i)).unwrap();
        assert_eq!(tid, t);
        assert_eq!(data.len(), if i % 10 == 3 { big.len() } else { 5 });
    }
    assert_eq!(fs.load(Oid(13)).unwrap().0, big);
    check(&path).unwrap();
}

#[test]
fn delete_object_writes_a_no_data_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let fs = open(&path);
    let t1 = commit(
        &fs,
        "one",
        &[(0, Tid::ZERO, b"root"), (1, Tid::ZERO, b"one")],
    );
    let txn = fs
        .tpc_begin(&meta("", "del"), BeginOptions::default())
        .unwrap();
    assert!(matches!(
        fs.delete_object(txn, Oid(1), Tid(3)),
        Err(Error::Conflict { .. })
    ));
    assert!(matches!(
        fs.delete_object(txn, Oid(4), t1),
        Err(Error::PosKey { .. })
    ));
    fs.delete_object(txn, Oid(1), t1).unwrap();
    fs.tpc_vote(txn).unwrap();
    let t2 = fs.tpc_finish(txn, &mut |_| {}).unwrap();
    assert!(matches!(fs.load(Oid(1)), Err(Error::PosKey { .. })));
    assert!(matches!(fs.get_tid(Oid(1)), Err(Error::PosKey { .. })));
    // ZODB's loadBefore: the deleted revision is a POSKeyError, older ones load.
    assert!(matches!(
        fs.load_before(Oid(1), Tid::MAX),
        Err(Error::PosKey { .. })
    ));
    assert_eq!(fs.load_before(Oid(1), t2).unwrap().unwrap().data, b"one");
    assert_eq!(fs.len(), 2);
    let txns: Vec<_> = fs
        .iterator(None, None)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(txns.len(), 2);
    assert_eq!(txns[1].records[0].data, None);
    assert_eq!(txns[1].records[0].data_txn, None);
    // The record's bytes: plen 0 and an 8-byte zero backpointer.
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[bytes.len() - 16..bytes.len() - 8], &[0u8; 8]);
    // Storing over a deleted object checks the deletion's serial.
    assert!(matches!(
        commit_result(&fs, 1, t1),
        Err(Error::Conflict { .. })
    ));
    commit(&fs, "revive", &[(1, t2, b"back")]);
}

fn commit_result(fs: &FileStorage, oid: u64, serial: Tid) -> Result<(), Error> {
    let txn = fs
        .tpc_begin(&meta("", ""), BeginOptions::default())
        .unwrap();
    let r = fs.store(txn, Oid(oid), serial, b"x");
    fs.tpc_abort(txn);
    r
}

#[test]
fn iterator_and_record_iternext() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(&dir.path().join("Data.fs"));
    let mut tids = Vec::new();
    let mut serial = Tid::ZERO;
    for i in 0..20u64 {
        let data = format!("rev {i}");
        let t = commit(
            &fs,
            &format!("t{i}"),
            &[(0, serial, data.as_bytes()), (i + 1, Tid::ZERO, b"x")],
        );
        serial = t;
        tids.push(t);
    }
    let all: Vec<_> = fs
        .iterator(None, None)
        .unwrap()
        .map(|t| t.unwrap().tid)
        .collect();
    assert_eq!(all, tids);
    for (a, b) in [(0usize, 19usize), (3, 7), (17, 19), (0, 0), (10, 10)] {
        let got: Vec<_> = fs
            .iterator(Some(tids[a]), Some(tids[b]))
            .unwrap()
            .map(|t| t.unwrap().tid)
            .collect();
        assert_eq!(got, tids[a..=b].to_vec(), "{a}..={b}");
    }
    let between: Vec<_> = fs
        .iterator(Some(Tid(tids[4].0 + 1)), Some(Tid(tids[6].0 - 1)))
        .unwrap()
        .map(|t| t.unwrap().tid)
        .collect();
    assert_eq!(between, vec![tids[5]]);
    assert_eq!(
        fs.iterator(Some(Tid(tids[19].0 + 1)), None)
            .unwrap()
            .count(),
        0
    );
    let t5 = fs
        .iterator(Some(tids[5]), Some(tids[5]))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(t5.status, TxnStatus::Committed);
    assert_eq!(t5.meta.description, b"t5");
    assert_eq!(t5.records.len(), 2);
    assert_eq!(t5.records[0].data.as_deref(), Some(&b"rev 5"[..]));

    let mut next = None;
    let mut seen = Vec::new();
    while let Some(rec) = fs.record_iternext(next).unwrap() {
        seen.push(rec.oid.0);
        next = rec.next;
        if next.is_none() {
            break;
        }
    }
    assert_eq!(seen, (0..=20).collect::<Vec<u64>>());
    assert_eq!(fs.record_iternext(Some(Oid(100))).unwrap(), None);
}

#[test]
fn reopen_with_and_without_index() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let index = dir.path().join("Data.fs.index");
    let fs = open(&path);
    let mut serials = vec![Tid::ZERO; 300];
    for round in 0..3 {
        let data: Vec<Vec<u8>> = (0..300)
            .map(|i| format!("obj {i} round {round}").into_bytes())
            .collect();
        let stores: Vec<(u64, Tid, &[u8])> = (0..300)
            .map(|i| (i as u64, serials[i], &data[i][..]))
            .collect();
        let t = commit(&fs, "r", &stores);
        serials.iter_mut().for_each(|s| *s = t);
    }
    let last = fs.last_transaction();
    fs.close().unwrap();
    assert!(index.exists());
    let saved_index = std::fs::read(&index).unwrap();

    let fs = open(&path);
    assert_eq!(fs.len(), 300);
    assert_eq!(fs.last_transaction(), last);
    assert_eq!(fs.load(Oid(17)).unwrap().0, b"obj 17 round 2");
    // More commits after the saved index: a reopen with the old index file
    // must scan the tail.
    let t = commit(
        &fs,
        "tail",
        &[(17, last, b"after index"), (400, Tid::ZERO, b"new")],
    );
    drop(fs);
    std::fs::write(&index, &saved_index).unwrap();
    let fs = open(&path);
    assert_eq!(fs.load(Oid(17)).unwrap(), (b"after index".to_vec(), t));
    assert_eq!(fs.load(Oid(400)).unwrap().1, t);
    assert_eq!(fs.new_oid().unwrap(), Oid(401));
    fs.close().unwrap();

    // Without an index, and with a garbage index, the scan rebuilds it.
    for junk in [None, Some(&b"garbage"[..])] {
        match junk {
            None => std::fs::remove_file(&index).unwrap(),
            Some(j) => std::fs::write(&index, j).unwrap(),
        }
        let fs = open(&path);
        assert_eq!(fs.len(), 301);
        assert_eq!(fs.load(Oid(17)).unwrap(), (b"after index".to_vec(), t));
        assert_eq!(fs.last_transaction(), t);
        drop(fs);
        // A rebuilt index is saved right away, as ZODB does.
        assert!(std::fs::read(&index).unwrap().starts_with(&[0x80, 3]));
    }

    // A read-only open works without the lock and writes nothing.
    std::fs::remove_file(&index).unwrap();
    let before = std::fs::read(&path).unwrap();
    let ro = FileStorage::open(
        &path,
        FileStorageOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(ro.is_read_only());
    assert_eq!(ro.load(Oid(400)).unwrap().1, t);
    assert!(matches!(
        ro.tpc_begin(&meta("", ""), BeginOptions::default()),
        Err(Error::ReadOnly)
    ));
    assert!(matches!(ro.new_oid(), Err(Error::ReadOnly)));
    ro.close().unwrap();
    assert!(!index.exists());
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn an_index_that_disagrees_with_the_file_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.fs");
    let b = dir.path().join("b.fs");
    for (p, payload) in [(&a, &b"aaaaaaaaaa"[..]), (&b, &b"bbbbbbbbbbbbbbbbbbbb"[..])] {
        let fs = open(p);
        let mut s = Tid::ZERO;
        for _ in 0..5 {
            s = commit(
                &fs,
                "x",
                &[
                    (0, s, payload),
                    (1, if s == Tid::ZERO { Tid::ZERO } else { s }, payload),
                ],
            );
        }
        fs.close().unwrap();
    }
    // b's index describes another file.
    std::fs::copy(dir.path().join("b.fs.index"), dir.path().join("a.fs.index")).unwrap();
    let fs = open(&a);
    assert_eq!(fs.load(Oid(1)).unwrap().0, b"aaaaaaaaaa");
}

#[test]
fn create_replaces_an_existing_file_and_lock_excludes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let fs = open(&path);
    commit(&fs, "one", &[(0, Tid::ZERO, b"root")]);
    match FileStorage::open(&path, FileStorageOptions::default()) {
        Err(Error::Locked { path: p }) => assert_eq!(p, dir.path().join("Data.fs.lock")),
        other => panic!("{other:?}"),
    }
    let lock = std::fs::read_to_string(dir.path().join("Data.fs.lock")).unwrap();
    assert_eq!(lock, format!(" {}\n", std::process::id()));
    // Read-only opens take no lock.
    let ro = FileStorage::open(
        &path,
        FileStorageOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(ro.len(), 1);
    drop(ro);
    drop(fs);
    let fs = FileStorage::open(
        &path,
        FileStorageOptions {
            create: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(fs.len(), 0);
    assert_eq!(fs.size(), 4);
    drop(fs);
    assert!(matches!(
        FileStorage::open(
            &path,
            FileStorageOptions {
                create: true,
                read_only: true,
                ..Default::default()
            }
        ),
        Err(Error::InvalidArgument(_))
    ));
    assert!(FileStorage::open(
        dir.path().join("missing.fs"),
        FileStorageOptions {
            read_only: true,
            ..Default::default()
        }
    )
    .is_err());
}

#[test]
fn begin_with_tid_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let fs = open(&path);
    let tid = Tid(0x0300_0000_0000_0001);
    let txn = fs
        .tpc_begin(
            &meta("", "p"),
            BeginOptions {
                tid: Some(tid),
                status: TxnStatus::Packed,
            },
        )
        .unwrap();
    assert_eq!(fs.transaction_tid(txn).unwrap().unwrap(), tid);
    fs.store(txn, Oid(0), Tid::ZERO, b"root").unwrap();
    fs.tpc_vote(txn).unwrap();
    assert_eq!(fs.tpc_finish(txn, &mut |_| {}).unwrap(), tid);
    let t = fs.iterator(None, None).unwrap().next().unwrap().unwrap();
    assert_eq!(t.status, TxnStatus::Packed);
    assert!(matches!(
        fs.tpc_begin(
            &meta("", ""),
            BeginOptions {
                tid: Some(tid),
                ..Default::default()
            }
        ),
        Err(Error::InvalidArgument(_))
    ));
    // Packed transactions end the undo log.
    assert!(fs.undo_log(0, -20, None).unwrap().is_empty());
    let t2 = commit(&fs, "later", &[(0, tid, b"root 2")]);
    assert!(t2 > tid);
    assert_eq!(fs.undo_log(0, -20, None).unwrap().len(), 1);
}

#[test]
fn dump_lists_transactions_like_fsdump() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let fs = open(&path);
    let root = b"\x80\x03cpersistent.mapping\nPersistentMapping\nq\x00.\x80\x03}q\x01.";
    let t1 = fs
        .tpc_begin(&meta("alice", "it's"), BeginOptions::default())
        .unwrap();
    let tid = fs.transaction_tid(t1).unwrap().unwrap();
    fs.store(t1, Oid(0), Tid::ZERO, root).unwrap();
    fs.tpc_vote(t1).unwrap();
    fs.tpc_finish(t1, &mut |_| {}).unwrap();
    let mut out = Vec::new();
    dump(&path, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let want = format!(
        "Trans #00000 tid={:016x} size={} time={} offset={}\n    status=' ' user=b'alice' description=b\"it's\"\n  data #00000 oid=0000000000000000 size={} class=persistent.mapping.PersistentMapping\n",
        tid.0,
        23 + 5 + 4 + 42 + root.len(),
        zeo_storage::TimeStamp::from_tid(tid),
        4 + 23 + 5 + 4,
        root.len()
    );
    assert_eq!(text, want);
}
