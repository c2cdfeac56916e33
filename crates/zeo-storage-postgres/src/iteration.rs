//! Iterating over committed transactions (history-preserving schema) and
//! over current records (both).

use std::collections::VecDeque;

use zeo_storage::interface::{Iteration, RecordIteration};
use zeo_storage::{
    CurrentRecord, DataRecord, Oid, Result, Tid, TransactionIter, TransactionMetaData,
    TransactionRecord, TxnStatus,
};

use crate::options::HistoryMode;
use crate::storage::PostgresStorage;

/// How many transactions one query of the iterator reads.
const BATCH: i64 = 50;

/// Transactions in tid order, read a batch at a time.
struct Transactions<'a> {
    storage: &'a PostgresStorage,
    /// The next batch starts after this tid.
    after: i64,
    stop: i64,
    buffered: VecDeque<TransactionRecord>,
    done: bool,
}

impl Transactions<'_> {
    fn fill(&mut self) -> Result<()> {
        let (after, stop) = (self.after, self.stop);
        let (txns, records) = self.storage.read(|c| {
            let txns = c.query(
                "SELECT tid, packed, username, description, extension FROM \"transaction\" \
                 WHERE tid > $1 AND tid <= $2 ORDER BY tid LIMIT $3",
                &[&after, &stop, &BATCH],
            )?;
            let Some(last) = txns.last() else {
                return Ok((txns, Vec::new()));
            };
            let last: i64 = last.get(0);
            let records = c.query(
                "SELECT tid, zoid, state FROM object_state \
                 WHERE tid > $1 AND tid <= $2 ORDER BY tid, zoid",
                &[&after, &last],
            )?;
            Ok((txns, records))
        })?;
        let Some(last) = txns.last() else {
            self.done = true;
            return Ok(());
        };
        self.after = last.get(0);
        let mut records = records.into_iter().peekable();
        for t in &txns {
            let tid: i64 = t.get(0);
            let mut txn = TransactionRecord {
                tid: Tid(tid as u64),
                status: if t.get(1) {
                    TxnStatus::Packed
                } else {
                    TxnStatus::Committed
                },
                meta: TransactionMetaData {
                    user: t.get(2),
                    description: t.get(3),
                    extension: t.get::<_, Option<Vec<u8>>>(4).unwrap_or_default(),
                },
                records: Vec::new(),
            };
            while let Some(r) = records.next_if(|r| r.get::<_, i64>(0) == tid) {
                txn.records.push(DataRecord {
                    oid: Oid(r.get::<_, i64>(1) as u64),
                    tid: txn.tid,
                    data: r.get(2),
                    data_txn: None,
                });
            }
            self.buffered.push_back(txn);
        }
        Ok(())
    }
}

impl Iterator for Transactions<'_> {
    type Item = Result<TransactionRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buffered.is_empty() && !self.done {
            if let Err(e) = self.fill() {
                self.done = true;
                return Some(Err(e));
            }
        }
        self.buffered.pop_front().map(Ok)
    }
}

impl Iteration for PostgresStorage {
    fn iterator(&self, start: Option<Tid>, stop: Option<Tid>) -> Result<TransactionIter<'_>> {
        self.check_open()?;
        // Tid 0 is the schema's "before creation" row, not a transaction.
        let after = start.map_or(0, |t| (t.0 as i64).saturating_sub(1).max(0));
        Ok(Box::new(Transactions {
            storage: self,
            after,
            stop: stop.map_or(i64::MAX, |t| t.0.min(i64::MAX as u64) as i64),
            buffered: VecDeque::new(),
            done: false,
        }))
    }
}

impl RecordIteration for PostgresStorage {
    fn record_iternext(&self, next: Option<Oid>) -> Result<Option<CurrentRecord>> {
        let from = next.map_or(0, |o| o.0 as i64);
        let sql = match self.history_mode() {
            HistoryMode::Preserving => {
                "SELECT s.zoid, s.tid, s.state FROM current_object c \
                 JOIN object_state s USING (zoid, tid) \
                 WHERE c.zoid >= $1 AND s.state IS NOT NULL ORDER BY c.zoid LIMIT 2"
            }
            HistoryMode::Free => {
                "SELECT zoid, tid, state FROM object_state \
                 WHERE zoid >= $1 AND state IS NOT NULL ORDER BY zoid LIMIT 2"
            }
        };
        let rows = self.read(|c| Ok(c.query(sql, &[&from])?))?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        Ok(Some(CurrentRecord {
            oid: Oid(first.get::<_, i64>(0) as u64),
            tid: Tid(first.get::<_, i64>(1) as u64),
            data: first.get(2),
            next: rows.get(1).map(|r| Oid(r.get::<_, i64>(0) as u64)),
        }))
    }
}
