//! Embedding the server in a few lines: spawn it, learn its port, connect a
//! client, shut it down and find the Data.fs lock released.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use zeo_client::{AsyncClientStorage, ClientOptions, ClientStorage, ServerAddress};
use zeo_server::{ListenAddress, Server, ServerBuilder, ServerSettings};
use zeo_storage::filestorage::{FileStorage, FileStorageOptions};
use zeo_storage::{BeginOptions, Oid, Storage, Tid, TransactionMetaData};

/// How long a test waits for any single step.
const WAIT: Duration = Duration::from_secs(10);

fn open_writable(path: &Path) -> zeo_storage::Result<FileStorage> {
    FileStorage::open(path, FileStorageOptions::default())
}

/// Commits `data` as the root object straight into `storage`.
/// A server for the FileStorage at `path` as storage `1`, bound to a free
/// port of 127.0.0.1.
fn tcp_server(path: &Path) -> Server {
    let server = ServerBuilder::new(ServerSettings::default())
        .storage("1", Arc::new(open_writable(path).unwrap()))
        .build()
        .unwrap();
    server.bind(&ListenAddress::localhost(0)).unwrap();
    server
}

fn commit_root(storage: &dyn Storage, serial: Tid, data: &[u8]) -> Tid {
    let txn = storage
        .tpc_begin(&TransactionMetaData::default(), BeginOptions::default())
        .unwrap();
    storage.store(txn, Oid::ROOT, serial, data).unwrap();
    storage.tpc_vote(txn).unwrap();
    storage.tpc_finish(txn, &mut |_| {}).unwrap()
}

fn client_options(address: ServerAddress) -> ClientOptions {
    let mut options = ClientOptions::new(vec![address]);
    options.wait_timeout = WAIT;
    options
}

fn assert_locked(path: &Path) {
    match open_writable(path) {
        Err(zeo_storage::Error::Locked { .. }) => {}
        Err(other) => panic!("expected the lock to be held, got {other}"),
        Ok(_) => panic!("{} opened writable while served", path.display()),
    }
}

#[tokio::test]
async fn spawn_learn_the_port_connect_and_shutdown_releases_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let storage = open_writable(&path).unwrap();
    let first = commit_root(&storage, Tid::ZERO, b"written before serving");

    let server = ServerBuilder::new(ServerSettings::default())
        .storage("1", Arc::new(storage))
        .build()
        .unwrap();
    let bound = server.bind(&ListenAddress::localhost(0)).unwrap();
    let running = server.spawn();
    // Held past the shutdown, as a signal handler would: the storage must
    // be closed, not merely dropped with the last reference.
    let handle = running.handle().clone();
    let port = running.port().expect("a TCP port");
    assert_ne!(port, 0, "the port the system picked is reported");
    assert_eq!(bound[0].port(), Some(port));
    assert_eq!(running.local_addrs(), bound);

    let address = ServerAddress::from(bound[0].tcp().unwrap());
    assert_eq!(address, ServerAddress::localhost(port));
    let client = tokio::time::timeout(WAIT, AsyncClientStorage::connect(client_options(address)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        client.load(Oid::ROOT).await.unwrap(),
        (b"written before serving".to_vec(), first)
    );
    let txn = client
        .tpc_begin(&TransactionMetaData::default(), BeginOptions::default())
        .await
        .unwrap();
    client
        .store(txn, Oid::ROOT, first, b"written by the client")
        .unwrap();
    client.tpc_vote(txn).await.unwrap();
    let second = client.tpc_finish(txn).await.unwrap();
    assert_eq!(running.handle().connections(), 1);

    // Served: the file is locked.
    assert_locked(&path);

    // The client stays connected: shutdown closes its connection itself.
    tokio::time::timeout(WAIT, running.shutdown())
        .await
        .expect("shutdown finishes")
        .expect("storages close cleanly");
    assert!(handle.is_stopped());
    let reopened = open_writable(&path).expect("the lock is released once shutdown returns");
    assert_eq!(
        reopened.load(Oid::ROOT).unwrap(),
        (b"written by the client".to_vec(), second)
    );
    client.close().unwrap();
    drop(handle);
}

