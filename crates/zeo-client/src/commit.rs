//! Safe transactions: `commit(options, |txn| ...)` on both clients runs the
//! body between `tpc_begin` and vote/finish, aborts whenever the body or
//! the commit fails (also when the body panics or the future is dropped),
//! and optionally runs the body again after a conflict.

use std::future::Future;

use tracing::{debug, warn};
use zeo_pickle::zodb::Record;
use zeo_storage::{BeginOptions, Oid, Storage, Tid, TransactionMetaData, TxnHandle};

use crate::client::AsyncClientStorage;
use crate::error::{Error, Result};
use crate::storage::ClientStorage;

/// How a transaction made by `commit` is described and retried.
///
/// ```
/// let options = zeo_client::CommitOptions::new()
///     .user("alice")
///     .description("add a page")
///     .retry_conflicts(3);
/// assert_eq!(options.attempts, 3);
/// assert_eq!(options.metadata().description, b"add a page");
/// ```
#[derive(Clone, Debug)]
pub struct CommitOptions {
    /// The transaction's user name (`user` in the undo log).
    pub user: String,
    /// The transaction's description.
    pub description: String,
    /// The extension dict pickled with protocol 3; empty for `{}`.
    pub extension: Vec<u8>,
    /// How many times the body runs at most: a conflict error (write or
    /// read) at vote aborts and, while attempts remain, begins a new
    /// transaction and runs the body again (which must therefore load what
    /// it changes inside the transaction). 1, the default, never retries.
    pub attempts: u32,
}

impl Default for CommitOptions {
    fn default() -> Self {
        CommitOptions {
            user: String::new(),
            description: String::new(),
            extension: Vec::new(),
            attempts: 1,
        }
    }
}

impl CommitOptions {
    /// No user, no description, no retry.
    pub fn new() -> Self {
        CommitOptions::default()
    }

    /// Sets the user name.
    pub fn user(mut self, user: &str) -> Self {
        user.clone_into(&mut self.user);
        self
    }

    /// Sets the description.
    pub fn description(mut self, description: &str) -> Self {
        description.clone_into(&mut self.description);
        self
    }

    /// Runs the body up to `attempts` times when the commit meets a
    /// conflict (0 counts as 1).
    pub fn retry_conflicts(mut self, attempts: u32) -> Self {
        self.attempts = attempts;
        self
    }

    /// The transaction metadata `tpc_begin` is given.
    pub fn metadata(&self) -> TransactionMetaData {
        TransactionMetaData {
            user: self.user.as_bytes().to_vec(),
            description: self.description.as_bytes().to_vec(),
            extension: self.extension.clone(),
        }
    }
}

/// The open transaction a blocking `commit` body works in.
#[derive(Debug)]
pub struct Transaction<'a> {
    storage: &'a ClientStorage,
    handle: TxnHandle,
}

impl Transaction<'_> {
    /// The handle, for the [`Storage`] methods not wrapped here.
    pub fn handle(&self) -> TxnHandle {
        self.handle
    }

    /// The current revision of `oid` (cache first).
    ///
    /// # Errors
    ///
    /// As [`AsyncClientStorage::load`].
    pub fn load(&self, oid: Oid) -> Result<(Vec<u8>, Tid)> {
        self.storage.load(oid).map_err(Error::from)
    }

    /// The current revision of `oid`, decoded.
    ///
    /// # Errors
    ///
    /// As [`Transaction::load`], or [`Error::Record`] for data that is
    /// not a ZODB record.
    pub fn load_record(&self, oid: Oid) -> Result<(Record, Tid)> {
        let (data, tid) = self.load(oid)?;
        Ok((Record::decode(&data)?, tid))
    }

    /// A new oid.
    ///
    /// # Errors
    ///
    /// As [`AsyncClientStorage::new_oid`].
    pub fn new_oid(&self) -> Result<Oid> {
        self.storage.new_oid().map_err(Error::from)
    }

    /// Stages `data` as the new revision of `oid`, based on `serial`
    /// ([`Tid::ZERO`] for a new object).
    ///
    /// # Errors
    ///
    /// As [`AsyncClientStorage::store`].
    pub fn store(&self, oid: Oid, serial: Tid, data: &[u8]) -> Result<()> {
        self.storage
            .as_async()
            .store(self.handle, oid, serial, data)
    }

    /// [`Transaction::store`] of an encoded record.
    ///
    /// # Errors
    ///
    /// As [`Transaction::store`], or [`Error::Record`] when the record
    /// cannot be encoded.
    pub fn store_record(&self, oid: Oid, serial: Tid, record: &Record) -> Result<()> {
        self.store(oid, serial, &record.encode()?)
    }

    /// Deletes `oid` (revision `serial`).
    ///
    /// # Errors
    ///
    /// As [`AsyncClientStorage::delete_object`].
    pub fn delete_object(&self, oid: Oid, serial: Tid) -> Result<()> {
        self.storage
            .as_async()
            .delete_object(self.handle, oid, serial)
    }

    /// Fails the vote with a read conflict unless `oid` is still at
    /// `serial`.
    ///
    /// # Errors
    ///
    /// As [`AsyncClientStorage::check_current_serial`].
    pub fn check_current_serial(&self, oid: Oid, serial: Tid) -> Result<()> {
        self.storage
            .as_async()
            .check_current_serial(self.handle, oid, serial)
    }
}

