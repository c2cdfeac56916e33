//! The storage kit's contract suite, against a fresh database per check,
//! in both of RelStorage's schema variants, and with blobs in a shared
//! blob directory (`shared-blob-dir true`) instead of the database.

use zeo_storage::testing::Fixture;
use zeo_storage_postgres::{HistoryMode, PostgresOptions, PostgresStorage};
use zeo_testkit::postgres::TestDatabase;

fn open(mode: HistoryMode) -> Fixture<PostgresStorage> {
    open_with(mode, false)
}

fn open_with(mode: HistoryMode, shared_blob_dir: bool) -> Fixture<PostgresStorage> {
    let db = TestDatabase::create("contract");
    let blobs = tempfile::tempdir().expect("a blob directory");
    let mut options = PostgresOptions::new(db.dsn());
    options.history = mode;
    options.blob_dir = Some(blobs.path().join("blobs"));
    options.shared_blob_dir = shared_blob_dir;
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

fn preserving_shared() -> Fixture<PostgresStorage> {
    open_with(HistoryMode::Preserving, true)
}

fn free_shared() -> Fixture<PostgresStorage> {
    open_with(HistoryMode::Free, true)
}

zeo_storage::contract_tests!(history_preserving, preserving);
zeo_storage::contract_tests!(history_free, free);
zeo_storage::contract_tests!(history_preserving_shared_blobs, preserving_shared);
zeo_storage::contract_tests!(history_free_shared_blobs, free_shared);
