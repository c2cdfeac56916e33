//! Resource limits against peers that misbehave, on the in-process server:
//! back-pressure on clients that do not read their replies, the per-client
//! and server-wide output caps, connection caps, `max-transaction-size`,
//! `login-timeout`, `ruok` under authentication, and the listener
//! addresses an operator can get wrong.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use zeo_protocol::{ClientRequest, Message};
use zeo_server::{BoundAddress, ListenAddress, ServerBuilder, ServerSettings};
use zeo_storage::{MappingStorage, Oid, Storage, Tid, TransactionMetaData};

const MIB: usize = 1024 * 1024;
/// The object every load asks for.
const BIG: Oid = Oid(1);

/// A storage holding a 1 MiB object at [`BIG`].
fn storage_with_a_big_object() -> Arc<dyn Storage> {
    let storage = MappingStorage::new("big");
    let h = storage
        .tpc_begin(&TransactionMetaData::default(), Default::default())
        .unwrap();
    storage.store(h, BIG, Tid::ZERO, &vec![7u8; MIB]).unwrap();
    storage.tpc_vote(h).unwrap();
    storage.tpc_finish(h, &mut |_| {}).unwrap();
    Arc::new(storage)
}

/// Sends `n` loads of [`BIG`] without reading anything.
async fn flood_loads(client: &mut Client, n: usize) {
    let load = ClientRequest::load_before(BIG, Tid::MAX);
    for _ in 0..n {
        client.send(&load).await;
    }
}

/// Reads `n` load replies, each the whole object.
async fn read_loads(client: &mut Client, n: usize) {
    let msgid = ClientRequest::load_before(BIG, Tid::MAX).msgid;
    for i in 0..n {
        let found = client.reply_to(&msgid).await.unwrap();
        let found = zeo_protocol::client::replies::load_before(&found)
            .unwrap()
            .unwrap_or_else(|| panic!("load {i} found nothing"));
        assert_eq!(found.data.len(), MIB);
    }
}

async fn ping(client: &mut Client) {
    client.call("ping", vec![]).await.unwrap();
}

#[tokio::test]
async fn a_client_that_never_reads_its_replies_is_paused_at_reply_backlog_pause() {
    let settings = ServerSettings {
        reply_backlog_pause: 2 * MIB,
        ..ServerSettings::default()
    };
    let server = TestServer::with_storage(settings, storage_with_a_big_object()).await;
    let mut greedy = server.client().await;
    // 64 MiB of replies asked for, none read yet.
    flood_loads(&mut greedy, 64).await;
    // Another client is served meanwhile.
    let mut other = server.client().await;
    ping(&mut other).await;
    // Every reply arrives once the client reads ...
    read_loads(&mut greedy, 64).await;
    ping(&mut greedy).await;
    // ... and the server never held more than the threshold plus the
    // reply that crossed it (and a little for the small replies).
    let peak = server.handle.peak_queued_output();
    assert!(peak <= 3 * MIB + 64 * 1024, "peak queued output {peak}");
    assert_eq!(server.handle.queued_output(), 0);
    server.stop().await;
}

#[tokio::test]
async fn max_total_backlog_bounds_the_output_of_all_connections() {
    let settings = ServerSettings {
        reply_backlog_pause: 64 * MIB,
        max_total_backlog: 2 * MIB,
        ..ServerSettings::default()
    };
    let server = TestServer::with_storage(settings, storage_with_a_big_object()).await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    flood_loads(&mut a, 24).await;
    flood_loads(&mut b, 24).await;
    read_loads(&mut a, 24).await;
    read_loads(&mut b, 24).await;
    // Each connection may add one reply past the cap before it sees it.
    let peak = server.handle.peak_queued_output();
    assert!(peak <= 4 * MIB + 64 * 1024, "peak queued output {peak}");
    let mut c = server.client().await;
    ping(&mut c).await;
    server.stop().await;
}

