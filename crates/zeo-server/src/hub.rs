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

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use zeo_pickle::Value;
use zeo_protocol::{Encoding, Message};
use zeo_storage::{Oid, Storage, Tid};

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
}

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
        let last = storage.last_transaction();
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
        }
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
        _proof: &WritePublication<'_>,
        committer: ConnId,
        tid: Tid,
        oids: OidList,
    ) {
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
        let sent = self.broadcast(&message, Some(committer));
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
            last_transaction: self.storage.last_transaction(),
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
