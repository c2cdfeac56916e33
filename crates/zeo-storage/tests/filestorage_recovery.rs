//! Opening damaged files: incomplete tails are cut off into `Data.fs.trN`
//! the way ZODB does it, damage elsewhere is a format error that names the
//! offset and leaves the file alone.

mod common;

use std::path::{Path, PathBuf};

use zeo_storage::filestorage::{check, FileStorage, FileStorageOptions};
use zeo_storage::interface::BeginOptions;
use zeo_storage::{Error, Oid, Storage, Tid, TransactionMetaData};

use common::commit_as;
use zeo_storage::Iteration;

fn open(path: &Path) -> Result<FileStorage, Error> {
    FileStorage::open(path, FileStorageOptions::default())
}

fn open_ro(path: &Path) -> Result<FileStorage, Error> {
    FileStorage::open(
        path,
        FileStorageOptions {
            read_only: true,
            ..Default::default()
        },
    )
}

fn commit(fs: &FileStorage, stores: &[(u64, Tid, &[u8])]) -> Tid {
    commit_as(fs, &TransactionMetaData::default(), stores)
}

/// A file with three transactions; returns the path, the transaction
/// positions and the tids.
fn sample(dir: &Path) -> (PathBuf, Vec<u64>, Vec<Tid>) {
    let path = dir.join("Data.fs");
    let fs = open(&path).unwrap();
    let mut positions = vec![fs.size()];
    let t1 = commit(&fs, &[(0, Tid::ZERO, b"root 1"), (1, Tid::ZERO, b"one 1")]);
    positions.push(fs.size());
    let t2 = commit(&fs, &[(1, t1, b"one 2")]);
    positions.push(fs.size());
    let t3 = commit(&fs, &[(0, t1, b"root 2")]);
    positions.push(fs.size());
    fs.close().unwrap();
    std::fs::remove_file(dir.join("Data.fs.index")).unwrap();
    (path, positions, vec![t1, t2, t3])
}

fn format_error(r: Result<FileStorage, Error>) -> (u64, String) {
    match r {
        Err(Error::Format { pos, reason, .. }) => (pos, reason),
        Err(other) => panic!("expected a format error, got {other}"),
        Ok(_) => panic!("expected a format error, the open succeeded"),
    }
}

#[test]
fn checkpoint_tail_goes_to_tr_file() {
    let dir = tempfile::tempdir().unwrap();
    let (path, positions, tids) = sample(dir.path());
    let fs = open(&path).unwrap();
    let txn = fs
        .tpc_begin(&TransactionMetaData::default(), BeginOptions::default())
        .unwrap();
    fs.store(txn, Oid(1), tids[1], b"voted, never finished")
        .unwrap();
    fs.tpc_vote(txn).unwrap();
    // A crash now: copy the file as it stands.
    let crashed = dir.path().join("crashed.fs");
    std::fs::copy(&path, &crashed).unwrap();
    fs.tpc_abort(txn);
    drop(fs);
    let bytes = std::fs::read(&crashed).unwrap();
    let end = positions[3] as usize;
    assert_eq!(bytes[end + 16], b'c');
    assert!(check(&crashed).is_err());

    // Read-only: the tail is ignored and the file left alone.
    let ro = open_ro(&crashed).unwrap();
    assert_eq!(ro.size(), positions[3]);
    assert_eq!(ro.load(Oid(1)).unwrap(), (b"one 2".to_vec(), tids[1]));
    drop(ro);
    assert_eq!(std::fs::read(&crashed).unwrap(), bytes);
    assert!(!dir.path().join("crashed.fs.tr0").exists());

    let fs = open(&crashed).unwrap();
    assert_eq!(fs.size(), positions[3]);
    assert_eq!(fs.last_transaction(), tids[2]);
    assert_eq!(
        std::fs::read(dir.path().join("crashed.fs.tr0")).unwrap(),
        &bytes[end..]
    );
    assert_eq!(std::fs::metadata(&crashed).unwrap().len(), positions[3]);
    commit(&fs, &[(1, tids[1], b"one 3")]);
    drop(fs);
    check(&crashed).unwrap();
}

#[test]
fn cut_transaction_and_partial_header_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (path, positions, tids) = sample(dir.path());
    let full = std::fs::read(&path).unwrap();

    // The last transaction cut in the middle.
    std::fs::write(&path, &full[..full.len() - 20]).unwrap();
    let fs = open(&path).unwrap();
    assert_eq!(fs.size(), positions[2]);
    assert_eq!(fs.last_transaction(), tids[1]);
    assert_eq!(fs.load(Oid(0)).unwrap().0, b"root 1");
    drop(fs);
    let tr0 = std::fs::read(dir.path().join("Data.fs.tr0")).unwrap();
    assert_eq!(tr0, &full[positions[2] as usize..full.len() - 20]);

    // Again: the next free name is used.
    std::fs::write(&path, &full[..full.len() - 1]).unwrap();
    std::fs::remove_file(dir.path().join("Data.fs.index")).unwrap();
    drop(open(&path).unwrap());
    assert!(dir.path().join("Data.fs.tr1").exists());

    // A partial header: cut without a .tr file, as ZODB does.
    let mut junk = full.clone();
    junk.extend_from_slice(&[1, 2, 3, 4, 5]);
    std::fs::write(&path, &junk).unwrap();
    std::fs::remove_file(dir.path().join("Data.fs.index")).unwrap();
    let fs = open(&path).unwrap();
    assert_eq!(fs.size(), positions[3]);
    assert_eq!(fs.last_transaction(), tids[2]);
    drop(fs);
    assert_eq!(std::fs::read(&path).unwrap(), full);
    assert!(!dir.path().join("Data.fs.tr2").exists());
}

