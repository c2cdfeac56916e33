//! Blobs served to stock ZEO 6 clients (Python ZODB `Blob`s through
//! `ClientStorage`), with non-shared blob caches and with the server's own
//! blob directory shared; the server's files opened by Python's
//! `FileStorage(blob_dir=…)` afterwards; undo and pack; a 100 MB blob up
//! and down within bounded server memory, a client killed in the middle of
//! an upload, and the server killed between a blob transaction's vote and
//! its finish.

mod common;

use std::path::Path;
use std::time::Duration;

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
import os, sys, transaction, ZODB, ZEO.ClientStorage
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
# Packed as of the last commit's own time (a millisecond past it), not the
# wall clock, which may not have moved past that tid yet.
from ZODB.TimeStamp import TimeStamp
db.pack(TimeStamp(db.lastTransaction()).timeTime() + 0.001)
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

fn start(dir: &Path) -> ServerProcess {
    let conf = config(dir);
    ServerProcess::start(dir, &["-C", conf.to_str().unwrap()])
}

fn tmp_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("blobs/tmp")).map_or(0, |d| d.count())
}

/// One client writes 100 MB, another (its own cache) reads it back.
const BIG: &str = r#"
import hashlib, os, sys, transaction, ZODB, ZEO.ClientStorage
from ZODB.blob import Blob
port = int(sys.argv[1])
def open_db(cache):
    return ZODB.DB(ZEO.ClientStorage.ClientStorage(
        ('127.0.0.1', port), wait_timeout=30, server_sync=True, blob_dir=cache))
want = hashlib.sha256()
block = os.urandom(1 << 20)
db = open_db('cache-a')
with db.transaction() as conn:
    b = Blob()
    with b.open('w') as f:
        for i in range(100):
            chunk = bytes([i]) + block[1:]
            f.write(chunk)
            want.update(chunk)
    conn.root()['big'] = b
db.close()
db = open_db('cache-b')
with db.transaction() as conn:
    got = hashlib.sha256()
    with conn.root()['big'].open('r') as f:
        while True:
            data = f.read(1 << 20)
            if not data:
                break
            got.update(data)
    with conn.root()['big'].open('r') as f:
        assert f.seek(0, 2) == 100 << 20
assert got.hexdigest() == want.hexdigest()
db.close()
print("OK")
"#;

#[test]
fn a_100mb_blob_goes_up_and_down_in_bounded_server_memory() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let pid = Some(server.child.id());
    let before = zeo_testkit::proc_status_kib(pid, "VmHWM");
    run(dir.path(), "big.py", BIG, &[&server.port().to_string()]);
    let after = zeo_testkit::proc_status_kib(pid, "VmHWM");
    let blob_dir = dir.path().join("blobs");
    let stored: u64 = files(&blob_dir)
        .iter()
        .map(|f| std::fs::metadata(blob_dir.join(f)).unwrap().len())
        .sum();
    assert_eq!(stored, 100 << 20, "the server does not hold the whole blob");
    let growth_mib = (after.saturating_sub(before)) as f64 / 1024.0;
    eprintln!(
        "server VmHWM {before} KiB -> {after} KiB (+{growth_mib:.1} MiB) for a 100 MiB blob up and down"
    );
    assert!(
        growth_mib < 64.0,
        "server peak memory grew {growth_mib:.1} MiB"
    );
    server.signal(libc::SIGTERM);
    let (status, stderr) = server.wait();
    assert!(status.success(), "{stderr}");
}

/// Starts an upload by hand, makes sure the server wrote it, and dies.
const KILLED_MID_UPLOAD: &str = r#"
import os, signal, sys, ZEO.ClientStorage
from ZODB.Connection import TransactionMetaData
cs = ZEO.ClientStorage.ClientStorage(('127.0.0.1', int(sys.argv[1])), wait_timeout=30)
t = TransactionMetaData()
cs.tpc_begin(t)
cs._async('storeBlobStart')
for _ in range(20):
    cs._async('storeBlobChunk', b'x' * 59000)
cs._call('lastTransaction')  # after the chunks: the server has written them
print(len(os.listdir(os.path.join('blobs', 'tmp'))), "OK", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"#;

#[test]
fn a_client_killed_mid_upload_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let port = server.port().to_string();
    let path = dir.path().join("killed.py");
    std::fs::write(&path, KILLED_MID_UPLOAD).unwrap();
    let out = zeo_testkit::run_python(&zeo_testkit::python6(), &path, &[&port], dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("1 OK"),
        "the upload was not on disk: {stdout}"
    );
    assert!(
        zeo_testkit::wait_until(Duration::from_secs(10), || tmp_files(dir.path()) == 0),
        "the killed client's upload is still in blobs/tmp"
    );
    server.signal(libc::SIGTERM);
    let (status, stderr) = server.wait();
    assert!(status.success(), "{stderr}");
}

