//! The behaviour every [`Storage`] shares with ZODB's FileStorage, as one
//! generic suite instantiated per storage with [`conformance_tests!`].

#[path = "model/support.rs"]
mod support;

use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use support::{commit, commit_with, meta, record, undo, undo_id, Fixture};
use zeo_storage::{BeginOptions, Error, Oid, Storage, Tid, TimeStamp, TxnStatus};

/// Instantiates every check as a `#[test]` in module `$name`, each on a fresh
/// storage made by `$make` (an expression giving a `Fixture<S>`).
macro_rules! conformance_tests {
    ($name:ident, $make:expr) => {
        mod $name {
            use super::*;
            conformance_tests!(@tests $make;
                new_oids_count_up, store_then_load, conflict_names_both_serials,
                load_before_reports_start_and_end, load_serial_finds_each_revision,
                history_is_newest_first_with_metadata, read_conflicts,
                delete_object_hides_the_object, restore_copies_with_backpointers,
                undo_restores_previous_revisions, undo_errors, undo_log_slices_and_filters,
                iterator_honours_start_and_stop, record_iternext_walks_every_oid,
                abort_discards, wrong_handles_are_refused, finish_callback_runs_before_readers_see,
                second_tpc_begin_blocks, pack_drops_old_revisions, pack_keeps_what_undo_after_it_needs,
                gc_removes_unreachable_objects, gc_pack_failures, close_then_closed,
                close_wakes_a_waiting_tpc_begin,
                size_and_len_follow_commits, last_invalidations_lists_the_newest_transactions);
        }
    };
    (@tests $make:expr; $($test:ident),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                super::$test(&$make);
            }
        )*
    };
}

conformance_tests!(mapping, support::mapping_storage);
// FileStorage: at the end of the file.

fn oid(n: u64) -> Oid {
    Oid(n)
}

/// Sleeps so that the next transaction's time is clearly later than `tid`,
/// and returns a pack time between the two.
fn pack_time_after(tid: Tid) -> f64 {
    // allow-sleep: not yet on a paused clock or an awaited event
    thread::sleep(Duration::from_millis(20));
    tid.unix_time() + 0.005
}

fn new_oids_count_up<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
    let s = make();
    let a = s.new_oid().unwrap();
    let b = s.new_oid().unwrap();
    assert_eq!(a, oid(1), "oid 0 is the root, so the first new oid is 1");
    assert_eq!(b, oid(2));
    // Storing a higher oid moves the counter past it.
    commit(&*s, &[(oid(10), Tid::ZERO, record(&[], b"x"))]).unwrap();
    assert_eq!(s.new_oid().unwrap(), oid(11));
}

fn store_then_load<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
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

fn conflict_names_both_serials<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
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

fn load_before_reports_start_and_end<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
    let s = make();
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

fn load_serial_finds_each_revision<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
    let s = make();
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

fn last_invalidations_lists_the_newest_transactions<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
    let s = make();
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
        s.delete_object(t, oid(2), t1)
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

fn history_is_newest_first_with_metadata<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
    let s = make();
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

fn read_conflicts<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
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

