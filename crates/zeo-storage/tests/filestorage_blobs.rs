//! FileStorage with a blob directory: store, load, abort, close and reopen.

use std::fs;
use std::path::Path;

use zeo_storage::blobdir::{BlobDir, Layout};
use zeo_storage::filestorage::{check_blobs, BlobPackMode, FileStorageOptions};
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
    // The layout marker and the placement journal are not blob files.
    out.retain(|p| !p.ends_with(".layout") && !p.ends_with(".placed"));
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

/// A record of class `ZODB.blob.Blob`, as ZODB pickles one.
fn blob_record() -> Vec<u8> {
    let class = zeo_pickle::Value::global("ZODB.blob", "Blob");
    zeo_pickle::encode_record(&class, &zeo_pickle::Value::None).unwrap()
}

/// A root record referencing `refs`.
fn root_record(refs: &[u64]) -> Vec<u8> {
    use zeo_pickle::Value;
    let class = Value::global("persistent.mapping", "PersistentMapping");
    let refs = refs
        .iter()
        .map(|o| Value::persistent_ref(*o, Some(Value::global("ZODB.blob", "Blob"))))
        .collect();
    zeo_pickle::encode_record(&class, &Value::List(refs)).unwrap()
}

/// Commits `stores` as `(oid, blob bytes or None for a plain record)` at
/// unix time `secs`, each against the current serial.
fn commit_at(fs: &FileStorage, secs: f64, stores: &[(u64, Option<&[u8]>)]) -> Tid {
    let options = BeginOptions {
        tid: Some(zeo_storage::TimeStamp::from_unix(secs).tid()),
        ..BeginOptions::default()
    };
    let txn = fs
        .tpc_begin(&TransactionMetaData::default(), options)
        .unwrap();
    for (oid, blob) in stores {
        let serial = fs.get_tid(Oid(*oid)).unwrap_or(Tid::ZERO);
        match blob {
            Some(bytes) => {
                let tmp = temp_with(fs, bytes);
                fs.as_blobs()
                    .unwrap()
                    .store_blob(
                        txn,
                        Oid(*oid),
                        serial,
                        &blob_record(),
                        BlobSource::File(tmp),
                    )
                    .unwrap();
            }
            None => fs
                .store(txn, Oid(*oid), serial, &root_record(&[1]))
                .unwrap(),
        }
    }
    fs.tpc_vote(txn).unwrap();
    fs.tpc_finish(txn, &mut |_| {}).unwrap()
}

#[test]
fn undo_copies_the_blob_of_the_revision_it_restores() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let t1 = commit_at(&fs, 1.0e9, &[(0, None), (1, Some(b"one"))]);
    let t2 = commit_at(&fs, 1.0e9 + 10.0, &[(1, Some(b"two"))]);
    assert_eq!(blob_bytes(&fs, Oid(1), t2), b"two");
    let undo = fs.as_undo().unwrap();
    let id = undo.undo_log(0, 1, None).unwrap()[0].id.clone();
    let txn = begin(&fs);
    assert_eq!(undo.undo(txn, &id).unwrap(), [Oid(1)]);
    fs.tpc_vote(txn).unwrap();
    let t3 = fs.tpc_finish(txn, &mut |_| {}).unwrap();
    assert_eq!(fs.load(Oid(1)).unwrap().1, t3);
    assert_eq!(blob_bytes(&fs, Oid(1), t3), b"one");
    assert_eq!(blob_bytes(&fs, Oid(1), t1), b"one");

    // An aborted undo leaves no copy.
    let id = undo.undo_log(0, 1, None).unwrap()[0].id.clone();
    let txn = begin(&fs);
    undo.undo(txn, &id).unwrap();
    fs.tpc_abort(txn);
    assert_eq!(fs.blob_dir().unwrap().list_blobs().unwrap().len(), 3);
}

fn pack_scenario(mode: BlobPackMode) -> (tempfile::TempDir, Vec<Tid>) {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path()).with_blob_pack_mode(mode);
    let t1 = commit_at(
        &fs,
        1.0e9,
        &[(0, None), (1, Some(b"one")), (2, Some(b"lost"))],
    );
    // Oid 2 unreachable from here on: the root references only oid 1.
    let t2 = commit_at(&fs, 1.0e9 + 10.0, &[(1, Some(b"two")), (0, None)]);
    let t3 = commit_at(&fs, 1.0e9 + 20.0, &[(1, Some(b"three"))]);
    fs.as_pack().unwrap().pack(1.0e9 + 15.0, true).unwrap();
    assert_eq!(blob_bytes(&fs, Oid(1), t2), b"two");
    assert_eq!(blob_bytes(&fs, Oid(1), t3), b"three");
    assert!(fs
        .as_blobs()
        .unwrap()
        .load_blob(Oid(1), t1)
        .unwrap_err()
        .is_pos_key());
    assert!(fs
        .as_blobs()
        .unwrap()
        .load_blob(Oid(2), t1)
        .unwrap_err()
        .is_pos_key());
    assert!(!dir.path().join("blobs/.removed").exists());
    (dir, vec![t1, t2, t3])
}

