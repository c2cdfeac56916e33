//! Undo, undo log and restore on FileStorage, checked against the records
//! ZODB writes for the same operations.

mod common;

use std::path::Path;

use zeo_storage::filestorage::{check, FileStorage};
use zeo_storage::interface::BeginOptions;
use zeo_storage::{Error, Oid, Storage, Tid, TransactionMetaData, UndoEntry};

use common::{commit_as, open};
use zeo_storage::Iteration;
use zeo_storage::Restore;
use zeo_storage::Undo;

fn meta(desc: &str) -> TransactionMetaData {
    TransactionMetaData {
        user: b"bob".to_vec(),
        description: desc.into(),
        extension: Vec::new(),
    }
}

fn commit(fs: &FileStorage, desc: &str, stores: &[(u64, Tid, &[u8])]) -> Tid {
    commit_as(fs, &meta(desc), stores)
}

fn undo(fs: &FileStorage, ids: &[&[u8]]) -> Result<(Tid, Vec<Oid>), Error> {
    let txn = fs
        .tpc_begin(&meta("undo"), BeginOptions::default())
        .unwrap();
    let mut oids = Vec::new();
    for id in ids {
        match fs.undo(txn, id) {
            Ok(o) => oids.extend(o),
            Err(e) => {
                fs.tpc_abort(txn);
                return Err(e);
            }
        }
    }
    fs.tpc_vote(txn).unwrap();
    Ok((fs.tpc_finish(txn, &mut |_| {}).unwrap(), oids))
}

fn id_of(fs: &FileStorage, tid: Tid) -> Vec<u8> {
    fs.undo_log(0, -1000, None)
        .unwrap()
        .into_iter()
        .find(|e| e.tid == tid)
        .unwrap()
        .id
}

/// (oid, prev, plen, back) of each record in the last transaction.
fn last_records(path: &Path) -> Vec<(u64, u64, u64, u64)> {
    let b = std::fs::read(path).unwrap();
    let n = b.len();
    let tlen = u64::from_be_bytes(b[n - 8..].try_into().unwrap()) as usize;
    let tpos = n - 8 - tlen;
    let hl = 23
        + u16::from_be_bytes([b[tpos + 17], b[tpos + 18]]) as usize
        + u16::from_be_bytes([b[tpos + 19], b[tpos + 20]]) as usize
        + u16::from_be_bytes([b[tpos + 21], b[tpos + 22]]) as usize;
    let mut pos = tpos + hl;
    let mut out = Vec::new();
    let u = |at: usize| u64::from_be_bytes(b[at..at + 8].try_into().unwrap());
    while pos < tpos + tlen {
        let plen = u(pos + 34);
        let back = if plen == 0 { u(pos + 42) } else { 0 };
        assert_eq!(u(pos + 24) as usize, tpos);
        out.push((u(pos), u(pos + 16), plen, back));
        pos += 42 + if plen == 0 { 8 } else { plen as usize };
    }
    out
}

#[test]
fn undo_log_lists_newest_first_with_zodb_ids() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(&dir.path().join("Data.fs"));
    let mut tids = Vec::new();
    let mut s = Tid::ZERO;
    for i in 0..30 {
        s = commit(&fs, &format!("t{i}"), &[(0, s, format!("r{i}").as_bytes())]);
        tids.push(s);
    }
    let log = fs.undo_log(0, -20, None).unwrap();
    assert_eq!(log.len(), 20);
    assert_eq!(log[0].tid, tids[29]);
    assert_eq!(log[0].description, b"t29");
    assert_eq!(log[0].user, b"bob");
    assert_eq!(log[0].id.len(), 12);
    assert!(log[0].id.ends_with(b"="));
    assert!((log[0].time - tids[29].unix_time()).abs() < 1e-9);
    assert_eq!(log[0].size, 23 + 3 + 3 + 42 + 3);
    let slice = fs.undo_log(5, 8, None).unwrap();
    assert_eq!(
        slice.iter().map(|e| e.tid).collect::<Vec<_>>(),
        vec![tids[24], tids[23], tids[22]]
    );
    let all = fs.undo_log(0, -100, None).unwrap();
    assert_eq!(all.len(), 30);
    let even = |e: &UndoEntry| e.description.last().is_some_and(|c| (c - b'0') % 2 == 0);
    let filtered = fs.undo_log(1, -3, Some(&even)).unwrap();
    assert_eq!(
        filtered
            .iter()
            .map(|e| e.description.clone())
            .collect::<Vec<_>>(),
        vec![b"t26".to_vec(), b"t24".to_vec(), b"t22".to_vec()]
    );
}