#[tokio::test]
async fn clients_that_never_read_cannot_stall_the_others_at_max_total_backlog() {
    let settings = ServerSettings {
        reply_backlog_pause: 256 * MIB,
        max_outgoing_backlog: 256 * MIB,
        max_total_backlog: 2 * MIB,
        ..ServerSettings::default()
    };
    let server = TestServer::with_storage(settings, storage_with_a_big_object()).await;
    let mut greedy = server.client().await;
    let mut other = server.client().await;
    flood_loads(&mut greedy, 64).await;
    // Wait (bounded in steps and time) until the greedy client's unread
    // replies fill the server-wide budget.
    let deadline = std::time::Instant::now() + WAIT;
    for _ in 0..10_000_000 {
        if server.handle.queued_output() > 2 * MIB || std::time::Instant::now() > deadline {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(server.handle.queued_output() > 2 * MIB);
    // A client with nothing queued is still served, one request at a time.
    for _ in 0..3 {
        ping(&mut other).await;
        other.load(BIG).await.unwrap().unwrap();
    }
    // The greedy one stopped well short of its 64 MiB.
    let peak = server.handle.peak_queued_output();
    assert!(peak <= 4 * MIB + 64 * 1024, "peak queued output {peak}");
    drop(greedy);
    server.stop().await;
}

#[tokio::test]
async fn a_client_past_max_client_backlog_is_disconnected_and_others_are_served() {
    // The pause threshold above the cap: only the cap can stop this client.
    let settings = ServerSettings {
        reply_backlog_pause: 256 * MIB,
        max_outgoing_backlog: 2 * MIB,
        ..ServerSettings::default()
    };
    let server = TestServer::with_storage(settings, storage_with_a_big_object()).await;
    let mut greedy = server.client().await;
    let mut other = server.client().await;
    // Far more than the socket buffers hold.
    flood_loads(&mut greedy, 64).await;
    assert!(greedy.closed().await, "the greedy client stays connected");
    let replies = greedy.log.iter().filter(|m| m.is_reply()).count();
    assert!(replies < 64, "all {replies} replies were delivered");
    ping(&mut other).await;
    server.stop().await;
}

#[tokio::test]
async fn an_object_larger_than_max_client_backlog_can_still_be_loaded() {
    let settings = ServerSettings {
        reply_backlog_pause: MIB / 4,
        max_outgoing_backlog: MIB / 2,
        ..ServerSettings::default()
    };
    let server = TestServer::with_storage(settings, storage_with_a_big_object()).await;
    let mut reader = server.client().await;
    let mut writer = server.client().await;
    flood_loads(&mut reader, 3).await;
    // Invalidations queued behind the big replies do not count them.
    let oid = writer.new_oids().await[0];
    let tid = writer
        .commit(1, &[(oid, Tid::ZERO, b"small".to_vec())])
        .await
        .unwrap();
    read_loads(&mut reader, 3).await;
    let (got, oids) = invalidation(&reader.next_event("invalidateTransaction").await);
    assert_eq!((got, oids), (tid, vec![oid]));
    ping(&mut reader).await;
    server.stop().await;
}

#[tokio::test]
async fn commits_are_not_held_up_by_a_client_whose_reads_are_paused() {
    let settings = ServerSettings {
        reply_backlog_pause: MIB,
        ..ServerSettings::default()
    };
    let server = TestServer::with_storage(settings, storage_with_a_big_object()).await;
    let mut slow = server.client().await;
    let mut writer = server.client().await;
    flood_loads(&mut slow, 32).await;
    let oid = writer.new_oids().await[0];
    let mut serial = Tid::ZERO;
    let mut tids = Vec::new();
    for txn in 1..=5 {
        serial = writer
            .commit(txn, &[(oid, serial, vec![txn as u8; 10])])
            .await
            .unwrap();
        tids.push(serial);
    }
    // The paused client gets its replies, then every invalidation.
    read_loads(&mut slow, 32).await;
    for tid in tids {
        let (got, oids) = invalidation(&slow.next_event("invalidateTransaction").await);
        assert_eq!((got, oids), (tid, vec![oid]));
    }
    server.stop().await;
}

/// Connects and reads until the server closes; returns what arrived.
async fn refused(addr: std::net::SocketAddr) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut got))
        .await
        .expect("the connection was not closed")
        .unwrap_or(0);
    got
}

#[tokio::test]
async fn connections_over_max_connections_are_closed_at_once() {
    let settings = ServerSettings {
        max_connections: 2,
        ..ServerSettings::default()
    };
    let server = TestServer::start(settings).await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    assert_eq!(server.handle.connections(), 2);
    assert_eq!(refused(server.addr).await, b"", "no greeting past the cap");
    ping(&mut a).await;
    ping(&mut b).await;
    assert_eq!(server.handle.connections(), 2);
    server.stop().await;
}

#[tokio::test]
async fn connections_per_address_are_capped() {
    let settings = ServerSettings {
        max_connections: 0,
        max_connections_per_address: 1,
        ..ServerSettings::default()
    };
    let server = TestServer::start(settings).await;
    let mut a = server.client().await;
    assert_eq!(refused(server.addr).await, b"");
    ping(&mut a).await;
    server.stop().await;
}