/// Aborts the transaction on drop unless it finished.
struct AbortOnDrop<'a> {
    storage: &'a ClientStorage,
    handle: TxnHandle,
}

impl Drop for AbortOnDrop<'_> {
    fn drop(&mut self) {
        // A no-op once tpc_finish took the transaction.
        self.storage.tpc_abort(self.handle);
    }
}

impl ClientStorage {
    /// Runs `body` in a new transaction and commits it, returning what the
    /// body returned and the transaction's tid.
    ///
    /// The transaction is aborted when the body returns an error (which is
    /// returned), when it panics, or when vote or finish fail; with
    /// [`CommitOptions::attempts`] above 1, a conflict starts over with a
    /// new transaction. See [`AsyncClientStorage::commit`] for async code.
    ///
    /// ```no_run
    /// use zeo_client::{ClientOptions, ClientStorage, CommitOptions, ServerAddress};
    /// use zeo_pickle::{zodb::Record, Value};
    /// use zeo_storage::Oid;
    ///
    /// let storage = ClientStorage::open(ClientOptions::new(vec![ServerAddress::localhost(8100)]))?;
    /// let options = CommitOptions::new().description("count a visit").retry_conflicts(5);
    /// let ((), tid) = storage.commit(&options, |txn| {
    ///     let (mut root, serial) = txn.load_record(Oid::ROOT)?;
    ///     let n = root.mapping_get("visits").and_then(Value::as_i64).unwrap_or(0);
    ///     root.try_mapping_set(Value::str("visits"), Value::Int(n + 1))?;
    ///     txn.store_record(Oid::ROOT, serial, &root)
    /// })?;
    /// # Ok::<(), zeo_client::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// What the body returned, or what `tpc_begin`, `tpc_vote` or
    /// `tpc_finish` failed with (a conflict once attempts are used up).
    pub fn commit<T>(
        &self,
        options: &CommitOptions,
        mut body: impl FnMut(&Transaction<'_>) -> Result<T>,
    ) -> Result<(T, Tid)> {
        let meta = options.metadata();
        let attempts = options.attempts.max(1);
        let mut attempt = 1;
        loop {
            match self.commit_once(&meta, &mut body) {
                Err(e) if e.is_conflict() && attempt < attempts => {
                    debug!(attempt, error = %e, "conflict; running the transaction again");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn commit_once<T>(
        &self,
        meta: &TransactionMetaData,
        body: &mut impl FnMut(&Transaction<'_>) -> Result<T>,
    ) -> Result<(T, Tid)> {
        let handle = self
            .tpc_begin(meta, BeginOptions::default())
            .map_err(Error::from)?;
        let _abort = AbortOnDrop {
            storage: self,
            handle,
        };
        let value = body(&Transaction {
            storage: self,
            handle,
        })?;
        self.tpc_vote(handle).map_err(Error::from)?;
        let tid = self.finish(handle)?;
        Ok((value, tid))
    }

    /// `tpc_finish` without the callback the [`Storage`] trait asks for.
    ///
    /// # Errors
    ///
    /// As [`AsyncClientStorage::tpc_finish`].
    pub fn finish(&self, txn: TxnHandle) -> Result<Tid> {
        self.block_on(self.as_async().tpc_finish(txn))
    }
}

/// The open transaction an async `commit` body works in: the client and
/// the handle, cheap to clone and owned, so that the body's future can
/// hold it.
#[derive(Clone, Debug)]
pub struct AsyncTransaction {
    client: AsyncClientStorage,
    handle: TxnHandle,
}

impl AsyncTransaction {
    /// The handle, for the client methods not wrapped here.
    pub fn handle(&self) -> TxnHandle {
        self.handle
    }

    /// The current revision of `oid` (cache first).
    ///
    /// # Errors
    ///
    /// As [`AsyncClientStorage::load`].
    pub async fn load(&self, oid: Oid) -> Result<(Vec<u8>, Tid)> {
        self.client.load(oid).await
    }

    /// The current revision of `oid`, decoded.
    ///
    /// # Errors
    ///
    /// As [`AsyncTransaction::load`], or [`Error::Record`].
    pub async fn load_record(&self, oid: Oid) -> Result<(Record, Tid)> {
        let (data, tid) = self.load(oid).await?;
        Ok((Record::decode(&data)?, tid))
    }

    /// A new oid.
    ///
    /// # Errors
    ///
    /// As [`AsyncClientStorage::new_oid`].
    pub async fn new_oid(&self) -> Result<Oid> {
        self.client.new_oid().await
    }

    /// Stages `data` as the new revision of `oid`.
    ///
    /// # Errors
    ///
    /// As [`AsyncClientStorage::store`].
    pub fn store(&self, oid: Oid, serial: Tid, data: &[u8]) -> Result<()> {
        self.client.store(self.handle, oid, serial, data)
    }

    /// [`AsyncTransaction::store`] of an encoded record.
    ///
    /// # Errors
    ///
    /// As [`AsyncTransaction::store`], or [`Error::Record`].
    pub fn store_record(&self, oid: Oid, serial: Tid, record: &Record) -> Result<()> {
        self.store(oid, serial, &record.encode()?)
    }

    /// Deletes `oid` (revision `serial`).
    ///
    /// # Errors
    ///
    /// As [`AsyncClientStorage::delete_object`].
    pub fn delete_object(&self, oid: Oid, serial: Tid) -> Result<()> {
        self.client.delete_object(self.handle, oid, serial)
    }

    /// Fails the vote with a read conflict unless `oid` is still at
    /// `serial`.
    ///
    /// # Errors
    ///
    /// As [`AsyncClientStorage::check_current_serial`].
    pub fn check_current_serial(&self, oid: Oid, serial: Tid) -> Result<()> {
        self.client.check_current_serial(self.handle, oid, serial)
    }
}

/// Aborts on drop (a dropped commit future included) unless finished.
struct AsyncAbortOnDrop {
    client: AsyncClientStorage,
    handle: TxnHandle,
    done: bool,
}

impl Drop for AsyncAbortOnDrop {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // The slot is released once the server has been told (or the
        // connection is found closed).
        let Some(state) = self.client.take_txn(self.handle) else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(AsyncClientStorage::abort_state(state));
            }
            Err(_) => {
                warn!("transaction dropped outside a runtime; the server aborts it when the connection closes");
            }
        }
    }
}

impl AsyncClientStorage {
    /// Runs `body` in a new transaction and commits it, returning what the
    /// body's future returned and the transaction's tid.
    ///
    /// The body is given an [`AsyncTransaction`] (owned, so its future can
    /// keep it). The transaction is aborted when the body fails, when vote
    /// or finish fail, or when this future is dropped before the end; with
    /// [`CommitOptions::attempts`] above 1, a conflict starts over with a
    /// new transaction and a new run of the body.
    ///
    /// ```no_run
    /// # async fn demo(client: zeo_client::AsyncClientStorage) -> zeo_client::Result<()> {
    /// use zeo_client::CommitOptions;
    /// use zeo_pickle::{zodb::Record, Value};
    /// use zeo_storage::Oid;
    ///
    /// let options = CommitOptions::new().description("count a visit").retry_conflicts(5);
    /// let ((), tid) = client
    ///     .commit(&options, |txn| async move {
    ///         let (mut root, serial) = txn.load_record(Oid::ROOT).await?;
    ///         let n = root.mapping_get("visits").and_then(Value::as_i64).unwrap_or(0);
    ///         root.try_mapping_set(Value::str("visits"), Value::Int(n + 1))?;
    ///         txn.store_record(Oid::ROOT, serial, &root)
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// What the body returned, or what `tpc_begin`, `tpc_vote` or
    /// `tpc_finish` failed with (a conflict once attempts are used up).
    pub async fn commit<T, F, Fut>(&self, options: &CommitOptions, mut body: F) -> Result<(T, Tid)>
    where
        F: FnMut(AsyncTransaction) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let meta = options.metadata();
        let attempts = options.attempts.max(1);
        let mut attempt = 1;
        loop {
            match self.commit_once(&meta, &mut body).await {
                Err(e) if e.is_conflict() && attempt < attempts => {
                    debug!(attempt, error = %e, "conflict; running the transaction again");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn commit_once<T, F, Fut>(
        &self,
        meta: &TransactionMetaData,
        body: &mut F,
    ) -> Result<(T, Tid)>
    where
        F: FnMut(AsyncTransaction) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let handle = self.tpc_begin(meta, BeginOptions::default()).await?;
        let mut guard = AsyncAbortOnDrop {
            client: self.clone(),
            handle,
            done: false,
        };
        let outcome = async {
            let value = body(AsyncTransaction {
                client: self.clone(),
                handle,
            })
            .await?;
            self.tpc_vote(handle).await?;
            Ok((value, self.tpc_finish(handle).await?))
        }
        .await;
        if outcome.is_err() {
            self.tpc_abort(handle).await;
        }
        guard.done = true;
        outcome
    }
}