#[test]
fn undo_writes_backpointers_and_creation_undone_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let fs = open(&path);
    let t_init = commit(&fs, "init", &[(0, Tid::ZERO, b"root 0")]);
    let t_add_a = commit(
        &fs,
        "add a",
        &[(0, t_init, b"root with a"), (1, Tid::ZERO, b"a 1")],
    );
    let t_mod_a = commit(&fs, "modify a", &[(1, t_add_a, b"a 2")]);

    // Undo "modify a": a backpointer to the "add a" record.
    let (t_undo1, oids) = undo(&fs, &[&id_of(&fs, t_mod_a)]).unwrap();
    assert_eq!(oids, vec![Oid(1)]);
    assert_eq!(fs.load(Oid(1)).unwrap(), (b"a 1".to_vec(), t_undo1));
    let recs = last_records(&path);
    assert_eq!(recs.len(), 1);
    let (oid, prev, plen, back) = recs[0];
    assert_eq!((oid, plen), (1, 0));
    assert!(prev > back && back > 0);
    assert_eq!(fs.load_serial(Oid(1), t_undo1).unwrap(), b"a 1");
    let rec = fs
        .iterator(Some(t_undo1), None)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(rec.records[0].data_txn, Some(t_add_a));
    assert_eq!(rec.records[0].data.as_deref(), Some(&b"a 1"[..]));
    let h = fs.history(Oid(1), 10).unwrap();
    assert_eq!(
        h.iter().map(|e| (e.tid, e.size)).collect::<Vec<_>>(),
        vec![(t_undo1, 0), (t_mod_a, 3), (t_add_a, 3)]
    );

    // Undo "add a": a is now as "add a" left it, so its creation can be
    // undone (no data) and the root goes back by backpointer.
    let (t_undo2, mut oids) = undo(&fs, &[&id_of(&fs, t_add_a)]).unwrap();
    oids.sort();
    assert_eq!(oids, vec![Oid(0), Oid(1)]);
    let recs = last_records(&path);
    assert_eq!(recs[0].0, 0);
    assert_eq!(recs[0].2, 0);
    assert!(recs[0].3 > 0, "root backpointer");
    assert_eq!((recs[1].0, recs[1].2, recs[1].3), (1, 0, 0));
    assert_eq!(fs.load(Oid(0)).unwrap(), (b"root 0".to_vec(), t_undo2));
    assert!(matches!(fs.load(Oid(1)), Err(Error::PosKey { .. })));
    let rec = fs
        .iterator(Some(t_undo2), None)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(rec.records[1].data, None);
    assert_eq!(rec.records[0].data_txn, Some(t_init));

    // Undoing the undo brings it back (a redo).
    let (t_redo, _) = undo(&fs, &[&id_of(&fs, t_undo2)]).unwrap();
    assert_eq!(fs.load(Oid(1)).unwrap(), (b"a 1".to_vec(), t_redo));
    assert_eq!(fs.load(Oid(0)).unwrap().0, b"root with a");
    drop(fs);
    check(&path).unwrap();
}

