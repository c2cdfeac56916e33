//! The `Storage` API beyond loads and commits, against the in-process
//! zeo-server over FileStorage: transaction iteration, undo and the undo
//! log, history, current-record iteration, pack, sizes, and client-side
//! conflict resolution.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{commit_with, wait_invalidated, TestServer};
use zeo_client::{ClientStorage, ConflictInfo};
use zeo_pickle::{Protocol, Value};
use zeo_server::ServerSettings;
use zeo_storage::Iteration;
use zeo_storage::Pack;
use zeo_storage::RecordIteration;
use zeo_storage::Undo;
use zeo_storage::{BeginOptions, Oid, Storage, Tid, TransactionMetaData, TxnStatus, UndoEntry};

fn meta(description: &str) -> TransactionMetaData {
    TransactionMetaData {
        user: b"tester".to_vec(),
        description: description.as_bytes().to_vec(),
        extension: Vec::new(),
    }
}

fn commit(storage: &ClientStorage, writes: &[(Oid, Tid, &[u8])]) -> zeo_storage::Result<Tid> {
    commit_with(storage, &meta(""), writes)
}

/// Waits (10 s at most) for a change that announces nothing: the
/// figures of an `info` message.
fn wait_until(what: &str, f: impl FnMut() -> bool) {
    assert!(
        zeo_testkit::wait_until(Duration::from_secs(10), f),
        "timed out waiting for {what}"
    );
}

fn start() -> (tempfile::TempDir, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("Data.fs"), 0, ServerSettings::default());
    (dir, server)
}

fn pickled_extension(pairs: &[(&str, &str)]) -> Vec<u8> {
    let dict = Value::Dict(
        pairs
            .iter()
            .map(|(k, v)| (Value::str(*k), Value::str(*v)))
            .collect(),
    );
    zeo_pickle::encode(&dict, Protocol::V3).unwrap()
}

#[test]
fn iteration_yields_every_transaction_with_its_records() {
    let (_dir, server) = start();
    let client = ClientStorage::open(server.options()).unwrap();
    let (a, b) = (client.new_oid().unwrap(), client.new_oid().unwrap());
    let mut first_meta = meta("first");
    first_meta.extension = pickled_extension(&[("k", "v")]);
    let t1 = commit_with(
        &client,
        &first_meta,
        &[(a, Tid::ZERO, b"a1"), (b, Tid::ZERO, b"b1")],
    )
    .unwrap();
    let t2 = commit_with(&client, &meta("second"), &[(a, t1, b"a2")]).unwrap();
    let t3 = commit_with(&client, &meta("third"), &[(b, t1, b"b2")]).unwrap();

    let all: Vec<_> = client
        .iterator(None, None)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        all.iter().map(|t| t.tid).collect::<Vec<_>>(),
        vec![t1, t2, t3]
    );
    assert_eq!(all[0].status, TxnStatus::Committed);
    assert_eq!(all[0].meta.user, b"tester");
    assert_eq!(all[0].meta.description, b"first");
    assert_eq!(
        zeo_protocol::reply::extension_dict(&all[0].meta.extension).unwrap(),
        vec![(Value::str("k"), Value::str("v"))]
    );
    assert!(all[1].meta.extension.is_empty(), "{{}} comes back empty");
    let records: Vec<_> = all[0]
        .records
        .iter()
        .map(|r| (r.oid, r.tid, r.data.clone(), r.data_txn))
        .collect();
    assert_eq!(
        records,
        vec![
            (a, t1, Some(b"a1".to_vec()), None),
            (b, t1, Some(b"b1".to_vec()), None)
        ]
    );
    assert_eq!(all[2].records[0].data.as_deref(), Some(&b"b2"[..]));

    // Bounds are inclusive on both ends.
    let middle: Vec<Tid> = client
        .iterator(Some(t2), Some(t2))
        .unwrap()
        .map(|t| t.unwrap().tid)
        .collect();
    assert_eq!(middle, vec![t2]);
    let tail: Vec<Tid> = client
        .iterator(Some(t2), None)
        .unwrap()
        .map(|t| t.unwrap().tid)
        .collect();
    assert_eq!(tail, vec![t2, t3]);
    drop(client);
    server.stop();
}

