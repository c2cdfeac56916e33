//! Crash safety with group commit: a process in which several threads
//! commit at once (sharing fsyncs) is killed with SIGKILL at random
//! moments, over and over, on the same file. After every kill the file
//! must open (read-only without touching it, then writable), pass `check`,
//! hold every transaction whose `tpc_finish` returned, each whole, and
//! for every committer a gapless run of its transactions: at most one past
//! its last acknowledged one.
//!
//! The committing process is this test binary itself, re-executed to run
//! only [`concurrent_crash_child`]. Each committer prints
//! `COMMITTED <writer> <n> <tid>` once its `tpc_finish` returned; the
//! parent kills the child when it has read a random number of such lines
//! (or `STAGE` lines, printed as each commit begins).

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rand::Rng;
use zeo_storage::filestorage::{check, FileStorage, FileStorageOptions};
use zeo_storage::Iteration;
use zeo_storage::{BeginOptions, Oid, Storage, Tid, TransactionMetaData};
use zeo_testkit::TempDir;

/// The Data.fs the child commits to; set only for the child.
const CHILD_PATH: &str = "ZEO_CONCURRENT_CRASH_CHILD_PATH";
/// A child that outlives its parent (which should kill it) stops by itself.
const CHILD_LIFETIME: Duration = Duration::from_secs(20);
const WRITERS: u64 = 8;
const ROUNDS: usize = 40;
/// The whole test stays well inside this.
const BUDGET: Duration = Duration::from_secs(30);
/// Kills a child that has not printed enough lines by then.
const STALL: Duration = Duration::from_secs(15);

/// Writer `w`'s own object, changed by each of its transactions.
fn own_oid(w: u64) -> u64 {
    1 + w
}

/// The oids writer `w` writes in its `n`th transaction: its own object,
/// and every third time a new one of its own range.
fn oids_of(w: u64, n: u64) -> Vec<u64> {
    let mut oids = vec![own_oid(w)];
    if n % 3 == 0 {
        oids.push(1_000_000 * (w + 1) + n);
    }
    oids
}

fn data_of(w: u64, n: u64, oid: u64) -> Vec<u8> {
    let mut data = format!("concurrent crash w{w} n{n} oid{oid};").into_bytes();
    data.resize(40 + ((w * 977 + n * 131) % 1500) as usize, b'=');
    data
}

fn description_of(w: u64, n: u64) -> String {
    format!("w{w} n{n}")
}

fn parse_description(d: &[u8]) -> (u64, u64) {
    let d = std::str::from_utf8(d).unwrap();
    let (w, n) = d
        .strip_prefix('w')
        .and_then(|d| d.split_once(" n"))
        .unwrap_or_else(|| panic!("unexpected transaction {d:?}"));
    (w.parse().unwrap(), n.parse().unwrap())
}

fn say(line: String) {
    let mut out = std::io::stdout().lock();
    // A leading newline keeps the line parseable after the harness's own
    // "test concurrent_crash_child ... " prefix.
    writeln!(out, "\n{line}").unwrap();
    out.flush().unwrap();
}

