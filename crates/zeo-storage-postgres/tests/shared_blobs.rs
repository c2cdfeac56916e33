//! `shared-blob-dir true`: blobs live only in a directory every server
//! and RelStorage client shares, in ZODB's bushy layout, placed at the vote
//! under the commit lock and read back by Python RelStorage (and the
//! reverse).

mod pgx_support;

use pgx_support::{connect, count, relstorage, MODES};
use zeo_storage::testing::{commit_with, meta, record, undo};
use zeo_storage::{BeginOptions, BlobData, BlobSource, Blobs, Oid, Storage, Tid};
use zeo_storage_postgres::{HistoryMode, PostgresOptions, PostgresStorage, COMMIT_LOCK};
use zeo_testkit::postgres::TestDatabase;

fn open(db: &TestDatabase, dir: &std::path::Path, mode: HistoryMode) -> PostgresStorage {
    let mut o = PostgresOptions::new(db.dsn());
    o.history = mode;
    o.blob_dir = Some(dir.to_owned());
    o.shared_blob_dir = true;
    PostgresStorage::open(o).unwrap()
}

fn path_of(blobs: &dyn Blobs, oid: Oid, tid: Tid) -> std::path::PathBuf {
    match blobs.load_blob(oid, tid).unwrap() {
        BlobData::Path(p) => p,
        _ => panic!("a shared blob directory hands out paths"),
    }
}

fn stream(bytes: &[u8]) -> BlobSource {
    BlobSource::Stream(Box::new(std::io::Cursor::new(bytes.to_vec())))
}

fn store_blob(s: &PostgresStorage, oid: Oid, serial: Tid, bytes: &[u8]) -> Tid {
    let blobs = s.as_blobs().unwrap();
    commit_with(s, &meta("blob"), BeginOptions::default(), |_, t| {
        blobs.store_blob(t, oid, serial, &record(&[], b"blob"), stream(bytes))
    })
    .unwrap()
}

/// Whether some session holds RelStorage's commit lock.
fn commit_lock_taken(db: &TestDatabase) -> bool {
    let mut c = connect(&db.dsn());
    let got: bool = c
        .query_one("SELECT pg_try_advisory_lock($1)", &[&COMMIT_LOCK])
        .unwrap()
        .get(0);
    if got {
        c.execute("SELECT pg_advisory_unlock($1)", &[&COMMIT_LOCK])
            .unwrap();
    }
    !got
}

#[test]
fn a_blob_is_a_file_in_the_bushy_layout_and_no_blob_chunk_row() {
    for (mode, name) in MODES {
        let db = TestDatabase::create(&format!("shared_layout_{name}"));
        let dir = tempfile::tempdir().unwrap();
        let s = open(&db, dir.path(), mode);
        let t1 = store_blob(&s, Oid(0x2a), Tid::ZERO, b"shared bytes");
        let expected = dir
            .path()
            .join("0x00/0x00/0x00/0x00/0x00/0x00/0x00/0x2a")
            .join(format!("{}.blob", zeo_storage::blobdir::tid_repr(t1)));
        assert_eq!(std::fs::read(&expected).unwrap(), b"shared bytes", "{name}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join(".layout")).unwrap(),
            "bushy"
        );
        let blobs = s.as_blobs().unwrap();
        assert_eq!(path_of(blobs, Oid(0x2a), t1), expected);
        assert!(blobs
            .load_blob(Oid(0x2a), t1.next())
            .unwrap_err()
            .is_pos_key());
        let mut c = connect(&db.dsn());
        assert_eq!(
            count(&mut c, "SELECT count(*) FROM blob_chunk"),
            0,
            "{name}"
        );
        let large_objects = "SELECT count(*) FROM pg_largeobject_metadata";
        assert_eq!(count(&mut c, large_objects), 0, "{name}");
        // Nothing waits in the upload directory.
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }
}