#[tokio::test]
async fn dropping_a_running_server_shuts_it_down() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let server = tcp_server(&path);
    let running = server.spawn();
    let handle = running.handle().clone();
    assert!(!handle.is_stopped());
    assert_locked(&path);

    drop(running);
    tokio::time::timeout(WAIT, handle.stopped())
        .await
        .expect("the server stops once its RunningServer is dropped");
    assert!(handle.is_stopped());
    open_writable(&path).expect("the lock is released once stopped");
}

#[tokio::test]
async fn a_handle_elsewhere_stops_the_server_and_wait_returns() {
    let server = ServerBuilder::new(ServerSettings::default())
        .storage("1", Arc::new(zeo_storage::MappingStorage::new("1")))
        .build()
        .unwrap();
    server.bind(&ListenAddress::localhost(0)).unwrap();
    let running = server.spawn();
    let handle = running.handle().clone();
    let waiting = tokio::spawn(running.wait());
    handle.shutdown();
    tokio::time::timeout(WAIT, waiting)
        .await
        .expect("wait returns after a shutdown elsewhere")
        .unwrap()
        .unwrap();
    assert!(handle.is_stopped());
}

#[tokio::test]
async fn spawn_on_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("zeo.sock");
    let server = ServerBuilder::new(ServerSettings::default())
        .storage("1", Arc::new(zeo_storage::MappingStorage::new("1")))
        .build()
        .unwrap();
    let bound = server.bind(&ListenAddress::from(socket.as_path())).unwrap();
    let running = server.spawn();
    assert_eq!(running.port(), None, "no TCP port");
    assert_eq!(bound[0].unix(), Some(socket.as_path()));

    let address = ServerAddress::from(bound[0].unix().unwrap());
    let client = tokio::time::timeout(WAIT, AsyncClientStorage::connect(client_options(address)))
        .await
        .unwrap()
        .unwrap();
    client.ping().await.unwrap();
    client.close().unwrap();

    tokio::time::timeout(WAIT, running.shutdown())
        .await
        .unwrap()
        .unwrap();
    assert!(!socket.exists(), "the socket file is removed at shutdown");
}

#[test]
fn a_background_server_for_blocking_programs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let server = tcp_server(&path);
    let background = server.start_background().unwrap();
    let port = background.port().unwrap();
    let handle = background.handle().clone();

    let client = ClientStorage::open(client_options(ServerAddress::localhost(port))).unwrap();
    let tid = commit_root(&client, Tid::ZERO, b"through a blocking client");
    assert_locked(&path);

    background.shutdown().expect("storages close cleanly");
    let reopened = open_writable(&path).expect("the lock is released once shutdown returns");
    assert_eq!(
        reopened.load(Oid::ROOT).unwrap(),
        (b"through a blocking client".to_vec(), tid)
    );
    assert!(handle.is_stopped());
    drop(client);
}

#[test]
fn dropping_a_background_server_outside_async_code_waits_for_the_storages() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let server = tcp_server(&path);
    let background = server.start_background().unwrap();
    let handle = background.handle().clone();
    assert_locked(&path);
    drop(background);
    assert!(handle.is_stopped());
    open_writable(&path).expect("the lock is released once the drop returns");
}

#[tokio::test]
async fn dropping_a_background_server_inside_async_code_still_closes_the_storages() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let server = tcp_server(&path);
    let background = server.start_background().unwrap();
    let handle = background.handle().clone();
    drop(background); // must not panic although this is async code
    tokio::time::timeout(WAIT, handle.stopped())
        .await
        .expect("the shutdown finishes on its own thread");
    open_writable(&path).expect("the storage was closed, not merely dropped");
}
