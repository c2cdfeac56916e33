//! Several servers over one database, when reading the other writers'
//! commits fails: a server that cannot read the foreign commits below one
//! of its own cannot tell its clients what they missed. It restarts its
//! invalidation queue at its own commit and disconnects every client;
//! clients reconnect, find the queue too new for their caches, verify,
//! and read what the database holds. Shown with raw connections, then
//! with the client library, which reconnects and drops its cache by itself.
//!
//! The database is `zeo_storage::testing::SharedDatabase`; the server's
//! handle on it is wrapped so that `commits_after` fails on demand.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{bytes, invalidation, Client, TestServer, WAIT};
use zeo_client::{AsyncClientStorage, ClientOptions, Notice, ServerAddress};
use zeo_pickle::Value;
use zeo_protocol::client::replies;
use zeo_protocol::ClientRequest;
use zeo_protocol::TxnId;
use zeo_server::ServerSettings;
use zeo_storage::testing::{commit, SharedDatabase, SharedHandle};
use zeo_storage::{Error, ForeignCommit, Oid, Result, SharedCommits, Storage, Tid};

/// A handle on the shared database whose reads of other writers' commits
/// fail while `failing` is set, as a dropped database connection does.
struct Flaky {
    inner: SharedHandle,
    failing: AtomicBool,
    /// How many reads failed: proves the failure was actually hit.
    failed: AtomicUsize,
}

impl Storage for Flaky {
    crate::forward_storage!(|_: &Self, _: &str| ());
    zeo_storage::provide_capabilities!(shared_commits);
}

impl SharedCommits for Flaky {
    fn commits_after(&self, after: Tid, limit: usize) -> Result<Vec<ForeignCommit>> {
        if self.failing.load(Ordering::Acquire) {
            self.failed.fetch_add(1, Ordering::AcqRel);
            return Err(Error::Closed);
        }
        self.inner.commits_after(after, limit)
    }
    fn wait_for_commits(&self, timeout: std::time::Duration) -> Result<bool> {
        self.inner.wait_for_commits(timeout)
    }
}

/// The server's log lines, kept in memory.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// Collects every log line of this test binary (one test: the server
    /// logs from its own tasks and blocking threads, so a thread-local
    /// subscriber would miss lines).
    fn install() -> Logs {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        logs
    }

    fn lines_with(&self, text: &str) -> usize {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|l| l.contains(text))
            .count()
    }
}

fn invalidations_received(client: &Client) -> Vec<(Tid, Vec<Oid>)> {
    client
        .events()
        .into_iter()
        .filter(|m| m.method == "invalidateTransaction")
        .map(invalidation)
        .collect()
}

