//! The model's records: transactions of data records that carry their
//! object, tid, previous-revision link and payload, laid out as a Data.fs
//! would hold them, and the committed state readers see.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::ids::{Oid, Tid};
use crate::interface::{TransactionMetaData, TxnHandle, TxnStatus, UndoEntry};
use crate::undo_id::undo_id;

/// Bytes of a Data.fs file header (the magic).
pub(super) const FILE_HEADER_LEN: u64 = 4;
/// Bytes of a transaction header before user, description and extension.
pub(super) const TXN_HEADER_LEN: u64 = 23;
/// Bytes of a data record header.
pub(super) const DATA_HEADER_LEN: u64 = 42;
/// Bytes of the redundant length after each transaction.
pub(super) const TXN_TRAILER_LEN: u64 = 8;

/// Where a data record sits: its transaction and its place in it. Ordered
/// like file offsets.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub(super) struct RecId {
    pub(super) txn: Tid,
    pub(super) idx: usize,
}

/// What a data record holds.
#[derive(Clone, Debug)]
pub(super) enum Payload {
    /// The object record itself.
    Data(Arc<[u8]>),
    /// The same data as an earlier record (undo, restore).
    Back(RecId),
    /// The object does not exist in this revision.
    Nothing,
}

impl Payload {
    /// Bytes the record takes in a Data.fs, header included.
    pub(super) fn file_len(&self) -> u64 {
        DATA_HEADER_LEN
            + match self {
                Payload::Data(d) => d.len() as u64,
                Payload::Back(_) | Payload::Nothing => 8,
            }
    }

    /// The `plen` field: data length, 0 for backpointers and deletions.
    pub(super) fn plen(&self) -> u64 {
        match self {
            Payload::Data(d) => d.len() as u64,
            Payload::Back(_) | Payload::Nothing => 0,
        }
    }
}

/// One data record.
#[derive(Clone, Debug)]
pub(super) struct Record {
    pub(super) oid: Oid,
    /// The revision's tid: the transaction's, except for `restore`.
    pub(super) tid: Tid,
    /// The object's record current before this transaction.
    pub(super) prev: Option<RecId>,
    pub(super) payload: Payload,
}

/// One committed transaction.
#[derive(Debug)]
pub(super) struct Txn {
    pub(super) tid: Tid,
    pub(super) status: TxnStatus,
    pub(super) meta: TransactionMetaData,
    pub(super) records: Vec<Record>,
}

impl Txn {
    /// The transaction length field (`tlen`): header and records.
    pub(super) fn tlen(&self) -> u64 {
        header_len(&self.meta)
            + self
                .records
                .iter()
                .map(|r| r.payload.file_len())
                .sum::<u64>()
    }
}

pub(super) fn header_len(meta: &TransactionMetaData) -> u64 {
    TXN_HEADER_LEN + (meta.user.len() + meta.description.len() + meta.extension.len()) as u64
}

/// Everything readers see: the last finished transaction's state.
#[derive(Debug, Default)]
pub(super) struct Committed {
    pub(super) txns: BTreeMap<Tid, Arc<Txn>>,
    /// Each object's latest record (deletions included, as in FileStorage's
    /// index).
    pub(super) index: BTreeMap<Oid, RecId>,
    pub(super) last_tid: Tid,
    /// The length the Data.fs would have.
    pub(super) size: u64,
}

impl Committed {
    pub(super) fn record(&self, id: RecId) -> Result<&Record> {
        self.txns
            .get(&id.txn)
            .and_then(|t| t.records.get(id.idx))
            .ok_or_else(|| Error::Storage(format!("dangling record reference {id:?}")))
    }

    /// Follows backpointers from `id` to the data; `Ok(None)` when the chain
    /// ends in a record without data (ZODB's `_loadBack_impl(fail=False)`).
    pub(super) fn resolve(&self, mut id: RecId) -> Result<Option<Arc<[u8]>>> {
        // Backpointers always name earlier transactions, so a chain is no
        // longer than the number of transactions.
        for _ in 0..=self.txns.len() {
            match &self.record(id)?.payload {
                Payload::Data(d) => return Ok(Some(d.clone())),
                Payload::Back(b) => id = *b,
                Payload::Nothing => return Ok(None),
            }
        }
        Err(Error::Storage(format!("backpointer cycle at {id:?}")))
    }

    /// Like [`Committed::resolve`] but a missing object is a POSKeyError
    /// (`_loadBack_impl(fail=True)`).
    pub(super) fn load_back(&self, oid: Oid, id: RecId) -> Result<Arc<[u8]>> {
        self.resolve(id)?.ok_or_else(|| Error::pos_key(oid))
    }

    /// The data a record stands for, as `load` returns it.
    pub(super) fn record_data(&self, rec: &Record) -> Result<Arc<[u8]>> {
        match &rec.payload {
            Payload::Data(d) => Ok(d.clone()),
            Payload::Back(b) => self.load_back(rec.oid, *b),
            Payload::Nothing => Err(Error::pos_key(rec.oid)),
        }
    }

    pub(super) fn current(&self, oid: Oid) -> Result<&Record> {
        let id = self.index.get(&oid).ok_or_else(|| Error::pos_key(oid))?;
        self.record(*id)
    }

    /// The tid of the current revision (`getTid`): deleted objects have none.
    pub(super) fn current_tid(&self, oid: Oid) -> Result<Tid> {
        let rec = self.current(oid)?;
        match rec.payload {
            Payload::Nothing => Err(Error::pos_key(oid)),
            _ => Ok(rec.tid),
        }
    }

    pub(super) fn undo_entry(&self, txn: &Txn) -> UndoEntry {
        UndoEntry {
            id: undo_id(txn.tid),
            tid: txn.tid,
            time: txn.tid.unix_time(),
            user: txn.meta.user.clone(),
            description: txn.meta.description.clone(),
            extension: txn.meta.extension.clone(),
            size: txn.tlen(),
        }
    }
}

/// The transaction between `tpc_begin` and `tpc_finish`/`tpc_abort`.
pub(super) struct Pending {
    pub(super) handle: TxnHandle,
    pub(super) tid: Tid,
    pub(super) status: TxnStatus,
    pub(super) meta: TransactionMetaData,
    pub(super) records: Vec<Record>,
    /// Each object's latest record in this transaction (`_tindex`).
    pub(super) tindex: HashMap<Oid, RecId>,
    pub(super) voted: bool,
}

impl Pending {
    pub(super) fn push(&mut self, rec: Record) {
        let id = RecId {
            txn: self.tid,
            idx: self.records.len(),
        };
        self.tindex.insert(rec.oid, id);
        self.records.push(rec);
    }
}
