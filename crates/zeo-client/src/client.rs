//! [`AsyncClientStorage`]: the client on the caller's tokio runtime — its
//! API, loads and two-phase commit. The background connection manager is
//! `manager.rs`; the rules it follows (`reconnect.rs`, `verify.rs`) and
//! those of the vote (`vote.rs`) are decided apart from any I/O.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tracing::warn;
use zeo_pickle::Value;
use zeo_protocol::{client::replies, ClientRequest, TxnId};
use zeo_storage::{
    BeginOptions, HistoryEntry, LoadedRevision, Oid, Tid, TransactionMetaData, TxnHandle,
};

use crate::blobs::{BlobState, StagedBlobs};
use crate::cache::{CacheStats, ClientCache};
use crate::connection::{Conn, Notice, ReplyHook, Shared};
use crate::error::{Error, Result};
use crate::manager::manage;
use crate::options::{ClientOptions, ConflictInfo};
use crate::reconnect::FailedRound;
use crate::vote::{TxnWrites, Vote, VoteFailure, VoteStep};

/// Counters of what the client did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// `loadBefore` requests sent to a server (cache misses).
    pub server_loads: u64,
    /// Verified connections made so far (1 after the first connect).
    pub connections: u64,
    /// The cache's counters.
    pub cache: CacheStats,
    /// Blobs downloaded from a server (`sendBlob` calls).
    pub blob_downloads: u64,
    /// Blob loads that found their directory's `.lock` held (by another
    /// download, in this process or another) and waited for it.
    pub blob_lock_waits: u64,
}

/// A ZEO client storage for async callers. Cheap to clone; clones share
/// one connection, cache and transaction slot.
///
/// It must be created inside a tokio runtime (it spawns its connection
/// manager there). The connection is kept up in the background: lost
/// connections are re-established with back-off and the cache is verified
/// on every reconnect. A cache hit never waits for the server; a miss waits
/// up to `wait_timeout` for a connection and then fails with
/// [`Error::Disconnected`].
///
/// ```no_run
/// # async fn demo() -> zeo_client::Result<()> {
/// use zeo_client::records::{Record, Value};
/// use zeo_client::{AsyncClientStorage, ClientOptions, CommitOptions, ServerAddress};
/// use zeo_storage::{Oid, Tid};
///
/// let client = AsyncClientStorage::connect(ClientOptions::new(vec![ServerAddress::localhost(8100)])).await?;
/// let oid = client.new_oid().await?;
/// let record = Record::persistent_list([Value::Int(1)]);
/// let ((), tid) = client
///     .commit(&CommitOptions::new(), |txn| {
///         let record = record.clone();
///         async move { txn.store_record(oid, Tid::ZERO, &record) }
///     })
///     .await?;
/// assert_eq!(client.load_record(oid).await?, (record, tid));
/// client.close()?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct AsyncClientStorage {
    pub(crate) inner: Arc<Inner>,
}

