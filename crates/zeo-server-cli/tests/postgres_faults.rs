//! Faults under `zeo-server` on PostgreSQL, each over a cluster of the
//! test's own (the shared test cluster must stay up): the database
//! restarted between vote and finish and during a stream of commits, and
//! a server killed -9 between vote and finish beside a second server. A
//! commit fails cleanly (an error, nothing half-applied), no
//! acknowledged commit is lost, and the servers go on serving by
//! themselves.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::ServerProcess;
use zeo_client::{ClientOptions, ClientStorage, ServerAddress};
use zeo_storage::{BeginOptions, Oid, Storage, Tid, TransactionMetaData};
use zeo_testkit::postgres::{PrivateCluster, Shutdown};

/// How long any one wait of these tests may take.
const PATIENCE: Duration = Duration::from_secs(60);

/// Starts a `zeo-server` serving the database at `dsn` as storage `1`.
fn serve(dir: &Path, dsn: &str) -> ServerProcess {
    std::fs::create_dir_all(dir).unwrap();
    let conf = format!(
        "%import relstorage\n<zeo>\n  address 127.0.0.1:0\n</zeo>\n\
         <relstorage 1>\n  <postgresql>\n    dsn {dsn}\n  </postgresql>\n</relstorage>\n"
    );
    std::fs::write(dir.join("zeo.conf"), conf).unwrap();
    ServerProcess::start(dir, &["-C", "zeo.conf"])
}

fn client(server: &ServerProcess) -> ClientStorage {
    let mut options = ClientOptions::new(vec![ServerAddress::localhost(server.port())]);
    // Reconnect promptly after the server dropped the connection.
    options.min_disconnect_poll = Duration::from_millis(50);
    options.max_disconnect_poll = Duration::from_millis(500);
    ClientStorage::open(options).expect("connect to zeo-server")
}

/// Stores each `(oid, serial, data)` in one transaction, up to the vote.
fn begin_and_vote(
    s: &ClientStorage,
    records: &[(Oid, Tid, Vec<u8>)],
) -> zeo_storage::Result<zeo_storage::TxnHandle> {
    let txn = s.tpc_begin(&TransactionMetaData::default(), BeginOptions::default())?;
    let voted = records
        .iter()
        .try_for_each(|(oid, serial, data)| s.store(txn, *oid, *serial, data))
        .and_then(|()| s.tpc_vote(txn).map(drop));
    match voted {
        Ok(()) => Ok(txn),
        Err(e) => {
            s.tpc_abort(txn);
            Err(e)
        }
    }
}

/// Commits the records; aborts and returns the error when any step fails.
fn commit(s: &ClientStorage, records: &[(Oid, Tid, Vec<u8>)]) -> zeo_storage::Result<Tid> {
    let txn = begin_and_vote(s, records)?;
    s.tpc_finish(txn, &mut |_| {})
        .inspect_err(|_| s.tpc_abort(txn))
}

/// Commits, retrying (bounded) while the failure is the database or the
/// server coming back; panics when it does not succeed in time.
fn commit_eventually(s: &ClientStorage, records: &[(Oid, Tid, Vec<u8>)]) -> Tid {
    let deadline = Instant::now() + PATIENCE;
    let mut last = None;
    for _ in 0..10_000 {
        if Instant::now() >= deadline {
            break;
        }
        let _ = s.wait_connected(PATIENCE);
        match commit(s, records) {
            Ok(tid) => return tid,
            Err(e) => last = Some(e.to_string()),
        }
        // The server's back-off after a failed connection attempt is
        // short; a client's next attempt follows a ping round trip.
        let _ = s.ping();
    }
    panic!("no commit succeeded within {PATIENCE:?}; last error: {last:?}");
}

/// One number of the database, through psql.
fn count(pg: &PrivateCluster, db: &str, sql: &str) -> i64 {
    let out = std::process::Command::new("psql")
        .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-h"])
        .arg(pg.cluster().socket_dir())
        .args(["-U", "postgres", "-d", db, "-c", sql])
        .output()
        .expect("run psql");
    assert!(out.status.success(), "{sql}: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{sql}: {e}: {out:?}"))
}

/// How many transactions the database holds (beyond the root's tid 0).
fn transactions(pg: &PrivateCluster) -> i64 {
    count(pg, "zodb", "SELECT count(*) FROM transaction WHERE tid > 0")
}

/// How many object revisions hold exactly `data`.
fn revisions_holding(pg: &PrivateCluster, data: &str) -> i64 {
    count(
        pg,
        "zodb",
        &format!("SELECT count(*) FROM object_state WHERE state = '{data}'::bytea"),
    )
}

#[test]
fn a_database_restart_between_vote_and_finish_fails_that_commit_only() {
    let pg = PrivateCluster::start();
    let dsn = pg.create_database("zodb");
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &dsn);
    let c = client(&server);
    let oid = c.new_oid().unwrap();
    let first = commit(&c, &[(oid, Tid::ZERO, b"first".to_vec())]).unwrap();

    let txn = begin_and_vote(&c, &[(oid, first, b"lost".to_vec())]).unwrap();
    pg.restart(Shutdown::Fast);
    let finished = c.tpc_finish(txn, &mut |_| {});
    assert!(
        finished.is_err(),
        "a finish over a restarted database: {finished:?}"
    );
    c.tpc_abort(txn);

    // The server reconnects by itself: the next commit goes through.
    let second = commit_eventually(&c, &[(oid, first, b"second".to_vec())]);
    assert!(second > first);
    assert_eq!(c.load(oid).unwrap(), (b"second".to_vec(), second));
    assert_eq!(transactions(&pg), 2);
    assert_eq!(revisions_holding(&pg, "lost"), 0);
}