/// Commits blob A, then votes blob B and kills the server before finish.
const KILL_AFTER_VOTE: &str = r#"
import os, signal, sys, transaction, ZODB, ZEO.ClientStorage
from ZODB.blob import Blob
from ZODB.Connection import TransactionMetaData
port, server_pid = int(sys.argv[1]), int(sys.argv[2])
cs = ZEO.ClientStorage.ClientStorage(('127.0.0.1', port), wait_timeout=30, blob_dir='cache')
db = ZODB.DB(cs)
with db.transaction() as conn:
    conn.root()['a'] = Blob(b'acknowledged' * 10000)
oid = cs.new_oid()
with open('b.blob', 'wb') as f:
    f.write(b'never finished')
t = TransactionMetaData()
cs.tpc_begin(t)
cs.storeBlob(oid, b'\0' * 8, b'not a pickle', 'b.blob', '', t)
cs.tpc_vote(t)
os.kill(server_pid, signal.SIGKILL)
print(oid.hex(), "OK", flush=True)
os._exit(0)
"#;

const READ_AFTER_RESTART: &str = r#"
import sys, ZODB, ZEO.ClientStorage, ZODB.POSException
cs = ZEO.ClientStorage.ClientStorage(('127.0.0.1', int(sys.argv[1])), wait_timeout=30,
                                     blob_dir='cache2')
db = ZODB.DB(cs)
conn = db.open()
with conn.root()['a'].open('r') as f:
    assert f.read() == b'acknowledged' * 10000
try:
    cs.load(bytes.fromhex(sys.argv[2]))
    raise SystemExit("the unfinished transaction survived")
except ZODB.POSException.POSKeyError:
    pass
db.close()
print("OK")
"#;

#[test]
fn server_killed_between_vote_and_finish_keeps_acknowledged_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let port = server.port().to_string();
    let pid = server.child.id().to_string();
    let out = run(
        dir.path(),
        "kill_after_vote.py",
        KILL_AFTER_VOTE,
        &[&port, &pid],
    );
    let unfinished = out.split(' ').next().unwrap().to_owned();
    let (status, _) = server.wait();
    assert!(!status.success(), "the server was not killed");
    // The voted blob was moved into place and listed in the journal.
    let blob_files = |dir: &Path| {
        let mut found = files(&dir.join("blobs"));
        found.retain(|f| f.ends_with(".blob"));
        found
    };
    assert_eq!(
        blob_files(dir.path()).len(),
        2,
        "{:?}",
        files(&dir.path().join("blobs"))
    );
    assert!(dir.path().join("blobs/.placed").exists());

    // The restart removed the file of the transaction that never finished.
    let server = start(dir.path());
    let left = blob_files(dir.path());
    assert_eq!(left.len(), 1, "{left:?}");
    let oid_dir = unfinished
        .as_bytes()
        .chunks(2)
        .map(|b| format!("0x{}", std::str::from_utf8(b).unwrap()));
    let oid_dir: Vec<String> = oid_dir.collect();
    assert!(!left[0].starts_with(&oid_dir.join("/")), "{left:?}");
    assert!(!dir.path().join("blobs/.placed").exists());
    let port = server.port().to_string();
    run(
        dir.path(),
        "read_after_restart.py",
        READ_AFTER_RESTART,
        &[&port, &unfinished],
    );
    server.signal(libc::SIGTERM);
    let (status, stderr) = server.wait();
    assert!(status.success(), "{stderr}");
    let check = zeo_server(dir.path(), &["check", "Data.fs", "--blob-dir", "blobs"]);
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{stdout}");
    assert!(stdout.contains(" 0 missing files"), "{stdout}");
}

#[test]
fn a_blobstorage_around_a_mappingstorage_serves_blobs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("zeo.conf"),
        "<zeo>\n  address 127.0.0.1:0\n</zeo>\n\
         <blobstorage>\n  blob-dir blobs\n  <mappingstorage>\n  </mappingstorage>\n\
         </blobstorage>\n",
    )
    .unwrap();
    let server = ServerProcess::start(dir.path(), &["-C", "zeo.conf"]);
    let port = server.port().to_string();
    let blob_dir = dir.path().join("blobs");
    run(
        dir.path(),
        "round_trip.py",
        ROUND_TRIP,
        &[&port, "cache", blob_dir.to_str().unwrap()],
    );
    assert_eq!(files(&blob_dir).len(), 2, "{:?}", files(&blob_dir));
    server.signal(libc::SIGTERM);
    let (status, stderr) = server.wait();
    assert!(status.success(), "{stderr}");
}
