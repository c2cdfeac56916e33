//! Restoring and copying: records written verbatim under the tid given to
//! `tpc_begin`, without conflict checks.

use zeo_storage::interface::Restore;
use zeo_storage::{Oid, Result, Tid, TxnHandle};

use crate::storage::{PostgresStorage, Staged};

impl Restore for PostgresStorage {
    fn restore(
        &self,
        txn: TxnHandle,
        oid: Oid,
        serial: Tid,
        data: Option<&[u8]>,
        prev_txn: Option<Tid>,
    ) -> Result<()> {
        // The rows hold the state itself: `prev_txn` (a backpointer in a
        // Data.fs) has nothing to point to here.
        let _ = prev_txn;
        self.stage(
            txn,
            oid,
            Staged::record(serial, data.map(<[u8]>::to_vec), false),
        )
    }
}
