//! The client against a stock Python ZEO 6 server (`runzeo`), in both
//! encodings: loads what Python wrote, commits what Python then reads,
//! receives Python's invalidations, and gets a real ConflictError.
//!
//! Needs the venv `cargo xtask test` creates; fails (never skips) without it.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use zeo_client::{ClientOptions, ClientStorage, Notice, ServerAddress};
use zeo_storage::{BeginOptions, Oid, Storage, Tid, TransactionMetaData};
use zeo_testkit::{free_port, python6, run_with_timeout, stdout_of};

struct Runzeo {
    child: Child,
    port: u16,
}

impl Drop for Runzeo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn runzeo_path() -> PathBuf {
    let python = python6();
    python.parent().unwrap().join("runzeo")
}

fn start_runzeo(dir: &Path, msgpack: bool) -> Runzeo {
    let port = free_port();
    let conf = dir.join("zeo.conf");
    std::fs::write(
        &conf,
        format!(
            "<zeo>\n  address 127.0.0.1:{port}\n{}</zeo>\n<filestorage>\n  path {}\n</filestorage>\n",
            if msgpack { "  msgpack true\n" } else { "" },
            dir.join("Data.fs").display()
        ),
    )
    .unwrap();
    let child = Command::new(runzeo_path())
        .arg("-C")
        .arg(&conf)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start runzeo: run `cargo xtask test` to create the Python venvs");
    let server = Runzeo { child, port };
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "runzeo did not start listening");
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}

fn python(script: &str, port: u16) -> String {
    let full = format!(
        "import sys, ZEO.ClientStorage, ZODB, transaction\n\
         from ZODB.utils import p64, u64\n\
         from ZODB.Connection import TransactionMetaData\n\
         cs = ZEO.ClientStorage.ClientStorage(('127.0.0.1', {port}), wait_timeout=30)\n\
         {script}\n"
    );
    let out = run_with_timeout(
        Command::new(python6()).args(["-c", &full]),
        Duration::from_secs(90),
    );
    stdout_of(&out, "python ZEO client").trim().to_owned()
}

fn options(port: u16) -> ClientOptions {
    let mut o = ClientOptions::new(vec![ServerAddress::localhost(port)]);
    o.wait_timeout = Duration::from_secs(20);
    o
}

