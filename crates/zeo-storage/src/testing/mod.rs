//! The contract suite every [`Storage`] backend runs in its own tests,
//! exported behind the `testing` cargo feature.
//!
//! Two tiers:
//! * [`contract`]: what every backend must do. Checks of a capability the
//!   backend lacks (see [`Storage::capabilities`]) pass without running,
//!   and so do the history checks of a [`Fixture::history_free`] backend.
//!   [`contract_tests!`](crate::contract_tests) makes one `#[test]` per
//!   check.
//! * [`exact`]: what FileStorage does to the byte, the Data.fs size
//!   arithmetic, backpointers, pack and GC outcomes: for FileStorage and
//!   the models that must match it
//!   ([`filestorage_exact_tests!`](crate::filestorage_exact_tests)).
//!
//! [`model`] holds the model-based differential runner: random operation
//! sequences replayed on two storages that must agree on every outcome.
//!
//! A backend's test file needs a few lines:
//!
//! ```
//! use zeo_storage::testing::Fixture;
//! use zeo_storage::MappingStorage;
//!
//! fn make() -> Fixture<MappingStorage> {
//!     Fixture::new(MappingStorage::new("mine"))
//! }
//!
//! zeo_storage::contract_tests!(mine, make);
//! # fn main() { zeo_storage::testing::run_contract(&make); }
//! ```

use std::any::Any;
use std::ops::Deref;
use std::sync::Arc;

use crate::filestorage::FileStorageOptions;
use crate::interface::{ExternalGc, Iteration, Pack, RecordIteration, Restore, Undo};
use crate::{
    BeginOptions, FileStorage, MappingStorage, Oid, Result, Storage, Tid, TransactionMetaData,
    TxnHandle,
};

pub mod contract;
pub mod exact;
pub mod model;
pub mod shared;

pub use shared::{check_shared_commits, SharedDatabase, SharedHandle};

/// A storage under test together with whatever must outlive it (a
/// temporary directory), and what the suite may expect of it.
pub struct Fixture<S> {
    /// The storage.
    pub storage: S,
    /// Whether it keeps old revisions (`load_before`, `load_serial` and
    /// `history` reach past the current one). `true` unless
    /// [`Fixture::history_free`] says otherwise.
    pub keeps_history: bool,
    _keep: Option<Box<dyn Any + Send + Sync>>,
}

impl<S> Fixture<S> {
    /// A fixture of a storage that needs nothing else.
    pub fn new(storage: S) -> Self {
        Fixture {
            storage,
            keeps_history: true,
            _keep: None,
        }
    }

    /// A fixture that keeps `keep` (a temporary directory, say) alive as
    /// long as the storage.
    pub fn keeping(storage: S, keep: impl Any + Send + Sync) -> Self {
        Fixture {
            storage,
            keeps_history: true,
            _keep: Some(Box::new(keep)),
        }
    }

    /// Marks the storage as keeping only current revisions: the suite
    /// skips its history checks.
    pub fn history_free(mut self) -> Self {
        self.keeps_history = false;
        self
    }
}

impl<S> Deref for Fixture<S> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.storage
    }
}

/// Runs every check of the [`contract`] tier, one after another, each on a
/// fresh storage. [`contract_tests!`](crate::contract_tests) runs them as
/// separate tests instead.
pub fn run_contract<S: Storage + 'static>(make: &dyn Fn() -> Fixture<S>) {
    for (name, check) in contract::checks::<S>() {
        tracing::debug!(check = name, "contract check");
        check(make);
    }
}

/// Runs every check of the [`exact`] tier (FileStorage's own behaviour).
pub fn run_filestorage_exact<S: Storage + 'static>(make: &dyn Fn() -> Fixture<S>) {
    for (name, check) in exact::checks::<S>() {
        tracing::debug!(check = name, "exact check");
        check(make);
    }
}

/// One check of the suite: it makes the storages it needs.
pub type Check<S> = fn(&dyn Fn() -> Fixture<S>);

/// Instantiates every check of the [`contract`] tier as a `#[test]` in a
/// module `$name`, each on a fresh storage made by `$make` (a function or
/// closure returning a [`Fixture`]).
#[macro_export]
macro_rules! contract_tests {
    ($name:ident, $make:expr) => {
        $crate::__suite_tests!($name, $make, contract;
            new_oids_are_fresh, store_then_load, conflict_names_both_serials,
            load_before_reports_start_and_end, load_serial_finds_each_revision,
            last_invalidations_lists_the_newest_transactions,
            history_is_newest_first_with_metadata, read_conflicts,
            delete_object_hides_the_object, undo_reverts_a_transaction, undo_errors,
            undo_log_slices_and_filters, iterator_honours_start_and_stop,
            record_iternext_walks_every_oid, abort_discards, wrong_handles_are_refused,
            finish_callback_runs_before_readers_see, finish_in_two_halves,
            second_tpc_begin_blocks, pack_keeps_current_revisions, close_then_closed,
            close_wakes_a_waiting_tpc_begin, blobs_store_load_and_abort,
            blobs_pack_removes_files_of_removed_revisions);
    };
}

