//! A storage backend in about a hundred lines: every object's current
//! revision in memory, no history, no undo, no pack. It meets the
//! `zeo_storage` contract (its tests run `zeo_storage::contract_tests!`)
//! and `zeo-server` serves it to Python ZODB clients; `docs/backends.md`
//! walks through it.
//!
//! ```
//! use zeo_example_backend::CurrentOnly;
//! use zeo_storage::{BeginOptions, Oid, Storage, Tid, TransactionMetaData};
//!
//! let storage = CurrentOnly::new("example");
//! let txn = storage.tpc_begin(&TransactionMetaData::default(), BeginOptions::default())?;
//! storage.store(txn, Oid::ROOT, Tid::ZERO, b"root record")?;
//! storage.tpc_vote(txn)?;
//! let tid = storage.tpc_finish(txn, &mut |_| {})?;
//! assert_eq!(storage.load(Oid::ROOT)?, (b"root record".to_vec(), tid));
//! # Ok::<(), zeo_storage::Error>(())
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, RwLock};

use zeo_storage::{
    BeginOptions, Error, LoadedRevision, Oid, Result, Storage, Tid, TimeStamp, TransactionMetaData,
    TxnHandle,
};

/// Each object's current tid and data.
type Objects = BTreeMap<Oid, (Tid, Vec<u8>)>;

/// Current revisions in memory; the tid is chosen at finish.
#[derive(Default)]
pub struct CurrentOnly {
    name: String,
    /// Committed state: each object's tid and data, and the last tid.
    state: RwLock<(Objects, Tid)>,
    /// The transaction holding the commit lock, if any.
    pending: Mutex<Option<Pending>>,
    lock_free: Condvar,
    handles: AtomicU64,
    max_oid: AtomicU64,
    closed: AtomicBool,
}

struct Pending {
    handle: TxnHandle,
    writes: BTreeMap<Oid, Vec<u8>>,
    voted: bool,
}

impl CurrentOnly {
    /// An empty storage.
    pub fn new(name: &str) -> Self {
        CurrentOnly {
            name: name.into(),
            ..Default::default()
        }
    }

    fn open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    fn current(&self, oid: Oid) -> Result<(Tid, Vec<u8>)> {
        self.open()?;
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state.0.get(&oid).cloned().ok_or(Error::pos_key(oid))
    }

    fn lock(&self) -> MutexGuard<'_, Option<Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the transaction `txn` names, which must be the current one.
    fn with_txn<T>(&self, txn: TxnHandle, f: impl FnOnce(&mut Pending) -> Result<T>) -> Result<T> {
        self.open()?;
        match self.lock().as_mut() {
            Some(p) if p.handle == txn => f(p),
            _ => Err(Error::Transaction("not the current transaction".into())),
        }
    }
}

impl Storage for CurrentOnly {
    fn name(&self) -> &str {
        &self.name
    }
    fn is_read_only(&self) -> bool {
        false
    }
    fn size(&self) -> u64 {
        self.state
            .read()
            .map_or(0, |s| s.0.values().map(|(_, d)| d.len() as u64).sum())
    }
    fn len(&self) -> u64 {
        self.state.read().map_or(0, |s| s.0.len() as u64)
    }
    fn last_transaction(&self) -> Tid {
        self.state.read().map_or(Tid::ZERO, |s| s.1)
    }
    // Every call answers from memory: the server may call it on its async workers.
    fn may_block(&self) -> bool {
        false
    }

    fn load(&self, oid: Oid) -> Result<(Vec<u8>, Tid)> {
        self.current(oid).map(|(tid, data)| (data, tid))
    }

    fn load_before(&self, oid: Oid, before: Tid) -> Result<Option<LoadedRevision>> {
        // Without history, only the current revision can answer.
        let (start, data) = self.current(oid)?;
        Ok((start < before).then_some(LoadedRevision {
            data,
            start,
            end: None,
        }))
    }

    fn load_serial(&self, oid: Oid, serial: Tid) -> Result<Vec<u8>> {
        match self.current(oid)? {
            (tid, data) if tid == serial => Ok(data),
            _ => Err(Error::PosKey {
                oid,
                serial: Some(serial),
            }),
        }
    }

    fn new_oid(&self) -> Result<Oid> {
        self.open()?;
        Ok(Oid(self.max_oid.fetch_add(1, Ordering::AcqRel) + 1))
    }

    fn tpc_begin(&self, _meta: &TransactionMetaData, options: BeginOptions) -> Result<TxnHandle> {
        if options != BeginOptions::default() {
            return Err(Error::Unsupported("restore"));
        }
        let mut pending = self.lock();
        while pending.is_some() && !self.closed.load(Ordering::Acquire) {
            pending = self
                .lock_free
                .wait(pending)
                .unwrap_or_else(|e| e.into_inner());
        }
        self.open()?;
        let handle = TxnHandle(self.handles.fetch_add(1, Ordering::AcqRel));
        *pending = Some(Pending {
            handle,
            writes: BTreeMap::new(),
            voted: false,
        });
        Ok(handle)
    }

    fn transaction_tid(&self, txn: TxnHandle) -> Result<Option<Tid>> {
        self.with_txn(txn, |_| Ok(None))
    }

    fn store(&self, txn: TxnHandle, oid: Oid, serial: Tid, data: &[u8]) -> Result<()> {
        self.with_txn(txn, |p| {
            let committed = self.current(oid).map_or(Tid::ZERO, |(tid, _)| tid);
            if committed != serial {
                return Err(Error::Conflict {
                    oid,
                    committed,
                    old: serial,
                });
            }
            self.max_oid.fetch_max(oid.0, Ordering::AcqRel);
            p.writes.insert(oid, data.to_vec());
            Ok(())
        })
    }

    fn check_current_serial(&self, txn: TxnHandle, oid: Oid, serial: Tid) -> Result<()> {
        self.with_txn(txn, |_| Ok(()))?;
        match self.current(oid)?.0 {
            committed if committed != serial => Err(Error::ReadConflict {
                oid,
                committed,
                old: serial,
            }),
            _ => Ok(()),
        }
    }

    fn tpc_vote(&self, txn: TxnHandle) -> Result<Vec<Oid>> {
        self.with_txn(txn, |p| {
            p.voted = true;
            Ok(Vec::new())
        })
    }

    fn tpc_finish(&self, txn: TxnHandle, on_commit: &mut dyn FnMut(Tid)) -> Result<Tid> {
        self.open()?;
        let mut pending = self.lock();
        let p = match pending.take() {
            Some(p) if p.handle == txn && p.voted => p,
            other => {
                *pending = other;
                return Err(Error::Transaction("finish without a vote".into()));
            }
        };
        let tid = TimeStamp::now().tid().max(self.last_transaction().next());
        on_commit(tid); // durable (as memory goes) and not yet visible
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        state
            .0
            .extend(p.writes.into_iter().map(|(oid, data)| (oid, (tid, data))));
        state.1 = tid;
        drop((state, pending));
        self.lock_free.notify_one();
        Ok(tid)
    }

    fn tpc_abort(&self, txn: TxnHandle) {
        let mut pending = self.lock();
        if pending.as_ref().is_some_and(|p| p.handle == txn) {
            *pending = None;
            self.lock_free.notify_one();
        }
    }

    fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        let _pending = self.lock();
        self.lock_free.notify_all();
        Ok(())
    }
}

/// The Rust examples of `docs/backends.md`, compiled and run as
/// documentation tests so that the guide cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/backends.md")]
pub struct BackendsGuide;
