//! [`ClientStorage`]: the blocking client, implementing the
//! [`zeo_storage::Storage`] trait.
//!
//! It owns a small tokio runtime (one worker thread, named
//! `zeo-client-io`) on which the connection tasks run — the counterpart of
//! ZEO's client I/O thread — and blocks the calling thread on it. Owning the
//! runtime keeps the blocking API usable from plain code with no runtime of
//! its own; async code should use [`AsyncClientStorage`] instead, because
//! blocking inside an async task would stall that task's runtime (and tokio
//! refuses to block on a runtime from within one).

use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio::sync::broadcast;
use zeo_pickle::Value;
use zeo_protocol::{client::replies, ClientRequest};
use zeo_storage::{
    BeginOptions, BlobData, BlobSource, Blobs, CurrentRecord, ExternalGc, HistoryEntry, Iteration,
    LoadedRevision, Oid, Pack, RecordIteration, Restore, Storage, Tid, TransactionIter,
    TransactionMetaData, TransactionRecord, TxnHandle, Undo, UndoEntry, UndoFilter,
};

use crate::client::{AsyncClientStorage, ClientStats};
use crate::connection::Notice;
use crate::error::{Error, Result};
use crate::iteration::TransactionStream;
use crate::options::ClientOptions;
use crate::ClientCache;

/// A blocking ZEO client storage.
///
/// Transactions are easiest with [`ClientStorage::commit`], which aborts
/// on every failure; the two-phase commit calls of the trait are there too
/// (then every `tpc_begin` needs a `tpc_finish` or a `tpc_abort`, even
/// after a failed vote).
///
/// ```no_run
/// use zeo_client::records::{Record, Value};
/// use zeo_client::{ClientOptions, ClientStorage, ServerAddress};
/// use zeo_storage::{BeginOptions, Oid, Storage, Tid, TransactionMetaData};
///
/// let storage = ClientStorage::open(ClientOptions::new(vec![ServerAddress::localhost(8100)]))?;
/// let record = Record::persistent_list([Value::Int(1)]).encode()?;
/// let txn = storage.tpc_begin(&TransactionMetaData::default(), BeginOptions::default())?;
/// let oid = storage.new_oid()?;
/// let tid = match storage.store(txn, oid, Tid::ZERO, &record).and_then(|()| storage.tpc_vote(txn)) {
///     Ok(_) => storage.finish(txn)?,
///     Err(e) => {
///         storage.tpc_abort(txn);
///         return Err(e.into());
///     }
/// };
/// assert_eq!(storage.load(oid)?, (record, tid));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct ClientStorage {
    client: AsyncClientStorage,
    runtime: Option<Arc<Runtime>>,
}

impl ClientStorage {
    /// Starts a runtime, opens the cache and connects (waiting when
    /// `options.wait`).
    ///
    /// # Errors
    ///
    /// As [`AsyncClientStorage::connect`], or the runtime cannot start.
    pub fn open(options: ClientOptions) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("zeo-client-io")
            .enable_all()
            .build()
            .map_err(|e| Error::Config(format!("cannot start the client runtime: {e}")))?;
        let client = runtime.block_on(AsyncClientStorage::connect(options))?;
        Ok(ClientStorage {
            client,
            runtime: Some(Arc::new(runtime)),
        })
    }

    pub(crate) fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.block(f)
    }

    fn block<F: std::future::Future>(&self, f: F) -> F::Output {
        match &self.runtime {
            Some(rt) => rt.block_on(f),
            // Only reachable during drop.
            None => futures_lite_block(f),
        }
    }

    /// Closes the connection and syncs the cache, as
    /// [`AsyncClientStorage::close`] (the same as the trait's `close`,
    /// without importing [`Storage`]; dropping the client closes it too,
    /// ignoring errors).
    ///
    /// # Errors
    ///
    /// The cache could not be written to its file.
    pub fn close(&self) -> Result<()> {
        self.client.close()
    }

    /// The async client this wraps (sharing connection and cache).
    pub fn as_async(&self) -> &AsyncClientStorage {
        &self.client
    }

    /// The client cache.
    pub fn cache(&self) -> &ClientCache {
        self.client.cache()
    }

    /// Invalidation and connection notices; use `blocking_recv` from plain
    /// threads.
    pub fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.client.subscribe()
    }

    /// Whether a verified connection is up.
    pub fn is_connected(&self) -> bool {
        self.client.is_connected()
    }

    /// The server's `get_info` dict, raw.
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] without a connection.
    pub fn get_info(&self) -> Result<Value> {
        self.block(self.client.get_info())
    }

    /// Waits up to `timeout` for a verified connection.
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] on timeout.
    pub fn wait_connected(&self, timeout: Duration) -> Result<()> {
        self.block(self.client.wait_connected(timeout))
    }

    /// Counters (server loads, connections, cache).
    pub fn stats(&self) -> ClientStats {
        self.client.stats()
    }

    /// A round trip to the server.
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] without a connection.
    pub fn ping(&self) -> Result<()> {
        self.block(self.client.ping())
    }

    /// The server's `server_status` dict, raw.
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] without a connection.
    pub fn server_status(&self) -> Result<Value> {
        self.block(self.client.server_status())
    }

    /// Loads the revisions of `oids` current before `before` into the
    /// cache with pipelined requests, as [`AsyncClientStorage::prefetch`],
    /// returning once they are cached.
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] without a connection.
    pub fn prefetch(&self, oids: &[Oid], before: Tid) -> Result<()> {
        self.block(self.client.prefetch(oids, before))
    }

    /// The file holding a blob revision, as
    /// [`AsyncClientStorage::load_blob`].
    ///
    /// # Errors
    ///
    /// As [`AsyncClientStorage::load_blob`].
    pub fn load_blob(&self, oid: Oid, serial: Tid) -> Result<std::path::PathBuf> {
        self.block(self.client.load_blob(oid, serial))
    }

    /// An open reader of a blob revision, as
    /// [`AsyncClientStorage::open_blob`].
    ///
    /// # Errors
    ///
    /// As [`AsyncClientStorage::load_blob`].
    pub fn open_blob(&self, oid: Oid, serial: Tid) -> Result<std::fs::File> {
        self.block(self.client.open_blob(oid, serial))
    }
}

