//! Safe transactions (`commit` on both clients, `tpc_begin` bounded by
//! `wait_timeout`), one error story, and connection failures that say why.

mod common;

use std::cell::Cell;
use std::time::{Duration, Instant};

use common::TestServer;
use zeo_client::records::{Record, Value};
use zeo_client::{
    AsyncClientStorage, ClientOptions, ClientStorage, CommitOptions, ErrorKind, ServerAddress,
};
use zeo_server::ServerSettings;
use zeo_storage::Undo;
use zeo_storage::{BeginOptions, Oid, Storage, Tid, TransactionMetaData};

fn counter(n: i64) -> Record {
    Record::persistent_mapping([(Value::str("n"), Value::Int(n))])
}

fn read_counter(storage: &ClientStorage) -> i64 {
    let (root, _) = storage.load_record(Oid::ROOT).unwrap();
    root.mapping_get("n").and_then(Value::as_i64).unwrap()
}

/// Adds one to the root's counter inside a commit body.
fn increment(txn: &zeo_client::Transaction<'_>) -> zeo_client::Result<()> {
    let (mut root, serial) = txn.load_record(Oid::ROOT)?;
    let n = root.mapping_get("n").and_then(Value::as_i64).unwrap_or(0);
    root.try_mapping_set(Value::str("n"), Value::Int(n + 1))?;
    txn.store_record(Oid::ROOT, serial, &root)
}

fn server() -> (tempfile::TempDir, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("Data.fs"), 0, ServerSettings::default());
    (dir, server)
}

#[test]
fn tpc_begin_after_a_failed_vote_gives_up_naming_the_open_transaction() {
    let (_dir, server) = server();
    let mut options = server.options();
    options.wait_timeout = Duration::from_millis(300);
    let a = ClientStorage::open(server.options()).unwrap();
    let b = ClientStorage::open(options).unwrap();
    a.commit(&CommitOptions::new(), |txn| {
        txn.store_record(Oid::ROOT, Tid::ZERO, &counter(0))
    })
    .unwrap();

    // b creates the root too: its vote conflicts, and it forgets to abort.
    let meta = CommitOptions::new().description("forgotten").metadata();
    let txn = b.tpc_begin(&meta, BeginOptions::default()).unwrap();
    b.store(txn, Oid::ROOT, Tid::ZERO, &counter(5).encode().unwrap())
        .unwrap();
    let vote = b.tpc_vote(txn).unwrap_err();
    assert!(vote.is_conflict(), "{vote}");

    let started = Instant::now();
    let err = b
        .tpc_begin(&TransactionMetaData::default(), BeginOptions::default())
        .unwrap_err();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    let message = err.to_string();
    assert!(matches!(err, zeo_storage::Error::Transaction(_)), "{err}");
    for part in [
        "wait_timeout",
        &format!("transaction {}", txn.0),
        "\"forgotten\"",
        "its vote failed: ConflictError",
        "call tpc_abort",
    ] {
        assert!(message.contains(part), "{part:?} not in {message}");
    }

    // Once aborted, the slot is free again.
    b.tpc_abort(txn);
    let txn = b
        .tpc_begin(&TransactionMetaData::default(), BeginOptions::default())
        .unwrap();
    b.tpc_abort(txn);
}

#[test]
fn commit_aborts_when_the_body_fails_and_frees_the_slot() {
    let (_dir, server) = server();
    let client = ClientStorage::open(server.options()).unwrap();
    let err = client
        .commit(&CommitOptions::new(), |txn| {
            txn.store_record(Oid::ROOT, Tid::ZERO, &counter(1))?;
            Err::<(), _>(zeo_client::Error::Config("the body gave up".into()))
        })
        .unwrap_err();
    assert!(err.to_string().contains("the body gave up"), "{err}");
    // Nothing was committed, and the next transaction starts at once
    // (wait_timeout is 10 s: a slot left taken would fail, not pass).
    assert!(client.load(Oid::ROOT).unwrap_err().is_pos_key());
    let started = Instant::now();
    let ((), tid) = client
        .commit(&CommitOptions::new().user("me").description("d"), |txn| {
            txn.store_record(Oid::ROOT, Tid::ZERO, &counter(1))
        })
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(client.load_record(Oid::ROOT).unwrap().1, tid);
    let entry = client.undo_log(0, 1, None).unwrap().remove(0);
    assert_eq!(
        (entry.user.as_slice(), entry.description.as_slice()),
        (&b"me"[..], &b"d"[..])
    );
}

