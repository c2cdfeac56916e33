//! One in-memory database that several storage handles share, as several
//! servers share one PostgreSQL database: what each handle commits, the
//! others learn of through [`SharedCommits`].
//!
//! The database is a [`MappingStorage`]; its commit lock serialises the
//! handles' commits the way a database's commit lock does, and its tids
//! follow one order whoever commits. A handle behaves like a backend on a
//! remote database: it says its calls may block, its commits are visible
//! to every handle before its `on_commit` callback runs (the database
//! committed; the server announces afterwards), and it can be woken when
//! any handle commits, or not at all ([`SharedDatabase::without_wakeup`],
//! as on a hot standby where only polling works).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::interface::{
    ExternalGc, ForeignCommit, Iteration, Pack, RecordIteration, SharedCommits, Undo,
};
use crate::{
    BeginOptions, Error, LoadedRevision, MappingStorage, Oid, Result, Storage, Tid,
    TransactionMetaData, TxnHandle,
};

/// The database several [`SharedHandle`]s open. Cloning it gives another
/// reference to the same database.
#[derive(Clone)]
pub struct SharedDatabase {
    inner: Arc<Database>,
}

struct Database {
    storage: MappingStorage,
    /// How many commits any handle finished; waiters compare it with what
    /// they saw last.
    commits: Mutex<u64>,
    committed: Condvar,
    wakeup: bool,
    keeps_history: bool,
}

impl SharedDatabase {
    /// An empty history-preserving database whose handles are woken by
    /// every commit.
    pub fn new(name: &str) -> Self {
        Self::build(name, true, true)
    }

    /// A database that reports commits as a history-free one does: only
    /// transactions that still hold a current revision are visible, and
    /// the server is told to collapse what it finds
    /// ([`SharedCommits::keeps_intermediate_tids`] is `false`).
    pub fn history_free(name: &str) -> Self {
        Self::build(name, false, true)
    }

    /// An empty database whose handles are never woken: servers find its
    /// commits only by their periodic poll.
    pub fn without_wakeup(name: &str) -> Self {
        Self::build(name, true, false)
    }

    fn build(name: &str, keeps_history: bool, wakeup: bool) -> Self {
        SharedDatabase {
            inner: Arc::new(Database {
                storage: MappingStorage::new(name),
                commits: Mutex::new(0),
                committed: Condvar::new(),
                wakeup,
                keeps_history,
            }),
        }
    }

    /// A new handle on the database (what one server opens).
    pub fn handle(&self) -> SharedHandle {
        let seen = *self.inner.commits();
        SharedHandle {
            db: self.inner.clone(),
            seen: AtomicU64::new(seen),
            closed: AtomicBool::new(false),
        }
    }

    /// The database's last transaction, whoever committed it.
    pub fn last_transaction(&self) -> Tid {
        self.inner.storage.last_transaction()
    }
}

impl Database {
    fn commits(&self) -> MutexGuard<'_, u64> {
        self.commits.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn committed_one(&self) {
        *self.commits() += 1;
        self.committed.notify_all();
    }
}

/// One handle on a [`SharedDatabase`]; a [`Storage`] with the
/// [`SharedCommits`] capability.
pub struct SharedHandle {
    db: Arc<Database>,
    seen: AtomicU64,
    closed: AtomicBool,
}

impl SharedHandle {
    fn open(&self) -> Result<&MappingStorage> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(&self.db.storage)
    }
}

