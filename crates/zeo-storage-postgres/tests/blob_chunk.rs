//! Blobs in `blob_chunk` large objects, against databases and blobs
//! Python RelStorage 4.3 writes and reads.

mod pgx_support;

use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;

use pgx_support::{connect, count, relstorage, MODES};
use postgres::GenericClient;
use zeo_storage::{Oid, Tid};
use zeo_storage_postgres::testing_internals::blob_chunk::{self, IO_CHUNK};
use zeo_storage_postgres::HistoryMode;
use zeo_testkit::postgres::TestDatabase;

const BIG: usize = 20 * 1024 * 1024;

/// Deterministic bytes that no shifted or truncated copy matches.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A reader that records the largest buffer it was asked to fill.
struct CountingReader<R> {
    inner: R,
    largest_request: usize,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.largest_request = self.largest_request.max(buf.len());
        self.inner.read(buf)
    }
}

/// A writer that checks what it receives against the expected bytes
/// without keeping them, and records the largest single write.
struct CheckingWriter<'a> {
    expected: &'a [u8],
    seen: usize,
    writes: usize,
    largest_write: usize,
}

impl Write for CheckingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let end = self.seen + buf.len();
        assert!(end <= self.expected.len(), "more bytes than stored");
        assert!(
            buf == &self.expected[self.seen..end],
            "bytes differ at {}",
            self.seen
        );
        self.seen = end;
        self.writes += 1;
        self.largest_write = self.largest_write.max(buf.len());
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn large_objects(client: &mut postgres::Client) -> i64 {
    count(client, "SELECT count(*) FROM pg_largeobject_metadata")
}

/// RelStorage commits one blob per file; returns (oid, tids).
fn relstorage_store(db: &TestDatabase, mode: &str, dir: &Path, files: &[&Path]) -> (Oid, Vec<Tid>) {
    let dsn = db.dsn();
    let cache = dir.join(format!("rs-store-{}", files.len()));
    let mut args = vec!["store", &dsn, mode, cache.to_str().unwrap()];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    let out = relstorage("pgx_blobs.py", &args, dir);
    let ids: Vec<u64> = out
        .split_whitespace()
        .map(|w| w.parse().expect(&out))
        .collect();
    (Oid(ids[0]), ids[1..].iter().map(|&t| Tid(t)).collect())
}

/// RelStorage loads the blob of (oid, tid) with an empty cache.
fn relstorage_read(db: &TestDatabase, mode: &str, dir: &Path, oid: Oid, tid: Tid) -> Vec<u8> {
    let cache = dir.join(format!("rs-read-{}", tid.0));
    let out = dir.join(format!("rs-read-{}.out", tid.0));
    relstorage(
        "pgx_blobs.py",
        &[
            "read",
            &db.dsn(),
            mode,
            cache.to_str().unwrap(),
            &oid.0.to_string(),
            &tid.0.to_string(),
            out.to_str().unwrap(),
        ],
        dir,
    );
    fs::read(out).unwrap()
}

/// Writes a new revision of `oid` (same state) at the next tid, in SQL,
/// standing in for the storage's commit.
fn commit_revision(tx: &mut impl GenericClient, mode: HistoryMode, oid: Oid) -> Tid {
    let oid = oid.0 as i64;
    let last: i64 = tx
        .query_one("SELECT max(tid) FROM object_state", &[])
        .unwrap()
        .get(0);
    let tid = last + 1;
    match mode {
        HistoryMode::Preserving => {
            tx.execute(
                "INSERT INTO transaction (tid, username, description) VALUES ($1, '', '')",
                &[&tid],
            )
            .unwrap();
            tx.execute(
                "INSERT INTO object_state (zoid, tid, prev_tid, md5, state_size, state)
                 SELECT zoid, $2, tid, md5, state_size, state FROM object_state o
                 WHERE zoid = $1 AND tid = (SELECT tid FROM current_object WHERE zoid = $1)",
                &[&oid, &tid],
            )
            .unwrap();
            tx.execute(
                "UPDATE current_object SET tid = $2 WHERE zoid = $1",
                &[&oid, &tid],
            )
            .unwrap();
        }
        HistoryMode::Free => {
            tx.execute(
                "UPDATE object_state SET tid = $2 WHERE zoid = $1",
                &[&oid, &tid],
            )
            .unwrap();
        }
    }
    Tid(tid as u64)
}

