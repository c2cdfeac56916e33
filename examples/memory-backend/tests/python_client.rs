//! The example backend served by `zeo-server` through the embedding API to
//! a real ZODB 6 / ZEO 6 client: two connections commit, see each other's
//! invalidations, and hit a conflict.

use std::sync::Arc;

use zeo_example_backend::CurrentOnly;
use zeo_server::{ListenAddress, ServerBuilder, ServerSettings};
use zeo_storage::{Oid, Storage};

const SCRIPT: &str = r#"
import sys, transaction, ZODB, ZEO.ClientStorage, ZODB.POSException
from persistent.mapping import PersistentMapping

port = int(sys.argv[1])
def open_db():
    cs = ZEO.ClientStorage.ClientStorage(('127.0.0.1', port), wait_timeout=20, server_sync=True)
    return ZODB.DB(cs)

db1, db2 = open_db(), open_db()
assert not db1.storage.supportsUndo()
tm1, tm2 = transaction.TransactionManager(), transaction.TransactionManager()
c1, c2 = db1.open(tm1), db2.open(tm2)
c1.root()['m'] = PersistentMapping(answer=42)
tm1.commit()
tm2.begin()
assert c2.root()['m']['answer'] == 42, dict(c2.root()['m'])
c1.root()['m']['answer'] = 43
tm1.commit()
tm2.begin()
assert c2.root()['m']['answer'] == 43, "invalidation not seen"
c2.root()['m']['other'] = 1
c1.root()['m']['answer'] = 44
tm1.commit()
try:
    tm2.commit()
    sys.exit("second commit unexpectedly succeeded")
except ZODB.POSException.ConflictError:
    tm2.abort()
db1.close(); db2.close()
print("OK")
"#;

#[test]
fn a_python_zeo_client_commits_and_reads_back() {
    let storage = Arc::new(CurrentOnly::new("memory"));
    let server = ServerBuilder::new(ServerSettings::default())
        .storage("1", storage.clone())
        .build()
        .unwrap();
    server.bind(&ListenAddress::localhost(0)).unwrap();
    let server = server.start_background().unwrap();
    let port = server.port().unwrap().to_string();

    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("client.py");
    std::fs::write(&script, SCRIPT).unwrap();
    let python = zeo_testkit::python6();
    let out = zeo_testkit::run_python(&python, &script, &[port.as_str()], dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("OK"),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The root and the mapping.
    assert_eq!(storage.len(), 2);
    assert!(storage.load(Oid::ROOT).is_ok());
    server.shutdown().unwrap();
    // Shutting down closed the storage.
    assert!(matches!(
        storage.load(Oid::ROOT),
        Err(zeo_storage::Error::Closed)
    ));
}