impl Storage for SharedHandle {
    fn name(&self) -> &str {
        self.db.storage.name()
    }
    fn is_read_only(&self) -> bool {
        false
    }
    fn size(&self) -> u64 {
        self.db.storage.size()
    }
    fn len(&self) -> u64 {
        self.db.storage.len()
    }
    fn last_transaction(&self) -> Tid {
        self.db.storage.last_transaction()
    }
    fn may_block(&self) -> bool {
        true
    }
    fn load(&self, oid: Oid) -> Result<(Vec<u8>, Tid)> {
        self.open()?.load(oid)
    }
    fn load_before(&self, oid: Oid, before: Tid) -> Result<Option<LoadedRevision>> {
        self.open()?.load_before(oid, before)
    }
    fn load_serial(&self, oid: Oid, serial: Tid) -> Result<Vec<u8>> {
        self.open()?.load_serial(oid, serial)
    }
    fn history(&self, oid: Oid, size: usize) -> Result<Vec<crate::HistoryEntry>> {
        self.open()?.history(oid, size)
    }
    fn new_oid(&self) -> Result<Oid> {
        self.open()?.new_oid()
    }
    fn tpc_begin(&self, meta: &TransactionMetaData, options: BeginOptions) -> Result<TxnHandle> {
        self.open()?.tpc_begin(meta, options)
    }
    fn transaction_tid(&self, txn: TxnHandle) -> Result<Option<Tid>> {
        self.db.storage.transaction_tid(txn)
    }
    fn store(&self, txn: TxnHandle, oid: Oid, serial: Tid, data: &[u8]) -> Result<()> {
        self.db.storage.store(txn, oid, serial, data)
    }
    fn check_current_serial(&self, txn: TxnHandle, oid: Oid, serial: Tid) -> Result<()> {
        self.db.storage.check_current_serial(txn, oid, serial)
    }
    fn tpc_vote(&self, txn: TxnHandle) -> Result<Vec<Oid>> {
        self.db.storage.tpc_vote(txn)
    }
    fn tpc_finish(&self, txn: TxnHandle, on_commit: &mut dyn FnMut(Tid)) -> Result<Tid> {
        // As a database does: committed and visible to every reader first;
        // the caller announces it afterwards.
        let tid = self.db.storage.tpc_finish(txn, &mut |_| {})?;
        self.db.committed_one();
        on_commit(tid);
        Ok(tid)
    }
    fn tpc_abort(&self, txn: TxnHandle) {
        self.db.storage.tpc_abort(txn)
    }
    fn close(&self) -> Result<()> {
        // The database stays open for the other handles.
        self.closed.store(true, Ordering::Release);
        let _commits = self.db.commits();
        self.db.committed.notify_all();
        Ok(())
    }
    fn last_invalidations(&self, count: usize) -> Result<Vec<(Tid, Vec<Oid>)>> {
        self.open()?.last_invalidations(count)
    }
    fn as_undo(&self) -> Option<&dyn Undo> {
        self.db.storage.as_undo()
    }
    fn as_iteration(&self) -> Option<&dyn Iteration> {
        self.db.storage.as_iteration()
    }
    fn as_record_iteration(&self) -> Option<&dyn RecordIteration> {
        self.db.storage.as_record_iteration()
    }
    fn as_pack(&self) -> Option<&dyn Pack> {
        self.db.storage.as_pack()
    }
    fn as_external_gc(&self) -> Option<&dyn ExternalGc> {
        self.db.storage.as_external_gc()
    }
    crate::provide_capabilities!(shared_commits);
}

impl SharedCommits for SharedHandle {
    fn commits_after(&self, after: Tid, limit: usize) -> Result<Vec<ForeignCommit>> {
        let storage = self.open()?;
        let mut found = Vec::new();
        if after == Tid::MAX || limit == 0 {
            return Ok(found);
        }
        for txn in storage.iterator(Some(after.next()), None)? {
            let txn = txn?;
            let mut oids: Vec<Oid> = txn.records.iter().map(|r| r.oid).collect();
            if !self.db.keeps_history {
                // Only the rows still current are left in a history-free
                // database.
                oids.retain(|&oid| storage.load(oid).is_ok_and(|(_, tid)| tid == txn.tid));
            }
            oids.sort_unstable();
            oids.dedup();
            if oids.is_empty() && !self.db.keeps_history {
                continue;
            }
            found.push(ForeignCommit { tid: txn.tid, oids });
            if found.len() >= limit {
                break;
            }
        }
        Ok(found)
    }