/// What the clones of a client share, its connection manager included.
pub(crate) struct Inner {
    pub(crate) options: ClientOptions,
    pub(crate) name: String,
    pub(crate) shared: Arc<Shared>,
    /// The verified connection, once there is one.
    pub(crate) current: watch::Sender<Option<Arc<Conn>>>,
    pub(crate) generation: AtomicU64,
    pub(crate) closed: AtomicBool,
    pub(crate) close_notify: Notify,
    oids: tokio::sync::Mutex<Vec<Oid>>,
    txn_slot: Arc<Semaphore>,
    txn: Mutex<Option<TxnState>>,
    /// What the open transaction is, for the error of a `tpc_begin` that
    /// gives up waiting for it; kept until the slot is released.
    txn_info: Arc<Mutex<Option<OpenTxn>>>,
    next_txn: AtomicU64,
    /// How the last failed connection round went, per address.
    pub(crate) rounds: watch::Sender<FailedRound>,
    txn_id_base: i64,
    server_loads: AtomicU64,
    pub(crate) connections: AtomicU64,
    pub(crate) blob_downloads: AtomicU64,
    pub(crate) blob_lock_waits: AtomicU64,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncClientStorage")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The open transaction, as a waiting `tpc_begin` describes it.
struct OpenTxn {
    handle: TxnHandle,
    description: String,
    begun: tokio::time::Instant,
    vote_failed: Option<String>,
}

/// Clears [`Inner::txn_info`] when the transaction slot is released.
struct SlotPermit {
    _permit: OwnedSemaphorePermit,
    info: Arc<Mutex<Option<OpenTxn>>>,
}

impl Drop for SlotPermit {
    fn drop(&mut self) {
        *self.info.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

pub(crate) struct TxnState {
    handle: TxnHandle,
    pub(crate) id: TxnId,
    pub(crate) conn: Arc<Conn>,
    writes: TxnWrites,
    /// Blob files to move into the cache at finish (removed otherwise).
    pub(crate) blobs: StagedBlobs,
    _permit: SlotPermit,
}

/// A value that differs between calls and between processes on this
/// machine: std's per-instance hash keys, the clock and the process id.
pub(crate) fn random_u64() -> u64 {
    let mut h = std::hash::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// How many `loadBefore` requests [`AsyncClientStorage::prefetch`] keeps
/// unanswered at once: enough to keep a loopback or LAN link busy, few
/// enough that a prefetch of a million oids neither queues a million
/// requests nor makes the server queue a million replies.
pub const PREFETCH_WINDOW: usize = 256;

/// The outcome of one prefetched load: a failure of that revision alone
/// is logged and skipped (the reader task already cached what came), a
/// lost connection ends the prefetch.
fn prefetched(oid: Oid, result: Result<Option<LoadedRevision>>) -> Result<()> {
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.is_disconnected() => Err(e),
        Err(e) => {
            tracing::debug!(%oid, error = %e, "prefetch of one object failed");
            Ok(())
        }
    }
}

fn protocol_error(e: zeo_protocol::Error) -> Error {
    Error::Protocol(e.to_string())
}

impl AsyncClientStorage {
    /// The same as [`AsyncClientStorage::connect`], under the name the
    /// blocking [`crate::ClientStorage::open`] has.
    ///
    /// # Errors
    ///
    /// As [`AsyncClientStorage::connect`].
    pub async fn open(options: ClientOptions) -> Result<Self> {
        Self::connect(options).await
    }

    /// Opens the cache, starts connecting, and (when `options.wait`) waits
    /// up to `options.wait_timeout` for a verified connection (or, with
    /// `options.fail_fast`, until every address refused once).
    ///
    /// # Errors
    ///
    /// Cache errors ([`Error::CacheLocked`], [`Error::CacheIo`]),
    /// [`Error::Config`] without server addresses, and
    /// [`Error::Disconnected`] when waiting timed out (the client is closed
    /// then).
    pub async fn connect(options: ClientOptions) -> Result<Self> {
        if options.servers.is_empty() {
            return Err(Error::Config("no server address".into()));
        }
        let cache = match &options.effective_cache_path() {
            Some(path) => ClientCache::open(path, &options.storage, options.cache_size)?,
            None => ClientCache::memory(options.cache_size),
        };
        let (notices, _) = broadcast::channel(1024);
        let blobs = BlobState::open(&options)?;
        let shared = Arc::new(Shared {
            blobs,
            cache,
            notices,
            info: Mutex::new((0, 0)),
            supports_undo: AtomicBool::new(false),
        });
        let (current, _) = watch::channel(None);
        let inner = Arc::new(Inner {
            name: options.display_name(),
            options,
            shared,
            current,
            generation: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            close_notify: Notify::new(),
            oids: tokio::sync::Mutex::new(Vec::new()),
            txn_slot: Arc::new(Semaphore::new(1)),
            txn: Mutex::new(None),
            txn_info: Arc::new(Mutex::new(None)),
            rounds: watch::channel(FailedRound::default()).0,
            next_txn: AtomicU64::new(1),
            // Transaction ids only need to be unique per connection; a
            // random base keeps them unlike any other client's in logs.
            txn_id_base: (random_u64() >> 24) as i64,
            server_loads: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            blob_downloads: AtomicU64::new(0),
            blob_lock_waits: AtomicU64::new(0),
        });
        tokio::spawn(manage(Arc::downgrade(&inner)));
        let client = AsyncClientStorage { inner };
        if client.inner.options.wait {
            if let Err(e) = client
                .wait_connected(client.inner.options.wait_timeout)
                .await
            {
                let _ = client.close();
                return Err(e);
            }
        }
        Ok(client)
    }

    /// The options the client runs with.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// The name given, or the server addresses.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The client cache.
    pub fn cache(&self) -> &ClientCache {
        &self.inner.shared.cache
    }

    /// Receives invalidations and connection changes. Each receiver sees
    /// every notice sent after it subscribed (a receiver more than 1024
    /// notices behind skips the oldest and is told so).
    pub fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.inner.shared.notices.subscribe()
    }

    /// Whether a verified connection is up.
    pub fn is_connected(&self) -> bool {
        self.inner
            .current
            .borrow()
            .as_ref()
            .is_some_and(|c| !c.is_closed())
    }

    /// Whether writes are refused: configured read-only, or connected to a
    /// read-only server (fallback).
    pub fn is_read_only(&self) -> bool {
        self.inner.options.read_only
            || self
                .inner
                .current
                .borrow()
                .as_ref()
                .is_some_and(|c| c.read_only())
    }

    /// The last transaction the client knows of (its cache's last tid).
    pub fn last_transaction(&self) -> Tid {
        self.cache().last_tid().unwrap_or(Tid::ZERO)
    }

    /// `(object count, size in bytes)` as the server last reported them.
    pub fn server_info(&self) -> (u64, u64) {
        *self
            .inner
            .shared
            .info
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the server's storage supports undo (`supportsUndo` in its
    /// `get_info`, refreshed on every connect).
    pub fn supports_undo(&self) -> bool {
        self.inner.shared.supports_undo.load(Ordering::Acquire)
    }

    /// Counters.
    pub fn stats(&self) -> ClientStats {
        ClientStats {
            server_loads: self.inner.server_loads.load(Ordering::Relaxed),
            connections: self.inner.connections.load(Ordering::Relaxed),
            cache: self.cache().stats(),
            blob_downloads: self.inner.blob_downloads.load(Ordering::Relaxed),
            blob_lock_waits: self.inner.blob_lock_waits.load(Ordering::Relaxed),
        }
    }

    /// Waits up to `timeout` for a verified connection.
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] on timeout, [`Error::Closed`] once closed.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<()> {
        self.conn(timeout).await.map(|_| ())
    }

    pub(crate) async fn conn(&self, timeout: Duration) -> Result<Arc<Conn>> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let mut rx = self.inner.current.subscribe();
        let mut rounds = self.inner.rounds.subscribe();
        let fail_fast = self.inner.options.fail_fast;
        // The latest round counts too: it is cleared on connecting. A TLS
        // failure ends the wait whatever `fail_fast` says: the same
        // handshake would fail until the wait timeout.
        let refused = async {
            let round = rounds
                .wait_for(|r| (fail_fast && r.all_refused) || r.tls_failure.is_some())
                .await
                .map(|r| (r.errors.join("; "), r.tls_failure.clone()));
            match round {
                Ok(round) => round,
                Err(_) => std::future::pending().await,
            }
        };
        let connected = rx.wait_for(|c| c.as_ref().is_some_and(|c| !c.is_closed()));
        let outcome = tokio::time::timeout(timeout, async {
            tokio::select! {
                c = connected => Ok(c.map(|c| c.clone())),
                errors = refused => Err(errors),
            }
        })
        .await;
        match outcome {
            Ok(Ok(Ok(c))) => c.ok_or_else(|| Error::Disconnected("not connected".into())),
            Ok(Ok(Err(_))) => Err(Error::Closed),
            Ok(Err((_, Some((address, reason))))) => Err(Error::Tls { address, reason }),
            Ok(Err((errors, None))) => Err(Error::Disconnected(format!(
                "every server refused the connection (fail_fast): {errors}"
            ))),
            Err(_) => {
                let last = self.inner.rounds.borrow().errors.join("; ");
                let last = if last.is_empty() {
                    String::new()
                } else {
                    format!("; last errors: {last}")
                };
                Err(Error::Disconnected(format!(
                    "timed out after {timeout:?} waiting for a connection to {}{last}",
                    self.inner.name
                )))
            }
        }
    }

