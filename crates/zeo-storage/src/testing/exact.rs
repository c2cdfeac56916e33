//! FileStorage's exact behaviour: the Data.fs size arithmetic,
//! backpointers written by undo and restore, and the outcome of pack and
//! garbage collection. FileStorage and the models that must match it byte
//! for byte run this tier besides the contract.

use super::{
    b64, commit, commit_with, external_gc_of, iteration_of, meta, oid, pack_of, pack_time_after,
    record, record_iteration_of, restore_of, undo, undo_id, undo_of, Check, Fixture,
};
use crate::{BeginOptions, Error, Storage, Tid, TimeStamp, TxnStatus};

/// New oids count up from 1 and past the highest oid stored.
pub fn new_oids_count_up<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
    let s = make();
    let a = s.new_oid().unwrap();
    let b = s.new_oid().unwrap();
    assert_eq!(a, oid(1), "oid 0 is the root, so the first new oid is 1");
    assert_eq!(b, oid(2));
    // Storing a higher oid moves the counter past it.
    commit(&*s, &[(oid(10), Tid::ZERO, record(&[], b"x"))]).unwrap();
    assert_eq!(s.new_oid().unwrap(), oid(11));
}

/// Restore commits under the given tid and writes backpointers for `prev_txn`.
pub fn restore_copies_with_backpointers<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
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
            restore_of(s).restore(t, oid(1), base, Some(&a), None)?;
            restore_of(s).restore(t, oid(2), base, Some(&a), None)
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
            restore_of(s).restore(t, oid(1), t2, Some(&a), Some(t1))?;
            restore_of(s).restore(t, oid(2), t2, None, None)
        },
    )
    .unwrap();
    assert_eq!(got, t2);
    assert_eq!(s.last_transaction(), t2);
    assert_eq!(s.load(oid(1)).unwrap(), (a.clone(), t2));
    assert!(matches!(s.load(oid(2)), Err(Error::PosKey { .. })));
    let txns: Vec<_> = iteration_of(&*s)
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

/// Undo writes backpointers to the undone revisions; ids are base64 tids.
pub fn undo_restores_previous_revisions<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
    let s = make();
    if s.as_undo().is_none() {
        return;
    }
    let [t1, t2, t3, t4] = super::contract::undo_and_redo(&*s);
    // The undo transaction points back at t1's data.
    let txn = iteration_of(&*s)
        .iterator(Some(t3), Some(t3))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(txn.records[0].data_txn, Some(t1));
    assert_eq!(txn.records[0].data.as_deref(), Some(&record(&[], b"a")[..]));
    assert_eq!(
        (txn.records[1].data.as_deref(), txn.records[1].data_txn),
        (None, None)
    );
    assert_eq!(s.history(oid(1), 10).unwrap().len(), 4);
    // The undo id is base64 of the tid, as ZODB spells it.
    let id = undo_id(&*s, t2);
    assert_eq!(id.len(), 12);
    assert_eq!(undo_id(&*s, t4), b64(t4));
}

/// Pack drops revisions not current at the pack time and marks transactions packed.
pub fn pack_drops_old_revisions<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
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
    pack_of(&*s).pack(pack_at, true).unwrap();
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
    let statuses: Vec<_> = iteration_of(&*s)
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
    if s.as_undo().is_some() {
        let log: Vec<Tid> = undo_of(&*s)
            .undo_log(0, -20, None)
            .unwrap()
            .iter()
            .map(|e| e.tid)
            .collect();
        assert_eq!(log, vec![t4, t3]);
        let bad = commit_with(&*s, &meta("u"), BeginOptions::default(), |s, t| {
            undo_of(s).undo(t, &b64(t2)).map(|_| ())
        });
        assert!(matches!(bad, Err(Error::Undo { .. })));
    }
    // Packing again to the same or an earlier time changes nothing.
    let size = s.size();
    pack_of(&*s).pack(pack_at, true).unwrap();
    pack_of(&*s).pack(t1.unix_time() - 10.0, true).unwrap();
    assert_eq!(s.size(), size);
    assert_eq!(iteration_of(&*s).iterator(None, None).unwrap().count(), 4);
    // 1900-01-01 00:00 UTC encodes to the all-zero tid, which ZODB refuses.
    assert!(matches!(
        pack_of(&*s).pack(-2_208_988_800.0, true),
        Err(Error::FileStorage(_))
    ));
}

/// Pack keeps revisions a later undo points back to.
pub fn pack_keeps_what_undo_after_it_needs<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
    let s = make();
    if s.as_undo().is_none() {
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
    pack_of(&*s).pack(pack_at, true).unwrap();
    assert_eq!(s.load(oid(1)).unwrap(), (record(&[], b"1a"), t3));
    let txns: Vec<_> = iteration_of(&*s)
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

/// A garbage-collecting pack removes objects unreachable from the root.
pub fn gc_removes_unreachable_objects<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
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
        pack_of(&*s).pack(pack_at, gc).unwrap();
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
        while let Some(r) = record_iteration_of(&*s).record_iternext(next).unwrap() {
            walked += 1;
            next = r.next;
            if next.is_none() {
                break;
            }
        }
        assert_eq!(walked, s.len());
    }
}

/// A garbage-collecting pack fails without changes when the root is missing or dangling.
pub fn gc_pack_failures<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
    // No root: KeyError, as in ZODB.
    let s = make();
    let t1 = commit(&*s, &[(oid(1), Tid::ZERO, record(&[], b"one"))]).unwrap();
    let at = pack_time_after(t1);
    let size = s.size();
    assert!(matches!(pack_of(&*s).pack(at, true), Err(Error::Key(_))));
    assert_eq!(s.size(), size);
    pack_of(&*s).pack(at, false).unwrap();
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
        external_gc_of(s).delete_object(t, oid(1), t1)
    })
    .unwrap();
    let at = pack_time_after(t2);
    assert!(matches!(pack_of(&*s).pack(at, true), Err(Error::Key(_))));
    assert_eq!(iteration_of(&*s).iterator(None, None).unwrap().count(), 2);
    assert_eq!(s.load_serial(oid(1), t1).unwrap(), record(&[], b"one"));
    // Packing an empty storage does nothing.
    let s = make();
    pack_of(&*s)
        .pack(TimeStamp::now().unix_time(), true)
        .unwrap();
    assert_eq!(s.last_transaction(), Tid::ZERO);
}

/// `size` follows the Data.fs arithmetic and `len` counts objects.
pub fn size_and_len_follow_commits<S: Storage>(make: &dyn Fn() -> Fixture<S>) {
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

/// Every check of this tier, by name.
pub fn checks<S: Storage + 'static>() -> Vec<(&'static str, Check<S>)> {
    vec![
        ("new_oids_count_up", new_oids_count_up::<S>),
        (
            "restore_copies_with_backpointers",
            restore_copies_with_backpointers::<S>,
        ),
        (
            "undo_restores_previous_revisions",
            undo_restores_previous_revisions::<S>,
        ),
        ("pack_drops_old_revisions", pack_drops_old_revisions::<S>),
        (
            "pack_keeps_what_undo_after_it_needs",
            pack_keeps_what_undo_after_it_needs::<S>,
        ),
        (
            "gc_removes_unreachable_objects",
            gc_removes_unreachable_objects::<S>,
        ),
        ("gc_pack_failures", gc_pack_failures::<S>),
        (
            "size_and_len_follow_commits",
            size_and_len_follow_commits::<S>,
        ),
    ]
}
