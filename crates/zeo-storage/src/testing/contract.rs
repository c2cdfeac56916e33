//! The contract every backend meets, whatever it stores and however: the
//! reads, two-phase commit, conflicts, and each capability it declares.

use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use super::{
    b64, commit, commit_with, external_gc_of, iteration_of, meta, oid, record, record_iteration_of,
    undo, undo_of, Check, Fixture,
};
use crate::{BeginOptions, BlobData, BlobSource, Error, Oid, Storage, Tid, TimeStamp, TxnStatus};

/// New oids are never 0 (the root), never repeat, and increase.
pub fn new_oids_are_fresh<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
    let s = make();
    let mut last = Oid::ZERO;
    for _ in 0..100 {
        let next = s.new_oid().unwrap();
        assert!(next > last, "new_oid gave {next} after {last}");
        last = next;
    }
}

/// Finishing in two halves commits as finishing in one does, running the
/// callback once with the tid the second half returns.
pub fn finish_in_two_halves<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
    let s = make();
    let data = record(&[], b"halves");
    let t = s
        .tpc_begin(&meta("halves"), BeginOptions::default())
        .unwrap();
    s.store(t, oid(1), Tid::ZERO, &data).unwrap();
    s.tpc_vote(t).unwrap();
    let submitted = s.tpc_finish_submit(t).unwrap();
    assert_eq!(submitted.txn, t);
    let mut calls = Vec::new();
    let tid = s
        .tpc_finish_durable(submitted, &mut |tid| calls.push(tid))
        .unwrap();
    assert_eq!(calls, vec![tid]);
    if let Some(early) = submitted.tid {
        assert_eq!(early, tid, "submit announced another tid than finish used");
    }
    assert_eq!(s.load(oid(1)).unwrap(), (data, tid));
    assert_eq!(s.last_transaction(), tid);
}

/// Undo reverts a transaction's changes, and undoing the undo redoes them
/// (undo).
pub fn undo_reverts_a_transaction<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
    let s = make();
    if s.as_undo().is_some() {
        undo_and_redo(&*s);
    }
}

/// Commits a creation and a change, undoes the change and undoes the undo,
/// checking what loads see after each; returns the four tids.
pub(crate) fn undo_and_redo<S: Storage + ?Sized>(s: &S) -> [Tid; 4] {
    let a = record(&[], b"a");
    let b = record(&[], b"b");
    let t1 = commit(s, &[(oid(1), Tid::ZERO, a.clone())]).unwrap();
    let t2 = commit(
        s,
        &[(oid(1), t1, b.clone()), (oid(2), Tid::ZERO, a.clone())],
    )
    .unwrap();
    let (t3, mut oids) = undo(s, t2).unwrap();
    oids.sort();
    assert_eq!(oids, vec![oid(1), oid(2)]);
    assert_eq!(s.load(oid(1)).unwrap(), (a.clone(), t3));
    assert!(
        matches!(s.load(oid(2)), Err(Error::PosKey { .. })),
        "creation undone"
    );
    let (t4, _) = undo(s, t3).unwrap();
    assert_eq!(s.load(oid(1)).unwrap(), (b, t4));
    assert_eq!(s.load(oid(2)).unwrap(), (a, t4));
    [t1, t2, t3, t4]
}

/// Packing up to now keeps every current revision (pack).
pub fn pack_keeps_current_revisions<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
    let s = make();
    let Some(pack) = s.as_pack() else {
        return;
    };
    let root = record(&[oid(1)], b"root");
    let t1 = commit(
        &*s,
        &[
            (oid(0), Tid::ZERO, root.clone()),
            (oid(1), Tid::ZERO, record(&[], b"1a")),
        ],
    )
    .unwrap();
    let t2 = commit(&*s, &[(oid(1), t1, record(&[], b"1b"))]).unwrap();
    pack.pack(t2.unix_time() + 1.0, false).unwrap();
    assert_eq!(s.load(oid(0)).unwrap(), (root, t1));
    assert_eq!(s.load(oid(1)).unwrap(), (record(&[], b"1b"), t2));
    assert_eq!(s.last_transaction(), t2);
}

/// Stores become loadable under the tid finish returns.
pub fn store_then_load<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
    let s = make();
    assert_eq!(s.last_transaction(), Tid::ZERO);
    assert!(matches!(s.load(oid(0)), Err(Error::PosKey { oid: o, .. }) if o == oid(0)));
    let root = record(&[oid(1)], b"root");
    let one = record(&[], b"one");
    let t1 = commit(
        &*s,
        &[
            (oid(0), Tid::ZERO, root.clone()),
            (oid(1), Tid::ZERO, one.clone()),
        ],
    )
    .unwrap();
    assert_eq!(s.last_transaction(), t1);
    assert_eq!(s.load(oid(0)).unwrap(), (root, t1));
    assert_eq!(s.load(oid(1)).unwrap(), (one, t1));
    assert_eq!(s.get_tid(oid(1)).unwrap(), t1);
    let two = record(&[], b"one v2");
    let t2 = commit(&*s, &[(oid(1), t1, two.clone())]).unwrap();
    assert!(t2 > t1);
    assert_eq!(s.load(oid(1)).unwrap(), (two, t2));
    assert_eq!(s.len(), 2);
    assert!(!s.is_empty());
}

