//! Data.fs compatibility with Python ZODB, in both directions.
//!
//! * Files Python writes (`tests/python/make_fixture.py`: nested mappings, a
//!   5,000-key OOBTree, undo, deleteObject, repeated edits, and a copy packed
//!   with GC) read back through our FileStorage exactly as Python reads
//!   them: every transaction and record, every `load`, `loadBefore` at every
//!   transaction boundary, `history` and `undoLog`.
//! * Files we write (stores, undo, deleteObject, pack) pass ZODB's `fstest`,
//!   open in Python (ZODB 6 and 5) with and without our index file, and
//!   Python sees in them exactly what we see.
//! * Our `check` and `dump` agree with `fstest` and `fsdump`.
//!
//! These tests need the Python venvs that `cargo xtask test` creates; they
//! fail, never skip, without them.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use zeo_storage::filestorage::{check, dump, FileStorage, FileStorageOptions};
use zeo_storage::ExternalGc;
use zeo_storage::Iteration;
use zeo_storage::Pack;
use zeo_storage::Undo;
use zeo_storage::{BeginOptions, Error, Oid, Storage, Tid, TimeStamp, TransactionMetaData};
use zeo_testkit::serde_json::{self, json, Value};
use zeo_testkit::{python5, python6, run_python, script, stdout_of, TempDir};

// ---------------------------------------------------------------------------
// Helpers shared by the tests

fn hex_id(v: u64) -> String {
    format!("{v:016x}")
}

fn parse_id(s: &str) -> u64 {
    u64::from_str_radix(s, 16).unwrap_or_else(|e| panic!("bad id {s:?}: {e}"))
}

fn parse_hex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap_or_else(|e| panic!("bad hex {s:?}: {e}"))
}

/// Opens an existing file.
fn open(path: &Path, read_only: bool) -> FileStorage {
    FileStorage::open(
        path,
        FileStorageOptions {
            read_only,
            create: false,
            pack_gc: true,
            sync_delay: None,
        },
    )
    .unwrap_or_else(|e| panic!("opening {} (read_only={read_only}): {e}", path.display()))
}

/// Creates a new, empty file (`create` truncates, as in ZODB).
fn create(path: &Path) -> FileStorage {
    FileStorage::open(
        path,
        FileStorageOptions {
            read_only: false,
            create: true,
            pack_gc: true,
            sync_delay: None,
        },
    )
    .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()))
}

/// Where two JSON values first differ, as a path into them.
fn first_difference(path: &str, ours: &Value, theirs: &Value) -> Option<String> {
    match (ours, theirs) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            keys.into_iter().find_map(|k| match (a.get(k), b.get(k)) {
                (Some(x), Some(y)) => first_difference(&format!("{path}.{k}"), x, y),
                (x, y) => Some(format!("{path}.{k}: ours {x:?}, Python's {y:?}")),
            })
        }
        (Value::Array(a), Value::Array(b)) => {
            let inner = a
                .iter()
                .zip(b)
                .enumerate()
                .find_map(|(i, (x, y))| first_difference(&format!("{path}[{i}]"), x, y));
            inner.or_else(|| {
                (a.len() != b.len())
                    .then(|| format!("{path}: ours has {} entries, Python's {}", a.len(), b.len()))
            })
        }
        _ if ours == theirs => None,
        _ => Some(format!(
            "{path}: ours {}, Python's {}",
            short(ours),
            short(theirs)
        )),
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 300 {
        format!(
            "{}... ({} chars)",
            s.chars().take(300).collect::<String>(),
            s.len()
        )
    } else {
        s
    }
}

#[track_caller]
fn assert_same(what: &str, ours: &Value, theirs: &Value) {
    if let Some(diff) = first_difference(what, ours, theirs) {
        panic!("{what} differs from Python: {diff}");
    }
}

/// A POSKeyError becomes the marker the Python scripts write for it.
fn or_pos_key<T>(r: zeo_storage::Result<T>, f: impl FnOnce(T) -> Value) -> Value {
    match r {
        Ok(v) => f(v),
        Err(Error::PosKey { .. }) => json!({"error": "POSKeyError"}),
        Err(e) => panic!("unexpected error: {e}"),
    }
}

