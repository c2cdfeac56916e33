//! [`AsyncClientStorage`]: the client on the caller's tokio runtime —
//! connection management, cache verification, loads and two-phase commit.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::{error, info, warn};
use zeo_pickle::Value;
use zeo_protocol::{client::replies, ClientRequest, TxnId};
use zeo_storage::{
    BeginOptions, HistoryEntry, LoadedRevision, Oid, Tid, TransactionMetaData, TxnHandle,
};

use crate::cache::{CacheStats, ClientCache};
use crate::connection::{Conn, Notice, ReplyHook, Shared};
use crate::error::{Error, Result};
use crate::options::{ClientOptions, ConflictInfo};

/// How many rounds of client-side conflict resolution a vote tries (ZEO's
/// limit).
const MAX_VOTE_ROUNDS: usize = 9;

/// Counters of what the client did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// `loadBefore` requests sent to a server (cache misses).
    pub server_loads: u64,
    /// Verified connections made so far (1 after the first connect).
    pub connections: u64,
    /// The cache's counters.
    pub cache: CacheStats,
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
    inner: Arc<Inner>,
}

struct Inner {
    options: ClientOptions,
    name: String,
    shared: Arc<Shared>,
    current: watch::Sender<Option<Arc<Conn>>>,
    generation: AtomicU64,
    closed: AtomicBool,
    close_notify: Notify,
    oids: tokio::sync::Mutex<Vec<Oid>>,
    txn_slot: Arc<Semaphore>,
    txn: Mutex<Option<TxnState>>,
    /// What the open transaction is, for the error of a `tpc_begin` that
    /// gives up waiting for it; kept until the slot is released.
    txn_info: Arc<Mutex<Option<OpenTxn>>>,
    next_txn: AtomicU64,
    /// How the last failed connection round went, per address.
    rounds: watch::Sender<FailedRound>,
    txn_id_base: i64,
    server_loads: AtomicU64,
    connections: AtomicU64,
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

/// The outcome of the latest connection round that failed.
#[derive(Clone, Debug, Default)]
struct FailedRound {
    /// `address: error` for each address tried.
    errors: Vec<String>,
    /// Whether every address refused the connection.
    all_refused: bool,
    /// When every address failed its TLS handshake: the first failure,
    /// which ends a wait for a connection at once.
    tls_failure: Option<(String, zeo_tls::FailureReason)>,
}

pub(crate) struct TxnState {
    handle: TxnHandle,
    id: TxnId,
    conn: Arc<Conn>,
    /// The last data stored per object (`None`: deleted).
    stored: HashMap<Oid, Option<Vec<u8>>>,
    /// Objects whose data the server changed (resolved or undone).
    server_resolved: HashSet<Oid>,
    /// Objects this client resolved and re-stored.
    client_resolved: Vec<Oid>,
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

fn jitter(d: Duration) -> Duration {
    // Up to a quarter more, so that many clients of a restarted server do
    // not reconnect in lockstep.
    let frac = (random_u64() % 1000) as f64 / 4000.0;
    d.mul_f64(1.0 + frac)
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
        let shared = Arc::new(Shared {
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
            stored: HashMap::new(),
            server_resolved: HashSet::new(),
            client_resolved: Vec::new(),
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
    fn with_txn<T>(&self, txn: TxnHandle, f: impl FnOnce(&mut TxnState) -> Result<T>) -> Result<T> {
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
            s.stored.insert(oid, Some(data.to_vec()));
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
            s.stored.insert(oid, None);
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
            // The restored revision is not the one we would cache as
            // current unless it is; let invalidation sort it out.
            s.server_resolved.insert(oid);
            s.stored.insert(oid, None);
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

    async fn vote_rounds(&self, txn: TxnHandle) -> Result<Vec<Oid>> {
        for _ in 0..MAX_VOTE_ROUNDS {
            let (conn, id) = self.with_txn(txn, |s| Ok((s.conn.clone(), s.id)))?;
            let reply = conn.call(|msgid| ClientRequest::vote(msgid, id)).await;
            let value = match reply {
                Ok(v) => v,
                Err(Error::Storage(zeo_storage::Error::Conflict {
                    oid,
                    committed,
                    old,
                })) => {
                    self.cache().drop_current(oid);
                    return Err(zeo_storage::Error::Conflict {
                        oid,
                        committed,
                        old,
                    }
                    .into());
                }
                Err(e) => return Err(e),
            };
            let items = replies::vote(&value).map_err(protocol_error)?;
            let mut conflicts = false;
            for item in items {
                match item {
                    replies::VoteItem::Changed(oid) => {
                        self.with_txn(txn, |s| Ok(s.server_resolved.insert(oid)))?;
                    }
                    replies::VoteItem::Conflict(c) => {
                        conflicts = true;
                        let (oid, committed, old) = (c.oid, c.committed, c.old);
                        let resolved = match &self.inner.options.conflict_resolver {
                            Some(resolver) => resolver(&conflict_states(&conn, c).await?),
                            None => None,
                        };
                        let Some(data) = resolved else {
                            self.cache().drop_current(oid);
                            return Err(zeo_storage::Error::Conflict {
                                oid,
                                committed,
                                old,
                            }
                            .into());
                        };
                        self.with_txn(txn, |s| {
                            s.conn
                                .call_async(&ClientRequest::storea(oid, committed, &data, s.id))?;
                            s.stored.insert(oid, Some(data));
                            s.client_resolved.push(oid);
                            Ok(())
                        })?;
                    }
                }
            }
            if !conflicts {
                return self.with_txn(txn, |s| {
                    let mut oids: Vec<Oid> = s.server_resolved.iter().copied().collect();
                    oids.sort();
                    oids.extend(s.client_resolved.iter().copied());
                    Ok(oids)
                });
            }
        }
        Err(zeo_storage::Error::Storage(format!(
            "conflicts still unresolved after {MAX_VOTE_ROUNDS} vote rounds"
        ))
        .into())
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
        let state = {
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
        // Undone objects come back from vote without having been stored:
        // they must be invalidated all the same.
        let undone: Vec<Oid> = state
            .server_resolved
            .iter()
            .filter(|oid| !state.stored.contains_key(oid))
            .copied()
            .collect();
        let updates: Vec<(Oid, Option<Vec<u8>>, bool)> = state
            .stored
            .into_iter()
            .map(|(oid, data)| {
                let resolved = state.server_resolved.contains(&oid);
                (oid, data, resolved)
            })
            .chain(undone.into_iter().map(|oid| (oid, None, true)))
            .collect();
        let shared = self.inner.shared.clone();
        let hook: ReplyHook = Box::new(move |reply| {
            let Ok(value) = reply else { return };
            let Ok(tid) = replies::tid("tpc_finish", value) else {
                return;
            };
            for (oid, data, resolved) in updates {
                shared.cache.invalidate(oid, tid);
                if let (Some(data), false) = (data, resolved) {
                    shared.cache.store(oid, tid, None, &data);
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
        if result.is_err() {
            // Our cache may now disagree with the server: reconnect and
            // verify it.
            state.conn.close();
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

    /// The tid a transaction commits under is only known at finish for a
    /// network client.
    pub fn transaction_tid(&self, txn: TxnHandle) -> Result<Tid> {
        self.with_txn(txn, |_| {
            Err(zeo_storage::Error::Transaction(
                "a ZEO client learns the transaction's tid at tpc_finish".into(),
            )
            .into())
        })
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

/// Keeps the client connected: connects, verifies, waits for the
/// connection to drop, backs off, and starts again, until closed.
async fn manage(weak: std::sync::Weak<Inner>) {
    let Some(inner) = weak.upgrade() else { return };
    let min = inner
        .options
        .min_disconnect_poll
        .max(Duration::from_millis(10));
    let max = inner.options.max_disconnect_poll.max(min);
    drop(inner);
    let mut delay = min;
    loop {
        let Some(inner) = weak.upgrade() else { return };
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        match connect_round(&inner, false).await {
            Ok(mut conn) => {
                delay = min;
                loop {
                    let upgrade = inner.options.read_only_fallback && conn.read_only();
                    let closed = inner.close_notify.notified();
                    if inner.closed.load(Ordering::Acquire) {
                        conn.close();
                        return;
                    }
                    tokio::select! {
                        _ = conn.closed() => break,
                        _ = closed => { conn.close(); return; }
                        _ = tokio::time::sleep(jitter(delay)), if upgrade => {
                            if let Ok(better) = connect_round(&inner, true).await {
                                info!(address = %better.address, "switching to a writable server");
                                let old = std::mem::replace(&mut conn, better);
                                old.close();
                            }
                            delay = (delay * 2).min(max);
                        }
                    }
                }
                inner.current.send_if_modified(|c| {
                    if c.as_ref().is_some_and(|c| c.is_closed()) {
                        *c = None;
                        true
                    } else {
                        false
                    }
                });
                warn!(name = %inner.name, "disconnected from the server; reconnecting");
                inner.shared.notify(Notice::Disconnected);
            }
            Err(e) => {
                warn!(name = %inner.name, error = %e, retry_in = ?delay, "could not connect");
                let closed = inner.close_notify.notified();
                tokio::select! {
                    _ = tokio::time::sleep(jitter(delay)) => {}
                    _ = closed => return,
                }
                delay = (delay * 2).min(max);
            }
        }
    }
}

/// Tries every address at once; the first writable registration wins (or a
/// read-only one when that is all there is and read-only is acceptable).
/// The winner's cache verification runs before it is published.
async fn connect_round(inner: &Arc<Inner>, writable_only: bool) -> Result<Arc<Conn>> {
    let options = &inner.options;
    let generation = inner.generation.fetch_add(1, Ordering::AcqRel) + 1;
    let mut attempts = JoinSet::new();
    for address in &options.servers {
        let (address, options, shared) = (address.clone(), options.clone(), inner.shared.clone());
        attempts.spawn(async move { Conn::open(&address, &options, shared, generation).await });
    }
    let mut fallback: Option<Arc<Conn>> = None;
    let mut last_error = Error::Disconnected("no server address".into());
    let mut errors = Vec::new();
    let mut all_refused = true;
    let mut tls_failures = Vec::new();
    while let Some(joined) = attempts.join_next().await {
        match joined {
            Ok(Ok(conn)) => {
                let acceptable_now = !conn.read_only() || options.read_only;
                if acceptable_now {
                    if let Some(f) = fallback.take() {
                        f.close();
                    }
                    attempts.abort_all();
                    fallback = Some(conn);
                    break;
                }
                if writable_only || fallback.is_some() {
                    conn.close();
                } else {
                    fallback = Some(conn);
                }
            }
            Ok(Err((e, refused))) => {
                all_refused &= refused;
                if let Error::Tls { address, reason } = &e {
                    tls_failures.push((address.clone(), reason.clone()));
                }
                errors.push(match &e {
                    // Already `address: reason`.
                    Error::Disconnected(m) => m.clone(),
                    other => other.to_string(),
                });
                last_error = e;
            }
            Err(e) => {
                all_refused = false;
                last_error = Error::Disconnected(format!("connection attempt failed: {e}"));
                errors.push(last_error.to_string());
            }
        }
    }
    let Some(conn) = fallback else {
        // With several addresses, the log line names every reason.
        let error = if errors.len() > 1 {
            Error::Disconnected(errors.join("; "))
        } else {
            last_error
        };
        let every_tls = tls_failures.len() == errors.len();
        inner.rounds.send_modify(|r| {
            r.errors = errors;
            r.all_refused = all_refused;
            r.tls_failure = tls_failures.into_iter().next().filter(|_| every_tls);
        });
        return Err(error);
    };
    if writable_only && conn.read_only() {
        conn.close();
        return Err(Error::Disconnected("no writable server".into()));
    }
    if let Err(e) = verify(inner, &conn).await {
        conn.close();
        return Err(e);
    }
    inner.connections.fetch_add(1, Ordering::Relaxed);
    inner.rounds.send_modify(|r| {
        r.errors.clear();
        r.all_refused = false;
        r.tls_failure = None;
    });
    info!(address = %conn.address, read_only = conn.read_only(), "connected");
    inner.current.send_replace(Some(conn.clone()));
    inner.shared.notify(Notice::Connected {
        address: conn.address.to_string(),
        read_only: conn.read_only(),
    });
    Ok(conn)
}

/// ZEO 5's cache verification (`ClientIO.verify`).
async fn verify(inner: &Inner, conn: &Arc<Conn>) -> Result<()> {
    let cache = &inner.shared.cache;
    let server_tid = conn.server_tid();
    let mut tid = server_tid;
    if !cache.is_empty() {
        match cache.last_tid() {
            None => {
                warn!("non-empty client cache without a last tid; clearing it");
                cache.clear();
                inner.shared.notify(Notice::CacheDropped);
            }
            Some(cache_tid) if cache_tid > server_tid => {
                error!(
                    %cache_tid, %server_tid,
                    "client cache is out of sync with the server: verify that this is expected, then remove the cache file"
                );
                return Err(Error::CacheNewerThanServer {
                    cache: cache_tid,
                    server: server_tid,
                });
            }
            Some(cache_tid) if cache_tid == server_tid => {}
            Some(cache_tid) => {
                let value = conn
                    .call(|id| ClientRequest::get_invalidations(id, cache_tid))
                    .await?;
                match replies::invalidations(&value).map_err(protocol_error)? {
                    Some((latest, oids)) => {
                        for &oid in &oids {
                            cache.drop_current(oid);
                        }
                        tid = latest.max(server_tid);
                        inner
                            .shared
                            .notify(Notice::Invalidated { tid: latest, oids });
                    }
                    None => {
                        warn!(name = %inner.name, "client cache too old to verify; dropping it");
                        cache.clear();
                        inner.shared.notify(Notice::CacheDropped);
                    }
                }
            }
        }
    }
    if let Err(e) = cache.set_last_tid(tid) {
        warn!(error = %e, "cache last tid regressed; clearing the cache");
        cache.clear();
        cache.set_last_tid(tid)?;
    }
    conn.mark_ready(tid);
    let info = conn.call(ClientRequest::get_info).await?;
    if let Value::Dict(entries) = &info {
        let get = |key: &str| {
            entries.iter().find_map(|(k, v)| match (k, v) {
                (Value::Str(k), Value::Int(n)) if k == key => u64::try_from(*n).ok(),
                _ => None,
            })
        };
        *inner.shared.info.lock().unwrap_or_else(|e| e.into_inner()) =
            (get("length").unwrap_or(0), get("size").unwrap_or(0));
        let undo = entries.iter().any(
            |(k, v)| matches!((k, v), (Value::Str(k), Value::Bool(true)) if k == "supportsUndo"),
        );
        inner.shared.supports_undo.store(undo, Ordering::Release);
    }
    if let Some(label) = &inner.options.client_label {
        conn.call_async(&ClientRequest::set_client_label(label))?;
    }
    Ok(())
}
