//! `zeo-client blob get` against a stock Python ZEO 6 server (`runzeo`
//! with `<filestorage>` and `blob-dir`).
//!
//! Needs the venv `cargo xtask test` creates; fails (never skips) without it.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use zeo_client::{ClientOptions, ClientStorage, Layout, ServerAddress};
use zeo_storage::{BeginOptions, BlobSource, Blobs, Oid, Storage, Tid, TransactionMetaData};
use zeo_testkit::{free_port, python6, wait_until};

/// `runzeo`, killed when dropped.
struct Runzeo(Child);

impl Drop for Runzeo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn runzeo(dir: &Path, port: u16) -> Runzeo {
    zeo_testkit::write_runzeo_blob_config(dir, port);
    let child = Command::new(python6().parent().unwrap().join("runzeo"))
        .arg("-C")
        .arg(dir.join("zeo.conf"))
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start runzeo: run `cargo xtask test` to create the Python venvs");
    let server = Runzeo(child);
    assert!(
        wait_until(Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        }),
        "runzeo did not start listening"
    );
    server
}

fn zeo_client(port: u16, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zeo-client"))
        .args(["--server", &format!("127.0.0.1:{port}"), "--timeout", "30"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn commit_blob(storage: &ClientStorage, oid: Oid, serial: Tid, data: &[u8]) -> Tid {
    let txn = storage
        .tpc_begin(&TransactionMetaData::default(), BeginOptions::default())
        .unwrap();
    let source = BlobSource::Stream(Box::new(std::io::Cursor::new(data.to_vec())));
    storage
        .store_blob(txn, oid, serial, b"blob record", source)
        .unwrap();
    storage.tpc_vote(txn).unwrap();
    storage.tpc_finish(txn, &mut |_| {}).unwrap()
}

#[test]
fn blob_get_writes_a_blob_to_stdout_or_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = runzeo(dir.path(), port);
    let mut options = ClientOptions::new(vec![ServerAddress::localhost(port)]);
    options.blob_dir = Some(dir.path().join("writer-blobs"));
    let storage = ClientStorage::open(options).unwrap();
    let oid = storage.new_oid().unwrap();
    let first: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let t1 = commit_blob(&storage, oid, Tid::ZERO, &first);
    let t2 = commit_blob(&storage, oid, t1, b"second revision");
    storage.close().unwrap();
    let oid_arg = oid.0.to_string();

    // The current revision, to stdout.
    let out = zeo_client(port, &["blob", "get", &oid_arg]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"second revision");

    // An older one, to a file, through a blob cache that stays.
    let file = dir.path().join("out.bin");
    let cache = dir.path().join("cli-cache");
    let tid_arg = format!("{:#018x}", t1.0);
    let out = zeo_client(
        port,
        &[
            "blob",
            "get",
            &oid_arg,
            "--tid",
            &tid_arg,
            "-o",
            file.to_str().unwrap(),
            "--blob-dir",
            cache.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty());
    assert!(std::fs::read(&file).unwrap() == first);
    assert!(cache.join(Layout::ZeoCache.file(oid, t1)).exists());

    // The server's own directory, read in place.
    let out = zeo_client(
        port,
        &[
            "blob",
            "get",
            &oid_arg,
            "--blob-dir",
            dir.path().join("server-blobs").to_str().unwrap(),
            "--shared-blob-dir",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"second revision");
    assert!(t2 > t1);

    // A `-C` file's blob-dir serves `blob get`; other commands leave it
    // alone.
    let conf = dir.path().join("client.conf");
    let from_conf = dir.path().join("conf-cache");
    std::fs::write(
        &conf,
        format!(
            "<zeoclient>\n  server 127.0.0.1:{port}\n  blob-dir {}\n</zeoclient>\n",
            from_conf.display()
        ),
    )
    .unwrap();
    let out = zeo_client(port, &["-C", conf.to_str().unwrap(), "info"]);
    assert!(out.status.success(), "{out:?}");
    assert!(!from_conf.exists());
    let out = zeo_client(
        port,
        &["-C", conf.to_str().unwrap(), "blob", "get", &oid_arg],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"second revision");
    assert!(from_conf.join(Layout::ZeoCache.file(oid, t2)).exists());

    // A revision without a blob: one line on stderr, exit status 1.
    let out = zeo_client(
        port,
        &["blob", "get", &oid_arg, "--tid", &(t1.0 - 1).to_string()],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("POSKeyError"), "{stderr}");
}

/// `blob put` commits a file as a new blob object and then as its next
/// revision; a stock Python client reads both as `ZODB.blob.Blob`s.
#[test]
fn blob_put_commits_a_file_python_reads_as_a_blob() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = runzeo(dir.path(), port);
    let first: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.path().join("first.bin"), &first).unwrap();
    std::fs::write(dir.path().join("second.bin"), b"second").unwrap();

    let out = zeo_client(
        port,
        &[
            "blob",
            "put",
            dir.path().join("first.bin").to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let line = String::from_utf8(out.stdout).unwrap();
    let [oid, t1]: [&str; 2] = line
        .split_whitespace()
        .collect::<Vec<_>>()
        .try_into()
        .unwrap();
    let oid_arg = format!("0x{oid}");
    let second = dir.path().join("second.bin");
    let put_second = ["blob", "put", second.to_str().unwrap(), "--oid", &oid_arg];
    let out = zeo_client(port, &put_second);
    assert!(out.status.success(), "{out:?}");
    let line = String::from_utf8(out.stdout).unwrap();
    let t2 = line.split_whitespace().nth(1).unwrap().to_owned();
    assert!(line.starts_with(oid) && t2.as_str() > t1, "{line}");

    let script = dir.path().join("read.py");
    std::fs::write(
        &script,
        r#"
import sys, ZODB.utils, ZEO.ClientStorage
from ZODB.blob import Blob
port, oid, t1, t2 = int(sys.argv[1]), *(bytes.fromhex(a) for a in sys.argv[2:5])
cs = ZEO.ClientStorage.ClientStorage(('127.0.0.1', port), wait_timeout=30, blob_dir='py-cache')
data, serial = cs.load(oid)
assert serial == t2, (serial, t2)
assert b'ZODB.blob' in data and b'Blob' in data
with open(cs.loadBlob(oid, t1), 'rb') as f:
    assert f.read() == bytes(i % 251 for i in range(200000))
with open(cs.loadBlob(oid, t2), 'rb') as f:
    assert f.read() == b'second'
cs.close()
print("OK")
"#,
    )
    .unwrap();
    let out = zeo_testkit::run_python(
        &python6(),
        &script,
        &[&port.to_string(), oid, t1, &t2],
        dir.path(),
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("OK"),
        "{out:?}"
    );
}
