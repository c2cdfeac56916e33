//! Crash safety of the FileStorage: a process committing in a loop is killed
//! with SIGKILL at random moments, over and over, on the same file. After
//! every kill the file must open, pass `check`, hold every transaction whose
//! `tpc_finish` returned, and hold nothing else but possibly the one
//! transaction that was finishing when the kill came.
//!
//! The committing process is this test binary itself, re-executed to run
//! only [`crash_child`] (an ignored test that does nothing unless the parent
//! sets [`CHILD_PATH`]). The child prints `COMMITTED <seq> <tid>` after each
//! `tpc_finish` returns, so the parent knows what was promised durable, and
//! `STAGE <seq> <stage>` as it enters each step of a commit. The parent
//! kills it when it reads a randomly chosen one of these lines: kills land
//! in every step of the commit, by event rather than after a guessed delay.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use rand::Rng;
use zeo_storage::filestorage::{check, FileStorage, FileStorageOptions};
use zeo_storage::Iteration;
use zeo_storage::{BeginOptions, Error, Oid, Storage, Tid, TransactionMetaData};
use zeo_testkit::TempDir;

/// The Data.fs the child commits to; set only for the child.
const CHILD_PATH: &str = "ZEO_CRASH_CHILD_PATH";
/// The sequence number of the child's first transaction.
const CHILD_START: &str = "ZEO_CRASH_CHILD_START";
/// A child that outlives its parent (which should kill it) stops by itself.
const CHILD_LIFETIME: Duration = Duration::from_secs(20);

const ROUNDS: usize = 25;
/// The whole test stays well inside this.
const BUDGET: Duration = Duration::from_secs(25);

/// The oids transaction `seq` writes: one of a few hot objects, one of a
/// wider set, and on every fifth transaction a new object.
fn oids_of(seq: u64) -> Vec<u64> {
    let mut oids = vec![1 + seq % 3, 10 + seq % 7];
    if seq % 5 == 0 {
        oids.push(1000 + seq);
    }
    oids
}

/// The record transaction `seq` writes for `oid`: its identity, then filler
/// of a length that varies so kills land in records of many sizes.
fn data_of(seq: u64, oid: u64) -> Vec<u8> {
    let mut data = format!("crash-test seq={seq} oid={oid};").into_bytes();
    let filler = (seq * 7919 + oid * 104_729) % 1000;
    data.extend((0..filler).map(|i| (i as u8).wrapping_mul(31) ^ (seq as u8)));
    data
}

fn description_of(seq: u64) -> String {
    format!("seq {seq}")
}

/// `create` truncates, as in ZODB, so only the very first child sets it.
fn options(read_only: bool, create: bool) -> FileStorageOptions {
    FileStorageOptions {
        read_only,
        create,
        pack_gc: true,
        sync_delay: None,
    }
}

#[test]
#[ignore = "child process of kills_during_commits_lose_nothing, which runs it"]
fn crash_child() {
    let Some(path) = std::env::var_os(CHILD_PATH) else {
        eprintln!("crash_child only runs as a child of kills_during_commits_lose_nothing");
        return;
    };
    let mut seq: u64 = std::env::var(CHILD_START).unwrap().parse().unwrap();
    let path = Path::new(&path);
    let st = FileStorage::open(path, options(false, seq == 0 && !path.exists())).unwrap();
    let started = Instant::now();
    let stdout = std::io::stdout();
    while started.elapsed() < CHILD_LIFETIME {
        let meta = TransactionMetaData {
            user: b"crash".to_vec(),
            description: description_of(seq).into_bytes(),
            extension: Vec::new(),
        };
        stage(seq, "begin");
        let txn = st.tpc_begin(&meta, BeginOptions::default()).unwrap();
        stage(seq, "store");
        for oid in oids_of(seq) {
            let serial = match st.load(Oid(oid)) {
                Ok((_, tid)) => tid,
                Err(Error::PosKey { .. }) => Tid::ZERO,
                Err(e) => panic!("load: {e}"),
            };
            st.store(txn, Oid(oid), serial, &data_of(seq, oid)).unwrap();
        }
        stage(seq, "vote");
        st.tpc_vote(txn).unwrap();
        stage(seq, "finish");
        let tid = st.tpc_finish(txn, &mut |_| {}).unwrap();
        let mut out = stdout.lock();
        // A leading newline keeps the line parseable after the harness's
        // own "test crash_child ... " prefix.
        writeln!(out, "\nCOMMITTED {seq} {:016x}", tid.0).unwrap();
        out.flush().unwrap();
        seq += 1;
    }
}

/// Tells the parent the child is entering `step` of transaction `seq`.
fn stage(seq: u64, step: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "\nSTAGE {seq} {step}").unwrap();
    out.flush().unwrap();
}

/// Kills a child that has not printed `kill_after` lines by then.
const STALL: Duration = Duration::from_secs(15);

