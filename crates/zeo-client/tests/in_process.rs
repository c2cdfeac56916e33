//! The client against the in-process zeo-server.

mod common;

use std::time::Duration;

use common::{commit_with, wait_disconnected, wait_invalidated, wait_notice, TestServer};
use zeo_client::{ClientStorage, Error, Notice};
use zeo_server::ServerSettings;
use zeo_storage::{BeginOptions, Oid, Storage, Tid, TransactionMetaData};

fn commit(storage: &ClientStorage, writes: &[(Oid, Tid, &[u8])]) -> zeo_storage::Result<Tid> {
    let meta = TransactionMetaData {
        user: b"tester".to_vec(),
        ..Default::default()
    };
    commit_with(storage, &meta, writes)
}

fn settings(msgpack: bool) -> ServerSettings {
    ServerSettings {
        msgpack,
        ..ServerSettings::default()
    }
}

#[test]
fn commit_load_and_invalidate_in_both_encodings() {
    for msgpack in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let server = TestServer::start(&dir.path().join("Data.fs"), 0, settings(msgpack));
        let a = ClientStorage::open(server.options()).unwrap();
        let mut a_notices = a.subscribe();
        let b = ClientStorage::open(server.options()).unwrap();
        let mut notices = b.subscribe();

        let oid = a.new_oid().unwrap();
        let second = a.new_oid().unwrap();
        assert_eq!(second, Oid(oid.0 + 1), "oids come from a prefetched batch");
        let t1 = commit(&a, &[(oid, Tid::ZERO, b"one")]).unwrap();
        assert_eq!(a.last_transaction(), t1);
        assert_eq!(a.load(oid).unwrap(), (b"one".to_vec(), t1));
        assert_eq!(
            a.stats().server_loads,
            0,
            "the committer caches its own data"
        );

        // b hears of t1 and loads from the server, then from its cache.
        let tid = wait_invalidation(&mut notices);
        assert_eq!(tid, t1);
        assert_eq!(b.load(oid).unwrap(), (b"one".to_vec(), t1));
        assert_eq!(b.load(oid).unwrap().1, t1);
        assert_eq!(b.stats().server_loads, 1);

        // a commits again: b's cached revision becomes non-current.
        let t2 = commit(&a, &[(oid, t1, b"two")]).unwrap();
        assert_eq!(wait_invalidation(&mut notices), t2);
        assert_eq!(b.last_transaction(), t2);
        assert_eq!(b.load(oid).unwrap(), (b"two".to_vec(), t2));
        let old = b.load_before(oid, t2).unwrap().unwrap();
        assert_eq!(
            (old.data, old.start, old.end),
            (b"one".to_vec(), t1, Some(t2))
        );
        assert_eq!(b.load_serial(oid, t1).unwrap(), b"one");
        let history = b.history(oid, 10).unwrap();
        assert_eq!(
            history.iter().map(|h| h.tid).collect::<Vec<_>>(),
            vec![t2, t1]
        );
        assert_eq!(history[0].user, b"tester");

        // A real conflict: b writes based on t1.
        let err = commit(&b, &[(oid, t1, b"stale")]).unwrap_err();
        assert!(
            matches!(err, zeo_storage::Error::Conflict { oid: o, committed, old } if o == oid && committed == t2 && old == t1),
            "{err:?}"
        );
        // ...and b stays usable.
        let t3 = commit(&b, &[(oid, t2, b"three")]).unwrap();
        // a learns of t3 from the invalidation, which may still be on its
        // way: wait for it before comparing.
        wait_invalidated(&mut a_notices, t3);
        assert_eq!(a.load(oid).map(|r| r.1).ok(), Some(t3));
        assert!(matches!(
            a.load(Oid(999)),
            Err(zeo_storage::Error::PosKey { oid: Oid(999), .. })
        ));
        drop(a);
        drop(b);
        server.stop();
    }
}

fn wait_invalidation(rx: &mut tokio::sync::broadcast::Receiver<Notice>) -> Tid {
    wait_notice(rx, Duration::from_secs(10), |n| match n {
        Notice::Invalidated { tid, .. } => Some(tid),
        _ => None,
    })
    .expect("no invalidation arrived")
}

