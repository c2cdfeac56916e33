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
use zeo_protocol::ClientRequest;
use zeo_storage::{
    BeginOptions, CurrentRecord, HistoryEntry, LoadedRevision, Oid, Storage, Tid, TransactionIter,
    TransactionMetaData, TxnHandle,
};

use crate::client::{AsyncClientStorage, ClientStats};
use crate::connection::Notice;
use crate::error::{Error, Result};
use crate::options::ClientOptions;
use crate::ClientCache;

/// A blocking ZEO client storage.
///
/// ```no_run
/// use zeo_client::{ClientOptions, ClientStorage, ServerAddress};
/// use zeo_storage::{BeginOptions, Oid, Storage, Tid, TransactionMetaData};
///
/// let storage = ClientStorage::open(ClientOptions::new(vec![ServerAddress::localhost(8100)]))?;
/// let txn = storage.tpc_begin(&TransactionMetaData::default(), BeginOptions::default())?;
/// let oid = storage.new_oid()?;
/// storage.store(txn, oid, Tid::ZERO, b"record")?;
/// storage.tpc_vote(txn)?;
/// let tid = storage.tpc_finish(txn, &mut |_| {})?;
/// assert_eq!(storage.load(oid)?, (b"record".to_vec(), tid));
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

    fn block<F: std::future::Future>(&self, f: F) -> F::Output {
        match &self.runtime {
            Some(rt) => rt.block_on(f),
            // Only reachable during drop.
            None => futures_lite_block(f),
        }
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
        self.client.close();
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

    fn transaction_tid(&self, txn: TxnHandle) -> zeo_storage::Result<Tid> {
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

    fn delete_object(&self, txn: TxnHandle, oid: Oid, serial: Tid) -> zeo_storage::Result<()> {
        st(self.client.delete_object(txn, oid, serial))
    }

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

    fn undo(&self, txn: TxnHandle, undo_id: &[u8]) -> zeo_storage::Result<Vec<Oid>> {
        st(self.client.undo(txn, undo_id))
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

    fn iterator(
        &self,
        _start: Option<Tid>,
        _stop: Option<Tid>,
    ) -> zeo_storage::Result<TransactionIter<'_>> {
        Err(zeo_storage::Error::Storage(
            "transaction iteration through a ZEO client is not implemented yet".into(),
        ))
    }

    fn record_iternext(&self, next: Option<Oid>) -> zeo_storage::Result<Option<CurrentRecord>> {
        st(self.block(self.client.record_iternext(next)))
    }

    fn pack(&self, pack_time: f64, _gc: bool) -> zeo_storage::Result<()> {
        st(self.block(self.client.pack(pack_time)))
    }

    fn close(&self) -> zeo_storage::Result<()> {
        self.client.close();
        Ok(())
    }
}

impl AsyncClientStorage {
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