fn delete_object_hides_the_object<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
    let s = make();
    let a = record(&[], b"a");
    let t1 = commit(&*s, &[(oid(1), Tid::ZERO, a.clone())]).unwrap();
    let err = commit_with(&*s, &meta("del"), BeginOptions::default(), |s, t| {
        s.delete_object(t, oid(1), Tid(t1.0 - 1))
    })
    .unwrap_err();
    assert!(matches!(err, Error::Conflict { committed, .. } if committed == t1));
    let err = commit_with(&*s, &meta("del"), BeginOptions::default(), |s, t| {
        s.delete_object(t, oid(5), t1)
    })
    .unwrap_err();
    assert!(matches!(err, Error::PosKey { .. }));
    let t2 = commit_with(&*s, &meta("del"), BeginOptions::default(), |s, t| {
        s.delete_object(t, oid(1), t1)
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

fn restore_copies_with_backpointers<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
    let s = make();
    let a = record(&[], b"a");
    let base = TimeStamp::from_parts(2020, 5, 1, 12, 0, 0.0).tid();
    let t1 = commit_with(
        &*s,
        &meta("r1"),
        BeginOptions {
            tid: Some(base),
            ..Default::default()
        },
        |s, t| {
            s.restore(t, oid(1), base, Some(&a), None)?;
            s.restore(t, oid(2), base, Some(&a), None)
        },
    )
    .unwrap();
    assert_eq!(t1, base);
    let t2 = Tid(base.0 + 1000);
    let got = commit_with(
        &*s,
        &meta("r2"),
        BeginOptions {
            tid: Some(t2),
            status: TxnStatus::Committed,
        },
        |s, t| {
            s.restore(t, oid(1), t2, Some(&a), Some(t1))?;
            s.restore(t, oid(2), t2, None, None)
        },
    )
    .unwrap();
    assert_eq!(got, t2);
    assert_eq!(s.last_transaction(), t2);
    assert_eq!(s.load(oid(1)).unwrap(), (a.clone(), t2));
    assert!(matches!(s.load(oid(2)), Err(Error::PosKey { .. })));
    let txns: Vec<_> = s
        .iterator(Some(t2), None)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(txns.len(), 1);
    let recs = &txns[0].records;
    assert_eq!(
        (recs[0].data.as_deref(), recs[0].data_txn),
        (Some(&a[..]), Some(t1))
    );
    assert_eq!((recs[1].data.as_deref(), recs[1].data_txn), (None, None));
    // A backpointer record has no data of its own.
    assert_eq!(s.history(oid(1), 1).unwrap()[0].size, 0);
    // Restoring needs no serial checks, and a new commit still gets a later tid.
    let t3 = commit(&*s, &[(oid(3), Tid::ZERO, a.clone())]).unwrap();
    assert!(t3 > t2);
}

fn undo_restores_previous_revisions<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
    let s = make();
    if !s.supports_undo() {
        return;
    }
    let a = record(&[], b"a");
    let b = record(&[], b"b");
    let t1 = commit(&*s, &[(oid(1), Tid::ZERO, a.clone())]).unwrap();
    let t2 = commit(
        &*s,
        &[(oid(1), t1, b.clone()), (oid(2), Tid::ZERO, a.clone())],
    )
    .unwrap();
    let (t3, oids) = undo(&*s, t2).unwrap();
    assert_eq!(oids, vec![oid(1), oid(2)]);
    assert_eq!(s.load(oid(1)).unwrap(), (a.clone(), t3));
    assert!(
        matches!(s.load(oid(2)), Err(Error::PosKey { .. })),
        "creation undone"
    );
    // The undo transaction points back at t1's data.
    let txn = s
        .iterator(Some(t3), Some(t3))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(txn.records[0].data_txn, Some(t1));
    assert_eq!(txn.records[0].data.as_deref(), Some(&a[..]));
    assert_eq!(
        (txn.records[1].data.as_deref(), txn.records[1].data_txn),
        (None, None)
    );
    // Undoing the undo redoes t2.
    let (t4, _) = undo(&*s, t3).unwrap();
    assert_eq!(s.load(oid(1)).unwrap(), (b.clone(), t4));
    assert_eq!(s.load(oid(2)).unwrap(), (a.clone(), t4));
    assert_eq!(s.history(oid(1), 10).unwrap().len(), 4);
    // The undo id is base64 of the tid, as ZODB spells it.
    let id = undo_id(&*s, t2);
    assert_eq!(id.len(), 12);
    assert_eq!(undo_id(&*s, t4), support::b64(t4));
}

fn undo_errors<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
    let s = make();
    if !s.supports_undo() {
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
        s.undo(t, &support::b64(Tid(12345))).map(|_| ())
    });
    assert!(matches!(bad, Err(Error::Undo { .. })));
    let bad = commit_with(&*s, &meta("u"), BeginOptions::default(), |s, t| {
        s.undo(t, b"not base64!").map(|_| ())
    });
    assert!(matches!(bad, Err(Error::Undo { .. })));
    // Nothing was committed by the failed undos.
    assert_eq!(s.undo_log(0, -100, None).unwrap().len(), 3);
}