/// Every transaction as the Python scripts describe `storage.iterator()`.
fn our_transactions(st: &FileStorage) -> Value {
    let mut out = Vec::new();
    for txn in st.iterator(None, None).expect("iterator") {
        let txn = txn.expect("iterating transactions");
        let records: Vec<Value> = txn
            .records
            .iter()
            .map(|r| {
                json!({
                    "oid": hex_id(r.oid.0),
                    "tid": hex_id(r.tid.0),
                    "data": r.data.as_ref().map(hex::encode),
                    "data_txn": r.data_txn.map(|t| hex_id(t.0)),
                })
            })
            .collect();
        out.push(json!({
            "tid": hex_id(txn.tid.0),
            "status": char::from(txn.status.as_byte()).to_string(),
            "user": hex::encode(&txn.meta.user),
            "description": hex::encode(&txn.meta.description),
            "extension": hex::encode(&txn.meta.extension),
            "records": records,
        }));
    }
    Value::Array(out)
}

/// The oids any record of the file names.
fn oids_in(transactions: &Value) -> BTreeSet<u64> {
    let mut oids = BTreeSet::new();
    for t in transactions.as_array().expect("transactions") {
        for r in t["records"].as_array().expect("records") {
            oids.insert(parse_id(r["oid"].as_str().expect("oid")));
        }
    }
    oids
}

fn load_value(st: &FileStorage, oid: u64) -> Value {
    or_pos_key(
        st.load(Oid(oid)),
        |(data, tid)| json!({"data": hex::encode(data), "tid": hex_id(tid.0)}),
    )
}

// ---------------------------------------------------------------------------
// Python's fixture, read by us

struct Fixture {
    _dir: TempDir,
    root: PathBuf,
}

impl Fixture {
    fn build() -> Fixture {
        let dir = TempDir::new().unwrap();
        let root = dir.path().join("fixture");
        let out = run_python(
            &python6(),
            &script("make_fixture.py"),
            &[root.as_os_str()],
            dir.path(),
        );
        stdout_of(&out, "make_fixture.py");
        Fixture { _dir: dir, root }
    }

    fn data_fs(&self, which: &str) -> PathBuf {
        self.root.join(which).join("Data.fs")
    }

