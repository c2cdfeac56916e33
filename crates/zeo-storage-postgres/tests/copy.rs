//! Copying transactions in with their tids (`Restore`), and reading them
//! back with the iterator.

use zeo_storage::testing::{commit, commit_with, meta, record, undo};
use zeo_storage::{BeginOptions, Iteration, MappingStorage, Oid, Storage, Tid};
use zeo_storage_postgres::{HistoryMode, PostgresOptions, PostgresStorage};
use zeo_testkit::postgres::TestDatabase;

fn open(db: &TestDatabase) -> PostgresStorage {
    let mut o = PostgresOptions::new(db.dsn());
    o.history = HistoryMode::Preserving;
    PostgresStorage::open(o).unwrap()
}

/// Every transaction of `from`, as the iterator gives them.
fn transactions(from: &dyn Iteration) -> Vec<zeo_storage::TransactionRecord> {
    from.iterator(None, None)
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn a_copy_keeps_tids_records_and_metadata() {
    let source = MappingStorage::new("source");
    let t1 = commit(&source, &[(Oid(0), Tid::ZERO, record(&[Oid(1)], b"root"))]).unwrap();
    let t2 = commit(
        &source,
        &[
            (Oid(1), Tid::ZERO, record(&[], b"one")),
            (Oid(40), Tid::ZERO, record(&[], b"forty")),
        ],
    )
    .unwrap();
    let mut m = meta("third");
    m.user = b"someone".to_vec();
    m.extension = vec![0x80, 0x03, 0x7d, 0x71, 0x00, 0x2e];
    commit_with(&source, &m, BeginOptions::default(), |s, t| {
        s.store(t, Oid(1), t2, &record(&[], b"one v2"))
    })
    .unwrap();
    undo(&source, t1).ok();
    let want = transactions(source.as_iteration().unwrap());

    let db = TestDatabase::create("copy");
    let dest = open(&db);
    for txn in &want {
        let options = BeginOptions {
            tid: Some(txn.tid),
            status: txn.status,
        };
        let t = dest.tpc_begin(&txn.meta, options).unwrap();
        assert_eq!(dest.transaction_tid(t).unwrap(), Some(txn.tid));
        for r in &txn.records {
            dest.as_restore()
                .unwrap()
                .restore(t, r.oid, r.tid, r.data.as_deref(), r.data_txn)
                .unwrap();
        }
        dest.tpc_vote(t).unwrap();
        assert_eq!(dest.tpc_finish(t, &mut |_| {}).unwrap(), txn.tid);
    }
    let got = transactions(dest.as_iteration().unwrap());
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!((g.tid, &g.meta, g.status), (w.tid, &w.meta, w.status));
        let records = |t: &zeo_storage::TransactionRecord| {
            t.records
                .iter()
                .map(|r| (r.oid, r.data.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(records(g), records(w));
    }
    assert_eq!(dest.last_transaction(), source.last_transaction());
    // The sequence was raised past the copied oids.
    assert!(dest.new_oid().unwrap() > Oid(40));
    // A tid not after the last one is refused and leaves nothing.
    let options = BeginOptions {
        tid: Some(t2),
        ..BeginOptions::default()
    };
    let t = dest.tpc_begin(&meta("late"), options).unwrap();
    dest.tpc_vote(t).unwrap();
    assert!(dest.tpc_finish(t, &mut |_| {}).is_err());
    dest.tpc_abort(t);
    assert_eq!(transactions(dest.as_iteration().unwrap()).len(), want.len());
}
