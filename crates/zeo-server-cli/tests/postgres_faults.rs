//! Faults under `zeo-server` on PostgreSQL, each over a cluster of the
//! test's own (the shared test cluster must stay up): the database
//! restarted or the commit's connection dropped between vote and
//! finish, the database restarted during a stream of commits, and
//! a server killed -9 between vote and finish beside a second server. A
//! commit fails cleanly (an error, nothing half-applied), no
//! acknowledged commit is lost, and the servers go on serving by
//! themselves.

mod common;
mod postgres_common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use postgres_common::{
    begin_and_vote, client, commit, commit_eventually, count, serve, wait_for_value, PATIENCE,
};
use zeo_storage::{Storage, Tid};
use zeo_testkit::postgres::{PrivateCluster, Shutdown};

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

/// Commits once, then stores a revision, votes, lets `fault` strike the
/// database and finishes: the finish must fail, leave nothing, and the
/// server must serve the next commit by itself.
fn fault_between_vote_and_finish(fault: impl FnOnce(&PrivateCluster)) {
    let pg = PrivateCluster::start();
    let dsn = pg.create_database("zodb");
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), "127.0.0.1:0", &dsn);
    let c = client(&server);
    let oid = c.new_oid().unwrap();
    let first = commit(&c, &[(oid, Tid::ZERO, b"first".to_vec())]).unwrap();

    let txn = begin_and_vote(&c, &[(oid, first, b"lost".to_vec())]).unwrap();
    fault(&pg);
    let finished = c.tpc_finish(txn, &mut |_| {});
    assert!(finished.is_err(), "a finish after the fault: {finished:?}");
    c.tpc_abort(txn);

    // The server reconnects by itself: the next commit goes through.
    let second = commit_eventually(&c, &[(oid, first, b"second".to_vec())]);
    assert!(second > first);
    assert_eq!(c.load(oid).unwrap(), (b"second".to_vec(), second));
    assert_eq!(transactions(&pg), 2);
    assert_eq!(revisions_holding(&pg, "lost"), 0);
}

#[test]
fn a_database_restart_between_vote_and_finish_fails_that_commit_only() {
    fault_between_vote_and_finish(|pg| pg.restart(Shutdown::Fast));
}

#[test]
fn a_commit_connection_dropped_between_vote_and_finish_fails_that_commit_only() {
    fault_between_vote_and_finish(|pg| {
        // The server's session holding the voted transaction open.
        let dropped = pg.cluster().psql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = 'zodb' AND state LIKE 'idle in transaction%'",
        );
        assert_eq!(dropped.trim(), "1");
    });
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
    let server = serve(dir.path(), "127.0.0.1:0", &dsn);
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
    let mut a = serve(&dir.path().join("a"), "127.0.0.1:0", &dsn);
    let b = serve(&dir.path().join("b"), "127.0.0.1:0", &dsn);
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
    // (Once B has announced A's first commit to its client: before that,
    // B serves its client as of an older tid, where the object does not
    // exist yet.)
    wait_for_value(&cb, oid, b"first");
    assert_eq!(cb.load(oid).unwrap(), (b"first".to_vec(), first));
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
