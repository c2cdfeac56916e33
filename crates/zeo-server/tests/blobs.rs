//! The blob calls against a FileStorage with a blob directory, on a paused
//! clock: uploads streamed to the blob temporary directory, downloads in
//! 59,000-byte chunks before the reply, `storeBlobShared`'s name rules, and
//! no file left by an aborted transaction or a client gone mid-upload.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use zeo_pickle::Value;
use zeo_protocol::{ClientRequest, TxnId};
use zeo_server::ServerSettings;
use zeo_storage::filestorage::FileStorageOptions;
use zeo_storage::{FileStorage, Oid, Storage, Tid};

fn blob_server(dir: &Path) -> PipeServer {
    blob_server_with(dir, ServerSettings::default())
}

fn blob_server_with(dir: &Path, settings: ServerSettings) -> PipeServer {
    let fs = FileStorage::open_with_blobs(
        dir.join("Data.fs"),
        FileStorageOptions::default(),
        dir.join("blobs"),
    )
    .unwrap();
    PipeServer::with_storage(settings, Arc::new(fs) as Arc<dyn Storage>)
}

/// Files anywhere under the blob directory but the layout marker and the
/// placement journal.
fn blob_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.join("blobs")];
    for _ in 0..10_000 {
        let Some(d) = stack.pop() else { break };
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else if e.file_name() != ".layout" && e.file_name() != ".placed" {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// A record of class `ZODB.blob.Blob`, as ZODB pickles one.
fn blob_record() -> Vec<u8> {
    zeo_pickle::encode_record(&Value::global("ZODB.blob", "Blob"), &Value::None).unwrap()
}

async fn upload(c: &mut Client, txn: i64, oid: Oid, serial: Tid, blob: &[u8]) {
    let record = blob_record();
    for m in ClientRequest::store_blob(oid, serial, &record, TxnId(txn), blob.chunks(50_000)) {
        c.send(&m).await;
    }
}

#[tokio::test(start_paused = true)]
async fn uploads_commit_and_downloads_stream_before_the_reply() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = blob_server(dir.path());
    let mut a = server.client().await;

    let info = a.call("get_info", vec![]).await.unwrap();
    assert!(format!("{info:?}").contains("IBlobStorage"), "{info:?}");

    let blob: Vec<u8> = (0..150_000u32).map(|i| (i % 251) as u8).collect();
    a.begin(1).await;
    upload(&mut a, 1, Oid(1), Tid::ZERO, &blob).await;
    a.vote(1).await.unwrap();
    let tid = a.finish(1).await.unwrap();
    until_idle().await;
    let files = blob_files(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(std::fs::read(&files[0]).unwrap(), blob);

    let id = a.msgid();
    a.send(&ClientRequest::send_blob(id, Oid(1), tid)).await;
    assert_eq!(a.reply_to(&Value::Int(id)).await.unwrap(), Value::None);
    // Every message of the download arrived before the reply.
    let events: Vec<_> = a
        .events()
        .into_iter()
        .filter(|m| m.method.starts_with("receiveBlob"))
        .cloned()
        .collect();
    let names: Vec<_> = events.iter().map(|m| m.method.as_str()).collect();
    assert_eq!(
        names,
        [
            "receiveBlobStart",
            "receiveBlobChunk",
            "receiveBlobChunk",
            "receiveBlobChunk",
            "receiveBlobStop"
        ]
    );
    let mut got = Vec::new();
    let mut sizes = Vec::new();
    for m in &events[1..4] {
        let Value::Tuple(args) = &m.args else {
            panic!("{:?}", m.args)
        };
        let Value::Bytes(chunk) = &args[2] else {
            panic!("{args:?}")
        };
        got.extend_from_slice(chunk);
        sizes.push(chunk.len());
    }
    assert_eq!(sizes, [59_000, 59_000, 32_000]);
    assert_eq!(got, blob);

    // A revision without a file.
    let err = a
        .call(
            "sendBlob",
            vec![bytes(&Oid(1).to_bytes()), bytes(&Tid(tid.0 - 1).to_bytes())],
        )
        .await
        .unwrap_err();
    assert_eq!(err.class, "ZODB.POSException.POSKeyError");
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn aborted_and_abandoned_uploads_leave_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = blob_server(dir.path());
    let mut a = server.client().await;

    a.begin(1).await;
    upload(&mut a, 1, Oid(1), Tid::ZERO, &[1; 1000]).await;
    until_idle().await;
    assert_eq!(blob_files(dir.path()).len(), 1, "the upload is on disk");
    a.abort(1).await.unwrap();
    assert_eq!(blob_files(dir.path()), Vec::<std::path::PathBuf>::new());

    // Voted, then aborted: the file moved into place goes too.
    a.begin(2).await;
    upload(&mut a, 2, Oid(1), Tid::ZERO, &[2; 1000]).await;
    a.vote(2).await.unwrap();
    a.abort(2).await.unwrap();
    assert_eq!(blob_files(dir.path()), Vec::<std::path::PathBuf>::new());

    // A client that leaves in the middle of an upload.
    let (mut b, task) = server.connect().await;
    b.register("1", false).await.unwrap();
    b.begin(3).await;
    b.call_async("storeBlobStart", vec![]).await;
    b.call_async("storeBlobChunk", vec![Value::Bytes(vec![3; 500])])
        .await;
    until_idle().await;
    assert_eq!(blob_files(dir.path()).len(), 1);
    drop(b);
    task.await.unwrap();
    assert_eq!(blob_files(dir.path()), Vec::<std::path::PathBuf>::new());
    server.stop().await;
}

/// The error a two-way `storeBlobShared` of `name` for oid 1 gets.
async fn refused_shared(a: &mut Client, name: &str) -> zeo_protocol::WireError {
    let args = vec![
        bytes(&Oid(1).to_bytes()),
        bytes(&Tid::ZERO.to_bytes()),
        bytes(b"record"),
        Value::Str(name.into()),
        Value::Int(1),
    ];
    a.call("storeBlobShared", args).await.unwrap_err()
}

#[tokio::test(start_paused = true)]
async fn shared_blob_names_follow_zeo() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = blob_server(dir.path());
    let mut a = server.client().await;
    a.begin(1).await;
    for bad in ["../escape.tmp", "x.blob", "x.tmp12"] {
        let err = refused_shared(&mut a, bad).await;
        assert_eq!(err.class, "builtins.ValueError", "{bad}");
    }
    // A good name: the file the client put in the oid's directory.
    let oid_dir = dir
        .path()
        .join("blobs/0x00/0x00/0x00/0x00/0x00/0x00/0x00/0x01");
    std::fs::create_dir_all(&oid_dir).unwrap();
    // A good name that is a symlink, or names nothing, is refused too.
    std::os::unix::fs::symlink("/etc/hostname", oid_dir.join("0x00link.tmp")).unwrap();
    for name in ["0x00link.tmp", "0x00missing.tmp"] {
        let err = refused_shared(&mut a, name).await;
        assert_eq!(err.class, "builtins.ValueError", "{name}");
    }
    std::fs::remove_file(oid_dir.join("0x00link.tmp")).unwrap();
    std::fs::write(oid_dir.join("0x00abc.tmp"), b"shared bytes").unwrap();
    a.send(&ClientRequest::store_blob_shared(
        Oid(1),
        Tid::ZERO,
        b"record",
        "0x00abc.tmp",
        TxnId(1),
    ))
    .await;
    a.vote(1).await.unwrap();
    let tid = a.finish(1).await.unwrap();
    until_idle().await;
    let files = blob_files(dir.path());
    assert_eq!(
        files,
        [oid_dir.join(format!("{}.blob", zeo_storage::blobdir::tid_repr(tid)))]
    );
    assert_eq!(std::fs::read(&files[0]).unwrap(), b"shared bytes");
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_upload_past_max_transaction_size_is_refused_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let settings = ServerSettings {
        max_transaction_size: Some(10_000),
        ..ServerSettings::default()
    };
    let mut server = blob_server_with(dir.path(), settings);
    let mut a = server.client().await;

    // Chunks with no upload begun are refused, and the connection goes on.
    let err = a
        .call("storeBlobChunk", vec![Value::Bytes(vec![0; 10])])
        .await
        .unwrap_err();
    assert!(
        format!("{err:?}").contains("without storeBlobStart"),
        "{err:?}"
    );

    a.begin(1).await;
    a.call("storeBlobStart", vec![]).await.unwrap();
    a.call("storeBlobChunk", vec![Value::Bytes(vec![1; 8_000])])
        .await
        .unwrap();
    let err = a
        .call("storeBlobChunk", vec![Value::Bytes(vec![2; 8_000])])
        .await
        .unwrap_err();
    assert!(
        format!("{err:?}").contains("blob upload exceeds max-transaction-size (10000 bytes)"),
        "{err:?}"
    );
    assert_eq!(blob_files(dir.path()), Vec::<std::path::PathBuf>::new());
    let err = a
        .call("storeBlobChunk", vec![Value::Bytes(vec![3; 10])])
        .await
        .unwrap_err();
    assert!(
        format!("{err:?}").contains("without storeBlobStart"),
        "{err:?}"
    );
    assert_eq!(a.call("ping", vec![]).await.unwrap(), Value::None);
    a.abort(1).await.unwrap();
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_full_disk_during_an_upload_or_its_vote_fails_the_vote_and_leaves_no_file() {
    use zeo_storage::filestorage::{check, check_blobs, FaultInjector};
    let dir = tempfile::tempdir().unwrap();
    let faults = FaultInjector::new();
    let fs = FileStorage::open_with_blobs_and_faults(
        dir.path().join("Data.fs"),
        FileStorageOptions::default(),
        dir.path().join("blobs"),
        Arc::clone(&faults),
    )
    .unwrap();
    let mut server =
        PipeServer::with_storage(ServerSettings::default(), Arc::new(fs) as Arc<dyn Storage>);
    let mut a = server.client().await;
    let blob: Vec<u8> = (0..150_000u32).map(|i| (i % 241) as u8).collect();

    // The disk fills in the middle of a one-way upload: the connection
    // stays, the vote names the cause, and nothing is left on disk.
    faults.fail_writes_after(70_000);
    a.begin(1).await;
    upload(&mut a, 1, Oid(1), Tid::ZERO, &blob).await;
    let err = a.vote(1).await.unwrap_err();
    assert!(
        format!("{err:?}").contains("No space left on device"),
        "{err:?}"
    );
    assert_eq!(blob_files(dir.path()), Vec::<std::path::PathBuf>::new());
    a.abort(1).await.unwrap();
    assert_eq!(a.call("ping", vec![]).await.unwrap(), Value::None);

    // Space is back: the next commit works.
    faults.heal();
    a.begin(2).await;
    upload(&mut a, 2, Oid(1), Tid::ZERO, &blob).await;
    a.vote(2).await.unwrap();
    let first = a.finish(2).await.unwrap();
    assert_eq!(blob_files(dir.path()).len(), 1);

    // The sync of the blob file at the vote fails: the vote fails, and
    // the abort takes the file that was moved into place away.
    faults.fail_next_syncs(1);
    a.begin(3).await;
    upload(&mut a, 3, Oid(1), first, &blob).await;
    let err = a.vote(3).await.unwrap_err();
    assert!(
        format!("{err:?}").contains("No space left on device"),
        "{err:?}"
    );
    a.abort(3).await.unwrap();
    let files = blob_files(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(std::fs::read(&files[0]).unwrap(), blob);

    faults.heal();
    a.begin(4).await;
    upload(&mut a, 4, Oid(1), first, &blob[..1000]).await;
    a.vote(4).await.unwrap();
    a.finish(4).await.unwrap();
    assert_eq!(blob_files(dir.path()).len(), 2);
    assert!(faults.injected() >= 2, "{}", faults.injected());
    server.stop().await;

    assert_eq!(check(&dir.path().join("Data.fs")).unwrap().transactions, 2);
    let report = check_blobs(&dir.path().join("Data.fs"), &dir.path().join("blobs")).unwrap();
    assert_eq!((report.blob_records, report.missing_count), (2, 0));
}

/// ZEO's `checkTransactionBufferCleanup`: a one-way blob store whose record
/// is a `str` is taken, the connection stays, the upload goes, and the
/// vote fails with the `TypeError` Python's FileStorage raises.
#[tokio::test(start_paused = true)]
async fn a_store_of_a_record_that_is_not_bytes_fails_the_vote_not_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = blob_server(dir.path());
    let mut a = server.client().await;
    a.begin(1).await;
    a.call_async("storeBlobStart", vec![]).await;
    a.call_async(
        "storeBlobChunk",
        vec![Value::Bytes(b"I am a happy blob.".to_vec())],
    )
    .await;
    let end = vec![
        bytes(&Oid(1).to_bytes()),
        bytes(&Tid::ZERO.to_bytes()),
        Value::Str("foo".into()),
        Value::Int(1),
    ];
    a.call_async("storeBlobEnd", end).await;
    assert_eq!(a.call("ping", vec![]).await.unwrap(), Value::None);
    assert_eq!(blob_files(dir.path()), Vec::<std::path::PathBuf>::new());
    let err = a.vote(1).await.unwrap_err();
    assert_eq!(err.class, "builtins.TypeError");
    assert!(
        format!("{:?}", err.fields).contains("a bytes-like object is required, not 'str'"),
        "{err:?}"
    );
    a.abort(1).await.unwrap();

    // The same for storea, then a good transaction on the same connection.
    a.begin(2).await;
    let store = vec![
        bytes(&Oid(1).to_bytes()),
        bytes(&Tid::ZERO.to_bytes()),
        Value::Int(5),
        Value::Int(2),
    ];
    a.call_async("storea", store).await;
    let err = a.vote(2).await.unwrap_err();
    assert!(
        format!("{err:?}").contains("object of type 'int' has no len()"),
        "{err:?}"
    );
    a.abort(2).await.unwrap();
    a.begin(3).await;
    upload(&mut a, 3, Oid(1), Tid::ZERO, b"blob").await;
    a.vote(3).await.unwrap();
    a.finish(3).await.unwrap();
    assert_eq!(blob_files(dir.path()).len(), 1);
    server.stop().await;
}