/// Polls a future to completion on the current thread without a runtime;
/// used only for the trivial futures left once the runtime is gone.
fn futures_lite_block<F: std::future::Future>(f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    match rt {
        Ok(rt) => rt.block_on(f),
        Err(e) => panic!("cannot build a runtime to finish a client call: {e}"),
    }
}

impl Drop for ClientStorage {
    fn drop(&mut self) {
        let _ = self.client.close();
        if let Some(rt) = self.runtime.take() {
            if let Ok(rt) = Arc::try_unwrap(rt) {
                // Safe from any context, unlike dropping the runtime.
                rt.shutdown_background();
            }
        }
    }
}

fn st<T>(r: Result<T>) -> zeo_storage::Result<T> {
    r.map_err(Into::into)
}

impl Storage for ClientStorage {
    fn name(&self) -> &str {
        self.client.name()
    }

    fn is_read_only(&self) -> bool {
        self.client.is_read_only()
    }

    fn size(&self) -> u64 {
        self.client.server_info().1
    }

    fn len(&self) -> u64 {
        self.client.server_info().0
    }

    fn last_transaction(&self) -> Tid {
        self.client.last_transaction()
    }

    fn load(&self, oid: Oid) -> zeo_storage::Result<(Vec<u8>, Tid)> {
        if let Some(hit) = self.client.cache().load(oid) {
            return Ok(hit);
        }
        st(self.block(self.client.load(oid)))
    }

    fn load_before(&self, oid: Oid, before: Tid) -> zeo_storage::Result<Option<LoadedRevision>> {
        if let Some(hit) = self.client.cache().load_before(oid, before) {
            return Ok(Some(hit));
        }
        st(self.block(self.client.load_before(oid, before)))
    }

    fn load_serial(&self, oid: Oid, serial: Tid) -> zeo_storage::Result<Vec<u8>> {
        st(self.block(self.client.load_serial(oid, serial)))
    }

    fn history(&self, oid: Oid, size: usize) -> zeo_storage::Result<Vec<HistoryEntry>> {
        st(self.block(self.client.history(oid, size)))
    }

    fn new_oid(&self) -> zeo_storage::Result<Oid> {
        st(self.block(self.client.new_oid()))
    }

    fn tpc_begin(
        &self,
        meta: &TransactionMetaData,
        options: BeginOptions,
    ) -> zeo_storage::Result<TxnHandle> {
        st(self.block(self.client.tpc_begin(meta, options)))
    }

    fn transaction_tid(&self, txn: TxnHandle) -> zeo_storage::Result<Option<Tid>> {
        st(self.client.transaction_tid(txn))
    }

    fn store(&self, txn: TxnHandle, oid: Oid, serial: Tid, data: &[u8]) -> zeo_storage::Result<()> {
        st(self.client.store(txn, oid, serial, data))
    }

    fn check_current_serial(
        &self,
        txn: TxnHandle,
        oid: Oid,
        serial: Tid,
    ) -> zeo_storage::Result<()> {
        st(self.client.check_current_serial(txn, oid, serial))
    }

    fn tpc_vote(&self, txn: TxnHandle) -> zeo_storage::Result<Vec<Oid>> {
        st(self.block(self.client.tpc_vote(txn)))
    }