/// Instantiates every check of the [`exact`] tier as a `#[test]` in a
/// module `$name`, like [`contract_tests!`](crate::contract_tests).
#[macro_export]
macro_rules! filestorage_exact_tests {
    ($name:ident, $make:expr) => {
        $crate::__suite_tests!($name, $make, exact;
            new_oids_count_up, restore_copies_with_backpointers,
            undo_restores_previous_revisions, pack_drops_old_revisions,
            pack_keeps_what_undo_after_it_needs, gc_removes_unreachable_objects,
            gc_pack_failures, size_and_len_follow_commits);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __suite_tests {
    ($name:ident, $make:expr, $tier:ident; $($check:ident),* $(,)?) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                fn $check() {
                    $crate::testing::$tier::$check(&$make);
                }
            )*
        }
    };
}

/// The oid with this number.
pub(crate) fn oid(n: u64) -> Oid {
    Oid(n)
}

/// A pack time just after `tid`, returned once the clock has passed it, so
/// that the next transaction's tid is later than the pack time.
pub(crate) fn pack_time_after(tid: Tid) -> f64 {
    // A microsecond is well above an f64 Unix time's resolution (~240 ns).
    let at = tid.unix_time() + 1e-6;
    // Spins for about two microseconds: tids follow the wall clock.
    for _ in 0..100_000_000u64 {
        if crate::TimeStamp::now().unix_time() > at + 1e-6 {
            return at;
        }
        std::hint::spin_loop();
    }
    panic!("the clock did not pass {at}");
}

/// The storage's [`Undo`]; the check needs it.
pub fn undo_of<S: Storage + ?Sized>(s: &S) -> &dyn Undo {
    s.as_undo().expect("the check needs the undo capability")
}

/// The storage's [`Restore`]; the check needs it.
pub fn restore_of<S: Storage + ?Sized>(s: &S) -> &dyn Restore {
    s.as_restore()
        .expect("the check needs the restore capability")
}

/// The storage's [`Iteration`]; the check needs it.
pub fn iteration_of<S: Storage + ?Sized>(s: &S) -> &dyn Iteration {
    s.as_iteration()
        .expect("the check needs the iteration capability")
}

/// The storage's [`RecordIteration`]; the check needs it.
pub fn record_iteration_of<S: Storage + ?Sized>(s: &S) -> &dyn RecordIteration {
    s.as_record_iteration()
        .expect("the check needs the current-record iteration capability")
}

/// The storage's [`Pack`]; the check needs it.
pub fn pack_of<S: Storage + ?Sized>(s: &S) -> &dyn Pack {
    s.as_pack().expect("the check needs the pack capability")
}

/// The storage's [`ExternalGc`]; the check needs it.
pub fn external_gc_of<S: Storage + ?Sized>(s: &S) -> &dyn ExternalGc {
    s.as_external_gc()
        .expect("the check needs the external GC capability")
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

/// A fresh in-memory storage with its blobs in a temporary directory.
pub fn mapping_storage_with_blobs() -> Fixture<MappingStorage> {
    let dir = tempfile::tempdir().unwrap();
    let m = MappingStorage::with_blob_dir("test", dir.path().join("blobs")).unwrap();
    Fixture::keeping(m, dir)
}

/// A fresh FileStorage with a blob directory, in a temporary directory.
pub fn file_storage_with_blobs() -> Fixture<FileStorage> {
    let dir = tempfile::tempdir().unwrap();
    let fs = FileStorage::open_with_blobs(
        dir.path().join("Data.fs"),
        FileStorageOptions::default(),
        dir.path().join("blobs"),
    )
    .unwrap();
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

/// Transaction metadata with user `tester` and the given description.
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
        oids = undo_of(s).undo(t, &id)?;
        Ok(())
    })?;
    Ok((new, oids))
}

/// The undo id of `tid` as the undo log lists it.
pub fn undo_id<S: Storage + ?Sized>(s: &S, tid: Tid) -> Vec<u8> {
    undo_of(s)
        .undo_log(0, -1_000_000, None)
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
