//! FileStorage with a blob directory: store, load, abort, close and reopen.

use std::fs;
use std::path::Path;

use zeo_storage::filestorage::FileStorageOptions;
use zeo_storage::interface::BeginOptions;
use zeo_storage::{
    BlobData, BlobSource, FileStorage, Oid, Storage, Tid, TransactionMetaData, TxnHandle,
};

fn open(dir: &Path) -> FileStorage {
    FileStorage::open_with_blobs(
        dir.join("Data.fs"),
        FileStorageOptions::default(),
        dir.join("blobs"),
    )
    .unwrap()
}

fn begin(fs: &FileStorage) -> TxnHandle {
    fs.tpc_begin(&TransactionMetaData::default(), BeginOptions::default())
        .unwrap()
}

fn blob_bytes(fs: &FileStorage, oid: Oid, tid: Tid) -> Vec<u8> {
    match fs.as_blobs().unwrap().load_blob(oid, tid).unwrap() {
        BlobData::Path(p) => fs::read(p).unwrap(),
        BlobData::Reader(mut r) => {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut r, &mut v).unwrap();
            v
        }
        _ => unreachable!("FileStorage hands out paths"),
    }
}

fn temp_with(fs: &FileStorage, bytes: &[u8]) -> std::path::PathBuf {
    let tmp = fs
        .as_blobs()
        .unwrap()
        .temporary_directory()
        .join("upload.tmp");
    fs::write(&tmp, bytes).unwrap();
    tmp
}

fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    for _ in 0..10_000 {
        let Some(d) = stack.pop() else { break };
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.retain(|p| !p.ends_with(".layout"));
    out.sort();
    out
}

#[test]
fn stored_blobs_load_after_finish_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let blobs = fs.as_blobs().unwrap();
    let txn = begin(&fs);
    let tmp = temp_with(&fs, b"from a file");
    blobs
        .store_blob(
            txn,
            Oid(1),
            Tid::ZERO,
            b"rec1",
            BlobSource::File(tmp.clone()),
        )
        .unwrap();
    assert!(!tmp.exists(), "the temporary was not moved into place");
    let stream = Box::new(std::io::Cursor::new(vec![7u8; 100_000]));
    blobs
        .store_blob(txn, Oid(2), Tid::ZERO, b"rec2", BlobSource::Stream(stream))
        .unwrap();
    fs.tpc_vote(txn).unwrap();
    let tid = fs.tpc_finish(txn, &mut |_| {}).unwrap();
    assert_eq!(blob_bytes(&fs, Oid(1), tid), b"from a file");
    assert_eq!(blob_bytes(&fs, Oid(2), tid), vec![7u8; 100_000]);
    let path = fs.blob_dir().unwrap().blob_path(Oid(1), tid);
    assert!(fs::metadata(&path).unwrap().permissions().readonly());
    // A late abort naming the finished transaction removes nothing.
    fs.tpc_abort(txn);
    assert!(path.exists());
    assert!(fs
        .as_blobs()
        .unwrap()
        .load_blob(Oid(1), Tid(tid.0 - 1))
        .unwrap_err()
        .is_pos_key());
    drop(fs);

    let fs = open(dir.path());
    assert_eq!(blob_bytes(&fs, Oid(2), tid), vec![7u8; 100_000]);
    assert_eq!(fs.load(Oid(2)).unwrap(), (b"rec2".to_vec(), tid));
}

#[test]
fn abort_and_close_remove_uncommitted_files() {
    let dir = tempfile::tempdir().unwrap();
    let blob_root = dir.path().join("blobs");
    let fs = open(dir.path());
    let blobs = fs.as_blobs().unwrap();
    let txn = begin(&fs);
    let tmp = temp_with(&fs, b"x");
    blobs
        .store_blob(txn, Oid(1), Tid::ZERO, b"r", BlobSource::File(tmp))
        .unwrap();
    fs.tpc_vote(txn).unwrap();
    assert_eq!(files_under(&blob_root).len(), 1);
    fs.tpc_abort(txn);
    assert_eq!(files_under(&blob_root), Vec::<std::path::PathBuf>::new());

    let txn = begin(&fs);
    let tmp = temp_with(&fs, b"y");
    blobs
        .store_blob(txn, Oid(1), Tid::ZERO, b"r", BlobSource::File(tmp))
        .unwrap();
    fs.close().unwrap();
    assert_eq!(files_under(&blob_root), Vec::<std::path::PathBuf>::new());
}

#[test]
fn a_refused_store_removes_its_temporary() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let blobs = fs.as_blobs().unwrap();
    let txn = begin(&fs);
    let tmp = temp_with(&fs, b"x");
    // An empty record is refused before the blob is placed.
    let err = blobs
        .store_blob(txn, Oid(1), Tid::ZERO, b"", BlobSource::File(tmp.clone()))
        .unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");
    assert!(!tmp.exists());
    fs.tpc_abort(txn);
}

#[test]
fn without_a_blob_dir_there_is_no_capability() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FileStorage::open(dir.path().join("Data.fs"), FileStorageOptions::default()).unwrap();
    assert!(fs.as_blobs().is_none());
    assert!(!fs.capabilities().blobs);
}

#[test]
fn read_only_open_writes_nothing_in_the_blob_dir() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    fs::remove_file(dir.path().join("blobs/.layout")).unwrap();
    fs::remove_dir(dir.path().join("blobs/tmp")).unwrap();
    let ro = FileStorage::open_with_blobs(
        dir.path().join("Data.fs"),
        FileStorageOptions {
            read_only: true,
            ..FileStorageOptions::default()
        },
        dir.path().join("blobs"),
    )
    .unwrap();
    assert!(ro.as_blobs().is_some());
    assert!(!dir.path().join("blobs/.layout").exists());
}
