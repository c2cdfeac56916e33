//! Helpers shared by the model test suites:
//! real ZODB object records and storage fixtures.
#![allow(dead_code)]

use std::any::Any;
use std::ops::Deref;
use std::sync::Arc;

use zeo_storage::filestorage::FileStorageOptions;
use zeo_storage::{
    BeginOptions, FileStorage, MappingStorage, Oid, Result, Storage, Tid, TransactionMetaData,
    TxnHandle,
};

/// A storage together with whatever must outlive it (a temporary directory).
pub struct Fixture<S> {
    pub storage: S,
    _keep: Option<Box<dyn Any + Send + Sync>>,
}

impl<S> Fixture<S> {
    pub fn new(storage: S) -> Self {
        Fixture {
            storage,
            _keep: None,
        }
    }

    pub fn keeping(storage: S, keep: impl Any + Send + Sync) -> Self {
        Fixture {
            storage,
            _keep: Some(Box::new(keep)),
        }
    }
}

impl<S> Deref for Fixture<S> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.storage
    }
}

/// Scans the records [`record`] builds for their references. The suites use
/// the crate's real scanner once it is available; this one only knows the
/// exact shape [`record`] writes, so it cannot hide scanner bugs either way.
pub fn scan_test_references(data: &[u8]) -> Result<Vec<Oid>> {
    const TAIL: &[u8] = b"cpersistent.mapping\nPersistentMapping\n\x86Q";
    let mut out = Vec::new();
    let mut i = 0;
    while i + 10 + TAIL.len() <= data.len() {
        if data[i] == b'C' && data[i + 1] == 8 && &data[i + 10..i + 10 + TAIL.len()] == TAIL {
            out.push(Oid::from_slice(&data[i + 2..i + 10]).unwrap());
            i += 10 + TAIL.len();
        } else {
            i += 1;
        }
    }
    Ok(out)
}

/// A fresh in-memory storage (finding references with the pickle scanner,
/// as FileStorage does).
pub fn mapping_storage() -> Fixture<MappingStorage> {
    Fixture::new(MappingStorage::new("test"))
}

/// A fresh in-memory storage that finds references with
/// [`scan_test_references`] instead of the pickle scanner.
pub fn mapping_storage_with_test_scanner() -> Fixture<MappingStorage> {
    Fixture::new(MappingStorage::with_references(
        "test",
        Arc::new(scan_test_references),
    ))
}

/// A fresh FileStorage in a temporary directory.
pub fn file_storage() -> Fixture<FileStorage> {
    let dir = tempfile::tempdir().unwrap();
    let fs = FileStorage::open(dir.path().join("Data.fs"), FileStorageOptions::default()).unwrap();
    Fixture::keeping(fs, dir)
}

fn push_unicode(out: &mut Vec<u8>, s: &str) {
    out.push(b'X');
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A real ZODB record of a `persistent.mapping.PersistentMapping` whose
/// `data` dict maps `r0`, `r1`, ... to persistent references to `refs` and
/// `payload` to the given bytes (so records differ when payloads do).
/// Protocol 3, as ZODB writes it.
pub fn record(refs: &[Oid], payload: &[u8]) -> Vec<u8> {
    const CLASS: &[u8] = b"cpersistent.mapping\nPersistentMapping\n";
    let mut out = Vec::new();
    out.extend_from_slice(b"\x80\x03");
    out.extend_from_slice(CLASS);
    out.push(b'.');
    out.extend_from_slice(b"\x80\x03}");
    push_unicode(&mut out, "data");
    out.extend_from_slice(b"}(");
    for (i, oid) in refs.iter().enumerate() {
        push_unicode(&mut out, &format!("r{i}"));
        out.extend_from_slice(b"C\x08");
        out.extend_from_slice(&oid.to_bytes());
        out.extend_from_slice(CLASS);
        out.extend_from_slice(b"\x86Q");
    }
    push_unicode(&mut out, "payload");
    out.push(b'B');
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(b"us.");
    out
}

pub fn meta(description: &str) -> TransactionMetaData {
    TransactionMetaData {
        user: b"tester".to_vec(),
        description: description.as_bytes().to_vec(),
        extension: Vec::new(),
    }
}

/// Commits one transaction of stores `(oid, serial, data)`.
pub fn commit<S: Storage + ?Sized>(s: &S, stores: &[(Oid, Tid, Vec<u8>)]) -> Result<Tid> {
    commit_with(s, &meta("commit"), BeginOptions::default(), |s, t| {
        for (oid, serial, data) in stores {
            s.store(t, *oid, *serial, data)?;
        }
        Ok(())
    })
}

/// Begins, runs `body`, votes and finishes; aborts when anything fails.
pub fn commit_with<S: Storage + ?Sized>(
    s: &S,
    meta: &TransactionMetaData,
    options: BeginOptions,
    body: impl FnOnce(&S, TxnHandle) -> Result<()>,
) -> Result<Tid> {
    let t = s.tpc_begin(meta, options)?;
    let result = body(s, t)
        .and_then(|()| s.tpc_vote(t))
        .and_then(|_| s.tpc_finish(t, &mut |_| {}));
    if result.is_err() {
        s.tpc_abort(t);
    }
    result
}

/// Undoes the transaction `tid` in a transaction of its own.
pub fn undo<S: Storage + ?Sized>(s: &S, tid: Tid) -> Result<(Tid, Vec<Oid>)> {
    let mut oids = Vec::new();
    let id = undo_id(s, tid);
    let new = commit_with(s, &meta("undo"), BeginOptions::default(), |s, t| {
        oids = s.undo(t, &id)?;
        Ok(())
    })?;
    Ok((new, oids))
}

/// The undo id of `tid` as the undo log lists it.
pub fn undo_id<S: Storage + ?Sized>(s: &S, tid: Tid) -> Vec<u8> {
    s.undo_log(0, -1_000_000, None)
        .unwrap()
        .into_iter()
        .find(|e| e.tid == tid)
        .map(|e| e.id)
        .unwrap_or_else(|| panic!("{tid} not in the undo log"))
}

/// Standard base64 of a tid: how ZODB spells undo ids.
pub fn b64(tid: Tid) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = tid.to_bytes();
    let mut out = Vec::new();
    for chunk in bytes.chunks(3) {
        let mut n = 0u32;
        for i in 0..3 {
            n = (n << 8) | u32::from(chunk.get(i).copied().unwrap_or(0));
        }
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]);
            } else {
                out.push(b'=');
            }
        }
    }
    out
}