/// A stale serial fails with a conflict naming both revisions, leaving nothing behind.
pub fn conflict_names_both_serials<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
    let s = make();
    let t1 = commit(&*s, &[(oid(1), Tid::ZERO, record(&[], b"a"))]).unwrap();
    let t2 = commit(&*s, &[(oid(1), t1, record(&[], b"b"))]).unwrap();
    let err = commit(&*s, &[(oid(1), t1, record(&[], b"c"))]).unwrap_err();
    match err {
        Error::Conflict {
            oid: o,
            committed,
            old,
        } => {
            assert_eq!((o, committed, old), (oid(1), t2, t1));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    // A "new object" serial against an existing object conflicts too.
    let err = commit(&*s, &[(oid(1), Tid::ZERO, record(&[], b"d"))]).unwrap_err();
    assert!(matches!(err, Error::Conflict { committed, old: Tid::ZERO, .. } if committed == t2));
    // The failed transactions left nothing behind.
    assert_eq!(s.load(oid(1)).unwrap().1, t2);
    assert_eq!(s.last_transaction(), t2);
}

/// `load_before` finds each revision with its start and end (history-keeping backends).
pub fn load_before_reports_start_and_end<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
    let s = make();
    if !(s.keeps_history) {
        return;
    }
    let v: Vec<Vec<u8>> = (0..3)
        .map(|i| record(&[], format!("v{i}").as_bytes()))
        .collect();
    let t1 = commit(&*s, &[(oid(1), Tid::ZERO, v[0].clone())]).unwrap();
    let t2 = commit(&*s, &[(oid(1), t1, v[1].clone())]).unwrap();
    let t3 = commit(&*s, &[(oid(1), t2, v[2].clone())]).unwrap();
    assert_eq!(s.load_before(oid(1), t1).unwrap(), None);
    let r = s.load_before(oid(1), t2).unwrap().unwrap();
    assert_eq!((r.data, r.start, r.end), (v[0].clone(), t1, Some(t2)));
    let r = s.load_before(oid(1), t3).unwrap().unwrap();
    assert_eq!((r.data, r.start, r.end), (v[1].clone(), t2, Some(t3)));
    let r = s.load_before(oid(1), t3.next()).unwrap().unwrap();
    assert_eq!((r.data, r.start, r.end), (v[2].clone(), t3, None));
    let r = s.load_before(oid(1), Tid::MAX).unwrap().unwrap();
    assert_eq!((r.start, r.end), (t3, None));
    assert!(matches!(
        s.load_before(oid(9), Tid::MAX),
        Err(Error::PosKey { .. })
    ));
}

/// `load_serial` finds each revision and nothing else (history-keeping backends).
pub fn load_serial_finds_each_revision<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
    let s = make();
    if !(s.keeps_history) {
        return;
    }
    let a = record(&[], b"a");
    let b = record(&[], b"b");
    let t1 = commit(&*s, &[(oid(1), Tid::ZERO, a.clone())]).unwrap();
    let t2 = commit(&*s, &[(oid(1), t1, b.clone())]).unwrap();
    let t3 = commit(&*s, &[(oid(2), Tid::ZERO, a.clone())]).unwrap();
    assert_eq!(s.load_serial(oid(1), t1).unwrap(), a);
    assert_eq!(s.load_serial(oid(1), t2).unwrap(), b);
    assert!(matches!(
        s.load_serial(oid(1), t3),
        Err(Error::PosKey { .. })
    ));
    assert!(matches!(
        s.load_serial(oid(1), Tid(t1.0 - 1)),
        Err(Error::PosKey { .. })
    ));
    assert!(matches!(
        s.load_serial(oid(3), t1),
        Err(Error::PosKey { .. })
    ));
}

