//! Interoperability with Python RelStorage 4.3 on one database: each side
//! opens what the other created, reads every revision the other wrote and
//! commits on top; a conflict between the two gives exactly one
//! ConflictError.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use zeo_storage::{BeginOptions, Error, Oid, Storage, Tid, TransactionMetaData};
use zeo_storage_postgres::{HistoryMode, PostgresOptions, PostgresStorage};
use zeo_testkit::postgres::TestDatabase;
use zeo_testkit::{python_relstorage, run_python_with_timeout, script, stdout_of, wait_until};

const PEER_LIMIT: Duration = Duration::from_secs(120);

fn mode_arg(mode: HistoryMode) -> &'static str {
    match mode {
        HistoryMode::Preserving => "hp",
        HistoryMode::Free => "hf",
    }
}

/// Runs the RelStorage peer and returns its output lines.
fn peer(db: &TestDatabase, mode: HistoryMode, args: &[&str]) -> Vec<String> {
    let dsn = db.dsn();
    let mut all = vec![args[0], &dsn, mode_arg(mode)];
    all.extend_from_slice(&args[1..]);
    let out = run_python_with_timeout(
        &python_relstorage(),
        &script("relstorage/peer.py"),
        &all,
        &std::env::temp_dir(),
        PEER_LIMIT,
    );
    stdout_of(&out, &format!("peer.py {args:?}"))
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The value of the first `key ...` line.
fn field(lines: &[String], key: &str) -> String {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(&format!("{key} ")))
        .unwrap_or_else(|| panic!("no {key} line in {lines:?}"))
        .to_owned()
}

fn open(db: &TestDatabase, mode: HistoryMode) -> PostgresStorage {
    let mut o = PostgresOptions::new(db.dsn());
    o.history = mode;
    PostgresStorage::open(o).expect("open the storage")
}

/// MD5 as the peer prints it, computed by the database.
fn md5(db: &TestDatabase, data: Option<&[u8]>) -> String {
    let Some(data) = data else {
        return "None".into();
    };
    let mut client = postgres::Client::connect(&db.dsn(), postgres::NoTls).unwrap();
    client
        .query_one("SELECT md5($1::bytea)", &[&data])
        .unwrap()
        .get(0)
}

/// Rewrites the root's current record under a new tid: a commit on top.
fn commit_root_again(s: &PostgresStorage) -> Tid {
    let (data, serial) = s.load(Oid::ROOT).unwrap();
    let t = s
        .tpc_begin(&TransactionMetaData::default(), BeginOptions::default())
        .unwrap();
    s.store(t, Oid::ROOT, serial, &data).unwrap();
    s.tpc_vote(t).unwrap();
    let tid = s.tpc_finish(t, &mut |_| {}).unwrap();
    assert!(tid > serial);
    tid
}

/// Every transaction's tid and its records' oids and md5s, from our
/// iterator, in the peer's `txn`/`rec` format.
fn our_dump(db: &TestDatabase, s: &PostgresStorage) -> Vec<String> {
    let mut out = Vec::new();
    match s.history_mode() {
        HistoryMode::Preserving => {
            for txn in s.as_iteration().unwrap().iterator(None, None).unwrap() {
                let txn = txn.unwrap();
                let hex = |b: &[u8]| {
                    if b.is_empty() {
                        "-".to_owned()
                    } else {
                        b.iter().map(|x| format!("{x:02x}")).collect()
                    }
                };
                out.push(format!(
                    "txn {} {} {}",
                    txn.tid.0,
                    hex(&txn.meta.user),
                    hex(&txn.meta.description)
                ));
                for r in &txn.records {
                    // Each revision loads by its serial too.
                    if let Some(data) = &r.data {
                        assert_eq!(&s.load_serial(r.oid, r.tid).unwrap(), data);
                    }
                    out.push(format!("rec {} {}", r.oid.0, md5(db, r.data.as_deref())));
                }
            }
        }
        HistoryMode::Free => {
            let records = s.as_record_iteration().unwrap();
            let mut next = None;
            for _ in 0..10_000 {
                let Some(r) = records.record_iternext(next).unwrap() else {
                    break;
                };
                out.push(format!(
                    "cur {} {} {}",
                    r.oid.0,
                    r.tid.0,
                    md5(db, Some(&r.data))
                ));
                match r.next {
                    Some(n) => next = Some(n),
                    None => break,
                }
            }
        }
    }
    out
}

/// The peer's dump without its `last` and `root` lines.
fn their_records(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| !l.starts_with("last ") && !l.starts_with("root "))
        .cloned()
        .collect()
}

fn created_here_used_by_relstorage(mode: HistoryMode) {
    let db = TestDatabase::create("rs created here");
    let s = open(&db, mode);
    let py = peer(&db, mode, &["commit", "from_python", "1"]);
    let py_tid = Tid(field(&py, "tid").parse().unwrap());
    let (data, serial) = s.load(Oid::ROOT).unwrap();
    assert_eq!(serial, py_tid);
    let ours = commit_root_again(&s);
    let loaded = peer(&db, mode, &["load", "0"]);
    assert_eq!(
        field(&loaded, "load"),
        format!("{} {}", ours.0, md5(&db, Some(&data)))
    );
    let py = peer(&db, mode, &["commit", "again", "2"]);
    assert!(Tid(field(&py, "tid").parse().unwrap()) > ours);
    let dump = peer(&db, mode, &["dump"]);
    assert_eq!(
        field(&dump, "root"),
        "[('again', '2'), ('from_python', '1')]"
    );
    assert_eq!(our_dump(&db, &s), their_records(&dump));
}