/// Commits `data` for `oid` through `client`, whose connection the server
/// closes during the finish: no reply is awaited.
async fn commit_cut_off(client: &mut Client, txn: i64, oid: Oid, serial: Tid, data: &[u8]) {
    client.begin(txn).await;
    client.store(txn, oid, serial, data).await;
    client.vote(txn).await.unwrap();
    let id = client.msgid();
    client
        .send(&ClientRequest::tpc_finish(id, TxnId(txn)))
        .await;
    assert!(client.closed().await, "the committer is disconnected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_foreign_commits_below_an_own_commit_disconnect_every_client() {
    let logs = Logs::install();
    let db = SharedDatabase::new("shared");
    let flaky = Arc::new(Flaky {
        inner: db.handle(),
        failing: AtomicBool::new(false),
        failed: AtomicUsize::new(0),
    });
    let server = TestServer::with_storage(ServerSettings::default(), flaky.clone()).await;
    // Another writer of the same database (another server, a RelStorage
    // client).
    let elsewhere = db.handle();
    let mut committer = server.client().await;
    let mut bystander = server.client().await;
    let oids = committer.new_oids().await;
    let (mine, theirs) = (oids[0], oids[1]);

    // A foreign commit the server can read: announced as usual, so the
    // watcher works and the bystander caches `theirs` at that revision.
    let before = commit(&elsewhere, &[(theirs, Tid::ZERO, b"theirs 1".to_vec())]).unwrap();
    assert_eq!(
        invalidation(&bystander.next_event("invalidateTransaction").await),
        (before, vec![theirs])
    );
    let cached = bystander.load(theirs).await.unwrap().unwrap();
    assert_eq!(
        (cached.data.as_slice(), cached.start),
        (&b"theirs 1"[..], before)
    );

    // The database connection that reads other writers' commits drops; a
    // foreign commit lands that no client of this server can be told of.
    flaky.failing.store(true, Ordering::Release);
    let hidden = commit(&elsewhere, &[(theirs, before, b"theirs 2".to_vec())]).unwrap();

    // An own commit above it: the server cannot announce what lies below.
    commit_cut_off(&mut committer, 1, mine, Tid::ZERO, b"mine").await;
    assert!(
        bystander.closed().await,
        "every other client is disconnected"
    );
    assert!(flaky.failed.load(Ordering::Acquire) > 0);
    assert_eq!(
        logs.lines_with("disconnecting every client"),
        1,
        "one log line for the whole server"
    );
    assert_eq!(logs.lines_with("ERROR"), 1);
    // Nobody was told of the own commit while the foreign one below it
    // went unannounced: a cache would keep `theirs 1` as current.
    for client in [&committer, &bystander] {
        assert_eq!(invalidations_received(client), vec![(before, vec![theirs])]);
    }

    // The database is back; the clients reconnect.
    flaky.failing.store(false, Ordering::Release);
    let own = db.handle().load(mine).unwrap().1;
    assert!(
        own > hidden,
        "the own commit is durable, above the hidden one"
    );
    let mut returning = Client::connect(server.addr, None).await;
    let last = returning.register("1", false).await.unwrap();
    assert_eq!(last, own, "served as of the own commit");
    // The queue restarted at the own commit: a cache from before it cannot
    // be brought up to date from the queue and must be verified.
    let since = returning
        .call("getInvalidations", vec![bytes(&before.to_bytes())])
        .await
        .unwrap();
    assert_eq!(since, Value::None, "no invalidations across the restart");
    // What verification finds: the revision cached before the outage is
    // no longer current, and every load gives what the database holds.
    let now = returning.load(theirs).await.unwrap().unwrap();
    assert_eq!((now.data.as_slice(), now.start), (&b"theirs 2"[..], hidden));
    let now = returning.load(mine).await.unwrap().unwrap();
    assert_eq!((now.data.as_slice(), now.start), (&b"mine"[..], own));
    let last = returning.call("lastTransaction", vec![]).await.unwrap();
    assert_eq!(replies::tid("lastTransaction", &last).unwrap(), own);

    // The server is whole again: a later foreign commit reaches the
    // reconnected client, once, after the own commit.
    let after = commit(&elsewhere, &[(theirs, hidden, b"theirs 3".to_vec())]).unwrap();
    assert!(after > own);
    assert_eq!(
        invalidation(&returning.next_event("invalidateTransaction").await),
        (after, vec![theirs])
    );
    // And a reconnected cache from after the restart is served from the
    // queue.
    let since = returning
        .call("getInvalidations", vec![bytes(&own.to_bytes())])
        .await
        .unwrap();
    assert_ne!(since, Value::None);

    // The client library through a second outage: it reconnects by itself
    // and drops the cache the server can no longer bring up to date.
    let mut options = ClientOptions::new(vec![ServerAddress::from(server.addr)]);
    options.wait_timeout = WAIT;
    let library = tokio::time::timeout(WAIT, AsyncClientStorage::connect(options))
        .await
        .unwrap()
        .unwrap();
    let mut notices = library.subscribe();
    assert_eq!(
        library.load(theirs).await.unwrap(),
        (b"theirs 3".to_vec(), after)
    );
    flaky.failing.store(true, Ordering::Release);
    let hidden_again = commit(&elsewhere, &[(theirs, after, b"theirs 4".to_vec())]).unwrap();
    commit_cut_off(&mut returning, 2, mine, own, b"mine 2").await;
    flaky.failing.store(false, Ordering::Release);
    let (mut disconnected, mut dropped) = (false, false);
    for _ in 0..100 {
        match tokio::time::timeout(WAIT, notices.recv())
            .await
            .expect("the client reconnects")
            .unwrap()
        {
            Notice::Disconnected => disconnected = true,
            Notice::CacheDropped => dropped = true,
            Notice::Connected { .. } if disconnected => break,
            _ => {}
        }
    }
    assert!(disconnected && dropped, "disconnected, cache dropped");
    assert!(library.is_connected());
    assert_eq!(
        library.load(theirs).await.unwrap(),
        (b"theirs 4".to_vec(), hidden_again),
        "not the revision cached before the outage"
    );
    let own_again = db.handle().load(mine).unwrap();
    assert_eq!(own_again.0, b"mine 2");
    assert_eq!(library.last_transaction(), own_again.1);
    assert_eq!(
        logs.lines_with("disconnecting every client"),
        2,
        "one line per outage"
    );
    library.close().unwrap();
    server.stop().await;
}