    pub(crate) async fn call(
        &self,
        build: impl FnOnce(i64) -> zeo_protocol::Message,
    ) -> Result<Value> {
        let conn = self.conn(self.inner.options.wait_timeout).await?;
        conn.call(build).await
    }

    /// The current revision of `oid`: from the cache, else from the server.
    ///
    /// # Errors
    ///
    /// `POSKeyError` for an unknown oid, [`Error::Disconnected`] on a miss
    /// while no server is reachable.
    pub async fn load(&self, oid: Oid) -> Result<(Vec<u8>, Tid)> {
        if let Some(hit) = self.cache().load(oid) {
            return Ok(hit);
        }
        match self.load_from_server(oid, Tid::MAX).await? {
            Some(r) => Ok((r.data, r.start)),
            None => Err(zeo_storage::Error::pos_key(oid).into()),
        }
    }

    /// The revision current just before `before`.
    ///
    /// # Errors
    ///
    /// As [`AsyncClientStorage::load`].
    pub async fn load_before(&self, oid: Oid, before: Tid) -> Result<Option<LoadedRevision>> {
        if let Some(hit) = self.cache().load_before(oid, before) {
            return Ok(Some(hit));
        }
        self.load_from_server(oid, before).await
    }

    async fn load_from_server(&self, oid: Oid, before: Tid) -> Result<Option<LoadedRevision>> {
        let conn = self.conn(self.inner.options.wait_timeout).await?;
        self.inner.server_loads.fetch_add(1, Ordering::Relaxed);
        conn.load_before(oid, before).await
    }