fn created_by_relstorage_served_here(mode: HistoryMode) {
    let db = TestDatabase::create("rs created there");
    peer(&db, mode, &["commit", "a", "1"]);
    peer(&db, mode, &["commit", "b", "2"]);
    let other = match mode {
        HistoryMode::Preserving => HistoryMode::Free,
        HistoryMode::Free => HistoryMode::Preserving,
    };
    let mut wrong = PostgresOptions::new(db.dsn());
    wrong.history = other;
    assert!(
        PostgresStorage::open(wrong).is_err(),
        "the other mode is refused"
    );
    let s = open(&db, mode);
    let dump = peer(&db, mode, &["dump"]);
    assert_eq!(our_dump(&db, &s), their_records(&dump));
    let (data, _) = s.load(Oid::ROOT).unwrap();
    let ours = commit_root_again(&s);
    let loaded = peer(&db, mode, &["load", "0"]);
    assert_eq!(
        field(&loaded, "load"),
        format!("{} {}", ours.0, md5(&db, Some(&data)))
    );
    let dump = peer(&db, mode, &["dump"]);
    assert_eq!(field(&dump, "last"), ours.0.to_string());
    assert_eq!(our_dump(&db, &s), their_records(&dump));
}

#[test]
fn history_preserving_database_created_here_is_used_by_relstorage() {
    created_here_used_by_relstorage(HistoryMode::Preserving);
}

#[test]
fn history_free_database_created_here_is_used_by_relstorage() {
    created_here_used_by_relstorage(HistoryMode::Free);
}

#[test]
fn history_preserving_database_created_by_relstorage_is_served() {
    created_by_relstorage_served_here(HistoryMode::Preserving);
}

#[test]
fn history_free_database_created_by_relstorage_is_served() {
    created_by_relstorage_served_here(HistoryMode::Free);
}

#[test]
fn a_relstorage_commit_between_our_store_and_vote_is_our_one_conflict() {
    let mode = HistoryMode::Preserving;
    let db = TestDatabase::create("rs conflict vote");
    peer(&db, mode, &["commit", "a", "1"]);
    let s = open(&db, mode);
    let (data, serial) = s.load(Oid::ROOT).unwrap();
    let t = s
        .tpc_begin(&TransactionMetaData::default(), BeginOptions::default())
        .unwrap();
    s.store(t, Oid::ROOT, serial, &data).unwrap();
    let py = peer(&db, mode, &["commit", "b", "2"]);
    let py_tid = Tid(field(&py, "tid").parse().unwrap());
    match s.tpc_vote(t) {
        Err(Error::Conflict {
            oid,
            committed,
            old,
        }) => assert_eq!((oid, committed, old), (Oid::ROOT, py_tid, serial)),
        other => panic!("expected one conflict, got {other:?}"),
    }
    s.tpc_abort(t);
    assert_eq!(s.load(Oid::ROOT).unwrap().1, py_tid);
}

#[test]
fn relstorage_waits_for_our_locks_and_gets_the_one_conflict() {
    let mode = HistoryMode::Preserving;
    let db = TestDatabase::create("rs conflict lock");
    peer(&db, mode, &["commit", "a", "1"]);
    let s = open(&db, mode);
    let dsn = db.dsn();
    let mut child = Command::new(python_relstorage())
        .arg(script("relstorage/peer.py"))
        .args(["race", &dsn, "hp", "b", "2"])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the RelStorage peer");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    // We hold the root's lock from our vote on.
    let (data, serial) = s.load(Oid::ROOT).unwrap();
    let t = s
        .tpc_begin(&TransactionMetaData::default(), BeginOptions::default())
        .unwrap();
    s.store(t, Oid::ROOT, serial, &data).unwrap();
    s.tpc_vote(t).unwrap();
    writeln!(child.stdin.take().unwrap()).unwrap();
    // The peer's vote waits on the root's advisory lock.
    let mut watcher = postgres::Client::connect(&dsn, postgres::NoTls).unwrap();
    let waiting = wait_until(PEER_LIMIT, || {
        let n: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event = 'advisory'",
                &[],
            )
            .unwrap()
            .get(0);
        n > 0
    });
    assert!(waiting, "the RelStorage commit never waited on our lock");
    let ours = s.tpc_finish(t, &mut |_| {}).unwrap();
    let answer = lines.next().unwrap().unwrap();
    let finished = wait_until(PEER_LIMIT, || child.try_wait().unwrap().is_some());
    assert!(finished, "the peer did not exit");
    assert_eq!(answer, "ConflictError");
    assert_eq!(s.load(Oid::ROOT).unwrap().1, ours);
}