fn undo_log_slices_and_filters<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
    let s = make();
    if !s.supports_undo() {
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
    let log = s.undo_log(0, -20, None).unwrap();
    let got: Vec<Tid> = log.iter().map(|e| e.tid).collect();
    let mut want = tids.clone();
    want.reverse();
    assert_eq!(got, want, "newest first");
    assert_eq!(log[0].description, b"t4");
    assert_eq!(log[0].user, b"tester");
    assert!(log[0].size > 0);
    assert!((log[0].time - tids[4].unix_time()).abs() < 1e-6);
    let page: Vec<Tid> = s
        .undo_log(1, 3, None)
        .unwrap()
        .iter()
        .map(|e| e.tid)
        .collect();
    assert_eq!(page, vec![tids[3], tids[2]]);
    let page: Vec<Tid> = s
        .undo_log(1, -2, None)
        .unwrap()
        .iter()
        .map(|e| e.tid)
        .collect();
    assert_eq!(page, vec![tids[3], tids[2]]);
    let odd =
        |e: &zeo_storage::UndoEntry| e.description.ends_with(b"1") || e.description.ends_with(b"3");
    let page: Vec<Tid> = s
        .undo_log(0, -20, Some(&odd))
        .unwrap()
        .iter()
        .map(|e| e.tid)
        .collect();
    assert_eq!(page, vec![tids[3], tids[1]]);
    let page: Vec<Tid> = s
        .undo_log(1, -20, Some(&odd))
        .unwrap()
        .iter()
        .map(|e| e.tid)
        .collect();
    assert_eq!(page, vec![tids[1]]);
}

fn iterator_honours_start_and_stop<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
    let s = make();
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
    let all: Vec<_> = s
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
    let mid: Vec<Tid> = s
        .iterator(Some(tids[1]), Some(tids[2]))
        .unwrap()
        .map(|t| t.unwrap().tid)
        .collect();
    assert_eq!(mid, tids[1..3].to_vec());
    let between: Vec<Tid> = s
        .iterator(Some(tids[1].next()), None)
        .unwrap()
        .map(|t| t.unwrap().tid)
        .collect();
    assert_eq!(between, tids[2..].to_vec());
    let upto: Vec<Tid> = s
        .iterator(None, Some(Tid(tids[1].0 - 1)))
        .unwrap()
        .map(|t| t.unwrap().tid)
        .collect();
    assert_eq!(upto, tids[..1].to_vec());
    assert_eq!(s.iterator(Some(tids[3].next()), None).unwrap().count(), 0);
}

fn record_iternext_walks_every_oid<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
    let s = make();
    assert!(s.record_iternext(None).unwrap().is_none());
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
        let r = s.record_iternext(next).unwrap().unwrap();
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
        s.record_iternext(Some(oid(5))).unwrap().unwrap().oid,
        oid(200)
    );
}

fn abort_discards<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
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
    assert_eq!(s.iterator(None, None).unwrap().count(), 1);
    // The lock is free again, and tids keep increasing.
    let t2 = commit(&*s, &[(oid(1), t1, record(&[], b"d"))]).unwrap();
    assert!(t2 > t1);
}

fn wrong_handles_are_refused<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
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
    assert!(
        s.transaction_tid(u).unwrap() > tid,
        "aborted tids are not reused"
    );
    s.tpc_abort(t); // ignored: u stays current
    assert!(matches!(
        s.delete_object(t, oid(1), Tid::ZERO),
        Err(Error::Transaction(_))
    ));
    s.store(u, oid(1), Tid::ZERO, &record(&[], b"x")).unwrap();
    s.tpc_vote(u).unwrap();
    let done = s.tpc_finish(u, &mut |_| {}).unwrap();
    assert_eq!(s.load(oid(1)).unwrap().1, done);
}

fn finish_callback_runs_before_readers_see<S: Storage + 'static>(make: &dyn Fn() -> Fixture<S>) {
    let s = Arc::new(make());
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
    assert_eq!(called, Some(want));
    assert_eq!(tid, want);
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