#[test]
fn a_panicking_body_aborts_too() {
    let (_dir, server) = server();
    let client = ClientStorage::open(server.options()).unwrap();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        client.commit(&CommitOptions::new(), |txn| -> zeo_client::Result<()> {
            txn.store_record(Oid::ROOT, Tid::ZERO, &counter(1))?;
            panic!("body panicked")
        })
    }));
    assert!(outcome.is_err());
    client
        .commit(&CommitOptions::new(), |txn| {
            txn.store_record(Oid::ROOT, Tid::ZERO, &counter(7))
        })
        .unwrap();
    assert_eq!(read_counter(&client), 7);
}

#[test]
fn commit_runs_the_body_again_after_a_conflict_when_asked() {
    let (_dir, server) = server();
    let a = ClientStorage::open(server.options()).unwrap();
    let b = ClientStorage::open(server.options()).unwrap();
    a.commit(&CommitOptions::new(), |txn| {
        txn.store_record(Oid::ROOT, Tid::ZERO, &counter(0))
    })
    .unwrap();
    read_counter(&b);

    // While a's first run is in its body, b commits an increment: a's
    // store is then based on a stale serial.
    let runs = Cell::new(0);
    let racing_body = |txn: &zeo_client::Transaction<'_>| {
        runs.set(runs.get() + 1);
        let (mut root, serial) = txn.load_record(Oid::ROOT)?;
        if runs.get() == 1 {
            b.commit(&CommitOptions::new(), increment).unwrap();
        }
        let n = root.mapping_get("n").and_then(Value::as_i64).unwrap();
        root.try_mapping_set(Value::str("n"), Value::Int(n + 1))?;
        txn.store_record(Oid::ROOT, serial, &root)
    };

    // Without retries, the conflict is the answer.
    let err = a.commit(&CommitOptions::new(), racing_body).unwrap_err();
    assert!(err.is_conflict(), "{err}");
    assert!(matches!(
        err,
        zeo_client::Error::Storage(zeo_storage::Error::Conflict { oid: Oid::ROOT, .. })
    ));
    assert_eq!(runs.get(), 1);

    runs.set(0);
    a.commit(&CommitOptions::new().retry_conflicts(3), racing_body)
        .unwrap();
    assert_eq!(runs.get(), 2);
    // b's two increments and a's one.
    assert_eq!(read_counter(&a), 3);
}

#[test]
fn async_commit_retries_and_aborts_when_dropped() {
    let (_dir, server) = server();
    let options = server.options();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = AsyncClientStorage::connect(options.clone()).await.unwrap();
        let other = AsyncClientStorage::connect(options).await.unwrap();
        let ((), first) = client
            .commit(&CommitOptions::new(), |txn| async move {
                txn.store_record(Oid::ROOT, Tid::ZERO, &counter(0))
            })
            .await
            .unwrap();

        // A commit future dropped inside its body leaves no transaction open.
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let mut started_tx = Some(started_tx);
        let plain = CommitOptions::new();
        let pending = client.commit(&plain, |txn| {
            let started = started_tx.take();
            async move {
                txn.store_record(Oid::ROOT, first, &counter(100))?;
                if let Some(s) = started {
                    let _ = s.send(());
                }
                std::future::pending::<zeo_client::Result<()>>().await
            }
        });
        tokio::select! {
            _ = pending => unreachable!("the body never finishes"),
            _ = started_rx => {}
        }

        // The retry runs the body again with fresh data.
        let runs = std::sync::atomic::AtomicU32::new(0);
        let ((), _) = client
            .commit(&CommitOptions::new().retry_conflicts(2), |txn| {
                let run = runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                let other = other.clone();
                async move {
                    let (mut root, serial) = txn.load_record(Oid::ROOT).await?;
                    if run == 1 {
                        other
                            .commit(&CommitOptions::new(), |t| async move {
                                let (mut r, s) = t.load_record(Oid::ROOT).await?;
                                r.try_mapping_set("n".into(), 10.into())?;
                                t.store_record(Oid::ROOT, s, &r)
                            })
                            .await
                            .unwrap();
                    }
                    let n = root.mapping_get("n").and_then(Value::as_i64).unwrap();
                    root.try_mapping_set("n".into(), (n + 1).into())?;
                    txn.store_record(Oid::ROOT, serial, &root)
                }
            })
            .await
            .unwrap();
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 2);
        let (root, _) = client.load_record(Oid::ROOT).await.unwrap();
        assert_eq!(root.mapping_get("n").and_then(Value::as_i64), Some(11));
        client.close().unwrap();
        other.close().unwrap();
    });
}

