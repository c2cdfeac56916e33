//! `check_refs` finds the dangling references ZODB's `fsrefs` finds. Needs
//! the Python venvs (`cargo xtask venv`).

use std::collections::BTreeSet;
use std::process::Command;

use zeo_pickle::{encode_record, Value};
use zeo_storage::filestorage::{check_refs, FileStorage, FileStorageOptions, RefProblemKind};
use zeo_storage::interface::BeginOptions;
use zeo_storage::ExternalGc;
use zeo_storage::{Oid, Storage, Tid, TransactionMetaData};
use zeo_testkit::python6;

fn record(refs: &[u64]) -> Vec<u8> {
    let state = Value::List(
        refs.iter()
            .map(|&oid| Value::persistent_ref(oid, Some(Value::global("app", "Node"))))
            .collect(),
    );
    encode_record(&Value::global("app", "Node"), &state).unwrap()
}

#[test]
fn check_refs_and_fsrefs_find_the_same_dangling_references() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let fs = FileStorage::open(&path, FileStorageOptions::default()).unwrap();
    let meta = TransactionMetaData::default();
    let txn = fs.tpc_begin(&meta, BeginOptions::default()).unwrap();
    for (oid, refs) in [
        (0u64, vec![1u64, 2, 3]),
        (1, vec![0x4242]),
        (2, vec![]),
        (3, vec![2, 0x77, 1]),
        (4, vec![0]),
    ] {
        fs.store(txn, Oid(oid), Tid::ZERO, &record(&refs)).unwrap();
    }
    fs.tpc_vote(txn).unwrap();
    let t1 = fs.tpc_finish(txn, &mut |_| {}).unwrap();
    let txn = fs.tpc_begin(&meta, BeginOptions::default()).unwrap();
    fs.delete_object(txn, Oid(2), t1).unwrap();
    fs.tpc_vote(txn).unwrap();
    fs.tpc_finish(txn, &mut |_| {}).unwrap();
    drop(fs);

    let mut ours = BTreeSet::new();
    check_refs(&path, &mut |p| match p.kind {
        RefProblemKind::Missing(to) => {
            ours.insert((p.oid.0, to.0));
        }
        other => panic!("{other:?}"),
    })
    .unwrap();

    let out = Command::new(python6())
        .args([
            "-c",
            "import sys, ZODB.scripts.fsrefs as f; f.main(sys.argv[1])",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    // "oid 0x3 app.Node" starts a report, "\toid 0x77 missing: ..." lines
    // name what it refers to.
    let mut theirs = BTreeSet::new();
    let mut from = None;
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("oid ") {
            from = Some(hex(rest.split_whitespace().next().unwrap()));
        } else if let Some(rest) = line.strip_prefix("\toid ") {
            theirs.insert((from.unwrap(), hex(rest.split_whitespace().next().unwrap())));
        }
    }
    assert_eq!(
        ours,
        BTreeSet::from([(0, 2), (1, 0x4242), (3, 2), (3, 0x77)]),
        "{text}"
    );
    assert_eq!(ours, theirs, "fsrefs said:\n{text}");
}
