//! Schema detection and creation, and what happens when connections die.

use zeo_storage::{BeginOptions, Oid, Storage, Tid, TransactionMetaData};
use zeo_storage_postgres::{Error, HistoryMode, PostgresOptions, PostgresStorage};
use zeo_testkit::postgres::TestDatabase;

fn options(db: &TestDatabase, mode: HistoryMode) -> PostgresOptions {
    let mut o = PostgresOptions::new(db.dsn());
    o.history = mode;
    o
}

fn psql(db: &TestDatabase, sql: &str) -> String {
    let mut client = postgres::Client::connect(&db.dsn(), postgres::NoTls).unwrap();
    let rows = client.simple_query(sql).unwrap();
    rows.iter()
        .filter_map(|m| match m {
            postgres::SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_owned())
                    .collect::<Vec<_>>()
                    .join("|"),
            ),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn commit(s: &PostgresStorage, oid: Oid, serial: Tid, data: &[u8]) -> zeo_storage::Result<Tid> {
    let t = s.tpc_begin(&TransactionMetaData::default(), BeginOptions::default())?;
    let r = s
        .store(t, oid, serial, data)
        .and_then(|()| s.tpc_vote(t))
        .and_then(|_| s.tpc_finish(t, &mut |_| {}));
    if r.is_err() {
        s.tpc_abort(t);
    }
    r
}

/// Ends every other session on the test's database, as a restart does.
fn terminate_others(db: &TestDatabase) {
    psql(
        db,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    );
}

#[test]
fn a_fresh_database_gets_the_schema_with_its_first_rows() {
    let db = TestDatabase::create("schema hp");
    PostgresStorage::open(options(&db, HistoryMode::Preserving)).unwrap();
    assert_eq!(psql(&db, "SELECT tid FROM \"transaction\""), "0");
    assert_eq!(psql(&db, "SELECT tid FROM commit_row_lock"), "0");
    assert_eq!(
        psql(&db, "SELECT relname FROM pg_class WHERE relkind = 'S'"),
        "zoid_seq"
    );
    assert_eq!(
        psql(&db, "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"),
        "blob_chunk_delete"
    );
    // Opening again finds it.
    PostgresStorage::open(options(&db, HistoryMode::Preserving)).unwrap();
}

#[test]
fn the_other_variant_is_refused_with_a_clear_message() {
    let db = TestDatabase::create("schema mismatch");
    PostgresStorage::open(options(&db, HistoryMode::Free)).unwrap();
    let err = PostgresStorage::open(options(&db, HistoryMode::Preserving))
        .err()
        .expect("a history-free database refused as history-preserving");
    let text = err.to_string();
    assert!(matches!(err, Error::Schema(_)), "{text}");
    assert!(
        text.contains("history-free") && text.contains("keep-history"),
        "{text}"
    );
}

#[test]
fn no_schema_and_no_creation_is_refused() {
    let db = TestDatabase::create("schema absent");
    let mut o = options(&db, HistoryMode::Preserving);
    o.create_schema = false;
    let err = PostgresStorage::open(o).err().expect("refused");
    assert!(err.to_string().contains("create-schema"), "{err}");
}

#[test]
fn history_preserving_rows_carry_md5_and_prev_tid() {
    let db = TestDatabase::create("md5");
    let s = PostgresStorage::open(options(&db, HistoryMode::Preserving)).unwrap();
    let t1 = commit(&s, Oid(0), Tid::ZERO, b"first").unwrap();
    let t2 = commit(&s, Oid(0), t1, b"second").unwrap();
    assert_eq!(
        psql(
            &db,
            "SELECT tid, prev_tid, md5 = md5(state), state_size FROM object_state ORDER BY tid"
        ),
        format!("{}|0|t|5\n{}|{}|t|6", t1.0, t2.0, t1.0)
    );
    assert_eq!(
        psql(&db, "SELECT tid FROM current_object"),
        t2.0.to_string()
    );
}

#[test]
fn oids_come_from_zoid_seq_in_blocks_of_sixteen() {
    let db = TestDatabase::create("oids");
    let s = PostgresStorage::open(options(&db, HistoryMode::Preserving)).unwrap();
    let first: Vec<u64> = (0..17).map(|_| s.new_oid().unwrap().0).collect();
    assert_eq!(first, (1..=17).collect::<Vec<_>>());
    assert_eq!(psql(&db, "SELECT last_value FROM zoid_seq"), "2");
    // A stored oid beyond the sequence raises it.
    commit(&s, Oid(1000), Tid::ZERO, b"restored").unwrap();
    let last: u64 = psql(&db, "SELECT last_value FROM zoid_seq")
        .parse()
        .unwrap();
    assert!(last * 16 >= 1000, "zoid_seq at {last}");
}

#[test]
fn loads_survive_a_database_restart_of_their_connections() {
    let db = TestDatabase::create("reconnect");
    let s = PostgresStorage::open(options(&db, HistoryMode::Preserving)).unwrap();
    let t1 = commit(&s, Oid(0), Tid::ZERO, b"root").unwrap();
    assert_eq!(s.load(Oid(0)).unwrap().1, t1);
    terminate_others(&db);
    assert_eq!(s.load(Oid(0)).unwrap(), (b"root".to_vec(), t1));
    // Commits get a fresh connection too.
    terminate_others(&db);
    let t2 = commit(&s, Oid(0), t1, b"again").unwrap();
    assert_eq!(s.load(Oid(0)).unwrap(), (b"again".to_vec(), t2));
}

#[test]
fn a_commit_that_loses_its_connection_fails_and_leaves_nothing() {
    let db = TestDatabase::create("lost commit");
    let s = PostgresStorage::open(options(&db, HistoryMode::Preserving)).unwrap();
    let t1 = commit(&s, Oid(0), Tid::ZERO, b"root").unwrap();
    let t = s
        .tpc_begin(&TransactionMetaData::default(), BeginOptions::default())
        .unwrap();
    s.store(t, Oid(0), t1, b"lost").unwrap();
    s.tpc_vote(t).unwrap();
    terminate_others(&db);
    let mut called = false;
    let err = s.tpc_finish(t, &mut |_| called = true).unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(
        !called,
        "on_commit ran for a transaction that did not commit"
    );
    s.tpc_abort(t);
    assert_eq!(s.load(Oid(0)).unwrap(), (b"root".to_vec(), t1));
    assert_eq!(s.last_transaction(), t1);
    assert_eq!(psql(&db, "SELECT count(*) FROM \"transaction\""), "2");
    // And the storage goes on.
    let t2 = commit(&s, Oid(0), t1, b"next").unwrap();
    assert!(t2 > t1);
}

#[test]
fn the_tid_follows_the_last_one_in_the_database() {
    let db = TestDatabase::create("tid rule");
    let s = PostgresStorage::open(options(&db, HistoryMode::Preserving)).unwrap();
    // A transaction far in the future (another committer's clock).
    let future = Tid((1 << 62) + 12_345);
    psql(
        &db,
        &format!(
            "INSERT INTO \"transaction\" (tid, username, description) VALUES ({}, '', '')",
            future.0
        ),
    );
    let t = commit(&s, Oid(0), Tid::ZERO, b"root").unwrap();
    assert_eq!(t, future.next());
}

#[test]
fn the_storage_may_be_closed_or_dropped_on_an_async_worker() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for close_first in [true, false] {
        let db = TestDatabase::create("drop async");
        let s = PostgresStorage::open(options(&db, HistoryMode::Preserving)).unwrap();
        let t1 = commit(&s, Oid(0), Tid::ZERO, b"root").unwrap();
        assert_eq!(s.load(Oid(0)).unwrap().1, t1);
        // A transaction left open in the database too.
        let t = s
            .tpc_begin(&TransactionMetaData::default(), BeginOptions::default())
            .unwrap();
        s.store(t, Oid(0), t1, b"open").unwrap();
        s.tpc_vote(t).unwrap();
        runtime.block_on(async move {
            if close_first {
                s.close().unwrap();
            }
            drop(s);
        });
    }
}
