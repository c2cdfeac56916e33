//! Everything the connections to one storage share: the storage, its commit
//! lock, the invalidation queue, the registered clients and the counters.
//!
//! The ordering invariant lives here. A client must never be told that a
//! revision is current (a `loadBefore` reply with no end tid) after it has
//! been sent an invalidation superseding it, and what it hears as the last
//! transaction must never run ahead of the invalidations it has been sent.
//! The `publication` lock enforces both: a load, a `register`, a
//! `lastTransaction` or a `getInvalidations` reads the storage *and queues its
//! reply* while holding it shared; a commit takes it exclusively inside the
//! storage's `on_commit` callback (durable, not yet visible), queues its
//! invalidations to every other client, and keeps it until `tpc_finish` has
//! made the transaction visible. A reply therefore either predates the commit
//! in the storage and in the client's message stream, or follows both.
//!
//! A storage that other writers share ([`zeo_storage::SharedCommits`]) makes
//! commits visible before this server has announced them. For it the hub
//! keeps its own horizon, the last tid announced to every client
//! ([`StorageHub::served_tid`]): replies are given as of that tid, foreign
//! commits are announced by the watcher (`foreign.rs`) through
//! [`StorageHub::publish_foreign`], and an own commit first announces the
//! foreign commits below it. While an own commit is between its database
//! commit and its announcement the watcher announces nothing, so that the
//! commit is never mistaken for a foreign one.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use zeo_pickle::Value;
use zeo_protocol::{Encoding, Message};
use zeo_storage::{ForeignCommit, Oid, Storage, Tid};

use crate::commit_lock::{CommitLock, ConnId};
use crate::invalidations::{InvalidationQueue, OidList};
use crate::outbox::Outbox;
use crate::stats::StorageStats;

/// The shared state of one served storage.
pub struct StorageHub {
    name: String,
    storage: Arc<dyn Storage>,
    commit_lock: Arc<CommitLock>,
    publication: RwLock<()>,
    invalidations: Mutex<InvalidationQueue>,
    clients: Mutex<BTreeMap<ConnId, Arc<Outbox>>>,
    stats: StorageStats,
    timeout_enabled: bool,
    pack_gc: bool,
    /// The last tid announced to every client (changed only under the
    /// exclusive publication lock); what a shared storage is served as of.
    announced: AtomicU64,
    /// Own commits between their `tpc_finish` and their announcement.
    own_finishing: AtomicUsize,
    /// Counts own commits that started finishing, so the watcher can tell
    /// that one began while it read the database.
    own_finish_started: AtomicU64,
    /// Wakes the watcher that stood back for an own commit.
    own_finish_ended: tokio::sync::Notify,
}

/// An own commit of a shared storage between its `tpc_finish` and its
/// announcement (or failure); dropping it lets the watcher announce again.
/// A failed commit that reached the database after all is then found by
/// the watcher and announced as any other.
#[must_use]
pub struct OwnFinish<'a>(&'a StorageHub);

impl Drop for OwnFinish<'_> {
    fn drop(&mut self) {
        self.0.own_finishing.fetch_sub(1, Ordering::AcqRel);
        self.0.own_finish_ended.notify_one();
    }
}

/// How many foreign transactions one read of the database returns at most.
const FOREIGN_BATCH: usize = 1000;

/// Proof that the holder may read the storage and queue replies without a
/// commit becoming visible in between.
pub type ReadPublication<'a> = RwLockReadGuard<'a, ()>;

