//! Blobs through the storage: large objects in the database, the blob
//! directory a cache; undo shares the restored revision's large object.

use zeo_storage::testing::{commit_with, meta, record, undo};
use zeo_storage::{BeginOptions, BlobData, BlobSource, Blobs, Oid, Storage, Tid};
use zeo_storage_postgres::{HistoryMode, PostgresOptions, PostgresStorage};
use zeo_testkit::postgres::TestDatabase;

fn open(db: &TestDatabase, dir: &std::path::Path, mode: HistoryMode) -> PostgresStorage {
    let mut o = PostgresOptions::new(db.dsn());
    o.history = mode;
    o.blob_dir = Some(dir.to_owned());
    PostgresStorage::open(o).unwrap()
}

fn read(blobs: &dyn Blobs, oid: Oid, tid: Tid) -> Vec<u8> {
    match blobs.load_blob(oid, tid).unwrap() {
        BlobData::Path(p) => std::fs::read(p).unwrap(),
        BlobData::Reader(mut r) => {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut r, &mut v).unwrap();
            v
        }
        _ => unreachable!("a new way of handing out blobs"),
    }
}

fn store_blob(s: &PostgresStorage, oid: Oid, serial: Tid, bytes: &[u8]) -> Tid {
    let blobs = s.as_blobs().unwrap();
    let source = BlobSource::Stream(Box::new(std::io::Cursor::new(bytes.to_vec())));
    commit_with(s, &meta("blob"), BeginOptions::default(), |_, t| {
        blobs.store_blob(t, oid, serial, &record(&[], b"blob"), source)
    })
    .unwrap()
}

fn large_objects(db: &TestDatabase) -> i64 {
    let mut c = postgres::Client::connect(&db.dsn(), postgres::NoTls).unwrap();
    c.query_one("SELECT count(*) FROM pg_largeobject_metadata", &[])
        .unwrap()
        .get(0)
}

#[test]
fn blobs_load_from_the_database_when_the_cache_is_empty() {
    let db = TestDatabase::create("blob cache");
    let dir = tempfile::tempdir().unwrap();
    let s = open(&db, dir.path(), HistoryMode::Preserving);
    let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let t1 = store_blob(&s, Oid(1), Tid::ZERO, &bytes);
    drop(s);
    // Another server, another (empty) cache, the same database.
    let other = tempfile::tempdir().unwrap();
    let s = open(&db, other.path(), HistoryMode::Preserving);
    let blobs = s.as_blobs().unwrap();
    assert_eq!(read(blobs, Oid(1), t1), bytes);
    // Now cached: the second load is the same file.
    assert_eq!(read(blobs, Oid(1), t1), bytes);
    assert!(blobs.load_blob(Oid(1), t1.next()).unwrap_err().is_pos_key());
}

#[test]
fn undo_shares_the_restored_revisions_large_object() {
    let db = TestDatabase::create("blob undo");
    let dir = tempfile::tempdir().unwrap();
    let s = open(&db, dir.path(), HistoryMode::Preserving);
    let t1 = store_blob(&s, Oid(1), Tid::ZERO, b"first");
    let t2 = store_blob(&s, Oid(1), t1, b"second");
    assert_eq!(large_objects(&db), 2);
    let (t3, oids) = undo(&s, t2).unwrap();
    assert_eq!(oids, vec![Oid(1)]);
    let blobs = s.as_blobs().unwrap();
    assert_eq!(read(blobs, Oid(1), t3), b"first");
    assert_eq!(read(blobs, Oid(1), t2), b"second");
    assert_eq!(large_objects(&db), 2, "undo copied the bytes");
}

#[test]
fn a_history_free_object_keeps_only_its_current_blob() {
    let db = TestDatabase::create("blob hf");
    let dir = tempfile::tempdir().unwrap();
    let s = open(&db, dir.path(), HistoryMode::Free);
    let t1 = store_blob(&s, Oid(1), Tid::ZERO, b"first");
    let t2 = store_blob(&s, Oid(1), t1, b"second");
    assert_eq!(large_objects(&db), 1, "the replaced blob was not unlinked");
    let blobs = s.as_blobs().unwrap();
    assert_eq!(read(blobs, Oid(1), t2), b"second");
    assert!(blobs.load_blob(Oid(1), t1).unwrap_err().is_pos_key());
}
