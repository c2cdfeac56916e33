//! Deleting objects a collector outside the storage found unreachable.

use super::*;

impl ExternalGc for MappingStorage {
    fn delete_object(&self, txn: TxnHandle, oid: Oid, serial: Tid) -> Result<()> {
        self.with_pending(txn, "delete_object", true, |p, c| {
            let old = *c.index.get(&oid).ok_or_else(|| Error::pos_key(oid))?;
            let committed = c.record(old)?.tid;
            if committed != serial {
                return Err(Error::Conflict {
                    oid,
                    committed,
                    old: serial,
                });
            }
            p.push(Record {
                oid,
                tid: p.tid,
                prev: Some(old),
                payload: Payload::Nothing,
            });
            Ok(())
        })
    }
}