/// `last_invalidations` lists the newest transactions and their oids (with iteration and external GC).
pub fn last_invalidations_lists_the_newest_transactions<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
    let s = make();
    if !(s.as_iteration().is_some() && s.as_external_gc().is_some()) {
        return;
    }
    assert_eq!(s.last_invalidations(5).unwrap(), vec![]);
    let t1 = commit(
        &*s,
        &[
            (oid(1), Tid::ZERO, record(&[], b"a")),
            (oid(2), Tid::ZERO, record(&[], b"b")),
        ],
    )
    .unwrap();
    let t2 = commit(&*s, &[(oid(1), t1, record(&[], b"c"))]).unwrap();
    let t3 = commit_with(&*s, &meta("delete"), BeginOptions::default(), |s, t| {
        external_gc_of(s).delete_object(t, oid(2), t1)
    })
    .unwrap();
    assert_eq!(s.last_invalidations(0).unwrap(), vec![]);
    assert_eq!(
        s.last_invalidations(2).unwrap(),
        vec![(t2, vec![oid(1)]), (t3, vec![oid(2)])]
    );
    let all = s.last_invalidations(100).unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[0].0, t1);
    let mut first = all[0].1.clone();
    first.sort();
    assert_eq!(first, vec![oid(1), oid(2)]);
}

/// `history` lists revisions newest first with their metadata (history-keeping backends).
pub fn history_is_newest_first_with_metadata<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
    let s = make();
    if !(s.keeps_history) {
        return;
    }
    let a = record(&[], b"a");
    let bb = record(&[], b"bbbb");
    let t1 = commit_with(&*s, &meta("first"), BeginOptions::default(), |s, t| {
        s.store(t, oid(1), Tid::ZERO, &a)
    })
    .unwrap();
    let mut m = meta("second");
    m.user = b"someone".to_vec();
    m.extension = b"\x80\x03}q\x00.".to_vec();
    let t2 = commit_with(&*s, &m, BeginOptions::default(), |s, t| {
        s.store(t, oid(1), t1, &bb)
    })
    .unwrap();
    let h = s.history(oid(1), 10).unwrap();
    assert_eq!(h.len(), 2);
    assert_eq!(h[0].tid, t2);
    assert_eq!(h[0].user, b"someone");
    assert_eq!(h[0].description, b"second");
    assert_eq!(h[0].extension, m.extension);
    assert_eq!(h[0].size, bb.len() as u64);
    assert!((h[0].time - t2.unix_time()).abs() < 1e-6);
    assert_eq!(h[1].tid, t1);
    assert_eq!(h[1].description, b"first");
    assert_eq!(h[1].size, a.len() as u64);
    assert_eq!(s.history(oid(1), 1).unwrap().len(), 1);
    assert_eq!(s.history(oid(1), 1).unwrap()[0].tid, t2);
    assert!(matches!(s.history(oid(2), 1), Err(Error::PosKey { .. })));
}

/// `check_current_serial` raises a read conflict naming both revisions.
pub fn read_conflicts<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
    let s = make();
    let t1 = commit(&*s, &[(oid(1), Tid::ZERO, record(&[], b"a"))]).unwrap();
    let t2 = commit(&*s, &[(oid(1), t1, record(&[], b"b"))]).unwrap();
    let t = s.tpc_begin(&meta("rc"), BeginOptions::default()).unwrap();
    s.check_current_serial(t, oid(1), t2).unwrap();
    match s.check_current_serial(t, oid(1), t1) {
        Err(Error::ReadConflict {
            oid: o,
            committed,
            old,
        }) => {
            assert_eq!((o, committed, old), (oid(1), t2, t1));
        }
        other => panic!("expected a read conflict, got {other:?}"),
    }
    assert!(matches!(
        s.check_current_serial(t, oid(7), t1),
        Err(Error::PosKey { .. })
    ));
    s.tpc_abort(t);
}

/// A deleted object no longer loads, yet keeps a serial (external GC, history-keeping).
pub fn delete_object_hides_the_object<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
    let s = make();
    if !(s.keeps_history && s.as_external_gc().is_some()) {
        return;
    }
    let a = record(&[], b"a");
    let t1 = commit(&*s, &[(oid(1), Tid::ZERO, a.clone())]).unwrap();
    let err = commit_with(&*s, &meta("del"), BeginOptions::default(), |s, t| {
        external_gc_of(s).delete_object(t, oid(1), Tid(t1.0 - 1))
    })
    .unwrap_err();
    assert!(matches!(err, Error::Conflict { committed, .. } if committed == t1));
    let err = commit_with(&*s, &meta("del"), BeginOptions::default(), |s, t| {
        external_gc_of(s).delete_object(t, oid(5), t1)
    })
    .unwrap_err();
    assert!(matches!(err, Error::PosKey { .. }));
    let t2 = commit_with(&*s, &meta("del"), BeginOptions::default(), |s, t| {
        external_gc_of(s).delete_object(t, oid(1), t1)
    })
    .unwrap();
    assert!(matches!(s.load(oid(1)), Err(Error::PosKey { .. })));
    assert!(matches!(s.get_tid(oid(1)), Err(Error::PosKey { .. })));
    assert!(matches!(
        s.load_before(oid(1), Tid::MAX),
        Err(Error::PosKey { .. })
    ));
    assert_eq!(s.load_before(oid(1), t2).unwrap().unwrap().data, a);
    let h = s.history(oid(1), 5).unwrap();
    assert_eq!((h.len(), h[0].tid, h[0].size), (2, t2, 0));
    // A deleted object still has a serial to conflict with, and storing on
    // the deletion's serial brings it back.
    let err = commit(&*s, &[(oid(1), Tid::ZERO, a.clone())]).unwrap_err();
    assert!(matches!(err, Error::Conflict { committed, .. } if committed == t2));
    let t3 = commit(&*s, &[(oid(1), t2, a.clone())]).unwrap();
    assert_eq!(s.load(oid(1)).unwrap(), (a, t3));
}