#[test]
fn twenty_megabytes_round_trip_with_relstorage_in_both_modes() {
    for (mode, name) in MODES {
        let dir = tempfile::tempdir().unwrap();
        let db = TestDatabase::create(&format!("pgx_blob_rt_{name}"));
        let theirs = pattern(3 * 1024 * 1024 + 17, 1);
        let theirs_path = dir.path().join("theirs");
        fs::write(&theirs_path, &theirs).unwrap();
        let (oid, tids) = relstorage_store(&db, name, dir.path(), &[&theirs_path]);
        let mut client = connect(&db.dsn());

        // We read the blob RelStorage stored, streamed in bounded pieces.
        let mut check = CheckingWriter {
            expected: &theirs,
            seen: 0,
            writes: 0,
            largest_write: 0,
        };
        let size = blob_chunk::download(&mut client, oid, tids[0], &mut check).unwrap();
        assert_eq!(
            (size as usize, check.seen),
            (theirs.len(), theirs.len()),
            "{name}"
        );
        assert!(
            check.largest_write <= IO_CHUNK && check.writes >= 4,
            "{name}: {} writes",
            check.writes
        );

        // We commit a 20 MB blob as a new revision through the temp table.
        let ours = pattern(BIG, 2);
        let mut tx = client.transaction().unwrap();
        blob_chunk::ensure_temp_table(&mut tx).unwrap();
        let mut reader = CountingReader {
            inner: &ours[..],
            largest_request: 0,
        };
        assert_eq!(
            blob_chunk::upload_temp(&mut tx, oid, &mut reader).unwrap(),
            BIG as u64
        );
        assert!(
            reader.largest_request <= IO_CHUNK,
            "{name}: asked for {}",
            reader.largest_request
        );
        let tid = commit_revision(&mut tx, mode, oid);
        assert_eq!(
            blob_chunk::move_temp_to_committed(&mut tx, mode, tid, &[oid]).unwrap(),
            1
        );
        tx.commit().unwrap();

        // Byte-exact through a file, and RelStorage reads it too.
        let file = dir.path().join("ours.blob");
        assert_eq!(
            blob_chunk::download_to_file(&mut client, oid, tid, &file).unwrap(),
            BIG as u64
        );
        assert!(
            fs::read(&file).unwrap() == ours,
            "{name}: downloaded bytes differ"
        );
        assert!(
            relstorage_read(&db, name, dir.path(), oid, tid) == ours,
            "{name}: RelStorage read other bytes"
        );
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "{name}: partial downloads left: {leftovers:?}"
        );

        // History-preserving keeps the old revision's blob; history-free
        // replaced it and the trigger freed its large object.
        match mode {
            HistoryMode::Preserving => {
                assert!(relstorage_read(&db, name, dir.path(), oid, tids[0]) == theirs);
                assert_eq!(large_objects(&mut client), 2);
            }
            _ => {
                let err = blob_chunk::chunks_of(&mut client, oid, tids[0]).unwrap_err();
                assert!(err.is_pos_key(), "{name}: {err}");
                assert_eq!(large_objects(&mut client), 1);
            }
        }
    }
}