    fn tpc_finish(
        &self,
        txn: TxnHandle,
        on_commit: &mut dyn FnMut(Tid),
    ) -> zeo_storage::Result<Tid> {
        let tid = st(self.block(self.client.tpc_finish(txn)))?;
        on_commit(tid);
        Ok(tid)
    }

    fn tpc_abort(&self, txn: TxnHandle) {
        self.block(self.client.tpc_abort(txn));
    }

    fn close(&self) -> zeo_storage::Result<()> {
        st(ClientStorage::close(self))
    }

    /// Undo as the server offers it (its `supportsUndo`).
    fn as_undo(&self) -> Option<&dyn Undo> {
        self.client.supports_undo().then_some(self as &dyn Undo)
    }

    /// Blobs when `blob_dir` is configured.
    fn as_blobs(&self) -> Option<&dyn Blobs> {
        self.client.blob_dir().map(|_| self as &dyn Blobs)
    }

    zeo_storage::provide_capabilities!(restore, iteration, record_iteration, pack, external_gc);
}

impl Blobs for ClientStorage {
    fn temporary_directory(&self) -> &std::path::Path {
        self.client
            .blob_dir()
            .map_or(std::path::Path::new(""), |d| d.temporary_directory())
    }

    fn store_blob(
        &self,
        txn: TxnHandle,
        oid: Oid,
        serial: Tid,
        data: &[u8],
        blob: BlobSource,
    ) -> zeo_storage::Result<()> {
        st(self.block(self.client.store_blob(txn, oid, serial, data, blob)))
    }

    /// The file in the blob directory (downloaded first when missing).
    fn load_blob(&self, oid: Oid, serial: Tid) -> zeo_storage::Result<BlobData> {
        st(self.block(self.client.load_blob(oid, serial))).map(BlobData::Path)
    }
}

impl Undo for ClientStorage {
    fn undo(&self, txn: TxnHandle, undo_id: &[u8]) -> zeo_storage::Result<Vec<Oid>> {
        st(self.client.undo(txn, undo_id))
    }

    fn undo_log(
        &self,
        first: i64,
        last: i64,
        filter: Option<UndoFilter<'_>>,
    ) -> zeo_storage::Result<Vec<UndoEntry>> {
        // A filter cannot travel to the server. ZEO's ClientStorage returns
        // an empty list then; this client pages through the server's log and
        // filters here instead.
        match filter {
            None => st(self.block(self.client.undo_log(first, last))),
            Some(filter) => st(self.block(self.client.undo_log_matching(first, last, filter))),
        }
    }
}

impl Restore for ClientStorage {
    fn restore(
        &self,
        txn: TxnHandle,
        oid: Oid,
        serial: Tid,
        data: Option<&[u8]>,
        prev_txn: Option<Tid>,
    ) -> zeo_storage::Result<()> {
        st(self.client.restore(txn, oid, serial, data, prev_txn))
    }
}

impl Iteration for ClientStorage {
    /// Transactions from the server, fetched lazily one at a time (each
    /// with all its records); see [`AsyncClientStorage::iterator`]. The
    /// iterator ends after its first error; dropping it early tells the
    /// server to discard its side.
    fn iterator(
        &self,
        start: Option<Tid>,
        stop: Option<Tid>,
    ) -> zeo_storage::Result<TransactionIter<'_>> {
        let stream = st(self.block(self.client.iterator(start, stop)))?;
        Ok(Box::new(BlockingTransactions {
            storage: self,
            stream,
        }))
    }
}

impl RecordIteration for ClientStorage {
    fn record_iternext(&self, next: Option<Oid>) -> zeo_storage::Result<Option<CurrentRecord>> {
        st(self.block(self.client.record_iternext(next)))
    }
}

impl Pack for ClientStorage {
    /// Packs on the server and waits for it. `gc` cannot be sent: ZEO's
    /// `pack` has no such argument, and the server decides (ZEO servers
    /// always collect garbage when the storage can).
    fn pack(&self, pack_time: f64, _gc: bool) -> zeo_storage::Result<()> {
        st(self.block(self.client.pack(pack_time)))
    }
}

impl ExternalGc for ClientStorage {
    fn delete_object(&self, txn: TxnHandle, oid: Oid, serial: Tid) -> zeo_storage::Result<()> {
        st(self.client.delete_object(txn, oid, serial))
    }
}

/// [`TransactionStream`] behind the blocking `Iterator` the trait returns.
struct BlockingTransactions<'a> {
    storage: &'a ClientStorage,
    stream: TransactionStream,
}

impl Iterator for BlockingTransactions<'_> {
    type Item = zeo_storage::Result<TransactionRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        st(self.storage.block(self.stream.next())).transpose()
    }
}