/// Undo refuses what it cannot undo and commits nothing then (undo).
pub fn undo_errors<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
    let s = make();
    if s.as_undo().is_none() {
        return;
    }
    let t1 = commit(&*s, &[(oid(1), Tid::ZERO, record(&[], b"a"))]).unwrap();
    let t2 = commit(&*s, &[(oid(1), t1, record(&[], b"b"))]).unwrap();
    let _t3 = commit(&*s, &[(oid(1), t2, record(&[], b"c"))]).unwrap();
    // t2's change was overwritten by t3: no conflict resolution here.
    assert!(matches!(undo(&*s, t2), Err(Error::Undo { oid: Some(o), .. }) if o == oid(1)));
    // Creation followed by changes.
    assert!(matches!(undo(&*s, t1), Err(Error::Undo { .. })));
    // Unknown and malformed ids.
    let bad = commit_with(&*s, &meta("u"), BeginOptions::default(), |s, t| {
        undo_of(s).undo(t, &b64(Tid(12345))).map(|_| ())
    });
    assert!(matches!(bad, Err(Error::Undo { .. })));
    let bad = commit_with(&*s, &meta("u"), BeginOptions::default(), |s, t| {
        undo_of(s).undo(t, b"not base64!").map(|_| ())
    });
    assert!(matches!(bad, Err(Error::Undo { .. })));
    // Nothing was committed by the failed undos.
    assert_eq!(undo_of(&*s).undo_log(0, -100, None).unwrap().len(), 3);
}

/// `undo_log` is newest first, sliced and filtered as ZODB does (undo).
pub fn undo_log_slices_and_filters<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
    let s = make();
    if s.as_undo().is_none() {
        return;
    }
    let mut tids = Vec::new();
    for i in 0..5u64 {
        tids.push(
            commit_with(
                &*s,
                &meta(&format!("t{i}")),
                BeginOptions::default(),
                |s, t| s.store(t, oid(i + 1), Tid::ZERO, &record(&[], b"x")),
            )
            .unwrap(),
        );
    }
    let log = undo_of(&*s).undo_log(0, -20, None).unwrap();
    let got: Vec<Tid> = log.iter().map(|e| e.tid).collect();
    let mut want = tids.clone();
    want.reverse();
    assert_eq!(got, want, "newest first");
    assert_eq!(log[0].description, b"t4");
    assert_eq!(log[0].user, b"tester");
    assert!(log[0].size > 0);
    assert!((log[0].time - tids[4].unix_time()).abs() < 1e-6);
    let page: Vec<Tid> = undo_of(&*s)
        .undo_log(1, 3, None)
        .unwrap()
        .iter()
        .map(|e| e.tid)
        .collect();
    assert_eq!(page, vec![tids[3], tids[2]]);
    let page: Vec<Tid> = undo_of(&*s)
        .undo_log(1, -2, None)
        .unwrap()
        .iter()
        .map(|e| e.tid)
        .collect();
    assert_eq!(page, vec![tids[3], tids[2]]);
    let odd = |e: &crate::UndoEntry| e.description.ends_with(b"1") || e.description.ends_with(b"3");
    let page: Vec<Tid> = undo_of(&*s)
        .undo_log(0, -20, Some(&odd))
        .unwrap()
        .iter()
        .map(|e| e.tid)
        .collect();
    assert_eq!(page, vec![tids[3], tids[1]]);
    let page: Vec<Tid> = undo_of(&*s)
        .undo_log(1, -20, Some(&odd))
        .unwrap()
        .iter()
        .map(|e| e.tid)
        .collect();
    assert_eq!(page, vec![tids[1]]);
}