#[test]
fn pack_removes_blobs_of_removed_revisions_and_keeps_them_in_old() {
    let (dir, t) = pack_scenario(BlobPackMode::Removed { keep_old: true });
    let old = BlobDir::open_read_only(dir.path().join("blobs.old")).unwrap();
    let listed: Vec<_> = old
        .list_blobs()
        .unwrap()
        .into_iter()
        .map(|(o, t, _)| (o, t))
        .collect();
    assert_eq!(
        listed,
        [
            (Oid(1), t[0]),
            (Oid(1), t[1]),
            (Oid(1), t[2]),
            (Oid(2), t[0])
        ],
        "the old directory is the whole pre-pack state"
    );
    // The oid gone altogether lost its directory.
    let oid2 = dir
        .path()
        .join("blobs")
        .join(Layout::Bushy.oid_path(Oid(2)));
    assert!(!oid2.exists());
}

#[test]
fn pack_without_keep_old_or_as_blobstorage_keeps_no_copy() {
    for mode in [
        BlobPackMode::Removed { keep_old: false },
        BlobPackMode::Undoing,
    ] {
        let (dir, _) = pack_scenario(mode);
        assert!(!dir.path().join("blobs.old").exists(), "{mode:?}");
    }
}

#[test]
fn check_reports_blob_records_without_files() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    commit_at(&fs, 1.0e9, &[(0, None), (1, Some(b"one"))]);
    let t2 = commit_at(&fs, 1.0e9 + 10.0, &[(1, Some(b"two"))]);
    drop(fs);
    let data = dir.path().join("Data.fs");
    let blobs = dir.path().join("blobs");
    let clean = check_blobs(&data, &blobs).unwrap();
    assert_eq!((clean.blob_records, clean.missing_count), (2, 0));
    let lost = BlobDir::open_read_only(&blobs)
        .unwrap()
        .blob_path(Oid(1), t2);
    fs::remove_file(&lost).unwrap();
    let report = check_blobs(&data, &blobs).unwrap();
    assert_eq!(report.missing, [(Oid(1), t2, lost)]);
}

#[test]
fn a_storage_with_blobs_copies_through_iteration_and_restore_blob() {
    let dir = tempfile::tempdir().unwrap();
    let src = open(dir.path());
    let t1 = commit_at(&src, 1.0e9, &[(0, None), (1, Some(b"one"))]);
    let t2 = commit_at(&src, 1.0e9 + 10.0, &[(1, Some(b"two"))]);
    let copy_dir = dir.path().join("copy");
    fs::create_dir(&copy_dir).unwrap();
    let dst = open(&copy_dir);
    for txn in src.as_iteration().unwrap().iterator(None, None).unwrap() {
        let txn = txn.unwrap();
        let options = BeginOptions {
            tid: Some(txn.tid),
            ..BeginOptions::default()
        };
        let t = dst.tpc_begin(&txn.meta, options).unwrap();
        for rec in txn.records {
            let data = rec.data.as_deref();
            match src.as_blobs().unwrap().load_blob(rec.oid, rec.tid) {
                Ok(BlobData::Path(path)) => {
                    let stream = Box::new(fs::File::open(path).unwrap());
                    dst.as_blobs()
                        .unwrap()
                        .restore_blob(t, rec.oid, rec.tid, data, Some(BlobSource::Stream(stream)))
                        .unwrap();
                }
                Err(e) if e.is_pos_key() => dst
                    .as_restore()
                    .unwrap()
                    .restore(t, rec.oid, rec.tid, data, rec.data_txn)
                    .unwrap(),
                other => panic!("{other:?}"),
            }
        }
        dst.tpc_vote(t).unwrap();
        dst.tpc_finish(t, &mut |_| {}).unwrap();
    }
    assert_eq!(blob_bytes(&dst, Oid(1), t1), b"one");
    assert_eq!(blob_bytes(&dst, Oid(1), t2), b"two");
    assert_eq!(
        blob_bytes(&src, Oid(1), t1),
        b"one",
        "the source lost a file"
    );
    drop(dst);
    let report = check_blobs(&copy_dir.join("Data.fs"), &copy_dir.join("blobs")).unwrap();
    assert_eq!((report.blob_records, report.missing_count), (2, 0));
}
