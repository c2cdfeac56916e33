//! Real ZEO 5 and 6 clients (Python ZODB) against the `zeo-server` binary:
//! commits a PersistentMapping through one connection and reads it back
//! through a second client, which sees the invalidation.

mod common;

use common::*;

const SCRIPT: &str = r#"
import sys, transaction, ZODB, ZEO.ClientStorage
from persistent.mapping import PersistentMapping

port = int(sys.argv[1])
# server_sync: a transaction begins with a round trip, so invalidations
# sent before it (another connection's commit) are seen.
def open_db():
    cs = ZEO.ClientStorage.ClientStorage(('127.0.0.1', port), wait_timeout=20, server_sync=True)
    return ZODB.DB(cs)

db1, db2 = open_db(), open_db()
tm1, tm2 = transaction.TransactionManager(), transaction.TransactionManager()
c1, c2 = db1.open(tm1), db2.open(tm2)
root1 = c1.root()
root1['m'] = PersistentMapping(answer=42)
tm1.commit()
tm2.begin()
r2 = c2.root()
assert r2['m']['answer'] == 42, dict(r2['m'])
root1['m']['answer'] = 43
tm1.commit()
tm2.begin()
assert c2.root()['m']['answer'] == 43, "invalidation not seen"
# a conflict resolved by the client: both change the same object
import ZODB.POSException
c2.root()['m']['other'] = 1
root1['m']['answer'] = 44
tm1.commit()
try:
    tm2.commit()
    print("second commit unexpectedly succeeded", file=sys.stderr)
    sys.exit(1)
except ZODB.POSException.ConflictError:
    tm2.abort()
print(db1.storage.lastTransaction().hex(), len(db1.storage))
db1.close(); db2.close()
print("OK")
"#;

#[test]
fn zodb6_client_commits_and_reads_back() {
    smoke(&zeo_testkit::python6());
}

#[test]
fn zeo5_client_commits_and_reads_back() {
    smoke(&zeo_testkit::python5());
}

fn smoke(python: &std::path::Path) {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &["-a", "127.0.0.1:0", "-f", "Data.fs"]);
    let script = dir.path().join("smoke.py");
    std::fs::write(&script, SCRIPT).unwrap();
    let port = server.port().to_string();
    let out = zeo_testkit::run_python(python, &script, &[port.as_str()], dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("OK"),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.signal(libc::SIGTERM);
    let (status, stderr) = server.wait();
    assert!(status.success(), "{stderr}");
    // The file the server wrote is sound.
    let check = std::process::Command::new(binary())
        .args(["check", "Data.fs"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
}
