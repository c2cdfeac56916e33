//! Transaction iterators a client drives with `iterator_start` /
//! `iterator_next` / `iterator_record_*` (`copyTransactionsFrom`,
//! `zodbconvert`).
//!
//! A storage iterator borrows its storage and walks the file once, so each
//! runs on its own thread that owns a handle to the storage and hands
//! transactions over a small channel; the connection keeps only the
//! receiving end. Dropping it stops the thread at its next step.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use zeo_storage::{Error, Storage, Tid, TransactionRecord};

/// Most iterators one connection may keep open: each costs a thread.
pub const MAX_OPEN_ITERATORS: usize = 32;

/// Transactions read ahead of the client.
const READ_AHEAD: usize = 4;

#[derive(Debug)]
enum Entry {
    Transactions {
        rx: mpsc::Receiver<Result<TransactionRecord, Error>>,
        last: Option<Arc<TransactionRecord>>,
    },
    Records {
        txn: Arc<TransactionRecord>,
        next: usize,
    },
}

/// The iterators of one connection, numbered from one counter as ZEO does.
#[derive(Debug, Default)]
pub struct Iterators {
    next_id: i64,
    open: HashMap<i64, Entry>,
}

/// Why an iterator call failed.
#[derive(Debug)]
pub enum IterError {
    /// No such iterator (`KeyError`).
    Unknown(i64),
    /// `iterator_record_start` for a transaction that is not the one the
    /// transaction iterator last returned.
    OutOfOrder(Tid),
    /// Too many open iterators.
    TooMany,
    /// The storage failed.
    Storage(Error),
}

impl Iterators {
    /// Starts a transaction iterator over `start..=stop`.
    pub fn start(
        &mut self,
        storage: Arc<dyn Storage>,
        start: Option<Tid>,
        stop: Option<Tid>,
    ) -> Result<i64, IterError> {
        if self.open.len() >= MAX_OPEN_ITERATORS {
            return Err(IterError::TooMany);
        }
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        std::thread::Builder::new()
            .name("zeo-iterator".into())
            .spawn(move || {
                let iter = match zeo_storage::require(storage.as_iteration(), "iterator")
                    .and_then(|i| i.iterator(start, stop))
                {
                    Ok(iter) => iter,
                    Err(err) => {
                        let _ = tx.blocking_send(Err(err));
                        return;
                    }
                };
                for item in iter {
                    let stop = item.is_err();
                    if tx.blocking_send(item).is_err() || stop {
                        return;
                    }
                }
            })
            .map_err(|e| IterError::Storage(Error::io("starting an iterator thread", e)))?;
        let id = self.alloc();
        self.open.insert(id, Entry::Transactions { rx, last: None });
        Ok(id)
    }

    fn alloc(&mut self) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// The next transaction, `None` at the end (the iterator is then gone).
    pub async fn next_transaction(
        &mut self,
        id: i64,
    ) -> Result<Option<Arc<TransactionRecord>>, IterError> {
        let Some(Entry::Transactions { rx, last }) = self.open.get_mut(&id) else {
            return Err(IterError::Unknown(id));
        };
        match rx.recv().await {
            Some(Ok(txn)) => {
                let txn = Arc::new(txn);
                *last = Some(txn.clone());
                Ok(Some(txn))
            }
            Some(Err(err)) => {
                self.open.remove(&id);
                Err(IterError::Storage(err))
            }
            None => {
                self.open.remove(&id);
                Ok(None)
            }
        }
    }

    /// Starts a record iterator over the transaction `txn_id` last returned,
    /// which must be `tid`.
    pub fn start_records(&mut self, txn_id: i64, tid: Tid) -> Result<i64, IterError> {
        let txn = match self.open.get(&txn_id) {
            Some(Entry::Transactions {
                last: Some(last), ..
            }) => last.clone(),
            _ => return Err(IterError::Unknown(txn_id)),
        };
        if txn.tid != tid {
            return Err(IterError::OutOfOrder(tid));
        }
        if self.open.len() >= MAX_OPEN_ITERATORS * 2 {
            return Err(IterError::TooMany);
        }
        let id = self.alloc();
        self.open.insert(id, Entry::Records { txn, next: 0 });
        Ok(id)
    }

    /// The next record, `None` at the end (the iterator is then gone).
    pub fn next_record(&mut self, id: i64) -> Result<Option<zeo_storage::DataRecord>, IterError> {
        let Some(Entry::Records { txn, next }) = self.open.get_mut(&id) else {
            return Err(IterError::Unknown(id));
        };
        match txn.records.get(*next) {
            Some(record) => {
                *next += 1;
                Ok(Some(record.clone()))
            }
            None => {
                self.open.remove(&id);
                Ok(None)
            }
        }
    }

    /// Forgets iterators; unknown ids are ignored.
    pub fn gc(&mut self, ids: impl IntoIterator<Item = i64>) {
        for id in ids {
            self.open.remove(&id);
        }
    }
}
