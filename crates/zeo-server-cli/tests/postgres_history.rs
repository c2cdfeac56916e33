//! A Jepsen-style history check on PostgreSQL: clients of two
//! `zeo-server` processes over one database read and increment a few
//! counters at random while the database restarts (immediate shutdown,
//! crash recovery) and one server is killed -9 and started again on the
//! same address. Every operation is recorded with its outcome, then the
//! history is checked:
//!
//! - monotonic reads per client: a client never reads a counter below a
//!   value it has read or written (acknowledged) before;
//! - no lost acknowledged commit, exactly once: each acknowledged
//!   increment is the counter's revision at its tid in the database, no
//!   two acknowledged increments wrote the same value, and the final
//!   value lies between the acknowledged increments and those plus the
//!   ones whose outcome is unknown (a finish that failed);
//! - no stale read once quiet: every client, on either server, reads the
//!   final values (invalidations for commits made through the other
//!   server reach it).

mod common;
mod postgres_common;

use std::collections::{BTreeSet, HashMap};
use std::sync::mpsc;
use std::time::Instant;

use postgres_common::{client, commit, count, serve, PATIENCE};
use zeo_client::ClientStorage;
use zeo_storage::{Oid, Storage, Tid};
use zeo_testkit::postgres::{PrivateCluster, Shutdown};

/// Counters the clients share.
const COUNTERS: usize = 3;
/// Clients per server.
const CLIENTS_PER_SERVER: usize = 2;
/// Completed operations (reads, acknowledged or conflicting
/// increments) per client.
const OPS: usize = 60;
/// Attempts per completed operation a client may make at most.
const ATTEMPTS_PER_OP: usize = 50;

/// One recorded operation and its outcome.
#[derive(Debug, Clone)]
enum Op {
    /// A load of counter `c` returned `value` at `serial`.
    Read { c: usize, value: u64, serial: Tid },
    /// A load failed (disconnected, database down).
    ReadFailed,
    /// An increment to `value`, acknowledged at `tid`.
    Acked { c: usize, value: u64, tid: Tid },
    /// An increment refused before the finish: not committed.
    Refused { conflict: bool },
    /// An increment whose finish failed: it may or may not have
    /// committed.
    Unknown { c: usize },
}

/// A small xorshift generator: the history's randomness, reproducible
/// from the seed printed when the check fails.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

fn value_of(data: &[u8]) -> u64 {
    std::str::from_utf8(data)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a counter: {data:?}"))
}

/// Runs one client's operations, announcing each completed one on
/// `done`.
fn run_client(c: &ClientStorage, counters: &[Oid], seed: u64, done: &mpsc::Sender<()>) -> Vec<Op> {
    let mut rng = Rng(seed);
    let mut history = Vec::with_capacity(OPS);
    let deadline = Instant::now() + 3 * PATIENCE;
    let mut completed = 0;
    // While the database or the server is down, operations fail at once:
    // they are recorded but do not use up the client's budget of
    // completed ones (bounded all the same).
    for _ in 0..ATTEMPTS_PER_OP * OPS {
        if completed == OPS || Instant::now() >= deadline {
            break;
        }
        let r = rng.next();
        let i = (r % COUNTERS as u64) as usize;
        let oid = counters[i];
        let op = match c.load(oid) {
            Err(_) => Op::ReadFailed,
            Ok((data, serial)) if r & 0x100 == 0 => Op::Read {
                c: i,
                value: value_of(&data),
                serial,
            },
            Ok((data, serial)) => {
                let value = value_of(&data) + 1;
                let txn = postgres_common::begin_and_vote(
                    c,
                    &[(oid, serial, value.to_string().into_bytes())],
                );
                match txn {
                    Err(e) => Op::Refused {
                        conflict: e.is_conflict(),
                    },
                    Ok(txn) => match c.tpc_finish(txn, &mut |_| {}) {
                        Ok(tid) => Op::Acked { c: i, value, tid },
                        Err(_) => {
                            c.tpc_abort(txn);
                            Op::Unknown { c: i }
                        }
                    },
                }
            }
        };
        if matches!(
            op,
            Op::Read { .. } | Op::Acked { .. } | Op::Refused { conflict: true, .. }
        ) {
            completed += 1;
            let _ = done.send(());
        }
        history.push(op);
    }
    history
}

/// Monotonic reads: what each client read never goes below what it read
/// or wrote before.
fn check_monotonic(histories: &[Vec<Op>]) {
    for (client, history) in histories.iter().enumerate() {
        let mut floor = [(0u64, Tid::ZERO); COUNTERS];
        for (n, op) in history.iter().enumerate() {
            match *op {
                Op::Read { c, value, serial } => {
                    assert!(
                        (value, serial) >= floor[c],
                        "client {client}, op {n}: read {value} at {serial:?} of counter {c} \
                         after {:?}; history {history:?}",
                        floor[c]
                    );
                    floor[c] = (value, serial);
                }
                Op::Acked { c, value, tid } => floor[c] = floor[c].max((value, tid)),
                _ => {}
            }
        }
    }
}