#[test]
fn a_missing_blob_is_a_pos_key_error_naming_the_revision() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::create("pgx_blob_missing");
    let file = dir.path().join("b");
    fs::write(&file, b"x").unwrap();
    let (oid, tids) = relstorage_store(&db, "hp", dir.path(), &[&file]);
    let mut client = connect(&db.dsn());
    for (o, t) in [(oid, Tid(tids[0].0 + 1)), (Oid(oid.0 + 1000), tids[0])] {
        match blob_chunk::chunks_of(&mut client, o, t) {
            Err(zeo_storage::Error::PosKey { oid, serial }) => {
                assert_eq!((oid, serial), (o, Some(t)))
            }
            other => panic!("{o} {t}: {other:?}"),
        }
        let mut sink = Vec::new();
        assert!(blob_chunk::download(&mut client, o, t, &mut sink)
            .unwrap_err()
            .is_pos_key());
        let target = dir.path().join("never");
        assert!(blob_chunk::download_to_file(&mut client, o, t, &target)
            .unwrap_err()
            .is_pos_key());
        assert!(!target.exists());
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1 + 1,
            "only `b` and the store cache"
        );
    }
}

#[test]
fn staging_twice_or_discarding_frees_the_staged_large_object() {
    let db = TestDatabase::create("pgx_blob_stage");
    let mut client = with_bare_blob_chunk(&db);
    let mut tx = client.transaction().unwrap();
    blob_chunk::ensure_temp_table(&mut tx).unwrap();
    blob_chunk::upload_temp(&mut tx, Oid(7), &mut &b"first"[..]).unwrap();
    blob_chunk::upload_temp(&mut tx, Oid(7), &mut &b"second"[..]).unwrap();
    blob_chunk::upload_temp(&mut tx, Oid(8), &mut &b""[..]).unwrap();
    let staged = count_in(&mut tx, "SELECT count(*) FROM temp_blob_chunk");
    let objects = count_in(&mut tx, "SELECT count(*) FROM pg_largeobject_metadata");
    assert_eq!((staged, objects), (2, 2));
    blob_chunk::discard_temp(&mut tx, Some(Oid(8))).unwrap();
    assert_eq!(
        count_in(&mut tx, "SELECT count(*) FROM pg_largeobject_metadata"),
        1
    );
    blob_chunk::discard_temp(&mut tx, None).unwrap();
    assert_eq!(
        count_in(&mut tx, "SELECT count(*) FROM pg_largeobject_metadata"),
        0
    );
    tx.commit().unwrap();
}

/// A connection to `db` after giving it a bare `blob_chunk` table, for
/// tests of the staging table alone.
fn with_bare_blob_chunk(db: &TestDatabase) -> postgres::Client {
    let mut client = connect(&db.dsn());
    client
        .batch_execute(
            "CREATE TABLE blob_chunk (zoid BIGINT, tid BIGINT, chunk_num BIGINT, chunk OID)",
        )
        .unwrap();
    client
}

fn count_in(tx: &mut impl GenericClient, sql: &str) -> i64 {
    tx.query_one(sql, &[]).unwrap().get(0)
}

#[test]
fn our_trigger_unlinks_a_large_object_with_its_last_row() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::create("pgx_blob_trigger");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    fs::write(&a, b"first").unwrap();
    fs::write(&b, b"second").unwrap();
    let (oid, tids) = relstorage_store(&db, "hp", dir.path(), &[&a, &b]);
    let mut client = connect(&db.dsn());
    client
        .batch_execute(&format!(
            "DROP TRIGGER blob_chunk_delete ON blob_chunk;
             {};
             {};",
            blob_chunk::UNLINK_FUNCTION_SQL,
            blob_chunk::UNLINK_TRIGGER_SQL
        ))
        .unwrap();
    // Share the first revision's object between both rows, as undo does.
    let (zoid, t0, t1) = (oid.0 as i64, tids[0].0 as i64, tids[1].0 as i64);
    client
        .execute(
            "UPDATE blob_chunk SET chunk = (SELECT chunk FROM blob_chunk WHERE zoid = $1 AND tid = $2)
             WHERE zoid = $1 AND tid = $3",
            &[&zoid, &t0, &t1],
        )
        .unwrap();
    let orphan: u32 = client
        .query_one(
            "SELECT oid FROM pg_largeobject_metadata
             WHERE oid NOT IN (SELECT chunk FROM blob_chunk)",
            &[],
        )
        .unwrap()
        .get(0);
    client.execute("SELECT lo_unlink($1)", &[&orphan]).unwrap();
    assert_eq!(large_objects(&mut client), 1);

    client
        .execute(
            "DELETE FROM blob_chunk WHERE zoid = $1 AND tid = $2",
            &[&zoid, &t0],
        )
        .unwrap();
    assert_eq!(
        large_objects(&mut client),
        1,
        "still named by the other row"
    );
    let mut sink = Vec::new();
    blob_chunk::download(&mut client, oid, tids[1], &mut sink).unwrap();
    assert_eq!(sink, b"first");
    client
        .execute("DELETE FROM blob_chunk WHERE zoid = $1", &[&zoid])
        .unwrap();
    assert_eq!(large_objects(&mut client), 0, "the last row took it");
}

