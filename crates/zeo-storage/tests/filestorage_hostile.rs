//! Data files built to exhaust a reader: lengths that claim more than the
//! file holds, and backpointers that repeat one large record.

use std::path::Path;

use zeo_storage::filestorage::{check, FileStorage, FileStorageOptions};
use zeo_storage::interface::BeginOptions;
use zeo_storage::Iteration;
use zeo_storage::Pack;
use zeo_storage::{Error, Oid, Storage, Tid, TransactionMetaData};

const READ_ONLY: FileStorageOptions = FileStorageOptions {
    read_only: true,
    create: false,
    pack_gc: false,
    sync_delay: None,
};

/// The tests measure this process's peak memory: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Peak resident memory of this process, from `/proc/self/status`.
fn vm_hwm_kib() -> u64 {
    zeo_testkit::proc_status_kib(None, "VmHWM")
}

/// One transaction with a 1 MiB record of oid 1; returns (tid, record pos).
fn one_big_record(path: &Path) -> (Tid, u64) {
    let fs = FileStorage::open(path, FileStorageOptions::default()).unwrap();
    let txn = fs
        .tpc_begin(&TransactionMetaData::default(), BeginOptions::default())
        .unwrap();
    fs.store(txn, Oid(1), Tid::ZERO, &vec![b'x'; 1 << 20])
        .unwrap();
    fs.tpc_vote(txn).unwrap();
    let tid = fs.tpc_finish(txn, &mut |_| {}).unwrap();
    // The first transaction starts at 4 and has a 23-byte header.
    (tid, 4 + 23)
}

/// Appends a transaction of `n` records of oid 1, each a backpointer to the
/// record at `back`.
fn append_backpointers(path: &Path, tid: Tid, back: u64, n: u64) {
    let mut file = std::fs::read(path).unwrap();
    let tpos = file.len() as u64;
    let tlen = 23 + n * 50;
    let mut t = Vec::new();
    t.extend_from_slice(&tid.0.to_be_bytes());
    t.extend_from_slice(&tlen.to_be_bytes());
    t.extend_from_slice(&[b' ', 0, 0, 0, 0, 0, 0]);
    for _ in 0..n {
        t.extend_from_slice(&1u64.to_be_bytes());
        t.extend_from_slice(&tid.0.to_be_bytes());
        t.extend_from_slice(&back.to_be_bytes()); // prev
        t.extend_from_slice(&tpos.to_be_bytes()); // tloc
        t.extend_from_slice(&[0, 0]); // vlen
        t.extend_from_slice(&0u64.to_be_bytes()); // plen
        t.extend_from_slice(&back.to_be_bytes());
    }
    t.extend_from_slice(&tlen.to_be_bytes());
    file.extend_from_slice(&t);
    std::fs::write(path, file).unwrap();
}

#[test]
fn repeated_backpointers_do_not_multiply_memory() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let (t1, rec) = one_big_record(&path);
    // 400 records of 50 bytes, each resolving to the same 1 MiB: 400 MiB if
    // copied for every record.
    append_backpointers(&path, Tid(t1.0 + 1), rec, 400);
    check(&path).unwrap();
    let before = vm_hwm_kib();
    let fs = FileStorage::open(&path, READ_ONLY).unwrap();
    let results: Vec<_> = fs.iterator(None, None).unwrap().collect();
    assert_eq!(results.len(), 2);
    assert!(results[0].is_ok());
    match &results[1] {
        Err(Error::Format { reason, .. }) => {
            assert!(reason.contains("repeat more than"), "{reason}")
        }
        other => panic!(
            "expected a format error, got {:?}",
            other.as_ref().map(|_| ())
        ),
    }
    // Within the budget (64 MiB) plus one record, not 400 MiB.
    let grew = vm_hwm_kib().saturating_sub(before);
    assert!(grew < 100 * 1024, "peak grew by {grew} KiB");
    // A walk that reads no data finds the same damage.
    match fs.last_invalidations(10) {
        Err(Error::Format { reason, .. }) => {
            assert!(reason.contains("repeat more than"), "{reason}")
        }
        other => panic!(
            "expected a format error, got {:?}",
            other.as_ref().map(|_| ())
        ),
    }
    // A few repeats are accepted and each record gets the data.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let (t1, rec) = one_big_record(&path);
    append_backpointers(&path, Tid(t1.0 + 1), rec, 3);
    let fs = FileStorage::open(&path, READ_ONLY).unwrap();
    let txns: Vec<_> = fs
        .iterator(None, None)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(txns[1].records.len(), 3);
    assert!(txns[1]
        .records
        .iter()
        .all(|r| r.data.as_deref().map(<[u8]>::len) == Some(1 << 20)));
}

#[test]
fn lengths_claiming_more_than_the_file_reserve_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let (_, rec) = one_big_record(&path);
    let good = std::fs::read(&path).unwrap();
    let before = vm_hwm_kib();
    // The record's plen (at rec + 34) and the transaction's tlen (at 12),
    // each set to about 2^62: every reader must refuse before reserving.
    for (at, what) in [(rec as usize + 34, "plen"), (12, "tlen")] {
        let mut bad = good.clone();
        bad[at..at + 8].copy_from_slice(&(1u64 << 62).to_be_bytes());
        std::fs::write(&path, &bad).unwrap();
        assert!(check(&path).is_err(), "{what}");
        if let Ok(fs) = FileStorage::open(&path, READ_ONLY) {
            assert!(fs.load(Oid(1)).is_err(), "{what}");
            // A torn-looking last transaction is ignored by a read-only
            // open; anything else is an error.
            assert!(
                fs.iterator(None, None).unwrap().all(|t| t.is_err()),
                "{what}"
            );
        }
        let _ = zeo_storage::filestorage::check_refs(&path, &mut |_| {});
    }
    let grew = vm_hwm_kib().saturating_sub(before);
    assert!(grew < 64 * 1024, "peak grew by {grew} KiB");
}

#[test]
fn a_gc_pack_meeting_an_unreadable_record_aborts_and_collects_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let fs = FileStorage::open(&path, FileStorageOptions::default()).unwrap();
    let meta = TransactionMetaData::default();
    let txn = fs.tpc_begin(&meta, BeginOptions::default()).unwrap();
    // The root refers to 1 through a record whose pickle is cut short: if
    // pack skipped it, object 1 would look unreachable and be collected.
    let mut root = b"\x80\x03capp\nRoot\nq\x00.\x80\x03]q\x01(C\x08".to_vec();
    root.extend_from_slice(&1u64.to_be_bytes());
    root.extend_from_slice(b"Qe");
    fs.store(txn, Oid(0), Tid::ZERO, &root).unwrap();
    fs.store(
        txn,
        Oid(1),
        Tid::ZERO,
        b"\x80\x03capp\nNode\nq\x00.\x80\x03N.",
    )
    .unwrap();
    fs.tpc_vote(txn).unwrap();
    let t1 = fs.tpc_finish(txn, &mut |_| {}).unwrap();
    let txn = fs.tpc_begin(&meta, BeginOptions::default()).unwrap();
    fs.store(txn, Oid(1), t1, b"\x80\x03capp\nNode\nq\x00.\x80\x03K\x01.")
        .unwrap();
    fs.tpc_vote(txn).unwrap();
    fs.tpc_finish(txn, &mut |_| {}).unwrap();
    let before = std::fs::read(&path).unwrap();

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let err = fs.pack(now + 1.0, true).unwrap_err();
    assert!(err.to_string().contains("references"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before, "the file changed");
    assert!(fs.load(Oid(1)).is_ok());
    assert!(!dir.path().join("Data.fs.pack").exists());
}
