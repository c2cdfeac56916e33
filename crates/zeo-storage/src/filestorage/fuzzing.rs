//! Entry points for the fuzz targets in `fuzz/` and for the tests that
//! replay their corpora on stable Rust. Not part of the crate's API: they
//! take arbitrary bytes as a damaged or hostile file would present them,
//! and succeed as long as nothing panics, loops or over-allocates.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::interface::{
    BeginOptions, Iteration, Pack, RecordIteration, Storage, TransactionMetaData, Undo,
};
use crate::{Oid, Tid};

use super::{check, index_file, FileStorage, FileStorageOptions};

/// A scratch directory on a memory file system when there is one.
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::tempdir_in(shm) {
            return d;
        }
    }
    tempfile::tempdir().expect("a temporary directory")
}

/// Later than any tid a fuzzed file can hold in practice (year 2096).
const PACK_TIME: f64 = 4.0e9;

const READ_ONLY: FileStorageOptions = FileStorageOptions {
    read_only: true,
    create: false,
    pack_gc: false,
    sync_delay: None,
};

/// Reads everything a server reads from a data file: the open-time scan,
/// every current record and its history, the transaction iterator, the
/// undo log, `check`, `check_refs` and `dump`; then a writable open (which cuts off
/// a damaged tail and writes an index), packs with and without garbage
/// collection, and a read-only reopen through the index written.
pub fn data_file(bytes: &[u8]) {
    let dir = scratch();
    let path = dir.path().join("Data.fs");
    std::fs::write(&path, bytes).expect("writing the input");
    let _ = check(&path);
    let _ = super::check_refs(&path, &mut |_| {});
    let _ = super::dump(&path, &mut std::io::sink());
    if let Ok(fs) = FileStorage::open(&path, READ_ONLY) {
        read_everything(&fs);
    }
    if let Ok(fs) = FileStorage::open(&path, FileStorageOptions::default()) {
        read_everything(&fs);
        // Packs to the end of time, with and without garbage collection:
        // every reference and backpointer of the file is followed.
        if fs.pack(PACK_TIME, true).is_ok() {
            read_everything(&fs);
        }
        let _ = fs.pack(PACK_TIME, false);
        drop(fs);
        if let Ok(fs) = FileStorage::open(&path, READ_ONLY) {
            read_everything(&fs);
        }
    }
}

/// Bounded so that a large index or file costs time linear in its size.
fn read_everything(fs: &FileStorage) {
    let mut next = None;
    for _ in 0..100_000 {
        match fs.record_iternext(next) {
            Ok(Some(r)) => {
                let _ = fs.history(r.oid, 10);
                let _ = fs.load_before(r.oid, r.tid);
                let _ = fs.load_serial(r.oid, r.tid);
                match r.next {
                    Some(n) => next = Some(n),
                    None => break,
                }
            }
            _ => break,
        }
    }
    if let Ok(it) = fs.iterator(None, None) {
        for t in it.take(100_000) {
            if t.is_err() {
                break;
            }
        }
    }
    let _ = fs.undo_log(0, 20, None);
    let _ = fs.last_invalidations(5);
}

/// Decodes `bytes` as a `Data.fs.index`, then uses them as the index of a
/// small sound data file: the open must notice any mismatch (falling back to
/// a scan) or serve what the index leads to without panicking.
pub fn index_file(bytes: &[u8]) {
    let _ = index_file::decode(bytes);
    let dir = scratch();
    let path = dir.path().join("Data.fs");
    std::fs::write(&path, sample_data_file()).expect("writing the sample");
    std::fs::write(index_file::index_path(&path), bytes).expect("writing the input");
    if let Ok(fs) = FileStorage::open(&path, READ_ONLY) {
        read_everything(&fs);
    }
}

/// A data file with a few transactions, built once per process.
pub fn sample_data_file() -> &'static [u8] {
    static SAMPLE: OnceLock<Vec<u8>> = OnceLock::new();
    SAMPLE.get_or_init(|| {
        let dir = scratch();
        let path: PathBuf = dir.path().join("Data.fs");
        let fs = FileStorage::open(&path, FileStorageOptions::default()).expect("creating");
        let mut serials = [Tid::ZERO; 4];
        for round in 0..3u8 {
            let meta = TransactionMetaData {
                user: b"fuzz".to_vec(),
                description: vec![b'a' + round],
                extension: Vec::new(),
            };
            let txn = fs.tpc_begin(&meta, BeginOptions::default()).expect("begin");
            for (oid, serial) in serials.iter().enumerate().skip(usize::from(round)) {
                fs.store(txn, Oid(oid as u64), *serial, &[round; 20])
                    .expect("store");
            }
            fs.tpc_vote(txn).expect("vote");
            let tid = fs.tpc_finish(txn, &mut |_| {}).expect("finish");
            for s in serials.iter_mut().skip(usize::from(round)) {
                *s = tid;
            }
        }
        drop(fs);
        std::fs::read(&path).expect("reading the sample")
    })
}
