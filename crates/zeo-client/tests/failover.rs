//! Several server addresses, read-only fallback and its upgrade, and what
//! a lost connection looks like through the `Storage` trait.

mod common;

use std::time::{Duration, Instant};

use common::{commit_with, wait_disconnected, wait_notice, TestServer};
use zeo_client::{is_client_disconnected, ClientStorage, Notice, ServerAddress};
use zeo_server::ServerSettings;
use zeo_storage::Iteration;
use zeo_storage::Undo;
use zeo_storage::{BeginOptions, Oid, Storage, Tid, TransactionMetaData};
use zeo_testkit::free_port;

fn commit(storage: &ClientStorage, oid: Oid, serial: Tid, data: &[u8]) -> zeo_storage::Result<Tid> {
    commit_with(
        storage,
        &TransactionMetaData::default(),
        &[(oid, serial, data)],
    )
}

fn read_only() -> ServerSettings {
    ServerSettings {
        read_only: true,
        ..ServerSettings::default()
    }
}

#[test]
fn a_refused_first_address_falls_through_to_the_second() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("Data.fs"), 0, ServerSettings::default());
    let down = free_port();
    let mut options = server.options();
    options.servers = vec![
        ServerAddress::localhost(down),
        ServerAddress::localhost(server.port),
    ];
    let started = Instant::now();
    let client = ClientStorage::open(options).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(!client.is_read_only());
    let oid = client.new_oid().unwrap();
    let tid = commit(&client, oid, Tid::ZERO, b"via the second address").unwrap();
    assert_eq!(
        client.load(oid).unwrap(),
        (b"via the second address".to_vec(), tid)
    );
    drop(client);
    server.stop();
}

#[test]
fn read_only_fallback_switches_to_a_writable_server_when_one_appears() {
    let dir = tempfile::tempdir().unwrap();
    let (path_a, path_b) = (dir.path().join("a.fs"), dir.path().join("b.fs"));
    // Both servers hold the same history, as replicas would.
    let seed = TestServer::start(&path_a, 0, ServerSettings::default());
    let seeder = ClientStorage::open(seed.options()).unwrap();
    let oid = seeder.new_oid().unwrap();
    let t1 = commit(&seeder, oid, Tid::ZERO, b"seed").unwrap();
    drop(seeder);
    seed.stop();
    std::fs::copy(&path_a, &path_b).unwrap();

    let replica = TestServer::start(&path_a, 0, read_only());
    let port_b = free_port();
    let mut options = replica.options();
    options.servers.push(ServerAddress::localhost(port_b));
    options.read_only_fallback = true;
    let client = ClientStorage::open(options).unwrap();
    assert!(client.is_read_only(), "only the read-only server is up");
    assert_eq!(client.load(oid).unwrap(), (b"seed".to_vec(), t1));
    assert!(matches!(
        client.tpc_begin(&TransactionMetaData::default(), BeginOptions::default()),
        Err(zeo_storage::Error::ReadOnly)
    ));
    let mut notices = client.subscribe();

    let primary = TestServer::start(&path_b, port_b, ServerSettings::default());
    let connected = wait_notice(&mut notices, Duration::from_secs(10), |n| match n {
        Notice::Connected { address, read_only } => Some((address, read_only)),
        _ => None,
    });
    assert_eq!(connected, Some((format!("127.0.0.1:{port_b}"), false)));
    assert!(!client.is_read_only());

    let t2 = commit(&client, oid, t1, b"written after the switch").unwrap();
    let direct = ClientStorage::open(primary.options()).unwrap();
    assert_eq!(
        direct.load(oid).unwrap(),
        (b"written after the switch".to_vec(), t2)
    );
    drop((client, direct));
    primary.stop();
    replica.stop();
}

#[test]
fn a_lost_connection_is_client_disconnected_through_the_trait() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("Data.fs"), 0, ServerSettings::default());
    let mut options = server.options();
    options.wait_timeout = Duration::from_millis(300);
    let client = ClientStorage::open(options).unwrap();
    let oid = client.new_oid().unwrap();
    let mut serial = Tid::ZERO;
    for i in 0..3u8 {
        serial = commit(&client, oid, serial, &[i]).unwrap();
    }
    let mut iterator = client.iterator(None, None).unwrap();
    assert!(iterator.next().unwrap().is_ok());

    let mut notices = client.subscribe();
    server.stop();
    wait_disconnected(&mut notices);
    let expect_disconnected = |what: &str, err: zeo_storage::Error| {
        assert!(is_client_disconnected(&err), "{what}: {err:?}");
        let zeo_storage::Error::Storage(message) = &err else {
            unreachable!()
        };
        assert!(
            message.starts_with("ClientDisconnected: "),
            "{what}: {message}"
        );
    };
    // The iterator was bound to the lost connection: one error, then the end.
    expect_disconnected("iterator step", iterator.next().unwrap().unwrap_err());
    assert!(iterator.next().is_none());
    drop(iterator);
    expect_disconnected("load miss", client.load(Oid(99)).unwrap_err());
    expect_disconnected("iterator start", client.iterator(None, None).err().unwrap());
    expect_disconnected("undo log", client.undo_log(0, -20, None).unwrap_err());
    expect_disconnected(
        "begin",
        client
            .tpc_begin(&TransactionMetaData::default(), BeginOptions::default())
            .unwrap_err(),
    );
    // Cache hits are still served.
    assert_eq!(client.load(oid).unwrap(), (vec![2u8], serial));
}