#[test]
fn iterators_dropped_early_are_collected_on_the_server() {
    let (_dir, server) = start();
    let client = ClientStorage::open(server.options()).unwrap();
    let oid = client.new_oid().unwrap();
    let mut serial = Tid::ZERO;
    for i in 0..3u8 {
        serial = commit(&client, &[(oid, serial, &[i])]).unwrap();
    }
    // The server keeps at most 32 iterators per connection: without
    // iterator_gc on drop, the 33rd start would fail.
    for round in 0..50 {
        let mut it = client.iterator(None, None).unwrap();
        let first = it.next().unwrap().unwrap();
        assert_eq!(
            first.records[0].data.as_deref(),
            Some(&[0u8][..]),
            "round {round}"
        );
    }
    // Iterators run to the end need no collection either.
    for _ in 0..40 {
        assert_eq!(client.iterator(None, None).unwrap().count(), 3);
    }
    // An iterator is not disturbed by other calls between its steps.
    let mut it = client.iterator(None, None).unwrap();
    assert_eq!(
        it.next().unwrap().unwrap().records[0].data.as_deref(),
        Some(&[0u8][..])
    );
    assert_eq!(client.load(oid).unwrap(), (vec![2u8], serial));
    let later = commit(&client, &[(oid, serial, b"later")]).unwrap();
    assert_eq!(client.history(oid, 10).unwrap()[0].tid, later);
    let rest: Vec<Vec<u8>> = it
        .take(2)
        .map(|t| t.unwrap().records[0].data.clone().unwrap())
        .collect();
    assert_eq!(rest, vec![vec![1u8], vec![2u8]]);
    drop(client);
    server.stop();
}

#[test]
fn undo_is_applied_and_invalidates_the_cache() {
    let (_dir, server) = start();
    let a = ClientStorage::open(server.options()).unwrap();
    let b = ClientStorage::open(server.options()).unwrap();
    let mut b_notices = b.subscribe();
    assert!(a.as_undo().is_some(), "FileStorage supports undo");
    let oid = a.new_oid().unwrap();
    let t1 = commit_with(&a, &meta("create"), &[(oid, Tid::ZERO, b"v1")]).unwrap();
    let t2 = commit_with(&a, &meta("change"), &[(oid, t1, b"v2")]).unwrap();
    wait_invalidated(&mut b_notices, t2);
    assert_eq!(b.load(oid).unwrap(), (b"v2".to_vec(), t2));
    assert_eq!(
        a.load(oid).unwrap(),
        (b"v2".to_vec(), t2),
        "a caches its commit"
    );

    let log = a.undo_log(0, -20, None).unwrap();
    assert_eq!(log.iter().map(|e| e.tid).collect::<Vec<_>>(), vec![t2, t1]);
    assert_eq!(log[0].description, b"change");
    assert_eq!(log[0].user, b"tester");

    let txn = a.tpc_begin(&meta("undo"), BeginOptions::default()).unwrap();
    assert_eq!(a.undo(txn, &log[0].id).unwrap(), Vec::<Oid>::new());
    assert_eq!(
        a.tpc_vote(txn).unwrap(),
        vec![oid],
        "vote names the undone oid"
    );
    let t3 = a.tpc_finish(txn, &mut |_| {}).unwrap();

    let loads = a.stats().server_loads;
    assert_eq!(a.load(oid).unwrap(), (b"v1".to_vec(), t3));
    assert_eq!(
        a.stats().server_loads,
        loads + 1,
        "the undone object was reloaded"
    );
    wait_invalidated(&mut b_notices, t3);
    assert_eq!(b.load(oid).unwrap(), (b"v1".to_vec(), t3));
    let undo_entry = &a.undo_log(0, 1, None).unwrap()[0];
    assert_eq!(
        (undo_entry.tid, &undo_entry.description[..]),
        (t3, &b"undo"[..])
    );
    drop((a, b));
    server.stop();
}