/// Iteration yields transactions in order within `start..=stop` (iteration).
pub fn iterator_honours_start_and_stop<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
    let s = make();
    if s.as_iteration().is_none() {
        return;
    }
    let mut tids = Vec::new();
    for i in 0..4u64 {
        tids.push(
            commit(
                &*s,
                &[
                    (oid(i), Tid::ZERO, record(&[], b"x")),
                    (oid(10 + i), Tid::ZERO, record(&[], b"y")),
                ],
            )
            .unwrap(),
        );
    }
    let all: Vec<_> = iteration_of(&*s)
        .iterator(None, None)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(all.iter().map(|t| t.tid).collect::<Vec<_>>(), tids);
    assert_eq!(all[2].records.len(), 2);
    assert_eq!(all[2].records[0].oid, oid(2));
    assert_eq!(all[2].records[1].oid, oid(12));
    assert_eq!(all[2].records[1].tid, tids[2]);
    assert_eq!(
        all[2].records[1].data.as_deref(),
        Some(&record(&[], b"y")[..])
    );
    assert_eq!(all[2].status, TxnStatus::Committed);
    assert_eq!(all[2].meta.description, b"commit");
    let mid: Vec<Tid> = iteration_of(&*s)
        .iterator(Some(tids[1]), Some(tids[2]))
        .unwrap()
        .map(|t| t.unwrap().tid)
        .collect();
    assert_eq!(mid, tids[1..3].to_vec());
    let between: Vec<Tid> = iteration_of(&*s)
        .iterator(Some(tids[1].next()), None)
        .unwrap()
        .map(|t| t.unwrap().tid)
        .collect();
    assert_eq!(between, tids[2..].to_vec());
    let upto: Vec<Tid> = iteration_of(&*s)
        .iterator(None, Some(Tid(tids[1].0 - 1)))
        .unwrap()
        .map(|t| t.unwrap().tid)
        .collect();
    assert_eq!(upto, tids[..1].to_vec());
    assert_eq!(
        iteration_of(&*s)
            .iterator(Some(tids[3].next()), None)
            .unwrap()
            .count(),
        0
    );
}

/// `record_iternext` walks every current record in oid order (current-record iteration).
pub fn record_iternext_walks_every_oid<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
    let s = make();
    if s.as_record_iteration().is_none() {
        return;
    }
    assert!(record_iteration_of(&*s)
        .record_iternext(None)
        .unwrap()
        .is_none());
    let oids = [0u64, 3, 4, 200, 70_000];
    let t1 = commit(
        &*s,
        &oids
            .iter()
            .map(|o| (oid(*o), Tid::ZERO, record(&[], &o.to_be_bytes())))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let t2 = commit(&*s, &[(oid(4), t1, record(&[], b"four"))]).unwrap();
    let mut seen = Vec::new();
    let mut next = None;
    loop {
        let r = record_iteration_of(&*s)
            .record_iternext(next)
            .unwrap()
            .unwrap();
        let want = if r.oid == oid(4) {
            (record(&[], b"four"), t2)
        } else {
            (record(&[], &r.oid.0.to_be_bytes()), t1)
        };
        assert_eq!((r.data, r.tid), want);
        seen.push(r.oid.0);
        match r.next {
            Some(n) => next = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, oids);
    assert_eq!(
        record_iteration_of(&*s)
            .record_iternext(Some(oid(5)))
            .unwrap()
            .unwrap()
            .oid,
        oid(200)
    );
}

/// An aborted transaction leaves no trace and frees the commit lock.
pub fn abort_discards<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
    let s = make();
    let t1 = commit(&*s, &[(oid(1), Tid::ZERO, record(&[], b"a"))]).unwrap();
    let size = s.size();
    let t = s
        .tpc_begin(&meta("aborted"), BeginOptions::default())
        .unwrap();
    s.store(t, oid(1), t1, &record(&[], b"b")).unwrap();
    s.store(t, oid(2), Tid::ZERO, &record(&[], b"c")).unwrap();
    s.tpc_vote(t).unwrap();
    s.tpc_abort(t);
    assert_eq!(s.load(oid(1)).unwrap().1, t1);
    assert!(matches!(s.load(oid(2)), Err(Error::PosKey { .. })));
    assert_eq!(s.last_transaction(), t1);
    assert_eq!(s.size(), size);
    if s.as_iteration().is_some() {
        assert_eq!(iteration_of(&*s).iterator(None, None).unwrap().count(), 1);
    }
    // The lock is free again, and tids keep increasing.
    let t2 = commit(&*s, &[(oid(1), t1, record(&[], b"d"))]).unwrap();
    assert!(t2 > t1);
}

