//! The ZEO 3/4 monitor server: connect, read the report, check counters.

mod common;

use std::sync::Arc;

use common::*;
use tokio::io::AsyncReadExt;
use zeo_server::monitor::MonitorReport;
use zeo_server::{BoundAddress, ListenAddress, ServerBuilder, ServerSettings};
use zeo_storage::{MappingStorage, Oid, Tid};

async fn read_report(addr: &BoundAddress) -> String {
    let mut text = String::new();
    let read = async {
        match addr {
            BoundAddress::Tcp(a) => {
                let mut s = tokio::net::TcpStream::connect(a).await.unwrap();
                s.read_to_string(&mut text).await.unwrap();
            }
            BoundAddress::Unix(p) => {
                let mut s = tokio::net::UnixStream::connect(p).await.unwrap();
                s.read_to_string(&mut text).await.unwrap();
            }
        }
    };
    // The server closes after writing: read_to_string ends.
    tokio::time::timeout(WAIT, read).await.unwrap();
    text
}

#[tokio::test]
async fn reports_counters_per_storage_sorted_by_name() {
    let settings = ServerSettings {
        monitor_address: Some(ListenAddress::localhost(0)),
        ..ServerSettings::default()
    };
    let server = ServerBuilder::new(settings)
        .storage("zz", Arc::new(MappingStorage::new("zz")))
        .storage("1", Arc::new(MappingStorage::new("1")))
        .build()
        .unwrap();
    let BoundAddress::Tcp(addr) = server.bind(&ListenAddress::localhost(0)).unwrap()[0] else {
        panic!("tcp expected");
    };
    let monitor = server.bind_monitor().unwrap();
    assert_eq!(monitor.len(), 1);
    assert!(server.bind_monitor().unwrap().is_empty(), "bound once");
    let handle = server.handle();
    let task = tokio::spawn(server.serve(std::future::pending()));

    let before = MonitorReport::parse(&read_report(&monitor[0]).await).unwrap();
    assert_eq!(
        before.storages.keys().collect::<Vec<_>>(),
        ["1", "zz"],
        "{before:?}"
    );
    assert_eq!(before.storages["1"].commits, 0);
    assert_eq!(before.storages["1"].clients, 0);

    let mut c = Client::connect(addr, None).await;
    c.register("1", false).await.unwrap();
    let tid = c
        .commit(1, &[(Oid(0), Tid::ZERO, b"root".to_vec())])
        .await
        .unwrap();
    assert!(c.load(Oid(0)).await.unwrap().is_some());
    c.begin(2).await;
    c.abort(2).await.unwrap();

    // While a transaction holds the commit lock the report says for how long.
    c.begin(3).await;
    c.store(3, Oid(0), tid, b"root 2").await;
    c.vote(3).await.unwrap();
    let text = read_report(&monitor[0]).await;
    assert!(text.starts_with("ZEO monitor server version "), "{text}");
    assert!(text.contains("\nStorage: 1\n"), "{text}");
    let during = MonitorReport::parse(&text).unwrap();
    let one = &during.storages["1"];
    assert_eq!(one.clients, 1, "{text}");
    assert_eq!(one.commits, 1, "{text}");
    assert_eq!(one.aborts, 1, "{text}");
    assert_eq!(one.stores, 2, "{text}");
    assert!(one.loads >= 1, "{text}");
    assert_eq!(one.active_txns, 1, "{text}");
    assert!(one.lock_held_for.is_some(), "{text}");
    assert_eq!(during.storages["zz"].clients, 0);
    assert_eq!(during.storages["zz"].commits, 0);

    c.finish(3).await.unwrap();
    let after = MonitorReport::parse(&read_report(&monitor[0]).await).unwrap();
    let one = &after.storages["1"];
    assert_eq!((one.commits, one.active_txns), (2, 0));
    assert_eq!(one.lock_held_for, None);
    assert_eq!(one.start, before.storages["1"].start);

    handle.shutdown();
    tokio::time::timeout(WAIT, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // The monitor stops with the server.
    let BoundAddress::Tcp(m) = monitor[0] else {
        unreachable!()
    };
    assert!(tokio::net::TcpStream::connect(m).await.is_err());
}

#[tokio::test]
async fn listens_on_a_unix_socket_and_serve_binds_it_when_asked_to() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("monitor.sock");
    let settings = ServerSettings {
        monitor_address: Some(ListenAddress::Unix(path.clone())),
        ..ServerSettings::default()
    };
    let server = ServerBuilder::new(settings)
        .storage("1", Arc::new(MappingStorage::new("1")))
        .build()
        .unwrap();
    server.bind(&ListenAddress::localhost(0)).unwrap();
    let handle = server.handle();
    // No bind_monitor: serve binds it.
    let task = tokio::spawn(server.serve(std::future::pending()));
    let deadline = std::time::Instant::now() + WAIT;
    while !path.exists() {
        assert!(std::time::Instant::now() < deadline, "monitor never bound");
        // allow-sleep: not yet on a paused clock or an awaited event
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let report =
        MonitorReport::parse(&read_report(&BoundAddress::Unix(path.clone())).await).unwrap();
    assert_eq!(report.storages.len(), 1);
    handle.shutdown();
    tokio::time::timeout(WAIT, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(!path.exists(), "socket file removed at shutdown");
}
