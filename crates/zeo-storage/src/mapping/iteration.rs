//! Transaction iteration and current-record iteration over the model.

use super::*;

impl Iteration for MappingStorage {
    fn iterator(&self, start: Option<Tid>, stop: Option<Tid>) -> Result<TransactionIter<'_>> {
        let c = self.snapshot()?;
        let lo = start.unwrap_or(Tid::ZERO);
        let txns: Vec<Arc<Txn>> = match stop {
            Some(hi) if hi < lo => Vec::new(),
            Some(hi) => c.txns.range(lo..=hi).map(|(_, t)| t.clone()).collect(),
            None => c.txns.range(lo..).map(|(_, t)| t.clone()).collect(),
        };
        Ok(Box::new(txns.into_iter().map(move |txn| {
            let mut records = Vec::with_capacity(txn.records.len());
            for rec in &txn.records {
                let (data, data_txn) = match &rec.payload {
                    Payload::Data(d) => (Some(d.to_vec()), None),
                    Payload::Back(b) => {
                        (c.resolve(*b)?.map(|d| d.to_vec()), Some(c.record(*b)?.tid))
                    }
                    Payload::Nothing => (None, None),
                };
                records.push(DataRecord {
                    oid: rec.oid,
                    tid: rec.tid,
                    data,
                    data_txn,
                });
            }
            Ok(TransactionRecord {
                tid: txn.tid,
                status: txn.status,
                meta: txn.meta.clone(),
                records,
            })
        })))
    }
}

impl RecordIteration for MappingStorage {
    fn record_iternext(&self, next: Option<Oid>) -> Result<Option<CurrentRecord>> {
        let c = self.snapshot()?;
        let mut keys = c.index.range(next.unwrap_or(Oid::ZERO)..);
        let Some((oid, id)) = keys.next() else {
            return Ok(None);
        };
        let rec = c.record(*id)?;
        let data = c.record_data(rec)?.to_vec();
        Ok(Some(CurrentRecord {
            oid: *oid,
            tid: rec.tid,
            data,
            next: keys.next().map(|(o, _)| *o),
        }))
    }
}