/// Calls naming a transaction that is not the current one fail.
pub fn wrong_handles_are_refused<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
    let s = make();
    let t = s.tpc_begin(&meta("a"), BeginOptions::default()).unwrap();
    let tid = s.transaction_tid(t).unwrap();
    s.tpc_abort(t);
    // A stale handle: every call but abort fails.
    assert!(matches!(
        s.store(t, oid(1), Tid::ZERO, b"x"),
        Err(Error::Transaction(_))
    ));
    assert!(matches!(s.transaction_tid(t), Err(Error::Transaction(_))));
    assert!(matches!(s.tpc_vote(t), Err(Error::Transaction(_))));
    assert!(matches!(
        s.tpc_finish(t, &mut |_| {}),
        Err(Error::Transaction(_))
    ));
    let u = s.tpc_begin(&meta("b"), BeginOptions::default()).unwrap();
    if let (Some(old), Some(new)) = (tid, s.transaction_tid(u).unwrap()) {
        assert!(new > old, "aborted tids are not reused");
    }
    s.tpc_abort(t); // ignored: u stays current
    if let Some(gc) = s.as_external_gc() {
        assert!(matches!(
            gc.delete_object(t, oid(1), Tid::ZERO),
            Err(Error::Transaction(_))
        ));
    }
    s.store(u, oid(1), Tid::ZERO, &record(&[], b"x")).unwrap();
    s.tpc_vote(u).unwrap();
    let done = s.tpc_finish(u, &mut |_| {}).unwrap();
    assert_eq!(s.load(oid(1)).unwrap().1, done);
}

/// The finish callback runs with the tid before readers can see the transaction.
pub fn finish_callback_runs_before_readers_see<S: Storage + 'static>(
    make: &dyn Fn() -> Fixture<S>,
) {
    let s = Arc::new(make());
    if s.as_shared_commits().is_some() {
        // Other writers' readers see a commit at once; a server orders
        // what its clients see by the tid it announced instead.
        return;
    }
    let t1 = commit(&**s, &[(oid(1), Tid::ZERO, record(&[], b"a"))]).unwrap();
    let t = s.tpc_begin(&meta("cb"), BeginOptions::default()).unwrap();
    let want = s.transaction_tid(t).unwrap();
    s.store(t, oid(1), t1, &record(&[], b"b")).unwrap();
    s.tpc_vote(t).unwrap();
    let mut called = None;
    let mut reader = None;
    let mut seen_in_callback = None;
    let tid = s
        .tpc_finish(t, &mut |tid| {
            called = Some(tid);
            // Another thread reads while the callback runs: it must either
            // wait or see the state before the commit.
            let (tx, rx) = mpsc::channel();
            let s2 = Arc::clone(&s);
            reader = Some(thread::spawn(move || {
                let _ = tx.send((s2.last_transaction(), s2.load(oid(1)).unwrap().1));
            }));
            seen_in_callback = rx.recv_timeout(Duration::from_millis(300)).ok();
        })
        .unwrap();
    assert_eq!(called, Some(tid));
    if let Some(want) = want {
        assert_eq!(
            tid, want,
            "finish committed under another tid than announced"
        );
    }
    if let Some(seen) = seen_in_callback {
        assert_eq!(
            seen,
            (t1, t1),
            "a reader saw the transaction before the callback returned"
        );
    }
    reader.unwrap().join().unwrap();
    assert_eq!(s.last_transaction(), tid);
    assert_eq!(s.load(oid(1)).unwrap().1, tid);
}

/// A second `tpc_begin` waits for the first transaction (at least until
/// its finish began: a group-committing backend lets the next transaction
/// begin while the first one's fsync is in progress); reads do not.
pub fn second_tpc_begin_blocks<S: Storage + 'static>(make: &dyn Fn() -> Fixture<S>) {
    let s = Arc::new(make());
    let t = s
        .tpc_begin(&meta("first"), BeginOptions::default())
        .unwrap();
    s.store(t, oid(1), Tid::ZERO, &record(&[], b"a")).unwrap();
    let voted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let s2 = Arc::clone(&s);
    let voted2 = Arc::clone(&voted);
    let other = thread::spawn(move || {
        let u = s2
            .tpc_begin(&meta("second"), BeginOptions::default())
            .unwrap();
        // Holding the lock means the first transaction got to its finish.
        let waited = voted2.load(std::sync::atomic::Ordering::SeqCst);
        s2.store(u, oid(2), Tid::ZERO, &record(&[], b"b")).unwrap();
        s2.tpc_vote(u).unwrap();
        let tid = s2.tpc_finish(u, &mut |_| {}).unwrap();
        tx.send((waited, tid)).unwrap();
    });
    // Reads are not blocked by the commit in progress.
    assert!(matches!(s.load(oid(1)), Err(Error::PosKey { .. })));
    s.tpc_vote(t).unwrap();
    voted.store(true, std::sync::atomic::Ordering::SeqCst);
    let first = s.tpc_finish(t, &mut |_| {}).unwrap();
    let (waited, second) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    other.join().unwrap();
    assert!(
        waited,
        "the second tpc_begin did not wait for the first transaction"
    );
    assert!(second > first);
    assert_eq!(s.load(oid(1)).unwrap(), (record(&[], b"a"), first));
    assert_eq!(s.load(oid(2)).unwrap(), (record(&[], b"b"), second));
    assert_eq!(s.last_transaction(), second);
}