#[test]
fn restore_replaces_the_blob_of_a_revision() {
    for (mode, name) in MODES {
        let dir = tempfile::tempdir().unwrap();
        let db = TestDatabase::create(&format!("pgx_blob_restore_{name}"));
        let a = dir.path().join("a");
        fs::write(&a, b"theirs").unwrap();
        let (oid, tids) = relstorage_store(&db, name, dir.path(), &[&a]);
        let mut client = connect(&db.dsn());
        let body = pattern(IO_CHUNK * 2, 3);
        let size =
            blob_chunk::upload_committed(&mut client, mode, oid, tids[0], &mut &body[..]).unwrap();
        assert_eq!(size, body.len() as u64);
        assert_eq!(
            large_objects(&mut client),
            1,
            "{name}: the replaced object is freed"
        );
        assert!(
            relstorage_read(&db, name, dir.path(), oid, tids[0]) == body,
            "{name}"
        );
    }
}

#[test]
fn staging_from_a_file_and_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::create("pgx_blob_file");
    let mut client = with_bare_blob_chunk(&db);
    let mut tx = client.transaction().unwrap();
    blob_chunk::ensure_temp_table(&mut tx).unwrap();
    let path = dir.path().join("staged");
    let body = pattern(IO_CHUNK + 1, 4);
    fs::write(&path, &body).unwrap();
    assert_eq!(
        blob_chunk::upload_temp_file(&mut tx, Oid(3), &path).unwrap(),
        body.len() as u64
    );
    let stored: Vec<u8> = tx
        .query_one(
            "SELECT lo_get(chunk) FROM temp_blob_chunk WHERE zoid = 3",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(stored == body);
    let err =
        blob_chunk::upload_temp_file(&mut tx, Oid(4), &dir.path().join("absent")).unwrap_err();
    assert!(matches!(err, zeo_storage::Error::Io { .. }), "{err}");
}

#[test]
fn a_history_free_store_without_a_blob_drops_the_old_blob() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::create("pgx_blob_hf_replace");
    let file = dir.path().join("b");
    fs::write(&file, b"old").unwrap();
    let (oid, tids) = relstorage_store(&db, "hf", dir.path(), &[&file]);
    let mut client = connect(&db.dsn());
    let mut tx = client.transaction().unwrap();
    blob_chunk::ensure_temp_table(&mut tx).unwrap();
    let tid = commit_revision(&mut tx, HistoryMode::Free, oid);
    assert_eq!(
        blob_chunk::move_temp_to_committed(&mut tx, HistoryMode::Free, tid, &[oid]).unwrap(),
        0
    );
    tx.commit().unwrap();
    for t in [tids[0], tid] {
        assert!(blob_chunk::chunks_of(&mut client, oid, t)
            .unwrap_err()
            .is_pos_key());
    }
    assert_eq!(large_objects(&mut client), 0);
}
