//! Replays the committed corpora (and any crash inputs) of the FileStorage
//! fuzz targets through the code they fuzz, so that CI checks them on
//! stable Rust without cargo-fuzz.
//!
//! `cargo test -p zeo-storage --test fuzz_corpus -- --ignored` rewrites the
//! seed files from storages built here.

use std::path::Path;

use zeo_pickle::{encode_record, Value};
use zeo_storage::filestorage::{fuzzing, FileStorage, FileStorageOptions};
use zeo_storage::interface::BeginOptions;
use zeo_storage::{Oid, Storage, Tid, TransactionMetaData};

mod replay {
    include!("../../../fuzz/checks/replay.rs");
}

use replay::{kept_inputs_dir, replay};
use zeo_storage::ExternalGc;
use zeo_storage::Undo;

#[test]
fn filestorage_data_corpus_replays() {
    replay("filestorage_data", fuzzing::data_file);
}

#[test]
fn filestorage_index_corpus_replays() {
    replay("filestorage_index", fuzzing::index_file);
}

fn record(class: &str, refs: &[u64]) -> Vec<u8> {
    let state = Value::Dict(
        refs.iter()
            .enumerate()
            .map(|(i, &oid)| {
                (
                    Value::Str(format!("r{i}")),
                    Value::persistent_ref(oid, Some(Value::global("app", "Node"))),
                )
            })
            .chain([(Value::Str("n".into()), Value::Int(refs.len() as i64))])
            .collect(),
    );
    encode_record(&Value::global("app", class), &state).unwrap()
}

/// A storage with references, an update, a deletion and an undo
/// (backpointers), written at `path`.
pub fn build_sample(path: &Path) {
    let fs = FileStorage::open(path, FileStorageOptions::default()).unwrap();
    let meta = |d: &str| TransactionMetaData {
        user: b"seed".to_vec(),
        description: d.as_bytes().to_vec(),
        extension: Vec::new(),
    };
    let commit = |d: &str, stores: &[(u64, Tid, Vec<u8>)], deletes: &[(u64, Tid)]| {
        let txn = fs.tpc_begin(&meta(d), BeginOptions::default()).unwrap();
        for (oid, serial, data) in stores {
            fs.store(txn, Oid(*oid), *serial, data).unwrap();
        }
        for (oid, serial) in deletes {
            fs.delete_object(txn, Oid(*oid), *serial).unwrap();
        }
        fs.tpc_vote(txn).unwrap();
        fs.tpc_finish(txn, &mut |_| {}).unwrap()
    };
    let t1 = commit(
        "create",
        &[
            (0, Tid::ZERO, record("Root", &[1, 2])),
            (1, Tid::ZERO, record("Node", &[2])),
            (2, Tid::ZERO, record("Node", &[])),
            (3, Tid::ZERO, record("Node", &[1])),
        ],
        &[],
    );
    let t2 = commit("update", &[(1, t1, record("Node", &[2, 0]))], &[]);
    commit("delete", &[], &[(3, t1)]);
    let txn = fs
        .tpc_begin(&meta("undo"), BeginOptions::default())
        .unwrap();
    fs.undo(txn, &zeo_storage::undo_id(t2)).unwrap();
    fs.tpc_vote(txn).unwrap();
    fs.tpc_finish(txn, &mut |_| {}).unwrap();
    fs.close().unwrap();
}

#[test]
#[ignore = "rewrites the committed seed corpus"]
fn write_seed_corpus() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    build_sample(&path);
    let data = std::fs::read(&path).unwrap();
    let index = std::fs::read(dir.path().join("Data.fs.index")).unwrap();
    let out = kept_inputs_dir("corpus", "filestorage_data");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("sample"), &data).unwrap();
    std::fs::write(out.join("empty-storage"), b"FS30").unwrap();
    // A torn last transaction, as a crash leaves it.
    std::fs::write(out.join("torn-tail"), &data[..data.len() - 30]).unwrap();
    std::fs::write(
        out.join("sample-from-fuzzing-module"),
        fuzzing::sample_data_file(),
    )
    .unwrap();
    let out = kept_inputs_dir("corpus", "filestorage_index");
    std::fs::create_dir_all(&out).unwrap();
    // Index files are checked against the fuzzing module's sample.
    let d2 = tempfile::tempdir().unwrap();
    let p2 = d2.path().join("Data.fs");
    std::fs::write(&p2, fuzzing::sample_data_file()).unwrap();
    drop(FileStorage::open(&p2, FileStorageOptions::default()).unwrap());
    std::fs::write(
        out.join("sample-index"),
        std::fs::read(d2.path().join("Data.fs.index")).unwrap(),
    )
    .unwrap();
    std::fs::write(out.join("other-file-index"), index).unwrap();
    std::fs::write(
        out.join("empty-index"),
        [0x80, 3, b'K', 4, b'.', 0x80, 3, b'N', b'.'],
    )
    .unwrap();
}