fn second_tpc_begin_blocks<S: Storage + 'static>(make: &dyn Fn() -> Fixture<S>) {
    let s = Arc::new(make());
    let t = s
        .tpc_begin(&meta("first"), BeginOptions::default())
        .unwrap();
    s.store(t, oid(1), Tid::ZERO, &record(&[], b"a")).unwrap();
    let (tx, rx) = mpsc::channel();
    let s2 = Arc::clone(&s);
    let other = thread::spawn(move || {
        let u = s2
            .tpc_begin(&meta("second"), BeginOptions::default())
            .unwrap();
        // The first transaction is visible once we hold the lock.
        let serial = s2.load(oid(1)).unwrap().1;
        s2.store(u, oid(1), serial, &record(&[], b"b")).unwrap();
        s2.tpc_vote(u).unwrap();
        let tid = s2.tpc_finish(u, &mut |_| {}).unwrap();
        tx.send(tid).unwrap();
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "second tpc_begin did not wait"
    );
    // Reads are not blocked by the commit in progress.
    assert!(matches!(s.load(oid(1)), Err(Error::PosKey { .. })));
    s.tpc_vote(t).unwrap();
    let first = s.tpc_finish(t, &mut |_| {}).unwrap();
    let second = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    other.join().unwrap();
    assert!(second > first);
    assert_eq!(s.load(oid(1)).unwrap(), (record(&[], b"b"), second));
}

fn pack_drops_old_revisions<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
    let s = make();
    let root = record(&[oid(1), oid(2)], b"root");
    let t1 = commit(
        &*s,
        &[
            (oid(0), Tid::ZERO, root.clone()),
            (oid(1), Tid::ZERO, record(&[], b"1a")),
            (oid(2), Tid::ZERO, record(&[], b"2a")),
        ],
    )
    .unwrap();
    let t2 = commit(&*s, &[(oid(1), t1, record(&[], b"1b"))]).unwrap();
    let pack_at = pack_time_after(t2);
    let t3 = commit(
        &*s,
        &[
            (oid(1), t2, record(&[], b"1c")),
            (oid(2), t1, record(&[], b"2c")),
        ],
    )
    .unwrap();
    let t4 = commit(&*s, &[(oid(2), t3, record(&[], b"2d"))]).unwrap();
    let size = s.size();
    s.pack(pack_at, true).unwrap();
    assert!(s.size() < size);
    // Revisions no longer current at the pack time are gone...
    assert!(matches!(
        s.load_serial(oid(1), t1),
        Err(Error::PosKey { .. })
    ));
    // ...those current at the pack time and everything later stay.
    assert_eq!(s.load_serial(oid(1), t2).unwrap(), record(&[], b"1b"));
    assert_eq!(s.load_serial(oid(2), t1).unwrap(), record(&[], b"2a"));
    assert_eq!(s.load_serial(oid(2), t3).unwrap(), record(&[], b"2c"));
    assert_eq!(s.load(oid(2)).unwrap(), (record(&[], b"2d"), t4));
    assert_eq!(
        s.history(oid(1), 10)
            .unwrap()
            .iter()
            .map(|h| h.tid)
            .collect::<Vec<_>>(),
        vec![t3, t2]
    );
    assert_eq!(s.history(oid(2), 10).unwrap().len(), 3);
    let r = s.load_before(oid(1), t2.next()).unwrap().unwrap();
    assert_eq!((r.start, r.end), (t2, Some(t3)));
    assert_eq!(s.load_before(oid(1), t2).unwrap(), None);
    // Transactions before the pack time are marked packed and leave the
    // undo log; later ones stay undoable.
    let statuses: Vec<_> = s
        .iterator(None, None)
        .unwrap()
        .map(|t| {
            let t = t.unwrap();
            (t.tid, t.status)
        })
        .collect();
    assert_eq!(
        statuses,
        vec![
            (t1, TxnStatus::Packed),
            (t2, TxnStatus::Packed),
            (t3, TxnStatus::Committed),
            (t4, TxnStatus::Committed)
        ]
    );
    if s.supports_undo() {
        let log: Vec<Tid> = s
            .undo_log(0, -20, None)
            .unwrap()
            .iter()
            .map(|e| e.tid)
            .collect();
        assert_eq!(log, vec![t4, t3]);
        let bad = commit_with(&*s, &meta("u"), BeginOptions::default(), |s, t| {
            s.undo(t, &support::b64(t2)).map(|_| ())
        });
        assert!(matches!(bad, Err(Error::Undo { .. })));
    }
    // Packing again to the same or an earlier time changes nothing.
    let size = s.size();
    s.pack(pack_at, true).unwrap();
    s.pack(t1.unix_time() - 10.0, true).unwrap();
    assert_eq!(s.size(), size);
    assert_eq!(s.iterator(None, None).unwrap().count(), 4);
    // 1900-01-01 00:00 UTC encodes to the all-zero tid, which ZODB refuses.
    assert!(matches!(
        s.pack(-2_208_988_800.0, true),
        Err(Error::FileStorage(_))
    ));
}

