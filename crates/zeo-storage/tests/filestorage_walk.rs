//! Walks that need only tids and oids read record headers, never the data
//! of the records they cross: the scan at open, `last_invalidations` (what
//! a server seeds its invalidation queue with), `changed_oids` (what it
//! walks for `getInvalidations`), the undo log, history and `check`. Measured with the calling thread's read counter
//! (`/proc/thread-self/io`), so other tests running meanwhile do not count.

use std::path::Path;

use zeo_storage::filestorage::{check, FileStorage, FileStorageOptions};
use zeo_storage::interface::BeginOptions;
use zeo_storage::{Iteration, Oid, Storage, Tid, TransactionMetaData, Undo};

const READ_ONLY: FileStorageOptions = FileStorageOptions {
    read_only: true,
    create: false,
    pack_gc: false,
    sync_delay: None,
};

const TXNS: u64 = 24;
const RECORD: usize = 256 << 10;

/// Bytes read by `f` on this thread.
fn bytes_read<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let before = zeo_testkit::thread_read_bytes();
    let out = f();
    (out, zeo_testkit::thread_read_bytes() - before)
}

/// `TXNS` transactions, each storing a large record of oid 1 and a small
/// one of its own oid, then one undoing the last (a backpointer to large
/// data). No index file is left, so an open scans everything.
fn build(path: &Path) -> Vec<(Tid, Vec<Oid>)> {
    let fs = FileStorage::open(path, FileStorageOptions::default()).unwrap();
    let mut expected = Vec::new();
    let mut serial = Tid::ZERO;
    for i in 0..TXNS {
        let txn = fs
            .tpc_begin(&TransactionMetaData::default(), BeginOptions::default())
            .unwrap();
        fs.store(txn, Oid(1), serial, &vec![i as u8; RECORD])
            .unwrap();
        fs.store(txn, Oid(10 + i), Tid::ZERO, b"small").unwrap();
        fs.tpc_vote(txn).unwrap();
        serial = fs.tpc_finish(txn, &mut |_| {}).unwrap();
        expected.push((serial, vec![Oid(1), Oid(10 + i)]));
    }
    let txn = fs
        .tpc_begin(&TransactionMetaData::default(), BeginOptions::default())
        .unwrap();
    fs.undo(txn, &zeo_storage::undo_id(serial)).unwrap();
    fs.tpc_vote(txn).unwrap();
    let undone = fs.tpc_finish(txn, &mut |_| {}).unwrap();
    expected.push((undone, vec![Oid(1), Oid(10 + TXNS - 1)]));
    fs.close().unwrap();
    std::fs::remove_file(path.with_extension("fs.index")).unwrap();
    expected
}

#[test]
fn walks_that_need_only_ids_read_headers_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let expected = build(&path);
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size > TXNS * RECORD as u64);
    // Headers, transaction metadata and the read-ahead of small records:
    // a few KiB per transaction, far less than one large record each.
    let budget = TXNS * 16 * 1024;

    let (fs, read) = bytes_read(|| FileStorage::open(&path, READ_ONLY).unwrap());
    assert!(read < budget, "open read {read} of {size} bytes");

    let (seeded, read) = bytes_read(|| fs.last_invalidations(1000).unwrap());
    assert!(
        read < budget,
        "last_invalidations read {read} of {size} bytes"
    );
    assert_eq!(seeded, expected);
    let (last_two, _) = bytes_read(|| fs.last_invalidations(2).unwrap());
    assert_eq!(last_two, expected[expected.len() - 2..]);

    // What getInvalidations walks when its queue is too short.
    let (changed, read) = bytes_read(|| {
        fs.changed_oids(Some(expected[1].0), None)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
    });
    assert!(read < budget, "changed_oids read {read} of {size} bytes");
    assert_eq!(changed, expected[1..]);

    let (log, read) = bytes_read(|| fs.undo_log(0, 1000, None).unwrap());
    assert!(read < budget, "undo_log read {read} of {size} bytes");
    assert_eq!(log.len(), expected.len());

    let (history, read) = bytes_read(|| fs.history(Oid(1), 1000).unwrap());
    assert!(read < budget, "history read {read} of {size} bytes");
    assert_eq!(history.len(), expected.len());

    let (report, read) = bytes_read(|| check(&path).unwrap());
    assert!(read < budget, "check read {read} of {size} bytes");
    assert_eq!(report.transactions, TXNS + 1);

    // The full iterator does read the data, which shows the counter sees
    // these reads at all.
    let (txns, read) = bytes_read(|| {
        fs.iterator(None, None)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
    });
    assert!(read > TXNS * RECORD as u64, "the iterator read only {read}");
    let from_iterator: Vec<(Tid, Vec<Oid>)> = txns
        .iter()
        .map(|t| (t.tid, t.records.iter().map(|r| r.oid).collect()))
        .collect();
    assert_eq!(from_iterator, expected);
}

/// Read system calls made by `f` on this thread (`syscr`).
fn read_calls<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let count = || {
        let io = std::fs::read_to_string("/proc/thread-self/io").unwrap();
        io.lines()
            .find_map(|l| l.strip_prefix("syscr:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap()
    };
    let before = count();
    let out = f();
    (out, count() - before)
}

/// Seeding the invalidation queue from transactions of many small records
/// reads their headers a window at a time, not with a call per record.
#[test]
fn header_walks_over_small_records_read_a_window_at_a_time() {
    const SMALL_TXNS: u64 = 10;
    const PER_TXN: u64 = 300;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let fs = FileStorage::open(&path, FileStorageOptions::default()).unwrap();
    let mut expected = Vec::new();
    for t in 0..SMALL_TXNS {
        let txn = fs
            .tpc_begin(&TransactionMetaData::default(), BeginOptions::default())
            .unwrap();
        let oids: Vec<Oid> = (0..PER_TXN).map(|i| Oid(1 + t * PER_TXN + i)).collect();
        for &oid in &oids {
            fs.store(txn, oid, Tid::ZERO, &[7u8; 100]).unwrap();
        }
        fs.tpc_vote(txn).unwrap();
        expected.push((fs.tpc_finish(txn, &mut |_| {}).unwrap(), oids));
    }
    let (seeded, calls) = read_calls(|| fs.last_invalidations(100).unwrap());
    assert_eq!(seeded, expected);
    // A few calls per transaction (its header, its trailer, the walk back,
    // the window), against one per record before.
    assert!(
        calls < SMALL_TXNS * 10,
        "{calls} read calls for {} records",
        SMALL_TXNS * PER_TXN
    );
}