    fn expected(&self, which: &str) -> Value {
        let text = fs::read_to_string(self.root.join(which).join("expected.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }
}

/// Compares everything expected.json records with what our reader returns.
fn assert_reads_like_python(st: &FileStorage, expected: &Value) {
    assert_eq!(
        hex_id(st.last_transaction().0),
        expected["last_transaction"].as_str().unwrap(),
        "last_transaction"
    );
    assert_same(
        "transactions",
        &our_transactions(st),
        &expected["transactions"],
    );

    let boundaries: Vec<Tid> = expected["boundaries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| Tid(parse_id(b.as_str().unwrap())))
        .collect();
    let oids: Vec<u64> = expected["oids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| parse_id(o.as_str().unwrap()))
        .collect();
    assert!(oids.len() > 300, "the fixture should hold a large tree");

    let mut load_before = serde_json::Map::new();
    let mut load = serde_json::Map::new();
    let mut history = serde_json::Map::new();
    for &oid in &oids {
        let results: Vec<Value> = boundaries
            .iter()
            .map(|&before| match st.load_before(Oid(oid), before) {
                Ok(None) => Value::Null,
                Ok(Some(r)) => json!({
                    "data": hex::encode(&r.data),
                    "start": hex_id(r.start.0),
                    "end": r.end.map(|t| hex_id(t.0)),
                }),
                Err(Error::PosKey { .. }) => json!({"error": "POSKeyError"}),
                Err(e) => panic!("load_before({oid:x}, {before}): {e}"),
            })
            .collect();
        load_before.insert(hex_id(oid), Value::Array(results));
        load.insert(hex_id(oid), load_value(st, oid));
        let entries = match st.history(Oid(oid), 1000) {
            Ok(entries) => entries,
            Err(Error::PosKey { .. }) => Vec::new(),
            Err(e) => panic!("history({oid:x}): {e}"),
        };
        let entries: Vec<Value> = entries
            .iter()
            .map(|h| {
                json!({
                    "tid": hex_id(h.tid.0),
                    "size": h.size,
                    "user": hex::encode(&h.user),
                    "description": hex::encode(&h.description),
                })
            })
            .collect();
        history.insert(hex_id(oid), Value::Array(entries));
    }
    // Results are compared oid by oid so a failure names the object and the
    // boundary index (see "boundaries" in expected.json).
    assert_same(
        "load_before",
        &Value::Object(load_before),
        &expected["load_before"],
    );
    assert_same("load", &Value::Object(load), &expected["load"]);
    assert_same("history", &Value::Object(history), &expected["history"]);

    let undo_log: Vec<Value> = st
        .undo_log(0, 1000, None)
        .expect("undo_log")
        .iter()
        .map(|e| {
            json!({
                "id": hex::encode(&e.id),
                "tid": hex_id(e.tid.0),
                "user": hex::encode(&e.user),
                "description": hex::encode(&e.description),
                "size": e.size,
            })
        })
        .collect();
    assert_same("undo_log", &Value::Array(undo_log), &expected["undo_log"]);
}

fn copy_without_index(data_fs: &Path, dir: &Path) -> PathBuf {
    let copy = dir.join("Data.fs");
    fs::copy(data_fs, &copy).unwrap();
    copy
}

fn reads_python_file(which: &str) {
    let fixture = Fixture::build();
    let expected = fixture.expected(which);
    let data_fs = fixture.data_fs(which);
    assert!(
        data_fs.with_extension("fs.index").is_file(),
        "Python should have written an index"
    );

    // With the index Python wrote: exercises our reading of fsIndex files.
    let st = open(&data_fs, true);
    assert_reads_like_python(&st, &expected);
    st.close().unwrap();

    // Without it: the index is rebuilt by scanning.
    let bare = TempDir::new().unwrap();
    let copy = copy_without_index(&data_fs, bare.path());
    let st = open(&copy, true);
    assert_reads_like_python(&st, &expected);
    st.close().unwrap();

    // A writable open of Python's file reads the same.
    let st = open(&copy, false);
    assert_reads_like_python(&st, &expected);
    st.close().unwrap();
}

#[test]
fn reads_python_file_with_history_undo_and_delete() {
    reads_python_file("plain");
}

#[test]
fn reads_python_file_packed_with_gc() {
    reads_python_file("packed");
}

#[test]
fn check_accepts_python_files() {
    let fixture = Fixture::build();
    for which in ["plain", "packed"] {
        let expected = fixture.expected(which);
        let report = check(&fixture.data_fs(which))
            .unwrap_or_else(|e| panic!("check rejects Python's {which} file: {e}"));
        let transactions = expected["transactions"].as_array().unwrap();
        assert_eq!(report.transactions, transactions.len() as u64, "{which}");
        let records: usize = transactions
            .iter()
            .map(|t| t["records"].as_array().unwrap().len())
            .sum();
        assert_eq!(report.data_records, records as u64, "{which}");
        assert_eq!(
            hex_id(report.last_tid.0),
            expected["last_transaction"].as_str().unwrap(),
            "{which}"
        );
    }
}

#[test]
fn dump_matches_fsdump() {
    let fixture = Fixture::build();
    for which in ["plain", "packed"] {
        let data_fs = fixture.data_fs(which);
        let out = run_python(
            &python6(),
            &script("fsdump.py"),
            &[data_fs.as_os_str()],
            &fixture.root,
        );
        let theirs = stdout_of(&out, "fsdump.py");
        let mut ours = Vec::new();
        dump(&data_fs, &mut ours).unwrap_or_else(|e| panic!("dump of {which}: {e}"));
        let ours = String::from_utf8(ours).expect("dump writes UTF-8");
        for (i, (a, b)) in ours.lines().zip(theirs.lines()).enumerate() {
            assert_eq!(a, b, "{which}: dump line {} differs from fsdump", i + 1);
        }
        assert_eq!(
            ours.lines().count(),
            theirs.lines().count(),
            "{which}: line count"
        );
        assert!(
            theirs.lines().count() > 300,
            "fsdump should list every record"
        );
    }
}

// ---------------------------------------------------------------------------
// Damage: our check and fstest agree that a file is unsound

/// Runs check_file.py; `Ok(summary)` when Python accepts the file, else
/// `Err(stderr)`.
fn python_check(data_fs: &Path) -> Result<Value, String> {
    python_check_with(&python6(), data_fs)
}

/// [`python_check`] with a chosen interpreter (ZODB 5 or 6).
fn python_check_with(python: &Path, data_fs: &Path) -> Result<Value, String> {
    let dir = data_fs.parent().unwrap();
    let out = run_python(
        python,
        &script("check_file.py"),
        &[data_fs.as_os_str()],
        dir,
    );
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).expect("check_file.py prints JSON"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn check_and_fstest_reject_the_same_damage() {
    let fixture = Fixture::build();
    let original = fs::read(fixture.data_fs("plain")).unwrap();
    let expected = fixture.expected("plain");
    let txns = expected["transactions"].as_array().unwrap();
    // Offsets of transaction starts, found by walking the trailing lengths
    // back from the end of the file.
    let mut starts = Vec::new();
    let mut end = original.len();
    while end > 4 {
        let tlen = u64::from_be_bytes(original[end - 8..end].try_into().unwrap()) as usize;
        let start = end - 8 - tlen;
        starts.push(start);
        end = start;
    }
    starts.reverse();
    assert_eq!(starts.len(), txns.len());
    let mid = starts[starts.len() / 2];

    type Damage = (&'static str, Box<dyn Fn(&mut Vec<u8>)>);
    let damages: Vec<Damage> = vec![
        (
            "truncated tail",
            Box::new(|f: &mut Vec<u8>| f.truncate(f.len() - 5)),
        ),
        ("bad magic", Box::new(|f: &mut Vec<u8>| f[0] = b'X')),
        (
            "bad status byte",
            Box::new(move |f: &mut Vec<u8>| f[mid + 16] = b'x'),
        ),
        (
            "redundant length disagrees",
            Box::new(move |f: &mut Vec<u8>| {
                let tlen = u64::from_be_bytes(f[mid + 8..mid + 16].try_into().unwrap()) as usize;
                f[mid + tlen + 7] ^= 0x01;
            }),
        ),
        (
            "tid goes backwards",
            Box::new(move |f: &mut Vec<u8>| {
                let prev = f[4..12].to_vec();
                f[mid..mid + 8].copy_from_slice(&prev);
            }),
        ),
        (
            "data record points at another transaction",
            Box::new(move |f: &mut Vec<u8>| {
                // The first data record's tloc, right after a header with
                // the fixture's lengths: user, description, extension.
                let ul = u16::from_be_bytes([f[mid + 17], f[mid + 18]]) as usize;
                let dl = u16::from_be_bytes([f[mid + 19], f[mid + 20]]) as usize;
                let el = u16::from_be_bytes([f[mid + 21], f[mid + 22]]) as usize;
                let rec = mid + 23 + ul + dl + el;
                f[rec + 31] ^= 0x10;
            }),
        ),
        (
            "checkpoint flag left set",
            Box::new(move |f: &mut Vec<u8>| f[mid + 16] = b'c'),
        ),
    ];

    let dir = TempDir::new().unwrap();
    let path = dir.path().join("Data.fs");
    fs::write(&path, &original).unwrap();
    assert!(check(&path).is_ok());
    python_check(&path).expect("the undamaged file passes fstest");
    for (what, damage) in &damages {
        let mut bytes = original.clone();
        damage(&mut bytes);
        fs::write(&path, &bytes).unwrap();
        let ours = check(&path);
        let theirs = python_check(&path);
        assert!(theirs.is_err(), "{what}: fstest accepts it");
        match ours {
            Err(Error::Format { .. }) => {}
            Err(e) => panic!("{what}: check fails with a non-format error: {e}"),
            Ok(report) => panic!(
                "{what}: check accepts what fstest rejects ({report:?}); fstest said: {}",
                theirs.unwrap_err()
            ),
        }
    }
}

// ---------------------------------------------------------------------------
// Files we write, read by Python

/// Real ZODB records to write: the fixture's current objects (a root, nested
/// mappings, an OOBTree and its buckets, plus unreachable ones), so that a
/// garbage-collecting pack has a real object graph to walk.
struct Payloads {
    /// oid -> current data, for every loadable object of the fixture.
    current: BTreeMap<u64, Vec<u8>>,
    /// Some older revisions of objects, to write as edits.
    older: Vec<(u64, Vec<u8>)>,
    /// Extension pickles Python wrote.
    extensions: Vec<Vec<u8>>,
}

fn payloads(expected: &Value) -> Payloads {
    let mut current = BTreeMap::new();
    for (oid, v) in expected["load"].as_object().unwrap() {
        if let Some(data) = v["data"].as_str() {
            current.insert(parse_id(oid), parse_hex(data));
        }
    }
    let mut older = Vec::new();
    let mut extensions = Vec::new();
    for t in expected["transactions"].as_array().unwrap() {
        let ext = t["extension"].as_str().unwrap();
        if !ext.is_empty() {
            extensions.push(parse_hex(ext));
        }
        for r in t["records"].as_array().unwrap() {
            let oid = parse_id(r["oid"].as_str().unwrap());
            if let Some(data) = r["data"].as_str() {
                let data = parse_hex(data);
                if current.get(&oid) != Some(&data) && current.contains_key(&oid) {
                    older.push((oid, data));
                }
            }
        }
    }
    assert!(older.len() >= 5 && !extensions.is_empty());
    Payloads {
        current,
        older,
        extensions,
    }
}

fn meta(user: &str, description: &str, extension: &[u8]) -> TransactionMetaData {
    TransactionMetaData {
        user: user.as_bytes().to_vec(),
        description: description.as_bytes().to_vec(),
        extension: extension.to_vec(),
    }
}

/// Commits `stores` (oid, data); serials come from the storage itself.
fn commit(st: &FileStorage, m: &TransactionMetaData, stores: &[(u64, &[u8])]) -> Tid {
    commit_with(st, m, stores, BeginOptions::default())
}

fn commit_with(
    st: &FileStorage,
    m: &TransactionMetaData,
    stores: &[(u64, &[u8])],
    options: BeginOptions,
) -> Tid {
    let txn = st.tpc_begin(m, options).unwrap();
    for &(oid, data) in stores {
        let serial = match st.load(Oid(oid)) {
            Ok((_, tid)) => tid,
            Err(Error::PosKey { .. }) => Tid::ZERO,
            Err(e) => panic!("load {oid:x}: {e}"),
        };
        st.store(txn, Oid(oid), serial, data).unwrap();
    }
    st.tpc_vote(txn).unwrap();
    st.tpc_finish(txn, &mut |_| {}).unwrap()
}

/// Writes a history through our FileStorage; returns a pack time that lies
/// between its two phases.
fn write_history(st: &FileStorage, p: &Payloads) -> f64 {
    let first_new = p.current.keys().max().unwrap() + 1;
    let all: Vec<(u64, &[u8])> = p.current.iter().map(|(&o, d)| (o, d.as_slice())).collect();
    // Phase one: all of it may be rewritten or dropped by a pack.
    commit(
        st,
        &meta(
            "loader",
            "all current objects of the fixture",
            &p.extensions[0],
        ),
        &all,
    );
    for (i, (oid, data)) in p.older.iter().take(6).enumerate() {
        let ext = &p.extensions[i % p.extensions.len()];
        commit(
            st,
            &meta("editor", &format!("old revision {i}"), ext),
            &[(*oid, data)],
        );
    }
    // Edit the root back to its current state.
    commit(
        st,
        &meta("editor", "root again", b""),
        &[(0, &p.current[&0])],
    );

    // An edit plus a creation, undone: backpointer and "no data" records.
    let (edit_oid, edit_data) = &p.older[0];
    let undone = commit(
        st,
        &meta("undoer", "to be undone \u{2603}", b""),
        &[(*edit_oid, edit_data), (first_new, &p.current[&0])],
    );
    let entry = st
        .undo_log(0, 100, None)
        .unwrap()
        .into_iter()
        .find(|e| e.tid == undone)
        .expect("the transaction is in the undo log");
    let txn = st
        .tpc_begin(&meta("undoer", "undo", b""), BeginOptions::default())
        .unwrap();
    let mut changed = st.undo(txn, &entry.id).unwrap();
    changed.sort();
    assert_eq!(changed, vec![Oid(*edit_oid), Oid(first_new)]);
    st.tpc_vote(txn).unwrap();
    st.tpc_finish(txn, &mut |_| {}).unwrap();

    // deleteObject of an object nothing refers to.
    let doomed = first_new + 1;
    let created = commit(
        st,
        &meta("gc", "create doomed", b""),
        &[(doomed, &p.current[&0])],
    );
    let txn = st
        .tpc_begin(&meta("gc", "delete doomed", b""), BeginOptions::default())
        .unwrap();
    st.delete_object(txn, Oid(doomed), created).unwrap();
    st.tpc_vote(txn).unwrap();
    st.tpc_finish(txn, &mut |_| {}).unwrap();
    assert!(matches!(st.load(Oid(doomed)), Err(Error::PosKey { .. })));

    // Phase two, clearly after the pack time.
    // A pack time 15 ms after the last transaction, and a first late
    // transaction given a tid 25 ms after that: the tids that follow it
    // are later still, so the phases are apart whatever the clock does.
    let pack_time = st.last_transaction().unix_time() + 0.015;
    let first_late = TimeStamp::from_unix(pack_time + 0.025).tid();
    for (i, (oid, data)) in p.older.iter().skip(1).take(3).enumerate() {
        commit_with(
            st,
            &meta("late", &format!("late edit {i}"), b""),
            &[(*oid, data)],
            BeginOptions {
                tid: (i == 0).then_some(first_late),
                ..BeginOptions::default()
            },
        );
    }
    commit(
        st,
        &meta("late", "root after pack time", b""),
        &[(0, &p.current[&0])],
    );
    assert!(st.last_transaction().unix_time() > pack_time);
    pack_time
}

/// What our storage shows of a file, in check_file.py's terms.
fn our_view(st: &FileStorage) -> Value {
    let transactions = our_transactions(st);
    let current: serde_json::Map<String, Value> = oids_in(&transactions)
        .into_iter()
        .map(|oid| (hex_id(oid), load_value(st, oid)))
        .collect();
    json!({
        "last_transaction": hex_id(st.last_transaction().0),
        "transactions": transactions,
        "current": current,
    })
}

/// Python accepts the file and sees what we see; our index file, when there
/// is one, is one Python can use.
fn assert_python_reads_like_us(data_fs: &Path, ours: &Value, expect_index: bool) -> Value {
    let theirs = python_check(data_fs).unwrap_or_else(|e| panic!("Python rejects our file: {e}"));
    assert_eq!(theirs["fstest"], "no errors detected");
    for key in ["last_transaction", "transactions", "current"] {
        assert_same(key, &ours[key], &theirs[key]);
    }
    if expect_index {
        let index = &theirs["index"];
        assert!(
            index.is_object(),
            "no index file next to {}",
            data_fs.display()
        );
        assert_eq!(
            index["loaded"], true,
            "Python cannot load our index: {index}"
        );
        assert_eq!(
            index["matches_rebuilt"], true,
            "our index differs from a rescan: {index}"
        );
        assert_eq!(
            index["sane"], true,
            "Python's sanity check rejects our index: {index}"
        );
    }
    theirs
}

fn written_file() -> (TempDir, PathBuf, Payloads, f64) {
    let fixture = Fixture::build();
    let p = payloads(&fixture.expected("plain"));
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("Data.fs");
    let st = create(&path);
    let pack_time = write_history(&st, &p);
    st.close().unwrap();
    (dir, path, p, pack_time)
}

#[test]
fn python_reads_our_file() {
    let (dir, path, _p, _) = written_file();
    check(&path).unwrap_or_else(|e| panic!("our own check rejects our file: {e}"));

    let st = open(&path, true);
    let ours = our_view(&st);
    st.close().unwrap();
    let txns = ours["transactions"].as_array().unwrap();
    assert!(txns.iter().any(|t| t["records"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["data"].is_null())));
    assert!(txns.iter().any(|t| t["records"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| !r["data_txn"].is_null())));

    // With our index file (written on close) and, inside check_file.py, on
    // a copy without it.
    let zodb6 = assert_python_reads_like_us(&path, &ours, true);

    // ZODB 5, which ZEO 5 servers run, reads it the same way.
    let zodb5 = python_check_with(&python5(), &path)
        .unwrap_or_else(|e| panic!("ZODB 5 rejects our file: {e}"));
    for key in ["last_transaction", "transactions", "current", "index"] {
        assert_same(
            &format!("ZODB 5 vs ZODB 6: {key}"),
            &zodb5[key],
            &zodb6[key],
        );
    }

    // And with no index file at all next to it.
    let bare = TempDir::new().unwrap();
    let copy = copy_without_index(&path, bare.path());
    assert_python_reads_like_us(&copy, &ours, false);
    drop(dir);
}

#[test]
fn python_reads_our_packed_file_and_packs_alike() {
    let (dir, path, _p, pack_time) = written_file();

    // Python packs a copy of the same file at the same time.
    let py_dir = dir.path().join("python");
    fs::create_dir(&py_dir).unwrap();
    let py_path = copy_without_index(&path, &py_dir);
    let out = run_python(
        &python6(),
        &script("pack.py"),
        &[
            py_path.to_str().unwrap(),
            format!("{pack_time:.6}").as_str(),
        ],
        &py_dir,
    );
    stdout_of(&out, "pack.py");

    let st = open(&path, false);
    let before = st.iterator(None, None).unwrap().count();
    st.pack(pack_time, true)
        .unwrap_or_else(|e| panic!("pack: {e}"));
    let ours = our_view(&st);
    st.close().unwrap();
    let after = ours["transactions"].as_array().unwrap().len();
    assert!(
        after < before,
        "pack removed no transaction ({before} -> {after})"
    );
    check(&path).unwrap_or_else(|e| panic!("check rejects our packed file: {e}"));

    let python_view_of_ours = assert_python_reads_like_us(&path, &ours, true);
    let python_view_of_theirs =
        python_check(&py_path).unwrap_or_else(|e| panic!("Python rejects its own pack: {e}"));
    for key in ["last_transaction", "transactions", "current"] {
        assert_same(
            &format!("packed {key} (ours vs Python's pack)"),
            &python_view_of_ours[key],
            &python_view_of_theirs[key],
        );
    }
    // Beyond equal views: given the same input and pack time, our pack
    // writes the very bytes ZODB's does (same transactions kept, same
    // records copied in the same order, backpointers resolved alike).
    assert!(
        fs::read(&path).unwrap() == fs::read(&py_path).unwrap(),
        "our packed file and Python's differ in their bytes"
    );
}

/// An undo that needs conflict resolution (a catalog-like OOBTree and its
/// Length, changed again after the undone transaction) writes the records
/// ZODB's FileStorage writes, byte for byte, with ZODB 6 and ZODB 5.
#[test]
fn undo_resolves_btree_and_length_conflicts_as_zodb_does() {
    for python in [python6(), python5()] {
        let dir = TempDir::new().unwrap();
        let theirs = dir.path().join("Data.fs");
        let ours = dir.path().join("Ours.fs");
        let run = |args: &[&str]| -> Value {
            let out = run_python(&python, &script("undo_resolve.py"), args, dir.path());
            serde_json::from_str(&stdout_of(&out, "undo_resolve.py")).unwrap()
        };
        let made = run(&["make", theirs.to_str().unwrap()]);
        let tid_hex = made["tid"].as_str().unwrap().to_owned();
        std::fs::copy(&theirs, &ours).unwrap();
        let undone = run(&["undo", theirs.to_str().unwrap(), &tid_hex]);
        let expected = undone["records"].as_object().unwrap();
        assert_eq!(expected.len(), 2, "{undone}");

        let fs = open(&ours, false);
        let tid = Tid::from_slice(&parse_hex(&tid_hex)).unwrap();
        let txn = fs
            .tpc_begin(&meta("", "", b""), BeginOptions::default())
            .unwrap();
        let mut oids = fs.undo(txn, &zeo_storage::undo_id(tid)).unwrap();
        fs.tpc_vote(txn).unwrap();
        fs.tpc_finish(txn, &mut |_| {}).unwrap();
        oids.sort();
        let mut theirs_oids: Vec<&String> = expected.keys().collect();
        theirs_oids.sort();
        assert_eq!(
            oids.iter()
                .map(|o| hex::encode(o.0.to_be_bytes()))
                .collect::<Vec<_>>(),
            theirs_oids.iter().map(|s| s.as_str()).collect::<Vec<_>>()
        );
        for oid in oids {
            let (data, _) = fs.load(oid).unwrap();
            let key = hex::encode(oid.0.to_be_bytes());
            assert_eq!(
                hex::encode(&data),
                expected[&key].as_str().unwrap(),
                "oid {key} with {}",
                python.display()
            );
        }
    }
}
