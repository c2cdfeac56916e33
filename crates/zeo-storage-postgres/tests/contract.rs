//! The storage kit's contract suite, against a fresh database per check,
//! in both of RelStorage's schema variants.

use zeo_storage::testing::Fixture;
use zeo_storage_postgres::{HistoryMode, PostgresOptions, PostgresStorage};
use zeo_testkit::postgres::TestDatabase;

fn open(mode: HistoryMode) -> Fixture<PostgresStorage> {
    let db = TestDatabase::create("contract");
    let blobs = tempfile::tempdir().expect("a blob directory");
    let mut options = PostgresOptions::new(db.dsn());
    options.history = mode;
    options.blob_dir = Some(blobs.path().join("blobs"));
    let storage = PostgresStorage::open(options).expect("open the storage");
    let fixture = Fixture::keeping(storage, (db, blobs));
    match mode {
        HistoryMode::Preserving => fixture,
        HistoryMode::Free => fixture.history_free(),
    }
}

fn preserving() -> Fixture<PostgresStorage> {
    open(HistoryMode::Preserving)
}

fn free() -> Fixture<PostgresStorage> {
    open(HistoryMode::Free)
}

zeo_storage::contract_tests!(history_preserving, preserving);
zeo_storage::contract_tests!(history_free, free);
