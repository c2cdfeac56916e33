//! Several writers over one database: storages see each other's commits
//! (`SharedCommits`), two zeo-servers tell their ZEO clients of each
//! other's commits (and conflict exactly once), and RelStorage
//! applications beside them take part.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use zeo_server::{BackgroundServer, ListenAddress, ServerBuilder, ServerSettings};
use zeo_storage::testing::check_shared_commits;
use zeo_storage_postgres::{HistoryMode, PostgresOptions, PostgresStorage};
use zeo_testkit::postgres::TestDatabase;
use zeo_testkit::{python6, python_relstorage, run_python_with_timeout, stdout_of};

fn open(db: &TestDatabase, mode: HistoryMode) -> PostgresStorage {
    let mut o = PostgresOptions::new(db.dsn());
    o.history = mode;
    PostgresStorage::open(o).expect("open the storage")
}

#[test]
fn two_storages_see_each_others_commits_history_preserving() {
    let db = TestDatabase::create("shared_hp");
    let (a, b) = (
        open(&db, HistoryMode::Preserving),
        open(&db, HistoryMode::Preserving),
    );
    check_shared_commits(&a, &b);
    check_shared_commits(&b, &a);
}

#[test]
fn two_storages_see_each_others_commits_history_free() {
    let db = TestDatabase::create("shared_hf");
    let (a, b) = (open(&db, HistoryMode::Free), open(&db, HistoryMode::Free));
    assert!(!zeo_storage::Storage::as_shared_commits(&b)
        .unwrap()
        .keeps_intermediate_tids());
    check_shared_commits(&a, &b);
}

fn serve(db: &TestDatabase) -> BackgroundServer {
    let storage = Arc::new(open(db, HistoryMode::Preserving));
    let server = ServerBuilder::new(ServerSettings::default())
        .storage("1", storage)
        .build()
        .unwrap();
    server.bind(&ListenAddress::localhost(0)).unwrap();
    server.start_background().unwrap()
}

/// ZEO 6 clients of servers A and B: 20 commits through A each seen by
/// B's client; then what RelStorage committed seen by both; then a commit
/// through A. Prints one line per step.
const ZEO_CLIENTS: &str = r#"
import sys, time, transaction, ZODB, ZEO.ClientStorage

def open_db(port):
    cs = ZEO.ClientStorage.ClientStorage(('127.0.0.1', int(port)), wait_timeout=30, server_sync=True)
    return ZODB.DB(cs)

step = sys.argv[3]
db_a, db_b = open_db(sys.argv[1]), open_db(sys.argv[2])
tm_a, tm_b = transaction.TransactionManager(), transaction.TransactionManager()
c_a, c_b = db_a.open(tm_a), db_b.open(tm_b)

def shows(tm, conn, key, value):
    # Each begin() is a round trip to the server (server_sync); bounded
    # by count, it waits for the server to announce the commit.
    for _ in range(100000):
        tm.begin()
        if conn.root().get(key) == value:
            return True
    return False

if step == "zeo":
    delays = []
    for i in range(20):
        started = time.monotonic()
        c_a.root()['x'] = i
        tm_a.commit()
        assert shows(tm_b, c_b, 'x', i), "B never showed %d" % i
        delays.append(time.monotonic() - started)
    delays.sort()
    print("delay p50 %.2f ms p99 %.2f ms" % (delays[10] * 1e3, delays[19] * 1e3))
    print("zeo OK")
elif step == "conflict":
    # Both change the root from the same revision: exactly one commits.
    from ZODB.POSException import ConflictError
    tm_a.begin(); tm_b.begin()
    assert c_a.root()._p_serial == c_b.root()._p_serial
    c_a.root()['c'] = 'a'
    c_b.root()['c'] = 'b'
    outcomes = []
    for tm in (tm_a, tm_b):
        try:
            tm.commit()
            outcomes.append("committed")
        except ConflictError:
            tm.abort()
            outcomes.append("ConflictError")
    print("conflict", " ".join(outcomes))
else:
    assert shows(tm_a, c_a, 'rs', 'from relstorage'), "A never showed RelStorage's commit"
    assert shows(tm_b, c_b, 'rs', 'from relstorage'), "B never showed RelStorage's commit"
    c_a.root()['z'] = 'from zeo'
    tm_a.commit()
    print("relstorage seen OK")
db_a.close(); db_b.close()
"#;

/// A RelStorage application: commits, then at its next transaction
/// reports what ZEO committed meanwhile.
const RELSTORAGE_CLIENT: &str = r#"
import sys, transaction, ZODB
from relstorage.adapters.postgresql import PostgreSQLAdapter
from relstorage.options import Options
from relstorage.storage import RelStorage

options = Options(keep_history=True)
db = ZODB.DB(RelStorage(PostgreSQLAdapter(dsn=sys.argv[1], options=options), options=options))
conn = db.open()
root = conn.root()
root['rs'] = 'from relstorage'
transaction.commit()
print("committed", flush=True)
sys.stdin.readline()
transaction.begin()
print("z", root.get('z'), flush=True)
conn.close(); db.close()
"#;

const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn zeo_clients_of_two_servers_and_a_relstorage_application_see_each_other() {
    let db = TestDatabase::create("shared_servers");
    // The schema exists before the servers and RelStorage race to create it.
    drop(open(&db, HistoryMode::Preserving));
    let (a, b) = (serve(&db), serve(&db));
    let dir = tempfile::tempdir().unwrap();
    let zeo = dir.path().join("zeo_clients.py");
    std::fs::write(&zeo, ZEO_CLIENTS).unwrap();
    let ports = [a.port().unwrap().to_string(), b.port().unwrap().to_string()];
    let run_zeo = |step: &str| {
        let args = [ports[0].as_str(), ports[1].as_str(), step];
        let out = run_python_with_timeout(&python6(), &zeo, &args, dir.path(), LIMIT);
        stdout_of(&out, &format!("zeo_clients.py {step}"))
    };
    let out = run_zeo("zeo");
    assert!(out.contains("zeo OK"), "{out}");
    // A figure for the record: commit on A to B's client showing it, over
    // 20 commits, through Python clients.
    eprintln!(
        "{}",
        out.lines().find(|l| l.starts_with("delay")).unwrap_or("")
    );

    let rs = dir.path().join("relstorage_client.py");
    std::fs::write(&rs, RELSTORAGE_CLIENT).unwrap();
    let mut child = Command::new(python_relstorage())
        .arg(&rs)
        .arg(db.dsn())
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert_eq!(first, "committed");
    let out = run_zeo("relstorage");
    assert!(out.contains("relstorage seen OK"), "{out}");
    writeln!(child.stdin.take().unwrap()).unwrap();
    let seen = lines.next().unwrap().unwrap();
    assert_eq!(
        seen, "z from zeo",
        "RelStorage's next transaction shows ZEO's commit"
    );
    assert!(child.wait().unwrap().success());
    let out = run_zeo("conflict");
    assert!(
        out.contains("conflict committed ConflictError"),
        "one commit through A, one ConflictError through B: {out}"
    );
    a.shutdown().unwrap();
    b.shutdown().unwrap();
}