fn pack_keeps_what_undo_after_it_needs<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
    let s = make();
    if !s.supports_undo() {
        return;
    }
    // Object 2 is garbage, so the pack has something to free.
    let t1 = commit(
        &*s,
        &[
            (oid(0), Tid::ZERO, record(&[oid(1)], b"root")),
            (oid(1), Tid::ZERO, record(&[], b"1a")),
            (oid(2), Tid::ZERO, record(&[], b"2a")),
        ],
    )
    .unwrap();
    let t2 = commit(&*s, &[(oid(1), t1, record(&[], b"1b"))]).unwrap();
    let pack_at = pack_time_after(t2);
    // Undo t2 after the pack time: its record points back at t1's revision,
    // which was no longer current at the pack time.
    let (t3, _) = undo(&*s, t2).unwrap();
    s.pack(pack_at, true).unwrap();
    assert_eq!(s.load(oid(1)).unwrap(), (record(&[], b"1a"), t3));
    let txns: Vec<_> = s
        .iterator(None, None)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        txns.iter().map(|t| t.tid).collect::<Vec<_>>(),
        vec![t1, t2, t3]
    );
    let statuses: Vec<_> = txns.iter().map(|t| t.status).collect();
    assert_eq!(
        statuses,
        vec![TxnStatus::Packed, TxnStatus::Packed, TxnStatus::Committed]
    );
    assert!(matches!(s.load(oid(2)), Err(Error::PosKey { .. })));
    let undo_rec = txns[2].records.iter().find(|r| r.oid == oid(1)).unwrap();
    assert_eq!(undo_rec.data_txn, Some(t1));
    assert_eq!(undo_rec.data.as_deref(), Some(&record(&[], b"1a")[..]));
    // t1 keeps both object 1's revisions: the one current at the pack time
    // is t2's, the undo needs t1's.
    assert_eq!(
        txns[0].records.iter().filter(|r| r.oid == oid(1)).count(),
        1
    );
}

fn gc_removes_unreachable_objects<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
    for gc in [true, false] {
        let s = make();
        let t1 = commit(
            &*s,
            &[
                (oid(0), Tid::ZERO, record(&[oid(1)], b"root")),
                (oid(1), Tid::ZERO, record(&[oid(2)], b"one")),
                (oid(2), Tid::ZERO, record(&[oid(1)], b"two")),
                (oid(3), Tid::ZERO, record(&[oid(4)], b"garbage")),
                (oid(4), Tid::ZERO, record(&[oid(3)], b"garbage cycle")),
            ],
        )
        .unwrap();
        // Drop the root's reference to 1 (and so to 2); 5 becomes garbage
        // only after the pack time and stays.
        let t2 = commit(
            &*s,
            &[
                (oid(0), t1, record(&[oid(5)], b"root2")),
                (oid(5), Tid::ZERO, record(&[], b"five")),
            ],
        )
        .unwrap();
        let pack_at = pack_time_after(t2);
        let t3 = commit(&*s, &[(oid(0), t2, record(&[], b"root3"))]).unwrap();
        s.pack(pack_at, gc).unwrap();
        for o in [1, 2, 3, 4] {
            let got = s.load(oid(o));
            if gc {
                assert!(
                    matches!(got, Err(Error::PosKey { .. })),
                    "oid {o} survived gc: {got:?}"
                );
            } else {
                assert_eq!(got.unwrap().1, t1);
            }
        }
        assert_eq!(s.load(oid(5)).unwrap().1, t2);
        assert_eq!(s.load(oid(0)).unwrap().1, t3);
        assert_eq!(s.len(), if gc { 2 } else { 6 });
        let mut next = None;
        let mut walked = 0;
        while let Some(r) = s.record_iternext(next).unwrap() {
            walked += 1;
            next = r.next;
            if next.is_none() {
                break;
            }
        }
        assert_eq!(walked, s.len());
    }
}