/// After `close`, calls fail with `Closed`.
pub fn close_then_closed<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
    let s = make();
    let t1 = commit(&*s, &[(oid(1), Tid::ZERO, record(&[], b"a"))]).unwrap();
    s.close().unwrap();
    assert!(matches!(s.load(oid(1)), Err(Error::Closed)));
    assert!(matches!(
        s.load_before(oid(1), Tid::MAX),
        Err(Error::Closed)
    ));
    assert!(matches!(s.load_serial(oid(1), t1), Err(Error::Closed)));
    assert!(matches!(s.history(oid(1), 1), Err(Error::Closed)));
    assert!(matches!(s.new_oid(), Err(Error::Closed)));
    assert!(matches!(
        s.tpc_begin(&meta("x"), BeginOptions::default()),
        Err(Error::Closed)
    ));
    if let Some(iteration) = s.as_iteration() {
        assert!(matches!(iteration.iterator(None, None), Err(Error::Closed)));
    }
    if let Some(records) = s.as_record_iteration() {
        assert!(matches!(records.record_iternext(None), Err(Error::Closed)));
    }
    if let Some(pack) = s.as_pack() {
        assert!(matches!(
            pack.pack(TimeStamp::now().unix_time(), true),
            Err(Error::Closed)
        ));
    }
}

/// `close` wakes a `tpc_begin` waiting for the commit lock.
pub fn close_wakes_a_waiting_tpc_begin<S: Storage + 'static>(make: &dyn Fn() -> Fixture<S>) {
    let s = Arc::new(make());
    let _t = s.tpc_begin(&meta("held"), BeginOptions::default()).unwrap();
    let s2 = Arc::clone(&s);
    let (tx, rx) = mpsc::channel();
    let waiter = thread::spawn(move || {
        let r = s2.tpc_begin(&meta("waiting"), BeginOptions::default());
        // Before or after the close, the lock is held: the only answer is
        // Closed (a tpc_begin that did not wait would have got a handle).
        tx.send(matches!(r, Err(Error::Closed))).unwrap();
    });
    s.close().unwrap();
    assert!(
        rx.recv_timeout(Duration::from_secs(10)).unwrap(),
        "waiting tpc_begin did not fail with Closed"
    );
    waiter.join().unwrap();
}

/// Blobs (when the storage has them): a stored blob loads byte for byte
/// under the transaction's tid, from a file handed over (which the storage
/// takes) or a stream; a revision stored without one has none; an aborted
/// blob store leaves the earlier revision's blob as it was.
pub fn blobs_store_load_and_abort<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
    let s = make();
    let Some(blobs) = s.as_blobs() else {
        return;
    };
    let read = |o: Oid, tid: Tid| -> Vec<u8> {
        match blobs.load_blob(o, tid).unwrap() {
            BlobData::Path(path) => std::fs::read(path).unwrap(),
            BlobData::Reader(mut r) => {
                let mut out = Vec::new();
                std::io::Read::read_to_end(&mut r, &mut out).unwrap();
                out
            }
        }
    };
    let upload = blobs.temporary_directory().join("contract-upload.tmp");
    std::fs::write(&upload, b"from a file").unwrap();
    let file = BlobSource::File(upload.clone());
    let t1 = commit_with(&*s, &meta("blob"), BeginOptions::default(), |s, t| {
        s.store(t, oid(0), Tid::ZERO, &record(&[oid(1)], b"root"))?;
        blobs.store_blob(t, oid(1), Tid::ZERO, &record(&[], b"blob"), file)
    })
    .unwrap();
    assert!(!upload.exists(), "the storage did not take the file");
    assert_eq!(read(oid(1), t1), b"from a file");
    assert!(blobs.load_blob(oid(0), t1).unwrap_err().is_pos_key());

    let stream = BlobSource::Stream(Box::new(std::io::Cursor::new(vec![7u8; 70_000])));
    let t2 = commit_with(&*s, &meta("stream"), BeginOptions::default(), |_, t| {
        blobs.store_blob(t, oid(1), t1, &record(&[], b"blob 2"), stream)
    })
    .unwrap();
    assert_eq!(read(oid(1), t2), vec![7u8; 70_000]);

    let t = s
        .tpc_begin(&meta("aborted"), BeginOptions::default())
        .unwrap();
    let stream = BlobSource::Stream(Box::new(std::io::Cursor::new(b"never".to_vec())));
    blobs
        .store_blob(t, oid(1), t2, &record(&[], b"blob 3"), stream)
        .unwrap();
    let aborted = s.transaction_tid(t).unwrap();
    s.tpc_abort(t);
    assert_eq!(s.load(oid(1)).unwrap().1, t2);
    assert_eq!(read(oid(1), t2), vec![7u8; 70_000]);
    if let Some(tid) = aborted {
        assert!(blobs.load_blob(oid(1), tid).unwrap_err().is_pos_key());
    }
}