    fn wait_for_commits(&self, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        let mut commits = self.db.commits();
        loop {
            if self.closed.load(Ordering::Acquire) {
                return Err(Error::Closed);
            }
            if self.db.wakeup && *commits != self.seen.load(Ordering::Acquire) {
                self.seen.store(*commits, Ordering::Release);
                return Ok(true);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            commits = self
                .db
                .committed
                .wait_timeout(commits, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn keeps_intermediate_tids(&self) -> bool {
        self.db.keeps_history
    }
}

/// Checks a backend's [`SharedCommits`] with two handles on one database:
/// what `a` commits, `b` is woken for and lists in tid order, and `limit`
/// and `after` bound the list.
pub fn check_shared_commits(a: &dyn Storage, b: &dyn Storage) {
    let shared = b
        .as_shared_commits()
        .expect("the check needs the shared-commits capability");
    let start = b.last_transaction();
    // Drain wake-ups from earlier commits.
    while shared.wait_for_commits(Duration::ZERO).unwrap() {}
    let oid = a.new_oid().unwrap();
    let first = super::commit(a, &[(oid, Tid::ZERO, super::record(&[], b"1"))]).unwrap();
    let other = a.new_oid().unwrap();
    let second = super::commit(a, &[(other, Tid::ZERO, super::record(&[], b"2"))]).unwrap();
    assert!(first < second);
    if shared.keeps_intermediate_tids() {
        assert!(
            shared.wait_for_commits(Duration::from_secs(10)).unwrap(),
            "a commit through another handle wakes the waiter"
        );
    }
    let seen = shared.commits_after(start, 100).unwrap();
    let tids: Vec<Tid> = seen.iter().map(|c| c.tid).collect();
    assert_eq!(tids, [first, second], "in tid order, nothing else");
    assert_eq!(seen[0].oids, [oid]);
    assert_eq!(seen[1].oids, [other]);
    assert_eq!(
        shared.commits_after(start, 1).unwrap().len(),
        1,
        "the limit bounds the list"
    );
    let after_first = shared.commits_after(first, 100).unwrap();
    assert_eq!(after_first.len(), 1);
    assert_eq!(after_first[0].tid, second);
    assert!(shared.commits_after(second, 100).unwrap().is_empty());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{commit, record};

    #[test]
    fn handles_see_each_others_commits() {
        let db = SharedDatabase::new("db");
        let (a, b) = (db.handle(), db.handle());
        check_shared_commits(&a, &b);
        check_shared_commits(&b, &a);
    }

    #[test]
    fn history_free_lists_only_transactions_with_current_rows() {
        let db = SharedDatabase::history_free("db");
        let (a, b) = (db.handle(), db.handle());
        let shared = b.as_shared_commits().unwrap();
        assert!(!shared.keeps_intermediate_tids());
        let oid = a.new_oid().unwrap();
        let t1 = commit(&a, &[(oid, Tid::ZERO, record(&[], b"1"))]).unwrap();
        let t2 = commit(&a, &[(oid, t1, record(&[], b"2"))]).unwrap();
        let seen = shared.commits_after(Tid::ZERO, 10).unwrap();
        assert_eq!(
            seen,
            [ForeignCommit {
                tid: t2,
                oids: vec![oid]
            }]
        );
    }

    #[test]
    fn without_wakeup_the_wait_times_out_and_close_ends_it() {
        let db = SharedDatabase::without_wakeup("db");
        let (a, b) = (db.handle(), db.handle());
        let oid = a.new_oid().unwrap();
        commit(&a, &[(oid, Tid::ZERO, record(&[], b"1"))]).unwrap();
        let shared = b.as_shared_commits().unwrap();
        assert!(!shared.wait_for_commits(Duration::ZERO).unwrap());
        assert_eq!(shared.commits_after(Tid::ZERO, 10).unwrap().len(), 1);
        b.close().unwrap();
        assert!(matches!(
            shared.wait_for_commits(Duration::from_secs(30)),
            Err(Error::Closed)
        ));
        assert!(a.load(oid).is_ok(), "the other handle stays open");
    }
}