#[test]
fn filtered_undo_log_pages_through_the_server() {
    let (_dir, server) = start();
    let client = ClientStorage::open(server.options()).unwrap();
    let oid = client.new_oid().unwrap();
    let mut serial = Tid::ZERO;
    let mut tids = Vec::new();
    for i in 0..130u32 {
        serial = commit_with(
            &client,
            &meta(&format!("n{i}")),
            &[(oid, serial, &i.to_be_bytes())],
        )
        .unwrap();
        tids.push(serial);
    }
    let number = |e: &UndoEntry| -> u32 {
        std::str::from_utf8(&e.description[1..])
            .unwrap()
            .parse()
            .unwrap()
    };
    let every_fiftieth = |e: &UndoEntry| number(e) % 50 == 0;
    // n0 is 129 entries back: beyond the first page of 100.
    let found = client.undo_log(0, -20, Some(&every_fiftieth)).unwrap();
    assert_eq!(
        found.iter().map(number).collect::<Vec<_>>(),
        vec![100, 50, 0]
    );
    assert_eq!(found[2].tid, tids[0]);
    // first/last count matching entries.
    let even = |e: &UndoEntry| number(e) % 2 == 0;
    let page = client.undo_log(2, -3, Some(&even)).unwrap();
    assert_eq!(
        page.iter().map(number).collect::<Vec<_>>(),
        vec![124, 122, 120]
    );
    let page = client.undo_log(50, 60, Some(&even)).unwrap();
    assert_eq!(
        page.iter().map(number).collect::<Vec<_>>(),
        (0..10).map(|k| 28 - 2 * k).collect::<Vec<_>>()
    );
    let none = |_: &UndoEntry| false;
    assert!(client.undo_log(0, -20, Some(&none)).unwrap().is_empty());
    // Unfiltered slices go to the server as they are.
    let plain = client.undo_log(0, -5, None).unwrap();
    assert_eq!(
        plain.iter().map(number).collect::<Vec<_>>(),
        vec![129, 128, 127, 126, 125]
    );
    drop(client);
    server.stop();
}

/// A PersistentMapping record whose `data` maps names to references.
fn mapping_record(refs: &[(&str, Oid)]) -> Vec<u8> {
    let class = Value::global("persistent.mapping", "PersistentMapping");
    let mut out = zeo_pickle::encode(&class, Protocol::V3).unwrap();
    let data = Value::Dict(
        refs.iter()
            .map(|(k, oid)| {
                (
                    Value::str(*k),
                    Value::persistent_ref(oid.0, Some(class.clone())),
                )
            })
            .collect(),
    );
    let state = Value::Dict(vec![(Value::str("data"), data)]);
    out.extend(zeo_pickle::encode(&state, Protocol::V3).unwrap());
    out
}

#[test]
fn history_records_sizes_and_pack_with_garbage_collection() {
    let (_dir, server) = start();
    let client = ClientStorage::open(server.options()).unwrap();
    let other = ClientStorage::open(server.options()).unwrap();
    assert_eq!((client.len(), client.is_empty()), (0, true));
    assert_eq!(client.record_iternext(None).unwrap(), None, "empty storage");
    let (kept, dropped) = (client.new_oid().unwrap(), client.new_oid().unwrap());
    assert_eq!(kept, Oid(1), "oid 0 is the root");
    let t1 = commit_with(
        &client,
        &meta("build"),
        &[
            (
                Oid::ROOT,
                Tid::ZERO,
                &mapping_record(&[("kept", kept), ("dropped", dropped)]),
            ),
            (kept, Tid::ZERO, &mapping_record(&[])),
            (dropped, Tid::ZERO, &mapping_record(&[])),
        ],
    )
    .unwrap();
    assert_eq!(
        client.len(),
        3,
        "the server's info message follows each commit"
    );
    let size_after_build = client.size();
    assert!(size_after_build > 4);
    let t2 = commit_with(
        &client,
        &meta("unlink"),
        &[(Oid::ROOT, t1, &mapping_record(&[("kept", kept)]))],
    )
    .unwrap();
    let size_before_pack = client.size();
    assert!(size_before_pack > size_after_build);

    let history = client.history(Oid::ROOT, 10).unwrap();
    assert_eq!(
        history.iter().map(|h| h.tid).collect::<Vec<_>>(),
        vec![t2, t1]
    );
    assert_eq!(history[0].description, b"unlink");
    assert_eq!(client.history(Oid::ROOT, 1).unwrap().len(), 1);
    assert!(matches!(
        client.history(Oid(77), 1),
        Err(zeo_storage::Error::PosKey { .. })
    ));

    // record_iternext walks the current records in oid order.
    let mut walked = Vec::new();
    let mut next = None;
    loop {
        let record = client.record_iternext(next).unwrap().unwrap();
        walked.push((record.oid, record.tid));
        match record.next {
            Some(n) => next = Some(n),
            None => break,
        }
    }
    assert_eq!(walked, vec![(Oid::ROOT, t2), (kept, t1), (dropped, t1)]);

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    client.pack(now + 1.0, true).unwrap();
    assert!(matches!(
        client.load_serial(dropped, t1),
        Err(zeo_storage::Error::PosKey { .. })
    ));
    assert_eq!(
        client.history(Oid::ROOT, 10).unwrap().len(),
        1,
        "old root revision packed"
    );
    assert!(client.load_serial(kept, t1).is_ok());
    // Every client hears the new figures.
    wait_until("the pack's info message", || {
        other.len() == 2 && client.len() == 2 && other.size() < size_before_pack
    });
    let after: Vec<Oid> = std::iter::successors(client.record_iternext(None).unwrap(), |r| {
        r.next
            .and_then(|n| client.record_iternext(Some(n)).unwrap())
    })
    .map(|r| r.oid)
    .collect();
    assert_eq!(after, vec![Oid::ROOT, kept]);
    drop((client, other));
    server.stop();
}

