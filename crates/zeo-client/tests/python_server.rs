//! The client against a stock Python ZEO 6 server (`runzeo`), in both
//! encodings: loads what Python wrote, commits what Python then reads,
//! receives Python's invalidations, and gets a real ConflictError.
//!
//! Needs the venv `cargo xtask test` creates; fails (never skips) without it.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{run_runzeo, Runzeo};

use zeo_client::{ClientOptions, ClientStorage, Notice, ServerAddress};
use zeo_storage::Iteration;
use zeo_storage::Pack;
use zeo_storage::Undo;
use zeo_storage::{BeginOptions, Oid, Storage, Tid, TransactionMetaData};
use zeo_testkit::{free_port, python6, run_with_timeout, stdout_of};

fn start_runzeo(dir: &Path, msgpack: bool) -> Runzeo {
    start_runzeo_with(dir, if msgpack { "  msgpack true\n" } else { "" })
}

/// [`start_runzeo`] with `zeo_lines` added to the `<zeo>` section.
fn start_runzeo_with(dir: &Path, zeo_lines: &str) -> Runzeo {
    let port = free_port();
    let conf = dir.join("zeo.conf");
    std::fs::write(
        &conf,
        format!(
            "<zeo>\n  address 127.0.0.1:{port}\n{zeo_lines}</zeo>\n<filestorage>\n  path {}\n</filestorage>\n",
            dir.join("Data.fs").display()
        ),
    )
    .unwrap();
    run_runzeo(dir, port)
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
    common::wait_notice(rx, Duration::from_secs(20), |n| match n {
        Notice::Invalidated { tid, oids } => Some((tid, oids)),
        _ => None,
    })
    .expect("no invalidation arrived")
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
    let mut notices = client.subscribe();
    drop(server);
    common::wait_disconnected(&mut notices);
    assert!(client.tpc_vote(txn).is_err());
    client.tpc_abort(txn);
    assert_eq!(
        client.load(oid).unwrap(),
        (b"v1".to_vec(), t1),
        "cache serves reads meanwhile"
    );

    // Restart on the same port; a Python client changes the object first.
    let server = run_runzeo(dir.path(), port);
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

/// Against runzeo in client-side resolution mode, a stale insert into an
/// OOBTree comes back as a conflict, which the client merges natively;
/// Python reads the merged tree.
#[test]
fn python_server_btree_conflicts_are_resolved_by_the_client() {
    let dir = zeo_testkit::TempDir::new().unwrap();
    let server = start_runzeo_with(dir.path(), "  client-conflict-resolution true\n");
    let port = server.port;
    let base = python(
        "from BTrees.OOBTree import OOBTree\n\
         db = ZODB.DB(cs); c = db.open()\n\
         c.root()['t'] = OOBTree({'a': 1, 'm': 2}); transaction.commit()\n\
         t = c.root()['t']; print(t._p_oid.hex(), t._p_serial.hex()); db.close()",
        port,
    );
    let (oid, base) = base.split_once(' ').unwrap();
    let oid = Oid(u64::from_str_radix(oid, 16).unwrap());
    let base = tid_of(base);
    python(
        "db = ZODB.DB(cs); c = db.open()\n\
         c.root()['t']['b'] = 5; transaction.commit(); db.close()",
        port,
    );
    let ours = zeo_pickle::encode_record(
        &zeo_pickle::Value::global("BTrees.OOBTree", "OOBTree"),
        &zeo_pickle::Value::Tuple(vec![zeo_pickle::Value::Tuple(vec![
            zeo_pickle::Value::Tuple(vec![zeo_pickle::Value::Tuple(vec![
                zeo_pickle::Value::str("a"),
                zeo_pickle::Value::Int(1),
                zeo_pickle::Value::str("m"),
                zeo_pickle::Value::Int(2),
                zeo_pickle::Value::str("z"),
                zeo_pickle::Value::Int(9),
            ])]),
        ])]),
    )
    .unwrap();
    let store = |client: &ClientStorage, data: &[u8]| -> zeo_storage::Result<Vec<Oid>> {
        let txn = client.tpc_begin(&TransactionMetaData::default(), BeginOptions::default())?;
        client.store(txn, oid, base, data)?;
        match client.tpc_vote(txn) {
            Ok(oids) => {
                client.tpc_finish(txn, &mut |_| {})?;
                Ok(oids)
            }
            Err(e) => {
                client.tpc_abort(txn);
                Err(e)
            }
        }
    };
    let mut off = options(port);
    off.native_conflict_resolution = false;
    let off = ClientStorage::open(off).unwrap();
    assert!(matches!(
        store(&off, &ours),
        Err(zeo_storage::Error::Conflict { .. })
    ));
    let native = ClientStorage::open(options(port)).unwrap();
    assert_eq!(store(&native, &ours).unwrap(), vec![oid]);
    drop((off, native));
    let keys = python(
        "db = ZODB.DB(cs); c = db.open()\n\
         print(sorted(c.root()['t'].items())); db.close()",
        port,
    );
    assert_eq!(keys, "[('a', 1), ('b', 5), ('m', 2), ('z', 9)]");
    drop(server);
}

/// Runs runzeo on the `zeo.conf` in `dir` (written by [`start_runzeo`])
/// and waits until it listens on `port`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn tid_of(s: &str) -> Tid {
    Tid::from_slice(&unhex(s)).unwrap()
}