#[test]
fn clients_of_two_servers_see_a_consistent_history_across_database_and_server_restarts() {
    let pg = PrivateCluster::start();
    let dsn = pg.create_database("zodb");
    let dir = tempfile::tempdir().unwrap();
    let a = serve(&dir.path().join("a"), "127.0.0.1:0", &dsn);
    let b_address = format!("127.0.0.1:{}", zeo_testkit::free_port());
    let mut b = serve(&dir.path().join("b"), &b_address, &dsn);

    let setup = client(&a);
    let counters: Vec<Oid> = (0..COUNTERS)
        .map(|_| {
            let oid = setup.new_oid().unwrap();
            commit(&setup, &[(oid, Tid::ZERO, b"0".to_vec())]).unwrap();
            oid
        })
        .collect();
    let clients: Vec<ClientStorage> = (0..2 * CLIENTS_PER_SERVER)
        .map(|i| client(if i < CLIENTS_PER_SERVER { &a } else { &b }))
        .collect();

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    eprintln!("history seed {seed:#x}");
    let (done_tx, done_rx) = mpsc::channel();
    let histories: Vec<Vec<Op>> = std::thread::scope(|scope| {
        let runs: Vec<_> = clients
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let (counters, done) = (&counters, done_tx.clone());
                let seed = seed.wrapping_mul(i as u64 + 1) | 1;
                scope.spawn(move || run_client(c, counters, seed, &done))
            })
            .collect();
        drop(done_tx);
        let total = 2 * CLIENTS_PER_SERVER * OPS;
        let wait_ops = |n: usize| {
            for _ in 0..n {
                if done_rx.recv_timeout(3 * PATIENCE).is_err() {
                    break;
                }
            }
        };
        // A quarter of the way: the database crashes and recovers.
        wait_ops(total / 4);
        pg.restart(Shutdown::Immediate);
        // Half way: server B is killed and started again on its address.
        wait_ops(total / 4);
        b.signal(libc::SIGKILL);
        let _ = b.child.wait();
        b = serve(&dir.path().join("b"), &b_address, &dsn);
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });

    check_monotonic(&histories);

    // Exactly once: acknowledged increments of a counter wrote distinct
    // values, each the counter's revision at its tid.
    let ops: Vec<&Op> = histories.iter().flatten().collect();
    let observer = client(&a);
    let mut finals: HashMap<Oid, Vec<u8>> = HashMap::new();
    for (i, &oid) in counters.iter().enumerate() {
        let acked: Vec<(u64, Tid)> = ops
            .iter()
            .filter_map(|op| match **op {
                Op::Acked { c, value, tid } if c == i => Some((value, tid)),
                _ => None,
            })
            .collect();
        let unknown = ops
            .iter()
            .filter(|op| matches!(***op, Op::Unknown { c } if c == i))
            .count() as u64;
        let distinct: BTreeSet<u64> = acked.iter().map(|(v, _)| *v).collect();
        assert_eq!(distinct.len(), acked.len(), "counter {i}: {acked:?}");
        for (value, tid) in &acked {
            let rows = count(
                &pg,
                "zodb",
                &format!(
                    "SELECT count(*) FROM object_state WHERE zoid = {} AND tid = {} \
                     AND state = '{value}'::bytea",
                    oid.0, tid.0 as i64
                ),
            );
            assert_eq!(
                rows, 1,
                "counter {i}: acknowledged {value} at {tid:?} is lost"
            );
        }
        // The committed value, from the database: a client of a server is
        // served as of the last commit that server announced, which may
        // trail the database for a poll; that it catches up is checked
        // below, with patience.
        let last = count(
            &pg,
            "zodb",
            &format!(
                "SELECT convert_from(o.state, 'UTF8')::bigint FROM current_object c \
                 JOIN object_state o ON o.zoid = c.zoid AND o.tid = c.tid WHERE c.zoid = {}",
                oid.0
            ),
        ) as u64;
        finals.insert(oid, last.to_string().into_bytes());
        assert!(
            acked.len() as u64 <= last && last <= acked.len() as u64 + unknown,
            "counter {i}: final {last}, {} acknowledged, {unknown} unknown",
            acked.len()
        );
        // Every revision in the database is one increment: 0, 1, … last.
        let revisions = count(
            &pg,
            "zodb",
            &format!("SELECT count(*) FROM object_state WHERE zoid = {}", oid.0),
        );
        let values = count(
            &pg,
            "zodb",
            &format!(
                "SELECT count(DISTINCT state) FROM object_state WHERE zoid = {}",
                oid.0
            ),
        );
        assert_eq!((revisions, values), (last as i64 + 1, last as i64 + 1));
    }

    // Quiet now: every client reads the final values, the clients of B
    // through the invalidations B announces for commits made through A.
    for (n, c) in clients.iter().chain(std::iter::once(&observer)).enumerate() {
        let deadline = Instant::now() + PATIENCE;
        for oid in &counters {
            let mut seen = Vec::new();
            for _ in 0..10_000 {
                seen = c.load(*oid).map(|(d, _)| d).unwrap_or_default();
                if seen == finals[oid] || Instant::now() >= deadline {
                    break;
                }
                // Invalidations come before the reply to a later request.
                let _ = c.ping();
            }
            assert_eq!(
                seen, finals[oid],
                "client {n} still reads a stale {oid:?} (seed {seed:#x})"
            );
        }
    }
    let count_of = |f: fn(&Op) -> bool| ops.iter().filter(|op| f(op)).count();
    eprintln!(
        "history: {} ops, {} reads, {} failed reads, {} acknowledged, {} refused ({} conflicts), {} unknown",
        ops.len(),
        count_of(|op| matches!(op, Op::Read { .. })),
        count_of(|op| matches!(op, Op::ReadFailed)),
        count_of(|op| matches!(op, Op::Acked { .. })),
        count_of(|op| matches!(op, Op::Refused { .. })),
        count_of(|op| matches!(op, Op::Refused { conflict: true, .. })),
        count_of(|op| matches!(op, Op::Unknown { .. })),
    );
    drop(b);
}
