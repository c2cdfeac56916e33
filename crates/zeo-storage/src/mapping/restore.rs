//! Restoring revisions verbatim, pointing at identical data when told where.

use super::*;

/// `restore`'s `_data_find`: the last record of `oid` in `txn`, accepted
/// when it holds exactly `data` or is a backpointer. Unlike ZODB, a record
/// saying the object does not exist is not accepted: pointing at it would
/// lose the data being restored.
fn last_matching_record(txn: &Txn, oid: Oid, data: &[u8]) -> Option<RecId> {
    let (idx, rec) = txn
        .records
        .iter()
        .enumerate()
        .rev()
        .find(|(_, r)| r.oid == oid)?;
    let id = RecId { txn: txn.tid, idx };
    match &rec.payload {
        Payload::Back(_) => Some(id),
        Payload::Data(d) if **d == *data => Some(id),
        Payload::Data(_) | Payload::Nothing => None,
    }
}

impl Restore for MappingStorage {
    fn restore(
        &self,
        txn: TxnHandle,
        oid: Oid,
        serial: Tid,
        data: Option<&[u8]>,
        prev_txn: Option<Tid>,
    ) -> Result<()> {
        if data.is_some_and(<[u8]>::is_empty) {
            return Err(Error::InvalidArgument(
                "cannot restore an empty data record".into(),
            ));
        }
        self.with_pending(txn, "restore", true, |p, c| {
            self.raise_max_oid(oid);
            // `prev_txn` is a hint, as ZODB documents it (its code raises
            // UndoError for a transaction no longer in the file); only data
            // can be pointed to (ZODB would point a "no data" restore at
            // whatever record it finds, or fail with a TypeError).
            let back = match (prev_txn, data) {
                (Some(t), Some(d)) => c
                    .txns
                    .get(&t)
                    .and_then(|target| last_matching_record(target, oid, d)),
                _ => None,
            };
            let payload = match (back, data) {
                (Some(b), _) => Payload::Back(b),
                (None, None) => Payload::Nothing,
                (None, Some(d)) => Payload::Data(d.into()),
            };
            let prev = c.index.get(&oid).copied();
            p.push(Record {
                oid,
                tid: serial,
                prev,
                payload,
            });
            Ok(())
        })
    }
}