#[test]
fn undo_refuses_when_later_transactions_changed_the_object() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let fs = open(&path);
    let t1 = commit(
        &fs,
        "add",
        &[(0, Tid::ZERO, b"root"), (1, Tid::ZERO, b"v1")],
    );
    let t2 = commit(&fs, "mod 1", &[(1, t1, b"v2")]);
    let t3 = commit(&fs, "mod 2", &[(1, t2, b"v3")]);
    let size = fs.size();
    match undo(&fs, &[&id_of(&fs, t2)]) {
        Err(Error::Undo { reason, oid }) => {
            assert_eq!(oid, Some(Oid(1)));
            assert!(
                reason.contains("modified by a later transaction"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
    match undo(&fs, &[&id_of(&fs, t1)]) {
        Err(Error::Undo { reason, .. }) => {
            assert!(reason.contains("Can't undo an add transaction"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fs.size(), size);
    // A later change back to identical bytes does not block the undo.
    let t4 = commit(&fs, "same as v2", &[(1, t3, b"v2")]);
    let (t5, _) = undo(&fs, &[&id_of(&fs, t2)]).unwrap();
    assert_eq!(fs.load(Oid(1)).unwrap(), (b"v1".to_vec(), t5));
    assert!(t4 < t5);
    // Bad ids.
    assert!(matches!(
        undo(&fs, &[b"not base64!"]),
        Err(Error::Undo { .. })
    ));
    assert!(matches!(
        undo(&fs, &[b"AAAAAAAAAAA="]),
        Err(Error::Undo { .. })
    ));
}

#[test]
fn several_undos_in_one_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let fs = open(&path);
    let t1 = commit(&fs, "a", &[(0, Tid::ZERO, b"r1")]);
    let t2 = commit(&fs, "b", &[(0, t1, b"r2")]);
    let t3 = commit(&fs, "c", &[(0, t2, b"r3")]);
    // Undo t3 then t2 in one transaction: the second sees the first's
    // staged record and finds the state identical.
    let (t4, oids) = undo(&fs, &[&id_of(&fs, t3), &id_of(&fs, t2)]).unwrap();
    assert_eq!(oids, vec![Oid(0), Oid(0)]);
    assert_eq!(fs.load(Oid(0)).unwrap(), (b"r1".to_vec(), t4));
    let recs = last_records(&path);
    assert_eq!(recs.len(), 2);
    drop(fs);
    check(&path).unwrap();
}

#[test]
fn restore_copies_records_and_points_back_to_identical_data() {
    let dir = tempfile::tempdir().unwrap();
    let src_path = dir.path().join("src.fs");
    let dst_path = dir.path().join("dst.fs");
    let src = open(&src_path);
    commit(&src, "root", &[(0, Tid::ZERO, b"root")]);
    let t1 = commit(&src, "a", &[(1, Tid::ZERO, b"one")]);
    let t2 = commit(&src, "b", &[(1, t1, b"two")]);
    undo(&src, &[&id_of(&src, t2)]).unwrap();
    // "one" is current again, so even the creation can be undone.
    undo(&src, &[&id_of(&src, t1)]).unwrap();
    let dst = open(&dst_path);
    for t in src.iterator(None, None).unwrap() {
        let t = t.unwrap();
        let txn = dst
            .tpc_begin(
                &t.meta,
                BeginOptions {
                    tid: Some(t.tid),
                    status: t.status,
                },
            )
            .unwrap();
        for r in &t.records {
            dst.restore(txn, r.oid, r.tid, r.data.as_deref(), r.data_txn)
                .unwrap();
        }
        dst.tpc_vote(txn).unwrap();
        dst.tpc_finish(txn, &mut |_| {}).unwrap();
    }
    assert_eq!(dst.last_transaction(), src.last_transaction());
    assert_eq!(dst.load(Oid(0)).unwrap(), src.load(Oid(0)).unwrap());
    assert!(matches!(dst.load(Oid(1)), Err(Error::PosKey { .. })));
    let a: Vec<_> = src
        .iterator(None, None)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let b: Vec<_> = dst
        .iterator(None, None)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(a, b);
    // The undo record was restored as a backpointer, so the files match.
    drop(src);
    drop(dst);
    assert_eq!(
        std::fs::read(&src_path).unwrap(),
        std::fs::read(&dst_path).unwrap()
    );

    // data None writes a no-data record; an unknown prev_txn is a hint only.
    let dst = open(&dst_path);
    let txn = dst.tpc_begin(&meta("r"), BeginOptions::default()).unwrap();
    let tid = dst.transaction_tid(txn).unwrap().unwrap();
    dst.restore(txn, Oid(1), tid, None, None).unwrap();
    dst.restore(txn, Oid(7), tid, Some(b"seven"), Some(Tid(12345)))
        .unwrap();
    dst.tpc_vote(txn).unwrap();
    dst.tpc_finish(txn, &mut |_| {}).unwrap();
    assert!(matches!(dst.load(Oid(1)), Err(Error::PosKey { .. })));
    assert_eq!(dst.load(Oid(7)).unwrap(), (b"seven".to_vec(), tid));
    assert_eq!(dst.new_oid().unwrap(), Oid(8));
}
