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

/// Undo of a blob change and pack GC of an unreachable blob, through a
/// stock client.
const UNDO_AND_PACK: &str = r#"
import os, sys, time, transaction, ZODB, ZEO.ClientStorage
from ZODB.blob import Blob

port = int(sys.argv[1])
cs = ZEO.ClientStorage.ClientStorage(('127.0.0.1', port), wait_timeout=20,
                                     server_sync=True, blob_dir='cache')
db = ZODB.DB(cs)
tm = transaction.TransactionManager()
conn = db.open(tm)
root = conn.root()

def read(name):
    with root[name].open('r') as f:
        return f.read()

root['a'] = Blob(b'first')
tm.commit()
with root['a'].open('w') as f:
    f.write(b'second')
tm.commit()
assert read('a') == b'second'
db.undo(db.undoLog(0, 1)[0]['id'], tm.get())
tm.commit()
tm.begin()
assert read('a') == b'first', read('a')

root['b'] = Blob(b'unreachable soon')
tm.commit()
gone = root['b']._p_oid
del root['b']
tm.commit()
time.sleep(0.01)  # the pack time must follow the last commit's tid
db.pack(time.time())
tm.begin()
assert read('a') == b'first'
print(gone.hex())
db.close()
print("OK")
"#;

/// Python writes a blob storage of its own.
const PYTHON_WRITES: &str = r#"
import transaction, ZODB, ZODB.FileStorage
from ZODB.blob import Blob
fs = ZODB.FileStorage.FileStorage('Data.fs', blob_dir='blobs')
db = ZODB.DB(fs)
with db.transaction() as conn:
    conn.root()['doc'] = Blob(b'written by python' * 1000)
db.close()
print("OK")
"#;

/// A stock client reads what Python wrote, through the server.
const CLIENT_READS: &str = r#"
import sys, ZODB, ZEO.ClientStorage
cs = ZEO.ClientStorage.ClientStorage(('127.0.0.1', int(sys.argv[1])), wait_timeout=20,
                                     blob_dir='cache')
db = ZODB.DB(cs)
conn = db.open()
with conn.root()['doc'].open('r') as f:
    assert f.read() == b'written by python' * 1000
db.close()
print("OK")
"#;

fn zeo_server(dir: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(binary())
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

#[test]
fn zeo6_client_undoes_a_blob_change_and_pack_collects_an_unreachable_blob() {
    let dir = tempfile::tempdir().unwrap();
    let conf = config(dir.path());
    let server = ServerProcess::start(dir.path(), &["-C", conf.to_str().unwrap()]);
    let port = server.port().to_string();
    let out = run(dir.path(), "undo_and_pack.py", UNDO_AND_PACK, &[&port]);
    let gone = u64::from_str_radix(out.lines().next().unwrap(), 16).unwrap();
    server.signal(libc::SIGTERM);
    let (status, stderr) = server.wait();
    assert!(status.success(), "{stderr}");

    let layout = zeo_storage::blobdir::Layout::Bushy;
    let gone_dir = layout.oid_path(zeo_storage::Oid(gone));
    assert!(
        !dir.path().join("blobs").join(&gone_dir).exists(),
        "the unreachable blob survived the pack"
    );
    assert!(
        dir.path().join("blobs.old").join(&gone_dir).exists(),
        "pack-keep-old (the default) keeps it in blobs.old"
    );
    let check = zeo_server(dir.path(), &["check", "Data.fs", "--blob-dir", "blobs"]);
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{stdout}");
    assert!(stdout.contains(" 0 missing files"), "{stdout}");
}

#[test]
fn a_python_written_blob_storage_is_served() {
    let dir = tempfile::tempdir().unwrap();
    run(
        dir.path(),
        "python_writes.py",
        PYTHON_WRITES,
        &[] as &[&str],
    );
    // Served through the <blobstorage> wrapper this time.
    let conf = dir.path().join("zeo.conf");
    std::fs::write(
        &conf,
        "<zeo>\n  address 127.0.0.1:0\n</zeo>\n\
         <blobstorage>\n  blob-dir blobs\n  <filestorage>\n    path Data.fs\n  </filestorage>\n\
         </blobstorage>\n",
    )
    .unwrap();
    let server = ServerProcess::start(dir.path(), &["-C", conf.to_str().unwrap()]);
    let port = server.port().to_string();
    run(dir.path(), "client_reads.py", CLIENT_READS, &[&port]);
    server.signal(libc::SIGTERM);
    let (status, stderr) = server.wait();
    assert!(status.success(), "{stderr}");
}