    /// Loads the revisions of `oids` current before `before` into the cache
    /// (ZODB's `IPrefetchStorage.prefetch`; `Tid::MAX` for the current
    /// ones), pipelined: the `loadBefore` requests go out back to back, at
    /// most [`PREFETCH_WINDOW`] unanswered at a time, instead of one round
    /// trip each. Oids the cache already answers are skipped, and a load of
    /// the same revision already in flight (from another caller or another
    /// prefetch) is joined rather than sent again. Returns once every
    /// result is in the cache; a revision the server does not have (a
    /// `POSKeyError`, say) is skipped, as ZEO's client only logs it.
    ///
    /// ```no_run
    /// # async fn demo(client: zeo_client::AsyncClientStorage) -> zeo_client::Result<()> {
    /// use zeo_storage::{Oid, Tid};
    ///
    /// let oids: Vec<Oid> = (1..=100).map(Oid).collect();
    /// client.prefetch(&oids, Tid::MAX).await?;
    /// // Every load below is a cache hit.
    /// for oid in oids {
    ///     let _ = client.load(oid).await;
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] when no connection comes within
    /// `wait_timeout` or the connection is lost meanwhile.
    pub async fn prefetch(&self, oids: &[Oid], before: Tid) -> Result<()> {
        let missing: Vec<Oid> = oids
            .iter()
            .copied()
            .filter(|&oid| self.cache().load_before(oid, before).is_none())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let conn = self.conn(self.inner.options.wait_timeout).await?;
        let mut in_flight = std::collections::VecDeque::with_capacity(PREFETCH_WINDOW);
        for oid in missing {
            if in_flight.len() == PREFETCH_WINDOW {
                if let Some((oid, rx)) = in_flight.pop_front() {
                    prefetched(oid, conn.finish_load(rx).await)?;
                }
            }
            let (rx, sent) = conn.start_load(oid, before)?;
            if sent {
                self.inner.server_loads.fetch_add(1, Ordering::Relaxed);
            }
            in_flight.push_back((oid, rx));
        }
        for (oid, rx) in in_flight {
            prefetched(oid, conn.finish_load(rx).await)?;
        }
        Ok(())
    }

    /// One exact revision (`loadSerial`).
    ///
    /// # Errors
    ///
    /// `POSKeyError` when that revision does not exist.
    pub async fn load_serial(&self, oid: Oid, serial: Tid) -> Result<Vec<u8>> {
        match self
            .call(|id| ClientRequest::load_serial(id, oid, serial))
            .await?
        {
            Value::Bytes(b) => Ok(b),
            other => Err(Error::Protocol(format!(
                "loadSerial returned {}",
                other.type_name()
            ))),
        }
    }

