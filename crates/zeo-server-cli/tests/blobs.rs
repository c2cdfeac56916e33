//! Blobs served to stock ZEO 6 clients (Python ZODB `Blob`s through
//! `ClientStorage`), with non-shared blob caches and with the server's own
//! blob directory shared; the server's files opened by Python's
//! `FileStorage(blob_dir=…)` afterwards.

mod common;

use std::path::Path;

use common::*;

/// Client A writes a 20 MB blob, client B (its own cache, or the shared
/// directory) reads it byte-exact, then A changes it and B sees the change.
const ROUND_TRIP: &str = r#"
import hashlib, os, sys, transaction, ZODB, ZEO.ClientStorage
from ZODB.blob import Blob

port, mode, blob_dir = int(sys.argv[1]), sys.argv[2], sys.argv[3]

def open_db(name):
    if mode == 'shared':
        kw = dict(blob_dir=blob_dir, shared_blob_dir=True)
    else:
        kw = dict(blob_dir=os.path.join(os.getcwd(), 'cache-' + name))
    cs = ZEO.ClientStorage.ClientStorage(('127.0.0.1', port), wait_timeout=20,
                                         server_sync=True, **kw)
    return ZODB.DB(cs)

def digest_of(blob):
    h = hashlib.sha256()
    with blob.open('r') as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                break
            h.update(chunk)
    return h.hexdigest()

db1, db2 = open_db('a'), open_db('b')
tm1, tm2 = transaction.TransactionManager(), transaction.TransactionManager()
c1, c2 = db1.open(tm1), db2.open(tm2)

data = os.urandom(20 * 1000 * 1000 + 17)
want = hashlib.sha256(data).hexdigest()
b = Blob()
with b.open('w') as f:
    f.write(data)
c1.root()['blob'] = b
tm1.commit()

tm2.begin()
got = digest_of(c2.root()['blob'])
assert got == want, (got, want)

with c1.root()['blob'].open('w') as f:
    f.write(b'second version')
tm1.commit()
tm2.begin()
with c2.root()['blob'].open('r') as f:
    assert f.read() == b'second version'

# Aborted: the server keeps no file of it.
with c1.root()['blob'].open('w') as f:
    f.write(b'never committed')
tm1.abort()

print(c1.root()['blob']._p_oid.hex(), c1.root()['blob']._p_serial.hex(), want)
db1.close(); db2.close()
print("OK")
"#;

/// Python's FileStorage opens what the server wrote and reads the blob.
const PYTHON_OPENS: &str = r#"
import sys, ZODB.FileStorage, ZODB.utils
oid, serial = bytes.fromhex(sys.argv[1]), bytes.fromhex(sys.argv[2])
fs = ZODB.FileStorage.FileStorage('Data.fs', blob_dir='blobs', read_only=True)
with open(fs.loadBlob(oid, serial), 'rb') as f:
    assert f.read() == b'second version'
print(fs.fshelper.layout_name)
fs.close()
print("OK")
"#;

fn config(dir: &Path) -> std::path::PathBuf {
    let conf = dir.join("zeo.conf");
    std::fs::write(
        &conf,
        "<zeo>\n  address 127.0.0.1:0\n</zeo>\n\
         <filestorage>\n  path Data.fs\n  blob-dir blobs\n</filestorage>\n",
    )
    .unwrap();
    conf
}

fn run(dir: &Path, name: &str, script: &str, args: &[&str]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, script).unwrap();
    let out = zeo_testkit::run_python(&zeo_testkit::python6(), &path, args, dir);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.contains("OK"),
        "{name}: stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Every file under `dir` but the layout marker, as relative paths.
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    for _ in 0..100_000 {
        let Some(d) = stack.pop() else { break };
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.retain(|p| p != ".layout");
    out.sort();
    out
}

fn round_trip(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let conf = config(dir.path());
    let server = ServerProcess::start(dir.path(), &["-C", conf.to_str().unwrap()]);
    let port = server.port().to_string();
    let blob_dir = dir.path().join("blobs");
    let stdout = run(
        dir.path(),
        "round_trip.py",
        ROUND_TRIP,
        &[&port, mode, blob_dir.to_str().unwrap()],
    );
    let ids: Vec<&str> = stdout.lines().next().unwrap().split(' ').collect();
    server.signal(libc::SIGTERM);
    let (status, stderr) = server.wait();
    assert!(status.success(), "{stderr}");

    // Two committed revisions of the blob, nothing uploaded left behind.
    let left = files(&blob_dir);
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.iter().all(|p| p.ends_with(".blob")), "{left:?}");
    let out = run(
        dir.path(),
        "python_opens.py",
        PYTHON_OPENS,
        &[ids[0], ids[1]],
    );
    assert!(out.starts_with("bushy"), "{out}");
}

#[test]
fn zeo6_clients_with_their_own_caches_share_a_20mb_blob() {
    round_trip("cache");
}

#[test]
fn zeo6_clients_sharing_the_server_blob_dir() {
    round_trip("shared");
}