#[test]
fn conflicts_are_resolved_by_the_client_hook() {
    let (_dir, server) = start();
    let calls = Arc::new(Mutex::new(Vec::<ConflictInfo>::new()));
    let seen = calls.clone();
    let mut options = server.options();
    options.conflict_resolver = Some(Arc::new(move |c: &ConflictInfo| {
        seen.lock().unwrap().push(c.clone());
        // A merge that needs all three states.
        let mut merged = c.old_data.clone().unwrap_or_default();
        merged.extend_from_slice(b"+");
        merged.extend_from_slice(&c.committed_data);
        merged.extend_from_slice(b"+");
        merged.extend_from_slice(&c.data);
        Some(merged)
    }));
    let resolving = ClientStorage::open(options).unwrap();
    let plain = ClientStorage::open(server.options()).unwrap();
    let mut plain_notices = plain.subscribe();

    let oid = plain.new_oid().unwrap();
    let untouched = plain.new_oid().unwrap();
    let base = commit(
        &plain,
        &[(oid, Tid::ZERO, b"base"), (untouched, Tid::ZERO, b"u")],
    )
    .unwrap();
    // Both start from `base`; `plain` commits first.
    let theirs = commit(&plain, &[(oid, base, b"theirs")]).unwrap();
    let txn = resolving
        .tpc_begin(&meta("resolving"), BeginOptions::default())
        .unwrap();
    resolving.store(txn, oid, base, b"ours").unwrap();
    resolving.store(txn, untouched, base, b"u2").unwrap();
    assert_eq!(
        resolving.tpc_vote(txn).unwrap(),
        vec![oid],
        "vote names the resolved oid"
    );
    let merged_tid = resolving.tpc_finish(txn, &mut |_| {}).unwrap();

    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1, "one conflict, resolved once: {calls:?}");
    let c = &calls[0];
    assert_eq!((c.oid, c.committed, c.old), (oid, theirs, base));
    assert_eq!(c.data, b"ours");
    assert_eq!(c.committed_data, b"theirs");
    assert_eq!(c.old_data.as_deref(), Some(&b"base"[..]));

    let merged = b"base+theirs+ours".to_vec();
    assert_eq!(plain.load_serial(oid, merged_tid).unwrap(), merged);
    assert_eq!(
        resolving.load(oid).unwrap(),
        (merged.clone(), merged_tid),
        "the resolver caches the merged data"
    );
    wait_invalidated(&mut plain_notices, merged_tid);
    assert_eq!(plain.load(oid).unwrap(), (merged.clone(), merged_tid));
    assert_eq!(plain.load(untouched).unwrap(), (b"u2".to_vec(), merged_tid));

    // Without a resolver the vote fails with the oid and both serials.
    let err = commit(&plain, &[(oid, theirs, b"stale")]).unwrap_err();
    assert!(
        matches!(err, zeo_storage::Error::Conflict { oid: o, committed, old } if o == oid && committed == merged_tid && old == theirs),
        "{err:?}"
    );
    drop((resolving, plain));
    server.stop();
}