#[tokio::test]
async fn a_transaction_over_max_transaction_size_fails_and_the_connection_stays_usable() {
    let settings = ServerSettings {
        max_transaction_size: Some(1000),
        ..ServerSettings::default()
    };
    let server = TestServer::start(settings).await;
    let mut c = server.client().await;
    let oids = c.new_oids().await;
    c.begin(1).await;
    c.store(1, oids[0], Tid::ZERO, &[1; 600]).await;
    // Stores are one-way calls: the one going past the cap is dropped, and
    // the vote reports it.
    c.store(1, oids[1], Tid::ZERO, &[2; 600]).await;
    c.store(1, oids[2], Tid::ZERO, &[3; 10]).await;
    let err = c.vote(1).await.unwrap_err();
    assert_eq!(err.class, "ZODB.POSException.StorageError");
    let text = format!("{:?}", err.fields);
    assert!(text.contains("max-transaction-size"), "{text}");
    c.abort(1).await.unwrap();
    for oid in &oids[..3] {
        assert!(c.load(*oid).await.is_err(), "{oid} was stored");
    }
    // The same connection commits a transaction within the cap.
    let tid = c
        .commit(2, &[(oids[0], Tid::ZERO, vec![4; 500])])
        .await
        .unwrap();
    assert_eq!(c.load(oids[0]).await.unwrap().unwrap().start, tid);
    server.stop().await;
}

#[tokio::test]
async fn a_transaction_within_max_transaction_size_commits() {
    let settings = ServerSettings {
        max_transaction_size: Some(10_000),
        ..ServerSettings::default()
    };
    let server = TestServer::start(settings).await;
    let mut c = server.client().await;
    let oids = c.new_oids().await;
    let stores: Vec<_> = oids[..4]
        .iter()
        .map(|o| (*o, Tid::ZERO, vec![9; 2000]))
        .collect();
    c.commit(1, &stores).await.unwrap();
    server.stop().await;
}

fn login_settings() -> ServerSettings {
    ServerSettings {
        login_timeout: Some(Duration::from_secs(5)),
        ..ServerSettings::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_never_answers_the_greeting_is_closed_at_login_timeout() {
    let server = TestServer::start(login_settings()).await;
    let started = tokio::time::Instant::now();
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let mut greeting = [0u8; 6];
    s.read_exact(&mut greeting).await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut rest))
        .await
        .expect("still connected after login-timeout")
        .unwrap();
    assert!(rest.is_empty());
    assert!(started.elapsed() >= Duration::from_secs(5));
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_never_registers_is_closed_at_login_timeout() {
    let server = TestServer::start(login_settings()).await;
    let started = tokio::time::Instant::now();
    let mut c = Client::connect(server.addr, None).await;
    assert!(c.closed().await, "still connected after login-timeout");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(5), "{waited:?}");
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_registered_client_outlives_login_timeout() {
    let server = TestServer::start(login_settings()).await;
    let mut c = server.client().await;
    tokio::time::advance(Duration::from_secs(30)).await;
    ping(&mut c).await;
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn login_timeout_can_be_disabled() {
    let settings = ServerSettings {
        login_timeout: None,
        ..ServerSettings::default()
    };
    let server = TestServer::start(settings).await;
    let mut c = Client::connect(server.addr, None).await;
    tokio::time::advance(Duration::from_secs(3600)).await;
    c.register("1", false).await.unwrap();
    server.stop().await;
}

fn authenticator() -> Arc<zeo_auth::ServerAuthenticator> {
    let mut db = zeo_auth::PasswordDatabase::new(Some("zeo")).unwrap();
    db.add_user("alice", "s3cret").unwrap();
    Arc::new(zeo_auth::ServerAuthenticator::new(db).unwrap())
}

#[tokio::test(start_paused = true)]
async fn with_authentication_a_peer_that_never_logs_in_is_closed_at_login_timeout() {
    let settings = ServerSettings {
        authentication: Some(authenticator()),
        ..login_settings()
    };
    let server = TestServer::start(settings).await;
    let mut c = Client::connect(server.addr, None).await;
    // Registering without logging in is refused, and does not count.
    let err = c.register("1", false).await.unwrap_err();
    assert!(err.class.ends_with("AuthError"), "{err:?}");
    assert!(c.closed().await, "still connected after login-timeout");
    server.stop().await;
}

/// Sends `ruok` instead of a handshake and returns the answer.
async fn ruok(addr: std::net::SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut greeting = [0u8; 6];
    s.read_exact(&mut greeting).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut s, &zeo_protocol::encode_frame(b"ruok").unwrap())
        .await
        .unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut reply))
        .await
        .unwrap()
        .unwrap();
    let (json, rest) = zeo_protocol::decode_frame(&reply).unwrap();
    assert!(rest.is_empty());
    String::from_utf8(json.to_vec()).unwrap()
}