/// What one child promised: seq -> tid. The child is killed when it has
/// printed `kill_after` `STAGE`/`COMMITTED` lines.
fn run_child_and_kill(path: &Path, start: u64, kill_after: usize) -> BTreeMap<u64, u64> {
    let start = start.to_string();
    let env = [
        (CHILD_PATH, path.as_os_str()),
        (CHILD_START, start.as_ref()),
    ];
    let lines = common::run_child_and_kill("crash_child", &env, kill_after, STALL);
    let mut promised = BTreeMap::new();
    for line in lines {
        let mut parts = line.split(' ');
        let (Some(seq), Some(tid), None) = (parts.next(), parts.next(), parts.next()) else {
            panic!("garbled line from the child: {line:?}");
        };
        promised.insert(seq.parse().unwrap(), u64::from_str_radix(tid, 16).unwrap());
    }
    promised
}

/// Checks the file against everything promised so far; returns the tids of
/// all its transactions, in order.
fn verify(path: &Path, promised: &BTreeMap<u64, u64>, read_only: bool) -> Vec<u64> {
    let st = FileStorage::open(path, options(read_only, false))
        .unwrap_or_else(|e| panic!("reopen (read_only={read_only}) after a kill: {e}"));
    let mut expected_current: BTreeMap<u64, u64> = BTreeMap::new();
    let mut tids = Vec::new();
    for (seq, txn) in st.iterator(None, None).unwrap().enumerate() {
        let seq = seq as u64;
        let txn = txn.unwrap_or_else(|e| panic!("iterating after a kill: {e}"));
        assert_eq!(
            txn.meta.description,
            description_of(seq).into_bytes(),
            "transaction {seq} is not the {seq}th the children committed"
        );
        if let Some(&tid) = promised.get(&seq) {
            assert_eq!(
                txn.tid.0, tid,
                "transaction {seq} has another tid than promised"
            );
        }
        let oids: Vec<u64> = txn.records.iter().map(|r| r.oid.0).collect();
        assert_eq!(oids, oids_of(seq), "oids of transaction {seq}");
        for r in &txn.records {
            assert_eq!(r.tid, txn.tid);
            let data = r
                .data
                .as_deref()
                .unwrap_or_else(|| panic!("record without data"));
            assert!(
                data == data_of(seq, r.oid.0),
                "data of transaction {seq} oid {}",
                r.oid.0
            );
            expected_current.insert(r.oid.0, seq);
        }
        tids.push(txn.tid.0);
    }
    let count = tids.len() as u64;
    // Every promise is kept, and at most one transaction beyond the last
    // promise (finished, but killed before it could say so).
    let last_promised = promised.keys().next_back().map_or(0, |s| s + 1);
    assert!(
        count == last_promised || count == last_promised + 1,
        "{count} transactions in the file, {last_promised} promised"
    );
    for (oid, seq) in expected_current {
        let (data, _) = st.load(Oid(oid)).unwrap();
        assert!(
            data == data_of(seq, oid),
            "current data of oid {oid} is not from seq {seq}"
        );
    }
    st.close().unwrap();
    tids
}

#[test]
fn kills_during_commits_lose_nothing() {
    let started = Instant::now();
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("Data.fs");
    let mut rng = rand::rng();
    let mut promised: BTreeMap<u64, u64> = BTreeMap::new();
    let mut next = 0u64;
    let mut rounds = 0;
    let mut unannounced = 0;
    while rounds < ROUNDS && started.elapsed() < BUDGET - Duration::from_secs(2) {
        // Up to a dozen transactions of five lines each.
        let kill_after = rng.random_range(1..=60);
        let new = run_child_and_kill(&path, next, kill_after);
        for (&seq, &tid) in &new {
            assert!(seq >= next, "child reused sequence number {seq}");
            promised.insert(seq, tid);
        }
        // The read-only open must ignore an incomplete tail without
        // touching it; the writable one then cuts it off.
        let bytes = std::fs::read(&path).unwrap();
        let seen_read_only = verify(&path, &promised, true);
        assert!(
            std::fs::read(&path).unwrap() == bytes,
            "a read-only open changed the file"
        );
        let tids = verify(&path, &promised, false);
        assert_eq!(
            seen_read_only, tids,
            "read-only and writable opens disagree"
        );
        let report = check(&path).unwrap_or_else(|e| panic!("check after a kill: {e}"));
        assert_eq!(report.transactions, tids.len() as u64);
        let announced = promised.keys().next_back().map_or(0, |s| s + 1);
        if tids.len() as u64 > announced {
            unannounced += 1;
        }
        // What is in the file now is durable and verified: later rounds
        // must keep all of it, announced or not.
        promised = tids
            .iter()
            .enumerate()
            .map(|(seq, &tid)| (seq as u64, tid))
            .collect();
        next = tids.len() as u64;
        rounds += 1;
    }
    eprintln!(
        "{rounds} kills, {next} transactions, {unannounced} finished but unannounced, {:?}",
        started.elapsed()
    );
    assert!(rounds >= 10, "only {rounds} rounds fit in the time budget");
    assert!(
        next > rounds as u64,
        "the children hardly committed anything ({next})"
    );
}