/// A local port nothing listens on.
fn refusing_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn fail_fast_gives_up_at_once_when_every_address_refuses() {
    let (p1, p2) = (refusing_port(), refusing_port());
    let mut options = ClientOptions::new(vec![
        ServerAddress::localhost(p1),
        ServerAddress::localhost(p2),
    ]);
    options.wait_timeout = Duration::from_secs(30);
    options.fail_fast = true;
    let started = Instant::now();
    let err = ClientStorage::open(options).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(err.is_disconnected(), "{err}");
    let message = err.to_string();
    for port in [p1, p2] {
        assert!(
            message.contains(&format!("127.0.0.1:{port}: Connection refused")),
            "{message}"
        );
    }
    assert!(message.contains("fail_fast"), "{message}");
}

#[test]
fn without_fail_fast_the_timeout_names_the_last_connect_error() {
    let port = refusing_port();
    let mut options = ClientOptions::new(vec![ServerAddress::localhost(port)]);
    options.wait_timeout = Duration::from_millis(300);
    let err = ClientStorage::open(options).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("timed out after 300ms"), "{message}");
    assert!(
        message.contains(&format!(
            "last errors: 127.0.0.1:{port}: Connection refused"
        )),
        "{message}"
    );
}

#[test]
fn errors_answer_the_same_questions_on_both_clients() {
    let (_dir, server) = server();
    let client = ClientStorage::open(server.options()).unwrap();
    let blocking = client.load(Oid(42)).unwrap_err();
    let asynchronous = client.block_on_for_tests_load(Oid(42));
    for e in [&blocking as &dyn ErrorKind, &asynchronous] {
        assert!(e.is_pos_key() && !e.is_conflict() && !e.is_disconnected() && !e.is_read_only());
    }
    server.stop();
    let mut options = ClientOptions::new(vec![ServerAddress::localhost(refusing_port())]);
    options.wait_timeout = Duration::from_millis(100);
    options.wait = false;
    let unreachable = ClientStorage::open(options).unwrap();
    let blocking = unreachable.load(Oid(1)).unwrap_err();
    assert!(ErrorKind::is_disconnected(&blocking), "{blocking}");
}

/// The async client's error for a load, from blocking code.
trait LoadAsync {
    fn block_on_for_tests_load(&self, oid: Oid) -> zeo_client::Error;
}

impl LoadAsync for ClientStorage {
    fn block_on_for_tests_load(&self, oid: Oid) -> zeo_client::Error {
        let client = self.as_async().clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move { client.load(oid).await.unwrap_err() })
    }
}

#[test]
fn the_persistent_cache_path_follows_the_storage_set_after_it() {
    let (dir, server) = server();
    let mut options = server.options();
    options.storage = "not-this-one".into();
    options.persistent_cache("app", Some(dir.path().to_owned()));
    options.storage = "1".into();
    let expected = dir.path().join("app-1.zec");
    assert_eq!(options.effective_cache_path().unwrap(), expected);
    let client = ClientStorage::open(options).unwrap();
    client
        .commit(&CommitOptions::new(), |txn| {
            txn.store_record(Oid::ROOT, Tid::ZERO, &counter(3))
        })
        .unwrap();
    client.close().unwrap();
    assert!(expected.is_file());
    assert!(!dir.path().join("app-not-this-one.zec").exists());
}
