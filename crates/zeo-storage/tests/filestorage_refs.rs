//! `check_refs`: undecodable records and references to missing objects.

mod common;

use std::path::Path;

use zeo_pickle::{encode_record, Value};
use zeo_storage::filestorage::{check, check_refs, RefProblem, RefProblemKind};
use zeo_storage::interface::BeginOptions;
use zeo_storage::{Oid, Storage, Tid, TransactionMetaData};

use common::open;
use zeo_storage::ExternalGc;

fn record(class: &str, refs: &[u64]) -> Vec<u8> {
    let state = Value::List(
        refs.iter()
            .map(|&oid| Value::persistent_ref(oid, Some(Value::global("app", "Node"))))
            .chain([Value::Int(7)])
            .collect(),
    );
    encode_record(&Value::global("app", class), &state).unwrap()
}

/// oid 0 → 1, 2; oid 1 → 0; oid 2 deleted later; oid 3 → 2 (deleted) and
/// 99 (never stored); oid 4 has a flipped byte in its class pickle; oid 5
/// has a weak reference only (not followed).
fn build(path: &Path) -> Vec<(u64, Tid)> {
    let fs = open(path);
    let meta = TransactionMetaData::default();
    let weak = encode_record(
        &Value::global("app", "Node"),
        &Value::PersistentId(Box::new(Value::List(vec![
            Value::Str("w".into()),
            Value::Tuple(vec![Value::Bytes(98u64.to_be_bytes().to_vec())]),
        ]))),
    )
    .unwrap();
    let txn = fs.tpc_begin(&meta, BeginOptions::default()).unwrap();
    for (oid, data) in [
        (0, record("Root", &[1, 2])),
        (1, record("Node", &[0])),
        (2, record("Node", &[])),
        (3, record("Node", &[2, 99])),
        (4, record("Flipped", &[1])),
        (5, weak),
    ] {
        fs.store(txn, Oid(oid), Tid::ZERO, &data).unwrap();
    }
    fs.tpc_vote(txn).unwrap();
    let t1 = fs.tpc_finish(txn, &mut |_| {}).unwrap();
    let txn = fs.tpc_begin(&meta, BeginOptions::default()).unwrap();
    fs.delete_object(txn, Oid(2), t1).unwrap();
    fs.store(txn, Oid(0), t1, &record("Root", &[1])).unwrap();
    fs.tpc_vote(txn).unwrap();
    let t2 = fs.tpc_finish(txn, &mut |_| {}).unwrap();
    drop(fs);
    // One bit of the newline ending the class name: the pickle no longer
    // decodes, and nothing but the pickle notices.
    let mut bytes = std::fs::read(path).unwrap();
    let at = bytes.windows(8).position(|w| w == b"Flipped\n").unwrap() + 7;
    bytes[at] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
    vec![(0, t2), (1, t1), (3, t1), (4, t1)]
}

#[test]
fn reports_undecodable_records_and_missing_references() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let tids = build(&path);
    // The structural check passes: FS30 has no payload checksum.
    check(&path).unwrap();

    let mut problems: Vec<RefProblem> = Vec::new();
    let report = check_refs(&path, &mut |p| problems.push(p)).unwrap();
    let t1 = tids[2].1;
    assert_eq!(
        problems,
        vec![
            RefProblem {
                oid: Oid(3),
                tid: t1,
                kind: RefProblemKind::Missing(Oid(2)),
            },
            RefProblem {
                oid: Oid(3),
                tid: t1,
                kind: RefProblemKind::Missing(Oid(99)),
            },
            RefProblem {
                oid: Oid(4),
                tid: t1,
                kind: problems[2].kind.clone(),
            },
        ]
    );
    match &problems[2].kind {
        RefProblemKind::Undecodable(why) => assert!(why.contains("class pickle"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        problems[0].to_string(),
        format!(
            "oid {} tid {t1}: reference to missing object {}",
            Oid(3),
            Oid(2)
        )
    );
    // Objects 0, 1, 3, 4, 5 (2 is deleted); references 0→1, 1→0, 3→2, 3→99.
    assert_eq!(report.objects, 5);
    assert_eq!(report.references, 4);
    assert_eq!(report.problems, 3);
}

#[test]
fn a_sound_file_has_no_problems_and_deep_nesting_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let fs = open(&path);
    let txn = fs
        .tpc_begin(&TransactionMetaData::default(), BeginOptions::default())
        .unwrap();
    fs.store(txn, Oid(0), Tid::ZERO, &record("Root", &[1]))
        .unwrap();
    fs.store(txn, Oid(1), Tid::ZERO, &record("Node", &[0]))
        .unwrap();
    // A state pickle nesting 100,000 empty lists deep: refused by the
    // decoder's depth limit, reported, and no stack overflow.
    let class = encode_record(&Value::global("app", "Deep"), &Value::None).unwrap();
    let class_len = zeo_pickle::decode_prefix(&class).unwrap().1;
    let mut bomb = class[..class_len].to_vec();
    bomb.extend_from_slice(&[0x80, 3]);
    bomb.extend(std::iter::repeat_n(b']', 100_000));
    bomb.extend(std::iter::repeat_n(b'a', 99_999));
    bomb.push(b'.');
    fs.store(txn, Oid(2), Tid::ZERO, &bomb).unwrap();
    fs.tpc_vote(txn).unwrap();
    fs.tpc_finish(txn, &mut |_| {}).unwrap();
    drop(fs);
    let mut problems = Vec::new();
    let report = check_refs(&path, &mut |p| problems.push(p)).unwrap();
    assert_eq!(report.objects, 3);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].oid, Oid(2));
    match &problems[0].kind {
        RefProblemKind::Undecodable(why) => {
            assert!(
                why.starts_with("state pickle") && why.contains("nesting deeper"),
                "{why}"
            )
        }
        other => panic!("{other:?}"),
    }
}
