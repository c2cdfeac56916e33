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

/// A `BTrees.Length.Length` record at `n`.
fn length(n: i64) -> Vec<u8> {
    let class = zeo_pickle::Value::global("BTrees.Length", "Length");
    zeo_pickle::encode_record(&class, &zeo_pickle::Value::Int(n)).unwrap()
}

#[test]
fn undo_over_a_later_revision_resolves_a_known_class_as_filestorage_does() {
    let db = TestDatabase::create("undo resolve");
    let s = PostgresStorage::open(PostgresOptions::new(db.dsn())).unwrap();
    let t1 = commit(&s, &[(Oid(1), Tid::ZERO, length(10))]).unwrap();
    let t2 = commit(&s, &[(Oid(1), t1, length(11))]).unwrap();
    let t3 = commit(&s, &[(Oid(1), t2, length(16))]).unwrap();
    // Undoing t2's +1 under t3's +5: 16 + 10 - 11.
    let (t4, oids) = undo(&s, t2).unwrap();
    assert!(t4 > t3);
    assert_eq!(oids, vec![Oid(1)]);
    assert_eq!(s.load(Oid(1)).unwrap(), (length(15), t4));
}

#[test]
fn undo_over_a_later_revision_of_an_unknown_class_is_refused() {
    let db = TestDatabase::create("undo unresolved");
    let s = PostgresStorage::open(PostgresOptions::new(db.dsn())).unwrap();
    let t1 = commit(&s, &[(Oid(1), Tid::ZERO, record(&[], b"1"))]).unwrap();
    let t2 = commit(&s, &[(Oid(1), t1, record(&[], b"2"))]).unwrap();
    let t3 = commit(&s, &[(Oid(1), t2, record(&[], b"3"))]).unwrap();
    match undo(&s, t2) {
        Err(Error::Undo { oid, reason }) => {
            assert_eq!(oid, Some(Oid(1)));
            assert!(reason.contains("modified by a later"), "{reason}");
        }
        other => panic!("expected an undo error, got {other:?}"),
    }
    assert_eq!(s.load(Oid(1)).unwrap().1, t3);
}