#[tokio::test]
async fn with_authentication_ruok_answers_liveness_only() {
    let settings = ServerSettings {
        authentication: Some(authenticator()),
        ..ServerSettings::default()
    };
    let server = TestServer::start(settings).await;
    let answer = ruok(server.addr).await;
    assert_eq!(answer, "{}");
    let parsed: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert!(parsed.as_object().unwrap().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn public_status_lets_ruok_answer_the_full_status_under_authentication() {
    let settings = ServerSettings {
        authentication: Some(authenticator()),
        public_status: true,
        ..ServerSettings::default()
    };
    let server = TestServer::start(settings).await;
    let answer = ruok(server.addr).await;
    let parsed: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert!(parsed["1"]["last-transaction"].is_string(), "{answer}");
    server.stop().await;
}

#[tokio::test]
async fn without_authentication_ruok_answers_the_full_status() {
    let server = TestServer::start(ServerSettings::default()).await;
    let answer = ruok(server.addr).await;
    let parsed: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert!(parsed["1"]["connections"].is_number(), "{answer}");
    server.stop().await;
}

#[test]
fn a_bare_monitor_port_binds_loopback_only() {
    let settings = ServerSettings {
        monitor_address: Some("0".parse().unwrap()),
        ..ServerSettings::default()
    };
    let server = ServerBuilder::new(settings)
        .storage("1", Arc::new(MappingStorage::new("1")))
        .build()
        .unwrap();
    let bound = server.bind_monitor().unwrap();
    assert!(!bound.is_empty());
    for b in bound {
        let BoundAddress::Tcp(addr) = b else {
            panic!("{b}")
        };
        assert!(addr.ip().is_loopback(), "{addr}");
    }
}

fn server() -> zeo_server::Server {
    ServerBuilder::new(ServerSettings::default())
        .storage("1", Arc::new(MappingStorage::new("1")))
        .build()
        .unwrap()
}

#[test]
fn a_regular_file_at_a_unix_address_survives_and_binding_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    std::fs::write(&path, b"precious").unwrap();
    let err = server()
        .bind(&ListenAddress::Unix(path.clone()))
        .unwrap_err();
    assert!(matches!(err, zeo_server::Error::NotASocket(_)), "{err}");
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");

    // The monitor's address is checked the same way.
    let settings = ServerSettings {
        monitor_address: Some(ListenAddress::Unix(path.clone())),
        ..ServerSettings::default()
    };
    let err = ServerBuilder::new(settings)
        .storage("1", Arc::new(MappingStorage::new("1")))
        .build()
        .unwrap()
        .bind_monitor()
        .unwrap_err();
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
}

#[test]
fn a_directory_or_symlink_at_a_unix_address_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let err = server()
        .bind(&ListenAddress::Unix(sub.clone()))
        .unwrap_err();
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert!(sub.is_dir());

    // A symlink to a stale socket is not itself a socket: left alone.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let link = dir.path().join("link.sock");
    std::os::unix::fs::symlink(&stale, &link).unwrap();
    let err = server()
        .bind(&ListenAddress::Unix(link.clone()))
        .unwrap_err();
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert!(std::fs::symlink_metadata(&link).is_ok());
}

#[test]
fn a_stale_socket_is_replaced_and_a_live_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zeo.sock");
    // A socket file nobody listens on any more.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let first = server();
    first.bind(&ListenAddress::Unix(path.clone())).unwrap();
    // Now it is live: a second server must not take it over.
    let err = server()
        .bind(&ListenAddress::Unix(path.clone()))
        .unwrap_err();
    assert!(matches!(err, zeo_server::Error::AddressInUse(_)), "{err}");
    drop(first);
}

#[tokio::test]
async fn output_queued_for_a_departed_client_is_given_back() {
    let server =
        TestServer::with_storage(ServerSettings::default(), storage_with_a_big_object()).await;
    let handle = server.handle.clone();
    let mut c = server.client().await;
    flood_loads(&mut c, 16).await;
    // Make sure the loads were read before the client goes away.
    let msg = Message::call(99, "lastTransaction", vec![]);
    c.send(&msg).await;
    c.reply_to(&msg.msgid).await.unwrap();
    assert!(handle.peak_queued_output() >= MIB);
    drop(c);
    server.stop().await;
    assert_eq!(handle.queued_output(), 0);
    assert_eq!(handle.connections(), 0);
}