/// Our view of a transaction, in the form the Python script prints.
fn transaction_lines(t: &zeo_storage::TransactionRecord) -> Vec<String> {
    let mut ext: Vec<String> = zeo_protocol::reply::extension_dict(&t.meta.extension)
        .unwrap()
        .into_iter()
        .map(|(k, v)| match (k, v) {
            (zeo_pickle::Value::Str(k), zeo_pickle::Value::Str(v)) => format!("{k}={v}"),
            other => panic!("unexpected extension item {other:?}"),
        })
        .collect();
    ext.sort();
    let mut lines = vec![format!(
        "T {:016x} [{}] {} {} {}",
        t.tid.0,
        char::from(t.status.as_byte()),
        hex(&t.meta.user),
        hex(&t.meta.description),
        ext.join(";")
    )
    .trim_end()
    .to_owned()];
    for r in &t.records {
        lines.push(format!(
            "R {:016x} {:016x} {} {}",
            r.oid.0,
            r.tid.0,
            r.data.as_deref().map_or("-".to_owned(), hex),
            r.data_txn
                .map_or("-".to_owned(), |t| format!("{:016x}", t.0))
        ));
    }
    lines
}

/// Iteration, history, undo and pack against Python's server and data:
/// what we read matches what Python reads, and what we do Python sees.
fn storage_api_against_python(msgpack: bool) {
    let dir = tempfile::tempdir().unwrap();
    let server = start_runzeo(dir.path(), msgpack);
    let port = server.port;
    let written = python(
        "from persistent.mapping import PersistentMapping\n\
         db = ZODB.DB(cs)\n\
         conn = db.open()\n\
         root = conn.root()\n\
         root['kept'] = PersistentMapping()\n\
         root['dropped'] = PersistentMapping()\n\
         t = transaction.get(); t.note('build'); t.setUser('py'); t.setExtendedInfo('k', 'v')\n\
         t.commit()\n\
         kept, dropped = root['kept']._p_oid, root['dropped']._p_oid\n\
         del root['dropped']\n\
         transaction.get().note('unlink'); transaction.commit()\n\
         root['kept']['x'] = 1\n\
         transaction.get().note('change'); transaction.commit()\n\
         def h(b): return (b if isinstance(b, bytes) else b.encode()).hex()\n\
         print('O', kept.hex(), dropped.hex())\n\
         for t in cs.iterator():\n    \
             st = t.status.decode() if isinstance(t.status, bytes) else t.status\n    \
             ext = ';'.join('%s=%s' % kv for kv in sorted(t.extension.items()))\n    \
             print(('T %s [%s] %s %s %s' % (t.tid.hex(), st, h(t.user), h(t.description), ext)).rstrip())\n    \
             for r in t:\n        \
                 print('R', r.oid.hex(), r.tid.hex(), r.data.hex() if r.data is not None else '-', r.data_txn.hex() if r.data_txn else '-')\n\
         for e in cs.history(p64(0), 10):\n    print('H', e['tid'].hex(), h(e['description']))\n\
         conn.close(); db.close()",
        port,
    );
    let lines: Vec<&str> = written.lines().collect();
    let oids: Vec<&str> = lines[0].split(' ').collect();
    let (kept, dropped) = (
        Oid::from_slice(&unhex(oids[1])).unwrap(),
        Oid::from_slice(&unhex(oids[2])).unwrap(),
    );
    let python_txns: Vec<String> = lines
        .iter()
        .filter(|l| l.starts_with("T ") || l.starts_with("R "))
        .map(|l| l.to_string())
        .collect();
    let python_history: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("H "))
        .collect();
    let tids: Vec<Tid> = lines
        .iter()
        .filter(|l| l.starts_with("T "))
        .map(|l| tid_of(&l[2..18]))
        .collect();
    assert_eq!(
        tids.len(),
        4,
        "database creation, build, unlink, change:\n{written}"
    );
    let (build, change) = (tids[1], tids[3]);

    let client = ClientStorage::open(options(port)).unwrap();
    assert!(client.as_undo().is_some());

    // Iteration of Python-written transactions, record for record.
    let ours: Vec<String> = client
        .iterator(None, None)
        .unwrap()
        .flat_map(|t| transaction_lines(&t.unwrap()))
        .collect();
    assert_eq!(ours, python_txns);
    assert!(
        python_txns.iter().any(|l| l.ends_with(" k=v")),
        "the extension came through: {python_txns:?}"
    );

    // History.
    let history: Vec<String> = client
        .history(Oid::ROOT, 10)
        .unwrap()
        .iter()
        .map(|h| format!("H {:016x} {}", h.tid.0, hex(&h.description)))
        .collect();
    assert_eq!(history, python_history);

    // The undo log lists Python's transactions, newest first.
    let log = client.undo_log(0, -20, None).unwrap();
    assert_eq!(
        log.iter().map(|e| e.tid).collect::<Vec<_>>(),
        tids.iter().rev().copied().collect::<Vec<_>>()
    );
    assert_eq!(log[0].description, b"change");
    let only_build = |e: &zeo_storage::UndoEntry| e.description == b"build";
    let filtered = client.undo_log(0, -20, Some(&only_build)).unwrap();
    assert_eq!(
        filtered.iter().map(|e| e.tid).collect::<Vec<_>>(),
        vec![build]
    );

    // Undo Python's last change; Python sees the object as it was built.
    let built_kept = client.load_serial(kept, build).unwrap();
    let changed_kept = client.load(kept).unwrap();
    assert_eq!(changed_kept.1, change);
    let meta = TransactionMetaData {
        user: b"rust".to_vec(),
        description: b"undo by rust".to_vec(),
        extension: Vec::new(),
    };
    let txn = client.tpc_begin(&meta, BeginOptions::default()).unwrap();
    client.undo(txn, &log[0].id).unwrap();
    assert_eq!(client.tpc_vote(txn).unwrap(), vec![kept]);
    let undone = client.tpc_finish(txn, &mut |_| {}).unwrap();
    assert_eq!(client.load(kept).unwrap(), (built_kept.clone(), undone));
    let seen = python(
        &format!(
            "d, s = cs.load(p64({}))\nprint(d.hex(), s.hex())\nprint(cs.undoLog(0, 1)[0]['description'].decode())",
            kept.0
        ),
        port,
    );
    assert_eq!(
        seen.lines().collect::<Vec<_>>(),
        vec![
            format!("{} {:016x}", hex(&built_kept), undone.0).as_str(),
            "undo by rust"
        ]
    );
    // The undo record points back at the build's data.
    let last = client
        .iterator(Some(undone), None)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(last.records.len(), 1);
    assert_eq!(last.records[0].oid, kept);
    assert_eq!(last.records[0].data.as_deref(), Some(built_kept.as_slice()));
    assert_eq!(last.records[0].data_txn, Some(build));

    // Pack: the unlinked object disappears, for Python too.
    assert_eq!(client.len(), 3);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    client.pack(now + 1.0, true).unwrap();
    assert!(matches!(
        client.load_serial(dropped, build),
        Err(zeo_storage::Error::PosKey { .. })
    ));
    // The `info` message announces nothing to wait on.
    assert!(
        zeo_testkit::wait_until(Duration::from_secs(10), || client.len() == 2),
        "no info message after the pack"
    );
    let seen = python(
        &format!(
            "from ZODB.POSException import POSKeyError\n\
             try:\n    cs.load(p64({}))\n    print('present')\n\
             except POSKeyError:\n    print('gone')\n\
             print(cs.load(p64({}))[0].hex())\n\
             print(len(cs.history(p64(0), 10)))",
            dropped.0, kept.0
        ),
        port,
    );
    assert_eq!(
        seen.lines().collect::<Vec<_>>(),
        vec!["gone", hex(&built_kept).as_str(), "1"]
    );
    drop(client);
    drop(server);
}

#[test]
fn python_server_iteration_history_undo_and_pack_pickle() {
    storage_api_against_python(false);
}

#[test]
fn python_server_iteration_history_undo_and_pack_msgpack() {
    storage_api_against_python(true);
}