/// An OOBTree record in its one-bucket form, as Python pickles it.
fn oobtree(items: &[(&str, i64)]) -> Vec<u8> {
    let flat = items
        .iter()
        .flat_map(|(k, v)| [Value::str(*k), Value::Int(*v)])
        .collect();
    let bucket = Value::Tuple(vec![Value::Tuple(flat)]);
    let state = Value::Tuple(vec![Value::Tuple(vec![bucket])]);
    zeo_pickle::encode_record(&Value::global("BTrees.OOBTree", "OOBTree"), &state).unwrap()
}

#[test]
fn btree_conflicts_a_server_returns_are_resolved_natively() {
    // A server that leaves every conflict to its clients.
    let dir = tempfile::tempdir().unwrap();
    let settings = ServerSettings {
        conflict_resolution: false,
        ..ServerSettings::default()
    };
    let server = TestServer::start(&dir.path().join("Data.fs"), 0, settings);
    let native = ClientStorage::open(server.options()).unwrap();
    let mut off = server.options();
    off.native_conflict_resolution = false;
    let off = ClientStorage::open(off).unwrap();

    let oid = native.new_oid().unwrap();
    let base_data = oobtree(&[("a", 1), ("m", 2)]);
    let base = commit(&off, &[(oid, Tid::ZERO, &base_data)]).unwrap();
    let theirs_data = oobtree(&[("a", 1), ("b", 5), ("m", 2)]);
    let theirs = commit(&off, &[(oid, base, &theirs_data)]).unwrap();

    // Without native resolution the stale insert is a conflict...
    let ours = oobtree(&[("a", 1), ("m", 2), ("z", 9)]);
    let err = commit(&off, &[(oid, base, &ours)]).unwrap_err();
    assert!(
        matches!(err, zeo_storage::Error::Conflict { committed, old, .. } if committed == theirs && old == base),
        "{err:?}"
    );
    // ...which the other client merges, as Python's client would.
    let txn = native
        .tpc_begin(&meta("native"), BeginOptions::default())
        .unwrap();
    native.store(txn, oid, base, &ours).unwrap();
    assert_eq!(native.tpc_vote(txn).unwrap(), vec![oid]);
    let merged_tid = native.tpc_finish(txn, &mut |_| {}).unwrap();
    let merged = oobtree(&[("a", 1), ("b", 5), ("m", 2), ("z", 9)]);
    assert_eq!(
        zeo_conflict::resolve(&base_data, &theirs_data, &ours).unwrap(),
        merged
    );
    assert_eq!(off.load_serial(oid, merged_tid).unwrap(), merged);
    assert_eq!(native.load(oid).unwrap(), (merged, merged_tid));
    drop((native, off));
    server.stop();
}

#[test]
fn a_resolver_that_gives_up_fails_the_vote() {
    let (_dir, server) = start();
    let mut options = server.options();
    let asked = Arc::new(Mutex::new(0));
    let count = asked.clone();
    options.conflict_resolver = Some(Arc::new(move |_: &ConflictInfo| {
        *count.lock().unwrap() += 1;
        None
    }));
    let giving_up = ClientStorage::open(options).unwrap();
    let plain = ClientStorage::open(server.options()).unwrap();
    let oid = plain.new_oid().unwrap();
    // Both create the same new object: the old serial is zero.
    let created = commit(&plain, &[(oid, Tid::ZERO, b"first")]).unwrap();
    let err = commit(&giving_up, &[(oid, Tid::ZERO, b"second")]).unwrap_err();
    assert!(
        matches!(err, zeo_storage::Error::Conflict { oid: o, committed, old: Tid::ZERO } if o == oid && committed == created),
        "{err:?}"
    );
    assert_eq!(*asked.lock().unwrap(), 1);
    // The transaction was released: the client commits again.
    let next = commit(&giving_up, &[(oid, created, b"second")]).unwrap();
    assert_eq!(plain.load_serial(oid, next).unwrap(), b"second");
    drop((giving_up, plain));
    server.stop();
}