/// Blobs and pack (when the storage has both): pack removes the blob of
/// each revision it removed, keeps the current revision's, and a removed
/// revision's blob no longer loads (nor, for a file-based backend, stays
/// on disk).
pub fn blobs_pack_removes_files_of_removed_revisions<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
    let s = make();
    let (Some(blobs), Some(pack)) = (s.as_blobs(), s.as_pack()) else {
        return;
    };
    let stream = |bytes: &[u8]| BlobSource::Stream(Box::new(std::io::Cursor::new(bytes.to_vec())));
    let t1 = commit_with(&*s, &meta("first"), BeginOptions::default(), |s, t| {
        s.store(t, oid(0), Tid::ZERO, &record(&[oid(1)], b"root"))?;
        blobs.store_blob(t, oid(1), Tid::ZERO, &record(&[], b"b1"), stream(b"one"))
    })
    .unwrap();
    let old_file = match blobs.load_blob(oid(1), t1).unwrap() {
        BlobData::Path(path) => Some(path),
        _ => None,
    };
    let t2 = commit_with(&*s, &meta("second"), BeginOptions::default(), |_, t| {
        blobs.store_blob(t, oid(1), t1, &record(&[], b"b2"), stream(b"two"))
    })
    .unwrap();
    pack.pack(t2.unix_time() + 1.0, false).unwrap();
    assert!(blobs.load_blob(oid(1), t1).unwrap_err().is_pos_key());
    if let Some(path) = old_file {
        assert!(!path.exists(), "{} survived the pack", path.display());
    }
    let current = match blobs.load_blob(oid(1), t2).unwrap() {
        BlobData::Path(path) => std::fs::read(path).unwrap(),
        BlobData::Reader(mut r) => {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut r, &mut out).unwrap();
            out
        }
    };
    assert_eq!(current, b"two");
}

/// Every check of this tier, by name.
pub fn checks<S: Storage + 'static>() -> Vec<(&'static str, Check<S>)> {
    vec![
        ("new_oids_are_fresh", new_oids_are_fresh::<S>),
        ("finish_in_two_halves", finish_in_two_halves::<S>),
        (
            "undo_reverts_a_transaction",
            undo_reverts_a_transaction::<S>,
        ),
        (
            "pack_keeps_current_revisions",
            pack_keeps_current_revisions::<S>,
        ),
        ("store_then_load", store_then_load::<S>),
        (
            "conflict_names_both_serials",
            conflict_names_both_serials::<S>,
        ),
        (
            "load_before_reports_start_and_end",
            load_before_reports_start_and_end::<S>,
        ),
        (
            "load_serial_finds_each_revision",
            load_serial_finds_each_revision::<S>,
        ),
        (
            "last_invalidations_lists_the_newest_transactions",
            last_invalidations_lists_the_newest_transactions::<S>,
        ),
        (
            "history_is_newest_first_with_metadata",
            history_is_newest_first_with_metadata::<S>,
        ),
        ("read_conflicts", read_conflicts::<S>),
        (
            "delete_object_hides_the_object",
            delete_object_hides_the_object::<S>,
        ),
        ("undo_errors", undo_errors::<S>),
        (
            "undo_log_slices_and_filters",
            undo_log_slices_and_filters::<S>,
        ),
        (
            "iterator_honours_start_and_stop",
            iterator_honours_start_and_stop::<S>,
        ),
        (
            "record_iternext_walks_every_oid",
            record_iternext_walks_every_oid::<S>,
        ),
        ("abort_discards", abort_discards::<S>),
        ("wrong_handles_are_refused", wrong_handles_are_refused::<S>),
        (
            "finish_callback_runs_before_readers_see",
            finish_callback_runs_before_readers_see::<S>,
        ),
        ("second_tpc_begin_blocks", second_tpc_begin_blocks::<S>),
        ("close_then_closed", close_then_closed::<S>),
        (
            "close_wakes_a_waiting_tpc_begin",
            close_wakes_a_waiting_tpc_begin::<S>,
        ),
        (
            "blobs_store_load_and_abort",
            blobs_store_load_and_abort::<S>,
        ),
        (
            "blobs_pack_removes_files_of_removed_revisions",
            blobs_pack_removes_files_of_removed_revisions::<S>,
        ),
    ]
}