#[test]
fn persistent_cache_survives_a_client_restart_without_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("Data.fs"), 0, settings(false));
    let mut options = server.options();
    options.persistent_cache("app", Some(dir.path().to_owned()));
    let writer = ClientStorage::open(server.options()).unwrap();
    let oids: Vec<Oid> = (0..20).map(|_| writer.new_oid().unwrap()).collect();
    let writes: Vec<(Oid, Tid, &[u8])> = oids.iter().map(|o| (*o, Tid::ZERO, &b"v1"[..])).collect();
    let t1 = commit(&writer, &writes).unwrap();

    let client = ClientStorage::open(options.clone()).unwrap();
    for oid in &oids {
        assert_eq!(client.load(*oid).unwrap(), (b"v1".to_vec(), t1));
    }
    assert_eq!(client.stats().server_loads, 20);
    drop(client);

    // Changed while the client was away: five objects.
    let writes: Vec<(Oid, Tid, &[u8])> = oids[..5].iter().map(|o| (*o, t1, &b"v2"[..])).collect();
    let t2 = commit(&writer, &writes).unwrap();

    let loads_before = server.loads();
    let client = ClientStorage::open(options).unwrap();
    assert!(client.cache().is_persistent());
    assert_eq!(client.last_transaction(), t2);
    for (i, oid) in oids.iter().enumerate() {
        let expect = if i < 5 {
            (b"v2".to_vec(), t2)
        } else {
            (b"v1".to_vec(), t1)
        };
        assert_eq!(client.load(*oid).unwrap(), expect, "object {i}");
    }
    assert_eq!(
        client.stats().server_loads,
        5,
        "only the changed objects are reloaded"
    );
    assert_eq!(server.loads() - loads_before, 5);
    drop(client);
    drop(writer);
    server.stop();
}

#[test]
fn reconnects_after_a_server_restart_and_verifies_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let server = TestServer::start(&path, 0, settings(true));
    let port = server.port;
    let client = ClientStorage::open(server.options()).unwrap();
    let oid = client.new_oid().unwrap();
    let t1 = commit(&client, &[(oid, Tid::ZERO, b"before")]).unwrap();
    let mut notices = client.subscribe();
    let mut connects = client.subscribe();

    // A commit spanning the outage fails cleanly.
    let txn = client
        .tpc_begin(&TransactionMetaData::default(), BeginOptions::default())
        .unwrap();
    client.store(txn, oid, t1, b"lost").unwrap();
    server.stop();
    wait_disconnected(&mut notices);
    assert!(!client.is_connected());
    let err = client.tpc_vote(txn).unwrap_err();
    assert!(err.to_string().contains("ClientDisconnected"), "{err}");
    client.tpc_abort(txn);

    // Reads are served from the cache meanwhile; misses fail.
    assert_eq!(client.load(oid).unwrap().0, b"before");

    // Someone else changes the object while the client is away.
    let server = TestServer::start(&path, port, settings(true));
    let mut other_options = server.options();
    other_options.storage = "1".into();
    let other = ClientStorage::open(other_options).unwrap();
    let t2 = commit(&other, &[(oid, t1, b"after")]).unwrap();

    client.wait_connected(Duration::from_secs(20)).unwrap();
    // Verification or a live invalidation tells the client of t2.
    wait_invalidated(&mut notices, t2);
    assert_eq!(
        client.load(oid).unwrap(),
        (b"after".to_vec(), t2),
        "no stale read after reconnecting"
    );
    let connected = wait_notice(&mut connects, Duration::from_secs(10), |n| {
        matches!(n, Notice::Connected { .. }).then_some(())
    });
    assert!(connected.is_some(), "no Connected notice");
    // And the client commits again.
    let t3 = commit(&client, &[(oid, t2, b"again")]).unwrap();
    assert!(t3 > t2);
    drop(other);
    drop(client);
    server.stop();
}

#[test]
fn a_miss_while_disconnected_times_out_with_client_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("Data.fs"), 0, settings(false));
    let mut options = server.options();
    options.wait_timeout = Duration::from_millis(300);
    let client = ClientStorage::open(options).unwrap();
    let mut notices = client.subscribe();
    server.stop();
    wait_disconnected(&mut notices);
    let err = client.as_async().cache().load(Oid(5));
    assert!(err.is_none());
    let started = std::time::Instant::now();
    let err = client.load(Oid(5)).unwrap_err();
    assert!(err.to_string().contains("ClientDisconnected"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn read_only_server_with_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    // Create the file first with a writable server.
    let server = TestServer::start(&path, 0, settings(false));
    server.stop();
    let server = TestServer::start(
        &path,
        0,
        ServerSettings {
            read_only: true,
            ..ServerSettings::default()
        },
    );
    // Without fallback, a writable registration is refused and retried.
    let mut strict = server.options();
    strict.wait_timeout = Duration::from_millis(500);
    assert!(matches!(
        ClientStorage::open(strict),
        Err(Error::Disconnected(_))
    ));
    let mut options = server.options();
    options.read_only_fallback = true;
    let client = ClientStorage::open(options).unwrap();
    assert!(client.is_read_only());
    assert!(matches!(
        client.tpc_begin(&TransactionMetaData::default(), BeginOptions::default()),
        Err(zeo_storage::Error::ReadOnly)
    ));
    assert!(matches!(
        client.new_oid(),
        Err(zeo_storage::Error::ReadOnly)
    ));
}