/// What the committer of the stream saw: every acknowledged commit (the
/// counter's value and the tid) and how many commits failed.
struct Stream {
    acked: Vec<(u64, Tid)>,
    failed: usize,
}

#[test]
fn database_restarts_during_a_stream_of_commits_lose_no_acknowledged_commit() {
    let pg = PrivateCluster::start();
    let dsn = pg.create_database("zodb");
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &dsn);
    let c = Arc::new(client(&server));
    let counter = c.new_oid().unwrap();
    commit(&c, &[(counter, Tid::ZERO, b"0".to_vec())]).unwrap();

    // Each commit raises the counter and adds an object of its own
    // holding the same value: a half-applied transaction would show as a
    // counter revision without its object, or the reverse.
    let stop = Arc::new(AtomicBool::new(false));
    let (acked_tx, acked_rx) = mpsc::channel::<u64>();
    let committer = {
        let (c, stop) = (c.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut stream = Stream {
                acked: Vec::new(),
                failed: 0,
            };
            let deadline = Instant::now() + 3 * PATIENCE;
            for _ in 0..100_000 {
                if stop.load(Ordering::SeqCst) || Instant::now() >= deadline {
                    break;
                }
                let _ = c.wait_connected(PATIENCE);
                let Ok((data, serial)) = c.load(counter) else {
                    stream.failed += 1;
                    continue;
                };
                let value: u64 = String::from_utf8(data).unwrap().parse().unwrap();
                let next = (value + 1).to_string().into_bytes();
                let Ok(extra) = c.new_oid() else {
                    stream.failed += 1;
                    continue;
                };
                match commit(
                    &c,
                    &[(counter, serial, next.clone()), (extra, Tid::ZERO, next)],
                ) {
                    Ok(tid) => {
                        stream.acked.push((value + 1, tid));
                        let _ = acked_tx.send(value + 1);
                    }
                    Err(_) => stream.failed += 1,
                }
            }
            stream
        })
    };
    let wait_acks = |n: usize| {
        for _ in 0..n {
            acked_rx
                .recv_timeout(PATIENCE)
                .expect("an acknowledged commit in time");
        }
    };
    wait_acks(5);
    pg.restart(Shutdown::Immediate);
    wait_acks(5);
    pg.restart(Shutdown::Fast);
    wait_acks(5);
    stop.store(true, Ordering::SeqCst);
    let stream = committer.join().unwrap();

    // Acknowledged values rise one by one: no acknowledged commit was
    // overwritten by a later one that did not see it.
    for (i, (value, _)) in stream.acked.iter().enumerate() {
        assert_eq!(
            *value,
            i as u64 + 1,
            "acknowledged values {:?}",
            stream.acked
        );
    }
    let (last_value, last_tid) = *stream.acked.last().unwrap();
    assert_eq!(
        c.load(counter).unwrap(),
        (last_value.to_string().into_bytes(), last_tid)
    );
    // Every acknowledged commit is in the database with both records.
    for (value, tid) in &stream.acked {
        let rows = count(
            &pg,
            "zodb",
            &format!(
                "SELECT count(*) FROM object_state WHERE tid = {} AND state = '{value}'::bytea",
                tid.0 as i64
            ),
        );
        assert_eq!(rows, 2, "commit {value} at {tid:?}");
    }
    // Every transaction in the database is whole: the first has one
    // record, each later one two.
    assert_eq!(
        count(
            &pg,
            "zodb",
            "SELECT count(*) FROM transaction t WHERE t.tid > 0 AND \
             (SELECT count(*) FROM object_state o WHERE o.tid = t.tid) <> 2"
        ),
        1
    );
    assert_eq!(transactions(&pg) as usize, stream.acked.len() + 1);
    eprintln!(
        "{} commits acknowledged, {} failed across two database restarts",
        stream.acked.len(),
        stream.failed
    );
}

#[test]
fn a_server_killed_between_vote_and_finish_leaves_the_database_whole_and_the_other_serving() {
    let pg = PrivateCluster::start();
    let dsn = pg.create_database("zodb");
    let dir = tempfile::tempdir().unwrap();
    let mut a = serve(&dir.path().join("a"), &dsn);
    let b = serve(&dir.path().join("b"), &dsn);
    let ca = client(&a);
    let cb = client(&b);
    let oid = ca.new_oid().unwrap();
    let first = commit(&ca, &[(oid, Tid::ZERO, b"first".to_vec())]).unwrap();

    // A holds the object's row lock from its vote when it dies.
    let txn = begin_and_vote(&ca, &[(oid, first, b"half".to_vec())]).unwrap();
    a.signal(libc::SIGKILL);
    let _ = a.child.wait();
    assert!(ca.tpc_finish(txn, &mut |_| {}).is_err());

    // B commits to the same object: its database session went with A.
    let (data, serial) = cb.load(oid).unwrap();
    assert_eq!((data.as_slice(), serial), (&b"first"[..], first));
    let second = commit(&cb, &[(oid, first, b"second".to_vec())]).unwrap();
    assert!(second > first);
    assert_eq!(transactions(&pg), 2);
    assert_eq!(revisions_holding(&pg, "half"), 0);
    // No session of the dead server is left holding locks.
    assert_eq!(
        count(
            &pg,
            "zodb",
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND pid <> pg_backend_pid()"
        ),
        0
    );
}
