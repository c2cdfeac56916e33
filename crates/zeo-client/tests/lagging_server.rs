//! Failing over to a server that is behind the client's cache (one over a
//! lagging replica, or one that has not yet learnt of another server's
//! commits): the client waits for it to catch up, bounded by its
//! `wait_timeout`, instead of refusing it.

use std::sync::Arc;
use std::time::Duration;

use zeo_client::{ClientOptions, ClientStorage, ServerAddress};
use zeo_server::{BackgroundServer, ListenAddress, ServerBuilder, ServerSettings};
use zeo_storage::testing::SharedDatabase;
use zeo_storage::{BeginOptions, Storage, Tid, TransactionMetaData};

fn serve(db: &SharedDatabase) -> BackgroundServer {
    let server = ServerBuilder::new(ServerSettings::default())
        .storage("1", Arc::new(db.handle()))
        .build()
        .unwrap();
    server.bind(&ListenAddress::localhost(0)).unwrap();
    server.start_background().unwrap()
}

fn options(server: &BackgroundServer, cache: &std::path::Path) -> ClientOptions {
    let mut o = ClientOptions::new(vec![ServerAddress::localhost(server.port().unwrap())]);
    o.cache_path = Some(cache.to_owned());
    o.wait_timeout = Duration::from_secs(20);
    o
}

#[test]
fn a_client_waits_for_a_server_behind_its_cache() {
    // Servers learn of each other's commits only by their periodic poll:
    // right after a commit through A, B is behind.
    let db = SharedDatabase::without_wakeup("shared");
    let (a, b) = (serve(&db), serve(&db));
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("client.zec");
    let client = ClientStorage::open(options(&a, &cache)).unwrap();
    let oid = client.new_oid().unwrap();
    let txn = client
        .tpc_begin(&TransactionMetaData::default(), BeginOptions::default())
        .unwrap();
    client
        .store(txn, oid, Tid::ZERO, b"committed through A")
        .unwrap();
    client.tpc_vote(txn).unwrap();
    let tid = client.tpc_finish(txn, &mut |_| {}).unwrap();
    assert_eq!(client.load(oid).unwrap().1, tid);
    drop(client);
    // The cache, at `tid`, now meets B, which may not have read it yet.
    // No second round before the deadline: the wait happens within the
    // first connection, not by reconnecting.
    let mut once = options(&b, &cache);
    once.wait_timeout = Duration::from_secs(5);
    once.min_disconnect_poll = Duration::from_secs(60);
    once.max_disconnect_poll = Duration::from_secs(60);
    let client = ClientStorage::open(once).expect("B catches up");
    assert_eq!(
        client.load(oid).unwrap(),
        (b"committed through A".to_vec(), tid)
    );
    assert!(client.last_transaction() >= tid);
    drop(client);
    a.shutdown().unwrap();
    b.shutdown().unwrap();
}
