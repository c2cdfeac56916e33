//! The advisory locks are RelStorage's: a session holding the commit lock
//! (−1), an object's lock (its oid) or the pack lock (−2) the way a
//! RelStorage process does holds up our commits, undos and
//! `check_current_serial`s, and `commit-lock-timeout` bounds the wait.

use std::time::Duration;

use zeo_storage::testing::{commit, record};
use zeo_storage::{undo_id, BeginOptions, Error, Oid, Storage, Tid, TransactionMetaData};
use zeo_storage_postgres::{PostgresOptions, PostgresStorage, COMMIT_LOCK, PACK_LOCK};
use zeo_testkit::postgres::TestDatabase;

fn open(db: &TestDatabase) -> PostgresStorage {
    let mut o = PostgresOptions::new(db.dsn());
    o.commit_lock_timeout = Duration::from_millis(300);
    PostgresStorage::open(o).unwrap()
}

/// Another session, as a RelStorage process is.
fn other(db: &TestDatabase) -> postgres::Client {
    postgres::Client::connect(&db.dsn(), postgres::NoTls).unwrap()
}

fn begin_store(s: &PostgresStorage, oid: Oid, serial: Tid) -> zeo_storage::TxnHandle {
    let t = s
        .tpc_begin(&TransactionMetaData::default(), BeginOptions::default())
        .unwrap();
    s.store(t, oid, serial, &record(&[], b"x")).unwrap();
    t
}

#[test]
fn the_commit_lock_held_elsewhere_times_out_the_finish() {
    let db = TestDatabase::create("commit lock");
    let s = open(&db);
    let mut rs = other(&db);
    rs.execute("SELECT pg_advisory_lock($1)", &[&COMMIT_LOCK])
        .unwrap();
    let t = begin_store(&s, Oid(1), Tid::ZERO);
    s.tpc_vote(t).unwrap();
    let err = s
        .tpc_finish(t, &mut |_| panic!("not committed"))
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    s.tpc_abort(t);
    assert!(s.load(Oid(1)).unwrap_err().is_pos_key());
    rs.execute("SELECT pg_advisory_unlock($1)", &[&COMMIT_LOCK])
        .unwrap();
    let t = begin_store(&s, Oid(1), Tid::ZERO);
    s.tpc_vote(t).unwrap();
    s.tpc_finish(t, &mut |_| {}).unwrap();
}

#[test]
fn an_object_locked_elsewhere_times_out_the_vote() {
    let db = TestDatabase::create("object lock");
    let s = open(&db);
    let t1 = commit(&s, &[(Oid(5), Tid::ZERO, record(&[], b"a"))]).unwrap();
    let mut rs = other(&db);
    rs.execute("SELECT pg_advisory_lock(5)", &[]).unwrap();
    let t = begin_store(&s, Oid(5), t1);
    let err = s.tpc_vote(t).unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    s.tpc_abort(t);
    // Other objects are not held up.
    commit(&s, &[(Oid(6), Tid::ZERO, record(&[], b"b"))]).unwrap();
}

#[test]
fn check_current_serial_fails_on_an_object_being_committed_elsewhere() {
    let db = TestDatabase::create("shared lock");
    let s = open(&db);
    let t1 = commit(&s, &[(Oid(5), Tid::ZERO, record(&[], b"a"))]).unwrap();
    let mut rs = other(&db);
    rs.execute("SELECT pg_advisory_lock(5)", &[]).unwrap();
    let t = begin_store(&s, Oid(6), Tid::ZERO);
    s.check_current_serial(t, Oid(5), t1).unwrap();
    match s.tpc_vote(t) {
        Err(Error::ReadConflict { oid, .. }) => assert_eq!(oid, Oid(5)),
        other => panic!("expected a read conflict, got {other:?}"),
    }
    s.tpc_abort(t);
    rs.execute("SELECT pg_advisory_unlock(5)", &[]).unwrap();
    // Our shared lock and another reader's shared lock coexist.
    rs.execute("SELECT pg_advisory_lock_shared(5)", &[])
        .unwrap();
    let t = begin_store(&s, Oid(6), Tid::ZERO);
    s.check_current_serial(t, Oid(5), t1).unwrap();
    s.tpc_vote(t).unwrap();
    s.tpc_finish(t, &mut |_| {}).unwrap();
}

#[test]
fn undo_waits_for_no_pack() {
    let db = TestDatabase::create("pack lock");
    let s = open(&db);
    let t1 = commit(&s, &[(Oid(1), Tid::ZERO, record(&[], b"a"))]).unwrap();
    let mut rs = other(&db);
    rs.execute("SELECT pg_advisory_lock($1)", &[&PACK_LOCK])
        .unwrap();
    let undo = s.as_undo().unwrap();
    let t = s
        .tpc_begin(&TransactionMetaData::default(), BeginOptions::default())
        .unwrap();
    undo.undo(t, &undo_id(t1)).unwrap();
    let err = s.tpc_vote(t).unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    s.tpc_abort(t);
    rs.execute("SELECT pg_advisory_unlock($1)", &[&PACK_LOCK])
        .unwrap();
    let t = s
        .tpc_begin(&TransactionMetaData::default(), BeginOptions::default())
        .unwrap();
    undo.undo(t, &undo_id(t1)).unwrap();
    s.tpc_vote(t).unwrap();
    s.tpc_finish(t, &mut |_| {}).unwrap();
    assert!(s.load(Oid(1)).unwrap_err().is_pos_key());
}