#[test]
#[ignore = "child process of concurrent_kills_lose_nothing, which runs it"]
fn concurrent_crash_child() {
    let Some(path) = std::env::var_os(CHILD_PATH) else {
        eprintln!("concurrent_crash_child only runs as a child of concurrent_kills_lose_nothing");
        return;
    };
    let st = Arc::new(FileStorage::open(Path::new(&path), FileStorageOptions::default()).unwrap());
    // Each writer goes on after its last transaction in the file.
    let mut next = vec![0u64; WRITERS as usize];
    for txn in st.iterator(None, None).unwrap() {
        let (w, n) = parse_description(&txn.unwrap().meta.description);
        next[w as usize] = n + 1;
    }
    let started = Instant::now();
    let threads: Vec<_> = (0..WRITERS)
        .map(|w| {
            let st = Arc::clone(&st);
            let mut n = next[w as usize];
            thread::spawn(move || {
                let mut serial = st.load(Oid(own_oid(w))).map_or(Tid::ZERO, |(_, tid)| tid);
                while started.elapsed() < CHILD_LIFETIME {
                    say(format!("STAGE {w} {n}"));
                    let meta = TransactionMetaData {
                        user: b"crash".to_vec(),
                        description: description_of(w, n).into_bytes(),
                        extension: Vec::new(),
                    };
                    let txn = st.tpc_begin(&meta, BeginOptions::default()).unwrap();
                    for oid in oids_of(w, n) {
                        let base = if oid == own_oid(w) { serial } else { Tid::ZERO };
                        st.store(txn, Oid(oid), base, &data_of(w, n, oid)).unwrap();
                    }
                    st.tpc_vote(txn).unwrap();
                    serial = st.tpc_finish(txn, &mut |_| {}).unwrap();
                    say(format!("COMMITTED {w} {n} {:016x}", serial.0));
                    n += 1;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// What one child promised: (writer, n) -> tid.
type Promised = BTreeMap<(u64, u64), u64>;

fn run_child_and_kill(path: &Path, kill_after: usize) -> Promised {
    let lines = common::run_child_and_kill(
        "concurrent_crash_child",
        &[(CHILD_PATH, path.as_os_str())],
        kill_after,
        STALL,
    );
    let mut promised = Promised::new();
    for line in lines {
        let parts: Vec<&str> = line.split(' ').collect();
        let [w, n, tid] = parts[..] else {
            panic!("garbled line from the child: {line:?}");
        };
        promised.insert(
            (w.parse().unwrap(), n.parse().unwrap()),
            u64::from_str_radix(tid, 16).unwrap(),
        );
    }
    promised
}

/// Checks the file against everything promised so far; returns what it
/// holds: (writer, n) -> tid.
fn verify(path: &Path, promised: &Promised, read_only: bool) -> Promised {
    let options = FileStorageOptions {
        read_only,
        ..FileStorageOptions::default()
    };
    let st = FileStorage::open(path, options)
        .unwrap_or_else(|e| panic!("reopen (read_only={read_only}) after a kill: {e}"));
    let mut held = Promised::new();
    let mut next = vec![0u64; WRITERS as usize];
    for txn in st.iterator(None, None).unwrap() {
        let txn = txn.unwrap_or_else(|e| panic!("iterating after a kill: {e}"));
        let (w, n) = parse_description(&txn.meta.description);
        assert_eq!(n, next[w as usize], "writer {w}'s transactions have a gap");
        next[w as usize] += 1;
        let oids: Vec<u64> = txn.records.iter().map(|r| r.oid.0).collect();
        assert_eq!(oids, oids_of(w, n), "oids of w{w} n{n}");
        for r in &txn.records {
            assert!(
                r.data.as_deref() == Some(&data_of(w, n, r.oid.0)[..]),
                "data of w{w} n{n} oid {}",
                r.oid.0
            );
        }
        held.insert((w, n), txn.tid.0);
    }
    for (key, tid) in promised {
        assert_eq!(held.get(key), Some(tid), "acknowledged {key:?} lost");
    }
    for w in 0..WRITERS {
        let acknowledged = promised
            .keys()
            .filter(|(pw, _)| *pw == w)
            .map(|(_, n)| n + 1)
            .max()
            .unwrap_or(0);
        let there = next[w as usize];
        assert!(
            there == acknowledged || there == acknowledged + 1,
            "writer {w}: {there} transactions in the file, {acknowledged} acknowledged"
        );
        if there > 0 {
            let n = there - 1;
            let (data, _) = st.load(Oid(own_oid(w))).unwrap();
            assert!(data == data_of(w, n, own_oid(w)), "w{w}'s current data");
        }
    }
    st.close().unwrap();
    held
}

#[test]
fn concurrent_kills_lose_nothing() {
    let started = Instant::now();
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("Data.fs");
    drop(FileStorage::open(&path, FileStorageOptions::default()).unwrap());
    let mut rng = rand::rng();
    let mut promised = Promised::new();
    let mut rounds = 0;
    while rounds < ROUNDS && started.elapsed() < BUDGET - Duration::from_secs(3) {
        let kill_after = rng.random_range(1..=200);
        promised.extend(run_child_and_kill(&path, kill_after));
        let bytes = std::fs::read(&path).unwrap();
        let seen_read_only = verify(&path, &promised, true);
        assert!(
            std::fs::read(&path).unwrap() == bytes,
            "a read-only open changed the file"
        );
        let held = verify(&path, &promised, false);
        assert_eq!(
            seen_read_only, held,
            "read-only and writable opens disagree"
        );
        let report = check(&path).unwrap_or_else(|e| panic!("check after a kill: {e}"));
        assert_eq!(report.transactions, held.len() as u64);
        // What the file holds now is verified: later rounds keep all of it.
        promised = held;
        rounds += 1;
    }
    eprintln!(
        "{rounds} kills, {} transactions, {:?}",
        promised.len(),
        started.elapsed()
    );
    assert!(rounds >= 10, "only {rounds} rounds fit in the time budget");
    assert!(
        promised.len() > rounds,
        "the children hardly committed anything ({})",
        promised.len()
    );
}
