//! The pack capability: the native pack (`pack.rs`) on a connection of its
//! own, with the blob cache's files of removed revisions removed too.

use std::time::{SystemTime, UNIX_EPOCH};

use zeo_storage::interface::Pack;
use zeo_storage::{Error as StorageError, Result};

use crate::pack;
use crate::pool::drop_off_runtime;
use crate::storage::PostgresStorage;

impl Pack for PostgresStorage {
    fn pack(&self, pack_time: f64, gc: bool) -> Result<()> {
        self.check_open()?;
        if self.is_read_only_storage() {
            return Err(StorageError::ReadOnly);
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let point = pack::pack_point(pack_time, now);
        let mut client = self.pool.connect()?;
        let cache = self.blob_cache.as_ref();
        let outcome = pack::pack(
            &mut client,
            self.history_mode(),
            point,
            gc,
            &mut |oid, tid| {
                if let Some(cache) = cache {
                    let _ = std::fs::remove_file(cache.blob_path(oid, tid));
                }
            },
        );
        let counted = self.recount(&mut client);
        drop_off_runtime(vec![client]);
        let outcome = outcome?;
        counted?;
        tracing::info!(pack_tid = ?outcome.pack_tid, removed = outcome.removed_states, "packed");
        Ok(())
    }
}