fn wait_invalidation(rx: &mut tokio::sync::broadcast::Receiver<Notice>) -> (Tid, Vec<Oid>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "no invalidation arrived");
        match rx.try_recv() {
            Ok(Notice::Invalidated { tid, oids }) => return (tid, oids),
            Ok(_) => {}
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn interop(msgpack: bool) {
    let dir = tempfile::tempdir().unwrap();
    let server = start_runzeo(dir.path(), msgpack);
    let port = server.port;

    // Python writes the root object through ZODB.
    let tid_hex = python(
        "db = ZODB.DB(cs)\n\
         with db.transaction() as conn:\n    conn.root()['greeting'] = 'hello from python'\n\
         print(db.lastTransaction().hex())\n\
         db.close()",
        port,
    );
    let client = ClientStorage::open(options(port)).unwrap();
    let (root, root_tid) = client.load(Oid::ROOT).unwrap();
    assert_eq!(format!("{:016x}", root_tid.0), tid_hex);
    assert!(
        root.windows(17).any(|w| w == b"hello from python"),
        "root record from Python"
    );
    assert!(root.windows(18).any(|w| w == b"persistent.mapping"));

    // We commit a new object; Python reads it back byte for byte.
    let oid = client.new_oid().unwrap();
    let data = b"\x80\x03cpersistent.mapping\nPersistentMapping\nq\x00.\x80\x03}q\x01X\x04\x00\x00\x00datal\x00\x00\x00X\x01\x00\x00\x00xK\x01ss.";
    let meta = TransactionMetaData {
        user: b"rust".to_vec(),
        description: b"from zeo-client".to_vec(),
        extension: Vec::new(),
    };
    let txn = client.tpc_begin(&meta, BeginOptions::default()).unwrap();
    client.store(txn, oid, Tid::ZERO, data).unwrap();
    client.tpc_vote(txn).unwrap();
    let ours = client.tpc_finish(txn, &mut |_| {}).unwrap();
    let seen = python(
        &format!(
            "d, s = cs.load(p64({}))\n\
             print(d.hex(), s.hex())\n\
             h = cs.history(p64({}))[0]\n\
             print(h['user_name'].decode() if isinstance(h['user_name'], bytes) else h['user_name'])",
            oid.0, oid.0
        ),
        port,
    );
    let mut lines = seen.lines();
    assert_eq!(
        lines.next().unwrap(),
        format!(
            "{} {:016x}",
            data.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            ours.0
        )
    );
    assert_eq!(lines.next().unwrap(), "rust");

    // Python changes our object; we hear of it and read the new revision.
    let mut notices = client.subscribe();
    let new_tid = python(
        &format!(
            "t = TransactionMetaData()\n\
             cs.tpc_begin(t)\n\
             cs.store(p64({}), bytes.fromhex('{:016x}'), b'python was here', '', t)\n\
             cs.tpc_vote(t)\n\
             print(cs.tpc_finish(t).hex())",
            oid.0, ours.0
        ),
        port,
    );
    let (tid, oids) = wait_invalidation(&mut notices);
    assert_eq!(format!("{:016x}", tid.0), new_tid);
    assert_eq!(oids, vec![oid]);
    assert_eq!(
        client.load(oid).unwrap(),
        (b"python was here".to_vec(), tid)
    );
    let old = client.load_before(oid, tid).unwrap().unwrap();
    assert_eq!((old.start, old.end), (ours, Some(tid)));

    // A real conflict: we write based on our stale serial.
    let txn = client.tpc_begin(&meta, BeginOptions::default()).unwrap();
    client.store(txn, oid, ours, b"too late").unwrap();
    let err = client.tpc_vote(txn).unwrap_err();
    client.tpc_abort(txn);
    assert!(
        matches!(err, zeo_storage::Error::Conflict { oid: o, committed, old } if o == oid && committed == tid && old == ours),
        "{err:?}"
    );
    // Still usable afterwards.
    let txn = client.tpc_begin(&meta, BeginOptions::default()).unwrap();
    client.store(txn, oid, tid, b"resolved by hand").unwrap();
    client.tpc_vote(txn).unwrap();
    let last = client.tpc_finish(txn, &mut |_| {}).unwrap();
    assert!(last > tid);
    assert!(client.len() >= 2);
    drop(client);
    drop(server);
}

#[test]
fn python_zeo6_server_pickle() {
    interop(false);
}

#[test]
fn python_zeo6_server_msgpack() {
    interop(true);
}

#[test]
fn python_server_killed_and_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_runzeo(dir.path(), false);
    let port = server.port;
    let mut o = options(port);
    o.min_disconnect_poll = Duration::from_millis(100);
    o.max_disconnect_poll = Duration::from_millis(500);
    o.persistent_cache("fault", Some(dir.path().to_owned()));
    let client = ClientStorage::open(o).unwrap();
    let oid = client.new_oid().unwrap();
    let txn = client
        .tpc_begin(&TransactionMetaData::default(), BeginOptions::default())
        .unwrap();
    client.store(txn, oid, Tid::ZERO, b"v1").unwrap();
    client.tpc_vote(txn).unwrap();
    let t1 = client.tpc_finish(txn, &mut |_| {}).unwrap();

    // Kill the server in the middle of a commit.
    let txn = client
        .tpc_begin(&TransactionMetaData::default(), BeginOptions::default())
        .unwrap();
    client.store(txn, oid, t1, b"never").unwrap();
    drop(server);
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.is_connected() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(client.tpc_vote(txn).is_err());
    client.tpc_abort(txn);
    assert_eq!(
        client.load(oid).unwrap(),
        (b"v1".to_vec(), t1),
        "cache serves reads meanwhile"
    );

    // Restart on the same port; a Python client changes the object first.
    let server = restart_on(dir.path(), port);
    let t2 = python(
        &format!(
            "t = TransactionMetaData()\ncs.tpc_begin(t)\n\
             cs.store(p64({}), bytes.fromhex('{:016x}'), b'v2', '', t)\n\
             cs.tpc_vote(t)\nprint(cs.tpc_finish(t).hex())",
            oid.0, t1.0
        ),
        port,
    );
    client.wait_connected(Duration::from_secs(30)).unwrap();
    let (data, tid) = client.load(oid).unwrap();
    assert_eq!(
        (data.as_slice(), format!("{:016x}", tid.0)),
        (&b"v2"[..], t2),
        "no stale read"
    );
    let txn = client
        .tpc_begin(&TransactionMetaData::default(), BeginOptions::default())
        .unwrap();
    client.store(txn, oid, tid, b"v3").unwrap();
    client.tpc_vote(txn).unwrap();
    assert!(client.tpc_finish(txn, &mut |_| {}).unwrap() > tid);
    drop(client);
    drop(server);
}

fn restart_on(dir: &Path, port: u16) -> Runzeo {
    let conf = dir.join("zeo.conf");
    let child = Command::new(runzeo_path())
        .arg("-C")
        .arg(&conf)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Runzeo { child, port };
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "runzeo did not restart");
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}