/// How many undo-log entries one `undoLog` call fetches while filtering
/// client-side.
const UNDO_PAGE: i64 = 100;

impl AsyncClientStorage {
    /// Starts a transaction iterator on the server over the transactions
    /// with `start <= tid <= stop` (`None`: unbounded), oldest first.
    ///
    /// # Errors
    ///
    /// What the server raised, or [`Error::Disconnected`].
    pub async fn iterator(
        &self,
        start: Option<Tid>,
        stop: Option<Tid>,
    ) -> Result<TransactionStream> {
        let conn = self.conn(self.options().wait_timeout).await?;
        TransactionStream::start(conn, start, stop).await
    }

    /// `undo_log(first, last)` with a filter applied here: the entries the
    /// filter accepts, sliced like [`Undo::undo_log`] (`first` and `last`
    /// count accepted entries, as in FileStorage's own filtered search).
    ///
    /// The server's log is read in pages of 100 until enough entries match
    /// or it runs out. Pages are read one call at a time, so a commit in
    /// between shifts the server's positions; entries already seen are
    /// skipped by tid, but a pack in between may hide some.
    ///
    /// # Errors
    ///
    /// What the server raised, or a reply that is not a list of dicts.
    pub async fn undo_log_matching(
        &self,
        first: i64,
        last: i64,
        filter: impl Fn(&UndoEntry) -> bool,
    ) -> Result<Vec<UndoEntry>> {
        let (first, last) = zeo_storage::interface::undo_log_bounds(first, last);
        let mut matched = 0usize;
        let mut out = Vec::new();
        let mut pos: i64 = 0;
        let mut oldest_seen: Option<Tid> = None;
        while matched < last {
            let page = self.undo_log(pos, pos.saturating_add(UNDO_PAGE)).await?;
            let fetched = page.len();
            for entry in page {
                // Newest first: anything not older than what was already
                // seen arrived with a commit since the previous page.
                if entry.tid != Tid::ZERO && oldest_seen.is_some_and(|t| entry.tid >= t) {
                    continue;
                }
                if entry.tid != Tid::ZERO {
                    oldest_seen = Some(entry.tid);
                }
                if !filter(&entry) {
                    continue;
                }
                if matched >= first && matched < last {
                    out.push(entry);
                }
                matched += 1;
                if matched >= last {
                    break;
                }
            }
            if (fetched as i64) < UNDO_PAGE {
                break;
            }
            pos = pos.saturating_add(UNDO_PAGE);
        }
        Ok(out)
    }

    /// The server's `get_info` dict, raw (`length`, `size`, `name`,
    /// `supportsUndo`, `interfaces`, ...).
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] without a connection.
    pub async fn get_info(&self) -> Result<Value> {
        self.call(ClientRequest::get_info).await
    }

    /// `undoLog(first, last)`: undoable transactions, newest first, with
    /// `first`/`last` as in [`Undo::undo_log`].
    ///
    /// Servers identify FileStorage transactions by [`zeo_storage::undo_id()`];
    /// the tid is decoded from that id, and is [`Tid::ZERO`] for ids of
    /// another form.
    ///
    /// # Errors
    ///
    /// What the server raised, or a reply that is not a list of dicts.
    pub async fn undo_log(&self, first: i64, last: i64) -> Result<Vec<UndoEntry>> {
        let value = self
            .call(|id| ClientRequest::undo_log(id, first, last))
            .await?;
        replies::undo_log(&value).map_err(|e| Error::Protocol(e.to_string()))
    }

    /// `record_iternext(next)`: the current record of the first object at
    /// or after `next`.
    ///
    /// # Errors
    ///
    /// What the server raised (an empty storage may raise `KeyError`).
    pub async fn record_iternext(&self, next: Option<Oid>) -> Result<Option<CurrentRecord>> {
        let conn_value = self
            .call(|id| ClientRequest::record_iternext(id, next))
            .await?;
        let bad = || Error::Protocol("record_iternext: expected (oid, tid, data, next)".into());
        let (Value::Tuple(items) | Value::List(items)) = &conn_value else {
            return match conn_value {
                Value::None => Ok(None),
                _ => Err(bad()),
            };
        };
        match items.as_slice() {
            [Value::Bytes(oid), Value::Bytes(tid), Value::Bytes(data), next] => {
                Ok(Some(CurrentRecord {
                    oid: Oid::from_slice(oid).ok_or_else(bad)?,
                    tid: Tid::from_slice(tid).ok_or_else(bad)?,
                    data: data.clone(),
                    next: match next {
                        Value::Bytes(b) => Some(Oid::from_slice(b).ok_or_else(bad)?),
                        _ => None,
                    },
                }))
            }
            _ => Err(bad()),
        }
    }
}