/// Held by a commit from its `on_commit` callback until the storage has made
/// the transaction visible.
pub type WritePublication<'a> = RwLockWriteGuard<'a, ()>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its data consistent, so a panic in one
    // does not make the data unusable for the others.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl StorageHub {
    /// Wraps `storage`, served under `name`.
    pub fn new(
        name: impl Into<String>,
        storage: Arc<dyn Storage>,
        invalidation_queue_size: usize,
        timeout_enabled: bool,
    ) -> Self {
        let mut last = storage.last_transaction();
        let recent = crate::storage_calls::off_runtime(&*storage, || {
            storage.last_invalidations(invalidation_queue_size.max(1))
        })
        .unwrap_or_else(|e| {
            tracing::warn!(
                "storage {}: cannot read its recent transactions ({e}); \
                     clients older than its last transaction will drop their caches",
                storage.name()
            );
            Vec::new()
        });
        // Another writer may have committed between the two reads.
        if let Some((newest, _)) = recent.last() {
            last = last.max(*newest);
        }
        StorageHub {
            name: name.into(),
            storage,
            commit_lock: CommitLock::new(),
            publication: RwLock::new(()),
            invalidations: Mutex::new(InvalidationQueue::seeded(
                invalidation_queue_size,
                last,
                recent,
            )),
            clients: Mutex::new(BTreeMap::new()),
            stats: StorageStats::new(),
            timeout_enabled,
            pack_gc: true,
            announced: AtomicU64::new(last.0),
            own_finishing: AtomicUsize::new(0),
            own_finish_started: AtomicU64::new(0),
            own_finish_ended: tokio::sync::Notify::new(),
        }
    }

    /// Whether other writers commit to the storage too.
    pub fn is_shared(&self) -> bool {
        self.storage.as_shared_commits().is_some()
    }

    /// The last transaction clients are served as of: for a shared storage
    /// the last tid announced to every client, else the storage's last
    /// transaction. Read it under the publication lock, with the reply it
    /// goes into.
    pub fn served_tid(&self) -> Tid {
        if self.is_shared() {
            Tid(self.announced.load(Ordering::Acquire))
        } else {
            self.storage.last_transaction()
        }
    }

    /// Marks an own commit of a shared storage as finishing, before its
    /// database commit: from here until [`StorageHub::own_finish_ended`]
    /// the watcher announces nothing. Taken under the publication lock so
    /// that a watcher holding it has either announced before the commit or
    /// sees the mark.
    pub fn own_finish_started(&self) -> OwnFinish<'_> {
        let _guard = self.write_publication();
        self.own_finishing.fetch_add(1, Ordering::AcqRel);
        self.own_finish_started.fetch_add(1, Ordering::AcqRel);
        OwnFinish(self)
    }

    /// Waits until an own commit has ended since the watcher last stood
    /// back for one.
    pub async fn own_finish_ended(&self) {
        self.own_finish_ended.notified().await
    }

    /// The foreign commits after the announced horizon and below `below`
    /// (all when `None`), read from the database in batches. A shared
    /// storage only; runs on a blocking thread.
    pub fn read_foreign(&self, below: Option<Tid>) -> zeo_storage::Result<Vec<ForeignCommit>> {
        let Some(shared) = self.storage.as_shared_commits() else {
            return Ok(Vec::new());
        };
        let mut after = Tid(self.announced.load(Ordering::Acquire));
        let mut found = Vec::new();
        loop {
            let batch = shared.commits_after(after, FOREIGN_BATCH)?;
            let full = batch.len() >= FOREIGN_BATCH;
            for commit in batch {
                if commit.tid <= after || below.is_some_and(|b| commit.tid >= b) {
                    // Out of order or past the bound: stop at what is sure.
                    return Ok(found);
                }
                after = commit.tid;
                found.push(commit);
            }
            if !full {
                return Ok(found);
            }
        }
    }

    /// The watcher's step: reads the foreign commits and announces them,
    /// unless an own commit started finishing meanwhile (it then announces
    /// those below it itself, and the watcher looks again). Returns how
    /// many invalidations were sent, `None` when it stood back.
    pub fn poll_foreign(&self) -> zeo_storage::Result<Option<usize>> {
        let started = self.own_finish_started.load(Ordering::Acquire);
        if self.own_finishing.load(Ordering::Acquire) > 0 {
            return Ok(None);
        }
        let found = self.read_foreign(None)?;
        if found.is_empty() {
            return Ok(Some(0));
        }
        let guard = self.write_publication();
        if self.own_finishing.load(Ordering::Acquire) > 0
            || self.own_finish_started.load(Ordering::Acquire) != started
        {
            return Ok(None);
        }
        Ok(Some(self.publish_foreign(&guard, found)))
    }

    /// Announces foreign commits to every client, one invalidation per
    /// transaction, or all of them as one at the newest tid when the
    /// storage does not keep intermediate tids. Commits at or below the
    /// horizon are skipped. Returns how many invalidations were sent.
    pub fn publish_foreign(
        &self,
        proof: &WritePublication<'_>,
        commits: Vec<ForeignCommit>,
    ) -> usize {
        let announced = Tid(self.announced.load(Ordering::Acquire));
        let mut commits: Vec<ForeignCommit> =
            commits.into_iter().filter(|c| c.tid > announced).collect();
        let collapse = self
            .storage
            .as_shared_commits()
            .is_some_and(|s| !s.keeps_intermediate_tids());
        if collapse && commits.len() > 1 {
            let newest = commits.iter().map(|c| c.tid).max().unwrap_or(announced);
            let mut oids: Vec<Oid> = commits.drain(..).flat_map(|c| c.oids).collect();
            oids.sort_unstable();
            oids.dedup();
            commits.push(ForeignCommit { tid: newest, oids });
        }
        let count = commits.len();
        for commit in commits {
            self.publish(proof, None, commit.tid, commit.oids.into());
        }
        count
    }

    /// After an own commit at `tid` whose foreign predecessors could not be
    /// read: the clients may have missed some, so none keeps its cache.
    /// Every client is disconnected (it reconnects and verifies) and the
    /// invalidation queue restarts at `tid`, so that verification drops
    /// the caches older than it.
    pub fn lost_track(&self, _proof: &WritePublication<'_>, tid: Tid) {
        tracing::error!(
            storage = %self.name,
            %tid,
            "commits of other writers before this one could not be read: disconnecting every client"
        );
        let bound = lock(&self.invalidations).bound();
        *lock(&self.invalidations) = InvalidationQueue::new(bound, tid);
        self.announced.fetch_max(tid.0, Ordering::AcqRel);
        for outbox in lock(&self.clients).values() {
            outbox.close();
        }
    }

    /// With group commit (`group`), the commit lock tells the storage how
    /// many transactions hold or wait for it
    /// ([`Storage::commits_coming`](zeo_storage::Storage::commits_coming)):
    /// each releases the lock at submit, so the storage can let an fsync
    /// wait for them and cover them too. Without, the lock is kept until a
    /// transaction is durable and the storage is told nothing.
    pub fn with_group_commit(mut self, group: bool) -> Self {
        if group {
            let storage = Arc::downgrade(&self.storage);
            self.commit_lock = CommitLock::observed(Box::new(move |count| {
                if let Some(storage) = storage.upgrade() {
                    storage.commits_coming(count);
                }
            }));
        }
        self
    }

    /// Sets whether packs also collect unreachable objects.
    pub fn with_pack_gc(mut self, gc: bool) -> Self {
        self.pack_gc = gc;
        self
    }

    /// Whether packs also collect unreachable objects.
    pub fn pack_gc(&self) -> bool {
        self.pack_gc
    }

    /// The storage.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The commit lock.
    pub fn commit_lock(&self) -> &Arc<CommitLock> {
        &self.commit_lock
    }

    /// The counters.
    pub fn stats(&self) -> &StorageStats {
        &self.stats
    }

    /// Takes the publication lock shared (see the module documentation).
    pub fn read_publication(&self) -> ReadPublication<'_> {
        self.publication.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the publication lock exclusively.
    pub fn write_publication(&self) -> WritePublication<'_> {
        self.publication.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a registered client. Call with the publication lock held shared,
    /// together with reading the last transaction the client is told about.
    pub fn add_client(&self, _proof: &ReadPublication<'_>, outbox: Arc<Outbox>) {
        lock(&self.clients).insert(outbox.conn(), outbox);
    }

    /// Removes a client (on disconnect).
    pub fn remove_client(&self, conn: ConnId) {
        lock(&self.clients).remove(&conn);
    }

    /// How many clients are registered.
    pub fn client_count(&self) -> usize {
        lock(&self.clients).len()
    }

    /// The `getInvalidations` answer from the queue alone.
    pub fn invalidations_since(
        &self,
        _proof: &ReadPublication<'_>,
        tid: Tid,
    ) -> Option<(Tid, Vec<Oid>)> {
        lock(&self.invalidations).since(tid)
    }

    /// Publishes a commit: records it in the invalidation queue and queues
    /// `invalidateTransaction(tid, oids)` to every client but the committer.
    /// Call from `on_commit` with the publication lock held exclusively.
    pub fn publish_commit(
        &self,
        proof: &WritePublication<'_>,
        committer: ConnId,
        tid: Tid,
        oids: OidList,
    ) {
        self.publish(proof, Some(committer), tid, oids);
    }

    fn publish(
        &self,
        _proof: &WritePublication<'_>,
        committer: Option<ConnId>,
        tid: Tid,
        oids: OidList,
    ) {
        self.announced.fetch_max(tid.0, Ordering::AcqRel);
        if oids.is_empty() {
            return;
        }
        lock(&self.invalidations).push(tid, oids.clone());
        let message = Message::call_async(
            "invalidateTransaction",
            vec![
                zeo_protocol::reply::tid(tid),
                zeo_protocol::reply::oid_list(&oids),
            ],
        );
        let sent = self.broadcast(&message, committer);
        let sent = u64::try_from(sent).unwrap_or(u64::MAX);
        self.stats
            .invalidations_sent
            .fetch_add(sent, std::sync::atomic::Ordering::Relaxed);
    }

    /// Queues `message` to every registered client except `except`,
    /// encoding it once per encoding in use; returns how many were sent it.
    pub fn broadcast(&self, message: &Message, except: Option<ConnId>) -> usize {
        let clients = lock(&self.clients);
        let mut sent = 0;
        let mut encoded: [Option<bytes::Bytes>; 2] = [None, None];
        for (conn, outbox) in clients.iter() {
            if Some(*conn) == except {
                continue;
            }
            let slot = match outbox.encoding() {
                Encoding::Pickle => 0,
                Encoding::Msgpack => 1,
            };
            if encoded[slot].is_none() {
                match crate::outbox::encode(outbox.encoding(), message) {
                    Ok(frame) => encoded[slot] = Some(frame),
                    Err(err) => {
                        tracing::error!(storage = %self.name, %err, method = %message.method, "cannot encode a broadcast");
                        return sent;
                    }
                }
            }
            if let Some(frame) = &encoded[slot] {
                outbox.send_encoded(frame.clone());
                sent += 1;
            }
        }
        sent
    }

    /// Tells every client the storage's new size (after a pack).
    pub fn broadcast_size_info(&self) {
        let info = self.size_info();
        self.broadcast(&Message::call_async("info", vec![info]), None);
    }

    /// `{'length': …, 'size': …}`.
    pub fn size_info(&self) -> Value {
        zeo_protocol::reply::size_info(self.storage.len(), self.storage.size())
    }

    /// The `server_status` numbers.
    pub fn status(&self) -> zeo_protocol::ServerStatus {
        let s = &self.stats;
        zeo_protocol::ServerStatus {
            connections: self.client_count() as u64,
            loads: s.loads.load(Ordering::Relaxed),
            stores: s.stores.load(Ordering::Relaxed),
            commits: s.commits.load(Ordering::Relaxed),
            aborts: s.aborts.load(Ordering::Relaxed),
            active_txns: s.active_txns.load(Ordering::Relaxed).max(0) as u64,
            lock_time: self.commit_lock.locked_since().and_then(|t| {
                t.duration_since(std::time::UNIX_EPOCH)
                    .ok()
                    .map(|d| d.as_secs_f64())
            }),
            conflicts: s.conflicts.load(Ordering::Relaxed),
            conflicts_resolved: s.conflicts_resolved.load(Ordering::Relaxed),
            fsyncs: self.storage.syncs(),
            start: s.start.clone(),
            waiting: self.commit_lock.waiting() as u64,
            timeout_thread_alive: self.timeout_enabled.then_some(true),
            last_transaction: self.served_tid(),
        }
    }
}

impl std::fmt::Debug for StorageHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageHub")
            .field("name", &self.name)
            .field("storage", &self.storage.name())
            .field("clients", &self.client_count())
            .finish()
    }
}
