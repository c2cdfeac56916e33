//! Read-only `zeo-server`s on a streaming hot standby of the database
//! (private clusters: a primary and its replica): they learn of commits
//! made through a primary-backed server by polling once the standby has
//! replayed them (NOTIFY does not reach a standby), and a client failing
//! over from the primary-backed server to a lagging replica-backed one
//! waits for the replica to catch up to its cache instead of refusing
//! it as "cache newer than server".

mod common;
mod postgres_common;

use std::time::Instant;

use common::{ruok, ServerProcess};
use postgres_common::{client, commit, wait_for_value, PATIENCE};
use zeo_client::{ClientOptions, ClientStorage, ServerAddress};
use zeo_storage::{Storage, Tid};
use zeo_testkit::postgres::PrivateCluster;

/// Starts a read-only `zeo-server` on `dsn` with the configuration
/// docs/postgresql-ha.md gives for a server on a replica (its address and
/// `dsn` replaced by the test's).
fn serve_read_only(dir: &std::path::Path, dsn: &str) -> ServerProcess {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/postgresql-ha.md"),
    )
    .unwrap();
    let section = &doc[doc
        .find("### A read-only server on the replica")
        .expect("the replica section of docs/postgresql-ha.md")..];
    let block = section
        .split("```ini\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the replica server's zeo.conf in docs/postgresql-ha.md");
    let conf: String = block
        .lines()
        .map(|line| match line.trim_start() {
            l if l.starts_with("address ") => "  address 127.0.0.1:0".to_owned(),
            l if l.starts_with("dsn ") => format!("    dsn {dsn}"),
            _ => line.to_owned(),
        })
        .map(|line| line + "\n")
        .collect();
    assert!(conf.contains("read-only true"), "{conf}");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("zeo.conf"), conf).unwrap();
    ServerProcess::start(dir, &["-C", "zeo.conf"])
}

/// A primary with database `zodb` served by a writable server (which
/// creates the schema), and a replica that has replayed it.
fn primary_and_replica(dir: &std::path::Path) -> (PrivateCluster, ServerProcess, PrivateCluster) {
    let pg = PrivateCluster::start();
    let dsn = pg.create_database("zodb");
    let primary = postgres_common::serve(&dir.join("primary"), "127.0.0.1:0", &dsn);
    let replica = PrivateCluster::replica_of(&pg);
    assert!(replica.wait_replayed(&pg.current_lsn(), PATIENCE));
    (pg, primary, replica)
}

#[test]
fn a_read_only_server_on_a_replica_sees_commits_made_through_the_primary() {
    let dir = tempfile::tempdir().unwrap();
    let (pg, primary, replica) = primary_and_replica(dir.path());
    let reader_server = serve_read_only(&dir.path().join("replica"), &replica.dsn("zodb"));
    let writer = client(&primary);
    let mut options = ClientOptions::new(vec![ServerAddress::localhost(reader_server.port())]);
    options.read_only = true;
    let reader = ClientStorage::open(options).unwrap();

    let oid = writer.new_oid().unwrap();
    let first = commit(&writer, &[(oid, Tid::ZERO, b"first".to_vec())]).unwrap();
    wait_for_value(&reader, oid, b"first");
    // The reader now caches the object: the next revision reaches it as
    // an invalidation from the replica's server.
    commit(&writer, &[(oid, first, b"second".to_vec())]).unwrap();
    wait_for_value(&reader, oid, b"second");
    assert!(reader.last_transaction() > first);
    drop(pg);
}

#[test]
fn a_client_failing_over_to_a_lagging_replica_waits_for_it_to_catch_up() {
    let dir = tempfile::tempdir().unwrap();
    let (pg, mut primary, replica) = primary_and_replica(dir.path());
    let reader_server = serve_read_only(&dir.path().join("replica"), &replica.dsn("zodb"));

    let mut options = ClientOptions::new(vec![
        ServerAddress::localhost(primary.port()),
        ServerAddress::localhost(reader_server.port()),
    ]);
    options.read_only_fallback = true;
    options.wait_timeout = PATIENCE;
    // A refused connection would be retried only after longer than the
    // test waits: the client must get through on its first round.
    options.min_disconnect_poll = 3 * PATIENCE;
    options.max_disconnect_poll = 3 * PATIENCE;
    let c = ClientStorage::open(options).unwrap();
    let oid = c.new_oid().unwrap();
    let first = commit(&c, &[(oid, Tid::ZERO, b"first".to_vec())]).unwrap();
    assert!(replica.wait_replayed(&pg.current_lsn(), PATIENCE));

    // The replica stops replaying: what the client commits now is ahead
    // of it, and so is the client's cache.
    replica.cluster().psql("SELECT pg_wal_replay_pause()");
    let second = commit(&c, &[(oid, first, b"second".to_vec())]).unwrap();
    assert_eq!(c.load(oid).unwrap(), (b"second".to_vec(), second));

    primary.signal(libc::SIGKILL);
    let _ = primary.child.wait();
    // The client reaches the replica's server and waits there: it has
    // registered (one connection counted) but cannot verify its cache.
    let deadline = Instant::now() + PATIENCE;
    for _ in 0..100_000 {
        let status = ruok(reader_server.addr()).replace(' ', "");
        if status.contains("\"connections\":1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the client never reached the replica: {status}"
        );
        std::thread::yield_now();
    }
    assert!(!c.is_connected(), "connected to a server behind the cache");
    replica.cluster().psql("SELECT pg_wal_replay_resume()");
    c.wait_connected(PATIENCE)
        .expect("the client connects once the replica caught up");
    assert_eq!(c.load(oid).unwrap(), (b"second".to_vec(), second));
    assert!(c.last_transaction() >= second);
}

#[test]
fn a_stock_python_client_refuses_a_lagging_replica_as_cache_newer_than_server() {
    let dir = tempfile::tempdir().unwrap();
    let (_pg, primary, replica) = primary_and_replica(dir.path());
    let reader_server = serve_read_only(&dir.path().join("replica"), &replica.dsn("zodb"));
    replica.cluster().psql("SELECT pg_wal_replay_pause()");
    let out = zeo_testkit::run_python(
        &zeo_testkit::python6(),
        &zeo_testkit::script("lagging_replica_client.py"),
        &[
            primary.port().to_string(),
            reader_server.port().to_string(),
            dir.path().display().to_string(),
        ],
        dir.path(),
    );
    let verdict = zeo_testkit::stdout_of(&out, "lagging_replica_client.py");
    // What docs/postgresql-ha.md says Python clients do: refuse at once,
    // logging at CRITICAL, and stay disconnected.
    assert_eq!(
        verdict.trim(),
        r#"{"out_of_sync_logged": true, "connected": false}"#
    );
}