    /// Up to `size` history entries, newest first.
    ///
    /// # Errors
    ///
    /// `POSKeyError` for an unknown oid.
    pub async fn history(&self, oid: Oid, size: usize) -> Result<Vec<HistoryEntry>> {
        let value = self
            .call(|id| ClientRequest::history(id, oid, size))
            .await?;
        replies::history(&value).map_err(protocol_error)
    }

    /// Allocates an oid from a batch of 100 fetched from the server.
    ///
    /// # Errors
    ///
    /// Read-only, or no server.
    pub async fn new_oid(&self) -> Result<Oid> {
        if self.is_read_only() {
            return Err(zeo_storage::Error::ReadOnly.into());
        }
        let mut oids = self.inner.oids.lock().await;
        if oids.is_empty() {
            let value = self.call(ClientRequest::new_oids).await?;
            let mut batch = replies::oids("new_oids", &value).map_err(protocol_error)?;
            batch.reverse();
            *oids = batch;
        }
        oids.pop()
            .ok_or_else(|| Error::Protocol("new_oids returned no oid".into()))
    }

    /// Packs the storage on the server (waits for the pack to finish).
    ///
    /// # Errors
    ///
    /// What the server's pack raised.
    pub async fn pack(&self, pack_time: f64) -> Result<()> {
        self.call(|id| ClientRequest::pack(id, pack_time, true))
            .await
            .map(|_| ())
    }

