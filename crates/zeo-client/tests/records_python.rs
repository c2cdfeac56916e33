//! Records shared with Python: Rust writes a root `PersistentMapping`
//! holding a `PersistentList` through our server, Python's ZODB (ZEO 6
//! client) reads and changes them and adds an `OOBTree`, and Rust reads
//! all of it back — list items, strings, the tree through its buckets —
//! then changes the root again for Python to check, through the server
//! and in the Data.fs it wrote.
//!
//! Needs the venv `cargo xtask venv` creates; fails (never skips) without it.

mod common;

use std::time::Duration;

use common::TestServer;
use zeo_client::records::{oid_of, reference, Record, Value, OOBTREE, PERSISTENT_LIST};
use zeo_client::{ClientStorage, CommitOptions, Notice};
use zeo_server::ServerSettings;
use zeo_storage::{Oid, Tid};
use zeo_testkit::{python6, run_python, script, stdout_of};

/// Runs the script against the server on `where_` (a port) or on a
/// Data.fs (a path).
fn python(where_: &str, phase: &str, cwd: &std::path::Path) -> String {
    let out = run_python(
        &python6(),
        &script("records_roundtrip.py"),
        &[where_, phase],
        cwd,
    );
    stdout_of(&out, "records_roundtrip.py").trim().to_owned()
}

#[test]
fn records_written_here_read_in_python_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("Data.fs"), 0, ServerSettings::default());
    let client = ClientStorage::open(server.options()).unwrap();

    let options = CommitOptions::new()
        .user("rust")
        .description("root from rust");
    let (todo, _) = client
        .commit(&options, |txn| {
            let todo = txn.new_oid()?;
            let list = Record::persistent_list([Value::str("write docs"), Value::Int(7)]);
            txn.store_record(todo, Tid::ZERO, &list)?;
            let root = Record::persistent_mapping([
                (Value::str("title"), Value::str("written by rust")),
                (Value::str("count"), Value::Int(41)),
                (Value::str("todo"), reference(todo, PERSISTENT_LIST)),
            ]);
            txn.store_record(Oid::ROOT, Tid::ZERO, &root)?;
            Ok(todo)
        })
        .unwrap();

    // Python asserts our records, then writes its own.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut notices = client.subscribe();
    let tree_hex = python(&server.port.to_string(), "check-and-write", dir.path());
    let tree_oid = Oid(u64::from_str_radix(&tree_hex, 16).unwrap());

    // Python's commit reaches us as an invalidation of the root and the
    // list; after it, loads fetch what Python wrote.
    let invalidated = rt.block_on(async {
        loop {
            let notice = tokio::time::timeout(Duration::from_secs(30), notices.recv())
                .await
                .expect("no invalidation within 30 s")
                .unwrap();
            if let Notice::Invalidated { oids, .. } = notice {
                return oids;
            }
        }
    });
    assert!(
        invalidated.contains(&Oid::ROOT) && invalidated.contains(&todo),
        "{invalidated:?}"
    );
    let (root, _) = client.load_record(Oid::ROOT).unwrap();
    assert_eq!(
        root.mapping_get("from_python").and_then(Value::as_str),
        Some("hello rust")
    );
    assert_eq!(root.mapping_get("todo").and_then(oid_of), Some(todo));
    let tree_ref = root.mapping_get("tree").unwrap();
    assert_eq!(oid_of(tree_ref), Some(tree_oid));
    assert_eq!(
        tree_ref.reference_class(),
        Some(("BTrees.OOBTree", "OOBTree"))
    );
    let (list, _) = client.load_record(todo).unwrap();
    assert_eq!(
        list.list_items().unwrap(),
        [
            Value::str("write docs"),
            Value::Int(7),
            Value::str("from python")
        ]
    );
    let (tree, _) = client.load_record(tree_oid).unwrap();
    assert!(tree.is(OOBTREE));
    let items = client.btree_items(&tree.state, 10_000).unwrap();
    assert_eq!(items.len(), 200);
    for (i, (k, v)) in items.iter().enumerate() {
        assert_eq!(k.as_str(), Some(format!("k{i:03}").as_str()));
        assert_eq!(v.as_i64(), Some(i as i64));
    }
    // The async client walks the same chain.
    let asynchronous = client.as_async().clone();
    let state = tree.state.clone();
    let again = rt
        .block_on(async move { asynchronous.btree_items(&state, 10_000).await })
        .unwrap();
    assert_eq!(again, items);

    // Rust changes Python's data; Python checks.
    client
        .commit(&CommitOptions::new().description("rust again"), |txn| {
            let (mut root, serial) = txn.load_record(Oid::ROOT)?;
            let n = root.mapping_get("count").and_then(Value::as_i64).unwrap();
            root.try_mapping_set(Value::str("count"), Value::Int(n + 1))?;
            txn.store_record(Oid::ROOT, serial, &root)?;
            let (mut list, serial) = txn.load_record(todo)?;
            list.list_items_mut()?.push(Value::str("rust again"));
            txn.store_record(todo, serial, &list)
        })
        .unwrap();
    let port = server.port.to_string();
    assert_eq!(python(&port, "check-final", dir.path()), "ok");
    client.close().unwrap();
    // And the file our server wrote opens in Python's FileStorage.
    let data_fs = server.path.clone();
    server.stop();
    assert_eq!(
        python(data_fs.to_str().unwrap(), "check-final", dir.path()),
        "ok"
    );
}