#[test]
fn bad_magic_is_a_format_error() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _, _) = sample(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[..4].copy_from_slice(b"FS21");
    std::fs::write(&path, &bytes).unwrap();
    let (pos, reason) = format_error(open(&path));
    assert_eq!(pos, 0);
    assert!(reason.contains("FS21"), "{reason}");
    bytes[..4].copy_from_slice(b"\x89PNG");
    std::fs::write(&path, &bytes).unwrap();
    let (_, reason) = format_error(open_ro(&path));
    assert!(reason.contains("magic"), "{reason}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    std::fs::write(&path, b"FS").unwrap();
    format_error(open(&path));
}

/// Corrupts a copy of the file's bytes in place.
type Damage = Box<dyn Fn(&mut Vec<u8>)>;

#[test]
fn damage_in_the_middle_is_reported_and_nothing_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let (path, positions, _) = sample(dir.path());
    let good = std::fs::read(&path).unwrap();
    let t2 = positions[1] as usize;
    let t2_first_record = t2 + 23;
    let t3 = positions[2];

    let cases: Vec<(&str, Damage, u64)> = vec![
        // tloc of the second transaction's record no longer points at it.
        (
            "tloc",
            Box::new(move |b: &mut Vec<u8>| b[t2_first_record + 31] ^= 0x40),
            t2_first_record as u64,
        ),
        // Its length points past the end of the file.
        (
            "tlen past EOF",
            Box::new(move |b: &mut Vec<u8>| b[t2 + 9] = 0x7f),
            t2 as u64,
        ),
        // The redundant length disagrees.
        (
            "redundant length",
            Box::new(move |b: &mut Vec<u8>| {
                let at = t3 as usize - 1;
                b[at] ^= 1;
            }),
            t3 - 8,
        ),
        // The data length runs past the transaction.
        (
            "plen",
            Box::new(move |b: &mut Vec<u8>| b[t2_first_record + 40] = 0x70),
            t2_first_record as u64,
        ),
        // A version length.
        (
            "vlen",
            Box::new(move |b: &mut Vec<u8>| b[t2_first_record + 33] = 1),
            t2_first_record as u64,
        ),
        // A header length larger than the transaction.
        (
            "header length",
            Box::new(move |b: &mut Vec<u8>| b[t2 + 19] = 0x40),
            t2 as u64,
        ),
    ];
    for (name, damage, want_pos) in cases {
        let mut bytes = good.clone();
        damage(&mut bytes);
        std::fs::write(&path, &bytes).unwrap();
        for read_only in [true, false] {
            let r = if read_only {
                open_ro(&path)
            } else {
                open(&path)
            };
            let (pos, reason) = format_error(r);
            assert_eq!(pos, want_pos, "{name}: {reason}");
            assert_eq!(
                std::fs::read(&path).unwrap(),
                bytes,
                "{name}: file modified"
            );
        }
        assert!(check(&path).is_err(), "{name}: check passed");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tr"))
            .collect();
        assert!(leftovers.is_empty(), "{name}: {leftovers:?}");
    }
}

#[test]
fn damaged_record_found_by_a_read_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (path, positions, tids) = sample(dir.path());
    // Open with a good index, then damage the data under the storage: the
    // second transaction's record now claims another oid.
    let fs = open_ro(&path).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let rec = positions[1] as usize + 23;
    bytes[rec + 7] = 9;
    std::fs::write(&path, &bytes).unwrap();
    match fs.load_before(Oid(1), tids[1]) {
        Err(Error::Format { pos, reason, .. }) => {
            assert_eq!(pos, rec as u64);
            assert!(reason.contains("oid"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(fs.history(Oid(1), 5).is_err());
    assert!(fs.iterator(None, None).unwrap().any(|t| t.is_ok()));
}

#[test]
fn check_reports_what_fstest_reports() {
    let dir = tempfile::tempdir().unwrap();
    let (path, positions, tids) = sample(dir.path());
    let r = check(&path).unwrap();
    assert_eq!(r.transactions, 3);
    assert_eq!(r.data_records, 4);
    assert_eq!(r.last_tid, tids[2]);
    assert_eq!(r.size, positions[3]);

    let good = std::fs::read(&path).unwrap();
    let mut bytes = good.clone();
    // Swap the tids of the first two transactions: a time-stamp reduction.
    let (a, b) = (positions[0] as usize, positions[1] as usize);
    let ta: Vec<u8> = bytes[a..a + 8].to_vec();
    let tb: Vec<u8> = bytes[b..b + 8].to_vec();
    bytes[a..a + 8].copy_from_slice(&tb);
    bytes[b..b + 8].copy_from_slice(&ta);
    std::fs::write(&path, &bytes).unwrap();
    match check(&path) {
        Err(Error::Format { pos, reason, .. }) => {
            assert_eq!(pos, positions[1]);
            assert!(reason.contains("time-stamp reduction"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    std::fs::write(&path, &good[..good.len() - 3]).unwrap();
    match check(&path) {
        Err(Error::Format { pos, reason, .. }) => {
            assert_eq!(pos, positions[2]);
            assert!(reason.contains("truncated"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    std::fs::write(&path, b"").unwrap();
    assert!(check(&path).is_err());
}