    /// A round trip to the server.
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] without a connection.
    pub async fn ping(&self) -> Result<()> {
        self.call(ClientRequest::ping).await.map(|_| ())
    }

    /// The server's `server_status` dict, raw.
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] without a connection.
    pub async fn server_status(&self) -> Result<Value> {
        self.call(ClientRequest::server_status).await
    }

    /// Starts a transaction: waits for the client's transaction slot (one
    /// at a time per client) and a connection, then sends a one-way
    /// `tpc_begin`.
    ///
    /// Every `tpc_begin` must be followed by `tpc_finish` or `tpc_abort`,
    /// also after a failed `tpc_vote`: until then the slot stays taken.
    /// Waiting for the slot is bounded by `wait_timeout`, after which the
    /// call fails naming the transaction still open. The `commit` helpers
    /// ([`AsyncClientStorage::commit`]) abort for you.
    ///
    /// # Errors
    ///
    /// Read-only, no connection, `StorageTransactionError` when another
    /// transaction stays open for `wait_timeout`, or an extension that is
    /// not a pickled dict.
    pub async fn tpc_begin(
        &self,
        meta: &TransactionMetaData,
        options: BeginOptions,
    ) -> Result<TxnHandle> {
        if self.is_read_only() {
            return Err(zeo_storage::Error::ReadOnly.into());
        }
        let extension = zeo_protocol::reply::extension_dict(&meta.extension)
            .map_err(|e| zeo_storage::Error::InvalidArgument(e.to_string()))?;
        let wait = self.inner.options.wait_timeout;
        // One deadline for the slot and the connection together.
        let deadline = tokio::time::Instant::now() + wait;
        let permit =
            match tokio::time::timeout_at(deadline, self.inner.txn_slot.clone().acquire_owned())
                .await
            {
                Ok(Ok(p)) => p,
                Ok(Err(_)) => return Err(Error::Closed),
                Err(_) => return Err(self.slot_timeout(wait).into()),
            };
        let permit = SlotPermit {
            _permit: permit,
            info: self.inner.txn_info.clone(),
        };
        let conn = self
            .conn(deadline.saturating_duration_since(tokio::time::Instant::now()))
            .await?;
        if conn.read_only() {
            return Err(zeo_storage::Error::ReadOnly.into());
        }
        let n = self.inner.next_txn.fetch_add(1, Ordering::Relaxed);
        let id = TxnId(self.inner.txn_id_base.wrapping_add(n as i64));
        conn.call_async(&ClientRequest::tpc_begin(
            id,
            &meta.user,
            &meta.description,
            Value::Dict(extension),
            options.tid,
            options.status,
        ))?;
        let handle = TxnHandle(n);
        *self
            .inner
            .txn_info
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(OpenTxn {
            handle,
            description: String::from_utf8_lossy(&meta.description).into_owned(),
            begun: tokio::time::Instant::now(),
            vote_failed: None,
        });
        *self.inner.txn.lock().unwrap_or_else(|e| e.into_inner()) = Some(TxnState {
            handle,
            id,
            conn,
            writes: TxnWrites::default(),
            blobs: StagedBlobs::default(),
            _permit: permit,
        });
        Ok(handle)
    }

    /// The error of a `tpc_begin` that waited `wait` for the slot.
    fn slot_timeout(&self, wait: Duration) -> zeo_storage::Error {
        let info = self
            .inner
            .txn_info
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let what = match info.as_ref() {
            Some(t) => format!(
                "transaction {} ({:?}, begun {:?} ago{}) is still open: call tpc_abort (or tpc_finish) on it",
                t.handle.0,
                t.description,
                t.begun.elapsed(),
                t.vote_failed
                    .as_ref()
                    .map(|e| format!(", its vote failed: {e}"))
                    .unwrap_or_default()
            ),
            None => "another transaction is still finishing".into(),
        };
        zeo_storage::Error::Transaction(format!(
            "tpc_begin gave up after waiting {wait:?} (wait_timeout): {what}"
        ))
    }

    fn note_vote_failure(&self, txn: TxnHandle, e: &Error) {
        let mut info = self
            .inner
            .txn_info
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(t) = info.as_mut().filter(|t| t.handle == txn) {
            t.vote_failed = Some(e.to_string());
        }
    }

    /// Runs `f` on the open transaction `txn`, checking that its connection
    /// is still the live one.
    pub(crate) fn with_txn<T>(
        &self,
        txn: TxnHandle,
        f: impl FnOnce(&mut TxnState) -> Result<T>,
    ) -> Result<T> {
        let mut guard = self.inner.txn.lock().unwrap_or_else(|e| e.into_inner());
        let state = guard
            .as_mut()
            .filter(|s| s.handle == txn)
            .ok_or_else(|| zeo_storage::Error::Transaction("transaction not committing".into()))?;
        if state.conn.is_closed() {
            return Err(Error::Disconnected(
                "the connection was lost during the transaction".into(),
            ));
        }
        f(state)
    }

    /// Stages a new revision (one-way `storea`).
    ///
    /// # Errors
    ///
    /// A wrong handle, or [`Error::Disconnected`] when the connection the
    /// transaction began on is gone.
    pub fn store(&self, txn: TxnHandle, oid: Oid, serial: Tid, data: &[u8]) -> Result<()> {
        self.with_txn(txn, |s| {
            s.conn
                .call_async(&ClientRequest::storea(oid, serial, data, s.id))?;
            s.writes.stored(oid, data.to_vec());
            Ok(())
        })
    }

    /// One-way `checkCurrentSerialInTransaction`.
    ///
    /// # Errors
    ///
    /// As [`AsyncClientStorage::store`]; a read conflict surfaces at vote.
    pub fn check_current_serial(&self, txn: TxnHandle, oid: Oid, serial: Tid) -> Result<()> {
        self.with_txn(txn, |s| {
            s.conn
                .call_async(&ClientRequest::check_current_serial(oid, serial, s.id))
        })
    }

    /// One-way `deleteObject`.
    ///
    /// # Errors
    ///
    /// As [`AsyncClientStorage::store`].
    pub fn delete_object(&self, txn: TxnHandle, oid: Oid, serial: Tid) -> Result<()> {
        self.with_txn(txn, |s| {
            s.conn
                .call_async(&ClientRequest::delete_object(oid, serial, s.id))?;
            s.writes.deleted(oid);
            Ok(())
        })
    }

    /// One-way `restorea`.
    ///
    /// # Errors
    ///
    /// As [`AsyncClientStorage::store`].
    pub fn restore(
        &self,
        txn: TxnHandle,
        oid: Oid,
        serial: Tid,
        data: Option<&[u8]>,
        prev_txn: Option<Tid>,
    ) -> Result<()> {
        self.with_txn(txn, |s| {
            s.conn
                .call_async(&ClientRequest::restorea(oid, serial, data, prev_txn, s.id))?;
            s.writes.restored(oid);
            Ok(())
        })
    }

    /// One-way `undoa`. The oids it changes are only known at vote, which
    /// returns them; this returns an empty list, as ZEO's client does.
    ///
    /// # Errors
    ///
    /// As [`AsyncClientStorage::store`].
    pub fn undo(&self, txn: TxnHandle, undo_id: &[u8]) -> Result<Vec<Oid>> {
        self.with_txn(txn, |s| {
            s.conn.call_async(&ClientRequest::undoa(undo_id, s.id))
        })?;
        Ok(Vec::new())
    }

    /// Votes. Conflicts the server returns (under its
    /// `client-conflict-resolution`) go to the configured resolver; resolved
    /// data is re-stored and the vote repeated, up to 9 rounds as in ZEO.
    /// Returns the oids whose committed data differs from what was stored.
    ///
    /// # Errors
    ///
    /// `ConflictError` (`zeo_storage::Error::Conflict`) for an unresolved
    /// conflict (the object's cached current revision is dropped, as ZEO
    /// does), other vote errors, or [`Error::Disconnected`].
    pub async fn tpc_vote(&self, txn: TxnHandle) -> Result<Vec<Oid>> {
        let result = self.vote_rounds(txn).await;
        if let Err(e) = &result {
            self.note_vote_failure(txn, e);
        }
        result
    }

    /// Runs [`Vote`]: votes, resolves what it asks to, and votes again.
    async fn vote_rounds(&self, txn: TxnHandle) -> Result<Vec<Oid>> {
        let mut vote = Vote::default();
        loop {
            vote.start_round()?;
            let (conn, id) = self.with_txn(txn, |s| Ok((s.conn.clone(), s.id)))?;
            let reply = conn.call(|msgid| ClientRequest::vote(msgid, id)).await;
            let step = self.with_txn(txn, |s| match vote.on_reply(&mut s.writes, reply) {
                Ok(step) => Ok(Ok(step)),
                Err(VoteFailure::Other(e)) => Err(e),
                Err(VoteFailure::Conflict(unresolved)) => Ok(Err(unresolved)),
            })?;
            let conflicts = match step {
                Ok(VoteStep::Done(oids)) => return Ok(oids),
                Ok(VoteStep::Resolve(conflicts)) => conflicts,
                Err(unresolved) => {
                    self.cache().drop_current(unresolved.oid);
                    return Err(unresolved.error);
                }
            };
            for c in conflicts {
                let options = &self.inner.options;
                let resolved = if options.may_resolve(&c.data) {
                    options.resolve_conflict(&conflict_states(&conn, c.clone()).await?)
                } else {
                    None
                };
                let data = match vote.resolution(&c, resolved) {
                    Ok(data) => data,
                    Err(unresolved) => {
                        self.cache().drop_current(unresolved.oid);
                        return Err(unresolved.error);
                    }
                };
                self.with_txn(txn, |s| {
                    s.conn
                        .call_async(&ClientRequest::storea(c.oid, c.committed, &data, s.id))?;
                    vote.restored_resolution(&mut s.writes, c.oid, data);
                    Ok(())
                })?;
            }
        }
    }

    /// Finishes the transaction and returns its tid. The cache is updated
    /// with the committed data in the connection's reader, before any later
    /// invalidation is applied; a failure closes the connection so that the
    /// cache is re-verified on reconnect, as ZEO does.
    ///
    /// # Errors
    ///
    /// What the server's `tpc_finish` raised, or [`Error::Disconnected`].
    pub async fn tpc_finish(&self, txn: TxnHandle) -> Result<Tid> {
        let mut state = {
            let mut guard = self.inner.txn.lock().unwrap_or_else(|e| e.into_inner());
            match guard.take() {
                Some(s) if s.handle == txn => s,
                other => {
                    *guard = other;
                    return Err(zeo_storage::Error::Transaction(
                        "transaction not committing".into(),
                    )
                    .into());
                }
            }
        };
        if state.conn.is_closed() {
            return Err(Error::Disconnected(
                "the connection was lost during the transaction".into(),
            ));
        }
        let updates = state.writes.cache_updates();
        let shared = self.inner.shared.clone();
        let hook: ReplyHook = Box::new(move |reply| {
            let Ok(value) = reply else { return };
            let Ok(tid) = replies::tid("tpc_finish", value) else {
                return;
            };
            for update in updates {
                shared.cache.invalidate(update.oid, tid);
                if let Some(data) = update.data {
                    shared.cache.store(update.oid, tid, None, &data);
                }
            }
            if let Err(e) = shared.cache.set_last_tid(tid) {
                warn!(error = %e, "could not record the committed tid in the cache");
            }
        });
        let id = state.id;
        let result = state
            .conn
            .call_with_hook(|msgid| ClientRequest::tpc_finish(msgid, id), Some(hook))
            .await
            .and_then(|v| replies::tid("tpc_finish", &v).map_err(protocol_error));
        match &result {
            Ok(tid) => {
                let staged = std::mem::take(&mut state.blobs);
                self.commit_blobs(staged, *tid).await;
            }
            // Our cache may now disagree with the server: reconnect and
            // verify it.
            Err(_) => state.conn.close(),
        }
        result
    }

    /// Aborts the transaction (ignored when `txn` is not the open one).
    pub async fn tpc_abort(&self, txn: TxnHandle) {
        if let Some(state) = self.take_txn(txn) {
            Self::abort_state(state).await;
        }
    }

    /// Takes `txn` out of the transaction slot, if it is the open one.
    pub(crate) fn take_txn(&self, txn: TxnHandle) -> Option<TxnState> {
        let mut guard = self.inner.txn.lock().unwrap_or_else(|e| e.into_inner());
        match guard.take() {
            Some(s) if s.handle == txn => Some(s),
            other => {
                *guard = other;
                None
            }
        }
    }

    /// Tells the server to abort a transaction taken from the slot; the
    /// slot is free once `state` is dropped.
    pub(crate) async fn abort_state(state: TxnState) {
        if !state.conn.is_closed() {
            let id = state.id;
            if let Err(e) = state
                .conn
                .call(|msgid| ClientRequest::tpc_abort(msgid, id))
                .await
            {
                if !e.is_disconnected() {
                    warn!(error = %e, "tpc_abort failed on the server");
                }
            }
        }
    }

    /// The tid a transaction commits under: `None`, since a network client
    /// learns it only from `tpc_finish`.
    ///
    /// # Errors
    ///
    /// `StorageTransactionError` when `txn` is not the current transaction.
    pub fn transaction_tid(&self, txn: TxnHandle) -> Result<Option<Tid>> {
        self.with_txn(txn, |_| Ok(None))
    }

    /// Closes the connection and stops reconnecting; the cache is synced.
    /// Closing again does nothing. Call it when done: dropping the clones
    /// does not stop a connected client's background task.
    ///
    /// # Errors
    ///
    /// The cache could not be written to its file (the client is closed
    /// all the same).
    pub fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.inner.close_notify.notify_waiters();
        let conn = self.inner.current.send_replace(None);
        if let Some(c) = conn {
            c.close();
        }
        self.cache().sync().inspect_err(|e| {
            warn!(error = %e, "syncing the client cache on close");
        })
    }

    /// Whether [`AsyncClientStorage::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }
}

/// Loads what a resolver needs besides the conflict itself: the committed
/// state and the state the transaction started from (ZEO's resolver loads
/// both with `loadSerial`).
async fn conflict_states(
    conn: &Conn,
    c: zeo_protocol::reply::VoteConflict,
) -> Result<ConflictInfo> {
    let load = |serial: Tid| async move {
        match conn
            .call(|id| ClientRequest::load_serial(id, c.oid, serial))
            .await?
        {
            Value::Bytes(b) => Ok(b),
            other => Err(Error::Protocol(format!(
                "loadSerial returned {}",
                other.type_name()
            ))),
        }
    };
    let committed_data = load(c.committed).await?;
    let old_data = if c.old == Tid::ZERO {
        None
    } else {
        match load(c.old).await {
            Ok(data) => Some(data),
            Err(Error::Storage(zeo_storage::Error::PosKey { .. })) => None,
            Err(e) => return Err(e),
        }
    };
    Ok(ConflictInfo {
        oid: c.oid,
        committed: c.committed,
        old: c.old,
        data: c.data,
        committed_data,
        old_data,
    })
}
