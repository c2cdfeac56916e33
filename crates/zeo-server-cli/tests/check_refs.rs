//! `zeo-server check --refs`: what fstest cannot see inside the pickles.

mod common;

use std::process::Command;

use common::binary;
use zeo_storage::filestorage::{FileStorage, FileStorageOptions};
use zeo_storage::interface::BeginOptions;
use zeo_storage::{Oid, Storage, Tid, TransactionMetaData};

/// A protocol-3 record of class `app.<class>` whose state is a list of
/// persistent references (bare 8-byte oids).
fn record(class: &str, refs: &[u64]) -> Vec<u8> {
    let mut r = vec![0x80, 3, b'c'];
    r.extend_from_slice(format!("app\n{class}\n").as_bytes());
    r.extend_from_slice(&[b'.', 0x80, 3, b']', b'(']);
    for oid in refs {
        r.extend_from_slice(&[b'C', 8]);
        r.extend_from_slice(&oid.to_be_bytes());
        r.push(b'Q');
    }
    r.extend_from_slice(b"e.");
    r
}

fn run_check(dir: &std::path::Path, refs: bool) -> (bool, String, String) {
    let mut cmd = Command::new(binary());
    cmd.arg("check");
    if refs {
        cmd.arg("--refs");
    }
    let out = cmd.arg("Data.fs").current_dir(dir).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_refs_reports_a_flipped_byte_and_a_missing_object() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let fs = FileStorage::open(&path, FileStorageOptions::default()).unwrap();
    let txn = fs
        .tpc_begin(&TransactionMetaData::default(), BeginOptions::default())
        .unwrap();
    fs.store(txn, Oid(0), Tid::ZERO, &record("Root", &[1, 2]))
        .unwrap();
    fs.store(txn, Oid(1), Tid::ZERO, &record("Node", &[0x4242]))
        .unwrap();
    fs.store(txn, Oid(2), Tid::ZERO, &record("Flipped", &[0]))
        .unwrap();
    fs.tpc_vote(txn).unwrap();
    fs.tpc_finish(txn, &mut |_| {}).unwrap();
    drop(fs);

    // Sound before the damage, with and without --refs... except for the
    // missing object, which only --refs sees.
    let (ok, out, _) = run_check(dir.path(), false);
    assert!(ok, "{out}");
    let (ok, out, err) = run_check(dir.path(), true);
    assert!(!ok, "{out}{err}");
    assert!(
        out.contains(&format!("oid {} tid", Oid(1)))
            && out.contains(&format!("reference to missing object {}", Oid(0x4242))),
        "{out}"
    );
    assert!(
        out.contains("refs: 3 objects, 4 references, 1 problems"),
        "{out}"
    );

    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.windows(8).position(|w| w == b"Flipped\n").unwrap() + 7;
    bytes[at] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    // The structural check cannot see it.
    let (ok, out, _) = run_check(dir.path(), false);
    assert!(ok, "{out}");
    let (ok, out, _) = run_check(dir.path(), true);
    assert!(!ok);
    assert!(out.contains(&format!("oid {} tid", Oid(2))), "{out}");
    assert!(out.contains("undecodable pickle: class pickle"), "{out}");
    assert!(out.contains("2 problems"), "{out}");
}

#[test]
fn check_refs_passes_a_sound_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let fs = FileStorage::open(&path, FileStorageOptions::default()).unwrap();
    let txn = fs
        .tpc_begin(&TransactionMetaData::default(), BeginOptions::default())
        .unwrap();
    fs.store(txn, Oid(0), Tid::ZERO, &record("Root", &[1]))
        .unwrap();
    fs.store(txn, Oid(1), Tid::ZERO, &record("Node", &[0]))
        .unwrap();
    fs.tpc_vote(txn).unwrap();
    fs.tpc_finish(txn, &mut |_| {}).unwrap();
    drop(fs);
    let (ok, out, err) = run_check(dir.path(), true);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("refs: 2 objects, 2 references, 0 problems"),
        "{out}"
    );
}