fn gc_pack_failures<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
    // No root: KeyError, as in ZODB.
    let s = make();
    let t1 = commit(&*s, &[(oid(1), Tid::ZERO, record(&[], b"one"))]).unwrap();
    let at = pack_time_after(t1);
    let size = s.size();
    assert!(matches!(s.pack(at, true), Err(Error::Key(_))));
    assert_eq!(s.size(), size);
    s.pack(at, false).unwrap();
    // A root referencing a deleted object: KeyError, and nothing changes.
    let s = make();
    let t1 = commit(
        &*s,
        &[
            (oid(0), Tid::ZERO, record(&[oid(1)], b"root")),
            (oid(1), Tid::ZERO, record(&[], b"one")),
        ],
    )
    .unwrap();
    let t2 = commit_with(&*s, &meta("del"), BeginOptions::default(), |s, t| {
        s.delete_object(t, oid(1), t1)
    })
    .unwrap();
    let at = pack_time_after(t2);
    assert!(matches!(s.pack(at, true), Err(Error::Key(_))));
    assert_eq!(s.iterator(None, None).unwrap().count(), 2);
    assert_eq!(s.load_serial(oid(1), t1).unwrap(), record(&[], b"one"));
    // Packing an empty storage does nothing.
    let s = make();
    s.pack(TimeStamp::now().unix_time(), true).unwrap();
    assert_eq!(s.last_transaction(), Tid::ZERO);
}

fn close_then_closed<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
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
    assert!(matches!(s.iterator(None, None), Err(Error::Closed)));
    assert!(matches!(s.record_iternext(None), Err(Error::Closed)));
    assert!(matches!(
        s.pack(TimeStamp::now().unix_time(), true),
        Err(Error::Closed)
    ));
}

fn close_wakes_a_waiting_tpc_begin<S: Storage + 'static>(make: &dyn Fn() -> Fixture<S>) {
    let s = Arc::new(make());
    let _t = s.tpc_begin(&meta("held"), BeginOptions::default()).unwrap();
    let s2 = Arc::clone(&s);
    let (tx, rx) = mpsc::channel();
    let waiter = thread::spawn(move || {
        let r = s2.tpc_begin(&meta("waiting"), BeginOptions::default());
        tx.send(matches!(r, Err(Error::Closed))).unwrap();
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "tpc_begin did not wait"
    );
    s.close().unwrap();
    assert!(
        rx.recv_timeout(Duration::from_secs(10)).unwrap(),
        "waiting tpc_begin did not fail with Closed"
    );
    waiter.join().unwrap();
}

fn size_and_len_follow_commits<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
    let s = make();
    assert!(s.is_empty());
    let empty = s.size();
    let data = record(&[], b"a");
    commit(&*s, &[(oid(1), Tid::ZERO, data.clone())]).unwrap();
    // Data.fs arithmetic: 23-byte transaction header + user + description,
    // 42-byte data header + data, 8-byte redundant length.
    let txn = 23 + b"tester".len() as u64 + b"commit".len() as u64 + 42 + data.len() as u64 + 8;
    assert_eq!(s.size(), empty + txn);
    assert_eq!(s.len(), 1);
}

conformance_tests!(filestorage, support::file_storage);
