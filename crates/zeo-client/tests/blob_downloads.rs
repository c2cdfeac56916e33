//! Blob downloads against scripted servers on a paused clock: concurrent
//! loads of one blob download it once; a server cannot write blobs nobody
//! asked for; a download cut short leaves no file behind.

mod harness;

use std::time::Duration;

use harness::{connected, one_server, FakeServer, Net};
use zeo_client::{AsyncClientStorage, Layout};
use zeo_pickle::Value;
use zeo_protocol::{ClientEvent, Message};
use zeo_storage::{Oid, Tid};
use zeo_testkit::wait_until;

const OID: Oid = Oid(1000);
const TID: Tid = Tid(0x03d1_2c0f_6f0e_8a77);

/// A client with a blob cache in `blobs`, connected to a scripted server.
async fn blob_client(net: &Net, blobs: &std::path::Path) -> (AsyncClientStorage, FakeServer) {
    let mut options = net.options(vec![zeo_client::ServerAddress::localhost(8100)]);
    options.blob_dir = Some(blobs.to_path_buf());
    connected(net, options, Tid(5)).await
}

/// Answers a `sendBlob` as ZEO does: the blob's messages, then `None`.
async fn send_blob(conn: &mut FakeServer, call: &Message, chunks: &[&[u8]]) {
    conn.send(&ClientEvent::receive_blob_start(OID, TID)).await;
    for chunk in chunks {
        conn.send(&ClientEvent::receive_blob_chunk(OID, TID, chunk))
            .await;
    }
    conn.send(&ClientEvent::receive_blob_stop(OID, TID)).await;
    conn.reply(call, Value::None).await;
}

/// Waits, bounded, until `client` has seen `n` loads wait for a `.lock`
/// (the waiting happens on a blocking thread, in real time).
async fn lock_waits(client: &AsyncClientStorage, n: u64) -> bool {
    let client = client.clone();
    tokio::task::spawn_blocking(move || {
        wait_until(Duration::from_secs(30), || {
            client.stats().blob_lock_waits >= n
        })
    })
    .await
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn concurrent_loads_of_one_blob_download_it_once() {
    let blobs = tempfile::tempdir().unwrap();
    let (net, _) = one_server();
    let (client, mut conn) = blob_client(&net, blobs.path()).await;
    let server_side = async {
        let call = conn.expect("sendBlob").await;
        // Both other loads are waiting for the directory's lock before
        // the download is answered.
        assert!(lock_waits(&client, 2).await, "the other loads did not wait");
        send_blob(&mut conn, &call, &[b"hello ", b"blob"]).await;
    };
    let (a, b, c, ()) = tokio::join!(
        client.load_blob(OID, TID),
        client.load_blob(OID, TID),
        client.load_blob(OID, TID),
        server_side
    );
    let expected = blobs.path().join(Layout::ZeoCache.file(OID, TID));
    for path in [a, b, c] {
        let path = path.unwrap();
        assert_eq!(path, expected);
        assert_eq!(std::fs::read(&path).unwrap(), b"hello blob");
    }
    assert_eq!(client.stats().blob_downloads, 1);
    // The next request the server sees is not another sendBlob.
    let (loaded, ()) = tokio::join!(client.load(Oid(3)), conn.answer_load(Oid(3), b"x", Tid(2)));
    loaded.unwrap();
    client.close().unwrap();
}

#[tokio::test(start_paused = true)]
async fn blob_data_nobody_asked_for_is_not_written() {
    let blobs = tempfile::tempdir().unwrap();
    let (net, _) = one_server();
    let (client, mut conn) = blob_client(&net, blobs.path()).await;
    conn.send(&ClientEvent::receive_blob_start(OID, TID)).await;
    conn.send(&ClientEvent::receive_blob_chunk(OID, TID, b"intruder"))
        .await;
    conn.send(&ClientEvent::receive_blob_stop(OID, TID)).await;
    // A round trip after them: they were handled (and dropped) by then.
    let (loaded, ()) = tokio::join!(client.load(Oid(3)), conn.answer_load(Oid(3), b"x", Tid(2)));
    loaded.unwrap();
    let path = blobs.path().join(Layout::ZeoCache.file(OID, TID));
    assert!(!path.exists());
    assert!(!std::path::Path::new(&format!("{}.dl", path.display())).exists());
    assert!(
        client.is_connected(),
        "one bad message does not end the connection"
    );
    client.close().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_download_cut_short_leaves_no_file() {
    let blobs = tempfile::tempdir().unwrap();
    let (net, _) = one_server();
    let (client, mut conn) = blob_client(&net, blobs.path()).await;
    let server_side = async move {
        let _call = conn.expect("sendBlob").await;
        conn.send(&ClientEvent::receive_blob_start(OID, TID)).await;
        conn.send(&ClientEvent::receive_blob_chunk(OID, TID, b"half"))
            .await;
        drop(conn);
    };
    let (loaded, ()) = tokio::join!(client.load_blob(OID, TID), server_side);
    let err = loaded.unwrap_err();
    assert!(err.is_disconnected(), "{err}");
    let path = blobs.path().join(Layout::ZeoCache.file(OID, TID));
    assert!(!path.exists());
    assert!(!std::path::Path::new(&format!("{}.dl", path.display())).exists());
    client.close().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_missing_blob_is_a_pos_key_error() {
    let blobs = tempfile::tempdir().unwrap();
    let (net, _) = one_server();
    let (client, mut conn) = blob_client(&net, blobs.path()).await;
    let server_side = async {
        let call = conn.expect("sendBlob").await;
        let missing = zeo_protocol::WireError::from(&zeo_storage::Error::PosKey {
            oid: OID,
            serial: Some(TID),
        });
        conn.send(&zeo_protocol::Reply::error(call.msgid.clone(), &missing))
            .await;
    };
    let (loaded, ()) = tokio::join!(client.load_blob(OID, TID), server_side);
    let err = loaded.unwrap_err();
    assert!(err.is_pos_key(), "{err}");
    client.close().unwrap();
}