#[test]
fn the_commit_lock_is_held_from_the_vote_and_an_abort_removes_the_files() {
    let db = TestDatabase::create("shared_lock");
    let dir = tempfile::tempdir().unwrap();
    let s = open(&db, dir.path(), HistoryMode::Preserving);
    let blobs = s.as_blobs().unwrap();
    let txn = s
        .tpc_begin(&meta("abort"), BeginOptions::default())
        .unwrap();
    blobs
        .store_blob(txn, Oid(1), Tid::ZERO, &record(&[], b"b"), stream(b"gone"))
        .unwrap();
    assert!(!commit_lock_taken(&db), "taken before the vote");
    s.tpc_vote(txn).unwrap();
    assert!(commit_lock_taken(&db), "not held from the vote");
    let placed: Vec<_> =
        std::fs::read_dir(dir.path().join("0x00/0x00/0x00/0x00/0x00/0x00/0x00/0x01"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
    assert_eq!(placed.len(), 1, "placed at the vote");
    s.tpc_abort(txn);
    assert!(!placed[0].exists(), "an abort leaves the file");
    assert!(!commit_lock_taken(&db), "an abort keeps the lock");
    // A transaction without blobs takes the lock at the finish only.
    let txn = s
        .tpc_begin(&meta("plain"), BeginOptions::default())
        .unwrap();
    s.store(txn, Oid(2), Tid::ZERO, &record(&[], b"x")).unwrap();
    s.tpc_vote(txn).unwrap();
    assert!(!commit_lock_taken(&db), "held from the vote without blobs");
    s.tpc_finish(txn, &mut |_| {}).unwrap();
}

#[test]
fn undo_links_the_restored_file_and_pack_removes_packed_files() {
    let db = TestDatabase::create("shared_undo");
    let dir = tempfile::tempdir().unwrap();
    let s = open(&db, dir.path(), HistoryMode::Preserving);
    let t1 = store_blob(&s, Oid(1), Tid::ZERO, b"first");
    let t2 = store_blob(&s, Oid(1), t1, b"second");
    let (t3, _) = undo(&s, t2).unwrap();
    let blobs = s.as_blobs().unwrap();
    assert_eq!(std::fs::read(path_of(blobs, Oid(1), t3)).unwrap(), b"first");
    let old = path_of(blobs, Oid(1), t1);
    s.as_pack()
        .unwrap()
        .pack(zeo_storage::TimeStamp::now().unix_time() + 60.0, false)
        .unwrap();
    assert!(!old.exists(), "a packed revision's file stays");
    assert_eq!(std::fs::read(path_of(blobs, Oid(1), t3)).unwrap(), b"first");
}

#[test]
fn relstorage_reads_our_shared_blobs_and_we_read_its() {
    for (mode, name) in MODES {
        let db = TestDatabase::create(&format!("shared_interop_{name}"));
        let dir = tempfile::tempdir().unwrap();
        let blob_dir = dir.path().join("blobs");
        let work = dir.path();
        let s = open(&db, &blob_dir, mode);
        let ours: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let t1 = store_blob(&s, Oid(7), Tid::ZERO, &ours);
        let shared_mode = format!("{name}+shared");
        let out = work.join("read.bin");
        relstorage(
            "pgx_blobs.py",
            &[
                "read",
                &db.dsn(),
                &shared_mode,
                blob_dir.to_str().unwrap(),
                &7.to_string(),
                &t1.0.to_string(),
                out.to_str().unwrap(),
            ],
            work,
        );
        assert_eq!(std::fs::read(&out).unwrap(), ours, "{name}");
        // The reverse: RelStorage commits into the same directory.
        let theirs = work.join("theirs.bin");
        std::fs::write(&theirs, b"written by RelStorage").unwrap();
        let line = relstorage(
            "pgx_blobs.py",
            &[
                "store",
                &db.dsn(),
                &shared_mode,
                blob_dir.to_str().unwrap(),
                theirs.to_str().unwrap(),
            ],
            work,
        );
        let ids: Vec<u64> = line
            .split_whitespace()
            .map(|w| w.parse().unwrap())
            .collect();
        let (oid, tid) = (Oid(ids[0]), Tid(ids[1]));
        let blobs = s.as_blobs().unwrap();
        assert_eq!(
            std::fs::read(path_of(blobs, oid, tid)).unwrap(),
            b"written by RelStorage",
            "{name}"
        );
        let mut c = connect(&db.dsn());
        assert_eq!(
            count(&mut c, "SELECT count(*) FROM blob_chunk"),
            0,
            "{name}"
        );
    }
}

#[test]
fn a_gc_pack_removes_an_unreachable_objects_files() {
    for (mode, name) in MODES {
        let db = TestDatabase::create(&format!("shared_gc_{name}"));
        let dir = tempfile::tempdir().unwrap();
        let s = open(&db, dir.path(), mode);
        // Oid 1 is referenced from nowhere (there is no root).
        let t1 = store_blob(&s, Oid(1), Tid::ZERO, b"unreachable");
        let file = path_of(s.as_blobs().unwrap(), Oid(1), t1);
        s.as_pack()
            .unwrap()
            .pack(zeo_storage::TimeStamp::now().unix_time() + 60.0, true)
            .unwrap();
        assert!(!file.exists(), "{name}");
        assert!(
            !file.parent().unwrap().exists(),
            "{name}: empty directory kept"
        );
    }
}
