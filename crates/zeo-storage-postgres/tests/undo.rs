//! Undo beyond the contract: what FileStorage also allows.

use zeo_storage::testing::{commit, record, undo};
use zeo_storage::{Error, Oid, Storage, Tid};
use zeo_storage_postgres::{PostgresOptions, PostgresStorage};
use zeo_testkit::postgres::TestDatabase;

#[test]
fn a_change_brought_back_by_an_undo_can_itself_be_undone() {
    let db = TestDatabase::create("undo again");
    let s = PostgresStorage::open(PostgresOptions::new(db.dsn())).unwrap();
    let (r1, r2, r3) = (record(&[], b"1"), record(&[], b"2"), record(&[], b"3"));
    let t1 = commit(&s, &[(Oid(1), Tid::ZERO, r1.clone())]).unwrap();
    let t2 = commit(&s, &[(Oid(1), t1, r2.clone())]).unwrap();
    let t3 = commit(&s, &[(Oid(1), t2, r3)]).unwrap();
    let (t4, _) = undo(&s, t3).unwrap();
    assert_eq!(s.load(Oid(1)).unwrap(), (r2, t4));
    // t2 is no longer current, but the current state is t2's.
    let (t5, oids) = undo(&s, t2).unwrap();
    assert_eq!(oids, vec![Oid(1)]);
    assert_eq!(s.load(Oid(1)).unwrap(), (r1, t5));
    // The state is t1's again: its creation can be undone too.
    undo(&s, t1).unwrap();
    assert!(s.load(Oid(1)).unwrap_err().is_pos_key());
}

#[test]
fn a_creation_followed_by_other_states_cannot_be_undone() {
    let db = TestDatabase::create("undo add");
    let s = PostgresStorage::open(PostgresOptions::new(db.dsn())).unwrap();
    let t1 = commit(&s, &[(Oid(1), Tid::ZERO, record(&[], b"1"))]).unwrap();
    commit(&s, &[(Oid(1), t1, record(&[], b"2"))]).unwrap();
    match undo(&s, t1) {
        Err(Error::Undo { oid, reason }) => {
            assert_eq!(oid, Some(Oid(1)));
            assert!(reason.contains("add transaction"), "{reason}");
        }
        other => panic!("expected an undo error, got {other:?}"),
    }
}
