//! The client logging in to an in-process zeo-server that requires ZEO 3/4
//! digest authentication, then working over MAC'd frames.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{commit_with, TestServer};
use zeo_auth::{PasswordDatabase, ServerAuthenticator};
use zeo_client::{ClientOptions, ClientStorage, Notice};
use zeo_server::ServerSettings;
use zeo_storage::{Oid, Storage, Tid, TransactionMetaData};

fn auth_settings(msgpack: bool) -> ServerSettings {
    let mut db = PasswordDatabase::new(Some("zeo")).unwrap();
    db.add_user("alice", "s3cret").unwrap();
    db.add_user("bob", "hunter2").unwrap();
    ServerSettings {
        msgpack,
        authentication: Some(Arc::new(ServerAuthenticator::new(db).unwrap())),
        ..ServerSettings::default()
    }
}

fn with_credentials(mut options: ClientOptions, user: &str, password: &str) -> ClientOptions {
    options.username = Some(user.into());
    options.password = Some(password.into());
    options
}

fn commit(storage: &ClientStorage, writes: &[(Oid, Tid, &[u8])]) -> zeo_storage::Result<Tid> {
    commit_with(storage, &TransactionMetaData::default(), writes)
}

/// Waits (10 s at most) for the first notice that `pick` accepts.
fn wait_notice<T>(
    rx: &mut tokio::sync::broadcast::Receiver<Notice>,
    pick: impl FnMut(Notice) -> Option<T>,
) -> T {
    common::wait_notice(rx, Duration::from_secs(10), pick).expect("no such notice in time")
}

/// Starts a client that does not wait for its connection, and returns the
/// reason of its first authentication failure.
fn auth_failure(options: ClientOptions) -> (String, String) {
    let mut options = options;
    options.wait = false;
    let client = ClientStorage::open(options).unwrap();
    let mut notices = client.subscribe();
    let failure = wait_notice(&mut notices, |n| match n {
        Notice::AuthenticationFailed { address, reason } => Some((address, reason)),
        Notice::Connected { .. } => panic!("connected without the right credentials"),
        _ => None,
    });
    assert!(client.last_transaction() == Tid::ZERO);
    drop(client);
    failure
}

#[test]
fn the_right_password_commits_loads_and_hears_invalidations_in_both_encodings() {
    for msgpack in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let server = TestServer::start(&dir.path().join("Data.fs"), 0, auth_settings(msgpack));
        let mut options = with_credentials(server.options(), "alice", "s3cret");
        options.realm = Some("zeo".into());
        // Heartbeats are sealed too, and may go out while the test runs
        // (`tests/deterministic.rs` checks the chain across them).
        options.heartbeat_interval = Duration::from_millis(20);
        let a = ClientStorage::open(options).unwrap();
        let mut a_notices = a.subscribe();
        let b = ClientStorage::open(with_credentials(server.options(), "bob", "hunter2")).unwrap();
        let mut notices = b.subscribe();

        let oid = a.new_oid().unwrap();
        let t1 = commit(&a, &[(oid, Tid::ZERO, b"one")]).unwrap();
        assert_eq!(a.load(oid).unwrap(), (b"one".to_vec(), t1));
        let tid = wait_notice(&mut notices, |n| match n {
            Notice::Invalidated { tid, .. } => Some(tid),
            _ => None,
        });
        assert_eq!(tid, t1);
        assert_eq!(b.load(oid).unwrap(), (b"one".to_vec(), t1));
        let t2 = commit(&b, &[(oid, t1, b"two")]).unwrap();
        assert_eq!(b.load_serial(oid, t1).unwrap(), b"one");
        common::wait_invalidated(&mut a_notices, t2);
        assert_eq!(a.load(oid).unwrap(), (b"two".to_vec(), t2));
        assert_eq!(a.stats().connections, 1, "one connection throughout");
        drop(a);
        drop(b);
        server.stop();
    }
}

#[test]
fn a_wrong_password_is_an_auth_error_and_never_connects() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("Data.fs"), 0, auth_settings(false));
    let (address, reason) = auth_failure(with_credentials(server.options(), "alice", "wrong"));
    assert_eq!(address, format!("127.0.0.1:{}", server.port));
    assert_eq!(reason, "Authentication failed");

    let (_, reason) = auth_failure(with_credentials(server.options(), "mallory", "x"));
    assert!(reason.contains("No such user: mallory"), "{reason}");

    let mut options = with_credentials(server.options(), "alice", "s3cret");
    options.realm = Some("elsewhere".into());
    let (_, reason) = auth_failure(options);
    assert!(reason.contains("realm"), "{reason}");

    // Waiting for a connection ends in ClientDisconnected, not a hang.
    let mut options = with_credentials(server.options(), "alice", "wrong");
    options.wait_timeout = Duration::from_millis(500);
    let err = ClientStorage::open(options).unwrap_err();
    assert!(err.is_disconnected(), "{err}");
    server.stop();
}

#[test]
fn without_credentials_register_is_refused_with_auth_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("Data.fs"), 0, auth_settings(false));
    let (_, reason) = auth_failure(server.options());
    assert_eq!(reason, "Client was never authenticated with server!");
    let mut half = server.options();
    half.username = Some("alice".into());
    let (_, reason) = auth_failure(half);
    assert!(reason.contains("password"), "{reason}");
    server.stop();
}

#[test]
fn credentials_are_not_needed_by_a_server_without_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("Data.fs"), 0, ServerSettings::default());
    let client =
        ClientStorage::open(with_credentials(server.options(), "alice", "s3cret")).unwrap();
    let oid = client.new_oid().unwrap();
    let tid = commit(&client, &[(oid, Tid::ZERO, b"open")]).unwrap();
    assert_eq!(client.load(oid).unwrap(), (b"open".to_vec(), tid));
    drop(client);
    server.stop();
}

#[test]
fn options_take_credentials_from_a_zeoclient_section() {
    let config = zeo_config::ClientConfig::from_str(
        "<zeoclient>\n  server 127.0.0.1:8100\n  username alice\n  password s3cret\n  realm zeo\n</zeoclient>\n",
        "test",
    )
    .unwrap();
    assert!(config.unsupported.is_empty(), "{:?}", config.unsupported);
    let options = ClientOptions::try_from(&config).unwrap();
    assert_eq!(options.username.as_deref(), Some("alice"));
    assert_eq!(options.password.as_deref(), Some("s3cret"));
    assert_eq!(options.realm.as_deref(), Some("zeo"));
    assert!(!format!("{options:?}").contains("s3cret"));
}
