//! Packs interleaved with commits and crashes, through the stage hooks.

use std::cell::RefCell;
use std::rc::Rc;

use super::*;
use crate::filestorage::FileStorageOptions;
use crate::ids::Oid;
use crate::interface::Undo;
use crate::interface::{BeginOptions, Storage, TransactionMetaData};

fn commit(fs: &FileStorage, tid: Option<Tid>, stores: &[(u64, &[u8])]) -> Tid {
    let meta = TransactionMetaData {
        user: Vec::new(),
        description: b"t".to_vec(),
        extension: Vec::new(),
    };
    let txn = fs
        .tpc_begin(
            &meta,
            BeginOptions {
                tid,
                ..BeginOptions::default()
            },
        )
        .unwrap();
    for (oid, data) in stores {
        let serial = fs.get_tid(Oid(*oid)).unwrap_or(Tid::ZERO);
        fs.store(txn, Oid(*oid), serial, data).unwrap();
    }
    fs.tpc_vote(txn).unwrap();
    fs.tpc_finish(txn, &mut |_| {}).unwrap()
}

#[test]
fn commits_made_while_copying_and_before_the_lock_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let fs = Arc::new(FileStorage::open(&path, FileStorageOptions::default()).unwrap());
    let base = 1_700_000_000.0;
    let at = |s: f64| TimeStamp::from_unix(base + s).tid();
    commit(&fs, Some(at(1.0)), &[(0, b"root-1"), (1, b"one-1")]);
    commit(&fs, Some(at(2.0)), &[(1, b"one-2")]);
    let t3 = commit(&fs, Some(at(3.0)), &[(1, b"one-3")]);

    let during: Rc<RefCell<Vec<(Stage, Tid)>>> = Rc::default();
    {
        let fs = Arc::clone(&fs);
        let during = Rc::clone(&during);
        HOOK.with(|h| {
            *h.borrow_mut() = Some(Box::new(move |stage: Stage| {
                // Undo is disabled while a pack runs, as in ZODB.
                assert!(matches!(fs.undo_log(0, 10, None), Err(Error::Undo { .. })));
                let data: &[u8] = match stage {
                    Stage::CopiedToPackTime => b"one-during-copy",
                    Stage::BeforeCommitLock => b"one-before-lock",
                };
                let tid = commit(&fs, None, &[(1, data), (2, data)]);
                during.borrow_mut().push((stage, tid));
            }))
        });
    }
    let result = pack(&fs, base + 2.5, false);
    HOOK.with(|h| h.borrow_mut().take());
    result.unwrap();

    let during = during.borrow();
    assert_eq!(
        during.iter().map(|d| d.0).collect::<Vec<_>>(),
        [Stage::CopiedToPackTime, Stage::BeforeCommitLock]
    );
    let (t_copy, t_lock) = (during[0].1, during[1].1);
    assert_eq!(
        fs.load(Oid(1)).unwrap(),
        (b"one-before-lock".to_vec(), t_lock)
    );
    let r = fs.load_before(Oid(1), t_lock).unwrap().unwrap();
    assert_eq!(
        (r.data, r.start, r.end),
        (b"one-during-copy".to_vec(), t_copy, Some(t_lock))
    );
    let r = fs.load_before(Oid(2), t_lock).unwrap().unwrap();
    assert_eq!((r.start, r.end), (t_copy, Some(t_lock)));
    assert_eq!(fs.load_serial(Oid(1), t3).unwrap(), b"one-3");
    assert_eq!(fs.load_before(Oid(1), at(2.0)).unwrap(), None);
    assert!(fs.undo_log(0, 10, None).is_ok());
    let report = crate::filestorage::check(&path).unwrap();
    assert_eq!(report.size, fs.size());
    assert_eq!(report.transactions, 5);

    // The old file holds everything committed before the switch.
    let old = crate::filestorage::check(&append_suffix(&path, ".old")).unwrap();
    assert_eq!(old.transactions, 5);
    assert_eq!(old.last_tid, t_lock);
}

#[test]
fn a_pack_that_dies_before_the_switch_leaves_the_old_file_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let at = |s: f64| TimeStamp::from_unix(1_700_000_000.0 + s).tid();
    let fs = FileStorage::open(&path, FileStorageOptions::default()).unwrap();
    commit(&fs, Some(at(1.0)), &[(0, b"root-1"), (1, b"one-1")]);
    commit(&fs, Some(at(2.0)), &[(1, b"one-2")]);
    commit(&fs, Some(at(3.0)), &[(1, b"one-3")]);
    fs.close().unwrap();
    let before = std::fs::read(&path).unwrap();

    for stage in [Stage::CopiedToPackTime, Stage::BeforeCommitLock] {
        let fs = FileStorage::open(&path, FileStorageOptions::default()).unwrap();
        HOOK.with(|h| {
            *h.borrow_mut() = Some(Box::new(move |s: Stage| {
                if s == stage {
                    panic!("simulated crash");
                }
            }))
        });
        let died = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pack(&fs, 1_700_000_002.5, false)
        }));
        HOOK.with(|h| h.borrow_mut().take());
        assert!(died.is_err());
        // The partial Data.fs.pack is left behind, as after a crash.
        assert!(append_suffix(&path, ".pack").exists());
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert_eq!(fs.load(Oid(1)).unwrap().0, b"one-3");
        drop(fs);
        let fs = FileStorage::open(&path, FileStorageOptions::default()).unwrap();
        assert_eq!(fs.load_serial(Oid(1), at(1.0)).unwrap(), b"one-1");
        fs.close().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    // The next pack overwrites the leftover and succeeds.
    let fs = FileStorage::open(&path, FileStorageOptions::default()).unwrap();
    pack(&fs, 1_700_000_002.5, false).unwrap();
    assert!(!append_suffix(&path, ".pack").exists());
    assert_eq!(std::fs::read(append_suffix(&path, ".old")).unwrap(), before);
    assert_eq!(fs.load_before(Oid(1), at(2.0)).unwrap(), None);
    assert_eq!(fs.load_serial(Oid(1), at(2.0)).unwrap(), b"one-2");
}

#[test]
fn a_second_concurrent_pack_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let fs = Arc::new(FileStorage::open(&path, FileStorageOptions::default()).unwrap());
    let at = |s: f64| TimeStamp::from_unix(1_700_000_000.0 + s).tid();
    commit(&fs, Some(at(1.0)), &[(0, b"root-1")]);
    commit(&fs, Some(at(2.0)), &[(0, b"root-2")]);
    commit(&fs, Some(at(3.0)), &[(0, b"root-3")]);
    let seen: Rc<RefCell<Vec<String>>> = Rc::default();
    {
        let fs = Arc::clone(&fs);
        let seen = Rc::clone(&seen);
        HOOK.with(|h| {
            *h.borrow_mut() = Some(Box::new(move |_| {
                seen.borrow_mut()
                    .push(pack(&fs, 1_700_000_010.0, false).unwrap_err().to_string());
            }))
        });
    }
    let result = pack(&fs, 1_700_000_002.5, false);
    HOOK.with(|h| h.borrow_mut().take());
    result.unwrap();
    assert_eq!(seen.borrow().len(), 2);
    assert!(
        seen.borrow().iter().all(|m| m.contains("Already packing")),
        "{:?}",
        seen.borrow()
    );
    // And once it is over, packing works again.
    pack(&fs, 1_700_000_010.0, false).unwrap();
}
